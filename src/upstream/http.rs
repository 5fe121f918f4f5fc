//! What every upstream call shares: the pooled client for IAM, CPH and JWKS,
//! error descriptions without URLs or headers, status labels, and
//! `Retry-After`.

use std::time::Duration;

use reqwest::StatusCode;

use crate::config::{ProxyChoice, UpstreamConfig};

/// The pooled client for IAM, CPH and JWKS: keep-alive, many idle
/// connections per host, Nagle off, bounded connect time, no redirects;
/// the built-in root certificates plus `upstream.ca_file`; the proxy as
/// configured (`upstream.proxy`, else `HTTPS_PROXY`/`HTTP_PROXY`, with
/// `NO_PROXY` either way), never one found implicitly.
pub fn client(cfg: &UpstreamConfig) -> Result<reqwest::Client, reqwest::Error> {
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("cph-gateway/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(cfg.timeout.min(Duration::from_secs(3)))
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        // Only the proxies chosen below.
        .no_proxy();
    for der in &cfg.ca_certs {
        builder = builder.add_root_certificate(reqwest::Certificate::from_der(der)?);
    }
    let bypass = || {
        cfg.no_proxy
            .as_deref()
            .and_then(reqwest::NoProxy::from_string)
    };
    match &cfg.proxy {
        ProxyChoice::Configured(url) => {
            tracing::info!(proxy = %url, no_proxy = cfg.no_proxy.as_deref(), "upstream calls go through upstream.proxy");
            builder = builder.proxy(reqwest::Proxy::all(&url.0)?.no_proxy(bypass()));
        }
        ProxyChoice::Environment { https, http } => {
            if let Some(url) = https {
                tracing::info!(proxy = %url, no_proxy = cfg.no_proxy.as_deref(), "https upstream calls go through HTTPS_PROXY");
                builder = builder.proxy(reqwest::Proxy::https(&url.0)?.no_proxy(bypass()));
            }
            if let Some(url) = http {
                tracing::info!(proxy = %url, no_proxy = cfg.no_proxy.as_deref(), "http upstream calls go through HTTP_PROXY");
                builder = builder.proxy(reqwest::Proxy::http(&url.0)?.no_proxy(bypass()));
            }
        }
    }
    builder.build()
}

/// Describes a transport error without the URL's query or any header. A
/// TLS failure says so first (an untrusted certificate is a configuration
/// problem that no retry cures).
pub fn describe(e: &reqwest::Error) -> String {
    if let Some(tls) = tls_problem(e) {
        return tls;
    }
    let mut msg = if e.is_connect() {
        "connection failed".to_owned()
    } else if e.is_timeout() {
        "timed out".to_owned()
    } else if e.is_body() || e.is_decode() {
        "unreadable answer".to_owned()
    } else {
        "connection error".to_owned()
    };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

/// A TLS failure among `e`'s sources (rustls reports it inside an I/O
/// error), described for an operator.
pub(crate) fn tls_problem(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut source = Some(e);
    while let Some(s) = source {
        // An I/O error may wrap another; `source()` skips what it wraps.
        let mut inner: &(dyn std::error::Error + 'static) = s;
        while let Some(wrapped) = inner
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            inner = wrapped;
        }
        let found = inner.downcast_ref::<rustls::Error>();
        match found {
            Some(rustls::Error::InvalidCertificate(_)) => {
                return Some(format!(
                    "TLS certificate problem: {} (the upstream's certificate is not trusted for its name: is its CA in upstream.ca_file?)",
                    found?
                ));
            }
            Some(other) => return Some(format!("TLS handshake failed: {other}")),
            None => source = s.source(),
        }
    }
    None
}

/// The `status` label of an upstream answer.
pub fn status_label(s: StatusCode) -> &'static str {
    match s.as_u16() {
        400 => "400",
        401 => "401",
        403 => "403",
        404 => "404",
        429 => "429",
        500 => "500",
        502 => "502",
        503 => "503",
        504 => "504",
        405..=428 | 430..=499 => "4xx",
        501 | 505..=599 => "5xx",
        _ => "other",
    }
}

/// Parses `Retry-After` in seconds (the form CPH uses).
pub fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse::<u64>()
        .ok()
        .map(Duration::from_secs)
}

/// Reads an answer's body, at most `limit` bytes (see [`read_limited`]);
/// the error as a message.
pub async fn read_capped(resp: reqwest::Response, limit: usize) -> Result<bytes::Bytes, String> {
    read_limited(resp, limit).await.map_err(|e| e.to_string())
}

/// Why an upstream answer's body could not be had.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// Longer than the limit (declared, or as it came): a broken answer.
    #[error("answer larger than {limit} bytes")]
    TooLarge { limit: usize },
    #[error("{}", describe(.0))]
    Transport(#[from] reqwest::Error),
}

/// Reads `resp`'s body, at most `limit` bytes (see [`read_within`]).
pub async fn read_limited(
    resp: reqwest::Response,
    limit: usize,
) -> Result<bytes::Bytes, BodyError> {
    let declared = resp.content_length();
    let body = ::http::Response::from(resp).into_body();
    read_within(body, declared, limit)
        .await
        .map_err(|e| match e {
            Capped::TooLarge { limit } => BodyError::TooLarge { limit },
            Capped::Failed(e) => BodyError::Transport(e),
        })
}

/// Why a body read within a limit was not had.
#[derive(Debug)]
pub enum Capped<E> {
    /// Longer than the limit (declared, or as it came).
    TooLarge { limit: usize },
    /// The body itself failed.
    Failed(E),
}

/// Reads an answer's `body` (of any client), at most `limit` bytes: a
/// `declared` length over the limit is refused before reading, and reading
/// stops at the first byte over it, so an upstream cannot make the gateway
/// hold more. A body that comes in one piece (most do) is taken as it is.
pub async fn read_within<B>(
    body: B,
    declared: Option<u64>,
    limit: usize,
) -> Result<bytes::Bytes, Capped<B::Error>>
where
    B: hyper::body::Body<Data = bytes::Bytes>,
{
    use http_body_util::BodyExt;
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(Capped::TooLarge { limit });
    }
    let mut body = std::pin::pin!(body);
    let mut first: Option<bytes::Bytes> = None;
    let mut rest = bytes::BytesMut::new();
    while let Some(frame) = body.frame().await {
        let Ok(chunk) = frame.map_err(Capped::Failed)?.into_data() else {
            continue;
        };
        let had = first.as_ref().map_or(0, bytes::Bytes::len) + rest.len();
        if had + chunk.len() > limit {
            return Err(Capped::TooLarge { limit });
        }
        if first.is_none() && rest.is_empty() {
            first = Some(chunk);
            continue;
        }
        // A second piece: from here on, the pieces are copied together.
        if let Some(f) = first.take() {
            rest.reserve(declared.map_or(0, |n| n as usize).min(limit));
            rest.extend_from_slice(&f);
        }
        rest.extend_from_slice(&chunk);
    }
    Ok(first.unwrap_or_else(|| rest.freeze()))
}

/// IAM's code and message from an error answer, as `: error_code C,
/// error_msg "M"` (empty if the body has neither). IAM answers
/// `{"error": {"code", "title", "message"}}` or `{"error_code", "error_msg"}`.
pub fn iam_error(body: &[u8]) -> String {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) else {
        return String::new();
    };
    let text = |v: Option<&serde_json::Value>| match v {
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    };
    let nested = v.get("error").filter(|e| e.is_object());
    let code = text(v.get("error_code")).or_else(|| text(nested.and_then(|e| e.get("code"))));
    let msg = text(v.get("error_msg"))
        .or_else(|| text(nested.and_then(|e| e.get("message"))))
        .map(|m| crate::domain::truncate(m.trim(), 512).to_owned());
    match (code, msg) {
        (None, None) => String::new(),
        (Some(c), None) => format!(": error_code {c}"),
        (None, Some(m)) => format!(": error_msg {m:?}"),
        (Some(c), Some(m)) => format!(": error_code {c}, error_msg {m:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::iam_error;

    #[test]
    fn iam_error_bodies_of_both_shapes() {
        let nested = br#"{"error":{"code":401,"title":"Unauthorized","message":"The username or password is wrong."}}"#;
        assert_eq!(
            iam_error(nested),
            ": error_code 401, error_msg \"The username or password is wrong.\""
        );
        let flat = br#"{"error_code":"IAM.0011","error_msg":"Request body is invalid."}"#;
        assert_eq!(
            iam_error(flat),
            ": error_code IAM.0011, error_msg \"Request body is invalid.\""
        );
        assert_eq!(iam_error(b"<html>bad gateway</html>"), "");
        assert_eq!(iam_error(br#"{"error":"x"}"#), "");
    }
}
