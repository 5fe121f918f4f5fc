//! CPH routes: batch-stop and job query.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use super::faults::Fault;
use super::phone_id;
use super::server::KillSwitch;
use super::state::{Hex128, Shared, inc, json_response, lock, parse_hex32, seeded_index};

/// Huawei's message for a missing, unknown, expired, revoked or foreign token.
const TOKEN_INVALID: &str = "Incorrect IAM authentication information: token invalid";
const X_REQUEST_ID: &str = "x-request-id";

/// What every CPH answer carries: a fresh request id, and the caller's
/// `X-Request-Id` header echoed back.
struct Reply {
    request_id: Hex128,
    echo: Option<HeaderValue>,
}

/// A CPH error body.
#[derive(Serialize)]
struct CphError<'a> {
    request_id: Hex128,
    error_code: &'a str,
    error_msg: &'a str,
}

impl Reply {
    fn new(headers: &HeaderMap) -> Self {
        Self {
            request_id: Hex128::random(),
            echo: headers.get(X_REQUEST_ID).cloned(),
        }
    }

    fn json(&self, status: StatusCode, body: &impl Serialize) -> Response {
        let mut res = json_response(status, body);
        if let Some(id) = &self.echo {
            res.headers_mut()
                .insert(HeaderName::from_static(X_REQUEST_ID), id.clone());
        }
        res
    }

    fn error(&self, status: StatusCode, error_code: &str, error_msg: &str) -> Response {
        let body = CphError {
            request_id: self.request_id,
            error_code,
            error_msg,
        };
        self.json(status, &body)
    }

    fn unauthorized(&self) -> Response {
        self.error(StatusCode::UNAUTHORIZED, "APIG.0301", TOKEN_INVALID)
    }
}

/// Whether the request's `X-Auth-Token` is valid for `project`.
fn authorized(sim: &Shared, headers: &HeaderMap, project: &str) -> bool {
    headers
        .get("x-auth-token")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|token| sim.tokens.is_valid(token, project))
}

/// A batch-stop body.
#[derive(Deserialize)]
struct BatchStop<'a> {
    #[serde(borrow)]
    phone_ids: Vec<IdRef<'a>>,
}

/// A phone id borrowed from the request body (owned only if it had escapes).
struct IdRef<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for IdRef<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct StrVisitor;
        impl<'de> Visitor<'de> for StrVisitor {
            type Value = Cow<'de, str>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a phone id string")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Cow::Borrowed(v))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Cow::Owned(v.to_owned()))
            }
        }
        d.deserialize_str(StrVisitor).map(IdRef)
    }
}

/// One entry of a batch-stop answer: a job, or an error for that id.
#[derive(Serialize)]
struct JobEntry<'a> {
    phone_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_id: Option<Hex128>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_msg: Option<&'static str>,
}

#[derive(Serialize)]
struct BatchStopReply<'a> {
    request_id: Hex128,
    jobs: Vec<JobEntry<'a>>,
}

/// `POST /v1/{project_id}/cloud-phone/phones/batch-stop`.
///
/// Order: auth, project, latency, fault, body. Error faults stop nothing;
/// hang and reset apply the stops first.
pub(crate) async fn batch_stop(
    State(sim): State<Arc<Shared>>,
    Path(project): Path<String>,
    Extension(kill): Extension<Arc<KillSwitch>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let stats = &sim.stats;
    inc(&stats.batch_stop_requests);
    let project_key = parse_hex32(&project);
    let _flight = sim.enter_flight(project_key);
    let reply = Reply::new(&headers);

    let request = serde_json::from_slice::<BatchStop<'_>>(&body);
    if let Ok(req) = &request {
        let n = req.phone_ids.len() as u64;
        stats.batch_stop_ids.fetch_add(n, Relaxed);
        stats.max_ids_per_call.fetch_max(n, Relaxed);
    }

    if !authorized(&sim, &headers, &project) {
        return reply.unauthorized();
    }
    let Some(project_key) = project_key else {
        return reply.error(StatusCode::NOT_FOUND, "CPS.0002", "project not found");
    };
    let (fault, delay) = sim.faults.draw_batch_stop();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if fault != Fault::None {
        inc(&stats.faults_injected);
        tracing::debug!(%project, ?fault, "batch-stop: injecting fault");
    }
    if let Some(res) = error_fault(&reply, fault) {
        return res;
    }

    let max = sim.cfg.max_batch_size;
    let res = match request {
        Ok(req) if req.phone_ids.is_empty() => reply.error(
            StatusCode::BAD_REQUEST,
            "CPS.0001",
            "invalid request body: phone_ids is empty",
        ),
        Ok(req) if req.phone_ids.len() > max => reply.error(
            StatusCode::BAD_REQUEST,
            "CPS.0001",
            &format!("invalid request body: at most {max} phone_ids per request"),
        ),
        Ok(req) => {
            let jobs = stop_phones(&sim, &project, project_key, &req.phone_ids);
            tracing::debug!(%project, ids = jobs.len(), "batch-stop");
            reply.json(
                StatusCode::OK,
                &BatchStopReply {
                    request_id: reply.request_id,
                    jobs,
                },
            )
        }
        Err(e) => {
            tracing::debug!(%project, error = %e, "batch-stop: bad body");
            reply.error(StatusCode::BAD_REQUEST, "CPS.0001", "invalid request body")
        }
    };

    match fault {
        Fault::Hang(hang) => tokio::time::sleep(hang).await,
        Fault::Reset => {
            // The connection task drops the socket with SO_LINGER 0 (RST) and
            // this handler with it: no answer is ever written.
            kill.fire();
            return std::future::pending().await;
        }
        _ => {}
    }
    res
}

/// The answer of an error fault (500, 503, 429); `None` for the other faults.
fn error_fault(reply: &Reply, fault: Fault) -> Option<Response> {
    let (status, code, msg) = match fault {
        Fault::Error500 => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "CPS.0003",
            "internal error",
        ),
        Fault::Error503 => (
            StatusCode::SERVICE_UNAVAILABLE,
            "APIG.0503",
            "service unavailable",
        ),
        Fault::Throttle(_) => (
            StatusCode::TOO_MANY_REQUESTS,
            "APIG.0308",
            "The throttling threshold has been reached",
        ),
        Fault::None | Fault::Hang(_) | Fault::Reset => return None,
    };
    let mut res = reply.error(status, code, msg);
    if let Fault::Throttle(retry_after) = fault {
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
    }
    Some(res)
}

/// Applies the stops of one batch under one lock; one entry per id, in order.
fn stop_phones<'a>(
    sim: &Shared,
    project: &str,
    project_key: u128,
    ids: &'a [IdRef<'a>],
) -> Vec<JobEntry<'a>> {
    let now = sim.clock.now_ns();
    let mut newly_stopped = 0;
    let mut store = lock(&sim.store);
    let project_idx = store.project(project_key);
    let jobs = ids
        .iter()
        .map(
            |IdRef(id)| match seeded_index(project, id, sim.cfg.phones_per_project) {
                Ok(phone) => {
                    let (job, newly) = store.stop(project_idx, phone, now);
                    newly_stopped += u64::from(newly);
                    JobEntry {
                        phone_id: id,
                        job_id: Some(Hex128(job)),
                        error_code: None,
                        error_msg: None,
                    }
                }
                Err((code, msg)) => JobEntry {
                    phone_id: id,
                    job_id: None,
                    error_code: Some(code),
                    error_msg: Some(msg),
                },
            },
        )
        .collect();
    drop(store);
    sim.stats.stopped_phones.fetch_add(newly_stopped, Relaxed);
    jobs
}

/// A job query answer.
#[derive(Serialize)]
struct JobReply {
    request_id: Hex128,
    job_id: Hex128,
    phone_id: String,
    begin_time: String,
    end_time: Option<String>,
    status: i8,
    error_code: Option<&'static str>,
    error_msg: Option<&'static str>,
}

/// `GET /v1/{project_id}/cloud-phone/jobs/{job_id}`: status 1 (running) until
/// the job duration has passed, then 2 (success).
pub(crate) async fn job(
    State(sim): State<Arc<Shared>>,
    Path((project, job_id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    inc(&sim.stats.job_queries);
    let reply = Reply::new(&headers);
    if !authorized(&sim, &headers, &project) {
        return reply.unauthorized();
    }
    let delay = sim.faults.cph_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    let found = parse_hex32(&project)
        .zip(parse_hex32(&job_id))
        .and_then(|(project_key, id)| {
            let job = lock(&sim.store).job(id)?;
            (job.project == project_key).then_some((id, job))
        });
    let Some((id, job)) = found else {
        return reply.error(StatusCode::NOT_FOUND, "CPS.0006", "job not found");
    };
    let end = job.begin_ns.saturating_add(sim.cfg.job_duration_ns);
    let done = sim.clock.now_ns() >= end;
    let body = JobReply {
        request_id: reply.request_id,
        job_id: Hex128(id),
        phone_id: phone_id(&project, job.phone),
        begin_time: sim.clock.rfc3339_at(job.begin_ns),
        end_time: done.then(|| sim.clock.rfc3339_at(end)),
        status: if done { 2 } else { 1 },
        error_code: None,
        error_msg: None,
    };
    reply.json(StatusCode::OK, &body)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::*;
    use super::super::{PhoneState, Sim, SimOptions};
    use super::*;
    use serde_json::{Value, json};
    use std::time::Duration;

    #[tokio::test]
    async fn batch_stop_mixed_ids() {
        let sim = Sim::start(opts()).await.unwrap();
        let c = client();
        let t = token(&c, &sim, PROJECT).await;
        let (p0, p7) = (phone_id(PROJECT, 0), phone_id(PROJECT, 7));
        let beyond = phone_id(PROJECT, 100);
        let foreign = phone_id(OTHER, 1);
        let ids = [p0.as_str(), "not-a-phone", &beyond, &foreign, &p7, &p0];
        let res = c
            .post(format!(
                "{}/v1/{PROJECT}/cloud-phone/phones/batch-stop",
                sim.url()
            ))
            .header("X-Auth-Token", &t)
            .header("X-Request-Id", "caller-42")
            .json(&json!({ "phone_ids": ids }))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.headers()["x-request-id"], "caller-42");
        let body: Value = res.json().await.unwrap();
        assert!(parse_hex32(body["request_id"].as_str().unwrap()).is_some());
        let jobs = body["jobs"].as_array().unwrap();
        assert_eq!(jobs.len(), ids.len());
        for (entry, id) in jobs.iter().zip(ids) {
            assert_eq!(entry["phone_id"], id);
        }
        let codes: Vec<_> = jobs
            .iter()
            .map(|j| j.get("error_code").and_then(Value::as_str))
            .collect();
        assert_eq!(
            codes,
            [
                None,
                Some("CPS.0004"),
                Some("CPS.0005"),
                Some("CPS.0005"),
                None,
                None
            ]
        );
        for j in jobs {
            assert_eq!(
                j.get("job_id").is_some(),
                j.get("error_code").is_none(),
                "{j}"
            );
            assert_eq!(
                j.get("error_msg").is_some(),
                j.get("error_code").is_some(),
                "{j}"
            );
        }
        assert_eq!(jobs[1]["error_msg"], "invalid phone id");
        assert_eq!(jobs[2]["error_msg"], "phone not found");
        assert_ne!(jobs[0]["job_id"], jobs[5]["job_id"]);
        assert_eq!(sim.phone_state(PROJECT, &p0), Some(PhoneState::Stopping));
        assert_eq!(
            sim.phone_state(PROJECT, &phone_id(PROJECT, 1)),
            Some(PhoneState::Running)
        );
        assert_eq!(sim.phone_state(PROJECT, &beyond), None);
        assert_eq!(sim.phone_state(OTHER, &p0), None);
        let stats = sim.stats();
        assert_eq!(
            (
                stats.batch_stop_ids,
                stats.max_ids_per_call,
                stats.stopped_phones
            ),
            (6, 6, 2)
        );
    }

    #[tokio::test]
    async fn batch_stop_refusals() {
        let sim = Sim::start(SimOptions {
            max_batch_size: 3,
            ..opts()
        })
        .await
        .unwrap();
        let c = client();
        let t = token(&c, &sim, PROJECT).await;
        let ids: Vec<String> = (0..4).map(|i| phone_id(PROJECT, i)).collect();
        let ids: Vec<&str> = ids.iter().map(String::as_str).collect();

        let res = stop_call(&c, &sim, &t, PROJECT, &ids).await.unwrap();
        assert_eq!(res.status(), 400);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error_code"], "CPS.0001");
        assert!(body["error_msg"].as_str().unwrap().contains('3'), "{body}");
        assert_eq!(sim.phone_state(PROJECT, ids[0]), Some(PhoneState::Running));
        assert_eq!(
            stop_call(&c, &sim, &t, PROJECT, &ids[..3])
                .await
                .unwrap()
                .status(),
            200
        );

        let url = format!("{}/v1/{PROJECT}/cloud-phone/phones/batch-stop", sim.url());
        for bad in [
            r#"{"phone_ids":[]}"#,
            r#"{"phone_ids":[1]}"#,
            r#"{"ids":["a"]}"#,
            "[",
            "",
        ] {
            let res = c
                .post(&url)
                .header("X-Auth-Token", &t)
                .body(bad)
                .send()
                .await
                .unwrap();
            assert_eq!(res.status(), 400, "{bad}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error_code"], "CPS.0001", "{bad}");
        }

        // Tokens are bound to their project; a bad project id is not a project.
        let res = stop_call(&c, &sim, &t, OTHER, &ids[..1]).await.unwrap();
        assert_eq!(res.status(), 401);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error_code"], "APIG.0301");
        assert_eq!(body["error_msg"], TOKEN_INVALID);
        let res = stop_call(&c, &sim, "", PROJECT, &ids[..1]).await.unwrap();
        assert_eq!(res.status(), 401);
        let odd = "Project-1";
        let t_odd = token(&c, &sim, odd).await;
        let res = stop_call(&c, &sim, &t_odd, odd, &ids[..1]).await.unwrap();
        assert_eq!(res.status(), 404);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error_code"], "CPS.0002");
        assert_eq!(sim.stats().unauthorized, 2);
    }

    #[tokio::test]
    async fn revoked_tokens_are_refused() {
        let sim = Sim::start(opts()).await.unwrap();
        let c = client();
        let t = token(&c, &sim, PROJECT).await;
        let p = phone_id(PROJECT, 0);
        sim.revoke_tokens();
        assert_eq!(
            stop_call(&c, &sim, &t, PROJECT, &[&p])
                .await
                .unwrap()
                .status(),
            401
        );
        let fresh = token(&c, &sim, PROJECT).await;
        assert_eq!(
            stop_call(&c, &sim, &fresh, PROJECT, &[&p])
                .await
                .unwrap()
                .status(),
            200
        );
        assert_eq!(
            stop_call(&c, &sim, &t, PROJECT, &[&p])
                .await
                .unwrap()
                .status(),
            401
        );
    }

    #[tokio::test]
    async fn jobs_run_then_succeed() {
        let sim = Sim::start(opts()).await.unwrap();
        let c = client();
        let t = token(&c, &sim, PROJECT).await;
        let p = phone_id(PROJECT, 2);
        let body: Value = stop_call(&c, &sim, &t, PROJECT, &[&p])
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let job_id = body["jobs"][0]["job_id"].as_str().unwrap().to_owned();
        assert!(parse_hex32(&job_id).is_some());
        let query = |project: &'static str, token: String, job: String| {
            let req = c
                .get(format!("{}/v1/{project}/cloud-phone/jobs/{job}", sim.url()))
                .header("X-Auth-Token", token);
            async move { req.send().await.unwrap() }
        };

        let res = query(PROJECT, t.clone(), job_id.clone()).await;
        assert_eq!(res.status(), 200);
        let running: Value = res.json().await.unwrap();
        assert_eq!(running["status"], 1);
        assert_eq!(running["job_id"], job_id.as_str());
        assert_eq!(running["phone_id"], p.as_str());
        assert!(running["end_time"].is_null() && running["error_code"].is_null());
        assert!(running["error_msg"].is_null());
        assert!(running["begin_time"].as_str().unwrap().ends_with('Z'));
        assert_eq!(sim.phone_state(PROJECT, &p), Some(PhoneState::Stopping));

        tokio::time::sleep(Duration::from_millis(250)).await;
        let done: Value = query(PROJECT, t.clone(), job_id.clone())
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(done["status"], 2);
        assert!(done["end_time"].as_str().unwrap() > done["begin_time"].as_str().unwrap());
        assert_ne!(done["request_id"], running["request_id"]);
        assert_eq!(sim.phone_state(PROJECT, &p), Some(PhoneState::Stopped));

        let unknown = query(PROJECT, t.clone(), "0".repeat(32)).await;
        assert_eq!(unknown.status(), 404);
        let body: Value = unknown.json().await.unwrap();
        assert_eq!(body["error_code"], "CPS.0006");
        let other = token(&c, &sim, OTHER).await;
        assert_eq!(query(OTHER, other, job_id.clone()).await.status(), 404);
        assert_eq!(query(OTHER, t, job_id).await.status(), 401);
        assert_eq!(sim.stats().job_queries, 5);
    }
}
