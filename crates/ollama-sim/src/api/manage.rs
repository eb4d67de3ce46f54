//! Model management in Ollama's shapes: `/api/pull`, `/api/create`, `/api/copy` and
//! `/api/delete` change the simulator's model list, so clients (and foreman's
//! inventory) can be tested against a model appearing and going away.
//!
//! A pull streams progress lines (`pulling manifest`, `pulling <digest>` with
//! `total`/`completed`, `verifying sha256 digest`, `writing manifest`, `success`), or
//! answers one `{"status":"success"}` with `"stream": false`. A name starting with
//! `missing` is not in the "registry": the stream carries Ollama's
//! `pull model manifest: file does not exist` error line instead.

use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::body::RequestBody;
use super::wire::{self, ApiError, NDJSON, ndjson_line};
use crate::sim::Sim;
use crate::spec::{ModelSpec, canonical_name};
use crate::text;

/// `model`, or the legacy `name` that ollama-js sends.
fn model_name(body: &RequestBody) -> Result<String, ApiError> {
    let model = body.string("model")?;
    let name = if model.is_empty() {
        body.string("name")?
    } else {
        model
    };
    if name.is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    if name.contains(char::is_whitespace) {
        return Err(ApiError::bad_request("invalid model name"));
    }
    Ok(name.to_string())
}

/// Answers a list of progress lines as a stream, or as the last line alone.
fn progress(lines: Vec<Value>, stream: bool) -> Response {
    if stream {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            lines.iter().map(|l| Ok(ndjson_line(l))).collect();
        return wire::stream_response(NDJSON, futures::stream::iter(chunks));
    }
    let last = lines
        .last()
        .cloned()
        .unwrap_or(json!({"status": "success"}));
    // Ollama's waitForStream sets plain `application/json` before writing.
    match last.get("error").and_then(Value::as_str) {
        Some(error) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, error)
            .plain_json()
            .into_response(),
        None => wire::json_response_as(wire::JSON, StatusCode::OK, &last),
    }
}

fn new_spec(name: &str) -> ModelSpec {
    if name.contains("embed") {
        ModelSpec::embedding(name)
    } else {
        ModelSpec::chat(name)
    }
}

pub async fn pull(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Result<Response, ApiError> {
    let body = RequestBody::parse(&bytes, "PullRequest")?;
    let name = model_name(&body)?;
    let stream = body.bool("stream")?.unwrap_or(true);
    let mut lines = vec![json!({"status": "pulling manifest"})];
    if name.starts_with("missing") {
        lines.push(json!({"error": "pull model manifest: file does not exist"}));
        return Ok(progress(lines, stream));
    }
    let spec = sim
        .find(&name)
        .map(|s| (*s).clone())
        .unwrap_or_else(|| new_spec(&name));
    let digest = text::digest(&canonical_name(&name));
    for completed in [0, spec.size / 2, spec.size] {
        lines.push(json!({
            "status": format!("pulling {}", &digest[..12]),
            "digest": format!("sha256:{digest}"),
            "total": spec.size,
            "completed": completed,
        }));
    }
    lines.push(json!({"status": "verifying sha256 digest"}));
    lines.push(json!({"status": "writing manifest"}));
    lines.push(json!({"status": "success"}));
    sim.add_model(spec);
    Ok(progress(lines, stream))
}

pub async fn create(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Result<Response, ApiError> {
    let body = RequestBody::parse(&bytes, "CreateRequest")?;
    let name = model_name(&body)?;
    let stream = body.bool("stream")?.unwrap_or(true);
    let from = body.string("from")?.to_string();
    if from.is_empty() {
        return Err(ApiError::bad_request(
            "neither 'from' or 'files' was specified",
        ));
    }
    let Some(base) = sim.find(&from) else {
        return Err(ApiError::not_found(format!("model '{from}' not found")));
    };
    let digest = text::digest(&canonical_name(&from));
    let lines = vec![
        json!({"status": "parsing modelfile"}),
        json!({"status": format!("using existing layer sha256:{digest}")}),
        json!({"status": "writing manifest"}),
        json!({"status": "success"}),
    ];
    sim.add_model(ModelSpec {
        name,
        ..(*base).clone()
    });
    Ok(progress(lines, stream))
}

pub async fn copy(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Result<Response, ApiError> {
    let body = RequestBody::parse(&bytes, "CopyRequest")?;
    let source = body.string("source")?.to_string();
    let destination = body.string("destination")?.to_string();
    if source.is_empty() || destination.is_empty() {
        return Err(ApiError::bad_request("source and destination are required"));
    }
    let Some(spec) = sim.find(&source) else {
        return Err(ApiError::not_found(format!("model {source:?} not found")));
    };
    sim.add_model(ModelSpec {
        name: destination,
        ..(*spec).clone()
    });
    Ok(StatusCode::OK.into_response())
}

pub async fn delete(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Result<Response, ApiError> {
    let body = RequestBody::parse(&bytes, "DeleteRequest")?;
    let name = model_name(&body)?;
    if let Some(spec) = sim.find(&name) {
        sim.residency.expire(&spec);
    }
    if !sim.remove_model(&name) {
        return Err(ApiError::not_found(format!("model '{name}' not found")));
    }
    Ok(StatusCode::OK.into_response())
}
