//! Phones that were stopped, stop jobs, and the batch-stop calls that made them.

use std::collections::{HashMap, VecDeque};

use serde::{Deserialize, Serialize};

/// Most jobs remembered at once (the oldest are forgotten first).
const MAX_JOBS: usize = 2_000_000;
/// Most batch-stop calls remembered for the job list (the oldest are forgotten first).
const MAX_BATCHES: usize = 200_000;

/// CPH's per-phone answer to a stop of a phone that is stopping or stopped.
pub(crate) const NOT_ALLOWED: (&str, &str) = (
    "CPS.0010",
    "the phone's status does not allow the operation",
);
/// The error of a failed stop job.
pub(crate) const STOP_FAILED: (&str, &str) = ("CPS.0011", "stop failed");

/// Status of a simulated phone (CPH's phone `status`: see [`PhoneState::status`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PhoneState {
    /// Never stopped (status 2).
    Running,
    /// A stop job was accepted and has not finished yet (status 7).
    Stopping,
    /// The last stop job succeeded (status 8).
    Stopped,
    /// The last stop job failed (status -9); the phone can be stopped again.
    StopFailed,
}

impl PhoneState {
    /// CPH's numeric status: 2 running, 7 stopping, 8 stopped, -9 stop failed.
    pub fn status(self) -> i32 {
        match self {
            PhoneState::Running => 2,
            PhoneState::Stopping => 7,
            PhoneState::Stopped => 8,
            PhoneState::StopFailed => -9,
        }
    }
}

/// State of a stop job at some time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JobStatus {
    Running,
    Succeeded,
    Failed,
}

impl JobStatus {
    /// CPH's numeric job status: 1 running, 2 success, -1 failed.
    pub(crate) fn code(self) -> i8 {
        match self {
            JobStatus::Running => 1,
            JobStatus::Succeeded => 2,
            JobStatus::Failed => -1,
        }
    }
}

/// A stop job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Job {
    pub project: u128,
    pub phone: u32,
    pub begin_ns: u64,
    /// Whether the job ends in failure.
    pub fails: bool,
}

/// Index of a project in [`Store::projects`]: keeps keys and job slots small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ProjectIdx(u32);

/// The last stop of a phone.
#[derive(Debug, Clone, Copy)]
struct LastStop {
    begin_ns: u64,
    fails: bool,
}

/// The jobs made by one batch-stop call: consecutive job sequence numbers.
#[derive(Debug, Clone, Copy)]
struct Batch {
    project: ProjectIdx,
    first_seq: u64,
    count: u32,
}

/// Phones that were stopped, jobs and batches. One lock for all, taken once
/// per batch.
pub(crate) struct Store {
    job_duration_ns: u64,
    /// Projects that had stops, interned.
    projects: Vec<u128>,
    project_idx: HashMap<u128, ProjectIdx>,
    /// Last stop by (project, phone index).
    phones: HashMap<(ProjectIdx, u32), LastStop>,
    jobs: JobRing,
    /// Batch-stop calls by request id, and their order for eviction.
    batches: HashMap<u128, Batch>,
    batch_order: VecDeque<u128>,
}

impl Store {
    pub(crate) fn new(nonce: u64, job_duration_ns: u64) -> Self {
        Self {
            job_duration_ns,
            projects: Vec::new(),
            project_idx: HashMap::new(),
            phones: HashMap::new(),
            jobs: JobRing {
                nonce,
                next: 0,
                slots: Vec::new(),
            },
            batches: HashMap::new(),
            batch_order: VecDeque::new(),
        }
    }

    /// Interns a project (once per batch, not per phone).
    pub(crate) fn project(&mut self, project: u128) -> ProjectIdx {
        *self.project_idx.entry(project).or_insert_with(|| {
            self.projects.push(project);
            // Four billion projects do not fit in memory anyway.
            ProjectIdx(u32::try_from(self.projects.len() - 1).unwrap_or(u32::MAX))
        })
    }

    fn state_of(&self, last: Option<&LastStop>, now: u64) -> PhoneState {
        match last {
            None => PhoneState::Running,
            Some(s) if now.saturating_sub(s.begin_ns) < self.job_duration_ns => {
                PhoneState::Stopping
            }
            Some(s) if s.fails => PhoneState::StopFailed,
            Some(_) => PhoneState::Stopped,
        }
    }

    /// Stops a running (or stop-failed) phone: creates its job and returns
    /// the job id. A stopping or stopped phone gets [`NOT_ALLOWED`].
    /// `fails` is asked only when a job is created.
    pub(crate) fn stop(
        &mut self,
        project: ProjectIdx,
        phone: u32,
        now: u64,
        fails: impl FnOnce() -> bool,
    ) -> Result<u128, (&'static str, &'static str)> {
        let state = self.state_of(self.phones.get(&(project, phone)), now);
        if matches!(state, PhoneState::Stopping | PhoneState::Stopped) {
            return Err(NOT_ALLOWED);
        }
        let fails = fails();
        let last = LastStop {
            begin_ns: now,
            fails,
        };
        self.phones.insert((project, phone), last);
        Ok(self.jobs.push(Slot {
            begin_ns: now,
            project,
            phone,
            fails,
        }))
    }

    /// State of a seeded phone at `now`.
    /// Starts every phone again (as an operator would): all phones run, and
    /// a new stop of any of them gets a job. Jobs and batches are kept.
    pub(crate) fn start_all(&mut self) {
        self.phones.clear();
    }

    pub(crate) fn phone_state(&self, project: u128, phone: u32, now: u64) -> PhoneState {
        let last = self
            .project_idx
            .get(&project)
            .and_then(|idx| self.phones.get(&(*idx, phone)));
        self.state_of(last, now)
    }

    /// Status of a job at `now`.
    pub(crate) fn job_status(&self, job: &Job, now: u64) -> JobStatus {
        if now.saturating_sub(job.begin_ns) < self.job_duration_ns {
            JobStatus::Running
        } else if job.fails {
            JobStatus::Failed
        } else {
            JobStatus::Succeeded
        }
    }

    /// When a job begun at `begin_ns` ends.
    pub(crate) fn end_ns(&self, begin_ns: u64) -> u64 {
        begin_ns.saturating_add(self.job_duration_ns)
    }

    pub(crate) fn job(&self, id: u128) -> Option<Job> {
        let slot = self.jobs.get(id)?;
        Some(Job {
            project: *self.projects.get(slot.project.0 as usize)?,
            phone: slot.phone,
            begin_ns: slot.begin_ns,
            fails: slot.fails,
        })
    }

    /// The sequence number the next job will get: pass it to
    /// [`Store::record_batch`] after the batch's stops.
    pub(crate) fn next_seq(&self) -> u64 {
        self.jobs.next
    }

    /// Remembers the jobs created since `first_seq` as the jobs of the
    /// batch-stop call answered with `request_id`.
    pub(crate) fn record_batch(&mut self, request_id: u128, project: ProjectIdx, first_seq: u64) {
        let count = u32::try_from(self.jobs.next - first_seq).unwrap_or(u32::MAX);
        let batch = Batch {
            project,
            first_seq,
            count,
        };
        if self.batches.insert(request_id, batch).is_none() {
            self.batch_order.push_back(request_id);
        }
        while self.batch_order.len() > MAX_BATCHES {
            if let Some(old) = self.batch_order.pop_front() {
                self.batches.remove(&old);
            }
        }
    }

    /// The jobs (id and job) of the batch-stop answered with `request_id` in
    /// `project`, in the order of the batch; jobs already forgotten are left out.
    pub(crate) fn batch_jobs(&self, project: u128, request_id: u128) -> Vec<(u128, Job)> {
        let Some(batch) = self.batches.get(&request_id) else {
            return Vec::new();
        };
        if self.projects.get(batch.project.0 as usize) != Some(&project) {
            return Vec::new();
        }
        let nonce = u128::from(self.jobs.nonce) << 64;
        (batch.first_seq..batch.first_seq + u64::from(batch.count))
            .filter_map(|seq| {
                let id = nonce | u128::from(seq);
                self.job(id).map(|job| (id, job))
            })
            .collect()
    }
}

/// A job as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    begin_ns: u64,
    project: ProjectIdx,
    phone: u32,
    fails: bool,
}

/// Bounded job store: job ids are `nonce << 64 | sequence`, and job `sequence`
/// lives in slot `sequence % MAX_JOBS` until `MAX_JOBS` later jobs have been
/// created. O(1), no allocation once full, oldest jobs forgotten first.
struct JobRing {
    /// Random per simulator, so ids from another run are unknown.
    nonce: u64,
    /// Sequence of the next job.
    next: u64,
    slots: Vec<Slot>,
}

impl JobRing {
    fn push(&mut self, slot: Slot) -> u128 {
        let seq = self.next;
        self.next += 1;
        match self.slots.get_mut((seq % MAX_JOBS as u64) as usize) {
            Some(s) => *s = slot,
            None => self.slots.push(slot),
        }
        u128::from(self.nonce) << 64 | u128::from(seq)
    }

    fn get(&self, id: u128) -> Option<Slot> {
        let seq = id as u64;
        let live = (id >> 64) as u64 == self.nonce
            && seq < self.next
            && self.next - seq <= MAX_JOBS as u64;
        live.then(|| self.slots.get((seq % MAX_JOBS as u64) as usize).copied())
            .flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phones_move_through_their_states() {
        let mut store = Store::new(7, 10);
        let p = store.project(1 << 100);
        assert_eq!(store.project(1 << 100), p);
        assert_eq!(store.phone_state(1 << 100, 2, 0), PhoneState::Running);
        let id = store.stop(p, 2, 3, || false).unwrap();
        assert_eq!(store.phone_state(1 << 100, 2, 5), PhoneState::Stopping);
        assert_eq!(store.stop(p, 2, 4, || unreachable!()), Err(NOT_ALLOWED));
        assert_eq!(store.phone_state(1 << 100, 2, 13), PhoneState::Stopped);
        assert_eq!(store.stop(p, 2, 20, || unreachable!()), Err(NOT_ALLOWED));
        let job = store.job(id).unwrap();
        assert_eq!((job.project, job.phone, job.begin_ns), (1 << 100, 2, 3));
        assert_eq!(store.job_status(&job, 12), JobStatus::Running);
        assert_eq!(store.job_status(&job, 13), JobStatus::Succeeded);

        let failing = store.stop(p, 3, 0, || true).unwrap();
        assert_eq!(failing, id + 1);
        assert_eq!(store.phone_state(1 << 100, 3, 10), PhoneState::StopFailed);
        let job = store.job(failing).unwrap();
        assert_eq!(store.job_status(&job, 10), JobStatus::Failed);
        // A stop-failed phone can be stopped again.
        let again = store.stop(p, 3, 10, || false).unwrap();
        assert_eq!(store.phone_state(1 << 100, 3, 11), PhoneState::Stopping);
        assert_eq!(store.job(again).map(|j| j.begin_ns), Some(10));
        assert_eq!(store.job(again + 1), None);
        assert_eq!(store.job(id ^ (1 << 100)), None);
        assert_eq!(store.phone_state(5, 2, 0), PhoneState::Running);
        let codes: Vec<i32> = [
            PhoneState::Running,
            PhoneState::Stopping,
            PhoneState::Stopped,
            PhoneState::StopFailed,
        ]
        .iter()
        .map(|s| s.status())
        .collect();
        assert_eq!(codes, [2, 7, 8, -9]);
    }

    #[test]
    fn batches_remember_their_jobs() {
        let mut store = Store::new(1, 10);
        let p = store.project(42);
        let first = store.next_seq();
        let a = store.stop(p, 0, 0, || false).unwrap();
        let b = store.stop(p, 1, 0, || true).unwrap();
        store.record_batch(99, p, first);
        let empty = store.next_seq();
        store.record_batch(100, p, empty);
        let jobs: Vec<u128> = store.batch_jobs(42, 99).iter().map(|j| j.0).collect();
        assert_eq!(jobs, [a, b]);
        assert!(store.batch_jobs(42, 100).is_empty());
        assert!(store.batch_jobs(43, 99).is_empty());
        assert!(store.batch_jobs(42, 7).is_empty());
    }

    #[test]
    fn job_ring_forgets_the_oldest() {
        let mut ring = JobRing {
            nonce: 9,
            next: 0,
            slots: Vec::new(),
        };
        let slot = |phone| Slot {
            begin_ns: 0,
            project: ProjectIdx(0),
            phone,
            fails: false,
        };
        let first = ring.push(slot(0));
        ring.next = MAX_JOBS as u64; // pretend MAX_JOBS - 1 jobs were pushed
        assert_eq!(ring.get(first).map(|s| s.phone), Some(0));
        let last = ring.push(slot(1));
        assert_eq!(ring.get(first), None);
        assert_eq!(ring.get(last).map(|s| s.phone), Some(1));
    }
}
