//! What a target would refuse, refused before anything is queued or forwarded.
//!
//! Two checks live here, both written from Ollama's rules (its `api/types.go`,
//! `openai/openai.go`, `anthropic/anthropic.go` and `types/model/name.go`):
//!
//! - [`queued_request`]: the body of every queued route, and the `request` of
//!   `POST /jobs`, against the request type of its job kind. Go's decoder refuses a
//!   field of the wrong type with its `json: cannot unmarshal ...` text (400), the
//!   handlers then refuse some values (400), and a few wrong values only fail once
//!   the runner has them (500, Ollama's status for them). The same words and status
//!   come back here at once, so a body the target would reject never becomes a job
//!   that fails later. A body that passes is left as it came (its bytes are stored).
//! - [`model_name`]: Ollama's model name rules, for every name that goes into an
//!   upstream URL, so a path such as `..%2F..%2Fsim%2Ffaults` never reaches one.
//!
//! Fields a type does not declare are ignored, as Go ignores them, and `null` is
//! "not given" everywhere.

use foreman_store::JobKind;
use serde_json::{Map, Value};

use super::ApiError;

/// Ollama's answer to a name that breaks its rules.
const INVALID_NAME: &str = "invalid model name";

/// Checks a queued request body against the request type of `kind`.
pub(super) fn queued_request(kind: JobKind, fields: &Map<String, Value>) -> Result<(), ApiError> {
    match kind {
        JobKind::Chat => ollama_chat(fields),
        JobKind::Generate => ollama_generate(fields),
        JobKind::OpenAiChat => openai_chat(fields),
        JobKind::OpenAiCompletion => openai_completion(fields),
        JobKind::OpenAiResponses => openai_responses(fields),
        JobKind::AnthropicMessages => anthropic_messages(fields),
        JobKind::Embed => ollama_embed(fields),
        JobKind::OpenAiEmbedding => openai_embedding(fields),
    }
}

/// Refuses a name Ollama's `model.ParseName(name).IsValid()` refuses: at most
/// `host/namespace/model:tag`, each part 1 to 80 characters (the host 350), starting
/// with a letter, digit or `_` and going on with those, `-` and `_`; `.` except in
/// the namespace, `:` only in the host (its port).
pub(super) fn model_name(name: &str) -> Result<(), ApiError> {
    if is_valid_model_name(name) {
        Ok(())
    } else {
        Err(invalid_model_name())
    }
}

/// Ollama's 400 for a name that breaks its rules.
pub(super) fn invalid_model_name() -> ApiError {
    ApiError::BadRequest(INVALID_NAME.into())
}

fn is_valid_model_name(name: &str) -> bool {
    #[derive(Clone, Copy, PartialEq)]
    enum Part {
        Host,
        Namespace,
        Model,
        Tag,
    }
    fn valid(part: Part, text: &str) -> bool {
        let max = if part == Part::Host { 350 } else { 80 };
        let word = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
        !text.is_empty()
            && text.len() <= max
            && text.bytes().enumerate().all(|(i, b)| match b {
                _ if i == 0 => word(b),
                b'-' | b'_' => true,
                b'.' => part != Part::Namespace,
                b':' => part == Part::Host,
                _ => word(b),
            })
    }
    // ParseName cuts from the right: the tag after the last `:` (when it follows the
    // last `/`), then the model, the namespace, and whatever is left is the host
    // (its scheme dropped). Missing parts take the defaults, which are valid.
    let mut rest = name;
    let mut tag = "latest";
    if rest.rfind(':') > rest.rfind('/') {
        let (before, after) = rest.rsplit_once(':').expect("a ':' was found");
        (rest, tag) = (before, after);
    }
    let (rest, model) = match rest.rsplit_once('/') {
        Some((before, after)) => (Some(before), after),
        None => (None, rest),
    };
    let (host, namespace) = match rest.map(|r| r.rsplit_once('/').ok_or(r)) {
        None => ("registry.ollama.ai", "library"),
        Some(Err(namespace)) => ("registry.ollama.ai", namespace),
        Some(Ok((host, namespace))) => match host.split_once("://") {
            // Ollama skips the scheme unread; here it must be one, or a name such as
            // `a/../../sim/faults?x=://h/n/m` would carry a path into the URL.
            Some((scheme, host)) if is_scheme(scheme) => (host, namespace),
            Some(_) => return false,
            None => (host, namespace),
        },
    };
    valid(Part::Host, host)
        && valid(Part::Namespace, namespace)
        && valid(Part::Model, model)
        && valid(Part::Tag, tag)
}

/// A URL scheme (RFC 3986): a letter, then letters, digits, `+`, `-` and `.`.
fn is_scheme(text: &str) -> bool {
    text.bytes().enumerate().all(|(i, b)| {
        b.is_ascii_alphabetic() || (i > 0 && (b.is_ascii_digit() || b"+-.".contains(&b)))
    }) && !text.is_empty()
}

// ---------------------------------------------------------------------------------
// Go's decoder, as far as it refuses values.

type Check = fn(&At, &Value) -> Result<(), ApiError>;

/// Where a value sits, for Go's message: the innermost struct being decoded and the
/// field path from the request's root (array indices are not part of it).
#[derive(Clone)]
struct At {
    strukt: &'static str,
    path: String,
}

impl At {
    fn root(strukt: &'static str) -> At {
        At {
            strukt,
            path: String::new(),
        }
    }

    fn field(&self, strukt: &'static str, name: &str) -> At {
        let path = if self.path.is_empty() {
            name.to_string()
        } else {
            format!("{}.{name}", self.path)
        };
        At { strukt, path }
    }

    fn type_error(&self, value: &Value, go_type: &str) -> ApiError {
        ApiError::BadRequest(format!(
            "json: cannot unmarshal {} into Go struct field {}.{} of type {go_type}",
            go_kind(value),
            self.strukt,
            self.path
        ))
    }
}

/// Go's name for a JSON value in type errors; a number keeps its text when it is
/// refused as an integer.
fn go_kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(_) => "bool".into(),
        Value::Number(_) => "number".into(),
        Value::String(_) => "string".into(),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

fn string(at: &At, value: &Value) -> Result<(), ApiError> {
    match value {
        Value::Null | Value::String(_) => Ok(()),
        other => Err(at.type_error(other, "string")),
    }
}

fn boolean(at: &At, value: &Value) -> Result<(), ApiError> {
    match value {
        Value::Null | Value::Bool(_) => Ok(()),
        other => Err(at.type_error(other, "bool")),
    }
}

fn integer_of(at: &At, value: &Value, go_type: &str) -> Result<(), ApiError> {
    match value {
        Value::Null => Ok(()),
        Value::Number(n) if n.is_i64() || n.is_u64() => Ok(()),
        Value::Number(n) => Err(ApiError::BadRequest(format!(
            "json: cannot unmarshal number {n} into Go struct field {}.{} of type {go_type}",
            at.strukt, at.path
        ))),
        other => Err(at.type_error(other, go_type)),
    }
}

fn int(at: &At, value: &Value) -> Result<(), ApiError> {
    integer_of(at, value, "int")
}

fn int32(at: &At, value: &Value) -> Result<(), ApiError> {
    integer_of(at, value, "int32")
}

fn float64(at: &At, value: &Value) -> Result<(), ApiError> {
    match value {
        Value::Null | Value::Number(_) => Ok(()),
        other => Err(at.type_error(other, "float64")),
    }
}

fn float32(at: &At, value: &Value) -> Result<(), ApiError> {
    match value {
        Value::Null | Value::Number(_) => Ok(()),
        other => Err(at.type_error(other, "float32")),
    }
}

fn any(_: &At, _: &Value) -> Result<(), ApiError> {
    Ok(())
}

fn object(at: &At, value: &Value) -> Result<(), ApiError> {
    match value {
        Value::Null | Value::Object(_) => Ok(()),
        other => Err(at.type_error(other, "map[string]interface {}")),
    }
}

fn array(at: &At, value: &Value, go_type: &str, item: Check) -> Result<(), ApiError> {
    match value {
        Value::Null => Ok(()),
        Value::Array(items) => items.iter().try_for_each(|v| item(at, v)),
        other => Err(at.type_error(other, go_type)),
    }
}

/// A struct: an object whose declared fields (matched as Go matches them, ignoring
/// case) are each checked; `strukt` names it in errors inside it, `None` keeps the
/// outer name (a type with its own `UnmarshalJSON`, whose errors Go reports at the
/// field that holds it).
fn fields(
    at: &At,
    value: &Value,
    go_type: &str,
    strukt: Option<&'static str>,
    declared: &[(&str, Check)],
) -> Result<(), ApiError> {
    match value {
        Value::Null => Ok(()),
        Value::Object(object) => members(at, object, strukt, declared),
        other => Err(at.type_error(other, go_type)),
    }
}

/// The members of a struct's object, as [`fields`] checks them.
fn members(
    at: &At,
    object: &Map<String, Value>,
    strukt: Option<&'static str>,
    declared: &[(&str, Check)],
) -> Result<(), ApiError> {
    for (key, value) in object {
        let field = declared.iter().find(|(name, _)| name == key).or_else(|| {
            declared
                .iter()
                .find(|(name, _)| name.eq_ignore_ascii_case(key))
        });
        if let Some((name, check)) = field {
            check(&at.field(strukt.unwrap_or(at.strukt), name), value)?;
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Ollama's own types (api/types.go).

const THINK_LEVELS: [&str; 4] = ["high", "medium", "low", "max"];

fn ollama_chat(body: &Map<String, Value>) -> Result<(), ApiError> {
    members(
        &At::root("ChatRequest"),
        body,
        Some("ChatRequest"),
        &[
            ("model", string),
            ("messages", |at, v| array(at, v, "[]api.Message", message)),
            ("stream", boolean),
            ("format", any),
            ("keep_alive", keep_alive),
            ("tools", |at, v| array(at, v, "[]api.Tool", tool)),
            ("options", object),
            ("think", think),
            ("truncate", boolean),
            ("shift", boolean),
            ("logprobs", boolean),
            ("top_logprobs", int),
            ("_debug_render_only", boolean),
        ],
    )?;
    top_logprobs(body)?;
    let unload = is_empty_list(body.get("messages")) && keep_alive_is_zero(body);
    if unload {
        return Ok(());
    }
    options(body)?;
    if !is_empty_list(body.get("messages")) {
        format(body)?;
    }
    Ok(())
}

fn ollama_generate(body: &Map<String, Value>) -> Result<(), ApiError> {
    members(
        &At::root("GenerateRequest"),
        body,
        Some("GenerateRequest"),
        &[
            ("model", string),
            ("prompt", string),
            ("suffix", string),
            ("system", string),
            ("template", string),
            ("context", |at, v| array(at, v, "[]int", int)),
            ("stream", boolean),
            ("raw", boolean),
            ("format", any),
            ("keep_alive", keep_alive),
            ("images", |at, v| array(at, v, "[]api.ImageData", image)),
            ("options", object),
            ("think", think),
            ("truncate", boolean),
            ("shift", boolean),
            ("logprobs", boolean),
            ("top_logprobs", int),
            ("_debug_render_only", boolean),
            ("width", int32),
            ("height", int32),
            ("steps", int32),
        ],
    )?;
    top_logprobs(body)?;
    let text = |field: &str| body.get(field).and_then(Value::as_str).unwrap_or("");
    if text("prompt").is_empty() && keep_alive_is_zero(body) {
        return Ok(());
    }
    let has_context = !is_empty_list(body.get("context"));
    if body.get("raw") == Some(&Value::Bool(true))
        && (!text("template").is_empty() || !text("system").is_empty() || has_context)
    {
        return Err(ApiError::BadRequest(
            "raw mode does not support template, system, or context".into(),
        ));
    }
    options(body)?;
    if !text("prompt").is_empty() {
        format(body)?;
    }
    Ok(())
}

/// `api.Message`: its `UnmarshalJSON` decodes an alias, so Go names errors inside it
/// after the request (`ChatRequest.messages.content`).
fn message(at: &At, value: &Value) -> Result<(), ApiError> {
    fields(
        at,
        value,
        "api.Message",
        None,
        &[
            ("role", string),
            ("content", string),
            ("thinking", string),
            ("images", |at, v| array(at, v, "[]api.ImageData", image)),
            ("tool_calls", |at, v| {
                array(at, v, "[]api.ToolCall", tool_call)
            }),
            ("tool_name", string),
            ("tool_call_id", string),
        ],
    )
}

fn tool_call(at: &At, value: &Value) -> Result<(), ApiError> {
    fields(
        at,
        value,
        "api.ToolCall",
        None,
        &[
            ("id", string),
            ("function", |at, v| {
                fields(
                    at,
                    v,
                    "api.ToolCallFunction",
                    None,
                    &[
                        ("index", int),
                        ("name", string),
                        ("arguments", |at, v| match v {
                            Value::Null | Value::Object(_) => Ok(()),
                            other => Err(at.type_error(other, "api.ToolCallFunctionArguments")),
                        }),
                    ],
                )
            }),
        ],
    )
}

fn tool(at: &At, value: &Value) -> Result<(), ApiError> {
    fields(
        at,
        value,
        "api.Tool",
        Some("Tool"),
        &[
            ("type", string),
            ("items", any),
            ("function", |at, v| {
                fields(
                    at,
                    v,
                    "api.ToolFunction",
                    Some("ToolFunction"),
                    &[
                        ("name", string),
                        ("description", string),
                        ("parameters", |at, v| {
                            fields(
                                at,
                                v,
                                "api.ToolFunctionParameters",
                                Some("ToolFunctionParameters"),
                                &[
                                    ("type", string),
                                    ("$defs", any),
                                    ("items", any),
                                    ("required", |at, v| array(at, v, "[]string", string)),
                                    ("properties", properties),
                                ],
                            )
                        }),
                    ],
                )
            }),
        ],
    )
}

/// `properties`: a map of `api.ToolProperty`, whose `type` is one type name or several.
fn properties(at: &At, value: &Value) -> Result<(), ApiError> {
    let Value::Object(named) = value else {
        return match value {
            Value::Null => Ok(()),
            other => Err(at.type_error(other, "map[string]api.ToolProperty")),
        };
    };
    named.values().try_for_each(|property| {
        fields(
            at,
            property,
            "api.ToolProperty",
            Some("ToolProperty"),
            &[
                ("type", |at, v| match v {
                    Value::Array(names) => names.iter().try_for_each(|n| string(at, n)),
                    other => string(at, other),
                }),
                ("items", any),
                ("description", string),
                ("enum", |at, v| array(at, v, "[]interface {}", any)),
                ("properties", properties),
                ("anyOf", |at, v| array(at, v, "[]api.ToolProperty", any)),
            ],
        )
    })
}

/// `think`: a boolean or one of the levels (`ThinkValue.UnmarshalJSON`).
fn think(_: &At, value: &Value) -> Result<(), ApiError> {
    match value {
        Value::Null | Value::Bool(_) => Ok(()),
        Value::String(level) if THINK_LEVELS.contains(&level.as_str()) => Ok(()),
        other => Err(ApiError::BadRequest(format!(
            "invalid think value: {other} (must be \"high\", \"medium\", \"low\", \"max\", true, or false)"
        ))),
    }
}

/// `keep_alive`: seconds as a number, or a Go duration (`Duration.UnmarshalJSON`).
fn keep_alive(_: &At, value: &Value) -> Result<(), ApiError> {
    let unsupported = |go_type: &str| {
        Err(ApiError::BadRequest(format!(
            "Unsupported type: '{go_type}'"
        )))
    };
    match value {
        Value::Null | Value::Number(_) => Ok(()),
        Value::String(text) => go_duration(text).map(|_| ()).map_err(ApiError::BadRequest),
        Value::Bool(_) => unsupported("bool"),
        Value::Array(_) => unsupported("[]interface {}"),
        Value::Object(_) => unsupported("map[string]interface {}"),
    }
}

fn keep_alive_is_zero(body: &Map<String, Value>) -> bool {
    match body.get("keep_alive") {
        Some(Value::Number(seconds)) => seconds.as_f64() == Some(0.0),
        Some(Value::String(text)) => go_duration(text) == Ok(0.0),
        _ => false,
    }
}

/// Go's `time.ParseDuration`, as nanoseconds; errors in its words.
fn go_duration(text: &str) -> Result<f64, String> {
    let invalid = || format!("time: invalid duration {text:?}");
    let rest = text
        .strip_prefix('-')
        .or_else(|| text.strip_prefix('+'))
        .unwrap_or(text);
    if rest == "0" {
        return Ok(0.0);
    }
    if rest.is_empty() {
        return Err(invalid());
    }
    let mut total = 0.0;
    let mut rest = rest;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number = &rest[..digits];
        if number.is_empty() || number == "." {
            return Err(invalid());
        }
        let number: f64 = number.parse().map_err(|_| invalid())?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let scale = match &rest[..unit_len] {
            "" => return Err(format!("time: missing unit in duration {text:?}")),
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            unit => return Err(format!("time: unknown unit {unit:?} in duration {text:?}")),
        };
        total += number * scale;
        rest = &rest[unit_len..];
    }
    Ok(total)
}

/// `api.ImageData` is bytes, which Go's decoder reads as standard padded base64.
fn image(at: &At, value: &Value) -> Result<(), ApiError> {
    let Value::String(text) = value else {
        return match value {
            Value::Null => Ok(()),
            other => Err(at.type_error(other, "api.ImageData")),
        };
    };
    match base64_error_at(text.as_bytes()) {
        None => Ok(()),
        Some(at) => Err(ApiError::BadRequest(format!(
            "illegal base64 data at input byte {at}"
        ))),
    }
}

/// Where Go's `base64.StdEncoding` stops reading `text`, if it does (it skips line
/// breaks; padding closes the input).
fn base64_error_at(text: &[u8]) -> Option<usize> {
    let symbol = |b: u8| b.is_ascii_alphanumeric() || b == b'+' || b == b'/';
    let mut in_quantum = 0;
    let mut quantum_start = 0;
    let mut index = 0;
    while index < text.len() {
        let b = text[index];
        if b == b'\n' || b == b'\r' {
            index += 1;
            continue;
        }
        if in_quantum == 0 {
            quantum_start = index;
        }
        if b == b'=' {
            // Padding may only complete a quantum of two or three symbols, and nothing
            // but line breaks may follow it.
            let needed = match in_quantum {
                2 => 2,
                3 => 1,
                _ => return Some(index),
            };
            let mut seen = 0;
            let mut tail = index;
            while tail < text.len() {
                match text[tail] {
                    b'\n' | b'\r' => {}
                    b'=' if seen < needed => seen += 1,
                    _ => return Some(tail),
                }
                tail += 1;
            }
            return (seen < needed).then_some(text.len());
        }
        if !symbol(b) {
            return Some(index);
        }
        in_quantum = (in_quantum + 1) % 4;
        index += 1;
    }
    (in_quantum != 0).then_some(quantum_start)
}

fn top_logprobs(body: &Map<String, Value>) -> Result<(), ApiError> {
    match body.get("top_logprobs").and_then(Value::as_i64) {
        Some(top) if !(0..=20).contains(&top) => Err(ApiError::BadRequest(
            "top_logprobs must be between 0 and 20".into(),
        )),
        _ => Ok(()),
    }
}

/// The options Ollama reads, by type (`Options.FromMap`); a wrong one fails only
/// when the runner is scheduled, as a 500. Other keys are ignored.
fn options(body: &Map<String, Value>) -> Result<(), ApiError> {
    const INTEGERS: [&str; 11] = [
        "num_ctx",
        "num_batch",
        "num_gpu",
        "main_gpu",
        "num_thread",
        "num_keep",
        "seed",
        "num_predict",
        "top_k",
        "repeat_last_n",
        "draft_num_predict",
    ];
    const FLOATS: [&str; 7] = [
        "temperature",
        "top_p",
        "min_p",
        "typical_p",
        "repeat_penalty",
        "presence_penalty",
        "frequency_penalty",
    ];
    const BOOLEANS: [&str; 1] = ["use_mmap"];
    let Some(Value::Object(options)) = body.get("options") else {
        return Ok(());
    };
    let refuse = |name: &str, kind: &str| {
        Err(ApiError::RunnerRefused(format!(
            "option {name:?} must be of type {kind}"
        )))
    };
    for (name, value) in options {
        let name = name.as_str();
        match value {
            Value::Null => {}
            Value::Number(_) if INTEGERS.contains(&name) || FLOATS.contains(&name) => {}
            _ if INTEGERS.contains(&name) => return refuse(name, "integer"),
            _ if FLOATS.contains(&name) => return refuse(name, "float32"),
            Value::Bool(_) if BOOLEANS.contains(&name) => {}
            _ if BOOLEANS.contains(&name) => return refuse(name, "boolean"),
            Value::Array(stops) if name == "stop" && !stops.iter().all(Value::is_string) => {
                return Err(ApiError::RunnerRefused(format!(
                    "option {name:?} must be of an array of strings"
                )));
            }
            Value::Array(_) if name == "stop" => {}
            _ if name == "stop" => return refuse(name, "array"),
            _ => {}
        }
    }
    Ok(())
}

/// `format`: `"json"`, a schema object, or nothing; anything else is the runner's 500.
fn format(body: &Map<String, Value>) -> Result<(), ApiError> {
    match body.get("format") {
        None | Some(Value::Null) | Some(Value::Object(_)) => Ok(()),
        Some(Value::String(text)) if text.is_empty() || text == "json" => Ok(()),
        Some(other) => Err(ApiError::RunnerRefused(format!(
            "invalid format: {:?}; expected \"json\" or a valid JSON Schema object",
            other.to_string()
        ))),
    }
}

fn is_empty_list(value: Option<&Value>) -> bool {
    match value {
        None | Some(Value::Null) => true,
        Some(Value::Array(items)) => items.is_empty(),
        Some(_) => false,
    }
}

// ---------------------------------------------------------------------------------
// OpenAI's types (openai/openai.go), decoded by Ollama's middleware.

const REASONING_EFFORTS: [&str; 8] = [
    "none", "minimal", "low", "medium", "high", "xhigh", "ultra", "max",
];

fn stream_options(at: &At, value: &Value) -> Result<(), ApiError> {
    fields(
        at,
        value,
        "openai.StreamOptions",
        Some("StreamOptions"),
        &[("include_usage", boolean)],
    )
}

fn reasoning_effort(effort: &str) -> Result<(), ApiError> {
    if effort.is_empty() || REASONING_EFFORTS.contains(&effort) {
        return Ok(());
    }
    Err(ApiError::BadRequest(format!(
        "invalid reasoning value: {effort:?} (must be \"minimal\", \"low\", \"medium\", \"high\", \"xhigh\", \"ultra\", \"max\", or \"none\")"
    )))
}

fn openai_chat(body: &Map<String, Value>) -> Result<(), ApiError> {
    members(
        &At::root("ChatCompletionRequest"),
        body,
        Some("ChatCompletionRequest"),
        &[
            ("model", string),
            ("messages", |at, v| {
                array(at, v, "[]openai.Message", |at, v| {
                    fields(
                        at,
                        v,
                        "openai.Message",
                        Some("Message"),
                        &[
                            ("role", string),
                            ("content", any),
                            ("reasoning", string),
                            ("tool_calls", |at, v| {
                                array(at, v, "[]openai.ToolCall", |at, v| {
                                    fields(
                                        at,
                                        v,
                                        "openai.ToolCall",
                                        Some("ToolCall"),
                                        &[
                                            ("id", string),
                                            ("index", int),
                                            ("type", string),
                                            ("function", |at, v| {
                                                fields(
                                                    at,
                                                    v,
                                                    "struct { Name string \"json:\\\"name\\\"\"; Arguments string \"json:\\\"arguments\\\"\" }",
                                                    None,
                                                    &[("name", string), ("arguments", string)],
                                                )
                                            }),
                                        ],
                                    )
                                })
                            }),
                            ("name", string),
                            ("tool_call_id", string),
                        ],
                    )
                })
            }),
            ("stream", boolean),
            ("stream_options", stream_options),
            ("max_tokens", int),
            ("max_completion_tokens", int),
            ("seed", int),
            ("stop", any),
            ("temperature", float64),
            ("frequency_penalty", float64),
            ("presence_penalty", float64),
            ("top_p", float64),
            ("response_format", |at, v| {
                fields(
                    at,
                    v,
                    "openai.ResponseFormat",
                    Some("ResponseFormat"),
                    &[("type", string), ("json_schema", any)],
                )
            }),
            ("tools", |at, v| array(at, v, "[]api.Tool", tool)),
            ("reasoning", |at, v| {
                fields(
                    at,
                    v,
                    "openai.Reasoning",
                    Some("Reasoning"),
                    &[("effort", string)],
                )
            }),
            ("reasoning_effort", string),
            ("logprobs", boolean),
            ("top_logprobs", int),
        ],
    )?;
    let messages = body.get("messages").and_then(Value::as_array);
    if messages.is_none_or(Vec::is_empty) {
        return Err(ApiError::BadRequest("[] is too short - 'messages'".into()));
    }
    let effort = match body.get("reasoning").filter(|r| !r.is_null()) {
        Some(reasoning) => reasoning.get("effort").and_then(Value::as_str),
        None => body.get("reasoning_effort").and_then(Value::as_str),
    };
    reasoning_effort(effort.unwrap_or(""))?;
    top_logprobs(body)?;
    for message in messages.into_iter().flatten() {
        openai_content(message.get("content"))?;
    }
    if let Some(kind) = body
        .get("response_format")
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str)
        && !matches!(kind, "json_object" | "json_schema" | "text")
    {
        return Err(ApiError::BadRequest(format!(
            "invalid response_format type: {kind}"
        )));
    }
    Ok(())
}

/// A chat message's `content`: text, parts, or nothing; images as base64 data only.
fn openai_content(content: Option<&Value>) -> Result<(), ApiError> {
    let invalid = || ApiError::BadRequest("invalid message content type".into());
    let parts = match content {
        None | Some(Value::Null) | Some(Value::String(_)) => return Ok(()),
        Some(Value::Array(parts)) => parts,
        Some(_) => return Err(invalid()),
    };
    for part in parts {
        match part.get("type").and_then(Value::as_str) {
            Some("text") | Some("input_audio") => {}
            Some("image_url") => {
                let image = part.get("image_url");
                let url = image
                    .map(|u| u.get("url").unwrap_or(u))
                    .and_then(Value::as_str)
                    .unwrap_or("");
                if !url.starts_with("data:") {
                    return Err(ApiError::BadRequest(
                        "image URLs are not currently supported, please use base64 encoded data instead"
                            .into(),
                    ));
                }
            }
            _ => return Err(invalid()),
        }
    }
    Ok(())
}

fn openai_completion(body: &Map<String, Value>) -> Result<(), ApiError> {
    if body
        .get("prompt")
        .is_some_and(|p| !p.is_null() && !p.is_string())
    {
        return Err(ApiError::BadRequest(
            "invalid type for 'prompt' field".into(),
        ));
    }
    members(
        &At::root("CompletionRequest"),
        body,
        Some("CompletionRequest"),
        &[
            ("model", string),
            ("prompt", any),
            ("stream", boolean),
            ("stream_options", stream_options),
            ("max_tokens", int),
            ("seed", int),
            ("stop", any),
            ("temperature", float32),
            ("frequency_penalty", float32),
            ("presence_penalty", float32),
            ("top_p", float32),
            ("suffix", string),
            ("logprobs", int),
        ],
    )
}

/// Whether an embedding request's `input` is a string or a list of strings.
fn embed_input_is_text(input: &Value) -> bool {
    match input {
        Value::String(_) => true,
        Value::Array(items) => items.iter().all(Value::is_string),
        _ => false,
    }
}

/// Ollama's `EmbedRequest` (`/api/embed`): its handler takes a string or a list of
/// strings as `input`, and no `input` at all (it only loads the model).
fn ollama_embed(body: &Map<String, Value>) -> Result<(), ApiError> {
    members(
        &At::root("EmbedRequest"),
        body,
        Some("EmbedRequest"),
        &[
            ("model", string),
            ("input", any),
            ("keep_alive", keep_alive),
            ("truncate", boolean),
            ("dimensions", int),
        ],
    )?;
    options(body)?;
    match body.get("input") {
        None | Some(Value::Null) => Ok(()),
        Some(input) if embed_input_is_text(input) => Ok(()),
        Some(_) => Err(ApiError::BadRequest("invalid input type".into())),
    }
}

/// Token ids as `/v1/embeddings` takes them: a non-empty list of integers.
fn is_token_array(input: &Value) -> bool {
    matches!(input, Value::Array(tokens) if !tokens.is_empty() && tokens.iter().all(|t| t.is_u64() || t.is_i64()))
}

/// `/v1/embeddings`' `input`: a string, one token array, or a non-empty list of strings
/// and token arrays (Ollama answers an empty list `invalid input`).
fn openai_embed_input(input: &Value) -> bool {
    match input {
        Value::String(_) => true,
        Value::Array(items) => {
            is_token_array(input)
                || (!items.is_empty()
                    && items
                        .iter()
                        .all(|item| item.is_string() || is_token_array(item)))
        }
        _ => false,
    }
}

/// The OpenAI-compatible `EmbedRequest` (`/v1/embeddings`): `input` is required, a
/// string, a list of strings or token arrays (as Ollama's OpenAI layer takes them), and
/// `encoding_format` is `float` or `base64`.
fn openai_embedding(body: &Map<String, Value>) -> Result<(), ApiError> {
    members(
        &At::root("EmbedRequest"),
        body,
        Some("EmbedRequest"),
        &[
            ("model", string),
            ("input", any),
            ("dimensions", int),
            ("encoding_format", string),
        ],
    )?;
    match body.get("input") {
        None | Some(Value::Null) => return Err(ApiError::BadRequest("invalid input".into())),
        Some(input) if openai_embed_input(input) => {}
        Some(_) => return Err(ApiError::BadRequest("invalid input".into())),
    }
    match body.get("encoding_format").and_then(Value::as_str) {
        None | Some("" | "float" | "base64") => Ok(()),
        Some(other) => Err(ApiError::BadRequest(format!(
            "Invalid value for 'encoding_format' = {other}. Supported values: ['float', 'base64']."
        ))),
    }
}

fn openai_responses(body: &Map<String, Value>) -> Result<(), ApiError> {
    members(
        &At::root("ResponsesRequest"),
        body,
        Some("ResponsesRequest"),
        &[
            ("model", string),
            ("instructions", string),
            ("max_output_tokens", int),
            ("stream", boolean),
            ("background", boolean),
            ("temperature", float64),
            ("top_p", float64),
            ("truncation", string),
            ("tools", |at, v| array(at, v, "[]openai.ResponsesTool", any)),
            ("include", |at, v| array(at, v, "[]string", string)),
            ("reasoning", |at, v| {
                fields(
                    at,
                    v,
                    "openai.ResponsesReasoning",
                    Some("ResponsesReasoning"),
                    &[("effort", string), ("summary", string)],
                )
            }),
        ],
    )?;
    match body.get("input") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(Value::Array(items)) => {
            for (index, item) in items.iter().enumerate() {
                responses_item(item).map_err(|message| {
                    if message == FILE_INPUTS {
                        ApiError::BadRequest(message)
                    } else {
                        ApiError::BadRequest(format!("input[{index}]: {message}"))
                    }
                })?;
            }
        }
        Some(other) => {
            return Err(ApiError::BadRequest(format!(
                "input must be a string or array: json: cannot unmarshal {} into Go value of type []json.RawMessage",
                go_kind(other)
            )));
        }
    }
    let effort = body
        .get("reasoning")
        .and_then(|r| r.get("effort"))
        .and_then(Value::as_str);
    reasoning_effort(effort.unwrap_or(""))
}

const FILE_INPUTS: &str = "file inputs are not currently supported";

/// One item of a Responses `input` array, with the middleware's words.
fn responses_item(item: &Value) -> Result<(), String> {
    let Some(fields) = item.as_object() else {
        return Err(format!(
            "json: cannot unmarshal {} into Go value of type struct",
            go_kind(item)
        ));
    };
    let text = |key: &str| fields.get(key).and_then(Value::as_str).unwrap_or("");
    let kind = match text("type") {
        "" if !text("role").is_empty() => "message",
        kind => kind,
    };
    match kind {
        "message" => responses_content(fields.get("content")),
        "function_call_output" => match fields.get("output") {
            Some(Value::String(_)) => Ok(()),
            other => responses_content(other),
        },
        "function_call" | "reasoning" | "web_search_call" => Ok(()),
        "" => Err("input item missing required 'type' field".into()),
        other => Err(format!("unknown input item type: {other:?}")),
    }
}

fn responses_content(content: Option<&Value>) -> Result<(), String> {
    match content {
        None | Some(Value::Null) | Some(Value::String(_)) => Ok(()),
        Some(Value::Array(parts)) => {
            for (index, part) in parts.iter().enumerate() {
                match part.get("type").and_then(Value::as_str).unwrap_or("") {
                    "input_text" | "output_text" | "input_image" => {}
                    "input_file" => return Err(FILE_INPUTS.into()),
                    other => {
                        return Err(format!("content[{index}]: unknown content type: {other}"));
                    }
                }
            }
            Ok(())
        }
        Some(other) => Err(format!(
            "content must be a string or array: json: cannot unmarshal {} into Go value of type []json.RawMessage",
            go_kind(other)
        )),
    }
}

// ---------------------------------------------------------------------------------
// Anthropic's types (anthropic/anthropic.go), decoded by Ollama's middleware.

fn anthropic_messages(body: &Map<String, Value>) -> Result<(), ApiError> {
    members(
        &At::root("MessagesRequest"),
        body,
        Some("MessagesRequest"),
        &[
            ("model", string),
            ("max_tokens", int),
            ("messages", |at, v| {
                array(at, v, "[]anthropic.MessageParam", |at, v| {
                    fields(
                        at,
                        v,
                        "anthropic.MessageParam",
                        Some("MessageParam"),
                        &[("role", string), ("content", any)],
                    )
                })
            }),
            ("system", any),
            ("stream", boolean),
            ("temperature", float64),
            ("top_p", float64),
            ("top_k", int),
            ("stop_sequences", |at, v| array(at, v, "[]string", string)),
            ("tools", |at, v| array(at, v, "[]anthropic.Tool", any)),
        ],
    )?;
    let messages = body.get("messages").and_then(Value::as_array);
    for message in messages.into_iter().flatten() {
        let blocks = match message.get("content") {
            None | Some(Value::Null) | Some(Value::String(_)) => continue,
            Some(Value::Array(blocks)) => blocks,
            Some(other) => {
                return Err(At::root("MessageParam")
                    .field("MessageParam", "content")
                    .type_error(other, "[]anthropic.ContentBlock"));
            }
        };
        for block in blocks {
            let text = |key: &str| block.get(key).and_then(Value::as_str).unwrap_or("");
            match text("type") {
                "image" => {
                    let Some(source) = block.get("source").filter(|s| !s.is_null()) else {
                        return Err(ApiError::BadRequest("invalid image source".into()));
                    };
                    let kind = source.get("type").and_then(Value::as_str).unwrap_or("");
                    if kind != "base64" {
                        return Err(ApiError::BadRequest(format!(
                            "invalid image source type: {kind}. Only base64 images are supported."
                        )));
                    }
                }
                "tool_use" if text("id").is_empty() => {
                    return Err(ApiError::BadRequest(
                        "tool_use block missing required 'id' field".into(),
                    ));
                }
                "tool_use" if text("name").is_empty() => {
                    return Err(ApiError::BadRequest(
                        "tool_use block missing required 'name' field".into(),
                    ));
                }
                _ => {}
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn refused(kind: JobKind, body: Value) -> Option<(u16, String)> {
        let Value::Object(fields) = body else {
            panic!("not an object")
        };
        queued_request(kind, &fields)
            .err()
            .map(|error| (error.status().as_u16(), error.to_string()))
    }

    #[test]
    fn openai_embedding_inputs_are_those_ollama_takes() {
        let body = |input: Value| json!({"model": "e", "input": input});
        for good in [
            json!("text"),
            json!(""),
            json!(["a", "b"]),
            json!([1, 2, 3]),
            json!([[1, 2], "b"]),
        ] {
            assert_eq!(
                refused(JobKind::OpenAiEmbedding, body(good.clone())),
                None,
                "{good}"
            );
        }
        for bad in [
            json!(null),
            json!([]),
            json!([[]]),
            json!([1, "a"]),
            json!(3),
        ] {
            assert_eq!(
                refused(JobKind::OpenAiEmbedding, body(bad.clone())),
                Some((400, "invalid input".to_string())),
                "{bad}"
            );
        }
        assert_eq!(
            refused(
                JobKind::OpenAiEmbedding,
                json!({"model": "e", "input": "x", "encoding_format": "int8"})
            ),
            Some((
                400,
                "Invalid value for 'encoding_format' = int8. Supported values: ['float', 'base64']."
                    .to_string()
            ))
        );
    }

    #[test]
    fn names_follow_ollamas_rules() {
        for good in [
            "llama3.2",
            "llama3.2:3b-instruct-q4_K_M",
            "user/m:tag",
            "registry.ollama.ai/library/llama3.2:latest",
            "localhost:5000/me/m",
            "https://example.com/me/m:1",
            "_x",
        ] {
            assert!(is_valid_model_name(good), "{good}");
        }
        let long = "m".repeat(81);
        for bad in [
            "",
            "../../sim/faults",
            "..",
            "a/../b",
            "a\\b",
            "m:",
            ":tag",
            "/m",
            "a/b/c/d",
            "me.you/m",
            "m:t:u",
            "m m",
            "m%2F",
            "m?x=1",
            "m#x",
            "m@sha256-0",
            long.as_str(),
        ] {
            assert!(!is_valid_model_name(bad), "{bad}");
        }
        assert!(is_valid_model_name(&"m".repeat(80)));
    }

    #[test]
    fn wrong_types_get_gos_words() {
        let chat = |body| refused(JobKind::Chat, body);
        assert_eq!(
            chat(json!({"model": "m", "messages": "x"})),
            Some((400, "json: cannot unmarshal string into Go struct field ChatRequest.messages of type []api.Message".into()))
        );
        assert_eq!(
            chat(json!({"model": "m", "messages": [{"role": "user", "content": 5}]})),
            Some((400, "json: cannot unmarshal number into Go struct field ChatRequest.messages.content of type string".into()))
        );
        assert_eq!(
            chat(json!({"model": "m", "messages": [], "options": "x"})),
            Some((400, "json: cannot unmarshal string into Go struct field ChatRequest.options of type map[string]interface {}".into()))
        );
        assert_eq!(
            chat(json!({"model": "m", "tools": "x"})),
            Some((400, "json: cannot unmarshal string into Go struct field ChatRequest.tools of type []api.Tool".into()))
        );
        assert_eq!(
            chat(json!({"model": "m", "top_logprobs": 1.5})),
            Some((400, "json: cannot unmarshal number 1.5 into Go struct field ChatRequest.top_logprobs of type int".into()))
        );
        assert_eq!(
            refused(
                JobKind::Generate,
                json!({"model": "m", "prompt": "p", "format": 5})
            ),
            Some((
                500,
                "invalid format: \"5\"; expected \"json\" or a valid JSON Schema object".into()
            ))
        );
        assert_eq!(
            refused(
                JobKind::Generate,
                json!({"model": "m", "prompt": "p", "options": {"num_ctx": "big"}})
            ),
            Some((500, "option \"num_ctx\" must be of type integer".into()))
        );
        assert_eq!(
            chat(json!({"model": "m", "keep_alive": "300"})),
            Some((400, "time: missing unit in duration \"300\"".into()))
        );
        assert_eq!(
            chat(json!({"model": "m", "think": "hard"})),
            Some((400, "invalid think value: \"hard\" (must be \"high\", \"medium\", \"low\", \"max\", true, or false)".into()))
        );
        assert_eq!(
            chat(
                json!({"model": "m", "messages": [{"role": "user", "content": "x", "images": ["abc"]}]})
            ),
            Some((400, "illegal base64 data at input byte 0".into()))
        );
    }

    #[test]
    fn what_the_clients_send_passes() {
        let chat = json!({
            "model": "m", "stream": false, "tools": [{"type": "function", "function": {"name": "f",
            "description": "d", "parameters": {"type": "object", "required": ["a"], "properties": {"a":
            {"type": ["string", "null"], "description": "x", "enum": ["p"]}}}}}], "keep_alive": "5m",
            "think": "low", "format": {"type": "object"}, "options": {"temperature": 0.2, "num_ctx": 2048,
            "stop": ["x"], "mirostat": 1, "use_mmap": true},
            "messages": [{"role": "user", "content": "hi", "images": ["aGk=", "aGVsbG8gd29ybGQ=\n"]},
                {"role": "assistant", "content": "", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]},
                {"role": "tool", "content": "1", "tool_name": "f"}]
        });
        assert_eq!(refused(JobKind::Chat, chat), None);
        let unload = json!({"model": "m", "messages": [], "keep_alive": 0, "format": 5});
        assert_eq!(refused(JobKind::Chat, unload), None);
        let generate = json!({"model": "m", "prompt": "p", "context": [1, 2], "raw": false,
            "images": [], "width": 5, "format": "json", "keep_alive": -1});
        assert_eq!(refused(JobKind::Generate, generate), None);
        let openai = json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "text",
            "text": "x"}, {"type": "image_url", "image_url": {"url": "data:image/png;base64,aGk="}}]}],
            "stream": true, "stream_options": {"include_usage": true}, "temperature": 0,
            "response_format": {"type": "json_schema", "json_schema": {"schema": {}}}, "reasoning_effort": "low"});
        assert_eq!(refused(JobKind::OpenAiChat, openai), None);
    }
}

/// Properties over arbitrary bodies and names: the checks never panic, refuse only
/// with Ollama's statuses, and agree with the rules they copy.
#[cfg(test)]
mod fuzz {
    use super::*;
    use crate::model_name::{model_key, strategies};
    use base64::Engine;
    use proptest::arbitrary::any;
    use proptest::prelude::*;

    /// A body that passes for its kind, to mutate one field of.
    fn valid_body(kind: JobKind) -> Map<String, Value> {
        let body = match kind {
            JobKind::Chat => {
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
            }
            JobKind::Generate => serde_json::json!({"model": "m", "prompt": "hi"}),
            JobKind::OpenAiChat => {
                serde_json::json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
            }
            JobKind::OpenAiCompletion => serde_json::json!({"model": "m", "prompt": "hi"}),
            JobKind::OpenAiResponses => {
                serde_json::json!({"model": "m", "input": [{"role": "user", "content": "hi"}]})
            }
            JobKind::AnthropicMessages => {
                serde_json::json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
            }
            JobKind::Embed => serde_json::json!({"model": "m", "input": ["a", "b"]}),
            JobKind::OpenAiEmbedding => serde_json::json!({"model": "m", "input": "hi"}),
        };
        match body {
            Value::Object(fields) => fields,
            _ => unreachable!("an object"),
        }
    }

    /// Replaces the value at a path of object keys and array indices, as far as the
    /// path goes in `value`.
    fn replace_at(value: &mut Value, path: &[(String, usize)], new: Value) {
        let Some(((key, index), rest)) = path.split_first() else {
            *value = new;
            return;
        };
        match value {
            Value::Object(fields) => {
                let slot = fields.entry(key.clone()).or_insert(Value::Null);
                replace_at(slot, rest, new);
            }
            Value::Array(items) if !items.is_empty() => {
                let len = items.len();
                replace_at(&mut items[index % len], rest, new);
            }
            other => *other = new,
        }
    }

    fn checked(kind: JobKind, body: &Map<String, Value>) -> Result<(), TestCaseError> {
        if let Err(error) = queued_request(kind, body) {
            let status = error.status().as_u16();
            let refused_by_runner = matches!(error, ApiError::RunnerRefused(_));
            prop_assert!(
                status == 400 || (status == 500 && refused_by_runner),
                "{status} {error} for {}",
                Value::Object(body.clone())
            );
        }
        Ok(())
    }

    /// One part of a name by Ollama's rules: a word character, then up to `max - 1`
    /// of those, `-`, `_` and (except in a namespace) `.`.
    fn part(max: usize, dots: bool) -> impl Strategy<Value = String> {
        let rest = if dots {
            "[a-zA-Z0-9_.-]"
        } else {
            "[a-zA-Z0-9_-]"
        };
        (
            "[a-zA-Z0-9_]",
            prop::collection::vec(prop::string::string_regex(rest).unwrap(), 0..max),
        )
            .prop_map(|(first, rest)| first + &rest.concat())
    }

    /// A model name Ollama accepts: `[[scheme://]host[:port]/]namespace/]model[:tag]`.
    fn valid_name() -> impl Strategy<Value = String> {
        let host = (
            prop::option::of(prop::sample::select(vec!["http://", "https://"])),
            part(40, true),
            prop::option::of(1u16..),
        )
            .prop_map(|(scheme, host, port)| {
                let port = port.map(|p| format!(":{p}")).unwrap_or_default();
                format!("{}{host}{port}", scheme.unwrap_or(""))
            });
        let prefix = prop::option::of((prop::option::of(host), part(80, false)));
        (prefix, part(80, true), prop::option::of(part(80, true))).prop_map(
            |(prefix, model, tag)| {
                let prefix = match prefix {
                    None => String::new(),
                    Some((None, namespace)) => format!("{namespace}/"),
                    Some((Some(host), namespace)) => format!("{host}/{namespace}/"),
                };
                let tag = tag.map(|t| format!(":{t}")).unwrap_or_default();
                format!("{prefix}{model}{tag}")
            },
        )
    }

    fn unit() -> impl Strategy<Value = (&'static str, f64)> {
        prop::sample::select(vec![
            ("ns", 1.0),
            ("us", 1e3),
            ("µs", 1e3),
            ("ms", 1e6),
            ("s", 1e9),
            ("m", 60e9),
            ("h", 3600e9),
        ])
    }

    proptest! {
        #[test]
        fn any_body_of_any_kind_is_passed_or_refused_as_ollama_would(
            kind in prop::sample::select(JobKind::ALL.to_vec()),
            body in strategies::object(),
        ) {
            checked(kind, &body)?;
        }

        #[test]
        fn a_valid_body_with_one_value_replaced_is_passed_or_refused_as_ollama_would(
            kind in prop::sample::select(JobKind::ALL.to_vec()),
            path in prop::collection::vec((strategies::key(), 0usize..4), 1..5),
            new in strategies::json(),
        ) {
            let mut body = Value::Object(valid_body(kind));
            replace_at(&mut body, &path, new);
            if let Value::Object(fields) = &body {
                checked(kind, fields)?;
            }
        }

        #[test]
        fn the_valid_bodies_pass(kind in prop::sample::select(JobKind::ALL.to_vec())) {
            prop_assert!(queued_request(kind, &valid_body(kind)).is_ok());
        }

        #[test]
        fn names_never_panic(name in any::<String>()) {
            let _ = model_name(&name);
        }

        #[test]
        fn a_valid_name_stays_valid_through_model_key(name in valid_name()) {
            prop_assert!(is_valid_model_name(&name), "{}", name);
            prop_assert!(is_valid_model_name(&model_key(&name)), "{}", model_key(&name));
        }

        #[test]
        fn names_with_url_syntax_are_refused(
            name in valid_name(),
            cut in any::<prop::sample::Index>(),
            bad in prop::sample::select(vec!["%2F", "?", "#", "\\", " ", "%", "@", "\n", "//", "/../"]),
        ) {
            let at = cut.index(name.len() + 1);
            // Insert at a character boundary (names are ASCII).
            let spoiled = format!("{}{bad}{}", &name[..at], &name[at..]);
            prop_assert!(!is_valid_model_name(&spoiled), "{}", spoiled);
        }

        #[test]
        fn durations_never_panic(text in any::<String>()) {
            let _ = go_duration(&text);
            let _ = keep_alive(&At::root("ChatRequest"), &Value::String(text));
        }

        #[test]
        fn durations_add_up_their_amounts(
            negative in any::<bool>(),
            amounts in prop::collection::vec((0u32..100_000, unit()), 1..4),
        ) {
            let text = amounts.iter().map(|(n, (unit, _))| format!("{n}{unit}")).collect::<String>();
            let text = if negative { format!("-{text}") } else { text };
            let expected: f64 = amounts.iter().map(|(n, (_, scale))| f64::from(*n) * scale).sum();
            prop_assert_eq!(go_duration(&text), Ok(expected), "{}", text);
        }

        #[test]
        fn base64_of_any_bytes_is_accepted(
            bytes in prop::collection::vec(any::<u8>(), 0..64),
            wrap in 1usize..80,
        ) {
            let encoded = base64::engine::general_purpose::STANDARD.encode(&bytes);
            prop_assert_eq!(base64_error_at(encoded.as_bytes()), None, "{}", encoded);
            // Go skips line breaks anywhere.
            let wrapped: Vec<u8> = encoded
                .as_bytes()
                .chunks(wrap)
                .flat_map(|line| line.iter().copied().chain(*b"\r\n"))
                .collect();
            prop_assert_eq!(base64_error_at(&wrapped), None);
        }

        #[test]
        fn base64_errors_point_inside_the_text(text in prop::collection::vec(any::<u8>(), 0..64)) {
            if let Some(at) = base64_error_at(&text) {
                prop_assert!(at <= text.len());
            }
        }
    }
}
