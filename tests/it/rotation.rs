//! Secrets read from files are re-read when the file changes: the IAM
//! password and the HS256 secret pair are rotated under a steady stream of
//! requests, without a restart and without a single failed request.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cph_gateway::config::{Credential, Secret};
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde_json::json;

use crate::helpers::*;

const SECRET_A: &str = "rotation-secret-A-0123456789abcdef0123456789";
const SECRET_B: &str = "rotation-secret-B-0123456789abcdef0123456789";
const SECRET_OLD: &str = "rotation-secret-0-0123456789abcdef0123456789";
const NEW_IAM_PASSWORD: &str = "rotated-iam-password";

/// Replaces a file the way a secret manager or the kubelet does: a new file
/// renamed over the old one.
fn replace_file(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, text).expect("write");
    std::fs::rename(&tmp, path).expect("rename");
}

/// Waits until the gateway's `secret` holds `value` (read in the process,
/// so that waiting sends no request).
async fn until_in_use(secret: &Secret, value: &str) {
    let used = eventually(Duration::from_secs(10), async || {
        secret.current().expose_secret() == value
    })
    .await;
    assert!(used, "{} did not take the new value", secret.key());
}

/// Callers that stop phones continuously with tokens signed by the secret
/// they are told to use, and count every answer that is not a success.
struct Traffic {
    secret: Arc<Mutex<&'static str>>,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    failures: Arc<Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(app: &TestApp, secret: &'static str) -> Self {
        let t = Traffic {
            secret: Arc::new(Mutex::new(secret)),
            stop: Arc::default(),
            sent: Arc::default(),
            failures: Arc::default(),
            tasks: Vec::new(),
        };
        let mut tasks = Vec::new();
        for worker in 0..4u32 {
            let (secret, stop, sent, failures) = (
                t.secret.clone(),
                t.stop.clone(),
                t.sent.clone(),
                t.failures.clone(),
            );
            let (client, url) = (app.client.clone(), format!("{}{STOP}", app.url));
            let ids = app.phones(PROJECT_A, worker * 100, 3);
            tasks.push(tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    let key = *secret.lock().expect("secret");
                    let token = hs256_with(key.as_bytes(), &claims(Some(TENANT_A), &[]), None);
                    let resp = client
                        .post(&url)
                        .bearer_auth(&token)
                        .json(&json!({ "phone_ids": ids }))
                        .send()
                        .await;
                    sent.fetch_add(1, Ordering::SeqCst);
                    let failure = match resp {
                        Err(e) => Some(format!("no answer: {e}")),
                        Ok(r) if r.status() != StatusCode::OK => Some(format!(
                            "{}: {}",
                            r.status(),
                            r.text().await.unwrap_or_default()
                        )),
                        Ok(r) => {
                            let body = r.text().await.unwrap_or_default();
                            body.contains("CPHGW.").then_some(body)
                        }
                    };
                    if let Some(f) = failure {
                        failures.lock().expect("failures").push(f);
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        Traffic { tasks, ..t }
    }

    fn use_secret(&self, secret: &'static str) {
        *self.secret.lock().expect("secret") = secret;
    }

    /// Lets at least `n` more requests through.
    async fn pass(&self, n: u64) {
        let target = self.sent.load(Ordering::SeqCst) + n;
        let done = eventually(Duration::from_secs(20), async || {
            self.sent.load(Ordering::SeqCst) >= target
        })
        .await;
        assert!(done, "the traffic stalled");
    }

    async fn finish(self) -> (u64, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        for t in self.tasks {
            t.await.expect("caller task");
        }
        let failures = self.failures.lock().expect("failures").clone();
        (self.sent.load(Ordering::SeqCst), failures)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn iam_password_and_hs256_secrets_rotate_without_a_failed_request() {
    let secrets = tempfile::tempdir().expect("temp dir");
    let file = |name: &str, value: &str| {
        let path = secrets.path().join(name);
        std::fs::write(&path, format!("{value}\n")).expect("write");
        path
    };
    let password = file("iam-password", IAM_PASSWORD);
    let current = file("jwt-secret", SECRET_A);
    let previous = file("jwt-secret-previous", SECRET_OLD);
    let app = TestApp::spawn_with(
        TestOptions::default()
            .without_hs256_secret()
            .set(
                "auth.hs256_secret_file",
                &format!("{:?}", current.display().to_string()),
            )
            .set(
                "auth.hs256_previous_secret_file",
                &format!("{:?}", previous.display().to_string()),
            )
            .replace(
                "password_env = \"TEST_IAM_PASSWORD\"",
                &format!("password_file = {:?}", password.display().to_string()),
            ),
    )
    .await;
    let config = app.gateway.state.config.clone();
    let (cur, prev) = (
        config.auth.hs256_secret.as_deref().expect("current secret"),
        config
            .auth
            .hs256_previous_secret
            .as_deref()
            .expect("previous secret"),
    );
    let Credential::Password(default) = &*config.iam.credentials["default"] else {
        panic!("the test credential is a password");
    };
    let iam = &default.password;

    let traffic = Traffic::start(&app, SECRET_A);
    traffic.pass(20).await;
    let token_a = hs256_with(SECRET_A.as_bytes(), &claims(Some(TENANT_A), &[]), None);
    assert_eq!(
        app.stop(&token_a, &app.phones(PROJECT_A, 900, 1)).await.0,
        StatusCode::OK
    );

    // 1. IAM: the password changes at IAM (the old one is refused from now
    // on), then in the file. The cached token keeps serving meanwhile.
    app.sim.set_iam_password(NEW_IAM_PASSWORD);
    traffic.pass(10).await;
    replace_file(&password, NEW_IAM_PASSWORD);
    until_in_use(iam, NEW_IAM_PASSWORD).await;
    // Every token issued so far is revoked: the next calls get 401, and the
    // gateway fetches a new token with the new password and sends again.
    let issued = app.sim.stats().tokens_issued;
    app.sim.revoke_tokens();
    traffic.pass(20).await;
    assert!(
        app.sim.stats().tokens_issued > issued,
        "no token was fetched with the new password"
    );

    // 2. HS256: the retiring secret A becomes the previous one, then B the
    // current one; callers move to B; A is retired.
    replace_file(&previous, SECRET_A);
    until_in_use(prev, SECRET_A).await;
    replace_file(&current, SECRET_B);
    until_in_use(cur, SECRET_B).await;
    traffic.pass(20).await;
    traffic.use_secret(SECRET_B);
    traffic.pass(20).await;
    replace_file(&previous, SECRET_B);
    until_in_use(prev, SECRET_B).await;
    traffic.pass(20).await;

    let (sent, failures) = traffic.finish().await;
    assert!(
        failures.is_empty(),
        "{} of {sent} requests failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(3)]
    );
    assert!(sent >= 150, "only {sent} requests");

    // A retired secret no longer verifies, also for a token verified (and
    // cached) before.
    let (status, body) = app.stop(&token_a, &app.phones(PROJECT_A, 900, 1)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "{body}");
    let status = app
        .client
        .get(format!("{}/admin/v1/status", app.admin_url))
        .bearer_auth(hs256_with(
            SECRET_B.as_bytes(),
            &claims(None, &[ADMIN_ROLE]),
            None,
        ))
        .send()
        .await
        .expect("status");
    let body: serde_json::Value = status.json().await.expect("JSON");
    assert!(
        body["credentials"]["default"]["last_error"].is_null(),
        "{body}"
    );
}
