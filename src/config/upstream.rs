//! `[upstream]`: CPH's endpoint, batching, concurrency, timeouts, retries,
//! and how the upstream client reaches Huawei (extra CA certificates, proxy).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::load::{Env, check_endpoint, positive};

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
    ca_file: Option<PathBuf>,
    proxy: Option<String>,
    max_response_bytes: usize,
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
            ca_file: None,
            proxy: None,
            max_response_bytes: 4_194_304,
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
    /// Extra trusted CA certificates (`upstream.ca_file`), DER, checked.
    pub ca_certs: Vec<Vec<u8>>,
    /// Where upstream calls go through.
    pub proxy: ProxyChoice,
    /// Hosts that bypass the proxy, from `NO_PROXY`/`no_proxy` (either choice).
    pub no_proxy: Option<String>,
    /// The largest upstream answer read (CPH, IAM, JWKS); a larger one is
    /// broken.
    pub max_response_bytes: usize,
}

/// The proxy of upstream calls (IAM, CPH, JWKS), decided once at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProxyChoice {
    /// `upstream.proxy`: every call, `https` and `http` alike.
    Configured(ProxyUrl),
    /// The environment's `HTTPS_PROXY` (for `https` URLs) and `HTTP_PROXY`
    /// (for `http` URLs), upper or lower case; none when neither is set.
    Environment {
        https: Option<ProxyUrl>,
        http: Option<ProxyUrl>,
    },
}

/// A proxy URL. `Debug` and `Display` leave out any user and password.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl(pub String);

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match reqwest::Url::parse(&self.0) {
            Ok(u) => write!(
                f,
                "{}://{}{}",
                u.scheme(),
                u.host_str().unwrap_or(""),
                u.port().map(|p| format!(":{p}")).unwrap_or_default()
            ),
            Err(_) => f.write_str("(unparsable proxy URL)"),
        }
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

/// An environment variable by its upper-case name, else its lower-case one.
fn env_var(env: &dyn Env, upper: &str) -> Option<String> {
    env.var(upper)
        .or_else(|| env.var(&upper.to_ascii_lowercase()))
}

/// Checks a proxy URL: `http` or `https`, with a host.
fn proxy_url(key: &str, url: &str) -> Result<ProxyUrl, ConfigError> {
    match reqwest::Url::parse(url) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => {
            Ok(ProxyUrl(url.to_owned()))
        }
        _ => Err(ConfigError::new(
            key,
            "is not an http(s) proxy URL like http://proxy:3128",
        )),
    }
}

/// Reads and checks the CA certificates of `upstream.ca_file`.
fn ca_certs(path: &std::path::Path) -> Result<Vec<Vec<u8>>, ConfigError> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let fail = |msg: String| ConfigError::new("upstream.ca_file", msg);
    let pem =
        std::fs::read(path).map_err(|e| fail(format!("cannot read {}: {e}", path.display())))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("{} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(fail(format!("{} holds no CERTIFICATE", path.display())));
    }
    let mut roots = rustls::RootCertStore::empty();
    for (i, cert) in certs.iter().enumerate() {
        roots.add(cert.clone()).map_err(|e| {
            fail(format!(
                "certificate {} of {} is unusable: {e}",
                i + 1,
                path.display()
            ))
        })?;
    }
    Ok(certs.into_iter().map(|c| c.to_vec()).collect())
}

impl RawUpstream {
    pub(super) fn validate(self, env: &dyn Env) -> Result<UpstreamConfig, ConfigError> {
        let u = self;
        let proxy = match &u.proxy {
            Some(url) => ProxyChoice::Configured(proxy_url("upstream.proxy", url)?),
            None => ProxyChoice::Environment {
                https: env_var(env, "HTTPS_PROXY")
                    .filter(|v| !v.is_empty())
                    .map(|v| proxy_url("HTTPS_PROXY (environment)", &v))
                    .transpose()?,
                http: env_var(env, "HTTP_PROXY")
                    .filter(|v| !v.is_empty())
                    .map(|v| proxy_url("HTTP_PROXY (environment)", &v))
                    .transpose()?,
            },
        };
        let ca_certs = match &u.ca_file {
            Some(path) => ca_certs(path)?,
            None => Vec::new(),
        };
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
            ca_certs,
            proxy,
            no_proxy: env_var(env, "NO_PROXY").filter(|v| !v.trim().is_empty()),
            max_response_bytes: positive("upstream.max_response_bytes", u.max_response_bytes)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::config::Config;

    const BASE: &str = "[auth]\nissuer = \"https://idp\"\nhs256_secret_env = \"S\"\n";

    fn load(extra: &str, vars: &[(&str, &str)]) -> Result<UpstreamConfig, ConfigError> {
        let mut env: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("S".into(), "0123456789abcdef0123456789abcdef".into());
        Config::from_toml(&format!("{BASE}[upstream]\n{extra}"), &env).map(|c| c.upstream)
    }

    #[test]
    fn the_proxy_is_chosen_explicitly_and_hides_its_password() {
        let u = load("", &[]).unwrap();
        assert_eq!(
            u.proxy,
            ProxyChoice::Environment {
                https: None,
                http: None
            }
        );
        let u = load(
            "",
            &[
                ("https_proxy", "http://envproxy:3128"),
                ("NO_PROXY", ".internal,10.0.0.0/8"),
            ],
        )
        .unwrap();
        assert_eq!(
            u.proxy,
            ProxyChoice::Environment {
                https: Some(ProxyUrl("http://envproxy:3128".into())),
                http: None
            }
        );
        assert_eq!(u.no_proxy.as_deref(), Some(".internal,10.0.0.0/8"));
        let u = load(
            "proxy = \"http://user:hunter2@egress:3128\"\n",
            &[("HTTPS_PROXY", "http://ignored:1")],
        )
        .unwrap();
        let ProxyChoice::Configured(url) = &u.proxy else {
            panic!("{:?}", u.proxy);
        };
        assert_eq!(url.to_string(), "http://egress:3128");
        assert!(!format!("{u:?}").contains("hunter2"));
        crate::upstream::http::client(&u).expect("a client with the proxy");
    }

    #[test]
    fn bad_proxies_and_ca_files_are_refused_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let not_pem = dir.path().join("not.pem");
        std::fs::write(&not_pem, "hello").unwrap();
        let garbage = dir.path().join("garbage.pem");
        std::fs::write(
            &garbage,
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let cases = [
            (
                "proxy = \"egress:3128\"\n".to_owned(),
                &[][..],
                "upstream.proxy",
            ),
            (
                String::new(),
                &[("HTTPS_PROXY", "not a url")][..],
                "HTTPS_PROXY (environment)",
            ),
            (
                "ca_file = \"/nonexistent/ca.pem\"\n".into(),
                &[],
                "upstream.ca_file",
            ),
            (
                format!("ca_file = \"{}\"\n", not_pem.display()),
                &[],
                "upstream.ca_file",
            ),
            (
                format!("ca_file = \"{}\"\n", garbage.display()),
                &[],
                "upstream.ca_file",
            ),
        ];
        for (extra, vars, key) in cases {
            let err = load(&extra, vars).unwrap_err();
            assert_eq!(err.key, key, "{extra}: {err}");
        }
    }
}
