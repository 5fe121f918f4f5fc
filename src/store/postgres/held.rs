//! A connection kept by a sender of grouped statements from one statement to
//! the next.
//!
//! sqlx's pool tests a connection as it comes back (a `Sync` round trip, in a
//! task of its own): for statements sent one after another by one sender,
//! that doubled the round trips. A held connection goes back to the pool only
//! when a statement on it fails or is abandoned, or when it has sat unused
//! long enough that it may have died with the database.

use std::sync::{Mutex, PoisonError};
use std::time::Instant;

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::PgPool;

use super::CHECK_IDLE_AFTER;

pub(super) struct Held {
    pool: PgPool,
    conn: Mutex<Option<(PoolConnection<Postgres>, Instant)>>,
}

impl Held {
    pub(super) fn new(pool: &PgPool) -> Self {
        Self {
            pool: pool.clone(),
            conn: Mutex::new(None),
        }
    }

    /// The held connection if it was used lately, else one from the pool
    /// (which checks it). Hand it back with [`Held::keep_if_ok`] once a statement on
    /// it has succeeded; dropped instead, it goes back to the pool.
    pub(super) async fn take(&self) -> Result<PoolConnection<Postgres>, sqlx::Error> {
        let held = self
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match held {
            Some((conn, used)) if used.elapsed() < CHECK_IDLE_AFTER => Ok(conn),
            // Dropped: back to the pool, which tests it.
            _ => self.pool.acquire().await,
        }
    }

    /// Keeps the connection for the next statement if this one succeeded.
    pub(super) fn keep_if_ok<R>(
        &self,
        conn: PoolConnection<Postgres>,
        ran: Result<R, sqlx::Error>,
    ) -> Result<R, sqlx::Error> {
        if ran.is_ok() {
            *self.conn.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((conn, Instant::now()));
        }
        ran
    }
}
