//! Ids: 32-hex project, phone, job and request ids, and the seeded phones.

use std::fmt;

use serde::{Serialize, Serializer};

/// The `index`-th seeded phone of a project (`0 <= index < phones_per_project`):
/// the first 8 characters of the project id followed by the index as 24 hex
/// digits, 32 lowercase hex characters in all for a well-formed project id.
pub fn phone_id(project_id: &str, index: u32) -> String {
    format!("{project_id:0<8.8}{index:024x}")
}

/// Parses a 32-lowercase-hex id (project, phone, job or request).
pub(crate) fn parse_hex32(s: &str) -> Option<u128> {
    if s.len() != 32 {
        return None;
    }
    s.bytes().try_fold(0u128, |acc, b| {
        let digit = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            _ => return None,
        };
        Some(acc << 4 | u128::from(digit))
    })
}

/// CPH's answer to a malformed phone id.
pub(crate) const INVALID_PHONE: (&str, &str) = ("CPS.0004", "invalid phone id");
/// CPH's answer to a well-formed id that is not a phone of the project.
pub(crate) const PHONE_NOT_FOUND: (&str, &str) = ("CPS.0005", "phone not found");

/// Index of `phone` among the seeded phones of `project` (a validated
/// 32-hex id), decided from the id alone: see [`phone_id`].
pub(crate) fn seeded_index(
    project: &str,
    phone: &str,
    phones: u32,
) -> Result<u32, (&'static str, &'static str)> {
    let value = parse_hex32(phone).ok_or(INVALID_PHONE)?;
    // The low 96 bits hold the index, the high 32 bits the project prefix.
    let index = u32::try_from(value & ((1 << 96) - 1)).ok();
    match index {
        Some(i) if i < phones && phone.get(..8) == project.get(..8) => Ok(i),
        _ => Err(PHONE_NOT_FOUND),
    }
}

/// A 128-bit id rendered as 32 lowercase hex digits (request and job ids).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct Hex128(pub u128);

impl Hex128 {
    pub(crate) fn random() -> Self {
        Self(rand::random())
    }

    /// The 32 hex digits (a hot path: about twice as fast as `format!`).
    fn digits(self) -> [u8; 32] {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut out = [0; 32];
        for (i, digit) in out.iter_mut().enumerate() {
            *digit = HEX[(self.0 >> (124 - 4 * i)) as usize & 0xf];
        }
        out
    }
}

impl fmt::Display for Hex128 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let digits = self.digits();
        f.write_str(std::str::from_utf8(&digits).map_err(|_| fmt::Error)?)
    }
}

impl Serialize for Hex128 {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let digits = self.digits();
        s.serialize_str(std::str::from_utf8(&digits).map_err(serde::ser::Error::custom)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const P: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn phone_ids_are_32_hex() {
        assert_eq!(phone_id(P, 0), "01234567000000000000000000000000");
        assert_eq!(phone_id(P, 255), "012345670000000000000000000000ff");
        assert_eq!(phone_id("ab", 1).len(), 32);
    }

    #[test]
    fn seeded_phones_are_recognised_from_their_id() {
        assert_eq!(seeded_index(P, &phone_id(P, 0), 10), Ok(0));
        assert_eq!(seeded_index(P, &phone_id(P, 9), 10), Ok(9));
        assert_eq!(seeded_index(P, &phone_id(P, 10), 10), Err(PHONE_NOT_FOUND));
        let other = phone_id("fedcba9876543210fedcba9876543210", 1);
        assert_eq!(seeded_index(P, &other, 10), Err(PHONE_NOT_FOUND));
        for bad in [
            "0123456710000000000000000000001",
            "0123456700000000000000000000000A",
            "+1234567000000000000000000000001",
        ] {
            assert_eq!(seeded_index(P, bad, 10), Err(INVALID_PHONE), "{bad}");
        }
        assert_eq!(
            seeded_index(P, "01234567100000000000000000000001", 10),
            Err(PHONE_NOT_FOUND)
        );
    }

    #[test]
    fn hex_ids_round_trip() {
        let id = 0x0123_4567_89ab_cdef_0011_2233_4455_6677;
        let text = Hex128(id).to_string();
        assert_eq!(text, format!("{id:032x}"));
        assert_eq!(parse_hex32(&text), Some(id));
        assert_eq!(
            serde_json::to_string(&Hex128(1)).unwrap(),
            format!("\"{:032x}\"", 1)
        );
    }
}
