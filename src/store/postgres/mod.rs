//! The shared store on PostgreSQL (13 or newer): the schema in
//! `migrations/` applied under sqlx's advisory lock, every admin write one
//! transaction that bumps the mapping's revision, writes the audit event and
//! notifies the other replicas (`NOTIFY cphgw_tenants, '<revision>'`).

use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use secrecy::ExposeSecret;
use sqlx::Row;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::watch;

mod callers;
mod grouped;
mod held;
mod keys;
mod records;
mod tenants;

use super::memory::changes;
use super::{
    AuditAction, AuditEvent, Claimed, KeyClaim, Precondition, RecordBatch, Retention, StopRecord,
    Store, StoreError, StoreKind, TenantsSnapshot, Written,
};
use crate::config::Secret;
use crate::tenants::{TenantSpec, TenantsFile};
pub use tenants::{CHANNEL, RESYNC};
use tenants::{bump_revision, insert_event, lock_revision, read_all, write_one, write_tenant};

/// How long a call waits for a pooled connection before the store counts as
/// down.
const ACQUIRE_TIMEOUT: Duration = Duration::from_secs(3);

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// A pooled connection idle this long is checked before it is used.
pub(super) const CHECK_IDLE_AFTER: Duration = Duration::from_secs(1);

pub struct PgStore {
    pool: PgPool,
    up: Arc<AtomicBool>,
    retention: Retention,
    notify: watch::Sender<u64>,
    listening: std::sync::Once,
    /// Writes of the mapping queue here rather than for a connection: they
    /// are serialised by the database anyway (one row lock), and a queue of
    /// admins must not look like a store that is down.
    writers: tokio::sync::Semaphore,
    keys: keys::Keys,
}

impl PgStore {
    /// A pool that connects lazily: a store that is down at start does not
    /// stop the gateway from starting.
    pub fn new(url: Arc<Secret>, retention: Retention) -> Result<Self, StoreError> {
        let options = PgConnectOptions::from_str(url.current().expose_secret())
            .map_err(|_| {
                // sqlx's message may quote the URL, which may hold a password.
                StoreError::Invalid(format!("{}: not a valid PostgreSQL URL", url.key()))
            })?
            .application_name("cph-gateway")
            // Keys and records need not wait for the disk (see `callers`);
            // tenant changes turn it back on for their transactions.
            .options([("synchronous_commit", "off")]);
        let pool = PgPoolOptions::new()
            .max_connections(16)
            .min_connections(0)
            .acquire_timeout(ACQUIRE_TIMEOUT)
            .idle_timeout(Duration::from_secs(300))
            // A connection is checked (a round trip) only when it has been
            // idle for a while (it may have died with the database); one in
            // steady use is not, which would double every statement's round
            // trips (sqlx's default checks on every acquire).
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for < CHECK_IDLE_AFTER {
                        return Ok(true);
                    }
                    Ok(sqlx::Connection::ping(conn).await.is_ok())
                })
            })
            .connect_lazy_with(options);
        Ok(Self {
            keys: keys::Keys::new(&pool, retention),
            pool,
            up: Arc::new(AtomicBool::new(false)),
            retention,
            notify: watch::channel(0).0,
            listening: std::sync::Once::new(),
            writers: tokio::sync::Semaphore::new(1),
        })
    }

    /// Records whether a call reached the database.
    fn seen<T>(&self, result: Result<T, sqlx::Error>) -> Result<T, StoreError> {
        match result {
            Ok(v) => {
                self.up.store(true, Ordering::Relaxed);
                Ok(v)
            }
            Err(e) => {
                let err = classify(e);
                if matches!(err, StoreError::Unavailable(_)) {
                    self.up.store(false, Ordering::Relaxed);
                }
                Err(err)
            }
        }
    }
}

/// Constraint violations are the request's fault; anything else means the
/// store cannot serve.
fn classify(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.code().is_some_and(|c| c.starts_with("23")) => {
            StoreError::Invalid(format!("refused by the store: {}", db.message()))
        }
        _ => StoreError::Unavailable(e.to_string()),
    }
}

#[async_trait]
impl Store for PgStore {
    fn kind(&self) -> StoreKind {
        StoreKind::Postgres
    }

    fn is_up(&self) -> bool {
        self.up.load(Ordering::Relaxed)
    }

    async fn ping(&self) -> Result<(), StoreError> {
        let done = sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map(|_| ());
        self.seen(done)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        // sqlx takes an advisory lock, so replicas starting together apply
        // each migration once.
        let done = MIGRATOR.run(&self.pool).await.map_err(|e| match e {
            sqlx::migrate::MigrateError::Execute(e) => e,
            other => sqlx::Error::Migrate(Box::new(other)),
        });
        self.seen(done)
    }

    async fn tenants(&self) -> Result<TenantsSnapshot, StoreError> {
        let read = async {
            let mut tx = self.pool.begin().await?;
            sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
                .execute(&mut *tx)
                .await?;
            let rev: i64 = sqlx::query_scalar("SELECT tenants_revision FROM cphgw_meta")
                .fetch_one(&mut *tx)
                .await?;
            let file = read_all(&mut tx).await?;
            tx.commit().await?;
            Ok(TenantsSnapshot {
                revision: rev as u64,
                file,
            })
        }
        .await;
        self.seen(read)
    }

    async fn revision(&self) -> Result<u64, StoreError> {
        let rev: Result<i64, _> = sqlx::query_scalar("SELECT tenants_revision FROM cphgw_meta")
            .fetch_one(&self.pool)
            .await;
        self.seen(rev).map(|r| r as u64)
    }

    async fn put_tenant(
        &self,
        name: &str,
        spec: &TenantSpec,
        precondition: &Precondition,
        who: &str,
    ) -> Result<Written, StoreError> {
        let _turn = self.writers.acquire().await;
        self.seen(write_tenant(&self.pool, name, Some(spec), precondition, who).await)?
    }

    async fn delete_tenant(
        &self,
        name: &str,
        precondition: &Precondition,
        who: &str,
    ) -> Result<Written, StoreError> {
        let _turn = self.writers.acquire().await;
        self.seen(write_tenant(&self.pool, name, None, precondition, who).await)?
    }

    async fn import(&self, file: &TenantsFile, who: &str) -> Result<Option<u64>, StoreError> {
        let done = async {
            let mut tx = self.pool.begin().await?;
            lock_revision(&mut tx).await?;
            let current = read_all(&mut tx).await?;
            let changed = changes(&current, file);
            if changed.is_empty() {
                return Ok(None);
            }
            let revision = bump_revision(&mut tx).await?;
            for (name, before, after) in &changed {
                write_one(&mut tx, name, after.as_ref(), revision).await?;
                insert_event(
                    &mut tx,
                    who,
                    AuditAction::Import,
                    Some(name),
                    before.as_ref(),
                    after.as_ref(),
                )
                .await?;
            }
            tx.commit().await?;
            Ok(Some(revision))
        }
        .await;
        self.seen(done)
    }

    async fn append_audit(&self, event: AuditEvent) -> Result<(), StoreError> {
        let done = async {
            let mut conn = self.pool.acquire().await?;
            insert_event(
                &mut conn,
                &event.who,
                event.action,
                event.tenant.as_deref(),
                event.before.as_ref(),
                event.after.as_ref(),
            )
            .await
        }
        .await;
        self.seen(done)
    }

    async fn audit(
        &self,
        tenant: Option<&str>,
        limit: usize,
    ) -> Result<Vec<AuditEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, who, action, tenant, before, after FROM cphgw_audit \
             WHERE ($1::text IS NULL OR tenant = $1) ORDER BY id DESC LIMIT $2",
        )
        .bind(tenant)
        .bind(limit as i64)
        .fetch_all(&self.pool)
        .await;
        let rows = self.seen(rows)?;
        rows.into_iter()
            .map(|row| {
                let action: String = row.try_get(2)?;
                let before: Option<sqlx::types::Json<TenantSpec>> = row.try_get(4)?;
                let after: Option<sqlx::types::Json<TenantSpec>> = row.try_get(5)?;
                Ok(AuditEvent {
                    at: row.try_get(0)?,
                    who: row.try_get(1)?,
                    action: match action.as_str() {
                        "put" => AuditAction::Put,
                        "delete" => AuditAction::Delete,
                        "import" => AuditAction::Import,
                        _ => AuditAction::Reload,
                    },
                    tenant: row.try_get(3)?,
                    before: before.map(|j| j.0),
                    after: after.map(|j| j.0),
                })
            })
            .collect::<Result<_, sqlx::Error>>()
            .map_err(classify)
    }

    async fn prune(&self) -> Result<(), StoreError> {
        // Audit events older than `store.audit_retention_days`.
        let done =
            sqlx::query("DELETE FROM cphgw_audit WHERE at < now() - make_interval(secs => $1)")
                .bind(self.retention.audit.as_secs_f64())
                .execute(&self.pool)
                .await;
        let deleted = self.seen(done)?.rows_affected();
        let (keys, records) = self.seen(callers::prune(&self.pool).await)?;
        if deleted + keys + records > 0 {
            tracing::info!(
                audit_events = deleted,
                idempotency_keys = keys,
                stop_records = records,
                "deleted what is past its retention"
            );
        }
        Ok(())
    }

    async fn claim_key(&self, claim: &KeyClaim) -> Result<Claimed, StoreError> {
        self.seen(self.keys.claim(claim).await)
    }

    async fn finish_key(
        &self,
        claim: &KeyClaim,
        answer: Option<(u16, Vec<u8>)>,
        record: Option<Arc<StopRecord>>,
    ) -> Result<(), StoreError> {
        self.seen(self.keys.finish(claim, answer, record).await)
    }

    async fn put_records(&self, records: &[Arc<StopRecord>]) -> Result<(), StoreError> {
        self.seen(records::put_records(&self.pool, records, &self.retention).await)
    }

    async fn put_record_batch(
        &self,
        record: &StopRecord,
        batch: &RecordBatch,
    ) -> Result<(), StoreError> {
        let done = records::put_record_batch(&self.pool, record, batch, &self.retention).await;
        self.seen(done)
    }

    async fn stop_record(
        &self,
        tenant: &str,
        request_id: &str,
    ) -> Result<Option<StopRecord>, StoreError> {
        self.seen(records::record(&self.pool, tenant, request_id).await)
    }

    fn notifications(&self) -> watch::Receiver<u64> {
        self.listening
            .call_once(|| tenants::listen(&self.pool, &self.notify, &self.up));
        self.notify.subscribe()
    }
}
