//! foreman's durable job queue: every generation request becomes a job row here before the
//! client gets an answer, and every state change of a job is one guarded statement here.
//!
//! Callers hold a [`Store`], an enum over the backends, chosen at startup from the database
//! URL by [`Store::open`]: SQLite (one process, a file) or PostgreSQL (a database several
//! instances may share). Each backend owns its own SQL and migrations.
//!
//! Invariants every backend keeps:
//! - the store has no clock: every method that needs "now" takes it (unix milliseconds);
//! - a job leaves `running` only through a call that presents the current attempt number
//!   and the lease owner, so a worker that lost its lease cannot overwrite the next
//!   attempt's outcome, nor another instance's;
//! - a job is in a terminal state exactly when it has `finished_at`.
//!
//! The `testing` feature exposes [`testsuite`], the behaviours every backend must pass.

mod batch;
mod commit_times;
mod error;
mod finished_tally;
mod job;
mod keys;
mod lease;
mod occupancy;
mod ops;
mod outbox;
mod output;
pub mod postgres;
mod queue_index;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod test_postgres;
#[cfg(feature = "testing")]
pub mod testsuite;
mod webhook;

use std::path::{Path, PathBuf};

pub use batch::{Batch, BatchStatus, FileListParams, StoredFile};
pub use commit_times::{COMMIT_BUCKETS, CommitTimes, CommitTimesSnapshot};
pub use error::{Error, Result};
pub use finished_tally::FinishedTally;
pub use job::{CallerHead, JobCaller};
pub use job::{
    Job, JobFailure, JobId, JobKind, JobRef, JobState, NewJob, ParseError, QueueGroup, QueueHead,
};
pub use keys::{ApiKey, NewApiKey, USAGE_HOUR_MS, UsageBucket, UsageDelta, usage_hour};
pub use lease::{Lease, LeaseHolder};
pub use occupancy::Occupant;
pub use ops::{CancelOutcome, ClaimParams, Enqueued, ListParams};
pub use output::{OutputBatch, OutputCursor};
pub use postgres::{PgSignals, PgStore, Signal};
pub use queue_index::QueuedJob;
pub use sqlite::{BackupReport, SqliteStore};
pub use webhook::{AttemptOutcome, DeliveryState, WebhookAttempt, WebhookDelivery};

/// How many times a job may be interrupted (its process died, or lost its lease) before
/// it fails: interruptions are not the job's failures, but a job that brings foreman
/// down every time it runs must not run forever.
pub const MAX_INTERRUPTIONS: u32 = 5;

/// A job store on one of the supported backends.
///
/// Cheap to clone: clones share the same connection pools.
#[derive(Debug, Clone)]
pub enum Store {
    Sqlite(SqliteStore),
    Postgres(PgStore),
}

/// Where `Store::open` was told to go.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Location {
    SqliteFile(PathBuf),
    /// The URL as given (tokio-postgres parses it; it may hold a password).
    Postgres(String),
}

impl Store {
    /// Opens the store named by `url`, creating the database if missing and applying
    /// migrations.
    ///
    /// Accepts a plain file path, `sqlite://PATH` or `sqlite:PATH` (SQLite), or a
    /// `postgres://` or `postgresql://` URL (PostgreSQL, any form tokio-postgres reads,
    /// e.g. `postgres://user:password@host:5432/database`); anything else gives
    /// [`Error::InvalidUrl`]. A PostgreSQL database must exist; its tables are created.
    pub async fn open(url: &str) -> Result<Store> {
        match parse_location(url)? {
            Location::SqliteFile(path) => Ok(Store::Sqlite(SqliteStore::open(&path).await?)),
            Location::Postgres(url) => Ok(Store::Postgres(PgStore::open(&url).await?)),
        }
    }

    /// Backs up the database named by `url` into a new file at `destination` without
    /// opening a store on it (no migration, no write): an online backup, safe while a
    /// foreman runs on it. See [`Store::backup`].
    pub async fn backup_database(url: &str, destination: &Path) -> Result<BackupReport> {
        match parse_location(url)? {
            Location::SqliteFile(path) => SqliteStore::backup_file(&path, destination).await,
            Location::Postgres(url) => Err(postgres::backup_unsupported(&postgres::describe(
                &postgres::parse_url(&url)?,
            ))),
        }
    }

    /// Copies the database as one consistent snapshot into a new file at
    /// `destination` while the store keeps working; the copy opens as a foreman
    /// database with every job committed when the snapshot was taken. An existing
    /// `destination` is refused ([`Error::Backup`]).
    pub async fn backup(&self, destination: &Path) -> Result<BackupReport> {
        match self {
            Store::Sqlite(store) => store.backup(destination).await,
            Store::Postgres(store) => Err(store.backup_unsupported()),
        }
    }

    /// Where the data is, for people: the database file's absolute path.
    pub fn location(&self) -> String {
        match self {
            Store::Sqlite(store) => std::path::absolute(store.path())
                .unwrap_or_else(|_| store.path().to_owned())
                .display()
                .to_string(),
            Store::Postgres(store) => store.location().to_owned(),
        }
    }

    /// Whether other processes may write this database while the store runs (PostgreSQL,
    /// built for several instances), so that startup must leave other owners' running jobs
    /// alone and webhook deliveries must be claimed ([`Store::claim_webhooks`]). A SQLite
    /// file has one foreman process.
    pub fn is_shared(&self) -> bool {
        matches!(self, Store::Postgres(_))
    }

    /// Opens a session that hears every instance's job signals (new work, state
    /// changes, ends, cancel requests), sent at the commit of the change; `None` on
    /// SQLite, whose one process signals in memory.
    pub async fn listen(&self) -> Result<Option<PgSignals>> {
        match self {
            Store::Sqlite(_) => Ok(None),
            Store::Postgres(store) => store.listen().await.map(Some),
        }
    }

    /// The schema version recorded in the database.
    pub async fn schema_version(&self) -> Result<i64> {
        match self {
            Store::Sqlite(store) => store.schema_version().await,
            Store::Postgres(store) => store.schema_version().await,
        }
    }

    /// Commits a durable write that changes nothing a job reads, through the same path
    /// as every write: `Ok` means the store can write now (readiness).
    pub async fn probe_write(&self) -> Result<()> {
        match self {
            Store::Sqlite(store) => store.probe_write().await,
            Store::Postgres(store) => store.probe_write().await,
        }
    }

    /// Gives at most `max_pages` pages that deleted rows left free back to the file
    /// system; returns how many. Call again while it returns `max_pages`.
    pub async fn reclaim_space(&self, max_pages: u32) -> Result<u64> {
        match self {
            Store::Sqlite(store) => store.reclaim_space(max_pages).await,
            // PostgreSQL's autovacuum looks after the space of deleted rows.
            Store::Postgres(_) => Ok(0),
        }
    }

    /// Closes the store's connections; calls made afterwards fail.
    pub async fn close(&self) {
        match self {
            Store::Sqlite(store) => store.close().await,
            Store::Postgres(store) => store.close().await,
        }
    }

    /// Records a new queued job, eligible at once (`run_after = now`).
    ///
    /// With an idempotency key that is already taken, nothing is inserted and the existing
    /// job comes back with `created: false`, also under concurrent duplicate submits.
    pub async fn enqueue(&self, new_job: NewJob, now: i64) -> Result<Enqueued> {
        match self {
            Store::Sqlite(store) => store.enqueue(new_job, now, None).await,
            Store::Postgres(store) => store.enqueue(new_job, now, None).await,
        }
    }

    /// Like [`Store::enqueue`], but refuses with [`Error::QueueFull`] when `max_queued`
    /// jobs are queued already. The count and the insert are one step: concurrent
    /// enqueues never take the queue past the limit. A duplicate idempotency key still
    /// returns its job when the queue is full.
    pub async fn enqueue_within(
        &self,
        new_job: NewJob,
        now: i64,
        max_queued: u64,
    ) -> Result<Enqueued> {
        match self {
            Store::Sqlite(store) => store.enqueue(new_job, now, Some(max_queued)).await,
            Store::Postgres(store) => store.enqueue(new_job, now, Some(max_queued)).await,
        }
    }

    /// One entry per model that has eligible jobs (queued, `run_after <= now`), ordered by
    /// model name. The worker asks before every job, so a backend may answer from a copy
    /// in memory that follows its own writes; rows written by another process then show
    /// up within a few seconds (two for SQLite).
    pub async fn queue_heads(&self, now: i64) -> Result<Vec<QueueHead>> {
        match self {
            Store::Sqlite(store) => store.queue_heads(now).await,
            Store::Postgres(store) => store.queue_heads(now).await,
        }
    }

    /// Up to `limit` queued jobs (eligible or not, in no order), with what ranking
    /// needs and no payload: for forecasting when they run. Answered like
    /// [`Store::queue_heads`], from a copy in memory where the backend keeps one.
    pub async fn queued_jobs(&self, limit: usize) -> Result<Vec<QueuedJob>> {
        match self {
            Store::Sqlite(store) => store.queued_jobs(limit).await,
            Store::Postgres(store) => store.queued_jobs(limit).await,
        }
    }

    /// How many jobs are queued, eligible or not.
    pub async fn queue_depth(&self) -> Result<u64> {
        match self {
            Store::Sqlite(store) => store.queue_depth().await,
            Store::Postgres(store) => store.queue_depth().await,
        }
    }

    /// Queued jobs (eligible or not) grouped by model and priority, with each group's
    /// oldest `created_at`; ordered by model, then priority, highest first. Reads only
    /// the queued rows (a partial index), for the operator views.
    pub async fn queue_summary(&self) -> Result<Vec<QueueGroup>> {
        match self {
            Store::Sqlite(store) => store.queue_summary().await,
            Store::Postgres(store) => store.queue_summary().await,
        }
    }

    /// How long the store's commits took so far (see [`CommitTimes`]).
    pub fn commit_times(&self) -> CommitTimesSnapshot {
        match self {
            Store::Sqlite(store) => store.commit_times(),
            Store::Postgres(store) => store.commit_times(),
        }
    }

    /// The jobs this handle's store finished by itself (recovery, rescue, abandoned sync
    /// jobs), per (kind, outcome): see [`FinishedTally`].
    pub fn finished_by_store(
        &self,
    ) -> std::collections::BTreeMap<(&'static str, &'static str), u64> {
        match self {
            Store::Sqlite(store) => store.finished_by_store.snapshot(),
            Store::Postgres(store) => store.finished_by_store.snapshot(),
        }
    }

    /// How many queued jobs would run before this one in plain priority-then-age order
    /// (0 = next); `None` if the job is not queued.
    pub async fn queue_position(&self, id: JobId) -> Result<Option<u64>> {
        match self {
            Store::Sqlite(store) => store.queue_position(id).await,
            Store::Postgres(store) => store.queue_position(id).await,
        }
    }

    /// `queued → running` if the job is still queued and eligible: counts an attempt, sets the
    /// lease and, on the first attempt, `started_at`. `None` if another worker got it first,
    /// it was cancelled, or it is not eligible yet.
    pub async fn claim(&self, params: ClaimParams) -> Result<Option<Job>> {
        match self {
            Store::Sqlite(store) => store.claim(params).await,
            Store::Postgres(store) => store.claim(params).await,
        }
    }

    /// [`Store::claim`], then the queue heads as they are after it
    /// ([`Store::queue_heads`] at `params.now`), for a caller that decides again soon: on
    /// PostgreSQL both in one round trip. The heads are `None` when their read failed
    /// after the claim (the claim's outcome stands); an error means the claim failed.
    pub async fn claim_and_read_heads(
        &self,
        params: ClaimParams,
    ) -> Result<(Option<Job>, Option<Vec<QueueHead>>)> {
        match self {
            Store::Sqlite(store) => {
                let now = params.now;
                let claimed = store.claim(params).await?;
                Ok((claimed, store.queue_heads(now).await.ok()))
            }
            Store::Postgres(store) => store.claim_and_read_heads(params).await,
        }
    }

    /// Takes or renews `lease` for `owner` (an instance id) until `now + ttl_ms`, in one
    /// statement: it is this owner's afterwards if it was free, already this owner's, or
    /// expired at `now`. True when `owner` holds it; false when another owner's lease runs.
    pub async fn acquire_lease(
        &self,
        lease: Lease<'_>,
        owner: &str,
        now: i64,
        ttl_ms: i64,
    ) -> Result<bool> {
        match self {
            Store::Sqlite(store) => store.acquire_lease(lease, owner, now, ttl_ms).await,
            Store::Postgres(store) => store.acquire_lease(lease, owner, now, ttl_ms).await,
        }
    }

    /// Gives `lease` up if `owner` holds it (a clean shutdown), so another instance takes it
    /// at once instead of after its expiry. True when a lease was released.
    pub async fn release_lease(&self, lease: Lease<'_>, owner: &str) -> Result<bool> {
        match self {
            Store::Sqlite(store) => store.release_lease(lease, owner).await,
            Store::Postgres(store) => store.release_lease(lease, owner).await,
        }
    }

    /// Appends one batch of a running job's output for readers on other instances, and
    /// signals `out:ID` at its commit. Only on a shared store ([`Error::NotShared`] on
    /// SQLite, whose one process relays output in memory).
    pub async fn append_output(&self, id: JobId, batch: &OutputBatch) -> Result<()> {
        match self {
            Store::Sqlite(_) => Err(Error::NotShared),
            Store::Postgres(store) => store.append_output(id, batch).await,
        }
    }

    /// The output batches of job `id` after `after` (all of them for `None`), in order;
    /// always empty on SQLite.
    pub async fn read_output(
        &self,
        id: JobId,
        after: Option<OutputCursor>,
    ) -> Result<Vec<OutputBatch>> {
        match self {
            Store::Sqlite(_) => Ok(Vec::new()),
            Store::Postgres(store) => store.read_output(id, after).await,
        }
    }

    /// Deletes the output batches of jobs finished before `before`; how many went.
    /// Nothing to do on SQLite.
    pub async fn prune_output(&self, before: i64) -> Result<u64> {
        match self {
            Store::Sqlite(_) => Ok(0),
            Store::Postgres(store) => store.prune_output(before).await,
        }
    }

    /// The recorded holder of `lease`, expired or not; `None` if nobody took it or it was
    /// released.
    pub async fn lease_holder(&self, lease: Lease<'_>) -> Result<Option<LeaseHolder>> {
        match self {
            Store::Sqlite(store) => store.lease_holder(lease).await,
            Store::Postgres(store) => store.lease_holder(lease).await,
        }
    }

    /// Extends the lease to `now + lease_for_ms` iff the job is still running this attempt
    /// for this owner. False means the worker has lost the job and must stop.
    pub async fn heartbeat(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        now: i64,
        lease_for_ms: i64,
    ) -> Result<bool> {
        match self {
            Store::Sqlite(store) => store.heartbeat(id, attempt, owner, now, lease_for_ms).await,
            Store::Postgres(store) => store.heartbeat(id, attempt, owner, now, lease_for_ms).await,
        }
    }

    /// `running(attempt, owner) → succeeded` with the final response body. `None` (and no
    /// change) for a stale attempt or another owner.
    ///
    /// A run's outcome (this, `complete_with_artifacts`, `fail`, `retry_or_fail`,
    /// `requeue`, `finish_cancelled`) is committed when the call returns, so a crash of
    /// the process keeps it; on SQLite it reaches the disk with the next durable commit,
    /// within 50 ms (a power cut before that runs the job again), on PostgreSQL at once.
    pub async fn complete(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        result: String,
        now: i64,
    ) -> Result<Option<Job>> {
        match self {
            Store::Sqlite(store) => store.complete(id, attempt, owner, result, now).await,
            Store::Postgres(store) => store.complete(id, attempt, owner, result, now).await,
        }
    }

    /// Like `complete`, for a result kept in files: the row keeps no result and
    /// lists the files (`artifacts`, JSON) instead. Fenced by the attempt and the owner the
    /// same way.
    pub async fn complete_with_artifacts(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        artifacts: String,
        now: i64,
    ) -> Result<Option<Job>> {
        match self {
            Store::Sqlite(store) => {
                store
                    .complete_with_artifacts(id, attempt, owner, artifacts, now)
                    .await
            }
            Store::Postgres(store) => {
                store
                    .complete_with_artifacts(id, attempt, owner, artifacts, now)
                    .await
            }
        }
    }

    /// `running(attempt, owner) → failed`, terminally. `None` for a stale attempt or another
    /// owner.
    pub async fn fail(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        failure: JobFailure,
        now: i64,
    ) -> Result<Option<Job>> {
        match self {
            Store::Sqlite(store) => store.fail(id, attempt, owner, failure, now).await,
            Store::Postgres(store) => store.fail(id, attempt, owner, failure, now).await,
        }
    }

    /// `running(attempt, owner) → queued` at `run_after` if attempts remain, else `failed`.
    /// The failure is recorded either way (on a queued job, as the previous attempt's error).
    /// If a cancel was requested meanwhile, the job is cancelled instead. `None` for a stale
    /// attempt or another owner.
    pub async fn retry_or_fail(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        failure: JobFailure,
        run_after: i64,
        now: i64,
    ) -> Result<Option<Job>> {
        match self {
            Store::Sqlite(store) => {
                store
                    .retry_or_fail(id, attempt, owner, failure, run_after, now)
                    .await
            }
            Store::Postgres(store) => {
                store
                    .retry_or_fail(id, attempt, owner, failure, run_after, now)
                    .await
            }
        }
    }

    /// `running(attempt, owner) → queued` without consuming the attempt, for a graceful
    /// shutdown. The next claim reuses this attempt number, so the caller must drop the job
    /// afterwards. Cancelled instead if a cancel was requested. `None` for a stale attempt or
    /// another owner.
    pub async fn requeue(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        now: i64,
    ) -> Result<Option<Job>> {
        match self {
            Store::Sqlite(store) => store.requeue(id, attempt, owner, now).await,
            Store::Postgres(store) => store.requeue(id, attempt, owner, now).await,
        }
    }

    /// Cancels a queued job outright, or asks the worker of a running one to abort it;
    /// either way `reason` is recorded as the job's failure (a running job that
    /// succeeds before the worker aborts it clears it). Atomic with respect to claims: a job is never both claimed and
    /// reported cancelled.
    pub async fn cancel(&self, id: JobId, now: i64, reason: JobFailure) -> Result<CancelOutcome> {
        match self {
            Store::Sqlite(store) => store.cancel(id, now, reason).await,
            Store::Postgres(store) => store.cancel(id, now, reason).await,
        }
    }

    /// `running(attempt, owner) → cancelled`, after the worker aborted the attempt. `None`
    /// for a stale attempt or another owner.
    pub async fn finish_cancelled(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        now: i64,
    ) -> Result<Option<Job>> {
        match self {
            Store::Sqlite(store) => store.finish_cancelled(id, attempt, owner, now).await,
            Store::Postgres(store) => store.finish_cancelled(id, attempt, owner, now).await,
        }
    }

    /// At startup of a single instance, every running job belongs to a dead process: each goes
    /// back to queued without spending an attempt (the interruption counts in
    /// `interruptions` instead), or to failed (status 500) at its [`MAX_INTERRUPTIONS`]th
    /// interruption, or to cancelled if a cancel was requested. Returns how many were touched.
    /// It presents no attempt or owner: it acts for owners that are gone.
    pub async fn recover_running(&self, now: i64) -> Result<u64> {
        match self {
            Store::Sqlite(store) => store.recover_running(now).await,
            Store::Postgres(store) => store.recover_running(None, now).await,
        }
    }

    /// At startup of a single instance, cancels every unfinished synchronous job (see
    /// [`NewJob::sync`]): its caller's connection died with the process that accepted
    /// it, so nobody can be answered, and running it would only cost GPU time. The job
    /// records why (status 499). Returns how many were cancelled.
    pub async fn abandon_sync_jobs(&self, now: i64) -> Result<u64> {
        match self {
            Store::Sqlite(store) => store.abandon_sync_jobs(now).await,
            Store::Postgres(store) => store.abandon_sync_jobs(now).await,
        }
    }

    /// This handle, recording `instance` (an instance id) as [`Job::accepted_by`] on every
    /// job it enqueues, so that the instance abandons only its own synchronous jobs when
    /// it starts again ([`Store::abandon_sync_jobs_of`]).
    pub fn with_instance(self, instance: &str) -> Store {
        match self {
            Store::Sqlite(store) => Store::Sqlite(store.with_instance(instance)),
            Store::Postgres(store) => Store::Postgres(store.with_instance(instance)),
        }
    }

    /// At startup of one of several instances on a shared database: the unfinished
    /// synchronous jobs that `instance` accepted lost their callers with its previous
    /// process. Queued ones are cancelled (status 499 and why); running ones, which
    /// another instance may be running, are asked to stop (cancel requested, with the same
    /// reason): their runner ends them cancelled, and a dead runner's job is cancelled when
    /// it is taken back. Other instances' jobs are left alone. Returns how many changed.
    pub async fn abandon_sync_jobs_of(&self, instance: &str, now: i64) -> Result<u64> {
        match self {
            Store::Sqlite(store) => store.abandon_sync_jobs_of(instance, now).await,
            Store::Postgres(store) => store.abandon_sync_jobs_of(instance, now).await,
        }
    }

    /// The treatment of [`Store::abandon_sync_jobs_of`] for the unfinished synchronous
    /// jobs accepted before `accepted_before` by an instance that holds no live
    /// [`Lease::Instance`] at `now` (it stopped, or died and did not come back), or by
    /// no recorded instance: their callers were connected there. For the holder of the
    /// janitor's lease on a shared database. Returns how many changed.
    pub async fn abandon_orphaned_sync_jobs(&self, now: i64, accepted_before: i64) -> Result<u64> {
        match self {
            Store::Sqlite(store) => store.abandon_orphaned_sync_jobs(now, accepted_before).await,
            Store::Postgres(store) => store.abandon_orphaned_sync_jobs(now, accepted_before).await,
        }
    }

    /// The running jobs on `target`, whoever runs them (see [`Occupant`]).
    pub async fn occupants(&self, target: &str) -> Result<Vec<Occupant>> {
        match self {
            Store::Sqlite(store) => store.occupants(target).await,
            Store::Postgres(store) => store.occupants(target).await,
        }
    }

    /// [`Store::recover_running`] for the running jobs whose lease owner starts with
    /// `owner_prefix` only: an instance that restarts with the same instance id takes back
    /// its own previous jobs and leaves those of other live instances on a shared
    /// (PostgreSQL) database alone; theirs are rescued when their leases expire
    /// ([`Store::rescue_expired`]). Lease owners are `instance/target/slot`, so pass
    /// `"instance/"`.
    pub async fn recover_running_owned(&self, owner_prefix: &str, now: i64) -> Result<u64> {
        match self {
            Store::Sqlite(store) => store.recover_running_owned(owner_prefix, now).await,
            Store::Postgres(store) => store.recover_running(Some(owner_prefix), now).await,
        }
    }

    /// The same treatment as [`Store::recover_running`] for running jobs whose lease expired
    /// before `now`. Returns how many were touched.
    pub async fn rescue_expired(&self, now: i64) -> Result<u64> {
        match self {
            Store::Sqlite(store) => store.rescue_expired(now).await,
            Store::Postgres(store) => store.rescue_expired(now).await,
        }
    }

    /// Deletes at most `limit` terminal jobs with `finished_at < before`, oldest first.
    /// Returns how many were deleted; call again while it returns `limit`.
    pub async fn prune_finished(&self, before: i64, limit: u32) -> Result<u64> {
        match self {
            Store::Sqlite(store) => store.prune_finished(before, limit).await,
            Store::Postgres(store) => store.prune_finished(before, limit).await,
        }
    }

    /// The job with this id, if it exists (pruned jobs do not).
    pub async fn get(&self, id: JobId) -> Result<Option<Job>> {
        match self {
            Store::Sqlite(store) => store.get(id).await,
            Store::Postgres(store) => store.get(id).await,
        }
    }

    /// The jobs with these ids, in one query, in no particular order; an id with no job
    /// (never enqueued, or pruned) is simply absent. Meant for a reader of many known
    /// jobs at once (a batch's lines): a few hundred ids per call.
    pub async fn get_many(&self, ids: &[JobId]) -> Result<Vec<Job>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        match self {
            Store::Sqlite(store) => store.get_many(ids).await,
            Store::Postgres(store) => store.get_many(ids).await,
        }
    }

    /// Jobs matching every given filter, newest (highest id) first, at most `limit`.
    pub async fn list(&self, params: ListParams) -> Result<Vec<Job>> {
        match self {
            Store::Sqlite(store) => store.list(params).await,
            Store::Postgres(store) => store.list(params).await,
        }
    }

    /// Webhook deliveries waiting to be sent by `now`, oldest first, at most `limit`.
    pub async fn due_webhooks(&self, now: i64, limit: u32) -> Result<Vec<WebhookDelivery>> {
        match self {
            Store::Sqlite(store) => store.due_webhooks(now, limit).await,
            Store::Postgres(store) => store.due_webhooks(now, limit).await,
        }
    }

    /// Claims up to `limit` deliveries due by `now`, oldest due first, for one attempt
    /// each: their due time moves to `now + lease_for_ms`, so no other dispatcher (of this
    /// or another instance) gets them until the attempt is recorded or the lease lapses
    /// (a dispatcher that died). The returned rows show the lease's end as
    /// `next_attempt_at`. Choose a lease longer than an attempt can take; a late record of
    /// an attempt is still fenced by [`Store::record_webhook_attempt`].
    pub async fn claim_webhooks(
        &self,
        now: i64,
        limit: u32,
        lease_for_ms: i64,
    ) -> Result<Vec<WebhookDelivery>> {
        match self {
            Store::Sqlite(store) => store.claim_webhooks(now, limit, lease_for_ms).await,
            Store::Postgres(store) => store.claim_webhooks(now, limit, lease_for_ms).await,
        }
    }

    /// Records attempt number `attempt.attempt` of a pending delivery and moves it on
    /// (delivered, failed, or due again later), in one transaction. False when the
    /// delivery was not pending at the previous attempt number (a stale dispatcher).
    pub async fn record_webhook_attempt(
        &self,
        delivery_id: &str,
        attempt: &WebhookAttempt,
        outcome: AttemptOutcome,
    ) -> Result<bool> {
        match self {
            Store::Sqlite(store) => {
                store
                    .record_webhook_attempt(delivery_id, attempt, outcome)
                    .await
            }
            Store::Postgres(store) => {
                store
                    .record_webhook_attempt(delivery_id, attempt, outcome)
                    .await
            }
        }
    }

    /// A job's webhook deliveries with their attempt logs.
    pub async fn webhooks_for_job(&self, job_id: JobId) -> Result<Vec<WebhookDelivery>> {
        match self {
            Store::Sqlite(store) => store.webhooks_for_job(job_id).await,
            Store::Postgres(store) => store.webhooks_for_job(job_id).await,
        }
    }
}

/// Splits `url` into a backend and its address without touching the file system.
fn parse_location(url: &str) -> Result<Location> {
    let url = url.trim();
    if url.is_empty() {
        return Err(Error::InvalidUrl {
            reason: "it is empty".to_owned(),
        });
    }
    let path = if let Some((scheme, rest)) = split_scheme(url) {
        match scheme.to_ascii_lowercase().as_str() {
            "sqlite" => rest,
            "postgres" | "postgresql" => {
                // tokio-postgres reads the scheme in lower case only.
                let url = format!("{}://{rest}", scheme.to_ascii_lowercase());
                postgres::parse_url(&url)?;
                return Ok(Location::Postgres(url));
            }
            // The scheme only: the rest may hold a password.
            other => {
                return Err(Error::InvalidUrl {
                    reason: format!("unknown scheme {other:?}"),
                });
            }
        }
    } else if let Some(rest) = strip_prefix_ignore_case(url, "sqlite:") {
        rest
    } else if strip_prefix_ignore_case(url, "postgres:").is_some()
        || strip_prefix_ignore_case(url, "postgresql:").is_some()
    {
        return Err(Error::InvalidUrl {
            reason: "a PostgreSQL url starts with postgres:// or postgresql://".to_owned(),
        });
    } else {
        url
    };

    if path.is_empty() {
        return Err(Error::InvalidUrl {
            reason: "it names no file".to_owned(),
        });
    }
    if path == ":memory:" || path.starts_with("file::memory:") {
        return Err(Error::InvalidUrl {
            reason: "an in-memory database is not durable".to_owned(),
        });
    }
    if path != url && path.contains('?') {
        return Err(Error::InvalidUrl {
            reason: "sqlite url parameters are not supported; settings are fixed by foreman"
                .to_owned(),
        });
    }
    Ok(Location::SqliteFile(PathBuf::from(path)))
}

/// `scheme://rest` → `(scheme, rest)` when `scheme` is a well-formed URL scheme.
fn split_scheme(url: &str) -> Option<(&str, &str)> {
    let (scheme, rest) = url.split_once("://")?;
    let mut chars = scheme.chars();
    let well_formed = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    well_formed.then_some((scheme, rest))
}

fn strip_prefix_ignore_case<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
    let head = text.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &text[prefix.len()..])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sqlite(path: &str) -> Location {
        Location::SqliteFile(PathBuf::from(path))
    }

    #[test]
    fn sqlite_forms_name_the_same_file() {
        assert_eq!(parse_location("jobs.db").ok(), Some(sqlite("jobs.db")));
        assert_eq!(
            parse_location("/var/lib/foreman/jobs.db").ok(),
            Some(sqlite("/var/lib/foreman/jobs.db"))
        );
        assert_eq!(
            parse_location("sqlite://jobs.db").ok(),
            Some(sqlite("jobs.db"))
        );
        assert_eq!(
            parse_location("sqlite:///var/jobs.db").ok(),
            Some(sqlite("/var/jobs.db"))
        );
        assert_eq!(
            parse_location("sqlite:jobs.db").ok(),
            Some(sqlite("jobs.db"))
        );
        assert_eq!(
            parse_location("SQLITE:jobs.db").ok(),
            Some(sqlite("jobs.db"))
        );
    }

    #[test]
    fn postgres_urls_select_postgres() {
        for url in [
            "postgres://foreman:secret@db/foreman",
            "postgresql://db/foreman",
            "POSTGRES://db:5433/foreman?connect_timeout=3",
        ] {
            assert_eq!(
                parse_location(url).ok(),
                Some(Location::Postgres(url.replacen("POSTGRES", "postgres", 1)))
            );
        }
        let error = parse_location("postgres:foreman").unwrap_err();
        assert!(matches!(error, Error::InvalidUrl { .. }), "{error}");
        let error = parse_location("postgres://foreman:secret@db/foreman?bogus=1").unwrap_err();
        assert!(matches!(error, Error::InvalidUrl { .. }), "{error}");
        assert!(!error.to_string().contains("secret"), "{error}");
    }

    #[test]
    fn postgres_locations_never_show_the_password() {
        let config = postgres::parse_url("postgres://foreman:secret@db:5433/jobs").unwrap();
        assert_eq!(
            postgres::describe(&config),
            "postgres://foreman@db:5433/jobs"
        );
        let message = postgres::backup_unsupported(&postgres::describe(&config)).to_string();
        assert!(message.contains("pg_dump"), "{message}");
        assert!(
            message.contains("postgres://foreman@db:5433/jobs"),
            "{message}"
        );
        assert!(!message.contains("secret"), "{message}");
    }

    #[test]
    fn other_inputs_are_refused_with_the_valid_forms() {
        for url in [
            "",
            "  ",
            "mysql://root:secret@x/db",
            "sqlite://",
            "sqlite:",
            ":memory:",
            "sqlite::memory:",
            "sqlite://jobs.db?mode=rwc",
        ] {
            let error = parse_location(url).unwrap_err();
            assert!(matches!(error, Error::InvalidUrl { .. }), "{url:?}");
            let message = error.to_string();
            assert!(message.contains("sqlite://PATH"), "{message}");
            assert!(!message.contains("secret"), "{message}");
        }
    }
}
