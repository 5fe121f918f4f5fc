//! Micro-benchmarks of the gateway's per-request hot paths:
//!
//! - `plan/*`: parsing and validating a 10,000-id body into a [`Plan`];
//! - `merge/*`: merging 100 batch outcomes into one entry per id (and the
//!   response's serialization, the stop's record, and the per-outcome phone
//!   counts of the metrics);
//! - `jwt/*`: caller JWT verification for HS256, RS256 and ES256, cold (the
//!   verified-token cache disabled: every call checks the signature and
//!   claims) and cached (the same token again: SHA-256 and a cache hit);
//! - `log/*`: one request log line through the fmt layer into the batched
//!   log writer (its background thread writing to a sink).
//!
//! Run: `cargo bench --bench hot_paths -- --warm-up-time 1 --measurement-time 3`.
//! The end-to-end benchmark is `benches/run.sh`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::path::PathBuf;

use cph_gateway::auth::Authenticator;
use cph_gateway::config::{AuthConfig, Config};
use cph_gateway::domain::Code;
use cph_gateway::stop::fanout::{answers, answers_for};
use cph_gateway::stop::merge::merge;
use cph_gateway::stop::outcome::BatchOutcome;
use cph_gateway::stop::plan::Plan;
use cph_gateway::stop::record;
use cph_gateway::stop::response::StopResponse;
use cph_gateway::telemetry::Metrics;
use cph_gateway::upstream::answer::stop_outcome;
use cph_gateway::upstream::cph::UpstreamJob;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

const PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
const IDS: usize = 10_000;
const BATCH: usize = 100;
const ISSUER: &str = "https://idp.bench.local";
const AUDIENCE: &str = "cph-gateway";
const SECRET: &str = "bench-secret-0123456789abcdef0123456789";

/// The first `n` seeded phones of the simulator (`cph_sim::phone_id`).
fn ids(n: usize) -> Vec<String> {
    (0..n)
        .map(|i| cph_sim::phone_id(PROJECT, i as u32))
        .collect()
}

fn plan_benches(c: &mut Criterion) {
    let ids = ids(IDS);
    let body = serde_json::to_vec(&json!({ "phone_ids": ids })).unwrap();
    let shared: Vec<std::sync::Arc<str>> = ids.iter().map(|s| s.as_str().into()).collect();

    let mut g = c.benchmark_group("plan");
    g.throughput(Throughput::Elements(IDS as u64));
    g.bench_function("parse_10k", |b| {
        b.iter(|| Plan::parse(black_box(&body), IDS, BATCH).unwrap())
    });
    g.bench_function("new_10k", |b| {
        b.iter_batched(
            || shared.clone(),
            |v| Plan::new(v, BATCH).unwrap(),
            BatchSize::LargeInput,
        )
    });
    g.finish();
}

fn merge_benches(c: &mut Criterion) {
    let ids = ids(IDS);
    let plan = Plan::new(ids.iter().map(|s| s.as_str().into()).collect(), BATCH).unwrap();
    assert_eq!(plan.batch_count(), IDS / BATCH);
    // What CPH answers: one job per id, in the batch's order; as it comes
    // (what `answers` takes) and normalised as the fan-out does.
    let raw: Vec<Vec<UpstreamJob>> = plan
        .batches()
        .enumerate()
        .map(|(b, batch)| {
            batch
                .iter()
                .enumerate()
                .map(|(i, id)| UpstreamJob {
                    phone_id: id.shared(),
                    job_id: Some(format!("{:032x}", b * BATCH + i).into()),
                    error_code: None,
                    error_msg: None,
                })
                .collect()
        })
        .collect();
    let jobs: Vec<BatchOutcome> = raw
        .iter()
        .map(|r| BatchOutcome::Jobs(answers(r.clone())))
        .collect();
    let failed: Vec<BatchOutcome> = (0..plan.batch_count())
        .map(|_| {
            BatchOutcome::failed(
                Code::UpstreamFailed,
                "CPH unreachable after 3 attempts: connection refused; these phones were not stopped",
            )
        })
        .collect();

    let mut g = c.benchmark_group("merge");
    g.throughput(Throughput::Elements(IDS as u64));
    g.bench_function("answers_10k", |b| {
        b.iter_batched(
            || raw.clone(),
            |raw| raw.into_iter().map(answers).collect::<Vec<_>>(),
            BatchSize::LargeInput,
        )
    });
    // What the fan-out does: each call's answers with the ids it asked for
    // (CPH answers them in order, so the duplicate search is skipped).
    let batches: Vec<&[cph_gateway::domain::PhoneId]> = plan.batches().collect();
    g.bench_function("answers_10k_in_batch_order", |b| {
        b.iter_batched(
            || raw.clone(),
            |raw| {
                raw.into_iter()
                    .zip(&batches)
                    .map(|(r, ids)| answers_for(r, ids))
                    .collect::<Vec<_>>()
            },
            BatchSize::LargeInput,
        )
    });
    g.bench_function("jobs_10k", |b| {
        b.iter(|| merge(black_box(&plan), black_box(&jobs)).jobs.len())
    });
    g.bench_function("failed_10k", |b| {
        b.iter(|| merge(black_box(&plan), black_box(&failed)).jobs.len())
    });
    // What a stop does after the merge: count the entries by outcome and
    // add each count to `cphgw_phones_total`.
    let metrics = Metrics::new();
    g.bench_function("jobs_10k_phone_metrics", |b| {
        b.iter(|| {
            let merged = merge(black_box(&plan), black_box(&jobs));
            for (outcome, n) in merged.outcome_counts() {
                if n > 0 {
                    metrics.phones(outcome.label(), "acme", n);
                }
            }
            merged.jobs.len()
        })
    });
    // The stop's record after the merge: each batch's ids and entries
    // (what `Stops::run` keeps), made and dropped.
    g.bench_function("jobs_10k_recorded", |b| {
        b.iter(|| {
            let merged = merge(black_box(&plan), black_box(&jobs));
            let mut start = 0;
            let batches: Vec<_> = (0..plan.batch_count())
                .map(|i| {
                    let len = plan.batch(i).len();
                    let entries = &merged.jobs[start..start + len];
                    start += len;
                    record::answered(i, &plan, Vec::new(), entries)
                })
                .collect();
            batches.len()
        })
    });
    // The response after the merge: through serde_json (as it was), and
    // written by `StopResponse::to_json` (what the handler does).
    let respond = || StopResponse {
        request_id: "0123456789abcdef0123456789abcdef",
        error_code: None,
        error_msg: None,
        jobs: merge(black_box(&plan), black_box(&jobs)).jobs,
    };
    g.bench_function("jobs_10k_serialized", |b| {
        b.iter(|| serde_json::to_vec(&respond()).unwrap().len())
    });
    g.bench_function("jobs_10k_written", |b| b.iter(|| respond().to_json().len()));
    g.finish();
}

fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

/// The auth section of a gateway config with all three key sources.
fn auth_config(verified_token_cache: u64) -> AuthConfig {
    let keys = keys_dir();
    let text = format!(
        r#"
[auth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
hs256_secret_env = "BENCH_JWT_SECRET"
public_key_files = ["{rsa}", "{ec}"]
verified_token_cache = {verified_token_cache}

[iam]
endpoint = "http://127.0.0.1:9"

[iam.credentials.default]
domain = "sim-domain"
user = "sim-user"
password_env = "BENCH_IAM_PASSWORD"

[upstream]
cph_endpoint = "http://127.0.0.1:9"
"#,
        rsa = keys.join("rsa-public.pem").display(),
        ec = keys.join("ec-public.pem").display(),
    );
    let env: BTreeMap<String, String> = [
        ("BENCH_JWT_SECRET".to_owned(), SECRET.to_owned()),
        ("BENCH_IAM_PASSWORD".to_owned(), "sim-password".to_owned()),
    ]
    .into();
    Config::from_toml(&text, &env)
        .expect("bench config is valid")
        .auth
}

fn mint(alg: Algorithm) -> String {
    let now = jsonwebtoken::get_current_timestamp();
    let claims = json!({
        "iss": ISSUER, "aud": AUDIENCE, "sub": "bench", "tenant": "acme",
        "iat": now, "nbf": now, "exp": now + 3600, "roles": [],
    });
    let read = |f: &str| std::fs::read(keys_dir().join(f)).expect("test key");
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(SECRET.as_bytes()),
        Algorithm::RS256 => EncodingKey::from_rsa_pem(&read("rsa-private.pem")).unwrap(),
        Algorithm::ES256 => EncodingKey::from_ec_pem(&read("ec-private.pem")).unwrap(),
        other => unreachable!("{other:?}"),
    };
    jsonwebtoken::encode(&Header::new(alg), &claims, &key).unwrap()
}

fn jwt_benches(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // A cache of 0 entries disables moka's map: every verify is the uncached path.
    let cold = Authenticator::new(auth_config(0), reqwest::Client::new()).unwrap();
    let cached = Authenticator::new(auth_config(10_000), reqwest::Client::new()).unwrap();

    let mut g = c.benchmark_group("jwt");
    for (name, alg) in [
        ("hs256", Algorithm::HS256),
        ("rs256", Algorithm::RS256),
        ("es256", Algorithm::ES256),
    ] {
        let token = mint(alg);
        let caller = rt.block_on(cold.verify(&token)).expect("token verifies");
        assert_eq!(
            caller.tenant.as_ref().map(|t| t.to_string()).as_deref(),
            Some("acme")
        );
        rt.block_on(cached.verify(&token)).unwrap();
        g.bench_function(format!("{name}_cold"), |b| {
            b.iter(|| rt.block_on(cold.verify(black_box(&token))).unwrap())
        });
        g.bench_function(format!("{name}_cached"), |b| {
            b.iter(|| rt.block_on(cached.verify(black_box(&token))).unwrap())
        });
    }
    g.finish();
}

fn upstream_benches(c: &mut Criterion) {
    use cph_gateway::domain::PhoneId;
    #[derive(serde::Serialize)]
    struct StopBody<'a> {
        phone_ids: &'a [PhoneId],
    }
    let ids: Vec<PhoneId> = (0..100)
        .map(|i| PhoneId::parse(&format!("0a1b2c3d{i:024x}")).unwrap())
        .collect();
    let mut g = c.benchmark_group("upstream");
    g.throughput(Throughput::Elements(ids.len() as u64));
    // A batch-stop body of 100 ids, through serde_json (as before) and
    // written straight (now).
    g.bench_function("stop_body_100_serde", |b| {
        b.iter(|| {
            serde_json::to_vec(&StopBody {
                phone_ids: black_box(&ids),
            })
            .unwrap()
        })
    });
    g.bench_function("stop_body_100", |b| {
        b.iter(|| cph_gateway::upstream::cph::stop_body(black_box(&ids)))
    });
    // CPH's answer to that batch, read: each entry's id shared with the
    // batch's (now), and read into its own string (an answer that does not
    // line up with the batch; every answer before).
    let answer = serde_json::to_vec(&serde_json::json!({
        "request_id": "0123456789abcdef0123456789abcdef",
        "jobs": ids.iter().enumerate().map(|(i, id)| serde_json::json!({
            "phone_id": id.as_str(), "job_id": format!("{i:032x}")
        })).collect::<Vec<_>>(),
    }))
    .unwrap();
    for (name, batch) in [
        ("stop_answer_100", &ids[..]),
        ("stop_answer_100_unmatched", &[]),
    ] {
        g.bench_function(name, |b| {
            b.iter(|| {
                stop_outcome(
                    reqwest::StatusCode::OK,
                    black_box(&answer),
                    None,
                    black_box(batch),
                )
            })
        });
    }
    g.finish();
}

fn log_benches(c: &mut Criterion) {
    use std::io::Write;
    use tracing_subscriber::fmt::MakeWriter;

    let (writer, guard) = cph_gateway::telemetry::writer::batched(std::io::sink());
    let line = [b'x'; 350];
    let mut g = c.benchmark_group("log");
    g.bench_function("writer_push_350b", |b| {
        b.iter(|| writer.make_writer().write_all(black_box(&line)).unwrap())
    });
    let subscriber = tracing_subscriber::fmt()
        .with_ansi(false)
        .with_writer(writer.clone())
        .finish();
    tracing::subscriber::with_default(subscriber, || {
        // A single-id stop's line as it was: a request span with its
        // fields empty at first, recorded one by one as they became known,
        // and entered on each of the request's polls.
        g.bench_function("request_line_span_fields", |b| {
            b.iter(|| {
                let span = tracing::info_span!(
                    "request",
                    request_id = "0123456789abcdef",
                    route = "/v1/cloud-phone/phones/batch-stop",
                    method = "POST",
                    tenant = tracing::field::Empty,
                    caller = tracing::field::Empty,
                    project = tracing::field::Empty,
                    ids = tracing::field::Empty,
                    batches = tracing::field::Empty,
                    stopped = tracing::field::Empty,
                    rejected = tracing::field::Empty,
                    failed = tracing::field::Empty,
                    unknown = tracing::field::Empty,
                    upstream_calls = tracing::field::Empty,
                    upstream_failed = tracing::field::Empty,
                    upstream_max_ms = tracing::field::Empty,
                );
                for _ in 0..4 {
                    let _e = span.enter();
                }
                span.record("caller", "billing-service");
                span.record("tenant", "acme");
                span.record("project", "0a1b2c3d4e5f60718293a4b5c6d7e8f9");
                span.record("ids", 1usize);
                span.record("batches", 1usize);
                span.record("upstream_calls", 1u32);
                span.record("upstream_failed", 0u32);
                span.record("upstream_max_ms", 0.8f64);
                for (k, n) in [
                    ("stopped", 1u64),
                    ("rejected", 0),
                    ("failed", 0),
                    ("unknown", 0),
                ] {
                    span.record(k, n);
                }
                tracing::info!(parent: &span, status = 200u16, latency_ms = 1.25f64, "request");
            })
        });
        // The line now: a span with the three fields known at the start,
        // the rest noted into the request's log and written on the event.
        g.bench_function("request_line", |b| {
            use cph_gateway::domain::{ProjectId, TenantId};
            use cph_gateway::telemetry::request_log::{RequestLog, write_line};
            let tenant = TenantId::parse("acme").unwrap();
            let project = ProjectId::parse("0a1b2c3d4e5f60718293a4b5c6d7e8f9").unwrap();
            b.iter(|| {
                let span = tracing::info_span!(
                    "request",
                    request_id = "0123456789abcdef",
                    route = "/v1/cloud-phone/phones/batch-stop",
                    method = "POST",
                );
                for _ in 0..4 {
                    let _e = span.enter();
                }
                let log = std::sync::Arc::new(RequestLog::default());
                log.note(|f| f.caller = Some("billing-service".into()));
                log.note(|f| f.tenant = Some(tenant.clone()));
                log.note(|f| f.project = Some(project.clone()));
                log.note(|f| {
                    f.ids = Some(1);
                    f.batches = Some(1);
                });
                log.note(|f| {
                    f.upstream_calls = Some(1);
                    f.upstream_failed = Some(0);
                    f.upstream_max_ms = Some(0.8);
                });
                log.note(|f| {
                    [f.stopped, f.rejected, f.failed, f.unknown] =
                        [Some(1), Some(0), Some(0), Some(0)];
                });
                let _e = span.enter();
                write_line(200, 1.25, &log.take(), false);
            })
        });
    });
    g.finish();
    drop(guard);
}

criterion_group!(
    benches,
    plan_benches,
    merge_benches,
    jwt_benches,
    upstream_benches,
    log_benches
);
criterion_main!(benches);
