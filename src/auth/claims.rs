//! The claims of a token whose signature verified: read by the gateway
//! itself, refusing any JSON object with a key that appears twice (the last
//! value must not silently win), then checked: `iss` one string, `sub`,
//! `exp`, an `iat` that is not in the future, a lifetime within
//! `auth.max_token_lifetime_s`; tenant and roles read.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Value};

use super::{AuthError, Caller};
use crate::config::AuthConfig;
use crate::domain::TenantId;

const DUPLICATE: &str = "duplicate key";

/// A JSON value whose objects, at any depth, have distinct keys.
struct Unique(Value);

impl<'de> serde::Deserialize<'de> for Unique {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueVisitor).map(Unique)
    }
}

struct UniqueVisitor;

impl<'de> Visitor<'de> for UniqueVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Unique(v)) = seq.next_element()? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(de::Error::custom(DUPLICATE));
            }
            let Unique(value) = map.next_value()?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }
}

/// The claims object of a compact JWT, every key distinct.
pub fn parse(token: &str) -> Result<Map<String, Value>, AuthError> {
    let payload = token.split('.').nth(1).ok_or(AuthError::Malformed)?;
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed)?;
    match serde_json::from_slice::<Unique>(&bytes) {
        Ok(Unique(Value::Object(claims))) => Ok(claims),
        Ok(_) => Err(AuthError::Malformed),
        Err(e) if e.to_string().starts_with(DUPLICATE) => Err(AuthError::DuplicateClaim),
        Err(_) => Err(AuthError::Malformed),
    }
}

/// A numeric date claim (seconds; a fraction is cut).
fn numeric_date(v: &Value) -> Option<u64> {
    v.as_u64()
        .or_else(|| v.as_f64().filter(|f| *f >= 0.0).map(|f| f as u64))
}

/// The caller of verified claims, after the checks the library does not do.
pub fn caller(
    cfg: &AuthConfig,
    claims: &Map<String, Value>,
    now: u64,
    asymmetric_key: bool,
) -> Result<Caller, AuthError> {
    // RFC 7519: `iss` is one string (the library also accepts an array
    // that contains the issuer).
    if !claims.get("iss").is_some_and(Value::is_string) {
        return Err(AuthError::Issuer);
    }
    let subject = match claims.get("sub") {
        Some(Value::String(s)) if !s.is_empty() => s.clone(),
        _ => return Err(AuthError::Claims),
    };
    let expires_at = claims
        .get("exp")
        .and_then(Value::as_u64)
        .ok_or(AuthError::Claims)?;
    let issued_at = match claims.get("iat") {
        None => None,
        Some(v) => Some(numeric_date(v).ok_or(AuthError::Claims)?),
    };
    if issued_at.is_some_and(|iat| iat > now.saturating_add(cfg.leeway_s)) {
        return Err(AuthError::IssuedInFuture);
    }
    let lifetime = expires_at.saturating_sub(issued_at.unwrap_or(now));
    if lifetime > cfg.max_token_lifetime_s {
        return Err(AuthError::Lifetime);
    }
    let tenant = claims
        .get(&cfg.tenant_claim)
        .and_then(Value::as_str)
        .and_then(|t| TenantId::parse(t).ok());
    let roles = match claims.get(&cfg.roles_claim) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(|r| r.as_str().map(str::to_owned))
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
        _ => Vec::new(),
    };
    Ok(Caller {
        subject: subject.into(),
        tenant,
        roles,
        expires_at,
        asymmetric_key,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(payload: &str) -> String {
        format!("e30.{}.sig", URL_SAFE_NO_PAD.encode(payload))
    }

    #[test]
    fn a_key_twice_at_any_depth_is_refused() {
        for payload in [
            r#"{"tenant":"a","tenant":"b"}"#,
            r#"{"sub":"x","exp":1,"sub":"y"}"#,
            r#"{"roles":{"r":1,"r":2}}"#,
            r#"{"a":[{"k":1,"k":1}]}"#,
        ] {
            assert_eq!(
                parse(&token(payload)).unwrap_err(),
                AuthError::DuplicateClaim,
                "{payload}"
            );
        }
        let ok = parse(&token(r#"{"tenant":"a","x":{"tenant":"b"},"n":1.5}"#)).unwrap();
        assert_eq!(ok["tenant"], "a");
        for bad in ["[1]", "nope", "{\"a\":1"] {
            assert_eq!(parse(&token(bad)).unwrap_err(), AuthError::Malformed);
        }
        assert_eq!(parse("onlyone").unwrap_err(), AuthError::Malformed);
    }
}
