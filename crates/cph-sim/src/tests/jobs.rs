//! Job list, phone status, failing jobs.

use super::*;

/// Stops `ids` with a token; the answer's request id and job ids.
async fn stop(c: &reqwest::Client, sim: &Sim, t: &str, ids: &[&str]) -> (String, Vec<Value>) {
    let res = stop_call(c, sim, t, PROJECT, ids).await.unwrap();
    assert_eq!(res.status(), 200);
    let body: Value = res.json().await.unwrap();
    let jobs = body["jobs"].as_array().unwrap().clone();
    (body["request_id"].as_str().unwrap().to_owned(), jobs)
}

fn list(request_ids: &str, extra: &str) -> String {
    format!("/v1/{PROJECT}/cloud-phone/jobs?request_ids={request_ids}{extra}")
}

#[tokio::test]
async fn job_list_follows_batches() {
    let sim = Sim::start(opts()).await.unwrap();
    let c = client();
    let t = token(&c, &sim, PROJECT).await;
    let ids: Vec<String> = (0..5).map(|i| phone_id(PROJECT, i)).collect();
    let (r1, j1) = stop(&c, &sim, &t, &[&ids[0], "bad", &ids[1]]).await;
    let (r2, j2) = stop(&c, &sim, &t, &[&ids[2], &ids[3], &ids[4], &ids[0]]).await;
    assert_eq!(j2[3]["error_code"], "CPS.0010");

    let (status, body) = get(
        &c,
        &sim,
        &t,
        &list(&format!("{r2},{r1},{}", "f".repeat(32)), ""),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["request_id"].as_str().unwrap().len(), 32);
    assert_eq!(body["count"], 5);
    let jobs = body["jobs"].as_array().unwrap();
    let got: Vec<(&str, &str)> = jobs
        .iter()
        .map(|j| {
            (
                j["request_id"].as_str().unwrap(),
                j["job_id"].as_str().unwrap(),
            )
        })
        .collect();
    let want: Vec<(&str, &str)> = [
        (&r2, &j2[0]),
        (&r2, &j2[1]),
        (&r2, &j2[2]),
        (&r1, &j1[0]),
        (&r1, &j1[2]),
    ]
    .iter()
    .map(|(r, j)| (r.as_str(), j["job_id"].as_str().unwrap()))
    .collect();
    assert_eq!(got, want);
    assert_eq!(jobs[3]["phone_id"], ids[0].as_str());
    for j in jobs {
        assert_eq!(j["status"], 1, "{j}");
        assert!(j["end_time"].is_null() && j["error_code"].is_null());
        assert!(j["begin_time"].as_str().unwrap().ends_with('Z'));
    }

    // Pages.
    let (_, page) = get(
        &c,
        &sim,
        &t,
        &list(&format!("{r2},{r1}"), "&offset=2&limit=2"),
    )
    .await;
    let page: Vec<&Value> = page["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|j| &j["job_id"])
        .collect();
    assert_eq!(page, [&j2[2]["job_id"], &j1[0]["job_id"]]);
    let (_, past) = get(&c, &sim, &t, &list(&r1, "&offset=9")).await;
    assert_eq!(past["jobs"].as_array().unwrap().len(), 0);

    // Jobs end.
    tokio::time::sleep(Duration::from_millis(250)).await;
    let (_, done) = get(&c, &sim, &t, &list(&r1, "")).await;
    assert!(
        done["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .all(|j| j["status"] == 2 && j["end_time"].is_string())
    );

    // Another project sees none of them; a token of another project is refused.
    let other = token(&c, &sim, OTHER).await;
    let path = format!("/v1/{OTHER}/cloud-phone/jobs?request_ids={r1}");
    let (status, body) = get(&c, &sim, &other, &path).await;
    assert_eq!((status, body["count"].as_u64()), (200, Some(0)));
    let (status, body) = get(&c, &sim, &other, &list(&r1, "")).await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (401, Some("APIG.0301"))
    );

    // Parameters.
    let many: Vec<String> = (0..21).map(|i| format!("{i:032x}")).collect();
    for bad in [
        list(&many.join(","), ""),
        list(&r1, "&limit=0"),
        list(&r1, "&limit=101"),
        list(&r1, "&offset=-1"),
        format!("/v1/{PROJECT}/cloud-phone/jobs"),
    ] {
        let (status, body) = get(&c, &sim, &t, &bad).await;
        assert_eq!(status, 400, "{bad}: {body}");
        assert_eq!(body["error_code"], "CPS.0004", "{bad}");
        assert!(
            body["error_msg"]
                .as_str()
                .unwrap()
                .starts_with("invalid request parameter")
        );
    }
    let (status, _) = get(&c, &sim, &t, &list(&many[..20].join(","), "&limit=100")).await;
    assert_eq!(status, 200);
    assert_eq!(sim.stats().job_list_requests, 12);
}

#[tokio::test]
async fn failed_stops_can_be_retried_and_stopped_phones_cannot() {
    let sim = Sim::start(SimOptions {
        faults: Faults {
            job_failure_rate: 1.0,
            ..Faults::default()
        },
        ..opts()
    })
    .await
    .unwrap();
    let c = client();
    let t = token(&c, &sim, PROJECT).await;
    let p = phone_id(PROJECT, 7);
    let detail = format!("/v1/{PROJECT}/cloud-phone/phones/{p}");
    let status_of = |body: Value| body["status"].as_i64().unwrap();
    assert_eq!(status_of(get(&c, &sim, &t, &detail).await.1), 2);

    let (r1, jobs) = stop(&c, &sim, &t, &[&p]).await;
    let job = jobs[0]["job_id"].as_str().unwrap().to_owned();
    assert_eq!(sim.phone_state(PROJECT, &p), Some(PhoneState::Stopping));
    assert_eq!(status_of(get(&c, &sim, &t, &detail).await.1), 7);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(sim.phone_state(PROJECT, &p), Some(PhoneState::StopFailed));
    assert_eq!(status_of(get(&c, &sim, &t, &detail).await.1), -9);
    let (_, failed) = get(
        &c,
        &sim,
        &t,
        &format!("/v1/{PROJECT}/cloud-phone/jobs/{job}"),
    )
    .await;
    assert_eq!(failed["status"], -1);
    assert_eq!(failed["error_code"], "CPS.0011");
    assert_eq!(failed["error_msg"], "stop failed");
    assert!(failed["end_time"].is_string());
    let (_, listed) = get(&c, &sim, &t, &list(&r1, "")).await;
    assert_eq!(listed["jobs"][0]["status"], -1);
    assert_eq!(listed["jobs"][0]["error_code"], "CPS.0011");

    // A stop-failed phone can be stopped again; this time it succeeds.
    sim.set_faults(Faults::default());
    let (_, again) = stop(&c, &sim, &t, &[&p]).await;
    assert_ne!(again[0]["job_id"].as_str().unwrap(), job);
    // Stopping, then stopped: both refuse another stop.
    for state in [PhoneState::Stopping, PhoneState::Stopped] {
        assert_eq!(sim.phone_state(PROJECT, &p), Some(state));
        let (_, refused) = stop(&c, &sim, &t, &[&p]).await;
        assert_eq!(refused[0]["error_code"], "CPS.0010");
        assert_eq!(
            refused[0]["error_msg"],
            "the phone's status does not allow the operation"
        );
        assert!(refused[0].get("job_id").is_none());
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(status_of(get(&c, &sim, &t, &detail).await.1), 8);
    assert_eq!(sim.stats().stopped_phones, 2);

    // Unknown phones have no detail.
    let (status, body) = get(
        &c,
        &sim,
        &t,
        &format!("/v1/{PROJECT}/cloud-phone/phones/nope"),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("CPS.0004"))
    );
}

#[tokio::test]
async fn job_failures_follow_the_seed() {
    let faults = Faults {
        seed: 11,
        job_failure_rate: 0.5,
        ..Faults::default()
    };
    let mut runs = Vec::new();
    for _ in 0..2 {
        let sim = Sim::start(SimOptions {
            job_duration: Duration::ZERO,
            faults: faults.clone(),
            ..opts()
        })
        .await
        .unwrap();
        let c = client();
        let t = token(&c, &sim, PROJECT).await;
        let ids: Vec<String> = (0..40).map(|i| phone_id(PROJECT, i)).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();
        stop(&c, &sim, &t, &ids).await;
        let states: Vec<_> = ids
            .iter()
            .map(|p| sim.phone_state(PROJECT, p).unwrap())
            .collect();
        runs.push(states);
    }
    assert_eq!(runs[0], runs[1]);
    assert!(runs[0].contains(&PhoneState::StopFailed) && runs[0].contains(&PhoneState::Stopped));
}
