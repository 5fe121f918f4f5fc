//! The middleware of both servers, assembled in one place; each concern in a
//! file of its own.

mod context;
mod fallback;
mod metrics;

use std::sync::Arc;

use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;

pub use context::{REQUEST_ID_HEADER, RequestStarted, request_context};
pub use fallback::{method_not_allowed, not_found};
pub use metrics::{RouteName, Unlogged, named};

use crate::telemetry::Metrics;

/// Wraps every route of `router`, outermost first: the request context
/// (request id, span, log line, metrics with the in-flight gauge), and
/// panic catching.
pub fn wrap(router: Router, metrics: Arc<Metrics>) -> Router {
    router
        .layer(CatchPanicLayer::custom(fallback::panic_response))
        .layer(axum::middleware::from_fn_with_state(
            metrics,
            request_context,
        ))
}
