//! Deterministic content: reply tokens, thinking, tool-call arguments, structured
//! output, embeddings and digests, all derived from the request by a stable hash.
//!
//! The same request always gets the same answer, so tests can assert on replies and
//! compare a streamed reply with a non-streamed one byte for byte.

use serde_json::{Map, Value, json};

const WORDS: [&str; 64] = [
    "the",
    "model",
    "answers",
    "with",
    "a",
    "short",
    "and",
    "steady",
    "reply",
    "about",
    "your",
    "question",
    "while",
    "weights",
    "stay",
    "loaded",
    "on",
    "one",
    "busy",
    "GPU",
    "so",
    "every",
    "queue",
    "drains",
    "before",
    "it",
    "swaps",
    "tokens",
    "flow",
    "in",
    "order",
    "from",
    "prompt",
    "to",
    "answer",
    "under",
    "load",
    "time",
    "is",
    "paid",
    "once",
    "per",
    "batch",
    "not",
    "request",
    "which",
    "keeps",
    "latency",
    "low",
    "for",
    "all",
    "clients",
    "that",
    "share",
    "this",
    "box",
    "today",
    "simulated",
    "text",
    "here",
    "stays",
    "same",
    "each",
    "run",
];

/// FNV-1a over bytes: stable across platforms and Rust versions, unlike `DefaultHasher`.
pub fn stable_hash(parts: &[&str]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for byte in part.as_bytes().iter().chain(std::iter::once(&0xff)) {
            hash ^= u64::from(*byte);
            hash = hash.wrapping_mul(0x0100_0000_01b3);
        }
    }
    hash
}

/// A small deterministic generator (splitmix64).
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn word(&mut self) -> &'static str {
        WORDS[(self.next_u64() % WORDS.len() as u64) as usize]
    }
}

/// `count` reply tokens for this seed: words, the first capitalised, each later one
/// with its leading space (as real tokenizers emit them), ending with a period.
pub fn reply_tokens(seed: u64, count: usize) -> Vec<String> {
    let mut rng = Rng::new(seed);
    (0..count)
        .map(|i| {
            let word = rng.word();
            let mut token = if i == 0 {
                let mut chars = word.chars();
                chars
                    .next()
                    .map(|c| c.to_ascii_uppercase().to_string() + chars.as_str())
                    .unwrap_or_default()
            } else {
                format!(" {word}")
            };
            if i + 1 == count {
                token.push('.');
            }
            token
        })
        .collect()
}

/// A value for a JSON-schema-typed slot: used for structured output and tool arguments.
pub fn value_for_schema(schema: &Value, rng: &mut Rng) -> Value {
    let kind = schema
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("string");
    if let Some(choices) = schema.get("enum").and_then(Value::as_array)
        && !choices.is_empty()
    {
        return choices[(rng.next_u64() % choices.len() as u64) as usize].clone();
    }
    match kind {
        "integer" => json!(rng.next_u64() % 100),
        "number" => json!((rng.next_u64() % 10_000) as f64 / 100.0),
        "boolean" => json!(rng.next_u64().is_multiple_of(2)),
        "array" => {
            let item = schema
                .get("items")
                .cloned()
                .unwrap_or(json!({"type":"string"}));
            json!([value_for_schema(&item, rng), value_for_schema(&item, rng)])
        }
        "object" => object_for_schema(schema, rng),
        "null" => Value::Null,
        _ => json!(format!("{} {}", rng.word(), rng.word())),
    }
}

/// An object with every property the schema declares, each filled by type.
pub fn object_for_schema(schema: &Value, rng: &mut Rng) -> Value {
    let mut object = Map::new();
    if let Some(properties) = schema.get("properties").and_then(Value::as_object) {
        for (name, property) in properties {
            object.insert(name.clone(), value_for_schema(property, rng));
        }
    }
    Value::Object(object)
}

/// A deterministic unit vector (L2 norm 1) of `dim` components for this text.
pub fn embedding(model: &str, text: &str, dim: usize) -> Vec<f32> {
    let mut rng = Rng::new(stable_hash(&[model, text]));
    let raw: Vec<f64> = (0..dim).map(|_| rng.next_f64() * 2.0 - 1.0).collect();
    let norm = raw
        .iter()
        .map(|x| x * x)
        .sum::<f64>()
        .sqrt()
        .max(f64::MIN_POSITIVE);
    raw.iter().map(|x| (x / norm) as f32).collect()
}

/// Scales a unit vector back to a plausible raw magnitude, as `/api/embeddings` returns.
pub fn unnormalized(vector: &[f32]) -> Vec<f64> {
    vector.iter().map(|x| f64::from(*x) * 17.5).collect()
}

/// A 64-hex-digit digest for a model name.
pub fn digest(name: &str) -> String {
    let mut rng = Rng::new(stable_hash(&["digest", name]));
    (0..4).map(|_| format!("{:016x}", rng.next_u64())).collect()
}

/// Token ids for a generate reply's `context` field.
pub fn context_ids(prompt_tokens: usize, reply: &[String]) -> Vec<u32> {
    let mut ids: Vec<u32> = (0..prompt_tokens.min(64))
        .map(|i| 128_000 + i as u32)
        .collect();
    ids.extend(reply.iter().map(|t| (stable_hash(&[t]) % 32_000) as u32));
    ids
}

/// A generated token's log probability in Ollama's form (api/types.go `Logprob`:
/// `token`, `logprob`, `bytes`, and `top_logprobs` when `top` > 0, the token itself
/// first). Derived from the token and its position, so replies stay deterministic.
pub fn logprob(token: &str, position: usize, top: usize) -> Value {
    let mut rng = Rng::new(stable_hash(&["logprob", token, &position.to_string()]));
    let chosen = -(rng.next_f64() * 2.0);
    let mut entry = token_logprob(token, chosen);
    if top > 0 {
        let mut alternatives = vec![token_logprob(token, chosen)];
        let mut value = chosen;
        for _ in 1..top {
            value -= 0.5 + rng.next_f64();
            alternatives.push(token_logprob(&format!(" {}", rng.word()), value));
        }
        entry["top_logprobs"] = Value::Array(alternatives);
    }
    entry
}

/// `{"token","logprob","bytes"}`; `bytes` is left out for an empty token, as Go's
/// omitempty leaves out a nil slice (server/logprob.go `stringToByteInts`).
fn token_logprob(token: &str, logprob: f64) -> Value {
    let mut entry = json!({"token": token, "logprob": logprob});
    if !token.is_empty() {
        entry["bytes"] = json!(token.as_bytes());
    }
    entry
}

/// How many tokens a piece of prompt text counts for.
pub fn count_tokens(text: &str) -> usize {
    text.split_whitespace().count()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replies_are_deterministic_and_seed_dependent() {
        let a = reply_tokens(7, 12);
        assert_eq!(a, reply_tokens(7, 12));
        assert_ne!(a, reply_tokens(8, 12));
        assert_eq!(a.len(), 12);
        assert!(a[0].chars().next().unwrap().is_uppercase());
        assert!(a[1].starts_with(' '));
        assert!(a[11].ends_with('.'));
    }

    #[test]
    fn logprobs_have_ollamas_keys() {
        let entry = logprob(" sky", 3, 2);
        assert_eq!(entry, logprob(" sky", 3, 2));
        assert_eq!(entry["token"], " sky");
        assert_eq!(entry["bytes"], json!([32, 115, 107, 121]));
        assert!(entry["logprob"].as_f64().unwrap() <= 0.0);
        let top = entry["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert_eq!(top[0]["logprob"], entry["logprob"]);
        assert!(top[1]["logprob"].as_f64() < top[0]["logprob"].as_f64());
        assert!(logprob("x", 0, 0).get("top_logprobs").is_none());
    }

    #[test]
    fn embeddings_are_unit_vectors() {
        let v = embedding("m", "hello", 768);
        assert_eq!(v.len(), 768);
        let norm: f64 = v
            .iter()
            .map(|x| f64::from(*x) * f64::from(*x))
            .sum::<f64>()
            .sqrt();
        assert!((norm - 1.0).abs() < 1e-5);
        assert_eq!(v, embedding("m", "hello", 768));
        assert_ne!(v, embedding("m", "hullo", 768));
    }

    #[test]
    fn schema_objects_have_every_property() {
        let schema = json!({"type":"object","properties":{
            "name":{"type":"string"},"age":{"type":"integer"},"ok":{"type":"boolean"},
            "tags":{"type":"array","items":{"type":"string"}},"kind":{"enum":["a","b"]}}});
        let value = object_for_schema(&schema, &mut Rng::new(1));
        let object = value.as_object().unwrap();
        assert_eq!(object.len(), 5);
        assert!(object["name"].is_string());
        assert!(object["age"].is_u64());
        assert!(object["ok"].is_boolean());
        assert_eq!(object["tags"].as_array().unwrap().len(), 2);
        assert!(["a", "b"].contains(&object["kind"].as_str().unwrap()));
        assert_eq!(digest("x").len(), 64);
    }
}
