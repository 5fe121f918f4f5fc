//! The caller listener's connections, each served start to end on one of
//! a few single-threaded runtimes, one per core ("shards"), as an event loop
//! per core serves them in nginx or HAProxy.
//!
//! In tokio's work-stealing runtime, a task woken on a busy worker wakes an
//! idle one to steal it: on a loaded host the kernel's wake-up and context
//! switch paths were a quarter of the gateway's time. On a shard, a
//! connection, its requests, their upstream calls (each shard keeps its own
//! upstream connections) and the tasks they spawn stay on one thread, and a
//! wake-up is a push on that thread's own queue.
//!
//! The listener accepts on the main runtime and hands each connection to
//! the shard serving the fewest: balanced by connections, not by a hash of
//! addresses, so a few long-lived callers still spread. What it gives up is
//! stealing: a request's CPU-heavy part (a 10,000-id body, an RSA token)
//! delays that shard's other connections, not the whole process's.

use std::future::Future;
use std::io;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::net::TcpStream;
use tokio::runtime::Handle;
use tokio::sync::oneshot;

/// The serving runtimes of one gateway.
pub struct Shards {
    shards: Box<[Shard]>,
    /// Where the search for the least busy shard starts: ties go round.
    next: AtomicUsize,
}

struct Shard {
    handle: Handle,
    /// Connections being served there.
    conns: Arc<AtomicUsize>,
    /// Dropping it ends the shard's thread (and drops what still runs there).
    stop: Mutex<Option<oneshot::Sender<()>>>,
}

impl Shards {
    /// Starts `n` (at least one) serving threads, each a single-threaded
    /// runtime whose upstream calls use pool `i + 1` of the direct client.
    pub async fn start(n: usize) -> io::Result<Self> {
        let mut shards = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let (ready_tx, ready_rx) = oneshot::channel::<io::Result<Handle>>();
            let (stop_tx, stop_rx) = oneshot::channel::<()>();
            std::thread::Builder::new()
                .name(format!("cphgw-serve-{i}"))
                .spawn(move || {
                    let rt = match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt,
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    crate::upstream::direct::use_pool(i + 1);
                    let _ = ready_tx.send(Ok(rt.handle().clone()));
                    rt.block_on(async {
                        let _ = stop_rx.await;
                    });
                })?;
            let handle = ready_rx
                .await
                .map_err(|_| io::Error::other("a serving thread ended at start"))??;
            shards.push(Shard {
                handle,
                conns: Arc::default(),
                stop: Mutex::new(Some(stop_tx)),
            });
        }
        Ok(Self {
            shards: shards.into_boxed_slice(),
            next: AtomicUsize::new(0),
        })
    }

    /// Serves `stream` with `serve` on the shard with the fewest
    /// connections.
    pub fn spawn<F, Fut>(&self, stream: TcpStream, serve: F)
    where
        F: FnOnce(TcpStream) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let n = self.shards.len();
        let shard = (0..n)
            .map(|k| &self.shards[(start + k) % n])
            .min_by_key(|s| s.conns.load(Ordering::Relaxed))
            .unwrap_or(&self.shards[0]);
        // The socket leaves the main runtime's reactor for the shard's.
        let Ok(std) = stream.into_std() else {
            return;
        };
        let conns = shard.conns.clone();
        conns.fetch_add(1, Ordering::Relaxed);
        let counted = Counted(conns);
        shard.handle.spawn(async move {
            let _counted = counted;
            if let Ok(stream) = TcpStream::from_std(std) {
                serve(stream).await;
            }
        });
    }

    /// Ends every shard's thread; what still runs there is dropped.
    pub fn stop(&self) {
        for s in self.shards.iter() {
            s.stop.lock().unwrap_or_else(|e| e.into_inner()).take();
        }
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop();
    }
}

/// One connection counted on its shard until it ends.
struct Counted(Arc<AtomicUsize>);

impl Drop for Counted {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// Each connection answers the name of the thread that serves it, then
    /// stays open until the client closes it.
    async fn accept(listener: &TcpListener, shards: &Shards) {
        let (stream, _) = listener.accept().await.unwrap();
        shards.spawn(stream, |mut stream| async move {
            let name = std::thread::current().name().unwrap_or("").to_owned();
            stream.write_all(name.as_bytes()).await.unwrap();
            stream.write_all(b"\n").await.unwrap();
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
        });
    }

    async fn served_by(stream: &mut TcpStream) -> String {
        let mut name = Vec::new();
        let mut byte = [0u8; 1];
        while stream.read_exact(&mut byte).await.is_ok() && byte[0] != b'\n' {
            name.push(byte[0]);
        }
        String::from_utf8(name).unwrap()
    }

    #[tokio::test]
    async fn connections_go_to_the_shard_serving_the_fewest_and_stop_ends_them() {
        let shards = Shards::start(2).await.unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = |i: usize| shards.shards[i].conns.load(Ordering::Relaxed);
        let mut open: Vec<(String, TcpStream)> = Vec::new();
        for _ in 0..4 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            accept(&listener, &shards).await;
            open.push((served_by(&mut c).await, c));
        }
        let mut names: Vec<&str> = open.iter().map(|(n, _)| n.as_str()).collect();
        names.sort();
        assert_eq!(
            names,
            [
                "cphgw-serve-0",
                "cphgw-serve-0",
                "cphgw-serve-1",
                "cphgw-serve-1"
            ]
        );
        assert_eq!((conns(0), conns(1)), (2, 2));

        // Shard 1's connections end: the next two both go there.
        open.retain(|(n, _)| n == "cphgw-serve-0");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while conns(1) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "not counted out");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for _ in 0..2 {
            let mut c = TcpStream::connect(addr).await.unwrap();
            accept(&listener, &shards).await;
            let name = served_by(&mut c).await;
            assert_eq!(name, "cphgw-serve-1");
            open.push((name, c));
        }
        assert_eq!((conns(0), conns(1)), (2, 2));

        // Stopped: what ran there is dropped, and its connections close.
        shards.stop();
        for (_, mut c) in open {
            let mut rest = Vec::new();
            let read = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut rest));
            assert!(read.await.is_ok(), "a connection outlived its shard");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while conns(0) + conns(1) > 0 {
            assert!(tokio::time::Instant::now() < deadline, "tasks not dropped");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}
