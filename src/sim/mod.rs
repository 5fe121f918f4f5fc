//! In-process simulator of the Huawei Cloud CPH (Cloud Phone) and IAM APIs.
//!
//! One HTTP/1.1 server answers both the IAM token route and the CPH routes the
//! gateway uses, with Huawei's status codes and body shapes, plus a small set of
//! `/sim/v1/...` control endpoints for tests and demos. Faults (errors,
//! throttling, latency, hangs, TCP resets, IAM outages) are injected from a
//! seeded generator, so a given seed and call sequence always misbehaves the
//! same way.
//!
//! Projects are not configured: every 32-lowercase-hex project id exists and
//! owns [`SimOptions::phones_per_project`] seeded phones named by [`phone_id`].
//! Only phones that were stopped take memory.

mod control;
mod cph;
mod faults;
mod iam;
mod server;
mod state;

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::response::Response;
use axum::routing::{get, post};
use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tower::util::MapResponseLayer;

pub use faults::Faults;
use state::Shared;

/// Configuration of a simulator instance.
#[derive(Debug, Clone)]
pub struct SimOptions {
    /// Address to listen on; port 0 picks a free port (see [`Sim::addr`]).
    pub listen: SocketAddr,
    /// IAM domain name accepted by the token route.
    pub iam_domain: String,
    /// IAM user name accepted by the token route.
    pub iam_user: String,
    /// IAM password accepted by the token route.
    pub iam_password: String,
    /// Lifetime of issued tokens: `expires_at = now + token_ttl`.
    pub token_ttl: Duration,
    /// Number of seeded phones in every project.
    pub phones_per_project: u32,
    /// Largest accepted `phone_ids` list; longer ones get 400 `CPS.0001`.
    pub max_batch_size: usize,
    /// How long a stop job runs (status 1) before it succeeds (status 2).
    pub job_duration: Duration,
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
            phones_per_project: 20_000,
            max_batch_size: 500,
            job_duration: Duration::from_secs(2),
            faults: Faults::default(),
        }
    }
}

/// Power state of a simulated phone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhoneState {
    /// Never stopped.
    Running,
    /// A stop job was accepted and has not finished yet.
    Stopping,
    /// The first stop job finished.
    Stopped,
}

/// Counters of what the simulator saw and did (see [`Sim::stats`]).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct SimStats {
    /// `POST /v3/auth/tokens` requests, whatever their outcome.
    pub iam_requests: u64,
    /// Tokens handed out.
    pub tokens_issued: u64,
    /// Batch-stop requests received, whatever their outcome.
    pub batch_stop_requests: u64,
    /// Ids received in well-formed batch-stop bodies (including refused ones).
    pub batch_stop_ids: u64,
    /// Longest `phone_ids` list received.
    pub max_ids_per_call: u64,
    /// Highest number of batch-stop calls handled at once for one project,
    /// from request arrival to response or reset (latency and hangs included).
    pub max_in_flight_per_project: u64,
    /// Batch-stop calls being handled right now, all projects together
    /// (a gauge: [`Sim::reset_stats`] leaves it alone).
    pub in_flight: u64,
    /// Job queries received.
    pub job_queries: u64,
    /// 401 answers given (IAM and CPH).
    pub unauthorized: u64,
    /// Injected faults that fired (500, 503, 429, hang, reset).
    pub faults_injected: u64,
    /// Phones that went from running to stopping (each phone counts once).
    pub stopped_phones: u64,
    /// Answers of the IAM and CPH routes by HTTP status (resets give none).
    pub responses_by_status: BTreeMap<u16, u64>,
}

/// A running simulator. Serves until [`Sim::shutdown`] or until it is dropped.
pub struct Sim {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl fmt::Debug for Sim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sim")
            .field("addr", &self.addr)
            .finish_non_exhaustive()
    }
}

impl Sim {
    /// Binds `opts.listen` and serves in a background tokio task until
    /// [`Sim::shutdown`] or drop of the `Sim`.
    pub async fn start(opts: SimOptions) -> std::io::Result<Sim> {
        let listener = TcpListener::bind(opts.listen).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared::new(&opts));
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(server::serve(
            listener,
            router(Arc::clone(&shared)),
            stopped,
        ));
        tracing::debug!(%addr, "simulator started");
        Ok(Sim {
            addr,
            shared,
            stop,
            task,
        })
    }

    /// The bound address (with the real port when port 0 was asked for).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Base URL of both the IAM and the CPH API, e.g. `http://127.0.0.1:41234`.
    /// A wildcard listen address is replaced by the loopback address.
    pub fn url(&self) -> String {
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

    /// Invalidates every token issued so far (they then get 401 `APIG.0301`).
    pub fn revoke_tokens(&self) {
        self.shared.tokens.revoke_all();
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> SimStats {
        self.shared.stats.snapshot()
    }

    /// Zeroes the counters (phone and job states are kept).
    pub fn reset_stats(&self) {
        self.shared.stats.reset();
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

/// Runs the simulator until SIGINT (ctrl-c) or SIGTERM; used by the `sim` CLI command.
pub async fn run_until_signal(opts: SimOptions) -> std::io::Result<()> {
    let sim = Sim::start(opts).await?;
    tracing::info!(addr = %sim.addr(), url = %sim.url(), "CPH/IAM simulator listening");
    let signal = wait_for_signal().await;
    tracing::info!("simulator shutting down");
    sim.shutdown().await;
    signal
}

/// Resolves on the first SIGINT or SIGTERM.
async fn wait_for_signal() -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            res = tokio::signal::ctrl_c() => res,
            _ = term.recv() => Ok(()),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await
    }
}

/// The `index`-th seeded phone of a project (`0 <= index < phones_per_project`):
/// the first 8 characters of the project id followed by the index as 24 hex
/// digits, 32 lowercase hex characters in all for a well-formed project id.
pub fn phone_id(project_id: &str, index: u32) -> String {
    format!("{project_id:0<8.8}{index:024x}")
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
        .route("/v1/{project_id}/cloud-phone/jobs/{job_id}", get(cph::job))
        .layer(MapResponseLayer::new(move |res: Response| {
            counted.stats.record_status(res.status());
            res
        }))
        .merge(control::routes())
        .with_state(shared)
}

#[cfg(test)]
pub(crate) mod testutil {
    //! Helpers shared by the unit tests: a started sim and a loopback client.

    use super::*;
    use serde_json::{Value, json};

    /// A well-formed project id.
    pub const PROJECT: &str = "0123456789abcdef0123456789abcdef";
    /// Another project with a different phone prefix.
    pub const OTHER: &str = "fedcba9876543210fedcba9876543210";

    /// Options with short durations for tests.
    pub fn opts() -> SimOptions {
        SimOptions {
            phones_per_project: 100,
            job_duration: Duration::from_millis(200),
            ..SimOptions::default()
        }
    }

    /// A client that never goes through a proxy.
    pub fn client() -> reqwest::Client {
        reqwest::Client::builder().no_proxy().build().unwrap()
    }

    /// A password-auth body scoped to `project`.
    pub fn auth_body(user: &str, password: &str, project: &str) -> Value {
        json!({"auth": {
            "identity": {"methods": ["password"], "password": {"user": {
                "name": user, "password": password, "domain": {"name": "sim-domain"}}}},
            "scope": {"project": {"id": project}}}})
    }

    /// Gets a token for `project` with the default credentials.
    pub async fn token(c: &reqwest::Client, sim: &Sim, project: &str) -> String {
        let res = c
            .post(format!("{}/v3/auth/tokens", sim.url()))
            .json(&auth_body("sim-user", "sim-password", project))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        res.headers()["x-subject-token"]
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// Sends a batch-stop for `ids` in `project`.
    pub async fn stop_call(
        c: &reqwest::Client,
        sim: &Sim,
        token: &str,
        project: &str,
        ids: &[&str],
    ) -> reqwest::Result<reqwest::Response> {
        c.post(format!(
            "{}/v1/{project}/cloud-phone/phones/batch-stop",
            sim.url()
        ))
        .header("X-Auth-Token", token)
        .json(&json!({ "phone_ids": ids }))
        .send()
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::testutil::*;
    use super::*;
    use serde_json::Value;

    #[test]
    fn phone_ids_are_32_hex() {
        assert_eq!(phone_id(PROJECT, 0), "01234567000000000000000000000000");
        assert_eq!(phone_id(PROJECT, 255), "012345670000000000000000000000ff");
        assert_eq!(phone_id("ab", 1).len(), 32);
    }

    #[tokio::test]
    async fn url_and_shutdown() {
        let sim = Sim::start(opts()).await.unwrap();
        let url = sim.url();
        assert!(url.starts_with("http://127.0.0.1:"));
        let c = client();
        assert_eq!(
            c.get(format!("{url}/sim/v1/faults"))
                .send()
                .await
                .unwrap()
                .status(),
            200
        );
        sim.shutdown().await;
        assert!(
            client()
                .get(format!("{url}/sim/v1/faults"))
                .send()
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn in_flight_per_project_counts_concurrency() {
        let sim = Sim::start(SimOptions {
            faults: Faults {
                latency_ms: 200,
                ..Faults::default()
            },
            ..opts()
        })
        .await
        .unwrap();
        let c = client();
        let (a, b) = (token(&c, &sim, PROJECT).await, token(&c, &sim, OTHER).await);
        let (p0, o0) = (phone_id(PROJECT, 0), phone_id(OTHER, 0));
        let (p0, o0) = ([p0.as_str()], [o0.as_str()]);
        let calls = (0..5)
            .map(|_| stop_call(&c, &sim, &a, PROJECT, &p0))
            .chain((0..3).map(|_| stop_call(&c, &sim, &b, OTHER, &o0)));
        let probe = async {
            tokio::time::sleep(Duration::from_millis(100)).await;
            sim.stats().in_flight
        };
        let (results, in_flight) = tokio::join!(futures_util::future::join_all(calls), probe);
        assert!(results.into_iter().all(|r| r.unwrap().status() == 200));
        assert_eq!(in_flight, 8);
        let stats = sim.stats();
        assert_eq!(stats.max_in_flight_per_project, 5);
        assert_eq!(stats.in_flight, 0);
        assert_eq!(stats.batch_stop_requests, 8);
        assert_eq!(stats.stopped_phones, 2);
        assert_eq!(stats.responses_by_status[&200], 8);
    }

    #[tokio::test]
    async fn control_endpoints() {
        let sim = Sim::start(opts()).await.unwrap();
        let (c, url) = (client(), sim.url());

        let faults = Faults {
            seed: 7,
            error_429_rate: 0.5,
            retry_after_s: 3,
            ..Faults::default()
        };
        let res = c
            .put(format!("{url}/sim/v1/faults"))
            .json(&faults)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.json::<Faults>().await.unwrap(), faults);
        assert_eq!(sim.faults(), faults);
        let got: Faults = c
            .get(format!("{url}/sim/v1/faults"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(got, faults);
        for bad in [r#"{"nope":1}"#, r#"{"error_500_rate":1.5}"#, "not json"] {
            let res = c
                .put(format!("{url}/sim/v1/faults"))
                .body(bad)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 400, "{bad}");
        }
        assert_eq!(sim.faults(), faults);
        sim.set_faults(Faults::default());

        let t = token(&c, &sim, PROJECT).await;
        let p1 = phone_id(PROJECT, 1);
        assert_eq!(
            stop_call(&c, &sim, &t, PROJECT, &[&p1])
                .await
                .unwrap()
                .status(),
            200
        );

        let page: Value = c
            .get(format!(
                "{url}/sim/v1/projects/{PROJECT}/phones?offset=0&limit=3"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let states: Vec<&str> = page["phones"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["state"].as_str().unwrap())
            .collect();
        assert_eq!(states, ["running", "stopping", "running"]);
        assert_eq!(page["phones"][1]["phone_id"], p1.as_str());
        let tail: Value = c
            .get(format!(
                "{url}/sim/v1/projects/{PROJECT}/phones?offset=98&limit=50000"
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(tail["phones"].as_array().unwrap().len(), 2);

        let one: Value = c
            .get(format!("{url}/sim/v1/projects/{PROJECT}/phones/{p1}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(one["state"], "stopping");
        let missing = c
            .get(format!(
                "{url}/sim/v1/projects/{PROJECT}/phones/{}",
                phone_id(OTHER, 1)
            ))
            .send()
            .await
            .unwrap();
        assert_eq!(missing.status(), 404);

        let stats: SimStats = c
            .get(format!("{url}/sim/v1/stats"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!((stats.tokens_issued, stats.batch_stop_requests), (1, 1));
        let res = c
            .post(format!("{url}/sim/v1/stats/reset"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        assert_eq!(sim.stats().batch_stop_requests, 0);
        assert!(sim.stats().responses_by_status.is_empty());
        assert_eq!(sim.phone_state(PROJECT, &p1), Some(PhoneState::Stopping));

        let res = c
            .post(format!("{url}/sim/v1/tokens/revoke"))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 204);
        let res = stop_call(&c, &sim, &t, PROJECT, &[&p1]).await.unwrap();
        assert_eq!(res.status(), 401);
    }
}
