//! `[upstream]`: CPH's endpoint, batching, concurrency, timeouts, retries.

use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::load::{check_endpoint, positive};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawUpstream {
    cph_endpoint: String,
    max_batch_size: usize,
    max_concurrency_per_request: usize,
    max_concurrency_per_project: usize,
    timeout_ms: u64,
    max_retries: u32,
    retry_budget_ratio: f64,
    max_retry_after_ms: u64,
}

impl Default for RawUpstream {
    fn default() -> Self {
        Self {
            cph_endpoint: "https://cph.{region}.myhuaweicloud.com".into(),
            max_batch_size: 100,
            max_concurrency_per_request: 8,
            max_concurrency_per_project: 32,
            timeout_ms: 10_000,
            max_retries: 2,
            retry_budget_ratio: 0.2,
            max_retry_after_ms: 5_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// CPH base URL; `{region}` is replaced by the project's region.
    pub cph_endpoint: String,
    pub max_batch_size: usize,
    pub max_concurrency_per_request: usize,
    pub max_concurrency_per_project: usize,
    pub timeout: Duration,
    pub max_retries: u32,
    /// Retries may add at most this fraction of extra upstream calls.
    pub retry_budget_ratio: f64,
    /// Longest `Retry-After` honoured.
    pub max_retry_after: Duration,
}

impl RawUpstream {
    pub(super) fn validate(self) -> Result<UpstreamConfig, ConfigError> {
        let u = self;
        check_endpoint("upstream.cph_endpoint", &u.cph_endpoint)?;
        if !(0.0..=10.0).contains(&u.retry_budget_ratio) {
            return Err(ConfigError::new(
                "upstream.retry_budget_ratio",
                "must be between 0 and 10",
            ));
        }
        Ok(UpstreamConfig {
            cph_endpoint: u.cph_endpoint,
            max_batch_size: positive("upstream.max_batch_size", u.max_batch_size)?,
            max_concurrency_per_request: positive(
                "upstream.max_concurrency_per_request",
                u.max_concurrency_per_request,
            )?,
            max_concurrency_per_project: positive(
                "upstream.max_concurrency_per_project",
                u.max_concurrency_per_project,
            )?,
            timeout: Duration::from_millis(positive("upstream.timeout_ms", u.timeout_ms)?),
            max_retries: u.max_retries,
            retry_budget_ratio: u.retry_budget_ratio,
            max_retry_after: Duration::from_millis(u.max_retry_after_ms),
        })
    }
}
