//! Idempotency keys and stop records in SQL. A key is claimed with one
//! `INSERT .. ON CONFLICT DO NOTHING`; an existing one is read under a row
//! lock and judged against the database's clock, the same for every replica.
//!
//! These writes commit without waiting for the WAL to reach the disk (the
//! store's connections use `synchronous_commit = off`; tenant changes turn
//! it back on for their own transactions): they sit on a stop's path, and
//! what a database crash could lose of them (the last fraction of a second)
//! costs at most a stop sent again, which CPH answers per phone.

use std::borrow::Cow;

use sqlx::Row;
use sqlx::postgres::PgPool;
use sqlx::types::Json;

use crate::store::{Claimed, KeyClaim, RecordBatch, RecordEntry, Retention, StopRecord};

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

/// The statement that writes a whole record: its head (`$1`-`$6`) and its
/// batches (`$7`, a JSON array) in one row, replacing one with the same
/// tenant and request id; `{key}` is an optional common table expression on
/// the idempotency key. One statement: one round trip, and atomic.
fn record_statement(key: &str) -> String {
    format!(
        "{key} INSERT INTO cphgw_stop_records \
           (tenant, request_id, caller, project_id, created_at, expires_at, batches) \
         VALUES ($1, $2, $3, $4, $5, $5 + make_interval(secs => $6), $7::jsonb) \
         ON CONFLICT (tenant, request_id) DO UPDATE SET caller = EXCLUDED.caller, \
           project_id = EXCLUDED.project_id, created_at = EXCLUDED.created_at, \
           expires_at = EXCLUDED.expires_at, batches = EXCLUDED.batches"
    )
}

/// The statement that writes one batch's outcome as it comes (a row of its
/// own in `cphgw_stop_batches`), and the record's head (`$1`-`$6`, no
/// batches) if it is not there yet.
const BATCH_STATEMENT: &str = "WITH head AS ( \
       INSERT INTO cphgw_stop_records (tenant, request_id, caller, project_id, created_at, expires_at) \
       VALUES ($1, $2, $3, $4, $5, $5 + make_interval(secs => $6)) \
       ON CONFLICT (tenant, request_id) DO NOTHING RETURNING 1) \
     INSERT INTO cphgw_stop_batches (tenant, request_id, index, phone_ids, upstream_request_ids, entries) \
     SELECT $1, $2, b.index, \
       ARRAY(SELECT jsonb_array_elements_text(b.phone_ids)), \
       ARRAY(SELECT jsonb_array_elements_text(b.upstream_request_ids)), b.entries \
     FROM jsonb_to_recordset($7::jsonb) \
       AS b(index int, phone_ids jsonb, upstream_request_ids jsonb, entries jsonb) \
     ON CONFLICT (tenant, request_id, index) DO UPDATE SET phone_ids = EXCLUDED.phone_ids, \
       upstream_request_ids = EXCLUDED.upstream_request_ids, entries = EXCLUDED.entries";

/// A record's batch as stored in JSON (the `batches` column, and what
/// `BATCH_STATEMENT` reads).
#[derive(serde::Serialize, serde::Deserialize)]
struct StoredBatch<'a> {
    index: u32,
    #[serde(borrow)]
    phone_ids: Vec<Cow<'a, str>>,
    #[serde(borrow)]
    upstream_request_ids: Vec<Cow<'a, str>>,
    entries: Option<Cow<'a, [RecordEntry]>>,
}

impl<'a> StoredBatch<'a> {
    fn of(b: &'a RecordBatch) -> Self {
        Self {
            index: b.index,
            phone_ids: b.phone_ids.iter().map(|s| s.as_str().into()).collect(),
            upstream_request_ids: b
                .upstream_request_ids
                .iter()
                .map(|s| s.as_str().into())
                .collect(),
            entries: b.entries.as_deref().map(Into::into),
        }
    }

    fn into_batch(self) -> RecordBatch {
        RecordBatch {
            index: self.index,
            phone_ids: self.phone_ids.into_iter().map(Into::into).collect(),
            upstream_request_ids: self
                .upstream_request_ids
                .into_iter()
                .map(Into::into)
                .collect(),
            entries: self.entries.map(Cow::into_owned),
        }
    }
}

/// The batches of a record as the JSON array the statements read.
fn batches_json<'a>(batches: impl Iterator<Item = &'a RecordBatch>) -> serde_json::Value {
    serde_json::to_value(batches.map(StoredBatch::of).collect::<Vec<_>>())
        .unwrap_or_else(|_| serde_json::Value::Array(Vec::new()))
}

/// Binds `record_statement`'s `$1`-`$7`.
fn bind_record<'q>(
    sql: &'q str,
    record: &'q StopRecord,
    batches: serde_json::Value,
    retention: &Retention,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql)
        .bind(&record.tenant)
        .bind(&record.request_id)
        .bind(&record.caller)
        .bind(&record.project_id)
        .bind(record.created_at)
        .bind(retention.records.as_secs_f64())
        .bind(Json(batches))
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
            let sql = record_statement(&format!("WITH {}", key_cte.trim_end_matches(',')));
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

pub(super) async fn put_record(
    pool: &PgPool,
    record: &StopRecord,
    retention: &Retention,
) -> Result<(), sqlx::Error> {
    let sql = record_statement("");
    bind_record(&sql, record, batches_json(record.batches.iter()), retention)
        .execute(pool)
        .await?;
    Ok(())
}

/// Writes many whole records in one statement (one round trip, one
/// commit): what the record writer sends under load. Columns go as arrays
/// (`unnest`), and as a plain `INSERT` first: a request id seen before (a
/// caller's reused `X-Request-Id`) makes it fail, and only then is the
/// batch written again as an upsert, keeping the last record of an id.
pub(super) async fn put_records(
    pool: &PgPool,
    records: &[std::sync::Arc<StopRecord>],
    retention: &Retention,
) -> Result<(), sqlx::Error> {
    macro_rules! insert {
        () => {
            "INSERT INTO cphgw_stop_records \
           (tenant, request_id, caller, project_id, created_at, expires_at, batches) \
         SELECT t, r, c, p, at, at + make_interval(secs => $7), b::jsonb \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[]) \
           AS u(t, r, c, p, at, b)"
        };
    }
    let mut seen = std::collections::HashSet::with_capacity(records.len());
    let n = records.len();
    let (mut tenants, mut ids, mut callers, mut projects, mut ats, mut batches) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for record in records.iter().rev() {
        if !seen.insert((record.tenant.as_str(), record.request_id.as_str())) {
            continue;
        }
        let stored: Vec<StoredBatch<'_>> = record.batches.iter().map(StoredBatch::of).collect();
        batches.push(serde_json::to_string(&stored).map_err(|e| sqlx::Error::Encode(Box::new(e)))?);
        tenants.push(record.tenant.as_str());
        ids.push(record.request_id.as_str());
        callers.push(record.caller.as_str());
        projects.push(record.project_id.as_str());
        ats.push(record.created_at);
    }
    let insert = |sql: &'static str| {
        sqlx::query(sql)
            .bind(&tenants)
            .bind(&ids)
            .bind(&callers)
            .bind(&projects)
            .bind(&ats)
            .bind(&batches)
            .bind(retention.records.as_secs_f64())
    };
    match insert(insert!()).execute(pool).await {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            insert(concat!(
                insert!(),
                " ON CONFLICT (tenant, request_id) DO UPDATE SET caller = EXCLUDED.caller, \
                 project_id = EXCLUDED.project_id, created_at = EXCLUDED.created_at, \
                 expires_at = EXCLUDED.expires_at, batches = EXCLUDED.batches"
            ))
            .execute(pool)
            .await?;
        }
        done => {
            done?;
        }
    }
    Ok(())
}

pub(super) async fn put_record_batch(
    pool: &PgPool,
    record: &StopRecord,
    batch: &RecordBatch,
    retention: &Retention,
) -> Result<(), sqlx::Error> {
    bind_record(
        BATCH_STATEMENT,
        record,
        batches_json(std::iter::once(batch)),
        retention,
    )
    .execute(pool)
    .await?;
    Ok(())
}

pub(super) async fn record(
    pool: &PgPool,
    tenant: &str,
    request_id: &str,
) -> Result<Option<StopRecord>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let Some(head) = sqlx::query(
        "SELECT caller, project_id, created_at, batches::text FROM cphgw_stop_records \
         WHERE tenant = $1 AND request_id = $2 AND expires_at > now()",
    )
    .bind(tenant)
    .bind(request_id)
    .fetch_optional(&mut *tx)
    .await?
    else {
        return Ok(None);
    };
    let whole: Option<String> = head.try_get(3)?;
    if let Some(text) = whole {
        tx.commit().await?;
        let stored: Vec<StoredBatch<'_>> =
            serde_json::from_str(&text).map_err(|e| sqlx::Error::Decode(Box::new(e)))?;
        return Ok(Some(StopRecord {
            tenant: tenant.to_owned(),
            request_id: request_id.to_owned(),
            caller: head.try_get(0)?,
            project_id: head.try_get(1)?,
            created_at: head.try_get(2)?,
            batches: stored.into_iter().map(StoredBatch::into_batch).collect(),
        }));
    }
    // A record written batch by batch (a keyed stop still running, or one
    // whose replica stopped before its end).
    let rows = sqlx::query(
        "SELECT index, phone_ids, upstream_request_ids, entries FROM cphgw_stop_batches \
         WHERE tenant = $1 AND request_id = $2 ORDER BY index",
    )
    .bind(tenant)
    .bind(request_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let batches = rows
        .into_iter()
        .map(|row| {
            let index: i32 = row.try_get(0)?;
            let entries: Option<Json<Vec<RecordEntry>>> = row.try_get(3)?;
            Ok(RecordBatch {
                index: u32::try_from(index).unwrap_or(0),
                phone_ids: row.try_get(1)?,
                upstream_request_ids: row.try_get(2)?,
                entries: entries.map(|j| j.0),
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Some(StopRecord {
        tenant: tenant.to_owned(),
        request_id: request_id.to_owned(),
        caller: head.try_get(0)?,
        project_id: head.try_get(1)?,
        created_at: head.try_get(2)?,
        batches,
    }))
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
