//! `migrate` and `tenants import|export`: the shared store from the command
//! line.

use std::path::PathBuf;
use std::sync::Arc;

use clap::{Args, Subcommand};
use cph_gateway::config::{Config, ProcessEnv};
use cph_gateway::store::postgres::PgStore;
use cph_gateway::store::{Retention, Store};
use cph_gateway::tenants::file::{parse_file, read_file, render, write_atomically};

use super::serve::ConfigArg;

#[derive(Args)]
pub struct TenantsArgs {
    #[command(subcommand)]
    pub command: TenantsCommand,
}

#[derive(Subcommand)]
pub enum TenantsCommand {
    /// Copy a tenants file into the store: validated, one transaction,
    /// audited as `import`; the store's mapping becomes the file's.
    Import(FileArgs),
    /// Write the store's tenants as a tenants file (standard output unless --file).
    Export(FileArgs),
}

#[derive(Args)]
pub struct FileArgs {
    /// Path of the gateway's TOML config (its [store] names the database).
    #[arg(long, short)]
    pub config: PathBuf,
    /// The tenants file (import: default tenants.file; export: default standard output).
    #[arg(long)]
    pub file: Option<PathBuf>,
}

/// Who the audit names for changes made from the command line.
const CLI_WHO: &str = "cph-gateway tenants import";

/// The configured PostgreSQL store, schema applied.
async fn open(config: &Config) -> Result<Arc<PgStore>, String> {
    let url = config
        .store
        .url
        .clone()
        .ok_or("the config names no shared store: set [store] url_env or url_file")?;
    let store = Arc::new(PgStore::new(url, Retention::of(config)).map_err(|e| e.to_string())?);
    store.migrate().await.map_err(|e| e.to_string())?;
    Ok(store)
}

pub async fn migrate(args: ConfigArg) -> Result<(), String> {
    let config = Config::load(&args.config, &ProcessEnv).map_err(|e| e.to_string())?;
    open(&config).await?;
    println!("store schema is up to date");
    Ok(())
}

pub async fn tenants(args: TenantsArgs) -> Result<(), String> {
    match args.command {
        TenantsCommand::Import(a) => import(a).await,
        TenantsCommand::Export(a) => export(a).await,
    }
}

async fn import(args: FileArgs) -> Result<(), String> {
    let config = Config::load(&args.config, &ProcessEnv).map_err(|e| e.to_string())?;
    let path = args.file.unwrap_or_else(|| config.tenants.file.clone());
    let text = read_file(&path).map_err(|e| e.to_string())?;
    // Validated against this config's credentials, as the gateway would.
    let registry = parse_file(&path, &text, &config.iam).map_err(|e| e.to_string())?;
    let store = open(&config).await?;
    match store
        .import(registry.spec(), CLI_WHO)
        .await
        .map_err(|e| e.to_string())?
    {
        Some(revision) => println!(
            "imported {} tenants from {}: revision {revision}",
            registry.len(),
            path.display()
        ),
        None => println!(
            "the store already holds {} as it is: nothing changed",
            path.display()
        ),
    }
    Ok(())
}

async fn export(args: FileArgs) -> Result<(), String> {
    let config = Config::load(&args.config, &ProcessEnv).map_err(|e| e.to_string())?;
    let store = open(&config).await?;
    let snapshot = store.tenants().await.map_err(|e| e.to_string())?;
    let text = render(&snapshot.file);
    match args.file {
        Some(path) => {
            write_atomically(&path, text.as_bytes())
                .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
            eprintln!(
                "exported {} tenants (revision {}) to {}",
                snapshot.file.tenants.len(),
                snapshot.revision,
                path.display()
            );
        }
        None => print!("{text}"),
    }
    Ok(())
}
