//! The smallest end-to-end check: one phone, one stop, one job.

use reqwest::StatusCode;

use crate::helpers::*;

#[tokio::test]
async fn one_phone_is_stopped() {
    let app = TestApp::spawn().await;
    let ids = app.phones(PROJECT_A, 0, 1);
    let (status, body) = app.stop(&caller_token(TENANT_A), &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    assert!(body["jobs"][0]["job_id"].is_string(), "{body}");
}
