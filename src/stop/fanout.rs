//! Runs a [`Plan`] against CPH: batches concurrently within the per-request
//! and per-project limits, retries only where it is safe, within a retry
//! budget and the request's deadline; one [`BatchOutcome`] per batch.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::time::Instant;
use tracing::Instrument;

pub use super::answers::{answers, answers_for};
use super::answers::{rejected, retry_reason};
use super::outcome::BatchOutcome;
use super::plan::Plan;
use super::split::{Ran, may_cure, split};
use crate::domain::{Code, PhoneId};
use crate::telemetry::Metrics;
use crate::tenants::Project;
use crate::upstream::cph::CallOutcome;
use crate::upstream::credentials::{Answer, AuthError, Authorization};
use crate::upstream::retry::Backoff;
use crate::upstream::{ProjectSlot, Upstream};

/// What one request's upstream calls came to, for its log line.
#[derive(Debug, Default)]
pub struct CallSummary {
    /// Upstream calls made (retries included).
    pub calls: AtomicU32,
    /// Calls that did not answer 200 with jobs.
    pub failed: AtomicU32,
    /// Slowest call, in microseconds.
    pub max_latency_us: AtomicU64,
    /// Calls that reached CPH (sent, whatever the answer): a stop with none
    /// did nothing upstream.
    pub sent: AtomicU32,
}

impl CallSummary {
    fn record(&self, ok: bool, latency: Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.max_latency_us.fetch_max(us, Ordering::Relaxed);
    }
}

/// Between retries of a batch: 50 ms doubling to 2 s, full jitter.
const RETRY_BACKOFF: Backoff = Backoff {
    base: Duration::from_millis(50),
    max: Duration::from_secs(2),
    floor: 0.0,
};

const NOT_SENT: &str = "not sent: the request's deadline passed before this batch could be sent; these phones were not stopped and are safe to retry";

/// What one batch came to: its outcome, and CPH's request ids of the
/// answers it got (what the job list takes).
#[derive(Debug)]
pub struct BatchResult {
    pub outcome: BatchOutcome,
    pub upstream_request_ids: Vec<String>,
}

impl From<BatchOutcome> for BatchResult {
    fn from(outcome: BatchOutcome) -> Self {
        Self {
            outcome,
            upstream_request_ids: Vec::new(),
        }
    }
}

/// Executes stop plans.
pub struct Fanout {
    upstream: Arc<Upstream>,
    metrics: Arc<Metrics>,
}

/// One batch of one request (or a part of one, see [`super::split`]), and
/// what its calls share.
#[derive(Clone, Copy)]
struct BatchCall<'a> {
    project: &'a Arc<Project>,
    slot: &'a ProjectSlot,
    ids: &'a [PhoneId],
    request_id: &'a str,
    deadline: Instant,
    summary: &'a CallSummary,
}

/// One attempt at a batch, before retries are decided.
enum Attempt {
    /// The deadline passed before the call was sent.
    NotSent,
    /// Sent; the deadline passed before the answer came.
    TimedOut,
    Done(CallOutcome),
}

impl Answer for Attempt {
    fn is_unauthorized(&self) -> bool {
        matches!(self, Attempt::Done(o) if o.is_unauthorized())
    }
    fn is_answered(&self) -> bool {
        matches!(self, Attempt::Done(o) if o.is_answered())
    }
}

impl Fanout {
    pub fn new(upstream: Arc<Upstream>, metrics: Arc<Metrics>) -> Self {
        Self { upstream, metrics }
    }

    /// Runs the batches of `plan` that `todo` marks (all when `None`); the
    /// result has one entry per batch, in batch order (`None` for a batch
    /// not run), whatever happens. `on_batch` hears of each batch as it ends.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        &self,
        project: &Arc<Project>,
        plan: &Plan,
        request_id: &str,
        deadline: Instant,
        summary: &CallSummary,
        todo: Option<&[bool]>,
        on_batch: &(dyn Fn(usize, &BatchResult) + Sync),
    ) -> Vec<Option<BatchResult>> {
        let slot = self.upstream.slot(&project.id);
        let mut results: Vec<Option<BatchResult>> = (0..plan.batch_count()).map(|_| None).collect();
        let wanted = |i: &usize| todo.is_none_or(|t| t.get(*i).copied().unwrap_or(true));
        let batch = |index: usize| {
            let ids = plan.batch(index);
            let span = tracing::debug_span!("batch", index, size = ids.len());
            let slot = &slot;
            let call = BatchCall {
                project,
                slot,
                ids,
                request_id,
                deadline,
                summary,
            };
            async move {
                // Every batch earns a share of its project's retry
                // budget; the calls of a split do not (they are outside
                // the budget).
                call.slot.budget.earn();
                (index, self.run_batch_splitting(&call).await)
            }
            .instrument(span)
        };
        // One batch (most stops) runs right here: no stream of futures, no
        // task of its own in one to allocate and move it into.
        if plan.batch_count() == 1 {
            if wanted(&0) {
                let (index, result) = batch(0).await;
                on_batch(index, &result);
                results[index] = Some(result);
            }
            return results;
        }
        // Indices, not slices, go through the stream: a closure taking a
        // borrowed slice trips the compiler's higher-ranked lifetime check.
        let mut running = futures_util::stream::iter((0..plan.batch_count()).filter(wanted))
            .map(batch)
            .buffer_unordered(self.upstream.cfg.max_concurrency_per_request);
        while let Some((index, result)) = running.next().await {
            on_batch(index, &result);
            results[index] = Some(result);
        }
        results
    }

    /// One call of one batch, within the project's limit and the deadline.
    async fn attempt(&self, call: &BatchCall<'_>, auth: &Authorization, attempt: u32) -> Attempt {
        let BatchCall {
            project,
            slot,
            ids,
            request_id,
            deadline,
            summary,
        } = *call;
        let Ok(_permit) = tokio::time::timeout_at(deadline, slot.acquire()).await else {
            return Attempt::NotSent;
        };
        if Instant::now() >= deadline {
            return Attempt::NotSent;
        }
        // One span per upstream call (at debug: a healthy stop's calls are
        // summed up on its request line); the client records status,
        // latency and CPH's request id on it.
        let call_span = tracing::debug_span!(
            "upstream_call",
            attempt,
            status = tracing::field::Empty,
            latency_ms = tracing::field::Empty,
            upstream_request_id = tracing::field::Empty,
        );
        let started = Instant::now();
        let call = tokio::time::timeout_at(
            deadline,
            self.upstream
                .cph
                .batch_stop(project, auth, request_id, ids)
                .instrument(call_span),
        )
        .await;
        summary.record(
            matches!(call, Ok(CallOutcome::Jobs { .. })),
            started.elapsed(),
        );
        if !matches!(call, Ok(CallOutcome::NotSent(_))) {
            summary.sent.fetch_add(1, Ordering::Relaxed);
        }
        match call {
            Ok(outcome) => Attempt::Done(outcome),
            Err(_) => Attempt::TimedOut,
        }
    }

    /// Runs one batch; if CPH refuses it whole in a way a split may cure,
    /// splits it (see [`super::split`]).
    async fn run_batch_splitting(&self, call: &BatchCall<'_>) -> BatchResult {
        let first = self.run_batch(call).await;
        if !first.splittable || call.ids.len() < 2 {
            return BatchResult {
                outcome: first.outcome,
                upstream_request_ids: first.upstream_request_ids,
            };
        }
        let mut upstream_request_ids = first.upstream_request_ids;
        // Boxed, as splits are rare: inline, the split's calls would make
        // every batch's future larger.
        let (parts, calls) = Box::pin(split(
            call.ids.len(),
            first.outcome,
            call.deadline,
            &self.metrics,
            &mut upstream_request_ids,
            |range| {
                let part = BatchCall {
                    ids: &call.ids[range],
                    ..*call
                };
                async move { self.run_batch(&part).await }
            },
        ))
        .await;
        tracing::info!(
            ids = call.ids.len(),
            split_calls = calls,
            parts = parts.len(),
            "CPH refused a whole batch; split it to answer each phone"
        );
        BatchResult {
            outcome: BatchOutcome::Split(parts),
            upstream_request_ids,
        }
    }

    /// One batch (or part of one), with its retries.
    async fn run_batch(&self, call: &BatchCall<'_>) -> Ran {
        let budget = &call.slot.budget;
        let deadline = call.deadline;
        let mut retries = 0;
        loop {
            let attempt = self
                .upstream
                .credentials
                .call(call.project, deadline, |auth| async move {
                    self.attempt(call, &auth, retries + 1).await
                })
                .await;
            let outcome = match attempt {
                Err(AuthError::Deadline) | Ok(Attempt::NotSent) => {
                    return BatchOutcome::failed(Code::UpstreamTimeout, NOT_SENT).into();
                }
                Err(AuthError::Iam(e)) => {
                    return BatchOutcome::failed(Code::IamUnavailable, e.to_string()).into();
                }
                Ok(Attempt::TimedOut) => {
                    return BatchOutcome::failed(
                        Code::UpstreamTimeout,
                        "the request's deadline passed while waiting for CPH; the outcome of this stop is unknown: check with the job query or retry",
                    )
                    .into();
                }
                Ok(Attempt::Done(outcome)) => outcome,
            };
            // What this attempt came to, and whether another may be made
            // (with the server's Retry-After, if it sent one).
            let (failure, retry_after, reason) = match outcome {
                CallOutcome::Jobs { jobs, request_id } => {
                    return Ran {
                        outcome: BatchOutcome::Jobs(answers_for(jobs, call.ids)),
                        splittable: false,
                        upstream_request_ids: request_id.into_iter().collect(),
                    };
                }
                CallOutcome::Rejected {
                    status,
                    error_code,
                    error_msg,
                    retry_after,
                } => {
                    let reason = retry_reason(status, error_code.as_deref());
                    let splittable = may_cure(status, error_code.as_deref());
                    let failure = rejected(status, error_code, error_msg);
                    let Some(reason) = reason else {
                        return Ran {
                            outcome: failure,
                            splittable,
                            upstream_request_ids: Vec::new(),
                        };
                    };
                    (failure, retry_after, reason)
                }
                CallOutcome::NotSent(reason) => (
                    BatchOutcome::failed(
                        Code::UpstreamFailed,
                        format!(
                            "CPH unreachable after {} attempts: {reason}; these phones were not stopped",
                            retries + 1
                        ),
                    ),
                    None,
                    "connect",
                ),
                // Sent, then no answer or a broken one: CPH may have acted,
                // so the batch is never resent.
                CallOutcome::Timeout => {
                    return BatchOutcome::failed(
                        Code::UpstreamTimeout,
                        format!(
                            "CPH did not answer within {} ms; the outcome of this stop is unknown: check with the job query or retry",
                            self.upstream.cfg.timeout.as_millis()
                        ),
                    )
                    .into();
                }
                CallOutcome::Broken(reason) => {
                    return BatchOutcome::failed(
                        Code::UpstreamFailed,
                        format!(
                            "CPH call failed after the request was sent ({reason}); the outcome of this stop is unknown"
                        ),
                    )
                    .into();
                }
            };
            // A retry: within max_retries, the budget, and the deadline.
            let delay =
                RETRY_BACKOFF.delay_or(retries, retry_after, self.upstream.cfg.max_retry_after);
            if retries >= self.upstream.cfg.max_retries
                || Instant::now() + delay >= deadline
                || !budget.try_spend()
            {
                return failure.into();
            }
            self.metrics.upstream_retry(reason);
            tracing::debug!(
                retry = retries + 1,
                delay_ms = delay.as_millis() as u64,
                "retrying batch"
            );
            tokio::time::sleep(delay).await;
            retries += 1;
        }
    }
}
