//! Power cuts, simulated by a SQLite VFS (`sqlite-power-cut`) that every connection in
//! this test process goes through: at a cut, every write a file has not synced is
//! lost. The store is then reopened on what a disk would hold after the reboot.
//!
//! This is a test binary of its own because the VFS is the process's default.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foreman_store::testsuite::{T0, new_job};
use foreman_store::{ClaimParams, JobId, JobState, Store};
use rusqlite::Connection;
use tempfile::TempDir;

/// A folder for one database, in the form SQLite names its files (symlinks resolved).
struct Disk {
    _dir: TempDir,
    dir: PathBuf,
}

impl Disk {
    fn new() -> Disk {
        sqlite_power_cut::install();
        let dir = tempfile::tempdir().expect("temp dir");
        let canonical = dir.path().canonicalize().expect("canonical path");
        Disk {
            _dir: dir,
            dir: canonical,
        }
    }

    fn db(&self) -> PathBuf {
        self.dir.join("foreman.db")
    }

    fn wal(&self) -> PathBuf {
        self.dir.join("foreman.db-wal")
    }

    async fn open(&self) -> Store {
        Store::open(self.db().to_str().unwrap())
            .await
            .expect("open store")
    }

    /// Cuts the power, lets `store` close (its writes fail), and puts the files back
    /// as the disk would hold them. Returns how many files lost unsynced changes.
    async fn power_cut(&self, store: Store) -> usize {
        sqlite_power_cut::cut(&self.dir);
        store.close().await;
        drop(store);
        sqlite_power_cut::restore(&self.dir).expect("restore files")
    }
}

fn integrity_check(path: &Path) -> String {
    let conn = Connection::open(path).expect("open");
    conn.query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .expect("integrity check")
}

fn claim(id: JobId, now: i64) -> ClaimParams {
    ClaimParams {
        id,
        owner: "worker-1".to_owned(),
        target: "t".to_owned(),
        now,
        lease_for_ms: 30_000,
    }
}

/// The VFS itself: a commit made without a sync is gone after a cut, a synced one
/// stays. Without this, the tests below could pass on a VFS that drops nothing.
#[test]
fn the_vfs_drops_exactly_what_was_not_synced() {
    let disk = Disk::new();
    let conn = Connection::open(disk.db()).unwrap();
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))
        .unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    conn.execute_batch("CREATE TABLE t (x INTEGER); INSERT INTO t VALUES (1);")
        .unwrap();
    assert!(
        sqlite_power_cut::syncs(&disk.wal()) > 0,
        "commits go through the VFS"
    );
    conn.pragma_update(None, "synchronous", "OFF").unwrap();
    conn.execute("INSERT INTO t VALUES (2)", []).unwrap();
    let before: i64 = conn
        .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
        .unwrap();
    assert_eq!(before, 2);

    sqlite_power_cut::cut(&disk.dir);
    drop(conn);
    let lost = sqlite_power_cut::restore(&disk.dir).unwrap();
    assert!(lost >= 1, "the unsynced commit was in the WAL");

    let conn = Connection::open(disk.db()).unwrap();
    let rows: Vec<i64> = conn
        .prepare("SELECT x FROM t")
        .unwrap()
        .query_map([], |r| r.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(rows, [1], "the synced row stays, the unsynced one is gone");
}

/// Writers enqueue at full speed while the power goes, three times over; after each
/// restart every enqueue that returned `Ok` is there, and the file is sound. The
/// rounds together write enough for SQLite to checkpoint into the database file,
/// so both the WAL and the checkpoint are cut into.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_acknowledged_enqueue_survives_power_cuts() {
    const WRITERS: usize = 8;
    const ACKS_PER_ROUND: usize = 250;
    let disk = Disk::new();
    let mut acknowledged: Vec<JobId> = Vec::new();
    for round in 0..3 {
        let store = disk.open().await;
        let acked = Arc::new(Mutex::new(Vec::new()));
        let writers: Vec<_> = (0..WRITERS)
            .map(|w| {
                let (store, acked) = (store.clone(), acked.clone());
                tokio::spawn(async move {
                    for n in 0.. {
                        let mut job = new_job(&format!("model-{w}"), 0);
                        // Bodies of 16 KiB, so a round fills the WAL past SQLite's
                        // checkpoint size.
                        job.payload = format!(
                            r#"{{"round":{round},"n":{n},"pad":"{}"}}"#,
                            "x".repeat(16 << 10)
                        );
                        match store.enqueue(job, T0 + n).await {
                            Ok(enqueued) => acked.lock().unwrap().push(enqueued.job.id),
                            Err(_) => break,
                        }
                    }
                })
            })
            .collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        while acked.lock().unwrap().len() < ACKS_PER_ROUND {
            assert!(tokio::time::Instant::now() < deadline, "enqueues stalled");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        sqlite_power_cut::cut(&disk.dir);
        for writer in writers {
            writer.await.unwrap();
        }
        store.close().await;
        drop(store);
        sqlite_power_cut::restore(&disk.dir).unwrap();
        acknowledged.extend(acked.lock().unwrap().iter().copied());

        assert_eq!(integrity_check(&disk.db()), "ok", "round {round}");
        let store = disk.open().await;
        for id in &acknowledged {
            let job = store.get(*id).await.unwrap();
            assert!(
                job.as_ref().is_some_and(|j| j.state == JobState::Queued),
                "round {round}: acknowledged job {id} after the cut: {job:?}"
            );
        }
        store.close().await;
    }
    assert!(
        sqlite_power_cut::writes(&disk.db()) > 0,
        "a checkpoint wrote to the database file"
    );
}

/// A claim commits without a sync (ARCHITECTURE.md, the writer): a cut right after
/// it loses the claim, and the job is queued again with no attempt used.
#[tokio::test]
async fn a_claim_lost_to_a_power_cut_leaves_the_job_queued() {
    let disk = Disk::new();
    let store = disk.open().await;
    let job = store.enqueue(new_job("m", 0), T0).await.unwrap().job;
    let claimed = store.claim(claim(job.id, T0 + 1)).await.unwrap();
    assert_eq!(claimed.map(|j| j.state), Some(JobState::Running));

    let lost = disk.power_cut(store).await;
    assert!(lost >= 1, "the claim was not synced");

    let store = disk.open().await;
    let job = store.get(job.id).await.unwrap().expect("the job survives");
    assert_eq!((job.state, job.attempts), (JobState::Queued, 0));
    store.close().await;
}

/// The next durable commit after a claim syncs the claim with it.
#[tokio::test]
async fn a_durable_commit_after_a_claim_keeps_the_claim() {
    let disk = Disk::new();
    let store = disk.open().await;
    let first = store.enqueue(new_job("m", 0), T0).await.unwrap().job;
    store.claim(claim(first.id, T0 + 1)).await.unwrap();
    let second = store.enqueue(new_job("m", 0), T0 + 2).await.unwrap().job;

    disk.power_cut(store).await;

    let store = disk.open().await;
    let first = store.get(first.id).await.unwrap().expect("first job");
    assert_eq!((first.state, first.attempts), (JobState::Running, 1));
    let second = store.get(second.id).await.unwrap().expect("second job");
    assert_eq!(second.state, JobState::Queued);
    store.close().await;
}

/// A run's outcome commits without waiting for an fsync of its own, and the writer
/// syncs it within a short while when no durable commit comes to carry it: after a
/// pause, a cut keeps it.
#[tokio::test]
async fn an_outcome_reaches_the_disk_soon_without_another_write() {
    let disk = Disk::new();
    let store = disk.open().await;
    let job = store.enqueue(new_job("m", 0), T0).await.unwrap().job;
    store.claim(claim(job.id, T0 + 1)).await.unwrap();
    let done = store
        .complete(job.id, 1, "worker-1", "{}".into(), T0 + 2)
        .await
        .unwrap();
    assert_eq!(done.map(|j| j.state), Some(JobState::Succeeded));
    // Idle: nothing but the writer's own sync can carry the outcome to the disk. Its
    // commit is the next one counted (the outcome's was counted before it answered).
    let outcome_committed = store.commit_times().count;
    tokio::time::timeout(Duration::from_secs(30), async {
        while store.commit_times().count == outcome_committed {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the writer syncs the outcome by itself");

    disk.power_cut(store).await;

    let store = disk.open().await;
    let job = store.get(job.id).await.unwrap().expect("the job");
    assert_eq!((job.state, job.attempts), (JobState::Succeeded, 1));
    store.close().await;
}
