//! IAM tokens issued by the simulator.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use moka::Expiry;
use moka::sync::Cache;

/// Most tokens remembered at once (the oldest are evicted first).
const MAX_TOKENS: u64 = 100_000;

/// Issued tokens, bounded, each forgotten at its expiry.
pub(crate) struct Tokens {
    cache: Cache<String, Arc<TokenInfo>>,
    /// Bumped by revocation: tokens of older epochs are invalid. (Moka's
    /// `invalidate_all` could also hide tokens issued in the same clock tick.)
    epoch: AtomicU64,
}

pub(crate) struct TokenInfo {
    project: Box<str>,
    expires: Instant,
    epoch: u64,
}

/// Expires each token at its own expiry time.
struct AtExpiry;

impl Expiry<String, Arc<TokenInfo>> for AtExpiry {
    fn expire_after_create(
        &self,
        _token: &String,
        info: &Arc<TokenInfo>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(info.expires.saturating_duration_since(created_at))
    }
}

impl Tokens {
    pub(crate) fn new() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(MAX_TOKENS)
                .expire_after(AtExpiry)
                .build(),
            epoch: AtomicU64::new(0),
        }
    }

    /// Issues a token for `project` valid for `ttl`.
    pub(crate) fn issue(&self, project: &str, ttl: Duration) -> String {
        // Real tokens are long base64 PKCS#7 blobs starting with "MII".
        let token = format!("MII{}", hex::encode(rand::random::<[u8; 32]>()));
        let info = TokenInfo {
            project: project.into(),
            expires: Instant::now() + ttl,
            epoch: self.epoch.load(Relaxed),
        };
        self.cache.insert(token.clone(), Arc::new(info));
        token
    }

    /// Whether `token` is known, unexpired, unrevoked and bound to `project`.
    pub(crate) fn is_valid(&self, token: &str, project: &str) -> bool {
        self.cache.get(token).is_some_and(|t| {
            t.epoch == self.epoch.load(Relaxed)
                && Instant::now() < t.expires
                && *t.project == *project
        })
    }

    /// Invalidates every token issued so far.
    pub(crate) fn revoke_all(&self) {
        self.epoch.fetch_add(1, Relaxed);
    }
}
