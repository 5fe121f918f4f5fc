//! Counters of what the simulator saw and did.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use axum::http::StatusCode;
use serde::{Deserialize, Serialize};

/// Counters of what the simulator saw and did (see `Sim::stats`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SimStats {
    /// `POST /v3/auth/tokens` requests, whatever their outcome.
    pub iam_requests: u64,
    /// Tokens handed out.
    pub tokens_issued: u64,
    /// Batch-stop requests received, whatever their outcome.
    pub batch_stop_requests: u64,
    /// Ids received in well-formed batch-stop bodies (including refused ones).
    pub batch_stop_ids: u64,
    /// Longest `phone_ids` list received.
    pub max_ids_per_call: u64,
    /// Highest number of batch-stop calls handled at once for one project,
    /// from request arrival to response or reset (latency and hangs included).
    pub max_in_flight_per_project: u64,
    /// Batch-stop calls being handled right now, all projects together
    /// (a gauge: `Sim::reset_stats` leaves it alone).
    pub in_flight: u64,
    /// Job queries (`GET .../jobs/{job_id}`) received.
    pub job_queries: u64,
    /// Highest number of job queries handled at once, all projects
    /// together (latency included).
    pub max_job_queries_in_flight: u64,
    /// Job list requests (`GET .../jobs?request_ids=..`) received.
    pub job_list_requests: u64,
    /// 401 answers given (IAM and CPH: bad token, bad AK/SK signature).
    pub unauthorized: u64,
    /// CPH requests authenticated by a valid AK/SK signature.
    pub signed_requests: u64,
    /// Injected faults that fired (500, 503, 429, hang, reset).
    pub faults_injected: u64,
    /// Stop jobs created, i.e. phones that went from running (or stop failed)
    /// to stopping. A phone counts once unless a stop of it failed.
    pub stopped_phones: u64,
    /// Answers of the IAM and CPH routes by HTTP status (resets give none).
    pub responses_by_status: BTreeMap<u16, u64>,
}

/// Lock-free counters behind [`SimStats`].
pub(crate) struct Counters {
    pub iam_requests: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub batch_stop_requests: AtomicU64,
    pub batch_stop_ids: AtomicU64,
    pub max_ids_per_call: AtomicU64,
    pub max_in_flight_per_project: AtomicU64,
    pub in_flight: AtomicU64,
    pub job_queries: AtomicU64,
    pub max_job_queries_in_flight: AtomicU64,
    pub job_queries_in_flight: AtomicU64,
    pub job_list_requests: AtomicU64,
    pub unauthorized: AtomicU64,
    pub signed_requests: AtomicU64,
    pub faults_injected: AtomicU64,
    pub stopped_phones: AtomicU64,
    /// Indexed by status code (100..=599).
    by_status: Box<[AtomicU64]>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            iam_requests: AtomicU64::default(),
            tokens_issued: AtomicU64::default(),
            batch_stop_requests: AtomicU64::default(),
            batch_stop_ids: AtomicU64::default(),
            max_ids_per_call: AtomicU64::default(),
            max_in_flight_per_project: AtomicU64::default(),
            in_flight: AtomicU64::default(),
            job_queries: AtomicU64::default(),
            max_job_queries_in_flight: AtomicU64::default(),
            job_queries_in_flight: AtomicU64::default(),
            job_list_requests: AtomicU64::default(),
            unauthorized: AtomicU64::default(),
            signed_requests: AtomicU64::default(),
            faults_injected: AtomicU64::default(),
            stopped_phones: AtomicU64::default(),
            by_status: (0..600).map(|_| AtomicU64::default()).collect(),
        }
    }
}

/// Adds one to a counter.
pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Counters {
    /// Counts an answer by status (and 401s as unauthorized).
    pub(crate) fn record_status(&self, status: StatusCode) {
        if let Some(c) = self.by_status.get(usize::from(status.as_u16())) {
            inc(c);
        }
        if status == StatusCode::UNAUTHORIZED {
            inc(&self.unauthorized);
        }
    }

    /// The counters without the in-flight gauge.
    fn resettable(&self) -> [&AtomicU64; 13] {
        [
            &self.iam_requests,
            &self.tokens_issued,
            &self.batch_stop_requests,
            &self.batch_stop_ids,
            &self.max_ids_per_call,
            &self.max_in_flight_per_project,
            &self.job_queries,
            &self.max_job_queries_in_flight,
            &self.job_list_requests,
            &self.unauthorized,
            &self.signed_requests,
            &self.faults_injected,
            &self.stopped_phones,
        ]
    }

    pub(crate) fn reset(&self) {
        for c in self.resettable().into_iter().chain(self.by_status.iter()) {
            c.store(0, Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> SimStats {
        let get = |c: &AtomicU64| c.load(Relaxed);
        SimStats {
            iam_requests: get(&self.iam_requests),
            tokens_issued: get(&self.tokens_issued),
            batch_stop_requests: get(&self.batch_stop_requests),
            batch_stop_ids: get(&self.batch_stop_ids),
            max_ids_per_call: get(&self.max_ids_per_call),
            max_in_flight_per_project: get(&self.max_in_flight_per_project),
            in_flight: get(&self.in_flight),
            job_queries: get(&self.job_queries),
            max_job_queries_in_flight: get(&self.max_job_queries_in_flight),
            job_list_requests: get(&self.job_list_requests),
            unauthorized: get(&self.unauthorized),
            signed_requests: get(&self.signed_requests),
            faults_injected: get(&self.faults_injected),
            stopped_phones: get(&self.stopped_phones),
            responses_by_status: (0u16..)
                .zip(self.by_status.iter())
                .filter_map(|(status, c)| Some((status, get(c))).filter(|(_, n)| *n > 0))
                .collect(),
        }
    }
}
