//! Logs (`tracing`, JSON with `LOG_FORMAT=json`) and Prometheus metrics
//! (`prometheus-client`, one registry per gateway instance).

mod escape;
mod metrics;
pub mod request_log;
pub mod writer;

pub use escape::EscapedFields;
pub use metrics::{GaugeGuard, Metrics};

use tracing_subscriber::EnvFilter;

/// Keeps the OTLP exporter alive; dropping it flushes the spans not yet sent.
#[must_use = "dropping the guard stops trace export"]
pub struct TelemetryGuard {
    provider: Option<Provider>,
    /// Writes the log lines still pending on drop.
    _writer: Option<writer::WriterGuard>,
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
    // Log lines go to stderr from a background thread, in batches: a request
    // never waits on a slow or full stderr (a burst beyond the bound is
    // dropped rather than stalling the runtime).
    let (writer, writer_guard) = writer::batched(std::io::stderr());
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
            .fmt_fields(escape::EscapedFields)
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
