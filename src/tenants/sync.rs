//! Keeps this replica's mapping equal to the store's: a change notified by
//! another replica is applied at once, a periodic revision check catches
//! what notifications miss, and after a reconnect everything is re-read. A
//! store that is down is retried with backoff; the last mapping keeps
//! serving meanwhile.

use std::sync::Arc;
use std::time::Duration;

use super::Tenants;
use crate::store::postgres::RESYNC;
use crate::store::{Store, StoreError};

/// How often what is past its retention is deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// Re-reads the store's mapping and applies it. With `force`, even when the
/// revision looks the same. `Ok(true)` if the served mapping changed.
pub async fn refresh(
    store: &dyn Store,
    tenants: &Tenants,
    force: bool,
) -> Result<bool, StoreError> {
    let read = async {
        if !force
            && let Some(served) = tenants.revision()
            && store.revision().await? == served
        {
            return Ok(None);
        }
        store.tenants().await.map(Some)
    };
    match read.await {
        Ok(None) => {
            // Readable again and as served: nothing to report any more.
            tenants.healthy();
            Ok(false)
        }
        Ok(Some(snapshot)) => tenants
            .apply(snapshot.revision, snapshot.file)
            .map_err(StoreError::Invalid),
        Err(e) => {
            tenants.failed(e.to_string());
            Err(e)
        }
    }
}

/// Runs for the life of the gateway: applies the schema, loads the mapping,
/// then follows changes (`poll`: the periodic check).
pub async fn run(store: Arc<dyn Store>, tenants: Arc<Tenants>, poll: Duration) {
    let mut delay = Duration::from_millis(250);
    loop {
        match store.migrate().await {
            Ok(()) => break,
            Err(e) => {
                tenants.failed(e.to_string());
                tracing::warn!(error = %e, retry_ms = delay.as_millis() as u64, "cannot apply the store's schema; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
    let mut notified = store.notifications();
    let mut force = !tenants.is_loaded();
    let mut failing = false;
    let mut pruned: Option<tokio::time::Instant> = None;
    loop {
        if pruned.is_none_or(|at| at.elapsed() >= PRUNE_EVERY) {
            pruned = Some(tokio::time::Instant::now());
            if let Err(e) = store.prune().await {
                tracing::warn!(error = %e, "cannot prune the store; retrying later");
            }
        }
        match refresh(store.as_ref(), &tenants, force).await {
            Ok(_) => {
                if failing {
                    tracing::info!("tenant source readable again");
                }
                failing = false;
                force = false;
                delay = Duration::from_millis(250);
            }
            Err(e) => {
                if !failing {
                    tracing::error!(error = %e, "tenant source unusable; the last good mapping stays");
                }
                failing = true;
                // Loaded or not, retry soon: with backoff while the store
                // is down, at the poll interval when the data is bad.
                if matches!(e, StoreError::Unavailable(_)) {
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(poll.max(Duration::from_secs(1)));
                    force = true;
                    continue;
                }
            }
        }
        tokio::select! {
            changed = notified.changed() => {
                if changed.is_ok() && *notified.borrow_and_update() == RESYNC {
                    force = true;
                }
            }
            () = tokio::time::sleep(poll) => {}
        }
    }
}
