//! One client connection: served by hyper's HTTP/1 server, its socket
//! watched for the timeouts hyper does not have in this form.
//!
//! - a request head must be complete `header_read_timeout` after its first
//!   byte;
//! - a connection with no request in progress (a fresh one that sends
//!   nothing, or an idle keep-alive) is closed after `idle_timeout`;
//! - a response the client does not read is abandoned after `idle_timeout`
//!   of a stalled write.
//!
//! The body read timeout is the body reader's (`routes::extract`). The
//! connection is generic over its IO, so TLS can be put in front of it.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use super::router::Routes;

/// The timeouts of one connection (from `[server]`).
#[derive(Debug, Clone, Copy)]
pub struct ConnTimeouts {
    pub header_read: Duration,
    pub idle: Duration,
}

/// Largest request head (request line and headers) read: a longer one is
/// answered 431 by hyper.
pub const MAX_HEAD_BYTES: usize = 32 * 1024;

#[derive(Debug)]
struct Times {
    /// Requests whose answer is not yet written (0 or 1 without pipelining).
    in_request: u32,
    /// Since when nothing has been in progress.
    idle_since: Instant,
    /// When the first byte of the next request head came, if one did.
    head_started: Option<Instant>,
    /// Asked to close (evicted, or shutting down).
    closing: bool,
    /// The reader parked while a request was in progress: woken when it
    /// ends, so that the idle deadline is armed.
    reader: Option<std::task::Waker>,
}

/// What the listener knows about one of its connections.
#[derive(Debug)]
pub struct ConnState {
    times: Mutex<Times>,
    close: tokio::sync::Notify,
}

impl ConnState {
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            times: Mutex::new(Times {
                in_request: 0,
                idle_since: Instant::now(),
                head_started: None,
                closing: false,
                reader: None,
            }),
            close: tokio::sync::Notify::new(),
        })
    }

    fn times(&self) -> std::sync::MutexGuard<'_, Times> {
        self.times.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Since when the connection has had no request in progress, if it has
    /// none (and has not been asked to close).
    pub fn idle_since(&self) -> Option<Instant> {
        let t = self.times();
        (t.in_request == 0 && !t.closing).then_some(t.idle_since)
    }

    /// Asks the connection to close: at once if no request is in progress,
    /// else after the answer.
    pub fn ask_to_close(&self) {
        self.times().closing = true;
        self.close.notify_one();
    }

    fn is_idle(&self) -> bool {
        self.times().in_request == 0
    }

    fn request_started(self: &Arc<Self>) -> RequestGuard {
        let mut t = self.times();
        t.in_request += 1;
        t.head_started = None;
        RequestGuard(self.clone())
    }

    fn read_some(&self) {
        let mut t = self.times();
        if t.in_request == 0 && t.head_started.is_none() {
            t.head_started = Some(Instant::now());
        }
    }

    /// When the socket must have produced its next bytes, if ever; while a
    /// request is in progress there is none, and the reader is woken when
    /// it ends.
    fn read_deadline(&self, timeouts: ConnTimeouts, cx: &Context<'_>) -> Option<Instant> {
        let mut t = self.times();
        if t.in_request > 0 {
            t.reader = Some(cx.waker().clone());
            return None;
        }
        Some(match t.head_started {
            Some(started) => started + timeouts.header_read,
            None => t.idle_since + timeouts.idle,
        })
    }
}

/// A request in progress; when dropped (its answer written, or abandoned)
/// the connection is idle again.
struct RequestGuard(Arc<ConnState>);

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut t = self.0.times();
        t.in_request = t.in_request.saturating_sub(1);
        if t.in_request == 0 {
            t.idle_since = Instant::now();
            if let Some(reader) = t.reader.take() {
                reader.wake();
            }
        }
    }
}

/// The socket, with read and write deadlines from the connection's state.
struct Watched<IO> {
    io: IO,
    state: Arc<ConnState>,
    timeouts: ConnTimeouts,
    read_timer: Option<(Instant, Pin<Box<Sleep>>)>,
    write_timer: Option<Pin<Box<Sleep>>>,
}

fn timed_out(what: &str) -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, what.to_owned())
}

impl<IO: AsyncRead + Unpin> AsyncRead for Watched<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        if let Poll::Ready(r) = Pin::new(&mut this.io).poll_read(cx, buf) {
            if r.is_ok() && buf.filled().len() > before {
                this.state.read_some();
            }
            return Poll::Ready(r);
        }
        let Some(deadline) = this.state.read_deadline(this.timeouts, cx) else {
            return Poll::Pending;
        };
        match &mut this.read_timer {
            Some((at, sleep)) if *at != deadline => {
                sleep.as_mut().reset(deadline);
                *at = deadline;
            }
            Some(_) => {}
            None => {
                this.read_timer = Some((deadline, Box::pin(tokio::time::sleep_until(deadline))))
            }
        }
        if let Some((_, sleep)) = &mut this.read_timer {
            ready!(sleep.as_mut().poll(cx));
        }
        Poll::Ready(Err(timed_out("connection idle or request head too slow")))
    }
}

impl<IO: AsyncWrite + Unpin> Watched<IO> {
    /// A write that stays blocked for `idle` (a client that does not read
    /// its answer) fails.
    fn stalled<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
    ) -> Poll<io::Result<T>> {
        if polled.is_ready() {
            self.write_timer = None;
            return polled;
        }
        let idle = self.timeouts.idle;
        let sleep = self
            .write_timer
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
        ready!(sleep.as_mut().poll(cx));
        Poll::Ready(Err(timed_out("client does not read its answer")))
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for Watched<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write(cx, buf);
        self.stalled(cx, polled)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let polled = Pin::new(&mut self.io).poll_write_vectored(cx, bufs);
        self.stalled(cx, polled)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let polled = Pin::new(&mut self.io).poll_flush(cx);
        self.stalled(cx, polled)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

/// An answer body that keeps its request in progress until it is written.
struct Tracked {
    body: Body,
    _request: RequestGuard,
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

/// Serves one connection until the client closes it, a timeout closes it,
/// or it is asked to close (eviction, shutdown): an idle connection then
/// closes at once, a busy one after its answer.
pub async fn serve<IO>(io: IO, routes: Arc<Routes>, state: Arc<ConnState>, timeouts: ConnTimeouts)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let watched = Watched {
        io,
        state: state.clone(),
        timeouts,
        read_timer: None,
        write_timer: None,
    };
    let service_state = state.clone();
    let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
        let guard = service_state.request_started();
        let routes = routes.clone();
        async move {
            let resp = routes.call(req.map(Body::new)).await;
            Ok::<_, std::convert::Infallible>(resp.map(|body| Tracked {
                body,
                _request: guard,
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .max_buf_size(MAX_HEAD_BYTES)
        .header_read_timeout(None);
    let conn = builder.serve_connection(TokioIo::new(watched), service);
    tokio::pin!(conn);
    let mut asked = false;
    loop {
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "connection ended");
                }
                return;
            }
            () = state.close.notified(), if !asked => {
                if state.is_idle() {
                    return;
                }
                asked = true;
                conn.as_mut().graceful_shutdown();
            }
        }
    }
}
