//! The runners: one per slot of every target, each running one job at a time.
//!
//! A target with `slots` parallel requests per loaded model and `places` models loaded
//! gets `slots × places` runners, so foreman can keep it as busy as its clients could
//! by calling it directly. A free runner asks the [`Dispatcher`] for a job (the
//! [`scheduler`](crate::scheduler)'s policy decides for its target, and the job is
//! claimed under a lease naming the instance, target and slot), runs it
//! ([`attempt`]), reports its end so the capacity is freed, and starts recording the
//! outcome while it asks again. An idle runner sleeps until an enqueue, a dispatch or
//! a job's end rings `wake`, or a short poll passes (jobs waiting out a retry backoff
//! become eligible that way). A runner of a paused target (one that does not answer)
//! claims nothing.

mod attempt;
mod dispatch;
mod keep_alive;
mod running;
mod unload;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use foreman_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use self::attempt::AttemptSettings;
use self::attempt::{Attempt, Attempts};
pub use self::dispatch::{Assignment, Dispatcher};
pub use self::running::RunningJobs;
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::targets::{Target, Targets};

/// How often an idle runner looks at the queue even without a wake-up.
const IDLE_POLL: Duration = Duration::from_millis(250);

/// Settings every runner shares.
#[derive(Debug, Clone)]
pub struct RunnerSettings {
    /// Names this process in lease owners (`INSTANCE/TARGET/SLOT`).
    pub instance: String,
    pub max_wait: Duration,
    /// Callers take turns by weight within a load key (`FOREMAN_FAIR_SHARE`).
    pub fair_share: bool,
    /// Models higher work used this recently are not unloaded for lower work.
    pub protect_window: Duration,
    /// Protection holds back loads for work of this priority or lower: a batch's lines
    /// (`FOREMAN_BATCH_PRIORITY`).
    pub protect_loads_at_most: i32,
    pub lease: Duration,
    /// How often the targets' inventories poll (see the dispatcher).
    pub poll_interval: Duration,
    pub shutdown_grace: Duration,
    pub attempt: AttemptSettings,
}

impl RunnerSettings {
    /// The runners' settings from foreman's.
    pub fn from_config(config: &crate::config::Config) -> RunnerSettings {
        RunnerSettings {
            instance: config.instance_id.clone(),
            max_wait: config.max_wait,
            fair_share: config.fair_share,
            protect_window: config.protect_window,
            protect_loads_at_most: config.batch.priority,
            lease: config.lease,
            poll_interval: config.poll_interval,
            shutdown_grace: config.shutdown_grace,
            attempt: AttemptSettings {
                retry_base: config.retry_base,
                data_dir: config.data_dir.clone(),
                artifact_threshold: config.artifact_threshold,
            },
        }
    }
}

/// Everything the runners share.
pub struct Runners {
    pub store: Store,
    pub targets: Arc<Targets>,
    pub hub: Arc<Hub>,
    pub running: Arc<RunningJobs>,
    /// Rung (all waiters) by every enqueue, dispatch and job's end.
    pub wake: Arc<Notify>,
    /// Rung (all waiters) after every recorded outcome, once the job left `running`,
    /// for the webhook dispatcher; a job's own waiters are woken through the hub
    /// ([`Hub::job_changed`]).
    pub finished: Arc<Notify>,
    pub metrics: Arc<Metrics>,
    pub settings: RunnerSettings,
    /// Decides and claims for every runner (see [`Dispatcher`]); shared with the API
    /// for its forecasts.
    pub dispatcher: Arc<Dispatcher>,
    /// The feeds of this process relayed from runs on other instances (see
    /// `output_relay`): one a runner here is about to run again is cut first.
    pub relayed_output: Arc<crate::output_relay::Pull>,
}

/// One runner's view of the shared parts.
struct Shared {
    dispatcher: Arc<Dispatcher>,
    attempts: Attempts,
    running: Arc<RunningJobs>,
    hub: Arc<Hub>,
    finished: Arc<Notify>,
    wake: Arc<Notify>,
    settings: RunnerSettings,
    store: Store,
    metrics: Arc<Metrics>,
    relayed_output: Arc<crate::output_relay::Pull>,
}

impl Runners {
    /// Runs every target's runners until `shutdown`; running jobs then get the grace
    /// period, and the outcomes still being recorded are waited for.
    pub async fn run(self, shutdown: CancellationToken) {
        let shared = Arc::new(Shared {
            dispatcher: self.dispatcher.clone(),
            attempts: Attempts {
                store: self.store.clone(),
                hub: self.hub.clone(),
                metrics: self.metrics.clone(),
                settings: self.settings.attempt.clone(),
            },
            running: self.running.clone(),
            hub: self.hub.clone(),
            finished: self.finished.clone(),
            wake: self.wake.clone(),
            settings: self.settings.clone(),
            store: self.store.clone(),
            metrics: self.metrics.clone(),
            relayed_output: self.relayed_output.clone(),
        });
        let records = TaskTracker::new();
        let mut runners = tokio::task::JoinSet::new();
        for (index, target) in self.targets.all().iter().enumerate() {
            for slot in 0..target.slots * target.places {
                let runner = Runner {
                    shared: shared.clone(),
                    target: target.clone(),
                    index,
                    slot,
                };
                let (records, shutdown) = (records.clone(), shutdown.clone());
                runners.spawn(async move { runner.run(&records, &shutdown).await });
            }
        }
        while runners.join_next().await.is_some() {}
        records.close();
        records.wait().await;
    }
}

/// One slot of one target.
struct Runner {
    shared: Arc<Shared>,
    target: Arc<Target>,
    /// The target's index in the dispatcher's capacity.
    index: usize,
    slot: usize,
}

impl Runner {
    async fn run(&self, records: &TaskTracker, shutdown: &CancellationToken) {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let woken = self.shared.wake.notified();
            tokio::pin!(woken);
            woken.as_mut().enable();
            let assignment = if self.target.inventory.paused() {
                // A target known to be down gets no job: it would only fail there.
                None
            } else {
                match self.shared.dispatcher.next(self.index, self.slot).await {
                    Ok(assignment) => assignment,
                    Err(error) => {
                        tracing::error!(%error, target = %self.target.name, "cannot read or claim from the queue");
                        tokio::select! {
                            _ = shutdown.cancelled() => return,
                            _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                        }
                    }
                }
            };
            match assignment {
                Some(assignment) => self.run_one(assignment, records, shutdown).await,
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

    /// Runs one claimed job, frees its slot, and starts recording its outcome.
    async fn run_one(
        &self,
        assignment: Assignment,
        records: &TaskTracker,
        shutdown: &CancellationToken,
    ) {
        let shared = &self.shared;
        let Assignment {
            mut job,
            key,
            reason,
            more_queued,
            unload,
            after_unload,
            owner,
            cancel,
        } = assignment;
        tracing::debug!(job = %job.id, key = %key, target = %self.target.name, ?reason, attempt = job.attempts, "running");
        let inventory = &self.target.inventory;
        inventory.job_started();
        // A caller here streamed part of an earlier run on another instance, cut off
        // there, hears so instead of this run's output after it.
        shared
            .relayed_output
            .cut_before_rerun(&shared.hub, job.id)
            .await;
        // Readers that join while the job runs get its output from the start.
        let keeper = shared.hub.keep(job.id);
        // Its output also goes to the store when its readers are on other instances.
        let forwarder = shared.attempts.forwarder(&job);
        // The body goes to the target as it is; moving it out spares a copy of what
        // may be megabytes of images on every attempt.
        let mut payload = Bytes::from(std::mem::take(&mut job.payload));
        if more_queued && let Some(held) = keep_alive::hold_loaded(&payload) {
            payload = held;
        }
        // Cancelled when a heartbeat finds the job no longer ours (rescued and claimed
        // by another instance): the run stops at once, and its outcome is dropped.
        let lost = CancellationToken::new();
        let heartbeat = spawn_heartbeat(
            &shared.store,
            &job,
            owner.clone(),
            shared.settings.lease,
            lost.clone(),
        );
        if let Some(evicted) = &unload {
            // The target unloads an idle model only: while the one given up still runs
            // requests, it would pick an idle one (perhaps one live traffic uses).
            tokio::select! {
                _ = shared.dispatcher.until_idle(self.index, evicted) => {}
                _ = cancel.cancelled() => {}
            }
            unload::unload(&self.target.upstream, &evicted.model).await;
            shared.dispatcher.unloaded(self.index, &key).await;
        } else if after_unload {
            tokio::select! {
                _ = shared.dispatcher.until_unloaded(self.index, &key) => {}
                _ = cancel.cancelled() => {}
            }
        }
        let grace_over = async {
            shutdown.cancelled().await;
            tokio::time::sleep(shared.settings.shutdown_grace).await;
        };
        let attempt = tokio::select! {
            attempt = shared.attempts.execute(&self.target.upstream, &job, payload, forwarder.as_ref()) => attempt,
            _ = cancel.cancelled() => Attempt::Cancelled,
            _ = lost.cancelled() => Attempt::LeaseLost,
            _ = grace_over => Attempt::Interrupted,
        };
        heartbeat.abort();
        shared.metrics.run_ended(job.id, crate::clock::now_ms());
        if let Attempt::TargetDown(reason) = &attempt {
            inventory.mark_unreachable(reason);
        }
        inventory.job_ended(attempt.reached_target());
        let succeeded = matches!(attempt, Attempt::Succeeded { .. });
        shared
            .dispatcher
            .done(self.index, job.id, &key, succeeded)
            .await;
        let shared = Arc::clone(shared);
        records.spawn(async move {
            shared
                .attempts
                .record(&job, &owner, attempt, forwarder)
                .await;
            drop(keeper);
            shared.running.remove(job.id);
            // After the removal, so that a waiter woken here sees the job no longer
            // running. Only this job's waiters wake (long polls, event streams); the
            // global signal is the webhook dispatcher's.
            shared.hub.job_changed(job.id);
            shared.finished.notify_waiters();
        });
    }
}

/// Renews the job's lease every third of it; cancels `lost` and ends when the store
/// says the job is no longer this attempt's and this owner's.
fn spawn_heartbeat(
    store: &Store,
    job: &foreman_store::Job,
    owner: String,
    lease: Duration,
    lost: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let store = store.clone();
    let (id, attempt) = (job.id, job.attempts);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(lease / 3).await;
            match store
                .heartbeat(
                    id,
                    attempt,
                    &owner,
                    crate::clock::now_ms(),
                    lease.as_millis() as i64,
                )
                .await
            {
                Ok(true) => {}
                Ok(false) => {
                    tracing::warn!(job = %id, attempt, owner, "the job's lease was lost; stopping its run");
                    lost.cancel();
                    return;
                }
                Err(error) => tracing::warn!(%error, job = %id, "heartbeat failed"),
            }
        }
    })
}
