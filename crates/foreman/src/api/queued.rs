//! Queued generation: `POST /api/chat` and `POST /api/generate` (and, through
//! [`run_queued`], the OpenAI-compatible completions in `openai.rs`).
//!
//! A request is validated, checked against the inventory, committed to the queue as
//! a job (durably, before anything is answered), and then answered exactly as Ollama
//! would answer it, from what the runner relays: an NDJSON stream forwarded chunk by
//! chunk when `stream` is true or absent, one JSON object with `"stream": false`, or
//! the target's own error. Every answer carries `X-Foreman-Job-Id`.
//!
//! When the status and headers go out: a native NDJSON stream (`/api/chat` and
//! `/api/generate` with `stream` true or absent) answers 200 and its headers as soon
//! as its job is committed, so the caller learns the job's id while it waits in the
//! queue; a failure before any output then comes as the stream's `{"error"}` line,
//! as Ollama ends a stream that fails. Ollama itself sends no headers before its first
//! chunk, and a client that waits for them waits the same. Every other answer keeps
//! waiting for its first chunk or its end: a non-streaming one must carry its final
//! status, and an SSE stream of Ollama's `/v1` routes has no error event to tell a
//! failure in (nor does a load or unload request, answered as one JSON object).
//!
//! A caller that disconnects cancels its job: a queued job never reaches the GPU, a
//! running one has its upstream request dropped.
//!
//! A target that is down holds jobs rather than failing them; a caller whose job is
//! still queued while every target that could run it has been down for
//! `FOREMAN_TARGET_DOWN_TIMEOUT` gets 503 instead of waiting on, and its job is
//! cancelled, since nobody waits for it any more (async jobs keep waiting).
//!
//! Priority: a request may send `X-Foreman-Priority: <integer>` within
//! `--priority-min`..=`--priority-max` (`FOREMAN_PRIORITY_MIN`/`_MAX`, -20..=20 by
//! default); anything else, or the header sent twice, is a 400. Without the header a
//! request gets [`SYNC_PRIORITY`] (10). Higher runs first: the store and the scheduler
//! order by priority, then age, though draining the resident model and the
//! starvation bound still come first. Async jobs (`/jobs`) default lower than sync
//! ones, because nobody holds a connection open waiting for them.

use std::convert::Infallible;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::extract::rejection::BytesRejection;
use axum::http::{Extensions, HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use foreman_store::{CancelOutcome, JobCaller, JobFailure, JobId, JobKind, NewJob};
use serde_json::Value;

use super::body::JsonBody;
use super::error::{Flavor, stream_error_line};
use super::{ApiError, AppState, job_control};
use crate::clock::now_ms;
use crate::config::Config;
use crate::hub::{CancelReason, FeedEvent, Outcome, Subscription, TargetAnswer};
use crate::model_name::model_key;
use crate::targets::TargetsDown;

/// How often a caller whose job is queued checks whether its targets are down.
const TARGET_DOWN_CHECK: Duration = Duration::from_secs(1);

/// Priority of interactive requests without `X-Foreman-Priority`; async jobs
/// default lower. Defined with the settings, which check that the
/// configured range holds it.
pub use crate::config::SYNC_PRIORITY;

pub const JOB_ID_HEADER: &str = "x-foreman-job-id";
pub const PRIORITY_HEADER: &str = "x-foreman-priority";
const NDJSON: &str = "application/x-ndjson";

pub async fn chat(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = JsonBody::parse(body, state.config.max_body, "ChatRequest")?;
    let model = body.string("model")?.to_string();
    if model.is_empty() {
        return Err(ApiError::BadRequest("model is required".into()));
    }
    body.expect_array("messages", "[]api.Message")?;
    let caller = job_control::caller_of(&extensions);
    run_queued(
        state,
        &headers,
        caller,
        JobKind::Chat,
        body,
        model,
        Flavor::Ollama,
    )
    .await
}

pub async fn generate(
    State(state): State<AppState>,
    headers: HeaderMap,
    extensions: Extensions,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = JsonBody::parse(body, state.config.max_body, "GenerateRequest")?;
    let model = body.string("model")?.to_string();
    if model.is_empty() {
        return Err(ApiError::ModelNotFound(String::new()));
    }
    body.string("prompt")?;
    run_queued(
        state,
        &headers,
        job_control::caller_of(&extensions),
        JobKind::Generate,
        body,
        model,
        Flavor::Ollama,
    )
    .await
}

pub(super) async fn run_queued(
    state: AppState,
    headers: &HeaderMap,
    caller: Option<JobCaller>,
    kind: JobKind,
    body: JsonBody,
    model: String,
    flavor: Flavor,
) -> Result<Response, ApiError> {
    super::validate::queued_request(kind, &body.fields)?;
    let early_headers = headers_at_commit(kind, flavor, &body)?;
    let priority = requested_priority(headers, &state.config)?;
    job_control::admit(&state, &model).await?;
    let raw = String::from_utf8(body.raw.to_vec())
        .map_err(|_| ApiError::BadRequest("request body is not UTF-8".into()))?;
    let (payload, load_options) = job_control::queued_body(&state, kind, &model, &body.fields, raw);
    let id = JobId::generate();
    let mut subscription = state.hub.open(id);
    let enqueued = state
        .store
        .enqueue_within(
            NewJob {
                id: Some(id),
                kind,
                model: model_key(&model),
                load_options,
                payload,
                sync: true,
                priority,
                max_attempts: state.config.max_attempts,
                idempotency_key: None,
                webhook_url: None,
                metadata: None,
                caller,
            },
            now_ms(),
            state.config.max_queue,
        )
        .await?;
    state.metrics.enqueued(&enqueued.job);
    state.wake.notify_waiters();
    let mut guard = CancelOnDrop {
        state: state.clone(),
        id,
        armed: true,
    };
    if early_headers {
        let body = relay(state, subscription, guard, None, model, true);
        let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
        response
            .headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(NDJSON));
        return Ok(with_job_id(response, id));
    }
    let first = match first_event(&state, &mut subscription, &model).await {
        Ok(first) => first,
        Err(down) => {
            guard.armed = false;
            give_up(&state, id, &down).await;
            return Ok(with_job_id(ApiError::from(down).render(flavor), id));
        }
    };
    let response = match first {
        None => {
            guard.armed = false;
            ApiError::ShuttingDown.render(flavor)
        }
        Some(FeedEvent::End(outcome)) => {
            guard.armed = false;
            outcome_response(outcome, flavor)
        }
        Some(FeedEvent::Chunk(chunk)) => {
            let content_type = subscription
                .content_type()
                .unwrap_or_else(|| NDJSON.to_string());
            // SSE has no error line: like Ollama's /v1, a failed stream just ends.
            let error_line = !content_type.starts_with("text/event-stream");
            let body = relay(state, subscription, guard, Some(chunk), model, error_line);
            let mut response = (StatusCode::OK, Body::from_stream(body)).into_response();
            if let Ok(value) = HeaderValue::from_str(&content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            response
        }
    };
    Ok(with_job_id(response, id))
}

/// Whether the answer's status and headers go out once the job is committed (see the
/// module doc): a native NDJSON stream that is not a load or unload request.
fn headers_at_commit(kind: JobKind, flavor: Flavor, body: &JsonBody) -> Result<bool, ApiError> {
    let streaming = body.bool("stream")? != Some(false);
    if flavor != Flavor::Ollama || !streaming {
        return Ok(false);
    }
    let present = |field: &str| match body.fields.get(field) {
        None | Some(Value::Null) => false,
        Some(Value::String(text)) => !text.is_empty(),
        Some(Value::Array(items)) => !items.is_empty(),
        Some(_) => true,
    };
    // Ollama answers a request with nothing to generate (it loads or unloads the
    // model) with one JSON object, not a stream.
    Ok(match kind {
        JobKind::Chat => present("messages"),
        JobKind::Generate => present("prompt") || present("images"),
        _ => false,
    })
}

/// Cancels a job whose targets have been down too long; its caller is told so.
async fn give_up(state: &AppState, id: JobId, down: &TargetsDown) {
    if let Err(error) = job_control::cancel_job(state, id, CancelReason::TargetsDown).await {
        tracing::error!(%error, job = %id, "cannot cancel");
    }
    tracing::info!(job = %id, %down, "targets down; job cancelled and its caller told");
}

/// The job's first feed event, as [`job_control::next_event`] gives it; while the
/// job is queued, every [`TARGET_DOWN_CHECK`] it looks whether every target that
/// could run it has been down for `target_down_timeout`, and if so gives up.
async fn first_event(
    state: &AppState,
    subscription: &mut Subscription,
    model: &str,
) -> Result<Option<FeedEvent>, TargetsDown> {
    let id = subscription.id();
    let mut ticks = tokio::time::interval(TARGET_DOWN_CHECK);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let event = job_control::next_event(state, subscription);
    tokio::pin!(event);
    loop {
        tokio::select! {
            event = &mut event => return Ok(event),
            _ = ticks.tick() => {
                if state.running.contains(id) {
                    continue;
                }
                if let Some((down_for, targets)) = state.targets.down_for(model)
                    && down_for >= state.config.target_down_timeout
                {
                    return Err(TargetsDown { model: model.to_string(), targets, down_for });
                }
            }
        }
    }
}

/// The priority asked for with `X-Foreman-Priority`, or [`SYNC_PRIORITY`] without it.
fn requested_priority(headers: &HeaderMap, config: &Config) -> Result<i32, ApiError> {
    let invalid = |value: String| ApiError::InvalidPriority {
        value,
        min: config.priority_min,
        max: config.priority_max,
    };
    let mut values = headers.get_all(PRIORITY_HEADER).iter();
    let Some(value) = values.next() else {
        return Ok(SYNC_PRIORITY);
    };
    let count = 1 + values.count();
    if count > 1 {
        return Err(invalid(format!("(sent {count} times)")));
    }
    let text = String::from_utf8_lossy(value.as_bytes());
    match text.trim().parse::<i32>() {
        Ok(priority) if (config.priority_min..=config.priority_max).contains(&priority) => {
            Ok(priority)
        }
        _ => Err(invalid(format!("{text:?}"))),
    }
}

/// The rest of an answer after its first chunk (or all of it, when the status went
/// out before: `first` is then `None`), ending at the job's outcome. A failure after
/// the status was sent can only be told in band, as Ollama does: one more `{"error"}`
/// line.
fn relay(
    state: AppState,
    mut subscription: Subscription,
    guard: CancelOnDrop,
    first: Option<Bytes>,
    model: String,
    error_line: bool,
) -> impl futures::Stream<Item = Result<Bytes, Infallible>> + Send + 'static {
    async_stream::stream! {
        // Bind the whole guard: the stream owns it, so dropping the stream (the
        // caller went away) is what cancels the job.
        let mut guard = guard;
        let first = match first {
            Some(chunk) => Ok(chunk),
            None => match first_event(&state, &mut subscription, &model).await {
                Ok(Some(FeedEvent::Chunk(chunk))) => Ok(chunk),
                Ok(Some(FeedEvent::End(outcome))) => Err(end_without_output(outcome)),
                Ok(None) => Err(ApiError::ShuttingDown),
                Err(down) => {
                    guard.armed = false;
                    give_up(&state, subscription.id(), &down).await;
                    Err(ApiError::from(down))
                }
            },
        };
        match first {
            Ok(chunk) => yield Ok(chunk),
            Err(error) => {
                guard.armed = false;
                yield Ok(in_stream(error));
            }
        }
        while guard.armed {
            match job_control::next_event(&state, &mut subscription).await {
                Some(FeedEvent::Chunk(chunk)) => yield Ok(chunk),
                Some(FeedEvent::End(outcome)) => {
                    guard.armed = false;
                    if let (Outcome::Failed { failure, from_target }, true) = (outcome, error_line) {
                        yield Ok(stream_error_line(&failure, from_target.as_ref()));
                    }
                    break;
                }
                None => {
                    guard.armed = false;
                    break;
                }
            }
        }
    }
}

fn outcome_response(outcome: Outcome, flavor: Flavor) -> Response {
    end_without_output(outcome).render(flavor)
}

/// What a caller hears of a job that ended before any output.
fn end_without_output(outcome: Outcome) -> ApiError {
    match outcome {
        Outcome::Failed {
            failure,
            from_target,
        } => ApiError::job_failed(failure, from_target),
        Outcome::Cancelled => ApiError::Cancelled,
        // Success or an in-band failure always come after at least one chunk.
        Outcome::Succeeded | Outcome::FailedInStream => {
            ApiError::TargetUnavailable("the target ended the answer without output".into())
        }
    }
}

/// An error as the `{"error"}` line of a stream whose status already went out: the
/// target's own error body when it sent one, else the message.
fn in_stream(error: ApiError) -> Bytes {
    match error {
        ApiError::Passthrough {
            status,
            content_type,
            body,
        } => {
            let failure = JobFailure {
                status,
                message: String::new(),
            };
            stream_error_line(&failure, Some(&TargetAnswer { content_type, body }))
        }
        other => {
            let failure = JobFailure {
                status: other.status().as_u16(),
                message: other.to_string(),
            };
            stream_error_line(&failure, None)
        }
    }
}

fn with_job_id(mut response: Response, id: JobId) -> Response {
    if let Ok(value) = HeaderValue::from_str(&id.to_string()) {
        response.headers_mut().insert(JOB_ID_HEADER, value);
    }
    response
}

/// Cancels the job when the caller goes away before it ended.
struct CancelOnDrop {
    state: AppState,
    id: JobId,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        // On shutdown a waiting caller is let go, but its job stays queued.
        if !self.armed || self.state.shutdown.is_cancelled() {
            return;
        }
        let (state, id) = (self.state.clone(), self.id);
        tokio::spawn(async move {
            match job_control::cancel_job(&state, id, CancelReason::CallerLeft).await {
                Ok(CancelOutcome::Requested(_)) => {
                    tracing::info!(job = %id, "caller left; running job aborted");
                }
                Ok(CancelOutcome::Cancelled(_)) => {
                    tracing::info!(job = %id, "caller left; queued job cancelled");
                }
                Ok(_) => {}
                Err(error) => tracing::error!(%error, job = %id, "cannot cancel"),
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn priority_of(values: &[&[u8]]) -> Result<i32, String> {
        let mut config = Config::for_upstream("http://127.0.0.1:1", "x.db");
        (config.priority_min, config.priority_max) = (-20, 20);
        let mut headers = HeaderMap::new();
        for value in values {
            headers.append(PRIORITY_HEADER, HeaderValue::from_bytes(value).unwrap());
        }
        requested_priority(&headers, &config).map_err(|error| {
            assert_eq!(error.status(), StatusCode::BAD_REQUEST);
            error.to_string()
        })
    }

    #[test]
    fn the_priority_header_is_one_integer_within_the_range() {
        assert_eq!(priority_of(&[]), Ok(SYNC_PRIORITY));
        assert_eq!(priority_of(&[b"-20"]), Ok(-20));
        assert_eq!(priority_of(&[b"20"]), Ok(20));
        assert_eq!(priority_of(&[b" 7 "]), Ok(7));
        assert_eq!(
            priority_of(&[b"21"]),
            Err(
                "invalid X-Foreman-Priority header \"21\": expected one integer from -20 to 20"
                    .into()
            )
        );
        for bad in [&b"-21"[..], b"high", b"1.5", b"", b"99999999999", b"\xff"] {
            let error = priority_of(&[bad]).unwrap_err();
            assert!(error.contains("from -20 to 20"), "{error}");
        }
        assert_eq!(
            priority_of(&[b"1", b"2"]),
            Err(
                "invalid X-Foreman-Priority header (sent 2 times): expected one integer from -20 to 20"
                    .into()
            )
        );
    }
}
