//! `[limits]`: what one request and one tenant may ask.

use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::load::positive;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawLimits {
    max_phone_ids: usize,
    max_body_bytes: usize,
    tenant_rate_per_s: u32,
    request_timeout_ms: u64,
    max_in_flight_ids: usize,
    max_in_flight_requests: usize,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_phone_ids: 10_000,
            max_body_bytes: 1_048_576,
            tenant_rate_per_s: 50,
            request_timeout_ms: 30_000,
            max_in_flight_ids: 200_000,
            max_in_flight_requests: 2048,
        }
    }
}

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub max_phone_ids: usize,
    pub max_body_bytes: usize,
    pub tenant_rate_per_s: u32,
    /// Deadline of one whole caller request.
    pub request_timeout: Duration,
    /// Phone ids in running stops, all tenants together.
    pub max_in_flight_ids: usize,
    /// Caller requests being served at once.
    pub max_in_flight_requests: usize,
}

impl RawLimits {
    pub(super) fn validate(self) -> Result<LimitsConfig, ConfigError> {
        let l = self;
        Ok(LimitsConfig {
            max_phone_ids: positive("limits.max_phone_ids", l.max_phone_ids)?,
            max_body_bytes: positive("limits.max_body_bytes", l.max_body_bytes)?,
            tenant_rate_per_s: positive("limits.tenant_rate_per_s", l.tenant_rate_per_s)?,
            request_timeout: Duration::from_millis(positive(
                "limits.request_timeout_ms",
                l.request_timeout_ms,
            )?),
            max_in_flight_ids: positive("limits.max_in_flight_ids", l.max_in_flight_ids)?,
            max_in_flight_requests: positive(
                "limits.max_in_flight_requests",
                l.max_in_flight_requests,
            )?,
        })
    }
}
