//! The tenants file: read (a regular file only, size-capped), parsed,
//! rendered, and written atomically.

use std::path::Path;

use super::registry::{Registry, TenantsFile};
use crate::config::IamConfig;

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

pub fn parse_file(path: &Path, text: &str, iam: &IamConfig) -> Result<Registry, TenantsError> {
    let invalid = |msg: String| TenantsError::Invalid {
        path: path.display().to_string(),
        msg,
    };
    let spec: TenantsFile = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
    Registry::build(spec, iam).map_err(invalid)
}

pub fn read_file(path: &Path) -> Result<String, TenantsError> {
    std::fs::read_to_string(path).map_err(|e| TenantsError::Invalid {
        path: path.display().to_string(),
        msg: format!("cannot read: {e}"),
    })
}

/// The tenants file as TOML, with a header.
pub fn render(spec: &TenantsFile) -> String {
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
