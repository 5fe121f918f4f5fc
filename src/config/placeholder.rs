//! Secrets that must never be used: placeholders (`change-me...`) and any
//! value the repository itself publishes in its examples, manifests or docs
//! (anyone who reads the repository knows them). The published values are
//! the quoted strings of at least 32 bytes in the files below, read at build
//! time, so a value added to the docs is refused without a second list to
//! keep in step (a test checks that every doc and manifest is listed here).

use std::collections::HashSet;
use std::sync::OnceLock;

/// The repository's examples, manifests and docs, by path.
pub(super) const SOURCES: &[(&str, &str)] = &[
    ("README.md", include_str!("../../README.md")),
    (
        "config/gateway.toml",
        include_str!("../../config/gateway.toml"),
    ),
    (
        "config/tenants.toml",
        include_str!("../../config/tenants.toml"),
    ),
    ("deploy/README.md", include_str!("../../deploy/README.md")),
    (
        "deploy/kubernetes/configmap.yaml",
        include_str!("../../deploy/kubernetes/configmap.yaml"),
    ),
    (
        "deploy/kubernetes/deployment.yaml",
        include_str!("../../deploy/kubernetes/deployment.yaml"),
    ),
    (
        "deploy/kubernetes/secret.example.yaml",
        include_str!("../../deploy/kubernetes/secret.example.yaml"),
    ),
];

/// Published values shorter than this are not collected (a secret must be
/// at least this long anyway where the gateway checks a length).
const MIN_PUBLISHED_LEN: usize = 32;

/// The quoted strings of at least 32 bytes in `text`, on one line each.
pub(super) fn quoted_strings(text: &str) -> impl Iterator<Item = &str> {
    text.lines().flat_map(|line| {
        ['"', '\''].into_iter().flat_map(move |q| {
            line.split(q)
                .skip(1)
                .step_by(2)
                .map(str::trim)
                .filter(|s| s.len() >= MIN_PUBLISHED_LEN)
        })
    })
}

fn published() -> &'static HashSet<&'static str> {
    static SET: OnceLock<HashSet<&'static str>> = OnceLock::new();
    SET.get_or_init(|| {
        SOURCES
            .iter()
            .flat_map(|(_, text)| quoted_strings(text))
            .collect()
    })
}

/// Why `value` is a placeholder, if it is one. Never quotes the value.
pub fn placeholder(value: &str) -> Option<&'static str> {
    let v = value.trim();
    if v.to_ascii_lowercase().starts_with("change-me") {
        return Some("it is a placeholder (it starts with change-me): set the real secret");
    }
    if published().contains(v) {
        return Some(
            "it is published in the repository's examples or docs, so anyone can know it: set a secret of your own",
        );
    }
    None
}

/// The check of every secret: not a placeholder.
pub fn not_placeholder(value: &str) -> Result<(), String> {
    match placeholder(value) {
        Some(why) => Err(why.to_owned()),
        None => Ok(()),
    }
}

/// The check of an HS256 secret: at least 32 bytes, not a placeholder.
pub fn hs256_secret(value: &str) -> Result<(), String> {
    if value.len() < 32 {
        return Err("shorter than 32 bytes".into());
    }
    not_placeholder(value)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_published_values_are_refused() {
        assert!(placeholder("change-me-to-a-32-byte-or-longer-secret").is_some());
        assert!(placeholder("CHANGE-ME").is_some());
        assert!(placeholder(&"x".repeat(40)).is_none());
        assert!(hs256_secret("short").unwrap_err().contains("32 bytes"));
        assert!(hs256_secret(&hex::encode([7u8; 32])).is_ok());
        // A quoted value of the docs: refused.
        let published = quoted_strings(SOURCES[0].1).next().expect("README quotes");
        assert!(placeholder(published).is_some(), "{published}");
    }

    #[test]
    fn quoted_strings_are_found_on_their_line() {
        let text = "a = \"0123456789abcdef0123456789abcdef\" # c\nb = 'short'\nc: \"x\"";
        let found: Vec<&str> = quoted_strings(text).collect();
        assert_eq!(found, ["0123456789abcdef0123456789abcdef"]);
    }

    /// Every doc, example and manifest of the repository is a source, so a
    /// value published in a new file cannot be missed.
    #[test]
    fn every_doc_and_manifest_is_a_source() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut missing = Vec::new();
        for dir in [
            "",
            "config",
            "deploy",
            "deploy/kubernetes",
            "deploy/monitoring",
        ] {
            let Ok(entries) = std::fs::read_dir(root.join(dir)) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let ext_ok = [".md", ".toml", ".yaml", ".yml"]
                    .iter()
                    .any(|e| name.ends_with(e));
                if !ext_ok || name == "Cargo.toml" || name == "kustomization.yaml" {
                    continue;
                }
                let path = if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                };
                let text = std::fs::read_to_string(root.join(&path)).unwrap_or_default();
                if quoted_strings(&text).next().is_some()
                    && !SOURCES.iter().any(|(p, _)| *p == path)
                {
                    missing.push(path);
                }
            }
        }
        assert!(
            missing.is_empty(),
            "files with quoted values that are not placeholder sources: {missing:?}"
        );
    }
}
