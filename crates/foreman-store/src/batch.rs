//! Files and batches beside the jobs: what OpenAI's Batch API keeps between calls.
//!
//! A file's bytes live on disk (the daemon writes them); the store keeps its record. A
//! batch is one row that its driver moves through OpenAI's states; its lines run as
//! ordinary jobs whose ids and idempotency keys are derived from the batch and the line,
//! so enqueueing a line again after a crash finds the same job, and finalisation reads
//! each line's outcome from its job.

use std::fmt;
use std::str::FromStr;

/// A stored file's record; its bytes are on disk under the data directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFile {
    /// `file-...`.
    pub id: String,
    /// OpenAI's `purpose`: `batch`, `batch_output`, ...
    pub purpose: String,
    pub filename: String,
    pub bytes: i64,
    /// Lines of JSONL content (non-empty lines).
    pub lines: i64,
    pub created_at: i64,
    /// When the janitor's leader removes the file (OpenAI's `expires_at`); `None` keeps it
    /// until it is deleted.
    pub expires_at: Option<i64>,
}

/// Where a batch is, with OpenAI's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BatchStatus {
    Validating,
    Failed,
    InProgress,
    Finalizing,
    Completed,
    Expired,
    Cancelling,
    Cancelled,
}

impl BatchStatus {
    pub const ALL: [BatchStatus; 8] = [
        BatchStatus::Validating,
        BatchStatus::Failed,
        BatchStatus::InProgress,
        BatchStatus::Finalizing,
        BatchStatus::Completed,
        BatchStatus::Expired,
        BatchStatus::Cancelling,
        BatchStatus::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            BatchStatus::Validating => "validating",
            BatchStatus::Failed => "failed",
            BatchStatus::InProgress => "in_progress",
            BatchStatus::Finalizing => "finalizing",
            BatchStatus::Completed => "completed",
            BatchStatus::Expired => "expired",
            BatchStatus::Cancelling => "cancelling",
            BatchStatus::Cancelled => "cancelled",
        }
    }

    /// A terminal batch never changes again.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            BatchStatus::Failed
                | BatchStatus::Completed
                | BatchStatus::Expired
                | BatchStatus::Cancelled
        )
    }
}

impl fmt::Display for BatchStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for BatchStatus {
    type Err = crate::ParseError;

    fn from_str(text: &str) -> Result<BatchStatus, crate::ParseError> {
        BatchStatus::ALL
            .into_iter()
            .find(|status| status.as_str() == text)
            .ok_or_else(|| crate::ParseError::State(text.to_owned()))
    }
}

/// A batch row. Times are unix milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Batch {
    /// `batch_...`.
    pub id: String,
    /// The route every line names, e.g. `/v1/chat/completions`.
    pub endpoint: String,
    pub input_file_id: String,
    pub completion_window: String,
    pub status: BatchStatus,
    /// What finalisation ends in: `completed`, `expired` or `cancelled` (set when the
    /// batch enters `finalizing` or `cancelling`).
    pub ending: Option<BatchStatus>,
    /// The client's metadata object as JSON text.
    pub metadata: Option<String>,
    /// Where the end of the batch is announced (foreman's extension).
    pub webhook_url: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
    pub in_progress_at: Option<i64>,
    pub finalizing_at: Option<i64>,
    pub completed_at: Option<i64>,
    pub failed_at: Option<i64>,
    pub expired_at: Option<i64>,
    pub cancelling_at: Option<i64>,
    pub cancelled_at: Option<i64>,
    pub total: i64,
    pub completed: i64,
    pub failed: i64,
    /// Lines enqueued as jobs so far (a prefix of the input's lines).
    pub enqueued: i64,
    /// The validation errors as JSON text (`[{code, message, param, line}]`).
    pub errors: Option<String>,
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    /// The end's webhook was delivered or given up on.
    pub webhook_done: bool,
    /// Who created the batch (the API key, or `None` when foreman runs open): its lines
    /// are that caller's jobs.
    pub caller: Option<crate::JobCaller>,
}

/// Arguments of `Store::list_files`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FileListParams {
    pub purpose: Option<String>,
    /// Only files after this id in the listing order.
    pub after: Option<String>,
    pub limit: u32,
    /// Oldest first (`order=asc`) instead of newest first.
    pub ascending: bool,
}

/// The columns of a batch row, in the order the decoders read them.
pub(crate) const BATCH_COLUMNS: &str = "id, endpoint, input_file_id, completion_window, status, \
     ending, metadata, webhook_url, created_at, expires_at, in_progress_at, finalizing_at, \
     completed_at, failed_at, expired_at, cancelling_at, cancelled_at, total, completed, failed, \
     enqueued, errors, output_file_id, error_file_id, webhook_done, caller, caller_weight";

/// The columns of a file row.
pub(crate) const FILE_COLUMNS: &str = "id, purpose, filename, bytes, lines, created_at, expires_at";

/// Statements in SQLite's placeholders; [`postgres`] turns `?` into `$`.
pub(crate) mod sql {
    pub(crate) const INSERT_FILE: &str =
        "INSERT INTO files (id, purpose, filename, bytes, lines, created_at, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (id) DO NOTHING";
    pub(crate) const DELETE_FILE: &str = "DELETE FROM files WHERE id = ?1";
    pub(crate) const INSERT_BATCH: &str = "INSERT INTO batches (id, endpoint, input_file_id,
         completion_window, status, ending, metadata, webhook_url, created_at, expires_at,
         in_progress_at, finalizing_at, completed_at, failed_at, expired_at, cancelling_at,
         cancelled_at, total, completed, failed, enqueued, errors, output_file_id, error_file_id,
         webhook_done, caller, caller_weight)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18,
                 ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27)";
    /// Writes every field a driver changes, only while the row is in the status the
    /// driver read (`?19`), so a cancel in between is not overwritten.
    pub(crate) const SAVE_BATCH: &str = "UPDATE batches SET status = ?2, ending = ?3,
         in_progress_at = ?4, finalizing_at = ?5, completed_at = ?6, failed_at = ?7,
         expired_at = ?8, cancelling_at = ?9, cancelled_at = ?10, total = ?11, completed = ?12,
         failed = ?13, enqueued = ?14, errors = ?15, output_file_id = ?16, error_file_id = ?17,
         webhook_done = ?18
         WHERE id = ?1 AND status = ?19";
    pub(crate) const CANCEL_BATCH: &str = "UPDATE batches
         SET status = 'cancelling', ending = 'cancelled', cancelling_at = ?2
         WHERE id = ?1 AND status IN ('validating', 'in_progress')";
    pub(crate) const SET_ENQUEUED: &str =
        "UPDATE batches SET enqueued = ?2 WHERE id = ?1 AND enqueued < ?2";

    /// `sql` in PostgreSQL's placeholders.
    pub(crate) fn postgres(sql: &str) -> String {
        sql.replace('?', "$")
    }
}

impl Batch {
    /// A batch just created: `validating`, no line counted, nothing written; the caller
    /// sets what the request carried (`metadata`, `webhook_url`, `caller`).
    pub fn validating(
        id: String,
        endpoint: String,
        input_file_id: String,
        created_at: i64,
        expires_at: i64,
    ) -> Batch {
        Batch {
            id,
            endpoint,
            input_file_id,
            completion_window: "24h".to_owned(),
            status: BatchStatus::Validating,
            ending: None,
            metadata: None,
            webhook_url: None,
            created_at,
            expires_at,
            in_progress_at: None,
            finalizing_at: None,
            completed_at: None,
            failed_at: None,
            expired_at: None,
            cancelling_at: None,
            cancelled_at: None,
            total: 0,
            completed: 0,
            failed: 0,
            enqueued: 0,
            errors: None,
            output_file_id: None,
            error_file_id: None,
            webhook_done: false,
            caller: None,
        }
    }
}

/// Checks what a batch row may hold before it is written.
pub(crate) fn check_batch(batch: &Batch) -> crate::Result<()> {
    if batch.id.is_empty() || batch.input_file_id.is_empty() {
        return Err(crate::Error::InvalidInput(
            "a batch needs an id and an input file".to_owned(),
        ));
    }
    if let Some(ending) = batch.ending
        && !matches!(
            ending,
            BatchStatus::Completed | BatchStatus::Expired | BatchStatus::Cancelled
        )
    {
        return Err(crate::Error::InvalidInput(format!(
            "a batch cannot end as {ending}"
        )));
    }
    Ok(())
}

/// Checks the jobs of a batch's lines before they are enqueued: each needs its own id
/// (the line's job is found again by it) and at least one attempt.
pub(crate) fn check_lines(jobs: &[crate::NewJob]) -> crate::Result<()> {
    if jobs
        .iter()
        .any(|job| job.id.is_none() || job.max_attempts == 0)
    {
        return Err(crate::Error::InvalidInput(
            "a batch line's job needs its own id and at least one attempt".to_owned(),
        ));
    }
    Ok(())
}

/// The Batch API's calls on either backend.
impl crate::Store {
    /// Records a file whose bytes are already on disk (synced). Recording an id again
    /// changes nothing, so a file written again after a crash is recorded once.
    pub async fn insert_file(&self, file: StoredFile) -> crate::Result<()> {
        match self {
            crate::Store::Sqlite(store) => store.insert_file(file).await,
            crate::Store::Postgres(store) => store.insert_file(file).await,
        }
    }

    /// The record of this file, if it exists.
    pub async fn get_file(&self, id: &str) -> crate::Result<Option<StoredFile>> {
        match self {
            crate::Store::Sqlite(store) => store.get_file(id).await,
            crate::Store::Postgres(store) => store.get_file(id).await,
        }
    }

    /// Files by id (newest first unless `ascending`), at most `limit`.
    pub async fn list_files(&self, params: FileListParams) -> crate::Result<Vec<StoredFile>> {
        match self {
            crate::Store::Sqlite(store) => store.list_files(params).await,
            crate::Store::Postgres(store) => store.list_files(params).await,
        }
    }

    /// Files whose `expires_at` is at or before `now`, soonest first, at most `limit`.
    pub async fn expired_files(&self, now: i64, limit: u32) -> crate::Result<Vec<StoredFile>> {
        match self {
            crate::Store::Sqlite(store) => store.expired_files(now, limit).await,
            crate::Store::Postgres(store) => store.expired_files(now, limit).await,
        }
    }

    /// Forgets a file's record; whether there was one.
    pub async fn delete_file(&self, id: &str) -> crate::Result<bool> {
        match self {
            crate::Store::Sqlite(store) => store.delete_file(id).await,
            crate::Store::Postgres(store) => store.delete_file(id).await,
        }
    }

    /// Records a new batch.
    pub async fn insert_batch(&self, batch: Batch) -> crate::Result<()> {
        match self {
            crate::Store::Sqlite(store) => store.insert_batch(batch).await,
            crate::Store::Postgres(store) => store.insert_batch(batch).await,
        }
    }

    /// The batch with this id, if it exists.
    pub async fn get_batch(&self, id: &str) -> crate::Result<Option<Batch>> {
        match self {
            crate::Store::Sqlite(store) => store.get_batch(id).await,
            crate::Store::Postgres(store) => store.get_batch(id).await,
        }
    }

    /// Batches newest first, those with an id below `after` only, at most `limit`.
    pub async fn list_batches(
        &self,
        after: Option<String>,
        limit: u32,
    ) -> crate::Result<Vec<Batch>> {
        match self {
            crate::Store::Sqlite(store) => store.list_batches(after, limit).await,
            crate::Store::Postgres(store) => store.list_batches(after, limit).await,
        }
    }

    /// Batches a driver still has work on: not terminal, or terminal with the end's
    /// webhook not yet done; oldest first.
    pub async fn open_batches(&self) -> crate::Result<Vec<Batch>> {
        match self {
            crate::Store::Sqlite(store) => store.open_batches().await,
            crate::Store::Postgres(store) => store.open_batches().await,
        }
    }

    /// Writes the fields a driver changes, if the row is still in `read_status` (the
    /// status the driver read): false when something else (a cancel) moved it.
    pub async fn save_batch(&self, batch: Batch, read_status: BatchStatus) -> crate::Result<bool> {
        match self {
            crate::Store::Sqlite(store) => store.save_batch(batch, read_status).await,
            crate::Store::Postgres(store) => store.save_batch(batch, read_status).await,
        }
    }

    /// Moves a `validating` or `in_progress` batch to `cancelling` (ending `cancelled`);
    /// false when it was in another status.
    pub async fn cancel_batch(&self, id: &str, now: i64) -> crate::Result<bool> {
        match self {
            crate::Store::Sqlite(store) => store.cancel_batch(id, now).await,
            crate::Store::Postgres(store) => store.cancel_batch(id, now).await,
        }
    }

    /// Enqueues a chunk of a batch's lines, each with its own id and idempotency key (a
    /// line enqueued before is found, not inserted again), and records that the first
    /// `enqueued` lines are in, in one commit. Returns the jobs that were new.
    pub async fn enqueue_batch_lines(
        &self,
        batch_id: &str,
        jobs: Vec<crate::NewJob>,
        enqueued: i64,
        now: i64,
    ) -> crate::Result<Vec<crate::Job>> {
        match self {
            crate::Store::Sqlite(store) => {
                store
                    .enqueue_batch_lines(batch_id, jobs, enqueued, now)
                    .await
            }
            crate::Store::Postgres(store) => {
                store
                    .enqueue_batch_lines(batch_id, jobs, enqueued, now)
                    .await
            }
        }
    }
}
