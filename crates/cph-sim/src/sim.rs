//! The simulator handle: start, control, shut down; and its routes.

use std::fmt;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::response::Response;
use axum::routing::{get, post};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::util::MapResponseLayer;

use crate::faults::Faults;
use crate::options::{AkSkCredential, SimOptions};
use crate::state::Shared;
use crate::stats::SimStats;
use crate::store::PhoneState;
use crate::{control, cph, iam, jobs, server, tls};

/// A running simulator. Serves until [`Sim::shutdown`] or until it is dropped.
pub struct Sim {
    addr: SocketAddr,
    https: bool,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("addr", &self.addr)
            .field("https", &self.https)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// Binds `opts.listen` and serves in a background tokio task until
    /// [`Sim::shutdown`] or drop of the `Sim`. Fails with `InvalidInput` if
    /// `opts.tls` does not hold a usable certificate and key.
    pub async fn start(opts: SimOptions) -> std::io::Result<Sim> {
        let acceptor = opts.tls.as_ref().map(tls::acceptor).transpose()?;
        let listener = TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let https = acceptor.is_some();
        let shared = Arc::new(Shared::new(&opts));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(server::serve(
            listener,
            router(Arc::clone(&shared)),
            acceptor,
            stopped,
        ));
        tracing::debug!(%addr, https, "simulator started");
        Ok(Sim {
            addr,
            https,
            shared,
            stop,
            task,
        })
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of both the IAM and the CPH API. Plain HTTP:
    /// `http://127.0.0.1:41234` (a wildcard listen address is replaced by the
    /// loopback address). HTTPS: `https://localhost:41234`, so that a
    /// certificate for `localhost` verifies.
    pub fn url(&self) -> String {
        if self.https {
            return format!("https://localhost:{}", self.addr.port());
        }
        let ip = match self.addr.ip() {
            IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
            ip => ip,
        };
        format!("http://{}", SocketAddr::new(ip, self.addr.port()))
    }

    /// Replaces the active faults and re-seeds the fault generator.
    pub fn set_faults(&self, faults: Faults) {
        self.shared.faults.set(faults);
    }

    /// The active faults.
    pub fn faults(&self) -> Faults {
        self.shared.faults.get()
    }

    /// Changes the IAM password the token route accepts (the old one is
    /// refused from now on; tokens already issued stay valid, as with IAM).
    pub fn set_iam_password(&self, password: &str) {
        *crate::util::lock(&self.shared.cfg.iam_password) = password.to_owned();
    }

    /// Invalidates every token issued so far (they then get 401 `APIG.0301`).
    pub fn revoke_tokens(&self) {
        self.shared.tokens.revoke_all();
    }

    /// Replaces the AK/SK credentials the CPH routes accept (a key
    /// rotation: calls signed with a key no longer listed get 401 `APIGW.0301`).
    pub fn set_aksk(&self, credentials: Vec<AkSkCredential>) {
        *crate::util::lock(&self.shared.cfg.aksk) = crate::state::by_access_key(&credentials);
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.shared.stats.snapshot()
    }

    /// Zeroes the counters (phone and job states are kept).
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
    }

    /// Starts every phone again, as an operator would after a stop: each is
    /// running (status 2) and can be stopped anew. Jobs are kept.
    pub fn start_phones(&self) {
        crate::util::lock(&self.shared.store).start_all();
    }

    /// State of a seeded phone; `None` if `phone_id` is not a phone of `project_id`.
    pub fn phone_state(&self, project_id: &str, phone_id: &str) -> Option<PhoneState> {
        self.shared.phone_state(project_id, phone_id)
    }

    /// Stops accepting, lets in-flight requests finish (for at most a second),
    /// then ends the background tasks.
    pub async fn shutdown(self) {
        // An error only means the server task is already gone.
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "simulator task failed");
        }
    }
}

/// Runs the simulator until `shutdown` resolves (the `sim` CLI command passes
/// its signal future), then shuts it down.
pub async fn run(opts: SimOptions, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let sim = Sim::start(opts).await?;
    tracing::info!(addr = %sim.addr(), url = %sim.url(), "CPH/IAM simulator listening");
    shutdown.await;
    tracing::info!("simulator shutting down");
    sim.shutdown().await;
    Ok(())
}

/// All routes. The IAM and CPH ones are wrapped to count answers by status;
/// the control ones are not, so that polling them leaves the stats alone.
fn router(shared: Arc<Shared>) -> Router {
    let counted = Arc::clone(&shared);
    Router::new()
        .route("/v3/auth/tokens", post(iam::issue_token))
        .route(
            "/v1/{project_id}/cloud-phone/phones/batch-stop",
            post(cph::batch_stop),
        )
        .route(
            "/v1/{project_id}/cloud-phone/phones/{phone_id}",
            get(jobs::phone),
        )
        .route("/v1/{project_id}/cloud-phone/jobs", get(jobs::job_list))
        .route("/v1/{project_id}/cloud-phone/jobs/{job_id}", get(jobs::job))
        .layer(MapResponseLayer::new(move |res: Response| {
            counted.stats.record_status(res.status());
            res
        }))
        .merge(control::routes())
        .with_state(shared)
}
