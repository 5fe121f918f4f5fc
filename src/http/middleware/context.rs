//! The request id and the request's span: the caller's `X-Request-Id` when it
//! is valid (else a new one), set on the request, on the task-local that
//! errors render with, and on the response; one log line per request.

use std::time::Instant;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use super::metrics::Unlogged;
use crate::domain::RequestId;
use crate::http::error::scope_request_id;

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// When the request came (a request extension), for work that outlives
/// the caller's connection and logs the request itself.
#[derive(Debug, Clone, Copy)]
pub struct RequestStarted(pub Instant);

/// Outermost layer of every route.
pub async fn request_context(mut req: Request, next: Next) -> Response {
    let started = Instant::now();
    let id = RequestId::from_header(
        req.headers()
            .get(REQUEST_ID_HEADER)
            .map(HeaderValue::as_bytes),
    );
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or("other", MatchedPath::as_str);
    let span = tracing::info_span!(
        "request",
        request_id = %id,
        route,
        method = %req.method(),
        tenant = tracing::field::Empty,
        caller = tracing::field::Empty,
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
    req.extensions_mut().insert(RequestStarted(started));
    let header = HeaderValue::from_str(id.as_str()).ok();
    let mut resp = scope_request_id(id, next.run(req))
        .instrument(span.clone())
        .await;
    // A handler may name another id (a replay answers with the first
    // request's); otherwise the request's own.
    if let Some(v) = header
        && !resp.headers().contains_key(REQUEST_ID_HEADER)
    {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    if resp.extensions().get::<Unlogged>().is_none() {
        let status = resp.status().as_u16();
        let latency_ms = started.elapsed().as_secs_f64() * 1000.0;
        tracing::info!(parent: &span, status, latency_ms, "request");
    }
    resp
}
