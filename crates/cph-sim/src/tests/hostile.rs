//! Misbehaving-upstream faults: poisoned batches, oversized and odd answers.

use super::*;

/// A sim with `faults`, a client and a token.
async fn with(faults: Faults) -> (Sim, reqwest::Client, String) {
    let sim = Sim::start(opts()).await.unwrap();
    let c = client();
    let t = token(&c, &sim, PROJECT).await;
    sim.set_faults(faults);
    sim.reset_stats();
    (sim, c, t)
}

#[tokio::test]
async fn poisoned_batches_are_refused_whole() {
    let (p0, p1, p2) = (
        phone_id(PROJECT, 0),
        phone_id(PROJECT, 1),
        phone_id(PROJECT, 2),
    );
    let (sim, c, t) = with(Faults {
        poison_ids: vec![p1.clone()],
        ..Faults::default()
    })
    .await;
    let res = stop_call(&c, &sim, &t, PROJECT, &[&p0, &p1]).await.unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error_code"], "CPS.0004");
    assert_eq!(body["error_msg"], "invalid phone id in the request");
    assert_eq!(body["request_id"].as_str().unwrap().len(), 32);
    assert_eq!(sim.phone_state(PROJECT, &p0), Some(PhoneState::Running));
    let res = stop_call(&c, &sim, &t, PROJECT, &[&p0, &p2]).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(sim.stats().stopped_phones, 2);

    // Everything refused, with a huge error_msg.
    sim.set_faults(Faults {
        reject_all_400: true,
        oversize_error_msg_bytes: 100_000,
        ..Faults::default()
    });
    let res = stop_call(&c, &sim, &t, PROJECT, &[&phone_id(PROJECT, 3)])
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    let msg = body["error_msg"].as_str().unwrap();
    assert_eq!(msg.len(), 100_000);
    assert!(msg.starts_with("invalid phone id in the request"));
    assert_eq!(body["error_code"], "CPS.0004");
    assert_eq!(sim.stats().stopped_phones, 2);
}

#[tokio::test]
async fn oversized_answers_are_streamed() {
    let (sim, c, t) = with(Faults {
        oversize_body_bytes: 3_000_000,
        ..Faults::default()
    })
    .await;
    let p = phone_id(PROJECT, 0);
    let res = stop_call(&c, &sim, &t, PROJECT, &[&p]).await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.content_length(), Some(3_000_000));
    let bytes = res.bytes().await.unwrap();
    assert_eq!(bytes.len(), 3_000_000);
    let body: Value = serde_json::from_slice(&bytes).unwrap();
    let job = body["jobs"][0]["job_id"].as_str().unwrap().to_owned();
    assert_eq!(body["jobs"][0]["phone_id"], p.as_str());

    sim.set_faults(Faults {
        oversize_body_bytes: 1_000_000,
        oversize_chunked: true,
        ..Faults::default()
    });
    let url = format!("{}/v1/{PROJECT}/cloud-phone/jobs/{job}", sim.url());
    let res = c.get(url).header("X-Auth-Token", &t).send().await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.content_length(), None);
    assert_eq!(res.headers()["transfer-encoding"], "chunked");
    let body: Value = serde_json::from_slice(&res.bytes().await.unwrap()).unwrap();
    assert_eq!(body["job_id"], job.as_str());
    assert!(body["padding"].as_str().unwrap().len() > 999_000);
}

#[tokio::test]
async fn weird_entries_and_201() {
    let (sim, c, t) = with(Faults {
        weird_entries: true,
        status_201: true,
        ..Faults::default()
    })
    .await;
    let ids: Vec<String> = (0..4).map(|i| phone_id(PROJECT, i)).collect();
    let mut req: Vec<&str> = ids.iter().map(String::as_str).collect();
    req.insert(1, "bad-id");
    let res = stop_call(&c, &sim, &t, PROJECT, &req).await.unwrap();
    assert_eq!(res.status(), 201);
    let body: Value = res.json().await.unwrap();
    let jobs = body["jobs"].as_array().unwrap();
    let phones: Vec<&str> = jobs
        .iter()
        .map(|j| j["phone_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        phones,
        [&*ids[0], "bad-id", &ids[1], &ids[2], &ids[2], &ids[3]]
    );
    // 1st job: job_id and error_code together.
    assert_eq!(jobs[0]["job_id"].as_str().unwrap().len(), 32);
    assert_eq!(jobs[0]["error_code"], "CPS.0003");
    // Error entries are left alone.
    assert_eq!(jobs[1]["error_code"], "CPS.0004");
    // 2nd job: an empty job_id.
    assert_eq!(jobs[2]["job_id"], "");
    assert!(jobs[2].get("error_code").is_none());
    // 3rd job: an error entry, then the job.
    assert!(jobs[3].get("job_id").is_none());
    assert_eq!(jobs[3]["error_code"], "CPS.0003");
    assert_eq!(jobs[4]["job_id"].as_str().unwrap().len(), 32);
    assert!(jobs[4].get("error_code").is_none());
    // The rest is normal.
    assert!(jobs[5].get("error_code").is_none() && jobs[5]["job_id"].is_string());
    for id in &ids {
        assert_eq!(sim.phone_state(PROJECT, id), Some(PhoneState::Stopping));
    }
    assert_eq!(sim.stats().responses_by_status[&201], 1);
}

#[tokio::test]
async fn job_answers_that_are_not_json() {
    let (sim, c, t) = with(Faults::default()).await;
    let body: Value = stop_call(&c, &sim, &t, PROJECT, &[&phone_id(PROJECT, 0)])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let (job, request_id) = (&body["jobs"][0]["job_id"], &body["request_id"]);
    sim.set_faults(Faults {
        job_query_not_json: true,
        ..Faults::default()
    });
    for path in [
        format!("/v1/{PROJECT}/cloud-phone/jobs/{}", job.as_str().unwrap()),
        format!(
            "/v1/{PROJECT}/cloud-phone/jobs?request_ids={}",
            request_id.as_str().unwrap()
        ),
    ] {
        let res = c
            .get(format!("{}{path}", sim.url()))
            .header("X-Auth-Token", &t)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert!(
            res.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/plain")
        );
        let text = res.text().await.unwrap();
        assert!(serde_json::from_str::<Value>(&text).is_err(), "{text}");
    }
    // Errors stay JSON.
    let (status, body) = get(
        &c,
        &sim,
        &t,
        &format!("/v1/{PROJECT}/cloud-phone/jobs/{}", "0".repeat(32)),
    )
    .await;
    assert_eq!(
        (status, body["error_code"].as_str()),
        (404, Some("CPS.0006"))
    );
}
