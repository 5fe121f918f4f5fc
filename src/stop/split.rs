//! Poison batches (CONTRACT section 3): when CPH refuses a whole batch for
//! something in it (a 4xx other than 401, 403, 408 and 429, and not an
//! error about the account), it acted on none of it, and one bad id would
//! cost every other phone of the batch its stop. The batch is then split in
//! halves and each half sent again, down to single ids, so that each phone
//! gets its own answer.
//!
//! Bounds: the calls of one batch's splits are at most twice its size (a
//! full split down to single ids makes `2n - 2`); no split is started once
//! the request's deadline has passed (the phones not split further keep
//! CPH's refusal); split calls do not spend the retry budget (CPH is
//! answering, not failing), though a split call that is itself throttled
//! is retried like any call. Each split call counts in
//! `cphgw_upstream_retries_total{reason="split"}`. The fan-out decides what
//! to split and sends the parts; this module decides how.

use std::future::Future;
use std::ops::Range;

use reqwest::StatusCode;
use tokio::time::Instant;

use super::outcome::BatchOutcome;
use crate::telemetry::Metrics;

/// What a batch (or part of one) came to, and whether CPH refused it whole
/// in a way that sending its ids in smaller batches may cure.
pub struct Ran {
    pub outcome: BatchOutcome,
    pub splittable: bool,
    /// CPH's request ids of the answers with jobs (for the job list).
    pub upstream_request_ids: Vec<String>,
}

impl From<BatchOutcome> for Ran {
    fn from(outcome: BatchOutcome) -> Self {
        Ran {
            outcome,
            splittable: false,
            upstream_request_ids: Vec::new(),
        }
    }
}

/// Whether CPH's refusal of a whole batch may not hold for a part of it:
/// it judged the request (a 4xx), not the caller's standing (401, 403),
/// time (408) or rate (429), and the code is not about the account
/// (`CPS.0001` no permission, `CPS.0006`-`CPS.0008` arrears, frozen, ...).
pub fn may_cure(status: StatusCode, code: Option<&str>) -> bool {
    status.is_client_error()
        && !matches!(status.as_u16(), 401 | 403 | 408 | 429)
        && !matches!(
            code,
            Some("CPS.0001" | "CPS.0006" | "CPS.0007" | "CPS.0008")
        )
}

/// The label of split calls in `cphgw_upstream_retries_total`.
const SPLIT: &str = "split";

/// Splits a batch of `size` ids that CPH refused with `refusal`: `send`
/// sends the ids in a range of the batch (with its retries). Splitting goes
/// on until every part has an answer other than a curable refusal, is a
/// single id, or a bound is reached (see the module's documentation).
/// Returns the parts in id order, each with its number of ids, and the
/// number of split calls made; CPH's request ids of the parts' answers go
/// to `upstream_ids`.
pub async fn split<F, Fut>(
    size: usize,
    refusal: BatchOutcome,
    deadline: Instant,
    metrics: &Metrics,
    upstream_ids: &mut Vec<String>,
    mut send: F,
) -> (Vec<(usize, BatchOutcome)>, usize)
where
    F: FnMut(Range<usize>) -> Fut,
    Fut: Future<Output = Ran>,
{
    let max_calls = 2 * size;
    let mut calls = 0;
    let mut done: Vec<(Range<usize>, BatchOutcome)> = Vec::new();
    let mut refused = vec![(0..size, refusal)];
    while let Some((range, refusal)) = refused.pop() {
        if range.len() < 2 || calls + 2 > max_calls || Instant::now() >= deadline {
            done.push((range, refusal));
            continue;
        }
        let mid = range.start + range.len() / 2;
        for half in [range.start..mid, mid..range.end] {
            calls += 1;
            metrics.upstream_retry(SPLIT);
            let Ran {
                outcome,
                splittable,
                upstream_request_ids,
            } = send(half.clone()).await;
            upstream_ids.extend(upstream_request_ids);
            if splittable && half.len() > 1 {
                refused.push((half, outcome));
            } else {
                done.push((half, outcome));
            }
        }
    }
    done.sort_by_key(|(range, _)| range.start);
    let parts = done
        .into_iter()
        .map(|(range, outcome)| (range.len(), outcome))
        .collect();
    (parts, calls)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_refusals_of_the_request_itself_are_split() {
        let bad = StatusCode::BAD_REQUEST;
        assert!(may_cure(bad, Some("CPS.0004")));
        assert!(may_cure(bad, None));
        assert!(may_cure(StatusCode::PAYLOAD_TOO_LARGE, Some("CPS.0002")));
        assert!(may_cure(StatusCode::NOT_FOUND, Some("CPS.0005")));
        for code in ["CPS.0001", "CPS.0006", "CPS.0007", "CPS.0008"] {
            assert!(!may_cure(bad, Some(code)), "{code}");
        }
        for status in [401, 403, 408, 429, 500, 503, 200] {
            let status = StatusCode::from_u16(status).unwrap();
            assert!(!may_cure(status, Some("CPS.0004")), "{status}");
        }
    }
}
