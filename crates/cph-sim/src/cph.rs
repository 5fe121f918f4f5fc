//! CPH batch-stop.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;

use axum::Extension;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::auth::{self, Request};
use crate::faults::Faults;
use crate::ids::{Hex128, parse_hex32, seeded_index};
use crate::inject::Fault;
use crate::padding;
use crate::reply::Reply;
use crate::server::KillSwitch;
use crate::state::Shared;
use crate::stats::inc;
use crate::util::{lock, to_json};

/// The batch-level refusal of poisoned batches.
pub(crate) const POISONED: (&str, &str) = ("CPS.0004", "invalid phone id in the request");
/// The per-phone error of the odd entries of `Faults::weird_entries`.
const WEIRD_ERROR: (&str, &str) = ("CPS.0003", "internal error");

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

/// The `job_id` of an entry: a job id, or (with `weird_entries`) a literal.
#[derive(Serialize)]
#[serde(untagged)]
enum JobId {
    Id(Hex128),
    Text(&'static str),
}

/// One entry of a batch-stop answer: a job, or an error for that id.
#[derive(Serialize)]
struct JobEntry<'a> {
    phone_id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    job_id: Option<JobId>,
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

/// The faults that shape a batch-stop answer (copied out of the injector).
struct Shape {
    poisoned: bool,
    oversize_error_msg_bytes: u64,
    oversize_body_bytes: u64,
    oversize_chunked: bool,
    weird_entries: bool,
    status_201: bool,
}

impl Shape {
    fn of(f: &Faults, ids: &[IdRef<'_>]) -> Self {
        let poisoned = f.reject_all_400
            || (!f.poison_ids.is_empty()
                && ids
                    .iter()
                    .any(|IdRef(id)| f.poison_ids.iter().any(|p| p == id)));
        Self {
            poisoned,
            oversize_error_msg_bytes: f.oversize_error_msg_bytes,
            oversize_body_bytes: f.oversize_body_bytes,
            oversize_chunked: f.oversize_chunked,
            weird_entries: f.weird_entries,
            status_201: f.status_201,
        }
    }
}

/// `POST /v1/{project_id}/cloud-phone/phones/batch-stop`.
///
/// Order: auth, project, latency, fault, body, poison. Error faults stop
/// nothing; hang and reset apply the stops first.
pub(crate) async fn batch_stop(
    State(sim): State<Arc<Shared>>,
    Path(project): Path<String>,
    Extension(kill): Extension<Arc<KillSwitch>>,
    method: Method,
    uri: Uri,
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

    let auth_req = Request {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
    };
    if let Err(denied) = auth::authorize(&sim, &auth_req, &project) {
        return reply.denied(denied);
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
        Ok(req) if req.phone_ids.is_empty() => {
            reply.error(StatusCode::BAD_REQUEST, "CPS.0009", "phone_ids is empty")
        }
        Ok(req) if req.phone_ids.len() > max => reply.error(
            StatusCode::BAD_REQUEST,
            "CPS.0001",
            &format!("invalid request body: at most {max} phone_ids per request"),
        ),
        Ok(req) => {
            let shape = sim.faults.with(|f| Shape::of(f, &req.phone_ids));
            if shape.poisoned {
                poisoned(&reply, shape.oversize_error_msg_bytes)
            } else {
                let jobs = stop_phones(&sim, &project, project_key, &reply, &req.phone_ids);
                tracing::debug!(%project, ids = jobs.len(), "batch-stop");
                answer(&reply, jobs, &shape)
            }
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

/// The 400 `CPS.0004` refusal of a poisoned batch, its `error_msg` padded
/// to `msg_bytes` when that is above 0.
fn poisoned(reply: &Reply, msg_bytes: u64) -> Response {
    let (code, msg) = POISONED;
    if msg_bytes == 0 {
        return reply.error(StatusCode::BAD_REQUEST, code, msg);
    }
    let prefix = format!(
        r#"{{"request_id":"{}","error_code":"{code}","error_msg":"{msg}"#,
        reply.request_id
    );
    let min_len = prefix.len() as u64 + msg_bytes.saturating_sub(msg.len() as u64) + 2;
    reply.finish(padding::padded(
        StatusCode::BAD_REQUEST,
        prefix.into_bytes(),
        br#""}"#,
        min_len,
        false,
    ))
}

/// The answer of a batch-stop that was applied.
fn answer(reply: &Reply, mut jobs: Vec<JobEntry<'_>>, shape: &Shape) -> Response {
    if shape.weird_entries {
        jobs = weird(jobs);
    }
    let status = if shape.status_201 {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let body = BatchStopReply {
        request_id: reply.request_id,
        jobs,
    };
    if shape.oversize_body_bytes == 0 {
        return reply.json(status, &body);
    }
    reply.finish(padding::padded_object(
        status,
        to_json(&body),
        shape.oversize_body_bytes,
        shape.oversize_chunked,
    ))
}

/// The odd entries of `Faults::weird_entries` (see there).
fn weird(jobs: Vec<JobEntry<'_>>) -> Vec<JobEntry<'_>> {
    let mut out = Vec::with_capacity(jobs.len() + 1);
    let mut nth_job = 0;
    for mut entry in jobs {
        if entry.job_id.is_some() {
            nth_job += 1;
            match nth_job {
                1 => {
                    (entry.error_code, entry.error_msg) = (Some(WEIRD_ERROR.0), Some(WEIRD_ERROR.1))
                }
                2 => entry.job_id = Some(JobId::Text("")),
                3 => out.push(JobEntry {
                    phone_id: entry.phone_id,
                    job_id: None,
                    error_code: Some(WEIRD_ERROR.0),
                    error_msg: Some(WEIRD_ERROR.1),
                }),
                _ => {}
            }
        }
        out.push(entry);
    }
    out
}

/// Applies the stops of one batch under one lock; one entry per id, in
/// order; records the batch's jobs under the answer's request id.
fn stop_phones<'a>(
    sim: &Shared,
    project: &str,
    project_key: u128,
    reply: &Reply,
    ids: &'a [IdRef<'a>],
) -> Vec<JobEntry<'a>> {
    let now = sim.clock.now_ns();
    let mut created = 0;
    let mut failures = sim.faults.job_failures();
    let mut store = lock(&sim.store);
    let project_idx = store.project(project_key);
    let first_seq = store.next_seq();
    let jobs = ids
        .iter()
        .map(|IdRef(id)| {
            let stopped = seeded_index(project, id, sim.cfg.phones_per_project)
                .and_then(|phone| store.stop(project_idx, phone, now, || failures.next_fails()));
            match stopped {
                Ok(job) => {
                    created += 1;
                    JobEntry {
                        phone_id: id,
                        job_id: Some(JobId::Id(Hex128(job))),
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
            }
        })
        .collect();
    store.record_batch(reply.request_id.0, project_idx, first_seq);
    drop(store);
    drop(failures);
    sim.stats.stopped_phones.fetch_add(created, Relaxed);
    jobs
}
