//! `[iam]`: the IAM endpoint and the named credentials tenants refer to.
//!
//! A credential is of one of two kinds: `password` (an IAM user's password,
//! exchanged for project-scoped tokens) or `aksk` (an access key and secret
//! key that sign every CPH call; no IAM call at all).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::load::{Env, check_endpoint};
use super::placeholder;
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

/// The kind of a credential (`kind`, default `password`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CredentialKind {
    /// An IAM user's password: project-scoped IAM tokens (`X-Auth-Token`).
    #[default]
    Password,
    /// An access key and secret key: every CPH call signed (`SDK-HMAC-SHA256`).
    Aksk,
}

impl CredentialKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CredentialKind::Password => "password",
            CredentialKind::Aksk => "aksk",
        }
    }
}

/// Every key either kind may set; which ones may be set depends on `kind`,
/// so that a key of the other kind is refused by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    #[serde(default)]
    kind: CredentialKind,
    #[serde(default)]
    domain: Option<String>,
    #[serde(default)]
    user: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default)]
    password_file: Option<PathBuf>,
    #[serde(default)]
    access_key_env: Option<String>,
    #[serde(default)]
    access_key_file: Option<PathBuf>,
    #[serde(default)]
    secret_key_env: Option<String>,
    #[serde(default)]
    secret_key_file: Option<PathBuf>,
    #[serde(default)]
    security_token_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct IamConfig {
    /// IAM base URL; `{region}` is replaced by the project's region.
    pub endpoint: String,
    pub refresh_before_expiry: Duration,
    pub credentials: BTreeMap<String, Arc<Credential>>,
}

/// A named credential. `Debug` never shows a password or key.
#[derive(Debug)]
pub enum Credential {
    Password(PasswordCredential),
    AkSk(AkSkCredential),
}

/// An IAM user's password, exchanged for project-scoped tokens.
#[derive(Debug)]
pub struct PasswordCredential {
    pub domain: String,
    pub user: String,
    /// Re-read when its file changes (`password_file`).
    pub password: Secret,
}

/// An access key and secret key that sign every CPH call. Each part is
/// re-read when its file changes.
#[derive(Debug)]
pub struct AkSkCredential {
    pub access_key: Secret,
    pub secret_key: Secret,
    /// The security token of temporary keys, sent as `X-Security-Token`.
    pub security_token: Option<Secret>,
}

impl Credential {
    pub fn kind(&self) -> CredentialKind {
        match self {
            Credential::Password(_) => CredentialKind::Password,
            Credential::AkSk(_) => CredentialKind::Aksk,
        }
    }

    /// The credential's secrets.
    pub fn secrets(&self) -> Vec<&Secret> {
        match self {
            Credential::Password(p) => vec![&p.password],
            Credential::AkSk(k) => {
                let mut out = vec![&k.access_key, &k.secret_key];
                out.extend(k.security_token.as_ref());
                out
            }
        }
    }
}

impl RawIam {
    pub(super) fn validate(self, env: &dyn Env) -> Result<IamConfig, ConfigError> {
        check_endpoint("iam.endpoint", &self.endpoint)?;
        let mut credentials = BTreeMap::new();
        for (name, c) in self.credentials {
            let key = format!("iam.credentials.{name}");
            let credential = match c.kind {
                CredentialKind::Password => Credential::Password(c.password(&key, env)?),
                CredentialKind::Aksk => Credential::AkSk(c.aksk(&key, env)?),
            };
            credentials.insert(name, Arc::new(credential));
        }
        Ok(IamConfig {
            endpoint: self.endpoint,
            refresh_before_expiry: Duration::from_secs(self.refresh_before_expiry_s),
            credentials,
        })
    }
}

impl RawCredential {
    /// Refuses, by name, the first key of `keys` that is set.
    fn refuse(key: &str, kind: CredentialKind, keys: &[(&str, bool)]) -> Result<(), ConfigError> {
        match keys.iter().find(|(_, set)| *set) {
            Some((name, _)) => Err(ConfigError::new(
                format!("{key}.{name}"),
                format!("not a key of a kind = \"{}\" credential", kind.as_str()),
            )),
            None => Ok(()),
        }
    }

    fn password(self, key: &str, env: &dyn Env) -> Result<PasswordCredential, ConfigError> {
        Self::refuse(
            key,
            CredentialKind::Password,
            &[
                ("access_key_env", self.access_key_env.is_some()),
                ("access_key_file", self.access_key_file.is_some()),
                ("secret_key_env", self.secret_key_env.is_some()),
                ("secret_key_file", self.secret_key_file.is_some()),
                ("security_token_file", self.security_token_file.is_some()),
            ],
        )?;
        let domain = self.domain.unwrap_or_default();
        if domain.is_empty() {
            return Err(ConfigError::new(
                format!("{key}.domain"),
                "must be set and not empty",
            ));
        }
        let user = self.user.unwrap_or_default();
        if user.is_empty() {
            return Err(ConfigError::new(
                format!("{key}.user"),
                "must be set and not empty",
            ));
        }
        let password = secret(key, "password", self.password_env, self.password_file, env)?;
        Ok(PasswordCredential {
            domain,
            user,
            password,
        })
    }

    fn aksk(self, key: &str, env: &dyn Env) -> Result<AkSkCredential, ConfigError> {
        Self::refuse(
            key,
            CredentialKind::Aksk,
            &[
                ("domain", self.domain.is_some()),
                ("user", self.user.is_some()),
                ("password_env", self.password_env.is_some()),
                ("password_file", self.password_file.is_some()),
            ],
        )?;
        let access_key = secret(
            key,
            "access_key",
            self.access_key_env,
            self.access_key_file,
            env,
        )?;
        check_header_safe(&access_key)?;
        let secret_key = secret(
            key,
            "secret_key",
            self.secret_key_env,
            self.secret_key_file,
            env,
        )?;
        let security_token = match self.security_token_file {
            Some(path) => {
                let token = Secret::load_checked(
                    &format!("{key}.security_token_file"),
                    SecretSource::File(path),
                    env,
                    placeholder::not_placeholder,
                )?;
                check_header_safe(&token)?;
                Some(token)
            }
            None => None,
        };
        Ok(AkSkCredential {
            access_key,
            secret_key,
            security_token,
        })
    }
}

/// The secret named by `{name}_env` or `{name}_file` (exactly one); never
/// a placeholder.
fn secret(
    key: &str,
    name: &str,
    env_var: Option<String>,
    file: Option<PathBuf>,
    env: &dyn Env,
) -> Result<Secret, ConfigError> {
    let source = one_source(key, name, env_var, file)?;
    let source_key = match &source {
        SecretSource::Env(_) => format!("{key}.{name}_env"),
        SecretSource::File(_) => format!("{key}.{name}_file"),
    };
    Secret::load_checked(&source_key, source, env, placeholder::not_placeholder)
}

/// A value sent in a header (the access key, the security token) must be
/// visible ASCII; the message never shows the value.
fn check_header_safe(secret: &Secret) -> Result<(), ConfigError> {
    use secrecy::ExposeSecret;
    let value = secret.current();
    if value.expose_secret().bytes().all(|b| b.is_ascii_graphic()) {
        Ok(())
    } else {
        Err(ConfigError::new(
            secret.key(),
            "must be visible ASCII characters only (no spaces or line breaks inside)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use secrecy::ExposeSecret;

    use crate::config::Config;

    const BASE: &str = "[auth]\nissuer = \"https://idp\"\nhs256_secret_env = \"S\"\n";

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        let mut env: BTreeMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("S".into(), "0123456789abcdef0123456789abcdef".into());
        env
    }

    #[test]
    fn aksk_credentials_read_their_keys_and_hide_them() {
        let dir = tempfile::tempdir().unwrap();
        let sk = dir.path().join("sk");
        let token = dir.path().join("token");
        std::fs::write(&sk, "file-secret-key\n").unwrap();
        std::fs::write(&token, "security-token-value\n").unwrap();
        let text = format!(
            "{BASE}\n[iam.credentials.env]\nkind = \"aksk\"\naccess_key_env = \"AK\"\nsecret_key_env = \"SK\"\n\
             \n[iam.credentials.files]\nkind = \"aksk\"\naccess_key_env = \"AK\"\nsecret_key_file = \"{}\"\nsecurity_token_file = \"{}\"\n\
             \n[iam.credentials.pw]\ndomain = \"d\"\nuser = \"u\"\npassword_env = \"P\"\n",
            sk.display(),
            token.display()
        );
        let c = Config::from_toml(
            &text,
            &env(&[("AK", "AKID1"), ("SK", "env-secret-key"), ("P", "pw")]),
        )
        .unwrap();
        let kinds: Vec<&str> = c
            .iam
            .credentials
            .values()
            .map(|c| c.kind().as_str())
            .collect();
        assert_eq!(kinds, ["aksk", "aksk", "password"]);
        let super::Credential::AkSk(files) = &*c.iam.credentials["files"] else {
            panic!("an AK/SK credential");
        };
        assert_eq!(files.access_key.current().expose_secret(), "AKID1");
        assert_eq!(
            files.secret_key.current().expose_secret(),
            "file-secret-key"
        );
        let token_value = files.security_token.as_ref().unwrap().current();
        assert_eq!(token_value.expose_secret(), "security-token-value");
        let watched: Vec<&str> = c.file_secrets().iter().map(|s| s.key()).collect();
        assert_eq!(
            watched,
            [
                "iam.credentials.files.secret_key_file",
                "iam.credentials.files.security_token_file"
            ]
        );
        let debug = format!("{c:?}");
        for secret in ["env-secret-key", "file-secret-key", "security-token-value"] {
            assert!(!debug.contains(secret), "{secret} in Debug");
        }
    }

    #[test]
    fn a_wrong_credential_is_refused_by_its_key() {
        let aksk = "[iam.credentials.x]\nkind = \"aksk\"\n";
        let pw = "[iam.credentials.x]\ndomain = \"d\"\nuser = \"u\"\npassword_env = \"P\"\n";
        let vars = [("AK", "AKID1"), ("SK", "sk"), ("P", "pw"), ("BAD", "AK ID")];
        let cases: &[(String, &str)] = &[
            (
                format!("{aksk}access_key_env = \"AK\"\n"),
                "iam.credentials.x",
            ),
            (
                format!("{aksk}secret_key_env = \"SK\"\n"),
                "iam.credentials.x",
            ),
            (
                format!("{aksk}access_key_env = \"AK\"\nsecret_key_env = \"SK\"\ndomain = \"d\"\n"),
                "iam.credentials.x.domain",
            ),
            (
                format!("{aksk}access_key_env = \"NOPE\"\nsecret_key_env = \"SK\"\n"),
                "iam.credentials.x.access_key_env",
            ),
            (
                format!("{aksk}access_key_env = \"BAD\"\nsecret_key_env = \"SK\"\n"),
                "iam.credentials.x.access_key_env",
            ),
            (
                format!(
                    "{aksk}access_key_env = \"AK\"\nsecret_key_env = \"SK\"\nsecurity_token_file = \"/nonexistent\"\n"
                ),
                "iam.credentials.x.security_token_file",
            ),
            (
                format!("{pw}secret_key_env = \"SK\"\n"),
                "iam.credentials.x.secret_key_env",
            ),
            (
                "[iam.credentials.x]\nkind = \"token\"\n".into(),
                "iam.credentials.x.kind",
            ),
            (
                "[iam.credentials.x]\npassword_env = \"P\"\n".into(),
                "iam.credentials.x.domain",
            ),
        ];
        for (section, key) in cases {
            let err = Config::from_toml(&format!("{BASE}{section}"), &env(&vars)).unwrap_err();
            assert_eq!(err.key, *key, "{section}: {err}");
            assert!(!err.to_string().contains("AK ID"), "{err}");
        }
    }
}
