//! Where the runners meet the policy: one [`Policy`] and one [`Capacity`] for every
//! target, behind one lock.
//!
//! A free runner asks [`Dispatcher::next`]; under the lock, the capacity is brought in
//! line with what the targets' inventories say (paused, models, what a target that
//! came back has loaded), the queue's heads are read, the policy decides for that
//! runner's target, and the chosen job is claimed in the store before the lock is let
//! go. So two runners never pick the same job, and each decision sees every earlier
//! one. A job's end is reported with [`Dispatcher::done`]. Both ring `wake`, since a
//! decision or an end can give another runner something to do.
//!
//! Only targets this instance holds the lease of ([`crate::ownership`]) are decided and
//! claimed for; the others count as paused in the capacity, and a target taken over is
//! reseeded from its inventory's `/api/ps` as one back from an outage is. On a shared
//! store, a target held is also read for the jobs other instances still run on it
//! ([`Store::occupants`], at start, when the target is taken over, and again while any
//! are left): they are *inherited* in its capacity, busy slots until they end.
//!
//! The dispatcher also learns how long each load key's jobs run and load (from
//! dispatch to the end of a successful answer), and answers [`Dispatcher::forecast`]:
//! the policy played forward over the queue (see [`forecast`](crate::scheduler::forecast)),
//! made at most once a second whoever asks.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use foreman_store::{ClaimParams, Job, JobId, QueueHead, Store};
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use super::RunnerSettings;
use super::running::RunningJobs;
use crate::clock::now_ms;
use crate::metrics::Metrics;
use crate::scheduler::forecast::{
    self, Durations, Estimate, Forecast, MAX_FORECAST_JOBS, RunningJob,
};
use crate::scheduler::{Capacity, LoadKey, Policy, Reason, TargetState};

/// How long a forecast serves before the next one is made.
const FORECAST_FRESH_MS: i64 = 1_000;
/// How long a forecast serves even for a job it does not know, so that a burst of
/// new jobs asking costs ten forecasts a second at most.
const FORECAST_NEW_MS: i64 = 100;
/// How often a target with inherited jobs (another instance's runs still going there)
/// is read again for them, at most.
const INHERITED_RECHECK_MS: i64 = 250;

/// How often [`Dispatcher::until_idle`] and [`Dispatcher::until_unloaded`] look again
/// without a ring.
const IDLE_RECHECK: Duration = Duration::from_millis(250);

/// On a shared store, how long the queue heads read right after a claim serve the next
/// decision instead of a read of its own: a job that ends within it (a short answer) is
/// followed without the heads read's round trip. What may have changed meanwhile costs
/// at most this long: a job claimed or cancelled elsewhere fails the claim, and the
/// decision is made again on a fresh read; work queued since waits at most this much
/// longer to be seen.
const HEADS_REUSE_MS: i64 = 20;
use crate::targets::{TargetLoad, Targets};

/// A claimed job, with what the runner needs to run it.
pub struct Assignment {
    pub job: Job,
    pub key: LoadKey,
    pub reason: Reason,
    /// More jobs of the same load key are queued behind it.
    pub more_queued: bool,
    /// The key the policy gave up for this one, to be unloaded before the job goes
    /// (see `unload`).
    pub unload: Option<LoadKey>,
    /// Another job of this key is to unload what it replaces: this one waits for that.
    pub after_unload: bool,
    /// The lease owner: instance, target and slot.
    pub owner: String,
    /// Stops the job (a cancel call, or its caller leaving).
    pub cancel: CancellationToken,
}

struct Scheduling {
    policy: Policy,
    capacity: Capacity,
    /// Each target's inventory generation the capacity last took in.
    seen: Vec<u64>,
    /// Whether this instance held each target's lease at the last sync.
    held: Vec<bool>,
    /// When each target was last read for jobs other instances run on it; `None`: to be
    /// read before the next decision (at start, and when the target was taken over).
    inherited_read: Vec<Option<i64>>,
    /// The jobs dispatched and not yet ended.
    dispatched: HashMap<JobId, RunningJob>,
    /// Per target and loading key, the key it replaces while its unload is not yet
    /// sent: every job of the loading key waits for it (see `unload`), or the target
    /// would answer the first of them by unloading a model of its own choosing.
    unloading: HashMap<(usize, LoadKey), LoadKey>,
    durations: Durations,
    /// On a shared store: the queue heads read right after the last claim, and the time
    /// they are of (see [`HEADS_REUSE_MS`]); taken by the next decision.
    recent_heads: Option<(i64, Vec<QueueHead>)>,
}

/// The policy and capacity shared by every runner.
pub struct Dispatcher {
    store: Store,
    targets: Arc<Targets>,
    running: Arc<RunningJobs>,
    /// Names this process in lease owners.
    instance: String,
    lease: Duration,
    /// How often the inventories poll `/api/ps`.
    poll_interval: Duration,
    state: Mutex<Scheduling>,
    /// The latest forecast; the lock also keeps two callers from making one each.
    forecast: Mutex<Option<Arc<Forecast>>>,
    /// Rung (all waiters) after every dispatch and every job's end.
    pub wake: Arc<Notify>,
    metrics: Arc<Metrics>,
}

impl Dispatcher {
    /// A dispatcher for `targets`, each seeded with what its last `/api/ps` showed.
    pub fn new(
        store: Store,
        targets: Arc<Targets>,
        running: Arc<RunningJobs>,
        settings: &RunnerSettings,
        wake: Arc<Notify>,
        metrics: Arc<Metrics>,
    ) -> Dispatcher {
        let now = now_ms();
        let capacity = Capacity::new(
            targets
                .all()
                .iter()
                .map(|target| {
                    let mut state = TargetState::new(&target.name, target.slots, target.places);
                    for model in target.inventory.resident() {
                        state.seed(LoadKey::new(model, ""), now);
                    }
                    state
                })
                .collect(),
        );
        for (index, state) in capacity.targets.iter().enumerate() {
            publish(&targets, index, state);
        }
        Dispatcher {
            store,
            targets,
            running,
            instance: settings.instance.clone(),
            lease: settings.lease,
            poll_interval: settings.poll_interval,
            state: Mutex::new(Scheduling {
                policy: Policy::new(settings.max_wait.as_millis() as i64)
                    .with_fair_share(settings.fair_share)
                    .with_protection(
                        settings.protect_window.as_millis() as i64,
                        settings.protect_loads_at_most,
                    ),
                seen: vec![u64::MAX; capacity.targets.len()],
                held: vec![true; capacity.targets.len()],
                inherited_read: vec![None; capacity.targets.len()],
                capacity,
                dispatched: HashMap::new(),
                unloading: HashMap::new(),
                durations: Durations::default(),
                recent_heads: None,
            }),
            forecast: Mutex::new(None),
            wake,
            metrics,
        }
    }

    /// Claims the job the policy picks for a free runner (`slot`) of target `target`;
    /// `None` when it should stay idle.
    pub async fn next(
        &self,
        target: usize,
        slot: usize,
    ) -> Result<Option<Assignment>, foreman_store::Error> {
        let mut scheduling = self.state.lock().await;
        loop {
            let now = now_ms();
            self.sync(&mut scheduling, now);
            if !self.targets.all()[target].ownership.held(now) {
                // Another instance schedules it (or this one cannot renew its lease).
                return Ok(None);
            }
            self.read_inherited(&mut scheduling, now).await?;
            let (heads, reused) = match scheduling.recent_heads.take() {
                Some((at, heads)) if now - at <= HEADS_REUSE_MS => (heads, true),
                _ => (self.store.queue_heads(now).await?, false),
            };
            let Scheduling {
                policy,
                capacity,
                dispatched,
                unloading,
                recent_heads,
                ..
            } = &mut *scheduling;
            let Some(decision) = policy.decide(&heads, capacity, target, now) else {
                if reused {
                    // Nothing to run by heads read before the work that woke this
                    // runner was queued: read them again.
                    continue;
                }
                return Ok(None);
            };
            let name = &self.targets.all()[target].name;
            let owner = format!("{}/{}/{}", self.instance, name, slot);
            let cancel = self.running.insert(decision.job);
            let params = ClaimParams {
                id: decision.job,
                owner: owner.clone(),
                target: name.clone(),
                now,
                lease_for_ms: self.lease.as_millis() as i64,
            };
            let claimed = if self.store.is_shared() {
                // The heads after the claim come in the same round trip, for the next
                // decision (see HEADS_REUSE_MS).
                self.store
                    .claim_and_read_heads(params)
                    .await
                    .map(|(job, heads)| {
                        *recent_heads = heads.map(|heads| (now, heads));
                        job
                    })
            } else {
                self.store.claim(params).await
            };
            let job = match claimed {
                Ok(Some(job)) => job,
                // Cancelled or taken meanwhile: decide again.
                Ok(None) => {
                    self.running.remove(decision.job);
                    continue;
                }
                Err(error) => {
                    self.running.remove(decision.job);
                    return Err(error);
                }
            };
            let state = &mut capacity.targets[target];
            let load = !state.is_resident(&decision.key);
            // A model is unloaded by name: not when the job's own key (or another
            // loaded key) shares it, as a reload replaces it anyway.
            let unload = decision.evict.clone().filter(|evicted| {
                evicted.model != decision.key.model
                    && !state
                        .resident()
                        .any(|other| other != evicted && other.model == evicted.model)
            });
            let pending = (target, decision.key.clone());
            let after_unload = unload.is_none() && unloading.contains_key(&pending);
            if let Some(evicted) = &unload {
                unloading.insert(pending, evicted.clone());
            }
            self.metrics
                .dispatched(name, &decision.key.to_string(), &job, load, now);
            dispatched.insert(
                job.id,
                RunningJob {
                    id: job.id,
                    target,
                    key: decision.key.clone(),
                    started_at: now,
                    loaded: load,
                },
            );
            state.start(&decision.key, decision.evict.as_ref(), now);
            publish(&self.targets, target, state);
            self.wake.notify_waiters();
            return Ok(Some(Assignment {
                job,
                key: decision.key,
                reason: decision.reason,
                more_queued: decision.more_queued,
                unload,
                after_unload,
                owner,
                cancel,
            }));
        }
    }

    /// Returns once no job of `key` runs on `target` (this instance's or inherited):
    /// the policy gave `key` up there, so none starts, and those running end.
    pub async fn until_idle(&self, target: usize, key: &LoadKey) {
        self.wait_until(|scheduling| scheduling.capacity.targets[target].running_of(key) == 0)
            .await;
    }

    /// The unload `key`'s load on `target` waited for has been sent: its next jobs go
    /// straight to the target.
    pub async fn unloaded(&self, target: usize, key: &LoadKey) {
        self.state
            .lock()
            .await
            .unloading
            .remove(&(target, key.clone()));
        self.wake.notify_waiters();
    }

    /// Returns once the unload `key`'s load on `target` waits for has been sent.
    pub async fn until_unloaded(&self, target: usize, key: &LoadKey) {
        let pending = (target, key.clone());
        self.wait_until(|scheduling| !scheduling.unloading.contains_key(&pending))
            .await;
    }

    /// Returns once `ready` holds of the scheduling state, looked at again whenever
    /// `wake` rings (a job's end, an unload sent) and at least every [`IDLE_RECHECK`]:
    /// an inherited job's end on another instance rings nothing here.
    async fn wait_until(&self, ready: impl Fn(&Scheduling) -> bool) {
        loop {
            let rung = self.wake.notified();
            tokio::pin!(rung);
            rung.as_mut().enable();
            if ready(&*self.state.lock().await) {
                return;
            }
            let _ = tokio::time::timeout(IDLE_RECHECK, rung).await;
        }
    }

    /// Job `id`, which [`Dispatcher::next`] assigned to `target`, has ended there;
    /// a success teaches how long its key runs (and loads).
    pub async fn done(&self, target: usize, id: JobId, key: &LoadKey, succeeded: bool) {
        let now = now_ms();
        let mut scheduling = self.state.lock().await;
        let Scheduling {
            capacity,
            dispatched,
            durations,
            ..
        } = &mut *scheduling;
        if let Some(job) = dispatched.remove(&id)
            && succeeded
        {
            durations.learn(key, now - job.started_at, job.loaded);
        }
        let state = &mut capacity.targets[target];
        state.finish(key, now);
        publish(&self.targets, target, state);
        drop(scheduling);
        self.wake.notify_waiters();
    }

    /// When job `id` (queued or running) is expected to start and end (see the module
    /// doc), from a forecast at most a second old; one that does not know the job yet
    /// (enqueued since) is made again, unless it is brand new.
    pub async fn estimate(&self, id: JobId) -> Result<Option<Estimate>, foreman_store::Error> {
        let mut latest = self.forecast.lock().await;
        let now = now_ms();
        if let Some(forecast) = latest.as_ref() {
            let age = now - forecast.at;
            let known = forecast.estimates.get(&id);
            if age < FORECAST_NEW_MS || (age < FORECAST_FRESH_MS && known.is_some()) {
                return Ok(known.cloned());
            }
        }
        let queued = self.store.queued_jobs(MAX_FORECAST_JOBS).await?;
        // Copies, so that the replay holds up no dispatch.
        let (policy, mut capacity, running, durations) = {
            let scheduling = self.state.lock().await;
            (
                scheduling.policy.clone(),
                scheduling.capacity.clone(),
                scheduling.dispatched.values().cloned().collect::<Vec<_>>(),
                scheduling.durations.clone(),
            )
        };
        // Another instance's runs here end at times this one cannot foresee; the replay
        // plays only what this instance runs.
        for state in &mut capacity.targets {
            state.inherit(HashMap::new(), now);
        }
        let made = tokio::task::spawn_blocking(move || {
            forecast::forecast(&policy, &capacity, &running, &queued, &durations, now)
        })
        .await
        .unwrap_or_else(|panic| std::panic::resume_unwind(panic.into_panic()));
        let estimate = made.estimates.get(&id).cloned();
        *latest = Some(Arc::new(made));
        Ok(estimate)
    }

    /// Counts, on every target this instance holds that is due for it, the jobs other
    /// instances still run there (see the module doc). Nothing is read on a store that
    /// is not shared: there, one process runs every job.
    async fn read_inherited(
        &self,
        scheduling: &mut Scheduling,
        now: i64,
    ) -> Result<(), foreman_store::Error> {
        if !self.store.is_shared() {
            return Ok(());
        }
        let own = format!("{}/", self.instance);
        for (index, target) in self.targets.all().iter().enumerate() {
            let due = match scheduling.inherited_read[index] {
                None => true,
                Some(at) => {
                    scheduling.capacity.targets[index].inherited_total() > 0
                        && now - at >= INHERITED_RECHECK_MS
                }
            };
            if !due || !target.ownership.held(now) {
                continue;
            }
            let occupants = self.store.occupants(&target.name).await?;
            let mut inherited: HashMap<LoadKey, usize> = HashMap::new();
            for occupant in occupants
                .iter()
                .filter(|occupant| !occupant.lease_owner.starts_with(&own))
            {
                *inherited
                    .entry(LoadKey::new(&occupant.model, &occupant.load_options))
                    .or_default() += 1;
            }
            let state = &mut scheduling.capacity.targets[index];
            let count: usize = inherited.values().sum();
            if count != state.inherited_total() {
                tracing::info!(
                    target = %target.name,
                    running = count,
                    "jobs another instance still runs on the target hold its slots"
                );
            }
            state.inherit(inherited, now);
            publish(&self.targets, index, state);
            scheduling.inherited_read[index] = Some(now);
        }
        Ok(())
    }

    /// Brings the capacity in line with what the targets' inventories learned since
    /// the last decision (nothing to do, and nothing read, when no poll ended).
    fn sync(&self, scheduling: &mut Scheduling, now: i64) {
        // A key idle for two poll intervals has been seen by a poll since it was used.
        let polled_since = now - 2 * self.poll_interval.as_millis() as i64;
        let Scheduling {
            capacity,
            seen,
            held,
            inherited_read,
            ..
        } = scheduling;
        for ((((state, target), seen), held), inherited_read) in capacity
            .targets
            .iter_mut()
            .zip(self.targets.all())
            .zip(seen.iter_mut())
            .zip(held.iter_mut())
            .zip(inherited_read.iter_mut())
        {
            let generation = target.inventory.generation();
            let owned = target.ownership.held(now);
            if owned && !*held {
                // Taken over: the previous holder's runs may still go on there.
                *inherited_read = None;
            }
            if *seen == generation && *held == owned {
                continue;
            }
            *seen = generation;
            *held = owned;
            // A target another instance schedules counts as paused here: this view of
            // its load would be stale, and the policy must not count on its room.
            let paused = target.inventory.paused() || !owned;
            if state.paused && !paused {
                // Back after an outage (perhaps a restart), or taken over from another
                // instance: what it had loaded before tells nothing; its last poll does.
                state.reseed(&target.inventory.resident(), now);
            } else if !paused {
                // Unloaded behind foreman's back: keep-alive expiry, VRAM pressure,
                // another client.
                state.forget_unloaded(&target.inventory.resident(), polled_since);
            }
            state.paused = paused;
            state.models = target.inventory.known_models();
        }
    }
}

/// Shows a target's tracked load in the operator views.
fn publish(targets: &Targets, target: usize, state: &TargetState) {
    targets.all()[target].publish_load(TargetLoad {
        resident: state.resident().map(LoadKey::to_string).collect(),
        running: state.running_total(),
        running_by_key: {
            let mut keys: Vec<(String, usize)> = state
                .running_keys()
                .map(|(key, count)| (key.to_string(), count))
                .collect();
            keys.sort();
            keys
        },
    });
}
