//! The `cph-gateway` command: serve, check-config, sim, demo, token.

mod cmd;

use std::process::ExitCode;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};
use cmd::check::CheckArgs;
use cmd::demo::DemoArgs;
use cmd::serve::ConfigArg;
use cmd::sim::SimArgs;
use cmd::store::TenantsArgs;
use cmd::token::TokenArgs;

/// Stop Huawei Cloud Phones (CPH) in batches on behalf of internal services.
///
/// Callers send one JWT-authenticated request with any number of phone ids;
/// the gateway maps the caller's tenant to its Huawei Cloud project and IAM
/// token, splits the ids into upstream batch-stop calls, runs them
/// concurrently and answers with one entry per phone.
#[derive(Parser)]
#[command(name = "cph-gateway", version, about, long_about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (caller API on server.listen, admin API on server.admin_listen).
    Serve(ConfigArg),
    /// Validate a config and its tenants file without serving (with --online, also try IAM and the JWKS); exit 0 if it can work, 1 if not.
    CheckConfig(CheckArgs),
    /// Run the local CPH + IAM simulator (for tests, demos and benchmarks).
    Sim(Box<SimArgs>),
    /// Start the simulator and the gateway together on loopback and print a ready curl command.
    Demo(DemoArgs),
    /// Mint a development JWT signed with the config's HS256 secret.
    Token(TokenArgs),
    /// Apply the shared store's schema (also done at start; safe from several replicas at once).
    Migrate(ConfigArg),
    /// Copy tenant mappings between a tenants file and the shared store.
    Tenants(TenantsArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(a) => cmd::serve::serve(a).await,
            Command::CheckConfig(a) => cmd::check::check_config(a).await,
            Command::Sim(a) => cmd::sim::sim(*a).await,
            Command::Demo(a) => cmd::demo::demo(a).await,
            Command::Token(a) => cmd::token::token(a),
            Command::Migrate(a) => cmd::store::migrate(a).await,
            Command::Tenants(a) => cmd::store::tenants(a).await,
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(msg) => {
            eprintln!("error: {msg}");
            ExitCode::FAILURE
        }
    }
}
