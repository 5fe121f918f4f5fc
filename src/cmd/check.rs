//! `check-config`: validate a config and its tenants file without serving;
//! with `--online`, also try what it names, one line per check.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use clap::Args;
use cph_gateway::AppState;
use cph_gateway::config::{Config, CredentialKind, ProcessEnv};
use cph_gateway::tenants::Project;

#[derive(Args)]
pub struct CheckArgs {
    /// Path of the gateway's TOML config (see config/gateway.toml).
    #[arg(long, short)]
    pub config: PathBuf,
    /// Also try the credentials the tenants use (a signed CPH call per AK/SK
    /// credential); one line each, PASS or FAIL with the reason.
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
    let registry = state.tenants.load();
    println!(
        "config OK: {} tenants, {} projects, {} IAM credentials",
        registry.len(),
        registry.projects().len(),
        state.config.iam.credentials.len()
    );
    if !args.online {
        return Ok(());
    }
    let mut lines = Vec::new();
    lines.extend(aksk_credentials(&state).await);
    for line in &lines {
        line.print();
    }
    let failed = lines.iter().filter(|l| l.result.is_err()).count();
    if failed > 0 {
        return Err(format!("{failed} of {} online checks failed", lines.len()));
    }
    Ok(())
}

/// The first project of each credential used by a tenant, in credential
/// name order.
fn used_credentials(state: &AppState, kind: CredentialKind) -> Vec<Arc<Project>> {
    let registry = state.tenants.load();
    let mut first: BTreeMap<Arc<str>, Arc<Project>> = BTreeMap::new();
    for project in registry.projects() {
        let credential = state.config.iam.credentials.get(&*project.credential);
        if credential.is_some_and(|c| c.kind() == kind) {
            first
                .entry(project.credential.clone())
                .or_insert_with(|| project.clone());
        }
    }
    first.into_values().collect()
}

/// A signed CPH call per AK/SK credential used by a tenant.
async fn aksk_credentials(state: &AppState) -> Vec<Line> {
    let mut lines = Vec::new();
    for project in used_credentials(state, CredentialKind::Aksk) {
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
