//! Ollama's OpenAI-compatible API, through foreman: `/v1/chat/completions` and
//! `/v1/completions` go through the queue like `/api/chat` (SSE relayed live when
//! `stream` is true, which here defaults to false); `/v1/embeddings` goes straight
//! to a target that has the model, `/v1/models` lists every target's models (the
//! union, as `/api/tags`); `/v1/models/{model}` asks a target for one model whose
//! name passes Ollama's rules. Bodies are checked before queueing as Ollama's
//! middleware decodes them ([`validate`](super::validate)). foreman's own errors take OpenAI's
//! `{"error":{"message","type","param","code"}}` shape; the target's pass unchanged.

use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{Path, State};
use axum::http::{Extensions, HeaderMap};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use foreman_store::{JobCaller, JobKind};

use super::body::JsonBody;
use super::direct::{model_of, relay};
use super::error::Flavor;
use super::queued::run_queued;
use super::{ApiError, AppState, job_control, validate};
use crate::model_name::model_key;

async fn queued(
    state: AppState,
    headers: HeaderMap,
    caller: Option<JobCaller>,
    body: Result<Bytes, BytesRejection>,
    kind: JobKind,
    struct_name: &'static str,
) -> Result<Response, ApiError> {
    let body = JsonBody::parse(body, state.config.max_body, struct_name)?;
    let model = body.string("model")?.to_string();
    if model.is_empty() {
        return Err(ApiError::BadRequest("model is required".into()));
    }
    run_queued(state, &headers, caller, kind, body, model, Flavor::OpenAi).await
}

pub async fn chat_completions(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    queued(
        state,
        headers,
        job_control::caller_of(&extensions),
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
    extensions: Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    queued(
        state,
        headers,
        job_control::caller_of(&extensions),
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
            &state.targets.for_model(model_of(&body)).upstream,
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

/// Every target's `/v1/models`, merged by id (the first target's entry wins), so
/// the list matches `/api/tags`; one target's answer is relayed as it came.
pub async fn models(State(state): State<AppState>) -> Response {
    let listed = async {
        let targets = state.targets.all();
        if let [only] = targets {
            return relay(
                &only.upstream,
                reqwest::Method::GET,
                "/v1/models",
                None,
                None,
            )
            .await;
        }
        let answers = targets.iter().map(|target| {
            target
                .upstream
                .get("/v1/models", std::time::Duration::from_secs(10))
        });
        let answers = futures::future::join_all(answers).await;
        let mut seen = std::collections::HashSet::new();
        let mut data = Vec::new();
        let mut last_error = None;
        for answer in answers {
            let body = match answer {
                Ok(body) => body,
                Err(error) => {
                    last_error = Some(error);
                    continue;
                }
            };
            let Ok(listing) = serde_json::from_slice::<serde_json::Value>(&body) else {
                continue;
            };
            let entries = listing.get("data").and_then(|d| d.as_array()).cloned();
            for entry in entries.unwrap_or_default() {
                let id = entry.get("id").and_then(|id| id.as_str()).map(model_key);
                if id.is_none_or(|id| seen.insert(id)) {
                    data.push(entry);
                }
            }
        }
        if data.is_empty()
            && let Some(error) = last_error
        {
            return Err(ApiError::TargetUnavailable(error.to_string()));
        }
        let body = serde_json::json!({"object": "list", "data": data}).to_string();
        Ok((
            [(axum::http::header::CONTENT_TYPE, super::error::JSON_UTF8)],
            body,
        )
            .into_response())
    };
    listed
        .await
        .unwrap_or_else(|error| error.render(Flavor::OpenAi))
}

/// One model, from a target that has it. The name becomes part of the target's
/// URL, so it must be a model name by Ollama's rules (which leave no `.`, `..`,
/// `\\`, `%`, `?` or `#` to travel with); anything else is Ollama's 400.
pub async fn model(
    State(state): State<AppState>,
    model: Result<Path<String>, PathRejection>,
) -> Response {
    let retrieved = async {
        let model = match model {
            Ok(Path(model)) => model,
            Err(_) => return Err(validate::invalid_model_name()),
        };
        validate::model_name(&model)?;
        relay(
            &state.targets.for_model(&model).upstream,
            reqwest::Method::GET,
            &format!("/v1/models/{model}"),
            None,
            None,
        )
        .await
    };
    retrieved
        .await
        .unwrap_or_else(|error| error.render(Flavor::OpenAi))
}
