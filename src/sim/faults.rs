//! Fault configuration and the seeded generator that decides, call by call,
//! which fault fires.

use std::sync::Mutex;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::state::lock;

/// Faults injected by the simulator. All rates are probabilities in `0..=1`.
///
/// For each batch-stop call one uniform draw `u` in `[0, 1)` picks the fault:
/// 500 if `u < error_500_rate`, else 503 if `u < error_500_rate + error_503_rate`,
/// then 429, hang and reset in that order, else none. The same `seed` and the
/// same sequence of calls give the same faults.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Seed of the fault generator; setting faults re-seeds it.
    pub seed: u64,
    /// Delay added to every CPH call (batch-stop and job query).
    pub latency_ms: u64,
    /// Plus a uniform random delay in `0..=jitter_ms`.
    pub jitter_ms: u64,
    /// Probability of a batch-stop answering 500 `CPS.0003` "internal error".
    pub error_500_rate: f64,
    /// Probability of a batch-stop answering 503 `APIG.0503` "service unavailable".
    pub error_503_rate: f64,
    /// Probability of a batch-stop answering 429 `APIG.0308` with `Retry-After`.
    pub error_429_rate: f64,
    /// Value of the `Retry-After` header of injected 429s, in seconds.
    pub retry_after_s: u64,
    /// Probability of a batch-stop applying its stops, then answering only after `hang_ms`.
    pub hang_rate: f64,
    /// How long a hanging batch-stop waits before answering.
    pub hang_ms: u64,
    /// Probability of a batch-stop applying its stops, then resetting the TCP
    /// connection (RST) without any HTTP answer.
    pub reset_rate: f64,
    /// IAM answers 503 to every token request.
    pub iam_down: bool,
    /// Delay added to every IAM call.
    pub iam_latency_ms: u64,
}

impl Faults {
    /// Checks that every rate is a probability (used for bodies of `PUT /sim/v1/faults`).
    pub(crate) fn validate(&self) -> Result<(), String> {
        let rates = [
            ("error_500_rate", self.error_500_rate),
            ("error_503_rate", self.error_503_rate),
            ("error_429_rate", self.error_429_rate),
            ("hang_rate", self.hang_rate),
            ("reset_rate", self.reset_rate),
        ];
        match rates.iter().find(|(_, r)| !(0.0..=1.0).contains(r)) {
            Some((name, r)) => Err(format!("{name} must be within 0..=1, got {r}")),
            None => Ok(()),
        }
    }
}

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
}

impl Inner {
    fn new(faults: Faults) -> Self {
        Self {
            choice: SplitMix64(faults.seed),
            jitter: SplitMix64(faults.seed ^ 0xa076_1d64_78bd_642f),
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

    pub(crate) fn get(&self) -> Faults {
        lock(&self.inner).faults.clone()
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
    use super::super::testutil::*;
    use super::super::{Sim, phone_id};
    use super::*;
    use serde_json::Value;
    use std::time::Instant;

    fn mixed(seed: u64) -> Faults {
        Faults {
            seed,
            error_500_rate: 0.2,
            error_503_rate: 0.2,
            error_429_rate: 0.2,
            hang_rate: 0.1,
            reset_rate: 0.1,
            jitter_ms: 10,
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
        // Job queries draw jitter only: they do not shift the fault sequence.
        let f = FaultInjector::new(mixed(1));
        let b: Vec<_> = (0..200)
            .map(|_| {
                f.cph_delay();
                f.draw_batch_stop().0
            })
            .collect();
        assert!(a.iter().map(|(f, _)| *f).eq(b));
    }

    #[test]
    fn rates_are_validated() {
        assert!(mixed(0).validate().is_ok());
        let bad = Faults {
            hang_rate: f64::NAN,
            ..Faults::default()
        };
        assert!(bad.validate().is_err());
        assert!(serde_json::from_str::<Faults>(r#"{"bogus":1}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Faults>("{}").unwrap(),
            Faults::default()
        );
    }

    /// Starts a sim whose every batch-stop suffers `faults`, with a token.
    async fn faulty(faults: Faults) -> (Sim, reqwest::Client, String) {
        let sim = Sim::start(opts()).await.unwrap();
        let c = client();
        let t = token(&c, &sim, PROJECT).await;
        sim.set_faults(faults);
        (sim, c, t)
    }

    #[tokio::test]
    async fn error_faults_answer_without_stopping() {
        let cases = [
            (
                Faults {
                    error_500_rate: 1.0,
                    ..Faults::default()
                },
                500,
                "CPS.0003",
            ),
            (
                Faults {
                    error_503_rate: 1.0,
                    ..Faults::default()
                },
                503,
                "APIG.0503",
            ),
            (
                Faults {
                    error_429_rate: 1.0,
                    retry_after_s: 7,
                    ..Faults::default()
                },
                429,
                "APIG.0308",
            ),
        ];
        for (faults, status, code) in cases {
            let (sim, c, t) = faulty(faults).await;
            let p = phone_id(PROJECT, 3);
            let res = stop_call(&c, &sim, &t, PROJECT, &[&p]).await.unwrap();
            assert_eq!(res.status(), status);
            if status == 429 {
                assert_eq!(res.headers()["retry-after"], "7");
            }
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error_code"], code);
            assert_eq!(body["request_id"].as_str().unwrap().len(), 32);
            assert_eq!(
                sim.phone_state(PROJECT, &p),
                Some(super::super::PhoneState::Running)
            );
            let stats = sim.stats();
            assert_eq!((stats.faults_injected, stats.stopped_phones), (1, 0));
            assert_eq!(stats.responses_by_status[&status], 1);
        }
    }

    #[tokio::test]
    async fn hang_applies_stops_then_answers_late() {
        let (sim, c, t) = faulty(Faults {
            hang_rate: 1.0,
            hang_ms: 300,
            ..Faults::default()
        })
        .await;
        let p = phone_id(PROJECT, 4);
        let start = Instant::now();
        let err = c
            .post(format!(
                "{}/v1/{PROJECT}/cloud-phone/phones/batch-stop",
                sim.url()
            ))
            .header("X-Auth-Token", &t)
            .json(&serde_json::json!({ "phone_ids": [p] }))
            .timeout(Duration::from_millis(100))
            .send()
            .await
            .unwrap_err();
        assert!(err.is_timeout(), "{err:?}");
        assert!(start.elapsed() < Duration::from_millis(300));
        assert_eq!(
            sim.phone_state(PROJECT, &p),
            Some(super::super::PhoneState::Stopping)
        );
        // Without a client timeout the answer comes, normally, after the hang.
        let start = Instant::now();
        let res = stop_call(&c, &sim, &t, PROJECT, &[&p]).await.unwrap();
        assert!(start.elapsed() >= Duration::from_millis(300));
        assert_eq!(res.status(), 200);
        let stats = sim.stats();
        assert_eq!((stats.faults_injected, stats.stopped_phones), (2, 1));
    }

    #[tokio::test]
    async fn reset_gives_a_connection_error_after_stopping() {
        let (sim, c, t) = faulty(Faults {
            reset_rate: 1.0,
            ..Faults::default()
        })
        .await;
        let p = phone_id(PROJECT, 5);
        let err = stop_call(&c, &sim, &t, PROJECT, &[&p]).await.unwrap_err();
        assert!(err.status().is_none() && !err.is_timeout(), "{err:?}");
        assert!(err.is_request() || err.is_connect(), "{err:?}");
        assert_eq!(
            sim.phone_state(PROJECT, &p),
            Some(super::super::PhoneState::Stopping)
        );
        let stats = sim.stats();
        assert_eq!(
            (stats.faults_injected, stats.stopped_phones, stats.in_flight),
            (1, 1, 0)
        );
        assert!(!stats.responses_by_status.contains_key(&200));
        // The server keeps serving other connections.
        sim.set_faults(Faults::default());
        let res = stop_call(&client(), &sim, &t, PROJECT, &[&p])
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
    }

    #[tokio::test]
    async fn latency_delays_cph_calls() {
        let (sim, c, t) = faulty(Faults {
            latency_ms: 150,
            ..Faults::default()
        })
        .await;
        let start = Instant::now();
        let res = stop_call(&c, &sim, &t, PROJECT, &[&phone_id(PROJECT, 0)])
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(start.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn same_seed_same_fault_sequence_over_http() {
        let faults = Faults {
            seed: 42,
            error_500_rate: 0.3,
            error_503_rate: 0.2,
            error_429_rate: 0.2,
            ..Faults::default()
        };
        let (sim, c, t) = faulty(faults.clone()).await;
        let p = phone_id(PROJECT, 6);
        let mut runs = Vec::new();
        for seed in [42, 42, 43] {
            sim.set_faults(Faults {
                seed,
                ..faults.clone()
            });
            let mut statuses = Vec::new();
            for _ in 0..30 {
                statuses.push(
                    stop_call(&c, &sim, &t, PROJECT, &[&p])
                        .await
                        .unwrap()
                        .status()
                        .as_u16(),
                );
            }
            runs.push(statuses);
        }
        assert_eq!(runs[0], runs[1]);
        assert_ne!(runs[0], runs[2]);
        for status in [200, 500, 503, 429] {
            assert!(
                runs[0].contains(&status),
                "{status} never seen in {:?}",
                runs[0]
            );
        }
    }

    #[tokio::test]
    async fn iam_down_and_slow() {
        let sim = Sim::start(super::super::SimOptions {
            faults: Faults {
                iam_down: true,
                iam_latency_ms: 100,
                ..Faults::default()
            },
            ..opts()
        })
        .await
        .unwrap();
        let start = Instant::now();
        let res = client()
            .post(format!("{}/v3/auth/tokens", sim.url()))
            .json(&auth_body("sim-user", "sim-password", PROJECT))
            .send()
            .await
            .unwrap();
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert_eq!(res.status(), 503);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], 503);
    }
}
