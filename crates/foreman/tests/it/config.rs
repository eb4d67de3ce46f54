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
