//! Drain-by-model and the starvation bound, measured by the simulator's swap counter;
//! request priorities, read from the job rows.

use std::time::Duration;

use foreman_store::{JobId, JobState};
use futures::future::join_all;
use ollama_sim::{ModelSpec, SimConfig};
use serde_json::{Value, json};

use crate::common::*;

fn two_models_one_slot() -> SimConfig {
    SimConfig {
        models: vec![
            ModelSpec::parse("llama3.2:3b,load=100ms,tps=2000").unwrap(),
            ModelSpec::parse("qwen2.5:0.5b,load=100ms,tps=2000").unwrap(),
        ],
        max_loaded: 1,
        ..SimConfig::default()
    }
}

async fn send_interleaved(client: &reqwest::Client, url: &str, n: usize) -> Vec<u16> {
    let requests = (0..n).map(|i| {
        let (client, url) = (client.clone(), url.to_string());
        let model = if i % 2 == 0 { CHAT } else { CHAT2 };
        async move {
            post(
                &client,
                format!("{url}/api/chat"),
                &chat_body(model, &format!("request {i}"), false),
            )
            .await
            .0
        }
    });
    join_all(requests).await
}

#[tokio::test]
async fn forty_interleaved_requests_cost_a_handful_of_swaps() {
    let mut sim = two_models_one_slot();
    sim.models
        .push(ModelSpec::parse("blocker:1b,load=10ms,tps=2").unwrap());
    let foreman = TestForeman::start(sim).await;
    let client = client();
    // All 40 are queued before the worker picks any of them, whatever the machine's
    // speed: the worker is held by a slow job meanwhile.
    let hold = hold_the_worker(&foreman).await;
    let store = foreman.store().await;
    let sending = tokio::spawn({
        let (client, url) = (client.clone(), foreman.url.clone());
        async move { send_interleaved(&client, &url, 40).await }
    });
    eventually("the 40 requests to be queued", async || {
        store.queue_depth().await.unwrap() == 40
    })
    .await;
    let before = foreman.sim.stats();
    hold.abort();
    let statuses = sending.await.unwrap();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let after = foreman.sim.stats();
    // Loads, not swaps: foreman unloads the model it gives up before the next one's
    // load, so the target loads into a free place instead of swapping.
    let through_foreman = after.loads_total - before.loads_total;
    assert_eq!(after.requests_total - before.requests_total, 40);
    assert_eq!(
        through_foreman, 2,
        "foreman drained by model: one load of each model"
    );

    let direct = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), two_models_one_slot())
        .await
        .unwrap();
    let statuses = send_interleaved(&client, &direct.url(), 40).await;
    assert!(statuses.iter().all(|s| *s == 200));
    let straight = direct.stats();
    eprintln!(
        "40 interleaved requests: {} loads through foreman, {} straight to the target",
        through_foreman, straight.loads_total
    );
    assert!(
        straight.loads_total >= 4 * through_foreman,
        "the same traffic sent straight to the target loads far more: {} vs {through_foreman}",
        straight.loads_total,
    );
    direct.shutdown().await;
    store.close().await;
    foreman.stop().await;
}

/// Milliseconds since the Unix epoch, as the store records times.
fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// How long a finished job waited in the queue: its claim minus its arrival.
fn queue_wait_ms(job: &foreman_store::Job) -> i64 {
    job.started_at.expect("the job ran") - job.created_at
}

#[tokio::test]
async fn every_job_waits_within_the_bound_while_a_hot_model_drains() {
    const MAX_WAIT_MS: u64 = 1_000;
    let sim = SimConfig {
        models: vec![
            ModelSpec::parse("llama3.2:3b,load=20ms,tps=1000").unwrap(),
            ModelSpec::parse("qwen2.5:0.5b,load=20ms,tps=1000").unwrap(),
        ],
        max_loaded: 1,
        ..SimConfig::default()
    };
    let foreman = TestForeman::start_with(sim, |config| {
        config.max_wait = Duration::from_millis(MAX_WAIT_MS)
    })
    .await;
    let client = client();
    // Four clients each send 60 chats of the hot model back to back, so its queue
    // never empties while they run: pure draining would keep the rare model waiting
    // until the last of them.
    let hot: Vec<_> = (0..4)
        .map(|c| {
            let (client, url) = (client.clone(), foreman.url.clone());
            tokio::spawn(async move {
                for i in 0..60 {
                    let (status, _, body) = post(
                        &client,
                        format!("{url}/api/chat"),
                        &chat_body(CHAT, &format!("hot {c}.{i}"), false),
                    )
                    .await;
                    assert_eq!(status, 200, "{body}");
                }
            })
        })
        .collect();
    eventually("the hot model to be draining", async || {
        foreman.sim.stats().requests_total >= 8
    })
    .await;
    // The rare model's chats, one at a time, while the hot clients still run.
    let mut rare_done_at = Vec::new();
    for i in 0..3 {
        let (status, _, body) = post(
            &client,
            format!("{}/api/chat", foreman.url),
            &chat_body(CHAT2, &format!("rare {i}"), false),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        rare_done_at.push(foreman.sim.stats().models[CHAT2].requests);
    }
    let hot_before_last_rare = foreman.sim.stats().models[CHAT].requests;
    for client in hot {
        client.await.unwrap();
    }
    assert!(
        hot_before_last_rare < 240,
        "the rare chats were served while the hot model still had work ({hot_before_last_rare} of 240 hot chats had run)"
    );
    let jobs = foreman.jobs().await;
    assert_eq!(jobs.len(), 243);
    // A job waits at most the bound plus the job running when it starved; the slack
    // covers that job, a load and a busy machine, and is far below the seconds that
    // the hot clients would hold the rare model off without the bound.
    let bound_ms = MAX_WAIT_MS as i64 + 2_000;
    let mut worst: Vec<(i64, &str)> = jobs
        .iter()
        .map(|job| (queue_wait_ms(job), job.model.as_str()))
        .collect();
    worst.sort();
    eprintln!("worst queue waits (ms): {:?}", &worst[worst.len() - 5..]);
    for job in &jobs {
        assert!(
            queue_wait_ms(job) <= bound_ms,
            "{} ({}) waited {} ms in the queue, more than {bound_ms} ms",
            job.id,
            job.model,
            queue_wait_ms(job)
        );
    }
    foreman.stop().await;
}

/// A model to hold the worker with (24 tokens at 2 per second) and two fast chat
/// models, one resident at a time.
fn hold_then_two_models() -> SimConfig {
    SimConfig {
        models: vec![
            ModelSpec::parse("blocker:1b,load=10ms,tps=2").unwrap(),
            ModelSpec::parse("llama3.2:3b,load=20ms,tps=4000").unwrap(),
            ModelSpec::parse("qwen2.5:0.5b,load=20ms,tps=4000").unwrap(),
        ],
        max_loaded: 1,
        ..SimConfig::default()
    }
}

/// Sends a chat of the slow model and waits until the target is running it; aborting
/// the returned task hangs up, which cancels the job and frees the worker.
async fn hold_the_worker(foreman: &TestForeman) -> tokio::task::JoinHandle<()> {
    let (client, url) = (client(), foreman.url.clone());
    let hold = tokio::spawn(async move {
        post(
            &client,
            format!("{url}/api/chat"),
            &chat_body(BLOCKER, "hold the worker", false),
        )
        .await;
    });
    eventually("the worker to be held", async || {
        foreman.sim.stats().in_flight == 1
    })
    .await;
    hold
}

#[tokio::test]
async fn a_backlog_older_than_the_bound_still_drains_by_model() {
    const MAX_WAIT: Duration = Duration::from_secs(2);
    let foreman =
        TestForeman::start_with(hold_then_two_models(), |config| config.max_wait = MAX_WAIT).await;
    let hold = hold_the_worker(&foreman).await;
    let store = foreman.store().await;
    let client = client();
    // 40 chats alternating two models, queued behind the held job.
    let mut answers = Vec::new();
    for i in 0..40 {
        let model = if i % 2 == 0 { CHAT } else { CHAT2 };
        answers.push(spawn_chat(
            &client,
            &foreman.url,
            model,
            &format!("backlog {i}"),
        ));
    }
    eventually("the backlog to be queued", async || {
        store.queue_depth().await.unwrap() == 40
    })
    .await;
    // Hold the worker until every queued job has waited past the bound.
    let newest = foreman
        .jobs()
        .await
        .iter()
        .map(|job| job.created_at)
        .max()
        .unwrap();
    let past_the_bound = newest + MAX_WAIT.as_millis() as i64 + 200;
    eventually("the backlog to be older than the bound", async || {
        now_ms() > past_the_bound
    })
    .await;
    let loads_before = foreman.sim.stats().loads_total;
    hold.abort();
    for answer in answers {
        assert_eq!(answer.await.unwrap(), 200);
    }
    let loads = foreman.sim.stats().loads_total - loads_before;
    eprintln!("a backlog of 40 jobs older than the bound cost {loads} loads");
    // One load per model; a third only if draining one model's 20 fast jobs took
    // longer than the bound on a very busy machine. Alternating would cost 40.
    assert!(loads <= 3, "{loads} loads for two models");
    store.close().await;
    foreman.stop().await;
}

#[tokio::test]
async fn an_interactive_chat_overtakes_async_work_of_another_model() {
    let sim = SimConfig {
        models: vec![
            // 24 tokens at 400 per second: 200 jobs hold the worker for about 12 s.
            ModelSpec::parse("llama3.2:3b,load=20ms,tps=400").unwrap(),
            ModelSpec::parse("qwen2.5:0.5b,load=20ms,tps=4000").unwrap(),
        ],
        max_loaded: 1,
        ..SimConfig::default()
    };
    let foreman = TestForeman::start(sim).await;
    let client = client();
    for i in 0..200 {
        let body =
            json!({"kind": "chat", "request": chat_body(CHAT, &format!("async {i}"), false)});
        let response = client
            .post(format!("{}/jobs", foreman.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
    }
    let store = foreman.store().await;
    let started_before = started_of(&foreman.jobs().await, CHAT);
    assert!(
        started_before < 150,
        "the async jobs are still queued ({started_before} of 200 started)"
    );
    let response = client
        .post(format!("{}/api/chat", foreman.url))
        .json(&chat_body(CHAT2, "interactive", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id: JobId = response.headers()["x-foreman-job-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    response.bytes().await.unwrap();
    let interactive = recorded(&store, id).await;
    assert_eq!(interactive.priority, 10);
    let jobs = foreman.jobs().await;
    let ahead = jobs
        .iter()
        .filter(|job| job.model == CHAT)
        .filter(|job| {
            job.started_at
                .is_some_and(|at| at < interactive.started_at.unwrap())
        })
        .count();
    // Those that had started when it was sent, the one running when it arrived, and
    // one claimed in the same instant.
    assert!(
        ahead <= started_before + 2,
        "{ahead} async jobs ran before the interactive chat, {started_before} had started when it was sent"
    );
    store.close().await;
    foreman.stop().await;
}

/// How many jobs of `model` have started.
fn started_of(jobs: &[foreman_store::Job], model: &str) -> usize {
    jobs.iter()
        .filter(|job| job.model == model && job.started_at.is_some())
        .count()
}

const BLOCKER: &str = "blocker:1b";

/// A slow model to hold the worker with (24 tokens at 2 per second), beside a fast one.
fn blocker_sim() -> SimConfig {
    SimConfig {
        models: vec![
            ModelSpec::parse("blocker:1b,load=10ms,tps=2").unwrap(),
            ModelSpec::parse("llama3.2:3b,load=20ms,tps=1000").unwrap(),
        ],
        max_loaded: 2,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn higher_priority_runs_first_within_a_model() {
    let foreman = TestForeman::start(blocker_sim()).await;
    let client = client();
    let store = foreman.store().await;
    let blocker = hold_the_worker(&foreman).await;
    // Queued one after another while the worker is held, so their ages are known;
    // no header means the sync default, 10, which ties with the explicit 10 below
    // and, being older, goes first.
    let headers = [Some("-5"), None, Some("20"), Some("3"), Some("10")];
    let mut answers = Vec::new();
    for (i, priority) in headers.into_iter().enumerate() {
        let mut request = client
            .post(format!("{}/api/chat", foreman.url))
            .json(&chat_body(CHAT, &format!("job {i}"), false));
        if let Some(priority) = priority {
            request = request.header("X-Foreman-Priority", priority);
        }
        answers.push(tokio::spawn(async move {
            let response = request.send().await.unwrap();
            let status = response.status().as_u16();
            let id: JobId = response.headers()["x-foreman-job-id"]
                .to_str()
                .unwrap()
                .parse()
                .unwrap();
            // The answer ends only once the outcome is recorded; headers come earlier.
            response.bytes().await.unwrap();
            (status, id)
        }));
        let depth = i as u64 + 1;
        eventually(
            &format!("job {i} to be queued behind the blocker"),
            async || store.queue_depth().await.unwrap() == depth,
        )
        .await;
    }
    // Release the worker: a caller that hangs up cancels its running job.
    blocker.abort();
    let mut jobs = Vec::new();
    for answer in answers {
        let (status, id) = answer.await.unwrap();
        assert_eq!(status, 200);
        let job = recorded(&store, id).await;
        assert_eq!(job.state, JobState::Succeeded);
        jobs.push(job);
    }
    let priorities: Vec<i32> = jobs.iter().map(|job| job.priority).collect();
    assert_eq!(priorities, [-5, 10, 20, 3, 10]);
    let mut by_start: Vec<usize> = (0..jobs.len()).collect();
    by_start.sort_by_key(|&i| jobs[i].started_at.unwrap());
    assert_eq!(
        by_start,
        [2, 1, 4, 3, 0],
        "started in order of priority, then age"
    );
    for pair in by_start.windows(2) {
        assert!(
            jobs[pair[0]].started_at < jobs[pair[1]].started_at,
            "one job at a time"
        );
    }
    store.close().await;
    foreman.stop().await;
}

#[tokio::test]
async fn a_bad_priority_header_is_refused_without_a_job() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let generate = json!({"model": CHAT, "prompt": "hi", "stream": false});
    let chat = chat_body(CHAT, "hi", false);
    let cases = [
        ("/api/chat", &chat, "high"),
        ("/api/chat", &chat, "2.5"),
        ("/api/chat", &chat, "21"),
        ("/api/generate", &generate, "-21"),
        ("/api/generate", &generate, "99999999999"),
    ];
    for (route, body, priority) in cases {
        let response = client
            .post(format!("{}{route}", foreman.url))
            .header("X-Foreman-Priority", priority)
            .json(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{route} {priority}");
        assert_eq!(
            response.headers()["content-type"],
            "application/json; charset=utf-8"
        );
        let reply: Value = response.json().await.unwrap();
        let object = reply.as_object().unwrap();
        assert_eq!(object.len(), 1, "{reply}");
        let message = object["error"].as_str().unwrap();
        assert!(
            message.contains("X-Foreman-Priority")
                && message.contains(priority)
                && message.contains("from -20 to 20"),
            "{message}"
        );
    }
    let jobs = foreman.jobs().await;
    assert!(jobs.is_empty(), "{jobs:?}");
    assert_eq!(foreman.sim.stats().requests_total, 0);
    foreman.stop().await;
}

/// Work of a lower priority never unloads a model live traffic used within the
/// protection window: on a target of two places, low-priority chats of two other
/// models run one model after the other in the place live traffic leaves, and foreman
/// itself unloads the first of them for the second, so the target never picks its own
/// victim (it would have picked between the live model and that one).
#[tokio::test]
async fn low_priority_loads_never_unload_a_model_live_traffic_uses() {
    let (live, first, second) = (
        "llama3.2:3b,load=20ms,tps=4000",
        "qwen2.5:0.5b,load=20ms,tps=4000",
        "phi3:mini,load=20ms,tps=4000",
    );
    let foreman = TestForeman::start_targets(
        vec![("gpu", sim_with(&[live, first, second], 1, 2))],
        |_| {},
    )
    .await;
    let client = client();
    let chat = |model: &'static str, priority: &'static str| {
        let (client, url) = (client.clone(), foreman.url.clone());
        async move {
            client
                .post(format!("{url}/api/chat"))
                .header("X-Foreman-Priority", priority)
                .json(&chat_body(model, "hi", false))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }
    };
    assert_eq!(chat("llama3.2:3b", "10").await, 200);
    let low = (0..6).map(|i| {
        let model = if i % 2 == 0 {
            "qwen2.5:0.5b"
        } else {
            "phi3:mini"
        };
        chat(model, "-10")
    });
    let statuses = join_all(low).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let stats = foreman.sim.stats();
    let live_model = &stats.models["llama3.2:3b"];
    assert_eq!(
        (live_model.loads, live_model.unloads),
        (1, 0),
        "the live model stayed loaded"
    );
    // How many loads the low models take depends on how their requests interleave on
    // arrival; each of them is a load into a free place.
    assert!(stats.models["qwen2.5:0.5b"].loads >= 1 && stats.models["phi3:mini"].loads >= 1);
    assert_eq!(
        stats.swaps_total, 0,
        "foreman chose what the target unloaded"
    );
    foreman.stop().await;
}
