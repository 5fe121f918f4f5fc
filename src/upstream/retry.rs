//! When to try again: jittered exponential backoff, and a retry budget that
//! bounds the extra calls retries may add.

use std::sync::Mutex;
use std::time::Duration;

/// Jittered exponential backoff: attempt `n` waits a random share, at
/// least `floor`, of `base * 2^n` capped at `max`.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
    /// The least share of the ceiling that is waited (0: full jitter).
    pub floor: f64,
}

impl Backoff {
    pub fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.base.saturating_mul(1 << attempt.min(10)).min(self.max);
        ceiling.mul_f64(self.floor + (1.0 - self.floor) * rand::random::<f64>())
    }

    /// The server's `Retry-After` (capped at `cap`) when it sent one, else
    /// [`Backoff::delay`].
    pub fn delay_or(&self, attempt: u32, retry_after: Option<Duration>, cap: Duration) -> Duration {
        retry_after.map_or_else(|| self.delay(attempt), |after| after.min(cap))
    }
}

/// Bounds retries: every first attempt earns `ratio` of a retry, every retry
/// spends one, so an outage adds at most that fraction of extra upstream
/// calls (plus a small reserve).
pub struct RetryBudget {
    ratio: f64,
    balance: Mutex<f64>,
}

const BUDGET_RESERVE: f64 = 10.0;
const BUDGET_CAP: f64 = 1000.0;

impl RetryBudget {
    pub fn new(ratio: f64) -> Self {
        Self {
            ratio,
            balance: Mutex::new(BUDGET_RESERVE),
        }
    }

    pub fn earn(&self) {
        let mut b = self.balance.lock().unwrap_or_else(|e| e.into_inner());
        *b = (*b + self.ratio).min(BUDGET_CAP);
    }

    pub fn try_spend(&self) -> bool {
        let mut b = self.balance.lock().unwrap_or_else(|e| e.into_inner());
        if *b >= 1.0 {
            *b -= 1.0;
            true
        } else {
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_is_spent_and_earned() {
        let b = RetryBudget::new(0.5);
        let spent = (0..20).filter(|_| b.try_spend()).count();
        assert_eq!(spent, BUDGET_RESERVE as usize);
        b.earn();
        assert!(!b.try_spend());
        b.earn();
        assert!(b.try_spend());
    }

    #[test]
    fn backoff_is_bounded() {
        let b = Backoff {
            base: Duration::from_millis(50),
            max: Duration::from_secs(2),
            floor: 0.5,
        };
        for attempt in 0..20 {
            let d = b.delay(attempt);
            assert!(d <= b.max && d >= b.base.mul_f64(0.5), "{d:?}");
        }
        let after = Some(Duration::from_secs(9));
        assert_eq!(
            b.delay_or(0, after, Duration::from_secs(5)),
            Duration::from_secs(5)
        );
    }
}
