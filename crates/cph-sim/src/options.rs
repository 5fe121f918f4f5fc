//! Configuration of a simulator instance.

use std::fmt;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use crate::faults::Faults;

/// Access key of the default AK/SK credential of [`SimOptions::default`].
pub const DEFAULT_AK: &str = "SIMAKEXAMPLE000000001";
/// Secret key of the default AK/SK credential of [`SimOptions::default`].
pub const DEFAULT_SK: &str = "sim-secret-key-0000000000000000000000";

/// Configuration of a simulator instance.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Address to listen on; port 0 picks a free port (see `Sim::addr`).
    pub listen: SocketAddr,
    /// IAM domain name accepted by the token route.
    pub iam_domain: String,
    /// IAM user name accepted by the token route.
    pub iam_user: String,
    /// IAM password accepted by the token route.
    pub iam_password: String,
    /// Lifetime of issued tokens: `expires_at = now + token_ttl`.
    pub token_ttl: Duration,
    /// AK/SK credentials whose signatures the CPH routes accept (any project).
    /// Default: one permanent credential, [`DEFAULT_AK`] / [`DEFAULT_SK`].
    pub aksk: Vec<AkSkCredential>,
    /// Number of seeded phones in every project.
    pub phones_per_project: u32,
    /// Largest accepted `phone_ids` list; longer ones get 400 `CPS.0001`.
    pub max_batch_size: usize,
    /// How long a stop job runs (status 1) before it ends (status 2, or -1
    /// with [`Faults::job_failure_rate`]).
    pub job_duration: Duration,
    /// Serve HTTPS with this certificate instead of plain HTTP.
    pub tls: Option<SimTls>,
    /// Faults active from the start.
    pub faults: Faults,
}

impl Default for SimOptions {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
            iam_domain: "sim-domain".into(),
            iam_user: "sim-user".into(),
            iam_password: "sim-password".into(),
            token_ttl: Duration::from_secs(24 * 3600),
            aksk: vec![AkSkCredential::new(DEFAULT_AK, DEFAULT_SK)],
            phones_per_project: 20_000,
            max_batch_size: 500,
            job_duration: Duration::from_secs(2),
            tls: None,
            faults: Faults::default(),
        }
    }
}

/// An AK/SK credential the simulator accepts.
#[derive(Clone, PartialEq, Eq)]
pub struct AkSkCredential {
    /// Access key id (the `Access=` of the `Authorization` header).
    pub ak: String,
    /// Secret key (the HMAC-SHA256 key).
    pub sk: String,
    /// Empty for a permanent credential. Otherwise the credential is
    /// temporary: every signed call must carry one of these in
    /// `X-Security-Token`, and sign it; a permanent credential must not send one.
    pub security_tokens: Vec<String>,
}

impl AkSkCredential {
    /// A permanent credential.
    pub fn new(ak: impl Into<String>, sk: impl Into<String>) -> Self {
        Self {
            ak: ak.into(),
            sk: sk.into(),
            security_tokens: Vec::new(),
        }
    }

    /// A temporary credential that needs `X-Security-Token: security_token`.
    pub fn temporary(
        ak: impl Into<String>,
        sk: impl Into<String>,
        security_token: impl Into<String>,
    ) -> Self {
        Self {
            security_tokens: vec![security_token.into()],
            ..Self::new(ak, sk)
        }
    }

    /// Whether calls with this AK need a security token.
    pub fn is_temporary(&self) -> bool {
        !self.security_tokens.is_empty()
    }
}

/// Never prints the secret key or the security tokens.
impl fmt::Debug for AkSkCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AkSkCredential")
            .field("ak", &self.ak)
            .field("temporary", &self.is_temporary())
            .finish_non_exhaustive()
    }
}

/// A server certificate and key for HTTPS (PEM; the certificate may be
/// followed by its chain). The key may be PKCS#8, PKCS#1 (RSA) or SEC1 (EC).
#[derive(Clone, PartialEq, Eq)]
pub struct SimTls {
    /// The certificate chain, leaf first, PEM.
    pub cert_pem: Vec<u8>,
    /// The private key, PEM.
    pub key_pem: Vec<u8>,
}

/// Never prints the key.
impl fmt::Debug for SimTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SimTls").finish_non_exhaustive()
    }
}
