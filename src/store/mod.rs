//! The one seam for everything replicas share: tenant mappings, the admin
//! audit, idempotency keys and stop records. Two
//! implementations, chosen by `[store]`: [`memory::MemoryStore`] (a gateway
//! running alone: tenants from the tenants file, the rest in memory) and
//! [`postgres::PgStore`] (a fleet on one PostgreSQL database). Nothing above
//! this module knows which one it talks to.

pub mod memory;
pub mod postgres;

use std::sync::Arc;

use async_trait::async_trait;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::tenants::{TenantSpec, TenantsFile};

/// Which store this is (`/admin/v1/status` `store.kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// No shared store: the gateway runs alone.
    None,
    Postgres,
}

/// The whole mapping as the store holds it, and its revision.
#[derive(Debug, Clone, Default)]
pub struct TenantsSnapshot {
    /// The same number on every replica that has the same mapping: the
    /// store's change counter, or (without a store) derived from the content.
    pub revision: u64,
    pub file: TenantsFile,
}

/// An `If-Match` / `If-None-Match` precondition of an admin write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Precondition {
    /// Unconditional.
    None,
    /// `If-Match`: the tenant exists and its ETag is one of these (`*`:
    /// any existing tenant).
    IfMatch(Vec<String>),
    /// `If-None-Match: *`: the tenant does not exist (create only).
    IfNoneMatchAny,
}

impl Precondition {
    /// Whether a tenant currently `current` satisfies the precondition.
    pub fn holds(&self, current: Option<&TenantSpec>) -> bool {
        match (self, current) {
            (Precondition::None, _) => true,
            (Precondition::IfNoneMatchAny, current) => current.is_none(),
            (Precondition::IfMatch(_), None) => false,
            (Precondition::IfMatch(tags), Some(spec)) => {
                let tag = etag(spec);
                tags.iter().any(|t| t == "*" || *t == tag)
            }
        }
    }
}

/// What a write changed.
#[derive(Debug, Clone)]
pub struct Written {
    /// The tenant before the write (`None`: it was created).
    pub before: Option<TenantSpec>,
    /// The mapping's revision after the write.
    pub revision: u64,
}

/// What the audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditAction {
    Put,
    Delete,
    Import,
    Reload,
}

impl AuditAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::Put => "put",
            AuditAction::Delete => "delete",
            AuditAction::Import => "import",
            AuditAction::Reload => "reload",
        }
    }
}

/// One admin change (`GET /admin/v1/audit`).
#[derive(Debug, Clone, Serialize)]
pub struct AuditEvent {
    #[serde(serialize_with = "rfc3339")]
    pub at: OffsetDateTime,
    /// The admin JWT's `sub`.
    pub who: String,
    pub action: AuditAction,
    pub tenant: Option<String>,
    pub before: Option<TenantSpec>,
    pub after: Option<TenantSpec>,
}

/// How long what the store keeps lives.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub audit: std::time::Duration,
    /// Idempotency keys and the answers they replay.
    pub keys: std::time::Duration,
    /// Stop records.
    pub records: std::time::Duration,
}

impl Retention {
    /// `store.audit_retention_days`, `idempotency.retention_s`,
    /// `tracking.retention_s`.
    pub fn of(config: &crate::config::Config) -> Self {
        Self {
            audit: config.store.audit_retention,
            keys: config.idempotency.retention,
            records: config.tracking.retention,
        }
    }
}

/// A request that carries an `Idempotency-Key`, claiming it.
#[derive(Debug, Clone)]
pub struct KeyClaim {
    pub tenant: String,
    pub key: String,
    /// Hex SHA-256 of the request: project and distinct phone ids in order.
    pub fingerprint: String,
    pub request_id: String,
    /// How long the claim holds while the request runs; after that another
    /// replica may take the key over (the holder is presumed dead).
    pub lease: std::time::Duration,
}

/// What a claim came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// The key is this request's: run it.
    New,
    /// The first request with this key answered: answer the same.
    Replay {
        status: u16,
        body: Vec<u8>,
        request_id: String,
    },
    /// The first request with this key is still running.
    InFlight,
    /// The key was used for a different request.
    Mismatch,
    /// The first request's replica stopped holding the key before it
    /// answered: this request resumes that stop (same request id).
    TakenOver { request_id: String },
}

/// One phone's entry in a stop record: what its caller was answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct RecordEntry {
    /// Shared with the stop's plan (no copy per phone).
    pub phone_id: Arc<str>,
    /// Shared with the stop's answer (no copy per phone).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job_id: Option<Arc<str>>,
    /// Shared with the batch's other entries that carry the same text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<Arc<str>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_msg: Option<Arc<str>>,
    /// The stop was sent and no answer came: its outcome is unknown.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub unknown: bool,
}

/// One upstream batch of a stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordBatch {
    pub index: u32,
    /// Shared with the stop's plan (no copy per phone).
    pub phone_ids: Vec<Arc<str>>,
    /// CPH's `request_id`s of the batch-stop answers (what the job list
    /// takes): one, or several when a refused batch was split.
    pub upstream_request_ids: Vec<String>,
    /// `None` until the batch has an outcome.
    pub entries: Option<Vec<RecordEntry>>,
}

/// What a stop did, kept for `tracking.retention_s`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StopRecord {
    pub tenant: Arc<str>,
    pub request_id: Arc<str>,
    /// The `sub` of the JWT that made the stop.
    pub caller: Arc<str>,
    pub project_id: Arc<str>,
    pub created_at: OffsetDateTime,
    pub batches: Vec<RecordBatch>,
}

impl StopRecord {
    /// Phone ids in the record.
    pub fn phones(&self) -> usize {
        self.batches.iter().map(|b| b.phone_ids.len()).sum()
    }
}

/// Why the store could not do what was asked.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database cannot be reached (or answered with a failure that is
    /// not about the request).
    #[error("the shared store is unreachable: {0}")]
    Unavailable(String),
    /// `If-Match` / `If-None-Match` did not hold.
    #[error("the tenant changed since the given ETag (or exists, for If-None-Match: *)")]
    PreconditionFailed,
    #[error("unknown tenant {0}")]
    UnknownTenant(String),
    /// The change would make an invalid mapping (the message names the field).
    #[error("{0}")]
    Invalid(String),
}

/// The shared state of the gateway's replicas.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    fn kind(&self) -> StoreKind;

    /// Whether the last call reached the store.
    fn is_up(&self) -> bool;

    /// Whether the store answers (a round trip, no schema needed).
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Applies the schema (idempotent; safe from several replicas at once).
    async fn migrate(&self) -> Result<(), StoreError>;

    /// The whole mapping and its revision.
    async fn tenants(&self) -> Result<TenantsSnapshot, StoreError>;

    /// The mapping's revision alone (cheap).
    async fn revision(&self) -> Result<u64, StoreError>;

    /// Creates or replaces a tenant (already validated by the caller), with
    /// its audit event, atomically.
    async fn put_tenant(
        &self,
        name: &str,
        spec: &TenantSpec,
        precondition: &Precondition,
        who: &str,
    ) -> Result<Written, StoreError>;

    /// Removes a tenant, with its audit event, atomically.
    async fn delete_tenant(
        &self,
        name: &str,
        precondition: &Precondition,
        who: &str,
    ) -> Result<Written, StoreError>;

    /// Makes the mapping equal to `file` in one transaction, one audit event
    /// per changed tenant. `None` when nothing changed (no event, the
    /// revision stays).
    async fn import(&self, file: &TenantsFile, who: &str) -> Result<Option<u64>, StoreError>;

    /// Appends an audit event that is not a write of the store's own (a
    /// reload).
    async fn append_audit(&self, event: AuditEvent) -> Result<(), StoreError>;

    /// The newest events first, at most `limit`, of one tenant or all.
    async fn audit(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError>;

    /// Claims an idempotency key atomically (across replicas with a shared
    /// store).
    async fn claim_key(&self, claim: &KeyClaim) -> Result<Claimed, StoreError>;

    /// Ends a claim: with the answer to replay (`Some`), or by letting the
    /// key go when nothing was sent (`None`); and writes the stop's record,
    /// in the same transaction.
    async fn finish_key(
        &self,
        claim: &KeyClaim,
        answer: Option<(u16, Vec<u8>)>,
        record: Option<Arc<StopRecord>>,
    ) -> Result<(), StoreError>;

    /// Writes whole stop records, each replacing one with the same tenant
    /// and request id (the last of a request id given twice wins): what the
    /// record writer sends, in one statement where the store can.
    async fn put_records(&self, records: &[Arc<StopRecord>]) -> Result<(), StoreError>;

    /// Writes one batch of a record (its outcome, as it comes), and the
    /// record's head (`record`'s own batches are not written) if it is not
    /// there yet.
    async fn put_record_batch(
        &self,
        record: &StopRecord,
        batch: &RecordBatch,
    ) -> Result<(), StoreError>;

    /// The record of `request_id` made by `tenant`, if it is still kept.
    async fn stop_record(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<StopRecord>, StoreError>;

    /// Deletes what is past its retention (audit events, later keys and
    /// records); called periodically by one task per replica.
    async fn prune(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Revisions announced by other replicas as they happen; a bump of the
    /// channel with the same value means "re-read everything" (after a
    /// reconnect, when notifications may have been lost).
    fn notifications(&self) -> watch::Receiver<u64>;
}

fn rfc3339<S: serde::Serializer>(at: &OffsetDateTime, s: S) -> Result<S::Ok, S::Error> {
    let text = at
        .format(&time::format_description::well_known::Rfc3339)
        .map_err(serde::ser::Error::custom)?;
    s.serialize_str(&text)
}

/// The strong validator of a tenant's stored version: a hash of its body.
pub fn etag(spec: &TenantSpec) -> String {
    let body = serde_json::to_vec(spec).unwrap_or_default();
    let digest = Sha256::digest(&body);
    format!("\"{}\"", hex::encode(&digest[..12]))
}

/// The revision of a mapping without a store: the first 53 bits of the
/// SHA-256 of the mapping in canonical JSON (tenants sorted by name, fields
/// in a fixed order), so every replica with the same mapping has the same
/// number, however its file is formatted, and a JSON number or a Prometheus
/// gauge holds it exactly.
pub fn content_revision(file: &TenantsFile) -> u64 {
    let body = serde_json::to_vec(file).unwrap_or_default();
    let digest = Sha256::digest(&body);
    let mut n = [0u8; 8];
    n.copy_from_slice(&digest[..8]);
    u64::from_be_bytes(n) & ((1 << 53) - 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenants::ProjectSpec;

    fn spec(p: &str) -> TenantSpec {
        TenantSpec {
            default_project: p.into(),
            projects: vec![ProjectSpec {
                project_id: p.into(),
                region: "cn-east-3".into(),
                credential: "default".into(),
            }],
        }
    }

    #[test]
    fn preconditions() {
        let a = spec("0a1b2c3d4e5f60718293a4b5c6d7e8f9");
        let b = spec("1a1b2c3d4e5f60718293a4b5c6d7e8f9");
        assert_ne!(etag(&a), etag(&b));
        assert!(Precondition::None.holds(None));
        assert!(Precondition::IfNoneMatchAny.holds(None));
        assert!(!Precondition::IfNoneMatchAny.holds(Some(&a)));
        assert!(Precondition::IfMatch(vec![etag(&a)]).holds(Some(&a)));
        assert!(!Precondition::IfMatch(vec![etag(&a)]).holds(Some(&b)));
        assert!(!Precondition::IfMatch(vec![etag(&a)]).holds(None));
        assert!(Precondition::IfMatch(vec!["*".into()]).holds(Some(&b)));
    }

    #[test]
    fn content_revisions_fit_a_double() {
        let mut f = TenantsFile::default();
        assert!(content_revision(&f) < 1 << 53);
        f.tenants
            .insert("a".into(), spec("0a1b2c3d4e5f60718293a4b5c6d7e8f9"));
        assert!(content_revision(&f) < 1 << 53);
        assert_ne!(
            content_revision(&f),
            content_revision(&TenantsFile::default())
        );
    }
}
