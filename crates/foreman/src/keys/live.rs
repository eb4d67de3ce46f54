//! One key in use: its grant and the counters its limits are checked against
//! (requests in the last minute, requests in flight, unfinished jobs, tokens today).
//!
//! The counters live in this process: on several instances each counts the requests it
//! serves (a key's rate and concurrency are per instance), while the daily tokens start
//! from what the store recorded today when the key is first loaded.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};

use super::access::Need;
use super::grant::Grant;

/// The window of the requests-per-minute limit.
const MINUTE_MS: i64 = 60_000;

/// A UTC day, the period of the token limit.
pub const DAY_MS: i64 = 86_400_000;

/// Seconds a client is asked to wait when the key has too many requests in flight or
/// too many unfinished jobs (both end at an unknown time).
const BUSY_RETRY_SECONDS: u64 = 1;

/// A key's grant and its counters.
#[derive(Debug)]
pub struct LiveKey {
    pub name: String,
    pub grant: Grant,
    /// When each of the requests of the last minute came (at most the limit of them).
    window: Mutex<VecDeque<i64>>,
    in_flight: AtomicU32,
    /// Jobs enqueued and not yet finished, plus admissions that may enqueue one.
    unfinished: AtomicU32,
    /// The UTC day (its start) and the tokens counted in it.
    tokens: Mutex<(i64, u64)>,
}

/// Why a request was refused: which limit, in words, and when to try again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub message: String,
    pub retry_after: u64,
}

/// The state of a key's rate limits as one request saw it, for OpenAI's headers.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RateState {
    /// (limit, remaining, seconds to reset) of requests per minute, if limited.
    pub requests: Option<(u64, u64, u64)>,
    /// (limit, remaining, seconds to reset) of tokens per day, if limited.
    pub tokens: Option<(u64, u64, u64)>,
}

/// An admitted request: it counts as in flight until this is dropped (with the end of
/// its answer), and it may hold a place among the key's unfinished jobs.
#[derive(Debug)]
pub struct Admission {
    key: Arc<LiveKey>,
    /// Whether a place among unfinished jobs was reserved for a job this request may
    /// enqueue (see [`LiveKey::take_reservation`]).
    reserved: std::sync::atomic::AtomicBool,
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.key.in_flight.fetch_sub(1, Ordering::AcqRel);
        self.release_reservation();
    }
}

impl Admission {
    /// The request enqueued its job: the job now holds the reserved place. False when
    /// nothing was reserved (the caller then counts the job itself).
    pub fn take_reservation(&self) -> bool {
        self.reserved.swap(false, Ordering::AcqRel)
    }

    /// The request ended without enqueueing: the reserved place is given back.
    pub fn release_reservation(&self) {
        if self.reserved.swap(false, Ordering::AcqRel) {
            self.key.unfinished.fetch_sub(1, Ordering::AcqRel);
        }
    }

    pub fn key(&self) -> &Arc<LiveKey> {
        &self.key
    }
}

fn day_of(now: i64) -> i64 {
    now.div_euclid(DAY_MS) * DAY_MS
}

fn seconds_until(from: i64, to: i64) -> u64 {
    ((to - from).max(0) as u64).div_ceil(1000).max(1)
}

impl LiveKey {
    /// A key loaded with `tokens_today` already recorded in the store today (`now`).
    pub fn new(name: String, grant: Grant, tokens_today: u64, now: i64) -> LiveKey {
        LiveKey {
            name,
            grant,
            window: Mutex::new(VecDeque::new()),
            in_flight: AtomicU32::new(0),
            unfinished: AtomicU32::new(0),
            tokens: Mutex::new((day_of(now), tokens_today)),
        }
    }

    /// Checks the key's limits for a request of `need` at `now`, in this order:
    /// requests in flight, tokens today (routes that run models), unfinished jobs
    /// (requests that enqueue), requests in the last minute. Only an admitted request
    /// is counted against the minute's limit.
    pub fn admit(
        self: &Arc<LiveKey>,
        need: Need,
        enqueues: bool,
        now: i64,
    ) -> Result<Admission, Refusal> {
        let grant = &self.grant;
        if let Some(limit) = grant.concurrency {
            let taken = self
                .in_flight
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                });
            if taken.is_err() {
                return Err(Refusal {
                    message: format!(
                        "API key '{}' has {limit} requests in flight, its concurrency limit",
                        self.name
                    ),
                    retry_after: BUSY_RETRY_SECONDS,
                });
            }
        } else {
            self.in_flight.fetch_add(1, Ordering::AcqRel);
        }
        // From here the request counts in flight; the admission gives it back on drop.
        let admission = Admission {
            key: self.clone(),
            reserved: std::sync::atomic::AtomicBool::new(false),
        };
        if let Some(limit) = grant.tokens_per_day {
            let used = self.tokens_today(now);
            let reset = seconds_until(now, day_of(now) + DAY_MS);
            if need.uses_models() && used >= limit {
                return Err(Refusal {
                    message: format!(
                        "API key '{}' used {used} tokens today, its limit is {limit} tokens per day",
                        self.name
                    ),
                    retry_after: reset,
                });
            }
        }
        if enqueues && let Some(limit) = grant.max_queued {
            let taken = self
                .unfinished
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < limit).then_some(n + 1)
                });
            if taken.is_err() {
                return Err(Refusal {
                    message: format!(
                        "API key '{}' has {limit} unfinished jobs, its limit of queued jobs",
                        self.name
                    ),
                    retry_after: BUSY_RETRY_SECONDS,
                });
            }
            admission.reserved.store(true, Ordering::Release);
        }
        if let Some(limit) = grant.requests_per_minute {
            let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            while window.front().is_some_and(|at| *at <= now - MINUTE_MS) {
                window.pop_front();
            }
            if window.len() as u64 >= u64::from(limit) {
                let retry_after = window
                    .front()
                    .map_or(60, |oldest| seconds_until(now, oldest + MINUTE_MS));
                return Err(Refusal {
                    message: format!(
                        "API key '{}' made {limit} requests in the last minute, its limit",
                        self.name
                    ),
                    retry_after,
                });
            }
            window.push_back(now);
        }
        Ok(admission)
    }

    /// The key's rate limits as they stand at `now`, for OpenAI's headers.
    pub fn rates(&self, now: i64) -> RateState {
        let grant = &self.grant;
        let requests = grant.requests_per_minute.map(|limit| {
            let window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            let recent: Vec<i64> = window
                .iter()
                .copied()
                .filter(|at| *at > now - MINUTE_MS)
                .collect();
            let reset = recent
                .first()
                .map_or(0, |oldest| seconds_until(now, oldest + MINUTE_MS));
            let limit = u64::from(limit);
            (limit, limit.saturating_sub(recent.len() as u64), reset)
        });
        let tokens = grant.tokens_per_day.map(|limit| {
            let used = self.tokens_today(now);
            let reset = seconds_until(now, day_of(now) + DAY_MS);
            (limit, limit.saturating_sub(used), reset)
        });
        RateState { requests, tokens }
    }

    /// A job of the key was enqueued without a reservation: count it.
    pub fn job_enqueued(&self) {
        self.unfinished.fetch_add(1, Ordering::AcqRel);
    }

    /// A job of the key finished, having used `tokens`.
    pub fn job_finished(&self, tokens: u64, now: i64) {
        let _ = self
            .unfinished
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1));
        self.tokens_used(tokens, now);
    }

    /// Work of the key that was not counted among its unfinished jobs (a batch's line)
    /// used `tokens`.
    pub fn tokens_used(&self, tokens: u64, now: i64) {
        let mut counted = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if counted.0 != day_of(now) {
            *counted = (day_of(now), 0);
        }
        counted.1 += tokens;
    }

    /// Tokens counted today.
    pub fn tokens_today(&self, now: i64) -> u64 {
        let counted = self.tokens.lock().unwrap_or_else(|e| e.into_inner());
        if counted.0 == day_of(now) {
            counted.1
        } else {
            0
        }
    }

    /// Jobs of the key enqueued here and not finished (with reservations under way).
    pub fn unfinished(&self) -> u32 {
        self.unfinished.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::grant::Scope;

    fn key(grant: Grant) -> Arc<LiveKey> {
        Arc::new(LiveKey::new("k".into(), grant, 0, 0))
    }

    const CHAT: Need = Need::Scope(Scope::Chat);

    #[test]
    fn requests_per_minute_slide() {
        let k = key(Grant {
            requests_per_minute: Some(2),
            ..Grant::admin()
        });
        let _a = k.admit(CHAT, false, 1_000).unwrap();
        assert_eq!(k.rates(1_000).requests, Some((2, 1, 60)));
        k.admit(CHAT, false, 20_000).unwrap();
        let refused = k.admit(CHAT, false, 30_000).unwrap_err();
        assert_eq!(refused.retry_after, 31);
        k.admit(CHAT, false, 61_000).unwrap();
    }

    #[test]
    fn concurrency_counts_until_the_admission_drops() {
        let k = key(Grant {
            concurrency: Some(1),
            ..Grant::admin()
        });
        let first = k.admit(CHAT, false, 0).unwrap();
        assert!(k.admit(CHAT, false, 0).is_err());
        drop(first);
        k.admit(CHAT, false, 0).unwrap();
    }

    #[test]
    fn unfinished_jobs_hold_places_until_they_finish() {
        let k = key(Grant {
            max_queued: Some(1),
            ..Grant::admin()
        });
        let a = k.admit(CHAT, true, 0).unwrap();
        assert!(a.take_reservation());
        drop(a);
        assert_eq!(k.unfinished(), 1);
        assert!(k.admit(CHAT, true, 0).is_err());
        // A request that enqueues nothing does not hold a place.
        k.admit(CHAT, false, 0).unwrap();
        k.job_finished(0, 0);
        let b = k.admit(CHAT, true, 0).unwrap();
        drop(b);
        assert_eq!(k.unfinished(), 0, "a reservation unused is given back");
    }

    #[test]
    fn daily_tokens_refuse_model_routes_until_the_next_day() {
        let k = key(Grant {
            tokens_per_day: Some(10),
            ..Grant::admin()
        });
        k.job_finished(10, 1_000);
        let refused = k.admit(CHAT, false, 1_000).unwrap_err();
        assert_eq!(refused.retry_after, (DAY_MS as u64 - 1_000) / 1000);
        k.admit(Need::AnyKey, false, 1_000).unwrap();
        k.admit(CHAT, false, DAY_MS).unwrap();
    }
}
