//! What CPH's answers mean for a batch: per-phone entries normalised,
//! which refusals may be retried, and a refused batch as an outcome.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use reqwest::StatusCode;

use super::merge::{BatchOutcome, Outcome, PhoneAnswer, PhoneResult};
use crate::domain::{Code, JobId};
use crate::upstream::cph::UpstreamJob;

/// CPH's per-phone entries, normalised: an entry with a usable `job_id` is
/// a job (whatever else it carries), else one with an `error_code` is an
/// error, else it is no answer; of several entries for one phone, the first
/// job wins, else the first error.
pub fn answers(jobs: Vec<UpstreamJob>) -> Vec<PhoneAnswer> {
    let mut out: Vec<PhoneAnswer> = Vec::with_capacity(jobs.len());
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(jobs.len());
    for j in jobs {
        let result = match (j.job_id.and_then(JobId::from_upstream), j.error_code) {
            (Some(job), _) => PhoneResult::Job(job),
            (None, Some(code)) => PhoneResult::Error {
                code,
                msg: j.error_msg.unwrap_or_default(),
            },
            (None, None) => continue,
        };
        match seen.entry(j.phone_id) {
            Entry::Vacant(v) => {
                let phone_id = v.key().clone();
                v.insert(out.len());
                out.push(PhoneAnswer { phone_id, result });
            }
            Entry::Occupied(o) => {
                let earlier = &mut out[*o.get()];
                if matches!(result, PhoneResult::Job(_))
                    && !matches!(earlier.result, PhoneResult::Job(_))
                {
                    earlier.result = result;
                }
            }
        }
    }
    out
}

/// 429, 503 and CPS.0003 mean CPH did not act on the request: the reason
/// to try again (the `reason` label of `cphgw_upstream_retries_total`), or
/// `None` if it may have.
pub(super) fn retry_reason(status: StatusCode, code: Option<&str>) -> Option<&'static str> {
    if status == StatusCode::TOO_MANY_REQUESTS {
        Some("429")
    } else if status == StatusCode::SERVICE_UNAVAILABLE {
        Some("503")
    } else if code == Some("CPS.0003") {
        Some("CPS.0003")
    } else {
        None
    }
}

/// A whole batch refused by CPH: its error passes through to each phone.
pub(super) fn rejected(
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
        Some(code) => BatchOutcome::rejected(
            code,
            error_msg.unwrap_or_else(|| format!("CPH answered {status}")),
            definite,
            kind,
        ),
        None => BatchOutcome::Failed {
            error_code: kind.as_str().to_owned(),
            error_msg: format!("CPH answered {status} without an error body"),
            definite,
            kind,
            outcome: if kind == Code::UpstreamTimeout {
                Outcome::Unknown
            } else {
                Outcome::Failed
            },
        },
    }
}
