//! Routes answered without the queue: the targets' cached inventories (`/api/tags`,
//! `/api/ps`), Ollama's liveness answers (`/`, `/api/version`), foreman's public
//! `/healthz`, the operator view `/foreman/targets` and the jobs API's
//! `/openapi.json`.
//!
//! With several targets, `/api/tags` and `/api/ps` merge theirs into Ollama's one
//! list: one entry per model, the first target's (in the settings' order) where
//! several have it. Which target holds what is the operator view's business.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde_json::{Value, json};

use super::error::JSON_UTF8;
use super::{ApiError, AppState};
use crate::model_name::model_key;
use crate::targets::{Inventory, Target};

fn json_body(body: Bytes) -> Response {
    let mut response = (StatusCode::OK, body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    response
}

/// Serves a cached listing of every target, merged; when no target has one yet,
/// polls them all once. One target's body is served exactly as it came.
async fn cached(
    state: &AppState,
    read: fn(&Inventory) -> Option<Bytes>,
) -> Result<Response, ApiError> {
    let targets = state.targets.all();
    let mut bodies: Vec<Bytes> = targets.iter().filter_map(|t| read(&t.inventory)).collect();
    if bodies.is_empty() {
        let polls = targets.iter().map(|target| target.inventory.poll());
        let answers = futures::future::join_all(polls).await;
        bodies = targets.iter().filter_map(|t| read(&t.inventory)).collect();
        if bodies.is_empty() {
            let reason = answers
                .into_iter()
                .find_map(Result::err)
                .map(|error| error.to_string())
                .unwrap_or_else(|| "the target's inventory is unavailable".into());
            return Err(ApiError::TargetUnavailable(reason));
        }
    }
    match (targets.len(), bodies.as_slice()) {
        (1, [only]) => Ok(json_body(only.clone())),
        _ => Ok(json_body(merge_models(&bodies))),
    }
}

/// Ollama's `{"models":[...]}` holding each model once: where several bodies list
/// one model, the first body's entry wins (so the first target in the settings).
fn merge_models(bodies: &[Bytes]) -> Bytes {
    let mut seen = HashSet::new();
    let mut merged = Vec::new();
    for body in bodies {
        let Ok(Value::Object(mut listing)) = serde_json::from_slice::<Value>(body) else {
            continue;
        };
        let Some(Value::Array(models)) = listing.remove("models") else {
            continue;
        };
        for entry in models {
            let name = entry
                .get("model")
                .or_else(|| entry.get("name"))
                .and_then(Value::as_str)
                .map(model_key);
            if name.is_none_or(|name| seen.insert(name)) {
                merged.push(entry);
            }
        }
    }
    Bytes::from(json!({ "models": merged }).to_string())
}

pub async fn tags(State(state): State<AppState>) -> Result<Response, ApiError> {
    cached(&state, |inventory| inventory.tags()).await
}

pub async fn ps(State(state): State<AppState>) -> Result<Response, ApiError> {
    let refreshes = state
        .targets
        .all()
        .iter()
        .map(|t| t.inventory.refresh_if_changed());
    futures::future::join_all(refreshes).await;
    cached(&state, |inventory| inventory.ps()).await
}

pub async fn root() -> Response {
    (
        [("content-type", "text/plain; charset=utf-8")],
        "Ollama is running",
    )
        .into_response()
}

/// The version of the first reachable target, as clients use it for feature
/// detection.
pub async fn version(State(state): State<AppState>) -> Result<Response, ApiError> {
    let targets = state.targets.all();
    let target = targets
        .iter()
        .find(|target| target.inventory.reachable())
        .unwrap_or(&targets[0]);
    let body = target
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

/// Resident models: as the scheduler published them, else as `/api/ps` showed them.
fn resident_count(target: &Target) -> usize {
    match target.published_load() {
        Some(load) => load.resident.len(),
        None => target.inventory.resident().len(),
    }
}

/// Public (no token), so it names targets but never shows their URLs.
pub async fn healthz(State(state): State<AppState>) -> Result<Response, ApiError> {
    let depth = state.store.queue_depth().await?;
    let targets: Vec<Value> = state
        .targets
        .all()
        .iter()
        .map(|target| {
            json!({
                "name": target.name,
                "reachable": target.inventory.reachable(),
                "paused": target.inventory.paused(),
                "slots": target.slots,
                "places": target.places,
                "resident": resident_count(target),
                "running": target.load().running,
            })
        })
        .collect();
    let body = json!({
        "status": "ok",
        "degraded": state.targets.degraded(),
        "target_reachable": state.targets.all_reachable(),
        "queue_depth": depth,
        "running": state.running.len(),
        "targets": targets,
    });
    Ok(json_body(Bytes::from(body.to_string())))
}

/// The operator view (behind the token): everything foreman knows of each target.
pub async fn targets(State(state): State<AppState>) -> Response {
    let now = Instant::now();
    let targets: Vec<Value> = state
        .targets
        .all()
        .iter()
        .map(|target| {
            let inventory = &target.inventory;
            let load = target.load();
            json!({
                "name": target.name,
                "url": target.url,
                "slots": target.slots,
                "places": target.places,
                "reachable": inventory.reachable(),
                "paused": inventory.paused(),
                "degraded": inventory.degraded(),
                "down_since_seconds": inventory
                    .down_since()
                    .map(|since| now.saturating_duration_since(since).as_secs()),
                "models": inventory.models(),
                "resident": inventory.resident(),
                "load": {"resident": load.resident, "running": load.running},
                // Whether this instance schedules the target (its lease), and who does.
                "owned": target.ownership.held(crate::clock::now_ms()),
                "lease_owner": target.ownership.owner(),
            })
        })
        .collect();
    json_body(Bytes::from(json!({ "targets": targets }).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merged_listings_hold_each_model_once_the_first_entry_winning() {
        let first = Bytes::from_static(
            br#"{"models":[{"name":"a:latest","size":1},{"model":"B:1b","size":2}]}"#,
        );
        let second =
            Bytes::from_static(br#"{"models":[{"name":"b:1b","size":3},{"name":"c","size":4}]}"#);
        let merged: Value =
            serde_json::from_slice(&merge_models(&[first, second, Bytes::from_static(b"oops")]))
                .unwrap();
        assert_eq!(
            merged,
            json!({"models": [
                {"name": "a:latest", "size": 1},
                {"model": "B:1b", "size": 2},
                {"name": "c", "size": 4}
            ]})
        );
    }
}
