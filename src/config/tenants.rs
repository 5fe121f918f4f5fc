//! `[tenants]`: where the tenant-to-project mapping comes from.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::load::positive;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawTenants {
    file: PathBuf,
    watch_interval_ms: u64,
}

impl Default for RawTenants {
    fn default() -> Self {
        Self {
            file: "config/tenants.toml".into(),
            watch_interval_ms: 1000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct TenantsConfig {
    pub file: PathBuf,
    pub watch_interval: Duration,
}

impl RawTenants {
    pub(super) fn validate(self) -> Result<TenantsConfig, ConfigError> {
        Ok(TenantsConfig {
            file: self.file,
            watch_interval: Duration::from_millis(positive(
                "tenants.watch_interval_ms",
                self.watch_interval_ms,
            )?),
        })
    }
}
