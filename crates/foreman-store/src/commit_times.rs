//! How long the writer thread's commits take, kept by the store itself so that the
//! daemon can publish it (`foreman_store_commit_seconds`) without the store knowing
//! anything of metrics: the writer adds each commit to fixed buckets of atomics, and
//! anyone holding the [`Store`](crate::Store) reads a [`CommitTimesSnapshot`].
//!
//! The time is that of the `COMMIT` statement: the write-ahead log append and, for a
//! durable batch, its fsync. The statements of the batch ran before it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds: a relaxed commit takes microseconds, a
/// durable one an fsync (a fraction of a millisecond on an SSD, tens on a slow disk).
pub const COMMIT_BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0,
];

/// The commit durations so far.
#[derive(Debug, Default)]
pub struct CommitTimes {
    /// Commits per bucket (not cumulative); the last one is over every bound.
    buckets: [AtomicU64; COMMIT_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_nanos: AtomicU64,
}

/// A reading of [`CommitTimes`].
#[derive(Debug, Clone, PartialEq)]
pub struct CommitTimesSnapshot {
    /// Commits per bucket of [`COMMIT_BUCKETS`] (not cumulative), then those over the last bound.
    pub buckets: Vec<u64>,
    pub count: u64,
    pub sum_seconds: f64,
}

impl CommitTimes {
    pub(crate) fn record(&self, took: Duration) {
        let seconds = took.as_secs_f64();
        let bucket = COMMIT_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(COMMIT_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::Relaxed);
        self.sum_nanos
            .fetch_add(took.as_nanos() as u64, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> CommitTimesSnapshot {
        CommitTimesSnapshot {
            buckets: self
                .buckets
                .iter()
                .map(|bucket| bucket.load(Ordering::Relaxed))
                .collect(),
            count: self.count.load(Ordering::Relaxed),
            sum_seconds: self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_commit_lands_in_the_first_bucket_that_holds_it() {
        let times = CommitTimes::default();
        times.record(Duration::from_micros(50));
        times.record(Duration::from_micros(100));
        times.record(Duration::from_millis(3));
        times.record(Duration::from_secs(2));
        let snapshot = times.snapshot();
        assert_eq!(snapshot.count, 4);
        assert_eq!(snapshot.buckets[0], 2, "at or under 100 µs");
        assert_eq!(snapshot.buckets[5], 1, "under 5 ms");
        assert_eq!(
            snapshot.buckets[COMMIT_BUCKETS.len()],
            1,
            "over every bound"
        );
        assert!((snapshot.sum_seconds - 2.00315).abs() < 1e-9);
    }
}
