//! The `/sim` control API: counters, residency events and faults.
//!
//! - `GET /sim/stats`: totals and per-model counters ([`crate::StatsSnapshot`]).
//! - `POST /sim/reset`: zero the counters; the `peak_in_flight` peaks restart from the
//!   requests running at that moment.
//! - `GET /sim/events`: residency events (`load_start`, `loaded`, `unloaded`), timed in
//!   ms since start, with `now_ms` on the same clock to align them with a client's.
//! - `GET /sim/faults`, `POST /sim/faults`: read or partially update the faults.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::routing::{get, post};
use bytes::Bytes;
use serde_json::json;

use super::wire::{ApiError, json_response};
use crate::faults::FaultsUpdate;
use crate::sim::Sim;

/// How long a refusal switched on over HTTP waits, so its own answer gets out.
const SWITCH_AFTER_ANSWER: Duration = Duration::from_millis(50);

pub fn routes() -> Router<Arc<Sim>> {
    Router::new()
        .route("/sim/stats", get(stats))
        .route("/sim/reset", post(reset))
        .route("/sim/events", get(events))
        .route("/sim/faults", get(get_faults).post(set_faults))
}

async fn stats(State(sim): State<Arc<Sim>>) -> Response {
    json_response(StatusCode::OK, &json!(sim.snapshot()))
}

async fn reset(State(sim): State<Arc<Sim>>) -> Response {
    sim.stats.reset();
    json_response(StatusCode::OK, &json!(sim.snapshot()))
}

async fn events(State(sim): State<Arc<Sim>>) -> Response {
    json_response(
        StatusCode::OK,
        &json!({ "now_ms": sim.stats.now_ms(), "events": sim.stats.events() }),
    )
}

async fn get_faults(State(sim): State<Arc<Sim>>) -> Response {
    json_response(StatusCode::OK, &json!(sim.faults()))
}

async fn set_faults(State(sim): State<Arc<Sim>>, body: Bytes) -> Result<Response, ApiError> {
    let update: FaultsUpdate = if body.iter().all(u8::is_ascii_whitespace) {
        FaultsUpdate::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| ApiError::bad_request(e.to_string()))?
    };
    let faults = sim
        .update_faults(&update, SWITCH_AFTER_ANSWER)
        .map_err(ApiError::bad_request)?;
    Ok(json_response(StatusCode::OK, &json!(faults)))
}
