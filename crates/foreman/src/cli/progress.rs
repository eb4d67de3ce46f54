//! The one line `foreman jobs wait` shows while a job has not ended, built from the
//! job view (`GET /jobs/{id}`) alone, so it can be tested on literal JSON.
//!
//! The view may explain a wait: `waiting_for`, a sentence such as "llama3.2:3b is
//! being drained first", and `eta`, `{"start_at", "finish_at"}` in RFC 3339. Each
//! is shown when present; a view without them gives the plain `queued, N ahead`.

use std::time::{Duration, SystemTime};

use serde_json::Value;

/// `ID: queued, 3 ahead; llama3.2:3b is being drained first; starts in ~12s`.
pub fn wait_line(id: &str, job: &Value, now: SystemTime) -> String {
    let state = job["state"].as_str().unwrap_or("unknown");
    let mut parts = Vec::new();
    match state {
        "queued" => parts.push(match job["queue_position"].as_u64() {
            Some(ahead) => format!("queued, {ahead} ahead"),
            None => "queued".to_string(),
        }),
        "running" => parts.push(format!("running (attempt {})", job["attempts"])),
        other => parts.push(other.to_string()),
    }
    let (event, eta_key) = match state {
        "queued" => ("starts", "start_at"),
        "running" => ("finishes", "finish_at"),
        _ => return format!("{id}: {}", parts.join("; ")),
    };
    if let Some(reason) = job["waiting_for"].as_str().map(str::trim)
        && !reason.is_empty()
    {
        parts.push(reason.to_string());
    }
    if let Some(at) = job["eta"][eta_key]
        .as_str()
        .and_then(|text| humantime::parse_rfc3339_weak(text).ok())
    {
        parts.push(match at.duration_since(now) {
            Ok(left) if left >= Duration::from_secs(1) => format!("{event} in ~{}", rough(left)),
            _ => format!("{event} any moment now"),
        });
    }
    format!("{id}: {}", parts.join("; "))
}

/// What a logged status line changes with: the state, the position and the reason
/// for the wait, not the countdown (which would make a new line every poll).
pub fn status_key(job: &Value) -> String {
    format!(
        "{}|{}|{}|{}",
        job["state"], job["queue_position"], job["attempts"], job["waiting_for"]
    )
}

/// The live line a waiting command keeps on standard error: a spinner on a terminal,
/// nothing when `quiet` (`--json`) or when standard error is a log (it gets lines of
/// their own instead).
pub(super) fn spinner(quiet: bool, on_terminal: bool) -> indicatif::ProgressBar {
    if quiet || !on_terminal {
        return indicatif::ProgressBar::hidden();
    }
    let spinner = indicatif::ProgressBar::new_spinner();
    spinner.enable_steady_tick(Duration::from_millis(120));
    spinner
}

/// A duration as a person reads an estimate: `12s`, `4m`, `2h10m`.
pub(super) fn rough(left: Duration) -> String {
    let seconds = left.as_secs_f64().round() as u64;
    match seconds {
        0..90 => format!("{seconds}s"),
        90..5400 => format!("{}m", (seconds + 30) / 60),
        _ => {
            let minutes = (seconds + 30) / 60;
            format!("{}h{}m", minutes / 60, minutes % 60)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    #[test]
    fn a_wait_is_explained_when_the_view_says_why_and_until_when() {
        let now = at("2026-11-27T18:00:00Z");
        let job: Value = serde_json::from_str(
            r#"{"id":"01KB","state":"queued","queue_position":3,"attempts":0,
                "waiting_for":"llama3.2:3b is being drained first",
                "eta":{"start_at":"2026-11-27T18:00:12Z","finish_at":"2026-11-27T18:00:40Z"}}"#,
        )
        .unwrap();
        assert_eq!(
            wait_line("01KB", &job, now),
            "01KB: queued, 3 ahead; llama3.2:3b is being drained first; starts in ~12s"
        );
        let running: Value = serde_json::from_str(
            r#"{"state":"running","attempts":1,"queue_position":null,
                "eta":{"start_at":"2026-11-27T17:59:00Z","finish_at":"2026-11-27T18:04:10.500Z"}}"#,
        )
        .unwrap();
        assert_eq!(
            wait_line("01KB", &running, now),
            "01KB: running (attempt 1); finishes in ~4m"
        );
        let late: Value = serde_json::from_str(
            r#"{"state":"queued","queue_position":0,"eta":{"start_at":"2026-11-27T17:59:59Z"}}"#,
        )
        .unwrap();
        assert_eq!(
            wait_line("01KB", &late, now),
            "01KB: queued, 0 ahead; starts any moment now"
        );
    }

    #[test]
    fn a_view_without_the_explanation_reads_as_before() {
        let now = at("2026-11-27T18:00:00Z");
        let queued: Value =
            serde_json::from_str(r#"{"state":"queued","queue_position":2,"attempts":0}"#).unwrap();
        assert_eq!(wait_line("01KB", &queued, now), "01KB: queued, 2 ahead");
        let odd: Value = serde_json::from_str(
            r#"{"state":"queued","queue_position":2,"waiting_for":"  ","eta":{"start_at":"soon"}}"#,
        )
        .unwrap();
        assert_eq!(wait_line("01KB", &odd, now), "01KB: queued, 2 ahead");
        let done: Value = serde_json::from_str(
            r#"{"state":"succeeded","waiting_for":"stale","eta":{"finish_at":"2026-11-27T18:00:05Z"}}"#,
        )
        .unwrap();
        assert_eq!(wait_line("01KB", &done, now), "01KB: succeeded");
    }

    #[test]
    fn a_logged_status_changes_with_the_wait_not_with_the_countdown() {
        let at = |start: &str, ahead: u64| -> Value {
            serde_json::from_str(&format!(
                r#"{{"state":"queued","queue_position":{ahead},"attempts":0,
                    "waiting_for":"a is being drained first","eta":{{"start_at":"{start}"}}}}"#
            ))
            .unwrap()
        };
        let first = at("2026-11-27T18:00:12Z", 3);
        assert_eq!(
            status_key(&first),
            status_key(&at("2026-11-27T18:00:11Z", 3))
        );
        assert_ne!(
            status_key(&first),
            status_key(&at("2026-11-27T18:00:12Z", 2))
        );
    }

    #[test]
    fn estimates_are_rounded_as_people_say_them() {
        assert_eq!(rough(Duration::from_millis(11_600)), "12s");
        assert_eq!(rough(Duration::from_secs(89)), "89s");
        assert_eq!(rough(Duration::from_secs(90)), "2m");
        assert_eq!(rough(Duration::from_secs(7800)), "2h10m");
    }
}
