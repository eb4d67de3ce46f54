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
async fn open_refuses_postgres_and_unknown_schemes() {
    let error = Store::open("postgres://foreman:hunter2@localhost/foreman")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::UnsupportedBackend(_)), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("PostgreSQL backend is not built yet"),
        "{message}"
    );
    assert!(!message.contains("hunter2"), "{message}");

    let error = Store::open("postgresql://localhost/foreman")
        .await
        .unwrap_err();
    assert!(matches!(error, Error::UnsupportedBackend(_)), "{error}");

    let error = Store::open("mysql://x").await.unwrap_err();
    assert!(matches!(error, Error::InvalidUrl { .. }), "{error}");
    let message = error.to_string();
    assert!(message.contains("\"mysql\""), "{message}");
    assert!(message.contains("a file path"), "{message}");
    assert!(message.contains("sqlite://PATH"), "{message}");
    assert!(message.contains("sqlite:PATH"), "{message}");
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
    let Store::Sqlite(sqlite) = &store;
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
    let Store::Sqlite(sqlite) = &store;
    assert_eq!(sqlite.schema_version().await.expect("version"), 7);
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
    assert_eq!(versions, [1, 2, 3, 4, 5, 6, 7]);
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
                known: 7
            }
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
        });
        if rank(job) < rank(&head.best) {
            head.best = *job;
        }
        head.oldest_created_at = head.oldest_created_at.min(job.created_at);
        head.depth += 1;
    }
    let expected: Vec<QueueHead> = expected.into_values().collect();

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
    let Store::Sqlite(sqlite) = &store;
    let job = store
        .enqueue(new_job("m", 0), T0)
        .await
        .expect("enqueue")
        .job;
    let claimed = store
        .claim(foreman_store::ClaimParams {
            id: job.id,
            owner: "w".to_owned(),
            target: "t".to_owned(),
            now: T0 + 1,
            lease_for_ms: 30_000,
        })
        .await
        .expect("claim")
        .expect("claimed");
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

/// A job with a webhook URL leaves a delivery in the outbox when it finishes, in the
/// same transaction; attempts are logged and fenced.
#[tokio::test]
async fn finished_jobs_with_a_webhook_fill_the_outbox() {
    use foreman_store::{AttemptOutcome, ClaimParams, DeliveryState, WebhookAttempt};
    let db = TempDb::new();
    let store = db.open().await;
    let mut hooked = new_job("m", 0);
    hooked.webhook_url = Some("http://hooks.example/in".to_owned());
    hooked.metadata = Some("{\"batch\":7}".to_owned());
    let job = store.enqueue(hooked, T0).await.expect("enqueue").job;
    let plain = store
        .enqueue(new_job("m", 0), T0)
        .await
        .expect("enqueue")
        .job;
    for (id, at) in [(job.id, T0 + 1), (plain.id, T0 + 2)] {
        store
            .claim(ClaimParams {
                id,
                owner: "w".into(),
                target: "t".to_owned(),
                now: at,
                lease_for_ms: 30_000,
            })
            .await
            .expect("claim")
            .expect("claimed");
        store
            .complete(id, 1, "w", "{}".into(), at + 1)
            .await
            .expect("complete")
            .expect("completed");
    }
    assert!(
        store.due_webhooks(T0, 10).await.expect("due").is_empty(),
        "not due before the job ended"
    );
    let due = store.due_webhooks(T0 + 10, 10).await.expect("due");
    assert_eq!(due.len(), 1, "only the job with a webhook");
    let delivery = &due[0];
    assert!(delivery.id.starts_with("msg_"));
    assert_eq!(
        (delivery.job_id, delivery.state, delivery.attempts),
        (job.id, DeliveryState::Pending, 0)
    );
    let payload: serde_json::Value = serde_json::from_str(&delivery.payload).expect("json payload");
    assert_eq!(payload["type"], "job.succeeded");
    assert_eq!(payload["data"]["id"], job.id.to_string());
    assert_eq!(payload["data"]["metadata"]["batch"], 7);
    assert!(
        payload["timestamp"]
            .as_str()
            .expect("timestamp")
            .ends_with('Z')
    );

    let first = WebhookAttempt {
        attempt: 1,
        at: T0 + 20,
        status: Some(500),
        latency_ms: 3,
        error: Some("HTTP 500".into()),
        retry_at: None,
    };
    assert!(
        store
            .record_webhook_attempt(&delivery.id, &first, AttemptOutcome::RetryAt(T0 + 1_000))
            .await
            .expect("record")
    );
    assert!(
        !store
            .record_webhook_attempt(&delivery.id, &first, AttemptOutcome::Delivered)
            .await
            .expect("record"),
        "a stale attempt is fenced"
    );
    assert!(
        store
            .due_webhooks(T0 + 999, 10)
            .await
            .expect("due")
            .is_empty()
    );
    assert_eq!(
        store.due_webhooks(T0 + 1_000, 10).await.expect("due").len(),
        1
    );
    let second = WebhookAttempt {
        attempt: 2,
        at: T0 + 1_000,
        status: Some(204),
        latency_ms: 2,
        error: None,
        retry_at: None,
    };
    assert!(
        store
            .record_webhook_attempt(&delivery.id, &second, AttemptOutcome::Delivered)
            .await
            .expect("record")
    );
    assert!(
        store
            .due_webhooks(T0 + 100_000, 10)
            .await
            .expect("due")
            .is_empty()
    );
    let recorded = store.webhooks_for_job(job.id).await.expect("webhooks");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].state, DeliveryState::Delivered);
    let first_logged = WebhookAttempt {
        retry_at: Some(T0 + 1_000),
        ..first
    };
    assert_eq!(
        recorded[0].log,
        vec![first_logged, second],
        "the log keeps when each retry was scheduled"
    );
    assert!(
        store
            .webhooks_for_job(plain.id)
            .await
            .expect("webhooks")
            .is_empty()
    );

    // Cancelling a queued job notifies too.
    let mut cancelled = new_job("m", 0);
    cancelled.webhook_url = Some("http://hooks.example/in".to_owned());
    let cancelled = store.enqueue(cancelled, T0).await.expect("enqueue").job;
    store
        .cancel(cancelled.id, T0 + 5, testsuite::cancel_reason())
        .await
        .expect("cancel");
    let deliveries = store
        .webhooks_for_job(cancelled.id)
        .await
        .expect("webhooks");
    let payload: serde_json::Value = serde_json::from_str(&deliveries[0].payload).expect("json");
    assert_eq!(payload["type"], "job.cancelled");
    store.close().await;
}

/// The operator views' summary: queued jobs (eligible or not) per model and priority,
/// with the oldest of each; running jobs are not queued. And every commit is timed.
#[tokio::test]
async fn the_queue_summary_groups_queued_jobs_and_commits_are_timed() {
    let db = TempDb::new();
    let store = db.open().await;
    let before = store.commit_times().count;
    let mut ids = Vec::new();
    for (index, (model, priority)) in [("b", 0), ("a", 0), ("a", 5), ("a", 0), ("b", 0)]
        .into_iter()
        .enumerate()
    {
        let enqueued = store
            .enqueue(new_job(model, priority), T0 + index as i64)
            .await
            .unwrap();
        ids.push(enqueued.job.id);
    }
    // The first job of b runs: it leaves the queue, and b's oldest is its second.
    let claimed = store
        .claim(foreman_store::ClaimParams {
            id: ids[0],
            owner: "instance/gpu/0".into(),
            target: "gpu".into(),
            now: T0 + 10,
            lease_for_ms: 30_000,
        })
        .await
        .unwrap();
    assert!(claimed.is_some());
    let summary: Vec<(String, i32, u64, i64)> = store
        .queue_summary()
        .await
        .unwrap()
        .into_iter()
        .map(|group| {
            (
                group.model,
                group.priority,
                group.count,
                group.oldest_created_at,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("a".to_string(), 5, 1, T0 + 2),
            ("a".to_string(), 0, 2, T0 + 1),
            ("b".to_string(), 0, 1, T0 + 4),
        ]
    );
    let times = store.commit_times();
    assert!(times.count >= before + 6, "five enqueues and a claim");
    assert_eq!(times.buckets.iter().sum::<u64>(), times.count);
    store.close().await;
}
