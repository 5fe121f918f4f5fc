//! The first step of a stop: the request's body parsed into a [`Plan`]
//! (distinct, valid phone ids in request order, split into batches).

use std::cell::Cell;
use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::domain::{ApiError, Code, PhoneId, SharedStr, truncate};

/// Distinct, valid phone ids in order of first appearance, split in batches.
#[derive(Debug, Clone)]
pub struct Plan {
    ids: Vec<PhoneId>,
    batch_size: usize,
}

impl Plan {
    pub fn ids(&self) -> &[PhoneId] {
        &self.ids
    }
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
    pub fn batches(&self) -> std::slice::Chunks<'_, PhoneId> {
        self.ids.chunks(self.batch_size)
    }
    /// Batch number `index` (`index < batch_count()`).
    pub fn batch(&self, index: usize) -> &[PhoneId] {
        let start = (index * self.batch_size).min(self.ids.len());
        let end = (start + self.batch_size).min(self.ids.len());
        &self.ids[start..end]
    }
    pub fn batch_count(&self) -> usize {
        self.ids.len().div_ceil(self.batch_size)
    }

    /// Parses a batch-stop body: `{"phone_ids": [..]}`.
    pub fn parse(body: &[u8], max_ids: usize, batch_size: usize) -> Result<Self, ApiError> {
        let ids = parse_phone_ids(body, max_ids)?;
        Self::new(ids, batch_size)
    }

    /// Validates ids and drops duplicates (first appearance wins).
    pub fn new(ids: Vec<Arc<str>>, batch_size: usize) -> Result<Self, ApiError> {
        if ids.is_empty() {
            return Err(ApiError::new(
                Code::InvalidBody,
                "phone_ids must not be empty",
            ));
        }
        // Each id is checked once; up to five bad ones are named.
        let mut valid = Vec::with_capacity(ids.len());
        let mut bad = Vec::new();
        for id in ids {
            match PhoneId::parse_owned(id) {
                Ok(id) => valid.push(id),
                Err(id) if bad.len() < 5 => bad.push(id),
                Err(_) => {}
            }
        }
        if !bad.is_empty() {
            let list = bad
                .iter()
                .map(|id| format!("{:?}", truncate(id, 70)))
                .collect::<Vec<_>>()
                .join(", ");
            return Err(ApiError::new(
                Code::InvalidId,
                format!(
                    "invalid phone ids (each must be 1-64 characters of A-Z a-z 0-9 _ -): {list}"
                ),
            ));
        }
        // Mark first appearances while borrowing, then move: no id is copied.
        let first: Vec<bool> = {
            let mut seen = HashSet::with_capacity_and_hasher(
                valid.len(),
                foldhash::fast::RandomState::default(),
            );
            valid.iter().map(|id| seen.insert(id.as_str())).collect()
        };
        let distinct: Vec<PhoneId> = valid
            .into_iter()
            .zip(first)
            .filter_map(|(id, first)| first.then_some(id))
            .collect();
        Ok(Self {
            ids: distinct,
            batch_size: batch_size.max(1),
        })
    }
}

/// Parses the body with a bound on the number of ids: a list over `max_ids`
/// is refused as soon as the parser meets id number `max_ids + 1`.
pub fn parse_phone_ids(body: &[u8], max_ids: usize) -> Result<Vec<Arc<str>>, ApiError> {
    // The body is checked as UTF-8 once, not string by string.
    let text = std::str::from_utf8(body).map_err(|e| {
        ApiError::new(
            Code::InvalidBody,
            format!(
                "body is not valid JSON: not UTF-8 at byte {}",
                e.valid_up_to()
            ),
        )
    })?;
    let too_many = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = BodySeed {
        max_ids,
        too_many: &too_many,
    }
    .deserialize(&mut de)
    .and_then(|ids| de.end().map(|()| ids));
    match parsed {
        Ok(Some(ids)) => Ok(ids),
        Ok(None) => Err(ApiError::new(Code::InvalidBody, "phone_ids is missing")),
        Err(_) if too_many.get() => Err(ApiError::new(
            Code::TooLarge,
            format!("more than {max_ids} phone ids in one request"),
        )),
        Err(e) => Err(ApiError::new(Code::InvalidBody, body_error(&e))),
    }
}

/// A parse error for the caller, never longer than a line: serde quotes the
/// offending value, which may be the whole body.
fn body_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let full = e.to_string();
    let mut msg = truncate(&full, 200).to_owned();
    if msg.len() < full.len() {
        msg.push_str(&format!("… at line {} column {}", e.line(), e.column()));
    }
    match e.classify() {
        Category::Data => msg,
        Category::Syntax | Category::Eof | Category::Io => format!("body is not valid JSON: {msg}"),
    }
}

struct BodySeed<'a> {
    max_ids: usize,
    too_many: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for BodySeed<'_> {
    type Value = Option<Vec<Arc<str>>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for BodySeed<'_> {
    type Value = Option<Vec<Arc<str>>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a JSON object with phone_ids")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut ids = None;
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            if key == "phone_ids" {
                if ids.is_some() {
                    return Err(de::Error::custom("phone_ids appears twice"));
                }
                ids = Some(map.next_value_seed(IdsSeed {
                    max_ids: self.max_ids,
                    too_many: self.too_many,
                })?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(ids)
    }
}

struct IdsSeed<'a> {
    max_ids: usize,
    too_many: &'a Cell<bool>,
}

impl<'de> DeserializeSeed<'de> for IdsSeed<'_> {
    type Value = Vec<Arc<str>>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for IdsSeed<'_> {
    type Value = Vec<Arc<str>>;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("phone_ids as an array of strings")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut ids = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(self.max_ids));
        while let Some(SharedStr(id)) = seq.next_element()? {
            if ids.len() == self.max_ids {
                self.too_many.set(true);
                return Err(de::Error::custom("too many phone ids"));
            }
            ids.push(id);
        }
        Ok(ids)
    }
}

/// The body of a batch-stop request, exactly as CPH takes it. (For the API
/// document; the parser is [`parse_phone_ids`].)
#[derive(utoipa::ToSchema)]
pub struct StopRequest {
    /// 1 to `limits.max_phone_ids` ids, each 1-64 characters of
    /// `[A-Za-z0-9_-]`; duplicates are stopped once.
    pub phone_ids: Vec<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<PhoneId> {
        v.iter().filter_map(|s| PhoneId::parse(s)).collect()
    }

    #[test]
    fn parse_accepts_the_cph_body() {
        let p = Plan::parse(br#"{"phone_ids":["a","b","a"],"other":1}"#, 10, 100).unwrap();
        assert_eq!(p.ids(), &ids(&["a", "b"])[..]);
    }

    #[test]
    fn parse_errors() {
        let cases: &[(&[u8], Code)] = &[
            (b"", Code::InvalidBody),
            (b"{", Code::InvalidBody),
            (b"[]", Code::InvalidBody),
            (b"{}", Code::InvalidBody),
            (br#"{"phone_ids":"a"}"#, Code::InvalidBody),
            (br#"{"phone_ids":[1]}"#, Code::InvalidBody),
            (br#"{"phone_ids":[]}"#, Code::InvalidBody),
            (br#"{"phone_ids":null}"#, Code::InvalidBody),
            (br#"{"phone_ids":["a"]} x"#, Code::InvalidBody),
            (
                br#"{"phone_ids":["a"],"phone_ids":["b"]}"#,
                Code::InvalidBody,
            ),
            (b"{\"phone_ids\":[\"\xff\"]}", Code::InvalidBody),
            (br#"{"phone_ids":["a b"]}"#, Code::InvalidId),
            (br#"{"phone_ids":[""]}"#, Code::InvalidId),
            (br#"{"phone_ids":["a","b","c","d"]}"#, Code::TooLarge),
        ];
        for (body, code) in cases {
            let err = Plan::parse(body, 3, 100).unwrap_err();
            assert_eq!(err.code, *code, "{}", String::from_utf8_lossy(body));
        }
    }

    #[test]
    fn deep_nesting_is_a_clear_error() {
        let body = format!("{{\"x\":{}{}}}", "[".repeat(10_000), "]".repeat(10_000));
        assert_eq!(
            Plan::parse(body.as_bytes(), 3, 100).unwrap_err().code,
            Code::InvalidBody
        );
    }

    #[test]
    fn bad_ids_are_named() {
        let err = Plan::parse(br#"{"phone_ids":["ok","x y","z/"]}"#, 10, 100).unwrap_err();
        assert!(
            err.msg.contains("\"x y\"") && err.msg.contains("\"z/\""),
            "{}",
            err.msg
        );
        assert!(!err.msg.contains("\"ok\""));
    }
}
