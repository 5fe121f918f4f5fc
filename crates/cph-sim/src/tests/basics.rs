//! The handle: url, shutdown, stats, control endpoints.

use super::*;
use serde_json::Value;

#[tokio::test]
async fn url_and_shutdown() {
    let sim = Sim::start(opts()).await.unwrap();
    let url = sim.url();
    assert!(url.starts_with("http://127.0.0.1:"));
    let c = client();
    assert_eq!(
        c.get(format!("{url}/sim/v1/faults"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    sim.shutdown().await;
    assert!(
        client()
            .get(format!("{url}/sim/v1/faults"))
            .send()
            .await
            .is_err()
    );
}

#[tokio::test]
async fn in_flight_per_project_counts_concurrency() {
    let sim = Sim::start(SimOptions {
        faults: Faults {
            latency_ms: 200,
            ..Faults::default()
        },
        ..opts()
    })
    .await
    .unwrap();
    let c = client();
    let (a, b) = (token(&c, &sim, PROJECT).await, token(&c, &sim, OTHER).await);
    let (p0, o0) = (phone_id(PROJECT, 0), phone_id(OTHER, 0));
    let (p0, o0) = ([p0.as_str()], [o0.as_str()]);
    let calls = (0..5)
        .map(|_| stop_call(&c, &sim, &a, PROJECT, &p0))
        .chain((0..3).map(|_| stop_call(&c, &sim, &b, OTHER, &o0)));
    let probe = async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        sim.stats().in_flight
    };
    let (results, in_flight) = tokio::join!(futures_util::future::join_all(calls), probe);
    assert!(results.into_iter().all(|r| r.unwrap().status() == 200));
    assert_eq!(in_flight, 8);
    let stats = sim.stats();
    assert_eq!(stats.max_in_flight_per_project, 5);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.batch_stop_requests, 8);
    assert_eq!(stats.stopped_phones, 2);
    assert_eq!(stats.responses_by_status[&200], 8);
}

#[tokio::test]
async fn control_endpoints() {
    let sim = Sim::start(opts()).await.unwrap();
    let (c, url) = (client(), sim.url());

    let faults = Faults {
        seed: 7,
        error_429_rate: 0.5,
        retry_after_s: 3,
        ..Faults::default()
    };
    let res = c
        .put(format!("{url}/sim/v1/faults"))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.json::<Faults>().await.unwrap(), faults);
    assert_eq!(sim.faults(), faults);
    let got: Faults = c
        .get(format!("{url}/sim/v1/faults"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, faults);
    for bad in [r#"{"nope":1}"#, r#"{"error_500_rate":1.5}"#, "not json"] {
        let res = c
            .put(format!("{url}/sim/v1/faults"))
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
    }
    assert_eq!(sim.faults(), faults);
    sim.set_faults(Faults::default());

    let t = token(&c, &sim, PROJECT).await;
    let p1 = phone_id(PROJECT, 1);
    assert_eq!(
        stop_call(&c, &sim, &t, PROJECT, &[&p1])
            .await
            .unwrap()
            .status(),
        200
    );

    let page: Value = c
        .get(format!(
            "{url}/sim/v1/projects/{PROJECT}/phones?offset=0&limit=3"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let states: Vec<&str> = page["phones"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["running", "stopping", "running"]);
    assert_eq!(page["phones"][1]["phone_id"], p1.as_str());
    let tail: Value = c
        .get(format!(
            "{url}/sim/v1/projects/{PROJECT}/phones?offset=98&limit=50000"
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(tail["phones"].as_array().unwrap().len(), 2);

    let one: Value = c
        .get(format!("{url}/sim/v1/projects/{PROJECT}/phones/{p1}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["state"], "stopping");
    let missing = c
        .get(format!(
            "{url}/sim/v1/projects/{PROJECT}/phones/{}",
            phone_id(OTHER, 1)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);

    let stats: SimStats = c
        .get(format!("{url}/sim/v1/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!((stats.tokens_issued, stats.batch_stop_requests), (1, 1));
    let res = c
        .post(format!("{url}/sim/v1/stats/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    assert_eq!(sim.stats().batch_stop_requests, 0);
    assert!(sim.stats().responses_by_status.is_empty());
    assert_eq!(sim.phone_state(PROJECT, &p1), Some(PhoneState::Stopping));

    let res = c
        .post(format!("{url}/sim/v1/tokens/revoke"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 204);
    let res = stop_call(&c, &sim, &t, PROJECT, &[&p1]).await.unwrap();
    assert_eq!(res.status(), 401);
}
