//! `GET /v1/cloud-phone/jobs/{job_id}` and
//! `GET /v1/{project_id}/cloud-phone/jobs/{job_id}`: CPH's job query for the
//! caller's project, answered as CPH answered it.

use std::sync::Arc;

use axum::Extension;
use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use super::extract::{Authenticated, Path, TenantContext};
use crate::domain::{ApiError, Code, JobId, RequestId};
use crate::http::error::ErrorJson;
use crate::http::state::AppState;
use crate::upstream::cph::CallOutcome;
use crate::upstream::credentials::AuthError;

/// The answers of both job-query routes (for the API document).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum JobAnswers {
    /// CPH's job, as CPH answered: {request_id, job_id, phone_id, begin_time, end_time, status (1 running, 2 success, -1 failed), error_code, error_msg}
    #[response(status = 200)]
    Job(serde_json::Map<String, serde_json::Value>),
    /// CPHGW.0002 malformed job id
    #[response(status = 400)]
    BadRequest(ErrorJson<'static>),
    /// CPHGW.0101 invalid JWT
    #[response(status = 401)]
    Unauthorized(ErrorJson<'static>),
    /// CPHGW.0102 tenant not mapped or project not the tenant's
    #[response(status = 403)]
    Forbidden(ErrorJson<'static>),
    /// CPH's answer for an unknown job, passed through
    #[response(status = 404)]
    NotFound(serde_json::Map<String, serde_json::Value>),
    /// CPHGW.0201 tenant rate limit (job queries count like stops); Retry-After set
    #[response(status = 429)]
    RateLimited(ErrorJson<'static>),
    /// CPHGW.0301 upstream failed, or answered over the size limit or not with JSON
    #[response(status = 502)]
    UpstreamFailed(ErrorJson<'static>),
    /// CPHGW.0303 no IAM token; or CPHGW.0202 the gateway is at capacity (Retry-After set)
    #[response(status = 503)]
    IamUnavailable(ErrorJson<'static>),
    /// CPHGW.0302 upstream timed out
    #[response(status = 504)]
    UpstreamTimeout(ErrorJson<'static>),
}

/// CPH's job query in the tenant's default project.
#[utoipa::path(
    get,
    path = "/v1/cloud-phone/jobs/{job_id}",
    tag = "caller",
    params(("job_id" = String, Path, description = "A job_id from a stop answer")),
    responses(JobAnswers)
)]
pub async fn job_default(
    State(app): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    Authenticated(caller): Authenticated,
    Path(job_id): Path<String>,
) -> Result<Response, ApiError> {
    show(&app, &request_id, caller, None, &job_id).await
}

/// CPH's job query in one of the tenant's projects.
#[utoipa::path(
    get,
    path = "/v1/{project_id}/cloud-phone/jobs/{job_id}",
    tag = "caller",
    params(
        ("project_id" = String, Path, description = "One of the caller tenant's projects"),
        ("job_id" = String, Path, description = "A job_id from a stop answer"),
    ),
    responses(JobAnswers)
)]
pub async fn job_in_project(
    State(app): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    Authenticated(caller): Authenticated,
    Path((project_id, job_id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    show(&app, &request_id, caller, Some(&project_id), &job_id).await
}

async fn show(
    app: &AppState,
    request_id: &RequestId,
    caller: Arc<crate::auth::Caller>,
    path_project: Option<&str>,
    job_id: &str,
) -> Result<Response, ApiError> {
    let ctx = TenantContext::resolve(app, caller)?;
    let project = ctx.project(path_project)?;
    // Job queries count like stops: the tenant's rate, the gateway's
    // capacity, and (in `Upstream::job`) the project's upstream limit.
    app.check_rate(&ctx.tenant.name)?;
    let _request = app.admission.request(&ctx.tenant.name)?;
    let job_id = JobId::parse(job_id).ok_or_else(|| {
        ApiError::new(
            Code::InvalidId,
            "job_id must be 1-64 characters of A-Z a-z 0-9 _ -",
        )
    })?;
    let deadline = tokio::time::Instant::now() + app.config.limits.request_timeout;
    match app
        .upstream
        .job(&project, request_id.as_str(), &job_id, deadline)
        .await
    {
        Ok(Ok((status, body))) => {
            let mut resp = (status, body).into_response();
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            Ok(resp)
        }
        Ok(Err(CallOutcome::Timeout)) => Err(ApiError::new(
            Code::UpstreamTimeout,
            "CPH did not answer the job query in time",
        )),
        Ok(Err(other)) => Err(ApiError::new(
            Code::UpstreamFailed,
            format!("CPH job query failed: {}", other.label()),
        )),
        Err(AuthError::Iam(e)) => Err(ApiError::new(Code::IamUnavailable, e.to_string())),
        Err(AuthError::Deadline) => Err(ApiError::new(
            Code::UpstreamTimeout,
            "no IAM token in time for the job query",
        )),
    }
}
