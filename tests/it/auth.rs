//! Caller authentication: JWTs that are missing, malformed, expired,
//! misaddressed, badly signed or of the wrong algorithm are refused with
//! 401 (counted by reason) before anything reaches IAM or CPH; HS256, RS256
//! and ES256 tokens with configured keys work.

use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// A compact JWT assembled by hand from its three segments.
fn raw_jwt(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(signature)
    )
}

fn tenant_claims() -> Value {
    claims(Some(TENANT_A), &[])
}

fn with_keys() -> TestOptions {
    let files = format!(
        "[\"{}\", \"{}\"]",
        keys_dir().join("rsa-public.pem").display(),
        keys_dir().join("ec-public.pem").display()
    );
    TestOptions::default().set("auth.public_key_files", &files)
}

/// A gateway whose only key is the RSA public key: no HS256 secret at all.
async fn spawn_rsa_only() -> TestApp {
    let files = format!("[\"{}\"]", keys_dir().join("rsa-public.pem").display());
    let app = TestApp::spawn_with(
        TestOptions::default()
            .without_hs256_secret()
            .set("auth.public_key_files", &files),
    )
    .await;
    assert!(app.gateway.state.config.auth.hs256_secret.is_none());
    app
}

/// Sends a stop of one phone with this `Authorization` header (or none).
async fn stop_with(app: &TestApp, authorization: Option<&str>) -> reqwest::Response {
    let mut req = app
        .client
        .post(format!("{}{STOP}", app.url))
        .json(&json!({ "phone_ids": app.phones(PROJECT_A, 0, 1) }));
    if let Some(h) = authorization {
        req = req.header("authorization", h);
    }
    req.send().await.expect("gateway answers")
}

/// The count of `cphgw_jwt_rejections_total{reason="..."}` in the metrics.
async fn rejections(app: &TestApp, reason: &str) -> u64 {
    let series = format!("cphgw_jwt_rejections_total{{reason=\"{reason}\"}}");
    sample(&app.metrics().await, &series).map_or(0, |n| n as u64)
}

/// The header is refused with 401 `CPHGW.0101`, `WWW-Authenticate`, a JSON
/// error body; nothing reaches IAM or CPH; the rejection is counted under
/// one of `reasons`.
async fn assert_rejected(app: &TestApp, authorization: Option<&str>, reasons: &[&str]) {
    let mut before = 0;
    for r in reasons {
        before += rejections(app, r).await;
    }
    let resp = stop_with(app, authorization).await;
    let status = resp.status();
    let www = resp
        .headers()
        .get("www-authenticate")
        .map(|v| v.to_str().unwrap().to_owned());
    let content_type = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.expect("body");
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "{authorization:?}: {text}"
    );
    assert_eq!(
        www.as_deref(),
        Some("Bearer error=\"invalid_token\""),
        "{authorization:?}"
    );
    assert_eq!(content_type.as_deref(), Some("application/json"));
    let body: Value = serde_json::from_str(&text).expect("JSON error body");
    assert_eq!(body["error_code"], "CPHGW.0101", "{body}");
    assert!(body["request_id"].as_str().is_some_and(|s| !s.is_empty()));
    let msg = body["error_msg"].as_str().expect("error_msg");
    assert!(!msg.is_empty());
    if let Some(token) = authorization.and_then(|h| h.strip_prefix("Bearer "))
        && token.len() > 8
    {
        assert!(!msg.contains(token), "the token is echoed: {msg}");
    }
    let stats = app.sim.stats();
    assert_eq!(stats.iam_requests, 0, "{stats:?}");
    assert_eq!(stats.batch_stop_requests, 0, "{stats:?}");
    let mut after = 0;
    for r in reasons {
        after += rejections(app, r).await;
    }
    assert_eq!(after, before + 1, "counted under one of {reasons:?}");
}

async fn assert_token_rejected(app: &TestApp, token: &str, reasons: &[&str]) {
    assert_rejected(app, Some(&format!("Bearer {token}")), reasons).await;
}

#[tokio::test]
async fn no_authorization_header() {
    let app = TestApp::spawn().await;
    assert_rejected(&app, None, &["missing"]).await;
}

#[tokio::test]
async fn basic_scheme() {
    let app = TestApp::spawn().await;
    assert_rejected(&app, Some("Basic eHl6OnN1cGVy"), &["missing"]).await;
}

#[tokio::test]
async fn empty_bearer() {
    let app = TestApp::spawn().await;
    assert_rejected(&app, Some("Bearer "), &["missing", "malformed"]).await;
    assert_rejected(&app, Some("Bearer"), &["missing", "malformed"]).await;
}

#[tokio::test]
async fn garbage_token() {
    let app = TestApp::spawn().await;
    assert_token_rejected(&app, "abc.def", &["malformed"]).await;
    assert_token_rejected(&app, "abc.def.ghi", &["malformed"]).await;
    assert_token_rejected(&app, "not-a-jwt-at-all", &["malformed"]).await;
}

#[tokio::test]
async fn alg_none() {
    let app = TestApp::spawn().await;
    let header = json!({"alg": "none", "typ": "JWT"});
    let token = raw_jwt(&header, &tenant_claims(), b"");
    assert_token_rejected(&app, &token, &["malformed", "algorithm"]).await;
    // The same with a "signature" that is not empty.
    let token = raw_jwt(&header, &tenant_claims(), b"sig");
    assert_token_rejected(&app, &token, &["malformed", "algorithm"]).await;
}

#[tokio::test]
async fn expired_beyond_leeway() {
    let app = TestApp::spawn().await;
    let mut c = tenant_claims();
    c["exp"] = (now() - 3600).into();
    c["nbf"] = (now() - 7200).into();
    c["iat"] = (now() - 7200).into();
    assert_token_rejected(&app, &mint(Algorithm::HS256, &c, None), &["expired"]).await;
    assert!(rejections(&app, "expired").await > 0);
    let text = app.metrics().await;
    assert!(
        text.contains("cphgw_jwt_rejections_total{reason=\"expired\"} 1"),
        "{text}"
    );
}

#[tokio::test]
async fn expired_within_leeway_still_works() {
    let app = TestApp::spawn().await;
    let mut c = tenant_claims();
    c["exp"] = (now() - 2).into();
    c["nbf"] = (now() - 60).into();
    let resp = stop_with(
        &app,
        Some(&format!("Bearer {}", mint(Algorithm::HS256, &c, None))),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert!(body["jobs"][0]["job_id"].is_string(), "{body}");
}

#[tokio::test]
async fn not_yet_valid() {
    let app = TestApp::spawn().await;
    let mut c = tenant_claims();
    c["nbf"] = (now() + 3600).into();
    c["exp"] = (now() + 7200).into();
    let token = mint(Algorithm::HS256, &c, None);
    assert_token_rejected(&app, &token, &["not_yet_valid"]).await;
}

#[tokio::test]
async fn wrong_issuer() {
    let app = TestApp::spawn().await;
    let mut c = tenant_claims();
    c["iss"] = "https://evil.example".into();
    let token = mint(Algorithm::HS256, &c, None);
    assert_token_rejected(&app, &token, &["issuer"]).await;
    c.as_object_mut().unwrap().remove("iss");
    let token = mint(Algorithm::HS256, &c, None);
    assert_token_rejected(&app, &token, &["issuer", "claims"]).await;
}

#[tokio::test]
async fn wrong_audience() {
    let app = TestApp::spawn().await;
    let mut c = tenant_claims();
    c["aud"] = "someone-else".into();
    let token = mint(Algorithm::HS256, &c, None);
    assert_token_rejected(&app, &token, &["audience"]).await;
    c.as_object_mut().unwrap().remove("aud");
    let token = mint(Algorithm::HS256, &c, None);
    assert_token_rejected(&app, &token, &["audience", "claims"]).await;
}

#[tokio::test]
async fn missing_sub() {
    let app = TestApp::spawn().await;
    let mut c = tenant_claims();
    c.as_object_mut().unwrap().remove("sub");
    let token = mint(Algorithm::HS256, &c, None);
    assert_token_rejected(&app, &token, &["claims"]).await;
    c["sub"] = "".into();
    let token = mint(Algorithm::HS256, &c, None);
    assert_token_rejected(&app, &token, &["claims"]).await;
}

#[tokio::test]
async fn missing_exp() {
    let app = TestApp::spawn().await;
    let mut c = tenant_claims();
    c.as_object_mut().unwrap().remove("exp");
    let token = mint(Algorithm::HS256, &c, None);
    assert_token_rejected(&app, &token, &["claims"]).await;
}

#[tokio::test]
async fn bad_signature() {
    let app = TestApp::spawn().await;
    let token = caller_token(TENANT_A);
    let sig_start = token.rfind('.').unwrap() + 1;
    // Flip a character in the middle of the signature (the last one may
    // only carry padding bits).
    let i = sig_start + 5;
    let flipped = if &token[i..=i] == "A" { "B" } else { "A" };
    let bad = format!("{}{flipped}{}", &token[..i], &token[i + 1..]);
    assert_ne!(bad, token);
    assert_token_rejected(&app, &bad, &["signature"]).await;
    // The good token still works (the failure is not cached against it).
    let resp = stop_with(&app, Some(&format!("Bearer {token}"))).await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn hs256_with_another_secret() {
    let app = TestApp::spawn().await;
    let token = hs256_with(
        b"another-secret-0123456789abcdef0123",
        &tenant_claims(),
        None,
    );
    assert_token_rejected(&app, &token, &["signature"]).await;
}

#[tokio::test]
async fn hs256_keyed_with_the_rsa_public_key_is_refused() {
    let pem = std::fs::read(keys_dir().join("rsa-public.pem")).unwrap();
    let files = format!("[\"{}\"]", keys_dir().join("rsa-public.pem").display());
    let app =
        TestApp::spawn_with(TestOptions::default().set("auth.public_key_files", &files)).await;
    let token = hs256_with(&pem, &tenant_claims(), None);
    assert_token_rejected(&app, &token, &["signature", "algorithm"]).await;
    // Also with the PEM's trailing newline trimmed, a common variant of the attack.
    let trimmed = String::from_utf8(pem).unwrap();
    let token = hs256_with(trimmed.trim().as_bytes(), &tenant_claims(), None);
    assert_token_rejected(&app, &token, &["signature", "algorithm"]).await;
    // The configured key itself works for RS256.
    let resp = stop_with(
        &app,
        Some(&format!(
            "Bearer {}",
            mint(Algorithm::RS256, &tenant_claims(), None)
        )),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn hs256_keyed_with_the_rsa_public_key_on_an_rsa_only_gateway() {
    let app = spawn_rsa_only().await;
    let pem = std::fs::read(keys_dir().join("rsa-public.pem")).unwrap();
    let token = hs256_with(&pem, &tenant_claims(), None);
    assert_token_rejected(&app, &token, &["algorithm"]).await;
    // The test secret is not accepted either: there is no HS256 key.
    assert_token_rejected(&app, &caller_token(TENANT_A), &["algorithm"]).await;
    let resp = stop_with(
        &app,
        Some(&format!(
            "Bearer {}",
            mint(Algorithm::RS256, &tenant_claims(), None)
        )),
    )
    .await;
    assert_eq!(resp.status(), StatusCode::OK);
}

#[tokio::test]
async fn rs256_and_es256_work_with_configured_public_keys() {
    let app = TestApp::spawn_with(with_keys()).await;
    for alg in [Algorithm::RS256, Algorithm::ES256, Algorithm::HS256] {
        // Each algorithm stops the same phone: start it again first.
        app.sim.start_phones();
        let token = mint(alg, &tenant_claims(), None);
        let resp = stop_with(&app, Some(&format!("Bearer {token}"))).await;
        assert_eq!(resp.status(), StatusCode::OK, "{alg:?}");
        let body: Value = resp.json().await.unwrap();
        assert!(body["jobs"][0]["job_id"].is_string(), "{alg:?}: {body}");
    }
}

#[tokio::test]
async fn rs256_signed_with_an_unknown_key() {
    let app = TestApp::spawn_with(with_keys()).await;
    // kid "key-2" makes `mint` sign with rsa2-private.pem.
    let token = mint(Algorithm::RS256, &tenant_claims(), Some("key-2"));
    assert_token_rejected(&app, &token, &["signature", "unknown_key"]).await;
}

#[tokio::test]
async fn rs256_against_an_hs256_only_gateway() {
    let app = TestApp::spawn().await;
    let token = mint(Algorithm::RS256, &tenant_claims(), None);
    assert_token_rejected(&app, &token, &["algorithm"]).await;
    let token = mint(Algorithm::ES256, &tenant_claims(), None);
    assert_token_rejected(&app, &token, &["algorithm"]).await;
}

#[tokio::test]
async fn es256_header_with_an_rsa_signature() {
    // alg swapped in the header of an RS256 token: never checked against the RSA key.
    let app = TestApp::spawn_with(with_keys()).await;
    let token = mint(Algorithm::RS256, &tenant_claims(), None);
    let mut parts = token.split('.');
    let (_, claims_part, sig) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let header = b64url(json!({"alg": "ES256", "typ": "JWT"}).to_string().as_bytes());
    let forged = format!("{header}.{claims_part}.{sig}");
    assert_token_rejected(&app, &forged, &["signature", "malformed"]).await;
}

#[tokio::test]
async fn rejections_are_counted_by_reason() {
    let app = TestApp::spawn().await;
    let mut c = tenant_claims();
    c["aud"] = "x".into();
    let token = mint(Algorithm::HS256, &c, None);
    for _ in 0..3 {
        let resp = stop_with(&app, Some(&format!("Bearer {token}"))).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    }
    let resp = stop_with(&app, None).await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(rejections(&app, "audience").await, 3);
    assert_eq!(rejections(&app, "missing").await, 1);
    assert_eq!(rejections(&app, "expired").await, 0);
    let text = app.metrics().await;
    assert!(
        text.contains("cphgw_jwt_rejections_total{reason=\"audience\"} 3"),
        "{text}"
    );
}

#[tokio::test]
async fn admin_endpoint_needs_the_admin_role() {
    let app = TestApp::spawn().await;
    let url = format!("{}/admin/v1/tenants", app.admin_url);

    let resp = app
        .client
        .get(&url)
        .bearer_auth(caller_token(TENANT_A))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::FORBIDDEN);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error_code"], "CPHGW.0103", "{body}");
    assert!(body["request_id"].is_string() && body["error_msg"].is_string());

    let resp = app.client.get(&url).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert_eq!(
        resp.headers()["www-authenticate"],
        "Bearer error=\"invalid_token\""
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error_code"], "CPHGW.0101", "{body}");

    let resp = app
        .client
        .get(&url)
        .bearer_auth(admin_token())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(
        body["tenants"][TENANT_A]["default_project"], PROJECT_A,
        "{body}"
    );
    assert!(body["tenants"][TENANT_B].is_object(), "{body}");
    assert!(!body.to_string().contains(IAM_PASSWORD));
}
