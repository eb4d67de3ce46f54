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
            "FOREMAN_INSTANCE_ID",
            "host/1",
            "invalid --instance-id (FOREMAN_INSTANCE_ID)",
        ),
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

/// The environment of a running process, from `/proc`.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn environment_of(pid: u32) -> Vec<String> {
    std::fs::read(format!("/proc/{pid}/environ"))
        .unwrap()
        .split(|byte| *byte == 0)
        .map(|entry| String::from_utf8_lossy(entry).into_owned())
        .collect()
}

/// `foreman serve` runs with glibc's allocator tuned to give freed connection memory
/// back, unless the caller chose the tunable itself.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[tokio::test]
async fn serve_runs_with_the_allocator_tuned() {
    use tokio::io::AsyncBufReadExt;
    for (given, expected) in [
        (None, "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=8192"),
        // Ours goes first (glibc may keep only the first entry in the variable it
        // shows).
        (
            Some("glibc.malloc.arena_max=2"),
            "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=8192",
        ),
        (
            Some("glibc.malloc.mmap_threshold=131072"),
            "GLIBC_TUNABLES=glibc.malloc.mmap_threshold=131072",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut command = serve();
        command
            .arg("--simulate")
            .env("FOREMAN_ADDR", "127.0.0.1:0")
            .env("FOREMAN_DATABASE", dir.path().join("foreman.db"))
            .env("FOREMAN_DATA_DIR", dir.path().join("data"))
            .env("FOREMAN_LOG", "warn")
            .env_remove("GLIBC_TUNABLES")
            .stdout(std::process::Stdio::piped())
            .kill_on_drop(true);
        if let Some(given) = given {
            command.env("GLIBC_TUNABLES", given);
        }
        let mut child = command.spawn().unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        // Once it prints its address, the process runs its final image.
        tokio::time::timeout(std::time::Duration::from_secs(20), lines.next_line())
            .await
            .expect("foreman prints its start")
            .unwrap()
            .expect("foreman is running");
        let environment = environment_of(child.id().unwrap());
        let tunables: Vec<&String> = environment
            .iter()
            .filter(|entry| entry.starts_with("GLIBC_TUNABLES="))
            .collect();
        assert_eq!(tunables.len(), 1, "given {given:?}");
        assert!(
            tunables[0].starts_with(expected),
            "given {given:?}: {tunables:?}"
        );
        child.kill().await.unwrap();
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
