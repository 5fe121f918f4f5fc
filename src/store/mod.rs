//! The one seam for everything replicas share: tenant mappings, the admin
//! audit (and, later, idempotency keys and stop records). Two
//! implementations, chosen by `[store]`: [`memory::MemoryStore`] (a gateway
//! running alone: tenants from the tenants file, the rest in memory) and
//! [`postgres::PgStore`] (a fleet on one PostgreSQL database). Nothing above
//! this module knows which one it talks to.

pub mod memory;
pub mod postgres;

use async_trait::async_trait;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::tenants::{TenantSpec, TenantsFile};

/// Which store this is (`/admin/v1/status` `store.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// No shared store: the gateway runs alone.
    None,
    Postgres,
}

/// The whole mapping as the store holds it, and its revision.
#[derive(Debug, Clone, Default)]
pub struct TenantsSnapshot {
    /// The same number on every replica that has the same mapping: the
    /// store's change counter, or (without a store) derived from the content.
    pub revision: u64,
    pub file: TenantsFile,
}

/// An `If-Match` / `If-None-Match` precondition of an admin write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Unconditional.
    None,
    /// `If-Match`: the tenant exists and its ETag is one of these (`*`:
    /// any existing tenant).
    IfMatch(Vec<String>),
    /// `If-None-Match: *`: the tenant does not exist (create only).
    IfNoneMatchAny,
}

impl Precondition {
    /// Whether a tenant currently `current` satisfies the precondition.
    pub fn holds(&self, current: Option<&TenantSpec>) -> bool {
        match (self, current) {
            (Precondition::None, _) => true,
            (Precondition::IfNoneMatchAny, current) => current.is_none(),
            (Precondition::IfMatch(_), None) => false,
            (Precondition::IfMatch(tags), Some(spec)) => {
                let tag = etag(spec);
                tags.iter().any(|t| t == "*" || *t == tag)
            }
        }
    }
}

/// What a write changed.
#[derive(Debug, Clone)]
pub struct Written {
    /// The tenant before the write (`None`: it was created).
    pub before: Option<TenantSpec>,
    /// The mapping's revision after the write.
    pub revision: u64,
}

/// What the audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditAction {
    Put,
    Delete,
    Import,
    Reload,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Put => "put",
            AuditAction::Delete => "delete",
            AuditAction::Import => "import",
            AuditAction::Reload => "reload",
        }
    }
}

/// One admin change (`GET /admin/v1/audit`).
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    #[serde(serialize_with = "rfc3339")]
    pub at: OffsetDateTime,
    /// The admin JWT's `sub`.
    pub who: String,
    pub action: AuditAction,
    pub tenant: Option<String>,
    pub before: Option<TenantSpec>,
    pub after: Option<TenantSpec>,
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (or answered with a failure that is
    /// not about the request).
    #[error("the shared store is unreachable: {0}")]
    Unavailable(String),
    /// `If-Match` / `If-None-Match` did not hold.
    #[error("the tenant changed since the given ETag (or exists, for If-None-Match: *)")]
    PreconditionFailed,
    #[error("unknown tenant {0}")]
    UnknownTenant(String),
    /// The change would make an invalid mapping (the message names the field).
    #[error("{0}")]
    Invalid(String),
}

/// The shared state of the gateway's replicas.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn kind(&self) -> StoreKind;

    /// Whether the last call reached the store.
    fn is_up(&self) -> bool;

    /// Applies the schema (idempotent; safe from several replicas at once).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// The whole mapping and its revision.
    async fn tenants(&self) -> Result<TenantsSnapshot, StoreError>;

    /// The mapping's revision alone (cheap).
    async fn revision(&self) -> Result<u64, StoreError>;

    /// Creates or replaces a tenant (already validated by the caller), with
    /// its audit event, atomically.
    async fn put_tenant(
        &self,
        name: &str,
        spec: &TenantSpec,
        precondition: &Precondition,
        who: &str,
    ) -> Result<Written, StoreError>;

    /// Removes a tenant, with its audit event, atomically.
    async fn delete_tenant(
        &self,
        name: &str,
        precondition: &Precondition,
        who: &str,
    ) -> Result<Written, StoreError>;

    /// Makes the mapping equal to `file` in one transaction, one audit event
    /// per changed tenant. `None` when nothing changed (no event, the
    /// revision stays).
    async fn import(&self, file: &TenantsFile, who: &str) -> Result<Option<u64>, StoreError>;

    /// Appends an audit event that is not a write of the store's own (a
    /// reload).
    async fn record(&self, event: AuditEvent) -> Result<(), StoreError>;

    /// The newest events first, at most `limit`, of one tenant or all.
    async fn audit(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Deletes what is past its retention (audit events, later keys and
    /// records); called periodically by one task per replica.
    async fn prune(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Revisions announced by other replicas as they happen; a bump of the
    /// channel with the same value means "re-read everything" (after a
    /// reconnect, when notifications may have been lost).
    fn notifications(&self) -> watch::Receiver<u64>;
}

fn rfc3339<S: serde::Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    let text = at
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    s.serialize_str(&text)
}

/// The strong validator of a tenant's stored version: a hash of its body.
pub fn etag(spec: &TenantSpec) -> String {
    let body = serde_json::to_vec(spec).unwrap_or_default();
    let digest = Sha256::digest(&body);
    format!("\"{}\"", hex::encode(&digest[..12]))
}

/// The revision of a mapping without a store: derived from its content, so
/// every replica with the same mapping has the same number (below 2^53).
pub fn content_revision(file: &TenantsFile) -> u64 {
    let body = serde_json::to_vec(file).unwrap_or_default();
    let digest = Sha256::digest(&body);
    let mut n = [0u8; 8];
    n.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(n) >> 11
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::ProjectSpec;

    fn spec(p: &str) -> TenantSpec {
        TenantSpec {
            default_project: p.into(),
            projects: vec![ProjectSpec {
                project_id: p.into(),
                region: "cn-east-3".into(),
                credential: "default".into(),
            }],
        }
    }

    #[test]
    fn preconditions() {
        let a = spec("0a1b2c3d4e5f60718293a4b5c6d7e8f9");
        let b = spec("1a1b2c3d4e5f60718293a4b5c6d7e8f9");
        assert_ne!(etag(&a), etag(&b));
        assert!(Precondition::None.holds(None));
        assert!(Precondition::IfNoneMatchAny.holds(None));
        assert!(!Precondition::IfNoneMatchAny.holds(Some(&a)));
        assert!(Precondition::IfMatch(vec![etag(&a)]).holds(Some(&a)));
        assert!(!Precondition::IfMatch(vec![etag(&a)]).holds(Some(&b)));
        assert!(!Precondition::IfMatch(vec![etag(&a)]).holds(None));
        assert!(Precondition::IfMatch(vec!["*".into()]).holds(Some(&b)));
    }

    #[test]
    fn content_revisions_fit_a_double() {
        let mut f = TenantsFile::default();
        assert!(content_revision(&f) < 1 << 53);
        f.tenants
            .insert("a".into(), spec("0a1b2c3d4e5f60718293a4b5c6d7e8f9"));
        assert!(content_revision(&f) < 1 << 53);
        assert_ne!(
            content_revision(&f),
            content_revision(&TenantsFile::default())
        );
    }
}
