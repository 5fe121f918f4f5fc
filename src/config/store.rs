//! `[store]`: the optional shared store (PostgreSQL) of several replicas;
//! `[idempotency]` and `[tracking]`: how long keys and stop records live.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::load::{Env, positive};
use super::secret::{Secret, SecretSource};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawStore {
    url_env: Option<String>,
    url_file: Option<PathBuf>,
    audit_retention_days: u64,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            url_env: None,
            url_file: None,
            audit_retention_days: 365,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawRetention {
    retention_s: u64,
}

impl Default for RawRetention {
    fn default() -> Self {
        Self {
            retention_s: 86_400,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTracking {
    retention_s: u64,
    max_wait_s: u64,
}

impl Default for RawTracking {
    fn default() -> Self {
        Self {
            retention_s: 86_400,
            max_wait_s: 120,
        }
    }
}

/// The shared store. Without a URL the gateway runs alone: tenants from the
/// file, keys and records in memory.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// `postgres://…`, from `url_env` or `url_file` (it may hold a password).
    pub url: Option<Arc<Secret>>,
    pub audit_retention: Duration,
}

#[derive(Debug, Clone)]
pub struct IdempotencyConfig {
    pub retention: Duration,
}

#[derive(Debug, Clone)]
pub struct TrackingConfig {
    pub retention: Duration,
    /// The longest `Prefer: wait` honoured.
    pub max_wait: Duration,
}

impl RawStore {
    pub(super) fn validate(self, env: &dyn Env) -> Result<StoreConfig, ConfigError> {
        let url = match (self.url_env, self.url_file) {
            (None, None) => None,
            (Some(var), None) => Some(Secret::load("store.url_env", SecretSource::Env(var), env)?),
            (None, Some(path)) => Some(Secret::load(
                "store.url_file",
                SecretSource::File(path),
                env,
            )?),
            (Some(_), Some(_)) => {
                return Err(ConfigError::new(
                    "store",
                    "set at most one of url_env or url_file",
                ));
            }
        };
        if let Some(url) = &url {
            let key = url.key().to_owned();
            let value = url.current();
            let text = secrecy::ExposeSecret::expose_secret(&*value);
            if !(text.starts_with("postgres://") || text.starts_with("postgresql://")) {
                // The message must not quote the URL: it may hold a password.
                return Err(ConfigError::new(
                    key,
                    "not a PostgreSQL URL (postgres://user@host:5432/db)",
                ));
            }
        }
        let days = positive("store.audit_retention_days", self.audit_retention_days)?;
        Ok(StoreConfig {
            url: url.map(Arc::new),
            audit_retention: Duration::from_secs(days.saturating_mul(86_400)),
        })
    }
}

impl RawRetention {
    pub(super) fn validate(self) -> Result<IdempotencyConfig, ConfigError> {
        Ok(IdempotencyConfig {
            retention: Duration::from_secs(positive("idempotency.retention_s", self.retention_s)?),
        })
    }
}

impl RawTracking {
    pub(super) fn validate(self) -> Result<TrackingConfig, ConfigError> {
        Ok(TrackingConfig {
            retention: Duration::from_secs(positive("tracking.retention_s", self.retention_s)?),
            max_wait: Duration::from_secs(self.max_wait_s),
        })
    }
}
