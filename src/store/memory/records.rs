//! Stop records of a gateway running alone: a table bounded in (estimated)
//! bytes whose oldest records go first, each kept at most the retention.
//! Records arrive in time order from one writer, so age and insertion order
//! are the same: a queue of insertions beside the map is all the eviction
//! needs (a cache with per-entry frequency tracking costs more per insert
//! than the rest of a record's keeping).

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crate::store::StopRecord;

/// About what a record takes in memory: its strings and the allocations
/// around them (a single-id record comes to about 700 bytes).
/// (A phone id shared by a batch's list and its entry counts twice.)
pub fn record_bytes(r: &StopRecord) -> usize {
    fn strings<S: AsRef<str>>(v: &[S]) -> usize {
        v.iter().map(|s| s.as_ref().len() + 32).sum()
    }
    256 + r.tenant.len()
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
                                    + e.job_id.as_ref().map_or(0, |j| j.len())
                                    + e.error_code.as_ref().map_or(0, |s| s.len())
                                    + e.error_msg.as_ref().map_or(0, |s| s.len())
                            })
                            .sum()
                    })
            })
            .sum::<usize>()
}

type Id = (Arc<str>, Arc<str>);

struct Kept {
    record: Arc<StopRecord>,
    /// Which insertion this is (an older queue entry for the id is stale).
    seq: u64,
    bytes: usize,
    at: Instant,
}

#[derive(Default)]
struct Table {
    by_id: HashMap<Id, Kept>,
    /// Insertions, oldest first.
    order: VecDeque<(u64, Id)>,
    next_seq: u64,
    bytes: usize,
}

pub struct Records {
    table: Mutex<Table>,
    max_bytes: usize,
    retention: Duration,
}

impl Records {
    pub fn new(max_bytes: usize, retention: Duration) -> Self {
        Self {
            table: Mutex::new(Table::default()),
            max_bytes,
            retention,
        }
    }

    /// Keeps `record`, replacing one with the same tenant and request id.
    pub fn insert(&self, record: Arc<StopRecord>) {
        let bytes = record_bytes(&record);
        let id = (record.tenant.clone(), record.request_id.clone());
        let now = Instant::now();
        // Evicted records are freed after the lock is let go: a 10,000-id
        // record takes a while to free, and other stops wait on the lock.
        let mut evicted = Vec::new();
        let mut t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let seq = t.next_seq;
        t.next_seq += 1;
        t.order.push_back((seq, id.clone()));
        t.bytes += bytes;
        let kept = Kept {
            record,
            seq,
            bytes,
            at: now,
        };
        if let Some(old) = t.by_id.insert(id, kept) {
            t.bytes -= old.bytes;
            evicted.push(old);
        }
        // The oldest go while over the bound or past the retention (a
        // record over the bound on its own is not kept either).
        while let Some((seq, id)) = t.order.front() {
            let live = t.by_id.get(id).filter(|k| k.seq == *seq);
            let evict = match live {
                None => true, // replaced since: a stale entry
                Some(k) => t.bytes > self.max_bytes || now.duration_since(k.at) >= self.retention,
            };
            if !evict {
                break;
            }
            let Some((seq, id)) = t.order.pop_front() else {
                break;
            };
            if t.by_id.get(&id).is_some_and(|k| k.seq == seq)
                && let Some(gone) = t.by_id.remove(&id)
            {
                t.bytes -= gone.bytes;
                evicted.push(gone);
            }
        }
        drop(t);
        drop(evicted);
    }

    /// The record of (`tenant`, `request_id`), if kept and not expired.
    pub fn get(&self, tenant: &str, request_id: &str) -> Option<Arc<StopRecord>> {
        let t = self.table.lock().unwrap_or_else(PoisonError::into_inner);
        let kept = t.by_id.get(&(Arc::from(tenant), Arc::from(request_id)))?;
        (kept.at.elapsed() < self.retention).then(|| kept.record.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(id: &str) -> Arc<StopRecord> {
        Arc::new(StopRecord {
            tenant: "acme".into(),
            request_id: id.into(),
            caller: "svc".into(),
            project_id: "0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            batches: Vec::new(),
        })
    }

    #[test]
    fn the_oldest_go_first_when_over_the_bound_and_a_replaced_record_counts_once() {
        let one = record_bytes(&record("r0"));
        let records = Records::new(3 * one, Duration::from_secs(60));
        for i in 0..3 {
            records.insert(record(&format!("r{i}")));
        }
        // Replacing r0 makes it the newest; r1 is then the oldest.
        records.insert(record("r0"));
        records.insert(record("r3"));
        let kept: Vec<bool> = (0..4)
            .map(|i| records.get("acme", &format!("r{i}")).is_some())
            .collect();
        assert_eq!(kept, [true, false, true, true]);
        let t = records.table.lock().unwrap();
        assert_eq!(t.bytes, 3 * one);
        assert_eq!(t.by_id.len(), 3);
    }

    #[test]
    fn records_past_the_retention_are_not_answered_and_go_on_the_next_insert() {
        let records = Records::new(1 << 20, Duration::from_millis(20));
        records.insert(record("old"));
        std::thread::sleep(Duration::from_millis(30));
        assert!(records.get("acme", "old").is_none());
        records.insert(record("new"));
        assert!(records.get("acme", "new").is_some());
        assert_eq!(records.table.lock().unwrap().by_id.len(), 1);
    }
}
