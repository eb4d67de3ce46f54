//! The native API's shapes, headers and streaming sequence.

use serde_json::{Value, json};

use crate::common::*;

#[tokio::test]
async fn root_and_version_answer_like_ollama() {
    let sim = start(fast_config()).await;
    let client = client();
    let root = client.get(sim.url()).send().await.unwrap();
    assert_eq!(root.status(), 200);
    assert_eq!(root.headers()["content-type"], "text/plain; charset=utf-8");
    assert_eq!(root.text().await.unwrap(), "Ollama is running");
    let head = client.head(sim.url()).send().await.unwrap();
    assert_eq!(head.status(), 200);
    let version = client
        .get(format!("{}/api/version", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        version.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    let body: Value = version.json().await.unwrap();
    assert_eq!(body, json!({"version": "0.33.0"}));
}

#[tokio::test]
async fn unknown_paths_and_methods_are_plain_text() {
    let sim = start(fast_config()).await;
    let client = client();
    let missing = client
        .get(format!("{}/api/nope", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    assert_eq!(missing.text().await.unwrap(), "404 page not found");
    let wrong = client
        .get(format!("{}/api/chat", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), 405);
    assert_eq!(wrong.text().await.unwrap(), "405 method not allowed");
}

#[tokio::test]
async fn tags_list_every_model_with_details() {
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
    let names: Vec<&str> = models
        .iter()
        .map(|m| m["model"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec![CHAT, CHAT2, "nomic-embed-text:latest"]);
    for model in models {
        assert_eq!(model["name"], model["model"]);
        assert!(model["size"].as_u64().unwrap() > 0);
        assert_eq!(model["digest"].as_str().unwrap().len(), 64);
        assert!(model["modified_at"].as_str().unwrap().ends_with('Z'));
        let details = &model["details"];
        for key in [
            "parent_model",
            "format",
            "family",
            "families",
            "parameter_size",
            "quantization_level",
        ] {
            assert!(details.get(key).is_some(), "details.{key} present");
        }
    }
    let first = models[0]["modified_at"].as_str().unwrap();
    let second = models[1]["modified_at"].as_str().unwrap();
    assert!(first > second, "newest first");
}

#[tokio::test]
async fn ps_is_empty_then_shows_resident_models() {
    let sim = start(fast_config()).await;
    let client = client();
    let ps: Value = client
        .get(format!("{}/api/ps", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(ps, json!({"models": []}));
    let (status, _, _) = post(
        &client,
        format!("{}/api/generate", sim.url()),
        json!({"model": CHAT, "prompt": "hi", "stream": false}),
    )
    .await;
    assert_eq!(status, 200);
    let ps: Value = client
        .get(format!("{}/api/ps", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let models = ps["models"].as_array().unwrap();
    assert_eq!(models.len(), 1);
    let model = &models[0];
    assert_eq!(model["model"], CHAT);
    assert_eq!(model["size_vram"], model["size"]);
    assert!(model["expires_at"].as_str().unwrap().ends_with('Z'));
    assert!(model["context_length"].as_u64().unwrap() > 0);
}

#[tokio::test]
async fn show_reports_capabilities_and_model_info() {
    let sim = start(fast_config()).await;
    let client = client();
    let (status, content_type, body) = post(
        &client,
        format!("{}/api/show", sim.url()),
        json!({"model": CHAT}),
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/json; charset=utf-8")
    );
    let show: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(show["capabilities"], json!(["completion", "tools"]));
    assert!(show["model_info"].is_object());
    assert!(show["details"]["family"].is_string());
    let (_, _, body) = post(
        &client,
        format!("{}/api/show", sim.url()),
        json!({"name": EMBED}),
    )
    .await;
    let show: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(show["capabilities"], json!(["embedding"]));
}

#[tokio::test]
async fn chat_streams_ndjson_ending_with_stats() {
    let sim = start(fast_config()).await;
    let client = client();
    let request =
        json!({"model": CHAT, "messages": [{"role": "user", "content": "Why is the sky blue?"}]});
    let (status, content_type, body) =
        post(&client, format!("{}/api/chat", sim.url()), request.clone()).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-ndjson")
    );
    let chunks = ndjson(&body);
    assert_eq!(chunks.len(), 25, "24 tokens and the final chunk");
    let (last, body_chunks) = chunks.split_last().unwrap();
    let mut streamed = String::new();
    for chunk in body_chunks {
        let keys: Vec<&str> = chunk
            .as_object()
            .unwrap()
            .keys()
            .map(String::as_str)
            .collect();
        assert_eq!(keys, vec!["model", "created_at", "message", "done"]);
        assert_eq!(chunk["model"], CHAT);
        assert_eq!(chunk["done"], false);
        assert_eq!(chunk["message"]["role"], "assistant");
        streamed.push_str(chunk["message"]["content"].as_str().unwrap());
    }
    assert_eq!(last["done"], true);
    assert_eq!(last["done_reason"], "stop");
    assert_eq!(last["message"]["content"], "");
    assert_eq!(last["eval_count"], 24);
    for key in [
        "total_duration",
        "load_duration",
        "prompt_eval_count",
        "prompt_eval_duration",
        "eval_duration",
    ] {
        assert!(last[key].as_u64().unwrap() > 0, "{key} > 0");
    }
    assert!(last.get("context").is_none(), "chat has no context");

    let mut single = request.clone();
    single["stream"] = json!(false);
    let (status, content_type, body) =
        post(&client, format!("{}/api/chat", sim.url()), single).await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/json; charset=utf-8")
    );
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        reply["message"]["content"].as_str().unwrap(),
        streamed,
        "deterministic reply"
    );
    assert_eq!(reply["done"], true);
    assert_eq!(reply["eval_count"], 24);
}

#[tokio::test]
async fn model_names_match_like_ollama_and_echo_as_sent() {
    let sim = start(fast_config()).await;
    let (status, _, body) = post(&client(), format!("{}/api/chat", sim.url()),
        json!({"model": "NOMIC-embed-text", "messages": [{"role":"user","content":"x"}], "stream": false})).await;
    assert_eq!(status, 400, "an embedding model cannot chat: {body}");
    let (status, _, body) = post(
        &client(),
        format!("{}/api/generate", sim.url()),
        json!({"model": "LLAMA3.2:3b", "prompt": "x", "stream": false}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap()["model"],
        "LLAMA3.2:3b"
    );
}

#[tokio::test]
async fn generate_streams_and_returns_context() {
    let sim = start(fast_config()).await;
    let client = client();
    let (status, content_type, body) = post(
        &client,
        format!("{}/api/generate", sim.url()),
        json!({"model": CHAT, "prompt": "Tell me a story", "options": {"num_predict": 5}}),
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-ndjson")
    );
    let chunks = ndjson(&body);
    assert_eq!(chunks.len(), 6);
    assert!(
        chunks[..5]
            .iter()
            .all(|c| c["done"] == false && c["response"].is_string())
    );
    let last = &chunks[5];
    assert_eq!(last["done_reason"], "length");
    assert_eq!(last["eval_count"], 5);
    let keys: Vec<&str> = last
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(
        keys,
        vec![
            "model",
            "created_at",
            "response",
            "done",
            "done_reason",
            "context",
            "total_duration",
            "load_duration",
            "prompt_eval_count",
            "prompt_eval_duration",
            "eval_count",
            "eval_duration"
        ]
    );
    let (_, _, body) = post(
        &client,
        format!("{}/api/generate", sim.url()),
        json!({"model": CHAT, "prompt": "Tell me a story", "raw": true, "stream": false}),
    )
    .await;
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert!(reply.get("context").is_none(), "raw mode has no context");
    assert_eq!(reply["eval_count"], 24);
}

#[tokio::test]
async fn load_and_unload_requests_answer_one_object() {
    let sim = start(fast_config()).await;
    let client = client();
    let (status, content_type, body) = post(
        &client,
        format!("{}/api/chat", sim.url()),
        json!({"model": CHAT, "messages": []}),
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/json; charset=utf-8")
    );
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["done_reason"], "load");
    assert_eq!(
        reply["message"],
        json!({"role": "assistant", "content": ""})
    );
    assert_eq!(sim.stats().loaded, vec![CHAT.to_string()]);
    let (_, _, body) = post(
        &client,
        format!("{}/api/generate", sim.url()),
        json!({"model": CHAT, "keep_alive": 0}),
    )
    .await;
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["done_reason"], "unload");
    assert_eq!(reply["response"], "");
    assert!(sim.stats().loaded.is_empty());
    assert_eq!(sim.stats().unloads_total, 1);
}

#[tokio::test]
async fn thinking_tools_and_structured_output() {
    let sim = start(fast_config()).await;
    let client = client();
    let (_, _, body) = post(
        &client,
        format!("{}/api/chat", sim.url()),
        json!({"model": CHAT2, "messages": [{"role":"user","content":"think"}], "stream": false}),
    )
    .await;
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert!(
        !reply["message"]["thinking"].as_str().unwrap().is_empty(),
        "thinking models think by default"
    );
    let tools = json!([{"type":"function","function":{"name":"get_weather","description":"weather",
        "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}}]);
    let (_, _, body) = post(&client, format!("{}/api/chat", sim.url()),
        json!({"model": CHAT, "messages": [{"role":"user","content":"weather in Paris?"}], "tools": tools, "stream": false})).await;
    let reply: Value = serde_json::from_str(&body).unwrap();
    let call = &reply["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "get_weather");
    assert!(call["function"]["arguments"]["city"].is_string());
    let (_, _, body) = post(
        &client,
        format!("{}/api/chat", sim.url()),
        json!({"model": CHAT, "messages": [{"role":"user","content":"weather?"}], "tools": tools}),
    )
    .await;
    let chunks = ndjson(&body);
    assert_eq!(chunks.len(), 2, "one tool-call chunk, then done");
    assert_eq!(chunks[0]["message"]["content"], "");
    assert!(chunks[0]["message"]["tool_calls"].is_array());
    assert!(chunks[1]["message"].get("tool_calls").is_none());
    let schema = json!({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}},"required":["name","age"]});
    let (_, _, body) = post(&client, format!("{}/api/chat", sim.url()),
        json!({"model": CHAT, "messages": [{"role":"user","content":"who?"}], "format": schema, "stream": false})).await;
    let reply: Value = serde_json::from_str(&body).unwrap();
    let content: Value =
        serde_json::from_str(reply["message"]["content"].as_str().unwrap()).unwrap();
    assert!(content["name"].is_string() && content["age"].is_u64());
}

#[tokio::test]
async fn embeddings_are_deterministic_unit_vectors() {
    let sim = start(fast_config()).await;
    let client = client();
    let (status, content_type, body) = post(
        &client,
        format!("{}/api/embed", sim.url()),
        json!({"model": EMBED, "input": ["hello", "world", "hello"]}),
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/json; charset=utf-8")
    );
    let reply: Value = serde_json::from_str(&body).unwrap();
    let vectors = reply["embeddings"].as_array().unwrap();
    assert_eq!(vectors.len(), 3);
    assert_eq!(vectors[0], vectors[2]);
    assert_ne!(vectors[0], vectors[1]);
    let v: Vec<f64> = vectors[0]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    assert_eq!(v.len(), 768);
    let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    assert!((norm - 1.0).abs() < 1e-3);
    assert_eq!(reply["model"], EMBED);
    assert!(reply["prompt_eval_count"].as_u64().unwrap() >= 3);
    let (_, _, body) = post(
        &client,
        format!("{}/api/embed", sim.url()),
        json!({"model": EMBED}),
    )
    .await;
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"model": EMBED, "embeddings": []})
    );
    let (_, _, body) = post(
        &client,
        format!("{}/api/embed", sim.url()),
        json!({"model": EMBED, "input": "hello", "dimensions": 64}),
    )
    .await;
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["embeddings"][0].as_array().unwrap().len(), 64);
    let (_, _, body) = post(
        &client,
        format!("{}/api/embeddings", sim.url()),
        json!({"model": EMBED, "prompt": "hello"}),
    )
    .await;
    let reply: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(reply["embedding"].as_array().unwrap().len(), 768);
}

#[tokio::test]
async fn pull_copy_create_and_delete_change_the_model_list() {
    let sim = start(fast_config()).await;
    let client = client();
    let listed = async || -> Vec<String> {
        let tags: Value = client
            .get(format!("{}/api/tags", sim.url()))
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
    let (status, content_type, body) = post(
        &client,
        format!("{}/api/pull", sim.url()),
        json!({"name": "phi3:mini"}),
    )
    .await;
    assert_eq!(
        (status, content_type.as_str()),
        (200, "application/x-ndjson")
    );
    let lines = ndjson(&body);
    assert_eq!(lines[0]["status"], "pulling manifest");
    assert!(lines.iter().any(|l| {
        l["digest"]
            .as_str()
            .is_some_and(|d| d.starts_with("sha256:"))
            && l["total"].is_u64()
    }));
    assert_eq!(lines.last().unwrap()["status"], "success");
    assert_eq!(listed().await[0], "phi3:mini", "newest first");
    let (status, _, body) = post(
        &client,
        format!("{}/api/pull", sim.url()),
        json!({"model": "missing-model", "stream": false}),
    )
    .await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (
            500,
            json!({"error": "pull model manifest: file does not exist"})
        )
    );
    let (_, _, body) = post(
        &client,
        format!("{}/api/pull", sim.url()),
        json!({"model": "missing-model"}),
    )
    .await;
    assert_eq!(
        ndjson(&body).last().unwrap()["error"],
        "pull model manifest: file does not exist"
    );

    let (status, _, body) = post(
        &client,
        format!("{}/api/copy", sim.url()),
        json!({"source": "phi3:mini", "destination": "backup"}),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, ""));
    let (status, _, _) = post(
        &client,
        format!("{}/api/copy", sim.url()),
        json!({"source": "nope", "destination": "x"}),
    )
    .await;
    assert_eq!(status, 404);
    let (status, _, body) = post(
        &client,
        format!("{}/api/create", sim.url()),
        json!({"model": "mine", "from": CHAT, "stream": false}),
    )
    .await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()),
        (200, json!({"status": "success"}))
    );
    let models = listed().await;
    assert!(
        models.contains(&"backup:latest".to_string())
            && models.contains(&"mine:latest".to_string())
    );
    let (status, _, _) = post(
        &client,
        format!("{}/api/chat", sim.url()),
        json!({"model": "mine", "messages": [{"role":"user","content":"hi"}], "stream": false}),
    )
    .await;
    assert_eq!(status, 200, "a created model serves");

    let deleted = client
        .delete(format!("{}/api/delete", sim.url()))
        .json(&json!({"name": "backup"}))
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(deleted.text().await.unwrap(), "");
    assert!(!listed().await.contains(&"backup:latest".to_string()));
    let again = client
        .delete(format!("{}/api/delete", sim.url()))
        .json(&json!({"model": "backup"}))
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 404);
    assert_eq!(
        again.json::<Value>().await.unwrap(),
        json!({"error": "model 'backup' not found"})
    );
}
