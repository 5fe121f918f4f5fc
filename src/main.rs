//! The `cph-gateway` command: serve, check-config, sim, demo, token.

mod cmd;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use cmd::check::CheckArgs;
use cmd::demo::DemoArgs;
use cmd::serve::ConfigArg;
use cmd::sim::SimArgs;
use cmd::store::TenantsArgs;
use cmd::token::TokenArgs;

#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (`mimalloc.h`, v3): how long freed
/// pages stay committed before they go back to the OS (1,000 ms by default
/// in mimalloc 3.3).
#[cfg(feature = "mimalloc")]
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long freed pages stay committed: 100 ms rather than mimalloc's
/// 1,000. Under a flood of large bodies, a long delay lets the next bodies
/// take fresh pages while the freed ones wait, and the peak RSS grows with
/// them; no delay at all gives pages back that the next large request must
/// fault in again. The flood test's peak RSS: 140 MiB with mimalloc's
/// defaults; with no huge pages (the `no_thp` feature) 123 MiB at 1,000 ms,
/// 110 MiB at 100 ms, 107 MiB at 0 (glibc malloc 111 MiB). Gateway CPU per
/// id of 10,000-id stops: 1.9-2.0 us at 1,000 ms, 2.1-2.2 us at 100 ms,
/// 2.4-2.7 us at 0.
#[cfg(feature = "mimalloc")]
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// `MIMALLOC_PURGE_DELAY` in the environment still wins.
#[cfg(feature = "mimalloc")]
fn tune_allocator() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
        return;
    }
    // SAFETY: sets one integer option; mimalloc reads options atomically.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) };
}

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
    #[cfg(feature = "mimalloc")]
    tune_allocator();
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

#[cfg(all(test, feature = "mimalloc"))]
mod tests {
    use super::*;

    #[test]
    fn the_purge_delay_option_is_the_one_tuned() {
        // mimalloc's default purge delay is 1,000 ms (`options.c`), and a
        // binary's tests do not run `main`: another option at this index
        // would read otherwise.
        // SAFETY: reads one integer option.
        let before = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(before, 1000, "not mi_option_purge_delay");
        tune_allocator();
        let after = unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) };
        assert_eq!(after, PURGE_DELAY_MS);
    }
}
