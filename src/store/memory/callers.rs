//! Idempotency keys and stop records of a gateway running alone: bounded
//! caches that expire with the retentions (and are lost on restart).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::store::{Claimed, KeyClaim, RecordBatch, Retention, StopRecord};

/// Idempotency answers kept, in bytes of answer body.
pub const KEY_BYTES_KEPT: u64 = 64 * 1024 * 1024;
/// Stop records kept, in phones (about 150 bytes each).
pub const RECORD_PHONES_KEPT: u64 = 200_000;

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
    records: moka::sync::Cache<(String, String), Arc<Mutex<StopRecord>>>,
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
                .max_capacity(RECORD_PHONES_KEPT)
                .weigher(|_, r: &Arc<Mutex<StopRecord>>| {
                    let phones = r.lock().map(|r| r.phones()).unwrap_or(1);
                    u32::try_from(phones.max(1)).unwrap_or(u32::MAX)
                })
                .time_to_live(retention.records)
                .build(),
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

    pub fn put_record(&self, record: &StopRecord) {
        self.records.insert(
            (record.tenant.clone(), record.request_id.clone()),
            Arc::new(Mutex::new(record.clone())),
        );
    }

    pub fn put_record_batch(&self, head: &StopRecord, batch: &RecordBatch) {
        let id = (head.tenant.clone(), head.request_id.clone());
        let record = self.records.get_with(id, || {
            Arc::new(Mutex::new(StopRecord {
                batches: Vec::new(),
                ..head.clone()
            }))
        });
        {
            let mut record = record.lock().unwrap_or_else(|e| e.into_inner());
            match record.batches.iter_mut().find(|b| b.index == batch.index) {
                Some(b) => *b = batch.clone(),
                None => record.batches.push(batch.clone()),
            }
        }
    }

    pub fn record(&self, tenant: &str, request_id: &str) -> Option<StopRecord> {
        self.records
            .get(&(tenant.to_owned(), request_id.to_owned()))
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone())
    }
}
