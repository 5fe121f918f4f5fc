//! Heavy tenants: admission control (in-flight ids and requests), job
//! queries under the rate limit and the project's upstream limit, the retry
//! budget per project, and stops that outlive their caller.

use std::time::{Duration, Instant};

use cph_sim::{Faults, Sim, SimOptions};
use futures_util::future::join_all;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::process::GatewayProcess;
use crate::helpers::*;

/// Sends a stop of `ids` by acme in the background.
fn stop_in_background(app: &TestApp, ids: Vec<String>) -> tokio::task::JoinHandle<StatusCode> {
    stop_in_background_as(app, TENANT_A, ids)
}

fn stop_in_background_as(
    app: &TestApp,
    tenant: &str,
    ids: Vec<String>,
) -> tokio::task::JoinHandle<StatusCode> {
    let req = app
        .client
        .post(format!("{}{STOP}", app.url))
        .bearer_auth(caller_token(tenant))
        .json(&json!({ "phone_ids": ids }));
    tokio::spawn(async move { req.send().await.map(|r| r.status()).expect("answer") })
}

/// A 503 `CPHGW.0202` with `Retry-After`.
async fn assert_overloaded(resp: reqwest::Response) {
    let status = resp.status();
    let retry_after = resp.headers().get("retry-after").cloned();
    let body: Value = resp.json().await.expect("JSON");
    assert_gateway_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "CPHGW.0202");
    assert!(retry_after.is_some(), "no Retry-After: {body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_over_max_in_flight_ids_are_503_before_anything_is_sent() {
    let app = TestApp::spawn_with(
        TestOptions::default()
            .set("limits.max_in_flight_ids", "150")
            .sim(|s| s.faults.latency_ms = 600),
    )
    .await;
    let token = caller_token(TENANT_A);
    let first = stop_in_background(&app, app.phones(PROJECT_A, 0, 100));
    let ok = eventually(Duration::from_secs(5), async || {
        sample(&app.metrics().await, "cphgw_in_flight_ids") == Some(100.0)
    })
    .await;
    assert!(
        ok,
        "the first stop is not in flight:\n{}",
        app.metrics().await
    );

    // 100 more do not fit next to the first 100.
    let resp = app
        .client
        .post(format!("{}{STOP}", app.url))
        .bearer_auth(&token)
        .json(&json!({ "phone_ids": app.phones(PROJECT_A, 100, 100) }))
        .send()
        .await
        .expect("answer");
    assert_overloaded(resp).await;

    // A body whose declared length cannot fit is refused before it is
    // read: only its head is sent.
    let mut s = tokio::net::TcpStream::connect(app.url.trim_start_matches("http://"))
        .await
        .expect("connect");
    let head = format!(
        "POST {STOP} HTTP/1.1\r\nhost: gateway\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: 1000000\r\n\r\n"
    );
    s.write_all(head.as_bytes()).await.expect("write");
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(2), s.read(&mut buf))
        .await
        .expect("answered without the body")
        .expect("read");
    let text = String::from_utf8_lossy(&buf[..n]);
    assert!(text.starts_with("HTTP/1.1 503"), "{text}");
    assert!(text.contains("CPHGW.0202"), "{text}");

    assert_eq!(first.await.expect("first stop"), StatusCode::OK);
    assert_eq!(
        app.sim.stats().batch_stop_ids,
        100,
        "only the first stop went upstream"
    );
    let m = app.metrics().await;
    assert_eq!(
        sample(&m, r#"cphgw_overload_rejections_total{limit="ids"}"#),
        Some(2.0),
        "{m}"
    );
    assert_eq!(sample(&m, "cphgw_in_flight_ids"), Some(0.0));
    // With room again, the same stop goes through.
    let (status, body) = app.stop(&token, &app.phones(PROJECT_A, 100, 100)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

/// Two requests in flight (one per tenant, each at its half) fill a limit
/// of 2: a third is refused, whoever sends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_over_max_in_flight_requests_are_503() {
    let app = TestApp::spawn_with(
        TestOptions::default()
            .set("limits.max_in_flight_requests", "2")
            .sim(|s| s.faults.latency_ms = 600),
    )
    .await;
    let token = caller_token(TENANT_A);
    let running = [
        stop_in_background(&app, app.phones(PROJECT_A, 0, 1)),
        stop_in_background_as(&app, TENANT_B, app.phones(PROJECT_B, 1, 1)),
    ];
    let ok = eventually(Duration::from_secs(5), async || {
        app.sim.stats().batch_stop_requests == 2
    })
    .await;
    assert!(ok, "the two stops are not in flight");
    let resp = app
        .client
        .post(format!("{}{STOP}", app.url))
        .bearer_auth(&token)
        .json(&json!({ "phone_ids": app.phones(PROJECT_A, 2, 1) }))
        .send()
        .await
        .expect("answer");
    assert_overloaded(resp).await;
    let resp = app
        .client
        .get(format!("{}/v1/cloud-phone/jobs/abc", app.url))
        .bearer_auth(caller_token(TENANT_B))
        .send()
        .await
        .expect("answer");
    assert_overloaded(resp).await;
    for r in running {
        assert_eq!(r.await.expect("stop"), StatusCode::OK);
    }
    let m = app.metrics().await;
    assert_eq!(
        sample(&m, r#"cphgw_overload_rejections_total{limit="requests"}"#),
        Some(2.0),
        "{m}"
    );
    assert_eq!(app.sim.stats().batch_stop_requests, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_queries_count_against_the_tenant_rate_limit() {
    let app =
        TestApp::spawn_with(TestOptions::default().set("limits.tenant_rate_per_s", "5")).await;
    let token = caller_token(TENANT_A);
    let answers = join_all((0..30).map(|_| app.get("/v1/cloud-phone/jobs/abc", &token))).await;
    let limited = answers
        .iter()
        .filter(|(s, _, _)| *s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    println!("30 job queries at 5/s: {limited} x 429");
    assert!(limited >= 10, "{limited} of 30 job queries were limited");
    assert!(
        answers
            .iter()
            .all(|(s, h, _)| *s != StatusCode::TOO_MANY_REQUESTS || h.contains_key("retry-after"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn job_queries_go_through_the_project_upstream_limit() {
    let app = TestApp::spawn_with(
        TestOptions::default()
            .set("upstream.max_concurrency_per_project", "4")
            .sim(|s| s.faults.latency_ms = 200),
    )
    .await;
    let token = caller_token(TENANT_A);
    let answers = join_all((0..40).map(|_| app.get("/v1/cloud-phone/jobs/abc", &token))).await;
    let stats = app.sim.stats();
    println!(
        "40 concurrent job queries: {} reached CPH, at most {} at once",
        stats.job_queries, stats.max_job_queries_in_flight
    );
    assert!(answers.iter().all(|(s, _, _)| *s == StatusCode::NOT_FOUND));
    assert_eq!(stats.job_queries, 40);
    assert!(
        stats.max_job_queries_in_flight <= 4,
        "{} job queries at once against a limit of 4",
        stats.max_job_queries_in_flight
    );
}

/// One project's outage spends its own retry budget, not another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_is_per_project() {
    let app = TestApp::spawn_with(
        TestOptions::default()
            .set("upstream.retry_budget_ratio", "0.0")
            .set("upstream.max_retries", "2")
            .set("upstream.max_batch_size", "1")
            .sim(|s| s.faults.error_503_rate = 1.0),
    )
    .await;
    // acme's project drains its budget (a reserve of 10 retries).
    let (status, _) = app
        .stop(&caller_token(TENANT_A), &app.phones(PROJECT_A, 0, 20))
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY);
    app.sim.reset_stats();
    // globex's project still retries.
    let (status, body) = app
        .stop(&caller_token(TENANT_B), &app.phones(PROJECT_B, 0, 2))
        .await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let calls = app.sim.stats().batch_stop_requests;
    println!("globex after acme drained its budget: {calls} calls for 2 batches");
    assert_eq!(calls, 6, "globex's batches were not retried");
    let m = app.metrics().await;
    assert!(
        sample(&m, r#"cphgw_upstream_retries_total{reason="503"}"#).is_some_and(|n| n >= 14.0),
        "{m}"
    );
}

/// A caller that goes away mid-stop: the stop runs to its end, and its log
/// line and metrics are there as for any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_whose_caller_disconnects_runs_to_its_end_logged_and_counted() {
    let sim = Sim::start(SimOptions {
        faults: Faults {
            latency_ms: 300,
            ..Faults::default()
        },
        ..SimOptions::default()
    })
    .await
    .expect("sim");
    let gw = GatewayProcess::start_against(&sim, &[("RUST_LOG", "info")]).await;
    let ids: Vec<String> = (0..1000).map(|i| cph_sim::phone_id(PROJECT_A, i)).collect();
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(200))
        .build()
        .expect("client");
    let started = Instant::now();
    let gone = impatient
        .post(format!("{}{STOP}", gw.url))
        .bearer_auth(caller_token(TENANT_A))
        .header("x-request-id", "impatient-caller-1")
        .json(&json!({ "phone_ids": ids }))
        .send()
        .await;
    assert!(gone.is_err_and(|e| e.is_timeout()), "the caller gave up");
    let done = eventually(Duration::from_secs(10), async || {
        sim.stats().stopped_phones == 1000 && gw.logs().contains("caller_gone=true")
    })
    .await;
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("impatient-caller-1") && l.contains("caller_gone=true"));
    println!(
        "caller gone after 200 ms; {} phones stopped, after {:?}: {line:?}",
        sim.stats().stopped_phones,
        started.elapsed()
    );
    assert!(done, "stop not finished or not logged:\n{logs}");
    let line = line.expect("the request's log line");
    assert!(line.contains("status=200"), "{line}");
    assert!(line.contains("stopped=1000"), "{line}");
    let m = reqwest::get(format!("{}/metrics", gw.admin_url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert_eq!(
        sample(
            &m,
            r#"cphgw_requests_total{route="stop",status="200",tenant="acme"}"#
        ),
        Some(1.0),
        "{m}"
    );
    assert_eq!(
        sample(&m, r#"cphgw_phones_total{outcome="stopped",tenant="acme"}"#),
        Some(1000.0),
        "{m}"
    );
}

/// One tenant holds at most half of the in-flight ids: a heavy tenant
/// leaves room for the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenant_holds_at_most_half_of_the_in_flight_ids() {
    let app = TestApp::spawn_with(
        TestOptions::default()
            .set("limits.max_in_flight_ids", "20000")
            .sim(|s| s.faults.latency_ms = 500),
    )
    .await;
    let first = stop_in_background(&app, app.phones(PROJECT_A, 0, 10_000));
    let ok = eventually(Duration::from_secs(5), async || {
        sample(&app.metrics().await, "cphgw_in_flight_ids") == Some(10_000.0)
    })
    .await;
    assert!(ok, "the first stop is not in flight");
    let (status, body) = app
        .stop(&caller_token(TENANT_A), &app.phones(PROJECT_A, 10_000, 10))
        .await;
    assert_gateway_error(status, &body, StatusCode::SERVICE_UNAVAILABLE, "CPHGW.0202");
    let (status, body) = app
        .stop(&caller_token(TENANT_B), &app.phones(PROJECT_B, 0, 5_000))
        .await;
    assert_eq!(
        status,
        StatusCode::OK,
        "the other tenant: {}",
        body["error_msg"]
    );
    assert_eq!(first.await.expect("first"), StatusCode::OK);
}
