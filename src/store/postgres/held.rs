//! A connection kept by a sender of grouped statements from one statement to
//! the next.
//!
//! sqlx's pool tests a connection as it comes back (a `Sync` round trip, in a
//! task of its own): for statements sent one after another by one sender,
//! that doubled the round trips. A held connection goes back to the pool only
//! when a statement on it fails or is abandoned, when it has sat unused long
//! enough that it may have died with the database, or when it has been held
//! for a while (so that the pool's own upkeep, such as its connections'
//! lifetime, still reaches it).

use std::ops::{Deref, DerefMut};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::Postgres;
use sqlx::pool::PoolConnection;
use sqlx::postgres::{PgConnection, PgPool};

use super::CHECK_IDLE_AFTER;

/// How long a connection is held before it goes back to the pool.
const HOLD_AT_MOST: Duration = Duration::from_secs(60);

pub(super) struct Held {
    pool: PgPool,
    /// The held connection and when it was last used.
    conn: Mutex<Option<(Taken, Instant)>>,
}

/// A connection taken from a [`Held`] (or from the pool through it).
pub(super) struct Taken {
    conn: PoolConnection<Postgres>,
    since: Instant,
}

impl Held {
    pub(super) fn new(pool: &PgPool) -> Self {
        Self {
            pool: pool.clone(),
            conn: Mutex::new(None),
        }
    }

    /// The held connection if it was used lately, else one from the pool
    /// (which checks it). Hand it back with [`Held::keep_if_ok`] once a
    /// statement on it has succeeded; dropped instead, it goes back to the
    /// pool.
    pub(super) async fn take(&self) -> Result<Taken, sqlx::Error> {
        let held = self
            .conn
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match held {
            Some((taken, used))
                if used.elapsed() < CHECK_IDLE_AFTER && taken.since.elapsed() < HOLD_AT_MOST =>
            {
                Ok(taken)
            }
            // Dropped: back to the pool, which tests it.
            _ => Ok(Taken {
                conn: self.pool.acquire().await?,
                since: Instant::now(),
            }),
        }
    }

    /// Keeps the connection for the next statement if this one succeeded.
    pub(super) fn keep_if_ok<R>(
        &self,
        taken: Taken,
        ran: Result<R, sqlx::Error>,
    ) -> Result<R, sqlx::Error> {
        if ran.is_ok() {
            *self.conn.lock().unwrap_or_else(PoisonError::into_inner) =
                Some((taken, Instant::now()));
        }
        ran
    }
}

impl Deref for Taken {
    type Target = PgConnection;

    fn deref(&self) -> &PgConnection {
        &self.conn
    }
}

impl DerefMut for Taken {
    fn deref_mut(&mut self) -> &mut PgConnection {
        &mut self.conn
    }
}
