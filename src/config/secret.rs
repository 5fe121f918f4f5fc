//! Secrets as the config names them: the value of an environment variable
//! (read once), or the content of a file, re-read when the file changes so
//! that a rotated secret takes effect without a restart.
//!
//! Readers call [`Secret::current`], which never touches the file system;
//! a watcher (see `http::server`) calls [`Secret::refresh`] off the async
//! threads. A file that cannot be read, or is empty, keeps the last good
//! value and reports why.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use arc_swap::ArcSwap;
use secrecy::SecretString;

use super::error::ConfigError;
use super::load::Env;

/// Where a secret comes from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// An environment variable, read once at start.
    Env(String),
    /// A file, re-read when its modification time or length changes.
    File(PathBuf),
}

/// What the file looked like when it was last read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

/// What a value must satisfy to be used (e.g. a length, not a placeholder);
/// the message says why not, without the value.
pub type SecretCheck = fn(&str) -> Result<(), String>;

/// A secret value and where it comes from. `Debug` never shows the value.
#[derive(Debug)]
pub struct Secret {
    /// The config key that names the source, for messages.
    key: String,
    source: SecretSource,
    value: ArcSwap<SecretString>,
    stamp: std::sync::Mutex<Option<Stamp>>,
    /// Applied at load and to every re-read value; a value that fails it is
    /// refused (at start) or not taken (later: the last good one stays).
    check: SecretCheck,
}

fn no_check(_: &str) -> Result<(), String> {
    Ok(())
}

/// The largest secret file read (a secret is a line, not a document).
const MAX_SECRET_BYTES: u64 = 64 * 1024;

impl Secret {
    /// Reads the secret now; fails naming `key` if it is missing or empty.
    pub fn load(key: &str, source: SecretSource, env: &dyn Env) -> Result<Self, ConfigError> {
        Self::load_checked(key, source, env, no_check)
    }

    /// Like [`Secret::load`], and the value (now and after every change of
    /// the file) must pass `check`.
    pub fn load_checked(
        key: &str,
        source: SecretSource,
        env: &dyn Env,
        check: SecretCheck,
    ) -> Result<Self, ConfigError> {
        let (value, stamp) = match &source {
            SecretSource::Env(var) => match env.var(var) {
                Some(v) if !v.is_empty() => (v, None),
                _ => {
                    return Err(ConfigError::new(
                        key,
                        format!("environment variable {var} is not set or empty"),
                    ));
                }
            },
            SecretSource::File(path) => {
                let (v, stamp) = read_file(path).map_err(|e| ConfigError::new(key, e))?;
                (v, Some(stamp))
            }
        };
        check(&value)
            .map_err(|why| ConfigError::new(key, format!("{}: {why}", describe(&source))))?;
        Ok(Self {
            key: key.to_owned(),
            source,
            value: ArcSwap::from_pointee(SecretString::from(value)),
            stamp: std::sync::Mutex::new(stamp),
            check,
        })
    }

    /// A secret given directly (tests, the demo).
    pub fn fixed(key: &str, value: &str) -> Self {
        Self {
            key: key.to_owned(),
            source: SecretSource::Env(String::new()),
            value: ArcSwap::from_pointee(SecretString::from(value.to_owned())),
            stamp: std::sync::Mutex::new(None),
            check: no_check,
        }
    }

    /// The current value.
    pub fn current(&self) -> Arc<SecretString> {
        self.value.load_full()
    }

    pub fn source(&self) -> &SecretSource {
        &self.source
    }

    /// The config key that names this secret.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Re-reads a file secret if the file changed. `Ok(true)` when the value
    /// was replaced; on error the last good value stays. Blocking: call it
    /// from `spawn_blocking` or a thread of its own.
    pub fn refresh(&self) -> Result<bool, String> {
        let SecretSource::File(path) = &self.source else {
            return Ok(false);
        };
        let meta = std::fs::metadata(path)
            .map_err(|e| format!("{}: cannot read {}: {e}", self.key, path.display()))?;
        let now = Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        };
        let mut stamp = self.stamp.lock().unwrap_or_else(|e| e.into_inner());
        if *stamp == Some(now) {
            return Ok(false);
        }
        let (value, read) = read_file(path).map_err(|e| format!("{}: {e}", self.key))?;
        // A value that fails the check is not taken, and not retried until
        // the file changes again.
        *stamp = Some(read);
        (self.check)(&value).map_err(|why| format!("{}: {}: {why}", self.key, path.display()))?;
        self.value.store(Arc::new(SecretString::from(value)));
        Ok(true)
    }
}

/// Where a secret comes from, for messages (never its value).
fn describe(source: &SecretSource) -> String {
    match source {
        SecretSource::Env(var) => format!("the secret in environment variable {var}"),
        SecretSource::File(path) => format!("the secret in {}", path.display()),
    }
}

/// Reads a secret file: a regular file of at most 64 KiB, trailing line
/// breaks dropped, not empty.
fn read_file(path: &Path) -> Result<(String, Stamp), String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    let mut text = String::new();
    file.take(MAX_SECRET_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_SECRET_BYTES {
        return Err(format!(
            "{} is larger than {MAX_SECRET_BYTES} bytes",
            path.display()
        ));
    }
    let value = text.trim_end_matches(['\r', '\n']);
    if value.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok((
        value.to_owned(),
        Stamp {
            modified: meta.modified().ok(),
            len: meta.len(),
        },
    ))
}

/// One of `*_env` / `*_file` for a secret: exactly one must be set.
pub fn one_source(
    key: &str,
    name: &str,
    env_var: Option<String>,
    file: Option<PathBuf>,
) -> Result<SecretSource, ConfigError> {
    match (env_var, file) {
        (Some(var), None) => Ok(SecretSource::Env(var)),
        (None, Some(path)) => Ok(SecretSource::File(path)),
        _ => Err(ConfigError::new(
            key,
            format!("set exactly one of {name}_env or {name}_file"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use secrecy::ExposeSecret;

    use super::*;

    #[test]
    fn a_file_secret_follows_the_file_and_keeps_the_last_good_value() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pw");
        std::fs::write(&path, "first\n").unwrap();
        let s = Secret::load("k", SecretSource::File(path.clone()), &BTreeMap::new()).unwrap();
        assert_eq!(s.current().expose_secret(), "first");
        assert_eq!(s.refresh(), Ok(false));
        std::fs::write(&path, "second-and-longer\n").unwrap();
        assert_eq!(s.refresh(), Ok(true));
        assert_eq!(s.current().expose_secret(), "second-and-longer");
        std::fs::write(&path, "\n").unwrap();
        assert!(s.refresh().unwrap_err().contains("empty"));
        assert_eq!(s.current().expose_secret(), "second-and-longer");
        assert!(!format!("{s:?}").contains("second"));
    }

    #[test]
    fn env_secrets_must_be_set() {
        let env: BTreeMap<String, String> = [("V".to_owned(), "x".to_owned())].into();
        assert!(Secret::load("k", SecretSource::Env("V".into()), &env).is_ok());
        let err = Secret::load("k.password_env", SecretSource::Env("W".into()), &env).unwrap_err();
        assert_eq!(err.key, "k.password_env");
    }
}
