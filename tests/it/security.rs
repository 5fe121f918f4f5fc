//! Security properties: JWKS rotation and its limits, algorithm confusion,
//! secrets kept out of logs and responses, tenant isolation, and refusal of
//! configs that cannot work.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering;
use std::time::Duration;

use cph_gateway::config::Config;
use cph_sim::{PhoneState, Sim};
use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::jwks::{JwksServer, jwk, jwks};
use crate::helpers::process::GatewayProcess;
use crate::helpers::*;

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// Caller claims of `tenant` with a unique `jti`, so that no two tokens are
/// equal (the gateway caches verified tokens).
fn unique_claims(tenant: &str) -> Value {
    let mut c = claims(Some(tenant), &[]);
    c["jti"] = format!("{:032x}", rand::random::<u128>()).into();
    c
}

/// `token` with its header replaced by `header` (the signature no longer
/// matches; for checks that must happen before the signature).
fn with_header(token: &str, header: &Value) -> String {
    let (_, rest) = token.split_once('.').expect("compact JWT");
    format!("{}.{rest}", b64url(header.to_string().as_bytes()))
}

/// One stop of a phone of acme's default project with `token`.
async fn stop_status(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.stop(token, &app.phones(PROJECT_A, 0, 1)).await
}

/// Asserts that `token` is refused with 401 CPHGW.0101.
async fn assert_rejected(app: &TestApp, token: &str, what: &str) {
    let (status, body) = stop_status(app, token).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
    assert_eq!(body["error_code"], "CPHGW.0101", "{what}: {body}");
}

async fn assert_accepted(app: &TestApp, token: &str, what: &str) {
    let (status, body) = stop_status(app, token).await;
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
}

/// A gateway with the HS256 secret and a JWKS URL.
async fn spawn_with_jwks(server: &JwksServer, cooldown_s: &str) -> TestApp {
    TestApp::spawn_with(
        TestOptions::default()
            .set("auth.jwks_url", &format!("\"{}\"", server.url))
            .set("auth.jwks_refresh_cooldown_s", cooldown_s),
    )
    .await
}

/// Runs `cph-gateway check-config --config config` with the test secrets
/// plus `env`; returns (exit code, stdout + stderr).
fn check_config(config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_cph-gateway"));
    cmd.arg("check-config")
        .arg("--config")
        .arg(config)
        .env_clear()
        .envs(secret_env())
        .envs(env.iter().copied());
    let out = cmd.output().expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// The secret-looking runs in `text`: the simulator's IAM token format
/// ("MII" + 64 hex) and any run of 64 or more hex digits.
fn token_like_runs(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i].is_ascii_hexdigit() {
            let start = i;
            while i < bytes.len() && bytes[i].is_ascii_hexdigit() {
                i += 1;
            }
            if i - start >= 64 {
                found.push(text[start..i].to_owned());
            }
        } else {
            i += 1;
        }
    }
    let mut rest = text;
    while let Some(at) = rest.find("MII") {
        let tail = &rest[at + 3..];
        let hex = tail.bytes().take_while(u8::is_ascii_hexdigit).count();
        if hex >= 32 {
            found.push(format!("MII{}", &tail[..hex]));
        }
        rest = tail;
    }
    found
}

/// Occurrences of `name` (case-insensitive) followed by a value, as in
/// `x-auth-token: abc` or `"x-auth-token":"abc"`.
fn header_values(text: &str, name: &str) -> Vec<String> {
    let lower = text.to_ascii_lowercase();
    let mut found = Vec::new();
    let mut from = 0;
    while let Some(at) = lower[from..].find(name) {
        let after = from + at + name.len();
        let value: String = lower[after..]
            .trim_start_matches(['"', '\'', ':', '=', ' ', '\\'])
            .chars()
            .take(20)
            .collect();
        if value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
            let end = (after + 40).min(text.len());
            found.push(text.get(from + at..end).unwrap_or(name).to_owned());
        }
        from = after;
    }
    found
}

// ---------------------------------------------------------------------------
// JWKS
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_rotation_is_picked_up_and_unknown_kids_cannot_flood_the_idp() {
    let server = JwksServer::start(jwks(&["rsa-jwk.json"])).await;
    let app = spawn_with_jwks(&server, "60").await;
    let fetches = || app.gateway.state.auth.jwks_fetches();
    assert_eq!(server.fetches(), 1, "the JWKS is loaded at start");
    assert_eq!(fetches(), 1);

    let key1 = mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-1"));
    assert_accepted(&app, &key1, "kid key-1").await;
    // The HS256 secret stays usable next to the JWKS.
    assert_accepted(&app, &caller_token(TENANT_A), "HS256").await;
    assert_eq!(server.fetches(), 1, "a known kid causes no fetch");

    // The IdP rotates: key-2 is published next to key-1.
    server.set(200, jwks(&["rsa-jwk.json", "rsa2-jwk.json"]));
    let key2 = mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-2"));
    assert_accepted(&app, &key2, "kid key-2 after rotation").await;
    assert_eq!(server.fetches(), 2, "one refresh for the new kid");
    assert_eq!(fetches(), 2);
    let key1_again = mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-1"));
    assert_accepted(&app, &key1_again, "kid key-1 after rotation").await;

    // Signed with key-2's private key but naming key-1: does not verify.
    let mislabelled = rs256_with("rsa2-private.pem", &unique_claims(TENANT_A), Some("key-1"));
    assert_rejected(&app, &mislabelled, "key-2 signature under kid key-1").await;

    // A flood of unknown kids within the cooldown: at most one more fetch.
    let template = mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-1"));
    let flood: Vec<String> = (0..200)
        .map(|i| {
            with_header(
                &template,
                &json!({"alg": "RS256", "typ": "JWT", "kid": format!("rnd-{i}-{:x}", rand::random::<u64>())}),
            )
        })
        .collect();
    let answers = futures_util::future::join_all(flood.iter().map(|t| stop_status(&app, t))).await;
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::UNAUTHORIZED, "{body}");
        assert_eq!(body["error_code"], "CPHGW.0101", "{body}");
    }
    assert!(
        server.fetches() <= 3,
        "{} JWKS fetches after a flood of unknown kids",
        server.fetches()
    );
    assert!(
        fetches() <= 3,
        "{} fetches counted by the gateway",
        fetches()
    );
    assert_accepted(
        &app,
        &mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-2")),
        "key-2 after the flood",
    )
    .await;
    let metrics = app.metrics().await;
    assert!(
        metrics.contains("cphgw_jwt_rejections_total{reason=\"unknown_key\"}"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_keys_cannot_be_used_with_another_algorithm() {
    let server = JwksServer::start(jwks(&["rsa-jwk.json"])).await;
    let app = spawn_with_jwks(&server, "60").await;

    // HS256 "signed" with the RSA public key as the HMAC secret (the classic
    // algorithm-confusion attack), in PEM and in DER-ish (JWK `n`) forms.
    let pem = std::fs::read(keys_dir().join("rsa-public.pem")).expect("public key");
    let n = jwk("rsa-jwk.json")["n"].as_str().expect("n").to_owned();
    for (what, secret) in [("PEM", pem), ("JWK n", n.into_bytes())] {
        let forged = hs256_with(&secret, &unique_claims(TENANT_A), Some("key-1"));
        assert_rejected(
            &app,
            &forged,
            &format!("HS256 with the public key ({what})"),
        )
        .await;
    }
    // HS256 with the real shared secret but naming an RSA JWK's kid.
    let confused = mint(Algorithm::HS256, &unique_claims(TENANT_A), Some("key-1"));
    assert_rejected(&app, &confused, "HS256 token with an RS256 kid").await;
    // `none` is never accepted, with or without a kid.
    let template = mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-1"));
    for header in [
        json!({"alg": "none", "typ": "JWT", "kid": "key-1"}),
        json!({"alg": "none", "typ": "JWT"}),
    ] {
        let unsigned = with_header(&template, &header);
        let (head, rest) = unsigned.split_once('.').expect("jwt");
        let payload = rest.split_once('.').expect("jwt").0;
        assert_rejected(&app, &format!("{head}.{payload}."), "alg none").await;
    }
    // RS256 naming key-1 but signed by a key not in the JWKS.
    let wrong = rs256_with("rsa2-private.pem", &unique_claims(TENANT_A), Some("key-1"));
    assert_rejected(&app, &wrong, "RS256 signed by another key").await;
    // A valid key-1 token whose header was altered after signing.
    let altered = with_header(
        &mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-1")),
        &json!({"alg": "RS256", "kid": "key-1"}),
    );
    assert_rejected(&app, &altered, "header altered after signing").await;
    // The genuine token still works.
    assert_accepted(
        &app,
        &mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-1")),
        "genuine RS256",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_outage_keeps_the_last_good_keys() {
    let server = JwksServer::start(jwks(&["rsa-jwk.json"])).await;
    // No cooldown: every unknown kid refreshes, so the outage is really hit.
    let app = spawn_with_jwks(&server, "0").await;
    assert_accepted(
        &app,
        &mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-1")),
        "before the outage",
    )
    .await;

    for (status, body) in [
        (500, "{\"error\": \"down\"}".to_owned()),
        (200, "this is not a key set".to_owned()),
        (200, "{\"keys\": 7}".to_owned()),
    ] {
        server.set(status, body.clone());
        let before = server.fetches();
        let unknown = mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-2"));
        assert_rejected(
            &app,
            &unknown,
            &format!("unknown kid while JWKS answers {status} {body}"),
        )
        .await;
        assert!(
            server.fetches() > before,
            "no refresh was attempted during the outage ({status} {body})"
        );
        assert_accepted(
            &app,
            &mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-1")),
            &format!("key-1 after a failed refresh ({status} {body})"),
        )
        .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwks_unavailable_at_start_is_fetched_on_first_use() {
    let server = JwksServer::start(String::new()).await;
    server.set(503, "{}".into());
    let app = spawn_with_jwks(&server, "0").await;
    assert_eq!(server.fetches(), 1, "the gateway tried at start");
    // HS256 callers are not affected by the JWKS outage.
    assert_accepted(&app, &caller_token(TENANT_A), "HS256 during the outage").await;

    server.set(200, jwks(&["rsa-jwk.json"]));
    assert_accepted(
        &app,
        &mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-1")),
        "key-1 once the JWKS is back",
    )
    .await;
    assert_eq!(server.fetches(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_jwks_endpoint_does_not_block_startup() {
    let server = JwksServer::start(jwks(&["rsa-jwk.json"])).await;
    server.state.hang.store(true, Ordering::SeqCst);
    let started =
        tokio::time::timeout(Duration::from_secs(6), spawn_with_jwks(&server, "60")).await;
    let app = started.expect("the gateway did not start within 6 s while the JWKS endpoint hangs");
    assert_accepted(&app, &caller_token(TENANT_A), "HS256 caller").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_jwks_endpoint_does_not_hang_requests() {
    let server = JwksServer::start(jwks(&["rsa-jwk.json"])).await;
    let app = spawn_with_jwks(&server, "0").await;
    server.state.hang.store(true, Ordering::SeqCst);

    // A token with a kid the gateway has not seen yet (the IdP just rotated):
    // the refresh hangs; the request must still get an answer in bounded time
    // (the test config has upstream.timeout_ms = 2000).
    let key2 = mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-2"));
    let answered = tokio::time::timeout(Duration::from_secs(6), stop_status(&app, &key2)).await;
    let (status, body) = answered.expect("no answer within 6 s while the JWKS endpoint hangs");
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    // Known keys keep working meanwhile.
    assert_accepted(
        &app,
        &mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-1")),
        "key-1 while the JWKS endpoint hangs",
    )
    .await;
}

// ---------------------------------------------------------------------------
// Secrets
// ---------------------------------------------------------------------------

/// What a run of the real binary at trace level logged, and the secrets
/// that went through it.
struct LoggedRun {
    output: String,
    request_id: String,
    caller: String,
    admin: String,
}

/// Runs the real binary with `RUST_LOG=trace LOG_FORMAT=json` and sends it a
/// full stop (IAM fetch + batch-stop), a job query, a refused token and two
/// admin calls, then stops it with SIGTERM.
async fn logged_run() -> LoggedRun {
    let sim = Sim::start(Default::default()).await.expect("sim");
    let mut gw =
        GatewayProcess::start_against(&sim, &[("RUST_LOG", "trace"), ("LOG_FORMAT", "json")]).await;
    let client = client();
    let caller = mint(Algorithm::HS256, &unique_claims(TENANT_A), None);
    let admin = admin_token();
    let request_id = format!("sec-log-{:016x}", rand::random::<u64>());

    // A full stop: IAM token fetch, then batch-stop.
    let ids: Vec<String> = (0..3).map(|i| cph_sim::phone_id(PROJECT_A, i)).collect();
    let resp = client
        .post(format!("{}{STOP}", gw.url))
        .bearer_auth(&caller)
        .header("X-Request-Id", &request_id)
        .json(&json!({ "phone_ids": ids }))
        .send()
        .await
        .expect("stop");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("JSON");
    assert_eq!(body["request_id"], request_id.as_str());
    let job_id = body["jobs"][0]["job_id"]
        .as_str()
        .expect("job id")
        .to_owned();
    assert_eq!(
        sim.stats().tokens_issued,
        1,
        "the gateway fetched an IAM token"
    );

    // A job query.
    let resp = client
        .get(format!("{}/v1/cloud-phone/jobs/{job_id}", gw.url))
        .bearer_auth(&caller)
        .send()
        .await
        .expect("job");
    assert_eq!(resp.status(), StatusCode::OK);
    // A refused token (its rejection is logged).
    let resp = client
        .post(format!("{}{STOP}", gw.url))
        .header("Authorization", format!("Bearer {caller}x"))
        .json(&json!({ "phone_ids": ids }))
        .send()
        .await
        .expect("stop");
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    // Admin calls.
    let resp = client
        .get(format!("{}/admin/v1/tenants", gw.admin_url))
        .bearer_auth(&admin)
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = client
        .put(format!("{}/admin/v1/tenants/initech", gw.admin_url))
        .bearer_auth(&admin)
        .json(&json!({"default_project": PROJECT_B, "projects": [
            {"project_id": PROJECT_B, "region": "cn-east-3", "credential": "default"}]}))
        .send()
        .await
        .expect("admin");
    assert_eq!(resp.status(), StatusCode::CREATED);

    gw.terminate().await;
    LoggedRun {
        output: gw.output(),
        request_id,
        caller,
        admin,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_never_reach_the_logs_even_at_trace_level() {
    let LoggedRun {
        output,
        request_id,
        caller,
        admin,
    } = logged_run().await;

    // Not vacuous: logging was on and covered the stop.
    assert!(
        output.contains(&request_id),
        "the stop's request_id is not in the logs:\n{output}"
    );
    assert!(output.lines().count() > 10, "{output}");

    let signature = |jwt: &str| jwt.rsplit('.').next().expect("jwt").to_owned();
    let secrets = [
        ("IAM password", IAM_PASSWORD.to_owned()),
        ("JWT secret", JWT_SECRET.to_owned()),
        ("caller JWT", caller.clone()),
        ("caller JWT signature", signature(&caller)),
        ("admin JWT", admin.clone()),
        ("admin JWT signature", signature(&admin)),
        ("Authorization header", "Bearer ".to_owned()),
    ];
    for (what, secret) in &secrets {
        assert!(
            !output.contains(secret.as_str()),
            "the {what} is in the logs:\n{}",
            output
                .lines()
                .filter(|l| l.contains(secret.as_str()))
                .take(3)
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
    let runs = token_like_runs(&output);
    assert!(runs.is_empty(), "token-like values in the logs: {runs:?}");
    for header in ["x-subject-token", "x-auth-token", "authorization"] {
        let values = header_values(&output, header);
        assert!(values.is_empty(), "{header} values in the logs: {values:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_log_lines_carry_the_callers_request_id() {
    let run = logged_run().await;
    let events: Vec<Value> = run
        .output
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    for message in ["upstream batch-stop", "IAM token fetched"] {
        let matching: Vec<&Value> = events.iter().filter(|e| e["message"] == message).collect();
        assert!(
            !matching.is_empty(),
            "no {message:?} event:\n{}",
            run.output
        );
        for event in matching {
            assert!(
                event.to_string().contains(&run.request_id),
                "a {message:?} event without the caller's request_id {}: {event}",
                run.request_id
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_failures_answer_without_the_password() {
    const WRONG: &str = "gw-configured-password-6f1e0c";
    let app = TestApp::spawn_with(TestOptions::default().env("TEST_IAM_PASSWORD", WRONG)).await;
    let ids = app.phones(PROJECT_A, 0, 3);
    let resp = app
        .client
        .post(format!("{}{STOP}", app.url))
        .bearer_auth(caller_token(TENANT_A))
        .json(&json!({ "phone_ids": ids }))
        .send()
        .await
        .expect("stop");
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    let text = resp.text().await.expect("body");
    let body: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(body["error_code"], "CPHGW.0303", "{body}");
    assert_accounts_for(&ids, &body);
    assert!(app.sim.stats().unauthorized > 0, "IAM refused the password");

    let job = app
        .client
        .get(format!(
            "{}/v1/cloud-phone/jobs/{}",
            app.url,
            "0".repeat(32)
        ))
        .bearer_auth(caller_token(TENANT_A))
        .send()
        .await
        .expect("job");
    assert_eq!(job.status(), StatusCode::SERVICE_UNAVAILABLE);
    let job_text = job.text().await.expect("body");
    let metrics = app.metrics().await;

    for (what, text) in [
        ("stop", &text),
        ("job query", &job_text),
        ("metrics", &metrics),
    ] {
        for secret in [WRONG, IAM_PASSWORD, JWT_SECRET] {
            assert!(
                !text.contains(secret),
                "{what} answer contains {secret:?}: {text}"
            );
        }
        assert!(token_like_runs(text).is_empty(), "{what}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rejections_never_echo_the_presented_token() {
    let app = TestApp::spawn().await;
    let good = mint(Algorithm::HS256, &unique_claims(TENANT_A), None);
    let signature = good.rsplit('.').next().expect("jwt").to_owned();
    let mut expired = unique_claims(TENANT_A);
    expired["exp"] = (now() - 3600).into();
    let mut wrong_aud = unique_claims(TENANT_A);
    wrong_aud["aud"] = "someone-else".into();
    let presented = [
        format!("{good}x"),
        format!(
            "{}.{}",
            &good[..good.rfind('.').expect("jwt")],
            "A".repeat(43)
        ),
        mint(Algorithm::HS256, &expired, None),
        mint(Algorithm::HS256, &wrong_aud, None),
        format!("secret-looking-{signature}"),
    ];
    for token in &presented {
        for base in [&app.url, &app.admin_url] {
            let path = if base == &app.url {
                "/v1/cloud-phone/jobs/0123"
            } else {
                "/admin/v1/tenants"
            };
            let resp = app
                .client
                .get(format!("{base}{path}"))
                .bearer_auth(token)
                .send()
                .await
                .expect("answer");
            assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{path}");
            let headers = format!("{:?}", resp.headers());
            let text = resp.text().await.expect("body");
            let sig = token.rsplit('.').next().expect("part");
            for shown in [&text, &headers] {
                assert!(!shown.contains(token.as_str()), "token echoed: {shown}");
                assert!(!shown.contains(sig), "signature echoed: {shown}");
                assert!(!shown.contains(JWT_SECRET), "secret in: {shown}");
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Tenant isolation
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_reach_another_tenants_project_by_path() {
    let app = TestApp::spawn().await;
    let b_ids = app.phones(PROJECT_B, 0, 3);
    let a_token = caller_token(TENANT_A);
    for path in [
        format!("/v1/{PROJECT_B}/cloud-phone/phones/batch-stop"),
        format!(
            "/v1/{}/cloud-phone/phones/batch-stop",
            PROJECT_B.to_ascii_uppercase()
        ),
        format!("/v1/{PROJECT_B}%2F/cloud-phone/phones/batch-stop"),
    ] {
        let (status, body) = app.stop_at(&path, &a_token, &b_ids).await;
        assert!(
            status == StatusCode::FORBIDDEN || status == StatusCode::NOT_FOUND,
            "{path}: {status} {body}"
        );
        if status == StatusCode::FORBIDDEN {
            assert_eq!(body["error_code"], "CPHGW.0102", "{path}: {body}");
        }
    }
    // An unknown project that is nobody's.
    let (status, body) = app
        .stop_at(
            "/v1/ffffffffffffffffffffffffffffffff/cloud-phone/phones/batch-stop",
            &a_token,
            &b_ids,
        )
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(
        app.sim.stats().batch_stop_requests,
        0,
        "nothing reached CPH"
    );
    for id in &b_ids {
        assert_eq!(
            app.sim.phone_state(PROJECT_B, id),
            Some(PhoneState::Running)
        );
    }
    // The admin API is not on the caller port.
    let resp = app
        .client
        .get(format!("{}/admin/v1/tenants", app.url))
        .bearer_auth(admin_token())
        .send()
        .await
        .expect("caller port");
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_reach_another_tenants_phones_by_body_or_header() {
    let app = TestApp::spawn().await;
    let b_ids = app.phones(PROJECT_B, 0, 3);
    let a_ids = app.phones(PROJECT_A, 0, 2);

    // B's phone ids in A's request go to A's project, where they do not exist.
    let (status, body) = app.stop(&caller_token(TENANT_A), &b_ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&b_ids, &body);
    for entry in body["jobs"].as_array().expect("jobs") {
        assert_eq!(entry["error_code"], "CPS.0005", "{entry}");
        assert!(entry.get("job_id").is_none_or(Value::is_null), "{entry}");
    }

    // Headers naming B (or carrying an upstream token) change nothing.
    let mut mixed = a_ids.clone();
    mixed.extend(b_ids.iter().cloned());
    let resp = app
        .client
        .post(format!("{}{STOP}", app.url))
        .bearer_auth(caller_token(TENANT_A))
        .header("X-Project-Id", PROJECT_B)
        .header("X-Tenant", TENANT_B)
        .header("X-Tenant-Id", TENANT_B)
        .header("X-Auth-Token", "MII0000")
        .header("Forwarded", "for=127.0.0.1")
        .json(&json!({ "phone_ids": mixed, "project_id": PROJECT_B, "tenant": TENANT_B }))
        .send()
        .await
        .expect("stop");
    let status = resp.status();
    let body: Value = resp.json().await.expect("JSON");
    if status == StatusCode::BAD_REQUEST {
        // Unknown body fields may be refused; then nothing may have happened.
        assert_eq!(app.sim.stats().stopped_phones, 0, "{body}");
    } else {
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_accounts_for(&mixed, &body);
        let jobs = body["jobs"].as_array().expect("jobs");
        assert!(jobs[..2].iter().all(|j| j["job_id"].is_string()), "{body}");
        assert!(
            jobs[2..].iter().all(|j| j["error_code"] == "CPS.0005"),
            "{body}"
        );
    }
    // The same with only the headers (a body the contract allows); the
    // tenant's own phones were just stopped, so start them again.
    app.sim.start_phones();
    let resp = app
        .client
        .post(format!("{}{STOP}", app.url))
        .bearer_auth(caller_token(TENANT_A))
        .header("X-Project-Id", PROJECT_B)
        .header("X-Tenant", TENANT_B)
        .json(&json!({ "phone_ids": mixed }))
        .send()
        .await
        .expect("stop");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("JSON");
    let jobs = body["jobs"].as_array().expect("jobs");
    assert!(jobs[..2].iter().all(|j| j["job_id"].is_string()), "{body}");
    assert!(
        jobs[2..].iter().all(|j| j["error_code"] == "CPS.0005"),
        "{body}"
    );

    for id in &b_ids {
        assert_eq!(
            app.sim.phone_state(PROJECT_B, id),
            Some(PhoneState::Running),
            "B's phone {id} was touched"
        );
    }
    for id in &a_ids {
        assert_ne!(
            app.sim.phone_state(PROJECT_A, id),
            Some(PhoneState::Running)
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_cannot_read_another_tenants_jobs() {
    let app = TestApp::spawn().await;
    let (status, body) = app
        .stop(&caller_token(TENANT_B), &app.phones(PROJECT_B, 7, 1))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let b_job = body["jobs"][0]["job_id"].as_str().expect("job").to_owned();
    let b_phone = cph_sim::phone_id(PROJECT_B, 7);

    let get = async |token: &str, path: String| {
        let (status, _, text) = app.get(&path, token).await;
        (status, text)
    };
    // B itself can read it (so the id is right).
    let (status, text) = get(
        &caller_token(TENANT_B),
        format!("/v1/cloud-phone/jobs/{b_job}"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    assert!(text.contains(&b_phone), "{text}");

    // A, through its default project: CPH does not know the job there.
    let a = caller_token(TENANT_A);
    let (status, text) = get(&a, format!("/v1/cloud-phone/jobs/{b_job}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert!(!text.contains(&b_phone), "B's job leaked: {text}");
    // A, through its other project.
    let (status, text) = get(&a, format!("/v1/{PROJECT_A2}/cloud-phone/jobs/{b_job}")).await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{text}");
    assert!(!text.contains(&b_phone), "B's job leaked: {text}");
    // A, naming B's project: refused before CPH.
    let queries = app.sim.stats().job_queries;
    let (status, text) = get(&a, format!("/v1/{PROJECT_B}/cloud-phone/jobs/{b_job}")).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{text}");
    let body: Value = serde_json::from_str(&text).expect("JSON");
    assert_eq!(body["error_code"], "CPHGW.0102");
    assert_eq!(app.sim.stats().job_queries, queries, "CPH was asked");
    // Path tricks in the job id.
    for trick in [
        format!("/v1/cloud-phone/jobs/..%2F..%2F{PROJECT_B}%2Fcloud-phone%2Fjobs%2F{b_job}"),
        format!("/v1/cloud-phone/jobs/{b_job}%3Fproject={PROJECT_B}"),
    ] {
        let (status, text) = get(&a, trick.clone()).await;
        assert_ne!(status, StatusCode::OK, "{trick}: {text}");
        assert!(!text.contains(&b_phone), "{trick}: {text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_with_a_malformed_tenant_claim_are_forbidden() {
    let app = TestApp::spawn().await;
    let base = claims(None, &[]);
    let cases: Vec<(&str, Option<Value>)> = vec![
        ("missing", None),
        ("array", Some(json!([TENANT_A]))),
        ("array of both", Some(json!([TENANT_A, TENANT_B]))),
        ("number", Some(json!(1))),
        ("object", Some(json!({"name": TENANT_A}))),
        ("bool", Some(json!(true))),
        ("null", Some(Value::Null)),
        ("empty", Some(json!(""))),
        ("not a tenant name", Some(json!("acme globex"))),
        ("case-changed", Some(json!("ACME"))),
        ("unmapped", Some(json!("nosuch"))),
    ];
    for (what, tenant) in cases {
        let mut c = base.clone();
        if let Some(t) = tenant {
            c["tenant"] = t;
        }
        let token = mint(Algorithm::HS256, &c, None);
        let (status, body) = app.stop(&token, &app.phones(PROJECT_A, 0, 1)).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{what}: {body}");
        assert_eq!(body["error_code"], "CPHGW.0102", "{what}: {body}");
    }
    // An admin token carries no tenant: it cannot stop phones either.
    let (status, body) = app.stop(&admin_token(), &app.phones(PROJECT_A, 0, 1)).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(app.sim.stats().batch_stop_requests, 0);
}

// ---------------------------------------------------------------------------
// Config refusal
// ---------------------------------------------------------------------------

/// A tenants file of acme alone, with one project.
fn acme(project: &str, region: &str, credential: &str, default: &str) -> String {
    tenant_toml(TENANT_A, default, &[(project, region, credential)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configs_that_cannot_work_are_refused_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tenants = dir.path().join("tenants.toml");
    let cfg = base_config("http://127.0.0.1:9", &tenants.display().to_string());

    // Tenants files that cannot work: AppState::new refuses them.
    let dup = tenant_toml(
        TENANT_A,
        PROJECT_A,
        &[
            (PROJECT_A, "cn-east-3", "default"),
            (PROJECT_A, "cn-north-4", "default"),
        ],
    );
    let bad_tenants: Vec<(&str, String, &[&str])> = vec![
        (
            "unknown credential",
            acme(PROJECT_A, "cn-east-3", "nope", PROJECT_A),
            &["tenants.acme.projects[0].credential", "nope"],
        ),
        (
            "bad region",
            acme(PROJECT_A, "CN EAST", "default", PROJECT_A),
            &["tenants.acme.projects[0].region"],
        ),
        (
            "bad project id",
            acme("xyz", "cn-east-3", "default", "xyz"),
            &["tenants.acme.projects[0].project_id"],
        ),
        (
            "default project not in the list",
            acme(PROJECT_A, "cn-east-3", "default", PROJECT_B),
            &["tenants.acme.default_project"],
        ),
        (
            "duplicate project ids",
            dup,
            &["tenants.acme.projects[1].project_id"],
        ),
    ];
    for (what, text, keys) in &bad_tenants {
        std::fs::write(&tenants, text).expect("write tenants");
        let config = Config::from_toml(&cfg, &secret_env()).expect("the config itself is fine");
        let err = cph_gateway::AppState::new(config)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"))
            .to_string();
        for key in *keys {
            assert!(err.contains(key), "{what}: {err:?} does not name {key}");
        }
    }

    // Configs that cannot work: Config::from_toml refuses them.
    let no_key_source = without_hs256_secret(&cfg);
    let mut no_password_env = secret_env();
    no_password_env.remove("TEST_IAM_PASSWORD");
    let mut env_override = secret_env();
    env_override.insert("CPHGW__UPSTREAM__MAX_BATCH_SIZE".into(), "0".into());
    let mut short_secret = secret_env();
    short_secret.insert("TEST_JWT_SECRET".into(), "short".into());
    let bad_configs: Vec<(&str, String, BTreeMap<String, String>, &str)> = vec![
        ("no key source", no_key_source, secret_env(), "auth"),
        (
            "password variable unset",
            cfg.clone(),
            no_password_env,
            "iam.credentials.default.password_env",
        ),
        (
            "override to 0",
            cfg.clone(),
            env_override,
            "upstream.max_batch_size",
        ),
        (
            "short HS256 secret",
            cfg.clone(),
            short_secret,
            "auth.hs256_secret_env",
        ),
        (
            "unknown key",
            cfg.replace("[upstream]\n", "[upstream]\npasword = \"x\"\n"),
            secret_env(),
            "pasword",
        ),
    ];
    for (what, text, env, key) in &bad_configs {
        let err = Config::from_toml(text, env)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        assert!(
            err.to_string().contains(key),
            "{what}: {err} does not name {key}"
        );
        assert!(!err.to_string().contains(JWT_SECRET) && !err.to_string().contains(IAM_PASSWORD));
    }

    // And the good one is accepted.
    std::fs::write(&tenants, default_tenants()).expect("write tenants");
    let config = Config::from_toml(&cfg, &secret_env()).expect("valid");
    let state = cph_gateway::AppState::new(config).expect("a good config is accepted");
    assert_eq!(state.tenants.load().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_exits_0_on_a_good_config_and_1_on_a_bad_one() {
    let dir = tempfile::tempdir().expect("temp dir");
    let tenants = dir.path().join("tenants.toml");
    let config = write_config(dir.path(), "http://127.0.0.1:9");

    let (code, out) = check_config(&config, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("2 tenants"), "{out}");

    std::fs::write(&tenants, acme(PROJECT_A, "cn-east-3", "nope", PROJECT_A))
        .expect("write tenants");
    let (code, out) = check_config(&config, &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("credential") && out.contains("nope"), "{out}");

    std::fs::write(&tenants, default_tenants()).expect("write tenants");
    let (code, out) = check_config(&config, &[("CPHGW__UPSTREAM__TIMEOUT_MS", "0")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("upstream.timeout_ms"), "{out}");

    let (code, out) = check_config(&config, &[("TEST_IAM_PASSWORD", "")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("password_env"), "{out}");

    let (code, out) = check_config(&dir.path().join("missing.toml"), &[]);
    assert_eq!(code, Some(1), "{out}");

    // The good config with the right environment is still fine, and no
    // output of check-config shows a secret.
    let (code, out) = check_config(&config, &[]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        !out.contains(JWT_SECRET) && !out.contains(IAM_PASSWORD),
        "{out}"
    );
}

/// A JWKS answer over `upstream.max_response_bytes` is not read whole:
/// its keys are not used (and the gateway's memory is not the IdP's to fill).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_jwks_answer_is_refused() {
    let mut set = json!({"keys": [jwk("rsa-jwk.json")]});
    // Over the default upstream.max_response_bytes (4 MiB).
    set["padding"] = "x".repeat(5 * 1024 * 1024).into();
    let server = JwksServer::start(set.to_string()).await;
    let app = TestApp::spawn_with(
        TestOptions::default()
            .set("auth.jwks_url", &format!("\"{}\"", server.url))
            .set("auth.jwks_refresh_cooldown_s", "0"),
    )
    .await;
    let token = mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-1"));
    assert_rejected(&app, &token, "key from an oversized JWKS answer").await;
    assert!(server.fetches() > 0, "the JWKS was never fetched");
    // The same keys in an answer of normal size are used.
    server.set(200, jwks(&["rsa-jwk.json"]));
    let token = mint(Algorithm::RS256, &unique_claims(TENANT_A), Some("key-1"));
    assert_accepted(&app, &token, "key from a normal JWKS answer").await;
}
