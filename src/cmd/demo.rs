//! `demo`: the simulator and the gateway wired together on loopback.

use clap::Args;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use cph_gateway::config::Config;
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
    let phones: Vec<String> = (0..3).map(|i| phone_id(DEMO_PROJECT, i)).collect();
    let big: Vec<String> = (0..10_000).map(|i| phone_id(DEMO_PROJECT, i)).collect();
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
