//! Huawei's AK/SK request signature, "SDK-HMAC-SHA256", as the CPH routes
//! verify it (written from CONTRACT.md §2 and checked against vectors made
//! with Huawei's official Python SDK, `tests/vectors/aksk/vectors.json`).
//!
//! Canonical request = `METHOD \n CanonicalURI \n CanonicalQuery \n
//! CanonicalHeaders \n SignedHeaders \n hex(sha256(body))`, StringToSign =
//! `SDK-HMAC-SHA256 \n X-Sdk-Date \n hex(sha256(canonical request))`,
//! signature = `hex(HMAC-SHA256(SK, StringToSign))`.

use hmac::{Hmac, Mac};
use http::HeaderMap;
use sha2::{Digest, Sha256};
use time::format_description::BorrowedFormatItem;
use time::{OffsetDateTime, PrimitiveDateTime};

/// The algorithm name, first word of the `Authorization` header.
pub(crate) const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// Body hash placeholder a signer may send (and sign) in `X-Sdk-Content-Sha256`.
const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// `X-Sdk-Date`: `YYYYMMDDTHHMMSSZ` in UTC.
const SDK_DATE: &[BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year][month][day]T[hour][minute][second]Z");

/// Parses an `X-Sdk-Date` value.
pub(crate) fn parse_sdk_date(s: &str) -> Option<OffsetDateTime> {
    PrimitiveDateTime::parse(s, SDK_DATE)
        .ok()
        .map(PrimitiveDateTime::assume_utc)
}

/// Formats a time as an `X-Sdk-Date` value.
#[cfg(test)]
pub(crate) fn format_sdk_date(t: OffsetDateTime) -> String {
    t.format(SDK_DATE).unwrap_or_default()
}

/// Percent-encodes every byte but the unreserved `A-Za-z0-9-_.~`.
pub(crate) fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-decodes (`+` stays `+`; a `%` not followed by two hex digits is
/// kept as is); invalid UTF-8 becomes U+FFFD.
pub(crate) fn unescape(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |j: usize| bytes.get(j).and_then(|b| char::from(*b).to_digit(16));
        match (bytes[i], hex(i + 1), hex(i + 2)) {
            (b'%', Some(hi), Some(lo)) => {
                out.push((hi * 16 + lo) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The path, decoded, each segment escaped, always ending in `/`.
pub(crate) fn canonical_uri(path: &str) -> String {
    let mut uri = unescape(path)
        .split('/')
        .map(escape)
        .collect::<Vec<_>>()
        .join("/");
    if !uri.ends_with('/') {
        uri.push('/');
    }
    uri
}

/// The query's pairs, decoded: split on `&`, then on the first `=` (a key
/// without `=` has the value `""`); empty keys are left out.
pub(crate) fn query_pairs(query: &str) -> Vec<(String, String)> {
    query
        .split('&')
        .filter_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (!k.is_empty()).then(|| (unescape(k), unescape(v)))
        })
        .collect()
}

/// Pairs sorted by key then value (as strings), `k=v` escaped, joined by `&`.
pub(crate) fn canonical_query(query: Option<&str>) -> String {
    let mut pairs = query.map(query_pairs).unwrap_or_default();
    pairs.sort();
    pairs
        .iter()
        .map(|(k, v)| format!("{}={}", escape(k), escape(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// A received request, as the signature sees it.
pub(crate) struct SignedRequest<'a> {
    pub method: &'a str,
    /// The path as received (still percent-encoded).
    pub path: &'a str,
    /// The query as received, without `?`.
    pub query: Option<&'a str>,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Why a canonical request cannot be built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum CanonicalError {
    /// A signed header is missing or not visible ASCII/UTF-8.
    MissingHeader(String),
}

/// A header's value, trimmed, if present and text.
fn header<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers.get(name)?.to_str().ok().map(str::trim)
}

/// The canonical request for `signed` (lowercase header names, in order).
pub(crate) fn canonical_request(
    req: &SignedRequest<'_>,
    signed: &[&str],
) -> Result<String, CanonicalError> {
    let mut headers = String::new();
    for name in signed {
        let value = header(req.headers, name)
            .ok_or_else(|| CanonicalError::MissingHeader((*name).to_owned()))?;
        headers.push_str(&format!("{name}:{value}\n"));
    }
    let unsigned_payload = signed.contains(&"x-sdk-content-sha256")
        && header(req.headers, "x-sdk-content-sha256") == Some(UNSIGNED_PAYLOAD);
    let payload = if unsigned_payload {
        UNSIGNED_PAYLOAD.to_owned()
    } else {
        hex::encode(Sha256::digest(req.body))
    };
    Ok(format!(
        "{}\n{}\n{}\n{headers}\n{}\n{payload}",
        req.method.to_ascii_uppercase(),
        canonical_uri(req.path),
        canonical_query(req.query),
        signed.join(";"),
    ))
}

/// `SDK-HMAC-SHA256\n{date}\n{hex(sha256(canonical))}`.
pub(crate) fn string_to_sign(date: &str, canonical: &str) -> String {
    format!(
        "{ALGORITHM}\n{date}\n{}",
        hex::encode(Sha256::digest(canonical.as_bytes()))
    )
}

fn mac(sk: &str, string_to_sign: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length: this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(sk.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC takes any key length"));
    mac.update(string_to_sign.as_bytes());
    mac
}

/// `hex(HMAC-SHA256(sk, string_to_sign))`.
#[cfg(test)]
pub(crate) fn signature(sk: &str, string_to_sign: &str) -> String {
    hex::encode(mac(sk, string_to_sign).finalize().into_bytes())
}

/// Whether `signature_hex` is the signature of `string_to_sign` (constant time).
pub(crate) fn signature_matches(sk: &str, string_to_sign: &str, signature_hex: &str) -> bool {
    hex::decode(signature_hex).is_ok_and(|sig| mac(sk, string_to_sign).verify_slice(&sig).is_ok())
}

/// A parsed `Authorization: SDK-HMAC-SHA256 Access=.., SignedHeaders=.., Signature=..`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Authorization<'a> {
    pub access: &'a str,
    pub signed_headers: Vec<&'a str>,
    pub signature: &'a str,
}

/// Parses an `Authorization` value of this scheme; `None` if it is another
/// scheme or malformed.
pub(crate) fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix(ALGORITHM)?.strip_prefix(' ')?;
    let (mut access, mut signed, mut signature) = (None, None, None);
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        let slot = match k {
            "Access" => &mut access,
            "SignedHeaders" => &mut signed,
            "Signature" => &mut signature,
            _ => return None,
        };
        if slot.replace(v).is_some() {
            return None;
        }
    }
    Some(Authorization {
        access: access.filter(|a| !a.is_empty())?,
        signed_headers: signed?.split(';').collect(),
        signature: signature?,
    })
}

/// Signs a request: the `Authorization` value (for tests of the verifier).
#[cfg(test)]
pub(crate) fn authorization(ak: &str, sk: &str, req: &SignedRequest<'_>) -> String {
    let mut signed: Vec<String> = req.headers.keys().map(|k| k.as_str().to_owned()).collect();
    signed.sort();
    signed.dedup();
    let signed: Vec<&str> = signed.iter().map(String::as_str).collect();
    let date = header(req.headers, "x-sdk-date").unwrap_or_default();
    let canonical = canonical_request(req, &signed).unwrap_or_default();
    let sig = signature(sk, &string_to_sign(date, &canonical));
    format!(
        "{ALGORITHM} Access={ak}, SignedHeaders={}, Signature={sig}",
        signed.join(";")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::{HeaderName, HeaderValue};
    use serde_json::Value;

    const VECTORS: &str = include_str!("../../../tests/vectors/aksk/vectors.json");

    /// The parts of a vector's URL: path and raw query.
    fn split_url(url: &str) -> (&str, Option<&str>) {
        let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
        let path_start = after_scheme.find('/').unwrap_or(after_scheme.len());
        let path_query = &after_scheme[path_start..];
        match path_query.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (path_query, None),
        }
    }

    fn headers(v: &Value) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (k, val) in v["headers"].as_object().unwrap() {
            map.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(val.as_str().unwrap()).unwrap(),
            );
        }
        map
    }

    /// Verifies a vector as the simulator would: `Ok` with the canonical
    /// request and string to sign if the signature holds.
    fn verify(v: &Value, body: &[u8]) -> Result<(String, String), String> {
        let (path, query) = split_url(v["url"].as_str().unwrap());
        let headers = headers(v);
        let auth = parse_authorization(v["authorization"].as_str().unwrap()).unwrap();
        assert_eq!(auth.access, v["ak"]);
        let req = SignedRequest {
            method: v["method"].as_str().unwrap(),
            path,
            query,
            headers: &headers,
            body,
        };
        let canonical =
            canonical_request(&req, &auth.signed_headers).map_err(|e| format!("{e:?}"))?;
        let date = headers["x-sdk-date"].to_str().unwrap();
        let sts = string_to_sign(date, &canonical);
        if signature_matches(v["sk"].as_str().unwrap(), &sts, auth.signature) {
            Ok((canonical, sts))
        } else {
            Err("signature mismatch".into())
        }
    }

    #[test]
    fn official_sdk_vectors_verify_and_tampered_bodies_do_not() {
        let all: Value = serde_json::from_str(VECTORS).unwrap();
        let vectors = all["vectors"].as_array().unwrap();
        assert!(vectors.len() >= 10);
        for v in vectors {
            let name = v["name"].as_str().unwrap();
            let body = v["body"].as_str().unwrap().as_bytes();
            let (canonical, sts) = verify(v, body).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!(
                canonical,
                v["canonical_request"].as_str().unwrap(),
                "{name}"
            );
            assert_eq!(sts, v["string_to_sign"].as_str().unwrap(), "{name}");
            // Our own signer gives the same Authorization header.
            let (path, query) = split_url(v["url"].as_str().unwrap());
            let headers = headers(v);
            let req = SignedRequest {
                method: v["method"].as_str().unwrap(),
                path,
                query,
                headers: &headers,
                body,
            };
            let ak = v["ak"].as_str().unwrap();
            let ours = authorization(ak, v["sk"].as_str().unwrap(), &req);
            assert_eq!(ours, v["authorization"].as_str().unwrap(), "{name}");
            if canonical.ends_with(UNSIGNED_PAYLOAD) {
                continue; // the body is not signed
            }
            let mut tampered = body.to_vec();
            match tampered.last_mut() {
                Some(b) => *b ^= 1,
                None => tampered.push(b' '),
            }
            assert!(
                verify(v, &tampered).is_err(),
                "{name}: tampered body verified"
            );
        }
    }

    #[test]
    fn escaping_and_canonical_parts() {
        assert_eq!(escape("aZ09-_.~ /+*é"), "aZ09-_.~%20%2F%2B%2A%C3%A9");
        assert_eq!(unescape("a%20b+%2x%e6%89%8B"), "a b+%2x手");
        assert_eq!(canonical_uri("/v1/p/jobs"), "/v1/p/jobs/");
        assert_eq!(canonical_uri("/v1/p/jobs/"), "/v1/p/jobs/");
        assert_eq!(canonical_uri("/"), "/");
        assert_eq!(
            canonical_query(Some("b=2&a=10&a=1&c&=x")),
            "a=1&a=10&b=2&c="
        );
        assert_eq!(canonical_query(None), "");
    }

    #[test]
    fn authorization_headers_parse() {
        let a = parse_authorization(
            "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host;x-sdk-date, Signature=00ff",
        )
        .unwrap();
        assert_eq!(
            a,
            Authorization {
                access: "AK1",
                signed_headers: vec!["host", "x-sdk-date"],
                signature: "00ff",
            }
        );
        for bad in [
            "Bearer x",
            "SDK-HMAC-SHA256 Access=AK1, SignedHeaders=host",
            "SDK-HMAC-SHA256 Access=, SignedHeaders=host, Signature=00",
            "SDK-HMAC-SHA256 Access=A, Access=B, SignedHeaders=host, Signature=00",
            "SDK-HMAC-SHA256 Access=A, SignedHeaders=host, Signature=00, Extra=1",
            "SDK-HMAC-SHA256X Access=A, SignedHeaders=host, Signature=00",
        ] {
            assert_eq!(parse_authorization(bad), None, "{bad}");
        }
        assert!(!signature_matches("sk", "sts", "not hex"));
        assert!(signature_matches("sk", "sts", &signature("sk", "sts")));
    }

    #[test]
    fn sdk_dates_parse() {
        let t = parse_sdk_date("20261130T080000Z").unwrap();
        assert_eq!(t, time::macros::datetime!(2026-11-30 08:00:00 UTC));
        assert_eq!(format_sdk_date(t), "20261130T080000Z");
        for bad in [
            "2026-11-30T08:00:00Z",
            "20261130T080000",
            "20261332T080000Z",
            "",
        ] {
            assert_eq!(parse_sdk_date(bad), None, "{bad}");
        }
    }
}
