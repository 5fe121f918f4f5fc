//! Test harness: a real simulator and a real gateway, both on loopback port
//! 0, wired together per test, and helpers to talk to them over HTTP.

#![allow(dead_code)]

pub mod process;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use cph_gateway::config::Config;
use cph_gateway::sim::{Sim, SimOptions};
use cph_gateway::{App, RunningApp};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Tenant `acme`: default project A, also project A2.
pub const TENANT_A: &str = "acme";
pub const PROJECT_A: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";
pub const PROJECT_A2: &str = "2a1b2c3d4e5f60718293a4b5c6d7e8f9";
/// Tenant `globex`: project B only.
pub const TENANT_B: &str = "globex";
pub const PROJECT_B: &str = "0b1b2c3d4e5f60718293a4b5c6d7e8f9";

pub const ISSUER: &str = "https://idp.test.local";
pub const AUDIENCE: &str = "cph-gateway";
pub const JWT_SECRET: &str = "test-secret-0123456789abcdef0123456789";
pub const IAM_PASSWORD: &str = "sim-password";
pub const ADMIN_ROLE: &str = "cph-gateway-admin";

pub fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

pub fn default_tenants() -> String {
    format!(
        r#"
[tenants.{TENANT_A}]
default_project = "{PROJECT_A}"

[[tenants.{TENANT_A}.projects]]
project_id = "{PROJECT_A}"
region = "cn-east-3"
credential = "default"

[[tenants.{TENANT_A}.projects]]
project_id = "{PROJECT_A2}"
region = "cn-north-4"
credential = "default"

[tenants.{TENANT_B}]
default_project = "{PROJECT_B}"

[[tenants.{TENANT_B}.projects]]
project_id = "{PROJECT_B}"
region = "cn-east-3"
credential = "default"
"#
    )
}

/// How to start a test gateway.
pub struct TestOptions {
    /// Config overrides, as `CPHGW__SECTION__KEY` variables (TOML literals).
    pub env: Vec<(String, String)>,
    pub sim: SimOptions,
    pub tenants: String,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            env: vec![("CPHGW__LIMITS__TENANT_RATE_PER_S".into(), "100000".into())],
            sim: SimOptions::default(),
            tenants: default_tenants(),
        }
    }
}

impl TestOptions {
    /// Sets a config key: `set("upstream.max_batch_size", "7")`.
    pub fn set(mut self, key: &str, toml_value: &str) -> Self {
        let var = format!("CPHGW__{}", key.replace('.', "__").to_ascii_uppercase());
        self.env.retain(|(k, _)| *k != var);
        self.env.push((var, toml_value.into()));
        self
    }
    pub fn sim(mut self, f: impl FnOnce(&mut SimOptions)) -> Self {
        f(&mut self.sim);
        self
    }
}

/// The base config of every test; `{sim}` and `{tenants}` are filled in.
pub fn base_config(sim_url: &str, tenants_file: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:0"
admin_listen = "127.0.0.1:0"
shutdown_grace_ms = 10000

[auth]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
hs256_secret_env = "TEST_JWT_SECRET"
leeway_s = 5

[iam]
endpoint = "{sim_url}"

[iam.credentials.default]
domain = "sim-domain"
user = "sim-user"
password_env = "TEST_IAM_PASSWORD"

[upstream]
cph_endpoint = "{sim_url}"
timeout_ms = 2000

[tenants]
file = "{tenants_file}"
watch_interval_ms = 200
"#
    )
}

pub struct TestApp {
    pub sim: Sim,
    pub gateway: RunningApp,
    /// `http://127.0.0.1:PORT` of the caller API.
    pub url: String,
    /// `http://127.0.0.1:PORT` of the admin API.
    pub admin_url: String,
    pub client: reqwest::Client,
    pub dir: tempfile::TempDir,
    pub tenants_file: PathBuf,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(TestOptions::default()).await
    }

    pub async fn spawn_with(opts: TestOptions) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let tenants_file = dir.path().join("tenants.toml");
        std::fs::write(&tenants_file, &opts.tenants).expect("write tenants");
        Self::spawn_at(dir, tenants_file, opts).await
    }

    /// Like [`TestApp::spawn_with`], with a tenants file the caller has
    /// prepared (e.g. as a symlink); `opts.tenants` is not used.
    pub async fn spawn_at(
        dir: tempfile::TempDir,
        tenants_file: PathBuf,
        opts: TestOptions,
    ) -> Self {
        let sim = Sim::start(opts.sim).await.expect("simulator starts");
        let mut env: BTreeMap<String, String> = BTreeMap::new();
        env.insert("TEST_JWT_SECRET".into(), JWT_SECRET.into());
        env.insert("TEST_IAM_PASSWORD".into(), IAM_PASSWORD.into());
        env.extend(opts.env);
        let text = base_config(&sim.url(), &tenants_file.display().to_string());
        let config = Config::from_toml(&text, &env).expect("test config is valid");
        let app = App::build(config).await.expect("gateway starts");
        let url = format!("http://{}", app.addr());
        let admin_url = format!("http://{}", app.admin_addr());
        let gateway = app.spawn();
        Self {
            sim,
            gateway,
            url,
            admin_url,
            client: reqwest::Client::new(),
            dir,
            tenants_file,
        }
    }

    /// A caller token of `tenant` (HS256, valid for an hour).
    pub fn token(&self, tenant: &str) -> String {
        mint(Algorithm::HS256, &claims(Some(tenant), &[]), None)
    }

    /// An admin token (no tenant).
    pub fn admin_token(&self) -> String {
        mint(Algorithm::HS256, &claims(None, &[ADMIN_ROLE]), None)
    }

    /// `POST /v1/cloud-phone/phones/batch-stop` with `ids`.
    pub async fn stop(&self, token: &str, ids: &[String]) -> (StatusCode, Value) {
        self.stop_at("/v1/cloud-phone/phones/batch-stop", token, ids)
            .await
    }

    pub async fn stop_at(&self, path: &str, token: &str, ids: &[String]) -> (StatusCode, Value) {
        let resp = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .json(&json!({ "phone_ids": ids }))
            .send()
            .await
            .expect("gateway answers");
        let status = resp.status();
        let body = resp.json::<Value>().await.expect("JSON body");
        (status, body)
    }

    /// A GET on the caller API with `token`: status, headers, body text.
    pub async fn get(
        &self,
        path: &str,
        token: &str,
    ) -> (StatusCode, reqwest::header::HeaderMap, String) {
        let resp = self
            .client
            .get(format!("{}{path}", self.url))
            .bearer_auth(token)
            .send()
            .await
            .expect("gateway answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        (status, headers, resp.text().await.expect("body"))
    }

    /// Seeded phones `from..from+n` of `project`.
    pub fn phones(&self, project: &str, from: u32, n: u32) -> Vec<String> {
        (from..from + n)
            .map(|i| cph_gateway::sim::phone_id(project, i))
            .collect()
    }

    pub async fn metrics(&self) -> String {
        self.client
            .get(format!("{}/metrics", self.admin_url))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("metrics text")
    }
}

/// Standard claims: iss, aud, sub, exp in an hour, nbf now.
pub fn claims(tenant: Option<&str>, roles: &[&str]) -> Value {
    let now = now();
    let mut c = json!({
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "test-service",
        "iat": now,
        "nbf": now,
        "exp": now + 3600,
        "roles": roles,
    });
    if let Some(t) = tenant {
        c["tenant"] = t.into();
    }
    c
}

pub fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
}

/// Signs `claims`: HS256 with the test secret, RS256/ES256 with the test keys.
pub fn mint(alg: Algorithm, claims: &Value, kid: Option<&str>) -> String {
    let key = match alg {
        Algorithm::HS256 => EncodingKey::from_secret(JWT_SECRET.as_bytes()),
        Algorithm::RS256 => {
            let file = if kid == Some("key-2") {
                "rsa2-private.pem"
            } else {
                "rsa-private.pem"
            };
            EncodingKey::from_rsa_pem(&std::fs::read(keys_dir().join(file)).expect("key"))
                .expect("rsa key")
        }
        Algorithm::ES256 => EncodingKey::from_ec_pem(
            &std::fs::read(keys_dir().join("ec-private.pem")).expect("key"),
        )
        .expect("ec key"),
        other => panic!("no test key for {other:?}"),
    };
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key).expect("sign")
}

/// Checks the core promise: `jobs` has exactly one entry per distinct id of
/// `ids`, in order of first appearance, each with a job or an error code.
pub fn assert_accounts_for(ids: &[String], body: &Value) {
    let mut seen = std::collections::HashSet::new();
    let distinct: Vec<&String> = ids.iter().filter(|id| seen.insert(*id)).collect();
    let jobs = body["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs array in {body}"));
    assert_eq!(jobs.len(), distinct.len(), "one entry per distinct id");
    for (entry, id) in jobs.iter().zip(distinct) {
        assert_eq!(entry["phone_id"], **id, "entries in request order");
        let has_job = entry["job_id"].is_string();
        let has_error = entry["error_code"].is_string() && entry["error_msg"].is_string();
        assert!(
            has_job || has_error,
            "entry with neither job nor error: {entry}"
        );
    }
}

/// Polls `f` until it returns true or `timeout` passes.
pub async fn eventually(timeout: Duration, mut f: impl AsyncFnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if f().await {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
