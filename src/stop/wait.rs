//! Following a stop's jobs to their end: CPH's job list (at most 20 batch
//! request ids a call, 100 jobs a page), through the project's upstream
//! limit, with a short cache so that many callers polling the same stop do
//! not multiply upstream calls; and `Prefer: wait=N` (RFC 7240).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::time::Instant;

use crate::domain::ProjectId;
use crate::tenants::Project;
use crate::upstream::Upstream;
use crate::upstream::cph::{ListedJob, parse_job_list};

/// Request ids one job-list call may name.
pub const IDS_PER_CALL: usize = 20;
/// Jobs one page holds (the largest `limit` CPH takes).
pub const PAGE: usize = 100;
/// A job list is reused this long for the same batches.
const CACHE_FOR: Duration = Duration::from_secs(1);
/// Polling between job-list reads while waiting: 0.5 s doubling to 5 s.
const FIRST_POLL: Duration = Duration::from_millis(500);
const MAX_POLL: Duration = Duration::from_secs(5);

/// A job's state as the caller sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobState {
    Running,
    Succeeded,
    Failed {
        error_code: Option<String>,
        error_msg: Option<String>,
    },
}

impl JobState {
    pub fn label(&self) -> &'static str {
        match self {
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed { .. } => "failed",
        }
    }

    pub fn is_final(&self) -> bool {
        !matches!(self, JobState::Running)
    }

    fn of(job: &ListedJob) -> Self {
        match job.status {
            2 => JobState::Succeeded,
            -1 => JobState::Failed {
                error_code: job.error_code.clone(),
                error_msg: job.error_msg.clone(),
            },
            _ => JobState::Running,
        }
    }
}

/// `Prefer: wait=N`: the seconds asked for, if the header holds a
/// well-formed `wait` preference (anything else is ignored).
pub fn preferred_wait(values: &[&str]) -> Option<u64> {
    values
        .iter()
        .flat_map(|v| v.split(','))
        .filter_map(|pref| {
            let token = pref.split(';').next()?.trim();
            let (name, value) = token.split_once('=')?;
            if !name.trim().eq_ignore_ascii_case("wait") {
                return None;
            }
            value.trim().trim_matches('"').parse::<u64>().ok()
        })
        .next()
}

/// Reads job states from CPH's job list.
pub struct Tracker {
    upstream: Arc<Upstream>,
    /// Jobs by (project, comma-joined batch request ids).
    cache: moka::future::Cache<(ProjectId, String), Arc<Vec<ListedJob>>>,
}

impl Tracker {
    pub fn new(upstream: Arc<Upstream>) -> Self {
        Self {
            upstream,
            cache: moka::future::Cache::builder()
                .max_capacity(200_000)
                .weigher(|_, jobs: &Arc<Vec<ListedJob>>| {
                    u32::try_from(jobs.len().max(1)).unwrap_or(u32::MAX)
                })
                .time_to_live(CACHE_FOR)
                .build(),
        }
    }

    /// The state of every job created by the batch-stop answers
    /// `batch_ids` (CPH's request ids, each with the number of jobs it
    /// created, so that paging stops at the last full page), by job id.
    pub async fn states(
        &self,
        project: &Arc<Project>,
        request_id: &str,
        batch_ids: &[(&str, usize)],
    ) -> Result<HashMap<String, JobState>, String> {
        let mut states = HashMap::new();
        let ids: Vec<(&str, usize)> = batch_ids
            .iter()
            .copied()
            .filter(|(id, _)| is_plain(id))
            .collect();
        for chunk in ids.chunks(IDS_PER_CALL) {
            let names: Vec<&str> = chunk.iter().map(|(id, _)| *id).collect();
            let expected: usize = chunk.iter().map(|(_, n)| n).sum();
            let key = (project.id.clone(), names.join(","));
            let jobs = self
                .cache
                .try_get_with(key, self.fetch(project, request_id, &names, expected))
                .await
                .map_err(|e| (*e).clone())?;
            for job in jobs.iter() {
                states.insert(job.job_id.clone(), JobState::of(job));
            }
        }
        Ok(states)
    }

    /// Every page of the jobs of up to 20 batches (`expected` jobs in all:
    /// a page that reaches them is the last).
    async fn fetch(
        &self,
        project: &Arc<Project>,
        request_id: &str,
        chunk: &[&str],
        expected: usize,
    ) -> Result<Arc<Vec<ListedJob>>, String> {
        let slot = self.upstream.slot(&project.id);
        let mut jobs = Vec::new();
        // 20 batches of at most 10,000 ids: a bound, not an expectation.
        for page in 0..2_000 {
            let deadline = Instant::now() + self.upstream.cfg.timeout;
            let _permit = slot.acquire().await;
            let offset = u32::try_from(page * PAGE).unwrap_or(u32::MAX);
            let answer = self
                .upstream
                .credentials
                .call(project, deadline, |auth| async move {
                    self.upstream
                        .cph
                        .list_jobs(project, &auth, request_id, chunk, offset, PAGE as u32)
                        .await
                })
                .await
                .map_err(|e| e.to_string())?
                .and_then(|(status, body)| parse_job_list(status, &body))
                .map_err(|o| format!("CPH job list failed: {}", o.label()))?;
            let n = answer.len();
            jobs.extend(answer);
            if n < PAGE || jobs.len() >= expected {
                break;
            }
        }
        Ok(Arc::new(jobs))
    }

    /// Polls until every job of `jobs` is final or `until` passes (0.5 s
    /// doubling to 5 s between reads). Returns the last states read.
    pub async fn wait(
        &self,
        project: &Arc<Project>,
        request_id: &str,
        batch_ids: &[(&str, usize)],
        jobs: &[&str],
        until: Instant,
    ) -> Result<HashMap<String, JobState>, String> {
        let mut poll = FIRST_POLL;
        loop {
            let states = self.states(project, request_id, batch_ids).await?;
            let done = jobs
                .iter()
                .all(|j| states.get(*j).is_some_and(JobState::is_final));
            let now = Instant::now();
            if done || now >= until {
                return Ok(states);
            }
            tokio::time::sleep(poll.min(until - now)).await;
            poll = (poll * 2).min(MAX_POLL);
        }
    }
}

/// Batch request ids as CPH makes them; anything else is not sent back.
fn is_plain(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The answer of a stop that waited: the stop's own body with `done` and a
/// `status` per job entry.
pub fn waited_body(answer: &[u8], view: &Value) -> Vec<u8> {
    let mut body: Value = serde_json::from_slice(answer).unwrap_or_else(|_| json!({}));
    body["done"] = view["done"].clone();
    body["jobs"] = view["jobs"].clone();
    serde_json::to_vec(&body).unwrap_or_else(|_| answer.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefer_wait() {
        assert_eq!(preferred_wait(&["wait=10"]), Some(10));
        assert_eq!(preferred_wait(&["respond-async, wait=5"]), Some(5));
        assert_eq!(preferred_wait(&["handling=lenient", "Wait = 7"]), Some(7));
        assert_eq!(preferred_wait(&["wait=\"3\""]), Some(3));
        assert_eq!(preferred_wait(&["wait=soon"]), None);
        assert_eq!(preferred_wait(&["wait"]), None);
        assert_eq!(preferred_wait(&[]), None);
    }
}
