//! `POST /v1/cloud-phone/phones/batch-stop` and
//! `POST /v1/{project_id}/cloud-phone/phones/batch-stop`.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::Extension;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use tracing::Instrument;

use super::extract::{Authenticated, Path, TenantContext, discard_body, read_body};
use crate::domain::{ApiError, RequestId};
use crate::http::error::ErrorJson;
use crate::http::middleware::{REQUEST_ID_HEADER, RequestStarted};
use crate::http::state::AppState;
use crate::stop::idempotency::IdempotencyKey;
use crate::stop::plan::{Plan, StopRequest};
use crate::stop::response::StopResponse;
use crate::stop::wait::{preferred_wait, waited_body};
use crate::stop::{StopAnswer, StopCall};
use crate::telemetry::request_log::{self, RequestLog};
use crate::tenants::Project;

/// The answers of both batch-stop routes (for the API document).
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)]
enum StopAnswers {
    /// One entry per distinct phone id, in request order; per-phone errors inside
    #[response(status = 200)]
    Stopped(StopResponse<'static>),
    /// CPHGW.0001 bad body (or one not received within server.body_read_timeout_ms), CPHGW.0002 bad phone id, CPHGW.0006 malformed Idempotency-Key
    #[response(status = 400)]
    BadRequest(ErrorJson<'static>),
    /// CPHGW.0101 invalid JWT
    #[response(status = 401)]
    Unauthorized(ErrorJson<'static>),
    /// CPHGW.0102 tenant not mapped or project not the tenant's
    #[response(status = 403)]
    Forbidden(ErrorJson<'static>),
    /// CPHGW.0007 a request with this Idempotency-Key is still running; Retry-After set
    #[response(status = 409)]
    KeyInFlight(ErrorJson<'static>),
    /// CPHGW.0003 too many ids or body too large
    #[response(status = 413)]
    TooLarge(ErrorJson<'static>),
    /// CPHGW.0008 this Idempotency-Key was used for a different request
    #[response(status = 422)]
    KeyReused(ErrorJson<'static>),
    /// CPHGW.0201 tenant rate limit; Retry-After set
    #[response(status = 429)]
    RateLimited(ErrorJson<'static>),
    /// CPHGW.0301 no batch got a definite answer; every phone listed
    #[response(status = 502)]
    UpstreamFailed(StopResponse<'static>),
    /// CPHGW.0303 no IAM token (every phone listed); CPHGW.0304 the shared store is unreachable and the request carries an Idempotency-Key (nothing sent); CPHGW.0202 the gateway is at capacity (a plain error body, Retry-After set, nothing sent)
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
    params(
        ("X-Request-Id" = Option<String>, Header, description = "Kept if 1-128 visible ASCII characters; the id of the stop record"),
        ("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters: a retry with the same key and request is answered as the first (Idempotent-Replayed: true) and sends nothing"),
        ("Prefer" = Option<String>, Header, description = "wait=N: answer when every job is final or after N seconds (capped by tracking.max_wait_s); Preference-Applied says the wait applied"),
    ),
    responses(StopAnswers)
)]
pub async fn stop_default(
    State(app): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    Extension(started): Extension<RequestStarted>,
    Authenticated(caller): Authenticated,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let call = Call {
        route: "stop",
        request_id,
        started,
        path_project: None,
    };
    at_most::<4096, _>(stop(&app, call, caller, &headers, body)).await
}

/// Stops phones in one of the tenant's projects (drop-in for the CPH URL).
#[utoipa::path(
    post,
    path = "/v1/{project_id}/cloud-phone/phones/batch-stop",
    tag = "caller",
    request_body = StopRequest,
    params(
        ("project_id" = String, Path, description = "One of the caller tenant's projects"),
        ("X-Request-Id" = Option<String>, Header, description = "Kept if 1-128 visible ASCII characters; the id of the stop record"),
        ("Idempotency-Key" = Option<String>, Header, description = "1-255 visible ASCII characters: a retry with the same key and request is answered as the first (Idempotent-Replayed: true) and sends nothing"),
        ("Prefer" = Option<String>, Header, description = "wait=N: answer when every job is final or after N seconds (capped by tracking.max_wait_s)"),
    ),
    responses(StopAnswers)
)]
pub async fn stop_in_project(
    State(app): State<Arc<AppState>>,
    Extension(request_id): Extension<RequestId>,
    Extension(started): Extension<RequestStarted>,
    Authenticated(caller): Authenticated,
    Path(project_id): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let call = Call {
        route: "stop_project",
        request_id,
        started,
        path_project: Some(project_id),
    };
    at_most::<4096, _>(stop(&app, call, caller, &headers, body)).await
}

/// What a stop request is, besides its body.
struct Call {
    /// The route's metric name (as in `router.rs`).
    route: &'static str,
    request_id: RequestId,
    started: RequestStarted,
    path_project: Option<String>,
}

async fn stop(
    app: &Arc<AppState>,
    call: Call,
    caller: Arc<crate::auth::Caller>,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let wait = prefer_wait(headers);
    let limits = &app.config.limits;
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let admitted = (|| {
        let ctx = TenantContext::resolve(app, caller)?;
        let project = ctx.project(call.path_project.as_deref())?;
        app.check_rate(&ctx.tenant.name)?;
        let key =
            IdempotencyKey::from_header(headers.get("idempotency-key").map(|v| v.as_bytes()))?;
        let request = app.admission.request(&ctx.tenant.name)?;
        app.admission
            .check_declared(&ctx.tenant.name, declared, limits.max_phone_ids)?;
        Ok::<_, ApiError>((ctx, project, key, request))
    })();
    let (ctx, project, key, request) = match admitted {
        Ok(admitted) => admitted,
        Err(e) => {
            // Refused before the body was needed: it is read and dropped
            // while the answer goes out (unless it is over the limit
            // anyway), so that the client gets the answer, not a reset.
            if declared.is_none_or(|n| n <= limits.max_body_bytes as u64) {
                discard_body(app, body, limits.max_body_bytes);
            }
            return Err(e);
        }
    };
    let body = read_body(app, headers, body, limits.max_body_bytes).await?;
    let plan = Plan::parse(
        &body,
        limits.max_phone_ids,
        app.config.upstream.max_batch_size,
    )?;
    drop(body);
    if tracing::enabled!(tracing::Level::DEBUG) {
        let ids: Vec<&str> = plan.ids().iter().map(|id| &**id).collect();
        tracing::debug!(phone_ids = %ids.join(","), "phone ids of the request");
    }
    let ids = app.admission.ids(&ctx.tenant.name, plan.ids().len())?;
    let deadline = tokio::time::Instant::now() + limits.request_timeout;
    let Call {
        route,
        request_id,
        started,
        ..
    } = call;
    let stop = StopCall {
        tenant: ctx.tenant.name.clone(),
        caller: ctx.caller.subject.clone(),
        project: project.clone(),
        plan,
        request_id,
        key,
        deadline,
    };
    // The stop runs here, in the connection's task; if the caller goes
    // away first, it goes on in a task of its own (not cancelled), and is
    // then logged and counted there.
    let tenant = ctx.tenant.name.clone();
    let task_app = app.clone();
    // Built in a statement of its own: the stop's future (several
    // kilobytes) then goes straight into its box and takes no room in this
    // function's own future.
    let runner = app.clone();
    let detached = DetachOnDrop::new(
        at_most::<6144, _>(async move { runner.stops.execute(stop).await }),
        move |answer: Result<StopAnswer, ApiError>, log| {
            let status = match &answer {
                Ok(a) => a.status,
                Err(e) => e.code.status(),
            }
            .as_u16();
            let elapsed = started.0.elapsed();
            task_app
                .metrics
                .request(route, status, tenant.as_str(), elapsed);
            let fields = log.map(|l| l.take()).unwrap_or_default();
            request_log::write_line(status, elapsed.as_secs_f64() * 1000.0, &fields, true);
            drop((ids, request));
        },
    );
    let answer = detached.await?;
    Ok(answered(app, &project, answer, wait).await)
}

/// `fut`, checked when compiled to take at most `MAX` bytes. A future is
/// copied whole wherever it moves (into its box, into the future that
/// awaits it), so a large one costs every request: rare paths inside a stop
/// (following jobs, connecting, an IAM fetch, a split) are boxed where
/// they run instead. The bounds leave room for the compiler's layout.
fn at_most<const MAX: usize, F: Future>(fut: F) -> F {
    const {
        assert!(
            std::mem::size_of::<F>() <= MAX,
            "a stop's future grew past its bound: box the rare path that grew it"
        );
    }
    fut
}

/// A future polled where it is awaited that, if dropped before it ends
/// (the caller went away), goes on in a task of its own, in the span and
/// with the request log it was made in, and hands its output and that log
/// to `gone`. Cheaper than a task per stop: no hand-off between tasks and
/// no wake-up for the common case.
struct DetachOnDrop<F, G>
where
    F: Future + Send + 'static,
    G: FnOnce(F::Output, Option<Arc<RequestLog>>) + Send + 'static,
{
    fut: Option<Pin<Box<F>>>,
    gone: Option<G>,
    span: tracing::Span,
    log: Option<Arc<RequestLog>>,
}

impl<F, G> DetachOnDrop<F, G>
where
    F: Future + Send + 'static,
    G: FnOnce(F::Output, Option<Arc<RequestLog>>) + Send + 'static,
{
    fn new(fut: F, gone: G) -> Self {
        Self {
            fut: Some(Box::pin(fut)),
            gone: Some(gone),
            span: tracing::Span::current(),
            log: request_log::current(),
        }
    }
}

impl<F, G> Future for DetachOnDrop<F, G>
where
    F: Future + Send + 'static,
    G: FnOnce(F::Output, Option<Arc<RequestLog>>) + Send + 'static + Unpin,
{
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let Some(fut) = self.fut.as_mut() else {
            return Poll::Pending;
        };
        let out = std::task::ready!(fut.as_mut().poll(cx));
        self.fut = None;
        Poll::Ready(out)
    }
}

impl<F, G> Drop for DetachOnDrop<F, G>
where
    F: Future + Send + 'static,
    G: FnOnce(F::Output, Option<Arc<RequestLog>>) + Send + 'static,
{
    fn drop(&mut self) {
        let (Some(fut), Some(gone)) = (self.fut.take(), self.gone.take()) else {
            return;
        };
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let log = self.log.take();
        let task = async move {
            let out = match &log {
                Some(log) => request_log::scope(log.clone(), fut).await,
                None => fut.await,
            };
            gone(out, log);
        };
        runtime.spawn(task.instrument(self.span.clone()));
    }
}

/// The stop's answer, after following its jobs when the caller asked to
/// wait (`Prefer: wait=N`, capped by `tracking.max_wait_s`).
async fn answered(
    app: &AppState,
    project: &Arc<Project>,
    answer: StopAnswer,
    wait: Option<u64>,
) -> Response {
    let mut body = answer.body;
    let mut applied = None;
    if let (Some(secs), Some(record), false) = (wait, &answer.record, answer.replayed) {
        let secs = secs.min(app.config.tracking.max_wait.as_secs());
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(secs);
        // Boxed: following jobs is the rare path, and its future, kept
        // inline, would make every stop's future several times larger.
        let view = Box::pin(app.stops.follow(project, record, until)).await;
        body = waited_body(&body, &view);
        applied = Some(secs);
    }
    let mut resp = (
        answer.status,
        [(header::CONTENT_TYPE, "application/json")],
        body,
    )
        .into_response();
    let headers = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(answer.request_id.as_str()) {
        headers.insert(REQUEST_ID_HEADER, v);
    }
    if answer.replayed {
        headers.insert("idempotent-replayed", HeaderValue::from_static("true"));
    }
    if let Some((kept, all)) = answer.resumed
        && let Ok(v) = HeaderValue::from_str(&format!(
            "{kept} of {all} batches had a recorded outcome and were not sent again"
        ))
    {
        headers.insert("idempotent-resumed", v);
    }
    if let Some(secs) = applied
        && let Ok(v) = HeaderValue::from_str(&format!("wait={secs}"))
    {
        headers.insert("preference-applied", v);
    }
    resp
}

/// `Prefer: wait=N` (RFC 7240), if well formed.
pub fn prefer_wait(headers: &HeaderMap) -> Option<u64> {
    let values: Vec<&str> = headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    preferred_wait(&values)
}
