//! IAM `POST /v3/auth/tokens` with password authentication.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::Response;
use bytes::Bytes;
use serde_json::{Value, json};
use time::OffsetDateTime;

use super::state::{Shared, inc, json_response, rfc3339};

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
    if (auth.domain, auth.user, auth.password)
        != (&*cfg.iam_domain, &*cfg.iam_user, &*cfg.iam_password)
    {
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
    let mut res = json_response(StatusCode::CREATED, &body);
    match HeaderValue::try_from(token) {
        Ok(token) => {
            res.headers_mut().insert("x-subject-token", token);
            res
        }
        // Unreachable: the token is "MII" and hex digits.
        Err(_) => iam_error(StatusCode::INTERNAL_SERVER_ERROR, "bad token"),
    }
}

#[cfg(test)]
mod tests {
    use super::super::Sim;
    use super::super::testutil::*;
    use super::*;
    use std::time::Duration;
    use time::format_description::well_known::Rfc3339;

    #[tokio::test]
    async fn password_auth_issues_a_project_token() {
        let sim = Sim::start(opts()).await.unwrap();
        let res = client()
            .post(format!("{}/v3/auth/tokens", sim.url()))
            .json(&auth_body("sim-user", "sim-password", PROJECT))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 201);
        let token = res.headers()["x-subject-token"].to_str().unwrap();
        assert!(token.len() >= 64);
        let body: Value = res.json().await.unwrap();
        let expires_at = body["token"]["expires_at"].as_str().unwrap();
        // e.g. 2026-11-27T09:05:22.701000Z
        assert_eq!(expires_at.len(), 27, "{expires_at}");
        assert!(expires_at.ends_with('Z'));
        let expires = OffsetDateTime::parse(expires_at, &Rfc3339).unwrap();
        let ttl = expires - OffsetDateTime::now_utc();
        assert!(ttl > time::Duration::hours(24) - time::Duration::minutes(1));
        assert!(ttl <= time::Duration::hours(24));
        assert_eq!(body["token"]["project"]["id"], PROJECT);
        assert_eq!(body["token"]["user"]["domain"]["name"], "sim-domain");
        let stats = sim.stats();
        assert_eq!((stats.iam_requests, stats.tokens_issued), (1, 1));
        assert_eq!(stats.responses_by_status[&201], 1);
    }

    #[tokio::test]
    async fn wrong_credentials_and_bad_bodies() {
        let sim = Sim::start(opts()).await.unwrap();
        let c = client();
        let url = format!("{}/v3/auth/tokens", sim.url());
        let res = c
            .post(&url)
            .json(&auth_body("sim-user", "nope", PROJECT))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 401);
        assert!(res.headers().get("x-subject-token").is_none());
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error"]["code"], 401);

        let mut no_scope = auth_body("sim-user", "sim-password", PROJECT);
        no_scope["auth"].as_object_mut().unwrap().remove("scope");
        let mut token_method = auth_body("sim-user", "sim-password", PROJECT);
        token_method["auth"]["identity"]["methods"] = json!(["token"]);
        let mut no_domain = auth_body("sim-user", "sim-password", PROJECT);
        no_domain["auth"]["identity"]["password"]["user"]
            .as_object_mut()
            .unwrap()
            .remove("domain");
        for bad in [no_scope, token_method, no_domain] {
            let res = c.post(&url).json(&bad).send().await.unwrap();
            assert_eq!(res.status(), 400, "{bad}");
            let body: Value = res.json().await.unwrap();
            assert_eq!(body["error"]["code"], 400);
        }
        let res = c.post(&url).body("{").send().await.unwrap();
        assert_eq!(res.status(), 400);
        let stats = sim.stats();
        assert_eq!(
            (stats.iam_requests, stats.tokens_issued, stats.unauthorized),
            (5, 0, 1)
        );
    }

    #[tokio::test]
    async fn tokens_expire() {
        let sim = Sim::start(super::super::SimOptions {
            token_ttl: Duration::from_secs(1),
            ..opts()
        })
        .await
        .unwrap();
        let c = client();
        let t = token(&c, &sim, PROJECT).await;
        let p = super::super::phone_id(PROJECT, 0);
        assert_eq!(
            stop_call(&c, &sim, &t, PROJECT, &[&p])
                .await
                .unwrap()
                .status(),
            200
        );
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let res = stop_call(&c, &sim, &t, PROJECT, &[&p]).await.unwrap();
        assert_eq!(res.status(), 401);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["error_code"], "APIG.0301");
    }
}
