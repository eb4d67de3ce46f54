//! Turns a streamed answer into the single object the target would have returned
//! with `"stream": false`, so every finished job has one result to store and serve.
//!
//! Native NDJSON, Ollama's rule: the final `done` chunk, with the text fields
//! (`response`, `thinking`, `message.content`, `message.thinking`) concatenated over
//! all chunks and `message.tool_calls` gathered. An `{"error": ...}` line means the
//! job failed mid-stream.
//!
//! OpenAI SSE (`data: {...}` frames, then `data: [DONE]`): the chunks' `delta`s (chat)
//! or `text`s (completions) concatenated into one `chat.completion` or
//! `text_completion` object, with the last `finish_reason` and the `usage` if sent.
//!
//! Typed SSE (`event: <type>` then `data: {...}`), told apart by the `type` inside
//! each data object, as Ollama writes them (`openai/responses.go`,
//! `anthropic/anthropic.go`):
//! - Responses (`response.*`): the `response` of the last `response.completed` (or
//!   `response.incomplete`/`response.failed`) event, the whole answer by construction;
//! - Anthropic Messages: `message_start`'s message with the blocks that
//!   `content_block_start` opens and the `content_block_delta`s fill (text, thinking,
//!   a tool's `input` from its `partial_json`), the `message_delta`'s `stop_reason`
//!   and `usage`. An `error` event means the job failed mid-stream.

use serde_json::{Map, Value};

/// Collects lines as body chunks arrive (chunks may split lines anywhere).
#[derive(Default)]
pub struct Aggregator {
    pending: Vec<u8>,
    response: String,
    thinking: String,
    content: String,
    message_thinking: String,
    tool_calls: Vec<Value>,
    last: Option<Map<String, Value>>,
    error: Option<String>,
    openai: Option<OpenAiParts>,
    /// The final `response` object of a Responses stream.
    responses_final: Option<Value>,
    anthropic: Option<AnthropicParts>,
    /// The stream's last event arrived (see [`Aggregator::ended`]).
    ended: bool,
}

/// What Anthropic's message events add up to.
struct AnthropicParts {
    message: Map<String, Value>,
    /// Blocks by index; a tool's input is gathered as JSON text until its stop.
    blocks: Vec<(Map<String, Value>, String)>,
}

/// What OpenAI-style chunks add up to.
#[derive(Default)]
struct OpenAiParts {
    first: Map<String, Value>,
    text: String,
    reasoning: String,
    tool_calls: Vec<Value>,
    finish_reason: Value,
    usage: Value,
    chat: bool,
}

impl Aggregator {
    pub fn push(&mut self, chunk: &[u8]) {
        self.pending.extend_from_slice(chunk);
        while let Some(end) = self.pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            self.line(&line);
        }
    }

    fn line(&mut self, line: &[u8]) {
        let line = line.strip_prefix(b"data: ").unwrap_or(line);
        if line.trim_ascii() == b"[DONE]" {
            self.ended = true;
            return;
        }
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        if object.contains_key("choices") {
            self.openai_chunk(object);
            return;
        }
        if let Some(kind) = object.get("type").and_then(Value::as_str) {
            let kind = kind.to_string();
            self.typed_event(&kind, object);
            return;
        }
        if let Some(error) = object.get("error") {
            self.error = Some(
                error
                    .as_str()
                    .map_or_else(|| error.to_string(), str::to_string),
            );
            self.ended = true;
            return;
        }
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        self.response.push_str(&text(object.get("response")));
        self.thinking.push_str(&text(object.get("thinking")));
        if let Some(message) = object.get("message") {
            self.content.push_str(&text(message.get("content")));
            self.message_thinking
                .push_str(&text(message.get("thinking")));
            if let Some(Value::Array(calls)) = message.get("tool_calls") {
                self.tool_calls.extend(calls.iter().cloned());
            }
        }
        if object.get("done") == Some(&Value::Bool(true)) {
            self.ended = true;
        }
        self.last = Some(object);
    }

    fn openai_chunk(&mut self, object: Map<String, Value>) {
        let parts = self.openai.get_or_insert_with(|| OpenAiParts {
            first: object.clone(),
            finish_reason: Value::Null,
            usage: Value::Null,
            ..OpenAiParts::default()
        });
        if let Some(usage) = object.get("usage").filter(|u| !u.is_null()) {
            parts.usage = usage.clone();
        }
        let Some(choice) = object.get("choices").and_then(|c| c.get(0)) else {
            return;
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        if let Some(delta) = choice.get("delta") {
            parts.chat = true;
            parts.text.push_str(&text(delta.get("content")));
            parts.reasoning.push_str(&text(delta.get("reasoning")));
            if let Some(Value::Array(calls)) = delta.get("tool_calls") {
                parts.tool_calls.extend(calls.iter().cloned());
            }
        } else {
            parts.text.push_str(&text(choice.get("text")));
        }
        if let Some(reason) = choice.get("finish_reason").filter(|r| !r.is_null()) {
            parts.finish_reason = reason.clone();
        }
    }

    /// One data object of a typed SSE stream (Responses or Anthropic Messages).
    fn typed_event(&mut self, kind: &str, mut object: Map<String, Value>) {
        let text = |v: Option<&Value>| v.and_then(Value::as_str).unwrap_or("").to_string();
        match kind {
            "response.completed" | "response.incomplete" | "response.failed" => {
                self.responses_final = object.remove("response");
                self.ended = true;
            }
            "message_stop" => self.ended = true,
            "error" => {
                self.ended = true;
                let error = object.get("error").unwrap_or(&Value::Null);
                self.error = Some(match error.get("message").and_then(Value::as_str) {
                    Some(message) => message.to_string(),
                    None => error.to_string(),
                });
            }
            "message_start" => {
                if let Some(Value::Object(message)) = object.remove("message") {
                    self.anthropic = Some(AnthropicParts {
                        message,
                        blocks: Vec::new(),
                    });
                }
            }
            "content_block_start" => {
                if let (Some(parts), Some(Value::Object(block))) =
                    (self.anthropic.as_mut(), object.remove("content_block"))
                {
                    parts.blocks.push((block, String::new()));
                }
            }
            "content_block_delta" => {
                let Some((block, input)) = self
                    .anthropic
                    .as_mut()
                    .and_then(|parts| parts.blocks.last_mut())
                else {
                    return;
                };
                let delta = object.get("delta").unwrap_or(&Value::Null);
                let mut append = |key: &str, more: String| {
                    let whole = text(block.get(key)) + &more;
                    block.insert(key.into(), Value::String(whole));
                };
                match delta.get("type").and_then(Value::as_str) {
                    Some("text_delta") => append("text", text(delta.get("text"))),
                    Some("thinking_delta") => append("thinking", text(delta.get("thinking"))),
                    Some("signature_delta") => append("signature", text(delta.get("signature"))),
                    Some("input_json_delta") => input.push_str(&text(delta.get("partial_json"))),
                    _ => {}
                }
            }
            "message_delta" => {
                let Some(parts) = self.anthropic.as_mut() else {
                    return;
                };
                if let Some(Value::Object(delta)) = object.get("delta") {
                    for (key, value) in delta {
                        parts.message.insert(key.clone(), value.clone());
                    }
                }
                if let Some(Value::Object(usage)) = object.get("usage") {
                    let mut whole = match parts.message.remove("usage") {
                        Some(Value::Object(whole)) => whole,
                        _ => Map::new(),
                    };
                    for (key, value) in usage {
                        whole.insert(key.clone(), value.clone());
                    }
                    parts.message.insert("usage".into(), Value::Object(whole));
                }
            }
            _ => {}
        }
    }

    /// Whether the stream's last event has arrived, so the answer is whole: Ollama's
    /// `"done": true` line, OpenAI's `data: [DONE]`, a Responses stream's
    /// `response.completed` (or `incomplete`, `failed`), Anthropic's `message_stop`, or
    /// an error. A caller who has read that event holds the complete answer.
    pub fn ended(&self) -> bool {
        self.ended
    }

    /// The error line the stream carried, if any.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// The aggregated object, or `None` when no chunk arrived.
    pub fn finish(mut self) -> Option<String> {
        if !self.pending.is_empty() {
            let rest = std::mem::take(&mut self.pending);
            self.line(&rest);
        }
        if let Some(parts) = self.openai {
            return Some(openai_object(parts).to_string());
        }
        if let Some(response) = self.responses_final {
            return Some(response.to_string());
        }
        if let Some(parts) = self.anthropic {
            return Some(anthropic_message(parts).to_string());
        }
        let mut last = self.last?;
        if last.contains_key("response") {
            last.insert("response".into(), Value::String(self.response));
        }
        if !self.thinking.is_empty() {
            last.insert("thinking".into(), Value::String(self.thinking));
        }
        if let Some(Value::Object(message)) = last.get_mut("message") {
            message.insert("content".into(), Value::String(self.content));
            if !self.message_thinking.is_empty() {
                message.insert("thinking".into(), Value::String(self.message_thinking));
            }
            if !self.tool_calls.is_empty() {
                message.insert("tool_calls".into(), Value::Array(self.tool_calls));
            }
        }
        Some(Value::Object(last).to_string())
    }
}

/// The message as Ollama's non-streaming `/v1/messages` writes it: content, then
/// `stop_reason` (and `stop_sequence`) before `usage`.
fn anthropic_message(parts: AnthropicParts) -> Value {
    let mut message = parts.message;
    let usage = message.remove("usage");
    let content: Vec<Value> = parts
        .blocks
        .into_iter()
        .map(|(mut block, input)| {
            if !input.is_empty() {
                let parsed = serde_json::from_str(&input).unwrap_or(Value::String(input));
                block.insert("input".into(), parsed);
            }
            Value::Object(block)
        })
        .collect();
    let mut ordered = Map::new();
    for key in ["id", "type", "role", "model"] {
        if let Some(value) = message.remove(key) {
            ordered.insert(key.into(), value);
        }
    }
    ordered.insert("content".into(), Value::Array(content));
    message.remove("content");
    ordered.extend(message);
    if let Some(usage) = usage {
        ordered.insert("usage".into(), usage);
    }
    Value::Object(ordered)
}

fn openai_object(parts: OpenAiParts) -> Value {
    let mut object = Map::new();
    for key in ["id", "created", "model", "system_fingerprint"] {
        if let Some(value) = parts.first.get(key) {
            object.insert(key.into(), value.clone());
        }
    }
    let choice = if parts.chat {
        object.insert("object".into(), Value::String("chat.completion".into()));
        let mut message = Map::new();
        message.insert("role".into(), Value::String("assistant".into()));
        message.insert("content".into(), Value::String(parts.text));
        if !parts.reasoning.is_empty() {
            message.insert("reasoning".into(), Value::String(parts.reasoning));
        }
        if !parts.tool_calls.is_empty() {
            message.insert("tool_calls".into(), Value::Array(parts.tool_calls));
        }
        serde_json::json!({"index": 0, "message": message, "finish_reason": parts.finish_reason})
    } else {
        object.insert("object".into(), Value::String("text_completion".into()));
        serde_json::json!({"text": parts.text, "index": 0, "finish_reason": parts.finish_reason})
    };
    object.insert("choices".into(), Value::Array(vec![choice]));
    if !parts.usage.is_null() {
        object.insert("usage".into(), parts.usage);
    }
    Value::Object(object)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn chat_chunks_fold_into_one_message() {
        let mut aggregator = Aggregator::default();
        aggregator
            .push(br#"{"model":"m","message":{"role":"assistant","content":"Hel"},"done":false}"#);
        aggregator.push(b"\n{\"model\":\"m\",\"message\":{\"role\":\"assistant\",\"content\":\"lo\",\"thinking\":\"hm\"},\"done\":false}\n");
        aggregator.push(br#"{"model":"m","message":{"role":"assistant","content":"","tool_calls":[{"function":{"name":"f","arguments":{}}}]},"done":false}"#);
        aggregator.push(b"\n");
        aggregator.push(br#"{"model":"m","message":{"role":"assistant","content":""},"done":true,"done_reason":"stop","eval_count":3}"#);
        assert_eq!(aggregator.error(), None);
        let result: Value = serde_json::from_str(&aggregator.finish().unwrap()).unwrap();
        assert_eq!(result["message"]["content"], "Hello");
        assert_eq!(result["message"]["thinking"], "hm");
        assert_eq!(result["message"]["tool_calls"][0]["function"]["name"], "f");
        assert_eq!(result["done"], true);
        assert_eq!(result["eval_count"], 3);
    }

    #[test]
    fn openai_sse_chunks_fold_into_one_completion() {
        let mut aggregator = Aggregator::default();
        aggregator.push(b"data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":5,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n");
        aggregator.push(b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\" there\"},\"finish_reason\":null}]}\n\n");
        aggregator.push(b"data: {\"id\":\"chatcmpl-1\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: {\"id\":\"chatcmpl-1\",\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\ndata: [DONE]\n\n");
        let result: Value = serde_json::from_str(&aggregator.finish().unwrap()).unwrap();
        assert_eq!(result["object"], "chat.completion");
        assert_eq!(result["id"], "chatcmpl-1");
        assert_eq!(result["choices"][0]["message"]["content"], "Hi there");
        assert_eq!(result["choices"][0]["finish_reason"], "stop");
        assert_eq!(result["usage"]["total_tokens"], 3);
    }

    #[test]
    fn responses_events_keep_the_completed_response() {
        let mut aggregator = Aggregator::default();
        aggregator.push(b"event: response.created\ndata: {\"response\":{\"id\":\"resp_1\",\"status\":\"in_progress\",\"output\":[]},\"sequence_number\":0,\"type\":\"response.created\"}\n\n");
        aggregator.push(b"event: response.output_text.delta\ndata: {\"delta\":\"Hi\",\"item_id\":\"msg_1\",\"sequence_number\":1,\"type\":\"response.output_text.delta\"}\n\nevent: response.completed\n");
        aggregator.push(b"data: {\"response\":{\"id\":\"resp_1\",\"status\":\"completed\",\"output\":[{\"type\":\"message\",\"content\":[{\"type\":\"output_text\",\"text\":\"Hi\"}]}],\"usage\":{\"output_tokens\":1}},\"sequence_number\":2,\"type\":\"response.completed\"}\n\n");
        assert_eq!(aggregator.error(), None);
        let result: Value = serde_json::from_str(&aggregator.finish().unwrap()).unwrap();
        assert_eq!(result["status"], "completed");
        assert_eq!(result["output"][0]["content"][0]["text"], "Hi");
        assert_eq!(result["usage"]["output_tokens"], 1);
    }

    #[test]
    fn anthropic_events_fold_into_one_message() {
        let mut aggregator = Aggregator::default();
        for (event, data) in [
            (
                "message_start",
                json!({"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"m","content":[],"usage":{"input_tokens":3,"output_tokens":0}}}),
            ),
            (
                "content_block_start",
                json!({"type":"content_block_start","index":0,"content_block":{"type":"thinking","thinking":""}}),
            ),
            (
                "content_block_delta",
                json!({"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"hm"}}),
            ),
            (
                "content_block_stop",
                json!({"type":"content_block_stop","index":0}),
            ),
            (
                "content_block_start",
                json!({"type":"content_block_start","index":1,"content_block":{"type":"text","text":""}}),
            ),
            (
                "content_block_delta",
                json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"Hel"}}),
            ),
            (
                "content_block_delta",
                json!({"type":"content_block_delta","index":1,"delta":{"type":"text_delta","text":"lo"}}),
            ),
            (
                "content_block_stop",
                json!({"type":"content_block_stop","index":1}),
            ),
            (
                "content_block_start",
                json!({"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"call_1","name":"f","input":{}}}),
            ),
            (
                "content_block_delta",
                json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}),
            ),
            (
                "content_block_delta",
                json!({"type":"content_block_delta","index":2,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}),
            ),
            (
                "content_block_stop",
                json!({"type":"content_block_stop","index":2}),
            ),
            (
                "message_delta",
                json!({"type":"message_delta","delta":{"stop_reason":"tool_use"},"usage":{"input_tokens":5,"output_tokens":7}}),
            ),
            ("message_stop", json!({"type":"message_stop"})),
        ] {
            aggregator.push(format!("event: {event}\ndata: {data}\n\n").as_bytes());
        }
        assert_eq!(aggregator.error(), None);
        let result: Value = serde_json::from_str(&aggregator.finish().unwrap()).unwrap();
        assert_eq!(
            result,
            json!({"id":"msg_1","type":"message","role":"assistant","model":"m","content":[
                {"type":"thinking","thinking":"hm"},
                {"type":"text","text":"Hello"},
                {"type":"tool_use","id":"call_1","name":"f","input":{"city":"Paris"}}],
                "stop_reason":"tool_use","usage":{"input_tokens":5,"output_tokens":7}})
        );
        let keys: Vec<&String> = result.as_object().unwrap().keys().collect();
        assert_eq!(
            keys,
            [
                "id",
                "type",
                "role",
                "model",
                "content",
                "stop_reason",
                "usage"
            ]
        );

        let mut failing = Aggregator::default();
        failing.push(b"event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"api_error\",\"message\":\"runner crashed\"}}\n\n");
        assert_eq!(failing.error(), Some("runner crashed"));
    }

    #[test]
    fn generate_chunks_and_error_lines() {
        let mut aggregator = Aggregator::default();
        aggregator.push(b"{\"response\":\"a\",\"done\":false}\n{\"response\":\"b\",\"done\":true,\"context\":[1]}\n");
        let result: Value = serde_json::from_str(&aggregator.finish().unwrap()).unwrap();
        assert_eq!(result, json!({"response":"ab","done":true,"context":[1]}));
        let mut failing = Aggregator::default();
        failing.push(b"{\"response\":\"a\",\"done\":false}\n{\"error\":\"runner crashed\"}\n");
        assert_eq!(failing.error(), Some("runner crashed"));
        assert!(Aggregator::default().finish().is_none());
    }
}
