//! A stop, step by step: [`plan`] (parse, validate, dedupe, split),
//! [`fanout`] (the batches against CPH), [`merge`] (one entry per phone,
//! answered as [`response`]),
//! [`record`] (what the stop did, kept for the caller), [`wait`] (following
//! the jobs to their end); [`idempotency`] makes a retried stop safe.

mod answers;
pub mod fanout;
pub mod idempotency;
mod keeping;
pub mod merge;
pub mod outcome;
pub mod plan;
pub mod record;
pub mod response;
pub mod split;
pub mod wait;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use http::StatusCode;
use serde_json::Value;
use time::OffsetDateTime;
use tokio::time::Instant;

use crate::domain::{ApiError, Code, RequestId, TenantId};
use crate::store::{Claimed, KeyClaim, StopRecord, Store};
use crate::telemetry::{Metrics, request_log};
use crate::tenants::Project;
use crate::upstream::Upstream;
use fanout::{BatchResult, CallSummary, Fanout};
use idempotency::{IdempotencyKey, fingerprint};
use merge::{merge, merge_batch};
use outcome::BatchOutcome;
use plan::Plan;
use response::StopResponse;
use wait::Tracker;

/// One stop to run.
pub struct StopCall {
    pub tenant: TenantId,
    /// The `sub` of the caller's JWT.
    pub caller: Arc<str>,
    pub project: Arc<Project>,
    pub plan: Plan,
    pub request_id: RequestId,
    pub key: Option<IdempotencyKey>,
    pub deadline: Instant,
}

/// The answer to a stop.
#[derive(Debug)]
pub struct StopAnswer {
    pub status: StatusCode,
    pub body: Vec<u8>,
    /// The stop's request id: for a replay, the first request's.
    pub request_id: RequestId,
    /// Answered from an earlier request with the same `Idempotency-Key`.
    pub replayed: bool,
    /// A stop taken over from a replica that died: (batches that had an
    /// outcome and were not sent again, batches in all).
    pub resumed: Option<(usize, usize)>,
    /// What the stop did (absent on a replay).
    pub record: Option<Arc<StopRecord>>,
    /// Whether anything reached CPH (now, or before a resume).
    pub sent: bool,
}

/// Runs stops: fan-out, merge, stop records, idempotency keys, and the
/// request's counts and metrics.
pub struct Stops {
    fanout: Fanout,
    store: Arc<dyn Store>,
    tracker: Tracker,
    metrics: Arc<Metrics>,
    /// How long a key's claim holds while its stop runs.
    lease: Duration,
    records: keeping::RecordWriter,
}

impl Stops {
    pub fn new(
        upstream: Arc<Upstream>,
        store: Arc<dyn Store>,
        metrics: Arc<Metrics>,
        request_timeout: Duration,
    ) -> Self {
        Self {
            fanout: Fanout::new(upstream.clone(), metrics.clone()),
            records: keeping::RecordWriter::new(store.clone(), metrics.clone()),
            store,
            tracker: Tracker::new(upstream),
            metrics,
            // A stop ends within the request deadline; the margin covers
            // writing its answer.
            lease: request_timeout + Duration::from_secs(5),
        }
    }

    pub fn tracker(&self) -> &Tracker {
        &self.tracker
    }

    /// Runs a stop, honouring its `Idempotency-Key`.
    pub async fn execute(&self, call: StopCall) -> Result<StopAnswer, ApiError> {
        let Some(key) = call.key.clone() else {
            return Ok(self.run(&call, None, None).await);
        };
        let claim = KeyClaim {
            tenant: call.tenant.as_str().to_owned(),
            key: key.as_str().to_owned(),
            fingerprint: fingerprint(&call.project.id, &call.plan),
            request_id: call.request_id.as_str().to_owned(),
            lease: self.lease,
        };
        let claimed = self.store.claim_key(&claim).await.map_err(|e| {
            tracing::warn!(error = %e, "idempotency key not claimed: the store is unreachable");
            store_down()
        })?;
        match claimed {
            Claimed::Mismatch => Err(ApiError::new(
                Code::KeyReused,
                "this Idempotency-Key was used for a different request (another project or other phone ids)",
            )),
            Claimed::InFlight => Err(ApiError::new(
                Code::KeyInFlight,
                "a request with this Idempotency-Key is still running; retry later for its answer",
            )
            .retry_after(1)),
            Claimed::Replay {
                status,
                body,
                request_id,
            } => {
                self.metrics.idempotent_replay();
                Ok(StopAnswer {
                    status: StatusCode::from_u16(status).unwrap_or(StatusCode::OK),
                    body,
                    request_id: RequestId::from_header(Some(request_id.as_bytes())),
                    replayed: true,
                    resumed: None,
                    record: None,
                    sent: true,
                })
            }
            Claimed::New => {
                let answer = self.run(&call, Some(&call.request_id), None).await;
                self.finish(&claim, &answer).await;
                Ok(answer)
            }
            Claimed::TakenOver { request_id } => {
                let request_id = RequestId::from_header(Some(request_id.as_bytes()));
                let recorded = self
                    .store
                    .stop_record(call.tenant.as_str(), request_id.as_str())
                    .await
                    .map_err(|_| store_down())?;
                tracing::info!(request_id = %request_id, "resuming a stop whose replica stopped holding its key");
                let answer = self.run(&call, Some(&request_id), recorded.as_ref()).await;
                self.finish(&claim, &answer).await;
                Ok(answer)
            }
        }
    }

    /// Keeps the answer for replays, or lets the key go when nothing was
    /// sent (the caller may retry as if it never asked).
    async fn finish(&self, claim: &KeyClaim, answer: &StopAnswer) {
        let keep = answer.sent;
        let kept = if keep {
            Some((answer.status.as_u16(), answer.body.clone()))
        } else {
            None
        };
        let record = answer.record.clone();
        if let Err(e) = self.store.finish_key(claim, kept, record).await {
            tracing::warn!(error = %e, "idempotency key not finished; it is taken over when its lease ends");
        }
    }

    fn begin_record(&self, call: &StopCall, request_id: &RequestId) -> StopRecord {
        StopRecord {
            tenant: call.tenant.shared(),
            request_id: request_id.shared(),
            caller: call.caller.clone(),
            project_id: call.project.id.shared(),
            created_at: OffsetDateTime::now_utc(),
            batches: record::planned(&call.plan),
        }
    }

    /// Runs the batches (those of `resume` that had no outcome, or all),
    /// merges, records. With `progress`, each batch's outcome is written to
    /// the store as it comes (so that the stop can be resumed).
    async fn run(
        &self,
        call: &StopCall,
        progress: Option<&RequestId>,
        resume: Option<&StopRecord>,
    ) -> StopAnswer {
        let StopCall {
            tenant,
            project,
            plan,
            deadline,
            ..
        } = call;
        let request_id = progress.unwrap_or(&call.request_id);
        request_log::note(|f| {
            f.ids = Some(plan.ids().len());
            f.batches = Some(plan.batch_count());
        });
        // Batches a resumed stop already has outcomes for.
        let known: Vec<Option<BatchOutcome>> = (0..plan.batch_count())
            .map(|i| {
                let b = resume?.batches.iter().find(|b| b.index as usize == i)?;
                record::outcome_of(b, plan.batch(i))
            })
            .collect();
        let todo: Vec<bool> = known.iter().map(Option::is_none).collect();
        let kept = todo.iter().filter(|t| !**t).count();
        // Outcomes are written as they come only where a resume could use
        // them: a keyed stop of several batches.
        let head = progress
            .filter(|_| plan.batch_count() > 1)
            .map(|id| self.begin_record(call, id));
        let (writes, writer) = self.progress_writer(head);
        let on_batch = |index: usize, result: &BatchResult| {
            if let Some(tx) = &writes {
                let mut entries = Vec::new();
                merge_batch(plan.batch(index), &result.outcome, &mut entries);
                let batch =
                    record::answered(index, plan, result.upstream_request_ids.clone(), &entries);
                let _ = tx.send(batch);
            }
        };
        let calls = CallSummary::default();
        let results = self
            .fanout
            .run(
                project,
                plan,
                request_id.as_str(),
                *deadline,
                &calls,
                Some(&todo),
                &on_batch,
            )
            .await;
        drop(writes);
        request_log::note(|f| {
            f.upstream_calls = Some(calls.calls.load(Ordering::Relaxed));
            f.upstream_failed = Some(calls.failed.load(Ordering::Relaxed));
            f.upstream_max_ms = Some(calls.max_latency_us.load(Ordering::Relaxed) as f64 / 1000.0);
        });
        let mut upstream_ids: Vec<Vec<String>> = Vec::with_capacity(plan.batch_count());
        let outcomes: Vec<BatchOutcome> = results
            .into_iter()
            .zip(known)
            .enumerate()
            .map(|(i, (result, known))| match (result, known) {
                (Some(r), _) => {
                    upstream_ids.push(r.upstream_request_ids);
                    r.outcome
                }
                (None, Some(k)) => {
                    let ids = resume
                        .and_then(|r| r.batches.iter().find(|b| b.index as usize == i))
                        .map(|b| b.upstream_request_ids.clone())
                        .unwrap_or_default();
                    upstream_ids.push(ids);
                    k
                }
                (None, None) => {
                    upstream_ids.push(Vec::new());
                    BatchOutcome::failed(Code::Internal, "batch was not run")
                }
            })
            .collect();
        let merged = merge(plan, &outcomes);
        let counts = merged.outcome_counts();
        for (outcome, n) in counts {
            if n > 0 {
                self.metrics.phones(outcome.label(), tenant.as_str(), n);
            }
        }
        request_log::note(|f| {
            [f.stopped, f.rejected, f.failed, f.unknown] = counts.map(|(_, n)| Some(n));
        });
        // The record, batch by batch, from the merged entries.
        let mut batches = Vec::with_capacity(plan.batch_count());
        let mut start = 0;
        for (i, ids) in upstream_ids.into_iter().enumerate() {
            let len = plan.batch(i).len();
            batches.push(record::answered(
                i,
                plan,
                ids,
                &merged.jobs[start..start + len],
            ));
            start += len;
        }
        let record = Arc::new(StopRecord {
            tenant: tenant.shared(),
            request_id: request_id.shared(),
            caller: call.caller.clone(),
            project_id: project.id.shared(),
            created_at: resume.map_or_else(OffsetDateTime::now_utc, |r| r.created_at),
            batches,
        });
        let (status, error_code, error_msg) = match merged.failure {
            None => (StatusCode::OK, None, None),
            Some(code) => (
                code.status(),
                Some(code),
                Some(format!(
                    "no batch got a definite answer from CPH for {} phones; each phone's entry says why",
                    plan.ids().len()
                )),
            ),
        };
        let body = StopResponse {
            request_id: request_id.as_str(),
            error_code,
            error_msg,
            jobs: merged.jobs,
        }
        .to_json();
        if let Some(writer) = writer {
            // The last outcomes are written before the record is replaced
            // whole (with the key's answer).
            let _ = writer.await;
        }
        if progress.is_none() {
            self.keep_record(record.clone());
        }
        StopAnswer {
            status,
            body,
            request_id: request_id.clone(),
            replayed: false,
            resumed: resume.map(|_| (kept, plan.batch_count())),
            record: Some(record),
            sent: kept > 0 || calls.sent.load(Ordering::Relaxed) > 0,
        }
    }

    /// A tenant's stop record, if it is still kept.
    pub async fn record(
        &self,
        tenant: &TenantId,
        request_id: &str,
    ) -> Result<Option<StopRecord>, ApiError> {
        self.store
            .stop_record(tenant.as_str(), request_id)
            .await
            .map_err(|_| store_down())
    }

    /// The record's entries with their job states, waiting up to `until`
    /// for every job to be final; the body of a stop answer or of the
    /// record query.
    pub async fn follow(
        &self,
        project: &Arc<Project>,
        record: &StopRecord,
        until: Instant,
    ) -> Value {
        let batches = record::batch_ids(record);
        let jobs = record::job_ids(record);
        let states = match self
            .tracker
            .wait(project, &record.request_id, &batches, &jobs, until)
            .await
        {
            Ok(states) => Some(states),
            Err(e) => {
                tracing::warn!(error = %e, "job states unavailable; answering without them");
                None
            }
        };
        record::view(record, states.as_ref())
    }
}

fn store_down() -> ApiError {
    ApiError::new(
        Code::StoreUnavailable,
        "the shared store is unreachable and this request needs it (Idempotency-Key, stop records); nothing was sent",
    )
    .retry_after(1)
}
