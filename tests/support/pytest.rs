//! Runs the official-client Python suite (`tests/python`) against a server, for the
//! Rust integration tests of both the simulator and foreman. Included by path from
//! each crate's tests, so the two suites share one runner.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// The repository root, from a crate's manifest directory.
pub fn repo_root(manifest_dir: &str) -> PathBuf {
    Path::new(manifest_dir).join("../..")
}

/// Runs pytest on `tests/python` (optionally only tests matching `filter`) with
/// `OLLAMA_HOST=url`, the model names and `env` (e.g. `TEST_DIRECT_HOST`, the
/// simulator behind foreman, which tests ask too and compare answers with), and fails
/// with pytest's output unless all pass.
pub async fn run_python_suite(
    manifest_dir: &str,
    url: &str,
    models: [&str; 3],
    filter: Option<&str>,
    env: &[(&str, &str)],
) {
    let root = repo_root(manifest_dir);
    let python = root.join(".venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup-python.sh (scripts/test does it)",
        python.display()
    );
    let mut command = tokio::process::Command::new(&python);
    command
        .current_dir(&root)
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "tests/python",
        ])
        .env("OLLAMA_HOST", url)
        .env("TEST_CHAT_MODEL", models[0])
        .env("TEST_CHAT_MODEL_2", models[1])
        .env("TEST_EMBED_MODEL", models[2])
        // No __pycache__ left in the work tree.
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .kill_on_drop(true);
    command.envs(env.iter().copied());
    if let Some(filter) = filter {
        command.args(["-k", filter]);
    }
    let output = tokio::time::timeout(Duration::from_secs(300), command.output())
        .await
        .expect("the Python suite finishes within five minutes (pytest was killed)")
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the official-client suite failed against {url}:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains(" passed"), "pytest ran tests:\n{stdout}");
}
