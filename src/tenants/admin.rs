//! Admin changes of the mapping: validated here, written through the store
//! (atomically, with the audit event), then served by this replica at once;
//! the other replicas follow through [`super::sync`].

use time::OffsetDateTime;

use super::{TenantSpec, Tenants, build_tenant, sync};
use crate::domain::{ApiError, Code, TenantId, truncate};
use crate::store::{AuditAction, AuditEvent, Precondition, Store, StoreError, StoreKind, etag};

/// The answer to a write: whether it created the tenant, and its ETag.
#[derive(Debug)]
pub struct Put {
    pub created: bool,
    pub etag: String,
}

/// What an admin call may be refused for, as the contract's codes.
pub fn refused(e: StoreError, kind: StoreKind) -> ApiError {
    match e {
        StoreError::PreconditionFailed => ApiError::new(Code::PreconditionFailed, e.to_string()),
        StoreError::UnknownTenant(t) => unknown(&t),
        StoreError::Invalid(msg) => ApiError::new(Code::InvalidBody, msg),
        StoreError::Unavailable(msg) => match kind {
            // Alone, "unavailable" is the tenants file that cannot be
            // written: a fault of the gateway's own.
            StoreKind::None => ApiError::new(
                Code::Internal,
                "the tenants file could not be written; nothing changed",
            ),
            StoreKind::Postgres => {
                tracing::warn!(error = %msg, "admin call needs the store, which is unreachable");
                ApiError::new(
                    Code::StoreUnavailable,
                    "the shared store is unreachable; nothing changed: retry later",
                )
                .retry_after(1)
            }
        },
    }
}

/// `CPHGW.0104` for a tenant that is not mapped.
pub fn unknown(tenant: &str) -> ApiError {
    ApiError::new(
        Code::UnknownTenant,
        format!("unknown tenant {:?}", truncate(tenant, 64)),
    )
}

/// Creates or replaces `name`.
pub async fn put(
    store: &dyn Store,
    tenants: &Tenants,
    name: &str,
    spec: TenantSpec,
    precondition: &Precondition,
    who: &str,
) -> Result<Put, ApiError> {
    TenantId::parse(name).map_err(|e| ApiError::new(Code::InvalidBody, format!("tenant: {e}")))?;
    // Validated alone first, so that the message names the field relative
    // to the body.
    build_tenant(name, &spec, tenants.iam()).map_err(|e| ApiError::new(Code::InvalidBody, e))?;
    let written = store
        .put_tenant(name, &spec, precondition, who)
        .await
        .map_err(|e| refused(e, store.kind()))?;
    settle(store, tenants).await;
    audit_line(
        "put",
        who,
        name,
        written.before.as_ref(),
        Some(&spec),
        written.revision,
    );
    Ok(Put {
        created: written.before.is_none(),
        etag: etag(&spec),
    })
}

/// Removes `name`.
pub async fn delete(
    store: &dyn Store,
    tenants: &Tenants,
    name: &str,
    precondition: &Precondition,
    who: &str,
) -> Result<(), ApiError> {
    let written = store
        .delete_tenant(name, precondition, who)
        .await
        .map_err(|e| refused(e, store.kind()))?;
    settle(store, tenants).await;
    audit_line(
        "delete",
        who,
        name,
        written.before.as_ref(),
        None,
        written.revision,
    );
    Ok(())
}

/// Re-reads the source; an invalid one is refused and the last good
/// mapping stays. Returns whether the mapping changed.
pub async fn reload(store: &dyn Store, tenants: &Tenants, who: &str) -> Result<bool, ApiError> {
    let changed = sync::refresh(store, tenants, true)
        .await
        .map_err(|e| match e {
            StoreError::Invalid(msg) => ApiError::new(
                Code::InvalidBody,
                format!("tenant source rejected, the last good mapping stays: {msg}"),
            ),
            other => refused(other, store.kind()),
        })?;
    tracing::info!(
        audit = true,
        action = "reload",
        who,
        changed,
        "tenant source reloaded"
    );
    let event = AuditEvent {
        at: OffsetDateTime::now_utc(),
        who: who.to_owned(),
        action: AuditAction::Reload,
        tenant: None,
        before: None,
        after: None,
    };
    if let Err(e) = store.append_audit(event).await {
        tracing::warn!(error = %e, "reload not recorded in the audit");
    }
    Ok(changed)
}

/// The audit event as a log line too (for log pipelines): who, when, what,
/// and the projects before and after.
fn audit_line(
    action: &str,
    who: &str,
    tenant: &str,
    before: Option<&TenantSpec>,
    after: Option<&TenantSpec>,
    revision: u64,
) {
    let projects = |spec: Option<&TenantSpec>| -> Vec<String> {
        spec.map(|s| s.projects.iter().map(|p| p.project_id.clone()).collect())
            .unwrap_or_default()
    };
    let at = OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    tracing::info!(
        audit = true,
        action,
        who,
        tenant,
        before = ?projects(before),
        after = ?projects(after),
        revision,
        at,
        "tenant mapping changed"
    );
}

/// Serves the store's new mapping on this replica now, rather than at the
/// next notification; a failure here is caught up by the sync loop.
async fn settle(store: &dyn Store, tenants: &Tenants) {
    if let Err(e) = sync::refresh(store, tenants, false).await {
        tracing::warn!(error = %e, "written, but not yet served here; the sync loop will catch up");
    }
}
