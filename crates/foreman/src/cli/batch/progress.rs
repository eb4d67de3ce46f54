//! The line `foreman batch submit --wait` shows while a batch runs, built from the
//! Batch object (`GET /v1/batches/{id}`) alone, so it can be tested on literal JSON:
//! its status, the lines done and failed of the total as a bar, the rate so far and
//! the time left at that rate.
//!
//! The rate is the lines finished over the time since the batch went
//! `in_progress` (`in_progress_at`, Unix seconds), so a waiter that attaches late
//! still sees the batch's own pace, not the pace since it began to watch.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::cli::progress::rough;

/// How wide the bar is, in characters.
const BAR_WIDTH: usize = 24;

/// The numbers of a batch's `request_counts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counts {
    pub total: u64,
    pub completed: u64,
    pub failed: u64,
}

impl Counts {
    pub fn of(batch: &Value) -> Counts {
        let count = |key: &str| batch["request_counts"][key].as_u64().unwrap_or(0);
        Counts {
            total: count("total"),
            completed: count("completed"),
            failed: count("failed"),
        }
    }

    /// Lines that ran to an outcome, answered or failed.
    pub fn finished(&self) -> u64 {
        self.completed + self.failed
    }
}

/// `ID: in_progress [=========>              ] 1203/5000 lines, 3 failed; 40.1 lines/s, ~1m35s left`.
pub fn batch_line(batch: &Value, now: SystemTime) -> String {
    let id = batch["id"].as_str().unwrap_or("batch");
    let status = batch["status"].as_str().unwrap_or("unknown");
    let counts = Counts::of(batch);
    if counts.total == 0 {
        return format!("{id}: {status}");
    }
    let mut line = format!(
        "{id}: {status} {} {}/{} lines",
        bar(counts.finished(), counts.total),
        counts.finished(),
        counts.total
    );
    if counts.failed > 0 {
        line.push_str(&format!(", {} failed", counts.failed));
    }
    if status != "in_progress" {
        return line;
    }
    if let Some(rate) = rate(batch, counts, now) {
        let left = counts.total.saturating_sub(counts.finished());
        line.push_str(&format!("; {rate:.1} lines/s"));
        if left > 0 {
            let eta = Duration::from_secs_f64(left as f64 / rate);
            line.push_str(&format!(", ~{} left", rough(eta)));
        }
    }
    line
}

/// Lines finished per second since the batch began to run; `None` before any ran
/// or when the batch does not say when it began.
pub fn rate(batch: &Value, counts: Counts, now: SystemTime) -> Option<f64> {
    let started = UNIX_EPOCH + Duration::from_secs(batch["in_progress_at"].as_u64()?);
    let elapsed = now.duration_since(started).ok()?.as_secs_f64();
    if counts.finished() == 0 || elapsed < 1.0 {
        return None;
    }
    Some(counts.finished() as f64 / elapsed)
}

/// `[=====>      ]`: the share of `done` in `total`.
fn bar(done: u64, total: u64) -> String {
    let filled = if total == 0 {
        0
    } else {
        ((done.min(total) as f64 / total as f64) * BAR_WIDTH as f64).floor() as usize
    };
    let mut bar = String::with_capacity(BAR_WIDTH + 2);
    bar.push('[');
    for i in 0..BAR_WIDTH {
        bar.push(if i < filled {
            '='
        } else if i == filled && done < total {
            '>'
        } else {
            ' '
        });
    }
    bar.push(']');
    bar
}

/// When standard error is not a terminal, which of the polled states is worth a
/// line of its own: a new status at once, new counts at most every `every` (a
/// batch of thousands of lines would otherwise log a line per poll).
pub struct LogThrottle {
    every: Duration,
    last: Option<(String, Counts, Duration)>,
}

impl LogThrottle {
    pub fn new(every: Duration) -> LogThrottle {
        LogThrottle { every, last: None }
    }

    /// Whether `batch`, polled `at` (from any fixed start), gets a line; if it
    /// does, it is remembered as the last one logged.
    pub fn should_log(&mut self, batch: &Value, at: Duration) -> bool {
        let status = batch["status"].as_str().unwrap_or("unknown").to_string();
        let counts = Counts::of(batch);
        let log = match &self.last {
            None => true,
            Some((last_status, last_counts, last_at)) => {
                *last_status != status
                    || (*last_counts != counts && at.saturating_sub(*last_at) >= self.every)
            }
        };
        if log {
            self.last = Some((status, counts, at));
        }
        log
    }
}

/// Whether a batch's status is one it never leaves.
pub fn has_ended(batch: &Value) -> bool {
    matches!(
        batch["status"].as_str(),
        Some("completed" | "failed" | "expired" | "cancelled")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(rfc3339: &str) -> SystemTime {
        humantime::parse_rfc3339(rfc3339).unwrap()
    }

    fn batch(status: &str, total: u64, completed: u64, failed: u64) -> Value {
        // 2026-11-27T18:00:00Z
        serde_json::json!({
            "id": "batch_01",
            "status": status,
            "in_progress_at": 1_795_802_400u64,
            "request_counts": {"total": total, "completed": completed, "failed": failed},
        })
    }

    #[test]
    fn a_running_batch_shows_its_share_rate_and_time_left() {
        let now = at("2026-11-27T18:00:40Z");
        assert_eq!(
            batch_line(&batch("in_progress", 5000, 1197, 3), now),
            "batch_01: in_progress [=====>                  ] 1200/5000 lines, 3 failed; 30.0 lines/s, ~2m left"
        );
        assert_eq!(
            batch_line(&batch("in_progress", 100, 90, 0), now),
            "batch_01: in_progress [=====================>  ] 90/100 lines; 2.2 lines/s, ~4s left"
        );
    }

    #[test]
    fn no_rate_before_a_line_ran_and_none_once_the_batch_is_past_running() {
        let now = at("2026-11-27T18:00:40Z");
        assert_eq!(
            batch_line(&batch("in_progress", 10, 0, 0), now),
            "batch_01: in_progress [>                       ] 0/10 lines"
        );
        assert_eq!(
            batch_line(&batch("completed", 10, 8, 2), now),
            "batch_01: completed [========================] 10/10 lines, 2 failed"
        );
        let validating = serde_json::json!({"id": "batch_02", "status": "validating",
            "request_counts": {"total": 0, "completed": 0, "failed": 0}});
        assert_eq!(batch_line(&validating, now), "batch_02: validating");
        let clock_behind = at("2026-11-27T17:59:00Z");
        assert_eq!(
            batch_line(&batch("in_progress", 10, 5, 0), clock_behind),
            "batch_01: in_progress [============>           ] 5/10 lines"
        );
    }

    #[test]
    fn a_log_line_for_each_new_status_and_for_new_counts_now_and_then() {
        let mut throttle = LogThrottle::new(Duration::from_secs(10));
        let s = Duration::from_secs;
        assert!(throttle.should_log(&batch("validating", 0, 0, 0), s(0)));
        assert!(!throttle.should_log(&batch("validating", 0, 0, 0), s(30)));
        assert!(throttle.should_log(&batch("in_progress", 10, 0, 0), s(31)));
        assert!(
            !throttle.should_log(&batch("in_progress", 10, 1, 0), s(35)),
            "new counts within the interval"
        );
        assert!(throttle.should_log(&batch("in_progress", 10, 2, 0), s(41)));
        assert!(
            !throttle.should_log(&batch("in_progress", 10, 2, 0), s(60)),
            "nothing new"
        );
        assert!(throttle.should_log(&batch("finalizing", 10, 9, 1), s(61)));
        assert!(throttle.should_log(&batch("completed", 10, 9, 1), s(62)));
    }

    #[test]
    fn ended_statuses_are_the_four_final_ones() {
        for (status, ended) in [
            ("validating", false),
            ("in_progress", false),
            ("finalizing", false),
            ("cancelling", false),
            ("completed", true),
            ("failed", true),
            ("expired", true),
            ("cancelled", true),
        ] {
            assert_eq!(has_ended(&batch(status, 1, 0, 0)), ended, "{status}");
        }
    }
}
