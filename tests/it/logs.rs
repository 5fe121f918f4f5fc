//! The text log format cannot be forged: control characters in logged
//! values (a JWT `sub`, a tenant name in a path) are escaped.

use cph_sim::Sim;
use jsonwebtoken::Algorithm;
use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::process::GatewayProcess;
use crate::helpers::*;

const FORGED: &str = "2026-11-30T00:00:00.000000Z  INFO forged: all phones stopped";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newline_in_a_jwt_sub_cannot_forge_a_text_log_line() {
    let sim = Sim::start(Default::default()).await.expect("sim");
    let mut gw = GatewayProcess::start_against(&sim, &[("RUST_LOG", "info")]).await;
    let client = client();

    let mut admin = claims(None, &[ADMIN_ROLE]);
    admin["sub"] = format!("ops\n{FORGED}\r\x1b[2K").into();
    let body = json!({"default_project": PROJECT_A, "projects": [
        {"project_id": PROJECT_A, "region": "cn-east-3", "credential": "default"}]});
    let resp = client
        .put(format!("{}/admin/v1/tenants/initech", gw.admin_url))
        .bearer_auth(mint(Algorithm::HS256, &admin, None))
        .json(&body)
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status(), StatusCode::CREATED);

    let mut caller = claims(Some(TENANT_A), &[]);
    caller["sub"] = format!("svc\n{FORGED}").into();
    let resp = client
        .post(format!("{}{STOP}", gw.url))
        .bearer_auth(mint(Algorithm::HS256, &caller, None))
        .json(&json!({"phone_ids": [cph_sim::phone_id(PROJECT_A, 1)]}))
        .send()
        .await
        .expect("stop");
    assert_eq!(resp.status(), StatusCode::OK);
    gw.terminate().await;

    let logs = gw.logs();
    let forged: Vec<&str> = logs.lines().filter(|l| l.starts_with(FORGED)).collect();
    assert!(forged.is_empty(), "forged lines: {forged:#?}\n{logs}");
    assert!(
        !logs.contains('\r') && !logs.contains('\x1b'),
        "raw controls:\n{logs}"
    );
    assert!(
        logs.contains("ops\\n2026-11-30"),
        "the admin's sub, escaped:\n{logs}"
    );
    assert!(
        logs.contains("svc\\n2026-11-30"),
        "the caller's sub, escaped:\n{logs}"
    );
}
