//! TLS on the caller listener: a rustls configuration built from
//! `server.tls_cert_file`/`tls_key_file` (and `client_ca_file` for mTLS),
//! rebuilt when one of the files changes (checked every second, off the
//! async threads). Each new connection is handshaken with the configuration
//! of the moment; connections already open keep theirs. A file that cannot
//! be used (half-written, a key that does not go with the certificate) is
//! reported and the last good configuration stays.
//!
//! [`ReloadingTls::accept`] wraps one accepted TCP connection; the listener
//! (`listener.rs`) runs it in the connection's own task, so that a slow
//! client never holds up the others, within the connection limit.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::net::TcpStream;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

use crate::config::{ConfigError, ServerTls};

/// How long a client has to finish the TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the files are checked for a change.
const POLL: Duration = Duration::from_secs(1);

/// What a file looked like when it was last read.
type Stamp = Option<(Option<SystemTime>, u64)>;

/// The caller listener's TLS configuration, following its files.
pub struct ReloadingTls {
    files: ServerTls,
    config: ArcSwap<rustls::ServerConfig>,
    stamps: Mutex<Vec<Stamp>>,
}

impl ReloadingTls {
    /// Reads the files now (blocking: at start).
    pub fn load(files: ServerTls) -> Result<Self, ConfigError> {
        let stamps = stamps(&files);
        let config = files.load()?;
        Ok(Self {
            files,
            config: ArcSwap::new(config),
            stamps: Mutex::new(stamps),
        })
    }

    /// Rebuilds the configuration if a file changed: `Ok(true)` when a new
    /// one is in use; on error the last good one stays (and the change is
    /// tried again next time). Blocking: call it off the async threads.
    pub fn refresh(&self) -> Result<bool, String> {
        let now = stamps(&self.files);
        let mut seen = self.stamps.lock().unwrap_or_else(|e| e.into_inner());
        if *seen == now {
            return Ok(false);
        }
        let config = self.files.load().map_err(|e| e.to_string())?;
        self.config.store(config);
        *seen = now;
        Ok(true)
    }

    /// The TLS handshake on an accepted connection, within
    /// [`HANDSHAKE_TIMEOUT`], with the configuration of the moment.
    pub async fn accept(&self, tcp: TcpStream) -> io::Result<TlsStream<TcpStream>> {
        let acceptor = TlsAcceptor::from(self.config.load_full());
        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
    }
}

fn stamps(files: &ServerTls) -> Vec<Stamp> {
    files
        .files()
        .into_iter()
        .map(|path| {
            std::fs::metadata(path)
                .ok()
                .map(|m| (m.modified().ok(), m.len()))
        })
        .collect()
}

/// Rebuilds the configuration when its files change, until aborted.
pub async fn watch(tls: Arc<ReloadingTls>) {
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_error: Option<String> = None;
    loop {
        tick.tick().await;
        let tls = tls.clone();
        let files: Vec<PathBuf> = tls.files.files().iter().map(|p| p.to_path_buf()).collect();
        match tokio::task::spawn_blocking(move || tls.refresh()).await {
            Ok(Ok(true)) => {
                tracing::info!(
                    ?files,
                    "TLS certificate files changed; new connections use them"
                );
                last_error = None;
            }
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                if last_error.as_ref() != Some(&e) {
                    tracing::warn!(error = %e, "TLS certificate files unusable; the last good ones stay");
                    last_error = Some(e);
                }
            }
            Err(e) => tracing::warn!(error = %e, "TLS reload task failed"),
        }
    }
}
