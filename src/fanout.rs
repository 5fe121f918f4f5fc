//! Runs a [`Plan`] against CPH: batches concurrently within the per-request
//! and per-project limits, retries only where it is safe, within a retry
//! budget and the request's deadline; one [`BatchOutcome`] per batch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use reqwest::StatusCode;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tracing::Instrument;

use crate::config::UpstreamConfig;
use crate::cph::{CallOutcome, CphClient};
use crate::domain::ProjectId;
use crate::error::Code;
use crate::iam::IamProvider;
use crate::plan::{BatchOutcome, Plan};
use crate::telemetry::{Metrics, ProjectLabel};
use crate::tenants::Project;
use prometheus_client::metrics::gauge::Gauge;

/// Bounds retries across all requests: every first attempt earns `ratio` of
/// a retry, every retry spends one, so an outage adds at most that fraction
/// of extra upstream calls (plus a small reserve).
struct RetryBudget {
    ratio: f64,
    balance: Mutex<f64>,
}

const BUDGET_RESERVE: f64 = 10.0;
const BUDGET_CAP: f64 = 1000.0;

impl RetryBudget {
    fn new(ratio: f64) -> Self {
        Self {
            ratio,
            balance: Mutex::new(BUDGET_RESERVE),
        }
    }
    fn earn(&self) {
        let mut b = self.balance.lock().unwrap_or_else(|e| e.into_inner());
        *b = (*b + self.ratio).min(BUDGET_CAP);
    }
    fn try_spend(&self) -> bool {
        let mut b = self.balance.lock().unwrap_or_else(|e| e.into_inner());
        if *b >= 1.0 {
            *b -= 1.0;
            true
        } else {
            false
        }
    }
}

/// What all requests to one project share.
struct ProjectSlot {
    limit: Semaphore,
    in_flight: Gauge,
}

/// What one request's upstream calls came to, for its log line.
#[derive(Debug, Default)]
pub struct CallSummary {
    /// Upstream calls made (retries included).
    pub calls: AtomicU32,
    /// Calls that did not answer 200 with jobs.
    pub failed: AtomicU32,
    /// Slowest call, in microseconds.
    pub max_latency_us: AtomicU64,
}

impl CallSummary {
    fn record(&self, ok: bool, latency: std::time::Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.failed.fetch_add(1, Ordering::Relaxed);
        }
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.max_latency_us.fetch_max(us, Ordering::Relaxed);
    }
}

/// Executes stop plans.
pub struct Fanout {
    cph: CphClient,
    iam: Arc<IamProvider>,
    cfg: UpstreamConfig,
    /// Per project, shared by all requests: the concurrency limit and the
    /// in-flight gauge.
    projects: Mutex<HashMap<ProjectId, Arc<ProjectSlot>>>,
    budget: RetryBudget,
    metrics: Arc<Metrics>,
}

const BASE_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

impl Fanout {
    pub fn new(
        cph: CphClient,
        iam: Arc<IamProvider>,
        cfg: UpstreamConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let budget = RetryBudget::new(cfg.retry_budget_ratio);
        Self {
            cph,
            iam,
            cfg,
            projects: Mutex::default(),
            budget,
            metrics,
        }
    }

    pub fn iam(&self) -> &Arc<IamProvider> {
        &self.iam
    }

    pub fn cph(&self) -> &CphClient {
        &self.cph
    }

    /// The project's shared limit and gauge.
    fn project_slot(&self, project: &ProjectId) -> Arc<ProjectSlot> {
        let mut map = self.projects.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(project.clone())
            .or_insert_with(|| {
                let in_flight = self
                    .metrics
                    .upstream_in_flight
                    .get_or_create(&ProjectLabel {
                        project: project.to_string(),
                    })
                    .clone();
                Arc::new(ProjectSlot {
                    limit: Semaphore::new(self.cfg.max_concurrency_per_project),
                    in_flight,
                })
            })
            .clone()
    }

    /// Runs every batch of `plan`; the result has one outcome per batch, in
    /// batch order, whatever happens.
    pub async fn run(
        &self,
        project: &Arc<Project>,
        plan: &Plan,
        request_id: &str,
        deadline: Instant,
        summary: &CallSummary,
    ) -> Vec<BatchOutcome> {
        let slot = self.project_slot(&project.id);
        let mut outcomes: Vec<Option<BatchOutcome>> =
            (0..plan.batch_count()).map(|_| None).collect();
        // Indices, not slices, go through the stream: a closure taking a
        // borrowed slice trips the compiler's higher-ranked lifetime check.
        let mut running = futures_util::stream::iter(0..plan.batch_count())
            .map(|index| {
                let ids = plan.batch(index);
                let span = tracing::info_span!("batch", index, size = ids.len());
                let slot = &slot;
                async move {
                    (
                        index,
                        self.run_batch(project, slot, ids, request_id, deadline, summary)
                            .await,
                    )
                }
                .instrument(span)
            })
            .buffer_unordered(self.cfg.max_concurrency_per_request);
        while let Some((index, outcome)) = running.next().await {
            outcomes[index] = Some(outcome);
        }
        outcomes
            .into_iter()
            .map(|o| o.unwrap_or_else(|| BatchOutcome::failed(Code::Internal, "batch was not run")))
            .collect()
    }

    async fn run_batch(
        &self,
        project: &Arc<Project>,
        slot: &ProjectSlot,
        ids: &[Box<str>],
        request_id: &str,
        deadline: Instant,
        summary: &CallSummary,
    ) -> BatchOutcome {
        let not_sent = || {
            BatchOutcome::failed(
                Code::UpstreamTimeout,
                "not sent: the request's deadline passed before this batch could be sent; these phones were not stopped and are safe to retry",
            )
        };
        let mut retries = 0;
        let mut renewed = false;
        self.budget.earn();
        loop {
            let token = match tokio::time::timeout_at(deadline, self.iam.token(project)).await {
                Err(_) => return not_sent(),
                Ok(Err(e)) => return BatchOutcome::failed(Code::IamUnavailable, e.to_string()),
                Ok(Ok(t)) => t,
            };
            let Ok(permit) = tokio::time::timeout_at(deadline, slot.limit.acquire()).await else {
                return not_sent();
            };
            if Instant::now() >= deadline {
                return not_sent();
            }
            slot.in_flight.inc();
            // One span per upstream call; the client records status,
            // latency and CPH's request id on it.
            let call_span = tracing::info_span!(
                "upstream_call",
                attempt = retries + 1,
                status = tracing::field::Empty,
                latency_ms = tracing::field::Empty,
                upstream_request_id = tracing::field::Empty,
            );
            let started = Instant::now();
            let call = tokio::time::timeout_at(
                deadline,
                self.cph
                    .batch_stop(project, &token, request_id, ids)
                    .instrument(call_span),
            )
            .await;
            slot.in_flight.dec();
            drop(permit);
            summary.record(
                matches!(call, Ok(CallOutcome::Jobs { .. })),
                started.elapsed(),
            );
            let Ok(outcome) = call else {
                return BatchOutcome::failed(
                    Code::UpstreamTimeout,
                    "the request's deadline passed while waiting for CPH; the outcome of this stop is unknown: check with the job query or retry",
                );
            };
            // What this attempt came to, and whether another may be made
            // (with the server's Retry-After, if it sent one).
            let (failure, retry_after) = match outcome {
                CallOutcome::Jobs { jobs, .. } => return BatchOutcome::Jobs(jobs),
                CallOutcome::Rejected {
                    status: StatusCode::UNAUTHORIZED,
                    ..
                } if !renewed => {
                    // CPH refused the token: it did not act on the request.
                    // Drop the token and try once more with a new one.
                    self.iam.invalidate(project, &token).await;
                    renewed = true;
                    continue;
                }
                CallOutcome::Rejected {
                    status,
                    error_code,
                    error_msg,
                    retry_after,
                } => {
                    let retryable = is_retryable(status, error_code.as_deref());
                    let failure = rejected(status, error_code, error_msg);
                    if !retryable {
                        return failure;
                    }
                    (failure, retry_after)
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
                ),
                // Sent, then no answer or a broken one: CPH may have acted,
                // so the batch is never resent.
                CallOutcome::Timeout => {
                    return BatchOutcome::failed(
                        Code::UpstreamTimeout,
                        format!(
                            "CPH did not answer within {} ms; the outcome of this stop is unknown: check with the job query or retry",
                            self.cfg.timeout.as_millis()
                        ),
                    );
                }
                CallOutcome::Broken(reason) => {
                    return BatchOutcome::failed(
                        Code::UpstreamFailed,
                        format!(
                            "CPH call failed after the request was sent ({reason}); the outcome of this stop is unknown"
                        ),
                    );
                }
            };
            // A retry: within max_retries, the budget, and the deadline.
            let delay = backoff(retries, retry_after, self.cfg.max_retry_after);
            if retries >= self.cfg.max_retries
                || Instant::now() + delay >= deadline
                || !self.budget.try_spend()
            {
                return failure;
            }
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

/// 429, 503 and CPS.0003 mean CPH did not act on the request.
fn is_retryable(status: StatusCode, code: Option<&str>) -> bool {
    status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::SERVICE_UNAVAILABLE
        || code == Some("CPS.0003")
}

/// Full-jitter exponential backoff, or the server's `Retry-After` (capped).
fn backoff(retry: u32, retry_after: Option<Duration>, cap: Duration) -> Duration {
    if let Some(after) = retry_after {
        return after.min(cap);
    }
    let ceiling = BASE_BACKOFF
        .saturating_mul(1 << retry.min(10))
        .min(MAX_BACKOFF);
    ceiling.mul_f64(rand::random::<f64>())
}

/// A whole batch refused by CPH: its error passes through to each phone.
fn rejected(
    status: StatusCode,
    error_code: Option<String>,
    error_msg: Option<String>,
) -> BatchOutcome {
    // A 4xx other than 401/408/429 is CPH's judgement of the request.
    let definite = status.is_client_error() && !matches!(status.as_u16(), 401 | 408 | 429);
    let kind = if status == StatusCode::GATEWAY_TIMEOUT {
        Code::UpstreamTimeout
    } else {
        Code::UpstreamFailed
    };
    match error_code {
        Some(code) => BatchOutcome::Failed {
            error_msg: error_msg.unwrap_or_else(|| format!("CPH answered {status}")),
            error_code: code,
            definite,
            kind,
        },
        None => BatchOutcome::Failed {
            error_code: kind.as_str().to_owned(),
            error_msg: format!("CPH answered {status} without an error body"),
            definite,
            kind,
        },
    }
}
