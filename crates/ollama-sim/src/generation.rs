//! The generation engine shared by the native and OpenAI-compatible endpoints.
//!
//! [`plan`] decides, purely and deterministically, what a request's answer is: thinking
//! tokens, content tokens or a tool call, and why it stopped. [`run`] then plays that
//! plan out over time at the model's token rate while the request holds its [`Lease`],
//! yielding [`Event`]s that each endpoint turns into its own wire format.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use serde_json::{Value, json};

use crate::residency::Lease;
use crate::spec::ModelSpec;
use crate::stats::Stats;
use crate::text::{self, Rng};

/// Reply length when the request does not limit it with `num_predict`.
pub const DEFAULT_REPLY_TOKENS: usize = 24;
const THINKING_TOKENS: usize = 8;

/// Structured output requested with `format`.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// `"json"`: any JSON object.
    Json,
    /// A JSON schema object the answer must follow.
    Schema(Value),
}

/// What the engine needs to know about one request.
#[derive(Debug, Clone)]
pub struct GenerationRequest {
    pub spec: Arc<ModelSpec>,
    /// All prompt text (messages, system, prompt) the answer is derived from.
    pub seed_text: String,
    pub prompt_tokens: usize,
    pub num_predict: Option<i64>,
    pub reply_tokens: usize,
    pub think: bool,
    pub format: Option<Format>,
    /// Tools offered; the first one is called when `call_tool` is set.
    pub tools: Vec<Value>,
    pub call_tool: bool,
}

/// One piece of output.
#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Thinking(String),
    Content(String),
    /// Native-form tool calls: `{"id","function":{"index","name","arguments":{...}}}`.
    ToolCalls(Vec<Value>),
}

/// The whole answer, decided before any time passes.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub pieces: Vec<Piece>,
    /// `stop` or `length`.
    pub done_reason: &'static str,
}

/// The final statistics, in nanoseconds as Ollama reports them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub done_reason: &'static str,
    pub total_duration: u64,
    pub load_duration: u64,
    pub prompt_eval_count: u64,
    pub prompt_eval_duration: u64,
    pub eval_count: u64,
    pub eval_duration: u64,
}

/// What [`run`] yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Piece(Piece),
    Done(Summary),
    /// The drop fault fired: the connection must be cut now.
    Dropped,
}

/// Decides the answer for a request.
pub fn plan(request: &GenerationRequest) -> Plan {
    let seed = text::stable_hash(&[&request.spec.display_name(), &request.seed_text]);
    let mut pieces = Vec::new();
    if request.think {
        for token in text::reply_tokens(seed ^ 0x0074_6869_6e6b, THINKING_TOKENS) {
            pieces.push(Piece::Thinking(token));
        }
    }
    if request.call_tool
        && let Some(tool) = request.tools.first()
    {
        pieces.push(Piece::ToolCalls(vec![tool_call(tool, seed)]));
        return Plan {
            pieces,
            done_reason: "stop",
        };
    }
    if let Some(format) = &request.format {
        let mut rng = Rng::new(seed);
        let value = match format {
            Format::Json => json!({ "response": text::reply_tokens(seed, 6).concat() }),
            Format::Schema(schema) => text::object_for_schema(schema, &mut rng),
        };
        let rendered = value.to_string();
        let chars: Vec<char> = rendered.chars().collect();
        for chunk in chars.chunks(6) {
            pieces.push(Piece::Content(chunk.iter().collect()));
        }
        return Plan {
            pieces,
            done_reason: "stop",
        };
    }
    let natural = request.reply_tokens.max(1);
    let (count, done_reason) = match request.num_predict {
        Some(limit) if limit >= 0 && (limit as usize) < natural => (limit as usize, "length"),
        _ => (natural, "stop"),
    };
    pieces.extend(
        text::reply_tokens(seed, count)
            .into_iter()
            .map(Piece::Content),
    );
    Plan {
        pieces,
        done_reason,
    }
}

fn tool_call(tool: &Value, seed: u64) -> Value {
    let function = tool.get("function").unwrap_or(tool);
    let name = function
        .get("name")
        .and_then(Value::as_str)
        .unwrap_or("tool");
    let parameters = function.get("parameters").cloned().unwrap_or(json!({}));
    let arguments = text::object_for_schema(&parameters, &mut Rng::new(seed));
    let mut rng = Rng::new(seed ^ 0x6964);
    let id: String = (0..8)
        .map(|_| {
            let n = (rng.next_u64() % 36) as u8;
            (if n < 10 { b'0' + n } else { b'a' + n - 10 }) as char
        })
        .collect();
    json!({
        "id": format!("call_{id}"),
        "function": {"index": 0, "name": name, "arguments": arguments},
    })
}

/// How many tokens a piece costs in time and in `eval_count`.
fn token_cost(piece: &Piece) -> u64 {
    match piece {
        Piece::ToolCalls(calls) => 4 * calls.len() as u64,
        _ => 1,
    }
}

/// Makes the response body wait once, so the server writes out what it holds before the
/// connection is cut: a body that is never pending is buffered whole, and the cut
/// would discard it (on a busy machine every piece can be due at once).
pub async fn flush_point() {
    tokio::task::yield_now().await;
}

/// Plays `plan` out at the model's token rate. The lease (and the caller's in-flight
/// guard) live inside the stream, so dropping the stream, as a disconnecting client
/// does, frees the slot at once. With `drop_after`, the stream ends with
/// [`Event::Dropped`] after that many pieces.
pub fn run<G: Send + 'static>(
    plan: Plan,
    request: &GenerationRequest,
    lease: Lease,
    arrived: Instant,
    drop_after: Option<usize>,
    guard: G,
) -> impl Stream<Item = Event> + Send + 'static {
    let tps = request.spec.tps;
    let prompt_tokens = request.prompt_tokens as u64;
    async_stream::stream! {
        let _guard = guard;
        let started = tokio::time::Instant::now();
        let mut spent: u64 = 0;
        for (index, piece) in plan.pieces.into_iter().enumerate() {
            if drop_after == Some(index) {
                flush_point().await;
                yield Event::Dropped;
                return;
            }
            spent += token_cost(&piece);
            if tps.is_finite() {
                tokio::time::sleep_until(started + Duration::from_secs_f64(spent as f64 / tps)).await;
            }
            yield Event::Piece(piece);
        }
        if drop_after.is_some() {
            flush_point().await;
            yield Event::Dropped;
            return;
        }
        let eval_duration = nominal_ns(spent, tps);
        let prompt_eval_duration = nominal_ns(prompt_tokens, tps * 20.0);
        let summary = Summary {
            done_reason: plan.done_reason,
            total_duration: (arrived.elapsed().as_nanos() as u64).max(1),
            load_duration: (lease.load_duration.as_nanos() as u64).max(1),
            prompt_eval_count: prompt_tokens,
            prompt_eval_duration,
            eval_count: spent,
            eval_duration,
        };
        drop(lease);
        yield Event::Done(summary);
    }
}

fn nominal_ns(tokens: u64, rate: f64) -> u64 {
    if rate.is_finite() {
        ((tokens as f64 / rate) * 1e9) as u64
    } else {
        tokens * 1_000
    }
    .max(1)
}

/// Counts a request as in flight for as long as it is alive.
pub struct InFlight {
    stats: Arc<Stats>,
    model: String,
}

impl InFlight {
    pub fn new(stats: Arc<Stats>, model: String) -> InFlight {
        stats.in_flight_delta(&model, 1);
        InFlight { stats, model }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.stats.in_flight_delta(&self.model, -1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> GenerationRequest {
        GenerationRequest {
            spec: Arc::new(ModelSpec::chat("m")),
            seed_text: "hello".into(),
            prompt_tokens: 1,
            num_predict: None,
            reply_tokens: DEFAULT_REPLY_TOKENS,
            think: false,
            format: None,
            tools: vec![],
            call_tool: false,
        }
    }

    #[test]
    fn num_predict_truncates_with_length() {
        let full = plan(&request());
        assert_eq!(full.pieces.len(), DEFAULT_REPLY_TOKENS);
        assert_eq!(full.done_reason, "stop");
        let short = plan(&GenerationRequest {
            num_predict: Some(5),
            ..request()
        });
        assert_eq!(short.pieces.len(), 5);
        assert_eq!(short.done_reason, "length");
        assert_eq!(full.pieces[..4], short.pieces[..4]);
    }

    #[test]
    fn thinking_then_content_and_tool_calls() {
        let thinking = plan(&GenerationRequest {
            think: true,
            ..request()
        });
        assert!(matches!(thinking.pieces[0], Piece::Thinking(_)));
        let tools = vec![json!({"type":"function","function":{"name":"get_weather",
            "parameters":{"type":"object","properties":{"city":{"type":"string"}},"required":["city"]}}})];
        let call = plan(&GenerationRequest {
            tools,
            call_tool: true,
            ..request()
        });
        let Piece::ToolCalls(calls) = &call.pieces[0] else {
            panic!("expected a tool call, got {call:?}");
        };
        assert_eq!(calls[0]["function"]["name"], "get_weather");
        assert!(calls[0]["function"]["arguments"]["city"].is_string());
        assert!(calls[0]["id"].as_str().unwrap().starts_with("call_"));
    }

    #[test]
    fn schema_format_gives_parseable_json() {
        let schema = json!({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}}});
        let planned = plan(&GenerationRequest {
            format: Some(Format::Schema(schema)),
            ..request()
        });
        let text: String = planned
            .pieces
            .iter()
            .map(|p| match p {
                Piece::Content(c) => c.as_str(),
                _ => "",
            })
            .collect();
        let value: Value = serde_json::from_str(&text).unwrap();
        assert!(value["name"].is_string() && value["age"].is_u64());
    }
}
