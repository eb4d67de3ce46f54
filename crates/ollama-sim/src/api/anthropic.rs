//! `POST /v1/messages`: Anthropic's Messages API, as Ollama serves it so that
//! Anthropic-API tools can run on local models.
//!
//! Ollama's `AnthropicMessagesMiddleware` (`middleware/anthropic.go`) checks the body
//! (`model is required`, `max_tokens is required and must be positive`,
//! `messages is required`), converts it to a chat request
//! (`anthropic/anthropic.go` `FromMessagesRequest`: `system` becomes a system
//! message, text blocks are joined, `tool_use` blocks become tool calls and
//! `tool_result` blocks `tool` messages, `max_tokens` the `num_predict`, `thinking`
//! the `think` value) and runs `ChatHandler`, telling it to drop `think` silently
//! for a model that cannot think (`relax_thinking`). `stream` defaults to false.
//!
//! The answer is `ToMessagesResponse`'s message (`thinking`, `text` and `tool_use`
//! blocks, `stop_reason` `end_turn`/`max_tokens`/`tool_use`, `usage` with
//! `input_tokens`/`output_tokens`), or, streaming, `StreamConverter`'s events:
//! `message_start` (its `input_tokens` the len/4 estimate of `EstimateInputTokens`),
//! `content_block_start`/`content_block_delta`.../`content_block_stop` per block,
//! `message_delta` (stop reason and usage), `message_stop`.
//!
//! Errors take Anthropic's shape (`anthropic.NewError`):
//! `{"type":"error","error":{"type","message"},"request_id":"req_..."}`.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Value, json};

use super::body::RequestBody;
use super::chat_bridge::{self, ChatCall, find_chat_model, type_error};
use super::wire::{self, ApiError, EVENT_STREAM};
use super::{cut_body, drop_error};
use crate::generation::{Event, Piece};
use crate::sim::Sim;

/// An error in Anthropic's shape. Ollama's checks answer through gin's JSON (with a
/// charset); errors from the chat handler are rewritten to plain `application/json`.
pub struct AnthropicError {
    error: ApiError,
    request_id: String,
    charset: bool,
}

impl IntoResponse for AnthropicError {
    fn into_response(self) -> Response {
        let kind = match self.error.status.as_u16() {
            400 => "invalid_request_error",
            401 => "authentication_error",
            403 => "permission_error",
            404 => "not_found_error",
            429 => "rate_limit_error",
            503 | 529 => "overloaded_error",
            _ => "api_error",
        };
        let body = json!({
            "type": "error",
            "error": {"type": kind, "message": self.error.message},
            "request_id": self.request_id,
        });
        let mut text = body.to_string();
        let content_type = if self.charset {
            wire::JSON_UTF8
        } else {
            text.push('\n');
            "application/json"
        };
        let mut response = (self.error.status, text).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
        response
    }
}

/// Ollama's 24 hex digits after the prefix (random there, counted here).
fn anthropic_id(prefix: &str, sim: &Sim) -> String {
    format!("{prefix}_{:024x}", sim.next_id())
}

/// Text of a `content` that is a string or a list of blocks with `text`.
fn block_text(content: Option<&Value>) -> String {
    match content {
        Some(Value::String(text)) => text.clone(),
        Some(Value::Array(blocks)) => blocks
            .iter()
            .filter(|b| b.get("type").and_then(Value::as_str) == Some("text"))
            .filter_map(|b| b.get("text").and_then(Value::as_str))
            .collect(),
        _ => String::new(),
    }
}

/// `FromMessagesRequest`'s messages, as `(role, content)`.
fn chat_messages(
    body: &RequestBody,
    messages: &[Value],
) -> Result<Vec<(String, String)>, ApiError> {
    let mut converted = Vec::new();
    let system = block_text(body.get("system"));
    if !system.is_empty() {
        converted.push(("system".to_string(), system));
    }
    for message in messages {
        let role = message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_lowercase();
        let blocks = match message.get("content") {
            Some(Value::String(text)) => vec![json!({"type": "text", "text": text})],
            Some(Value::Array(blocks)) => blocks.clone(),
            None | Some(Value::Null) => vec![],
            Some(other) => {
                return Err(type_error(
                    "MessageParam",
                    "content",
                    other,
                    "[]anthropic.ContentBlock",
                ));
            }
        };
        let (mut text, mut tool_results, mut other_parts) = (String::new(), Vec::new(), false);
        for block in &blocks {
            let field = |key: &str| block.get(key).and_then(Value::as_str).unwrap_or("");
            match field("type") {
                "text" => text.push_str(field("text")),
                "image" => {
                    let source = block.get("source").filter(|s| !s.is_null());
                    let Some(source) = source else {
                        return Err(ApiError::bad_request("invalid image source"));
                    };
                    let kind = source.get("type").and_then(Value::as_str).unwrap_or("");
                    if kind != "base64" {
                        return Err(ApiError::bad_request(format!(
                            "invalid image source type: {kind}. Only base64 images are supported."
                        )));
                    }
                    other_parts = true;
                }
                "tool_use" => {
                    if field("id").is_empty() {
                        return Err(ApiError::bad_request(
                            "tool_use block missing required 'id' field",
                        ));
                    }
                    if field("name").is_empty() {
                        return Err(ApiError::bad_request(
                            "tool_use block missing required 'name' field",
                        ));
                    }
                    other_parts = true;
                }
                "tool_result" => {
                    tool_results.push(("tool".to_string(), block_text(block.get("content"))))
                }
                "thinking" => other_parts |= !field("thinking").is_empty(),
                _ => {}
            }
        }
        // A user turn's tool results come before its own text (`convertMessage`).
        let user_results = role == "user";
        if user_results {
            converted.append(&mut tool_results);
        }
        if !text.is_empty() || other_parts {
            converted.push((role.clone(), text));
        }
        converted.append(&mut tool_results);
    }
    Ok(converted)
}

/// `EstimateInputTokens`: a quarter of the characters of the system prompt, roles,
/// block texts and tool definitions, at least 1.
fn estimate_input_tokens(body: &RequestBody, messages: &[Value], tools: &[Value]) -> u64 {
    let system = match body.get("system") {
        None => 0,
        Some(Value::String(text)) => text.len(),
        Some(Value::Array(blocks)) => blocks.iter().map(block_len).sum(),
        Some(other) => other.to_string().len(),
    };
    let mut total = system;
    for message in messages {
        total += message
            .get("role")
            .and_then(Value::as_str)
            .map_or(0, str::len);
        total += match message.get("content") {
            Some(Value::String(text)) => text.len(),
            Some(Value::Array(blocks)) => blocks.iter().map(block_len).sum(),
            _ => 0,
        };
    }
    for tool in tools {
        let text = |key: &str| tool.get(key).and_then(Value::as_str).map_or(0, str::len);
        total += text("name") + text("description");
        total += tool.get("input_schema").map_or(0, |s| s.to_string().len());
    }
    let tokens = total / 4;
    if tokens == 0 && (!messages.is_empty() || body.get("system").is_some()) {
        1
    } else {
        tokens as u64
    }
}

fn block_len(block: &Value) -> usize {
    let text = |key: &str| block.get(key).and_then(Value::as_str).map_or(0, str::len);
    let mut total = text("text") + text("thinking");
    if matches!(
        block.get("type").and_then(Value::as_str),
        Some("tool_use" | "tool_result")
    ) {
        total += block.to_string().len();
    }
    total
}

/// `mapStopReason`.
fn stop_reason(done_reason: &str, tool_calls: bool) -> &'static str {
    match (done_reason, tool_calls) {
        (_, true) => "tool_use",
        ("stop", _) => "end_turn",
        ("length", _) => "max_tokens",
        ("", _) => "",
        _ => "stop_sequence",
    }
}

/// A native tool call as a `tool_use` block.
fn tool_use(call: &Value, input: Value) -> Value {
    json!({"type": "tool_use", "id": call["id"], "name": call["function"]["name"], "input": input})
}

pub async fn messages(State(sim): State<Arc<Sim>>, bytes: Bytes) -> Response {
    match handle(&sim, &bytes).await {
        Ok(response) => response,
        Err((error, charset)) => AnthropicError {
            error,
            request_id: anthropic_id("req", &sim),
            charset,
        }
        .into_response(),
    }
}

/// The answer, or an error and whether it came from the middleware's own checks.
async fn handle(sim: &Sim, bytes: &[u8]) -> Result<Response, (ApiError, bool)> {
    let checked = |error: ApiError| (error, true);
    let body = RequestBody::parse(bytes, "MessagesRequest").map_err(checked)?;
    let model = body.string("model").map_err(checked)?.to_string();
    let max_tokens = match body.get("max_tokens") {
        None => 0,
        Some(Value::Number(n)) if n.is_i64() => n.as_i64().unwrap_or(0),
        Some(other) => {
            return Err(checked(type_error(
                "MessagesRequest",
                "max_tokens",
                other,
                "int",
            )));
        }
    };
    let messages = body
        .array("messages", "[]anthropic.MessageParam")
        .map_err(checked)?
        .to_vec();
    let stream = body.bool("stream").map_err(checked)?.unwrap_or(false);
    let request_tools = body
        .array("tools", "[]anthropic.Tool")
        .map_err(checked)?
        .to_vec();
    if model.is_empty() {
        return Err(checked(ApiError::bad_request("model is required")));
    }
    if max_tokens <= 0 {
        return Err(checked(ApiError::bad_request(
            "max_tokens is required and must be positive",
        )));
    }
    if messages.is_empty() {
        return Err(checked(ApiError::bad_request("messages is required")));
    }
    let converted = chat_messages(&body, &messages).map_err(checked)?;
    let tools: Vec<Value> = request_tools
        .iter()
        .map(|tool| {
            json!({"type": "function", "function": {
                "name": tool.get("name").cloned().unwrap_or(json!("")),
                "description": tool.get("description").and_then(Value::as_str).unwrap_or(""),
                "parameters": tool.get("input_schema").cloned().unwrap_or(json!({})),
            }})
        })
        .collect();
    let wants_think = match body
        .get("thinking")
        .and_then(|t| t.get("type"))
        .and_then(Value::as_str)
    {
        Some("enabled") => Some(true),
        Some("disabled") => Some(false),
        _ => match body
            .get("output_config")
            .and_then(|c| c.get("effort"))
            .and_then(Value::as_str)
            .map(|e| e.trim().to_lowercase())
            .as_deref()
        {
            Some("high" | "medium" | "low" | "max" | "xhigh") => Some(true),
            _ => None,
        },
    };
    let estimated = estimate_input_tokens(&body, &messages, &request_tools);
    let from_chat = |error: ApiError| (error, false);
    let spec = find_chat_model(sim, &model).map_err(from_chat)?;
    // `relax_thinking`: a model that cannot think just does not, without an error.
    let think = wants_think.unwrap_or(spec.thinking) && spec.thinking;
    let call = ChatCall {
        messages: converted,
        tools,
        think,
        num_predict: Some(max_tokens),
        format: None,
    };
    let started = chat_bridge::start(sim, &spec, call)
        .await
        .map_err(from_chat)?;
    let id = anthropic_id("msg", sim);
    if stream {
        let mut converter = StreamConverter {
            id,
            model,
            estimated,
            started: false,
            index: 0,
            thinking_started: false,
            thinking_done: false,
            text_started: false,
            tool_calls_sent: false,
        };
        let frames = async_stream::stream! {
            let mut events = started.events;
            while let Some(event) = events.next().await {
                if let Event::Dropped = event {
                    yield Err(drop_error());
                    return;
                }
                for (name, data) in converter.process(event) {
                    yield Ok(Bytes::from(format!("event: {name}\ndata: {data}\n\n")));
                }
            }
        };
        return Ok(wire::stream_response(EVENT_STREAM, frames));
    }
    let whole = chat_bridge::gather(started).await;
    let mut content = Vec::new();
    if !whole.thinking.is_empty() {
        content.push(json!({"type": "thinking", "thinking": whole.thinking}));
    }
    if !whole.content.is_empty() {
        content.push(json!({"type": "text", "text": whole.content}));
    }
    for call in &whole.tool_calls {
        content.push(tool_use(call, call["function"]["arguments"].clone()));
    }
    let mut reply = json!({
        "id": id, "type": "message", "role": "assistant", "model": model,
        // A nil slice in Go: `null` when the model said nothing.
        "content": if content.is_empty() { Value::Null } else { Value::Array(content) },
    });
    let reason = stop_reason(whole.summary.done_reason, !whole.tool_calls.is_empty());
    if !reason.is_empty() {
        reply["stop_reason"] = json!(reason);
    }
    reply["usage"] = json!({
        "input_tokens": whole.summary.prompt_eval_count,
        "output_tokens": whole.summary.eval_count,
    });
    let mut text = reply.to_string().into_bytes();
    text.push(b'\n');
    if whole.dropped {
        return Ok(cut_body("application/json", text));
    }
    let mut response = (StatusCode::OK, text).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    Ok(response)
}

/// `StreamConverter`: chat chunks to Messages events.
struct StreamConverter {
    id: String,
    model: String,
    estimated: u64,
    started: bool,
    index: u64,
    thinking_started: bool,
    thinking_done: bool,
    text_started: bool,
    tool_calls_sent: bool,
}

impl StreamConverter {
    fn stop(&self) -> (&'static str, Value) {
        (
            "content_block_stop",
            json!({"type": "content_block_stop", "index": self.index}),
        )
    }

    fn process(&mut self, event: Event) -> Vec<(&'static str, Value)> {
        let mut events = Vec::new();
        if !self.started {
            self.started = true;
            // Only the last chat chunk counts the prompt, so the first uses the estimate.
            events.push((
                "message_start",
                json!({"type": "message_start", "message": {
                    "id": self.id, "type": "message", "role": "assistant", "model": self.model,
                    "content": [], "usage": {"input_tokens": self.estimated, "output_tokens": 0},
                }}),
            ));
        }
        match event {
            Event::Piece(Piece::Thinking(text)) if !self.thinking_done && !text.is_empty() => {
                if self.text_started {
                    events.push(self.stop());
                    self.index += 1;
                    self.text_started = false;
                }
                if !self.thinking_started {
                    self.thinking_started = true;
                    events.push((
                        "content_block_start",
                        json!({"type": "content_block_start", "index": self.index,
                            "content_block": {"type": "thinking", "thinking": ""}}),
                    ));
                }
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": self.index,
                        "delta": {"type": "thinking_delta", "thinking": text}}),
                ));
            }
            Event::Piece(Piece::Content(text)) if !text.is_empty() => {
                self.close_thinking(&mut events);
                if !self.text_started {
                    self.text_started = true;
                    events.push((
                        "content_block_start",
                        json!({"type": "content_block_start", "index": self.index,
                            "content_block": {"type": "text", "text": ""}}),
                    ));
                }
                events.push((
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": self.index,
                        "delta": {"type": "text_delta", "text": text}}),
                ));
            }
            Event::Piece(Piece::ToolCalls(calls)) => {
                for call in calls {
                    self.close_thinking(&mut events);
                    if self.text_started {
                        events.push(self.stop());
                        self.index += 1;
                        self.text_started = false;
                    }
                    events.push((
                        "content_block_start",
                        json!({"type": "content_block_start", "index": self.index,
                            "content_block": tool_use(&call, json!({}))}),
                    ));
                    events.push((
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": self.index,
                            "delta": {"type": "input_json_delta",
                                "partial_json": call["function"]["arguments"].to_string()}}),
                    ));
                    events.push(self.stop());
                    self.tool_calls_sent = true;
                    self.index += 1;
                }
            }
            Event::Done(summary) => {
                if self.text_started || (self.thinking_started && !self.thinking_done) {
                    events.push(self.stop());
                }
                let mut delta = json!({});
                let reason = stop_reason(summary.done_reason, self.tool_calls_sent);
                if !reason.is_empty() {
                    delta["stop_reason"] = json!(reason);
                }
                events.push((
                    "message_delta",
                    json!({"type": "message_delta", "delta": delta, "usage": {
                        "input_tokens": summary.prompt_eval_count,
                        "output_tokens": summary.eval_count,
                    }}),
                ));
                events.push(("message_stop", json!({"type": "message_stop"})));
            }
            Event::Piece(_) | Event::Dropped => {}
        }
        events
    }

    fn close_thinking(&mut self, events: &mut Vec<(&'static str, Value)>) {
        if self.thinking_started && !self.thinking_done {
            self.thinking_done = true;
            events.push(self.stop());
            self.index += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_become_chat_messages_in_ollamas_order() {
        let body = RequestBody::parse(
            br#"{"system":[{"type":"text","text":"be brief"}],"messages":[
                {"role":"user","content":"hi"},
                {"role":"assistant","content":[{"type":"tool_use","id":"t","name":"f","input":{}}]},
                {"role":"user","content":[{"type":"tool_result","tool_use_id":"t","content":"42"},{"type":"text","text":"and?"}]}]}"#,
            "MessagesRequest",
        )
        .unwrap();
        let messages = body.array("messages", "").unwrap().to_vec();
        let converted = chat_messages(&body, &messages).unwrap();
        let roles: Vec<(&str, &str)> = converted
            .iter()
            .map(|(r, c)| (r.as_str(), c.as_str()))
            .collect();
        assert_eq!(
            roles,
            [
                ("system", "be brief"),
                ("user", "hi"),
                ("assistant", ""),
                ("tool", "42"),
                ("user", "and?")
            ]
        );
        // 8 (system) + 6 + 9 + 50 (tool_use as JSON) + 4 + 55 (tool_result) + 4 = 136 chars.
        assert_eq!(estimate_input_tokens(&body, &messages, &[]), 34);
    }

    #[test]
    fn stop_reasons_follow_ollama() {
        assert_eq!(stop_reason("stop", false), "end_turn");
        assert_eq!(stop_reason("length", false), "max_tokens");
        assert_eq!(stop_reason("length", true), "tool_use");
        assert_eq!(stop_reason("", false), "");
    }
}
