//! Tests of the policy: a table of single decisions, and properties checked on a
//! deterministic simulation of targets with runners.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use foreman_store::{JobId, JobRef, QueueHead};
use proptest::prelude::*;

use super::{Capacity, Decision, LoadKey, Policy, Reason, TargetState};

/// The policy foreman had while it ran one job at a time (one target, one slot, one
/// place), kept as the oracle the new policy must match in that case.
#[allow(dead_code)]
mod single_slot {
    use std::cmp::Reverse;
    use std::collections::HashMap;

    use foreman_store::{JobId, QueueHead};

    /// What the worker should do next.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Decision {
        pub job: JobId,
        pub model: String,
        pub reason: Reason,
    }

    /// Why a job was picked; logged, and useful in tests.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Reason {
        /// Another model hit the wait bound: load it, and give it a batch.
        Starving,
        /// The resident model holds work of the highest queued priority.
        Drain,
        /// The resident model has no work of the highest queued priority: switch.
        Switch,
    }

    /// The forced load under way: `model` was loaded by the bound at `started`.
    #[derive(Debug, Clone)]
    struct Batch {
        model: String,
        started: i64,
    }

    /// The policy with its memory between decisions, for one target with one slot.
    #[derive(Debug)]
    pub struct Policy {
        max_wait_ms: i64,
        /// Model → the last decision time at which it was resident or chosen.
        served: HashMap<String, i64>,
        batch: Option<Batch>,
    }

    impl Policy {
        /// A policy whose wait bound is `max_wait_ms`.
        pub fn new(max_wait_ms: i64) -> Policy {
            Policy {
                max_wait_ms,
                served: HashMap::new(),
                batch: None,
            }
        }

        /// Picks the next job from one head per model, and remembers the choice.
        /// `resident` is the model the target has loaded (as a model key), if known.
        pub fn decide(
            &mut self,
            heads: &[QueueHead],
            resident: Option<&str>,
            now_ms: i64,
        ) -> Option<Decision> {
            if let Some(model) = resident {
                self.mark_served(model, now_ms);
            }
            let decision = self.choose(heads, resident, now_ms)?;
            self.mark_served(&decision.model, now_ms);
            match decision.reason {
                Reason::Starving => {
                    self.batch = Some(Batch {
                        model: decision.model.clone(),
                        started: now_ms,
                    })
                }
                Reason::Switch => self.batch = None,
                Reason::Drain => {}
            }
            self.forget_idle(heads, now_ms);
            Some(decision)
        }

        fn choose(
            &self,
            heads: &[QueueHead],
            resident: Option<&str>,
            now: i64,
        ) -> Option<Decision> {
            let pick = |head: &QueueHead, reason| Decision {
                job: head.best.id,
                model: head.model.clone(),
                reason,
            };
            let top = heads.iter().map(|head| head.best.priority).max()?;
            let batch_start = self.active_batch_start(heads);
            let starving = heads
                .iter()
                .filter(|head| Some(head.model.as_str()) != resident)
                .map(|head| {
                    let since = self.waiting_since(head);
                    (since.max(batch_start), since, head)
                })
                .filter(|(clock, _, _)| now - clock >= self.max_wait_ms)
                .min_by_key(|(clock, since, head)| {
                    (
                        *clock,
                        *since,
                        Reverse(head.best.priority),
                        head.best.created_at,
                        head.best.id,
                    )
                });
            if let Some((_, _, head)) = starving {
                return Some(pick(head, Reason::Starving));
            }
            if let Some(head) = heads
                .iter()
                .find(|head| Some(head.model.as_str()) == resident && head.best.priority == top)
            {
                return Some(pick(head, Reason::Drain));
            }
            heads
                .iter()
                .filter(|head| head.best.priority == top)
                .min_by_key(|head| (Reverse(head.depth), head.best.created_at, head.best.id))
                .map(|head| pick(head, Reason::Switch))
        }

        /// When `head`'s model started waiting: its oldest job's arrival, or its last
        /// service if later.
        fn waiting_since(&self, head: &QueueHead) -> i64 {
            match self.served.get(&head.model) {
                Some(&served) => served.max(head.oldest_created_at),
                None => head.oldest_created_at,
            }
        }

        /// The start of the forced batch under way, while its model still has work that
        /// was queued when the bound loaded it; else no floor.
        fn active_batch_start(&self, heads: &[QueueHead]) -> i64 {
            self.batch
                .as_ref()
                .filter(|batch| {
                    heads.iter().any(|head| {
                        head.model == batch.model && head.oldest_created_at <= batch.started
                    })
                })
                .map_or(i64::MIN, |batch| batch.started)
        }

        fn mark_served(&mut self, model: &str, now: i64) {
            match self.served.get_mut(model) {
                Some(served) => *served = now,
                None => {
                    self.served.insert(model.to_string(), now);
                }
            }
        }

        /// Drops the service times that can no longer matter: a model with nothing queued
        /// whose last service is older than the bound. Its next job arrives later than
        /// that service, so its wait counts from the arrival anyway.
        fn forget_idle(&mut self, heads: &[QueueHead], now: i64) {
            if self.served.len() <= heads.len() {
                return;
            }
            let horizon = now - self.max_wait_ms;
            self.served.retain(|model, served| {
                *served >= horizon || heads.iter().any(|head| &head.model == model)
            });
        }
    }
}

/// The queue's heads as the store reports them, from each queued job's key, id,
/// priority and arrival: per key, the job first by (priority, age, id), the oldest
/// arrival and the depth. Shared by the simulations here and in `protect_tests`.
pub(super) fn heads_from<'a>(
    queued: impl IntoIterator<Item = (&'a LoadKey, JobId, i32, i64)>,
) -> Vec<QueueHead> {
    let mut by_key: BTreeMap<&LoadKey, Vec<JobRef>> = BTreeMap::new();
    for (key, id, priority, created_at) in queued {
        by_key.entry(key).or_default().push(JobRef {
            id,
            priority,
            created_at,
        });
    }
    by_key
        .into_iter()
        .map(|(key, jobs)| {
            let best = *jobs
                .iter()
                .min_by_key(|job| (Reverse(job.priority), job.created_at, job.id))
                .expect("a key with a head has jobs");
            QueueHead {
                model: key.model.clone(),
                load_options: key.options.clone(),
                best,
                oldest_created_at: jobs.iter().map(|job| job.created_at).min().unwrap(),
                depth: jobs.len() as u64,
                callers: Vec::new(),
            }
        })
        .collect()
}

/// A head for `model` (no load options) whose best job has `priority` and was created
/// at `created`, and whose oldest job was created at `oldest`.
fn head(model: &str, priority: i32, created: i64, oldest: i64) -> QueueHead {
    QueueHead {
        model: model.to_string(),
        load_options: String::new(),
        best: JobRef {
            id: JobId::generate(),
            priority,
            created_at: created,
        },
        oldest_created_at: oldest,
        depth: 1,
        callers: Vec::new(),
    }
}

fn key(model: &str) -> LoadKey {
    LoadKey::new(model, "")
}

/// Renders a decision as `model/reason`, with `-evicted` when it unloads a key.
fn render(decision: Option<Decision>) -> String {
    match decision {
        Some(decision) => match decision.evict {
            Some(evicted) => format!("{}/{:?}-{}", decision.key, decision.reason, evicted),
            None => format!("{}/{:?}", decision.key, decision.reason),
        },
        None => "none".to_string(),
    }
}

/// One target with one slot and one place, `resident` loaded at `now`.
fn single(resident: Option<&str>, now: i64) -> Capacity {
    let mut target = TargetState::new("t", 1, 1);
    if let Some(model) = resident {
        target.seed(key(model), now);
    }
    Capacity::new(vec![target])
}

/// Runs a fresh policy's first decision (bound 1 s) on one single-slot target.
fn check(heads: &[QueueHead], resident: Option<&str>, now: i64, expected: &str) {
    let got = render(Policy::new(1_000).decide(heads, &single(resident, now), 0, now));
    let expected = expected.replace("Switch", "Load");
    let expected = match (
        resident,
        expected.contains("Load") || expected.contains("Starving"),
    ) {
        (Some(resident), true) if !expected.starts_with(&format!("{resident}/")) => {
            format!("{expected}-{resident}")
        }
        _ => expected,
    };
    assert_eq!(got, expected);
}

#[test]
fn policy_table() {
    let a = head("a", 0, 100, 100);
    let b = head("b", 0, 50, 50);
    let b_urgent = head("b", 5, 200, 200);
    check(&[], Some("a"), 0, "none");
    check(&[a.clone(), b.clone()], Some("a"), 500, "a/Drain");
    check(&[a.clone(), b.clone()], None, 500, "b/Switch");
    check(&[a.clone(), b.clone()], Some("c"), 500, "b/Switch");
    check(&[a.clone(), b_urgent.clone()], None, 500, "b/Switch");
    // Priority dominates across models: the resident's lower-priority work waits.
    check(&[a.clone(), b_urgent.clone()], Some("a"), 500, "b/Switch");
    check(&[a.clone(), b.clone()], Some("a"), 1_050, "b/Starving");
    check(&[a.clone(), b.clone()], Some("b"), 1_050, "b/Drain");
    // The bound forces a lower priority past a higher one.
    check(
        &[head("a", 9, 1_000, 1_000), b.clone()],
        Some("a"),
        1_050,
        "b/Starving",
    );
    check(
        &[head("a", 0, 10, 10), head("b", 0, 20, 20)],
        Some("c"),
        5_000,
        "a/Starving",
    );
    check(std::slice::from_ref(&a), Some("a"), 10_000, "a/Drain");
    // Switching prefers the deeper queue at equal priority, even if younger.
    let deep_b = QueueHead {
        depth: 5,
        ..head("b", 0, 200, 200)
    };
    check(&[a.clone(), deep_b.clone()], Some("c"), 500, "b/Switch");
    check(
        &[head("a", 1, 300, 300), deep_b],
        Some("c"),
        500,
        "a/Switch",
    );
}

/// A single-slot target driven the way a runner drives it: decide, start, and end the
/// job before the next decision.
struct OneRunner {
    policy: Policy,
    capacity: Capacity,
    /// The key of the job started at the last step, which ends at the next one.
    running: Option<LoadKey>,
}

impl OneRunner {
    /// `resident` was loaded, and last used, at `now`.
    fn new(resident: &str, now: i64) -> OneRunner {
        OneRunner {
            policy: Policy::new(1_000),
            capacity: single(Some(resident), now),
            running: None,
        }
    }

    fn step(&mut self, heads: &[QueueHead], now: i64) -> String {
        if let Some(key) = self.running.take() {
            self.capacity.targets[0].finish(&key, now);
        }
        let decision = self.policy.decide(heads, &self.capacity, 0, now);
        if let Some(decision) = &decision {
            self.capacity.targets[0].start(&decision.key, decision.evict.as_ref(), now);
            self.running = Some(decision.key.clone());
        }
        render(decision.map(|d| Decision { evict: None, ..d }))
    }
}

/// A backlog older than the bound: a forced load drains its model while the other
/// model's wait restarts from the load, instead of alternating per job.
#[test]
fn a_forced_load_buys_a_batch() {
    let mut runner = OneRunner::new("a", 10_000);
    let heads = [head("a", 0, 0, 0), head("b", 0, 1, 1)];
    assert_eq!(runner.step(&heads, 10_000), "b/Starving");
    for now in [10_100, 10_500, 10_999] {
        assert_eq!(runner.step(&heads, now), "b/Drain");
    }
    assert_eq!(runner.step(&heads, 11_000), "a/Starving");
}

/// Once the forced model's work queued at its load is done, the bound no longer waits
/// for the batch: another starving model goes next.
#[test]
fn a_batch_ends_with_the_work_it_was_loaded_for() {
    let mut runner = OneRunner::new("c", 10_000);
    let backlog = [head("a", 0, 0, 0), head("b", 0, 1, 1), head("c", 0, 2, 2)];
    assert_eq!(runner.step(&backlog, 10_000), "a/Starving");
    let later = [
        head("a", 0, 10_050, 10_050),
        head("b", 0, 1, 1),
        head("c", 0, 2, 2),
    ];
    assert_eq!(runner.step(&later, 10_100), "b/Starving");
}

/// A higher priority ends a forced batch; the forced model then waits the bound again
/// from when it was left.
#[test]
fn a_higher_priority_preempts_a_batch() {
    let mut runner = OneRunner::new("b", 5_000);
    let heads = [head("a", 0, 0, 0), head("b", 10, 5_000, 5_000)];
    assert_eq!(runner.step(&heads, 5_000), "a/Starving");
    assert_eq!(runner.step(&heads, 5_100), "b/Load");
    assert_eq!(runner.step(&heads, 6_000), "b/Drain");
    assert_eq!(runner.step(&heads, 6_100), "a/Starving");
}

#[test]
fn idle_keys_are_forgotten() {
    let mut policy = Policy::new(1_000);
    let capacity = Capacity::new(vec![TargetState::new("t", 1, 1)]);
    for (i, model) in ["a", "b", "c", "d"].into_iter().enumerate() {
        let now = i as i64 * 100;
        policy.decide(&[head(model, 0, now, now)], &capacity, 0, now);
    }
    policy.decide(&[head("e", 0, 5_000, 5_000)], &capacity, 0, 5_000);
    assert_eq!(policy.remembered(), [key("e")]);
}

/// Several slots and places: a loaded key fills its slots, another key takes a free
/// place, and a loaded key busy with work of the top priority is never unloaded.
#[test]
fn slots_and_places_fill_before_anything_is_unloaded() {
    let mut policy = Policy::new(60_000);
    let mut capacity = Capacity::new(vec![TargetState::new("t", 2, 2)]);
    capacity.targets[0].seed(key("a"), 0);
    let deep = |model: &str, depth| QueueHead {
        depth,
        ..head(model, 0, 10, 10)
    };
    let mut decide = |capacity: &mut Capacity, heads: &[QueueHead]| {
        let decision = policy.decide(heads, capacity, 0, 100);
        if let Some(decision) = &decision {
            capacity.targets[0].start(&decision.key, decision.evict.as_ref(), 100);
        }
        render(decision)
    };
    let heads = [deep("a", 5), deep("b", 5), deep("c", 9)];
    assert_eq!(
        decide(&mut capacity, &heads),
        "a:latest/Drain".replace(":latest", "")
    );
    assert_eq!(decide(&mut capacity, &heads), "a/Drain");
    // a's slots are full: the deepest other key takes the free place.
    assert_eq!(decide(&mut capacity, &heads), "c/Load");
    assert_eq!(decide(&mut capacity, &heads), "c/Drain");
    // Both places hold running work of the top priority: b waits.
    assert_eq!(decide(&mut capacity, &heads), "none");
    capacity.targets[0].finish(&key("a"), 200);
    capacity.targets[0].finish(&key("a"), 200);
    // a runs nothing and has queued work of the same priority: still not unloaded.
    let heads = [deep("a", 3), deep("b", 5), deep("c", 7)];
    assert_eq!(decide(&mut capacity, &heads), "a/Drain");
    // With a's queue empty, b loads over it.
    capacity.targets[0].finish(&key("a"), 300);
    let heads = [deep("b", 5), deep("c", 7)];
    assert_eq!(decide(&mut capacity, &heads), "b/Load-a");
}

/// A key goes where it is loaded; a key only one target has goes only there.
#[test]
fn keys_go_where_they_are_loaded_or_can_be() {
    let mut gpu0 = TargetState::new("gpu0", 1, 1);
    gpu0.seed(key("a"), 0);
    let mut gpu1 = TargetState::new("gpu1", 1, 2);
    gpu1.models = Some(HashSet::from(["a".to_string(), "c".to_string()]));
    let capacity = Capacity::new(vec![gpu0, gpu1]);
    let heads = [
        head("a", 0, 10, 10),
        head("b", 0, 10, 10),
        head("c", 0, 20, 20),
    ];
    // gpu1 leaves a to gpu0, where it is loaded, cannot serve b, and loads c.
    assert_eq!(
        render(Policy::new(60_000).decide(&heads, &capacity, 1, 100)),
        "c/Load"
    );
    assert_eq!(
        render(Policy::new(60_000).decide(&heads, &capacity, 0, 100)),
        "a/Drain"
    );
    // A deep queue of a overflows gpu0's one slot into gpu1's free place.
    let deep_a = QueueHead {
        depth: 4,
        ..head("a", 0, 10, 10)
    };
    assert_eq!(
        render(Policy::new(60_000).decide(&[deep_a], &capacity, 1, 100)),
        "a/Load"
    );
    // A paused target's loaded keys count for nothing.
    let mut paused = capacity.clone();
    paused.targets[0].paused = true;
    assert_eq!(
        render(Policy::new(60_000).decide(&heads[..1], &paused, 1, 100)),
        "a/Load"
    );
    assert_eq!(
        render(Policy::new(60_000).decide(&heads, &paused, 0, 100)),
        "none"
    );
}

/// Properties of `decide`, checked on a deterministic simulation of runners.
mod simulation {
    use super::*;

    /// Load keys: two of them share a model with different options.
    const KEYS: [(&str, &str); 5] = [
        ("alpha:1b", ""),
        ("beta:3b", ""),
        ("beta:3b", "num_ctx=8192"),
        ("delta:8b", ""),
        ("omega:70b", ""),
    ];

    /// A bound so large that no job ever starves.
    const NEVER: i64 = i64::MAX / 4;

    #[derive(Debug, Clone)]
    struct SimJob {
        id: JobId,
        key: LoadKey,
        arrival: i64,
        priority: i32,
    }

    /// One job's run.
    #[derive(Debug, Clone)]
    struct Run {
        id: JobId,
        key: LoadKey,
        target: usize,
        start: i64,
        reason: Reason,
        /// The highest priority queued when it started.
        top: i32,
        /// Its key was not loaded on its target before it.
        loaded: bool,
    }

    fn jobs_of(spec: &[(usize, i64, i32)]) -> HashMap<JobId, SimJob> {
        spec.iter()
            .map(|&(index, arrival, priority)| {
                let id = JobId::generate();
                let (model, options) = KEYS[index];
                let job = SimJob {
                    id,
                    key: LoadKey::new(model, options),
                    arrival,
                    priority,
                };
                (id, job)
            })
            .collect()
    }

    /// The queue's heads as the store reports them.
    fn heads_of(queued: &[&SimJob]) -> Vec<QueueHead> {
        heads_from(
            queued
                .iter()
                .map(|job| (&job.key, job.id, job.priority, job.arrival)),
        )
    }

    /// Runs every job on the given targets from `start`: whenever a job ends or one
    /// arrives, every free runner of every target asks the policy (and applies its
    /// decision) until it answers nothing; each job runs `run_ms`. Checks at every
    /// step that no target runs more jobs of a key than its slots or holds more keys
    /// than its places, and that no runner idles beside a waiting job of a key it has
    /// loaded with a free slot unless a key of a higher priority waits for a place.
    fn simulate(
        jobs: &HashMap<JobId, SimJob>,
        targets: Vec<TargetState>,
        run_ms: i64,
        max_wait_ms: i64,
        start: i64,
    ) -> Result<Vec<Run>, TestCaseError> {
        let mut policy = Policy::new(max_wait_ms);
        let mut capacity = Capacity::new(targets);
        let mut pending: Vec<&SimJob> = jobs.values().collect();
        let mut running: Vec<(i64, usize, LoadKey)> = Vec::new();
        let mut now = start;
        let mut runs = Vec::new();
        loop {
            running.retain(|(end, target, key)| {
                if *end <= now {
                    capacity.targets[*target].finish(key, now);
                }
                *end > now
            });
            // Every free runner asks until a whole round decides nothing: a decision on
            // one target can free another's runner to do something else.
            let mut decided = true;
            while decided {
                decided = false;
                for target in 0..capacity.targets.len() {
                    loop {
                        let queued: Vec<&SimJob> = pending
                            .iter()
                            .copied()
                            .filter(|job| job.arrival <= now)
                            .collect();
                        let heads = heads_of(&queued);
                        let Some(decision) = policy.decide(&heads, &capacity, target, now) else {
                            break;
                        };
                        let Some(position) = pending
                            .iter()
                            .position(|job| job.id == decision.job && job.arrival <= now)
                        else {
                            return Err(TestCaseError::fail(format!(
                                "{decision:?} is not a queued job at {now}"
                            )));
                        };
                        let job = pending.swap_remove(position);
                        prop_assert_eq!(&decision.key, &job.key);
                        let state = &mut capacity.targets[target];
                        prop_assert!(
                            state.may_serve(&job.key.model),
                            "{} sent to {}",
                            job.key,
                            state.name
                        );
                        let loaded = !state.is_resident(&job.key);
                        state.start(&job.key, decision.evict.as_ref(), now);
                        prop_assert!(
                            state.running_of(&job.key) <= state.slots,
                            "{} runs more {} than its {} slots",
                            state.name,
                            job.key,
                            state.slots
                        );
                        prop_assert!(
                            state.resident().count() <= state.places,
                            "{} holds too many keys",
                            state.name
                        );
                        runs.push(Run {
                            id: job.id,
                            key: job.key.clone(),
                            target,
                            start: now,
                            reason: decision.reason,
                            top: queued.iter().map(|job| job.priority).max().unwrap(),
                            loaded,
                        });
                        running.push((now + run_ms, target, job.key.clone()));
                        decided = true;
                    }
                }
            }
            let queued: Vec<&SimJob> = pending
                .iter()
                .copied()
                .filter(|job| job.arrival <= now)
                .collect();
            check_no_idle_runner(&capacity, &queued)?;
            let next_end = running.iter().map(|(end, _, _)| *end).min();
            let next_arrival = pending
                .iter()
                .map(|job| job.arrival)
                .filter(|at| *at > now)
                .min();
            now = match (next_end, next_arrival) {
                (Some(end), Some(arrival)) => end.min(arrival),
                (Some(at), None) | (None, Some(at)) => at,
                (None, None) if pending.is_empty() => return Ok(runs),
                (None, None) => {
                    return Err(TestCaseError::fail(format!(
                        "{} jobs wait at {now} and nothing runs",
                        pending.len()
                    )));
                }
            };
        }
    }

    /// No runner idles beside a queued job of a key its target has loaded with a free
    /// slot, unless that target waits to place a key of a higher priority.
    fn check_no_idle_runner(capacity: &Capacity, queued: &[&SimJob]) -> Result<(), TestCaseError> {
        for state in &capacity.targets {
            if state.paused || state.running_total() >= state.runners() {
                continue;
            }
            for job in queued {
                if !state.is_resident(&job.key) || !state.has_free_slot_for(&job.key) {
                    continue;
                }
                let excused = queued.iter().any(|other| {
                    other.priority > job.priority
                        && state.may_serve(&other.key.model)
                        && !state.is_resident(&other.key)
                });
                prop_assert!(
                    excused,
                    "{} idles while {} (loaded, a slot free) waits",
                    state.name,
                    job.key
                );
            }
        }
        Ok(())
    }

    /// One target with one slot and one place, `resident` loaded at `at`.
    fn one_slot(resident: Option<usize>, at: i64) -> Vec<TargetState> {
        let mut target = TargetState::new("t", 1, 1);
        if let Some(index) = resident {
            let (model, options) = KEYS[index];
            target.seed(LoadKey::new(model, options), at);
        }
        vec![target]
    }

    /// The keys loaded on one target, in order.
    fn loads_on(runs: &[Run], target: usize) -> Vec<&LoadKey> {
        runs.iter()
            .filter(|run| run.target == target && run.loaded)
            .map(|run| &run.key)
            .collect()
    }

    /// Every job of a key other than the hot one (the first) started within `bound` of
    /// its arrival.
    fn rare_keys_start_within(
        jobs: &HashMap<JobId, SimJob>,
        runs: &[Run],
        bound: i64,
    ) -> Result<(), TestCaseError> {
        let hot = LoadKey::new(KEYS[0].0, KEYS[0].1);
        for run in runs {
            let job = &jobs[&run.id];
            prop_assert!(
                job.key == hot || run.start - job.arrival <= bound,
                "{} arrived {} started {}: waited more than {}",
                job.key,
                job.arrival,
                run.start,
                bound
            );
        }
        Ok(())
    }

    /// How many loads a backlog may cost: one per key when every key's work, run one job
    /// at a time, fits within the bound; no limit otherwise.
    fn keys_loaded_once_bound(
        jobs: &HashMap<JobId, SimJob>,
        run_ms: i64,
        max_wait_ms: i64,
    ) -> usize {
        let mut per_key: HashMap<&LoadKey, i64> = HashMap::new();
        for job in jobs.values() {
            *per_key.entry(&job.key).or_default() += 1;
        }
        if per_key.values().all(|&count| count * run_ms < max_wait_ms) {
            per_key.len()
        } else {
            usize::MAX
        }
    }

    /// The same jobs through the single-slot policy of old, as `(job, start)`.
    fn simulate_single_slot(
        jobs: &HashMap<JobId, SimJob>,
        resident: Option<usize>,
        run_ms: i64,
        max_wait_ms: i64,
        start: i64,
    ) -> Vec<(JobId, i64)> {
        // The old queue grouped by model; give each key a model name of its own.
        let name = |key: &LoadKey| key.to_string();
        let mut policy = single_slot::Policy::new(max_wait_ms);
        let mut pending: Vec<&SimJob> = jobs.values().collect();
        let mut resident = resident.map(|index| name(&LoadKey::new(KEYS[index].0, KEYS[index].1)));
        let mut now = start;
        let mut runs = Vec::new();
        while !pending.is_empty() {
            let queued: Vec<&SimJob> = pending
                .iter()
                .copied()
                .filter(|job| job.arrival <= now)
                .collect();
            if queued.is_empty() {
                now = pending.iter().map(|job| job.arrival).min().unwrap();
                continue;
            }
            let heads: Vec<QueueHead> = heads_of(&queued)
                .into_iter()
                .map(|head| QueueHead {
                    model: name(&LoadKey::of_head(&head)),
                    load_options: String::new(),
                    ..head
                })
                .collect();
            let decision = policy
                .decide(&heads, resident.as_deref(), now)
                .expect("the old policy picks a job");
            let position = pending
                .iter()
                .position(|job| job.id == decision.job)
                .unwrap();
            let job = pending.swap_remove(position);
            runs.push((job.id, now));
            resident = Some(name(&job.key));
            now += run_ms;
        }
        runs
    }

    /// Up to 40 jobs over up to 5 keys, arrivals on a coarse 100 ms grid in 0..5000 ms.
    fn grid_arrivals(
        priorities: std::ops::RangeInclusive<i32>,
    ) -> impl Strategy<Value = Vec<(usize, i64, i32)>> {
        (1..=KEYS.len()).prop_flat_map(move |keys| {
            prop::collection::vec(
                (
                    0..keys,
                    (0..50i64).prop_map(|k| k * 100),
                    priorities.clone(),
                ),
                1..40,
            )
        })
    }

    /// Up to 40 jobs over up to 5 keys, all present at time 0.
    fn all_at_once(
        priorities: std::ops::RangeInclusive<i32>,
    ) -> impl Strategy<Value = Vec<(usize, i64, i32)>> {
        (1..=KEYS.len()).prop_flat_map(move |keys| {
            prop::collection::vec((0..keys, Just(0i64), priorities.clone()), 1..40)
        })
    }

    fn initial_resident() -> impl Strategy<Value = Option<usize>> {
        prop::option::of(0..KEYS.len())
    }

    /// 1 to 3 targets of 1-4 slots and 1-3 places; each has every model with
    /// probability 2/3 (the first has them all, so every job can run somewhere).
    fn targets() -> impl Strategy<Value = Vec<TargetState>> {
        prop::collection::vec(
            (
                1..=4usize,
                1..=3usize,
                prop::collection::vec(0..3u8, KEYS.len()),
                initial_resident(),
            ),
            1..=3,
        )
        .prop_map(|specs| {
            specs
                .into_iter()
                .enumerate()
                .map(|(index, (slots, places, has, resident))| {
                    let mut target = TargetState::new(format!("t{index}"), slots, places);
                    if index > 0 {
                        let models: HashSet<String> = KEYS
                            .iter()
                            .zip(&has)
                            .filter(|(_, has)| **has > 0)
                            .map(|((model, _), _)| model.to_string())
                            .collect();
                        target.models = Some(models);
                    }
                    if let Some(resident) = resident {
                        let (model, options) = KEYS[resident];
                        if target.may_serve(model) {
                            target.seed(LoadKey::new(model, options), 0);
                        }
                    }
                    target
                })
                .collect()
        })
    }

    /// A hot key with arrivals anywhere in 0..5000 ms, plus 1 to 3 rare keys whose jobs
    /// come one at a time, spaced so that each is served before the next of its key
    /// arrives; one priority. Yields (spec, rare keys, run_ms, max_wait_ms).
    fn hot_and_rare() -> impl Strategy<Value = (Vec<(usize, i64, i32)>, usize, i64, i64)> {
        (1..=3usize, 10..200i64)
            .prop_flat_map(|(rare, run)| {
                let shortest = rare as i64 * run + 1;
                (Just(rare), Just(run), shortest..3_000i64)
            })
            .prop_flat_map(|(rare, run, max_wait)| {
                let hot = prop::collection::vec(0..5_000i64, 0..40);
                let gaps = prop::collection::vec(prop::collection::vec(0..2_000i64, 0..4), rare);
                (Just(rare), Just(run), Just(max_wait), hot, gaps)
            })
            .prop_map(|(rare, run, max_wait, hot, gaps)| {
                let spacing = max_wait + (rare as i64 + 1) * run;
                let mut spec: Vec<(usize, i64, i32)> =
                    hot.into_iter().map(|arrival| (0, arrival, 0)).collect();
                for (k, gaps) in gaps.into_iter().enumerate() {
                    let mut at = -spacing;
                    for gap in gaps {
                        at += spacing + gap;
                        spec.push((k + 1, at, 0));
                    }
                }
                (spec, rare, run, max_wait)
            })
    }

    proptest! {
        /// P1, the wait bound: while a hot key keeps a single-slot target draining, a
        /// job of a rare key starts within `max_wait` of its arrival, plus the job
        /// running then, one job of each other rare key starving with it, and one more.
        #[test]
        fn p1_rare_keys_wait_no_longer_than_the_bound(
            (spec, rare, run_ms, max_wait_ms) in hot_and_rare(),
            resident in initial_resident(),
        ) {
            let jobs = jobs_of(&spec);
            let runs = simulate(&jobs, one_slot(resident, 0), run_ms, max_wait_ms, 0)?;
            rare_keys_start_within(&jobs, &runs, max_wait_ms + (rare as i64 + 1) * run_ms)?;
        }

        /// P1 on several slots and places: a rare key's job starts within twice the
        /// bound plus the same allowance (a starving key may wait for a key in another
        /// place to finish its turn, itself at most the bound).
        #[test]
        fn p1_the_bound_holds_with_slots_and_places(
            (spec, rare, run_ms, max_wait_ms) in hot_and_rare(),
            slots in 1..=4usize,
            places in 1..=3usize,
        ) {
            let jobs = jobs_of(&spec);
            let runs = simulate(&jobs, vec![TargetState::new("t", slots, places)], run_ms, max_wait_ms, 0)?;
            rare_keys_start_within(&jobs, &runs, 2 * max_wait_ms + (rare as i64 + 1) * run_ms)?;
        }

        /// P2, minimal loads: with every job queued at once and no bound in reach, a
        /// single-slot target loads each queued key exactly once, the resident one not
        /// at all.
        #[test]
        fn p2_draining_loads_each_key_once(
            spec in all_at_once(0..=0),
            resident in initial_resident(),
            run_ms in 10..500i64,
        ) {
            let jobs = jobs_of(&spec);
            let runs = simulate(&jobs, one_slot(resident, 0), run_ms, NEVER, 0)?;
            let keys: BTreeSet<&LoadKey> = jobs.values().map(|job| &job.key).collect();
            let resident_has_jobs = resident.is_some_and(|index| {
                keys.contains(&LoadKey::new(KEYS[index].0, KEYS[index].1))
            });
            prop_assert_eq!(loads_on(&runs, 0).len(), keys.len() - usize::from(resident_has_jobs));
        }

        /// P3: on any targets, every job runs exactly once, on a target that has its
        /// model; within one key, jobs start in arrival order on a single-slot target.
        #[test]
        fn p3_each_job_runs_once(
            spec in grid_arrivals(-1..=1),
            targets in targets(),
            run_ms in 10..500i64,
            max_wait_ms in 0..3_000i64,
        ) {
            let jobs = jobs_of(&spec);
            let single = targets.len() == 1 && targets[0].runners() == 1;
            let runs = simulate(&jobs, targets, run_ms, max_wait_ms, 0)?;
            prop_assert_eq!(runs.len(), jobs.len());
            let ran: BTreeSet<JobId> = runs.iter().map(|run| run.id).collect();
            prop_assert_eq!(ran.len(), jobs.len(), "a job ran twice");
            let mut last_per_key: HashMap<&LoadKey, (Reverse<i32>, i64, JobId)> = HashMap::new();
            for run in &runs {
                let job = &jobs[&run.id];
                prop_assert!(run.start >= job.arrival, "{} ran before it arrived", job.id);
                let rank = (Reverse(job.priority), job.arrival, job.id);
                if let Some(previous) = last_per_key.insert(&job.key, rank) {
                    // Within a key, a later start never outranks an earlier one that
                    // was already queued at that start.
                    if single && previous.1 <= run.start {
                        prop_assert!(previous < rank || job.arrival > previous.1,
                            "{}: {:?} started after {:?}", job.key, previous, rank);
                    }
                }
            }
        }

        /// P4, priorities: with every job queued at once and no bound in reach, every
        /// job on a single-slot target starts at the highest priority queued, and each
        /// load goes to the key with the most work waiting at that priority.
        #[test]
        fn p4_higher_priority_runs_first(
            spec in all_at_once(-3..=3),
            resident in initial_resident(),
            run_ms in 10..500i64,
        ) {
            let jobs = jobs_of(&spec);
            let runs = simulate(&jobs, one_slot(resident, 0), run_ms, NEVER, 0)?;
            for (i, run) in runs.iter().enumerate() {
                let job = &jobs[&run.id];
                prop_assert_eq!(job.priority, run.top, "{} ran below the top priority", job.id);
                if run.loaded {
                    let waiting: Vec<&SimJob> = runs[i..].iter().map(|later| &jobs[&later.id]).collect();
                    let depth = |key: &LoadKey| waiting.iter().filter(|later| &later.key == key).count();
                    let deepest = waiting
                        .iter()
                        .filter(|later| later.priority == run.top)
                        .map(|later| depth(&later.key))
                        .max()
                        .unwrap();
                    prop_assert_eq!(depth(&run.key), deepest, "loaded {} over a deeper queue", run.key);
                }
            }
        }

        /// P5, priority dominates across keys: on any targets, a job starts below the
        /// top priority queued only when the bound forced it, when it fills a slot of
        /// a loaded key that delays nobody, or when the top work belongs elsewhere.
        #[test]
        fn p5_lower_priority_runs_only_when_allowed(
            spec in grid_arrivals(-2..=2),
            resident in initial_resident(),
            run_ms in 10..500i64,
            max_wait_ms in 0..3_000i64,
        ) {
            let jobs = jobs_of(&spec);
            let runs = simulate(&jobs, one_slot(resident, 0), run_ms, max_wait_ms, 0)?;
            for run in &runs {
                let job = &jobs[&run.id];
                if job.priority < run.top {
                    prop_assert_eq!(
                        run.reason, Reason::Starving,
                        "{} (priority {}) ran below {} at {}", job.id, job.priority, run.top, run.start
                    );
                }
            }
        }

        /// P6, a backlog older than the bound drains by key: with every job queued long
        /// before the runners start, between two loads of one key no other key is
        /// loaded twice (one load per key per round), whatever the slots; and when
        /// each key's work fits within the bound, each key is loaded once.
        #[test]
        fn p6_a_backlog_past_the_bound_loads_each_key_once_per_round(
            spec in all_at_once(0..=0),
            slots in 1..=4usize,
            run_ms in 10..500i64,
            max_wait_ms in 0..3_000i64,
            late_by in 0..10_000i64,
        ) {
            let jobs = jobs_of(&spec);
            let start = max_wait_ms + late_by;
            let runs = simulate(&jobs, vec![TargetState::new("t", slots, 1)], run_ms, max_wait_ms, start)?;
            let loads = loads_on(&runs, 0);
            for (i, key) in loads.iter().enumerate() {
                let Some(next) = loads[i + 1..].iter().position(|later| later == key) else {
                    continue;
                };
                let between = &loads[i + 1..i + 1 + next];
                let distinct: BTreeSet<&&LoadKey> = between.iter().collect();
                prop_assert_eq!(
                    distinct.len(), between.len(),
                    "a key loaded twice between two loads of {}: {:?}", key, loads
                );
            }
            prop_assert!(loads.len() <= keys_loaded_once_bound(&jobs, run_ms, max_wait_ms), "{:?}", loads);
        }

        /// P6 on several places: a backlog older than the bound loads each key at most
        /// twice when each key's work fits within the bound. The runners of a target
        /// serve all its places, so a starving key may take the runner a loaded key
        /// needed and the bound may end that key's turn once; its next turn finishes
        /// it. (With a bound shorter than the work, a key that keeps one place may
        /// outlast several turns of the keys taking the other.)
        #[test]
        fn p6_several_places_load_each_key_once_when_its_work_fits_the_bound(
            spec in all_at_once(0..=0),
            slots in 1..=4usize,
            places in 2..=3usize,
            run_ms in 10..500i64,
            max_wait_ms in 0..3_000i64,
            late_by in 0..10_000i64,
        ) {
            let jobs = jobs_of(&spec);
            let start = max_wait_ms + late_by;
            let runs = simulate(&jobs, vec![TargetState::new("t", slots, places)], run_ms, max_wait_ms, start)?;
            let loads = loads_on(&runs, 0);
            if keys_loaded_once_bound(&jobs, run_ms, max_wait_ms) < usize::MAX {
                let mut per_key: HashMap<&LoadKey, usize> = HashMap::new();
                for key in &loads {
                    *per_key.entry(key).or_default() += 1;
                }
                prop_assert!(per_key.values().all(|&count| count <= 2), "{:?}", loads);
            }
        }

        /// P7: with one target of one slot and one place, the decisions are the ones
        /// the single-slot policy made: the same jobs start at the same times.
        #[test]
        fn p7_one_slot_decides_as_before(
            spec in grid_arrivals(-1..=1),
            resident in initial_resident(),
            run_ms in 10..500i64,
            max_wait_ms in 0..3_000i64,
            late_by in 0..4_000i64,
        ) {
            let jobs = jobs_of(&spec);
            let runs = simulate(&jobs, one_slot(resident, late_by), run_ms, max_wait_ms, late_by)?;
            let now: Vec<(JobId, i64)> = runs.iter().map(|run| (run.id, run.start)).collect();
            let before = simulate_single_slot(&jobs, resident, run_ms, max_wait_ms, late_by);
            prop_assert_eq!(now, before);
        }

        /// P8: on several targets with several slots and places, capacity is never
        /// exceeded and no runner idles beside loaded work (both checked at every step
        /// by `simulate`), and with every key's work queued at once and no bound in
        /// reach, each key is loaded at most once per target that serves it.
        #[test]
        fn p8_several_targets_respect_capacity_and_load_little(
            spec in all_at_once(0..=0),
            targets in targets(),
            run_ms in 10..500i64,
        ) {
            let jobs = jobs_of(&spec);
            let count = targets.len();
            let runs = simulate(&jobs, targets, run_ms, NEVER, 0)?;
            for target in 0..count {
                let loads = loads_on(&runs, target);
                let distinct: BTreeSet<&&LoadKey> = loads.iter().collect();
                prop_assert_eq!(distinct.len(), loads.len(), "target {} reloaded a key: {:?}", target, loads);
            }
        }
    }
}
