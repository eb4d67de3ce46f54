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
    let foreman = TestForeman::start(two_models_one_slot()).await;
    let client = client();
    let statuses = send_interleaved(&client, &foreman.url, 40).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    let through_foreman = foreman.sim.stats();
    assert_eq!(through_foreman.requests_total, 40);
    assert!(
        through_foreman.swaps_total <= 3,
        "foreman drained by model: {} swaps",
        through_foreman.swaps_total
    );

    let direct = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), two_models_one_slot())
        .await
        .unwrap();
    let statuses = send_interleaved(&client, &direct.url(), 40).await;
    assert!(statuses.iter().all(|s| *s == 200));
    let straight = direct.stats();
    eprintln!(
        "40 interleaved requests: {} swaps through foreman, {} straight to the target",
        through_foreman.swaps_total, straight.swaps_total
    );
    assert!(
        straight.swaps_total >= 4 * through_foreman.swaps_total.max(1),
        "the same traffic sent straight to the target swaps far more: {} vs {}",
        straight.swaps_total,
        through_foreman.swaps_total
    );
    direct.shutdown().await;
    foreman.stop().await;
}

#[tokio::test]
async fn no_job_waits_past_the_bound_for_draining() {
    let sim = SimConfig {
        models: vec![
            ModelSpec::parse("llama3.2:3b,load=20ms,tps=400").unwrap(),
            ModelSpec::parse("qwen2.5:0.5b,load=20ms,tps=400").unwrap(),
        ],
        max_loaded: 1,
        ..SimConfig::default()
    };
    let foreman =
        TestForeman::start_with(sim, |config| config.max_wait = Duration::from_millis(300)).await;
    let client = client();
    let url = foreman.url.clone();
    // A steady stream of model A that would keep the worker draining A forever.
    let stream_of_a = tokio::spawn({
        let (client, url) = (client.clone(), url.clone());
        async move {
            let mut pending = Vec::new();
            for i in 0..40 {
                let (client, url) = (client.clone(), url.clone());
                pending.push(tokio::spawn(async move {
                    post(
                        &client,
                        format!("{url}/api/chat"),
                        &chat_body(CHAT, &format!("a{i}"), false),
                    )
                    .await;
                    tokio::time::Instant::now()
                }));
                tokio::time::sleep(Duration::from_millis(25)).await;
            }
            join_all(pending)
                .await
                .into_iter()
                .map(|r| r.unwrap())
                .collect::<Vec<_>>()
        }
    });
    eventually("model A to be draining", async || {
        foreman.sim.stats().in_flight == 1
    })
    .await;
    let (status, _, body) = post(
        &client,
        format!("{url}/api/chat"),
        &chat_body(CHAT2, "b", false),
    )
    .await;
    let b_done = tokio::time::Instant::now();
    assert_eq!(status, 200, "{body}");
    let a_done = stream_of_a.await.unwrap();
    let a_after_b = a_done.iter().filter(|t| **t > b_done).count();
    assert!(
        a_after_b >= 5,
        "B ran before the A stream ended ({a_after_b} A jobs finished after it)"
    );
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["done"], true);
    foreman.stop().await;
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
    let blocker = tokio::spawn({
        let (client, url) = (client.clone(), foreman.url.clone());
        async move {
            post(
                &client,
                format!("{url}/api/chat"),
                &chat_body(BLOCKER, "hold the worker", false),
            )
            .await
        }
    });
    eventually("the blocker to run", async || {
        foreman.sim.stats().in_flight == 1
    })
    .await;
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
