//! `GET /v1/cloud-phone/stops/{request_id}`: an earlier stop of the caller's
//! tenant, with its jobs' states from CPH's job list (`Prefer: wait=N`
//! waits for them to end).

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};

use super::extract::{Authenticated, Path, TenantContext};
use super::stop::prefer_wait;
use crate::domain::{ApiError, Code};
use crate::http::error::ErrorJson;
use crate::http::state::AppState;

/// The answers of the stop-record query (for the API document).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum RecordAnswers {
    /// {request_id, project_id, created_at, caller, done, summary{total, running, succeeded, failed, rejected, unknown}, jobs[{phone_id, job_id, status} | {phone_id, error_code, error_msg}]}
    #[response(status = 200)]
    Record(serde_json::Map<String, serde_json::Value>),
    /// CPHGW.0101 invalid JWT
    #[response(status = 401)]
    Unauthorized(ErrorJson<'static>),
    /// CPHGW.0102 tenant not mapped
    #[response(status = 403)]
    Forbidden(ErrorJson<'static>),
    /// CPHGW.0009 no such stop record for this tenant (or no longer kept)
    #[response(status = 404)]
    NotFound(ErrorJson<'static>),
    /// CPHGW.0201 tenant rate limit; Retry-After set
    #[response(status = 429)]
    RateLimited(ErrorJson<'static>),
    /// CPHGW.0304 the shared store is unreachable
    #[response(status = 503)]
    StoreUnavailable(ErrorJson<'static>),
}

/// An earlier stop of the caller's tenant, followed to its end.
#[utoipa::path(
    get,
    path = "/v1/cloud-phone/stops/{request_id}",
    tag = "caller",
    params(
        ("request_id" = String, Path, description = "The request id of the stop (its X-Request-Id)"),
        ("Prefer" = Option<String>, Header, description = "wait=N: answer when every job is final or after N seconds (capped by tracking.max_wait_s)"),
    ),
    responses(RecordAnswers)
)]
pub async fn stop_record(
    State(app): State<Arc<AppState>>,
    Authenticated(caller): Authenticated,
    Path(request_id): Path<String>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    let ctx = TenantContext::resolve(&app, caller)?;
    app.check_rate(&ctx.tenant.name)?;
    let not_found = || {
        ApiError::new(
            Code::NoStopRecord,
            "no stop with this request id for this tenant (or it is no longer kept)",
        )
    };
    let record = app
        .stops
        .record(&ctx.tenant.name, &request_id)
        .await?
        .ok_or_else(not_found)?;
    let wait = prefer_wait(&headers).map(|s| s.min(app.config.tracking.max_wait.as_secs()));
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(wait.unwrap_or(0));
    // Job states come from the project the stop ran in, while it is still
    // one of the tenant's.
    let body = match ctx.tenant.project(&record.project_id) {
        Some(project) => app.stops.follow(project, &record, until).await,
        None => crate::stop::record::view(&record, None),
    };
    let mut resp = Json(body).into_response();
    if let Some(secs) = wait
        && let Ok(v) = HeaderValue::from_str(&format!("wait={secs}"))
    {
        resp.headers_mut().insert("preference-applied", v);
    }
    Ok(resp)
}
