//! `[iam]`: the IAM endpoint and the named credentials tenants refer to.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use secrecy::SecretString;
use serde::Deserialize;

use super::error::ConfigError;
use super::load::{Env, check_endpoint, read_secret_env};

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
    pub password: SecretString,
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
            let password = match (&c.password_env, &c.password_file) {
                (Some(var), None) => read_secret_env(&format!("{key}.password_env"), env, var)?,
                (None, Some(path)) => {
                    let text = std::fs::read_to_string(path).map_err(|e| {
                        ConfigError::new(
                            format!("{key}.password_file"),
                            format!("cannot read {}: {e}", path.display()),
                        )
                    })?;
                    let text = text.trim_end_matches(['\r', '\n']);
                    if text.is_empty() {
                        return Err(ConfigError::new(
                            format!("{key}.password_file"),
                            "file is empty",
                        ));
                    }
                    SecretString::from(text.to_owned())
                }
                _ => {
                    return Err(ConfigError::new(
                        key,
                        "set exactly one of password_env or password_file",
                    ));
                }
            };
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
