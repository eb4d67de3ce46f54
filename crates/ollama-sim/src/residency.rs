//! Which models are in (simulated) GPU memory, modelled on Ollama's scheduler.
//!
//! - At most `max_loaded` models are resident. A request for a resident model attaches
//!   to it at once and then waits FIFO for one of its `num_parallel` slots.
//! - A request for a model that is not resident joins one FIFO line of pending loads;
//!   loads happen one at a time. When memory is full, a victim is chosen (idle models
//!   first, then the one with the shortest keep-alive), no new request may attach to it,
//!   and the load waits until the victim's attached requests finish. Then it pays the
//!   model's load time. That load counts as a swap.
//! - When a model's last request ends it stays for its keep-alive: zero unloads at once,
//!   a negative value keeps it forever. Keep-alive is sticky per loaded model: a request
//!   that sets it overwrites it, one that doesn't leaves it as it was.
//! - More than `max_queue` waiting requests (pending loads plus slot waiters) is
//!   Ollama's 503 "server busy".
//!
//! A [`Lease`] is one request's hold on a loaded model and a slot; dropping it (the
//! request ended or its client went away) releases both and arms the expiry timer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::keep_alive::KeepAlive;
use crate::spec::ModelSpec;
use crate::stats::Stats;

/// Ollama reports "forever" as an expiry about 292 years ahead.
const FOREVER: Duration = Duration::from_secs(292 * 365 * 24 * 3600);

/// Limits that shape residency.
#[derive(Debug, Clone)]
pub struct ResidencyConfig {
    pub max_loaded: usize,
    pub num_parallel: usize,
    pub max_queue: usize,
    pub default_keep_alive: KeepAlive,
}

/// The 503 answer: too many requests are waiting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Busy;

/// A resident model as `/api/ps` shows it.
#[derive(Debug, Clone)]
pub struct ResidentModel {
    pub spec: Arc<ModelSpec>,
    pub expires_at: SystemTime,
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
    /// Pending loads queue here, FIFO, one load at a time.
    loader: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct State {
    loaded: HashMap<String, Loaded>,
    waiting: usize,
}

struct Loaded {
    spec: Arc<ModelSpec>,
    /// Requests attached to this model: generating or waiting for a slot.
    attached: usize,
    slots: Arc<Semaphore>,
    keep_alive: KeepAlive,
    /// Chosen as a victim: no new request may attach.
    evicting: bool,
    /// Bumped whenever a pending expiry timer must be ignored.
    expiry_generation: u64,
    /// When an idle model expires (meaningful only while `attached == 0`).
    idle_expires_at: SystemTime,
}

/// One request's hold on a resident model and one of its slots.
pub struct Lease {
    /// Time from the request's arrival until it held a slot on a loaded model.
    pub load_duration: Duration,
    _permit: OwnedSemaphorePermit,
    _attachment: Attachment,
}

/// Keeps a model's attached count up while alive.
struct Attachment {
    residency: Residency,
    key: String,
}

/// Counts a request in the waiting line while alive.
struct WaitingGuard<'a> {
    residency: &'a Residency,
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

    /// Waits until `spec` is resident and a slot is free, loading (and evicting) as
    /// needed. `keep_alive` is the request's own value, if it gave one.
    pub async fn acquire(
        &self,
        spec: &Arc<ModelSpec>,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Lease, Busy> {
        let arrived = Instant::now();
        let key = spec.display_name();
        let attachment = match self.try_attach(&key, keep_alive) {
            Some(attachment) => attachment,
            None => self.load(spec, &key, keep_alive).await?,
        };
        let slots = {
            let state = self.state();
            state.loaded[&key].slots.clone()
        };
        let permit = match slots.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let _waiting = self.enter_waiting(&key)?;
                slots
                    .acquire_owned()
                    .await
                    .expect("slot semaphores are never closed")
            }
        };
        Ok(Lease {
            load_duration: arrived.elapsed(),
            _permit: permit,
            _attachment: attachment,
        })
    }

    /// Attaches to a resident model that is not being evicted.
    fn try_attach(&self, key: &str, keep_alive: Option<KeepAlive>) -> Option<Attachment> {
        let mut state = self.state();
        let loaded = state.loaded.get_mut(key).filter(|l| !l.evicting)?;
        loaded.attached += 1;
        loaded.expiry_generation += 1;
        if let Some(keep_alive) = keep_alive {
            loaded.keep_alive = keep_alive;
        }
        Some(Attachment {
            residency: self.clone(),
            key: key.to_string(),
        })
    }

    fn enter_waiting(&self, model: &str) -> Result<WaitingGuard<'_>, Busy> {
        let mut state = self.state();
        if state.waiting >= self.inner.config.max_queue {
            self.inner.stats.busy(model);
            return Err(Busy);
        }
        state.waiting += 1;
        Ok(WaitingGuard { residency: self })
    }

    /// The pending-load path: wait in line, evict if memory is full, pay the load time.
    async fn load(
        &self,
        spec: &Arc<ModelSpec>,
        key: &str,
        keep_alive: Option<KeepAlive>,
    ) -> Result<Attachment, Busy> {
        let _waiting = self.enter_waiting(key)?;
        let _loader = self.inner.loader.lock().await;
        let mut evicted_another = false;
        loop {
            let notified = self.inner.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.state();
                if let Some(loaded) = state.loaded.get_mut(key).filter(|l| !l.evicting) {
                    // Loaded by an earlier request in the line while this one waited.
                    loaded.attached += 1;
                    loaded.expiry_generation += 1;
                    if let Some(keep_alive) = keep_alive {
                        loaded.keep_alive = keep_alive;
                    }
                    return Ok(Attachment {
                        residency: self.clone(),
                        key: key.to_string(),
                    });
                }
                if state.loaded.len() < self.inner.config.max_loaded.max(1) {
                    break;
                }
                let victim = pick_victim(&state.loaded, key);
                let loaded = state
                    .loaded
                    .get_mut(&victim)
                    .expect("the victim is resident");
                loaded.evicting = true;
                if loaded.attached == 0 {
                    state.loaded.remove(&victim);
                    drop(state);
                    self.inner.stats.unloaded(&victim);
                    evicted_another = true;
                    continue;
                }
            }
            notified.await;
        }
        self.inner.stats.event(key, "load_start");
        tokio::time::sleep(spec.load).await;
        let mut state = self.state();
        state.loaded.insert(
            key.to_string(),
            Loaded {
                spec: spec.clone(),
                attached: 1,
                slots: Arc::new(Semaphore::new(self.inner.config.num_parallel.max(1))),
                keep_alive: keep_alive.unwrap_or(self.inner.config.default_keep_alive),
                evicting: false,
                expiry_generation: 0,
                idle_expires_at: SystemTime::now(),
            },
        );
        drop(state);
        self.inner.stats.loaded(key, spec.load, evicted_another);
        Ok(Attachment {
            residency: self.clone(),
            key: key.to_string(),
        })
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

    fn detach(&self, key: &str) {
        let mut state = self.state();
        let Some(loaded) = state.loaded.get_mut(key) else {
            return;
        };
        loaded.attached -= 1;
        if loaded.attached == 0 && !loaded.evicting {
            loaded.expiry_generation += 1;
            match loaded.keep_alive {
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

/// A model already being evicted first (so a load never evicts two), then idle
/// models, then the shortest keep-alive (forever last).
fn pick_victim(loaded: &HashMap<String, Loaded>, wanted: &str) -> String {
    let rank = |l: &Loaded| {
        let keep = match l.keep_alive {
            KeepAlive::Forever => Duration::MAX,
            KeepAlive::For(d) => d,
        };
        (!l.evicting, l.attached > 0, keep)
    };
    loaded
        .iter()
        .filter(|(name, _)| name.as_str() != wanted)
        .min_by(|(na, a), (nb, b)| rank(a).cmp(&rank(b)).then(na.cmp(nb)))
        .map(|(name, _)| name.clone())
        .expect("memory is full, so another model is resident")
}

impl Drop for Attachment {
    fn drop(&mut self) {
        self.residency.detach(&self.key);
    }
}

impl Drop for WaitingGuard<'_> {
    fn drop(&mut self) {
        self.residency.state().waiting -= 1;
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
        };
        (Residency::new(config, stats.clone()), stats)
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
            let lease = residency.acquire(model, None).await.unwrap();
            assert!(
                lease.load_duration >= Duration::from_secs(2),
                "request {i} paid a load"
            );
        }
        let snap = stats.snapshot(residency.resident_names(), 0);
        assert_eq!(snap.loads_total, 4);
        assert_eq!(snap.swaps_total, 3);
        assert_eq!(snap.loaded, vec!["b:latest".to_string()]);
    }

    #[tokio::test(start_paused = true)]
    async fn warm_requests_pay_no_load_and_keep_alive_expires() {
        let (residency, stats) = residency(1, KeepAlive::For(Duration::from_secs(5)));
        let a = spec("a");
        drop(residency.acquire(&a, None).await.unwrap());
        let warm = residency.acquire(&a, None).await.unwrap();
        assert!(warm.load_duration < Duration::from_millis(1));
        drop(warm);
        tokio::time::sleep(Duration::from_secs(6)).await;
        assert!(residency.resident_names().is_empty());
        assert_eq!(stats.snapshot(vec![], 0).unloads_total, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn eviction_waits_for_the_victims_requests() {
        let (residency, stats) = residency(1, KeepAlive::Forever);
        let (a, b) = (spec("a"), spec("b"));
        let lease_a = residency.acquire(&a, None).await.unwrap();
        let residency_b = residency.clone();
        let b_task = tokio::spawn(async move { residency_b.acquire(&b, None).await.map(|_| ()) });
        tokio::time::sleep(Duration::from_secs(10)).await;
        assert!(!b_task.is_finished(), "b must wait for a's request");
        assert_eq!(residency.resident_names(), vec!["a:latest".to_string()]);
        drop(lease_a);
        b_task.await.unwrap().unwrap();
        assert_eq!(stats.snapshot(vec![], 0).swaps_total, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn zero_keep_alive_unloads_at_once_and_expire_unloads_idle() {
        let (residency, _) = residency(2, KeepAlive::Forever);
        let a = spec("a");
        drop(
            residency
                .acquire(&a, Some(KeepAlive::For(Duration::ZERO)))
                .await
                .unwrap(),
        );
        assert!(residency.resident_names().is_empty());
        drop(residency.acquire(&a, None).await.unwrap());
        assert_eq!(residency.resident_names().len(), 1);
        residency.expire(&a);
        assert!(residency.resident_names().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn too_many_waiters_are_busy() {
        let (residency, stats) = residency(1, KeepAlive::Forever);
        let a = spec("a");
        let held = residency.acquire(&a, None).await.unwrap();
        let mut waiters = Vec::new();
        for _ in 0..8 {
            let (r, a) = (residency.clone(), a.clone());
            waiters.push(tokio::spawn(async move {
                r.acquire(&a, None).await.map(|_| ())
            }));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(residency.acquire(&a, None).await.err(), Some(Busy));
        assert_eq!(stats.snapshot(vec![], 0).busy_rejections_total, 1);
        drop(held);
        for waiter in waiters {
            waiter.await.unwrap().unwrap();
        }
    }
}
