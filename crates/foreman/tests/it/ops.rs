//! Running foreman for real: `/readyz`, the log (no colour into a pipe, JSON lines,
//! the start lines), the second signal that stops at once without losing a job, the
//! default data directory, the token from a file, on/off settings written as
//! services write them, and `foreman db backup` beside a running daemon.

use std::time::Duration;

use foreman_store::{JobState, ListParams, Store};
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStderr, Command};

use crate::common::*;

type Log = Lines<BufReader<ChildStderr>>;

/// Reads log lines until one contains `needle`; returns every line read.
async fn read_until(log: &mut Log, needle: &str) -> Vec<String> {
    let mut seen = Vec::new();
    let found = tokio::time::timeout(Duration::from_secs(60), async {
        while let Some(line) = log.next_line().await.unwrap() {
            let done = line.contains(needle);
            seen.push(line);
            if done {
                return true;
            }
        }
        false
    })
    .await;
    assert!(
        matches!(found, Ok(true)),
        "no log line with {needle:?}: {seen:#?}"
    );
    seen
}

/// Every remaining log line, up to the process's end.
async fn rest_of(log: &mut Log) -> Vec<String> {
    let mut lines = Vec::new();
    while let Some(line) = log.next_line().await.unwrap() {
        lines.push(line);
    }
    lines
}

fn signal(child: &tokio::process::Child, signal: rustix::process::Signal) {
    let pid = rustix::process::Pid::from_raw(child.id().unwrap() as i32).unwrap();
    rustix::process::kill_process(pid, signal).unwrap();
}

async fn submit(client: &reqwest::Client, url: &str, text: &str) -> String {
    let (status, _, body) = post(
        client,
        format!("{url}/jobs"),
        &json!({"kind": "chat", "request": chat_body(CHAT, text, false)}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    serde_json::from_str::<Value>(&body).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string()
}

/// A port nothing listens on (bound, then let go).
async fn closed_port() -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().port()
}

#[tokio::test]
async fn readyz_is_ready_and_public_while_every_other_route_wants_the_token() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.token = Some("s3cret".into());
    })
    .await;
    let client = client();
    let response = client
        .get(format!("{}/readyz", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["status"], "ready");
    assert_eq!(body["store"], "writable");
    assert_eq!(body["targets_answering"].as_array().unwrap().len(), 1);
    assert!(
        !body.to_string().contains(&foreman.sim.url()),
        "public: no target URL"
    );
    let jobs = client
        .get(format!("{}/jobs", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(jobs.status(), 401, "the token is in force");
    // Behind the Host guard like every route: a foreign Host on loopback is refused.
    let foreign = client
        .get(format!("{}/readyz", foreman.url))
        .header("Host", "evil.example")
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    foreman.stop().await;
}

#[tokio::test]
async fn readyz_answers_503_naming_why_when_no_target_answers() {
    let port = closed_port().await;
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.targets = vec![
            foreman::targets::TargetSpec::single(&format!("http://127.0.0.1:{port}")).unwrap(),
        ];
    })
    .await;
    let client = client();
    let response = client
        .get(format!("{}/readyz", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    let body: Value = response.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(error.contains("no target answers its poll"), "{error}");
    assert!(
        error.contains(&format!("127.0.0.1:{port}")),
        "names the target: {error}"
    );
    assert!(!error.contains("store"), "the store can write: {error}");
    // /healthz stays 200, with the degraded flag.
    let health = client
        .get(format!("{}/healthz", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.json::<Value>().await.unwrap()["degraded"], true);
    foreman.stop().await;
}

/// The first SIGTERM starts a graceful shutdown that would wait an hour for the
/// held job; the second ends the process at once, with a non-zero code. The job
/// stays in the store and runs after the restart.
#[tokio::test]
async fn a_second_sigterm_exits_at_once_and_the_running_job_runs_after_a_restart() {
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), fast_sim())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foreman.db");
    let db = db.to_str().unwrap();
    let settings = [
        ("FOREMAN_OLLAMA_URL", sim.url()),
        ("FOREMAN_SHUTDOWN_GRACE", "1h".to_string()),
    ];
    let (mut child, url, mut log) = start_foreman_binary_logged(db, &settings).await;
    let client = client();
    hold(&sim, true);
    let id = submit(&client, &url, "held").await;
    eventually("the job at the target", async || sim.stats().held == 1).await;

    signal(&child, rustix::process::Signal::TERM);
    let shutdown = read_until(&mut log, "shutting down").await;
    let line = shutdown.last().unwrap();
    assert!(
        line.contains("waiting up to 1h for 1 running job"),
        "says what it waits for and how long: {line}"
    );
    assert!(line.contains("queued jobs stay in the queue"), "{line}");
    signal(&child, rustix::process::Signal::TERM);
    // A deadline, not a timing: the graceful path would wait an hour.
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait())
        .await
        .expect("the second signal ends the process")
        .unwrap();
    assert_eq!(status.code(), Some(128 + 15), "{status:?}");
    let rest = rest_of(&mut log).await;
    assert!(
        rest.iter().any(|l| l.contains("a second signal (SIGTERM)")),
        "{rest:#?}"
    );

    let store = Store::open(db).await.unwrap();
    let job = store.get(id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Running, "left as it was, for recovery");
    hold(&sim, false);
    let (mut second, url, mut log) = start_foreman_binary_logged(db, &settings).await;
    let opened = read_until(&mut log, "opened the job queue").await;
    assert!(
        opened.last().unwrap().contains("requeued_running=1"),
        "{opened:#?}"
    );
    eventually("the job to run after the restart", async || {
        let job = store.get(id.parse().unwrap()).await.unwrap().unwrap();
        job.state == JobState::Succeeded
    })
    .await;
    let answer: Value = client
        .get(format!("{url}/jobs/{id}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(answer["state"], "succeeded");
    signal(&second, rustix::process::Signal::TERM);
    assert!(
        second.wait().await.unwrap().success(),
        "one signal: a clean exit"
    );
    store.close().await;
}

/// Into a pipe the text log has no escape codes; it has one line on the queue opened
/// (absolute path, schema version, what was recovered) and one start line with the
/// settings, never the token, and no "foreman listening" line.
#[tokio::test]
async fn the_text_log_has_no_colour_in_a_pipe_and_one_line_each_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foreman.db");
    let settings = [
        ("FOREMAN_SIMULATE", "1".to_string()),
        ("FOREMAN_TOKEN", "very-secret-token".to_string()),
        ("FOREMAN_MAX_QUEUE", "77".to_string()),
    ];
    let (mut child, _, mut log) =
        start_foreman_binary_logged(db.to_str().unwrap(), &settings).await;
    let mut lines = read_until(&mut log, "foreman serving").await;
    signal(&child, rustix::process::Signal::INT);
    lines.extend(rest_of(&mut log).await);
    assert!(child.wait().await.unwrap().success());
    let text = lines.join("\n");
    assert!(!text.contains('\u{1b}'), "no ANSI escapes: {text}");
    assert!(!text.contains("very-secret-token"), "{text}");
    assert!(!text.contains("foreman listening"), "{text}");
    let opened: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("opened the job queue"))
        .collect();
    assert_eq!(opened.len(), 1, "{text}");
    assert!(opened[0].contains(&db.display().to_string()), "{text}");
    assert!(opened[0].contains("schema_version="), "{text}");
    assert!(opened[0].contains("requeued_running=0"), "{text}");
    assert!(opened[0].contains("abandoned_sync=0"), "{text}");
    let start: Vec<&String> = lines
        .iter()
        .filter(|l| l.contains("foreman serving"))
        .collect();
    assert_eq!(start.len(), 1, "{text}");
    for setting in [
        "addr=127.0.0.1:",
        "auth=\"on\"",
        "max_queue=77",
        "max_wait=1m",
        "sim (",
    ] {
        assert!(start[0].contains(setting), "{setting} in {}", start[0]);
    }
    assert!(text.contains("shutting down: no job is running"), "{text}");
}

#[tokio::test]
async fn the_json_log_is_one_object_per_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foreman.db");
    let settings = [
        ("FOREMAN_SIMULATE", "yes".to_string()),
        ("FOREMAN_LOG_FORMAT", "json".to_string()),
    ];
    let (mut child, _, mut log) =
        start_foreman_binary_logged(db.to_str().unwrap(), &settings).await;
    let mut lines = read_until(&mut log, "foreman serving").await;
    signal(&child, rustix::process::Signal::TERM);
    lines.extend(rest_of(&mut log).await);
    assert!(child.wait().await.unwrap().success());
    assert!(lines.len() >= 3, "{lines:#?}");
    let events: Vec<Value> = lines
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
        .collect();
    let opened = events
        .iter()
        .find(|e| e["message"] == "opened the job queue")
        .expect("the queue line");
    assert!(opened["schema_version"].as_i64().unwrap() >= 1);
    assert_eq!(opened["requeued_running"], 0);
    assert!(opened["database"].as_str().unwrap().ends_with("foreman.db"));
    let start = events
        .iter()
        .find(|e| e["message"] == "foreman serving")
        .expect("the start line");
    assert_eq!(start["auth"], "off");
    assert_eq!(start["level"], "INFO");
}

/// `foreman serve` with none of the developer's `FOREMAN_*` or platform variables.
fn bare_serve(home: &std::path::Path) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_foreman"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FOREMAN_") {
            command.env_remove(name);
        }
    }
    for name in [
        "STATE_DIRECTORY",
        "XDG_DATA_HOME",
        "CREDENTIALS_DIRECTORY",
        "NO_COLOR",
    ] {
        command.env_remove(name);
    }
    command
        .arg("serve")
        .env("HOME", home)
        .env("FOREMAN_ADDR", "127.0.0.1:0")
        .env("FOREMAN_SIMULATE", "on")
        .current_dir(home);
    command
}

/// Runs `command` until its start line, then stops it; returns its log.
async fn log_of_a_start(mut command: Command) -> String {
    let mut child = command
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut log = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut lines = read_until(&mut log, "foreman serving").await;
    signal(&child, rustix::process::Signal::TERM);
    lines.extend(rest_of(&mut log).await);
    let status = child.wait().await.unwrap();
    assert!(status.success(), "{status:?}: {lines:#?}");
    lines.join("\n")
}

/// Without database settings the queue goes to the platform's data directory, not
/// the working directory: `~/.local/share/foreman`, or `$STATE_DIRECTORY` under
/// systemd; an old `foreman.db` left in the working directory is pointed out.
#[tokio::test]
async fn the_database_defaults_to_the_data_directory() {
    let home = tempfile::tempdir().unwrap();
    std::fs::write(home.path().join("foreman.db"), b"").unwrap();
    let log = log_of_a_start(bare_serve(home.path())).await;
    let expected = home.path().join(".local/share/foreman/foreman.db");
    assert!(expected.is_file(), "{log}");
    assert!(log.contains(&expected.display().to_string()), "{log}");
    assert!(
        log.contains("a foreman.db in the working directory is not the queue"),
        "{log}"
    );

    let state = tempfile::tempdir().unwrap();
    let mut command = bare_serve(home.path());
    command.env("STATE_DIRECTORY", state.path());
    let log = log_of_a_start(command).await;
    let expected = state.path().join("foreman.db");
    assert!(expected.is_file(), "{log}");
    assert!(log.contains(&expected.display().to_string()), "{log}");
}

/// The token from a file (trailing newline dropped) or from a systemd credential;
/// both a token and a token file are refused at start.
#[tokio::test]
async fn the_token_comes_from_a_file_or_a_systemd_credential() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("token");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let credentials = tempfile::tempdir().unwrap();
    std::fs::write(credentials.path().join("foreman-token"), "from-systemd\r\n").unwrap();
    for (variable, value, token) in [
        ("FOREMAN_TOKEN_FILE", file.as_os_str(), "from-a-file"),
        (
            "CREDENTIALS_DIRECTORY",
            credentials.path().as_os_str(),
            "from-systemd",
        ),
    ] {
        let mut command = bare_serve(home.path());
        command
            .env(variable, value)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true);
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        let banner = stdout.next_line().await.unwrap().unwrap();
        let url = banner
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .to_string();
        let client = client();
        let without = client.get(format!("{url}/jobs")).send().await.unwrap();
        assert_eq!(without.status(), 401, "{variable}");
        let with = client
            .get(format!("{url}/jobs"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(with.status(), 200, "{variable}");
        signal(&child, rustix::process::Signal::TERM);
        child.wait().await.unwrap();
    }
    let output = bare_serve(home.path())
        .env("FOREMAN_TOKEN", "x")
        .env("FOREMAN_TOKEN_FILE", &file)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(
            "invalid --token-file (FOREMAN_TOKEN_FILE): --token (FOREMAN_TOKEN) is set too"
        ),
        "{stderr}"
    );
}

/// On/off settings take what services and shells write, in any case.
#[tokio::test]
async fn on_off_settings_accept_1_yes_on_and_refuse_the_rest() {
    let home = tempfile::tempdir().unwrap();
    for value in ["1", "YES", "On", "true"] {
        let mut command = bare_serve(home.path());
        command.env("FOREMAN_SIMULATE", value);
        command.env("FOREMAN_ALLOW_MODEL_MANAGEMENT", "0");
        log_of_a_start(command).await;
    }
    let output = bare_serve(home.path())
        .env("FOREMAN_SIMULATE", "maybe")
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.starts_with(
            "foreman: invalid --simulate (FOREMAN_SIMULATE): \"maybe\" is not on or off"
        ),
        "{stderr}"
    );
}

/// `foreman db backup` beside a running foreman: the copy opens as a foreman
/// database with every job; a second backup to the same file is refused.
#[tokio::test]
async fn db_backup_beside_a_running_foreman_copies_every_job() {
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), fast_sim())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foreman.db");
    let db = db.to_str().unwrap();
    let (mut child, url) =
        start_foreman_binary(db, &[("FOREMAN_OLLAMA_URL", sim.url())], false).await;
    let client = client();
    hold(&sim, true);
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(submit(&client, &url, &format!("job {n}")).await);
    }
    let backup = dir.path().join("backup.db");
    let run = || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_foreman"));
        command
            .args(["db", "backup", "--json"])
            .arg(&backup)
            .env("FOREMAN_DATABASE", db);
        command
    };
    let output = run().output().await.unwrap();
    assert!(output.status.success(), "{output:?}");
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["jobs"], 5, "{report}");
    assert_eq!(report["backup"], backup.display().to_string());
    let copy = Store::open(backup.to_str().unwrap()).await.unwrap();
    let jobs = copy
        .list(ListParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut copied: Vec<String> = jobs.iter().map(|j| j.id.to_string()).collect();
    copied.sort();
    ids.sort();
    assert_eq!(copied, ids);
    copy.close().await;

    let again = run().output().await.unwrap();
    assert_eq!(again.status.code(), Some(1));
    let error: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert!(
        error["error"]
            .as_str()
            .unwrap()
            .contains("never overwrites"),
        "{error}"
    );
    hold(&sim, false);
    signal(&child, rustix::process::Signal::TERM);
    child.wait().await.unwrap();
}

/// A finished job writes one `info` line naming it, its model, its target, its wait
/// and run and how it ended; in JSON, the target is the Ollama server the job ran on
/// (the log's own module path is left out, so no key appears twice).
#[tokio::test]
async fn a_finished_job_logs_one_line_with_its_id_target_and_times() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foreman.db");
    let settings = [
        ("FOREMAN_SIMULATE", "yes".to_string()),
        ("FOREMAN_LOG_FORMAT", "json".to_string()),
        ("FOREMAN_LOG", "info".to_string()),
    ];
    let (mut child, url, mut log) =
        start_foreman_binary_logged(db.to_str().unwrap(), &settings).await;
    read_until(&mut log, "foreman serving").await;
    let response = client()
        .post(format!("{url}/api/chat"))
        .json(&chat_body("llama3.2:3b", "hello", false))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id = response.headers()["x-foreman-job-id"]
        .to_str()
        .unwrap()
        .to_string();
    let lines = read_until(&mut log, "job finished").await;
    signal(&child, rustix::process::Signal::TERM);
    assert!(child.wait().await.unwrap().success());
    let line = lines.last().unwrap();
    assert_eq!(line.matches("\"target\":").count(), 1, "{line}");
    let finished: Value = serde_json::from_str(line).unwrap();
    assert_eq!(finished["job"], id.as_str(), "{finished:#}");
    assert_eq!(finished["model"], "llama3.2:3b");
    assert_eq!(finished["target"], "sim");
    assert_eq!(finished["outcome"], "succeeded");
    assert!(finished["wait_s"].as_f64().unwrap() >= 0.0);
    assert!(finished["run_s"].as_f64().unwrap() > 0.0);
}
