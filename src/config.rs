//! Typed configuration: one TOML file, every key overridable by an environment
//! variable `CPHGW__SECTION__KEY`, secrets read only from the variables or files
//! the config names, and refusal of any config that cannot work with a message
//! that names the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "CPHGW__";

/// A config that cannot work: the message names the offending key.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {msg}")]
pub struct ConfigError {
    pub key: String,
    pub msg: String,
}

impl ConfigError {
    pub fn new(key: impl Into<String>, msg: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            msg: msg.into(),
        }
    }
}

/// Where secrets and overrides come from. Production reads the process
/// environment; tests hand in a map so that they never touch global state.
pub trait Env {
    fn var(&self, name: &str) -> Option<String>;
    /// All `(name, value)` pairs whose name starts with `prefix`.
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)>;
}

/// The real process environment.
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        std::env::vars()
            .filter(|(k, _)| k.starts_with(prefix))
            .collect()
    }
}

impl Env for BTreeMap<String, String> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
    fn vars_with_prefix(&self, prefix: &str) -> Vec<(String, String)> {
        self.iter()
            .filter(|(k, _)| k.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The file's shape (serde). Defaults are the contract's.
// ---------------------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    auth: RawAuth,
    #[serde(default)]
    iam: RawIam,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    tenants: RawTenants,
    #[serde(default)]
    telemetry: RawTelemetry,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTelemetry {
    #[serde(default)]
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    admin_listen: String,
    shutdown_grace_ms: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            admin_listen: "127.0.0.1:8081".into(),
            shutdown_grace_ms: 20_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAuth {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawIam {
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
struct RawCredential {
    domain: String,
    user: String,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawUpstream {
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLimits {
    max_phone_ids: usize,
    max_body_bytes: usize,
    tenant_rate_per_s: u32,
    request_timeout_ms: u64,
}

impl Default for RawLimits {
    fn default() -> Self {
        Self {
            max_phone_ids: 10_000,
            max_body_bytes: 1_048_576,
            tenant_rate_per_s: 50,
            request_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawTenants {
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

// ---------------------------------------------------------------------------
// The validated config.
// ---------------------------------------------------------------------------

/// The gateway's configuration, validated: every value here can work.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub auth: AuthConfig,
    pub iam: IamConfig,
    pub upstream: UpstreamConfig,
    pub limits: LimitsConfig,
    pub tenants: TenantsConfig,
    pub telemetry: TelemetryConfig,
}

#[derive(Debug, Clone)]
pub struct TelemetryConfig {
    /// OTLP/HTTP traces endpoint (needs the `otlp` cargo feature).
    pub otlp_endpoint: Option<String>,
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub shutdown_grace: Duration,
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

#[derive(Debug, Clone)]
pub struct LimitsConfig {
    pub max_phone_ids: usize,
    pub max_body_bytes: usize,
    pub tenant_rate_per_s: u32,
    /// Deadline of one whole caller request.
    pub request_timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct TenantsConfig {
    pub file: PathBuf,
    pub watch_interval: Duration,
}

impl Config {
    /// Reads `path`, applies `CPHGW__…` overrides from `env`, resolves secrets
    /// and validates.
    pub fn load(path: &Path, env: &dyn Env) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(path.display().to_string(), format!("cannot read: {e}"))
        })?;
        Self::from_toml(&text, env)
    }

    /// Parses config text (see [`Config::load`]).
    pub fn from_toml(text: &str, env: &dyn Env) -> Result<Self, ConfigError> {
        let mut value: toml::Table = toml::from_str(text)
            .map_err(|e| ConfigError::new("config", format!("not valid TOML: {}", e.message())))?;
        apply_env_overrides(&mut value, env)?;
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(value)).map_err(|e| {
                let key = e.path().to_string();
                ConfigError::new(
                    if key == "." { "config".into() } else { key },
                    e.into_inner().message(),
                )
            })?;
        raw.validate(env)
    }
}

/// `CPHGW__UPSTREAM__MAX_BATCH_SIZE=50` sets `upstream.max_batch_size`. Values
/// are TOML literals (`50`, `true`, `["a.pem"]`, `"quoted"`); anything else is
/// taken as a plain string. Key segments are lower-cased.
fn apply_env_overrides(root: &mut toml::Table, env: &dyn Env) -> Result<(), ConfigError> {
    let mut vars = env.vars_with_prefix(ENV_PREFIX);
    vars.sort();
    for (name, raw) in vars {
        let path: Vec<String> = name[ENV_PREFIX.len()..]
            .split("__")
            .map(str::to_ascii_lowercase)
            .collect();
        if path.iter().any(String::is_empty) {
            return Err(ConfigError::new(name, "empty key segment"));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let (last, parents) = path
            .split_last()
            .expect("split yields one segment at least");
        let mut table = &mut *root;
        for seg in parents {
            let entry = table
                .entry(seg.clone())
                .or_insert_with(|| toml::Value::Table(toml::Table::new()));
            table = entry
                .as_table_mut()
                .ok_or_else(|| ConfigError::new(&name, format!("`{seg}` is not a table")))?;
        }
        table.insert(last.clone(), value);
    }
    Ok(())
}

fn parse_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| ConfigError::new(key, format!("{s:?} is not an address like 0.0.0.0:8080")))
}

fn check_endpoint(key: &str, url: &str) -> Result<(), ConfigError> {
    let probe = url.replace("{region}", "cn-east-3");
    match reqwest::Url::parse(&probe) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(ConfigError::new(
            key,
            format!("{url:?} is not an http(s) URL"),
        )),
    }
}

fn positive<T: PartialOrd + Default + Copy>(key: &str, v: T) -> Result<T, ConfigError> {
    if v > T::default() {
        Ok(v)
    } else {
        Err(ConfigError::new(key, "must be greater than 0"))
    }
}

fn read_secret_env(key: &str, env: &dyn Env, var: &str) -> Result<SecretString, ConfigError> {
    match env.var(var) {
        Some(v) if !v.is_empty() => Ok(SecretString::from(v)),
        _ => Err(ConfigError::new(
            key,
            format!("environment variable {var} is not set or empty"),
        )),
    }
}

impl RawConfig {
    fn validate(self, env: &dyn Env) -> Result<Config, ConfigError> {
        let server = ServerConfig {
            listen: parse_addr("server.listen", &self.server.listen)?,
            admin_listen: parse_addr("server.admin_listen", &self.server.admin_listen)?,
            shutdown_grace: Duration::from_millis(self.server.shutdown_grace_ms),
        };

        let a = self.auth;
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
        let auth = AuthConfig {
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
        };

        check_endpoint("iam.endpoint", &self.iam.endpoint)?;
        let mut credentials = BTreeMap::new();
        for (name, c) in self.iam.credentials {
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
        let iam = IamConfig {
            endpoint: self.iam.endpoint,
            refresh_before_expiry: Duration::from_secs(self.iam.refresh_before_expiry_s),
            credentials,
        };

        let u = self.upstream;
        check_endpoint("upstream.cph_endpoint", &u.cph_endpoint)?;
        if !(0.0..=10.0).contains(&u.retry_budget_ratio) {
            return Err(ConfigError::new(
                "upstream.retry_budget_ratio",
                "must be between 0 and 10",
            ));
        }
        let upstream = UpstreamConfig {
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
        };

        let l = self.limits;
        let limits = LimitsConfig {
            max_phone_ids: positive("limits.max_phone_ids", l.max_phone_ids)?,
            max_body_bytes: positive("limits.max_body_bytes", l.max_body_bytes)?,
            tenant_rate_per_s: positive("limits.tenant_rate_per_s", l.tenant_rate_per_s)?,
            request_timeout: Duration::from_millis(positive(
                "limits.request_timeout_ms",
                l.request_timeout_ms,
            )?),
        };
        let tenants = TenantsConfig {
            file: self.tenants.file,
            watch_interval: Duration::from_millis(positive(
                "tenants.watch_interval_ms",
                self.tenants.watch_interval_ms,
            )?),
        };
        if let Some(url) = &self.telemetry.otlp_endpoint {
            check_endpoint("telemetry.otlp_endpoint", url)?;
        }
        Ok(Config {
            server,
            auth,
            iam,
            upstream,
            limits,
            tenants,
            telemetry: TelemetryConfig {
                otlp_endpoint: self.telemetry.otlp_endpoint,
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    const MINIMAL: &str = r#"
[auth]
issuer = "https://idp"
hs256_secret_env = "S"
"#;

    const SECRET: (&str, &str) = ("S", "0123456789abcdef0123456789abcdef");

    #[test]
    fn defaults_are_the_contracts() {
        let c = Config::from_toml(MINIMAL, &env(&[SECRET])).unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
        assert_eq!(c.server.admin_listen.to_string(), "127.0.0.1:8081");
        assert_eq!(c.upstream.max_batch_size, 100);
        assert_eq!(c.upstream.max_concurrency_per_request, 8);
        assert_eq!(c.upstream.max_concurrency_per_project, 32);
        assert_eq!(c.upstream.timeout, Duration::from_secs(10));
        assert_eq!(c.upstream.max_retries, 2);
        assert_eq!(c.limits.max_phone_ids, 10_000);
        assert_eq!(c.limits.max_body_bytes, 1_048_576);
        assert_eq!(c.limits.tenant_rate_per_s, 50);
        assert_eq!(c.auth.leeway_s, 30);
        assert_eq!(c.iam.refresh_before_expiry, Duration::from_secs(3600));
    }

    #[test]
    fn env_overrides_any_key() {
        let c = Config::from_toml(
            MINIMAL,
            &env(&[
                SECRET,
                ("CPHGW__SERVER__LISTEN", "127.0.0.1:9999"),
                ("CPHGW__UPSTREAM__MAX_BATCH_SIZE", "7"),
                ("CPHGW__IAM__CREDENTIALS__MAIN__DOMAIN", "d"),
                ("CPHGW__IAM__CREDENTIALS__MAIN__USER", "u"),
                ("CPHGW__IAM__CREDENTIALS__MAIN__PASSWORD_ENV", "P"),
                ("P", "pw"),
            ]),
        )
        .unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:9999");
        assert_eq!(c.upstream.max_batch_size, 7);
        assert_eq!(c.iam.credentials["main"].password.expose_secret(), "pw");
    }

    #[test]
    fn errors_name_the_key() {
        type Case<'a> = (&'a str, &'a [(&'a str, &'a str)], &'a str);
        let cases: &[Case] = &[
            (MINIMAL, &[], "auth.hs256_secret_env"),
            (
                MINIMAL,
                &[SECRET, ("CPHGW__UPSTREAM__MAX_BATCH_SIZE", "0")],
                "upstream.max_batch_size",
            ),
            (
                MINIMAL,
                &[SECRET, ("CPHGW__UPSTREAM__TIMEOUT_MS", "soon")],
                "upstream.timeout_ms",
            ),
            (
                MINIMAL,
                &[SECRET, ("CPHGW__SERVER__LISTEN", "nowhere")],
                "server.listen",
            ),
            (
                MINIMAL,
                &[SECRET, ("CPHGW__UPSTREAM__TYPO", "1")],
                "upstream",
            ),
            ("[auth]\nissuer = \"x\"\n", &[], "auth"),
            (
                MINIMAL,
                &[
                    SECRET,
                    ("CPHGW__AUTH__PUBLIC_KEY_FILES", "[\"/nonexistent.pem\"]"),
                ],
                "auth.public_key_files[0]",
            ),
            (
                MINIMAL,
                &[
                    SECRET,
                    ("CPHGW__IAM__CREDENTIALS__X__DOMAIN", "d"),
                    ("CPHGW__IAM__CREDENTIALS__X__USER", "u"),
                ],
                "iam.credentials.x",
            ),
            (MINIMAL, &[("S", "short")], "auth.hs256_secret_env"),
        ];
        for (text, vars, key) in cases {
            let err = Config::from_toml(text, &env(vars)).unwrap_err();
            assert!(
                err.key.starts_with(key),
                "{vars:?}: {err} does not name {key}"
            );
        }
    }

    #[test]
    fn secrets_are_not_in_debug() {
        let c = Config::from_toml(MINIMAL, &env(&[SECRET])).unwrap();
        assert!(!format!("{c:?}").contains(SECRET.1));
    }
}
