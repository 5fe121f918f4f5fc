//! The contract's error codes in one table, and `ApiError`, the one error type
//! handlers return (rendered by `http::error`).

use std::borrow::Cow;

use http::StatusCode;
use serde::Serialize;

/// Every error code the gateway emits, with its HTTP status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    /// Body is not JSON, `phone_ids` missing, not an array of strings, or empty.
    InvalidBody,
    /// A phone id (or job id) is not 1-64 characters of `[A-Za-z0-9_-]`.
    InvalidId,
    /// Too many ids, or body too large.
    TooLarge,
    /// JWT missing, malformed, bad signature, wrong alg/iss/aud, expired.
    InvalidToken,
    /// Tenant claim missing, tenant not mapped, or project not the tenant's.
    Forbidden,
    /// Admin call without the admin role.
    NotAdmin,
    /// Admin call for an unknown tenant.
    UnknownTenant,
    /// Admin `If-Match` / `If-None-Match` precondition failed.
    PreconditionFailed,
    /// The tenant's rate limit is exceeded.
    RateLimited,
    /// The gateway is at capacity (in-flight ids or requests); nothing was sent.
    Overloaded,
    /// Upstream failed (5xx, bad body, connection error) after retries.
    UpstreamFailed,
    /// Upstream did not answer in time; outcome unknown.
    UpstreamTimeout,
    /// No IAM token could be obtained for the project.
    IamUnavailable,
    /// The shared store is unreachable and the request needs it.
    StoreUnavailable,
    /// Malformed `Idempotency-Key`.
    InvalidIdempotencyKey,
    /// A request with this `Idempotency-Key` is still running.
    KeyInFlight,
    /// This `Idempotency-Key` was used for a different request.
    KeyReused,
    /// No such stop record for this tenant.
    NoStopRecord,
    /// No such route (not in the contract's table; see README).
    NotFound,
    /// Route exists, method does not (not in the contract's table; see README).
    MethodNotAllowed,
    /// A fault of the gateway itself (not in the contract's table; see README).
    Internal,
}

impl Code {
    pub const fn as_str(self) -> &'static str {
        match self {
            Code::InvalidBody => "CPHGW.0001",
            Code::InvalidId => "CPHGW.0002",
            Code::TooLarge => "CPHGW.0003",
            Code::NotFound => "CPHGW.0004",
            Code::MethodNotAllowed => "CPHGW.0005",
            Code::InvalidIdempotencyKey => "CPHGW.0006",
            Code::KeyInFlight => "CPHGW.0007",
            Code::KeyReused => "CPHGW.0008",
            Code::NoStopRecord => "CPHGW.0009",
            Code::InvalidToken => "CPHGW.0101",
            Code::Forbidden => "CPHGW.0102",
            Code::NotAdmin => "CPHGW.0103",
            Code::UnknownTenant => "CPHGW.0104",
            Code::PreconditionFailed => "CPHGW.0105",
            Code::RateLimited => "CPHGW.0201",
            Code::Overloaded => "CPHGW.0202",
            Code::UpstreamFailed => "CPHGW.0301",
            Code::UpstreamTimeout => "CPHGW.0302",
            Code::IamUnavailable => "CPHGW.0303",
            Code::StoreUnavailable => "CPHGW.0304",
            Code::Internal => "CPHGW.0500",
        }
    }

    pub const fn status(self) -> StatusCode {
        match self {
            Code::InvalidBody | Code::InvalidId | Code::InvalidIdempotencyKey => {
                StatusCode::BAD_REQUEST
            }
            Code::KeyInFlight => StatusCode::CONFLICT,
            Code::KeyReused => StatusCode::UNPROCESSABLE_ENTITY,
            Code::NoStopRecord => StatusCode::NOT_FOUND,
            Code::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::NotFound | Code::UnknownTenant => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::InvalidToken => StatusCode::UNAUTHORIZED,
            Code::Forbidden | Code::NotAdmin => StatusCode::FORBIDDEN,
            Code::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Code::UpstreamFailed => StatusCode::BAD_GATEWAY,
            Code::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Code::IamUnavailable | Code::StoreUnavailable | Code::Overloaded => {
                StatusCode::SERVICE_UNAVAILABLE
            }
            Code::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl Serialize for Code {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// An error answered by the gateway itself: a code of the contract's table
/// and a message for the caller. `http::error` renders it as
/// `{"request_id","error_code","error_msg"}`.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {msg}", code.as_str())]
pub struct ApiError {
    pub code: Code,
    pub msg: Cow<'static, str>,
    /// Seconds for `Retry-After` (rate limiting, overload).
    pub retry_after_s: Option<u64>,
}

impl ApiError {
    pub fn new(code: Code, msg: impl Into<Cow<'static, str>>) -> Self {
        Self {
            code,
            msg: msg.into(),
            retry_after_s: None,
        }
    }

    /// The same error with a `Retry-After`.
    pub fn retry_after(mut self, seconds: u64) -> Self {
        self.retry_after_s = Some(seconds);
        self
    }
}
