//! `foreman jobs ...`: the command-line client of the async jobs API, for scripts
//! and people. Tables by default, `--json` for scripts; `wait` shows a live line
//! with the job's state and queue position until it ends.
//!
//! Exit codes: 0 when the call (or the waited-for job) succeeded, 1 when the job
//! failed or was cancelled or foreman answered with an error, 2 for bad usage.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::{Value, json};

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
    /// Print the API's JSON instead of a table.
    #[arg(long, global = true)]
    pub json: bool,
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
    #[arg(long)]
    pub model: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
}

/// A failure to report on stderr, with the exit code it deserves.
struct Failure {
    message: String,
    code: u8,
}

impl Failure {
    fn usage(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 2,
        }
    }

    fn failed(message: impl Into<String>) -> Failure {
        Failure {
            message: message.into(),
            code: 1,
        }
    }
}

/// Runs one `foreman jobs` command.
pub async fn run(args: JobsArgs) -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    match execute(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("foreman: {}", failure.message);
            ExitCode::from(failure.code)
        }
    }
}

struct Api {
    client: reqwest::Client,
    connection: Connection,
}

impl Api {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<(u16, Value), Failure> {
        let url = format!("{}{path}", self.connection.url.trim_end_matches('/'));
        let mut request = self.client.request(method, &url);
        if let Some(token) = &self.connection.token {
            request = request.bearer_auth(token);
        }
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        let response = request.send().await.map_err(|e| {
            Failure::failed(format!(
                "cannot reach foreman at {}: {e}",
                self.connection.url
            ))
        })?;
        let status = response.status().as_u16();
        let value: Value = response
            .json()
            .await
            .map_err(|e| Failure::failed(format!("foreman answered {status} with no JSON: {e}")))?;
        if status >= 400 {
            let message = value["error"].as_str().unwrap_or("unknown error");
            return Err(Failure::failed(format!("{message} (HTTP {status})")));
        }
        Ok((status, value))
    }
}

async fn execute(args: JobsArgs) -> Result<(), Failure> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .map_err(|e| Failure::failed(e.to_string()))?;
    let api = Api {
        client,
        connection: args.connection,
    };
    let json_output = api.connection.json;
    match args.command {
        JobsCommand::Submit(submit) => {
            let (body, key) = submit_body(submit)?;
            let headers: Vec<(&str, String)> =
                key.into_iter().map(|k| ("Idempotency-Key", k)).collect();
            let (_, job) = api
                .call(reqwest::Method::POST, "/jobs", Some(&body), &headers)
                .await?;
            if json_output {
                println!("{job}");
            } else {
                println!("{}", job["id"].as_str().unwrap_or_default());
            }
        }
        JobsCommand::Get { id } => {
            let (_, job) = api
                .call(reqwest::Method::GET, &format!("/jobs/{id}"), None, &[])
                .await?;
            print_job(&job, json_output);
        }
        JobsCommand::List(list) => {
            let mut query = format!("/jobs?limit={}", list.limit);
            if let Some(state) = &list.state {
                query.push_str(&format!("&state={state}"));
            }
            if let Some(model) = &list.model {
                query.push_str(&format!("&model={model}"));
            }
            let (_, page) = api.call(reqwest::Method::GET, &query, None, &[]).await?;
            if json_output {
                println!("{page}");
            } else {
                print_table(page["jobs"].as_array().map(Vec::as_slice).unwrap_or(&[]));
            }
        }
        JobsCommand::Cancel { id } => {
            let (status, job) = api
                .call(
                    reqwest::Method::POST,
                    &format!("/jobs/{id}/cancel"),
                    None,
                    &[],
                )
                .await?;
            if json_output {
                println!("{job}");
            } else if status == 202 {
                println!("{id}: cancelling (it was running)");
            } else {
                println!("{id}: cancelled");
            }
        }
        JobsCommand::Wait { id, timeout } => {
            let timeout = humantime::parse_duration(&timeout)
                .map_err(|e| Failure::usage(format!("--timeout: {e}")))?;
            let job = wait(&api, &id, timeout, json_output).await?;
            print_job(&job, json_output);
            if job["state"] != "succeeded" {
                return Err(Failure::failed(format!(
                    "job {id} {}",
                    job["state"].as_str().unwrap_or("did not finish")
                )));
            }
        }
    }
    Ok(())
}

fn submit_body(submit: SubmitArgs) -> Result<(Value, Option<String>), Failure> {
    let request = match &submit.file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .map_err(|e| Failure::usage(format!("cannot read {}: {e}", path.display())))?;
            serde_json::from_str::<Value>(&text)
                .map_err(|e| Failure::usage(format!("{} is not JSON: {e}", path.display())))?
        }
        None => {
            let model = submit.model.clone().ok_or_else(|| {
                Failure::usage("--model is required (or --file with a whole request)")
            })?;
            if submit.messages.is_empty() {
                return Err(Failure::usage("give the text with --message (or --file)"));
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
            .map_err(|e| Failure::usage(format!("--metadata is not JSON: {e}")))?;
    }
    Ok((body, submit.idempotency_key))
}

/// Long-polls until the job ends, keeping a live status line on a terminal.
async fn wait(api: &Api, id: &str, timeout: Duration, quiet: bool) -> Result<Value, Failure> {
    let spinner = if quiet {
        indicatif::ProgressBar::hidden()
    } else {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.enable_steady_tick(Duration::from_millis(120));
        spinner
    };
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let (_, job) = api
            .call(
                reqwest::Method::GET,
                &format!("/jobs/{id}?wait=2s"),
                None,
                &[],
            )
            .await?;
        let state = job["state"].as_str().unwrap_or("unknown");
        let detail = match (state, job["queue_position"].as_u64()) {
            ("queued", Some(position)) => format!("{id}: queued, {position} ahead"),
            ("running", _) => format!("{id}: running (attempt {})", job["attempts"]),
            _ => format!("{id}: {state}"),
        };
        spinner.set_message(detail);
        if matches!(state, "succeeded" | "failed" | "cancelled") {
            spinner.finish_and_clear();
            return Ok(job);
        }
        if tokio::time::Instant::now() >= deadline {
            spinner.finish_and_clear();
            return Err(Failure::failed(format!(
                "gave up waiting for {id} after {}",
                humantime::format_duration(timeout)
            )));
        }
    }
}

fn print_job(job: &Value, json_output: bool) {
    if json_output {
        println!("{job}");
        return;
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
            println!(
                "{key:>14}: {}",
                job[key]
                    .as_str()
                    .map_or_else(|| job[key].to_string(), str::to_string)
            );
        }
    }
    if let Some(error) = job["error"].as_object() {
        println!(
            "{:>14}: {} (HTTP {})",
            "error",
            error["message"].as_str().unwrap_or(""),
            error["status"]
        );
    }
    let answer = job["result"]["message"]["content"]
        .as_str()
        .or_else(|| job["result"]["response"].as_str());
    if let Some(answer) = answer {
        println!("\n{answer}");
    }
}

fn print_table(jobs: &[Value]) {
    println!(
        "{:<26}  {:<9}  {:<24}  {:>4}  {:>9}  {:>9}  CREATED",
        "ID", "STATE", "MODEL", "PRIO", "WAIT ms", "RUN ms"
    );
    for job in jobs {
        let number = |key: &str| {
            job[key]
                .as_i64()
                .map_or_else(|| "-".to_string(), |n| n.to_string())
        };
        println!(
            "{:<26}  {:<9}  {:<24}  {:>4}  {:>9}  {:>9}  {}",
            job["id"].as_str().unwrap_or(""),
            job["state"].as_str().unwrap_or(""),
            job["model"].as_str().unwrap_or(""),
            number("priority"),
            number("wait_ms"),
            number("run_ms"),
            job["created_at"].as_str().unwrap_or(""),
        );
    }
}
