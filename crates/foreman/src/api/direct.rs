//! Requests that go straight to the target, concurrently, without the queue:
//! embeddings (the embedding model stays resident beside the chat model, so there is
//! nothing to schedule) and `/api/show`. Status, content type and body come back
//! exactly as the target sent them.

use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;

use super::body::JsonBody;
use super::{ApiError, AppState};

async fn forward(
    state: &AppState,
    path: &str,
    body: Result<Bytes, BytesRejection>,
    struct_name: &'static str,
) -> Result<Response, ApiError> {
    let body = JsonBody::parse(body, state.config.max_body, struct_name)?;
    let answer = state
        .upstream
        .send(reqwest::Method::POST, path, Some(body.raw))
        .await
        .map_err(|e| ApiError::TargetUnavailable(e.to_string()))?;
    let status = StatusCode::from_u16(answer.status().as_u16()).unwrap_or(StatusCode::BAD_GATEWAY);
    let content_type = answer.headers().get(reqwest::header::CONTENT_TYPE).cloned();
    let mut response = (status, Body::from_stream(answer.bytes_stream())).into_response();
    if let Some(value) = content_type.and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()) {
        response.headers_mut().insert(header::CONTENT_TYPE, value);
    }
    Ok(response)
}

pub async fn embed(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    forward(&state, "/api/embed", body, "EmbedRequest").await
}

/// Model details, passed through (the client library needs `model_info` and
/// `capabilities` exactly as the target reports them).
pub async fn show(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    forward(&state, "/api/show", body, "ShowRequest").await
}

pub async fn embeddings(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    forward(&state, "/api/embeddings", body, "EmbeddingRequest").await
}
