//! The simulator's scheduler against Ollama's (`server/sched.go`, `server/routes.go`
//! of ollama/ollama v0.33.0-rc2): which requests the queue limit counts, reloads on
//! changed runner options, where `load_duration` ends, and residency by memory.

use std::time::Duration;

use ollama_sim::{KeepAlive, ModelSpec, SimConfig};
use serde_json::{Value, json};

use crate::common::*;

/// A chat model with a long context, so `num_ctx` changes are not all clamped.
const LONG: &str = "long:8b";

fn config(models: &[&str]) -> SimConfig {
    SimConfig {
        models: models
            .iter()
            .map(|m| ModelSpec::parse(m).unwrap())
            .collect(),
        max_loaded: 1,
        keep_alive: KeepAlive::Forever,
        ..SimConfig::default()
    }
}

async fn chat(client: &reqwest::Client, url: &str, model: &str, extra: Value) -> Value {
    let mut body =
        json!({"model": model, "messages": [{"role":"user","content":"hi"}], "stream": false});
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    let (status, _, text) = post(client, format!("{url}/api/chat"), body).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// Starts a streamed chat whose answer takes minutes (with `long_replies`): it holds
/// a slot of `model` until the returned response is dropped.
async fn hold_slot(client: &reqwest::Client, url: &str, model: &str) -> reqwest::Response {
    let response = client
        .post(format!("{url}/api/chat"))
        .json(&json!({"model": model, "messages": [{"role":"user","content":"long"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
}

/// Replies of 100 000 tokens unless `num_predict` caps them.
fn long_replies(mut config: SimConfig) -> SimConfig {
    config.reply_tokens = 100_000;
    config
}

async fn ps(client: &reqwest::Client, url: &str) -> Vec<Value> {
    let body: Value = client
        .get(format!("{url}/api/ps"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    body["models"].as_array().unwrap().clone()
}

fn ps_model<'a>(models: &'a [Value], name: &str) -> &'a Value {
    models
        .iter()
        .find(|m| m["model"] == name)
        .unwrap_or_else(|| panic!("{name} not in /api/ps: {models:?}"))
}

/// sched.go `InitScheduler` makes `pendingReqCh` a channel of `OLLAMA_MAX_QUEUE`, and
/// `getRunner` sends to it (non-blocking, `ErrMaxQueue` when full) only when the model
/// is not loaded or `needsReload`; a request for a loaded runner goes straight to
/// `useLoadedRunner` and then waits for a slot without limit. `processPending` takes
/// the request it works on out of the channel, so one load plus `max_queue` may wait.
#[tokio::test]
async fn max_queue_counts_only_requests_waiting_for_a_load() {
    let mut sim_config = long_replies(config(&[
        "llama3.2:3b,load=10ms,tps=40",
        "qwen2.5:0.5b,load=10ms",
    ]));
    sim_config.max_queue = 1;
    let sim = start(sim_config).await;
    let (client, url) = (client(), sim.url());
    let first = hold_slot(&client, &url, CHAT).await;
    eventually("the first request to hold the slot", async || {
        sim.stats().in_flight == 1
    })
    .await;
    let short = json!({"options": {"num_predict": 1}});
    let spawn_chat = |model: &'static str| {
        let (client, url, short) = (client.clone(), url.clone(), short.clone());
        tokio::spawn(async move { chat(&client, &url, model, short).await })
    };
    let slot_waiters: Vec<_> = (0..4).map(|_| spawn_chat(CHAT)).collect();
    eventually("four slot waiters", async || sim.stats().waiting == 4).await;
    assert_eq!(
        sim.stats().busy_rejections_total,
        0,
        "slot waiters never 503"
    );
    assert_eq!(sim.stats().queued_for_load, 0);
    // qwen must wait for llama3.2 to unload: one load worked on, one queued, one 503.
    let load_waiters: Vec<_> = (0..2).map(|_| spawn_chat(CHAT2)).collect();
    eventually("a load worked on and one queued", async || {
        let stats = sim.stats();
        stats.waiting == 6 && stats.queued_for_load == 1
    })
    .await;
    let (status, _, body) = post(
        &client,
        format!("{url}/api/chat"),
        json!({"model": CHAT2, "messages": [{"role":"user","content":"one more"}], "stream": false}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "server busy, please try again.  maximum pending requests exceeded"})
    );
    assert_eq!(sim.stats().busy_rejections_total, 1);
    assert_eq!(sim.stats().models[CHAT2].busy_rejections, 1);
    drop(first);
    for waiter in slot_waiters.into_iter().chain(load_waiters) {
        assert_eq!(waiter.await.unwrap()["eval_count"], 1);
    }
    assert_eq!(sim.stats().queued_for_load, 0);
}

/// sched.go `needsReload` compares the runner options (`api.Runner`: num_ctx clamped
/// to the training context by `effectiveContext`, num_batch, num_gpu unless the request
/// gives -1, main_gpu, use_mmap, num_thread) with the request's; a difference sends the
/// request through `processPending`, which expires the runner and loads the model
/// again. Sampling options never reload. `/api/ps` shows the runner's
/// `ContextLength()` (`loadedModels`).
#[tokio::test]
async fn changed_runner_options_reload_the_model() {
    let sim = start(config(&[&format!("{LONG},load=10ms,tps=inf,ctx=32768")])).await;
    let (client, url) = (client(), sim.url());
    let steps = [
        (json!({}), false, 4096),
        (
            json!({"temperature": 0.1, "top_k": 3, "seed": 7}),
            false,
            4096,
        ),
        (json!({"num_ctx": 4096}), false, 4096),
        (json!({"num_ctx": 8192}), true, 8192),
        (json!({"num_ctx": 8192, "num_gpu": -1}), false, 8192),
        (json!({"num_ctx": 100_000}), true, 32768),
        (json!({"num_ctx": 50_000}), false, 32768),
        (json!({}), true, 4096),
        (json!({"num_batch": 256}), true, 4096),
        (json!({"num_batch": 256, "num_gpu": 99}), true, 4096),
        (json!({"num_batch": 256}), false, 4096),
        (json!({"main_gpu": 1}), true, 4096),
        (json!({"use_mmap": false}), true, 4096),
        (json!({"num_thread": 4}), true, 4096),
        (json!({"num_thread": 4}), false, 4096),
    ];
    let mut reloads = 0;
    for (options, reload, context_length) in steps {
        chat(&client, &url, LONG, json!({"options": options})).await;
        reloads += u64::from(reload);
        let stats = sim.stats();
        assert_eq!(stats.reloads_total, reloads, "after {options}");
        assert_eq!(stats.models[LONG].reloads, reloads);
        assert_eq!(stats.loads_total, reloads + 1, "a reload is a load");
        assert_eq!(
            stats.unloads_total, reloads,
            "each reload unloaded the old runner"
        );
        assert_eq!(stats.swaps_total, 0, "a reload evicts no other model");
        let models = ps(&client, &url).await;
        assert_eq!(models.len(), 1);
        assert_eq!(
            ps_model(&models, LONG)["context_length"],
            context_length,
            "after {options}"
        );
    }
    let (status, _, body) = post(
        &client,
        format!("{url}/api/chat"),
        json!({"model": LONG, "messages": [{"role":"user","content":"x"}], "options": {"num_ctx": "big"}}),
    )
    .await;
    assert_eq!(
        (status, body.as_str()),
        (
            500,
            r#"{"error":"option \"num_ctx\" must be of type integer"}"#
        ),
        "api/types.go Options.FromMap"
    );
}

/// sched.go `processPending`: a runner that `needsReload` is expired (session
/// duration 0) and the scheduler waits on `unloadedCh`, which comes only once the
/// runner's `refCount` is 0 (`processCompleted`): the reload waits for the requests
/// in flight on the old runner.
#[tokio::test]
async fn a_reload_waits_for_the_old_runners_requests() {
    let mut sim_config = long_replies(config(&[&format!("{LONG},load=10ms,tps=40,ctx=32768")]));
    sim_config.num_parallel = 2;
    let sim = start(sim_config).await;
    let (client, url) = (client(), sim.url());
    let first = hold_slot(&client, &url, LONG).await;
    eventually("the first request in flight", async || {
        sim.stats().in_flight == 1
    })
    .await;
    let reloading = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            chat(
                &client,
                &url,
                LONG,
                json!({"options": {"num_ctx": 8192, "num_predict": 1}}),
            )
            .await
        })
    };
    eventually("the reload to be worked on", async || {
        sim.stats().waiting == 1
    })
    .await;
    // A free slot on the old runner does not let it through: its options differ.
    assert_eq!(sim.stats().reloads_total, 0);
    assert_eq!(sim.stats().unloads_total, 0);
    assert_eq!(
        ps_model(&ps(&client, &url).await, LONG)["context_length"],
        4096
    );
    drop(first);
    assert_eq!(reloading.await.unwrap()["eval_count"], 1);
    let stats = sim.stats();
    assert_eq!((stats.reloads_total, stats.loads_total), (1, 2));
    assert_eq!(
        ps_model(&ps(&client, &url).await, LONG)["context_length"],
        8192
    );
}

/// routes.go `ChatHandler`: `checkpointLoaded` is taken when `scheduleRunner` returns,
/// and `LoadDuration = checkpointLoaded - checkpointStart`; the slot is taken later,
/// inside the runner's `Completion` (its semaphore), so a slot wait shows only in
/// `TotalDuration`.
#[tokio::test]
async fn load_duration_ends_when_the_request_is_scheduled() {
    let sim = start(long_replies(config(&["llama3.2:3b,load=10ms,tps=40"]))).await;
    let (client, url) = (client(), sim.url());
    let first = hold_slot(&client, &url, CHAT).await;
    eventually("the first request in flight", async || {
        sim.stats().in_flight == 1
    })
    .await;
    let waiter = {
        let (client, url) = (client.clone(), url.clone());
        tokio::spawn(async move {
            chat(&client, &url, CHAT, json!({"options": {"num_predict": 1}})).await
        })
    };
    eventually("the second request to wait for the slot", async || {
        sim.stats().waiting == 1
    })
    .await;
    // The waiter was scheduled before this point; everything after is slot wait.
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(first);
    let reply = waiter.await.unwrap();
    let load = reply["load_duration"].as_u64().unwrap();
    let total = reply["total_duration"].as_u64().unwrap();
    assert!(
        load + 2_000_000_000 <= total,
        "the two seconds of slot wait are in total_duration only: {reply}"
    );
}

/// 24 GB of VRAM, Ollama's 3 models per GPU: the embedder loads beside the chat model
/// (sched.go `processPending` loads when `load` finds the model fits), so `/api/embed`
/// no longer evicts it.
#[tokio::test]
async fn an_embedder_sits_beside_a_chat_model() {
    let mut sim_config = config(&[
        "qwen2.5:7b,load=10ms,tps=inf,size=4.7GB",
        "nomic-embed-text,embed,load=10ms",
    ]);
    sim_config.vram = Some(24_000_000_000);
    sim_config.max_loaded = 3;
    let sim = start(sim_config).await;
    let (client, url) = (client(), sim.url());
    chat(&client, &url, "qwen2.5:7b", json!({})).await;
    let (status, _, body) = post(
        &client,
        format!("{url}/api/embed"),
        json!({"model": EMBED, "input": "hello"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let stats = sim.stats();
    assert_eq!((stats.loads_total, stats.swaps_total), (2, 0));
    let models = ps(&client, &url).await;
    assert_eq!(models.len(), 2);
    let qwen = ps_model(&models, "qwen2.5:7b");
    assert_eq!(
        (&qwen["size"], &qwen["size_vram"]),
        (&json!(4_700_000_000u64), &json!(4_700_000_000u64))
    );
    let embedder = ps_model(&models, "nomic-embed-text:latest");
    assert_eq!(embedder["size_vram"], 274_000_000);
}

/// sched.go `load`: a model must fit in 80% of the free VRAM beside loaded models,
/// else `findRunnerToUnload` picks a victim: runners sorted by session duration
/// (`ByDurationAndName`), the first idle one. Not the least recently used.
#[tokio::test]
async fn eviction_needs_room_and_picks_the_shortest_keep_alive() {
    let mut sim_config = config(&[
        "alpha:7b,load=10ms,tps=inf,size=4.7GB",
        "beta:7b,load=10ms,tps=inf,size=4.7GB",
        "nomic-embed-text,embed,load=10ms",
    ]);
    sim_config.vram = Some(10_000_000_000);
    sim_config.max_loaded = 3;
    let sim = start(sim_config).await;
    let (client, url) = (client(), sim.url());
    let (status, _, body) = post(
        &client,
        format!("{url}/api/embed"),
        json!({"model": EMBED, "input": "x", "keep_alive": "10m"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // alpha is used last, with the shorter keep-alive.
    chat(&client, &url, "alpha:7b", json!({"keep_alive": "5m"})).await;
    assert_eq!(sim.stats().swaps_total, 0, "5 GB used, alpha fitted");
    // beta (4.7 GB) is within the 5.03 GB left but not within 80% of it.
    chat(&client, &url, "beta:7b", json!({})).await;
    let stats = sim.stats();
    assert_eq!((stats.loads_total, stats.swaps_total), (3, 1));
    assert_eq!(
        stats.models["alpha:7b"].unloads, 1,
        "the shortest keep-alive went"
    );
    assert_eq!(
        stats.loaded,
        vec!["beta:7b".to_string(), "nomic-embed-text:latest".to_string()]
    );
}

/// sched.go `processPending` loads the first model even when it does not fit
/// (`loadedCount == 0`, `requireFull` false): it is partly offloaded, so `/api/ps`
/// shows less `size_vram` than `size`. `--max-loaded` stays a count limit.
#[tokio::test]
async fn a_model_bigger_than_vram_loads_alone_and_the_count_still_limits() {
    let mut sim_config = config(&[
        "big:70b,load=10ms,tps=inf,size=40GB",
        "alpha:1b,load=10ms,tps=inf",
        "beta:1b,load=10ms,tps=inf",
        "gamma:1b,load=10ms,tps=inf",
    ]);
    sim_config.vram = Some(24_000_000_000);
    sim_config.max_loaded = 2;
    let sim = start(sim_config).await;
    let (client, url) = (client(), sim.url());
    chat(&client, &url, "big:70b", json!({})).await;
    let models = ps(&client, &url).await;
    let big = ps_model(&models, "big:70b");
    assert_eq!(
        (&big["size"], &big["size_vram"]),
        (&json!(40_000_000_000u64), &json!(24_000_000_000u64))
    );
    chat(&client, &url, "alpha:1b", json!({})).await;
    assert_eq!(
        sim.stats().loaded,
        vec!["alpha:1b".to_string()],
        "no VRAM left beside big"
    );
    chat(&client, &url, "beta:1b", json!({})).await;
    chat(&client, &url, "gamma:1b", json!({})).await;
    let stats = sim.stats();
    assert_eq!(
        stats.loaded.len(),
        2,
        "two small models fit, the count allows two"
    );
    assert_eq!(stats.swaps_total, 2);
}

/// The flags as a user gives them: `--vram 24GB` alone makes the count limit Ollama's
/// 3 per GPU (`defaultModelsPerGPU`), and sizes come from `size=` or the name's tag.
#[tokio::test]
async fn the_binary_takes_vram_and_defaults_to_three_models() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ollama-sim"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--model",
            "qwen2.5:7b,load=10ms,tps=inf,size=4.7GB",
            "--model",
            "llama3.2:3b,load=10ms,tps=inf",
            "--model",
            "nomic-embed-text,embed,load=10ms",
            "--vram",
            "24GB",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let stdout = child.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let banner = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the banner arrives")
        .unwrap()
        .expect("a banner line");
    let url = banner
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .expect("the banner names the URL")
        .to_string();
    let client = client();
    chat(&client, &url, "qwen2.5:7b", json!({})).await;
    chat(&client, &url, CHAT, json!({})).await;
    let (status, _, body) = post(
        &client,
        format!("{url}/api/embed"),
        json!({"model": EMBED, "input": "x"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let models = ps(&client, &url).await;
    assert_eq!(models.len(), 3, "three fit in 24 GB: {models:?}");
    assert_eq!(
        ps_model(&models, CHAT)["size"],
        1_818_750_000u64,
        "3B at Q4_K_M"
    );
    let stats: Value = client
        .get(format!("{url}/sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (stats["loads_total"].as_u64(), stats["swaps_total"].as_u64()),
        (Some(3), Some(0))
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
