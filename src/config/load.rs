//! Where configuration comes from: the TOML file, `CPHGW__SECTION__KEY`
//! overrides, and secrets from the variables or files the config names.

use std::collections::BTreeMap;
use std::net::SocketAddr;

use super::error::ConfigError;

/// Prefix of environment variables that override config keys.
pub const ENV_PREFIX: &str = "CPHGW__";

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

/// `CPHGW__UPSTREAM__MAX_BATCH_SIZE=50` sets `upstream.max_batch_size`. Values
/// are TOML literals (`50`, `true`, `["a.pem"]`, `"quoted"`); anything else is
/// taken as a plain string. Key segments are lower-cased.
pub(super) fn apply_env_overrides(
    root: &mut toml::Table,
    env: &dyn Env,
) -> Result<(), ConfigError> {
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

pub(super) fn parse_addr(key: &str, s: &str) -> Result<SocketAddr, ConfigError> {
    s.parse()
        .map_err(|_| ConfigError::new(key, format!("{s:?} is not an address like 0.0.0.0:8080")))
}

pub(super) fn check_endpoint(key: &str, url: &str) -> Result<(), ConfigError> {
    let probe = url.replace("{region}", "cn-east-3");
    match reqwest::Url::parse(&probe) {
        Ok(u) if matches!(u.scheme(), "http" | "https") && u.host().is_some() => Ok(()),
        _ => Err(ConfigError::new(
            key,
            format!("{url:?} is not an http(s) URL"),
        )),
    }
}

pub(super) fn positive<T: PartialOrd + Default + Copy>(key: &str, v: T) -> Result<T, ConfigError> {
    if v > T::default() {
        Ok(v)
    } else {
        Err(ConfigError::new(key, "must be greater than 0"))
    }
}
