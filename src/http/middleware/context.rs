//! The request id, the request's span, its log line and its metrics: the
//! caller's `X-Request-Id` when it is valid (else a new one), set on the
//! request, on the task-local that errors render with, and on the response;
//! one log line per request with what the handler noted (see
//! [`crate::telemetry::request_log`]); `cphgw_requests_total{route,status,
//! tenant}`, the latency histogram and the in-flight gauge (a drop guard,
//! so a request whose caller goes away still leaves the gauge right).
//!
//! One middleware rather than one per concern: each layer costs a boxed
//! future and a poll per request.

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use tracing::Instrument;

use futures_util::FutureExt;

use super::metrics::{Names, RouteNames};
use crate::domain::{RequestId, TenantId};
use crate::http::error::scope_request_id;
use crate::telemetry::Metrics;
use crate::telemetry::request_log::{self, RequestLog};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// When the request came (a request extension), for work that outlives
/// the caller's connection and logs the request itself.
#[derive(Debug, Clone, Copy)]
pub struct RequestStarted(pub Instant);

/// What the request context needs: the metrics and the routes' names.
#[derive(Clone)]
pub struct Context {
    pub metrics: Arc<Metrics>,
    pub names: RouteNames,
}

impl Context {
    /// With the names of a router's routes, once they are all added.
    pub fn new(metrics: Arc<Metrics>, names: Names) -> Self {
        Self {
            metrics,
            names: names.done(),
        }
    }
}

/// Outermost layer of every route.
pub async fn request_context(State(ctx): State<Context>, req: Request, next: Next) -> Response {
    let matched = req.extensions().get::<MatchedPath>().cloned();
    let matched = matched.as_ref().map(MatchedPath::as_str);
    in_context(&ctx, matched, req, |req| next.run(req)).await
}

/// Runs `handler` on `req` in the request's context: its id, span, log
/// line and metrics, named after `matched` (the route's path pattern, if
/// one matched), with a panic answered `CPHGW.0500`.
///
/// The request is read and the handler's future made before the returned
/// future starts, so that the request is held once, inside the handler's
/// future. (As an `async fn` this held the request and the futures it
/// wraps also as its arguments: the future hyper boxes for each request
/// was 2,760 bytes, 1,144 now.)
pub fn in_context<'a, F, Fut>(
    ctx: &'a Context,
    matched: Option<&str>,
    mut req: Request,
    handler: F,
) -> impl Future<Output = Response> + use<'a, F, Fut>
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    let Context { metrics, names } = ctx;
    let started = Instant::now();
    let in_flight = metrics.in_flight_guard();
    let id = RequestId::from_header(
        req.headers()
            .get(REQUEST_ID_HEADER)
            .map(HeaderValue::as_bytes),
    );
    let name = names.of(matched);
    let route = matched.unwrap_or("other");
    let span = tracing::info_span!("request", request_id = %id, route, method = %req.method());
    req.extensions_mut().insert(id.clone());
    req.extensions_mut().insert(RequestStarted(started));
    let header = HeaderValue::from_str(id.as_str()).ok();
    let log = Arc::new(RequestLog::default());
    // A handler that panics is answered `CPHGW.0500`, logged and counted.
    let handled = std::panic::AssertUnwindSafe(handler(req))
        .catch_unwind()
        .map(|done| done.unwrap_or_else(super::fallback::panic_response));
    let handled =
        request_log::scope(log.clone(), scope_request_id(id, handled)).instrument(span.clone());
    async move {
        let _in_flight = in_flight;
        let mut resp = handled.await;
        // A handler may name another id (a replay answers with the first
        // request's); otherwise the request's own.
        if let Some(v) = header
            && !resp.headers().contains_key(REQUEST_ID_HEADER)
        {
            resp.headers_mut().insert(REQUEST_ID_HEADER, v);
        }
        let fields = log.take();
        let status = resp.status().as_u16();
        let elapsed = started.elapsed();
        let tenant = fields.tenant.as_ref().map_or("", TenantId::as_str);
        metrics.request(name.name, status, tenant, elapsed);
        if !name.unlogged {
            let _entered = span.enter();
            request_log::write_line(status, elapsed.as_secs_f64() * 1000.0, &fields, false);
        }
        resp
    }
}
