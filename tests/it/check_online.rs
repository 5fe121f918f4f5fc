//! `check-config --online`: a signed CPH call per AK/SK credential that a
//! tenant uses (next to the IAM token of each password credential), one
//! PASS/FAIL line each; and the `sim` command serving
//! HTTPS with its own AK/SK credential.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cph_sim::{DEFAULT_AK, DEFAULT_SK, Sim, SimOptions};

use crate::helpers::tls::TestCa;
use crate::helpers::*;

/// acme: A (password), A2 (AK/SK `signed`); globex: B (AK/SK `wrong`).
fn tenants() -> String {
    format!(
        "{}\n{}",
        tenant_toml(
            TENANT_A,
            PROJECT_A,
            &[
                (PROJECT_A, "cn-east-3", "default"),
                (PROJECT_A2, "cn-north-4", "signed"),
            ],
        ),
        tenant_toml(TENANT_B, PROJECT_B, &[(PROJECT_B, "cn-east-3", "wrong")]),
    )
}

const CREDENTIALS: &[(&str, &str)] = &[
    ("CPHGW__IAM__CREDENTIALS__SIGNED__KIND", "aksk"),
    ("CPHGW__IAM__CREDENTIALS__SIGNED__ACCESS_KEY_ENV", "TEST_AK"),
    ("CPHGW__IAM__CREDENTIALS__SIGNED__SECRET_KEY_ENV", "TEST_SK"),
    ("CPHGW__IAM__CREDENTIALS__WRONG__KIND", "aksk"),
    ("CPHGW__IAM__CREDENTIALS__WRONG__ACCESS_KEY_ENV", "TEST_AK"),
    (
        "CPHGW__IAM__CREDENTIALS__WRONG__SECRET_KEY_ENV",
        "TEST_WRONG_SK",
    ),
];

/// Writes the config for `url` with [`tenants`]; returns its path.
fn config(dir: &Path, url: &str) -> std::path::PathBuf {
    let config = write_config(dir, url);
    std::fs::write(dir.join("tenants.toml"), tenants()).unwrap();
    config
}

/// `check-config --online`: (exit code, stdout + stderr).
fn check_online(config: &Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_cph-gateway"))
        .args(["check-config", "--online", "--config"])
        .arg(config)
        .env_clear()
        .envs(secret_env())
        .envs(CREDENTIALS.iter().copied())
        .envs(env.iter().copied())
        .output()
        .expect("the binary runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn online_check_makes_one_signed_call_per_aksk_credential() {
    let sim = Sim::start(SimOptions::default()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = config(dir.path(), &sim.url());
    let keys = [
        ("TEST_AK", DEFAULT_AK),
        ("TEST_SK", DEFAULT_SK),
        ("TEST_WRONG_SK", "not-the-secret-key"),
    ];
    let (code, out) = check_online(&config, &keys);
    assert_eq!(code, Some(1), "{out}");
    let pass = out
        .lines()
        .find(|l| l.starts_with("PASS AK/SK credential \"signed\""))
        .unwrap_or_else(|| panic!("no PASS line for signed: {out}"));
    assert!(
        pass.contains(PROJECT_A2) && pass.contains("HTTP 200"),
        "{pass}"
    );
    let fail = out
        .lines()
        .find(|l| l.starts_with("FAIL AK/SK credential \"wrong\""))
        .unwrap_or_else(|| panic!("no FAIL line for wrong: {out}"));
    assert!(
        fail.contains("refused the signature") && fail.contains("APIGW.0301"),
        "{fail}"
    );
    // The password credential "default" (acme's project A) gets its IAM
    // token line too.
    let iam = out
        .lines()
        .find(|l| l.starts_with("PASS IAM token of credential \"default\""))
        .unwrap_or_else(|| panic!("no IAM line for default: {out}"));
    assert!(iam.contains(PROJECT_A), "{iam}");
    assert!(out.contains("1 of 3 online checks failed"), "{out}");
    assert!(!out.contains(DEFAULT_SK) && !out.contains("not-the-secret-key"));
    let stats = sim.stats();
    assert_eq!(
        (
            stats.job_list_requests,
            stats.signed_requests,
            stats.unauthorized
        ),
        (2, 1, 1)
    );
    assert_eq!(stats.iam_requests, 1, "one IAM token, for \"default\"");

    // With the right key for both, every line passes.
    let keys = [
        ("TEST_AK", DEFAULT_AK),
        ("TEST_SK", DEFAULT_SK),
        ("TEST_WRONG_SK", DEFAULT_SK),
    ];
    let (code, out) = check_online(&config, &keys);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.lines().filter(|l| l.starts_with("PASS")).count(), 3);
}

/// A `cph-gateway sim` child process, killed on drop.
struct SimProcess(std::process::Child);

impl Drop for SimProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_sim_command_serves_https_with_its_own_keys() {
    let dir = tempfile::tempdir().unwrap();
    let ca = TestCa::new("sim command CA");
    let server = ca.server("cph-sim");
    let (cert, key, ca_file) = (
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
        dir.path().join("ca.pem"),
    );
    std::fs::write(&cert, &server.cert).unwrap();
    std::fs::write(&key, &server.key).unwrap();
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let _sim = SimProcess(
        Command::new(env!("CARGO_BIN_EXE_cph-gateway"))
            .args(["sim", "--listen", &format!("127.0.0.1:{port}")])
            .args(["--access-key", "CLIAK0000000000000001"])
            .args(["--secret-key", "cli-secret-key-0000000000000000000"])
            .arg("--tls-cert")
            .arg(&cert)
            .arg("--tls-key")
            .arg(&key)
            .env_clear()
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the sim command starts"),
    );
    let url = format!("https://localhost:{port}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca.pem().as_bytes()).unwrap())
        .build()
        .unwrap();
    let up = eventually(Duration::from_secs(10), async || {
        client
            .get(format!("{url}/sim/v1/stats"))
            .send()
            .await
            .is_ok()
    })
    .await;
    assert!(up, "the sim command did not serve HTTPS");

    let config = config(dir.path(), &url);
    let ca_file = ca_file.display().to_string();
    let mut env = vec![
        ("CPHGW__UPSTREAM__CA_FILE", ca_file.as_str()),
        ("TEST_AK", "CLIAK0000000000000001"),
        ("TEST_SK", "cli-secret-key-0000000000000000000"),
        ("TEST_WRONG_SK", "cli-secret-key-0000000000000000000"),
    ];
    let (code, out) = check_online(&config, &env);
    assert_eq!(code, Some(0), "{out}");

    // Without the CA, the same check says what is wrong.
    env.remove(0);
    let (code, out) = check_online(&config, &env);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("TLS certificate problem"), "{out}");
}
