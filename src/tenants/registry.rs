//! The validated mapping: tenants and their projects, built from the
//! tenants-file shape and checked against the configured credentials.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

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
    /// Derived from the mapping's content (not the file's bytes): the same
    /// on every replica with the same mapping; below 2^53.
    revision: u64,
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
    /// Every tenant's projects, tenants in name order.
    pub fn projects(&self) -> Vec<&Arc<Project>> {
        let mut tenants: Vec<&Arc<Tenant>> = self.tenants.values().collect();
        tenants.sort_by(|a, b| a.name.as_str().cmp(b.name.as_str()));
        tenants.iter().flat_map(|t| t.projects.iter()).collect()
    }
    pub fn revision(&self) -> u64 {
        self.revision
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
        let revision = revision(&spec);
        Ok(Self {
            tenants,
            spec,
            revision,
        })
    }
}

/// The first 53 bits of the SHA-256 of the mapping in canonical JSON
/// (tenants sorted by name, fields in a fixed order), so that a JSON number
/// and a Prometheus gauge hold it exactly.
fn revision(spec: &TenantsFile) -> u64 {
    use sha2::{Digest, Sha256};
    let canonical = serde_json::to_vec(spec).unwrap_or_default();
    let digest = Sha256::digest(&canonical);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first) & ((1 << 53) - 1)
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
