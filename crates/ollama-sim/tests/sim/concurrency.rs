//! Concurrency proven through counters, never through timing: `running` and
//! `peak_in_flight` in `/sim/stats` show how many requests generated at once, per model
//! (at most `num_parallel`) and server-wide (at most `num_parallel` times
//! `max_loaded`), and what `POST /sim/reset` does to them.
//!
//! Each test lines its requests up with the `hold` fault, lifts it, waits (by polling,
//! with a deadline) for the slots to fill, and reads the peaks. The answers are minutes
//! long, so the requests stay running until their clients go away; how fast the machine
//! is changes nothing.

use ollama_sim::{Faults, FaultsUpdate, ModelSpec, SimConfig, SimHandle, StatsSnapshot};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::common::*;

/// Replies of 100 000 tokens at 40 tokens per second: only a disconnect ends them
/// within a test.
const LONG_REPLY_TOKENS: usize = 100_000;

/// Models that answer slowly, with the hold fault on from the start.
fn held_config(models: &[&str], num_parallel: usize, max_loaded: usize) -> SimConfig {
    SimConfig {
        models: models
            .iter()
            .map(|m| ModelSpec::parse(&format!("{m},load=10ms,tps=40")).unwrap())
            .collect(),
        num_parallel,
        max_loaded,
        reply_tokens: LONG_REPLY_TOKENS,
        faults: Faults {
            hold: true,
            ..Faults::default()
        },
        ..SimConfig::default()
    }
}

/// Starts a streamed chat that keeps its response (and so its slot, once it has one)
/// until the task is aborted.
fn start_stream(client: &reqwest::Client, url: &str, model: &str) -> JoinHandle<()> {
    let request = client
        .post(format!("{url}/api/chat"))
        .json(&json!({"model": model, "messages": [{"role":"user","content":"long"}]}));
    tokio::spawn(async move {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        std::future::pending::<()>().await;
        drop(response);
    })
}

fn lift_hold(sim: &SimHandle) {
    sim.set_faults(&FaultsUpdate {
        hold: Some(false),
        ..FaultsUpdate::default()
    })
    .unwrap();
}

/// Aborts the clients and waits until the simulator has let every request go.
async fn disconnect_all(sim: &SimHandle, streams: Vec<JoinHandle<()>>) {
    for stream in &streams {
        stream.abort();
    }
    eventually("every request to end", async || {
        let stats = sim.stats();
        stats.in_flight == 0 && stats.running == 0
    })
    .await;
}

async fn stats_json(client: &reqwest::Client, url: &str) -> Value {
    client
        .get(format!("{url}/sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

fn peaks(stats: &StatsSnapshot, model: &str) -> (u64, u64) {
    (stats.peak_in_flight, stats.models[model].peak_in_flight)
}

/// Eight requests at once for a model with four slots: four run, four wait for a
/// slot, and the peak is exactly four, during and after.
#[tokio::test]
async fn four_slots_cap_a_models_peak_at_four() {
    let sim = start(held_config(&[CHAT], 4, 1)).await;
    let (client, url) = (client(), sim.url());
    let streams: Vec<_> = (0..8).map(|_| start_stream(&client, &url, CHAT)).collect();
    eventually("all eight requests held", async || sim.stats().held == 8).await;
    assert_eq!(sim.stats().peak_in_flight, 0, "nothing runs while held");
    lift_hold(&sim);
    eventually("four running and four waiting for a slot", async || {
        let stats = sim.stats();
        stats.running == 4 && stats.waiting == 4
    })
    .await;
    let stats = sim.stats();
    assert_eq!(stats.in_flight, 8, "in_flight counts the slot waiters too");
    assert_eq!(stats.models[CHAT].running, 4);
    assert_eq!(peaks(&stats, CHAT), (4, 4));
    // The first four leave; the waiters take the freed slots, and the count stays
    // within the four slots throughout.
    disconnect_all(&sim, streams).await;
    let stats = sim.stats();
    assert_eq!(peaks(&stats, CHAT), (4, 4));
    assert_eq!(stats.loads_total, 1);
    let json = stats_json(&client, &url).await;
    assert_eq!(json["peak_in_flight"], 4);
    assert_eq!(json["running"], 0);
    assert_eq!(json["models"][CHAT]["peak_in_flight"], 4);
    assert_eq!(json["models"][CHAT]["running"], 0);
}

/// Two models resident side by side with two slots each: four requests run at once
/// server-wide, two per model, however many are sent. Started the way a library user
/// (foreman's `--simulate`) starts it.
#[tokio::test]
async fn two_models_with_two_slots_each_peak_at_four_server_wide() {
    let sim = ollama_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            num_parallel: 2,
            max_loaded: 2,
            ..held_config(&[CHAT, CHAT2], 1, 1)
        },
    )
    .await
    .expect("simulator starts");
    let (client, url) = (client(), sim.url());
    let streams: Vec<_> = [CHAT, CHAT2, CHAT, CHAT2, CHAT, CHAT2]
        .into_iter()
        .map(|model| start_stream(&client, &url, model))
        .collect();
    eventually("all six requests held", async || sim.stats().held == 6).await;
    lift_hold(&sim);
    eventually("two running per model, one waiting each", async || {
        let stats = sim.stats();
        stats.running == 4 && stats.waiting == 2
    })
    .await;
    let stats = sim.stats();
    assert_eq!(stats.loaded, vec![CHAT.to_string(), CHAT2.to_string()]);
    assert_eq!(stats.swaps_total, 0, "both fit");
    assert_eq!(stats.peak_in_flight, 4);
    for model in [CHAT, CHAT2] {
        assert_eq!(stats.models[model].running, 2, "{model}");
        assert_eq!(stats.models[model].peak_in_flight, 2, "{model}");
    }
    disconnect_all(&sim, streams).await;
    let stats = sim.stats();
    assert_eq!(stats.peak_in_flight, 4);
    assert_eq!(peaks(&stats, CHAT), (4, 2));
    assert_eq!(peaks(&stats, CHAT2), (4, 2));
}

/// `POST /sim/reset` restarts the peaks from the requests running at that moment, not
/// from zero: a request running across a reset still counts.
#[tokio::test]
async fn reset_restarts_the_peaks_from_the_running_requests() {
    let sim = start(held_config(&[CHAT], 4, 1)).await;
    lift_hold(&sim);
    let (client, url) = (client(), sim.url());
    let mut streams: Vec<_> = (0..3).map(|_| start_stream(&client, &url, CHAT)).collect();
    eventually("three running", async || sim.stats().running == 3).await;
    let reset = |client: reqwest::Client, url: String| async move {
        let response = client
            .post(format!("{url}/sim/reset"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    };
    reset(client.clone(), url.clone()).await;
    let json = stats_json(&client, &url).await;
    assert_eq!(json["requests_total"], 0, "the counters are zeroed");
    assert_eq!(
        (&json["running"], &json["peak_in_flight"]),
        (&json!(3), &json!(3))
    );
    assert_eq!(json["models"][CHAT]["peak_in_flight"], 3);

    let leaving = streams.split_off(1);
    disconnect_some(&sim, leaving, 1).await;
    assert_eq!(
        peaks(&sim.stats(), CHAT),
        (3, 3),
        "a peak stays until reset"
    );
    reset(client.clone(), url.clone()).await;
    assert_eq!(peaks(&sim.stats(), CHAT), (1, 1));

    disconnect_all(&sim, streams).await;
    assert_eq!(peaks(&sim.stats(), CHAT), (1, 1));
    reset(client.clone(), url.clone()).await;
    assert_eq!(peaks(&sim.stats(), CHAT), (0, 0));
    let (status, _, body) = post(
        &client,
        format!("{url}/api/chat"),
        json!({"model": CHAT, "messages": [{"role":"user","content":"x"}], "stream": false,
               "options": {"num_predict": 1}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(peaks(&sim.stats(), CHAT), (1, 1));
}

/// Aborts some clients and waits until `still_running` requests are left.
async fn disconnect_some(sim: &SimHandle, streams: Vec<JoinHandle<()>>, still_running: u64) {
    for stream in &streams {
        stream.abort();
    }
    eventually("the aborted requests to end", async || {
        sim.stats().running == still_running
    })
    .await;
}
