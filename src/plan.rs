//! The stop request's body parsed into a [`Plan`] (distinct, valid ids in
//! request order, split into batches), and the merge of batch outcomes into
//! one entry per planned id.
//!
//! The merge walks the plan, not the upstream answers, so no planned id can
//! be missing from a response and none can appear twice.

use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::fmt;

use serde::Serialize;
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::cph::UpstreamJob;
use crate::domain::{is_valid_id, truncate};
use crate::error::{ApiError, Code};

/// Distinct, valid phone ids in order of first appearance, split in batches.
#[derive(Debug, Clone)]
pub struct Plan {
    ids: Vec<Box<str>>,
    batch_size: usize,
}

impl Plan {
    pub fn ids(&self) -> &[Box<str>] {
        &self.ids
    }
    pub fn batches(&self) -> std::slice::Chunks<'_, Box<str>> {
        self.ids.chunks(self.batch_size)
    }
    /// Batch number `index` (`index < batch_count()`).
    pub fn batch(&self, index: usize) -> &[Box<str>] {
        let start = (index * self.batch_size).min(self.ids.len());
        let end = (start + self.batch_size).min(self.ids.len());
        &self.ids[start..end]
    }
    pub fn batch_count(&self) -> usize {
        self.ids.len().div_ceil(self.batch_size)
    }

    /// Parses a batch-stop body: `{"phone_ids": [..]}`.
    pub fn parse(body: &[u8], max_ids: usize, batch_size: usize) -> Result<Self, ApiError> {
        let ids = parse_phone_ids(body, max_ids)?;
        Self::new(ids, batch_size)
    }

    /// Validates ids and drops duplicates (first appearance wins).
    pub fn new(ids: Vec<Box<str>>, batch_size: usize) -> Result<Self, ApiError> {
        if ids.is_empty() {
            return Err(ApiError::new(
                Code::InvalidBody,
                "phone_ids must not be empty",
            ));
        }
        let bad: Vec<&str> = ids
            .iter()
            .filter(|id| !is_valid_id(id))
            .map(|id| &**id)
            .take(5)
            .collect();
        if !bad.is_empty() {
            let list = bad
                .iter()
                .map(|id| format!("{:?}", truncate(id, 70)))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ApiError::new(
                Code::InvalidId,
                format!(
                    "invalid phone ids (each must be 1-64 characters of A-Z a-z 0-9 _ -): {list}"
                ),
            ));
        }
        // Mark first appearances while borrowing, then move: no id is copied.
        let first: Vec<bool> = {
            let mut seen = HashSet::with_capacity(ids.len());
            ids.iter().map(|id| seen.insert(&**id)).collect()
        };
        let distinct: Vec<Box<str>> = ids
            .into_iter()
            .zip(first)
            .filter_map(|(id, first)| first.then_some(id))
            .collect();
        Ok(Self {
            ids: distinct,
            batch_size: batch_size.max(1),
        })
    }
}

/// Parses the body with a bound on the number of ids: a list over `max_ids`
/// is refused as soon as the parser meets id number `max_ids + 1`.
pub fn parse_phone_ids(body: &[u8], max_ids: usize) -> Result<Vec<Box<str>>, ApiError> {
    let too_many = Cell::new(false);
    let mut de = serde_json::Deserializer::from_slice(body);
    let parsed = BodySeed {
        max_ids,
        too_many: &too_many,
    }
    .deserialize(&mut de)
    .and_then(|ids| de.end().map(|()| ids));
    match parsed {
        Ok(Some(ids)) => Ok(ids),
        Ok(None) => Err(ApiError::new(Code::InvalidBody, "phone_ids is missing")),
        Err(_) if too_many.get() => Err(ApiError::new(
            Code::TooLarge,
            format!("more than {max_ids} phone ids in one request"),
        )),
        Err(e) => Err(ApiError::new(Code::InvalidBody, body_error(&e))),
    }
}

/// A parse error for the caller, never longer than a line: serde quotes the
/// offending value, which may be the whole body.
fn body_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let full = e.to_string();
    let mut msg = truncate(&full, 200).to_owned();
    if msg.len() < full.len() {
        msg.push_str(&format!("… at line {} column {}", e.line(), e.column()));
    }
    match e.classify() {
        Category::Data => msg,
        Category::Syntax | Category::Eof | Category::Io => format!("body is not valid JSON: {msg}"),
    }
}

struct BodySeed<'a> {
    max_ids: usize,
    too_many: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Option<Vec<Box<str>>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = Option<Vec<Box<str>>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with phone_ids")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut ids = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "phone_ids" {
                if ids.is_some() {
                    return Err(de::Error::custom("phone_ids appears twice"));
                }
                ids = Some(map.next_value_seed(IdsSeed {
                    max_ids: self.max_ids,
                    too_many: self.too_many,
                })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(ids)
    }
}

struct IdsSeed<'a> {
    max_ids: usize,
    too_many: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for IdsSeed<'_> {
    type Value = Vec<Box<str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for IdsSeed<'_> {
    type Value = Vec<Box<str>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("phone_ids as an array of strings")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max_ids));
        while let Some(id) = seq.next_element::<std::borrow::Cow<'de, str>>()? {
            if ids.len() == self.max_ids {
                self.too_many.set(true);
                return Err(de::Error::custom("too many phone ids"));
            }
            ids.push(id.into());
        }
        Ok(ids)
    }
}

/// The outcome of one batch.
#[derive(Debug)]
pub enum BatchOutcome {
    /// CPH answered 200: its per-phone entries.
    Jobs(Vec<UpstreamJob>),
    /// The whole batch failed; each of its phones gets this error.
    Failed {
        error_code: String,
        error_msg: String,
        /// CPH judged the request (a 4xx other than 401/408/429): a definite
        /// answer, so the response is still 200.
        definite: bool,
        /// The gateway code that fits when nothing was definite.
        kind: Code,
    },
}

impl BatchOutcome {
    pub fn failed(kind: Code, msg: impl Into<String>) -> Self {
        BatchOutcome::Failed {
            error_code: kind.as_str().to_owned(),
            error_msg: msg.into(),
            definite: false,
            kind,
        }
    }
    fn is_definite(&self) -> bool {
        match self {
            BatchOutcome::Jobs(_) => true,
            BatchOutcome::Failed { definite, .. } => *definite,
        }
    }
}

/// The body of a batch-stop request, exactly as CPH takes it. (For the API
/// document; the parser is [`parse_phone_ids`].)
#[derive(utoipa::ToSchema)]
pub struct StopRequest {
    /// 1 to `limits.max_phone_ids` ids, each 1-64 characters of
    /// `[A-Za-z0-9_-]`; duplicates are stopped once.
    pub phone_ids: Vec<String>,
}

/// The answer to a batch-stop: one entry per distinct requested phone id, in
/// order of first appearance. `error_code`/`error_msg` at the top level only
/// when no batch got a definite answer (status 502/503/504).
#[derive(Serialize, utoipa::ToSchema)]
pub struct StopResponse<'a> {
    pub request_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub error_code: Option<Code>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_msg: Option<String>,
    pub jobs: Vec<JobEntry<'a>>,
}

/// One entry of the response, borrowed from the plan and the outcomes:
/// either `{phone_id, job_id}` or `{phone_id, error_code, error_msg}`.
#[derive(Debug, Serialize, PartialEq, Eq, utoipa::ToSchema)]
pub struct JobEntry<'a> {
    pub phone_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub job_id: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_code: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error_msg: Option<&'a str>,
}

/// The `outcome` labels of `cphgw_phones_total`: a job; a CPH error; a
/// gateway failure (0301/0303); an unknown outcome (0302).
pub const OUTCOMES: [&str; 4] = ["stopped", "rejected", "failed", "unknown"];

impl JobEntry<'_> {
    fn outcome_index(&self) -> usize {
        match (self.job_id, self.error_code) {
            (Some(_), None) => 0,
            (_, Some(c)) if c == Code::UpstreamTimeout.as_str() => 3,
            (_, Some(c)) if c.starts_with("CPHGW.") => 2,
            _ => 1,
        }
    }

    /// This entry's label in [`OUTCOMES`].
    pub fn outcome(&self) -> &'static str {
        OUTCOMES[self.outcome_index()]
    }
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
    /// How many entries have each outcome, in the order of [`OUTCOMES`].
    pub fn outcome_counts(&self) -> [(&'static str, u64); 4] {
        let mut counts = [0u64; 4];
        for entry in &self.jobs {
            counts[entry.outcome_index()] += 1;
        }
        std::array::from_fn(|i| (OUTCOMES[i], counts[i]))
    }
}

/// Merges batch outcomes (one per batch of `plan`, in batch order).
pub fn merge<'a>(plan: &'a Plan, outcomes: &'a [BatchOutcome]) -> Merged<'a> {
    debug_assert_eq!(outcomes.len(), plan.batch_count());
    let mut jobs = Vec::with_capacity(plan.ids.len());
    for (batch, outcome) in plan.batches().zip(outcomes) {
        match outcome {
            BatchOutcome::Jobs(upstream) => {
                // The first usable entry of each phone (CPH sends one).
                let mut by_id: HashMap<&str, &UpstreamJob> = HashMap::with_capacity(upstream.len());
                for j in upstream
                    .iter()
                    .filter(|j| j.job_id.is_some() || j.error_code.is_some())
                {
                    by_id.entry(j.phone_id.as_str()).or_insert(j);
                }
                for id in batch {
                    jobs.push(match by_id.get(&**id) {
                        Some(j) => JobEntry {
                            phone_id: id,
                            job_id: j.job_id.as_deref(),
                            error_code: j.error_code.as_deref(),
                            error_msg: j.error_msg.as_deref(),
                        },
                        _ => JobEntry {
                            phone_id: id,
                            job_id: None,
                            error_code: Some(Code::UpstreamFailed.as_str()),
                            error_msg: Some(MISSING_MSG),
                        },
                    });
                }
            }
            BatchOutcome::Failed {
                error_code,
                error_msg,
                ..
            } => jobs.extend(batch.iter().map(|id| JobEntry {
                phone_id: id,
                job_id: None,
                error_code: Some(error_code),
                error_msg: Some(error_msg),
            })),
        }
    }
    // Batches the outcomes do not cover (cannot happen when callers pass one
    // outcome per batch) still get an entry per id.
    let covered = jobs.len();
    jobs.extend(plan.ids[covered..].iter().map(|id| JobEntry {
        phone_id: id,
        job_id: None,
        error_code: Some(Code::Internal.as_str()),
        error_msg: Some("no outcome for this batch"),
    }));
    Merged {
        jobs,
        failure: overall_failure(outcomes),
    }
}

/// When no batch got a definite answer: 504 if any timed out, 503 if IAM
/// failed for all, else 502.
fn overall_failure(outcomes: &[BatchOutcome]) -> Option<Code> {
    if outcomes.iter().any(BatchOutcome::is_definite) {
        return None;
    }
    let kinds = || {
        outcomes.iter().filter_map(|o| match o {
            BatchOutcome::Failed { kind, .. } => Some(*kind),
            BatchOutcome::Jobs(_) => None,
        })
    };
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

    fn ids(v: &[&str]) -> Vec<Box<str>> {
        v.iter().map(|s| (*s).into()).collect()
    }

    #[test]
    fn parse_accepts_the_cph_body() {
        let p = Plan::parse(br#"{"phone_ids":["a","b","a"],"other":1}"#, 10, 100).unwrap();
        assert_eq!(p.ids(), &ids(&["a", "b"])[..]);
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&[u8], Code)] = &[
            (b"", Code::InvalidBody),
            (b"{", Code::InvalidBody),
            (b"[]", Code::InvalidBody),
            (b"{}", Code::InvalidBody),
            (br#"{"phone_ids":"a"}"#, Code::InvalidBody),
            (br#"{"phone_ids":[1]}"#, Code::InvalidBody),
            (br#"{"phone_ids":[]}"#, Code::InvalidBody),
            (br#"{"phone_ids":null}"#, Code::InvalidBody),
            (br#"{"phone_ids":["a"]} x"#, Code::InvalidBody),
            (
                br#"{"phone_ids":["a"],"phone_ids":["b"]}"#,
                Code::InvalidBody,
            ),
            (b"{\"phone_ids\":[\"\xff\"]}", Code::InvalidBody),
            (br#"{"phone_ids":["a b"]}"#, Code::InvalidId),
            (br#"{"phone_ids":[""]}"#, Code::InvalidId),
            (br#"{"phone_ids":["a","b","c","d"]}"#, Code::TooLarge),
        ];
        for (body, code) in cases {
            let err = Plan::parse(body, 3, 100).unwrap_err();
            assert_eq!(err.code, *code, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn deep_nesting_is_a_clear_error() {
        let body = format!("{{\"x\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            Plan::parse(body.as_bytes(), 3, 100).unwrap_err().code,
            Code::InvalidBody
        );
    }

    #[test]
    fn bad_ids_are_named() {
        let err = Plan::parse(br#"{"phone_ids":["ok","x y","z/"]}"#, 10, 100).unwrap_err();
        assert!(
            err.msg.contains("\"x y\"") && err.msg.contains("\"z/\""),
            "{}",
            err.msg
        );
        assert!(!err.msg.contains("\"ok\""));
    }
}
