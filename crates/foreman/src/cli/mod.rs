//! `foreman jobs ...`: the command-line client of the async jobs API, for scripts
//! and people. Tables by default, `--json` for scripts; `wait` shows a live line
//! with the job's state and queue position until it ends.
//!
//! Exit codes: 0 when the call (or the waited-for job) succeeded, 1 when the job
//! failed or was cancelled or foreman answered with an error, 2 for bad usage; a
//! reader of standard output that goes away early (`| head`) ends it quietly with 0
//! (see [`output`]).
//!
//! `foreman completions` and `foreman man` live here too ([`generate`]).

pub mod batch;
mod daemon;
mod generate;
mod output;
mod progress;

use std::process::ExitCode;
use std::time::{Duration, SystemTime};

use std::io::Write as _;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

use daemon::Daemon;
pub use generate::{CompletionsArgs, completions, man};
use output::{CliError, Output};

/// Where the daemon is and how to authenticate.
#[derive(Debug, Clone, Args)]
pub struct Connection {
    /// Base URL of the foreman daemon.
    #[arg(
        long,
        env = "FOREMAN_URL",
        default_value = "http://127.0.0.1:11435",
        global = true
    )]
    pub url: String,
    /// Bearer token, when the daemon requires one.
    #[arg(long, env = "FOREMAN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Print the API's JSON (one object per line) instead of text for people.
    #[arg(long, global = true)]
    pub json: bool,
}

impl Connection {
    /// A request to the daemon's `path` with `query`, carrying the token when one is set.
    fn request(
        &self,
        client: &reqwest::Client,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<reqwest::RequestBuilder, CliError> {
        let mut url = reqwest::Url::parse(&format!("{}{path}", self.url.trim_end_matches('/')))
            .map_err(|e| CliError::usage(format!("--url {}: {e}", self.url)))?;
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        let request = client.request(method, url);
        Ok(match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        })
    }
}

/// Runs one client command to its exit code (its error reported on standard error).
async fn exit_code(command: impl Future<Output = Result<(), CliError>>) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match command.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => error.report(),
    }
}

/// `foreman jobs <command>`.
#[derive(Debug, Args)]
pub struct JobsArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: JobsCommand,
}

#[derive(Debug, Subcommand)]
pub enum JobsCommand {
    /// Submit a job; prints its id.
    Submit(SubmitArgs),
    /// Show one job.
    Get { id: String },
    /// List jobs, newest first.
    List(ListArgs),
    /// Cancel a job.
    Cancel { id: String },
    /// Wait for a job to end, showing its state; prints the answer.
    Wait {
        id: String,
        /// Give up after this long (e.g. 10m).
        #[arg(long, default_value = "1h")]
        timeout: String,
    },
}

#[derive(Debug, Args)]
pub struct SubmitArgs {
    /// The model to run.
    #[arg(long)]
    pub model: Option<String>,
    /// A user message (chat) or the prompt (generate); repeat for several messages.
    #[arg(long = "message", short = 'm')]
    pub messages: Vec<String>,
    /// chat or generate.
    #[arg(long, default_value = "chat")]
    pub kind: String,
    /// A file with the whole Ollama request body (JSON); --model and --message are then not needed.
    #[arg(long)]
    pub file: Option<std::path::PathBuf>,
    /// Priority within the daemon's range (async jobs default to 0).
    #[arg(long, allow_negative_numbers = true)]
    pub priority: Option<i32>,
    /// URL to notify, signed, when the job ends.
    #[arg(long)]
    pub webhook: Option<String>,
    /// JSON echoed back on the job and in its webhook.
    #[arg(long)]
    pub metadata: Option<String>,
    /// Submitting again with the same key returns the same job.
    #[arg(long)]
    pub idempotency_key: Option<String>,
}

#[derive(Debug, Args)]
pub struct ListArgs {
    /// queued, running, succeeded, failed or cancelled.
    #[arg(long)]
    pub state: Option<String>,
    /// Only jobs of this model.
    #[arg(long)]
    pub model: Option<String>,
    /// Jobs per page (at most the daemon's page size).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Start after this job: the `next_cursor` of the previous page, which the table
    /// ends with as a ready `foreman jobs list ... --cursor ID` line.
    #[arg(long)]
    pub cursor: Option<String>,
}

/// Runs one `foreman jobs` command.
pub async fn run(args: JobsArgs) -> ExitCode {
    exit_code(execute(args, &mut Output::stdout())).await
}

async fn execute<W: std::io::Write>(args: JobsArgs, out: &mut Output<W>) -> Result<(), CliError> {
    let api = Daemon::new(args.connection)?;
    let json_output = api.connection.json;
    match args.command {
        JobsCommand::Submit(submit) => {
            let (body, key) = submit_body(submit)?;
            let headers: Vec<(&str, String)> =
                key.into_iter().map(|k| ("Idempotency-Key", k)).collect();
            let (_, job) = api
                .call(reqwest::Method::POST, "/jobs", &[], Some(&body), &headers)
                .await?;
            if json_output {
                out.line(&job)?;
            } else {
                out.line(job["id"].as_str().unwrap_or_default())?;
            }
        }
        JobsCommand::Get { id } => {
            let (_, job) = api
                .call(reqwest::Method::GET, &job_path(&id), &[], None, &[])
                .await?;
            print_job(out, &job, json_output)?;
        }
        JobsCommand::List(list) => {
            let limit = list.limit.to_string();
            let mut query = vec![("limit", limit.as_str())];
            for (name, value) in [
                ("state", &list.state),
                ("model", &list.model),
                ("cursor", &list.cursor),
            ] {
                if let Some(value) = value {
                    query.push((name, value.as_str()));
                }
            }
            let (_, page) = api
                .call(reqwest::Method::GET, "/jobs", &query, None, &[])
                .await?;
            if json_output {
                out.line(&page)?;
            } else {
                print_table(
                    out,
                    page["jobs"].as_array().map(Vec::as_slice).unwrap_or(&[]),
                )?;
                if let Some(cursor) = page["next_cursor"].as_str() {
                    out.line(format!("more: {}", next_page_command(&list, cursor)))?;
                }
            }
        }
        JobsCommand::Cancel { id } => {
            let (status, job) = api
                .call(
                    reqwest::Method::POST,
                    &format!("{}/cancel", job_path(&id)),
                    &[],
                    None,
                    &[],
                )
                .await?;
            if json_output {
                out.line(&job)?;
            } else if status == 202 {
                out.line(format!("{id}: cancelling (it was running)"))?;
            } else {
                out.line(format!("{id}: cancelled"))?;
            }
        }
        JobsCommand::Wait { id, timeout } => {
            let timeout = humantime::parse_duration(&timeout)
                .map_err(|e| CliError::usage(format!("--timeout: {e}")))?;
            let job = wait(&api, &id, timeout, json_output).await?;
            print_job(out, &job, json_output)?;
            if job["state"] != "succeeded" {
                return Err(CliError::failed(format!(
                    "job {id} {}",
                    job["state"].as_str().unwrap_or("did not finish")
                )));
            }
        }
    }
    Ok(())
}

/// The path of one job; an id is a ULID, but whatever was typed is escaped so it
/// stays one path segment.
fn job_path(id: &str) -> String {
    let mut escaped = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            escaped.push(byte as char);
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("/jobs/{escaped}")
}

/// The command that lists the next page: the same filters, from `cursor` on.
fn next_page_command(list: &ListArgs, cursor: &str) -> String {
    let mut command = String::from("foreman jobs list");
    for (flag, value) in [("--state", &list.state), ("--model", &list.model)] {
        if let Some(value) = value {
            command.push_str(&format!(" {flag} {}", shell_word(value)));
        }
    }
    if list.limit != 20 {
        command.push_str(&format!(" --limit {}", list.limit));
    }
    command.push_str(&format!(" --cursor {}", shell_word(cursor)));
    command
}

/// `text` as one shell word: as it is when it needs no quoting, else single-quoted.
fn shell_word(text: &str) -> String {
    let plain = !text.is_empty()
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.:/@+=,".contains(&b));
    if plain {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

fn submit_body(submit: SubmitArgs) -> Result<(Value, Option<String>), CliError> {
    let request = match &submit.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
            serde_json::from_str::<Value>(&text)
                .map_err(|e| CliError::usage(format!("{} is not JSON: {e}", path.display())))?
        }
        None => {
            let model = submit.model.clone().ok_or_else(|| {
                CliError::usage("--model is required (or --file with a whole request)")
            })?;
            if submit.messages.is_empty() {
                return Err(CliError::usage("give the text with --message (or --file)"));
            }
            match submit.kind.as_str() {
                "generate" => json!({"model": model, "prompt": submit.messages.join("\n")}),
                _ => json!({"model": model, "messages": submit.messages.iter()
                    .map(|m| json!({"role": "user", "content": m})).collect::<Vec<_>>()}),
            }
        }
    };
    let mut body = json!({"kind": submit.kind, "request": request});
    if let Some(priority) = submit.priority {
        body["priority"] = json!(priority);
    }
    if let Some(webhook) = submit.webhook {
        body["webhook"] = json!(webhook);
    }
    if let Some(metadata) = submit.metadata {
        body["metadata"] = serde_json::from_str(&metadata)
            .map_err(|e| CliError::usage(format!("--metadata is not JSON: {e}")))?;
    }
    Ok((body, submit.idempotency_key))
}

/// Long-polls until the job ends, keeping a live status line
/// ([`progress::wait_line`]) on a terminal; when standard error is not a terminal
/// (a log, a CI job), each new status is written there as a line of its own.
/// `--json` shows neither.
async fn wait(api: &Daemon, id: &str, timeout: Duration, quiet: bool) -> Result<Value, CliError> {
    use std::io::IsTerminal as _;
    let on_terminal = std::io::stderr().is_terminal();
    let spinner = progress::spinner(quiet, on_terminal);
    let mut last_status = String::new();
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (_, job) = api
            .call(
                reqwest::Method::GET,
                &job_path(id),
                &[("wait", "2s")],
                None,
                &[],
            )
            .await?;
        let line = progress::wait_line(id, &job, SystemTime::now());
        let status = progress::status_key(&job);
        if !quiet && !on_terminal && status != last_status {
            // A status nobody reads is no reason to stop waiting.
            let _ = writeln!(std::io::stderr(), "{line}");
        }
        spinner.set_message(line);
        last_status = status;
        let state = job["state"].as_str().unwrap_or("unknown");
        if matches!(state, "succeeded" | "failed" | "cancelled") {
            spinner.finish_and_clear();
            return Ok(job);
        }
        if tokio::time::Instant::now() >= deadline {
            spinner.finish_and_clear();
            return Err(CliError::failed(format!(
                "gave up waiting for {id} after {}",
                humantime::format_duration(timeout)
            )));
        }
    }
}

fn print_job<W: std::io::Write>(
    out: &mut Output<W>,
    job: &Value,
    json_output: bool,
) -> Result<(), CliError> {
    if json_output {
        return out.line(job);
    }
    for key in [
        "id",
        "state",
        "kind",
        "model",
        "priority",
        "attempts",
        "created_at",
        "started_at",
        "finished_at",
        "wait_ms",
        "run_ms",
        "queue_position",
    ] {
        if !job[key].is_null() {
            out.line(format!(
                "{key:>14}: {}",
                job[key]
                    .as_str()
                    .map_or_else(|| job[key].to_string(), str::to_string)
            ))?;
        }
    }
    if let Some(reason) = job["waiting_for"].as_str() {
        out.line(format!("{:>14}: {reason}", "waiting_for"))?;
    }
    if let Some(error) = job["error"].as_object() {
        out.line(format!(
            "{:>14}: {} (HTTP {})",
            "error",
            error["message"].as_str().unwrap_or(""),
            error["status"]
        ))?;
    }
    let answer = job["result"]["message"]["content"]
        .as_str()
        .or_else(|| job["result"]["response"].as_str());
    if let Some(answer) = answer {
        out.line(format!("\n{answer}"))?;
    }
    Ok(())
}

fn print_table<W: std::io::Write>(out: &mut Output<W>, jobs: &[Value]) -> Result<(), CliError> {
    out.line(format!(
        "{:<26}  {:<9}  {:<24}  {:>4}  {:>9}  {:>9}  CREATED",
        "ID", "STATE", "MODEL", "PRIO", "WAIT ms", "RUN ms"
    ))?;
    for job in jobs {
        let number = |key: &str| {
            job[key]
                .as_i64()
                .map_or_else(|| "-".to_string(), |n| n.to_string())
        };
        out.line(format!(
            "{:<26}  {:<9}  {:<24}  {:>4}  {:>9}  {:>9}  {}",
            job["id"].as_str().unwrap_or(""),
            job["state"].as_str().unwrap_or(""),
            job["model"].as_str().unwrap_or(""),
            number("priority"),
            number("wait_ms"),
            number("run_ms"),
            job["created_at"].as_str().unwrap_or(""),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_line_repeats_the_filters_quoted_for_a_shell() {
        let list = ListArgs {
            state: Some("failed".into()),
            model: Some("my model's".into()),
            limit: 5,
            cursor: Some("01OLD".into()),
        };
        assert_eq!(
            next_page_command(&list, "01KB0000000000000000000000"),
            "foreman jobs list --state failed --model 'my model'\\''s' --limit 5 --cursor 01KB0000000000000000000000"
        );
        assert_eq!(job_path("01KB/../x y"), "/jobs/01KB%2F..%2Fx%20y");
    }
}
