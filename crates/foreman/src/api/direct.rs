//! Requests that go straight to a target, concurrently, without the queue:
//! embeddings (the embedding model stays resident beside the chat model, so there is
//! nothing to schedule) and `/api/show` go to a target that has the model
//! ([`Targets::for_model`]); model management goes to the only target, or with
//! several to the one the `X-Foreman-Target` header names. Status, content type and
//! body come back exactly as the target sent them.
//!
//! [`Targets::for_model`]: crate::targets::Targets::for_model

use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::body::JsonBody;
use super::{ApiError, AppState, validate};
use crate::upstream::Upstream;

/// The model management routes, passed to the target at the same path.
const MANAGEMENT_PATHS: [&str; 5] = [
    "/api/pull",
    "/api/push",
    "/api/create",
    "/api/copy",
    "/api/delete",
];

/// Names the target a model management request is for, when there are several.
pub const TARGET_HEADER: &str = "x-foreman-target";

/// The model a direct request names (`model`, or the older `name`), for routing
/// only: a body without one still goes to a target, which answers it as Ollama does.
pub(super) fn model_of(body: &JsonBody) -> &str {
    ["model", "name"]
        .iter()
        .find_map(|field| body.fields.get(*field).and_then(|v| v.as_str()))
        .unwrap_or("")
}

/// Sends one request to a target and relays its answer as it came: status,
/// content type and a streamed body; `when_done` runs once the body has been relayed.
pub(super) async fn relay(
    upstream: &Upstream,
    method: reqwest::Method,
    path: &str,
    body: Option<Bytes>,
    when_done: Option<Box<dyn FnOnce() + Send>>,
) -> Result<Response, ApiError> {
    let answer = upstream
        .send(method, path, body)
        .await
        .map_err(|e| ApiError::TargetUnavailable(e.to_string()))?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    let mut upstream = answer.bytes_stream();
    let relayed = async_stream::stream! {
        while let Some(chunk) = futures::StreamExt::next(&mut upstream).await {
            yield chunk;
        }
        if let Some(when_done) = when_done {
            when_done();
        }
    };
    let mut response = (status, Body::from_stream(relayed)).into_response();
    if let Some(value) = content_type.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    Ok(response)
}

async fn forward(
    state: &AppState,
    path: &str,
    body: Result<Bytes, BytesRejection>,
    struct_name: &'static str,
) -> Result<Response, ApiError> {
    let body = JsonBody::parse(body, state.config.max_body, struct_name)?;
    let target = state.targets.for_model(model_of(&body));
    // An embedding request may load its model: `/api/ps` should show it.
    let inventory = target.inventory.clone();
    let refresh: Box<dyn FnOnce() + Send> = Box::new(move || inventory.refresh_soon());
    relay(
        &target.upstream,
        reqwest::Method::POST,
        path,
        Some(body.raw),
        Some(refresh),
    )
    .await
}

pub async fn embed(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    forward(&state, "/api/embed", body, "EmbedRequest").await
}

/// Model details as the target reports them (clients need `model_info` and
/// `capabilities` exactly), cached per model and request: `ollama run` and many
/// clients ask before every chat. Successful answers only; cleared by model
/// management.
pub async fn show(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let parsed = JsonBody::parse(body, state.config.max_body, "ShowRequest")?;
    // Ollama refuses a name that breaks its rules before looking for it.
    let name = model_of(&parsed);
    if !name.is_empty() {
        validate::model_name(name)?;
    }
    let key = parsed.raw.clone();
    if let Some(cached) = state.show_cache.get(&key) {
        return Ok(json_answer(cached));
    }
    let answer = state
        .targets
        .for_model(model_of(&parsed))
        .upstream
        .send(reqwest::Method::POST, "/api/show", Some(parsed.raw))
        .await
        .map_err(|e| ApiError::TargetUnavailable(e.to_string()))?;
    let status = answer.status().as_u16();
    let content_type = answer
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    let body = answer
        .bytes()
        .await
        .map_err(|e| ApiError::TargetUnavailable(e.to_string()))?;
    if status != 200 {
        return Err(ApiError::Passthrough {
            status,
            content_type,
            body,
        });
    }
    state.show_cache.put(key, body.clone());
    Ok(json_answer(body))
}

fn json_answer(body: Bytes) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(super::error::JSON_UTF8),
    );
    response
}

/// Model management, passed through with its streamed progress; when the target's
/// answer ends, its inventory is polled so listings show the change at once. Off
/// (403) with `FOREMAN_ALLOW_MODEL_MANAGEMENT=false`. With several targets the
/// request names one in `X-Foreman-Target` (400 otherwise): pulling a model onto
/// every server at once is rarely what an operator means.
pub async fn manage(
    State(state): State<AppState>,
    headers: HeaderMap,
    method: axum::http::Method,
    uri: axum::http::Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !state.config.allow_model_management {
        return Err(ApiError::Forbidden(
            "model management is disabled on this foreman (FOREMAN_ALLOW_MODEL_MANAGEMENT)".into(),
        ));
    }
    let named = match headers.get(TARGET_HEADER) {
        Some(value) => Some(
            value
                .to_str()
                .map_err(|_| ApiError::BadRequest("X-Foreman-Target is not text".into()))?
                .trim(),
        ),
        None => None,
    };
    let target = state.targets.chosen(named)?;
    let body = JsonBody::parse(body, state.config.max_body, "ModelRequest")?;
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes())
        .map_err(|_| ApiError::BadRequest("unsupported method".into()))?;
    // The target's path is one of the routes' own, never text from the request.
    let path = MANAGEMENT_PATHS
        .into_iter()
        .find(|path| *path == uri.path())
        .ok_or_else(|| ApiError::BadRequest("unknown model management route".into()))?;
    state.show_cache.clear();
    let inventory = target.inventory.clone();
    let refresh: Box<dyn FnOnce() + Send> = Box::new(move || inventory.refresh_soon());
    relay(
        &target.upstream,
        method,
        path,
        Some(body.raw),
        Some(refresh),
    )
    .await
}

pub async fn embeddings(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    forward(&state, "/api/embeddings", body, "EmbeddingRequest").await
}
