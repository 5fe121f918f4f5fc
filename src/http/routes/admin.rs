//! The admin API (admin port): tenant mappings, read, written and reloaded
//! without a restart. Every call needs a JWT with `auth.admin_role`.

use std::sync::Arc;

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;

use super::extract::{Authenticated, JsonBody, Path};
use crate::auth::Caller;
use crate::domain::{ApiError, Code};
use crate::http::error::ErrorJson;
use crate::http::state::AppState;
use crate::store::{Precondition, etag};
use crate::tenants::admin::{self as tenant_admin, refused, unknown};
use crate::tenants::{TenantSpec, TenantsFile};

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

/// `If-Match` / `If-None-Match` of an admin write. `If-None-Match` is
/// honoured only as `*` on `PUT` (create only).
fn precondition(headers: &HeaderMap, put: bool) -> Result<Precondition, ApiError> {
    let text = |name: header::HeaderName| -> Result<Option<String>, ApiError> {
        headers
            .get(&name)
            .map(|v| {
                v.to_str().map(str::to_owned).map_err(|_| {
                    ApiError::new(Code::InvalidBody, format!("{name} is not visible ASCII"))
                })
            })
            .transpose()
    };
    if let Some(tags) = text(header::IF_MATCH)? {
        let tags: Vec<String> = tags.split(',').map(|t| t.trim().to_owned()).collect();
        return Ok(Precondition::IfMatch(tags));
    }
    match text(header::IF_NONE_MATCH)? {
        Some(v) if put && v.trim() == "*" => Ok(Precondition::IfNoneMatchAny),
        Some(_) => Err(ApiError::new(
            Code::InvalidBody,
            "If-None-Match is supported only as `*` on PUT (create only)",
        )),
        None => Ok(Precondition::None),
    }
}

/// A tenant body with its `ETag`.
fn with_etag(status: StatusCode, spec: &TenantSpec) -> Response {
    let mut resp = (status, Json(spec)).into_response();
    if let Ok(v) = HeaderValue::from_str(&etag(spec)) {
        resp.headers_mut().insert(header::ETAG, v);
    }
    resp
}

/// All tenants, in the tenants-file shape.
#[utoipa::path(get, path = "/admin/v1/tenants", tag = "admin", responses(
        (status = 200, description = "All tenant mappings (as this replica serves them)", body = TenantsFile),
        (status = 401, description = "CPHGW.0101 invalid JWT", body = ErrorJson),
        (status = 403, description = "CPHGW.0103 admin role missing, or an HS256 token while auth.allow_hs256_admin is false", body = ErrorJson),
))]
pub async fn list(State(app): State<Arc<AppState>>, _: Admin) -> Response {
    Json(app.tenants.load().spec()).into_response()
}

/// One tenant, with its `ETag`.
#[utoipa::path(get, path = "/admin/v1/tenants/{tenant}", tag = "admin",
    params(("tenant" = String, Path, description = "Tenant name")),
    responses(
        (status = 200, description = "The tenant's mapping; ETag: a strong validator of its stored version", body = TenantSpec),
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
    Ok(with_etag(StatusCode::OK, spec))
}

/// Creates or replaces a tenant: validated, persisted atomically with its
/// audit event, live for the next request on every replica.
#[utoipa::path(put, path = "/admin/v1/tenants/{tenant}", tag = "admin",
    params(
        ("tenant" = String, Path, description = "Tenant name (1-64 of A-Z a-z 0-9 _ -)"),
        ("If-Match" = Option<String>, Header, description = "Replace only if the tenant's ETag is this"),
        ("If-None-Match" = Option<String>, Header, description = "`*`: create only"),
    ),
    request_body = TenantSpec,
    responses(
        (status = 200, description = "Replaced; ETag set", body = TenantSpec),
        (status = 201, description = "Created; ETag set", body = TenantSpec),
        (status = 400, description = "CPHGW.0001 invalid; the message names the field; nothing changed", body = ErrorJson),
        (status = 401, description = "CPHGW.0101 invalid JWT", body = ErrorJson),
        (status = 403, description = "CPHGW.0103 admin role missing, or an HS256 token while auth.allow_hs256_admin is false", body = ErrorJson),
        (status = 412, description = "CPHGW.0105 If-Match / If-None-Match failed; nothing changed", body = ErrorJson),
        (status = 500, description = "CPHGW.0500 the tenants file could not be written; nothing changed", body = ErrorJson),
        (status = 503, description = "CPHGW.0304 the shared store is unreachable; nothing changed", body = ErrorJson),
))]
pub async fn put(
    State(app): State<Arc<AppState>>,
    Admin(admin): Admin,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    JsonBody(spec): JsonBody<TenantSpec>,
) -> Result<Response, ApiError> {
    let pre = precondition(&headers, true)?;
    let put = tenant_admin::put(
        app.store.as_ref(),
        &app.tenants,
        &tenant,
        spec.clone(),
        &pre,
        &admin.subject,
    )
    .await?;
    let status = if put.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(with_etag(status, &spec))
}

/// Removes a tenant.
#[utoipa::path(delete, path = "/admin/v1/tenants/{tenant}", tag = "admin",
    params(
        ("tenant" = String, Path, description = "Tenant name"),
        ("If-Match" = Option<String>, Header, description = "Remove only if the tenant's ETag is this"),
    ),
    responses(
        (status = 204, description = "Removed"),
        (status = 401, description = "CPHGW.0101 invalid JWT", body = ErrorJson),
        (status = 403, description = "CPHGW.0103 admin role missing, or an HS256 token while auth.allow_hs256_admin is false", body = ErrorJson),
        (status = 404, description = "CPHGW.0104 unknown tenant", body = ErrorJson),
        (status = 412, description = "CPHGW.0105 If-Match failed; nothing changed", body = ErrorJson),
        (status = 500, description = "CPHGW.0500 the tenants file could not be written; nothing changed", body = ErrorJson),
        (status = 503, description = "CPHGW.0304 the shared store is unreachable; nothing changed", body = ErrorJson),
))]
pub async fn delete(
    State(app): State<Arc<AppState>>,
    Admin(admin): Admin,
    Path(tenant): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let pre = precondition(&headers, false)?;
    tenant_admin::delete(
        app.store.as_ref(),
        &app.tenants,
        &tenant,
        &pre,
        &admin.subject,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Re-reads the tenant source (the file, or the store).
#[utoipa::path(post, path = "/admin/v1/reload", tag = "admin", responses(
        (status = 200, description = "Reloaded: {reloaded, changed, tenants}", body = Object),
        (status = 400, description = "CPHGW.0001 the source is invalid; the last good mapping stays", body = ErrorJson),
        (status = 401, description = "CPHGW.0101 invalid JWT", body = ErrorJson),
        (status = 403, description = "CPHGW.0103 admin role missing, or an HS256 token while auth.allow_hs256_admin is false", body = ErrorJson),
        (status = 503, description = "CPHGW.0304 the shared store is unreachable", body = ErrorJson),
))]
pub async fn reload(
    State(app): State<Arc<AppState>>,
    Admin(admin): Admin,
) -> Result<Response, ApiError> {
    let changed = tenant_admin::reload(app.store.as_ref(), &app.tenants, &admin.subject).await?;
    let tenants = app.tenants.load().len();
    Ok(Json(json!({"reloaded": true, "changed": changed, "tenants": tenants})).into_response())
}

/// `GET /admin/v1/audit` query.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub struct AuditQuery {
    /// Only this tenant's events.
    tenant: Option<String>,
    /// At most this many events (default 100, clamped to 1..=1000).
    limit: Option<String>,
}

/// The admin audit, newest first: who changed which tenant when, before and
/// after. From the shared store when there is one, else this replica's
/// events since start (the last 1000).
#[utoipa::path(get, path = "/admin/v1/audit", tag = "admin", params(AuditQuery), responses(
        (status = 200, description = "{events: [{at, who, action, tenant, before, after}]}", body = Object),
        (status = 401, description = "CPHGW.0101 invalid JWT", body = ErrorJson),
        (status = 403, description = "CPHGW.0103 admin role missing", body = ErrorJson),
        (status = 503, description = "CPHGW.0304 the shared store is unreachable", body = ErrorJson),
))]
pub async fn audit(
    State(app): State<Arc<AppState>>,
    _: Admin,
    query: Result<Query<AuditQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query.map_err(|e| ApiError::new(Code::InvalidBody, e.body_text()))?;
    let limit = match q.limit.as_deref() {
        None => 100,
        Some(n) => n
            .trim()
            .parse::<i64>()
            .map_err(|_| ApiError::new(Code::InvalidBody, "limit must be a whole number"))?,
    }
    .clamp(1, 1000) as usize;
    let events = app
        .store
        .audit(q.tenant.as_deref(), limit)
        .await
        .map_err(|e| refused(e, app.store.kind()))?;
    Ok(Json(json!({ "events": events })).into_response())
}
