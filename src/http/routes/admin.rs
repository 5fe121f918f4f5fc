//! The admin API (admin port): tenant mappings, read, written and reloaded
//! without a restart. Every call needs a JWT with `auth.admin_role`.

use std::sync::Arc;

use axum::Json;
use axum::extract::{FromRequestParts, Path, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::extract::{Authenticated, JsonBody};
use crate::auth::Caller;
use crate::domain::TenantId;
use crate::domain::{ApiError, Code};
use crate::http::error::ErrorJson;
use crate::http::state::AppState;
use crate::tenants::{TenantSpec, TenantsError, TenantsFile, UpdateError};

/// A caller with the admin role.
pub struct Admin(pub Arc<Caller>);

impl FromRequestParts<Arc<AppState>> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, ApiError> {
        let Authenticated(caller) = Authenticated::from_request_parts(parts, app).await?;
        match app.auth.admin_check(&caller) {
            Ok(()) => Ok(Self(caller)),
            Err(why) => Err(ApiError::new(Code::NotAdmin, why)),
        }
    }
}

fn unknown(tenant: &str) -> ApiError {
    ApiError::new(
        Code::UnknownTenant,
        format!("unknown tenant {:?}", crate::domain::truncate(tenant, 64)),
    )
}

fn project_ids(spec: Option<&TenantSpec>) -> Vec<&str> {
    spec.map(|s| s.projects.iter().map(|p| p.project_id.as_str()).collect())
        .unwrap_or_default()
}

/// All tenants, in the tenants-file shape.
#[utoipa::path(get, path = "/admin/v1/tenants", tag = "admin", responses(
        (status = 200, description = "All tenant mappings", body = TenantsFile),
        (status = 401, description = "CPHGW.0101 invalid JWT", body = ErrorJson),
        (status = 403, description = "CPHGW.0103 admin role missing, or an HS256 token while auth.allow_hs256_admin is false", body = ErrorJson),
))]
pub async fn list(State(app): State<Arc<AppState>>, _: Admin) -> Response {
    Json(app.tenants.load().spec()).into_response()
}

/// One tenant.
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant}", tag = "admin",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, description = "The tenant's mapping", body = TenantSpec),
        (status = 401, description = "CPHGW.0101 invalid JWT", body = ErrorJson),
        (status = 403, description = "CPHGW.0103 admin role missing, or an HS256 token while auth.allow_hs256_admin is false", body = ErrorJson),
        (status = 404, description = "CPHGW.0104 unknown tenant", body = ErrorJson),
))]
pub async fn get(
    State(app): State<Arc<AppState>>,
    _: Admin,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let registry = app.tenants.load();
    let spec = registry
        .spec()
        .tenants
        .get(&tenant)
        .ok_or_else(|| unknown(&tenant))?;
    Ok(Json(spec).into_response())
}

/// Creates or replaces a tenant; validated, persisted atomically, live for
/// the next request.
#[utoipa::path(put, path = "/admin/v1/tenants/{tenant}", tag = "admin",
    params(("tenant" = String, Path, description = "Tenant name (1-64 of A-Z a-z 0-9 _ -)")),
    request_body = TenantSpec,
    responses(
        (status = 200, description = "Replaced", body = TenantSpec),
        (status = 201, description = "Created", body = TenantSpec),
        (status = 400, description = "CPHGW.0001 invalid; the message names the field; nothing changed", body = ErrorJson),
        (status = 401, description = "CPHGW.0101 invalid JWT", body = ErrorJson),
        (status = 403, description = "CPHGW.0103 admin role missing, or an HS256 token while auth.allow_hs256_admin is false", body = ErrorJson),
        (status = 500, description = "CPHGW.0500 the tenants file could not be written; nothing changed", body = ErrorJson),
))]
pub async fn put(
    State(app): State<Arc<AppState>>,
    Admin(admin): Admin,
    Path(tenant): Path<String>,
    JsonBody(spec): JsonBody<TenantSpec>,
) -> Result<Response, ApiError> {
    TenantId::parse(&tenant)
        .map_err(|e| ApiError::new(Code::InvalidBody, format!("tenant: {e}")))?;
    let after = spec.clone();
    let (before, created) = app
        .tenants
        .update(|file| {
            // Validate this tenant alone first, so the message names the
            // field relative to the body.
            crate::tenants::build_tenant(&tenant, &spec, app.tenants.iam())
                .map_err(UpdateError::Invalid)?;
            let before = file.tenants.insert(tenant.clone(), spec);
            let created = before.is_none();
            Ok((before, created))
        })
        .await
        .map_err(update_error)?;
    tracing::info!(
        audit = true,
        action = if created { "create" } else { "update" },
        who = %admin.subject,
        tenant = %tenant,
        before = ?project_ids(before.as_ref()),
        after = ?project_ids(Some(&after)),
        at = %now_rfc3339(),
        "tenant mapping changed"
    );
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(after)).into_response())
}

/// Removes a tenant.
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant}", tag = "admin",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "CPHGW.0101 invalid JWT", body = ErrorJson),
        (status = 403, description = "CPHGW.0103 admin role missing, or an HS256 token while auth.allow_hs256_admin is false", body = ErrorJson),
        (status = 404, description = "CPHGW.0104 unknown tenant", body = ErrorJson),
        (status = 500, description = "CPHGW.0500 the tenants file could not be written; nothing changed", body = ErrorJson),
))]
pub async fn delete(
    State(app): State<Arc<AppState>>,
    Admin(admin): Admin,
    Path(tenant): Path<String>,
) -> Result<Response, ApiError> {
    let before = app
        .tenants
        .update(|file| {
            file.tenants
                .remove(&tenant)
                .ok_or_else(|| UpdateError::UnknownTenant(tenant.clone()))
        })
        .await
        .map_err(update_error)?;
    tracing::info!(
        audit = true,
        action = "delete",
        who = %admin.subject,
        tenant = %tenant,
        before = ?project_ids(Some(&before)),
        after = ?Vec::<&str>::new(),
        at = %now_rfc3339(),
        "tenant mapping changed"
    );
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Re-reads the tenants file.
#[utoipa::path(post, path = "/admin/v1/reload", tag = "admin", responses(
        (status = 200, description = "Reloaded: {reloaded, changed, tenants}", body = Object),
        (status = 400, description = "CPHGW.0001 the file is invalid; the last good mapping stays", body = ErrorJson),
        (status = 401, description = "CPHGW.0101 invalid JWT", body = ErrorJson),
        (status = 403, description = "CPHGW.0103 admin role missing, or an HS256 token while auth.allow_hs256_admin is false", body = ErrorJson),
))]
pub async fn reload(
    State(app): State<Arc<AppState>>,
    Admin(admin): Admin,
) -> Result<Response, ApiError> {
    match app.tenants.reload().await {
        Ok(changed) => {
            tracing::info!(audit = true, action = "reload", who = %admin.subject, changed, at = %now_rfc3339(), "tenants file reloaded");
            let tenants = app.tenants.load().len();
            Ok(
                Json(json!({"reloaded": true, "changed": changed, "tenants": tenants}))
                    .into_response(),
            )
        }
        Err(e) => Err(ApiError::new(
            Code::InvalidBody,
            format!("tenants file rejected, the last good mapping stays: {e}"),
        )),
    }
}

fn update_error(e: UpdateError) -> ApiError {
    match e {
        UpdateError::Invalid(msg) => ApiError::new(Code::InvalidBody, msg),
        UpdateError::UnknownTenant(t) => unknown(&t),
        UpdateError::Persist(TenantsError::Write { path, source }) => {
            tracing::error!(path, error = %source, "cannot persist the tenants file; nothing changed");
            ApiError::new(
                Code::Internal,
                "the tenants file could not be written; nothing changed",
            )
        }
        UpdateError::Persist(e) => ApiError::new(Code::Internal, e.to_string()),
    }
}

fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
