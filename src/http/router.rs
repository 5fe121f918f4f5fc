//! The two routers: the caller API, and the admin API with health, metrics
//! and the API document. Each route carries its metric name.

use std::sync::Arc;

use axum::Router;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::{get, post};

use super::middleware::{self, Names, method_not_allowed, not_found};
use super::routes::{admin, health, jobs, status, stop, stops};
use super::state::AppState;

/// The caller API router.
pub fn caller(state: Arc<AppState>) -> Router {
    let mut names = Names::default();
    let router = Router::new()
        .route(
            names.add("/v1/cloud-phone/phones/batch-stop", "stop", false),
            post(stop::stop_default),
        )
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
    middleware::wrap(router, state.metrics.clone(), names.done())
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
    middleware::wrap(router, state.metrics.clone(), names.done())
}

/// The OpenAPI 3.1 document of the caller and admin APIs.
async fn openapi() -> impl IntoResponse {
    static DOC: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    (
        [(header::CONTENT_TYPE, "application/json")],
        DOC.get_or_init(super::openapi::document).clone(),
    )
}
