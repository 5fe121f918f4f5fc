//! What every upstream call shares: the pooled client for IAM, CPH and JWKS,
//! error descriptions without URLs or headers, status labels, and
//! `Retry-After`.

use std::time::Duration;

use reqwest::StatusCode;

use crate::config::UpstreamConfig;

/// The pooled client for IAM, CPH and JWKS: keep-alive, many idle
/// connections per host, Nagle off, bounded connect time, no redirects.
pub fn client(cfg: &UpstreamConfig) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder()
        .user_agent(concat!("cph-gateway/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(cfg.timeout.min(Duration::from_secs(3)))
        .pool_max_idle_per_host(256)
        .pool_idle_timeout(Duration::from_secs(60))
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
}

/// Describes a transport error without the URL's query or any header.
pub fn describe(e: &reqwest::Error) -> String {
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
