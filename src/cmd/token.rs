//! `token`: a development JWT.

use std::path::PathBuf;

use clap::Args;
use std::time::Duration;

use cph_gateway::auth;
use cph_gateway::config::{Config, ProcessEnv};
use secrecy::ExposeSecret;

#[derive(Args)]
pub struct TokenArgs {
    /// Tenant claim of the token.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Add the admin role (auth.admin_role).
    #[arg(long)]
    pub admin: bool,
    /// Subject (`sub`) of the token.
    #[arg(long, default_value = "dev")]
    pub subject: String,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    pub ttl_s: u64,
    /// Path of the gateway's TOML config; its HS256 secret signs the token.
    #[arg(long, short)]
    pub config: PathBuf,
}

pub fn token(args: TokenArgs) -> Result<(), String> {
    let config = Config::load(&args.config, &ProcessEnv).map_err(|e| e.to_string())?;
    let secret = config
        .auth
        .hs256_secret
        .as_ref()
        .ok_or("the config has no auth.hs256_secret_env (or hs256_secret_file): `token` mints HS256 tokens only")?
        .current();
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
