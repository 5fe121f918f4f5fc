//! The gateway's metrics (names in CONTRACT section 7), in one registry per
//! gateway instance.

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::domain::ProjectId;

/// Increments a gauge now and decrements it when dropped, so that a future
/// dropped half-way (a caller gone) still leaves the gauge right.
#[must_use = "the gauge is decremented when the guard is dropped"]
pub struct GaugeGuard(Gauge);

impl GaugeGuard {
    pub fn new(gauge: Gauge) -> Self {
        gauge.inc();
        Self(gauge)
    }
}

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: &'static str,
    status: u16,
    tenant: Tenant,
}

/// The `tenant` label: a tenant name from the mapping, or "" for a request
/// without a mapped tenant. Never taken from a token unchecked, so the
/// series are bounded by the tenants ever mapped.
type Tenant = String;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Limit {
    limit: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
    tenant: Tenant,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Reason {
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VersionLabel {
    version: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProjectLabel {
    project: String,
}

/// The gateway's metrics (names in CONTRACT section 7).
pub struct Metrics {
    registry: Registry,
    requests: Family<RouteStatus, Counter>,
    request_duration: Histogram,
    upstream_requests: Family<Status, Counter>,
    upstream_duration: Histogram,
    phones: Family<Outcome, Counter>,
    iam_fetches: Family<ResultLabel, Counter>,
    jwt_rejections: Family<Reason, Counter>,
    upstream_retries: Family<Reason, Counter>,
    in_flight: Gauge,
    store_up: Gauge,
    idempotent_replays: Counter,
    record_failures: Counter,
    in_flight_ids: Gauge,
    overload_rejections: Family<Limit, Counter>,
    upstream_in_flight: Family<ProjectLabel, Gauge>,
    iam_token_age: Family<ProjectLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    tenants_revision: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let requests = Family::default();
        // 1 ms .. ~65 s
        let request_duration = Histogram::new(exponential_buckets(0.001, 2.0, 17));
        let upstream_requests = Family::default();
        let upstream_duration = Histogram::new(exponential_buckets(0.001, 2.0, 15));
        let phones = Family::default();
        let iam_fetches = Family::default();
        let jwt_rejections = Family::default();
        let upstream_retries = Family::default();
        let in_flight = Gauge::default();
        let store_up = Gauge::default();
        let idempotent_replays = Counter::default();
        let record_failures = Counter::default();
        let in_flight_ids = Gauge::default();
        let overload_rejections = Family::default();
        let upstream_in_flight = Family::default();
        let iam_token_age = Family::default();
        let build_info = Family::<VersionLabel, Gauge>::default();
        build_info
            .get_or_create(&VersionLabel {
                version: env!("CARGO_PKG_VERSION"),
            })
            .set(1);
        let tenants_revision = Gauge::default();
        // prometheus-client appends `_total` to counters.
        registry.register(
            "cphgw_requests",
            "Caller requests by route and status",
            requests.clone(),
        );
        registry.register(
            "cphgw_request_duration_seconds",
            "Caller request latency",
            request_duration.clone(),
        );
        registry.register(
            "cphgw_upstream_requests",
            "Upstream (CPH) calls by status or failure kind",
            upstream_requests.clone(),
        );
        registry.register(
            "cphgw_upstream_retries",
            "Extra upstream (CPH) calls by reason: 429, 503, CPS.0003, connect (retries), renewed_token (a 401 answered by renewing the IAM token), split (a whole batch refused, sent again in halves)",
            upstream_retries.clone(),
        );
        registry.register(
            "cphgw_upstream_duration_seconds",
            "Upstream (CPH) call latency",
            upstream_duration.clone(),
        );
        registry.register(
            "cphgw_phones",
            "Phones answered, by outcome (stopped, rejected, failed, unknown)",
            phones.clone(),
        );
        registry.register(
            "cphgw_iam_token_fetches",
            "IAM token fetches by result",
            iam_fetches.clone(),
        );
        registry.register(
            "cphgw_jwt_rejections",
            "Caller JWTs refused, by reason",
            jwt_rejections.clone(),
        );
        registry.register(
            "cphgw_in_flight_requests",
            "Caller requests being served",
            in_flight.clone(),
        );
        registry.register(
            "cphgw_idempotent_replays",
            "Stops answered from an earlier request with the same Idempotency-Key",
            idempotent_replays.clone(),
        );
        registry.register(
            "cphgw_stop_record_failures",
            "Stop records (or batch outcomes of them) that could not be written",
            record_failures.clone(),
        );
        registry.register(
            "cphgw_store_up",
            "1 if the last call to the shared store succeeded (always 1 without a store)",
            store_up.clone(),
        );
        registry.register(
            "cphgw_in_flight_ids",
            "Phone ids in running stops",
            in_flight_ids.clone(),
        );
        registry.register(
            "cphgw_overload_rejections",
            "Requests refused with 503 CPHGW.0202, by the limit reached (ids, requests)",
            overload_rejections.clone(),
        );
        registry.register(
            "cphgw_upstream_in_flight",
            "Upstream calls in flight per project",
            upstream_in_flight.clone(),
        );
        registry.register(
            "cphgw_iam_token_age_seconds",
            "Age of the cached IAM token per project",
            iam_token_age.clone(),
        );
        registry.register(
            "cphgw_build_info",
            "The gateway's build: version label, value 1",
            build_info,
        );
        registry.register(
            "cphgw_tenants_revision",
            "Revision of the tenant mapping in use (the same on replicas with the same mapping)",
            tenants_revision.clone(),
        );
        Self {
            registry,
            requests,
            request_duration,
            upstream_requests,
            upstream_duration,
            phones,
            iam_fetches,
            jwt_rejections,
            upstream_retries,
            in_flight,
            store_up,
            idempotent_replays,
            record_failures,
            in_flight_ids,
            overload_rejections,
            upstream_in_flight,
            iam_token_age,
            tenants_revision,
        }
    }

    /// Sets the revision of the tenant mapping in use (below 2^53).
    pub fn tenants_revision(&self, revision: u64) {
        self.tenants_revision
            .set(i64::try_from(revision).unwrap_or(i64::MAX));
    }

    /// A caller request answered; `tenant` is the mapped tenant's name, or
    /// "" when the request had none.
    pub fn request(&self, route: &'static str, status: u16, tenant: &str, elapsed: Duration) {
        self.requests
            .get_or_create(&RouteStatus {
                route,
                status,
                tenant: tenant.into(),
            })
            .inc();
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    pub fn upstream(&self, status: &'static str, elapsed: Duration) {
        self.upstream_requests
            .get_or_create(&Status { status })
            .inc();
        self.upstream_duration.observe(elapsed.as_secs_f64());
    }

    pub fn phones(&self, outcome: &'static str, tenant: &str, n: u64) {
        self.phones
            .get_or_create(&Outcome {
                outcome,
                tenant: tenant.into(),
            })
            .inc_by(n);
    }

    /// The gauge of phone ids in running stops.
    pub fn in_flight_ids(&self) -> Gauge {
        self.in_flight_ids.clone()
    }

    /// A request refused at capacity (`limit`: "ids" or "requests").
    pub fn overload_rejected(&self, limit: &'static str) {
        self.overload_rejections
            .get_or_create(&Limit { limit })
            .inc();
    }

    pub fn iam_fetch(&self, result: &'static str) {
        self.iam_fetches
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Counts an extra upstream call made for `reason` (429, 503, CPS.0003,
    /// connect, renewed_token, split).
    pub fn upstream_retry(&self, reason: &'static str) {
        self.upstream_retries
            .get_or_create(&Reason { reason })
            .inc();
    }

    pub fn jwt_rejected(&self, reason: &'static str) {
        self.jwt_rejections.get_or_create(&Reason { reason }).inc();
    }

    /// Counts a caller request in flight until the guard is dropped.
    pub fn in_flight_guard(&self) -> GaugeGuard {
        GaugeGuard::new(self.in_flight.clone())
    }

    /// The project's upstream in-flight gauge.
    pub fn upstream_in_flight(&self, project: &ProjectId) -> Gauge {
        self.upstream_in_flight
            .get_or_create(&ProjectLabel {
                project: project.to_string(),
            })
            .clone()
    }

    /// Sets the age of the project's cached IAM token.
    pub fn iam_token_age(&self, project: &ProjectId, age: Duration) {
        self.iam_token_age
            .get_or_create(&ProjectLabel {
                project: project.to_string(),
            })
            .set(age.as_secs_f64());
    }

    pub fn idempotent_replay(&self) {
        self.idempotent_replays.inc();
    }

    /// `n` stop records (or batch outcomes of one) not written.
    pub fn record_writes_failed(&self, n: u64) {
        self.record_failures.inc_by(n);
    }

    /// Whether the shared store answers.
    pub fn store_up(&self, up: bool) {
        self.store_up.set(i64::from(up));
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}
