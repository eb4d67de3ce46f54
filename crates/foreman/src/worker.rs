//! The worker: one per GPU target, running jobs one at a time.
//!
//! Each turn it asks the store for the queue's heads, lets the [`scheduler`]'s policy
//! pick a job (priority first, then draining the resident model, with the wait bound),
//! claims it with a lease, sends the client's body to the target untouched, relays the
//! answer to the waiting caller through the [`hub`], and records the outcome:
//! - success: the result (the `stream:false`-equivalent object) is stored;
//! - a retryable failure (target unreachable, timeout, broken connection, 503) before
//!   any output reached a caller: back to the queue with exponential backoff and
//!   jitter, until `max_attempts`;
//! - any other failure: failed at once, with the target's status and error;
//! - a cancel (client gone, or a cancel call): the upstream request is dropped, which
//!   makes the target stop, and the job ends cancelled;
//! - shutdown: the running job gets a grace period, then is requeued.
//!
//! A caller's response ends as soon as the target's answer is relayed, and the
//! outcome is recorded in a task of its own while the worker claims the next job, so
//! that one commit (one fsync) carries this outcome, the next claim and whatever
//! enqueues are waiting. The job itself was durable before it ran; if foreman dies
//! before its outcome is committed, recovery runs it again (at least once, as after
//! any crash mid-job). The job stays in [`RunningJobs`] until the commit, and anyone
//! who reads it back (the jobs API, long polls, event streams, webhooks) sees it end
//! only then. Shutdown waits for outcomes still being recorded.
//!
//! [`scheduler`]: crate::scheduler
//! [`hub`]: crate::hub

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use foreman_store::{ClaimParams, Job, JobFailure, JobId, JobState, Store};
use futures::StreamExt;
use serde_json::json;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::aggregate::Aggregator;
use crate::clock::now_ms;
use crate::hub::{Hub, Outcome};
use crate::scheduler::{Decision, Policy};
use crate::targets::Inventory;
use crate::upstream::{Upstream, UpstreamError};

/// Longest pause between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// How often an idle worker looks at the queue even without a wake-up (jobs waiting
/// out a retry backoff become eligible this way).
const IDLE_POLL: Duration = Duration::from_millis(250);

/// The cancel switches of running jobs, so that a cancel call or a disconnecting
/// client can stop one.
#[derive(Default)]
pub struct RunningJobs {
    jobs: Mutex<HashMap<JobId, CancellationToken>>,
}

impl RunningJobs {
    fn insert(&self, id: JobId) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(id, token.clone());
        token
    }

    fn remove(&self, id: JobId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, CancellationToken>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops a running job; returns false when it is not running here.
    pub fn cancel(&self, id: JobId) -> bool {
        match self.lock().get(&id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    pub fn contains(&self, id: JobId) -> bool {
        self.lock().contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Settings the worker needs.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// Lease owner name.
    pub name: String,
    pub max_wait: Duration,
    pub lease: Duration,
    pub retry_base: Duration,
    pub shutdown_grace: Duration,
    /// Results over `artifact_threshold` bytes go to files under this folder.
    pub data_dir: std::path::PathBuf,
    pub artifact_threshold: usize,
}

/// The worker for one target.
pub struct Worker {
    pub store: Store,
    pub upstream: Upstream,
    pub hub: Arc<Hub>,
    pub inventory: Arc<Inventory>,
    pub running: Arc<RunningJobs>,
    /// Rung by every enqueue.
    pub wake: Arc<Notify>,
    /// Rung (all waiters) after every recorded outcome, once the job has left `running`.
    pub finished: Arc<Notify>,
    pub settings: WorkerSettings,
}

/// How one attempt went.
enum Attempt {
    Succeeded(String),
    Failed {
        error: UpstreamError,
        /// Some output already reached a caller, so the job cannot be replayed.
        delivered: bool,
    },
    /// The stream carried an `{"error"}` line: the target gave up mid-answer.
    FailedInBand(String),
    Cancelled,
    Interrupted,
}

impl Worker {
    /// Runs jobs until `shutdown`; a running job then gets the grace period, and the
    /// outcomes still being recorded are waited for.
    pub async fn run(self, shutdown: CancellationToken) {
        let worker = Arc::new(self);
        let records = TaskTracker::new();
        worker.run_jobs(&records, &shutdown).await;
        records.close();
        records.wait().await;
    }

    async fn run_jobs(self: &Arc<Self>, records: &TaskTracker, shutdown: &CancellationToken) {
        let mut resident: Option<String> = self.inventory.resident().into_iter().next();
        let mut policy = Policy::new(self.settings.max_wait.as_millis() as i64);
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let woken = self.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            // A target known to be down gets no job: it would only burn an attempt.
            if self.inventory.paused() {
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    _ = tokio::time::sleep(IDLE_POLL) => continue,
                }
            }
            let now = now_ms();
            let turn = tokio::time::Instant::now();
            let heads = match self.store.queue_heads(now).await {
                Ok(heads) => heads,
                Err(error) => {
                    tracing::error!(%error, "cannot read the queue");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            let mut capacity =
                crate::scheduler::Capacity::new(vec![crate::scheduler::TargetState::new(
                    "t", 1, 1,
                )]);
            if let Some(model) = &resident {
                capacity.targets[0].seed(crate::scheduler::LoadKey::new(model.clone(), ""), now);
            }
            match policy.decide(&heads, &capacity, 0, now) {
                Some(decision) => {
                    tracing::trace!(heads_us = turn.elapsed().as_micros() as u64, "queue read");
                    if let Some(model) = self.run_one(decision, records, shutdown).await {
                        resident = Some(model);
                    }
                }
                None => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = &mut woken => {}
                        _ = tokio::time::sleep(IDLE_POLL) => {}
                    }
                }
            }
        }
    }

    /// Claims and runs one job, and starts recording its outcome; returns the model the
    /// target now has loaded, if the target answered.
    ///
    /// The outcome is recorded in a task of its own while the worker goes on to the
    /// next job: the writer then commits this outcome with the next claim (and any
    /// enqueues waiting), one fsync for all, instead of the worker waiting for one
    /// fsync per job. The job stays in `running` until its outcome is committed.
    async fn run_one(
        self: &Arc<Self>,
        decision: Decision,
        records: &TaskTracker,
        shutdown: &CancellationToken,
    ) -> Option<String> {
        let started = tokio::time::Instant::now();
        let cancel = self.running.insert(decision.job);
        let claimed = self
            .store
            .claim(ClaimParams {
                id: decision.job,
                owner: self.settings.name.clone(),
                target: "t".into(),
                now: now_ms(),
                lease_for_ms: self.settings.lease.as_millis() as i64,
            })
            .await;
        let mut job = match claimed {
            Ok(Some(job)) => job,
            Ok(None) => {
                self.running.remove(decision.job);
                return None;
            }
            Err(error) => {
                tracing::error!(%error, job = %decision.job, "claim failed");
                self.running.remove(decision.job);
                tokio::time::sleep(Duration::from_millis(200)).await;
                return None;
            }
        };
        tracing::debug!(job = %job.id, model = %job.model, reason = ?decision.reason, attempt = job.attempts, "running");
        self.inventory.job_started();
        // Readers that join while the job runs get its output from the start.
        let keeper = self.hub.keep(job.id);
        let claimed_at = started.elapsed();
        // The body goes to the target as it is; moving it out spares a copy of what
        // may be megabytes of images on every attempt.
        let payload = Bytes::from(std::mem::take(&mut job.payload));
        let heartbeat = self.spawn_heartbeat(&job);
        let grace_over = async {
            shutdown.cancelled().await;
            tokio::time::sleep(self.settings.shutdown_grace).await;
        };
        let attempt = tokio::select! {
            attempt = self.execute(&job, payload) => attempt,
            _ = cancel.cancelled() => Attempt::Cancelled,
            _ = grace_over => Attempt::Interrupted,
        };
        heartbeat.abort();
        let ran_at = started.elapsed();
        let target_answered = matches!(
            attempt,
            Attempt::Succeeded(_) | Attempt::FailedInBand(_) | Attempt::Cancelled
        );
        let model = target_answered.then(|| job.model.clone());
        let worker = Arc::clone(self);
        records.spawn(async move {
            let recording = tokio::time::Instant::now();
            worker.record(&job, attempt).await;
            drop(keeper);
            worker.running.remove(job.id);
            // After the removal, so that a waiter woken here sees the job no longer running.
            worker.finished.notify_waiters();
            tracing::trace!(
                job = %job.id,
                claim_us = claimed_at.as_micros() as u64,
                run_us = (ran_at - claimed_at).as_micros() as u64,
                record_us = recording.elapsed().as_micros() as u64,
                "job timings"
            );
        });
        self.inventory.job_ended(target_answered);
        model
    }

    fn spawn_heartbeat(&self, job: &Job) -> tokio::task::JoinHandle<()> {
        let store = self.store.clone();
        let (id, attempt, owner) = (job.id, job.attempts, self.settings.name.clone());
        let lease = self.settings.lease;
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                match store
                    .heartbeat(id, attempt, &owner, now_ms(), lease.as_millis() as i64)
                    .await
                {
                    Ok(true) => {}
                    Ok(false) => return,
                    Err(error) => tracing::warn!(%error, job = %id, "heartbeat failed"),
                }
            }
        })
    }

    /// One attempt against the target.
    async fn execute(&self, job: &Job, payload: Bytes) -> Attempt {
        let mut answer = match self.upstream.start_job(job.kind, payload).await {
            Ok(answer) => answer,
            Err(error) => return self.failed_attempt(job.id, error),
        };
        // NDJSON (native) and SSE (OpenAI, Anthropic) answers are relayed as they arrive.
        let streaming = answer.content_type.starts_with("application/x-ndjson")
            || answer.content_type.starts_with("text/event-stream");
        self.hub.start(job.id, &answer.content_type);
        let mut aggregator = Aggregator::default();
        let mut whole = Vec::new();
        while let Some(chunk) = answer.body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                Err(error) => return self.failed_attempt(job.id, error),
            };
            if streaming {
                aggregator.push(&chunk);
                self.hub.chunk(job.id, chunk);
            } else {
                // A single JSON object is passed on only once complete, so a broken
                // connection mid-body can still be retried.
                whole.extend_from_slice(&chunk);
            }
        }
        if !streaming {
            let body = Bytes::from(whole);
            self.hub.chunk(job.id, body.clone());
            return Attempt::Succeeded(String::from_utf8_lossy(&body).into_owned());
        }
        if let Some(error) = aggregator.error() {
            return Attempt::FailedInBand(error.to_string());
        }
        match aggregator.finish() {
            Some(result) => Attempt::Succeeded(result),
            None => self.failed_attempt(
                job.id,
                UpstreamError::Broken("the target sent an empty stream".into()),
            ),
        }
    }

    /// A failed attempt; it can be replayed only if none of its output reached a
    /// reader, and then its output is dropped from the job's feed.
    fn failed_attempt(&self, id: JobId, error: UpstreamError) -> Attempt {
        Attempt::Failed {
            error,
            delivered: !self.hub.rewind(id),
        }
    }

    /// Records a success: the result in the row, or in a file when it is large.
    async fn store_result(
        &self,
        id: JobId,
        attempt: u32,
        result: String,
        now: i64,
    ) -> foreman_store::Result<Option<Job>> {
        if result.len() > self.settings.artifact_threshold {
            match crate::artifacts::write_result(&self.settings.data_dir, id, &result).await {
                Ok(artifact) => {
                    let listed = serde_json::to_string(&[artifact]).expect("artifacts serialise");
                    return self
                        .store
                        .complete_with_artifacts(id, attempt, listed, now)
                        .await;
                }
                Err(error) => {
                    tracing::error!(%error, job = %id, "cannot write the result file; keeping it in the database");
                }
            }
        }
        self.store.complete(id, attempt, result, now).await
    }

    async fn record(&self, job: &Job, attempt: Attempt) {
        let (id, number, now) = (job.id, job.attempts, now_ms());
        let stored = match attempt {
            Attempt::Succeeded(result) => {
                // The caller has the whole answer: end its response now rather than
                // after the fsync of the record (see the module doc).
                self.hub.finish(id, Outcome::Succeeded);
                self.store_result(id, number, result, now).await
            }
            Attempt::FailedInBand(message) => {
                let failure = JobFailure {
                    status: 500,
                    message,
                };
                // The caller already has a 200 stream; its error line came with it.
                self.hub.finish(id, Outcome::FailedInStream);
                self.store.fail(id, number, failure, now).await
            }
            Attempt::Failed { error, delivered } => {
                let failure = JobFailure {
                    status: error.status(),
                    message: error.message(),
                };
                let passthrough = match &error {
                    UpstreamError::Status {
                        content_type, body, ..
                    } => Some((content_type.clone(), body.clone())),
                    _ => None,
                };
                if error.is_retryable() && !delivered {
                    let run_after = now
                        + crate::backoff::exponential(self.settings.retry_base, number, MAX_BACKOFF)
                            .as_millis() as i64;
                    tracing::info!(job = %id, attempt = number, %error, "retrying");
                    let stored = self
                        .store
                        .retry_or_fail(id, number, failure.clone(), run_after, now)
                        .await;
                    if let Ok(Some(job)) = &stored
                        && job.state == JobState::Failed
                    {
                        self.hub.finish(id, failed(&failure, passthrough));
                    }
                    stored
                } else {
                    tracing::info!(job = %id, %error, "job failed");
                    let stored = self.store.fail(id, number, failure.clone(), now).await;
                    self.hub.finish(id, failed(&failure, passthrough));
                    stored
                }
            }
            Attempt::Cancelled => {
                let stored = self.store.finish_cancelled(id, number, now).await;
                self.hub.finish(id, Outcome::Cancelled);
                stored
            }
            Attempt::Interrupted => {
                tracing::info!(job = %id, "shutdown grace over; job requeued");
                let stored = self.store.requeue(id, number, now).await;
                self.hub.finish(
                    id,
                    failed(
                        &JobFailure {
                            status: 503,
                            message: "foreman is shutting down; the job was requeued".into(),
                        },
                        None,
                    ),
                );
                stored
            }
        };
        match stored {
            Ok(Some(_)) => {}
            Ok(None) => tracing::warn!(job = %id, "the job changed hands; outcome dropped"),
            Err(error) => tracing::error!(%error, job = %id, "cannot record the outcome"),
        }
    }
}

/// The caller-facing form of a failure: the target's own body when it sent one,
/// otherwise an Ollama-shaped error.
fn failed(failure: &JobFailure, passthrough: Option<(String, Bytes)>) -> Outcome {
    let (content_type, body) = passthrough.unwrap_or_else(|| {
        (
            "application/json; charset=utf-8".to_string(),
            Bytes::from(json!({ "error": failure.message }).to_string()),
        )
    });
    Outcome::Failed {
        status: failure.status,
        content_type,
        body,
    }
}
