//! Decoding of `jobs` rows into `Job`. Every query that returns jobs selects or returns `*`,
//! so this is the one place that knows the SQLite column layout.

use rusqlite::Row;

use crate::error::{Error, Result};
use crate::job::{Job, JobCaller, JobFailure, JobId, JobKind, JobState};
use crate::webhook::{DeliveryState, WebhookAttempt, WebhookDelivery};

/// Reads one `jobs` row.
pub(super) fn job_from_row(row: &Row<'_>) -> Result<Job> {
    let id_text: String = row.get("id")?;
    let corrupt = |reason: String| Error::CorruptRow {
        id: id_text.clone(),
        reason,
    };

    let id: JobId = id_text.parse().map_err(|e| corrupt(format!("{e}")))?;
    let kind: JobKind = row
        .get::<_, String>("kind")?
        .parse()
        .map_err(|e| corrupt(format!("{e}")))?;
    let state: JobState = row
        .get::<_, String>("state")?
        .parse()
        .map_err(|e| corrupt(format!("{e}")))?;
    let attempts = to_u32(row.get("attempts")?, "attempts").map_err(&corrupt)?;
    let max_attempts = to_u32(row.get("max_attempts")?, "max_attempts").map_err(&corrupt)?;

    let failure_status: Option<i64> = row.get("failure_status")?;
    let failure_message: Option<String> = row.get("failure_message")?;
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
        model: row.get("model")?,
        load_options: row.get("load_options")?,
        target: row.get("target")?,
        sync: row.get("sync")?,
        interruptions: to_u32(row.get("interruptions")?, "interruptions").map_err(&corrupt)?,
        payload: row.get("payload")?,
        state,
        priority: row.get("priority")?,
        attempts,
        max_attempts,
        lease_owner: row.get("lease_owner")?,
        lease_expires_at: row.get("lease_expires_at")?,
        run_after: row.get("run_after")?,
        cancel_requested: row.get("cancel_requested")?,
        result: row.get("result")?,
        failure,
        idempotency_key: row.get("idempotency_key")?,
        webhook_url: row.get("webhook_url")?,
        metadata: row.get("metadata")?,
        artifacts: row.get("artifacts")?,
        caller: caller_from_row(row).map_err(&corrupt)?,
        created_at: row.get("created_at")?,
        started_at: row.get("started_at")?,
        accepted_by: row.get("accepted_by")?,
        finished_at: row.get("finished_at")?,
    })
}

/// The caller a `jobs` or `batches` row records (its `caller` and `caller_weight`), or none.
pub(super) fn caller_from_row(row: &Row<'_>) -> Result<Option<JobCaller>, String> {
    let name: Option<String> = row.get("caller").map_err(|e| e.to_string())?;
    let weight: i64 = row.get("caller_weight").map_err(|e| e.to_string())?;
    Ok(match name {
        Some(name) => Some(JobCaller {
            name,
            weight: to_u32(weight, "caller_weight")?,
        }),
        None => None,
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
pub(super) fn delivery_from_row(row: &Row<'_>) -> Result<WebhookDelivery> {
    let id: String = row.get("id")?;
    let corrupt = |reason: String| Error::CorruptRow {
        id: id.clone(),
        reason,
    };
    let job_id: String = row.get("job_id")?;
    let state: String = row.get("state")?;
    let finished_at: Option<i64> = row.get("finished_at")?;
    Ok(WebhookDelivery {
        job_id: job_id.parse().map_err(|e| corrupt(format!("{e}")))?,
        url: row.get("url")?,
        payload: row.get("payload")?,
        state: DeliveryState::parse(&state)
            .ok_or_else(|| corrupt(format!("unknown delivery state {state:?}")))?,
        attempts: to_u32(row.get("attempts")?, "attempts").map_err(&corrupt)?,
        next_attempt_at: row.get("next_attempt_at")?,
        created_at: row.get("created_at")?,
        finished_at,
        log: Vec::new(),
        id,
    })
}

/// Reads one `webhook_attempts` row.
pub(super) fn attempt_from_row(row: &Row<'_>) -> Result<WebhookAttempt> {
    let status: Option<i64> = row.get("status")?;
    Ok(WebhookAttempt {
        attempt: count(row.get("attempt")?) as u32,
        at: row.get("at")?,
        status: status.and_then(|s| u16::try_from(s).ok()),
        latency_ms: row.get("latency_ms")?,
        error: row.get("error")?,
        retry_at: row.get("retry_at")?,
    })
}

/// Reads one row of `queries::OCCUPANTS`.
pub(super) fn occupant_from_row(row: &Row<'_>) -> Result<crate::Occupant> {
    let id_text: String = row.get("id")?;
    let id: JobId = id_text.parse().map_err(|e| Error::CorruptRow {
        id: id_text.clone(),
        reason: format!("{e}"),
    })?;
    Ok(crate::Occupant {
        id,
        model: row.get("model")?,
        load_options: row.get("load_options")?,
        lease_owner: row.get("lease_owner")?,
    })
}
