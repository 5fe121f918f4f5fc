//! The tenants and the audit in SQL: one transaction per change.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sqlx::postgres::{PgListener, PgPool};
use sqlx::{Postgres, Row, Transaction};
use tokio::sync::watch;

use crate::store::{AuditAction, Precondition, StoreError, Written};
use crate::tenants::{ProjectSpec, TenantSpec, TenantsFile};

/// The notification channel of tenant changes.
pub const CHANNEL: &str = "cphgw_tenants";

/// Locks the mapping for a write and returns its revision. Tenant changes
/// wait for the disk, whatever the connection's default.
pub(super) async fn lock_revision(tx: &mut Transaction<'_, Postgres>) -> Result<u64, sqlx::Error> {
    sqlx::query("SET LOCAL synchronous_commit TO ON")
        .execute(&mut **tx)
        .await?;
    let rev: i64 = sqlx::query_scalar("SELECT tenants_revision FROM cphgw_meta FOR UPDATE")
        .fetch_one(&mut **tx)
        .await?;
    Ok(rev as u64)
}

pub(super) async fn bump_revision(tx: &mut Transaction<'_, Postgres>) -> Result<u64, sqlx::Error> {
    let rev: i64 = sqlx::query_scalar(
        "UPDATE cphgw_meta SET tenants_revision = tenants_revision + 1 RETURNING tenants_revision",
    )
    .fetch_one(&mut **tx)
    .await?;
    sqlx::query("SELECT pg_notify($1, $2)")
        .bind(CHANNEL)
        .bind(rev.to_string())
        .execute(&mut **tx)
        .await?;
    Ok(rev as u64)
}

/// Every tenant, in one consistent read.
pub(super) async fn read_all(conn: &mut sqlx::PgConnection) -> Result<TenantsFile, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT t.name, t.default_project, p.project_id, p.region, p.credential \
         FROM cphgw_tenants t JOIN cphgw_tenant_projects p ON p.tenant = t.name \
         ORDER BY t.name, p.position",
    )
    .fetch_all(conn)
    .await?;
    let mut file = TenantsFile::default();
    for row in rows {
        let name: String = row.try_get(0)?;
        let spec = file.tenants.entry(name).or_insert_with(|| TenantSpec {
            default_project: String::new(),
            projects: Vec::new(),
        });
        spec.default_project = row.try_get(1)?;
        spec.projects.push(ProjectSpec {
            project_id: row.try_get(2)?,
            region: row.try_get(3)?,
            credential: row.try_get(4)?,
        });
    }
    Ok(file)
}

pub(super) async fn read_one(
    tx: &mut Transaction<'_, Postgres>,
    name: &str,
) -> Result<Option<TenantSpec>, sqlx::Error> {
    let rows = sqlx::query(
        "SELECT t.default_project, p.project_id, p.region, p.credential \
         FROM cphgw_tenants t JOIN cphgw_tenant_projects p ON p.tenant = t.name \
         WHERE t.name = $1 ORDER BY p.position",
    )
    .bind(name)
    .fetch_all(&mut **tx)
    .await?;
    let mut spec: Option<TenantSpec> = None;
    for row in rows {
        let s = spec.get_or_insert_with(|| TenantSpec {
            default_project: String::new(),
            projects: Vec::new(),
        });
        s.default_project = row.try_get(0)?;
        s.projects.push(ProjectSpec {
            project_id: row.try_get(1)?,
            region: row.try_get(2)?,
            credential: row.try_get(3)?,
        });
    }
    Ok(spec)
}

pub(super) async fn write_one(
    tx: &mut Transaction<'_, Postgres>,
    name: &str,
    spec: Option<&TenantSpec>,
    revision: u64,
) -> Result<(), sqlx::Error> {
    let Some(spec) = spec else {
        sqlx::query("DELETE FROM cphgw_tenants WHERE name = $1")
            .bind(name)
            .execute(&mut **tx)
            .await?;
        return Ok(());
    };
    sqlx::query(
        "INSERT INTO cphgw_tenants (name, default_project, revision) VALUES ($1, $2, $3) \
         ON CONFLICT (name) DO UPDATE SET default_project = EXCLUDED.default_project, \
         revision = EXCLUDED.revision, updated_at = now()",
    )
    .bind(name)
    .bind(&spec.default_project)
    .bind(revision as i64)
    .execute(&mut **tx)
    .await?;
    sqlx::query("DELETE FROM cphgw_tenant_projects WHERE tenant = $1")
        .bind(name)
        .execute(&mut **tx)
        .await?;
    let positions: Vec<i32> = (0..spec.projects.len() as i32).collect();
    let ids: Vec<&str> = spec
        .projects
        .iter()
        .map(|p| p.project_id.as_str())
        .collect();
    let regions: Vec<&str> = spec.projects.iter().map(|p| p.region.as_str()).collect();
    let creds: Vec<&str> = spec
        .projects
        .iter()
        .map(|p| p.credential.as_str())
        .collect();
    sqlx::query(
        "INSERT INTO cphgw_tenant_projects (tenant, position, project_id, region, credential) \
         SELECT $1, * FROM UNNEST($2::int[], $3::text[], $4::text[], $5::text[])",
    )
    .bind(name)
    .bind(&positions)
    .bind(&ids)
    .bind(&regions)
    .bind(&creds)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

pub(super) async fn insert_event(
    conn: &mut sqlx::PgConnection,
    who: &str,
    action: AuditAction,
    tenant: Option<&str>,
    before: Option<&TenantSpec>,
    after: Option<&TenantSpec>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO cphgw_audit (who, action, tenant, before, after) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(who)
    .bind(action.as_str())
    .bind(tenant)
    .bind(before.map(sqlx::types::Json))
    .bind(after.map(sqlx::types::Json))
    .execute(conn)
    .await?;
    Ok(())
}

/// One write of one tenant: lock, check, write, audit, notify, commit.
pub(super) async fn write_tenant(
    pool: &PgPool,
    name: &str,
    after: Option<&TenantSpec>,
    precondition: &Precondition,
    who: &str,
) -> Result<Result<Written, StoreError>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let current_rev = lock_revision(&mut tx).await?;
    let before = read_one(&mut tx, name).await?;
    if after.is_none() && before.is_none() {
        return Ok(Err(StoreError::UnknownTenant(name.to_owned())));
    }
    if !precondition.holds(before.as_ref()) {
        return Ok(Err(StoreError::PreconditionFailed));
    }
    if before.as_ref() == after {
        // Nothing to change: no new revision, no event.
        return Ok(Ok(Written {
            before,
            revision: current_rev,
        }));
    }
    let revision = bump_revision(&mut tx).await?;
    write_one(&mut tx, name, after, revision).await?;
    let action = if after.is_some() {
        AuditAction::Put
    } else {
        AuditAction::Delete
    };
    insert_event(&mut tx, who, action, Some(name), before.as_ref(), after).await?;
    tx.commit().await?;
    Ok(Ok(Written { before, revision }))
}

/// Listens for change notifications in the background, for as long as the
/// Sent on the notification watch after a reconnect of the listener: what
/// was notified meanwhile is lost, so everything is re-read.
pub const RESYNC: u64 = u64::MAX;

/// process runs; reconnects by itself and then asks for a resync.
pub(super) fn listen(pool: &PgPool, notify: &watch::Sender<u64>, up: &Arc<AtomicBool>) {
    let pool = pool.clone();
    let notify = notify.clone();
    let up = up.clone();
    tokio::spawn(async move {
        let mut delay = Duration::from_millis(250);
        loop {
            let listener = async {
                let mut l = PgListener::connect_with(&pool).await?;
                l.listen(CHANNEL).await?;
                Ok::<_, sqlx::Error>(l)
            }
            .await;
            let mut listener = match listener {
                Ok(l) => l,
                Err(e) => {
                    up.store(false, Ordering::Relaxed);
                    tracing::debug!(error = %e, "store listener cannot connect");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            delay = Duration::from_millis(250);
            // (Re)connected: what was sent meanwhile is lost.
            notify.send_replace(RESYNC);
            loop {
                match listener.try_recv().await {
                    Ok(Some(n)) => {
                        if let Ok(rev) = n.payload().parse::<u64>() {
                            notify.send_replace(rev);
                        }
                    }
                    // The connection was lost; the next call reconnects.
                    Ok(None) => {
                        up.store(false, Ordering::Relaxed);
                        notify.send_replace(RESYNC);
                    }
                    Err(e) => {
                        tracing::debug!(error = %e, "store listener lost");
                        break;
                    }
                }
            }
        }
    });
}
