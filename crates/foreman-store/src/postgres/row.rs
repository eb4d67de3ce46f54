//! Decoding of PostgreSQL rows into the domain types: the one place that knows the column
//! layout of this backend's tables. Job queries name their columns ([`JOB_COLUMNS`]) so a
//! later migration adding a column cannot change what a statement returns.

use tokio_postgres::Row;

use crate::error::{Error, Result};
use crate::job::{Job, JobCaller, JobFailure, JobId, JobKind, JobState};
use crate::webhook::{DeliveryState, WebhookAttempt, WebhookDelivery};

/// Every column of `jobs` a `Job` is read from.
pub(super) const JOB_COLUMNS: &str = "id, kind, model, load_options, target, sync, interruptions, \
     payload, state, priority, attempts, max_attempts, lease_owner, lease_expires_at, run_after, \
     cancel_requested, result, failure_status, failure_message, idempotency_key, webhook_url, \
     metadata, artifacts, created_at, started_at, finished_at, accepted_by, caller, caller_weight";

/// [`JOB_COLUMNS`], each prefixed with `table.` (for an UPDATE ... FROM).
pub(super) fn qualified_columns(table: &str) -> String {
    JOB_COLUMNS
        .split(", ")
        .map(|column| format!("{table}.{column}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub(super) fn parse_id(text: &str) -> Result<JobId> {
    text.parse().map_err(|error| Error::CorruptRow {
        id: text.to_owned(),
        reason: format!("{error}"),
    })
}

/// Counts come back as `bigint`; they are never negative.
pub(super) fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_u32(value: i32, column: &str) -> Result<u32, String> {
    u32::try_from(value).map_err(|_| format!("{column} {value} is out of range"))
}

/// The caller a `jobs` or `batches` row records (its `caller` and `caller_weight`), or none.
pub(super) fn caller_from_row(row: &Row) -> Result<Option<JobCaller>, String> {
    let name: Option<String> = row.try_get("caller").map_err(|e| e.to_string())?;
    let weight: i32 = row.try_get("caller_weight").map_err(|e| e.to_string())?;
    Ok(match name {
        Some(name) => Some(JobCaller {
            name,
            weight: to_u32(weight, "caller_weight")?,
        }),
        None => None,
    })
}

/// Reads one `jobs` row selected with [`JOB_COLUMNS`].
pub(super) fn job_from_row(row: &Row) -> Result<Job> {
    let id_text: String = row.try_get("id")?;
    let corrupt = |reason: String| Error::CorruptRow {
        id: id_text.clone(),
        reason,
    };
    let id = parse_id(&id_text)?;
    let kind: JobKind = row
        .try_get::<_, String>("kind")?
        .parse()
        .map_err(|e| corrupt(format!("{e}")))?;
    let state: JobState = row
        .try_get::<_, String>("state")?
        .parse()
        .map_err(|e| corrupt(format!("{e}")))?;
    let failure_status: Option<i32> = row.try_get("failure_status")?;
    let failure_message: Option<String> = row.try_get("failure_message")?;
    let failure = match (failure_status, failure_message) {
        (Some(status), Some(message)) => Some(JobFailure {
            status: u16::try_from(status)
                .map_err(|_| corrupt(format!("failure_status {status} is not an HTTP status")))?,
            message,
        }),
        (None, None) => None,
        _ => {
            return Err(corrupt(
                "failure_status and failure_message must be set together".to_owned(),
            ));
        }
    };
    Ok(Job {
        id,
        kind,
        model: row.try_get("model")?,
        load_options: row.try_get("load_options")?,
        target: row.try_get("target")?,
        sync: row.try_get("sync")?,
        interruptions: to_u32(row.try_get("interruptions")?, "interruptions").map_err(&corrupt)?,
        payload: row.try_get("payload")?,
        state,
        priority: row.try_get("priority")?,
        attempts: to_u32(row.try_get("attempts")?, "attempts").map_err(&corrupt)?,
        max_attempts: to_u32(row.try_get("max_attempts")?, "max_attempts").map_err(&corrupt)?,
        lease_owner: row.try_get("lease_owner")?,
        lease_expires_at: row.try_get("lease_expires_at")?,
        run_after: row.try_get("run_after")?,
        cancel_requested: row.try_get("cancel_requested")?,
        result: row.try_get("result")?,
        failure,
        idempotency_key: row.try_get("idempotency_key")?,
        webhook_url: row.try_get("webhook_url")?,
        metadata: row.try_get("metadata")?,
        artifacts: row.try_get("artifacts")?,
        caller: caller_from_row(row).map_err(&corrupt)?,
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        accepted_by: row.try_get("accepted_by")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// Reads one `webhook_deliveries` row (its attempt log is read separately).
pub(super) fn delivery_from_row(row: &Row) -> Result<WebhookDelivery> {
    let id: String = row.try_get("id")?;
    let corrupt = |reason: String| Error::CorruptRow {
        id: id.clone(),
        reason,
    };
    let job_id: String = row.try_get("job_id")?;
    let state: String = row.try_get("state")?;
    Ok(WebhookDelivery {
        job_id: job_id.parse().map_err(|e| corrupt(format!("{e}")))?,
        url: row.try_get("url")?,
        payload: row.try_get("payload")?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| corrupt(format!("unknown delivery state {state:?}")))?,
        attempts: to_u32(row.try_get("attempts")?, "attempts").map_err(&corrupt)?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: row.try_get("created_at")?,
        finished_at: row.try_get("finished_at")?,
        log: Vec::new(),
        id,
    })
}

/// Reads one `webhook_attempts` row.
pub(super) fn attempt_from_row(row: &Row) -> Result<WebhookAttempt> {
    let status: Option<i32> = row.try_get("status")?;
    let attempt: i32 = row.try_get("attempt")?;
    Ok(WebhookAttempt {
        attempt: u32::try_from(attempt).unwrap_or(0),
        at: row.try_get("at")?,
        status: status.and_then(|s| u16::try_from(s).ok()),
        latency_ms: row.try_get("latency_ms")?,
        error: row.try_get("error")?,
        retry_at: row.try_get("retry_at")?,
    })
}
