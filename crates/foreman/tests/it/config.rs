//! The binary's start-up checks: a bad setting fails at once with one line naming it.

use tokio::process::Command;

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
    ];
    for (variable, value, expected) in cases {
        let output = Command::new(env!("CARGO_BIN_EXE_foreman"))
            .arg("serve")
            .env(variable, value)
            .output()
            .await
            .unwrap();
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
    let output = Command::new(env!("CARGO_BIN_EXE_foreman"))
        .arg("serve")
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
