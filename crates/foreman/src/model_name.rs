//! Model names compared the way Ollama compares them.
//!
//! Clients may say `Llama3.2`, `llama3.2` or `llama3.2:latest` for one model. The
//! queue groups jobs by this key and the inventory looks models up by it, while the
//! client's own spelling stays untouched in the payload sent upstream.

/// Lower-case, with `:latest` added when the name has no tag.
pub fn model_key(name: &str) -> String {
    let key = name.trim().to_ascii_lowercase();
    let last_segment = key.rsplit('/').next().unwrap_or(&key);
    match last_segment.contains(':') {
        true => key,
        false => key + ":latest",
    }
}

#[cfg(test)]
mod tests {
    use super::model_key;

    #[test]
    fn keys_ignore_case_and_default_the_tag() {
        assert_eq!(model_key("Llama3.2"), "llama3.2:latest");
        assert_eq!(model_key("llama3.2:3b"), "llama3.2:3b");
        assert_eq!(model_key("registry:5000/me/m"), "registry:5000/me/m:latest");
        assert_eq!(model_key("me/m:q4"), "me/m:q4");
    }
}

/// Inputs for the parsers' fuzz properties (here, the crate's one public module
/// every parser can reach): arbitrary JSON built from the words requests use, so
/// that random values land in the fields validators look at.
#[cfg(test)]
pub(crate) mod strategies {
    use proptest::prelude::*;
    use serde_json::{Map, Number, Value};

    /// Field names of Ollama's, OpenAI's and Anthropic's request types.
    const KEYS: &[&str] = &[
        "model",
        "messages",
        "prompt",
        "stream",
        "format",
        "keep_alive",
        "tools",
        "options",
        "think",
        "truncate",
        "shift",
        "logprobs",
        "top_logprobs",
        "context",
        "raw",
        "images",
        "template",
        "system",
        "suffix",
        "width",
        "height",
        "steps",
        "role",
        "content",
        "thinking",
        "tool_calls",
        "tool_name",
        "tool_call_id",
        "function",
        "name",
        "arguments",
        "index",
        "id",
        "type",
        "parameters",
        "properties",
        "required",
        "description",
        "enum",
        "anyOf",
        "items",
        "$defs",
        "stream_options",
        "include_usage",
        "max_tokens",
        "max_completion_tokens",
        "seed",
        "stop",
        "temperature",
        "top_p",
        "top_k",
        "response_format",
        "json_schema",
        "reasoning",
        "effort",
        "reasoning_effort",
        "input",
        "instructions",
        "output",
        "url",
        "image_url",
        "source",
        "num_ctx",
        "num_batch",
        "use_mmap",
        "num_gpu",
        "max_output_tokens",
        "text",
        "Model",
        "MESSAGES",
        "kind",
        "request",
        "priority",
        "webhook",
        "metadata",
        "stop_sequences",
        "include",
        "summary",
    ];

    /// String values with a meaning somewhere in a request.
    const WORDS: &[&str] = &[
        "",
        "json",
        "0",
        "0s",
        "-0s",
        "0m0s",
        "-1",
        "5m",
        "300",
        "high",
        "max",
        "low",
        "text",
        "image_url",
        "input_text",
        "input_file",
        "input_image",
        "message",
        "function_call",
        "function_call_output",
        "image",
        "base64",
        "tool_use",
        "user",
        "assistant",
        "tool",
        "data:image/png;base64,aGk=",
        "aGk=",
        "llama3.2:3b",
        "qwen2.5:0.5b",
        "nomic-embed-text",
        "chat",
        "generate",
        "json_object",
        "json_schema",
        "object",
        "string",
        "none",
        "../../sim/faults",
        "true",
        "null",
    ];

    /// A field name: mostly one a request type declares.
    pub fn key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(KEYS).prop_map(String::from),
            1 => any::<String>(),
        ]
    }

    /// A string: a meaningful word, a name-like text or anything.
    pub fn text() -> impl Strategy<Value = String> {
        prop_oneof![
            3 => prop::sample::select(WORDS).prop_map(String::from),
            1 => "[a-zA-Z0-9:._/ -]{0,16}",
            1 => any::<String>(),
        ]
    }

    /// A JSON number, small ones and the extremes.
    pub fn number() -> impl Strategy<Value = Value> {
        prop_oneof![
            (-3i64..=3).prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<u64>().prop_map(Value::from),
            any::<f64>().prop_filter_map("finite", |f| Number::from_f64(f).map(Value::Number)),
            Just(Value::from(0.0)),
            Just(Value::from(1.5)),
        ]
    }

    /// Any JSON value, a few levels deep.
    pub fn json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            number(),
            text().prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 64, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
                prop::collection::vec((key(), inner), 0..6)
                    .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
            ]
        })
    }

    /// A JSON object, as a request body's fields.
    pub fn object() -> impl Strategy<Value = Map<String, Value>> {
        prop::collection::vec((key(), json()), 0..8).prop_map(|pairs| pairs.into_iter().collect())
    }
}

/// Properties of [`model_key`] over arbitrary names.
#[cfg(test)]
mod fuzz {
    use super::model_key;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn keys_are_stable_and_ignore_ascii_case(name in any::<String>()) {
            let key = model_key(&name);
            prop_assert_eq!(model_key(&key), key.clone(), "a key is its own key");
            prop_assert_eq!(model_key(&name.to_ascii_uppercase()), key.clone());
            let last_segment = key.rsplit('/').next().unwrap_or(&key);
            prop_assert!(last_segment.contains(':'), "every key has a tag: {}", key);
        }

        #[test]
        fn a_tagged_name_keeps_its_tag(name in "[a-z0-9._/-]{1,20}", tag in "[a-z0-9._-]{1,10}") {
            let tagged = format!("{name}:{tag}");
            prop_assert_eq!(model_key(&tagged), tagged.clone());
            if !name.ends_with('/') && !name.contains(':') {
                prop_assert_eq!(model_key(&name), format!("{name}:latest"));
            }
        }
    }
}
