//! Admission control: how much the gateway takes on at once, all tenants
//! together. `limits.max_in_flight_requests` caller requests (stops and job
//! queries) and `limits.max_in_flight_ids` phone ids in running stops;
//! beyond either, 503 `CPHGW.0202` with `Retry-After`, before anything is
//! sent upstream. A stop's ids are admitted twice: roughly before its body
//! is read (from the declared length), exactly once it is parsed.
//!
//! Permits are drop guards: a request gives its places back when it ends,
//! however it ends.

use std::sync::Arc;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::LimitsConfig;
use crate::domain::{ApiError, Code};
use crate::telemetry::Metrics;

/// `Retry-After` of an overload answer, in seconds.
const RETRY_AFTER_S: u64 = 1;

/// The most bytes one id takes in a compact `phone_ids` list: 64
/// characters, two quotes, a comma and a space.
pub const MAX_BYTES_PER_ID: u64 = 68;

/// The gateway's capacity, shared by all requests.
pub struct Admission {
    requests: Arc<Semaphore>,
    ids: Arc<Semaphore>,
    max_ids: usize,
    in_flight_ids: Gauge,
    metrics: Arc<Metrics>,
}

/// A caller request being served; its place is given back on drop.
#[must_use]
pub struct RequestPermit(#[allow(dead_code)] OwnedSemaphorePermit);

/// Phone ids of a running stop, counted in `cphgw_in_flight_ids` while held.
#[must_use]
pub struct IdsPermit {
    _permit: OwnedSemaphorePermit,
    n: i64,
    gauge: Gauge,
}

impl Drop for IdsPermit {
    fn drop(&mut self) {
        self.gauge.dec_by(self.n);
    }
}

impl Admission {
    pub fn new(limits: &LimitsConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            requests: Arc::new(Semaphore::new(limits.max_in_flight_requests)),
            ids: Arc::new(Semaphore::new(limits.max_in_flight_ids)),
            max_ids: limits.max_in_flight_ids,
            in_flight_ids: metrics.in_flight_ids(),
            metrics,
        }
    }

    fn overloaded(&self, limit: &'static str, msg: String) -> ApiError {
        self.metrics.overload_rejected(limit);
        ApiError::new(Code::Overloaded, msg).retry_after(RETRY_AFTER_S)
    }

    /// A place for one more caller request, or 503.
    pub fn request(&self) -> Result<RequestPermit, ApiError> {
        self.requests
            .clone()
            .try_acquire_owned()
            .map(RequestPermit)
            .map_err(|_| {
                self.overloaded(
                    "requests",
                    "the gateway is serving as many requests as it can (limits.max_in_flight_requests); nothing was sent, retry later".into(),
                )
            })
    }

    /// Whether a body of `declared` bytes could still fit: it is taken to
    /// carry at least `declared / MAX_BYTES_PER_ID` ids (at most
    /// `max_phone_ids`), and at least one.
    pub fn check_declared(
        &self,
        declared: Option<u64>,
        max_phone_ids: usize,
    ) -> Result<(), ApiError> {
        let least = declared.map_or(1, |n| (n / MAX_BYTES_PER_ID).max(1));
        let least = least.min(max_phone_ids as u64) as usize;
        if least <= self.ids.available_permits() {
            return Ok(());
        }
        Err(self.overloaded(
            "ids",
            format!(
                "the gateway has no room for {least} more phone ids (limits.max_in_flight_ids); nothing was sent, retry later"
            ),
        ))
    }

    /// Places for `n` phone ids of a stop, or 503.
    pub fn ids(&self, n: usize) -> Result<IdsPermit, ApiError> {
        let too_many = || {
            self.overloaded(
                "ids",
                format!(
                    "the gateway has no room for {n} more phone ids (limits.max_in_flight_ids); nothing was sent, retry later"
                ),
            )
        };
        if n > self.max_ids {
            return Err(too_many());
        }
        let permit = u32::try_from(n)
            .ok()
            .and_then(|n| self.ids.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(too_many)?;
        let n = n as i64;
        self.in_flight_ids.inc_by(n);
        Ok(IdsPermit {
            _permit: permit,
            n,
            gauge: self.in_flight_ids.clone(),
        })
    }
}
