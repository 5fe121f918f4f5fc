//! How a call to CPH is authorised for a project, and the one place that
//! renews a refused credential.
//!
//! A project's credential is either a password (the call carries a
//! project-scoped IAM token) or an access key and secret key (the call is
//! signed, see [`super::sign`]). A token that CPH answers 401 to is dropped,
//! a new one fetched, and the call made once more. A signed call that CPH
//! answers 401 to is final: there is nothing to renew, and the same keys
//! would be refused again.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;

use reqwest::header::{HeaderMap, HeaderValue};
use secrecy::{ExposeSecret, SecretString};
use time::OffsetDateTime;
use tokio::time::Instant;

use super::credential_state::CredentialStates;
use super::iam::{IamError, IamProvider, IamToken};
use super::sign;
use crate::config::{AkSkCredential, Credential};
use crate::telemetry::Metrics;
use crate::tenants::Project;

/// An upstream answer that may say the credential was refused.
pub trait Answer {
    fn is_unauthorized(&self) -> bool;
    /// Whether CPH answered at all (so a signature it did not refuse was
    /// accepted); a transport failure says nothing about the credential.
    fn is_answered(&self) -> bool;
}

/// Why no call could be made.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error(transparent)]
    Iam(#[from] IamError),
    /// The request's deadline passed while waiting for a credential.
    #[error("the request's deadline passed while waiting for an IAM token")]
    Deadline,
}

/// What authorises one call to CPH. `Debug` never shows a token or key.
#[derive(Debug, Clone)]
pub enum Authorization {
    /// A project-scoped IAM token, sent as `X-Auth-Token`.
    Token(Arc<IamToken>),
    /// Keys to sign the call with (`SDK-HMAC-SHA256`).
    Signed(SigningKeys),
}

/// The keys of an AK/SK credential as they are at the time of one call
/// (their files may be replaced at any time; one call uses one set).
#[derive(Debug, Clone)]
pub struct SigningKeys {
    pub access_key: Arc<SecretString>,
    pub secret_key: Arc<SecretString>,
    /// Temporary keys only: sent as `X-Security-Token`, and signed.
    pub security_token: Option<Arc<SecretString>>,
}

impl SigningKeys {
    pub fn of(c: &AkSkCredential) -> Self {
        Self {
            access_key: c.access_key.current(),
            secret_key: c.secret_key.current(),
            security_token: c.security_token.as_ref().map(|t| t.current()),
        }
    }
}

impl Authorization {
    /// The headers that authorise one call: `X-Auth-Token`, or the AK/SK
    /// signature (`X-Sdk-Date`, `X-Project-Id`, `Authorization`, and
    /// `X-Security-Token` for temporary keys) over the method, the host
    /// (with a port that is not the default), the path, the query, the
    /// content type, the project id and the body. A signed call must be sent
    /// with the canonical query it was signed with: `url`'s query is
    /// replaced by it. Values carrying a secret are marked sensitive; an
    /// error never shows one.
    pub fn headers(
        &self,
        method: &reqwest::Method,
        url: &mut reqwest::Url,
        project_id: &str,
        content: Option<(&str, &[u8])>,
    ) -> Result<HeaderMap, String> {
        let mut headers = HeaderMap::new();
        let keys = match self {
            Authorization::Token(token) => {
                headers.insert("x-auth-token", secret_header(&token.value, "IAM token")?);
                return Ok(headers);
            }
            Authorization::Signed(keys) => keys,
        };
        let host = host_header(url)?;
        let query = url.query().unwrap_or("").to_owned();
        let signature = sign::sign(
            keys.access_key.expose_secret(),
            keys.secret_key.expose_secret().as_bytes(),
            &sign::Request {
                method: method.as_str(),
                host: &host,
                path: url.path(),
                query: &query,
                content_type: content.map(|(ct, _)| ct),
                project_id: Some(project_id),
                security_token: keys.security_token.as_deref().map(|t| t.expose_secret()),
                body: content.map_or(&[][..], |(_, body)| body),
            },
            OffsetDateTime::now_utc(),
        )
        .map_err(|e| format!("cannot sign the call: {e}"))?;
        url.set_query(Some(signature.query.as_str()).filter(|q| !q.is_empty()));
        let plain = |v: &str, what: &str| {
            HeaderValue::from_str(v).map_err(|_| {
                format!("cannot sign the call: the {what} is not a valid header value")
            })
        };
        headers.insert(sign::HEADER_SDK_DATE, plain(&signature.sdk_date, "date")?);
        headers.insert(sign::HEADER_PROJECT_ID, plain(project_id, "project id")?);
        let mut authorization = plain(&signature.authorization, "access key")?;
        authorization.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, authorization);
        if let Some(token) = &keys.security_token {
            headers.insert(
                sign::HEADER_SECURITY_TOKEN,
                secret_header(token, "security token")?,
            );
        }
        if let Some(v) = signature.content_sha256 {
            headers.insert(sign::HEADER_CONTENT_SHA256, HeaderValue::from_static(v));
        }
        Ok(headers)
    }
}

/// `Host` as the HTTP client sends it: the host, and the port unless it is
/// the scheme's default. A signature covers it.
fn host_header(url: &reqwest::Url) -> Result<String, String> {
    let host = url
        .host_str()
        .ok_or_else(|| "bad CPH URL: no host".to_owned())?;
    Ok(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// A header carrying a secret, marked sensitive; the error names only `what`.
fn secret_header(value: &SecretString, what: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(value.expose_secret())
        .map_err(|_| format!("the {what} is not a valid header value"))?;
    v.set_sensitive(true);
    Ok(v)
}

/// The credentials of every project.
pub struct Credentials {
    iam: Arc<IamProvider>,
    configured: BTreeMap<String, Arc<Credential>>,
    /// Each credential's last error (IAM records its own fetches).
    states: Arc<CredentialStates>,
    metrics: Arc<Metrics>,
}

impl Credentials {
    pub fn new(
        iam: Arc<IamProvider>,
        configured: BTreeMap<String, Arc<Credential>>,
        states: Arc<CredentialStates>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            iam,
            configured,
            states,
            metrics,
        }
    }

    pub fn iam(&self) -> &Arc<IamProvider> {
        &self.iam
    }

    /// Runs `call` with what authorises the project's calls. With a token:
    /// if CPH answers 401, renews the token once and runs `call` again;
    /// waits for a token until `deadline`. With AK/SK keys: signs, and a 401
    /// is the answer.
    pub async fn call<T, F, Fut>(
        &self,
        project: &Arc<Project>,
        deadline: Instant,
        mut call: F,
    ) -> Result<T, AuthError>
    where
        T: Answer,
        F: FnMut(Authorization) -> Fut,
        Fut: Future<Output = T>,
    {
        if let Some(Credential::AkSk(keys)) =
            self.configured.get(&*project.credential).map(|c| &**c)
        {
            let answer = call(Authorization::Signed(SigningKeys::of(keys))).await;
            if answer.is_unauthorized() {
                tracing::warn!(
                    project = %project.id,
                    credential = %project.credential,
                    "CPH refused the AK/SK signature (401): check the credential's access key, secret key and security token"
                );
                self.states.record(
                    &project.credential,
                    Err(&format!(
                        "credential {:?} (region {}): CPH refused the AK/SK signature (401): check the access key, secret key and security token",
                        &*project.credential,
                        project.region.as_str()
                    )),
                );
            } else if answer.is_answered() {
                self.states.record(&project.credential, Ok(()));
            }
            return Ok(answer);
        }
        let mut renewed = false;
        loop {
            let token = tokio::time::timeout_at(deadline, self.iam.token(project))
                .await
                .map_err(|_| AuthError::Deadline)??;
            let answer = call(Authorization::Token(token.clone())).await;
            if answer.is_unauthorized() && !renewed {
                // CPH refused the token: it did not act on the request.
                self.iam.invalidate(project, &token).await;
                self.metrics.upstream_retry("renewed_token");
                renewed = true;
                continue;
            }
            return Ok(answer);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Secret;

    #[test]
    fn signing_keys_never_show_in_debug() {
        let keys = SigningKeys::of(&AkSkCredential {
            access_key: Secret::fixed("ak", "AKIDVISIBLE"),
            secret_key: Secret::fixed("sk", "the-secret-key-value"),
            security_token: Some(Secret::fixed("st", "the-security-token")),
        });
        let debug = format!("{:?}", Authorization::Signed(keys));
        for hidden in ["AKIDVISIBLE", "the-secret-key-value", "the-security-token"] {
            assert!(!debug.contains(hidden), "{debug}");
        }
    }
}
