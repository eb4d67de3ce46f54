//! `/v1/responses` and `/v1/messages`: Ollama's translations of its chat into
//! OpenAI's Responses API and Anthropic's Messages API, event by event
//! (`openai/responses.go` `ResponsesStreamConverter`, `anthropic/anthropic.go`
//! `StreamConverter`), with thinking, tool calls and errors.

use serde_json::{Value, json};

use crate::common::*;

/// `(event, data)` pairs of an SSE body, checking each data names its event.
fn sse(body: &str) -> Vec<(String, Value)> {
    assert!(body.ends_with("\n\n"), "every frame ends with a blank line");
    body.split("\n\n")
        .filter(|frame| !frame.is_empty())
        .map(|frame| {
            let (event, data) = frame.split_once('\n').unwrap();
            let event = event.strip_prefix("event: ").unwrap().to_string();
            let data: Value = serde_json::from_str(data.strip_prefix("data: ").unwrap()).unwrap();
            assert_eq!(data["type"], event.as_str());
            (event, data)
        })
        .collect()
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(name, _)| name.as_str()).collect()
}

/// Collapses runs of one event name into one entry, so sequences read as shapes.
fn shape(events: &[(String, Value)]) -> Vec<&str> {
    let mut shape = names(events);
    shape.dedup();
    shape
}

#[tokio::test]
async fn messages_stream_thinking_then_text_like_ollama() {
    let sim = start(fast_config()).await;
    let client = client();
    let url = format!("{}/v1/messages", sim.url());
    let request = json!({"model": CHAT2, "max_tokens": 1000, "system": "Be brief.",
        "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let (status, content_type, body) = post(&client, url.clone(), request.clone()).await;
    assert_eq!((status, content_type.as_str()), (200, "text/event-stream"));
    let events = sse(&body);
    assert_eq!(
        shape(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let start = &events[0].1["message"];
    assert!(start["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(start["content"], json!([]));
    // EstimateInputTokens: ("Be brief." + "user" + "hi") = 15 characters, over 4.
    assert_eq!(
        start["usage"],
        json!({"input_tokens": 3, "output_tokens": 0})
    );
    assert!(start.get("stop_reason").is_none(), "omitted while empty");
    let starts: Vec<&Value> = events
        .iter()
        .filter(|(name, _)| name == "content_block_start")
        .map(|(_, data)| data)
        .collect();
    assert_eq!(
        starts[0],
        &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}})
    );
    assert_eq!(
        starts[1],
        &json!({"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}})
    );
    let joined = |kind: &str, key: &str| -> String {
        events
            .iter()
            .filter(|(_, data)| data["delta"]["type"] == kind)
            .map(|(_, data)| data["delta"][key].as_str().unwrap())
            .collect()
    };

    let mut whole_request = request.clone();
    whole_request["stream"] = json!(false);
    let (status, content_type, whole) = post(&client, url.clone(), whole_request.clone()).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let whole: Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(
        whole["content"],
        json!([{"type": "thinking", "thinking": joined("thinking_delta", "thinking")},
               {"type": "text", "text": joined("text_delta", "text")}])
    );
    assert_eq!(whole["stop_reason"], "end_turn");
    let (_, delta) = &events[events.len() - 2];
    assert_eq!(delta["delta"], json!({"stop_reason": "end_turn"}));
    assert_eq!(delta["usage"], whole["usage"]);
    let keys: Vec<&String> = whole.as_object().unwrap().keys().collect();
    assert_eq!(
        keys,
        [
            "id",
            "type",
            "role",
            "model",
            "content",
            "stop_reason",
            "usage"
        ]
    );

    // The same conversation on /api/chat gives the same text.
    let chat = json!({"model": CHAT2, "stream": false, "options": {"num_predict": 1000}, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]});
    let (_, _, chat) = post(&client, format!("{}/api/chat", sim.url()), chat).await;
    let chat: Value = serde_json::from_str(&chat).unwrap();
    assert_eq!(chat["message"]["content"], whole["content"][1]["text"]);
    assert_eq!(chat["prompt_eval_count"], whole["usage"]["input_tokens"]);

    // Thinking turned off: only the text block.
    whole_request["thinking"] = json!({"type": "disabled"});
    let (_, _, plain) = post(&client, url, whole_request).await;
    let plain: Value = serde_json::from_str(&plain).unwrap();
    assert_eq!(plain["content"].as_array().unwrap().len(), 1);
    assert_eq!(plain["content"][0]["type"], "text");
    sim.shutdown().await;
}

#[tokio::test]
async fn messages_tool_use_and_max_tokens() {
    let sim = start(fast_config()).await;
    let client = client();
    let url = format!("{}/v1/messages", sim.url());
    let tools = json!([{"name": "get_weather", "description": "Weather.",
        "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}]);
    let request = json!({"model": CHAT, "max_tokens": 100, "tools": tools, "stream": true,
        "messages": [{"role": "user", "content": "weather?"}]});
    let (_, _, body) = post(&client, url.clone(), request.clone()).await;
    let events = sse(&body);
    assert_eq!(
        names(&events),
        [
            "message_start",
            "content_block_start",
            "content_block_delta",
            "content_block_stop",
            "message_delta",
            "message_stop"
        ]
    );
    let block = &events[1].1["content_block"];
    assert_eq!(block["type"], "tool_use");
    assert_eq!(block["name"], "get_weather");
    assert_eq!(block["input"], json!({}));
    let partial = events[2].1["delta"]["partial_json"].as_str().unwrap();
    assert_eq!(events[2].1["delta"]["type"], "input_json_delta");
    assert_eq!(events[4].1["delta"]["stop_reason"], "tool_use");

    let mut whole_request = request;
    whole_request["stream"] = json!(false);
    let (_, _, whole) = post(&client, url.clone(), whole_request).await;
    let whole: Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(whole["stop_reason"], "tool_use");
    assert_eq!(
        whole["content"][0]["input"],
        serde_json::from_str::<Value>(partial).unwrap()
    );
    assert_eq!(whole["content"][0]["id"], block["id"]);

    let short =
        json!({"model": CHAT, "max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]});
    let (_, _, short) = post(&client, url, short).await;
    let short: Value = serde_json::from_str(&short).unwrap();
    assert_eq!(short["stop_reason"], "max_tokens");
    assert_eq!(short["usage"]["output_tokens"], 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn responses_stream_reasoning_then_message_like_ollama() {
    let sim = start(fast_config()).await;
    let client = client();
    let url = format!("{}/v1/responses", sim.url());
    let request =
        json!({"model": CHAT2, "instructions": "Be brief.", "input": "hi", "stream": true});
    let (status, content_type, body) = post(&client, url.clone(), request.clone()).await;
    assert_eq!((status, content_type.as_str()), (200, "text/event-stream"));
    let events = sse(&body);
    assert_eq!(
        shape(&events),
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.reasoning_summary_text.delta",
            "response.reasoning_summary_text.done",
            "response.output_item.done",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let sequence: Vec<u64> = events
        .iter()
        .map(|(_, data)| data["sequence_number"].as_u64().unwrap())
        .collect();
    assert_eq!(sequence, (0..events.len() as u64).collect::<Vec<_>>());
    let created = &events[0].1["response"];
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], json!([]));
    assert_eq!(created["usage"], Value::Null);
    assert_eq!(created["instructions"], "Be brief.");
    let text_delta = events
        .iter()
        .find(|(name, _)| name == "response.output_text.delta")
        .unwrap();
    assert_eq!(
        text_delta.1["output_index"], 1,
        "the message follows the reasoning item"
    );

    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["status"], "completed");
    let mut whole_request = request;
    whole_request["stream"] = json!(false);
    let (status, content_type, whole) = post(&client, url.clone(), whole_request.clone()).await;
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let whole: Value = serde_json::from_str(&whole).unwrap();
    assert_eq!(whole["object"], "response");
    assert_eq!(whole["output"][0]["type"], "reasoning");
    assert_eq!(
        whole["output"][0]["summary"],
        completed["output"][0]["summary"]
    );
    assert_eq!(
        whole["output"][1]["content"],
        completed["output"][1]["content"]
    );
    assert_eq!(whole["usage"], completed["usage"]);
    assert_eq!(
        whole["top_p"], 1,
        "Go writes whole floats without a fraction"
    );

    whole_request["reasoning"] = json!({"effort": "none"});
    let (_, _, plain) = post(&client, url, whole_request).await;
    let plain: Value = serde_json::from_str(&plain).unwrap();
    let types: Vec<&Value> = plain["output"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| &item["type"])
        .collect();
    assert_eq!(types, [&json!("message")]);
    assert_eq!(plain["reasoning"], json!({"effort": "none"}));
    sim.shutdown().await;
}

#[tokio::test]
async fn translated_errors_come_in_each_family_shape() {
    let sim = start(fast_config()).await;
    let client = client();
    let messages = format!("{}/v1/messages", sim.url());
    for (body, status, content_type, kind, message) in [
        (
            json!({"model": "nope", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            404,
            "application/json",
            "not_found_error",
            "model 'nope' not found",
        ),
        (
            json!({"model": CHAT, "max_tokens": 5}),
            400,
            "application/json; charset=utf-8",
            "invalid_request_error",
            "messages is required",
        ),
        (
            json!({"model": CHAT, "max_tokens": 5, "messages": [{"role": "user",
                "content": [{"type": "image", "source": {"type": "url", "url": "http://x"}}]}]}),
            400,
            "application/json; charset=utf-8",
            "invalid_request_error",
            "invalid image source type: url. Only base64 images are supported.",
        ),
        (
            json!({"model": EMBED, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}),
            400,
            "application/json",
            "invalid_request_error",
            "\"nomic-embed-text\" does not support chat",
        ),
    ] {
        let (got_status, got_type, answer) = post(&client, messages.clone(), body.clone()).await;
        assert_eq!(
            (got_status, got_type.as_str()),
            (status, content_type),
            "{body}"
        );
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(answer["type"], "error");
        assert_eq!(answer["error"], json!({"type": kind, "message": message}));
        let request_id = answer["request_id"].as_str().unwrap();
        assert!(request_id.starts_with("req_") && request_id.len() == 28);
    }

    let responses = format!("{}/v1/responses", sim.url());
    for (body, status, kind, message) in [
        (
            json!({"model": "nope", "input": "hi"}),
            404,
            "not_found_error",
            "model 'nope' not found",
        ),
        (
            json!({"input": "hi"}),
            400,
            "invalid_request_error",
            "model is required",
        ),
        (
            json!({"model": CHAT, "input": "hi", "reasoning": {"effort": "huge"}}),
            400,
            "invalid_request_error",
            "invalid reasoning value: \"huge\" (must be \"minimal\", \"low\", \"medium\", \"high\", \"xhigh\", \"ultra\", \"max\", or \"none\")",
        ),
        (
            json!({"model": CHAT, "input": "hi", "reasoning": {"effort": "high"}}),
            400,
            "invalid_request_error",
            "\"llama3.2:3b\" does not support thinking",
        ),
    ] {
        let (got_status, _, answer) = post(&client, responses.clone(), body.clone()).await;
        assert_eq!(got_status, status, "{body}");
        let answer: Value = serde_json::from_str(&answer).unwrap();
        assert_eq!(
            answer,
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        );
    }
    sim.shutdown().await;
}
