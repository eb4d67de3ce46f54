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

/// `foreman jobs list | head`: the reader of standard output is gone before foreman
/// writes (the pipe's read end is closed before the process starts, so every write
/// meets EPIPE). foreman must end quietly with success, not panic.
#[tokio::test]
async fn a_reader_that_goes_away_ends_the_listing_quietly() {
    let foreman = TestForeman::start(fast_sim()).await;
    let (code, _, stderr) = jobs(&foreman.url, &["submit", "--model", CHAT, "-m", "hi"]).await;
    assert_eq!(code, 0, "{stderr}");
    for args in [&["list"][..], &["list", "--json"][..]] {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let output = Command::new(env!("CARGO_BIN_EXE_foreman"))
            .arg("jobs")
            .args(args)
            .env("FOREMAN_URL", &foreman.url)
            .env_remove("FOREMAN_TOKEN")
            .stdout(writer)
            .output()
            .await
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            output.status.success() && stderr.is_empty(),
            "{args:?}: {:?}, stderr: {stderr}",
            output.status
        );
    }
    foreman.stop().await;
}

/// A listing longer than a page ends with the command that lists the next page, and
/// that command, run as printed, lists the rest.
#[tokio::test]
async fn the_listing_says_how_to_get_the_next_page() {
    let foreman = TestForeman::start(fast_sim()).await;
    let url = foreman.url.as_str();
    let mut ids = Vec::new();
    for n in 0..3 {
        let (code, id, stderr) =
            jobs(url, &["submit", "--model", CHAT, "-m", &format!("job {n}")]).await;
        assert_eq!(code, 0, "{stderr}");
        ids.push(id.trim().to_string());
    }
    let (code, first, stderr) = jobs(url, &["list", "--model", CHAT, "--limit", "2"]).await;
    assert_eq!(code, 0, "{stderr}");
    let last = first.lines().last().unwrap();
    let command = last
        .strip_prefix("more: foreman jobs ")
        .unwrap_or_else(|| panic!("the page ends with the next page's command:\n{first}"));
    assert!(first.contains(&ids[2]) && first.contains(&ids[1]) && !first.contains(&ids[0]));
    let args: Vec<&str> = command.split_whitespace().collect();
    assert!(args.contains(&"--cursor"), "{command}");
    let (code, second, stderr) = jobs(url, &args).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(second.contains(&ids[0]), "{second}");
    assert!(
        !second.contains(&ids[1]) && !second.contains("more:"),
        "the last page:\n{second}"
    );
    let (_, json, _) = jobs(url, &["list", "--limit", "2", "--json"]).await;
    let page: Value = serde_json::from_str(json.trim()).unwrap();
    assert_eq!(page["next_cursor"].as_str(), Some(ids[1].as_str()));
    foreman.stop().await;
}

/// The generated completion script and man page know the commands and their flags.
#[tokio::test]
async fn completions_and_the_man_page_come_from_the_command_line_definition() {
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
        bash.contains("_foreman()") && bash.contains("--cursor"),
        "{bash}"
    );
    let zsh = run(&["completions", "zsh"]).await;
    assert!(zsh.starts_with("#compdef foreman"), "{zsh}");
    let man = run(&["man"]).await;
    assert!(
        man.contains(".TH foreman 1") && man.contains("jobs"),
        "{man}"
    );
}

/// `foreman jobs wait` with standard error not a terminal writes each new status as
/// a line there while it waits (a running job here, held by the simulator), then
/// the answer on standard output once the job ends.
#[tokio::test]
async fn wait_reports_each_status_while_it_waits() {
    use tokio::io::{AsyncBufReadExt, BufReader};
    let foreman = TestForeman::start(fast_sim()).await;
    hold(&foreman.sim, true);
    let (code, id, stderr) = jobs(&foreman.url, &["submit", "--model", CHAT, "-m", "hi"]).await;
    assert_eq!(code, 0, "{stderr}");
    let id = id.trim().to_string();
    let mut waiter = Command::new(env!("CARGO_BIN_EXE_foreman"))
        .args(["jobs", "wait", &id])
        .env("FOREMAN_URL", &foreman.url)
        .env_remove("FOREMAN_TOKEN")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut status = BufReader::new(waiter.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    loop {
        let line = tokio::time::timeout(std::time::Duration::from_secs(30), status.next_line())
            .await
            .expect("a status line while the job is held")
            .unwrap()
            .unwrap_or_else(|| panic!("stderr ended: {seen:?}"));
        // The line goes on with the forecast end ("; finishes in ~10s").
        let running = line.starts_with(&format!("{id}: running (attempt 1)"));
        seen.push(line);
        if running {
            break;
        }
    }
    assert!(
        seen.iter().all(|l| l.starts_with(&format!("{id}: "))),
        "{seen:?}"
    );
    hold(&foreman.sim, false);
    let output = waiter.wait_with_output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("state: succeeded"), "{stdout}");
    foreman.stop().await;
}
