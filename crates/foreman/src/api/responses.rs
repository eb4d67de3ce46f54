//! OpenAI's Responses API through foreman: `POST /v1/responses` is a generation
//! request like `/v1/chat/completions`, queued as an `openai_responses` job and
//! drained by model with the rest; the runner sends the body to the target's own
//! `/v1/responses` (Ollama's `ResponsesMiddleware` over its chat). `stream` defaults
//! to false there, so the caller gets one JSON object, or the SSE events
//! (`response.created` ... `response.completed`) relayed as they come. The job's
//! stored result is the `response` of the stream's `response.completed` event.
//!
//! Before queueing, the body is checked as Ollama's middleware reads it (field
//! types, `input` items, the reasoning effort; [`validate`](super::validate)) and
//! the model must be one a target has; what the target still refuses comes back in
//! OpenAI's shape unchanged. foreman's own errors take that shape too.

use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{Extensions, HeaderMap};
use axum::response::Response;
use bytes::Bytes;
use foreman_store::{JobCaller, JobKind};

use super::body::JsonBody;
use super::error::Flavor;
use super::queued::run_queued;
use super::{ApiError, AppState, job_control};

pub async fn responses(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    queue(state, headers, job_control::caller_of(&extensions), body)
        .await
        .unwrap_or_else(|error| error.render(Flavor::OpenAi))
}

async fn queue(
    state: AppState,
    headers: HeaderMap,
    caller: Option<JobCaller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = JsonBody::parse(body, state.config.max_body, "ResponsesRequest")?;
    let model = body.string("model")?.to_string();
    // Ollama's chat handler, behind its middleware, asks for the model first.
    if model.is_empty() {
        return Err(ApiError::BadRequest("model is required".into()));
    }
    run_queued(
        state,
        &headers,
        caller,
        JobKind::OpenAiResponses,
        body,
        model,
        Flavor::OpenAi,
    )
    .await
}
