//! `[telemetry]`: trace export.

use serde::Deserialize;

use super::error::ConfigError;
use super::load::check_endpoint;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTelemetry {
    #[serde(default)]
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// OTLP/HTTP traces endpoint (needs the `otlp` cargo feature).
    pub otlp_endpoint: Option<String>,
}

impl RawTelemetry {
    pub(super) fn validate(self) -> Result<TelemetryConfig, ConfigError> {
        if let Some(url) = &self.otlp_endpoint {
            check_endpoint("telemetry.otlp_endpoint", url)?;
        }
        Ok(TelemetryConfig {
            otlp_endpoint: self.otlp_endpoint,
        })
    }
}
