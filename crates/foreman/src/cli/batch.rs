//! `foreman batch ...`: the command-line client of the OpenAI-compatible Batch API
//! (`/v1/files`, `/v1/batches`), for people with a JSONL file of requests and no
//! script around the `openai` package: submit it (upload, then create the batch),
//! watch it run, list, cancel, and fetch the output or error file.
//!
//! Connection flags, `--json`, exit codes and the quiet end on a closed standard
//! output are those of `foreman jobs` ([`super`], [`super::output`]). The input file
//! is streamed from disk as the multipart upload's body and the output file is
//! streamed to standard output or a file, so neither is held whole in memory.

mod progress;

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use std::io::Write as _;

use clap::{Args, Subcommand};
use futures::StreamExt as _;
use serde_json::{Map, Value, json};

use super::Connection;
use super::daemon::Daemon;
use super::output::{CliError, Output};

/// `foreman batch <command>`.
#[derive(Debug, Args)]
pub struct BatchArgs {
    #[command(flatten)]
    pub connection: Connection,
    #[command(subcommand)]
    pub command: BatchCommand,
}

#[derive(Debug, Subcommand)]
pub enum BatchCommand {
    /// Upload a JSONL file of requests and start a batch of them; prints its id.
    Submit(BatchSubmitArgs),
    /// Show one batch.
    Get { id: String },
    /// Wait for a batch to end, showing its progress; prints the batch, exits 1
    /// unless it completed.
    Wait {
        id: String,
        /// How often to ask for the batch's state.
        #[arg(long, default_value = "1s")]
        poll: String,
    },
    /// List batches, newest first.
    List(BatchListArgs),
    /// Cancel a batch: the lines not yet run are dropped, what ran is kept.
    Cancel { id: String },
    /// Write a batch's output file (or its error file) to standard output or a file.
    Output(BatchOutputArgs),
}

#[derive(Debug, Args)]
pub struct BatchSubmitArgs {
    /// The JSONL file: one request a line, `{"custom_id", "method", "url", "body"}`.
    pub file: PathBuf,
    /// The route every line calls (/v1/chat/completions, /v1/completions, or
    /// foreman's /api/chat and /api/generate); by default the `url` of the file's
    /// first line.
    #[arg(long)]
    pub endpoint: Option<String>,
    /// The time the batch has to finish.
    #[arg(long, default_value = "24h")]
    pub completion_window: String,
    /// A `key=value` pair kept on the batch; repeat for several.
    #[arg(long = "metadata", value_name = "KEY=VALUE")]
    pub metadata: Vec<String>,
    /// Stay until the batch ends, showing its progress; exits 1 unless it completed.
    #[arg(long)]
    pub wait: bool,
    /// How often --wait asks for the batch's state.
    #[arg(long, default_value = "1s", requires = "wait")]
    pub poll: String,
}

#[derive(Debug, Args)]
pub struct BatchListArgs {
    /// Batches per page.
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    /// Start after this batch: the last of the previous page, which the table ends
    /// with as a ready `foreman batch list ... --after ID` line.
    #[arg(long)]
    pub after: Option<String>,
}

#[derive(Debug, Args)]
pub struct BatchOutputArgs {
    pub id: String,
    /// The error file (the lines that failed) instead of the output file.
    #[arg(long)]
    pub errors: bool,
    /// Write to this file instead of standard output.
    #[arg(long, short = 'o')]
    pub output: Option<PathBuf>,
}

/// Runs one `foreman batch` command.
pub async fn run(args: BatchArgs) -> ExitCode {
    super::exit_code(execute(args, &mut Output::stdout())).await
}

impl Daemon {
    /// The batch `id`, as `GET /v1/batches/{id}` answers it.
    async fn batch(&self, id: &str) -> Result<Value, CliError> {
        self.json(self.request(reqwest::Method::GET, &batch_path(id), &[])?)
            .await
    }
}

async fn execute<W: std::io::Write>(args: BatchArgs, out: &mut Output<W>) -> Result<(), CliError> {
    let api = Daemon::new(args.connection)?;
    let json_output = api.connection.json;
    match args.command {
        BatchCommand::Submit(submit) => submit_batch(&api, submit, out, json_output).await?,
        BatchCommand::Get { id } => {
            let batch = api.batch(&id).await?;
            print_batch(out, &batch, json_output)?;
        }
        BatchCommand::Wait { id, poll } => {
            let poll = humantime::parse_duration(&poll)
                .map_err(|e| CliError::usage(format!("--poll: {e}")))?;
            let batch = wait(&api, &id, poll, json_output).await?;
            print_batch(out, &batch, json_output)?;
            ended_well(&id, &batch)?;
        }
        BatchCommand::List(list) => {
            let limit = list.limit.to_string();
            let mut query = vec![("limit", limit.as_str())];
            if let Some(after) = &list.after {
                query.push(("after", after.as_str()));
            }
            let page = api
                .json(api.request(reqwest::Method::GET, "/v1/batches", &query)?)
                .await?;
            if json_output {
                out.line(&page)?;
            } else {
                let batches = page["data"].as_array().map(Vec::as_slice).unwrap_or(&[]);
                print_table(out, batches)?;
                let last = page["last_id"]
                    .as_str()
                    .or_else(|| batches.last().and_then(|b| b["id"].as_str()));
                if page["has_more"].as_bool() == Some(true)
                    && let Some(last) = last
                {
                    out.line(format!("more: {}", next_page_command(&list, last)))?;
                }
            }
        }
        BatchCommand::Cancel { id } => {
            let batch = api
                .json(api.request(
                    reqwest::Method::POST,
                    &format!("{}/cancel", batch_path(&id)),
                    &[],
                )?)
                .await?;
            if json_output {
                out.line(&batch)?;
            } else {
                out.line(format!(
                    "{id}: {}",
                    batch["status"].as_str().unwrap_or("unknown")
                ))?;
            }
        }
        BatchCommand::Output(output) => write_output(&api, output, out, json_output).await?,
    }
    Ok(())
}

async fn submit_batch<W: std::io::Write>(
    api: &Daemon,
    submit: BatchSubmitArgs,
    out: &mut Output<W>,
    json_output: bool,
) -> Result<(), CliError> {
    let metadata = metadata(&submit.metadata)?;
    let endpoint = match submit.endpoint.clone() {
        Some(endpoint) => endpoint,
        None => first_line_url(&submit.file)?,
    };
    let poll = humantime::parse_duration(&submit.poll)
        .map_err(|e| CliError::usage(format!("--poll: {e}")))?;
    let file = upload(api, &submit.file).await?;
    let file_id = file["id"]
        .as_str()
        .ok_or_else(|| CliError::failed(format!("the uploaded file has no id: {file}")))?;
    let mut body = json!({
        "input_file_id": file_id,
        "endpoint": endpoint,
        "completion_window": submit.completion_window,
    });
    if !metadata.is_empty() {
        body["metadata"] = Value::Object(metadata);
    }
    let batch = api
        .json(
            api.request(reqwest::Method::POST, "/v1/batches", &[])?
                .json(&body),
        )
        .await?;
    let id = batch["id"]
        .as_str()
        .ok_or_else(|| CliError::failed(format!("the batch has no id: {batch}")))?
        .to_string();
    if !submit.wait {
        return if json_output {
            out.line(&batch)
        } else {
            out.line(&id)
        };
    }
    if !json_output {
        out.line(&id)?;
    }
    let batch = wait(api, &id, poll, json_output).await?;
    print_batch(out, &batch, json_output)?;
    ended_well(&id, &batch)
}

/// A waited-for batch that did not complete (failed, expired, cancelled) is a
/// failure of the command, as a failed job is for `foreman jobs wait`.
fn ended_well(id: &str, batch: &Value) -> Result<(), CliError> {
    match batch["status"].as_str() {
        Some("completed") => Ok(()),
        other => Err(CliError::failed(format!(
            "batch {id} {}",
            other.unwrap_or("did not finish")
        ))),
    }
}

/// `--metadata k=v ...` as the batch's `metadata` object.
fn metadata(pairs: &[String]) -> Result<Map<String, Value>, CliError> {
    let mut metadata = Map::new();
    for pair in pairs {
        let (key, value) = pair
            .split_once('=')
            .ok_or_else(|| CliError::usage(format!("--metadata {pair:?}: expected KEY=VALUE")))?;
        if key.is_empty() {
            return Err(CliError::usage(format!(
                "--metadata {pair:?}: the key is empty"
            )));
        }
        metadata.insert(key.to_string(), Value::String(value.to_string()));
    }
    Ok(metadata)
}

/// The `url` of the file's first request, the endpoint when `--endpoint` is not given.
fn first_line_url(path: &Path) -> Result<String, CliError> {
    use std::io::BufRead as _;
    let file = std::fs::File::open(path)
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
    for line in std::io::BufReader::new(file).lines() {
        let line =
            line.map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
        if line.trim().is_empty() {
            continue;
        }
        let request: Value = serde_json::from_str(&line).map_err(|e| {
            CliError::usage(format!(
                "the first line of {} is not JSON ({e}); give --endpoint",
                path.display()
            ))
        })?;
        return request["url"].as_str().map(str::to_string).ok_or_else(|| {
            CliError::usage(format!(
                "the first line of {} has no \"url\"; give --endpoint",
                path.display()
            ))
        });
    }
    Err(CliError::usage(format!("{} is empty", path.display())))
}

/// `POST /v1/files` with `purpose=batch`: a multipart body whose file part is read
/// from disk as it is sent.
async fn upload(api: &Daemon, path: &Path) -> Result<Value, CliError> {
    let file = tokio::fs::File::open(path)
        .await
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?;
    let size = file
        .metadata()
        .await
        .map_err(|e| CliError::usage(format!("cannot read {}: {e}", path.display())))?
        .len();
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "batch.jsonl".to_string());
    let form = Multipart::new(&name);
    let (head, tail) = (form.head(), form.tail());
    let length = head.len() as u64 + size + tail.len() as u64;
    let body = futures::stream::once(async move { Ok::<_, std::io::Error>(head) })
        .chain(tokio_util::io::ReaderStream::new(file))
        .chain(futures::stream::once(async move { Ok(tail) }));
    let request = api
        .request(reqwest::Method::POST, "/v1/files", &[])?
        .header(reqwest::header::CONTENT_TYPE, form.content_type())
        .header(reqwest::header::CONTENT_LENGTH, length)
        .body(reqwest::Body::wrap_stream(body));
    api.json(request).await
}

/// A `multipart/form-data` body of two parts, `purpose=batch` and the file, built
/// around the file's bytes so that they can be streamed in between.
struct Multipart {
    boundary: String,
    filename: String,
}

impl Multipart {
    fn new(filename: &str) -> Multipart {
        // A quote or a line break would end the header's quoted string.
        let filename = filename
            .chars()
            .map(|c| {
                if matches!(c, '"' | '\r' | '\n') {
                    '_'
                } else {
                    c
                }
            })
            .collect();
        Multipart {
            boundary: format!("foreman-batch-{}", ulid::Ulid::generate()),
            filename,
        }
    }

    fn content_type(&self) -> String {
        format!("multipart/form-data; boundary={}", self.boundary)
    }

    /// Everything before the file's bytes.
    fn head(&self) -> bytes::Bytes {
        format!(
            "--{b}\r\nContent-Disposition: form-data; name=\"purpose\"\r\n\r\nbatch\r\n\
             --{b}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{f}\"\r\n\
             Content-Type: application/jsonl\r\n\r\n",
            b = self.boundary,
            f = self.filename
        )
        .into()
    }

    /// Everything after them.
    fn tail(&self) -> bytes::Bytes {
        format!("\r\n--{}--\r\n", self.boundary).into()
    }
}

/// Polls the batch until it ends, keeping a live progress line
/// ([`progress::batch_line`]) on a terminal; when standard error is not a terminal,
/// a line is written there for each new status and, now and then, new counts.
/// `--json` shows neither.
async fn wait(api: &Daemon, id: &str, poll: Duration, quiet: bool) -> Result<Value, CliError> {
    use std::io::IsTerminal as _;
    let on_terminal = std::io::stderr().is_terminal();
    let spinner = crate::cli::progress::spinner(quiet, on_terminal);
    let mut throttle = progress::LogThrottle::new(Duration::from_secs(10));
    let started = tokio::time::Instant::now();
    loop {
        let batch = api.batch(id).await?;
        let line = progress::batch_line(&batch, SystemTime::now());
        if !quiet && !on_terminal && throttle.should_log(&batch, started.elapsed()) {
            // A status nobody reads is no reason to stop waiting.
            let _ = writeln!(std::io::stderr(), "{line}");
        }
        spinner.set_message(line);
        if progress::has_ended(&batch) {
            spinner.finish_and_clear();
            return Ok(batch);
        }
        tokio::time::sleep(poll).await;
    }
}

/// Streams the batch's output (or error) file to standard output or `-o FILE`.
async fn write_output<W: std::io::Write>(
    api: &Daemon,
    args: BatchOutputArgs,
    out: &mut Output<W>,
    json_output: bool,
) -> Result<(), CliError> {
    let batch = api.batch(&args.id).await?;
    let key = if args.errors {
        "error_file_id"
    } else {
        "output_file_id"
    };
    let Some(file_id) = batch[key].as_str() else {
        return Err(CliError::failed(format!(
            "batch {} has no {} file (status {}{})",
            args.id,
            if args.errors { "error" } else { "output" },
            batch["status"].as_str().unwrap_or("unknown"),
            if progress::has_ended(&batch) {
                ""
            } else {
                "; it is written when the batch ends"
            }
        )));
    };
    let response = api
        .send(api.request(
            reqwest::Method::GET,
            &format!("/v1/files/{}/content", segment(file_id)),
            &[],
        )?)
        .await?;
    let mut stream = response.bytes_stream();
    let read_error = |e: reqwest::Error| CliError::failed(format!("reading {file_id}: {e}"));
    match &args.output {
        None => {
            while let Some(chunk) = stream.next().await {
                out.bytes(&chunk.map_err(read_error)?)?;
            }
        }
        Some(path) => {
            let written = save(&mut stream, path, read_error).await?;
            if json_output {
                out.line(json!({"file_id": file_id, "path": path, "bytes": written}))?;
            } else {
                out.line(format!("{file_id}: {written} bytes to {}", path.display()))?;
            }
        }
    }
    Ok(())
}

/// Writes the stream to a temporary file beside `path` and renames it there once
/// complete, so an interrupted download never leaves a truncated file under the name.
async fn save(
    stream: &mut (impl futures::Stream<Item = reqwest::Result<bytes::Bytes>> + Unpin),
    path: &Path,
    read_error: impl Fn(reqwest::Error) -> CliError,
) -> Result<u64, CliError> {
    use tokio::io::AsyncWriteExt as _;
    let cannot =
        |e: std::io::Error| CliError::failed(format!("cannot write {}: {e}", path.display()));
    let partial = path.with_file_name(format!(
        ".{}.partial",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "output".to_string())
    ));
    let mut file = tokio::fs::File::create(&partial).await.map_err(cannot)?;
    let mut written = 0u64;
    let outcome = async {
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(&read_error)?;
            file.write_all(&chunk).await.map_err(cannot)?;
            written += chunk.len() as u64;
        }
        file.flush().await.map_err(cannot)?;
        file.sync_all().await.map_err(cannot)?;
        tokio::fs::rename(&partial, path).await.map_err(cannot)
    }
    .await;
    if outcome.is_err() {
        let _ = tokio::fs::remove_file(&partial).await;
    }
    outcome.map(|()| written)
}

/// One path segment: an id is `batch_...` or `file-...`, but whatever was typed is
/// escaped so it stays one segment.
fn segment(id: &str) -> String {
    let mut escaped = String::with_capacity(id.len());
    for byte in id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            escaped.push(byte as char);
        } else {
            escaped.push_str(&format!("%{byte:02X}"));
        }
    }
    escaped
}

fn batch_path(id: &str) -> String {
    format!("/v1/batches/{}", segment(id))
}

/// The command that lists the next page: the same page size, after `last`.
fn next_page_command(list: &BatchListArgs, last: &str) -> String {
    let mut command = String::from("foreman batch list");
    if list.limit != 20 {
        command.push_str(&format!(" --limit {}", list.limit));
    }
    command.push_str(&format!(" --after {}", super::shell_word(last)));
    command
}

/// A Unix time in seconds as RFC 3339, as the jobs commands show times.
fn unix_time(value: &Value) -> Option<String> {
    let seconds = value.as_u64()?;
    Some(humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(seconds)).to_string())
}

fn print_batch<W: std::io::Write>(
    out: &mut Output<W>,
    batch: &Value,
    json_output: bool,
) -> Result<(), CliError> {
    if json_output {
        return out.line(batch);
    }
    let counts = progress::Counts::of(batch);
    for key in [
        "id",
        "status",
        "endpoint",
        "completion_window",
        "input_file_id",
        "output_file_id",
        "error_file_id",
    ] {
        if let Some(value) = batch[key].as_str() {
            out.line(format!("{key:>17}: {value}"))?;
        }
    }
    out.line(format!(
        "{:>17}: {} completed, {} failed of {}",
        "requests", counts.completed, counts.failed, counts.total
    ))?;
    for key in [
        "created_at",
        "in_progress_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
        "expires_at",
    ] {
        if let Some(time) = unix_time(&batch[key]) {
            out.line(format!("{key:>17}: {time}"))?;
        }
    }
    if let Some(metadata) = batch["metadata"].as_object() {
        for (key, value) in metadata {
            out.line(format!(
                "{:>17}: {key}={}",
                "metadata",
                value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_string)
            ))?;
        }
    }
    if let Some(errors) = batch["errors"]["data"].as_array() {
        for error in errors {
            let line = error["line"]
                .as_u64()
                .map_or_else(String::new, |n| format!("line {n}: "));
            out.line(format!(
                "{:>17}: {line}{} ({})",
                "error",
                error["message"].as_str().unwrap_or(""),
                error["code"].as_str().unwrap_or("")
            ))?;
        }
    }
    Ok(())
}

fn print_table<W: std::io::Write>(out: &mut Output<W>, batches: &[Value]) -> Result<(), CliError> {
    out.line(format!(
        "{:<32}  {:<11}  {:<22}  {:>7}  {:>7}  {:>7}  CREATED",
        "ID", "STATUS", "ENDPOINT", "DONE", "FAILED", "TOTAL"
    ))?;
    for batch in batches {
        let counts = progress::Counts::of(batch);
        out.line(format!(
            "{:<32}  {:<11}  {:<22}  {:>7}  {:>7}  {:>7}  {}",
            batch["id"].as_str().unwrap_or(""),
            batch["status"].as_str().unwrap_or(""),
            batch["endpoint"].as_str().unwrap_or(""),
            counts.completed,
            counts.failed,
            counts.total,
            unix_time(&batch["created_at"]).unwrap_or_default(),
        ))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_next_page_line_keeps_the_page_size() {
        let list = BatchListArgs {
            limit: 5,
            after: Some("batch_old".into()),
        };
        assert_eq!(
            next_page_command(&list, "batch_01KB"),
            "foreman batch list --limit 5 --after batch_01KB"
        );
        let default = BatchListArgs {
            limit: 20,
            after: None,
        };
        assert_eq!(
            next_page_command(&default, "it's"),
            "foreman batch list --after 'it'\\''s'"
        );
        assert_eq!(batch_path("b/../x y"), "/v1/batches/b%2F..%2Fx%20y");
    }

    #[test]
    fn metadata_pairs_become_an_object_of_strings() {
        let pairs = vec!["team=search".to_string(), "note=a=b".to_string()];
        let metadata = metadata(&pairs).unwrap();
        assert_eq!(
            Value::Object(metadata),
            json!({"team": "search", "note": "a=b"})
        );
        let error = super::metadata(&["novalue".to_string()]).unwrap_err();
        assert_eq!(error.exit_code(), 2, "{error}");
        let error = super::metadata(&["=x".to_string()]).unwrap_err();
        assert_eq!(error.exit_code(), 2, "{error}");
    }

    #[test]
    fn the_upload_body_frames_the_file_between_its_two_parts() {
        let form = Multipart::new("my \"file\".jsonl");
        let mut body = form.head().to_vec();
        body.extend_from_slice(b"{\"custom_id\":\"a\"}\n");
        body.extend_from_slice(&form.tail());
        let text = String::from_utf8(body).unwrap();
        let boundary = form
            .content_type()
            .strip_prefix("multipart/form-data; boundary=")
            .unwrap()
            .to_string();
        let parts: Vec<&str> = text.split(&format!("--{boundary}")).collect();
        assert_eq!(parts.len(), 4, "{text}");
        assert!(parts[1].contains("name=\"purpose\"\r\n\r\nbatch\r\n"));
        assert!(parts[2].contains("filename=\"my _file_.jsonl\""));
        assert!(parts[2].ends_with("\r\n\r\n{\"custom_id\":\"a\"}\n\r\n"));
        assert_eq!(parts[3], "--\r\n");
    }

    #[test]
    fn the_endpoint_defaults_to_the_first_line_url() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.jsonl");
        std::fs::write(
            &path,
            "\n{\"custom_id\":\"a\",\"method\":\"POST\",\"url\":\"/v1/embeddings\",\"body\":{}}\n",
        )
        .unwrap();
        assert_eq!(first_line_url(&path).unwrap(), "/v1/embeddings");
        std::fs::write(&path, "{\"custom_id\":\"a\"}\n").unwrap();
        assert_eq!(first_line_url(&path).unwrap_err().exit_code(), 2);
    }
}
