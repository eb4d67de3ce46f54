//! The SQLite file's upkeep, on real files: online backups taken while jobs are being
//! written, pruned space given back, the write probe of readiness, and a database from
//! a newer foreman refused with a message that says what to do.

use std::path::{Path, PathBuf};

use foreman_store::testsuite::{T0, new_job};
use foreman_store::{Error, JobFailure, ListParams, SqliteStore, Store};
use rusqlite::Connection;
use tempfile::TempDir;

fn db_in(dir: &TempDir) -> PathBuf {
    dir.path().join("foreman.db")
}

async fn open(path: &Path) -> Store {
    Store::open(path.to_str().unwrap()).await.expect("open")
}

fn raw(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("raw connection");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .unwrap();
    conn
}

fn pragma(conn: &Connection, name: &str) -> i64 {
    conn.pragma_query_value(None, name, |row| row.get(0))
        .unwrap()
}

async fn pages(store: &Store) -> i64 {
    let Store::Sqlite(sqlite) = store else {
        panic!("a SQLite store");
    };
    sqlite.page_count().await.unwrap()
}

async fn all_jobs(store: &Store) -> usize {
    store
        .list(ListParams {
            limit: 100_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn a_database_from_a_newer_foreman_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    open(&path).await.close().await;
    let known = SqliteStore::latest_schema_version();
    raw(&path)
        .execute(
            "INSERT INTO foreman_schema_migrations (version, name, applied_at) VALUES (?1, 'future', 0)",
            [known + 1],
        )
        .unwrap();
    let error = Store::open(path.to_str().unwrap()).await.unwrap_err();
    match &error {
        Error::SchemaTooNew { found, known: k } => assert_eq!((*found, *k), (known + 1, known)),
        other => panic!("expected SchemaTooNew, got {other:?}"),
    }
    let message = error.to_string();
    assert!(
        message.contains(&format!("schema version {}", known + 1)),
        "{message}"
    );
    assert!(message.contains(&format!("up to {known}")), "{message}");
    assert!(message.contains("newer foreman"), "{message}");
    assert!(message.contains("restore a backup"), "{message}");
    // Nothing was changed: the newer version is still recorded.
    let versions: i64 = raw(&path)
        .query_row(
            "SELECT MAX(version) FROM foreman_schema_migrations",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(versions, known + 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_backup_taken_while_jobs_are_written_opens_with_every_committed_job() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path).await;
    for n in 0..200 {
        store.enqueue(new_job("m:latest", 0), T0 + n).await.unwrap();
    }
    // A writer keeps going while the backups are taken.
    let writer = {
        let store = store.clone();
        tokio::spawn(async move {
            for n in 0..300 {
                store
                    .enqueue(new_job("busy:latest", 0), T0 + 1_000 + n)
                    .await
                    .unwrap();
            }
        })
    };
    let through_store = dir.path().join("through-store.db");
    let report = store.backup(&through_store).await.unwrap();
    let from_file = dir.path().join("from-file.db");
    let file_report = Store::backup_database(path.to_str().unwrap(), &from_file)
        .await
        .unwrap();
    writer.await.unwrap();
    assert_eq!(report.path, through_store);
    assert_eq!(report.schema_version, SqliteStore::latest_schema_version());
    for (copy, report) in [(&through_store, &report), (&from_file, &file_report)] {
        assert!(report.jobs >= 200, "{report:?}");
        assert_eq!(report.bytes, std::fs::metadata(copy).unwrap().len());
        // One self-contained file: no log beside it.
        let mut wal = copy.as_os_str().to_owned();
        wal.push("-wal");
        assert!(!Path::new(&wal).exists());
        let restored = open(copy).await;
        assert_eq!(all_jobs(&restored).await as u64, report.jobs);
        assert_eq!(
            restored.queue_depth().await.unwrap(),
            report.jobs,
            "every job is queued, as it was"
        );
        restored.close().await;
    }
    assert_eq!(all_jobs(&store).await, 500);
    store.close().await;
}

#[tokio::test]
async fn a_backup_never_overwrites_and_refuses_what_is_not_a_foreman_database() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path).await;
    store.enqueue(new_job("m:latest", 0), T0).await.unwrap();
    let taken = dir.path().join("taken.db");
    std::fs::write(&taken, b"keep me").unwrap();
    let error = store.backup(&taken).await.unwrap_err();
    assert!(matches!(error, Error::Backup { .. }), "{error}");
    assert!(error.to_string().contains("never overwrites"), "{error}");
    assert_eq!(std::fs::read(&taken).unwrap(), b"keep me");
    store.close().await;

    let missing = dir.path().join("missing.db");
    let error = Store::backup_database(missing.to_str().unwrap(), &dir.path().join("b.db"))
        .await
        .unwrap_err();
    assert!(error.to_string().contains("no database file"), "{error}");
    let other = dir.path().join("other.db");
    raw(&other).execute_batch("CREATE TABLE t (x)").unwrap();
    let error = Store::backup_database(other.to_str().unwrap(), &dir.path().join("c.db"))
        .await
        .unwrap_err();
    assert!(
        error.to_string().contains("not a foreman database"),
        "{error}"
    );
    // Nothing is left behind by the refusals.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains("partial") || name.starts_with('b') || name.starts_with('c'))
        .collect();
    assert!(names.is_empty(), "{names:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pruning_large_jobs_gives_their_pages_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path).await;
    let big = "x".repeat(64 * 1024);
    for n in 0..160 {
        let mut job = new_job("m:latest", 0);
        job.payload = format!(r#"{{"model":"m:latest","prompt":"{big}"}}"#);
        let id = store.enqueue(job, T0 + n).await.unwrap().job.id;
        store
            .cancel(
                id,
                T0 + n,
                JobFailure {
                    status: 499,
                    message: "done with it".into(),
                },
            )
            .await
            .unwrap();
    }
    let full = pages(&store).await;
    assert_eq!(store.prune_finished(T0 + 1_000, 1_000).await.unwrap(), 160);
    assert_eq!(
        pages(&store).await,
        full,
        "deleted rows leave free pages in the file"
    );
    let mut given_back = 0;
    loop {
        let step = store.reclaim_space(100).await.unwrap();
        given_back += step;
        if step < 100 {
            break;
        }
    }
    let after = pages(&store).await;
    assert_eq!(after, full - given_back as i64);
    assert!(
        after * 10 < full,
        "the file shrank from {full} to {after} pages"
    );
    store.close().await;
    let conn = raw(&path);
    assert_eq!(pragma(&conn, "freelist_count"), 0);
    assert_eq!(pragma(&conn, "page_count"), after);
}

#[tokio::test]
async fn a_database_without_auto_vacuum_is_switched_once_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    // A file made before foreman set auto-vacuum: tables exist, so only VACUUM can
    // change the mode.
    let conn = raw(&path);
    conn.execute_batch("PRAGMA journal_mode=WAL; CREATE TABLE older (x)")
        .unwrap();
    assert_eq!(pragma(&conn, "auto_vacuum"), 0);
    drop(conn);
    let store = open(&path).await;
    store.enqueue(new_job("m:latest", 0), T0).await.unwrap();
    store.close().await;
    let conn = raw(&path);
    assert_eq!(pragma(&conn, "auto_vacuum"), 2, "INCREMENTAL");
    let older: i64 = conn
        .query_row(
            "SELECT count(*) FROM sqlite_schema WHERE name = 'older'",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(older, 1, "VACUUM keeps what was there");
}

#[tokio::test]
async fn the_write_probe_commits_a_real_write() {
    let dir = tempfile::tempdir().unwrap();
    let path = db_in(&dir);
    let store = open(&path).await;
    let conn = raw(&path);
    let wal_frames = |conn: &Connection| -> i64 {
        // (busy, frames in the log, frames checkpointed); PASSIVE copies, truncates nothing.
        conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |row| row.get(1))
            .unwrap()
    };
    conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .unwrap();
    assert_eq!(wal_frames(&conn), 0);
    store.probe_write().await.unwrap();
    assert!(wal_frames(&conn) > 0, "the probe put a page in the log");
    store.close().await;
    assert!(matches!(store.probe_write().await, Err(Error::Closed)));
}
