//! `GET /readyz`: whether foreman can take work now, for load balancers and
//! orchestrators. Why beside `/healthz` rather than in it: `/healthz` answers 200
//! whenever the process serves (with a `degraded` flag), which a plain HTTP check
//! cannot read; `/readyz` fails with 503 instead.
//!
//! Ready means both: at least one target answered its last inventory poll (so a job
//! can run somewhere), and the store commits a real write now (a durable write
//! through the writer thread that leaves no trace: one small sync per probe, which a
//! check every few seconds affords). A foreman shutting down is not ready. Public,
//! like `/healthz`: it names targets, never their URLs.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use super::{ApiError, AppState};

pub async fn readyz(State(state): State<AppState>) -> Result<Response, ApiError> {
    if state.shutdown.is_cancelled() {
        return Err(ApiError::NotReady("foreman is shutting down".into()));
    }
    let targets = state.targets.all();
    let answering: Vec<&str> = targets
        .iter()
        .filter(|target| target.inventory.reachable())
        .map(|target| target.name.as_str())
        .collect();
    let mut reasons = Vec::new();
    if answering.is_empty() {
        let names: Vec<&str> = targets.iter().map(|t| t.name.as_str()).collect();
        reasons.push(format!("no target answers its poll ({})", names.join(", ")));
    }
    if let Err(error) = state.store.probe_write().await {
        reasons.push(format!("the job store cannot write: {error}"));
    }
    if !reasons.is_empty() {
        return Err(ApiError::NotReady(reasons.join("; ")));
    }
    let body = json!({
        "status": "ready",
        "targets_answering": answering,
        "store": "writable",
    });
    Ok(axum::Json(body).into_response())
}
