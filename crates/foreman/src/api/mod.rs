//! HTTP: routing, authentication and the handlers, speaking Ollama's API.
//!
//! Invariant: this is the only module that knows Ollama's JSON and status codes; the
//! queue, scheduler and runners below it see jobs, not requests. Handlers hold no
//! business logic beyond validating and translating.
//!
//! Routes:
//! - queued: `POST /api/chat`, `POST /api/generate` ([`queued`]);
//! - direct to a target, concurrent: `POST /api/embed`, `POST /api/embeddings`,
//!   `POST /api/show` (to a target that has the model), model management
//!   (`/api/pull`, `/api/push`, `/api/create`, `/api/copy`, `DELETE /api/delete`; to
//!   the target `X-Foreman-Target` names when there are several) ([`direct`]);
//! - from the targets' inventory caches, merged: `GET /api/tags`, `GET /api/ps`; plus
//!   `/`, `/api/version`, the public `GET /healthz` and the operator view
//!   `GET /foreman/targets` ([`listing`]);
//! - OpenAI-compatible: `/v1/chat/completions`, `/v1/completions` queued,
//!   `/v1/embeddings`, `/v1/models` direct ([`openai`]); OpenAI's Responses API,
//!   `/v1/responses`, queued ([`responses`]);
//! - Anthropic's Messages API: `/v1/messages`, queued ([`anthropic`]);
//! - async jobs: `POST /jobs`, `GET /jobs`, `GET /jobs/{id}`, events, cancel ([`jobs`]);
//! - API keys (behind the `admin` scope): `GET`/`POST /foreman/keys`,
//!   `DELETE /foreman/keys/{name}`, `GET /foreman/keys/usage` ([`keys`]);
//! - the operator's views: `GET /metrics` (Prometheus), `GET /foreman/status` and the
//!   dashboard `GET /ui` ([`observe`]).
//!
//! Every route, `/healthz` included, is behind Ollama's Host and Origin guard
//! ([`origin_guard`]), as every route of Ollama is.

mod anthropic;
mod auth;
mod batches;
mod body;
mod direct;
mod error;
mod files;
mod health;
mod job_control;
mod jobs;
mod keys;
mod listing;
mod observe;
mod openai;
pub mod origin_guard;
mod query;
mod queued;
mod responses;
mod show_cache;
mod validate;

use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{Method, Uri, header};
use axum::middleware::Next;
use axum::response::Response;
use axum::routing::{delete, get, post};
use foreman_store::Store;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

pub use batches::{batch_object, check_line_body};
pub use error::ApiError;
pub use error::openai_error_type;
pub use jobs::ASYNC_PRIORITY;

use crate::config::Config;
use crate::hub::Hub;
use crate::runner::RunningJobs;
use crate::targets::Targets;

/// Everything a handler may touch; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub hub: Arc<Hub>,
    /// The Ollama servers, each with its client and inventory.
    pub targets: Arc<Targets>,
    pub running: Arc<RunningJobs>,
    /// Rung (all waiters) after every enqueue, to wake the idle runners.
    pub wake: Arc<Notify>,
    /// The runners' dispatcher, for forecasts of when jobs run.
    pub dispatcher: Arc<crate::runner::Dispatcher>,
    /// `/api/show` answers by request body.
    pub show_cache: Arc<show_cache::ShowCache>,
    /// Counters and recent history for `/metrics`, `/foreman/status` and `/ui`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The API keys and `FOREMAN_TOKEN`, for auth and the keys API.
    pub keys: Arc<crate::keys::KeyRing>,
    pub shutdown: CancellationToken,
    /// Rung when a batch is created or cancelled, to wake the batch driver.
    pub batch_kick: Arc<Notify>,
}

#[cfg(test)]
impl AppState {
    /// The state of a foreman with no runners, for unit tests of the routes.
    pub(crate) fn for_test(config: Config, store: Store, targets: Arc<Targets>) -> AppState {
        let metrics: Arc<crate::metrics::Metrics> = Arc::default();
        let running = Arc::new(RunningJobs::default());
        let wake = Arc::new(Notify::new());
        let dispatcher = Arc::new(crate::runner::Dispatcher::new(
            store.clone(),
            targets.clone(),
            running.clone(),
            &crate::runner::RunnerSettings::from_config(&config),
            wake.clone(),
            metrics.clone(),
        ));
        let keys = Arc::new(crate::keys::KeyRing::new(
            store.clone(),
            config.token.as_deref(),
        ));
        AppState {
            config: Arc::new(config),
            keys,
            store,
            hub: Arc::new(Hub::default()),
            targets,
            running,
            wake,
            dispatcher,
            show_cache: Arc::default(),
            metrics,
            shutdown: CancellationToken::new(),
            batch_kick: Arc::default(),
        }
    }
}

/// Room for a multipart body's boundaries and headers around an upload's bytes.
const UPLOAD_OVERHEAD: usize = 64 * 1024;

/// The whole HTTP surface.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(listing::healthz))
        .route("/readyz", get(health::readyz))
        .route("/", get(listing::root))
        .route("/api/version", get(listing::version))
        .route("/api/tags", get(listing::tags))
        .route("/api/ps", get(listing::ps))
        .route("/api/chat", post(queued::chat))
        .route("/api/generate", post(queued::generate))
        .route("/api/embed", post(direct::embed))
        .route("/api/embeddings", post(direct::embeddings))
        .route("/api/show", post(direct::show))
        .route("/api/pull", post(direct::manage))
        .route("/api/push", post(direct::manage))
        .route("/api/create", post(direct::manage))
        .route("/api/copy", post(direct::manage))
        .route("/api/delete", delete(direct::manage))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::models))
        .route("/v1/models/{*model}", get(openai::model))
        .route("/v1/responses", post(responses::responses))
        .route("/v1/messages", post(anthropic::messages))
        .route(
            "/v1/files",
            post(files::upload)
                .layer(DefaultBodyLimit::max(
                    state.config.batch.files_max_bytes + UPLOAD_OVERHEAD,
                ))
                .get(files::list),
        )
        .route("/v1/files/{id}", get(files::get).delete(files::delete))
        .route("/v1/files/{id}/content", get(files::content))
        .route("/v1/batches", post(batches::create).get(batches::list))
        .route("/v1/batches/{id}", get(batches::get))
        .route("/v1/batches/{id}/cancel", post(batches::cancel))
        .route("/jobs", post(jobs::submit).get(jobs::list))
        .route("/jobs/{id}", get(jobs::get).delete(jobs::cancel))
        .route("/jobs/{id}/cancel", post(jobs::cancel))
        .route("/jobs/{id}/events", get(jobs::events))
        .route("/jobs/{id}/artifacts/{name}", get(jobs::artifact))
        .route("/openapi.json", get(listing::openapi))
        .route("/foreman/targets", get(listing::targets))
        .route("/foreman/status", get(observe::status))
        .route("/metrics", get(observe::metrics))
        .route("/foreman/keys", get(keys::list).post(keys::create))
        .route("/foreman/keys/usage", get(keys::usage))
        .route("/foreman/keys/{name}", delete(keys::revoke))
        .route("/ui", get(observe::dashboard))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.config.max_body,
            refuse_oversized,
        ))
        // Outermost, so that no answer (not even a 404 or 405) escapes auth.
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(DefaultBodyLimit::max(state.config.max_body))
        // Outside auth: a preflight carries no token, and a refused page gets nothing.
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(origin_guard::Guard::new(
                state.config.addr,
                &state.config.origins,
            )),
            origin_guard::guard,
        ))
        .with_state(state)
}

/// Unknown paths: Ollama's plain text on its paths, JSON in the family's shape on
/// foreman's own and under `/v1/` ([`error::no_route`]).
async fn not_found(method: Method, uri: Uri) -> Response {
    error::no_route(&method, uri.path())
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    error::wrong_method(&method, uri.path())
}

/// Answers 413 at once to a request whose `Content-Length` is over the body limit,
/// before a byte of its body is read (or waited for).
async fn refuse_oversized(State(limit): State<usize>, request: Request, next: Next) -> Response {
    // Uploads have their own limit (FOREMAN_FILES_MAX_BYTES), counted as they stream.
    if request.uri().path() == "/v1/files" && request.method() == Method::POST {
        return next.run(request).await;
    }
    let declared = request
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.trim().parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit as u64) {
        return ApiError::TooLarge(limit).render(error::Flavor::for_path(request.uri().path()));
    }
    next.run(request).await
}
