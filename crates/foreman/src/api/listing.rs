//! Routes answered without the queue: the cached inventory (`/api/tags`, `/api/ps`),
//! Ollama's liveness answers (`/`, `/api/version`), foreman's `/healthz` and the
//! jobs API's `/openapi.json`.

use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::json;

use super::error::JSON_UTF8;
use super::{ApiError, AppState};

fn json_body(body: Bytes) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    response
}

/// Serves a cached listing; with no cache yet, polls once.
async fn cached(
    state: &AppState,
    read: fn(&crate::inventory::Inventory) -> Option<Bytes>,
) -> Result<Response, ApiError> {
    if let Some(body) = read(&state.inventory) {
        return Ok(json_body(body));
    }
    state
        .inventory
        .poll()
        .await
        .map_err(|e| ApiError::TargetUnavailable(e.to_string()))?;
    read(&state.inventory)
        .map(json_body)
        .ok_or_else(|| ApiError::TargetUnavailable("the target's inventory is unavailable".into()))
}

pub async fn tags(State(state): State<AppState>) -> Result<Response, ApiError> {
    cached(&state, |inventory| inventory.tags()).await
}

pub async fn ps(State(state): State<AppState>) -> Result<Response, ApiError> {
    state.inventory.refresh_if_changed().await;
    cached(&state, |inventory| inventory.ps()).await
}

pub async fn root() -> Response {
    (
        [("content-type", "text/plain; charset=utf-8")],
        "Ollama is running",
    )
        .into_response()
}

/// The target's version, as clients use it for feature detection.
pub async fn version(State(state): State<AppState>) -> Result<Response, ApiError> {
    let body = state
        .upstream
        .get("/api/version", Duration::from_secs(10))
        .await
        .map_err(|e| ApiError::TargetUnavailable(e.to_string()))?;
    Ok(json_body(body))
}

/// The OpenAPI 3.1 description of the jobs API (the Ollama routes are Ollama's own).
pub async fn openapi() -> Response {
    json_body(Bytes::from_static(include_bytes!("openapi.json")))
}

pub async fn healthz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let depth = state.store.queue_depth().await?;
    let body = json!({
        "status": "ok",
        "degraded": state.inventory.degraded(),
        "target_reachable": state.inventory.reachable(),
        "queue_depth": depth,
        "running": state.running.len(),
    });
    Ok(json_body(Bytes::from(body.to_string())))
}
