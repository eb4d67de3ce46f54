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
