//! The OpenAI-compatible routes through foreman: queued like native chat, errors in
//! OpenAI's shape, SSE relayed, and the stored result assembled from the stream.

use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn openai_chat_goes_through_the_queue_and_streams_sse() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let request =
        json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "stream": true});
    let (status, headers, body) = post(
        &client,
        format!("{}/v1/chat/completions", foreman.url),
        &request,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "text/event-stream");
    assert!(body.ends_with("data: [DONE]\n\n"));
    let id: foreman_store::JobId = headers["x-foreman-job-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let streamed: String = body
        .split("\n\n")
        .filter_map(|frame| frame.strip_prefix("data: "))
        .filter(|data| *data != "[DONE]")
        .filter_map(|data| {
            serde_json::from_str::<Value>(data).unwrap()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_string)
        })
        .collect();
    let store = foreman.store().await;
    let job = recorded(&store, id).await;
    assert_eq!(job.kind, foreman_store::JobKind::OpenAiChat);
    let result: Value = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
    assert_eq!(result["object"], "chat.completion");
    assert_eq!(
        result["choices"][0]["message"]["content"].as_str().unwrap(),
        streamed
    );

    let (status, headers, body) = post(
        &client,
        format!("{}/v1/completions", foreman.url),
        &json!({"model": CHAT2, "prompt": "once"}),
    )
    .await;
    assert_eq!(status, 200);
    assert!(headers.contains_key("x-foreman-job-id"));
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["object"],
        "text_completion"
    );
    foreman.stop().await;
}

#[tokio::test]
async fn openai_routes_answer_errors_in_openai_shape() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let cases = [
        (
            "/v1/chat/completions",
            "{\"model\":",
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            "{\"messages\":[]}",
            400,
            "invalid_request_error",
        ),
        (
            "/v1/chat/completions",
            "{\"model\":\"nope\",\"messages\":[{\"role\":\"user\",\"content\":\"x\"}]}",
            404,
            "not_found_error",
        ),
        (
            "/v1/completions",
            "{\"model\":\"nope\",\"prompt\":\"x\"}",
            404,
            "not_found_error",
        ),
        ("/v1/embeddings", "", 400, "invalid_request_error"),
    ];
    for (path, body, status, kind) in cases {
        let response = client
            .post(format!("{}{path}", foreman.url))
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status().as_u16(), status, "{path} {body}");
        let error: Value = response.json().await.unwrap();
        assert_eq!(error["error"]["type"], kind, "{path} {body}: {error}");
        assert!(error["error"]["message"].is_string());
        assert!(error["error"].get("param").is_some() && error["error"].get("code").is_some());
    }
    let models: Value = client
        .get(format!("{}/v1/models", foreman.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(models["object"], "list");
    let missing = client
        .get(format!("{}/v1/models/nope", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(
        missing.json::<Value>().await.unwrap()["error"]["type"],
        "not_found_error"
    );
    foreman.stop().await;
}

#[tokio::test]
async fn auth_failures_on_v1_are_openai_shaped() {
    let foreman =
        TestForeman::start_with(fast_sim(), |config| config.token = Some("t0k3n".into())).await;
    let response = client()
        .get(format!("{}/v1/models", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 401);
    let error: Value = response.json().await.unwrap();
    assert_eq!(error["error"]["type"], "authentication_error");
    foreman.stop().await;
}
