//! The operator's views of what the GPUs are doing: the Prometheus page
//! (`GET /metrics`), one JSON snapshot of everything (`GET /foreman/status`, which
//! the dashboard and `foreman status` read), and the dashboard page itself
//! (`GET /ui`).
//!
//! `/metrics` is behind the token unless `FOREMAN_METRICS_PUBLIC`; `/ui` is served
//! to anyone, since the page holds no data: its script asks `/foreman/status` with the
//! token, which it takes from the page's `#token=` fragment or asks for when a call
//! answers 401, and keeps in the browser's `localStorage`.

use std::collections::HashMap;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use super::error::JSON_UTF8;
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::metrics::Scrape;

/// Prometheus's text exposition format.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The dashboard: one page, its script and styles inline.
const DASHBOARD: &str = include_str!("../../assets/dashboard.html");

/// How far back the status's timeline reaches.
const TIMELINE_WINDOW_MS: i64 = 10 * 60 * 1000;

pub async fn metrics(State(state): State<AppState>) -> Result<Response, ApiError> {
    let queue = state.store.queue_summary().await?;
    let page = state.metrics.render(&Scrape {
        queue: &queue,
        targets: &state.targets,
        commit_times: state.store.commit_times(),
        finished_by_store: state.store.finished_by_store(),
    });
    let mut response = (StatusCode::OK, page).into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(METRICS_CONTENT_TYPE),
    );
    Ok(response)
}

pub async fn status(State(state): State<AppState>) -> Result<Response, ApiError> {
    let now = now_ms();
    let queue = state.store.queue_summary().await?;
    let targets: Vec<Value> = state
        .targets
        .all()
        .iter()
        .map(|target| {
            let inventory = &target.inventory;
            let load = target.published_load();
            // Before the scheduler's first account, what the target's `/api/ps` says.
            let (resident, running, by_key) = match load {
                Some(load) => (load.resident, load.running, load.running_by_key),
                None => (inventory.resident(), 0, Vec::new()),
            };
            let by_key: HashMap<String, usize> = by_key.into_iter().collect();
            let loaded: Vec<Value> = resident
                .iter()
                .map(|key| json!({"key": key, "running": by_key.get(key).copied().unwrap_or(0)}))
                .collect();
            json!({
                "name": target.name,
                "reachable": inventory.reachable(),
                "paused": inventory.paused(),
                "slots": target.slots,
                "places": target.places,
                "running": running,
                "loaded": loaded,
            })
        })
        .collect();
    let queue: Vec<Value> = queue
        .iter()
        .map(|group| {
            json!({
                "model": group.model,
                "priority": group.priority,
                "count": group.count,
                "oldest_wait_seconds": (now - group.oldest_created_at).max(0) as f64 / 1000.0,
            })
        })
        .collect();
    let counts = state.metrics.load_counts();
    let body = json!({
        "now_ms": now,
        "targets": targets,
        "queue": queue,
        "recent_jobs": state.metrics.recent_jobs(),
        "counters": counts,
        "timeline": {
            "since_ms": now - TIMELINE_WINDOW_MS,
            "events": state.metrics.timeline(now - TIMELINE_WINDOW_MS),
        },
    });
    let mut response = (StatusCode::OK, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
    Ok(response)
}

pub async fn dashboard() -> Response {
    let mut response = (StatusCode::OK, DASHBOARD).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // Its data comes only from its own origin; nothing else runs or loads.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
