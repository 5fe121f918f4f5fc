//! Renders [`ApiError`] as the contract's error body,
//! `{"request_id","error_code","error_msg"}`, with its status and headers.
//!
//! The request id comes from a task-local that the request-id middleware
//! sets for the whole request, so every error (a handler's, an extractor's,
//! a fallback's or a caught panic's) renders itself completely.

use std::future::Future;

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::domain::{ApiError, Code, RequestId};

tokio::task_local! {
    static REQUEST_ID: RequestId;
}

/// Runs `fut` with `id` as the request id that errors render. (Not an
/// `async fn`: one would hold `fut` twice, as its argument and as what it
/// awaits, doubling the request's future.)
pub fn scope_request_id<F: Future>(id: RequestId, fut: F) -> impl Future<Output = F::Output> {
    REQUEST_ID.scope(id, fut)
}

/// The request id of the request being served, if any.
pub fn current_request_id() -> Option<RequestId> {
    REQUEST_ID.try_with(RequestId::clone).ok()
}

/// The JSON shape of a gateway error.
#[derive(Serialize, utoipa::ToSchema)]
pub struct ErrorJson<'a> {
    pub request_id: &'a str,
    #[schema(value_type = String, example = "CPHGW.0001")]
    pub error_code: Code,
    pub error_msg: &'a str,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let id = current_request_id().unwrap_or_else(RequestId::generate);
        let body = ErrorJson {
            request_id: id.as_str(),
            error_code: self.code,
            error_msg: &self.msg,
        };
        let status = self.code.status();
        if status.is_server_error() {
            tracing::warn!(error_code = self.code.as_str(), error = %self.msg, "request failed");
        }
        let mut resp = (
            status,
            [(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            )],
            serde_json::to_vec(&body).unwrap_or_default(),
        )
            .into_response();
        let headers = resp.headers_mut();
        if self.code == Code::InvalidToken {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer error=\"invalid_token\""),
            );
        }
        if let Some(s) = self.retry_after_s {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        resp
    }
}
