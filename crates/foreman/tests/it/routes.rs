//! Every route and its errors, through foreman in front of the simulator.

use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn chat_streams_through_the_queue_like_the_target() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let request = json!({"model": CHAT, "messages": [{"role": "user", "content": "hello there"}]});
    let (status, headers, body) =
        post(&client, format!("{}/api/chat", foreman.url), &request).await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(
        headers["x-foreman-job-id"].to_str().unwrap().len(),
        26,
        "a ULID"
    );
    let (_, _, direct) = post(&client, format!("{}/api/chat", foreman.sim.url()), &request).await;
    let strip = |text: &str| -> Vec<Value> {
        text.lines()
            .map(|line| {
                let mut chunk: Value = serde_json::from_str(line).unwrap();
                let object = chunk.as_object_mut().unwrap();
                for volatile in [
                    "created_at",
                    "total_duration",
                    "load_duration",
                    "prompt_eval_duration",
                    "eval_duration",
                ] {
                    object.remove(volatile);
                }
                chunk
            })
            .collect()
    };
    assert_eq!(
        strip(&body),
        strip(&direct),
        "the same chunks as from the target"
    );
    assert_eq!(strip(&body).len(), 25);
    foreman.stop().await;
}

#[tokio::test]
async fn non_streaming_chat_and_generate_return_one_object() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let (status, headers, body) = post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body(CHAT, "hi", false),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["done"], true);
    assert_eq!(reply["message"]["role"], "assistant");
    assert!(!reply["message"]["content"].as_str().unwrap().is_empty());
    let job_id = headers["x-foreman-job-id"].to_str().unwrap().to_string();
    let store = foreman.store().await;
    let job = recorded(&store, job_id.parse().unwrap()).await;
    assert_eq!(job.state, foreman_store::JobState::Succeeded);
    let stored: Value = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
    assert_eq!(stored["message"]["content"], reply["message"]["content"]);
    let (status, _, body) = post(&client, format!("{}/api/generate", foreman.url),
        &json!({"model": CHAT2, "prompt": "once upon", "stream": false, "options": {"num_predict": 3}})).await;
    assert_eq!(status, 200);
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["eval_count"], 3);
    assert_eq!(reply["done_reason"], "length");
    assert!(reply["context"].is_array());
    foreman.stop().await;
}

#[tokio::test]
async fn streamed_jobs_store_the_aggregated_result() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let (_, headers, body) = post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body(CHAT, "story", true),
    )
    .await;
    let streamed: String = body
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["message"]["content"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let id = headers["x-foreman-job-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let store = foreman.store().await;
    let job = recorded(&store, id).await;
    let stored: Value = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
    assert_eq!(stored["message"]["content"].as_str().unwrap(), streamed);
    assert_eq!(stored["done"], true);
    foreman.stop().await;
}

#[tokio::test]
async fn embeddings_show_tags_and_ps_bypass_the_queue() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let (status, headers, body) = post(
        &client,
        format!("{}/api/embed", foreman.url),
        &json!({"model": EMBED, "input": ["a", "b"]}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        headers.get("x-foreman-job-id").is_none(),
        "embeddings are not jobs"
    );
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["embeddings"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let (status, _, body) = post(
        &client,
        format!("{}/api/embeddings", foreman.url),
        &json!({"model": EMBED, "prompt": "a"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(serde_json::from_str::<Value>(&body).unwrap()["embedding"].is_array());
    let (status, _, body) = post(
        &client,
        format!("{}/api/embed", foreman.url),
        &json!({"model": "nope", "input": "a"}),
    )
    .await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (
            404,
            json!({"error": "model \"nope\" not found, try pulling it first"})
        ),
        "the target's error passes through"
    );
    let (status, _, body) = post(
        &client,
        format!("{}/api/show", foreman.url),
        &json!({"model": CHAT}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(
        serde_json::from_str::<Value>(&body)
            .unwrap()
            .get("model_info")
            .is_some()
    );
    let tags = client
        .get(format!("{}/api/tags", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        tags.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let direct: Value = client
        .get(format!("{}/api/tags", foreman.sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        tags.json::<Value>().await.unwrap(),
        direct,
        "tags are the target's, from the cache"
    );
    let requests_before = foreman.sim.stats().requests_total;
    post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body(CHAT, "load it", false),
    )
    .await;
    // Right after the answer, not a poll later: a client that loads a model and then
    // looks at /api/ps sees it, as it would at the target.
    let ps: Value = client
        .get(format!("{}/api/ps", foreman.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        ps["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["model"] == CHAT),
        "{ps}"
    );
    assert_eq!(foreman.sim.stats().requests_total, requests_before + 1);
    foreman.stop().await;
}

#[tokio::test]
async fn bad_requests_get_ollama_shaped_errors() {
    let foreman = TestForeman::start_with(fast_sim(), |config| config.max_body = 4096).await;
    let client = client();
    let url = |path: &str| format!("{}{path}", foreman.url);
    let raw = async |path: &str, body: &str| {
        let response = client
            .post(url(path))
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let content_type = response.headers()["content-type"]
            .to_str()
            .unwrap()
            .to_string();
        (
            status,
            content_type,
            response.json::<Value>().await.unwrap(),
        )
    };
    let cases = [
        (
            "/api/chat",
            "",
            400,
            json!({"error": "missing request body"}),
        ),
        (
            "/api/chat",
            "{\"model\":",
            400,
            json!({"error": "unexpected EOF"}),
        ),
        (
            "/api/chat",
            "{\"messages\":[]}",
            400,
            json!({"error": "model is required"}),
        ),
        (
            "/api/generate",
            "{\"prompt\":\"x\"}",
            404,
            json!({"error": "model '' not found"}),
        ),
        (
            "/api/chat",
            "{\"model\":\"nope\",\"messages\":[]}",
            404,
            json!({"error": "model 'nope' not found"}),
        ),
        (
            "/api/generate",
            "{\"model\":\"nope\",\"prompt\":\"x\"}",
            404,
            json!({"error": "model 'nope' not found"}),
        ),
        (
            "/api/chat",
            "{\"model\":\"llama3.2:3b\",\"stream\":\"yes\"}",
            400,
            json!({"error": "json: cannot unmarshal string into Go struct field ChatRequest.stream of type bool"}),
        ),
        (
            "/api/chat",
            "{\"model\":\"llama3.2:3b\",\"messages\":\"hi\"}",
            400,
            json!({"error": "json: cannot unmarshal string into Go struct field ChatRequest.messages of type []api.Message"}),
        ),
    ];
    for (path, body, status, error) in cases {
        let (got_status, content_type, got) = raw(path, body).await;
        assert_eq!((got_status, &got), (status, &error), "{path} {body}");
        assert_eq!(content_type, "application/json; charset=utf-8");
    }
    let huge = format!(
        "{{\"model\":\"{CHAT}\",\"prompt\":\"{}\"}}",
        "x".repeat(8192)
    );
    let (status, _, body) = raw("/api/generate", &huge).await;
    assert_eq!(status, 413);
    assert!(body["error"].as_str().unwrap().contains("too large"));
    let missing = client.get(url("/api/nope")).send().await.unwrap();
    assert_eq!(
        (
            missing.status().as_u16(),
            missing.text().await.unwrap().as_str()
        ),
        (404, "404 page not found")
    );
    let wrong = client.get(url("/api/chat")).send().await.unwrap();
    assert_eq!(wrong.status(), 405);
    assert_eq!(
        foreman.sim.stats().requests_total,
        0,
        "nothing bad reached the target"
    );
    assert!(foreman.jobs().await.is_empty(), "no job was created");
    foreman.stop().await;
}

#[tokio::test]
async fn a_cache_miss_forces_one_fresh_poll() {
    let mut sim = fast_sim();
    sim.faults.refuse_connections = true;
    let foreman = TestForeman::start_with(sim, |config| {
        config.poll_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let client = client();
    eventually("the start-up poll to fail", async || {
        let health: Value = client
            .get(format!("{}/healthz", foreman.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        health["degraded"] == true
    })
    .await;
    foreman.sim.refuse_connections(false);
    // The cache is empty and the next scheduled poll is an hour away: only the
    // forced re-poll on a miss can find the model.
    let (status, _, _) = post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body("LLAMA3.2:3b", "hi", false),
    )
    .await;
    assert_eq!(
        status, 200,
        "found by the forced poll, matched case-insensitively"
    );
    let health: Value = client
        .get(format!("{}/healthz", foreman.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["degraded"], false);
    let (status, _, _) = post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body("nope", "hi", false),
    )
    .await;
    assert_eq!(status, 404);
    foreman.stop().await;
}

#[tokio::test]
async fn auth_guards_everything_but_healthz() {
    let foreman =
        TestForeman::start_with(fast_sim(), |config| config.token = Some("s3cret".into())).await;
    let client = client();
    let health = client
        .get(format!("{}/healthz", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    let health: Value = health.json().await.unwrap();
    assert_eq!(health["status"], "ok");
    assert_eq!(health["degraded"], false);
    assert_eq!(health["queue_depth"], 0);
    for (path, token) in [
        ("/api/tags", None),
        ("/api/tags", Some("wrong")),
        ("/api/chat", Some("s3cre")),
    ] {
        let mut request = client.get(format!("{}{path}", foreman.url));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{path} {token:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        assert_eq!(
            response.json::<Value>().await.unwrap(),
            json!({"error": "unauthorized"})
        );
    }
    let ok = client
        .get(format!("{}/api/tags", foreman.url))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let chat = client
        .post(format!("{}/api/chat", foreman.url))
        .bearer_auth("s3cret")
        .json(&chat_body(CHAT, "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(chat.status(), 200);
    foreman.stop().await;
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let foreman = TestForeman::start_with(fast_sim(), |config| config.max_queue = 1).await;
    let client = client();
    let url = foreman.url.clone();
    // The target holds the first job: the worker stays busy and the queue stays full.
    hold(&foreman.sim, true);
    let running = spawn_chat(&client, &url, CHAT, "long");
    eventually("the first job to reach the target", async || {
        foreman.sim.stats().held == 1
    })
    .await;
    let queued = spawn_chat(&client, &url, CHAT, "queued");
    eventually("one job queued", async || {
        health(&client, &url).await["queue_depth"] == 1
    })
    .await;
    let busy =
        json!({"error": "server busy, please try again.  maximum pending requests exceeded"});
    let response = client
        .post(format!("{url}/api/chat"))
        .json(&chat_body(CHAT, "one more", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(response.json::<Value>().await.unwrap(), busy);
    let response = client
        .post(format!("{url}/jobs"))
        .json(&json!({"kind": "chat", "request": {"model": CHAT, "messages": []}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503, "/jobs is admitted the same way");
    assert_eq!(response.headers()["retry-after"], "5");
    assert_eq!(response.json::<Value>().await.unwrap(), busy);
    assert_eq!(foreman.jobs().await.len(), 2, "neither was enqueued");
    hold(&foreman.sim, false);
    assert_eq!(running.await.unwrap(), 200);
    assert_eq!(queued.await.unwrap(), 200);
    foreman.stop().await;
}

async fn health(client: &reqwest::Client, url: &str) -> Value {
    let (status, health) = get_json(client, format!("{url}/healthz")).await;
    assert_eq!(status, 200);
    health
}

#[tokio::test]
async fn healthz_reports_running_jobs_and_whether_the_target_answers() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let url = foreman.url.clone();
    let target = foreman.sim.url().trim_start_matches("http://").to_string();
    assert_eq!(
        health(&client, &url).await,
        json!({"status": "ok", "degraded": false, "target_reachable": true, "queue_depth": 0, "running": 0,
               "targets": [{"name": target, "reachable": true, "paused": false, "slots": 1, "places": 1,
                            "resident": 0, "running": 0}]})
    );
    hold(&foreman.sim, true);
    let running = spawn_chat(&client, &url, CHAT, "held");
    let queued = spawn_chat(&client, &url, CHAT2, "behind it");
    // A job counts as running from its claim; it reaches the target a moment later.
    eventually("one job running at the target and one queued", async || {
        let health = health(&client, &url).await;
        health["running"] == 1 && health["queue_depth"] == 1 && foreman.sim.stats().held == 1
    })
    .await;
    hold(&foreman.sim, false);
    assert_eq!(running.await.unwrap(), 200);
    assert_eq!(queued.await.unwrap(), 200);
    eventually("nothing running", async || {
        health(&client, &url).await["running"] == 0
    })
    .await;

    foreman.sim.refuse_connections(true);
    eventually("the poll to find the target gone", async || {
        health(&client, &url).await["target_reachable"] == false
    })
    .await;
    let gone = health(&client, &url).await;
    assert_eq!(
        (gone["status"].clone(), gone["degraded"].clone()),
        (json!("ok"), json!(true))
    );
    foreman.sim.refuse_connections(false);
    eventually("the poll to find the target back", async || {
        health(&client, &url).await["target_reachable"] == true
    })
    .await;
    assert_eq!(health(&client, &url).await["degraded"], false);
    foreman.stop().await;
}

#[tokio::test]
async fn model_management_passes_through_and_refreshes_the_inventory() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.poll_interval = std::time::Duration::from_secs(3600);
    })
    .await;
    let client = client();
    let listed = async || -> Vec<String> {
        let tags: Value = client
            .get(format!("{}/api/tags", foreman.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        tags["models"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["model"].as_str().unwrap().to_string())
            .collect()
    };
    let (status, headers, body) = post(
        &client,
        format!("{}/api/pull", foreman.url),
        &json!({"name": "phi3:mini"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let last: Value = serde_json::from_str(body.lines().last().unwrap()).unwrap();
    assert_eq!(last["status"], "success");
    eventually("the pulled model to be listed", async || {
        listed().await.contains(&"phi3:mini".to_string())
    })
    .await;
    let (status, _, _) = post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body("phi3:mini", "hi", false),
    )
    .await;
    assert_eq!(status, 200, "the new model is served through the queue");

    let deleted = client
        .delete(format!("{}/api/delete", foreman.url))
        .json(&json!({"model": "phi3:mini"}))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    eventually("the deleted model to leave the list", async || {
        !listed().await.contains(&"phi3:mini".to_string())
    })
    .await;
    let (status, _, body) = post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body("phi3:mini", "hi", false),
    )
    .await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (404, json!({"error": "model 'phi3:mini' not found"}))
    );
    foreman.stop().await;
}

#[tokio::test]
async fn model_management_can_be_turned_off() {
    let foreman =
        TestForeman::start_with(fast_sim(), |config| config.allow_model_management = false).await;
    let client = client();
    let (status, _, body) = post(
        &client,
        format!("{}/api/pull", foreman.url),
        &json!({"name": "phi3:mini"}),
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("disabled")
    );
    let deleted = client
        .delete(format!("{}/api/delete", foreman.url))
        .json(&json!({"model": CHAT}))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 403);
    // Passed through, the pull would have added phi3:mini to the target and the
    // delete removed llama3.2:3b.
    let (_, tags) = get_json(&client, format!("{}/api/tags", foreman.sim.url())).await;
    let names: Vec<&str> = tags["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert!(names.contains(&CHAT), "{names:?}");
    assert!(!names.contains(&"phi3:mini"), "{names:?}");
    foreman.stop().await;
}

#[tokio::test]
async fn show_answers_are_cached_per_model() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let request = json!({"model": CHAT});
    let (status, _, first) = post(&client, format!("{}/api/show", foreman.url), &request).await;
    assert_eq!(status, 200);
    // With the target gone, the same question is still answered, from the cache.
    foreman.sim.refuse_connections(true);
    let (status, headers, again) =
        post(&client, format!("{}/api/show", foreman.url), &request).await;
    assert_eq!((status, again), (200, first));
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    let (status, _, _) = post(
        &client,
        format!("{}/api/show", foreman.url),
        &json!({"model": CHAT2}),
    )
    .await;
    assert_eq!(status, 502, "an uncached model needs the target");
    foreman.sim.refuse_connections(false);
    let (status, _, body) = post(
        &client,
        format!("{}/api/show", foreman.url),
        &json!({"model": "nope"}),
    )
    .await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (404, json!({"error": "model 'nope:latest' not found"}))
    );
    foreman.stop().await;
}
