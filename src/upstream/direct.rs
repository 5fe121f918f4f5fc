//! CPH's batch-stop on hyper's HTTP/1 client directly, with a request
//! prepared once per project: the hot path's one upstream call.
//!
//! reqwest (still used for IAM, job queries, JWKS, and for every call when
//! a proxy is configured) costs on each call what this path does once:
//! parsing the URL again in its redirect layer, its retry and timeout
//! layers, the legacy pool's bookkeeping. Here each origin keeps its own
//! idle connections, a pool for each serving thread (newest first, at most
//! [`MAX_IDLE`] each, none older than [`IDLE_TIMEOUT`]), and a call takes
//! one from its thread's pool, or connects (TCP, Nagle off,
//! keep-alive; TLS with the built-in roots plus `upstream.ca_file`, HTTP/1.1
//! offered by ALPN). A pooled connection that turns out to be closed before
//! the request was written gives the request back, and it goes on another
//! one, so a keep-alive race never makes a sent-or-not question.

use std::collections::HashMap;
use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::http::{Capped, read_within, tls_problem};
use crate::config::UpstreamConfig;

/// Idle connections kept per origin and serving thread.
pub const MAX_IDLE: usize = 256;
/// An idle connection older than this is closed rather than used.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

const USER_AGENT_VALUE: &str = concat!("cph-gateway/", env!("CARGO_PKG_VERSION"));

/// Why a call got no readable answer.
#[derive(Debug)]
pub enum CallError {
    /// No connection could be had: nothing was sent.
    NotSent(String),
    /// Sent (or maybe sent), then the connection failed or the answer was
    /// unreadable.
    Broken(String),
    /// The answer was longer than the limit (declared, or as it came).
    TooLarge { limit: usize },
}

/// The client: connection settings and the pool of each origin.
pub struct DirectClient {
    tls: tokio_rustls::TlsConnector,
    connect_timeout: Duration,
    origins: Mutex<HashMap<String, Arc<Origin>>>,
}

/// One scheme, host and port, and its idle connections.
pub struct Origin {
    https: bool,
    /// The host as connected to and named in TLS (no brackets).
    host: String,
    port: u16,
    /// `Host` header value.
    authority: HeaderValue,
    /// One pool per serving thread (see [`use_pool`]), and pool 0 for
    /// every other thread.
    pools: Box<[Mutex<Vec<Idle>>]>,
}

type Idle = (SendRequest<Full<Bytes>>, Instant);

thread_local! {
    /// The pool this thread's calls take connections from and give them
    /// back to.
    static POOL: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Makes this thread's calls use pool `i` of every origin: a thread that
/// runs a single-threaded runtime keeps the connections it made, whose
/// tasks run on it, and never wakes another thread for them. Pools beyond
/// the number of threads that serve wrap round.
pub fn use_pool(i: usize) {
    POOL.with(|p| p.set(i));
}

/// Pools per origin: one per serving thread, and one for other threads.
fn pool_count() -> usize {
    crate::config::serving_threads() + 1
}

/// A prepared request target: the origin and the origin-form path.
#[derive(Clone)]
pub struct Target {
    pub origin: Arc<Origin>,
    pub path: Uri,
}

/// A connection taken from an origin; given back once its answer is read.
pub struct Lease {
    sender: SendRequest<Full<Bytes>>,
    origin: Arc<Origin>,
}

impl DirectClient {
    /// The client for `cfg`'s CA certificates and connect time (as
    /// [`super::http::client`]'s); `None` when a proxy may apply (reqwest
    /// then keeps every call, proxy rules and all).
    pub fn new(cfg: &UpstreamConfig) -> Result<Option<Self>, String> {
        let no_proxy = crate::config::ProxyChoice::Environment {
            https: None,
            http: None,
        };
        if cfg.proxy != no_proxy {
            return Ok(None);
        }
        let mut roots = rustls::RootCertStore::empty();
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
        for der in &cfg.ca_certs {
            roots
                .add(rustls_pki_types::CertificateDer::from(der.clone()))
                .map_err(|e| format!("upstream.ca_file: {e}"))?;
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Some(Self {
            tls: tokio_rustls::TlsConnector::from(Arc::new(tls)),
            connect_timeout: cfg.timeout.min(Duration::from_secs(3)),
            origins: Mutex::default(),
        }))
    }

    /// The target of `url` (http or https, no user info), its origin's
    /// pool shared with every other target there.
    pub fn target(&self, url: &reqwest::Url) -> Result<Target, String> {
        let https = match url.scheme() {
            "https" => true,
            "http" => false,
            other => return Err(format!("bad CPH URL: scheme {other}")),
        };
        let host = url
            .host_str()
            .ok_or_else(|| "bad CPH URL: no host".to_owned())?;
        let port = url
            .port_or_known_default()
            .ok_or_else(|| "bad CPH URL: no port".to_owned())?;
        let authority = match url.port() {
            Some(p) => format!("{host}:{p}"),
            None => host.to_owned(),
        };
        let key = format!("{}://{host}:{port}", url.scheme());
        let path = match url.query() {
            Some(q) => format!("{}?{q}", url.path()),
            None => url.path().to_owned(),
        };
        let path = Uri::try_from(path).map_err(|e| format!("bad CPH URL: {e}"))?;
        let mut origins = self.origins.lock().unwrap_or_else(|e| e.into_inner());
        let origin = match origins.get(&key) {
            Some(o) => o.clone(),
            None => {
                let o = Arc::new(Origin {
                    https,
                    host: host
                        .trim_start_matches('[')
                        .trim_end_matches(']')
                        .to_owned(),
                    port,
                    authority: HeaderValue::try_from(authority)
                        .map_err(|_| "bad CPH URL: host".to_owned())?,
                    pools: (0..pool_count()).map(|_| Mutex::default()).collect(),
                });
                origins.insert(key, o.clone());
                o
            }
        };
        Ok(Target { origin, path })
    }

    /// POSTs `body` as JSON to `target` with `headers` (credential and
    /// request id) added; the answer and the connection it came on.
    pub async fn post_json(
        &self,
        target: &Target,
        headers: HeaderMap,
        body: Vec<u8>,
    ) -> Result<(Response<Incoming>, Lease), CallError> {
        let len = body.len();
        let mut request = Request::new(Full::new(Bytes::from(body)));
        *request.method_mut() = Method::POST;
        *request.uri_mut() = target.path.clone();
        let h = request.headers_mut();
        h.reserve(headers.len() + 4);
        h.insert(HOST, target.origin.authority.clone());
        h.insert(USER_AGENT, HeaderValue::from_static(USER_AGENT_VALUE));
        h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        h.insert(CONTENT_LENGTH, HeaderValue::from(len));
        h.extend(headers);
        loop {
            let (mut sender, pooled) = match target.origin.take() {
                Some(s) => (s, true),
                // Boxed: connecting (TCP, TLS) is the rare path, and its
                // future would otherwise be most of every call's.
                None => (Box::pin(self.connect(&target.origin)).await?, false),
            };
            if sender.ready().await.is_err() {
                if pooled {
                    continue;
                }
                return Err(CallError::NotSent("connection closed at once".to_owned()));
            }
            match sender.try_send_request(request).await {
                Ok(resp) => {
                    let lease = Lease {
                        sender,
                        origin: target.origin.clone(),
                    };
                    return Ok((resp, lease));
                }
                Err(mut e) => match e.take_message() {
                    // Not written: the connection was going away.
                    Some(back) if pooled => request = back,
                    Some(_) => {
                        return Err(CallError::NotSent(format!(
                            "connection failed: {}",
                            e.into_error()
                        )));
                    }
                    None => {
                        return Err(CallError::Broken(format!(
                            "connection error: {}",
                            e.into_error()
                        )));
                    }
                },
            }
        }
    }

    /// A new connection to `origin` within the connect time (TCP and TLS).
    async fn connect(&self, origin: &Origin) -> Result<SendRequest<Full<Bytes>>, CallError> {
        let connecting = async {
            let tcp = TcpStream::connect((origin.host.as_str(), origin.port)).await?;
            tcp.set_nodelay(true)?;
            let keepalive = socket2::TcpKeepalive::new().with_time(Duration::from_secs(30));
            socket2::SockRef::from(&tcp).set_tcp_keepalive(&keepalive)?;
            if !origin.https {
                return handshake(tcp).await;
            }
            let name = rustls_pki_types::ServerName::try_from(origin.host.clone())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
            let tls = self.tls.connect(name, tcp).await?;
            handshake(tls).await
        };
        match tokio::time::timeout(self.connect_timeout, connecting).await {
            Ok(Ok(sender)) => Ok(sender),
            Ok(Err(e)) => Err(CallError::NotSent(
                tls_problem(&e).unwrap_or_else(|| format!("connection failed: {e}")),
            )),
            Err(_) => Err(CallError::NotSent(
                "connection failed: connect timed out".to_owned(),
            )),
        }
    }
}

/// HTTP/1 over `io`; the connection runs in a task of its own.
async fn handshake<T>(io: T) -> io::Result<SendRequest<Full<Bytes>>>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::Builder::new()
        .handshake(TokioIo::new(io))
        .await
        .map_err(io::Error::other)?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
    });
    Ok(sender)
}

impl Origin {
    /// This thread's pool.
    fn idle(&self) -> std::sync::MutexGuard<'_, Vec<Idle>> {
        let i = POOL.with(|p| p.get()) % self.pools.len();
        self.pools[i].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest idle connection still open and not too old.
    fn take(&self) -> Option<SendRequest<Full<Bytes>>> {
        let mut idle = self.idle();
        while let Some((sender, since)) = idle.pop() {
            if since.elapsed() >= IDLE_TIMEOUT {
                // The rest are older still.
                idle.clear();
                return None;
            }
            if !sender.is_closed() {
                return Some(sender);
            }
        }
        None
    }

    fn give_back(&self, sender: SendRequest<Full<Bytes>>) {
        if sender.is_closed() {
            return;
        }
        let mut idle = self.idle();
        if idle.len() >= MAX_IDLE {
            idle.remove(0);
        }
        idle.push((sender, Instant::now()));
    }

    /// Idle connections, in all pools (for tests).
    pub fn idle_count(&self) -> usize {
        self.pools
            .iter()
            .map(|p| p.lock().unwrap_or_else(|e| e.into_inner()).len())
            .sum()
    }
}

/// Reads the answer's body within `limit` bytes (see
/// [`super::http::read_within`]), then gives the connection back.
pub async fn read_body(
    resp: Response<Incoming>,
    lease: Lease,
    limit: usize,
) -> Result<(StatusCode, HeaderMap, Bytes), CallError> {
    let (parts, body) = resp.into_parts();
    let declared = parts
        .headers
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let bytes = read_within(body, declared, limit)
        .await
        .map_err(|e| match e {
            Capped::TooLarge { limit } => CallError::TooLarge { limit },
            Capped::Failed(e) => CallError::Broken(format!("unreadable answer: {e}")),
        })?;
    lease.origin.give_back(lease.sender);
    Ok((parts.status, parts.headers, bytes))
}

#[cfg(test)]
mod tests;
