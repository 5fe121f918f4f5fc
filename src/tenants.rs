//! The tenant-to-project mapping: loaded from the tenants file, validated,
//! swapped whole (a request keeps the mapping it started with), persisted
//! atomically on admin changes, and re-read when the file changes on disk.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::IamConfig;
use crate::domain::{ProjectId, Region, TenantId};

/// One tenant as the tenants file and the admin API spell it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantSpec {
    pub default_project: String,
    pub projects: Vec<ProjectSpec>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProjectSpec {
    pub project_id: String,
    pub region: String,
    pub credential: String,
}

/// The whole tenants file: `{"tenants": {"acme": {..}}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantsFile {
    #[serde(default)]
    pub tenants: BTreeMap<String, TenantSpec>,
}

/// A project a tenant may stop phones in, with everything needed to call it.
#[derive(Debug)]
pub struct Project {
    pub id: ProjectId,
    pub region: Region,
    /// Name of the IAM credential under `[iam.credentials]`.
    pub credential: Arc<str>,
}

#[derive(Debug)]
pub struct Tenant {
    pub name: TenantId,
    pub default_project: Arc<Project>,
    pub projects: Vec<Arc<Project>>,
}

impl Tenant {
    /// The tenant's project with this id, if it is one of the tenant's.
    pub fn project(&self, id: &str) -> Option<&Arc<Project>> {
        self.projects.iter().find(|p| p.id.as_str() == id)
    }
}

/// A validated mapping; immutable once built.
#[derive(Debug, Default)]
pub struct Registry {
    tenants: HashMap<TenantId, Arc<Tenant>>,
    /// The source, for the admin API and for persisting.
    spec: TenantsFile,
}

impl Registry {
    pub fn get(&self, tenant: &TenantId) -> Option<&Arc<Tenant>> {
        self.tenants.get(tenant)
    }
    pub fn spec(&self) -> &TenantsFile {
        &self.spec
    }
    pub fn len(&self) -> usize {
        self.tenants.len()
    }
    pub fn is_empty(&self) -> bool {
        self.tenants.is_empty()
    }

    /// Validates a whole file against the configured credentials. The error
    /// names the field (`tenants.acme.projects[1].region: ...`).
    pub fn build(spec: TenantsFile, credentials: &IamConfig) -> Result<Self, String> {
        let mut tenants = HashMap::with_capacity(spec.tenants.len());
        for (name, t) in &spec.tenants {
            let tenant =
                build_tenant(name, t, credentials).map_err(|e| format!("tenants.{name}.{e}"))?;
            tenants.insert(tenant.name.clone(), Arc::new(tenant));
        }
        Ok(Self { tenants, spec })
    }
}

/// Validates one tenant; the error names the field relative to the tenant.
pub fn build_tenant(name: &str, t: &TenantSpec, iam: &IamConfig) -> Result<Tenant, String> {
    let name = TenantId::parse(name).map_err(|e| format!("name: {e}"))?;
    if t.projects.is_empty() {
        return Err("projects: a tenant needs at least one project".into());
    }
    let mut seen = HashSet::new();
    let mut projects = Vec::with_capacity(t.projects.len());
    for (i, p) in t.projects.iter().enumerate() {
        let id = ProjectId::parse(&p.project_id)
            .map_err(|e| format!("projects[{i}].project_id: {e}"))?;
        if !seen.insert(id.clone()) {
            return Err(format!(
                "projects[{i}].project_id: duplicate project id {id}"
            ));
        }
        let region = Region::parse(&p.region).map_err(|e| format!("projects[{i}].region: {e}"))?;
        if !iam.credentials.contains_key(&p.credential) {
            return Err(format!(
                "projects[{i}].credential: no credential {:?} under [iam.credentials]",
                p.credential
            ));
        }
        projects.push(Arc::new(Project {
            id,
            region,
            credential: p.credential.as_str().into(),
        }));
    }
    let default_project = projects
        .iter()
        .find(|p| p.id.as_str() == t.default_project)
        .cloned()
        .ok_or_else(|| {
            format!(
                "default_project: {:?} is not one of the tenant's projects",
                t.default_project
            )
        })?;
    Ok(Tenant {
        name,
        default_project,
        projects,
    })
}

/// Why the tenants file could not be loaded or written.
#[derive(Debug, thiserror::Error)]
pub enum TenantsError {
    #[error("{path}: {msg}")]
    Invalid { path: String, msg: String },
    #[error("cannot write {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

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

fn parse_file(path: &Path, text: &str, iam: &IamConfig) -> Result<Registry, TenantsError> {
    let invalid = |msg: String| TenantsError::Invalid {
        path: path.display().to_string(),
        msg,
    };
    let spec: TenantsFile = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
    Registry::build(spec, iam).map_err(invalid)
}

fn read_file(path: &Path) -> Result<String, TenantsError> {
    std::fs::read_to_string(path).map_err(|e| TenantsError::Invalid {
        path: path.display().to_string(),
        msg: format!("cannot read: {e}"),
    })
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
        let mut spec = self.current.load().spec.clone();
        let out = change(&mut spec)?;
        let registry = Registry::build(spec, &self.iam).map_err(UpdateError::Invalid)?;
        let text = render(&registry.spec);
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

/// The tenants file as TOML, with a header.
fn render(spec: &TenantsFile) -> String {
    let body = toml::to_string_pretty(spec).unwrap_or_default();
    format!("# Tenant-to-project mappings of cph-gateway. Also written by the admin API.\n\n{body}")
}

/// Writes `bytes` to a temporary file beside `path`, syncs it, renames it
/// over `path` and syncs the directory, so a crash leaves the old file or the
/// new one, never half of one. If `path` is a symlink, its target is replaced.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let target = match std::fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(e),
    };
    let dir = target
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tenants.toml".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}",
        hex::encode(rand::random::<[u8; 6]>())
    ));
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)?;
        std::fs::File::open(dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}
