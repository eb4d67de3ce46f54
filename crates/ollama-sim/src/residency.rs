//! Which models are in (simulated) GPU memory, modelled on Ollama's scheduler
//! (`server/sched.go`).
//!
//! - A request for a resident model whose runner options match its own attaches at
//!   once (`getRunner`) and then waits, FIFO and without limit, for one of the model's
//!   `num_parallel` slots (embedding models get one, as `load` forces).
//! - Any other request (model not resident, or resident with different runner options:
//!   `needsReload`) joins Ollama's pending queue. Loads happen one at a time, FIFO
//!   (`processPending`). More than `max_queue` requests waiting in that queue is
//!   Ollama's 503 "server busy"; the request being loaded is no longer in it.
//! - A load needs room: fewer than `max_loaded` models resident and, with a VRAM budget,
//!   the model's size within 80% of the VRAM the others leave free (the first model
//!   always loads, partly offloaded if it is too big). Without room a victim is chosen
//!   as `findRunnerToUnload` does (idle first, then the shortest keep-alive, then the
//!   model's path, i.e. its digest), no new request may attach to it, and it unloads
//!   once its requests finish. A runner whose options differ is unloaded the same way
//!   and its model loaded again: a reload. Then the load pays the model's load time.
//! - When a model's last request ends it stays for its keep-alive: zero unloads at once,
//!   a negative value keeps it forever. Keep-alive is sticky per loaded model: a request
//!   that sets it overwrites it, one that doesn't leaves it as it was.
//!
//! A [`Lease`] is one request's hold on a loaded model and a slot; while it lives the
//! request counts as `running` in the stats (and in their `peak_in_flight`). Dropping
//! it (the request ended or its client went away) releases both and arms the expiry
//! timer.
//! Its `load_duration` ends when the request was scheduled, before any slot wait, as
//! Ollama's `checkpointLoaded` does (`server/routes.go`).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::keep_alive::KeepAlive;
use crate::load_options::{LoadOptions, RunnerOptions};
use crate::spec::ModelSpec;
use crate::stats::{LoadKind, Running, Stats};
use crate::text;

/// Ollama reports "forever" as an expiry about 292 years ahead.
const FOREVER: Duration = Duration::from_secs(292 * 365 * 24 * 3600);

/// Ollama's automatic `OLLAMA_MAX_LOADED_MODELS`: 3 per GPU (`defaultModelsPerGPU`).
pub const DEFAULT_MODELS_PER_GPU: usize = 3;

/// Limits that shape residency.
#[derive(Debug, Clone)]
pub struct ResidencyConfig {
    /// Models resident at once; 0 means Ollama's automatic 3 (one GPU).
    pub max_loaded: usize,
    pub num_parallel: usize,
    /// Requests that may wait in the pending (load) queue.
    pub max_queue: usize,
    pub default_keep_alive: KeepAlive,
    /// GPU memory for models in bytes; `None` is unlimited (only `max_loaded` counts).
    pub vram: Option<u64>,
    /// The `num_ctx` of a request that gives none (`OLLAMA_CONTEXT_LENGTH`).
    pub default_num_ctx: u32,
}

/// The 503 answer: too many requests are waiting for a load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A resident model as `/api/ps` shows it.
#[derive(Debug, Clone)]
pub struct ResidentModel {
    pub spec: Arc<ModelSpec>,
    pub expires_at: SystemTime,
    /// Bytes the runner takes (`size`).
    pub size: u64,
    /// Of which in GPU memory (`size_vram`).
    pub size_vram: u64,
    /// The runner's effective context (`context_length`).
    pub context_length: i64,
}

/// Shared residency state; clone freely.
#[derive(Clone)]
pub struct Residency {
    inner: Arc<Inner>,
}

struct Inner {
    config: ResidencyConfig,
    stats: Arc<Stats>,
    state: Mutex<State>,
    /// Woken whenever a model's attached count drops or a model unloads.
    changed: Notify,
    /// Ollama's `processPending`: one pending request is worked on at a time, FIFO.
    loader: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    loaded: HashMap<String, Loaded>,
    /// Requests waiting for a load or a slot.
    waiting: usize,
    /// Requests in the pending queue (not yet taken up by the loader).
    queued: usize,
}

struct Loaded {
    spec: Arc<ModelSpec>,
    /// Requests attached to this model: generating or waiting for a slot.
    attached: usize,
    slots: Arc<Semaphore>,
    keep_alive: KeepAlive,
    /// The options the runner was started with.
    runner: RunnerOptions,
    size_vram: u64,
    /// Chosen to unload (a victim, or a reload): no new request may attach, and it
    /// unloads as soon as it is idle (Ollama sets its session duration to zero).
    evicting: bool,
    /// Bumped whenever a pending expiry timer must be ignored.
    expiry_generation: u64,
    /// When an idle model expires (meaningful only while `attached == 0`).
    idle_expires_at: SystemTime,
}

/// One request's hold on a resident model and one of its slots.
pub struct Lease {
    /// Time from the request's arrival until it was scheduled on a loaded runner
    /// (queue and load; not the wait for a slot).
    pub load_duration: Duration,
    // Fields drop in this order: the request stops counting as running before its
    // slot is freed, so a slot waiter that takes the slot can never push `running`
    // (and its peak) past the model's slots.
    _running: Running,
    _permit: OwnedSemaphorePermit,
    _attachment: Attachment,
}

impl Lease {
    /// Counts the leased request's generation as run to its end (`completed` in the
    /// stats).
    pub fn completed(&self) {
        self._running.completed();
    }
}

/// A request scheduled on a loaded runner, not yet holding a slot.
struct Scheduled {
    load_duration: Duration,
    slots: Arc<Semaphore>,
    attachment: Attachment,
}

/// Keeps a model's attached count up while alive.
struct Attachment {
    residency: Residency,
    key: String,
}

/// Which line a [`Counted`] guard counts a request in.
#[derive(Clone, Copy)]
enum Line {
    Waiting,
    Queued,
}

/// Counts a request in a line while alive.
struct Counted<'a> {
    residency: &'a Residency,
    line: Line,
}

impl Residency {
    pub fn new(config: ResidencyConfig, stats: Arc<Stats>) -> Residency {
        Residency {
            inner: Arc::new(Inner {
                config,
                stats,
                state: Mutex::new(State::default()),
                changed: Notify::new(),
                loader: tokio::sync::Mutex::new(()),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn max_loaded(&self) -> usize {
        match self.inner.config.max_loaded {
            0 => DEFAULT_MODELS_PER_GPU,
            n => n,
        }
    }

    /// Waits until `spec` is resident with the request's runner options and a slot is
    /// free, loading (and evicting) as needed. `keep_alive` is the request's own value,
    /// if it gave one.
    pub async fn acquire(
        &self,
        spec: &Arc<ModelSpec>,
        keep_alive: Option<KeepAlive>,
        options: &LoadOptions,
    ) -> Result<Lease, Busy> {
        let scheduled = self.schedule(spec, keep_alive, options).await?;
        let permit = match scheduled.slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                // Ollama's runner semaphore: no bound, never a 503.
                let _waiting = self.count(Line::Waiting);
                scheduled
                    .slots
                    .acquire_owned()
                    .await
                    .expect("slot semaphores are never closed")
            }
        };
        Ok(Lease {
            load_duration: scheduled.load_duration,
            _running: self.inner.stats.running(&scheduled.attachment.key),
            _permit: permit,
            _attachment: scheduled.attachment,
        })
    }

    /// Loads `spec` for a request with nothing to generate; it needs no slot.
    pub async fn preload(
        &self,
        spec: &Arc<ModelSpec>,
        keep_alive: Option<KeepAlive>,
        options: &LoadOptions,
    ) -> Result<(), Busy> {
        self.schedule(spec, keep_alive, options).await.map(drop)
    }

    /// Ollama's `getRunner`: attach to a usable runner, or go through the pending queue.
    async fn schedule(
        &self,
        spec: &Arc<ModelSpec>,
        keep_alive: Option<KeepAlive>,
        options: &LoadOptions,
    ) -> Result<Scheduled, Busy> {
        let arrived = Instant::now();
        let key = spec.display_name();
        let wanted = RunnerOptions::resolve(options, spec, self.inner.config.default_num_ctx);
        let attached = self.try_attach(&key, keep_alive, &wanted);
        let (attachment, slots) = match attached {
            Some(attached) => attached,
            None => self.load(spec, &key, keep_alive, &wanted).await?,
        };
        Ok(Scheduled {
            load_duration: arrived.elapsed(),
            slots,
            attachment,
        })
    }

    /// Attaches to a resident runner that is not unloading and whose options match.
    fn try_attach(
        &self,
        key: &str,
        keep_alive: Option<KeepAlive>,
        wanted: &RunnerOptions,
    ) -> Option<(Attachment, Arc<Semaphore>)> {
        let mut state = self.state();
        let loaded = state
            .loaded
            .get_mut(key)
            .filter(|l| !l.evicting && !l.runner.needs_reload(wanted))?;
        Some(self.attach(loaded, key, keep_alive))
    }

    fn attach(
        &self,
        loaded: &mut Loaded,
        key: &str,
        keep_alive: Option<KeepAlive>,
    ) -> (Attachment, Arc<Semaphore>) {
        loaded.attached += 1;
        loaded.expiry_generation += 1;
        if let Some(keep_alive) = keep_alive {
            loaded.keep_alive = keep_alive;
        }
        let attachment = Attachment {
            residency: self.clone(),
            key: key.to_string(),
        };
        (attachment, loaded.slots.clone())
    }

    fn count(&self, line: Line) -> Counted<'_> {
        let mut state = self.state();
        match line {
            Line::Waiting => state.waiting += 1,
            Line::Queued => state.queued += 1,
        }
        Counted {
            residency: self,
            line,
        }
    }

    /// Joins the pending queue, or fails when it already holds `max_queue` requests
    /// (Ollama's non-blocking send on a channel of that size).
    fn enter_queue(&self, model: &str) -> Result<Counted<'_>, Busy> {
        if self.state().queued >= self.inner.config.max_queue {
            self.inner.stats.busy(model);
            return Err(Busy);
        }
        Ok(self.count(Line::Queued))
    }

    /// The pending-load path (`processPending`): wait in line, unload what must go,
    /// pay the load time.
    async fn load(
        &self,
        spec: &Arc<ModelSpec>,
        key: &str,
        keep_alive: Option<KeepAlive>,
        wanted: &RunnerOptions,
    ) -> Result<(Attachment, Arc<Semaphore>), Busy> {
        let _waiting = self.count(Line::Waiting);
        // An idle scheduler takes the request straight off the channel, even one of
        // size 0; otherwise it waits in the queue for its turn.
        let _loader = match self.inner.loader.try_lock() {
            Ok(loader) => loader,
            Err(_) => {
                let _queued = self.enter_queue(key)?;
                self.inner.loader.lock().await
            }
        };
        let mut kind = LoadKind::default();
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state();
                if let Some(loaded) = state.loaded.get_mut(key) {
                    let reload = loaded.runner.needs_reload(wanted);
                    if !loaded.evicting && !reload {
                        // Loaded by an earlier request in the line while this one waited.
                        return Ok(self.attach(loaded, key, keep_alive));
                    }
                    kind.reload |= reload;
                    if self.evict(&mut state, key) {
                        continue;
                    }
                } else if self.fits(&state, spec) {
                    break;
                } else if !state.loaded.values().any(|l| l.evicting) {
                    // With a model already unloading, wait for it (Ollama waits for
                    // the unload before it looks again) rather than pick a second.
                    let victim = pick_victim(&state.loaded);
                    kind.swap = true;
                    if self.evict(&mut state, &victim) {
                        continue;
                    }
                }
            }
            notified.await;
        }
        self.inner.stats.event(key, "load_start");
        tokio::time::sleep(spec.load).await;
        let size_vram = match self.inner.config.vram {
            Some(vram) => spec.size.min(vram),
            None => spec.size,
        };
        // sched.go load: embedding models always get one slot.
        let slots = if spec.embed {
            1
        } else {
            self.inner.config.num_parallel.max(1)
        };
        let mut loaded = Loaded {
            spec: spec.clone(),
            attached: 0,
            slots: Arc::new(Semaphore::new(slots)),
            keep_alive: keep_alive.unwrap_or(self.inner.config.default_keep_alive),
            runner: wanted.clone(),
            size_vram,
            evicting: false,
            expiry_generation: 0,
            idle_expires_at: SystemTime::now(),
        };
        let attached = self.attach(&mut loaded, key, None);
        self.state().loaded.insert(key.to_string(), loaded);
        self.inner.stats.loaded(key, spec.load, kind);
        Ok(attached)
    }

    /// Whether `spec` can load beside the resident models (`processPending` and
    /// `load`'s pre-flight check: a model must fit in 80% of the free VRAM).
    fn fits(&self, state: &State, spec: &ModelSpec) -> bool {
        if state.loaded.len() >= self.max_loaded() {
            return false;
        }
        let Some(vram) = self.inner.config.vram else {
            return true;
        };
        if state.loaded.is_empty() {
            return true;
        }
        let used: u64 = state.loaded.values().map(|l| l.size_vram).sum();
        let free = u128::from(vram.saturating_sub(used));
        u128::from(spec.size) <= free * 80 / 100
    }

    /// Marks a resident model to unload; unloads it now if it is idle (true).
    fn evict(&self, state: &mut State, key: &str) -> bool {
        let loaded = state.loaded.get_mut(key).expect("the model is resident");
        loaded.evicting = true;
        loaded.expiry_generation += 1;
        if loaded.attached > 0 {
            return false;
        }
        state.loaded.remove(key);
        self.inner.stats.unloaded(key);
        true
    }

    /// Asks a model to unload as soon as it is idle (a `keep_alive: 0` request with
    /// nothing to generate). Returns at once.
    pub fn expire(&self, spec: &ModelSpec) {
        let key = spec.display_name();
        let mut state = self.state();
        let Some(loaded) = state.loaded.get_mut(&key) else {
            return;
        };
        loaded.keep_alive = KeepAlive::For(Duration::ZERO);
        if loaded.attached == 0 {
            state.loaded.remove(&key);
            drop(state);
            self.inner.stats.unloaded(&key);
            self.inner.changed.notify_waiters();
        }
    }

    /// The resident models, latest expiry first, as `/api/ps` lists them.
    pub fn resident(&self) -> Vec<ResidentModel> {
        let now = SystemTime::now();
        let state = self.state();
        let mut models: Vec<ResidentModel> = state
            .loaded
            .values()
            .map(|loaded| ResidentModel {
                spec: loaded.spec.clone(),
                expires_at: if loaded.attached > 0 {
                    match loaded.keep_alive {
                        KeepAlive::Forever => now + FOREVER,
                        KeepAlive::For(d) => now + d,
                    }
                } else {
                    loaded.idle_expires_at
                },
                size: loaded.spec.size,
                size_vram: loaded.size_vram,
                context_length: loaded.runner.context_length,
            })
            .collect();
        models.sort_by_key(|m| std::cmp::Reverse(m.expires_at));
        models
    }

    /// Display names of the resident models, sorted.
    pub fn resident_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.state().loaded.keys().cloned().collect();
        names.sort();
        names
    }

    /// Requests waiting for a load or a slot.
    pub fn waiting(&self) -> usize {
        self.state().waiting
    }

    /// Requests in the pending queue, the line `max_queue` bounds.
    pub fn queued(&self) -> usize {
        self.state().queued
    }

    fn detach(&self, key: &str) {
        let mut state = self.state();
        let Some(loaded) = state.loaded.get_mut(key) else {
            return;
        };
        loaded.attached -= 1;
        if loaded.attached == 0 {
            loaded.expiry_generation += 1;
            let keep_alive = if loaded.evicting {
                KeepAlive::For(Duration::ZERO)
            } else {
                loaded.keep_alive
            };
            match keep_alive {
                KeepAlive::Forever => loaded.idle_expires_at = SystemTime::now() + FOREVER,
                KeepAlive::For(d) if d.is_zero() => {
                    state.loaded.remove(key);
                    drop(state);
                    self.inner.stats.unloaded(key);
                }
                KeepAlive::For(d) => {
                    loaded.idle_expires_at = SystemTime::now() + d;
                    self.arm_expiry(key.to_string(), loaded.expiry_generation, d);
                }
            }
        }
        self.inner.changed.notify_waiters();
    }

    fn arm_expiry(&self, key: String, generation: u64, after: Duration) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let residency = self.clone();
        runtime.spawn(async move {
            tokio::time::sleep(after).await;
            let mut state = residency.state();
            let still_idle = state
                .loaded
                .get(&key)
                .is_some_and(|l| l.attached == 0 && l.expiry_generation == generation);
            if still_idle {
                state.loaded.remove(&key);
                drop(state);
                residency.inner.stats.unloaded(&key);
                residency.inner.changed.notify_waiters();
            }
        });
    }
}

/// `findRunnerToUnload`: runners sorted by keep-alive (forever last), then by model
/// path (in Ollama the blob's digest; here the simulator's digest of the name); the
/// first idle one, else the first. Not the least recently used.
fn pick_victim(loaded: &HashMap<String, Loaded>) -> String {
    let order = |l: &Loaded| {
        let keep = match l.keep_alive {
            KeepAlive::Forever => Duration::MAX,
            KeepAlive::For(d) => d,
        };
        (keep, text::digest(&l.spec.display_name()))
    };
    let mut runners: Vec<(&String, &Loaded)> = loaded.iter().collect();
    runners.sort_by_key(|(_, l)| order(l));
    runners
        .iter()
        .find(|(_, l)| l.attached == 0)
        .or(runners.first())
        .map(|(name, _)| (*name).clone())
        .expect("there is no room, so a model is resident")
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.residency.detach(&self.key);
    }
}

impl Drop for Counted<'_> {
    fn drop(&mut self) {
        let mut state = self.residency.state();
        match self.line {
            Line::Waiting => state.waiting -= 1,
            Line::Queued => state.queued -= 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn residency(max_loaded: usize, keep_alive: KeepAlive) -> (Residency, Arc<Stats>) {
        let stats = Arc::new(Stats::default());
        let config = ResidencyConfig {
            max_loaded,
            num_parallel: 1,
            max_queue: 8,
            default_keep_alive: keep_alive,
            vram: None,
            default_num_ctx: 4096,
        };
        (Residency::new(config, stats.clone()), stats)
    }

    fn none() -> LoadOptions {
        LoadOptions::default()
    }

    fn spec(name: &str) -> Arc<ModelSpec> {
        Arc::new(ModelSpec {
            load: Duration::from_secs(2),
            ..ModelSpec::chat(name)
        })
    }

    #[tokio::test(start_paused = true)]
    async fn alternating_models_swap_each_time() {
        let (residency, stats) = residency(1, KeepAlive::For(Duration::from_secs(300)));
        let (a, b) = (spec("a"), spec("b"));
        for (i, model) in [&a, &b, &a, &b].into_iter().enumerate() {
            let lease = residency.acquire(model, None, &none()).await.unwrap();
            assert!(
                lease.load_duration >= Duration::from_secs(2),
                "request {i} paid a load"
            );
        }
        let snap = stats.snapshot(residency.resident_names(), 0, 0);
        assert_eq!(snap.loads_total, 4);
        assert_eq!(snap.swaps_total, 3);
        assert_eq!(snap.loaded, vec!["b:latest".to_string()]);
    }

    #[tokio::test(start_paused = true)]
    async fn warm_requests_pay_no_load_and_keep_alive_expires() {
        let (residency, stats) = residency(1, KeepAlive::For(Duration::from_secs(5)));
        let a = spec("a");
        drop(residency.acquire(&a, None, &none()).await.unwrap());
        let warm = residency.acquire(&a, None, &none()).await.unwrap();
        assert!(warm.load_duration < Duration::from_millis(1));
        drop(warm);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(residency.resident_names().is_empty());
        assert_eq!(stats.snapshot(vec![], 0, 0).unloads_total, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_waits_for_the_victims_requests() {
        let (residency, stats) = residency(1, KeepAlive::Forever);
        let (a, b) = (spec("a"), spec("b"));
        let lease_a = residency.acquire(&a, None, &none()).await.unwrap();
        let residency_b = residency.clone();
        let b_task =
            tokio::spawn(async move { residency_b.acquire(&b, None, &none()).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!b_task.is_finished(), "b must wait for a's request");
        assert_eq!(residency.resident_names(), vec!["a:latest".to_string()]);
        drop(lease_a);
        b_task.await.unwrap().unwrap();
        assert_eq!(stats.snapshot(vec![], 0, 0).swaps_total, 1);
    }

    /// sched.go `getRunner`: with `OLLAMA_MAX_QUEUE=0` the channel has no buffer, so
    /// a load is accepted only while the scheduler is idle.
    #[tokio::test(start_paused = true)]
    async fn a_zero_queue_accepts_a_load_only_when_the_scheduler_is_idle() {
        let stats = Arc::new(Stats::default());
        let config = ResidencyConfig {
            max_loaded: 1,
            num_parallel: 1,
            max_queue: 0,
            default_keep_alive: KeepAlive::Forever,
            vram: None,
            default_num_ctx: 4096,
        };
        let residency = Residency::new(config, stats);
        let (a, b) = (spec("a"), spec("b"));
        let held = residency.acquire(&a, None, &none()).await.unwrap();
        let (r, b2) = (residency.clone(), b.clone());
        let loading = tokio::spawn(async move { r.acquire(&b2, None, &none()).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(residency.acquire(&b, None, &none()).await.err(), Some(Busy));
        drop(held);
        loading.await.unwrap().unwrap();
    }

    /// sched.go `findRunnerToUnload`: the first idle runner in keep-alive order, even
    /// when a busy one would expire sooner.
    #[tokio::test(start_paused = true)]
    async fn the_victim_is_idle_before_it_is_short_lived() {
        let (residency, stats) = residency(2, KeepAlive::Forever);
        let (a, b, c) = (spec("a"), spec("b"), spec("c"));
        let minute = Some(KeepAlive::For(Duration::from_secs(60)));
        let busy_a = residency.acquire(&a, minute, &none()).await.unwrap();
        drop(residency.acquire(&b, None, &none()).await.unwrap());
        let lease_c = residency.acquire(&c, None, &none()).await.unwrap();
        assert_eq!(
            residency.resident_names(),
            vec!["a:latest".to_string(), "c:latest".to_string()]
        );
        assert_eq!(stats.snapshot(vec![], 0, 0).models["b:latest"].unloads, 1);
        drop((busy_a, lease_c));
    }

    #[tokio::test(start_paused = true)]
    async fn zero_keep_alive_unloads_at_once_and_expire_unloads_idle() {
        let (residency, _) = residency(2, KeepAlive::Forever);
        let a = spec("a");
        drop(
            residency
                .acquire(&a, Some(KeepAlive::For(Duration::ZERO)), &none())
                .await
                .unwrap(),
        );
        assert!(residency.resident_names().is_empty());
        drop(residency.acquire(&a, None, &none()).await.unwrap());
        assert_eq!(residency.resident_names().len(), 1);
        residency.expire(&a);
        assert!(residency.resident_names().is_empty());
    }

    /// A lease counts as running; the slots bound the count and so its peak, also
    /// while slot waiters take over freed slots.
    #[tokio::test(start_paused = true)]
    async fn running_requests_peak_at_the_models_slots() {
        let stats = Arc::new(Stats::default());
        let config = ResidencyConfig {
            max_loaded: 2,
            num_parallel: 4,
            max_queue: 8,
            default_keep_alive: KeepAlive::Forever,
            vram: None,
            default_num_ctx: 4096,
        };
        let residency = Residency::new(config, stats.clone());
        let a = spec("a");
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (r, a) = (residency.clone(), a.clone());
            tasks.push(tokio::spawn(async move {
                let lease = r.acquire(&a, None, &none()).await.unwrap();
                tokio::time::sleep(Duration::from_secs(1)).await;
                drop(lease);
            }));
        }
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let snap = stats.snapshot(vec![], 0, 0);
        assert_eq!((snap.running, snap.peak_in_flight), (4, 4));
        assert_eq!(residency.waiting(), 4);
        for task in tasks {
            task.await.unwrap();
        }
        let snap = stats.snapshot(vec![], 0, 0);
        assert_eq!((snap.running, snap.peak_in_flight), (0, 4));
        assert_eq!(snap.models["a:latest"].peak_in_flight, 4);
    }

    #[tokio::test(start_paused = true)]
    async fn only_requests_waiting_for_a_load_can_be_busy() {
        let (residency, stats) = residency(1, KeepAlive::Forever);
        let (a, b) = (spec("a"), spec("b"));
        let held = residency.acquire(&a, None, &none()).await.unwrap();
        let mut waiters = Vec::new();
        // Twelve slot waiters for the loaded model: more than max_queue (8), no 503.
        for _ in 0..12 {
            let (r, a) = (residency.clone(), a.clone());
            waiters.push(tokio::spawn(async move {
                r.acquire(&a, None, &none()).await.map(|_| ())
            }));
        }
        // One load being worked on (out of the queue) and eight queued for b.
        for _ in 0..9 {
            let (r, b) = (residency.clone(), b.clone());
            waiters.push(tokio::spawn(async move {
                r.acquire(&b, None, &none()).await.map(|_| ())
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(residency.queued(), 8);
        assert_eq!(residency.waiting(), 21);
        assert_eq!(stats.snapshot(vec![], 0, 0).busy_rejections_total, 0);
        assert_eq!(residency.acquire(&b, None, &none()).await.err(), Some(Busy));
        assert_eq!(stats.snapshot(vec![], 0, 0).busy_rejections_total, 1);
        drop(held);
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
    }
}
