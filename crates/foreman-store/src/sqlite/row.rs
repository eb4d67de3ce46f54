//! Decoding of `jobs` rows into `Job`. Every query that returns jobs selects or returns `*`,
//! so this is the one place that knows the SQLite column layout.

use sqlx::Row;
use sqlx::sqlite::SqliteRow;

use crate::error::{Error, Result};
use crate::job::{Job, JobFailure, JobId, JobKind, JobRef, JobState, QueueHead};
use crate::webhook::{DeliveryState, WebhookAttempt, WebhookDelivery};

/// Reads one `jobs` row.
pub(super) fn job_from_row(row: &SqliteRow) -> Result<Job> {
    let id_text: String = row.try_get("id")?;
    let corrupt = |reason: String| Error::CorruptRow {
        id: id_text.clone(),
        reason,
    };

    let id: JobId = id_text.parse().map_err(|e| corrupt(format!("{e}")))?;
    let kind: JobKind = row
        .try_get::<String, _>("kind")?
        .parse()
        .map_err(|e| corrupt(format!("{e}")))?;
    let state: JobState = row
        .try_get::<String, _>("state")?
        .parse()
        .map_err(|e| corrupt(format!("{e}")))?;
    let attempts = to_u32(row.try_get("attempts")?, "attempts").map_err(&corrupt)?;
    let max_attempts = to_u32(row.try_get("max_attempts")?, "max_attempts").map_err(&corrupt)?;

    let failure_status: Option<i64> = row.try_get("failure_status")?;
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
        payload: row.try_get("payload")?,
        state,
        priority: row.try_get("priority")?,
        attempts,
        max_attempts,
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
        created_at: row.try_get("created_at")?,
        started_at: row.try_get("started_at")?,
        finished_at: row.try_get("finished_at")?,
    })
}

/// Reads one row of the queue-heads query.
pub(super) fn queue_head_from_row(row: &SqliteRow) -> Result<QueueHead> {
    let id_text: String = row.try_get("id")?;
    let id: JobId = id_text.parse().map_err(|e| Error::CorruptRow {
        id: id_text.clone(),
        reason: format!("{e}"),
    })?;
    let depth: i64 = row.try_get("depth")?;
    Ok(QueueHead {
        model: row.try_get("model")?,
        best: JobRef {
            id,
            priority: row.try_get("priority")?,
            created_at: row.try_get("created_at")?,
        },
        oldest_created_at: row.try_get("oldest_created_at")?,
        depth: count(depth),
    })
}

/// SQLite counts come back as `i64`; they are never negative.
pub(super) fn count(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn to_u32(value: i64, column: &str) -> Result<u32, String> {
    u32::try_from(value).map_err(|_| format!("{column} {value} is out of range"))
}

/// Reads one `webhook_deliveries` row (its attempt log is read separately).
pub(super) fn delivery_from_row(row: &SqliteRow) -> Result<WebhookDelivery> {
    let id: String = row.try_get("id")?;
    let corrupt = |reason: String| Error::CorruptRow {
        id: id.clone(),
        reason,
    };
    let job_id: String = row.try_get("job_id")?;
    let state: String = row.try_get("state")?;
    let finished_at: Option<i64> = row.try_get("finished_at")?;
    Ok(WebhookDelivery {
        job_id: job_id.parse().map_err(|e| corrupt(format!("{e}")))?,
        url: row.try_get("url")?,
        payload: row.try_get("payload")?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| corrupt(format!("unknown delivery state {state:?}")))?,
        attempts: to_u32(row.try_get("attempts")?, "attempts").map_err(&corrupt)?,
        next_attempt_at: row.try_get("next_attempt_at")?,
        created_at: row.try_get("created_at")?,
        finished_at,
        log: Vec::new(),
        id,
    })
}

/// Reads one `webhook_attempts` row.
pub(super) fn attempt_from_row(row: &SqliteRow) -> Result<WebhookAttempt> {
    let status: Option<i64> = row.try_get("status")?;
    Ok(WebhookAttempt {
        attempt: count(row.try_get("attempt")?) as u32,
        at: row.try_get("at")?,
        status: status.and_then(|s| u16::try_from(s).ok()),
        latency_ms: row.try_get("latency_ms")?,
        error: row.try_get("error")?,
    })
}
