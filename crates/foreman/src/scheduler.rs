//! The scheduling policy: which queued job runs next on a target.
//!
//! Drain by model, bounded:
//! 1. if some model's oldest eligible job has waited `max_wait` or longer, serve the
//!    model that has waited longest (no starvation);
//! 2. else, if jobs want the resident model, run its best job (no swap);
//! 3. else switch (one swap) to the model holding the highest-priority job, and
//!    among equals to the one with the most jobs waiting, then the oldest: a load
//!    is paid once per switch, so it should buy as much work as possible.
//!
//! "Best" within a model is highest priority, then oldest. The benchmark showed why
//! the switch weighs depth: with clients that each cycle through models, switching
//! to the oldest job left about 10 loads for 120 requests, switching to the deepest
//! queue lets each model's batch grow while the others drain. Invariant: this module is pure. It sees
//! no clock, socket or database; the worker passes `now` and the queue's heads in.

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
    /// A job of another model hit the wait bound.
    Starving,
    /// The resident model still has work.
    Drain,
    /// Nothing for the resident model: switch.
    Switch,
}

/// Picks the next job from one head per model. `resident` is the model the target
/// has loaded (as a model key), if known.
pub fn decide(
    heads: &[QueueHead],
    resident: Option<&str>,
    now_ms: i64,
    max_wait_ms: i64,
) -> Option<Decision> {
    let pick = |head: &QueueHead, reason| Decision {
        job: head.best.id,
        model: head.model.clone(),
        reason,
    };
    let starving = heads
        .iter()
        .filter(|head| now_ms - head.oldest_created_at >= max_wait_ms)
        .min_by_key(|head| head.oldest_created_at);
    if let Some(head) = starving
        && Some(head.model.as_str()) != resident
    {
        return Some(pick(head, Reason::Starving));
    }
    if let Some(head) = heads
        .iter()
        .find(|head| Some(head.model.as_str()) == resident)
    {
        return Some(pick(head, Reason::Drain));
    }
    heads
        .iter()
        .min_by_key(|head| {
            (
                std::cmp::Reverse(head.best.priority),
                std::cmp::Reverse(head.depth),
                head.best.created_at,
                head.best.id,
            )
        })
        .map(|head| pick(head, Reason::Switch))
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

    /// Runs `decide` and renders the outcome as `model/reason`.
    fn check(heads: &[QueueHead], resident: Option<&str>, now: i64, expected: &str) {
        let got = match decide(heads, resident, now, 1_000) {
            Some(decision) => format!("{}/{:?}", decision.model, decision.reason),
            None => "none".to_string(),
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
        check(&[a.clone(), b.clone()], Some("a"), 1_050, "b/Starving");
        check(&[a.clone(), b.clone()], Some("b"), 1_050, "b/Drain");
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

        /// One job's run: which job, of which model, started when.
        #[derive(Debug, Clone)]
        struct Run {
            id: JobId,
            model: String,
            start: i64,
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

        /// Runs every job on one worker: at each decision point it asks `decide`, runs
        /// the chosen job for `run_ms` (the chosen model is then resident) and asks
        /// again; with nothing queued, time jumps to the next arrival. Returns the runs
        /// in order. Fails if `decide` picks nothing, or a job that is not queued.
        fn simulate(
            jobs: &HashMap<JobId, SimJob>,
            resident: Option<&str>,
            run_ms: i64,
            max_wait_ms: i64,
        ) -> Result<Vec<Run>, TestCaseError> {
            let mut pending: Vec<&SimJob> = jobs.values().collect();
            let mut resident = resident.map(str::to_string);
            let mut now = 0;
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
                let Some(decision) = decide(&heads, resident.as_deref(), now, max_wait_ms) else {
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
                });
                now += run_ms;
                resident = Some(job.model.clone());
            }
            Ok(runs)
        }

        /// Job id → start time.
        fn starts(runs: &[Run]) -> HashMap<JobId, i64> {
            runs.iter().map(|run| (run.id, run.start)).collect()
        }

        /// Up to 40 jobs over up to 5 models with distinct arrivals in 0..5000 ms,
        /// all of priority 0, in arrival order.
        fn distinct_arrivals() -> impl Strategy<Value = Vec<(usize, i64, i32)>> {
            (
                1..=MODELS.len(),
                prop::collection::btree_set(0..5_000i64, 1..40),
            )
                .prop_flat_map(|(models, arrivals)| {
                    let n = arrivals.len();
                    (Just(arrivals), prop::collection::vec(0..models, n))
                })
                .prop_map(|(arrivals, models)| {
                    arrivals
                        .into_iter()
                        .zip(models)
                        .map(|(arrival, model)| (model, arrival, 0))
                        .collect()
                })
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

        proptest! {
            /// P1, the starvation bound. Call the moment a job became the oldest
            /// queued job `oldest_at`: its arrival, or the start of the last older job,
            /// whichever is later. From then on its model's head is the oldest, so once
            /// it has waited `max_wait` the next decision serves it (as the starving
            /// model, or by draining if its model is resident). The worker never
            /// preempts the job it is running, which may be draining another model,
            /// so that next decision can be up to one run time away: a job waits no
            /// more than `max_wait` plus one job's run time because of draining.
            /// Arrivals are distinct: jobs arriving in the same instant are served one
            /// after another, so only one of them can meet this bound.
            #[test]
            fn p1_no_job_waits_past_the_bound(
                spec in distinct_arrivals(),
                resident in initial_resident(),
                run_ms in 10..500i64,
                max_wait_ms in 0..3_000i64,
            ) {
                let jobs = jobs_of(&spec);
                let runs = simulate(&jobs, resident, run_ms, max_wait_ms)?;
                let starts = starts(&runs);
                let mut by_age: Vec<&SimJob> = jobs.values().collect();
                by_age.sort_by_key(|job| job.arrival);
                let mut older_started_by = i64::MIN;
                for job in by_age {
                    let start = starts[&job.id];
                    let oldest_at = job.arrival.max(older_started_by);
                    // Tighter than the stated bound: served at the first decision
                    // after it is oldest and has waited max_wait.
                    let bound = oldest_at.max(job.arrival + max_wait_ms) + run_ms;
                    prop_assert!(
                        start <= bound,
                        "{} ({}, arrived {}) oldest from {} started {} > {}",
                        job.id, job.model, job.arrival, oldest_at, start, bound
                    );
                    prop_assert!(start <= oldest_at + max_wait_ms + run_ms);
                    older_started_by = older_started_by.max(start);
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
                let runs = simulate(&jobs, resident, run_ms, NEVER)?;
                let mut loaded = resident;
                let mut switches = 0;
                for run in &runs {
                    if loaded != Some(run.model.as_str()) {
                        switches += 1;
                    }
                    loaded = Some(run.model.as_str());
                }
                let models: BTreeSet<&str> = jobs.values().map(|job| job.model.as_str()).collect();
                let resident_has_jobs = resident.is_some_and(|model| models.contains(model));
                prop_assert_eq!(switches, models.len() - usize::from(resident_has_jobs));
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
                let runs = simulate(&jobs, resident, run_ms, max_wait_ms)?;
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
            /// reach, each model's jobs start highest priority first (then by id), and
            /// each switch goes to a model holding a job of the highest queued priority,
            /// the one with the most such work waiting.
            #[test]
            fn p4_higher_priority_runs_first(
                spec in all_at_once(-3..=3),
                resident in initial_resident(),
                run_ms in 10..500i64,
            ) {
                let jobs = jobs_of(&spec);
                let runs = simulate(&jobs, resident, run_ms, NEVER)?;
                let mut last_per_model: HashMap<&str, (Reverse<i32>, JobId)> = HashMap::new();
                let mut loaded = resident.map(str::to_string);
                for (i, run) in runs.iter().enumerate() {
                    let job = &jobs[&run.id];
                    let key = (Reverse(job.priority), job.id);
                    if let Some(previous) = last_per_model.insert(job.model.as_str(), key) {
                        prop_assert!(
                            previous < key,
                            "{}: {:?} started after {:?}", job.model, previous, key
                        );
                    }
                    if loaded.as_deref() != Some(run.model.as_str()) {
                        let waiting: Vec<&SimJob> = runs[i..].iter().map(|later| &jobs[&later.id]).collect();
                        let top = waiting.iter().map(|later| later.priority).max().unwrap();
                        prop_assert_eq!(job.priority, top, "switched to {} below the top priority", run.model);
                        let depth = |model: &str| waiting.iter().filter(|later| later.model == model).count();
                        let deepest = waiting
                            .iter()
                            .filter(|later| later.priority == top)
                            .map(|later| depth(&later.model))
                            .max()
                            .unwrap();
                        prop_assert_eq!(depth(&run.model), deepest, "switched to {} over a deeper queue", run.model);
                    }
                    loaded = Some(run.model.clone());
                }
            }
        }
    }
}
