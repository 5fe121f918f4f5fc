//! Writing stop records: whole records off the answer's path (batched by
//! one writer task), or a keyed stop's batch outcomes as they come (what a
//! resumed stop reads).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Once};

use tokio::sync::{mpsc, oneshot};

use super::Stops;
use crate::store::{RecordBatch, StopRecord, Store};
use crate::telemetry::Metrics;

impl Stops {
    /// With a record's head, a writer of its batch outcomes as they come.
    #[allow(clippy::type_complexity)]
    pub(super) fn progress_writer(
        &self,
        head: Option<StopRecord>,
    ) -> (
        Option<tokio::sync::mpsc::UnboundedSender<RecordBatch>>,
        Option<tokio::task::JoinHandle<()>>,
    ) {
        let Some(head) = head else {
            return (None, None);
        };
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<RecordBatch>();
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        let writer = tokio::spawn(async move {
            while let Some(batch) = rx.recv().await {
                if let Err(e) = store.put_record_batch(&head, &batch).await {
                    metrics.record_writes_failed(1);
                    tracing::warn!(error = %e, batch = batch.index, "stop record: batch outcome not written");
                }
            }
        });
        (Some(tx), Some(writer))
    }

    /// Writes a stop's record off the answer's path; a failure is logged and
    /// counted, never fails the stop.
    pub(super) fn keep_record(&self, record: Arc<StopRecord>) {
        self.records.keep(record);
    }

    /// Waits until every record handed over so far is written (or failed).
    pub async fn flush_records(&self) {
        self.records.flush().await;
    }
}

/// Phones of stop records waiting to be written; past this, records are
/// dropped (and counted as failed writes) rather than held: about 150 bytes
/// a phone, so some 30 MiB at most while the store is slow or away.
const QUEUE_PHONES: usize = 200_000;

/// At most this many phones in one write (one statement on PostgreSQL).
const WRITE_PHONES: usize = 5_000;

/// How long a busy writer waits for records to queue up between writes.
const LINGER: std::time::Duration = std::time::Duration::from_millis(20);

enum Job {
    Record(Arc<StopRecord>),
    Flush(oneshot::Sender<()>),
}

/// The writer of whole stop records: one task, fed by a queue bounded in
/// phones, that writes whatever has queued up while its last write ran in
/// one go. An idle gateway writes each record at once; a busy one writes
/// hundreds per round trip instead of one task and one statement each.
pub(super) struct RecordWriter {
    tx: mpsc::UnboundedSender<Job>,
    /// The queue's end, until the writer task takes it (on first use: the
    /// writer may be built outside a runtime).
    rx: Mutex<Option<mpsc::UnboundedReceiver<Job>>>,
    started: Once,
    /// The runtime the writer was built on (the main one, when the gateway
    /// builds it), which the writer task runs on: not a serving thread,
    /// whose connections its batches would hold up.
    runtime: Option<tokio::runtime::Handle>,
    queued: Arc<AtomicUsize>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
}

impl RecordWriter {
    pub(super) fn new(store: Arc<dyn Store>, metrics: Arc<Metrics>) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        Self {
            tx,
            rx: Mutex::new(Some(rx)),
            started: Once::new(),
            runtime: tokio::runtime::Handle::try_current().ok(),
            queued: Arc::new(AtomicUsize::new(0)),
            store,
            metrics,
        }
    }

    fn keep(&self, record: Arc<StopRecord>) {
        let phones = record.phones().max(1);
        let before = self.queued.fetch_add(phones, Ordering::AcqRel);
        if before > 0 && before + phones > QUEUE_PHONES {
            self.queued.fetch_sub(phones, Ordering::AcqRel);
            self.metrics.record_writes_failed(1);
            tracing::warn!(
                request_id = %record.request_id,
                queued_phones = before,
                "stop record not written: the writer is behind (store slow or unreachable)"
            );
            return;
        }
        self.send(Job::Record(record));
    }

    async fn flush(&self) {
        let (tx, rx) = oneshot::channel();
        self.send(Job::Flush(tx));
        let _ = rx.await;
    }

    fn send(&self, job: Job) {
        self.started.call_once(|| {
            if let Some(rx) = self.rx.lock().unwrap_or_else(|e| e.into_inner()).take() {
                let writer = write_loop(
                    rx,
                    self.queued.clone(),
                    self.store.clone(),
                    self.metrics.clone(),
                );
                match &self.runtime {
                    Some(runtime) => drop(runtime.spawn(writer)),
                    None => drop(tokio::spawn(writer)),
                }
            }
        });
        let _ = self.tx.send(job);
    }
}

async fn write_loop(
    mut rx: mpsc::UnboundedReceiver<Job>,
    queued: Arc<AtomicUsize>,
    store: Arc<dyn Store>,
    metrics: Arc<Metrics>,
) {
    let mut records: Vec<Arc<StopRecord>> = Vec::new();
    let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
    while let Some(first) = rx.recv().await {
        let mut phones = 0;
        let mut next = Some(first);
        while let Some(job) = next.take() {
            match job {
                Job::Record(r) => {
                    phones += r.phones().max(1);
                    records.push(r);
                }
                Job::Flush(done) => flushes.push(done),
            }
            if phones < WRITE_PHONES {
                next = rx.try_recv().ok();
            }
        }
        let written = records.len();
        if written > 0 {
            if let Err(e) = store.put_records(&records).await {
                metrics.record_writes_failed(written as u64);
                tracing::warn!(records = records.len(), error = %e, "stop records not written");
            }
            queued.fetch_sub(phones, Ordering::AcqRel);
            records.clear();
        }
        for done in flushes.drain(..) {
            let _ = done.send(());
        }
        // Under load (more than one record came while the last write ran),
        // a moment for more to come: fewer, fuller writes.
        if written > 1 {
            tokio::time::sleep(LINGER).await;
        }
    }
}
