//! API keys end to end: two keys with different scopes and limits against every route
//! family (Ollama's, OpenAI's with the official `openai` client, Anthropic's, `/jobs`,
//! the operator's views), the 401/403/429 answers in each family's shape with their
//! headers, revocation, `FOREMAN_TOKEN` beside the keys, usage in the store, in
//! `/metrics` and in `foreman keys usage`, the `foreman keys` command on the database of
//! a running daemon, keys on PostgreSQL, and secrets kept out of the log and the file.

use std::process::Command;

use foreman_store::JobState;
use serde_json::{Value, json};

use crate::common::*;

const TOKEN: &str = "admin-s3cret";

/// A key made through the keys API with the admin token; its secret.
async fn create_key(foreman: &TestForeman, grant: Value) -> String {
    let response = client()
        .post(format!("{}/foreman/keys", foreman.url))
        .bearer_auth(TOKEN)
        .json(&grant)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "creating {grant}");
    let created: Value = response.json().await.unwrap();
    assert_eq!(created["name"], grant["name"]);
    assert!(created.get("secret_sha256").is_none());
    created["key"].as_str().unwrap().to_owned()
}

/// Sends a request with `key` as its bearer token: status, headers, body as JSON (Null
/// when not JSON).
async fn call(
    request: reqwest::RequestBuilder,
    key: &str,
) -> (u16, reqwest::header::HeaderMap, Value) {
    let response = request.bearer_auth(key).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.unwrap();
    (
        status,
        headers,
        serde_json::from_str(&text).unwrap_or(Value::Null),
    )
}

fn messages_body(model: &str) -> Value {
    json!({"model": model, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
}

fn openai_chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "hi"}]})
}

fn job_body(model: &str, priority: Option<i32>) -> Value {
    let mut body = json!({"kind": "chat", "request": chat_body(model, "hi", false)});
    if let Some(priority) = priority {
        body["priority"] = json!(priority);
    }
    body
}

async fn start() -> TestForeman {
    TestForeman::start_with(fast_sim(), |config| config.token = Some(TOKEN.into())).await
}

/// `chatter` may chat and submit jobs, with llama3.2 only, at priority 5 at most;
/// `embedder` may embed (any model) and read the metrics. Each route family lets each
/// key do exactly that, answers 403 in its own shape otherwise, and marks the jobs of
/// the chatter with its capped priority.
#[tokio::test]
async fn two_keys_get_what_their_grants_allow_on_every_route_family() {
    let foreman = start().await;
    let chatter = create_key(
        &foreman,
        json!({"name": "chatter", "scopes": ["chat", "jobs"], "models": ["llama3.2:*"], "max_priority": 5, "weight": 3}),
    )
    .await;
    let embedder = create_key(
        &foreman,
        json!({"name": "embedder", "scopes": ["embed", "metrics"]}),
    )
    .await;
    let c = client();
    let url = |path: &str| format!("{}{path}", foreman.url);

    // Ollama's native routes.
    let (status, _, body) = call(
        c.post(url("/api/chat")).json(&chat_body(CHAT, "hi", false)),
        &chatter,
    )
    .await;
    assert_eq!((status, body["done"].clone()), (200, json!(true)));
    let (status, _, body) = call(
        c.post(url("/api/chat"))
            .json(&chat_body(CHAT2, "hi", false)),
        &chatter,
    )
    .await;
    assert_eq!(status, 403);
    let message = body["error"].as_str().unwrap();
    assert!(
        message.contains(CHAT2) && message.contains("chatter"),
        "{message}"
    );
    let (status, _, body) = call(
        c.post(url("/api/embed"))
            .json(&json!({"model": EMBED, "input": "x"})),
        &chatter,
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        body["error"].as_str().unwrap().contains("'embed' scope"),
        "{body}"
    );
    let (status, _, body) = call(
        c.post(url("/api/embed"))
            .json(&json!({"model": EMBED, "input": "x"})),
        &embedder,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        c.post(url("/api/generate"))
            .json(&json!({"model": CHAT, "prompt": "hi", "stream": false})),
        &embedder,
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        body["error"].as_str().unwrap().contains("'chat' scope"),
        "{body}"
    );
    let (status, _, body) = call(
        c.post(url("/api/pull")).json(&json!({"model": CHAT})),
        &chatter,
    )
    .await;
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("'models' scope"));

    // Listings need any valid key; nothing without one.
    for key in [&chatter, &embedder] {
        for path in ["/api/tags", "/api/ps", "/api/version", "/v1/models"] {
            assert_eq!(call(c.get(url(path)), key).await.0, 200, "{path}");
        }
    }
    let (status, headers, body) = call(c.get(url("/api/tags")), "fk_not-a-key").await;
    assert_eq!((status, body), (401, json!({"error": "unauthorized"})));
    assert_eq!(headers["www-authenticate"], "Bearer");
    assert_eq!(c.get(url("/api/tags")).send().await.unwrap().status(), 401);

    // OpenAI's routes: the same grants, OpenAI's error shape.
    let (status, _, body) = call(
        c.post(url("/v1/chat/completions")).json(&openai_chat(CHAT)),
        &chatter,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        c.post(url("/v1/chat/completions")).json(&openai_chat(CHAT)),
        &embedder,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["type"], "permission_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'chat' scope")
    );
    let (status, _, body) = call(
        c.post(url("/v1/embeddings"))
            .json(&json!({"model": EMBED, "input": "x"})),
        &embedder,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (status, _, body) = call(
        c.post(url("/v1/responses"))
            .json(&json!({"model": CHAT2, "input": "hi"})),
        &chatter,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(body["error"]["type"], "permission_error");

    // Anthropic's Messages: the key in x-api-key, Anthropic's error shape.
    let messages = url("/v1/messages");
    let by_header = c
        .post(&messages)
        .header("x-api-key", &chatter)
        .json(&messages_body(CHAT))
        .send()
        .await
        .unwrap();
    assert_eq!(by_header.status(), 200);
    let refused = c
        .post(&messages)
        .header("x-api-key", &embedder)
        .json(&messages_body(CHAT))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 403);
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "permission_error");

    // The jobs API: scope, models, and the priority lowered to the key's highest.
    let (status, _, body) = call(
        c.post(url("/jobs")).json(&job_body(CHAT, Some(9))),
        &chatter,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let capped = body["id"].as_str().unwrap().to_owned();
    let (status, _, body) = call(
        c.post(url("/jobs")).json(&job_body(CHAT, Some(-3))),
        &chatter,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let low = body["id"].as_str().unwrap().to_owned();
    let (status, _, body) = call(c.post(url("/jobs")).json(&job_body(CHAT2, None)), &chatter).await;
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains(CHAT2));
    let (status, _, body) = call(c.post(url("/jobs")).json(&job_body(CHAT, None)), &embedder).await;
    assert_eq!(status, 403);
    assert!(body["error"].as_str().unwrap().contains("'jobs' scope"));
    let (status, _, _) = call(c.get(url(&format!("/jobs/{capped}"))), &chatter).await;
    assert_eq!(status, 200);
    // The sync chat asked no priority (default 10): it ran at the key's 5 too.
    let jobs = foreman.jobs().await;
    let priority_of = |id: &str| {
        jobs.iter()
            .find(|job| job.id.to_string() == id)
            .map(|job| job.priority)
    };
    assert_eq!(priority_of(&capped), Some(5));
    assert_eq!(priority_of(&low), Some(-3));
    let sync_chats: Vec<i32> = jobs
        .iter()
        .filter(|job| job.sync)
        .map(|job| job.priority)
        .collect();
    assert!(
        !sync_chats.is_empty() && sync_chats.iter().all(|p| *p == 5),
        "{sync_chats:?}"
    );

    // The operator's views: the embedder holds `metrics`, the chatter does not.
    for path in ["/metrics", "/foreman/status"] {
        assert_eq!(call(c.get(url(path)), &embedder).await.0, 200, "{path}");
        let (status, _, body) = call(c.get(url(path)), &chatter).await;
        assert_eq!(status, 403, "{path}");
        assert!(body["error"].as_str().unwrap().contains("'metrics' scope"));
    }
    // Batches are matched by prefix, before any route: refused without `batch`, and
    // the admin token passes to whatever answers there.
    let (status, _, body) = call(c.get(url("/v1/batches")), &chatter).await;
    assert_eq!(status, 403);
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("'batch' scope")
    );
    assert_ne!(call(c.get(url("/v1/batches")), TOKEN).await.0, 403);
    // The keys API is the admin's.
    let (status, _, _) = call(c.get(url("/foreman/keys")), &embedder).await;
    assert_eq!(status, 403);
    let (status, _, listed) = call(c.get(url("/foreman/keys")), TOKEN).await;
    assert_eq!(status, 200);
    let names: Vec<&str> = listed["keys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["chatter", "embedder"]);
    let chatter_view = &listed["keys"][0];
    assert_eq!(chatter_view["grant"]["weight"], 3);
    assert!(chatter.starts_with(chatter_view["prefix"].as_str().unwrap()));
    assert!(!listed.to_string().contains(&chatter));

    // FOREMAN_TOKEN still does everything.
    assert_eq!(
        call(
            c.post(url("/api/chat"))
                .json(&chat_body(CHAT2, "hi", false)),
            TOKEN
        )
        .await
        .0,
        200
    );
    assert_eq!(call(c.get(url("/metrics")), TOKEN).await.0, 200);
    foreman.stop().await;
}

/// Each limit answers 429 with `Retry-After`, in the family's shape; `/v1` answers
/// carry OpenAI's rate-limit headers.
#[tokio::test]
async fn limits_answer_429_with_retry_after_and_openai_rate_headers() {
    let foreman = start().await;
    let c = client();
    let url = |path: &str| format!("{}{path}", foreman.url);

    // Requests per minute.
    let rpm = create_key(
        &foreman,
        json!({"name": "rpm", "scopes": ["chat"], "requests_per_minute": 3}),
    )
    .await;
    for remaining in ["2", "1", "0"] {
        let (status, headers, _) = call(c.get(url("/v1/models")), &rpm).await;
        assert_eq!(status, 200);
        assert_eq!(headers["x-ratelimit-limit-requests"], "3");
        assert_eq!(headers["x-ratelimit-remaining-requests"], remaining);
        assert!(
            headers["x-ratelimit-reset-requests"]
                .to_str()
                .unwrap()
                .ends_with('s')
        );
    }
    let (status, headers, body) = call(
        c.post(url("/v1/chat/completions")).json(&openai_chat(CHAT)),
        &rpm,
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("requests in the last minute")
    );
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry), "{retry}");
    assert_eq!(headers["x-ratelimit-remaining-requests"], "0");
    let (status, headers, body) = call(
        c.post(url("/api/chat")).json(&chat_body(CHAT, "hi", false)),
        &rpm,
    )
    .await;
    assert_eq!(status, 429);
    assert!(headers.contains_key("retry-after"));
    assert!(body["error"].is_string(), "{body}");
    assert!(!headers.contains_key("x-ratelimit-limit-requests"));
    let refused = c
        .post(url("/v1/messages"))
        .header("x-api-key", &rpm)
        .json(&messages_body(CHAT))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);
    assert!(refused.headers().contains_key("retry-after"));
    let body: Value = refused.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");
    // The token is not limited by a key's limits.
    assert_eq!(call(c.get(url("/v1/models")), TOKEN).await.0, 200);

    // Requests in flight: one held chat takes the key's one place until it ends.
    let single = create_key(
        &foreman,
        json!({"name": "single", "scopes": ["chat"], "concurrency": 1}),
    )
    .await;
    hold(&foreman.sim, true);
    let held = tokio::spawn({
        let request = c
            .post(url("/api/chat"))
            .bearer_auth(&single)
            .json(&chat_body(CHAT, "held", false));
        async move { request.send().await.unwrap().status().as_u16() }
    });
    eventually("the held chat to run", async || {
        foreman
            .jobs()
            .await
            .iter()
            .any(|job| job.state == JobState::Running)
    })
    .await;
    let (status, headers, body) = call(
        c.post(url("/api/chat"))
            .json(&chat_body(CHAT, "second", false)),
        &single,
    )
    .await;
    assert_eq!(status, 429);
    assert_eq!(headers["retry-after"], "1");
    assert!(
        body["error"].as_str().unwrap().contains("in flight"),
        "{body}"
    );
    hold(&foreman.sim, false);
    assert_eq!(held.await.unwrap(), 200);
    assert_eq!(
        call(
            c.post(url("/api/chat"))
                .json(&chat_body(CHAT, "third", false)),
            &single
        )
        .await
        .0,
        200
    );

    // Unfinished jobs: one queued job holds the key's one place until it is cancelled.
    let batcher = create_key(
        &foreman,
        json!({"name": "batcher", "scopes": ["jobs"], "max_queued": 1}),
    )
    .await;
    hold(&foreman.sim, true);
    let (status, _, first) = call(c.post(url("/jobs")).json(&job_body(CHAT, None)), &batcher).await;
    assert_eq!(status, 202);
    let (status, headers, body) =
        call(c.post(url("/jobs")).json(&job_body(CHAT, None)), &batcher).await;
    assert_eq!(status, 429, "{body}");
    assert!(headers.contains_key("retry-after"));
    assert!(body["error"].as_str().unwrap().contains("unfinished jobs"));
    let id = first["id"].as_str().unwrap();
    let cancel = call(c.post(url(&format!("/jobs/{id}/cancel"))), &batcher).await;
    assert!([200, 202].contains(&cancel.0), "{cancel:?}");
    hold(&foreman.sim, false);
    eventually("the cancelled job to free its place", async || {
        call(c.post(url("/jobs")).json(&job_body(CHAT, None)), &batcher)
            .await
            .0
            == 202
    })
    .await;

    // Tokens per day: the first chat's tokens use the day's one token up.
    let thrifty = create_key(
        &foreman,
        json!({"name": "thrifty", "scopes": ["chat"], "tokens_per_day": 1}),
    )
    .await;
    let (status, headers, body) = call(
        c.post(url("/v1/chat/completions")).json(&openai_chat(CHAT)),
        &thrifty,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["x-ratelimit-limit-tokens"], "1");
    let (status, headers, body) = call(
        c.post(url("/v1/chat/completions")).json(&openai_chat(CHAT)),
        &thrifty,
    )
    .await;
    assert_eq!(status, 429, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("tokens per day")
    );
    assert_eq!(headers["x-ratelimit-remaining-tokens"], "0");
    let retry: u64 = headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=86_400).contains(&retry));
    // Listings use no tokens.
    assert_eq!(call(c.get(url("/api/tags")), &thrifty).await.0, 200);
    foreman.stop().await;
}

/// The official `openai` Python client with two keys: each one's calls work as its
/// grant says, a missing scope is the client's `PermissionDeniedError`, the rate limit
/// its `RateLimitError` (with `Retry-After`), a revoked key its `AuthenticationError`.
#[tokio::test]
async fn the_official_openai_client_sees_scopes_limits_and_revocation() {
    let foreman = start().await;
    let key = create_key(
        &foreman,
        json!({"name": "py", "scopes": ["chat"], "requests_per_minute": 2}),
    )
    .await;
    let embed_key = create_key(
        &foreman,
        json!({"name": "py-embed", "scopes": ["embed"], "models": ["nomic-*"]}),
    )
    .await;
    let script = r#"
import json, sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
def attempt(call):
    try:
        call()
        return "ok"
    except openai.PermissionDeniedError as error:
        return [error.status_code, error.body["type"]]
    except openai.RateLimitError as error:
        return [error.status_code, error.response.headers.get("retry-after") is not None]
chat = lambda: client.chat.completions.create(model=sys.argv[3], messages=[{"role": "user", "content": "hi"}]).choices[0].message.content
embed = lambda: client.embeddings.create(model=sys.argv[4], input="x").data[0].embedding[0]
seen = {
    "models": attempt(lambda: client.models.list()),
    "chat": attempt(chat),
    "embed": attempt(embed),
    "chat again": attempt(chat),
}
print(json.dumps(seen))
"#;
    let python = concat!(env!("CARGO_MANIFEST_DIR"), "/../../.venv/bin/python");
    let run = |key: String| {
        let url = foreman.url.clone();
        let script = script.to_owned();
        tokio::task::spawn_blocking(move || {
            Command::new(python)
                .args(["-c", &script, &url, &key, CHAT, EMBED])
                .output()
                .unwrap()
        })
    };
    for (key, expected) in [
        (
            &key,
            json!({"models": "ok", "chat": "ok", "embed": [403, "permission_error"], "chat again": [429, true]}),
        ),
        (
            &embed_key,
            json!({"models": "ok", "chat": [403, "permission_error"], "embed": "ok", "chat again": [403, "permission_error"]}),
        ),
    ] {
        let output = run(key.clone()).await.unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let seen: Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(seen, expected);
    }

    let revoked = client()
        .delete(format!("{}/foreman/keys/py", foreman.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(revoked.status(), 200);
    let check = r#"
import sys, openai
client = openai.OpenAI(base_url=sys.argv[1] + "/v1", api_key=sys.argv[2], max_retries=0)
try:
    client.models.list()
    print("listed")
except openai.AuthenticationError as error:
    print(error.status_code)
"#;
    let (url, python_key) = (foreman.url.clone(), key.clone());
    let output = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .args(["-c", check, &url, &python_key])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "401");
    foreman.stop().await;
}

/// What a key used is counted: requests, the tokens the target reported, run time and
/// loads, in the store (the keys API and `foreman keys usage`) and in `/metrics`.
#[tokio::test]
async fn usage_is_counted_per_key_in_the_store_metrics_and_the_cli() {
    let foreman = start().await;
    let counted = create_key(&foreman, json!({"name": "counted", "scopes": ["chat"]})).await;
    let c = client();
    let mut prompt = 0;
    let mut completion = 0;
    for text in ["one", "two", "three"] {
        let (status, _, body) = call(
            c.post(format!("{}/api/chat", foreman.url))
                .json(&chat_body(CHAT, text, false)),
            &counted,
        )
        .await;
        assert_eq!(status, 200);
        prompt += body["prompt_eval_count"].as_i64().unwrap();
        completion += body["eval_count"].as_i64().unwrap();
    }
    assert!(prompt > 0 && completion > 0);
    let (_, _, _) = call(c.get(format!("{}/api/tags", foreman.url)), &counted).await;
    let (status, _, _) = call(c.get(format!("{}/metrics", foreman.url)), &counted).await;
    assert_eq!(status, 403, "refused: not counted as a request");

    let usage_url = format!("{}/foreman/keys/usage?key=counted", foreman.url);
    let mut usage = Value::Null;
    eventually("the chats' usage to be recorded", async || {
        usage = call(c.get(&usage_url), TOKEN).await.2;
        usage["keys"][0]["completion_tokens"] == json!(completion)
    })
    .await;
    let key = &usage["keys"][0];
    assert_eq!(key["name"], "counted");
    assert_eq!(key["requests"], 4);
    assert_eq!(key["prompt_tokens"], json!(prompt));
    assert_eq!(key["loads"], 1, "the first chat loaded the model");
    assert!(key["gpu_seconds"].as_f64().unwrap() > 0.0);
    assert!(!key["hours"].as_array().unwrap().is_empty());

    let (status, _, _) = call(c.get(format!("{}/metrics", foreman.url)), TOKEN).await;
    assert_eq!(status, 200);
    let page = c
        .get(format!("{}/metrics", foreman.url))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for line in [
        "foreman_key_requests_total{key=\"counted\"} 4".to_owned(),
        format!("foreman_key_prompt_tokens_total{{key=\"counted\"}} {prompt}"),
        format!("foreman_key_completion_tokens_total{{key=\"counted\"}} {completion}"),
        "foreman_key_model_loads_total{key=\"counted\"} 1".to_owned(),
        "foreman_key_refusals_total{key=\"counted\",reason=\"forbidden\"} 1".to_owned(),
        "foreman_key_refusals_total{key=\"counted\",reason=\"limited\"} 0".to_owned(),
    ] {
        assert!(page.lines().any(|l| l == line), "{line} in\n{page}");
    }
    assert!(page.contains("foreman_key_requests_total{key=\"admin\"}"));

    // The command reads the same from the database, beside the running daemon.
    let output = Command::new(env!("CARGO_BIN_EXE_foreman"))
        .args(["keys", "usage", "counted", "--json", "--database"])
        .arg(&foreman.db_path)
        .output()
        .unwrap();
    assert!(output.status.success());
    let cli: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(cli["keys"][0]["prompt_tokens"], json!(prompt));
    assert_eq!(cli["keys"][0]["completion_tokens"], json!(completion));
    foreman.stop().await;
}

fn keys_cli(db: &std::path::Path, args: &[&str]) -> (i32, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_foreman"))
        .arg("keys")
        .args(args)
        .args(["--json", "--database"])
        .arg(db)
        .env_remove("FOREMAN_DATABASE")
        .env_remove("FOREMAN_DATA_DIR")
        .output()
        .unwrap();
    (
        output.status.code().unwrap(),
        serde_json::from_slice(&output.stdout).unwrap_or(Value::Null),
    )
}

/// `foreman keys` on the database of a running daemon: a key it creates is taken
/// within a second, a revoked one refused; the keys API revokes at once. A daemon
/// without FOREMAN_TOKEN is open until a key exists.
#[tokio::test]
async fn the_cli_manages_keys_beside_a_running_daemon_and_revocation_takes_effect() {
    let foreman = TestForeman::start(fast_sim()).await;
    let c = client();
    let tags = format!("{}/api/tags", foreman.url);
    assert_eq!(c.get(&tags).send().await.unwrap().status(), 200, "open");

    let (code, created) = keys_cli(
        &foreman.db_path,
        &[
            "create",
            "--name",
            "ci-bot",
            "--scopes",
            "chat,embed,jobs",
            "--max-priority",
            "5",
            "--models",
            "llama3.2:*",
            "--weight",
            "2",
        ],
    );
    assert_eq!(code, 0, "{created}");
    let secret = created["key"].as_str().unwrap().to_owned();
    assert_eq!(created["grant"]["scopes"], json!(["chat", "embed", "jobs"]));
    assert_eq!(created["grant"]["weight"], 2);
    eventually("the daemon to require keys", async || {
        c.get(&tags).send().await.unwrap().status() == 401
    })
    .await;
    assert_eq!(call(c.get(&tags), &secret).await.0, 200);
    let (code, admin) = keys_cli(
        &foreman.db_path,
        &["create", "--name", "ops", "--scopes", "admin"],
    );
    assert_eq!(code, 0);
    let admin = admin["key"].as_str().unwrap().to_owned();

    let (code, refused) = keys_cli(
        &foreman.db_path,
        &["create", "--name", "ci-bot", "--scopes", "chat"],
    );
    assert_eq!(code, 1);
    assert!(refused["error"].as_str().unwrap().contains("exists"));
    let (code, refused) = keys_cli(
        &foreman.db_path,
        &["create", "--name", "x", "--scopes", "everything"],
    );
    assert_eq!(code, 2, "{refused}");
    let (code, refused) = keys_cli(
        &foreman.db_path,
        &["create", "--name", "admin", "--scopes", "chat"],
    );
    assert_eq!(code, 2, "{refused}");

    let (code, listed) = keys_cli(&foreman.db_path, &["list"]);
    assert_eq!(code, 0);
    assert_eq!(listed["keys"].as_array().unwrap().len(), 2);
    assert!(!listed.to_string().contains(&secret));
    eventually("the key's last use to be recorded", async || {
        keys_cli(&foreman.db_path, &["list"]).1["keys"][0]["last_used_at"].is_string()
    })
    .await;

    let (code, _) = keys_cli(&foreman.db_path, &["revoke", "ci-bot"]);
    assert_eq!(code, 0);
    eventually("the revoked key to be refused", async || {
        call(c.get(&tags), &secret).await.0 == 401
    })
    .await;
    let (code, _) = keys_cli(&foreman.db_path, &["revoke", "ci-bot"]);
    assert_eq!(code, 1, "revoked already");

    // Through the keys API (with an admin key, no token set), at once.
    let (status, _, made) = call(
        c.post(format!("{}/foreman/keys", foreman.url))
            .json(&json!({"name": "short-lived", "scopes": ["chat"]})),
        &admin,
    )
    .await;
    assert_eq!(status, 201);
    let short = made["key"].as_str().unwrap().to_owned();
    assert_eq!(call(c.get(&tags), &short).await.0, 200);
    let (status, _, _) = call(
        c.delete(format!("{}/foreman/keys/short-lived", foreman.url)),
        &admin,
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(call(c.get(&tags), &short).await.0, 401);
    let (status, _, body) = call(
        c.delete(format!("{}/foreman/keys/short-lived", foreman.url)),
        &admin,
    )
    .await;
    assert_eq!(status, 404, "{body}");
    let (status, _, body) = call(
        c.post(format!("{}/foreman/keys", foreman.url))
            .json(&json!({"name": "ops", "scopes": ["chat"]})),
        &admin,
    )
    .await;
    assert_eq!(status, 409, "{body}");
    let (status, _, _) = call(
        c.post(format!("{}/foreman/keys", foreman.url))
            .json(&json!({"name": "bad", "scopes": ["chat"], "concurrency": 0})),
        &admin,
    )
    .await;
    assert_eq!(status, 400);
    foreman.stop().await;
}

/// Keys on PostgreSQL: created through one daemon's keys API, used and counted there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keys_work_on_postgres() {
    let db = foreman_store::test_postgres::TestDatabase::create().await;
    let database = db.url.clone();
    let foreman = TestForeman::start_with(fast_sim(), move |config| {
        config.database = database;
        config.token = Some(TOKEN.into());
    })
    .await;
    let key = create_key(&foreman, json!({"name": "pg", "scopes": ["chat"]})).await;
    let c = client();
    let (status, _, _) = call(
        c.post(format!("{}/api/chat", foreman.url))
            .json(&chat_body(CHAT, "hi", false)),
        &key,
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, body) = call(c.get(format!("{}/metrics", foreman.url)), &key).await;
    assert_eq!(status, 403, "{body}");
    let usage_url = format!("{}/foreman/keys/usage?key=pg", foreman.url);
    eventually("the usage on PostgreSQL", async || {
        let usage = call(c.get(&usage_url), TOKEN).await.2;
        usage["keys"][0]["requests"] == json!(1)
            && usage["keys"][0]["completion_tokens"].as_i64() > Some(0)
    })
    .await;
    foreman.stop().await;
}

/// A key's secret is in no log line (the daemon's, at debug level) and nowhere in the
/// database file or its WAL, while its prefix is (so the search looks in the right
/// place).
#[tokio::test]
async fn secrets_reach_neither_the_log_nor_the_database_file() {
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), fast_sim())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foreman.db");
    let (code, created) = keys_cli(&db, &["create", "--name", "hidden", "--scopes", "chat"]);
    assert_eq!(code, 0);
    let secret = created["key"].as_str().unwrap().to_owned();
    let prefix = created["prefix"].as_str().unwrap().to_owned();
    let (mut child, url, mut log) = start_foreman_binary_logged(
        db.to_str().unwrap(),
        &[
            ("FOREMAN_OLLAMA_URL", sim.url()),
            ("FOREMAN_LOG", "debug".into()),
        ],
    )
    .await;
    let c = client();
    for (path, body) in [
        ("/api/chat", chat_body(CHAT, "hi", false)),
        ("/api/embed", json!({"model": EMBED, "input": "x"})),
    ] {
        call(c.post(format!("{url}{path}")).json(&body), &secret).await;
    }
    let wrong = format!("{secret}x");
    assert_eq!(call(c.get(format!("{url}/api/tags")), &wrong).await.0, 401);
    eventually("the use to be recorded", async || {
        keys_cli(&db, &["list"]).1["keys"][0]["last_used_at"].is_string()
    })
    .await;
    let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::TERM).unwrap();
    child.wait().await.unwrap();
    let mut lines = Vec::new();
    while let Ok(Some(line)) = log.next_line().await {
        lines.push(line);
    }
    assert!(lines.len() > 3, "the log was read: {lines:?}");
    let random_part = &secret[3..];
    for line in &lines {
        assert!(!line.contains(random_part), "secret in the log: {line}");
    }
    let mut stored = String::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.to_string_lossy().contains("foreman.db") {
            let bytes = std::fs::read(&path).unwrap();
            let text = String::from_utf8_lossy(&bytes);
            assert!(!text.contains(random_part), "secret in {}", path.display());
            stored.push_str(&text);
        }
    }
    assert!(
        stored.contains(&prefix),
        "the prefix is stored, so the files were read"
    );
    sim.shutdown().await;
}

/// One `foreman::serve` on `database` with its own instance id and port.
async fn instance(
    id: &str,
    sim: &ollama_sim::SimHandle,
    database: &str,
    data: &std::path::Path,
) -> (String, tokio_util::sync::CancellationToken, ServeTask) {
    let mut config = test_config(&sim.url(), "unused.db");
    config.database = database.to_owned();
    config.data_dir = data.join(id);
    config.instance_id = id.to_owned();
    launch(&config).await
}

/// Two instances on one PostgreSQL database: a key's job accepted by one and run by
/// the other holds the key's place in the accepting instance until it ends there in
/// the other, and is then booked (its usage recorded) by the instance that accepted it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_job_run_by_another_instance_frees_its_keys_place_where_it_was_accepted() {
    let db = foreman_store::test_postgres::TestDatabase::create().await;
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), fast_sim())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = foreman_store::Store::open(&db.url).await.unwrap();
    let grant: foreman::keys::Grant =
        serde_json::from_value(json!({"scopes": ["jobs"], "max_queued": 1})).unwrap();
    let secret = foreman::keys::manage::create(&store, "shared", &grant, 1)
        .await
        .unwrap()
        .secret;
    let a = instance("it-a", &sim, &db.url, data.path()).await;
    let b = instance("it-b", &sim, &db.url, data.path()).await;
    let c = client();
    let submit = async |url: &str| {
        call(
            c.post(format!("{url}/jobs")).json(&job_body(CHAT, None)),
            &secret,
        )
        .await
    };

    // Which instance holds the target (and so runs every job)?
    hold(&sim, true);
    let (status, _, first) = submit(&a.0).await;
    assert_eq!(status, 202);
    let first: foreman_store::JobId = first["id"].as_str().unwrap().parse().unwrap();
    let mut owner = String::new();
    eventually("the first job to run", async || {
        let job = store.get(first).await.unwrap().unwrap();
        owner = job.lease_owner.clone().unwrap_or_default();
        job.state == JobState::Running
    })
    .await;
    let other = if owner.starts_with("it-a/") {
        &b.0
    } else {
        &a.0
    };
    hold(&sim, false);
    recorded(&store, first).await;

    // Accepted by the other, run by the holder.
    hold(&sim, true);
    let (status, _, second) = submit(other).await;
    assert_eq!(status, 202, "{second}");
    let second: foreman_store::JobId = second["id"].as_str().unwrap().parse().unwrap();
    let (status, _, body) = submit(other).await;
    assert_eq!(status, 429, "the second job holds the key's place: {body}");
    hold(&sim, false);
    let done = recorded(&store, second).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert!(done.target.is_some());
    eventually(
        "the place to be freed where the job was accepted",
        async || submit(other).await.0 == 202,
    )
    .await;
    eventually("its usage to be booked", async || {
        store
            .key_usage(Some("shared"), 0)
            .await
            .unwrap()
            .iter()
            .map(|bucket| bucket.completion_tokens)
            .sum::<i64>()
            > 0
    })
    .await;
    for (_, shutdown, task) in [a, b] {
        shutdown.cancel();
        task.await.unwrap().unwrap();
    }
    store.close().await;
    sim.shutdown().await;
}
