//! `sim`: the CPH + IAM simulator on its own.

use clap::Args;
use std::net::SocketAddr;
use std::time::Duration;

use cph_gateway::{shutdown_signal, telemetry};
use cph_sim::SimOptions;

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
    #[command(flatten)]
    pub faults: cph_sim::Faults,
}

pub async fn sim(args: SimArgs) -> Result<(), String> {
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
        faults: args.faults,
        ..SimOptions::default()
    };
    cph_sim::run(opts, shutdown_signal())
        .await
        .map_err(|e| e.to_string())
}
