//! The jobs the store finished by itself, counted by kind and outcome: sync jobs abandoned
//! at a start or by the janitor, and jobs failed by startup recovery or lease rescue when
//! their attempts ran out. Every other job is finished by a call of the daemon, which counts
//! it (`foreman_jobs_finished_total`); these are finished by one statement over many rows,
//! so the store keeps the tally and the daemon adds it at scrape time, as it reads
//! [`CommitTimes`](crate::CommitTimes), without the store knowing anything of metrics.

use std::collections::BTreeMap;
use std::sync::Mutex;

use crate::job::Job;

/// The count so far, per (kind, terminal state), by their stored names.
#[derive(Debug, Default)]
pub struct FinishedTally {
    counts: Mutex<BTreeMap<(&'static str, &'static str), u64>>,
}

impl FinishedTally {
    /// Counts `jobs` that a bulk change left in a terminal state.
    pub(crate) fn record<'a>(&self, jobs: impl IntoIterator<Item = &'a Job>) {
        let mut counts = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        for job in jobs.into_iter().filter(|job| job.state.is_terminal()) {
            *counts
                .entry((job.kind.as_str(), job.state.as_str()))
                .or_default() += 1;
        }
    }

    /// The tally: jobs per (kind, outcome).
    pub fn snapshot(&self) -> BTreeMap<(&'static str, &'static str), u64> {
        self.counts
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}
