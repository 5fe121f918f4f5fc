//! Test harness: a real simulator and a real gateway, both on loopback port
//! 0, wired together per test, and helpers to talk to them over HTTP: the
//! test config and tenants, caller and admin tokens, the answers' checks.

pub mod db;
pub mod jwks;
pub mod process;
pub mod proxy;
pub mod tcp_proxy;
pub mod tls;

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use cph_gateway::config::Config;
use cph_gateway::{App, RunningApp};
use cph_sim::{Sim, SimOptions};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
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

/// The stop route of the caller's default project.
pub const STOP: &str = "/v1/cloud-phone/phones/batch-stop";

/// The line of [`base_config`] that names the HS256 secret.
const HS256_SECRET_LINE: &str = "hs256_secret_env = \"TEST_JWT_SECRET\"\n";

pub fn keys_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/keys")
}

// ---------------------------------------------------------------------------
// Config and tenants
// ---------------------------------------------------------------------------

/// One tenant's section of a tenants file: its default project and its
/// projects as (project id, region, credential).
pub fn tenant_toml(tenant: &str, default_project: &str, projects: &[(&str, &str, &str)]) -> String {
    let mut text = format!("[tenants.{tenant}]\ndefault_project = \"{default_project}\"\n");
    for (project, region, credential) in projects {
        text.push_str(&format!(
            "\n[[tenants.{tenant}.projects]]\nproject_id = \"{project}\"\nregion = \"{region}\"\ncredential = \"{credential}\"\n"
        ));
    }
    text
}

/// The tenants file of every test: acme (projects A and A2) and globex
/// (project B).
pub fn default_tenants() -> String {
    format!(
        "{}\n{}",
        tenant_toml(
            TENANT_A,
            PROJECT_A,
            &[
                (PROJECT_A, "cn-east-3", "default"),
                (PROJECT_A2, "cn-north-4", "default"),
            ],
        ),
        tenant_toml(TENANT_B, PROJECT_B, &[(PROJECT_B, "cn-east-3", "default")]),
    )
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
{HS256_SECRET_LINE}leeway_s = 5
allow_hs256_admin = true

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

/// `config` (a [`base_config`]) without its HS256 secret.
pub fn without_hs256_secret(config: &str) -> String {
    let without = config.replace(HS256_SECRET_LINE, "");
    assert_ne!(without, config, "the base config names the HS256 secret");
    without
}

/// Writes the default tenants file (`dir/tenants.toml`) and the test config
/// for the simulator at `sim_url` (`dir/gateway.toml`); returns the
/// config's path.
pub fn write_config(dir: &Path, sim_url: &str) -> PathBuf {
    let tenants = dir.join("tenants.toml");
    std::fs::write(&tenants, default_tenants()).expect("write tenants");
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        base_config(sim_url, &tenants.display().to_string()),
    )
    .expect("write config");
    config
}

/// The environment variables of the secrets the test config names.
pub fn secret_env() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("TEST_JWT_SECRET".to_owned(), JWT_SECRET.to_owned()),
        ("TEST_IAM_PASSWORD".to_owned(), IAM_PASSWORD.to_owned()),
    ])
}

// ---------------------------------------------------------------------------
// Tokens
// ---------------------------------------------------------------------------

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

/// Signs `claims`: HS256 with the test secret, RS256/ES256 with the test
/// keys (RS256 with `rsa2-private.pem` for kid `key-2`); names `kid`.
pub fn mint(alg: Algorithm, claims: &Value, kid: Option<&str>) -> String {
    match alg {
        Algorithm::HS256 => hs256_with(JWT_SECRET.as_bytes(), claims, kid),
        Algorithm::RS256 => {
            let file = if kid == Some("key-2") {
                "rsa2-private.pem"
            } else {
                "rsa-private.pem"
            };
            rs256_with(file, claims, kid)
        }
        Algorithm::ES256 => {
            let pem = std::fs::read(keys_dir().join("ec-private.pem")).expect("key");
            let key = EncodingKey::from_ec_pem(&pem).expect("ec key");
            sign(alg, &key, claims, kid)
        }
        other => panic!("no test key for {other:?}"),
    }
}

/// Signs `claims` with HS256 keyed with `secret`; names `kid`.
pub fn hs256_with(secret: &[u8], claims: &Value, kid: Option<&str>) -> String {
    sign(
        Algorithm::HS256,
        &EncodingKey::from_secret(secret),
        claims,
        kid,
    )
}

/// Signs `claims` with RS256 using the private key in `file` (in
/// `tests/keys`); names `kid`.
pub fn rs256_with(file: &str, claims: &Value, kid: Option<&str>) -> String {
    let pem = std::fs::read(keys_dir().join(file)).expect("private key");
    let key = EncodingKey::from_rsa_pem(&pem).expect("rsa key");
    sign(Algorithm::RS256, &key, claims, kid)
}

fn sign(alg: Algorithm, key: &EncodingKey, claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("sign")
}

/// A caller token of `tenant` (HS256, valid for an hour).
pub fn caller_token(tenant: &str) -> String {
    mint(Algorithm::HS256, &claims(Some(tenant), &[]), None)
}

/// An admin token (no tenant).
pub fn admin_token() -> String {
    mint(Algorithm::HS256, &claims(None, &[ADMIN_ROLE]), None)
}

/// Unpadded base64url (JWT segments).
pub fn b64url(bytes: &[u8]) -> String {
    const ABC: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..=chunk.len() {
            out.push(ABC[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    out
}

// ---------------------------------------------------------------------------
// A gateway in the test process
// ---------------------------------------------------------------------------

/// How to start a test gateway.
pub struct TestOptions {
    /// Environment of the config: the test secrets, then these (config
    /// overrides as `CPHGW__SECTION__KEY` variables with TOML literals, or
    /// secrets the config names).
    env: Vec<(String, String)>,
    sim: SimOptions,
    tenants: String,
    /// Whether the config names the HS256 secret.
    hs256_secret: bool,
    /// Replacements in the config text (from, to).
    edits: Vec<(String, String)>,
}

impl Default for TestOptions {
    fn default() -> Self {
        Self {
            env: vec![("CPHGW__LIMITS__TENANT_RATE_PER_S".into(), "100000".into())],
            sim: SimOptions::default(),
            tenants: default_tenants(),
            hs256_secret: true,
            edits: Vec::new(),
        }
    }
}

impl TestOptions {
    /// Sets a config key: `set("upstream.max_batch_size", "7")`.
    pub fn set(self, key: &str, toml_value: &str) -> Self {
        let var = format!("CPHGW__{}", key.replace('.', "__").to_ascii_uppercase());
        self.env(&var, toml_value)
    }

    /// Sets an environment variable of the config (replacing a test secret
    /// of the same name).
    pub fn env(mut self, var: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != var);
        self.env.push((var.into(), value.into()));
        self
    }

    pub fn sim(mut self, f: impl FnOnce(&mut SimOptions)) -> Self {
        f(&mut self.sim);
        self
    }

    /// The tenants file's text (default: [`default_tenants`]).
    pub fn tenants(mut self, text: &str) -> Self {
        self.tenants = text.to_owned();
        self
    }

    /// A config without `auth.hs256_secret_env`.
    pub fn without_hs256_secret(mut self) -> Self {
        self.hs256_secret = false;
        self
    }

    /// Replaces `from` (which must be there) by `to` in the config text,
    /// for what an override cannot do (remove a key).
    pub fn replace(mut self, from: &str, to: &str) -> Self {
        self.edits.push((from.into(), to.into()));
        self
    }
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
        let mut env = secret_env();
        env.extend(opts.env);
        let mut text = base_config(&sim.url(), &tenants_file.display().to_string());
        if !opts.hs256_secret {
            text = without_hs256_secret(&text);
        }
        for (from, to) in &opts.edits {
            assert!(
                text.contains(from.as_str()),
                "{from:?} is not in the config"
            );
            text = text.replace(from.as_str(), to);
        }
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
            client: client(),
            dir,
            tenants_file,
        }
    }

    /// `POST /v1/cloud-phone/phones/batch-stop` with `ids`.
    pub async fn stop(&self, token: &str, ids: &[String]) -> (StatusCode, Value) {
        self.stop_at(STOP, token, ids).await
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

    /// A POST of any `body` (as `application/json`) to the caller API, with
    /// an optional `X-Request-Id`; the answer must be JSON.
    pub async fn post_raw(
        &self,
        path: &str,
        token: &str,
        body: impl Into<reqwest::Body>,
        request_id: Option<&str>,
    ) -> (StatusCode, HeaderMap, Value) {
        let mut req = self
            .client
            .post(format!("{}{path}", self.url))
            .bearer_auth(token)
            .header("content-type", "application/json")
            .body(body);
        if let Some(id) = request_id {
            req = req.header("x-request-id", id);
        }
        let resp = req.send().await.expect("gateway answers");
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = resp.bytes().await.expect("body");
        let body = serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            panic!(
                "{status}: body is not JSON ({e}): {:?}",
                String::from_utf8_lossy(&bytes)
            )
        });
        (status, headers, body)
    }

    /// A GET on the caller API with `token`: status, headers, body text.
    pub async fn get(&self, path: &str, token: &str) -> (StatusCode, HeaderMap, String) {
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
            .map(|i| cph_sim::phone_id(project, i))
            .collect()
    }

    /// The admin port's `/metrics` text.
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

// ---------------------------------------------------------------------------
// Checks
// ---------------------------------------------------------------------------

/// The distinct ids of `ids`, in order of first appearance.
pub fn distinct(ids: &[String]) -> Vec<&str> {
    let mut seen = HashSet::new();
    ids.iter()
        .map(String::as_str)
        .filter(|id| seen.insert(*id))
        .collect()
}

/// Checks the core promise: `jobs` has exactly one entry per distinct id of
/// `ids`, in order of first appearance, each with a job or an error code.
pub fn assert_accounts_for(ids: &[String], body: &Value) {
    let distinct = distinct(ids);
    let jobs = body["jobs"]
        .as_array()
        .unwrap_or_else(|| panic!("no jobs array in {body}"));
    assert_eq!(jobs.len(), distinct.len(), "one entry per distinct id");
    for (entry, id) in jobs.iter().zip(distinct) {
        assert_eq!(entry["phone_id"], id, "entries in request order");
        let has_job = entry["job_id"].is_string();
        let has_error = entry["error_code"].is_string() && entry["error_msg"].is_string();
        assert!(
            has_job || has_error,
            "entry with neither job nor error: {entry}"
        );
    }
}

/// A gateway error: this status and code, and the error body
/// `{"request_id","error_code","error_msg"}` (both strings non-empty) and
/// nothing else.
pub fn assert_gateway_error(status: StatusCode, body: &Value, want: StatusCode, code: &str) {
    assert_eq!(status, want, "{body}");
    assert_eq!(body["error_code"], code, "{body}");
    assert!(
        body["request_id"].as_str().is_some_and(|s| !s.is_empty()),
        "no request_id: {body}"
    );
    assert!(
        body["error_msg"].as_str().is_some_and(|s| !s.is_empty()),
        "no error_msg: {body}"
    );
    let keys: Vec<&String> = body.as_object().expect("object").keys().collect();
    assert_eq!(
        keys.len(),
        3,
        "only request_id, error_code, error_msg: {body}"
    );
}

/// Whether `s` looks like a generated id: 32 hexadecimal characters.
pub fn is_hex32(s: &str) -> bool {
    s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The value of the sample `series` (name and labels as written in the
/// text, e.g. `cphgw_requests_total{route="stop",status="200",tenant="acme"}`) in a
/// metrics text, if it is there.
pub fn sample(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .map(|l| {
            l.rsplit(' ')
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("not a number in {l:?}"))
        })
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

/// A client for the gateway under test. Like any client of a server that
/// closes idle connections (`server.idle_timeout_ms`, 60 s), it drops its own
/// idle ones sooner: a connection reused at the moment the gateway closes it
/// fails the request (reqwest keeps them 90 s by default).
pub fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .pool_idle_timeout(std::time::Duration::from_secs(30))
        .build()
        .expect("client")
}
