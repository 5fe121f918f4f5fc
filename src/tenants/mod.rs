//! The tenant-to-project mapping: loaded from the tenants file, validated,
//! swapped whole (a request keeps the mapping it started with), persisted
//! atomically on admin changes, and re-read when the file changes on disk.

mod file;
mod registry;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;

use crate::config::IamConfig;
use file::{parse_file, read_file, render, write_atomically};

pub use file::TenantsError;
pub use registry::{Project, ProjectSpec, Registry, Tenant, TenantSpec, TenantsFile, build_tenant};

/// The live mapping: readers take a snapshot with [`Tenants::load`]; writers
/// (admin API, file watcher, SIGHUP) replace it whole.
pub struct Tenants {
    current: ArcSwap<Registry>,
    file: PathBuf,
    iam: IamConfig,
    /// Serialises writers; holds the hash of the file content last applied,
    /// so the watcher ignores the gateway's own writes and unchanged files.
    writer: tokio::sync::Mutex<[u8; 32]>,
    /// When the mapping was last replaced, and why the last reload failed.
    meta: std::sync::Mutex<(OffsetDateTime, Option<String>)>,
}

/// The mapping's source and state, for `/admin/v1/status`.
#[derive(Debug, Clone)]
pub struct TenantsStatus {
    pub source: &'static str,
    pub count: usize,
    pub revision: u64,
    pub loaded_at: OffsetDateTime,
    /// Why the last reload failed (the last good mapping stays); `None`
    /// once the source reads well again.
    pub last_error: Option<String>,
}

impl Tenants {
    /// Loads and validates the tenants file (at start: a bad file is fatal).
    pub fn open(file: PathBuf, iam: IamConfig) -> Result<Self, TenantsError> {
        let text = read_file(&file)?;
        let registry = parse_file(&file, &text, &iam)?;
        Ok(Self {
            current: ArcSwap::from_pointee(registry),
            file,
            iam,
            writer: tokio::sync::Mutex::new(Sha256::digest(text.as_bytes()).into()),
            meta: std::sync::Mutex::new((OffsetDateTime::now_utc(), None)),
        })
    }

    /// Source, size, revision, load time and last reload error.
    pub fn status(&self) -> TenantsStatus {
        let registry = self.load();
        let (loaded_at, last_error) = self.meta().clone();
        TenantsStatus {
            source: "file",
            count: registry.len(),
            revision: registry.revision(),
            loaded_at,
            last_error,
        }
    }

    fn meta(&self) -> std::sync::MutexGuard<'_, (OffsetDateTime, Option<String>)> {
        self.meta.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn swap(&self, registry: Registry) {
        self.current.store(Arc::new(registry));
        self.meta().0 = OffsetDateTime::now_utc();
    }

    /// The mapping as of now; keep it for the whole request.
    pub fn load(&self) -> Arc<Registry> {
        self.current.load_full()
    }

    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The IAM config tenants are validated against.
    pub fn iam(&self) -> &IamConfig {
        &self.iam
    }

    /// Re-reads the file. `Ok(true)` if the mapping changed, `Ok(false)` if
    /// the file is as last applied; on error the last good mapping stays
    /// (and the error is kept for the status).
    pub async fn reload(&self) -> Result<bool, TenantsError> {
        let result = self.reload_file().await;
        self.meta().1 = result.as_ref().err().map(ToString::to_string);
        result
    }

    async fn reload_file(&self) -> Result<bool, TenantsError> {
        let mut applied = self.writer.lock().await;
        let file = self.file.clone();
        let text = tokio::task::spawn_blocking(move || read_file(&file))
            .await
            .map_err(|e| TenantsError::Invalid {
                path: self.file.display().to_string(),
                msg: e.to_string(),
            })??;
        let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
        if hash == *applied {
            return Ok(false);
        }
        // An empty file is a write caught half-way (or a mistake), not a
        // request to unmap every tenant.
        if text.trim().is_empty() {
            return Err(TenantsError::Invalid {
                path: self.file.display().to_string(),
                msg: "the file is empty".into(),
            });
        }
        let registry = parse_file(&self.file, &text, &self.iam)?;
        tracing::info!(tenants = registry.len(), file = %self.file.display(), "tenants reloaded");
        self.swap(registry);
        *applied = hash;
        Ok(true)
    }

    /// Applies `change` to the current spec, validates, persists atomically,
    /// then swaps. Returns the spec before and after. On any error nothing
    /// changes, on disk or in memory.
    pub async fn update<F, T>(&self, change: F) -> Result<T, UpdateError>
    where
        F: FnOnce(&mut TenantsFile) -> Result<T, UpdateError>,
    {
        let mut applied = self.writer.lock().await;
        let mut spec = self.current.load().spec().clone();
        let out = change(&mut spec)?;
        let registry = Registry::build(spec, &self.iam).map_err(UpdateError::Invalid)?;
        let text = render(registry.spec());
        let path = self.file.clone();
        let bytes = text.clone().into_bytes();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|source| {
                UpdateError::Persist(TenantsError::Write {
                    path: self.file.display().to_string(),
                    source,
                })
            })?;
        self.swap(registry);
        *applied = Sha256::digest(text.as_bytes()).into();
        Ok(out)
    }

    /// Polls the file every `interval` and reloads it when its content
    /// changes. Polling (rather than inotify) also follows a Kubernetes
    /// ConfigMap mount, where the file is a symlink that is swapped.
    pub async fn watch(self: Arc<Self>, interval: std::time::Duration) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = self.reload().await {
                tracing::error!(error = %e, "tenants file rejected; the last good mapping stays");
            }
        }
    }
}

/// An admin change that was refused.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    #[error("{0}")]
    Invalid(String),
    #[error("unknown tenant {0}")]
    UnknownTenant(String),
    #[error(transparent)]
    Persist(TenantsError),
}
