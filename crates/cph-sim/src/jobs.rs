//! CPH job query, job list and phone detail.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::Response;
use bytes::Bytes;
use serde::Serialize;

use crate::auth::{self, Request};
use crate::ids::{Hex128, parse_hex32, phone_id, seeded_index};
use crate::padding;
use crate::reply::Reply;
use crate::sign::query_pairs;
use crate::state::Shared;
use crate::stats::inc;
use crate::store::{Job, JobStatus, STOP_FAILED, Store};
use crate::util::{lock, to_json};

/// Most request ids in one job list call.
pub(crate) const MAX_REQUEST_IDS: usize = 20;
/// Largest (and default) job list page.
pub(crate) const MAX_LIMIT: u64 = 100;
/// The code of job list parameter errors (400).
pub(crate) const INVALID_PARAMETER: &str = "CPS.0004";
/// The body of job answers under `Faults::job_query_not_json`.
const NOT_JSON: &str = "job accepted, status: running (this is not JSON)";

/// A job as CPH shows it.
#[derive(Serialize)]
struct JobView {
    request_id: Hex128,
    job_id: Hex128,
    phone_id: String,
    begin_time: String,
    end_time: Option<String>,
    status: i8,
    error_code: Option<&'static str>,
    error_msg: Option<&'static str>,
}

fn view(
    sim: &Shared,
    store: &Store,
    request_id: Hex128,
    id: u128,
    job: &Job,
    project: &str,
) -> JobView {
    let now = sim.clock.now_ns();
    let status = store.job_status(job, now);
    let failed = (status == JobStatus::Failed).then_some(STOP_FAILED);
    JobView {
        request_id,
        job_id: Hex128(id),
        phone_id: phone_id(project, job.phone),
        begin_time: sim.clock.rfc3339_at(job.begin_ns),
        end_time: (status != JobStatus::Running)
            .then(|| sim.clock.rfc3339_at(store.end_ns(job.begin_ns))),
        status: status.code(),
        error_code: failed.map(|f| f.0),
        error_msg: failed.map(|f| f.1),
    }
}

/// Authenticates and delays a job or phone call; `Err` is the answer.
async fn admit(
    sim: &Shared,
    reply: &Reply,
    req: &Request<'_>,
    project: &str,
) -> Result<u128, Response> {
    auth::authorize(sim, req, project).map_err(|d| reply.denied(d))?;
    let delay = sim.faults.cph_delay();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    parse_hex32(project)
        .ok_or_else(|| reply.error(StatusCode::NOT_FOUND, "CPS.0002", "project not found"))
}

/// A 200 job answer, shaped by the faults (not JSON, padded).
fn job_answer(sim: &Shared, reply: &Reply, body: &impl Serialize) -> Response {
    let (not_json, pad, chunked) = sim.faults.with(|f| {
        (
            f.job_query_not_json,
            f.oversize_body_bytes,
            f.oversize_chunked,
        )
    });
    if not_json {
        let mut res = Response::new(NOT_JSON.into());
        res.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
        return reply.finish(res);
    }
    if pad == 0 {
        return reply.json(StatusCode::OK, body);
    }
    reply.finish(padding::padded_object(
        StatusCode::OK,
        to_json(body),
        pad,
        chunked,
    ))
}

/// `GET /v1/{project_id}/cloud-phone/jobs/{job_id}`: status 1 (running) until
/// the job duration has passed, then 2 (success) or -1 (failed).
pub(crate) async fn job(
    State(sim): State<Arc<Shared>>,
    Path((project, job_id)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inc(&sim.stats.job_queries);
    let _in_flight = JobQueryInFlight::enter(&sim.stats);
    let reply = Reply::new(&headers);
    let req = Request {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
    };
    let project_key = match admit(&sim, &reply, &req, &project).await {
        Ok(key) => key,
        Err(res) => return res,
    };
    let found = parse_hex32(&job_id).and_then(|id| {
        let store = lock(&sim.store);
        let job = store.job(id).filter(|j| j.project == project_key)?;
        Some(view(&sim, &store, reply.request_id, id, &job, &project))
    });
    match found {
        Some(body) => job_answer(&sim, &reply, &body),
        None => reply.error(StatusCode::NOT_FOUND, "CPS.0006", "job not found"),
    }
}

/// Job list parameters.
struct ListParams {
    request_ids: Vec<String>,
    offset: u64,
    limit: u64,
}

/// Parses `request_ids`, `offset` and `limit`; the error is the `error_msg`.
fn list_params(query: Option<&str>) -> Result<ListParams, String> {
    let (mut ids, mut offset, mut limit) = (None, 0, MAX_LIMIT);
    for (k, v) in query.map(query_pairs).unwrap_or_default() {
        match k.as_str() {
            "request_ids" => ids = Some(v),
            "offset" => {
                offset = v.parse().map_err(|_| format!("invalid offset: {v:.64}"))?;
            }
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|l| (1..=MAX_LIMIT).contains(l))
                    .ok_or_else(|| format!("limit must be within 1..={MAX_LIMIT}"))?;
            }
            _ => {}
        }
    }
    let ids = ids.ok_or("request_ids is required")?;
    let mut request_ids: Vec<String> = Vec::new();
    for id in ids.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        if !request_ids.iter().any(|r| r == id) {
            request_ids.push(id.to_owned());
        }
    }
    if request_ids.is_empty() {
        return Err("request_ids is required".into());
    }
    if request_ids.len() > MAX_REQUEST_IDS {
        return Err(format!("at most {MAX_REQUEST_IDS} request_ids per call"));
    }
    Ok(ListParams {
        request_ids,
        offset,
        limit,
    })
}

#[derive(Serialize)]
struct JobList {
    request_id: Hex128,
    count: usize,
    jobs: Vec<JobView>,
}

/// `GET /v1/{project_id}/cloud-phone/jobs?request_ids=a,b,c&offset=O&limit=L`:
/// the jobs of those batch-stop answers, by request id order then phone order.
pub(crate) async fn job_list(
    State(sim): State<Arc<Shared>>,
    Path(project): Path<String>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    inc(&sim.stats.job_list_requests);
    let reply = Reply::new(&headers);
    let req = Request {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
    };
    let project_key = match admit(&sim, &reply, &req, &project).await {
        Ok(key) => key,
        Err(res) => return res,
    };
    let params = match list_params(uri.query()) {
        Ok(p) => p,
        Err(msg) => {
            let msg = format!("invalid request parameter: {msg}");
            return reply.error(StatusCode::BAD_REQUEST, INVALID_PARAMETER, &msg);
        }
    };
    let (count, jobs) = {
        let store = lock(&sim.store);
        let all: Vec<(Hex128, u128, Job)> = params
            .request_ids
            .iter()
            .filter_map(|r| parse_hex32(r))
            .flat_map(|r| {
                store
                    .batch_jobs(project_key, r)
                    .into_iter()
                    .map(move |(id, job)| (Hex128(r), id, job))
            })
            .collect();
        let page = all
            .iter()
            .skip(usize::try_from(params.offset).unwrap_or(usize::MAX))
            .take(params.limit as usize)
            .map(|(r, id, job)| view(&sim, &store, *r, *id, job, &project))
            .collect();
        (all.len(), page)
    };
    let body = JobList {
        request_id: reply.request_id,
        count,
        jobs,
    };
    job_answer(&sim, &reply, &body)
}

#[derive(Serialize)]
struct PhoneDetail {
    request_id: Hex128,
    phone_id: String,
    phone_name: String,
    status: i32,
}

/// `GET /v1/{project_id}/cloud-phone/phones/{phone_id}`: a seeded phone and
/// its status (2 running, 7 stopping, 8 stopped, -9 stop failed).
pub(crate) async fn phone(
    State(sim): State<Arc<Shared>>,
    Path((project, phone)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let reply = Reply::new(&headers);
    let req = Request {
        method: &method,
        uri: &uri,
        headers: &headers,
        body: &body,
    };
    if let Err(res) = admit(&sim, &reply, &req, &project).await {
        return res;
    }
    let index = match seeded_index(&project, &phone, sim.cfg.phones_per_project) {
        Ok(i) => i,
        Err((code, msg)) => return reply.error(StatusCode::NOT_FOUND, code, msg),
    };
    let state = sim.phone_state(&project, &phone).map_or(2, |s| s.status());
    let body = PhoneDetail {
        request_id: reply.request_id,
        phone_name: format!("sim-phone-{index}"),
        phone_id: phone,
        status: state,
    };
    reply.json(StatusCode::OK, &body)
}

/// Counts a job query in flight until dropped.
struct JobQueryInFlight<'a>(&'a crate::stats::Counters);

impl<'a> JobQueryInFlight<'a> {
    fn enter(stats: &'a crate::stats::Counters) -> Self {
        use std::sync::atomic::Ordering::Relaxed;
        let now = stats.job_queries_in_flight.fetch_add(1, Relaxed) + 1;
        stats.max_job_queries_in_flight.fetch_max(now, Relaxed);
        Self(stats)
    }
}

impl Drop for JobQueryInFlight<'_> {
    fn drop(&mut self) {
        self.0
            .job_queries_in_flight
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_params_are_checked() {
        let p = list_params(Some("request_ids=a,b,,a&offset=3&limit=7")).unwrap();
        assert_eq!(
            (p.request_ids, p.offset, p.limit),
            (vec!["a".into(), "b".into()], 3, 7)
        );
        let p = list_params(Some("request_ids=a%2Cb")).unwrap();
        assert_eq!((p.request_ids.len(), p.offset, p.limit), (2, 0, 100));
        let many = (0..21).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        for bad in [
            None,
            Some("offset=1"),
            Some("request_ids="),
            Some("request_ids=a&limit=0"),
            Some("request_ids=a&limit=101"),
            Some("request_ids=a&offset=-1"),
            Some(&*format!("request_ids={many}")),
        ] {
            assert!(list_params(bad).is_err(), "{bad:?}");
        }
        let twenty = (0..20).map(|i| i.to_string()).collect::<Vec<_>>().join(",");
        assert!(list_params(Some(&format!("request_ids={twenty}"))).is_ok());
    }
}
