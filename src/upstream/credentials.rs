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

use secrecy::SecretString;
use tokio::time::Instant;

use super::iam::{IamError, IamProvider, IamToken};
use crate::config::{AkSkCredential, Credential};
use crate::tenants::Project;

/// An upstream answer that may say the credential was refused.
pub trait Answer {
    fn is_unauthorized(&self) -> bool;
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

/// The credentials of every project.
pub struct Credentials {
    iam: Arc<IamProvider>,
    configured: BTreeMap<String, Arc<Credential>>,
}

impl Credentials {
    pub fn new(iam: Arc<IamProvider>, configured: BTreeMap<String, Arc<Credential>>) -> Self {
        Self { iam, configured }
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
                renewed = true;
                continue;
            }
            return Ok(answer);
        }
    }
}
