//! Ollama's error statuses and messages for bad input.

use serde_json::{Value, json};

use crate::common::*;

async fn error_of(url: String, body: reqwest::Body) -> (u16, String, Value) {
    let response = client().post(url).body(body).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_string();
    (status, content_type, response.json().await.unwrap())
}

#[tokio::test]
async fn bad_bodies_are_400_with_an_error_field() {
    let sim = start(fast_config()).await;
    for path in [
        "/api/chat",
        "/api/generate",
        "/api/embed",
        "/api/embeddings",
        "/api/show",
    ] {
        let (status, content_type, body) =
            error_of(format!("{}{path}", sim.url()), "".into()).await;
        assert_eq!(status, 400, "{path}");
        assert_eq!(content_type, "application/json; charset=utf-8");
        assert_eq!(body, json!({"error": "missing request body"}), "{path}");
        let (status, _, body) =
            error_of(format!("{}{path}", sim.url()), "{\"model\":".into()).await;
        assert_eq!(
            (status, body),
            (400, json!({"error": "unexpected EOF"})),
            "{path}"
        );
        let (status, _, body) =
            error_of(format!("{}{path}", sim.url()), "{\"model\": 7}".into()).await;
        assert_eq!(status, 400, "{path}");
        assert!(
            body["error"]
                .as_str()
                .unwrap()
                .contains("cannot unmarshal number"),
            "{path}: {body}"
        );
    }
}

#[tokio::test]
async fn missing_and_unknown_models_follow_each_handler() {
    let sim = start(fast_config()).await;
    let url = |p: &str| format!("{}{p}", sim.url());
    let cases = [
        (
            "/api/chat",
            json!({"messages": []}),
            400,
            "model is required",
        ),
        (
            "/api/chat",
            json!({"model": "nope", "messages": [{"role":"user","content":"x"}]}),
            404,
            "model 'nope' not found",
        ),
        (
            "/api/generate",
            json!({"prompt": "x"}),
            404,
            "model '' not found",
        ),
        (
            "/api/generate",
            json!({"model": "nope", "prompt": "x"}),
            404,
            "model 'nope' not found",
        ),
        (
            "/api/embed",
            json!({"input": "x"}),
            404,
            "model '' not found",
        ),
        (
            "/api/embed",
            json!({"model": "nope", "input": "x"}),
            404,
            "model \"nope\" not found, try pulling it first",
        ),
        (
            "/api/embeddings",
            json!({"prompt": "x"}),
            400,
            "model is required",
        ),
        (
            "/api/embeddings",
            json!({"model": "nope", "prompt": "x"}),
            404,
            "model \"nope\" not found, try pulling it first",
        ),
        ("/api/show", json!({}), 400, "model is required"),
        (
            "/api/show",
            json!({"model": "nope"}),
            404,
            "model 'nope:latest' not found",
        ),
        (
            "/api/embed",
            json!({"model": EMBED, "input": 5}),
            400,
            "invalid input type",
        ),
        (
            "/api/chat",
            json!({"model": CHAT, "messages": [{"role":"user","content":"x"}], "think": true}),
            400,
            "\"llama3.2:3b\" does not support thinking",
        ),
        (
            "/api/chat",
            json!({"model": CHAT2, "messages": [{"role":"user","content":"x"}], "tools": [{"type":"function","function":{"name":"f"}}]}),
            400,
            "registry.ollama.ai/library/qwen2.5:0.5b does not support tools",
        ),
        (
            "/api/generate",
            json!({"model": CHAT, "prompt": "x", "raw": true, "system": "s"}),
            400,
            "raw mode does not support template, system, or context",
        ),
        (
            "/api/chat",
            json!({"model": CHAT, "messages": [{"role":"user","content":"x"}], "keep_alive": "300"}),
            400,
            "time: missing unit in duration \"300\"",
        ),
    ];
    for (path, body, status, message) in cases {
        let response = client().post(url(path)).json(&body).send().await.unwrap();
        assert_eq!(response.status().as_u16(), status, "{path} {body}");
        let reply: Value = response.json().await.unwrap();
        assert_eq!(reply, json!({"error": message}), "{path} {body}");
    }
    assert_eq!(
        sim.stats().requests_total,
        0,
        "no rejected request reached a model"
    );
}

#[tokio::test]
async fn an_invalid_format_is_the_runners_500_after_the_load() {
    // llm/llama_server.go Completion rejects the format once the model is loaded,
    // quoting the raw JSON with %q; a streamed request gets it before the first line
    // (server/routes.go streamResponse: plain application/json).
    let sim = start(fast_config()).await;
    let message =
        "invalid format: \"\\\"yaml\\\"\"; expected \"json\" or a valid JSON Schema object";
    for (stream, content_type) in [
        (false, "application/json; charset=utf-8"),
        (true, "application/json"),
    ] {
        let (status, actual_type, body) = post(
            &client(),
            format!("{}/api/generate", sim.url()),
            json!({"model": CHAT, "prompt": "x", "format": "yaml", "stream": stream}),
        )
        .await;
        assert_eq!((status, actual_type.as_str()), (500, content_type));
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"error": message})
        );
    }
    assert_eq!(
        sim.stats().models[CHAT].loads,
        1,
        "the model was loaded first"
    );
    let (status, _, _) = post(
        &client(),
        format!("{}/api/generate", sim.url()),
        json!({"model": CHAT, "format": "yaml"}),
    )
    .await;
    assert_eq!(status, 200, "a load request never reaches the runner");
}
