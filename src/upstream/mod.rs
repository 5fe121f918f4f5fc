//! Everything the gateway says to Huawei: one pooled HTTP client, IAM
//! tokens, the CPH client, and the limits every project shares.

pub mod answer;
pub mod cph;
pub mod credential_state;
pub mod credentials;
pub mod direct;
pub mod http;
pub mod iam;
pub mod probe;
pub mod retry;
pub mod sign;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use prometheus_client::metrics::gauge::Gauge;
use reqwest::StatusCode;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio::time::Instant;

use crate::config::{IamConfig, UpstreamConfig};
use crate::domain::{JobId, ProjectId};
use crate::telemetry::{GaugeGuard, Metrics};
use crate::tenants::Project;
use cph::{CallOutcome, CphClient};
use credential_state::CredentialStates;
use credentials::{AuthError, Credentials};
use iam::IamProvider;
use retry::RetryBudget;

/// What all requests to one project share: its concurrency limit, its
/// in-flight gauge and its retry budget (so that one project's outage, or
/// one tenant's, cannot spend the retries of another).
pub struct ProjectSlot {
    limit: Semaphore,
    in_flight: Gauge,
    pub budget: RetryBudget,
}

/// A place in a project's limit, counted in its gauge while held.
pub struct CallPermit<'a> {
    _permit: SemaphorePermit<'a>,
    _gauge: GaugeGuard,
}

impl ProjectSlot {
    /// Waits for a place in the project's limit.
    pub async fn acquire(&self) -> CallPermit<'_> {
        // The semaphore is never closed.
        let permit = match self.limit.acquire().await {
            Ok(p) => p,
            Err(_) => unreachable!("project semaphores are never closed"),
        };
        CallPermit {
            _permit: permit,
            _gauge: GaugeGuard::new(self.in_flight.clone()),
        }
    }
}

/// The upstream side of the gateway.
pub struct Upstream {
    pub cph: CphClient,
    pub credentials: Credentials,
    /// Each named credential's kind and last error (`/admin/v1/status`).
    pub credential_states: Arc<CredentialStates>,
    pub cfg: UpstreamConfig,
    slots: Mutex<HashMap<ProjectId, Arc<ProjectSlot>>>,
    metrics: Arc<Metrics>,
}

impl Upstream {
    pub fn new(
        http: reqwest::Client,
        cfg: UpstreamConfig,
        iam: IamConfig,
        metrics: Arc<Metrics>,
    ) -> Self {
        let configured = iam.credentials.clone();
        let credential_states = Arc::new(CredentialStates::new(&iam));
        let iam = Arc::new(
            IamProvider::new(
                iam,
                http.clone(),
                cfg.timeout,
                metrics.clone(),
                credential_states.clone(),
            )
            .limit_responses(cfg.max_response_bytes),
        );
        let direct = direct::DirectClient::new(&cfg).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "batch-stops go through the general client");
            None
        });
        let cph = CphClient::new(
            http,
            direct,
            cfg.cph_endpoint.clone(),
            cfg.timeout,
            cfg.max_response_bytes,
            metrics.clone(),
        );
        Self {
            cph,
            credentials: Credentials::new(
                iam,
                configured,
                credential_states.clone(),
                metrics.clone(),
            ),
            credential_states,
            cfg,
            slots: Mutex::default(),
            metrics,
        }
    }

    /// The project's shared limit and gauge.
    pub fn slot(&self, project: &ProjectId) -> Arc<ProjectSlot> {
        let mut map = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(project.clone())
            .or_insert_with(|| {
                Arc::new(ProjectSlot {
                    limit: Semaphore::new(self.cfg.max_concurrency_per_project),
                    in_flight: self.metrics.upstream_in_flight(project),
                    budget: RetryBudget::new(self.cfg.retry_budget_ratio),
                })
            })
            .clone()
    }

    /// CPH's job query: status and body as CPH answered, or a transport
    /// outcome. Made within the project's upstream limit, like a batch.
    pub async fn job(
        &self,
        project: &Arc<Project>,
        request_id: &str,
        job_id: &JobId,
        deadline: Instant,
    ) -> Result<Result<(StatusCode, Bytes), CallOutcome>, AuthError> {
        let slot = self.slot(&project.id);
        let slot = &slot;
        self.credentials
            .call(project, deadline, |auth| async move {
                let Ok(_permit) = tokio::time::timeout_at(deadline, slot.acquire()).await else {
                    return Err(CallOutcome::Timeout);
                };
                let call = self
                    .cph
                    .show_job(project, &auth, request_id, job_id.as_str());
                tokio::time::timeout_at(deadline, call)
                    .await
                    .unwrap_or(Err(CallOutcome::Timeout))
            })
            .await
    }
}
