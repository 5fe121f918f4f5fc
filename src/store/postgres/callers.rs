//! Idempotency keys in SQL (stop records are in `records.rs`), and the
//! prune of both. A key is claimed with one
//! `INSERT .. ON CONFLICT DO NOTHING` (many keys in one, under load); an
//! existing one is read under a row lock and judged against the database's
//! clock, the same for every replica.
//!
//! These writes commit without waiting for the WAL to reach the disk (the
//! store's connections use `synchronous_commit = off`; tenant changes turn
//! it back on for their own transactions): they sit on a stop's path, and
//! what a database crash could lose of them (the last fraction of a second)
//! costs at most a stop sent again, which CPH answers per phone.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool};

use super::grouped::{Group, Grouped};
use super::held::Held;
use super::records::{Columns, insert_records, upsert_records};
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

/// Lets a key go (its stop sent nothing: a retry runs as if it had never
/// asked), and writes the stop's record, in one statement.
async fn release(
    pool: &PgPool,
    claim: &KeyClaim,
    record: Option<&StopRecord>,
    retention: &Retention,
) -> Result<(), sqlx::Error> {
    match record {
        Some(record) => {
            let columns = Columns::of(std::iter::once(record))?;
            let sql = concat!(
                "WITH k AS (DELETE FROM cphgw_idempotency_keys \
                 WHERE tenant = $8 AND key = $9 AND status IS NULL RETURNING 1) ",
                upsert_records!()
            );
            columns
                .bind(sql)
                .bind(retention.records.as_secs_f64())
                .bind(&claim.tenant)
                .bind(&claim.key)
                .execute(pool)
                .await?;
        }
        None => {
            sqlx::query(
                "DELETE FROM cphgw_idempotency_keys WHERE tenant = $1 AND key = $2 AND status IS NULL",
            )
            .bind(&claim.tenant)
            .bind(&claim.key)
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

/// Claims and finishes of keys, each kind grouped into statements (see
/// `grouped`): what keeps a keyed stop from costing the database a round
/// trip and a commit of its own twice over.
pub(super) struct Keys {
    pool: PgPool,
    retention: Retention,
    claims: Group<KeyClaim, bool>,
    finishes: Group<Finish, ()>,
}

/// A key's answer and its stop's record, to be written together.
struct Finish {
    claim: KeyClaim,
    status: u16,
    body: Vec<u8>,
    record: Option<Arc<StopRecord>>,
}

/// At most this many keys in one statement.
const GROUP: usize = 256;

impl Keys {
    pub(super) fn new(pool: &PgPool, retention: Retention) -> Self {
        // One statement of a kind runs at a time: each kind keeps its connection.
        let held = Arc::new(Held::new(pool));
        let claims = Group::new(GROUP, move |claims| {
            let held = held.clone();
            async move {
                let ran = async {
                    let mut conn = held.take().await?;
                    let ran = claim_new(&mut conn, &claims, &retention).await;
                    held.keep_if_ok(conn, ran)
                }
                .await;
                (claims, ran)
            }
        });
        let held = Arc::new(Held::new(pool));
        let finishes = Group::new(GROUP, move |finishes| {
            let held = held.clone();
            async move {
                let ran = async {
                    let mut conn = held.take().await?;
                    let ran = finish_answered(&mut conn, &finishes, &retention, false).await;
                    held.keep_if_ok(conn, ran)
                }
                .await;
                (finishes, ran)
            }
        });
        Self {
            pool: pool.clone(),
            retention,
            claims,
            finishes,
        }
    }

    /// Claims a key: a new one in a group, one already there alone, under
    /// its row lock.
    pub(super) async fn claim(&self, claim: &KeyClaim) -> Result<Claimed, sqlx::Error> {
        match self.claims.call(claim.clone()).await {
            Grouped::Done(true) => Ok(Claimed::New),
            Grouped::Down(why) => Err(down(why)),
            Grouped::Done(false) | Grouped::Alone(_) => {
                self::claim(&self.pool, claim, &self.retention).await
            }
        }
    }

    /// Ends a claim: an answer (with the stop's record) is stored in a
    /// group, or alone when its group was refused; no answer lets the key go.
    pub(super) async fn finish(
        &self,
        claim: &KeyClaim,
        answer: Option<(u16, Vec<u8>)>,
        record: Option<Arc<StopRecord>>,
    ) -> Result<(), sqlx::Error> {
        let Some((status, body)) = answer else {
            return release(&self.pool, claim, record.as_deref(), &self.retention).await;
        };
        let finish = Finish {
            claim: claim.clone(),
            status,
            body,
            record,
        };
        match self.finishes.call(finish).await {
            Grouped::Done(()) => Ok(()),
            Grouped::Down(why) => Err(down(why)),
            Grouped::Alone(f) => {
                let mut conn = self.pool.acquire().await?;
                finish_answered(&mut conn, std::slice::from_ref(&f), &self.retention, true).await?;
                Ok(())
            }
        }
    }
}

/// A group's failure to reach the database, for each of its calls.
fn down(why: String) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(why))
}

/// The columns of keys for `unnest`: tenant, key, fingerprint, request id.
fn key_columns<'a>(claims: impl Iterator<Item = &'a KeyClaim>) -> [Vec<&'a str>; 4] {
    let mut columns: [Vec<&str>; 4] = Default::default();
    for c in claims {
        for (col, v) in columns
            .iter_mut()
            .zip([&c.tenant, &c.key, &c.fingerprint, &c.request_id])
        {
            col.push(v);
        }
    }
    columns
}

/// Inserts the keys that are new; answers, for each claim, whether its key
/// was. A key twice in the group is inserted once, for its first claim.
async fn claim_new(
    conn: &mut PgConnection,
    claims: &[KeyClaim],
    retention: &Retention,
) -> Result<Vec<bool>, sqlx::Error> {
    let mut seen = HashSet::with_capacity(claims.len());
    let first: Vec<bool> = claims
        .iter()
        .map(|c| seen.insert((c.tenant.as_str(), c.key.as_str())))
        .collect();
    let firsts = || {
        claims
            .iter()
            .zip(&first)
            .filter(|(_, f)| **f)
            .map(|(c, _)| c)
    };
    let [tenants, keys, fingerprints, request_ids] = &key_columns(firsts());
    let leases: Vec<f64> = firsts().map(|c| c.lease.as_secs_f64()).collect();
    let rows = sqlx::query(
        "INSERT INTO cphgw_idempotency_keys (tenant, key, fingerprint, request_id, lease_until, expires_at) \
         SELECT t, k, f, r, now() + make_interval(secs => l), now() + make_interval(secs => $6) \
         FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[]) AS u(t, k, f, r, l) \
         ON CONFLICT (tenant, key) DO NOTHING RETURNING tenant, key",
    )
    .bind(tenants)
    .bind(keys)
    .bind(fingerprints)
    .bind(request_ids)
    .bind(&leases)
    .bind(retention.keys.as_secs_f64())
    .fetch_all(&mut *conn)
    .await?;
    let returned: Vec<(String, String)> = rows
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let inserted: HashSet<(&str, &str)> = returned
        .iter()
        .map(|(t, k)| (t.as_str(), k.as_str()))
        .collect();
    Ok(claims
        .iter()
        .zip(first)
        .map(|(c, first)| first && inserted.contains(&(c.tenant.as_str(), c.key.as_str())))
        .collect())
}

/// Stores the answers of keys and their stops' records: one statement. The
/// answers go in as an upsert of the keys' rows (found by their unique
/// index, row by row, whatever the planner makes of the group's size); a
/// row that is no longer there is written again. A key twice in the group
/// (a statement may not write a row twice) sends the group's calls alone.
/// The records are inserted: a record is already there only for a stop of
/// several batches (its outcomes written as they came) or a caller's reused
/// request id. The first kind, or `replace` (a call made alone, after its
/// group was refused), makes it an upsert; the second fails the group, and
/// its calls are made again alone. (An upsert of every record cost the
/// database 3 of a keyed stop's 36 µs, `store_floor.sh`.)
async fn finish_answered(
    conn: &mut PgConnection,
    finishes: &[Finish],
    retention: &Retention,
    replace: bool,
) -> Result<Vec<()>, sqlx::Error> {
    macro_rules! answers {
        () => {
            "WITH k AS (INSERT INTO cphgw_idempotency_keys \
               (tenant, key, fingerprint, request_id, status, body, expires_at) \
             SELECT t, k, f, r, s, b, now() + make_interval(secs => $14) \
             FROM unnest($8::text[], $9::text[], $10::text[], $11::text[], $12::int2[], $13::bytea[]) \
               AS u(t, k, f, r, s, b) \
             ON CONFLICT (tenant, key) DO UPDATE SET status = EXCLUDED.status, body = EXCLUDED.body, \
               lease_until = NULL RETURNING 1) "
        };
    }
    let replace = replace
        || finishes
            .iter()
            .any(|f| f.record.as_ref().is_some_and(|r| r.batches.len() > 1));
    let sql = if replace {
        concat!(answers!(), upsert_records!())
    } else {
        concat!(answers!(), insert_records!())
    };
    let columns = Columns::of(finishes.iter().filter_map(|f| f.record.as_deref()))?;
    let [tenants, keys, fingerprints, request_ids] =
        &key_columns(finishes.iter().map(|f| &f.claim));
    let statuses: Vec<i16> = finishes.iter().map(|f| f.status as i16).collect();
    let bodies: Vec<&[u8]> = finishes.iter().map(|f| f.body.as_slice()).collect();
    columns
        .bind(sql)
        .bind(retention.records.as_secs_f64())
        .bind(tenants)
        .bind(keys)
        .bind(fingerprints)
        .bind(request_ids)
        .bind(&statuses)
        .bind(&bodies)
        .bind(retention.keys.as_secs_f64())
        .execute(&mut *conn)
        .await?;
    Ok(vec![(); finishes.len()])
}
