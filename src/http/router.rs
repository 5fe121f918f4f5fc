//! The two routers: the caller API, and the admin API with health, metrics
//! and the API document. Each route carries its metric name.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::middleware::{self, method_not_allowed, named, not_found};
use super::routes::{admin, health, jobs, status, stop, stops};
use super::state::AppState;

/// The caller API router.
pub fn caller(state: Arc<AppState>) -> Router {
    let router = Router::new()
        .route(
            "/v1/cloud-phone/phones/batch-stop",
            named("stop", false, post(stop::stop_default)),
        )
        .route(
            "/v1/{project_id}/cloud-phone/phones/batch-stop",
            named("stop_project", false, post(stop::stop_in_project)),
        )
        .route(
            "/v1/cloud-phone/stops/{request_id}",
            named("stop_record", false, get(stops::stop_record)),
        )
        .route(
            "/v1/cloud-phone/jobs/{job_id}",
            named("job", false, get(jobs::job_default)),
        )
        .route(
            "/v1/{project_id}/cloud-phone/jobs/{job_id}",
            named("job_project", false, get(jobs::job_in_project)),
        )
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state.clone());
    middleware::wrap(router, state.metrics.clone())
}

/// The admin router: tenants, health, readiness, metrics, API document.
pub fn admin(state: Arc<AppState>) -> Router {
    let router = Router::new()
        .route(
            "/admin/v1/tenants",
            named("admin_tenants", false, get(admin::list)),
        )
        .route(
            "/admin/v1/tenants/{tenant}",
            named(
                "admin_tenant",
                false,
                get(admin::get).put(admin::put).delete(admin::delete),
            ),
        )
        .route(
            "/admin/v1/audit",
            named("admin_audit", false, get(admin::audit)),
        )
        .route(
            "/admin/v1/reload",
            named("admin_reload", false, post(admin::reload)),
        )
        .route(
            "/admin/v1/status",
            named("admin_status", false, get(status::status)),
        )
        .route("/healthz", named("healthz", true, get(health::healthz)))
        .route("/readyz", named("readyz", true, get(health::readyz)))
        .route("/metrics", named("metrics", true, get(health::metrics)))
        .route("/openapi.json", named("openapi", false, get(openapi)))
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .with_state(state.clone());
    middleware::wrap(router, state.metrics.clone())
}

/// The OpenAPI 3.1 document of the caller and admin APIs.
async fn openapi() -> impl IntoResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOC.get_or_init(super::openapi::document).clone(),
    )
}
