//! The scheduling policy: which queued job runs next on a target.
//!
//! Priority first, then drain by model, with a bound on waiting:
//! 1. **The bound.** A model *starves* once it has waited `max_wait` with work queued.
//!    Its wait counts from the latest of: its oldest queued job's arrival, the last
//!    time it was served (resident while a decision was made), and the start of the
//!    forced batch under way. The starving model that has waited longest is loaded
//!    next, whatever its priority (the bound forces it).
//! 2. **A forced load buys a batch.** Once the bound loads a model, that model drains
//!    (rule 3) and the bound is weighed again only when its work queued at the load is
//!    done, or another model has waited `max_wait` since the load. A backlog older
//!    than the bound (after a restart, an outage, a long generation) therefore drains
//!    model by model, one load per model per round, instead of alternating models.
//! 3. **Drain.** If the resident model holds a job of the highest queued priority, its
//!    best job runs (no load).
//! 4. **Switch.** Else the model holding a job of the highest queued priority is loaded;
//!    among equals the one with the most jobs waiting, then the oldest: a load is paid
//!    once per switch, so it should buy as much work as possible.
//!
//! So priority dominates across models: a lower-priority job runs while higher-priority
//! work waits only when the bound forces it. "Best" within a model is highest
//! priority, then oldest. The benchmark showed why the switch weighs depth: with
//! clients that each cycle through models, switching to the oldest job left about 10
//! loads for 120 requests, switching to the deepest queue lets each model's batch grow
//! while the others drain.
//!
//! Invariant: this module is pure. It sees no clock, socket or database; the worker
//! passes `now` and the queue's heads in, and [`Policy`] keeps only what the policy
//! itself decided (when each model was last served, the forced batch under way).

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

    fn choose(&self, heads: &[QueueHead], resident: Option<&str>, now: i64) -> Option<Decision> {
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

#[cfg(test)]
mod tests {
    use super::*;
    use foreman_store::JobRef;

    /// A head for `model` whose best job has `priority` and was created at `created`,
    /// and whose oldest job was created at `oldest`.
    fn head(model: &str, priority: i32, created: i64, oldest: i64) -> QueueHead {
        QueueHead {
            model: model.to_string(),
            best: JobRef {
                id: JobId::generate(),
                priority,
                created_at: created,
            },
            oldest_created_at: oldest,
            depth: 1,
        }
    }

    /// Renders a decision as `model/reason`.
    fn render(decision: Option<Decision>) -> String {
        match decision {
            Some(decision) => format!("{}/{:?}", decision.model, decision.reason),
            None => "none".to_string(),
        }
    }

    /// Runs a fresh policy's first decision (bound 1 s) and checks it.
    fn check(heads: &[QueueHead], resident: Option<&str>, now: i64, expected: &str) {
        let got = render(Policy::new(1_000).decide(heads, resident, now));
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

    /// A backlog older than the bound: a forced load drains its model while the other
    /// model's wait restarts from the load, instead of alternating per job.
    #[test]
    fn a_forced_load_buys_a_batch() {
        let mut policy = Policy::new(1_000);
        let heads = [head("a", 0, 0, 0), head("b", 0, 1, 1)];
        // At 10 s both have waited far past the bound; a is resident.
        let first = render(policy.decide(&heads, Some("a"), 10_000));
        assert_eq!(first, "b/Starving");
        // a was served until 10 s, and b's batch started then: b drains.
        for now in [10_100, 10_500, 10_999] {
            assert_eq!(render(policy.decide(&heads, Some("b"), now)), "b/Drain");
        }
        // a has now waited the bound since it was left.
        assert_eq!(
            render(policy.decide(&heads, Some("b"), 11_000)),
            "a/Starving"
        );
    }

    /// Once the forced model's work queued at its load is done, the bound no longer
    /// waits for the batch: another starving model goes next.
    #[test]
    fn a_batch_ends_with_the_work_it_was_loaded_for() {
        let mut policy = Policy::new(1_000);
        let backlog = [head("a", 0, 0, 0), head("b", 0, 1, 1), head("c", 0, 2, 2)];
        assert_eq!(
            render(policy.decide(&backlog, Some("c"), 10_000)),
            "a/Starving"
        );
        // a's queued work is done; only a job that arrived after the load is left.
        let later = [
            head("a", 0, 10_050, 10_050),
            head("b", 0, 1, 1),
            head("c", 0, 2, 2),
        ];
        assert_eq!(
            render(policy.decide(&later, Some("a"), 10_100)),
            "b/Starving"
        );
    }

    /// A higher priority ends a forced batch; the forced model then waits the bound
    /// again from when it was left.
    #[test]
    fn a_higher_priority_preempts_a_batch() {
        let mut policy = Policy::new(1_000);
        let heads = [head("a", 0, 0, 0), head("b", 10, 5_000, 5_000)];
        assert_eq!(
            render(policy.decide(&heads, Some("b"), 5_000)),
            "a/Starving"
        );
        assert_eq!(render(policy.decide(&heads, Some("a"), 5_100)), "b/Switch");
        assert_eq!(render(policy.decide(&heads, Some("b"), 6_000)), "b/Drain");
        assert_eq!(
            render(policy.decide(&heads, Some("b"), 6_100)),
            "a/Starving"
        );
    }

    #[test]
    fn idle_models_are_forgotten() {
        let mut policy = Policy::new(1_000);
        for (i, model) in ["a", "b", "c", "d"].into_iter().enumerate() {
            let now = i as i64 * 100;
            policy.decide(&[head(model, 0, now, now)], None, now);
        }
        policy.decide(&[head("e", 0, 5_000, 5_000)], Some("d"), 5_000);
        let mut remembered: Vec<&str> = policy.served.keys().map(String::as_str).collect();
        remembered.sort();
        assert_eq!(remembered, ["d", "e"]);
    }

    /// Properties of `decide`, checked on a deterministic simulation of one worker.
    mod simulation {
        use std::cmp::Reverse;
        use std::collections::{BTreeMap, BTreeSet, HashMap};

        use proptest::prelude::*;

        use super::*;

        const MODELS: [&str; 5] = ["alpha:1b", "beta:3b", "gamma:7b", "delta:8b", "omega:70b"];

        /// A bound so large that no job ever starves.
        const NEVER: i64 = i64::MAX / 4;

        #[derive(Debug, Clone)]
        struct SimJob {
            id: JobId,
            model: String,
            arrival: i64,
            priority: i32,
        }

        /// One job's run: which job, of which model, started when, and why.
        #[derive(Debug, Clone)]
        struct Run {
            id: JobId,
            model: String,
            start: i64,
            reason: Reason,
            /// The highest priority queued when it started.
            top: i32,
        }

        /// The jobs of a workload, keyed by id, from `(model index, arrival, priority)`.
        fn jobs_of(spec: &[(usize, i64, i32)]) -> HashMap<JobId, SimJob> {
            spec.iter()
                .map(|&(model, arrival, priority)| {
                    let id = JobId::generate();
                    let job = SimJob {
                        id,
                        model: MODELS[model].to_string(),
                        arrival,
                        priority,
                    };
                    (id, job)
                })
                .collect()
        }

        /// The queue's heads as the store reports them: per model, the best job
        /// (highest priority, then oldest, then lowest id), the oldest arrival, the depth.
        fn heads_of(queued: &[&SimJob]) -> Vec<QueueHead> {
            let mut by_model: BTreeMap<&str, Vec<&SimJob>> = BTreeMap::new();
            for job in queued {
                by_model.entry(job.model.as_str()).or_default().push(job);
            }
            by_model
                .into_iter()
                .map(|(model, jobs)| {
                    let best = jobs
                        .iter()
                        .min_by_key(|job| (Reverse(job.priority), job.arrival, job.id))
                        .expect("a model with a head has jobs");
                    QueueHead {
                        model: model.to_string(),
                        best: JobRef {
                            id: best.id,
                            priority: best.priority,
                            created_at: best.arrival,
                        },
                        oldest_created_at: jobs.iter().map(|job| job.arrival).min().unwrap(),
                        depth: jobs.len() as u64,
                    }
                })
                .collect()
        }

        /// Runs every job on one worker that starts at `start`: at each decision point
        /// it asks the policy, runs the chosen job for `run_ms` (the chosen model is
        /// then resident) and asks again; with nothing queued, time jumps to the next
        /// arrival. Returns the runs in order. Fails if the policy picks nothing, or a
        /// job that is not queued.
        fn simulate(
            jobs: &HashMap<JobId, SimJob>,
            resident: Option<&str>,
            run_ms: i64,
            max_wait_ms: i64,
            start: i64,
        ) -> Result<Vec<Run>, TestCaseError> {
            let mut policy = Policy::new(max_wait_ms);
            let mut pending: Vec<&SimJob> = jobs.values().collect();
            let mut resident = resident.map(str::to_string);
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
                let heads = heads_of(&queued);
                let top = queued.iter().map(|job| job.priority).max().unwrap();
                let Some(decision) = policy.decide(&heads, resident.as_deref(), now) else {
                    return Err(TestCaseError::fail(format!("nothing chosen at {now}")));
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
                prop_assert_eq!(&decision.model, &job.model);
                runs.push(Run {
                    id: job.id,
                    model: job.model.clone(),
                    start: now,
                    reason: decision.reason,
                    top,
                });
                now += run_ms;
                resident = Some(job.model.clone());
            }
            Ok(runs)
        }

        /// The models loaded, in order: each run whose model was not resident before it.
        fn loads<'a>(runs: &'a [Run], resident: Option<&'a str>) -> Vec<&'a str> {
            let mut loaded = resident;
            let mut loads = Vec::new();
            for run in runs {
                if loaded != Some(run.model.as_str()) {
                    loads.push(run.model.as_str());
                }
                loaded = Some(run.model.as_str());
            }
            loads
        }

        /// Up to 40 jobs over up to 5 models, arrivals on a coarse 100 ms grid in
        /// 0..5000 ms so that many arrive together, all of priority 0.
        fn grid_arrivals() -> impl Strategy<Value = Vec<(usize, i64, i32)>> {
            (1..=MODELS.len()).prop_flat_map(|models| {
                prop::collection::vec(
                    (0..models, (0..50i64).prop_map(|k| k * 100), Just(0)),
                    1..40,
                )
            })
        }

        /// Up to 40 jobs over up to 5 models, all present at time 0, with priorities
        /// from `priorities`.
        fn all_at_once(
            priorities: std::ops::RangeInclusive<i32>,
        ) -> impl Strategy<Value = Vec<(usize, i64, i32)>> {
            (1..=MODELS.len()).prop_flat_map(move |models| {
                prop::collection::vec((0..models, Just(0i64), priorities.clone()), 1..40)
            })
        }

        /// Any model name, or none, as the model resident at the start.
        fn initial_resident() -> impl Strategy<Value = Option<&'static str>> {
            prop::option::of(prop::sample::select(&MODELS[..]))
        }

        /// A hot model with arrivals anywhere in 0..5000 ms, plus 1 to 3 rare models
        /// whose jobs come one at a time, spaced so that each is served before the
        /// next of its model arrives; one priority. The bound is longer than one job
        /// of every rare model. Yields (spec, rare models, run_ms, max_wait_ms).
        fn hot_and_rare() -> impl Strategy<Value = (Vec<(usize, i64, i32)>, usize, i64, i64)> {
            (1..=3usize, 10..200i64)
                .prop_flat_map(|(rare, run)| {
                    let shortest = rare as i64 * run + 1;
                    (Just(rare), Just(run), shortest..3_000i64)
                })
                .prop_flat_map(|(rare, run, max_wait)| {
                    let hot = prop::collection::vec(0..5_000i64, 0..40);
                    let gaps =
                        prop::collection::vec(prop::collection::vec(0..2_000i64, 0..4), rare);
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
            /// P1, the wait bound: while a hot model keeps the worker draining, a job
            /// of a rare model starts within `max_wait` of its arrival, plus the job
            /// running then, one job of each other rare model starving with it, and
            /// one more job when its model was resident at its arrival but lost the
            /// decision to a starving model (its wait then counts from that decision).
            #[test]
            fn p1_rare_models_wait_no_longer_than_the_bound(
                (spec, rare, run_ms, max_wait_ms) in hot_and_rare(),
                resident in initial_resident(),
            ) {
                let jobs = jobs_of(&spec);
                let runs = simulate(&jobs, resident, run_ms, max_wait_ms, 0)?;
                let bound = max_wait_ms + (rare as i64 + 1) * run_ms;
                for run in &runs {
                    let job = &jobs[&run.id];
                    if job.model == MODELS[0] {
                        continue;
                    }
                    prop_assert!(
                        run.start - job.arrival <= bound,
                        "{} arrived {} started {}: waited more than {}",
                        job.model, job.arrival, run.start, bound
                    );
                }
            }

            /// P2, minimal switches: with every job queued at once and no starvation
            /// bound in reach, each queued model is loaded exactly once, and the
            /// resident one not at all.
            #[test]
            fn p2_draining_loads_each_model_once(
                spec in all_at_once(0..=0),
                resident in initial_resident(),
                run_ms in 10..500i64,
            ) {
                let jobs = jobs_of(&spec);
                let runs = simulate(&jobs, resident, run_ms, NEVER, 0)?;
                let models: BTreeSet<&str> = jobs.values().map(|job| job.model.as_str()).collect();
                let resident_has_jobs = resident.is_some_and(|model| models.contains(model));
                prop_assert_eq!(
                    loads(&runs, resident).len(),
                    models.len() - usize::from(resident_has_jobs)
                );
            }

            /// P3: every job runs exactly once, and within one model jobs start in
            /// arrival order (by id among jobs that arrived together).
            #[test]
            fn p3_each_job_runs_once_in_arrival_order_per_model(
                spec in grid_arrivals(),
                resident in initial_resident(),
                run_ms in 10..500i64,
                max_wait_ms in 0..3_000i64,
            ) {
                let jobs = jobs_of(&spec);
                let runs = simulate(&jobs, resident, run_ms, max_wait_ms, 0)?;
                prop_assert_eq!(runs.len(), jobs.len());
                let ran: BTreeSet<JobId> = runs.iter().map(|run| run.id).collect();
                prop_assert_eq!(ran.len(), jobs.len(), "a job ran twice");
                let mut last_per_model: HashMap<&str, (i64, JobId)> = HashMap::new();
                for run in &runs {
                    let job = &jobs[&run.id];
                    prop_assert!(run.start >= job.arrival, "{} ran before it arrived", job.id);
                    let key = (job.arrival, job.id);
                    if let Some(previous) = last_per_model.insert(job.model.as_str(), key) {
                        prop_assert!(
                            previous < key,
                            "{}: {:?} started after {:?}", job.model, previous, key
                        );
                    }
                }
            }

            /// P4, priorities: with every job queued at once and no starvation bound in
            /// reach, every job starts at the highest priority queued, each model's jobs
            /// start highest priority first (then by id), and each switch goes to the
            /// model with the most work waiting among those holding the top priority.
            #[test]
            fn p4_higher_priority_runs_first(
                spec in all_at_once(-3..=3),
                resident in initial_resident(),
                run_ms in 10..500i64,
            ) {
                let jobs = jobs_of(&spec);
                let runs = simulate(&jobs, resident, run_ms, NEVER, 0)?;
                let mut last_per_model: HashMap<&str, (Reverse<i32>, JobId)> = HashMap::new();
                let mut loaded = resident.map(str::to_string);
                for (i, run) in runs.iter().enumerate() {
                    let job = &jobs[&run.id];
                    prop_assert_eq!(job.priority, run.top, "{} ran below the top priority", job.id);
                    let key = (Reverse(job.priority), job.id);
                    if let Some(previous) = last_per_model.insert(job.model.as_str(), key) {
                        prop_assert!(
                            previous < key,
                            "{}: {:?} started after {:?}", job.model, previous, key
                        );
                    }
                    if loaded.as_deref() != Some(run.model.as_str()) {
                        let waiting: Vec<&SimJob> = runs[i..].iter().map(|later| &jobs[&later.id]).collect();
                        let depth = |model: &str| waiting.iter().filter(|later| later.model == model).count();
                        let deepest = waiting
                            .iter()
                            .filter(|later| later.priority == run.top)
                            .map(|later| depth(&later.model))
                            .max()
                            .unwrap();
                        prop_assert_eq!(depth(&run.model), deepest, "switched to {} over a deeper queue", run.model);
                    }
                    loaded = Some(run.model.clone());
                }
            }

            /// P5, priority dominates across models: with arrivals over time, any
            /// priorities and a bound in reach, a job starts while a job of a strictly
            /// higher priority waits only when the bound forced its model's load.
            #[test]
            fn p5_lower_priority_runs_only_when_the_bound_forces_it(
                spec in (1..=MODELS.len()).prop_flat_map(|models| {
                    prop::collection::vec((0..models, 0..5_000i64, -2..=2i32), 1..40)
                }),
                resident in initial_resident(),
                run_ms in 10..500i64,
                max_wait_ms in 0..3_000i64,
            ) {
                let jobs = jobs_of(&spec);
                let runs = simulate(&jobs, resident, run_ms, max_wait_ms, 0)?;
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

            /// P6, a backlog older than the bound drains by model: with every job queued
            /// long before the worker starts, between two loads of one model no other
            /// model is loaded twice (one load per model per round), and when each
            /// model's work fits within the bound, each model is loaded once.
            #[test]
            fn p6_a_backlog_past_the_bound_loads_each_model_once_per_round(
                spec in all_at_once(0..=0),
                resident in initial_resident(),
                run_ms in 10..500i64,
                max_wait_ms in 0..3_000i64,
                late_by in 0..10_000i64,
            ) {
                let jobs = jobs_of(&spec);
                let start = max_wait_ms + late_by;
                let runs = simulate(&jobs, resident, run_ms, max_wait_ms, start)?;
                let loads = loads(&runs, resident);
                for (i, model) in loads.iter().enumerate() {
                    let Some(next) = loads[i + 1..].iter().position(|later| later == model) else {
                        continue;
                    };
                    let between = &loads[i + 1..i + 1 + next];
                    let distinct: BTreeSet<&&str> = between.iter().collect();
                    prop_assert_eq!(
                        distinct.len(), between.len(),
                        "a model loaded twice between two loads of {}: {:?}", model, loads
                    );
                }
                let mut per_model: HashMap<&str, i64> = HashMap::new();
                for job in jobs.values() {
                    *per_model.entry(job.model.as_str()).or_default() += 1;
                }
                let models = per_model.len();
                if per_model.values().all(|&count| count * run_ms < max_wait_ms) {
                    prop_assert!(loads.len() <= models, "{} loads for {} models: {:?}", loads.len(), models, loads);
                }
            }
        }
    }
}
