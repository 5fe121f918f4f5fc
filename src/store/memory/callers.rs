//! Idempotency keys and stop records of a gateway running alone: bounded
//! caches that expire with the retentions (and are lost on restart).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use super::records::Records;
use crate::store::{Claimed, KeyClaim, RecordBatch, Retention, StopRecord};

/// Idempotency answers kept, in bytes of answer body.
pub const KEY_BYTES_KEPT: u64 = 64 * 1024 * 1024;
/// Stop records kept, in bytes (as estimated by `records::record_bytes`).
pub const RECORD_BYTES_KEPT: usize = 32 * 1024 * 1024;

/// An idempotency key in memory.
#[derive(Clone)]
enum Key {
    Running {
        fingerprint: String,
        request_id: String,
        lease_until: Instant,
    },
    Done {
        fingerprint: String,
        request_id: String,
        status: u16,
        body: Arc<[u8]>,
    },
}

impl Key {
    fn fingerprint(&self) -> &str {
        match self {
            Key::Running { fingerprint, .. } | Key::Done { fingerprint, .. } => fingerprint,
        }
    }
}

/// The keys and records.
pub struct Callers {
    keys: moka::sync::Cache<(String, String), Key>,
    /// Whole records, shared with the stop that made them (a batch outcome
    /// written as it comes replaces the record with an updated copy).
    records: Records,
    /// Serializes batch outcomes written as they come (read, copy, replace).
    progress: Mutex<()>,
}

impl Callers {
    pub fn new(retention: Retention) -> Self {
        Self {
            keys: moka::sync::Cache::builder()
                .max_capacity(KEY_BYTES_KEPT)
                .weigher(|_, k: &Key| match k {
                    Key::Done { body, .. } => u32::try_from(body.len() + 256).unwrap_or(u32::MAX),
                    Key::Running { .. } => 256,
                })
                .time_to_live(retention.keys)
                .build(),
            records: Records::new(RECORD_BYTES_KEPT, retention.records),
            progress: Mutex::new(()),
        }
    }

    pub fn claim(&self, claim: &KeyClaim) -> Claimed {
        use moka::ops::compute::Op;
        let mut outcome = Claimed::New;
        let running = Key::Running {
            fingerprint: claim.fingerprint.clone(),
            request_id: claim.request_id.clone(),
            lease_until: Instant::now() + claim.lease,
        };
        self.keys
            .entry((claim.tenant.clone(), claim.key.clone()))
            .and_compute_with(|existing| match existing.map(|e| e.into_value()) {
                None => Op::Put(running),
                Some(key) if key.fingerprint() != claim.fingerprint => {
                    outcome = Claimed::Mismatch;
                    Op::Nop
                }
                Some(Key::Done {
                    request_id,
                    status,
                    body,
                    ..
                }) => {
                    outcome = Claimed::Replay {
                        status,
                        body: body.to_vec(),
                        request_id,
                    };
                    Op::Nop
                }
                Some(Key::Running { lease_until, .. }) if lease_until > Instant::now() => {
                    outcome = Claimed::InFlight;
                    Op::Nop
                }
                Some(Key::Running { request_id, .. }) => {
                    outcome = Claimed::TakenOver {
                        request_id: request_id.clone(),
                    };
                    Op::Put(Key::Running {
                        fingerprint: claim.fingerprint.clone(),
                        request_id,
                        lease_until: Instant::now() + claim.lease,
                    })
                }
            });
        outcome
    }

    pub fn finish(&self, tenant: &str, key: &str, answer: Option<(u16, Vec<u8>)>) {
        let id = (tenant.to_owned(), key.to_owned());
        match (answer, self.keys.get(&id)) {
            (
                Some((status, body)),
                Some(Key::Running {
                    fingerprint,
                    request_id,
                    ..
                }),
            ) => self.keys.insert(
                id,
                Key::Done {
                    fingerprint,
                    request_id,
                    status,
                    body: body.into(),
                },
            ),
            (None, _) => self.keys.invalidate(&id),
            (Some(_), _) => {}
        }
    }

    pub fn put_record(&self, record: Arc<StopRecord>) {
        self.records.insert(record);
    }

    pub fn put_record_batch(&self, head: &StopRecord, batch: &RecordBatch) {
        let _one_at_a_time = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        let mut record = match self.records.get(&head.tenant, &head.request_id) {
            Some(r) => StopRecord::clone(&r),
            None => StopRecord {
                batches: Vec::new(),
                ..head.clone()
            },
        };
        match record.batches.iter_mut().find(|b| b.index == batch.index) {
            Some(b) => *b = batch.clone(),
            None => record.batches.push(batch.clone()),
        }
        self.records.insert(Arc::new(record));
    }

    pub fn record(&self, tenant: &str, request_id: &str) -> Option<StopRecord> {
        self.records
            .get(tenant, request_id)
            .map(|r| StopRecord::clone(&r))
    }
}
