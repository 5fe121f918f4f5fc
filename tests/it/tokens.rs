//! The token rules of CONTRACT §4/§5: admin tokens asymmetric unless
//! `auth.allow_hs256_admin`; a previous HS256 secret accepted during a
//! rotation; placeholder and short secrets refused at start naming the key;
//! `auth.max_token_lifetime_s`; a claim that appears twice refused; `iat` in
//! the future refused.

use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Signs `payload` (raw JSON text, so that it can hold a key twice) with
/// HS256 and the test secret.
fn hs256_raw(payload: &str) -> String {
    use hmac::{Hmac, Mac};
    let header = b64url(br#"{"alg":"HS256","typ":"JWT"}"#);
    let body = b64url(payload.as_bytes());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(JWT_SECRET.as_bytes()).expect("key");
    mac.update(format!("{header}.{body}").as_bytes());
    format!("{header}.{body}.{}", b64url(&mac.finalize().into_bytes()))
}

async fn rejections(app: &TestApp, reason: &str) -> u64 {
    let series = format!("cphgw_jwt_rejections_total{{reason=\"{reason}\"}}");
    sample(&app.metrics().await, &series).map_or(0, |n| n as u64)
}

/// A stop of one phone with `token` is refused with 401 CPHGW.0101 (twice:
/// a refusal is never cached as a success), counted under `reason`.
async fn assert_refused(app: &TestApp, token: &str, reason: &str, what: &str) {
    let before = rejections(app, reason).await;
    for attempt in ["first", "again"] {
        let (status, body) = app.stop(token, &app.phones(PROJECT_A, 0, 1)).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{what} ({attempt}): {body}"
        );
        assert_eq!(body["error_code"], "CPHGW.0101", "{what}: {body}");
    }
    assert_eq!(
        rejections(app, reason).await,
        before + 2,
        "{what}: reason {reason}"
    );
    assert_eq!(
        app.sim.stats().batch_stop_requests,
        0,
        "{what}: sent upstream"
    );
}

async fn assert_accepted(app: &TestApp, token: &str, what: &str) {
    app.sim.start_phones();
    let (status, body) = app.stop(token, &app.phones(PROJECT_A, 0, 1)).await;
    assert_eq!(status, StatusCode::OK, "{what}: {body}");
    app.sim.reset_stats();
}

/// The claims of a caller token of acme, as JSON text, with `extra` members
/// appended (a member may repeat one already there).
fn payload(extra: &str) -> String {
    let now = now();
    format!(
        r#"{{"iss":"{ISSUER}","aud":"{AUDIENCE}","sub":"svc","iat":{now},"exp":{},"tenant":"{TENANT_A}"{extra}}}"#,
        now + 600
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_that_appears_twice_is_refused_whichever_it_is() {
    let app = TestApp::spawn().await;
    // Not vacuous: the same payload without a duplicate is accepted.
    assert_accepted(&app, &hs256_raw(&payload("")), "no duplicate").await;
    let cases = [
        ("tenant", format!(r#","tenant":"{TENANT_B}""#)),
        ("tenant, same value", format!(r#","tenant":"{TENANT_A}""#)),
        ("sub", r#","sub":"other""#.to_owned()),
        ("exp", format!(r#","exp":{}"#, now() + 60)),
        (
            "roles",
            r#","roles":["a"],"roles":["cph-gateway-admin"]"#.to_owned(),
        ),
        ("nested", r#","ctx":{"k":1,"k":2}"#.to_owned()),
    ];
    for (what, extra) in cases {
        let token = hs256_raw(&payload(&extra));
        if what == "sub" || what == "exp" {
            // The library reads these itself first and refuses them as
            // malformed; a 401 either way.
            let (status, body) = app.stop(&token, &app.phones(PROJECT_A, 0, 1)).await;
            assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
            assert_eq!(body["error_code"], "CPHGW.0101", "{what}: {body}");
        } else {
            assert_refused(&app, &token, "duplicate_claim", what).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iat_in_the_future_and_long_lifetimes_are_refused() {
    let app =
        TestApp::spawn_with(TestOptions::default().set("auth.max_token_lifetime_s", "3600")).await;
    let now = now();
    let with = |pairs: &[(&str, Value)]| {
        let mut c = claims(Some(TENANT_A), &[]);
        for (k, v) in pairs {
            if v.is_null() {
                c.as_object_mut().expect("object").remove(*k);
            } else {
                c[*k] = v.clone();
            }
        }
        mint(Algorithm::HS256, &c, None)
    };
    // iat beyond the leeway (5 s in the test config).
    let future = with(&[("iat", json!(now + 60))]);
    assert_refused(&app, &future, "issued_in_future", "iat in a minute").await;
    // exp - iat over the maximum, although exp itself is near.
    let long = with(&[("iat", json!(now - 7200)), ("exp", json!(now + 60))]);
    assert_refused(&app, &long, "lifetime", "exp - iat = 2 h 1 min").await;
    // Without iat: exp - now.
    let far = with(&[("iat", Value::Null), ("exp", json!(now + 7200))]);
    assert_refused(&app, &far, "lifetime", "exp in 2 h, no iat").await;
    let max = with(&[("iat", Value::Null), ("exp", json!(u64::MAX))]);
    assert_refused(&app, &max, "lifetime", "exp = 2^64-1").await;
    // A non-numeric iat is not a date.
    let text = with(&[("iat", json!("yesterday"))]);
    assert_refused(&app, &text, "claims", "iat a string").await;

    // Within the limits: accepted.
    let within_leeway = with(&[("iat", json!(now + 3)), ("exp", json!(now + 3000))]);
    assert_accepted(&app, &within_leeway, "iat 3 s ahead (leeway 5 s)").await;
    let exactly = with(&[("iat", json!(now)), ("exp", json!(now + 3600))]);
    assert_accepted(&app, &exactly, "lifetime exactly the maximum").await;
    let no_iat = with(&[("iat", Value::Null), ("exp", json!(now + 1800))]);
    assert_accepted(&app, &no_iat, "no iat, exp in 30 min").await;
}

/// An admin token signed with the RSA test key.
fn rs256_admin() -> String {
    mint(Algorithm::RS256, &claims(None, &[ADMIN_ROLE]), None)
}

async fn admin_status(app: &TestApp, token: &str) -> (StatusCode, Value) {
    let resp = app
        .client
        .get(format!("{}/admin/v1/tenants", app.admin_url))
        .bearer_auth(token)
        .send()
        .await
        .expect("admin answers");
    let status = resp.status();
    (status, resp.json().await.expect("JSON"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_tokens_must_be_asymmetric_unless_allowed() {
    let rsa = format!("[\"{}\"]", keys_dir().join("rsa-public.pem").display());
    let strict = TestApp::spawn_with(
        TestOptions::default()
            .set("auth.allow_hs256_admin", "false")
            .set("auth.public_key_files", &rsa),
    )
    .await;
    let (status, body) = admin_status(&strict, &admin_token()).await;
    assert_gateway_error(status, &body, StatusCode::FORBIDDEN, "CPHGW.0103");
    let msg = body["error_msg"].as_str().expect("message");
    assert!(msg.contains("allow_hs256_admin"), "{msg}");
    let (status, body) = admin_status(&strict, &rs256_admin()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // HS256 callers (not admins) are not affected.
    assert_accepted(&strict, &caller_token(TENANT_A), "HS256 caller").await;
    // An asymmetric token without the role is still refused.
    let no_role = mint(Algorithm::RS256, &claims(None, &[]), None);
    let (status, body) = admin_status(&strict, &no_role).await;
    assert_gateway_error(status, &body, StatusCode::FORBIDDEN, "CPHGW.0103");

    // With allow_hs256_admin = true (the test default, and the demo's), the
    // HS256 admin token works.
    let lax = TestApp::spawn().await;
    let (status, body) = admin_status(&lax, &admin_token()).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_previous_hs256_secret_is_accepted_during_a_rotation() {
    const PREVIOUS: &str = "previous-secret-0123456789abcdef0123456789";
    let app = TestApp::spawn_with(
        TestOptions::default()
            .set("auth.hs256_previous_secret_env", "\"TEST_JWT_PREVIOUS\"")
            .env("TEST_JWT_PREVIOUS", PREVIOUS),
    )
    .await;
    let old = hs256_with(PREVIOUS.as_bytes(), &claims(Some(TENANT_A), &[]), None);
    assert_accepted(&app, &old, "signed with the previous secret").await;
    assert_accepted(&app, &caller_token(TENANT_A), "signed with the current one").await;
    let other = hs256_with(
        b"neither-secret-0123456789abcdef0123456789",
        &claims(Some(TENANT_A), &[]),
        None,
    );
    assert_refused(&app, &other, "signature", "signed with neither").await;

    // Without the previous secret configured, the old token is refused.
    let plain = TestApp::spawn().await;
    assert_refused(&plain, &old, "signature", "previous secret not configured").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placeholder_and_short_secrets_are_refused_at_start_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "http://127.0.0.1:9");
    let example = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/gateway.toml"),
    )
    .expect("example config");
    // A long value the example config publishes (refused although it does
    // not start with change-me: anyone can read it).
    let published = example
        .lines()
        .filter_map(|l| l.split('"').nth(1))
        .find(|v| v.len() >= 32 && !v.starts_with("change-me"))
        .expect("a long quoted value in config/gateway.toml");
    let cases = [
        (
            "change-me-to-a-32-byte-or-longer-secret",
            "TEST_JWT_SECRET",
            "auth.hs256_secret_env",
            "placeholder",
        ),
        (
            published,
            "TEST_JWT_SECRET",
            "auth.hs256_secret_env",
            "published",
        ),
        (
            "0123456789abcdef0123456789abcde",
            "TEST_JWT_SECRET",
            "auth.hs256_secret_env",
            "32 bytes",
        ),
        (
            "change-me-iam-password",
            "TEST_IAM_PASSWORD",
            "iam.credentials.default.password_env",
            "placeholder",
        ),
    ];
    for (value, var, key, why) in cases {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_cph-gateway"))
            .args(["check-config", "--config"])
            .arg(&config)
            .env_clear()
            .envs(secret_env())
            .env(var, value)
            .output()
            .expect("binary runs");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(out.status.code(), Some(1), "{value}: {text}");
        assert!(text.contains(key) && text.contains(why), "{value}: {text}");
        assert!(!text.contains(value), "the value is in the message: {text}");
    }
}
