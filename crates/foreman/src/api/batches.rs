//! OpenAI's Batch API over foreman's queue:
//!
//! - `POST /v1/batches` (`input_file_id`, `endpoint`, `completion_window` `24h`,
//!   `metadata`, and foreman's extension `webhook`, a URL told when the batch ends)
//!   records the batch as `validating` and wakes the driver (`crate::batch`);
//! - `GET /v1/batches/{id}` shows it, `GET /v1/batches` lists them newest first
//!   (`after`, `limit`, OpenAI's list shape with `has_more`, `first_id`, `last_id`);
//! - `POST /v1/batches/{id}/cancel` moves a validating or running batch to `cancelling`.
//!
//! Endpoints: OpenAI's `/v1/chat/completions`, `/v1/completions` and `/v1/embeddings`,
//! and Ollama's `/api/chat`, `/api/generate` and `/api/embed` as an extension. Each
//! line's body is checked by the same validator as a live request ([`check_line_body`]).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::Extensions;
use axum::response::{IntoResponse, Response};
use foreman_store::{Batch, BatchStatus, JobKind};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use super::body::JsonBody;
use super::files::{list_page, openai};
use super::query::{Path, Query};
use super::{ApiError, AppState};
use crate::batch::{Endpoint, ids};
use crate::clock::now_ms;

/// OpenAI's limits on `metadata`.
const MAX_METADATA_PAIRS: usize = 16;
const MAX_METADATA_KEY: usize = 64;
const MAX_METADATA_VALUE: usize = 512;
const DEFAULT_PAGE: u32 = 20;
const MAX_PAGE: u32 = 100;

fn seconds(ms: Option<i64>) -> Value {
    ms.map_or(Value::Null, |ms| json!(ms / 1000))
}

/// OpenAI's Batch object.
pub fn batch_object(batch: &Batch) -> Value {
    let parse = |text: &Option<String>| {
        text.as_deref()
            .and_then(|text| serde_json::from_str::<Value>(text).ok())
    };
    json!({
        "id": batch.id,
        "object": "batch",
        "endpoint": batch.endpoint,
        "errors": parse(&batch.errors).map(|data| json!({"object": "list", "data": data})),
        "input_file_id": batch.input_file_id,
        "completion_window": batch.completion_window,
        "status": batch.status.as_str(),
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "created_at": batch.created_at / 1000,
        "in_progress_at": seconds(batch.in_progress_at),
        "expires_at": batch.expires_at / 1000,
        "finalizing_at": seconds(batch.finalizing_at),
        "completed_at": seconds(batch.completed_at),
        "failed_at": seconds(batch.failed_at),
        "expired_at": seconds(batch.expired_at),
        "cancelling_at": seconds(batch.cancelling_at),
        "cancelled_at": seconds(batch.cancelled_at),
        "request_counts": {
            "total": batch.total,
            "completed": batch.completed,
            "failed": batch.failed,
        },
        "metadata": parse(&batch.metadata),
    })
}

/// The validator of live requests, for one line's body: `Err` carries the words a
/// live request would get.
pub fn check_line_body(kind: JobKind, body: &Map<String, Value>) -> Result<(), String> {
    match body.get("model") {
        Some(Value::String(model)) if !model.is_empty() => {
            super::validate::model_name(model).map_err(|error| error.to_string())?;
        }
        _ => return Err("model is required".to_owned()),
    }
    super::validate::queued_request(kind, body).map_err(|error| error.to_string())
}

fn no_such_batch(id: &str) -> ApiError {
    ApiError::NoSuchObject {
        kind: "Batch",
        id: id.to_owned(),
    }
}

async fn find(state: &AppState, id: &str) -> Result<Batch, ApiError> {
    if !ids::is_valid(id, "batch_") {
        return Err(no_such_batch(id));
    }
    state
        .store
        .get_batch(id)
        .await?
        .ok_or_else(|| no_such_batch(id))
}

pub async fn create(
    State(state): State<AppState>,
    extensions: Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let caller = super::job_control::caller_of(&extensions);
    openai(create_batch(&state, caller, body).await)
}

async fn create_batch(
    state: &AppState,
    caller: Option<foreman_store::JobCaller>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = JsonBody::parse(body, state.config.max_body, "BatchRequest")?;
    let bad = |message: String| ApiError::BadRequest(message);
    let endpoint_text = body.string("endpoint")?;
    let endpoint = Endpoint::parse(endpoint_text).ok_or_else(|| {
        bad(format!(
            "invalid endpoint {endpoint_text:?}: use one of {}",
            Endpoint::SUPPORTED.join(", ")
        ))
    })?;
    match body.string("completion_window")? {
        "24h" => {}
        "" => return Err(bad("completion_window is required (24h)".into())),
        other => {
            return Err(bad(format!(
                "invalid completion_window {other:?}: only 24h is supported"
            )));
        }
    }
    let input_file_id = body.string("input_file_id")?;
    if input_file_id.is_empty() {
        return Err(bad("input_file_id is required".into()));
    }
    let file = super::files::find(state, input_file_id).await?;
    if file.purpose != super::files::PURPOSE_BATCH {
        return Err(bad(format!(
            "file {input_file_id} has purpose {:?}; a batch reads a file uploaded with purpose batch",
            file.purpose
        )));
    }
    let metadata = match body.fields.get("metadata") {
        None | Some(Value::Null) => None,
        Some(Value::Object(pairs)) => {
            check_metadata(pairs)?;
            Some(Value::Object(pairs.clone()).to_string())
        }
        Some(_) => return Err(bad("metadata must be an object of strings".into())),
    };
    let webhook_url =
        super::job_control::requested_webhook(state, body.fields.get("webhook")).await?;
    if state.shutdown.is_cancelled() {
        return Err(ApiError::ShuttingDown);
    }
    let now = now_ms();
    let window = i64::try_from(state.config.batch.window.as_millis()).unwrap_or(i64::MAX);
    let batch = Batch {
        metadata,
        webhook_url,
        caller,
        ..Batch::validating(
            ids::new_batch_id(),
            endpoint.path().to_owned(),
            input_file_id.to_owned(),
            now,
            now.saturating_add(window),
        )
    };
    state.store.insert_batch(batch.clone()).await?;
    state.batch_kick.notify_one();
    Ok(Json(batch_object(&batch)).into_response())
}

fn check_metadata(pairs: &Map<String, Value>) -> Result<(), ApiError> {
    let bad = |message: String| Err(ApiError::BadRequest(message));
    if pairs.len() > MAX_METADATA_PAIRS {
        return bad(format!(
            "metadata has {} pairs; at most {MAX_METADATA_PAIRS} are allowed",
            pairs.len()
        ));
    }
    for (key, value) in pairs {
        if key.chars().count() > MAX_METADATA_KEY {
            return bad(format!(
                "metadata key {key:?} is longer than {MAX_METADATA_KEY} characters"
            ));
        }
        match value {
            Value::String(text) if text.chars().count() <= MAX_METADATA_VALUE => {}
            Value::String(_) => {
                return bad(format!(
                    "metadata value of {key:?} is longer than {MAX_METADATA_VALUE} characters"
                ));
            }
            _ => return bad(format!("metadata value of {key:?} must be a string")),
        }
    }
    Ok(())
}

pub async fn get(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    openai(
        find(&state, &id)
            .await
            .map(|batch| Json(batch_object(&batch)).into_response()),
    )
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    after: Option<String>,
    limit: Option<u32>,
}

pub async fn list(State(state): State<AppState>, Query(query): Query<ListQuery>) -> Response {
    openai(
        async {
            let limit = query.limit.unwrap_or(DEFAULT_PAGE).clamp(1, MAX_PAGE);
            let batches = state
                .store
                .list_batches(query.after.clone(), limit + 1)
                .await?;
            Ok(Json(list_page(batches, limit, batch_object, |b| &b.id)).into_response())
        }
        .await,
    )
}

pub async fn cancel(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    openai(
        async {
            let batch = find(&state, &id).await?;
            if !state.store.cancel_batch(&batch.id, now_ms()).await? {
                let batch = find(&state, &id).await?;
                // Cancelling twice is not an error; a batch past running cannot be.
                if batch.status != BatchStatus::Cancelling {
                    return Err(ApiError::BadRequest(format!(
                        "batch {id} is {} and can no longer be cancelled",
                        batch.status
                    )));
                }
                return Ok(Json(batch_object(&batch)).into_response());
            }
            state.batch_kick.notify_one();
            let batch = find(&state, &id).await?;
            Ok(Json(batch_object(&batch)).into_response())
        }
        .await,
    )
}
