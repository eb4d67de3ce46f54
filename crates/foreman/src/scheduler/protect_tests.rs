//! Tests of the protection window: a low-priority backlog (a batch) beside live
//! traffic, on a target of three places, played on a deterministic simulation.
//!
//! Live traffic uses two models, one of them also in the batch; the batch spans three
//! models. The target starts with the two live models loaded, so the fewest loads the
//! batch needs is one per batch model not loaded (two). Loads take a second here, as
//! in the `batch` benchmark.

use std::collections::HashMap;

use foreman_store::{JobId, QueueHead};

use super::tests::heads_from;
use super::{Capacity, LoadKey, Policy, Reason, TargetState};

const LIVE: i32 = 10;
const BATCH: i32 = -10;
const LOAD_MS: i64 = 1_000;
/// When the batch is queued: after a chat of each live model, as in the benchmark.
const BATCH_AT: i64 = 1_000;

#[derive(Debug, Clone)]
struct Job {
    id: JobId,
    key: LoadKey,
    arrival: i64,
    priority: i32,
    run_ms: i64,
}

fn key(model: &str) -> LoadKey {
    LoadKey::new(model, "")
}

fn job(model: &str, arrival: i64, priority: i32, run_ms: i64) -> Job {
    Job {
        id: JobId::generate(),
        key: key(model),
        arrival,
        priority,
        run_ms,
    }
}

/// Live chats every 500 ms from `from` to `until`, alternating `alpha` and `delta`
/// (each 50 ms), and a batch queued at [`BATCH_AT`]: `alpha` 250 lines, `beta` 150, `gamma` 100
/// (each 100 ms), shuffled the same way every time.
fn workload(from: i64, until: i64) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut at = from;
    let mut turn = 0;
    while at < until {
        let model = if turn % 2 == 0 { "alpha" } else { "delta" };
        jobs.push(job(model, at, LIVE, 50));
        at += 500;
        turn += 1;
    }
    for (model, lines) in [("alpha", 250), ("beta", 150), ("gamma", 100)] {
        for _ in 0..lines {
            jobs.push(job(model, BATCH_AT, BATCH, 100));
        }
    }
    jobs
}

/// The queue's heads as the store reports them.
fn heads_of(queued: &[&Job]) -> Vec<QueueHead> {
    heads_from(
        queued
            .iter()
            .map(|job| (&job.key, job.id, job.priority, job.arrival)),
    )
}

/// What a run of the simulation showed.
#[derive(Debug, Default)]
struct Outcome {
    /// Loads per model.
    loads: HashMap<String, usize>,
    /// Loads for batch work that gave up (or, when the policy's victim was busy and the
    /// target chose its own, could have given up) a live model used within `window`.
    live_evictions: Vec<String>,
    /// Batch lines left unfinished when the simulation stopped.
    unfinished: usize,
    /// When the last batch line ended.
    batch_done_at: i64,
    /// Batch loads made by the bound.
    forced: usize,
}

/// Plays `jobs` on one target of 2 slots and 3 places with `alpha` and `delta` loaded,
/// under a policy with the bound `max_wait` and the protection `protect`, until every
/// job ended or `limit` passed. `window` is how recent a live use must be for its
/// model's loss to a batch load to count in [`Outcome::live_evictions`].
fn play(jobs: &[Job], max_wait: i64, protect: i64, window: i64, limit: i64) -> Outcome {
    let mut policy = Policy::new(max_wait).with_protection(protect, BATCH);
    let mut target = TargetState::new("gpu", 2, 3);
    target.seed(key("alpha"), 0);
    target.seed(key("delta"), 0);
    let mut capacity = Capacity::new(vec![target]);
    let mut pending: Vec<&Job> = jobs.iter().collect();
    let mut running: Vec<(i64, LoadKey)> = Vec::new();
    let mut live_used: HashMap<LoadKey, i64> = HashMap::new();
    let mut outcome = Outcome::default();
    let mut now = 0;
    while now <= limit {
        running.retain(|(end, key)| {
            if *end <= now {
                capacity.targets[0].finish(key, now);
            }
            *end > now
        });
        loop {
            let queued: Vec<&Job> = pending
                .iter()
                .copied()
                .filter(|job| job.arrival <= now)
                .collect();
            let heads = heads_of(&queued);
            let Some(decision) = policy.decide(&heads, &capacity, 0, now) else {
                break;
            };
            let position = pending
                .iter()
                .position(|job| job.id == decision.job)
                .expect("the policy picks a queued job");
            let job = pending.swap_remove(position);
            assert_eq!(decision.key, job.key);
            let state = &mut capacity.targets[0];
            let load = !state.is_resident(&job.key);
            if load {
                *outcome.loads.entry(job.key.model.clone()).or_default() += 1;
            }
            if load && job.priority == BATCH {
                if decision.reason == Reason::Starving {
                    outcome.forced += 1;
                }
                let recent =
                    |key: &LoadKey| live_used.get(key).is_some_and(|used| now - used < window);
                if let Some(victim) = &decision.evict {
                    // An idle victim is unloaded as foreman asks. A busy one is too, once
                    // its jobs end (the runner waits); counting every idle model the
                    // target could take instead is stricter than that.
                    let could_go: Vec<&LoadKey> = if state.running_of(victim) == 0 {
                        vec![victim]
                    } else {
                        state
                            .resident()
                            .filter(|key| state.running_of(key) == 0)
                            .collect()
                    };
                    for gone in could_go.into_iter().filter(|key| recent(key)) {
                        outcome
                            .live_evictions
                            .push(format!("{} over {gone} at {now}", job.key));
                    }
                }
            }
            if job.priority == LIVE {
                live_used.insert(job.key.clone(), now);
            }
            state.start(&job.key, decision.evict.as_ref(), now);
            assert!(state.resident().count() <= state.places);
            let run = job.run_ms + if load { LOAD_MS } else { 0 };
            running.push((now + run, job.key.clone()));
            if job.priority == BATCH {
                outcome.batch_done_at = outcome.batch_done_at.max(now + run);
            }
        }
        let next_end = running.iter().map(|(end, _)| *end).min();
        let next_arrival = pending
            .iter()
            .map(|job| job.arrival)
            .filter(|at| *at > now)
            .min();
        now = match (next_end, next_arrival) {
            (Some(end), Some(arrival)) => end.min(arrival),
            (Some(at), None) | (None, Some(at)) => at,
            (None, None) => break,
        };
    }
    outcome.unfinished = pending.iter().filter(|job| job.priority == BATCH).count();
    outcome
}

fn total(loads: &HashMap<String, usize>, models: &[&str]) -> usize {
    models
        .iter()
        .map(|model| loads.get(*model).copied().unwrap_or(0))
        .sum()
}

/// With live traffic throughout, the batch never unloads a live model: it loads its
/// two other models once each into the third place, one after the other, and finishes.
/// Without protection the same scenario loads the live models again and again.
#[test]
fn a_batch_never_unloads_a_model_live_traffic_uses() {
    let jobs = workload(0, 60_000);
    let protected = play(&jobs, 60_000, 60_000, 60_000, 600_000);
    assert_eq!(protected.unfinished, 0, "the batch completes");
    assert_eq!(protected.live_evictions, Vec::<String>::new());
    assert_eq!(
        total(&protected.loads, &["alpha", "delta"]),
        0,
        "live chats find their models loaded: {:?}",
        protected.loads
    );
    assert_eq!(
        total(&protected.loads, &["beta", "gamma"]),
        2,
        "one load per batch model: {:?}",
        protected.loads
    );

    let unprotected = play(&jobs, 60_000, 0, 60_000, 600_000);
    assert_eq!(unprotected.unfinished, 0);
    assert!(
        !unprotected.live_evictions.is_empty() && total(&unprotected.loads, &["delta"]) > 0,
        "without protection the batch takes the live models' places: {unprotected:?}"
    );
}

/// A batch longer than the bound: its lines all wait past `max_wait`, and the bound
/// hands its one free place from batch model to batch model, never a live one, with
/// loads still near one per batch model.
#[test]
fn the_bound_moves_a_batch_between_its_own_models() {
    let jobs = workload(0, 60_000);
    let outcome = play(&jobs, 5_000, 60_000, 60_000, 600_000);
    assert_eq!(outcome.unfinished, 0, "the batch completes");
    assert_eq!(outcome.live_evictions, Vec::<String>::new());
    assert_eq!(total(&outcome.loads, &["alpha", "delta"]), 0, "{outcome:?}");
    assert!(
        outcome.forced >= 1,
        "the bound placed batch models: {outcome:?}"
    );
    // One load per batch model, and at most one more each time the bound hands the
    // place over (once per `max_wait` of the batch's run).
    let batch_loads = total(&outcome.loads, &["beta", "gamma"]);
    let handovers = (outcome.batch_done_at - BATCH_AT) / 5_000;
    assert!(
        batch_loads as i64 <= 2 + handovers,
        "near one load per batch model: {outcome:?}"
    );
}

/// Once live traffic has been quiet longer than the window, its models are fair game:
/// a batch key whose only way in is over a live model is placed as soon as the window
/// has passed since that model's last live use, long before the bound would place it.
#[test]
fn protection_ends_with_the_window() {
    let mut policy = Policy::new(60_000).with_protection(3_000, BATCH);
    let mut target = TargetState::new("gpu", 1, 2);
    target.seed(key("alpha"), 0);
    target.seed(key("delta"), 0);
    let mut capacity = Capacity::new(vec![target]);
    let batch = job("beta", 0, BATCH, 100);
    let mut run = |heads: &[QueueHead], now: i64| {
        let decision = policy.decide(heads, &capacity, 0, now)?;
        capacity.targets[0].start(&decision.key, decision.evict.as_ref(), now);
        capacity.targets[0].finish(&decision.key, now + 50);
        (decision.key == key("beta")).then_some(decision.reason)
    };
    // Live chats of both models every 100 ms until 2 s; each ends before the next.
    let mut now = 0;
    let mut placed = None;
    while now <= 10_000 && placed.is_none() {
        let live: &[&str] = if now < 2_000 {
            &["alpha", "delta"]
        } else {
            &[]
        };
        for model in live {
            let mut heads = heads_of(&[&job(model, now, LIVE, 50)]);
            heads.extend(heads_of(&[&batch]));
            if let Some(reason) = run(&heads, now) {
                placed = Some((now, reason));
            }
        }
        if placed.is_none() {
            placed = run(&heads_of(&[&batch]), now).map(|reason| (now, reason));
        }
        now += 100;
    }
    let (at, reason) = placed.expect("the batch key is placed once the window passed");
    assert_ne!(
        reason,
        Reason::Starving,
        "placed by the window's end, not the bound"
    );
    assert!(
        (4_900..=5_000).contains(&at),
        "placed 3 s after the last live chat (1.9 s), not before: {at}"
    );
}

/// The bound still holds in its longer form: a batch key whose only way in is over
/// models live traffic keeps using waits `max_wait + window`, then is placed over one.
#[test]
fn the_bound_overrides_protection_after_the_window() {
    let mut policy = Policy::new(1_000).with_protection(2_000, BATCH);
    let mut target = TargetState::new("gpu", 1, 2);
    target.seed(key("alpha"), 0);
    target.seed(key("delta"), 0);
    let mut capacity = Capacity::new(vec![target]);
    let live = |model: &str, now: i64| {
        let mut head = heads_of(&[&job(model, now, LIVE, 50)]);
        head.remove(0)
    };
    let batch = job("beta", 0, BATCH, 100);
    // Live traffic uses both places every 100 ms; each chat ends before the next.
    let mut now = 0;
    let mut placed = None;
    while now <= 10_000 && placed.is_none() {
        for model in ["alpha", "delta"] {
            let heads = vec![live(model, now), heads_of(&[&batch]).remove(0)];
            let decision = policy
                .decide(&heads, &capacity, 0, now)
                .expect("a free runner");
            capacity.targets[0].start(&decision.key, decision.evict.as_ref(), now);
            capacity.targets[0].finish(&decision.key, now + 50);
            if decision.key == key("beta") {
                placed = Some((now, decision.reason));
                break;
            }
        }
        now += 100;
    }
    let (at, reason) = placed.expect("the batch key is placed in the end");
    assert_eq!(reason, Reason::Starving);
    assert!(
        (3_000..3_200).contains(&at),
        "placed once it waited the bound and the window (3 s), not before: {at}"
    );
}

/// Protection holds back only work at the batch priority or below: an async job (above
/// it) alone in the queue loads its model over one a live request has just used, as
/// without protection, instead of waiting out the window on an idle GPU.
#[test]
fn work_above_the_batch_priority_is_not_held_back() {
    const ASYNC: i32 = 0;
    let mut policy = Policy::new(1_000).with_protection(60_000, BATCH);
    let mut target = TargetState::new("gpu", 1, 1);
    target.seed(key("alpha"), 0);
    let mut capacity = Capacity::new(vec![target]);
    let live = heads_of(&[&job("alpha", 0, LIVE, 50)]);
    let decision = policy
        .decide(&live, &capacity, 0, 0)
        .expect("a free runner");
    capacity.targets[0].start(&decision.key, decision.evict.as_ref(), 0);
    capacity.targets[0].finish(&decision.key, 50);

    let lone = heads_of(&[&job("beta", 100, ASYNC, 100)]);
    let decision = policy
        .decide(&lone, &capacity, 0, 100)
        .expect("the async job runs at once");
    assert_eq!(decision.key, key("beta"));
    assert_eq!(decision.evict, Some(key("alpha")));

    // The same job at the batch priority waits: alpha is protected.
    let mut held = Policy::new(1_000).with_protection(60_000, BATCH);
    let mut target = TargetState::new("gpu", 1, 1);
    target.seed(key("alpha"), 0);
    let mut capacity = Capacity::new(vec![target]);
    let decision = held.decide(&live, &capacity, 0, 0).expect("a free runner");
    capacity.targets[0].start(&decision.key, decision.evict.as_ref(), 0);
    capacity.targets[0].finish(&decision.key, 50);
    let batch = heads_of(&[&job("beta", 100, BATCH, 100)]);
    assert!(held.decide(&batch, &capacity, 0, 100).is_none());
}
