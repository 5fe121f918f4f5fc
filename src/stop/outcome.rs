//! What a batch came to: each phone's answer from CPH, or the batch's
//! failure, and what that means for each phone ([`Outcome`]). The merge
//! (`stop::merge`) turns these into the response's entries.

use std::sync::Arc;

use crate::domain::{Code, JobId, PhoneId};

/// What became of one phone (the `outcome` label of `cphgw_phones_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// CPH created a stop job.
    Stopped,
    /// CPH answered with an error for the phone or its batch.
    Rejected,
    /// The gateway could not get an answer (CPHGW.0301, CPHGW.0303, ...).
    Failed,
    /// The stop was sent and no answer came: its outcome is unknown.
    Unknown,
}

impl Outcome {
    pub const ALL: [Outcome; 4] = [
        Outcome::Stopped,
        Outcome::Rejected,
        Outcome::Failed,
        Outcome::Unknown,
    ];

    pub const fn label(self) -> &'static str {
        match self {
            Outcome::Stopped => "stopped",
            Outcome::Rejected => "rejected",
            Outcome::Failed => "failed",
            Outcome::Unknown => "unknown",
        }
    }
}

/// CPH's answer for one phone inside a 2xx batch answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PhoneResult {
    Job(JobId),
    /// Shared with the answer's other entries that carry the same text.
    Error {
        code: Arc<str>,
        msg: Arc<str>,
    },
}

/// One phone's entry of a batch answer, already normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PhoneAnswer {
    pub phone_id: Arc<str>,
    pub result: PhoneResult,
}

/// The outcome of one batch.
#[derive(Debug)]
pub enum BatchOutcome {
    /// CPH answered with per-phone entries.
    Jobs(Vec<PhoneAnswer>),
    /// The whole batch failed; each of its phones gets this error.
    Failed {
        error_code: String,
        error_msg: String,
        /// CPH judged the request (a 4xx other than 401/408/429): a definite
        /// answer, so the response is still 200.
        definite: bool,
        /// The gateway code that fits when nothing was definite.
        kind: Code,
        /// What this failure means for each phone of the batch.
        outcome: Outcome,
    },
    /// CPH refused the whole batch and it was split (see `stop::split`):
    /// the outcomes of its parts, in id order, each with its number of ids.
    Split(Vec<(usize, BatchOutcome)>),
}

impl BatchOutcome {
    /// A failure of the gateway's own: its code is `kind`.
    pub fn failed(kind: Code, msg: impl Into<String>) -> Self {
        BatchOutcome::Failed {
            error_code: kind.as_str().to_owned(),
            error_msg: msg.into(),
            definite: false,
            kind,
            outcome: if kind == Code::UpstreamTimeout {
                Outcome::Unknown
            } else {
                Outcome::Failed
            },
        }
    }

    /// A whole batch refused by CPH with its own error code.
    pub fn rejected(error_code: String, error_msg: String, definite: bool, kind: Code) -> Self {
        BatchOutcome::Failed {
            error_code,
            error_msg,
            definite,
            kind,
            outcome: Outcome::Rejected,
        }
    }

    pub(super) fn is_definite(&self) -> bool {
        match self {
            BatchOutcome::Jobs(_) => true,
            BatchOutcome::Failed { definite, .. } => *definite,
            BatchOutcome::Split(parts) => parts.iter().any(|(_, o)| o.is_definite()),
        }
    }

    /// The gateway codes of the failures in this outcome.
    pub(super) fn failure_kinds(&self, out: &mut Vec<Code>) {
        match self {
            BatchOutcome::Jobs(_) => {}
            BatchOutcome::Failed { kind, .. } => out.push(*kind),
            BatchOutcome::Split(parts) => parts.iter().for_each(|(_, o)| o.failure_kinds(out)),
        }
    }
}

/// Whether `phone_ids` are exactly `batch`'s ids, in its order (how CPH
/// answers a batch).
pub(super) fn in_batch_order<'a>(
    phone_ids: impl ExactSizeIterator<Item = &'a str>,
    batch: &[PhoneId],
) -> bool {
    phone_ids.len() == batch.len() && phone_ids.zip(batch).all(|(p, id)| p == id.as_str())
}
