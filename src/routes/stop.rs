//! `POST /v1/cloud-phone/phones/batch-stop` and
//! `POST /v1/{project_id}/cloud-phone/phones/batch-stop`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Extension;
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};

use crate::app::AppState;
use crate::domain::RequestId;
use crate::error::ErrorJson;
use crate::error::{ApiError, Code};
use crate::fanout::CallSummary;
use crate::plan::{Plan, StopRequest, StopResponse, merge};
use crate::routes::extract::{Authenticated, TenantContext};

/// The answers of both batch-stop routes (for the API document).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum StopAnswers {
    /// One entry per distinct phone id, in request order; per-phone errors inside
    #[response(status = 200)]
    Stopped(StopResponse<'static>),
    /// CPHGW.0001 bad body, CPHGW.0002 bad phone id
    #[response(status = 400)]
    BadRequest(ErrorJson<'static>),
    /// CPHGW.0101 invalid JWT
    #[response(status = 401)]
    Unauthorized(ErrorJson<'static>),
    /// CPHGW.0102 tenant not mapped or project not the tenant's
    #[response(status = 403)]
    Forbidden(ErrorJson<'static>),
    /// CPHGW.0003 too many ids or body too large
    #[response(status = 413)]
    TooLarge(ErrorJson<'static>),
    /// CPHGW.0201 tenant rate limit; Retry-After set
    #[response(status = 429)]
    RateLimited(ErrorJson<'static>),
    /// CPHGW.0301 no batch got a definite answer; every phone listed
    #[response(status = 502)]
    UpstreamFailed(StopResponse<'static>),
    /// CPHGW.0303 no IAM token; every phone listed
    #[response(status = 503)]
    IamUnavailable(StopResponse<'static>),
    /// CPHGW.0302 upstream timed out; every phone listed
    #[response(status = 504)]
    UpstreamTimeout(StopResponse<'static>),
}

/// Stops phones in the tenant's default project.
#[utoipa::path(
    post,
    path = "/v1/cloud-phone/phones/batch-stop",
    tag = "caller",
    request_body = StopRequest,
    params(("X-Request-Id" = Option<String>, Header, description = "Kept if 1-128 visible ASCII characters")),
    responses(StopAnswers)
)]
pub async fn stop_default(
    State(app): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    stop(&app, &request_id, caller, None, &headers, body).await
}

/// Stops phones in one of the tenant's projects (drop-in for the CPH URL).
#[utoipa::path(
    post,
    path = "/v1/{project_id}/cloud-phone/phones/batch-stop",
    tag = "caller",
    request_body = StopRequest,
    params(
        ("project_id" = String, Path, description = "One of the caller tenant's projects"),
        ("X-Request-Id" = Option<String>, Header, description = "Kept if 1-128 visible ASCII characters"),
    ),
    responses(StopAnswers)
)]
pub async fn stop_in_project(
    State(app): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    Authenticated(caller): Authenticated,
    Path(project_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    stop(&app, &request_id, caller, Some(&project_id), &headers, body).await
}

async fn stop(
    app: &AppState,
    request_id: &RequestId,
    caller: Arc<crate::auth::Caller>,
    path_project: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let ctx = TenantContext::resolve(app, caller)?;
    let project = ctx.project(path_project)?;
    app.check_rate(&ctx.tenant.name)?;
    let body = read_body(headers, body, app.config.limits.max_body_bytes).await?;
    let plan = Plan::parse(
        &body,
        app.config.limits.max_phone_ids,
        app.config.upstream.max_batch_size,
    )?;
    drop(body);
    let span = tracing::Span::current();
    span.record("ids", plan.ids().len());
    span.record("batches", plan.batch_count());

    let deadline = tokio::time::Instant::now() + app.config.limits.request_timeout;
    let calls = CallSummary::default();
    let outcomes = app
        .fanout
        .run(&project, &plan, request_id.as_str(), deadline, &calls)
        .await;
    span.record("upstream_calls", calls.calls.load(Ordering::Relaxed));
    span.record("upstream_failed", calls.failed.load(Ordering::Relaxed));
    span.record(
        "upstream_max_ms",
        calls.max_latency_us.load(Ordering::Relaxed) as f64 / 1000.0,
    );
    let merged = merge(&plan, &outcomes);
    for (outcome, n) in merged.outcome_counts() {
        span.record(outcome, n);
        if n > 0 {
            app.metrics.phones(outcome, n);
        }
    }
    let (status, error_code, error_msg) = match merged.failure {
        None => (StatusCode::OK, None, None),
        Some(code) => (
            code.status(),
            Some(code),
            Some(format!(
                "no batch got a definite answer from CPH for {} phones; each phone's entry says why",
                plan.ids().len()
            )),
        ),
    };
    let resp = StopResponse {
        request_id: request_id.as_str(),
        error_code,
        error_msg,
        jobs: merged.jobs,
    };
    Ok((status, Json(resp)).into_response())
}

/// Reads the body up to `limit` bytes; a longer one is `CPHGW.0003`.
pub async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
) -> Result<bytes::Bytes, ApiError> {
    let too_large = || ApiError::new(Code::TooLarge, format!("body over {limit} bytes"));
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    axum::body::to_bytes(body, limit).await.map_err(|e| {
        let mut source = std::error::Error::source(&e);
        let mut over = false;
        while let Some(s) = source {
            over |= s.is::<http_body_util::LengthLimitError>();
            source = s.source();
        }
        if over {
            too_large()
        } else {
            ApiError::new(Code::InvalidBody, format!("could not read the body: {e}"))
        }
    })
}
