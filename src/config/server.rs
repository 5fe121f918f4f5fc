//! `[server]`: the two listeners and shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

use super::error::ConfigError;
use super::load::parse_addr;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RawServer {
    listen: String,
    admin_listen: String,
    shutdown_grace_ms: u64,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            admin_listen: "127.0.0.1:8081".into(),
            shutdown_grace_ms: 20_000,
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub shutdown_grace: Duration,
}

impl RawServer {
    pub(super) fn validate(self) -> Result<ServerConfig, ConfigError> {
        Ok(ServerConfig {
            listen: parse_addr("server.listen", &self.listen)?,
            admin_listen: parse_addr("server.admin_listen", &self.admin_listen)?,
            shutdown_grace: Duration::from_millis(self.shutdown_grace_ms),
        })
    }
}
