//! Typed configuration: one TOML file, every key overridable by an environment
//! variable `CPHGW__SECTION__KEY`, secrets read only from the variables or files
//! the config names, and refusal of any config that cannot work with a message
//! that names the key. One file per section.

mod auth;
mod error;
mod iam;
mod limits;
mod load;
mod placeholder;
mod secret;
mod server;
mod store;
mod telemetry;
mod tenants;
mod tls;
mod upstream;

use std::path::Path;

use serde::Deserialize;

pub use auth::{AuthConfig, JWKS_REFRESH_RANGE};
pub use error::ConfigError;
pub use iam::{AkSkCredential, Credential, CredentialKind, IamConfig, PasswordCredential};
pub use limits::LimitsConfig;
pub use load::{ENV_PREFIX, Env, ProcessEnv};
pub use placeholder::placeholder;
pub use secret::{Secret, SecretSource};
pub use server::{ServerConfig, serving_threads};
pub use store::{IdempotencyConfig, StoreConfig, TrackingConfig};
pub use telemetry::TelemetryConfig;
pub use tenants::TenantsConfig;
pub use tls::ServerTls;
pub use upstream::{ProxyChoice, ProxyUrl, UpstreamConfig};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: server::RawServer,
    auth: auth::RawAuth,
    #[serde(default)]
    iam: iam::RawIam,
    #[serde(default)]
    upstream: upstream::RawUpstream,
    #[serde(default)]
    limits: limits::RawLimits,
    #[serde(default)]
    tenants: tenants::RawTenants,
    #[serde(default)]
    telemetry: telemetry::RawTelemetry,
    #[serde(default)]
    store: store::RawStore,
    #[serde(default)]
    idempotency: store::RawRetention,
    #[serde(default)]
    tracking: store::RawTracking,
}

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
    pub store: StoreConfig,
    pub idempotency: IdempotencyConfig,
    pub tracking: TrackingConfig,
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
        load::apply_env_overrides(&mut value, env)?;
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

impl Config {
    /// Every secret read from a file, for the watcher that re-reads them.
    pub fn file_secrets(&self) -> Vec<&Secret> {
        let auth = [&self.auth.hs256_secret, &self.auth.hs256_previous_secret];
        auth.into_iter()
            .flatten()
            .map(|s| &**s)
            .chain(self.iam.credentials.values().flat_map(|c| c.secrets()))
            .chain(self.store.url.as_deref())
            .filter(|s| matches!(s.source(), SecretSource::File(_)))
            .collect()
    }
}

impl RawConfig {
    fn validate(self, env: &dyn Env) -> Result<Config, ConfigError> {
        Ok(Config {
            server: self.server.validate()?,
            auth: self.auth.validate(env)?,
            iam: self.iam.validate(env)?,
            upstream: self.upstream.validate(env)?,
            limits: self.limits.validate()?,
            tenants: self.tenants.validate()?,
            telemetry: self.telemetry.validate()?,
            store: self.store.validate(env)?,
            idempotency: self.idempotency.validate()?,
            tracking: self.tracking.validate()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use secrecy::ExposeSecret;

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
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.idle_timeout, Duration::from_secs(60));
        assert_eq!(c.server.body_read_timeout, Duration::from_secs(30));
        assert_eq!(c.server.max_connections, 4096);
        assert_eq!(c.limits.max_in_flight_ids, 200_000);
        assert_eq!(c.limits.max_in_flight_requests, 2048);
        assert_eq!(c.upstream.max_response_bytes, 4_194_304);
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
        let Credential::Password(main) = &*c.iam.credentials["main"] else {
            panic!("main is a password credential");
        };
        assert_eq!(main.password.current().expose_secret(), "pw");
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
            (
                MINIMAL,
                &[("S", "change-me-to-a-32-byte-or-longer-secret")],
                "auth.hs256_secret_env",
            ),
            (
                MINIMAL,
                &[SECRET, ("CPHGW__AUTH__JWKS_REFRESH_INTERVAL_S", "59")],
                "auth.jwks_refresh_interval_s",
            ),
            (
                MINIMAL,
                &[SECRET, ("CPHGW__AUTH__JWKS_REFRESH_INTERVAL_S", "86401")],
                "auth.jwks_refresh_interval_s",
            ),
            (
                MINIMAL,
                &[SECRET, ("CPHGW__AUTH__MAX_TOKEN_LIFETIME_S", "0")],
                "auth.max_token_lifetime_s",
            ),
            (
                MINIMAL,
                &[
                    SECRET,
                    ("CPHGW__AUTH__HS256_PREVIOUS_SECRET_ENV", "P"),
                    ("P", "short"),
                ],
                "auth.hs256_previous_secret_env",
            ),
            (
                MINIMAL,
                &[SECRET, ("CPHGW__AUTH__HS256_SECRET_FILE", "\"/x\"")],
                "auth.hs256_secret_env",
            ),
            (
                MINIMAL,
                &[
                    SECRET,
                    ("CPHGW__IAM__CREDENTIALS__X__DOMAIN", "d"),
                    ("CPHGW__IAM__CREDENTIALS__X__USER", "u"),
                    ("CPHGW__IAM__CREDENTIALS__X__PASSWORD_ENV", "P"),
                    ("P", "change-me-iam-password"),
                ],
                "iam.credentials.x.password_env",
            ),
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
    fn contract_defaults_of_the_new_auth_keys() {
        let c = Config::from_toml(MINIMAL, &env(&[SECRET])).unwrap();
        assert_eq!(c.auth.max_token_lifetime_s, 86_400);
        assert_eq!(c.auth.jwks_refresh_interval, Duration::from_secs(600));
        assert!(!c.auth.allow_hs256_admin);
        assert!(c.auth.hs256_previous_secret.is_none());
    }

    #[test]
    fn hs256_secrets_from_files_are_watched_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let (cur, prev) = (dir.path().join("cur"), dir.path().join("prev"));
        std::fs::write(&cur, "0123456789abcdef0123456789abcdef-current\n").unwrap();
        std::fs::write(&prev, "0123456789abcdef0123456789abcdef-previous\n").unwrap();
        let text = format!(
            "[auth]\nissuer = \"https://idp\"\nhs256_secret_file = {:?}\nhs256_previous_secret_file = {:?}\n",
            cur.display().to_string(),
            prev.display().to_string()
        );
        let c = Config::from_toml(&text, &env(&[])).unwrap();
        assert_eq!(c.file_secrets().len(), 2);
        let secret = c.auth.hs256_secret.as_ref().unwrap();
        // A placeholder or short value written later is not taken.
        std::fs::write(&cur, "change-me-to-a-32-byte-or-longer-secret").unwrap();
        assert!(secret.refresh().unwrap_err().contains("placeholder"));
        std::fs::write(&cur, "short").unwrap();
        assert!(secret.refresh().unwrap_err().contains("32 bytes"));
        assert!(secret.current().expose_secret().ends_with("-current"));
        std::fs::write(&cur, "0123456789abcdef0123456789abcdef-rotated").unwrap();
        assert_eq!(secret.refresh(), Ok(true));
        assert!(secret.current().expose_secret().ends_with("-rotated"));
        // A placeholder file is refused at start, naming the key.
        std::fs::write(&prev, "change-me-please-0123456789abcdef0123").unwrap();
        let err = Config::from_toml(&text, &env(&[])).unwrap_err();
        assert_eq!(err.key, "auth.hs256_previous_secret_file");
        assert!(!err.to_string().contains("please"), "{err}");
        // A previous secret alone is refused.
        let alone = format!(
            "[auth]\nissuer = \"https://idp\"\njwks_url = \"https://idp/jwks\"\nhs256_previous_secret_file = {:?}\n",
            cur.display().to_string()
        );
        let err = Config::from_toml(&alone, &env(&[])).unwrap_err();
        assert!(err.key.starts_with("auth.hs256_previous_secret"), "{err}");
    }

    #[test]
    fn a_private_key_where_a_public_one_is_expected_is_refused() {
        let keys = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/keys");
        for (i, file) in ["rsa-private.pem", "ec-private.pem"].iter().enumerate() {
            let list = format!(
                "[{:?}, {:?}]",
                keys.join("rsa-public.pem").display().to_string(),
                keys.join(file).display().to_string()
            );
            let err = Config::from_toml(
                MINIMAL,
                &env(&[SECRET, ("CPHGW__AUTH__PUBLIC_KEY_FILES", &list)]),
            )
            .unwrap_err();
            assert_eq!(err.key, "auth.public_key_files[1]", "{i}: {err}");
            assert!(err.msg.contains("PRIVATE key"), "{err}");
        }
    }

    #[test]
    fn secrets_are_not_in_debug() {
        let c = Config::from_toml(MINIMAL, &env(&[SECRET])).unwrap();
        assert!(!format!("{c:?}").contains(SECRET.1));
    }
}
