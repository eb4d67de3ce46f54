//! The PostgreSQL backend: one database shared by every foreman instance that points at it.
//!
//! Why it looks different from the SQLite backend: SQLite has one process writing through
//! one thread, so it batches commits and keeps the queue order in memory. Here several
//! instances write the same rows, so nothing is cached: every question is answered by SQL
//! and every change is a statement (or one transaction) that PostgreSQL serialises:
//! - a state change of a running job is one UPDATE guarded by the state, the attempt and
//!   the lease owner (fencing), so a stale worker's write changes nothing;
//! - a claim locks its row with `FOR UPDATE SKIP LOCKED`, so two claimers never wait on
//!   each other and never both win;
//! - bounded enqueues (`enqueue_within`) take a transaction-level advisory lock, so the
//!   count and the insert are one step across every instance (plain enqueues are
//!   committed in groups that take it too, `group_commit`);
//! - idempotency keys are a unique index, never a read-then-insert;
//! - a webhook delivery is inserted by this code (the body built in Rust) in the
//!   transaction whose UPDATE finished the job, and deliveries are claimed with a lease
//!   (their due time moved past the lease) so two instances never send one at once;
//! - migrations run at open in one transaction holding an advisory lock, so instances
//!   starting together migrate once.
//!
//! Connections come from a `deadpool-postgres` pool over `tokio-postgres` (plain TCP, no
//! TLS); see ARCHITECTURE.md for why this client.

mod async_commit;
mod batch;
mod group_commit;
mod keys;
mod migrate;
mod outbox;
mod row;
mod signals;

pub use signals::{APPLICATION_NAME, PgSignals, Signal};

use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use deadpool_postgres::GenericClient;
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::NoTls;
use tokio_postgres::types::ToSql;

use crate::commit_times::{CommitTimes, CommitTimesSnapshot};
use crate::error::{Error, Result};
use crate::job::{CallerHead, Job, JobFailure, JobId, JobRef, NewJob, QueueGroup, QueueHead};
use crate::lease::{Lease, LeaseHolder};
use crate::ops::{CancelOutcome, ClaimParams, Enqueued, ListParams};
use crate::output::{OutputBatch, OutputCursor};
use crate::queue_index::QueuedJob;
use crate::sqlite::{
    LEASE_EXHAUSTED, LEASE_REQUEUED, RESTART_EXHAUSTED, RESTART_REQUEUED, SYNC_ABANDONED,
    SYNC_ORPHANED, lease_expiry,
};
use crate::webhook::{AttemptOutcome, WebhookAttempt, WebhookDelivery};
use row::{JOB_COLUMNS, attempt_from_row, delivery_from_row, job_from_row};

/// Connections per store: the runners, the API and the janitor of one instance.
const POOL_SIZE: usize = 16;
/// How long a call waits for a connection from the pool, and a new connection for the
/// server, before it fails (the database is down or every connection is busy).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// The advisory lock key of bounded enqueues ("foreman" + 1 as bytes).
const ADMISSION_LOCK: i64 = 0x666f_7265_6d61_6e01;

/// A job store in one PostgreSQL database.
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    /// Where the dedicated signal connections go (see [`PgStore::listen`]).
    config: Arc<tokio_postgres::Config>,
    /// `postgres://user@host:port/db`, without the password, for people.
    display: String,
    ids: Arc<Mutex<ulid::Generator>>,
    commit_times: Arc<CommitTimes>,
    /// Recorded as `accepted_by` on every job this handle enqueues.
    instance: Option<Arc<str>>,
    /// The jobs finished by the bulk changes (recovery, rescue, abandon).
    pub(crate) finished_by_store: Arc<crate::FinishedTally>,
    /// The writer that commits plain enqueues in groups; `None` in the writer's own
    /// handle.
    group_commit: Option<group_commit::GroupCommit>,
}

impl fmt::Debug for PgStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PgStore")
            .field("database", &self.display)
            .finish_non_exhaustive()
    }
}

/// The parts of a PostgreSQL URL foreman reads, checked before any connection.
pub(crate) fn parse_url(url: &str) -> Result<tokio_postgres::Config> {
    tokio_postgres::Config::from_str(url).map_err(|error| Error::InvalidUrl {
        // tokio-postgres' messages name the offending part, never the password.
        reason: format!("not a valid PostgreSQL url ({error})"),
    })
}

impl PgStore {
    /// Connects to the database at `url` (`postgres://` or `postgresql://`), applies the
    /// migrations this build knows (once, under an advisory lock) and refuses a database
    /// of a newer schema ([`Error::SchemaTooNew`]).
    pub async fn open(url: &str) -> Result<PgStore> {
        let mut config = parse_url(url)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.application_name("foreman");
        let display = describe(&config);
        let manager = Manager::from_config(
            config.clone(),
            NoTls,
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(POOL_SIZE)
            .wait_timeout(Some(CONNECT_TIMEOUT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .runtime(deadpool_postgres::Runtime::Tokio1)
            .build()
            .map_err(|error| Error::Connect(error.to_string()))?;
        let store = PgStore {
            pool,
            config: Arc::new(config),
            display,
            ids: Arc::new(Mutex::new(ulid::Generator::new())),
            commit_times: Arc::new(CommitTimes::default()),
            instance: None,
            finished_by_store: Arc::default(),
            group_commit: None,
        };
        let mut client = store.client().await?;
        migrate::run(&mut client).await?;
        drop(client);
        Ok(store.with_group_commit())
    }

    /// This handle with a group-commit writer of its own, which writes through a copy of
    /// the handle as it is now (the instance recorded as `accepted_by` included).
    fn with_group_commit(mut self) -> PgStore {
        self.group_commit = None;
        self.group_commit = Some(group_commit::GroupCommit::start(self.clone()));
        self
    }

    /// This handle, recording `instance` as `accepted_by` on the jobs it enqueues.
    pub fn with_instance(mut self, instance: &str) -> PgStore {
        self.instance = Some(Arc::from(instance));
        self = self.with_group_commit();
        self
    }

    /// Opens a listening session of its own (not from the pool) for the signals every
    /// instance's changes send; see [`PgSignals`].
    pub async fn listen(&self) -> Result<PgSignals> {
        if self.pool.is_closed() {
            return Err(Error::Closed);
        }
        PgSignals::connect(&self.config).await
    }

    /// Where the data is, for people: the URL without its password.
    pub fn location(&self) -> &str {
        &self.display
    }

    /// The newest schema version this build knows.
    pub fn latest_schema_version() -> i64 {
        migrate::latest_version()
    }

    async fn client(&self) -> Result<deadpool_postgres::Object> {
        if self.pool.is_closed() {
            return Err(Error::Closed);
        }
        self.pool.get().await.map_err(|error| match error {
            deadpool_postgres::PoolError::Closed => Error::Closed,
            deadpool_postgres::PoolError::Backend(error) => Error::Postgres(error),
            other => Error::Connect(other.to_string()),
        })
    }

    /// Runs `body` in a transaction and times its commit.
    async fn transaction<T>(
        &self,
        body: impl AsyncFnOnce(&deadpool_postgres::Transaction<'_>) -> Result<T>,
    ) -> Result<T> {
        let mut client = self.client().await?;
        let transaction = client.transaction().await?;
        let value = body(&transaction).await?;
        let started = Instant::now();
        transaction.commit().await?;
        self.commit_times.record(started.elapsed());
        Ok(value)
    }

    /// Runs `body`, one statement that commits by itself (no BEGIN and COMMIT round
    /// trips), and times it as the commit it includes.
    async fn single<T>(
        &self,
        body: impl AsyncFnOnce(&deadpool_postgres::Object) -> Result<T>,
    ) -> Result<T> {
        let client = self.client().await?;
        let started = Instant::now();
        let value = body(&client).await?;
        self.commit_times.record(started.elapsed());
        Ok(value)
    }

    /// The schema version recorded in the database.
    pub async fn schema_version(&self) -> Result<i64> {
        let client = self.client().await?;
        migrate::current_version(&client).await
    }

    /// Commits a write that changes nothing a job reads (readiness).
    pub async fn probe_write(&self) -> Result<()> {
        self.transaction(async |tx| {
            tx.execute(
                "UPDATE foreman_schema_migrations SET applied_at = applied_at
                 WHERE version = (SELECT max(version) FROM foreman_schema_migrations)",
                &[],
            )
            .await?;
            Ok(())
        })
        .await
    }

    /// A backup of a shared database is PostgreSQL's own business: the error names the
    /// `pg_dump` command to run instead.
    pub fn backup_unsupported(&self) -> Error {
        backup_unsupported(&self.display)
    }

    /// Closes the pool; calls made afterwards fail with [`Error::Closed`].
    pub async fn close(&self) {
        self.pool.close();
    }

    pub fn commit_times(&self) -> CommitTimesSnapshot {
        self.commit_times.snapshot()
    }

    fn next_id(&self, now: i64) -> JobId {
        let stamp = SystemTime::UNIX_EPOCH + Duration::from_millis(now.unsigned_abs());
        let mut ids = self
            .ids
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let ulid = match ids.generate_from_datetime(stamp) {
            Ok(ulid) => ulid,
            Err(overflow) => overflow.commit_overflow_random(),
        };
        JobId::from(ulid)
    }

    /// One guarded change of one job, in a transaction that also writes the webhook
    /// delivery if the change finished the job.
    ///
    /// Most jobs have no webhook: the change is first tried as one self-committing
    /// statement on jobs without one (a job's webhook URL never changes), and only when
    /// that changes nothing, in a transaction that writes the delivery too.
    async fn change_job(
        &self,
        change: &queries::Change,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Job>> {
        let plain = self
            .single(async |client| first_job(client, &change.without_webhook, params).await)
            .await?;
        if plain.is_some() {
            return Ok(plain);
        }
        self.transaction(async |tx| {
            let job = first_job(tx, &change.any, params).await?;
            if let Some(job) = &job {
                outbox::record_if_finished(tx, job).await?;
            }
            Ok(job)
        })
        .await
    }

    /// A change of many jobs (recovery, rescue), with the deliveries of those it finished.
    async fn change_jobs(&self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64> {
        let jobs = self
            .transaction(async |tx| {
                let rows = tx.query(sql, params).await?;
                let mut jobs = Vec::with_capacity(rows.len());
                for row in &rows {
                    let job = job_from_row(row)?;
                    outbox::record_if_finished(tx, &job).await?;
                    jobs.push(job);
                }
                Ok(jobs)
            })
            .await?;
        self.finished_by_store.record(&jobs);
        Ok(jobs.len() as u64)
    }

    /// See [`Store::enqueue`](crate::Store::enqueue) and
    /// [`Store::enqueue_within`](crate::Store::enqueue_within). A new job is announced
    /// (`new:ID`) once it has committed. An enqueue without an idempotency key goes to
    /// the group commit (see [`group_commit`]), which announces each group once; the
    /// others, and any the group leaves alone, are made here one by one.
    pub async fn enqueue(
        &self,
        new_job: NewJob,
        now: i64,
        max_queued: Option<u64>,
    ) -> Result<Enqueued> {
        crate::job::check_enqueue(&new_job, now)?;
        let new_job = match (&self.group_commit, &new_job.idempotency_key) {
            (Some(group), None) => {
                let id = new_job.id.unwrap_or_else(|| self.next_id(now));
                match group.enqueue(new_job, id, now, max_queued).await? {
                    group_commit::Answer::Inserted(enqueued) => return Ok(*enqueued),
                    group_commit::Answer::Full { limit } => {
                        return Err(Error::QueueFull { limit });
                    }
                    group_commit::Answer::Alone(new_job) => NewJob {
                        id: Some(id),
                        ..*new_job
                    },
                }
            }
            _ => new_job,
        };
        let enqueued = self.enqueue_committed(new_job, now, max_queued).await?;
        if enqueued.created {
            self.announce_new(enqueued.job.id).await;
        }
        Ok(enqueued)
    }

    /// Tells every instance's listener that `id` is queued, after the commit that queued
    /// it: `new:ID` on `foreman_jobs`, in a statement of its own that commits
    /// asynchronously. Inside the enqueue's transaction the NOTIFY would hold
    /// PostgreSQL's cluster-wide notify lock through that commit's WAL flush, so
    /// concurrent enqueues would be flushed one at a time; here it holds it for no flush.
    /// A failure is left alone: the job is committed, and runners look at the queue every
    /// 250 ms when idle, announced or not.
    pub(super) async fn announce_new(&self, id: JobId) {
        let payload = format!("new:{id}");
        let _ = self
            .single(async |client| {
                let statement = client.prepare_cached(queries::ANNOUNCE_NEW).await?;
                client.execute(&statement, &[&payload]).await?;
                Ok(())
            })
            .await;
    }

    async fn enqueue_committed(
        &self,
        new_job: NewJob,
        now: i64,
        max_queued: Option<u64>,
    ) -> Result<Enqueued> {
        let id = new_job.id.unwrap_or_else(|| self.next_id(now));
        let accepted_by = self.instance.as_deref();
        match (max_queued, &new_job.idempotency_key) {
            (Some(limit), _) => self.enqueue_exclusive(&new_job, id, now, limit).await,
            // One INSERT (the group commit left it alone): no transaction of its own.
            (None, None) => {
                self.single(async |client| insert_job(client, &new_job, id, now, accepted_by).await)
                    .await
            }
            (None, Some(_)) => {
                self.transaction(async |tx| insert_job(tx, &new_job, id, now, accepted_by).await)
                    .await
            }
        }
    }

    /// A bounded enqueue under the exclusive admission lock: the key's job if it has
    /// one, otherwise an exact count of the queued jobs, then the insert.
    async fn enqueue_exclusive(
        &self,
        new_job: &NewJob,
        id: JobId,
        now: i64,
        limit: u64,
    ) -> Result<Enqueued> {
        self.transaction(async |tx| {
            // Every bounded enqueue of every instance (and every group commit with one)
            // holds this lock from here to its commit, and under
            // READ COMMITTED the count below sees every job a previous holder inserted:
            // the count and the insert are one step.
            let lock = tx.prepare_cached(queries::ADMISSION_LOCK).await?;
            tx.execute(&lock, &[&ADMISSION_LOCK]).await?;
            if let Some(job) = existing_for_key(tx, new_job).await? {
                return Ok(Enqueued {
                    job,
                    created: false,
                    position: None,
                });
            }
            let count = tx.prepare_cached(queries::COUNT_QUEUED).await?;
            let queued: i64 = tx.query_one(&count, &[]).await?.get(0);
            if u64::try_from(queued).unwrap_or(0) >= limit {
                return Err(Error::QueueFull { limit });
            }
            insert_job(tx, new_job, id, now, self.instance.as_deref()).await
        })
        .await
    }

    /// See [`Store::queue_heads`](crate::Store::queue_heads): one pass over the queue-heads
    /// index, since other instances change the rows. The query gives the head of every
    /// caller's jobs within each load key; a key's own head is the best of its callers'.
    pub async fn queue_heads(&self, now: i64) -> Result<Vec<QueueHead>> {
        let client = self.client().await?;
        let statement = client.prepare_cached(queries::QUEUE_HEADS).await?;
        let rows = client.query(&statement, &[&now]).await?;
        heads_from_rows(&rows)
    }

    /// See [`Store::claim_and_read_heads`](crate::Store::claim_and_read_heads): the claim
    /// and the heads read are sent together on one connection, so the server runs the
    /// read after the claim (which commits by itself) in the same round trip.
    pub async fn claim_and_read_heads(
        &self,
        params: ClaimParams,
    ) -> Result<(Option<Job>, Option<Vec<QueueHead>>)> {
        let lease_expires_at = lease_expiry(params.now, params.lease_for_ms)?;
        let id = params.id.to_string();
        let client = self.client().await?;
        let (claim, heads) = tokio::try_join!(
            client.prepare_cached(&queries::CLAIM),
            client.prepare_cached(queries::QUEUE_HEADS),
        )?;
        let claim_parameters: [&(dyn ToSql + Sync); 5] = [
            &id,
            &params.owner,
            &lease_expires_at,
            &params.now,
            &params.target,
        ];
        let heads_parameters: [&(dyn ToSql + Sync); 1] = [&params.now];
        let started = Instant::now();
        // Polled in this order, so sent in this order.
        let (claimed, rows) = tokio::join!(
            client.query_opt(&claim, &claim_parameters),
            client.query(&heads, &heads_parameters),
        );
        self.commit_times.record(started.elapsed());
        let claimed = claimed?.map(|row| job_from_row(&row)).transpose()?;
        // A read that failed after a claim that held is only a missed shortcut.
        let heads = rows.ok().map(|rows| heads_from_rows(&rows)).transpose()?;
        Ok((claimed, heads))
    }

    /// See [`Store::queued_jobs`](crate::Store::queued_jobs).
    pub async fn queued_jobs(&self, limit: usize) -> Result<Vec<QueuedJob>> {
        let client = self.client().await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let rows = client
            .query(
                "SELECT id, model, load_options, priority, created_at, run_after,
                        caller, caller_weight
                 FROM jobs WHERE state = 'queued' LIMIT $1",
                &[&limit],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.get("id");
                Ok(QueuedJob {
                    id: row::parse_id(&id)?,
                    model: row.get("model"),
                    load_options: row.get("load_options"),
                    priority: row.get("priority"),
                    created_at: row.get("created_at"),
                    run_after: row.get("run_after"),
                    caller: row.get("caller"),
                    caller_weight: u32::try_from(row.get::<_, i32>("caller_weight")).unwrap_or(1),
                })
            })
            .collect()
    }

    /// See [`Store::queue_depth`](crate::Store::queue_depth).
    pub async fn queue_depth(&self) -> Result<u64> {
        let client = self.client().await?;
        let statement = client.prepare_cached(queries::COUNT_QUEUED).await?;
        let depth: i64 = client.query_one(&statement, &[]).await?.get(0);
        Ok(row::count(depth))
    }

    /// See [`Store::queue_summary`](crate::Store::queue_summary).
    pub async fn queue_summary(&self) -> Result<Vec<QueueGroup>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT model, priority, count(*), min(created_at)
                 FROM jobs WHERE state = 'queued'
                 GROUP BY model, priority
                 ORDER BY model, priority DESC",
                &[],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| QueueGroup {
                model: row.get(0),
                priority: row.get(1),
                count: row::count(row.get(2)),
                oldest_created_at: row.get(3),
            })
            .collect())
    }

    /// See [`Store::queue_position`](crate::Store::queue_position).
    pub async fn queue_position(&self, id: JobId) -> Result<Option<u64>> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT (SELECT count(*) FROM jobs AS other
                         WHERE other.state = 'queued'
                           AND (other.priority > target.priority
                                OR (other.priority = target.priority
                                    AND (other.created_at, other.id)
                                        < (target.created_at, target.id))))
                 FROM jobs AS target
                 WHERE target.id = $1 AND target.state = 'queued'",
                &[&id.to_string()],
            )
            .await?;
        Ok(row.map(|row| row::count(row.get(0))))
    }

    /// See [`Store::claim`](crate::Store::claim).
    pub async fn claim(&self, params: ClaimParams) -> Result<Option<Job>> {
        let lease_expires_at = lease_expiry(params.now, params.lease_for_ms)?;
        let id = params.id.to_string();
        // One statement: the row lock of SKIP LOCKED is held until it commits.
        self.single(async |client| {
            first_job(
                client,
                &queries::CLAIM,
                &[
                    &id,
                    &params.owner,
                    &lease_expires_at,
                    &params.now,
                    &params.target,
                ],
            )
            .await
        })
        .await
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
        let changed = self
            .single(async |client| {
                let statement = client.prepare_cached(&queries::HEARTBEAT).await?;
                Ok(client
                    .execute(
                        &statement,
                        &[
                            &id.to_string(),
                            &attempt_i32(attempt)?,
                            &owner,
                            &lease_expires_at,
                        ],
                    )
                    .await?)
            })
            .await?;
        Ok(changed == 1)
    }

    /// See [`Store::complete`](crate::Store::complete).
    pub async fn complete(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        result: String,
        now: i64,
    ) -> Result<Option<Job>> {
        self.succeed(id, attempt, owner, Some(result), None, now)
            .await
    }

    /// See [`Store::complete_with_artifacts`](crate::Store::complete_with_artifacts).
    pub async fn complete_with_artifacts(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        artifacts: String,
        now: i64,
    ) -> Result<Option<Job>> {
        self.succeed(id, attempt, owner, None, Some(artifacts), now)
            .await
    }

    async fn succeed(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        result: Option<String>,
        artifacts: Option<String>,
        now: i64,
    ) -> Result<Option<Job>> {
        self.change_job(
            &queries::COMPLETE,
            &[
                &id.to_string(),
                &attempt_i32(attempt)?,
                &owner,
                &result,
                &now,
                &artifacts,
            ],
        )
        .await
    }

    /// See [`Store::fail`](crate::Store::fail).
    pub async fn fail(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        failure: JobFailure,
        now: i64,
    ) -> Result<Option<Job>> {
        self.change_job(
            &queries::FAIL,
            &[
                &id.to_string(),
                &attempt_i32(attempt)?,
                &owner,
                &i32::from(failure.status),
                &failure.message,
                &now,
            ],
        )
        .await
    }

    /// See [`Store::retry_or_fail`](crate::Store::retry_or_fail).
    pub async fn retry_or_fail(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        failure: JobFailure,
        run_after: i64,
        now: i64,
    ) -> Result<Option<Job>> {
        self.change_job(
            &queries::RETRY_OR_FAIL,
            &[
                &id.to_string(),
                &attempt_i32(attempt)?,
                &owner,
                &i32::from(failure.status),
                &failure.message,
                &run_after,
                &now,
            ],
        )
        .await
    }

    /// See [`Store::requeue`](crate::Store::requeue).
    pub async fn requeue(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        now: i64,
    ) -> Result<Option<Job>> {
        let attempt = attempt_i32(attempt)?;
        let requeued = self
            .change_job(
                &queries::REQUEUE,
                &[&id.to_string(), &attempt, &owner, &now],
            )
            .await?;
        if requeued
            .as_ref()
            .is_some_and(|job| job.state == crate::JobState::Queued)
        {
            // The attempt number is given back, so the next run writes its output under
            // it again: the cut run's batches go (its readers elsewhere are told it was
            // cut off), and a reader who joins later sees the next run's only.
            self.single(async |client| {
                let statement = client.prepare_cached(&queries::DELETE_RERUN_OUTPUT).await?;
                Ok(client
                    .execute(&statement, &[&id.to_string(), &attempt])
                    .await?)
            })
            .await?;
        }
        Ok(requeued)
    }

    /// See [`Store::cancel`](crate::Store::cancel).
    pub async fn cancel(&self, id: JobId, now: i64, reason: JobFailure) -> Result<CancelOutcome> {
        let id = id.to_string();
        let status = i32::from(reason.status);
        self.transaction(async |tx| {
            // Each statement sees the rows committed before it: a job another instance
            // moves between queued and running in between is met by the next round.
            for _ in 0..8 {
                if let Some(job) = first_job(
                    tx,
                    &queries::CANCEL_QUEUED,
                    &[&id, &now, &status, &reason.message],
                )
                .await?
                {
                    outbox::record_if_finished(tx, &job).await?;
                    return Ok(CancelOutcome::Cancelled(job));
                }
                if let Some(job) = first_job(
                    tx,
                    &queries::CANCEL_RUNNING,
                    &[&id, &status, &reason.message],
                )
                .await?
                {
                    return Ok(CancelOutcome::Requested(job));
                }
                match first_job(tx, &queries::SELECT_BY_ID, &[&id]).await? {
                    Some(job) if job.state.is_terminal() => {
                        return Ok(CancelOutcome::AlreadyFinished(job));
                    }
                    Some(_) => continue,
                    None => return Ok(CancelOutcome::NotFound),
                }
            }
            Err(Error::Write(format!(
                "job {id} kept changing state while it was being cancelled"
            )))
        })
        .await
    }

    /// See [`Store::finish_cancelled`](crate::Store::finish_cancelled).
    pub async fn finish_cancelled(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        now: i64,
    ) -> Result<Option<Job>> {
        self.change_job(
            &queries::FINISH_CANCELLED,
            &[&id.to_string(), &attempt_i32(attempt)?, &owner, &now],
        )
        .await
    }

    /// See [`Store::recover_running_owned`](crate::Store::recover_running_owned):
    /// `owner_prefix` `None` takes back every running job (one instance only).
    pub async fn recover_running(&self, owner_prefix: Option<&str>, now: i64) -> Result<u64> {
        let max = i32::try_from(crate::MAX_INTERRUPTIONS).unwrap_or(i32::MAX);
        self.change_jobs(
            &queries::RECOVER_RUNNING,
            &[
                &now,
                &RESTART_EXHAUSTED,
                &RESTART_REQUEUED,
                &max,
                &owner_prefix,
            ],
        )
        .await
    }

    /// See [`Store::abandon_sync_jobs`](crate::Store::abandon_sync_jobs).
    pub async fn abandon_sync_jobs(&self, now: i64) -> Result<u64> {
        self.change_jobs(&queries::ABANDON_SYNC, &[&now, &SYNC_ABANDONED])
            .await
    }

    /// See [`Store::abandon_sync_jobs_of`](crate::Store::abandon_sync_jobs_of).
    pub async fn abandon_sync_jobs_of(&self, instance: &str, now: i64) -> Result<u64> {
        self.change_jobs(
            &queries::ABANDON_SYNC_OF,
            &[&now, &SYNC_ABANDONED, &instance],
        )
        .await
    }

    /// See [`Store::abandon_orphaned_sync_jobs`](crate::Store::abandon_orphaned_sync_jobs).
    pub async fn abandon_orphaned_sync_jobs(&self, now: i64, accepted_before: i64) -> Result<u64> {
        self.change_jobs(
            &queries::ABANDON_ORPHANED_SYNC,
            &[&now, &SYNC_ORPHANED, &accepted_before],
        )
        .await
    }

    /// See [`Store::occupants`](crate::Store::occupants).
    pub async fn occupants(&self, target: &str) -> Result<Vec<crate::Occupant>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT id, model, load_options, lease_owner FROM jobs
                 WHERE state = 'running' AND target = $1",
                &[&target],
            )
            .await?;
        rows.iter()
            .map(|row| {
                let id: String = row.get("id");
                Ok(crate::Occupant {
                    id: row::parse_id(&id)?,
                    model: row.get("model"),
                    load_options: row.get("load_options"),
                    lease_owner: row.get("lease_owner"),
                })
            })
            .collect()
    }

    /// See [`Store::rescue_expired`](crate::Store::rescue_expired).
    pub async fn rescue_expired(&self, now: i64) -> Result<u64> {
        let max = i32::try_from(crate::MAX_INTERRUPTIONS).unwrap_or(i32::MAX);
        self.change_jobs(
            &queries::RESCUE_EXPIRED,
            &[&now, &LEASE_EXHAUSTED, &LEASE_REQUEUED, &max],
        )
        .await
    }

    /// See [`Store::prune_finished`](crate::Store::prune_finished).
    pub async fn prune_finished(&self, before: i64, limit: u32) -> Result<u64> {
        self.single(async |client| {
            Ok(client
                .execute(
                    "DELETE FROM jobs WHERE id IN (
                         SELECT id FROM jobs WHERE finished_at < $1
                         ORDER BY finished_at LIMIT $2
                         FOR UPDATE SKIP LOCKED)",
                    &[&before, &i64::from(limit)],
                )
                .await?)
        })
        .await
    }

    /// See [`Store::acquire_lease`](crate::Store::acquire_lease).
    pub async fn acquire_lease(
        &self,
        lease: Lease<'_>,
        owner: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        let expires_at = lease_expiry(now, ttl_ms)?;
        let changed = self
            .single(async |client| {
                let statement = client
                    .prepare_cached(crate::lease::ACQUIRE_POSTGRES)
                    .await?;
                Ok(client
                    .execute(
                        &statement,
                        &[&lease.kind(), &lease.name(), &owner, &now, &expires_at],
                    )
                    .await?)
            })
            .await?;
        Ok(changed == 1)
    }

    /// See [`Store::release_lease`](crate::Store::release_lease).
    pub async fn release_lease(&self, lease: Lease<'_>, owner: &str) -> Result<bool> {
        let changed = self
            .single(async |client| {
                Ok(client
                    .execute(
                        "DELETE FROM target_leases WHERE kind = $1 AND name = $2 AND owner = $3",
                        &[&lease.kind(), &lease.name(), &owner],
                    )
                    .await?)
            })
            .await?;
        Ok(changed == 1)
    }

    /// See [`Store::append_output`](crate::Store::append_output). One statement: the
    /// insert and its signal commit together.
    pub async fn append_output(&self, id: JobId, batch: &OutputBatch) -> Result<()> {
        let attempt = batch.attempt as i32;
        let seq = batch.seq as i32;
        self.single(async |client| {
            let statement = client
                .prepare_cached(
                    "WITH appended AS (
                         INSERT INTO job_output (job_id, attempt, seq, content_type, bytes, last)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         RETURNING job_id
                     )
                     SELECT pg_notify('foreman_jobs', 'out:' || job_id) FROM appended",
                )
                .await?;
            client
                .execute(
                    &statement,
                    &[
                        &id.to_string(),
                        &attempt,
                        &seq,
                        &batch.content_type,
                        &batch.bytes,
                        &batch.last,
                    ],
                )
                .await?;
            Ok(())
        })
        .await
    }

    /// See [`Store::read_output`](crate::Store::read_output).
    pub async fn read_output(
        &self,
        id: JobId,
        after: Option<OutputCursor>,
    ) -> Result<Vec<OutputBatch>> {
        let (attempt, seq) = after.map_or((-1, -1), |cursor| {
            (cursor.attempt as i32, cursor.seq as i32)
        });
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT attempt, seq, content_type, bytes, last FROM job_output
                 WHERE job_id = $1 AND (attempt, seq) > ($2, $3)
                 ORDER BY attempt, seq",
            )
            .await?;
        let rows = client
            .query(&statement, &[&id.to_string(), &attempt, &seq])
            .await?;
        Ok(rows
            .iter()
            .map(|row| OutputBatch {
                attempt: row.get::<_, i32>(0) as u32,
                seq: row.get::<_, i32>(1) as u32,
                content_type: row.get(2),
                bytes: row.get(3),
                last: row.get(4),
            })
            .collect())
    }

    /// See [`Store::prune_output`](crate::Store::prune_output).
    pub async fn prune_output(&self, before: i64) -> Result<u64> {
        self.single(async |client| {
            Ok(client
                .execute(
                    "DELETE FROM job_output o USING jobs j
                     WHERE j.id = o.job_id AND j.finished_at < $1",
                    &[&before],
                )
                .await?)
        })
        .await
    }

    /// See [`Store::lease_holder`](crate::Store::lease_holder).
    pub async fn lease_holder(&self, lease: Lease<'_>) -> Result<Option<LeaseHolder>> {
        let client = self.client().await?;
        let statement = client
            .prepare_cached(
                "SELECT owner, expires_at FROM target_leases WHERE kind = $1 AND name = $2",
            )
            .await?;
        let row = client
            .query_opt(&statement, &[&lease.kind(), &lease.name()])
            .await?;
        Ok(row.map(|row| LeaseHolder {
            owner: row.get(0),
            expires_at: row.get(1),
        }))
    }

    /// See [`Store::get`](crate::Store::get).
    pub async fn get(&self, id: JobId) -> Result<Option<Job>> {
        let client = self.client().await?;
        first_job(&client, &queries::SELECT_BY_ID, &[&id.to_string()]).await
    }

    /// See [`Store::get_many`](crate::Store::get_many): one prepared statement, the ids
    /// as one array parameter.
    pub async fn get_many(&self, ids: &[JobId]) -> Result<Vec<Job>> {
        static SELECT_MANY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!("SELECT {JOB_COLUMNS} FROM jobs WHERE id = ANY($1)")
        });
        let ids: Vec<String> = ids.iter().map(JobId::to_string).collect();
        let client = self.client().await?;
        let statement = client.prepare_cached(&SELECT_MANY).await?;
        let rows = client.query(&statement, &[&ids]).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// See [`Store::list`](crate::Store::list).
    pub async fn list(&self, params: ListParams) -> Result<Vec<Job>> {
        // Only fixed SQL fragments are appended; every value is a bound parameter.
        let mut sql = format!("SELECT {JOB_COLUMNS} FROM jobs WHERE true");
        let mut values: Vec<Box<dyn ToSql + Sync + Send>> = Vec::new();
        let mut filter = |fragment: &str, value: Box<dyn ToSql + Sync + Send>| {
            values.push(value);
            sql.push_str(&format!(" AND {fragment} ${}", values.len()));
        };
        if let Some(state) = params.state {
            filter("state =", Box::new(state.as_str().to_owned()));
        }
        if let Some(model) = params.model {
            filter("model =", Box::new(model));
        }
        if let Some(created_before) = params.created_before {
            filter("created_at <", Box::new(created_before));
        }
        if let Some(created_after) = params.created_after {
            filter("created_at >", Box::new(created_after));
        }
        if let Some(cursor) = params.cursor {
            filter("id <", Box::new(cursor.to_string()));
        }
        values.push(Box::new(i64::from(params.limit)));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ${}", values.len()));
        let refs: Vec<&(dyn ToSql + Sync)> = values
            .iter()
            .map(|value| &**value as &(dyn ToSql + Sync))
            .collect();
        let client = self.client().await?;
        let rows = client.query(&sql, &refs).await?;
        rows.iter().map(job_from_row).collect()
    }

    /// See [`Store::due_webhooks`](crate::Store::due_webhooks): a read, claims nothing.
    pub async fn due_webhooks(&self, now: i64, limit: u32) -> Result<Vec<WebhookDelivery>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM webhook_deliveries
                 WHERE state = 'pending' AND next_attempt_at <= $1
                 ORDER BY next_attempt_at, id LIMIT $2",
                &[&now, &i64::from(limit)],
            )
            .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    /// See [`Store::claim_webhooks`](crate::Store::claim_webhooks).
    pub async fn claim_webhooks(
        &self,
        now: i64,
        limit: u32,
        lease_for_ms: i64,
    ) -> Result<Vec<WebhookDelivery>> {
        let until = lease_expiry(now, lease_for_ms)?;
        let mut claimed = self
            .single(async |client| {
                let rows = client
                    .query(
                        "WITH due AS (
                             SELECT id, next_attempt_at AS due_at FROM webhook_deliveries
                             WHERE state = 'pending' AND next_attempt_at <= $1
                             ORDER BY next_attempt_at, id LIMIT $2
                             FOR UPDATE SKIP LOCKED
                         )
                         UPDATE webhook_deliveries AS d SET next_attempt_at = $3
                         FROM due WHERE d.id = due.id
                         RETURNING d.*, due.due_at",
                        &[&now, &i64::from(limit), &until],
                    )
                    .await?;
                rows.iter()
                    .map(|row| Ok((row.get::<_, i64>("due_at"), delivery_from_row(row)?)))
                    .collect::<Result<Vec<_>>>()
            })
            .await?;
        claimed.sort_by(|(a, x), (b, y)| (a, &x.id).cmp(&(b, &y.id)));
        Ok(claimed.into_iter().map(|(_, delivery)| delivery).collect())
    }

    /// See [`Store::record_webhook_attempt`](crate::Store::record_webhook_attempt).
    pub async fn record_webhook_attempt(
        &self,
        delivery_id: &str,
        attempt: &WebhookAttempt,
        outcome: AttemptOutcome,
    ) -> Result<bool> {
        let retry_at = match outcome {
            AttemptOutcome::RetryAt(at) => Some(at),
            AttemptOutcome::Delivered | AttemptOutcome::Failed => None,
        };
        let (state, next_attempt_at, finished_at) = match outcome {
            AttemptOutcome::Delivered => ("delivered", attempt.at, Some(attempt.at)),
            AttemptOutcome::Failed => ("failed", attempt.at, Some(attempt.at)),
            AttemptOutcome::RetryAt(at) => ("pending", at, None),
        };
        let number = attempt_i32(attempt.attempt)?;
        let status = attempt.status.map(i32::from);
        self.transaction(async |tx| {
            let advanced = tx
                .execute(
                    "UPDATE webhook_deliveries
                     SET attempts = $2, state = $3, next_attempt_at = $4, finished_at = $5
                     WHERE id = $1 AND state = 'pending' AND attempts = $2 - 1",
                    &[
                        &delivery_id,
                        &number,
                        &state,
                        &next_attempt_at,
                        &finished_at,
                    ],
                )
                .await?;
            if advanced != 1 {
                return Ok(false);
            }
            tx.execute(
                "INSERT INTO webhook_attempts
                     (delivery_id, attempt, at, status, latency_ms, error, retry_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
                &[
                    &delivery_id,
                    &number,
                    &attempt.at,
                    &status,
                    &attempt.latency_ms,
                    &attempt.error,
                    &retry_at,
                ],
            )
            .await?;
            Ok(true)
        })
        .await
    }

    /// See [`Store::webhooks_for_job`](crate::Store::webhooks_for_job).
    pub async fn webhooks_for_job(&self, job_id: JobId) -> Result<Vec<WebhookDelivery>> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT * FROM webhook_deliveries WHERE job_id = $1 ORDER BY created_at, id",
                &[&job_id.to_string()],
            )
            .await?;
        let mut deliveries: Vec<WebhookDelivery> =
            rows.iter().map(delivery_from_row).collect::<Result<_>>()?;
        for delivery in &mut deliveries {
            let rows = client
                .query(
                    "SELECT * FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt",
                    &[&delivery.id],
                )
                .await?;
            delivery.log = rows.iter().map(attempt_from_row).collect::<Result<_>>()?;
        }
        Ok(deliveries)
    }
}

/// The error a backup of a PostgreSQL store gives, with the command to run instead.
pub(crate) fn backup_unsupported(display: &str) -> Error {
    Error::UsePgDump {
        command: format!("pg_dump --format=custom --file=foreman.dump '{display}'"),
    }
}

/// `postgres://user@host:port/db` from a parsed URL, leaving out the password.
pub(crate) fn describe(config: &tokio_postgres::Config) -> String {
    let user = config.get_user().unwrap_or("");
    let host = config
        .get_hosts()
        .first()
        .map(|host| match host {
            tokio_postgres::config::Host::Tcp(name) => name.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".to_owned());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let db = config.get_dbname().unwrap_or(user);
    if user.is_empty() {
        format!("postgres://{host}:{port}/{db}")
    } else {
        format!("postgres://{user}@{host}:{port}/{db}")
    }
}

/// The queue heads from the rows of `QUEUE_HEADS`: the head of each caller's jobs
/// within each load key, folded into one head per key.
fn heads_from_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<QueueHead>> {
    let mut heads: Vec<QueueHead> = Vec::new();
    for row in rows {
        let id: String = row.get("id");
        let model: String = row.get("model");
        let load_options: String = row.get("load_options");
        let best = JobRef {
            id: row::parse_id(&id)?,
            priority: row.get("priority"),
            created_at: row.get("created_at"),
        };
        let oldest: i64 = row.get("oldest");
        let depth = row::count(row.get("depth"));
        let caller = CallerHead {
            caller: row.get("caller"),
            weight: u32::try_from(row.get::<_, i32>("caller_weight")).unwrap_or(1),
            best,
            depth,
        };
        match heads.last_mut() {
            Some(head) if head.model == model && head.load_options == load_options => {
                let rank = |job: &JobRef| (std::cmp::Reverse(job.priority), job.created_at, job.id);
                if rank(&best) < rank(&head.best) {
                    head.best = best;
                }
                head.oldest_created_at = head.oldest_created_at.min(oldest);
                head.depth += depth;
                head.callers.push(caller);
            }
            _ => heads.push(QueueHead {
                model,
                load_options,
                best,
                oldest_created_at: oldest,
                depth,
                callers: vec![caller],
            }),
        }
    }
    // Jobs without a caller first, as the SQLite backend orders them.
    for head in &mut heads {
        head.callers.sort_by(|a, b| a.caller.cmp(&b.caller));
    }
    Ok(heads)
}

fn attempt_i32(attempt: u32) -> Result<i32> {
    i32::try_from(attempt)
        .map_err(|_| Error::InvalidInput(format!("attempt {attempt} is out of range")))
}

async fn first_job<C: GenericClient>(
    client: &C,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Option<Job>> {
    let statement = client.prepare_cached(sql).await?;
    match client.query_opt(&statement, params).await? {
        Some(row) => Ok(Some(job_from_row(&row)?)),
        None => Ok(None),
    }
}

async fn existing_for_key<C: GenericClient>(client: &C, new_job: &NewJob) -> Result<Option<Job>> {
    match &new_job.idempotency_key {
        Some(key) => first_job(client, &queries::SELECT_BY_IDEMPOTENCY_KEY, &[key]).await,
        None => Ok(None),
    }
}

/// Inserts one job, or finds the job its idempotency key already names. The unique index
/// decides between concurrent first uses of a key, on any instance.
async fn insert_job<C: GenericClient>(
    client: &C,
    new_job: &NewJob,
    id: JobId,
    now: i64,
    accepted_by: Option<&str>,
) -> Result<Enqueued> {
    let (caller, caller_weight) = crate::job::caller_columns(new_job.caller.as_ref());
    let inserted = first_job(
        client,
        &queries::INSERT_JOB,
        &[
            &id.to_string(),
            &new_job.kind.as_str(),
            &new_job.model,
            &new_job.payload,
            &new_job.priority,
            &attempt_i32(new_job.max_attempts)?,
            &now,
            &new_job.idempotency_key,
            &new_job.webhook_url,
            &new_job.metadata,
            &new_job.load_options,
            &new_job.sync,
            &accepted_by,
            &caller,
            &i32::try_from(caller_weight).unwrap_or(i32::MAX),
        ],
    )
    .await?;
    if let Some(job) = inserted {
        return Ok(Enqueued {
            job,
            created: true,
            position: None,
        });
    }
    // ON CONFLICT waited for the other inserter's commit, so its row is visible now.
    let existing = existing_for_key(client, new_job).await?;
    let job = existing.ok_or_else(|| {
        Error::Write("the insert conflicted, yet no job holds its idempotency key".to_owned())
    })?;
    Ok(Enqueued {
        job,
        created: false,
        position: None,
    })
}

/// The PostgreSQL dialect's statements. Built once (they embed the column list); every
/// fenced statement takes $1 id, $2 attempt, $3 owner.
mod queries {
    use std::sync::LazyLock;

    use super::async_commit::asynchronous;
    use super::row::JOB_COLUMNS;

    fn with_columns(sql: &str) -> String {
        sql.replace("{COLUMNS}", JOB_COLUMNS)
    }

    /// A guarded change of one job, in two forms: for any job, and for jobs without a
    /// webhook URL only (which cannot need an outbox row, so commit alone).
    pub(super) struct Change {
        pub(super) any: String,
        pub(super) without_webhook: String,
    }

    /// A change that is a run's outcome: a *soon* write, committed asynchronously (see
    /// `async_commit.rs`).
    fn outcome(sql: &str) -> Change {
        let Change {
            any,
            without_webhook,
        } = change(sql);
        Change {
            any: asynchronous(&any),
            without_webhook: asynchronous(&without_webhook),
        }
    }

    /// A claim, a relaxed write: $1 id, $2 owner, $3 lease expiry, $4 now, $5 target.
    /// One statement: the row lock of SKIP LOCKED is held until it commits.
    pub(super) static CLAIM: LazyLock<String> = LazyLock::new(|| {
        asynchronous(&format!(
            "WITH claimable AS (
                 SELECT id FROM jobs
                 WHERE id = $1 AND state = 'queued' AND run_after <= $4
                 FOR UPDATE SKIP LOCKED
             )
             UPDATE jobs
             SET state = 'running',
                 attempts = attempts + 1,
                 lease_owner = $2,
                 target = $5,
                 lease_expires_at = $3,
                 started_at = coalesce(started_at, $4)
             FROM claimable
             WHERE jobs.id = claimable.id
             RETURNING {}",
            super::row::qualified_columns("jobs")
        ))
    });

    /// A lease renewal, a relaxed write: $4 the new expiry.
    pub(super) static HEARTBEAT: LazyLock<String> = LazyLock::new(|| {
        asynchronous(
            "UPDATE jobs
             SET lease_expires_at = greatest(lease_expires_at, $4)
             WHERE id = $1 AND state = 'running' AND attempts = $2 AND lease_owner = $3",
        )
    });

    /// The output of a requeued run and after, committed with the requeue's class:
    /// $1 job id, $2 the attempt given back.
    pub(super) static DELETE_RERUN_OUTPUT: LazyLock<String> = LazyLock::new(|| {
        asynchronous("DELETE FROM job_output WHERE job_id = $1 AND attempt >= $2")
    });

    fn change(sql: &str) -> Change {
        let guard = "WHERE id = $1 AND";
        assert!(
            sql.contains(guard),
            "a change is guarded by the job id first"
        );
        Change {
            any: with_columns(sql),
            without_webhook: with_columns(&sql.replacen(
                guard,
                "WHERE webhook_url IS NULL AND id = $1 AND",
                1,
            )),
        }
    }

    pub(super) static SELECT_BY_ID: LazyLock<String> =
        LazyLock::new(|| with_columns("SELECT {COLUMNS} FROM jobs WHERE id = $1"));

    pub(super) static SELECT_BY_IDEMPOTENCY_KEY: LazyLock<String> =
        LazyLock::new(|| with_columns("SELECT {COLUMNS} FROM jobs WHERE idempotency_key = $1"));

    /// $1 id, $2 kind, $3 model, $4 payload, $5 priority, $6 max_attempts, $7 now,
    /// $8 idempotency_key, $9 webhook_url, $10 metadata, $11 load_options, $12 sync,
    /// $13 accepted_by, $14 caller, $15 caller_weight.
    pub(super) static INSERT_JOB: LazyLock<String> = LazyLock::new(|| {
        with_columns(
            "INSERT INTO jobs (id, kind, model, payload, state, priority, attempts, max_attempts,
                               run_after, idempotency_key, webhook_url, metadata, created_at,
                               load_options, sync, accepted_by, caller, caller_weight)
             VALUES ($1, $2, $3, $4, 'queued', $5, 0, $6, $7, $8, $9, $10, $7, $11, $12, $13,
                     $14, $15)
             ON CONFLICT (idempotency_key) DO NOTHING
             RETURNING {COLUMNS}",
        )
    });

    /// The admission lock of bounded enqueues: $1 its key.
    pub(super) const ADMISSION_LOCK: &str = "SELECT pg_advisory_xact_lock($1)";

    /// The places in the queue of the jobs whose ids are in $1 (the jobs ahead of each, in
    /// the order of `queue_position`), in one pass over the queued jobs.
    /// The head of every caller's jobs within each load key: $1 now.
    pub(super) const QUEUE_HEADS: &str = "SELECT DISTINCT ON (model, load_options, caller)
                        model, load_options, caller, caller_weight, id, priority, created_at,
                        min(created_at) OVER per_caller AS oldest,
                        count(*) OVER per_caller AS depth
                 FROM jobs
                 WHERE state = 'queued' AND run_after <= $1
                 WINDOW per_caller AS (PARTITION BY model, load_options, caller)
                 ORDER BY model, load_options, caller, priority DESC, created_at, id";

    /// With each, the number of queued jobs.
    pub(super) const QUEUE_POSITIONS: &str = "SELECT id, position, queued
         FROM (SELECT id, row_number() OVER (ORDER BY priority DESC, created_at, id) - 1
                   AS position,
                      count(*) OVER () AS queued
               FROM jobs WHERE state = 'queued') AS ranked
         WHERE id = ANY($1)";

    /// `new:ID` ($1) on `foreman_jobs`, committed asynchronously (see `announce_new`).
    pub(super) const ANNOUNCE_NEW: &str = "SELECT pg_notify('foreman_jobs', $1),
                set_config('synchronous_commit', 'off', true)";

    /// Jobs of a group refused after its insert: $1 their ids.
    pub(super) const DELETE_JOBS: &str = "DELETE FROM jobs WHERE id = ANY($1)";

    /// A group of plain enqueues (no idempotency key), one array per column.
    pub(super) static INSERT_JOBS: LazyLock<String> = LazyLock::new(|| {
        with_columns(
            "INSERT INTO jobs (id, kind, model, payload, state, priority, attempts, max_attempts,
                               run_after, webhook_url, metadata, created_at, load_options, sync,
                               accepted_by, caller, caller_weight)
             SELECT id, kind, model, payload, 'queued', priority, 0, max_attempts, at,
                    webhook_url, metadata, at, load_options, sync, accepted_by, caller,
                    caller_weight
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::int4[],
                         $6::int4[], $7::int8[], $8::text[], $9::text[], $10::text[],
                         $11::bool[], $12::text[], $13::text[], $14::int4[])
                  AS given (id, kind, model, payload, priority, max_attempts, at, webhook_url,
                            metadata, load_options, sync, accepted_by, caller, caller_weight)
             RETURNING {COLUMNS}",
        )
    });

    pub(super) const COUNT_QUEUED: &str = "SELECT count(*) FROM jobs WHERE state = 'queued'";

    /// $4 result, $5 now, $6 artifacts.
    pub(super) static COMPLETE: LazyLock<Change> = LazyLock::new(|| {
        outcome(
            "UPDATE jobs
             SET state = 'succeeded', result = $4, artifacts = $6,
                 failure_status = NULL, failure_message = NULL, finished_at = $5,
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND state = 'running' AND attempts = $2 AND lease_owner = $3
             RETURNING {COLUMNS}",
        )
    });

    /// $4 status, $5 message, $6 now.
    pub(super) static FAIL: LazyLock<Change> = LazyLock::new(|| {
        outcome(
            "UPDATE jobs
             SET state = 'failed', failure_status = $4, failure_message = $5, finished_at = $6,
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND state = 'running' AND attempts = $2 AND lease_owner = $3
             RETURNING {COLUMNS}",
        )
    });

    /// $4 status, $5 message, $6 run_after, $7 now.
    pub(super) static RETRY_OR_FAIL: LazyLock<Change> = LazyLock::new(|| {
        outcome(
            "UPDATE jobs
             SET state = CASE
                     WHEN cancel_requested THEN 'cancelled'
                     WHEN attempts - interruptions < max_attempts THEN 'queued'
                     ELSE 'failed'
                 END,
                 run_after = CASE
                     WHEN NOT cancel_requested AND attempts - interruptions < max_attempts
                     THEN $6::bigint ELSE run_after
                 END,
                 finished_at = CASE
                     WHEN NOT cancel_requested AND attempts - interruptions < max_attempts
                     THEN NULL ELSE $7::bigint
                 END,
                 failure_status = $4, failure_message = $5,
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND state = 'running' AND attempts = $2 AND lease_owner = $3
             RETURNING {COLUMNS}",
        )
    });

    /// $4 now.
    pub(super) static REQUEUE: LazyLock<Change> = LazyLock::new(|| {
        outcome(
            "UPDATE jobs
             SET state = CASE WHEN cancel_requested THEN 'cancelled' ELSE 'queued' END,
                 attempts = CASE WHEN cancel_requested THEN attempts ELSE attempts - 1 END,
                 finished_at = CASE WHEN cancel_requested THEN $4::bigint ELSE NULL END,
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND state = 'running' AND attempts = $2 AND lease_owner = $3
             RETURNING {COLUMNS}",
        )
    });

    /// $1 id, $2 now, $3 status, $4 message.
    pub(super) static CANCEL_QUEUED: LazyLock<String> = LazyLock::new(|| {
        with_columns(
            "UPDATE jobs
             SET state = 'cancelled', finished_at = $2, failure_status = $3, failure_message = $4
             WHERE id = $1 AND state = 'queued'
             RETURNING {COLUMNS}",
        )
    });

    /// $1 id, $2 status, $3 message.
    pub(super) static CANCEL_RUNNING: LazyLock<String> = LazyLock::new(|| {
        with_columns(
            "UPDATE jobs
             SET cancel_requested = true, failure_status = $2, failure_message = $3
             WHERE id = $1 AND state = 'running'
             RETURNING {COLUMNS}",
        )
    });

    /// $4 now.
    pub(super) static FINISH_CANCELLED: LazyLock<Change> = LazyLock::new(|| {
        outcome(
            "UPDATE jobs
             SET state = 'cancelled', finished_at = $4, lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND state = 'running' AND attempts = $2 AND lease_owner = $3
             RETURNING {COLUMNS}",
        )
    });

    /// Takes a running job away from its gone worker (see the SQLite backend's
    /// `take_back_running`). $1 now, $2 message when exhausted, $3 message when requeued,
    /// $4 the interruption bound.
    const TAKE_BACK_RUNNING: &str = "
        UPDATE jobs
        SET state = CASE
                WHEN cancel_requested THEN 'cancelled'
                WHEN interruptions + 1 >= $4::integer THEN 'failed'
                ELSE 'queued'
            END,
            finished_at = CASE
                WHEN cancel_requested OR interruptions + 1 >= $4 THEN $1::bigint ELSE NULL
            END,
            run_after = CASE
                WHEN cancel_requested OR interruptions + 1 >= $4 THEN run_after ELSE $1::bigint
            END,
            failure_status = CASE WHEN cancel_requested THEN failure_status ELSE 500 END,
            failure_message = CASE
                WHEN cancel_requested THEN failure_message
                WHEN interruptions + 1 >= $4 THEN $2::text
                ELSE $3::text
            END,
            interruptions = interruptions + 1,
            lease_owner = NULL,
            lease_expires_at = NULL";

    /// Running jobs of the owners starting with $5 (every running job when $5 is NULL).
    pub(super) static RECOVER_RUNNING: LazyLock<String> = LazyLock::new(|| {
        with_columns(&format!(
            "{TAKE_BACK_RUNNING}
             WHERE state = 'running' AND ($5::text IS NULL OR starts_with(lease_owner, $5))
             RETURNING {{COLUMNS}}"
        ))
    });

    /// Running jobs whose lease lapsed before $1.
    pub(super) static RESCUE_EXPIRED: LazyLock<String> = LazyLock::new(|| {
        with_columns(&format!(
            "{TAKE_BACK_RUNNING}
             WHERE state = 'running' AND lease_expires_at < $1
             RETURNING {{COLUMNS}}"
        ))
    });

    /// Abandons synchronous jobs whose caller is gone while other instances may run them
    /// (see the SQLite backend's `abandon_sync`): queued ones cancelled at once, running ones
    /// asked to stop. $1 now, $2 message.
    const ABANDON_SYNC_WHILE_SHARED: &str = "
        UPDATE jobs
        SET state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
            finished_at = CASE WHEN state = 'queued' THEN $1::bigint ELSE finished_at END,
            cancel_requested = state = 'running',
            failure_status = 499,
            failure_message = $2::text
        WHERE sync
          AND (state = 'queued' OR (state = 'running' AND NOT cancel_requested))";

    /// Those accepted by instance $3.
    pub(super) static ABANDON_SYNC_OF: LazyLock<String> = LazyLock::new(|| {
        with_columns(&format!(
            "{ABANDON_SYNC_WHILE_SHARED}
               AND accepted_by = $3
             RETURNING {{COLUMNS}}"
        ))
    });

    /// Those accepted before $3 by an instance without a live instance lease at $1, or by
    /// nobody recorded.
    pub(super) static ABANDON_ORPHANED_SYNC: LazyLock<String> = LazyLock::new(|| {
        with_columns(&format!(
            "{ABANDON_SYNC_WHILE_SHARED}
               AND created_at < $3
               AND NOT EXISTS (
                   SELECT 1 FROM target_leases
                   WHERE kind = 'instance' AND name = jobs.accepted_by AND expires_at > $1)
             RETURNING {{COLUMNS}}"
        ))
    });

    /// $1 now, $2 message.
    pub(super) static ABANDON_SYNC: LazyLock<String> = LazyLock::new(|| {
        with_columns(
            "UPDATE jobs
             SET state = 'cancelled', finished_at = $1, cancel_requested = false,
                 failure_status = 499, failure_message = $2,
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE sync AND state IN ('queued', 'running')
             RETURNING {COLUMNS}",
        )
    });
}
