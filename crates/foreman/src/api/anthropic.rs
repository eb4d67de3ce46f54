//! Anthropic's Messages API through foreman: `POST /v1/messages` is a generation
//! request like `/api/chat`, queued as an `anthropic_messages` job and drained by
//! model with the rest; the runner sends the body to the target's own
//! `/v1/messages` (Ollama's `AnthropicMessagesMiddleware` over its chat). `stream`
//! defaults to false there, so the caller gets one message, or the SSE events
//! (`message_start` ... `message_stop`) relayed as they come. The job's stored
//! result is the message those events add up to.
//!
//! Before queueing, foreman makes the middleware's own checks, with its words
//! (`model is required`, `max_tokens is required and must be positive`,
//! `messages is required`), checks the rest of the body as the middleware decodes
//! it ([`validate`](super::validate): field types, content blocks), and asks
//! whether the target has the model. Errors take Anthropic's shape,
//! `{"type":"error","error":{"type","message"},"request_id"}`; the target's pass
//! unchanged.

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{Extensions, HeaderMap};
use axum::response::Response;
use bytes::Bytes;
use foreman_store::{JobCaller, JobKind};
use serde_json::Value;

use super::body::JsonBody;
use super::error::Flavor;
use super::queued::run_queued;
use super::{ApiError, AppState, job_control};

pub async fn messages(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    queue(state, headers, job_control::caller_of(&extensions), body)
        .await
        .unwrap_or_else(|error| error.render(Flavor::Anthropic))
}

async fn queue(
    state: AppState,
    headers: HeaderMap,
    caller: Option<JobCaller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = JsonBody::parse(body, state.config.max_body, "MessagesRequest")?;
    let model = body.string("model")?.to_string();
    let max_tokens = match body.fields.get("max_tokens") {
        None | Some(Value::Null) => 0,
        Some(Value::Number(number)) if number.is_i64() => number.as_i64().unwrap_or(0),
        Some(other) => return Err(body.type_error("max_tokens", other, "int")),
    };
    body.expect_array("messages", "[]anthropic.MessageParam")?;
    let has_messages = body
        .fields
        .get("messages")
        .and_then(Value::as_array)
        .is_some_and(|messages| !messages.is_empty());
    // AnthropicMessagesMiddleware's checks, in its order.
    if model.is_empty() {
        return Err(ApiError::BadRequest("model is required".into()));
    }
    if max_tokens <= 0 {
        return Err(ApiError::BadRequest(
            "max_tokens is required and must be positive".into(),
        ));
    }
    if !has_messages {
        return Err(ApiError::BadRequest("messages is required".into()));
    }
    run_queued(
        state,
        &headers,
        caller,
        JobKind::AnthropicMessages,
        body,
        model,
        Flavor::Anthropic,
    )
    .await
}
