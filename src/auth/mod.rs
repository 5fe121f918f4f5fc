//! Caller authentication: JWT verification against the configured key sources
//! (HS256 secrets, RS256/ES256 PEM public keys, JWKS), with a bounded cache of
//! verified tokens. A cached token is only served while the key that verified
//! it is still configured (JWKS refreshed, HS256 secret rotated); admin tokens
//! must come from an asymmetric key unless `auth.allow_hs256_admin`.
//!
//! The algorithm always comes from the key, never from the token: a token is
//! checked only against keys whose algorithm equals the token's `alg`, so an
//! HS256 token "signed" with an RSA public key never meets an RSA key.

mod claims;
mod jwks;
mod keys;
mod mint;

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, Validation, errors::ErrorKind};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::config::{AuthConfig, ConfigError};
use crate::domain::TenantId;
use jwks::Jwks;
use keys::{Key, hs256_keys, is_asymmetric, pem_key};

pub use jwks::JwksStatus;
pub use mint::mint_hs256;

/// Who is calling, read from a verified JWT.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The JWT `sub`.
    pub subject: Arc<str>,
    /// The tenant claim; `None` when absent or not a valid tenant name.
    pub tenant: Option<TenantId>,
    pub roles: Vec<String>,
    /// `exp` as seconds since the epoch.
    pub expires_at: u64,
    /// Whether the token was signed with an asymmetric key (RS256, ES256,
    /// EdDSA, ...), not an HS256 shared secret.
    pub asymmetric_key: bool,
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
    #[error("a claim appears twice")]
    DuplicateClaim,
    #[error("token issued in the future (iat)")]
    IssuedInFuture,
    #[error("token lifetime (exp - iat, or exp - now) over auth.max_token_lifetime_s")]
    Lifetime,
    #[error("the token's key is unknown: no key set could be fetched from auth.jwks_url yet")]
    KeysUnavailable,
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
            AuthError::DuplicateClaim => "duplicate_claim",
            AuthError::IssuedInFuture => "issued_in_future",
            AuthError::Lifetime => "lifetime",
            AuthError::KeysUnavailable => "jwks_unavailable",
        }
    }
}

/// Verifies caller JWTs.
pub struct Authenticator {
    cfg: AuthConfig,
    /// Keys from PEM files (they never change).
    pem_keys: Vec<Key>,
    jwks: Option<Arc<Jwks>>,
    /// Verified tokens by SHA-256 of the token, until their `exp`, with the
    /// id of the key that verified them.
    verified: moka::sync::Cache<[u8; 32], Verified>,
    /// The key ids of the HS256 secrets' values seen last (a value's id is
    /// a SHA-256 of it: worked out once per value, not per request).
    hs256_ids: std::sync::Mutex<Vec<(Arc<secrecy::SecretString>, u64)>>,
}

#[derive(Clone)]
struct Verified {
    caller: Arc<Caller>,
    key: u64,
}

struct ExpireAtExp;

impl moka::Expiry<[u8; 32], Verified> for ExpireAtExp {
    fn expire_after_create(&self, _: &[u8; 32], v: &Verified, _: Instant) -> Option<Duration> {
        Some(Duration::from_secs(
            v.caller.expires_at.saturating_sub(now_s()),
        ))
    }
}

fn now_s() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

impl Authenticator {
    /// Builds the key set; fails (naming the key) on an unusable PEM file.
    pub fn new(cfg: AuthConfig, http: reqwest::Client) -> Result<Self, ConfigError> {
        let mut pem_keys = Vec::new();
        for (i, (path, pem)) in cfg.public_keys.iter().enumerate() {
            let key = pem_key(pem).ok_or_else(|| {
                ConfigError::new(
                    format!("auth.public_key_files[{i}]"),
                    format!("{} is not an RSA or EC public key in PEM", path.display()),
                )
            })?;
            pem_keys.push(key);
        }
        let jwks = cfg.jwks_url.clone().map(|url| {
            Arc::new(Jwks::new(
                url,
                http,
                cfg.jwks_refresh_interval,
                cfg.jwks_refresh_cooldown,
            ))
        });
        let verified = moka::sync::Cache::builder()
            .max_capacity(cfg.verified_token_cache)
            .expire_after(ExpireAtExp)
            .build();
        Ok(Self {
            cfg,
            pem_keys,
            jwks,
            verified,
            hs256_ids: std::sync::Mutex::default(),
        })
    }

    /// Loads the JWKS, if one is configured. A failure is logged, not fatal:
    /// keys are fetched again on the first unknown `kid` and on the timer.
    pub async fn init(&self) {
        if let Some(jwks) = &self.jwks
            && let Err(e) = jwks.fetch().await
        {
            tracing::warn!(error = %e, "initial JWKS fetch failed");
        }
    }

    /// The task that re-fetches the JWKS when it is due (none without a
    /// JWKS URL).
    pub fn jwks_refresher(&self) -> Option<impl Future<Output = ()> + Send + 'static> {
        self.jwks.clone().map(Jwks::refresh_on_timer)
    }

    /// Fetches the JWKS now (`check-config --online`).
    pub async fn fetch_jwks(&self) -> Option<Result<usize, String>> {
        let jwks = self.jwks.as_ref()?;
        Some(jwks.fetch().await.map(|()| jwks.status().keys))
    }

    /// How many times the JWKS was fetched (for tests and metrics).
    pub fn jwks_fetches(&self) -> u64 {
        self.jwks.as_ref().map_or(0, |j| j.fetches())
    }

    /// The JWKS state, if one is configured.
    pub fn jwks_status(&self) -> Option<JwksStatus> {
        self.jwks.as_ref().map(|j| j.status())
    }

    /// The admin role check: the role, and an asymmetric key unless
    /// `auth.allow_hs256_admin`.
    pub fn admin_check(&self, caller: &Caller) -> Result<(), String> {
        if !caller.has_role(&self.cfg.admin_role) {
            return Err(format!("the {} role is required", self.cfg.admin_role));
        }
        if !caller.asymmetric_key && !self.cfg.allow_hs256_admin {
            return Err("admin tokens must be signed with an asymmetric key (RS256, ES256, EdDSA); HS256 admin tokens are refused unless auth.allow_hs256_admin = true".into());
        }
        Ok(())
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
        if let Some(v) = self.verified.get(&digest) {
            // The cache entry expires at `exp`; a token past `exp + leeway`
            // can still be found between expiry and eviction, so check. A
            // token whose key is gone (withdrawn from the JWKS, a rotated
            // HS256 secret) is verified again, and then refused.
            if v.caller.expires_at.saturating_add(self.cfg.leeway_s) >= now_s()
                && self.key_is_live(v.key)
            {
                return Ok(v.caller);
            }
            self.verified.invalidate(&digest);
        }
        let (caller, key) = self.verify_uncached(token).await?;
        let caller = Arc::new(caller);
        self.verified.insert(
            digest,
            Verified {
                caller: caller.clone(),
                key,
            },
        );
        Ok(caller)
    }

    /// Whether the key with this id still verifies tokens.
    fn key_is_live(&self, id: u64) -> bool {
        self.pem_keys.iter().any(|k| k.id == id)
            || self.jwks.as_ref().is_some_and(|j| j.has(id))
            || self.hs256_key_is_live(id)
    }

    /// Whether `id` is the key id of an HS256 secret's current value.
    fn hs256_key_is_live(&self, id: u64) -> bool {
        let secrets = [&self.cfg.hs256_secret, &self.cfg.hs256_previous_secret];
        let mut known = self.hs256_ids.lock().unwrap_or_else(|e| e.into_inner());
        secrets.into_iter().flatten().any(|secret| {
            let value = secret.current();
            let found = known.iter().find(|(v, _)| Arc::ptr_eq(v, &value));
            let value_id = match found {
                Some((_, value_id)) => *value_id,
                None => {
                    let value_id = keys::hs256_id(value.expose_secret().as_bytes());
                    // Two secrets, each replaced now and then: a few entries.
                    if known.len() >= 4 {
                        known.remove(0);
                    }
                    known.push((value, value_id));
                    value_id
                }
            };
            value_id == id
        })
    }

    fn hs256_keys(&self) -> Vec<Key> {
        let secrets = [&self.cfg.hs256_secret, &self.cfg.hs256_previous_secret];
        hs256_keys(secrets.into_iter().flatten().map(|s| &**s))
    }

    async fn verify_uncached(&self, token: &str) -> Result<(Caller, u64), AuthError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| AuthError::Malformed)?;
        let candidates = self.candidates(header.alg, header.kid.as_deref()).await?;
        let mut last = AuthError::Signature;
        for key in &candidates {
            match jsonwebtoken::decode::<serde::de::IgnoredAny>(
                token,
                &key.key,
                &self.validation(key.alg),
            ) {
                Ok(_) => {
                    let claims = claims::parse(token)?;
                    let caller = claims::caller(&self.cfg, &claims, now_s(), key.is_asymmetric())?;
                    return Ok((caller, key.id));
                }
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
            let mut key = jwks.get(kid);
            if key.is_none() {
                jwks.refresh_for_unknown_kid().await;
                key = jwks.get(kid);
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
        let mut keys: Vec<Key> = if alg == Algorithm::HS256 {
            self.hs256_keys()
        } else {
            self.pem_keys
                .iter()
                .filter(|k| k.alg == alg)
                .cloned()
                .collect()
        };
        if keys.is_empty()
            && let Some(jwks) = &self.jwks
        {
            // Only a JWKS could have the key: say so if none was ever had.
            if is_asymmetric(alg) && jwks.never_fetched() {
                return Err(AuthError::KeysUnavailable);
            }
            if kid.is_some() {
                return Err(AuthError::UnknownKey);
            }
            keys.extend(jwks.keys_for(alg));
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
