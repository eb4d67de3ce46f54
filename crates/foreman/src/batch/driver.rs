//! The batch driver: one task per foreman that takes every open batch through its states,
//! a step at a time, from what the store holds.
//!
//! - `validating`: every line is checked ([`lines::check`]); errors make the batch
//!   `failed` with them by line, else it goes `in_progress` with its total.
//! - `in_progress`: lines are enqueued a chunk per commit, at most `FOREMAN_BATCH_QUEUED`
//!   of them unfinished at once, so the batch neither fills the queue live requests need
//!   nor holds the store's writer; the lines' jobs are read to count what finished. An
//!   embeddings batch's consecutive lines that can share a call are one job
//!   ([`groups`], at most `FOREMAN_BATCH_EMBED_GROUP` lines, never across a chunk), so
//!   the stored count of enqueued lines always ends a group. Past
//!   `expires_at` the batch is finalised as `expired`; with every line finished, as
//!   `completed`.
//! - `cancelling` (a cancel call) and `finalizing` towards `expired`: the lines still
//!   queued are cancelled and running ones stopped; once every line's job has ended the
//!   output is written ([`finalise`]) and the batch ends.
//! - A batch that ended with a webhook to send is announced ([`notify`]).
//!
//! Every write of a step is guarded by the status the step read, so a cancel that lands
//! meanwhile wins. Nothing a step knows is only in memory: after a crash the next driver
//! re-reads the row, recounts the lines' jobs (walking the enqueued lines through the
//! jobs' metadata: a job says how many lines it covers) and enqueues from the stored
//! count (a group's job is found again by its first line's key, never made twice). On
//! PostgreSQL, a batch is driven by the instance holding its lease (`Lease::Batch`),
//! taken for `FOREMAN_LEASE_TTL` and renewed at every step.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foreman_store::{
    Batch, BatchStatus, CancelOutcome, Job, JobFailure, JobId, JobState, Lease, Store,
};
use serde_json::Value;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::lines::{self, Checked, JobSettings, Reader};
use super::{Endpoint, finalise, groups, ids, notify, storage};
use crate::clock::now_ms;
use crate::config::Config;
use crate::hub::{Hub, Outcome};
use crate::metrics::Metrics;
use crate::runner::RunningJobs;
use crate::targets::Targets;

/// Lines enqueued per commit.
const CHUNK: usize = 500;
/// How often open batches are looked at without a wake-up.
const TICK: Duration = Duration::from_secs(1);
/// After a job ends, how long the driver lets others end before it counts them: at most
/// a few passes over the pending lines a second.
const SETTLE: Duration = Duration::from_millis(250);
/// Jobs read in one query while counting, stopping or finalising.
pub(super) const READS_AT_ONCE: usize = 500;

/// Everything the driver reads and wakes.
#[derive(Clone)]
pub struct Driver {
    pub store: Store,
    pub config: Arc<Config>,
    pub targets: Arc<Targets>,
    pub running: Arc<RunningJobs>,
    pub hub: Arc<Hub>,
    pub metrics: Arc<Metrics>,
    /// Rung after lines are enqueued (the runners').
    pub wake: Arc<Notify>,
    /// Rung by the API when a batch is created or cancelled.
    pub kick: Arc<Notify>,
    /// Rung when jobs end.
    pub finished: Arc<Notify>,
    /// The API keys: a batch's lines are its creator's work (models it may use, usage).
    pub keys: Arc<crate::keys::KeyRing>,
}

/// What the driver keeps between steps of one batch; all of it can be rebuilt from the store.
#[derive(Default)]
struct Tracked {
    /// Enqueued jobs not seen ending: each job's first line and the lines it covers.
    pending: BTreeMap<u64, u64>,
    /// The lines the jobs of `pending` cover (`FOREMAN_BATCH_QUEUED` counts lines).
    pending_lines: u64,
    /// Whether `pending` was filled from the stored count of enqueued lines.
    loaded: bool,
    completed: i64,
    failed: i64,
    /// Where the next line to enqueue is read from, and its index.
    cursor: Option<(Reader, u64)>,
    /// Jobs (by first line) already asked to stop (asked once).
    stopped: HashSet<u64>,
}

impl Tracked {
    fn track(&mut self, first: u64, lines: u64) {
        if self.pending.insert(first, lines).is_none() {
            self.pending_lines += lines;
        }
    }

    /// Counts the `lines` of the job at `first` as ended in `state` (`None`: the job was
    /// pruned, its lines failed) and stops tracking it.
    fn ended(&mut self, first: u64, lines: u64, state: Option<JobState>) {
        if let Some(tracked) = self.pending.remove(&first) {
            self.pending_lines -= tracked;
        }
        let lines = lines as i64;
        match state {
            Some(JobState::Succeeded) => self.completed += lines,
            Some(JobState::Failed) | None => self.failed += lines,
            _ => {}
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StepError {
    #[error(transparent)]
    Store(#[from] foreman_store::Error),
    #[error("batch files: {0}")]
    Io(#[from] std::io::Error),
}

impl Driver {
    /// Drives open batches until shutdown.
    pub async fn run(self, shutdown: CancellationToken) {
        let removed = storage::sweep_partial(&self.config.data_dir).await;
        let orphans = storage::sweep_orphans(&self.store, &self.config.data_dir).await;
        if removed + orphans > 0 {
            tracing::info!(removed, orphans, "removed files a crash left unrecorded");
        }
        let sending: Arc<Mutex<HashSet<String>>> = Arc::default();
        let mut tracked: HashMap<String, Tracked> = HashMap::new();
        loop {
            let kicked = self.kick.notified();
            let finished = self.finished.notified();
            tokio::pin!(kicked, finished);
            kicked.as_mut().enable();
            finished.as_mut().enable();
            match self.store.open_batches().await {
                Ok(open) => {
                    let ids: HashSet<String> = open.iter().map(|b| b.id.clone()).collect();
                    tracked.retain(|id, _| ids.contains(id));
                    for batch in open {
                        if shutdown.is_cancelled() {
                            break;
                        }
                        if !self.hold(&batch.id).await {
                            tracked.remove(&batch.id);
                            continue;
                        }
                        let id = batch.id.clone();
                        let entry = tracked.entry(id.clone()).or_default();
                        if let Err(error) = self.drive(batch, entry, &sending).await {
                            tracing::error!(batch = %id, %error, "a batch step failed; it is tried again");
                            tracked.remove(&id);
                        }
                    }
                }
                Err(error) => tracing::error!(%error, "cannot read the open batches"),
            }
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = &mut kicked => {}
                _ = &mut finished => tokio::time::sleep(SETTLE).await,
                _ = tokio::time::sleep(TICK) => {}
            }
        }
    }

    /// Takes or renews this instance's lease on the batch.
    async fn hold(&self, id: &str) -> bool {
        let ttl = i64::try_from(self.config.lease_ttl.as_millis()).unwrap_or(i64::MAX);
        match self
            .store
            .acquire_lease(Lease::Batch(id), &self.config.instance_id, now_ms(), ttl)
            .await
        {
            Ok(held) => held,
            Err(error) => {
                tracing::warn!(batch = %id, %error, "cannot take the batch's lease");
                false
            }
        }
    }

    /// Steps one batch until it waits for something.
    async fn drive(
        &self,
        mut batch: Batch,
        tracked: &mut Tracked,
        sending: &Arc<Mutex<HashSet<String>>>,
    ) -> Result<(), StepError> {
        loop {
            let read = batch.status;
            let moved = match read {
                BatchStatus::Validating => self.validate(&mut batch).await?,
                BatchStatus::InProgress => self.advance(&mut batch, tracked).await?,
                BatchStatus::Cancelling | BatchStatus::Finalizing => {
                    self.finish(&mut batch, tracked).await?
                }
                _ => {
                    self.announce(&batch, sending).await?;
                    return Ok(());
                }
            };
            if !moved {
                return Ok(());
            }
            if !self.store.save_batch(batch.clone(), read).await? {
                // Something else (a cancel) moved it: read it again next time.
                *tracked = Tracked::default();
                return Ok(());
            }
            if batch.status == read {
                return Ok(());
            }
            tracing::info!(batch = %batch.id, status = %batch.status, "batch moved on");
        }
    }

    /// `validating` → `in_progress` or `failed`. Returns whether the batch changed.
    async fn validate(&self, batch: &mut Batch) -> Result<bool, StepError> {
        let now = now_ms();
        let Some(kind) = Endpoint::parse(&batch.endpoint).map(Endpoint::job_kind) else {
            fail(
                batch,
                vec![lines::error(
                    "invalid_url",
                    format!("endpoint {} cannot run in a batch", batch.endpoint),
                    Some("endpoint"),
                    None,
                )],
                now,
            );
            return Ok(true);
        };
        let key = match self.creator(batch).await {
            Ok(key) => key,
            Err(refusal) => {
                fail(batch, vec![refusal], now);
                return Ok(true);
            }
        };
        let path = storage::path(&self.config.data_dir, &batch.input_file_id);
        let checked = match lines::check(
            &path,
            &batch.endpoint,
            kind,
            self.config.batch.max_lines,
            &self.targets,
            key.as_deref(),
        )
        .await
        {
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Checked::Invalid {
                errors: vec![lines::error(
                    "file_not_found",
                    format!("input file {} was deleted", batch.input_file_id),
                    Some("input_file_id"),
                    None,
                )],
            },
            other => other?,
        };
        match checked {
            Checked::Valid { lines } => {
                batch.status = BatchStatus::InProgress;
                batch.in_progress_at = Some(now);
                batch.total = lines as i64;
            }
            Checked::Invalid { errors } => fail(batch, errors, now),
        }
        Ok(true)
    }

    /// `in_progress`: enqueue more lines, count what ended, and move on when every line
    /// ended or the window closed.
    async fn advance(&self, batch: &mut Batch, tracked: &mut Tracked) -> Result<bool, StepError> {
        let now = now_ms();
        if now >= batch.expires_at {
            batch.status = BatchStatus::Finalizing;
            batch.ending = Some(BatchStatus::Expired);
            batch.expired_at = Some(now);
            batch.finalizing_at = Some(now);
            return Ok(true);
        }
        self.load(batch, tracked).await?;
        let before = (batch.completed, batch.failed, batch.enqueued);
        self.count(batch, tracked).await?;
        self.enqueue(batch, tracked).await?;
        if batch.enqueued >= batch.total && tracked.pending.is_empty() {
            batch.status = BatchStatus::Finalizing;
            batch.ending = Some(BatchStatus::Completed);
            batch.finalizing_at = Some(now);
            return Ok(true);
        }
        Ok(before != (batch.completed, batch.failed, batch.enqueued))
    }

    /// `cancelling`, or `finalizing`: stop what has not run (unless every line is to
    /// run), wait for every line's job to end, write the output and end the batch.
    async fn finish(&self, batch: &mut Batch, tracked: &mut Tracked) -> Result<bool, StepError> {
        let ending = batch.ending.unwrap_or(BatchStatus::Completed);
        self.load(batch, tracked).await?;
        let before = (batch.completed, batch.failed);
        self.count(batch, tracked).await?;
        if ending != BatchStatus::Completed {
            self.stop(batch, tracked).await?;
            self.count(batch, tracked).await?;
        }
        if !tracked.pending.is_empty() {
            return Ok(before != (batch.completed, batch.failed));
        }
        let written = finalise::write(self, batch, ending).await?;
        let now = now_ms();
        batch.output_file_id = written.output_file_id;
        batch.error_file_id = written.error_file_id;
        batch.completed = written.completed;
        batch.failed = written.failed;
        batch.status = ending;
        match ending {
            BatchStatus::Cancelled => batch.cancelled_at = Some(now),
            BatchStatus::Expired => {
                batch.expired_at.get_or_insert(now);
            }
            _ => batch.completed_at = Some(now),
        }
        Ok(true)
    }

    /// Fills `pending` from the store, once per tracking (after a restart too): walks the
    /// enqueued lines from the first, each job found saying how many lines it covers;
    /// a line without a job is one pruned line (failed), and the walk goes on at the
    /// next. Jobs that already ended are counted rather than tracked.
    async fn load(&self, batch: &Batch, tracked: &mut Tracked) -> Result<(), StepError> {
        if tracked.loaded {
            return Ok(());
        }
        tracked.pending.clear();
        tracked.pending_lines = 0;
        tracked.completed = 0;
        tracked.failed = 0;
        let end = batch.enqueued.max(0) as u64;
        let mut jobs = Window::default();
        let mut line = 0u64;
        while line < end {
            match jobs.take(self, batch, line, end).await? {
                Some(job) => {
                    let covers = groups::covered(&job).min(end - line);
                    tracked.track(line, covers);
                    if job.state.is_terminal() {
                        tracked.ended(line, covers, Some(job.state));
                    }
                    line += covers;
                }
                None => {
                    tracked.track(line, 1);
                    tracked.ended(line, 1, None);
                    line += 1;
                }
            }
        }
        tracked.loaded = true;
        Ok(())
    }

    /// Reads the pending jobs, a query per [`READS_AT_ONCE`]; those that ended leave
    /// `pending` and their lines are counted.
    async fn count(&self, batch: &mut Batch, tracked: &mut Tracked) -> Result<(), StepError> {
        let firsts: Vec<u64> = tracked.pending.keys().copied().collect();
        for chunk in firsts.chunks(READS_AT_ONCE) {
            let found = self.read_lines(batch, chunk).await?;
            for &first in chunk {
                let covers = tracked.pending.get(&first).copied().unwrap_or(1);
                match found.get(&first) {
                    Some(job) if !job.state.is_terminal() => {}
                    // Pruned before the batch ended (`None`): its lines count as failed,
                    // and say so in the error file.
                    job => tracked.ended(first, covers, job.map(|job| job.state)),
                }
            }
        }
        batch.completed = tracked.completed;
        batch.failed = tracked.failed;
        Ok(())
    }

    /// The jobs whose first line is among `firsts`, in one read, by first line.
    async fn read_lines(
        &self,
        batch: &Batch,
        firsts: &[u64],
    ) -> Result<HashMap<u64, Job>, StepError> {
        let by_id: HashMap<JobId, u64> = firsts
            .iter()
            .map(|&line| (ids::line_job_id(&batch.id, batch.created_at, line), line))
            .collect();
        let ids: Vec<JobId> = by_id.keys().copied().collect();
        Ok(self
            .store
            .get_many(&ids)
            .await?
            .into_iter()
            .filter_map(|job| by_id.get(&job.id).map(|&line| (line, job)))
            .collect())
    }

    /// The live key that created `batch`: `None` when foreman ran open (no caller), an
    /// error line for the batch when that key was revoked or deleted since.
    async fn creator(
        &self,
        batch: &Batch,
    ) -> Result<Option<Arc<crate::keys::live::LiveKey>>, serde_json::Value> {
        let Some(caller) = &batch.caller else {
            return Ok(None);
        };
        self.keys.refresh_if_stale().await;
        match self.keys.named(&caller.name) {
            Some(crate::keys::ring::Identity::Key(key)) => Ok(Some(key)),
            _ => Err(lines::error(
                "key_revoked",
                format!(
                    "the API key '{}' that created this batch was revoked",
                    caller.name
                ),
                None,
                None,
            )),
        }
    }

    /// Enqueues lines until `FOREMAN_BATCH_QUEUED` are unfinished or all are in, a
    /// chunk per commit.
    async fn enqueue(&self, batch: &mut Batch, tracked: &mut Tracked) -> Result<(), StepError> {
        let Some(endpoint) = Endpoint::parse(&batch.endpoint) else {
            return Ok(());
        };
        let kind = endpoint.job_kind();
        let group = match groups::groups(endpoint) {
            true => self.config.batch.embed_group as usize,
            false => 1,
        };
        let room = |tracked: &Tracked| {
            (self.config.batch.queued as usize).saturating_sub(tracked.pending_lines as usize)
        };
        if batch.enqueued >= batch.total || room(tracked) == 0 {
            return Ok(());
        }
        // The lines are the creator's work, looked up once for every chunk of this
        // step; a key revoked since is no longer booked (its lines were admitted when
        // the batch was).
        let key = self.creator(batch).await.ok().flatten();
        while batch.enqueued < batch.total && room(tracked) > 0 {
            if tracked.cursor.is_none() {
                let path = storage::path(&self.config.data_dir, &batch.input_file_id);
                let mut reader = Reader::open(&path).await?;
                for _ in 0..batch.enqueued {
                    reader.next().await?;
                }
                tracked.cursor = Some((reader, batch.enqueued as u64));
            }
            let take = room(tracked).min(CHUNK);
            let (reader, next) = tracked.cursor.as_mut().expect("opened above");
            let settings = JobSettings {
                batch_id: &batch.id,
                created_at: batch.created_at,
                kind,
                priority: self.config.batch.priority,
                max_attempts: self.config.max_attempts,
                pins: &self.config.pins,
                caller: batch.caller.as_ref(),
            };
            let mut read = Vec::with_capacity(take);
            let first = *next;
            while read.len() < take && (*next as i64) < batch.total {
                let Some((number, text)) = reader.next().await? else {
                    break;
                };
                let line = lines::parse(&text).ok_or_else(|| {
                    std::io::Error::other(format!(
                        "line {number} of {} no longer parses",
                        batch.input_file_id
                    ))
                })?;
                read.push(line);
                *next += 1;
            }
            if read.is_empty() {
                // The file ended early: it changed under the batch.
                return Err(std::io::Error::other(format!(
                    "input file {} has fewer lines than validated",
                    batch.input_file_id
                ))
                .into());
            }
            // Groups end at the chunk's end, so the stored count of enqueued lines
            // (`upto`) is always where a group ends.
            let mut spans = Vec::new();
            let mut jobs = Vec::new();
            let mut at = 0usize;
            for size in groups::plan(&read, group) {
                let line = first + at as u64;
                jobs.push(groups::job(&settings, line, &read[at..at + size]));
                spans.push((line, size as u64));
                at += size;
            }
            let upto = *next;
            match self
                .store
                .enqueue_batch_lines(&batch.id, jobs, upto as i64, now_ms())
                .await
            {
                Ok(created) => {
                    for job in &created {
                        self.metrics.enqueued(job);
                        if let Some(key) = &key {
                            self.metrics.usage.enqueued_for_batch(job, key.clone());
                        }
                    }
                }
                Err(error) => {
                    tracked.cursor = None;
                    return Err(error.into());
                }
            }
            for (line, size) in spans {
                tracked.track(line, size);
            }
            batch.enqueued = upto as i64;
            self.wake.notify_waiters();
        }
        Ok(())
    }

    /// Cancels the pending lines' jobs: queued ones first, so that no runner freed by a
    /// stopped line takes another of them in between; then the running ones are stopped
    /// (their upstream request dropped).
    async fn stop(&self, batch: &Batch, tracked: &mut Tracked) -> Result<(), StepError> {
        let reason = match batch.ending {
            Some(BatchStatus::Expired) => "the batch expired before this request ran",
            _ => "the batch was cancelled before this request ran",
        };
        let firsts: Vec<u64> = tracked
            .pending
            .keys()
            .copied()
            .filter(|line| !tracked.stopped.contains(line))
            .collect();
        let mut running = Vec::new();
        for chunk in firsts.chunks(READS_AT_ONCE) {
            let found = self.read_lines(batch, chunk).await?;
            for first in chunk {
                match found.get(first) {
                    Some(job) if job.state == JobState::Queued => {
                        self.cancel(job.id, reason).await?
                    }
                    Some(job) if job.state == JobState::Running => running.push(job.id),
                    _ => {}
                }
                tracked.stopped.insert(*first);
            }
        }
        for id in running {
            self.cancel(id, reason).await?;
        }
        Ok(())
    }

    async fn cancel(&self, id: foreman_store::JobId, reason: &str) -> Result<(), StepError> {
        let failure = JobFailure {
            status: 499,
            message: reason.to_owned(),
        };
        match self.store.cancel(id, now_ms(), failure).await? {
            CancelOutcome::Requested(_) => {
                self.running.cancel(id);
            }
            CancelOutcome::Cancelled(job) => {
                self.metrics.finished(&job);
                self.hub.finish(id, Outcome::Cancelled);
                self.hub.job_changed(id);
            }
            CancelOutcome::AlreadyFinished(_) | CancelOutcome::NotFound => {}
        }
        Ok(())
    }

    /// A batch that ended: its webhook, once, in a task of its own; then marked done.
    async fn announce(
        &self,
        batch: &Batch,
        sending: &Arc<Mutex<HashSet<String>>>,
    ) -> Result<(), StepError> {
        let (Some(url), Some(key)) = (&batch.webhook_url, &self.config.webhook_key) else {
            let mut done = batch.clone();
            done.webhook_done = true;
            if self.store.save_batch(done, batch.status).await? {
                release(&self.store, &batch.id, &self.config.instance_id).await;
            }
            return Ok(());
        };
        if !sending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(batch.id.clone())
        {
            return Ok(());
        }
        let notifier = notify::Notifier::from_config(&self.config, key.clone());
        let (store, batch, url, sending) = (
            self.store.clone(),
            batch.clone(),
            url.clone(),
            sending.clone(),
        );
        let owner = self.config.instance_id.clone();
        tokio::spawn(async move {
            let delivered = notifier.deliver(&url, &batch).await;
            tracing::info!(batch = %batch.id, delivered, "batch webhook");
            let mut done = batch.clone();
            done.webhook_done = true;
            match store.save_batch(done, batch.status).await {
                Ok(true) => release(&store, &batch.id, &owner).await,
                Ok(false) => {}
                Err(error) => {
                    tracing::error!(batch = %batch.id, %error, "cannot record the batch webhook")
                }
            }
            sending
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&batch.id);
        });
        Ok(())
    }
}

/// Gives up the lease of a batch the driver is done with, so its row goes.
async fn release(store: &Store, id: &str, owner: &str) {
    if let Err(error) = store.release_lease(Lease::Batch(id), owner).await {
        tracing::warn!(batch = %id, %error, "cannot release the batch's lease");
    }
}

fn fail(batch: &mut Batch, errors: Vec<Value>, now: i64) {
    batch.status = BatchStatus::Failed;
    batch.failed_at = Some(now);
    batch.errors = Some(Value::Array(errors).to_string());
}

/// The jobs of a run of consecutive lines, read a query at a time while a walk over the
/// enqueued lines goes forward (a grouped job's other lines have no job of their own).
#[derive(Default)]
pub(super) struct Window {
    jobs: HashMap<JobId, Job>,
    /// The lines `jobs` was read for end here.
    end: u64,
}

impl Window {
    /// The job whose first line is `line` (`None`: there is none), reading the jobs of
    /// the next [`READS_AT_ONCE`] lines (up to `last`, excluded) when `line` is past
    /// those read.
    pub(super) async fn take(
        &mut self,
        driver: &Driver,
        batch: &Batch,
        line: u64,
        last: u64,
    ) -> Result<Option<Job>, StepError> {
        let id = ids::line_job_id(&batch.id, batch.created_at, line);
        if line >= self.end {
            self.end = (line + READS_AT_ONCE as u64).min(last).max(line + 1);
            let ids: Vec<JobId> = (line..self.end)
                .map(|line| ids::line_job_id(&batch.id, batch.created_at, line))
                .collect();
            self.jobs = driver
                .store
                .get_many(&ids)
                .await?
                .into_iter()
                .map(|job| (job.id, job))
                .collect();
        }
        Ok(self.jobs.remove(&id))
    }
}
