//! Verification keys: each with the one algorithm it is used with, from a
//! PEM public key or a JWK. Symmetric keys never come from a URL.

use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
use jsonwebtoken::{Algorithm, DecodingKey};

/// A verification key and the one algorithm it is used with.
#[derive(Clone)]
pub struct Key {
    pub alg: Algorithm,
    pub key: DecodingKey,
}

/// The algorithm a PEM public key is used with: RS256 for RSA, ES256 for EC.
pub fn pem_key(pem: &[u8]) -> Option<Key> {
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Some(Key {
            alg: Algorithm::RS256,
            key,
        });
    }
    DecodingKey::from_ec_pem(pem).ok().map(|key| Key {
        alg: Algorithm::ES256,
        key,
    })
}

/// The algorithm of a JWK: its `alg` if present, else implied by its type.
pub fn jwk_key(jwk: &jsonwebtoken::jwk::Jwk) -> Option<Key> {
    let alg = match (&jwk.common.key_algorithm, &jwk.algorithm) {
        (Some(a), _) => Algorithm::from_str(&a.to_string()).ok()?,
        (None, AlgorithmParameters::RSA(_)) => Algorithm::RS256,
        (None, AlgorithmParameters::EllipticCurve(p)) => match p.curve {
            EllipticCurve::P256 => Algorithm::ES256,
            EllipticCurve::P384 => Algorithm::ES384,
            _ => return None,
        },
        (None, AlgorithmParameters::OctetKeyPair(_)) => Algorithm::EdDSA,
        // Symmetric keys are never taken from a URL.
        (None, AlgorithmParameters::OctetKey(_)) => return None,
    };
    if matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512) {
        return None;
    }
    DecodingKey::from_jwk(jwk).ok().map(|key| Key { alg, key })
}
