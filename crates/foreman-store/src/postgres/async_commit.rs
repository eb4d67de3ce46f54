//! Asynchronous commits: the PostgreSQL form of the SQLite backend's *relaxed* writes
//! (claims, heartbeats) and *soon* writes (a run's outcome: complete, fail, retry,
//! requeue, finish cancelled).
//!
//! Why: with `synchronous_commit = on` every one of these waited for its WAL flush, three
//! flushes per job, and the NOTIFY of the signal trigger holds PostgreSQL's cluster-wide
//! notify lock from before the commit record until after that flush, so the commits of
//! every instance queued behind one another's fsyncs (`docs/BENCHMARKS.md`, PostgreSQL).
//! An asynchronous commit is committed in the server at once (a foreman crash keeps it,
//! every session sees it) and reaches the disk within the WAL writer's delay, or at the
//! next synchronous commit of the cluster, which flushes every earlier record. Only a
//! crash of the PostgreSQL server can lose it, and then only a suffix of the history:
//! ARCHITECTURE.md says why each lost write is one the queue already survives.
//!
//! How: such a statement calls `set_config('synchronous_commit', 'off', true)` in its
//! guard. The setting is local to the statement's transaction (the implicit one of a
//! self-committing statement, or the explicit one it runs in), and PostgreSQL reads it
//! when that transaction commits; the pooled session's later writes are synchronous
//! again. One statement, so no round trip is added (a `SET LOCAL` would need BEGIN and
//! COMMIT of its own around every claim and heartbeat).

/// The guard term that makes its transaction commit asynchronously; always true.
const ASYNC_COMMIT: &str = "set_config('synchronous_commit', 'off', true) IS NOT NULL";

/// The same for a transaction of several statements (one round trip more): its first
/// statement.
pub(super) const IN_THIS_TRANSACTION: &str = "SET LOCAL synchronous_commit = off";

/// `sql` with its first `WHERE` made to commit its transaction asynchronously.
///
/// The term is a filter evaluated on each row the statement looks at, so it has run for
/// every row it changes; a statement that changes no row writes nothing to commit.
///
/// Panics when `sql` has no `WHERE` (the statements are constants: a test finds it).
pub(super) fn asynchronous(sql: &str) -> String {
    assert!(
        sql.contains("WHERE "),
        "an asynchronous commit is set in the statement's WHERE"
    );
    sql.replacen("WHERE ", &format!("WHERE {ASYNC_COMMIT} AND "), 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_where_gets_the_setting() {
        assert_eq!(
            asynchronous("UPDATE t SET a = 1 WHERE id = $1 AND b IN (SELECT b FROM u WHERE c)"),
            format!(
                "UPDATE t SET a = 1 WHERE {ASYNC_COMMIT} AND id = $1 AND b IN (SELECT b FROM u WHERE c)"
            )
        );
    }

    #[test]
    #[should_panic(expected = "WHERE")]
    fn a_statement_without_where_is_refused() {
        asynchronous("INSERT INTO t VALUES (1)");
    }

    /// The claim, the heartbeat and an outcome, each run by hand in an explicit
    /// transaction on a real row, leave `synchronous_commit` off for that transaction (so
    /// its commit does not wait for the flush), and the session's next transaction is
    /// synchronous again.
    #[cfg(feature = "testing")]
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn relaxed_and_soon_statements_commit_asynchronously_and_only_their_transaction() {
        use super::super::{PgStore, queries};
        use crate::test_postgres::TestDatabase;
        use crate::testsuite::{T0, new_job};

        let db = TestDatabase::create().await;
        let store = PgStore::open(&db.url).await.expect("open");
        let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let driver = tokio::spawn(connection);
        let setting = async || -> String {
            client
                .query_one("SHOW synchronous_commit", &[])
                .await
                .expect("show")
                .get(0)
        };

        let job = store
            .enqueue(new_job("m", 0), T0, None)
            .await
            .expect("enqueue")
            .job;
        assert_eq!(setting().await, "on", "the server's default");

        let id = job.id.to_string();
        let owner = "a/t/0";
        let lease: i64 = T0 + 30_000;
        let now: i64 = T0 + 1;
        let attempt: i32 = 1;
        for (name, sql) in [
            ("claim", queries::CLAIM.as_str()),
            ("heartbeat", queries::HEARTBEAT.as_str()),
            ("complete", queries::COMPLETE.without_webhook.as_str()),
        ] {
            client.batch_execute("BEGIN").await.expect("begin");
            let changed = match name {
                "claim" => client
                    .execute(sql, &[&id, &owner, &lease, &now, &"t"])
                    .await
                    .expect("claim"),
                "heartbeat" => client
                    .execute(sql, &[&id, &attempt, &owner, &(lease + 1)])
                    .await
                    .expect("heartbeat"),
                _ => client
                    .execute(
                        sql,
                        &[&id, &attempt, &owner, &Some("{}"), &now, &None::<String>],
                    )
                    .await
                    .expect("complete"),
            };
            assert_eq!(changed, 1, "the {name} changed its job");
            assert_eq!(setting().await, "off", "the {name} commits asynchronously");
            client.batch_execute("COMMIT").await.expect("commit");
            assert_eq!(
                setting().await,
                "on",
                "the session is synchronous again after the {name}"
            );
        }
        let done = store.get(job.id).await.expect("get").expect("the job");
        assert_eq!(done.state, crate::JobState::Succeeded);

        drop(client);
        let _ = driver.await;
        store.close().await;
        db.drop_database().await;
    }
}
