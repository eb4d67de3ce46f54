//! The keys API, behind the `admin` scope: create a key (its secret is in this one
//! answer), list keys, revoke one, read their usage. The same operations as
//! `foreman keys`, which works on the database directly; a change made here takes
//! effect at once in this instance (the ring reloads), in others within a second.

use axum::Json;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use serde::Deserialize;
use serde_json::{Value, json};

use super::body::JsonBody;
use super::query::{Path, Query};
use super::{ApiError, AppState};
use crate::clock::now_ms;
use crate::keys::Grant;
use crate::keys::manage::{self, ManageError};

/// Hours of usage shown when the query does not say.
const DEFAULT_USAGE_HOURS: u32 = 24;

impl From<ManageError> for ApiError {
    fn from(error: ManageError) -> ApiError {
        match error {
            ManageError::Invalid(reason) => ApiError::BadRequest(reason),
            ManageError::Exists(_) => ApiError::KeyExists(error.to_string()),
            ManageError::NotFound(_) => ApiError::KeyNotFound(error.to_string()),
            ManageError::Random(_) => {
                ApiError::Store(foreman_store::Error::Write(error.to_string()))
            }
            ManageError::Store(error) => ApiError::from(error),
        }
    }
}

async fn reload(state: &AppState) -> Result<(), ApiError> {
    state.keys.reload().await.map_err(ApiError::from)
}

/// `GET /foreman/keys`: every key, revoked ones too, without secrets.
pub async fn list(State(state): State<AppState>) -> Result<Json<Value>, ApiError> {
    let keys = state.store.api_keys().await?;
    Ok(Json(json!({
        "keys": keys.iter().map(manage::key_view).collect::<Vec<_>>()
    })))
}

/// `POST /foreman/keys` with `{"name", "scopes", ...limits}`: 201 and the key, its
/// secret under `key`.
pub async fn create(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = JsonBody::parse(body, state.config.max_body, "KeyRequest")?;
    let mut fields = body.fields;
    let name = match fields.remove("name") {
        Some(Value::String(name)) => name,
        _ => return Err(ApiError::BadRequest("name is required, as a string".into())),
    };
    let grant: Grant = serde_json::from_value(Value::Object(fields))
        .map_err(|error| ApiError::BadRequest(format!("invalid key: {error}")))?;
    let created = manage::create(&state.store, &name, &grant, now_ms()).await?;
    reload(&state).await?;
    Ok((StatusCode::CREATED, Json(manage::created_view(&created))).into_response())
}

/// `DELETE /foreman/keys/{name}`: revoked at once; 404 for no live key of that name.
pub async fn revoke(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    manage::revoke(&state.store, &name, now_ms()).await?;
    reload(&state).await?;
    let keys = state.store.api_keys().await?;
    let key = keys
        .iter()
        .find(|key| key.name == name)
        .ok_or_else(|| ApiError::KeyNotFound(format!("no API key named {name}")))?;
    Ok(Json(manage::key_view(key)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// One key's usage; all keys' without.
    key: Option<String>,
    /// Hours back from now (24 by default).
    hours: Option<u32>,
}

/// `GET /foreman/keys/usage?key=NAME&hours=N`: per key, totals and hourly buckets.
pub async fn usage(
    State(state): State<AppState>,
    Query(query): Query<UsageQuery>,
) -> Result<Json<Value>, ApiError> {
    let hours = i64::from(query.hours.unwrap_or(DEFAULT_USAGE_HOURS).max(1));
    let since = now_ms() - (hours - 1) * foreman_store::USAGE_HOUR_MS;
    state.metrics.usage.flush(&state.store).await;
    Ok(Json(
        manage::usage(&state.store, query.key.as_deref(), since).await?,
    ))
}
