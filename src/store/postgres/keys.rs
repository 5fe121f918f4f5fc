//! New keys' claims and finished keys' answers (with their stops' records),
//! grouped (see `grouped`): the writes on a keyed stop's path. Claims and
//! answers that arrive while a statement runs go together in the next one,
//! both kinds in one statement (one round trip, one commit): a keyed stop
//! writes twice, and with a statement of each kind it cost the database, at
//! 64 connections, about twice the statements and commits.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::Row;
use sqlx::postgres::{PgConnection, PgPool, PgRow};

use super::callers;
use super::grouped::{Group, Grouped};
use super::held::Held;
use super::records::{Columns, insert_records, upsert_records};
use crate::store::{Claimed, KeyClaim, Retention, StopRecord};

/// The grouped writes of keys, on one connection kept from one statement
/// to the next.
pub(super) struct Keys {
    pool: PgPool,
    retention: Retention,
    writes: Group<Write, Wrote>,
}

/// A key's answer and its stop's record, to be written together.
struct Finish {
    claim: KeyClaim,
    status: u16,
    body: Vec<u8>,
    record: Option<Arc<StopRecord>>,
}

/// A write of a key in a group.
enum Write {
    Claim(KeyClaim),
    Finish(Finish),
}

/// What a write came to: a claim, whether its key was new.
enum Wrote {
    Claimed(bool),
    Finished,
}

/// At most this many writes in one statement.
const GROUP: usize = 256;

impl Keys {
    pub(super) fn new(pool: &PgPool, retention: Retention) -> Self {
        let held = Arc::new(Held::new(pool));
        let writes = Group::new(GROUP, move |writes: Vec<Write>| {
            let held = held.clone();
            async move {
                let ran = async {
                    let mut conn = held.take().await?;
                    let ran = write(&mut conn, &writes, &retention).await;
                    held.keep_if_ok(conn, ran)
                }
                .await;
                (writes, ran)
            }
        });
        Self {
            pool: pool.clone(),
            retention,
            writes,
        }
    }

    /// Claims a key: a new one in a group, one already there alone, under
    /// its row lock.
    pub(super) async fn claim(&self, claim: &KeyClaim) -> Result<Claimed, sqlx::Error> {
        match self.writes.call(Write::Claim(claim.clone())).await {
            Grouped::Done(Wrote::Claimed(true)) => Ok(Claimed::New),
            Grouped::Down(why) => Err(down(why)),
            Grouped::Done(_) | Grouped::Alone(_) => {
                callers::claim(&self.pool, claim, &self.retention).await
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
            return callers::release(&self.pool, claim, record.as_deref(), &self.retention).await;
        };
        let finish = Finish {
            claim: claim.clone(),
            status,
            body,
            record,
        };
        match self.writes.call(Write::Finish(finish)).await {
            Grouped::Done(_) => Ok(()),
            Grouped::Down(why) => Err(down(why)),
            Grouped::Alone(Write::Finish(f)) => {
                let mut conn = self.pool.acquire().await?;
                run(&mut conn, &[], &[&f], &self.retention, true).await?;
                Ok(())
            }
            Grouped::Alone(Write::Claim(_)) => Err(down("a finish came back as a claim".into())),
        }
    }
}

/// A group's failure to reach the database, for each of its calls.
fn down(why: String) -> sqlx::Error {
    sqlx::Error::Io(std::io::Error::other(why))
}

/// The answers' upsert of keys' rows (found by their unique index, row by
/// row, whatever the planner makes of the group's size; a row that is no
/// longer there is written again), `$8`-`$14`, as a `WITH` query.
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

/// The new keys' insert, `$15`-`$19` (expiry `$14`): the keys inserted.
macro_rules! claims {
    () => {
        "INSERT INTO cphgw_idempotency_keys (tenant, key, fingerprint, request_id, lease_until, expires_at) \
         SELECT t, k, f, r, now() + make_interval(secs => l), now() + make_interval(secs => $14) \
         FROM unnest($15::text[], $16::text[], $17::text[], $18::text[], $19::float8[]) AS u(t, k, f, r, l) \
         ON CONFLICT (tenant, key) DO NOTHING RETURNING tenant, key"
    };
}

/// The statement for a group's answers and claims. Records are inserted: a
/// record is already there only for a stop of several batches (its
/// outcomes written as they came) or a caller's reused request id. With
/// `replace` (the first kind in the group, or a finish made alone after its
/// group was refused) they are upserted; the second kind fails the group,
/// whose calls are then made again alone. (An upsert of every record cost
/// the database 3 of a keyed stop's 36 µs, `store_floor.sh`.)
fn finish_sql(replace: bool) -> &'static str {
    if replace {
        concat!(answers!(), ", r AS (", upsert_records!(), ") ", claims!())
    } else {
        concat!(answers!(), ", r AS (", insert_records!(), ") ", claims!())
    }
}

/// Writes a group's answers (with their records) and claims, one statement;
/// answers, for each write, what it came to. A key claimed twice in the
/// group is inserted once, for its first claim; a key answered twice (a
/// statement may not write a row twice) fails the group.
async fn write(
    conn: &mut PgConnection,
    writes: &[Write],
    retention: &Retention,
) -> Result<Vec<Wrote>, sqlx::Error> {
    let finishes: Vec<&Finish> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Finish(f) => Some(f),
            Write::Claim(_) => None,
        })
        .collect();
    let mut seen = HashSet::with_capacity(writes.len());
    // Claims whose key is the first of its kind in the group.
    let firsts: Vec<&KeyClaim> = writes
        .iter()
        .filter_map(|w| match w {
            Write::Claim(c) if seen.insert((c.tenant.as_str(), c.key.as_str())) => Some(c),
            _ => None,
        })
        .collect();
    let rows = run(conn, &firsts, &finishes, retention, false).await?;
    let returned: Vec<(String, String)> = rows
        .iter()
        .map(|row| Ok((row.try_get(0)?, row.try_get(1)?)))
        .collect::<Result<_, sqlx::Error>>()?;
    let mut inserted: HashSet<(&str, &str)> = returned
        .iter()
        .map(|(t, k)| (t.as_str(), k.as_str()))
        .collect();
    Ok(writes
        .iter()
        .map(|w| match w {
            // Only a key's first claim finds it in the set (and takes it).
            Write::Claim(c) => {
                Wrote::Claimed(inserted.remove(&(c.tenant.as_str(), c.key.as_str())))
            }
            Write::Finish(_) => Wrote::Finished,
        })
        .collect())
}

/// Runs the statement for `claims` and `finishes` (`alone`: a finish made
/// alone after its group was refused): the rows of the keys inserted.
async fn run(
    conn: &mut PgConnection,
    claims: &[&KeyClaim],
    finishes: &[&Finish],
    retention: &Retention,
    alone: bool,
) -> Result<Vec<PgRow>, sqlx::Error> {
    // A record of several batches may be there already (see `finish_sql`).
    let replace = alone
        || finishes
            .iter()
            .any(|f| f.record.as_ref().is_some_and(|r| r.batches.len() > 1));
    let columns = Columns::of(finishes.iter().filter_map(|f| f.record.as_deref()))?;
    let [tenants, keys, fingerprints, request_ids] =
        &key_columns(finishes.iter().map(|f| &f.claim));
    let statuses: Vec<i16> = finishes.iter().map(|f| f.status as i16).collect();
    let bodies: Vec<&[u8]> = finishes.iter().map(|f| f.body.as_slice()).collect();
    let [new_tenants, new_keys, new_fingerprints, new_request_ids] =
        &key_columns(claims.iter().copied());
    let leases: Vec<f64> = claims.iter().map(|c| c.lease.as_secs_f64()).collect();
    columns
        .bind(finish_sql(replace))
        .bind(retention.records.as_secs_f64())
        .bind(tenants)
        .bind(keys)
        .bind(fingerprints)
        .bind(request_ids)
        .bind(&statuses)
        .bind(&bodies)
        .bind(retention.keys.as_secs_f64())
        .bind(new_tenants)
        .bind(new_keys)
        .bind(new_fingerprints)
        .bind(new_request_ids)
        .bind(&leases)
        .fetch_all(&mut *conn)
        .await
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
