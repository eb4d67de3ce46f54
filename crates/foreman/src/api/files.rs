//! OpenAI's Files API, for the Batch API's input and output files:
//!
//! - `POST /v1/files` (multipart: `file`, `purpose`) stores an upload streamed to disk
//!   (never held whole in memory) and answers the File object;
//! - `GET /v1/files` lists them (`purpose`, `limit`, `order`, `after`), in OpenAI's list
//!   shape; `GET /v1/files/{id}` shows one; `GET /v1/files/{id}/content` streams its bytes;
//!   `DELETE /v1/files/{id}` removes it (not while it is the input of a batch that has
//!   not ended).
//!
//! Only `purpose=batch` is accepted for uploads (the other purposes of OpenAI, fine-tuning
//! and assistants, have nothing to serve them here); batches write `batch_output` files.
//! Limits: `FOREMAN_FILES_MAX_BYTES` (200 MB) and, for batch input,
//! `FOREMAN_BATCH_MAX_LINES` (50,000 lines).

use axum::Json;
use axum::body::Body;
use axum::extract::multipart::MultipartRejection;
use axum::extract::{Multipart, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use foreman_store::{FileListParams, StoredFile};
use serde::Deserialize;
use serde_json::{Value, json};

use super::error::Flavor;
use super::query::{Path, Query};
use super::{ApiError, AppState};
use crate::batch::{ids, storage};
use crate::clock::now_ms;

/// The purpose of uploads a batch reads.
pub const PURPOSE_BATCH: &str = "batch";
/// The purpose of the files a batch writes.
pub const PURPOSE_BATCH_OUTPUT: &str = "batch_output";
/// OpenAI's other purposes: known, refused with a reason.
const OTHER_PURPOSES: [&str; 5] = ["assistants", "fine-tune", "vision", "user_data", "evals"];
const DEFAULT_PAGE: u32 = 10_000;

/// OpenAI's File object.
pub fn file_object(file: &StoredFile) -> Value {
    json!({
        "id": file.id,
        "object": "file",
        "bytes": file.bytes,
        "created_at": file.created_at / 1000,
        "expires_at": file.expires_at.map(|at| at / 1000),
        "filename": file.filename,
        "purpose": file.purpose,
        "status": "processed",
        "status_details": null,
    })
}

/// OpenAI's list shape of a page read with one item more than `limit` (which tells
/// whether there is more).
pub(super) fn list_page<T>(
    mut items: Vec<T>,
    limit: u32,
    object: impl Fn(&T) -> Value,
    id: impl Fn(&T) -> &str,
) -> Value {
    let has_more = items.len() > limit as usize;
    items.truncate(limit as usize);
    json!({
        "object": "list",
        "data": items.iter().map(object).collect::<Vec<_>>(),
        "first_id": items.first().map(&id),
        "last_id": items.last().map(&id),
        "has_more": has_more,
    })
}

pub(super) fn openai(outcome: Result<Response, ApiError>) -> Response {
    outcome.unwrap_or_else(|error| error.render(Flavor::OpenAi))
}

fn no_such_file(id: &str) -> ApiError {
    ApiError::NoSuchObject {
        kind: "File",
        id: id.to_owned(),
    }
}

/// The record of file `id`, or OpenAI's 404.
pub async fn find(state: &AppState, id: &str) -> Result<StoredFile, ApiError> {
    if !ids::is_valid(id, "file-") {
        return Err(no_such_file(id));
    }
    state
        .store
        .get_file(id)
        .await?
        .ok_or_else(|| no_such_file(id))
}

pub async fn upload(
    State(state): State<AppState>,
    multipart: Result<Multipart, MultipartRejection>,
) -> Response {
    match multipart {
        Ok(multipart) => openai(receive(&state, multipart).await),
        Err(rejection) => openai(Err(ApiError::BadRequest(format!(
            "a file upload is a multipart/form-data body with the fields file and purpose: {}",
            rejection.body_text()
        )))),
    }
}

async fn receive(state: &AppState, mut multipart: Multipart) -> Result<Response, ApiError> {
    let settings = &state.config.batch;
    let id = ids::new_file_id();
    let mut purpose: Option<String> = None;
    let mut stored: Option<(String, usize, u64)> = None;
    let bad = |message: String| ApiError::BadRequest(message);
    while let Some(mut field) = multipart
        .next_field()
        .await
        .map_err(|e| bad(format!("cannot read the multipart body: {e}")))?
    {
        match field.name().unwrap_or_default() {
            "purpose" => {
                let text = field
                    .text()
                    .await
                    .map_err(|e| bad(format!("cannot read purpose: {e}")))?;
                check_purpose(text.trim())?;
                purpose = Some(text.trim().to_owned());
            }
            "file" if stored.is_none() => {
                let filename = field
                    .file_name()
                    .filter(|name| !name.is_empty())
                    .unwrap_or("upload.jsonl")
                    .chars()
                    .take(255)
                    .collect::<String>();
                let mut writer = storage::Writer::create(
                    &state.config.data_dir,
                    &id,
                    settings.files_max_bytes,
                    Some(settings.max_lines),
                )
                .await
                .map_err(write_failure)?;
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            if let Err(error) = writer.write(&chunk).await {
                                writer.abandon().await;
                                return Err(write_failure(error));
                            }
                        }
                        Ok(None) => break,
                        Err(error) => {
                            writer.abandon().await;
                            return Err(bad(format!("cannot read the file: {error}")));
                        }
                    }
                }
                let (bytes, lines) = writer.finish().await.map_err(write_failure)?;
                stored = Some((filename, bytes, lines));
            }
            _ => {}
        }
    }
    let outcome = async {
        let purpose = purpose.ok_or_else(|| bad("purpose is required (use batch)".into()))?;
        let (filename, bytes, lines) = stored
            .clone()
            .ok_or_else(|| bad("file is required: the JSONL file, as a multipart file".into()))?;
        let created_at = now_ms();
        // As OpenAI's: a batch input expires (FOREMAN_BATCH_FILES_TTL), others stay.
        let expires_at = (purpose == "batch")
            .then(|| crate::batch::expiry::expires_at(created_at, settings.files_ttl));
        let file = StoredFile {
            id: id.clone(),
            purpose,
            filename,
            bytes: bytes as i64,
            lines: lines as i64,
            created_at,
            expires_at,
        };
        state.store.insert_file(file.clone()).await?;
        Ok::<_, ApiError>(file)
    }
    .await;
    match outcome {
        Ok(file) => Ok(Json(file_object(&file)).into_response()),
        Err(error) => {
            if stored.is_some() {
                let _ = storage::remove(&state.config.data_dir, &id).await;
            }
            Err(error)
        }
    }
}

fn check_purpose(purpose: &str) -> Result<(), ApiError> {
    match purpose {
        PURPOSE_BATCH => Ok(()),
        other if OTHER_PURPOSES.contains(&other) || other == PURPOSE_BATCH_OUTPUT => {
            Err(ApiError::BadRequest(format!(
                "purpose {other:?} is not supported here: foreman stores files for the Batch API only (purpose batch)"
            )))
        }
        other => Err(ApiError::BadRequest(format!(
            "invalid purpose {other:?}: use batch"
        ))),
    }
}

fn write_failure(error: storage::WriteError) -> ApiError {
    match error {
        storage::WriteError::TooLarge { limit } => ApiError::TooLarge(limit),
        storage::WriteError::TooManyLines { .. } | storage::WriteError::Upload(_) => {
            ApiError::BadRequest(error.to_string())
        }
        storage::WriteError::Io(error) => ApiError::Store(foreman_store::Error::Write(format!(
            "file storage: {error}"
        ))),
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    purpose: Option<String>,
    limit: Option<u32>,
    order: Option<String>,
    after: Option<String>,
}

pub async fn list(State(state): State<AppState>, Query(query): Query<ListQuery>) -> Response {
    openai(
        async {
            let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, DEFAULT_PAGE);
            let ascending = match query.order.as_deref() {
                None | Some("desc") => false,
                Some("asc") => true,
                Some(other) => {
                    return Err(ApiError::BadRequest(format!(
                        "invalid order {other:?}: use asc or desc"
                    )));
                }
            };
            let files = state
                .store
                .list_files(FileListParams {
                    purpose: query.purpose.clone(),
                    after: query.after.clone(),
                    limit: limit + 1,
                    ascending,
                })
                .await?;
            Ok(Json(list_page(files, limit, file_object, |f| &f.id)).into_response())
        }
        .await,
    )
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    openai(
        find(&state, &id)
            .await
            .map(|file| Json(file_object(&file)).into_response()),
    )
}

pub async fn content(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    openai(
        async {
            let file = find(&state, &id).await?;
            let opened = tokio::fs::File::open(storage::path(&state.config.data_dir, &file.id))
                .await
                .map_err(|error| {
                    ApiError::Store(foreman_store::Error::Read(format!(
                        "the bytes of file {}: {error}",
                        file.id
                    )))
                })?;
            let body = Body::from_stream(tokio_util::io::ReaderStream::new(opened));
            Ok((
                StatusCode::OK,
                [
                    (header::CONTENT_TYPE, "application/octet-stream".to_string()),
                    (header::CONTENT_LENGTH, file.bytes.to_string()),
                ],
                body,
            )
                .into_response())
        }
        .await,
    )
}

pub async fn delete(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    openai(
        async {
            let file = find(&state, &id).await?;
            // A running batch reads its input again as it enqueues and finalises.
            let open = state.store.open_batches().await?;
            if let Some(batch) = open
                .iter()
                .find(|batch| batch.input_file_id == file.id && !batch.status.is_terminal())
            {
                return Err(ApiError::BadRequest(format!(
                    "file {} is the input of batch {}, which is {}; delete it once the batch has ended",
                    file.id, batch.id, batch.status
                )));
            }
            let deleted = state.store.delete_file(&file.id).await?;
            // The record goes first: a crash in between leaves bytes nobody lists, never
            // a listed file without its bytes.
            storage::remove(&state.config.data_dir, &file.id)
                .await
                .map_err(|error| {
                    ApiError::Store(foreman_store::Error::Write(format!(
                        "removing file {}: {error}",
                        file.id
                    )))
                })?;
            Ok(Json(json!({"id": file.id, "object": "file", "deleted": deleted})).into_response())
        }
        .await,
    )
}
