//! What an operator sees: `GET /admin/v1/status` (tenants revision, source,
//! count, last reload error; store; JWKS; each credential's last error with
//! IAM's own answer), `cphgw_build_info` and `cphgw_tenants_revision`, and
//! request log lines that name the caller (`sub`), with the phone ids at
//! debug level.

use std::time::Duration;

use cph_sim::Sim;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::process::GatewayProcess;
use crate::helpers::*;

async fn status_with(app: &TestApp, token: Option<&str>) -> (StatusCode, Value) {
    let mut req = app.client.get(format!("{}/admin/v1/status", app.admin_url));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.expect("status answers");
    let status = resp.status();
    (status, resp.json().await.expect("JSON"))
}

async fn status(app: &TestApp) -> Value {
    let (code, body) = status_with(app, Some(&admin_token())).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    body
}

fn is_rfc3339(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).is_ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_this_replicas_view_without_secrets() {
    let app = TestApp::spawn().await;
    let (code, body) = status_with(&app, None).await;
    assert_gateway_error(code, &body, StatusCode::UNAUTHORIZED, "CPHGW.0101");
    let (code, body) = status_with(&app, Some(&caller_token(TENANT_A))).await;
    assert_gateway_error(code, &body, StatusCode::FORBIDDEN, "CPHGW.0103");

    let body = status(&app).await;
    assert_eq!(body["version"], env!("CARGO_PKG_VERSION"), "{body}");
    let tenants = &body["tenants"];
    assert_eq!(tenants["source"], "file", "{body}");
    assert_eq!(tenants["count"], 2, "{body}");
    let revision = tenants["revision"].as_u64().expect("revision is a number");
    assert!(revision < 1 << 53, "{revision}");
    assert!(is_rfc3339(&tenants["loaded_at"]), "{body}");
    assert!(tenants["last_error"].is_null(), "{body}");
    assert_eq!(body["store"], json!({"kind": "none", "up": true}));
    assert_eq!(
        body["jwks"],
        json!({"keys": 0, "fetched_at": null, "last_error": null})
    );
    assert_eq!(
        body["credentials"],
        json!({"default": {"kind": "password", "last_error": null}})
    );
    let text = body.to_string();
    for secret in [JWT_SECRET, IAM_PASSWORD] {
        assert!(!text.contains(secret), "{text}");
    }

    let metrics = app.metrics().await;
    let build = format!(
        "cphgw_build_info{{version=\"{}\"}}",
        env!("CARGO_PKG_VERSION")
    );
    assert_eq!(sample(&metrics, &build), Some(1.0), "{metrics}");
    assert_eq!(
        sample(&metrics, "cphgw_tenants_revision"),
        Some(revision as f64),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_revision_follows_the_mapping_not_the_file() {
    let one = TestApp::spawn().await;
    // The same mapping written otherwise: other order, comments, spacing.
    let reordered = format!(
        "# the same mapping\n\n{}\n\n# acme\n{}",
        tenant_toml(TENANT_B, PROJECT_B, &[(PROJECT_B, "cn-east-3", "default")]),
        tenant_toml(
            TENANT_A,
            PROJECT_A,
            &[
                (PROJECT_A, "cn-east-3", "default"),
                (PROJECT_A2, "cn-north-4", "default"),
            ],
        )
        .replace(" = ", "   =   "),
    );
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("tenants.toml");
    std::fs::write(&file, &reordered).expect("write");
    let two = TestApp::spawn_at(dir, file, TestOptions::default()).await;
    let (a, b) = (status(&one).await, status(&two).await);
    let revision = a["tenants"]["revision"].clone();
    assert_eq!(revision, b["tenants"]["revision"], "{a}\n{b}");

    // A change of the mapping changes it, on disk and in the gauge.
    let resp = one
        .client
        .put(format!("{}/admin/v1/tenants/initech", one.admin_url))
        .bearer_auth(admin_token())
        .json(&json!({"default_project": PROJECT_B, "projects": [
            {"project_id": PROJECT_B, "region": "cn-east-3", "credential": "default"}]}))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let changed = status(&one).await;
    assert_ne!(changed["tenants"]["revision"], revision, "{changed}");
    assert_eq!(changed["tenants"]["count"], 3, "{changed}");
    assert!(
        changed["tenants"]["loaded_at"].as_str() >= a["tenants"]["loaded_at"].as_str(),
        "{changed}"
    );
    let gauge = sample(&one.metrics().await, "cphgw_tenants_revision");
    assert_eq!(gauge, changed["tenants"]["revision"].as_f64());

    // A file that cannot be read is the last error; the mapping stays.
    std::fs::write(&one.tenants_file, "[tenants.acme\nbroken").expect("write");
    let seen = eventually(Duration::from_secs(5), async || {
        status(&one).await["tenants"]["last_error"].is_string()
    })
    .await;
    assert!(seen, "no last_error after an invalid file");
    let broken = status(&one).await;
    assert_eq!(
        broken["tenants"]["revision"],
        changed["tenants"]["revision"]
    );
    // Fixed: the error is gone, and the revision is the first replica's.
    std::fs::write(&one.tenants_file, default_tenants()).expect("write");
    let fixed = eventually(Duration::from_secs(5), async || {
        status(&one).await["tenants"]["last_error"].is_null()
    })
    .await;
    assert!(fixed, "last_error stayed after the file was fixed");
    assert_eq!(status(&one).await["tenants"]["revision"], revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_failures_name_the_credential_and_carry_iams_answer() {
    const WRONG: &str = "not-the-iam-password";
    let app = TestApp::spawn_with(TestOptions::default().env("TEST_IAM_PASSWORD", WRONG)).await;
    let ids = app.phones(PROJECT_A, 0, 2);
    let (code, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let entry = body["jobs"][0]["error_msg"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    for part in [
        "credential \"default\"",
        "401",
        "The username or password is wrong.",
    ] {
        assert!(entry.contains(part), "{part:?} not in {entry:?}");
    }
    assert!(!body.to_string().contains(WRONG), "{body}");
    // Right after, while the project backs off, the answer still says why.
    let (code, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(code, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    let again = body["jobs"][0]["error_msg"].as_str().unwrap_or_default();
    assert!(
        again.contains("credential \"default\"")
            && again.contains("The username or password is wrong."),
        "{again}"
    );

    // /readyz does not fail because IAM does; the status says why.
    let ready = app
        .client
        .get(format!("{}/readyz", app.admin_url))
        .send()
        .await
        .expect("readyz");
    assert_eq!(ready.status(), StatusCode::OK);
    let state = status(&app).await;
    let error = state["credentials"]["default"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("The username or password is wrong.") && error.contains("error_code 401"),
        "{state}"
    );
    assert!(!state.to_string().contains(WRONG));

    // IAM accepts the configured password again: the error clears.
    app.sim.set_iam_password(WRONG);
    let recovered = eventually(Duration::from_secs(10), async || {
        app.stop(&caller_token(TENANT_A), &ids).await.0 == StatusCode::OK
    })
    .await;
    assert!(recovered, "no success after IAM accepts the password");
    let state = status(&app).await;
    assert!(
        state["credentials"]["default"]["last_error"].is_null(),
        "{state}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn request_log_lines_name_the_caller_and_debug_lists_the_phone_ids() {
    let sim = Sim::start(Default::default()).await.expect("sim");
    let mut gw =
        GatewayProcess::start_against(&sim, &[("RUST_LOG", "debug"), ("LOG_FORMAT", "json")]).await;
    let mut c = claims(Some(TENANT_A), &[]);
    c["sub"] = "billing-service".into();
    let token = mint(jsonwebtoken::Algorithm::HS256, &c, None);
    let ids: Vec<String> = (0..3).map(|i| cph_sim::phone_id(PROJECT_A, i)).collect();
    let resp = client()
        .post(format!("{}{STOP}", gw.url))
        .bearer_auth(&token)
        .header("X-Request-Id", "log-caller-1")
        .json(&json!({ "phone_ids": ids }))
        .send()
        .await
        .expect("stop");
    assert_eq!(resp.status(), StatusCode::OK);
    gw.terminate().await;
    let events: Vec<Value> = gw
        .logs()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .filter(|e: &Value| e.to_string().contains("log-caller-1"))
        .collect();
    let request = events
        .iter()
        .find(|e| e["message"] == "request")
        .unwrap_or_else(|| panic!("no request line: {events:?}"));
    assert_eq!(request["caller"], "billing-service", "{request}");
    assert_eq!(request["tenant"], TENANT_A, "{request}");
    assert_eq!(request["span"]["request_id"], "log-caller-1", "{request}");
    assert_eq!(request["ids"], 3, "{request}");
    assert_eq!(request["stopped"], 3, "{request}");
    assert_eq!(request["upstream_calls"], 1, "{request}");
    let listed = events
        .iter()
        .find(|e| e["message"] == "phone ids of the request")
        .unwrap_or_else(|| panic!("no phone ids line: {events:?}"));
    assert_eq!(listed["level"], "DEBUG", "{listed}");
    assert_eq!(listed["phone_ids"], ids.join(","), "{listed}");
    assert!(!gw.logs().contains(&token), "the token is in the logs");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_aksk_credential_shows_its_refused_signature() {
    let tenants = tenant_toml(
        TENANT_A,
        PROJECT_A,
        &[
            (PROJECT_A, "cn-east-3", "default"),
            (PROJECT_A2, "cn-north-4", "signed"),
        ],
    );
    let app = TestApp::spawn_with(
        TestOptions::default()
            .tenants(&tenants)
            .set("iam.credentials.signed.kind", "aksk")
            .set("iam.credentials.signed.access_key_env", "TEST_AK")
            .set("iam.credentials.signed.secret_key_env", "TEST_SK")
            .env("TEST_AK", cph_sim::DEFAULT_AK)
            .env("TEST_SK", "not-the-secret-key-of-the-simulator"),
    )
    .await;
    let state = status(&app).await;
    assert_eq!(
        state["credentials"]["signed"],
        json!({"kind": "aksk", "last_error": null})
    );
    let path = format!("/v1/{PROJECT_A2}/cloud-phone/phones/batch-stop");
    let (code, body) = app
        .stop_at(
            &path,
            &caller_token(TENANT_A),
            &app.phones(PROJECT_A2, 0, 1),
        )
        .await;
    // A 401 to a signed call is final: 502, each phone with CPH's error.
    assert_eq!(code, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(body["jobs"][0]["error_code"], "APIGW.0301", "{body}");
    let state = status(&app).await;
    let error = state["credentials"]["signed"]["last_error"]
        .as_str()
        .unwrap_or_default();
    assert!(
        error.contains("credential \"signed\"") && error.contains("refused the AK/SK signature"),
        "{state}"
    );
    assert!(
        state["credentials"]["default"]["last_error"].is_null(),
        "{state}"
    );
    assert!(!state.to_string().contains("not-the-secret-key"), "{state}");
}
