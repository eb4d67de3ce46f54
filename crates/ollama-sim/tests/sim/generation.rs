//! Generation as Ollama does it, where it matters to a scheduler: parallel streams
//! share a model's throughput along its batching curve, prompts cost evaluation time
//! and are cut to the context window, and `num_predict` caps every generated token.
//! Durations are checked as the simulator reports them (computed, not measured).

use ollama_sim::{ModelSpec, SimConfig};
use serde_json::{Value, json};

use crate::common::*;

fn one_model(spec: &str, num_parallel: usize) -> SimConfig {
    SimConfig {
        models: vec![ModelSpec::parse(spec).unwrap()],
        max_loaded: 1,
        num_parallel,
        ..SimConfig::default()
    }
}

async fn generate(base: &str, body: Value) -> Value {
    let (status, _, text) = post(&client(), format!("{base}/api/generate"), body).await;
    assert_eq!(status, 200, "{text}");
    serde_json::from_str(&text).unwrap()
}

/// A stream of `model` that goes on for minutes, checked to be generating. The
/// client must outlive the response.
async fn background_stream(client: &reqwest::Client, base: &str, model: &str) -> reqwest::Response {
    let mut response = client
        .post(format!("{base}/api/generate"))
        .json(&json!({"model": model, "prompt": "background work",
                      "options": {"num_predict": 100_000}}))
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().expect("a first chunk");
    assert!(String::from_utf8_lossy(&first).contains("\"done\":false"));
    response
}

#[tokio::test]
async fn parallel_streams_slow_down_along_the_batching_curve() {
    // 100 tokens/s alone; the default curve gives aggregates 1, 1.7, 2.4 and 3.
    let sim = start(SimConfig {
        // Answers go on until num_predict stops them, so background streams last.
        reply_tokens: 1_000_000,
        ..one_model("batched:1b,load=10ms,tps=100,prompt_tps=inf", 4)
    })
    .await;
    let base = sim.url();
    let client = client();
    let per_token = async || {
        let reply = generate(
            &base,
            json!({"model": "batched:1b", "prompt": "measure", "stream": false,
                   "options": {"num_predict": 5}}),
        )
        .await;
        assert_eq!(reply["eval_count"], 5);
        reply["eval_duration"].as_u64().unwrap() / 5
    };
    // Nanoseconds per token: 1e9 / (100 * aggregate / streams), rounded.
    assert_eq!(per_token().await, 10_000_000, "one stream: 100 tokens/s");
    let first = background_stream(&client, &base, "batched:1b").await;
    assert_eq!(
        per_token().await,
        11_764_706,
        "two streams: 85 tokens/s each"
    );
    let second = background_stream(&client, &base, "batched:1b").await;
    let third = background_stream(&client, &base, "batched:1b").await;
    assert_eq!(
        per_token().await,
        13_333_333,
        "four streams: 75 tokens/s each"
    );
    drop((first, second, third));
    eventually("the background streams end", async || {
        sim.stats().in_flight == 0
    })
    .await;
    assert_eq!(per_token().await, 10_000_000, "alone again");
}

#[tokio::test]
async fn a_curve_holds_its_last_aggregate_and_binds_per_model() {
    let config = SimConfig {
        models: vec![
            ModelSpec::parse("flat:1b,load=10ms,tps=100,prompt_tps=inf,batch=1,2").unwrap(),
            ModelSpec::parse("other:1b,load=10ms,tps=100,prompt_tps=inf").unwrap(),
        ],
        max_loaded: 2,
        num_parallel: 4,
        // Answers go on until num_predict stops them, so background streams last.
        reply_tokens: 1_000_000,
        ..SimConfig::default()
    };
    let sim = start(config).await;
    let base = sim.url();
    let client = client();
    let _busy_elsewhere = background_stream(&client, &base, "other:1b").await;
    let _one = background_stream(&client, &base, "flat:1b").await;
    let _two = background_stream(&client, &base, "flat:1b").await;
    let reply = generate(
        &base,
        json!({"model": "flat:1b", "prompt": "measure", "stream": false,
               "options": {"num_predict": 4}}),
    )
    .await;
    // Three streams of flat:1b (the other model's stream does not count); past the
    // curve's last point the aggregate stays 2: 100 * 2 / 3 tokens/s each.
    assert_eq!(reply["eval_duration"], 4 * 15_000_000);
}

#[tokio::test]
async fn prompts_cost_evaluation_time_before_the_answer() {
    let sim = start(one_model(
        "prompted:1b,load=10ms,tps=1000,prompt_tps=10000",
        1,
    ))
    .await;
    let words = vec!["word"; 1000].join(" ");
    let reply = generate(
        &sim.url(),
        json!({"model": "prompted:1b", "prompt": words, "stream": false}),
    )
    .await;
    assert_eq!(
        reply["prompt_eval_count"], 1002,
        "1000 words and the template's 2"
    );
    assert_eq!(reply["prompt_eval_duration"], 1002 * 100_000);
    let [total, load, prompt_eval, eval] = [
        "total_duration",
        "load_duration",
        "prompt_eval_duration",
        "eval_duration",
    ]
    .map(|key| reply[key].as_u64().unwrap());
    assert!(
        total >= load + prompt_eval + eval,
        "{total} < {load} + {prompt_eval} + {eval}"
    );
    // server/routes.go GenerateHandler: an old reply's context is detokenized in front
    // of the new prompt.
    let reply = generate(
        &sim.url(),
        json!({"model": "prompted:1b", "prompt": "again", "stream": false,
               "context": [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}),
    )
    .await;
    assert_eq!(reply["prompt_eval_count"], 10 + 1 + 2);
}

#[tokio::test]
async fn long_prompts_are_cut_to_the_context_as_the_runner_cuts_them() {
    // llm/llama_server.go completionPromptForRequest and contextShiftPromptLimit: keep
    // num_keep (4) tokens, free half the rest: 4096 - (4096 - 4) / 2 = 2050.
    let sim = start(one_model(
        "prompted:1b,load=10ms,tps=inf,prompt_tps=inf,ctx=4096",
        1,
    ))
    .await;
    let base = sim.url();
    let long = vec!["word"; 6000].join(" ");
    let ask = |extra: Value| {
        let mut body = json!({"model": "prompted:1b", "prompt": long, "stream": false});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        body
    };
    let reply = generate(&base, ask(json!({}))).await;
    assert_eq!(reply["prompt_eval_count"], 2050);
    let reply = generate(&base, ask(json!({"options": {"num_ctx": 100}}))).await;
    assert_eq!(reply["prompt_eval_count"], 52, "100 - (100 - 4) / 2");
    let reply = generate(
        &base,
        ask(json!({"options": {"num_ctx": 100, "num_keep": 50}})),
    )
    .await;
    assert_eq!(reply["prompt_eval_count"], 75, "100 - (100 - 50) / 2");
    let reply = generate(&base, ask(json!({"truncate": false}))).await;
    assert_eq!(
        reply["prompt_eval_count"], 6002,
        "truncate:false cuts nothing"
    );

    // With context shift off the runner refuses (a 400 written before the stream).
    let too_long = "the prompt is longer than the context length currently available to the model; shorten the prompt, adjust the context length in settings, or use a model with a longer context length";
    for (stream, content_type) in [
        (false, "application/json; charset=utf-8"),
        (true, "application/json"),
    ] {
        let (status, actual_type, body) = post(
            &client(),
            format!("{base}/api/generate"),
            ask(json!({"shift": false, "stream": stream})),
        )
        .await;
        assert_eq!((status, actual_type.as_str()), (400, content_type));
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"error": too_long})
        );
    }
}

#[tokio::test]
async fn chat_history_drops_old_messages_but_keeps_system_and_last() {
    // server/prompt.go chatPrompt: drop from the front until the prompt fits num_ctx,
    // keeping system messages and the last message. Each message costs its words + 4.
    let sim = start(one_model("prompted:1b,load=10ms,tps=inf,prompt_tps=inf", 1)).await;
    let words = |n: usize| vec!["word"; n].join(" ");
    let messages = json!([
        {"role": "system", "content": words(10)},
        {"role": "user", "content": words(60)},
        {"role": "assistant", "content": words(60)},
        {"role": "user", "content": words(20)},
    ]);
    let chat = async |options: Value| {
        let (status, _, body) = post(
            &client(),
            format!("{}/api/chat", sim.url()),
            json!({"model": "prompted:1b", "messages": messages, "stream": false,
                   "options": options}),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_str::<Value>(&body).unwrap()["prompt_eval_count"].clone()
    };
    assert_eq!(chat(json!({})).await, 14 + 64 + 64 + 24, "it fits");
    assert_eq!(chat(json!({"num_ctx": 100})).await, 14 + 24);
}

#[tokio::test]
async fn num_predict_caps_thinking_and_structured_output() {
    let sim = start(fast_config()).await;
    let chat = async |model: &str, extra: Value| {
        let mut body = json!({"model": model, "stream": false,
            "messages": [{"role": "user", "content": "Ollama is 22 years old."}]});
        for (key, value) in extra.as_object().unwrap() {
            body[key] = value.clone();
        }
        let (status, _, text) = post(&client(), format!("{}/api/chat", sim.url()), body).await;
        assert_eq!(status, 200, "{text}");
        serde_json::from_str::<Value>(&text).unwrap()
    };
    // llm/llama_server.go Completion: n_predict bounds the thinking too.
    let capped = chat(CHAT2, json!({"options": {"num_predict": 6}})).await;
    assert_eq!(capped["eval_count"], 6);
    assert_eq!(capped["done_reason"], "length");
    assert!(!capped["message"]["thinking"].as_str().unwrap().is_empty());
    assert_eq!(capped["message"]["content"], "");

    let schema = json!({"type": "object", "properties": {"age": {"type": "integer"}}});
    let cut = chat(
        CHAT,
        json!({"format": schema, "options": {"num_predict": 1}}),
    )
    .await;
    assert_eq!(
        (cut["eval_count"].clone(), cut["done_reason"].clone()),
        (json!(1), json!("length"))
    );
    let content = cut["message"]["content"].as_str().unwrap();
    assert!(
        serde_json::from_str::<Value>(content).is_err(),
        "{content} was cut"
    );

    // server/routes.go ChatHandler: a thinking model thinks unconstrained, then a
    // second completion, with its own budget, gives the structured answer; the final
    // statistics are that completion's, its prompt holding the thinking.
    let plain = chat(CHAT2, json!({"think": false})).await;
    let structured = chat(
        CHAT2,
        json!({"format": schema, "options": {"num_predict": 8}}),
    )
    .await;
    assert_eq!(structured["done_reason"], "stop");
    assert!(
        !structured["message"]["thinking"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    let answer = structured["message"]["content"].as_str().unwrap();
    assert!(serde_json::from_str::<Value>(answer).unwrap()["age"].is_u64());
    assert_eq!(
        structured["prompt_eval_count"].as_u64().unwrap(),
        plain["prompt_eval_count"].as_u64().unwrap() + 8,
        "eight thinking tokens join the prompt"
    );
    assert!(structured["eval_count"].as_u64().unwrap() <= 8);

    let generated = generate(
        &sim.url(),
        json!({"model": CHAT2, "prompt": "x", "stream": false, "options": {"num_predict": 6}}),
    )
    .await;
    assert_eq!(generated["eval_count"], 6);
    assert_eq!(generated["done_reason"], "length");
}
