//! Stop records in SQL: a whole record is one row of `cphgw_stop_records`
//! (its batches in a `json` column), written many at a time by the record
//! writer; a keyed stop's batch outcomes are rows of `cphgw_stop_batches` as
//! they come (what a resumed stop reads), superseded by the whole record.

use std::borrow::Cow;

use sqlx::Row;
use sqlx::postgres::PgPool;
use sqlx::types::Json;

use crate::store::{RecordBatch, RecordEntry, Retention, StopRecord};

/// The statement that writes one batch's outcome as it comes (a row of its
/// own in `cphgw_stop_batches`, from `$7`: a JSON array of the batch), and
/// the record's head (`$1`-`$6`, no batches) if it is not there yet.
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
            phone_ids: b.phone_ids.iter().map(|s| Cow::Borrowed(&**s)).collect(),
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

/// Whole records as columns of arrays (for `unnest`), `$1`-`$6`: tenant,
/// request id, caller, project, creation time, batches (JSON text). A
/// request id seen twice (a caller's reused `X-Request-Id`) keeps its last
/// record: one statement may not write a row twice.
pub(super) struct Columns<'a> {
    tenants: Vec<&'a str>,
    ids: Vec<&'a str>,
    callers: Vec<&'a str>,
    projects: Vec<&'a str>,
    ats: Vec<time::OffsetDateTime>,
    batches: Vec<String>,
}

impl<'a> Columns<'a> {
    pub(super) fn of(
        records: impl DoubleEndedIterator<Item = &'a StopRecord>,
    ) -> Result<Self, sqlx::Error> {
        let n = records.size_hint().0;
        let mut seen = std::collections::HashSet::with_capacity(n);
        let mut c = Self {
            tenants: Vec::with_capacity(n),
            ids: Vec::with_capacity(n),
            callers: Vec::with_capacity(n),
            projects: Vec::with_capacity(n),
            ats: Vec::with_capacity(n),
            batches: Vec::with_capacity(n),
        };
        for record in records.rev() {
            if !seen.insert((&*record.tenant, &*record.request_id)) {
                continue;
            }
            let stored: Vec<StoredBatch<'_>> = record.batches.iter().map(StoredBatch::of).collect();
            c.batches.push(
                serde_json::to_string(&stored).map_err(|e| sqlx::Error::Encode(Box::new(e)))?,
            );
            c.tenants.push(&record.tenant);
            c.ids.push(&record.request_id);
            c.callers.push(&record.caller);
            c.projects.push(&record.project_id);
            c.ats.push(record.created_at);
        }
        Ok(c)
    }

    /// Binds `$1`-`$6`.
    pub(super) fn bind<'q>(
        &'q self,
        sql: &'q str,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        sqlx::query(sql)
            .bind(&self.tenants)
            .bind(&self.ids)
            .bind(&self.callers)
            .bind(&self.projects)
            .bind(&self.ats)
            .bind(&self.batches)
    }
}

/// Inserts the records of `Columns` (`$1`-`$6`, retention `$7`).
macro_rules! insert_records {
    () => {
        "INSERT INTO cphgw_stop_records \
           (tenant, request_id, caller, project_id, created_at, expires_at, batches) \
         SELECT t, r, c, p, at, at + make_interval(secs => $7), b::json \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::timestamptz[], $6::text[]) \
           AS u(t, r, c, p, at, b)"
    };
}
pub(super) use insert_records;

/// The same, replacing a record already there (a caller's reused request
/// id, a resumed stop's head).
macro_rules! upsert_records {
    () => {
        concat!(
            insert_records!(),
            " ON CONFLICT (tenant, request_id) DO UPDATE SET \
             caller = EXCLUDED.caller, project_id = EXCLUDED.project_id, \
             created_at = EXCLUDED.created_at, expires_at = EXCLUDED.expires_at, \
             batches = EXCLUDED.batches"
        )
    };
}
pub(super) use upsert_records;

/// Writes many whole records in one statement (one round trip, one
/// commit): what the record writer sends under load. A plain `INSERT`
/// first: a request id seen before (a caller's reused `X-Request-Id`) makes
/// it fail, and only then is the batch written again as an upsert.
pub(super) async fn put_records(
    pool: &PgPool,
    records: &[std::sync::Arc<StopRecord>],
    retention: &Retention,
) -> Result<(), sqlx::Error> {
    let columns = Columns::of(records.iter().map(|r| &**r))?;
    let secs = retention.records.as_secs_f64();
    match columns
        .bind(insert_records!())
        .bind(secs)
        .execute(pool)
        .await
    {
        Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
            columns
                .bind(upsert_records!())
                .bind(secs)
                .execute(pool)
                .await?;
        }
        done => {
            done?;
        }
    }
    Ok(())
}

/// Writes one batch's outcome as it comes (`BATCH_STATEMENT`), with the
/// record's head if it is not there yet.
pub(super) async fn put_record_batch(
    pool: &PgPool,
    record: &StopRecord,
    batch: &RecordBatch,
    retention: &Retention,
) -> Result<(), sqlx::Error> {
    sqlx::query(BATCH_STATEMENT)
        .bind(&*record.tenant)
        .bind(&*record.request_id)
        .bind(&*record.caller)
        .bind(&*record.project_id)
        .bind(record.created_at)
        .bind(retention.records.as_secs_f64())
        .bind(Json([StoredBatch::of(batch)]))
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
            tenant: tenant.into(),
            request_id: request_id.into(),
            caller: head.try_get::<String, _>(0)?.into(),
            project_id: head.try_get::<String, _>(1)?.into(),
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
                phone_ids: row
                    .try_get::<Vec<String>, _>(1)?
                    .into_iter()
                    .map(Into::into)
                    .collect(),
                upstream_request_ids: row.try_get(2)?,
                entries: entries.map(|j| j.0),
            })
        })
        .collect::<Result<_, sqlx::Error>>()?;
    Ok(Some(StopRecord {
        tenant: tenant.into(),
        request_id: request_id.into(),
        caller: head.try_get::<String, _>(0)?.into(),
        project_id: head.try_get::<String, _>(1)?.into(),
        created_at: head.try_get(2)?,
        batches,
    }))
}
