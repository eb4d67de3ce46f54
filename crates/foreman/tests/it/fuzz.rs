//! Fuzzing the HTTP surface: one foreman in front of the simulator gets generated
//! bodies (any JSON, the route's fields with values of any type, a valid body with
//! one value replaced, truncated JSON, random bytes, numbers out of range, deep
//! nesting), query strings and headers on every request route.
//!
//! Whatever comes in, foreman must: answer no 5xx of its own (a 500 only where
//! Ollama's runner refuses a value, or where the target itself answers 500 to the
//! same request; 502, 503 and 504 as the target's), answer a body that is not one
//! JSON object with a 400, shape every JSON error as its route family does, keep
//! no job for a request it refused, leave no job queued or running, and keep
//! answering `/healthz`.
//!
//! The requests are drawn by proptest's runner (a new seed each run; the failing
//! request is printed in full). `PROPTEST_CASES` (256 by default) sets how many per
//! route family, divided by eight, so a CI run sends about 400 requests in under a second.

use std::collections::HashSet;

use futures::StreamExt;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::TestRunner;
use serde_json::{Map, Value, json};

use crate::common::*;

/// The error shape a route answers in.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Family {
    /// `{"error": "..."}`: the native routes and foreman's own `/jobs`.
    Ollama,
    /// `{"error": {"message": "...", ...}}` under `/v1`.
    OpenAi,
    /// `{"type": "error", "error": {"type", "message"}, ...}` on `/v1/messages`.
    Anthropic,
}

/// Whether foreman answers from its queue or relays to the target at once.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Way {
    Queued,
    Direct,
    Jobs,
}

/// A POST route with a body that passes, and the fields its request type declares.
struct Route {
    path: &'static str,
    family: Family,
    way: Way,
    valid: fn(&str) -> Value,
    fields: &'static [&'static str],
}

const ROUTES: &[Route] = &[
    Route {
        path: "/api/chat",
        family: Family::Ollama,
        way: Way::Queued,
        valid: |model| json!({"model": model, "messages": [{"role": "user", "content": "hi"}], "stream": false}),
        fields: &[
            "model",
            "messages",
            "stream",
            "format",
            "keep_alive",
            "tools",
            "options",
            "think",
            "logprobs",
            "top_logprobs",
        ],
    },
    Route {
        path: "/api/generate",
        family: Family::Ollama,
        way: Way::Queued,
        valid: |model| json!({"model": model, "prompt": "hi", "stream": false}),
        fields: &[
            "model",
            "prompt",
            "suffix",
            "system",
            "template",
            "context",
            "stream",
            "raw",
            "format",
            "keep_alive",
            "images",
            "options",
            "think",
        ],
    },
    Route {
        path: "/api/embed",
        family: Family::Ollama,
        way: Way::Direct,
        valid: |model| json!({"model": model, "input": "hi"}),
        fields: &[
            "model",
            "input",
            "truncate",
            "options",
            "keep_alive",
            "dimensions",
        ],
    },
    Route {
        path: "/api/show",
        family: Family::Ollama,
        way: Way::Direct,
        valid: |model| json!({"model": model}),
        fields: &["model", "name", "verbose", "system", "template", "options"],
    },
    Route {
        path: "/v1/chat/completions",
        family: Family::OpenAi,
        way: Way::Queued,
        valid: |model| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]}),
        fields: &[
            "model",
            "messages",
            "stream",
            "stream_options",
            "max_tokens",
            "seed",
            "stop",
            "temperature",
            "response_format",
            "tools",
            "reasoning",
            "reasoning_effort",
        ],
    },
    Route {
        path: "/v1/completions",
        family: Family::OpenAi,
        way: Way::Queued,
        valid: |model| json!({"model": model, "prompt": "hi"}),
        fields: &[
            "model",
            "prompt",
            "stream",
            "stream_options",
            "max_tokens",
            "seed",
            "stop",
            "temperature",
            "suffix",
        ],
    },
    Route {
        path: "/v1/responses",
        family: Family::OpenAi,
        way: Way::Queued,
        valid: |model| json!({"model": model, "input": "hi"}),
        fields: &[
            "model",
            "input",
            "instructions",
            "max_output_tokens",
            "stream",
            "temperature",
            "tools",
            "reasoning",
            "include",
        ],
    },
    Route {
        path: "/v1/messages",
        family: Family::Anthropic,
        way: Way::Queued,
        valid: |model| json!({"model": model, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
        fields: &[
            "model",
            "max_tokens",
            "messages",
            "system",
            "stream",
            "temperature",
            "top_k",
            "stop_sequences",
            "tools",
        ],
    },
    Route {
        path: "/v1/embeddings",
        family: Family::OpenAi,
        way: Way::Direct,
        valid: |model| json!({"model": model, "input": "hi"}),
        fields: &["model", "input", "encoding_format", "dimensions"],
    },
    Route {
        path: "/jobs",
        family: Family::Ollama,
        way: Way::Jobs,
        valid: |model| {
            json!({"kind": "chat", "request": {"model": model,
                "messages": [{"role": "user", "content": "hi"}]}})
        },
        fields: &["kind", "request", "priority", "webhook", "metadata"],
    },
];

/// One generated request.
#[derive(Debug, Clone)]
struct Fuzzed {
    method: reqwest::Method,
    /// Path and query, as sent.
    target: String,
    headers: Vec<(&'static str, Vec<u8>)>,
    body: Option<Vec<u8>>,
    /// Index into [`ROUTES`] for POSTs; `None` for the `/jobs` GETs.
    route: Option<usize>,
}

impl Fuzzed {
    fn describe(&self) -> String {
        let body = self
            .body
            .as_ref()
            .map(|b| String::from_utf8_lossy(&b[..b.len().min(600)]).into_owned());
        format!(
            "{} {} headers {:?} body {:?}",
            self.method,
            self.target,
            self.headers
                .iter()
                .map(|(n, v)| (n, String::from_utf8_lossy(v)))
                .collect::<Vec<_>>(),
            body
        )
    }
}

// ---------------------------------------------------------------------------------
// Values.

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
    "role",
    "content",
    "images",
    "function",
    "name",
    "arguments",
    "type",
    "parameters",
    "properties",
    "input",
    "num_ctx",
    "use_mmap",
    "stop",
    "temperature",
    "reasoning",
    "effort",
    "image_url",
    "url",
    "source",
    "tool_calls",
    "request",
    "kind",
];

const WORDS: &[&str] = &[
    "",
    "json",
    "0",
    "0s",
    "-0s",
    "5m",
    "high",
    "text",
    "image_url",
    "input_file",
    "message",
    "image",
    "base64",
    "tool_use",
    "user",
    "assistant",
    "aGk=",
    "data:x;base64,aGk=",
    CHAT,
    CHAT2,
    EMBED,
    "nope:1b",
    "../../sim/faults",
    "chat",
    "generate",
    "json_schema",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::sample::select(KEYS).prop_map(String::from),
        1 => "[a-zA-Z_]{0,8}",
    ]
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(WORDS).prop_map(String::from),
        1 => any::<String>(),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-2i64..=2).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter_map("finite", |f| serde_json::Number::from_f64(f)
            .map(Value::Number)),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 40, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::vec((key(), inner), 0..5)
                .prop_map(|pairs| Value::Object(pairs.into_iter().collect())),
        ]
    })
}

/// A model: mostly one the simulator has.
fn model() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => prop::sample::select(vec![CHAT, CHAT2, EMBED]).prop_map(String::from),
        1 => Just("nope:1b".to_string()),
        1 => "[a-zA-Z0-9._:/%-]{1,12}",
    ]
}

/// Replaces the value at a path of keys and indices, as far as the path goes.
fn replace_at(value: &mut Value, path: &[(String, usize)], new: Value) {
    let Some(((key, index), rest)) = path.split_first() else {
        *value = new;
        return;
    };
    match value {
        Value::Object(fields) => {
            replace_at(fields.entry(key.clone()).or_insert(Value::Null), rest, new)
        }
        Value::Array(items) if !items.is_empty() => {
            let len = items.len();
            replace_at(&mut items[index % len], rest, new);
        }
        other => *other = new,
    }
}

/// Number texts no f64 or i64 holds, and other edge cases.
const NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "1e-400",
    "123456789012345678901234567890",
    "-9223372036854775809",
    "18446744073709551616",
    "-0",
    "0.0000000000000000000001",
    "1E2",
    "9007199254740993",
];

/// A body for route `index`.
fn body(index: usize) -> BoxedStrategy<Vec<u8>> {
    let route = &ROUTES[index];
    let valid = model().prop_map(move |model| (route.valid)(&model)).boxed();
    let fields = route.fields;
    let shaped = prop::collection::vec((prop::sample::select(fields), json_value()), 0..6)
        .prop_map(|pairs| {
            let fields: Map<String, Value> =
                pairs.into_iter().map(|(k, v)| (k.to_string(), v)).collect();
            Value::Object(fields)
        });
    let mutated = (
        valid.clone(),
        prop::collection::vec(
            (
                prop_oneof![prop::sample::select(fields).prop_map(String::from), key()],
                0usize..3,
            ),
            1..4,
        ),
        json_value(),
    )
        .prop_map(
            |(mut body, path, new): (Value, Vec<(String, usize)>, Value)| {
                replace_at(&mut body, &path, new);
                body
            },
        )
        .boxed();
    let serialized = |s: BoxedStrategy<Value>| s.prop_map(|v| v.to_string().into_bytes());
    prop_oneof![
        2 => serialized(valid.clone()),
        2 => serialized(json_value().boxed()),
        3 => serialized(shaped.boxed()),
        6 => serialized(mutated.clone()),
        2 => (mutated.clone(), any::<prop::sample::Index>()).prop_map(|(body, cut)| {
            let text = body.to_string().into_bytes();
            text[..cut.index(text.len())].to_vec()
        }),
        1 => prop::collection::vec(any::<u8>(), 0..200),
        2 => (valid.clone(), prop::sample::select(fields), prop::sample::select(NUMBERS))
            .prop_map(|(mut body, field, number)| {
                body[field] = json!("__number__");
                body.to_string().replace("\"__number__\"", number).into_bytes()
            }),
        1 => (valid, prop::sample::select(fields), 1usize..400, any::<bool>())
            .prop_map(|(mut body, field, depth, closed)| {
                body[field] = json!("__deep__");
                let deep = if closed {
                    format!("{}{}", "[".repeat(depth), "]".repeat(depth))
                } else {
                    "{\"a\":".repeat(depth) + "1" + &"}".repeat(depth)
                };
                body.to_string().replace("\"__deep__\"", &deep).into_bytes()
            }),
    ]
    .boxed()
}

/// Headers foreman reads on the POST routes.
fn headers() -> impl Strategy<Value = Vec<(&'static str, Vec<u8>)>> {
    let value = prop_oneof![
        prop::sample::select(vec![
            "0",
            "5",
            "-20",
            "20",
            "21",
            " 3 ",
            "1.5",
            "abc",
            "99999999999",
            ""
        ])
        .prop_map(|v| v.as_bytes().to_vec()),
        // Visible ASCII and obs-text: what a header value may hold.
        prop::collection::vec(prop_oneof![32u8..127, 128u8..=255], 0..20),
    ];
    let content_type = prop::sample::select(vec![
        "application/json",
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
    ]);
    (
        prop::collection::vec(value.clone(), 0..3),
        prop::option::of(content_type),
        prop::option::of(value),
    )
        .prop_map(|(priorities, content_type, idempotency)| {
            let mut headers: Vec<(&'static str, Vec<u8>)> = priorities
                .into_iter()
                .map(|p| ("x-foreman-priority", p))
                .collect();
            headers.extend(content_type.map(|c| ("content-type", c.as_bytes().to_vec())));
            headers.extend(idempotency.map(|k| ("idempotency-key", k)));
            headers
        })
}

/// Percent-encodes everything but unreserved characters.
fn encoded(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn query_value() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "",
            "0",
            "1",
            "-1",
            "1000",
            "1001",
            "4294967296",
            "abc",
            "queued",
            "running",
            "succeeded",
            "failed",
            "cancelled",
            "QUEUED",
            "2026-01-31T12:00:00Z",
            "1969-12-31T23:59:59Z",
            "9999-12-31T23:59:59Z",
            "0000-01-01T00:00:00Z",
            "2026-13-45T99:99:99Z",
            "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            "0000000000000000000000000Z",
            "ZZZZZZZZZZZZZZZZZZZZZZZZZZ",
            CHAT,
            "../../sim/faults",
            "10ms",
            "1s",
            "1y",
            "99999999999999999999s",
            "-1s",
            "1.5s",
        ])
        .prop_map(encoded),
        any::<String>().prop_map(|t| encoded(&t)),
        // Raw bytes that are legal in a URL but may not decode.
        "[a-zA-Z0-9%&=+;,]{0,12}",
    ]
}

fn query() -> impl Strategy<Value = String> {
    let name = prop::sample::select(vec![
        "limit",
        "cursor",
        "state",
        "model",
        "created_after",
        "created_before",
        "wait",
        "x",
    ]);
    prop::collection::vec((name, query_value()), 0..4).prop_map(|pairs| {
        pairs
            .into_iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("&")
    })
}

fn post_to(index: usize) -> impl Strategy<Value = Fuzzed> {
    (body(index), headers()).prop_map(move |(body, headers)| Fuzzed {
        method: reqwest::Method::POST,
        target: ROUTES[index].path.to_string(),
        headers,
        body: Some(body),
        route: Some(index),
    })
}

fn list() -> impl Strategy<Value = Fuzzed> {
    query().prop_map(|query| Fuzzed {
        method: reqwest::Method::GET,
        target: format!("/jobs?{query}"),
        headers: Vec::new(),
        body: None,
        route: None,
    })
}

/// `GET /jobs/{id}?wait=`: ids of no job (a wait on one ends at once).
fn get_one() -> impl Strategy<Value = Fuzzed> {
    let id = prop_oneof![
        Just("01ARZ3NDEKTSV4RRFFQ69G5FAV".to_string()),
        "[0-9A-Z]{26}",
        any::<String>()
            .prop_filter("one segment", |s| !s.is_empty())
            .prop_map(|s| encoded(&s)),
    ];
    (id, query_value()).prop_map(|(id, wait)| Fuzzed {
        method: reqwest::Method::GET,
        target: format!("/jobs/{id}?wait={wait}"),
        headers: Vec::new(),
        body: None,
        route: None,
    })
}

/// Draws `count` values of a strategy.
fn draw<S: Strategy>(runner: &mut TestRunner, strategy: S, count: usize) -> Vec<S::Value> {
    (0..count)
        .map(|_| strategy.new_tree(runner).expect("a value").current())
        .collect()
}

fn cases_per_family() -> usize {
    let cases: usize = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(256);
    (cases / 8).max(8)
}

// ---------------------------------------------------------------------------------
// Checks.

struct Answer {
    status: u16,
    job_id: Option<String>,
    content_type: String,
    body: Vec<u8>,
}

async fn send(client: &reqwest::Client, base: &str, request: &Fuzzed) -> Answer {
    let mut builder = client.request(request.method.clone(), format!("{base}{}", request.target));
    for (name, value) in &request.headers {
        builder = builder.header(
            *name,
            reqwest::header::HeaderValue::from_bytes(value).expect("a legal value"),
        );
    }
    if let Some(body) = &request.body {
        builder = builder.body(body.clone());
    }
    let response = builder
        .send()
        .await
        .unwrap_or_else(|e| panic!("no answer: {e}: {}", request.describe()));
    let status = response.status().as_u16();
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let job_id = header("x-foreman-job-id");
    let content_type = header("content-type").unwrap_or_default();
    let body = response
        .bytes()
        .await
        .map(|b| b.to_vec())
        .unwrap_or_default();
    Answer {
        status,
        job_id,
        content_type,
        body,
    }
}

/// The message of an error body in the family's shape, or why it is not.
fn error_message(family: Family, body: &Value) -> Result<String, String> {
    let message = match family {
        Family::Ollama => body["error"].as_str(),
        Family::OpenAi => body["error"]["message"].as_str(),
        Family::Anthropic => {
            if body["type"] != "error" || !body["error"]["type"].is_string() {
                return Err(format!("not Anthropic's shape: {body}"));
            }
            body["error"]["message"].as_str()
        }
    };
    message
        .map(str::to_string)
        .ok_or_else(|| format!("not the {family:?} shape: {body}"))
}

/// The 500s Ollama's runner answers for a value it refuses, which foreman answers
/// at once in its place.
fn refused_by_runner(message: &str) -> bool {
    (message.starts_with("option \"") && message.contains("must be of"))
        || message.starts_with("invalid format: ")
}

/// What is wrong with an answer, if anything; notes what is not JSON today.
async fn check(
    client: &reqwest::Client,
    sim_url: &str,
    request: &Fuzzed,
    answer: &Answer,
    notes: &mut Vec<String>,
) -> Result<(), String> {
    let family = match request.route {
        Some(index) => ROUTES[index].family,
        None => Family::Ollama,
    };
    let way = request.route.map(|index| ROUTES[index].way);
    let is_object = request
        .body
        .as_ref()
        .is_some_and(|b| matches!(serde_json::from_slice::<Value>(b), Ok(Value::Object(_))));
    if request.body.is_some() && !is_object && answer.status != 400 {
        return Err(format!(
            "{} for a body that is not one JSON object",
            answer.status
        ));
    }
    if answer.status < 400 {
        return Ok(());
    }
    let parsed = serde_json::from_slice::<Value>(&answer.body);
    let message = match parsed {
        Ok(body) => error_message(family, &body)?,
        Err(_) => {
            let text = String::from_utf8_lossy(&answer.body).into_owned();
            // Query-string errors are axum's text today (issue 13, item 9).
            if request.route.is_none() && answer.status == 400 {
                notes.push(format!("not JSON: {} {text:?}", request.target));
                return Ok(());
            }
            return Err(format!("not JSON ({}): {text:?}", answer.content_type));
        }
    };
    if answer.status >= 500 {
        let from_target = matches!(answer.status, 502..=504)
            || (answer.status == 500 && refused_by_runner(&message))
            || (answer.status == 500
                && way == Some(Way::Direct)
                && target_answers(client, sim_url, request).await == 500);
        if !from_target {
            return Err(format!("foreman's own {}: {message}", answer.status));
        }
    }
    // A refusal of foreman's own carries no job; one the target answered after the
    // job ran is a body the validation let through.
    if answer.status < 500 && answer.job_id.is_some() && way == Some(Way::Queued) {
        // A model's capabilities are the target's to know: a chat for an embedding
        // model is queued and refused by the target (a gap the types cannot close).
        if message.contains("does not support") {
            notes.push(format!("queued, then refused by the target: {message}"));
            return Ok(());
        }
        return Err(format!(
            "{} from the target after queueing (validation let it through): {message}",
            answer.status
        ));
    }
    Ok(())
}

/// The simulator's status for the same request sent to it directly.
async fn target_answers(client: &reqwest::Client, sim_url: &str, request: &Fuzzed) -> u16 {
    send(client, sim_url, request).await.status
}

#[tokio::test]
async fn fuzzed_requests_get_well_formed_answers_and_leave_no_stray_jobs() {
    // Fuzzed priorities reach the batch priority and below, where a request waits out
    // FOREMAN_PROTECT_WINDOW (60 s) before it may unload a model a higher request just
    // used, longer than a fuzzed request is given to answer. This test is about the
    // answers' shapes, not about when they come: no protection here (the scheduling
    // tests and `scheduler::protect_tests` cover it).
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.protect_window = std::time::Duration::ZERO;
    })
    .await;
    let client = client();
    let mut runner = TestRunner::default();
    let per_family = cases_per_family();
    let mut requests = Vec::new();
    for index in 0..ROUTES.len() {
        requests.extend(draw(&mut runner, post_to(index), per_family));
    }
    requests.extend(draw(&mut runner, list(), per_family));
    requests.extend(draw(&mut runner, get_one(), per_family));
    let started = std::time::Instant::now();
    let answers: Vec<(Fuzzed, Answer)> = futures::stream::iter(requests)
        .map(|request| {
            let (client, base) = (client.clone(), foreman.url.clone());
            async move {
                let answer = send(&client, &base, &request).await;
                (request, answer)
            }
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let sim_url = foreman.sim.url();
    let mut failures = Vec::new();
    let mut notes = Vec::new();
    let mut answered_ids = HashSet::new();
    for (request, answer) in &answers {
        if let Err(problem) = check(&client, &sim_url, request, answer, &mut notes).await {
            failures.push(format!("{problem}\n    {}", request.describe()));
        }
        answered_ids.extend(answer.job_id.clone());
        if request.route.is_some_and(|i| ROUTES[i].way == Way::Jobs) && answer.status < 300 {
            let body: Value = serde_json::from_slice(&answer.body).unwrap_or_default();
            answered_ids.extend(body["id"].as_str().map(str::to_string));
        }
    }
    // Long polls on the jobs that were made, with generated waits.
    let ids: Vec<String> = answered_ids.iter().cloned().collect();
    let waits = draw(
        &mut runner,
        prop::sample::select(vec!["0", "10ms", "1s", "abc", "-1s", "1.5s", ""]),
        ids.len(),
    );
    for (id, wait) in ids.iter().zip(waits) {
        let request = Fuzzed {
            method: reqwest::Method::GET,
            target: format!("/jobs/{id}?wait={wait}"),
            headers: Vec::new(),
            body: None,
            route: None,
        };
        let answer = send(&client, &foreman.url, &request).await;
        if let Err(problem) = check(&client, &sim_url, &request, &answer, &mut notes).await {
            failures.push(format!("{problem}\n    {}", request.describe()));
        }
    }
    eprintln!(
        "fuzz: {} requests in {:?}, {} jobs made; {} notes",
        answers.len() + ids.len(),
        started.elapsed(),
        ids.len(),
        notes.len()
    );
    let mut kinds: Vec<&str> = notes
        .iter()
        .map(|n| n.split(':').next().unwrap_or(""))
        .collect();
    kinds.sort();
    kinds.dedup();
    for kind in kinds {
        let note = notes
            .iter()
            .find(|n| n.starts_with(kind))
            .expect("a note of that kind");
        eprintln!("  {note}");
    }
    assert!(
        failures.is_empty(),
        "{} of {} answers are wrong:\n{}",
        failures.len(),
        answers.len(),
        failures
            .iter()
            .take(10)
            .cloned()
            .collect::<Vec<_>>()
            .join("\n")
    );

    // Every job foreman keeps is one a caller was told of, and each ends.
    let mut unsettled = Vec::new();
    eventually("every job to end", async || {
        let jobs = foreman.jobs().await;
        unsettled = jobs
            .iter()
            .filter(|job| !job.state.is_terminal())
            .map(|job| format!("{} {:?}", job.id, job.state))
            .collect();
        unsettled.is_empty()
    })
    .await;
    let strays: Vec<String> = foreman
        .jobs()
        .await
        .iter()
        .map(|job| job.id.to_string())
        .filter(|id| !answered_ids.contains(id))
        .collect();
    assert!(strays.is_empty(), "jobs nobody was told of: {strays:?}");
    let (status, _) = get_json(&client, format!("{}/healthz", foreman.url)).await;
    assert_eq!(status, 200, "foreman still answers");
    foreman.stop().await;
}

/// The bypass the name rules had: a name whose "scheme" held a path
/// (`a/../../../sim/faults?x=://h/n/m` passed as a host `h`) reached the
/// simulator's fault settings through `/v1/models/{model}`.
#[tokio::test]
async fn fuzz_found_a_scheme_that_carried_a_path_upstream() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    for name in [
        "a%2F..%2F..%2F..%2Fsim%2Ffaults%3Fx%3D:%2F%2Fh%2Fn%2Fm",
        "x%20y://h/n/m",
    ] {
        let response = client
            .get(format!("{}/v1/models/{name}", foreman.url))
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or_default();
        assert_eq!(status, 400, "{name}: {body}");
        assert_eq!(body["error"]["message"], "invalid model name", "{name}");
    }
    assert_eq!(
        foreman.sim.stats().requests_total,
        0,
        "nothing reached the target"
    );
    foreman.stop().await;
}

/// The simulator's bug the fuzz found: a `keep_alive` of 1e300 seconds put the
/// model's expiry past year 9999, `/api/ps` panicked printing it, and foreman, its
/// inventory unanswered, held every job as if the target were down.
#[tokio::test]
async fn fuzz_found_a_keep_alive_too_long_for_the_targets_ps() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    let mut body = chat_body(CHAT, "hi", false);
    body["keep_alive"] = json!(1e300);
    let (status, _, text) = post(&client, format!("{}/api/chat", foreman.url), &body).await;
    assert_eq!(status, 200, "{text}");
    let (status, ps) = get_json(&client, format!("{}/api/ps", foreman.sim.url())).await;
    assert_eq!(status, 200, "{ps}");
    let (status, _, text) = post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body(CHAT, "again", false),
    )
    .await;
    assert_eq!(status, 200, "{text}");
    foreman.stop().await;
}
