//! IAM token route.

use super::*;
use std::time::Duration;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

#[tokio::test]
async fn password_auth_issues_a_project_token() {
    let sim = Sim::start(opts()).await.unwrap();
    let res = client()
        .post(format!("{}/v3/auth/tokens", sim.url()))
        .json(&auth_body("sim-user", "sim-password", PROJECT))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    let token = res.headers()["x-subject-token"].to_str().unwrap();
    assert!(token.len() >= 64);
    let body: Value = res.json().await.unwrap();
    let expires_at = body["token"]["expires_at"].as_str().unwrap();
    // e.g. 2026-11-27T09:05:22.701000Z
    assert_eq!(expires_at.len(), 27, "{expires_at}");
    assert!(expires_at.ends_with('Z'));
    let expires = OffsetDateTime::parse(expires_at, &Rfc3339).unwrap();
    let ttl = expires - OffsetDateTime::now_utc();
    assert!(ttl > time::Duration::hours(24) - time::Duration::minutes(1));
    assert!(ttl <= time::Duration::hours(24));
    assert_eq!(body["token"]["project"]["id"], PROJECT);
    assert_eq!(body["token"]["user"]["domain"]["name"], "sim-domain");
    let stats = sim.stats();
    assert_eq!((stats.iam_requests, stats.tokens_issued), (1, 1));
    assert_eq!(stats.responses_by_status[&201], 1);
}

#[tokio::test]
async fn wrong_credentials_and_bad_bodies() {
    let sim = Sim::start(opts()).await.unwrap();
    let c = client();
    let url = format!("{}/v3/auth/tokens", sim.url());
    let res = c
        .post(&url)
        .json(&auth_body("sim-user", "nope", PROJECT))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert!(res.headers().get("x-subject-token").is_none());
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error"]["code"], 401);

    let mut no_scope = auth_body("sim-user", "sim-password", PROJECT);
    no_scope["auth"].as_object_mut().unwrap().remove("scope");
    let mut token_method = auth_body("sim-user", "sim-password", PROJECT);
    token_method["auth"]["identity"]["methods"] = json!(["token"]);
    let mut no_domain = auth_body("sim-user", "sim-password", PROJECT);
    no_domain["auth"]["identity"]["password"]["user"]
        .as_object_mut()
        .unwrap()
        .remove("domain");
    for bad in [no_scope, token_method, no_domain] {
        let res = c.post(&url).json(&bad).send().await.unwrap();
        assert_eq!(res.status(), 400, "{bad}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], 400);
    }
    let res = c.post(&url).body("{").send().await.unwrap();
    assert_eq!(res.status(), 400);
    let stats = sim.stats();
    assert_eq!(
        (stats.iam_requests, stats.tokens_issued, stats.unauthorized),
        (5, 0, 1)
    );
}

#[tokio::test]
async fn tokens_expire() {
    let sim = Sim::start(SimOptions {
        token_ttl: Duration::from_secs(1),
        ..opts()
    })
    .await
    .unwrap();
    let c = client();
    let t = token(&c, &sim, PROJECT).await;
    let p = phone_id(PROJECT, 0);
    assert_eq!(
        stop_call(&c, &sim, &t, PROJECT, &[&p])
            .await
            .unwrap()
            .status(),
        200
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let res = stop_call(&c, &sim, &t, PROJECT, &[&p]).await.unwrap();
    assert_eq!(res.status(), 401);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["error_code"], "APIG.0301");
}

#[tokio::test]
async fn a_changed_password_is_accepted_and_the_old_one_refused() {
    let sim = Sim::start(opts()).await.unwrap();
    let c = client();
    let url = format!("{}/v3/auth/tokens", sim.url());
    let issue = async |password: &str| {
        c.post(&url)
            .json(&auth_body("sim-user", password, PROJECT))
            .send()
            .await
            .unwrap()
            .status()
    };
    assert_eq!(issue("sim-password").await, 201);
    sim.set_iam_password("rotated-password");
    assert_eq!(issue("sim-password").await, 401);
    assert_eq!(issue("rotated-password").await, 201);
}
