//! A batch's output and error files, in OpenAI's line shape, written from the outcome of
//! each line's job (never from a log of runs: a line that ran twice across a crash has
//! one job, so it appears once).
//!
//! Every line of the input lands in exactly one of the two files, in input order:
//! succeeded lines in the output file (`response.status_code` 200, the body the target
//! returned with `"stream": false`), failed lines in the error file with the target's
//! status and words, and lines that never ran (the batch was cancelled or expired first)
//! in the error file with `error.code` `batch_cancelled` or `batch_expired`. The files'
//! ids are fixed per batch, so a finalisation done again after a crash writes them again
//! and records them once.

use foreman_store::{Batch, BatchStatus, Job, JobState, StoredFile};
use serde_json::{Value, json};

use super::driver::{Driver, READS_AT_ONCE, StepError};
use super::lines::{self, Reader};
use super::{ids, storage};
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
    let mut index = 0u64;
    loop {
        let mut chunk = Vec::with_capacity(READS_AT_ONCE);
        while chunk.len() < READS_AT_ONCE {
            let Some((_, text)) = reader.next().await? else {
                break;
            };
            let custom_id = lines::parse(&text)
                .map(|line| line.custom_id)
                .unwrap_or_default();
            chunk.push((index, custom_id));
            index += 1;
        }
        if chunk.is_empty() {
            break;
        }
        let reads = chunk.iter().map(|(line, _)| {
            let enqueued = (*line as i64) < batch.enqueued;
            let id = ids::line_job_id(&batch.id, batch.created_at, *line);
            async move {
                match enqueued {
                    true => driver.store.get(id).await,
                    false => Ok(None),
                }
            }
        });
        let jobs = futures::future::join_all(reads).await;
        for ((line, custom_id), job) in chunk.into_iter().zip(jobs) {
            let job = job?;
            let enqueued = (line as i64) < batch.enqueued;
            let (text, ok) = match job {
                Some(job) if job.state == JobState::Succeeded => {
                    completed += 1;
                    (success_line(driver, &job, &custom_id).await, true)
                }
                Some(job) if job.state == JobState::Failed => {
                    failed += 1;
                    (failure_line(&job, &custom_id), false)
                }
                Some(job) => (not_run_line(Some(&job), &custom_id, ending), false),
                None if enqueued => {
                    failed += 1;
                    (
                        json!({
                            "id": format!("batch_req_{}", ids::line_job_id(&batch.id, batch.created_at, line)),
                            "custom_id": custom_id,
                            "response": null,
                            "error": {"code": "job_pruned", "message": "the request's job was pruned (FOREMAN_JOB_TTL) before the batch ended"},
                        }),
                        false,
                    )
                }
                None => (not_run_line(None, &custom_id, ending), false),
            };
            let mut bytes = text.to_string().into_bytes();
            bytes.push(b'\n');
            let file = if ok { &mut output } else { &mut errors };
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

async fn success_line(driver: &Driver, job: &Job, custom_id: &str) -> Value {
    let body = match &job.result {
        Some(text) => serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.clone())),
        // A result too large for the row is the job's artifact.
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
    };
    json!({
        "id": format!("batch_req_{}", job.id),
        "custom_id": custom_id,
        "response": {"status_code": 200, "request_id": job.id.to_string(), "body": body},
        "error": null,
    })
}

fn failure_line(job: &Job, custom_id: &str) -> Value {
    let (status, message) = job
        .failure
        .as_ref()
        .map_or((500, "the request failed".to_owned()), |f| {
            (f.status, f.message.clone())
        });
    json!({
        "id": format!("batch_req_{}", job.id),
        "custom_id": custom_id,
        "response": {
            "status_code": status,
            "request_id": job.id.to_string(),
            "body": {"error": {"message": message, "type": crate::api::openai_error_type(status), "param": null, "code": null}},
        },
        "error": {"code": format!("http_{status}"), "message": message},
    })
}

fn not_run_line(job: Option<&Job>, custom_id: &str, ending: BatchStatus) -> Value {
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
        "id": job.map(|job| format!("batch_req_{}", job.id)),
        "custom_id": custom_id,
        "response": null,
        "error": {"code": code, "message": message},
    })
}
