//! The janitor: prunes finished jobs older than the TTL, in small batches so the
//! SQLite write lock is never held long, gives the space they took back to the file
//! system (incremental vacuum, also in small steps), removes the result files of jobs
//! that are gone, and rescues running jobs whose lease expired (a runner that stopped
//! heartbeating), and removes batch files past their `expires_at` (`batch::expiry`).
//! On PostgreSQL it also deletes the output batches relayed between
//! instances (`output_relay.rs`) of jobs that finished a minute ago or earlier.
//!
//! On a database shared by several instances only the holder of the janitor's lease
//! (see [`crate::ownership`]) prunes and rescues, and abandons the unfinished synchronous
//! jobs of instances that hold no instance lease any more (their callers were connected
//! to them); the others skip that part of their
//! turns and only remove result files of pruned jobs from their own data folder.

use std::time::Duration;

use foreman_store::Store;
use tokio_util::sync::CancellationToken;

use crate::clock::now_ms;

const BATCH: u32 = 500;
/// Pages given back per write: 1,024 pages of 4 KiB, 4 MiB, a short hold of the writer.
const RECLAIM_PAGES: u32 = 1024;

/// Prunes, rescues and abandons orphaned synchronous jobs (accepted `orphaned_after`
/// ago or more) every `interval` until shutdown.
pub async fn run(
    store: Store,
    leader: std::sync::Arc<crate::ownership::Ownership>,
    ttl: Duration,
    data_dir: std::path::PathBuf,
    interval: Duration,
    orphaned_after: Duration,
    shutdown: CancellationToken,
) {
    loop {
        if leader.held(now_ms()) {
            sweep(&store, ttl).await;
            abandon_orphans(&store, orphaned_after).await;
            match crate::batch::expiry::prune(&store, &data_dir, now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(files = n, "removed batch files past their expiry"),
                Err(error) => tracing::error!(%error, "removing expired batch files failed"),
            }
        }
        // Result files live in this instance's data folder, whoever pruned their jobs.
        let removed = crate::artifacts::sweep_orphans(&store, &data_dir).await;
        if removed > 0 {
            tracing::info!(jobs = removed, "removed result files of pruned jobs");
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(interval) => {}
        }
    }
}

/// How long the output batches of a finished job stay for readers on other instances.
const OUTPUT_KEPT_MS: i64 = 60_000;

/// One pass: returns how many jobs were pruned.
pub async fn sweep(store: &Store, ttl: Duration) -> u64 {
    let now = now_ms();
    match store.rescue_expired(now).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(jobs = n, "rescued jobs whose lease expired"),
        Err(error) => tracing::error!(%error, "lease rescue failed"),
    }
    // Output relayed between instances (PostgreSQL) is read at the job's end; what is
    // left a minute later has no reader, and the result is in the row.
    if let Err(error) = store.prune_output(now - OUTPUT_KEPT_MS).await {
        tracing::error!(%error, "pruning relayed output failed");
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
        let pages = reclaim(store).await;
        tracing::info!(
            jobs = pruned,
            pages_freed = pages,
            "pruned finished jobs past their TTL"
        );
    }
    pruned
}

/// On a shared database, abandons the synchronous jobs of instances that are gone
/// (stopped, or dead and not back: no live instance lease; see `ownership`), accepted at
/// least `after` ago (room for an instance whose first lease writes failed): their callers
/// were connected there. On SQLite the start of the one process abandons them all.
pub async fn abandon_orphans(store: &Store, after: Duration) -> u64 {
    if !store.is_shared() {
        return 0;
    }
    let now = now_ms();
    let after = i64::try_from(after.as_millis()).unwrap_or(i64::MAX);
    match store
        .abandon_orphaned_sync_jobs(now, now.saturating_sub(after))
        .await
    {
        Ok(0) => 0,
        Ok(n) => {
            tracing::warn!(
                jobs = n,
                "abandoned synchronous jobs whose instance is gone (their callers were connected there)"
            );
            n
        }
        Err(error) => {
            tracing::error!(%error, "abandoning orphaned synchronous jobs failed");
            0
        }
    }
}

/// Gives the pages that pruning left free back to the file system, a few at a time so
/// other writes go between; returns how many.
pub async fn reclaim(store: &Store) -> u64 {
    let mut freed = 0;
    loop {
        match store.reclaim_space(RECLAIM_PAGES).await {
            Ok(pages) => {
                freed += pages;
                if pages < u64::from(RECLAIM_PAGES) {
                    return freed;
                }
                tokio::task::yield_now().await;
            }
            Err(error) => {
                tracing::error!(%error, "giving pruned space back failed");
                return freed;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use foreman_store::{ClaimParams, JobId, JobKind, JobState, NewJob};

    fn new_job() -> NewJob {
        NewJob {
            id: None,
            kind: JobKind::Chat,
            model: "m:latest".into(),
            load_options: String::new(),
            payload: "{}".into(),
            sync: false,
            priority: 0,
            max_attempts: 1,
            idempotency_key: None,
            webhook_url: None,
            metadata: None,
            caller: None,
        }
    }

    async fn finished_job(store: &Store, finished_at: i64) -> JobId {
        let job = store
            .enqueue(new_job(), finished_at - 10)
            .await
            .unwrap()
            .job;
        store
            .claim(ClaimParams {
                id: job.id,
                owner: "test".into(),
                target: "t".to_owned(),
                now: finished_at - 5,
                lease_for_ms: 30_000,
            })
            .await
            .unwrap()
            .unwrap();
        store
            .complete(job.id, 1, "test", "{}".into(), finished_at)
            .await
            .unwrap()
            .unwrap();
        job.id
    }

    /// Pruning jobs with large results leaves the database file smaller: the sweep
    /// gives their pages back.
    #[tokio::test]
    async fn a_sweep_that_prunes_large_jobs_shrinks_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("q.db");
        let store = Store::open(path.to_str().unwrap()).await.unwrap();
        let now = now_ms();
        let big = "x".repeat(256 * 1024);
        for _ in 0..40 {
            let job = store
                .enqueue(
                    NewJob {
                        payload: format!(r#"{{"prompt":"{big}"}}"#),
                        ..new_job()
                    },
                    now - 3 * 3_600_000,
                )
                .await
                .unwrap()
                .job;
            store
                .cancel(
                    job.id,
                    now - 2 * 3_600_000,
                    foreman_store::JobFailure {
                        status: 499,
                        message: "gone".into(),
                    },
                )
                .await
                .unwrap();
        }
        let Store::Sqlite(sqlite) = &store else {
            panic!("a SQLite store");
        };
        let full = sqlite.page_count().await.unwrap();
        assert_eq!(sweep(&store, Duration::from_secs(3600)).await, 40);
        let after = sqlite.page_count().await.unwrap();
        assert!(
            after * 10 < full,
            "the file shrank from {full} to {after} pages"
        );
        store.close().await;
    }

    #[tokio::test]
    async fn sweep_prunes_only_jobs_past_the_ttl() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("q.db").to_str().unwrap())
            .await
            .unwrap();
        let ttl = Duration::from_secs(3600);
        let now = now_ms();
        let old = finished_job(&store, now - 2 * 3_600_000).await;
        let recent = finished_job(&store, now - 60_000).await;
        assert_eq!(sweep(&store, ttl).await, 1);
        assert!(store.get(old).await.unwrap().is_none());
        assert_eq!(
            store.get(recent).await.unwrap().unwrap().state,
            JobState::Succeeded
        );
        store.close().await;
    }
}
