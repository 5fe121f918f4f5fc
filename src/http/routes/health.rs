//! `GET /healthz`, `GET /readyz` and `GET /metrics` (admin port, no auth).

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use crate::http::state::AppState;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

/// Ready once config and tenants are loaded; not ready while shutting down.
pub async fn readyz(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    let tenants = app.tenants.load().len();
    if app.shutting_down.load(Ordering::Acquire) {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "shutting down", "tenants": tenants})),
        );
    }
    (
        StatusCode::OK,
        Json(json!({"status": "ready", "tenants": tenants})),
    )
}

pub async fn metrics(State(app): State<Arc<AppState>>) -> impl IntoResponse {
    for (project, age) in app.upstream.credentials.iam().token_ages() {
        app.metrics.iam_token_age(&project, age);
    }
    app.metrics.tenants_revision(app.tenants.load().revision());
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        app.metrics.render(),
    )
}
