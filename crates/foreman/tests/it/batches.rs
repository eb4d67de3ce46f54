//! OpenAI's Files and Batch API against foreman in front of the simulator: the official
//! `openai` client's flow, validation by line, cancel, expiry, the end's webhook, and
//! real `foreman` processes SIGKILLed while a batch runs and is finalised.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use foreman_store::{ListParams, Store};
use ollama_sim::SimConfig;
use serde_json::{Value, json};

use crate::common::*;

const CHAT3: &str = "gemma3:1b";

/// Three fast chat models, all resident at once.
fn three_models() -> SimConfig {
    sim_with(
        &[
            "llama3.2:3b,load=20ms,tps=4000",
            "qwen2.5:0.5b,load=20ms,tps=4000",
            "gemma3:1b,load=20ms,tps=4000",
        ],
        1,
        3,
    )
}

/// A JSONL line of a chat request.
fn chat_line(custom_id: &str, model: &str, text: &str) -> String {
    json!({
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 6},
    })
    .to_string()
}

/// Uploads `content` as a batch file with a hand-made multipart body; the status and
/// the answer.
async fn upload_as(
    client: &reqwest::Client,
    url: &str,
    content: &str,
    purpose: &str,
) -> (u16, Value) {
    let boundary = "foremanbatchtestboundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\n{purpose}\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"input.jsonl\"\r\nContent-Type: application/jsonl\r\n\r\n{content}\r\n--{boundary}--\r\n"
    );
    let response = client
        .post(format!("{url}/v1/files"))
        .header(
            "content-type",
            format!("multipart/form-data; boundary={boundary}"),
        )
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

pub(crate) async fn upload(client: &reqwest::Client, url: &str, content: &str) -> String {
    let (status, file) = upload_as(client, url, content, "batch").await;
    assert_eq!(status, 200, "{file}");
    file["id"].as_str().unwrap().to_string()
}

pub(crate) async fn create(client: &reqwest::Client, url: &str, body: Value) -> Value {
    let (status, _, batch) = post(client, format!("{url}/v1/batches"), &body).await;
    assert_eq!(status, 200, "{batch}");
    serde_json::from_str(&batch).unwrap()
}

fn batch_body(file: &str) -> Value {
    json!({"input_file_id": file, "endpoint": "/v1/chat/completions", "completion_window": "24h"})
}

/// Uploads `lines` and creates a `/v1/chat/completions` batch of them: (file id, batch id).
async fn start_chat_batch(
    client: &reqwest::Client,
    url: &str,
    lines: &[String],
) -> (String, String) {
    let file = upload(client, url, &lines.join("\n")).await;
    let created = create(client, url, batch_body(&file)).await;
    let id = created["id"].as_str().unwrap().to_string();
    (file, id)
}

/// Waits until the simulator holds one line of a batch (see [`hold`]).
async fn a_line_held(sim: &ollama_sim::SimHandle) {
    eventually("a line held at the target", async || sim.stats().held == 1).await;
}

pub(crate) async fn batch(client: &reqwest::Client, url: &str, id: &str) -> Value {
    let (status, batch) = get_json(client, format!("{url}/v1/batches/{id}")).await;
    assert_eq!(status, 200, "{batch}");
    batch
}

/// Polls the batch until it is in `status`.
pub(crate) async fn until(client: &reqwest::Client, url: &str, id: &str, status: &str) -> Value {
    let mut last = Value::Null;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while tokio::time::Instant::now() < deadline {
        last = batch(client, url, id).await;
        if last["status"] == status {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("batch {id} never became {status}: {last}");
}

/// The lines of a file's content (empty for no file).
pub(crate) async fn content(client: &reqwest::Client, url: &str, file: &Value) -> Vec<Value> {
    let Some(id) = file.as_str() else {
        return Vec::new();
    };
    let response = client
        .get(format!("{url}/v1/files/{id}/content"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response
        .text()
        .await
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Each custom id of the output and error files together, with how often it appears.
pub(crate) fn custom_ids(lines: &[Value]) -> HashMap<String, usize> {
    let mut seen = HashMap::new();
    for line in lines {
        *seen
            .entry(line["custom_id"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    seen
}

/// The repository root.
pub(crate) fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The official `openai` client uploads 300 chat requests over three models, creates a
/// batch, polls it to the end and reads the output: every line once, each answer the
/// one the simulator gives to the same request asked directly. The lines ran as jobs
/// at the batch priority.
#[tokio::test]
async fn the_official_openai_client_runs_a_batch_over_three_models() {
    let foreman = TestForeman::start(three_models()).await;
    let python = repo_root().join(".venv/bin/python");
    let script = repo_root().join("tests/python/openai_batch_flow.py");
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(&python)
            .arg(&script)
            .args([
                foreman.url.as_str(),
                foreman.sim.url().as_str(),
                &format!("{CHAT},{CHAT2},{CHAT3}"),
                "300",
            ])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the flow ends within five minutes")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.starts_with("ok"),
        "the openai client's batch flow failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let jobs = foreman.jobs().await;
    let lines: Vec<_> = jobs
        .iter()
        .filter(|job| {
            job.idempotency_key
                .as_deref()
                .is_some_and(|k| k.starts_with("batch:"))
        })
        .collect();
    assert_eq!(lines.len(), 300, "one job per line");
    let priority = foreman::config::ServeArgs::defaults().batch.batch_priority;
    assert!(lines.iter().all(|job| job.priority == priority));
    assert!(priority < foreman::api::ASYNC_PRIORITY);
    foreman.stop().await;
}

/// Every kind of bad line fails the batch before anything runs, with OpenAI's errors
/// by line; no job is queued.
#[tokio::test]
async fn invalid_lines_fail_the_batch_with_errors_by_line() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let good = chat_line("a", CHAT, "fine");
    let lines = [
        good.clone(),
        "{not json".to_string(),
        json!({"method": "POST", "url": "/v1/chat/completions", "body": {"model": CHAT, "messages": []}}).to_string(),
        chat_line("a", CHAT, "again"),
        json!({"custom_id": "u", "method": "POST", "url": "/v1/completions", "body": {"model": CHAT, "prompt": "x"}}).to_string(),
        json!({"custom_id": "m", "method": "GET", "url": "/v1/chat/completions", "body": {"model": CHAT, "messages": []}}).to_string(),
        json!({"custom_id": "v", "method": "POST", "url": "/v1/chat/completions", "body": {"model": CHAT, "messages": "not a list"}}).to_string(),
        chat_line("n", "no-such-model", "hello"),
        String::new(),
        chat_line("ok", CHAT2, "fine too"),
    ];
    let (_, id) = start_chat_batch(&client, &foreman.url, &lines).await;
    let failed = until(&client, &foreman.url, &id, "failed").await;
    assert!(failed["failed_at"].is_i64());
    assert_eq!(failed["errors"]["object"], "list");
    let errors: Vec<(String, i64, Value)> = failed["errors"]["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["code"].as_str().unwrap().to_string(),
                e["line"].as_i64().unwrap(),
                e["param"].clone(),
            )
        })
        .collect();
    assert_eq!(
        errors,
        [
            ("invalid_json_line".to_string(), 2, Value::Null),
            ("missing_custom_id".to_string(), 3, json!("custom_id")),
            ("duplicate_custom_id".to_string(), 4, json!("custom_id")),
            ("invalid_url".to_string(), 5, json!("url")),
            ("invalid_method".to_string(), 6, json!("method")),
            ("invalid_request".to_string(), 7, json!("body")),
            ("model_not_found".to_string(), 8, json!("body.model")),
        ]
    );
    // The validator's own words for the body a live request would get refused with.
    let body_error = &failed["errors"]["data"][5]["message"];
    assert!(
        body_error.as_str().unwrap().contains("cannot unmarshal"),
        "{body_error}"
    );
    assert_eq!(failed["output_file_id"], Value::Null);
    assert!(foreman.jobs().await.is_empty(), "nothing was queued");
    assert_eq!(foreman.sim.stats().completed_total, 0);
    foreman.stop().await;
}

/// The Files API: a batch upload round-trips byte for byte and lists in OpenAI's shape;
/// other purposes, too many lines and unknown ids are refused in OpenAI's error shape;
/// a deleted file is gone.
#[tokio::test]
async fn files_round_trip_and_refuse_what_a_batch_cannot_use() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.batch.max_lines = 3;
        // Uploads have their own limit, not the request body's.
        config.max_body = 2048;
        config.batch.files_max_bytes = 16 * 1024;
    })
    .await;
    let client = client();
    let text = [chat_line("1", CHAT, "a"), chat_line("2", CHAT, "b")].join("\n");
    let (status, file) = upload_as(&client, &foreman.url, &text, "batch").await;
    assert_eq!(status, 200, "{file}");
    assert_eq!(file["object"], "file");
    assert_eq!(file["purpose"], "batch");
    assert_eq!(file["filename"], "input.jsonl");
    assert_eq!(file["bytes"], text.len());
    let id = file["id"].as_str().unwrap();
    let body = client
        .get(format!("{}/v1/files/{id}/content", foreman.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(body, text);
    let (status, listed) =
        get_json(&client, format!("{}/v1/files?purpose=batch", foreman.url)).await;
    assert_eq!(status, 200);
    assert_eq!(listed["object"], "list");
    assert_eq!(listed["data"][0]["id"], id);
    assert_eq!(listed["has_more"], false);
    let (status, refused) = upload_as(&client, &foreman.url, &text, "fine-tune").await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["type"], "invalid_request_error");
    let four = [1, 2, 3, 4]
        .map(|i| chat_line(&i.to_string(), CHAT, "x"))
        .join("\n");
    let (status, refused) = upload_as(&client, &foreman.url, &four, "batch").await;
    assert_eq!(status, 400, "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("more than 3 lines")
    );
    let padding = "x".repeat(4000);
    let big = [1, 2]
        .map(|i| chat_line(&i.to_string(), CHAT, &padding))
        .join("\n");
    let (status, file) = upload_as(&client, &foreman.url, &big, "batch").await;
    assert_eq!(
        status, 200,
        "over FOREMAN_MAX_BODY, within the upload limit: {file}"
    );
    let huge = [1, 2, 3]
        .map(|i| chat_line(&i.to_string(), CHAT, &"y".repeat(6000)))
        .join("\n");
    let (status, refused) = upload_as(&client, &foreman.url, &huge, "batch").await;
    assert_eq!(status, 413, "{refused}");
    assert_eq!(refused["error"]["type"], "invalid_request_error");
    let big_id = file["id"].as_str().unwrap();
    client
        .delete(format!("{}/v1/files/{big_id}", foreman.url))
        .send()
        .await
        .unwrap();
    let (status, missing) =
        get_json(&client, format!("{}/v1/files/file-nothere", foreman.url)).await;
    assert_eq!(status, 404);
    assert_eq!(
        missing["error"]["message"],
        "No such File object: file-nothere"
    );
    let deleted: Value = client
        .delete(format!("{}/v1/files/{id}", foreman.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        deleted,
        json!({"id": id, "object": "file", "deleted": true})
    );
    let (status, _) = get_json(&client, format!("{}/v1/files/{id}/content", foreman.url)).await;
    assert_eq!(status, 404);
    // Only the refused uploads' partial files could be left: none are.
    let folder = foreman.db_path.with_file_name("data").join("files");
    let left: Vec<_> = std::fs::read_dir(&folder).unwrap().collect();
    assert!(left.is_empty(), "{left:?}");
    foreman.stop().await;
}

/// A batch cancelled while its first line runs at the target: the queued lines are
/// cancelled without reaching the target, the running one is stopped, and the batch
/// ends `cancelled` with every custom id once across its two files.
#[tokio::test]
async fn a_cancelled_batch_stops_what_has_not_run() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let lines: Vec<String> = (0..20)
        .map(|i| chat_line(&format!("c{i}"), CHAT, &format!("line {i}")))
        .collect();
    hold(&foreman.sim, true);
    let (file, id) = start_chat_batch(&client, &foreman.url, &lines).await;
    a_line_held(&foreman.sim).await;
    // Its input cannot go while the batch still reads it.
    let response = client
        .delete(format!("{}/v1/files/{file}", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let refused: Value = response.json().await.unwrap();
    assert!(refused["error"]["message"].as_str().unwrap().contains(&id));
    let (status, _, cancelling) = post(
        &client,
        format!("{}/v1/batches/{id}/cancel", foreman.url),
        &json!({}),
    )
    .await;
    assert_eq!(status, 200, "{cancelling}");
    let cancelling: Value = serde_json::from_str(&cancelling).unwrap();
    assert!(
        cancelling["status"] == "cancelling" || cancelling["status"] == "cancelled",
        "{cancelling}"
    );
    let cancelled = until(&client, &foreman.url, &id, "cancelled").await;
    hold(&foreman.sim, false);
    assert!(cancelled["cancelling_at"].is_i64() && cancelled["cancelled_at"].is_i64());
    let output = content(&client, &foreman.url, &cancelled["output_file_id"]).await;
    let errors = content(&client, &foreman.url, &cancelled["error_file_id"]).await;
    let seen = custom_ids(&[output.clone(), errors.clone()].concat());
    assert_eq!(seen.len(), 20);
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    assert!(
        errors
            .iter()
            .all(|line| line["error"]["code"] == "batch_cancelled"),
        "{errors:?}"
    );
    assert!(output.is_empty(), "nothing finished before the cancel");
    // As OpenAI counts them: lines that never ran are in `total` only, neither
    // completed nor failed.
    assert_eq!(
        cancelled["request_counts"],
        json!({"total": 20, "completed": 0, "failed": 0})
    );
    // Only the held line ever started; the others were cancelled while queued.
    let jobs = foreman.jobs().await;
    assert_eq!(jobs.len(), 20);
    assert_eq!(
        jobs.iter().filter(|job| job.started_at.is_some()).count(),
        1
    );
    assert!(
        jobs.iter()
            .all(|job| job.state == foreman_store::JobState::Cancelled)
    );
    let (status, _, again) = post(
        &client,
        format!("{}/v1/batches/{id}/cancel", foreman.url),
        &json!({}),
    )
    .await;
    assert_eq!(status, 400, "{again}");
    foreman.stop().await;
}

/// A batch whose window closes before its lines could run ends `expired`: what ran is
/// in the output, the rest in the error file as `batch_expired`, each custom id once.
#[tokio::test]
async fn a_batch_past_its_window_expires_with_what_ran() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.batch.window = Duration::from_secs(2);
    })
    .await;
    let client = client();
    let lines: Vec<String> = (0..10)
        .map(|i| chat_line(&format!("e{i}"), CHAT, &format!("line {i}")))
        .collect();
    hold(&foreman.sim, true);
    let (_, id) = start_chat_batch(&client, &foreman.url, &lines).await;
    let expired = until(&client, &foreman.url, &id, "expired").await;
    hold(&foreman.sim, false);
    assert!(expired["expired_at"].is_i64());
    assert_eq!(expired["request_counts"]["total"], 10);
    let output = content(&client, &foreman.url, &expired["output_file_id"]).await;
    let errors = content(&client, &foreman.url, &expired["error_file_id"]).await;
    let seen = custom_ids(&[output.clone(), errors.clone()].concat());
    assert_eq!(seen.len(), 10);
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    assert!(
        errors
            .iter()
            .any(|line| line["error"]["code"] == "batch_expired")
    );
    assert_eq!(
        output.len() as i64,
        expired["request_counts"]["completed"].as_i64().unwrap()
    );
    // The lines that never ran are neither completed nor failed (OpenAI's counts): the
    // error file holds only them, and `failed` stays 0.
    assert_eq!(expired["request_counts"]["failed"], 0);
    assert!(
        errors
            .iter()
            .all(|line| line["error"]["code"] == "batch_expired")
    );
    assert_eq!(output.len() + errors.len(), 10);
    foreman.stop().await;
}

/// A batch's end is announced to its `webhook`, signed, as `batch.completed` with the
/// Batch object.
#[tokio::test]
async fn a_finished_batch_calls_its_webhook_signed() {
    use axum::http::HeaderMap;
    let received: Arc<Mutex<Vec<(HeaderMap, String)>>> = Arc::default();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let received = received.clone();
            move |headers: HeaderMap, body: String| async move {
                received.lock().unwrap().push((headers, body));
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let key = foreman::webhook::decode_secret(secret).unwrap();
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.webhook_key = Some(foreman::webhook::decode_secret(secret).unwrap());
        config.webhook_allow_private_nets = foreman::webhook::parse_cidrs("127.0.0.0/8").unwrap();
    })
    .await;
    let client = client();
    let file = upload(&client, &foreman.url, &chat_line("w", CHAT, "hook")).await;
    let mut body = batch_body(&file);
    body["webhook"] = json!(hook);
    let created = create(&client, &foreman.url, body).await;
    let id = created["id"].as_str().unwrap().to_string();
    until(&client, &foreman.url, &id, "completed").await;
    eventually("the webhook", async || !received.lock().unwrap().is_empty()).await;
    let (headers, payload) = received.lock().unwrap()[0].clone();
    let event: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(event["type"], "batch.completed");
    assert_eq!(event["data"]["id"], id);
    assert_eq!(event["data"]["status"], "completed");
    let header = |name: &str| headers.get(name).unwrap().to_str().unwrap().to_string();
    assert_eq!(header("webhook-id"), format!("{id}.completed"));
    let timestamp: i64 = header("webhook-timestamp").parse().unwrap();
    assert_eq!(
        header("webhook-signature"),
        foreman::webhook::sign(&key, &header("webhook-id"), timestamp, &payload)
    );
    // Once: the batch records that its end was announced.
    let store = foreman.store().await;
    eventually("the webhook recorded as done", async || {
        store.get_batch(&id).await.unwrap().unwrap().webhook_done
    })
    .await;
    assert_eq!(received.lock().unwrap().len(), 1);
    foreman.stop().await;
}

/// The real binary SIGKILLed again and again while a 300-line batch runs (and, as it
/// nears its end, while it is finalised), then restarted on the same database: the
/// batch completes with every custom id exactly once in its output.
#[tokio::test]
async fn a_batch_survives_sigkills_while_running_and_finalising() {
    let sim = ollama_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        sim_with(
            &[
                "llama3.2:3b,load=20ms,tps=400",
                "qwen2.5:0.5b,load=20ms,tps=400",
            ],
            1,
            2,
        ),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foreman.db");
    let db = db.to_str().unwrap().to_string();
    let settings = [
        ("FOREMAN_OLLAMA_URL", sim.url()),
        // Few lines queued at once, so kills land between enqueued chunks too.
        ("FOREMAN_BATCH_QUEUED", "40".to_string()),
    ];
    let (mut child, url) = start_foreman_binary(&db, &settings, false).await;
    let client = client();
    let total = 300;
    let lines: Vec<String> = (0..total)
        .map(|i| {
            let model = if i % 2 == 0 { CHAT } else { CHAT2 };
            chat_line(&format!("k{i}"), model, &format!("line {i}"))
        })
        .collect();
    let (_, id) = start_chat_batch(&client, &url, &lines).await;
    let mut url = url;
    let files = dir.path().join("data").join("files");
    // Kill when these many lines are done (the last ones at or past the end, when the
    // batch is finalising or has just ended).
    for done in [0, 40, 120, 220, total - 10, total] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        loop {
            let batch = batch(&client, &url, &id).await;
            let completed = batch["request_counts"]["completed"].as_i64().unwrap();
            let status = batch["status"].as_str().unwrap().to_string();
            if completed >= done || status == "finalizing" || status == "completed" {
                break;
            }
            assert!(tokio::time::Instant::now() < deadline, "stuck: {batch}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        // As an upload cut short by the kill leaves it: removed at the start.
        let partial = files.join("file-cut-short.partial");
        std::fs::write(&partial, "{\"custom_id\": \"half").unwrap();
        // As an upload cut between its rename and its record leaves it, an hour later.
        let orphan = files.join("file-never-recorded");
        std::fs::write(&orphan, "{}").unwrap();
        let touched = std::process::Command::new("touch")
            .args(["-d", "2 hours ago"])
            .arg(&orphan)
            .status()
            .unwrap();
        assert!(touched.success());
        (child, url) = start_foreman_binary(&db, &settings, false).await;
        eventually("the partial upload removed", async || !partial.exists()).await;
        eventually("the old unrecorded file removed", async || !orphan.exists()).await;
    }
    let finished = until(&client, &url, &id, "completed").await;
    assert_eq!(finished["request_counts"]["total"], total);
    assert_eq!(finished["request_counts"]["completed"], total);
    let output = content(&client, &url, &finished["output_file_id"]).await;
    let seen = custom_ids(&output);
    assert_eq!(seen.len(), total as usize);
    assert!(
        seen.values().all(|&n| n == 1),
        "each custom id exactly once"
    );
    assert!(
        output
            .iter()
            .all(|line| line["response"]["status_code"] == 200)
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    // One job per line, whatever ran twice.
    let store = Store::open(&db).await.unwrap();
    let jobs = store
        .list(ListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), total as usize);
    store.close().await;
}

/// On PostgreSQL the batch runs the same way, driven under the batch's lease, which
/// another instance cannot take while this one holds it, and which goes when the batch
/// has ended.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_batch_runs_on_postgres_under_its_lease() {
    let db = foreman_store::test_postgres::TestDatabase::create().await;
    let database = db.url.clone();
    let foreman = TestForeman::start_with(fast_sim(), move |config| {
        config.database = database;
        config.instance_id = "batch-a".to_owned();
    })
    .await;
    let client = client();
    let lines: Vec<String> = (0..30)
        .map(|i| {
            chat_line(
                &format!("p{i}"),
                if i % 2 == 0 { CHAT } else { CHAT2 },
                "pg",
            )
        })
        .collect();
    hold(&foreman.sim, true);
    let (_, id) = start_chat_batch(&client, &foreman.url, &lines).await;
    a_line_held(&foreman.sim).await;
    let other = Store::open(&db.url).await.unwrap();
    let holder = other
        .lease_holder(foreman_store::Lease::Batch(&id))
        .await
        .unwrap()
        .expect("the batch's lease");
    assert_eq!(holder.owner, "batch-a");
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    assert!(
        !other
            .acquire_lease(foreman_store::Lease::Batch(&id), "batch-b", now, 30_000)
            .await
            .unwrap(),
        "another instance cannot drive it while the lease holds"
    );
    hold(&foreman.sim, false);
    let finished = until(&client, &foreman.url, &id, "completed").await;
    assert_eq!(finished["request_counts"]["completed"], 30);
    let output = content(&client, &foreman.url, &finished["output_file_id"]).await;
    let seen = custom_ids(&output);
    assert_eq!(seen.len(), 30);
    assert!(seen.values().all(|&n| n == 1));
    // Done with it, the driver gives the lease up.
    eventually("the batch's lease released", async || {
        other
            .lease_holder(foreman_store::Lease::Batch(&id))
            .await
            .unwrap()
            .is_none()
    })
    .await;
    other.close().await;
    foreman.stop().await;
    db.drop_database().await;
}

/// `GET /v1/batches` pages newest first with `after` and `limit` in OpenAI's list shape;
/// `POST /v1/batches` refuses what OpenAI refuses (metadata over its limits, another
/// window, an unknown endpoint, an unknown file) in OpenAI's error shape.
#[tokio::test]
async fn batches_page_and_refuse_bad_requests() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let file = upload(&client, &foreman.url, &chat_line("x", CHAT, "page")).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let created = create(&client, &foreman.url, batch_body(&file)).await;
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    let (status, page) = get_json(&client, format!("{}/v1/batches?limit=2", foreman.url)).await;
    assert_eq!(status, 200);
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], true);
    assert_eq!(page["first_id"], ids[2]);
    assert_eq!(page["last_id"], ids[1]);
    let (_, rest) = get_json(
        &client,
        format!("{}/v1/batches?limit=2&after={}", foreman.url, ids[1]),
    )
    .await;
    assert_eq!(rest["has_more"], false);
    assert_eq!(rest["data"][0]["id"], ids[0]);
    assert_eq!(rest["data"].as_array().unwrap().len(), 1);
    let too_many: serde_json::Map<String, Value> =
        (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
    let long_key = json!({"k".repeat(65): "v"});
    let long_value = json!({"k": "v".repeat(513)});
    for (change, field) in [
        (json!({"metadata": too_many}), "metadata"),
        (json!({"metadata": long_key}), "metadata"),
        (json!({"metadata": long_value}), "metadata"),
        (json!({"metadata": {"k": 1}}), "metadata"),
        (json!({"completion_window": "48h"}), "completion_window"),
        (json!({"endpoint": "/v1/responses"}), "endpoint"),
        (json!({"input_file_id": "file-missing"}), "No such File"),
    ] {
        let mut body = batch_body(&file);
        for (key, value) in change.as_object().unwrap() {
            body[key] = value.clone();
        }
        let (status, _, answer) = post(&client, format!("{}/v1/batches", foreman.url), &body).await;
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert!(
            status == 400 || status == 404,
            "{change}: {status} {answer}"
        );
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(field), "{change}: {message}");
    }
    let (status, missing) =
        get_json(&client, format!("{}/v1/batches/batch_nothere", foreman.url)).await;
    assert_eq!(status, 404);
    assert_eq!(
        missing["error"]["message"],
        "No such Batch object: batch_nothere"
    );
    foreman.stop().await;
}

/// A batch over two models on a target that holds one at a time runs each model's lines
/// back to back: a handful of loads for a hundred lines, not one per line.
#[tokio::test]
async fn a_batch_is_drained_by_model() {
    let foreman = TestForeman::start(sim_with(
        &[
            "llama3.2:3b,load=20ms,tps=4000",
            "qwen2.5:0.5b,load=20ms,tps=4000",
        ],
        1,
        1,
    ))
    .await;
    let client = client();
    let lines: Vec<String> = (0..100)
        .map(|i| {
            chat_line(
                &format!("d{i}"),
                if i % 2 == 0 { CHAT } else { CHAT2 },
                "drain",
            )
        })
        .collect();
    let (_, id) = start_chat_batch(&client, &foreman.url, &lines).await;
    let finished = until(&client, &foreman.url, &id, "completed").await;
    assert_eq!(finished["request_counts"]["completed"], 100);
    let loads = foreman.sim.stats().loads_total;
    assert!(loads <= 3, "{loads} loads for 100 lines over two models");
    foreman.stop().await;
}

/// A live request that arrives while a batch's lines wait runs before them: the batch's
/// priority is below interactive work.
#[tokio::test]
async fn live_requests_run_before_waiting_batch_lines() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let lines: Vec<String> = (0..10)
        .map(|i| chat_line(&format!("l{i}"), CHAT, &format!("line {i}")))
        .collect();
    hold(&foreman.sim, true);
    let (_, id) = start_chat_batch(&client, &foreman.url, &lines).await;
    a_line_held(&foreman.sim).await;
    let live = spawn_chat(&client, &foreman.url, CHAT, "live");
    eventually("the live request queued", async || {
        foreman
            .jobs()
            .await
            .iter()
            .any(|job| job.idempotency_key.is_none())
    })
    .await;
    hold(&foreman.sim, false);
    assert_eq!(live.await.unwrap(), 200);
    until(&client, &foreman.url, &id, "completed").await;
    let jobs = foreman.jobs().await;
    let live_job = jobs
        .iter()
        .find(|job| job.idempotency_key.is_none())
        .unwrap();
    let live_start = live_job.started_at.unwrap();
    let batch_starts: Vec<i64> = jobs
        .iter()
        .filter(|job| job.idempotency_key.is_some())
        .map(|job| job.started_at.unwrap())
        .collect();
    // Only the line already running when the live request came started before it.
    assert_eq!(
        batch_starts
            .iter()
            .filter(|&&start| start <= live_start)
            .count(),
        1,
        "live started at {live_start}, lines at {batch_starts:?}"
    );
    foreman.stop().await;
}

/// The real binary SIGKILLed while a 20,000-line batch is being validated: after the
/// restart the batch is validated again from its stored state, runs, and a cancel then
/// ends it with every custom id once across its two files.
#[tokio::test]
async fn a_batch_killed_while_validating_goes_on_after_the_restart() {
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), fast_sim())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foreman.db");
    let db = db.to_str().unwrap().to_string();
    let settings = [("FOREMAN_OLLAMA_URL", sim.url())];
    let (mut child, url) = start_foreman_binary(&db, &settings, false).await;
    let client = client();
    let total = 20_000;
    let lines: Vec<String> = (0..total)
        .map(|i| chat_line(&format!("v{i}"), CHAT, &format!("line {i}")))
        .collect();
    hold(&sim, true);
    let (_, id) = start_chat_batch(&client, &url, &lines).await;
    let seen = batch(&client, &url, &id).await;
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert_eq!(seen["status"], "validating", "killed while validating");
    let (mut child, url) = start_foreman_binary(&db, &settings, false).await;
    let running = until(&client, &url, &id, "in_progress").await;
    assert_eq!(running["request_counts"]["total"], total);
    let (status, _, _) = post(&client, format!("{url}/v1/batches/{id}/cancel"), &json!({})).await;
    assert_eq!(status, 200);
    let cancelled = until(&client, &url, &id, "cancelled").await;
    hold(&sim, false);
    let output = content(&client, &url, &cancelled["output_file_id"]).await;
    let errors = content(&client, &url, &cancelled["error_file_id"]).await;
    let seen = custom_ids(&[output, errors].concat());
    assert_eq!(seen.len(), total as usize);
    assert!(seen.values().all(|&n| n == 1));
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}

/// The official `openai` client runs a `/v1/embeddings` batch with grouping off
/// (`FOREMAN_BATCH_EMBED_GROUP=1`): every line once, each with the vectors and the
/// `usage` the simulator gives the same request asked directly. The lines ran as queued
/// `openai_embedding` jobs at the batch priority, one call to the target each (grouped
/// batches: `batch_groups.rs`).
#[tokio::test]
async fn the_official_openai_client_runs_an_embeddings_batch() {
    let foreman = TestForeman::start_with(fast_sim(), |config| config.batch.embed_group = 1).await;
    let python = repo_root().join(".venv/bin/python");
    let script = repo_root().join("tests/python/openai_batch_embeddings.py");
    let before = foreman.sim.stats();
    let output = tokio::time::timeout(
        Duration::from_secs(300),
        tokio::process::Command::new(&python)
            .arg(&script)
            .args([
                foreman.url.as_str(),
                foreman.sim.url().as_str(),
                EMBED,
                "60",
            ])
            .env("PYTHONDONTWRITEBYTECODE", "1")
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the flow ends within five minutes")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success() && stdout.starts_with("ok"),
        "the openai client's embeddings batch flow failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let jobs = foreman.jobs().await;
    assert_eq!(jobs.len(), 60, "one job per line");
    let priority = foreman::config::ServeArgs::defaults().batch.batch_priority;
    assert!(
        jobs.iter()
            .all(|job| job.kind == foreman_store::JobKind::OpenAiEmbedding
                && job.priority == priority
                && job.state == foreman_store::JobState::Succeeded)
    );
    // One call per line through foreman, one more per line asked directly by the script.
    let after = foreman.sim.stats();
    let requests = |stats: &ollama_sim::StatsSnapshot| -> u64 {
        stats
            .models
            .iter()
            .filter(|(name, _)| name.starts_with(EMBED))
            .map(|(_, model)| model.requests)
            .sum()
    };
    assert_eq!(requests(&after) - requests(&before), 120);
    foreman.stop().await;
}

/// A batch on Ollama's `/api/embed` (foreman's extension) with grouping off: its lines
/// run as queued `embed` jobs, and each output line carries the answer the simulator
/// gives the same request directly, its own `prompt_eval_count` included.
#[tokio::test]
async fn a_native_embed_batch_answers_each_line_as_the_target_does() {
    let foreman = TestForeman::start_with(fast_sim(), |config| config.batch.embed_group = 1).await;
    let client = client();
    let bodies: Vec<Value> = (0..12)
        .map(|i| {
            let input = match i % 2 {
                0 => json!(format!("text {i} ").repeat(1 + i)),
                _ => json!(
                    (0..=i % 3)
                        .map(|p| format!("part {p} of {i}"))
                        .collect::<Vec<_>>()
                ),
            };
            json!({"model": EMBED, "input": input})
        })
        .collect();
    let lines: Vec<String> = bodies
        .iter()
        .enumerate()
        .map(|(i, body)| {
            json!({"custom_id": format!("n{i}"), "method": "POST", "url": "/api/embed", "body": body})
                .to_string()
        })
        .collect();
    let file = upload(&client, &foreman.url, &lines.join("\n")).await;
    let created = create(
        &client,
        &foreman.url,
        json!({"input_file_id": file, "endpoint": "/api/embed", "completion_window": "24h"}),
    )
    .await;
    let id = created["id"].as_str().unwrap().to_string();
    let done = until(&client, &foreman.url, &id, "completed").await;
    assert_eq!(done["request_counts"]["completed"], 12);
    let output = content(&client, &foreman.url, &done["output_file_id"]).await;
    assert_eq!(output.len(), 12);
    let mut counts = std::collections::HashSet::new();
    for line in &output {
        let custom_id = line["custom_id"].as_str().unwrap();
        let index: usize = custom_id[1..].parse().unwrap();
        let (status, _, direct) = post(
            &client,
            format!("{}/api/embed", foreman.sim.url()),
            &bodies[index],
        )
        .await;
        assert_eq!(status, 200);
        let direct: Value = serde_json::from_str(&direct).unwrap();
        let body = &line["response"]["body"];
        assert_eq!(line["response"]["status_code"], 200, "{line}");
        assert_eq!(body["model"], direct["model"]);
        assert_eq!(
            body["prompt_eval_count"], direct["prompt_eval_count"],
            "{custom_id}"
        );
        let got = body["embeddings"].as_array().unwrap();
        let want = direct["embeddings"].as_array().unwrap();
        assert_eq!(got.len(), want.len(), "{custom_id}");
        for (got, want) in got.iter().zip(want) {
            let (got, want) = (got.as_array().unwrap(), want.as_array().unwrap());
            assert_eq!(got.len(), want.len());
            assert!(
                got.iter()
                    .zip(want)
                    .all(|(a, b)| (a.as_f64().unwrap() - b.as_f64().unwrap()).abs() < 1e-7),
                "{custom_id}"
            );
        }
        counts.insert(body["prompt_eval_count"].as_i64().unwrap());
    }
    assert!(counts.len() > 1, "each line has its own count: {counts:?}");
    let jobs = foreman.jobs().await;
    assert_eq!(jobs.len(), 12);
    assert!(jobs.iter().all(
        |job| job.kind == foreman_store::JobKind::Embed && !job.payload.contains("\"stream\"")
    ));
    foreman.stop().await;
}

/// Batch files expire as OpenAI's do: an input (purpose `batch`) and a batch's output
/// carry `expires_at` `FOREMAN_BATCH_FILES_TTL` after they were written, and the
/// janitor removes them (record and bytes) once past it; a file of another purpose has
/// none. The input of a batch still running stays past its expiry until the batch ends.
#[tokio::test]
async fn batch_files_expire_and_the_janitor_removes_them() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.batch.files_ttl = Duration::from_secs(2);
        config.janitor_interval = Duration::from_millis(100);
    })
    .await;
    let client = client();
    let files = foreman.db_path.with_file_name("data").join("files");
    let gone = async |id: &str| {
        let (status, _) = get_json(&client, format!("{}/v1/files/{id}", foreman.url)).await;
        status == 404 && !files.join(id).exists()
    };

    // A batch that ends: its input and output expire.
    let lines: Vec<String> = (0..3)
        .map(|i| chat_line(&format!("x{i}"), CHAT, &format!("line {i}")))
        .collect();
    let input = upload(&client, &foreman.url, &lines.join("\n")).await;
    let (_, uploaded) = get_json(&client, format!("{}/v1/files/{input}", foreman.url)).await;
    assert_eq!(
        uploaded["expires_at"].as_i64().unwrap() - uploaded["created_at"].as_i64().unwrap(),
        2,
        "{uploaded}"
    );
    let created = create(&client, &foreman.url, batch_body(&input)).await;
    let id = created["id"].as_str().unwrap().to_string();
    let done = until(&client, &foreman.url, &id, "completed").await;
    let output = done["output_file_id"].as_str().unwrap().to_string();
    let (_, written) = get_json(&client, format!("{}/v1/files/{output}", foreman.url)).await;
    assert_eq!(
        written["expires_at"].as_i64().unwrap() - written["created_at"].as_i64().unwrap(),
        2,
        "{written}"
    );
    assert!(files.join(&output).exists());
    eventually("the output file expired and removed", async || {
        gone(&output).await
    })
    .await;
    eventually("the input file expired and removed", async || {
        gone(&input).await
    })
    .await;

    // A batch held running: its input outlives its expiry; a file uploaded after it
    // expires later, so once that one is gone the input is past its expiry too.
    let held_input = upload(&client, &foreman.url, &chat_line("h", CHAT, "held")).await;
    hold(&foreman.sim, true);
    let held = create(&client, &foreman.url, batch_body(&held_input)).await;
    let held_id = held["id"].as_str().unwrap().to_string();
    a_line_held(&foreman.sim).await;
    let later = upload(&client, &foreman.url, &chat_line("l", CHAT, "later")).await;
    eventually("the later file expired and removed", async || {
        gone(&later).await
    })
    .await;
    let (status, kept) = get_json(&client, format!("{}/v1/files/{held_input}", foreman.url)).await;
    assert_eq!(status, 200, "the running batch's input stays: {kept}");
    assert!(files.join(&held_input).exists());
    hold(&foreman.sim, false);
    until(&client, &foreman.url, &held_id, "completed").await;
    eventually("the input removed once its batch ended", async || {
        gone(&held_input).await
    })
    .await;
    foreman.stop().await;
}

/// A `foreman` process SIGKILLed while it writes a batch's output files: every line has
/// finished, finalisation has created its partial output file, and the kill lands before
/// the files are recorded. Proved structurally after the kill: the row is still
/// `finalizing` and the partial file is on disk, with no output file recorded. After the
/// restart the partial file is swept, finalisation writes the files again from the lines'
/// jobs, and the output has each `custom_id` once.
///
/// The batch is large (2,000 lines with long answers), so its finalisation lasts far
/// longer than the test takes to see the partial file and kill; should finalisation
/// still win that race, the test says so and tries again with a new batch (at most three).
#[tokio::test]
async fn a_batch_killed_while_writing_its_output_files_writes_them_again() {
    let sim = ollama_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        sim_with(&["llama3.2:3b,load=20ms,tps=200000"], 4, 1),
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foreman.db");
    let db = db.to_str().unwrap().to_string();
    let settings = [("FOREMAN_OLLAMA_URL", sim.url())];
    let (mut child, mut url) = start_foreman_binary(&db, &settings, false).await;
    let client = client();
    let files = dir.path().join("data").join("files");
    let total = 2_000;
    let mut killed_mid_write = false;
    for attempt in 0..3 {
        let lines: Vec<String> = (0..total)
            .map(|i| {
                json!({
                    "custom_id": format!("w{attempt}-{i}"),
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {"model": CHAT, "messages": [{"role": "user", "content": format!("line {i}")}], "max_tokens": 200},
                })
                .to_string()
            })
            .collect();
        let (_, id) = start_chat_batch(&client, &url, &lines).await;
        let partial = files.join(format!(
            "{}.partial",
            foreman::batch::ids::output_file_id(&id)
        ));
        // The partial output file appears when finalisation starts writing.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
        while !partial.exists() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "finalisation never started: {}",
                batch(&client, &url, &id).await
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        child.start_kill().unwrap();
        child.wait().await.unwrap();
        let store = Store::open(&db).await.unwrap();
        let row = store.get_batch(&id).await.unwrap().unwrap();
        store.close().await;
        if row.status == foreman_store::BatchStatus::Finalizing {
            assert!(partial.exists(), "the kill left the partial output file");
            assert_eq!(row.output_file_id, None, "no output file was recorded");
            assert_eq!(row.completed, total, "every line had run: {row:?}");
            killed_mid_write = true;
        } else {
            eprintln!(
                "attempt {attempt}: finalisation ended ({}) before the kill landed",
                row.status
            );
        }
        (child, url) = start_foreman_binary(&db, &settings, false).await;
        let finished = until(&client, &url, &id, "completed").await;
        assert!(!partial.exists(), "the partial file is swept at the start");
        assert_eq!(finished["request_counts"]["completed"], total);
        let output = content(&client, &url, &finished["output_file_id"]).await;
        let seen = custom_ids(&output);
        assert_eq!(seen.len(), total as usize);
        assert!(
            seen.values().all(|&n| n == 1),
            "each custom id exactly once"
        );
        if killed_mid_write {
            break;
        }
    }
    child.start_kill().unwrap();
    child.wait().await.unwrap();
    assert!(
        killed_mid_write,
        "in three tries no kill landed while the output files were written"
    );
}

/// A batch created with an API key is that key's work: a line for a model the key may
/// not use fails validation by line (nothing queued), and the lines of an allowed batch
/// are queued as the key's jobs (fair share) and booked to its usage.
#[tokio::test]
async fn a_keys_batch_keeps_to_its_models_and_is_booked_to_it() {
    const TOKEN: &str = "batch-admin-s3cret";
    let foreman =
        TestForeman::start_with(fast_sim(), |config| config.token = Some(TOKEN.into())).await;
    let response = client()
        .post(format!("{}/foreman/keys", foreman.url))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "batcher", "scopes": ["batch"], "models": [CHAT], "weight": 2}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let secret = response.json::<Value>().await.unwrap()["key"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut headers = reqwest::header::HeaderMap::new();
    headers.insert(
        reqwest::header::AUTHORIZATION,
        format!("Bearer {secret}").parse().unwrap(),
    );
    let keyed = reqwest::Client::builder()
        .no_proxy()
        .default_headers(headers)
        .build()
        .unwrap();

    let refused = [chat_line("a", CHAT, "one"), chat_line("b", CHAT2, "two")];
    let file = upload(&keyed, &foreman.url, &refused.join("\n")).await;
    let created = create(&keyed, &foreman.url, batch_body(&file)).await;
    let failed = until(
        &keyed,
        &foreman.url,
        created["id"].as_str().unwrap(),
        "failed",
    )
    .await;
    let errors = failed["errors"]["data"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{failed}");
    assert_eq!(errors[0]["code"], "model_not_allowed");
    assert_eq!(errors[0]["line"], 2);
    assert!(foreman.jobs().await.is_empty(), "nothing was queued");

    let allowed: Vec<String> = (0..4)
        .map(|n| chat_line(&format!("c{n}"), CHAT, &format!("line {n}")))
        .collect();
    let file = upload(&keyed, &foreman.url, &allowed.join("\n")).await;
    let created = create(&keyed, &foreman.url, batch_body(&file)).await;
    let done = until(
        &keyed,
        &foreman.url,
        created["id"].as_str().unwrap(),
        "completed",
    )
    .await;
    let output = content(&keyed, &foreman.url, &done["output_file_id"]).await;
    assert_eq!(output.len(), 4);
    let completion: i64 = output
        .iter()
        .map(|line| {
            line["response"]["body"]["usage"]["completion_tokens"]
                .as_i64()
                .unwrap()
        })
        .sum();
    assert!(completion > 0);
    let jobs = foreman.jobs().await;
    assert_eq!(jobs.len(), 4);
    for job in &jobs {
        let caller = job
            .caller
            .as_ref()
            .expect("a batch line has its key's caller");
        assert_eq!((caller.name.as_str(), caller.weight), ("batcher", 2));
    }
    let usage_url = format!("{}/foreman/keys/usage?key=batcher", foreman.url);
    let admin = client();
    eventually("the batch's usage to be booked to its key", async || {
        let usage: Value = admin
            .get(&usage_url)
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        usage["keys"][0]["completion_tokens"] == json!(completion)
    })
    .await;
    foreman.stop().await;
}

/// A line the target refuses lands in the error file with the target's status, and its
/// body's error type is the one the live `/v1` routes give that status.
#[tokio::test]
async fn a_refused_line_is_in_the_error_file_with_its_status() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    foreman
        .sim
        .set_faults(&ollama_sim::FaultsUpdate {
            error_rate: Some(1.0),
            error_status: Some(403),
            ..Default::default()
        })
        .unwrap();
    let lines = [chat_line("refused", CHAT, "no")];
    let (_, id) = start_chat_batch(&client, &foreman.url, &lines).await;
    let done = until(&client, &foreman.url, &id, "completed").await;
    assert_eq!(done["request_counts"]["failed"], 1, "{done}");
    assert!(done["output_file_id"].is_null(), "{done}");
    let errors = content(&client, &foreman.url, &done["error_file_id"]).await;
    assert_eq!(errors.len(), 1, "{errors:?}");
    let line = &errors[0];
    assert_eq!(line["custom_id"], "refused");
    assert_eq!(line["response"]["status_code"], 403, "{line}");
    assert_eq!(
        line["response"]["body"]["error"]["type"], "permission_error",
        "{line}"
    );
    assert_eq!(line["error"]["code"], "http_403", "{line}");
    foreman.stop().await;
}
