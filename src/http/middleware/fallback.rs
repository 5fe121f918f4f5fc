//! What answers when no handler does: unknown routes, wrong methods, panics.

use axum::response::{IntoResponse, Response};

use crate::domain::{ApiError, Code};

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
