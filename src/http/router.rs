//! The two routers: the caller API, and the admin API with health, metrics
//! and the API document. Each route carries its metric name. The caller
//! API's busiest route, the default-project stop, is also taken straight to
//! its handler ([`Routes`]).

use std::sync::Arc;

use axum::Router;
use axum::extract::Request;
use axum::handler::Handler;
use axum::http::{Method, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tower::ServiceExt;

use super::middleware::{self, Context, Names, method_not_allowed, not_found};
use super::routes::{admin, health, jobs, status, stop, stops};
use super::state::AppState;

/// The path of the default-project stop.
const STOP: &str = "/v1/cloud-phone/phones/batch-stop";

/// A server's routes: its router and, for the caller API, the stop route
/// taken straight to its handler (in the same request context as every
/// route, without the router's per-request service clones and boxes).
pub struct Routes {
    router: Router,
    stop: Option<(Context, Arc<AppState>)>,
}

impl From<Router> for Routes {
    fn from(router: Router) -> Self {
        Self { router, stop: None }
    }
}

impl Routes {
    /// Answers `req`.
    pub async fn call(&self, req: Request) -> Response {
        if let Some((ctx, app)) = &self.stop
            && req.method() == Method::POST
            && req.uri().path() == STOP
        {
            let app = app.clone();
            return middleware::in_context(ctx, Some(STOP), req, |req| {
                Handler::call(stop::stop_default, req, app)
            })
            .await;
        }
        match self.router.clone().oneshot(req).await {
            Ok(resp) => resp,
            Err(never) => match never {},
        }
    }
}

/// The caller API.
pub fn caller(state: Arc<AppState>) -> Routes {
    let mut names = Names::default();
    let router = Router::new()
        .route(names.add(STOP, "stop", false), post(stop::stop_default))
        .route(
            names.add(
                "/v1/{project_id}/cloud-phone/phones/batch-stop",
                "stop_project",
                false,
            ),
            post(stop::stop_in_project),
        )
        .route(
            names.add("/v1/cloud-phone/stops/{request_id}", "stop_record", false),
            get(stops::stop_record),
        )
        .route(
            names.add("/v1/cloud-phone/jobs/{job_id}", "job", false),
            get(jobs::job_default),
        )
        .route(
            names.add(
                "/v1/{project_id}/cloud-phone/jobs/{job_id}",
                "job_project",
                false,
            ),
            get(jobs::job_in_project),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state.clone());
    let ctx = Context::new(state.metrics.clone(), names);
    Routes {
        router: middleware::wrap(router, ctx.clone()),
        stop: Some((ctx, state)),
    }
}

/// The admin router: tenants, health, readiness, metrics, API document.
pub fn admin(state: Arc<AppState>) -> Router {
    let mut names = Names::default();
    let router = Router::new()
        .route(
            names.add("/admin/v1/tenants", "admin_tenants", false),
            get(admin::list),
        )
        .route(
            names.add("/admin/v1/tenants/{tenant}", "admin_tenant", false),
            get(admin::get).put(admin::put).delete(admin::delete),
        )
        .route(
            names.add("/admin/v1/audit", "admin_audit", false),
            get(admin::audit),
        )
        .route(
            names.add("/admin/v1/reload", "admin_reload", false),
            post(admin::reload),
        )
        .route(
            names.add("/admin/v1/status", "admin_status", false),
            get(status::status),
        )
        .route(names.add("/healthz", "healthz", true), get(health::healthz))
        .route(names.add("/readyz", "readyz", true), get(health::readyz))
        .route(names.add("/metrics", "metrics", true), get(health::metrics))
        .route(names.add("/openapi.json", "openapi", false), get(openapi))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state.clone());
    let ctx = Context::new(state.metrics.clone(), names);
    middleware::wrap(router, ctx)
}

/// The OpenAPI 3.1 document of the caller and admin APIs.
async fn openapi() -> impl IntoResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOC.get_or_init(super::openapi::document).clone(),
    )
}
