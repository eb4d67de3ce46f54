//! foreman in front of the simulator against recorded answers of a real Ollama
//! (`crates/ollama-sim/tests/golden/`): every recorded exchange sent through foreman
//! must have the recorded keys, JSON types, stream order, status and content type.

#[path = "../../../ollama-sim/tests/golden/check.rs"]
mod check;

use std::collections::BTreeSet;

use ollama_sim::{FaultsUpdate, ModelSpec};
use serde_json::json;

use crate::common::*;

#[tokio::test]
async fn answers_through_foreman_have_the_recorded_shapes() {
    let foreman = TestForeman::start(check::sim_config()).await;
    let errors = check::check_all(&client(), &foreman.url).await;
    assert!(errors.is_empty(), "differences:\n{}", errors.join("\n"));
    foreman.stop().await;
}

/// A stream that breaks after output reached the caller ends, as Ollama's does
/// (docs/api/errors.mdx), with one `{"error"}` line and the status left at 200.
#[tokio::test]
async fn a_stream_broken_midway_ends_with_the_recorded_error_line() {
    let mut sim = check::sim_config();
    // Slow tokens, so the caller has taken the first chunk well before the
    // simulator drops the connection halfway; a failure before any output would
    // be retried instead (and then answered with an error status).
    sim.models = vec![ModelSpec::parse("llama3.2,load=10ms,tps=5").unwrap()];
    let foreman = TestForeman::start_with(sim, |config| config.max_attempts = 1).await;
    foreman
        .sim
        .set_faults(&FaultsUpdate {
            drop_rate: Some(1.0),
            ..Default::default()
        })
        .unwrap();
    let (status, headers, body) = post(
        &client(),
        format!("{}/api/generate", foreman.url),
        &json!({"model": "llama3.2", "prompt": "Why is the sky blue?"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/x-ndjson");
    let golden = check::ndjson(check::STREAM_ERROR).unwrap();
    let actual = check::ndjson(&body).unwrap();
    let mut errors = Vec::new();
    check::compare_stream(&golden, &actual, &[], &mut errors, &mut BTreeSet::new());
    assert!(
        errors.is_empty(),
        "differences:\n{}\nbody:\n{body}",
        errors.join("\n")
    );
    foreman.stop().await;
}
