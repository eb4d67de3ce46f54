//! A real `foreman` process killed with SIGKILL while jobs are queued and running,
//! then restarted on the same database: every accepted job still finishes.

use std::process::Stdio;
use std::time::Duration;

use foreman_store::{JobState, ListParams, Store};
use ollama_sim::{ModelSpec, SimConfig};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::common::*;

async fn start_foreman(sim_url: &str, db: &str) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_foreman"))
        .arg("serve")
        .env("FOREMAN_ADDR", "127.0.0.1:0")
        .env("FOREMAN_OLLAMA_URL", sim_url)
        .env("FOREMAN_DATABASE", db)
        .env(
            "FOREMAN_DATA_DIR",
            std::path::Path::new(db).with_file_name("data"),
        )
        .env("FOREMAN_POLL_INTERVAL", "200ms")
        .env("FOREMAN_RETRY_BASE", "50ms")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("foreman starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the banner arrives")
        .unwrap()
        .expect("a banner line");
    let url = banner
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .expect("the banner names the address")
        .to_string();
    (child, url)
}

#[tokio::test]
async fn sigkill_with_jobs_queued_and_running_loses_nothing() {
    let sim = ollama_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            models: vec![
                ModelSpec::parse("llama3.2:3b,load=50ms,tps=100").unwrap(),
                ModelSpec::parse("qwen2.5:0.5b,load=50ms,tps=100").unwrap(),
            ],
            max_loaded: 1,
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foreman.db");
    let db = db.to_str().unwrap();
    let (mut first, url) = start_foreman(&sim.url(), db).await;
    let client = client();
    let n_jobs = 12;
    let callers: Vec<_> = (0..n_jobs)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            let model = if i % 2 == 0 { CHAT } else { CHAT2 };
            tokio::spawn(async move {
                client
                    .post(format!("{url}/api/chat"))
                    .json(&chat_body(model, &format!("job {i}"), false))
                    .send()
                    .await
            })
        })
        .collect();
    let store = Store::open(db).await.unwrap();
    let all = || ListParams {
        limit: 100,
        ..Default::default()
    };
    eventually("every job accepted and one running", async || {
        let jobs = store.list(all()).await.unwrap();
        jobs.len() == n_jobs && jobs.iter().any(|j| j.state == JobState::Running)
    })
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    for caller in callers {
        // The callers lose their connections; their jobs must not be lost.
        let _ = caller.await.unwrap();
    }
    let before = store.list(all()).await.unwrap();
    assert!(
        before.iter().any(|j| j.state == JobState::Running),
        "a job was cut off while running"
    );
    assert!(
        before.iter().any(|j| j.state == JobState::Queued),
        "jobs were still queued"
    );

    let (mut second, _) = start_foreman(&sim.url(), db).await;
    eventually("every job to finish after the restart", async || {
        store
            .list(all())
            .await
            .unwrap()
            .iter()
            .all(|j| j.state == JobState::Succeeded)
    })
    .await;
    let after = store.list(all()).await.unwrap();
    assert_eq!(after.len(), n_jobs, "no job lost, none duplicated");
    assert!(after.iter().all(|j| j.result.is_some()));
    second.start_kill().unwrap();
    second.wait().await.unwrap();
    store.close().await;
}
