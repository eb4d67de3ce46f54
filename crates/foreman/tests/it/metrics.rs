//! `/metrics`, `/foreman/status` and `foreman status` after a known workload: twelve
//! jobs over two models, interleaved, on a target that holds one model at a time. The
//! Prometheus page is parsed by the official Python client's parser
//! (`tests/python/parse_metrics.py`), and its numbers are checked against the
//! workload and against what the simulator counted.

use std::collections::BTreeMap;
use std::process::Stdio;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::Engine as _;

use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

use crate::common::*;

const TOKEN: &str = "metrics-test-token";
/// Jobs per model.
const PER_MODEL: usize = 6;

/// One sample: its name, labels and value.
type Sample = (String, BTreeMap<String, String>, f64);

/// A family: its type and samples.
type Family = (String, Vec<Sample>);

/// Parsed families by name.
struct Families(BTreeMap<String, Family>);

impl Families {
    /// The family of the metric `name`: the parser names a counter's family without
    /// its `_total`.
    fn family(&self, name: &str) -> &Family {
        self.0
            .get(name)
            .or_else(|| self.0.get(name.strip_suffix("_total")?))
            .unwrap_or_else(|| panic!("no family {name}"))
    }

    fn samples(&self, family: &str) -> &[Sample] {
        &self.family(family).1
    }

    fn kind(&self, family: &str) -> &str {
        &self.family(family).0
    }

    /// The value of the sample `name` with exactly these labels.
    fn value(&self, family: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
        let wanted: BTreeMap<String, String> = labels
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.samples(family)
            .iter()
            .find(|(sample, labels, _)| sample == name && *labels == wanted)
            .unwrap_or_else(|| panic!("no sample {name}{labels:?}"))
            .2
    }

    /// The sum of every sample `name` of the family.
    fn sum(&self, family: &str, name: &str) -> f64 {
        self.samples(family)
            .iter()
            .filter(|(sample, _, _)| sample == name)
            .map(|(_, _, value)| value)
            .sum()
    }
}

/// Runs the page through the Prometheus parser; panics with the parser's reason when
/// the page is not valid.
async fn parse(page: &str) -> Families {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-python.sh",
        python.display()
    );
    let mut child = tokio::process::Command::new(python)
        .arg(root.join("tests/python/parse_metrics.py"))
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python starts");
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(page.as_bytes()).await.unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "the Prometheus parser refused the page: {}\n{page}",
        String::from_utf8_lossy(&output.stderr)
    );
    let parsed: Value = serde_json::from_slice(&output.stdout).unwrap();
    let mut families = BTreeMap::new();
    for (name, family) in parsed.as_object().unwrap() {
        let samples = family["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|sample| {
                let labels = sample[1]
                    .as_object()
                    .unwrap()
                    .iter()
                    .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
                    .collect();
                (
                    sample[0].as_str().unwrap().to_string(),
                    labels,
                    sample[2].as_f64().unwrap(),
                )
            })
            .collect();
        families.insert(
            name.clone(),
            (family["type"].as_str().unwrap().to_string(), samples),
        );
    }
    Families(families)
}

async fn scrape(client: &reqwest::Client, url: &str, token: Option<&str>) -> (u16, String, String) {
    let mut request = client.get(format!("{url}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// Twelve chat jobs, A B A B ..., submitted while the target holds the first one, so
/// that all the rest wait together.
async fn interleaved_workload(foreman: &TestForeman, client: &reqwest::Client) -> Vec<String> {
    hold(&foreman.sim, true);
    let mut ids = Vec::new();
    for index in 0..PER_MODEL * 2 {
        let model = if index % 2 == 0 { CHAT } else { CHAT2 };
        let body = json!({"kind": "chat", "request": {"model": model,
            "messages": [{"role": "user", "content": format!("job {index}")}]}});
        let response = client
            .post(format!("{}/jobs", foreman.url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let job: Value = response.json().await.unwrap();
        ids.push(job["id"].as_str().unwrap().to_string());
        if index == 0 {
            // The first job is at the target before the others arrive.
            eventually("the first job to reach the target", async || {
                foreman.sim.stats().held == 1
            })
            .await;
        }
    }
    hold(&foreman.sim, false);
    for id in &ids {
        let response = client
            .get(format!("{}/jobs/{id}?wait=20s", foreman.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        let job: Value = response.json().await.unwrap();
        assert_eq!(job["state"], "succeeded", "{job}");
    }
    ids
}

#[tokio::test]
async fn the_metrics_page_parses_and_counts_the_workload_as_the_simulator_did() {
    let sim = sim_with(
        &[
            "llama3.2:3b,load=20ms,tps=4000",
            "qwen2.5:0.5b,load=20ms,tps=4000",
        ],
        1,
        1,
    );
    let foreman = TestForeman::start_with(sim, |config| {
        config.token = Some(TOKEN.into());
    })
    .await;
    let client = client();

    // Behind the token.
    let (status, _, _) = scrape(&client, &foreman.url, None).await;
    assert_eq!(status, 401);
    let (status, _, _) = scrape(&client, &foreman.url, Some("wrong")).await;
    assert_eq!(status, 401);

    let ids = interleaved_workload(&foreman, &client).await;
    let jobs = (PER_MODEL * 2) as f64;
    // A job's waiter may hear of its end a moment before the count is taken.
    let mut page = String::new();
    eventually("every job counted as finished", async || {
        let (status, content_type, text) = scrape(&client, &foreman.url, Some(TOKEN)).await;
        assert_eq!(status, 200);
        assert_eq!(content_type, "text/plain; version=0.0.4; charset=utf-8");
        page = text;
        page.contains(r#"foreman_jobs_finished_total{kind="chat",outcome="succeeded"} 12"#)
    })
    .await;
    let families = parse(&page).await;

    let enqueued = "foreman_jobs_enqueued_total";
    assert_eq!(families.kind(enqueued), "counter");
    assert_eq!(
        families.value(enqueued, enqueued, &[("kind", "chat")]),
        jobs
    );
    assert_eq!(families.sum(enqueued, enqueued), jobs);
    let finished = "foreman_jobs_finished_total";
    assert_eq!(
        families.value(
            finished,
            finished,
            &[("kind", "chat"), ("outcome", "succeeded")]
        ),
        jobs
    );
    assert_eq!(families.sum(finished, finished), jobs);

    for model in [CHAT, CHAT2] {
        assert_eq!(
            families.value(
                "foreman_queue_depth",
                "foreman_queue_depth",
                &[("model", model)]
            ),
            0.0
        );
        for histogram in [
            "foreman_queue_wait_seconds",
            "foreman_time_to_first_token_seconds",
            "foreman_job_run_seconds",
        ] {
            assert_eq!(families.kind(histogram), "histogram");
            assert_eq!(
                families.value(
                    histogram,
                    &format!("{histogram}_count"),
                    &[("model", model)]
                ),
                PER_MODEL as f64,
                "{histogram} of {model}"
            );
        }
    }
    let target = foreman.sim.url().trim_start_matches("http://").to_string();
    assert_eq!(
        families.value(
            "foreman_jobs_running",
            "foreman_jobs_running",
            &[("target", &target)]
        ),
        0.0
    );
    assert_eq!(
        families.value(
            "foreman_target_up",
            "foreman_target_up",
            &[("target", &target)]
        ),
        1.0
    );

    // Loads: foreman's count is the simulator's. With one place, the first job's model
    // is loaded and its five others drain it, then the other model is loaded once and
    // drained. Every job arrived after one of the other model, so arrival order would
    // have loaded a model for each: all but the two loads were avoided.
    let sim_loads = foreman.sim.stats().loads_total;
    assert_eq!(sim_loads, 2, "one load per model");
    let loads = "foreman_model_loads_total";
    assert_eq!(families.sum(loads, loads), sim_loads as f64);
    for model in [CHAT, CHAT2] {
        assert_eq!(
            families.value(loads, loads, &[("target", &target), ("model", model)]),
            1.0
        );
    }
    let avoided = "foreman_model_loads_avoided_total";
    assert_eq!(families.value(avoided, avoided, &[]), jobs - 2.0);
    assert_eq!(
        families.sum(loads, loads) + families.value(avoided, avoided, &[]),
        jobs,
        "made and avoided add up to what arrival order would have loaded"
    );

    let commits = "foreman_store_commit_seconds";
    assert_eq!(families.kind(commits), "histogram");
    assert!(families.value(commits, &format!("{commits}_count"), &[]) >= jobs);
    assert_eq!(
        families.sum(
            "foreman_webhook_deliveries_total",
            "foreman_webhook_deliveries_total"
        ),
        0.0
    );
    for process in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_start_time_seconds",
    ] {
        assert!(families.value(process, process, &[]) > 0.0, "{process}");
    }

    // The status view says the same, and lists the jobs.
    let status: Value = client
        .get(format!("{}/foreman/status", foreman.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["counters"],
        json!({"loads": 2, "loads_avoided": PER_MODEL * 2 - 2})
    );
    assert_eq!(status["queue"], json!([]));
    assert_eq!(status["targets"][0]["name"], target);
    assert_eq!(status["targets"][0]["running"], 0);
    assert_eq!(
        status["targets"][0]["loaded"],
        json!([{"key": CHAT2, "running": 0}]),
        "the model loaded last stays"
    );
    let recent: Vec<&str> = status["recent_jobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|job| job["id"].as_str().unwrap())
        .collect();
    assert_eq!(recent.len(), ids.len());
    for id in &ids {
        assert!(recent.contains(&id.as_str()), "{id} in the recent jobs");
    }
    let events = status["timeline"]["events"].as_array().unwrap();
    assert_eq!(events.iter().filter(|e| e["kind"] == "load").count(), 2);
    assert_eq!(
        events.iter().filter(|e| e["kind"] == "run").count(),
        ids.len()
    );
    assert!(
        events.iter().all(|e| !e["end_ms"].is_null()),
        "every run ended"
    );

    // `foreman status`, the terminal's view of the same.
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_foreman"))
        .args(["status", "--url", &foreman.url])
        .env("FOREMAN_TOKEN", TOKEN)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    assert!(
        text.contains(&format!("  {target}  up  0 of 1 slots busy")),
        "{text}"
    );
    assert!(text.contains(&format!("    {CHAT2}  idle")), "{text}");
    assert!(text.contains("LOADS  made 2, avoided 10"), "{text}");
    let refused = tokio::process::Command::new(env!("CARGO_BIN_EXE_foreman"))
        .args(["status", "--url", &foreman.url])
        .env_remove("FOREMAN_TOKEN")
        .output()
        .await
        .unwrap();
    assert!(!refused.status.success());
    foreman.stop().await;
}

/// A receiver of webhooks that answers 200 and counts what it got.
async fn webhook_receiver() -> (String, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let received = Arc::new(AtomicUsize::new(0));
    let counter = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let counter = counter.clone();
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    (url, received, task)
}

#[tokio::test]
async fn cancelled_jobs_and_webhooks_are_counted_and_metrics_public_opens_the_page_alone() {
    let flag = |flags: &[&str]| {
        foreman::config::ServeArgs::from_flags(flags)
            .unwrap()
            .validate()
            .unwrap()
            .metrics_public
    };
    assert!(!flag(&[]), "off by default");
    assert!(flag(&["--metrics-public", "true"]));
    let secret = format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    );
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.token = Some(TOKEN.into());
        config.metrics_public = true;
        config.webhook_key = Some(foreman::webhook::decode_secret(&secret).unwrap());
        config.webhook_allow_private_nets = foreman::webhook::parse_cidrs("127.0.0.0/8").unwrap();
    })
    .await;
    let client = client();
    let (hook, received, receiver) = webhook_receiver().await;

    // One job running (held at the target), one queued; both cancelled.
    hold(&foreman.sim, true);
    let mut ids = Vec::new();
    for index in 0..2 {
        let body = json!({"kind": "chat", "webhook": hook, "request": {"model": CHAT,
            "messages": [{"role": "user", "content": format!("cancel me {index}")}]}});
        let response = client
            .post(format!("{}/jobs", foreman.url))
            .bearer_auth(TOKEN)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 202);
        let job: Value = response.json().await.unwrap();
        ids.push(job["id"].as_str().unwrap().to_string());
        if index == 0 {
            eventually("the first job to reach the target", async || {
                foreman.sim.stats().held == 1
            })
            .await;
        }
    }
    for id in ids.iter().rev() {
        let response = client
            .post(format!("{}/jobs/{id}/cancel", foreman.url))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "{}", response.status());
    }
    hold(&foreman.sim, false);

    // Open without the token.
    let mut families = None;
    eventually("both cancels and both webhooks counted", async || {
        let (status, _, page) = scrape(&client, &foreman.url, None).await;
        assert_eq!(status, 200);
        let parsed = parse(&page).await;
        let finished = "foreman_jobs_finished_total";
        let webhooks = "foreman_webhook_deliveries_total";
        let done = parsed.value(
            finished,
            finished,
            &[("kind", "chat"), ("outcome", "cancelled")],
        ) == 2.0
            && parsed.value(webhooks, webhooks, &[("outcome", "delivered")]) == 2.0;
        families = Some(parsed);
        done
    })
    .await;
    let families = families.unwrap();
    assert_eq!(received.load(Ordering::SeqCst), 2);
    assert_eq!(
        families.sum("foreman_jobs_finished_total", "foreman_jobs_finished_total"),
        2.0
    );
    assert_eq!(
        families.value(
            "foreman_queue_depth",
            "foreman_queue_depth",
            &[("model", CHAT)]
        ),
        0.0
    );
    assert_eq!(
        families.value(
            "foreman_job_run_seconds",
            "foreman_job_run_seconds_count",
            &[("model", CHAT)]
        ),
        1.0,
        "only the job that ran has a run time"
    );
    let response = client
        .get(format!("{}/foreman/status", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401, "the status stays behind the token");
    receiver.abort();
    foreman.stop().await;
}

/// Jobs the store finishes by itself are counted too: a synchronous job left queued by
/// the last process is cancelled at the start (its caller's connection is gone), and
/// `foreman_jobs_finished_total` says so, though no request of this process saw it end.
#[tokio::test]
async fn a_sync_job_abandoned_at_the_start_is_counted_as_finished() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("left-behind.db");
    let db = db.to_str().unwrap().to_string();
    {
        let store = foreman_store::Store::open(&db).await.unwrap();
        let left = foreman_store::NewJob {
            id: None,
            kind: foreman_store::JobKind::Chat,
            model: CHAT.to_string(),
            load_options: String::new(),
            payload: json!({"model": CHAT, "messages": []}).to_string(),
            sync: true,
            priority: 10,
            max_attempts: 3,
            idempotency_key: None,
            webhook_url: None,
            metadata: None,
            caller: None,
        };
        store.enqueue(left, 1_700_000_000_000).await.unwrap();
        store.close().await;
    }
    let foreman = TestForeman::start_with(fast_sim(), |config| config.database = db).await;
    let (status, _, page) = scrape(&client(), &foreman.url, None).await;
    assert_eq!(status, 200);
    let families = parse(&page).await;
    let finished = "foreman_jobs_finished_total";
    assert_eq!(
        families.value(
            finished,
            finished,
            &[("kind", "chat"), ("outcome", "cancelled")]
        ),
        1.0
    );
    assert_eq!(families.sum(finished, finished), 1.0);
}
