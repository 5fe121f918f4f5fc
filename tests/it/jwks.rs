//! The JWKS over time: re-fetched on a timer (a `Cache-Control: max-age`
//! wins, clamped to 60..86400 s) as well as on an unknown kid; a withdrawn
//! key stops verifying at the next refresh, also for tokens already in the
//! verified-token cache; a failed fetch keeps the last good keys; the state
//! is in `/admin/v1/status`; an unreachable JWKS is named as the reason.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::jwks::{JwksServer, jwks};
use crate::helpers::*;

fn token(kid: Option<&str>, private_key: &str) -> String {
    let mut c = claims(Some(TENANT_A), &[]);
    c["jti"] = format!("{:032x}", rand::random::<u128>()).into();
    rs256_with(private_key, &c, kid)
}

async fn stop_status(app: &TestApp, token: &str) -> (StatusCode, Value) {
    app.sim.start_phones();
    app.stop(token, &app.phones(PROJECT_A, 0, 1)).await
}

/// The `jwks` part of `/admin/v1/status`.
async fn jwks_status(app: &TestApp) -> Value {
    let resp = app
        .client
        .get(format!("{}/admin/v1/status", app.admin_url))
        .bearer_auth(admin_token())
        .send()
        .await
        .expect("status");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("JSON");
    body["jwks"].clone()
}

/// A gateway whose only asymmetric keys come from `server` (plus the test
/// HS256 secret, for the admin calls).
async fn spawn(server: &JwksServer, interval_s: &str, cooldown_s: &str) -> TestApp {
    TestApp::spawn_with(
        TestOptions::default()
            .set("auth.jwks_url", &format!("\"{}\"", server.url))
            .set("auth.jwks_refresh_interval_s", interval_s)
            .set("auth.jwks_refresh_cooldown_s", cooldown_s),
    )
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_withdrawn_key_stops_verifying_at_the_next_refresh_even_when_cached() {
    let server = JwksServer::start(jwks(&["rsa-jwk.json", "rsa2-jwk.json"])).await;
    let app = spawn(&server, "600", "0").await;
    let with_kid = token(Some("key-2"), "rsa2-private.pem");
    // Without a kid: checked against every JWKS key of its algorithm.
    let without_kid = token(None, "rsa2-private.pem");
    let key1 = token(Some("key-1"), "rsa-private.pem");
    for (t, what) in [(&with_kid, "kid key-2"), (&without_kid, "no kid, key-2")] {
        for attempt in ["first", "cached"] {
            let (status, body) = stop_status(&app, t).await;
            assert_eq!(status, StatusCode::OK, "{what} {attempt}: {body}");
        }
    }

    // The IdP withdraws key-2; an unknown kid makes the gateway refresh.
    server.set(200, jwks(&["rsa-jwk.json"]));
    let fetches = server.fetches();
    let (status, _) = stop_status(&app, &token(Some("key-9"), "rsa-private.pem")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(server.fetches(), fetches + 1, "the unknown kid refreshed");

    for (t, what) in [(&with_kid, "kid key-2"), (&without_kid, "no kid, key-2")] {
        let (status, body) = stop_status(&app, t).await;
        assert_eq!(
            status,
            StatusCode::UNAUTHORIZED,
            "{what} after withdrawal: {body}"
        );
        assert_eq!(body["error_code"], "CPHGW.0101", "{body}");
    }
    let (status, body) = stop_status(&app, &key1).await;
    assert_eq!(status, StatusCode::OK, "key-1 stays: {body}");
    assert_eq!(jwks_status(&app).await["keys"], 1);
}

/// Slow by nature (about a minute): the shortest refresh period is 60 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwks_is_refetched_on_a_timer_and_max_age_wins() {
    let server = JwksServer::start(jwks(&["rsa-jwk.json", "rsa2-jwk.json"])).await;
    // max-age=1 is clamped to 60 s, and wins over the configured 86400 s.
    server.set_cache_control(Some("public, max-age=1"));
    let started = Instant::now();
    let app = spawn(&server, "86400", "60").await;
    assert_eq!(server.fetches(), 1, "fetched at start");
    let key2 = token(Some("key-2"), "rsa2-private.pem");
    let (status, body) = stop_status(&app, &key2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let first = jwks_status(&app).await;
    assert_eq!(first["keys"], 2, "{first}");
    assert!(first["fetched_at"].is_string(), "{first}");

    server.set(200, jwks(&["rsa-jwk.json"]));
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(server.fetches(), 1, "max-age=1 is clamped to 60 s");
    // No request in between: only the timer can fetch.
    let refetched = eventually(Duration::from_secs(80), async || server.fetches() >= 2).await;
    assert!(refetched, "no refresh within 85 s");
    let after = started.elapsed();
    assert!(
        after >= Duration::from_secs(59),
        "refetched after {after:?}"
    );

    let (status, body) = stop_status(&app, &key2).await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "cached key-2 token: {body}"
    );
    let (status, body) = stop_status(&app, &token(Some("key-1"), "rsa-private.pem")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let now = jwks_status(&app).await;
    assert_eq!(now["keys"], 1, "{now}");
    assert_ne!(now["fetched_at"], first["fetched_at"], "{now}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_refresh_keeps_the_last_good_keys_and_the_status_says_why() {
    let server = JwksServer::start(jwks(&["rsa-jwk.json"])).await;
    let app = spawn(&server, "600", "0").await;
    let good = jwks_status(&app).await;
    assert_eq!(good["keys"], 1, "{good}");
    assert!(good["last_error"].is_null(), "{good}");

    for (status, body, says) in [
        (500, "{}".to_owned(), "500"),
        (200, "{\"keys\": []}".to_owned(), "no usable key"),
        (200, "x".repeat(2 * 1024 * 1024), "larger than"),
    ] {
        server.set(status, body);
        let (code, _) = stop_status(&app, &token(Some("key-9"), "rsa-private.pem")).await;
        assert_eq!(code, StatusCode::UNAUTHORIZED);
        let (code, answer) = stop_status(&app, &token(Some("key-1"), "rsa-private.pem")).await;
        assert_eq!(
            code,
            StatusCode::OK,
            "key-1 after a failed fetch ({says}): {answer}"
        );
        let state = jwks_status(&app).await;
        assert_eq!(state["keys"], 1, "{state}");
        assert_eq!(state["fetched_at"], good["fetched_at"], "{state}");
        let error = state["last_error"].as_str().unwrap_or_default();
        assert!(error.contains(says), "{says}: {state}");
    }

    server.set(200, jwks(&["rsa-jwk.json", "rsa2-jwk.json"]));
    let (code, body) = stop_status(&app, &token(Some("key-2"), "rsa2-private.pem")).await;
    assert_eq!(code, StatusCode::OK, "{body}");
    let state = jwks_status(&app).await;
    assert_eq!(state["keys"], 2, "{state}");
    assert!(state["last_error"].is_null(), "{state}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_jwks_is_named_as_the_reason() {
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("port")
        .port();
    let app = TestApp::spawn_with(
        TestOptions::default()
            .set(
                "auth.jwks_url",
                &format!("\"http://127.0.0.1:{port}/jwks.json\""),
            )
            .set("auth.jwks_refresh_cooldown_s", "0"),
    )
    .await;
    for (what, t) in [
        ("kid", token(Some("key-1"), "rsa-private.pem")),
        ("no kid", token(None, "rsa-private.pem")),
    ] {
        let (status, body) = stop_status(&app, &t).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{what}: {body}");
        let msg = body["error_msg"].as_str().unwrap_or_default();
        assert!(
            msg.contains("no key set could be fetched from auth.jwks_url"),
            "{what}: {msg}"
        );
    }
    let metrics = app.metrics().await;
    assert_eq!(
        sample(
            &metrics,
            "cphgw_jwt_rejections_total{reason=\"jwks_unavailable\"}"
        ),
        Some(2.0),
        "{metrics}"
    );
    let state = jwks_status(&app).await;
    assert_eq!(state["keys"], 0, "{state}");
    assert!(state["fetched_at"].is_null(), "{state}");
    assert!(
        state["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("connection")),
        "{state}"
    );
    // HS256 callers are not affected.
    let (status, body) = stop_status(&app, &caller_token(TENANT_A)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
}
