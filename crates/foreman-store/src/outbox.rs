//! The webhook outbox row of a finished job, shared by both backends.
//!
//! Why it exists: a finished job with a webhook URL must leave exactly one delivery, in the
//! same transaction that finished it, so that no notification is lost and none names a job
//! that did not finish. Each backend's code inserts it beside its finishing statement (no
//! trigger), and both build it here, so receivers see the same body, byte for byte, from
//! either backend: `type`, `timestamp` and `data` with the job's id, state, kind, model,
//! attempts, error, metadata and URL.

use serde_json::{Map, Value, json};

use crate::job::Job;

/// The delivery a job leaves when a statement has just finished it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct NewDelivery {
    /// The Standard Webhooks `webhook-id`.
    pub(crate) id: String,
    pub(crate) job_id: String,
    pub(crate) url: String,
    /// The body, as sent and signed on every attempt.
    pub(crate) payload: String,
    /// When the job finished: the delivery's creation and first due time.
    pub(crate) at: i64,
}

/// The delivery of `job`, as a finishing statement returned it, if it has one: the job is
/// terminal and has a webhook URL. Every finishing statement acts only on unfinished jobs,
/// so a terminal row it returns has just finished.
pub(crate) fn delivery_for(job: &Job) -> Option<NewDelivery> {
    let (Some(url), Some(finished_at)) = (&job.webhook_url, job.finished_at) else {
        return None;
    };
    if !job.state.is_terminal() {
        return None;
    }
    Some(NewDelivery {
        id: delivery_id(),
        job_id: job.id.to_string(),
        url: url.clone(),
        payload: payload(job, finished_at),
        at: finished_at,
    })
}

/// `msg_` and 24 random lower-case hex digits.
fn delivery_id() -> String {
    let high = ulid::Ulid::generate().random();
    let low = ulid::Ulid::generate().random();
    let bits = ((high << 16) ^ low) & ((1u128 << 96) - 1);
    format!("msg_{bits:024x}")
}

/// The Standard Webhooks body of a finished job.
pub(crate) fn payload(job: &Job, finished_at: i64) -> String {
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

/// Unix milliseconds as `YYYY-MM-DDTHH:MM:SS.mmmZ` (UTC).
pub(crate) fn timestamp(unix_ms: i64) -> String {
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
    fn delivery_ids_are_msg_and_24_hex_digits() {
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
