//! Batch-stop and job query.

use super::*;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test]
async fn batch_stop_mixed_ids() {
    let sim = Sim::start(opts()).await.unwrap();
    let c = client();
    let t = token(&c, &sim, PROJECT).await;
    let (p0, p7) = (phone_id(PROJECT, 0), phone_id(PROJECT, 7));
    let beyond = phone_id(PROJECT, 100);
    let foreign = phone_id(OTHER, 1);
    let ids = [p0.as_str(), "not-a-phone", &beyond, &foreign, &p7, &p0];
    let res = c
        .post(format!(
            "{}/v1/{PROJECT}/cloud-phone/phones/batch-stop",
            sim.url()
        ))
        .header("X-Auth-Token", &t)
        .header("X-Request-Id", "caller-42")
        .json(&json!({ "phone_ids": ids }))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.headers()["x-request-id"], "caller-42");
    let body: Value = res.json().await.unwrap();
    assert!(parse_hex32(body["request_id"].as_str().unwrap()).is_some());
    let jobs = body["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), ids.len());
    for (entry, id) in jobs.iter().zip(ids) {
        assert_eq!(entry["phone_id"], id);
    }
    let codes: Vec<_> = jobs
        .iter()
        .map(|j| j.get("error_code").and_then(Value::as_str))
        .collect();
    assert_eq!(
        codes,
        [
            None,
            Some("CPS.0004"),
            Some("CPS.0005"),
            Some("CPS.0005"),
            None,
            Some("CPS.0010")
        ]
    );
    for j in jobs {
        assert_eq!(
            j.get("job_id").is_some(),
            j.get("error_code").is_none(),
            "{j}"
        );
        assert_eq!(
            j.get("error_msg").is_some(),
            j.get("error_code").is_some(),
            "{j}"
        );
    }
    assert_eq!(jobs[1]["error_msg"], "invalid phone id");
    assert_eq!(jobs[2]["error_msg"], "phone not found");
    // The second p0 finds it stopping: no second job.
    assert_eq!(
        jobs[5]["error_msg"],
        "the phone's status does not allow the operation"
    );
    assert_eq!(sim.phone_state(PROJECT, &p0), Some(PhoneState::Stopping));
    assert_eq!(
        sim.phone_state(PROJECT, &phone_id(PROJECT, 1)),
        Some(PhoneState::Running)
    );
    assert_eq!(sim.phone_state(PROJECT, &beyond), None);
    assert_eq!(sim.phone_state(OTHER, &p0), None);
    let stats = sim.stats();
    assert_eq!(
        (
            stats.batch_stop_ids,
            stats.max_ids_per_call,
            stats.stopped_phones
        ),
        (6, 6, 2)
    );
}

#[tokio::test]
async fn batch_stop_refusals() {
    let sim = Sim::start(SimOptions {
        max_batch_size: 3,
        ..opts()
    })
    .await
    .unwrap();
    let c = client();
    let t = token(&c, &sim, PROJECT).await;
    let ids: Vec<String> = (0..4).map(|i| phone_id(PROJECT, i)).collect();
    let ids: Vec<&str> = ids.iter().map(String::as_str).collect();

    let res = stop_call(&c, &sim, &t, PROJECT, &ids).await.unwrap();
    assert_eq!(res.status(), 400);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error_code"], "CPS.0001");
    assert!(body["error_msg"].as_str().unwrap().contains('3'), "{body}");
    assert_eq!(sim.phone_state(PROJECT, ids[0]), Some(PhoneState::Running));
    assert_eq!(
        stop_call(&c, &sim, &t, PROJECT, &ids[..3])
            .await
            .unwrap()
            .status(),
        200
    );

    let url = format!("{}/v1/{PROJECT}/cloud-phone/phones/batch-stop", sim.url());
    for (bad, code) in [
        (r#"{"phone_ids":[]}"#, "CPS.0009"),
        (r#"{"phone_ids":[1]}"#, "CPS.0001"),
        (r#"{"ids":["a"]}"#, "CPS.0001"),
        ("[", "CPS.0001"),
        ("", "CPS.0001"),
    ] {
        let res = c
            .post(&url)
            .header("X-Auth-Token", &t)
            .body(bad)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 400, "{bad}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error_code"], code, "{bad}");
    }

    // Tokens are bound to their project; a bad project id is not a project.
    let res = stop_call(&c, &sim, &t, OTHER, &ids[..1]).await.unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error_code"], "APIG.0301");
    assert_eq!(body["error_msg"], TOKEN_INVALID);
    let res = stop_call(&c, &sim, "", PROJECT, &ids[..1]).await.unwrap();
    assert_eq!(res.status(), 401);
    let odd = "Project-1";
    let t_odd = token(&c, &sim, odd).await;
    let res = stop_call(&c, &sim, &t_odd, odd, &ids[..1]).await.unwrap();
    assert_eq!(res.status(), 404);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error_code"], "CPS.0002");
    assert_eq!(sim.stats().unauthorized, 2);
}

#[tokio::test]
async fn revoked_tokens_are_refused() {
    let sim = Sim::start(opts()).await.unwrap();
    let c = client();
    let t = token(&c, &sim, PROJECT).await;
    let p = phone_id(PROJECT, 0);
    sim.revoke_tokens();
    assert_eq!(
        stop_call(&c, &sim, &t, PROJECT, &[&p])
            .await
            .unwrap()
            .status(),
        401
    );
    let fresh = token(&c, &sim, PROJECT).await;
    assert_eq!(
        stop_call(&c, &sim, &fresh, PROJECT, &[&p])
            .await
            .unwrap()
            .status(),
        200
    );
    assert_eq!(
        stop_call(&c, &sim, &t, PROJECT, &[&p])
            .await
            .unwrap()
            .status(),
        401
    );
}

#[tokio::test]
async fn jobs_run_then_succeed() {
    let sim = Sim::start(opts()).await.unwrap();
    let c = client();
    let t = token(&c, &sim, PROJECT).await;
    let p = phone_id(PROJECT, 2);
    let body: Value = stop_call(&c, &sim, &t, PROJECT, &[&p])
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let job_id = body["jobs"][0]["job_id"].as_str().unwrap().to_owned();
    assert!(parse_hex32(&job_id).is_some());
    let query = |project: &'static str, token: String, job: String| {
        let req = c
            .get(format!("{}/v1/{project}/cloud-phone/jobs/{job}", sim.url()))
            .header("X-Auth-Token", token);
        async move { req.send().await.unwrap() }
    };

    let res = query(PROJECT, t.clone(), job_id.clone()).await;
    assert_eq!(res.status(), 200);
    let running: Value = res.json().await.unwrap();
    assert_eq!(running["status"], 1);
    assert_eq!(running["job_id"], job_id.as_str());
    assert_eq!(running["phone_id"], p.as_str());
    assert!(running["end_time"].is_null() && running["error_code"].is_null());
    assert!(running["error_msg"].is_null());
    assert!(running["begin_time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(sim.phone_state(PROJECT, &p), Some(PhoneState::Stopping));

    tokio::time::sleep(Duration::from_millis(250)).await;
    let done: Value = query(PROJECT, t.clone(), job_id.clone())
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(done["status"], 2);
    assert!(done["end_time"].as_str().unwrap() > done["begin_time"].as_str().unwrap());
    assert_ne!(done["request_id"], running["request_id"]);
    assert_eq!(sim.phone_state(PROJECT, &p), Some(PhoneState::Stopped));

    let unknown = query(PROJECT, t.clone(), "0".repeat(32)).await;
    assert_eq!(unknown.status(), 404);
    let body: Value = unknown.json().await.unwrap();
    assert_eq!(body["error_code"], "CPS.0006");
    let other = token(&c, &sim, OTHER).await;
    assert_eq!(query(OTHER, other, job_id.clone()).await.status(), 404);
    assert_eq!(query(OTHER, t, job_id).await.status(), 401);
    assert_eq!(sim.stats().job_queries, 5);
}
