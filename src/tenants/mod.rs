//! The tenant-to-project mapping: loaded from the tenants file, validated,
//! swapped whole (a request keeps the mapping it started with), persisted
//! atomically on admin changes, and re-read when the file changes on disk.

mod file;
mod registry;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use sha2::{Digest, Sha256};

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
        })
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
    /// the file is as last applied; on error the last good mapping stays.
    pub async fn reload(&self) -> Result<bool, TenantsError> {
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
        self.current.store(Arc::new(registry));
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
        self.current.store(Arc::new(registry));
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
