//! Keys fetched from a JWKS URL.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::JwkSet;
use tokio::sync::Mutex;

use super::keys::{Key, jwk_key};

/// Longest wait for the JWKS endpoint, at start or on a refresh.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// Keys fetched from a JWKS URL, refreshed on an unknown `kid` at most once
/// per cooldown; a failed fetch keeps the last good keys.
pub struct Jwks {
    pub url: String,
    pub http: reqwest::Client,
    pub keys: ArcSwap<HashMap<String, Key>>,
    /// When the last refresh caused by an unknown `kid` started.
    pub last_refresh: Mutex<Option<Instant>>,
    pub cooldown: Duration,
    pub fetches: std::sync::atomic::AtomicU64,
}

impl Jwks {
    pub async fn fetch(&self) -> Result<(), String> {
        self.fetches
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let resp = self
            .http
            .get(&self.url)
            .timeout(JWKS_TIMEOUT)
            .send()
            .await
            .map_err(|e| format!("JWKS fetch failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("JWKS fetch answered {}", resp.status()));
        }
        let set: JwkSet = resp
            .json()
            .await
            .map_err(|e| format!("JWKS is not a key set: {e}"))?;
        let keys: HashMap<String, Key> = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, jwk_key(jwk)?)))
            .collect();
        tracing::info!(url = %self.url, keys = keys.len(), "JWKS loaded");
        self.keys.store(Arc::new(keys));
        Ok(())
    }

    /// Refreshes after an unknown `kid`, unless one did within the cooldown.
    /// Concurrent callers wait for the one refresh in progress.
    pub async fn refresh_for_unknown_kid(&self) {
        let mut last = self.last_refresh.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.cooldown) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch().await {
            tracing::warn!(error = %e, "JWKS refresh failed; keeping the last good keys");
        }
    }
}
