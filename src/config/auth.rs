//! `[auth]`: how caller and admin JWTs are verified.

use std::path::PathBuf;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

use super::error::ConfigError;
use super::load::{Env, check_endpoint, read_secret_env};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    issuer: String,
    #[serde(default = "default_audience")]
    audience: String,
    #[serde(default = "default_tenant_claim")]
    tenant_claim: String,
    #[serde(default = "default_roles_claim")]
    roles_claim: String,
    #[serde(default = "default_admin_role")]
    admin_role: String,
    #[serde(default = "default_leeway")]
    leeway_s: u64,
    #[serde(default)]
    hs256_secret_env: Option<String>,
    #[serde(default)]
    public_key_files: Vec<PathBuf>,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default = "default_jwks_cooldown")]
    jwks_refresh_cooldown_s: u64,
    #[serde(default = "default_verified_cache")]
    verified_token_cache: u64,
}

fn default_audience() -> String {
    "cph-gateway".into()
}
fn default_tenant_claim() -> String {
    "tenant".into()
}
fn default_roles_claim() -> String {
    "roles".into()
}
fn default_admin_role() -> String {
    "cph-gateway-admin".into()
}
fn default_leeway() -> u64 {
    30
}
fn default_jwks_cooldown() -> u64 {
    60
}
fn default_verified_cache() -> u64 {
    10_000
}

#[derive(Debug, Clone)]
pub struct AuthConfig {
    pub issuer: String,
    pub audience: String,
    pub tenant_claim: String,
    pub roles_claim: String,
    pub admin_role: String,
    pub leeway_s: u64,
    /// HS256 shared secret, read from the variable `hs256_secret_env` names.
    pub hs256_secret: Option<SecretString>,
    /// PEM public keys, read from `public_key_files`: (path, contents).
    pub public_keys: Vec<(PathBuf, Vec<u8>)>,
    pub jwks_url: Option<String>,
    pub jwks_refresh_cooldown: Duration,
    pub verified_token_cache: u64,
}

impl RawAuth {
    pub(super) fn validate(self, env: &dyn Env) -> Result<AuthConfig, ConfigError> {
        let a = self;
        if a.issuer.is_empty() {
            return Err(ConfigError::new("auth.issuer", "must not be empty"));
        }
        if a.audience.is_empty() {
            return Err(ConfigError::new("auth.audience", "must not be empty"));
        }
        for (key, v) in [
            ("auth.tenant_claim", &a.tenant_claim),
            ("auth.roles_claim", &a.roles_claim),
            ("auth.admin_role", &a.admin_role),
        ] {
            if v.is_empty() {
                return Err(ConfigError::new(key, "must not be empty"));
            }
        }
        let hs256_secret = match &a.hs256_secret_env {
            Some(var) => {
                let secret = read_secret_env("auth.hs256_secret_env", env, var)?;
                if secret.expose_secret().len() < 32 {
                    return Err(ConfigError::new(
                        "auth.hs256_secret_env",
                        format!("the secret in {var} is shorter than 32 bytes"),
                    ));
                }
                Some(secret)
            }
            None => None,
        };
        let mut public_keys = Vec::new();
        for (i, path) in a.public_key_files.iter().enumerate() {
            let pem = std::fs::read(path).map_err(|e| {
                ConfigError::new(
                    format!("auth.public_key_files[{i}]"),
                    format!("cannot read {}: {e}", path.display()),
                )
            })?;
            public_keys.push((path.clone(), pem));
        }
        if let Some(url) = &a.jwks_url {
            check_endpoint("auth.jwks_url", url)?;
        }
        if hs256_secret.is_none() && public_keys.is_empty() && a.jwks_url.is_none() {
            return Err(ConfigError::new(
                "auth",
                "no key source: set hs256_secret_env, public_key_files or jwks_url",
            ));
        }
        Ok(AuthConfig {
            issuer: a.issuer,
            audience: a.audience,
            tenant_claim: a.tenant_claim,
            roles_claim: a.roles_claim,
            admin_role: a.admin_role,
            leeway_s: a.leeway_s,
            hs256_secret,
            public_keys,
            jwks_url: a.jwks_url,
            jwks_refresh_cooldown: Duration::from_secs(a.jwks_refresh_cooldown_s),
            verified_token_cache: a.verified_token_cache,
        })
    }
}
