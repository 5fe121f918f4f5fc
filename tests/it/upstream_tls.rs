//! How the gateway reaches Huawei: the whole stop path over HTTPS with a CA
//! made in the test (`upstream.ca_file`), an untrusted certificate failing
//! with an error that says so, and the proxy choice (`upstream.proxy`, else
//! `HTTPS_PROXY`/`HTTP_PROXY` with `NO_PROXY`).

use cph_sim::{DEFAULT_AK, DEFAULT_SK, SimTls};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::proxy::TestProxy;
use crate::helpers::tls::TestCa;
use crate::helpers::*;

/// acme: project A with the password credential, A2 with an AK/SK one.
fn mixed() -> TestOptions {
    TestOptions::default()
        .tenants(&tenant_toml(
            TENANT_A,
            PROJECT_A,
            &[
                (PROJECT_A, "cn-east-3", "default"),
                (PROJECT_A2, "cn-north-4", "signed"),
            ],
        ))
        .set("iam.credentials.signed.kind", "aksk")
        .set("iam.credentials.signed.access_key_env", "TEST_AK")
        .set("iam.credentials.signed.secret_key_env", "TEST_SK")
        .env("TEST_AK", DEFAULT_AK)
        .env("TEST_SK", DEFAULT_SK)
}

/// `mixed()` with the simulator serving HTTPS with a certificate from
/// `sim_ca`, and the gateway trusting `trusted` (written to a file in `dir`).
fn over_tls(dir: &tempfile::TempDir, sim_ca: &TestCa, trusted: &TestCa) -> TestOptions {
    let server = sim_ca.server("cph-sim");
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, trusted.pem()).unwrap();
    mixed()
        .sim(|o| {
            o.tls = Some(SimTls {
                cert_pem: server.cert.into_bytes(),
                key_pem: server.key.into_bytes(),
            })
        })
        .set("upstream.ca_file", &ca_file.display().to_string())
}

fn stop_a2() -> String {
    format!("/v1/{PROJECT_A2}/cloud-phone/phones/batch-stop")
}

fn all_jobs(body: &Value) -> bool {
    body["jobs"]
        .as_array()
        .is_some_and(|j| !j.is_empty() && j.iter().all(|e| e["job_id"].is_string()))
}

#[tokio::test]
async fn the_stop_path_runs_over_https_with_the_configured_ca() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test upstream CA");
    let app = TestApp::spawn_with(over_tls(&dir, &ca, &ca)).await;
    assert!(app.sim.url().starts_with("https://localhost:"));
    let token = caller_token(TENANT_A);

    // Password project: IAM token and batch-stop over HTTPS.
    let ids = app.phones(PROJECT_A, 0, 150);
    let (status, body) = app.stop(&token, &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    assert!(all_jobs(&body), "{body}");
    // Job query over HTTPS.
    let job = body["jobs"][0]["job_id"].as_str().unwrap();
    let (status, _, text) = app
        .get(&format!("/v1/cloud-phone/jobs/{job}"), &token)
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    // AK/SK project: signed over HTTPS (the signature covers localhost:PORT).
    let ids = app.phones(PROJECT_A2, 0, 3);
    let (status, body) = app.stop_at(&stop_a2(), &token, &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(all_jobs(&body), "{body}");

    let stats = app.sim.stats();
    assert_eq!(stats.tokens_issued, 1);
    assert_eq!((stats.batch_stop_requests, stats.signed_requests), (3, 1));
    assert_eq!(stats.job_queries, 1);
}

#[tokio::test]
async fn an_untrusted_certificate_fails_with_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let sim_ca = TestCa::new("the simulator's CA");
    let other = TestCa::new("some other CA");
    let app = TestApp::spawn_with(over_tls(&dir, &sim_ca, &other)).await;
    let token = caller_token(TENANT_A);

    // Password project: IAM cannot be reached, so no token.
    let ids = app.phones(PROJECT_A, 0, 2);
    let (status, body) = app.stop(&token, &ids).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_accounts_for(&ids, &body);
    let entry = &body["jobs"][0];
    assert_eq!(entry["error_code"], "CPHGW.0303", "{body}");
    let msg = entry["error_msg"].as_str().unwrap();
    assert!(msg.contains("TLS certificate problem"), "{msg}");
    assert!(msg.contains("upstream.ca_file"), "{msg}");

    // AK/SK project: CPH itself cannot be reached.
    let (status, body) = app.stop_at(&stop_a2(), &token, &ids).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    let entry = &body["jobs"][0];
    assert_eq!(entry["error_code"], "CPHGW.0301", "{body}");
    let msg = entry["error_msg"].as_str().unwrap();
    assert!(msg.contains("TLS certificate problem"), "{msg}");
    assert!(msg.contains("not stopped"), "{msg}");

    let stats = app.sim.stats();
    assert_eq!((stats.iam_requests, stats.batch_stop_requests), (0, 0));
}

#[tokio::test]
async fn https_calls_tunnel_through_the_configured_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("test upstream CA");
    let proxy = TestProxy::start().await;
    let app =
        TestApp::spawn_with(over_tls(&dir, &ca, &ca).set("upstream.proxy", &proxy.url())).await;
    let ids = app.phones(PROJECT_A, 0, 3);
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(all_jobs(&body), "{body}");
    let port = app.sim.addr().port();
    let seen = proxy.seen();
    assert!(!seen.is_empty(), "nothing went through the proxy");
    assert!(
        seen.iter()
            .all(|l| l.starts_with(&format!("CONNECT localhost:{port} "))),
        "{seen:?}"
    );
}

#[tokio::test]
async fn without_upstream_proxy_the_environment_decides() {
    let proxy = TestProxy::start().await;
    let app = TestApp::spawn_with(mixed().env("HTTP_PROXY", &proxy.url())).await;
    let token = caller_token(TENANT_A);
    let ids = app.phones(PROJECT_A2, 0, 2);
    let (status, body) = app.stop_at(&stop_a2(), &token, &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let seen = proxy.seen();
    let stop = format!(
        "POST http://127.0.0.1:{}/v1/{PROJECT_A2}/",
        app.sim.addr().port()
    );
    assert!(seen.iter().any(|l| l.starts_with(&stop)), "{seen:?}");

    // NO_PROXY names the simulator's host: straight there.
    let bypass = TestProxy::start().await;
    let app = TestApp::spawn_with(
        mixed()
            .env("HTTP_PROXY", &bypass.url())
            .env("no_proxy", "localhost,127.0.0.1"),
    )
    .await;
    let (status, body) = app.stop_at(&stop_a2(), &token, &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(bypass.seen().is_empty(), "{:?}", bypass.seen());
    assert_eq!(app.sim.stats().batch_stop_requests, 1);
}
