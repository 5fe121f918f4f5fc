//! What callers get beyond a stop's answer: safe retries with an
//! `Idempotency-Key`, a record of every stop, and `Prefer: wait` until the
//! jobs are final, all against the real simulator (jobs that run, then end).

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::helpers::*;

/// A stop with optional headers: status, headers, JSON body.
async fn stop_with(
    app: &TestApp,
    path: &str,
    tenant: &str,
    ids: &[String],
    headers: &[(&str, &str)],
) -> (StatusCode, HeaderMap, Value) {
    let mut req = app
        .client
        .post(format!("{}{path}", app.url))
        .bearer_auth(caller_token(tenant))
        .json(&json!({ "phone_ids": ids }));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.expect("gateway answers");
    let (status, headers) = (resp.status(), resp.headers().clone());
    let body = resp.json().await.unwrap_or(Value::Null);
    (status, headers, body)
}

/// `GET /v1/cloud-phone/stops/{id}` as `tenant`.
async fn record(
    app: &TestApp,
    tenant: &str,
    id: &str,
    prefer: Option<&str>,
) -> (StatusCode, HeaderMap, Value) {
    let mut req = app
        .client
        .get(format!("{}/v1/cloud-phone/stops/{id}", app.url))
        .bearer_auth(caller_token(tenant));
    if let Some(p) = prefer {
        req = req.header("prefer", p);
    }
    let resp = req.send().await.expect("gateway answers");
    let (status, headers) = (resp.status(), resp.headers().clone());
    (status, headers, resp.json().await.unwrap_or(Value::Null))
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_with_the_same_key_is_replayed_and_sends_nothing() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 0, 250);
    let key = [("idempotency-key", "stop-0001")];
    let (status, h1, first) = stop_with(&app, STOP, TENANT_A, &ids, &key).await;
    assert_eq!(status, StatusCode::OK, "{first}");
    assert_eq!(header(&h1, "idempotent-replayed"), None);
    assert_eq!(app.sim.stats().batch_stop_requests, 3);
    app.sim.reset_stats();
    let (status, h2, again) = stop_with(&app, STOP, TENANT_A, &ids, &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&h2, "idempotent-replayed"), Some("true"));
    assert_eq!(again, first, "the replay answers as the first request did");
    assert_eq!(header(&h2, "x-request-id"), header(&h1, "x-request-id"));
    assert_eq!(again["request_id"], first["request_id"]);
    assert_eq!(
        app.sim.stats().batch_stop_requests,
        0,
        "a replay sends nothing upstream"
    );
    let m = app.metrics().await;
    assert_eq!(
        sample(&m, "cphgw_idempotent_replays_total"),
        Some(1.0),
        "{m}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_reused_for_another_request_is_422_and_a_malformed_one_400() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 0, 3);
    let key = [("idempotency-key", "k-1")];
    let (status, _, _) = stop_with(&app, STOP, TENANT_A, &ids, &key).await;
    assert_eq!(status, StatusCode::OK);
    app.sim.reset_stats();
    // Other ids, the same ids in another order, another project: all 422.
    let other = app.phones(PROJECT_A, 5, 3);
    let reordered: Vec<String> = ids.iter().rev().cloned().collect();
    for (path, body) in [
        (STOP.to_owned(), &other),
        (STOP.to_owned(), &reordered),
        (
            format!("/v1/{PROJECT_A2}/cloud-phone/phones/batch-stop"),
            &ids,
        ),
    ] {
        let (status, _, reply) = stop_with(&app, &path, TENANT_A, body, &key).await;
        assert_gateway_error(
            status,
            &reply,
            StatusCode::UNPROCESSABLE_ENTITY,
            "CPHGW.0008",
        );
    }
    // The same ids with a duplicate is the same request: replayed.
    let mut dup = ids.clone();
    dup.push(ids[0].clone());
    let (status, h, _) = stop_with(&app, STOP, TENANT_A, &dup, &key).await;
    assert_eq!(
        (status, header(&h, "idempotent-replayed")),
        (StatusCode::OK, Some("true"))
    );
    let long = "k".repeat(256);
    for bad in ["has space", long.as_str(), "tab\tinside"] {
        let (status, _, reply) =
            stop_with(&app, STOP, TENANT_A, &ids, &[("idempotency-key", bad)]).await;
        assert_gateway_error(status, &reply, StatusCode::BAD_REQUEST, "CPHGW.0006");
    }
    assert_eq!(app.sim.stats().batch_stop_requests, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_key_while_the_first_runs_is_409_then_replayed() {
    let app = TestApp::spawn_with(TestOptions::default().sim(|s| s.faults.latency_ms = 800)).await;
    let ids = app.phones(PROJECT_A, 0, 10);
    let key = [("idempotency-key", "slow-1")];
    let first = stop_with(&app, STOP, TENANT_A, &ids, &key);
    let second = async {
        tokio::time::sleep(Duration::from_millis(200)).await;
        stop_with(&app, STOP, TENANT_A, &ids, &key).await
    };
    let ((s1, _, b1), (s2, h2, b2)) = tokio::join!(first, second);
    assert_eq!(s1, StatusCode::OK, "{b1}");
    assert_gateway_error(s2, &b2, StatusCode::CONFLICT, "CPHGW.0007");
    assert!(header(&h2, "retry-after").is_some());
    let (s3, h3, b3) = stop_with(&app, STOP, TENANT_A, &ids, &key).await;
    assert_eq!(
        (s3, header(&h3, "idempotent-replayed")),
        (StatusCode::OK, Some("true"))
    );
    assert_eq!(b3, b1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_are_per_tenant_and_not_kept_when_nothing_was_sent() {
    let app = TestApp::spawn().await;
    let key = [("idempotency-key", "shared-name")];
    let (s, _, _) = stop_with(&app, STOP, TENANT_A, &app.phones(PROJECT_A, 0, 2), &key).await;
    assert_eq!(s, StatusCode::OK);
    let (s, h, b) = stop_with(&app, STOP, TENANT_B, &app.phones(PROJECT_B, 0, 2), &key).await;
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(
        header(&h, "idempotent-replayed"),
        None,
        "another tenant's key is another key"
    );

    // IAM down on a cold project: nothing is sent, so the key stays free.
    let mut faults = app.sim.faults();
    faults.iam_down = true;
    app.sim.set_faults(faults);
    let ids = app.phones(PROJECT_A2, 0, 2);
    let path = format!("/v1/{PROJECT_A2}/cloud-phone/phones/batch-stop");
    let key = [("idempotency-key", "iam-was-down")];
    let (s, _, b) = stop_with(&app, &path, TENANT_A, &ids, &key).await;
    assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE, "{b}");
    assert_eq!(b["error_code"], "CPHGW.0303");
    app.sim.set_faults(Default::default());
    // The gateway backs off IAM for a moment after a failure; each refusal
    // meanwhile (503 CPHGW.0303, nothing sent) leaves the key free too.
    let mut last = None;
    let recovered = eventually(Duration::from_secs(5), async || {
        let reply = stop_with(&app, &path, TENANT_A, &ids, &key).await;
        let ok = reply.0 == StatusCode::OK;
        if !ok {
            assert_eq!(reply.2["error_code"], "CPHGW.0303", "{}", reply.2);
        }
        last = Some(reply);
        ok
    })
    .await;
    let (s, h, b) = last.expect("an answer");
    assert!(recovered, "{b}");
    assert_eq!(s, StatusCode::OK, "{b}");
    assert_eq!(header(&h, "idempotent-replayed"), None);
    assert!(
        b["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["job_id"].is_string()),
        "{b}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_stop_leaves_a_record_that_only_its_tenant_reads() {
    let app = TestApp::spawn().await;
    let mut ids = app.phones(PROJECT_A, 0, 150);
    ids.push("0a1b2c3dffffffffffffffffffffffff".into()); // not a phone of the project
    let (status, _, body) = app
        .post_raw(
            STOP,
            &caller_token(TENANT_A),
            json!({"phone_ids": ids}).to_string(),
            Some("my-stop-17"),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let found = eventually(Duration::from_secs(3), async || {
        record(&app, TENANT_A, "my-stop-17", None).await.0 == StatusCode::OK
    })
    .await;
    assert!(
        found,
        "the record of the stop is readable by its X-Request-Id"
    );
    let (_, _, rec) = record(&app, TENANT_A, "my-stop-17", None).await;
    assert_eq!(rec["request_id"], "my-stop-17");
    assert_eq!(rec["project_id"], PROJECT_A);
    assert_eq!(rec["caller"], "test-service");
    assert!(
        rec["created_at"].as_str().is_some_and(|t| t.ends_with('Z')),
        "{rec}"
    );
    let summary = &rec["summary"];
    assert_eq!(summary["total"], 151);
    assert_eq!(summary["rejected"], 1);
    assert_eq!(summary["unknown"], 0);
    let sum: u64 = ["running", "succeeded", "failed"]
        .iter()
        .map(|k| summary[k].as_u64().unwrap())
        .sum();
    assert_eq!(sum, 150, "{summary}");
    let jobs = rec["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 151);
    assert_eq!(jobs[150]["error_code"], "CPS.0005");
    assert!(
        jobs[..150]
            .iter()
            .all(|j| j["job_id"].is_string() && j["status"].is_string())
    );
    // Another tenant, or an id that was never used: 404 CPHGW.0009.
    for (tenant, id) in [(TENANT_B, "my-stop-17"), (TENANT_A, "never-made")] {
        let (status, _, reply) = record(&app, tenant, id, None).await;
        assert_gateway_error(status, &reply, StatusCode::NOT_FOUND, "CPHGW.0009");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_expire_after_their_retention() {
    let app = TestApp::spawn_with(TestOptions::default().set("tracking.retention_s", "1")).await;
    let ids = app.phones(PROJECT_A, 0, 1);
    let (status, _, _) = app
        .post_raw(
            STOP,
            &caller_token(TENANT_A),
            json!({"phone_ids": ids}).to_string(),
            Some("short-lived"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        eventually(Duration::from_secs(1), async || record(
            &app,
            TENANT_A,
            "short-lived",
            None
        )
        .await
        .0 == StatusCode::OK)
        .await
    );
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (status, _, reply) = record(&app, TENANT_A, "short-lived", None).await;
    assert_gateway_error(status, &reply, StatusCode::NOT_FOUND, "CPHGW.0009");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefer_wait_answers_when_250_jobs_are_final() {
    let app = TestApp::spawn_with(TestOptions::default().sim(|s| {
        s.job_duration = Duration::from_millis(700);
        s.faults.job_failure_rate = 0.1;
    }))
    .await;
    let ids = app.phones(PROJECT_A, 0, 250);
    let (status, h, body) = stop_with(&app, STOP, TENANT_A, &ids, &[("prefer", "wait=20")]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(header(&h, "preference-applied"), Some("wait=20"));
    assert_eq!(body["done"], true, "{body}");
    let jobs = body["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 250);
    assert!(
        jobs.iter()
            .all(|j| j["status"] == "succeeded" || j["status"] == "failed"),
        "{body}"
    );
    let failed: Vec<&Value> = jobs.iter().filter(|j| j["status"] == "failed").collect();
    assert!(
        !failed.is_empty(),
        "the simulator fails about 10% of the jobs"
    );
    assert!(
        failed.iter().all(|j| j["error_code"].is_string()),
        "{failed:?}"
    );
    // Without waiting the answer comes at once, with no status; a wait over
    // the cap is capped; a malformed preference is ignored.
    app.sim.start_phones();
    let (status, h, body) = stop_with(
        &app,
        STOP,
        TENANT_A,
        &app.phones(PROJECT_A, 300, 5),
        &[("prefer", "wait=abc")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&h, "preference-applied"), None);
    assert!(
        body.get("done").is_none() && body["jobs"][0].get("status").is_none(),
        "{body}"
    );
    let capped = TestApp::spawn_with(
        TestOptions::default()
            .set("tracking.max_wait_s", "1")
            .sim(|s| s.job_duration = Duration::from_secs(30)),
    )
    .await;
    let started = std::time::Instant::now();
    let (status, h, body) = stop_with(
        &capped,
        STOP,
        TENANT_A,
        &capped.phones(PROJECT_A, 0, 3),
        &[("prefer", "wait=60")],
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&h, "preference-applied"), Some("wait=1"));
    assert_eq!(body["done"], false);
    assert!(
        body["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] == "running")
    );
    assert!(started.elapsed() < Duration::from_secs(10));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_ids_are_followed_with_a_hundred_job_list_calls() {
    let app = TestApp::spawn_with(
        TestOptions::default().sim(|s| s.job_duration = Duration::from_millis(1500)),
    )
    .await;
    let ids = app.phones(PROJECT_A, 0, 10_000);
    let (status, _, body) = app
        .post_raw(
            STOP,
            &caller_token(TENANT_A),
            json!({"phone_ids": ids}).to_string(),
            Some("big-stop"),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["jobs"].as_array().map(Vec::len), Some(10_000));
    assert!(
        eventually(Duration::from_secs(3), async || record(
            &app, TENANT_A, "big-stop", None
        )
        .await
        .0 == StatusCode::OK)
        .await
    );
    // One read of the record while the jobs run: 100 batches, 20 request ids
    // a call, 100 jobs a page.
    tokio::time::sleep(Duration::from_millis(1100)).await; // past the cache
    app.sim.reset_stats();
    let (_, _, rec) = record(&app, TENANT_A, "big-stop", None).await;
    let calls = app.sim.stats().job_list_requests;
    println!("job-list calls for one read of a 10,000-id stop: {calls}");
    assert!(calls <= 100, "{calls} job-list calls");
    assert_eq!(rec["summary"]["total"], 10_000);
    // Many callers polling at once share the reads (a short cache).
    app.sim.reset_stats();
    let polls = (0..10).map(|_| record(&app, TENANT_A, "big-stop", None));
    futures_util::future::join_all(polls).await;
    assert!(
        app.sim.stats().job_list_requests <= 100,
        "{:?}",
        app.sim.stats().job_list_requests
    );
    // Waiting on the record: every job final.
    let (status, h, rec) = record(&app, TENANT_A, "big-stop", Some("wait=30")).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(header(&h, "preference-applied"), Some("wait=30"));
    assert_eq!(rec["done"], true, "{}", rec["summary"]);
    assert_eq!(rec["summary"]["succeeded"], 10_000, "{}", rec["summary"]);
    assert_eq!(rec["summary"]["running"], 0);
}
