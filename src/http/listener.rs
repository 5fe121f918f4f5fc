//! The accept loop of one listener: at most `max_connections` connections
//! served at once; at the limit, the connection idle the longest makes room
//! for a new one, and when every connection has a request in progress new
//! ones wait in the listen backlog. Running out of file descriptors backs
//! off instead of spinning. On shutdown the socket is closed, idle
//! connections close at once and busy ones after their answer. The loop
//! runs on the main runtime; the caller listener's connections are served
//! on the serving threads (`shards`), the admin listener's where it runs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::router::Routes;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::conn::{self, ConnState, ConnTimeouts};
use super::shards::Shards;
use super::tls::ReloadingTls;

/// How a listener serves its connections.
#[derive(Debug, Clone, Copy)]
pub struct ListenerLimits {
    pub max_connections: usize,
    pub timeouts: ConnTimeouts,
}

/// The live connections of one listener.
#[derive(Default)]
struct Registry {
    next: u64,
    conns: HashMap<u64, Arc<ConnState>>,
}

struct Connections {
    registry: Mutex<Registry>,
    slots: Arc<Semaphore>,
    limit: usize,
}

impl Connections {
    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn add(&self, state: Arc<ConnState>) -> u64 {
        let mut r = self.registry();
        r.next += 1;
        let id = r.next;
        r.conns.insert(id, state);
        id
    }

    fn remove(&self, id: u64) {
        self.registry().conns.remove(&id);
    }

    /// Asks the connection idle the longest to close; false if every
    /// connection has a request in progress.
    fn evict_oldest_idle(&self) -> bool {
        let r = self.registry();
        let oldest = r
            .conns
            .values()
            .filter_map(|c| c.idle_since().map(|t| (t, c)))
            .min_by_key(|(t, _)| *t);
        match oldest {
            Some((_, c)) => {
                c.ask_to_close();
                true
            }
            None => false,
        }
    }

    fn close_all(&self) {
        for c in self.registry().conns.values() {
            c.ask_to_close();
        }
    }
}

/// Whether an accept error means the process or system is out of a
/// resource (file descriptors, buffers): worth a pause, not a spin.
fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    #[cfg(unix)]
    {
        const EMFILE: i32 = 24;
        const ENFILE: i32 = 23;
        const ENOBUFS: i32 = 105;
        const ENOMEM: i32 = 12;
        matches!(e.raw_os_error(), Some(EMFILE | ENFILE | ENOBUFS | ENOMEM))
    }
    #[cfg(not(unix))]
    {
        let _ = e;
        false
    }
}

/// Pause after running out of file descriptors.
const EXHAUSTED_PAUSE: Duration = Duration::from_millis(50);

/// Serves `listener` until `shutdown` turns true, then stops accepting
/// (the socket is closed), closes idle connections at once, and returns
/// when the busy ones have answered. `name` is the config key, for logs.
/// With `tls`, each connection is handshaken in its own task (holding its
/// place in the limit) before it is served. With `shards`, connections are
/// served there, else on the runtime that runs this.
pub async fn serve(
    name: &'static str,
    listener: TcpListener,
    routes: Arc<Routes>,
    limits: ListenerLimits,
    tls: Option<Arc<ReloadingTls>>,
    shards: Option<Arc<Shards>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<()> {
    let conns = Arc::new(Connections {
        registry: Mutex::default(),
        slots: Arc::new(Semaphore::new(limits.max_connections)),
        limit: limits.max_connections,
    });
    let mut last_exhausted_log: Option<tokio::time::Instant> = None;
    loop {
        let accepted = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => break,
            accepted = listener.accept() => accepted,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(e) if is_resource_exhaustion(&e) => {
                let now = tokio::time::Instant::now();
                if last_exhausted_log.is_none_or(|t| now - t > Duration::from_secs(10)) {
                    tracing::warn!(listener = name, error = %e, "cannot accept: out of file descriptors; closing the longest idle connection and pausing");
                    last_exhausted_log = Some(now);
                }
                conns.evict_oldest_idle();
                tokio::time::sleep(EXHAUSTED_PAUSE).await;
                continue;
            }
            Err(e) => {
                tracing::debug!(listener = name, error = %e, "accept failed");
                continue;
            }
        };
        // A slot for it: a free one, else the longest idle connection's,
        // else it waits (and so does the backlog behind it).
        let permit = match conns.slots.clone().try_acquire_owned() {
            Ok(p) => p,
            Err(_) => {
                conns.evict_oldest_idle();
                tokio::select! {
                    biased;
                    _ = shutdown.wait_for(|s| *s) => break,
                    p = conns.slots.clone().acquire_owned() => match p {
                        Ok(p) => p,
                        Err(_) => break,
                    },
                }
            }
        };
        spawn_connection(
            stream,
            routes.clone(),
            &conns,
            limits.timeouts,
            tls.clone(),
            shards.as_deref(),
            permit,
        );
    }
    drop(listener);
    conns.close_all();
    // Every connection holds a slot until it ends.
    let _all = conns.slots.acquire_many(conns.limit as u32).await;
    Ok(())
}

fn spawn_connection(
    stream: TcpStream,
    routes: Arc<Routes>,
    conns: &Arc<Connections>,
    timeouts: ConnTimeouts,
    tls: Option<Arc<ReloadingTls>>,
    shards: Option<&Shards>,
    permit: OwnedSemaphorePermit,
) {
    let _ = stream.set_nodelay(true);
    let state = ConnState::new();
    let registered = Registered {
        id: conns.add(state.clone()),
        conns: conns.clone(),
    };
    // Whether it is served or dropped unserved (the socket could not move
    // to its serving thread, or that thread stopped), the connection leaves
    // the registry and gives its slot back.
    let serve = move |stream: TcpStream| async move {
        match tls {
            None => conn::serve(stream, routes, state, timeouts).await,
            Some(tls) => match tls.accept(stream).await {
                Ok(stream) => conn::serve(stream, routes, state, timeouts).await,
                // A scan, or a client without a certificate under mTLS, is
                // not the gateway's fault: debug level.
                Err(e) => tracing::debug!(error = %e, "TLS handshake failed"),
            },
        }
        drop(registered);
        drop(permit);
    };
    match shards {
        Some(shards) => shards.spawn(stream, serve),
        None => {
            tokio::spawn(serve(stream));
        }
    }
}

/// A connection in its listener's registry until this is dropped.
struct Registered {
    id: u64,
    conns: Arc<Connections>,
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.conns.remove(self.id);
    }
}

/// Binds a listening socket whose backlog holds `backlog` connections
/// waiting to be accepted (the kernel caps it at `net.core.somaxconn`).
/// The standard library's and tokio's `bind` ask for 128: a burst of more
/// new connections than that at once (clients reconnecting together, or a
/// flood being evicted) had the kernel drop the rest's SYNs, and each of
/// those clients waited a second or more to send its SYN again.
pub fn bind(addr: SocketAddr, backlog: usize) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // As std and tokio do: a restarted gateway can bind its port again at
    // once, with the previous process's connections still closing.
    #[cfg(unix)]
    socket.set_reuse_address(true)?;
    socket.bind(&addr.into())?;
    socket.listen(backlog.clamp(128, MAX_BACKLOG) as i32)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

/// The largest backlog asked for (Linux's own ceiling for `somaxconn`).
const MAX_BACKLOG: usize = 65_535;

/// File descriptors this process may open (the soft limit, raised to the
/// hard limit first), if the platform says.
pub fn fd_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        let mut rl = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit and setrlimit only read and write the struct
        // passed by reference.
        unsafe {
            if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
                return None;
            }
            if rl.rlim_cur < rl.rlim_max {
                let raised = libc::rlimit {
                    rlim_cur: rl.rlim_max,
                    rlim_max: rl.rlim_max,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &raised) == 0 {
                    rl.rlim_cur = rl.rlim_max;
                }
            }
        }
        // `rlim_t` is not u64 on every unix.
        #[allow(clippy::unnecessary_cast)]
        Some(rl.rlim_cur as u64)
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// File descriptors kept for everything but caller connections: upstream
/// connections, files, the runtime.
const FD_RESERVE: u64 = 256;

/// The connection limits of the caller and admin listeners: each
/// `max_connections`, unless the file descriptor limit cannot hold both;
/// then the admin listener gets a sixteenth (at least 16) of what is left
/// after a reserve, and the caller listener the rest.
pub fn split_connections(max_connections: usize, fds: Option<u64>) -> (usize, usize) {
    let Some(fds) = fds else {
        return (max_connections, max_connections);
    };
    let budget = fds.saturating_sub(FD_RESERVE).max(64) as usize;
    if max_connections.saturating_mul(2) <= budget {
        return (max_connections, max_connections);
    }
    let admin = (budget / 16).max(16).min(max_connections);
    let caller = budget.saturating_sub(admin).max(16).min(max_connections);
    (caller, admin)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_fit_the_fd_limit() {
        assert_eq!(split_connections(4096, None), (4096, 4096));
        assert_eq!(split_connections(4096, Some(1_048_576)), (4096, 4096));
        let (caller, admin) = split_connections(4096, Some(1024));
        assert_eq!((caller, admin), (720, 48));
        assert!(caller + admin + FD_RESERVE as usize <= 1024);
        assert_eq!(split_connections(100, Some(1024)), (100, 100));
        let (caller, admin) = split_connections(4096, Some(10));
        assert!(caller >= 16 && admin >= 16);
    }

    /// Connections made at once, none accepted yet, all wait in the
    /// backlog: none has to send its SYN again (a second later) for want of
    /// room. With the 128 of std's and tokio's `bind`, most would.
    #[tokio::test]
    async fn the_backlog_holds_a_burst_of_connections() {
        const BURST: usize = 300;
        let listener = bind("127.0.0.1:0".parse().unwrap(), 1024).unwrap();
        let addr = listener.local_addr().unwrap();
        // Non-blocking connects: the kernel completes each handshake from
        // the backlog, without the listener accepting.
        let clients: Vec<socket2::Socket> = (0..BURST)
            .map(|_| {
                let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                    .unwrap();
                s.set_nonblocking(true).unwrap();
                let _ = s.connect(&addr.into());
                s
            })
            .collect();
        // Well before a dropped SYN's first retry (one second).
        let window = tokio::time::sleep(Duration::from_millis(600));
        tokio::pin!(window);
        let mut accepted = 0;
        while accepted < BURST {
            tokio::select! {
                _ = &mut window => break,
                a = listener.accept() => {
                    a.unwrap();
                    accepted += 1;
                }
            }
        }
        assert_eq!(accepted, BURST, "connections left out of the backlog");
        drop(clients);
    }
}
