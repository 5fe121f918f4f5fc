//! A misbehaving upstream (the simulator's faults): answers of any size,
//! odd entries, other 2xx, bodies that are not JSON. The gateway reads at
//! most a bounded answer, treats a larger one as broken, cuts long error
//! messages, and still accounts for every phone.

use std::time::{Duration, Instant};

use cph_sim::Faults;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

async fn spawn_faulty(faults: Faults) -> TestApp {
    TestApp::spawn_with(TestOptions::default().sim(|s| s.faults = faults)).await
}

/// Every phone of `body` has an error with `code`.
fn all_phones_have(body: &Value, code: &str) -> bool {
    body["jobs"]
        .as_array()
        .is_some_and(|j| !j.is_empty() && j.iter().all(|e| e["error_code"] == code))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_batch_stop_answer_is_broken_and_not_read_whole() {
    for chunked in [false, true] {
        let app = spawn_faulty(Faults {
            oversize_body_bytes: 64 * 1024 * 1024,
            oversize_chunked: chunked,
            ..Faults::default()
        })
        .await;
        let ids = app.phones(PROJECT_A, 0, 100);
        let started = Instant::now();
        let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
        let took = started.elapsed();
        println!("64 MiB CPH answer (chunked: {chunked}): {status} in {took:?}");
        assert_eq!(status, StatusCode::BAD_GATEWAY, "{}", body["error_msg"]);
        assert_eq!(body["error_code"], "CPHGW.0301");
        assert_accounts_for(&ids, &body);
        assert!(all_phones_have(&body, "CPHGW.0301"), "{}", body["jobs"][0]);
        let msg = body["jobs"][0]["error_msg"].as_str().unwrap_or_default();
        assert!(msg.contains("unknown"), "the outcome is unknown: {msg}");
        // Not read whole: the answer stops at the limit.
        assert!(took < Duration::from_secs(5), "{took:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_job_query_answer_is_502() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 0, 1);
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::OK);
    let job = body["jobs"][0]["job_id"].as_str().expect("job").to_owned();
    app.sim.set_faults(Faults {
        oversize_body_bytes: 32 * 1024 * 1024,
        ..Faults::default()
    });
    let (status, headers, text) = app
        .get(
            &format!("/v1/cloud-phone/jobs/{job}"),
            &caller_token(TENANT_A),
        )
        .await;
    println!("32 MiB job answer: {status}, {} bytes relayed", text.len());
    let body: Value = serde_json::from_str(&text).expect("JSON");
    assert_gateway_error(status, &body, StatusCode::BAD_GATEWAY, "CPHGW.0301");
    assert_eq!(headers["content-type"], "application/json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_iam_answer_gets_no_token() {
    // Over the default upstream.max_response_bytes (4 MiB).
    let app = TestApp::spawn_with(
        TestOptions::default().sim(|s| s.faults.oversize_iam_bytes = 16 * 1024 * 1024),
    )
    .await;
    let ids = app.phones(PROJECT_A, 0, 3);
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error_code"], "CPHGW.0303");
    assert_accounts_for(&ids, &body);
    assert_eq!(app.sim.stats().batch_stop_requests, 0);
}

/// A 200 KB `error_msg` on a batch-level 400 is cut to 512 characters
/// before it is copied to each phone of the batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_upstream_error_messages_are_cut_to_512_characters() {
    let app = spawn_faulty(Faults {
        reject_all_400: true,
        oversize_error_msg_bytes: 200_000,
        ..Faults::default()
    })
    .await;
    let ids = app.phones(PROJECT_A, 0, 100);
    let resp = app
        .client
        .post(format!("{}{STOP}", app.url))
        .bearer_auth(caller_token(TENANT_A))
        .json(&serde_json::json!({ "phone_ids": ids }))
        .send()
        .await
        .expect("answer");
    let status = resp.status();
    let bytes = resp.bytes().await.expect("body");
    println!(
        "100 phones under a 200 KB error_msg: {status}, {} bytes",
        bytes.len()
    );
    let body: Value = serde_json::from_slice(&bytes).expect("JSON");
    assert_accounts_for(&ids, &body);
    for entry in body["jobs"].as_array().expect("jobs") {
        assert_eq!(entry["error_code"], "CPS.0004", "{entry}");
        let msg = entry["error_msg"].as_str().expect("error_msg");
        assert!(
            msg.chars().count() <= 512,
            "error_msg of {} chars",
            msg.len()
        );
        assert!(msg.starts_with("invalid phone id"), "{msg}");
    }
    assert!(bytes.len() < 100 * 1024, "answer of {} bytes", bytes.len());
}

/// A 201 with jobs is an answer; odd entries are normalised: a job_id wins
/// over an error in the same entry, an empty job_id is no job, and of two
/// entries for a phone the one with a job wins.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_201_with_odd_entries_is_normalised() {
    let app = spawn_faulty(Faults {
        status_201: true,
        weird_entries: true,
        ..Faults::default()
    })
    .await;
    let ids = app.phones(PROJECT_A, 0, 5);
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    let jobs = body["jobs"].as_array().expect("jobs");
    // 1st: job_id and error_code: a job.
    assert!(jobs[0]["job_id"].is_string(), "{}", jobs[0]);
    assert!(jobs[0].get("error_code").is_none(), "{}", jobs[0]);
    // 2nd: job_id "": not stopped as far as the answer says.
    assert!(jobs[1].get("job_id").is_none(), "{}", jobs[1]);
    assert!(jobs[1]["error_code"].is_string(), "{}", jobs[1]);
    // 3rd: an error entry, then a job entry: the job.
    assert!(jobs[2]["job_id"].is_string(), "{}", jobs[2]);
    assert!(jobs[3]["job_id"].is_string() && jobs[4]["job_id"].is_string());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_query_answer_that_is_not_json_is_502() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 0, 1);
    let (_, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    let job = body["jobs"][0]["job_id"].as_str().expect("job").to_owned();
    app.sim.set_faults(Faults {
        job_query_not_json: true,
        ..Faults::default()
    });
    let (status, _, text) = app
        .get(
            &format!("/v1/cloud-phone/jobs/{job}"),
            &caller_token(TENANT_A),
        )
        .await;
    let body: Value = serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {text:?}"));
    assert_gateway_error(status, &body, StatusCode::BAD_GATEWAY, "CPHGW.0301");
}

/// A path whose percent-escapes are not UTF-8 gets the contract's body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_path_that_is_not_utf8_gets_the_contract_body() {
    let app = TestApp::spawn().await;
    for path in [
        "/v1/%FF%FE/cloud-phone/phones/batch-stop",
        "/v1/cloud-phone/jobs/%C3%28",
        "/v1/cloud-phone/stops/%FF",
    ] {
        let resp = app
            .client
            .request(
                if path.contains("batch-stop") {
                    reqwest::Method::POST
                } else {
                    reqwest::Method::GET
                },
                format!("{}{path}", app.url),
            )
            .bearer_auth(caller_token(TENANT_A))
            .json(&serde_json::json!({"phone_ids": ["a"]}))
            .send()
            .await
            .expect("answer");
        let status = resp.status();
        assert_eq!(resp.headers()["content-type"], "application/json", "{path}");
        let body: Value = resp.json().await.expect("JSON");
        assert_gateway_error(status, &body, StatusCode::BAD_REQUEST, "CPHGW.0001");
    }
    assert_eq!(app.sim.stats().batch_stop_requests, 0);
}
