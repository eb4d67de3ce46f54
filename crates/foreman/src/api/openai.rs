//! Ollama's OpenAI-compatible API, through foreman: `/v1/chat/completions` and
//! `/v1/completions` go through the queue like `/api/chat` (SSE relayed live when
//! `stream` is true, which here defaults to false); `/v1/embeddings` and
//! `/v1/models` go straight to the target. foreman's own errors take OpenAI's
//! `{"error":{"message","type","param","code"}}` shape; the target's pass unchanged.

use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::Response;
use bytes::Bytes;
use foreman_store::JobKind;

use super::body::JsonBody;
use super::direct::relay;
use super::error::Flavor;
use super::queued::run_queued;
use super::{ApiError, AppState};

async fn queued(
    state: AppState,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
    kind: JobKind,
    struct_name: &'static str,
) -> Result<Response, ApiError> {
    let body = JsonBody::parse(body, state.config.max_body, struct_name)?;
    let model = body.string("model")?.to_string();
    if model.is_empty() {
        return Err(ApiError::BadRequest("model is required".into()));
    }
    run_queued(state, &headers, kind, body, model, Flavor::OpenAi).await
}

pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    queued(
        state,
        headers,
        body,
        JobKind::OpenAiChat,
        "ChatCompletionRequest",
    )
    .await
    .unwrap_or_else(|error| error.render(Flavor::OpenAi))
}

pub async fn completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    queued(
        state,
        headers,
        body,
        JobKind::OpenAiCompletion,
        "CompletionRequest",
    )
    .await
    .unwrap_or_else(|error| error.render(Flavor::OpenAi))
}

pub async fn embeddings(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let forwarded = async {
        let body = JsonBody::parse(body, state.config.max_body, "EmbedRequest")?;
        relay(
            &state,
            reqwest::Method::POST,
            "/v1/embeddings",
            Some(body.raw),
            None,
        )
        .await
    };
    forwarded
        .await
        .unwrap_or_else(|error| error.render(Flavor::OpenAi))
}

pub async fn models(State(state): State<AppState>) -> Response {
    relay(&state, reqwest::Method::GET, "/v1/models", None, None)
        .await
        .unwrap_or_else(|error| error.render(Flavor::OpenAi))
}

pub async fn model(State(state): State<AppState>, Path(model): Path<String>) -> Response {
    relay(
        &state,
        reqwest::Method::GET,
        &format!("/v1/models/{model}"),
        None,
        None,
    )
    .await
    .unwrap_or_else(|error| error.render(Flavor::OpenAi))
}
