//! The SQLite backend: one file, one writer connection, a few readers.
//!
//! Durability comes first: WAL with `synchronous=FULL`, so a job is on disk when `enqueue`
//! returns even across a power loss, checked by reading the settings back at startup. All
//! writes go through a pool of exactly one connection, which serialises them inside the
//! process without lock contention; transactions that write begin `IMMEDIATE` so another
//! process holding the file makes them wait (`busy_timeout`) instead of failing. Reads use a
//! separate read-only pool and never block the writer.

mod group_commit;
mod migrate;
mod queries;
mod row;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use std::time::{Duration, SystemTime};
use tokio::sync::{mpsc, oneshot};

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};

use crate::error::{Error, Result};
use crate::job::{Job, JobFailure, JobId, NewJob, QueueHead};
use crate::ops::{CancelOutcome, ClaimParams, Enqueued, ListParams};
use row::{attempt_from_row, count, delivery_from_row, job_from_row, queue_head_from_row};

use crate::webhook::{AttemptOutcome, WebhookAttempt, WebhookDelivery};

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Readers beside the single writer; reads are short, so a few suffice.
const READER_CONNECTIONS: u32 = 4;
/// `PRAGMA synchronous` reports FULL as 2.
const SYNCHRONOUS_FULL: i64 = 2;
/// ULIDs carry a 48-bit millisecond timestamp.
const MAX_ULID_MS: i64 = (1 << 48) - 1;

const RESTART_REQUEUED: &str = "job interrupted by a restart";
const RESTART_EXHAUSTED: &str = "job interrupted by a restart too many times";
const LEASE_REQUEUED: &str = "job lease expired";
const LEASE_EXHAUSTED: &str = "job lease expired too many times";

/// A job store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: PathBuf,
    /// Exactly one connection: every write in the process queues here.
    writer: SqlitePool,
    readers: SqlitePool,
    /// Mints ids from the caller's `now`, strictly increasing within this store, so ids sort
    /// in enqueue order even within one millisecond.
    ids: Arc<Mutex<ulid::Generator>>,
    /// Enqueues go through group commit (see `group_commit`).
    enqueues: mpsc::UnboundedSender<group_commit::EnqueueRequest>,
}

/// The connection settings the store depends on, as SQLite reports them on the writer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SqlitePragmas {
    pub journal_mode: String,
    /// 0 OFF, 1 NORMAL, 2 FULL, 3 EXTRA.
    pub synchronous: i64,
    pub foreign_keys: bool,
    pub busy_timeout_ms: i64,
}

impl SqliteStore {
    /// Opens (creating if missing) the database file at `path`, applies pending migrations
    /// and checks that the durability settings are in force.
    pub async fn open(path: &Path) -> Result<SqliteStore> {
        // Switching a new file to WAL and migrating it take locks that SQLite's busy
        // handler does not always wait for; another process opening the same file at
        // the same moment (foreman and a tool) makes one of them retry.
        let started = std::time::Instant::now();
        loop {
            match Self::open_once(path).await {
                Err(error) if is_locked(&error) && started.elapsed() < BUSY_TIMEOUT => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                outcome => return outcome,
            }
        }
    }

    async fn open_once(path: &Path) -> Result<SqliteStore> {
        let base = SqliteConnectOptions::new()
            .filename(path)
            .busy_timeout(BUSY_TIMEOUT)
            .foreign_keys(true)
            .synchronous(SqliteSynchronous::Full);

        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(
                base.clone()
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal),
            )
            .await?;

        let opened = Self::finish_open(path, writer.clone(), base).await;
        if opened.is_err() {
            writer.close().await;
        }
        opened
    }

    async fn finish_open(
        path: &Path,
        writer: SqlitePool,
        base: SqliteConnectOptions,
    ) -> Result<SqliteStore> {
        migrate::run(&writer).await?;
        // Readers open after the writer has switched the file to WAL, which read-only
        // connections cannot do themselves.
        let readers = SqlitePoolOptions::new()
            .max_connections(READER_CONNECTIONS)
            .min_connections(0)
            .connect_with(base.read_only(true))
            .await?;
        let store = SqliteStore {
            path: path.to_owned(),
            readers,
            ids: Arc::new(Mutex::new(ulid::Generator::new())),
            enqueues: group_commit::spawn(writer.clone()),
            writer,
        };
        if let Err(error) = store.check_pragmas().await {
            store.readers.close().await;
            return Err(error);
        }
        tracing::debug!(path = %store.path.display(), "opened sqlite job store");
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version recorded in the file.
    pub async fn schema_version(&self) -> Result<i64> {
        migrate::current_version(&self.readers).await
    }

    /// Reads the durability-relevant settings back from the writer connection.
    pub async fn pragmas(&self) -> Result<SqlitePragmas> {
        let mut conn = self.writer.acquire().await?;
        let journal_mode: String = sqlx::query_scalar("PRAGMA journal_mode")
            .fetch_one(&mut *conn)
            .await?;
        let synchronous: i64 = sqlx::query_scalar("PRAGMA synchronous")
            .fetch_one(&mut *conn)
            .await?;
        let foreign_keys: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
            .fetch_one(&mut *conn)
            .await?;
        let busy_timeout_ms: i64 = sqlx::query_scalar("PRAGMA busy_timeout")
            .fetch_one(&mut *conn)
            .await?;
        Ok(SqlitePragmas {
            journal_mode: journal_mode.to_lowercase(),
            synchronous,
            foreign_keys: foreign_keys == 1,
            busy_timeout_ms,
        })
    }

    async fn check_pragmas(&self) -> Result<()> {
        let pragmas = self.pragmas().await?;
        if pragmas.journal_mode != "wal" {
            return Err(Error::Pragma {
                name: "journal_mode",
                expected: "wal".to_owned(),
                actual: pragmas.journal_mode,
            });
        }
        if pragmas.synchronous != SYNCHRONOUS_FULL {
            return Err(Error::Pragma {
                name: "synchronous",
                expected: format!("{SYNCHRONOUS_FULL} (full)"),
                actual: pragmas.synchronous.to_string(),
            });
        }
        if !pragmas.foreign_keys {
            return Err(Error::Pragma {
                name: "foreign_keys",
                expected: "on".to_owned(),
                actual: "off".to_owned(),
            });
        }
        Ok(())
    }

    /// Closes both pools, waiting for connections in use to be returned.
    pub async fn close(&self) {
        self.readers.close().await;
        self.writer.close().await;
    }

    fn next_id(&self, now: i64) -> JobId {
        // Range checked by the caller.
        let stamp = SystemTime::UNIX_EPOCH + Duration::from_millis(now.unsigned_abs());
        // The generator holds no invariant a panic elsewhere could break.
        let mut ids = self
            .ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let ulid = match ids.generate_from_datetime(stamp) {
            Ok(ulid) => ulid,
            // 2^80 ids in one millisecond: carry into the next one.
            Err(overflow) => overflow.commit_overflow_random(),
        };
        JobId::from(ulid)
    }

    /// See [`Store::enqueue`](crate::Store::enqueue).
    pub async fn enqueue(&self, new_job: NewJob, now: i64) -> Result<Enqueued> {
        if new_job.max_attempts == 0 {
            return Err(Error::InvalidInput(
                "max_attempts must be at least 1".to_owned(),
            ));
        }
        if !(0..=MAX_ULID_MS).contains(&now) {
            return Err(Error::InvalidInput(format!(
                "enqueue time {now} is outside the range of a job id"
            )));
        }
        let id = new_job.id.unwrap_or_else(|| self.next_id(now));
        // Insert and the fallback read of a duplicate key share one write transaction
        // (with whatever other enqueues are waiting), so the existing row a duplicate key
        // points at cannot be pruned in between.
        let (reply, answer) = oneshot::channel();
        self.enqueues
            .send(group_commit::EnqueueRequest {
                new_job,
                id,
                now,
                reply,
            })
            .map_err(|_| Error::GroupCommit("the store is closed".to_owned()))?;
        answer
            .await
            .map_err(|_| Error::GroupCommit("the store is closed".to_owned()))?
    }

    /// See [`Store::queue_heads`](crate::Store::queue_heads).
    pub async fn queue_heads(&self, now: i64) -> Result<Vec<QueueHead>> {
        let rows = sqlx::query(queries::QUEUE_HEADS)
            .bind(now)
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(queue_head_from_row).collect()
    }

    /// See [`Store::queue_depth`](crate::Store::queue_depth).
    pub async fn queue_depth(&self) -> Result<u64> {
        let depth: i64 = sqlx::query_scalar(queries::QUEUE_DEPTH)
            .fetch_one(&self.readers)
            .await?;
        Ok(count(depth))
    }

    /// See [`Store::queue_position`](crate::Store::queue_position).
    pub async fn queue_position(&self, id: JobId) -> Result<Option<u64>> {
        let position: Option<i64> = sqlx::query_scalar(queries::QUEUE_POSITION)
            .bind(id.to_string())
            .fetch_optional(&self.readers)
            .await?;
        Ok(position.map(count))
    }

    /// See [`Store::claim`](crate::Store::claim).
    pub async fn claim(&self, params: ClaimParams) -> Result<Option<Job>> {
        let lease_expires_at = lease_expiry(params.now, params.lease_for_ms)?;
        let query = sqlx::query(queries::CLAIM)
            .bind(params.id.to_string())
            .bind(params.owner)
            .bind(lease_expires_at)
            .bind(params.now);
        let row = self.relaxed(query).await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Runs one write without waiting for its fsync: for claims and heartbeats, whose
    /// loss on power failure is harmless (a lost claim leaves the job queued, which is
    /// what recovery makes of a claimed job anyway). The next durable commit syncs the
    /// write-ahead log, this write included, so order is kept. The write runs in its own
    /// task, so the connection always goes back to `synchronous=FULL`, even when the
    /// caller gives up half way; a connection that cannot be switched back is closed.
    async fn relaxed(
        &self,
        query: sqlx::query::Query<'static, Sqlite, sqlx::sqlite::SqliteArguments>,
    ) -> Result<Option<sqlx::sqlite::SqliteRow>> {
        let writer = self.writer.clone();
        let task = tokio::spawn(async move {
            let mut conn = writer.acquire().await?;
            sqlx::raw_sql("PRAGMA synchronous = NORMAL")
                .execute(&mut *conn)
                .await?;
            let outcome = query.fetch_optional(&mut *conn).await;
            if let Err(error) = sqlx::raw_sql("PRAGMA synchronous = FULL")
                .execute(&mut *conn)
                .await
            {
                let _ = conn.close().await;
                return Err(Error::Database(error));
            }
            Ok(outcome?)
        });
        task.await
            .map_err(|e| Error::GroupCommit(format!("a relaxed write stopped: {e}")))?
    }

    /// See [`Store::heartbeat`](crate::Store::heartbeat).
    pub async fn heartbeat(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        now: i64,
        lease_for_ms: i64,
    ) -> Result<bool> {
        let lease_expires_at = lease_expiry(now, lease_for_ms)?;
        let query = sqlx::query(queries::HEARTBEAT)
            .bind(id.to_string())
            .bind(i64::from(attempt))
            .bind(owner.to_owned())
            .bind(lease_expires_at);
        Ok(self.relaxed(query).await?.is_some())
    }

    /// See [`Store::complete`](crate::Store::complete).
    pub async fn complete(
        &self,
        id: JobId,
        attempt: u32,
        result: String,
        now: i64,
    ) -> Result<Option<Job>> {
        self.succeed(id, attempt, Some(result), None, now).await
    }

    /// See [`Store::complete_with_artifacts`](crate::Store::complete_with_artifacts).
    pub async fn complete_with_artifacts(
        &self,
        id: JobId,
        attempt: u32,
        artifacts: String,
        now: i64,
    ) -> Result<Option<Job>> {
        self.succeed(id, attempt, None, Some(artifacts), now).await
    }

    async fn succeed(
        &self,
        id: JobId,
        attempt: u32,
        result: Option<String>,
        artifacts: Option<String>,
        now: i64,
    ) -> Result<Option<Job>> {
        let row = sqlx::query(queries::COMPLETE)
            .bind(id.to_string())
            .bind(i64::from(attempt))
            .bind(result)
            .bind(now)
            .bind(artifacts)
            .fetch_optional(&self.writer)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// See [`Store::fail`](crate::Store::fail).
    pub async fn fail(
        &self,
        id: JobId,
        attempt: u32,
        failure: JobFailure,
        now: i64,
    ) -> Result<Option<Job>> {
        let row = sqlx::query(queries::FAIL)
            .bind(id.to_string())
            .bind(i64::from(attempt))
            .bind(i64::from(failure.status))
            .bind(failure.message)
            .bind(now)
            .fetch_optional(&self.writer)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// See [`Store::retry_or_fail`](crate::Store::retry_or_fail).
    pub async fn retry_or_fail(
        &self,
        id: JobId,
        attempt: u32,
        failure: JobFailure,
        run_after: i64,
        now: i64,
    ) -> Result<Option<Job>> {
        let row = sqlx::query(queries::RETRY_OR_FAIL)
            .bind(id.to_string())
            .bind(i64::from(attempt))
            .bind(i64::from(failure.status))
            .bind(failure.message)
            .bind(run_after)
            .bind(now)
            .fetch_optional(&self.writer)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// See [`Store::requeue`](crate::Store::requeue).
    pub async fn requeue(&self, id: JobId, attempt: u32, now: i64) -> Result<Option<Job>> {
        let row = sqlx::query(queries::REQUEUE)
            .bind(id.to_string())
            .bind(i64::from(attempt))
            .bind(now)
            .fetch_optional(&self.writer)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// See [`Store::cancel`](crate::Store::cancel).
    pub async fn cancel(&self, id: JobId, now: i64) -> Result<CancelOutcome> {
        let id_text = id.to_string();
        // One write transaction: nothing can claim or finish the job between the steps.
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let outcome = if let Some(row) = sqlx::query(queries::CANCEL_QUEUED)
            .bind(&id_text)
            .bind(now)
            .fetch_optional(&mut *tx)
            .await?
        {
            CancelOutcome::Cancelled(job_from_row(&row)?)
        } else if let Some(row) = sqlx::query(queries::CANCEL_RUNNING)
            .bind(&id_text)
            .fetch_optional(&mut *tx)
            .await?
        {
            CancelOutcome::Requested(job_from_row(&row)?)
        } else if let Some(row) = sqlx::query(queries::SELECT_BY_ID)
            .bind(&id_text)
            .fetch_optional(&mut *tx)
            .await?
        {
            let job = job_from_row(&row)?;
            debug_assert!(job.state.is_terminal(), "neither queued nor running");
            CancelOutcome::AlreadyFinished(job)
        } else {
            CancelOutcome::NotFound
        };
        tx.commit().await?;
        Ok(outcome)
    }

    /// See [`Store::finish_cancelled`](crate::Store::finish_cancelled).
    pub async fn finish_cancelled(&self, id: JobId, attempt: u32, now: i64) -> Result<Option<Job>> {
        let row = sqlx::query(queries::FINISH_CANCELLED)
            .bind(id.to_string())
            .bind(i64::from(attempt))
            .bind(now)
            .fetch_optional(&self.writer)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// See [`Store::recover_running`](crate::Store::recover_running).
    pub async fn recover_running(&self, now: i64) -> Result<u64> {
        let done = sqlx::query(queries::RECOVER_RUNNING)
            .bind(now)
            .bind(RESTART_EXHAUSTED)
            .bind(RESTART_REQUEUED)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    /// See [`Store::rescue_expired`](crate::Store::rescue_expired).
    pub async fn rescue_expired(&self, now: i64) -> Result<u64> {
        let done = sqlx::query(queries::RESCUE_EXPIRED)
            .bind(now)
            .bind(LEASE_EXHAUSTED)
            .bind(LEASE_REQUEUED)
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    /// See [`Store::prune_finished`](crate::Store::prune_finished).
    pub async fn prune_finished(&self, before: i64, limit: u32) -> Result<u64> {
        let done = sqlx::query(queries::PRUNE_FINISHED)
            .bind(before)
            .bind(i64::from(limit))
            .execute(&self.writer)
            .await?;
        Ok(done.rows_affected())
    }

    /// See [`Store::get`](crate::Store::get).
    pub async fn get(&self, id: JobId) -> Result<Option<Job>> {
        let row = sqlx::query(queries::SELECT_BY_ID)
            .bind(id.to_string())
            .fetch_optional(&self.readers)
            .await?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// See [`Store::list`](crate::Store::list).
    pub async fn list(&self, params: ListParams) -> Result<Vec<Job>> {
        // Only fixed SQL fragments are pushed; every value is a bind parameter.
        let mut query = QueryBuilder::<Sqlite>::new("SELECT * FROM jobs WHERE 1 = 1");
        if let Some(state) = params.state {
            query.push(" AND state = ").push_bind(state.as_str());
        }
        if let Some(model) = params.model {
            query.push(" AND model = ").push_bind(model);
        }
        if let Some(created_before) = params.created_before {
            query.push(" AND created_at < ").push_bind(created_before);
        }
        if let Some(created_after) = params.created_after {
            query.push(" AND created_at > ").push_bind(created_after);
        }
        if let Some(cursor) = params.cursor {
            query.push(" AND id < ").push_bind(cursor.to_string());
        }
        query
            .push(" ORDER BY id DESC LIMIT ")
            .push_bind(i64::from(params.limit));
        let rows = query.build().fetch_all(&self.readers).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// See [`Store::due_webhooks`](crate::Store::due_webhooks).
    pub async fn due_webhooks(&self, now: i64, limit: u32) -> Result<Vec<WebhookDelivery>> {
        let rows = sqlx::query(queries::DUE_WEBHOOKS)
            .bind(now)
            .bind(i64::from(limit))
            .fetch_all(&self.readers)
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// See [`Store::record_webhook_attempt`](crate::Store::record_webhook_attempt).
    pub async fn record_webhook_attempt(
        &self,
        delivery_id: &str,
        attempt: &WebhookAttempt,
        outcome: AttemptOutcome,
    ) -> Result<bool> {
        let (state, next_attempt_at, finished_at) = match outcome {
            AttemptOutcome::Delivered => ("delivered", attempt.at, Some(attempt.at)),
            AttemptOutcome::Failed => ("failed", attempt.at, Some(attempt.at)),
            AttemptOutcome::RetryAt(at) => ("pending", at, None),
        };
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let advanced = sqlx::query(queries::ADVANCE_WEBHOOK)
            .bind(delivery_id)
            .bind(i64::from(attempt.attempt))
            .bind(state)
            .bind(next_attempt_at)
            .bind(finished_at)
            .execute(&mut *tx)
            .await?;
        if advanced.rows_affected() != 1 {
            return Ok(false);
        }
        sqlx::query(queries::INSERT_WEBHOOK_ATTEMPT)
            .bind(delivery_id)
            .bind(i64::from(attempt.attempt))
            .bind(attempt.at)
            .bind(attempt.status.map(i64::from))
            .bind(attempt.latency_ms)
            .bind(&attempt.error)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(true)
    }

    /// See [`Store::webhooks_for_job`](crate::Store::webhooks_for_job).
    pub async fn webhooks_for_job(&self, job_id: JobId) -> Result<Vec<WebhookDelivery>> {
        let rows = sqlx::query(queries::WEBHOOKS_FOR_JOB)
            .bind(job_id.to_string())
            .fetch_all(&self.readers)
            .await?;
        let mut deliveries = Vec::with_capacity(rows.len());
        for row in &rows {
            let mut delivery = delivery_from_row(row)?;
            let attempts = sqlx::query(queries::WEBHOOK_ATTEMPTS)
                .bind(&delivery.id)
                .fetch_all(&self.readers)
                .await?;
            delivery.log = attempts
                .iter()
                .map(attempt_from_row)
                .collect::<Result<_>>()?;
            deliveries.push(delivery);
        }
        Ok(deliveries)
    }
}

/// `now + lease_for_ms`, refusing leases that are already over or overflow.
/// SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock.
fn is_locked(error: &Error) -> bool {
    match error {
        Error::Database(sqlx::Error::Database(db)) => {
            matches!(db.code().as_deref(), Some("5" | "6"))
                || db.message().contains("database is locked")
        }
        _ => false,
    }
}

fn lease_expiry(now: i64, lease_for_ms: i64) -> Result<i64> {
    if lease_for_ms <= 0 {
        return Err(Error::InvalidInput(format!(
            "lease length must be positive, got {lease_for_ms} ms"
        )));
    }
    now.checked_add(lease_for_ms)
        .ok_or_else(|| Error::InvalidInput("lease expiry overflows".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lease_expiry_rejects_empty_and_overflowing_leases() {
        assert_eq!(lease_expiry(1_000, 30_000).ok(), Some(31_000));
        assert!(matches!(
            lease_expiry(1_000, 0),
            Err(Error::InvalidInput(_))
        ));
        assert!(matches!(
            lease_expiry(i64::MAX, 1),
            Err(Error::InvalidInput(_))
        ));
    }

    #[test]
    fn every_state_name_is_allowed_by_the_schema() {
        let schema = include_str!("migrations/0001_jobs.sql");
        for state in crate::job::JobState::ALL {
            assert!(
                schema.contains(&format!("'{}'", state.as_str())),
                "schema lacks state {state}"
            );
        }
        for kind in crate::job::JobKind::ALL {
            assert!(
                schema.contains(&format!("'{}'", kind.as_str())),
                "schema lacks kind {kind}"
            );
        }
    }

    /// The queue statements must reach rows through an index, never by scanning the table:
    /// the queue stays small while the table grows with finished jobs.
    #[tokio::test]
    async fn queue_statements_use_indexes() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(&dir.path().join("plans.db"))
            .await
            .expect("open");
        let statements = [
            (queries::QUEUE_HEADS, "jobs_queued_by_model"),
            (queries::QUEUE_DEPTH, "jobs_state_id"),
            (queries::QUEUE_POSITION, "jobs_queued_order"),
            (queries::RESCUE_EXPIRED, "jobs_state_id"),
            (queries::RECOVER_RUNNING, "jobs_state_id"),
            (queries::PRUNE_FINISHED, "jobs_finished_at"),
            (queries::SELECT_BY_IDEMPOTENCY_KEY, "jobs_idempotency_key"),
            (queries::CLAIM, "sqlite_autoindex_jobs_1"),
        ];
        for (statement, index) in statements {
            let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
                "EXPLAIN QUERY PLAN {statement}"
            )))
            .fetch_all(&store.readers)
            .await
            .expect("explain");
            let details: Vec<String> = rows
                .iter()
                .map(|row| sqlx::Row::try_get::<String, _>(row, "detail").expect("detail"))
                .collect();
            assert!(
                details.iter().any(|detail| detail.contains(index)),
                "{statement} does not use {index}: {details:?}"
            );
            assert!(
                !details
                    .iter()
                    .any(|detail| detail == "SCAN jobs" || detail.starts_with("SCAN jobs AS")),
                "{statement} scans the table: {details:?}"
            );
        }
        store.close().await;
    }
}
