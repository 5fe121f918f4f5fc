//! `[auth]`: how caller and admin JWTs are verified.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::load::{Env, check_endpoint, positive};
use super::placeholder;
use super::secret::{Secret, SecretSource};

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
    #[serde(default = "default_max_lifetime")]
    max_token_lifetime_s: u64,
    #[serde(default)]
    hs256_secret_env: Option<String>,
    #[serde(default)]
    hs256_secret_file: Option<PathBuf>,
    #[serde(default)]
    hs256_previous_secret_env: Option<String>,
    #[serde(default)]
    hs256_previous_secret_file: Option<PathBuf>,
    #[serde(default)]
    allow_hs256_admin: bool,
    #[serde(default)]
    public_key_files: Vec<PathBuf>,
    #[serde(default)]
    jwks_url: Option<String>,
    #[serde(default = "default_jwks_interval")]
    jwks_refresh_interval_s: u64,
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
fn default_max_lifetime() -> u64 {
    86_400
}
fn default_jwks_interval() -> u64 {
    600
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
    /// The longest `exp - iat` (or `exp - now`) accepted.
    pub max_token_lifetime_s: u64,
    /// HS256 shared secret (`hs256_secret_env` / `hs256_secret_file`).
    pub hs256_secret: Option<Arc<Secret>>,
    /// The HS256 secret being rotated out, also accepted
    /// (`hs256_previous_secret_env` / `hs256_previous_secret_file`).
    pub hs256_previous_secret: Option<Arc<Secret>>,
    /// Whether admin tokens may be HS256 (else only asymmetric keys).
    pub allow_hs256_admin: bool,
    /// PEM public keys, read from `public_key_files`: (path, contents).
    pub public_keys: Vec<(PathBuf, Vec<u8>)>,
    pub jwks_url: Option<String>,
    /// How often the JWKS is re-fetched (a `Cache-Control: max-age` on the
    /// answer overrides it, within [`JWKS_REFRESH_RANGE`]).
    pub jwks_refresh_interval: Duration,
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
        let hs256_secret = hs256("hs256_secret", a.hs256_secret_env, a.hs256_secret_file, env)?;
        let hs256_previous_secret = hs256(
            "hs256_previous_secret",
            a.hs256_previous_secret_env,
            a.hs256_previous_secret_file,
            env,
        )?;
        if let (Some(previous), None) = (&hs256_previous_secret, &hs256_secret) {
            return Err(ConfigError::new(
                previous.key(),
                "a previous HS256 secret needs a current one (hs256_secret_env or hs256_secret_file)",
            ));
        }
        let mut public_keys = Vec::new();
        for (i, path) in a.public_key_files.iter().enumerate() {
            let key = format!("auth.public_key_files[{i}]");
            let pem = std::fs::read(path).map_err(|e| {
                ConfigError::new(&key, format!("cannot read {}: {e}", path.display()))
            })?;
            if holds_private_key(&pem) {
                return Err(ConfigError::new(
                    key,
                    format!(
                        "{} holds a PRIVATE key: configure the public key only (e.g. `openssl pkey -in KEY -pubout`), and keep the private key away from the gateway",
                        path.display()
                    ),
                ));
            }
            public_keys.push((path.clone(), pem));
        }
        if let Some(url) = &a.jwks_url {
            check_endpoint("auth.jwks_url", url)?;
        }
        if !JWKS_REFRESH_RANGE.contains(&a.jwks_refresh_interval_s) {
            return Err(ConfigError::new(
                "auth.jwks_refresh_interval_s",
                format!(
                    "{} is outside {}..={} seconds",
                    a.jwks_refresh_interval_s,
                    JWKS_REFRESH_RANGE.start(),
                    JWKS_REFRESH_RANGE.end()
                ),
            ));
        }
        let max_token_lifetime_s = positive("auth.max_token_lifetime_s", a.max_token_lifetime_s)?;
        if hs256_secret.is_none() && public_keys.is_empty() && a.jwks_url.is_none() {
            return Err(ConfigError::new(
                "auth",
                "no key source: set jwks_url, public_key_files or hs256_secret_env (or hs256_secret_file)",
            ));
        }
        Ok(AuthConfig {
            issuer: a.issuer,
            audience: a.audience,
            tenant_claim: a.tenant_claim,
            roles_claim: a.roles_claim,
            admin_role: a.admin_role,
            leeway_s: a.leeway_s,
            max_token_lifetime_s,
            hs256_secret,
            hs256_previous_secret,
            allow_hs256_admin: a.allow_hs256_admin,
            public_keys,
            jwks_url: a.jwks_url,
            jwks_refresh_interval: Duration::from_secs(a.jwks_refresh_interval_s),
            jwks_refresh_cooldown: Duration::from_secs(a.jwks_refresh_cooldown_s),
            verified_token_cache: a.verified_token_cache,
        })
    }
}

/// The JWKS refresh interval's range, in seconds (also the clamp of a
/// `Cache-Control: max-age` on the JWKS answer).
pub const JWKS_REFRESH_RANGE: std::ops::RangeInclusive<u64> = 60..=86_400;

/// An HS256 secret from `{name}_env` or `{name}_file` (at most one), at
/// least 32 bytes and not a placeholder.
fn hs256(
    name: &str,
    var: Option<String>,
    file: Option<PathBuf>,
    env: &dyn Env,
) -> Result<Option<Arc<Secret>>, ConfigError> {
    let (key, source) = match (var, file) {
        (None, None) => return Ok(None),
        (Some(var), None) => (format!("auth.{name}_env"), SecretSource::Env(var)),
        (None, Some(path)) => (format!("auth.{name}_file"), SecretSource::File(path)),
        (Some(_), Some(_)) => {
            return Err(ConfigError::new(
                format!("auth.{name}_env"),
                format!("set only one of {name}_env and {name}_file"),
            ));
        }
    };
    Secret::load_checked(&key, source, env, placeholder::hs256_secret).map(|s| Some(Arc::new(s)))
}

/// Whether a PEM file holds a private key (`-----BEGIN ... PRIVATE KEY-----`).
fn holds_private_key(pem: &[u8]) -> bool {
    String::from_utf8_lossy(pem)
        .lines()
        .any(|l| l.trim_start().starts_with("-----BEGIN") && l.contains("PRIVATE KEY"))
}
