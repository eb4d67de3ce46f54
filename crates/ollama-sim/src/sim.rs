//! The simulator's shared state, handed to every route: models, residency, counters,
//! faults, and the switch that makes the listener refuse connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::sync::watch;

use crate::SimConfig;
use crate::batching::Batching;
use crate::faults::{Fault, Faults, FaultsUpdate};
use crate::residency::{Residency, ResidencyConfig};
use crate::spec::{ModelSpec, canonical_name};
use crate::stats::{Stats, StatsSnapshot};
use crate::text::Rng;

/// State shared by all routes and the listener.
pub struct Sim {
    pub config: SimConfig,
    /// The models on "disk"; pull, copy, create and delete change them.
    models: std::sync::RwLock<Vec<Arc<ModelSpec>>>,
    pub residency: Residency,
    /// Streams generating per model, for the batching curve.
    pub batching: Arc<Batching>,
    pub stats: Arc<Stats>,
    pub started: SystemTime,
    faults: Mutex<(Faults, Rng)>,
    /// `true` while connections must be refused; the listener watches it.
    pub refusing: watch::Sender<bool>,
    /// `true` while the `hold` fault keeps inference requests waiting.
    pub holding: watch::Sender<bool>,
    /// Bumped by every refusal, so a timed refusal only ends itself.
    refusal_generation: AtomicU64,
    counter: AtomicU64,
}

impl Sim {
    pub fn new(config: SimConfig) -> Arc<Sim> {
        let stats = Arc::new(Stats::default());
        let residency = Residency::new(
            ResidencyConfig {
                max_loaded: config.max_loaded,
                num_parallel: config.num_parallel,
                max_queue: config.max_queue,
                default_keep_alive: config.keep_alive,
                vram: config.vram,
                default_num_ctx: config.context_length,
            },
            stats.clone(),
        );
        let (refusing, _) = watch::channel(config.faults.refuse_connections);
        let (holding, _) = watch::channel(config.faults.hold);
        Arc::new(Sim {
            models: std::sync::RwLock::new(config.models.iter().cloned().map(Arc::new).collect()),
            residency,
            batching: Arc::default(),
            stats,
            started: SystemTime::now(),
            faults: Mutex::new((config.faults.clone(), Rng::new(config.seed))),
            refusing,
            holding,
            refusal_generation: AtomicU64::new(0),
            counter: AtomicU64::new(0),
            config,
        })
    }

    /// The models on "disk", newest first (the order `/api/tags` lists them in).
    pub fn models(&self) -> Vec<Arc<ModelSpec>> {
        self.models
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// The model a request names, matched as Ollama matches (case, `:latest`).
    pub fn find(&self, name: &str) -> Option<Arc<ModelSpec>> {
        let wanted = canonical_name(name);
        self.models()
            .into_iter()
            .find(|m| m.display_name() == wanted)
    }

    /// Adds (or replaces) a model, as a pull, copy or create does; it lists first.
    pub fn add_model(&self, spec: ModelSpec) {
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        models.retain(|m| m.display_name() != spec.display_name());
        models.insert(0, Arc::new(spec));
    }

    /// Removes a model; false when there was none by that name.
    pub fn remove_model(&self, name: &str) -> bool {
        let wanted = canonical_name(name);
        let mut models = self.models.write().unwrap_or_else(|e| e.into_inner());
        let before = models.len();
        models.retain(|m| m.display_name() != wanted);
        models.len() < before
    }

    /// Draws the fault for one inference request.
    pub fn draw_fault(&self) -> Fault {
        let mut guard = self.faults.lock().unwrap_or_else(|e| e.into_inner());
        let (faults, rng) = &mut *guard;
        let draws = [
            rng.next_f64(),
            rng.next_f64(),
            rng.next_f64(),
            rng.next_f64(),
            rng.next_f64(),
        ];
        faults.pick(draws)
    }

    pub fn faults(&self) -> Faults {
        self.faults
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }

    /// Applies a fault update and drives the listener switch. Over HTTP the switch
    /// waits a moment (`switch_after`), so the answer to the request that turned
    /// refusal on still reaches its client before every connection is cut.
    pub fn update_faults(
        self: &Arc<Self>,
        update: &FaultsUpdate,
        switch_after: Duration,
    ) -> Result<Faults, String> {
        let (current, refuse_for) = {
            let mut guard = self.faults.lock().unwrap_or_else(|e| e.into_inner());
            let refuse_for = guard.0.apply(update)?;
            (guard.0.clone(), refuse_for)
        };
        self.holding.send_replace(current.hold);
        let generation = self.refusal_generation.fetch_add(1, Ordering::SeqCst) + 1;
        let refuse = current.refuse_connections;
        if switch_after.is_zero() {
            self.refusing.send_replace(refuse);
        } else {
            let sim = Arc::downgrade(self);
            tokio::spawn(async move {
                tokio::time::sleep(switch_after).await;
                if let Some(sim) = sim.upgrade()
                    && sim.refusal_generation.load(Ordering::SeqCst) == generation
                {
                    sim.refusing.send_replace(refuse);
                }
            });
        }
        if let (true, Some(after)) = (refuse, refuse_for) {
            self.end_refusal_after(generation, switch_after + after);
        }
        Ok(current)
    }

    fn end_refusal_after(self: &Arc<Self>, generation: u64, after: Duration) {
        let sim = Arc::downgrade(self);
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let Some(sim) = sim.upgrade() else { return };
            if sim.refusal_generation.load(Ordering::SeqCst) == generation {
                sim.update_faults(
                    &FaultsUpdate {
                        refuse_connections: Some(false),
                        ..FaultsUpdate::default()
                    },
                    Duration::ZERO,
                )
                .ok();
            }
        });
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        self.stats.snapshot(
            self.residency.resident_names(),
            self.residency.waiting() as u64,
            self.residency.queued() as u64,
        )
    }

    /// A small rolling number for OpenAI response ids (`chatcmpl-N`, N < 999).
    pub fn next_id(&self) -> u64 {
        self.counter.fetch_add(1, Ordering::Relaxed) % 999
    }
}
