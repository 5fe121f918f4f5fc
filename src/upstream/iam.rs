//! Project-scoped IAM tokens: one per project, cached (moka) until shortly
//! before they expire, fetched once for any number of concurrent misses
//! (single-flight), renewed in the background while the current one is still
//! served, dropped when CPH rejects it, and not hammered when IAM is down.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use super::credential_state::CredentialStates;
use super::http::{describe, iam_error, read_capped};
use super::retry::Backoff;
use crate::config::{Credential, IamConfig};
use crate::domain::{ProjectId, Region};
use crate::telemetry::Metrics;
use crate::tenants::Project;

/// A project-scoped token. `Debug` never shows the token.
#[derive(Debug)]
pub struct IamToken {
    pub value: SecretString,
    /// When the gateway stops using it (a margin before IAM's `expires_at`).
    pub usable_until: Instant,
    /// When a background renewal starts.
    pub renew_at: Instant,
    pub fetched_at: Instant,
    renewing: AtomicBool,
}

/// No token could be had: IAM refused, failed or is backing off.
#[derive(Debug, Clone, thiserror::Error)]
#[error("no IAM token for project {project}: {reason}")]
pub struct IamError {
    pub project: ProjectId,
    pub reason: String,
}

/// What a token is cached under: the project and everything its token
/// depends on, so that an admin change of region or credential takes effect
/// for the next request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    pub project: ProjectId,
    pub region: Region,
    pub credential: Arc<str>,
}

impl TokenKey {
    fn of(p: &Project) -> Self {
        Self {
            project: p.id.clone(),
            region: p.region.clone(),
            credential: p.credential.clone(),
        }
    }
}

#[derive(Debug, Clone)]
struct FailedFetches {
    until: Instant,
    failures: u32,
    /// Why the last fetch failed (repeated to callers while backing off).
    reason: String,
}

/// Hands out IAM tokens per project.
pub struct IamProvider {
    http: reqwest::Client,
    cfg: IamConfig,
    timeout: Duration,
    cache: moka::future::Cache<TokenKey, Arc<IamToken>>,
    backoff: std::sync::Mutex<HashMap<TokenKey, FailedFetches>>,
    metrics: Arc<Metrics>,
    states: Arc<CredentialStates>,
    /// The largest token answer read.
    max_token_body: usize,
}

struct UntilUnusable;

impl moka::Expiry<TokenKey, Arc<IamToken>> for UntilUnusable {
    fn expire_after_create(
        &self,
        _: &TokenKey,
        t: &Arc<IamToken>,
        now: Instant,
    ) -> Option<Duration> {
        Some(t.usable_until.saturating_duration_since(now))
    }
    // A renewed token replaces the old one with its own deadline (moka keeps
    // the old deadline by default).
    fn expire_after_update(
        &self,
        _: &TokenKey,
        t: &Arc<IamToken>,
        now: Instant,
        _: Option<Duration>,
    ) -> Option<Duration> {
        Some(t.usable_until.saturating_duration_since(now))
    }
}

#[derive(Deserialize)]
struct TokenBody {
    token: TokenInfo,
}

#[derive(Deserialize)]
struct TokenInfo {
    expires_at: String,
}

/// The largest IAM error answer read (for its code and message).
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The largest IAM token answer read (its catalog can be long).
const MAX_TOKEN_BODY: usize = 4 * 1024 * 1024;

/// After a failed fetch, the next one waits 0.5 s doubling to 30 s, with
/// jitter between half and the whole of that.
const FETCH_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(250),
    max: Duration::from_secs(30),
    floor: 0.5,
};

impl IamProvider {
    pub fn new(
        cfg: IamConfig,
        http: reqwest::Client,
        timeout: Duration,
        metrics: Arc<Metrics>,
        states: Arc<CredentialStates>,
    ) -> Self {
        let cache = moka::future::Cache::builder()
            .max_capacity(10_000)
            .expire_after(UntilUnusable)
            .build();
        Self {
            http,
            cfg,
            timeout,
            cache,
            backoff: Default::default(),
            metrics,
            states,
            max_token_body: MAX_TOKEN_BODY,
        }
    }

    /// Reads token answers of at most `max_bytes` (`upstream.max_response_bytes`,
    /// never more than [`MAX_TOKEN_BODY`]).
    pub fn limit_responses(mut self, max_bytes: usize) -> Self {
        self.max_token_body = MAX_TOKEN_BODY.min(max_bytes);
        self
    }

    /// Fetches a token for `project` now, uncached (`check-config --online`).
    pub async fn probe(&self, project: &Project) -> Result<(), IamError> {
        self.fetch(project).await.map(|_| ())
    }

    /// A usable token for the project: cached, or fetched once for all
    /// concurrent callers. Starts a background renewal when the cached one is
    /// due, and keeps serving it meanwhile.
    pub async fn token(
        self: &Arc<Self>,
        project: &Arc<Project>,
    ) -> Result<Arc<IamToken>, IamError> {
        let key = TokenKey::of(project);
        if let Some(t) = self.cache.get(&key).await {
            if t.renew_at <= Instant::now()
                && self.backoff_left(&key).is_none()
                && !t.renewing.swap(true, Ordering::AcqRel)
            {
                let this = self.clone();
                let project = project.clone();
                let old = t.clone();
                let key = key.clone();
                tokio::spawn(async move {
                    match this.fetch(&project).await {
                        Ok(new) => this.cache.insert(key, Arc::new(new)).await,
                        // The old token stays in use until it is unusable.
                        Err(_) => old.renewing.store(false, Ordering::Release),
                    }
                });
            }
            return Ok(t);
        }
        if let Some((left, reason)) = self.backoff_left(&key) {
            return Err(IamError {
                project: project.id.clone(),
                reason: format!("{reason} (next attempt in {} ms)", left.as_millis()),
            });
        }
        // Boxed: a fetch is the rare path, and its future (an HTTP call)
        // would otherwise be most of every upstream call's.
        Box::pin(
            self.cache
                .try_get_with(key, async { self.fetch(project).await.map(Arc::new) }),
        )
        .await
        .map_err(|e| (*e).clone())
    }

    /// Drops `stale` after CPH rejected it, unless it was already replaced.
    pub async fn invalidate(&self, project: &Project, stale: &Arc<IamToken>) {
        use moka::ops::compute::Op;
        self.cache
            .entry(TokenKey::of(project))
            .and_compute_with(|entry| {
                let op = match entry {
                    Some(e) if Arc::ptr_eq(e.value(), stale) => Op::Remove,
                    _ => Op::Nop,
                };
                std::future::ready(op)
            })
            .await;
    }

    /// Age of each cached token, for the metrics endpoint.
    pub fn token_ages(&self) -> Vec<(ProjectId, Duration)> {
        self.cache
            .iter()
            .map(|(k, v)| (k.project.clone(), v.fetched_at.elapsed()))
            .collect()
    }

    /// How long the project still backs off after a failed fetch, and why
    /// that fetch failed.
    fn backoff_left(&self, key: &TokenKey) -> Option<(Duration, String)> {
        let map = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let b = map.get(key)?;
        let left = b.until.checked_duration_since(Instant::now())?;
        Some((left, b.reason.clone()))
    }

    fn record(&self, key: TokenKey, result: Result<(), &str>) {
        let mut map = self.backoff.lock().unwrap_or_else(|e| e.into_inner());
        let Err(reason) = result else {
            map.remove(&key);
            return;
        };
        let failures = map.get(&key).map_or(0, |b| b.failures) + 1;
        let wait = FETCH_BACKOFF.delay(failures);
        map.insert(
            key,
            FailedFetches {
                until: Instant::now() + wait,
                failures,
                reason: reason.to_owned(),
            },
        );
    }

    async fn fetch(&self, project: &Project) -> Result<IamToken, IamError> {
        let started = Instant::now();
        let result = self.fetch_once(project).await;
        let outcome = result.as_ref().map(|_| ()).map_err(|e| e.reason.as_str());
        self.record(TokenKey::of(project), outcome);
        self.states.record(&project.credential, outcome);
        let label = if result.is_ok() { "success" } else { "failure" };
        self.metrics.iam_fetch(label);
        match &result {
            Ok(_) => tracing::info!(
                project = %project.id,
                latency_ms = started.elapsed().as_millis() as u64,
                "IAM token fetched"
            ),
            Err(e) => {
                tracing::warn!(project = %project.id, error = %e.reason, "IAM token fetch failed")
            }
        }
        result
    }

    async fn fetch_once(&self, project: &Project) -> Result<IamToken, IamError> {
        let fail = |reason: String| IamError {
            project: project.id.clone(),
            reason: format!(
                "credential {:?} (region {}): {reason}",
                &*project.credential,
                project.region.as_str()
            ),
        };
        let cred = self
            .cfg
            .credentials
            .get(&*project.credential)
            .ok_or_else(|| fail(format!("no credential named {:?}", project.credential)))?;
        let Credential::Password(cred) = &**cred else {
            return Err(fail(format!(
                "credential {:?} is an AK/SK credential: its calls are signed, not made with IAM tokens",
                project.credential
            )));
        };
        let url = format!("{}/v3/auth/tokens", project.region.fill(&self.cfg.endpoint));
        let body = json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": cred.user,
                "password": cred.password.current().expose_secret(),
                "domain": {"name": cred.domain},
            }}},
            "scope": {"project": {"id": project.id.as_str()}},
        }});
        let resp = self
            .http
            .post(&url)
            .timeout(self.timeout)
            .json(&body)
            .send()
            .await
            .map_err(|e| fail(format!("IAM unreachable: {}", describe(&e))))?;
        let status = resp.status();
        if status != reqwest::StatusCode::CREATED {
            let body = read_capped(resp, MAX_ERROR_BODY).await.unwrap_or_default();
            return Err(fail(format!("IAM answered {status}{}", iam_error(&body))));
        }
        let value = resp
            .headers()
            .get("x-subject-token")
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(|v| SecretString::from(v.to_owned()))
            .ok_or_else(|| fail("IAM answer has no X-Subject-Token".into()))?;
        let body = read_capped(resp, self.max_token_body)
            .await
            .map_err(|e| fail(format!("IAM answer unreadable: {e}")))?;
        let body: TokenBody = serde_json::from_slice(&body)
            .map_err(|e| fail(format!("IAM answer unreadable: {e}")))?;
        let expires_at = OffsetDateTime::parse(&body.token.expires_at, &Rfc3339).map_err(|_| {
            fail(format!(
                "IAM expires_at {:?} is not RFC 3339",
                body.token.expires_at
            ))
        })?;
        let now = Instant::now();
        let lifetime =
            Duration::try_from(expires_at - OffsetDateTime::now_utc()).unwrap_or_default();
        if lifetime.is_zero() {
            return Err(fail("IAM issued a token that has already expired".into()));
        }
        // Stop using a token a little before it expires, so that none expires
        // in flight; renew `refresh_before_expiry` before, but never in the
        // first half of its life.
        let margin = (lifetime / 10).min(Duration::from_secs(60));
        let renew_before = self.cfg.refresh_before_expiry.min(lifetime / 2);
        Ok(IamToken {
            value,
            usable_until: now + lifetime - margin,
            renew_at: now + lifetime - renew_before,
            fetched_at: now,
            renewing: AtomicBool::new(false),
        })
    }
}
