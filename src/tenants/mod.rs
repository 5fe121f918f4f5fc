//! The tenant-to-project mapping as this replica serves it: validated,
//! swapped whole (a request keeps the mapping it started with), with the
//! revision it came from. Its source is the store (`crate::store`): the
//! tenants file for a gateway running alone, PostgreSQL for a fleet;
//! [`sync`] keeps it current.

pub mod admin;
pub mod file;
mod registry;
pub mod sync;

use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use serde::Serialize;
use time::OffsetDateTime;

use crate::config::IamConfig;

pub use file::TenantsError;
pub use registry::{Project, ProjectSpec, Registry, Tenant, TenantSpec, TenantsFile, build_tenant};

/// Where the mapping comes from (`/admin/v1/status` `tenants.source`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    File,
    Postgres,
}

/// What `/admin/v1/status` shows of the mapping.
#[derive(Debug, Clone, Serialize)]
pub struct TenantsStatus {
    pub source: Source,
    pub count: usize,
    /// `None` until the first load.
    pub revision: Option<u64>,
    #[serde(serialize_with = "rfc3339_opt")]
    pub loaded_at: Option<OffsetDateTime>,
    pub last_error: Option<String>,
}

fn rfc3339_opt<S: serde::Serializer>(at: &Option<OffsetDateTime>, s: S) -> Result<S::Ok, S::Error> {
    match at.and_then(|t| {
        t.format(&time::format_description::well_known::Rfc3339)
            .ok()
    }) {
        Some(text) => s.serialize_str(&text),
        None => s.serialize_none(),
    }
}

#[derive(Debug, Default)]
struct State {
    revision: Option<u64>,
    loaded_at: Option<OffsetDateTime>,
    last_error: Option<String>,
}

/// The live mapping: readers take a snapshot with [`Tenants::load`]; a new
/// one replaces it whole.
pub struct Tenants {
    current: ArcSwap<Registry>,
    iam: IamConfig,
    source: Source,
    state: Mutex<State>,
}

impl Tenants {
    /// No mapping yet (not ready until the first [`Tenants::apply`]).
    pub fn new(source: Source, iam: IamConfig) -> Self {
        Self {
            current: ArcSwap::from_pointee(Registry::default()),
            iam,
            source,
            state: Mutex::new(State::default()),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The mapping as of now; keep it for the whole request.
    pub fn load(&self) -> Arc<Registry> {
        self.current.load_full()
    }

    /// The IAM config tenants are validated against.
    pub fn iam(&self) -> &IamConfig {
        &self.iam
    }

    pub fn source(&self) -> Source {
        self.source
    }

    /// Whether a mapping was loaded at least once.
    pub fn is_loaded(&self) -> bool {
        self.state().revision.is_some()
    }

    /// The revision of the mapping being served.
    pub fn revision(&self) -> Option<u64> {
        self.state().revision
    }

    /// Validates and serves `file` as revision `revision`. `Ok(false)` if
    /// that revision is already served. On error the last good mapping
    /// stays and the error is kept for the status.
    pub fn apply(&self, revision: u64, file: TenantsFile) -> Result<bool, String> {
        if self.state().revision == Some(revision) {
            return Ok(false);
        }
        match Registry::build(file, &self.iam) {
            Ok(registry) => {
                let count = registry.len();
                self.current.store(Arc::new(registry));
                let mut state = self.state();
                state.revision = Some(revision);
                state.loaded_at = Some(OffsetDateTime::now_utc());
                state.last_error = None;
                drop(state);
                tracing::info!(tenants = count, revision, "tenant mapping loaded");
                Ok(true)
            }
            Err(e) => {
                self.failed(e.clone());
                Err(e)
            }
        }
    }

    /// The source reads well again (and holds what is served).
    pub fn healthy(&self) {
        self.state().last_error = None;
    }

    /// Keeps why the source could not be read or applied.
    pub fn failed(&self, error: String) {
        self.state().last_error = Some(error);
    }

    pub fn status(&self) -> TenantsStatus {
        let state = self.state();
        TenantsStatus {
            source: self.source,
            count: self.current.load().len(),
            revision: state.revision,
            loaded_at: state.loaded_at,
            last_error: state.last_error.clone(),
        }
    }
}
