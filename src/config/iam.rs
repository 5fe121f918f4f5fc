//! `[iam]`: the IAM endpoint and the named credentials tenants refer to.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::load::{Env, check_endpoint};
use super::secret::{Secret, SecretSource, one_source};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawIam {
    endpoint: String,
    refresh_before_expiry_s: u64,
    credentials: BTreeMap<String, RawCredential>,
}

impl Default for RawIam {
    fn default() -> Self {
        Self {
            endpoint: "https://iam.{region}.myhuaweicloud.com".into(),
            refresh_before_expiry_s: 3600,
            credentials: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    domain: String,
    user: String,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct IamConfig {
    /// IAM base URL; `{region}` is replaced by the project's region.
    pub endpoint: String,
    pub refresh_before_expiry: Duration,
    pub credentials: BTreeMap<String, Arc<Credential>>,
}

/// A named IAM credential. `Debug` never shows the password.
#[derive(Debug)]
pub struct Credential {
    pub domain: String,
    pub user: String,
    /// Re-read when its file changes (`password_file`).
    pub password: Secret,
}

impl RawIam {
    pub(super) fn validate(self, env: &dyn Env) -> Result<IamConfig, ConfigError> {
        check_endpoint("iam.endpoint", &self.endpoint)?;
        let mut credentials = BTreeMap::new();
        for (name, c) in self.credentials {
            let key = format!("iam.credentials.{name}");
            if c.domain.is_empty() {
                return Err(ConfigError::new(
                    format!("{key}.domain"),
                    "must not be empty",
                ));
            }
            if c.user.is_empty() {
                return Err(ConfigError::new(format!("{key}.user"), "must not be empty"));
            }
            let source = one_source(&key, "password", c.password_env, c.password_file)?;
            let source_key = match &source {
                SecretSource::Env(_) => format!("{key}.password_env"),
                SecretSource::File(_) => format!("{key}.password_file"),
            };
            let password = Secret::load(&source_key, source, env)?;
            credentials.insert(
                name,
                Arc::new(Credential {
                    domain: c.domain,
                    user: c.user,
                    password,
                }),
            );
        }
        Ok(IamConfig {
            endpoint: self.endpoint,
            refresh_before_expiry: Duration::from_secs(self.refresh_before_expiry_s),
            credentials,
        })
    }
}
