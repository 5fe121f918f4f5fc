//! `cph-gateway demo` (the real binary): it prints how to mint a token for
//! any tenant with its own config, and that command works for a tenant added
//! through the admin API.

use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;

/// Runs a printed command line (whitespace-separated, no quoting) with
/// `TENANT` replaced; returns its stdout.
fn run_printed(line: &str, tenant: &str) -> String {
    let line = line.replace("TENANT", tenant);
    let mut words = line.split_whitespace();
    let program = words.next().expect("a program");
    let out = Command::new(program)
        .args(words)
        .env_clear()
        .output()
        .expect("the printed command runs");
    assert!(
        out.status.success(),
        "{line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .expect("UTF-8")
        .trim()
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_prints_a_token_command_that_works_for_a_new_tenant() {
    let dir = tempfile::tempdir().expect("temp dir");
    let stdout = dir.path().join("demo.stdout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_cph-gateway"))
        .args([
            "demo",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .env_clear()
        // A harmless override: the demo names it.
        .env("CPHGW__LIMITS__TENANT_RATE_PER_S", "100000")
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&stdout).expect("stdout file"))
        .stderr(Stdio::null())
        .spawn()
        .expect("demo starts");
    let read = || std::fs::read_to_string(&stdout).unwrap_or_default();
    let ready = eventually(Duration::from_secs(20), async || {
        read().contains("Press Ctrl-C")
    })
    .await;
    let text = read();
    let guard = Term(child.id());
    assert!(ready, "the demo did not start:\n{text}");

    let note = text
        .lines()
        .find(|l| l.starts_with("Note: these CPHGW__ overrides"))
        .unwrap_or_else(|| panic!("no note of the overrides:\n{text}"));
    assert!(
        note.ends_with(": CPHGW__LIMITS__TENANT_RATE_PER_S"),
        "{note}"
    );

    let tenant_line = text
        .lines()
        .find(|l| l.contains(" token --tenant TENANT --config "))
        .unwrap_or_else(|| panic!("no token command for any tenant:\n{text}"));
    let admin_line = text
        .lines()
        .find(|l| l.contains(" token --admin "))
        .unwrap_or_else(|| panic!("no admin token command:\n{text}"));
    let admin_url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("admin API"))
        .map(|u| u.trim().to_owned())
        .expect("admin API address");
    let caller_url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("caller API"))
        .map(|u| u.trim().to_owned())
        .expect("caller API address");

    // A tenant added through the admin API, with a token of the printed command.
    let admin = run_printed(admin_line, "");
    let client = client();
    let resp = client
        .put(format!("{admin_url}/admin/v1/tenants/initech"))
        .bearer_auth(&admin)
        .json(&json!({"default_project": PROJECT_B, "projects": [
            {"project_id": PROJECT_B, "region": "cn-east-3", "credential": "default"}]}))
        .send()
        .await
        .expect("put");
    assert_eq!(resp.status(), StatusCode::CREATED);
    let caller = run_printed(tenant_line, "initech");
    let phone = cph_sim::phone_id(PROJECT_B, 0);
    let resp = client
        .post(format!("{caller_url}{STOP}"))
        .bearer_auth(&caller)
        .json(&json!({ "phone_ids": [phone] }))
        .send()
        .await
        .expect("stop");
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.expect("JSON");
    assert!(body["jobs"][0]["job_id"].is_string(), "{body}");
    drop(guard);
    let _ = child.wait();
}

/// Sends SIGTERM to the process when dropped (also when the test fails).
struct Term(u32);

impl Drop for Term {
    fn drop(&mut self) {
        let _ = Command::new("kill").arg(self.0.to_string()).status();
    }
}
