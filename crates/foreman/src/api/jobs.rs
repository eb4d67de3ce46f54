//! The async jobs API, for work nobody should hold a connection open for:
//!
//! - `POST /jobs` submits `{"kind":"chat"|"generate","request":{...Ollama body...},
//!   "priority":n?,"metadata":any?,"webhook":"https://..."?}` and answers `202` with the job at once
//!   (`200` with the existing job when an `Idempotency-Key` header was used before);
//! - `GET /jobs/{id}` shows it (`?wait=30s` long-polls until it finishes);
//! - `GET /jobs` lists jobs newest first, filtered by `state`, `model`,
//!   `created_after`/`created_before` (RFC 3339), a page at a time (`limit`, `cursor`);
//! - `GET /jobs/{id}/events` streams it as NDJSON: a running (or queued) job's chunks
//!   from its first one (also when called mid-run), then as the target generates
//!   them, in Ollama's streaming shape, ending with the `done` chunk; a finished job replays its result as one
//!   line (an `{"error"}` line for a failed or cancelled one);
//! - `POST /jobs/{id}/cancel` and `DELETE /jobs/{id}` cancel it.
//!
//! The job's request goes to the target streamed, so the stored result is the object
//! Ollama returns with `"stream": false`, assembled by the runner. Async jobs default
//! to [`ASYNC_PRIORITY`], below interactive requests.
//!
//! `JobView` is the wire form of a job; the domain `Job` stays free of serialisation.

use std::convert::Infallible;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{Extensions, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use foreman_store::{
    CancelOutcome, DeliveryState, Job, JobId, JobKind, JobState, ListParams, NewJob,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::body::JsonBody;
use super::query::{Path, Query};
use super::{ApiError, AppState, job_control};
use crate::artifacts;
use crate::clock::now_ms;
use crate::hub::{CancelReason, FeedEvent, Outcome, Subscription};
use crate::model_name::model_key;
use crate::scheduler::forecast::waiting_for;

/// Priority of async jobs that do not ask for one: below interactive requests.
pub const ASYNC_PRIORITY: i32 = 0;
/// Longest `?wait=` honoured.
const MAX_WAIT: Duration = Duration::from_secs(300);
const DEFAULT_PAGE: u32 = 50;
const MAX_PAGE: u32 = 500;
const MAX_KEY_LEN: usize = 255;
const IDEMPOTENCY_HEADER: &str = "idempotency-key";

/// A job as the API shows it.
#[derive(Debug, Serialize)]
pub struct JobView {
    pub id: String,
    pub kind: &'static str,
    pub state: &'static str,
    pub model: String,
    pub priority: i32,
    pub attempts: u32,
    pub max_attempts: u32,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
    /// Milliseconds from creation to the first start (so far, while queued; to the
    /// end, for a job that ended without starting).
    pub wait_ms: i64,
    /// Milliseconds from the first start to the end (so far, while running).
    pub run_ms: Option<i64>,
    /// Jobs ahead of this one in priority-then-age order, while queued.
    pub queue_position: Option<u64>,
    /// When a queued or running job is expected to start and finish (single job only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub eta: Option<EtaView>,
    /// Why a queued job waits, in words (single job only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub waiting_for: Option<String>,
    /// Why it failed, or why it was cancelled (who or what cancelled it).
    pub error: Option<JobErrorView>,
    /// The body Ollama would have returned with `"stream": false`.
    pub result: Option<Value>,
    pub metadata: Option<Value>,
    /// The webhook URL and, on a single job, its deliveries with every attempt.
    pub webhook: Option<WebhookView>,
    /// Files holding a result too large for the job itself (`result` is then null).
    pub artifacts: Vec<ArtifactView>,
}

#[derive(Debug, Serialize)]
pub struct ArtifactView {
    pub name: String,
    pub content_type: String,
    pub size: u64,
    pub url: String,
}

#[derive(Debug, Serialize)]
pub struct WebhookView {
    pub url: String,
    pub deliveries: Vec<DeliveryView>,
}

#[derive(Debug, Serialize)]
pub struct DeliveryView {
    /// The `webhook-id` every attempt carried.
    pub id: String,
    pub state: &'static str,
    pub attempts: Vec<AttemptView>,
    pub next_attempt_at: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct AttemptView {
    pub attempt: u32,
    pub at: String,
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
}

/// A forecast of a job's start and end (see `scheduler::forecast`).
#[derive(Debug, Serialize)]
pub struct EtaView {
    /// When it is expected to be sent to a target (for a running job, when it was).
    pub start_at: String,
    /// When its answer is expected to end.
    pub finish_at: String,
    /// The target it is expected on.
    pub target: String,
    /// Whether its model is expected to be loaded for it first.
    pub loads_model: bool,
    /// `learned`: from the run and load times of its own model's jobs; `assumed`: its
    /// model has not run yet, so other models' times (or defaults) stand in.
    pub basis: &'static str,
}

#[derive(Debug, Serialize)]
pub struct JobErrorView {
    pub status: u16,
    pub message: String,
}

fn rfc3339(ms: i64) -> String {
    let at = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

impl JobView {
    pub fn new(job: &Job, queue_position: Option<u64>, now: i64) -> JobView {
        let parse = |text: &Option<String>| {
            text.as_deref()
                .map(|t| serde_json::from_str(t).unwrap_or_else(|_| Value::String(t.to_string())))
        };
        JobView {
            id: job.id.to_string(),
            kind: job.kind.as_str(),
            state: job.state.as_str(),
            model: job.model.clone(),
            priority: job.priority,
            attempts: job.attempts,
            max_attempts: job.max_attempts,
            created_at: rfc3339(job.created_at),
            started_at: job.started_at.map(rfc3339),
            finished_at: job.finished_at.map(rfc3339),
            // A job cancelled while queued stopped waiting when it ended.
            wait_ms: job
                .started_at
                .or(job.finished_at)
                .unwrap_or(now)
                .max(job.created_at)
                - job.created_at,
            run_ms: job
                .started_at
                .map(|start| job.finished_at.unwrap_or(now).max(start) - start),
            queue_position,
            eta: None,
            waiting_for: None,
            error: job.failure.as_ref().map(|f| JobErrorView {
                status: f.status,
                message: f.message.clone(),
            }),
            result: parse(&job.result),
            metadata: parse(&job.metadata),
            webhook: job.webhook_url.as_ref().map(|url| WebhookView {
                url: url.clone(),
                deliveries: Vec::new(),
            }),
            artifacts: artifacts::listed(job.artifacts.as_deref())
                .into_iter()
                .map(|a| ArtifactView {
                    url: format!("/jobs/{}/artifacts/{}", job.id, a.name),
                    name: a.name,
                    content_type: a.content_type,
                    size: a.size,
                })
                .collect(),
        }
    }
}

/// A job's full view: its webhook deliveries, and while it is queued or running its
/// forecast when `forecast` (not for a submission or a cancel, whose answers are about
/// acceptance, and which a burst must not pay a forecast each for).
async fn view(state: &AppState, job: &Job, forecast: bool) -> Result<JobView, ApiError> {
    view_placed(state, job, forecast, None).await
}

/// [`view`], with the job's place in the queue when the caller already has it (the
/// store gives it with some enqueues), so it is not counted again.
async fn view_placed(
    state: &AppState,
    job: &Job,
    forecast: bool,
    known_position: Option<u64>,
) -> Result<JobView, ApiError> {
    let position = match (job.state, known_position) {
        (JobState::Queued, Some(position)) => Some(position),
        (JobState::Queued, None) => state.store.queue_position(job.id).await?,
        _ => None,
    };
    let mut view = JobView::new(job, position, now_ms());
    view.error = error_view(job);
    let forecast_applies = forecast && matches!(job.state, JobState::Queued | JobState::Running);
    let estimate = if forecast_applies {
        state.dispatcher.estimate(job.id).await?
    } else {
        None
    };
    if let Some(estimate) = estimate {
        let targets = state.targets.all();
        let target = targets.get(estimate.target).map_or("", |t| t.name.as_str());
        view.eta = Some(EtaView {
            start_at: rfc3339(estimate.start_at),
            finish_at: rfc3339(estimate.finish_at),
            target: target.to_string(),
            loads_model: estimate.loads,
            basis: if estimate.learned {
                "learned"
            } else {
                "assumed"
            },
        });
        if job.state == JobState::Queued {
            view.waiting_for = Some(waiting_for(
                &estimate,
                &job.model,
                target,
                targets.len() > 1,
            ));
        }
    }
    if let Some(webhook) = view.webhook.as_mut() {
        webhook.deliveries = state
            .store
            .webhooks_for_job(job.id)
            .await?
            .into_iter()
            .map(|delivery| DeliveryView {
                id: delivery.id,
                state: delivery.state.as_str(),
                next_attempt_at: (delivery.state == DeliveryState::Pending)
                    .then(|| rfc3339(delivery.next_attempt_at)),
                attempts: delivery
                    .log
                    .into_iter()
                    .map(|a| AttemptView {
                        attempt: a.attempt,
                        at: rfc3339(a.at),
                        status: a.status,
                        latency_ms: a.latency_ms,
                        error: a.error,
                    })
                    .collect(),
            })
            .collect();
    }
    Ok(view)
}

fn error_view(job: &Job) -> Option<JobErrorView> {
    job.failure.clone().map(|failure| JobErrorView {
        status: failure.status,
        message: failure.message,
    })
}

fn parse_id(text: &str) -> Result<JobId, ApiError> {
    text.parse()
        .map_err(|_| ApiError::BadRequest(format!("invalid job id {text:?}")))
}

async fn find(state: &AppState, id: JobId) -> Result<Job, ApiError> {
    state
        .store
        .get(id)
        .await?
        .ok_or_else(|| ApiError::JobNotFound(id.to_string()))
}

pub async fn submit(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = JsonBody::parse(body, state.config.max_body, "JobRequest")?;
    let kind = match body.string("kind")? {
        "chat" => JobKind::Chat,
        "generate" => JobKind::Generate,
        "" => {
            return Err(ApiError::BadRequest(
                "kind is required (chat or generate)".into(),
            ));
        }
        other => {
            return Err(ApiError::BadRequest(format!(
                "unknown kind {other:?}: use chat or generate"
            )));
        }
    };
    let Some(Value::Object(request)) = body.fields.get("request") else {
        return Err(ApiError::BadRequest(
            "request is required: the Ollama request body, as an object".into(),
        ));
    };
    let webhook_url = job_control::requested_webhook(&state, body.fields.get("webhook")).await?;
    let model = match request.get("model") {
        Some(Value::String(model)) if !model.is_empty() => model.clone(),
        _ => return Err(ApiError::BadRequest("request.model is required".into())),
    };
    super::validate::queued_request(kind, request)?;
    let priority = match body.fields.get("priority") {
        None | Some(Value::Null) => ASYNC_PRIORITY,
        Some(value) => value
            .as_i64()
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| (state.config.priority_min..=state.config.priority_max).contains(p))
            .ok_or_else(|| {
                ApiError::BadRequest(format!(
                    "priority must be an integer from {} to {}",
                    state.config.priority_min, state.config.priority_max
                ))
            })?,
    };
    let metadata = body
        .fields
        .get("metadata")
        .filter(|v| !v.is_null())
        .map(Value::to_string);
    let idempotency_key = idempotency_key(&headers)?;
    job_control::admit(&state, &model).await?;
    let streamed = streamed_payload(request);
    let (payload, load_options) = job_control::queued_body(
        &state,
        kind,
        &model,
        &streamed,
        Value::Object(streamed.clone()).to_string(),
    );
    let enqueued = state
        .store
        .enqueue_within(
            NewJob {
                id: None,
                kind,
                model: model_key(&model),
                load_options,
                payload: payload.clone(),
                sync: false,
                priority,
                max_attempts: state.config.max_attempts,
                idempotency_key,
                webhook_url,
                metadata,
                caller: job_control::caller_of(&extensions),
            },
            now_ms(),
            state.config.max_queue,
        )
        .await?;
    if !enqueued.created {
        if enqueued.job.payload != payload || enqueued.job.kind != kind {
            return Err(ApiError::IdempotencyMismatch);
        }
        return Ok((
            StatusCode::OK,
            Json(view(&state, &enqueued.job, false).await?),
        )
            .into_response());
    }
    state.metrics.enqueued(&enqueued.job);
    state.wake.notify_waiters();
    Ok((
        StatusCode::ACCEPTED,
        Json(view_placed(&state, &enqueued.job, false, enqueued.position).await?),
    )
        .into_response())
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(value) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    match value.to_str().map(str::trim) {
        Ok(key) if !key.is_empty() && key.len() <= MAX_KEY_LEN => Ok(Some(key.to_string())),
        _ => Err(ApiError::BadRequest(format!(
            "Idempotency-Key must be 1 to {MAX_KEY_LEN} visible ASCII characters"
        ))),
    }
}

/// The client's request with `"stream": true`, so the runner relays and assembles it.
fn streamed_payload(request: &Map<String, Value>) -> Map<String, Value> {
    let mut request = request.clone();
    request.insert("stream".into(), Value::Bool(true));
    request
}

#[derive(Debug, Deserialize)]
pub struct WaitQuery {
    wait: Option<String>,
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(query): Query<WaitQuery>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    let wait = match query.wait.as_deref() {
        None | Some("") => Duration::ZERO,
        Some(text) => humantime::parse_duration(text)
            .map_err(|e| ApiError::BadRequest(format!("wait: {e} (use a duration like 30s)")))?
            .min(MAX_WAIT),
    };
    let deadline = tokio::time::Instant::now() + wait;
    // Watch before reading: a change between the read and the wait still wakes it.
    // Only this job's changes do, so the row is read again only when it changed.
    let mut watch = state.hub.watch(id);
    loop {
        let job = find(&state, id).await?;
        if job.state.is_terminal() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(view(&state, &job, true).await?).into_response());
        }
        tokio::select! {
            _ = watch.changed() => {}
            _ = tokio::time::sleep_until(deadline) => {}
            _ = state.shutdown.cancelled() => {
                return Ok(Json(view(&state, &job, true).await?).into_response());
            }
        }
    }
}

#[derive(Debug, Deserialize)]
pub struct ListQuery {
    state: Option<String>,
    model: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    cursor: Option<String>,
    limit: Option<u32>,
}

#[derive(Debug, Serialize)]
pub struct JobPage {
    pub jobs: Vec<JobView>,
    /// Pass as `cursor` for the next page; absent on the last one.
    pub next_cursor: Option<String>,
}

fn time_filter(name: &str, text: Option<&str>) -> Result<Option<i64>, ApiError> {
    text.map(|text| {
        humantime::parse_rfc3339_weak(text)
            .map(|at| {
                at.duration_since(SystemTime::UNIX_EPOCH)
                    .map(|d| d.as_millis() as i64)
                    .unwrap_or(0)
            })
            .map_err(|e| {
                ApiError::BadRequest(format!(
                    "{name}: {e} (use RFC 3339, e.g. 2026-01-31T12:00:00Z)"
                ))
            })
    })
    .transpose()
}

pub async fn list(
    State(state): State<AppState>,
    Query(query): Query<ListQuery>,
) -> Result<Response, ApiError> {
    let job_state = query
        .state
        .as_deref()
        .map(|s| {
            s.parse::<JobState>().map_err(|_| {
                ApiError::BadRequest(format!(
                    "unknown state {s:?}: use queued, running, succeeded, failed or cancelled"
                ))
            })
        })
        .transpose()?;
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if limit == 0 || limit > MAX_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit must be from 1 to {MAX_PAGE}"
        )));
    }
    let jobs = state
        .store
        .list(ListParams {
            state: job_state,
            model: query.model.as_deref().map(model_key),
            created_after: time_filter("created_after", query.created_after.as_deref())?,
            created_before: time_filter("created_before", query.created_before.as_deref())?,
            cursor: query.cursor.as_deref().map(parse_id).transpose()?,
            limit: limit + 1,
        })
        .await?;
    let more = jobs.len() > limit as usize;
    let now = now_ms();
    let page: Vec<JobView> = jobs
        .iter()
        .take(limit as usize)
        .map(|job| JobView {
            error: error_view(job),
            ..JobView::new(job, None, now)
        })
        .collect();
    let next_cursor = more.then(|| page.last().map(|j| j.id.clone())).flatten();
    Ok(Json(JobPage {
        jobs: page,
        next_cursor,
    })
    .into_response())
}

/// The line a finished job's events end with: its result (read back from its file
/// when it is an artifact), or its error.
async fn final_line(state: &AppState, job: &Job) -> Bytes {
    let from_file = match artifacts::listed(job.artifacts.as_deref()).first() {
        Some(artifact) if job.result.is_none() => {
            match artifacts::path(&state.config.data_dir, job.id, &artifact.name) {
                Some(path) => tokio::fs::read_to_string(path).await.ok(),
                None => None,
            }
        }
        _ => None,
    };
    let result = job.result.clone().or(from_file);
    let value = match (&result, &job.failure, job.state) {
        (Some(result), _, JobState::Succeeded) => {
            serde_json::from_str(result).unwrap_or_else(|_| Value::String(result.clone()))
        }
        (_, Some(failure), _) => serde_json::json!({ "error": failure.message }),
        (_, None, state) => serde_json::json!({ "error": format!("job {}", state.as_str()) }),
    };
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}

pub async fn events(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    // Open the feed first, then look: a job that ends in between is seen as ended.
    let mut subscription = state.hub.open(id);
    // On a shared database another instance may run the job: its output reaches this
    // feed from the store (see `output_relay.rs`) unless a reader there kept it from
    // being written, and its end reaches this watch (see `signals.rs`).
    let mut watch = state.hub.watch(id);
    let job = find(&state, id).await?;
    let body: std::pin::Pin<Box<dyn futures::Stream<Item = Result<Bytes, Infallible>> + Send>> =
        if job.state.is_terminal() {
            let line = final_line(&state, &job).await;
            Box::pin(futures::stream::once(async move { Ok(line) }))
        } else {
            Box::pin(async_stream::stream! {
                loop {
                    let event = tokio::select! {
                        event = job_control::next_event(&state, &mut subscription) => event,
                        _ = watch.changed(), if state.store.is_shared() => {
                            match ended_elsewhere(&state, &subscription).await {
                                Some(job) => {
                                    yield Ok(final_line(&state, &job).await);
                                    break;
                                }
                                None => continue,
                            }
                        }
                    };
                    match event {
                        Some(FeedEvent::Chunk(chunk)) => yield Ok(chunk),
                        Some(FeedEvent::End(Outcome::Succeeded | Outcome::FailedInStream)) => {
                            // The feed ends before the outcome's commit; a watcher that
                            // reads the job next should find it finished.
                            until_recorded(&state, id).await;
                            break;
                        }
                        None => break,
                        Some(FeedEvent::End(_)) => {
                            // Failed or cancelled: say so in the job's own words.
                            if let Ok(Some(job)) = state.store.get(id).await {
                                yield Ok(final_line(&state, &job).await);
                            }
                            break;
                        }
                    }
                }
            })
        };
    let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/x-ndjson"),
    );
    Ok(response)
}

/// The job, when it ended without this instance running it (no output reached this
/// instance's feed): another instance on the shared database ran it, and only its end
/// (the final line) can be told here.
async fn ended_elsewhere(state: &AppState, subscription: &Subscription) -> Option<Job> {
    let id = subscription.id();
    if subscription.content_type().is_some() || state.running.contains(id) {
        return None;
    }
    let job = state.store.get(id).await.ok().flatten()?;
    job.state.is_terminal().then_some(job)
}

/// Waits until the runner has recorded the job's outcome (it leaves the running set
/// after the commit), or shutdown.
async fn until_recorded(state: &AppState, id: JobId) {
    let mut watch = state.hub.watch(id);
    while state.running.contains(id) {
        tokio::select! {
            _ = watch.changed() => {}
            _ = state.shutdown.cancelled() => return,
        }
    }
}

/// Serves one of a job's artifacts, with its content type and length.
pub async fn artifact(
    State(state): State<AppState>,
    Path((id, name)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    if !artifacts::valid_name(&name) {
        return Err(ApiError::BadRequest(format!(
            "invalid artifact name {name:?}: one file name of letters, digits, '.', '_' and '-'"
        )));
    }
    let job = find(&state, id).await?;
    let listed = artifacts::listed(job.artifacts.as_deref());
    let not_found = || ApiError::ArtifactNotFound(format!("job {id} has no artifact {name:?}"));
    let artifact = listed
        .iter()
        .find(|a| a.name == name)
        .ok_or_else(not_found)?;
    let path = artifacts::path(&state.config.data_dir, id, &name).ok_or_else(not_found)?;
    let file = tokio::fs::File::open(&path)
        .await
        .map_err(|_| not_found())?;
    let length = file.metadata().await.map_err(|_| not_found())?.len();
    let mut response = (
        StatusCode::OK,
        Body::from_stream(tokio_util::io::ReaderStream::new(file)),
    )
        .into_response();
    let headers = response.headers_mut();
    if let Ok(value) = axum::http::HeaderValue::from_str(&artifact.content_type) {
        headers.insert(axum::http::header::CONTENT_TYPE, value);
    }
    headers.insert(axum::http::header::CONTENT_LENGTH, length.into());
    Ok(response)
}

pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    let id = parse_id(&id)?;
    match job_control::cancel_job(&state, id, CancelReason::CancelCall).await? {
        CancelOutcome::Cancelled(job) => Ok(Json(view(&state, &job, false).await?).into_response()),
        CancelOutcome::Requested(job) => {
            Ok((StatusCode::ACCEPTED, Json(view(&state, &job, false).await?)).into_response())
        }
        CancelOutcome::AlreadyFinished(job) => Err(ApiError::AlreadyFinished {
            id: job.id.to_string(),
            state: job.state.as_str(),
        }),
        CancelOutcome::NotFound => Err(ApiError::JobNotFound(id.to_string())),
    }
}

#[cfg(test)]
mod tests {

    use super::*;
    use crate::config::Config;
    use crate::targets::Targets;

    async fn state_on(dir: &tempfile::TempDir) -> AppState {
        let db = dir.path().join("foreman.db");
        let config = Config::for_upstream("http://127.0.0.1:1", db.to_str().unwrap());
        let targets = Targets::new(
            &config.targets,
            config.upstream_timeout,
            config.poll_interval,
        );
        let store = foreman_store::Store::open(db.to_str().unwrap())
            .await
            .unwrap();
        AppState::for_test(config, store, targets)
    }

    async fn enqueue(state: &AppState, now: i64) -> Job {
        let job = NewJob {
            id: None,
            kind: JobKind::Chat,
            model: "llama3.2:latest".into(),
            load_options: String::new(),
            payload: r#"{"model":"llama3.2","messages":[]}"#.into(),
            sync: false,
            priority: 0,
            max_attempts: 3,
            idempotency_key: None,
            webhook_url: None,
            metadata: None,
            caller: None,
        };
        state.store.enqueue(job, now).await.unwrap().job
    }

    fn long_poll(state: &AppState, id: JobId) -> tokio::task::JoinHandle<Value> {
        let state = state.clone();
        tokio::spawn(async move {
            let query = WaitQuery {
                wait: Some("60s".into()),
            };
            let response = get(State(state), Path(id.to_string()), Query(query))
                .await
                .unwrap();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            serde_json::from_slice(&body).unwrap()
        })
    }

    /// 200 long polls on jobs that do not change neither wake nor read the store while
    /// 50 other jobs end; each of those 50 wakes once, reads its row once more, and
    /// answers.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_poll_wakes_and_reads_only_when_its_own_job_changes() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_on(&dir).await;
        let mut jobs = Vec::new();
        for _ in 0..250 {
            jobs.push(enqueue(&state, now_ms()).await.id);
        }
        let mut polls: Vec<_> = jobs.iter().map(|id| long_poll(&state, *id)).collect();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        // Each poll has read its job once and waits.
        while state.hub.parked_watches() < jobs.len() as u64 {
            assert!(tokio::time::Instant::now() < deadline, "every poll waits");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for id in &jobs[200..] {
            job_control::cancel_job(&state, *id, CancelReason::CancelCall)
                .await
                .unwrap();
        }
        for poll in polls.drain(200..) {
            let job = poll.await.unwrap();
            assert_eq!(job["state"], "cancelled");
            assert_eq!(job["error"]["message"], "cancelled by a cancel call");
            assert_eq!(job["error"]["status"], 499);
        }
        assert_eq!(
            state.hub.watch_wakeups(),
            50,
            "one wake-up (and one read) per ended job, none for the 200 others"
        );
        assert_eq!(state.hub.open_watches(), 200);
        assert_eq!(state.hub.parked_watches(), 200, "the others still wait");
        state.shutdown.cancel();
        for poll in polls {
            assert_eq!(poll.await.unwrap()["state"], "queued");
        }
        assert_eq!(state.hub.watch_wakeups(), 50);
        assert_eq!(state.hub.open_watches(), 0);
        assert_eq!(state.hub.parked_watches(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_job_stops_waiting_when_it_ends() {
        let dir = tempfile::tempdir().unwrap();
        let state = state_on(&dir).await;
        let created = 1_000_000;
        let job = enqueue(&state, created).await;
        let reason = crate::api::error::cancel_failure(CancelReason::CancelCall);
        let cancelled = match state
            .store
            .cancel(job.id, created + 250, reason)
            .await
            .unwrap()
        {
            CancelOutcome::Cancelled(job) => job,
            other => panic!("not cancelled: {other:?}"),
        };
        for now in [created + 300, created + 3_600_000] {
            let view = JobView::new(&cancelled, None, now);
            assert_eq!(view.wait_ms, 250, "at {now}");
            assert_eq!(view.run_ms, None);
        }
        let queued = JobView::new(&job, None, created + 400);
        assert_eq!(queued.wait_ms, 400, "a queued job's wait grows");
    }
}
