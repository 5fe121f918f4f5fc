//! `GET /admin/v1/status`: this replica's view of its sources and
//! credentials, without any secret (admin port, admin role).

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use time::OffsetDateTime;

use super::admin::Admin;
use crate::http::error::ErrorJson;
use crate::http::state::AppState;
use crate::store::StoreKind;
use crate::tenants::Source;

/// The whole status.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Status {
    /// The gateway's build version.
    pub version: &'static str,
    pub tenants: TenantsState,
    pub store: StoreState,
    pub jwks: JwksState,
    /// Every credential under `[iam.credentials]`, by name.
    pub credentials: BTreeMap<String, CredentialState>,
}

/// The tenant mapping in use.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct TenantsState {
    /// `file` (the tenants file) or `postgres` (the shared store).
    pub source: &'static str,
    /// Tenants mapped.
    pub count: usize,
    /// The same on every replica with the same mapping (the store's change
    /// counter, or derived from the file's content); below 2^53; null until
    /// the first load.
    pub revision: Option<u64>,
    /// When this mapping was loaded (RFC 3339), or null before the first load.
    pub loaded_at: Option<String>,
    /// Why the last reload failed (the last good mapping stays), or null.
    pub last_error: Option<String>,
}

/// The shared store.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct StoreState {
    /// `none` (this replica keeps its state itself) or `postgres`.
    pub kind: &'static str,
    pub up: bool,
}

/// The JWKS key set (zero keys and nulls without `auth.jwks_url`).
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct JwksState {
    /// Keys of the last good fetch.
    pub keys: usize,
    /// When the last good fetch was made (RFC 3339), or null if none was.
    pub fetched_at: Option<String>,
    /// Why the last fetch failed, or null after a success.
    pub last_error: Option<String>,
}

/// One credential.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct CredentialState {
    /// `password` (IAM token) or `aksk` (signed calls).
    pub kind: &'static str,
    /// Why its last use failed (with IAM's error_code/error_msg), or null
    /// after a success or before any use.
    pub last_error: Option<String>,
}

fn rfc3339(t: OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

/// This replica's view: version, tenant mapping, store, JWKS, credentials.
#[utoipa::path(get, path = "/admin/v1/status", tag = "admin", responses(
        (status = 200, description = "This replica's view; never a secret", body = Status),
        (status = 401, description = "CPHGW.0101 invalid JWT", body = ErrorJson),
        (status = 403, description = "CPHGW.0103 admin role missing, or an HS256 token while auth.allow_hs256_admin is false", body = ErrorJson),
))]
pub async fn status(State(app): State<Arc<AppState>>, _: Admin) -> Json<Status> {
    let tenants = app.tenants.status();
    let jwks = app.auth.jwks_status();
    Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        tenants: TenantsState {
            source: match tenants.source {
                Source::File => "file",
                Source::Postgres => "postgres",
            },
            count: tenants.count,
            revision: tenants.revision,
            loaded_at: tenants.loaded_at.map(rfc3339),
            last_error: tenants.last_error,
        },
        store: StoreState {
            kind: match app.store.kind() {
                StoreKind::None => "none",
                StoreKind::Postgres => "postgres",
            },
            up: app.store.is_up(),
        },
        jwks: JwksState {
            keys: jwks.as_ref().map_or(0, |j| j.keys),
            fetched_at: jwks.as_ref().and_then(|j| j.fetched_at).map(rfc3339),
            last_error: jwks.and_then(|j| j.last_error),
        },
        credentials: app
            .upstream
            .credential_states
            .snapshot()
            .into_iter()
            .map(|(name, s)| {
                let state = CredentialState {
                    kind: s.kind,
                    last_error: s.last_error,
                };
                (name, state)
            })
            .collect(),
    })
}
