//! Embedding lines sent to the target in groups: which consecutive lines of an
//! embeddings batch share one call, the job that call is, and how many lines a stored
//! job covers.
//!
//! A target embeds many inputs in one call about as fast as one (the model is loaded,
//! the inputs go through in one pass), so an embeddings batch of one-string lines made
//! one call per line for nothing. Consecutive lines whose bodies are equal apart from a
//! text `input` (a string, or strings) become one job: the shared body, its `input` every
//! line's inputs in order. The job takes its first line's id and idempotency key, so
//! enqueueing the chunk again after a crash finds it; its metadata says how many lines
//! it covers and how many inputs each has, which is all a driver after a restart and the
//! finalisation need ([`covered`], `split.rs`).

use foreman_store::{Job, NewJob};
use serde_json::{Map, Value, json};

use super::Endpoint;
use super::lines::{self, JobSettings, Line};

/// Most inputs in one grouped call (OpenAI's limit for one embeddings request). A line
/// with more is a group of its own.
pub const MAX_INPUTS: usize = 2_048;

/// Whether lines of this endpoint may be grouped.
pub fn groups(endpoint: Endpoint) -> bool {
    matches!(endpoint, Endpoint::Embeddings | Endpoint::OllamaEmbed)
}

/// The text inputs of a line's body, when it may share a call: `input` a non-empty
/// string or a non-empty list of non-empty strings. Token arrays, empty inputs (a load
/// probe on `/api/embed`) and anything else go alone, as the line gave them.
pub fn text_inputs(body: &Map<String, Value>) -> Option<Vec<&str>> {
    match body.get("input")? {
        Value::String(text) if !text.is_empty() => Some(vec![text.as_str()]),
        Value::Array(items) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().filter(|text| !text.is_empty()))
            .collect(),
        _ => None,
    }
}

/// Whether two bodies are equal apart from `input`.
fn same_but_input(a: &Map<String, Value>, b: &Map<String, Value>) -> bool {
    a.len() == b.len()
        && a.iter()
            .all(|(key, value)| key == "input" || b.get(key) == Some(value))
}

/// How consecutive `lines` form groups: the number of lines of each group, in order,
/// at most `max_lines` lines and [`MAX_INPUTS`] inputs per group. The caller cuts
/// `lines` where a group must end (the end of an enqueue chunk).
pub fn plan(lines: &[Line], max_lines: usize) -> Vec<usize> {
    let max_lines = max_lines.max(1);
    let mut sizes = Vec::new();
    let mut start = 0usize;
    while start < lines.len() {
        let opener = &lines[start].body;
        let mut size = 1;
        if let Some(first) = text_inputs(opener) {
            let mut inputs = first.len();
            while start + size < lines.len() && size < max_lines {
                let next = &lines[start + size].body;
                let Some(more) = text_inputs(next) else { break };
                if inputs + more.len() > MAX_INPUTS || !same_but_input(opener, next) {
                    break;
                }
                inputs += more.len();
                size += 1;
            }
        }
        sizes.push(size);
        start += size;
    }
    sizes
}

/// The job of a group whose first line is `first`: a group of one is the line's own job,
/// unchanged; a larger group is the first line's body with every line's inputs in
/// `input`, under the first line's id and key, its metadata the lines it covers and
/// each one's number of inputs.
pub fn job(settings: &JobSettings<'_>, first: u64, group: &[Line]) -> NewJob {
    let [head, rest @ ..] = group else {
        panic!("a group has at least one line");
    };
    if rest.is_empty() {
        return lines::job(settings, first, head);
    }
    let mut inputs = Vec::new();
    let mut counts = Vec::with_capacity(group.len());
    for line in group {
        let texts = text_inputs(&line.body).unwrap_or_default();
        counts.push(texts.len());
        inputs.extend(texts.into_iter().map(|text| Value::String(text.to_owned())));
    }
    let mut body = head.body.clone();
    body.insert("input".into(), Value::Array(inputs));
    let merged = Line {
        custom_id: head.custom_id.clone(),
        body,
    };
    let mut job = lines::job(settings, first, &merged);
    job.metadata = Some(
        json!({
            "batch_id": settings.batch_id,
            "line": first,
            "custom_id": head.custom_id,
            "lines": group.len(),
            "inputs": counts,
        })
        .to_string(),
    );
    job
}

/// How many lines a stored job covers: its metadata's `lines`, 1 for a line's own job.
pub fn covered(job: &Job) -> u64 {
    job.metadata
        .as_deref()
        .and_then(|text| serde_json::from_str::<Value>(text).ok())
        .and_then(|meta| meta.get("lines").and_then(Value::as_u64))
        .unwrap_or(1)
        .max(1)
}

/// Each covered line's number of inputs, from a grouped job's metadata.
pub fn input_counts(job: &Job) -> Option<Vec<usize>> {
    let meta: Value = serde_json::from_str(job.metadata.as_deref()?).ok()?;
    meta.get("inputs")?
        .as_array()?
        .iter()
        .map(|count| count.as_u64().map(|count| count as usize))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(body: Value) -> Line {
        let Value::Object(body) = body else {
            panic!("an object")
        };
        Line {
            custom_id: "c".into(),
            body,
        }
    }

    fn text(input: &str) -> Line {
        line(json!({"model": "e", "input": input}))
    }

    #[test]
    fn lines_equal_but_for_their_text_input_share_a_group() {
        let lines = vec![
            text("a"),
            line(json!({"model": "e", "input": ["b", "c"]})),
            text("d"),
        ];
        assert_eq!(plan(&lines, 32), vec![3]);
        assert_eq!(plan(&lines, 2), vec![2, 1]);
        assert_eq!(plan(&lines, 1), vec![1, 1, 1]);
    }

    #[test]
    fn another_model_option_or_a_token_array_ends_the_group_and_goes_alone() {
        let lines = vec![
            text("a"),
            text("b"),
            line(json!({"model": "other", "input": "c"})),
            text("d"),
            line(json!({"model": "e", "input": "e", "dimensions": 8})),
            line(json!({"model": "e", "input": [1, 2, 3]})),
            line(json!({"model": "e", "input": [[1, 2], [3]]})),
            text("f"),
            line(json!({"model": "e", "input": ""})),
            line(json!({"model": "e", "input": []})),
            line(json!({"model": "e"})),
            text("g"),
            text("h"),
        ];
        assert_eq!(plan(&lines, 32), vec![2, 1, 1, 1, 1, 1, 1, 1, 1, 1, 2]);
        // A line of another model may open a group of its own kind.
        let lines = vec![
            line(json!({"model": "other", "input": "c"})),
            line(json!({"model": "other", "input": "d"})),
            text("a"),
        ];
        assert_eq!(plan(&lines, 32), vec![2, 1]);
    }

    #[test]
    fn a_group_holds_at_most_the_inputs_of_one_call() {
        let many: Vec<String> = (0..MAX_INPUTS).map(|n| n.to_string()).collect();
        let too_many = [many.clone(), vec!["x".to_owned()]].concat();
        let lines = vec![
            text("a"),
            line(json!({"model": "e", "input": many[..MAX_INPUTS - 1]})),
            text("b"),
            line(json!({"model": "e", "input": too_many})),
            text("c"),
        ];
        assert_eq!(plan(&lines, 32), vec![2, 1, 1, 1]);
    }

    #[test]
    fn a_group_job_carries_every_input_under_its_first_lines_id_and_key() {
        let settings = JobSettings {
            batch_id: "batch_G",
            created_at: 1_700_000_000_000,
            kind: foreman_store::JobKind::OpenAiEmbedding,
            priority: -10,
            max_attempts: 3,
            pins: &[],
            caller: None,
        };
        let group = vec![
            text("a"),
            line(json!({"model": "e", "input": ["b", "c"]})),
            text("d"),
        ];
        let job = job(&settings, 40, &group);
        assert_eq!(
            job.id,
            Some(super::super::ids::line_job_id(
                "batch_G",
                1_700_000_000_000,
                40
            ))
        );
        assert_eq!(job.idempotency_key.as_deref(), Some("batch:batch_G:40"));
        let body: Value = serde_json::from_str(&job.payload).expect("json");
        assert_eq!(body, json!({"model": "e", "input": ["a", "b", "c", "d"]}));
        let meta: Value = serde_json::from_str(job.metadata.as_deref().unwrap()).unwrap();
        assert_eq!(meta["lines"], 3);
        assert_eq!(meta["inputs"], json!([1, 2, 1]));
        assert_eq!(meta["line"], 40);
        // A group of one is the line's own job.
        let alone = super::job(&settings, 7, &group[1..2]);
        let own = lines::job(&settings, 7, &group[1]);
        assert_eq!(alone.payload, own.payload);
        assert_eq!(alone.metadata, own.metadata);
    }
}
