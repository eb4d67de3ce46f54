//! foreman uses what its targets can do at once: every slot of a loaded model, every
//! place for another model, every target, and no more than that; and it keeps runner
//! options and `keep_alive` from costing loads. Concurrency is proven by the
//! simulators' counters (requests running now, the peak), never by timing.

use foreman_store::JobState;
use ollama_sim::SimConfig;
use serde_json::{Value, json};

use crate::common::*;

const A: &str = "llama3.2:3b,load=20ms,tps=4000";
const B: &str = "qwen2.5:0.5b,load=20ms,tps=4000";
const C: &str = "phi3:mini,load=20ms,tps=4000";

/// How many of foreman's jobs are in `state`.
async fn count(foreman: &TestForeman, state: JobState) -> usize {
    foreman
        .jobs()
        .await
        .iter()
        .filter(|job| job.state == state)
        .count()
}

/// Models whose answers last minutes (100 000 tokens at 40 a second): a job stays
/// running until its caller leaves, however fast the machine is.
fn long_sim(models: &[&str], num_parallel: usize, max_loaded: usize) -> SimConfig {
    let models: Vec<String> = models
        .iter()
        .map(|m| format!("{m},load=10ms,tps=40"))
        .collect();
    let models: Vec<&str> = models.iter().map(String::as_str).collect();
    SimConfig {
        reply_tokens: 100_000,
        ..sim_with(&models, num_parallel, max_loaded)
    }
}

/// A streamed chat through foreman whose caller stays until the task is aborted.
fn start_stream(url: &str, model: &str) -> tokio::task::JoinHandle<()> {
    let request = client()
        .post(format!("{url}/api/chat"))
        .json(&chat_body(model, "long", true));
    tokio::spawn(async move {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        std::future::pending::<()>().await;
        drop(response);
    })
}

/// Aborts every caller, and waits until foreman has cancelled all their jobs and the
/// target runs nothing.
async fn leave_all(foreman: &TestForeman, callers: Vec<tokio::task::JoinHandle<()>>) {
    for caller in &callers {
        caller.abort();
    }
    let total = foreman.jobs().await.len();
    eventually("every job cancelled and the target idle", async || {
        count(foreman, JobState::Cancelled).await == total && foreman.sim.stats().running == 0
    })
    .await;
}

#[tokio::test]
async fn a_target_runs_as_many_jobs_as_its_slots_and_no_more() {
    let model = "llama3.2:3b";
    let foreman = TestForeman::start_targets(vec![("gpu", long_sim(&[model], 4, 1))], |_| {}).await;
    let callers: Vec<_> = (0..8).map(|_| start_stream(&foreman.url, model)).collect();
    eventually(
        "four jobs running on the target, four queued in foreman",
        async || foreman.sim.stats().running == 4 && count(&foreman, JobState::Queued).await == 4,
    )
    .await;
    let stats = foreman.sim.stats();
    assert_eq!(stats.waiting, 0, "foreman sent nothing beyond the slots");
    assert_eq!(stats.models[model].peak_in_flight, 4);
    assert_eq!(stats.loads_total, 1);

    // Cancelling a running job frees its slot, and a queued job takes it.
    let running = foreman
        .jobs()
        .await
        .into_iter()
        .find(|job| job.state == JobState::Running)
        .unwrap();
    assert_eq!(running.target.as_deref(), Some("gpu"));
    let (status, _) = get_json(&client(), format!("{}/jobs/{}", foreman.url, running.id)).await;
    assert_eq!(status, 200);
    let cancelled = client()
        .delete(format!("{}/jobs/{}", foreman.url, running.id))
        .send()
        .await
        .unwrap();
    assert!(cancelled.status().is_success());
    eventually(
        "the cancelled job's slot taken by a queued job",
        async || {
            count(&foreman, JobState::Cancelled).await == 1
                && count(&foreman, JobState::Queued).await == 3
                && foreman.sim.stats().running == 4
        },
    )
    .await;
    assert_eq!(foreman.sim.stats().models[model].peak_in_flight, 4);
    leave_all(&foreman, callers).await;
    foreman.stop().await;
}

#[tokio::test]
async fn two_places_run_two_models_at_once() {
    let (a, b) = ("llama3.2:3b", "qwen2.5:0.5b");
    let foreman = TestForeman::start_targets(vec![("gpu", long_sim(&[a, b], 2, 2))], |_| {}).await;
    let callers: Vec<_> = (0..8)
        .map(|i| start_stream(&foreman.url, if i % 2 == 0 { a } else { b }))
        .collect();
    eventually("two jobs of each model running", async || {
        let stats = foreman.sim.stats();
        stats.running == 4 && stats.models[a].running == 2 && stats.models[b].running == 2
    })
    .await;
    let stats = foreman.sim.stats();
    assert_eq!(stats.waiting, 0);
    assert_eq!(stats.peak_in_flight, 4);
    assert_eq!((stats.loads_total, stats.swaps_total), (2, 0));
    assert_eq!(count(&foreman, JobState::Queued).await, 4);
    leave_all(&foreman, callers).await;
    foreman.stop().await;
}

#[tokio::test]
async fn the_declared_slots_bound_what_foreman_sends() {
    // The server could run four at once, but the operator gave foreman two.
    let model = "llama3.2:3b";
    let foreman = TestForeman::start_targets(vec![("gpu", long_sim(&[model], 4, 1))], |config| {
        config.targets[0].slots = 2;
    })
    .await;
    let callers: Vec<_> = (0..6).map(|_| start_stream(&foreman.url, model)).collect();
    eventually("two running, four queued", async || {
        foreman.sim.stats().running == 2 && count(&foreman, JobState::Queued).await == 4
    })
    .await;
    assert_eq!(foreman.sim.stats().models[model].peak_in_flight, 2);
    leave_all(&foreman, callers).await;
    assert_eq!(foreman.sim.stats().models[model].peak_in_flight, 2);
    foreman.stop().await;
}

/// Two targets of one slot and one place: a client alternating two models through
/// foreman gets each model loaded once, on one target each, and every later job goes
/// where its model is loaded; a model only one target has runs only there.
#[tokio::test]
async fn jobs_go_where_their_model_is_loaded() {
    let foreman = TestForeman::start_targets(
        vec![
            ("gpu0", sim_with(&[A, B], 1, 1)),
            ("gpu1", sim_with(&[A, B, C], 1, 1)),
        ],
        |_| {},
    )
    .await;
    let client = client();
    for i in 0..10 {
        let model = if i % 2 == 0 { CHAT } else { CHAT2 };
        let (status, _, body) = post(
            &client,
            format!("{}/api/chat", foreman.url),
            &chat_body(model, &format!("turn {i}"), false),
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    let (gpu0, gpu1) = (foreman.sim.stats(), foreman.more_sims[0].stats());
    assert_eq!(
        (gpu0.loads_total, gpu1.loads_total),
        (1, 1),
        "one load per model: {gpu0:?} {gpu1:?}"
    );
    // Each target served one model only.
    let served = |stats: &ollama_sim::StatsSnapshot| -> Vec<String> {
        stats
            .models
            .iter()
            .filter(|(_, model)| model.requests > 0)
            .map(|(name, _)| name.clone())
            .collect()
    };
    let (on0, on1) = (served(&gpu0), served(&gpu1));
    assert_eq!((on0.len(), on1.len()), (1, 1), "{on0:?} {on1:?}");
    assert_ne!(on0, on1);

    // phi3 is only on gpu1: it runs there, whatever is loaded on gpu0.
    let (status, _, body) = post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body("phi3:mini", "only here", false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(foreman.more_sims[0].stats().models["phi3:mini"].requests, 1);
    let jobs = foreman.jobs().await;
    let phi = jobs.iter().find(|job| job.model == "phi3:mini").unwrap();
    assert_eq!(phi.target.as_deref(), Some("gpu1"));
    foreman.stop().await;
}

/// Sends the first of `bodies` and holds it on the target, queues the rest behind it,
/// then lets them all run.
async fn run_behind_a_held_job(foreman: &TestForeman, bodies: Vec<Value>) {
    let client = client();
    hold(&foreman.sim, true);
    let first = {
        let (client, url) = (client.clone(), foreman.url.clone());
        let body = bodies[0].clone();
        tokio::spawn(async move { post(&client, format!("{url}/api/chat"), &body).await.0 })
    };
    eventually("the first job held on the target", async || {
        foreman.sim.stats().held == 1
    })
    .await;
    let rest: Vec<_> = bodies[1..]
        .iter()
        .cloned()
        .map(|body| {
            let (client, url) = (client.clone(), foreman.url.clone());
            tokio::spawn(async move { post(&client, format!("{url}/api/chat"), &body).await.0 })
        })
        .collect();
    let queued = bodies.len() - 1;
    eventually("the rest queued", async || {
        count(foreman, JobState::Queued).await == queued
    })
    .await;
    hold(&foreman.sim, false);
    assert_eq!(first.await.unwrap(), 200);
    for chat in rest {
        assert_eq!(chat.await.unwrap(), 200);
    }
}

fn chat_with(options: Value, extra: Value) -> Value {
    let mut body = chat_body(CHAT, "drift", false);
    body["options"] = options;
    if let Value::Object(extra) = extra {
        body.as_object_mut().unwrap().extend(extra);
    }
    body
}

/// Clients alternating two context sizes: foreman drains one load key, then the other
/// (two loads where alternating costs one per job); a pin puts them all on one runner.
#[tokio::test]
async fn drifting_options_drain_by_load_key_and_pins_stop_reloads() {
    let alternating: Vec<Value> = (0..10)
        .map(|i| {
            chat_with(
                json!({"num_ctx": if i % 2 == 0 { 2048 } else { 8192 }}),
                json!({}),
            )
        })
        .collect();

    let foreman = TestForeman::start(sim_with(&[A], 1, 1)).await;
    run_behind_a_held_job(&foreman, alternating.clone()).await;
    let stats = foreman.sim.stats();
    assert_eq!(
        (stats.loads_total, stats.reloads_total),
        (2, 1),
        "one load per load key"
    );
    let keys: std::collections::BTreeSet<String> = foreman
        .jobs()
        .await
        .iter()
        .map(|job| job.load_options.clone())
        .collect();
    assert_eq!(
        keys.into_iter().collect::<Vec<_>>(),
        ["num_ctx=2048", "num_ctx=8192"]
    );
    foreman.stop().await;

    let pinned = TestForeman::start_with(sim_with(&[A], 1, 1), |config| {
        config.pins = foreman::scheduler::load_key::parse_pins("llama3.2:3b:num_ctx=8192").unwrap();
    })
    .await;
    run_behind_a_held_job(&pinned, alternating).await;
    let stats = pinned.sim.stats();
    assert_eq!(
        (stats.loads_total, stats.reloads_total),
        (1, 0),
        "pinned: one runner"
    );
    for job in pinned.jobs().await {
        assert_eq!(job.load_options, "num_ctx=8192");
        let payload: Value = serde_json::from_str(&job.payload).unwrap();
        assert_eq!(
            payload["options"]["num_ctx"], 8192,
            "the pin rewrote the body"
        );
    }
    pinned.stop().await;
}

/// Clients that send `keep_alive: 0`: the model stays loaded while more of its work
/// waits, and the last job of the batch unloads it as the client asked.
#[tokio::test]
async fn keep_alive_zero_is_held_while_the_batch_lasts() {
    let foreman = TestForeman::start(sim_with(&[A, B], 1, 1)).await;
    // A job of another model holds the target while the batch queues behind it.
    let mut bodies = vec![chat_body(CHAT2, "first", false)];
    bodies.extend((0..8).map(|_| chat_with(json!({}), json!({"keep_alive": 0}))));
    run_behind_a_held_job(&foreman, bodies).await;
    let stats = foreman.sim.stats();
    assert_eq!(
        stats.models[CHAT].loads, 1,
        "one load for the batch: {stats:?}"
    );
    eventually("the model unloaded after the last job", async || {
        foreman.sim.stats().loaded.is_empty()
    })
    .await;
    // The stored jobs keep what the client sent.
    for job in foreman.jobs().await.iter().filter(|job| job.model == CHAT) {
        let payload: Value = serde_json::from_str(&job.payload).unwrap();
        assert_eq!(payload["keep_alive"], 0);
    }
    foreman.stop().await;
}
