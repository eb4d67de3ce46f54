//! Shared helpers: start a simulator on port 0, a plain HTTP client, NDJSON parsing,
//! and polling with a deadline (never a bare sleep).

use std::time::Duration;

use ollama_sim::{ModelSpec, SimConfig, SimHandle};
use serde_json::Value;

pub const CHAT: &str = "llama3.2:3b";
pub const CHAT2: &str = "qwen2.5:0.5b";
pub const EMBED: &str = "nomic-embed-text";

/// Three fast models: two chat models and an embedder.
pub fn fast_config() -> SimConfig {
    SimConfig {
        models: vec![
            ModelSpec::parse("llama3.2:3b,load=20ms,tps=4000,tools").unwrap(),
            ModelSpec::parse("qwen2.5:0.5b,load=20ms,tps=4000,thinking").unwrap(),
            ModelSpec::parse("nomic-embed-text,embed,load=10ms").unwrap(),
        ],
        max_loaded: 3,
        ..SimConfig::default()
    }
}

pub async fn start(config: SimConfig) -> SimHandle {
    ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), config)
        .await
        .expect("simulator starts")
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Splits an NDJSON body into values, checking each line is one complete object.
pub fn ndjson(body: &str) -> Vec<Value> {
    assert!(body.ends_with('\n'), "an NDJSON body ends with a newline");
    body.lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("bad line {line:?}: {e}")))
        .collect()
}

/// Posts JSON and returns status, content type and body text.
pub async fn post(client: &reqwest::Client, url: String, body: Value) -> (u16, String, String) {
    let response = client.post(url).json(&body).send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, content_type, response.text().await.unwrap())
}

/// Polls `check` until it returns true or ten seconds pass.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting for: {what}");
}
