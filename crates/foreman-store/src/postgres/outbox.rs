//! The webhook outbox of the PostgreSQL backend, written by the store's code rather than a
//! trigger: when a change finishes a job that has a webhook URL, the same transaction
//! inserts its delivery, so no finished job loses its notification and no notification
//! names a job that did not finish.
//!
//! The body is the one the SQLite backend's trigger builds (`type`, `timestamp`, `data`
//! with the job's id, state, kind, model, attempts, error, metadata and URL), built here
//! with serde_json, so receivers see the same shape from either backend.

use serde_json::{Map, Value, json};

use crate::error::Result;
use crate::job::Job;

/// Inserts `job`'s delivery if the statement that returned it finished it. Every caller's
/// statement acts only on unfinished jobs, so a terminal row here has just finished.
pub(super) async fn record_if_finished<C: deadpool_postgres::GenericClient>(
    client: &C,
    job: &Job,
) -> Result<()> {
    let (Some(url), Some(finished_at)) = (&job.webhook_url, job.finished_at) else {
        return Ok(());
    };
    if !job.state.is_terminal() {
        return Ok(());
    }
    client
        .execute(
            "INSERT INTO webhook_deliveries
                 (id, job_id, url, payload, state, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
            &[
                &delivery_id(),
                &job.id.to_string(),
                url,
                &payload(job, finished_at),
                &finished_at,
            ],
        )
        .await?;
    Ok(())
}

/// `msg_` and 24 random hex digits, as the SQLite trigger makes them.
fn delivery_id() -> String {
    let high = ulid::Ulid::generate().random();
    let low = ulid::Ulid::generate().random();
    let bits = ((high << 16) ^ low) & ((1u128 << 96) - 1);
    format!("msg_{bits:024x}")
}

/// The Standard Webhooks body of a finished job.
pub(super) fn payload(job: &Job, finished_at: i64) -> String {
    let error = match &job.failure {
        Some(failure) => json!({"status": failure.status, "message": failure.message}),
        None => Value::Null,
    };
    let metadata = match &job.metadata {
        // Checked as JSON at admission; a row that is not is sent as text rather than lost.
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
        None => Value::Null,
    };
    let mut data = Map::new();
    data.insert("id".into(), Value::String(job.id.to_string()));
    data.insert("state".into(), Value::String(job.state.as_str().into()));
    data.insert("kind".into(), Value::String(job.kind.as_str().into()));
    data.insert("model".into(), Value::String(job.model.clone()));
    data.insert("attempts".into(), Value::from(job.attempts));
    data.insert("error".into(), error);
    data.insert("metadata".into(), metadata);
    data.insert("url".into(), Value::String(format!("/jobs/{}", job.id)));
    let mut body = Map::new();
    body.insert(
        "type".into(),
        Value::String(format!("job.{}", job.state.as_str())),
    );
    body.insert("timestamp".into(), Value::String(timestamp(finished_at)));
    body.insert("data".into(), Value::Object(data));
    Value::Object(body).to_string()
}

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC), SQLite's `%Y-%m-%dT%H:%M:%fZ`.
pub(super) fn timestamp(unix_ms: i64) -> String {
    let days = unix_ms.div_euclid(86_400_000);
    let in_day = unix_ms.rem_euclid(86_400_000);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute) = (in_day / 3_600_000, in_day / 60_000 % 60);
    let (second, milli) = (in_day / 1000 % 60, in_day % 1000);
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{milli:03}Z")
}

/// The proleptic Gregorian date of a count of days since 1970-01-01.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_with_milliseconds() {
        assert_eq!(timestamp(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(timestamp(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(timestamp(1_795_802_798_123), "2026-11-27T18:06:38.123Z");
        assert_eq!(timestamp(1_704_067_199_999), "2023-12-31T23:59:59.999Z");
    }

    #[test]
    fn delivery_ids_look_like_the_sqlite_ones() {
        let id = delivery_id();
        assert_eq!(id.len(), 4 + 24);
        assert!(id.starts_with("msg_"));
        assert!(
            id[4..]
                .chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        );
        assert_ne!(id, delivery_id());
    }
}
