//! Extractors shared by the handlers: the verified caller, and the caller's
//! tenant and project.

use std::sync::Arc;

use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::header;
use axum::http::request::Parts;

use crate::auth::Caller;
use crate::domain::{ApiError, Code, RequestId};
use crate::http::state::AppState;
use crate::telemetry::request_log;
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
            Ok(caller) => {
                // The request log line says who called (never the token).
                request_log::note(|f| f.caller = Some(caller.subject.clone()));
                Ok(Self(caller))
            }
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
        if !app.tenants.is_loaded() {
            return Err(ApiError::new(
                Code::StoreUnavailable,
                "no tenant mapping loaded yet: the shared store has not answered since start",
            )
            .retry_after(1));
        }
        let registry = app.tenants.load();
        let tenant = registry.get(&name).cloned().ok_or_else(|| {
            ApiError::new(
                Code::Forbidden,
                format!("tenant {name} is not mapped to any project"),
            )
        })?;
        request_log::note(|f| f.tenant = Some(name.clone()));
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
        request_log::note(|f| f.project = Some(project.id.clone()));
        Ok(project)
    }
}

/// Reads the body up to `limit` bytes within `server.body_read_timeout_ms`;
/// a longer one is `CPHGW.0003`, one that does not arrive in time
/// `CPHGW.0001` (and the connection is closed, as the rest of the body is
/// never read).
pub async fn read_body(
    app: &AppState,
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let timeout = app.config.server.body_read_timeout;
    tokio::time::timeout(timeout, read_body_within(headers, body, limit))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                Code::InvalidBody,
                format!("the body did not arrive within {} ms", timeout.as_millis()),
            ))
        })
}

/// Reads and drops the body in the background (at most `limit` bytes,
/// within `server.body_read_timeout_ms`) while the answer is sent, so that
/// an answer given before the body was needed (403, 429, 503) reaches a
/// client that is still sending it, rather than a connection reset.
/// Nothing is kept.
pub fn discard_body(app: &AppState, body: axum::body::Body, limit: usize) {
    let timeout = app.config.server.body_read_timeout;
    tokio::spawn(discard(body, limit, timeout));
}

async fn discard(body: axum::body::Body, limit: usize, timeout: std::time::Duration) {
    use http_body_util::BodyExt;
    let drain = async {
        let mut body = body;
        let mut seen = 0usize;
        while let Some(Ok(frame)) = body.frame().await {
            seen += frame.data_ref().map_or(0, |d| d.len());
            if seen > limit {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(timeout, drain).await;
}

async fn read_body_within(
    headers: &axum::http::HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || ApiError::new(Code::TooLarge, format!("body over {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source = std::error::Error::source(&e);
        let mut over = false;
        while let Some(s) = source {
            over |= s.is::<http_body_util::LengthLimitError>();
            source = s.source();
        }
        if over {
            too_large()
        } else {
            ApiError::new(Code::InvalidBody, format!("could not read the body: {e}"))
        }
    })
}

/// A JSON body of type `T`, read within `limits.max_body_bytes`; a body that
/// does not parse is `CPHGW.0001` naming the field (`projects[0].region: ..`),
/// even for a syntax error half-way through.
pub struct JsonBody<T>(pub T);

impl<T: serde::de::DeserializeOwned> FromRequest<Arc<AppState>> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, app: &Arc<AppState>) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        let bytes = read_body(app, &parts.headers, body, app.config.limits.max_body_bytes).await?;
        let mut de = serde_json::Deserializer::from_slice(&bytes);
        let value: T = serde_path_to_error::deserialize(&mut de).map_err(|e| {
            let path = e.path().to_string();
            let field = if path == "." { "body".to_owned() } else { path };
            ApiError::new(Code::InvalidBody, format!("{field}: {}", e.inner()))
        })?;
        de.end()
            .map_err(|e| ApiError::new(Code::InvalidBody, format!("body: {e}")))?;
        Ok(Self(value))
    }
}

/// Path parameters. A path that does not decode (e.g. percent-escapes that
/// are not UTF-8) is the contract's 400 `CPHGW.0001`, with its body.
#[derive(axum::extract::FromRequestParts)]
#[from_request(via(axum::extract::Path), rejection(ApiError))]
pub struct Path<T>(pub T);

impl From<axum::extract::rejection::PathRejection> for ApiError {
    fn from(e: axum::extract::rejection::PathRejection) -> Self {
        ApiError::new(
            Code::InvalidBody,
            format!(
                "the path does not decode: {}",
                crate::domain::truncate(&e.body_text(), 200)
            ),
        )
    }
}
