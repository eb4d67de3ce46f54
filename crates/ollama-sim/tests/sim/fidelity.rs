//! Smaller points where the simulator follows Ollama's source: log probabilities,
//! reasoning effort, embedding truncation, listing details, tensors, Go's JSON
//! decoder errors and content types. Each test names the Ollama code it follows.

use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn logprobs_come_with_each_token_and_top_logprobs_is_bounded() {
    // server/routes.go GenerateHandler/ChatHandler pass logprobs to the runner and
    // copy them into each chunk; the non-streamed answer concatenates them
    // (server/logprob.go toAPILogprobs fills token, logprob, bytes, top_logprobs).
    let sim = start(fast_config()).await;
    let url = |p: &str| format!("{}{p}", sim.url());
    let (status, _, body) = post(
        &client(),
        url("/api/generate"),
        json!({"model": CHAT, "prompt": "hi", "stream": false, "logprobs": true,
               "top_logprobs": 3, "options": {"num_predict": 5}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    let logprobs = reply["logprobs"].as_array().unwrap();
    assert_eq!(logprobs.len(), 5);
    let tokens: String = logprobs
        .iter()
        .map(|l| l["token"].as_str().unwrap())
        .collect();
    assert_eq!(tokens, reply["response"].as_str().unwrap());
    for entry in logprobs {
        assert!(entry["logprob"].as_f64().unwrap() <= 0.0);
        assert_eq!(
            entry["bytes"],
            json!(entry["token"].as_str().unwrap().as_bytes())
        );
        assert_eq!(entry["top_logprobs"].as_array().unwrap().len(), 3);
    }

    let (_, _, body) = post(
        &client(),
        url("/api/chat"),
        json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}],
               "logprobs": true, "options": {"num_predict": 3}}),
    )
    .await;
    let chunks = ndjson(&body);
    for chunk in &chunks[..3] {
        let entries = chunk["logprobs"].as_array().unwrap();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0]["token"], chunk["message"]["content"]);
        assert!(entries[0].get("top_logprobs").is_none(), "top_logprobs: 0");
    }
    assert!(chunks[3].get("logprobs").is_none());

    for path in ["/api/chat", "/api/generate"] {
        let (status, _, body) = post(
            &client(),
            url(path),
            json!({"model": "no-such-model", "prompt": "x", "top_logprobs": 21,
                   "messages": [{"role": "user", "content": "x"}]}),
        )
        .await;
        assert_eq!(status, 400, "{path}: checked before the model");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"error": "top_logprobs must be between 0 and 20"})
        );
    }

    // openai/openai.go: logprobs/top_logprobs pass through; choices carry
    // {"content": [...]}.
    let (status, _, body) = post(
        &client(),
        url("/v1/chat/completions"),
        json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}],
               "logprobs": true, "top_logprobs": 2, "max_tokens": 4}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    let content = reply["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap();
    assert_eq!(content.len(), 4);
    assert_eq!(content[0]["top_logprobs"].as_array().unwrap().len(), 2);
    let (status, _, body) = post(
        &client(),
        url("/v1/completions"),
        json!({"model": CHAT, "prompt": "hi", "logprobs": 1, "max_tokens": 2}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        reply["choices"][0]["logprobs"]["content"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
}

#[tokio::test]
async fn an_unknown_reasoning_effort_is_a_400() {
    // openai/openai.go thinkFromReasoningEffort.
    let sim = start(fast_config()).await;
    let ask = async |extra: Value| {
        let mut body = json!({"model": CHAT2, "messages": [{"role": "user", "content": "hi"}],
                              "max_tokens": 2});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let (status, _, text) = post(
            &client(),
            format!("{}/v1/chat/completions", sim.url()),
            body,
        )
        .await;
        (status, serde_json::from_str::<Value>(&text).unwrap())
    };
    let (status, body) = ask(json!({"reasoning_effort": "turbo"})).await;
    assert_eq!(status, 400);
    assert_eq!(
        body["error"]["message"],
        "invalid reasoning value: \"turbo\" (must be \"minimal\", \"low\", \"medium\", \"high\", \"xhigh\", \"ultra\", \"max\", or \"none\")"
    );
    assert_eq!(body["error"]["type"], "invalid_request_error");
    for effort in ["minimal", "xhigh", "ultra", "max"] {
        let (status, body) = ask(json!({"reasoning_effort": effort})).await;
        assert_eq!(status, 200, "{effort}: {body}");
    }
    let (_, body) = ask(json!({"reasoning_effort": "none"})).await;
    assert!(body["choices"][0]["message"].get("reasoning").is_none());
    let (status, _) =
        ask(json!({"reasoning": {"effort": "bogus"}, "reasoning_effort": "low"})).await;
    assert_eq!(status, 400, "reasoning.effort wins over reasoning_effort");
    assert_eq!(sim.stats().requests_total, 5);
}

#[tokio::test]
async fn embed_inputs_over_the_context_are_cut_or_refused() {
    // server/routes.go EmbedHandler: the limit is the context less BOS and EOS;
    // truncate:false over it is a 400, otherwise the input is cut.
    let sim = start(fast_config()).await;
    let embed = async |body: Value| {
        let (status, _, text) = post(&client(), format!("{}/api/embed", sim.url()), body).await;
        (status, serde_json::from_str::<Value>(&text).unwrap())
    };
    let long = vec!["word"; 3000].join(" ");
    let (status, body) = embed(json!({"model": EMBED, "input": long, "truncate": false})).await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"error": "the input length exceeds the context length"})
        )
    );
    let (status, body) = embed(json!({"model": EMBED, "input": [long, "short one"]})).await;
    assert_eq!(status, 200);
    assert_eq!(
        body["prompt_eval_count"],
        2046 + 2,
        "2048 less BOS and EOS, and 2"
    );
    let (_, body) = embed(json!({"model": EMBED, "input": vec!["w"; 20].join(" "),
                                 "options": {"num_ctx": 10}}))
    .await;
    assert_eq!(body["prompt_eval_count"], 8);
    let (status, _) = embed(json!({"model": EMBED, "input": "fits", "truncate": false})).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn tags_list_capabilities_and_lengths_and_show_lists_tensors() {
    // server/model_list_cache.go buildModelListSummary; api/types.go ModelDetails.
    let sim = start(fast_config()).await;
    let tags: Value = client()
        .get(format!("{}/api/tags", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let models = tags["models"].as_array().unwrap();
    let expected = [
        (json!(["completion", "tools"]), 4096, 3072),
        (json!(["completion", "thinking"]), 4096, 3072),
        (json!(["embedding"]), 2048, 768),
    ];
    for (model, (capabilities, context, embedding)) in models.iter().zip(expected) {
        assert_eq!(model["capabilities"], capabilities, "{model}");
        assert_eq!(model["details"]["context_length"], context);
        assert_eq!(model["details"]["embedding_length"], embedding);
    }
    // server/routes.go GetModelInfo: tensors of a GGUF model, verbose or not; details
    // without the lengths.
    let (_, _, body) = post(
        &client(),
        format!("{}/api/show", sim.url()),
        json!({"model": CHAT}),
    )
    .await;
    let show: Value = serde_json::from_str(&body).unwrap();
    let tensors = show["tensors"].as_array().unwrap();
    assert_eq!(tensors[0]["name"], "token_embd.weight");
    assert_eq!(tensors.len(), 2 + 9 * 28);
    assert_eq!(show["model_info"]["llama.block_count"], 28);
    for tensor in tensors {
        assert!(
            tensor["type"].is_string() && tensor["shape"].is_array(),
            "{tensor}"
        );
    }
    assert!(show["details"].get("context_length").is_none());
}

#[tokio::test]
async fn malformed_json_gets_gos_decoder_text_and_trailing_data_is_ignored() {
    // gin ShouldBindJSON: one json.Decoder.Decode, whose errors are the scanner's.
    let sim = start(fast_config()).await;
    let send = async |body: &'static str| {
        let response = client()
            .post(format!("{}/api/chat", sim.url()))
            .body(body)
            .send()
            .await
            .unwrap();
        (response.status().as_u16(), response.text().await.unwrap())
    };
    let (status, body) = send("x").await;
    assert_eq!(status, 400);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "invalid character 'x' looking for beginning of value"})
    );
    let (status, body) = send(
        r#"{"model":"llama3.2:3b","messages":[{"role":"user","content":"hi"}],"stream":false} and more"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn progress_answers_without_a_stream_are_plain_application_json() {
    // server/routes.go waitForStream sets Content-Type application/json itself.
    let sim = start(fast_config()).await;
    for (name, status) in [("fresh-model", 200), ("missing-model", 500)] {
        let (actual, content_type, _) = post(
            &client(),
            format!("{}/api/pull", sim.url()),
            json!({"model": name, "stream": false}),
        )
        .await;
        assert_eq!(
            (actual, content_type.as_str()),
            (status, "application/json")
        );
    }
}
