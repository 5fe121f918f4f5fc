//! `serve`.

use std::path::PathBuf;

use clap::Args;
use cph_gateway::config::{Config, ProcessEnv};
use cph_gateway::{App, shutdown_signal, telemetry};

#[derive(Args)]
pub struct ConfigArg {
    /// Path of the gateway's TOML config (see config/gateway.toml).
    #[arg(long, short)]
    pub config: PathBuf,
}

pub async fn serve(args: ConfigArg) -> Result<(), String> {
    let config = Config::load(&args.config, &ProcessEnv).map_err(|e| e.to_string())?;
    let _telemetry = telemetry::init(config.telemetry.otlp_endpoint.as_deref())?;
    let app = App::build(config).await.map_err(|e| e.to_string())?;
    tracing::info!(listen = %app.addr(), admin_listen = %app.admin_addr(), "cph-gateway serving");
    app.run(shutdown_signal())
        .await
        .map_err(|e| e.to_string())?;
    tracing::info!("cph-gateway stopped");
    Ok(())
}
