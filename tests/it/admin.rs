//! The admin API (CONTRACT section 4): reading, writing, deleting and
//! reloading tenant mappings, the file watcher (plain files and Kubernetes
//! ConfigMap symlinks), SIGHUP, concurrency, in-flight requests, the audit
//! trail, and the unauthenticated health/readiness/metrics routes.

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use cph_gateway::tenants::{TenantSpec, TenantsFile};
use cph_sim::{Faults, Sim};
use jsonwebtoken::Algorithm;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

use crate::helpers::process::GatewayProcess;
use crate::helpers::*;

/// Tenant created by the tests; not in the default tenants file.
const TENANT_I: &str = "initech";
const PROJECT_I: &str = "1c1b2c3d4e5f60718293a4b5c6d7e8f9";
const PROJECT_I2: &str = "2c1b2c3d4e5f60718293a4b5c6d7e8f9";

// ---------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------

/// An admin call's answer.
struct Reply {
    status: StatusCode,
    headers: reqwest::header::HeaderMap,
    text: String,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", self.text))
    }

    /// Asserts a gateway error with this status and code; returns `error_msg`.
    fn assert_error(&self, status: u16, code: &str) -> String {
        let want = StatusCode::from_u16(status).expect("a status code");
        assert_eq!(self.status, want, "{}", self.text);
        let body = self.json();
        assert_gateway_error(self.status, &body, want, code);
        body["error_msg"]
            .as_str()
            .unwrap_or_else(|| panic!("no error_msg in {body}"))
            .to_owned()
    }
}

async fn call(
    client: &reqwest::Client,
    base: &str,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<String>,
) -> Reply {
    let mut req = client.request(method, format!("{base}{path}"));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(b);
    }
    let resp = req.send().await.expect("admin API answers");
    let status = resp.status();
    let headers = resp.headers().clone();
    let text = resp.text().await.expect("body");
    Reply {
        status,
        headers,
        text,
    }
}

async fn admin(app: &TestApp, method: Method, path: &str, body: Option<String>) -> Reply {
    call(
        &app.client,
        &app.admin_url,
        method,
        path,
        Some(&admin_token()),
        body,
    )
    .await
}

/// `GET /admin/v1/tenants` as JSON (asserting 200).
async fn list(app: &TestApp) -> Value {
    let r = admin(app, Method::GET, "/admin/v1/tenants", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    r.json()
}

async fn put_tenant(app: &TestApp, tenant: &str, body: &Value) -> Reply {
    admin(
        app,
        Method::PUT,
        &format!("/admin/v1/tenants/{tenant}"),
        Some(body.to_string()),
    )
    .await
}

/// A tenant body: `default` and `projects` in cn-east-3 with the `default`
/// credential.
fn tenant_body(default: &str, projects: &[&str]) -> Value {
    json!({
        "default_project": default,
        "projects": projects
            .iter()
            .map(|p| json!({"project_id": p, "region": "cn-east-3", "credential": "default"}))
            .collect::<Vec<_>>(),
    })
}

/// The tenants file on disk, parsed.
fn file_spec(path: &Path) -> TenantsFile {
    let text = std::fs::read_to_string(path).expect("tenants file readable");
    toml::from_str(&text).unwrap_or_else(|e| panic!("tenants file is not valid: {e}\n{text}"))
}

/// Stops the first phone of `project` as `tenant` through the default route.
async fn stop_one(app: &TestApp, tenant: &str, project: &str) -> (StatusCode, Value) {
    app.stop(&caller_token(tenant), &app.phones(project, 0, 1))
        .await
}

/// Whether a stop by `tenant` in its default project `project` succeeds.
async fn can_stop(app: &TestApp, tenant: &str, project: &str) -> bool {
    // The phone may be stopped already from an earlier check.
    app.sim.start_phones();
    let (status, body) = stop_one(app, tenant, project).await;
    status == StatusCode::OK && body["jobs"][0]["job_id"].is_string()
}

/// Asserts that a stop by `tenant` is refused as unmapped (403 CPHGW.0102).
async fn assert_unmapped(app: &TestApp, tenant: &str, project: &str) {
    let (status, body) = stop_one(app, tenant, project).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error_code"], "CPHGW.0102", "{body}");
}

/// Writes `text` to `path` the way careful tools do: a temporary file in the
/// same directory, then a rename over the target.
fn write_via_rename(path: &Path, text: &str) {
    let tmp = path.with_file_name(format!("tenants.new.{}", rand::random::<u32>()));
    std::fs::write(&tmp, text).expect("write temp file");
    std::fs::rename(&tmp, path).expect("rename over the tenants file");
}

/// A tenants file with acme and globex as usual plus `initech` with `PROJECT_I`.
fn tenants_with_initech() -> String {
    format!("{}\n{}", default_tenants(), tenants_only_initech())
}

/// A tenants file that only maps `initech` (acme and globex gone).
fn tenants_only_initech() -> String {
    tenant_toml(TENANT_I, PROJECT_I, &[(PROJECT_I, "cn-east-3", "default")])
}

/// A tenants file that is valid TOML but not a valid mapping: globex is
/// dropped and initech has a bad region, so a partial application would show.
fn invalid_tenants() -> String {
    format!(
        "{}\n{}",
        tenant_toml(TENANT_A, PROJECT_A, &[(PROJECT_A, "cn-east-3", "default")]),
        tenant_toml(TENANT_I, PROJECT_I, &[(PROJECT_I, "CN EAST", "default")]),
    )
}

/// A buffer that a `tracing` subscriber writes into.
#[derive(Clone, Default)]
struct LogBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for LogBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("log buffer").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl LogBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().expect("log buffer")).into_owned()
    }
}

// ---------------------------------------------------------------------------
// Reading
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_and_get_return_the_mapping_without_secrets() {
    let app = TestApp::spawn().await;

    let r = admin(&app, Method::GET, "/admin/v1/tenants", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let body = r.json();
    let expected: TenantsFile = toml::from_str(&default_tenants()).expect("default tenants");
    let got: TenantsFile = serde_json::from_value(body.clone())
        .unwrap_or_else(|e| panic!("list is not in the tenants-file shape ({e}): {body}"));
    assert_eq!(got, expected);
    assert_eq!(
        body["tenants"].as_object().map(|o| o.len()),
        Some(2),
        "{body}"
    );
    assert_eq!(body["tenants"][TENANT_A]["default_project"], PROJECT_A);
    assert_eq!(
        body["tenants"][TENANT_A]["projects"][1],
        json!({"project_id": PROJECT_A2, "region": "cn-north-4", "credential": "default"})
    );

    let one = admin(&app, Method::GET, "/admin/v1/tenants/acme", None).await;
    assert_eq!(one.status, StatusCode::OK, "{}", one.text);
    let spec: TenantSpec = serde_json::from_str(&one.text)
        .unwrap_or_else(|e| panic!("not a tenant body ({e}): {}", one.text));
    assert_eq!(spec, expected.tenants[TENANT_A]);

    let missing = admin(&app, Method::GET, "/admin/v1/tenants/nosuch", None).await;
    let msg = missing.assert_error(404, "CPHGW.0104");
    assert!(msg.contains("nosuch"), "{msg}");

    for text in [&r.text, &one.text, &missing.text] {
        assert!(!text.contains(IAM_PASSWORD), "IAM password in {text}");
        assert!(!text.contains(JWT_SECRET), "JWT secret in {text}");
        assert!(
            !text.to_ascii_lowercase().contains("password"),
            "a password field in {text}"
        );
    }
}

// ---------------------------------------------------------------------------
// Authorisation
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_require_a_valid_token_with_the_admin_role() {
    let app = TestApp::spawn().await;
    let before = list(&app).await;
    let file_before = std::fs::read(&app.tenants_file).expect("file");
    let body = tenant_body(PROJECT_I, &[PROJECT_I]).to_string();
    let routes: [(Method, &str, Option<String>); 5] = [
        (Method::GET, "/admin/v1/tenants", None),
        (Method::GET, "/admin/v1/tenants/acme", None),
        (Method::PUT, "/admin/v1/tenants/initech", Some(body)),
        (Method::DELETE, "/admin/v1/tenants/globex", None),
        (Method::POST, "/admin/v1/reload", None),
    ];

    let mut wrong_key = claims(None, &[ADMIN_ROLE]);
    wrong_key["sub"] = "intruder".into();
    let wrong_key = hs256_with(
        b"not-the-secret-not-the-secret-0123456789",
        &wrong_key,
        None,
    );
    let mut expired = claims(None, &[ADMIN_ROLE]);
    expired["exp"] = (now() - 3600).into();
    expired["nbf"] = (now() - 7200).into();
    let expired = mint(Algorithm::HS256, &expired, None);
    let unauthenticated: [(&str, Option<String>); 4] = [
        ("no token", None),
        ("garbage", Some("not-a-jwt".into())),
        ("wrong key", Some(wrong_key)),
        ("expired", Some(expired)),
    ];

    for (method, path, body) in &routes {
        for (what, token) in &unauthenticated {
            let r = call(
                &app.client,
                &app.admin_url,
                method.clone(),
                path,
                token.as_deref(),
                body.clone(),
            )
            .await;
            r.assert_error(401, "CPHGW.0101");
            let challenge = r
                .headers
                .get(reqwest::header::WWW_AUTHENTICATE)
                .unwrap_or_else(|| panic!("{method} {path} ({what}): no WWW-Authenticate"));
            assert!(
                challenge
                    .to_str()
                    .is_ok_and(|c| c.starts_with("Bearer") && c.contains("invalid_token")),
                "{method} {path} ({what}): {challenge:?}"
            );
        }
        // Valid tokens without the admin role: a tenant caller, other roles,
        // look-alike roles, and the role under another claim.
        let mut other_claim = claims(None, &[]);
        other_claim["groups"] = json!([ADMIN_ROLE]);
        other_claim["role"] = ADMIN_ROLE.into();
        let mut nested = claims(None, &[]);
        nested["roles"] = json!({"admin": ADMIN_ROLE});
        let mut nested_list = claims(None, &[]);
        nested_list["roles"] = json!([[ADMIN_ROLE]]);
        for token in [
            caller_token(TENANT_A),
            mint(
                Algorithm::HS256,
                &claims(Some(TENANT_A), &["cph-gateway-reader"]),
                None,
            ),
            mint(
                Algorithm::HS256,
                &claims(
                    None,
                    &[
                        "cph-gateway-admin-readonly",
                        "x-cph-gateway-admin",
                        "CPH-GATEWAY-ADMIN",
                    ],
                ),
                None,
            ),
            mint(Algorithm::HS256, &other_claim, None),
            mint(Algorithm::HS256, &nested, None),
            mint(Algorithm::HS256, &nested_list, None),
        ] {
            let r = call(
                &app.client,
                &app.admin_url,
                method.clone(),
                path,
                Some(&token),
                body.clone(),
            )
            .await;
            r.assert_error(403, "CPHGW.0103");
        }
    }

    assert_eq!(list(&app).await, before, "nothing changed");
    assert_eq!(
        std::fs::read(&app.tenants_file).expect("file"),
        file_before,
        "tenants file untouched"
    );
    assert_unmapped(&app, TENANT_I, PROJECT_I).await;
    assert!(
        can_stop(&app, TENANT_B, PROJECT_B).await,
        "globex still mapped"
    );
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_creates_and_updates_a_tenant_live_and_on_disk() {
    let app = TestApp::spawn().await;
    assert_unmapped(&app, TENANT_I, PROJECT_I).await;

    let created = tenant_body(PROJECT_I, &[PROJECT_I]);
    let r = put_tenant(&app, TENANT_I, &created).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    assert_eq!(r.json(), created, "PUT answers the stored body");

    // Live for the very next request.
    let ids = app.phones(PROJECT_I, 0, 3);
    let (status, body) = app.stop(&caller_token(TENANT_I), &ids).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    for entry in body["jobs"].as_array().expect("jobs") {
        assert!(entry["job_id"].is_string(), "{entry}");
    }
    assert!(
        app.sim
            .phone_state(PROJECT_I, &ids[0])
            .is_some_and(|s| s != cph_sim::PhoneState::Running),
        "the phone of initech's project was stopped"
    );

    // Persisted, with the other tenants intact.
    let on_disk = file_spec(&app.tenants_file);
    assert_eq!(
        serde_json::to_value(&on_disk.tenants[TENANT_I]).expect("json"),
        created
    );
    assert_eq!(on_disk.tenants.len(), 3);
    let defaults: TenantsFile = toml::from_str(&default_tenants()).expect("defaults");
    assert_eq!(on_disk.tenants[TENANT_A], defaults.tenants[TENANT_A]);
    assert_eq!(on_disk.tenants[TENANT_B], defaults.tenants[TENANT_B]);

    // Update: a second project that becomes the default.
    let updated = tenant_body(PROJECT_I2, &[PROJECT_I, PROJECT_I2]);
    let r = put_tenant(&app, TENANT_I, &updated).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let got = admin(&app, Method::GET, "/admin/v1/tenants/initech", None).await;
    assert_eq!(got.json(), updated);
    assert_eq!(
        serde_json::to_value(&file_spec(&app.tenants_file).tenants[TENANT_I]).expect("json"),
        updated
    );
    // The default route now goes to the new default project, and the old
    // project stays reachable by path.
    let ids2 = app.phones(PROJECT_I2, 0, 2);
    let (status, body) = app.stop(&caller_token(TENANT_I), &ids2).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["jobs"][0]["job_id"].is_string(), "{body}");
    let ids1 = app.phones(PROJECT_I, 5, 1);
    let (status, body) = app
        .stop_at(
            &format!("/v1/{PROJECT_I}/cloud-phone/phones/batch-stop"),
            &caller_token(TENANT_I),
            &ids1,
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["jobs"][0]["job_id"].is_string(), "{body}");

    // Updating an existing tenant of the original file also answers 200.
    let acme = tenant_body(PROJECT_A, &[PROJECT_A]);
    let r = put_tenant(&app, TENANT_A, &acme).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let (status, body) = app
        .stop_at(
            &format!("/v1/{PROJECT_A2}/cloud-phone/phones/batch-stop"),
            &caller_token(TENANT_A),
            &app.phones(PROJECT_A2, 0, 1),
        )
        .await;
    assert_eq!(
        status,
        StatusCode::FORBIDDEN,
        "A2 was removed from acme: {body}"
    );
    assert_eq!(body["error_code"], "CPHGW.0102");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_change_takes_effect_for_the_next_request() {
    // A second credential, `other`, whose password IAM refuses.
    let opts = TestOptions::default()
        .set("iam.credentials.other.domain", "\"sim-domain\"")
        .set("iam.credentials.other.user", "\"sim-user\"")
        .set(
            "iam.credentials.other.password_env",
            "\"TEST_IAM_PASSWORD_OTHER\"",
        )
        .env("TEST_IAM_PASSWORD_OTHER", "not-the-password");
    let app = TestApp::spawn_with(opts).await;
    assert!(
        can_stop(&app, TENANT_A, PROJECT_A).await,
        "works with `default`"
    );
    let iam_before = app.sim.stats().iam_requests;

    let body = json!({"default_project": PROJECT_A, "projects": [
        {"project_id": PROJECT_A, "region": "cn-east-3", "credential": "other"}]});
    let r = put_tenant(&app, TENANT_A, &body).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);

    // The next request must authenticate to IAM as `other`, which IAM
    // refuses: no token can be had for the project with that credential.
    let (status, body) = stop_one(&app, TENANT_A, PROJECT_A).await;
    assert!(
        app.sim.stats().iam_requests > iam_before,
        "no IAM request with the new credential; the stop answered {status}: {body}"
    );
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["error_code"], "CPHGW.0303", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_put_bodies_are_refused_naming_the_field_and_change_nothing() {
    let app = TestApp::spawn().await;
    let project = |id: &str, region: &str, credential: &str| json!({"project_id": id, "region": region, "credential": credential});
    let ok_projects = json!([project(PROJECT_I, "cn-east-3", "default")]);
    let long_name = "t".repeat(65);
    // (what, tenant in the path, raw body, text the message must contain)
    let cases: Vec<(&str, &str, String, &str)> = vec![
        ("not JSON", TENANT_I, "this is not JSON".into(), "body"),
        (
            "truncated JSON",
            TENANT_I,
            "{\"default_project\": ".into(),
            "default_project",
        ),
        ("not an object", TENANT_I, "\"acme\"".into(), "body"),
        (
            "missing default_project",
            TENANT_I,
            json!({"projects": ok_projects}).to_string(),
            "default_project",
        ),
        (
            "missing projects",
            TENANT_I,
            json!({"default_project": PROJECT_I}).to_string(),
            "projects",
        ),
        (
            "default project not in projects",
            TENANT_I,
            json!({"default_project": PROJECT_I2, "projects": ok_projects}).to_string(),
            "default_project",
        ),
        (
            "projects empty",
            TENANT_I,
            json!({"default_project": PROJECT_I, "projects": []}).to_string(),
            "projects",
        ),
        (
            "bad project_id",
            TENANT_I,
            json!({"default_project": "xyz", "projects": [project("xyz", "cn-east-3", "default")]})
                .to_string(),
            "projects[0].project_id",
        ),
        (
            "bad region",
            TENANT_I,
            json!({"default_project": PROJECT_I, "projects": [project(PROJECT_I, "CN EAST", "default")]})
                .to_string(),
            "projects[0].region",
        ),
        (
            "unknown credential",
            TENANT_I,
            json!({"default_project": PROJECT_I, "projects": [project(PROJECT_I, "cn-east-3", "nope")]})
                .to_string(),
            "projects[0].credential",
        ),
        (
            "duplicate project ids",
            TENANT_I,
            json!({"default_project": PROJECT_I, "projects": [
                project(PROJECT_I, "cn-east-3", "default"),
                project(PROJECT_I, "cn-north-4", "default"),
            ]})
            .to_string(),
            "projects[1].project_id",
        ),
        (
            "unknown top-level field",
            TENANT_I,
            json!({"default_project": PROJECT_I, "projects": ok_projects, "owner": "bob"})
                .to_string(),
            "owner",
        ),
        (
            "unknown project field",
            TENANT_I,
            json!({"default_project": PROJECT_I, "projects": [
                {"project_id": PROJECT_I, "region": "cn-east-3", "credential": "default", "password": "x"}
            ]})
            .to_string(),
            "password",
        ),
        (
            "project_id not a string",
            TENANT_I,
            json!({"default_project": PROJECT_I, "projects": [
                {"project_id": 7, "region": "cn-east-3", "credential": "default"}
            ]})
            .to_string(),
            "projects[0].project_id",
        ),
        (
            "tenant name with a space",
            "bad%20name",
            tenant_body(PROJECT_I, &[PROJECT_I]).to_string(),
            "tenant",
        ),
        (
            "tenant name too long",
            &long_name,
            tenant_body(PROJECT_I, &[PROJECT_I]).to_string(),
            "tenant",
        ),
    ];

    let before = list(&app).await;
    let file_before = std::fs::read(&app.tenants_file).expect("file");
    for (what, tenant, raw, field) in &cases {
        // Against a new tenant and against an existing one.
        let targets: Vec<&str> = if *tenant == TENANT_I {
            vec![TENANT_I, TENANT_B]
        } else {
            vec![*tenant]
        };
        for target in targets {
            let r = admin(
                &app,
                Method::PUT,
                &format!("/admin/v1/tenants/{target}"),
                Some(raw.clone()),
            )
            .await;
            let msg = r.assert_error(400, "CPHGW.0001");
            assert!(
                msg.contains(field),
                "{what} ({target}): the message {msg:?} does not name {field:?}"
            );
            assert_eq!(
                list(&app).await,
                before,
                "{what} ({target}): mapping changed"
            );
            assert_eq!(
                std::fs::read(&app.tenants_file).expect("file"),
                file_before,
                "{what} ({target}): tenants file changed"
            );
        }
    }
    assert_unmapped(&app, TENANT_I, PROJECT_I).await;
    assert!(
        can_stop(&app, TENANT_B, PROJECT_B).await,
        "globex unchanged"
    );
    let leftovers: Vec<String> = std::fs::read_dir(app.dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n != "tenants.toml")
        .collect();
    assert!(leftovers.is_empty(), "stray files: {leftovers:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delete_unmaps_the_tenant_for_the_next_request() {
    let app = TestApp::spawn().await;
    assert!(can_stop(&app, TENANT_B, PROJECT_B).await);

    let r = admin(&app, Method::DELETE, "/admin/v1/tenants/globex", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert_unmapped(&app, TENANT_B, PROJECT_B).await;
    admin(&app, Method::GET, "/admin/v1/tenants/globex", None)
        .await
        .assert_error(404, "CPHGW.0104");
    let on_disk = file_spec(&app.tenants_file);
    assert!(!on_disk.tenants.contains_key(TENANT_B), "{on_disk:?}");
    assert!(on_disk.tenants.contains_key(TENANT_A), "{on_disk:?}");
    assert!(can_stop(&app, TENANT_A, PROJECT_A).await, "acme untouched");

    let file_before = std::fs::read(&app.tenants_file).expect("file");
    for unknown in ["globex", "nosuch"] {
        admin(
            &app,
            Method::DELETE,
            &format!("/admin/v1/tenants/{unknown}"),
            None,
        )
        .await
        .assert_error(404, "CPHGW.0104");
    }
    assert_eq!(std::fs::read(&app.tenants_file).expect("file"), file_before);
}

// ---------------------------------------------------------------------------
// Reloading
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reload_applies_a_hand_edited_file_and_keeps_the_last_good_mapping() {
    // A long watch interval, so that only the reload call can apply changes.
    let app =
        TestApp::spawn_with(TestOptions::default().set("tenants.watch_interval_ms", "60000")).await;
    assert_unmapped(&app, TENANT_I, PROJECT_I).await;

    std::fs::write(&app.tenants_file, tenants_with_initech()).expect("edit");
    let r = admin(&app, Method::POST, "/admin/v1/reload", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert!(can_stop(&app, TENANT_I, PROJECT_I).await, "initech live");
    assert!(can_stop(&app, TENANT_A, PROJECT_A).await);
    let good = list(&app).await;
    assert_eq!(good["tenants"].as_object().map(|o| o.len()), Some(3));

    // An invalid file: 400 naming the reason, the last good mapping stays.
    std::fs::write(&app.tenants_file, invalid_tenants()).expect("edit");
    let r = admin(&app, Method::POST, "/admin/v1/reload", None).await;
    let msg = r.assert_error(400, "CPHGW.0001");
    assert!(msg.contains("region"), "{msg}");
    assert!(msg.contains(TENANT_I), "{msg}");
    assert_eq!(list(&app).await, good);
    assert!(can_stop(&app, TENANT_B, PROJECT_B).await, "globex kept");
    assert!(can_stop(&app, TENANT_I, PROJECT_I).await, "initech kept");

    // Not TOML at all.
    std::fs::write(&app.tenants_file, "[tenants.acme\nnope").expect("edit");
    admin(&app, Method::POST, "/admin/v1/reload", None)
        .await
        .assert_error(400, "CPHGW.0001");
    assert_eq!(list(&app).await, good);

    // The file is gone.
    std::fs::remove_file(&app.tenants_file).expect("remove");
    admin(&app, Method::POST, "/admin/v1/reload", None)
        .await
        .assert_error(400, "CPHGW.0001");
    assert_eq!(list(&app).await, good);
    assert!(can_stop(&app, TENANT_A, PROJECT_A).await, "acme kept");

    // A valid file again is applied.
    std::fs::write(&app.tenants_file, tenants_only_initech()).expect("edit");
    let r = admin(&app, Method::POST, "/admin/v1/reload", None).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    assert_unmapped(&app, TENANT_A, PROJECT_A).await;
    assert!(can_stop(&app, TENANT_I, PROJECT_I).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_watch_applies_rewritten_files_and_rejects_invalid_ones() {
    let app = TestApp::spawn().await; // watch_interval_ms = 200
    assert_unmapped(&app, TENANT_I, PROJECT_I).await;

    write_via_rename(&app.tenants_file, &tenants_with_initech());
    assert!(
        eventually(Duration::from_secs(2), async || can_stop(
            &app, TENANT_I, PROJECT_I
        )
        .await)
        .await,
        "the new tenant was not picked up within 2 s"
    );
    let good = list(&app).await;

    // An invalid file: the old mapping stays (5 watch intervals).
    write_via_rename(&app.tenants_file, &invalid_tenants());
    let changed = eventually(Duration::from_secs(1), async || {
        list(&app).await != good || !can_stop(&app, TENANT_B, PROJECT_B).await
    })
    .await;
    assert!(!changed, "an invalid tenants file was (partly) applied");

    // The watcher is still alive: a valid file after the invalid one is applied.
    write_via_rename(&app.tenants_file, &tenants_only_initech());
    assert!(
        eventually(Duration::from_secs(2), async || {
            let (status, _) = stop_one(&app, TENANT_A, PROJECT_A).await;
            status == StatusCode::FORBIDDEN
        })
        .await,
        "the valid file after an invalid one was not picked up"
    );
    assert!(can_stop(&app, TENANT_I, PROJECT_I).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn file_watch_follows_a_configmap_symlink_swap() {
    use std::os::unix::fs::symlink;
    // Kubernetes layout: tenants.toml -> ..data/tenants.toml, ..data -> ..2026_01.
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_path_buf();
    std::fs::create_dir(root.join("..2026_01")).expect("mkdir");
    std::fs::write(root.join("..2026_01/tenants.toml"), default_tenants()).expect("write");
    symlink("..2026_01", root.join("..data")).expect("symlink ..data");
    symlink("..data/tenants.toml", root.join("tenants.toml")).expect("symlink file");
    let tenants_file = root.join("tenants.toml");
    let app = TestApp::spawn_at(dir, tenants_file.clone(), TestOptions::default()).await;
    assert!(can_stop(&app, TENANT_A, PROJECT_A).await);
    assert_unmapped(&app, TENANT_I, PROJECT_I).await;

    // The kubelet's update: a new directory, a temporary symlink to it, and a
    // rename of that symlink over ..data.
    std::fs::create_dir(root.join("..2026_02")).expect("mkdir");
    std::fs::write(root.join("..2026_02/tenants.toml"), tenants_only_initech()).expect("write");
    symlink("..2026_02", root.join("..data_tmp")).expect("symlink tmp");
    std::fs::rename(root.join("..data_tmp"), root.join("..data")).expect("swap ..data");
    std::fs::remove_dir_all(root.join("..2026_01")).expect("remove the old version");
    assert!(
        std::fs::symlink_metadata(&tenants_file)
            .expect("stat")
            .file_type()
            .is_symlink()
    );

    assert!(
        eventually(Duration::from_secs(2), async || can_stop(
            &app, TENANT_I, PROJECT_I
        )
        .await)
        .await,
        "the swapped ConfigMap was not picked up within 2 s"
    );
    assert_unmapped(&app, TENANT_A, PROJECT_A).await;
    let got: TenantsFile = serde_json::from_value(list(&app).await).expect("shape");
    assert_eq!(
        got,
        toml::from_str::<TenantsFile>(&tenants_only_initech()).expect("spec")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_tenants_file_of_the_real_binary() {
    let sim = Sim::start(Default::default()).await.expect("sim");
    // The watcher polls only once a minute: it cannot be what applies the change.
    let mut gw =
        GatewayProcess::start_against(&sim, &[("CPHGW__TENANTS__WATCH_INTERVAL_MS", "60000")])
            .await;
    let tenants = gw.tenants_file();
    let client = client();
    let url = gw.url.clone();
    let stop = async |tenant: &str, project: &str| {
        let resp = client
            .post(format!("{url}{STOP}"))
            .bearer_auth(caller_token(tenant))
            .json(&json!({"phone_ids": [cph_sim::phone_id(project, 1)]}))
            .send()
            .await
            .expect("gateway answers");
        resp.status()
    };
    assert_eq!(stop(TENANT_A, PROJECT_A).await, StatusCode::OK);
    assert_eq!(stop(TENANT_I, PROJECT_I).await, StatusCode::FORBIDDEN);

    std::fs::write(&tenants, tenants_with_initech()).expect("edit");
    gw.signal("HUP");
    let live = eventually(Duration::from_secs(3), async || {
        stop(TENANT_I, PROJECT_I).await == StatusCode::OK
    })
    .await;
    assert!(
        live,
        "SIGHUP did not apply the file; gateway stderr:\n{}",
        gw.logs()
    );
    assert_eq!(stop(TENANT_A, PROJECT_A).await, StatusCode::OK);

    // An invalid file on SIGHUP: rejected (and logged), the last good mapping
    // stays, the process lives.
    std::fs::write(&tenants, invalid_tenants()).expect("edit");
    gw.signal("HUP");
    assert!(
        eventually(Duration::from_secs(3), async || gw
            .logs()
            .contains("SIGHUP: tenants file rejected"))
        .await,
        "the invalid file was not rejected on SIGHUP:\n{}",
        gw.logs()
    );
    assert_eq!(
        stop(TENANT_B, PROJECT_B).await,
        StatusCode::OK,
        "globex kept"
    );
    assert_eq!(
        stop(TENANT_I, PROJECT_I).await,
        StatusCode::OK,
        "initech kept"
    );
    assert!(
        gw.child.try_wait().expect("try_wait").is_none(),
        "the gateway exited"
    );
}

// ---------------------------------------------------------------------------
// Concurrency and requests in flight
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_puts_of_one_tenant_never_corrupt_the_mapping_or_file() {
    let app = TestApp::spawn().await;
    let projects: Vec<String> = (0..20)
        .map(|i| format!("{i:02x}{}", &PROJECT_I[2..]))
        .collect();
    let refs: Vec<&str> = projects.iter().map(String::as_str).collect();
    let bodies: Vec<Value> = refs.iter().map(|p| tenant_body(p, &refs)).collect();

    let replies =
        futures_util::future::join_all(bodies.iter().map(|b| put_tenant(&app, TENANT_I, b))).await;
    let mut created = 0;
    for r in &replies {
        match r.status {
            StatusCode::CREATED => created += 1,
            StatusCode::OK => {}
            other => panic!("PUT answered {other}: {}", r.text),
        }
    }
    assert_eq!(created, 1, "exactly one PUT created the tenant");

    let final_body = admin(&app, Method::GET, "/admin/v1/tenants/initech", None)
        .await
        .json();
    assert!(
        bodies.contains(&final_body),
        "final body is none of the PUT bodies: {final_body}"
    );
    let in_memory: TenantsFile = serde_json::from_value(list(&app).await).expect("shape");
    assert_eq!(file_spec(&app.tenants_file), in_memory, "disk == memory");
    assert_eq!(in_memory.tenants.len(), 3);
    let default = final_body["default_project"].as_str().expect("default");
    assert!(can_stop(&app, TENANT_I, default).await);

    let names: Vec<String> = std::fs::read_dir(app.dir.path())
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, ["tenants.toml"], "leftover files");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stop_in_flight_keeps_the_mapping_it_started_with() {
    let app = TestApp::spawn_with(TestOptions::default().sim(|s| {
        s.faults = Faults {
            latency_ms: 200,
            ..Faults::default()
        }
    }))
    .await;
    let ids = app.phones(PROJECT_A, 0, 1000);
    let token = caller_token(TENANT_A);
    let (client, url, body) = (
        app.client.clone(),
        app.url.clone(),
        json!({"phone_ids": ids}),
    );
    // 10 batches, 8 at a time, 200 ms each: about 400 ms.
    let stop = tokio::spawn(async move {
        let resp = client
            .post(format!("{url}{STOP}"))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("gateway answers");
        (resp.status(), resp.json::<Value>().await.expect("JSON"))
    });
    assert!(
        eventually(Duration::from_secs(2), async || app.sim.stats().in_flight
            > 0)
        .await,
        "the stop never reached CPH"
    );
    let r = admin(&app, Method::DELETE, "/admin/v1/tenants/acme", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);
    assert!(
        !stop.is_finished(),
        "the stop finished before the tenant was deleted: the test proves nothing"
    );

    let (status, body) = stop.await.expect("stop task");
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_accounts_for(&ids, &body);
    let jobs = body["jobs"].as_array().expect("jobs");
    assert!(
        jobs.iter().all(|j| j["job_id"].is_string()),
        "entries without a job: {:?}",
        jobs.iter().find(|j| !j["job_id"].is_string())
    );
    assert_eq!(app.sim.stats().stopped_phones, 1000);

    assert_unmapped(&app, TENANT_A, PROJECT_A).await;
}

// ---------------------------------------------------------------------------
// Audit trail
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_changes_emit_an_audit_event() {
    let logs = LogBuffer::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_max_level(tracing::Level::INFO)
        .with_writer(move || writer.clone())
        .try_init()
        .expect("this test installs the only subscriber");

    let app = TestApp::spawn().await;
    let mut admin_claims = claims(None, &[ADMIN_ROLE]);
    admin_claims["sub"] = "admin-alice@example".into();
    let token = mint(Algorithm::HS256, &admin_claims, None);
    let send = async |method: Method, body: Option<Value>| {
        call(
            &app.client,
            &app.admin_url,
            method,
            "/admin/v1/tenants/initech",
            Some(&token),
            body.map(|b| b.to_string()),
        )
        .await
    };
    let r = send(Method::PUT, Some(tenant_body(PROJECT_I, &[PROJECT_I]))).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.text);
    let r = send(Method::PUT, Some(tenant_body(PROJECT_I2, &[PROJECT_I2]))).await;
    assert_eq!(r.status, StatusCode::OK, "{}", r.text);
    let r = send(Method::DELETE, None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT, "{}", r.text);

    let events: Vec<Value> = logs
        .text()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|e| e["audit"] == true && e["tenant"] == TENANT_I)
        .collect();
    assert_eq!(events.len(), 3, "one audit event per change: {events:#?}");
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let expect = [("", PROJECT_I), (PROJECT_I, PROJECT_I2), (PROJECT_I2, "")];
    for (event, (before, after)) in events.iter().zip(expect) {
        assert_eq!(event["who"], "admin-alice@example", "{event}");
        let (b, a) = (text(&event["before"]), text(&event["after"]));
        assert!(
            event.get("before").is_some() && event.get("after").is_some(),
            "{event}"
        );
        if before.is_empty() {
            assert!(!b.contains(PROJECT_I) && !b.contains(PROJECT_I2), "{event}");
        } else {
            assert!(b.contains(before), "before should name {before}: {event}");
        }
        if after.is_empty() {
            assert!(!a.contains(PROJECT_I) && !a.contains(PROJECT_I2), "{event}");
        } else {
            assert!(a.contains(after), "after should name {after}: {event}");
        }
        let at = event["at"].as_str().unwrap_or_default();
        assert!(
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339).is_ok(),
            "`at` is not an RFC 3339 time: {event}"
        );
        let line = event.to_string();
        assert!(!line.contains(&token), "the admin JWT was logged");
        assert!(!line.contains(JWT_SECRET) && !line.contains(IAM_PASSWORD));
    }
}

// ---------------------------------------------------------------------------
// Health, readiness, metrics
// ---------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics_need_no_token() {
    let app = TestApp::spawn().await;
    assert!(can_stop(&app, TENANT_A, PROJECT_A).await);

    let healthz = call(
        &app.client,
        &app.admin_url,
        Method::GET,
        "/healthz",
        None,
        None,
    )
    .await;
    assert_eq!(healthz.status, StatusCode::OK, "{}", healthz.text);

    let readyz = call(
        &app.client,
        &app.admin_url,
        Method::GET,
        "/readyz",
        None,
        None,
    )
    .await;
    assert_eq!(readyz.status, StatusCode::OK, "{}", readyz.text);
    assert_eq!(readyz.json()["tenants"], 2, "{}", readyz.text);
    let r = admin(&app, Method::DELETE, "/admin/v1/tenants/globex", None).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let readyz = call(
        &app.client,
        &app.admin_url,
        Method::GET,
        "/readyz",
        None,
        None,
    )
    .await;
    assert_eq!(readyz.json()["tenants"], 1, "{}", readyz.text);

    let metrics = call(
        &app.client,
        &app.admin_url,
        Method::GET,
        "/metrics",
        None,
        None,
    )
    .await;
    assert_eq!(metrics.status, StatusCode::OK);
    assert!(
        metrics
            .text
            .lines()
            .any(|l| l.starts_with("cphgw_requests_total{") && l.contains("status=\"200\"")),
        "{}",
        metrics.text
    );
    for secret in [IAM_PASSWORD, JWT_SECRET] {
        assert!(!metrics.text.contains(secret));
    }
}
