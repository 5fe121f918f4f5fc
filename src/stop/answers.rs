//! What CPH's answers mean for a batch: per-phone entries normalised,
//! which refusals may be retried, and a refused batch as an outcome.

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use foldhash::fast::RandomState;
use reqwest::StatusCode;

use super::outcome::{BatchOutcome, Outcome, PhoneAnswer, PhoneResult, in_batch_order};
use crate::domain::{Code, JobId, PhoneId};
use crate::upstream::cph::UpstreamJob;

/// CPH's per-phone entries, normalised: an entry with a usable `job_id` is
/// a job (whatever else it carries), else one with an `error_code` is an
/// error, else it is no answer; of several entries for one phone, the first
/// job wins, else the first error.
pub fn answers(jobs: Vec<UpstreamJob>) -> Vec<PhoneAnswer> {
    answers_for(jobs, &[])
}

/// [`answers`] for a call that asked for `batch`: when CPH answered exactly
/// those phones in that order (as it does), no phone has two entries, and
/// the search for them is skipped.
pub fn answers_for(jobs: Vec<UpstreamJob>, batch: &[PhoneId]) -> Vec<PhoneAnswer> {
    let distinct = in_batch_order(jobs.iter().map(|j| j.phone_id.as_ref()), batch);
    let all: Vec<PhoneAnswer> = jobs
        .into_iter()
        .filter_map(|j| {
            let result = match (j.job_id.and_then(JobId::from_upstream), j.error_code) {
                (Some(job), _) => PhoneResult::Job(job),
                (None, Some(code)) => PhoneResult::Error {
                    code,
                    msg: j.error_msg.unwrap_or_default(),
                },
                (None, None) => return None,
            };
            Some(PhoneAnswer {
                phone_id: j.phone_id,
                result,
            })
        })
        .collect();
    if distinct {
        return all;
    }
    // Which entries stay (the first of each phone), and where a later job
    // takes the place of an earlier error; ids are borrowed, not copied.
    let mut keep = vec![true; all.len()];
    let mut upgrades: Vec<(usize, usize)> = Vec::new();
    {
        let mut first: HashMap<&str, (usize, bool), RandomState> =
            HashMap::with_capacity_and_hasher(all.len(), RandomState::default());
        for (i, a) in all.iter().enumerate() {
            let is_job = matches!(a.result, PhoneResult::Job(_));
            match first.entry(a.phone_id.as_ref()) {
                Entry::Vacant(v) => {
                    v.insert((i, is_job));
                }
                Entry::Occupied(mut o) => {
                    keep[i] = false;
                    let (earlier, earlier_is_job) = o.get_mut();
                    if is_job && !*earlier_is_job {
                        upgrades.push((*earlier, i));
                        *earlier_is_job = true;
                    }
                }
            }
        }
    }
    let mut all = all;
    for (earlier, later) in upgrades {
        let (head, tail) = all.split_at_mut(later);
        std::mem::swap(&mut head[earlier].result, &mut tail[0].result);
    }
    all.into_iter()
        .zip(keep)
        .filter_map(|(a, keep)| keep.then_some(a))
        .collect()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn job(phone: &str, job: Option<&str>, error: Option<&str>) -> UpstreamJob {
        UpstreamJob {
            phone_id: phone.into(),
            job_id: job.map(Into::into),
            error_code: error.map(Into::into),
            error_msg: error.map(|e| format!("{e} message").into()),
        }
    }

    #[test]
    fn the_first_job_of_a_phone_wins_else_its_first_error_in_first_seen_order() {
        let got = answers(vec![
            job("a", None, Some("CPS.0005")),
            job("b", None, Some("CPS.0001")),
            job("a", Some("job-a1"), None),
            job("c", None, None),
            job("a", Some("job-a2"), None),
            job("b", None, Some("CPS.0002")),
            job("c", Some("job-c"), Some("CPS.0009")),
        ]);
        let seen: Vec<(&str, String)> = got
            .iter()
            .map(|a| {
                let what = match &a.result {
                    PhoneResult::Job(j) => format!("job {}", j.as_str()),
                    PhoneResult::Error { code, .. } => format!("error {code}"),
                };
                (a.phone_id.as_ref(), what)
            })
            .collect();
        assert_eq!(
            seen,
            vec![
                ("a", "job job-a1".to_owned()),
                ("b", "error CPS.0001".to_owned()),
                ("c", "job job-c".to_owned()),
            ]
        );
    }

    #[test]
    fn answers_in_the_batch_order_skip_the_search_and_others_do_not() {
        let batch: Vec<PhoneId> = ["a", "b", "c"]
            .iter()
            .map(|s| PhoneId::parse(s).unwrap())
            .collect();
        let in_order = || {
            vec![
                job("a", Some("job-a"), None),
                job("b", None, Some("CPS.0001")),
                job("c", None, None),
            ]
        };
        assert_eq!(answers_for(in_order(), &batch), answers(in_order()));
        // Same length, not the batch's ids: duplicates are still resolved.
        let dup = || {
            vec![
                job("a", None, Some("CPS.0005")),
                job("a", Some("job-a"), None),
                job("b", None, Some("CPS.0001")),
            ]
        };
        let got = answers_for(dup(), &batch);
        assert_eq!(got, answers(dup()));
        assert_eq!(got.len(), 2);
        assert_eq!(
            got[0].result,
            PhoneResult::Job(JobId::parse("job-a").unwrap())
        );
    }
}
