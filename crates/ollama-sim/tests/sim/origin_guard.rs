//! Ollama's Host and Origin guard over real HTTP. Each test cites the line of Ollama
//! (commit fb30760, `server/routes.go`, `envconfig/config.go`) or of gin-contrib/cors
//! v1.7.2 (the CORS middleware Ollama installs) whose behaviour it checks.

use std::process::Stdio;
use std::time::Duration;

use ollama_sim::{SimConfig, SimHandle};
use reqwest::header::HeaderMap;
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use crate::common::*;

/// Sends a chat with optional `Host` and `Origin` headers; returns status, headers
/// and body.
async fn chat(
    url: &str,
    method: reqwest::Method,
    host: Option<&str>,
    origin: Option<&str>,
) -> (u16, HeaderMap, String) {
    let mut request = client().request(method, format!("{url}/api/chat")).json(
        &json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}], "stream": false}),
    );
    if let Some(host) = host {
        request = request.header("host", host);
    }
    if let Some(origin) = origin {
        request = request.header("origin", origin);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

fn header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).map(|v| v.to_str().unwrap())
}

fn assert_refused((status, headers, body): &(u16, HeaderMap, String)) {
    assert_eq!(*status, 403, "{body}");
    assert_eq!(body, "", "Ollama's refusal has no body (AbortWithStatus)");
    assert_eq!(header(headers, "content-type"), None);
}

/// routes.go:1815-1837: on a loopback listener a foreign Host gets 403 and no
/// route runs; loopback IPs and allowedHost names (1776-1801) pass.
#[tokio::test]
async fn a_foreign_host_is_refused_on_loopback() {
    let sim = start(fast_config()).await;
    let url = sim.url();
    let port = sim.addr().port();
    assert_refused(&chat(&url, reqwest::Method::POST, Some("evil.example"), None).await);
    assert_refused(
        &chat(
            &url,
            reqwest::Method::POST,
            Some(&format!("evil.example:{port}")),
            None,
        )
        .await,
    );
    assert_eq!(sim.stats().requests_total, 0, "nothing reached the model");
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        "ollama.local".into(),
    ] {
        let (status, _, body) = chat(&url, reqwest::Method::POST, Some(&host), None).await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    assert_eq!(sim.stats().requests_total, 3);
    sim.shutdown().await;
}

/// routes.go:1810: bound to a non-loopback address (0.0.0.0), Host is not checked.
#[tokio::test]
async fn hosts_are_not_checked_off_loopback() {
    let sim = ollama_sim::spawn("0.0.0.0:0".parse().unwrap(), fast_config())
        .await
        .unwrap();
    let url = format!("http://127.0.0.1:{}", sim.addr().port());
    let (status, _, body) = chat(&url, reqwest::Method::POST, Some("evil.example"), None).await;
    assert_eq!(status, 200, "{body}");
    sim.shutdown().await;
}

/// cors v1.7.2 config.go:84-87: a disallowed Origin gets 403 before any route;
/// config.go:93-98 and utils.go:12-27: an allowed one gets its origin back and
/// `Vary: Origin` (envconfig/config.go:91-98: localhost on any port is a default).
#[tokio::test]
async fn origins_are_checked_against_ollamas_defaults() {
    let sim = start(fast_config()).await;
    let url = sim.url();
    assert_refused(
        &chat(
            &url,
            reqwest::Method::POST,
            None,
            Some("http://evil.example"),
        )
        .await,
    );
    assert_eq!(sim.stats().requests_total, 0);
    let (status, headers, body) = chat(
        &url,
        reqwest::Method::POST,
        None,
        Some("http://localhost:3000"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("http://localhost:3000")
    );
    assert_eq!(header(&headers, "vary"), Some("Origin"));
    // config.go:78-81: a page of the server's own origin is not a CORS request.
    let own = format!("http://127.0.0.1:{}", sim.addr().port());
    let (status, headers, _) = chat(&url, reqwest::Method::POST, None, Some(&own)).await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "access-control-allow-origin"), None);
    sim.shutdown().await;
}

/// cors v1.7.2 config.go:89-91 and utils.go:29-65, with routes.go:1842-1867 (the
/// allowed headers): an allowed origin's preflight gets 204 and the CORS headers;
/// a disallowed one's gets 403.
#[tokio::test]
async fn preflights_get_204_with_ollamas_headers() {
    let sim = start(fast_config()).await;
    let url = sim.url();
    let (status, headers, body) = chat(
        &url,
        reqwest::Method::OPTIONS,
        None,
        Some("http://localhost:5173"),
    )
    .await;
    assert_eq!((status, body.as_str()), (204, ""));
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("http://localhost:5173")
    );
    assert_eq!(
        header(&headers, "access-control-allow-methods"),
        Some("GET,POST,PUT,PATCH,DELETE,HEAD,OPTIONS")
    );
    let allowed = header(&headers, "access-control-allow-headers").unwrap();
    assert!(allowed.starts_with("Authorization,Content-Type,User-Agent,Accept,X-Requested-With,Openai-Beta,X-Stainless-Arch"), "{allowed}");
    assert_eq!(header(&headers, "access-control-max-age"), Some("43200"));
    let vary: Vec<&str> = headers
        .get_all("vary")
        .iter()
        .map(|v| v.to_str().unwrap())
        .collect();
    assert_eq!(
        vary,
        [
            "Origin",
            "Access-Control-Request-Method",
            "Access-Control-Request-Headers"
        ]
    );
    assert_refused(
        &chat(
            &url,
            reqwest::Method::OPTIONS,
            None,
            Some("http://evil.example"),
        )
        .await,
    );
    // routes.go:1827-1832: OPTIONS without an Origin to an allowed name is 204 too.
    let host = format!("localhost:{}", sim.addr().port());
    let (status, _, _) = chat(&url, reqwest::Method::OPTIONS, Some(&host), None).await;
    assert_eq!(status, 204);
    sim.shutdown().await;
}

/// envconfig/config.go:86-89: OLLAMA_ORIGINS adds origins; cors v1.7.2
/// config.go:46-50 and utils.go:21-22: `*` allows all, answered with `*`.
#[tokio::test]
async fn extra_origins_are_allowed() {
    let started = |origins: &[&str]| {
        let config = SimConfig {
            origins: origins.iter().map(|o| o.to_string()).collect(),
            ..fast_config()
        };
        async move { start(config).await }
    };
    let sim: SimHandle = started(&["https://app.example"]).await;
    let (status, headers, _) = chat(
        &sim.url(),
        reqwest::Method::POST,
        None,
        Some("https://app.example"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_refused(
        &chat(
            &sim.url(),
            reqwest::Method::POST,
            None,
            Some("https://other.example"),
        )
        .await,
    );
    sim.shutdown().await;
    let sim = started(&["*"]).await;
    let (status, headers, _) = chat(
        &sim.url(),
        reqwest::Method::POST,
        None,
        Some("https://other.example"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(header(&headers, "access-control-allow-origin"), Some("*"));
    assert_eq!(header(&headers, "vary"), None);
    sim.shutdown().await;
}

/// envconfig/config.go:86-89 (OLLAMA_ORIGINS) read by the binary; cors v1.7.2
/// cors.go:135-138: an origin with neither `*` nor a scheme stops the start.
#[tokio::test]
async fn the_binary_reads_ollama_origins() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_ollama-sim"))
        .args(["--addr", "127.0.0.1:0"])
        .env("OLLAMA_ORIGINS", "app.example")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("OLLAMA_ORIGINS") && stderr.contains("app.example"),
        "{stderr}"
    );

    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_ollama-sim"))
        .args([
            "--addr",
            "127.0.0.1:0",
            "--model",
            "llama3.2:3b,load=10ms,tps=4000",
        ])
        .env("OLLAMA_ORIGINS", "https://app.example")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("the banner arrives")
        .unwrap()
        .expect("a banner line");
    let url = banner
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .expect("the banner names the URL")
        .to_string();
    let (status, headers, _) = chat(
        &url,
        reqwest::Method::POST,
        None,
        Some("https://app.example"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        header(&headers, "access-control-allow-origin"),
        Some("https://app.example")
    );
    assert_refused(
        &chat(
            &url,
            reqwest::Method::POST,
            None,
            Some("https://other.example"),
        )
        .await,
    );
    child.start_kill().unwrap();
    child.wait().await.unwrap();
}
