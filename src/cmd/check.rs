//! `check-config`: validate a config and its tenants file without serving;
//! with `--online`, also try what it names, one line per check.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use cph_gateway::AppState;
use cph_gateway::config::{Config, CredentialKind, ProcessEnv};
use cph_gateway::store::StoreKind;
use cph_gateway::tenants::Project;
use cph_gateway::tenants::sync;

#[derive(Args)]
pub struct CheckArgs {
    /// Path of the gateway's TOML config (see config/gateway.toml).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Also try what the config names: an IAM token per password credential
    /// (and region) a tenant uses, a signed CPH call per AK/SK credential a
    /// tenant uses, the JWKS fetch; one line each, PASS or FAIL with the
    /// reason. Exit 1 if any fails.
    #[arg(long)]
    pub online: bool,
}

/// One online check's line: `PASS what: detail` or `FAIL what: reason`.
struct Line {
    what: String,
    result: Result<String, String>,
}

impl Line {
    fn print(&self) {
        match &self.result {
            Ok(detail) => println!("PASS {}: {detail}", self.what),
            Err(reason) => println!("FAIL {}: {reason}", self.what),
        }
    }
}

pub async fn check_config(args: CheckArgs) -> Result<(), String> {
    let config = Config::load(&args.config, &ProcessEnv).map_err(|e| e.to_string())?;
    let state = AppState::new(config).map_err(|e| e.to_string())?;
    let credentials = state.config.iam.credentials.len();
    if state.store.kind() == StoreKind::None {
        let registry = state.tenants.load();
        println!(
            "config OK: {} tenants, {} projects, {credentials} credentials",
            registry.len(),
            registry.projects().len(),
        );
    } else {
        // The mapping is the store's: read (and counted) by `--online`.
        println!(
            "config OK: tenants from the shared store (`--online` reads them), {credentials} credentials"
        );
    }
    if !args.online {
        return Ok(());
    }
    let lines = online(&state).await;
    for line in &lines {
        line.print();
    }
    let failed = lines.iter().filter(|l| l.result.is_err()).count();
    if failed > 0 {
        return Err(format!("{failed} of {} online checks failed", lines.len()));
    }
    Ok(())
}

/// Every online check, in order. Adding a check is adding one function
/// here.
async fn online(state: &AppState) -> Vec<Line> {
    let mut lines = Vec::new();
    // The store first: with one, the tenants (and so the credentials to
    // try) come from it.
    lines.extend(store(state).await);
    lines.extend(iam_tokens(state).await);
    lines.extend(aksk_credentials(state).await);
    lines.extend(jwks(state).await);
    lines
}

/// The first project of each credential of `kind` used by a tenant, in
/// credential name order; with `per_region`, of each credential and region.
fn used_credentials(state: &AppState, kind: CredentialKind, per_region: bool) -> Vec<Arc<Project>> {
    let registry = state.tenants.load();
    let mut first: BTreeMap<(Arc<str>, &str), Arc<Project>> = BTreeMap::new();
    for project in registry.projects() {
        let credential = state.config.iam.credentials.get(&*project.credential);
        if credential.is_some_and(|c| c.kind() == kind) {
            let region = if per_region {
                project.region.as_str()
            } else {
                ""
            };
            first
                .entry((project.credential.clone(), region))
                .or_insert_with(|| project.clone());
        }
    }
    first.into_values().collect()
}

/// An IAM token per password credential and region used by a tenant: the
/// password, the user, the domain, the region's IAM endpoint and the project
/// are all tried (a region of the right shape that does not exist fails here).
async fn iam_tokens(state: &AppState) -> Vec<Line> {
    let mut lines = Vec::new();
    for project in used_credentials(state, CredentialKind::Password, true) {
        let result = state.upstream.credentials.iam().probe(&project).await;
        lines.push(Line {
            what: format!(
                "IAM token of credential {:?} (project {}, region {})",
                &*project.credential,
                project.id,
                project.region.as_str()
            ),
            result: result.map(|()| "issued".into()).map_err(|e| e.reason),
        });
    }
    lines
}

/// A signed CPH call per AK/SK credential used by a tenant.
async fn aksk_credentials(state: &AppState) -> Vec<Line> {
    let mut lines = Vec::new();
    for project in used_credentials(state, CredentialKind::Aksk, false) {
        let result = state.upstream.probe_signed(&project).await;
        lines.push(Line {
            what: format!(
                "AK/SK credential {:?} (project {}, region {})",
                &*project.credential,
                project.id,
                project.region.as_str()
            ),
            result,
        });
    }
    lines
}

/// The shared store, if `[store]` names one: reachable, and its mapping
/// loaded (which the credential checks then use).
async fn store(state: &AppState) -> Option<Line> {
    if state.store.kind() == StoreKind::None {
        return None;
    }
    let result = async {
        state.store.ping().await.map_err(|e| e.to_string())?;
        sync::refresh(state.store.as_ref(), &state.tenants, true)
            .await
            .map_err(|e| format!("reachable, but its tenants cannot be read ({e}); run `cph-gateway migrate` for a new database"))?;
        let status = state.tenants.status();
        Ok(format!(
            "reachable; {} tenants at revision {}",
            status.count,
            status.revision.unwrap_or(0)
        ))
    }
    .await;
    Some(Line {
        what: "store (PostgreSQL)".into(),
        result,
    })
}

/// The JWKS fetch, if `auth.jwks_url` is set.
async fn jwks(state: &AppState) -> Option<Line> {
    let url = state.config.auth.jwks_url.clone()?;
    let result = state.auth.fetch_jwks().await?;
    Some(Line {
        what: format!("JWKS {url}"),
        result: result.map(|n| format!("{n} usable keys")),
    })
}
