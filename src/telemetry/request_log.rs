//! What a request's log line says beyond its status and latency: who called,
//! for which tenant and project, how many phones and batches, how they
//! ended, and how the upstream calls went. Each part notes what it learns
//! (the JWT check, the tenant lookup, the stop) into the request's
//! [`RequestLog`]; the line is written once, at the end, with every field
//! on the event.
//!
//! Cheaper than a span with a dozen empty fields recorded one by one: a
//! recorded span field is formatted into the span's text as it comes, and a
//! span is entered and left on every poll of the request.

use std::sync::{Arc, Mutex, PoisonError};

use crate::domain::{ProjectId, TenantId};

/// The fields of one request's log line (all optional: a request refused
/// early has few).
#[derive(Debug, Default)]
pub struct Fields {
    pub caller: Option<Arc<str>>,
    pub tenant: Option<TenantId>,
    pub project: Option<ProjectId>,
    pub ids: Option<usize>,
    pub batches: Option<usize>,
    pub stopped: Option<u64>,
    pub rejected: Option<u64>,
    pub failed: Option<u64>,
    pub unknown: Option<u64>,
    pub upstream_calls: Option<u32>,
    pub upstream_failed: Option<u32>,
    pub upstream_max_ms: Option<f64>,
}

/// One request's [`Fields`], shared by whoever works on it (the stop may go
/// on in a task of its own when the caller leaves).
#[derive(Debug, Default)]
pub struct RequestLog(Mutex<Fields>);

impl RequestLog {
    /// Notes what `f` sets.
    pub fn note(&self, f: impl FnOnce(&mut Fields)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The fields noted, taken for the request's line (once its work is
    /// over).
    pub fn take(&self) -> Fields {
        std::mem::take(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

tokio::task_local! {
    static CURRENT: Arc<RequestLog>;
}

/// Runs `fut` with `log` as its request's log (see [`note`]). (Not an
/// `async fn`: one would hold `fut` twice, as its argument and as what it
/// awaits, doubling the request's future.)
pub fn scope<F: Future>(log: Arc<RequestLog>, fut: F) -> impl Future<Output = F::Output> {
    CURRENT.scope(log, fut)
}

/// The current request's log, if the code runs for a request.
pub fn current() -> Option<Arc<RequestLog>> {
    CURRENT.try_with(Arc::clone).ok()
}

/// Notes what `f` sets in the current request's log (nothing outside a
/// request).
pub fn note(f: impl FnOnce(&mut Fields)) {
    let _ = CURRENT.try_with(|log| log.note(f));
}

/// Writes the request's line (`request`, at `info`) in the current span:
/// `status`, `latency_ms`, the fields noted, and `caller_gone=true` for a
/// stop that ended after its caller left.
pub fn write_line(status: u16, latency_ms: f64, fields: &Fields, caller_gone: bool) {
    tracing::info!(
        status,
        latency_ms,
        caller = fields.caller.as_deref(),
        tenant = fields.tenant.as_ref().map(TenantId::as_str),
        project = fields.project.as_ref().map(ProjectId::as_str),
        ids = fields.ids,
        batches = fields.batches,
        stopped = fields.stopped,
        rejected = fields.rejected,
        failed = fields.failed,
        unknown = fields.unknown,
        upstream_calls = fields.upstream_calls,
        upstream_failed = fields.upstream_failed,
        upstream_max_ms = fields.upstream_max_ms,
        caller_gone = caller_gone.then_some(true),
        "request"
    );
}
