//! The answer to a batch-stop as the caller gets it, and its JSON written
//! straight (one allocation of the right size; strings without characters
//! to escape copied whole).

use serde::Serialize;

use super::merge::JobEntry;
use crate::domain::{Code, JobId};

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

impl StopResponse<'_> {
    /// The response's JSON, byte for byte what serde_json writes for it,
    /// written straight: one allocation of the right size, phone ids
    /// copied whole (their type says they have nothing to escape), and
    /// any other string without characters to escape (nearly every job
    /// id) copied whole after one check.
    pub fn to_json(&self) -> Vec<u8> {
        let strings: usize = self
            .jobs
            .iter()
            .map(|e| {
                e.phone_id.len()
                    + e.job_id.map_or(0, |j| j.as_str().len())
                    + e.error_code.map_or(0, str::len)
                    + e.error_msg.map_or(0, str::len)
            })
            .sum();
        let mut out = Vec::with_capacity(64 + self.jobs.len() * 48 + strings);
        out.extend_from_slice(b"{\"request_id\":");
        json_str(&mut out, self.request_id);
        if let Some(code) = self.error_code {
            out.extend_from_slice(b",\"error_code\":");
            json_str(&mut out, code.as_str());
        }
        if let Some(msg) = &self.error_msg {
            out.extend_from_slice(b",\"error_msg\":");
            json_str(&mut out, msg);
        }
        out.extend_from_slice(b",\"jobs\":[");
        for (i, e) in self.jobs.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            // A phone id's characters ([A-Za-z0-9_-]) never need escaping.
            out.extend_from_slice(b"{\"phone_id\":\"");
            out.extend_from_slice(e.phone_id.as_bytes());
            out.push(b'"');
            for (name, value) in [
                (&b",\"job_id\":"[..], e.job_id.map(JobId::as_str)),
                (b",\"error_code\":", e.error_code),
                (b",\"error_msg\":", e.error_msg),
            ] {
                if let Some(v) = value {
                    out.extend_from_slice(name);
                    json_str(&mut out, v);
                }
            }
            out.push(b'}');
        }
        out.extend_from_slice(b"]}");
        out
    }
}

/// `s` as a JSON string: copied whole between quotes when nothing in it
/// needs escaping, else escaped by serde_json.
fn json_str(out: &mut Vec<u8>, s: &str) {
    // Every byte looked at, without an early exit, so that the check runs
    // on many bytes at a time.
    let escapes = s.bytes().fold(false, |found, b| {
        found | (b < 0x20) | (b == b'"') | (b == b'\\')
    });
    if !escapes {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        // Writing a string into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::PhoneId;
    use crate::stop::outcome::Outcome;

    proptest::proptest! {
        #[test]
        fn the_written_response_is_what_serde_json_writes(
            entries in proptest::collection::vec(
                (
                    "[A-Za-z0-9_-]{1,64}",
                    proptest::option::of("(.|\"|\\\\){0,40}"),
                    proptest::option::of("[A-Z.0-9]{0,12}"),
                    proptest::option::of("(.|\"|\\\\|\n|\u{1}|é){0,40}"),
                ),
                0..20,
            ),
            request_id in "(.|\"){1,40}",
            failed in proptest::bool::ANY,
        ) {
            // CPH's job ids: anything but empty, long or control
            // characters.
            let phone_ids: Vec<PhoneId> = entries
                .iter()
                .map(|(phone, ..)| PhoneId::parse(phone).unwrap())
                .collect();
            let job_ids: Vec<Option<JobId>> = entries
                .iter()
                .map(|(_, job, ..)| JobId::from_upstream(job.as_deref()?.into()))
                .collect();
            let jobs: Vec<JobEntry> = entries
                .iter()
                .zip(phone_ids.iter().zip(&job_ids))
                .map(|((_, _, code, msg), (phone, job))| JobEntry {
                    phone_id: phone,
                    job_id: job.as_ref(),
                    error_code: code.as_deref(),
                    error_msg: msg.as_deref(),
                    outcome: Outcome::Unknown,
                })
                .collect();
            let resp = StopResponse {
                request_id: &request_id,
                error_code: failed.then_some(Code::UpstreamFailed),
                error_msg: failed.then(|| "no batch got a \"definite\" answer".to_owned()),
                jobs,
            };
            proptest::prop_assert_eq!(
                String::from_utf8(resp.to_json()).unwrap(),
                serde_json::to_string(&resp).unwrap()
            );
        }
    }
}
