//! The CPH HTTP client: one pooled `reqwest::Client`, one request builder
//! (which applies each call's [`Authorization`]), `batch_stop`, `show_job`
//! and `list_jobs`, and the mapping of upstream answers to outcomes the fan-out can
//! reason about (what is definite, what may be retried).

mod send;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;

pub use super::answer::{
    CallOutcome, ListedJob, MAX_ERROR_MSG_CHARS, UpstreamJob, cut_error_msg, parse_job_list,
};
use super::answer::{
    JOB_ANSWER_LIMIT, STOP_ANSWER_OVERHEAD, STOP_ANSWER_PER_PHONE, stop_outcome, transport_outcome,
};
use super::credentials::Authorization;
use super::direct::{DirectClient, Target};
use super::http::{BodyError, read_limited, status_label};
use crate::domain::{PhoneId, ProjectId, Region};
use crate::telemetry::Metrics;
use crate::tenants::Project;

/// The content type of every CPH call with a body.
const JSON: &str = "application/json";

/// The batch-stop body, `{"phone_ids":["…",…]}`, written straight: a
/// phone id's characters (`[A-Za-z0-9_-]`) never need escaping, so the
/// bytes are serde_json's without its per-byte escape check.
pub fn stop_body(ids: &[PhoneId]) -> Vec<u8> {
    const HEAD: &[u8] = b"{\"phone_ids\":[";
    let quoted: usize = ids.iter().map(|id| id.len() + 2).sum();
    let len = HEAD.len() + quoted + ids.len().saturating_sub(1) + 2;
    let mut body = Vec::with_capacity(len);
    body.extend_from_slice(HEAD);
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.push(b'"');
        body.extend_from_slice(id.as_bytes());
        body.push(b'"');
    }
    body.extend_from_slice(b"]}");
    body
}

/// The CPH client. Cheap to share; connections are pooled per host.
pub struct CphClient {
    http: reqwest::Client,
    /// The batch-stop's own client, when no proxy may apply.
    direct: Option<DirectClient>,
    endpoint: String,
    timeout: Duration,
    /// `upstream.max_response_bytes`.
    max_response_bytes: usize,
    metrics: std::sync::Arc<Metrics>,
    /// The batch-stop call per (region, project), prepared once: parsing
    /// a URL on every call costs more than the rest of building it.
    stop_targets: std::sync::Mutex<HashMap<(Region, ProjectId), Arc<StopTarget>>>,
}

/// A project's batch-stop URL and, on the direct client, its target.
struct StopTarget {
    url: reqwest::Url,
    direct: Option<Target>,
}

impl CphClient {
    pub fn new(
        http: reqwest::Client,
        direct: Option<DirectClient>,
        endpoint: String,
        timeout: Duration,
        max_response_bytes: usize,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Self {
            http,
            direct,
            endpoint,
            timeout,
            max_response_bytes,
            metrics,
            stop_targets: Default::default(),
        }
    }

    /// The project's batch-stop call, prepared once.
    fn stop_target(&self, project: &Project) -> Result<Arc<StopTarget>, String> {
        let key = (project.region.clone(), project.id.clone());
        let mut targets = self.stop_targets.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(t) = targets.get(&key) {
            return Ok(t.clone());
        }
        let url = reqwest::Url::parse(&format!(
            "{}/cloud-phone/phones/batch-stop",
            self.base(project)
        ))
        .map_err(|e| format!("bad CPH URL: {e}"))?;
        let direct = match &self.direct {
            Some(client) => Some(client.target(&url)?),
            None => None,
        };
        let target = Arc::new(StopTarget { url, direct });
        targets.insert(key, target.clone());
        Ok(target)
    }

    fn base(&self, project: &Project) -> String {
        format!("{}/v1/{}", project.region.fill(&self.endpoint), project.id)
    }

    /// What every call to CPH carries besides its body, on either client:
    /// the project's credential (an IAM token, or an AK/SK signature over
    /// the method, host, path, query, content type, project id, security
    /// token and body) and the request's id. A signed call is sent with the
    /// canonical query it was signed with: `url`'s query is replaced by it.
    fn call_headers(
        method: &reqwest::Method,
        url: &mut reqwest::Url,
        project: &Project,
        auth: &Authorization,
        request_id: &str,
        json_body: Option<&[u8]>,
    ) -> Result<reqwest::header::HeaderMap, String> {
        let content = json_body.map(|body| (JSON, body));
        let mut headers = auth.headers(method, url, project.id.as_str(), content)?;
        let id = reqwest::header::HeaderValue::from_str(request_id)
            .map_err(|_| "the request id is not a header value".to_owned())?;
        headers.insert("x-request-id", id);
        Ok(headers)
    }

    /// A call to CPH on the pooled client: [`Self::call_headers`], the
    /// timeout, and the JSON body if there is one.
    fn request(
        &self,
        method: reqwest::Method,
        mut url: reqwest::Url,
        project: &Project,
        auth: &Authorization,
        request_id: &str,
        json_body: Option<Vec<u8>>,
    ) -> Result<reqwest::RequestBuilder, String> {
        let headers = Self::call_headers(
            &method,
            &mut url,
            project,
            auth,
            request_id,
            json_body.as_deref(),
        )?;
        let mut builder = self
            .http
            .request(method, url)
            .timeout(self.timeout)
            .headers(headers);
        if let Some(body) = json_body {
            builder = builder
                .header(reqwest::header::CONTENT_TYPE, JSON)
                .body(body);
        }
        Ok(builder)
    }

    /// `POST /v1/{project_id}/cloud-phone/phones/batch-stop` for one batch.
    pub async fn batch_stop(
        &self,
        project: &Project,
        auth: &Authorization,
        request_id: &str,
        ids: &[PhoneId],
    ) -> CallOutcome {
        let body = stop_body(ids);
        let target = match self.stop_target(project) {
            Ok(t) => t,
            Err(e) => return CallOutcome::NotSent(e),
        };
        let call = send::Call {
            url: &target.url,
            project,
            auth,
            request_id,
            ids,
        };
        let started = Instant::now();
        let outcome = match (&self.direct, &target.direct) {
            (Some(client), Some(direct)) => self.stop_direct(client, direct, call, body).await,
            // Boxed: only calls through a proxy take reqwest's path, and its
            // future would otherwise add to every call's.
            _ => Box::pin(self.stop_pooled(call, body)).await,
        };
        let elapsed = started.elapsed();
        self.metrics.upstream(outcome.label(), elapsed);
        let upstream_request_id = match &outcome {
            CallOutcome::Jobs { request_id, .. } => request_id.as_deref(),
            _ => None,
        };
        let latency_ms = elapsed.as_secs_f64() * 1000.0;
        let span = tracing::Span::current();
        span.record("status", outcome.label());
        span.record("latency_ms", latency_ms);
        if let Some(id) = upstream_request_id {
            span.record("upstream_request_id", id);
        }
        // Successes are routine (the request's own line sums them up);
        // anything else is worth a line at the default level.
        if matches!(outcome, CallOutcome::Jobs { .. }) {
            tracing::debug!(
                project = %project.id,
                ids = ids.len(),
                status = outcome.label(),
                latency_ms,
                upstream_request_id,
                "upstream batch-stop"
            );
        } else {
            tracing::warn!(
                project = %project.id,
                ids = ids.len(),
                status = outcome.label(),
                latency_ms,
                "upstream batch-stop"
            );
        }
        outcome
    }

    /// `GET /v1/{project_id}/cloud-phone/jobs/{job_id}`: status and body as
    /// CPH answered, or a transport outcome.
    pub async fn show_job(
        &self,
        project: &Project,
        auth: &Authorization,
        request_id: &str,
        job_id: &str,
    ) -> Result<(StatusCode, Bytes), CallOutcome> {
        let url = format!("{}/cloud-phone/jobs/{job_id}", self.base(project));
        let cap = self.max_response_bytes.min(JOB_ANSWER_LIMIT);
        self.get(project, auth, request_id, &url, cap).await
    }

    /// `GET /v1/{project_id}/cloud-phone/jobs?request_ids=..&offset=O&limit=L`
    /// (CPH's job list, at most 20 request ids): status and body as CPH
    /// answered, or a transport outcome.
    pub async fn list_jobs(
        &self,
        project: &Project,
        auth: &Authorization,
        request_id: &str,
        request_ids: &[&str],
        offset: u32,
        limit: u32,
    ) -> Result<(StatusCode, Bytes), CallOutcome> {
        let url = format!(
            "{}/cloud-phone/jobs?request_ids={}&offset={offset}&limit={limit}",
            self.base(project),
            request_ids.join(",")
        );
        self.get(
            project,
            auth,
            request_id,
            &url,
            self.stop_answer_limit(limit as usize),
        )
        .await
    }

    /// A GET of `url`, counted in the upstream metrics; its answer read
    /// within `cap` bytes and passed on only if it is a JSON object.
    async fn get(
        &self,
        project: &Project,
        auth: &Authorization,
        request_id: &str,
        url: &str,
        cap: usize,
    ) -> Result<(StatusCode, Bytes), CallOutcome> {
        let started = Instant::now();
        let result: Result<(StatusCode, Bytes), CallOutcome> = async {
            let url = reqwest::Url::parse(url)
                .map_err(|e| CallOutcome::NotSent(format!("bad CPH URL: {e}")))?;
            let resp = self
                .request(reqwest::Method::GET, url, project, auth, request_id, None)
                .map_err(CallOutcome::NotSent)?
                .send()
                .await
                .map_err(|e| transport_outcome(&e))?;
            let status = resp.status();
            let body = read_limited(resp, cap).await.map_err(|e| match e {
                BodyError::Transport(e) => transport_outcome(&e),
                e @ BodyError::TooLarge { .. } => CallOutcome::Broken(e.to_string()),
            })?;
            // Only JSON is relayed (as application/json).
            if serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(&body).is_err()
            {
                return Err(CallOutcome::Broken(format!(
                    "CPH answered {status} with a body that is not a JSON object"
                )));
            }
            Ok((status, body))
        }
        .await;
        let label = match &result {
            Ok((s, _)) if s.is_success() => "200",
            Ok((s, _)) => status_label(*s),
            Err(o) => o.label(),
        };
        self.metrics.upstream(label, started.elapsed());
        result
    }
}

impl CphClient {
    /// The largest batch-stop answer read for `n` phones: generous for
    /// the phones, never over `upstream.max_response_bytes`.
    pub fn stop_answer_limit(&self, n: usize) -> usize {
        STOP_ANSWER_PER_PHONE
            .saturating_mul(n)
            .saturating_add(STOP_ANSWER_OVERHEAD)
            .min(self.max_response_bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Serialize;

    #[test]
    fn the_stop_body_is_what_serde_json_writes() {
        #[derive(Serialize)]
        struct StopBody<'a> {
            phone_ids: &'a [PhoneId],
        }
        for n in [0, 1, 2, 100] {
            let ids: Vec<PhoneId> = (0..n)
                .map(|i| PhoneId::parse(&format!("0a1b2c3d-{i:024x}_Z")).unwrap())
                .collect();
            let body = stop_body(&ids);
            assert_eq!(
                body,
                serde_json::to_vec(&StopBody { phone_ids: &ids }).unwrap()
            );
            assert_eq!(body.len(), body.capacity(), "sized exactly");
        }
    }
}
