//! `foreman jobs ...` against a running daemon, as a script would use it.

use serde_json::Value;
use tokio::process::Command;

use crate::common::*;

async fn jobs(url: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_foreman"))
        .arg("jobs")
        .args(args)
        .env("FOREMAN_URL", url)
        .env_remove("FOREMAN_TOKEN")
        .output()
        .await
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn submit_wait_get_list_and_cancel_from_the_command_line() {
    let foreman = TestForeman::start(fast_sim()).await;
    let url = foreman.url.as_str();
    let (code, id, stderr) = jobs(
        url,
        &[
            "submit",
            "--model",
            CHAT,
            "--message",
            "hello from a script",
            "--metadata",
            "{\"n\":1}",
        ],
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let id = id.trim().to_string();
    assert_eq!(id.len(), 26, "the job id alone: {id}");

    let (code, out, stderr) = jobs(url, &["wait", &id, "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let job: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(job["state"], "succeeded");
    assert!(job["result"]["message"]["content"].is_string());

    let (code, out, _) = jobs(url, &["get", &id]).await;
    assert_eq!(code, 0);
    assert!(out.contains("state: succeeded"), "{out}");
    assert!(
        out.contains(job["result"]["message"]["content"].as_str().unwrap()),
        "the answer is printed"
    );

    let (code, out, _) = jobs(
        url,
        &[
            "submit",
            "--kind",
            "generate",
            "--model",
            CHAT2,
            "-m",
            "once upon",
            "--priority",
            "-3",
            "--json",
        ],
    )
    .await;
    assert_eq!(code, 0);
    let second: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(second["priority"], -3);
    assert_eq!(second["kind"], "generate");

    let (code, table, _) = jobs(url, &["list"]).await;
    assert_eq!(code, 0);
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("STATE"),
        "{table}"
    );
    assert_eq!(lines.len(), 3, "a header and two jobs:\n{table}");
    let (_, listed, _) = jobs(url, &["list", "--json", "--model", CHAT]).await;
    let listed: Value = serde_json::from_str(listed.trim()).unwrap();
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 1);

    let (code, _, stderr) = jobs(url, &["cancel", &id]).await;
    assert_eq!(code, 1, "a finished job cannot be cancelled");
    assert!(
        stderr.contains("already succeeded") && stderr.contains("409"),
        "{stderr}"
    );
    let (code, _, stderr) = jobs(url, &["submit", "--message", "no model"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("--model is required"));
    let (code, _, stderr) = jobs("http://127.0.0.1:9", &["get", &id]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot reach foreman"), "{stderr}");
    foreman.stop().await;
}
