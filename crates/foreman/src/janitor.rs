//! The janitor: prunes finished jobs older than the TTL, in small batches so the
//! SQLite write lock is never held long, and rescues running jobs whose lease
//! expired (a worker that stopped heartbeating).

use std::time::Duration;

use foreman_store::Store;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;

const BATCH: u32 = 500;

/// Prunes and rescues every `interval` until shutdown.
pub async fn run(store: Store, ttl: Duration, interval: Duration, shutdown: CancellationToken) {
    loop {
        sweep(&store, ttl).await;
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// One pass: returns how many jobs were pruned.
pub async fn sweep(store: &Store, ttl: Duration) -> u64 {
    let now = now_ms();
    match store.rescue_expired(now).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(jobs = n, "rescued jobs whose lease expired"),
        Err(error) => tracing::error!(%error, "lease rescue failed"),
    }
    let before = now - ttl.as_millis() as i64;
    let mut pruned = 0;
    loop {
        match store.prune_finished(before, BATCH).await {
            Ok(n) => {
                pruned += n;
                if n < u64::from(BATCH) {
                    break;
                }
                tokio::task::yield_now().await;
            }
            Err(error) => {
                tracing::error!(%error, "pruning failed");
                break;
            }
        }
    }
    if pruned > 0 {
        tracing::info!(jobs = pruned, "pruned finished jobs past their TTL");
    }
    pruned
}
