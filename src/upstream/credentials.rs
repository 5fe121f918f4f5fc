//! How a call to CPH is authorised for a project, and the one place that
//! renews a refused credential: an IAM token that CPH answers 401 to is
//! dropped, a new one fetched, and the call made once more.

use std::future::Future;
use std::sync::Arc;

use tokio::time::Instant;

use super::iam::{IamError, IamProvider, IamToken};
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

/// The credentials of every project.
pub struct Credentials {
    iam: Arc<IamProvider>,
}

impl Credentials {
    pub fn new(iam: Arc<IamProvider>) -> Self {
        Self { iam }
    }

    pub fn iam(&self) -> &Arc<IamProvider> {
        &self.iam
    }

    /// Runs `call` with the project's token; if CPH answers 401, renews the
    /// token once and runs `call` again. Waits for a token until `deadline`.
    pub async fn call<T, F, Fut>(
        &self,
        project: &Arc<Project>,
        deadline: Instant,
        mut call: F,
    ) -> Result<T, AuthError>
    where
        T: Answer,
        F: FnMut(Arc<IamToken>) -> Fut,
        Fut: Future<Output = T>,
    {
        let mut renewed = false;
        loop {
            let token = tokio::time::timeout_at(deadline, self.iam.token(project))
                .await
                .map_err(|_| AuthError::Deadline)??;
            let answer = call(token.clone()).await;
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
