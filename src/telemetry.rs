//! Logs (`tracing`, JSON with `LOG_FORMAT=json`) and Prometheus metrics
//! (`prometheus-client`, one registry per gateway instance).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tracing_subscriber::EnvFilter;

/// Keeps the OTLP exporter alive; dropping it flushes the spans not yet sent.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<Provider>,
    /// Flushes the log writer's queue on drop.
    _writer: Option<tracing_appender::non_blocking::WorkerGuard>,
}

#[cfg(feature = "otlp")]
type Provider = opentelemetry_sdk::trace::SdkTracerProvider;
#[cfg(not(feature = "otlp"))]
type Provider = std::convert::Infallible;

type BoxLayer = Box<dyn tracing_subscriber::Layer<tracing_subscriber::Registry> + Send + Sync>;

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        #[cfg(feature = "otlp")]
        if let Some(p) = self.provider.take() {
            let _ = p.shutdown();
        }
        #[cfg(not(feature = "otlp"))]
        let _ = self.provider.take();
    }
}

/// Installs the global subscriber (see [`init`]) without trace export. Keep
/// the guard for as long as logs should be written.
pub fn init_logging() -> TelemetryGuard {
    init(None).unwrap_or(TelemetryGuard {
        provider: None,
        _writer: None,
    })
}

/// Installs the global subscriber: readable text by default, JSON lines when
/// `LOG_FORMAT=json`; level from `RUST_LOG` (default `info`); and, with the
/// `otlp` feature and an endpoint, OTLP/HTTP trace export.
pub fn init(otlp_endpoint: Option<&str>) -> Result<TelemetryGuard, String> {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{Layer, Registry};

    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    // Log lines go to stderr from a background thread: a request never waits
    // on a slow or full stderr (a burst beyond the queue is dropped rather
    // than stalling the runtime).
    let (writer, writer_guard) = tracing_appender::non_blocking(std::io::stderr());
    let fmt: BoxLayer = if json {
        tracing_subscriber::fmt::layer()
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(true)
            .with_writer(writer.clone())
            .boxed()
    } else {
        use std::io::IsTerminal;
        tracing_subscriber::fmt::layer()
            .with_ansi(std::io::stderr().is_terminal())
            .with_writer(writer.clone())
            .boxed()
    };
    let (otlp, provider) = match otlp_endpoint {
        Some(endpoint) => {
            let (layer, provider) = otlp_layer(endpoint)?;
            (Some(layer), Some(provider))
        }
        None => (None, None),
    };
    let layers: Vec<BoxLayer> = std::iter::once(fmt).chain(otlp).collect();
    // `try_init`: a second call (tests, demo) keeps the first subscriber.
    let _ = Registry::default().with(layers).with(filter).try_init();
    Ok(TelemetryGuard {
        provider,
        _writer: Some(writer_guard),
    })
}

#[cfg(not(feature = "otlp"))]
fn otlp_layer(endpoint: &str) -> Result<(BoxLayer, Provider), String> {
    Err(format!(
        "telemetry.otlp_endpoint is {endpoint:?} but this build has no OTLP support (build with --features otlp)"
    ))
}

#[cfg(feature = "otlp")]
fn otlp_layer(endpoint: &str) -> Result<(BoxLayer, Provider), String> {
    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_otlp::WithExportConfig;
    use tracing_subscriber::Layer;

    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .map_err(|e| format!("telemetry.otlp_endpoint: {e}"))?;
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("cph-gateway")
                .build(),
        )
        .build();
    let layer = tracing_opentelemetry::layer()
        .with_tracer(provider.tracer("cph-gateway"))
        .boxed();
    Ok((layer, provider))
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteStatus {
    route: &'static str,
    status: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Status {
    status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct Outcome {
    outcome: &'static str,
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
pub struct ProjectLabel {
    pub project: String,
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
    pub in_flight: Gauge,
    pub upstream_in_flight: Family<ProjectLabel, Gauge>,
    pub iam_token_age: Family<ProjectLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
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
        let in_flight = Gauge::default();
        let upstream_in_flight = Family::default();
        let iam_token_age = Family::default();
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
            "cphgw_upstream_in_flight",
            "Upstream calls in flight per project",
            upstream_in_flight.clone(),
        );
        registry.register(
            "cphgw_iam_token_age_seconds",
            "Age of the cached IAM token per project",
            iam_token_age.clone(),
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
            in_flight,
            upstream_in_flight,
            iam_token_age,
        }
    }

    pub fn request(&self, route: &'static str, status: u16, elapsed: Duration) {
        self.requests
            .get_or_create(&RouteStatus { route, status })
            .inc();
        self.request_duration.observe(elapsed.as_secs_f64());
    }

    pub fn upstream(&self, status: &'static str, elapsed: Duration) {
        self.upstream_requests
            .get_or_create(&Status { status })
            .inc();
        self.upstream_duration.observe(elapsed.as_secs_f64());
    }

    pub fn phones(&self, outcome: &'static str, n: u64) {
        self.phones.get_or_create(&Outcome { outcome }).inc_by(n);
    }

    pub fn iam_fetch(&self, result: &'static str) {
        self.iam_fetches
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    pub fn jwt_rejected(&self, reason: &'static str) {
        self.jwt_rejections.get_or_create(&Reason { reason }).inc();
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Shared handle.
pub type SharedMetrics = Arc<Metrics>;
