//! What every handler runs on: the gateway's parts, built once from the
//! config. Handlers import this module, never the router or the server.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use governor::{DefaultKeyedRateLimiter, Quota};

use super::admission::Admission;
use crate::auth::Authenticator;
use crate::config::{Config, ConfigError};
use crate::domain::{ApiError, Code, TenantId};
use crate::stop::Stops;
use crate::store::memory::MemoryStore;
use crate::store::postgres::PgStore;
use crate::store::{Retention, Store, StoreError};
use crate::telemetry::Metrics;
use crate::tenants::{Source, Tenants, TenantsError};
use crate::upstream::Upstream;

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("tenants.file: {0}")]
    Tenants(#[from] TenantsError),
    #[error("store: {0}")]
    Store(#[from] StoreError),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: std::net::SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Everything a request needs; shared by all requests.
pub struct AppState {
    pub config: Arc<Config>,
    pub auth: Authenticator,
    pub tenants: Arc<Tenants>,
    /// Tenants, audit (and what else replicas share).
    pub store: Arc<dyn Store>,
    pub upstream: Arc<Upstream>,
    pub stops: Stops,
    pub metrics: Arc<Metrics>,
    pub admission: Admission,
    limiter: DefaultKeyedRateLimiter<TenantId>,
    pub shutting_down: AtomicBool,
}

impl AppState {
    /// Builds the state without binding anything: validates keys and the
    /// tenants file (this is also `check-config`).
    pub fn new(config: Config) -> Result<Arc<Self>, StartError> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        let http = crate::upstream::http::client(&config.upstream)?;
        let auth = Authenticator::new(config.auth.clone(), http.clone())?;
        let retention = Retention::of(&config);
        let (store, tenants) = match &config.store.url {
            // A fleet: the mapping comes from PostgreSQL once it answers
            // (`tenants::sync`); until then the replica is not ready.
            Some(url) => {
                let store: Arc<dyn Store> = Arc::new(PgStore::new(url.clone(), retention)?);
                (store, Tenants::new(Source::Postgres, config.iam.clone()))
            }
            // Alone: the tenants file, read now (a bad file stops the start).
            None => {
                let (store, snapshot) =
                    MemoryStore::open(config.tenants.file.clone(), config.iam.clone(), retention)?;
                let tenants = Tenants::new(Source::File, config.iam.clone());
                tenants
                    .apply(snapshot.revision, snapshot.file)
                    .map_err(StoreError::Invalid)?;
                (Arc::new(store) as Arc<dyn Store>, tenants)
            }
        };
        let tenants = Arc::new(tenants);
        let upstream = Arc::new(Upstream::new(
            http,
            config.upstream.clone(),
            config.iam.clone(),
            metrics.clone(),
        ));
        let stops = Stops::new(
            upstream.clone(),
            store.clone(),
            metrics.clone(),
            config.limits.request_timeout,
        );
        let rate = NonZeroU32::new(config.limits.tenant_rate_per_s).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        let limiter = DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst));
        let admission = Admission::new(&config.limits, metrics.clone());
        Ok(Arc::new(Self {
            admission,
            config,
            auth,
            tenants,
            store,
            upstream,
            stops,
            metrics,
            limiter,
            shutting_down: AtomicBool::new(false),
        }))
    }

    /// The tenant's request rate limit (`limits.tenant_rate_per_s`, burst
    /// twice that).
    pub fn check_rate(&self, tenant: &TenantId) -> Result<(), ApiError> {
        self.limiter.check_key(tenant).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(self.limiter.clock()));
            ApiError::new(
                Code::RateLimited,
                format!("rate limit of tenant {tenant} exceeded"),
            )
            .retry_after(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
    }
}
