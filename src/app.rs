//! The gateway assembled: shared state, the two routers (caller API and
//! admin/ops), binding, serving and graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::routing::{get, post};
use governor::{DefaultKeyedRateLimiter, Quota};
use tokio::net::TcpListener;
use tower_http::catch_panic::CatchPanicLayer;

use crate::auth::Authenticator;
use crate::config::{Config, ConfigError};
use crate::cph::CphClient;
use crate::domain::TenantId;
use crate::error::{ApiError, Code};
use crate::fanout::Fanout;
use crate::iam::IamProvider;
use crate::middleware::{method_not_allowed, not_found, panic_response, request_context};
use crate::routes::{admin, health, jobs, stop};
use crate::telemetry::Metrics;
use crate::tenants::{Tenants, TenantsError};

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("tenants.file: {0}")]
    Tenants(#[from] TenantsError),
    #[error("cannot listen on {addr} ({key}): {source}")]
    Bind {
        key: &'static str,
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// Everything a request needs; immutable, shared by all requests.
pub struct AppState {
    pub config: Arc<Config>,
    pub auth: Authenticator,
    pub tenants: Arc<Tenants>,
    pub fanout: Fanout,
    pub metrics: Arc<Metrics>,
    limiter: DefaultKeyedRateLimiter<TenantId>,
    pub shutting_down: AtomicBool,
}

impl AppState {
    /// Builds the state without binding anything: validates keys and the
    /// tenants file (this is also `check-config`).
    pub fn new(config: Config) -> Result<Arc<Self>, StartError> {
        let config = Arc::new(config);
        let metrics = Arc::new(Metrics::new());
        let http = upstream_client(&config)?;
        let auth = Authenticator::new(config.auth.clone(), http.clone())?;
        let tenants = Arc::new(Tenants::open(
            config.tenants.file.clone(),
            config.iam.clone(),
        )?);
        let iam = Arc::new(IamProvider::new(
            config.iam.clone(),
            http.clone(),
            config.upstream.timeout,
            metrics.clone(),
        ));
        let cph = CphClient::new(
            http,
            config.upstream.cph_endpoint.clone(),
            config.upstream.timeout,
            metrics.clone(),
        );
        let fanout = Fanout::new(cph, iam, config.upstream.clone(), metrics.clone());
        let rate = NonZeroU32::new(config.limits.tenant_rate_per_s).unwrap_or(NonZeroU32::MIN);
        let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
        let limiter = DefaultKeyedRateLimiter::keyed(Quota::per_second(rate).allow_burst(burst));
        Ok(Arc::new(Self {
            config,
            auth,
            tenants,
            fanout,
            metrics,
            limiter,
            shutting_down: AtomicBool::new(false),
        }))
    }

    /// The tenant's stop-request rate limit (`limits.tenant_rate_per_s`,
    /// burst twice that).
    pub fn check_rate(&self, tenant: &TenantId) -> Result<(), ApiError> {
        self.limiter.check_key(tenant).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::Clock::now(self.limiter.clock()));
            let mut err = ApiError::new(
                Code::RateLimited,
                format!("rate limit of tenant {tenant} exceeded"),
            );
            err.retry_after_s = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
            err
        })
    }
}

/// The pooled client for IAM, CPH and JWKS: keep-alive, many idle
/// connections per host, Nagle off, bounded connect time.
fn upstream_client(config: &Config) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("cph-gateway/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(config.upstream.timeout.min(Duration::from_secs(3)))
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// The caller API router.
pub fn caller_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/v1/cloud-phone/phones/batch-stop",
            post(stop::stop_default).fallback(method_not_allowed),
        )
        .route(
            "/v1/{project_id}/cloud-phone/phones/batch-stop",
            post(stop::stop_in_project).fallback(method_not_allowed),
        )
        .route(
            "/v1/cloud-phone/jobs/{job_id}",
            get(jobs::job_default).fallback(method_not_allowed),
        )
        .route(
            "/v1/{project_id}/cloud-phone/jobs/{job_id}",
            get(jobs::job_in_project).fallback(method_not_allowed),
        )
        .fallback(not_found)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            request_context,
        ))
        .with_state(state)
}

/// The admin router: tenants, health, readiness, metrics.
pub fn admin_router(state: Arc<AppState>) -> Router {
    Router::new()
        .route(
            "/admin/v1/tenants",
            get(admin::list).fallback(method_not_allowed),
        )
        .route(
            "/admin/v1/tenants/{tenant}",
            get(admin::get)
                .put(admin::put)
                .delete(admin::delete)
                .fallback(method_not_allowed),
        )
        .route(
            "/admin/v1/reload",
            post(admin::reload).fallback(method_not_allowed),
        )
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .route("/openapi.json", get(health::openapi))
        .fallback(not_found)
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(axum::middleware::from_fn_with_state(
            state.metrics.clone(),
            request_context,
        ))
        .with_state(state)
}

/// A gateway bound to its two ports, ready to serve.
pub struct App {
    state: Arc<AppState>,
    listener: TcpListener,
    admin_listener: TcpListener,
    /// SIGHUP is caught from the moment the ports are bound, so an early
    /// SIGHUP cannot kill the process with the default action.
    #[cfg(unix)]
    hangup: Option<tokio::signal::unix::Signal>,
}

impl App {
    /// Builds the state and binds both ports (port 0 picks a free one).
    pub async fn build(config: Config) -> Result<App, StartError> {
        let listen = config.server.listen;
        let admin_listen = config.server.admin_listen;
        let state = AppState::new(config)?;
        state.auth.init().await;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| StartError::Bind {
                key: "server.listen",
                addr: listen,
                source,
            })?;
        let admin_listener =
            TcpListener::bind(admin_listen)
                .await
                .map_err(|source| StartError::Bind {
                    key: "server.admin_listen",
                    addr: admin_listen,
                    source,
                })?;
        Ok(App {
            state,
            listener,
            admin_listener,
            #[cfg(unix)]
            hangup: tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok(),
        })
    }

    pub fn addr(&self) -> SocketAddr {
        self.listener
            .local_addr()
            .unwrap_or_else(|_| self.state.config.server.listen)
    }
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin_listener
            .local_addr()
            .unwrap_or_else(|_| self.state.config.server.admin_listen)
    }
    pub fn port(&self) -> u16 {
        self.addr().port()
    }
    pub fn admin_port(&self) -> u16 {
        self.admin_addr().port()
    }
    pub fn state(&self) -> &Arc<AppState> {
        &self.state
    }

    /// Serves until `shutdown` completes, then stops accepting, lets
    /// requests in flight finish within `server.shutdown_grace_ms`, and
    /// returns. Also watches the tenants file and reloads it on SIGHUP.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let state = self.state;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        let caller = axum::serve(self.listener, caller_router(state.clone()))
            .with_graceful_shutdown(stopped(stop_rx.clone()))
            .into_future();
        let admin = axum::serve(self.admin_listener, admin_router(state.clone()))
            .with_graceful_shutdown(stopped(stop_rx))
            .into_future();
        let servers = tokio::spawn(async move { tokio::try_join!(caller, admin).map(|_| ()) });
        let watcher = tokio::spawn(
            state
                .tenants
                .clone()
                .watch(state.config.tenants.watch_interval),
        );
        #[cfg(unix)]
        let hup = tokio::spawn(reload_on_sighup(state.tenants.clone(), self.hangup));
        #[cfg(not(unix))]
        let hup = tokio::spawn(std::future::pending::<()>());

        shutdown.await;
        tracing::info!(
            grace_ms = state.config.server.shutdown_grace.as_millis() as u64,
            "shutting down: no new connections; finishing requests in flight"
        );
        state.shutting_down.store(true, Ordering::Release);
        let _ = stop_tx.send(true);
        watcher.abort();
        hup.abort();
        match tokio::time::timeout(state.config.server.shutdown_grace, servers).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => {
                tracing::warn!("grace period over; abandoning requests still in flight");
                Ok(())
            }
        }
    }

    /// Runs in the background until the returned handle is told to stop.
    pub fn spawn(self) -> RunningApp {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let addr = self.addr();
        let admin_addr = self.admin_addr();
        let state = self.state.clone();
        let task = tokio::spawn(self.run(async move {
            let _ = rx.await;
        }));
        RunningApp {
            addr,
            admin_addr,
            state,
            stop: Some(tx),
            task,
        }
    }
}

/// A gateway running in the background (tests, demo).
pub struct RunningApp {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub state: Arc<AppState>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl RunningApp {
    /// Stops gracefully and waits for the end.
    pub async fn shutdown(mut self) -> std::io::Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        (&mut self.task).await.map_err(std::io::Error::other)?
    }
}

impl Drop for RunningApp {
    fn drop(&mut self) {
        if self.stop.is_some() {
            self.task.abort();
        }
    }
}

#[cfg(unix)]
async fn reload_on_sighup(tenants: Arc<Tenants>, hangup: Option<tokio::signal::unix::Signal>) {
    let Some(mut hup) = hangup else {
        return;
    };
    while hup.recv().await.is_some() {
        match tenants.reload().await {
            Ok(changed) => tracing::info!(changed, "SIGHUP: tenants file re-read"),
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: tenants file rejected; the last good mapping stays")
            }
        }
    }
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
}
