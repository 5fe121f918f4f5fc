//! `/sim/v1/...` control endpoints: faults, token revocation, stats, phone states.

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::faults::Faults;
use crate::ids::{parse_hex32, phone_id};
use crate::state::Shared;
use crate::stats::SimStats;
use crate::store::PhoneState;
use crate::util::lock;

/// Most phones listed per page.
const MAX_PAGE: u32 = 10_000;

pub(crate) fn routes() -> Router<Arc<Shared>> {
    Router::new()
        .route("/sim/v1/faults", get(get_faults).put(put_faults))
        .route("/sim/v1/tokens/revoke", post(revoke))
        .route("/sim/v1/stats", get(stats))
        .route("/sim/v1/stats/reset", post(reset_stats))
        .route("/sim/v1/phones/start", post(start_phones))
        .route("/sim/v1/projects/{project_id}/phones", get(list_phones))
        .route(
            "/sim/v1/projects/{project_id}/phones/{phone_id}",
            get(one_phone),
        )
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({ "error": message.into() }))).into_response()
}

async fn get_faults(State(sim): State<Arc<Shared>>) -> Json<Faults> {
    Json(sim.faults.get())
}

/// Replaces the faults (and re-seeds); answers the new faults.
async fn put_faults(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    let faults = serde_json::from_slice::<Faults>(&body)
        .map_err(|e| e.to_string())
        .and_then(|f| f.validate().map(|()| f));
    match faults {
        Ok(faults) => {
            tracing::debug!(?faults, "faults set");
            sim.faults.set(faults.clone());
            Json(faults).into_response()
        }
        Err(message) => error(StatusCode::BAD_REQUEST, message),
    }
}

/// Starts every phone again (as an operator would): each can be stopped anew.
async fn start_phones(State(sim): State<Arc<Shared>>) -> StatusCode {
    lock(&sim.store).start_all();
    StatusCode::NO_CONTENT
}

async fn revoke(State(sim): State<Arc<Shared>>) -> StatusCode {
    sim.tokens.revoke_all();
    StatusCode::NO_CONTENT
}

async fn stats(State(sim): State<Arc<Shared>>) -> Json<SimStats> {
    Json(sim.stats.snapshot())
}

async fn reset_stats(State(sim): State<Arc<Shared>>) -> StatusCode {
    sim.stats.reset();
    StatusCode::NO_CONTENT
}

/// A phone: `state` in words, `status` as CPH's number.
#[derive(Serialize)]
struct PhoneView {
    phone_id: String,
    state: PhoneState,
    status: i32,
}

impl PhoneView {
    fn new(phone_id: String, state: PhoneState) -> Self {
        Self {
            phone_id,
            state,
            status: state.status(),
        }
    }
}

#[derive(Serialize)]
struct PhoneList {
    phones: Vec<PhoneView>,
}

#[derive(Deserialize)]
struct Page {
    #[serde(default)]
    offset: u32,
    #[serde(default = "default_limit")]
    limit: u32,
}

fn default_limit() -> u32 {
    100
}

/// A page of the seeded phones of a project, with their states.
async fn list_phones(
    State(sim): State<Arc<Shared>>,
    Path(project): Path<String>,
    Query(page): Query<Page>,
) -> Response {
    let Some(key) = parse_hex32(&project) else {
        return error(StatusCode::NOT_FOUND, "project not found");
    };
    let end = page
        .offset
        .saturating_add(page.limit.min(MAX_PAGE))
        .min(sim.cfg.phones_per_project);
    let now = sim.clock.now_ns();
    let states: Vec<_> = {
        let store = lock(&sim.store);
        (page.offset..end)
            .map(|i| store.phone_state(key, i, now))
            .collect()
    };
    let phones = (page.offset..end)
        .zip(states)
        .map(|(i, state)| PhoneView::new(phone_id(&project, i), state))
        .collect();
    Json(PhoneList { phones }).into_response()
}

/// One seeded phone and its state.
async fn one_phone(
    State(sim): State<Arc<Shared>>,
    Path((project, phone)): Path<(String, String)>,
) -> Response {
    match sim.phone_state(&project, &phone) {
        Some(state) => Json(PhoneView::new(phone, state)).into_response(),
        None => error(StatusCode::NOT_FOUND, "phone not found"),
    }
}
