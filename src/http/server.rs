//! The gateway running: both listeners bound, served, the tenants source
//! watched, and a graceful shutdown.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::net::TcpListener;

use super::conn::ConnTimeouts;
use super::listener::{self, ListenerLimits};
use super::router;
use super::shards::Shards;
use super::state::{AppState, StartError};
use super::tls::{self, ReloadingTls};
use crate::config::Config;
use crate::tenants::{Source, sync};

/// A gateway bound to its two ports, ready to serve.
pub struct App {
    state: Arc<AppState>,
    listener: TcpListener,
    admin_listener: TcpListener,
    /// TLS on the caller listener, when configured.
    tls: Option<Arc<ReloadingTls>>,
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
        // Connections beyond the limit wait in the backlog (CONTRACT.md):
        // it holds as many.
        let backlog = config.server.max_connections;
        let tls = match config.server.tls.clone() {
            Some(files) => Some(Arc::new(ReloadingTls::load(files)?)),
            None => None,
        };
        let state = AppState::new(config)?;
        state.auth.init().await;
        let listener = listener::bind(listen, backlog).map_err(|source| StartError::Bind {
            key: "server.listen",
            addr: listen,
            source,
        })?;
        let admin_listener =
            listener::bind(admin_listen, backlog).map_err(|source| StartError::Bind {
                key: "server.admin_listen",
                addr: admin_listen,
                source,
            })?;
        Ok(App {
            state,
            listener,
            admin_listener,
            tls,
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
        let server = &state.config.server;
        let timeouts = ConnTimeouts {
            header_read: server.header_read_timeout,
            idle: server.idle_timeout,
        };
        let (caller_limit, admin_limit) =
            listener::split_connections(server.max_connections, listener::fd_limit());
        if caller_limit < server.max_connections || admin_limit < server.max_connections {
            tracing::warn!(
                max_connections = server.max_connections,
                caller = caller_limit,
                admin = admin_limit,
                "server.max_connections is more than the file descriptor limit allows; serving fewer connections per listener"
            );
        }
        let shards = Arc::new(Shards::start(crate::config::serving_threads()).await?);
        let _stop_shards = StopShards(shards.clone());
        // TLS (when configured) is handshaken in each connection's task,
        // within the listener's connection limit.
        let tls_watcher = self.tls.clone().map(|t| tokio::spawn(tls::watch(t)));
        let caller = listener::serve(
            "server.listen",
            self.listener,
            Arc::new(router::caller(state.clone())),
            ListenerLimits {
                max_connections: caller_limit,
                timeouts,
            },
            self.tls,
            Some(shards),
            stop_rx.clone(),
        );
        let admin = listener::serve(
            "server.admin_listen",
            self.admin_listener,
            Arc::new(router::admin(state.clone()).into()),
            ListenerLimits {
                max_connections: admin_limit,
                timeouts,
            },
            None,
            None,
            stop_rx,
        );
        let servers = tokio::spawn(async move { tokio::try_join!(caller, admin).map(|_| ()) });
        let watcher = tokio::spawn(sync::run(
            state.store.clone(),
            state.tenants.clone(),
            state.config.tenants.watch_interval,
        ));
        let secrets = tokio::spawn(watch_secrets(state.config.clone()));
        let jwks = state.auth.jwks_refresher().map(tokio::spawn);
        #[cfg(unix)]
        let hup = tokio::spawn(reload_on_sighup(state.clone(), self.hangup));
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
        secrets.abort();
        if let Some(w) = tls_watcher {
            w.abort();
        }
        if let Some(jwks) = jwks {
            jwks.abort();
        }
        hup.abort();
        let grace = tokio::time::Instant::now() + state.config.server.shutdown_grace;
        let result = match tokio::time::timeout_at(grace, servers).await {
            Ok(Ok(result)) => result,
            Ok(Err(join)) => Err(std::io::Error::other(join)),
            Err(_) => {
                tracing::warn!("grace period over; abandoning requests still in flight");
                Ok(())
            }
        };
        // Stop records still queued are written (within what is left of
        // the grace period, and at least a moment).
        let until = grace.max(tokio::time::Instant::now() + Duration::from_millis(500));
        if tokio::time::timeout_at(until, state.stops.flush_records())
            .await
            .is_err()
        {
            tracing::warn!("stop records still queued at exit were not written");
        }
        result
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

/// Ends the serving threads when the gateway's run ends (or is dropped),
/// after the stop records are flushed: tasks the requests left there may
/// write them.
struct StopShards(Arc<Shards>);

impl Drop for StopShards {
    fn drop(&mut self) {
        self.0.stop();
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
async fn reload_on_sighup(state: Arc<AppState>, hangup: Option<tokio::signal::unix::Signal>) {
    let Some(mut hup) = hangup else {
        return;
    };
    while hup.recv().await.is_some() {
        let file = state.tenants.source() == Source::File;
        match sync::refresh(state.store.as_ref(), &state.tenants, true).await {
            Ok(changed) if file => tracing::info!(changed, "SIGHUP: tenants file re-read"),
            Ok(changed) => tracing::info!(changed, "SIGHUP: tenants re-read from the store"),
            Err(e) if file => {
                tracing::error!(error = %e, "SIGHUP: tenants file rejected; the last good mapping stays")
            }
            Err(e) => {
                tracing::error!(error = %e, "SIGHUP: tenants from the store rejected; the last good mapping stays")
            }
        }
    }
}

/// How often secret files are checked for a change.
const SECRET_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Re-reads secret files when they change (a rotated IAM password takes
/// effect without a restart); the file system is touched off the async
/// threads.
async fn watch_secrets(config: Arc<Config>) {
    if config.file_secrets().is_empty() {
        return;
    }
    let mut tick = tokio::time::interval(SECRET_POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The last error per key: an unreadable file is logged once, not every
    // second.
    let mut failing: std::collections::HashMap<String, String> = Default::default();
    loop {
        tick.tick().await;
        let config = config.clone();
        let checked = tokio::task::spawn_blocking(move || {
            config
                .file_secrets()
                .into_iter()
                .map(|s| (s.key().to_owned(), s.refresh()))
                .collect::<Vec<_>>()
        })
        .await;
        for (key, result) in checked.unwrap_or_default() {
            match result {
                Ok(changed) => {
                    if changed {
                        tracing::info!(key, "secret file changed; new value in use");
                    }
                    failing.remove(&key);
                }
                Err(e) => {
                    if failing.get(&key) != Some(&e) {
                        tracing::warn!(error = %e, "secret file unreadable; the last good value stays");
                        failing.insert(key, e);
                    }
                }
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
