//! The store of a gateway running alone: tenants from the tenants file
//! (admin writes rewrite it atomically; edits on disk are picked up by the
//! watcher), the audit as the last 1000 events of this process, idempotency
//! keys and stop records in bounded caches (lost on restart).

mod callers;
mod records;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::watch;

use super::{
    AuditAction, AuditEvent, Claimed, KeyClaim, Precondition, RecordBatch, Retention, StopRecord,
    Store, StoreError, StoreKind, TenantsSnapshot, Written, content_revision,
};
use crate::config::IamConfig;
use crate::tenants::file::{TenantsError, parse_file, read_file, render, write_atomically};
use crate::tenants::{Registry, TenantSpec, TenantsFile};
use callers::Callers;

pub use callers::{KEY_BYTES_KEPT, RECORD_BYTES_KEPT};

/// How many audit events a gateway without a store keeps.
pub const AUDIT_KEPT: usize = 1000;

/// The file as last read or written, when it was valid.
struct Applied {
    /// Hash of the file's text: an unchanged file is not parsed again.
    text_hash: [u8; 32],
    file: TenantsFile,
}

pub struct MemoryStore {
    path: PathBuf,
    iam: IamConfig,
    /// Serialises writers of the file, and what was last applied.
    applied: tokio::sync::Mutex<Option<Applied>>,
    /// Writes made through the admin API; a read that saw one happen
    /// while it was reading the file gives way to it.
    writes: std::sync::atomic::AtomicU64,
    audit: Mutex<VecDeque<AuditEvent>>,
    notify: watch::Sender<u64>,
    callers: Callers,
}

impl MemoryStore {
    /// Reads the tenants file now (at start a bad file is fatal) and
    /// returns the store with the mapping it holds.
    pub fn open(
        path: PathBuf,
        iam: IamConfig,
        retention: Retention,
    ) -> Result<(Self, TenantsSnapshot), TenantsError> {
        let text = read_file(&path)?;
        let registry = parse_file(&path, &text, &iam)?;
        let file = registry.spec().clone();
        let snapshot = TenantsSnapshot {
            revision: content_revision(&file),
            file: file.clone(),
        };
        let store = Self {
            path,
            iam,
            applied: tokio::sync::Mutex::new(Some(Applied {
                text_hash: Sha256::digest(text.as_bytes()).into(),
                file,
            })),
            writes: Default::default(),
            audit: Mutex::new(VecDeque::with_capacity(64)),
            notify: watch::channel(0).0,
            callers: Callers::new(retention),
        };
        Ok((store, snapshot))
    }

    fn push(&self, event: AuditEvent) {
        let mut audit = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        if audit.len() == AUDIT_KEPT {
            audit.pop_front();
        }
        audit.push_back(event);
    }

    /// Reads and validates the file (off the async threads, and outside the
    /// writers' lock, so that an odd file cannot hold up admin writes); the
    /// last good content stays when it is invalid.
    async fn read(&self) -> Result<TenantsFile, StoreError> {
        use std::sync::atomic::Ordering;
        let writes = self.writes.load(Ordering::Acquire);
        let path = self.path.clone();
        let iam = self.iam.clone();
        let read = tokio::task::spawn_blocking(move || -> Result<_, TenantsError> {
            let text = read_file(&path)?;
            let hash: [u8; 32] = Sha256::digest(text.as_bytes()).into();
            Ok((text, hash, path, iam))
        })
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))?
        .map_err(|e| StoreError::Invalid(e.to_string()))?;
        let (text, hash, path, iam) = read;
        let mut applied = self.applied.lock().await;
        if let Some(a) = applied.as_ref()
            && (a.text_hash == hash || self.writes.load(Ordering::Acquire) != writes)
        {
            return Ok(a.file.clone());
        }
        let registry: Registry =
            parse_file(&path, &text, &iam).map_err(|e| StoreError::Invalid(e.to_string()))?;
        let file = registry.spec().clone();
        *applied = Some(Applied {
            text_hash: hash,
            file: file.clone(),
        });
        Ok(file)
    }

    /// Applies `change` to the last good mapping, validates it, writes the
    /// file atomically; nothing changes on any error.
    async fn write(
        &self,
        change: impl FnOnce(&mut TenantsFile) -> Result<Option<TenantSpec>, StoreError>,
    ) -> Result<(Option<TenantSpec>, TenantsFile), StoreError> {
        let mut applied = self.applied.lock().await;
        let mut file = applied.as_ref().map(|a| a.file.clone()).unwrap_or_default();
        let before = change(&mut file)?;
        if file.tenants.is_empty() {
            // A tenants file with no tenants is refused when read (it is
            // probably truncated), so it is not written either.
            return Err(StoreError::Invalid(
                "the last tenant cannot be removed from the tenants file (a file with no tenants is refused as truncated)".into(),
            ));
        }
        let registry = Registry::build(file, &self.iam).map_err(StoreError::Invalid)?;
        let text = render(registry.spec());
        let path = self.path.clone();
        let bytes = text.clone().into_bytes();
        tokio::task::spawn_blocking(move || write_atomically(&path, &bytes))
            .await
            .map_err(|e| std::io::Error::other(e.to_string()))
            .and_then(|r| r)
            .map_err(|e| {
                tracing::error!(path = %self.path.display(), error = %e, "cannot write the tenants file; nothing changed");
                StoreError::Unavailable(format!("the tenants file could not be written: {e}"))
            })?;
        let file = registry.spec().clone();
        *applied = Some(Applied {
            text_hash: Sha256::digest(text.as_bytes()).into(),
            file: file.clone(),
        });
        self.writes
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
        Ok((before, file))
    }

    fn event(
        who: &str,
        action: AuditAction,
        tenant: &str,
        before: Option<TenantSpec>,
        after: Option<TenantSpec>,
    ) -> AuditEvent {
        AuditEvent {
            at: OffsetDateTime::now_utc(),
            who: who.to_owned(),
            action,
            tenant: Some(tenant.to_owned()),
            before,
            after,
        }
    }
}

#[async_trait]
impl Store for MemoryStore {
    fn kind(&self) -> StoreKind {
        StoreKind::None
    }

    fn is_up(&self) -> bool {
        true
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        Ok(())
    }

    async fn tenants(&self) -> Result<TenantsSnapshot, StoreError> {
        let file = self.read().await?;
        Ok(TenantsSnapshot {
            revision: content_revision(&file),
            file,
        })
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        Ok(self.tenants().await?.revision)
    }

    async fn put_tenant(
        &self,
        name: &str,
        spec: &TenantSpec,
        precondition: &Precondition,
        who: &str,
    ) -> Result<Written, StoreError> {
        let (before, file) = self
            .write(|file| {
                if !precondition.holds(file.tenants.get(name)) {
                    return Err(StoreError::PreconditionFailed);
                }
                Ok(file.tenants.insert(name.to_owned(), spec.clone()))
            })
            .await?;
        self.push(Self::event(
            who,
            AuditAction::Put,
            name,
            before.clone(),
            Some(spec.clone()),
        ));
        Ok(Written {
            before,
            revision: content_revision(&file),
        })
    }

    async fn delete_tenant(
        &self,
        name: &str,
        precondition: &Precondition,
        who: &str,
    ) -> Result<Written, StoreError> {
        let (before, file) = self
            .write(|file| {
                let current = file.tenants.get(name);
                if current.is_none() {
                    return Err(StoreError::UnknownTenant(name.to_owned()));
                }
                if !precondition.holds(current) {
                    return Err(StoreError::PreconditionFailed);
                }
                Ok(file.tenants.remove(name))
            })
            .await?;
        self.push(Self::event(
            who,
            AuditAction::Delete,
            name,
            before.clone(),
            None,
        ));
        Ok(Written {
            before,
            revision: content_revision(&file),
        })
    }

    async fn import(&self, file: &TenantsFile, who: &str) -> Result<Option<u64>, StoreError> {
        let current = self.read().await.unwrap_or_default();
        if current == *file {
            return Ok(None);
        }
        let (_, written) = self
            .write(|f| {
                *f = file.clone();
                Ok(None)
            })
            .await?;
        for (name, before, after) in changes(&current, &written) {
            self.push(Self::event(who, AuditAction::Import, name, before, after));
        }
        Ok(Some(content_revision(&written)))
    }

    async fn append_audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        self.push(event);
        Ok(())
    }

    async fn audit(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let audit = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        Ok(audit
            .iter()
            .rev()
            .filter(|e| tenant.is_none() || e.tenant.as_deref() == tenant)
            .take(limit)
            .cloned()
            .collect())
    }

    async fn claim_key(&self, claim: &KeyClaim) -> Result<Claimed, StoreError> {
        Ok(self.callers.claim(claim))
    }

    async fn finish_key(
        &self,
        claim: &KeyClaim,
        answer: Option<(u16, Vec<u8>)>,
        record: Option<Arc<StopRecord>>,
    ) -> Result<(), StoreError> {
        self.callers.finish(&claim.tenant, &claim.key, answer);
        if let Some(record) = record {
            self.callers.put_record(record);
        }
        Ok(())
    }

    async fn put_records(&self, records: &[Arc<StopRecord>]) -> Result<(), StoreError> {
        for record in records {
            self.callers.put_record(record.clone());
        }
        Ok(())
    }

    async fn put_record_batch(
        &self,
        record: &StopRecord,
        batch: &RecordBatch,
    ) -> Result<(), StoreError> {
        self.callers.put_record_batch(record, batch);
        Ok(())
    }

    async fn stop_record(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<StopRecord>, StoreError> {
        Ok(self.callers.record(tenant, request_id))
    }

    fn notifications(&self) -> watch::Receiver<u64> {
        self.notify.subscribe()
    }
}

/// The tenants that differ between two mappings: (name, before, after).
pub fn changes<'a>(
    before: &'a TenantsFile,
    after: &'a TenantsFile,
) -> Vec<(&'a str, Option<TenantSpec>, Option<TenantSpec>)> {
    let mut names: Vec<&str> = before
        .tenants
        .keys()
        .chain(after.tenants.keys())
        .map(String::as_str)
        .collect();
    names.sort_unstable();
    names.dedup();
    names
        .into_iter()
        .filter_map(|name| {
            let (b, a) = (before.tenants.get(name), after.tenants.get(name));
            (b != a).then(|| (name, b.cloned(), a.cloned()))
        })
        .collect()
}
