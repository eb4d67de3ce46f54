//! Embeddings batches sent to the target in groups (`FOREMAN_BATCH_EMBED_GROUP`): the
//! official `openai` client's flow on both embedding endpoints, with lines that cannot
//! share a call in the middle; the calls counted at the simulator; each line's answer
//! as the simulator gives it directly; usage split so that a group adds up to what the
//! target reported; grouping off; a cancel while a group runs; and a real `foreman`
//! SIGKILLed during a grouped batch.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use foreman_store::{Job, ListParams, Store};
use serde_json::{Value, json};

use crate::batches::{batch, content, create, custom_ids, repo_root, until, upload};
use crate::common::*;

/// A second embedding model.
const EMBED2: &str = "mxbai-embed-large";

/// Two fast embedding models, both resident at once.
fn embedders() -> ollama_sim::SimConfig {
    sim_with(
        &[
            "nomic-embed-text,embed,load=10ms",
            "mxbai-embed-large,embed,load=10ms",
        ],
        1,
        2,
    )
}

/// A line's text input: a string or a few strings, of lengths that differ by line.
fn text_input(i: usize) -> Value {
    match i % 3 {
        0 => json!(format!("Document {i}: ") + &"queues hold work ".repeat(1 + i % 7)),
        _ => json!(
            (0..=i % 4)
                .map(|part| format!("Document {i} part {part}: ")
                    + &"drained by model ".repeat(1 + part))
                .collect::<Vec<_>>()
        ),
    }
}

/// The bodies of a 100-line batch on `endpoint`: text lines of one model, with in the
/// middle a line asking other `dimensions`, one of another model, and one that cannot
/// share a call (a token array on `/v1/embeddings`, `truncate` set on `/api/embed`).
/// With groups of 32 and one enqueue chunk: lines 0-31, 32-39, 40, 41-59, 60, 61-69,
/// 70, 71-99; eight calls, one of them to the other model.
fn bodies(endpoint: &str) -> Vec<Value> {
    (0..100)
        .map(|i| match i {
            40 => json!({"model": EMBED, "input": text_input(i), "dimensions": 64}),
            60 => json!({"model": EMBED2, "input": text_input(i)}),
            70 if endpoint == "/v1/embeddings" => {
                json!({"model": EMBED, "input": [101, 2023, 2003, 1037, 7099]})
            }
            70 => json!({"model": EMBED, "input": text_input(i), "truncate": false}),
            _ => json!({"model": EMBED, "input": text_input(i)}),
        })
        .collect()
}

fn jsonl(endpoint: &str, bodies: &[Value]) -> String {
    bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({"custom_id": format!("e{i}"), "method": "POST", "url": endpoint, "body": body})
                .to_string()
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The calls each model of the simulator answered, from `GET /sim/stats`.
async fn calls(sim: &ollama_sim::SimHandle) -> HashMap<String, u64> {
    let (status, stats) = get_json(&client(), format!("{}/sim/stats", sim.url())).await;
    assert_eq!(status, 200);
    stats["models"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(name, model)| {
            let name = name.split(':').next().unwrap().to_string();
            (name, model["requests"].as_u64().unwrap())
        })
        .collect()
}

/// A job's first line and the lines it covers, from its metadata.
fn span(job: &Job) -> (u64, u64) {
    let meta: Value = serde_json::from_str(job.metadata.as_deref().unwrap()).unwrap();
    (
        meta["line"].as_u64().unwrap(),
        meta.get("lines").and_then(Value::as_u64).unwrap_or(1),
    )
}

/// The lines' jobs tile the batch: each line is covered by exactly one job.
fn tiles(jobs: &[Job], total: u64) -> BTreeMap<u64, u64> {
    let spans: BTreeMap<u64, u64> = jobs.iter().map(span).collect();
    assert_eq!(spans.len(), jobs.len(), "one job per first line");
    let mut next = 0;
    for (first, lines) in &spans {
        assert_eq!(*first, next, "the jobs cover each line once: {spans:?}");
        next += lines;
    }
    assert_eq!(next, total, "the jobs cover every line");
    spans
}

/// The usage a body reports: (prompt, total) tokens on `/v1/embeddings`, the eval count
/// twice on `/api/embed`.
fn usage(body: &Value) -> (u64, u64) {
    match body.get("usage") {
        Some(usage) => (
            usage["prompt_tokens"].as_u64().unwrap(),
            usage["total_tokens"].as_u64().unwrap(),
        ),
        None => {
            let count = body["prompt_eval_count"].as_u64().unwrap();
            (count, count)
        }
    }
}

/// The embeddings of an answer, in order.
fn vectors(body: &Value) -> Vec<Vec<f64>> {
    let list = match body.get("data") {
        Some(data) => data
            .as_array()
            .unwrap()
            .iter()
            .enumerate()
            .map(|(index, entry)| {
                assert_eq!(entry["index"], index, "re-indexed from 0: {body}");
                entry["embedding"].clone()
            })
            .collect::<Vec<_>>(),
        None => body["embeddings"].as_array().unwrap().clone(),
    };
    list.iter()
        .map(|vector| {
            vector
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        })
        .collect()
}

/// Runs the batch of [`bodies`] on `endpoint` through the official `openai` client
/// against foreman with groups of `group` lines, and checks what came back against the
/// simulator asked directly. Returns the calls each model took for the batch and the
/// number of jobs.
async fn run_batch(endpoint: &str, group: u64) -> (HashMap<String, u64>, usize) {
    let foreman =
        TestForeman::start_with(embedders(), |config| config.batch.embed_group = group).await;
    let bodies = bodies(endpoint);
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("input.jsonl");
    std::fs::write(&input, jsonl(endpoint, &bodies)).unwrap();
    let before = calls(&foreman.sim).await;
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(repo_root().join(".venv/bin/python"))
            .arg(repo_root().join("tests/python/openai_batch_run.py"))
            .args([foreman.url.as_str(), input.to_str().unwrap(), endpoint])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the flow ends within five minutes")
    .expect("python runs");
    assert!(
        output.status.success(),
        "the openai client's flow failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let run: Value = serde_json::from_slice(&output.stdout).unwrap();
    let after = calls(&foreman.sim).await;
    let spent: HashMap<String, u64> = after
        .iter()
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .collect();

    assert_eq!(run["status"], "completed", "{run}");
    assert_eq!(
        run["request_counts"],
        json!({"total": 100, "completed": 100, "failed": 0})
    );
    assert_eq!(run["error_lines"], json!([]));
    let lines = run["output"].as_array().unwrap();
    let seen = custom_ids(lines);
    assert_eq!(seen.len(), 100);
    assert!(seen.values().all(|&n| n == 1), "each custom_id once");

    let jobs = foreman.jobs().await;
    let spans = tiles(&jobs, 100);
    let by_first: HashMap<u64, &Job> = jobs.iter().map(|job| (span(job).0, job)).collect();
    // The job covering each line.
    let mut covering = HashMap::new();
    for (first, count) in &spans {
        for line in *first..first + count {
            covering.insert(line, by_first[first]);
        }
    }
    let client = client();
    let mut sums: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut ids = std::collections::HashSet::new();
    for line in lines {
        let custom_id = line["custom_id"].as_str().unwrap();
        let index: u64 = custom_id[1..].parse().unwrap();
        let job = covering[&index];
        let (first, count) = span(job);
        assert_eq!(line["response"]["status_code"], 200, "{line}");
        assert_eq!(line["response"]["request_id"], job.id.to_string());
        assert!(
            ids.insert(line["id"].as_str().unwrap().to_string()),
            "ids differ"
        );
        if index == first {
            assert_eq!(line["id"], format!("batch_req_{}", job.id));
        }
        let body = &line["response"]["body"];
        let (status, _, direct) = post(
            &client,
            format!("{}{endpoint}", foreman.sim.url()),
            &bodies[index as usize],
        )
        .await;
        assert_eq!(status, 200, "{direct}");
        let direct: Value = serde_json::from_str(&direct).unwrap();
        assert_eq!(body["model"], direct["model"]);
        let (got, want) = (vectors(body), vectors(&direct));
        assert_eq!(got.len(), want.len(), "{custom_id}");
        for (got, want) in got.iter().zip(&want) {
            assert_eq!(got.len(), want.len(), "{custom_id}");
            assert!(
                got.iter().zip(want).all(|(a, b)| (a - b).abs() < 1e-7),
                "{custom_id}: its own embeddings"
            );
        }
        if count == 1 {
            assert_eq!(
                usage(body),
                usage(&direct),
                "{custom_id}: the target's own count"
            );
        }
        let sum = sums.entry(first).or_default();
        let (prompt, total) = usage(body);
        *sum = (sum.0 + prompt, sum.1 + total);
    }
    // Each group's lines add up to what the target reported for the group's call.
    for (first, sum) in &sums {
        let job = by_first[first];
        let reported: Value = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
        assert_eq!(*sum, usage(&reported), "the group at line {first}");
    }
    foreman.stop().await;
    (spent, jobs.len())
}

/// `/v1/embeddings` through the official client: eight calls for 100 lines (seven of
/// one model, one of the other), each line its own vectors, usage adding up per group.
#[tokio::test]
async fn the_official_openai_client_runs_a_grouped_embeddings_batch() {
    let (spent, jobs) = run_batch("/v1/embeddings", 32).await;
    assert_eq!(spent[EMBED], 7, "{spent:?}");
    assert_eq!(spent[EMBED2], 1, "{spent:?}");
    assert_eq!(jobs, 8);
}

/// The same on Ollama's `/api/embed`, its `prompt_eval_count` split.
#[tokio::test]
async fn the_official_openai_client_runs_a_grouped_native_embed_batch() {
    let (spent, jobs) = run_batch("/api/embed", 32).await;
    assert_eq!(spent[EMBED], 7, "{spent:?}");
    assert_eq!(spent[EMBED2], 1, "{spent:?}");
    assert_eq!(jobs, 8);
}

/// `FOREMAN_BATCH_EMBED_GROUP=1`: one call and one job per line, each line's usage the
/// target's own count.
#[tokio::test]
async fn grouping_off_sends_each_line_alone() {
    for endpoint in ["/v1/embeddings", "/api/embed"] {
        let (spent, jobs) = run_batch(endpoint, 1).await;
        assert_eq!(spent[EMBED], 99, "{endpoint}: {spent:?}");
        assert_eq!(spent[EMBED2], 1, "{endpoint}: {spent:?}");
        assert_eq!(jobs, 100, "{endpoint}");
    }
}

/// The real binary SIGKILLed again and again while a grouped embeddings batch runs,
/// each time with a group's call held at the target, then restarted on the same
/// database: the batch completes with every custom id exactly once, and its jobs cover
/// every line exactly once (a group enqueued again after a kill was found, not made
/// twice).
#[tokio::test]
async fn a_grouped_embeddings_batch_survives_sigkills() {
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), embedders())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foreman.db");
    let db = db.to_str().unwrap().to_string();
    let settings = [
        ("FOREMAN_OLLAMA_URL", sim.url()),
        // Chunks of 40 lines cut groups of 12: kills land between chunks and groups.
        ("FOREMAN_BATCH_QUEUED", "40".to_string()),
        ("FOREMAN_BATCH_EMBED_GROUP", "12".to_string()),
    ];
    let (mut child, mut url) = start_foreman_binary(&db, &settings, false).await;
    let client = client();
    let total = 400u64;
    let lines: Vec<Value> = (0..total as usize)
        .map(|i| json!({"model": EMBED, "input": text_input(i)}))
        .collect();
    let file = upload(&client, &url, &jsonl("/v1/embeddings", &lines)).await;
    let created = create(
        &client,
        &url,
        json!({"input_file_id": file, "endpoint": "/v1/embeddings", "completion_window": "24h"}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let mut held_kills = 0;
    for done in [0, 60, 150, 260, 350] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let batch = batch(&client, &url, &id).await;
            let completed = batch["request_counts"]["completed"].as_i64().unwrap();
            if completed >= done || (batch["status"] != "in_progress" && completed > 0) {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "stuck: {batch}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // Kill with a group's call under way when the batch still has one to make.
        hold(&sim, true);
        let running = batch(&client, &url, &id).await;
        if running["status"] == "in_progress" {
            let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
            while sim.stats().held == 0 && tokio::time::Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            if sim.stats().held > 0 {
                held_kills += 1;
            }
        }
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        hold(&sim, false);
        (child, url) = start_foreman_binary(&db, &settings, false).await;
    }
    assert!(
        held_kills > 0,
        "at least one kill with a group's call under way"
    );
    let finished = until(&client, &url, &id, "completed").await;
    assert_eq!(
        finished["request_counts"],
        json!({"total": total, "completed": total, "failed": 0})
    );
    let output = content(&client, &url, &finished["output_file_id"]).await;
    let seen = custom_ids(&output);
    assert_eq!(seen.len(), total as usize);
    assert!(
        seen.values().all(|&n| n == 1),
        "each custom id exactly once"
    );
    for line in &output {
        let index: usize = line["custom_id"].as_str().unwrap()[1..].parse().unwrap();
        let want = match &lines[index]["input"] {
            Value::Array(parts) => parts.len(),
            _ => 1,
        };
        assert_eq!(
            line["response"]["body"]["data"].as_array().unwrap().len(),
            want
        );
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    let store = Store::open(&db).await.unwrap();
    let jobs = store
        .list(ListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let spans = tiles(&jobs, total);
    assert!(
        spans.values().any(|&lines| lines > 1),
        "lines were grouped: {spans:?}"
    );
    assert!(
        spans.values().all(|&lines| lines <= 12),
        "at most FOREMAN_BATCH_EMBED_GROUP lines a group"
    );
    store.close().await;
}

/// A grouped embeddings batch cancelled while its first group's call is held at the
/// target: the running group is stopped and the queued ones cancelled, a job at a time,
/// and every line of every group lands once in the error file as `batch_cancelled`,
/// under its own id.
#[tokio::test]
async fn a_cancelled_grouped_batch_ends_each_line_once() {
    let foreman = TestForeman::start_with(embedders(), |config| config.batch.embed_group = 8).await;
    let client = client();
    let lines: Vec<Value> = (0..60)
        .map(|i| json!({"model": EMBED, "input": text_input(i)}))
        .collect();
    hold(&foreman.sim, true);
    let file = upload(&client, &foreman.url, &jsonl("/api/embed", &lines)).await;
    let created = create(
        &client,
        &foreman.url,
        json!({"input_file_id": file, "endpoint": "/api/embed", "completion_window": "24h"}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    eventually("a group's call held at the target", async || {
        foreman.sim.stats().held == 1
    })
    .await;
    let (status, _, _) = post(
        &client,
        format!("{}/v1/batches/{id}/cancel", foreman.url),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200);
    let cancelled = until(&client, &foreman.url, &id, "cancelled").await;
    hold(&foreman.sim, false);
    assert_eq!(
        cancelled["request_counts"],
        json!({"total": 60, "completed": 0, "failed": 0})
    );
    assert!(cancelled["output_file_id"].is_null());
    let errors = content(&client, &foreman.url, &cancelled["error_file_id"]).await;
    let seen = custom_ids(&errors);
    assert_eq!(seen.len(), 60);
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    assert!(
        errors
            .iter()
            .all(|line| line["error"]["code"] == "batch_cancelled"),
        "{errors:?}"
    );
    let ids: std::collections::HashSet<&str> = errors
        .iter()
        .map(|line| line["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids.len(), 60, "each line its own id");
    let jobs = foreman.jobs().await;
    let spans = tiles(&jobs, 60);
    assert!(
        spans.values().all(|&lines| lines == 8 || lines == 4),
        "{spans:?}"
    );
    assert!(
        jobs.iter()
            .all(|job| job.state == foreman_store::JobState::Cancelled)
    );
    assert_eq!(
        jobs.iter().filter(|job| job.started_at.is_some()).count(),
        1,
        "only the held group started"
    );
    foreman.stop().await;
}
