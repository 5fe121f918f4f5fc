//! The merge: each batch's outcome becomes exactly one entry per planned
//! phone, in request order.
//!
//! The merge walks the plan, not the upstream answers, so no planned id can
//! be missing from a response and none can appear twice. What became of
//! each phone is an [`Outcome`] variant, decided where the fact is known
//! (the outcomes themselves are in `stop::outcome`).

use std::collections::HashMap;

use serde::Serialize;

use super::outcome::{BatchOutcome, Outcome, PhoneResult, in_batch_order};
use super::plan::Plan;
use crate::domain::{Code, JobId, PhoneId};

/// One entry of the response, borrowed from the plan and the outcomes:
/// either `{phone_id, job_id}` or `{phone_id, error_code, error_msg}`.
#[derive(Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct JobEntry<'a> {
    #[schema(value_type = String)]
    pub phone_id: &'a PhoneId,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub job_id: Option<&'a JobId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_msg: Option<&'a str>,
    #[serde(skip)]
    #[schema(ignore)]
    pub outcome: Outcome,
}

const MISSING_MSG: &str = "CPH answered without an entry for this phone; its outcome is unknown";

/// The merged response: one entry per planned id, in plan order.
#[derive(Debug)]
pub struct Merged<'a> {
    pub jobs: Vec<JobEntry<'a>>,
    /// Set when no batch got a definite answer: the status code to answer.
    pub failure: Option<Code>,
}

impl Merged<'_> {
    /// How many entries have each outcome, in the order of [`Outcome::ALL`].
    pub fn outcome_counts(&self) -> [(Outcome, u64); 4] {
        let mut counts = [0u64; 4];
        for entry in &self.jobs {
            counts[entry.outcome as usize] += 1;
        }
        std::array::from_fn(|i| (Outcome::ALL[i], counts[i]))
    }
}

/// The entries of one batch: one per id of `batch`, in order.
pub fn merge_batch<'a>(
    batch: &'a [PhoneId],
    outcome: &'a BatchOutcome,
    out: &mut Vec<JobEntry<'a>>,
) {
    push_entries(out, batch, outcome);
}

/// Merges batch outcomes (one per batch of `plan`, in batch order).
pub fn merge<'a>(plan: &'a Plan, outcomes: &'a [BatchOutcome]) -> Merged<'a> {
    debug_assert_eq!(outcomes.len(), plan.batch_count());
    let mut jobs = Vec::with_capacity(plan.ids().len());
    for (batch, outcome) in plan.batches().zip(outcomes) {
        push_entries(&mut jobs, batch, outcome);
    }
    // Batches the outcomes do not cover (cannot happen when callers pass one
    // outcome per batch) still get an entry per id.
    let covered = jobs.len();
    jobs.extend(plan.ids()[covered..].iter().map(|id| JobEntry {
        phone_id: id,
        job_id: None,
        error_code: Some(Code::Internal.as_str()),
        error_msg: Some("no outcome for this batch"),
        outcome: Outcome::Failed,
    }));
    Merged {
        jobs,
        failure: overall_failure(outcomes),
    }
}

/// The entries of the phones of one batch (or part of one), from its outcome.
fn push_entries<'a>(jobs: &mut Vec<JobEntry<'a>>, batch: &'a [PhoneId], outcome: &'a BatchOutcome) {
    match outcome {
        BatchOutcome::Jobs(answers) => {
            // CPH answers each phone once, in the batch's order: then the
            // answers line up with the ids and no lookup is needed.
            let in_order = in_batch_order(answers.iter().map(|a| a.phone_id.as_ref()), batch);
            let by_id: Option<HashMap<&str, &PhoneResult, foldhash::fast::RandomState>> =
                (!in_order).then(|| {
                    answers
                        .iter()
                        .map(|a| (a.phone_id.as_ref(), &a.result))
                        .collect()
                });
            let result = |i: usize, id: &PhoneId| match &by_id {
                None => Some(&answers[i].result),
                Some(by_id) => by_id.get(id.as_str()).copied(),
            };
            jobs.extend(batch.iter().enumerate().map(|(i, id)| match result(i, id) {
                Some(PhoneResult::Job(job)) => JobEntry {
                    phone_id: id,
                    job_id: Some(job),
                    error_code: None,
                    error_msg: None,
                    outcome: Outcome::Stopped,
                },
                Some(PhoneResult::Error { code, msg }) => JobEntry {
                    phone_id: id,
                    job_id: None,
                    error_code: Some(code),
                    error_msg: Some(msg),
                    outcome: Outcome::Rejected,
                },
                None => JobEntry {
                    phone_id: id,
                    job_id: None,
                    error_code: Some(Code::UpstreamFailed.as_str()),
                    error_msg: Some(MISSING_MSG),
                    outcome: Outcome::Failed,
                },
            }));
        }
        BatchOutcome::Failed {
            error_code,
            error_msg,
            outcome,
            ..
        } => jobs.extend(batch.iter().map(|id| JobEntry {
            phone_id: id,
            job_id: None,
            error_code: Some(error_code),
            error_msg: Some(error_msg),
            outcome: *outcome,
        })),
        BatchOutcome::Split(parts) => {
            let mut rest = batch;
            for (len, part) in parts {
                let (ids, after) = rest.split_at((*len).min(rest.len()));
                push_entries(jobs, ids, part);
                rest = after;
            }
            // Parts that do not cover the batch (they always do) still
            // leave no phone without an entry.
            jobs.extend(rest.iter().map(|id| JobEntry {
                phone_id: id,
                job_id: None,
                error_code: Some(Code::Internal.as_str()),
                error_msg: Some("no outcome for this phone"),
                outcome: Outcome::Failed,
            }));
        }
    }
}

/// When no batch got a definite answer: 504 if any timed out, 503 if IAM
/// failed for all, else 502.
fn overall_failure(outcomes: &[BatchOutcome]) -> Option<Code> {
    if outcomes.iter().any(BatchOutcome::is_definite) {
        return None;
    }
    let mut all = Vec::new();
    outcomes.iter().for_each(|o| o.failure_kinds(&mut all));
    let kinds = || all.iter().copied();
    Some(if kinds().any(|k| k == Code::UpstreamTimeout) {
        Code::UpstreamTimeout
    } else if kinds().all(|k| k == Code::IamUnavailable) {
        Code::IamUnavailable
    } else {
        Code::UpstreamFailed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stop::outcome::PhoneAnswer;

    fn plan(ids: &[&str], batch: usize) -> Plan {
        Plan::new(ids.iter().map(|s| (*s).into()).collect(), batch).unwrap()
    }

    fn job(phone: &str, job: &str) -> PhoneAnswer {
        PhoneAnswer {
            phone_id: phone.into(),
            result: PhoneResult::Job(JobId::parse(job).unwrap()),
        }
    }

    #[test]
    fn answers_in_the_batch_order_or_not_give_the_same_entries() {
        let p = plan(&["a", "b", "c"], 3);
        let entries = |answers: Vec<PhoneAnswer>| {
            let outcomes = vec![BatchOutcome::Jobs(answers)];
            let m = merge(&p, &outcomes);
            m.jobs
                .iter()
                .map(|e| (e.phone_id.to_string(), e.job_id.map(|j| j.to_string())))
                .collect::<Vec<_>>()
        };
        let aligned = entries(vec![job("a", "j1"), job("b", "j2"), job("c", "j3")]);
        let shuffled = entries(vec![job("c", "j3"), job("a", "j1"), job("b", "j2")]);
        assert_eq!(aligned, shuffled);
        assert_eq!(aligned[1], ("b".to_owned(), Some("j2".to_owned())));
    }

    #[test]
    fn every_planned_phone_gets_one_entry_with_its_outcome() {
        let p = plan(&["a", "b", "c", "d"], 2);
        let outcomes = vec![
            BatchOutcome::Jobs(vec![job("a", "j1"), job("zz", "j9")]),
            BatchOutcome::failed(Code::UpstreamTimeout, "late"),
        ];
        let m = merge(&p, &outcomes);
        let got: Vec<(&str, Outcome)> = m
            .jobs
            .iter()
            .map(|e| (e.phone_id.as_ref(), e.outcome))
            .collect();
        assert_eq!(
            got,
            [
                ("a", Outcome::Stopped),
                ("b", Outcome::Failed),
                ("c", Outcome::Unknown),
                ("d", Outcome::Unknown)
            ]
        );
        assert_eq!(m.failure, None);
        let counts = m.outcome_counts();
        assert_eq!(counts[0], (Outcome::Stopped, 1));
        assert_eq!(counts[3], (Outcome::Unknown, 2));
    }

    #[test]
    fn no_definite_batch_fails_the_request() {
        let p = plan(&["a", "b"], 1);
        let outcomes = vec![
            BatchOutcome::failed(Code::IamUnavailable, "iam"),
            BatchOutcome::rejected("CPS.0003".into(), "x".into(), false, Code::UpstreamFailed),
        ];
        assert_eq!(merge(&p, &outcomes).failure, Some(Code::UpstreamFailed));
    }

    #[test]
    fn a_split_batch_answers_each_part_in_plan_order() {
        let p = plan(&["a", "b", "c", "d", "e"], 5);
        let poison = || {
            BatchOutcome::rejected(
                "CPS.0004".into(),
                "invalid".into(),
                true,
                Code::UpstreamFailed,
            )
        };
        let outcomes = vec![BatchOutcome::Split(vec![
            (2, BatchOutcome::Jobs(vec![job("b", "j2"), job("a", "j1")])),
            (1, poison()),
            (1, BatchOutcome::failed(Code::UpstreamTimeout, "late")),
        ])];
        let m = merge(&p, &outcomes);
        let got: Vec<(&str, Option<&str>, Outcome)> = m
            .jobs
            .iter()
            .map(|e| {
                (
                    e.phone_id.as_ref(),
                    e.job_id.map(JobId::as_str).or(e.error_code),
                    e.outcome,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("a", Some("j1"), Outcome::Stopped),
                ("b", Some("j2"), Outcome::Stopped),
                ("c", Some("CPS.0004"), Outcome::Rejected),
                ("d", Some("CPHGW.0302"), Outcome::Unknown),
                ("e", Some("CPHGW.0500"), Outcome::Failed),
            ]
        );
        assert_eq!(m.failure, None);

        let p = plan(&["a", "b"], 2);
        let nothing_definite = vec![BatchOutcome::Split(vec![
            (1, BatchOutcome::failed(Code::UpstreamTimeout, "late")),
            (1, BatchOutcome::failed(Code::UpstreamFailed, "down")),
        ])];
        assert_eq!(
            merge(&p, &nothing_definite).failure,
            Some(Code::UpstreamTimeout)
        );
    }
}
