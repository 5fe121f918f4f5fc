//! Fuzzes JWT verification: `Authenticator::verify` / `verify_header` of an
//! authenticator with an HS256 secret, built once.
//!
//! The first byte picks what the rest of the input is:
//! - 0: a compact token as the caller sent it (mostly garbage: parsing);
//! - 1: the claims (any bytes), signed with the right key, so that every
//!   claim check (exp, nbf, iss, aud, sub, tenant, roles) is reached;
//! - 2: a header and claims split at the first 0xff byte, signed with the
//!   right key (algorithm confusion, `kid`, odd headers);
//! - 3: a whole `Authorization` header value;
//! - 4: structured claims: `exp` and `nbf` from the first 16 bytes (two
//!   little-endian u64), the tenant from the rest, the other claims valid.
//!
//! Signed tokens are verified twice: the second call goes through the cache
//! of verified tokens.

#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use cph_gateway::auth::Authenticator;
use cph_gateway::config::Config;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;

const SECRET: &str = "fuzz-secret-0123456789abcdef0123456789";

struct Harness {
    auth: Authenticator,
    runtime: tokio::runtime::Runtime,
    key: EncodingKey,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let env: BTreeMap<String, String> =
            [("FUZZ_JWT_SECRET".to_owned(), SECRET.to_owned())].into();
        let config = Config::from_toml(
            r#"
[auth]
issuer = "https://idp.fuzz"
audience = "cph-gateway"
hs256_secret_env = "FUZZ_JWT_SECRET"
leeway_s = 30
"#,
            &env,
        )
        .expect("fuzz config is valid");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let auth = Authenticator::new(config.auth, reqwest::Client::new()).expect("authenticator");
        Harness {
            auth,
            runtime,
            key: EncodingKey::from_secret(SECRET.as_bytes()),
        }
    })
}

/// `header.claims.signature` with a valid HS256 signature over any bytes.
fn signed(h: &Harness, header: &[u8], claims: &[u8]) -> String {
    let message = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = jsonwebtoken::crypto::sign(message.as_bytes(), &h.key, Algorithm::HS256)
        .expect("HMAC signs anything");
    format!("{message}.{signature}")
}

fn verify_twice(h: &Harness, token: &str) {
    h.runtime.block_on(async {
        for _ in 0..2 {
            if let Ok(caller) = h.auth.verify(token).await {
                assert!(!caller.subject.is_empty(), "a caller without a subject");
            }
        }
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let h = harness();
    match mode % 5 {
        0 => {
            let token = String::from_utf8_lossy(rest);
            h.runtime.block_on(async {
                let _ = h.auth.verify(&token).await;
            });
        }
        1 => {
            let token = signed(h, br#"{"alg":"HS256","typ":"JWT"}"#, rest);
            verify_twice(h, &token);
        }
        2 => {
            let (header, claims) = match rest.iter().position(|&b| b == 0xff) {
                Some(i) => (&rest[..i], &rest[i + 1..]),
                None => (rest, &b"{}"[..]),
            };
            let token = signed(h, header, claims);
            verify_twice(h, &token);
        }
        3 => {
            h.runtime.block_on(async {
                let _ = h.auth.verify_header(Some(rest)).await;
            });
        }
        _ => {
            let number = |i: usize| {
                let mut le = [0u8; 8];
                for (to, from) in le.iter_mut().zip(rest.iter().skip(8 * i)) {
                    *to = *from;
                }
                u64::from_le_bytes(le)
            };
            let claims = serde_json::json!({
                "iss": "https://idp.fuzz",
                "aud": "cph-gateway",
                "sub": "fuzz",
                "exp": number(0),
                "nbf": number(1),
                "tenant": String::from_utf8_lossy(rest.get(16..).unwrap_or_default()),
            });
            let token = signed(
                h,
                br#"{"alg":"HS256","typ":"JWT"}"#,
                claims.to_string().as_bytes(),
            );
            verify_twice(h, &token);
        }
    }
});
