//! Keys fetched from a JWKS URL: at start, every `auth.jwks_refresh_interval_s`
//! (a `Cache-Control: max-age` on the answer wins, clamped to the same range),
//! and on an unknown `kid` at most once per cooldown. A failed fetch keeps the
//! last good keys; a key that is no longer published stops verifying at the
//! next successful fetch.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use jsonwebtoken::jwk::JwkSet;
use time::OffsetDateTime;
use tokio::sync::Mutex;
use tokio::time::Instant;

use super::keys::{Key, jwk_key};
use crate::config::JWKS_REFRESH_RANGE;
use crate::upstream::http::{describe, read_capped};

/// Longest wait for the JWKS endpoint, at start or on a refresh.
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest JWKS answer read.
const JWKS_MAX_BYTES: usize = 1024 * 1024;

/// The keys of the last good fetch.
#[derive(Default)]
pub struct KeySet {
    pub keys: HashMap<String, Key>,
    /// When they were fetched; `None` until a fetch succeeded.
    pub fetched_at: Option<OffsetDateTime>,
}

/// What `/admin/v1/status` shows of the JWKS.
#[derive(Debug, Clone)]
pub struct JwksStatus {
    pub keys: usize,
    pub fetched_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
}

pub struct Jwks {
    url: String,
    http: reqwest::Client,
    set: ArcSwap<KeySet>,
    /// Why the last fetch failed; `None` after a success.
    last_error: std::sync::Mutex<Option<String>>,
    /// When the last refresh caused by an unknown `kid` started.
    last_unknown_kid: Mutex<Option<Instant>>,
    cooldown: Duration,
    interval: Duration,
    /// When the timer fetches next; every fetch sets it.
    next_at: std::sync::Mutex<Instant>,
    fetches: AtomicU64,
}

/// The refresh period: the answer's `max-age` if it has one, else the
/// configured interval, within [`JWKS_REFRESH_RANGE`].
pub fn refresh_period(max_age: Option<u64>, interval: Duration) -> Duration {
    let secs = max_age.unwrap_or(interval.as_secs());
    Duration::from_secs(secs.clamp(*JWKS_REFRESH_RANGE.start(), *JWKS_REFRESH_RANGE.end()))
}

/// `max-age` of a `Cache-Control` value; `no-store`/`no-cache` count as 0.
pub fn max_age(cache_control: &str) -> Option<u64> {
    let mut found = None;
    for directive in cache_control.split(',').map(str::trim) {
        let lower = directive.to_ascii_lowercase();
        if let Some(v) = lower.strip_prefix("max-age=") {
            found = v.trim_matches('"').parse().ok().or(found);
        } else if lower == "no-store" || lower == "no-cache" {
            return Some(0);
        }
    }
    found
}

impl Jwks {
    pub fn new(url: String, http: reqwest::Client, interval: Duration, cooldown: Duration) -> Self {
        Self {
            url,
            http,
            set: ArcSwap::default(),
            last_error: Default::default(),
            last_unknown_kid: Mutex::new(None),
            cooldown,
            interval,
            next_at: std::sync::Mutex::new(Instant::now()),
            fetches: AtomicU64::new(0),
        }
    }

    pub fn fetches(&self) -> u64 {
        self.fetches.load(Ordering::Relaxed)
    }

    pub fn get(&self, kid: &str) -> Option<Key> {
        self.set.load().keys.get(kid).cloned()
    }

    /// Whether the key with this id is in the current set.
    pub fn has(&self, id: u64) -> bool {
        self.set.load().keys.values().any(|k| k.id == id)
    }

    /// The current keys of `alg`.
    pub fn keys_for(&self, alg: jsonwebtoken::Algorithm) -> Vec<Key> {
        let set = self.set.load();
        set.keys
            .values()
            .filter(|k| k.alg == alg)
            .cloned()
            .collect()
    }

    /// Whether no fetch has ever succeeded.
    pub fn never_fetched(&self) -> bool {
        self.set.load().fetched_at.is_none()
    }

    pub fn status(&self) -> JwksStatus {
        let set = self.set.load();
        JwksStatus {
            keys: set.keys.len(),
            fetched_at: set.fetched_at,
            last_error: self.last_error().clone(),
        }
    }

    fn last_error(&self) -> std::sync::MutexGuard<'_, Option<String>> {
        self.last_error.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn schedule(&self, after: Duration) {
        *self.next_at.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now() + after;
    }

    /// Fetches the key set now. On success it replaces the keys and the next
    /// timed fetch is one period away; on failure the last good keys stay and
    /// the next timed fetch is the shortest period away.
    pub async fn fetch(&self) -> Result<(), String> {
        self.fetches.fetch_add(1, Ordering::Relaxed);
        match self.fetch_once().await {
            Ok((keys, max_age)) => {
                let period = refresh_period(max_age, self.interval);
                tracing::info!(url = %self.url, keys = keys.len(), next_refresh_s = period.as_secs(), "JWKS loaded");
                self.set.store(Arc::new(KeySet {
                    keys,
                    fetched_at: Some(OffsetDateTime::now_utc()),
                }));
                *self.last_error() = None;
                self.schedule(period);
                Ok(())
            }
            Err(e) => {
                let e = format!("JWKS fetch from {} failed: {e}", self.url);
                *self.last_error() = Some(e.clone());
                self.schedule(refresh_period(Some(0), self.interval).min(self.interval));
                Err(e)
            }
        }
    }

    async fn fetch_once(&self) -> Result<(HashMap<String, Key>, Option<u64>), String> {
        let resp = self
            .http
            .get(&self.url)
            .timeout(JWKS_TIMEOUT)
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if !resp.status().is_success() {
            return Err(format!("answered {}", resp.status()));
        }
        let max_age = resp
            .headers()
            .get(reqwest::header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .and_then(max_age);
        let body = read_capped(resp, JWKS_MAX_BYTES).await?;
        let set: JwkSet =
            serde_json::from_slice(&body).map_err(|e| format!("not a key set: {e}"))?;
        let keys: HashMap<String, Key> = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.common.key_id.clone()?, jwk_key(jwk)?)))
            .collect();
        // An empty answer is more likely an IdP fault than the withdrawal of
        // every key at once: keep the last good keys.
        if keys.is_empty() {
            return Err("the key set holds no usable key (asymmetric, with a kid)".into());
        }
        Ok((keys, max_age))
    }

    /// Refreshes after an unknown `kid`, unless one did within the cooldown.
    /// Concurrent callers wait for the one refresh in progress.
    pub async fn refresh_for_unknown_kid(&self) {
        let mut last = self.last_unknown_kid.lock().await;
        if last.is_some_and(|t| t.elapsed() < self.cooldown) {
            return;
        }
        *last = Some(Instant::now());
        if let Err(e) = self.fetch().await {
            tracing::warn!(error = %e, "JWKS refresh failed; keeping the last good keys");
        }
    }

    /// Re-fetches the key set whenever it is due, forever.
    pub async fn refresh_on_timer(self: Arc<Self>) {
        loop {
            let at = *self.next_at.lock().unwrap_or_else(|e| e.into_inner());
            tokio::time::sleep_until(at).await;
            let due = *self.next_at.lock().unwrap_or_else(|e| e.into_inner());
            if due > Instant::now() {
                // Fetched meanwhile (an unknown kid): wait for the new time.
                continue;
            }
            if let Err(e) = self.fetch().await {
                tracing::warn!(error = %e, "JWKS refresh failed; keeping the last good keys");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn max_age_wins_within_the_range() {
        let ten_min = Duration::from_secs(600);
        assert_eq!(refresh_period(None, ten_min), ten_min);
        assert_eq!(refresh_period(Some(120), ten_min).as_secs(), 120);
        assert_eq!(refresh_period(Some(5), ten_min).as_secs(), 60);
        assert_eq!(refresh_period(Some(u64::MAX), ten_min).as_secs(), 86_400);
        assert_eq!(max_age("public, max-age=300"), Some(300));
        assert_eq!(max_age("Max-Age=30, must-revalidate"), Some(30));
        assert_eq!(max_age("no-store"), Some(0));
        assert_eq!(max_age("public"), None);
        assert_eq!(max_age("max-age=soon"), None);
    }
}
