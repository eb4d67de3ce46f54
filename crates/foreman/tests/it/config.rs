//! The binary's start-up checks: a bad setting fails at once with one line naming it.

use tokio::process::Command;

/// `foreman serve` with none of the developer's `FOREMAN_*` variables.
fn serve() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_foreman"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FOREMAN_") {
            command.env_remove(name);
        }
    }
    command.arg("serve");
    command
}

#[tokio::test]
async fn bad_settings_fail_with_one_line_naming_them() {
    let cases = [
        (
            "FOREMAN_JOB_TTL",
            "forever",
            "invalid --job-ttl (FOREMAN_JOB_TTL)",
        ),
        (
            "FOREMAN_OLLAMA_URL",
            "ftp://x",
            "invalid --ollama-url (FOREMAN_OLLAMA_URL)",
        ),
        (
            "FOREMAN_MAX_ATTEMPTS",
            "0",
            "invalid --max-attempts (FOREMAN_MAX_ATTEMPTS)",
        ),
        ("FOREMAN_ADDR", "nowhere", "invalid --addr (FOREMAN_ADDR)"),
        ("FOREMAN_LEASE", "0s", "invalid --lease (FOREMAN_LEASE)"),
        (
            "FOREMAN_ORIGINS",
            "app.example",
            "invalid --origins (FOREMAN_ORIGINS)",
        ),
        (
            "FOREMAN_JANITOR_INTERVAL",
            "often",
            "invalid --janitor-interval (FOREMAN_JANITOR_INTERVAL)",
        ),
        (
            "FOREMAN_TARGET_DOWN_TIMEOUT",
            "0s",
            "invalid --target-down-timeout (FOREMAN_TARGET_DOWN_TIMEOUT)",
        ),
        (
            "FOREMAN_MAX_QUEUE",
            "lots",
            "invalid --max-queue (FOREMAN_MAX_QUEUE)",
        ),
        (
            "FOREMAN_TARGETS",
            "http://127.0.0.1:9 sim,name=gpu1",
            "invalid --target (FOREMAN_TARGETS)",
        ),
        (
            "FOREMAN_TARGETS",
            "http://127.0.0.1:9,slots=0",
            "invalid --target (FOREMAN_TARGETS)",
        ),
    ];
    for (variable, value, expected) in cases {
        let output = serve().env(variable, value).output().await.unwrap();
        assert_eq!(output.status.code(), Some(2), "{variable}={value}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
        assert!(
            stderr.starts_with(&format!("foreman: {expected}: ")),
            "{stderr}"
        );
    }
}

#[tokio::test]
async fn simulate_starts_one_simulator_per_sim_target() {
    use tokio::io::AsyncBufReadExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve()
        .args([
            "--simulate",
            "--target",
            "sim,name=gpu0,slots=4,places=2",
            "--target",
            "sim,name=gpu1,slots=2",
        ])
        .env("FOREMAN_ADDR", "127.0.0.1:0")
        .env("FOREMAN_DATABASE", dir.path().join("foreman.db"))
        .env("FOREMAN_DATA_DIR", dir.path().join("data"))
        .env("FOREMAN_LOG", "warn")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let mut printed = Vec::new();
    while printed.len() < 3 {
        let line = tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .expect("foreman prints its start")
            .unwrap()
            .expect("foreman is still running");
        printed.push(line);
    }
    let url = printed[0]
        .strip_prefix("foreman listening on ")
        .unwrap_or_else(|| panic!("{printed:?}"))
        .to_string();
    assert!(
        printed[1].starts_with("target gpu0: http://127.0.0.1:")
            && printed[1].ends_with("(simulated), slots=4, places=2"),
        "{printed:?}"
    );
    assert!(
        printed[2].starts_with("target gpu1: ") && printed[2].ends_with("slots=2, places=1"),
        "{printed:?}"
    );
    let client = crate::common::client();
    let mut health = serde_json::Value::Null;
    crate::common::eventually("both simulated targets to answer", async || {
        health = crate::common::get_json(&client, format!("{url}/healthz"))
            .await
            .1;
        health["target_reachable"] == true
    })
    .await;
    let names: Vec<&str> = health["targets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["gpu0", "gpu1"]);
    let (status, tags) = crate::common::get_json(&client, format!("{url}/api/tags")).await;
    assert_eq!(status, 200);
    assert!(!tags["models"].as_array().unwrap().is_empty());
    child.kill().await.unwrap();
}

#[tokio::test]
async fn an_unusable_database_fails_at_start() {
    let output = serve()
        .env("FOREMAN_ADDR", "127.0.0.1:0")
        .env("FOREMAN_DATABASE", "postgres://db.example/foreman")
        .env("FOREMAN_OLLAMA_URL", "http://127.0.0.1:9")
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("foreman: cannot open the job store"),
        "{stderr}"
    );
}
