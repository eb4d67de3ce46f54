//! The async jobs API over real HTTP: submit, poll, long-poll, list, cancel and
//! idempotency.

use foreman_store::JobState;
use futures::future::join_all;
use ollama_sim::ModelSpec;
use serde_json::{Value, json};

use crate::common::*;

fn job_request(model: &str, text: &str) -> Value {
    json!({"kind": "chat", "request": {"model": model, "messages": [{"role": "user", "content": text}]}})
}

async fn submit(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    key: Option<&str>,
) -> (u16, Value) {
    let mut request = client.post(format!("{url}/jobs")).json(body);
    if let Some(key) = key {
        request = request.header("Idempotency-Key", key);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn a_job_is_submitted_long_polled_and_listed() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let mut body = job_request(CHAT, "summarise the news");
    body["metadata"] = json!({"batch": 7});
    let (status, job) = submit(&client, &foreman.url, &body, None).await;
    assert_eq!(status, 202, "{job}");
    assert_eq!(job["kind"], "chat");
    assert_eq!(job["model"], CHAT);
    assert_eq!(
        job["priority"], 0,
        "async jobs default below interactive ones"
    );
    assert_eq!(job["metadata"], json!({"batch": 7}));
    let id = job["id"].as_str().unwrap().to_string();
    let (status, done) = get_json(&client, format!("{}/jobs/{id}?wait=20s", foreman.url)).await;
    assert_eq!(status, 200);
    assert_eq!(done["state"], "succeeded", "{done}");
    assert_eq!(done["result"]["done"], true);
    assert_eq!(done["result"]["message"]["role"], "assistant");
    assert!(
        !done["result"]["message"]["content"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert!(done["started_at"].is_string() && done["finished_at"].is_string());
    assert!(done["run_ms"].as_i64().unwrap() >= 0);
    assert_eq!(done["queue_position"], Value::Null);

    // The stored result equals what the target answers with "stream": false.
    let (_, _, direct) = post(
        &client,
        format!("{}/api/chat", foreman.sim.url()),
        &chat_body(CHAT, "summarise the news", false),
    )
    .await;
    let direct: Value = serde_json::from_str(&direct).unwrap();
    assert_eq!(
        done["result"]["message"]["content"],
        direct["message"]["content"]
    );

    for i in 0..3 {
        let (status, _) = submit(
            &client,
            &foreman.url,
            &job_request(CHAT2, &format!("more {i}")),
            None,
        )
        .await;
        assert_eq!(status, 202);
    }
    let (_, page) = get_json(&client, format!("{}/jobs?limit=2", foreman.url)).await;
    let jobs = page["jobs"].as_array().unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs[0]["id"].as_str().unwrap() > jobs[1]["id"].as_str().unwrap(),
        "newest first"
    );
    let cursor = page["next_cursor"].as_str().unwrap();
    let (_, rest) = get_json(
        &client,
        format!("{}/jobs?limit=2&cursor={cursor}", foreman.url),
    )
    .await;
    assert_eq!(rest["jobs"].as_array().unwrap().len(), 2);
    assert_eq!(rest["next_cursor"], Value::Null);
    let (_, only) = get_json(&client, format!("{}/jobs?model={CHAT}", foreman.url)).await;
    assert_eq!(only["jobs"].as_array().unwrap().len(), 1);
    let (status, error) = get_json(&client, format!("{}/jobs?state=lost", foreman.url)).await;
    assert_eq!(status, 400);
    assert!(error["error"].as_str().unwrap().contains("unknown state"));
    foreman.stop().await;
}

#[tokio::test]
async fn one_idempotency_key_makes_one_job_even_under_concurrent_submits() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let body = job_request(CHAT, "exactly once");
    let submits = (0..12).map(|_| {
        let (client, url, body) = (client.clone(), foreman.url.clone(), body.clone());
        async move { submit(&client, &url, &body, Some("order-42")).await }
    });
    let answers = join_all(submits).await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(_, job)| job["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids.len(), 1, "one job for one key");
    assert_eq!(
        answers.iter().filter(|(status, _)| *status == 202).count(),
        1
    );
    assert!(
        answers
            .iter()
            .all(|(status, _)| *status == 202 || *status == 200)
    );
    let (status, error) = submit(
        &client,
        &foreman.url,
        &job_request(CHAT, "something else"),
        Some("order-42"),
    )
    .await;
    assert_eq!(status, 409);
    assert!(error["error"].as_str().unwrap().contains("Idempotency-Key"));
    foreman.stop().await;
}

#[tokio::test]
async fn cancel_in_each_state() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    // The target holds the first job's request: it runs until it is cancelled.
    hold(&foreman.sim, true);
    let (_, running) = submit(&client, &foreman.url, &job_request(CHAT, "slow"), None).await;
    let running_id = running["id"].as_str().unwrap().to_string();
    eventually("the first job to reach the target", async || {
        foreman.sim.stats().held == 1
    })
    .await;
    let (_, queued) = submit(&client, &foreman.url, &job_request(CHAT2, "waiting"), None).await;
    let queued_id = queued["id"].as_str().unwrap().to_string();
    let (_, polled) = get_json(
        &client,
        format!("{}/jobs/{queued_id}?wait=100ms", foreman.url),
    )
    .await;
    assert_eq!(
        polled["state"], "queued",
        "a long poll that times out shows the job as it is"
    );
    assert_eq!(polled["queue_position"], 0);

    let cancelled = client
        .post(format!("{}/jobs/{queued_id}/cancel", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    assert_eq!(
        cancelled.json::<Value>().await.unwrap()["state"],
        "cancelled"
    );

    let aborting = client
        .delete(format!("{}/jobs/{running_id}", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(aborting.status(), 202, "a running job is being aborted");
    let (_, ended) = get_json(
        &client,
        format!("{}/jobs/{running_id}?wait=20s", foreman.url),
    )
    .await;
    assert_eq!(ended["state"], "cancelled");
    eventually("the target to let the request go", async || {
        foreman.sim.stats().held == 0
    })
    .await;

    let again = client
        .post(format!("{}/jobs/{running_id}/cancel", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 409);
    assert_eq!(
        again.json::<Value>().await.unwrap()["error"],
        format!("job {running_id} is already cancelled")
    );
    let store = foreman.store().await;
    assert_eq!(
        store
            .get(queued_id.parse().unwrap())
            .await
            .unwrap()
            .unwrap()
            .state,
        JobState::Cancelled
    );
    assert!(
        !foreman.sim.stats().models.contains_key(CHAT2),
        "the cancelled queued job never ran"
    );
    foreman.stop().await;
}

#[tokio::test]
async fn bad_submissions_and_unknown_jobs_get_clear_errors() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let cases = [
        (json!({"request": {"model": CHAT}}), 400, "kind is required"),
        (
            json!({"kind": "embed", "request": {"model": CHAT}}),
            400,
            "unknown kind",
        ),
        (json!({"kind": "chat"}), 400, "request is required"),
        (
            json!({"kind": "chat", "request": {"messages": []}}),
            400,
            "request.model is required",
        ),
        (
            json!({"kind": "chat", "request": {"model": "nope"}}),
            404,
            "model 'nope' not found",
        ),
        (
            json!({"kind": "chat", "request": {"model": CHAT}, "priority": 99}),
            400,
            "priority must be",
        ),
        (
            json!({"kind": "chat", "request": {"model": CHAT}, "webhook": "http://example.com/hook"}),
            400,
            "webhooks are off",
        ),
    ];
    for (body, status, message) in cases {
        let (got, error) = submit(&client, &foreman.url, &body, None).await;
        assert_eq!(got, status, "{body}");
        assert!(
            error["error"].as_str().unwrap().contains(message),
            "{body}: {error}"
        );
    }
    let (status, error) = get_json(&client, format!("{}/jobs/not-a-ulid", foreman.url)).await;
    assert_eq!(status, 400, "{error}");
    let missing = foreman_store::JobId::generate();
    let (status, error) = get_json(&client, format!("{}/jobs/{missing}", foreman.url)).await;
    assert_eq!(
        (status, error),
        (404, json!({"error": format!("job {missing} not found")}))
    );
    let (status, _) = get_json(&client, format!("{}/jobs/{missing}?wait=soon", foreman.url)).await;
    assert_eq!(status, 400);
    foreman.stop().await;
}

async fn event_lines(client: &reqwest::Client, url: String) -> Vec<Value> {
    let response = client.get(url).send().await.unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let body = response.text().await.unwrap();
    body.lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

/// Watching a job that is already generating gives its whole output, not only what
/// comes after the call.
#[tokio::test]
async fn events_of_a_running_job_start_from_its_first_chunk() {
    let mut sim = fast_sim();
    // 400 tokens at 100 tokens/s: the job runs for seconds after a first watcher has
    // seen its first chunks.
    sim.models[0] = ModelSpec::parse("llama3.2:3b,load=10ms,tps=100").unwrap();
    sim.reply_tokens = 400;
    let foreman = TestForeman::start(sim).await;
    let client = client();
    let (_, job) = submit(&client, &foreman.url, &job_request(CHAT, "go on"), None).await;
    let id = job["id"].as_str().unwrap().to_string();
    let events_url = format!("{}/jobs/{id}/events", foreman.url);
    let mut first = client.get(&events_url).send().await.unwrap();
    let mut seen = Vec::new();
    while seen.iter().filter(|&&b| b == b'\n').count() < 3 {
        seen.extend_from_slice(&first.chunk().await.unwrap().expect("more chunks"));
    }
    // Three chunks are out: a watcher joining now joins mid-run.
    let lines = event_lines(&client, events_url).await;
    assert!(lines.len() > 8, "a live stream, not a replay: {lines:?}");
    let early: Value = serde_json::from_slice(seen.split(|&b| b == b'\n').next().unwrap()).unwrap();
    assert_eq!(lines[0], early, "the late watcher got the first chunk too");
    assert_eq!(lines.last().unwrap()["done"], true);
    let streamed: String = lines
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    let (_, done) = get_json(&client, format!("{}/jobs/{id}", foreman.url)).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(
        done["result"]["message"]["content"].as_str().unwrap(),
        streamed,
        "the watcher got every chunk"
    );
    foreman.stop().await;
}

#[tokio::test]
async fn events_stream_a_waiting_job_live_and_replay_a_finished_one() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    hold(&foreman.sim, true);
    let (_, blocker) = submit(&client, &foreman.url, &job_request(CHAT, "hold"), None).await;
    eventually("the blocker to reach the target", async || {
        foreman.sim.stats().held == 1
    })
    .await;
    let (_, waiting) = submit(&client, &foreman.url, &job_request(CHAT2, "tell me"), None).await;
    let waiting_id = waiting["id"].as_str().unwrap().to_string();
    // Watched from before it starts, the stream carries every chunk.
    let mut watch = client
        .get(format!("{}/jobs/{waiting_id}/events", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(watch.status(), 200);
    let (_, still) = get_json(&client, format!("{}/jobs/{waiting_id}", foreman.url)).await;
    assert_eq!(
        still["state"], "queued",
        "the watcher is connected before it runs"
    );
    hold(&foreman.sim, false);
    let mut body = Vec::new();
    while let Some(chunk) = watch.chunk().await.unwrap() {
        body.extend_from_slice(&chunk);
    }
    let lines: Vec<Value> = String::from_utf8(body)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(lines.len() > 2);
    let last = lines.last().unwrap();
    assert_eq!(last["done"], true);
    let streamed: String = lines
        .iter()
        .map(|l| l["message"]["content"].as_str().unwrap())
        .collect();
    let (_, done) = get_json(&client, format!("{}/jobs/{waiting_id}", foreman.url)).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(
        done["result"]["message"]["content"].as_str().unwrap(),
        streamed
    );

    let replay = event_lines(&client, format!("{}/jobs/{waiting_id}/events", foreman.url)).await;
    assert_eq!(
        replay,
        vec![done["result"].clone()],
        "a finished job replays its result"
    );

    let blocker_id = blocker["id"].as_str().unwrap();
    let (_, blocker_done) = get_json(
        &client,
        format!("{}/jobs/{blocker_id}?wait=20s", foreman.url),
    )
    .await;
    assert_eq!(blocker_done["state"], "succeeded");

    hold(&foreman.sim, true);
    let (_, doomed) = submit(
        &client,
        &foreman.url,
        &job_request(CHAT, "long story"),
        None,
    )
    .await;
    let doomed_id = doomed["id"].as_str().unwrap().to_string();
    eventually("the job to reach the target", async || {
        foreman.sim.stats().held == 1
    })
    .await;
    let watcher = tokio::spawn({
        let (client, url) = (
            client.clone(),
            format!("{}/jobs/{doomed_id}/events", foreman.url),
        );
        async move { event_lines(&client, url).await }
    });
    let cancel = client
        .post(format!("{}/jobs/{doomed_id}/cancel", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(cancel.status(), 202, "the job was running");
    let lines = watcher.await.unwrap();
    // The error says who cancelled the job.
    let reason = json!({"error": "cancelled by a cancel call"});
    assert_eq!(lines.last().unwrap(), &reason);
    let replay = event_lines(&client, format!("{}/jobs/{doomed_id}/events", foreman.url)).await;
    assert_eq!(replay, vec![reason]);
    foreman.stop().await;
}

#[tokio::test]
async fn the_openapi_document_describes_every_jobs_route() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let response = client
        .get(format!("{}/openapi.json", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["openapi"], "3.1.0");
    let paths = doc["paths"].as_object().unwrap();
    for (path, methods) in [
        ("/jobs", vec!["post", "get"]),
        ("/jobs/{id}", vec!["get", "delete"]),
        ("/jobs/{id}/cancel", vec!["post"]),
        ("/jobs/{id}/events", vec!["get"]),
        ("/healthz", vec!["get"]),
    ] {
        for method in methods {
            let operation = &paths[path][method];
            assert!(
                operation["responses"].is_object(),
                "{method} {path} is described"
            );
        }
    }
    // Every schema a document points at exists.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/").skip(1) {
        let pointer = format!("/components/{}", reference.split('"').next().unwrap());
        assert!(doc.pointer(&pointer).is_some(), "{pointer} is defined");
    }
    // The shapes the API really answers with match the document's required fields.
    let (_, job) = submit(&client, &foreman.url, &job_request(CHAT, "described"), None).await;
    for field in doc["components"]["schemas"]["Job"]["required"]
        .as_array()
        .unwrap()
    {
        assert!(
            job.get(field.as_str().unwrap()).is_some(),
            "job has {field}"
        );
    }
    foreman.stop().await;
}

#[tokio::test]
async fn large_results_become_artifacts_served_safely_and_pruned_with_their_job() {
    let foreman =
        TestForeman::start_with(fast_sim(), |config| config.artifact_threshold = 64).await;
    let client = client();
    let (_, job) = submit(
        &client,
        &foreman.url,
        &job_request(CHAT, "a long answer"),
        None,
    )
    .await;
    let id = job["id"].as_str().unwrap().to_string();
    let (_, done) = get_json(&client, format!("{}/jobs/{id}?wait=20s", foreman.url)).await;
    assert_eq!(done["state"], "succeeded");
    assert_eq!(done["result"], Value::Null, "the result lives in a file");
    let artifact = &done["artifacts"][0];
    assert_eq!(artifact["name"], "result.json");
    assert_eq!(artifact["content_type"], "application/json");
    assert_eq!(artifact["url"], format!("/jobs/{id}/artifacts/result.json"));

    let response = client
        .get(format!(
            "{}{}",
            foreman.url,
            artifact["url"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/json");
    assert_eq!(
        response.headers()["content-length"].to_str().unwrap(),
        artifact["size"].to_string()
    );
    let result: Value = response.json().await.unwrap();
    assert_eq!(result["done"], true);
    assert!(!result["message"]["content"].as_str().unwrap().is_empty());
    let replay = event_lines(&client, format!("{}/jobs/{id}/events", foreman.url)).await;
    assert_eq!(
        replay,
        vec![result],
        "events replay the result from its file"
    );

    for (name, status) in [
        ("..%2F..%2Fforeman.db", 400),
        (".hidden", 400),
        ("result.json%00", 400),
        ("other.json", 404),
    ] {
        let response = client
            .get(format!("{}/jobs/{id}/artifacts/{name}", foreman.url))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{name}");
        let error: Value = response.json().await.unwrap();
        assert!(error["error"].is_string());
    }
    let traversal = client
        .get(format!(
            "{}/jobs/{id}/artifacts/../../../foreman.db",
            foreman.url
        ))
        .send()
        .await
        .unwrap();
    assert_ne!(
        traversal.status(),
        200,
        "a literal ../ never reaches a file"
    );

    // Restarted with a TTL the job has outlived, foreman's janitor prunes the job and
    // removes its file too.
    let data_dir = foreman.db_path.with_file_name("data");
    let folder = data_dir.join("artifacts").join(&id);
    assert!(folder.join("result.json").exists());
    let mut foreman = foreman;
    foreman
        .restart_with(|config| {
            config.job_ttl = std::time::Duration::from_millis(1);
            config.janitor_interval = std::time::Duration::from_millis(100);
        })
        .await;
    eventually("the janitor to remove the job's files", async || {
        !folder.exists()
    })
    .await;
    let (status, _) = get_json(&client, format!("{}/jobs/{id}", foreman.url)).await;
    assert_eq!(status, 404, "the job was pruned");
    assert!(data_dir.join("artifacts").exists());
    foreman.stop().await;
}
