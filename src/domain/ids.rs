//! Identifier newtypes. Each is made only by parsing, so a value of the type
//! is a validated fact and nothing downstream re-checks it.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

/// The characters allowed in phone ids, job ids and tenant names, as a
/// table: a 10,000-id request checks some 300,000 of them.
const ID_CHARS: [bool; 256] = {
    let mut table = [false; 256];
    let mut i = 0;
    while i < 256 {
        let b = i as u8;
        table[i] = b.is_ascii_alphanumeric() || b == b'_' || b == b'-';
        i += 1;
    }
    table
};

/// `true` for the characters allowed in phone ids, job ids and tenant names.
fn is_id_char(b: u8) -> bool {
    ID_CHARS[b as usize]
}

/// Checks the contract's id rule: 1-64 characters of `[A-Za-z0-9_-]`.
pub fn is_valid_id(s: &str) -> bool {
    (1..=64).contains(&s.len()) && s.bytes().all(is_id_char)
}

/// A phone id as callers and CPH spell it: 1-64 characters of `[A-Za-z0-9_-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct PhoneId(Arc<str>);

impl PhoneId {
    /// `None` unless `s` follows the id rule.
    pub fn parse(s: &str) -> Option<Self> {
        is_valid_id(s).then(|| Self(s.into()))
    }
    /// Takes a shared string that follows the id rule without copying it.
    pub fn parse_owned(s: Arc<str>) -> Result<Self, Arc<str>> {
        if is_valid_id(&s) { Ok(Self(s)) } else { Err(s) }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The id as a shared string: the stop's record keeps its phones
    /// without a copy of each id.
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl std::ops::Deref for PhoneId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::borrow::Borrow<str> for PhoneId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for PhoneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A CPH job id. From callers (the job query path) it follows the id rule;
/// from CPH it is any non-empty string of at most 128 visible characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct JobId(Arc<str>);

impl JobId {
    /// A job id named by a caller: the id rule.
    pub fn parse(s: &str) -> Option<Self> {
        is_valid_id(s).then(|| Self(s.into()))
    }
    /// A job id named by CPH: non-empty, at most 128 characters, no
    /// control characters. An empty `job_id` is no job.
    pub fn from_upstream(s: Arc<str>) -> Option<Self> {
        let ok = !s.is_empty() && s.len() <= 128 && !s.chars().any(char::is_control);
        ok.then_some(Self(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
    /// The id as a shared string (the stop's record keeps it uncopied).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A Huawei Cloud project id: 32 hexadecimal characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct ProjectId(Arc<str>);

impl ProjectId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if s.len() == 32 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
            Ok(Self(s.into()))
        } else {
            Err(format!(
                "{s:?} is not a project id (32 hexadecimal characters)"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's shared string (no copy).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

/// A Huawei Cloud region such as `cn-east-3` or `ap-southeast-1`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct Region(Arc<str>);

impl Region {
    pub fn parse(s: &str) -> Result<Self, String> {
        let parts: Vec<&str> = s.split('-').collect();
        let well_formed = s.len() <= 32
            && parts.len() >= 3
            && parts[..parts.len() - 1]
                .iter()
                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_lowercase()))
            && parts[parts.len() - 1].bytes().all(|b| b.is_ascii_digit())
            && !parts[parts.len() - 1].is_empty();
        if well_formed {
            Ok(Self(s.into()))
        } else {
            Err(format!(
                "{s:?} is not a region (expected the form of cn-east-3 or ap-southeast-1)"
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// An endpoint template with `{region}` replaced by this region, without
    /// a trailing `/`.
    pub fn fill(&self, template: &str) -> String {
        template
            .replace("{region}", &self.0)
            .trim_end_matches('/')
            .to_owned()
    }
}

/// A tenant name as it appears in the caller's JWT and in the tenants file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct TenantId(Arc<str>);

impl TenantId {
    pub fn parse(s: &str) -> Result<Self, String> {
        if is_valid_id(s) {
            Ok(Self(s.into()))
        } else {
            Err(format!(
                "{:?} is not a tenant name (1-64 characters of A-Z a-z 0-9 _ -)",
                truncate(s, 80)
            ))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's shared string (no copy).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for ProjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for ProjectId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

impl<'de> Deserialize<'de> for Region {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The request id: the caller's `X-Request-Id` when it is 1-128 visible ASCII
/// characters, else one the gateway makes (32 hex characters).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(Arc<str>);

impl RequestId {
    pub fn from_header(value: Option<&[u8]>) -> Self {
        match value {
            Some(v)
                if (1..=128).contains(&v.len()) && v.iter().all(|b| (0x21..=0x7e).contains(b)) =>
            {
                // Visible ASCII is valid UTF-8.
                Self(String::from_utf8_lossy(v).into())
            }
            _ => Self::generate(),
        }
    }
    /// 32 hex digits: the time in milliseconds since 1970 (12 digits),
    /// then 80 random bits. Ids made later sort later (as UUIDv7 does), so a
    /// store's records arrive at the end of its index on request ids rather
    /// than anywhere in it; the random part keeps them unguessable.
    pub fn generate() -> Self {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let mut bytes = rand::random::<[u8; 16]>();
        bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
        Self(hex::encode(bytes).into())
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The id's shared string (no copy).
    pub fn shared(&self) -> Arc<str> {
        self.0.clone()
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Shortens untrusted text before it is echoed in an error message.
pub fn truncate(s: &str, max: usize) -> &str {
    // No more bytes than `max`, so no more characters: nothing to count.
    if s.len() <= max {
        return s;
    }
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_counts_characters_not_bytes() {
        assert_eq!(truncate("abc", 3), "abc");
        assert_eq!(truncate("abcd", 3), "abc");
        assert_eq!(truncate("ééé", 2), "éé");
        assert_eq!(truncate("éé", 3), "éé");
        assert_eq!(truncate("", 0), "");
        assert_eq!(truncate("a", 0), "");
    }

    #[test]
    fn ids() {
        assert!(is_valid_id("a"));
        assert!(is_valid_id(&"x".repeat(64)));
        assert!(!is_valid_id(&"x".repeat(65)));
        assert!(!is_valid_id(""));
        assert!(!is_valid_id("a b"));
        assert!(!is_valid_id("é"));
    }

    #[test]
    fn regions() {
        for ok in ["cn-east-3", "ap-southeast-1", "cn-north-4", "la-south-2"] {
            assert!(Region::parse(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "cn",
            "cn-east",
            "CN-east-3",
            "cn--3",
            "cn-east-x",
            "cn-east-3 ",
        ] {
            assert!(Region::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_ids() {
        assert_eq!(RequestId::from_header(Some(b"abc-123")).as_str(), "abc-123");
        assert_eq!(
            RequestId::from_header(Some(b"has space")).as_str().len(),
            32
        );
        assert_eq!(
            RequestId::from_header(Some(&[b'a'; 129])).as_str().len(),
            32
        );
        assert_eq!(RequestId::from_header(None).as_str().len(), 32);
    }

    #[test]
    fn made_request_ids_sort_by_time_and_differ() {
        let a = RequestId::generate();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = RequestId::generate();
        let c = RequestId::generate();
        for id in [&a, &b, &c] {
            assert!(
                id.as_str()
                    .bytes()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
            );
        }
        assert!(
            a.as_str() < b.as_str(),
            "{} then {}",
            a.as_str(),
            b.as_str()
        );
        assert_ne!(b.as_str(), c.as_str());
        // The first 12 digits are the time in milliseconds.
        let ms = u64::from_str_radix(&b.as_str()[..12], 16).unwrap();
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as u64;
        assert!(now.abs_diff(ms) < 60_000, "{ms} against {now}");
    }

    #[test]
    fn phone_and_job_ids() {
        assert!(PhoneId::parse("abc-1_2").is_some());
        assert!(PhoneId::parse("a b").is_none());
        assert!(PhoneId::parse_owned("".into()).is_err());
        assert!(JobId::parse("job-1").is_some());
        assert!(JobId::parse("job/1").is_none());
        assert!(JobId::from_upstream("".into()).is_none());
        assert!(JobId::from_upstream("x".repeat(129).into()).is_none());
        assert!(JobId::from_upstream("a:b.c".into()).is_some());
    }

    #[test]
    fn project_ids() {
        assert!(ProjectId::parse("0a1b2c3d4e5f60718293a4b5c6d7e8f9").is_ok());
        assert!(ProjectId::parse("0a1b2c3d").is_err());
        assert!(ProjectId::parse("0a1b2c3d4e5f60718293a4b5c6d7e8fz").is_err());
    }
}
