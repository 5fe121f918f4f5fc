//! Admission control: how much the gateway takes on at once, all tenants
//! together. `limits.max_in_flight_requests` caller requests (stops and job
//! queries) and `limits.max_in_flight_ids` phone ids in running stops;
//! beyond either, 503 `CPHGW.0202` with `Retry-After`, before anything is
//! sent upstream. A stop's ids are admitted twice: roughly before its body
//! is read (from the declared length), exactly once it is parsed.
//!
//! So that one heavy tenant cannot take the whole gateway, one tenant may
//! hold at most half of each limit (and always room for one request of
//! `limits.max_phone_ids`); the rest stays for the others.
//!
//! Permits are drop guards: a request gives its places back when it ends,
//! however it ends.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::LimitsConfig;
use crate::domain::{ApiError, Code, TenantId};
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
    /// What one tenant may hold: requests, ids.
    tenant_requests: usize,
    tenant_ids: usize,
    held: Arc<Mutex<HashMap<TenantId, Held>>>,
    in_flight_ids: Gauge,
    metrics: Arc<Metrics>,
}

/// What one tenant holds.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    requests: usize,
    ids: usize,
}

type HeldMap = Arc<Mutex<HashMap<TenantId, Held>>>;

fn lock(held: &HeldMap) -> std::sync::MutexGuard<'_, HashMap<TenantId, Held>> {
    held.lock().unwrap_or_else(|e| e.into_inner())
}

/// A tenant's share, given back on drop.
struct Share {
    held: HeldMap,
    tenant: TenantId,
    requests: usize,
    ids: usize,
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut map = lock(&self.held);
        if let Some(h) = map.get_mut(&self.tenant) {
            h.requests = h.requests.saturating_sub(self.requests);
            h.ids = h.ids.saturating_sub(self.ids);
            if h.requests == 0 && h.ids == 0 {
                map.remove(&self.tenant);
            }
        }
    }
}

/// A caller request being served; its place is given back on drop.
#[must_use]
pub struct RequestPermit {
    _permit: OwnedSemaphorePermit,
    _share: Share,
}

/// Phone ids of a running stop, counted in `cphgw_in_flight_ids` while held.
#[must_use]
pub struct IdsPermit {
    _permit: OwnedSemaphorePermit,
    _share: Share,
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
        let half = |n: usize| n.div_ceil(2);
        Self {
            requests: Arc::new(Semaphore::new(limits.max_in_flight_requests)),
            ids: Arc::new(Semaphore::new(limits.max_in_flight_ids)),
            tenant_requests: half(limits.max_in_flight_requests),
            tenant_ids: half(limits.max_in_flight_ids)
                .max(limits.max_phone_ids)
                .min(limits.max_in_flight_ids),
            held: Arc::default(),
            in_flight_ids: metrics.in_flight_ids(),
            metrics,
        }
    }

    /// Takes `requests` and `ids` of `tenant`'s share, if they fit in it.
    fn share(&self, tenant: &TenantId, requests: usize, ids: usize) -> Option<Share> {
        let mut map = lock(&self.held);
        let h = map.entry(tenant.clone()).or_default();
        if h.requests + requests > self.tenant_requests || h.ids + ids > self.tenant_ids {
            if h.requests == 0 && h.ids == 0 {
                map.remove(tenant);
            }
            return None;
        }
        h.requests += requests;
        h.ids += ids;
        Some(Share {
            held: self.held.clone(),
            tenant: tenant.clone(),
            requests,
            ids,
        })
    }

    /// Ids `tenant` could still be admitted for.
    fn room_for_ids(&self, tenant: &TenantId) -> usize {
        let used = lock(&self.held).get(tenant).map_or(0, |h| h.ids);
        self.tenant_ids
            .saturating_sub(used)
            .min(self.ids.available_permits())
    }

    fn overloaded(&self, limit: &'static str, msg: String) -> ApiError {
        self.metrics.overload_rejected(limit);
        ApiError::new(Code::Overloaded, msg).retry_after(RETRY_AFTER_S)
    }

    /// A place for one more caller request of `tenant`, or 503.
    pub fn request(&self, tenant: &TenantId) -> Result<RequestPermit, ApiError> {
        let refused = || {
            self.overloaded(
                "requests",
                "the gateway is serving as many requests as it can (limits.max_in_flight_requests); nothing was sent, retry later".into(),
            )
        };
        let share = self.share(tenant, 1, 0).ok_or_else(refused)?;
        let permit = self
            .requests
            .clone()
            .try_acquire_owned()
            .map_err(|_| refused())?;
        Ok(RequestPermit {
            _permit: permit,
            _share: share,
        })
    }

    /// Whether a body of `declared` bytes could still fit: it is taken to
    /// carry at least `declared / MAX_BYTES_PER_ID` ids (at most
    /// `max_phone_ids`), and at least one.
    pub fn check_declared(
        &self,
        tenant: &TenantId,
        declared: Option<u64>,
        max_phone_ids: usize,
    ) -> Result<(), ApiError> {
        let least = declared.map_or(1, |n| (n / MAX_BYTES_PER_ID).max(1));
        let least = least.min(max_phone_ids as u64) as usize;
        if least <= self.room_for_ids(tenant) {
            return Ok(());
        }
        Err(self.overloaded(
            "ids",
            format!(
                "the gateway has no room for {least} more phone ids (limits.max_in_flight_ids); nothing was sent, retry later"
            ),
        ))
    }

    /// Places for `n` phone ids of a stop of `tenant`, or 503.
    pub fn ids(&self, tenant: &TenantId, n: usize) -> Result<IdsPermit, ApiError> {
        let too_many = || {
            self.overloaded(
                "ids",
                format!(
                    "the gateway has no room for {n} more phone ids (limits.max_in_flight_ids); nothing was sent, retry later"
                ),
            )
        };
        let share = self.share(tenant, 0, n).ok_or_else(too_many)?;
        let permit = u32::try_from(n)
            .ok()
            .and_then(|n| self.ids.clone().try_acquire_many_owned(n).ok())
            .ok_or_else(too_many)?;
        let n = n as i64;
        self.in_flight_ids.inc_by(n);
        Ok(IdsPermit {
            _permit: permit,
            _share: share,
            n,
            gauge: self.in_flight_ids.clone(),
        })
    }
}
