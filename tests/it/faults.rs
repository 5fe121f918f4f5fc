//! Fault tolerance: whatever the simulator does wrong (errors, throttling,
//! latency, hangs, resets, IAM outages, revoked tokens), every requested
//! phone id comes back exactly once with a job or an honest error, the
//! gateway never invents a job, resends only what is safe to resend, keeps
//! its limits, and stays up.
//!
//! Each scenario prints one line; once all scenarios of a run have passed,
//! the last one prints the total: "fault suite: N scenarios, R requests,
//! P phone ids, 0 lost" (run with `--success-output immediate` or
//! `--no-capture` to see them).

use std::collections::{BTreeMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use cph_sim::{Faults, PhoneState, SimStats};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

/// Upstream limits of every scenario.
const BATCH: usize = 100;
const PER_PROJECT: usize = 8;

/// The scenarios that add to the suite's total line.
const SCENARIOS: &[&str] = &[
    "error_500",
    "error_503",
    "throttled_429",
    "latency_jitter",
    "hangs",
    "resets",
    "iam_down_cold",
    "iam_down_warm",
    "iam_not_hammered",
    "token_revocation",
    "mixed",
    "retry_budget",
    "deadline",
];

fn opts() -> TestOptions {
    TestOptions::default()
        .set("upstream.max_batch_size", &BATCH.to_string())
        .set(
            "upstream.max_concurrency_per_project",
            &PER_PROJECT.to_string(),
        )
        .set("upstream.max_concurrency_per_request", "8")
}

/// One caller request of a scenario.
struct Req {
    project: &'static str,
    path: String,
    ids: Vec<String>,
}

fn stop_path(project: &str) -> String {
    if project == PROJECT_A {
        STOP.into()
    } else {
        format!("/v1/{project}/cloud-phone/phones/batch-stop")
    }
}

/// `n` requests of `per` distinct phones each (no phone in two requests),
/// each followed by 5 repeated ids that must be stopped and listed once.
fn requests(app: &TestApp, project: &'static str, n: u32, per: u32) -> Vec<Req> {
    (0..n)
        .map(|i| {
            let mut ids = app.phones(project, i * per, per);
            ids.extend_from_within(..5);
            Req {
                project,
                path: stop_path(project),
                ids,
            }
        })
        .collect()
}

async fn send_all(app: &TestApp, reqs: &[Req]) -> Vec<(StatusCode, Value)> {
    let token = caller_token(TENANT_A);
    join_all(reqs.iter().map(|r| app.stop_at(&r.path, &token, &r.ids))).await
}

fn batches_of(reqs: &[Req]) -> u64 {
    reqs.iter()
        .map(|r| distinct(&r.ids).len().div_ceil(BATCH) as u64)
        .sum()
}

/// What a scenario's answers came to.
#[derive(Debug, Default)]
struct Count {
    requests: usize,
    ids: usize,
    lost: usize,
    jobs: usize,
    statuses: BTreeMap<u16, usize>,
    codes: BTreeMap<String, usize>,
}

impl Count {
    fn code(&self, code: &str) -> usize {
        self.codes.get(code).copied().unwrap_or(0)
    }
    fn status(&self, status: u16) -> usize {
        self.statuses.get(&status).copied().unwrap_or(0)
    }
}

fn is_known_code(code: &str) -> bool {
    code.starts_with("CPS.")
        || code.starts_with("APIG.")
        || matches!(code, "CPHGW.0301" | "CPHGW.0302" | "CPHGW.0303")
}

/// The gateway claims that these phones were not stopped: the sim must agree.
fn says_not_stopped(code: &str, msg: &str) -> bool {
    code.starts_with("APIG.")
        || code == "CPS.0003"
        || code == "CPHGW.0303"
        || msg.contains("not stopped")
        || msg.contains("not sent")
}

/// The shared checker: statuses, one entry per distinct id in order, known
/// codes, top-level error on 502/503/504, jobs that really exist in the sim,
/// and "not stopped" claims that are true.
fn check(app: &TestApp, reqs: &[Req], answers: &[(StatusCode, Value)]) -> Count {
    assert_eq!(reqs.len(), answers.len());
    let mut c = Count::default();
    for (req, (status, body)) in reqs.iter().zip(answers) {
        c.requests += 1;
        let want = distinct(&req.ids);
        c.ids += want.len();
        let got: HashSet<&str> = body["jobs"]
            .as_array()
            .map(|a| a.iter().filter_map(|e| e["phone_id"].as_str()).collect())
            .unwrap_or_default();
        c.lost += want.iter().filter(|id| !got.contains(*id)).count();
        *c.statuses.entry(status.as_u16()).or_default() += 1;

        assert!(
            matches!(status.as_u16(), 200 | 502 | 503 | 504),
            "status {status}: {body}"
        );
        assert!(body["request_id"].is_string(), "no request_id: {body}");
        assert_accounts_for(&req.ids, body);

        let mut any_job = false;
        for e in body["jobs"].as_array().expect("jobs") {
            let id = e["phone_id"].as_str().expect("phone_id");
            match (e["job_id"].as_str(), e["error_code"].as_str()) {
                (Some(_), None) => {
                    any_job = true;
                    c.jobs += 1;
                    let state = app.sim.phone_state(req.project, id);
                    assert!(
                        matches!(state, Some(PhoneState::Stopping | PhoneState::Stopped)),
                        "{id} was reported with a job but the sim says {state:?}: {e}"
                    );
                }
                (None, Some(code)) => {
                    assert!(is_known_code(code), "unexpected error code: {e}");
                    let msg = e["error_msg"].as_str().expect("error_msg");
                    assert!(!msg.is_empty(), "empty error_msg: {e}");
                    if says_not_stopped(code, msg) {
                        assert_eq!(
                            app.sim.phone_state(req.project, id),
                            Some(PhoneState::Running),
                            "the gateway says {id} was not stopped, the sim stopped it: {e}"
                        );
                    }
                    *c.codes.entry(code.to_owned()).or_default() += 1;
                }
                _ => panic!("an entry has exactly one of job_id and error_code: {e}"),
            }
        }
        if *status == StatusCode::OK {
            assert!(
                body.get("error_code").is_none(),
                "200 with a top-level error: {body}"
            );
            assert!(any_job, "200 although no batch got a definite answer");
        } else {
            let want = match status.as_u16() {
                502 => "CPHGW.0301",
                503 => "CPHGW.0303",
                _ => "CPHGW.0302",
            };
            assert_eq!(body["error_code"], want, "top-level code of a {status}");
            assert!(
                body["error_msg"].as_str().is_some_and(|m| !m.is_empty()),
                "no top-level error_msg: {}",
                body["error_msg"]
            );
            assert!(!any_job, "{status} although a batch got jobs");
        }
    }
    assert_eq!(c.lost, 0, "phone ids lost");
    c
}

/// Answers to 500, 503 and 429 (the retryable faults) the sim gave.
fn retryable_answers(s: &SimStats) -> u64 {
    [500, 503, 429]
        .iter()
        .map(|st| s.responses_by_status.get(st).copied().unwrap_or(0))
        .sum()
}

/// After a scenario: the limits held, and the gateway is up and answers a
/// normal stop once the faults are gone.
async fn stays_up(app: &TestApp) {
    stays_up_with_abandoned(app, 0).await;
}

/// [`stays_up`] where up to `abandoned` calls timed out at the gateway: the
/// gateway closed them and freed their slots, but the sim, which does not
/// notice a closed connection while it hangs, still counts them in flight.
async fn stays_up_with_abandoned(app: &TestApp, abandoned: u64) {
    let s = app.sim.stats();
    assert!(
        s.max_ids_per_call as usize <= BATCH,
        "a call carried {} ids (batch size {BATCH})",
        s.max_ids_per_call
    );
    assert!(
        s.max_in_flight_per_project as usize <= PER_PROJECT + abandoned as usize,
        "{} calls at once for one project (limit {PER_PROJECT}, {abandoned} abandoned)",
        s.max_in_flight_per_project
    );
    let health = app
        .client
        .get(format!("{}/healthz", app.admin_url))
        .send()
        .await
        .expect("healthz answers");
    assert_eq!(health.status(), StatusCode::OK);
    app.sim.set_faults(Faults::default());
    let token = caller_token(TENANT_A);
    let ids = app.phones(PROJECT_A, 0, 10);
    let ok = eventually(Duration::from_secs(10), async || {
        // The scenario stopped these phones: start them again, so that a
        // normal stop gets jobs (CPH refuses to stop a stopped phone).
        app.sim.start_phones();
        let (status, body) = app.stop(&token, &ids).await;
        status == StatusCode::OK
            && body["jobs"]
                .as_array()
                .is_some_and(|j| j.len() == 10 && j.iter().all(|e| e["job_id"].is_string()))
    })
    .await;
    assert!(
        ok,
        "the gateway does not answer a normal stop after the faults"
    );
}

/// Prints the scenario's line and adds it to the run's tally; the scenario
/// that completes the tally prints the total.
fn report(name: &str, c: &Count, stats: &SimStats, took: Duration) {
    println!(
        "scenario {name}: {} requests, {} phone ids, {} stopped, {} lost, {} upstream calls, \
         {} ms; statuses {:?}; error codes {:?}",
        c.requests,
        c.ids,
        c.jobs,
        c.lost,
        stats.batch_stop_requests,
        took.as_millis(),
        c.statuses,
        c.codes
    );
    assert!(SCENARIOS.contains(&name), "{name} is not in SCENARIOS");
    let run =
        std::env::var("NEXTEST_RUN_ID").unwrap_or_else(|_| format!("pid-{}", std::process::id()));
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join("fault-suite")
        .join(run);
    std::fs::create_dir_all(&dir).expect("tally dir");
    std::fs::write(
        dir.join(name),
        format!("{} {} {}", c.requests, c.ids, c.lost),
    )
    .expect("tally");
    let mut totals = [0usize; 4];
    for entry in std::fs::read_dir(&dir).expect("tally dir").flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let n: Vec<usize> = text
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        if let [r, p, l] = n[..] {
            totals[0] += 1;
            totals[1] += r;
            totals[2] += p;
            totals[3] += l;
        }
    }
    let [n, r, p, l] = totals;
    if n == SCENARIOS.len() {
        println!("fault suite: {n} scenarios, {r} requests, {p} phone ids, {l} lost");
    } else {
        println!(
            "fault suite so far: {n} of {} scenarios, {r} requests, {p} phone ids, {l} lost",
            SCENARIOS.len()
        );
    }
}

/// Caches project A's IAM token with a stop of an id that is no phone (the
/// sim answers it with a per-phone error), so that no seeded phone changes.
async fn warm_up(app: &TestApp) {
    let ids = vec!["warm-up".to_owned()];
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::OK, "warm-up stop: {body}");
    assert!(body["jobs"][0]["error_code"].is_string(), "{body}");
}

/// Starts a gateway, warms its IAM token, sets `faults`, sends `n` requests
/// of `per` ids concurrently to project A and checks them.
async fn run_scenario(
    opts: TestOptions,
    faults: Faults,
    n: u32,
    per: u32,
) -> (TestApp, Vec<Req>, Count, SimStats, Duration) {
    let app = TestApp::spawn_with(opts).await;
    warm_up(&app).await;
    app.sim.set_faults(faults);
    app.sim.reset_stats();
    let reqs = requests(&app, PROJECT_A, n, per);
    let started = Instant::now();
    let answers = send_all(&app, &reqs).await;
    let took = started.elapsed();
    let count = check(&app, &reqs, &answers);
    let stats = app.sim.stats();
    (app, reqs, count, stats, took)
}

// ---------------------------------------------------------------------------
// Upstream errors
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_500_at_30_percent_loses_nothing() {
    let faults = Faults {
        seed: 500,
        error_500_rate: 0.3,
        ..Faults::default()
    };
    let (app, reqs, c, s, took) = run_scenario(opts(), faults, 20, 1000).await;
    report("error_500", &c, &s, took);
    let batches = batches_of(&reqs);
    assert!(s.faults_injected > 0, "no fault fired");
    assert_eq!(s.faults_injected, retryable_answers(&s));
    assert!(
        s.batch_stop_requests > batches,
        "CPS.0003 is retried: {} calls for {batches} batches",
        s.batch_stop_requests
    );
    assert!(
        s.batch_stop_requests <= batches + retryable_answers(&s),
        "only retryable answers are resent"
    );
    assert!(c.jobs > 0);
    stays_up(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn error_503_at_30_percent_loses_nothing() {
    let faults = Faults {
        seed: 503,
        error_503_rate: 0.3,
        ..Faults::default()
    };
    let (app, reqs, c, s, took) = run_scenario(opts(), faults, 20, 1000).await;
    report("error_503", &c, &s, took);
    let batches = batches_of(&reqs);
    assert!(s.faults_injected > 0, "no fault fired");
    assert!(s.batch_stop_requests > batches, "503 is retried");
    assert!(s.batch_stop_requests <= batches + retryable_answers(&s));
    assert!(c.jobs > 0);
    stays_up(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_429_at_30_percent_loses_nothing() {
    let faults = Faults {
        seed: 429,
        error_429_rate: 0.3,
        retry_after_s: 1,
        ..Faults::default()
    };
    let (app, reqs, c, s, took) = run_scenario(opts(), faults, 20, 1000).await;
    report("throttled_429", &c, &s, took);
    let batches = batches_of(&reqs);
    assert!(s.faults_injected > 0, "no fault fired");
    assert!(s.batch_stop_requests > batches, "429 is retried");
    assert!(s.batch_stop_requests <= batches + retryable_answers(&s));
    // A retried 429 waited for its Retry-After of 1 s.
    assert!(
        took >= Duration::from_millis(950),
        "429s retried without waiting Retry-After: all answers in {took:?}"
    );
    stays_up(&app).await;
}

/// Warms the IAM token, then makes every call a 429 with `retry_after_s`
/// and times a one-phone stop; checks it was answered 502 with CPH's code
/// after exactly one retry.
async fn throttled_stop(app: &TestApp, retry_after_s: u64) -> Duration {
    let token = caller_token(TENANT_A);
    assert_eq!(
        app.stop(&token, &app.phones(PROJECT_A, 1, 1)).await.0,
        StatusCode::OK
    );
    app.sim.set_faults(Faults {
        error_429_rate: 1.0,
        retry_after_s,
        ..Faults::default()
    });
    app.sim.reset_stats();
    let ids = app.phones(PROJECT_A, 0, 1);
    let started = Instant::now();
    let (status, body) = app.stop(&token, &ids).await;
    let took = started.elapsed();
    println!("429 with Retry-After {retry_after_s}, one retry: answered in {took:?}");
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_accounts_for(&ids, &body);
    assert_eq!(body["jobs"][0]["error_code"], "APIG.0308", "{body}");
    assert_eq!(app.sim.stats().batch_stop_requests, 2);
    assert!(took < Duration::from_secs(3), "{took:?}");
    took
}

/// With every call throttled and one retry, a one-batch stop waits the
/// `Retry-After` of 1 s once: two calls, at least a second.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let app = TestApp::spawn_with(opts().set("upstream.max_retries", "1")).await;
    let took = throttled_stop(&app, 1).await;
    assert!(
        took >= Duration::from_millis(950),
        "Retry-After: 1 not honoured: {took:?}"
    );
    stays_up(&app).await;
}

/// A `Retry-After` of 30 s is capped by `upstream.max_retry_after_ms`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_capped() {
    let app = TestApp::spawn_with(
        opts()
            .set("upstream.max_retries", "1")
            .set("upstream.max_retry_after_ms", "300"),
    )
    .await;
    let took = throttled_stop(&app, 30).await;
    assert!(took >= Duration::from_millis(280), "{took:?}");
    stays_up(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_with_jitter_loses_nothing() {
    let faults = Faults {
        seed: 20,
        latency_ms: 20,
        jitter_ms: 30,
        ..Faults::default()
    };
    let (app, reqs, c, s, took) = run_scenario(opts(), faults, 20, 1000).await;
    report("latency_jitter", &c, &s, took);
    assert_eq!(c.status(200), 20);
    assert_eq!(c.jobs, c.ids, "every phone stopped");
    assert_eq!(s.batch_stop_requests, batches_of(&reqs));
    stays_up(&app).await;
}

// ---------------------------------------------------------------------------
// Sent, then no answer: never resent
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hangs_past_the_timeout_are_unknown_and_not_resent() {
    let faults = Faults {
        seed: 3000,
        hang_rate: 0.2,
        hang_ms: 3000,
        ..Faults::default()
    };
    let (app, reqs, c, s, took) =
        run_scenario(opts().set("upstream.timeout_ms", "300"), faults, 20, 1000).await;
    report("hangs", &c, &s, took);
    assert!(s.faults_injected > 0, "no hang fired");
    assert_eq!(
        s.batch_stop_requests,
        batches_of(&reqs),
        "a batch that may have reached CPH was resent"
    );
    // Every phone of a hung batch is CPHGW.0302; on a loaded machine a call
    // that was merely slow may time out as well (and is not resent either).
    let hung = s.faults_injected as usize * BATCH;
    println!(
        "hangs: {} batches hung, {} phones CPHGW.0302 ({} from slow calls)",
        s.faults_injected,
        c.code("CPHGW.0302"),
        c.code("CPHGW.0302") - hung.min(c.code("CPHGW.0302"))
    );
    assert!(
        c.code("CPHGW.0302") >= hung,
        "{} phones in hung batches, {} CPHGW.0302",
        hung,
        c.code("CPHGW.0302")
    );
    assert_eq!(c.jobs + c.code("CPHGW.0302"), c.ids);
    stays_up_with_abandoned(&app, (c.code("CPHGW.0302") / BATCH) as u64).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_resets_are_failed_and_not_resent() {
    let faults = Faults {
        seed: 20,
        reset_rate: 0.2,
        ..Faults::default()
    };
    let (app, reqs, c, s, took) = run_scenario(opts(), faults, 20, 1000).await;
    report("resets", &c, &s, took);
    assert!(s.faults_injected > 0, "no reset fired");
    assert_eq!(
        s.batch_stop_requests,
        batches_of(&reqs),
        "a batch that may have reached CPH was resent"
    );
    assert_eq!(
        c.code("CPHGW.0301"),
        s.faults_injected as usize * BATCH,
        "every phone of a reset batch is CPHGW.0301, and only those"
    );
    assert_eq!(c.jobs + c.code("CPHGW.0301"), c.ids);
    stays_up(&app).await;
}

// ---------------------------------------------------------------------------
// IAM
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_down_on_a_cold_gateway_is_503_for_all() {
    let app = TestApp::spawn_with(opts().sim(|s| s.faults.iam_down = true)).await;
    let reqs = requests(&app, PROJECT_A, 20, 1000);
    let started = Instant::now();
    let answers = send_all(&app, &reqs).await;
    let took = started.elapsed();
    let c = check(&app, &reqs, &answers);
    let s = app.sim.stats();
    report("iam_down_cold", &c, &s, took);
    assert_eq!(c.status(503), 20, "{:?}", c.statuses);
    assert_eq!(c.code("CPHGW.0303"), c.ids);
    assert_eq!(s.batch_stop_requests, 0, "CPH called without a token");
    assert!(
        s.iam_requests <= 5,
        "{} IAM requests for 20 concurrent stops",
        s.iam_requests
    );
    stays_up(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_down_after_a_token_was_cached_changes_nothing() {
    let faults = Faults {
        iam_down: true,
        ..Faults::default()
    };
    let (app, reqs, c, s, took) = run_scenario(opts(), faults, 20, 1000).await;
    report("iam_down_warm", &c, &s, took);
    assert_eq!(c.status(200), 20);
    assert_eq!(c.jobs, c.ids, "every phone stopped with the cached token");
    assert_eq!(s.iam_requests, 0, "IAM asked although a token was cached");
    assert_eq!(s.batch_stop_requests, batches_of(&reqs));
    stays_up(&app).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_failures_are_not_hammered() {
    let app = TestApp::spawn_with(opts().sim(|s| s.faults.iam_down = true)).await;
    let token = caller_token(TENANT_A);
    let mut c = Count::default();
    let started = Instant::now();
    for i in 0..50 {
        let req = Req {
            project: PROJECT_A,
            path: stop_path(PROJECT_A),
            ids: app.phones(PROJECT_A, i * 10, 10),
        };
        let answer = app.stop_at(&req.path, &token, &req.ids).await;
        let one = check(&app, std::slice::from_ref(&req), &[answer]);
        c.requests += one.requests;
        c.ids += one.ids;
        c.lost += one.lost;
        for (k, v) in one.statuses {
            *c.statuses.entry(k).or_default() += v;
        }
        for (k, v) in one.codes {
            *c.codes.entry(k).or_default() += v;
        }
    }
    let took = started.elapsed();
    let s = app.sim.stats();
    report("iam_not_hammered", &c, &s, took);
    println!(
        "50 sequential stops with IAM down: {} IAM requests",
        s.iam_requests
    );
    assert_eq!(c.status(503), 50);
    assert!(s.iam_requests >= 1);
    assert!(
        s.iam_requests <= 10,
        "IAM hammered: {} requests for 50 stops",
        s.iam_requests
    );
    stays_up(&app).await;
}

/// Tokens revoked in the middle of a run: every stop still succeeds, and
/// each project fetches one new token, not one per batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_revocation_mid_run_renews_once_per_project() {
    let app = TestApp::spawn_with(opts()).await;
    let token = caller_token(TENANT_A);
    for project in [PROJECT_A, PROJECT_A2] {
        let ids = app.phones(project, 19_999, 1);
        let (status, body) = app.stop_at(&stop_path(project), &token, &ids).await;
        assert_eq!(status, StatusCode::OK, "warm-up: {body}");
    }
    app.sim.set_faults(Faults {
        latency_ms: 20,
        ..Faults::default()
    });
    app.sim.reset_stats();
    let mut reqs = requests(&app, PROJECT_A, 10, 1000);
    reqs.extend(requests(&app, PROJECT_A2, 10, 1000));
    let started = Instant::now();
    let (answers, revoked) = tokio::join!(send_all(&app, &reqs), async {
        let mid = eventually(Duration::from_secs(10), async || {
            app.sim.stats().batch_stop_requests >= 60
        })
        .await;
        app.sim.revoke_tokens();
        mid
    });
    let took = started.elapsed();
    assert!(revoked, "the run ended before the revocation");
    let c = check(&app, &reqs, &answers);
    let s = app.sim.stats();
    report("token_revocation", &c, &s, took);
    println!(
        "revocation: {} answers 401, {} IAM requests, {} tokens issued",
        s.unauthorized, s.iam_requests, s.tokens_issued
    );
    assert!(s.unauthorized > 0, "the revocation hit no call");
    assert_eq!(c.status(200), reqs.len());
    assert_eq!(c.jobs, c.ids, "every phone stopped after the renewal");
    assert!(s.iam_requests >= 1, "no renewal");
    assert!(
        s.iam_requests <= 2,
        "{} IAM requests after one revocation for 2 projects",
        s.iam_requests
    );
    stays_up(&app).await;
}

// ---------------------------------------------------------------------------
// Everything at once, retry budget, deadline
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_faults_lose_nothing() {
    let faults = Faults {
        seed: 7,
        latency_ms: 5,
        jitter_ms: 10,
        error_500_rate: 0.1,
        error_503_rate: 0.1,
        error_429_rate: 0.05,
        retry_after_s: 1,
        hang_rate: 0.05,
        hang_ms: 2000,
        reset_rate: 0.05,
        ..Faults::default()
    };
    let (app, reqs, c, s, took) =
        run_scenario(opts().set("upstream.timeout_ms", "300"), faults, 30, 500).await;
    report("mixed", &c, &s, took);
    let batches = batches_of(&reqs);
    assert!(s.faults_injected > 0);
    assert!(s.batch_stop_requests >= batches);
    assert!(
        s.batch_stop_requests <= batches + retryable_answers(&s),
        "{} calls for {batches} batches and {} retryable answers",
        s.batch_stop_requests,
        retryable_answers(&s)
    );
    assert!(c.jobs > 0);
    // Batches of 500-id requests hold up to BATCH phones each.
    stays_up_with_abandoned(&app, c.code("CPHGW.0302").div_ceil(BATCH) as u64).await;
}

/// An outage (every call 503) with two retries allowed is not amplified
/// threefold: the retry budget (ratio 0.2, reserve 10) bounds the calls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_budget_bounds_an_outage() {
    let faults = Faults {
        error_503_rate: 1.0,
        ..Faults::default()
    };
    let (app, reqs, c, s, took) =
        run_scenario(opts().set("upstream.max_retries", "2"), faults, 20, 1000).await;
    report("retry_budget", &c, &s, took);
    let batches = batches_of(&reqs);
    assert_eq!(batches, 200);
    let bound = (batches as f64 * 1.2 + 10.0).ceil() as u64;
    println!(
        "retry budget: {} upstream calls for {batches} batches (bound {bound}, unbudgeted {})",
        s.batch_stop_requests,
        batches * 3
    );
    assert!(s.batch_stop_requests > batches, "no retry at all");
    assert!(
        s.batch_stop_requests <= bound,
        "outage amplified: {} calls for {batches} batches",
        s.batch_stop_requests
    );
    assert_eq!(c.status(502), 20, "{:?}", c.statuses);
    stays_up(&app).await;
}

/// CONTRACT §3: "When a whole upstream batch fails, each of its phones gets
/// the upstream's error_code/error_msg if the upstream sent them". A batch
/// whose retry the budget refuses got an answer with an error code from CPH.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_refused_a_retry_keeps_the_upstream_error() {
    let app = TestApp::spawn_with(opts().set("upstream.max_retries", "2")).await;
    app.sim.set_faults(Faults {
        error_503_rate: 1.0,
        ..Faults::default()
    });
    let reqs = requests(&app, PROJECT_A, 20, 1000);
    let answers = send_all(&app, &reqs).await;
    let c = check(&app, &reqs, &answers);
    assert_eq!(
        c.code("APIG.0503"),
        c.ids,
        "CPH said APIG.0503 for every batch: {:?}",
        c.codes
    );
}

/// Sends one request of 2,000 ids (20 batches, one call at a time, 300 ms a
/// call) under a 500 ms request deadline.
async fn deadline_run() -> (TestApp, Vec<Req>, Vec<(StatusCode, Value)>, Duration) {
    let app = TestApp::spawn_with(
        opts()
            .set("limits.request_timeout_ms", "500")
            .set("upstream.max_concurrency_per_request", "1"),
    )
    .await;
    warm_up(&app).await;
    app.sim.set_faults(Faults {
        latency_ms: 300,
        ..Faults::default()
    });
    app.sim.reset_stats();
    let reqs = vec![Req {
        project: PROJECT_A,
        path: stop_path(PROJECT_A),
        ids: app.phones(PROJECT_A, 0, 2000),
    }];
    let started = Instant::now();
    let answers = send_all(&app, &reqs).await;
    (app, reqs, answers, started.elapsed())
}

/// The request's deadline: the answer comes in time, every id is in it,
/// the first batch is stopped, and nothing is sent once the deadline passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_deadline_answers_in_time() {
    let (app, reqs, answers, took) = deadline_run().await;
    let c = check(&app, &reqs, &answers);
    let s = app.sim.stats();
    report("deadline", &c, &s, took);
    assert!(
        took < Duration::from_millis(1500),
        "deadline of 500 ms, answer after {took:?}"
    );
    assert_eq!(c.status(200), 1, "the first batch got a definite answer");
    assert!(c.jobs >= BATCH, "the first batch completed in time");
    assert_eq!(c.jobs + c.code("CPHGW.0302"), c.ids);
    assert!(
        s.batch_stop_requests <= 2,
        "{} batch-stops sent for a 500 ms deadline at 300 ms a call",
        s.batch_stop_requests
    );
    stays_up(&app).await;
}

/// The batches the deadline kept from being sent carry CPHGW.0302 with a
/// message saying they were not sent (so the caller knows they are safe to
/// retry), not "the outcome is unknown".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_deadline_says_which_batches_were_not_sent() {
    let (app, _reqs, answers, _took) = deadline_run().await;
    let sent = app.sim.stats().batch_stop_requests as usize;
    let jobs = answers[0].1["jobs"].as_array().expect("jobs");
    let (mut stopped, mut not_sent, mut unknown) = (0, 0, 0);
    for e in jobs {
        let msg = e["error_msg"].as_str().unwrap_or_default();
        if e["job_id"].is_string() {
            stopped += 1;
        } else if msg.contains("not sent") {
            not_sent += 1;
            let id = e["phone_id"].as_str().expect("phone_id");
            assert_eq!(
                app.sim.phone_state(PROJECT_A, id),
                Some(PhoneState::Running),
                "'not sent' but stopped: {e}"
            );
        } else {
            assert_eq!(e["error_code"], "CPHGW.0302", "{e}");
            assert!(msg.contains("unknown"), "neither sent nor unknown: {e}");
            unknown += 1;
        }
    }
    println!(
        "deadline: {sent} batches reached CPH; {stopped} phones stopped, {unknown} unknown \
         (in flight at the deadline), {not_sent} 'not sent'"
    );
    assert_eq!(stopped + unknown + not_sent, 2000);
    // One call at a time: at most one batch was in flight at the deadline;
    // every batch after it was never sent and must say so.
    assert!(unknown <= BATCH, "{unknown} phones of unknown outcome");
    assert!(sent <= 2, "{sent} calls");
    assert!(
        not_sent >= 2000 - 2 * BATCH,
        "only {not_sent} phones say 'not sent' though {sent} of 20 batches reached CPH"
    );
}

// ---------------------------------------------------------------------------
// The gateway's own rate limit
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_rate_limit_gives_429_with_retry_after_and_spares_others() {
    let app = TestApp::spawn_with(opts().set("limits.tenant_rate_per_s", "5")).await;
    let (ta, tb) = (caller_token(TENANT_A), caller_token(TENANT_B));
    let burst: Vec<Vec<String>> = (0..30).map(|i| app.phones(PROJECT_A, i, 1)).collect();
    let answers = join_all(burst.iter().map(|ids| {
        let req = app
            .client
            .post(format!("{}{STOP}", app.url))
            .bearer_auth(&ta)
            .json(&serde_json::json!({ "phone_ids": ids }));
        async move {
            let resp = req.send().await.expect("gateway answers");
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .map(|v| v.to_str().expect("ASCII").to_owned());
            let body: Value = resp.json().await.expect("JSON body");
            (status, retry_after, body)
        }
    }))
    .await;
    let mut ok = 0;
    let mut limited = 0;
    for (status, retry_after, body) in &answers {
        match *status {
            StatusCode::OK => ok += 1,
            StatusCode::TOO_MANY_REQUESTS => {
                limited += 1;
                assert_eq!(body["error_code"], "CPHGW.0201", "{body}");
                let secs: u64 = retry_after
                    .as_deref()
                    .expect("Retry-After on 429")
                    .parse()
                    .expect("Retry-After in seconds");
                assert!(secs >= 1, "Retry-After {secs}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    println!("rate limit 5/s: burst of 30 gave {ok} x 200, {limited} x 429");
    assert!(limited >= 10, "{limited} of 30 limited");
    assert!(ok >= 5, "only {ok} of 30 admitted");
    assert_eq!(
        app.sim.stats().batch_stop_requests,
        ok as u64,
        "a limited request reached CPH"
    );
    for i in 0..5 {
        let (status, body) = app.stop(&tb, &app.phones(PROJECT_B, i, 1)).await;
        assert_eq!(status, StatusCode::OK, "tenant B limited by A: {body}");
    }
    // The limit refills: after Retry-After, A is served again.
    let refilled = eventually(Duration::from_secs(3), async || {
        app.stop(&ta, &app.phones(PROJECT_A, 100, 1)).await.0 == StatusCode::OK
    })
    .await;
    assert!(refilled, "tenant A still limited after the refill time");
}
