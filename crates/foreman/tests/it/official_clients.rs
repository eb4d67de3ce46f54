//! The official `ollama` Python client (and `openai`, `anthropic`), unmodified,
//! against foreman in front of the simulator: the same suite that passes against the
//! simulator directly.

#[path = "../../../../tests/support/pytest.rs"]
mod pytest;

use crate::common::*;

#[tokio::test]
async fn the_official_python_client_works_against_foreman() {
    let foreman = TestForeman::start(fast_sim()).await;
    // The Responses and Messages suites ask the simulator too, and compare.
    let direct = foreman.sim.url();
    pytest::run_python_suite(
        env!("CARGO_MANIFEST_DIR"),
        &foreman.url,
        [CHAT, CHAT2, EMBED],
        None,
        &[("TEST_DIRECT_HOST", &direct)],
    )
    .await;
    let jobs = foreman.jobs().await;
    assert!(
        jobs.len() >= 8,
        "chat and generate went through the queue ({} jobs)",
        jobs.len()
    );
    foreman.stop().await;
}

#[path = "../../../../tests/support/nodejs.rs"]
mod nodejs;

/// The official `ollama` JavaScript client on Node, unmodified, against foreman.
#[tokio::test]
async fn the_official_javascript_client_works_against_foreman() {
    let foreman = TestForeman::start(fast_sim()).await;
    nodejs::run_js_suite(env!("CARGO_MANIFEST_DIR"), &foreman.url, CHAT).await;
    let jobs = foreman.jobs().await;
    assert!(
        jobs.len() >= 4,
        "the chats went through the queue ({} jobs)",
        jobs.len()
    );
    foreman.stop().await;
}
