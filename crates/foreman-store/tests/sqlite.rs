//! Runs the backend conformance suite against SQLite (a fresh file in a temp dir per test), and
//! checks what only the SQLite backend has: its URL forms, its connection settings, its schema
//! constraints and migration bookkeeping, and the queue-head query at realistic depth.

use std::cmp::Reverse;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use foreman_store::testsuite::{self, T0, new_job};
use foreman_store::{Error, JobId, JobRef, JobState, QueueHead, Store};
use rusqlite::Connection;
use tempfile::TempDir;

/// A temp dir holding the database file; the dir is removed when this is dropped.
struct TempDb {
    _dir: TempDir,
    path: PathBuf,
}

impl TempDb {
    fn new() -> TempDb {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("foreman.db");
        TempDb { _dir: dir, path }
    }

    fn url(&self) -> String {
        format!("sqlite://{}", self.path.display())
    }

    async fn open(&self) -> Store {
        Store::open(&self.url()).await.expect("open store")
    }
}

/// A connection of its own to the file, as another process would have.
fn raw_connection(path: &Path) -> Connection {
    let conn = Connection::open(path).expect("raw connection");
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .expect("busy timeout");
    conn
}

macro_rules! sqlite_store_tests {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let db = TempDb::new();
                let store = db.open().await;
                testsuite::$case(&store).await;
                store.close().await;
            }
        )*
    };
}

macro_rules! sqlite_url_tests {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let db = TempDb::new();
                testsuite::$case(&db.url()).await;
            }
        )*
    };
}

foreman_store::store_cases!(sqlite_store_tests);
foreman_store::store_url_cases!(sqlite_url_tests);

#[tokio::test]
async fn open_refuses_unknown_schemes_and_keeps_passwords_out_of_errors() {
    // A PostgreSQL URL selects PostgreSQL: nothing listens on port 1, so the open fails
    // to connect, and the message does not show the password.
    let error = Store::open("postgres://foreman:hunter2@127.0.0.1:1/foreman?connect_timeout=2")
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Postgres(_) | Error::Connect(_)),
        "{error}"
    );
    assert!(!error.to_string().contains("hunter2"), "{error}");

    let error = Store::open("mysql://x").await.unwrap_err();
    assert!(matches!(error, Error::InvalidUrl { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("\"mysql\""), "{message}");
    assert!(message.contains("a file path"), "{message}");
    assert!(message.contains("sqlite://PATH"), "{message}");
    assert!(message.contains("sqlite:PATH"), "{message}");
    assert!(message.contains("postgres://"), "{message}");
}

#[tokio::test]
async fn every_url_form_opens_the_same_file() {
    let db = TempDb::new();
    let plain = db.path.to_str().expect("utf-8 temp path").to_owned();

    let store = Store::open(&plain).await.expect("open plain path");
    let job = store
        .enqueue(new_job("m", 0), T0)
        .await
        .expect("enqueue")
        .job;
    store.close().await;

    for url in [format!("sqlite://{plain}"), format!("sqlite:{plain}")] {
        let store = Store::open(&url).await.expect("open url");
        let found = store.get(job.id).await.expect("get");
        assert_eq!(found.as_ref(), Some(&job), "{url}");
        store.close().await;
    }
}

#[tokio::test]
async fn open_creates_missing_file_but_not_missing_dirs() {
    let dir = tempfile::tempdir().expect("temp dir");
    let fresh = dir.path().join("fresh.db");
    let store = Store::open(fresh.to_str().expect("utf-8"))
        .await
        .expect("open");
    assert!(fresh.exists());
    store.close().await;

    let nested = dir.path().join("no-such-dir").join("jobs.db");
    let error = Store::open(nested.to_str().expect("utf-8"))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::Database(_)), "{error}");
}

#[tokio::test]
async fn durability_pragmas_are_in_force() {
    let db = TempDb::new();
    let store = db.open().await;
    let Store::Sqlite(sqlite) = &store else {
        panic!("a SQLite store");
    };
    let pragmas = sqlite.pragmas().await.expect("pragmas");
    assert_eq!(pragmas.journal_mode, "wal");
    assert_eq!(pragmas.synchronous, 2);
    assert!(pragmas.foreign_keys);
    assert_eq!(pragmas.busy_timeout_ms, 5_000);
    assert_eq!(sqlite.path(), db.path.as_path());

    // WAL is a property of the file: a connection of its own sees it too.
    let raw = raw_connection(&db.path);
    let journal_mode: String = raw
        .query_row("PRAGMA journal_mode", [], |row| row.get(0))
        .expect("journal_mode");
    assert_eq!(journal_mode.to_lowercase(), "wal");
    drop(raw);
    store.close().await;
}

#[tokio::test]
async fn migrations_are_recorded_once() {
    let db = TempDb::new();
    let store = db.open().await;
    let Store::Sqlite(sqlite) = &store else {
        panic!("a SQLite store");
    };
    let latest = foreman_store::SqliteStore::latest_schema_version();
    assert_eq!(sqlite.schema_version().await.expect("version"), latest);
    store.close().await;

    let store = db.open().await;
    store.close().await;
    let raw = raw_connection(&db.path);
    let versions: Vec<i64> = raw
        .prepare("SELECT version FROM foreman_schema_migrations ORDER BY version")
        .expect("prepare")
        .query_map([], |row| row.get(0))
        .expect("versions")
        .collect::<Result<_, _>>()
        .expect("versions");
    // Each migration recorded once, in order, none missing.
    assert_eq!(versions, (1..=latest).collect::<Vec<i64>>());
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let db = TempDb::new();
    db.open().await.close().await;
    let raw = raw_connection(&db.path);
    raw.execute(
        "INSERT INTO foreman_schema_migrations (version, name, applied_at) VALUES (99, 'x', 0)",
        [],
    )
    .expect("insert future version");
    drop(raw);

    let error = Store::open(&db.url()).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::SchemaTooNew {
                found: 99,
                known,
            } if known == foreman_store::SqliteStore::latest_schema_version()
        ),
        "{error}"
    );
}

#[tokio::test]
async fn schema_ties_terminal_states_to_finished_at() {
    let db = TempDb::new();
    let store = db.open().await;
    let raw = raw_connection(&db.path);

    let insert = |state: &'static str, finished_at: Option<i64>| {
        raw.execute(
            "INSERT INTO jobs (id, kind, model, payload, state, priority, max_attempts,
                               run_after, created_at, finished_at)
             VALUES (?1, 'chat', 'm', '{}', ?2, 0, 1, 0, 0, ?3)",
            rusqlite::params![JobId::generate().to_string(), state, finished_at],
        )
    };
    for state in ["succeeded", "failed", "cancelled"] {
        let missing = insert(state, None);
        assert!(missing.is_err(), "{state} without finished_at was accepted");
        insert(state, Some(1)).expect("terminal with finished_at");
    }
    let finished_but_queued = insert("queued", Some(1));
    assert!(finished_but_queued.is_err());
    insert("queued", None).expect("queued without finished_at");
    drop(raw);

    // The rows written behind the store's back decode like its own.
    let queued = store
        .list(foreman_store::ListParams {
            state: Some(JobState::Queued),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list");
    assert_eq!(queued.len(), 1);
    store.close().await;
}

#[tokio::test]
async fn a_row_the_domain_cannot_read_is_reported_corrupt() {
    let db = TempDb::new();
    let store = db.open().await;
    let job = store
        .enqueue(new_job("m", 0), T0)
        .await
        .expect("enqueue")
        .job;
    let raw = raw_connection(&db.path);
    // Passes the schema's checks but not the domain's: an attempt count beyond u32.
    raw.execute(
        "UPDATE jobs SET max_attempts = 1 << 40 WHERE id = ?1",
        [job.id.to_string()],
    )
    .expect("update");
    drop(raw);

    let error = store.get(job.id).await.unwrap_err();
    assert!(
        matches!(&error, Error::CorruptRow { id, .. } if *id == job.id.to_string()),
        "{error}"
    );
    store.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queue_heads_at_ten_thousand_queued_jobs() {
    const MODELS: [&str; 7] = ["alpha", "beta", "gamma", "delta", "eps", "zeta", "eta"];
    const N_JOBS: usize = 10_000;
    let db = TempDb::new();
    let store = db.open().await;

    // Bulk-load in one transaction behind the store's back: enqueueing one by one would pay
    // one fsync per job. Priorities, ages and run_after vary deterministically.
    let mut raw = raw_connection(&db.path);
    let tx = raw.transaction().expect("begin");
    let now = T0 + 1_000_000;
    let mut queued: Vec<JobRef> = Vec::new();
    let mut eligible: Vec<(&str, JobRef)> = Vec::new();
    for job_idx in 0..N_JOBS {
        let model = MODELS[job_idx % MODELS.len()];
        let job = JobRef {
            id: JobId::generate(),
            priority: i32::try_from((job_idx * 7919) % 11).expect("small") - 5,
            created_at: T0 + i64::try_from((job_idx * 104_729) % 900_000).expect("small"),
        };
        // Every tenth job is backing off past `now`.
        let run_after = if job_idx % 10 == 0 {
            now + 1
        } else {
            job.created_at
        };
        tx.execute(
            "INSERT INTO jobs (id, kind, model, payload, state, priority, max_attempts,
                               run_after, created_at)
             VALUES (?1, 'generate', ?2, '{}', 'queued', ?3, 3, ?4, ?5)",
            rusqlite::params![
                job.id.to_string(),
                model,
                job.priority,
                run_after,
                job.created_at
            ],
        )
        .expect("insert");
        queued.push(job);
        if run_after <= now {
            eligible.push((model, job));
        }
    }
    tx.commit().expect("commit");
    drop(raw);

    // The same answer computed the plain way.
    let rank = |job: &JobRef| (Reverse(job.priority), job.created_at, job.id);
    let mut expected: BTreeMap<&str, QueueHead> = BTreeMap::new();
    for (model, job) in &eligible {
        let head = expected.entry(model).or_insert_with(|| QueueHead {
            model: (*model).to_owned(),
            load_options: String::new(),
            best: *job,
            oldest_created_at: job.created_at,
            depth: 0,
            callers: Vec::new(),
        });
        if rank(job) < rank(&head.best) {
            head.best = *job;
        }
        head.oldest_created_at = head.oldest_created_at.min(job.created_at);
        head.depth += 1;
    }
    // Every job here was written without a caller: one anonymous caller per key.
    let expected: Vec<QueueHead> = expected
        .into_values()
        .map(|mut head| {
            head.callers = vec![foreman_store::CallerHead {
                caller: None,
                weight: 1,
                best: head.best,
                depth: head.depth,
            }];
            head
        })
        .collect();

    assert_eq!(
        store.queue_depth().await.expect("depth"),
        u64::try_from(N_JOBS).expect("fits")
    );
    // The store keeps the queue order in memory; rows written behind its back (as by
    // another process) reach it when it reloads, within a few seconds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let heads = loop {
        let heads = store.queue_heads(now).await.expect("heads");
        if heads == expected || std::time::Instant::now() > deadline {
            break heads;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(heads, expected);
    // A store opened now reads them at once.
    let reopened = db.open().await;
    assert_eq!(reopened.queue_heads(now).await.expect("heads"), expected);
    reopened.close().await;
    assert_eq!(heads.len(), MODELS.len());

    // Queue position counts every queued job that outranks, eligible or not.
    let mut queue_order: Vec<JobRef> = queued.clone();
    queue_order.sort_by_key(rank);
    for job_idx in (0..N_JOBS).step_by(997) {
        let job = queued[job_idx];
        let expected_position = queue_order
            .iter()
            .position(|other| other.id == job.id)
            .expect("queued");
        assert_eq!(
            store.queue_position(job.id).await.expect("position"),
            Some(u64::try_from(expected_position).expect("fits"))
        );
    }
    store.close().await;
}

/// Relaxed writes (claims, heartbeats) commit without an fsync, but only in batches of
/// their own: a durable write after them (here the settings read, which runs as one)
/// sees `synchronous=FULL` again.
#[tokio::test]
async fn relaxed_writes_give_full_sync_back() {
    let db = TempDb::new();
    let store = db.open().await;
    let Store::Sqlite(sqlite) = &store else {
        panic!("a SQLite store");
    };
    let job = store
        .enqueue(new_job("m", 0), T0)
        .await
        .expect("enqueue")
        .job;
    let claimed = testsuite::claim(&store, job.id, "w", T0 + 1).await;
    assert!(
        store
            .heartbeat(job.id, claimed.attempts, "w", T0 + 2, 30_000)
            .await
            .expect("heartbeat")
    );
    assert!(
        !store
            .heartbeat(job.id, claimed.attempts, "someone else", T0 + 2, 30_000)
            .await
            .expect("heartbeat")
    );
    assert_eq!(sqlite.pragmas().await.expect("pragmas").synchronous, 2);
    store.close().await;
}

/// Many concurrent enqueues share commits, and each still gets its own job back.
#[tokio::test]
async fn concurrent_enqueues_each_get_their_job() {
    let db = TempDb::new();
    let store = db.open().await;
    let tasks: Vec<_> = (0..200)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut job = new_job("m", 0);
                job.payload = format!("{{\"n\":{i}}}");
                store.enqueue(job, T0 + i).await.expect("enqueue").job
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for (i, task) in tasks.into_iter().enumerate() {
        let job = task.await.expect("task");
        assert_eq!(
            job.payload,
            format!("{{\"n\":{i}}}"),
            "each caller gets its own job"
        );
        assert!(ids.insert(job.id));
    }
    assert_eq!(store.queue_depth().await.expect("depth"), 200);
    store.close().await;
}

/// Two processes starting on one new file at once (foreman and a tool, or a test)
/// both open it: the loser of the race waits for the lock instead of failing.
#[tokio::test]
async fn concurrent_opens_of_a_new_file_both_succeed() {
    for _ in 0..20 {
        let db = TempDb::new();
        let url = db.url();
        let (a, b) = tokio::join!(Store::open(&url), Store::open(&url));
        let (a, b) = (a.expect("first open"), b.expect("second open"));
        a.close().await;
        b.close().await;
    }
}

/// A run's outcome and its webhook delivery are one write: when the delivery cannot be
/// inserted (its table moved away by another connection), the outcome is not recorded
/// either, and the job stays running; once it can, both are, once.
#[tokio::test]
async fn an_outcome_whose_delivery_cannot_be_written_is_not_recorded() {
    let db = TempDb::new();
    let store = db.open().await;
    let mut hooked = new_job("m", 0);
    hooked.webhook_url = Some("http://hooks.example/in".to_owned());
    let job = store.enqueue(hooked, T0).await.expect("enqueue").job;
    testsuite::claim(&store, job.id, "w", T0 + 1).await;
    let raw = raw_connection(&db.path);
    raw.execute_batch("ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_away")
        .expect("rename");
    assert!(
        store
            .complete(job.id, 1, "w", "{}".to_owned(), T0 + 2)
            .await
            .is_err()
    );
    let now = store.get(job.id).await.expect("get").expect("exists");
    assert_eq!((now.state, now.finished_at), (JobState::Running, None));
    raw.execute_batch("ALTER TABLE webhook_deliveries_away RENAME TO webhook_deliveries")
        .expect("rename back");
    let done = store
        .complete(job.id, 1, "w", "{}".to_owned(), T0 + 3)
        .await
        .expect("complete")
        .expect("current attempt");
    assert_eq!(done.state, JobState::Succeeded);
    let deliveries = store.webhooks_for_job(job.id).await.expect("webhooks");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].created_at, T0 + 3);
    store.close().await;
}
