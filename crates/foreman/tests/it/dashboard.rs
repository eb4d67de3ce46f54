//! The dashboard (`/ui`) in a real browser: headless Chromium opens the page of a
//! foreman with a token and two simulated targets after a small workload, with jobs
//! still running and queued, and the DOM its script rendered must show the targets,
//! what they have loaded, the queue and the finished jobs. Without the token, the page
//! must ask for one (its first call answered 401).
//!
//! With `DASHBOARD_SCREENSHOT=PATH` the test also saves a screenshot of the page
//! there (how `docs/dashboard.png` was made). Chromium is Debian's, installed by
//! `scripts/setup-browser.sh`.

use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::common::*;

const TOKEN: &str = "dashboard-test-token";

async fn submit(
    client: &reqwest::Client,
    foreman: &TestForeman,
    model: &str,
    text: &str,
) -> String {
    let body = json!({"kind": "chat", "request": {"model": model,
        "messages": [{"role": "user", "content": text}]}});
    let response = client
        .post(format!("{}/jobs", foreman.url))
        .bearer_auth(TOKEN)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    job["id"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn the_dashboard_renders_targets_loaded_models_queue_and_jobs_in_chromium() {
    let sim = || {
        sim_with(
            &[
                "llama3.2:3b,load=20ms,tps=4000",
                "qwen2.5:0.5b,load=20ms,tps=4000",
            ],
            1,
            1,
        )
    };
    let foreman = TestForeman::start_targets(vec![("gpu-a", sim()), ("gpu-b", sim())], |config| {
        config.token = Some(TOKEN.into());
    })
    .await;
    let client = client();

    // Finished work on both models.
    let mut finished = Vec::new();
    for index in 0..6 {
        let model = if index % 2 == 0 { CHAT } else { CHAT2 };
        finished.push(submit(&client, &foreman, model, &format!("finished {index}")).await);
    }
    for id in &finished {
        let response = client
            .get(format!("{}/jobs/{id}?wait=20s", foreman.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let job: Value = response.json().await.unwrap();
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    // Work in progress: both targets hold a job, and more waits.
    hold(&foreman.sim, true);
    hold(&foreman.more_sims[0], true);
    for index in 0..5 {
        let model = if index % 2 == 0 { CHAT } else { CHAT2 };
        submit(&client, &foreman, model, &format!("pending {index}")).await;
    }
    eventually("a job held at each target", async || {
        foreman.sim.stats().held == 1 && foreman.more_sims[0].stats().held == 1
    })
    .await;
    let status: Value = client
        .get(format!("{}/foreman/status", foreman.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let dom = chromium_dom(&format!("{}/ui#token={TOKEN}", foreman.url)).await;
    assert!(!dom.contains(r#"class="shown""#), "no token prompt: {dom}");
    for target in ["gpu-a", "gpu-b"] {
        assert!(
            dom.contains(&format!(r#"data-name="{target}""#)),
            "target {target}: {dom}"
        );
    }
    // What each target has loaded, and whether it runs there, as the status says:
    // each holds one job.
    for target in status["targets"].as_array().unwrap() {
        assert_eq!(target["running"], 1, "{status}");
        for loaded in target["loaded"].as_array().unwrap() {
            let key = loaded["key"].as_str().unwrap();
            let class = if loaded["running"] == 0 {
                "loaded-key"
            } else {
                "loaded-key running"
            };
            assert!(
                dom.contains(&format!(r#"class="{class}" data-key="{key}""#)),
                "{key} on {}: {dom}",
                target["name"]
            );
        }
    }
    for id in &finished {
        assert!(
            dom.contains(&format!(r#"data-job="{id}""#)),
            "job {id}: {dom}"
        );
    }
    for group in status["queue"].as_array().unwrap() {
        let model = group["model"].as_str().unwrap();
        assert!(
            dom.contains(&format!(r#"<tr data-model="{model}">"#)),
            "queue of {model}: {dom}"
        );
    }
    assert!(
        !status["queue"].as_array().unwrap().is_empty(),
        "jobs wait: {status}"
    );
    let loads = status["counters"]["loads"].as_u64().unwrap();
    assert!(
        dom.contains(&format!(r#"<b id="counter-loads">{loads}</b>"#)),
        "loads: {dom}"
    );
    assert!(
        dom.contains(r#"class="run""#),
        "the timeline shows runs: {dom}"
    );
    assert!(
        dom.contains(r#"class="load""#),
        "the timeline shows loads: {dom}"
    );

    if let Some(path) = std::env::var_os("DASHBOARD_SCREENSHOT") {
        screenshot(
            &format!("{}/ui#token={TOKEN}", foreman.url),
            Path::new(&path),
        )
        .await;
    }

    // Without the token, the page asks for it.
    let dom = chromium_dom(&format!("{}/ui", foreman.url)).await;
    assert!(
        dom.contains(r#"<form id="login" class="shown">"#),
        "token prompt: {dom}"
    );
    assert!(
        !dom.contains("data-name="),
        "no data without the token: {dom}"
    );

    hold(&foreman.sim, false);
    hold(&foreman.more_sims[0], false);
    foreman.stop().await;
}

fn chromium_command(profile: &Path) -> Command {
    let mut command = Command::new("chromium");
    command
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--no-proxy-server",
            // Virtual time runs the page's polls and waits for their fetches.
            "--virtual-time-budget=4000",
        ])
        .arg(format!("--user-data-dir={}", profile.display()))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

/// The DOM of `url` once its scripts ran.
async fn chromium_dom(url: &str) -> String {
    let profile = tempfile::tempdir().unwrap();
    let child = chromium_command(profile.path())
        .arg("--dump-dom")
        .arg(url)
        .spawn()
        .expect("chromium starts (scripts/setup-browser.sh installs it)");
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("chromium finishes within 90 s")
        .unwrap();
    let dom = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        dom.contains("</html>"),
        "chromium dumped no DOM ({}): {}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    dom
}

async fn screenshot(url: &str, path: &Path) {
    let profile = tempfile::tempdir().unwrap();
    let output = chromium_command(profile.path())
        .args(["--window-size=1280,900", "--hide-scrollbars"])
        .arg(format!("--screenshot={}", path.display()))
        .arg(url)
        .spawn()
        .expect("chromium starts")
        .wait_with_output()
        .await
        .unwrap();
    assert!(
        path.is_file(),
        "no screenshot at {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}
