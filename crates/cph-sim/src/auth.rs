//! Authentication of CPH calls: an IAM token (`X-Auth-Token`) or an AK/SK
//! signature (`Authorization: SDK-HMAC-SHA256 ...`).

use axum::http::{HeaderMap, Method, StatusCode, Uri, header};
use axum::response::Response;
use time::OffsetDateTime;

use crate::reply::Reply;
use crate::sign::{self, ALGORITHM, SignedRequest};
use crate::state::Shared;
use crate::stats::inc;

/// Huawei's message for a missing, unknown, expired, revoked or foreign token.
pub(crate) const TOKEN_INVALID: &str = "Incorrect IAM authentication information: token invalid";
/// Prefix of the messages of refused AK/SK signatures.
const AKSK_INVALID: &str = "Incorrect IAM authentication information: verify aksk signature fail";
/// Largest accepted distance between `X-Sdk-Date` and the simulator's clock.
const MAX_SKEW: time::Duration = time::Duration::minutes(15);

/// Why a call is refused (401).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Denied {
    /// `APIG.0301`: no valid token.
    Token,
    /// `APIGW.0301`: a bad signature, with the reason.
    Signature(&'static str),
}

/// A CPH request, as authentication sees it.
pub(crate) struct Request<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
}

/// Checks the call's credentials for `project`; counts valid signatures.
pub(crate) fn authorize(sim: &Shared, req: &Request<'_>, project: &str) -> Result<(), Denied> {
    let authorization = req
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    match authorization {
        Some(value) if value.starts_with(ALGORITHM) => {
            verify_signature(sim, req, project, value)?;
            inc(&sim.stats.signed_requests);
            Ok(())
        }
        _ => {
            let valid = req
                .headers
                .get("x-auth-token")
                .and_then(|v| v.to_str().ok())
                .is_some_and(|token| sim.tokens.is_valid(token, project));
            if valid { Ok(()) } else { Err(Denied::Token) }
        }
    }
}

fn text<'h>(headers: &'h HeaderMap, name: &str) -> Option<&'h str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

/// Verifies an AK/SK signature as CPH's API gateway does.
fn verify_signature(
    sim: &Shared,
    req: &Request<'_>,
    project: &str,
    authorization: &str,
) -> Result<(), Denied> {
    let auth = sign::parse_authorization(authorization)
        .ok_or(Denied::Signature("malformed Authorization header"))?;
    let cred = crate::util::lock(&sim.cfg.aksk)
        .get(auth.access)
        .cloned()
        .ok_or(Denied::Signature("unknown access key"))?;
    let signed = &auth.signed_headers;
    let well_formed = signed.windows(2).all(|w| w[0] < w[1])
        && signed
            .iter()
            .all(|h| !h.is_empty() && !h.bytes().any(|b| b.is_ascii_uppercase()));
    if !well_formed {
        return Err(Denied::Signature(
            "SignedHeaders must be lowercase, sorted and unique",
        ));
    }
    for required in ["host", "x-sdk-date"] {
        if !signed.contains(&required) {
            return Err(Denied::Signature(
                "SignedHeaders must contain host and x-sdk-date",
            ));
        }
    }
    let date = text(req.headers, "x-sdk-date")
        .and_then(sign::parse_sdk_date)
        .ok_or(Denied::Signature("missing or invalid X-Sdk-Date"))?;
    if (OffsetDateTime::now_utc() - date).abs() > MAX_SKEW {
        return Err(Denied::Signature("X-Sdk-Date is more than 15 minutes off"));
    }
    if let Some(id) = req.headers.get("x-project-id") {
        if !signed.contains(&"x-project-id") {
            return Err(Denied::Signature("X-Project-Id is not signed"));
        }
        if id.to_str().ok().map(str::trim) != Some(project) {
            return Err(Denied::Signature(
                "X-Project-Id does not match the project of the path",
            ));
        }
    }
    let token = text(req.headers, "x-security-token");
    if cred.is_temporary() {
        if !signed.contains(&"x-security-token") {
            return Err(Denied::Signature(
                "temporary access key without a signed X-Security-Token",
            ));
        }
        if !token.is_some_and(|t| cred.security_tokens.iter().any(|s| s == t)) {
            return Err(Denied::Signature("invalid X-Security-Token"));
        }
    } else if token.is_some() {
        return Err(Denied::Signature(
            "X-Security-Token sent with a permanent access key",
        ));
    }
    let signed_req = SignedRequest {
        method: req.method.as_str(),
        path: req.uri.path(),
        query: req.uri.query(),
        headers: req.headers,
        body: req.body,
    };
    let canonical = sign::canonical_request(&signed_req, signed)
        .map_err(|_| Denied::Signature("a signed header is missing"))?;
    let date_text = text(req.headers, "x-sdk-date").unwrap_or_default();
    let string_to_sign = sign::string_to_sign(date_text, &canonical);
    if sign::signature_matches(&cred.sk, &string_to_sign, auth.signature) {
        Ok(())
    } else {
        tracing::debug!(ak = auth.access, %canonical, "AK/SK signature mismatch");
        Err(Denied::Signature("signature mismatch"))
    }
}

impl Reply {
    /// The 401 answer of a refused call.
    pub(crate) fn denied(&self, denied: Denied) -> Response {
        match denied {
            Denied::Token => self.error(StatusCode::UNAUTHORIZED, "APIG.0301", TOKEN_INVALID),
            Denied::Signature(reason) => self.error(
                StatusCode::UNAUTHORIZED,
                "APIGW.0301",
                &format!("{AKSK_INVALID}: {reason}"),
            ),
        }
    }
}
