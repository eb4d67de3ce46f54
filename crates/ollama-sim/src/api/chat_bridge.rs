//! The native chat under the translated routes (`/v1/responses`, `/v1/messages`).
//!
//! Ollama serves both through middleware that rewrites the request into an
//! `/api/chat` request and the chat answer back into the other API's shape
//! (`middleware/openai.go` `ResponsesMiddleware`, `middleware/anthropic.go`
//! `AnthropicMessagesMiddleware`, both in front of `ChatHandler`). The simulator does
//! the same: each route turns its body into a [`ChatCall`], and this module runs it
//! exactly as `/api/chat` would (same seed text, same prompt token count), so the
//! three routes agree on the text for the same conversation.
//!
//! Names of Ollama's files and functions here and in `responses.rs` and
//! `anthropic.rs` are as of its commit `fb30760` (August 2026).

use std::sync::Arc;
use std::time::Instant;

use futures::{Stream, StreamExt};
use serde_json::Value;

use super::admit;
use super::native::{check_tools, runner_context};
use super::wire::ApiError;
use crate::generation::{self, Event, Format, GenerationRequest, Piece, Summary};
use crate::load_options::LoadOptions;
use crate::prompt::{self, Window};
use crate::sim::Sim;
use crate::spec::ModelSpec;

/// A chat request as the middleware hands it to `ChatHandler`.
pub struct ChatCall {
    /// `(role, content)` of each converted message, in order.
    pub messages: Vec<(String, String)>,
    /// Native tools, `{"type":"function","function":{...}}`.
    pub tools: Vec<Value>,
    pub think: bool,
    pub num_predict: Option<i64>,
    pub format: Option<Format>,
}

/// The model by name, with `ChatHandler`'s errors (empty name, unknown, embedding-only).
pub fn find_chat_model(sim: &Sim, model: &str) -> Result<Arc<ModelSpec>, ApiError> {
    if model.is_empty() {
        return Err(ApiError::bad_request("model is required"));
    }
    let spec = sim
        .find(model)
        .ok_or_else(|| ApiError::not_found(format!("model '{model}' not found")))?;
    if spec.embed {
        return Err(ApiError::bad_request(format!(
            "{model:?} does not support chat"
        )));
    }
    Ok(spec)
}

/// A started generation.
pub struct Started {
    pub events: std::pin::Pin<Box<dyn Stream<Item = Event> + Send>>,
}

/// Admits the call (faults, residency) and starts generating, as `/api/chat` does.
pub async fn start(sim: &Sim, spec: &Arc<ModelSpec>, call: ChatCall) -> Result<Started, ApiError> {
    let arrived = Instant::now();
    check_tools(&call.tools, spec)?;
    let mut seed_text = String::new();
    let mut sizes = Vec::with_capacity(call.messages.len());
    for (role, content) in &call.messages {
        seed_text.push_str(role);
        seed_text.push(':');
        seed_text.push_str(content);
        seed_text.push('\n');
        sizes.push((role.as_str(), prompt::message_tokens(content)));
    }
    // The translated request carries no runner options, so the server's default
    // context and Ollama's defaults apply, as in `/api/chat` without options.
    let options = LoadOptions::default();
    let window = Window {
        num_ctx: runner_context(sim, spec, &options),
        num_keep: prompt::DEFAULT_NUM_KEEP,
        truncate: true,
        shift: true,
    };
    let prompt_tokens = prompt::chat_prompt_tokens(&sizes, window)
        .map_err(|_| ApiError::bad_request(prompt::TOO_LONG))?;
    let last_role = call.messages.last().map_or("", |(role, _)| role.as_str());
    let request = GenerationRequest {
        prompt_tokens,
        spec: spec.clone(),
        seed_text,
        num_predict: call.num_predict,
        reply_tokens: sim.config.reply_tokens,
        think: call.think,
        format: call.format,
        call_tool: !call.tools.is_empty() && last_role != "tool",
        tools: call.tools,
        format_after_thinking: true,
        batching: sim.batching.clone(),
    };
    let admitted = admit(sim, spec, None, &options).await?;
    let plan = generation::plan(&request);
    let drop_after = admitted.drop_midway.then_some(plan.pieces.len() / 2);
    let events = generation::run(
        plan,
        &request,
        admitted.lease,
        arrived,
        drop_after,
        admitted.in_flight,
    );
    Ok(Started {
        events: Box::pin(events),
    })
}

/// The whole answer of a non-streamed call: what `/api/chat` with `"stream": false`
/// returns, reduced to what the translators read.
pub struct Whole {
    pub content: String,
    pub thinking: String,
    pub tool_calls: Vec<Value>,
    pub summary: Summary,
    /// The drop fault fired: the translated body must be cut halfway.
    pub dropped: bool,
}

pub async fn gather(started: Started) -> Whole {
    let mut whole = Whole {
        content: String::new(),
        thinking: String::new(),
        tool_calls: Vec::new(),
        summary: Summary {
            done_reason: "stop",
            total_duration: 0,
            load_duration: 0,
            prompt_eval_count: 0,
            prompt_eval_duration: 0,
            eval_count: 0,
            eval_duration: 0,
        },
        dropped: false,
    };
    let mut events = started.events;
    while let Some(event) = events.next().await {
        match event {
            Event::Piece(Piece::Content(text)) => whole.content.push_str(&text),
            Event::Piece(Piece::Thinking(text)) => whole.thinking.push_str(&text),
            Event::Piece(Piece::ToolCalls(calls)) => whole.tool_calls.extend(calls),
            Event::Done(summary) => whole.summary = summary,
            Event::Dropped => whole.dropped = true,
        }
    }
    whole
}

/// Text of Ollama's typed JSON errors for a field of the wrong type, as gin's binding
/// reports them for the middleware's request structs.
pub fn type_error(struct_name: &str, field: &str, value: &Value, go_type: &str) -> ApiError {
    ApiError::bad_request(format!(
        "json: cannot unmarshal {} into Go struct field {struct_name}.{field} of type {go_type}",
        super::body::go_type_name(value)
    ))
}
