//! The stop and job routes end to end: batching, dedupe, the project form,
//! request ids, invalid requests, tenants, IAM tokens, upstream failures,
//! concurrency limits, job queries and routing errors.

use std::time::Duration;

use cph_sim::{Faults, PhoneState};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// A GET on the caller API.
async fn get(app: &TestApp, path: &str, token: &str) -> (StatusCode, HeaderMap, Value) {
    let (status, headers, text) = app.get(path, token).await;
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"));
    (status, headers, body)
}

fn jobs(body: &Value) -> &Vec<Value> {
    body["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs array in {body}"))
}

// ---------------------------------------------------------------------------
// Happy paths and batching
// ---------------------------------------------------------------------------

#[tokio::test]
async fn one_phone_gets_a_job_and_is_stopped_in_the_sim() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 3, 1);
    assert_eq!(
        app.sim.phone_state(PROJECT_A, &ids[0]),
        Some(PhoneState::Running)
    );
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    assert_eq!(jobs(&body).len(), 1);
    let entry = &jobs(&body)[0];
    assert_eq!(entry["phone_id"], ids[0].as_str());
    assert!(entry["job_id"].as_str().is_some_and(is_hex32), "{body}");
    assert!(entry.get("error_code").is_none(), "{body}");
    assert!(body.get("error_code").is_none(), "{body}");
    assert!(
        matches!(
            app.sim.phone_state(PROJECT_A, &ids[0]),
            Some(PhoneState::Stopping | PhoneState::Stopped)
        ),
        "phone not stopped in the sim"
    );
    let stats = app.sim.stats();
    assert_eq!(stats.batch_stop_requests, 1);
    assert_eq!(stats.batch_stop_ids, 1);
    assert_eq!(stats.stopped_phones, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_split_into_batches_of_at_most_100() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 0, 250);
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    assert!(
        jobs(&body).iter().all(|j| j["job_id"].is_string()),
        "{body}"
    );
    let stats = app.sim.stats();
    assert_eq!(stats.batch_stop_requests, 3);
    assert!(stats.max_ids_per_call <= 100, "{stats:?}");
    assert_eq!(stats.batch_stop_ids, 250);
    assert_eq!(stats.stopped_phones, 250);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_ids_make_100_upstream_calls() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 0, 10_000);
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::OK, "{}", body["error_msg"]);
    assert_accounts_for(&ids, &body);
    let entries = jobs(&body);
    assert!(entries.iter().all(|j| j["job_id"].is_string()));
    let distinct: std::collections::HashSet<&str> = entries
        .iter()
        .map(|j| j["job_id"].as_str().unwrap())
        .collect();
    assert_eq!(distinct.len(), 10_000, "one job per phone");
    let stats = app.sim.stats();
    assert_eq!(stats.batch_stop_requests, 100);
    assert_eq!(stats.max_ids_per_call, 100);
    assert_eq!(stats.batch_stop_ids, 10_000);
}

#[tokio::test]
async fn duplicates_are_stopped_once_in_first_appearance_order() {
    let app = TestApp::spawn().await;
    let p = app.phones(PROJECT_A, 0, 3);
    let ids = vec![
        p[1].clone(),
        p[0].clone(),
        p[1].clone(),
        p[2].clone(),
        p[0].clone(),
        p[1].clone(),
    ];
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    let order: Vec<&str> = jobs(&body)
        .iter()
        .map(|j| j["phone_id"].as_str().unwrap())
        .collect();
    assert_eq!(order, [&p[1], &p[0], &p[2]]);
    assert!(jobs(&body).iter().all(|j| j["job_id"].is_string()));
    let stats = app.sim.stats();
    assert_eq!(stats.batch_stop_ids, 3, "each id sent once");
    assert_eq!(stats.batch_stop_requests, 1);
}

#[tokio::test]
async fn unknown_foreign_and_malformed_phones_pass_through_per_phone() {
    let app = TestApp::spawn().await;
    let a = app.phones(PROJECT_A, 10, 2);
    let foreign = app.phones(PROJECT_B, 10, 1).remove(0);
    let unknown = "0a1b2c3dffffffffffffffffffffffff".to_owned();
    let ids = vec![
        a[0].clone(),
        foreign.clone(),
        unknown.clone(),
        "abc".to_owned(),
        a[1].clone(),
    ];
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    assert!(body.get("error_code").is_none(), "{body}");
    let e = jobs(&body);
    assert!(e[0]["job_id"].is_string(), "{body}");
    assert!(e[4]["job_id"].is_string(), "{body}");
    for (i, code) in [(1, "CPS.0005"), (2, "CPS.0005"), (3, "CPS.0004")] {
        assert_eq!(e[i]["error_code"], code, "{}", e[i]);
        assert!(e[i]["error_msg"].is_string(), "{}", e[i]);
        assert!(e[i].get("job_id").is_none(), "{}", e[i]);
    }
    // Tenant A's request did not touch project B's phone.
    assert_eq!(
        app.sim.phone_state(PROJECT_B, &foreign),
        Some(PhoneState::Running)
    );
    assert_eq!(app.sim.stats().stopped_phones, 2);
}

// ---------------------------------------------------------------------------
// Project form
// ---------------------------------------------------------------------------

#[tokio::test]
async fn project_form_stops_in_the_named_project_of_the_tenant() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    let a2 = app.phones(PROJECT_A2, 0, 2);
    let a = app.phones(PROJECT_A, 0, 1);
    let mut ids = a2.clone();
    ids.extend(a.clone());
    let path = format!("/v1/{PROJECT_A2}/cloud-phone/phones/batch-stop");
    let (status, body) = app.stop_at(&path, &token, &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    let e = jobs(&body);
    assert!(e[0]["job_id"].is_string() && e[1]["job_id"].is_string());
    // A phone of project A is not a phone of A2: the call went to A2.
    assert_eq!(e[2]["error_code"], "CPS.0005", "{body}");
    for id in &a2 {
        assert!(matches!(
            app.sim.phone_state(PROJECT_A2, id),
            Some(PhoneState::Stopping | PhoneState::Stopped)
        ));
    }
    assert_eq!(
        app.sim.phone_state(PROJECT_A, &a[0]),
        Some(PhoneState::Running)
    );
}

#[tokio::test]
async fn project_form_for_another_tenants_project_is_forbidden() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    let ids = app.phones(PROJECT_B, 0, 1);
    for project in [
        PROJECT_B,
        "not-a-project",
        "0a1b2c3d4e5f60718293a4b5c6d7e8f",
    ] {
        let path = format!("/v1/{project}/cloud-phone/phones/batch-stop");
        let (status, body) = app.stop_at(&path, &token, &ids).await;
        assert_gateway_error(status, &body, StatusCode::FORBIDDEN, "CPHGW.0102");
    }
    let stats = app.sim.stats();
    assert_eq!(stats.batch_stop_requests, 0);
    assert_eq!(stats.iam_requests, 0);
    assert_eq!(
        app.sim.phone_state(PROJECT_B, &ids[0]),
        Some(PhoneState::Running)
    );
}

// ---------------------------------------------------------------------------
// Request id
// ---------------------------------------------------------------------------

#[tokio::test]
async fn caller_request_id_is_kept_and_returned() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    let body = json!({ "phone_ids": app.phones(PROJECT_A, 0, 1) }).to_string();
    let long_ok = "r".repeat(128);
    for rid in ["my-req-1", long_ok.as_str(), "a!~{}[]"] {
        let (status, headers, resp) = app.post_raw(STOP, &token, body.clone(), Some(rid)).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        assert_eq!(resp["request_id"], rid);
        assert_eq!(headers["x-request-id"], rid);
    }
    // Also on the gateway's own error bodies.
    let (status, headers, resp) = app.post_raw(STOP, &token, "nope", Some("my-err-1")).await;
    assert_gateway_error(status, &resp, StatusCode::BAD_REQUEST, "CPHGW.0001");
    assert_eq!(resp["request_id"], "my-err-1");
    assert_eq!(headers["x-request-id"], "my-err-1");
}

#[tokio::test]
async fn invalid_request_id_is_replaced_by_a_generated_one() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    let body = json!({ "phone_ids": app.phones(PROJECT_A, 0, 1) }).to_string();
    let too_long = "r".repeat(129);
    for rid in [Some("has space"), Some(too_long.as_str()), Some(""), None] {
        let (status, headers, resp) = app.post_raw(STOP, &token, body.clone(), rid).await;
        assert_eq!(status, StatusCode::OK, "{resp}");
        let got = resp["request_id"].as_str().expect("request_id");
        assert!(is_hex32(got), "{rid:?} -> {got}");
        assert_eq!(headers["x-request-id"], got);
    }
}

// ---------------------------------------------------------------------------
// Invalid requests: 400 / 413, nothing upstream
// ---------------------------------------------------------------------------

#[tokio::test]
async fn invalid_bodies_are_400_and_nothing_goes_upstream() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    let id65 = "x".repeat(65);
    let cases: Vec<(String, &str)> = vec![
        ("not json".into(), "CPHGW.0001"),
        ("".into(), "CPHGW.0001"),
        ("{}".into(), "CPHGW.0001"),
        ("[]".into(), "CPHGW.0001"),
        (r#"{"phone_ids":"abc"}"#.into(), "CPHGW.0001"),
        (r#"{"phone_ids":null}"#.into(), "CPHGW.0001"),
        (r#"{"phone_ids":[1,2,3]}"#.into(), "CPHGW.0001"),
        (r#"{"phone_ids":["a",2]}"#.into(), "CPHGW.0001"),
        (r#"{"phone_ids":[]}"#.into(), "CPHGW.0001"),
        (r#"{"phone_ids":["a b"]}"#.into(), "CPHGW.0002"),
        (r#"{"phone_ids":[""]}"#.into(), "CPHGW.0002"),
        (r#"{"phone_ids":["ok","../etc"]}"#.into(), "CPHGW.0002"),
        (json!({ "phone_ids": [id65] }).to_string(), "CPHGW.0002"),
    ];
    for (body, code) in cases {
        let (status, _, resp) = app.post_raw(STOP, &token, body.clone(), None).await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body} -> {resp}");
        assert_gateway_error(status, &resp, StatusCode::BAD_REQUEST, code);
    }
    // 64 characters is still a valid id (CPH then judges it).
    let id64 = "x".repeat(64);
    let (status, body) = app.stop(&token, &[id64]).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(jobs(&body)[0]["error_code"], "CPS.0004");

    let stats = app.sim.stats();
    assert_eq!(stats.batch_stop_requests, 1, "only the valid request");
}

#[tokio::test]
async fn bad_ids_are_named_in_the_error_message() {
    let app = TestApp::spawn().await;
    let mut ids = app.phones(PROJECT_A, 0, 2);
    ids.insert(1, "bad id".into());
    ids.push("z/y".into());
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_gateway_error(status, &body, StatusCode::BAD_REQUEST, "CPHGW.0002");
    let msg = body["error_msg"].as_str().unwrap();
    assert!(msg.contains("bad id") && msg.contains("z/y"), "{msg}");
    assert!(!msg.contains(&ids[0]), "valid ids are not named: {msg}");
    assert_eq!(app.sim.stats().batch_stop_requests, 0);
    assert_eq!(
        app.sim.phone_state(PROJECT_A, &ids[0]),
        Some(PhoneState::Running)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_than_max_phone_ids_is_413() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 0, 10_001);
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_gateway_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "CPHGW.0003");
    let stats = app.sim.stats();
    assert_eq!(stats.batch_stop_requests, 0);
    assert_eq!(stats.iam_requests, 0);
}

#[tokio::test]
async fn body_over_max_body_bytes_is_413() {
    let app =
        TestApp::spawn_with(TestOptions::default().set("limits.max_body_bytes", "1000")).await;
    let token = caller_token(TENANT_A);
    // 40 ids of 32 characters: about 1.4 kB.
    let ids = app.phones(PROJECT_A, 0, 40);
    let (status, body) = app.stop(&token, &ids).await;
    assert_gateway_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "CPHGW.0003");
    // A body under the limit still works.
    let ids = app.phones(PROJECT_A, 0, 10);
    let (status, body) = app.stop(&token, &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.sim.stats().batch_stop_requests, 1);
}

#[tokio::test]
async fn body_of_exactly_max_body_bytes_is_accepted() {
    let app =
        TestApp::spawn_with(TestOptions::default().set("limits.max_body_bytes", "1000")).await;
    let token = caller_token(TENANT_A);
    let json = json!({ "phone_ids": app.phones(PROJECT_A, 0, 2) }).to_string();
    let exact = format!("{json:<1000}");
    assert_eq!(exact.len(), 1000);
    let (status, _, body) = app.post_raw(STOP, &token, exact, None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let over = format!("{json:<1001}");
    let (status, _, body) = app.post_raw(STOP, &token, over, None).await;
    assert_gateway_error(status, &body, StatusCode::PAYLOAD_TOO_LARGE, "CPHGW.0003");
    assert_eq!(app.sim.stats().batch_stop_requests, 1);
}

/// The limit holds without a `Content-Length` (chunked body, raw HTTP/1.1).
#[tokio::test]
async fn chunked_body_over_max_body_bytes_is_413() {
    let app =
        TestApp::spawn_with(TestOptions::default().set("limits.max_body_bytes", "1000")).await;
    let token = caller_token(TENANT_A);
    let body = json!({ "phone_ids": app.phones(PROJECT_A, 0, 40) }).to_string();
    assert!(body.len() > 1000);
    let addr = app.gateway.addr;
    let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let mut req = format!(
        "POST {STOP} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {token}\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
    );
    for chunk in body.as_bytes().chunks(200) {
        req.push_str(&format!("{:x}\r\n", chunk.len()));
        req.push_str(std::str::from_utf8(chunk).unwrap());
        req.push_str("\r\n");
    }
    req.push_str("0\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.expect("write");
    let mut answer = Vec::new();
    let _ = tcp.read_to_end(&mut answer).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(answer.contains("CPHGW.0003"), "{answer}");
    assert_eq!(app.sim.stats().batch_stop_requests, 0);
}

// ---------------------------------------------------------------------------
// Tenants
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_tenant_and_missing_tenant_claim_are_403() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 0, 1);
    let no_tenant = mint(
        jsonwebtoken::Algorithm::HS256,
        &claims(None, &["whatever"]),
        None,
    );
    let bad_tenant = {
        let mut c = claims(Some(TENANT_A), &[]);
        c["tenant"] = "not a valid tenant!".into();
        mint(jsonwebtoken::Algorithm::HS256, &c, None)
    };
    for token in [caller_token("nobody"), no_tenant, bad_tenant] {
        let (status, body) = app.stop(&token, &ids).await;
        assert_gateway_error(status, &body, StatusCode::FORBIDDEN, "CPHGW.0102");
    }
    let stats = app.sim.stats();
    assert_eq!(stats.batch_stop_requests, 0);
    assert_eq!(stats.iam_requests, 0);
}

// ---------------------------------------------------------------------------
// IAM tokens
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_first_requests_share_one_iam_token() {
    let app = std::sync::Arc::new(TestApp::spawn().await);
    let token = caller_token(TENANT_A);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let app = app.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let ids = app.phones(PROJECT_A, i, 1);
                let (status, body) = app.stop(&token, &ids).await;
                (ids, status, body)
            })
        })
        .collect();
    for task in tasks {
        let (ids, status, body) = task.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_accounts_for(&ids, &body);
        assert!(jobs(&body)[0]["job_id"].is_string(), "{body}");
    }
    let stats = app.sim.stats();
    assert_eq!(stats.iam_requests, 1, "{stats:?}");
    assert_eq!(stats.tokens_issued, 1);
    assert_eq!(stats.batch_stop_requests, 50);
    assert_eq!(stats.unauthorized, 0);
}

#[tokio::test]
async fn a_revoked_iam_token_is_renewed_once() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    let (status, body) = app.stop(&token, &app.phones(PROJECT_A, 0, 1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(app.sim.stats().iam_requests, 1);

    app.sim.revoke_tokens();
    let ids = app.phones(PROJECT_A, 1, 1);
    let (status, body) = app.stop(&token, &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    assert!(jobs(&body)[0]["job_id"].is_string(), "{body}");
    let stats = app.sim.stats();
    assert_eq!(stats.iam_requests, 2, "{stats:?}");
    assert_eq!(stats.unauthorized, 1, "{stats:?}");
    assert_eq!(stats.batch_stop_requests, 3, "first, refused, renewed");
    assert!(matches!(
        app.sim.phone_state(PROJECT_A, &ids[0]),
        Some(PhoneState::Stopping | PhoneState::Stopped)
    ));
}

#[tokio::test]
async fn iam_down_on_a_cold_gateway_is_503() {
    let app = TestApp::spawn().await;
    app.sim.set_faults(Faults {
        iam_down: true,
        ..Faults::default()
    });
    let ids = app.phones(PROJECT_A, 0, 250);
    let req = json!({ "phone_ids": ids }).to_string();
    let token = caller_token(TENANT_A);
    let (status, headers, body) = app.post_raw(STOP, &token, req, Some("iam-down-1")).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error_code"], "CPHGW.0303", "{body}");
    assert!(body["error_msg"].is_string(), "{body}");
    assert_eq!(body["request_id"], "iam-down-1", "{body}");
    assert_eq!(headers["x-request-id"], "iam-down-1");
    assert_accounts_for(&ids, &body);
    for e in jobs(&body) {
        assert_eq!(e["error_code"], "CPHGW.0303", "{e}");
        assert!(e.get("job_id").is_none(), "{e}");
        let msg = e["error_msg"].as_str().unwrap();
        assert!(!msg.contains(IAM_PASSWORD), "{msg}");
    }
    let stats = app.sim.stats();
    assert_eq!(stats.batch_stop_requests, 0);
    assert!(
        (1..=3).contains(&stats.iam_requests),
        "IAM asked once per batch at most: {stats:?}"
    );
}

// ---------------------------------------------------------------------------
// Upstream failures
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_failed_batch_among_good_ones_is_200_with_passthrough_errors() {
    let app = TestApp::spawn_with(TestOptions::default().set("upstream.max_retries", "0")).await;
    let token = caller_token(TENANT_A);
    let ids = app.phones(PROJECT_A, 0, 300);
    let mut found = false;
    for seed in 0..200 {
        app.sim.set_faults(Faults {
            seed,
            error_500_rate: 0.5,
            ..Faults::default()
        });
        app.sim.reset_stats();
        let (status, body) = app.stop(&token, &ids).await;
        let entries = jobs(&body);
        let failed_batches: Vec<bool> = entries
            .chunks(100)
            .map(|b| b[0]["error_code"] == "CPS.0003")
            .collect();
        let n_failed = failed_batches.iter().filter(|f| **f).count();
        if n_failed == 0 || n_failed == 3 {
            continue;
        }
        found = true;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert!(body.get("error_code").is_none(), "{body}");
        assert_accounts_for(&ids, &body);
        for (batch, failed) in entries.chunks(100).zip(&failed_batches) {
            for e in batch {
                if *failed {
                    assert_eq!(e["error_code"], "CPS.0003", "{e}");
                    assert_eq!(e["error_msg"], "internal error", "{e}");
                    assert!(e.get("job_id").is_none(), "{e}");
                } else {
                    assert!(e["job_id"].is_string(), "{e}");
                    assert!(e.get("error_code").is_none(), "{e}");
                }
            }
        }
        let stats = app.sim.stats();
        assert_eq!(stats.batch_stop_requests, 3, "no retry: {stats:?}");
        assert_eq!(stats.faults_injected as usize, n_failed, "{stats:?}");
        break;
    }
    assert!(found, "no seed gave a mixed outcome");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn all_batches_failing_is_502_with_every_phone_listed() {
    let app = TestApp::spawn_with(TestOptions::default().set("upstream.max_retries", "0")).await;
    app.sim.set_faults(Faults {
        error_503_rate: 1.0,
        ..Faults::default()
    });
    let ids = app.phones(PROJECT_A, 0, 250);
    let req = json!({ "phone_ids": ids }).to_string();
    let token = caller_token(TENANT_A);
    let (status, headers, body) = app.post_raw(STOP, &token, req, Some("all-fail-1")).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["request_id"], "all-fail-1", "{body}");
    assert_eq!(headers["x-request-id"], "all-fail-1");
    assert_eq!(body["error_code"], "CPHGW.0301", "{body}");
    assert!(
        body["error_msg"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    assert!(body["request_id"].is_string(), "{body}");
    assert_accounts_for(&ids, &body);
    for e in jobs(&body) {
        assert_eq!(e["error_code"], "APIG.0503", "{e}");
        assert_eq!(e["error_msg"], "service unavailable", "{e}");
        assert!(e.get("job_id").is_none(), "{e}");
    }
    assert_eq!(app.sim.stats().batch_stop_requests, 3);
    assert_eq!(app.sim.stats().stopped_phones, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_timeout_is_504_and_not_retried() {
    let app = TestApp::spawn_with(
        TestOptions::default()
            .set("upstream.timeout_ms", "300")
            .set("upstream.max_retries", "2"),
    )
    .await;
    let token = caller_token(TENANT_A);
    // Warm the IAM token, so that the timeout is CPH's alone.
    let (status, _) = app.stop(&token, &app.phones(PROJECT_A, 999, 1)).await;
    assert_eq!(status, StatusCode::OK);
    app.sim.set_faults(Faults {
        hang_rate: 1.0,
        hang_ms: 5000,
        ..Faults::default()
    });
    app.sim.reset_stats();
    let ids = app.phones(PROJECT_A, 0, 150);
    let started = std::time::Instant::now();
    let (status, body) = app.stop(&token, &ids).await;
    let took = started.elapsed();
    assert_eq!(status, StatusCode::GATEWAY_TIMEOUT, "{body}");
    assert_eq!(body["error_code"], "CPHGW.0302", "{body}");
    assert!(body["error_msg"].is_string(), "{body}");
    assert_accounts_for(&ids, &body);
    for e in jobs(&body) {
        assert_eq!(e["error_code"], "CPHGW.0302", "{e}");
        assert!(e.get("job_id").is_none(), "{e}");
    }
    assert!(took < Duration::from_secs(3), "took {took:?}");
    assert_eq!(
        app.sim.stats().batch_stop_requests,
        2,
        "one call per batch, no retry of an unknown outcome"
    );
}

// ---------------------------------------------------------------------------
// Concurrency limits
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_project_concurrency_is_shared_by_requests() {
    let app = std::sync::Arc::new(
        TestApp::spawn_with(
            TestOptions::default()
                .set("upstream.max_concurrency_per_project", "4")
                .set("upstream.max_concurrency_per_request", "8")
                .sim(|s| {
                    s.faults = Faults {
                        latency_ms: 50,
                        ..Faults::default()
                    }
                }),
        )
        .await,
    );
    let token = caller_token(TENANT_A);
    let tasks: Vec<_> = (0..3)
        .map(|i| {
            let app = app.clone();
            let token = token.clone();
            tokio::spawn(async move {
                let ids = app.phones(PROJECT_A, i * 1000, 1000);
                let (status, body) = app.stop(&token, &ids).await;
                (ids, status, body)
            })
        })
        .collect();
    for task in tasks {
        let (ids, status, body) = task.await.expect("task");
        assert_eq!(status, StatusCode::OK, "{}", body["error_msg"]);
        assert_accounts_for(&ids, &body);
        assert!(jobs(&body).iter().all(|j| j["job_id"].is_string()));
    }
    let stats = app.sim.stats();
    assert!(stats.max_in_flight_per_project <= 4, "{stats:?}");
    assert!(
        stats.max_in_flight_per_project >= 2,
        "calls did overlap: {stats:?}"
    );
    assert_eq!(stats.batch_stop_requests, 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_request_concurrency_is_bounded() {
    let app = TestApp::spawn_with(
        TestOptions::default()
            .set("upstream.max_concurrency_per_project", "32")
            .set("upstream.max_concurrency_per_request", "3")
            .sim(|s| {
                s.faults = Faults {
                    latency_ms: 20,
                    ..Faults::default()
                }
            }),
    )
    .await;
    let ids = app.phones(PROJECT_A, 0, 2000);
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::OK, "{}", body["error_msg"]);
    assert_accounts_for(&ids, &body);
    let stats = app.sim.stats();
    assert!(stats.max_in_flight_per_project <= 3, "{stats:?}");
    assert!(
        stats.max_in_flight_per_project >= 2,
        "calls did overlap: {stats:?}"
    );
    assert_eq!(stats.batch_stop_requests, 20);
}

// ---------------------------------------------------------------------------
// Job query
// ---------------------------------------------------------------------------

#[tokio::test]
async fn job_query_follows_a_stop() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    let ids = app.phones(PROJECT_A, 5, 1);
    let (status, body) = app.stop(&token, &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let job_id = jobs(&body)[0]["job_id"].as_str().unwrap().to_owned();

    let (status, headers, job) = get(&app, &format!("/v1/cloud-phone/jobs/{job_id}"), &token).await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(job["job_id"], job_id.as_str());
    assert_eq!(job["phone_id"], ids[0].as_str());
    assert!(
        job["status"] == 1 || job["status"] == 2,
        "status 1 or 2: {job}"
    );
    assert_eq!(app.sim.stats().job_queries, 1);
}

#[tokio::test]
async fn job_query_in_the_project_form() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    let ids = app.phones(PROJECT_A2, 5, 1);
    let path = format!("/v1/{PROJECT_A2}/cloud-phone/phones/batch-stop");
    let (status, body) = app.stop_at(&path, &token, &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let job_id = jobs(&body)[0]["job_id"].as_str().unwrap().to_owned();

    let (status, _, job) = get(
        &app,
        &format!("/v1/{PROJECT_A2}/cloud-phone/jobs/{job_id}"),
        &token,
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    assert_eq!(job["phone_id"], ids[0].as_str());
    assert!(job["status"] == 1 || job["status"] == 2, "{job}");

    // The default form asks project A, where this job does not exist.
    let (status, _, job) = get(&app, &format!("/v1/cloud-phone/jobs/{job_id}"), &token).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{job}");
    assert_eq!(job["error_code"], "CPS.0006", "{job}");
}

#[tokio::test]
async fn unknown_job_passes_the_upstream_404_through() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    let (status, _, body) = get(
        &app,
        "/v1/cloud-phone/jobs/0123456789abcdef0123456789abcdef",
        &token,
    )
    .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{body}");
    assert_eq!(body["error_code"], "CPS.0006", "{body}");
    assert_eq!(body["error_msg"], "job not found", "{body}");
    assert_eq!(app.sim.stats().job_queries, 1);
}

#[tokio::test]
async fn malformed_job_id_is_400() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    let long = "j".repeat(65);
    for job in ["bad%20id", "a%2Fb", long.as_str()] {
        let (status, _, body) = get(&app, &format!("/v1/cloud-phone/jobs/{job}"), &token).await;
        assert_gateway_error(status, &body, StatusCode::BAD_REQUEST, "CPHGW.0002");
    }
    assert_eq!(app.sim.stats().job_queries, 0);
}

#[tokio::test]
async fn job_query_for_another_tenants_project_is_403() {
    let app = TestApp::spawn().await;
    let token_a = caller_token(TENANT_A);
    let (status, body) = app.stop(&token_a, &app.phones(PROJECT_A, 0, 1)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let job_id = jobs(&body)[0]["job_id"].as_str().unwrap().to_owned();

    let token_b = caller_token(TENANT_B);
    let (status, _, body) = get(
        &app,
        &format!("/v1/{PROJECT_A}/cloud-phone/jobs/{job_id}"),
        &token_b,
    )
    .await;
    assert_gateway_error(status, &body, StatusCode::FORBIDDEN, "CPHGW.0102");
    assert_eq!(app.sim.stats().job_queries, 0);
}

// ---------------------------------------------------------------------------
// Routing
// ---------------------------------------------------------------------------

#[tokio::test]
async fn unknown_route_is_404_json() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    for path in ["/v1/nope", "/", "/v2/cloud-phone/phones/batch-stop"] {
        let (status, headers, body) = get(&app, path, &token).await;
        assert_gateway_error(status, &body, StatusCode::NOT_FOUND, "CPHGW.0004");
        assert_eq!(headers["content-type"], "application/json");
    }
}

#[tokio::test]
async fn wrong_method_is_405_json() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    let (status, headers, body) = get(&app, STOP, &token).await;
    assert_gateway_error(status, &body, StatusCode::METHOD_NOT_ALLOWED, "CPHGW.0005");
    assert_eq!(headers["content-type"], "application/json");
    let (status, _, body) = app
        .post_raw("/v1/cloud-phone/jobs/abc", &token, "{}", None)
        .await;
    assert_gateway_error(status, &body, StatusCode::METHOD_NOT_ALLOWED, "CPHGW.0005");
    assert_eq!(app.sim.stats().batch_stop_requests, 0);
}
