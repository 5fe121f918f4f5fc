//! Extractors shared by the handlers: the verified caller, and the caller's
//! tenant and project.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::header;
use axum::http::request::Parts;

use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::RequestId;
use crate::error::{ApiError, Code};
use crate::tenants::{Project, Tenant};

/// The request id the middleware assigned.
pub fn request_id(parts: &Parts) -> RequestId {
    parts
        .extensions
        .get::<RequestId>()
        .cloned()
        .unwrap_or_else(RequestId::generate)
}

/// A caller whose JWT verified.
pub struct Authenticated(pub Arc<Caller>);

impl FromRequestParts<Arc<AppState>> for Authenticated {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &Arc<AppState>) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .map(|v| v.as_bytes());
        match app.auth.verify_header(header).await {
            Ok(caller) => Ok(Self(caller)),
            Err(e) => {
                app.metrics.jwt_rejected(e.reason());
                tracing::info!(reason = e.reason(), "JWT rejected");
                Err(ApiError::new(
                    Code::InvalidToken,
                    format!("invalid token: {e}"),
                ))
            }
        }
    }
}

/// The caller's tenant, resolved against the mapping as of now. The request
/// keeps this snapshot to the end, whatever admins change meanwhile.
pub struct TenantContext {
    pub caller: Arc<Caller>,
    pub tenant: Arc<Tenant>,
}

impl TenantContext {
    pub fn resolve(app: &AppState, caller: Arc<Caller>) -> Result<Self, ApiError> {
        let name = caller
            .tenant
            .clone()
            .ok_or_else(|| ApiError::new(Code::Forbidden, "the token has no valid tenant claim"))?;
        let registry = app.tenants.load();
        let tenant = registry.get(&name).cloned().ok_or_else(|| {
            ApiError::new(
                Code::Forbidden,
                format!("tenant {name} is not mapped to any project"),
            )
        })?;
        tracing::Span::current().record("tenant", name.as_str());
        Ok(Self { caller, tenant })
    }

    /// The project named in the path, or the tenant's default.
    pub fn project(&self, path_project: Option<&str>) -> Result<Arc<Project>, ApiError> {
        let project = match path_project {
            None => self.tenant.default_project.clone(),
            Some(id) => self.tenant.project(id).cloned().ok_or_else(|| {
                ApiError::new(
                    Code::Forbidden,
                    format!(
                        "project {:?} is not one of tenant {}'s projects",
                        crate::domain::truncate(id, 64),
                        self.tenant.name
                    ),
                )
            })?,
        };
        tracing::Span::current().record("project", project.id.as_str());
        Ok(project)
    }
}
