//! `POST /v1/responses`: OpenAI's Responses API, as Ollama serves it (stateless).
//!
//! Ollama's `ResponsesMiddleware` (`middleware/openai.go`) reads the body into
//! `openai.ResponsesRequest`, converts it to a chat request
//! (`openai/responses.go` `FromResponsesRequest`: `instructions` becomes a system
//! message, `input` a string or a list of items, `max_output_tokens` the
//! `num_predict`, `reasoning.effort` the `think` value, `text.format` a JSON schema
//! `format`) and runs `ChatHandler`. `stream` defaults to false.
//!
//! The answer is `ToResponse`'s object (`"object":"response"`, `"status":"completed"`,
//! a reasoning item, function calls or one message item, and `usage` with
//! `input_tokens`/`output_tokens`/`total_tokens`), or, streaming, the SSE events of
//! `ResponsesStreamConverter` (`event: <type>` then `data: <json>`, each with a
//! `sequence_number`): `response.created`, `response.in_progress`, then per item
//! `response.output_item.added`, `response.content_part.added`,
//! `response.output_text.delta`..., `response.output_text.done`,
//! `response.content_part.done`, `response.output_item.done`, and finally
//! `response.completed` carrying the whole response. Like Ollama, a response that hit
//! `max_output_tokens` still says `completed`.
//!
//! Errors take OpenAI's shape (`openai.NewError`) with the chat handler's status.

use std::sync::Arc;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::StreamExt;
use serde_json::{Map, Value, json};

use super::body::RequestBody;
use super::chat_bridge::{self, ChatCall, find_chat_model, type_error};
use super::wire::{self, ApiError, EVENT_STREAM, unix_seconds};
use super::{cut_body, drop_error};
use crate::generation::{Event, Format, Piece};
use crate::sim::Sim;

/// An error in OpenAI's shape.
pub struct ResponsesError(ApiError);

impl From<ApiError> for ResponsesError {
    fn from(error: ApiError) -> Self {
        ResponsesError(error)
    }
}

impl IntoResponse for ResponsesError {
    fn into_response(self) -> Response {
        self.0.openai()
    }
}

/// Go's `encoding/json` writes map keys sorted; the streamed events are maps.
fn sorted(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<(String, Value)> = map.into_iter().collect();
            entries.sort_by(|a, b| a.0.cmp(&b.0));
            Value::Object(
                entries
                    .into_iter()
                    .map(|(key, value)| {
                        // Values copied from the request keep their own order.
                        let keep = matches!(key.as_str(), "parameters" | "schema");
                        (key, if keep { value } else { sorted(value) })
                    })
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(sorted).collect()),
        other => other,
    }
}

/// What the answer echoes from the request.
struct Echo {
    model: String,
    instructions: Option<String>,
    truncation: String,
    tools: Vec<Value>,
    text_format: Option<Value>,
    effort: Option<String>,
    summary: Option<String>,
    top_p: Value,
    temperature: Value,
    max_output_tokens: Option<i64>,
    background: bool,
}

/// `thinkFromReasoningEffort` (`openai/openai.go`): `None` leaves the model's default.
fn think_from_effort(effort: &str) -> Result<Option<bool>, ApiError> {
    match effort {
        "" => Ok(None),
        "none" => Ok(Some(false)),
        "minimal" | "low" | "medium" | "high" | "max" | "xhigh" | "ultra" => Ok(Some(true)),
        other => Err(ApiError::bad_request(format!(
            "invalid reasoning value: {other:?} (must be \"minimal\", \"low\", \"medium\", \"high\", \"xhigh\", \"ultra\", \"max\", or \"none\")"
        ))),
    }
}

const FILE_INPUTS: &str = "file inputs are not currently supported";

/// Text of a message's `content`: a string, or parts (`input_text`, `output_text`;
/// images are skipped, files refused as Ollama refuses them).
fn content_text(content: Option<&Value>) -> Result<String, String> {
    match content {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(text)) => Ok(text.clone()),
        Some(Value::Array(parts)) => {
            let mut text = String::new();
            for (index, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str).unwrap_or("") {
                    "input_text" | "output_text" => {
                        text.push_str(part.get("text").and_then(Value::as_str).unwrap_or(""))
                    }
                    "input_image" => {}
                    "input_file" => return Err(FILE_INPUTS.into()),
                    other => {
                        return Err(format!("content[{index}]: unknown content type: {other}"));
                    }
                }
            }
            Ok(text)
        }
        Some(other) => Err(format!(
            "content must be a string or array: json: cannot unmarshal {} into Go value of type []json.RawMessage",
            super::body::go_type_name(other)
        )),
    }
}

/// `FromResponsesRequest`'s messages: `(role, content)` pairs.
fn messages(body: &RequestBody) -> Result<Vec<(String, String)>, ApiError> {
    let mut messages = Vec::new();
    let instructions = body.string("instructions")?;
    if !instructions.is_empty() {
        messages.push(("system".to_string(), instructions.to_string()));
    }
    match body.get("input") {
        None => {}
        Some(Value::String(text)) if text.is_empty() => {}
        Some(Value::String(text)) => messages.push(("user".to_string(), text.clone())),
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                // Decoding errors name the item; a file input is refused after decoding.
                let fail = |message: String| {
                    if message == FILE_INPUTS {
                        ApiError::bad_request(message)
                    } else {
                        ApiError::bad_request(format!("input[{index}]: {message}"))
                    }
                };
                let Some(fields) = item.as_object() else {
                    return Err(fail(format!(
                        "json: cannot unmarshal {} into Go value of type struct",
                        super::body::go_type_name(item)
                    )));
                };
                let text = |key: &str| fields.get(key).and_then(Value::as_str).unwrap_or("");
                let role = text("role");
                let kind = match text("type") {
                    "" if !role.is_empty() => "message",
                    kind => kind,
                };
                match kind {
                    "message" => {
                        let content = content_text(fields.get("content")).map_err(fail)?;
                        messages.push((role.to_string(), content));
                    }
                    "function_call" => messages.push(("assistant".to_string(), String::new())),
                    "function_call_output" => {
                        let output = match fields.get("output") {
                            Some(Value::String(text)) => text.clone(),
                            other => content_text(other).map_err(fail)?,
                        };
                        messages.push(("tool".to_string(), output));
                    }
                    "reasoning" | "web_search_call" => {}
                    "" => return Err(fail("input item missing required 'type' field".into())),
                    other => return Err(fail(format!("unknown input item type: {other:?}"))),
                }
            }
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "input must be a string or array: json: cannot unmarshal {} into Go value of type []json.RawMessage",
                super::body::go_type_name(other)
            )));
        }
    }
    Ok(messages)
}

/// Responses tools as native tools; a `namespace` contributes its members, named
/// `<namespace>.<name>` (`convertTools`).
fn native_tools(tools: &[Value], prefix: &str, out: &mut Vec<Value>) {
    for tool in tools {
        let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
        if tool.get("type").and_then(Value::as_str) == Some("namespace") {
            let inner = tool
                .get("tools")
                .and_then(Value::as_array)
                .map_or(&[][..], |t| t);
            let prefix = if name.is_empty() {
                prefix.to_string()
            } else {
                format!("{prefix}{name}.")
            };
            native_tools(inner, &prefix, out);
            continue;
        }
        out.push(json!({
            "type": tool.get("type").cloned().unwrap_or(json!("function")),
            "function": {
                "name": format!("{prefix}{name}"),
                "description": tool.get("description").and_then(Value::as_str).unwrap_or(""),
                "parameters": tool.get("parameters").cloned().unwrap_or(json!({})),
            },
        }));
    }
}

/// A float as Go's encoder writes it: whole numbers without a fraction (`1`, not `1.0`).
fn go_float(value: f64) -> Value {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        json!(value as i64)
    } else {
        json!(value)
    }
}

fn usage(prompt: u64, eval: u64) -> Value {
    json!({
        "input_tokens": prompt,
        "output_tokens": eval,
        "total_tokens": prompt + eval,
        "input_tokens_details": {"cached_tokens": 0},
        "output_tokens_details": {"reasoning_tokens": 0},
    })
}

/// Arguments of a native tool call as OpenAI's JSON string.
fn arguments(call: &Value) -> String {
    call["function"]["arguments"].to_string()
}

pub async fn responses(
    State(sim): State<Arc<Sim>>,
    bytes: Bytes,
) -> Result<Response, ResponsesError> {
    let body = RequestBody::parse(&bytes, "ResponsesRequest")?;
    let model = body.string("model")?.to_string();
    let messages = messages(&body)?;
    let number = |key: &str| body.get(key).and_then(Value::as_f64);
    let reasoning = body.get("reasoning").cloned().unwrap_or(json!({}));
    let effort = reasoning
        .get("effort")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let summary = reasoning
        .get("summary")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_string();
    let think = think_from_effort(&effort)?;
    let request_tools = body.array("tools", "[]openai.ResponsesTool")?.to_vec();
    let mut tools = Vec::new();
    native_tools(&request_tools, "", &mut tools);
    let text_format = body
        .get("text")
        .and_then(|t| t.get("format"))
        .filter(|f| !f.is_null())
        .cloned();
    let format = text_format
        .as_ref()
        .filter(|f| f.get("type").and_then(Value::as_str) == Some("json_schema"))
        .and_then(|f| f.get("schema"))
        .filter(|s| !s.is_null())
        .cloned()
        .map(Format::Schema);
    let max_output_tokens = match body.get("max_output_tokens") {
        None => None,
        Some(Value::Number(n)) if n.is_i64() => n.as_i64(),
        Some(other) => {
            return Err(type_error("ResponsesRequest", "max_output_tokens", other, "int").into());
        }
    };
    let stream = body.bool("stream")?.unwrap_or(false);
    let background = body.bool("background")?.unwrap_or(false);
    let spec = find_chat_model(&sim, &model)?;
    let think = match think {
        None => spec.thinking,
        Some(true) if !spec.thinking => {
            return Err(
                ApiError::bad_request(format!("{model:?} does not support thinking")).into(),
            );
        }
        Some(wants) => wants,
    };
    let echo = Echo {
        model: model.clone(),
        instructions: Some(body.string("instructions")?.to_string()).filter(|s| !s.is_empty()),
        truncation: body.string("truncation")?.to_string(),
        tools: request_tools,
        text_format,
        effort: Some(effort).filter(|s| !s.is_empty()),
        summary: Some(summary).filter(|s| !s.is_empty()),
        top_p: go_float(number("top_p").unwrap_or(1.0)),
        temperature: go_float(number("temperature").unwrap_or(1.0)),
        max_output_tokens,
        background,
    };
    let call = ChatCall {
        messages,
        tools,
        think,
        num_predict: max_output_tokens,
        format,
    };
    let started = chat_bridge::start(&sim, &spec, call).await?;
    let number = sim.next_id();
    let response_id = format!("resp_{number}");
    let item_id = format!("msg_{number}");
    if stream {
        let mut converter = StreamConverter::new(response_id, item_id, echo, number);
        let frames = async_stream::stream! {
            let mut events = started.events;
            for (name, data) in converter.start() {
                yield Ok(frame(name, data));
            }
            while let Some(event) = events.next().await {
                let produced = match event {
                    Event::Piece(Piece::Thinking(text)) => converter.thinking(&text),
                    Event::Piece(Piece::ToolCalls(calls)) => converter.tool_calls(&calls),
                    Event::Piece(Piece::Content(text)) => converter.text(&text),
                    Event::Done(summary) => converter.complete(summary.prompt_eval_count, summary.eval_count),
                    Event::Dropped => {
                        yield Err(drop_error());
                        return;
                    }
                };
                for (name, data) in produced {
                    yield Ok(frame(name, data));
                }
            }
        };
        return Ok(wire::stream_response(EVENT_STREAM, frames));
    }
    let whole = chat_bridge::gather(started).await;
    let mut output = Vec::new();
    if !whole.thinking.is_empty() {
        output.push(json!({
            "id": format!("rs_{response_id}"), "type": "reasoning",
            "summary": [{"type": "summary_text", "text": whole.thinking}],
            "encrypted_content": whole.thinking,
        }));
    }
    if whole.tool_calls.is_empty() {
        output.push(json!({
            "id": item_id, "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": whole.content, "annotations": [], "logprobs": []}],
        }));
    } else {
        for (index, call) in whole.tool_calls.iter().enumerate() {
            output.push(json!({
                "id": format!("fc_{response_id}_{index}"), "type": "function_call", "status": "completed",
                "call_id": call["id"], "name": call["function"]["name"], "arguments": arguments(call),
            }));
        }
    }
    let now = unix_seconds(SystemTime::now());
    let tools: Vec<Value> = echo
        .tools
        .iter()
        .map(|tool| {
            let mut shaped = json!({
                "type": tool.get("type").cloned().unwrap_or(json!("")),
                "name": tool.get("name").cloned().unwrap_or(json!("")),
                "description": tool.get("description").cloned().unwrap_or(Value::Null),
                "strict": tool.get("strict").cloned().unwrap_or(Value::Null),
                "parameters": tool.get("parameters").cloned().unwrap_or(Value::Null),
            });
            if let Some(inner) = tool
                .get("tools")
                .filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
            {
                shaped["tools"] = inner.clone();
            }
            shaped
        })
        .collect();
    let reasoning = if echo.effort.is_some() || echo.summary.is_some() {
        let mut reasoning = Map::new();
        if let Some(effort) = &echo.effort {
            reasoning.insert("effort".into(), json!(effort));
        }
        if let Some(summary) = &echo.summary {
            reasoning.insert("summary".into(), json!(summary));
        }
        Value::Object(reasoning)
    } else {
        Value::Null
    };
    let reply = json!({
        "id": response_id, "object": "response", "created_at": now, "completed_at": now,
        "status": "completed", "incomplete_details": null, "model": echo.model,
        "previous_response_id": null, "instructions": echo.instructions, "output": output,
        "error": null, "tools": tools, "tool_choice": "auto",
        "truncation": if echo.truncation.is_empty() { "disabled".to_string() } else { echo.truncation.clone() },
        "parallel_tool_calls": true,
        "text": {"format": echo.text_format.clone().unwrap_or(json!({"type": "text"}))},
        "top_p": echo.top_p, "presence_penalty": 0, "frequency_penalty": 0, "top_logprobs": 0,
        "temperature": echo.temperature, "reasoning": reasoning,
        "usage": usage(whole.summary.prompt_eval_count, whole.summary.eval_count),
        "max_output_tokens": echo.max_output_tokens, "max_tool_calls": null, "store": false,
        "background": echo.background, "service_tier": "default", "metadata": {},
        "safety_identifier": null, "prompt_cache_key": null,
    });
    // `json.Encoder` ends the body with a newline; the content type has no charset.
    let mut text = reply.to_string().into_bytes();
    text.push(b'\n');
    if whole.dropped {
        return Ok(cut_body("application/json", text));
    }
    Ok(plain_json(StatusCode::OK, text))
}

fn plain_json(status: StatusCode, body: Vec<u8>) -> Response {
    let mut response = (status, body).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// One SSE event in Ollama's form: `event: <type>\ndata: <json>\n\n`.
fn frame(name: String, data: Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `ResponsesStreamConverter`: turns chat chunks into Responses events.
struct StreamConverter {
    response_id: String,
    item_id: String,
    echo: Echo,
    /// Seeds the reasoning and function-call item ids (random in Ollama).
    number: u64,
    sequence: u64,
    output_index: u64,
    content_started: bool,
    tool_calls_sent: bool,
    text: String,
    thinking: String,
    reasoning_item: Option<String>,
    completed: Vec<Value>,
}

type Events = Vec<(String, Value)>;

impl StreamConverter {
    fn new(response_id: String, item_id: String, echo: Echo, number: u64) -> StreamConverter {
        StreamConverter {
            response_id,
            item_id,
            echo,
            number,
            sequence: 0,
            output_index: 0,
            content_started: false,
            tool_calls_sent: false,
            text: String::new(),
            thinking: String::new(),
            reasoning_item: None,
            completed: Vec::new(),
        }
    }

    fn event(&mut self, name: &str, data: Value) -> (String, Value) {
        let mut data = data;
        data["type"] = json!(name);
        data["sequence_number"] = json!(self.sequence);
        self.sequence += 1;
        (name.to_string(), sorted(data))
    }

    fn response_object(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        let echo = &self.echo;
        let tools: Vec<Value> = echo
            .tools
            .iter()
            .map(|tool| {
                json!({
                    "type": tool.get("type").cloned().unwrap_or(json!("")),
                    "name": tool.get("name").cloned().unwrap_or(json!("")),
                    "description": tool.get("description").cloned().unwrap_or(Value::Null),
                    "strict": tool.get("strict").cloned().unwrap_or(Value::Null),
                    "parameters": tool.get("parameters").cloned().unwrap_or(Value::Null),
                })
            })
            .collect();
        let text_format = match &echo.text_format {
            None => json!({"type": "text"}),
            Some(format) => {
                let mut shaped = json!({"type": format.get("type").cloned().unwrap_or(json!(""))});
                for key in ["name", "schema", "strict"] {
                    if let Some(value) = format
                        .get(key)
                        .filter(|v| !v.is_null() && v.as_str() != Some(""))
                    {
                        shaped[key] = value.clone();
                    }
                }
                shaped
            }
        };
        let reasoning = if echo.effort.is_some() || echo.summary.is_some() {
            json!({"effort": echo.effort, "summary": echo.summary})
        } else {
            Value::Null
        };
        json!({
            "id": self.response_id, "object": "response",
            "created_at": unix_seconds(SystemTime::now()), "completed_at": null,
            "status": status, "incomplete_details": null, "model": echo.model,
            "previous_response_id": null, "instructions": echo.instructions,
            "output": output, "error": null, "tools": tools, "tool_choice": "auto",
            "truncation": if echo.truncation.is_empty() { "disabled".to_string() } else { echo.truncation.clone() },
            "parallel_tool_calls": true, "text": {"format": text_format},
            "top_p": echo.top_p, "presence_penalty": 0, "frequency_penalty": 0,
            "top_logprobs": 0, "temperature": echo.temperature, "reasoning": reasoning,
            "usage": usage, "max_output_tokens": echo.max_output_tokens,
            "max_tool_calls": null, "store": false, "background": echo.background,
            "service_tier": "default", "metadata": {}, "safety_identifier": null,
            "prompt_cache_key": null,
        })
    }

    fn start(&mut self) -> Events {
        let created = self.response_object("in_progress", vec![], Value::Null);
        let in_progress = created.clone();
        vec![
            self.event("response.created", json!({"response": created})),
            self.event("response.in_progress", json!({"response": in_progress})),
        ]
    }

    fn thinking(&mut self, text: &str) -> Events {
        let mut events = Vec::new();
        let item_id = match &self.reasoning_item {
            Some(id) => id.clone(),
            None => {
                let id = format!("rs_{}", self.number);
                self.reasoning_item = Some(id.clone());
                let index = self.output_index;
                events.push(self.event(
                    "response.output_item.added",
                    json!({"output_index": index, "item": {"id": id, "type": "reasoning", "summary": []}}),
                ));
                id
            }
        };
        self.thinking.push_str(text);
        let index = self.output_index;
        events.push(self.event(
            "response.reasoning_summary_text.delta",
            json!({"item_id": item_id, "output_index": index, "summary_index": 0, "delta": text}),
        ));
        events
    }

    fn finish_reasoning(&mut self) -> Events {
        let Some(item_id) = self.reasoning_item.take() else {
            return Vec::new();
        };
        let thinking = std::mem::take(&mut self.thinking);
        let item = json!({
            "id": item_id, "type": "reasoning",
            "summary": [{"type": "summary_text", "text": thinking}],
            "encrypted_content": thinking,
        });
        self.completed.push(item.clone());
        let index = self.output_index;
        self.output_index += 1;
        vec![
            self.event(
                "response.reasoning_summary_text.done",
                json!({"item_id": item_id, "output_index": index, "summary_index": 0, "text": thinking}),
            ),
            self.event("response.output_item.done", json!({"output_index": index, "item": item})),
        ]
    }

    fn tool_calls(&mut self, calls: &[Value]) -> Events {
        let mut events = self.finish_reasoning();
        for (i, call) in calls.iter().enumerate() {
            let index = self.output_index + i as u64;
            let item_id = format!("fc_{}_{i}", self.number);
            let arguments = arguments(call);
            let item = json!({
                "id": item_id, "type": "function_call", "status": "completed",
                "call_id": call["id"], "name": call["function"]["name"], "arguments": arguments,
            });
            self.completed.push(item.clone());
            let mut added = item.clone();
            added["status"] = json!("in_progress");
            added["arguments"] = json!("");
            events.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": added}),
            ));
            events.push(self.event(
                "response.function_call_arguments.delta",
                json!({"item_id": item_id, "output_index": index, "delta": arguments}),
            ));
            events.push(self.event(
                "response.function_call_arguments.done",
                json!({"item_id": item_id, "output_index": index, "arguments": arguments}),
            ));
            events.push(self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            ));
        }
        self.output_index += calls.len() as u64;
        self.tool_calls_sent = true;
        events
    }

    fn text(&mut self, text: &str) -> Events {
        if self.tool_calls_sent || text.is_empty() {
            return Vec::new();
        }
        let mut events = self.finish_reasoning();
        let (item_id, index) = (self.item_id.clone(), self.output_index);
        if !self.content_started {
            self.content_started = true;
            events.push(self.event(
                "response.output_item.added",
                json!({"output_index": index, "item": {"id": item_id, "type": "message",
                    "status": "in_progress", "role": "assistant", "content": []}}),
            ));
            events.push(self.event(
                "response.content_part.added",
                json!({"item_id": item_id, "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": [], "logprobs": []}}),
            ));
        }
        self.text.push_str(text);
        events.push(self.event(
            "response.output_text.delta",
            json!({"item_id": item_id, "output_index": index, "content_index": 0, "delta": text, "logprobs": []}),
        ));
        events
    }

    fn message_item(&self) -> Value {
        json!({
            "id": self.item_id, "type": "message", "status": "completed", "role": "assistant",
            "content": [{"type": "output_text", "text": self.text, "annotations": [], "logprobs": []}],
        })
    }

    fn complete(&mut self, prompt: u64, eval: u64) -> Events {
        let mut events = self.finish_reasoning();
        let (item_id, index) = (self.item_id.clone(), self.output_index);
        if !self.tool_calls_sent && self.content_started {
            let text = self.text.clone();
            events.push(self.event(
                "response.output_text.done",
                json!({"item_id": item_id, "output_index": index, "content_index": 0, "text": text, "logprobs": []}),
            ));
            events.push(self.event(
                "response.content_part.done",
                json!({"item_id": item_id, "output_index": index, "content_index": 0,
                    "part": {"type": "output_text", "text": text, "annotations": [], "logprobs": []}}),
            ));
            let item = self.message_item();
            events.push(self.event(
                "response.output_item.done",
                json!({"output_index": index, "item": item}),
            ));
        }
        let mut output = self.completed.clone();
        if self.content_started {
            output.push(self.message_item());
        }
        let mut response = self.response_object("completed", output, usage(prompt, eval));
        response["completed_at"] = json!(unix_seconds(SystemTime::now()));
        events.push(self.event("response.completed", json!({"response": response})));
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn input_items_become_chat_messages() {
        let body = RequestBody::parse(
            br#"{"instructions":"be brief","input":[{"role":"user","content":"hi"},
                {"type":"message","role":"assistant","content":[{"type":"output_text","text":"yo"}]},
                {"type":"function_call","call_id":"c","name":"f","arguments":"{}"},
                {"type":"function_call_output","call_id":"c","output":"42"}]}"#,
            "ResponsesRequest",
        )
        .unwrap();
        let pairs: Vec<(String, String)> = messages(&body).unwrap();
        let expected = [
            ("system", "be brief"),
            ("user", "hi"),
            ("assistant", "yo"),
            ("assistant", ""),
            ("tool", "42"),
        ];
        assert_eq!(pairs.len(), expected.len());
        for ((role, content), (want_role, want_content)) in pairs.iter().zip(expected) {
            assert_eq!((role.as_str(), content.as_str()), (want_role, want_content));
        }
    }

    #[test]
    fn bad_inputs_get_ollamas_messages() {
        let error = |body: &[u8]| {
            messages(&RequestBody::parse(body, "ResponsesRequest").unwrap())
                .unwrap_err()
                .message
        };
        assert_eq!(
            error(br#"{"input":[{"type":"nope"}]}"#),
            "input[0]: unknown input item type: \"nope\""
        );
        assert_eq!(
            error(br#"{"input":[{"content":"x"}]}"#),
            "input[0]: input item missing required 'type' field"
        );
        assert!(error(br#"{"input":3}"#).starts_with("input must be a string or array"));
        assert_eq!(
            error(
                br#"{"input":[{"role":"user","content":[{"type":"input_file","file_id":"f"}]}]}"#
            ),
            "file inputs are not currently supported"
        );
        assert!(
            think_from_effort("extreme")
                .unwrap_err()
                .message
                .starts_with("invalid reasoning value: \"extreme\"")
        );
    }
}
