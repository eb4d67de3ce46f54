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
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(line) else {
            return;
        };
        if object.contains_key("choices") {
            self.openai_chunk(object);
            return;
        }
        if let Some(error) = object.get("error") {
            self.error = Some(
                error
                    .as_str()
                    .map_or_else(|| error.to_string(), str::to_string),
            );
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
