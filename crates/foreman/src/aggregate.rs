//! Turns a streamed NDJSON answer into the single object Ollama would have returned
//! with `"stream": false`, so every finished job has one result to store and serve.
//!
//! Ollama's rule: the final `done` chunk, with the text fields (`response`,
//! `thinking`, `message.content`, `message.thinking`) concatenated over all chunks and
//! `message.tool_calls` gathered. An `{"error": ...}` line means the job failed
//! mid-stream.

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
        let Ok(Value::Object(object)) = serde_json::from_slice::<Value>(line) else {
            return;
        };
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
