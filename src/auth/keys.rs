//! Verification keys: each with the one algorithm it is used with, from a
//! PEM public key, a JWK or an HS256 secret. Symmetric keys never come from a
//! URL. Every key has an id (a fingerprint of its material), so that a
//! verified token can be traced to the key that verified it, and dropped
//! when that key is gone.

use std::str::FromStr;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve};
use jsonwebtoken::{Algorithm, DecodingKey};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};

use crate::config::Secret;

/// A verification key and the one algorithm it is used with.
#[derive(Clone)]
pub struct Key {
    pub alg: Algorithm,
    pub key: DecodingKey,
    /// A fingerprint of the key material (and algorithm).
    pub id: u64,
}

impl Key {
    /// Whether the key is a public key (RS/PS/ES/EdDSA), not a shared secret.
    pub fn is_asymmetric(&self) -> bool {
        is_asymmetric(self.alg)
    }
}

pub fn is_asymmetric(alg: Algorithm) -> bool {
    !matches!(alg, Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512)
}

fn fingerprint(kind: &str, material: &[u8]) -> u64 {
    let digest = Sha256::new()
        .chain_update(kind.as_bytes())
        .chain_update([0])
        .chain_update(material)
        .finalize();
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(first)
}

/// The algorithm a PEM public key is used with: RS256 for RSA, ES256 for EC.
pub fn pem_key(pem: &[u8]) -> Option<Key> {
    let id = fingerprint("pem", pem);
    if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
        return Some(Key {
            alg: Algorithm::RS256,
            key,
            id,
        });
    }
    DecodingKey::from_ec_pem(pem).ok().map(|key| Key {
        alg: Algorithm::ES256,
        key,
        id,
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
    if !is_asymmetric(alg) {
        return None;
    }
    let material = serde_json::to_vec(jwk).ok()?;
    let id = fingerprint(&format!("jwk:{alg:?}"), &material);
    DecodingKey::from_jwk(jwk)
        .ok()
        .map(|key| Key { alg, key, id })
}

/// The HS256 keys of the secrets as they are now (a secret read from a file
/// follows the file), without duplicates.
/// The key id of an HS256 secret.
pub fn hs256_id(secret: &[u8]) -> u64 {
    fingerprint("hs256", secret)
}

pub fn hs256_keys<'a>(secrets: impl IntoIterator<Item = &'a Secret>) -> Vec<Key> {
    let mut keys: Vec<Key> = Vec::with_capacity(2);
    for secret in secrets {
        let value = secret.current();
        let bytes = value.expose_secret().as_bytes();
        let id = hs256_id(bytes);
        if keys.iter().all(|k| k.id != id) {
            keys.push(Key {
                alg: Algorithm::HS256,
                key: DecodingKey::from_secret(bytes),
                id,
            });
        }
    }
    keys
}
