//! One attempt at a claimed job on one target, and the recording of how it went.
//!
//! The client's body goes to the target untouched (but for the `keep_alive` of a job
//! with more of its load key queued, see [`keep_alive`](super::keep_alive)); the answer
//! is relayed to the waiting callers through the [`Hub`], and folded into the job's
//! stored result. The outcome:
//! - success: the result (the `stream:false`-equivalent object) is stored;
//! - the target cannot be reached: the target is paused, and the job goes back to the
//!   queue without spending an attempt (no job burns its attempts on a target known to
//!   be down; the runners claim nothing for it until it answers a poll);
//! - another retryable failure (timeout, broken connection, 503/429/502/504) before any
//!   output reached a caller: back to the queue with exponential backoff and jitter,
//!   until `max_attempts`;
//! - any other failure: failed at once, with the target's status and error;
//! - a cancel (client gone, or a cancel call): the upstream request is dropped, which
//!   makes the target stop, and the job ends cancelled;
//! - shutdown: the running job gets a grace period, then is requeued.
//!
//! The outcome is recorded in a task of its own while the runner goes on to claim its
//! next job, so that one commit (one fsync) carries this outcome, the next claim and
//! whatever enqueues are waiting. The job was durable before it ran; if foreman dies
//! before its outcome is committed, recovery runs it again (at least once). It stays
//! in [`RunningJobs`](super::RunningJobs) until the commit, and anyone who reads it back
//! (the jobs API, long polls, event streams, webhooks) sees it end only then.
//!
//! A caller is never told an answer is complete before its outcome is committed: the
//! chunk that ends the answer (the `"done": true` line, `data: [DONE]`, the last event;
//! a whole `stream:false` body) is held back, the outcome committed, and only then is
//! that chunk relayed and the response ended. So a caller who has its whole answer
//! finds its job finished after any crash, and the work is not run again for nobody;
//! the cost is one commit's latency at the end of each answer, not per token.
//!
//! When the job's readers are on other instances (a shared store, and no reader in this
//! process), its chunks also go to the store through a [`Forwarder`], and the held end
//! is written there as the `last` batch before the outcome's commit; the readers'
//! instances relay it only once they read the row terminal (see `output_relay.rs`).
//! Output written there counts as delivered: such an attempt is not retried.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use foreman_store::{Job, JobFailure, JobId, JobState, Store};
use futures::StreamExt;

use crate::aggregate::Aggregator;
use crate::clock::now_ms;
use crate::hub::{Hub, Outcome, TargetAnswer};
use crate::output_relay::Forwarder;
use crate::upstream::{Upstream, UpstreamError};

/// Longest pause between two retries.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// How one attempt went.
pub(super) enum Attempt {
    /// The result to store, and the end of the answer, held back until it is stored.
    Succeeded {
        result: String,
        held: Bytes,
    },
    Failed(UpstreamError),
    /// The stream carried an `{"error"}` line: the target gave up mid-answer. The
    /// chunks from that line on are held back until the failure is stored.
    FailedInBand {
        message: String,
        held: Bytes,
    },
    /// The target refused the connection: it is down, and the job did not start.
    TargetDown(String),
    /// Stopped by a cancel (its reason is in the row, from the cancel request).
    Cancelled,
    Interrupted,
    /// A heartbeat found the job rescued from this owner: another attempt has it, so
    /// nothing is recorded (the store would refuse it anyway).
    LeaseLost,
}

impl Attempt {
    /// Whether the target ran the request (and so may have loaded or unloaded a model).
    pub(super) fn reached_target(&self) -> bool {
        matches!(
            self,
            Attempt::Succeeded { .. }
                | Attempt::FailedInBand { .. }
                | Attempt::Cancelled
                | Attempt::LeaseLost
        )
    }
}

/// What happens to a job after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum AfterFailure {
    /// Queued again, if attempts remain.
    Retry,
    Fail,
}

/// Whether a failed attempt may run again: a retryable error, and none of the
/// attempt's output reached a reader (it cannot be taken back).
pub(super) fn after_failure(error: &UpstreamError, output_delivered: bool) -> AfterFailure {
    if error.is_retryable() && !output_delivered {
        AfterFailure::Retry
    } else {
        AfterFailure::Fail
    }
}

/// Settings an attempt needs.
#[derive(Debug, Clone)]
pub struct AttemptSettings {
    pub retry_base: Duration,
    /// Results over `artifact_threshold` bytes go to files under this folder.
    pub data_dir: std::path::PathBuf,
    pub artifact_threshold: usize,
}

/// Runs and records attempts.
pub(super) struct Attempts {
    pub store: Store,
    pub hub: Arc<Hub>,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub settings: AttemptSettings,
}

impl Attempts {
    /// A forwarder of `job`'s output to the store, when its readers are elsewhere.
    pub(super) fn forwarder(&self, job: &Job) -> Option<Forwarder> {
        Forwarder::for_job(&self.store, &self.hub, job.id, job.attempts)
    }

    /// One attempt at `job` with `payload` against `upstream`; the output also goes to
    /// `forward` when there is one.
    pub(super) async fn execute(
        &self,
        upstream: &Upstream,
        job: &Job,
        payload: Bytes,
        forward: Option<&Forwarder>,
    ) -> Attempt {
        let mut answer = match upstream.start_job(job.kind, payload).await {
            Ok(answer) => answer,
            Err(UpstreamError::Unreachable(reason)) => return Attempt::TargetDown(reason),
            Err(error) => return Attempt::Failed(error),
        };
        // NDJSON (native) and SSE (OpenAI, Anthropic) answers are relayed as they arrive.
        let streaming = answer.content_type.starts_with("application/x-ndjson")
            || answer.content_type.starts_with("text/event-stream");
        self.hub.start(job.id, &answer.content_type);
        if let Some(forward) = forward {
            forward.start(&answer.content_type);
        }
        let mut aggregator = Aggregator::default();
        let mut whole = Vec::new();
        let mut awaiting_first_output = true;
        // From the chunk that ends the answer on, nothing is relayed before the
        // outcome is committed (see the module doc).
        let mut held: Option<Vec<u8>> = None;
        while let Some(chunk) = answer.body.next().await {
            let chunk = match chunk {
                Ok(chunk) => chunk,
                // The whole answer is in hand; what broke is only the end of the body.
                Err(_) if aggregator.ended() => break,
                Err(error) => return Attempt::Failed(error),
            };
            if std::mem::take(&mut awaiting_first_output) {
                self.metrics.first_token(job, now_ms());
            }
            if !streaming {
                // A single JSON object is passed on only once complete, so a broken
                // connection mid-body can still be retried.
                whole.extend_from_slice(&chunk);
                continue;
            }
            aggregator.push(&chunk);
            match held.as_mut() {
                Some(held) => held.extend_from_slice(&chunk),
                None if aggregator.ended() => held = Some(chunk.to_vec()),
                None => {
                    if let Some(forward) = forward {
                        forward.chunk(chunk.clone());
                    }
                    self.hub.chunk(job.id, chunk)
                }
            }
        }
        if !streaming {
            let body = Bytes::from(whole);
            return Attempt::Succeeded {
                result: String::from_utf8_lossy(&body).into_owned(),
                held: body,
            };
        }
        let held = Bytes::from(held.unwrap_or_default());
        if let Some(error) = aggregator.error() {
            return Attempt::FailedInBand {
                message: error.to_string(),
                held,
            };
        }
        match aggregator.finish() {
            Some(result) => Attempt::Succeeded { result, held },
            None => Attempt::Failed(UpstreamError::Broken(
                "the target sent an empty stream".into(),
            )),
        }
    }

    /// Records how the attempt went, and tells the waiting callers. The record presents the
    /// attempt number and `owner`, the lease owner the job was claimed as, so it changes
    /// nothing if the job has meanwhile passed to another attempt or another owner.
    pub(super) async fn record(
        &self,
        job: &Job,
        owner: &str,
        attempt: Attempt,
        forwarder: Option<Forwarder>,
    ) {
        let (id, number, now) = (job.id, job.attempts, now_ms());
        // The end of an answer goes to the store before the commit, and readers elsewhere
        // relay it only once the commit is done; any other outcome drops what is unsent.
        let mut forwarded = false;
        match (&attempt, forwarder) {
            (
                Attempt::Succeeded { held, .. } | Attempt::FailedInBand { held, .. },
                Some(forwarder),
            ) => forwarder.finish(held.clone()).await,
            (_, Some(forwarder)) => forwarded = forwarder.abandon(),
            (_, None) => {}
        }
        let stored = match attempt {
            Attempt::Succeeded { result, held } => {
                // Committed first, then the end of the answer (see the module doc).
                let stored = self.store_result(id, number, owner, result, now).await;
                self.relay_held(id, held);
                self.hub.finish(id, Outcome::Succeeded);
                stored
            }
            Attempt::FailedInBand { message, held } => {
                let failure = JobFailure {
                    status: 500,
                    message,
                };
                // The caller already has a 200 stream; its error line comes with the
                // held chunks, once the failure is committed.
                let stored = self.store.fail(id, number, owner, failure, now).await;
                self.relay_held(id, held);
                self.hub.finish(id, Outcome::FailedInStream);
                stored
            }
            Attempt::TargetDown(reason) => {
                // Nothing was sent, so nothing reached anyone; the callers wait on.
                self.hub.rewind(id);
                tracing::info!(job = %id, %reason, "target down; job requeued without using an attempt");
                let stored = self.store.requeue(id, number, owner, now).await;
                if let Ok(Some(job)) = &stored
                    && job.state == JobState::Cancelled
                {
                    self.hub.finish(id, Outcome::Cancelled);
                }
                stored
            }
            Attempt::Failed(error) => {
                self.record_failure(id, number, owner, error, forwarded, now)
                    .await
            }
            Attempt::Cancelled => {
                // Why is in the row already, written with the cancel request.
                let stored = self.store.finish_cancelled(id, number, owner, now).await;
                self.hub.finish(id, Outcome::Cancelled);
                stored
            }
            Attempt::LeaseLost => {
                // Readers here get no more of this run; the job runs again elsewhere.
                self.hub.finish(
                    id,
                    Outcome::Failed {
                        failure: JobFailure {
                            status: 503,
                            message:
                                "the job's lease passed to another foreman instance; it runs there"
                                    .into(),
                        },
                        from_target: None,
                    },
                );
                return;
            }
            Attempt::Interrupted => {
                tracing::info!(job = %id, "shutdown grace over; job requeued");
                let stored = self.store.requeue(id, number, owner, now).await;
                self.hub.finish(
                    id,
                    Outcome::Failed {
                        failure: JobFailure {
                            status: 503,
                            message: "foreman is shutting down; the job was requeued".into(),
                        },
                        from_target: None,
                    },
                );
                stored
            }
        };
        match stored {
            // Counted, and logged in one `info` line, when the job is now terminal.
            Ok(Some(job)) => self.metrics.finished(&job),
            Ok(None) => {
                tracing::warn!(job = %id, attempt = number, owner, "the job changed hands; outcome dropped")
            }
            Err(error) => tracing::error!(%error, job = %id, "cannot record the outcome"),
        }
    }

    /// Relays the end of an answer that waited for its outcome's commit. It goes even
    /// when the commit failed: the caller's answer is whole, and recovery runs the job
    /// again (at least once).
    fn relay_held(&self, id: JobId, held: Bytes) {
        if !held.is_empty() {
            self.hub.chunk(id, held);
        }
    }

    async fn record_failure(
        &self,
        id: JobId,
        number: u32,
        owner: &str,
        error: UpstreamError,
        forwarded: bool,
        now: i64,
    ) -> foreman_store::Result<Option<Job>> {
        let failure = JobFailure {
            status: error.status(),
            message: error.message(),
        };
        let from_target = match &error {
            UpstreamError::Status {
                content_type, body, ..
            } => Some(TargetAnswer {
                content_type: content_type.clone(),
                body: body.clone(),
            }),
            _ => None,
        };
        // A failed attempt whose output nobody has read is dropped from the feed, so
        // a retry starts it afresh; one whose output was read (or written to the store
        // for readers elsewhere) cannot be replayed.
        let delivered = !self.hub.rewind(id) || forwarded;
        let failed = |failure: &JobFailure| Outcome::Failed {
            failure: failure.clone(),
            from_target: from_target.clone(),
        };
        match after_failure(&error, delivered) {
            AfterFailure::Retry => {
                let run_after = now
                    + crate::backoff::exponential(self.settings.retry_base, number, MAX_BACKOFF)
                        .as_millis() as i64;
                tracing::info!(job = %id, attempt = number, %error, "retrying");
                let stored = self
                    .store
                    .retry_or_fail(id, number, owner, failure.clone(), run_after, now)
                    .await;
                if let Ok(Some(job)) = &stored
                    && job.state == JobState::Failed
                {
                    self.hub.finish(id, failed(&failure));
                }
                stored
            }
            AfterFailure::Fail => {
                tracing::info!(job = %id, %error, "job failed");
                let stored = self
                    .store
                    .fail(id, number, owner, failure.clone(), now)
                    .await;
                self.hub.finish(id, failed(&failure));
                stored
            }
        }
    }

    /// Records a success: the result in the row, or in a file when it is large.
    async fn store_result(
        &self,
        id: JobId,
        attempt: u32,
        owner: &str,
        result: String,
        now: i64,
    ) -> foreman_store::Result<Option<Job>> {
        if result.len() > self.settings.artifact_threshold {
            match crate::artifacts::write_result(&self.settings.data_dir, id, &result).await {
                Ok(artifact) => {
                    let listed = serde_json::to_string(&[artifact]).expect("artifacts serialise");
                    return self
                        .store
                        .complete_with_artifacts(id, attempt, owner, listed, now)
                        .await;
                }
                Err(error) => {
                    tracing::error!(%error, job = %id, "cannot write the result file; keeping it in the database");
                }
            }
        }
        self.store.complete(id, attempt, owner, result, now).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_retryable_errors_whose_output_nobody_read_run_again() {
        let busy = UpstreamError::Status {
            status: 503,
            content_type: "application/json".into(),
            body: Bytes::from_static(br#"{"error":"busy"}"#),
        };
        let missing = UpstreamError::Status {
            status: 404,
            content_type: "application/json".into(),
            body: Bytes::from_static(br#"{"error":"model not found"}"#),
        };
        assert_eq!(after_failure(&busy, false), AfterFailure::Retry);
        assert_eq!(after_failure(&busy, true), AfterFailure::Fail);
        assert_eq!(
            after_failure(&UpstreamError::Broken("reset".into()), false),
            AfterFailure::Retry
        );
        assert_eq!(after_failure(&missing, false), AfterFailure::Fail);
    }
}
