//! Shared simulator state: configuration, tokens, phones and jobs, counters.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Mutex;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use crate::ids::{parse_hex32, seeded_index};
use crate::inject::FaultInjector;
use crate::options::{AkSkCredential, SimOptions};
use crate::stats::Counters;
use crate::store::{PhoneState, Store};
use crate::tokens::Tokens;
use crate::util::{Clock, lock};

/// Longest accepted token lifetime or job duration, so that time arithmetic
/// cannot overflow.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

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
    /// Changed at run time by `Sim::set_iam_password` (a rotated password).
    pub iam_password: Mutex<String>,
    pub token_ttl: Duration,
    /// AK/SK credentials by access key (replaceable at run time, see
    /// `Sim::set_aksk`).
    pub aksk: Mutex<HashMap<String, AkSkCredential>>,
    pub phones_per_project: u32,
    pub max_batch_size: usize,
}

impl Shared {
    pub(crate) fn new(opts: &SimOptions) -> Self {
        let job_duration_ns = opts.job_duration.min(MAX_DURATION).as_nanos() as u64;
        Self {
            cfg: Config {
                iam_domain: opts.iam_domain.clone(),
                iam_user: opts.iam_user.clone(),
                iam_password: Mutex::new(opts.iam_password.clone()),
                token_ttl: opts.token_ttl.min(MAX_DURATION),
                aksk: Mutex::new(by_access_key(&opts.aksk)),
                phones_per_project: opts.phones_per_project,
                max_batch_size: opts.max_batch_size,
            },
            faults: FaultInjector::new(opts.faults.clone()),
            tokens: Tokens::new(),
            store: Mutex::new(Store::new(rand::random(), job_duration_ns)),
            stats: Counters::default(),
            clock: Clock::new(),
            flights: Mutex::default(),
        }
    }

    /// State of `phone` in `project`, `None` if it is not one of its seeded phones.
    pub(crate) fn phone_state(&self, project: &str, phone: &str) -> Option<PhoneState> {
        let key = parse_hex32(project)?;
        let index = seeded_index(project, phone, self.cfg.phones_per_project).ok()?;
        let now = self.clock.now_ns();
        Some(lock(&self.store).phone_state(key, index, now))
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

/// AK/SK credentials by access key.
pub(crate) fn by_access_key(creds: &[AkSkCredential]) -> HashMap<String, AkSkCredential> {
    creds.iter().map(|c| (c.ak.clone(), c.clone())).collect()
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
