//! The generation engine shared by the native and OpenAI-compatible endpoints.
//!
//! [`plan`] decides, purely and deterministically, what a request's answer is: thinking
//! tokens, content tokens or a tool call, and why it stopped. [`run`] then plays that
//! plan out over time while the request holds its [`Lease`]: first the prompt's
//! evaluation at the model's prompt rate, then each token at the per-stream rate the
//! model's batching curve gives for the streams of that model generating at that
//! moment. It yields [`Event`]s that each endpoint turns into its own wire format.
//!
//! The reported durations are computed from those rates, not measured, so they are
//! deterministic for a given request and count of busy streams; `total_duration` is
//! measured and never less than load, prompt evaluation and generation together.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::Stream;
use serde_json::{Value, json};

use crate::batching::Batching;
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
    /// Prompt tokens evaluated, after truncation to the context window.
    pub prompt_tokens: usize,
    pub num_predict: Option<i64>,
    pub reply_tokens: usize,
    pub think: bool,
    pub format: Option<Format>,
    /// Tools offered; the first one is called when `call_tool` is set.
    pub tools: Vec<Value>,
    pub call_tool: bool,
    /// `format` on a thinking model in a chat: Ollama lets the model think
    /// unconstrained, then starts a second completion, constrained, for the answer
    /// (server/routes.go `ChatHandler`, structured outputs state).
    pub format_after_thinking: bool,
    /// Where the streams of each model are counted.
    pub batching: Arc<Batching>,
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
    /// The index of the first piece of a second completion (structured output after
    /// thinking): the pieces before it become part of that completion's prompt, and
    /// the final statistics are that completion's.
    pub restart_at: Option<usize>,
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
///
/// `num_predict` caps every generated token, thinking included, as the runner's
/// `n_predict` does (llm/llama_server.go `Completion`); a negative value or 0 (which
/// Ollama leaves out of the runner request, `n_predict,omitempty`) does not cap. A
/// second completion for structured output after thinking gets its own budget.
pub fn plan(request: &GenerationRequest) -> Plan {
    let seed = text::stable_hash(&[&request.spec.display_name(), &request.seed_text]);
    let budget = request
        .num_predict
        .filter(|limit| *limit > 0)
        .map(|limit| limit as usize);
    let mut left = budget;
    let mut pieces = Vec::new();
    let mut restart_at = None;
    let cut = |pieces: Vec<Piece>, restart_at| Plan {
        pieces,
        done_reason: "length",
        restart_at,
    };
    if request.think {
        for token in text::reply_tokens(seed ^ 0x0074_6869_6e6b, THINKING_TOKENS) {
            if left == Some(0) {
                return cut(pieces, None);
            }
            left = left.map(|n| n - 1);
            pieces.push(Piece::Thinking(token));
        }
        if request.format.is_some() && request.format_after_thinking {
            restart_at = Some(pieces.len());
            left = budget;
        }
    }
    if request.call_tool
        && let Some(tool) = request.tools.first()
    {
        let call = Piece::ToolCalls(vec![tool_call(tool, seed)]);
        if left.is_some_and(|n| (n as u64) < token_cost(&call)) {
            return cut(pieces, restart_at);
        }
        pieces.push(call);
        return Plan {
            pieces,
            done_reason: "stop",
            restart_at,
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
            if left == Some(0) {
                return cut(pieces, restart_at);
            }
            left = left.map(|n| n - 1);
            pieces.push(Piece::Content(chunk.iter().collect()));
        }
        return Plan {
            pieces,
            done_reason: "stop",
            restart_at,
        };
    }
    let natural = request.reply_tokens.max(1);
    let (count, done_reason) = match left {
        Some(limit) if limit < natural => (limit, "length"),
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
        restart_at,
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

/// Plays `plan` out: the prompt's evaluation, then each token at the per-stream rate
/// for the streams of the model generating at that moment. The lease (and the
/// caller's in-flight guard) live inside the stream, so dropping the stream, as a
/// disconnecting client does, frees the slot at once. With `drop_after`, the stream
/// ends with [`Event::Dropped`] after that many pieces.
pub fn run<G: Send + 'static>(
    plan: Plan,
    request: &GenerationRequest,
    lease: Lease,
    arrived: Instant,
    drop_after: Option<usize>,
    guard: G,
) -> impl Stream<Item = Event> + Send + 'static {
    let spec = request.spec.clone();
    let batching = request.batching.clone();
    let prompt_tokens = request.prompt_tokens as u64;
    async_stream::stream! {
        let _guard = guard;
        let model = spec.display_name();
        let _busy = batching.enter(&model);
        let started = tokio::time::Instant::now();
        let prompt_rate = spec.prompt_rate();
        // Nanoseconds from `started` at which the next piece is due.
        let mut due = nominal_ns(prompt_tokens, prompt_rate);
        pace(started, due, prompt_rate).await;
        let (mut prompt_eval_count, mut prompt_eval_duration) = (prompt_tokens, due);
        let (mut eval_count, mut eval_duration) = (0u64, 0u64);
        for (index, piece) in plan.pieces.into_iter().enumerate() {
            if drop_after == Some(index) {
                flush_point().await;
                yield Event::Dropped;
                return;
            }
            if plan.restart_at == Some(index) {
                // The second completion evaluates the thinking as part of its prompt.
                let extra = nominal_ns(eval_count, prompt_rate);
                prompt_eval_count += eval_count;
                prompt_eval_duration += extra;
                due += extra;
                (eval_count, eval_duration) = (0, 0);
            }
            let tokens = token_cost(&piece);
            let cost = tokens * ns_per_token(spec.stream_tps(batching.busy(&model)));
            due += cost;
            eval_count += tokens;
            eval_duration += cost;
            pace(started, due, spec.tps).await;
            yield Event::Piece(piece);
        }
        if drop_after.is_some() {
            flush_point().await;
            yield Event::Dropped;
            return;
        }
        let load_duration = (lease.load_duration.as_nanos() as u64).max(1);
        let floor = load_duration + prompt_eval_duration + eval_duration;
        let summary = Summary {
            done_reason: plan.done_reason,
            total_duration: (arrived.elapsed().as_nanos() as u64).max(floor),
            load_duration,
            prompt_eval_count,
            prompt_eval_duration,
            eval_count,
            eval_duration,
        };
        lease.completed();
        drop(lease);
        yield Event::Done(summary);
    }
}

/// Sleeps until `due` nanoseconds after `started`, unless the rate means no pacing.
async fn pace(started: tokio::time::Instant, due: u64, rate: f64) {
    if rate.is_finite() {
        tokio::time::sleep_until(started + Duration::from_nanos(due)).await;
    }
}

/// Whole nanoseconds per token at `rate` tokens per second; a nominal microsecond
/// when the rate is unbounded.
pub fn ns_per_token(rate: f64) -> u64 {
    if rate.is_finite() {
        ((1e9 / rate).round() as u64).max(1)
    } else {
        1_000
    }
}

fn nominal_ns(tokens: u64, rate: f64) -> u64 {
    tokens * ns_per_token(rate)
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
            format_after_thinking: false,
            batching: Arc::default(),
        }
    }

    fn content(plan: &Plan) -> String {
        plan.pieces
            .iter()
            .map(|p| match p {
                Piece::Content(c) => c.as_str(),
                _ => "",
            })
            .collect()
    }

    #[test]
    fn num_predict_caps_thinking_tokens_too() {
        // llm/llama_server.go Completion: n_predict bounds every generated token, and
        // the thinking is generated text like any other.
        let thinking = GenerationRequest {
            think: true,
            num_predict: Some(6),
            ..request()
        };
        let planned = plan(&thinking);
        assert_eq!(planned.pieces.len(), 6);
        assert!(
            planned
                .pieces
                .iter()
                .all(|p| matches!(p, Piece::Thinking(_)))
        );
        assert_eq!(planned.done_reason, "length");
        let zero = plan(&GenerationRequest {
            num_predict: Some(0),
            ..request()
        });
        assert_eq!(
            zero.pieces.len(),
            DEFAULT_REPLY_TOKENS,
            "0 is left out of the runner request (n_predict,omitempty): no cap"
        );
    }

    #[test]
    fn num_predict_cuts_structured_output() {
        let schema = json!({"type":"object","properties":{"name":{"type":"string"},"age":{"type":"integer"}}});
        let full = plan(&GenerationRequest {
            format: Some(Format::Schema(schema.clone())),
            ..request()
        });
        let short = plan(&GenerationRequest {
            format: Some(Format::Schema(schema.clone())),
            num_predict: Some(2),
            ..request()
        });
        assert_eq!(short.pieces.len(), 2);
        assert_eq!(short.done_reason, "length");
        assert!(content(&full).starts_with(&content(&short)));
        assert!(serde_json::from_str::<Value>(&content(&short)).is_err());
        // A chat on a thinking model restarts for the structured answer, with a new budget.
        let restarted = plan(&GenerationRequest {
            format: Some(Format::Schema(schema)),
            think: true,
            format_after_thinking: true,
            num_predict: Some(THINKING_TOKENS as i64),
            ..request()
        });
        assert_eq!(restarted.restart_at, Some(THINKING_TOKENS));
        assert_eq!(restarted.pieces.len(), THINKING_TOKENS + full.pieces.len());
        assert_eq!(restarted.done_reason, "stop");
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
