//! `foreman status`: what a running daemon's targets have loaded and run, and what
//! waits, in one screen (or its `GET /foreman/status` JSON with `--json`), for a
//! person at a terminal who wants the dashboard's answer without a browser.
//!
//! It takes the same connection flags as `foreman jobs` (`--url`, `--token`, `--json`,
//! and their `FOREMAN_URL` / `FOREMAN_TOKEN` variables). Exit codes: 0 when foreman
//! answered, 1 when it could not be reached or answered with an error.

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::Args;
use serde_json::Value;
use thiserror::Error;

use crate::cli::Connection;

/// `foreman status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub connection: Connection,
}

/// Why the status could not be shown.
#[derive(Debug, Error)]
pub enum StatusError {
    #[error("cannot reach foreman at {url}: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("foreman answered {status}: {message}")]
    Refused { status: u16, message: String },
    #[error("foreman's answer is not the status JSON: {0}")]
    Malformed(String),
}

pub async fn run(args: StatusArgs) -> ExitCode {
    // reqwest is built without a default TLS provider; `--url https://...` needs one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    match fetch(&args.connection).await {
        Ok(status) => {
            if args.connection.json {
                println!("{status}");
            } else {
                print!("{}", render(&status));
            }
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("foreman: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `GET /foreman/status`, with the token when there is one.
pub async fn fetch(connection: &Connection) -> Result<Value, StatusError> {
    let url = format!("{}/foreman/status", connection.url.trim_end_matches('/'));
    let unreachable = |reason: String| StatusError::Unreachable {
        url: connection.url.clone(),
        reason,
    };
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| unreachable(e.to_string()))?;
    let mut request = client.get(&url);
    if let Some(token) = &connection.token {
        request = request.bearer_auth(token);
    }
    let response = request
        .send()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|e| unreachable(e.to_string()))?;
    if status != 200 {
        let message = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|value| value["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(StatusError::Refused { status, message });
    }
    let value: Value =
        serde_json::from_str(&text).map_err(|e| StatusError::Malformed(e.to_string()))?;
    if !value["targets"].is_array() {
        return Err(StatusError::Malformed("no targets".into()));
    }
    Ok(value)
}

/// The status as text: each target with what it has loaded and runs, the queue by
/// model and priority, and the load counters.
pub fn render(status: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let _ = writeln!(out, "TARGETS");
    for target in status["targets"].as_array().unwrap_or(&empty) {
        let up =
            target["reachable"].as_bool() == Some(true) && target["paused"].as_bool() != Some(true);
        let slots = target["slots"].as_u64().unwrap_or(0) * target["places"].as_u64().unwrap_or(0);
        let _ = writeln!(
            out,
            "  {}  {}  {} of {} slots busy",
            target["name"].as_str().unwrap_or("?"),
            if up { "up" } else { "DOWN" },
            target["running"].as_u64().unwrap_or(0),
            slots
        );
        let loaded = target["loaded"].as_array().unwrap_or(&empty);
        if loaded.is_empty() {
            let _ = writeln!(out, "    nothing loaded");
        }
        for key in loaded {
            let running = key["running"].as_u64().unwrap_or(0);
            let _ = writeln!(
                out,
                "    {}  {}",
                key["key"].as_str().unwrap_or("?"),
                if running == 0 {
                    "idle".to_string()
                } else {
                    format!("{running} running")
                }
            );
        }
    }
    let queue = status["queue"].as_array().unwrap_or(&empty);
    let _ = writeln!(out, "QUEUE");
    if queue.is_empty() {
        let _ = writeln!(out, "  empty");
    } else {
        let width = queue
            .iter()
            .map(|group| group["model"].as_str().unwrap_or("").len())
            .max()
            .unwrap_or(0)
            .max("MODEL".len());
        let _ = writeln!(out, "  {:width$}  PRIORITY  JOBS  OLDEST WAIT", "MODEL");
        for group in queue {
            let _ = writeln!(
                out,
                "  {:width$}  {:>8}  {:>4}  {:.1}s",
                group["model"].as_str().unwrap_or("?"),
                group["priority"].as_i64().unwrap_or(0),
                group["count"].as_u64().unwrap_or(0),
                group["oldest_wait_seconds"].as_f64().unwrap_or(0.0),
            );
        }
    }
    let _ = writeln!(
        out,
        "LOADS  made {}, avoided {}",
        status["counters"]["loads"].as_u64().unwrap_or(0),
        status["counters"]["loads_avoided"].as_u64().unwrap_or(0)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_targets_their_keys_and_the_queue() {
        let status = json!({
            "targets": [
                {"name": "gpu", "reachable": true, "paused": false, "slots": 2, "places": 1,
                 "running": 1, "loaded": [{"key": "llama3.2:3b", "running": 1}]},
                {"name": "spare", "reachable": false, "paused": true, "slots": 1, "places": 1,
                 "running": 0, "loaded": []}
            ],
            "queue": [{"model": "qwen2.5:0.5b", "priority": 10, "count": 3, "oldest_wait_seconds": 2.31}],
            "counters": {"loads": 4, "loads_avoided": 7}
        });
        assert_eq!(
            render(&status),
            "TARGETS\n  gpu  up  1 of 2 slots busy\n    llama3.2:3b  1 running\n  \
             spare  DOWN  0 of 1 slots busy\n    nothing loaded\nQUEUE\n  \
             MODEL         PRIORITY  JOBS  OLDEST WAIT\n  qwen2.5:0.5b        10     3  2.3s\n\
             LOADS  made 4, avoided 7\n"
        );
    }
}
