//! Requests that go straight to the target, concurrently, without the queue:
//! embeddings (the embedding model stays resident beside the chat model, so there is
//! nothing to schedule), `/api/show`, and model management. Status, content type and body come back
//! exactly as the target sent them.

use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::body::JsonBody;
use super::{ApiError, AppState};

/// Sends one request to the target and relays its answer as it came: status,
/// content type and a streamed body; `when_done` runs once the body has been relayed.
pub(super) async fn relay(
    state: &AppState,
    method: reqwest::Method,
    path: &str,
    body: Option<Bytes>,
    when_done: Option<Box<dyn FnOnce() + Send>>,
) -> Result<Response, ApiError> {
    let answer = state
        .upstream
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
    relay(state, reqwest::Method::POST, path, Some(body.raw), None).await
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
    let key = parsed.raw.clone();
    if let Some(cached) = state.show_cache.get(&key) {
        return Ok(json_answer(cached));
    }
    let answer = state
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
/// answer ends, the inventory is polled so listings show the change at once. Off
/// (403) with `FOREMAN_ALLOW_MODEL_MANAGEMENT=false`.
pub async fn manage(
    State(state): State<AppState>,
    method: axum::http::Method,
    uri: axum::http::Uri,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    if !state.config.allow_model_management {
        return Err(ApiError::Forbidden(
            "model management is disabled on this foreman (FOREMAN_ALLOW_MODEL_MANAGEMENT)".into(),
        ));
    }
    let body = JsonBody::parse(body, state.config.max_body, "ModelRequest")?;
    let method = reqwest::Method::from_bytes(method.as_str().as_bytes())
        .map_err(|_| ApiError::BadRequest("unsupported method".into()))?;
    state.show_cache.clear();
    let inventory = state.inventory.clone();
    let refresh: Box<dyn FnOnce() + Send> = Box::new(move || inventory.refresh_soon());
    relay(&state, method, uri.path(), Some(body.raw), Some(refresh)).await
}

pub async fn embeddings(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    forward(&state, "/api/embeddings", body, "EmbeddingRequest").await
}
