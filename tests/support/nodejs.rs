//! Runs the official-client JavaScript suite (`tests/js`, Node's test runner) against
//! a server, for the Rust integration tests of both the simulator and foreman.

use std::path::Path;
use std::time::Duration;

/// Runs `node --test` in `tests/js` with `OLLAMA_HOST=url`, failing with its output
/// unless every test passes.
pub async fn run_js_suite(manifest_dir: &str, url: &str, chat_model: &str) {
    let dir = Path::new(manifest_dir).join("../../tests/js");
    assert!(
        dir.join("node_modules/ollama").exists(),
        "tests/js/node_modules is missing: run scripts/setup-js.sh (scripts/test does it)"
    );
    let run = tokio::process::Command::new("node")
        .arg("--test")
        .current_dir(&dir)
        .env("OLLAMA_HOST", url)
        .env("TEST_CHAT_MODEL", chat_model)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(300), run)
        .await
        .expect("the JavaScript suite finishes within five minutes")
        .expect("node runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the ollama-js suite failed against {url}:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("# pass ") && stdout.contains("# fail 0"),
        "node ran tests:\n{stdout}"
    );
}
