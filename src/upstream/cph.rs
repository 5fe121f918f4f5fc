//! The CPH HTTP client: one pooled `reqwest::Client`, `batch_stop` and
//! `show_job`, and the mapping of upstream answers to outcomes the fan-out can
//! reason about (what is definite, what may be retried).

use std::time::{Duration, Instant};

use bytes::Bytes;
use reqwest::StatusCode;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use super::credentials::Answer;
use super::http::{describe, retry_after, status_label};
use super::iam::IamToken;
use crate::domain::{PhoneId, ProjectId, Region};
use crate::telemetry::Metrics;
use crate::tenants::Project;

/// One entry of CPH's `jobs` array, passed through as it came.
#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct UpstreamJob {
    pub phone_id: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_msg: Option<String>,
}

#[derive(Debug, Deserialize)]
struct BatchStopAnswer {
    #[serde(default)]
    request_id: Option<String>,
    jobs: Vec<UpstreamJob>,
}

/// One job of CPH's job list.
#[derive(Debug, Clone, Deserialize)]
pub struct ListedJob {
    pub job_id: String,
    #[serde(default)]
    pub phone_id: Option<String>,
    /// 1 running, 2 success, -1 failed.
    pub status: i64,
    #[serde(default)]
    pub error_code: Option<String>,
    #[serde(default)]
    pub error_msg: Option<String>,
}

#[derive(Debug, Deserialize)]
struct JobListAnswer {
    #[serde(default)]
    jobs: Vec<ListedJob>,
}

#[derive(Debug, Default, Deserialize)]
struct ErrorAnswer {
    #[serde(default)]
    error_code: Option<String>,
    #[serde(default)]
    error_msg: Option<String>,
}

/// What one upstream call came to.
#[derive(Debug)]
pub enum CallOutcome {
    /// 200 with a readable body.
    Jobs {
        jobs: Vec<UpstreamJob>,
        request_id: Option<String>,
    },
    /// A non-2xx answer, with the upstream's error if it sent one.
    Rejected {
        status: StatusCode,
        error_code: Option<String>,
        error_msg: Option<String>,
        retry_after: Option<Duration>,
    },
    /// The connection could not be made: the request was not sent.
    NotSent(String),
    /// Sent, but no answer within the timeout: the outcome is unknown.
    Timeout,
    /// Sent, then the connection broke or the answer was unreadable.
    Broken(String),
}

impl Answer for CallOutcome {
    fn is_unauthorized(&self) -> bool {
        matches!(self, CallOutcome::Rejected { status, .. } if *status == StatusCode::UNAUTHORIZED)
    }
}

impl Answer for Result<(StatusCode, Bytes), CallOutcome> {
    fn is_unauthorized(&self) -> bool {
        match self {
            Ok((status, _)) => *status == StatusCode::UNAUTHORIZED,
            Err(o) => o.is_unauthorized(),
        }
    }
}

impl Answer for Result<Vec<ListedJob>, CallOutcome> {
    fn is_unauthorized(&self) -> bool {
        self.as_ref().is_err_and(CallOutcome::is_unauthorized)
    }
}

impl CallOutcome {
    /// A label for metrics and logs: the status, or the failure kind.
    pub fn label(&self) -> &'static str {
        match self {
            CallOutcome::Jobs { .. } => "200",
            CallOutcome::Rejected { status, .. } => status_label(*status),
            CallOutcome::NotSent(_) => "connect_error",
            CallOutcome::Timeout => "timeout",
            CallOutcome::Broken(_) => "broken",
        }
    }
}

#[derive(Serialize)]
struct StopBody<'a> {
    phone_ids: &'a [PhoneId],
}

/// The CPH client. Cheap to share; connections are pooled per host.
pub struct CphClient {
    http: reqwest::Client,
    endpoint: String,
    timeout: Duration,
    metrics: std::sync::Arc<Metrics>,
    /// Parsed batch-stop URL per (region, project): parsing a URL on every
    /// call costs more than the rest of building the request.
    stop_urls: std::sync::Mutex<std::collections::HashMap<(Region, ProjectId), reqwest::Url>>,
}

impl CphClient {
    pub fn new(
        http: reqwest::Client,
        endpoint: String,
        timeout: Duration,
        metrics: std::sync::Arc<Metrics>,
    ) -> Self {
        Self {
            http,
            endpoint,
            timeout,
            metrics,
            stop_urls: Default::default(),
        }
    }

    /// The project's batch-stop URL, parsed once.
    fn stop_url(&self, project: &Project) -> Result<reqwest::Url, String> {
        let key = (project.region.clone(), project.id.clone());
        let mut urls = self.stop_urls.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(url) = urls.get(&key) {
            return Ok(url.clone());
        }
        let url = reqwest::Url::parse(&format!(
            "{}/cloud-phone/phones/batch-stop",
            self.base(project)
        ))
        .map_err(|e| format!("bad CPH URL: {e}"))?;
        urls.insert(key, url.clone());
        Ok(url)
    }

    fn base(&self, project: &Project) -> String {
        format!("{}/v1/{}", project.region.fill(&self.endpoint), project.id)
    }

    /// A call to CPH with the project's credential and the request's id.
    fn request(
        &self,
        method: reqwest::Method,
        url: impl reqwest::IntoUrl,
        token: &IamToken,
        request_id: &str,
    ) -> reqwest::RequestBuilder {
        self.http
            .request(method, url)
            .timeout(self.timeout)
            .header("x-auth-token", token.value.expose_secret())
            .header("x-request-id", request_id)
    }

    /// `POST /v1/{project_id}/cloud-phone/phones/batch-stop` for one batch.
    pub async fn batch_stop(
        &self,
        project: &Project,
        token: &IamToken,
        request_id: &str,
        ids: &[PhoneId],
    ) -> CallOutcome {
        let body = match serde_json::to_vec(&StopBody { phone_ids: ids }) {
            Ok(b) => b,
            Err(e) => return CallOutcome::NotSent(e.to_string()),
        };
        let url = match self.stop_url(project) {
            Ok(u) => u,
            Err(e) => return CallOutcome::NotSent(e),
        };
        let started = Instant::now();
        let sent = self
            .request(reqwest::Method::POST, url, token, request_id)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await;
        let outcome = match sent {
            Err(e) => transport_outcome(&e),
            Ok(resp) => {
                let status = resp.status();
                let headers_retry_after = retry_after(resp.headers());
                match resp.bytes().await {
                    Err(e) => transport_outcome(&e),
                    Ok(bytes) if status == StatusCode::OK => {
                        match serde_json::from_slice::<BatchStopAnswer>(&bytes) {
                            Ok(a) => CallOutcome::Jobs {
                                jobs: a.jobs,
                                request_id: a.request_id,
                            },
                            Err(e) => {
                                CallOutcome::Broken(format!("unreadable batch-stop answer: {e}"))
                            }
                        }
                    }
                    Ok(bytes) => {
                        let err: ErrorAnswer = serde_json::from_slice(&bytes).unwrap_or_default();
                        CallOutcome::Rejected {
                            status,
                            error_code: err.error_code,
                            error_msg: err.error_msg,
                            retry_after: headers_retry_after,
                        }
                    }
                }
            }
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
        token: &IamToken,
        request_id: &str,
        job_id: &str,
    ) -> Result<(StatusCode, Bytes), CallOutcome> {
        let url = format!("{}/cloud-phone/jobs/{job_id}", self.base(project));
        let started = Instant::now();
        let result: Result<(StatusCode, Bytes), CallOutcome> = async {
            let resp = self
                .request(reqwest::Method::GET, url, token, request_id)
                .send()
                .await
                .map_err(|e| transport_outcome(&e))?;
            let status = resp.status();
            let body = resp.bytes().await.map_err(|e| transport_outcome(&e))?;
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

    /// `GET /v1/{project_id}/cloud-phone/jobs?request_ids=..&offset=..&limit=..`:
    /// one page of the jobs created by up to 20 batch-stop calls.
    pub async fn list_jobs(
        &self,
        project: &Project,
        token: &IamToken,
        request_id: &str,
        request_ids: &[&str],
        offset: usize,
        limit: usize,
    ) -> Result<Vec<ListedJob>, CallOutcome> {
        let url = format!(
            "{}/cloud-phone/jobs?request_ids={}&offset={offset}&limit={limit}",
            self.base(project),
            request_ids.join(",")
        );
        let started = Instant::now();
        let result: Result<Vec<ListedJob>, CallOutcome> = async {
            let resp = self
                .request(reqwest::Method::GET, url, token, request_id)
                .send()
                .await
                .map_err(|e| transport_outcome(&e))?;
            let status = resp.status();
            let headers_retry_after = retry_after(resp.headers());
            let body = resp.bytes().await.map_err(|e| transport_outcome(&e))?;
            if !status.is_success() {
                let err: ErrorAnswer = serde_json::from_slice(&body).unwrap_or_default();
                return Err(CallOutcome::Rejected {
                    status,
                    error_code: err.error_code,
                    error_msg: err.error_msg,
                    retry_after: headers_retry_after,
                });
            }
            serde_json::from_slice::<JobListAnswer>(&body)
                .map(|a| a.jobs)
                .map_err(|e| CallOutcome::Broken(format!("unreadable job list: {e}")))
        }
        .await;
        let label = match &result {
            Ok(_) => "200",
            Err(o) => o.label(),
        };
        self.metrics.upstream(label, started.elapsed());
        result
    }
}

fn transport_outcome(e: &reqwest::Error) -> CallOutcome {
    if e.is_connect() {
        CallOutcome::NotSent(describe(e))
    } else if e.is_timeout() {
        CallOutcome::Timeout
    } else {
        CallOutcome::Broken(describe(e))
    }
}
