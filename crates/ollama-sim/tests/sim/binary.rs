//! The `ollama-sim` binary, as a newcomer runs it: two models, one resident at a
//! time, A,B,A,B requests, three swaps, and the load time in each reply; and the
//! slot and residency flags (`--num-parallel`, `--max-loaded`) seen through the peaks.

use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;

#[tokio::test]
async fn the_binary_counts_three_swaps_for_abab() {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ollama-sim"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--model",
            "llama3.2:3b,load=200ms,tps=500",
            "--model",
            "qwen2.5:0.5b,load=100ms,tps=500",
            "--max-loaded",
            "1",
        ])
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
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
    for (model, load_ns) in [
        (CHAT, 200_000_000u64),
        (CHAT2, 100_000_000),
        (CHAT, 200_000_000),
        (CHAT2, 100_000_000),
    ] {
        let (status, _, body) = post(
            &client,
            format!("{url}/api/generate"),
            json!({"model": model, "prompt": "hello", "stream": false}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        let reply: Value = serde_json::from_str(&body).unwrap();
        assert!(
            reply["load_duration"].as_u64().unwrap() >= load_ns,
            "{model}: {reply}"
        );
    }
    let stats: Value = client
        .get(format!("{url}/sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["swaps_total"], 3);
    assert_eq!(stats["loads_total"], 4);
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

#[tokio::test]
async fn the_binary_rejects_bad_flags_with_one_clear_line() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ollama-sim"))
        .args(["--model", "llama3.2,speed=fast"])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("unknown option \"speed=fast\""), "{stderr}");
}

/// Starts the binary on a free port and returns it with the URL its banner names.
async fn spawn_binary(args: &[&str]) -> (tokio::process::Child, String) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ollama-sim"))
        .args(["--addr", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
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
    (child, url)
}

/// `--num-parallel 2 --max-loaded 2`: two models resident, two requests running on
/// each, so `/sim/stats` shows a server-wide peak of four.
#[tokio::test]
async fn the_binary_takes_num_parallel_and_max_loaded() {
    let (mut child, url) = spawn_binary(&[
        "--model",
        "llama3.2:3b,load=10ms,tps=40",
        "--model",
        "qwen2.5:0.5b,load=10ms,tps=40",
        "--num-parallel",
        "2",
        "--max-loaded",
        "2",
        "--reply-tokens",
        "100000",
    ])
    .await;
    let client = client();
    let mut streams = Vec::new();
    for model in [CHAT, CHAT2, CHAT, CHAT2, CHAT] {
        let request = client
            .post(format!("{url}/api/chat"))
            .json(&json!({"model": model, "messages": [{"role":"user","content":"long"}]}));
        streams.push(tokio::spawn(async move {
            let response = request.send().await.unwrap();
            std::future::pending::<()>().await;
            drop(response);
        }));
    }
    let stats_url = format!("{url}/sim/stats");
    let stats = async || -> Value {
        client
            .get(&stats_url)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    eventually("four running and one waiting", async || {
        let stats = stats().await;
        stats["running"] == 4 && stats["waiting"] == 1
    })
    .await;
    let stats = stats().await;
    assert_eq!(stats["peak_in_flight"], 4, "{stats}");
    assert_eq!(stats["models"][CHAT]["peak_in_flight"], 2);
    assert_eq!(stats["models"][CHAT2]["peak_in_flight"], 2);
    assert_eq!(stats["swaps_total"], 0, "two models fit");
    for stream in streams {
        stream.abort();
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
