//! The SQLite dialect's SQL, one constant per statement.
//!
//! Every state change is a single UPDATE guarded by the state it expects (and, for a running
//! job, the attempt number and the lease owner that fence out stale workers and other
//! instances), so the row count or the RETURNING row tells the caller whether the change
//! happened. Parameters are numbered (`?1`) so one value can appear several times; a fenced
//! statement always takes ?1 id, ?2 attempt, ?3 owner.

/// Inserts a queued job; with an idempotency key already present it inserts nothing and
/// returns no row. ?1 id, ?2 kind, ?3 model, ?4 payload, ?5 priority, ?6 max_attempts,
/// ?7 now, ?8 idempotency_key, ?9 webhook_url, ?10 metadata, ?11 load_options, ?12 sync,
/// ?13 accepted_by.
pub(super) const INSERT_JOB: &str = "
    INSERT INTO jobs (id, kind, model, payload, state, priority, attempts, max_attempts,
                      run_after, idempotency_key, webhook_url, metadata, created_at,
                      load_options, sync, accepted_by)
    VALUES (?1, ?2, ?3, ?4, 'queued', ?5, 0, ?6, ?7, ?8, ?9, ?10, ?7, ?11, ?12, ?13)
    ON CONFLICT (idempotency_key) DO NOTHING
    RETURNING *";

pub(super) const SELECT_BY_IDEMPOTENCY_KEY: &str = "SELECT * FROM jobs WHERE idempotency_key = ?1";

pub(super) const SELECT_BY_ID: &str = "SELECT * FROM jobs WHERE id = ?1";

/// Every queued job's rank, for the queue mirror: one pass over the covering partial
/// queue index, never the table.
pub(super) const QUEUED_JOBS: &str = "
    SELECT id, model, load_options, priority, created_at, run_after
    FROM jobs INDEXED BY jobs_queued_by_model
    WHERE state = 'queued'";

pub(super) const QUEUE_DEPTH: &str = "SELECT count(*) FROM jobs WHERE state = 'queued'";

/// Queued jobs per model and priority, with the oldest of each: a pass over the partial
/// index of queued jobs, never the table.
pub(super) const QUEUE_SUMMARY: &str = "
    SELECT model, priority, count(*), min(created_at)
    FROM jobs INDEXED BY jobs_queued_by_model
    WHERE state = 'queued'
    GROUP BY model, priority
    ORDER BY model, priority DESC";

/// How many queued jobs rank before ?1 in plain priority-then-age order; no row if ?1 is not
/// queued. Split into three counts so each is one range of the queue-order index.
pub(super) const QUEUE_POSITION: &str = "
    SELECT (
        SELECT count(*) FROM jobs INDEXED BY jobs_queued_order
        WHERE state = 'queued' AND priority > target.priority
    ) + (
        SELECT count(*) FROM jobs INDEXED BY jobs_queued_order
        WHERE state = 'queued' AND priority = target.priority
          AND created_at < target.created_at
    ) + (
        SELECT count(*) FROM jobs INDEXED BY jobs_queued_order
        WHERE state = 'queued' AND priority = target.priority
          AND created_at = target.created_at AND id < target.id
    )
    FROM jobs AS target
    WHERE target.id = ?1 AND target.state = 'queued'";

/// queued → running. ?1 id, ?2 owner, ?3 lease expiry, ?4 now, ?5 target.
pub(super) const CLAIM: &str = "
    UPDATE jobs
    SET state = 'running',
        attempts = attempts + 1,
        lease_owner = ?2,
        target = ?5,
        lease_expires_at = ?3,
        started_at = coalesce(started_at, ?4)
    WHERE id = ?1 AND state = 'queued' AND run_after <= ?4
    RETURNING *";

/// Extends a lease, never shortening it (a late heartbeat may carry an older `now`).
/// ?1 id, ?2 attempt, ?3 owner, ?4 new expiry.
pub(super) const HEARTBEAT: &str = "
    UPDATE jobs
    SET lease_expires_at = max(lease_expires_at, ?4)
    WHERE id = ?1 AND state = 'running' AND attempts = ?2 AND lease_owner = ?3";

/// running(attempt, owner) → succeeded. ?1 id, ?2 attempt, ?3 owner, ?4 result (NULL when
/// it lives in files), ?5 now, ?6 artifacts (JSON, NULL for none).
pub(super) const COMPLETE: &str = "
    UPDATE jobs
    SET state = 'succeeded',
        result = ?4,
        artifacts = ?6,
        failure_status = NULL,
        failure_message = NULL,
        finished_at = ?5,
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE id = ?1 AND state = 'running' AND attempts = ?2 AND lease_owner = ?3
    RETURNING *";

/// running(attempt, owner) → failed. ?1 id, ?2 attempt, ?3 owner, ?4 status, ?5 message,
/// ?6 now.
pub(super) const FAIL: &str = "
    UPDATE jobs
    SET state = 'failed',
        failure_status = ?4,
        failure_message = ?5,
        finished_at = ?6,
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE id = ?1 AND state = 'running' AND attempts = ?2 AND lease_owner = ?3
    RETURNING *";

/// running(attempt, owner) → queued at ?6 if attempts remain, else failed; cancelled instead
/// if a cancel was requested meanwhile. The failure is kept either way, as the last error.
/// ?1 id, ?2 attempt, ?3 owner, ?4 status, ?5 message, ?6 run_after, ?7 now.
pub(super) const RETRY_OR_FAIL: &str = "
    UPDATE jobs
    SET state = CASE
            WHEN cancel_requested = 1 THEN 'cancelled'
            WHEN attempts - interruptions < max_attempts THEN 'queued'
            ELSE 'failed'
        END,
        run_after = CASE
            WHEN cancel_requested = 0 AND attempts - interruptions < max_attempts THEN ?6
            ELSE run_after
        END,
        finished_at = CASE
            WHEN cancel_requested = 0 AND attempts - interruptions < max_attempts THEN NULL
            ELSE ?7
        END,
        failure_status = ?4,
        failure_message = ?5,
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE id = ?1 AND state = 'running' AND attempts = ?2 AND lease_owner = ?3
    RETURNING *";

/// running(attempt, owner) → queued, giving the attempt back; cancelled instead if a cancel
/// was requested. ?1 id, ?2 attempt, ?3 owner, ?4 now.
pub(super) const REQUEUE: &str = "
    UPDATE jobs
    SET state = CASE WHEN cancel_requested = 1 THEN 'cancelled' ELSE 'queued' END,
        attempts = CASE WHEN cancel_requested = 1 THEN attempts ELSE attempts - 1 END,
        finished_at = CASE WHEN cancel_requested = 1 THEN ?4 ELSE NULL END,
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE id = ?1 AND state = 'running' AND attempts = ?2 AND lease_owner = ?3
    RETURNING *";

/// queued → cancelled, with why as its failure. ?1 id, ?2 now, ?3 status, ?4 message.
pub(super) const CANCEL_QUEUED: &str = "
    UPDATE jobs
    SET state = 'cancelled', finished_at = ?2, failure_status = ?3, failure_message = ?4
    WHERE id = ?1 AND state = 'queued'
    RETURNING *";

/// Marks a running job for cancellation, with why as its failure (kept when the worker
/// finishes it cancelled; a success clears it). ?1 id, ?2 status, ?3 message.
pub(super) const CANCEL_RUNNING: &str = "
    UPDATE jobs
    SET cancel_requested = 1, failure_status = ?2, failure_message = ?3
    WHERE id = ?1 AND state = 'running'
    RETURNING *";

/// running(attempt, owner) → cancelled. ?1 id, ?2 attempt, ?3 owner, ?4 now.
pub(super) const FINISH_CANCELLED: &str = "
    UPDATE jobs
    SET state = 'cancelled',
        finished_at = ?4,
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE id = ?1 AND state = 'running' AND attempts = ?2 AND lease_owner = ?3
    RETURNING *";

/// The SET part shared by startup recovery and lease rescue: takes a running job away from its
/// (dead) worker. The interruption is not the job's failure, so it spends no attempt (it
/// counts in `interruptions` instead). Cancelled if a cancel was requested, failed with ?2 if
/// this is its ?4th interruption, else queued at once (?1 now) with ?3 as the last error.
macro_rules! take_back_running {
    () => {
        "
    UPDATE jobs
    SET state = CASE
            WHEN cancel_requested = 1 THEN 'cancelled'
            WHEN interruptions + 1 >= ?4 THEN 'failed'
            ELSE 'queued'
        END,
        finished_at = CASE
            WHEN cancel_requested = 1 OR interruptions + 1 >= ?4 THEN ?1
            ELSE NULL
        END,
        run_after = CASE
            WHEN cancel_requested = 1 OR interruptions + 1 >= ?4 THEN run_after
            ELSE ?1
        END,
        failure_status = CASE WHEN cancel_requested = 1 THEN failure_status ELSE 500 END,
        failure_message = CASE
            WHEN cancel_requested = 1 THEN failure_message
            WHEN interruptions + 1 >= ?4 THEN ?2
            ELSE ?3
        END,
        interruptions = interruptions + 1,
        lease_owner = NULL,
        lease_expires_at = NULL"
    };
}

/// Cancels the unfinished jobs of synchronous callers, whose connections died with the
/// process that accepted them (startup of a single instance). ?1 now, ?2 message.
pub(super) const ABANDON_SYNC: &str = "
    UPDATE jobs
    SET state = 'cancelled',
        finished_at = ?1,
        cancel_requested = 0,
        failure_status = 499,
        failure_message = ?2,
        lease_owner = NULL,
        lease_expires_at = NULL
    WHERE sync = 1 AND state IN ('queued', 'running')
    RETURNING *";

/// The SET part of abandoning synchronous jobs whose caller is gone, while other instances
/// may run them: a queued one is cancelled at once, a running one is asked to stop (its
/// runner, wherever it is, ends it cancelled; a dead runner's job is cancelled when it is
/// taken back). Either way the job records why (499, ?2). ?1 now.
macro_rules! abandon_sync {
    () => {
        "
    UPDATE jobs
    SET state = CASE WHEN state = 'queued' THEN 'cancelled' ELSE state END,
        finished_at = CASE WHEN state = 'queued' THEN ?1 ELSE finished_at END,
        cancel_requested = CASE WHEN state = 'running' THEN 1 ELSE 0 END,
        failure_status = 499,
        failure_message = ?2
    WHERE sync = 1
      AND (state = 'queued' OR (state = 'running' AND cancel_requested = 0))"
    };
}

/// The unfinished synchronous jobs instance ?3 accepted (its start: its callers' connections
/// died with its previous process). ?1 now, ?2 message.
pub(super) const ABANDON_SYNC_OF: &str = concat!(
    abandon_sync!(),
    "
      AND accepted_by = ?3
    RETURNING *"
);

/// The unfinished synchronous jobs accepted before ?3 by an instance that holds no live
/// instance lease at ?1 (stopped, or dead and never back), or by nobody recorded.
/// ?2 message.
pub(super) const ABANDON_ORPHANED_SYNC: &str = concat!(
    abandon_sync!(),
    "
      AND created_at < ?3
      AND NOT EXISTS (
          SELECT 1 FROM target_leases
          WHERE kind = 'instance' AND name = jobs.accepted_by AND expires_at > ?1)
    RETURNING *"
);

/// The running jobs on target ?1, with their lease owners.
pub(super) const OCCUPANTS: &str = "
    SELECT id, model, load_options, lease_owner FROM jobs
    WHERE state = 'running' AND target = ?1";

/// Every running job (startup of a single instance). ?1 now, ?2 and ?3 messages.
pub(super) const RECOVER_RUNNING: &str = concat!(
    take_back_running!(),
    "
    WHERE state = 'running'
    RETURNING *"
);

/// Running jobs whose lease owner starts with ?5 (startup of an instance that kept its id).
/// ?1 now, ?2 and ?3 messages.
pub(super) const RECOVER_RUNNING_OWNED: &str = concat!(
    take_back_running!(),
    "
    WHERE state = 'running' AND substr(lease_owner, 1, length(?5)) = ?5
    RETURNING *"
);

/// Running jobs whose lease lapsed before ?1 now. ?2 and ?3 messages.
pub(super) const RESCUE_EXPIRED: &str = concat!(
    take_back_running!(),
    "
    WHERE state = 'running' AND lease_expires_at < ?1
    RETURNING *"
);

/// Deletes up to ?2 terminal jobs that finished before ?1, oldest first. The schema allows
/// `finished_at` only on terminal jobs, so it alone selects them, along its own index.
pub(super) const PRUNE_FINISHED: &str = "
    DELETE FROM jobs
    WHERE id IN (
        SELECT id FROM jobs
        WHERE finished_at < ?1
        ORDER BY finished_at
        LIMIT ?2
    )";

/// Pending deliveries due by ?1, oldest due first, at most ?2.
pub(super) const DUE_WEBHOOKS: &str = "
    SELECT * FROM webhook_deliveries INDEXED BY webhook_deliveries_due
    WHERE state = 'pending' AND next_attempt_at <= ?1
    ORDER BY next_attempt_at, id
    LIMIT ?2";

/// Moves a claimed delivery's due time to the end of its claim's lease. ?1 id, ?2 lease end.
pub(super) const LEASE_WEBHOOK: &str =
    "UPDATE webhook_deliveries SET next_attempt_at = ?2 WHERE id = ?1 AND state = 'pending'";

/// Appends one attempt. ?1 delivery, ?2 attempt, ?3 at, ?4 status, ?5 latency, ?6 error,
/// ?7 the time of the next attempt (NULL when none follows).
pub(super) const INSERT_WEBHOOK_ATTEMPT: &str = "
    INSERT INTO webhook_attempts (delivery_id, attempt, at, status, latency_ms, error, retry_at)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";

/// Moves a pending delivery on after attempt ?2 (fenced: only the next attempt counts).
/// ?1 id, ?2 attempt, ?3 new state, ?4 next attempt time, ?5 finished_at (NULL while pending).
pub(super) const ADVANCE_WEBHOOK: &str = "
    UPDATE webhook_deliveries
    SET attempts = ?2, state = ?3, next_attempt_at = ?4, finished_at = ?5
    WHERE id = ?1 AND state = 'pending' AND attempts = ?2 - 1";

pub(super) const WEBHOOKS_FOR_JOB: &str =
    "SELECT * FROM webhook_deliveries WHERE job_id = ?1 ORDER BY created_at, id";

pub(super) const WEBHOOK_ATTEMPTS: &str =
    "SELECT * FROM webhook_attempts WHERE delivery_id = ?1 ORDER BY attempt";
