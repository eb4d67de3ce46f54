//! Ollama's OpenAI-compatible API: `/v1/chat/completions`, `/v1/completions`,
//! `/v1/embeddings`, `/v1/models` and `/v1/models/{model}`.
//!
//! As in Ollama, requests are translated to the native form (`stream` defaults to
//! false here), answers are OpenAI objects or SSE frames ending in `data: [DONE]`, and
//! errors take OpenAI's `{"error":{"message","type","param","code"}}` shape with the
//! native status code. As in Ollama's middleware, answers rewritten from a native one
//! (errors included) are `application/json`; the middleware's own validation errors
//! keep gin's `application/json; charset=utf-8`.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use super::body::RequestBody;
use super::native::{check_tools, check_top_logprobs, embed_vectors};
use super::wire::{self, ApiError, EVENT_STREAM, json_response_as, sse_frame, unix_seconds};
use super::{admit, cut_body, drop_error, keep_alive_field};
use crate::generation::{self, Event, Format, GenerationRequest, Piece, Summary};
use crate::load_options::LoadOptions;
use crate::sim::Sim;
use crate::text;

/// An error rendered in OpenAI's shape.
pub struct OpenAiError(ApiError);

impl OpenAiError {
    /// An error of the middleware itself (binding, validation), before any native
    /// handler runs: gin's `c.AbortWithStatusJSON`, with its content type.
    fn middleware(error: ApiError) -> OpenAiError {
        OpenAiError(error)
    }
}

/// An error of the native handler, rewritten by the middleware's writer.
impl From<ApiError> for OpenAiError {
    fn from(error: ApiError) -> Self {
        OpenAiError(error.plain_json())
    }
}

impl IntoResponse for OpenAiError {
    fn into_response(self) -> Response {
        self.0.openai()
    }
}

type OpenAiResult = Result<Response, OpenAiError>;

fn find(sim: &Sim, model: &str) -> Result<Arc<crate::spec::ModelSpec>, ApiError> {
    sim.find(model)
        .ok_or_else(|| ApiError::not_found(format!("model '{model}' not found")))
}

/// Turns OpenAI message content (a string, parts, or null) into text; image URLs
/// that are not base64 data are refused as Ollama refuses them.
fn message_text(content: Option<&Value>) -> Result<String, ApiError> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for part in parts {
                match part.get("type").and_then(Value::as_str) {
                    Some("text") => {
                        text.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""))
                    }
                    Some("image_url") => {
                        let url = part
                            .get("image_url")
                            .map(|u| u.get("url").unwrap_or(u))
                            .and_then(Value::as_str)
                            .unwrap_or("");
                        if !url.starts_with("data:") {
                            return Err(ApiError::bad_request(
                                "image URLs are not currently supported, please use base64 encoded data instead",
                            ));
                        }
                    }
                    Some("input_audio") => {}
                    _ => return Err(ApiError::bad_request("invalid message content type")),
                }
            }
            Ok(text)
        }
        Some(_) => Err(ApiError::bad_request("invalid message content type")),
    }
}

fn response_format(body: &RequestBody) -> Result<Option<Format>, ApiError> {
    let Some(format) = body.get("response_format") else {
        return Ok(None);
    };
    match format.get("type").and_then(Value::as_str) {
        Some("json_object") => Ok(Some(Format::Json)),
        Some("json_schema") => Ok(format
            .get("json_schema")
            .and_then(|s| s.get("schema"))
            .cloned()
            .map(Format::Schema)
            .or(Some(Format::Json))),
        Some("text") | None => Ok(None),
        Some(other) => Err(ApiError::bad_request(format!(
            "invalid response_format type: {other}"
        ))),
    }
}

fn max_tokens(body: &RequestBody) -> Option<i64> {
    body.get("max_tokens")
        .or_else(|| body.get("max_completion_tokens"))
        .and_then(Value::as_i64)
}

fn include_usage(body: &RequestBody) -> bool {
    body.get("stream_options")
        .and_then(|o| o.get("include_usage"))
        .and_then(Value::as_bool)
        .unwrap_or(false)
}

/// OpenAI's tool call form: arguments as a JSON string, with `type` and `index`.
fn openai_tool_calls(calls: &[Value]) -> Vec<Value> {
    calls
        .iter()
        .enumerate()
        .map(|(index, call)| {
            let function = &call["function"];
            json!({
                "id": call["id"],
                "index": index,
                "type": "function",
                "function": {"name": function["name"], "arguments": function["arguments"].to_string()},
            })
        })
        .collect()
}

/// `reasoning.effort` (preferred when `reasoning` is given) or `reasoning_effort`, as a
/// think value: `None` leaves the model's default (openai/openai.go
/// `FromChatRequest` and `thinkFromReasoningEffort`).
fn reasoning_think(body: &RequestBody) -> Result<Option<bool>, ApiError> {
    let effort = match body.get("reasoning") {
        Some(reasoning) => reasoning
            .get("effort")
            .and_then(Value::as_str)
            .unwrap_or(""),
        None => body.string("reasoning_effort")?,
    };
    match effort {
        "" => Ok(None),
        "none" => Ok(Some(false)),
        "minimal" | "low" | "medium" | "high" | "max" | "xhigh" | "ultra" => Ok(Some(true)),
        other => Err(ApiError::bad_request(format!(
            "invalid reasoning value: {other:?} (must be \"minimal\", \"low\", \"medium\", \"high\", \"xhigh\", \"ultra\", \"max\", or \"none\")"
        ))),
    }
}

/// A choice's `logprobs` object: `{"content":[...]}` (openai/openai.go `ChoiceLogprobs`).
fn choice_logprobs(piece: &Piece, position: usize, top: Option<usize>) -> Option<Value> {
    let top = top?;
    match piece {
        Piece::Content(token) | Piece::Thinking(token) => {
            Some(json!({"content": [text::logprob(token, position, top)]}))
        }
        Piece::ToolCalls(_) => None,
    }
}

fn usage(summary: &Summary) -> Value {
    json!({
        "prompt_tokens": summary.prompt_eval_count,
        "completion_tokens": summary.eval_count,
        "total_tokens": summary.prompt_eval_count + summary.eval_count,
    })
}

pub async fn chat_completions(State(sim): State<Arc<Sim>>, bytes: Bytes) -> OpenAiResult {
    let arrived = Instant::now();
    let body =
        RequestBody::parse(&bytes, "ChatCompletionRequest").map_err(OpenAiError::middleware)?;
    let model = body
        .string("model")
        .map_err(OpenAiError::middleware)?
        .to_string();
    let messages = body
        .array("messages", "[]openai.Message")
        .map_err(OpenAiError::middleware)?;
    if messages.is_empty() {
        return Err(OpenAiError::middleware(ApiError::bad_request(
            "[] is too short - 'messages'",
        )));
    }
    if model.is_empty() {
        return Err(OpenAiError::from(ApiError::bad_request(
            "model is required",
        )));
    }
    let stream = body
        .bool("stream")
        .map_err(OpenAiError::middleware)?
        .unwrap_or(false);
    let effort_think = reasoning_think(&body).map_err(OpenAiError::middleware)?;
    let logprobs = (body.bool("logprobs")? == Some(true))
        .then(|| {
            body.int("top_logprobs")
                .map(|t| t.unwrap_or(0).max(0) as usize)
        })
        .transpose()?;
    check_top_logprobs(&body)?;
    let spec = find(&sim, &model)?;
    if spec.embed {
        return Err(OpenAiError::from(ApiError::bad_request(format!(
            "{model:?} does not support chat"
        ))));
    }
    let mut seed_text = String::new();
    for message in messages {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        let content = message_text(message.get("content")).map_err(OpenAiError::middleware)?;
        seed_text.push_str(role);
        seed_text.push(':');
        seed_text.push_str(&content);
        seed_text.push('\n');
    }
    let think = match effort_think {
        None => spec.thinking,
        Some(false) => false,
        Some(true) if !spec.thinking => {
            return Err(OpenAiError::from(ApiError::bad_request(format!(
                "{model:?} does not support thinking"
            ))));
        }
        Some(true) => true,
    };
    let tools = body.array("tools", "[]openai.Tool")?.to_vec();
    check_tools(&tools, &spec)?;
    let format = response_format(&body)?;
    let last_role = messages
        .last()
        .and_then(|m| m.get("role"))
        .and_then(Value::as_str)
        .unwrap_or("");
    let request = GenerationRequest {
        prompt_tokens: text::count_tokens(&seed_text) + 4 * messages.len(),
        spec: spec.clone(),
        seed_text,
        num_predict: max_tokens(&body),
        reply_tokens: sim.config.reply_tokens,
        think,
        format,
        call_tool: !tools.is_empty() && last_role != "tool",
        tools,
        format_after_thinking: true,
        batching: sim.batching.clone(),
    };
    let admitted = admit(&sim, &spec, None, &LoadOptions::default()).await?;
    let plan = generation::plan(&request);
    let drop_after = admitted.drop_midway.then_some(plan.pieces.len() / 2);
    let events = generation::run(
        plan,
        &request,
        admitted.lease,
        arrived,
        drop_after,
        admitted.in_flight,
    );
    let id = format!("chatcmpl-{}", sim.next_id());
    let created = unix_seconds(SystemTime::now());
    if stream {
        let with_usage = include_usage(&body);
        let frames = async_stream::stream! {
            let mut first = true;
            let mut saw_tool_call = false;
            let mut position = 0;
            let mut events = Box::pin(events);
            while let Some(event) = events.next().await {
                let piece_logprobs = match &event {
                    Event::Piece(piece) => choice_logprobs(piece, position, logprobs),
                    _ => None,
                };
                position += usize::from(piece_logprobs.is_some());
                let delta = match event {
                    Event::Piece(Piece::Content(text)) => json!({"content": text}),
                    Event::Piece(Piece::Thinking(text)) => json!({"content": "", "reasoning": text}),
                    Event::Piece(Piece::ToolCalls(calls)) => {
                        saw_tool_call = true;
                        json!({"content": "", "tool_calls": openai_tool_calls(&calls)})
                    }
                    Event::Dropped => {
                        yield Err(drop_error());
                        return;
                    }
                    Event::Done(summary) => {
                        let reason = finish_reason(summary.done_reason, saw_tool_call);
                        let finish = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                            "model": model, "system_fingerprint": "fp_ollama",
                            "choices": [{"index": 0, "delta": {}, "finish_reason": reason}]});
                        yield Ok(sse_frame(&finish.to_string()));
                        if with_usage {
                            let usage_chunk = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                                "model": model, "system_fingerprint": "fp_ollama", "choices": [], "usage": usage(&summary)});
                            yield Ok(sse_frame(&usage_chunk.to_string()));
                        }
                        yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
                        return;
                    }
                };
                let mut delta = delta;
                if first {
                    delta["role"] = json!("assistant");
                    first = false;
                }
                let mut chunk = json!({"id": id, "object": "chat.completion.chunk", "created": created,
                    "model": model, "system_fingerprint": "fp_ollama",
                    "choices": [{"index": 0, "delta": delta, "finish_reason": null}]});
                if let Some(piece_logprobs) = piece_logprobs {
                    chunk["choices"][0]["logprobs"] = piece_logprobs;
                }
                yield Ok(sse_frame(&chunk.to_string()));
            }
        };
        return Ok(wire::stream_response(EVENT_STREAM, frames));
    }
    let (content, reasoning, calls, summary, dropped, pieces) = gather(events).await;
    let mut message = json!({"role": "assistant", "content": content});
    if !reasoning.is_empty() {
        message["reasoning"] = json!(reasoning);
    }
    if !calls.is_empty() {
        message["tool_calls"] = json!(openai_tool_calls(&calls));
    }
    let summary = summary.unwrap_or(Summary {
        done_reason: "stop",
        total_duration: 0,
        load_duration: 0,
        prompt_eval_count: 0,
        prompt_eval_duration: 0,
        eval_count: 0,
        eval_duration: 0,
    });
    let mut reply = json!({
        "id": id, "object": "chat.completion", "created": created, "model": model,
        "system_fingerprint": "fp_ollama",
        "choices": [{"index": 0, "message": message,
            "finish_reason": finish_reason(summary.done_reason, !calls.is_empty())}],
        "usage": usage(&summary),
    });
    if let Some(all) = all_logprobs(&pieces, logprobs) {
        reply["choices"][0]["logprobs"] = all;
    }
    if dropped {
        return Ok(cut_body(wire::JSON, reply.to_string().into_bytes()));
    }
    Ok(json_response_as(wire::JSON, StatusCode::OK, &reply))
}

fn finish_reason(done_reason: &str, tool_calls: bool) -> &'static str {
    match (done_reason, tool_calls) {
        (_, true) => "tool_calls",
        ("length", _) => "length",
        _ => "stop",
    }
}

/// Every piece's log probabilities in one `{"content":[...]}`, when wanted.
fn all_logprobs(pieces: &[Piece], top: Option<usize>) -> Option<Value> {
    top?;
    let entries: Vec<Value> = pieces
        .iter()
        .filter(|piece| !matches!(piece, Piece::ToolCalls(_)))
        .enumerate()
        .filter_map(|(position, piece)| choice_logprobs(piece, position, top))
        .map(|entry| entry["content"][0].clone())
        .collect();
    (!entries.is_empty()).then(|| json!({ "content": entries }))
}

type Gathered = (
    String,
    String,
    Vec<Value>,
    Option<Summary>,
    bool,
    Vec<Piece>,
);

async fn gather<S: futures::Stream<Item = Event>>(events: S) -> Gathered {
    let events: Vec<Event> = events.collect().await;
    let (mut content, mut reasoning, mut calls) = (String::new(), String::new(), Vec::new());
    let (mut summary, mut dropped, mut pieces) = (None, false, Vec::new());
    for event in events {
        if let Event::Piece(piece) = &event {
            pieces.push(piece.clone());
        }
        match event {
            Event::Piece(Piece::Content(t)) => content.push_str(&t),
            Event::Piece(Piece::Thinking(t)) => reasoning.push_str(&t),
            Event::Piece(Piece::ToolCalls(c)) => calls.extend(c),
            Event::Done(s) => summary = Some(s),
            Event::Dropped => dropped = true,
        }
    }
    (content, reasoning, calls, summary, dropped, pieces)
}

pub async fn completions(State(sim): State<Arc<Sim>>, bytes: Bytes) -> OpenAiResult {
    let arrived = Instant::now();
    let body = RequestBody::parse(&bytes, "CompletionRequest").map_err(OpenAiError::middleware)?;
    let model = body.string("model")?.to_string();
    let prompt = match body.get("prompt") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => {
            return Err(OpenAiError::middleware(ApiError::bad_request(
                "invalid type for 'prompt' field",
            )));
        }
    };
    let stream = body.bool("stream")?.unwrap_or(false);
    if model.is_empty() {
        return Err(OpenAiError::from(ApiError::not_found("model '' not found")));
    }
    let spec = find(&sim, &model)?;
    if spec.embed {
        return Err(OpenAiError::from(ApiError::bad_request(format!(
            "{model:?} does not support generate"
        ))));
    }
    let suffix = body.string("suffix")?.to_string();
    // `logprobs: n` asks for log probabilities with n alternatives each.
    let logprobs = body.int("logprobs")?.filter(|n| *n > 0).map(|n| n as usize);
    let seed_text = format!("\n{prompt}\n{suffix}");
    let request = GenerationRequest {
        prompt_tokens: text::count_tokens(&seed_text) + 2,
        spec: spec.clone(),
        seed_text,
        num_predict: max_tokens(&body),
        reply_tokens: sim.config.reply_tokens,
        think: false,
        format: None,
        tools: vec![],
        call_tool: false,
        format_after_thinking: false,
        batching: sim.batching.clone(),
    };
    let admitted = admit(&sim, &spec, None, &LoadOptions::default()).await?;
    let plan = generation::plan(&request);
    let drop_after = admitted.drop_midway.then_some(plan.pieces.len() / 2);
    let events = generation::run(
        plan,
        &request,
        admitted.lease,
        arrived,
        drop_after,
        admitted.in_flight,
    );
    let id = format!("cmpl-{}", sim.next_id());
    if stream {
        let with_usage = include_usage(&body);
        let frames = async_stream::stream! {
            let mut position = 0;
            let mut events = Box::pin(events);
            while let Some(event) = events.next().await {
                let created = unix_seconds(SystemTime::now());
                let mut chunk = json!({"id": id, "object": "text_completion", "created": created,
                    "model": model, "system_fingerprint": "fp_ollama"});
                match event {
                    Event::Piece(Piece::Content(text)) => {
                        chunk["choices"] = json!([{"text": text, "index": 0, "finish_reason": null}]);
                        if let Some(entry) = choice_logprobs(&Piece::Content(text), position, logprobs) {
                            chunk["choices"][0]["logprobs"] = entry;
                            position += 1;
                        }
                    }
                    Event::Piece(_) => continue,
                    Event::Dropped => {
                        yield Err(drop_error());
                        return;
                    }
                    Event::Done(summary) => {
                        chunk["choices"] = json!([{"text": "", "index": 0,
                            "finish_reason": finish_reason(summary.done_reason, false)}]);
                        if with_usage {
                            chunk["usage"] = json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0});
                        }
                        yield Ok(sse_frame(&chunk.to_string()));
                        if with_usage {
                            let usage_chunk = json!({"id": id, "object": "text_completion", "created": created,
                                "model": model, "system_fingerprint": "fp_ollama", "choices": [], "usage": usage(&summary)});
                            yield Ok(sse_frame(&usage_chunk.to_string()));
                        }
                        yield Ok(Bytes::from_static(b"data: [DONE]\n\n"));
                        return;
                    }
                }
                if with_usage {
                    chunk["usage"] = json!({"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0});
                }
                yield Ok(sse_frame(&chunk.to_string()));
            }
        };
        return Ok(wire::stream_response(EVENT_STREAM, frames));
    }
    let (content, _, _, summary, dropped, pieces) = gather(events).await;
    let done_reason = summary.map_or("stop", |s| s.done_reason);
    let mut reply = json!({
        "id": id, "object": "text_completion", "created": unix_seconds(SystemTime::now()),
        "model": model, "system_fingerprint": "fp_ollama",
        "choices": [{"text": content, "index": 0, "finish_reason": finish_reason(done_reason, false)}],
        "usage": summary.as_ref().map(usage).unwrap_or(json!({"prompt_tokens":0,"completion_tokens":0,"total_tokens":0})),
    });
    if let Some(all) = all_logprobs(&pieces, logprobs) {
        reply["choices"][0]["logprobs"] = all;
    }
    if dropped {
        return Ok(cut_body(wire::JSON, reply.to_string().into_bytes()));
    }
    Ok(json_response_as(wire::JSON, StatusCode::OK, &reply))
}

/// `input` of `/v1/embeddings`: a string, strings, or token arrays.
fn embedding_inputs(body: &RequestBody) -> Result<Vec<String>, ApiError> {
    let invalid = || ApiError::bad_request("invalid input");
    match body.get("input") {
        None => Err(invalid()),
        Some(Value::String(s)) => Ok(vec![s.clone()]),
        Some(Value::Array(items)) if items.is_empty() => Err(invalid()),
        Some(Value::Array(items)) => {
            if items.iter().all(Value::is_number) {
                return Ok(vec![Value::Array(items.clone()).to_string()]);
            }
            items
                .iter()
                .map(|item| match item {
                    Value::String(s) => Ok(s.clone()),
                    Value::Array(tokens) if tokens.iter().all(Value::is_number) => {
                        Ok(item.to_string())
                    }
                    _ => Err(invalid()),
                })
                .collect()
        }
        Some(_) => Err(invalid()),
    }
}

pub async fn embeddings(State(sim): State<Arc<Sim>>, bytes: Bytes) -> OpenAiResult {
    let body = RequestBody::parse(&bytes, "EmbedRequest").map_err(OpenAiError::middleware)?;
    let model = body.string("model")?.to_string();
    let inputs = embedding_inputs(&body).map_err(OpenAiError::middleware)?;
    let encoding = body.string("encoding_format")?.to_string();
    let base64 = match encoding.as_str() {
        "" | "float" => false,
        "base64" => true,
        other => {
            return Err(OpenAiError::middleware(ApiError::bad_request(format!(
                "Invalid value for 'encoding_format' = {other}. Supported values: ['float', 'base64']."
            ))));
        }
    };
    let keep_alive = keep_alive_field(&body.fields)?;
    let dimensions = body
        .get("dimensions")
        .and_then(Value::as_u64)
        .map(|d| d as usize);
    if model.is_empty() {
        return Err(OpenAiError::from(ApiError::not_found("model '' not found")));
    }
    let spec = sim.find(&model).ok_or_else(|| {
        OpenAiError::from(ApiError::not_found(format!(
            "model {model:?} not found, try pulling it first"
        )))
    })?;
    let options = LoadOptions::default();
    let admitted = admit(&sim, &spec, keep_alive, &options).await?;
    let drop_midway = admitted.drop_midway;
    let num_ctx = super::native::runner_context(&sim, &spec, &options);
    let token_limit = super::native::embed_token_limit(&body, num_ctx)?;
    let (vectors, _, tokens) = embed_vectors(admitted, &spec, &inputs, dimensions, token_limit);
    let data: Vec<Value> = vectors
        .iter()
        .enumerate()
        .map(|(index, vector)| {
            let embedding = if base64 {
                let bytes: Vec<u8> = vector.iter().flat_map(|x| x.to_le_bytes()).collect();
                json!(base64::engine::general_purpose::STANDARD.encode(bytes))
            } else {
                json!(vector)
            };
            json!({"object": "embedding", "embedding": embedding, "index": index})
        })
        .collect();
    let reply = json!({
        "object": "list", "data": data, "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
    });
    if drop_midway {
        return Ok(cut_body(wire::JSON, reply.to_string().into_bytes()));
    }
    Ok(json_response_as(wire::JSON, StatusCode::OK, &reply))
}

fn model_object(sim: &Sim, id: &str, spec: &crate::spec::ModelSpec) -> Value {
    let index = sim
        .models()
        .iter()
        .position(|m| m.display_name() == spec.display_name())
        .unwrap_or(0);
    let created = unix_seconds(sim.started) - 3600 * (index as u64 + 1);
    let owner = spec
        .display_name()
        .rsplit_once('/')
        .map(|(path, _)| path.rsplit('/').next().unwrap_or("library").to_string())
        .unwrap_or_else(|| "library".to_string());
    json!({"id": id, "object": "model", "created": created, "owned_by": owner})
}

pub async fn list_models(State(sim): State<Arc<Sim>>) -> Response {
    let data: Vec<Value> = sim
        .models()
        .iter()
        .map(|spec| model_object(&sim, &spec.display_name(), spec))
        .collect();
    json_response_as(
        wire::JSON,
        StatusCode::OK,
        &json!({"object": "list", "data": data}),
    )
}

pub async fn get_model(State(sim): State<Arc<Sim>>, Path(model): Path<String>) -> OpenAiResult {
    let spec = sim.find(&model).ok_or_else(|| {
        OpenAiError::from(ApiError::not_found(format!(
            "model '{}' not found",
            crate::spec::canonical_name(&model)
        )))
    })?;
    Ok(json_response_as(
        wire::JSON,
        StatusCode::OK,
        &model_object(&sim, &model, &spec),
    ))
}
