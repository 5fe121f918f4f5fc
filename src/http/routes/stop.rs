//! `POST /v1/cloud-phone/phones/batch-stop` and
//! `POST /v1/{project_id}/cloud-phone/phones/batch-stop`.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, header};
use axum::response::{IntoResponse, Response};

use super::extract::{Authenticated, TenantContext, read_body};
use crate::domain::{ApiError, RequestId};
use crate::http::error::ErrorJson;
use crate::http::state::AppState;
use crate::stop::merge::StopResponse;
use crate::stop::plan::{Plan, StopRequest};

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
    if tracing::enabled!(tracing::Level::DEBUG) {
        let ids: Vec<&str> = plan.ids().iter().map(|id| &**id).collect();
        tracing::debug!(phone_ids = %ids.join(","), "phone ids of the request");
    }
    let deadline = tokio::time::Instant::now() + app.config.limits.request_timeout;
    let answer = app.stops.run(&project, &plan, request_id, deadline).await;
    Ok((
        answer.status,
        [(header::CONTENT_TYPE, "application/json")],
        answer.body,
    )
        .into_response())
}
