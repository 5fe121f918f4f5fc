//! Huawei Cloud AK/SK request signing (`SDK-HMAC-SHA256`).
//!
//! This is the scheme Huawei's official SDKs use to sign API calls with an
//! access key (AK) and secret key (SK), and it reproduces their output byte for
//! byte: the unit tests below check every vector in
//! `tests/vectors/aksk/vectors.json`, which `tests/vectors/aksk/generate.py`
//! produces with the official Python SDK core (`huaweicloudsdkcore`; version
//! and regeneration steps are in `tests/vectors/aksk/README.md`).
//!
//! The algorithm, as the SDK implements it:
//!
//! ```text
//! CanonicalRequest = METHOD "\n" CanonicalURI "\n" CanonicalQuery "\n"
//!                    CanonicalHeaders "\n" SignedHeaders "\n" PayloadHash
//! StringToSign     = "SDK-HMAC-SHA256\n" X-Sdk-Date "\n" hex(sha256(CanonicalRequest))
//! Signature        = hex(HMAC-SHA256(key = SK, StringToSign))
//! Authorization    = "SDK-HMAC-SHA256 Access=" AK ", SignedHeaders=" SignedHeaders ", Signature=" Signature
//! ```
//!
//! - `METHOD` is upper-cased.
//! - `CanonicalURI`: the path is percent-decoded, then every byte except `/` and
//!   the unreserved set `A-Za-z0-9-_.~` is percent-encoded (upper-case hex), and
//!   a `/` is appended unless it already ends in one. (So `%2F` in a path
//!   becomes a segment separator, as in the SDK.)
//! - `CanonicalQuery`: the query is split on `&` (empty pieces skipped), each
//!   piece on its first `=` (a key without `=` gets the value `""`), keys and
//!   values are percent-decoded (`+` is a literal plus, not a space), the pairs
//!   are sorted by key then value, and each is written `k=v` with the same
//!   escaping as the path, joined by `&`. Repeated keys are all kept. **Send this
//!   canonical query as the request's query** ([`Signature::query`]); that is
//!   what the SDK does, and it leaves the server no room to read it differently.
//! - Signed headers: `content-type` (when set), `host`, `x-project-id` (when
//!   set), `x-sdk-content-sha256` (see below), `x-sdk-date`, `x-security-token`
//!   (temporary AK/SK only), sorted; each canonical header is
//!   `name:value\n` with the value stripped of surrounding whitespace.
//! - `PayloadHash` is `hex(sha256(body))` (for an empty body, the hash of
//!   nothing). When a `Content-Type` is set and does not start with
//!   `application/json` or `application/bson` (checked on the raw value, as the
//!   SDK does), the SDK instead sends and signs `X-Sdk-Content-Sha256:
//!   UNSIGNED-PAYLOAD` and uses `UNSIGNED-PAYLOAD` as the payload hash of a
//!   non-empty body. This signer does the same ([`Signature::content_sha256`]).
//!
//! There is no key derivation: the SK is the HMAC key.

use std::fmt;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use time::{OffsetDateTime, UtcOffset};

mod text;

pub use text::{canonical_query, canonical_uri};
use text::{has_control, hex_into, push_canonical_uri, push_hex, push_num, strip, valid_sdk_date};

/// The signing algorithm's name, first word of the `Authorization` header.
pub const ALGORITHM: &str = "SDK-HMAC-SHA256";
/// Header carrying the signing time, `YYYYMMDDTHHMMSSZ` (UTC).
pub const HEADER_SDK_DATE: &str = "X-Sdk-Date";
/// Header carrying the project id (signed when [`Request::project_id`] is set).
pub const HEADER_PROJECT_ID: &str = "X-Project-Id";
/// Header carrying the security token of temporary AK/SK.
pub const HEADER_SECURITY_TOKEN: &str = "X-Security-Token";
/// Header the SDK adds for non-JSON bodies, with the value [`UNSIGNED_PAYLOAD`].
pub const HEADER_CONTENT_SHA256: &str = "X-Sdk-Content-Sha256";
/// Payload hash placeholder for bodies that are not signed.
pub const UNSIGNED_PAYLOAD: &str = "UNSIGNED-PAYLOAD";

/// `hex(sha256(""))`.
const EMPTY_HASH: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// Everything needed to sign one call; all borrowed.
///
/// The optional headers are signed exactly when they are `Some`, so the caller
/// must send exactly those (plus `Host`, `X-Sdk-Date` and `Authorization`),
/// with the same values.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// HTTP method (upper-cased for signing).
    pub method: &'a str,
    /// `host[:port]` exactly as sent in the `Host` header.
    pub host: &'a str,
    /// Request path as sent, percent-encoded or not; `""` counts as `/`.
    pub path: &'a str,
    /// Raw query, without the `?`; may be `""`. Send [`Signature::query`] instead.
    pub query: &'a str,
    /// `Content-Type` header, if one is sent.
    pub content_type: Option<&'a str>,
    /// `X-Project-Id` header, if one is sent.
    pub project_id: Option<&'a str>,
    /// `X-Security-Token` header (temporary AK/SK), if one is sent.
    pub security_token: Option<&'a str>,
    /// Request body, exactly as sent.
    pub body: &'a [u8],
}

impl Request<'_> {
    /// Whether the SDK rule marks this body unsigned: a `Content-Type` that does
    /// not start with `application/json`/`application/bson` (raw value).
    pub fn unsigned_payload(&self) -> bool {
        match self.content_type {
            Some(ct) => {
                !ct.is_empty()
                    && !ct.starts_with("application/json")
                    && !ct.starts_with("application/bson")
            }
            None => false,
        }
    }

    /// The signed headers in canonical (sorted) order, lower-case names with
    /// the raw values; `sdk_date` is the `X-Sdk-Date` value.
    fn signed<'s>(&self, sdk_date: &'s str) -> [Option<(&'static str, &'s str)>; 6]
    where
        Self: 's,
    {
        let unsigned = self.unsigned_payload();
        [
            self.content_type.map(|v| ("content-type", v)),
            Some(("host", self.host)),
            self.project_id.map(|v| ("x-project-id", v)),
            unsigned.then_some(("x-sdk-content-sha256", UNSIGNED_PAYLOAD)),
            Some(("x-sdk-date", sdk_date)),
            self.security_token.map(|v| ("x-security-token", v)),
        ]
    }
}

/// The result of signing: the headers to add and the query to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signature {
    /// Value of the `X-Sdk-Date` header.
    pub sdk_date: String,
    /// Value of the `Authorization` header.
    pub authorization: String,
    /// Canonical query string (without `?`, `""` for none): send this as the
    /// request's query, in place of [`Request::query`].
    pub query: String,
    /// `Some(UNSIGNED_PAYLOAD)` when the `X-Sdk-Content-Sha256` header must be
    /// sent with that value (non-JSON content type).
    pub content_sha256: Option<&'static str>,
}

/// Why a request could not be signed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignError {
    /// The access key is empty.
    EmptyAccessKey,
    /// The secret key is empty.
    EmptySecretKey,
    /// The `X-Sdk-Date` value is not `YYYYMMDDTHHMMSSZ`.
    InvalidSdkDate,
    /// A header value (or the access key) contains CR, LF or NUL; names the field.
    InvalidValue(&'static str),
    /// The HMAC could not be keyed (cannot happen with HMAC-SHA256).
    Hmac,
}

impl fmt::Display for SignError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignError::EmptyAccessKey => f.write_str("AK/SK signing: access key is empty"),
            SignError::EmptySecretKey => f.write_str("AK/SK signing: secret key is empty"),
            SignError::InvalidSdkDate => {
                f.write_str("AK/SK signing: X-Sdk-Date is not YYYYMMDDTHHMMSSZ")
            }
            SignError::InvalidValue(what) => {
                write!(f, "AK/SK signing: {what} contains a control character")
            }
            SignError::Hmac => f.write_str("AK/SK signing: cannot key HMAC-SHA256"),
        }
    }
}

impl std::error::Error for SignError {}

/// Formats `now` (any offset) as an `X-Sdk-Date` value, `YYYYMMDDTHHMMSSZ` in UTC.
pub fn sdk_date(now: OffsetDateTime) -> String {
    // Out of range only at the very ends of `time`'s calendar; never panic.
    let t = now.checked_to_offset(UtcOffset::UTC).unwrap_or(now);
    let mut out = String::with_capacity(16);
    push_num(&mut out, t.year().unsigned_abs(), 4);
    push_num(&mut out, u32::from(u8::from(t.month())), 2);
    push_num(&mut out, u32::from(t.day()), 2);
    out.push('T');
    push_num(&mut out, u32::from(t.hour()), 2);
    push_num(&mut out, u32::from(t.minute()), 2);
    push_num(&mut out, u32::from(t.second()), 2);
    out.push('Z');
    out
}

/// Signs `req` at time `now`. Send the returned headers and query with it.
pub fn sign(
    ak: &str,
    sk: &[u8],
    req: &Request<'_>,
    now: OffsetDateTime,
) -> Result<Signature, SignError> {
    let date = sdk_date(now);
    sign_at(ak, sk, req, &date)
}

/// Signs `req` with a given `X-Sdk-Date` value (`YYYYMMDDTHHMMSSZ`).
pub fn sign_at(
    ak: &str,
    sk: &[u8],
    req: &Request<'_>,
    sdk_date: &str,
) -> Result<Signature, SignError> {
    if ak.is_empty() {
        return Err(SignError::EmptyAccessKey);
    }
    if sk.is_empty() {
        return Err(SignError::EmptySecretKey);
    }
    if !valid_sdk_date(sdk_date) {
        return Err(SignError::InvalidSdkDate);
    }
    if has_control(ak) {
        return Err(SignError::InvalidValue("access key"));
    }
    for (name, value) in req.signed(sdk_date).into_iter().flatten() {
        if has_control(value) {
            return Err(SignError::InvalidValue(name));
        }
    }

    let query = canonical_query(req.query);
    let mut canonical = String::with_capacity(capacity_hint(req, sdk_date, query.len()));
    push_canonical_request(&mut canonical, req, &query, sdk_date);
    let canonical_hash: [u8; 32] = Sha256::digest(canonical.as_bytes()).into();
    let mut hash_hex = [0u8; 64];
    hex_into(&canonical_hash, &mut hash_hex);

    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(sk).map_err(|_| SignError::Hmac)?;
    // The string to sign, fed in pieces (see `string_to_sign`).
    mac.update(ALGORITHM.as_bytes());
    mac.update(b"\n");
    mac.update(sdk_date.as_bytes());
    mac.update(b"\n");
    mac.update(&hash_hex);
    let signature: [u8; 32] = mac.finalize().into_bytes().into();

    let mut authorization = String::with_capacity(ALGORITHM.len() + ak.len() + 200);
    authorization.push_str(ALGORITHM);
    authorization.push_str(" Access=");
    authorization.push_str(ak);
    authorization.push_str(", SignedHeaders=");
    push_signed_headers(&mut authorization, req, sdk_date);
    authorization.push_str(", Signature=");
    push_hex(&mut authorization, &signature);

    Ok(Signature {
        sdk_date: sdk_date.to_owned(),
        authorization,
        query,
        content_sha256: req.unsigned_payload().then_some(UNSIGNED_PAYLOAD),
    })
}

/// The canonical request the signature covers (for logging and tests).
pub fn canonical_request(req: &Request<'_>, sdk_date: &str) -> String {
    let query = canonical_query(req.query);
    let mut out = String::with_capacity(capacity_hint(req, sdk_date, query.len()));
    push_canonical_request(&mut out, req, &query, sdk_date);
    out
}

/// The signed header names, sorted and joined by `;`.
pub fn signed_headers(req: &Request<'_>) -> String {
    let mut out = String::with_capacity(64);
    push_signed_headers(&mut out, req, "");
    out
}

/// `SDK-HMAC-SHA256\n{sdk_date}\n{hex(sha256(canonical))}`.
pub fn string_to_sign(canonical: &str, sdk_date: &str) -> String {
    let hash: [u8; 32] = Sha256::digest(canonical.as_bytes()).into();
    let mut out = String::with_capacity(ALGORITHM.len() + sdk_date.len() + 66);
    out.push_str(ALGORITHM);
    out.push('\n');
    out.push_str(sdk_date);
    out.push('\n');
    push_hex(&mut out, &hash);
    out
}

fn push_canonical_request(out: &mut String, req: &Request<'_>, query: &str, sdk_date: &str) {
    for c in req.method.chars() {
        out.push(c.to_ascii_uppercase());
    }
    out.push('\n');
    push_canonical_uri(out, req.path);
    out.push('\n');
    out.push_str(query);
    out.push('\n');
    for (name, value) in req.signed(sdk_date).into_iter().flatten() {
        out.push_str(name);
        out.push(':');
        out.push_str(strip(value));
        out.push('\n');
    }
    out.push('\n');
    push_signed_headers(out, req, sdk_date);
    out.push('\n');
    if req.body.is_empty() {
        out.push_str(EMPTY_HASH);
    } else if req.unsigned_payload() {
        out.push_str(UNSIGNED_PAYLOAD);
    } else {
        let hash: [u8; 32] = Sha256::digest(req.body).into();
        push_hex(out, &hash);
    }
}

fn push_signed_headers(out: &mut String, req: &Request<'_>, sdk_date: &str) {
    for (i, (name, _)) in req.signed(sdk_date).into_iter().flatten().enumerate() {
        if i > 0 {
            out.push(';');
        }
        out.push_str(name);
    }
}

fn capacity_hint(req: &Request<'_>, sdk_date: &str, query_len: usize) -> usize {
    let headers: usize = req
        .signed(sdk_date)
        .into_iter()
        .flatten()
        .map(|(n, v)| 2 * n.len() + v.len() + 2)
        .sum();
    req.method.len() + 3 * req.path.len() + query_len + headers + 64 + 8
}

#[cfg(test)]
mod tests;
