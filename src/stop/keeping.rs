//! Writing stop records: a whole record off the answer's path, or a keyed
//! stop's batch outcomes as they come (what a resumed stop reads).

use std::sync::Arc;

use super::Stops;
use crate::store::{RecordBatch, StopRecord};

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
                    metrics.record_write_failed();
                    tracing::warn!(error = %e, batch = batch.index, "stop record: batch outcome not written");
                }
            }
        });
        (Some(tx), Some(writer))
    }

    /// Writes a stop's record off the answer's path; a failure is logged and
    /// counted, never fails the stop.
    pub(super) fn keep_record(&self, record: Arc<StopRecord>) {
        let store = self.store.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            if let Err(e) = store.put_record(&record).await {
                metrics.record_write_failed();
                tracing::warn!(request_id = %record.request_id, error = %e, "stop record not written");
            }
        });
    }
}
