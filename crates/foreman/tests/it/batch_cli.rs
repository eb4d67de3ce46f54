//! `foreman batch ...` against a running daemon, as a person or a script would use
//! it: the real binary uploads a JSONL file, creates the batch, waits for it, lists,
//! cancels and downloads. Outputs are checked by structure (every `custom_id` once,
//! the counts), never by timing.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::{Value, json};
use tokio::process::Command;

use crate::common::*;

async fn batch(url: &str, args: &[&str]) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_foreman"))
        .arg("batch")
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

/// `lines` chat requests, alternating between two models, as `/v1/chat/completions`
/// lines with `custom_id`s `{prefix}-0`, `{prefix}-1`...
fn write_input(dir: &Path, prefix: &str, lines: usize) -> String {
    let mut text = String::new();
    for i in 0..lines {
        let model = if i.is_multiple_of(2) { CHAT } else { CHAT2 };
        let line = json!({
            "custom_id": format!("{prefix}-{i}"),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": format!("line {i}")}]},
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    let path = dir.join(format!("{prefix}.jsonl"));
    std::fs::write(&path, text).unwrap();
    path.to_string_lossy().into_owned()
}

/// Each `custom_id` of an output file and how often it appears, with the lines.
fn by_custom_id(jsonl: &str) -> (BTreeMap<String, usize>, Vec<Value>) {
    let lines: Vec<Value> = jsonl
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let mut seen = BTreeMap::new();
    for line in &lines {
        *seen
            .entry(line["custom_id"].as_str().unwrap().to_string())
            .or_insert(0) += 1;
    }
    (seen, lines)
}

async fn get(url: &str, id: &str) -> Value {
    let (code, out, stderr) = batch(url, &["get", id, "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    serde_json::from_str(out.trim()).unwrap()
}

#[tokio::test]
async fn submit_wait_get_and_output_from_the_command_line() {
    let foreman = TestForeman::start(fast_sim()).await;
    let url = foreman.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), "doc", 40);

    let (code, out, stderr) = batch(
        url,
        &[
            "submit",
            &input,
            "--endpoint",
            "/v1/chat/completions",
            "--metadata",
            "team=search",
            "--metadata",
            "run=7",
            "--wait",
            "--poll",
            "100ms",
        ],
    )
    .await;
    assert_eq!(code, 0, "stdout: {out}\nstderr: {stderr}");
    let id = out.lines().next().unwrap().trim().to_string();
    assert!(id.starts_with("batch_"), "the id comes first: {out}");
    assert!(out.contains("status: completed"), "{out}");
    assert!(out.contains("40 completed, 0 failed of 40"), "{out}");
    // Standard error is not a terminal here: the statuses seen are logged as lines,
    // the last of them the end.
    let logged: Vec<&str> = stderr.lines().collect();
    assert!(
        !logged.is_empty() && logged.iter().all(|l| l.starts_with(&format!("{id}: "))),
        "{stderr}"
    );
    assert!(
        logged
            .last()
            .unwrap()
            .starts_with(&format!("{id}: completed")),
        "{stderr}"
    );

    let view = get(url, &id).await;
    assert_eq!(view["status"], "completed");
    assert_eq!(
        view["request_counts"],
        json!({"total": 40, "completed": 40, "failed": 0})
    );
    assert_eq!(view["metadata"], json!({"team": "search", "run": "7"}));
    assert_eq!(view["endpoint"], "/v1/chat/completions");
    let (code, text, _) = batch(url, &["get", &id]).await;
    assert_eq!(code, 0);
    assert!(
        text.contains("status: completed") && text.contains("metadata: team=search"),
        "{text}"
    );

    let (code, output, stderr) = batch(url, &["output", &id]).await;
    assert_eq!(code, 0, "{stderr}");
    let (seen, lines) = by_custom_id(&output);
    assert_eq!(seen.len(), 40, "every line answered");
    assert!(seen.values().all(|n| *n == 1), "each custom_id once");
    for i in 0..40 {
        assert!(seen.contains_key(&format!("doc-{i}")), "doc-{i}");
    }
    for line in &lines {
        assert_eq!(line["response"]["status_code"], 200, "{line}");
        assert!(
            line["response"]["body"]["choices"][0]["message"]["content"].is_string(),
            "{line}"
        );
        let model = line["response"]["body"]["model"].as_str().unwrap();
        let n: usize = line["custom_id"].as_str().unwrap()[4..].parse().unwrap();
        assert_eq!(
            model,
            if n.is_multiple_of(2) { CHAT } else { CHAT2 },
            "the line ran on its own model: {line}"
        );
    }

    let saved = dir.path().join("out.jsonl");
    let saved_text = saved.to_string_lossy().into_owned();
    let (code, out, stderr) = batch(url, &["output", &id, "-o", &saved_text, "--json"]).await;
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(out.trim()).unwrap();
    let written = std::fs::read_to_string(&saved).unwrap();
    assert_eq!(written, output, "the file holds what standard output got");
    assert_eq!(report["bytes"], written.len());
    assert_eq!(report["file_id"], view["output_file_id"]);
    foreman.stop().await;
}

/// A listing longer than a page ends with the command that lists the next page, and
/// that command, run as printed, lists the rest.
#[tokio::test]
async fn the_batch_listing_says_how_to_get_the_next_page() {
    let foreman = TestForeman::start(fast_sim()).await;
    let url = foreman.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let mut ids = Vec::new();
    for n in 0..3 {
        // No --endpoint: it is taken from the first line's url.
        let input = write_input(dir.path(), &format!("page{n}"), 2);
        let (code, out, stderr) = batch(url, &["submit", &input]).await;
        assert_eq!(code, 0, "{stderr}");
        ids.push(out.trim().to_string());
    }
    let (code, first, stderr) = batch(url, &["list", "--limit", "2"]).await;
    assert_eq!(code, 0, "{stderr}");
    let rows: Vec<&str> = first.lines().collect();
    assert!(
        rows[0].starts_with("ID") && rows[0].contains("STATUS"),
        "{first}"
    );
    assert_eq!(
        rows.len(),
        4,
        "a header, two batches and the next page:\n{first}"
    );
    assert!(first.contains(&ids[2]) && first.contains(&ids[1]) && !first.contains(&ids[0]));
    let command = rows[3]
        .strip_prefix("more: foreman batch ")
        .unwrap_or_else(|| panic!("the page ends with the next page's command:\n{first}"));
    let args: Vec<&str> = command.split_whitespace().collect();
    assert_eq!(args[..3], ["list", "--limit", "2"], "{command}");
    assert_eq!(args[3..], ["--after", ids[1].as_str()], "{command}");
    let (code, second, stderr) = batch(url, &args).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(second.contains(&ids[0]), "{second}");
    assert!(
        !second.contains(&ids[1]) && !second.contains("more:"),
        "the last page:\n{second}"
    );
    let (code, out, stderr) = batch(url, &["wait", &ids[0], "--json", "--poll", "50ms"]).await;
    assert_eq!(code, 0, "{stderr}");
    let waited: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(waited["status"], "completed");
    assert!(stderr.is_empty(), "--json shows no progress: {stderr}");
    let (_, json, _) = batch(url, &["list", "--limit", "2", "--json"]).await;
    let page: Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(page["object"], "list");
    assert_eq!(page["has_more"], true);
    assert_eq!(page["data"].as_array().unwrap().len(), 2);

    // `foreman batch list | head`: a reader gone before the first write.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let output = Command::new(env!("CARGO_BIN_EXE_foreman"))
        .args(["batch", "list"])
        .env("FOREMAN_URL", url)
        .env_remove("FOREMAN_TOKEN")
        .stdout(writer)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success() && output.stderr.is_empty(),
        "{output:?}"
    );
    foreman.stop().await;
}

/// A batch cancelled while its lines are held by the target ends `cancelled`; the
/// lines that ran are in its output once each, the rest in none.
#[tokio::test]
async fn cancel_stops_a_batch_and_keeps_what_ran() {
    let foreman = TestForeman::start(fast_sim()).await;
    let url = foreman.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let input = write_input(dir.path(), "held", 30);
    hold(&foreman.sim, true);
    let (code, id, stderr) = batch(url, &["submit", &input]).await;
    assert_eq!(code, 0, "{stderr}");
    let id = id.trim().to_string();
    eventually("a line of the batch to reach the target", async || {
        foreman.sim.stats().held > 0
    })
    .await;
    let (code, out, stderr) = batch(url, &["cancel", &id]).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        out.trim() == format!("{id}: cancelling") || out.trim() == format!("{id}: cancelled"),
        "{out}"
    );
    hold(&foreman.sim, false);
    let mut ended = Value::Null;
    eventually("the batch to end cancelled", async || {
        ended = get(url, &id).await;
        ended["status"] == "cancelled"
    })
    .await;
    let (code, out, stderr) = batch(url, &["wait", &id]).await;
    assert_eq!(code, 1, "a cancelled batch is no success: {out}");
    assert!(
        stderr.contains(&format!("batch {id} cancelled")),
        "{stderr}"
    );
    assert!(out.contains("status: cancelled"), "{out}");
    let counts = &ended["request_counts"];
    let ran = counts["completed"].as_u64().unwrap() + counts["failed"].as_u64().unwrap();
    assert_eq!(counts["total"], 30);
    assert!(ran < 30, "the cancel dropped lines not yet run: {ended}");
    if ended["output_file_id"].is_string() {
        let (code, output, stderr) = batch(url, &["output", &id]).await;
        assert_eq!(code, 0, "{stderr}");
        let (seen, _) = by_custom_id(&output);
        assert!(seen.values().all(|n| *n == 1), "{seen:?}");
        assert_eq!(
            seen.len() as u64,
            counts["completed"].as_u64().unwrap(),
            "the output holds the lines that completed"
        );
    } else {
        assert_eq!(counts["completed"], 0, "{ended}");
        let (code, _, stderr) = batch(url, &["output", &id]).await;
        assert_eq!(code, 1);
        assert!(stderr.contains("has no output file"), "{stderr}");
    }
    let (code, _, stderr) = batch(url, &["submit", &input, "--wait", "--json"]).await;
    assert_eq!(code, 0, "a batch after the cancel runs: {stderr}");
    foreman.stop().await;
}

/// Bad usage exits 2 before anything is sent; foreman's refusals and an unreachable
/// daemon exit 1 with the message.
#[tokio::test]
async fn mistakes_and_refusals_are_reported_with_their_exit_codes() {
    let foreman = TestForeman::start(fast_sim()).await;
    let url = foreman.url.as_str();
    let dir = tempfile::tempdir().unwrap();
    let no_url = dir.path().join("no-url.jsonl");
    std::fs::write(&no_url, "{\"custom_id\":\"a\",\"body\":{}}\n").unwrap();
    let no_url = no_url.to_string_lossy().into_owned();
    let (code, _, stderr) = batch(url, &["submit", &no_url]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("give --endpoint"), "{stderr}");
    let input = write_input(dir.path(), "ok", 1);
    let (code, _, stderr) = batch(url, &["submit", &input, "--metadata", "novalue"]).await;
    assert_eq!(code, 2, "{stderr}");
    assert!(stderr.contains("KEY=VALUE"), "{stderr}");
    let (code, _, stderr) = batch(url, &["submit", "/nonexistent/in.jsonl"]).await;
    assert_eq!(code, 2, "{stderr}");

    let (code, _, stderr) = batch(url, &["get", "batch_nosuch"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("HTTP 404"), "{stderr}");
    let (code, _, stderr) = batch(url, &["submit", &input, "--endpoint", "/v1/nowhere"]).await;
    assert_eq!(code, 1, "foreman refuses the endpoint: {stderr}");
    assert!(stderr.contains("HTTP 400"), "{stderr}");
    let (code, _, stderr) = batch("http://127.0.0.1:9", &["list"]).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("cannot reach foreman"), "{stderr}");
    foreman.stop().await;
}

/// The completion scripts and the man page know `foreman batch` and its flags.
#[tokio::test]
async fn completions_and_the_man_page_include_the_batch_commands() {
    let run = |args: &'static [&'static str]| async move {
        let output = Command::new(env!("CARGO_BIN_EXE_foreman"))
            .args(args)
            .output()
            .await
            .unwrap();
        assert!(output.status.success(), "{args:?}: {output:?}");
        String::from_utf8(output.stdout).unwrap()
    };
    let bash = run(&["completions", "bash"]).await;
    assert!(
        bash.contains("foreman__subcmd__batch__subcmd__submit")
            && bash.contains("--endpoint")
            && bash.contains("--after")
            && bash.contains("--errors"),
        "{bash}"
    );
    let man = run(&["man"]).await;
    assert!(man.contains("foreman\\-batch(1)"), "{man}");
}
