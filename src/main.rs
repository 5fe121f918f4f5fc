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

#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its start (`_RJEM_MALLOC_CONF` in the
/// environment is read after them, and wins):
/// - `percpu_arena:percpu`: one arena per core, as many as the serving
///   threads, rather than four per core, each keeping freed pages of its own;
/// - `dirty_decay_ms:100`: freed pages go back to the OS over 100 ms rather
///   than 10 s, so that the peak RSS under load stays where it was;
/// - `background_thread:true`, `max_background_threads:1`: one thread of
///   jemalloc's gives them back, not the serving threads in the middle of a
///   request (with the serving threads doing it at 100 ms, 10,000-id stops
///   cost about 14 % more CPU per id).
///
/// Single-id stops at 64 connections, peak RSS (VmHWM): 71 MiB with
/// jemalloc's defaults, 66-68 MiB with the 100 ms alone, 62-64 MiB with
/// these settings (mimalloc, before: 62 MiB). After 10,000-id stops: 37 MiB
/// against mimalloc's 45 MiB.
#[cfg(feature = "jemalloc")]
#[unsafe(export_name = "_rjem_malloc_conf")]
static MALLOC_CONF: &[u8; 87] =
    b"percpu_arena:percpu,background_thread:true,max_background_threads:1,dirty_decay_ms:100\0";

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

#[cfg(all(test, feature = "jemalloc"))]
mod tests {
    use tikv_jemalloc_ctl::{opt, raw};

    #[test]
    fn jemalloc_runs_with_the_settings_of_main() {
        // The settings are read at jemalloc's start: reading them back
        // shows the symbol was found (a misnamed one is silently ignored).
        // SAFETY: jemalloc's options, of these types (`mallctl(3)`).
        let decay = unsafe { raw::read::<isize>(b"opt.dirty_decay_ms\0") }.expect("decay");
        assert_eq!(decay, 100);
        assert!(opt::background_thread::read().expect("background_thread"));
        let threads = tikv_jemalloc_ctl::max_background_threads::read().expect("max");
        assert_eq!(threads, 1);
        let percpu = unsafe { raw::read_str(b"opt.percpu_arena\0") }.expect("percpu_arena");
        assert_eq!(percpu, b"percpu\0"); // `read_str` keeps the terminator
    }
}
