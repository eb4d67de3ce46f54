//! Residency over HTTP: swaps under alternating and concurrent mixed-model load,
//! keep-alive expiry, `keep_alive: 0` unloading after each answer, and disconnects
//! freeing slots (the queue limit, reloads and memory are in `sched.rs`).

use std::time::Duration;

use futures::future::join_all;
use ollama_sim::{KeepAlive, ModelSpec, SimConfig};
use serde_json::{Value, json};

use crate::common::*;

fn two_models(load: &str, tps: &str) -> SimConfig {
    SimConfig {
        models: vec![
            ModelSpec::parse(&format!("llama3.2:3b,load={load},tps={tps}")).unwrap(),
            ModelSpec::parse(&format!("qwen2.5:0.5b,load={load},tps={tps}")).unwrap(),
        ],
        max_loaded: 1,
        ..SimConfig::default()
    }
}

async fn chat(client: &reqwest::Client, url: &str, model: &str, extra: Value) -> Value {
    let mut body =
        json!({"model": model, "messages": [{"role":"user","content":"hello"}], "stream": false});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let (status, _, text) = post(client, format!("{url}/api/chat"), body).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

#[tokio::test]
async fn alternating_requests_pay_a_swap_each_and_report_load_time() {
    let sim = start(two_models("150ms", "inf")).await;
    let client = client();
    for model in [CHAT, CHAT2, CHAT, CHAT2] {
        let reply = chat(&client, &sim.url(), model, json!({})).await;
        assert!(
            reply["load_duration"].as_u64().unwrap() >= 150_000_000,
            "each reply pays the load: {reply}"
        );
    }
    let warm = chat(&client, &sim.url(), CHAT2, json!({})).await;
    assert!(
        warm["load_duration"].as_u64().unwrap() < 150_000_000,
        "a warm model pays no load"
    );
    let stats = sim.stats();
    assert_eq!(stats.swaps_total, 3);
    assert_eq!(stats.loads_total, 4);
    assert_eq!(stats.unloads_total, 3);
    assert_eq!(stats.requests_total, 5);
    assert!(stats.load_time_ms_total >= 600);
    assert_eq!(stats.models[CHAT].swaps, 1);
    assert_eq!(stats.models[CHAT2].swaps, 2);
    assert_eq!(stats.loaded, vec![CHAT2.to_string()]);
    let events = sim.events();
    assert_eq!(events.iter().filter(|e| e.event == "loaded").count(), 4);
}

#[tokio::test]
async fn concurrent_mixed_load_never_exceeds_max_loaded() {
    let mut config = two_models("30ms", "2000");
    config
        .models
        .push(ModelSpec::parse("third:1b,load=30ms,tps=2000").unwrap());
    config.max_loaded = 2;
    config.num_parallel = 2;
    let sim = start(config).await;
    let client = client();
    let models = [CHAT, CHAT2, "third:1b"];
    let requests = (0..30).map(|i| {
        let (client, url) = (client.clone(), sim.url());
        async move { chat(&client, &url, models[i % 3], json!({})).await }
    });
    let replies = join_all(requests).await;
    assert_eq!(replies.len(), 30);
    let stats = sim.stats();
    assert_eq!(stats.requests_total, 30);
    assert_eq!(stats.in_flight, 0);
    assert_eq!(stats.waiting, 0);
    assert_eq!(
        stats.loads_total,
        stats.swaps_total + 2,
        "only the first two loads found free memory"
    );
    let mut resident = 0i64;
    let mut peak = 0i64;
    for event in sim.events() {
        match event.event {
            "loaded" => resident += 1,
            "unloaded" => resident -= 1,
            _ => {}
        }
        peak = peak.max(resident);
    }
    assert!(peak <= 2, "at most two models resident, saw {peak}");
}

#[tokio::test]
async fn keep_alive_expires_idle_models() {
    let mut config = two_models("10ms", "inf");
    config.max_loaded = 2;
    config.keep_alive = KeepAlive::Forever;
    let sim = start(config).await;
    let client = client();
    // Three seconds: the model must still be resident after the next chat and the
    // listing on a busy machine, and expire within `eventually`'s ten seconds.
    chat(&client, &sim.url(), CHAT, json!({"keep_alive": "3s"})).await;
    chat(&client, &sim.url(), CHAT2, json!({})).await;
    let ps: Value = client
        .get(format!("{}/api/ps", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ps["models"].as_array().unwrap().len(), 2);
    assert_eq!(
        ps["models"][0]["model"], CHAT2,
        "forever sorts first (latest expiry)"
    );
    assert!(
        ps["models"][0]["expires_at"].as_str().unwrap() > "2300",
        "forever is ~292 years ahead"
    );
    eventually("the 3s model to expire", async || {
        sim.stats().loaded == vec![CHAT2.to_string()]
    })
    .await;
    chat(&client, &sim.url(), CHAT2, json!({"keep_alive": 0})).await;
    assert!(
        sim.stats().loaded.is_empty(),
        "keep_alive 0 unloads when the request ends"
    );
}

#[tokio::test]
async fn a_disconnected_client_frees_its_slot() {
    let mut config = two_models("10ms", "20");
    // An answer of minutes: only the disconnect can end it within the test.
    config.reply_tokens = 100_000;
    let sim = start(config).await;
    let client = client();
    let response = client
        .post(format!("{}/api/chat", sim.url()))
        .json(&json!({"model": CHAT, "messages": [{"role":"user","content":"long"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    eventually("the stream to be in flight", async || {
        sim.stats().in_flight == 1
    })
    .await;
    drop(response);
    eventually("the slot to be released", async || {
        sim.stats().in_flight == 0
    })
    .await;
    let reply = tokio::time::timeout(
        Duration::from_secs(10),
        chat(
            &client,
            &sim.url(),
            CHAT,
            json!({"options": {"num_predict": 1}}),
        ),
    )
    .await
    .expect("the model is free again");
    assert_eq!(reply["eval_count"], 1);
}

/// sched.go `processCompleted`: a runner whose session duration is 0 unloads as soon as
/// its last request ends, so every request with `keep_alive: 0` pays a load.
#[tokio::test]
async fn keep_alive_zero_costs_a_load_for_every_request() {
    let mut config = two_models("10ms", "inf");
    config.keep_alive = KeepAlive::Forever;
    let sim = start(config).await;
    let client = client();
    for i in 1..=5 {
        chat(&client, &sim.url(), CHAT, json!({"keep_alive": 0})).await;
        let stats = sim.stats();
        assert!(stats.loaded.is_empty(), "unloaded after answer {i}");
        assert_eq!((stats.loads_total, stats.unloads_total), (i, i));
    }
    let stats = sim.stats();
    assert_eq!((stats.swaps_total, stats.reloads_total), (0, 0));
    assert_eq!(stats.models[CHAT].loads, 5);
}

/// The unload waits for the model's other requests: a `keep_alive: 0` answer that ends
/// while another request of the model runs leaves the model loaded, and the runner
/// keeps the zero (keep-alive is the latest request's), so it unloads when the other
/// request ends.
#[tokio::test]
async fn keep_alive_zero_waits_for_the_models_other_requests() {
    let mut config = two_models("10ms", "20");
    config.keep_alive = KeepAlive::Forever;
    config.num_parallel = 2;
    config.reply_tokens = 100_000;
    let sim = start(config).await;
    let client = client();
    let long = client
        .post(format!("{}/api/chat", sim.url()))
        .json(&json!({"model": CHAT, "messages": [{"role":"user","content":"long"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(long.status(), 200);
    eventually("the long answer to run", async || sim.stats().running == 1).await;
    chat(
        &client,
        &sim.url(),
        CHAT,
        json!({"keep_alive": 0, "options": {"num_predict": 1}}),
    )
    .await;
    let stats = sim.stats();
    assert_eq!(
        stats.loaded,
        vec![CHAT.to_string()],
        "the long answer still runs"
    );
    assert_eq!(stats.unloads_total, 0);
    drop(long);
    eventually("the model to unload after the long answer", async || {
        sim.stats().loaded.is_empty()
    })
    .await;
    let stats = sim.stats();
    assert_eq!((stats.loads_total, stats.unloads_total), (1, 1));
}
