//! Unloading the model the policy chose to give up, before the load that replaces it.
//!
//! A target that has no free place picks its own victim when a request needs a load:
//! Ollama (and the simulator modelled on it) unloads an idle model with the shortest
//! keep-alive, ties broken by the model's path, whatever foreman meant. The policy's
//! choice (`Decision::evict`: never a model that work of a higher priority used within
//! the protection window) would then be only a wish, and a batch's load could unload the
//! model live traffic is about to use. So when the policy gives up a loaded model, the
//! runner first asks the target to unload it (`keep_alive: 0` with
//! nothing to generate, which Ollama answers at once); the place is free when the job's
//! own request arrives, and the target loads into it without choosing anything.
//!
//! A model given up while it still runs requests (the bound's forced load) is asked
//! only once they have ended ([`Dispatcher::until_idle`](super::Dispatcher::until_idle)):
//! the policy starts no more of its jobs, but until they end Ollama would answer the
//! load by unloading some idle model instead, perhaps the one live traffic uses next.
//!
//! Jobs of the loading key that other runners take meanwhile wait until that unload has
//! been sent ([`Dispatcher::until_unloaded`](super::Dispatcher::until_unloaded)): the
//! first of them to reach the target would otherwise make it choose a victim itself.

use std::time::Duration;

use bytes::Bytes;
use serde_json::json;

use crate::upstream::Upstream;

/// Longest wait for the target's answer to an unload request: it answers at once, so
/// a slow answer only delays the job, never fails it.
const UNLOAD_TIMEOUT: Duration = Duration::from_secs(5);

/// The body of Ollama's unload request for `model`.
pub fn unload_body(model: &str) -> Bytes {
    Bytes::from(json!({"model": model, "keep_alive": 0}).to_string())
}

/// Asks `upstream` to unload `model` now. A failure is logged and otherwise ignored:
/// the job's load then goes ahead and the target picks its victim itself.
pub async fn unload(upstream: &Upstream, model: &str) {
    let call = upstream.send(
        reqwest::Method::POST,
        "/api/generate",
        Some(unload_body(model)),
    );
    match tokio::time::timeout(UNLOAD_TIMEOUT, call).await {
        Ok(Ok(response)) if response.status().is_success() => {
            tracing::debug!(model, target = upstream.base(), "unloaded for a load");
        }
        Ok(Ok(response)) => {
            tracing::debug!(model, status = response.status().as_u16(), "unload refused");
        }
        Ok(Err(error)) => tracing::debug!(model, %error, "unload failed"),
        Err(_) => tracing::debug!(model, "unload timed out"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_unload_request_has_nothing_to_generate_and_no_keep_alive() {
        let body: serde_json::Value = serde_json::from_slice(&unload_body("beta:3b")).unwrap();
        assert_eq!(body, json!({"model": "beta:3b", "keep_alive": 0}));
    }
}
