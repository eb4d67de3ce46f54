#![allow(dead_code)] // shared by two test crates; each uses a part
//! Checks answers against recorded answers of a real Ollama (the files beside this
//! one; `README.md` says where each comes from).
//!
//! The comparison is structural: the same keys at every level, the same JSON types
//! (integers apart from floats), timestamps in Go's RFC 3339 with nanoseconds, the
//! same values for the keys that name a state (`done`, `done_reason`, `role`,
//! `object`), the same order of stream events, and the same status and content type.
//! Text, numbers and times depend on the model and the clock, so their values are not
//! compared. Where an answer may differ from a recording, the case lists the path as
//! an [`Exception`] with the reason; an exception that no longer applies fails too.
//!
//! Used by the simulator's tests (`tests/sim/golden.rs`) and by foreman's
//! (`crates/foreman/tests/it/golden.rs`), which run the same cases through foreman.

use std::collections::BTreeSet;

use ollama_sim::{ModelSpec, SimConfig};
use serde_json::{Value, json};

/// The models the recorded requests name: `llama3.2` (with tools), `llama3.1` and
/// `all-minilm`.
pub fn sim_config() -> SimConfig {
    SimConfig {
        models: vec![
            ModelSpec::parse("llama3.2,load=10ms,tps=4000,tools").unwrap(),
            ModelSpec::parse("llama3.1,load=10ms,tps=4000").unwrap(),
            ModelSpec::parse("all-minilm,embed,load=10ms").unwrap(),
        ],
        max_loaded: 3,
        reply_tokens: 6,
        ..SimConfig::default()
    }
}

/// How an answer may differ from its recording at one path.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    /// The key is newer than the recording (present in today's `api/types.go`).
    Added,
    /// The recording has the key; today's Ollama leaves it out (`omitempty`).
    Omitted,
    /// An object whose keys depend on the model or the request.
    OpenMap,
}

/// A path (`message.tool_calls[].id`; `[]` stands for every element) where the
/// answer may differ from the recording, and why.
#[derive(Clone, Copy, Debug)]
pub struct Exception {
    pub path: &'static str,
    pub kind: Kind,
    /// Why the difference is expected; read by people, not by the check.
    pub why: &'static str,
}

const fn added(path: &'static str, why: &'static str) -> Exception {
    Exception {
        path,
        kind: Kind::Added,
        why,
    }
}

const fn omitted(path: &'static str, why: &'static str) -> Exception {
    Exception {
        path,
        kind: Kind::Omitted,
        why,
    }
}

const fn open_map(path: &'static str, why: &'static str) -> Exception {
    Exception {
        path,
        kind: Kind::OpenMap,
        why,
    }
}

/// Keys whose values name a state rather than carry content: they must be equal.
const STATE_KEYS: [&str; 4] = ["done", "done_reason", "role", "object"];

/// Keys holding times, checked for Go's RFC 3339 with nanoseconds.
const TIME_KEYS: [&str; 3] = ["created_at", "modified_at", "expires_at"];

const JSON: &str = "application/json; charset=utf-8";
const NDJSON: &str = "application/x-ndjson";
const OPENAI_JSON: &str = "application/json";

/// Since Ollama v0.1.3x the final chunk and the load answers carry `done_reason`
/// (`api/types.go`, `GenerateResponse`/`ChatResponse`); examples recorded before
/// that lack it.
const DONE_REASON_NEWER: Exception = added(
    "done_reason",
    "recorded before done_reason existed; api/types.go has it",
);

/// `ToolCall.ID` (`id,omitempty`) and `ToolCallFunction.Index` (`index`) are newer
/// than the July 2025 recordings.
const TOOL_CALL_ID_NEWER: Exception = added(
    "message.tool_calls[].id",
    "api/types.go ToolCall.ID, newer than the recording",
);
const TOOL_CALL_INDEX_NEWER: Exception = added(
    "message.tool_calls[].function.index",
    "api/types.go ToolCallFunction.Index, newer than the recording",
);
const TOOL_ARGUMENTS: Exception = open_map(
    "message.tool_calls[].function.arguments",
    "the arguments are the tool's own parameters",
);

/// One recorded exchange: the request to send and the recorded answer.
pub struct Case {
    pub name: &'static str,
    pub method: &'static str,
    pub path: &'static str,
    pub body: Option<Value>,
    pub status: u16,
    pub content_type: &'static str,
    /// The recorded answer: one JSON object, or NDJSON lines when `stream`.
    pub golden: &'static str,
    pub stream: bool,
    pub exceptions: Vec<Exception>,
}

fn weather_tool() -> Value {
    json!([{
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Get the weather in a given city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string", "description": "The city to get the weather for"}
                },
                "required": ["city"]
            }
        }
    }])
}

fn post(
    name: &'static str,
    path: &'static str,
    body: Value,
    golden: &'static str,
    stream: bool,
) -> Case {
    Case {
        name,
        method: "POST",
        path,
        body: Some(body),
        status: 200,
        content_type: if stream { NDJSON } else { JSON },
        golden,
        stream,
        exceptions: Vec::new(),
    }
}

fn get(name: &'static str, path: &'static str, golden: &'static str) -> Case {
    Case {
        name,
        method: "GET",
        path,
        body: None,
        status: 200,
        content_type: JSON,
        golden,
        stream: false,
        exceptions: Vec::new(),
    }
}

impl Case {
    fn except(mut self, exceptions: &[Exception]) -> Case {
        self.exceptions.extend_from_slice(exceptions);
        self
    }

    fn status(mut self, status: u16) -> Case {
        self.status = status;
        self
    }

    /// Answered through the `/v1` middleware's writers, which set plain
    /// `application/json` (middleware/openai.go).
    fn openai_writer(mut self) -> Case {
        self.content_type = OPENAI_JSON;
        self
    }
}

/// Every recorded exchange, in an order that needs no model loaded beforehand
/// except where a case loads it (`/api/ps` comes after the chats).
pub fn cases() -> Vec<Case> {
    let user = |text: &str| json!([{"role": "user", "content": text}]);
    vec![
        post(
            "generate, streamed",
            "/api/generate",
            json!({"model": "llama3.2", "prompt": "Why is the sky blue?"}),
            include_str!("generate-stream.ndjson"),
            true,
        )
        .except(&[DONE_REASON_NEWER]),
        post(
            "generate, not streamed",
            "/api/generate",
            json!({"model": "llama3.2", "prompt": "Why is the sky blue?", "stream": false}),
            include_str!("generate.json"),
            false,
        )
        .except(&[DONE_REASON_NEWER]),
        post(
            "generate, load a model",
            "/api/generate",
            json!({"model": "llama3.2"}),
            include_str!("generate-load.json"),
            false,
        )
        .except(&[DONE_REASON_NEWER]),
        post(
            "chat, streamed",
            "/api/chat",
            json!({"model": "llama3.2", "messages": user("why is the sky blue?")}),
            include_str!("chat-stream.ndjson"),
            true,
        )
        .except(&[
            DONE_REASON_NEWER,
            omitted(
                "message.images",
                "api/types.go Message.Images is images,omitempty; old Ollama sent null",
            ),
        ]),
        post(
            "chat, streamed, with tools",
            "/api/chat",
            json!({"model": "llama3.2", "messages": user("what is the weather in tokyo?"),
                   "tools": weather_tool(), "stream": true}),
            include_str!("chat-stream-tools.ndjson"),
            true,
        )
        .except(&[TOOL_CALL_ID_NEWER, TOOL_CALL_INDEX_NEWER, TOOL_ARGUMENTS]),
        post(
            "chat, not streamed",
            "/api/chat",
            json!({"model": "llama3.2", "messages": user("why is the sky blue?"), "stream": false}),
            include_str!("chat.json"),
            false,
        )
        .except(&[DONE_REASON_NEWER]),
        post(
            "chat, not streamed, with tools",
            "/api/chat",
            json!({"model": "llama3.2", "messages": user("what is the weather in tokyo?"),
                   "tools": weather_tool(), "stream": false}),
            include_str!("chat-tools.json"),
            false,
        )
        .except(&[TOOL_CALL_ID_NEWER, TOOL_CALL_INDEX_NEWER, TOOL_ARGUMENTS]),
        post(
            "chat, structured output",
            "/api/chat",
            json!({
                "model": "llama3.1",
                "messages": user("Ollama is 22 years old and busy saving the world. Return a JSON object with the age and availability."),
                "stream": false,
                "format": {
                    "type": "object",
                    "properties": {"age": {"type": "integer"}, "available": {"type": "boolean"}},
                    "required": ["age", "available"]
                },
                "options": {"temperature": 0}
            }),
            include_str!("chat-structured.json"),
            false,
        ),
        post(
            "chat, load a model",
            "/api/chat",
            json!({"model": "llama3.2", "messages": []}),
            include_str!("chat-load.json"),
            false,
        ),
        post(
            "embed",
            "/api/embed",
            json!({"model": "all-minilm", "input": "Why is the sky blue?"}),
            include_str!("embed.json"),
            false,
        ),
        post(
            "embeddings (legacy)",
            "/api/embeddings",
            json!({"model": "all-minilm", "prompt": "Here is an article about llamas..."}),
            include_str!("embeddings.json"),
            false,
        ),
        post(
            "show",
            "/api/show",
            json!({"model": "llama3.2"}),
            include_str!("show.json"),
            false,
        )
        .except(&[
            open_map("model_info", "its keys are the model's GGUF metadata"),
            added(
                "license",
                "api/types.go ShowResponse.License; the recording left it out",
            ),
            added(
                "modified_at",
                "api/types.go ShowResponse.ModifiedAt, newer than the recording",
            ),
            added(
                "tensors",
                "server/routes.go GetModelInfo lists a GGUF model's tensors, verbose or not; the recording left them out",
            ),
        ]),
        get("tags", "/api/tags", include_str!("tags.json")).except(&[
            added(
                "models[].capabilities",
                "api/types.go ListModelResponse.Capabilities, newer than the recording",
            ),
            added(
                "models[].details.context_length",
                "api/types.go ModelDetails.ContextLength (server/model_list_cache.go), newer than the recording",
            ),
            added(
                "models[].details.embedding_length",
                "api/types.go ModelDetails.EmbeddingLength (server/model_list_cache.go), newer than the recording",
            ),
        ]),
        get("ps", "/api/ps", include_str!("ps.json")).except(&[added(
            "models[].context_length",
            "api/types.go ProcessModelResponse.ContextLength, newer than the recording",
        )]),
        get("version", "/api/version", include_str!("version.json")),
        post(
            "error: unknown model",
            "/api/chat",
            json!({"model": "no-such-model", "messages": user("hi")}),
            include_str!("error.json"),
            false,
        )
        .status(404),
        get(
            "OpenAI: list models",
            "/v1/models",
            include_str!("openai-models.json"),
        )
        .openai_writer(),
        get(
            "OpenAI: one model",
            "/v1/models/llama3.2",
            include_str!("openai-model.json"),
        )
        .openai_writer(),
        get(
            "OpenAI: unknown model",
            "/v1/models/no-such-model",
            include_str!("openai-error.json"),
        )
        .status(404)
        .openai_writer(),
        // Unloading last: the cases above may need llama3.2 resident.
        post(
            "chat, unload a model",
            "/api/chat",
            json!({"model": "llama3.2", "messages": [], "keep_alive": 0}),
            include_str!("chat-unload.json"),
            false,
        ),
        post(
            "generate, unload a model",
            "/api/generate",
            json!({"model": "llama3.2", "keep_alive": 0}),
            include_str!("generate-unload.json"),
            false,
        ),
    ]
}

/// The recorded stream that ends in an error line (docs/api/errors.mdx).
pub const STREAM_ERROR: &str = include_str!("generate-stream-error.ndjson");

/// Parses NDJSON: every line one complete JSON value, the body ending in a newline.
pub fn ndjson(body: &str) -> Result<Vec<Value>, String> {
    if !body.ends_with('\n') {
        return Err("an NDJSON body ends with a newline".into());
    }
    body.lines()
        .map(|line| serde_json::from_str(line).map_err(|e| format!("bad line {line:?}: {e}")))
        .collect()
}

/// The JSON type of a value, integers apart from floats.
fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(n) if n.is_f64() => "float",
        Value::Number(_) => "integer",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Go's `time.Time` in RFC 3339 with nanoseconds: `2023-08-04T19:22:45.499127Z` or
/// with an offset; up to nine fraction digits, trailing zeros trimmed.
pub fn is_go_time(text: &str) -> bool {
    let b = text.as_bytes();
    let digits = |range: std::ops::Range<usize>| {
        b.get(range.clone())
            .is_some_and(|s| s.iter().all(u8::is_ascii_digit))
    };
    let at = |i: usize, c: u8| b.get(i) == Some(&c);
    if !(digits(0..4)
        && at(4, b'-')
        && digits(5..7)
        && at(7, b'-')
        && digits(8..10)
        && at(10, b'T')
        && digits(11..13)
        && at(13, b':')
        && digits(14..16)
        && at(16, b':')
        && digits(17..19))
    {
        return false;
    }
    let mut rest = &text[19..];
    if let Some(fraction) = rest.strip_prefix('.') {
        let len = fraction.bytes().take_while(u8::is_ascii_digit).count();
        if len == 0 || len > 9 || fraction.as_bytes()[len - 1] == b'0' {
            return false;
        }
        rest = &fraction[len..];
    }
    let r = rest.as_bytes();
    rest == "Z"
        || (r.len() == 6
            && (r[0] == b'+' || r[0] == b'-')
            && r[1..3].iter().all(u8::is_ascii_digit)
            && r[3] == b':'
            && r[4..6].iter().all(u8::is_ascii_digit))
}

/// Compares `actual` with `golden` at `path`; pushes each difference to `errors`
/// and each exception that applied to `used`.
pub fn compare(
    golden: &Value,
    actual: &Value,
    path: &str,
    exceptions: &[Exception],
    errors: &mut Vec<String>,
    used: &mut BTreeSet<&'static str>,
) {
    let exception = |path: &str, kind: Kind| {
        exceptions
            .iter()
            .find(|e| e.path == path && e.kind == kind)
            .map(|e| e.path)
    };
    let shown = if path.is_empty() { "(top)" } else { path };
    if type_of(golden) != type_of(actual) {
        errors.push(format!(
            "{shown}: {} recorded, {} answered ({actual})",
            type_of(golden),
            type_of(actual)
        ));
        return;
    }
    if let Some(p) = exception(path, Kind::OpenMap) {
        used.insert(p);
        return;
    }
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (golden, actual) {
        (Value::Object(g), Value::Object(a)) => {
            for (key, g_value) in g {
                let child = join(key);
                match a.get(key) {
                    Some(a_value) => {
                        if STATE_KEYS.contains(&key.as_str()) && g_value != a_value {
                            errors.push(format!("{child}: {g_value} recorded, {a_value} answered"));
                        }
                        if TIME_KEYS.contains(&key.as_str()) {
                            for (who, v) in [("recorded", g_value), ("answered", a_value)] {
                                if !v.as_str().is_some_and(is_go_time) {
                                    errors.push(format!(
                                        "{child}: {who} {v} is not Go's RFC 3339 with nanoseconds"
                                    ));
                                }
                            }
                        }
                        compare(g_value, a_value, &child, exceptions, errors, used);
                    }
                    None => match exception(&child, Kind::Omitted) {
                        Some(p) => {
                            used.insert(p);
                        }
                        None => errors.push(format!("{child}: recorded, missing")),
                    },
                }
            }
            for key in a.keys().filter(|k| !g.contains_key(*k)) {
                let child = join(key);
                match exception(&child, Kind::Added) {
                    Some(p) => {
                        used.insert(p);
                    }
                    None => errors.push(format!("{child}: answered, not in the recording")),
                }
            }
        }
        (Value::Array(g), Value::Array(a)) => {
            // Recorded arrays hold one kind of element: the first stands for all.
            if let Some(first) = g.first() {
                let child = format!("{path}[]");
                for element in a {
                    compare(first, element, &child, exceptions, errors, used);
                }
            }
        }
        _ => {}
    }
}

/// Compares a stream: the last event with the recorded last event, and every
/// earlier event with one of the recorded earlier events, in the recorded order,
/// each kind of recorded event seen at least once.
pub fn compare_stream(
    golden: &[Value],
    actual: &[Value],
    exceptions: &[Exception],
    errors: &mut Vec<String>,
    used: &mut BTreeSet<&'static str>,
) {
    let (Some((g_last, g_rest)), Some((a_last, a_rest))) =
        (golden.split_last(), actual.split_last())
    else {
        errors.push(format!(
            "{} events recorded, {} answered",
            golden.len(),
            actual.len()
        ));
        return;
    };
    compare(g_last, a_last, "", exceptions, errors, used);
    // Consecutive recorded events of one shape (say four text chunks) are one kind.
    let mut kinds: Vec<&Value> = Vec::new();
    for event in g_rest {
        let same = kinds.last().is_some_and(|last| {
            let mut e = Vec::new();
            compare(last, event, "", &[], &mut e, &mut BTreeSet::new());
            e.is_empty()
        });
        if !same {
            kinds.push(event);
        }
    }
    let g_rest = kinds;
    let mut at = 0;
    let mut seen = vec![false; g_rest.len()];
    for (n, event) in a_rest.iter().enumerate() {
        let matched = (at..g_rest.len()).find_map(|i| {
            let (mut e, mut u) = (Vec::new(), BTreeSet::new());
            compare(g_rest[i], event, "", exceptions, &mut e, &mut u);
            e.is_empty().then_some((i, u))
        });
        match matched {
            Some((i, u)) => {
                at = i;
                seen[i] = true;
                used.extend(u);
            }
            None => {
                let mut e = Vec::new();
                let i = at.min(g_rest.len().saturating_sub(1));
                match g_rest.get(i) {
                    Some(g) => compare(g, event, "", exceptions, &mut e, used),
                    None => e.push("no event recorded before the last".into()),
                }
                errors.push(format!(
                    "event {n} matches no recorded event at or after {i}: {}",
                    e.join("; ")
                ));
            }
        }
    }
    for (i, seen) in seen.iter().enumerate() {
        if !seen {
            errors.push(format!("recorded event {i} never answered: {}", g_rest[i]));
        }
    }
}

/// Sends one case to `base` and returns every difference from its recording.
pub async fn check(client: &reqwest::Client, base: &str, case: &Case) -> Vec<String> {
    let url = format!("{base}{}", case.path);
    let request = match case.method {
        "GET" => client.get(url),
        _ => client.post(url).json(case.body.as_ref().unwrap()),
    };
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = response.text().await.unwrap();
    let mut errors = Vec::new();
    if status != case.status {
        errors.push(format!(
            "status {} recorded, {status} answered",
            case.status
        ));
    }
    if content_type != case.content_type {
        errors.push(format!(
            "content type {:?} recorded, {content_type:?} answered",
            case.content_type
        ));
    }
    let mut used = BTreeSet::new();
    if case.stream {
        let golden = ndjson(case.golden).expect("recorded NDJSON");
        match ndjson(&body) {
            Ok(actual) => {
                compare_stream(&golden, &actual, &case.exceptions, &mut errors, &mut used)
            }
            Err(e) => errors.push(e),
        }
    } else {
        let golden: Value = serde_json::from_str(case.golden).expect("recorded JSON");
        match serde_json::from_str::<Value>(&body) {
            Ok(actual) => compare(
                &golden,
                &actual,
                "",
                &case.exceptions,
                &mut errors,
                &mut used,
            ),
            Err(e) => errors.push(format!("not JSON ({e}): {body}")),
        }
    }
    for stale in case.exceptions.iter().filter(|e| !used.contains(e.path)) {
        errors.push(format!(
            "exception {:?} no longer applies ({})",
            stale.path, stale.why
        ));
    }
    errors
        .into_iter()
        .map(|e| format!("{}: {e}", case.name))
        .collect()
}

/// Runs every case against `base`, one after another; returns all differences.
pub async fn check_all(client: &reqwest::Client, base: &str) -> Vec<String> {
    let mut errors = Vec::new();
    for case in cases() {
        errors.extend(check(client, base, &case).await);
    }
    errors
}
