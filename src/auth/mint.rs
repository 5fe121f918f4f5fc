//! Development tokens: the `token` command, the demo and tests.

use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde_json::{Map, Value};

use crate::config::AuthConfig;

/// Mints a development HS256 token (the `token` command, the demo and tests).
pub fn mint_hs256(
    secret: &[u8],
    cfg: &AuthConfig,
    subject: &str,
    tenant: Option<&str>,
    roles: &[&str],
    ttl: Duration,
) -> Result<String, jsonwebtoken::errors::Error> {
    let now = jsonwebtoken::get_current_timestamp();
    let mut claims = Map::new();
    claims.insert("iss".into(), cfg.issuer.clone().into());
    claims.insert("aud".into(), cfg.audience.clone().into());
    claims.insert("sub".into(), subject.into());
    claims.insert("iat".into(), now.into());
    claims.insert("nbf".into(), now.into());
    claims.insert("exp".into(), (now + ttl.as_secs()).into());
    if let Some(t) = tenant {
        claims.insert(cfg.tenant_claim.clone(), t.into());
    }
    claims.insert(
        cfg.roles_claim.clone(),
        roles
            .iter()
            .map(|r| Value::from(*r))
            .collect::<Vec<_>>()
            .into(),
    );
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
}
