//! Ollama's native API: `/api/chat`, `/api/generate`, `/api/embed`, `/api/embeddings`,
//! `/api/tags`, `/api/ps`, `/api/show`, `/api/version` and `/`.
//!
//! Validation follows Ollama's handlers in order, with their status codes and
//! messages; streaming is NDJSON by default (only an explicit `"stream": false` gives
//! one object); load and unload requests (nothing to generate) answer one object.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Map, Value, json};

use super::body::RequestBody;
use super::wire::{self, ApiError, JSON_UTF8, NDJSON, json_response, ndjson_line, timestamp};
use super::{
    Admitted, add_summary, admit, cut_body, drop_error, keep_alive_field, load_only,
    load_options_field,
};
use crate::generation::{self, Event, Format, GenerationRequest, Piece};
use crate::keep_alive::KeepAlive;
use crate::load_options::{LoadOptions, RunnerOptions};
use crate::prompt::{self, DEFAULT_NUM_KEEP, Window};
use crate::sim::Sim;
use crate::spec::{ModelSpec, canonical_name};
use crate::text;

const THINK_LEVELS: [&str; 4] = ["high", "medium", "low", "max"];

pub async fn root() -> Response {
    (
        [("content-type", "text/plain; charset=utf-8")],
        "Ollama is running",
    )
        .into_response()
}

pub async fn version(State(sim): State<Arc<Sim>>) -> Response {
    json_response(StatusCode::OK, &json!({ "version": sim.config.version }))
}

/// When each model was "pulled": the first listed is the newest.
fn modified_at(sim: &Sim, index: usize) -> SystemTime {
    sim.started - Duration::from_secs(3600 * (index as u64 + 1))
}

fn details(spec: &ModelSpec) -> Value {
    json!({
        "parent_model": "",
        "format": "gguf",
        "family": spec.family,
        "families": [spec.family],
        "parameter_size": spec.parameter_size,
        "quantization_level": spec.quantization,
    })
}

/// `details` as `/api/tags` lists them: with the context and embedding lengths
/// (server/model_list_cache.go `buildModelListSummary`; api/types.go `ModelDetails`).
fn listed_details(spec: &ModelSpec) -> Value {
    let mut details = details(spec);
    details["context_length"] = json!(spec.ctx);
    details["embedding_length"] = json!(spec.dim);
    details
}

/// Transformer blocks of a simulated model, for `tensors` and `model_info`.
fn block_count(spec: &ModelSpec) -> u64 {
    if spec.embed { 12 } else { 28 }
}

/// The tensors `/api/show` lists for a GGUF model (server/routes.go `GetModelInfo`
/// fills `tensors` from the model file whether or not `verbose` is set): the token
/// embedding, each block's attention and feed-forward weights, the output.
fn tensors(spec: &ModelSpec) -> Vec<Value> {
    let quantized = match spec.quantization.as_str() {
        q if q.starts_with('Q') && q.matches('_').count() >= 2 => {
            q.rsplit_once('_').map_or(q, |(head, _)| head)
        }
        q => q,
    };
    let dim = spec.dim as u64;
    let ffn = dim * 8 / 3;
    let vocab: u64 = if spec.embed { 30_522 } else { 128_256 };
    let tensor = |name: String, kind: &str, shape: Vec<u64>| json!({"name": name, "type": kind, "shape": shape});
    let mut list = vec![tensor(
        "token_embd.weight".into(),
        quantized,
        vec![dim, vocab],
    )];
    for block in 0..block_count(spec) {
        for (part, kind, shape) in [
            ("attn_norm.weight", "F32", vec![dim]),
            ("attn_q.weight", quantized, vec![dim, dim]),
            ("attn_k.weight", quantized, vec![dim, dim / 4]),
            ("attn_v.weight", quantized, vec![dim, dim / 4]),
            ("attn_output.weight", quantized, vec![dim, dim]),
            ("ffn_norm.weight", "F32", vec![dim]),
            ("ffn_gate.weight", quantized, vec![dim, ffn]),
            ("ffn_up.weight", quantized, vec![dim, ffn]),
            ("ffn_down.weight", quantized, vec![ffn, dim]),
        ] {
            list.push(tensor(format!("blk.{block}.{part}"), kind, shape));
        }
    }
    list.push(tensor("output_norm.weight".into(), "F32", vec![dim]));
    list
}

pub async fn tags(State(sim): State<Arc<Sim>>) -> Response {
    let models: Vec<Value> = sim
        .models()
        .iter()
        .enumerate()
        .map(|(index, spec)| {
            let name = spec.display_name();
            json!({
                "name": name,
                "model": name,
                "modified_at": timestamp(modified_at(&sim, index)),
                "size": spec.size,
                "digest": text::digest(&name),
                "details": listed_details(spec),
                "capabilities": spec.capabilities(),
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "models": models }))
}

pub async fn ps(State(sim): State<Arc<Sim>>) -> Response {
    let models: Vec<Value> = sim
        .residency
        .resident()
        .into_iter()
        .map(|resident| {
            let spec = &resident.spec;
            let name = spec.display_name();
            json!({
                "name": name,
                "model": name,
                "size": resident.size,
                "digest": text::digest(&name),
                "details": details(spec),
                "expires_at": timestamp(resident.expires_at),
                "size_vram": resident.size_vram,
                "context_length": resident.context_length,
            })
        })
        .collect();
    json_response(StatusCode::OK, &json!({ "models": models }))
}

pub async fn show(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Result<Response, ApiError> {
    let body = RequestBody::parse(&bytes, "ShowRequest")?;
    let mut name = body.string("model")?;
    if name.is_empty() {
        name = body.string("name")?;
    }
    if name.is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    let models = sim.models();
    let Some((index, spec)) = models
        .iter()
        .enumerate()
        .find(|(_, m)| m.display_name() == canonical_name(name))
    else {
        return Err(ApiError::not_found(format!(
            "model '{}' not found",
            canonical_name(name)
        )));
    };
    let family = &spec.family;
    let mut model_info = Map::new();
    model_info.insert("general.architecture".into(), json!(family));
    model_info.insert(
        "general.basename".into(),
        json!(spec.name.split(':').next()),
    );
    model_info.insert("general.parameter_count".into(), json!(spec.size / 2));
    model_info.insert(format!("{family}.context_length"), json!(spec.ctx));
    model_info.insert(format!("{family}.embedding_length"), json!(spec.dim));
    model_info.insert(format!("{family}.block_count"), json!(block_count(spec)));
    let template = if spec.embed {
        "{{ .Prompt }}"
    } else {
        "{{ if .System }}<|system|>{{ .System }}{{ end }}<|user|>{{ .Prompt }}<|assistant|>"
    };
    let body = json!({
        "license": "Simulated model weights; no license applies.",
        "modelfile": format!("# Modelfile generated by ollama-sim\nFROM {}\nTEMPLATE \"\"\"{template}\"\"\"\n", spec.display_name()),
        "parameters": "stop                           \"<|user|>\"",
        "template": template,
        "details": details(spec),
        "model_info": model_info,
        "tensors": tensors(spec),
        "capabilities": spec.capabilities(),
        "modified_at": timestamp(modified_at(&sim, index)),
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// Resolves `think` against the model: absent means "think if the model can".
pub fn resolve_think(body: &RequestBody, spec: &ModelSpec, model: &str) -> Result<bool, ApiError> {
    let wants = match body.get("think") {
        None => return Ok(spec.thinking),
        Some(Value::Bool(b)) => *b,
        Some(Value::String(level)) if THINK_LEVELS.contains(&level.as_str()) => true,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "invalid think value: {} (must be \"high\", \"medium\", \"low\", \"max\", true, or false)",
                other
            )));
        }
    };
    if wants && !spec.thinking {
        return Err(ApiError::bad_request(format!(
            "{model:?} does not support thinking"
        )));
    }
    Ok(wants)
}

/// Reads `format`: `"json"`, a schema object, or nothing. Anything else is the
/// runner's 500, which Ollama gives only once the model is loaded (llm/llama_server.go
/// `Completion`, quoting the raw JSON with `%q`), so callers check it after admission.
pub fn format_field(body: &RequestBody) -> Result<Option<Format>, ApiError> {
    match body.get("format") {
        None => Ok(None),
        Some(Value::String(s)) if s.is_empty() => Ok(None),
        Some(Value::String(s)) if s == "json" => Ok(Some(Format::Json)),
        Some(Value::Object(schema)) => Ok(Some(Format::Schema(Value::Object(schema.clone())))),
        Some(other) => Err(ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "invalid format: {:?}; expected \"json\" or a valid JSON Schema object",
                other.to_string()
            ),
        )),
    }
}

/// An error the runner gives once the model is loaded: written as a stream's first
/// line would be when streaming (server/routes.go `streamResponse`).
fn runner_error(error: ApiError, stream: bool) -> ApiError {
    if stream { error.plain_json() } else { error }
}

/// The context of the runner a request runs on: its `options.num_ctx`, or the
/// server's default, clamped as Ollama's scheduler does (server/sched.go,
/// [`RunnerOptions::resolve`]).
pub fn runner_context(sim: &Sim, spec: &ModelSpec, options: &LoadOptions) -> usize {
    RunnerOptions::resolve(options, spec, sim.config.context_length).context_length as usize
}

/// The context a request's prompt must fit: the runner's context (see
/// [`runner_context`]), `options.num_keep`, and the `truncate` and `shift` fields.
pub fn window(body: &RequestBody, num_ctx: usize) -> Result<Window, ApiError> {
    Ok(Window {
        num_ctx,
        num_keep: body.option_int("num_keep")?.unwrap_or(DEFAULT_NUM_KEEP),
        truncate: body.bool("truncate")?.unwrap_or(true),
        shift: body.bool("shift")?.unwrap_or(true),
    })
}

/// The 400 for a prompt the runner may not cut.
pub fn too_long(stream: bool) -> ApiError {
    runner_error(ApiError::bad_request(prompt::TOO_LONG), stream)
}

/// `top_logprobs` out of range is a 400 before anything else is looked at
/// (server/routes.go `GenerateHandler` and `ChatHandler`).
pub fn check_top_logprobs(body: &RequestBody) -> Result<(), ApiError> {
    match body.int("top_logprobs")? {
        Some(top) if !(0..=20).contains(&top) => Err(ApiError::bad_request(
            "top_logprobs must be between 0 and 20",
        )),
        _ => Ok(()),
    }
}

/// `logprobs` and `top_logprobs`: the alternatives wanted per token, when log
/// probabilities are wanted at all.
pub fn logprobs_field(body: &RequestBody) -> Result<Option<usize>, ApiError> {
    if body.bool("logprobs")? != Some(true) {
        return Ok(None);
    }
    Ok(Some(body.int("top_logprobs")?.unwrap_or(0).max(0) as usize))
}

/// Checks tools against the model; Ollama names the model by its full name here.
pub fn check_tools(tools: &[Value], spec: &ModelSpec) -> Result<(), ApiError> {
    if !tools.is_empty() && !spec.tools {
        let full = spec.display_name();
        let full = if full.contains('/') {
            full
        } else {
            format!("registry.ollama.ai/library/{full}")
        };
        return Err(ApiError::bad_request(format!(
            "{full} does not support tools"
        )));
    }
    Ok(())
}

fn find_model(sim: &Sim, model: &str) -> Result<Arc<ModelSpec>, ApiError> {
    sim.find(model)
        .ok_or_else(|| ApiError::not_found(format!("model '{model}' not found")))
}

fn control_reply(model: &str, done_reason: &str, chat: bool) -> Response {
    let mut reply = Map::new();
    reply.insert("model".into(), json!(model));
    reply.insert("created_at".into(), json!(timestamp(SystemTime::now())));
    if chat {
        reply.insert(
            "message".into(),
            json!({"role": "assistant", "content": ""}),
        );
    } else {
        reply.insert("response".into(), json!(""));
    }
    reply.insert("done".into(), json!(true));
    reply.insert("done_reason".into(), json!(done_reason));
    json_response(StatusCode::OK, &Value::Object(reply))
}

pub async fn chat(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let body = RequestBody::parse(&bytes, "ChatRequest")?;
    check_top_logprobs(&body)?;
    let model = body.string("model")?.to_string();
    if model.is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    let messages = body.array("messages", "[]api.Message")?;
    let stream = body.bool("stream")?.unwrap_or(true);
    let keep_alive = keep_alive_field(&body.fields)?;
    let spec = find_model(&sim, &model)?;
    if messages.is_empty() && keep_alive.is_some_and(|k| k.is_zero()) {
        sim.residency.expire(&spec);
        return Ok(control_reply(&model, "unload", true));
    }
    if spec.embed {
        return Err(ApiError::bad_request(format!(
            "{model:?} does not support chat"
        )));
    }
    let think = resolve_think(&body, &spec, &model)?;
    let tools = body.array("tools", "[]api.Tool")?.to_vec();
    check_tools(&tools, &spec)?;
    let format = format_field(&body);
    let num_predict = body.num_predict()?;
    let options = load_options_field(&body, true)?;
    let logprobs = logprobs_field(&body)?;
    let window = window(&body, runner_context(&sim, &spec, &options))?;
    if messages.is_empty() {
        load_only(&sim, &spec, keep_alive, &options).await?;
        return Ok(control_reply(&model, "load", true));
    }
    let mut seed_text = String::new();
    let mut sizes = Vec::with_capacity(messages.len());
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message.get("content").and_then(Value::as_str).unwrap_or("");
        seed_text.push_str(role);
        seed_text.push(':');
        seed_text.push_str(content);
        seed_text.push('\n');
        sizes.push((role, prompt::message_tokens(content)));
    }
    let prompt_tokens = prompt::chat_prompt_tokens(&sizes, window);
    let last_role = messages
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let admitted = admit(&sim, &spec, keep_alive, &options).await?;
    let Ok(prompt_tokens) = prompt_tokens else {
        return Err(too_long(stream));
    };
    let format = format.map_err(|e| runner_error(e, stream))?;
    let request = GenerationRequest {
        prompt_tokens,
        spec: spec.clone(),
        seed_text,
        num_predict,
        reply_tokens: sim.config.reply_tokens,
        think,
        format,
        call_tool: !tools.is_empty() && last_role != "tool",
        tools,
        format_after_thinking: true,
        batching: sim.batching.clone(),
    };
    let reply = Reply {
        model,
        stream,
        shape: Shape::Chat,
        logprobs,
    };
    Ok(respond(request, admitted, arrived, reply).await)
}

pub async fn generate(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let body = RequestBody::parse(&bytes, "GenerateRequest")?;
    let model = body.string("model")?.to_string();
    let prompt = body.string("prompt")?.to_string();
    let stream = body.bool("stream")?.unwrap_or(true);
    let keep_alive = keep_alive_field(&body.fields)?;
    let raw = body.bool("raw")?.unwrap_or(false);
    let system = body.string("system")?.to_string();
    let suffix = body.string("suffix")?.to_string();
    check_top_logprobs(&body)?;
    let spec = find_model(&sim, &model)?;
    if prompt.is_empty() && keep_alive.is_some_and(|k| k.is_zero()) {
        sim.residency.expire(&spec);
        return Ok(control_reply(&model, "unload", false));
    }
    let context_tokens = body.array("context", "[]int")?.len();
    let has_context = context_tokens > 0;
    if raw && (!body.string("template")?.is_empty() || !system.is_empty() || has_context) {
        return Err(ApiError::bad_request(
            "raw mode does not support template, system, or context",
        ));
    }
    let think = resolve_think(&body, &spec, &model)?;
    if spec.embed {
        return Err(ApiError::bad_request(format!(
            "{model:?} does not support generate"
        )));
    }
    let format = format_field(&body);
    let num_predict = body.num_predict()?;
    let options = load_options_field(&body, true)?;
    let logprobs = logprobs_field(&body)?;
    let window = window(&body, runner_context(&sim, &spec, &options))?;
    if prompt.is_empty() {
        load_only(&sim, &spec, keep_alive, &options).await?;
        return Ok(control_reply(&model, "load", false));
    }
    let seed_text = format!("{system}\n{prompt}\n{suffix}");
    // The chat-like flow keeps the prompt (the last message) and the system message,
    // so only the runner's cut applies; an old reply's `context` is prepended.
    let prompt_tokens =
        prompt::runner_prompt_tokens(context_tokens + text::count_tokens(&seed_text) + 2, window);
    let admitted = admit(&sim, &spec, keep_alive, &options).await?;
    let Ok(prompt_tokens) = prompt_tokens else {
        return Err(too_long(stream));
    };
    let format = format.map_err(|e| runner_error(e, stream))?;
    let request = GenerationRequest {
        prompt_tokens,
        spec: spec.clone(),
        seed_text,
        num_predict,
        reply_tokens: sim.config.reply_tokens,
        think,
        format,
        tools: vec![],
        call_tool: false,
        format_after_thinking: false,
        batching: sim.batching.clone(),
    };
    let shape = if raw {
        Shape::GenerateRaw
    } else {
        Shape::Generate
    };
    let reply = Reply {
        model,
        stream,
        shape,
        logprobs,
    };
    Ok(respond(request, admitted, arrived, reply).await)
}

/// How to answer: the model name as sent, streamed or not, which shape, and the
/// alternatives wanted per token when log probabilities are wanted.
struct Reply {
    model: String,
    stream: bool,
    shape: Shape,
    logprobs: Option<usize>,
}

/// Which native response shape to build.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    Chat,
    Generate,
    /// Generate without `context` in the final chunk.
    GenerateRaw,
}

fn chunk(model: &str, shape: Shape, piece: Option<&Piece>) -> Map<String, Value> {
    let (content, thinking, tool_calls) = match piece {
        Some(Piece::Content(text)) => (text.as_str(), None, None),
        Some(Piece::Thinking(text)) => ("", Some(text.as_str()), None),
        Some(Piece::ToolCalls(calls)) => ("", None, Some(calls.clone())),
        None => ("", None, None),
    };
    let mut chunk = Map::new();
    chunk.insert("model".into(), json!(model));
    chunk.insert("created_at".into(), json!(timestamp(SystemTime::now())));
    if shape == Shape::Chat {
        let mut message = Map::new();
        message.insert("role".into(), json!("assistant"));
        message.insert("content".into(), json!(content));
        if let Some(thinking) = thinking {
            message.insert("thinking".into(), json!(thinking));
        }
        if let Some(calls) = tool_calls {
            message.insert("tool_calls".into(), Value::Array(calls));
        }
        chunk.insert("message".into(), Value::Object(message));
    } else {
        chunk.insert("response".into(), json!(content));
        if let Some(thinking) = thinking {
            chunk.insert("thinking".into(), json!(thinking));
        }
    }
    chunk.insert("done".into(), json!(false));
    chunk
}

/// Log probabilities for a piece at `position`, when wanted; tool calls carry none.
fn piece_logprobs(piece: &Piece, position: usize, top: usize) -> Option<Value> {
    match piece {
        Piece::Content(token) | Piece::Thinking(token) => Some(text::logprob(token, position, top)),
        Piece::ToolCalls(_) => None,
    }
}

/// Inserts `key` before `before` (Go's struct order), or last when `before` is absent.
fn insert_before(chunk: &mut Map<String, Value>, before: &str, key: &str, value: Value) {
    let mut ordered = Map::new();
    let mut value = Some(value);
    for (k, v) in std::mem::take(chunk) {
        if k == before
            && let Some(value) = value.take()
        {
            ordered.insert(key.to_string(), value);
        }
        ordered.insert(k, v);
    }
    if let Some(value) = value {
        ordered.insert(key.to_string(), value);
    }
    *chunk = ordered;
}

async fn respond(
    request: GenerationRequest,
    admitted: Admitted,
    arrived: Instant,
    reply: Reply,
) -> Response {
    let Reply {
        model,
        stream,
        shape,
        logprobs,
    } = reply;
    let plan = generation::plan(&request);
    let drop_after = admitted.drop_midway.then_some(plan.pieces.len() / 2);
    let reply_for_context: Vec<String> = plan
        .pieces
        .iter()
        .filter_map(|p| match p {
            Piece::Content(t) => Some(t.clone()),
            _ => None,
        })
        .collect();
    let prompt_tokens = request.prompt_tokens;
    let finish = move |chunk: &mut Map<String, Value>, summary: &generation::Summary| {
        chunk.insert("done".into(), json!(true));
        add_summary(chunk, summary);
        if shape == Shape::Generate {
            // Go's struct order puts context before the durations.
            insert_before(
                chunk,
                "total_duration",
                "context",
                json!(text::context_ids(prompt_tokens, &reply_for_context)),
            );
        }
    };
    let events = generation::run(
        plan,
        &request,
        admitted.lease,
        arrived,
        drop_after,
        admitted.in_flight,
    );
    if stream {
        let mut position = 0;
        let lines = events.map(move |event| match event {
            Event::Piece(piece) => {
                let mut line = chunk(&model, shape, Some(&piece));
                if let Some(top) = logprobs
                    && let Some(entry) = piece_logprobs(&piece, position, top)
                {
                    line.insert("logprobs".into(), json!([entry]));
                    position += 1;
                }
                Ok(ndjson_line(&Value::Object(line)))
            }
            Event::Done(summary) => {
                let mut last = chunk(&model, shape, None);
                finish(&mut last, &summary);
                Ok(ndjson_line(&Value::Object(last)))
            }
            Event::Dropped => Err(drop_error()),
        });
        return wire::stream_response(NDJSON, lines);
    }
    let events: Vec<Event> = events.collect().await;
    let mut content = String::new();
    let mut thinking = String::new();
    let mut tool_calls = Vec::new();
    let mut entries = Vec::new();
    let mut summary = None;
    let mut dropped = false;
    for event in events {
        if let (Event::Piece(piece), Some(top)) = (&event, logprobs) {
            entries.extend(piece_logprobs(piece, entries.len(), top));
        }
        match event {
            Event::Piece(Piece::Content(text)) => content.push_str(&text),
            Event::Piece(Piece::Thinking(text)) => thinking.push_str(&text),
            Event::Piece(Piece::ToolCalls(calls)) => tool_calls.extend(calls),
            Event::Done(s) => summary = Some(s),
            Event::Dropped => dropped = true,
        }
    }
    let mut reply = chunk(&model, shape, Some(&Piece::Content(content)));
    if !thinking.is_empty() {
        match reply.get_mut("message") {
            Some(Value::Object(message)) => {
                message.insert("thinking".into(), json!(thinking));
            }
            _ => {
                reply.insert("thinking".into(), json!(thinking));
            }
        }
    }
    if !tool_calls.is_empty()
        && let Some(Value::Object(message)) = reply.get_mut("message")
    {
        message.insert("tool_calls".into(), Value::Array(tool_calls));
    }
    if let Some(summary) = summary {
        finish(&mut reply, &summary);
    }
    if !entries.is_empty() {
        insert_before(
            &mut reply,
            "total_duration",
            "logprobs",
            Value::Array(entries),
        );
    }
    let body = Value::Object(reply).to_string().into_bytes();
    if dropped {
        return cut_body(JSON_UTF8, body);
    }
    let mut response = body.into_response();
    response.headers_mut().insert(
        "content-type",
        axum::http::HeaderValue::from_static(JSON_UTF8),
    );
    response
}

/// Reads `input` of `/api/embed`: a string, a list of strings, or nothing.
fn embed_inputs(body: &RequestBody) -> Result<Vec<String>, ApiError> {
    match body.get("input") {
        None => Ok(vec![]),
        Some(Value::String(s)) if s.is_empty() => Ok(vec![]),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| ApiError::bad_request("invalid input type"))
            })
            .collect(),
        Some(_) => Err(ApiError::bad_request("invalid input type")),
    }
}

fn embed_model(sim: &Sim, model: &str) -> Result<Arc<ModelSpec>, ApiError> {
    sim.find(model).ok_or_else(|| {
        ApiError::not_found(format!("model {model:?} not found, try pulling it first"))
    })
}

/// The tokens an embedding input may have: the runner's context less the BOS and EOS
/// tokens the model adds (server/routes.go `EmbedHandler`, `adjustTokenLimit`).
pub fn embed_token_limit(body: &RequestBody, num_ctx: usize) -> Result<usize, ApiError> {
    Ok(window(body, num_ctx)?.num_ctx.saturating_sub(2).max(1))
}

/// The tokens an embedding input counts for.
fn input_tokens(input: &str) -> usize {
    text::count_tokens(input).max(1)
}

/// Computes embeddings under a lease; inputs longer than `token_limit` are cut to it,
/// as `truncate` (the default) asks.
pub fn embed_vectors(
    admitted: Admitted,
    spec: &ModelSpec,
    inputs: &[String],
    dimensions: Option<usize>,
    token_limit: usize,
) -> (Vec<Vec<f32>>, Duration, usize) {
    let tokens: usize = inputs
        .iter()
        .map(|i| input_tokens(i).min(token_limit))
        .sum();
    let dim = dimensions
        .filter(|d| *d > 0 && *d < spec.dim)
        .unwrap_or(spec.dim);
    let name = spec.display_name();
    let vectors = inputs
        .iter()
        .map(|input| {
            let full = text::embedding(&name, input, spec.dim);
            if dim == spec.dim {
                return full;
            }
            let norm = full[..dim]
                .iter()
                .map(|x| x * x)
                .sum::<f32>()
                .sqrt()
                .max(f32::MIN_POSITIVE);
            full[..dim].iter().map(|x| x / norm).collect()
        })
        .collect();
    let load_duration = admitted.lease.load_duration;
    drop(admitted);
    (vectors, load_duration, tokens)
}

pub async fn embed(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Result<Response, ApiError> {
    let arrived = Instant::now();
    let body = RequestBody::parse(&bytes, "EmbedRequest")?;
    let model = body.string("model")?.to_string();
    if model.is_empty() {
        return Err(ApiError::not_found("model '' not found"));
    }
    let inputs = embed_inputs(&body)?;
    let keep_alive = keep_alive_field(&body.fields)?;
    let dimensions = body
        .get("dimensions")
        .and_then(Value::as_u64)
        .map(|d| d as usize);
    let truncate = body.bool("truncate")?.unwrap_or(true);
    let spec = embed_model(&sim, &model)?;
    let options = load_options_field(&body, false)?;
    let token_limit = embed_token_limit(&body, runner_context(&sim, &spec, &options))?;
    if inputs.is_empty() {
        load_only(&sim, &spec, keep_alive, &options).await?;
        return Ok(json_response(
            StatusCode::OK,
            &json!({"model": model, "embeddings": []}),
        ));
    }
    let admitted = admit(&sim, &spec, keep_alive, &options).await?;
    if !truncate && inputs.iter().any(|i| input_tokens(i) > token_limit) {
        // Checked once the model is loaded, as Ollama's EmbedHandler does.
        return Err(ApiError::bad_request(
            "the input length exceeds the context length",
        ));
    }
    let drop_midway = admitted.drop_midway;
    let (vectors, load_duration, tokens) =
        embed_vectors(admitted, &spec, &inputs, dimensions, token_limit);
    let body = json!({
        "model": model,
        "embeddings": vectors,
        "total_duration": (arrived.elapsed().as_nanos() as u64).max(1),
        "load_duration": (load_duration.as_nanos() as u64).max(1),
        "prompt_eval_count": tokens,
    });
    if drop_midway {
        return Ok(cut_body(JSON_UTF8, body.to_string().into_bytes()));
    }
    Ok(json_response(StatusCode::OK, &body))
}

pub async fn embeddings(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Result<Response, ApiError> {
    let body = RequestBody::parse(&bytes, "EmbeddingRequest")?;
    let model = body.string("model")?.to_string();
    if model.is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    let prompt = body.string("prompt")?.to_string();
    let keep_alive: Option<KeepAlive> = keep_alive_field(&body.fields)?;
    let spec = embed_model(&sim, &model)?;
    let options = load_options_field(&body, false)?;
    if prompt.is_empty() {
        load_only(&sim, &spec, keep_alive, &options).await?;
        return Ok(json_response(StatusCode::OK, &json!({"embedding": []})));
    }
    let admitted = admit(&sim, &spec, keep_alive, &options).await?;
    let drop_midway = admitted.drop_midway;
    let (vectors, _, _) = embed_vectors(
        admitted,
        &spec,
        std::slice::from_ref(&prompt),
        None,
        usize::MAX,
    );
    let body = json!({ "embedding": text::unnormalized(&vectors[0]) });
    if drop_midway {
        return Ok(cut_body(JSON_UTF8, body.to_string().into_bytes()));
    }
    Ok(json_response(StatusCode::OK, &body))
}
