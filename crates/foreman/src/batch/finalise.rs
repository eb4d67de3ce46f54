//! A batch's output and error files, in OpenAI's line shape, written from the outcome of
//! each line's job (never from a log of runs: a line that ran twice across a crash has
//! one job, so it appears once).
//!
//! Every line of the input lands in exactly one of the two files, in input order:
//! succeeded lines in the output file (`response.status_code` 200, the body the target
//! returned with `"stream": false`), failed lines in the error file with the target's
//! status and words, and lines that never ran (the batch was cancelled or expired first)
//! in the error file with `error.code` `batch_cancelled` or `batch_expired`. A job that
//! covers several embedding lines (see `groups.rs`) gives each of them its own output
//! line, its slice of the answer (`split.rs`), or its own line in the error file. The
//! files' ids are fixed per batch, so a finalisation done again after a crash writes
//! them again and records them once.

use foreman_store::{Batch, BatchStatus, Job, JobFailure, JobId, JobState, StoredFile};
use serde_json::{Value, json};

use super::driver::{Driver, StepError, Window};
use super::lines::{self, Reader};
use super::{groups, ids, split, storage};
use crate::clock::now_ms;

/// What finalisation wrote.
pub struct Written {
    pub output_file_id: Option<String>,
    pub error_file_id: Option<String>,
    pub completed: i64,
    pub failed: i64,
}

/// The purpose of the files a batch writes.
const PURPOSE: &str = "batch_output";

/// Writes the output and error files of `batch`, whose lines' jobs have all ended, and
/// records them.
pub async fn write(
    driver: &Driver,
    batch: &Batch,
    ending: BatchStatus,
) -> Result<Written, StepError> {
    let data_dir = &driver.config.data_dir;
    let output_id = ids::output_file_id(&batch.id);
    let error_id = ids::error_file_id(&batch.id);
    let mut output = storage::Writer::create(data_dir, &output_id, usize::MAX, None)
        .await
        .map_err(into_step)?;
    let mut errors = storage::Writer::create(data_dir, &error_id, usize::MAX, None)
        .await
        .map_err(into_step)?;
    let (mut completed, mut failed) = (0i64, 0i64);
    let mut reader = Reader::open(&storage::path(data_dir, &batch.input_file_id)).await?;
    let enqueued = batch.enqueued.max(0) as u64;
    let mut jobs = Window::default();
    let mut index = 0u64;
    while let Some((_, text)) = reader.next().await? {
        let first = Member::of(batch, index, &text);
        let job = match index < enqueued {
            true => jobs.take(driver, batch, index, enqueued).await?,
            false => None,
        };
        let mut members = vec![first];
        let written = match job {
            None if index < enqueued => vec![(pruned_line(&members[0]), Ended::Failed)],
            None => vec![(
                not_run_line(None, &members[0].custom_id, ending),
                Ended::NotRun,
            )],
            Some(job) => {
                let covers = groups::covered(&job).min(enqueued - index);
                for at in index + 1..index + covers {
                    let Some((_, text)) = reader.next().await? else {
                        return Err(std::io::Error::other(format!(
                            "input file {} has fewer lines than its job {} covers",
                            batch.input_file_id, job.id
                        ))
                        .into());
                    };
                    members.push(Member::of(batch, at, &text));
                }
                lines_of(driver, &job, &members, ending).await
            }
        };
        index += members.len() as u64;
        for (text, ended) in written {
            match ended {
                Ended::Completed => completed += 1,
                Ended::Failed => failed += 1,
                Ended::NotRun => {}
            }
            let mut bytes = text.to_string().into_bytes();
            bytes.push(b'\n');
            let file = match ended {
                Ended::Completed => &mut output,
                _ => &mut errors,
            };
            file.write(&bytes).await.map_err(into_step)?;
        }
    }
    let output_file_id = record(driver, output, &output_id, batch, "output").await?;
    let error_file_id = record(driver, errors, &error_id, batch, "errors").await?;
    Ok(Written {
        output_file_id,
        error_file_id,
        completed,
        failed,
    })
}

/// Names, syncs and records a written file; an empty one is removed and not recorded.
async fn record(
    driver: &Driver,
    writer: storage::Writer,
    id: &str,
    batch: &Batch,
    what: &str,
) -> Result<Option<String>, StepError> {
    if writer.bytes == 0 {
        writer.abandon().await;
        return Ok(None);
    }
    let (bytes, lines) = writer.finish().await.map_err(into_step)?;
    let now = now_ms();
    driver
        .store
        .insert_file(StoredFile {
            id: id.to_owned(),
            purpose: PURPOSE.to_owned(),
            filename: format!("{}_{what}.jsonl", batch.id),
            bytes: bytes as i64,
            lines: lines as i64,
            created_at: now,
            expires_at: Some(super::expiry::expires_at(
                now,
                driver.config.batch.files_ttl,
            )),
        })
        .await?;
    Ok(Some(id.to_owned()))
}

fn into_step(error: storage::WriteError) -> StepError {
    match error {
        storage::WriteError::Io(error) => StepError::Io(error),
        other => StepError::Io(std::io::Error::other(other.to_string())),
    }
}

/// How a line ended, as OpenAI's `request_counts` count it: a line that never ran is in
/// `total` only.
#[derive(Clone, Copy)]
enum Ended {
    Completed,
    Failed,
    NotRun,
}

/// One input line, as finalisation needs it.
struct Member {
    /// The line's own job id (a grouped line's is not a job, but names its output line).
    id: JobId,
    custom_id: String,
    /// The characters of its text inputs: its weight in a group's usage.
    chars: u64,
}

impl Member {
    fn of(batch: &Batch, index: u64, text: &str) -> Member {
        let line = lines::parse(text);
        Member {
            id: ids::line_job_id(&batch.id, batch.created_at, index),
            chars: line
                .as_ref()
                .and_then(|line| groups::text_inputs(&line.body))
                .map_or(0, |inputs| split::characters(&inputs)),
            custom_id: line.map(|line| line.custom_id).unwrap_or_default(),
        }
    }
}

/// The output lines of `job`'s lines (`members`, in order), each with how it ended.
async fn lines_of(
    driver: &Driver,
    job: &Job,
    members: &[Member],
    ending: BatchStatus,
) -> Vec<(Value, Ended)> {
    match job.state {
        JobState::Succeeded if members.len() == 1 => {
            let body = result_body(driver, job).await;
            vec![(
                success_line(members[0].id, &members[0].custom_id, job, body),
                Ended::Completed,
            )]
        }
        JobState::Succeeded => {
            let body = result_body(driver, job).await;
            let chars: Vec<u64> = members.iter().map(|member| member.chars).collect();
            let answers = match groups::input_counts(job) {
                Some(counts) if counts.len() == members.len() => {
                    split::split(job.kind, body, &counts, &chars).map_err(|e| e.to_string())
                }
                _ => Err(format!(
                    "job {} does not say how its {} lines' inputs are counted",
                    job.id,
                    members.len()
                )),
            };
            match answers {
                Ok(answers) => members
                    .iter()
                    .zip(answers)
                    .map(|(member, body)| {
                        (
                            success_line(member.id, &member.custom_id, job, body),
                            Ended::Completed,
                        )
                    })
                    .collect(),
                Err(message) => {
                    let failure = JobFailure {
                        status: 502,
                        message,
                    };
                    members
                        .iter()
                        .map(|member| (failure_line(member, job, Some(&failure)), Ended::Failed))
                        .collect()
                }
            }
        }
        JobState::Failed => members
            .iter()
            .map(|member| {
                (
                    failure_line(member, job, job.failure.as_ref()),
                    Ended::Failed,
                )
            })
            .collect(),
        _ => members
            .iter()
            .map(|member| {
                (
                    not_run_line(Some(member.id), &member.custom_id, ending),
                    Ended::NotRun,
                )
            })
            .collect(),
    }
}

/// A job's answer: its result, or the artifact holding a result too large for the row.
async fn result_body(driver: &Driver, job: &Job) -> Value {
    match &job.result {
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
        None => {
            let path = crate::artifacts::path(
                &driver.config.data_dir,
                job.id,
                crate::artifacts::RESULT_NAME,
            );
            match path {
                Some(path) => tokio::fs::read(&path)
                    .await
                    .ok()
                    .and_then(|bytes| serde_json::from_slice(&bytes).ok())
                    .unwrap_or(Value::Null),
                None => Value::Null,
            }
        }
    }
}

fn success_line(id: JobId, custom_id: &str, job: &Job, body: Value) -> Value {
    json!({
        "id": format!("batch_req_{id}"),
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": job.id.to_string(), "body": body},
        "error": null,
    })
}

fn failure_line(member: &Member, job: &Job, failure: Option<&JobFailure>) -> Value {
    let (status, message) = failure.map_or((500, "the request failed".to_owned()), |f| {
        (f.status, f.message.clone())
    });
    json!({
        "id": format!("batch_req_{}", member.id),
        "custom_id": member.custom_id,
        "response": {
            "status_code": status,
            "request_id": job.id.to_string(),
            "body": {"error": {"message": message, "type": crate::api::openai_error_type(status), "param": null, "code": null}},
        },
        "error": {"code": format!("http_{status}"), "message": message},
    })
}

fn pruned_line(member: &Member) -> Value {
    json!({
        "id": format!("batch_req_{}", member.id),
        "custom_id": member.custom_id,
        "response": null,
        "error": {"code": "job_pruned", "message": "the request's job was pruned (FOREMAN_JOB_TTL) before the batch ended"},
    })
}

fn not_run_line(id: Option<JobId>, custom_id: &str, ending: BatchStatus) -> Value {
    let (code, message) = match ending {
        BatchStatus::Expired => (
            "batch_expired",
            "this request was not run before the batch expired",
        ),
        _ => (
            "batch_cancelled",
            "this request was not run: the batch was cancelled",
        ),
    };
    json!({
        "id": id.map(|id| format!("batch_req_{id}")),
        "custom_id": custom_id,
        "response": null,
        "error": {"code": code, "message": message},
    })
}
