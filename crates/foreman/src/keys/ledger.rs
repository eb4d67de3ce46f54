//! What each key used: requests, prompt and completion tokens, GPU seconds (a job's run
//! time on its target) and loads its jobs caused.
//!
//! The ledger lives in [`crate::metrics::Metrics`], whose hooks already see every
//! enqueue, dispatch and end of a job; it learns a job's key at its enqueue from the
//! request being served ([`REQUEST`], set by the auth layer around the handler), so no
//! handler passes it along. Amounts are added in memory to per-key-per-hour deltas that
//! [`flush`] writes to the store every second (one write for all keys, not one per
//! request), and to totals since start for `/metrics`.
//!
//! Jobs are attributed in the process that enqueued them: a job left queued by a
//! previous run is not counted against its key. A job run by another instance (on a
//! shared database) ends in that instance's hooks, not here: on such a database the
//! flusher also reads the rows of jobs it tracks ([`Ledger::due_for_check`], a bounded
//! number every few seconds) and books those that ended elsewhere.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foreman_store::{Job, JobId, Store, UsageDelta, usage_hour};
use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::live::{Admission, LiveKey};

tokio::task_local! {
    /// The admitted request being served, for the enqueue hook.
    pub static REQUEST: Arc<Admission>;
}

/// How often pending usage is written to the store.
const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// On a shared database: how long a tracked job goes unchecked before its row is read
/// for an end recorded by another instance, and how many rows one sweep reads.
const CHECK_AFTER_MS: i64 = 3_000;
const CHECKS_PER_SWEEP: usize = 100;

/// A key's amounts since this process started (for `/metrics`).
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Totals {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub gpu_seconds: f64,
    pub loads: u64,
    /// Requests refused with 403 (a scope or model the key lacks).
    pub forbidden: u64,
    /// Requests refused with 429 (a limit reached).
    pub limited: u64,
}

#[derive(Debug, Default)]
struct Book {
    /// Unfinished jobs enqueued here, with their key and when their row was last
    /// looked at (their enqueue, at first).
    jobs: HashMap<JobId, (Arc<LiveKey>, i64)>,
    /// Those of `jobs` that are batch lines, not counted among their key's unfinished
    /// jobs.
    batch_lines: std::collections::HashSet<JobId>,
    /// Not yet written: by key and hour.
    pending: HashMap<(String, i64), UsageDelta>,
    /// Latest use per key, not yet written.
    last_used: HashMap<String, i64>,
    totals: BTreeMap<String, Totals>,
}

impl Book {
    fn delta(&mut self, key: &str, now: i64) -> &mut UsageDelta {
        let hour = usage_hour(now);
        self.pending
            .entry((key.to_owned(), hour))
            .or_insert_with(|| UsageDelta {
                key_name: key.to_owned(),
                hour,
                ..UsageDelta::default()
            })
    }
}

/// The usage of every key.
#[derive(Debug, Default)]
pub struct Ledger {
    book: Mutex<Book>,
}

/// The token counts a target reported in a job's result: Ollama's native
/// `prompt_eval_count` and `eval_count`, OpenAI's `usage.prompt_tokens` and
/// `usage.completion_tokens`, or the Responses and Messages APIs' `usage.input_tokens`
/// and `usage.output_tokens`. Zero when the result has none.
pub fn token_counts(result: &str) -> (u64, u64) {
    let Ok(value) = serde_json::from_str::<Value>(result) else {
        return (0, 0);
    };
    let count = |v: Option<&Value>| v.and_then(Value::as_u64).unwrap_or(0);
    if value.get("prompt_eval_count").is_some() || value.get("eval_count").is_some() {
        return (
            count(value.get("prompt_eval_count")),
            count(value.get("eval_count")),
        );
    }
    let usage = value.get("usage");
    let field = |name: &str| count(usage.and_then(|u| u.get(name)));
    if usage.is_some_and(|u| u.get("prompt_tokens").is_some()) {
        (field("prompt_tokens"), field("completion_tokens"))
    } else {
        (field("input_tokens"), field("output_tokens"))
    }
}

impl Ledger {
    fn lock(&self) -> std::sync::MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A request of `key` was admitted at `now`.
    pub fn request(&self, key: &str, now: i64) {
        let mut book = self.lock();
        book.delta(key, now).requests += 1;
        book.totals.entry(key.to_owned()).or_default().requests += 1;
        let last = book.last_used.entry(key.to_owned()).or_insert(now);
        *last = (*last).max(now);
    }

    /// A request of `key` was refused: `limited` for a 429, else a 403.
    pub fn refused(&self, key: &str, limited: bool) {
        let mut book = self.lock();
        let totals = book.totals.entry(key.to_owned()).or_default();
        if limited {
            totals.limited += 1;
        } else {
            totals.forbidden += 1;
        }
    }

    /// `job` was committed to the queue; it is the key's of the request being served,
    /// if one is.
    pub fn enqueued(&self, job: &Job) {
        let Ok(key) = REQUEST.try_with(|request| {
            if !request.take_reservation() {
                request.key().job_enqueued();
            }
            request.key().clone()
        }) else {
            return;
        };
        self.lock().jobs.insert(job.id, (key, job.created_at));
    }

    /// `job`, a line of a batch `key` created, was committed to the queue by the batch
    /// driver: what it uses is the key's. It does not count among the key's queued jobs
    /// (that limit admits requests; the batch was admitted when it was created, and the
    /// driver keeps at most `FOREMAN_BATCH_QUEUED` of its lines in the queue).
    pub fn enqueued_for_batch(&self, job: &Job, key: Arc<LiveKey>) {
        let mut book = self.lock();
        book.batch_lines.insert(job.id);
        book.jobs.insert(job.id, (key, job.created_at));
    }

    /// `job` was sent to a target; `load` when its model had to be loaded for it.
    pub fn dispatched(&self, job: JobId, load: bool, now: i64) {
        if !load {
            return;
        }
        let mut book = self.lock();
        let Some(key) = book.jobs.get(&job).map(|(key, _)| key.name.clone()) else {
            return;
        };
        book.delta(&key, now).loads += 1;
        book.totals.entry(key).or_default().loads += 1;
    }

    /// `job` reached a terminal state: its tokens and run time go to its key.
    pub fn finished(&self, job: &Job) {
        let Some(finished_at) = job.finished_at else {
            return;
        };
        let mut book = self.lock();
        let Some((key, _)) = book.jobs.remove(&job.id) else {
            return;
        };
        let batch_line = book.batch_lines.remove(&job.id);
        let (prompt, completion) = job.result.as_deref().map_or((0, 0), token_counts);
        let gpu_ms = job
            .started_at
            .map_or(0, |started| (finished_at - started).max(0));
        match batch_line {
            true => key.tokens_used(prompt + completion, finished_at),
            false => key.job_finished(prompt + completion, finished_at),
        }
        let delta = book.delta(&key.name, finished_at);
        delta.prompt_tokens += prompt as i64;
        delta.completion_tokens += completion as i64;
        delta.gpu_ms += gpu_ms;
        let totals = book.totals.entry(key.name.clone()).or_default();
        totals.prompt_tokens += prompt;
        totals.completion_tokens += completion;
        totals.gpu_seconds += gpu_ms as f64 / 1000.0;
    }

    /// Up to [`CHECKS_PER_SWEEP`] tracked jobs not looked at for [`CHECK_AFTER_MS`],
    /// longest unchecked first; each is marked as checked at `now`.
    pub fn due_for_check(&self, now: i64) -> Vec<JobId> {
        let mut book = self.lock();
        let mut due: Vec<(i64, JobId)> = book
            .jobs
            .iter()
            .filter(|(_, (_, checked))| *checked <= now - CHECK_AFTER_MS)
            .map(|(id, (_, checked))| (*checked, *id))
            .collect();
        due.sort_unstable();
        due.truncate(CHECKS_PER_SWEEP);
        for (_, id) in &due {
            if let Some((_, checked)) = book.jobs.get_mut(id) {
                *checked = now;
            }
        }
        due.into_iter().map(|(_, id)| id).collect()
    }

    /// A tracked job whose row is gone (pruned after its end): it no longer counts
    /// among its key's unfinished jobs; what it used is unknown here.
    pub fn forget(&self, job: JobId, now: i64) {
        let mut book = self.lock();
        if let Some((key, _)) = book.jobs.remove(&job)
            && !book.batch_lines.remove(&job)
        {
            key.job_finished(0, now);
        }
    }

    /// Books tracked jobs that ended in another instance (see the module doc).
    pub async fn sweep(&self, store: &Store) {
        let now = crate::clock::now_ms();
        for id in self.due_for_check(now) {
            match store.get(id).await {
                Ok(Some(job)) if job.state.is_terminal() => self.finished(&job),
                Ok(Some(_)) => {}
                Ok(None) => self.forget(id, now),
                Err(error) => {
                    tracing::warn!(%error, "could not read tracked jobs for their keys' usage");
                    return;
                }
            }
        }
    }

    /// Every key's amounts since start, by name.
    pub fn totals(&self) -> BTreeMap<String, Totals> {
        self.lock().totals.clone()
    }

    /// Writes what is pending; on a failure it is kept for the next try.
    pub async fn flush(&self, store: &Store) {
        let (deltas, uses) = {
            let mut book = self.lock();
            let deltas: Vec<UsageDelta> = book.pending.drain().map(|(_, d)| d).collect();
            let uses: Vec<(String, i64)> = book.last_used.drain().collect();
            (deltas, uses)
        };
        if let Err(error) = store.add_key_usage(deltas.clone()).await {
            tracing::warn!(%error, "could not record API key usage; will try again");
            let mut book = self.lock();
            for d in deltas {
                let pending = book.delta(&d.key_name, d.hour);
                pending.requests += d.requests;
                pending.prompt_tokens += d.prompt_tokens;
                pending.completion_tokens += d.completion_tokens;
                pending.gpu_ms += d.gpu_ms;
                pending.loads += d.loads;
            }
        }
        if let Err(error) = store.touch_api_keys(uses).await {
            tracing::warn!(%error, "could not record API keys' last use");
        }
    }
}

/// Writes the ledger to the store every second until `shutdown`, then once more. On a
/// shared database it also sweeps for jobs that ended in other instances.
pub async fn flush_until(
    metrics: Arc<crate::metrics::Metrics>,
    store: Store,
    shutdown: CancellationToken,
) {
    let ledger = &metrics.usage;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(FLUSH_EVERY) => {
                if store.is_shared() {
                    ledger.sweep(&store).await;
                }
                ledger.flush(&store).await;
            }
            _ = shutdown.cancelled() => break,
        }
    }
    ledger.flush(&store).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_counts_of_each_family() {
        assert_eq!(
            token_counts(r#"{"prompt_eval_count":12,"eval_count":30,"done":true}"#),
            (12, 30)
        );
        assert_eq!(
            token_counts(r#"{"usage":{"prompt_tokens":5,"completion_tokens":7}}"#),
            (5, 7)
        );
        assert_eq!(
            token_counts(r#"{"usage":{"input_tokens":3,"output_tokens":4}}"#),
            (3, 4)
        );
        assert_eq!(token_counts(r#"{"embeddings":[]}"#), (0, 0));
        assert_eq!(token_counts("not json"), (0, 0));
    }
}
