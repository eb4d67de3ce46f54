//! The OpenAI-compatible routes: objects, SSE framing and error shape.

use serde_json::{Value, json};

use crate::common::*;

fn sse_data(body: &str) -> Vec<String> {
    assert!(
        body.ends_with("data: [DONE]\n\n"),
        "ends with [DONE]: {body}"
    );
    body.split("\n\n")
        .filter(|frame| !frame.is_empty())
        .map(|frame| {
            frame
                .strip_prefix("data: ")
                .expect("every frame is data")
                .to_string()
        })
        .collect()
}

#[tokio::test]
async fn chat_completions_object_and_stream() {
    let sim = start(fast_config()).await;
    let client = client();
    let request =
        json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 6});
    let (status, content_type, body) = post(
        &client,
        format!("{}/v1/chat/completions", sim.url()),
        request.clone(),
    )
    .await;
    // middleware/openai.go ChatWriter sets plain application/json.
    assert_eq!((status, content_type.as_str()), (200, "application/json"));
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert!(reply["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(reply["object"], "chat.completion");
    assert_eq!(reply["system_fingerprint"], "fp_ollama");
    assert_eq!(reply["choices"][0]["finish_reason"], "length");
    assert_eq!(reply["usage"]["completion_tokens"], 6);
    let content = reply["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_string();

    let mut streaming = request.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({"include_usage": true});
    let (status, content_type, body) = post(
        &client,
        format!("{}/v1/chat/completions", sim.url()),
        streaming,
    )
    .await;
    assert_eq!((status, content_type.as_str()), (200, "text/event-stream"));
    let frames = sse_data(&body);
    assert_eq!(frames.last().unwrap(), "[DONE]");
    let chunks: Vec<Value> = frames[..frames.len() - 1]
        .iter()
        .map(|f| serde_json::from_str(f).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(chunks[1]["choices"][0]["delta"].get("role").is_none());
    let streamed: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, content);
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["delta"], json!({}));
    assert_eq!(finish["choices"][0]["finish_reason"], "length");
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"]["completion_tokens"], 6);
}

#[tokio::test]
async fn completions_embeddings_and_models() {
    let sim = start(fast_config()).await;
    let client = client();
    let (_, _, body) = post(
        &client,
        format!("{}/v1/completions", sim.url()),
        json!({"model": CHAT, "prompt": "once"}),
    )
    .await;
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["object"], "text_completion");
    assert!(!reply["choices"][0]["text"].as_str().unwrap().is_empty());
    let (_, content_type, body) = post(
        &client,
        format!("{}/v1/completions", sim.url()),
        json!({"model": CHAT, "prompt": "once", "stream": true}),
    )
    .await;
    assert_eq!(content_type, "text/event-stream");
    assert!(sse_data(&body).len() > 2);
    let (_, _, body) = post(
        &client,
        format!("{}/v1/embeddings", sim.url()),
        json!({"model": EMBED, "input": ["a", "b"]}),
    )
    .await;
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["object"], "list");
    assert_eq!(reply["data"][1]["index"], 1);
    assert_eq!(reply["data"][0]["embedding"].as_array().unwrap().len(), 768);
    let (_, _, body) = post(
        &client,
        format!("{}/v1/embeddings", sim.url()),
        json!({"model": EMBED, "input": "a", "encoding_format": "base64"}),
    )
    .await;
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        reply["data"][0]["embedding"].as_str().unwrap().len(),
        4096,
        "768 f32 in base64"
    );
    let models: Value = client
        .get(format!("{}/v1/models", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    assert_eq!(
        models["data"][0],
        json!({"id": CHAT, "object": "model", "created": models["data"][0]["created"], "owned_by": "library"})
    );
    let one = client
        .get(format!("{}/v1/models/{CHAT}", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(one.status(), 200);
    assert_eq!(one.json::<Value>().await.unwrap()["id"], CHAT);
}

#[tokio::test]
async fn openai_errors_have_openai_shape() {
    let sim = start(fast_config()).await;
    let client = client();
    let cases = [
        (
            "/v1/chat/completions",
            json!({"model": "nope", "messages": [{"role":"user","content":"x"}]}),
            404,
            "not_found_error",
            "model 'nope' not found",
            // The native handler's error, rewritten by the middleware's writer.
            "application/json",
        ),
        (
            "/v1/chat/completions",
            json!({"model": CHAT, "messages": []}),
            400,
            "invalid_request_error",
            "[] is too short - 'messages'",
            // The middleware's own validation: gin's c.AbortWithStatusJSON.
            "application/json; charset=utf-8",
        ),
        (
            "/v1/chat/completions",
            json!({"model": CHAT, "messages": [{"role":"user","content":[{"type":"image_url","image_url":{"url":"http://x/y.png"}}]}]}),
            400,
            "invalid_request_error",
            "image URLs are not currently supported, please use base64 encoded data instead",
            // The middleware's own validation: gin's c.AbortWithStatusJSON.
            "application/json; charset=utf-8",
        ),
        (
            "/v1/embeddings",
            json!({"model": EMBED, "input": []}),
            400,
            "invalid_request_error",
            "invalid input",
            // The middleware's own validation: gin's c.AbortWithStatusJSON.
            "application/json; charset=utf-8",
        ),
        (
            "/v1/embeddings",
            json!({"model": EMBED, "input": "x", "encoding_format": "hex"}),
            400,
            "invalid_request_error",
            "Invalid value for 'encoding_format' = hex. Supported values: ['float', 'base64'].",
            // The middleware's own validation: gin's c.AbortWithStatusJSON.
            "application/json; charset=utf-8",
        ),
    ];
    for (path, body, status, kind, message, expected_type) in cases {
        let (got, content_type, text) =
            post(&client, format!("{}{path}", sim.url()), body.clone()).await;
        assert_eq!(got, status, "{path} {body}");
        assert_eq!(content_type, expected_type, "{path} {body}");
        let reply: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            reply,
            json!({"error": {"message": message, "type": kind, "param": null, "code": null}})
        );
    }
    let missing = client
        .get(format!("{}/v1/models/nope", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["type"],
        "not_found_error"
    );
}
