//! HTTPS: a rustls server configuration (ring provider) from PEM.

use std::io;
use std::sync::Arc;

use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::TlsAcceptor;

use crate::options::SimTls;

fn invalid(what: &str, e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, format!("sim TLS {what}: {e}"))
}

/// The acceptor for `tls`; an `InvalidInput` error names what is wrong.
pub(crate) fn acceptor(tls: &SimTls) -> io::Result<TlsAcceptor> {
    let certs = CertificateDer::pem_slice_iter(&tls.cert_pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid("certificate", e))?;
    if certs.is_empty() {
        return Err(invalid("certificate", "no CERTIFICATE block"));
    }
    let key = PrivateKeyDer::from_pem_slice(&tls.key_pem).map_err(|e| invalid("key", e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| invalid("protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| invalid("certificate or key", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(config)))
}
