//! Injected faults over HTTP.

use super::*;
use serde_json::Value;
use std::time::Instant;

/// Starts a sim whose every batch-stop suffers `faults`, with a token.
async fn faulty(faults: Faults) -> (Sim, reqwest::Client, String) {
    let sim = Sim::start(opts()).await.unwrap();
    let c = client();
    let t = token(&c, &sim, PROJECT).await;
    sim.set_faults(faults);
    (sim, c, t)
}

#[tokio::test]
async fn error_faults_answer_without_stopping() {
    let cases = [
        (
            Faults {
                error_500_rate: 1.0,
                ..Faults::default()
            },
            500,
            "CPS.0003",
        ),
        (
            Faults {
                error_503_rate: 1.0,
                ..Faults::default()
            },
            503,
            "APIG.0503",
        ),
        (
            Faults {
                error_429_rate: 1.0,
                retry_after_s: 7,
                ..Faults::default()
            },
            429,
            "APIG.0308",
        ),
    ];
    for (faults, status, code) in cases {
        let (sim, c, t) = faulty(faults).await;
        let p = phone_id(PROJECT, 3);
        let res = stop_call(&c, &sim, &t, PROJECT, &[&p]).await.unwrap();
        assert_eq!(res.status(), status);
        if status == 429 {
            assert_eq!(res.headers()["retry-after"], "7");
        }
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error_code"], code);
        assert_eq!(body["request_id"].as_str().unwrap().len(), 32);
        assert_eq!(sim.phone_state(PROJECT, &p), Some(PhoneState::Running));
        let stats = sim.stats();
        assert_eq!((stats.faults_injected, stats.stopped_phones), (1, 0));
        assert_eq!(stats.responses_by_status[&status], 1);
    }
}

#[tokio::test]
async fn hang_applies_stops_then_answers_late() {
    let (sim, c, t) = faulty(Faults {
        hang_rate: 1.0,
        hang_ms: 300,
        ..Faults::default()
    })
    .await;
    let p = phone_id(PROJECT, 4);
    let start = Instant::now();
    let err = c
        .post(format!(
            "{}/v1/{PROJECT}/cloud-phone/phones/batch-stop",
            sim.url()
        ))
        .header("X-Auth-Token", &t)
        .json(&serde_json::json!({ "phone_ids": [p] }))
        .timeout(Duration::from_millis(100))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(start.elapsed() < Duration::from_millis(300));
    assert_eq!(sim.phone_state(PROJECT, &p), Some(PhoneState::Stopping));
    // Without a client timeout the answer comes, normally, after the hang.
    let start = Instant::now();
    let res = stop_call(&c, &sim, &t, PROJECT, &[&p]).await.unwrap();
    assert!(start.elapsed() >= Duration::from_millis(300));
    assert_eq!(res.status(), 200);
    let stats = sim.stats();
    assert_eq!((stats.faults_injected, stats.stopped_phones), (2, 1));
}

#[tokio::test]
async fn reset_gives_a_connection_error_after_stopping() {
    let (sim, c, t) = faulty(Faults {
        reset_rate: 1.0,
        ..Faults::default()
    })
    .await;
    let p = phone_id(PROJECT, 5);
    let err = stop_call(&c, &sim, &t, PROJECT, &[&p]).await.unwrap_err();
    assert!(err.status().is_none() && !err.is_timeout(), "{err:?}");
    assert!(err.is_request() || err.is_connect(), "{err:?}");
    assert_eq!(sim.phone_state(PROJECT, &p), Some(PhoneState::Stopping));
    let stats = sim.stats();
    assert_eq!(
        (stats.faults_injected, stats.stopped_phones, stats.in_flight),
        (1, 1, 0)
    );
    assert!(!stats.responses_by_status.contains_key(&200));
    // The server keeps serving other connections.
    sim.set_faults(Faults::default());
    let res = stop_call(&client(), &sim, &t, PROJECT, &[&p])
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn latency_delays_cph_calls() {
    let (sim, c, t) = faulty(Faults {
        latency_ms: 150,
        ..Faults::default()
    })
    .await;
    let start = Instant::now();
    let res = stop_call(&c, &sim, &t, PROJECT, &[&phone_id(PROJECT, 0)])
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert!(start.elapsed() >= Duration::from_millis(150));
}

#[tokio::test]
async fn same_seed_same_fault_sequence_over_http() {
    let faults = Faults {
        seed: 42,
        error_500_rate: 0.3,
        error_503_rate: 0.2,
        error_429_rate: 0.2,
        ..Faults::default()
    };
    let (sim, c, t) = faulty(faults.clone()).await;
    let p = phone_id(PROJECT, 6);
    let mut runs = Vec::new();
    for seed in [42, 42, 43] {
        sim.set_faults(Faults {
            seed,
            ..faults.clone()
        });
        let mut statuses = Vec::new();
        for _ in 0..30 {
            statuses.push(
                stop_call(&c, &sim, &t, PROJECT, &[&p])
                    .await
                    .unwrap()
                    .status()
                    .as_u16(),
            );
        }
        runs.push(statuses);
    }
    assert_eq!(runs[0], runs[1]);
    assert_ne!(runs[0], runs[2]);
    for status in [200, 500, 503, 429] {
        assert!(
            runs[0].contains(&status),
            "{status} never seen in {:?}",
            runs[0]
        );
    }
}

#[tokio::test]
async fn iam_down_and_slow() {
    let sim = Sim::start(SimOptions {
        faults: Faults {
            iam_down: true,
            iam_latency_ms: 100,
            ..Faults::default()
        },
        ..opts()
    })
    .await
    .unwrap();
    let start = Instant::now();
    let res = client()
        .post(format!("{}/v3/auth/tokens", sim.url()))
        .json(&auth_body("sim-user", "sim-password", PROJECT))
        .send()
        .await
        .unwrap();
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_eq!(res.status(), 503);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], 503);
}
