//! Small helpers shared by every module: locking, JSON answers, the clock.

use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;

/// Locks a mutex, ignoring poisoning: every critical section leaves its data
/// consistent, so a panic elsewhere is no reason to stop serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Serializes a JSON body (an empty body if that fails, which it does not for
/// the types used here).
pub(crate) fn to_json(body: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(body).unwrap_or_else(|e| {
        tracing::error!(error = %e, "cannot serialize a response");
        Vec::new()
    })
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let mut res = Response::new(Body::from(to_json(body)));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    res
}

/// Monotonic time since start, and its wall-clock rendering.
pub(crate) struct Clock {
    start: Instant,
    wall: OffsetDateTime,
}

/// RFC 3339 in UTC with microseconds, as Huawei writes it: `2026-11-27T09:05:22.701000Z`.
const RFC3339_MICROS: &[BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

impl Clock {
    pub(crate) fn new() -> Self {
        Self {
            start: Instant::now(),
            wall: OffsetDateTime::now_utc(),
        }
    }

    /// Nanoseconds since the simulator started.
    pub(crate) fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Wall-clock time `ns` nanoseconds after start, as RFC 3339.
    pub(crate) fn rfc3339_at(&self, ns: u64) -> String {
        rfc3339(self.wall + Duration::from_nanos(ns))
    }
}

/// Formats a UTC time as RFC 3339 with microseconds.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(RFC3339_MICROS).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_have_microseconds() {
        let t = time::macros::datetime!(2026-11-27 09:05:22.701 UTC);
        assert_eq!(rfc3339(t), "2026-11-27T09:05:22.701000Z");
    }
}
