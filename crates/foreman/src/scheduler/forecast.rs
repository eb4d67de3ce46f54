//! When queued jobs will start and finish: the policy played forward.
//!
//! Users of Ollama have long asked where their request stands and how long it will
//! wait. Plain priority-then-age position does not say it under draining: a job for the
//! loaded model overtakes older work of another. So a forecast takes copies of the
//! live [`Policy`] and [`Capacity`], the queue (what ranking needs, no payloads) and the
//! jobs running now, and replays the dispatcher: at each moment every target's free
//! runners get what the policy decides, and time moves to the next expected end.
//!
//! How long a job runs, and how long a load takes, are learned per load key from the
//! jobs that succeeded ([`Durations`]): the wall time from dispatch to the end of the
//! answer, apart for runs that had to load their key first. A key with no history
//! borrows the mean of the keys that have one, and [`DEFAULT_RUN_MS`] /
//! [`DEFAULT_LOAD_MS`] when nothing has run yet; the estimate says whether its own key
//! was learned.
//!
//! Pure: no clock, no I/O, so tests drive it directly.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use foreman_store::{CallerHead, JobId, JobRef, QueueHead, QueuedJob};

use super::capacity::Capacity;
use super::load_key::LoadKey;
use super::policy::Policy;

/// A run's length before anything has been learned.
pub const DEFAULT_RUN_MS: f64 = 10_000.0;
/// A load's length before anything has been learned.
pub const DEFAULT_LOAD_MS: f64 = 10_000.0;
/// Weight of the newest sample in the moving averages.
const SMOOTHING: f64 = 0.2;
/// Jobs played forward at most; the rest of a longer queue gets no estimate.
pub const MAX_FORECAST_JOBS: usize = 20_000;
/// With nothing running, the replay steps the clock by this much, at most
/// [`IDLE_STEPS`] times.
const IDLE_STEP_MS: i64 = 1_000;
const IDLE_STEPS: u32 = 3_600;

/// An exponentially weighted mean.
#[derive(Debug, Clone, Copy, Default)]
struct Mean(Option<f64>);

impl Mean {
    fn add(&mut self, sample: f64) {
        self.0 = Some(match self.0 {
            Some(mean) => mean + SMOOTHING * (sample - mean),
            None => sample,
        });
    }
}

/// What one key's history says.
#[derive(Debug, Clone, Copy, Default)]
struct Learned {
    /// Runs of the key already loaded.
    warm: Mean,
    /// Runs that loaded the key first (load and run together).
    cold: Mean,
}

/// Run and load times learned per load key.
#[derive(Debug, Clone, Default)]
pub struct Durations {
    keys: HashMap<LoadKey, Learned>,
}

impl Durations {
    /// A job of `key` succeeded after `elapsed_ms` from dispatch to the end of its
    /// answer; `loaded` when its key was not loaded on its target at dispatch.
    pub fn learn(&mut self, key: &LoadKey, elapsed_ms: i64, loaded: bool) {
        let learned = self.keys.entry(key.clone()).or_default();
        let sample = elapsed_ms.max(0) as f64;
        if loaded {
            learned.cold.add(sample);
        } else {
            learned.warm.add(sample);
        }
    }

    /// Whether any job of `key` has been learned from.
    pub fn knows(&self, key: &LoadKey) -> bool {
        self.keys.contains_key(key)
    }

    fn mean_of(&self, pick: impl Fn(&Learned) -> Option<f64>) -> Option<f64> {
        let values: Vec<f64> = self.keys.values().filter_map(pick).collect();
        (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64)
    }

    /// Expected run time of a job of `key` once its key is loaded, in ms.
    pub fn run_ms(&self, key: &LoadKey) -> f64 {
        let own = self.keys.get(key);
        own.and_then(|l| l.warm.0)
            .or_else(|| own.and_then(|l| l.cold.0))
            .or_else(|| self.mean_of(|l| l.warm.0))
            .unwrap_or(DEFAULT_RUN_MS)
    }

    /// Expected time to load `key`, in ms: its cold runs less its warm ones.
    pub fn load_ms(&self, key: &LoadKey) -> f64 {
        let load_of = |l: &Learned| match (l.cold.0, l.warm.0) {
            (Some(cold), Some(warm)) => Some((cold - warm).max(0.0)),
            _ => None,
        };
        self.keys
            .get(key)
            .and_then(load_of)
            .or_else(|| self.mean_of(load_of))
            .unwrap_or(DEFAULT_LOAD_MS)
    }
}

/// A job running now, as the forecast needs it.
#[derive(Debug, Clone)]
pub struct RunningJob {
    pub id: JobId,
    pub target: usize,
    pub key: LoadKey,
    /// When it was dispatched (unix ms).
    pub started_at: i64,
    /// Its key was not loaded on its target at dispatch.
    pub loaded: bool,
}

/// When one job is expected to start and end.
#[derive(Debug, Clone, PartialEq)]
pub struct Estimate {
    /// When it is dispatched to a target (unix ms).
    pub start_at: i64,
    /// When its answer ends (unix ms).
    pub finish_at: i64,
    /// The target it is expected on.
    pub target: usize,
    /// Its key is expected to be loaded for it.
    pub loads: bool,
    /// Models expected to run on its target between now and its start, other than
    /// its own, in the order they first run.
    pub before: Vec<String>,
    /// Its own key's durations were learned, not borrowed or assumed.
    pub learned: bool,
}

/// Estimates for the queued and running jobs, made at `at`.
#[derive(Debug, Clone, Default)]
pub struct Forecast {
    pub at: i64,
    pub estimates: HashMap<JobId, Estimate>,
}

/// A job of the replayed queue.
#[derive(Debug, Clone)]
struct Waiting {
    id: JobId,
    priority: i32,
    created_at: i64,
    weight: u32,
}

impl Waiting {
    fn reference(&self) -> JobRef {
        JobRef {
            id: self.id,
            priority: self.priority,
            created_at: self.created_at,
        }
    }
}

/// One key's replayed queue.
#[derive(Debug, Default)]
struct KeyQueue {
    /// Each caller's jobs (jobs without one under `None`), worst first, so that the
    /// caller's best (highest priority, then oldest, then lowest id, the store's rank)
    /// is popped from the end. Per caller, so that the policy's fair share between
    /// callers is replayed as the dispatcher applies it.
    callers: BTreeMap<Option<String>, Vec<Waiting>>,
    /// Ages, for the oldest job the wait bound counts from.
    ages: BTreeSet<(i64, JobId)>,
    len: usize,
}

impl KeyQueue {
    /// Takes job `id` out of the queue; the policy picks a caller's best, so it is
    /// found at the end of its caller's list.
    fn take(&mut self, id: JobId) -> Option<Waiting> {
        let (caller, position) = self.callers.iter().find_map(|(caller, jobs)| {
            jobs.iter()
                .rposition(|job| job.id == id)
                .map(|position| (caller.clone(), position))
        })?;
        let jobs = self.callers.get_mut(&caller)?;
        let job = jobs.remove(position);
        if jobs.is_empty() {
            self.callers.remove(&caller);
        }
        self.ages.remove(&(job.created_at, job.id));
        self.len -= 1;
        Some(job)
    }
}

/// An expected end, ordered by time.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct End {
    at: i64,
    target: usize,
    key: LoadKey,
}

/// Plays the policy forward from `now` over `queued` (see the module doc).
pub fn forecast(
    policy: &Policy,
    capacity: &Capacity,
    running: &[RunningJob],
    queued: &[QueuedJob],
    durations: &Durations,
    now: i64,
) -> Forecast {
    let mut policy = policy.clone();
    let mut capacity = capacity.clone();
    let mut estimates = HashMap::new();
    let mut queues: BTreeMap<LoadKey, KeyQueue> = BTreeMap::new();
    for job in queued.iter().take(MAX_FORECAST_JOBS) {
        let queue = queues
            .entry(LoadKey::new(job.model.clone(), job.load_options.clone()))
            .or_default();
        queue
            .callers
            .entry(job.caller.clone())
            .or_default()
            .push(Waiting {
                id: job.id,
                priority: job.priority,
                created_at: job.created_at,
                weight: job.caller_weight,
            });
        queue.ages.insert((job.created_at, job.id));
        queue.len += 1;
    }
    for queue in queues.values_mut() {
        for jobs in queue.callers.values_mut() {
            jobs.sort_by(|a, b| {
                a.priority
                    .cmp(&b.priority)
                    .then(b.created_at.cmp(&a.created_at))
                    .then(b.id.cmp(&a.id))
            });
        }
    }
    let mut ends: Vec<End> = running
        .iter()
        .map(|job| {
            let expected = expected_ms(durations, &job.key, job.loaded);
            let at = (job.started_at + expected as i64).max(now + 1);
            estimates.insert(
                job.id,
                Estimate {
                    start_at: job.started_at,
                    finish_at: at,
                    target: job.target,
                    loads: job.loaded,
                    before: Vec::new(),
                    learned: durations.knows(&job.key),
                },
            );
            End {
                at,
                target: job.target,
                key: job.key.clone(),
            }
        })
        .collect();
    // Models run on each target so far (those running now first), in order, without
    // repeats.
    let mut ran: Vec<Vec<String>> = vec![Vec::new(); capacity.targets.len()];
    for job in running {
        if let Some(models) = ran.get_mut(job.target)
            && !models.contains(&job.key.model)
        {
            models.push(job.key.model.clone());
        }
    }
    let mut time = now;
    let mut idle_steps = 0;
    loop {
        // Every free runner takes what the policy gives it at `time`.
        let mut heads = heads_of(&queues);
        let mut dispatched = true;
        while dispatched {
            dispatched = false;
            for (target, ran_here) in ran.iter_mut().enumerate() {
                if heads.is_empty() {
                    break;
                }
                let Some(decision) = policy.decide(&heads, &capacity, target, time) else {
                    continue;
                };
                let Some(queue) = queues.get_mut(&decision.key) else {
                    continue;
                };
                if queue.take(decision.job).is_none() {
                    continue;
                }
                if queue.len == 0 {
                    queues.remove(&decision.key);
                }
                let state = &mut capacity.targets[target];
                let loads = !state.is_resident(&decision.key);
                state.start(&decision.key, decision.evict.as_ref(), time);
                let finish_at = time + expected_ms(durations, &decision.key, loads) as i64;
                let model = &decision.key.model;
                let before = ran_here.iter().filter(|m| *m != model).cloned().collect();
                if !ran_here.contains(model) {
                    ran_here.push(model.clone());
                }
                estimates.insert(
                    decision.job,
                    Estimate {
                        start_at: time,
                        finish_at,
                        target,
                        loads,
                        before,
                        learned: durations.knows(&decision.key),
                    },
                );
                ends.push(End {
                    at: finish_at,
                    target,
                    key: decision.key,
                });
                heads = heads_of(&queues);
                dispatched = true;
            }
        }
        if queues.is_empty() {
            break;
        }
        // No target that is up lists a model still queued: the rest has no estimate.
        let servable = queues.keys().any(|key| {
            capacity
                .targets
                .iter()
                .any(|target| !target.paused && target.may_serve(&key.model))
        });
        if !servable {
            break;
        }
        // Time moves to the next expected end. With none, the policy is waiting for the
        // clock (its wait bound): a simulated hour of seconds at most, then the rest
        // has no estimate.
        match ends.iter().map(|end| end.at).min() {
            Some(next) => time = next.max(time),
            None if idle_steps < IDLE_STEPS => {
                idle_steps += 1;
                time += IDLE_STEP_MS;
                continue;
            }
            None => break,
        }
        ends.retain(|end| {
            if end.at <= time {
                capacity.targets[end.target].finish(&end.key, time);
                false
            } else {
                true
            }
        });
    }
    Forecast { at: now, estimates }
}

/// Expected wall time from dispatch to the end of the answer.
fn expected_ms(durations: &Durations, key: &LoadKey, loads: bool) -> f64 {
    let run = durations.run_ms(key);
    if loads {
        run + durations.load_ms(key)
    } else {
        run
    }
}

/// The queue heads of the replayed queue, as the store would give them.
fn heads_of(queues: &BTreeMap<LoadKey, KeyQueue>) -> Vec<QueueHead> {
    queues
        .iter()
        .filter_map(|(key, queue)| {
            let callers: Vec<CallerHead> = queue
                .callers
                .iter()
                .filter_map(|(caller, jobs)| {
                    let best = jobs.last()?;
                    Some(CallerHead {
                        caller: caller.clone(),
                        weight: best.weight,
                        best: best.reference(),
                        depth: jobs.len() as u64,
                    })
                })
                .collect();
            let best = callers
                .iter()
                .map(|caller| caller.best)
                .min_by_key(|job| (Reverse(job.priority), job.created_at, job.id))?;
            let &(oldest, _) = queue.ages.first()?;
            Some(QueueHead {
                model: key.model.clone(),
                load_options: key.options.clone(),
                best,
                oldest_created_at: oldest,
                depth: queue.len as u64,
                callers,
            })
        })
        .collect()
}

/// Why a queued job waits, in words, from its estimate; `several_targets` adds where.
pub fn waiting_for(
    estimate: &Estimate,
    model: &str,
    target_name: &str,
    several_targets: bool,
) -> String {
    let place = if several_targets {
        format!(" on {target_name}")
    } else {
        String::new()
    };
    match (estimate.loads, estimate.before.as_slice()) {
        (true, []) => format!("{model} loads next{place}"),
        (true, [one]) => format!("{one} is being drained first{place}, then {model} loads"),
        (true, many) => format!(
            "{} are being drained first{place}, then {model} loads",
            many.join(", ")
        ),
        (false, []) => format!("{model} is loaded{place}; waiting for a free slot"),
        (false, [one]) => format!("{model} is loaded{place}; {one} runs first"),
        (false, many) => format!("{model} is loaded{place}; {} run first", many.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scheduler::TargetState;

    fn queued(n: u128, model: &str, created_at: i64) -> QueuedJob {
        QueuedJob {
            id: JobId::from(ulid::Ulid(n)),
            model: model.into(),
            load_options: String::new(),
            priority: 0,
            created_at,
            run_after: created_at,
            caller: None,
            caller_weight: 1,
        }
    }

    fn key(model: &str) -> LoadKey {
        LoadKey::new(model, "")
    }

    /// 2 s runs and 5 s loads learned for both models.
    fn learned() -> Durations {
        let mut durations = Durations::default();
        for model in ["a", "b"] {
            durations.learn(&key(model), 2_000, false);
            durations.learn(&key(model), 7_000, true);
        }
        durations
    }

    #[test]
    fn durations_learn_runs_and_loads_apart_and_lend_them_to_unknown_keys() {
        let durations = learned();
        assert_eq!(durations.run_ms(&key("a")), 2_000.0);
        assert_eq!(durations.load_ms(&key("a")), 5_000.0);
        assert!(durations.knows(&key("a")) && !durations.knows(&key("c")));
        assert_eq!(
            durations.run_ms(&key("c")),
            2_000.0,
            "the mean of the others"
        );
        assert_eq!(durations.load_ms(&key("c")), 5_000.0);
        let empty = Durations::default();
        assert_eq!(empty.run_ms(&key("a")), DEFAULT_RUN_MS);
        assert_eq!(empty.load_ms(&key("a")), DEFAULT_LOAD_MS);
    }

    /// A caller's one job queued behind another's backlog of the same model is expected
    /// where fair share puts it: after one of the backlog's, not all; without fair share,
    /// after it.
    #[test]
    fn the_forecast_follows_fair_share_between_callers() {
        let now = 100_000;
        let mut target = TargetState::new("gpu", 1, 1);
        target.seed(key("a"), now - 10_000);
        let capacity = Capacity::new(vec![target]);
        let mut queue: Vec<QueuedJob> = (0..50)
            .map(|n| QueuedJob {
                caller: Some("flood".into()),
                ..queued(10 + n, "a", now - 5_000 + n as i64)
            })
            .collect();
        queue.push(QueuedJob {
            caller: Some("chat".into()),
            ..queued(100, "a", now - 10)
        });
        let chat = JobId::from(ulid::Ulid(100));
        let fair = forecast(
            &Policy::new(600_000),
            &capacity,
            &[],
            &queue,
            &learned(),
            now,
        );
        // Both callers start level, and a tie goes to the older job: one of the flood's
        // runs first.
        assert_eq!(fair.estimates[&chat].start_at, now + 2_000);
        let fifo = forecast(
            &Policy::new(600_000).with_fair_share(false),
            &capacity,
            &[],
            &queue,
            &learned(),
            now,
        );
        assert_eq!(fifo.estimates[&chat].start_at, now + 50 * 2_000);
    }

    /// One slot, one place, `a` loaded and running: queued `a` work drains before
    /// the older `b` job, which then loads; its wait names `a`.
    #[test]
    fn the_loaded_model_drains_first_and_the_other_loads_after() {
        let now = 100_000;
        let mut target = TargetState::new("gpu", 1, 1);
        target.start(&key("a"), None, now - 1_000);
        let capacity = Capacity::new(vec![target]);
        let running = [RunningJob {
            id: JobId::from(ulid::Ulid(1)),
            target: 0,
            key: key("a"),
            started_at: now - 1_000,
            loaded: false,
        }];
        let queue = [
            queued(2, "b", now - 500),
            queued(3, "a", now - 400),
            queued(4, "a", now - 300),
        ];
        let policy = Policy::new(60_000);
        let forecast = forecast(&policy, &capacity, &running, &queue, &learned(), now);
        let at = |n: u128| forecast.estimates[&JobId::from(ulid::Ulid(n))].clone();
        // The running job has a second left; then a, a, then b with its load.
        assert_eq!(at(1).finish_at, now + 1_000);
        assert_eq!(
            (at(3).start_at, at(3).finish_at),
            (now + 1_000, now + 3_000)
        );
        assert_eq!(
            (at(4).start_at, at(4).finish_at),
            (now + 3_000, now + 5_000)
        );
        let b = at(2);
        assert_eq!((b.start_at, b.finish_at), (now + 5_000, now + 12_000));
        assert!(b.loads && !at(3).loads);
        assert_eq!(b.before, vec!["a".to_string()]);
        assert_eq!(
            waiting_for(&b, "b", "gpu", false),
            "a is being drained first, then b loads"
        );
        assert_eq!(
            waiting_for(&at(3), "a", "gpu", false),
            "a is loaded; waiting for a free slot"
        );
    }

    /// The wait bound holds in the replay too: past `max_wait`, the starving key is
    /// placed before the loaded key's later work.
    #[test]
    fn the_wait_bound_holds_in_the_replay() {
        let now = 100_000;
        let target = TargetState::new("gpu", 1, 1);
        let capacity = Capacity::new(vec![target]);
        let mut queue = vec![queued(1, "b", now - 100)];
        for n in 0..20 {
            queue.push(queued(10 + n, "a", now - 50 + n as i64));
        }
        // Loaded `a` first (most queued), but `b` may wait 10 s at most.
        let policy = Policy::new(10_000);
        let forecast = forecast(&policy, &capacity, &[], &queue, &learned(), now);
        assert_eq!(forecast.estimates.len(), 21, "every job has an estimate");
        let b = &forecast.estimates[&JobId::from(ulid::Ulid(1))];
        assert!(
            b.start_at <= now + 10_000 + 2_000 + 7_000,
            "b starts within the bound (plus the run under way): {b:?}"
        );
        let last_a = forecast
            .estimates
            .iter()
            .filter(|(id, _)| **id != JobId::from(ulid::Ulid(1)))
            .map(|(_, e)| e.start_at)
            .max()
            .unwrap();
        assert!(last_a > b.start_at, "some a work runs after b");
    }

    /// Nothing can run (the only target is paused): no estimates, and the replay ends.
    #[test]
    fn no_estimate_when_no_target_can_run_the_work() {
        let mut target = TargetState::new("gpu", 1, 1);
        target.paused = true;
        let capacity = Capacity::new(vec![target]);
        let queue = [queued(1, "a", 0)];
        let forecast = forecast(&Policy::new(1_000), &capacity, &[], &queue, &learned(), 0);
        assert!(forecast.estimates.is_empty());
    }
}
