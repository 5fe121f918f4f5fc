//! `Idempotency-Key` (IETF draft-ietf-httpapi-idempotency-key-header): the
//! key as a validated value, and the fingerprint of the request it may only
//! be reused for.

use sha2::{Digest, Sha256};

use super::plan::Plan;
use crate::domain::{ApiError, Code, ProjectId};

/// A key of 1-255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// The header's value; `None` when absent, `CPHGW.0006` when malformed.
    pub fn from_header(value: Option<&[u8]>) -> Result<Option<Self>, ApiError> {
        let Some(v) = value else {
            return Ok(None);
        };
        let ok = (1..=255).contains(&v.len()) && v.iter().all(|b| (0x21..=0x7e).contains(b));
        if !ok {
            return Err(ApiError::new(
                Code::InvalidIdempotencyKey,
                "Idempotency-Key must be 1-255 visible ASCII characters",
            ));
        }
        // Visible ASCII is UTF-8.
        Ok(Some(Self(String::from_utf8_lossy(v).into_owned())))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// What makes two requests "the same request" for a key: the project and
/// the distinct phone ids in order.
pub fn fingerprint(project: &ProjectId, plan: &Plan) -> String {
    let mut h = Sha256::new();
    h.update(project.as_str().as_bytes());
    for id in plan.ids() {
        h.update(b"\n");
        h.update(id.as_str().as_bytes());
    }
    hex::encode(h.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        assert_eq!(IdempotencyKey::from_header(None).unwrap(), None);
        assert!(
            IdempotencyKey::from_header(Some(b"abc-123_~!"))
                .unwrap()
                .is_some()
        );
        assert!(
            IdempotencyKey::from_header(Some(&[b'k'; 255]))
                .unwrap()
                .is_some()
        );
        for bad in [&b""[..], b"a b", &[b'k'; 256], b"\x7f", "é".as_bytes()] {
            let err = IdempotencyKey::from_header(Some(bad)).unwrap_err();
            assert_eq!(err.code, Code::InvalidIdempotencyKey);
        }
    }

    #[test]
    fn fingerprints_follow_project_and_ids_in_order() {
        let p = ProjectId::parse("0a1b2c3d4e5f60718293a4b5c6d7e8f9").unwrap();
        let q = ProjectId::parse("1a1b2c3d4e5f60718293a4b5c6d7e8f9").unwrap();
        let plan =
            |ids: &[&str]| Plan::new(ids.iter().map(|s| (*s).into()).collect(), 100).unwrap();
        let ab = fingerprint(&p, &plan(&["a", "b"]));
        assert_eq!(ab, fingerprint(&p, &plan(&["a", "b", "a"])));
        assert_ne!(ab, fingerprint(&p, &plan(&["b", "a"])));
        assert_ne!(ab, fingerprint(&q, &plan(&["a", "b"])));
        assert_ne!(ab, fingerprint(&p, &plan(&["ab"])));
    }
}
