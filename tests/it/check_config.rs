//! `check-config` of the real binary: a private key where a public one is
//! expected is refused naming the key; `--online` tries an IAM token per
//! credential and region used by a tenant and the JWKS, one line each, and
//! exits 1 if any fails.

use std::path::{Path, PathBuf};

use cph_sim::Sim;

use crate::helpers::jwks::{JwksServer, jwks};
use crate::helpers::*;

/// Runs `check-config --config config [args]` with the test secrets and
/// `env`, off the async threads; returns (exit code, stdout + stderr).
async fn check_config(config: &Path, args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_cph-gateway"));
    cmd.arg("check-config")
        .arg("--config")
        .arg(config)
        .args(args)
        .env_clear()
        .envs(secret_env())
        .envs(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .expect("join")
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn lines_starting<'a>(text: &'a str, prefix: &str) -> Vec<&'a str> {
    text.lines().filter(|l| l.starts_with(prefix)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_private_key_in_public_key_files_is_refused_naming_it() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "http://127.0.0.1:9");
    let key = |f: &str| keys_dir().join(f).display().to_string();
    let list = format!("[{:?}, {:?}]", key("ec-public.pem"), key("rsa-private.pem"));
    let (code, out) = check_config(&config, &[], &[("CPHGW__AUTH__PUBLIC_KEY_FILES", &list)]).await;
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("auth.public_key_files[1]") && out.contains("PRIVATE key"),
        "{out}"
    );
    assert!(!out.contains("BEGIN"), "the key is quoted: {out}");
    let list = format!("[{:?}, {:?}]", key("ec-public.pem"), key("rsa-public.pem"));
    let (code, out) = check_config(&config, &[], &[("CPHGW__AUTH__PUBLIC_KEY_FILES", &list)]).await;
    assert_eq!(code, Some(0), "{out}");
}

/// The test config for `sim`, with a JWKS URL, in a new directory.
fn online_config(dir: &Path, sim: &Sim, jwks_url: &str) -> PathBuf {
    let config = write_config(dir, &sim.url());
    let text = std::fs::read_to_string(&config).expect("config");
    let text = text.replace("[iam]\n", &format!("jwks_url = {jwks_url:?}\n\n[iam]\n"));
    std::fs::write(&config, text).expect("write");
    config
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_checks_pass_against_working_iam_and_jwks() {
    let sim = Sim::start(Default::default()).await.expect("sim");
    let server = JwksServer::start(jwks(&["rsa-jwk.json", "rsa2-jwk.json"])).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let config = online_config(dir.path(), &sim, &server.url);

    // Offline, nothing is called.
    let (code, out) = check_config(&config, &[], &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(sim.stats().iam_requests, 0);
    assert_eq!(server.fetches(), 0);

    let (code, out) = check_config(&config, &["--online"], &[]).await;
    assert_eq!(code, Some(0), "{out}");
    // acme uses "default" in two regions, globex in one of them: two IAM lines.
    let iam = lines_starting(&out, "PASS IAM token of credential \"default\"");
    assert_eq!(iam.len(), 2, "{out}");
    assert!(
        iam.iter().any(|l| l.contains("cn-east-3")) && iam.iter().any(|l| l.contains("cn-north-4")),
        "{out}"
    );
    let jwks_line = lines_starting(&out, "PASS JWKS");
    assert_eq!(jwks_line.len(), 1, "{out}");
    assert!(jwks_line[0].contains("2 usable keys"), "{out}");
    assert!(!out.contains("FAIL"), "{out}");
    assert_eq!(sim.stats().tokens_issued, 2);
    assert!(
        !out.contains(IAM_PASSWORD) && !out.contains(JWT_SECRET),
        "{out}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_checks_fail_with_the_reason_and_exit_1() {
    let sim = Sim::start(Default::default()).await.expect("sim");
    let server = JwksServer::start(String::new()).await;
    server.set(503, "{}".into());
    let dir = tempfile::tempdir().expect("temp dir");
    let config = online_config(dir.path(), &sim, &server.url);
    const WRONG: &str = "wrong-iam-password";

    let (code, out) = check_config(&config, &["--online"], &[("TEST_IAM_PASSWORD", WRONG)]).await;
    assert_eq!(code, Some(1), "{out}");
    let failed = lines_starting(&out, "FAIL IAM token of credential \"default\"");
    assert_eq!(failed.len(), 2, "{out}");
    for line in failed {
        assert!(
            line.contains("401") && line.contains("The username or password is wrong."),
            "{line}"
        );
    }
    let jwks_line = lines_starting(&out, "FAIL JWKS");
    assert!(
        jwks_line.len() == 1 && jwks_line[0].contains("503"),
        "{out}"
    );
    assert!(out.contains("3 of 3 online checks failed"), "{out}");
    assert!(!out.contains(WRONG), "{out}");

    // A region of the right shape that does not exist: its IAM endpoint
    // cannot be resolved.
    std::fs::write(
        dir.path().join("tenants.toml"),
        tenant_toml(
            TENANT_A,
            PROJECT_A,
            &[(PROJECT_A, "xx-nowhere-9", "default")],
        ),
    )
    .expect("write");
    server.set(200, jwks(&["rsa-jwk.json"]));
    let (code, out) = check_config(
        &config,
        &["--online"],
        &[("CPHGW__IAM__ENDPOINT", "\"http://iam.{region}.invalid\"")],
    )
    .await;
    assert_eq!(code, Some(1), "{out}");
    let failed = lines_starting(&out, "FAIL IAM token of credential \"default\"");
    assert_eq!(failed.len(), 1, "{out}");
    assert!(failed[0].contains("region xx-nowhere-9"), "{out}");
    assert!(failed[0].contains("unreachable"), "{out}");
    assert_eq!(lines_starting(&out, "PASS JWKS").len(), 1, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_it_counts_the_files_tenants_and_does_not_count_a_stores() {
    let dir = tempfile::tempdir().expect("temp dir");
    let config = write_config(dir.path(), "http://127.0.0.1:9");
    let tenants = std::fs::read_to_string(dir.path().join("tenants.toml")).expect("tenants");
    let expected = tenants
        .lines()
        .filter(|l| l.starts_with("[tenants.") && !l.contains(".projects"))
        .count();
    assert!(expected > 0, "{tenants}");
    let (code, out) = check_config(&config, &[], &[]).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.starts_with(&format!("config OK: {expected} tenants, ")),
        "{out}"
    );

    // With a store the mapping is the store's: offline, nothing is read, and
    // no count is claimed for it.
    let store = [
        ("CPHGW__STORE__URL_ENV", "TEST_STORE_URL"),
        ("TEST_STORE_URL", "postgres://postgres@127.0.0.1:9/absent"),
    ];
    let (code, out) = check_config(&config, &[], &store).await;
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("tenants from the shared store"), "{out}");
    assert!(!out.contains(" 0 tenants"), "{out}");
}
