//! Stop records: what each stop did, batch by batch, kept so that callers
//! can follow their phones to the end (`GET /v1/cloud-phone/stops/{id}`) and
//! so that a stop whose replica died can be resumed without resending what
//! had an outcome.

use std::collections::HashMap;
use std::sync::Arc;

use serde::Serialize;
use serde_json::{Value, json};

use super::merge::JobEntry;
use super::outcome::{BatchOutcome, Outcome, PhoneAnswer, PhoneResult};
use super::plan::Plan;
use super::wait::JobState;
use crate::domain::{Code, JobId, PhoneId, share_last};
use crate::store::{RecordBatch, RecordEntry, StopRecord};

/// Message of a phone whose batch has no recorded outcome (yet).
const PENDING: &str = "no outcome recorded for this phone yet: its stop may still be running, or its outcome is unknown";

/// The planned batches of a stop, none with an outcome yet.
pub fn planned(plan: &Plan) -> Vec<RecordBatch> {
    plan.batches()
        .enumerate()
        .map(|(i, ids)| RecordBatch {
            index: i as u32,
            phone_ids: ids.iter().map(PhoneId::shared).collect(),
            upstream_request_ids: Vec::new(),
            entries: None,
        })
        .collect()
}

/// A batch with its outcome, from the entries the merge made for it.
pub fn answered(
    index: usize,
    plan: &Plan,
    upstream_request_ids: Vec<String>,
    entries: &[JobEntry<'_>],
) -> RecordBatch {
    let ids = plan.batch(index);
    debug_assert_eq!(ids.len(), entries.len(), "one entry per id of the batch");
    RecordBatch {
        index: index as u32,
        phone_ids: ids.iter().map(PhoneId::shared).collect(),
        upstream_request_ids,
        entries: Some({
            let mut texts = Texts::default();
            ids.iter()
                .zip(entries)
                .map(|e| entry(e, &mut texts))
                .collect()
        }),
    }
}

/// The error texts last put into a batch's record: the phones of a batch
/// mostly share their error (a refused batch, CPH refusing each phone for the
/// same reason), and then share one string.
#[derive(Default)]
struct Texts {
    code: Option<Arc<str>>,
    msg: Option<Arc<str>>,
}

/// A batch's entry for the record; `id` is the planned id `e` answers.
fn entry((id, e): (&PhoneId, &JobEntry<'_>), texts: &mut Texts) -> RecordEntry {
    RecordEntry {
        phone_id: id.shared(),
        job_id: e.job_id.map(JobId::shared),
        error_code: e.error_code.map(|c| share_last(&mut texts.code, c)),
        error_msg: e.error_msg.map(|m| share_last(&mut texts.msg, m)),
        unknown: e.outcome == Outcome::Unknown,
    }
}

/// A recorded batch outcome as a batch outcome again (a resumed stop does
/// not send it), if the batch holds the ids now `planned` for it.
pub fn outcome_of(batch: &RecordBatch, planned: &[PhoneId]) -> Option<BatchOutcome> {
    let same = batch
        .phone_ids
        .iter()
        .map(|id| &**id)
        .eq(planned.iter().map(PhoneId::as_str));
    let entries = batch.entries.as_ref().filter(|_| same)?;
    Some(BatchOutcome::Jobs(
        entries
            .iter()
            .map(|e| PhoneAnswer {
                phone_id: e.phone_id.clone(),
                result: match e.job_id.clone().and_then(JobId::from_upstream) {
                    Some(job) => PhoneResult::Job(job),
                    None => PhoneResult::Error {
                        code: e.error_code.clone().unwrap_or_default(),
                        msg: e.error_msg.clone().unwrap_or_default(),
                    },
                },
            })
            .collect(),
    ))
}

/// CPH's request ids of the record's batches (what the job list takes),
/// each with the jobs it created (a split batch's jobs go with its first
/// id: the count only ends paging early).
pub fn batch_ids(record: &StopRecord) -> Vec<(&str, usize)> {
    record
        .batches
        .iter()
        .flat_map(|b| {
            let jobs = b
                .entries
                .as_ref()
                .map_or(0, |e| e.iter().filter(|e| e.job_id.is_some()).count());
            b.upstream_request_ids
                .iter()
                .enumerate()
                .map(move |(i, id)| (id.as_str(), if i == 0 { jobs } else { 0 }))
        })
        .collect()
}

/// The job ids of the record.
pub fn job_ids(record: &StopRecord) -> Vec<&str> {
    record
        .batches
        .iter()
        .filter_map(|b| b.entries.as_ref())
        .flatten()
        .filter_map(|e| e.job_id.as_deref())
        .collect()
}

/// `summary` of a record.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct Summary {
    pub total: usize,
    pub running: usize,
    pub succeeded: usize,
    pub failed: usize,
    pub rejected: usize,
    pub unknown: usize,
}

/// One entry as the caller sees it, with the job's state when known.
fn render(
    e: &RecordEntry,
    states: Option<&HashMap<String, JobState>>,
    summary: &mut Summary,
) -> Value {
    summary.total += 1;
    match &e.job_id {
        Some(job) => {
            let state = states
                .and_then(|s| s.get(&**job))
                .cloned()
                .unwrap_or(JobState::Running);
            match &state {
                JobState::Running => summary.running += 1,
                JobState::Succeeded => summary.succeeded += 1,
                JobState::Failed { .. } => summary.failed += 1,
            }
            let mut v = json!({"phone_id": e.phone_id, "job_id": job, "status": state.label()});
            if let JobState::Failed {
                error_code,
                error_msg,
            } = state
            {
                v["error_code"] = json!(error_code);
                v["error_msg"] = json!(error_msg);
            }
            v
        }
        None => {
            if e.unknown {
                summary.unknown += 1;
            } else {
                summary.rejected += 1;
            }
            json!({"phone_id": e.phone_id, "error_code": e.error_code, "error_msg": e.error_msg})
        }
    }
}

/// The entries of a record in request order with their job states, the
/// summary, and whether every phone's outcome is final.
pub fn entries(
    record: &StopRecord,
    states: Option<&HashMap<String, JobState>>,
) -> (Vec<Value>, Summary, bool) {
    let mut summary = Summary::default();
    let mut pending = false;
    let mut out = Vec::with_capacity(record.phones());
    for batch in &record.batches {
        match &batch.entries {
            Some(entries) => out.extend(entries.iter().map(|e| render(e, states, &mut summary))),
            None => {
                pending = true;
                for id in &batch.phone_ids {
                    let e = RecordEntry {
                        phone_id: id.clone(),
                        job_id: None,
                        error_code: Some(Code::UpstreamTimeout.as_str().into()),
                        error_msg: Some(PENDING.into()),
                        unknown: true,
                    };
                    out.push(render(&e, states, &mut summary));
                }
            }
        }
    }
    let done = !pending && summary.running == 0;
    (out, summary, done)
}

/// `GET /v1/cloud-phone/stops/{request_id}`'s body.
pub fn view(record: &StopRecord, states: Option<&HashMap<String, JobState>>) -> Value {
    let (jobs, summary, done) = entries(record, states);
    let created_at = record
        .created_at
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    json!({
        "request_id": record.request_id,
        "project_id": record.project_id,
        "created_at": created_at,
        "caller": record.caller,
        "done": done,
        "summary": summary,
        "jobs": jobs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record() -> StopRecord {
        let e = |phone: &str, job: Option<&str>, code: Option<&str>, unknown: bool| RecordEntry {
            phone_id: phone.into(),
            job_id: job.map(Into::into),
            error_code: code.map(Into::into),
            error_msg: code.map(|_| "why".into()),
            unknown,
        };
        StopRecord {
            tenant: "acme".into(),
            request_id: "r1".into(),
            caller: "svc".into(),
            project_id: "0a1b2c3d4e5f60718293a4b5c6d7e8f9".into(),
            created_at: time::OffsetDateTime::UNIX_EPOCH,
            batches: vec![
                RecordBatch {
                    index: 0,
                    phone_ids: vec!["a".into(), "b".into(), "c".into(), "d".into()],
                    upstream_request_ids: vec!["u1".into()],
                    entries: Some(vec![
                        e("a", Some("j1"), None, false),
                        e("b", Some("j2"), None, false),
                        e("c", None, Some("CPS.0005"), false),
                        e("d", None, Some("CPHGW.0302"), true),
                    ]),
                },
                RecordBatch {
                    index: 1,
                    phone_ids: vec!["e".into()],
                    upstream_request_ids: vec![],
                    entries: None,
                },
            ],
        }
    }

    #[test]
    fn summary_counts_every_phone_once() {
        let states: HashMap<String, JobState> = [
            ("j1".to_owned(), JobState::Succeeded),
            (
                "j2".to_owned(),
                JobState::Failed {
                    error_code: Some("CPS.0011".into()),
                    error_msg: Some("stop failed".into()),
                },
            ),
        ]
        .into();
        let (jobs, summary, done) = entries(&record(), Some(&states));
        assert_eq!(jobs.len(), 5);
        assert_eq!(
            summary,
            Summary {
                total: 5,
                running: 0,
                succeeded: 1,
                failed: 1,
                rejected: 1,
                unknown: 2
            }
        );
        assert!(!done, "a batch has no outcome yet");
        assert_eq!(jobs[1]["status"], "failed");
        assert_eq!(jobs[1]["error_code"], "CPS.0011");
        let mut r = record();
        r.batches.pop();
        assert!(entries(&r, Some(&states)).2);
        assert!(!entries(&r, None).2, "jobs with no known state are running");
        assert_eq!(batch_ids(&r), [("u1", 2)]);
        assert_eq!(job_ids(&r), ["j1", "j2"]);
    }
}
