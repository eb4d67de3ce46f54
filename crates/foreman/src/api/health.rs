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

#[cfg(test)]
mod tests {

    use axum::body::Body;
    use axum::http::Request;
    use serde_json::Value;
    use tower::ServiceExt as _;

    use crate::api::{AppState, router};
    use crate::config::Config;
    use crate::targets::Targets;

    /// A store that cannot write (closed) beside a target that answers: 503 naming
    /// the store, through the whole router (guard and auth included).
    #[tokio::test]
    async fn readyz_answers_503_when_the_store_cannot_write() {
        let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), Default::default())
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("foreman.db");
        let mut config = Config::for_upstream(&sim.url(), db.to_str().unwrap());
        config.token = Some("s3cret".into());
        let targets = Targets::new(
            &config.targets,
            config.upstream_timeout,
            config.poll_interval,
        );
        targets.poll_all().await;
        let store = foreman_store::Store::open(db.to_str().unwrap())
            .await
            .unwrap();
        let state = AppState::for_test(config, store.clone(), targets);
        let ask = async |state: &AppState| {
            let request = Request::get("/readyz")
                .header("Host", "127.0.0.1")
                .body(Body::empty())
                .unwrap();
            let response = router(state.clone()).oneshot(request).await.unwrap();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, serde_json::from_slice::<Value>(&body).unwrap())
        };
        let (status, body) = ask(&state).await;
        assert_eq!(status, 200, "{body}");
        store.close().await;
        let (status, body) = ask(&state).await;
        assert_eq!(status, 503, "{body}");
        let error = body["error"].as_str().unwrap();
        assert!(error.contains("the job store cannot write"), "{error}");
        assert!(!error.contains("no target"), "the target answers: {error}");
        state.shutdown.cancel();
        let (status, body) = ask(&state).await;
        assert_eq!(status, 503);
        assert!(
            body["error"].as_str().unwrap().contains("shutting down"),
            "{body}"
        );
    }
}
