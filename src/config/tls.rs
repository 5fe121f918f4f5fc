//! `server.tls_cert_file`, `server.tls_key_file`, `server.client_ca_file`:
//! TLS on the caller listener. The files are read and checked here, at start
//! and again on every reload, so that both say what is wrong by key.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use super::error::ConfigError;

/// Where the caller listener's certificate, key and client CA are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerTls {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// With it, every caller must present a certificate it signed (mTLS).
    pub client_ca_file: Option<PathBuf>,
}

impl ServerTls {
    /// `server.tls_cert_file`/`tls_key_file` (both or neither) and
    /// `server.client_ca_file` (only with them); the files are read once to
    /// check them.
    pub(super) fn from_keys(
        cert: Option<PathBuf>,
        key: Option<PathBuf>,
        client_ca: Option<PathBuf>,
    ) -> Result<Option<Self>, ConfigError> {
        let tls = match (cert, key) {
            (Some(cert_file), Some(key_file)) => Self {
                cert_file,
                key_file,
                client_ca_file: client_ca,
            },
            (Some(_), None) => {
                return Err(ConfigError::new(
                    "server.tls_key_file",
                    "must be set with server.tls_cert_file",
                ));
            }
            (None, Some(_)) => {
                return Err(ConfigError::new(
                    "server.tls_cert_file",
                    "must be set with server.tls_key_file",
                ));
            }
            (None, None) if client_ca.is_some() => {
                return Err(ConfigError::new(
                    "server.client_ca_file",
                    "needs server.tls_cert_file and server.tls_key_file (client certificates are checked in TLS)",
                ));
            }
            (None, None) => return Ok(None),
        };
        tls.load()?;
        Ok(Some(tls))
    }

    /// The files, for a watcher to notice a change.
    pub fn files(&self) -> Vec<&Path> {
        let mut files = vec![self.cert_file.as_path(), self.key_file.as_path()];
        files.extend(self.client_ca_file.as_deref());
        files
    }

    /// Reads the files and builds the TLS configuration of the caller
    /// listener (HTTP/1.1, TLS 1.2 and 1.3, ring). Blocking: call it at start
    /// or off the async threads. Messages never show key material.
    pub fn load(&self) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
        let pem = |key: &str, path: &Path| {
            std::fs::read(path)
                .map_err(|e| ConfigError::new(key, format!("cannot read {}: {e}", path.display())))
        };
        let certs = certificates(
            "server.tls_cert_file",
            &self.cert_file,
            &pem("server.tls_cert_file", &self.cert_file)?,
        )?;
        let key = PrivateKeyDer::from_pem_slice(&pem("server.tls_key_file", &self.key_file)?)
            .map_err(|_| {
                ConfigError::new(
                    "server.tls_key_file",
                    format!(
                        "{} holds no private key (PEM: PKCS#8, PKCS#1 or SEC1)",
                        self.key_file.display()
                    ),
                )
            })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::new("server.tls_cert_file", e.to_string()))?;
        let builder = match &self.client_ca_file {
            None => builder.with_no_client_auth(),
            Some(path) => {
                let key = "server.client_ca_file";
                let mut roots = rustls::RootCertStore::empty();
                for cert in certificates(key, path, &pem(key, path)?)? {
                    roots.add(cert).map_err(|e| {
                        ConfigError::new(
                            key,
                            format!("{}: unusable CA certificate: {e}", path.display()),
                        )
                    })?;
                }
                let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                    Arc::new(roots),
                    provider,
                )
                .build()
                .map_err(|e| ConfigError::new(key, e.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            ConfigError::new(
                "server.tls_key_file",
                format!("does not go with server.tls_cert_file: {e}"),
            )
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }
}

/// The certificates of a PEM file; at least one.
fn certificates(
    key: &str,
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, ConfigError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ConfigError::new(key, format!("{} is not PEM: {e}", path.display())))?;
    if certs.is_empty() {
        return Err(ConfigError::new(
            key,
            format!("{} holds no CERTIFICATE", path.display()),
        ));
    }
    Ok(certs)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::config::Config;

    fn load(vars: &[(&str, &str)]) -> Result<Config, crate::config::ConfigError> {
        let mut env: BTreeMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        env.insert("S".into(), "0123456789abcdef0123456789abcdef".into());
        Config::from_toml(
            "[auth]\nissuer = \"https://idp\"\nhs256_secret_env = \"S\"\n",
            &env,
        )
    }

    #[test]
    fn tls_files_are_checked_by_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = |n: &str| dir.path().join(n).display().to_string();
        let one = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        let two = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
        std::fs::write(path("a.crt"), one.cert.pem()).unwrap();
        std::fs::write(path("a.key"), one.key_pair.serialize_pem()).unwrap();
        std::fs::write(path("b.key"), two.key_pair.serialize_pem()).unwrap();
        let (crt, key, other_key) = (path("a.crt"), path("a.key"), path("b.key"));
        const CERT: &str = "CPHGW__SERVER__TLS_CERT_FILE";
        const KEY: &str = "CPHGW__SERVER__TLS_KEY_FILE";
        const CA: &str = "CPHGW__SERVER__CLIENT_CA_FILE";

        let c = load(&[(CERT, &crt), (KEY, &key), (CA, &crt)]).unwrap();
        let tls = c.server.tls.expect("TLS configured");
        assert_eq!(tls.files().len(), 3);
        assert!(load(&[]).unwrap().server.tls.is_none());

        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[(CERT, &crt)], "server.tls_key_file"),
            (&[(KEY, &key)], "server.tls_cert_file"),
            (&[(CA, &crt)], "server.client_ca_file"),
            (&[(CERT, &crt), (KEY, &other_key)], "server.tls_key_file"),
            (&[(CERT, &key), (KEY, &key)], "server.tls_cert_file"),
            (&[(CERT, &crt), (KEY, &crt)], "server.tls_key_file"),
            (
                &[(CERT, &crt), (KEY, &key), (CA, &key)],
                "server.client_ca_file",
            ),
            (
                &[(CERT, "/nonexistent"), (KEY, &key)],
                "server.tls_cert_file",
            ),
        ];
        for (vars, want) in cases {
            let err = load(vars).unwrap_err();
            assert_eq!(err.key, *want, "{vars:?}: {err}");
            assert!(!err.to_string().contains("PRIVATE KEY-----\n"), "{err}");
        }
    }
}
