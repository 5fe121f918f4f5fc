//! The log writer: formatted lines are appended to a shared buffer, and one
//! background thread writes the buffer to stderr in batches.
//!
//! A request never waits on stderr (a full pipe, a slow disk): its line goes
//! into memory, and lines beyond [`MAX_PENDING`] bytes are dropped and counted
//! rather than stalling the runtime. Unlike a channel with one message per
//! line, the writer thread is woken once per batch, not once per line: under
//! load that saves a futex wake-up and a context switch per request.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::thread::{self, JoinHandle, Thread};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;

/// Bytes of log lines that may wait for the writer thread.
pub const MAX_PENDING: usize = 2 << 20;
/// How long the writer thread lets a batch gather after its first line.
const GATHER: Duration = Duration::from_millis(5);

struct Shared {
    pending: Mutex<Vec<u8>>,
    dropped: AtomicU64,
    done: AtomicBool,
    /// The writer thread (set before any line can be pushed).
    thread: OnceLock<Thread>,
}

/// The `MakeWriter` of the fmt layer (cheap to clone).
#[derive(Clone)]
pub struct LogWriter {
    shared: Arc<Shared>,
}

/// Writes what is pending and stops the writer thread on drop.
pub struct WriterGuard {
    shared: Arc<Shared>,
    handle: Option<JoinHandle<()>>,
}

/// A writer to `out` on a background thread named `cphgw-log`.
pub fn batched<W: Write + Send + 'static>(out: W) -> (LogWriter, WriterGuard) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Vec::new()),
        dropped: AtomicU64::new(0),
        done: AtomicBool::new(false),
        thread: OnceLock::new(),
    });
    // The thread gets its state directly (no channel: a blocking receive
    // parks the thread too, and could swallow the wake-up of a first line).
    let mine = shared.clone();
    let handle = thread::Builder::new()
        .name("cphgw-log".into())
        .spawn(move || run(&mine, out))
        .expect("spawn the log writer thread");
    let _ = shared.thread.set(handle.thread().clone());
    (
        LogWriter {
            shared: shared.clone(),
        },
        WriterGuard {
            shared,
            handle: Some(handle),
        },
    )
}

/// The longest a pending line waits should a wake-up be lost.
const SAFETY_WAKE: Duration = Duration::from_secs(1);

fn run<W: Write>(shared: &Shared, mut out: W) {
    let mut batch = Vec::new();
    loop {
        // Woken by the first line of a batch (or by the guard).
        thread::park_timeout(SAFETY_WAKE);
        let done = shared.done.load(Ordering::Acquire);
        if !done {
            thread::sleep(GATHER);
        }
        drain(shared, &mut batch, &mut out);
        if done {
            return;
        }
    }
}

fn drain<W: Write>(shared: &Shared, batch: &mut Vec<u8>, out: &mut W) {
    batch.clear();
    std::mem::swap(
        batch,
        &mut *shared
            .pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner),
    );
    let dropped = shared.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let _ = writeln!(
            out,
            "cph-gateway: {dropped} log lines dropped (the log output did not keep up)"
        );
    }
    if !batch.is_empty() {
        let _ = out.write_all(batch);
    }
    let _ = out.flush();
    // Keep a moderate buffer for the next batch, not the largest one ever seen.
    if batch.capacity() > 256 << 10 {
        *batch = Vec::new();
    }
}

impl LogWriter {
    /// Appends one formatted line (or drops it when too much is pending).
    fn push(&self, line: &[u8]) {
        let first = {
            let mut pending = self
                .shared
                .pending
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if pending.len() + line.len() > MAX_PENDING {
                self.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let first = pending.is_empty();
            pending.extend_from_slice(line);
            first
        };
        if first && let Some(t) = self.shared.thread.get() {
            t.unpark();
        }
    }
}

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogWriter {
    type Writer = LogWriter;

    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

impl Drop for WriterGuard {
    fn drop(&mut self) {
        self.shared.done.store(true, Ordering::Release);
        if let Some(h) = self.handle.take() {
            h.thread().unpark();
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, Default)]
    struct Sink(Arc<Mutex<Vec<u8>>>);

    impl Write for Sink {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn lines_arrive_in_order_and_the_guard_flushes() {
        let sink = Sink::default();
        let (w, guard) = batched(sink.clone());
        for i in 0..1000 {
            w.make_writer()
                .write_all(format!("line {i}\n").as_bytes())
                .unwrap();
        }
        drop(guard);
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        let want: String = (0..1000).map(|i| format!("line {i}\n")).collect();
        assert_eq!(out, want);
    }

    #[test]
    fn lines_beyond_the_bound_are_dropped_and_counted() {
        let sink = Sink::default();
        let (w, guard) = batched(sink.clone());
        // Hold the buffer full: the writer thread cannot drain while we
        // keep the lock, so fill it directly.
        {
            let mut p = w.shared.pending.lock().unwrap();
            p.resize(MAX_PENDING, b'x');
        }
        w.make_writer().write_all(b"one too many\n").unwrap();
        drop(guard);
        let out = String::from_utf8(sink.0.lock().unwrap().clone()).unwrap();
        assert!(
            out.starts_with("cph-gateway: 1 log lines dropped"),
            "{}",
            &out[..80]
        );
        assert!(!out.contains("one too many"));
    }
}
