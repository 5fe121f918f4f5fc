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

/// The largest tenants file read (about 50,000 tenants).
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

/// Why a file with no tenants is refused.
pub const NO_TENANTS: &str =
    "no tenants: a tenants file without any is refused as probably truncated";

/// Parses and validates a tenants file; one with no tenants is refused (a
/// comment-only or truncated file is not a request to unmap everyone).
pub fn parse_file(path: &Path, text: &str, iam: &IamConfig) -> Result<Registry, TenantsError> {
    let invalid = |msg: String| TenantsError::Invalid {
        path: path.display().to_string(),
        msg,
    };
    let spec: TenantsFile = toml::from_str(text).map_err(|e| invalid(e.message().to_owned()))?;
    if spec.tenants.is_empty() {
        return Err(invalid(NO_TENANTS.into()));
    }
    Registry::build(spec, iam).map_err(invalid)
}

/// Reads the tenants file: only a regular file (checked on the opened
/// file, which is opened without blocking, so a FIFO cannot hang the
/// open), at most [`MAX_FILE_BYTES`]. A directory, a device (`/dev/zero`),
/// a FIFO or a dangling link is refused at once.
pub fn read_file(path: &Path) -> Result<String, TenantsError> {
    use std::io::Read;
    let invalid = |msg: String| TenantsError::Invalid {
        path: path.display().to_string(),
        msg,
    };
    let mut options = std::fs::OpenOptions::new();
    options.read(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY);
    }
    let file = options
        .open(path)
        .map_err(|e| invalid(format!("cannot open: {e}")))?;
    let meta = file
        .metadata()
        .map_err(|e| invalid(format!("cannot read: {e}")))?;
    if !meta.is_file() {
        return Err(invalid("not a regular file".into()));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(invalid(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| invalid(format!("cannot read: {e}")))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(invalid(format!("larger than {MAX_FILE_BYTES} bytes")));
    }
    String::from_utf8(bytes).map_err(|_| invalid("not UTF-8".into()))
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
    // Only a regular file is replaced: a link to a device (`/dev/zero`), a
    // FIFO or a directory stays as it is.
    match std::fs::metadata(&target) {
        Ok(meta) if !meta.is_file() => {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{} is not a regular file", target.display()),
            ));
        }
        _ => {}
    }
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
