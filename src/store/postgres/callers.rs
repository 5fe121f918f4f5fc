//! Idempotency keys in SQL (stop records are in `records.rs`), and the
//! prune of both. A key is claimed with one
//! `INSERT .. ON CONFLICT DO NOTHING`; an existing one is read under a row
//! lock and judged against the database's clock, the same for every replica.
//!
//! These writes commit without waiting for the WAL to reach the disk (the
//! store's connections use `synchronous_commit = off`; tenant changes turn
//! it back on for their own transactions): they sit on a stop's path, and
//! what a database crash could lose of them (the last fraction of a second)
//! costs at most a stop sent again, which CPH answers per phone.

use sqlx::Row;
use sqlx::postgres::PgPool;

use super::records::{batches_json, bind_record, record_statement};
use crate::store::{Claimed, KeyClaim, Retention, StopRecord};

pub(super) async fn claim(
    pool: &PgPool,
    claim: &KeyClaim,
    retention: &Retention,
) -> Result<Claimed, sqlx::Error> {
    // A new key (the common case) is one statement; an existing one is
    // judged under its row lock.
    let inserted = sqlx::query(
        "INSERT INTO cphgw_idempotency_keys (tenant, key, fingerprint, request_id, lease_until, expires_at) \
         VALUES ($1, $2, $3, $4, now() + make_interval(secs => $5), now() + make_interval(secs => $6)) \
         ON CONFLICT (tenant, key) DO NOTHING",
    )
    .bind(&claim.tenant)
    .bind(&claim.key)
    .bind(&claim.fingerprint)
    .bind(&claim.request_id)
    .bind(claim.lease.as_secs_f64())
    .bind(retention.keys.as_secs_f64())
    .execute(pool)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claimed::New);
    }
    let mut tx = pool.begin().await?;
    let row = sqlx::query(
        "SELECT fingerprint, request_id, status, body, \
         coalesce(lease_until > now(), false) AS live, expires_at < now() AS expired \
         FROM cphgw_idempotency_keys WHERE tenant = $1 AND key = $2 FOR UPDATE",
    )
    .bind(&claim.tenant)
    .bind(&claim.key)
    .fetch_one(&mut *tx)
    .await?;
    let fingerprint: String = row.try_get("fingerprint")?;
    let request_id: String = row.try_get("request_id")?;
    let status: Option<i16> = row.try_get("status")?;
    let body: Option<Vec<u8>> = row.try_get("body")?;
    let live: bool = row.try_get("live")?;
    let expired: bool = row.try_get("expired")?;
    let outcome = if expired {
        // Past its retention but not yet pruned: as good as new.
        sqlx::query(
            "UPDATE cphgw_idempotency_keys SET fingerprint = $3, request_id = $4, \
             lease_until = now() + make_interval(secs => $5), status = NULL, body = NULL, \
             expires_at = now() + make_interval(secs => $6) WHERE tenant = $1 AND key = $2",
        )
        .bind(&claim.tenant)
        .bind(&claim.key)
        .bind(&claim.fingerprint)
        .bind(&claim.request_id)
        .bind(claim.lease.as_secs_f64())
        .bind(retention.keys.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        Claimed::New
    } else if fingerprint != claim.fingerprint {
        Claimed::Mismatch
    } else if let (Some(status), Some(body)) = (status, body) {
        Claimed::Replay {
            status: u16::try_from(status).unwrap_or(500),
            body,
            request_id,
        }
    } else if live {
        Claimed::InFlight
    } else {
        sqlx::query(
            "UPDATE cphgw_idempotency_keys SET lease_until = now() + make_interval(secs => $3) \
             WHERE tenant = $1 AND key = $2",
        )
        .bind(&claim.tenant)
        .bind(&claim.key)
        .bind(claim.lease.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        Claimed::TakenOver { request_id }
    };
    tx.commit().await?;
    Ok(outcome)
}

pub(super) async fn finish(
    pool: &PgPool,
    tenant: &str,
    key: &str,
    answer: Option<(u16, Vec<u8>)>,
    record: Option<&StopRecord>,
    retention: &Retention,
) -> Result<(), sqlx::Error> {
    // The key's answer (or its release) and the record, in one statement.
    let key_cte = match answer {
        Some(_) => {
            "k AS (UPDATE cphgw_idempotency_keys SET status = $10, body = $11, lease_until = NULL \
             WHERE tenant = $8 AND key = $9 RETURNING 1),"
        }
        None => {
            "k AS (DELETE FROM cphgw_idempotency_keys \
             WHERE tenant = $8 AND key = $9 AND status IS NULL AND $10::int2 IS NULL AND $11::bytea IS NULL RETURNING 1),"
        }
    };
    let (status, body) = match answer {
        Some((status, body)) => (Some(status as i16), Some(body)),
        None => (None, None),
    };
    match record {
        Some(record) => {
            let sql = record_statement(key_cte.trim_end_matches(','));
            bind_record(&sql, record, batches_json(record.batches.iter()), retention)
                .bind(tenant)
                .bind(key)
                .bind(status)
                .bind(body)
                .execute(pool)
                .await?;
        }
        None => {
            let sql = format!(
                "WITH {} SELECT count(*) FROM k",
                key_cte.trim_end_matches(',')
            )
            .replace("$8", "$1")
            .replace("$9", "$2")
            .replace("$10", "$3")
            .replace("$11", "$4");
            sqlx::query(&sql)
                .bind(tenant)
                .bind(key)
                .bind(status)
                .bind(body)
                .execute(pool)
                .await?;
        }
    }
    Ok(())
}

/// Deletes keys and records past their retention.
pub(super) async fn prune(pool: &PgPool) -> Result<(u64, u64), sqlx::Error> {
    let keys = sqlx::query("DELETE FROM cphgw_idempotency_keys WHERE expires_at < now()")
        .execute(pool)
        .await?
        .rows_affected();
    // A record's batches go with it (there is no foreign key to cascade).
    let records = sqlx::query(
        "WITH gone AS (DELETE FROM cphgw_stop_records WHERE expires_at < now() \
           RETURNING tenant, request_id), \
         batches AS (DELETE FROM cphgw_stop_batches b USING gone \
           WHERE b.tenant = gone.tenant AND b.request_id = gone.request_id) \
         SELECT count(*) FROM gone",
    )
    .fetch_one(pool)
    .await?
    .try_get::<i64, _>(0)?;
    Ok((keys, u64::try_from(records).unwrap_or(0)))
}
