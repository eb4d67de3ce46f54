//! What the routes that enqueue jobs and the routes that follow them share: admission
//! to the queue, waiting for a job's next feed event, and cancelling a job. The sync
//! routes (`queued.rs`) and the jobs API (`jobs.rs`) both use these, and neither
//! imports the other.

use axum::http::Extensions;
use foreman_store::{CancelOutcome, JobCaller, JobId, JobKind};
use serde_json::{Map, Value};

use super::error::cancel_failure;
use super::{ApiError, AppState};
use crate::caller::Caller;
use crate::clock::now_ms;
use crate::hub::{CancelReason, FeedEvent, Outcome, Subscription};
use crate::scheduler::load_key;
use crate::targets::ModelCheck;

/// Whether a new job for `model` may join the queue: the model must exist on a
/// target and foreman must not be shutting down. Every route that enqueues asks this
/// first; whether the queue has room is decided by the enqueue itself
/// (`Store::enqueue_within`, `FOREMAN_MAX_QUEUE`), exactly under any concurrency.
pub(super) async fn admit(state: &AppState, model: &str) -> Result<(), ApiError> {
    if state.targets.check_model(model).await == ModelCheck::Unknown {
        return Err(ApiError::ModelNotFound(model.to_owned()));
    }
    if state.shutdown.is_cancelled() {
        return Err(ApiError::ShuttingDown);
    }
    Ok(())
}

/// Whose job a request enqueues: the [`Caller`] authentication put in its extensions,
/// as the store records it (name and weight). Every route that enqueues takes its
/// job's `caller` from here; `None` when foreman runs open.
pub(crate) fn caller_of(extensions: &Extensions) -> Option<JobCaller> {
    Caller::of(extensions).map(|caller| JobCaller {
        name: caller.name.clone(),
        weight: caller.weight.max(1),
    })
}

/// The `webhook` field of a request that queues work (a job, a batch): absent or null,
/// or a URL the webhook address policy allows, and only when foreman can sign
/// deliveries (`FOREMAN_WEBHOOK_SECRET`).
pub(super) async fn requested_webhook(
    state: &AppState,
    field: Option<&Value>,
) -> Result<Option<String>, ApiError> {
    match field {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(url)) => {
            if state.config.webhook_key.is_none() {
                return Err(ApiError::BadRequest(
                    "webhooks are off: foreman needs FOREMAN_WEBHOOK_SECRET to sign them".into(),
                ));
            }
            crate::webhook::AddressPolicy::from_config(&state.config)
                .check(url)
                .await
                .map_err(ApiError::BadRequest)?;
            Ok(Some(url.clone()))
        }
        Some(_) => Err(ApiError::BadRequest("webhook must be a URL string".into())),
    }
}

/// What a job is queued with: its payload and its load options (see
/// [`load_key`](crate::scheduler::load_key)). A pin for the model
/// (`FOREMAN_PIN_OPTIONS`) rewrites the client's runner options first; otherwise the
/// payload is `raw`, the client's bytes, untouched.
pub(super) fn queued_body(
    state: &AppState,
    kind: JobKind,
    model: &str,
    fields: &Map<String, Value>,
    raw: String,
) -> (String, String) {
    match load_key::apply_pins(&state.config.pins, kind, model, fields) {
        Some(pinned) => {
            let options = load_key::load_options(kind, &pinned);
            (Value::Object(pinned).to_string(), options)
        }
        None => (raw, load_key::load_options(kind, fields)),
    }
}

/// The next feed event; `None` when foreman is shutting down and this job is not
/// running (it stays queued for the next start).
pub(super) async fn next_event(
    state: &AppState,
    subscription: &mut Subscription,
) -> Option<FeedEvent> {
    tokio::select! {
        event = subscription.next() => Some(event),
        _ = state.shutdown.cancelled() => {
            if state.running.contains(subscription.id()) {
                // The runner finishes or requeues it within the grace period.
                Some(subscription.next().await)
            } else {
                None
            }
        }
    }
}

/// Cancels a job in any state, for `reason`: a queued one at once, a running one by
/// aborting its upstream request. Shared with the sync routes, whose callers cancel
/// by leaving. The reason is stored as the job's error: at once for a queued job, with
/// its end for a running one.
pub(super) async fn cancel_job(
    state: &AppState,
    id: JobId,
    reason: CancelReason,
) -> Result<CancelOutcome, foreman_store::Error> {
    let outcome = state
        .store
        .cancel(id, now_ms(), cancel_failure(reason))
        .await?;
    match &outcome {
        CancelOutcome::Requested(_) => {
            state.running.cancel(id);
        }
        CancelOutcome::Cancelled(job) => {
            state.metrics.finished(job);
            // Nothing else tells this job's callers and waiters: no runner had it.
            state.hub.finish(id, Outcome::Cancelled);
            state.hub.job_changed(id);
        }
        CancelOutcome::AlreadyFinished(_) | CancelOutcome::NotFound => {}
    }
    Ok(outcome)
}
