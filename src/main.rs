//! The `cph-gateway` command: serve, check-config, sim, demo, token.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use cph_gateway::config::{Config, ProcessEnv};
use cph_gateway::sim::{Faults, Sim, SimOptions};
use cph_gateway::{App, AppState, app::shutdown_signal, auth, telemetry};
use secrecy::ExposeSecret;

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
    /// Validate a config and its tenants file without serving; exit 0 if it can work, 1 if not.
    CheckConfig(ConfigArg),
    /// Run the local CPH + IAM simulator (for tests, demos and benchmarks).
    Sim(SimArgs),
    /// Start the simulator and the gateway together on loopback and print a ready curl command.
    Demo(DemoArgs),
    /// Mint a development JWT signed with the config's HS256 secret.
    Token(TokenArgs),
}

#[derive(Args)]
struct ConfigArg {
    /// Path of the gateway's TOML config (see config/gateway.toml).
    #[arg(long, short)]
    config: PathBuf,
}

#[derive(Args)]
struct SimArgs {
    /// Address to listen on, e.g. 127.0.0.1:9000.
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// IAM domain name the simulator accepts.
    #[arg(long, default_value = "sim-domain")]
    iam_domain: String,
    /// IAM user name the simulator accepts.
    #[arg(long, default_value = "sim-user")]
    iam_user: String,
    /// IAM password the simulator accepts.
    #[arg(long, default_value = "sim-password")]
    iam_password: String,
    /// Lifetime of issued IAM tokens, in seconds.
    #[arg(long, default_value_t = 86_400)]
    token_ttl_s: u64,
    /// Seeded phones per project.
    #[arg(long, default_value_t = 20_000)]
    phones_per_project: u32,
    /// Largest batch-stop the simulator accepts (400 above it).
    #[arg(long, default_value_t = 500)]
    max_batch_size: usize,
    /// How long a stop job runs before it succeeds, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    job_duration_ms: u64,
    #[command(flatten)]
    faults: FaultArgs,
}

/// Fault injection (also settable at run time: PUT /sim/v1/faults).
#[derive(Args, Default)]
struct FaultArgs {
    /// Seed for the fault choices (same seed, same sequence).
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Latency added to every CPH call, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Plus a uniform random 0..=jitter, in milliseconds.
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// Share of batch-stops answered 500 CPS.0003.
    #[arg(long, default_value_t = 0.0)]
    error_500_rate: f64,
    /// Share of batch-stops answered 503.
    #[arg(long, default_value_t = 0.0)]
    error_503_rate: f64,
    /// Share of batch-stops answered 429 APIG.0308.
    #[arg(long, default_value_t = 0.0)]
    error_429_rate: f64,
    /// Retry-After of those 429s, in seconds.
    #[arg(long, default_value_t = 0)]
    retry_after_s: u64,
    /// Share of batch-stops that hang for --hang-ms.
    #[arg(long, default_value_t = 0.0)]
    hang_rate: f64,
    /// How long a hang lasts, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    hang_ms: u64,
    /// Share of batch-stops whose connection is reset.
    #[arg(long, default_value_t = 0.0)]
    reset_rate: f64,
    /// IAM answers 503 to every token request.
    #[arg(long)]
    iam_down: bool,
}

impl FaultArgs {
    fn faults(&self) -> Faults {
        Faults {
            seed: self.seed,
            latency_ms: self.latency_ms,
            jitter_ms: self.jitter_ms,
            error_500_rate: self.error_500_rate,
            error_503_rate: self.error_503_rate,
            error_429_rate: self.error_429_rate,
            retry_after_s: self.retry_after_s,
            hang_rate: self.hang_rate,
            hang_ms: self.hang_ms,
            reset_rate: self.reset_rate,
            iam_down: self.iam_down,
            ..Faults::default()
        }
    }
}

#[derive(Args)]
struct DemoArgs {
    /// Caller API address (falls back to a free port if taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Admin API address (falls back to a free port if taken).
    #[arg(long, default_value = "127.0.0.1:8081")]
    admin_listen: SocketAddr,
    /// Simulated CPH latency per call, in milliseconds.
    #[arg(long, default_value_t = 20)]
    sim_latency_ms: u64,
}

#[derive(Args)]
struct TokenArgs {
    /// Tenant claim of the token.
    #[arg(long)]
    tenant: Option<String>,
    /// Add the admin role (auth.admin_role).
    #[arg(long)]
    admin: bool,
    /// Subject (`sub`) of the token.
    #[arg(long, default_value = "dev")]
    subject: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl_s: u64,
    /// Path of the gateway's TOML config; its HS256 secret signs the token.
    #[arg(long, short)]
    config: PathBuf,
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
            Command::Serve(a) => serve(a).await,
            Command::CheckConfig(a) => check_config(a),
            Command::Sim(a) => sim(a).await,
            Command::Demo(a) => demo(a).await,
            Command::Token(a) => token(a),
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

async fn serve(args: ConfigArg) -> Result<(), String> {
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

fn check_config(args: ConfigArg) -> Result<(), String> {
    let config = Config::load(&args.config, &ProcessEnv).map_err(|e| e.to_string())?;
    let state = AppState::new(config).map_err(|e| e.to_string())?;
    let registry = state.tenants.load();
    let projects: usize = registry
        .spec()
        .tenants
        .values()
        .map(|t| t.projects.len())
        .sum();
    println!(
        "config OK: {} tenants, {} projects, {} IAM credentials",
        registry.len(),
        projects,
        state.config.iam.credentials.len()
    );
    Ok(())
}

async fn sim(args: SimArgs) -> Result<(), String> {
    let _logs = telemetry::init_logging();
    let opts = SimOptions {
        listen: args.listen,
        iam_domain: args.iam_domain,
        iam_user: args.iam_user,
        iam_password: args.iam_password,
        token_ttl: Duration::from_secs(args.token_ttl_s),
        phones_per_project: args.phones_per_project,
        max_batch_size: args.max_batch_size,
        job_duration: Duration::from_millis(args.job_duration_ms),
        faults: args.faults.faults(),
    };
    cph_gateway::sim::run_until_signal(opts)
        .await
        .map_err(|e| e.to_string())
}

fn token(args: TokenArgs) -> Result<(), String> {
    let config = Config::load(&args.config, &ProcessEnv).map_err(|e| e.to_string())?;
    let secret = config
        .auth
        .hs256_secret
        .as_ref()
        .ok_or("the config has no auth.hs256_secret_env: `token` mints HS256 tokens only")?;
    let roles: Vec<&str> = if args.admin {
        vec![config.auth.admin_role.as_str()]
    } else {
        vec![]
    };
    let jwt = auth::mint_hs256(
        secret.expose_secret().as_bytes(),
        &config.auth,
        &args.subject,
        args.tenant.as_deref(),
        &roles,
        Duration::from_secs(args.ttl_s),
    )
    .map_err(|e| e.to_string())?;
    println!("{jwt}");
    Ok(())
}

/// The demo's tenant and project (the same as config/tenants.toml).
const DEMO_TENANT: &str = "acme";
const DEMO_PROJECT: &str = "0a1b2c3d4e5f60718293a4b5c6d7e8f9";

async fn free_or_any(addr: SocketAddr) -> SocketAddr {
    match tokio::net::TcpListener::bind(addr).await {
        Ok(_) => addr,
        Err(_) => SocketAddr::new(addr.ip(), 0),
    }
}

async fn demo(args: DemoArgs) -> Result<(), String> {
    let _logs = telemetry::init_logging();
    let sim = Sim::start(SimOptions {
        faults: Faults {
            latency_ms: args.sim_latency_ms,
            ..Faults::default()
        },
        ..SimOptions::default()
    })
    .await
    .map_err(|e| format!("cannot start the simulator: {e}"))?;
    let defaults = SimOptions::default();

    let dir = std::env::temp_dir().join(format!("cph-gateway-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let tenants_file = dir.join("tenants.toml");
    let tenants = format!(
        "[tenants.{DEMO_TENANT}]\ndefault_project = \"{DEMO_PROJECT}\"\n\n[[tenants.{DEMO_TENANT}.projects]]\nproject_id = \"{DEMO_PROJECT}\"\nregion = \"cn-east-3\"\ncredential = \"default\"\n"
    );
    std::fs::write(&tenants_file, tenants)
        .map_err(|e| format!("cannot write {}: {e}", tenants_file.display()))?;

    let listen = free_or_any(args.listen).await;
    let admin_listen = free_or_any(args.admin_listen).await;
    let toml = format!(
        r#"
[server]
listen = "{listen}"
admin_listen = "{admin_listen}"
shutdown_grace_ms = 5000

[auth]
issuer = "https://idp.demo.local"
audience = "cph-gateway"
hs256_secret_env = "DEMO_JWT_SECRET"

[iam]
endpoint = "{sim}"

[iam.credentials.default]
domain = "{domain}"
user = "{user}"
password_env = "DEMO_IAM_PASSWORD"

[upstream]
cph_endpoint = "{sim}"

[limits]
tenant_rate_per_s = 1000

[tenants]
file = "{tenants}"
"#,
        sim = sim.url(),
        domain = defaults.iam_domain,
        user = defaults.iam_user,
        tenants = tenants_file.display(),
    );
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let env: BTreeMap<String, String> = [
        ("DEMO_JWT_SECRET".to_owned(), secret.clone()),
        (
            "DEMO_IAM_PASSWORD".to_owned(),
            defaults.iam_password.clone(),
        ),
    ]
    .into();
    let config = Config::from_toml(&toml, &env).map_err(|e| e.to_string())?;
    let auth_cfg = config.auth.clone();
    let app = App::build(config).await.map_err(|e| e.to_string())?;
    let (addr, admin_addr) = (app.addr(), app.admin_addr());
    let running = app.spawn();

    let mint = |tenant: Option<&str>, roles: &[&str]| {
        auth::mint_hs256(
            secret.as_bytes(),
            &auth_cfg,
            "demo-user",
            tenant,
            roles,
            Duration::from_secs(8 * 3600),
        )
        .map_err(|e| e.to_string())
    };
    let caller_jwt = mint(Some(DEMO_TENANT), &[])?;
    let admin_jwt = mint(None, &[auth_cfg.admin_role.as_str()])?;
    let phones: Vec<String> = (0..3)
        .map(|i| cph_gateway::sim::phone_id(DEMO_PROJECT, i))
        .collect();
    let big: Vec<String> = (0..10_000)
        .map(|i| cph_gateway::sim::phone_id(DEMO_PROJECT, i))
        .collect();
    let big_file = dir.join("stop-10000.json");
    std::fs::write(
        &big_file,
        serde_json::json!({ "phone_ids": big }).to_string(),
    )
    .map_err(|e| format!("cannot write {}: {e}", big_file.display()))?;

    println!(
        r#"
cph-gateway demo is running.
  caller API  http://{addr}
  admin API   http://{admin_addr}
  simulator   {sim} (CPH + IAM, {lat} ms per CPH call)
  tenant      {DEMO_TENANT} -> project {DEMO_PROJECT}

Stop three phones (plus one unknown id, to see a per-phone error):

curl -s -X POST http://{addr}/v1/cloud-phone/phones/batch-stop \
  -H 'Authorization: Bearer {caller_jwt}' \
  -H 'Content-Type: application/json' \
  -d '{{"phone_ids":["{p0}","{p1}","{p2}","0a1b2c3dffffffffffffffffffffffff"]}}'

Stop 10,000 phones (100 upstream batches, 8 at a time):

time curl -s -o /dev/null -w '%{{http_code}}\n' -X POST http://{addr}/v1/cloud-phone/phones/batch-stop \
  -H 'Authorization: Bearer {caller_jwt}' -H 'Content-Type: application/json' -d @{big}

Follow a job (use a job_id from the answer above):

curl -s http://{addr}/v1/cloud-phone/jobs/JOB_ID -H 'Authorization: Bearer {caller_jwt}'

Admin: list tenants, metrics:

curl -s http://{admin_addr}/admin/v1/tenants -H 'Authorization: Bearer {admin_jwt}'
curl -s http://{admin_addr}/metrics

Press Ctrl-C to stop.
"#,
        sim = sim.url(),
        lat = args.sim_latency_ms,
        p0 = phones[0],
        p1 = phones[1],
        p2 = phones[2],
        big = big_file.display(),
    );

    shutdown_signal().await;
    running.shutdown().await.map_err(|e| e.to_string())?;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
