//! Idempotency keys and stop records of a gateway running alone: bounded
//! caches that expire with the retentions (and are lost on restart).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::store::{Claimed, KeyClaim, RecordBatch, Retention, StopRecord};

/// Idempotency answers kept, in bytes of answer body.
pub const KEY_BYTES_KEPT: u64 = 64 * 1024 * 1024;
/// Stop records kept, in bytes (as estimated by [`record_bytes`]).
pub const RECORD_BYTES_KEPT: u64 = 32 * 1024 * 1024;

/// About what a record takes in memory: its strings and the allocations
/// around them (a single-id record comes to about 700 bytes).
fn record_bytes(r: &StopRecord) -> u32 {
    let strings = |v: &[String]| v.iter().map(|s| s.len() + 32).sum::<usize>();
    let bytes = 256
        + r.tenant.len()
        + 2 * r.request_id.len()
        + r.caller.len()
        + r.project_id.len()
        + r.batches
            .iter()
            .map(|b| {
                96 + strings(&b.phone_ids)
                    + strings(&b.upstream_request_ids)
                    + b.entries.as_deref().map_or(0, |e| {
                        e.iter()
                            .map(|e| {
                                112 + e.phone_id.len()
                                    + e.job_id.as_ref().map_or(0, String::len)
                                    + e.error_code.as_ref().map_or(0, String::len)
                                    + e.error_msg.as_ref().map_or(0, String::len)
                            })
                            .sum()
                    })
            })
            .sum::<usize>();
    u32::try_from(bytes).unwrap_or(u32::MAX)
}

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
    records: moka::sync::Cache<(String, String), Arc<StopRecord>>,
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
            records: moka::sync::Cache::builder()
                .max_capacity(RECORD_BYTES_KEPT)
                .weigher(|_, r: &Arc<StopRecord>| record_bytes(r))
                .time_to_live(retention.records)
                .build(),
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
        self.records
            .insert((record.tenant.clone(), record.request_id.clone()), record);
    }

    pub fn put_record_batch(&self, head: &StopRecord, batch: &RecordBatch) {
        let id = (head.tenant.clone(), head.request_id.clone());
        let _one_at_a_time = self.progress.lock().unwrap_or_else(|e| e.into_inner());
        let mut record = match self.records.get(&id) {
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
        self.records.insert(id, Arc::new(record));
    }

    pub fn record(&self, tenant: &str, request_id: &str) -> Option<StopRecord> {
        self.records
            .get(&(tenant.to_owned(), request_id.to_owned()))
            .map(|r| StopRecord::clone(&r))
    }
}
