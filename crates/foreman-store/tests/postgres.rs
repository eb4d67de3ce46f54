//! Runs the backend conformance suite against PostgreSQL (a fresh database per test on the
//! throwaway cluster of `scripts/pg-test-cluster.sh`), and checks what only this backend
//! has: its migrations under a lock, its refusal of a newer schema, its backup answer.

use foreman_store::test_postgres::TestDatabase;
use foreman_store::testsuite::{self, T0, new_job};
use foreman_store::{Error, PgStore, Store};

macro_rules! postgres_store_tests {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let db = TestDatabase::create().await;
                let store = Store::open(&db.url).await.expect("open store");
                testsuite::$case(&store).await;
                store.close().await;
                db.drop_database().await;
            }
        )*
    };
}

macro_rules! postgres_url_tests {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let db = TestDatabase::create().await;
                testsuite::$case(&db.url).await;
                db.drop_database().await;
            }
        )*
    };
}

foreman_store::store_cases!(postgres_store_tests);
foreman_store::store_url_cases!(postgres_url_tests);
foreman_store::shared_database_cases!(postgres_url_tests);

async fn raw(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .expect("connect");
    tokio::spawn(connection);
    client
}

/// Instances starting together on a new database migrate it once: every open succeeds and
/// the migration is recorded once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_opens_migrate_once() {
    let db = TestDatabase::create().await;
    let opens: Vec<_> = (0..6)
        .map(|_| {
            let url = db.url.clone();
            tokio::spawn(async move { Store::open(&url).await })
        })
        .collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.expect("task").expect("open"));
    }
    let client = raw(&db.url).await;
    let rows = client
        .query(
            "SELECT version FROM foreman_schema_migrations ORDER BY version",
            &[],
        )
        .await
        .expect("migrations");
    let versions: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    // Each migration recorded once, in order, none missing.
    assert_eq!(
        versions,
        (1..=PgStore::latest_schema_version()).collect::<Vec<i64>>()
    );
    for store in &stores {
        assert_eq!(
            store.schema_version().await.expect("version"),
            PgStore::latest_schema_version()
        );
        store.probe_write().await.expect("probe");
        store.close().await;
    }
    drop(client);
    db.drop_database().await;
}

/// A database migrated by a newer foreman is refused with both versions named.
#[tokio::test]
async fn a_newer_schema_is_refused() {
    let db = TestDatabase::create().await;
    let store = Store::open(&db.url).await.expect("open");
    store.close().await;
    let client = raw(&db.url).await;
    client
        .execute(
            "INSERT INTO foreman_schema_migrations VALUES (99, 'from the future', 0)",
            &[],
        )
        .await
        .expect("insert");
    let error = Store::open(&db.url).await.unwrap_err();
    match error {
        Error::SchemaTooNew { found, known } => {
            assert_eq!((found, known), (99, PgStore::latest_schema_version()));
        }
        other => panic!("expected SchemaTooNew, got {other}"),
    }
    drop(client);
    db.drop_database().await;
}

/// The schema ties terminal states to `finished_at` and leases to `running`, as on SQLite.
#[tokio::test]
async fn schema_ties_terminal_states_to_finished_at() {
    let db = TestDatabase::create().await;
    let store = Store::open(&db.url).await.expect("open");
    let job = store
        .enqueue(new_job("m", 0), T0)
        .await
        .expect("enqueue")
        .job;
    let client = raw(&db.url).await;
    for update in [
        "UPDATE jobs SET state = 'succeeded' WHERE id = $1",
        "UPDATE jobs SET finished_at = 5 WHERE id = $1",
        "UPDATE jobs SET state = 'running' WHERE id = $1",
        "UPDATE jobs SET state = 'done' WHERE id = $1",
        "UPDATE jobs SET cancel_requested = true WHERE id = $1",
    ] {
        let refused = client.execute(update, &[&job.id.to_string()]).await;
        assert!(refused.is_err(), "{update} was allowed");
    }
    store.close().await;
    drop(client);
    db.drop_database().await;
}

/// foreman does not copy a shared database itself: the error names the pg_dump command,
/// and no password.
#[tokio::test]
async fn backup_names_pg_dump() {
    let db = TestDatabase::create().await;
    let store = Store::open(&db.url).await.expect("open");
    let destination = std::env::temp_dir().join("foreman-never-written.db");
    let error = store.backup(&destination).await.unwrap_err();
    assert!(matches!(error, Error::UsePgDump { .. }), "{error}");
    assert!(
        error.to_string().contains("pg_dump --format=custom"),
        "{error}"
    );
    assert!(!destination.exists());
    let error = Store::backup_database("postgres://u:secret@127.0.0.1:1/db", &destination)
        .await
        .unwrap_err();
    assert!(matches!(error, Error::UsePgDump { .. }), "{error}");
    assert!(!error.to_string().contains("secret"), "{error}");
    assert!(
        store
            .location()
            .starts_with("postgres://postgres@127.0.0.1:")
    );
    assert!(!store.location().contains('?'));
    store.close().await;
    assert!(matches!(
        store.get(foreman_store::JobId::generate()).await,
        Err(Error::Closed)
    ));
    db.drop_database().await;
}

/// A server that is not there fails the open with a connection error, in bounded time.
#[tokio::test]
async fn an_unreachable_server_fails_the_open() {
    let error = Store::open("postgres://foreman@127.0.0.1:1/foreman?connect_timeout=2")
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::Postgres(_) | Error::Connect(_)),
        "{error}"
    );
}

/// Every change another instance's waiter cares about is heard on a listening session of
/// another handle, after its commit: new work, a requeue, a cancel request, the end; a
/// claim and a heartbeat say nothing. A session that is dropped hears nothing more, and a new one
/// hears what follows.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn signals_cross_handles_at_commit() {
    use foreman_store::{JobFailure, Signal};
    let db = TestDatabase::create().await;
    let writer = Store::open(&db.url).await.expect("open writer");
    let listener = Store::open(&db.url).await.expect("open listener");
    let mut signals = listener
        .listen()
        .await
        .expect("listen")
        .expect("postgres listens");
    let next = async |signals: &mut foreman_store::PgSignals| {
        tokio::time::timeout(std::time::Duration::from_secs(30), signals.next())
            .await
            .expect("a signal within 30 s")
            .expect("the session is open")
    };

    let job = writer
        .enqueue(new_job("m", 0), T0)
        .await
        .expect("enqueue")
        .job;
    assert_eq!(next(&mut signals).await, Signal::NewWork(job.id));
    let claimed = testsuite::claim(&writer, job.id, "a/t/0", T0 + 1).await;
    // Neither a claim nor a heartbeat sends anything (migration 10), so the next signals
    // heard are those of the requeue that follows: its run was cut off, and there is work.
    assert!(
        writer
            .heartbeat(job.id, claimed.attempts, "a/t/0", T0 + 2, 30_000)
            .await
            .expect("heartbeat")
    );
    writer
        .requeue(job.id, claimed.attempts, "a/t/0", T0 + 2)
        .await
        .expect("requeue")
        .expect("requeued");
    assert_eq!(next(&mut signals).await, Signal::Changed(job.id));
    assert_eq!(next(&mut signals).await, Signal::NewWork(job.id));
    let claimed = testsuite::claim(&writer, job.id, "a/t/0", T0 + 2).await;
    let reason = JobFailure {
        status: 499,
        message: "cancelled".to_owned(),
    };
    writer.cancel(job.id, T0 + 3, reason).await.expect("cancel");
    assert_eq!(next(&mut signals).await, Signal::CancelRequested(job.id));
    writer
        .finish_cancelled(job.id, claimed.attempts, "a/t/0", T0 + 4)
        .await
        .expect("finish cancelled");
    assert_eq!(next(&mut signals).await, Signal::Finished(job.id));

    drop(signals);
    let mut again = listener
        .listen()
        .await
        .expect("listen again")
        .expect("postgres listens");
    let second = writer
        .enqueue(new_job("m", 0), T0 + 5)
        .await
        .expect("enqueue")
        .job;
    assert_eq!(next(&mut again).await, Signal::NewWork(second.id));

    writer.close().await;
    listener.close().await;
    db.drop_database().await;
}

/// A job's output written through one handle is read through another, in order and after
/// a cursor, each batch announced by `out:ID` at its commit; SQLite refuses to write it.
/// Once the job is finished, `prune_output` deletes its batches.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn output_batches_cross_handles_in_order() {
    use foreman_store::{Error, OutputBatch, Signal};
    let db = TestDatabase::create().await;
    let writer = Store::open(&db.url).await.expect("open writer");
    let reader = Store::open(&db.url).await.expect("open reader");
    let job = writer
        .enqueue(new_job("m", 0), T0)
        .await
        .expect("enqueue")
        .job;
    let claimed = testsuite::claim(&writer, job.id, "a/t/0", T0 + 1).await;
    let mut signals = reader
        .listen()
        .await
        .expect("listen")
        .expect("postgres listens");
    let batch = |seq: u32, bytes: &[u8], last: bool| OutputBatch {
        attempt: claimed.attempts,
        seq,
        content_type: "application/x-ndjson".to_owned(),
        bytes: bytes.to_vec(),
        last,
    };
    assert!(
        reader
            .read_output(job.id, None)
            .await
            .expect("read")
            .is_empty()
    );
    writer
        .append_output(job.id, &batch(0, b"{\"a\":1}\n", false))
        .await
        .expect("append");
    let heard = tokio::time::timeout(std::time::Duration::from_secs(30), signals.next())
        .await
        .expect("a signal within 30 s");
    assert_eq!(heard, Some(Signal::Output(job.id)));
    writer
        .append_output(job.id, &batch(1, b"{\"b\":2}\n", false))
        .await
        .expect("append");
    writer
        .append_output(job.id, &batch(2, b"{\"done\":true}\n", true))
        .await
        .expect("append");
    let all = reader.read_output(job.id, None).await.expect("read all");
    assert_eq!(
        all,
        vec![
            batch(0, b"{\"a\":1}\n", false),
            batch(1, b"{\"b\":2}\n", false),
            batch(2, b"{\"done\":true}\n", true)
        ]
    );
    let after_first = reader
        .read_output(job.id, Some(all[0].cursor()))
        .await
        .expect("read after the first");
    assert_eq!(after_first, all[1..].to_vec());
    assert!(
        reader
            .read_output(job.id, Some(all[2].cursor()))
            .await
            .expect("read after the last")
            .is_empty()
    );
    // A running job's output stays; a finished one's goes.
    assert_eq!(reader.prune_output(i64::MAX).await.expect("prune"), 0);
    writer
        .complete(job.id, claimed.attempts, "a/t/0", "{}".to_owned(), T0 + 2)
        .await
        .expect("complete")
        .expect("completed");
    assert_eq!(
        reader.prune_output(T0 + 2).await.expect("prune"),
        0,
        "finished at T0 + 2"
    );
    assert_eq!(reader.prune_output(T0 + 3).await.expect("prune"), 3);
    assert!(
        reader
            .read_output(job.id, None)
            .await
            .expect("read")
            .is_empty()
    );

    let dir = tempfile::tempdir().expect("tempdir");
    let sqlite = Store::open(dir.path().join("q.db").to_str().unwrap())
        .await
        .expect("open sqlite");
    assert!(matches!(
        sqlite.append_output(job.id, &batch(0, b"x", false)).await,
        Err(Error::NotShared)
    ));
    sqlite.close().await;
    writer.close().await;
    reader.close().await;
    db.drop_database().await;
}

/// A run's outcome and its webhook delivery are one transaction: when the delivery cannot
/// be inserted (its table renamed away), the outcome is rolled back and the job stays
/// running; once it can, both are recorded, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_outcome_whose_delivery_cannot_be_written_is_not_recorded() {
    let db = TestDatabase::create().await;
    let store = Store::open(&db.url).await.expect("open store");
    let mut hooked = new_job("m", 0);
    hooked.webhook_url = Some("http://hooks.example/in".to_owned());
    let job = store.enqueue(hooked, T0).await.expect("enqueue").job;
    testsuite::claim(&store, job.id, "w", T0 + 1).await;
    let client = raw(&db.url).await;
    client
        .batch_execute("ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_away")
        .await
        .expect("rename");
    assert!(
        store
            .complete(job.id, 1, "w", "{}".to_owned(), T0 + 2)
            .await
            .is_err()
    );
    let now = store.get(job.id).await.expect("get").expect("exists");
    assert_eq!(
        (now.state, now.finished_at),
        (foreman_store::JobState::Running, None)
    );
    client
        .batch_execute("ALTER TABLE webhook_deliveries_away RENAME TO webhook_deliveries")
        .await
        .expect("rename back");
    let done = store
        .complete(job.id, 1, "w", "{}".to_owned(), T0 + 3)
        .await
        .expect("complete")
        .expect("current attempt");
    assert_eq!(done.state, foreman_store::JobState::Succeeded);
    let deliveries = store.webhooks_for_job(job.id).await.expect("webhooks");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].created_at, T0 + 3);
    store.close().await;
    db.drop_database().await;
}
