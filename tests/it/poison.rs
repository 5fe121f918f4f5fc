//! Poison batches: CPH refuses a whole batch because of one id in it; the
//! gateway splits the batch in halves down to single ids so that every
//! other phone is still stopped (CONTRACT section 3).

use std::time::{Duration, Instant};

use cph_sim::Faults;
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

fn entries(body: &Value) -> &Vec<Value> {
    body["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs in {body}"))
}

fn split_calls(metrics: &str) -> f64 {
    sample(metrics, r#"cphgw_upstream_retries_total{reason="split"}"#).unwrap_or(0.0)
}

#[tokio::test]
async fn one_poison_id_costs_only_itself() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 0, 100);
    let poison = ids[37].clone();
    app.sim.set_faults(Faults {
        poison_ids: vec![poison.clone()],
        ..Faults::default()
    });
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    for entry in entries(&body) {
        if entry["phone_id"] == poison.as_str() {
            assert_eq!(entry["error_code"], "CPS.0004", "{entry}");
            assert_eq!(entry["error_msg"], "invalid phone id in the request");
        } else {
            assert!(entry["job_id"].is_string(), "{entry}");
        }
    }
    // 100 -> 50 -> 25 -> 13 -> 6 -> 3 -> 1: the first call, then two per
    // halving on the way to the poison id.
    let stats = app.sim.stats();
    eprintln!(
        "one poison id in a batch of 100: {} batch-stop calls ({} refused whole), {} phones stopped",
        stats.batch_stop_requests,
        stats.responses_by_status.get(&400).copied().unwrap_or(0),
        stats.stopped_phones
    );
    assert_eq!(stats.batch_stop_requests, 13, "{stats:?}");
    assert_eq!(stats.responses_by_status.get(&400), Some(&7));
    assert_eq!(stats.stopped_phones, 99);
    assert_eq!(split_calls(&app.metrics().await), 12.0);
}

#[tokio::test]
async fn a_batch_refused_for_every_id_stays_within_twice_its_size() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 0, 100);
    app.sim.set_faults(Faults {
        reject_all_400: true,
        ..Faults::default()
    });
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    // CPH judged every id: a definite answer.
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    assert!(
        entries(&body).iter().all(|e| e["error_code"] == "CPS.0004"),
        "{body}"
    );
    // A full split down to single ids: 2 x 100 - 2 extra calls.
    let stats = app.sim.stats();
    assert_eq!(stats.batch_stop_requests, 1 + 198, "{stats:?}");
    assert_eq!(split_calls(&app.metrics().await), 198.0);
}

#[tokio::test]
async fn refusals_about_the_account_or_access_are_not_split() {
    // The simulator refuses a batch over its size with 400 CPS.0001, a
    // code the contract puts out of reach of a split.
    let app = TestApp::spawn_with(
        TestOptions::default()
            .set("upstream.max_batch_size", "20")
            .sim(|o| o.max_batch_size = 10),
    )
    .await;
    let ids = app.phones(PROJECT_A, 0, 20);
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        entries(&body).iter().all(|e| e["error_code"] == "CPS.0001"),
        "{body}"
    );
    assert_eq!(app.sim.stats().batch_stop_requests, 1);
    assert_eq!(split_calls(&app.metrics().await), 0.0);
}

#[tokio::test]
async fn splitting_stops_at_the_deadline() {
    let app = TestApp::spawn_with(
        TestOptions::default()
            .set("limits.request_timeout_ms", "600")
            .set("upstream.max_batch_size", "64"),
    )
    .await;
    let ids = app.phones(PROJECT_A, 0, 64);
    app.sim.set_faults(Faults {
        reject_all_400: true,
        latency_ms: 100,
        ..Faults::default()
    });
    let started = Instant::now();
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "took {took:?}");
    assert_accounts_for(&ids, &body);
    assert_eq!(status, StatusCode::OK, "{body}");
    // Far fewer calls than a full split (127) fitted in the deadline; the
    // phones not reached keep CPH's refusal (or, for a call cut short by the
    // deadline, an unknown outcome).
    let calls = app.sim.stats().batch_stop_requests;
    assert!((2..=8).contains(&calls), "{calls} calls");
    assert!(
        entries(&body)
            .iter()
            .all(|e| e["error_code"] == "CPS.0004" || e["error_code"] == "CPHGW.0302"),
        "{body}"
    );
}
