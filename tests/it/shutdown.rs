//! Graceful shutdown of the real binary: on SIGTERM the gateway stops
//! accepting, finishes the requests in flight, and exits 0 within the grace
//! period.

use std::time::{Duration, Instant};

use cph_sim::{Faults, Sim, SimOptions, phone_id};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::process::GatewayProcess;
use crate::helpers::*;

/// `cph-gateway serve` (the real binary) against `sim`, with
/// `server.shutdown_grace_ms = grace_ms`, once `/readyz` answers 200.
async fn start(sim: &Sim, grace_ms: u64) -> GatewayProcess {
    let grace = grace_ms.to_string();
    GatewayProcess::start_against(
        sim,
        &[
            ("RUST_LOG", "info"),
            ("CPHGW__SERVER__SHUTDOWN_GRACE_MS", &grace),
        ],
    )
    .await
}

async fn sim_with_latency(latency_ms: u64) -> Sim {
    Sim::start(SimOptions {
        faults: Faults {
            latency_ms,
            ..Faults::default()
        },
        ..SimOptions::default()
    })
    .await
    .expect("simulator starts")
}

/// Whether a new TCP connection to `port` is refused.
async fn refused(port: u16) -> bool {
    tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
}

/// A 10,000-id stop (100 batches, 8 at a time, 30 ms each: ~0.4 s) is in
/// flight when SIGTERM arrives: it completes with every entry, new
/// connections are refused, and the process exits 0 within the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_stop_in_flight_then_exits_0() {
    let sim = sim_with_latency(30).await;
    let grace = Duration::from_secs(10);
    let mut gw = start(&sim, grace.as_millis() as u64).await;

    let ids: Vec<String> = (0..10_000).map(|i| phone_id(PROJECT_A, i)).collect();
    let request = client()
        .post(format!("{}{STOP}", gw.url))
        .bearer_auth(caller_token(TENANT_A))
        .json(&json!({ "phone_ids": ids }));
    let in_flight = tokio::spawn(async move {
        let resp = request
            .send()
            .await
            .expect("the stop in flight is answered");
        let status = resp.status();
        let body: Value = resp.json().await.expect("JSON body");
        (status, body, Instant::now())
    });

    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = eventually(Duration::from_secs(5), async || {
        sim.stats().batch_stop_requests > 0
    })
    .await;
    assert!(started, "the stop never reached the simulator");
    let sent_before = sim.stats().batch_stop_requests;
    assert!(
        sent_before > 0 && sent_before < 100,
        "the stop is not in flight at SIGTERM: {sent_before} of 100 batches sent"
    );
    let signalled = Instant::now();
    gw.signal("TERM");

    // While the stop drains, the gateway accepts no new connection.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        refused(gw.port).await,
        "a new connection was accepted after SIGTERM"
    );

    let (status, body, answered) = in_flight.await.expect("request task");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(answered > signalled, "answered before SIGTERM");
    assert_accounts_for(&ids, &body);
    let jobs = body["jobs"].as_array().expect("jobs");
    assert_eq!(jobs.len(), 10_000);
    assert!(
        jobs.iter().all(|e| e["job_id"].is_string()),
        "a phone of the drained stop was not stopped"
    );
    assert_eq!(sim.stats().batch_stop_requests, 100);

    let status = gw
        .wait_exit(grace)
        .await
        .unwrap_or_else(|| panic!("still running {grace:?} after SIGTERM"));
    let exited_after = signalled.elapsed();
    println!(
        "SIGTERM with a 10,000-id stop in flight ({sent_before} of 100 batches sent): \
         answered {:?} and exited {exited_after:?} after the signal",
        answered - signalled
    );
    assert!(status.success(), "exit status {status}:\n{}", gw.output());
    assert_eq!(status.code(), Some(0));
    assert!(refused(gw.port).await, "caller port still open after exit");
    assert!(
        refused(gw.admin_port).await,
        "admin port still open after exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_on_an_idle_gateway_exits_0_quickly() {
    let sim = sim_with_latency(0).await;
    let mut gw = start(&sim, 10_000).await;
    // One stop first, so that idle keep-alive connections exist.
    let ids = vec![phone_id(PROJECT_A, 1)];
    let resp = client()
        .post(format!("{}{STOP}", gw.url))
        .bearer_auth(caller_token(TENANT_A))
        .json(&json!({ "phone_ids": ids }))
        .send()
        .await
        .expect("stop answered");
    assert_eq!(resp.status(), StatusCode::OK);
    let signalled = Instant::now();
    gw.signal("TERM");
    let status = gw
        .wait_exit(Duration::from_secs(2))
        .await
        .expect("an idle gateway exits within 2 s of SIGTERM");
    println!("idle SIGTERM: exited after {:?}", signalled.elapsed());
    assert_eq!(status.code(), Some(0), "{}", gw.output());
    assert!(refused(gw.port).await);
}

/// A stop that cannot finish (CPH answers after 5 s) does not hold the
/// process past the grace period.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_bounded_by_the_grace_period() {
    let sim = sim_with_latency(5_000).await;
    let mut gw = start(&sim, 500).await;
    let ids = vec![phone_id(PROJECT_A, 2)];
    let request = client()
        .post(format!("{}{STOP}", gw.url))
        .bearer_auth(caller_token(TENANT_A))
        .json(&json!({ "phone_ids": ids }));
    let in_flight = tokio::spawn(async move { request.send().await.map(|r| r.status()) });
    let ok = eventually(Duration::from_secs(5), async || {
        sim.stats().batch_stop_requests > 0
    })
    .await;
    assert!(ok, "the stop never reached the simulator");
    let signalled = Instant::now();
    gw.signal("TERM");
    let status = gw
        .wait_exit(Duration::from_secs(3))
        .await
        .expect("exits within the 500 ms grace period (plus slack)");
    let took = signalled.elapsed();
    println!("SIGTERM with a stuck stop, grace 500 ms: exited after {took:?} ({status})");
    assert!(
        took >= Duration::from_millis(450),
        "exited before the grace period: {took:?}"
    );
    assert_eq!(status.code(), Some(0), "{}", gw.output());
    // The abandoned caller sees an error, not a hang.
    let outcome = tokio::time::timeout(Duration::from_secs(3), in_flight)
        .await
        .expect("the abandoned request ends");
    println!("abandoned request: {outcome:?}");
}
