//! Clients that hold connections without finishing their requests, over raw loopback
//! sockets: stalled heads and bodies are cut off, an oversized `Content-Length` is
//! refused before its body, and a flood of silent connections at the connection
//! limit, or past the open-file limit of a real foreman process, leaves `/healthz`
//! and real requests served. Deadlines are generous; no test asserts a timing.

use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;

/// Longer than any wait in these tests: a connection still open after it was not closed.
const DEADLINE: Duration = Duration::from_secs(20);

fn host(foreman: &TestForeman) -> &str {
    foreman.url.strip_prefix("http://").unwrap()
}

async fn connect(foreman: &TestForeman) -> TcpStream {
    TcpStream::connect(host(foreman)).await.unwrap()
}

/// Whether the server closes `stream` (end of file or reset) within [`DEADLINE`];
/// whatever it sends first is returned with the verdict.
async fn closed_by_server(stream: &mut TcpStream) -> (bool, String) {
    let mut seen = Vec::new();
    let read_all = async {
        let mut buffer = [0u8; 4096];
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buffer[..n]),
            }
        }
    };
    let closed = tokio::time::timeout(DEADLINE, read_all).await.is_ok();
    (closed, String::from_utf8_lossy(&seen).into_owned())
}

/// Reads one answer: its status, and its body (by `Content-Length`) as JSON.
async fn read_answer(stream: &mut TcpStream) -> (u16, String, Value) {
    let read = async {
        let mut seen = Vec::new();
        let mut buffer = [0u8; 4096];
        loop {
            let n = stream.read(&mut buffer).await.unwrap();
            assert!(n > 0, "closed before a whole answer: {seen:?}");
            seen.extend_from_slice(&buffer[..n]);
            let text = String::from_utf8_lossy(&seen).into_owned();
            let Some(end) = text.find("\r\n\r\n") else {
                continue;
            };
            let head = text[..end].to_string();
            let length: usize = head
                .lines()
                .find_map(|line| {
                    let (name, value) = line.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse().unwrap())
                })
                .unwrap_or(0);
            if seen.len() >= end + 4 + length {
                let status = head[9..12].parse().unwrap();
                let body =
                    serde_json::from_slice(&seen[end + 4..end + 4 + length]).unwrap_or(Value::Null);
                return (status, head, body);
            }
        }
    };
    tokio::time::timeout(DEADLINE, read)
        .await
        .expect("an answer within the deadline")
}

#[tokio::test]
async fn a_stalled_request_head_is_closed_after_the_header_timeout() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.header_timeout = Duration::from_millis(300);
    })
    .await;
    let mut half_line = connect(&foreman).await;
    half_line.write_all(b"GET /healthz HT").await.unwrap();
    let mut half_head = connect(&foreman).await;
    let head = format!(
        "POST /api/chat HTTP/1.1\r\nHost: {}\r\nContent-Le",
        host(&foreman)
    );
    half_head.write_all(head.as_bytes()).await.unwrap();
    let mut silent = connect(&foreman).await;
    for (what, stream) in [
        ("half a request line", &mut half_line),
        ("half the headers", &mut half_head),
        ("nothing at all", &mut silent),
    ] {
        let (closed, _) = closed_by_server(stream).await;
        assert!(closed, "a connection that sent {what} was closed");
    }
    let (status, _) = get_json(&client(), format!("{}/healthz", foreman.url)).await;
    assert_eq!(status, 200, "foreman still answers");
    foreman.stop().await;
}

#[tokio::test]
async fn a_stalled_body_gets_408_and_its_connection_closed() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.body_timeout = Duration::from_millis(300);
    })
    .await;
    let mut stream = connect(&foreman).await;
    let request = format!(
        "POST /api/chat HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"model\":",
        host(&foreman)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let (status, head, body) = read_answer(&mut stream).await;
    assert_eq!(status, 408, "{head}");
    assert_eq!(body, json!({"error": "timed out reading the request body"}));
    let (closed, _) = closed_by_server(&mut stream).await;
    assert!(closed, "the connection was closed after the 408");
    assert!(foreman.jobs().await.is_empty(), "no job was created");
    foreman.stop().await;
}

#[tokio::test]
async fn a_content_length_over_the_limit_gets_413_before_any_body() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        // Only the early check can answer in time: the body timeout is out of reach.
        config.body_timeout = Duration::from_secs(3600);
    })
    .await;
    let limit = 64 * 1024 * 1024;
    for (path, expected) in [
        (
            "/api/chat",
            json!({"error": format!("request body too large: the limit is {limit} bytes")}),
        ),
        (
            "/v1/chat/completions",
            json!({"error": {
                "message": format!("request body too large: the limit is {limit} bytes"),
                "type": "invalid_request_error", "param": null, "code": null,
            }}),
        ),
        (
            "/jobs",
            json!({"error": format!("request body too large: the limit is {limit} bytes")}),
        ),
    ] {
        let mut stream = connect(&foreman).await;
        let head = format!(
            "POST {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 10000000000\r\n\r\n",
            host(&foreman)
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (status, head, body) = read_answer(&mut stream).await;
        assert_eq!(status, 413, "{path}: {head}");
        assert_eq!(body, expected, "{path}");
    }
    assert!(foreman.jobs().await.is_empty(), "no job was created");
    foreman.stop().await;
}

#[tokio::test]
async fn silent_connections_at_the_limit_leave_healthz_and_real_requests_served() {
    let limit = 16;
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.max_connections = limit;
        // Only the limit can free a place: the stalled heads never time out here.
        config.header_timeout = Duration::from_secs(3600);
    })
    .await;
    let mut stalled = Vec::new();
    for _ in 0..limit * 2 {
        let mut stream = connect(&foreman).await;
        stream.write_all(b"GET /healthz HT").await.unwrap();
        stalled.push(stream);
    }
    let client = client();
    let (status, health) = get_json(&client, format!("{}/healthz", foreman.url)).await;
    assert_eq!(status, 200, "{health}");
    let (status, _, body) = post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body(CHAT, "still served", false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    // Closing makes room for the newest connections, so the oldest stalled ones go.
    let verdicts =
        futures::future::join_all(stalled.iter_mut().take(limit).map(closed_by_server)).await;
    let n_closed = verdicts.iter().filter(|(closed, _)| *closed).count();
    assert_eq!(
        n_closed, limit,
        "the oldest stalled connections were closed"
    );
    foreman.stop().await;
}

/// The defect as found: a real foreman process at a 256-descriptor limit, with more
/// silent connections than it has descriptors for, still answers `/healthz` and an
/// authenticated request.
#[tokio::test]
async fn more_silent_connections_than_descriptors_leave_foreman_serving() {
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), fast_sim())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut command = tokio::process::Command::new("sh");
    // Only the settings below: a FOREMAN_* variable in the developer's shell must not apply.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FOREMAN_") {
            command.env_remove(name);
        }
    }
    let mut foreman = command
        .args(["-c", "ulimit -n 256 && exec \"$0\" serve"])
        .arg(env!("CARGO_BIN_EXE_foreman"))
        .env("FOREMAN_ADDR", "127.0.0.1:0")
        .env("FOREMAN_OLLAMA_URL", sim.url())
        .env("FOREMAN_DATABASE", dir.path().join("foreman.db"))
        .env("FOREMAN_DATA_DIR", dir.path().join("data"))
        .env("FOREMAN_TOKEN", "secret")
        .env("FOREMAN_HEADER_TIMEOUT", "1h")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("foreman starts");
    let stdout = foreman.stdout.take().unwrap();
    let mut lines = tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(stdout));
    let banner = tokio::time::timeout(DEADLINE, lines.next_line())
        .await
        .expect("the banner arrives")
        .unwrap()
        .expect("a banner line");
    let url = banner
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .expect("the banner names the address")
        .to_string();
    let address = url.strip_prefix("http://").unwrap().to_string();
    let mut stalled = Vec::new();
    for _ in 0..300 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        stream.write_all(b"GET /healthz HT").await.unwrap();
        stalled.push(stream);
    }
    let client = client();
    let (status, health) = get_json(&client, format!("{url}/healthz")).await;
    assert_eq!(status, 200, "{health}");
    let tags = client
        .get(format!("{url}/api/tags"))
        .bearer_auth("secret")
        .send()
        .await
        .unwrap();
    assert_eq!(tags.status(), 200);
    drop(stalled);
    foreman.kill().await.unwrap();
    sim.shutdown().await;
}
