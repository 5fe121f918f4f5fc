//! Strings read from JSON straight into one shared allocation: serde's own
//! `Arc<str>` (and `Cow<str>`, unless borrowed) first makes a `String`, so
//! each string would cost two allocations and a copy.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{Deserialize, Deserializer, Error, Visitor};

/// A JSON string as an `Arc<str>`, allocated once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SharedStr(pub Arc<str>);

impl<'de> Deserialize<'de> for SharedStr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shared;
        impl Visitor<'_> for Shared {
            type Value = SharedStr;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: Error>(self, s: &str) -> Result<SharedStr, E> {
                Ok(SharedStr(Arc::from(s)))
            }
        }
        d.deserialize_str(Shared)
    }
}

/// For `#[serde(borrow, deserialize_with)]` on an `Option<Cow<str>>` field:
/// borrowed from the input unless the string has escapes (serde's own
/// `Option<Cow<str>>` always copies).
pub fn cow_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Cow<'de, str>>, D::Error> {
    struct CowStr;
    impl<'de> Visitor<'de> for CowStr {
        type Value = Option<Cow<'de, str>>;
        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a string or null")
        }
        fn visit_borrowed_str<E: Error>(self, s: &'de str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Borrowed(s)))
        }
        fn visit_str<E: Error>(self, s: &str) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(s.to_owned())))
        }
        fn visit_string<E: Error>(self, s: String) -> Result<Self::Value, E> {
            Ok(Some(Cow::Owned(s)))
        }
        fn visit_none<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_str(self)
        }
    }
    d.deserialize_option(CowStr)
}

/// `text` as a shared string: the one in `last` again if it says the same,
/// else a new one, kept in `last` for the next call. Entries of one answer
/// mostly carry the same error texts; this makes them share one string.
pub fn share_last(last: &mut Option<Arc<str>>, text: &str) -> Arc<str> {
    match last {
        Some(l) if **l == *text => l.clone(),
        _ => last.insert(Arc::from(text)).clone(),
    }
}

/// For `#[serde(deserialize_with)]` on an `Option<Arc<str>>` field.
pub fn shared_opt<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Arc<str>>, D::Error> {
    Ok(Option::<SharedStr>::deserialize(d)?.map(|s| s.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_plain_and_escaped_strings_and_nulls() {
        let s: SharedStr = serde_json::from_str(r#""abc""#).unwrap();
        assert_eq!(&*s.0, "abc");
        let s: SharedStr = serde_json::from_str(r#""a\"b\u00e9""#).unwrap();
        assert_eq!(&*s.0, "a\"bé");
        let s: SharedStr = serde_json::from_reader(&br#""from a reader""#[..]).unwrap();
        assert_eq!(&*s.0, "from a reader");
        assert!(serde_json::from_str::<SharedStr>("1").is_err());

        #[derive(serde::Deserialize)]
        struct Field {
            #[serde(default, deserialize_with = "shared_opt")]
            v: Option<Arc<str>>,
        }
        let f: Field = serde_json::from_str(r#"{"v":"x"}"#).unwrap();
        assert_eq!(f.v.as_deref(), Some("x"));
        let f: Field = serde_json::from_str(r#"{"v":null}"#).unwrap();
        assert_eq!(f.v, None);
        let f: Field = serde_json::from_str("{}").unwrap();
        assert_eq!(f.v, None);
    }
}
