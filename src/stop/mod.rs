//! A stop, step by step: [`plan`] (parse, validate, dedupe, split),
//! [`fanout`] (the batches against CPH), [`merge`] (one entry per phone).

pub mod fanout;
pub mod merge;
pub mod plan;
pub mod split;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use http::StatusCode;
use tokio::time::Instant;

use crate::domain::RequestId;
use crate::telemetry::Metrics;
use crate::tenants::Project;
use crate::upstream::Upstream;
use fanout::{CallSummary, Fanout};
use merge::{StopResponse, merge};
use plan::Plan;

/// The answer to a stop: its status and JSON body.
#[derive(Debug)]
pub struct StopAnswer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

/// Runs stops: fan-out, merge, the request's counts and metrics.
pub struct Stops {
    fanout: Fanout,
    metrics: Arc<Metrics>,
}

impl Stops {
    pub fn new(upstream: Arc<Upstream>, metrics: Arc<Metrics>) -> Self {
        Self {
            fanout: Fanout::new(upstream, metrics.clone()),
            metrics,
        }
    }

    /// Stops the phones of `plan` in `project`, within `deadline`; records
    /// the outcome counts on the current span and in the metrics.
    pub async fn run(
        &self,
        project: &Arc<Project>,
        plan: &Plan,
        request_id: &RequestId,
        deadline: Instant,
    ) -> StopAnswer {
        let span = tracing::Span::current();
        span.record("ids", plan.ids().len());
        span.record("batches", plan.batch_count());
        let calls = CallSummary::default();
        let outcomes = self
            .fanout
            .run(project, plan, request_id.as_str(), deadline, &calls)
            .await;
        span.record("upstream_calls", calls.calls.load(Ordering::Relaxed));
        span.record("upstream_failed", calls.failed.load(Ordering::Relaxed));
        span.record(
            "upstream_max_ms",
            calls.max_latency_us.load(Ordering::Relaxed) as f64 / 1000.0,
        );
        let merged = merge(plan, &outcomes);
        for (outcome, n) in merged.outcome_counts() {
            span.record(outcome.label(), n);
            if n > 0 {
                self.metrics.phones(outcome.label(), n);
            }
        }
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
        let resp = StopResponse {
            request_id: request_id.as_str(),
            error_code,
            error_msg,
            jobs: merged.jobs,
        };
        StopAnswer {
            status,
            body: serde_json::to_vec(&resp).unwrap_or_default(),
        }
    }
}
