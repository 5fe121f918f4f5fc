//! The tenants file as an attacker (or a bad deploy) leaves it: a FIFO, a
//! link to `/dev/zero`, a directory, a dangling link, a file with no
//! tenants. None can wedge reload, PUT, SIGHUP or shutdown, and none
//! unmaps the tenants.

use std::path::Path;
use std::time::{Duration, Instant};

use cph_sim::Sim;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::process::GatewayProcess;
use crate::helpers::*;

/// Replaces `path` with something that is not a regular file.
fn make_odd(path: &Path, kind: &str) {
    let _ = std::fs::remove_file(path);
    match kind {
        "fifo" => {
            let ok = std::process::Command::new("mkfifo")
                .arg(path)
                .status()
                .expect("mkfifo runs");
            assert!(ok.success());
        }
        // A device like /dev/zero, made beside the file where the test may
        // (as root), so that a gateway that wrongly replaced the link's
        // target would not replace the system's /dev/zero.
        "dev_zero" => {
            let own = path.with_file_name("zero");
            let made = std::process::Command::new("mknod")
                .arg(&own)
                .args(["c", "1", "5"])
                .status()
                .is_ok_and(|s| s.success());
            let target = if made { own } else { "/dev/zero".into() };
            std::os::unix::fs::symlink(target, path).expect("symlink");
        }
        "directory" => std::fs::create_dir(path).expect("mkdir"),
        "dangling" => {
            std::os::unix::fs::symlink(path.with_extension("gone"), path).expect("symlink")
        }
        other => panic!("{other}"),
    }
}

/// An admin call with a 3 s bound: the status, or None if it hung.
async fn admin_call(
    gw: &GatewayProcess,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> Option<u16> {
    let mut req = client()
        .request(method, format!("{}{path}", gw.admin_url))
        .bearer_auth(admin_token());
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = tokio::time::timeout(Duration::from_secs(3), req.send())
        .await
        .ok()?;
    resp.ok().map(|r| r.status().as_u16())
}

async fn stop_status(gw: &GatewayProcess, tenant: &str, project: &str) -> Option<StatusCode> {
    let req = client()
        .post(format!("{}{STOP}", gw.url))
        .bearer_auth(caller_token(tenant))
        .json(&json!({"phone_ids": [cph_sim::phone_id(project, 1)]}))
        .send();
    tokio::time::timeout(Duration::from_secs(3), req)
        .await
        .ok()?
        .ok()
        .map(|r| r.status())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn odd_tenants_paths_cannot_wedge_reload_put_sighup_or_shutdown() {
    let sim = Sim::start(Default::default()).await.expect("sim");
    for kind in ["fifo", "dev_zero", "directory", "dangling"] {
        let mut gw =
            GatewayProcess::start_against(&sim, &[("CPHGW__SERVER__SHUTDOWN_GRACE_MS", "2000")])
                .await;
        let started = Instant::now();
        make_odd(&gw.tenants_file(), kind);
        // The watcher meets it every 200 ms; reload and SIGHUP meet it now.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let reload = admin_call(&gw, Method::POST, "/admin/v1/reload", None).await;
        gw.signal("HUP");
        let health = reqwest::get(format!("{}/healthz", gw.admin_url))
            .await
            .map(|r| r.status());
        let stop = stop_status(&gw, TENANT_A, PROJECT_A).await;
        let body = json!({"default_project": PROJECT_A, "projects": [
            {"project_id": PROJECT_A, "region": "cn-east-3", "credential": "default"}]});
        let put = if kind == "dev_zero" && !gw.tenants_file().with_file_name("zero").exists() {
            Some(0) // never risk the system's /dev/zero
        } else {
            admin_call(&gw, Method::PUT, "/admin/v1/tenants/initech", Some(body)).await
        };
        let signalled = Instant::now();
        gw.signal("TERM");
        let exit = gw.wait_exit(Duration::from_secs(5)).await;
        println!(
            "{kind}: reload {reload:?}, healthz {health:?}, stop {stop:?}, PUT {put:?}, \
             exit {exit:?} {:?} after SIGTERM ({:?} in all)",
            signalled.elapsed(),
            started.elapsed()
        );
        assert_eq!(reload, Some(400), "{kind}: reload");
        assert!(health.is_ok_and(|s| s == StatusCode::OK), "{kind}: healthz");
        assert_eq!(
            stop,
            Some(StatusCode::OK),
            "{kind}: the last good mapping stays"
        );
        assert!(put.is_some(), "{kind}: PUT hung");
        if let Some(zero) = Some(gw.tenants_file().with_file_name("zero")).filter(|z| z.exists()) {
            use std::os::unix::fs::FileTypeExt;
            let meta = std::fs::metadata(&zero).expect("the device");
            assert!(
                meta.file_type().is_char_device(),
                "{kind}: PUT replaced the link's device"
            );
        }
        assert!(
            exit.is_some_and(|s| s.success()),
            "{kind}: no clean exit:\n{}",
            gw.output()
        );
        let logs = gw.logs();
        assert!(
            logs.contains("not a regular file") || logs.contains("cannot open"),
            "{kind}: the refusal is not logged:\n{logs}"
        );
    }
}

/// A comment-only or truncated file unmaps nobody: reload refuses it, the
/// watcher refuses it, and the last tenant cannot be deleted either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenants_file_with_no_tenants_is_refused() {
    let app = TestApp::spawn().await;
    let admin = |method: Method, path: &str| {
        app.client
            .request(method, format!("{}{path}", app.admin_url))
            .bearer_auth(admin_token())
            .send()
    };
    for text in [
        "# all tenants commented out\n# [tenants.acme]\n",
        "[tenants]\n",
        "\n",
    ] {
        std::fs::write(&app.tenants_file, text).expect("write");
        let resp = admin(Method::POST, "/admin/v1/reload")
            .await
            .expect("reload");
        let status = resp.status();
        let body: Value = resp.json().await.expect("JSON");
        assert_gateway_error(status, &body, StatusCode::BAD_REQUEST, "CPHGW.0001");
        assert!(
            body["error_msg"]
                .as_str()
                .is_some_and(|m| m.contains("no tenants")),
            "{body}"
        );
    }
    // The watcher (every 200 ms) has seen it too: still mapped.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let (status, body) = app
        .stop(&caller_token(TENANT_A), &app.phones(PROJECT_A, 0, 1))
        .await;
    assert_eq!(status, StatusCode::OK, "acme unmapped: {body}");
    let ready: Value = reqwest::get(format!("{}/readyz", app.admin_url))
        .await
        .expect("readyz")
        .json()
        .await
        .expect("JSON");
    assert_eq!(ready["tenants"], 2, "{ready}");

    std::fs::write(&app.tenants_file, default_tenants()).expect("write");
    let resp = admin(Method::DELETE, "/admin/v1/tenants/globex")
        .await
        .expect("delete");
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let resp = admin(Method::DELETE, "/admin/v1/tenants/acme")
        .await
        .expect("delete");
    let status = resp.status();
    let body: Value = resp.json().await.expect("JSON");
    assert_gateway_error(status, &body, StatusCode::BAD_REQUEST, "CPHGW.0001");
    let (status, _) = app
        .stop(&caller_token(TENANT_A), &app.phones(PROJECT_A, 1, 1))
        .await;
    assert_eq!(status, StatusCode::OK);
}
