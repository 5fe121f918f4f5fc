//! `[server]`: the two listeners, TLS on the caller listener, and shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::load::{parse_addr, positive};
use super::tls::ServerTls;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    listen: String,
    admin_listen: String,
    shutdown_grace_ms: u64,
    tls_cert_file: Option<PathBuf>,
    tls_key_file: Option<PathBuf>,
    client_ca_file: Option<PathBuf>,
    header_read_timeout_ms: u64,
    idle_timeout_ms: u64,
    body_read_timeout_ms: u64,
    max_connections: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            admin_listen: "127.0.0.1:8081".into(),
            shutdown_grace_ms: 20_000,
            tls_cert_file: None,
            tls_key_file: None,
            client_ca_file: None,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            body_read_timeout_ms: 30_000,
            max_connections: 4096,
        }
    }
}

/// How many threads serve the caller listener's connections, one
/// single-threaded runtime each: `TOKIO_WORKER_THREADS` if set to a
/// positive number (it sizes tokio's own runtime too), else the cores this
/// process may use. Read once. Not a config key: it is the process's shape,
/// as tokio's variable is.
pub fn serving_threads() -> usize {
    static COUNT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *COUNT.get_or_init(|| {
        std::env::var("TOKIO_WORKER_THREADS")
            .ok()
            .and_then(|v| v.trim().parse::<usize>().ok())
            .filter(|n| *n > 0)
            .or_else(|| std::thread::available_parallelism().ok().map(|n| n.get()))
            .unwrap_or(1)
    })
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub shutdown_grace: Duration,
    /// TLS on the caller listener (`None`: plain HTTP).
    pub tls: Option<ServerTls>,
    /// A request head must be complete this long after its first byte.
    pub header_read_timeout: Duration,
    /// A connection with no request in progress is closed after this.
    pub idle_timeout: Duration,
    /// A request body must arrive within this.
    pub body_read_timeout: Duration,
    /// Connections served at once, per listener.
    pub max_connections: usize,
}

impl RawServer {
    pub(super) fn validate(self) -> Result<ServerConfig, ConfigError> {
        Ok(ServerConfig {
            listen: parse_addr("server.listen", &self.listen)?,
            admin_listen: parse_addr("server.admin_listen", &self.admin_listen)?,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
            tls: ServerTls::from_keys(self.tls_cert_file, self.tls_key_file, self.client_ca_file)?,
            header_read_timeout: Duration::from_millis(positive(
                "server.header_read_timeout_ms",
                self.header_read_timeout_ms,
            )?),
            idle_timeout: Duration::from_millis(positive(
                "server.idle_timeout_ms",
                self.idle_timeout_ms,
            )?),
            body_read_timeout: Duration::from_millis(positive(
                "server.body_read_timeout_ms",
                self.body_read_timeout_ms,
            )?),
            max_connections: positive("server.max_connections", self.max_connections)?,
        })
    }
}
