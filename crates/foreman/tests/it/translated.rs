//! The routes Ollama serves over its chat in other APIs' shapes, through foreman:
//! OpenAI's Responses (`/v1/responses`) and Anthropic's Messages (`/v1/messages`).
//! Both are queued as jobs of their own kinds, the caller gets the target's answer
//! (JSON or SSE) unchanged, the stored result is the non-streaming answer assembled
//! from the stream, and errors take each family's shape.

use serde_json::{Value, json};

use crate::common::*;

fn job_id(headers: &reqwest::header::HeaderMap) -> foreman_store::JobId {
    headers["x-foreman-job-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The data objects of an SSE body, with their event names.
fn sse_events(body: &str) -> Vec<(String, Value)> {
    body.split("\n\n")
        .filter(|frame| !frame.trim().is_empty())
        .map(|frame| {
            let mut lines = frame.lines();
            let name = lines.next().unwrap().strip_prefix("event: ").unwrap();
            let data = lines.next().unwrap().strip_prefix("data: ").unwrap();
            (name.to_string(), serde_json::from_str(data).unwrap())
        })
        .collect()
}

fn without(mut value: Value, keys: &[&str]) -> Value {
    for key in keys {
        value.as_object_mut().unwrap().remove(*key);
    }
    value
}

#[tokio::test]
async fn messages_are_queued_relayed_and_stored_as_one_message() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let request = json!({"model": CHAT, "max_tokens": 1000, "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let (status, headers, body) =
        post(&client, format!("{}/v1/messages", foreman.url), &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "text/event-stream");
    let events = sse_events(&body);
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(
        &names[names.len() - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    for (name, data) in &events {
        assert_eq!(data["type"], *name, "each data object names its event");
    }

    // What foreman relayed is what the target sends, and the stored result is the
    // target's own non-streaming answer (but for the message id).
    let (_, _, direct) = post(
        &client,
        format!("{}/v1/messages", foreman.sim.url()),
        &request,
    )
    .await;
    let strip = |events: Vec<(String, Value)>| -> Vec<Value> {
        events
            .into_iter()
            .map(|(_, mut data)| {
                if let Some(message) = data.get_mut("message") {
                    message.as_object_mut().unwrap().remove("id");
                }
                data
            })
            .collect()
    };
    assert_eq!(strip(sse_events(&direct)), strip(events));

    let job = recorded(&foreman.store().await, job_id(&headers)).await;
    assert_eq!(job.kind, foreman_store::JobKind::AnthropicMessages);
    assert_eq!(job.model, "llama3.2:3b");
    let stored: Value = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
    let mut whole_request = request.clone();
    whole_request["stream"] = json!(false);
    let (status, _, whole) = post(
        &client,
        format!("{}/v1/messages", foreman.sim.url()),
        &whole_request,
    )
    .await;
    assert_eq!(status, 200);
    let whole: Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(whole["stop_reason"], "end_turn");
    assert_eq!(without(stored.clone(), &["id"]), without(whole, &["id"]));
    assert!(stored["id"].as_str().unwrap().starts_with("msg_"));

    // Not streaming: one JSON message, stored as it came.
    let (status, headers, body) = post(
        &client,
        format!("{}/v1/messages", foreman.url),
        &whole_request,
    )
    .await;
    assert_eq!(status, 200);
    let job = recorded(&foreman.store().await, job_id(&headers)).await;
    assert_eq!(job.result.as_deref(), Some(body.as_str()));
    foreman.stop().await;
}

#[tokio::test]
async fn responses_are_queued_relayed_and_stored_as_one_response() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let request = json!({"model": CHAT2, "input": "hi", "max_output_tokens": 5, "stream": true});
    let (status, headers, body) =
        post(&client, format!("{}/v1/responses", foreman.url), &request).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "text/event-stream");
    let events = sse_events(&body);
    assert_eq!(events[0].0, "response.created");
    let (last_name, last) = events.last().unwrap();
    assert_eq!(last_name, "response.completed");
    let streamed: String = events
        .iter()
        .filter(|(name, _)| name == "response.output_text.delta")
        .map(|(_, data)| data["delta"].as_str().unwrap())
        .collect();

    let job = recorded(&foreman.store().await, job_id(&headers)).await;
    assert_eq!(job.kind, foreman_store::JobKind::OpenAiResponses);
    let stored: Value = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
    assert_eq!(stored, last["response"], "the completed response is stored");
    assert_eq!(stored["status"], "completed");
    assert_eq!(stored["output"][0]["content"][0]["text"], streamed);
    assert_eq!(stored["usage"]["output_tokens"], 5);

    // The same as the target's non-streaming answer, but for ids and clocks.
    let mut whole_request = request.clone();
    whole_request["stream"] = json!(false);
    let (status, _, whole) = post(
        &client,
        format!("{}/v1/responses", foreman.sim.url()),
        &whole_request,
    )
    .await;
    assert_eq!(status, 200);
    let whole: Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(
        whole["output"][0]["content"],
        stored["output"][0]["content"]
    );
    assert_eq!(whole["usage"], stored["usage"]);
    assert_eq!(whole["model"], stored["model"]);
    foreman.stop().await;
}

#[tokio::test]
async fn translated_routes_answer_errors_in_their_family_shape() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let anthropic_cases = [
        (
            "{\"model\":",
            400,
            "invalid_request_error",
            "unexpected EOF",
        ),
        (
            r#"{"max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
            400,
            "invalid_request_error",
            "model is required",
        ),
        (
            r#"{"model":"llama3.2:3b","messages":[{"role":"user","content":"hi"}]}"#,
            400,
            "invalid_request_error",
            "max_tokens is required and must be positive",
        ),
        (
            r#"{"model":"llama3.2:3b","max_tokens":5,"messages":[]}"#,
            400,
            "invalid_request_error",
            "messages is required",
        ),
        (
            r#"{"model":"no-such","max_tokens":5,"messages":[{"role":"user","content":"hi"}]}"#,
            404,
            "not_found_error",
            "model 'no-such' not found",
        ),
        // The target's own refusal, after queueing, passes unchanged.
        (
            r#"{"model":"llama3.2:3b","max_tokens":5,"messages":[{"role":"assistant","content":[{"type":"tool_use","name":"f","input":{}}]}]}"#,
            400,
            "invalid_request_error",
            "tool_use block missing required 'id' field",
        ),
    ];
    for (body, status, kind, message) in anthropic_cases {
        let response = client
            .post(format!("{}/v1/messages", foreman.url))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["type"], "error", "{answer}");
        assert_eq!(
            answer["error"],
            json!({"type": kind, "message": message}),
            "{body}"
        );
        assert!(answer["request_id"].as_str().unwrap().starts_with("req_"));
    }

    let responses_cases = [
        (
            "{\"model\":",
            400,
            "invalid_request_error",
            "unexpected EOF",
        ),
        (
            r#"{"input":"hi"}"#,
            400,
            "invalid_request_error",
            "model is required",
        ),
        (
            r#"{"model":"no-such","input":"hi"}"#,
            404,
            "not_found_error",
            "model 'no-such' not found",
        ),
        (
            r#"{"model":"llama3.2:3b","input":[{"type":"nope"}]}"#,
            400,
            "invalid_request_error",
            "input[0]: unknown input item type: \"nope\"",
        ),
    ];
    for (body, status, kind, message) in responses_cases {
        let response = client
            .post(format!("{}/v1/responses", foreman.url))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{body}");
        let answer: Value = response.json().await.unwrap();
        assert_eq!(
            answer["error"],
            json!({"message": message, "type": kind, "param": null, "code": null}),
            "{body}"
        );
    }
    foreman.stop().await;

    let foreman =
        TestForeman::start_with(fast_sim(), |config| config.token = Some("s3cret".into())).await;
    let response = client
        .post(format!("{}/v1/messages", foreman.url))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["type"], "authentication_error");
    // Anthropic's clients send their key as x-api-key: the token works there too, on
    // the Messages route only.
    let messages =
        json!({"model": CHAT, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
    for (key, status) in [("s3cret", 200), ("wrong", 401)] {
        let response = client
            .post(format!("{}/v1/messages", foreman.url))
            .header("x-api-key", key)
            .json(&messages)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), status, "x-api-key {key}");
    }
    let response = client
        .post(format!("{}/api/chat", foreman.url))
        .header("x-api-key", "s3cret")
        .json(&chat_body(CHAT, "hi", false))
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        401,
        "x-api-key is for the Messages route only"
    );
    foreman.stop().await;
}

/// Responses and Messages jobs queue with chats and drain by model with them: an
/// interleaved backlog over two models and one slot loads each model once.
#[tokio::test]
async fn responses_and_messages_drain_by_model_with_chat() {
    let sim = ollama_sim::SimConfig {
        models: vec![
            ollama_sim::ModelSpec::parse("llama3.2:3b,load=50ms,tps=4000").unwrap(),
            ollama_sim::ModelSpec::parse("qwen2.5:0.5b,load=50ms,tps=4000").unwrap(),
        ],
        max_loaded: 1,
        ..ollama_sim::SimConfig::default()
    };
    let foreman = TestForeman::start(sim).await;
    let client = client();
    // The first job waits at the target, so the rest queue up behind it.
    hold(&foreman.sim, true);
    let requests: Vec<_> = (0..12)
        .map(|i| {
            let model = if i % 2 == 0 { CHAT } else { CHAT2 };
            let text = format!("request {i}");
            let (path, body) = match i % 3 {
                0 => ("/api/chat", chat_body(model, &text, false)),
                1 => (
                    "/v1/messages",
                    json!({"model": model, "max_tokens": 50, "messages": [{"role": "user", "content": text}]}),
                ),
                _ => ("/v1/responses", json!({"model": model, "input": text})),
            };
            let (client, url) = (client.clone(), format!("{}{path}", foreman.url));
            tokio::spawn(async move { post(&client, url, &body).await.0 })
        })
        .collect();
    let store = foreman.store().await;
    eventually("one job held at the target and eleven queued", async || {
        foreman.sim.stats().held == 1 && store.queue_depth().await.unwrap() == 11
    })
    .await;
    hold(&foreman.sim, false);
    for request in requests {
        assert_eq!(request.await.unwrap(), 200);
    }
    let stats = foreman.sim.stats();
    assert_eq!(stats.loads_total, 2, "each model loaded once: {stats:?}");
    let mut kinds: Vec<&str> = foreman
        .jobs()
        .await
        .iter()
        .map(|job| job.kind.as_str())
        .collect();
    kinds.sort();
    kinds.dedup();
    assert_eq!(kinds, ["anthropic_messages", "chat", "openai_responses"]);
    foreman.stop().await;
}
