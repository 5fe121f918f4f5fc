//! Caller authentication: JWT verification against the configured key sources
//! (HS256 secret, RS256/ES256 PEM public keys, JWKS), with a bounded cache of
//! verified tokens.
//!
//! The algorithm always comes from the key, never from the token: a token is
//! checked only against keys whose algorithm equals the token's `alg`, so an
//! HS256 token "signed" with an RSA public key never meets an RSA key.

mod jwks;
mod keys;
mod mint;

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use secrecy::ExposeSecret;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

use crate::config::{AuthConfig, ConfigError};
use crate::domain::TenantId;
use jwks::Jwks;
use keys::{Key, pem_key};

pub use mint::mint_hs256;

/// Who is calling, read from a verified JWT.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The JWT `sub`.
    pub subject: String,
    /// The tenant claim; `None` when absent or not a valid tenant name.
    pub tenant: Option<TenantId>,
    pub roles: Vec<String>,
    /// `exp` as seconds since the epoch.
    pub expires_at: u64,
}

impl Caller {
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// Why a token was refused. Every kind answers 401 `CPHGW.0101`; the kind is
/// the `reason` label of `cphgw_jwt_rejections_total` and is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token algorithm not accepted")]
    Algorithm,
    #[error("no key for the token's key id")]
    UnknownKey,
    #[error("bad signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not yet valid")]
    NotYetValid,
    #[error("wrong issuer")]
    Issuer,
    #[error("wrong audience")]
    Audience,
    #[error("required claim missing or invalid")]
    Claims,
}

impl AuthError {
    pub fn reason(self) -> &'static str {
        match self {
            AuthError::Missing => "missing",
            AuthError::Malformed => "malformed",
            AuthError::Algorithm => "algorithm",
            AuthError::UnknownKey => "unknown_key",
            AuthError::Signature => "signature",
            AuthError::Expired => "expired",
            AuthError::NotYetValid => "not_yet_valid",
            AuthError::Issuer => "issuer",
            AuthError::Audience => "audience",
            AuthError::Claims => "claims",
        }
    }
}

/// Verifies caller JWTs.
pub struct Authenticator {
    cfg: AuthConfig,
    /// Keys configured statically (HS256 secret, PEM files).
    static_keys: Vec<Key>,
    jwks: Option<Jwks>,
    /// Verified tokens by SHA-256 of the token, until their `exp`.
    verified: moka::sync::Cache<[u8; 32], Arc<Caller>>,
}

struct ExpireAtExp;

impl moka::Expiry<[u8; 32], Arc<Caller>> for ExpireAtExp {
    fn expire_after_create(&self, _: &[u8; 32], c: &Arc<Caller>, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(c.expires_at.saturating_sub(now_s())))
    }
}

fn now_s() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

impl Authenticator {
    /// Builds the key set; fails (naming the key) on an unusable PEM file.
    pub fn new(cfg: AuthConfig, http: reqwest::Client) -> Result<Self, ConfigError> {
        let mut static_keys = Vec::new();
        if let Some(secret) = &cfg.hs256_secret {
            static_keys.push(Key {
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(secret.expose_secret().as_bytes()),
            });
        }
        for (i, (path, pem)) in cfg.public_keys.iter().enumerate() {
            let key = pem_key(pem).ok_or_else(|| {
                ConfigError::new(
                    format!("auth.public_key_files[{i}]"),
                    format!("{} is not an RSA or EC public key in PEM", path.display()),
                )
            })?;
            static_keys.push(key);
        }
        let jwks = cfg.jwks_url.clone().map(|url| Jwks {
            url,
            http,
            keys: ArcSwap::default(),
            last_refresh: Mutex::new(None),
            cooldown: cfg.jwks_refresh_cooldown,
            fetches: Default::default(),
        });
        let verified = moka::sync::Cache::builder()
            .max_capacity(cfg.verified_token_cache)
            .expire_after(ExpireAtExp)
            .build();
        Ok(Self {
            cfg,
            static_keys,
            jwks,
            verified,
        })
    }

    /// Loads the JWKS, if one is configured. A failure is logged, not fatal:
    /// keys are fetched again on the first unknown `kid`.
    pub async fn init(&self) {
        if let Some(jwks) = &self.jwks
            && let Err(e) = jwks.fetch().await
        {
            tracing::warn!(error = %e, "initial JWKS fetch failed");
        }
    }

    /// How many times the JWKS was fetched (for tests and metrics).
    pub fn jwks_fetches(&self) -> u64 {
        self.jwks
            .as_ref()
            .map_or(0, |j| j.fetches.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Verifies the value of an `Authorization` header.
    pub async fn verify_header(&self, header: Option<&[u8]>) -> Result<Arc<Caller>, AuthError> {
        let token = header
            .and_then(|h| {
                h.strip_prefix(b"Bearer ")
                    .or_else(|| h.strip_prefix(b"bearer "))
            })
            .ok_or(AuthError::Missing)?;
        let token = std::str::from_utf8(token)
            .map_err(|_| AuthError::Malformed)?
            .trim();
        self.verify(token).await
    }

    /// Verifies a compact JWT.
    pub async fn verify(&self, token: &str) -> Result<Arc<Caller>, AuthError> {
        if token.is_empty() || token.len() > 16 * 1024 {
            return Err(AuthError::Malformed);
        }
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if let Some(caller) = self.verified.get(&digest) {
            // The cache entry expires at `exp`; a token past `exp + leeway`
            // can still be found between expiry and eviction, so check.
            if caller.expires_at.saturating_add(self.cfg.leeway_s) >= now_s() {
                return Ok(caller);
            }
        }
        let caller = Arc::new(self.verify_uncached(token).await?);
        self.verified.insert(digest, caller.clone());
        Ok(caller)
    }

    async fn verify_uncached(&self, token: &str) -> Result<Caller, AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let candidates = self.candidates(header.alg, header.kid.as_deref()).await?;
        let mut last = AuthError::Signature;
        for key in &candidates {
            match jsonwebtoken::decode::<Map<String, Value>>(
                token,
                &key.key,
                &self.validation(key.alg),
            ) {
                Ok(data) => return self.caller(data.claims),
                Err(e) => {
                    last = map_error(e.kind());
                    if last != AuthError::Signature {
                        return Err(last);
                    }
                }
            }
        }
        Err(last)
    }

    /// The keys a token with this `alg` and `kid` may be checked against.
    async fn candidates(&self, alg: Algorithm, kid: Option<&str>) -> Result<Vec<Key>, AuthError> {
        if let (Some(jwks), Some(kid)) = (&self.jwks, kid) {
            let mut key = jwks.keys.load().get(kid).cloned();
            if key.is_none() {
                jwks.refresh_for_unknown_kid().await;
                key = jwks.keys.load().get(kid).cloned();
            }
            if let Some(key) = key {
                return if key.alg == alg {
                    Ok(vec![key])
                } else {
                    Err(AuthError::Algorithm)
                };
            }
            // An unknown kid may still name a static key (PEM files carry
            // no kid); fall through to them.
        }
        let mut keys: Vec<Key> = self
            .static_keys
            .iter()
            .filter(|k| k.alg == alg)
            .cloned()
            .collect();
        if keys.is_empty()
            && let Some(jwks) = &self.jwks
        {
            if kid.is_some() {
                return Err(AuthError::UnknownKey);
            }
            keys.extend(jwks.keys.load().values().filter(|k| k.alg == alg).cloned());
        }
        if keys.is_empty() {
            return Err(AuthError::Algorithm);
        }
        Ok(keys)
    }

    fn validation(&self, alg: Algorithm) -> Validation {
        let mut v = Validation::new(alg);
        v.set_issuer(&[&self.cfg.issuer]);
        v.set_audience(&[&self.cfg.audience]);
        v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        v.validate_exp = true;
        v.validate_nbf = true;
        v.leeway = self.cfg.leeway_s;
        v
    }

    fn caller(&self, claims: Map<String, Value>) -> Result<Caller, AuthError> {
        // RFC 7519: `iss` is one string (the library also accepts an array
        // that contains the issuer).
        if !claims.get("iss").is_some_and(Value::is_string) {
            return Err(AuthError::Issuer);
        }
        let subject = match claims.get("sub") {
            Some(Value::String(s)) if !s.is_empty() => s.clone(),
            _ => return Err(AuthError::Claims),
        };
        let expires_at = claims
            .get("exp")
            .and_then(Value::as_u64)
            .ok_or(AuthError::Claims)?;
        let tenant = claims
            .get(&self.cfg.tenant_claim)
            .and_then(Value::as_str)
            .and_then(|t| TenantId::parse(t).ok());
        let roles = match claims.get(&self.cfg.roles_claim) {
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(|r| r.as_str().map(str::to_owned))
                .collect(),
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            _ => Vec::new(),
        };
        Ok(Caller {
            subject,
            tenant,
            roles,
            expires_at,
        })
    }
}

fn map_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::Signature,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidIssuer => AuthError::Issuer,
        ErrorKind::InvalidAudience => AuthError::Audience,
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::InvalidSubject => AuthError::Claims,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::Algorithm,
        _ => AuthError::Malformed,
    }
}
