//! Counters for tests and benchmarks: requests, loads, unloads, swaps, reloads, load time,
//! busy rejections, in-flight, running and held requests, in total and per model, the
//! peak of running requests, plus a bounded log of residency events (which model was
//! loaded when).
//!
//! The peaks exist so that tests can prove concurrency without timing it: a client that
//! sends eight requests to a model with four slots can read `peak_in_flight == 4`
//! afterwards, however fast or slow the machine was.
//!
//! `GET /sim/stats` serves a [`StatsSnapshot`]; `POST /sim/reset` zeroes the counters
//! (residency, in-flight and running figures describe the present, so they are kept,
//! and the peaks restart from the requests running at that moment).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use serde::Serialize;

const EVENT_LOG_CAPACITY: usize = 20_000;

/// Per-model counters.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ModelStats {
    pub requests: u64,
    pub loads: u64,
    pub unloads: u64,
    /// Loads that had to evict another model first.
    pub swaps: u64,
    /// Loads of a model that was resident with other runner options (`needsReload`);
    /// they count in `loads` too, and in `swaps` only if another model was evicted.
    pub reloads: u64,
    pub load_time_ms: u64,
    pub busy_rejections: u64,
    pub faults_injected: u64,
    /// Requests past admission right now: waiting for a load or a slot, or generating.
    pub in_flight: u64,
    /// Requests generating right now: each holds one of the model's slots on its
    /// loaded runner. Never more than the model's slots (`num_parallel`, 1 for an
    /// embedding model).
    pub running: u64,
    /// The most requests of this model ever `running` at once since start or the
    /// last reset (a reset restarts it from the present `running`).
    pub peak_in_flight: u64,
    /// Requests waiting right now for the `hold` fault to be lifted.
    pub held: u64,
    /// Generations that ran to their end: the last chunk (Ollama's `"done": true`, or
    /// the route's equivalent) was produced for the connection. A caller that then
    /// loses the answer (a crash of its own) still counts here, so completions beyond
    /// one per job a caller kept are work done twice.
    pub completed: u64,
}

/// What a load had to unload first.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LoadKind {
    /// Another model was evicted to make room.
    pub swap: bool,
    /// The same model was resident with other runner options.
    pub reload: bool,
}

/// A residency change, timed from the simulator's start.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ResidencyEvent {
    pub at_ms: u64,
    pub model: String,
    /// `load_start`, `loaded` or `unloaded`.
    pub event: &'static str,
}

/// What `GET /sim/stats` returns.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct StatsSnapshot {
    pub requests_total: u64,
    pub loads_total: u64,
    pub unloads_total: u64,
    pub swaps_total: u64,
    pub reloads_total: u64,
    pub load_time_ms_total: u64,
    pub busy_rejections_total: u64,
    pub faults_injected_total: u64,
    /// See [`ModelStats::completed`].
    pub completed_total: u64,
    /// Requests past admission right now: waiting for a load or a slot, or generating.
    pub in_flight: u64,
    /// Requests generating right now, on any model (each holds a slot).
    pub running: u64,
    /// The most requests ever `running` at once across all models since start or the
    /// last reset (a reset restarts it from the present `running`). At most
    /// `num_parallel` times `max_loaded`.
    pub peak_in_flight: u64,
    /// Requests waiting right now for the `hold` fault to be lifted.
    pub held: u64,
    /// Requests waiting right now for a load or a slot.
    pub waiting: u64,
    /// Requests in the pending (load) queue right now: the line `max_queue` bounds.
    pub queued_for_load: u64,
    /// Models resident right now, by display name.
    pub loaded: Vec<String>,
    pub models: BTreeMap<String, ModelStats>,
}

/// The simulator's counters; cheap to update from any task.
pub struct Stats {
    started: Instant,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    models: BTreeMap<String, ModelStats>,
    /// Requests running on any model; kept here rather than summed so the server-wide
    /// peak costs nothing extra per update.
    running: u64,
    peak_running: u64,
    events: VecDeque<ResidencyEvent>,
}

impl Inner {
    fn model(&mut self, model: &str) -> &mut ModelStats {
        // Look up before inserting so the common case allocates no key.
        if !self.models.contains_key(model) {
            self.models.insert(model.to_string(), ModelStats::default());
        }
        self.models.get_mut(model).expect("inserted above")
    }
}

/// Counts one request as running (holding a slot of a loaded runner) while alive.
/// The residency scheduler puts one in every [`crate::residency::Lease`].
pub struct Running {
    stats: Arc<Stats>,
    model: String,
}

impl Running {
    /// Counts the request's generation as run to its end.
    pub fn completed(&self) {
        self.stats.with_model(&self.model, |m| m.completed += 1);
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let mut inner = self.stats.lock();
        inner.running -= 1;
        inner.model(&self.model).running -= 1;
    }
}

impl Default for Stats {
    fn default() -> Self {
        Stats {
            started: Instant::now(),
            inner: Mutex::new(Inner::default()),
        }
    }
}

impl Stats {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn with_model(&self, model: &str, update: impl FnOnce(&mut ModelStats)) {
        update(self.lock().model(model));
    }

    /// Counts a request of `model` as running until the returned guard is dropped,
    /// and raises the peaks if it makes a new high.
    pub fn running(self: &Arc<Self>, model: &str) -> Running {
        let mut inner = self.lock();
        inner.running += 1;
        inner.peak_running = inner.peak_running.max(inner.running);
        let stats = inner.model(model);
        stats.running += 1;
        stats.peak_in_flight = stats.peak_in_flight.max(stats.running);
        Running {
            stats: self.clone(),
            model: model.to_string(),
        }
    }

    pub fn request(&self, model: &str) {
        self.with_model(model, |m| m.requests += 1);
    }

    pub fn busy(&self, model: &str) {
        self.with_model(model, |m| m.busy_rejections += 1);
    }

    pub fn fault(&self, model: &str) {
        self.with_model(model, |m| m.faults_injected += 1);
    }

    pub fn in_flight_delta(&self, model: &str, delta: i64) {
        self.with_model(model, |m| {
            m.in_flight = m.in_flight.saturating_add_signed(delta)
        });
    }

    pub fn held_delta(&self, model: &str, delta: i64) {
        self.with_model(model, |m| m.held = m.held.saturating_add_signed(delta));
    }

    pub fn loaded(&self, model: &str, took: Duration, kind: LoadKind) {
        self.with_model(model, |m| {
            m.loads += 1;
            m.load_time_ms += took.as_millis() as u64;
            m.swaps += u64::from(kind.swap);
            m.reloads += u64::from(kind.reload);
        });
        self.event(model, "loaded");
    }

    pub fn unloaded(&self, model: &str) {
        self.with_model(model, |m| m.unloads += 1);
        self.event(model, "unloaded");
    }

    pub fn event(&self, model: &str, event: &'static str) {
        let at_ms = self.started.elapsed().as_millis() as u64;
        let mut inner = self.lock();
        if inner.events.len() == EVENT_LOG_CAPACITY {
            inner.events.pop_front();
        }
        inner.events.push_back(ResidencyEvent {
            at_ms,
            model: model.to_string(),
            event,
        });
    }

    /// Zeroes every counter and the event log; in-flight, running and held counts are
    /// kept, and the peaks restart from the requests running now (not from zero, or a
    /// request running across the reset would be missing from them).
    pub fn reset(&self) {
        let mut inner = self.lock();
        for model in inner.models.values_mut() {
            *model = ModelStats {
                in_flight: model.in_flight,
                running: model.running,
                peak_in_flight: model.running,
                held: model.held,
                ..ModelStats::default()
            };
        }
        inner.peak_running = inner.running;
        inner.events.clear();
    }

    pub fn snapshot(
        &self,
        loaded: Vec<String>,
        waiting: u64,
        queued_for_load: u64,
    ) -> StatsSnapshot {
        let inner = self.lock();
        let sum = |f: fn(&ModelStats) -> u64| inner.models.values().map(f).sum();
        StatsSnapshot {
            requests_total: sum(|m| m.requests),
            loads_total: sum(|m| m.loads),
            unloads_total: sum(|m| m.unloads),
            swaps_total: sum(|m| m.swaps),
            reloads_total: sum(|m| m.reloads),
            load_time_ms_total: sum(|m| m.load_time_ms),
            busy_rejections_total: sum(|m| m.busy_rejections),
            faults_injected_total: sum(|m| m.faults_injected),
            completed_total: sum(|m| m.completed),
            in_flight: sum(|m| m.in_flight),
            running: inner.running,
            peak_in_flight: inner.peak_running,
            held: sum(|m| m.held),
            waiting,
            queued_for_load,
            loaded,
            models: inner.models.clone(),
        }
    }

    /// Milliseconds since the simulator started, the clock of [`ResidencyEvent::at_ms`].
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    pub fn events(&self) -> Vec<ResidencyEvent> {
        let inner = self.lock();
        inner.events.iter().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_sum_models_and_reset_keeps_in_flight() {
        let stats = Stats::default();
        stats.request("a");
        stats.request("b");
        stats.loaded("a", Duration::from_millis(20), LoadKind::default());
        let swap = LoadKind {
            swap: true,
            reload: false,
        };
        stats.loaded("b", Duration::from_millis(30), swap);
        stats.in_flight_delta("a", 1);
        let snap = stats.snapshot(vec!["b".into()], 0, 0);
        assert_eq!(snap.requests_total, 2);
        assert_eq!(snap.loads_total, 2);
        assert_eq!(snap.swaps_total, 1);
        assert_eq!(snap.load_time_ms_total, 50);
        assert_eq!(snap.in_flight, 1);
        assert_eq!(stats.events().len(), 2);
        stats.reset();
        let snap = stats.snapshot(vec![], 0, 0);
        assert_eq!(snap.requests_total, 0);
        assert_eq!(snap.in_flight, 1);
        assert!(stats.events().is_empty());
    }

    #[test]
    fn peaks_follow_running_requests_and_reset_to_the_present() {
        let stats = Arc::new(Stats::default());
        let a1 = stats.running("a");
        let a2 = stats.running("a");
        let b1 = stats.running("b");
        drop(a1);
        let snap = stats.snapshot(vec![], 0, 0);
        assert_eq!((snap.running, snap.peak_in_flight), (2, 3));
        assert_eq!(
            (snap.models["a"].running, snap.models["a"].peak_in_flight),
            (1, 2)
        );
        assert_eq!(snap.models["b"].peak_in_flight, 1);
        stats.reset();
        let snap = stats.snapshot(vec![], 0, 0);
        assert_eq!((snap.running, snap.peak_in_flight), (2, 2));
        assert_eq!(snap.models["a"].peak_in_flight, 1);
        drop((a2, b1));
        stats.reset();
        let snap = stats.snapshot(vec![], 0, 0);
        assert_eq!((snap.running, snap.peak_in_flight), (0, 0));
        assert_eq!(snap.models["a"].peak_in_flight, 0);
    }
}
