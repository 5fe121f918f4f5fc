//! The store of a gateway running alone: tenants from the tenants file
//! (admin writes rewrite it atomically; edits on disk are picked up by the
//! watcher), the audit as the last 1000 events of this process, idempotency
//! keys and stop records in bounded caches (lost on restart).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Instant;

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

/// How many audit events a gateway without a store keeps.
pub const AUDIT_KEPT: usize = 1000;

/// Idempotency answers kept, in bytes of answer body.
pub const KEY_BYTES_KEPT: u64 = 64 * 1024 * 1024;
/// Stop records kept, in phones (about 150 bytes each).
pub const RECORD_PHONES_KEPT: u64 = 200_000;

/// An idempotency key in memory.
#[derive(Clone)]
enum Key {
    Running {
        fingerprint: String,
        request_id: String,
        lease_until: Instant,
    },
    Done {
        fingerprint: String,
        request_id: String,
        status: u16,
        body: Arc<[u8]>,
    },
}

impl Key {
    fn fingerprint(&self) -> &str {
        match self {
            Key::Running { fingerprint, .. } | Key::Done { fingerprint, .. } => fingerprint,
        }
    }
}

/// The file as last read or written, when it was valid.
struct Applied {
    /// Hash of the file's text: an unchanged file is not parsed again.
    text_hash: [u8; 32],
    file: TenantsFile,
}

pub struct MemoryStore {
    path: PathBuf,
    iam: IamConfig,
    /// Serialises writers and readers of the file.
    applied: tokio::sync::Mutex<Option<Applied>>,
    audit: Mutex<VecDeque<AuditEvent>>,
    notify: watch::Sender<u64>,
    keys: moka::sync::Cache<(String, String), Key>,
    records: moka::sync::Cache<(String, String), Arc<Mutex<StopRecord>>>,
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
            audit: Mutex::new(VecDeque::with_capacity(64)),
            notify: watch::channel(0).0,
            keys: moka::sync::Cache::builder()
                .max_capacity(KEY_BYTES_KEPT)
                .weigher(|_, k: &Key| match k {
                    Key::Done { body, .. } => u32::try_from(body.len() + 256).unwrap_or(u32::MAX),
                    Key::Running { .. } => 256,
                })
                .time_to_live(retention.keys)
                .build(),
            records: moka::sync::Cache::builder()
                .max_capacity(RECORD_PHONES_KEPT)
                .weigher(|_, r: &Arc<Mutex<StopRecord>>| {
                    let phones = r.lock().map(|r| r.phones()).unwrap_or(1);
                    u32::try_from(phones.max(1)).unwrap_or(u32::MAX)
                })
                .time_to_live(retention.records)
                .build(),
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

    /// Reads and validates the file (off the async threads); the last good
    /// content stays when it is invalid.
    async fn read(&self) -> Result<TenantsFile, StoreError> {
        let mut applied = self.applied.lock().await;
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
        if let Some(a) = applied.as_ref()
            && a.text_hash == hash
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
        use moka::ops::compute::Op;
        let mut outcome = Claimed::New;
        let running = Key::Running {
            fingerprint: claim.fingerprint.clone(),
            request_id: claim.request_id.clone(),
            lease_until: Instant::now() + claim.lease,
        };
        self.keys
            .entry((claim.tenant.clone(), claim.key.clone()))
            .and_compute_with(|existing| match existing.map(|e| e.into_value()) {
                None => Op::Put(running),
                Some(key) if key.fingerprint() != claim.fingerprint => {
                    outcome = Claimed::Mismatch;
                    Op::Nop
                }
                Some(Key::Done {
                    request_id,
                    status,
                    body,
                    ..
                }) => {
                    outcome = Claimed::Replay {
                        status,
                        body: body.to_vec(),
                        request_id,
                    };
                    Op::Nop
                }
                Some(Key::Running { lease_until, .. }) if lease_until > Instant::now() => {
                    outcome = Claimed::InFlight;
                    Op::Nop
                }
                Some(Key::Running { request_id, .. }) => {
                    outcome = Claimed::TakenOver {
                        request_id: request_id.clone(),
                    };
                    Op::Put(Key::Running {
                        fingerprint: claim.fingerprint.clone(),
                        request_id,
                        lease_until: Instant::now() + claim.lease,
                    })
                }
            });
        Ok(outcome)
    }

    async fn finish_key(
        &self,
        tenant: &str,
        key: &str,
        answer: Option<(u16, Vec<u8>)>,
    ) -> Result<(), StoreError> {
        let id = (tenant.to_owned(), key.to_owned());
        match (answer, self.keys.get(&id)) {
            (
                Some((status, body)),
                Some(Key::Running {
                    fingerprint,
                    request_id,
                    ..
                }),
            ) => self.keys.insert(
                id,
                Key::Done {
                    fingerprint,
                    request_id,
                    status,
                    body: body.into(),
                },
            ),
            (None, _) => self.keys.invalidate(&id),
            (Some(_), _) => {}
        }
        Ok(())
    }

    async fn put_record(&self, record: &StopRecord) -> Result<(), StoreError> {
        self.records.insert(
            (record.tenant.clone(), record.request_id.clone()),
            Arc::new(Mutex::new(record.clone())),
        );
        Ok(())
    }

    async fn put_record_batch(
        &self,
        tenant: &str,
        request_id: &str,
        batch: &RecordBatch,
    ) -> Result<(), StoreError> {
        let id = (tenant.to_owned(), request_id.to_owned());
        if let Some(record) = self.records.get(&id) {
            let mut record = record.lock().unwrap_or_else(|e| e.into_inner());
            match record.batches.iter_mut().find(|b| b.index == batch.index) {
                Some(b) => *b = batch.clone(),
                None => record.batches.push(batch.clone()),
            }
        }
        Ok(())
    }

    async fn stop_record(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<StopRecord>, StoreError> {
        Ok(self
            .records
            .get(&(tenant.to_owned(), request_id.to_owned()))
            .map(|r| r.lock().unwrap_or_else(|e| e.into_inner()).clone()))
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
