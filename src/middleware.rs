//! The middleware of both servers, assembled in one place: request id, the
//! request's span, metrics, panic catching and the rendering of gateway
//! errors as `{"request_id","error_code","error_msg"}`.

use std::sync::Arc;
use std::time::Instant;

use axum::body::Body;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use crate::domain::RequestId;
use crate::error::{ApiError, Code, ErrorBody, ErrorJson};
use crate::telemetry::Metrics;

pub const REQUEST_ID: &str = "x-request-id";

/// A short route name for metrics and logs.
fn route_name(path: Option<&MatchedPath>) -> &'static str {
    match path.map(MatchedPath::as_str) {
        Some("/v1/cloud-phone/phones/batch-stop") => "stop",
        Some("/v1/{project_id}/cloud-phone/phones/batch-stop") => "stop_project",
        Some("/v1/cloud-phone/jobs/{job_id}") => "job",
        Some("/v1/{project_id}/cloud-phone/jobs/{job_id}") => "job_project",
        Some("/admin/v1/tenants") => "admin_tenants",
        Some("/admin/v1/tenants/{tenant}") => "admin_tenant",
        Some("/admin/v1/reload") => "admin_reload",
        Some("/healthz") => "healthz",
        Some("/readyz") => "readyz",
        Some("/metrics") => "metrics",
        Some("/openapi.json") => "openapi",
        _ => "other",
    }
}

/// Outermost layer of every route: assigns the request id, opens the
/// request's span, counts, logs, and renders gateway errors.
pub async fn request_context(
    State(metrics): State<Arc<Metrics>>,
    mut req: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = RequestId::from_header(req.headers().get(REQUEST_ID).map(HeaderValue::as_bytes));
    let route = route_name(req.extensions().get::<MatchedPath>());
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        route,
        method = %req.method(),
        tenant = tracing::field::Empty,
        project = tracing::field::Empty,
        ids = tracing::field::Empty,
        batches = tracing::field::Empty,
        stopped = tracing::field::Empty,
        rejected = tracing::field::Empty,
        failed = tracing::field::Empty,
        unknown = tracing::field::Empty,
        upstream_calls = tracing::field::Empty,
        upstream_failed = tracing::field::Empty,
        upstream_max_ms = tracing::field::Empty,
    );
    req.extensions_mut().insert(id.clone());
    metrics.in_flight.inc();
    let mut resp = next.run(req).instrument(span.clone()).await;
    metrics.in_flight.dec();
    if let Some(ErrorBody(err)) = resp.extensions_mut().remove::<ErrorBody>() {
        let body = ErrorJson {
            request_id: id.as_str(),
            error_code: err.code,
            error_msg: &err.msg,
        };
        *resp.body_mut() = Body::from(serde_json::to_vec(&body).unwrap_or_default());
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if err.code.status().is_server_error() {
            tracing::warn!(parent: &span, error_code = err.code.as_str(), error = %err.msg, "request failed");
        }
    }
    if let Ok(v) = HeaderValue::from_str(id.as_str()) {
        resp.headers_mut().insert(REQUEST_ID, v);
    }
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    metrics.request(route, status, elapsed);
    if route != "metrics" && route != "healthz" && route != "readyz" {
        tracing::info!(parent: &span, status, latency_ms = elapsed.as_secs_f64() * 1000.0, "request");
    }
    resp
}

/// Turns a panic in a handler into a `CPHGW.0500` answer with a body.
pub fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("handler panicked");
    ApiError::new(Code::Internal, "internal error").into_response()
}

/// Fallback for unknown routes.
pub async fn not_found() -> ApiError {
    ApiError::new(Code::NotFound, "no such route")
}

/// Fallback for a known route with the wrong method.
pub async fn method_not_allowed() -> ApiError {
    ApiError::new(Code::MethodNotAllowed, "method not allowed on this route")
}
