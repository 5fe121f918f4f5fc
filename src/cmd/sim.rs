//! `sim`: the CPH + IAM simulator on its own.

use clap::Args;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use cph_gateway::{shutdown_signal, telemetry};
use cph_sim::{AkSkCredential, DEFAULT_AK, DEFAULT_SK, SimOptions, SimTls};

#[derive(Args)]
pub struct SimArgs {
    /// Address to listen on, e.g. 127.0.0.1:9000.
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// IAM domain name the simulator accepts.
    #[arg(long, default_value = "sim-domain")]
    pub iam_domain: String,
    /// IAM user name the simulator accepts.
    #[arg(long, default_value = "sim-user")]
    pub iam_user: String,
    /// IAM password the simulator accepts.
    #[arg(long, default_value = "sim-password")]
    pub iam_password: String,
    /// Lifetime of issued IAM tokens, in seconds.
    #[arg(long, default_value_t = 86_400)]
    pub token_ttl_s: u64,
    /// Seeded phones per project.
    #[arg(long, default_value_t = 20_000)]
    pub phones_per_project: u32,
    /// Largest batch-stop the simulator accepts (400 above it).
    #[arg(long, default_value_t = 500)]
    pub max_batch_size: usize,
    /// How long a stop job runs before it succeeds, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pub job_duration_ms: u64,
    /// Access key of the AK/SK credential the simulator accepts.
    #[arg(long, default_value = DEFAULT_AK)]
    pub access_key: String,
    /// Secret key of that credential (a development value: this is a simulator).
    #[arg(long, default_value = DEFAULT_SK)]
    pub secret_key: String,
    /// Makes the credential temporary: signed calls must carry this `X-Security-Token`.
    #[arg(long)]
    pub security_token: Option<String>,
    /// Serve HTTPS with this certificate (PEM, leaf first); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// Private key of --tls-cert (PEM).
    #[arg(long, requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    #[command(flatten)]
    pub faults: cph_sim::Faults,
}

/// The certificate and key files, read off the async threads.
async fn tls(cert: Option<PathBuf>, key: Option<PathBuf>) -> Result<Option<SimTls>, String> {
    let (Some(cert), Some(key)) = (cert, key) else {
        return Ok(None);
    };
    let read = |path: PathBuf| async move {
        tokio::fs::read(&path)
            .await
            .map_err(|e| format!("cannot read {}: {e}", path.display()))
    };
    Ok(Some(SimTls {
        cert_pem: read(cert).await?,
        key_pem: read(key).await?,
    }))
}

pub async fn sim(args: SimArgs) -> Result<(), String> {
    let _logs = telemetry::init_logging();
    let credential = match args.security_token {
        Some(token) => AkSkCredential::temporary(args.access_key, args.secret_key, token),
        None => AkSkCredential::new(args.access_key, args.secret_key),
    };
    let opts = SimOptions {
        listen: args.listen,
        iam_domain: args.iam_domain,
        iam_user: args.iam_user,
        iam_password: args.iam_password,
        token_ttl: Duration::from_secs(args.token_ttl_s),
        phones_per_project: args.phones_per_project,
        max_batch_size: args.max_batch_size,
        job_duration: Duration::from_millis(args.job_duration_ms),
        aksk: vec![credential],
        tls: tls(args.tls_cert, args.tls_key).await?,
        faults: args.faults,
    };
    cph_sim::run(opts, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}
