//! The SQLite backend: one file, one writer connection, a few readers.
//!
//! Durability comes first: WAL with `synchronous=FULL`, so a job is on disk when `enqueue`
//! returns even across a power loss, checked by reading the settings back at startup. All
//! writes go through a pool of exactly one connection, which serialises them inside the
//! process without lock contention; transactions that write begin `IMMEDIATE` so another
//! process holding the file makes them wait (`busy_timeout`) instead of failing. Reads use a
//! separate read-only pool and never block the writer.

mod batch;
mod keys;
mod maintenance;
mod migrate;
mod mirror;
mod outbox;
mod queries;
mod readers;
mod row;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use rusqlite::types::Value;
use rusqlite::{Connection, OpenFlags, OptionalExtension, Params, Row};

use crate::commit_times::{CommitTimes, CommitTimesSnapshot};
use crate::error::{Error, Result};
use crate::job::{Job, JobFailure, JobId, NewJob, QueueGroup, QueueHead};
use crate::lease::{Lease, LeaseHolder};
use crate::ops::{CancelOutcome, ClaimParams, Enqueued, ListParams};
use crate::queue_index::QueuedJob;
use mirror::Mirror;
use readers::Readers;
use row::{attempt_from_row, count, delivery_from_row, job_from_row};
use writer::{Durability, Writer};

pub use maintenance::BackupReport;

use crate::webhook::{AttemptOutcome, WebhookAttempt, WebhookDelivery};

/// How long a statement waits for another process's write lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(5);
/// Prepared statements a connection keeps: more than the store has, so none is ever
/// prepared twice.
pub(super) const STATEMENT_CACHE: usize = 64;
/// `PRAGMA synchronous` reports FULL as 2.
const SYNCHRONOUS_FULL: i64 = 2;
/// ULIDs carry a 48-bit millisecond timestamp.
pub(crate) const MAX_ULID_MS: i64 = (1 << 48) - 1;

pub(crate) const RESTART_REQUEUED: &str = "job interrupted by a restart";
pub(crate) const RESTART_EXHAUSTED: &str =
    "job interrupted by restarts or lost leases too many times";
pub(crate) const LEASE_REQUEUED: &str = "job lease expired";
pub(crate) const LEASE_EXHAUSTED: &str =
    "job interrupted by lost leases or restarts too many times";
pub(crate) const SYNC_ABANDONED: &str =
    "its caller's connection ended with the foreman process that accepted it (restart)";
pub(crate) const SYNC_ORPHANED: &str = "its caller's connection ended with the foreman instance that accepted it (that instance stopped or died)";

/// A job store in one SQLite file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    path: PathBuf,
    /// The one writing connection, on a thread of its own: every write in the process
    /// queues there and shares commits with the writes waiting beside it.
    writer: Writer,
    readers: Readers,
    /// The queue order in memory, changed by the writer thread with the rows.
    mirror: Mirror,
    /// Mints ids from the caller's `now`, strictly increasing within this store, so ids sort
    /// in enqueue order even within one millisecond.
    ids: Arc<Mutex<ulid::Generator>>,
    /// How long the writer's commits take, recorded by the writer thread.
    commit_times: Arc<CommitTimes>,
    /// Recorded as `accepted_by` on every job this handle enqueues.
    instance: Option<Arc<str>>,
    /// The jobs finished by the bulk changes (recovery, rescue, abandon).
    pub(crate) finished_by_store: Arc<crate::FinishedTally>,
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
        let path = path.to_owned();
        tokio::task::spawn_blocking(move || Self::open_blocking(path))
            .await
            .map_err(|e| Error::Write(format!("opening the store stopped: {e}")))?
    }

    fn open_blocking(path: PathBuf) -> Result<SqliteStore> {
        // Switching a new file to WAL and migrating it take locks that SQLite's busy
        // handler does not always wait for; another process opening the same file at
        // the same moment (foreman and a tool) makes one of them retry.
        let started = Instant::now();
        let conn = loop {
            match open_writer(&path) {
                Err(error) if is_locked(&error) && started.elapsed() < BUSY_TIMEOUT => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                outcome => break outcome?,
            }
        };
        let mirror = Mirror::load(&conn)?;
        let commit_times = Arc::new(CommitTimes::default());
        let writer = Writer::spawn(conn, commit_times.clone())
            .map_err(|e| Error::Write(format!("cannot start the writer thread: {e}")))?;
        let readers = Readers::new(path.clone(), BUSY_TIMEOUT);
        readers.prime()?;
        tracing::debug!(path = %path.display(), "opened sqlite job store");
        Ok(SqliteStore {
            readers,
            mirror,
            path,
            writer,
            ids: Arc::new(Mutex::new(ulid::Generator::new())),
            commit_times,
            finished_by_store: Arc::default(),
            instance: None,
        })
    }

    /// This handle, recording `instance` as `accepted_by` on the jobs it enqueues.
    pub fn with_instance(mut self, instance: &str) -> SqliteStore {
        self.instance = Some(Arc::from(instance));
        self
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The schema version recorded in the file.
    pub async fn schema_version(&self) -> Result<i64> {
        self.readers.read(migrate::current_version).await
    }

    /// The newest schema version this build knows (and writes).
    pub fn latest_schema_version() -> i64 {
        migrate::latest_version()
    }

    /// Copies the database, as one consistent snapshot, into a new file at
    /// `destination` while the store goes on (see `maintenance`); the copy is a
    /// complete foreman database. An existing `destination` is refused.
    pub async fn backup(&self, destination: &Path) -> Result<BackupReport> {
        let destination = destination.to_owned();
        self.readers
            .read(move |conn| maintenance::backup(conn, &destination, BUSY_TIMEOUT))
            .await
    }

    /// Like [`SqliteStore::backup`] for the database file at `path`, without opening a
    /// store on it: nothing is migrated or written there, so it is safe beside a
    /// running foreman of any version.
    pub async fn backup_file(path: &Path, destination: &Path) -> Result<BackupReport> {
        let (path, destination) = (path.to_owned(), destination.to_owned());
        tokio::task::spawn_blocking(move || {
            let source = maintenance::open_source(&path, BUSY_TIMEOUT)?;
            maintenance::backup(&source, &destination, BUSY_TIMEOUT)
        })
        .await
        .map_err(|e| Error::Read(format!("the backup stopped: {e}")))?
    }

    /// Commits a durable write that changes nothing the queue reads: `Ok` proves the
    /// store can write and sync now.
    pub async fn probe_write(&self) -> Result<()> {
        self.write(Durability::Durable, |conn, _| maintenance::probe(conn))
            .await
    }

    /// Gives at most `max_pages` free pages (left by pruning) back to the file system;
    /// returns how many it gave back.
    pub async fn reclaim_space(&self, max_pages: u32) -> Result<u64> {
        self.write(Durability::Durable, move |conn, _| {
            maintenance::reclaim(conn, max_pages)
        })
        .await
    }

    /// The pages the database file has, free ones included.
    pub async fn page_count(&self) -> Result<i64> {
        self.readers.read(maintenance::page_count).await
    }

    /// Reads the durability-relevant settings back from the writer connection, as a
    /// durable write sees them.
    pub async fn pragmas(&self) -> Result<SqlitePragmas> {
        self.writer.write(Durability::Durable, read_pragmas).await
    }

    /// Lets queued writes finish, then closes every connection; calls made afterwards
    /// fail with [`Error::Closed`].
    pub async fn close(&self) {
        self.readers.close();
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

    /// Every write goes through here: `write` runs on the writer thread with the
    /// connection and the queue mirror.
    async fn write<T, F>(&self, durability: Durability, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Mirror) -> Result<T> + Send + 'static,
    {
        let mirror = self.mirror.clone();
        let outcome = self
            .writer
            .write(durability, move |conn| write(conn, &mirror))
            .await;
        if let Err(Error::Write(_)) = &outcome {
            // The batch's writes may have changed the mirror before its commit failed.
            self.mirror.mark_stale();
        }
        outcome
    }

    /// A write that returns the job row it changed, if any.
    async fn change_job<P>(
        &self,
        durability: Durability,
        sql: &'static str,
        params: P,
    ) -> Result<Option<Job>>
    where
        P: Params + Send + 'static,
    {
        self.write(durability, move |conn, mirror| {
            let job = first_job(conn, sql, params)?;
            if let Some(job) = &job {
                outbox::record_if_finished(conn, job)?;
                mirror.track(job);
            }
            Ok(job)
        })
        .await
    }

    /// A durable change of many jobs (`sql` returns every row it changed), with the
    /// webhook deliveries of those it finished; the mirror is reloaded, since rows may
    /// have gone back to the queue or left it. Returns how many rows changed.
    async fn change_jobs<P>(&self, sql: &'static str, params: P) -> Result<u64>
    where
        P: Params + Send + 'static,
    {
        let jobs = self
            .write(Durability::Durable, move |conn, mirror| {
                let jobs = all_rows(conn, sql, params, job_from_row)?;
                for job in &jobs {
                    outbox::record_if_finished(conn, job)?;
                }
                if !jobs.is_empty() {
                    mirror.reload(conn)?;
                }
                Ok(jobs)
            })
            .await?;
        self.finished_by_store.record(&jobs);
        Ok(jobs.len() as u64)
    }

    /// See [`Store::enqueue`](crate::Store::enqueue) and
    /// [`Store::enqueue_within`](crate::Store::enqueue_within).
    pub async fn enqueue(
        &self,
        new_job: NewJob,
        now: i64,
        max_queued: Option<u64>,
    ) -> Result<Enqueued> {
        crate::job::check_enqueue(&new_job, now)?;
        let id = new_job.id.unwrap_or_else(|| self.next_id(now));
        let accepted_by = self.instance.clone();
        // The insert and the fallback read of a duplicate key share one write, so the
        // existing row a duplicate key points at cannot be pruned in between.
        self.write(Durability::Durable, move |conn, mirror| {
            if let Some(limit) = max_queued {
                // The writer thread runs one write at a time, and the mirror follows
                // every one of them: the count and the insert cannot be split.
                if let Some(job) = existing_for_key(conn, &new_job)? {
                    return Ok(Enqueued {
                        job,
                        created: false,
                        position: None,
                    });
                }
                if mirror.queued(conn)? as u64 >= limit {
                    return Err(Error::QueueFull { limit });
                }
            }
            let enqueued = insert_job(conn, &new_job, id, now, accepted_by.as_deref())?;
            if enqueued.created {
                mirror.track(&enqueued.job);
            }
            Ok(enqueued)
        })
        .await
    }

    /// See [`Store::queue_heads`](crate::Store::queue_heads).
    pub async fn queue_heads(&self, now: i64) -> Result<Vec<QueueHead>> {
        if let Some(heads) = self.mirror.heads_if_fresh(now) {
            return Ok(heads);
        }
        self.write(Durability::Relaxed, move |conn, mirror| {
            mirror.reload(conn)?;
            Ok(mirror.heads(now))
        })
        .await
    }

    /// See [`Store::queued_jobs`](crate::Store::queued_jobs).
    pub async fn queued_jobs(&self, limit: usize) -> Result<Vec<QueuedJob>> {
        if let Some(jobs) = self.mirror.jobs_if_fresh(limit) {
            return Ok(jobs);
        }
        self.write(Durability::Relaxed, move |conn, mirror| {
            mirror.reload(conn)?;
            Ok(mirror.jobs(limit))
        })
        .await
    }

    /// See [`Store::queue_depth`](crate::Store::queue_depth).
    pub async fn queue_depth(&self) -> Result<u64> {
        self.readers
            .read(|conn| {
                let depth: i64 = conn
                    .prepare_cached(queries::QUEUE_DEPTH)?
                    .query_row([], |row| row.get(0))?;
                Ok(count(depth))
            })
            .await
    }

    /// See [`Store::queue_summary`](crate::Store::queue_summary).
    pub async fn queue_summary(&self) -> Result<Vec<QueueGroup>> {
        self.readers
            .read(|conn| {
                let mut statement = conn.prepare_cached(queries::QUEUE_SUMMARY)?;
                let groups = statement
                    .query_map([], |row| {
                        Ok(QueueGroup {
                            model: row.get(0)?,
                            priority: row.get(1)?,
                            count: count(row.get(2)?),
                            oldest_created_at: row.get(3)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(groups)
            })
            .await
    }

    /// See [`Store::commit_times`](crate::Store::commit_times).
    pub fn commit_times(&self) -> CommitTimesSnapshot {
        self.commit_times.snapshot()
    }

    /// See [`Store::queue_position`](crate::Store::queue_position).
    pub async fn queue_position(&self, id: JobId) -> Result<Option<u64>> {
        self.readers
            .read(move |conn| {
                let mut statement = conn.prepare_cached(queries::QUEUE_POSITION)?;
                let mut rows = statement.query([id.to_string()])?;
                match rows.next()? {
                    Some(row) => Ok(Some(count(row.get(0)?))),
                    None => Ok(None),
                }
            })
            .await
    }

    /// See [`Store::claim`](crate::Store::claim). A relaxed write (see `writer`).
    pub async fn claim(&self, params: ClaimParams) -> Result<Option<Job>> {
        let lease_expires_at = lease_expiry(params.now, params.lease_for_ms)?;
        self.write(Durability::Relaxed, move |conn, mirror| {
            let id = params.id.to_string();
            let claimed = first_job(
                conn,
                queries::CLAIM,
                rusqlite::params![
                    id,
                    params.owner,
                    lease_expires_at,
                    params.now,
                    params.target
                ],
            )?;
            match &claimed {
                Some(job) => mirror.track(job),
                // Not claimable: the mirror learns what the row really is.
                None => match first_job(conn, queries::SELECT_BY_ID, [&id])? {
                    Some(job) => mirror.track(&job),
                    None => mirror.remove(params.id),
                },
            }
            Ok(claimed)
        })
        .await
    }

    /// See [`Store::heartbeat`](crate::Store::heartbeat). A relaxed write.
    pub async fn heartbeat(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        now: i64,
        lease_for_ms: i64,
    ) -> Result<bool> {
        let lease_expires_at = lease_expiry(now, lease_for_ms)?;
        let owner = owner.to_owned();
        self.write(Durability::Relaxed, move |conn, _| {
            let changed = conn
                .prepare_cached(queries::HEARTBEAT)?
                .execute(rusqlite::params![
                    id.to_string(),
                    i64::from(attempt),
                    owner,
                    lease_expires_at
                ])?;
            Ok(changed == 1)
        })
        .await
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
            Durability::Soon,
            queries::COMPLETE,
            (
                id.to_string(),
                i64::from(attempt),
                owner.to_owned(),
                result,
                now,
                artifacts,
            ),
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
            Durability::Soon,
            queries::FAIL,
            (
                id.to_string(),
                i64::from(attempt),
                owner.to_owned(),
                i64::from(failure.status),
                failure.message,
                now,
            ),
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
            Durability::Soon,
            queries::RETRY_OR_FAIL,
            (
                id.to_string(),
                i64::from(attempt),
                owner.to_owned(),
                i64::from(failure.status),
                failure.message,
                run_after,
                now,
            ),
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
        self.change_job(
            Durability::Soon,
            queries::REQUEUE,
            (id.to_string(), i64::from(attempt), owner.to_owned(), now),
        )
        .await
    }

    /// See [`Store::cancel`](crate::Store::cancel).
    pub async fn cancel(&self, id: JobId, now: i64, reason: JobFailure) -> Result<CancelOutcome> {
        // One write: nothing can claim or finish the job between the steps.
        self.write(Durability::Durable, move |conn, mirror| {
            let id = id.to_string();
            let queued = rusqlite::params![id, now, reason.status, &reason.message];
            if let Some(job) = first_job(conn, queries::CANCEL_QUEUED, queued)? {
                outbox::record_if_finished(conn, &job)?;
                mirror.track(&job);
                return Ok(CancelOutcome::Cancelled(job));
            }
            let running = rusqlite::params![id, reason.status, reason.message];
            if let Some(job) = first_job(conn, queries::CANCEL_RUNNING, running)? {
                return Ok(CancelOutcome::Requested(job));
            }
            match first_job(conn, queries::SELECT_BY_ID, [&id])? {
                Some(job) => {
                    debug_assert!(job.state.is_terminal(), "neither queued nor running");
                    Ok(CancelOutcome::AlreadyFinished(job))
                }
                None => Ok(CancelOutcome::NotFound),
            }
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
            Durability::Soon,
            queries::FINISH_CANCELLED,
            (id.to_string(), i64::from(attempt), owner.to_owned(), now),
        )
        .await
    }

    /// See [`Store::recover_running`](crate::Store::recover_running).
    pub async fn recover_running(&self, now: i64) -> Result<u64> {
        self.change_jobs(
            queries::RECOVER_RUNNING,
            (
                now,
                RESTART_EXHAUSTED,
                RESTART_REQUEUED,
                i64::from(crate::MAX_INTERRUPTIONS),
            ),
        )
        .await
    }

    /// See [`Store::recover_running_owned`](crate::Store::recover_running_owned).
    pub async fn recover_running_owned(&self, owner_prefix: &str, now: i64) -> Result<u64> {
        self.change_jobs(
            queries::RECOVER_RUNNING_OWNED,
            (
                now,
                RESTART_EXHAUSTED,
                RESTART_REQUEUED,
                i64::from(crate::MAX_INTERRUPTIONS),
                owner_prefix.to_owned(),
            ),
        )
        .await
    }

    /// See [`Store::abandon_sync_jobs`](crate::Store::abandon_sync_jobs).
    pub async fn abandon_sync_jobs(&self, now: i64) -> Result<u64> {
        self.change_jobs(queries::ABANDON_SYNC, (now, SYNC_ABANDONED))
            .await
    }

    /// See [`Store::abandon_sync_jobs_of`](crate::Store::abandon_sync_jobs_of).
    pub async fn abandon_sync_jobs_of(&self, instance: &str, now: i64) -> Result<u64> {
        self.change_jobs(
            queries::ABANDON_SYNC_OF,
            (now, SYNC_ABANDONED, instance.to_owned()),
        )
        .await
    }

    /// See [`Store::abandon_orphaned_sync_jobs`](crate::Store::abandon_orphaned_sync_jobs).
    pub async fn abandon_orphaned_sync_jobs(&self, now: i64, accepted_before: i64) -> Result<u64> {
        self.change_jobs(
            queries::ABANDON_ORPHANED_SYNC,
            (now, SYNC_ORPHANED, accepted_before),
        )
        .await
    }

    /// See [`Store::occupants`](crate::Store::occupants).
    pub async fn occupants(&self, target: &str) -> Result<Vec<crate::Occupant>> {
        let target = target.to_owned();
        self.readers
            .read(move |conn| all_rows(conn, queries::OCCUPANTS, [target], row::occupant_from_row))
            .await
    }

    /// See [`Store::rescue_expired`](crate::Store::rescue_expired).
    pub async fn rescue_expired(&self, now: i64) -> Result<u64> {
        self.change_jobs(
            queries::RESCUE_EXPIRED,
            (
                now,
                LEASE_EXHAUSTED,
                LEASE_REQUEUED,
                i64::from(crate::MAX_INTERRUPTIONS),
            ),
        )
        .await
    }

    /// See [`Store::prune_finished`](crate::Store::prune_finished).
    pub async fn prune_finished(&self, before: i64, limit: u32) -> Result<u64> {
        // Only finished rows go, so the queue and its mirror are untouched.
        self.write(Durability::Durable, move |conn, _| {
            Ok(conn
                .prepare_cached(queries::PRUNE_FINISHED)?
                .execute((before, i64::from(limit)))? as u64)
        })
        .await
    }

    /// See [`Store::acquire_lease`](crate::Store::acquire_lease). A relaxed write: a lease
    /// lost to a power cut is taken again at the next start.
    pub async fn acquire_lease(
        &self,
        lease: Lease<'_>,
        owner: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        let expires_at = lease_expiry(now, ttl_ms)?;
        let (kind, name, owner) = (lease.kind(), lease.name().to_owned(), owner.to_owned());
        self.write(Durability::Relaxed, move |conn, _| {
            let changed = conn
                .prepare_cached(crate::lease::ACQUIRE_SQLITE)?
                .execute(rusqlite::params![kind, name, owner, now, expires_at])?;
            Ok(changed == 1)
        })
        .await
    }

    /// See [`Store::release_lease`](crate::Store::release_lease).
    pub async fn release_lease(&self, lease: Lease<'_>, owner: &str) -> Result<bool> {
        let (kind, name, owner) = (lease.kind(), lease.name().to_owned(), owner.to_owned());
        self.write(Durability::Relaxed, move |conn, _| {
            let changed = conn
                .prepare_cached(
                    "DELETE FROM target_leases WHERE kind = ?1 AND name = ?2 AND owner = ?3",
                )?
                .execute(rusqlite::params![kind, name, owner])?;
            Ok(changed == 1)
        })
        .await
    }

    /// See [`Store::lease_holder`](crate::Store::lease_holder).
    pub async fn lease_holder(&self, lease: Lease<'_>) -> Result<Option<LeaseHolder>> {
        let (kind, name) = (lease.kind(), lease.name().to_owned());
        self.readers
            .read(move |conn| {
                Ok(conn
                    .prepare_cached(
                        "SELECT owner, expires_at FROM target_leases WHERE kind = ?1 AND name = ?2",
                    )?
                    .query_row(rusqlite::params![kind, name], |row| {
                        Ok(LeaseHolder {
                            owner: row.get(0)?,
                            expires_at: row.get(1)?,
                        })
                    })
                    .optional()?)
            })
            .await
    }

    /// See [`Store::get`](crate::Store::get).
    pub async fn get(&self, id: JobId) -> Result<Option<Job>> {
        self.readers
            .read(move |conn| first_job(conn, queries::SELECT_BY_ID, [id.to_string()]))
            .await
    }

    /// See [`Store::get_many`](crate::Store::get_many). The ids go as one JSON array, so
    /// one prepared statement serves any number of them.
    pub async fn get_many(&self, ids: &[JobId]) -> Result<Vec<Job>> {
        let list = serde_json::Value::from(
            ids.iter()
                .map(|id| serde_json::Value::String(id.to_string()))
                .collect::<Vec<_>>(),
        )
        .to_string();
        self.readers
            .read(move |conn| {
                let mut statement = conn.prepare_cached(
                    "SELECT * FROM jobs WHERE id IN (SELECT value FROM json_each(?1))",
                )?;
                let mut rows = statement.query([list])?;
                let mut jobs = Vec::new();
                while let Some(row) = rows.next()? {
                    jobs.push(job_from_row(row)?);
                }
                Ok(jobs)
            })
            .await
    }

    /// See [`Store::list`](crate::Store::list).
    pub async fn list(&self, params: ListParams) -> Result<Vec<Job>> {
        // Only fixed SQL fragments are appended; every value is a bound parameter.
        let mut sql = String::from("SELECT * FROM jobs WHERE 1 = 1");
        let mut values: Vec<Value> = Vec::new();
        let mut filter = |fragment: &str, value: Value| {
            values.push(value);
            sql.push_str(&format!(" AND {fragment} ?{}", values.len()));
        };
        if let Some(state) = params.state {
            filter("state =", Value::Text(state.as_str().to_owned()));
        }
        if let Some(model) = params.model {
            filter("model =", Value::Text(model));
        }
        if let Some(created_before) = params.created_before {
            filter("created_at <", Value::Integer(created_before));
        }
        if let Some(created_after) = params.created_after {
            filter("created_at >", Value::Integer(created_after));
        }
        if let Some(cursor) = params.cursor {
            filter("id <", Value::Text(cursor.to_string()));
        }
        values.push(Value::Integer(i64::from(params.limit)));
        sql.push_str(&format!(" ORDER BY id DESC LIMIT ?{}", values.len()));
        self.readers
            .read(move |conn| {
                let mut statement = conn.prepare_cached(&sql)?;
                let mut rows = statement.query(rusqlite::params_from_iter(values))?;
                let mut jobs = Vec::new();
                while let Some(row) = rows.next()? {
                    jobs.push(job_from_row(row)?);
                }
                Ok(jobs)
            })
            .await
    }

    /// See [`Store::due_webhooks`](crate::Store::due_webhooks).
    pub async fn due_webhooks(&self, now: i64, limit: u32) -> Result<Vec<WebhookDelivery>> {
        self.readers
            .read(move |conn| {
                all_rows(
                    conn,
                    queries::DUE_WEBHOOKS,
                    rusqlite::params![now, i64::from(limit)],
                    delivery_from_row,
                )
            })
            .await
    }

    /// See [`Store::claim_webhooks`](crate::Store::claim_webhooks): the read and the
    /// lease are one write, so two stores on one file never claim one delivery.
    pub async fn claim_webhooks(
        &self,
        now: i64,
        limit: u32,
        lease_for_ms: i64,
    ) -> Result<Vec<WebhookDelivery>> {
        let until = lease_expiry(now, lease_for_ms)?;
        self.write(Durability::Durable, move |conn, _| {
            let mut due = all_rows(
                conn,
                queries::DUE_WEBHOOKS,
                rusqlite::params![now, i64::from(limit)],
                delivery_from_row,
            )?;
            let mut lease = conn.prepare_cached(queries::LEASE_WEBHOOK)?;
            for delivery in &mut due {
                lease.execute(rusqlite::params![delivery.id, until])?;
                delivery.next_attempt_at = until;
            }
            Ok(due)
        })
        .await
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
        let delivery_id = delivery_id.to_owned();
        let attempt = attempt.clone();
        self.write(Durability::Durable, move |conn, _| {
            let advanced =
                conn.prepare_cached(queries::ADVANCE_WEBHOOK)?
                    .execute(rusqlite::params![
                        delivery_id,
                        i64::from(attempt.attempt),
                        state,
                        next_attempt_at,
                        finished_at
                    ])?;
            if advanced != 1 {
                return Ok(false);
            }
            conn.prepare_cached(queries::INSERT_WEBHOOK_ATTEMPT)?
                .execute(rusqlite::params![
                    delivery_id,
                    i64::from(attempt.attempt),
                    attempt.at,
                    attempt.status.map(i64::from),
                    attempt.latency_ms,
                    attempt.error,
                    retry_at
                ])?;
            Ok(true)
        })
        .await
    }

    /// See [`Store::webhooks_for_job`](crate::Store::webhooks_for_job).
    pub async fn webhooks_for_job(&self, job_id: JobId) -> Result<Vec<WebhookDelivery>> {
        self.readers
            .read(move |conn| {
                let mut deliveries = all_rows(
                    conn,
                    queries::WEBHOOKS_FOR_JOB,
                    [job_id.to_string()],
                    delivery_from_row,
                )?;
                for delivery in &mut deliveries {
                    delivery.log = all_rows(
                        conn,
                        queries::WEBHOOK_ATTEMPTS,
                        [&delivery.id],
                        attempt_from_row,
                    )?;
                }
                Ok(deliveries)
            })
            .await
    }
}

/// Opens the writing connection with the settings the store's guarantees rest on,
/// migrates the schema and checks the settings took.
fn open_writer(path: &Path) -> Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    conn.set_prepared_statement_cache_capacity(STATEMENT_CACHE);
    // Before the first table exists, so a new file starts in this mode.
    maintenance::ensure_incremental_vacuum(&conn)?;
    conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get::<_, String>(0))?;
    conn.pragma_update(None, "synchronous", "FULL")?;
    conn.pragma_update(None, "foreign_keys", "ON")?;
    migrate::run(&conn)?;
    check_pragmas(&read_pragmas(&conn)?)?;
    Ok(conn)
}

fn read_pragmas(conn: &Connection) -> Result<SqlitePragmas> {
    let journal_mode: String = conn.pragma_query_value(None, "journal_mode", |r| r.get(0))?;
    let synchronous: i64 = conn.pragma_query_value(None, "synchronous", |r| r.get(0))?;
    let foreign_keys: i64 = conn.pragma_query_value(None, "foreign_keys", |r| r.get(0))?;
    let busy_timeout_ms: i64 = conn.pragma_query_value(None, "busy_timeout", |r| r.get(0))?;
    Ok(SqlitePragmas {
        journal_mode: journal_mode.to_lowercase(),
        synchronous,
        foreign_keys: foreign_keys == 1,
        busy_timeout_ms,
    })
}

fn check_pragmas(pragmas: &SqlitePragmas) -> Result<()> {
    if pragmas.journal_mode != "wal" {
        return Err(Error::Pragma {
            name: "journal_mode",
            expected: "wal".to_owned(),
            actual: pragmas.journal_mode.clone(),
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

/// The job the idempotency key of `new_job` already names, if any.
fn existing_for_key(conn: &Connection, new_job: &NewJob) -> Result<Option<Job>> {
    match &new_job.idempotency_key {
        Some(key) => first_job(conn, queries::SELECT_BY_IDEMPOTENCY_KEY, [key]),
        None => Ok(None),
    }
}

/// Inserts one job, or finds the job an idempotency key already names (also one
/// inserted earlier in the same batch).
fn insert_job(
    conn: &Connection,
    new_job: &NewJob,
    id: JobId,
    now: i64,
    accepted_by: Option<&str>,
) -> Result<Enqueued> {
    let (caller, caller_weight) = crate::job::caller_columns(new_job.caller.as_ref());
    let inserted = first_job(
        conn,
        queries::INSERT_JOB,
        rusqlite::params![
            id.to_string(),
            new_job.kind.as_str(),
            new_job.model,
            new_job.payload,
            new_job.priority,
            i64::from(new_job.max_attempts),
            now,
            new_job.idempotency_key,
            new_job.webhook_url,
            new_job.metadata,
            new_job.load_options,
            new_job.sync,
            accepted_by,
            caller,
            i64::from(caller_weight)
        ],
    )?;
    if let Some(job) = inserted {
        return Ok(Enqueued {
            job,
            created: true,
            position: None,
        });
    }
    let existing = first_job(
        conn,
        queries::SELECT_BY_IDEMPOTENCY_KEY,
        [&new_job.idempotency_key],
    )?;
    let job = existing.ok_or_else(|| {
        Error::Write("the insert conflicted, yet no job holds its idempotency key".to_owned())
    })?;
    Ok(Enqueued {
        job,
        created: false,
        position: None,
    })
}

/// The first job row `sql` returns (a SELECT, or a change with RETURNING *).
fn first_job<P: Params>(conn: &Connection, sql: &str, params: P) -> Result<Option<Job>> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    match rows.next()? {
        Some(row) => Ok(Some(job_from_row(row)?)),
        None => Ok(None),
    }
}

/// Every row `sql` returns, decoded.
fn all_rows<T, P: Params>(
    conn: &Connection,
    sql: &str,
    params: P,
    decode: fn(&Row<'_>) -> Result<T>,
) -> Result<Vec<T>> {
    let mut statement = conn.prepare_cached(sql)?;
    let mut rows = statement.query(params)?;
    let mut decoded = Vec::new();
    while let Some(row) = rows.next()? {
        decoded.push(decode(row)?);
    }
    Ok(decoded)
}

/// SQLITE_BUSY or SQLITE_LOCKED: another connection holds the lock.
fn is_locked(error: &Error) -> bool {
    match error {
        Error::Database(rusqlite::Error::SqliteFailure(failure, _)) => matches!(
            failure.code,
            rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
        ),
        _ => false,
    }
}

/// `now + lease_for_ms`, refusing leases that are already over or overflow.
pub(crate) fn lease_expiry(now: i64, lease_for_ms: i64) -> Result<i64> {
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
        // The kinds' CHECK as the migrated database holds it (migration 5 rebuilt it,
        // migration 13 widened it in place).
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = rusqlite::Connection::open(dir.path().join("kinds.db")).expect("open");
        migrate::run(&conn).expect("migrate");
        let schema: String = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'jobs'",
                [],
                |row| row.get(0),
            )
            .expect("jobs table");
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
            (queries::QUEUED_JOBS, "jobs_queued_by_model"),
            (queries::QUEUE_DEPTH, "jobs_state_id"),
            (queries::QUEUE_POSITION, "jobs_queued_order"),
            (queries::RESCUE_EXPIRED, "jobs_state_id"),
            (queries::RECOVER_RUNNING, "jobs_state_id"),
            (queries::PRUNE_FINISHED, "jobs_finished_at"),
            (queries::SELECT_BY_IDEMPOTENCY_KEY, "jobs_idempotency_key"),
            (queries::CLAIM, "sqlite_autoindex_jobs_1"),
        ];
        for (statement, index) in statements {
            let details = store
                .readers
                .read(move |conn| {
                    let mut plan = conn.prepare(&format!("EXPLAIN QUERY PLAN {statement}"))?;
                    // Unbound parameters read as NULL, which is all a plan needs.
                    let mut rows = plan.raw_query();
                    let mut details = Vec::new();
                    while let Some(row) = rows.next()? {
                        details.push(row.get::<_, String>("detail")?);
                    }
                    Ok(details)
                })
                .await
                .expect("explain");
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
