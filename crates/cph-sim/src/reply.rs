//! What every CPH answer carries: a fresh request id, the caller's
//! `X-Request-Id` echoed back, and Huawei's error body.

use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use serde::Serialize;

use crate::ids::Hex128;
use crate::util::json_response;

const X_REQUEST_ID: &str = "x-request-id";

/// The answer context of one CPH call.
pub(crate) struct Reply {
    pub request_id: Hex128,
    echo: Option<HeaderValue>,
}

/// A CPH error body.
#[derive(Serialize)]
pub(crate) struct CphError<'a> {
    pub request_id: Hex128,
    pub error_code: &'a str,
    pub error_msg: &'a str,
}

impl Reply {
    pub(crate) fn new(headers: &HeaderMap) -> Self {
        Self {
            request_id: Hex128::random(),
            echo: headers.get(X_REQUEST_ID).cloned(),
        }
    }

    /// Adds the echoed `X-Request-Id` to an answer.
    pub(crate) fn finish(&self, mut res: Response) -> Response {
        if let Some(id) = &self.echo {
            res.headers_mut()
                .insert(HeaderName::from_static(X_REQUEST_ID), id.clone());
        }
        res
    }

    pub(crate) fn json(&self, status: StatusCode, body: &impl Serialize) -> Response {
        self.finish(json_response(status, body))
    }

    pub(crate) fn error(&self, status: StatusCode, error_code: &str, error_msg: &str) -> Response {
        let body = CphError {
            request_id: self.request_id,
            error_code,
            error_msg,
        };
        self.json(status, &body)
    }
}
