//! Accept loop and per-connection HTTP/1.1 serving, with a kill switch that
//! lets a handler reset its own connection.
//!
//! `axum::serve` cannot reset a connection, so connections are served with
//! hyper directly. Each gets a [`KillSwitch`], put in every request's
//! extensions; a handler fires it to have the connection task drop the socket
//! with `SO_LINGER 0`, which makes the kernel send a RST instead of a FIN.

use std::io;
use std::pin::{Pin, pin};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::http::Request;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tower::ServiceExt;

/// How long shutdown waits for in-flight requests before aborting them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(1);
/// How long a TLS handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Lets a handler reset the connection its request came on.
#[derive(Debug, Default)]
pub(crate) struct KillSwitch {
    fired: AtomicBool,
    notify: Notify,
}

impl KillSwitch {
    /// Asks the connection task to reset the connection (RST, no answer).
    pub(crate) fn fire(&self) {
        self.fired.store(true, Ordering::Release);
        self.notify.notify_one();
    }
}

/// A TCP stream that aborts (RST) rather than closes when its kill switch has
/// fired by the time it is dropped.
struct ConnIo {
    stream: TcpStream,
    kill: Arc<KillSwitch>,
}

impl Drop for ConnIo {
    fn drop(&mut self) {
        if !self.kill.fired.load(Ordering::Acquire) {
            return;
        }
        if let Err(e) = self.stream.set_zero_linger() {
            tracing::debug!(error = %e, "cannot set SO_LINGER 0; closing normally");
        }
    }
}

impl AsyncRead for ConnIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for ConnIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_shutdown(cx)
    }
}

/// Resolves once shutdown is asked for (or the `Sim` owning the sender is dropped).
async fn shutdown_requested(rx: &mut watch::Receiver<bool>) {
    // An error means the sender is gone: shut down as well.
    let _ = rx.wait_for(|&stop| stop).await;
}

/// Accepts connections (over TLS with `tls`) until shutdown, then gives
/// in-flight requests [`SHUTDOWN_GRACE`] to finish before aborting them.
pub(crate) async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let mut conns = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    // Answers are small: send them at once.
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "cannot set TCP_NODELAY");
                    }
                    conns.spawn(serve_conn(stream, app.clone(), tls.clone(), stop.clone()));
                }
                Err(e) if matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionAborted | io::ErrorKind::ConnectionReset
                ) => {}
                Err(e) => {
                    // Typically out of file descriptors: back off a little.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            // Reap finished connections so the set stays small.
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            () = shutdown_requested(&mut stop) => break,
        }
    }
    drop(listener);
    let drain = async { while conns.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        tracing::debug!(left = conns.len(), "aborting connections at shutdown");
        conns.shutdown().await;
    }
}

/// Serves one connection (HTTP/1.1 with keep-alive, over TLS with `tls`)
/// until the peer closes it, shutdown, or its kill switch fires.
async fn serve_conn(
    stream: TcpStream,
    app: Router,
    tls: Option<TlsAcceptor>,
    mut stop: watch::Receiver<bool>,
) {
    let kill = Arc::new(KillSwitch::default());
    let io = ConnIo {
        stream,
        kill: Arc::clone(&kill),
    };
    let Some(tls) = tls else {
        return serve_io(io, kill, app, stop).await;
    };
    let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, tls.accept(io));
    let io = tokio::select! {
        res = handshake => match res {
            Ok(Ok(io)) => io,
            Ok(Err(e)) => return tracing::debug!(error = %e, "TLS handshake failed"),
            Err(_) => return tracing::debug!("TLS handshake timed out"),
        },
        () = shutdown_requested(&mut stop) => return,
    };
    serve_io(io, kill, app, stop).await;
}

/// Serves HTTP/1.1 on an established connection.
async fn serve_io<I>(io: I, kill: Arc<KillSwitch>, app: Router, mut stop: watch::Receiver<bool>)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = TokioIo::new(io);
    let switch = Arc::clone(&kill);
    let service = app.map_request(move |mut req: Request<Incoming>| {
        req.extensions_mut().insert(Arc::clone(&switch));
        req
    });
    // No header read timeout: like `axum::serve`, idle keep-alive connections
    // stay open until the client closes them, so pooled clients never race a
    // server-side idle close.
    let conn = http1::Builder::new()
        .keep_alive(true)
        .header_read_timeout(None)
        .serve_connection(io, TowerToHyperService::new(service));
    let mut conn = pin!(conn);
    // Returning while `conn` is pending drops the socket: with the kill switch
    // fired, that is the reset.
    let result = tokio::select! {
        res = conn.as_mut() => res,
        () = kill.notify.notified() => return,
        () = shutdown_requested(&mut stop) => {
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                res = conn.as_mut() => res,
                () = kill.notify.notified() => return,
            }
        }
    };
    if let Err(e) = result {
        tracing::debug!(error = %e, "connection ended with an error");
    }
}
