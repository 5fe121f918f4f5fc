//! What CPH answers, read into values the fan-out can reason about: the
//! kinds of outcome of one call (what is definite, what may be retried),
//! the answer shapes, and the limits an answer is read within (its legitimate
//! size is known: a batch's jobs take room in proportion to its phones).

use std::borrow::Cow;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::StatusCode;
use serde::{Deserialize, Serialize};

use super::credentials::Answer;
use super::http::{describe, status_label};
use crate::domain::{PhoneId, share_last};

/// One entry of CPH's `jobs` array, passed through as it came.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct UpstreamJob {
    /// Shared with the batch's own id when it is the one asked for at this
    /// entry's place (as CPH answers), else read into a new string.
    pub phone_id: Arc<str>,
    /// Shared with the stop's record (read in one allocation).
    #[serde(
        default,
        deserialize_with = "crate::domain::shared_opt",
        skip_serializing_if = "Option::is_none"
    )]
    pub job_id: Option<Arc<str>>,
    /// Shared with the answer's other entries that carry the same text (CPH
    /// often refuses a batch's phones for one reason).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_msg: Option<Arc<str>>,
}

/// A batch-stop answer as read: phone ids borrowed from the body (CPH's
/// ids need no escaping), to be matched against the batch's own.
#[derive(Debug, Deserialize)]
struct BatchStopAnswer<'a> {
    #[serde(default)]
    request_id: Option<String>,
    #[serde(borrow)]
    jobs: Vec<AnsweredJob<'a>>,
}

#[derive(Debug, Deserialize)]
struct AnsweredJob<'a> {
    #[serde(borrow)]
    phone_id: Cow<'a, str>,
    #[serde(default, deserialize_with = "crate::domain::shared_opt")]
    job_id: Option<Arc<str>>,
    #[serde(default, borrow, deserialize_with = "crate::domain::cow_opt")]
    error_code: Option<Cow<'a, str>>,
    #[serde(default, borrow, deserialize_with = "crate::domain::cow_opt")]
    error_msg: Option<Cow<'a, str>>,
}

/// One job of CPH's job list.
#[derive(Debug, Clone, Deserialize)]
pub struct ListedJob {
    pub job_id: String,
    #[serde(default)]
    pub phone_id: Option<String>,
    /// 1 running, 2 success, -1 failed.
    pub status: i64,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_msg: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JobListAnswer {
    #[serde(default)]
    jobs: Vec<ListedJob>,
}

/// A job-list answer as jobs, or what went wrong.
pub fn parse_job_list(status: StatusCode, body: &[u8]) -> Result<Vec<ListedJob>, CallOutcome> {
    if !status.is_success() {
        let err: ErrorAnswer = serde_json::from_slice(body).unwrap_or_default();
        return Err(CallOutcome::Rejected {
            status,
            error_code: err.error_code,
            error_msg: err.error_msg,
            retry_after: None,
        });
    }
    serde_json::from_slice::<JobListAnswer>(body)
        .map(|a| a.jobs)
        .map_err(|e| CallOutcome::Broken(format!("unreadable job list: {e}")))
}

#[derive(Debug, Default, Deserialize)]
pub(crate) struct ErrorAnswer {
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    error_msg: Option<String>,
}

/// What one upstream call came to.
#[derive(Debug)]
pub enum CallOutcome {
    /// 2xx with a readable body that has `jobs`.
    Jobs {
        jobs: Vec<UpstreamJob>,
        request_id: Option<String>,
    },
    /// A non-2xx answer, with the upstream's error if it sent one.
    Rejected {
        status: StatusCode,
        error_code: Option<String>,
        error_msg: Option<String>,
        retry_after: Option<Duration>,
    },
    /// The connection could not be made: the request was not sent.
    NotSent(String),
    /// Sent, but no answer within the timeout: the outcome is unknown.
    Timeout,
    /// Sent, then the connection broke or the answer was unreadable.
    Broken(String),
}

impl Answer for CallOutcome {
    fn is_unauthorized(&self) -> bool {
        matches!(self, CallOutcome::Rejected { status, .. } if *status == StatusCode::UNAUTHORIZED)
    }
    fn is_answered(&self) -> bool {
        matches!(
            self,
            CallOutcome::Jobs { .. } | CallOutcome::Rejected { .. }
        )
    }
}

impl Answer for Result<(StatusCode, Bytes), CallOutcome> {
    fn is_unauthorized(&self) -> bool {
        match self {
            Ok((status, _)) => *status == StatusCode::UNAUTHORIZED,
            Err(o) => o.is_unauthorized(),
        }
    }
    fn is_answered(&self) -> bool {
        self.as_ref().map_or_else(Answer::is_answered, |_| true)
    }
}

impl CallOutcome {
    /// A label for metrics and logs: the status, or the failure kind.
    pub fn label(&self) -> &'static str {
        match self {
            CallOutcome::Jobs { .. } => "200",
            CallOutcome::Rejected { status, .. } => status_label(*status),
            CallOutcome::NotSent(_) => "connect_error",
            CallOutcome::Timeout => "timeout",
            CallOutcome::Broken(_) => "broken",
        }
    }
}

/// The largest job query answer read: a job is a few hundred bytes.
pub(crate) const JOB_ANSWER_LIMIT: usize = 64 * 1024;
/// What a batch-stop answer may take per phone (an entry with the longest
/// ids and a long error message) and in all besides.
pub(crate) const STOP_ANSWER_PER_PHONE: usize = 2048;
pub(crate) const STOP_ANSWER_OVERHEAD: usize = 64 * 1024;
/// Longest `error_msg` passed on (CONTRACT section 3).
pub const MAX_ERROR_MSG_CHARS: usize = 512;

/// `msg` cut to [`MAX_ERROR_MSG_CHARS`] characters (also applied to
/// `error_code`s, which CPH keeps short).
pub fn cut_error_msg(msg: String) -> String {
    let cut = crate::domain::truncate(&msg, MAX_ERROR_MSG_CHARS);
    if cut.len() == msg.len() {
        return msg;
    }
    // A new string: truncating in place would keep the whole allocation.
    cut.to_owned()
}

/// `text` cut to [`MAX_ERROR_MSG_CHARS`] characters, as a shared string:
/// `last` again if it says the same.
fn shared_cut(last: &mut Option<Arc<str>>, text: &str) -> Arc<str> {
    share_last(last, crate::domain::truncate(text, MAX_ERROR_MSG_CHARS))
}

/// A batch-stop answer read whole: 2xx with `jobs` is an answer (whatever
/// the 2xx), another 2xx is broken (CPH may have acted), anything else a
/// refusal with CPH's error if it sent one. Error messages are cut.
/// `batch` is the ids the call asked for: an entry naming the id asked
/// for at its place shares that id instead of copying it.
pub fn stop_outcome(
    status: StatusCode,
    bytes: &[u8],
    retry_after: Option<Duration>,
    batch: &[PhoneId],
) -> CallOutcome {
    if status.is_success() {
        let (mut last_code, mut last_msg) = (None, None);
        // The body is checked as UTF-8 once, not string by string.
        let read = std::str::from_utf8(bytes)
            .map_err(|e| e.to_string())
            .and_then(|text| {
                serde_json::from_str::<BatchStopAnswer>(text).map_err(|e| e.to_string())
            });
        return match read {
            Ok(a) => CallOutcome::Jobs {
                jobs: a
                    .jobs
                    .into_iter()
                    .enumerate()
                    .map(|(i, j)| UpstreamJob {
                        phone_id: match batch.get(i) {
                            Some(id) if id.as_str() == j.phone_id => id.shared(),
                            _ => Arc::from(j.phone_id),
                        },
                        job_id: j.job_id,
                        error_code: j.error_code.map(|c| shared_cut(&mut last_code, &c)),
                        error_msg: j.error_msg.map(|m| shared_cut(&mut last_msg, &m)),
                    })
                    .collect(),
                request_id: a.request_id,
            },
            Err(e) => CallOutcome::Broken(format!(
                "unreadable batch-stop answer ({status}): {}",
                crate::domain::truncate(&e, 200)
            )),
        };
    }
    let err: ErrorAnswer = serde_json::from_slice(bytes).unwrap_or_default();
    CallOutcome::Rejected {
        status,
        error_code: err.error_code.map(cut_error_msg),
        error_msg: err.error_msg.map(cut_error_msg),
        retry_after,
    }
}

pub(crate) fn transport_outcome(e: &reqwest::Error) -> CallOutcome {
    if e.is_connect() {
        CallOutcome::NotSent(describe(e))
    } else if e.is_timeout() {
        CallOutcome::Timeout
    } else {
        CallOutcome::Broken(describe(e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_into_a_small_string() {
        let long = "é".repeat(100_000);
        let cut = cut_error_msg(long);
        assert_eq!(cut.chars().count(), MAX_ERROR_MSG_CHARS);
        assert!(
            cut.capacity() <= 4 * MAX_ERROR_MSG_CHARS,
            "{}",
            cut.capacity()
        );
        assert_eq!(cut_error_msg("short".into()), "short");
    }

    #[test]
    fn answered_ids_share_the_batch_ids_at_their_place_and_others_are_read() {
        let batch: Vec<PhoneId> = ["p1", "p2", "p3"]
            .iter()
            .map(|s| PhoneId::parse(s).unwrap())
            .collect();
        // In order, then out of place, then escaped, then one not asked for.
        let body = br#"{"jobs":[{"phone_id":"p1","job_id":"j1"},{"phone_id":"p3","job_id":"j3"},
            {"phone_id":"p\u0033","error_code":"E","error_msg":"m"},{"phone_id":"zz"}]}"#;
        let CallOutcome::Jobs { jobs, request_id } =
            stop_outcome(StatusCode::OK, body, None, &batch)
        else {
            panic!("not an answer")
        };
        assert_eq!(request_id, None);
        let ids: Vec<&str> = jobs.iter().map(|j| &*j.phone_id).collect();
        assert_eq!(ids, ["p1", "p3", "p3", "zz"]);
        assert!(Arc::ptr_eq(&jobs[0].phone_id, &batch[0].shared()));
        assert!(!Arc::ptr_eq(&jobs[1].phone_id, &batch[2].shared()));
        assert!(Arc::ptr_eq(&jobs[2].phone_id, &batch[2].shared()));
        assert_eq!(jobs[1].job_id.as_deref(), Some("j3"));
        assert_eq!(jobs[2].error_code.as_deref(), Some("E"));
        assert_eq!(jobs[2].error_msg.as_deref(), Some("m"));
        assert!(jobs[3].job_id.is_none() && jobs[3].error_code.is_none());
    }

    #[test]
    fn entries_with_the_same_error_share_its_texts() {
        let long = "y".repeat(2000);
        let body = format!(
            r#"{{"jobs":[{{"phone_id":"a","error_code":"CPS.0010","error_msg":"no"}},
            {{"phone_id":"b","error_code":"CPS.0010","error_msg":"n\u006f"}},
            {{"phone_id":"c","error_code":"CPS.0004","error_msg":"{long}"}},
            {{"phone_id":"d","error_code":null,"error_msg":"{long}"}}]}}"#
        );
        let CallOutcome::Jobs { jobs, .. } =
            stop_outcome(StatusCode::OK, body.as_bytes(), None, &[])
        else {
            panic!("not an answer")
        };
        let (a, b, c, d) = (&jobs[0], &jobs[1], &jobs[2], &jobs[3]);
        assert_eq!(b.error_msg.as_deref(), Some("no"));
        assert!(Arc::ptr_eq(
            a.error_code.as_ref().unwrap(),
            b.error_code.as_ref().unwrap()
        ));
        assert!(Arc::ptr_eq(
            a.error_msg.as_ref().unwrap(),
            b.error_msg.as_ref().unwrap()
        ));
        assert_eq!(c.error_code.as_deref(), Some("CPS.0004"));
        assert_eq!(
            c.error_msg.as_ref().map(|m| m.len()),
            Some(MAX_ERROR_MSG_CHARS)
        );
        assert!(Arc::ptr_eq(
            c.error_msg.as_ref().unwrap(),
            d.error_msg.as_ref().unwrap()
        ));
        assert_eq!(d.error_code, None);
    }

    #[test]
    fn any_2xx_with_jobs_is_an_answer_and_errors_are_cut() {
        let body = br#"{"request_id":"r","jobs":[{"phone_id":"a","job_id":"j"}]}"#;
        for status in [StatusCode::OK, StatusCode::CREATED] {
            assert!(matches!(
                stop_outcome(status, body, None, &[]),
                CallOutcome::Jobs { .. }
            ));
        }
        assert!(matches!(
            stop_outcome(StatusCode::ACCEPTED, b"{}", None, &[]),
            CallOutcome::Broken(_)
        ));
        let err = format!(
            r#"{{"error_code":"CPS.0004","error_msg":"{}"}}"#,
            "x".repeat(5000)
        );
        match stop_outcome(StatusCode::BAD_REQUEST, err.as_bytes(), None, &[]) {
            CallOutcome::Rejected { error_msg, .. } => {
                assert_eq!(error_msg.map(|m| m.len()), Some(MAX_ERROR_MSG_CHARS));
            }
            other => panic!("{other:?}"),
        }
    }
}
