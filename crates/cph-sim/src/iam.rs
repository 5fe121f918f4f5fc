//! IAM `POST /v3/auth/tokens` with password authentication.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use time::OffsetDateTime;

use crate::state::Shared;
use crate::stats::inc;
use crate::util::{json_response, rfc3339};

/// An IAM error body: `{"error":{"code":..,"title":..,"message":..}}`.
fn iam_error(status: StatusCode, message: &str) -> Response {
    let title = status.canonical_reason().unwrap_or_default();
    let body = json!({"error": {"code": status.as_u16(), "title": title, "message": message}});
    json_response(status, &body)
}

/// The credentials and scope of a password-auth body.
struct PasswordAuth<'a> {
    domain: &'a str,
    user: &'a str,
    password: &'a str,
    project: &'a str,
}

/// Checks the body shape like IAM does; the error is the 400 message.
fn parse<'a>(body: &'a Value) -> Result<PasswordAuth<'a>, &'static str> {
    let text = |v: &'a Value, pointer: &str| v.pointer(pointer).and_then(Value::as_str);
    let methods = body
        .pointer("/auth/identity/methods")
        .and_then(Value::as_array)
        .ok_or("auth.identity.methods is required")?;
    if !methods.iter().any(|m| m == "password") {
        return Err("auth.identity.methods must contain \"password\"");
    }
    let user = body
        .pointer("/auth/identity/password/user")
        .unwrap_or(&Value::Null);
    let (Some(name), Some(password), Some(domain)) = (
        text(user, "/name"),
        text(user, "/password"),
        text(user, "/domain/name"),
    ) else {
        return Err("auth.identity.password.user needs name, password and domain.name");
    };
    let project =
        text(body, "/auth/scope/project/id").ok_or("auth.scope.project.id is required")?;
    Ok(PasswordAuth {
        domain,
        user: name,
        password,
        project,
    })
}

/// `POST /v3/auth/tokens`: 201 with the token in `X-Subject-Token`.
pub(crate) async fn issue_token(State(sim): State<Arc<Shared>>, body: Bytes) -> Response {
    inc(&sim.stats.iam_requests);
    let (down, delay) = sim.faults.iam();
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }
    if down {
        return iam_error(StatusCode::SERVICE_UNAVAILABLE, "service unavailable");
    }
    let Ok(body) = serde_json::from_slice::<Value>(&body) else {
        return iam_error(
            StatusCode::BAD_REQUEST,
            "The request body is not valid JSON.",
        );
    };
    let auth = match parse(&body) {
        Ok(auth) => auth,
        Err(message) => return iam_error(StatusCode::BAD_REQUEST, message),
    };
    let cfg = &sim.cfg;
    let password_ok = *crate::util::lock(&cfg.iam_password) == auth.password;
    if (auth.domain, auth.user) != (&*cfg.iam_domain, &*cfg.iam_user) || !password_ok {
        tracing::debug!(user = auth.user, "IAM: wrong credentials");
        return iam_error(
            StatusCode::UNAUTHORIZED,
            "The username or password is wrong.",
        );
    }

    let token = sim.tokens.issue(auth.project, cfg.token_ttl);
    inc(&sim.stats.tokens_issued);
    let now = OffsetDateTime::now_utc();
    let body = json!({"token": {
        "expires_at": rfc3339(now + cfg.token_ttl),
        "issued_at": rfc3339(now),
        "methods": ["password"],
        "project": {"id": auth.project, "name": "sim"},
        "user": {"name": auth.user, "domain": {"name": auth.domain}},
    }});
    let pad = sim.faults.with(|f| f.oversize_iam_bytes);
    let mut res = if pad == 0 {
        json_response(StatusCode::CREATED, &body)
    } else {
        crate::padding::padded_object(
            StatusCode::CREATED,
            body.to_string().into_bytes(),
            pad,
            false,
        )
    };
    match HeaderValue::try_from(token) {
        Ok(token) => {
            res.headers_mut().insert("x-subject-token", token);
            res
        }
        // Unreachable: the token is "MII" and hex digits.
        Err(_) => iam_error(StatusCode::INTERNAL_SERVER_ERROR, "bad token"),
    }
}
