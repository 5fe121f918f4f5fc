//! Shared simulator state: configuration, tokens, phones and jobs, counters.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{StatusCode, header};
use axum::response::Response;
use moka::Expiry;
use moka::sync::Cache;
use serde::{Serialize, Serializer};
use time::OffsetDateTime;
use time::format_description::BorrowedFormatItem;

use super::faults::FaultInjector;
use super::{PhoneState, SimOptions, SimStats};

/// Longest accepted token lifetime or job duration, so that time arithmetic
/// cannot overflow.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// Most tokens remembered at once (the oldest are evicted first).
const MAX_TOKENS: u64 = 100_000;
/// Most jobs remembered at once (the oldest are forgotten first).
const MAX_JOBS: usize = 2_000_000;

/// Locks a mutex, ignoring poisoning: every critical section leaves its data
/// consistent, so a panic elsewhere is no reason to stop serving.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Everything the handlers share.
pub(crate) struct Shared {
    pub cfg: Config,
    pub faults: FaultInjector,
    pub tokens: Tokens,
    pub store: Mutex<Store>,
    pub stats: Counters,
    pub clock: Clock,
    /// Batch-stop calls in flight per project.
    flights: Mutex<HashMap<u128, u64>>,
}

/// The immutable part of [`SimOptions`].
pub(crate) struct Config {
    pub iam_domain: String,
    pub iam_user: String,
    pub iam_password: String,
    pub token_ttl: Duration,
    pub phones_per_project: u32,
    pub max_batch_size: usize,
    pub job_duration_ns: u64,
}

impl Shared {
    pub(crate) fn new(opts: &SimOptions) -> Self {
        Self {
            cfg: Config {
                iam_domain: opts.iam_domain.clone(),
                iam_user: opts.iam_user.clone(),
                iam_password: opts.iam_password.clone(),
                token_ttl: opts.token_ttl.min(MAX_DURATION),
                phones_per_project: opts.phones_per_project,
                max_batch_size: opts.max_batch_size,
                job_duration_ns: opts.job_duration.min(MAX_DURATION).as_nanos() as u64,
            },
            faults: FaultInjector::new(opts.faults.clone()),
            tokens: Tokens::new(),
            store: Mutex::new(Store::new(rand::random())),
            stats: Counters::default(),
            clock: Clock::new(),
            flights: Mutex::default(),
        }
    }

    /// State of a phone whose first stop (if any) happened at `first_stop` ns.
    pub(crate) fn state_at(&self, first_stop: Option<u64>, now: u64) -> PhoneState {
        match first_stop {
            None => PhoneState::Running,
            Some(t) if now.saturating_sub(t) < self.cfg.job_duration_ns => PhoneState::Stopping,
            Some(_) => PhoneState::Stopped,
        }
    }

    /// State of `phone` in `project`, `None` if it is not one of its seeded phones.
    pub(crate) fn phone_state(&self, project: &str, phone: &str) -> Option<PhoneState> {
        let key = parse_hex32(project)?;
        let index = seeded_index(project, phone, self.cfg.phones_per_project).ok()?;
        let first_stop = lock(&self.store).first_stop(key, index);
        Some(self.state_at(first_stop, self.clock.now_ns()))
    }

    /// Counts a batch-stop call in flight until the returned guard drops
    /// (answer sent, or handler dropped when its connection is reset).
    pub(crate) fn enter_flight(&self, project: Option<u128>) -> Flight<'_> {
        self.stats.in_flight.fetch_add(1, Relaxed);
        if let Some(p) = project {
            let mut flights = lock(&self.flights);
            let n = flights.entry(p).or_default();
            *n += 1;
            self.stats.max_in_flight_per_project.fetch_max(*n, Relaxed);
        }
        Flight { sim: self, project }
    }
}

/// Guard of one batch-stop call in flight.
pub(crate) struct Flight<'a> {
    sim: &'a Shared,
    project: Option<u128>,
}

impl Drop for Flight<'_> {
    fn drop(&mut self) {
        self.sim.stats.in_flight.fetch_sub(1, Relaxed);
        let Some(p) = self.project else { return };
        if let Entry::Occupied(mut e) = lock(&self.sim.flights).entry(p) {
            *e.get_mut() -= 1;
            if *e.get() == 0 {
                e.remove();
            }
        }
    }
}

/// Parses a 32-lowercase-hex id (project, phone or job).
pub(crate) fn parse_hex32(s: &str) -> Option<u128> {
    if s.len() != 32 {
        return None;
    }
    s.bytes().try_fold(0u128, |acc, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(digit))
    })
}

/// CPH's answer to a malformed phone id.
pub(crate) const INVALID_PHONE: (&str, &str) = ("CPS.0004", "invalid phone id");
/// CPH's answer to a well-formed id that is not a phone of the project.
pub(crate) const PHONE_NOT_FOUND: (&str, &str) = ("CPS.0005", "phone not found");

/// Index of `phone` among the seeded phones of `project` (a validated
/// 32-hex id), decided from the id alone: see [`super::phone_id`].
pub(crate) fn seeded_index(
    project: &str,
    phone: &str,
    phones: u32,
) -> Result<u32, (&'static str, &'static str)> {
    let value = parse_hex32(phone).ok_or(INVALID_PHONE)?;
    // The low 96 bits hold the index, the high 32 bits the project prefix.
    let index = u32::try_from(value & ((1 << 96) - 1)).ok();
    match index {
        Some(i) if i < phones && phone.get(..8) == project.get(..8) => Ok(i),
        _ => Err(PHONE_NOT_FOUND),
    }
}

/// A 128-bit id rendered as 32 lowercase hex digits (request and job ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Hex128(pub u128);

impl Hex128 {
    pub(crate) fn random() -> Self {
        Self(rand::random())
    }

    /// The 32 hex digits (a hot path: about twice as fast as `format!`).
    fn digits(self) -> [u8; 32] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0; 32];
        for (i, digit) in out.iter_mut().enumerate() {
            *digit = HEX[(self.0 >> (124 - 4 * i)) as usize & 0xf];
        }
        out
    }
}

impl fmt::Display for Hex128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.digits();
        f.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Hex128 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let digits = self.digits();
        s.serialize_str(std::str::from_utf8(&digits).map_err(serde::ser::Error::custom)?)
    }
}

/// A JSON response.
pub(crate) fn json_response(status: StatusCode, body: &impl Serialize) -> Response {
    let (status, body) = match serde_json::to_vec(body) {
        Ok(body) => (status, body),
        Err(e) => {
            tracing::error!(error = %e, "cannot serialize a response");
            (StatusCode::INTERNAL_SERVER_ERROR, Vec::new())
        }
    };
    let mut res = Response::new(Body::from(body));
    *res.status_mut() = status;
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    res
}

/// Monotonic time since start, and its wall-clock rendering.
pub(crate) struct Clock {
    start: Instant,
    wall: OffsetDateTime,
}

/// RFC 3339 in UTC with microseconds, as Huawei writes it: `2026-11-27T09:05:22.701000Z`.
const RFC3339_MICROS: &[BorrowedFormatItem<'static>] = time::macros::format_description!(
    "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:6]Z"
);

impl Clock {
    fn new() -> Self {
        Self {
            start: Instant::now(),
            wall: OffsetDateTime::now_utc(),
        }
    }

    /// Nanoseconds since the simulator started.
    pub(crate) fn now_ns(&self) -> u64 {
        self.start.elapsed().as_nanos() as u64
    }

    /// Wall-clock time `ns` nanoseconds after start, as RFC 3339.
    pub(crate) fn rfc3339_at(&self, ns: u64) -> String {
        rfc3339(self.wall + Duration::from_nanos(ns))
    }
}

/// Formats a UTC time as RFC 3339 with microseconds.
pub(crate) fn rfc3339(t: OffsetDateTime) -> String {
    t.format(RFC3339_MICROS).unwrap_or_default()
}

/// Issued tokens, bounded, each forgotten at its expiry.
pub(crate) struct Tokens {
    cache: Cache<String, Arc<TokenInfo>>,
    /// Bumped by revocation: tokens of older epochs are invalid. (Moka's
    /// `invalidate_all` could also hide tokens issued in the same clock tick.)
    epoch: AtomicU64,
}

pub(crate) struct TokenInfo {
    project: Box<str>,
    expires: Instant,
    epoch: u64,
}

/// Expires each token at its own expiry time.
struct AtExpiry;

impl Expiry<String, Arc<TokenInfo>> for AtExpiry {
    fn expire_after_create(
        &self,
        _token: &String,
        info: &Arc<TokenInfo>,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(info.expires.saturating_duration_since(created_at))
    }
}

impl Tokens {
    fn new() -> Self {
        Self {
            cache: Cache::builder()
                .max_capacity(MAX_TOKENS)
                .expire_after(AtExpiry)
                .build(),
            epoch: AtomicU64::new(0),
        }
    }

    /// Issues a token for `project` valid for `ttl`.
    pub(crate) fn issue(&self, project: &str, ttl: Duration) -> String {
        // Real tokens are long base64 PKCS#7 blobs starting with "MII".
        let token = format!("MII{}", hex::encode(rand::random::<[u8; 32]>()));
        let info = TokenInfo {
            project: project.into(),
            expires: Instant::now() + ttl,
            epoch: self.epoch.load(Relaxed),
        };
        self.cache.insert(token.clone(), Arc::new(info));
        token
    }

    /// Whether `token` is known, unexpired, unrevoked and bound to `project`.
    pub(crate) fn is_valid(&self, token: &str, project: &str) -> bool {
        self.cache.get(token).is_some_and(|t| {
            t.epoch == self.epoch.load(Relaxed)
                && Instant::now() < t.expires
                && *t.project == *project
        })
    }

    pub(crate) fn revoke_all(&self) {
        self.epoch.fetch_add(1, Relaxed);
    }
}

/// A stop job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Job {
    pub project: u128,
    pub phone: u32,
    pub begin_ns: u64,
}

/// Index of a project in [`Store::projects`]: keeps keys and job slots small.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct ProjectIdx(u32);

/// Phones that were stopped, and recent jobs. One lock for both, taken once
/// per batch.
pub(crate) struct Store {
    /// Projects that had stops, interned.
    projects: Vec<u128>,
    project_idx: HashMap<u128, ProjectIdx>,
    /// First stop time (ns since start) by (project, phone index).
    phones: HashMap<(ProjectIdx, u32), u64>,
    jobs: JobRing,
}

impl Store {
    fn new(nonce: u64) -> Self {
        Self {
            projects: Vec::new(),
            project_idx: HashMap::new(),
            phones: HashMap::new(),
            jobs: JobRing {
                nonce,
                next: 0,
                slots: Vec::new(),
            },
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

    /// Creates a stop job for a phone; returns the job id, and whether the
    /// phone was running until now.
    pub(crate) fn stop(&mut self, project: ProjectIdx, phone: u32, now: u64) -> (u128, bool) {
        let newly = match self.phones.entry((project, phone)) {
            Entry::Vacant(e) => {
                e.insert(now);
                true
            }
            Entry::Occupied(_) => false,
        };
        let slot = Slot {
            begin_ns: now,
            project,
            phone,
        };
        (self.jobs.push(slot), newly)
    }

    pub(crate) fn first_stop(&self, project: u128, phone: u32) -> Option<u64> {
        let idx = *self.project_idx.get(&project)?;
        self.phones.get(&(idx, phone)).copied()
    }

    pub(crate) fn job(&self, id: u128) -> Option<Job> {
        let slot = self.jobs.get(id)?;
        Some(Job {
            project: *self.projects.get(slot.project.0 as usize)?,
            phone: slot.phone,
            begin_ns: slot.begin_ns,
        })
    }
}

/// A job as stored: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Slot {
    begin_ns: u64,
    project: ProjectIdx,
    phone: u32,
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

/// Lock-free counters behind [`SimStats`].
pub(crate) struct Counters {
    pub iam_requests: AtomicU64,
    pub tokens_issued: AtomicU64,
    pub batch_stop_requests: AtomicU64,
    pub batch_stop_ids: AtomicU64,
    pub max_ids_per_call: AtomicU64,
    pub max_in_flight_per_project: AtomicU64,
    pub in_flight: AtomicU64,
    pub job_queries: AtomicU64,
    pub unauthorized: AtomicU64,
    pub faults_injected: AtomicU64,
    pub stopped_phones: AtomicU64,
    /// Indexed by status code (100..=599).
    by_status: Box<[AtomicU64]>,
}

impl Default for Counters {
    fn default() -> Self {
        Self {
            iam_requests: AtomicU64::default(),
            tokens_issued: AtomicU64::default(),
            batch_stop_requests: AtomicU64::default(),
            batch_stop_ids: AtomicU64::default(),
            max_ids_per_call: AtomicU64::default(),
            max_in_flight_per_project: AtomicU64::default(),
            in_flight: AtomicU64::default(),
            job_queries: AtomicU64::default(),
            unauthorized: AtomicU64::default(),
            faults_injected: AtomicU64::default(),
            stopped_phones: AtomicU64::default(),
            by_status: (0..600).map(|_| AtomicU64::default()).collect(),
        }
    }
}

/// Adds one to a counter.
pub(crate) fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

impl Counters {
    /// Counts an answer by status (and 401s as unauthorized).
    pub(crate) fn record_status(&self, status: StatusCode) {
        if let Some(c) = self.by_status.get(usize::from(status.as_u16())) {
            inc(c);
        }
        if status == StatusCode::UNAUTHORIZED {
            inc(&self.unauthorized);
        }
    }

    /// The counters without the in-flight gauge.
    fn resettable(&self) -> [&AtomicU64; 10] {
        [
            &self.iam_requests,
            &self.tokens_issued,
            &self.batch_stop_requests,
            &self.batch_stop_ids,
            &self.max_ids_per_call,
            &self.max_in_flight_per_project,
            &self.job_queries,
            &self.unauthorized,
            &self.faults_injected,
            &self.stopped_phones,
        ]
    }

    pub(crate) fn reset(&self) {
        for c in self.resettable().into_iter().chain(self.by_status.iter()) {
            c.store(0, Relaxed);
        }
    }

    pub(crate) fn snapshot(&self) -> SimStats {
        let get = |c: &AtomicU64| c.load(Relaxed);
        SimStats {
            iam_requests: get(&self.iam_requests),
            tokens_issued: get(&self.tokens_issued),
            batch_stop_requests: get(&self.batch_stop_requests),
            batch_stop_ids: get(&self.batch_stop_ids),
            max_ids_per_call: get(&self.max_ids_per_call),
            max_in_flight_per_project: get(&self.max_in_flight_per_project),
            in_flight: get(&self.in_flight),
            job_queries: get(&self.job_queries),
            unauthorized: get(&self.unauthorized),
            faults_injected: get(&self.faults_injected),
            stopped_phones: get(&self.stopped_phones),
            responses_by_status: (0u16..)
                .zip(self.by_status.iter())
                .filter_map(|(status, c)| Some((status, get(c))).filter(|(_, n)| *n > 0))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::phone_id;
    use super::*;

    const P: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn seeded_phones_are_recognised_from_their_id() {
        assert_eq!(seeded_index(P, &phone_id(P, 0), 10), Ok(0));
        assert_eq!(seeded_index(P, &phone_id(P, 9), 10), Ok(9));
        assert_eq!(seeded_index(P, &phone_id(P, 10), 10), Err(PHONE_NOT_FOUND));
        let other = phone_id("fedcba9876543210fedcba9876543210", 1);
        assert_eq!(seeded_index(P, &other, 10), Err(PHONE_NOT_FOUND));
        assert_eq!(
            seeded_index(P, "0123456710000000000000000000001", 10),
            Err(INVALID_PHONE)
        );
        assert_eq!(
            seeded_index(P, "01234567100000000000000000000001", 10),
            Err(PHONE_NOT_FOUND)
        );
        assert_eq!(
            seeded_index(P, "0123456700000000000000000000000A", 10),
            Err(INVALID_PHONE)
        );
        assert_eq!(
            seeded_index(P, "+1234567000000000000000000000001", 10),
            Err(INVALID_PHONE)
        );
    }

    #[test]
    fn store_keeps_first_stops_and_jobs() {
        let mut store = Store::new(7);
        let p = store.project(1 << 100);
        assert_eq!(store.project(1 << 100), p);
        let (id, newly) = store.stop(p, 2, 3);
        assert!(newly);
        let (again, newly) = store.stop(p, 2, 4);
        assert!(!newly);
        assert_eq!(again, id + 1);
        let job = Job {
            project: 1 << 100,
            phone: 2,
            begin_ns: 3,
        };
        assert_eq!(store.job(id), Some(job));
        assert_eq!(store.job(id + 1).map(|j| j.begin_ns), Some(4));
        assert_eq!(store.job(id + 2), None);
        assert_eq!(store.job(id ^ (1 << 100)), None);
        assert_eq!(store.first_stop(1 << 100, 2), Some(3));
        assert_eq!(store.first_stop(1 << 100, 3), None);
        assert_eq!(store.first_stop(5, 2), None);
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
        };
        let first = ring.push(slot(0));
        ring.next = MAX_JOBS as u64; // pretend MAX_JOBS - 1 jobs were pushed
        assert_eq!(ring.get(first).map(|s| s.phone), Some(0));
        let last = ring.push(slot(1));
        assert_eq!(ring.get(first), None);
        assert_eq!(ring.get(last).map(|s| s.phone), Some(1));
    }

    #[test]
    fn hex_ids_round_trip() {
        let id = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;
        let text = Hex128(id).to_string();
        assert_eq!(text, format!("{id:032x}"));
        assert_eq!(parse_hex32(&text), Some(id));
        assert_eq!(
            serde_json::to_string(&Hex128(1)).unwrap(),
            format!("\"{:032x}\"", 1)
        );
    }

    #[test]
    fn times_have_microseconds() {
        let t = time::macros::datetime!(2026-11-27 09:05:22.701 UTC);
        assert_eq!(rfc3339(t), "2026-11-27T09:05:22.701000Z");
    }
}
