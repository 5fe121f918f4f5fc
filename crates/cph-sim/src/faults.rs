//! The fault configuration: what the simulator does wrong, and how often.
//!
//! [`Faults`] is plain data. It is the body of `PUT /sim/v1/faults` (serde) and
//! a set of command-line flags (`#[command(flatten)]` it into a clap parser).

use clap::Args;
use serde::{Deserialize, Serialize};

/// Faults injected by the simulator. All rates are probabilities in `0..=1`;
/// every fault is off by default.
///
/// For each batch-stop call one uniform draw `u` in `[0, 1)` picks the fault:
/// 500 if `u < error_500_rate`, else 503 if `u < error_500_rate + error_503_rate`,
/// then 429, hang and reset in that order, else none. The same `seed` and the
/// same sequence of calls give the same faults. The other faults below apply
/// to every call they concern (no draw), except `job_failure_rate`, which has
/// its own seeded draw per created job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Args)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Seed for the fault choices (same seed, same sequence); setting faults re-seeds.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Latency added to every CPH call (batch-stop, job query, job list), in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub latency_ms: u64,
    /// Plus a uniform random delay in `0..=jitter_ms`, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub jitter_ms: u64,
    /// Share of batch-stops answered 500 `CPS.0003` "internal error" (nothing stopped).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub error_500_rate: f64,
    /// Share of batch-stops answered 503 `APIG.0503` "service unavailable" (nothing stopped).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub error_503_rate: f64,
    /// Share of batch-stops answered 429 `APIG.0308` with `Retry-After` (nothing stopped).
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub error_429_rate: f64,
    /// `Retry-After` of the injected 429s, in seconds.
    #[arg(long, default_value_t = 0)]
    pub retry_after_s: u64,
    /// Share of batch-stops that apply their stops, then answer only after `hang_ms`.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub hang_rate: f64,
    /// How long a hanging batch-stop waits before answering, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub hang_ms: u64,
    /// Share of batch-stops that apply their stops, then reset the TCP
    /// connection (RST) without any HTTP answer.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub reset_rate: f64,
    /// IAM answers 503 to every token request.
    #[arg(long)]
    pub iam_down: bool,
    /// Latency added to every IAM call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    pub iam_latency_ms: u64,
    /// Poison phone ids: a batch-stop whose `phone_ids` contain any of them is
    /// refused whole with 400 `{"request_id","error_code":"CPS.0004","error_msg":
    /// "invalid phone id in the request"}` and no phone of it is stopped.
    /// Checked after authentication, latency and the drawn fault.
    #[arg(long = "poison-ids", value_delimiter = ',')]
    pub poison_ids: Vec<String>,
    /// Every well-formed batch-stop is refused whole like a poisoned one
    /// (400 `CPS.0004` "invalid phone id in the request", nothing stopped).
    #[arg(long)]
    pub reject_all_400: bool,
    /// When above 0, the `error_msg` of the batch-level 400 `CPS.0004` answers
    /// of `poison_ids` and `reject_all_400` is "invalid phone id in the
    /// request" followed by `x`s up to this many bytes (streamed, never held
    /// in memory whole).
    #[arg(long, default_value_t = 0)]
    pub oversize_error_msg_bytes: u64,
    /// When above 0, batch-stop 200 (or 201) answers and job query 200 answers
    /// carry an extra top-level `"padding"` string of `x`s so that the body is
    /// at least this many bytes. The body is streamed in 64 KiB chunks (the
    /// simulator never holds it whole) with a `Content-Length`, unless
    /// `oversize_chunked` is set.
    #[arg(long, default_value_t = 0)]
    pub oversize_body_bytes: u64,
    /// When above 0, IAM token answers (201) carry an extra `"padding"`
    /// string so that the body is at least this many bytes (streamed).
    #[arg(long, default_value_t = 0)]
    pub oversize_iam_bytes: u64,
    /// Padded answers (`oversize_body_bytes`) are sent with chunked transfer
    /// encoding and no `Content-Length`.
    #[arg(long)]
    pub oversize_chunked: bool,
    /// Batch-stop 200 answers get odd entries. Of the entries that would be
    /// jobs, in answer order: the 1st also carries `"error_code":"CPS.0003",
    /// "error_msg":"internal error"` next to its `job_id`; the 2nd has
    /// `"job_id":""` (its stop is applied and its job exists, under an id the
    /// answer does not tell); the 3rd is preceded by an extra error entry for
    /// the same phone (`"error_code":"CPS.0003","error_msg":"internal error"`),
    /// then comes its normal job entry. Error entries and later jobs are unchanged.
    #[arg(long)]
    pub weird_entries: bool,
    /// Batch-stop answers that would be 200 are 201 instead (same body).
    #[arg(long)]
    pub status_201: bool,
    /// Job queries of existing jobs answer 200 with `Content-Type: text/plain`
    /// and the body `job accepted, status: running (this is not JSON)`.
    #[arg(long)]
    pub job_query_not_json: bool,
    /// Share of stop jobs that fail: the job ends (after the job duration) with
    /// status -1, `error_code` `CPS.0011`, `error_msg` "stop failed", and the
    /// phone goes to status -9 (stop failed), from which it can be stopped
    /// again. Drawn per created job, in creation order, from the seed.
    #[arg(long, default_value_t = 0.0, value_parser = rate)]
    pub job_failure_rate: f64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            seed: 0,
            latency_ms: 0,
            jitter_ms: 0,
            error_500_rate: 0.0,
            error_503_rate: 0.0,
            error_429_rate: 0.0,
            retry_after_s: 0,
            hang_rate: 0.0,
            hang_ms: 30_000,
            reset_rate: 0.0,
            iam_down: false,
            iam_latency_ms: 0,
            poison_ids: Vec::new(),
            reject_all_400: false,
            oversize_error_msg_bytes: 0,
            oversize_body_bytes: 0,
            oversize_iam_bytes: 0,
            oversize_chunked: false,
            weird_entries: false,
            status_201: false,
            job_query_not_json: false,
            job_failure_rate: 0.0,
        }
    }
}

/// Parses a probability for the command line.
fn rate(s: &str) -> Result<f64, String> {
    let r: f64 = s.parse().map_err(|e| format!("{e}"))?;
    check_rate("rate", r).map(|()| r)
}

fn check_rate(name: &str, r: f64) -> Result<(), String> {
    if (0.0..=1.0).contains(&r) {
        Ok(())
    } else {
        Err(format!("{name} must be within 0..=1, got {r}"))
    }
}

impl Faults {
    /// Checks that every rate is a probability (used for bodies of
    /// `PUT /sim/v1/faults`). Batch-stop rates that add up to more than 1
    /// are allowed: the later ones in the draw order then fire less often.
    pub fn validate(&self) -> Result<(), String> {
        let rates = [
            ("error_500_rate", self.error_500_rate),
            ("error_503_rate", self.error_503_rate),
            ("error_429_rate", self.error_429_rate),
            ("hang_rate", self.hang_rate),
            ("reset_rate", self.reset_rate),
            ("job_failure_rate", self.job_failure_rate),
        ];
        for (name, r) in rates {
            check_rate(name, r)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        faults: Faults,
    }

    #[test]
    fn rates_are_validated() {
        assert!(Faults::default().validate().is_ok());
        for bad in [
            Faults {
                hang_rate: f64::NAN,
                ..Faults::default()
            },
            Faults {
                job_failure_rate: 1.5,
                ..Faults::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(serde_json::from_str::<Faults>(r#"{"bogus":1}"#).is_err());
        assert_eq!(
            serde_json::from_str::<Faults>("{}").unwrap(),
            Faults::default()
        );
    }

    #[test]
    fn command_line_defaults_match_and_flags_parse() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
        assert_eq!(Cli::parse_from(["x"]).faults, Faults::default());
        let f = Cli::parse_from([
            "x",
            "--seed=3",
            "--error-429-rate=0.5",
            "--retry-after-s=2",
            "--hang-ms=10",
            "--iam-down",
            "--poison-ids=a,b",
            "--weird-entries",
            "--job-failure-rate=0.25",
            "--oversize-body-bytes=1000",
        ])
        .faults;
        assert_eq!(
            f,
            Faults {
                seed: 3,
                error_429_rate: 0.5,
                retry_after_s: 2,
                hang_ms: 10,
                iam_down: true,
                poison_ids: vec!["a".into(), "b".into()],
                weird_entries: true,
                job_failure_rate: 0.25,
                oversize_body_bytes: 1000,
                ..Faults::default()
            }
        );
        assert!(Cli::try_parse_from(["x", "--hang-rate=2"]).is_err());
    }
}
