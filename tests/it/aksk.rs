//! AK/SK credentials end to end: a project whose credential is `kind =
//! "aksk"` has every CPH call signed and makes no IAM call; a refused
//! signature is final; temporary keys carry their security token; a rotated
//! key file takes effect without a restart; tenants mix credential kinds.

use std::path::Path;
use std::time::Duration;

use cph_sim::{AkSkCredential, DEFAULT_AK, DEFAULT_SK};
use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;

/// acme: project A with the password credential (`default`), project A2
/// with the AK/SK credential `signed`.
fn mixed_tenants() -> String {
    tenant_toml(
        TENANT_A,
        PROJECT_A,
        &[
            (PROJECT_A, "cn-east-3", "default"),
            (PROJECT_A2, "cn-north-4", "signed"),
        ],
    )
}

/// Options with the AK/SK credential `signed`: `keys` are `(config key
/// suffix, value)` pairs such as `("access_key_env", "TEST_AK")`.
fn signed_credential(keys: &[(&str, &str)]) -> TestOptions {
    keys.iter().fold(
        TestOptions::default()
            .tenants(&mixed_tenants())
            .set("iam.credentials.signed.kind", "aksk"),
        |opts, (key, value)| opts.set(&format!("iam.credentials.signed.{key}"), value),
    )
}

fn stop_path(project: &str) -> String {
    format!("/v1/{project}/cloud-phone/phones/batch-stop")
}

fn write(path: &Path, text: &str) -> String {
    std::fs::write(path, text).expect("write key file");
    path.display().to_string()
}

fn error_codes(body: &Value) -> Vec<&str> {
    body["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs in {body}"))
        .iter()
        .map(|j| j["error_code"].as_str().unwrap_or("job"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_projects_make_no_iam_call_and_tenants_mix_kinds() {
    let app = TestApp::spawn_with(
        signed_credential(&[("access_key_env", "TEST_AK"), ("secret_key_env", "TEST_SK")])
            .env("TEST_AK", DEFAULT_AK)
            .env("TEST_SK", DEFAULT_SK),
    )
    .await;
    let token = caller_token(TENANT_A);
    let ids = app.phones(PROJECT_A2, 0, 250);
    let (status, body) = app.stop_at(&stop_path(PROJECT_A2), &token, &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    assert!(error_codes(&body).iter().all(|c| *c == "job"), "{body}");
    let stats = app.sim.stats();
    assert_eq!(
        (stats.batch_stop_requests, stats.signed_requests),
        (3, 3),
        "{stats:?}"
    );
    assert_eq!((stats.iam_requests, stats.unauthorized), (0, 0));

    // The job query is signed too.
    let job = body["jobs"][0]["job_id"].as_str().unwrap();
    let (status, _, text) = app
        .get(&format!("/v1/{PROJECT_A2}/cloud-phone/jobs/{job}"), &token)
        .await;
    assert_eq!(status, StatusCode::OK, "{text}");
    let stats = app.sim.stats();
    assert_eq!((stats.signed_requests, stats.job_queries), (4, 1));
    assert_eq!(stats.iam_requests, 0);

    // The same tenant's password project still uses an IAM token.
    let ids = app.phones(PROJECT_A, 0, 2);
    let (status, body) = app.stop(&token, &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let stats = app.sim.stats();
    assert_eq!((stats.iam_requests, stats.signed_requests), (1, 4));
}

#[tokio::test]
async fn a_refused_signature_is_final() {
    let app = TestApp::spawn_with(
        signed_credential(&[("access_key_env", "TEST_AK"), ("secret_key_env", "TEST_SK")])
            .env("TEST_AK", DEFAULT_AK)
            .env("TEST_SK", "not-the-secret-key"),
    )
    .await;
    let token = caller_token(TENANT_A);
    let ids = app.phones(PROJECT_A2, 0, 150);
    let (status, body) = app.stop_at(&stop_path(PROJECT_A2), &token, &ids).await;
    // No batch got a definite answer: 502, and each phone says why.
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_accounts_for(&ids, &body);
    assert!(
        error_codes(&body).iter().all(|c| *c == "APIGW.0301"),
        "{body}"
    );
    let msg = body["jobs"][0]["error_msg"].as_str().unwrap();
    assert!(msg.contains("signature"), "{msg}");
    assert!(!body.to_string().contains("not-the-secret-key"));
    // One call per batch: no renewal, no retry, no IAM.
    let stats = app.sim.stats();
    assert_eq!(
        (
            stats.batch_stop_requests,
            stats.unauthorized,
            stats.iam_requests
        ),
        (2, 2, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn temporary_keys_send_their_security_token() {
    const TMP_AK: &str = "TMPAKEXAMPLE000000001";
    const TMP_SK: &str = "tmp-secret-key-00000000000000000000";
    const TMP_TOKEN: &str = "gQpjbi1lYXN0LTMtemporary/security+token==";
    let keys = tempfile::tempdir().unwrap();
    let sk = write(&keys.path().join("sk"), &format!("{TMP_SK}\n"));
    let st = write(&keys.path().join("token"), &format!("{TMP_TOKEN}\n"));
    let app = TestApp::spawn_with(
        signed_credential(&[
            ("access_key_env", "TEST_AK"),
            ("secret_key_file", &sk),
            ("security_token_file", &st),
        ])
        .env("TEST_AK", TMP_AK)
        .sim(|o| o.aksk = vec![AkSkCredential::temporary(TMP_AK, TMP_SK, TMP_TOKEN)]),
    )
    .await;
    let token = caller_token(TENANT_A);
    let ids = app.phones(PROJECT_A2, 0, 3);
    let (status, body) = app.stop_at(&stop_path(PROJECT_A2), &token, &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(error_codes(&body).iter().all(|c| *c == "job"), "{body}");
    let stats = app.sim.stats();
    assert_eq!((stats.signed_requests, stats.iam_requests), (1, 0));

    // An expired token replaced by a new one in its file: the simulator
    // accepts only the new one, and the gateway picks it up by itself.
    app.sim.set_aksk(vec![AkSkCredential::temporary(
        TMP_AK,
        TMP_SK,
        "renewed-security-token",
    )]);
    let (status, body) = app.stop_at(&stop_path(PROJECT_A2), &token, &ids[..1]).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    write(&keys.path().join("token"), "renewed-security-token\n");
    let more = app.phones(PROJECT_A2, 10, 1);
    let stopped = eventually(Duration::from_secs(5), async || {
        let (status, _) = app.stop_at(&stop_path(PROJECT_A2), &token, &more).await;
        status == StatusCode::OK
    })
    .await;
    assert!(stopped, "the renewed security token was not picked up");
}

#[tokio::test]
async fn a_rotated_secret_key_file_takes_effect_without_restart() {
    let keys = tempfile::tempdir().unwrap();
    let ak = write(&keys.path().join("ak"), &format!("{DEFAULT_AK}\n"));
    let sk = write(&keys.path().join("sk"), &format!("{DEFAULT_SK}\n"));
    let app = TestApp::spawn_with(signed_credential(&[
        ("access_key_file", &ak),
        ("secret_key_file", &sk),
    ]))
    .await;
    let token = caller_token(TENANT_A);
    let stop = async |from: u32| {
        let ids = app.phones(PROJECT_A2, from, 1);
        app.stop_at(&stop_path(PROJECT_A2), &token, &ids).await
    };
    let (status, body) = stop(0).await;
    assert_eq!(status, StatusCode::OK, "{body}");

    // The key is rotated at Huawei: the old one is refused from now on.
    const NEW_AK: &str = "SIMAKROTATED0000000002";
    const NEW_SK: &str = "rotated-secret-key-000000000000000000";
    app.sim.set_aksk(vec![AkSkCredential::new(NEW_AK, NEW_SK)]);
    let (status, body) = stop(1).await;
    assert_eq!(status, StatusCode::BAD_GATEWAY, "{body}");
    assert_eq!(error_codes(&body), ["APIGW.0301"]);

    // The new key reaches the gateway's files (as a mounted Secret does).
    write(&keys.path().join("ak"), &format!("{NEW_AK}\n"));
    write(&keys.path().join("sk"), &format!("{NEW_SK}\n"));
    let mut n = 2;
    let stopped = eventually(Duration::from_secs(5), async || {
        n += 1;
        stop(n).await.0 == StatusCode::OK
    })
    .await;
    assert!(stopped, "the rotated key was not picked up");
    assert_eq!(app.sim.stats().iam_requests, 0);
}
