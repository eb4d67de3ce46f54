//! Drain-by-model and the starvation bound, measured by the simulator's swap counter.

use std::time::Duration;

use futures::future::join_all;
use ollama_sim::{ModelSpec, SimConfig};
use serde_json::Value;

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
async fn interleaved_requests_drain_by_model() {
    let mut sim = two_models_one_slot();
    // A long first job, so the interleaved ones all queue up behind it.
    sim.models
        .push(ModelSpec::parse("blocker:1b,load=10ms,tps=30").unwrap());
    let foreman = TestForeman::start(sim).await;
    let client = client();
    let blocker = tokio::spawn({
        let (client, url) = (client.clone(), foreman.url.clone());
        async move {
            post(
                &client,
                format!("{url}/api/chat"),
                &chat_body("blocker:1b", "hold", false),
            )
            .await
            .0
        }
    });
    eventually("the blocker to run", async || {
        foreman.sim.stats().in_flight == 1
    })
    .await;
    let statuses = send_interleaved(&client, &foreman.url, 20).await;
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
    assert_eq!(blocker.await.unwrap(), 200);
    let stats = foreman.sim.stats();
    assert_eq!(stats.requests_total, 21);
    // blocker -> A (swap) -> B (swap): one switch per model.
    assert!(
        stats.swaps_total <= 2,
        "foreman swapped {} times",
        stats.swaps_total
    );
    assert_eq!(stats.models[CHAT].loads, 1);
    assert_eq!(stats.models[CHAT2].loads, 1);

    let direct = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), two_models_one_slot())
        .await
        .unwrap();
    let statuses = send_interleaved(&client, &direct.url(), 20).await;
    assert!(statuses.iter().all(|s| *s == 200));
    assert!(
        direct.stats().swaps_total > stats.swaps_total,
        "sent straight to the target the same traffic swaps more: {} vs {}",
        direct.stats().swaps_total,
        stats.swaps_total
    );
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
