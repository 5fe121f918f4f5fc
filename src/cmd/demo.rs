//! `demo`: the simulator and the gateway wired together on loopback.

use clap::Args;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use cph_gateway::config::{Config, ENV_PREFIX, ProcessEnv};
use cph_gateway::{App, auth, shutdown_signal, telemetry};
use cph_sim::{Faults, Sim, SimOptions, phone_id};

#[derive(Args)]
pub struct DemoArgs {
    /// Caller API address (falls back to a free port if taken).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Admin API address (falls back to a free port if taken).
    #[arg(long, default_value = "127.0.0.1:8081")]
    pub admin_listen: SocketAddr,
    /// Simulated CPH latency per call, in milliseconds.
    #[arg(long, default_value_t = 20)]
    pub sim_latency_ms: u64,
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

pub async fn demo(args: DemoArgs) -> Result<(), String> {
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
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        write_private(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        Ok::<_, String>(path)
    };
    let tenants = format!(
        "[tenants.{DEMO_TENANT}]\ndefault_project = \"{DEMO_PROJECT}\"\n\n[[tenants.{DEMO_TENANT}.projects]]\nproject_id = \"{DEMO_PROJECT}\"\nregion = \"cn-east-3\"\ncredential = \"default\"\n"
    );
    let tenants_file = write("tenants.toml", &tenants)?;
    // The secrets are files of the demo's own, so that the printed `token`
    // command can load the same config.
    let secret = hex::encode(rand::random::<[u8; 32]>());
    let secret_file = write("jwt-secret", &secret)?;
    let password_file = write("iam-password", &defaults.iam_password)?;

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
hs256_secret_file = "{secret_file}"
allow_hs256_admin = true          # the demo's admin token is HS256 too

[iam]
endpoint = "{sim}"

[iam.credentials.default]
domain = "{domain}"
user = "{user}"
password_file = "{password_file}"

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
        secret_file = secret_file.display(),
        password_file = password_file.display(),
    );
    let config_file = write("gateway.toml", &toml)?;
    // Overrides apply to the demo's config as to any: say so, since one left
    // set in the shell (an endpoint, say) would quietly change the demo.
    let mut overrides: Vec<String> = std::env::vars_os()
        .filter_map(|(k, _)| k.into_string().ok())
        .filter(|k| k.starts_with(ENV_PREFIX))
        .collect();
    overrides.sort();
    let config = Config::load(&config_file, &ProcessEnv).map_err(|e| e.to_string())?;
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
    let phones: Vec<String> = (0..3).map(|i| phone_id(DEMO_PROJECT, i)).collect();
    let big: Vec<String> = (0..10_000).map(|i| phone_id(DEMO_PROJECT, i)).collect();
    let big_file = dir.join("stop-10000.json");
    std::fs::write(
        &big_file,
        serde_json::json!({ "phone_ids": big }).to_string(),
    )
    .map_err(|e| format!("cannot write {}: {e}", big_file.display()))?;

    if !overrides.is_empty() {
        println!(
            "\nNote: these {ENV_PREFIX} overrides in the environment apply to the demo's config too: {}",
            overrides.join(", ")
        );
    }
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

Admin: list tenants, this replica's status, metrics:

curl -s http://{admin_addr}/admin/v1/tenants -H 'Authorization: Bearer {admin_jwt}'
curl -s http://{admin_addr}/admin/v1/status -H 'Authorization: Bearer {admin_jwt}'
curl -s http://{admin_addr}/metrics

Mint a token for any tenant (e.g. one added with PUT /admin/v1/tenants/TENANT),
or an admin token, with the demo's config ({config}):

{exe} token --tenant TENANT --config {config}
{exe} token --admin --subject you --config {config}

Press Ctrl-C to stop.
"#,
        sim = sim.url(),
        lat = args.sim_latency_ms,
        p0 = phones[0],
        p1 = phones[1],
        p2 = phones[2],
        big = big_file.display(),
        config = config_file.display(),
        exe = std::env::current_exe()
            .map(|p| p.display().to_string())
            .unwrap_or_else(|_| "cph-gateway".into()),
    );

    shutdown_signal().await;
    running.shutdown().await.map_err(|e| e.to_string())?;
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Writes a file readable by its owner only (the demo's secrets and config).
fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}
