//! Tests over real HTTP on loopback, and the helpers they share.

mod aksk;
mod basics;
mod cph;
mod faults;
mod hostile;
mod iam;
mod jobs;
mod server;
mod tls;

pub(crate) use std::time::Duration;

pub(crate) use crate::auth::TOKEN_INVALID;
pub(crate) use crate::ids::parse_hex32;
pub(crate) use crate::{Faults, PhoneState, Sim, SimOptions, SimStats, phone_id};
use serde_json::{Value, json};

/// A well-formed project id.
pub(crate) const PROJECT: &str = "0123456789abcdef0123456789abcdef";
/// Another project with a different phone prefix.
pub(crate) const OTHER: &str = "fedcba9876543210fedcba9876543210";

/// Options with short durations for tests.
pub(crate) fn opts() -> SimOptions {
    SimOptions {
        phones_per_project: 100,
        job_duration: Duration::from_millis(200),
        ..SimOptions::default()
    }
}

/// A client that never goes through a proxy.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder().no_proxy().build().unwrap()
}

/// A password-auth body scoped to `project`.
pub(crate) fn auth_body(user: &str, password: &str, project: &str) -> Value {
    json!({"auth": {
        "identity": {"methods": ["password"], "password": {"user": {
            "name": user, "password": password, "domain": {"name": "sim-domain"}}}},
        "scope": {"project": {"id": project}}}})
}

/// Gets a token for `project` with the default credentials.
pub(crate) async fn token(c: &reqwest::Client, sim: &Sim, project: &str) -> String {
    let res = c
        .post(format!("{}/v3/auth/tokens", sim.url()))
        .json(&auth_body("sim-user", "sim-password", project))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 201);
    res.headers()["x-subject-token"]
        .to_str()
        .unwrap()
        .to_owned()
}

/// Sends a batch-stop for `ids` in `project`.
pub(crate) async fn stop_call(
    c: &reqwest::Client,
    sim: &Sim,
    token: &str,
    project: &str,
    ids: &[&str],
) -> reqwest::Result<reqwest::Response> {
    c.post(format!(
        "{}/v1/{project}/cloud-phone/phones/batch-stop",
        sim.url()
    ))
    .header("X-Auth-Token", token)
    .json(&json!({ "phone_ids": ids }))
    .send()
    .await
}

/// Headers for a signed call to `project`: `Content-Type`, `X-Project-Id`
/// and an `X-Sdk-Date` of now.
pub(crate) fn sign_base(project: &str) -> http::HeaderMap {
    let mut h = http::HeaderMap::new();
    h.insert("content-type", "application/json".parse().unwrap());
    h.insert("x-project-id", project.parse().unwrap());
    let now = crate::sign::format_sdk_date(time::OffsetDateTime::now_utc());
    h.insert("x-sdk-date", now.parse().unwrap());
    h
}

/// Adds `Host` (unless `with_host` is false) and an `Authorization` signed
/// with `ak`/`sk` over every header in `headers`.
pub(crate) fn sign(
    sim: &Sim,
    method: &str,
    path_query: &str,
    mut headers: http::HeaderMap,
    body: &[u8],
    (ak, sk): (&str, &str),
    with_host: bool,
) -> http::HeaderMap {
    if with_host {
        let url = sim.url();
        let host = url.split_once("://").unwrap().1;
        headers.insert("host", host.parse().unwrap());
    }
    let (path, query) = match path_query.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path_query, None),
    };
    let req = crate::sign::SignedRequest {
        method,
        path,
        query,
        headers: &headers,
        body,
    };
    let auth = crate::sign::authorization(ak, sk, &req);
    headers.insert("authorization", auth.parse().unwrap());
    headers
}

/// The default credential.
pub(crate) const DEFAULT: (&str, &str) = (crate::DEFAULT_AK, crate::DEFAULT_SK);

/// Sends a call with exactly these headers; the status and the JSON body
/// (`Null` if it is not JSON).
pub(crate) async fn send(
    c: &reqwest::Client,
    sim: &Sim,
    method: &str,
    path_query: &str,
    headers: http::HeaderMap,
    body: &[u8],
) -> (u16, Value) {
    let res = c
        .request(
            method.parse().unwrap(),
            format!("{}{path_query}", sim.url()),
        )
        .headers(headers)
        .body(body.to_vec())
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    let body = res.json().await.unwrap_or(Value::Null);
    (status, body)
}

/// A signed batch-stop of `ids` in `project` with the default credential.
pub(crate) async fn signed_stop(
    c: &reqwest::Client,
    sim: &Sim,
    project: &str,
    ids: &[&str],
) -> (u16, Value) {
    let path = format!("/v1/{project}/cloud-phone/phones/batch-stop");
    let body = json!({ "phone_ids": ids }).to_string();
    let h = sign(
        sim,
        "POST",
        &path,
        sign_base(project),
        body.as_bytes(),
        DEFAULT,
        true,
    );
    send(c, sim, "POST", &path, h, body.as_bytes()).await
}

/// A GET with `X-Auth-Token`; the status and the JSON body (`Null` if none).
pub(crate) async fn get(c: &reqwest::Client, sim: &Sim, token: &str, path: &str) -> (u16, Value) {
    let mut h = http::HeaderMap::new();
    h.insert("x-auth-token", token.parse().unwrap());
    send(c, sim, "GET", path, h, b"").await
}
