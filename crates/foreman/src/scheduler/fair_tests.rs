//! Tests of fair share between callers, on a deterministic simulation of targets whose
//! runners ask the policy, as the dispatcher's do: a flooding caller does not hold a
//! trickling one behind its backlog, weights set the shares, and draining by model
//! still saves loads with fair share on.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use foreman_store::{CallerHead, JobId, JobRef, QueueHead};
use proptest::prelude::*;

use super::{Capacity, LoadKey, Policy, TargetState};

#[derive(Debug, Clone)]
struct Job {
    id: JobId,
    key: LoadKey,
    caller: &'static str,
    weight: u32,
    arrival: i64,
    priority: i32,
}

/// One job's start, in the order the runners took them.
#[derive(Debug, Clone)]
struct Start {
    id: JobId,
    caller: &'static str,
    at: i64,
    loaded: bool,
}

type Rank = (Reverse<i32>, i64, JobId);

/// The queued jobs that have arrived, ranked per key and caller as the store does.
#[derive(Default)]
struct Queue {
    keys: BTreeMap<LoadKey, BTreeMap<&'static str, BTreeSet<Rank>>>,
    ages: BTreeMap<LoadKey, BTreeSet<(i64, JobId)>>,
    weights: HashMap<JobId, u32>,
    len: usize,
}

impl Queue {
    fn push(&mut self, job: &Job) {
        self.keys
            .entry(job.key.clone())
            .or_default()
            .entry(job.caller)
            .or_default()
            .insert((Reverse(job.priority), job.arrival, job.id));
        self.ages
            .entry(job.key.clone())
            .or_default()
            .insert((job.arrival, job.id));
        self.weights.insert(job.id, job.weight);
        self.len += 1;
    }

    fn take(&mut self, job: &Job) -> bool {
        let Some(callers) = self.keys.get_mut(&job.key) else {
            return false;
        };
        let Some(ranks) = callers.get_mut(job.caller) else {
            return false;
        };
        if !ranks.remove(&(Reverse(job.priority), job.arrival, job.id)) {
            return false;
        }
        if ranks.is_empty() {
            callers.remove(job.caller);
        }
        if callers.is_empty() {
            self.keys.remove(&job.key);
        }
        let ages = self.ages.get_mut(&job.key).expect("ages follow the keys");
        ages.remove(&(job.arrival, job.id));
        if ages.is_empty() {
            self.ages.remove(&job.key);
        }
        self.len -= 1;
        true
    }

    fn heads(&self) -> Vec<QueueHead> {
        self.keys
            .iter()
            .map(|(key, callers)| {
                let callers: Vec<CallerHead> = callers
                    .iter()
                    .map(|(caller, ranks)| {
                        let &(Reverse(priority), created_at, id) =
                            ranks.first().expect("no empty caller");
                        CallerHead {
                            caller: Some((*caller).to_owned()),
                            weight: self.weights[&id],
                            best: JobRef {
                                id,
                                priority,
                                created_at,
                            },
                            depth: ranks.len() as u64,
                        }
                    })
                    .collect();
                let best = callers
                    .iter()
                    .map(|caller| caller.best)
                    .min_by_key(|job| (Reverse(job.priority), job.created_at, job.id))
                    .expect("a caller");
                QueueHead {
                    model: key.model.clone(),
                    load_options: key.options.clone(),
                    best,
                    oldest_created_at: self.ages[key].first().expect("an age").0,
                    depth: callers.iter().map(|caller| caller.depth).sum(),
                    callers,
                }
            })
            .collect()
    }
}

/// Runs every job on `targets`, each job taking `run_ms`: whenever a job ends or one
/// arrives, every free runner asks the policy until it answers nothing.
fn simulate(
    jobs: &[Job],
    targets: Vec<TargetState>,
    run_ms: i64,
    max_wait_ms: i64,
    fair: bool,
) -> Result<Vec<Start>, TestCaseError> {
    let mut policy = Policy::new(max_wait_ms).with_fair_share(fair);
    let mut capacity = Capacity::new(targets);
    let by_id: HashMap<JobId, &Job> = jobs.iter().map(|job| (job.id, job)).collect();
    let mut arrivals: Vec<&Job> = jobs.iter().collect();
    arrivals.sort_by_key(|job| Reverse((job.arrival, job.id)));
    let mut queue = Queue::default();
    let mut running: Vec<(i64, usize, LoadKey)> = Vec::new();
    let mut starts = Vec::new();
    let mut now = 0;
    loop {
        while arrivals.last().is_some_and(|job| job.arrival <= now) {
            queue.push(arrivals.pop().expect("an arrival"));
        }
        running.retain(|(end, target, key)| {
            if *end <= now {
                capacity.targets[*target].finish(key, now);
            }
            *end > now
        });
        let mut decided = true;
        while decided {
            decided = false;
            for target in 0..capacity.targets.len() {
                while let Some(decision) = policy.decide(&queue.heads(), &capacity, target, now) {
                    let job = by_id[&decision.job];
                    prop_assert!(queue.take(job), "{decision:?} is not queued at {now}");
                    let state = &mut capacity.targets[target];
                    let loaded = !state.is_resident(&job.key);
                    state.start(&job.key, decision.evict.as_ref(), now);
                    prop_assert!(state.running_of(&job.key) <= state.slots);
                    prop_assert!(state.resident().count() <= state.places);
                    starts.push(Start {
                        id: job.id,
                        caller: job.caller,
                        at: now,
                        loaded,
                    });
                    running.push((now + run_ms, target, job.key.clone()));
                    decided = true;
                }
            }
        }
        let next_end = running.iter().map(|(end, _, _)| *end).min();
        let next_arrival = arrivals.last().map(|job| job.arrival);
        now = match (next_end, next_arrival) {
            (Some(end), Some(arrival)) => end.min(arrival),
            (Some(at), None) | (None, Some(at)) => at,
            (None, None) if queue.len == 0 => return Ok(starts),
            (None, None) => {
                return Err(TestCaseError::fail(format!(
                    "{} jobs wait at {now} and nothing runs",
                    queue.len
                )));
            }
        };
    }
}

fn job(model: &str, caller: &'static str, weight: u32, arrival: i64) -> Job {
    Job {
        id: JobId::generate(),
        key: LoadKey::new(model, ""),
        caller,
        weight,
        arrival,
        priority: 0,
    }
}

/// `count` jobs of the flooding caller for `model` at time 0, and the trickler's jobs
/// at `arrivals`.
fn flood_and_trickle(count: usize, arrivals: &[i64]) -> Vec<Job> {
    let mut jobs: Vec<Job> = (0..count).map(|_| job("m", "flood", 1, 0)).collect();
    jobs.extend(arrivals.iter().map(|&at| job("m", "chat", 1, at)));
    jobs
}

/// For each of the trickler's jobs: how many of the flood's jobs started after it
/// arrived and before it, and how long it waited.
fn trickler_waits(jobs: &[Job], starts: &[Start]) -> Vec<(usize, i64)> {
    let arrival: HashMap<JobId, i64> = jobs.iter().map(|job| (job.id, job.arrival)).collect();
    starts
        .iter()
        .enumerate()
        .filter(|(_, start)| start.caller == "chat")
        .map(|(order, start)| {
            let arrived = arrival[&start.id];
            let overtaken = starts[..order]
                .iter()
                .filter(|other| other.caller == "flood" && other.at >= arrived)
                .count();
            (overtaken, start.at - arrived)
        })
        .collect()
}

#[test]
fn without_fair_share_the_trickler_waits_for_the_whole_backlog() {
    let jobs = flood_and_trickle(200, &[5]);
    let target = || vec![TargetState::new("t", 1, 1)];
    let off = simulate(&jobs, target(), 100, 60_000, false).expect("simulated");
    assert_eq!(trickler_waits(&jobs, &off), [(199, 200 * 100 - 5)]);
    let on = simulate(&jobs, target(), 100, 60_000, true).expect("simulated");
    assert_eq!(trickler_waits(&jobs, &on), [(0, 100 - 5)]);
}

/// Interleaved requests over three models from three callers: request `i` is for
/// model `i % 3`, from a caller drawn by `callers`, arriving `gaps[i]` after the
/// previous one.
fn interleaved(callers: &[usize], gaps: &[i64], weights: [u32; 3]) -> Vec<Job> {
    const MODELS: [&str; 3] = ["alpha:1b", "beta:3b", "delta:8b"];
    const NAMES: [&str; 3] = ["ci", "chat", "notebook"];
    let mut at = 0;
    callers
        .iter()
        .zip(gaps)
        .enumerate()
        .map(|(i, (&caller, &gap))| {
            at += gap;
            job(MODELS[i % 3], NAMES[caller], weights[caller], at)
        })
        .collect()
}

fn loads(starts: &[Start]) -> usize {
    starts.iter().filter(|start| start.loaded).count()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// A caller with one job at a time beside one with a thousand or more queued, both
    /// of weight 1 and one priority, for the same model: each of the trickler's jobs
    /// starts after at most one of the flood's per slot that started after it arrived
    /// (in fact none), and within one run of its arrival: the time for a slot to free.
    #[test]
    fn a_trickler_waits_at_most_one_job_per_slot(
        count in 1_000..2_500usize,
        slots in 1..=4usize,
        places in 1..=2usize,
        run_ms in 50..500i64,
        max_wait_runs in 2..200i64,
        gaps in prop::collection::vec(2..40i64, 1..8),
    ) {
        let mut at = 0;
        let arrivals: Vec<i64> = gaps
            .iter()
            .map(|gap| {
                at += gap * run_ms + 7;
                at
            })
            .collect();
        let jobs = flood_and_trickle(count, &arrivals);
        let target = vec![TargetState::new("t", slots, places)];
        let starts = simulate(&jobs, target, run_ms, max_wait_runs * run_ms, true)?;
        prop_assert_eq!(starts.len(), jobs.len());
        for (overtaken, waited) in trickler_waits(&jobs, &starts) {
            prop_assert!(overtaken <= slots, "{overtaken} of the flood's jobs went first");
            prop_assert!(waited <= run_ms, "waited {waited} ms, a run is {run_ms}");
        }
    }

    /// Two callers both keeping one model busy share it by their weights: after any
    /// number of starts, each has its weighted share within one job.
    #[test]
    fn weights_set_the_shares(
        heavy in 1..=5u32,
        light in 1..=5u32,
        slots in 1..=4usize,
        count in 200..600usize,
    ) {
        let mut jobs: Vec<Job> = (0..count).map(|_| job("m", "heavy", heavy, 0)).collect();
        jobs.extend((0..count).map(|_| job("m", "light", light, 0)));
        let starts = simulate(&jobs, vec![TargetState::new("t", slots, 1)], 100, 60_000, true)?;
        let total = f64::from(heavy + light);
        let mut served = 0u32;
        // While both still have work queued (the first `count` starts at least).
        for (n, start) in starts.iter().take(count).enumerate() {
            served += u32::from(start.caller == "heavy");
            let expected = (n + 1) as f64 * f64::from(heavy) / total;
            prop_assert!(
                (f64::from(served) - expected).abs() <= 1.0 + f64::EPSILON,
                "after {} starts heavy (weight {heavy}) had {served}, expected {expected:.1} \
                 against light (weight {light})",
                n + 1
            );
        }
    }

    /// Draining still saves loads: interleaved requests of several callers cost at most
    /// a quarter more loads with fair share than without, and fewer than running them
    /// in arrival order would.
    #[test]
    fn draining_still_saves_loads(
        callers in prop::collection::vec(0..3usize, 60..240),
        gaps_seed in prop::collection::vec(0..60i64, 240),
        weights in prop::array::uniform3(1..=3u32),
        slots in 1..=2usize,
        places in 1..=2usize,
        max_wait_runs in 5..60i64,
    ) {
        let run_ms = 100;
        let jobs = interleaved(&callers, &gaps_seed[..callers.len()], weights);
        let target = || vec![TargetState::new("t", slots, places)];
        let on = simulate(&jobs, target(), run_ms, max_wait_runs * run_ms, true)?;
        let off = simulate(&jobs, target(), run_ms, max_wait_runs * run_ms, false)?;
        prop_assert!(
            loads(&on) * 4 <= loads(&off) * 5,
            "{} loads with fair share, {} without",
            loads(&on),
            loads(&off)
        );
        // In arrival order every request is for another model than the one before.
        prop_assert!(loads(&on) < jobs.len() / 2, "{} loads for {} jobs", loads(&on), jobs.len());
    }
}
