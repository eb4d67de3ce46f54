//! What the target would refuse is refused at once: request bodies of the wrong
//! shape on every queued route and on `/jobs` (no job, no request upstream), and
//! model names that would carry a path into the target's URL.

use serde_json::{Value, json};

use crate::common::*;

/// The status and the error message of an answer, whatever the API family's shape.
fn error_of(status: u16, body: &str) -> (u16, String) {
    let body: Value =
        serde_json::from_str(body).unwrap_or_else(|_| panic!("{status}: not JSON: {body}"));
    let message = match &body["error"] {
        Value::String(message) => message.clone(),
        error => error["message"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message in {body}"))
            .to_string(),
    };
    (status, message)
}

fn merged(base: &Value, extra: &Value) -> Value {
    let mut body = base.clone();
    for (key, value) in extra.as_object().unwrap() {
        body[key] = value.clone();
    }
    body
}

/// Sends each malformed body through foreman and asserts the answer came at once
/// with the given status and message, and that nothing was queued or sent upstream.
async fn refused_at_once(foreman: &TestForeman, cases: &[(&str, Value, u16, &str)]) {
    let client = client();
    for (route, body, status, message) in cases {
        let (got_status, _, text) = post(&client, format!("{}{route}", foreman.url), body).await;
        assert_eq!(
            error_of(got_status, &text),
            (*status, message.to_string()),
            "{route} {body}"
        );
    }
    assert_eq!(foreman.jobs().await.len(), 0, "no job was queued");
    assert_eq!(
        foreman.sim.stats().requests_total,
        0,
        "no request reached the target"
    );
}

/// Each body, as foreman answers it and as the simulator (Ollama's rules) answers it
/// when sent straight to it: the same status and message.
async fn same_as_the_target<'a>(cases: &[(&'a str, Value)]) -> Vec<(&'a str, Value, u16, String)> {
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), fast_sim())
        .await
        .unwrap();
    let client = client();
    let mut expected = Vec::new();
    for (route, body) in cases {
        let (status, _, text) = post(&client, format!("{}{route}", sim.url()), body).await;
        let (status, message) = error_of(status, &text);
        assert!(status >= 400, "the target refuses {route} {body}");
        expected.push((*route, body.clone(), status, message));
    }
    sim.shutdown().await;
    expected
}

#[tokio::test]
async fn malformed_bodies_get_the_targets_answer_without_a_job() {
    let chat =
        json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let generate = json!({"model": CHAT, "prompt": "hi", "stream": false});
    let openai = json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}]});
    let completion = json!({"model": CHAT, "prompt": "hi"});
    let responses = json!({"model": CHAT, "input": "hi"});
    let anthropic =
        json!({"model": CHAT, "max_tokens": 10, "messages": [{"role": "user", "content": "hi"}]});
    let cases: Vec<(&str, Value)> = vec![
        ("/api/chat", merged(&chat, &json!({"messages": "x"}))),
        ("/api/chat", merged(&chat, &json!({"options": "x"}))),
        ("/api/chat", merged(&chat, &json!({"format": 5}))),
        ("/api/chat", merged(&chat, &json!({"tools": "x"}))),
        (
            "/api/chat",
            merged(&chat, &json!({"options": {"num_ctx": "big"}})),
        ),
        ("/api/chat", merged(&chat, &json!({"keep_alive": true}))),
        ("/api/chat", merged(&chat, &json!({"keep_alive": "300"}))),
        ("/api/chat", merged(&chat, &json!({"think": "hard"}))),
        ("/api/chat", merged(&chat, &json!({"top_logprobs": 50}))),
        ("/api/chat", merged(&chat, &json!({"truncate": "no"}))),
        ("/api/generate", merged(&generate, &json!({"options": "x"}))),
        ("/api/generate", merged(&generate, &json!({"format": 5}))),
        ("/api/generate", merged(&generate, &json!({"context": "x"}))),
        ("/api/generate", merged(&generate, &json!({"raw": "yes"}))),
        ("/api/generate", merged(&generate, &json!({"system": 1}))),
        (
            "/api/generate",
            merged(&generate, &json!({"raw": true, "system": "s"})),
        ),
        (
            "/v1/chat/completions",
            merged(&openai, &json!({"messages": "x"})),
        ),
        (
            "/v1/chat/completions",
            merged(&openai, &json!({"messages": []})),
        ),
        (
            "/v1/chat/completions",
            merged(
                &openai,
                &json!({"messages": [{"role": "user", "content": 5}]}),
            ),
        ),
        (
            "/v1/chat/completions",
            merged(
                &openai,
                &json!({"messages": [{"role": "user", "content": [
                {"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}]}]}),
            ),
        ),
        (
            "/v1/chat/completions",
            merged(&openai, &json!({"reasoning_effort": "lots"})),
        ),
        (
            "/v1/chat/completions",
            merged(&openai, &json!({"stream": "yes"})),
        ),
        (
            "/v1/completions",
            merged(&completion, &json!({"prompt": 5})),
        ),
        (
            "/v1/completions",
            merged(&completion, &json!({"suffix": 5})),
        ),
        ("/v1/responses", merged(&responses, &json!({"input": 5}))),
        (
            "/v1/responses",
            merged(&responses, &json!({"input": [{"type": "nope"}]})),
        ),
        (
            "/v1/responses",
            merged(&responses, &json!({"max_output_tokens": "x"})),
        ),
        (
            "/v1/responses",
            merged(&responses, &json!({"reasoning": {"effort": "lots"}})),
        ),
        ("/v1/responses", merged(&responses, &json!({"tools": "x"}))),
        (
            "/v1/messages",
            merged(
                &anthropic,
                &json!({"messages": [{"role": "user", "content": 5}]}),
            ),
        ),
        (
            "/v1/messages",
            merged(
                &anthropic,
                &json!({"messages": [{"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}}]}]}),
            ),
        ),
        (
            "/v1/messages",
            merged(
                &anthropic,
                &json!({"messages": [{"role": "assistant", "content": [
                {"type": "tool_use", "name": "f", "input": {}}]}]}),
            ),
        ),
        ("/v1/messages", merged(&anthropic, &json!({"tools": "x"}))),
    ];
    let expected = same_as_the_target(&cases).await;
    let expected: Vec<(&str, Value, u16, &str)> = expected
        .iter()
        .map(|(route, body, status, message)| (*route, body.clone(), *status, message.as_str()))
        .collect();
    let foreman = TestForeman::start(fast_sim()).await;
    refused_at_once(&foreman, &expected).await;
    well_formed_bodies_still_run(&foreman).await;
    foreman.stop().await;
}

/// Fields the simulator reads loosely, refused as Ollama's decoder refuses them.
#[tokio::test]
async fn wrong_types_the_decoder_refuses_get_its_words() {
    let chat =
        json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let foreman = TestForeman::start(fast_sim()).await;
    refused_at_once(
        &foreman,
        &[
            (
                "/api/chat",
                merged(&chat, &json!({"messages": [{"role": "user", "content": ["hi"]}]})),
                400,
                "json: cannot unmarshal array into Go struct field ChatRequest.messages.content of type string",
            ),
            (
                "/api/chat",
                merged(&chat, &json!({"messages": [{"role": "user", "content": "hi", "images": ["not base64!"]}]})),
                400,
                "illegal base64 data at input byte 3",
            ),
            (
                "/api/chat",
                merged(&chat, &json!({"tools": [{"type": "function", "function": {"name": 5}}]})),
                400,
                "json: cannot unmarshal number into Go struct field ToolFunction.tools.function.name of type string",
            ),
            (
                "/api/generate",
                json!({"model": CHAT, "prompt": "hi", "images": "x"}),
                400,
                "json: cannot unmarshal string into Go struct field GenerateRequest.images of type []api.ImageData",
            ),
            (
                "/api/generate",
                json!({"model": CHAT, "prompt": "hi", "options": {"temperature": "hot"}}),
                500,
                "option \"temperature\" must be of type float32",
            ),
            (
                "/v1/chat/completions",
                json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "temperature": "hot"}),
                400,
                "json: cannot unmarshal string into Go struct field ChatCompletionRequest.temperature of type float64",
            ),
            (
                "/v1/messages",
                json!({"model": CHAT, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}], "stop_sequences": "x"}),
                400,
                "json: cannot unmarshal string into Go struct field MessagesRequest.stop_sequences of type []string",
            ),
        ],
    )
    .await;
    foreman.stop().await;
}

/// `POST /jobs` carries the same request under `request`: the same check, the same
/// answer as the sync route gives, and no job.
#[tokio::test]
async fn jobs_refuse_what_the_sync_routes_refuse() {
    let chat =
        json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "stream": false});
    let generate = json!({"model": CHAT, "prompt": "hi", "stream": false});
    let requests = [
        (
            "chat",
            "/api/chat",
            merged(&chat, &json!({"messages": "x"})),
        ),
        ("chat", "/api/chat", merged(&chat, &json!({"options": "x"}))),
        ("chat", "/api/chat", merged(&chat, &json!({"format": 5}))),
        ("chat", "/api/chat", merged(&chat, &json!({"tools": "x"}))),
        (
            "chat",
            "/api/chat",
            merged(&chat, &json!({"keep_alive": "soon"})),
        ),
        (
            "generate",
            "/api/generate",
            merged(&generate, &json!({"format": 5})),
        ),
        (
            "generate",
            "/api/generate",
            merged(&generate, &json!({"context": "x"})),
        ),
    ];
    let direct: Vec<(&str, Value)> = requests
        .iter()
        .map(|(_, route, body)| (*route, body.clone()))
        .collect();
    let expected = same_as_the_target(&direct).await;
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    for ((kind, _, request), (_, _, status, message)) in requests.iter().zip(&expected) {
        let (got, _, text) = post(
            &client,
            format!("{}/jobs", foreman.url),
            &json!({"kind": kind, "request": request}),
        )
        .await;
        assert_eq!(
            error_of(got, &text),
            (*status, message.clone()),
            "{request}"
        );
    }
    assert_eq!(foreman.jobs().await.len(), 0, "no job was queued");
    assert_eq!(foreman.sim.stats().requests_total, 0);
    foreman.stop().await;
}

/// What the official clients send still passes beside the refused bodies: each is
/// queued and run.
async fn well_formed_bodies_still_run(foreman: &TestForeman) {
    let client = client();
    let tools = json!([{"type": "function", "function": {"name": "get_weather", "description": "d",
        "parameters": {"type": "object", "required": ["city"], "properties": {"city": {"type": "string",
        "description": "c", "enum": ["Paris"]}}}}}]);
    let bodies = [
        (
            "/api/chat",
            json!({"model": CHAT, "stream": false, "tools": tools, "keep_alive": "5m", "format": "json",
                "options": {"temperature": 0.1, "num_predict": 4, "stop": ["x"], "mirostat": 0},
                "messages": [{"role": "user", "content": "hi", "images": ["aGVsbG8="]}]}),
        ),
        (
            "/api/chat",
            json!({"model": CHAT, "messages": [], "tools": [], "stream": false}),
        ),
        (
            "/api/generate",
            json!({"model": CHAT2, "prompt": "hi", "stream": false, "format": {"type": "object"},
                "keep_alive": 300, "options": {"num_predict": 3}, "think": false, "context": [1, 2]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": CHAT, "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
                "max_tokens": 4, "temperature": 0.5, "stream_options": null, "response_format": {"type": "json_object"}}),
        ),
        (
            "/v1/completions",
            json!({"model": CHAT, "prompt": "hi", "max_tokens": 3}),
        ),
        (
            "/v1/responses",
            json!({"model": CHAT, "input": [{"role": "user", "content": "hi"}], "max_output_tokens": 4}),
        ),
        (
            "/v1/messages",
            json!({"model": CHAT, "max_tokens": 4, "system": "s", "messages": [{"role": "user",
                "content": [{"type": "text", "text": "hi"}]}]}),
        ),
    ];
    for (route, body) in &bodies {
        let (status, _, text) = post(&client, format!("{}{route}", foreman.url), body).await;
        assert_eq!(status, 200, "{route} {body}: {text}");
    }
    assert_eq!(foreman.jobs().await.len(), bodies.len());
}

/// Names that would take `/v1/models/{model}` or `/api/show` anywhere but to a model
/// are refused before any request leaves: the simulator's fault settings stay unseen.
#[tokio::test]
async fn model_names_never_carry_a_path_upstream() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let long = "m".repeat(81);
    let long_tag = format!("m:{}", "t".repeat(81));
    let attempts = [
        "..%2F..%2Fsim%2Ffaults",
        "..%2F..%2Fsim%2Fstats",
        "%2E%2E%2F%2E%2E%2Fsim%2Ffaults",
        "..%5C..%5Csim%5Cfaults",
        "x%2F..%2F..%2F..%2Fsim%2Ffaults",
        "llama3.2:3b%3Fx%3D1",
        "llama3.2:3b%23x",
        "a%00b",
        long.as_str(),
        long_tag.as_str(),
    ];
    for attempt in attempts {
        let response = client
            .get(format!("{}/v1/models/{attempt}", foreman.url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap();
        assert_eq!(
            (status, &body),
            (
                400,
                &json!({"error": {"message": "invalid model name", "type": "invalid_request_error",
                    "param": null, "code": null}})
            ),
            "/v1/models/{attempt}"
        );
    }
    let names = [
        "../../sim/faults",
        "..\\..\\sim\\faults",
        "a/b/c/d",
        long.as_str(),
        "m:",
    ];
    for name in names {
        for field in ["model", "name"] {
            let (status, _, text) = post(
                &client,
                format!("{}/api/show", foreman.url),
                &json!({ field: name }),
            )
            .await;
            assert_eq!(
                (status, serde_json::from_str::<Value>(&text).unwrap()),
                (400, json!({"error": "invalid model name"})),
                "/api/show {field} {name}"
            );
        }
    }
    // Well-formed names still reach the target.
    let (status, body) = get_json(&client, format!("{}/v1/models/{CHAT}", foreman.url)).await;
    assert_eq!((status, body["id"].as_str()), (200, Some(CHAT)));
    let (status, _, _) = post(
        &client,
        format!("{}/api/show", foreman.url),
        &json!({"model": CHAT}),
    )
    .await;
    assert_eq!(status, 200);
    foreman.stop().await;
}
