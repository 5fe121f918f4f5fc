//! The seeded generator that decides, call by call, which fault fires.

use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use crate::faults::Faults;
use crate::util::lock;

/// The fault picked for one batch-stop call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    None,
    /// 500 `CPS.0003`.
    Error500,
    /// 503 `APIG.0503`.
    Error503,
    /// 429 `APIG.0308` with this `Retry-After` (seconds).
    Throttle(u64),
    /// Apply the stops, answer after this long.
    Hang(Duration),
    /// Apply the stops, then reset the connection.
    Reset,
}

/// Active faults and their generators. The lock is only held to copy numbers
/// out, never across an await.
pub(crate) struct FaultInjector {
    inner: Mutex<Inner>,
}

struct Inner {
    faults: Faults,
    /// Drives fault choices only, so that job queries (which draw jitter) do
    /// not shift the fault sequence of batch-stops.
    choice: SplitMix64,
    jitter: SplitMix64,
    /// Drives job failures only.
    job_failure: SplitMix64,
}

impl Inner {
    fn new(faults: Faults) -> Self {
        Self {
            choice: SplitMix64(faults.seed),
            jitter: SplitMix64(faults.seed ^ 0xa076_1d64_78bd_642f),
            job_failure: SplitMix64(faults.seed ^ 0xe703_7ed1_a0b4_28db),
            faults,
        }
    }

    /// Latency plus jitter for one CPH call.
    fn cph_delay(&mut self) -> Duration {
        let jitter = match self.faults.jitter_ms {
            0 => 0,
            max => self.jitter.up_to(max),
        };
        Duration::from_millis(self.faults.latency_ms.saturating_add(jitter))
    }
}

/// Draws job failures for the jobs of one batch, holding the injector's lock.
pub(crate) struct JobFailures<'a>(MutexGuard<'a, Inner>);

impl JobFailures<'_> {
    /// Whether the next created job fails.
    pub(crate) fn next_fails(&mut self) -> bool {
        let rate = self.0.faults.job_failure_rate;
        rate > 0.0 && self.0.job_failure.unit() < rate
    }
}

impl FaultInjector {
    pub(crate) fn new(faults: Faults) -> Self {
        Self {
            inner: Mutex::new(Inner::new(faults)),
        }
    }

    /// Replaces the faults and re-seeds the generators.
    pub(crate) fn set(&self, faults: Faults) {
        *lock(&self.inner) = Inner::new(faults);
    }

    /// A copy of the active faults.
    pub(crate) fn get(&self) -> Faults {
        lock(&self.inner).faults.clone()
    }

    /// Reads the active faults without copying them.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&Faults) -> R) -> R {
        f(&lock(&self.inner).faults)
    }

    /// Draws the fault and the delay of one batch-stop call. Drawn when the
    /// call is admitted (before its delay), so the fault sequence follows the
    /// arrival order even when delays overlap.
    pub(crate) fn draw_batch_stop(&self) -> (Fault, Duration) {
        let mut inner = lock(&self.inner);
        let delay = inner.cph_delay();
        let u = inner.choice.unit();
        let f = &inner.faults;
        let mut edge = 0.0;
        let mut below = |rate: f64| {
            edge += rate;
            u < edge
        };
        let fault = if below(f.error_500_rate) {
            Fault::Error500
        } else if below(f.error_503_rate) {
            Fault::Error503
        } else if below(f.error_429_rate) {
            Fault::Throttle(f.retry_after_s)
        } else if below(f.hang_rate) {
            Fault::Hang(Duration::from_millis(f.hang_ms))
        } else if below(f.reset_rate) {
            Fault::Reset
        } else {
            Fault::None
        };
        (fault, delay)
    }

    /// The job failure generator, for one batch.
    pub(crate) fn job_failures(&self) -> JobFailures<'_> {
        JobFailures(lock(&self.inner))
    }

    /// The delay of a CPH call other than batch-stop.
    pub(crate) fn cph_delay(&self) -> Duration {
        lock(&self.inner).cph_delay()
    }

    /// Whether IAM is down, and the delay of an IAM call.
    pub(crate) fn iam(&self) -> (bool, Duration) {
        let inner = lock(&self.inner);
        let f = &inner.faults;
        (f.iam_down, Duration::from_millis(f.iam_latency_ms))
    }
}

/// SplitMix64: tiny, fast, and stable across dependency upgrades, which keeps
/// seeded fault sequences reproducible.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)` with 53 bits of precision.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..=max` (multiply-shift; the bias is negligible).
    fn up_to(&mut self, max: u64) -> u64 {
        let span = u128::from(max) + 1;
        ((u128::from(self.next_u64()) * span) >> 64) as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mixed(seed: u64) -> Faults {
        Faults {
            seed,
            error_500_rate: 0.2,
            error_503_rate: 0.2,
            error_429_rate: 0.2,
            hang_rate: 0.1,
            reset_rate: 0.1,
            jitter_ms: 10,
            job_failure_rate: 0.5,
            ..Faults::default()
        }
    }

    #[test]
    fn same_seed_same_draws() {
        let draws = |seed| {
            let f = FaultInjector::new(mixed(seed));
            (0..200).map(|_| f.draw_batch_stop()).collect::<Vec<_>>()
        };
        let a = draws(1);
        assert_eq!(a, draws(1));
        assert_ne!(a, draws(2));
        for kind in [Fault::None, Fault::Error500, Fault::Error503, Fault::Reset] {
            assert!(a.iter().any(|(f, _)| *f == kind), "{kind:?} never drawn");
        }
        assert!(a.iter().all(|(_, d)| *d <= Duration::from_millis(10)));
        // Job queries and job failures have their own streams: they do not
        // shift the fault sequence.
        let f = FaultInjector::new(mixed(1));
        let b: Vec<_> = (0..200)
            .map(|_| {
                f.cph_delay();
                f.job_failures().next_fails();
                f.draw_batch_stop().0
            })
            .collect();
        assert!(a.iter().map(|(f, _)| *f).eq(b));
    }

    #[test]
    fn job_failures_are_seeded() {
        let fails = |seed| {
            let f = FaultInjector::new(mixed(seed));
            let mut draws = f.job_failures();
            (0..100).map(|_| draws.next_fails()).collect::<Vec<_>>()
        };
        let a = fails(5);
        assert_eq!(a, fails(5));
        assert!(a.contains(&true) && a.contains(&false));
        let none = FaultInjector::new(Faults::default());
        assert!(!(0..100).any(|_| none.job_failures().next_fails()));
    }
}
