//! A batch's input, line by line: reading the file (streamed, never whole in memory),
//! checking each line as OpenAI does before anything runs, and turning a line into its job.
//!
//! Line numbers in errors count every line of the file from 1, as an editor does; a
//! line's *index* counts only the non-empty lines from 0, and names its job.

use std::collections::{HashMap, HashSet};
use std::path::Path;

use foreman_store::{JobKind, NewJob};
use serde_json::{Map, Value, json};
use tokio::io::{AsyncBufReadExt, BufReader};

use super::ids;
use crate::targets::{ModelCheck, Targets};

/// The most validation errors a failed batch shows.
pub const MAX_ERRORS: usize = 1_000;

/// One request of a batch, as its line gives it.
#[derive(Debug, Clone, PartialEq)]
pub struct Line {
    pub custom_id: String,
    pub body: Map<String, Value>,
}

/// Reads the non-empty lines of a file in order, with their line numbers.
pub struct Reader {
    lines: tokio::io::Lines<BufReader<tokio::fs::File>>,
    number: u64,
}

impl Reader {
    pub async fn open(path: &Path) -> std::io::Result<Reader> {
        let file = tokio::fs::File::open(path).await?;
        Ok(Reader {
            lines: BufReader::with_capacity(256 * 1024, file).lines(),
            number: 0,
        })
    }

    /// The next non-empty line and its number (from 1).
    pub async fn next(&mut self) -> std::io::Result<Option<(u64, String)>> {
        while let Some(text) = self.lines.next_line().await? {
            self.number += 1;
            if !text.trim().is_empty() {
                return Ok(Some((self.number, text)));
            }
        }
        Ok(None)
    }
}

/// A validation error in OpenAI's shape.
pub fn error(
    code: &str,
    message: impl Into<String>,
    param: Option<&str>,
    line: Option<u64>,
) -> Value {
    json!({"code": code, "message": message.into(), "param": param, "line": line})
}

/// Parses a line already known valid (the driver reads the input again after
/// validation): the custom id and body.
pub fn parse(text: &str) -> Option<Line> {
    let Value::Object(mut fields) = serde_json::from_str::<Value>(text).ok()? else {
        return None;
    };
    let custom_id = fields.get("custom_id")?.as_str()?.to_owned();
    let Some(Value::Object(body)) = fields.remove("body") else {
        return None;
    };
    Some(Line { custom_id, body })
}

/// What validation found: the number of lines, or the errors by line.
#[derive(Debug, PartialEq)]
pub enum Checked {
    Valid { lines: u64 },
    Invalid { errors: Vec<Value> },
}

/// Checks every line of the input as OpenAI does before a batch runs: JSON, a unique
/// `custom_id`, `method` POST, `url` the batch's endpoint, and a body the live route would
/// accept (the same validator), for a model some target has and the batch's key (if
/// any) may use.
pub async fn check(
    path: &Path,
    endpoint: &str,
    kind: JobKind,
    max_lines: u64,
    targets: &Targets,
    key: Option<&crate::keys::live::LiveKey>,
) -> std::io::Result<Checked> {
    let mut reader = Reader::open(path).await?;
    let mut errors = Vec::new();
    let mut seen: HashSet<String> = HashSet::new();
    let mut models: HashMap<String, ModelCheck> = HashMap::new();
    let mut lines = 0u64;
    while let Some((number, text)) = reader.next().await? {
        lines += 1;
        if lines > max_lines {
            errors.push(error(
                "too_many_lines",
                format!("the input has more than {max_lines} requests, the most a batch takes"),
                None,
                Some(number),
            ));
            break;
        }
        if let Some(found) = check_line(&text, number, endpoint, kind, &mut seen) {
            errors.push(found);
        } else if let Some(line) = parse(&text) {
            let model = line.body.get("model").and_then(Value::as_str).unwrap_or("");
            let known = match models.get(model) {
                Some(known) => *known,
                None => {
                    let known = targets.check_model(model).await;
                    models.insert(model.to_owned(), known);
                    known
                }
            };
            if known == ModelCheck::Unknown {
                errors.push(error(
                    "model_not_found",
                    format!("model '{model}' not found"),
                    Some("body.model"),
                    Some(number),
                ));
            } else if let Some(key) = key
                && !key.grant.allows_model(model)
            {
                errors.push(error(
                    "model_not_allowed",
                    format!("API key '{}' may not use model '{model}'", key.name),
                    Some("body.model"),
                    Some(number),
                ));
            }
        }
        if errors.len() >= MAX_ERRORS {
            break;
        }
    }
    if lines == 0 {
        errors.push(error(
            "empty_file",
            "the input file has no requests",
            None,
            None,
        ));
    }
    Ok(match errors.is_empty() {
        true => Checked::Valid { lines },
        false => Checked::Invalid { errors },
    })
}

/// The error of one line, if it has one.
fn check_line(
    text: &str,
    number: u64,
    endpoint: &str,
    kind: JobKind,
    seen: &mut HashSet<String>,
) -> Option<Value> {
    let at = Some(number);
    let fields = match serde_json::from_str::<Value>(text) {
        Ok(Value::Object(fields)) => fields,
        Ok(_) => {
            return Some(error(
                "invalid_json_line",
                "the line is not a JSON object",
                None,
                at,
            ));
        }
        Err(e) => {
            return Some(error(
                "invalid_json_line",
                format!("the line is not valid JSON: {e}"),
                None,
                at,
            ));
        }
    };
    let custom_id = match fields.get("custom_id") {
        Some(Value::String(id)) if !id.is_empty() => id,
        _ => {
            return Some(error(
                "missing_custom_id",
                "custom_id is required: a non-empty string",
                Some("custom_id"),
                at,
            ));
        }
    };
    if !seen.insert(custom_id.clone()) {
        return Some(error(
            "duplicate_custom_id",
            format!("custom_id {custom_id:?} is used by an earlier line"),
            Some("custom_id"),
            at,
        ));
    }
    if fields.get("method").and_then(Value::as_str) != Some("POST") {
        return Some(error(
            "invalid_method",
            "method must be POST",
            Some("method"),
            at,
        ));
    }
    if fields.get("url").and_then(Value::as_str) != Some(endpoint) {
        return Some(error(
            "invalid_url",
            format!("url must be the batch's endpoint, {endpoint}"),
            Some("url"),
            at,
        ));
    }
    let Some(Value::Object(body)) = fields.get("body") else {
        return Some(error(
            "invalid_request",
            "body is required: the request, as an object",
            Some("body"),
            at,
        ));
    };
    if let Err(message) = crate::api::check_line_body(kind, body) {
        return Some(error("invalid_request", message, Some("body"), at));
    }
    None
}

/// What a line's job is queued with.
pub struct JobSettings<'a> {
    pub batch_id: &'a str,
    pub created_at: i64,
    pub kind: JobKind,
    pub priority: i32,
    pub max_attempts: u32,
    pub pins: &'a [crate::scheduler::load_key::Pin],
    /// Who created the batch: its lines are that caller's jobs (fair share, usage).
    pub caller: Option<&'a foreman_store::JobCaller>,
}

/// The job of line `index`: a generating body streamed (the runner relays and assembles
/// it, with `usage` on OpenAI's routes), an embedding body as it came (the target answers
/// it in one JSON object, its `usage` included, which the runner stores whole), the
/// model's pins applied, its id and key derived from the batch and the index, and the
/// batch, line and custom id in its metadata.
pub fn job(settings: &JobSettings<'_>, index: u64, line: &Line) -> NewJob {
    use crate::scheduler::load_key;
    let model = line.body.get("model").and_then(Value::as_str).unwrap_or("");
    let mut body = line.body.clone();
    if !matches!(settings.kind, JobKind::Embed | JobKind::OpenAiEmbedding) {
        body.insert("stream".into(), Value::Bool(true));
    }
    if matches!(
        settings.kind,
        JobKind::OpenAiChat | JobKind::OpenAiCompletion
    ) {
        // The answer a client gets without streaming has `usage`; streamed, only when
        // asked for.
        body.insert("stream_options".into(), json!({"include_usage": true}));
    }
    let body = load_key::apply_pins(settings.pins, settings.kind, model, &body).unwrap_or(body);
    NewJob {
        id: Some(ids::line_job_id(
            settings.batch_id,
            settings.created_at,
            index,
        )),
        kind: settings.kind,
        model: crate::model_name::model_key(model),
        load_options: load_key::load_options(settings.kind, &body),
        payload: Value::Object(body).to_string(),
        sync: false,
        priority: settings.priority,
        max_attempts: settings.max_attempts,
        idempotency_key: Some(ids::line_key(settings.batch_id, index)),
        webhook_url: None,
        metadata: Some(
            json!({"batch_id": settings.batch_id, "line": index, "custom_id": line.custom_id})
                .to_string(),
        ),
        caller: settings.caller.cloned(),
    }
}
