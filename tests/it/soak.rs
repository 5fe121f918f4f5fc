//! The real binary under load and misbehaviour for a while, its memory read
//! from `/proc`: a heavy tenant inside its rate limit, and a minute of
//! mixed faults with hostile connections beside normal traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use cph_sim::{Faults, Sim, SimOptions};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::helpers::process::GatewayProcess;
use crate::helpers::*;

/// Samples the process's RSS (KiB) and open fds every 100 ms until `stop`
/// is set; the peaks.
fn watch_process(pid: u32, stop: Arc<AtomicU64>) -> tokio::task::JoinHandle<(u64, usize)> {
    tokio::spawn(async move {
        let (mut peak, mut fds) = (0, 0);
        while stop.load(Ordering::Relaxed) == 0 {
            fds = fds.max(
                std::fs::read_dir(format!("/proc/{pid}/fd"))
                    .map(|d| d.count())
                    .unwrap_or(0),
            );
            let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
            let kib = status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
                .unwrap_or(0);
            peak = peak.max(kib);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        (peak, fds)
    })
}

fn median(v: &mut [Duration]) -> Duration {
    v.sort();
    v.get(v.len() / 2).copied().unwrap_or_default()
}

/// One stop by `tenant` of `ids` with a 40 s bound: status, body, latency.
async fn timed_stop(
    client: &reqwest::Client,
    url: &str,
    tenant: &str,
    body: Arc<String>,
) -> (StatusCode, Value, Duration) {
    let started = Instant::now();
    let resp = client
        .post(format!("{url}{STOP}"))
        .bearer_auth(caller_token(tenant))
        .header("content-type", "application/json")
        .body(body.as_str().to_owned())
        .timeout(Duration::from_secs(40))
        .send()
        .await;
    let took = started.elapsed();
    match resp {
        Ok(r) => {
            let status = r.status();
            let body = r.json().await.unwrap_or(Value::Null);
            (status, body, took)
        }
        Err(e) => panic!("no answer after {took:?}: {e}"),
    }
}

/// The scenario: 50 stops/s of 10,000 ids each against a CPH that
/// takes 200 ms, for 8 s, with the default limits. The gateway stays under
/// 128 MiB, answers the excess with 503, and another tenant keeps its
/// latency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heavy_tenant_cannot_run_the_gateway_out_of_memory() {
    let sim = Sim::start(SimOptions {
        faults: Faults {
            latency_ms: 200,
            ..Faults::default()
        },
        ..SimOptions::default()
    })
    .await
    .expect("sim");
    let gw = GatewayProcess::start_against(
        &sim,
        &[
            ("RUST_LOG", "warn"),
            ("CPHGW__LIMITS__TENANT_RATE_PER_S", "50"),
        ],
    )
    .await;
    let client = client();
    let heavy = Arc::new(
        json!({"phone_ids": (0..10_000).map(|i| cph_sim::phone_id(PROJECT_A, i)).collect::<Vec<_>>()})
            .to_string(),
    );
    let light = Arc::new(json!({"phone_ids": [cph_sim::phone_id(PROJECT_B, 1)]}).to_string());
    let mut before = Vec::new();
    for _ in 0..5 {
        before.push(
            timed_stop(&client, &gw.url, TENANT_B, light.clone())
                .await
                .2,
        );
    }
    let rss_idle = gw.rss_kib();
    let stop = Arc::new(AtomicU64::new(0));
    let peak = watch_process(gw.child.id(), stop.clone());

    let mut heavy_calls = Vec::new();
    let mut light_calls = Vec::new();
    let started = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(20));
    for i in 0..400u32 {
        tick.tick().await;
        let (c, url, body) = (client.clone(), gw.url.clone(), heavy.clone());
        heavy_calls.push(tokio::spawn(async move {
            timed_stop(&c, &url, TENANT_A, body).await
        }));
        if i % 10 == 0 {
            let (c, url, body) = (client.clone(), gw.url.clone(), light.clone());
            light_calls.push(tokio::spawn(async move {
                timed_stop(&c, &url, TENANT_B, body).await
            }));
        }
    }
    let offered = started.elapsed();
    let mut during = Vec::new();
    for c in light_calls {
        let (status, body, took) = c.await.expect("light stop");
        assert_eq!(status, StatusCode::OK, "the other tenant: {body}");
        during.push(took);
    }
    let (mut ok, mut overloaded, mut limited) = (0, 0, 0);
    for c in heavy_calls {
        let (status, body, _) = c.await.expect("heavy stop");
        match status.as_u16() {
            200 => ok += 1,
            503 => {
                assert_eq!(body["error_code"], "CPHGW.0202", "{body}");
                overloaded += 1;
            }
            429 => limited += 1,
            other => panic!("heavy stop: {other}: {}", body["error_msg"]),
        }
    }
    stop.store(1, Ordering::Relaxed);
    let (peak, _) = peak.await.expect("rss watcher");
    let (before, during) = (median(&mut before), median(&mut during));
    println!(
        "heavy tenant, 400 stops of 10,000 ids offered in {offered:?}: {ok} x 200, {overloaded} x 503, \
         {limited} x 429; RSS {rss_idle} KiB idle, peak {peak} KiB, now {} KiB; other tenant's \
         median latency {before:?} before, {during:?} during",
        gw.rss_kib()
    );
    assert!(peak < 128 * 1024, "peak RSS {peak} KiB");
    assert!(overloaded > 0, "no 503 for the excess");
    assert!(ok > 0, "nothing admitted");
    assert!(
        during < before + Duration::from_millis(500),
        "the other tenant's latency went from {before:?} to {during:?}"
    );
}

/// Sends hostile connections for `until`: silent ones, half-sent heads,
/// trickled bodies, 60 every 3 s, none closed by this side.
async fn hostile_connections(addr: String, until: Instant) -> usize {
    let mut made = 0;
    let mut all = Vec::new();
    while Instant::now() < until {
        let mut held = Vec::new();
        for i in 0..60 {
            let Ok(mut s) = tokio::net::TcpStream::connect(&addr).await else {
                continue;
            };
            made += 1;
            let _ = match i % 3 {
                0 => Ok(()),
                1 => s.write_all(b"POST /v1/cloud-phone/phones/batch-stop HTTP/1.1\r\nhost: x\r\n").await,
                _ => {
                    s.write_all(b"POST /v1/cloud-phone/phones/batch-stop HTTP/1.1\r\nhost: x\r\ncontent-length: 1000\r\n\r\n{")
                        .await
                }
            };
            held.push(s);
        }
        for _ in 0..10 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            for s in held.iter_mut().skip(2).step_by(3) {
                let _ = s.write_all(b" ").await;
            }
        }
        all.extend(held);
    }
    drop(all);
    made
}

/// The fault sets that follow each other during the soak.
fn fault_sets() -> Vec<Faults> {
    vec![
        Faults {
            error_500_rate: 0.2,
            error_503_rate: 0.1,
            error_429_rate: 0.1,
            reset_rate: 0.05,
            hang_rate: 0.02,
            hang_ms: 3_000,
            latency_ms: 20,
            jitter_ms: 40,
            ..Faults::default()
        },
        Faults {
            oversize_body_bytes: 16 * 1024 * 1024,
            ..Faults::default()
        },
        Faults {
            weird_entries: true,
            status_201: true,
            job_query_not_json: true,
            ..Faults::default()
        },
        Faults {
            poison_ids: vec![cph_sim::phone_id(PROJECT_A, 7)],
            oversize_error_msg_bytes: 200_000,
            oversize_chunked: true,
            oversize_body_bytes: 8 * 1024 * 1024,
            ..Faults::default()
        },
        Faults {
            latency_ms: 300,
            ..Faults::default()
        },
    ]
}

/// A minute of mixed faults with hostile connections beside normal
/// traffic: 0 lost ids, 0 panics, still answering, memory bounded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minute_of_mixed_faults_loses_nothing() {
    let soak = Duration::from_secs(
        std::env::var("SOAK_S")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let sim = Sim::start(SimOptions {
        job_duration: Duration::from_millis(200),
        ..SimOptions::default()
    })
    .await
    .expect("sim");
    let gw = GatewayProcess::start_against(
        &sim,
        &[
            ("RUST_LOG", "warn"),
            ("CPHGW__UPSTREAM__TIMEOUT_MS", "1500"),
            ("CPHGW__LIMITS__REQUEST_TIMEOUT_MS", "5000"),
            ("CPHGW__SERVER__HEADER_READ_TIMEOUT_MS", "1000"),
            ("CPHGW__SERVER__BODY_READ_TIMEOUT_MS", "1000"),
            ("CPHGW__SERVER__IDLE_TIMEOUT_MS", "2000"),
        ],
    )
    .await;
    let started = Instant::now();
    let until = started + soak;
    let stop = Arc::new(AtomicU64::new(0));
    let peak = watch_process(gw.child.id(), stop.clone());
    let hostile = tokio::spawn(hostile_connections(format!("127.0.0.1:{}", gw.port), until));

    let client = client();
    let (mut answers, mut ids_checked, mut jobs_seen) = (0u64, 0u64, Vec::<String>::new());
    let mut statuses = std::collections::BTreeMap::<u16, u64>::new();
    let sets = fault_sets();
    let mut round = 0u32;
    while Instant::now() < until {
        let set = (started.elapsed().as_secs() / 10) as usize % sets.len();
        sim.set_faults(sets[set].clone());
        sim.start_phones();
        round += 1;
        // A few stops of both tenants at once, and job queries.
        let calls = [
            (TENANT_A, PROJECT_A),
            (TENANT_B, PROJECT_B),
            (TENANT_A, PROJECT_A),
        ]
        .into_iter()
        .enumerate()
        .map(|(k, (tenant, project))| {
            let n = 50 + 75 * k as u32;
            let mut ids: Vec<String> = (0..n)
                .map(|i| cph_sim::phone_id(project, (round * 7 + i) % 5_000))
                .collect();
            ids.push("not-a-seeded-phone".into());
            ids.push(ids[0].clone());
            let body = Arc::new(json!({ "phone_ids": ids }).to_string());
            let (client, url) = (client.clone(), gw.url.clone());
            async move { (ids, timed_stop(&client, &url, tenant, body).await) }
        });
        for (ids, (status, body, _)) in futures_util::future::join_all(calls).await {
            *statuses.entry(status.as_u16()).or_default() += 1;
            assert!(
                matches!(status.as_u16(), 200 | 502 | 503 | 504),
                "{status}: {}",
                body["error_msg"]
            );
            if status == StatusCode::SERVICE_UNAVAILABLE && body["error_code"] == "CPHGW.0202" {
                continue;
            }
            assert_accounts_for(&ids, &body);
            answers += 1;
            ids_checked += distinct(&ids).len() as u64;
            jobs_seen.extend(
                body["jobs"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|e| e["job_id"].as_str().map(str::to_owned))
                    .take(2),
            );
        }
        for job in jobs_seen.drain(..).rev().take(4) {
            let (status, _, text) = {
                let resp = client
                    .get(format!("{}/v1/cloud-phone/jobs/{job}", gw.url))
                    .bearer_auth(caller_token(TENANT_A))
                    .send()
                    .await
                    .expect("job answer");
                let status = resp.status();
                (status, (), resp.text().await.unwrap_or_default())
            };
            assert!(
                serde_json::from_str::<Value>(&text).is_ok(),
                "job query {status} not JSON: {text:?}"
            );
            assert_ne!(status, StatusCode::INTERNAL_SERVER_ERROR, "{text}");
        }
        let health = client
            .get(format!("{}/healthz", gw.admin_url))
            .timeout(Duration::from_secs(1))
            .send()
            .await;
        assert!(
            health.is_ok_and(|r| r.status() == StatusCode::OK),
            "/healthz"
        );
    }
    stop.store(1, Ordering::Relaxed);
    let (peak, peak_fds) = peak.await.expect("process watcher");
    let hostile = hostile.await.expect("hostile");
    let logs = gw.logs();
    println!(
        "soak of {soak:?}: {round} rounds, {answers} stop answers accounting for {ids_checked} ids, \
         statuses {statuses:?}; {hostile} hostile connections; peak RSS {peak} KiB, peak {peak_fds} fds"
    );
    assert!(
        peak_fds < 400,
        "{peak_fds} fds: hostile connections are kept"
    );
    assert!(!logs.contains("panicked"), "a panic:\n{logs}");
    assert!(peak < 128 * 1024, "peak RSS {peak} KiB");
    assert!(answers > 0);
}
