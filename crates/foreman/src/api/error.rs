//! The one place where failures become HTTP answers.
//!
//! Every route returns `Result<_, ApiError>`; this module picks the status and writes
//! the body in the shape of the route's API family ([`Flavor`]): Ollama's
//! `{"error":"..."}`, OpenAI's on `/v1`, Anthropic's on `/v1/messages`, each with
//! `application/json; charset=utf-8`, which the official clients parse. Internal failures are logged here once and shown to the
//! client only as a short message.

use axum::extract::rejection::{BytesRejection, FailedToBufferBody, PathRejection, QueryRejection};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use foreman_store::JobFailure;
use serde_json::json;
use thiserror::Error;

use crate::hub::{CancelReason, TargetAnswer};

pub const JSON_UTF8: &str = "application/json; charset=utf-8";

/// Seconds a client is asked to wait when the queue is full.
const RETRY_AFTER_SECONDS: &str = "5";

#[derive(Debug, Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    /// A request Ollama accepts but its runner refuses once scheduled (a `format`
    /// or an option of the wrong type): a 500 there, so a 500 here too.
    #[error("{0}")]
    RunnerRefused(String),
    #[error("model '{0}' not found")]
    ModelNotFound(String),
    /// An `X-Foreman-Priority` header that is not one integer within the configured range.
    #[error("invalid X-Foreman-Priority header {value}: expected one integer from {min} to {max}")]
    InvalidPriority { value: String, min: i32, max: i32 },
    #[error("job {0} not found")]
    JobNotFound(String),
    #[error("{0}")]
    ArtifactNotFound(String),
    /// OpenAI's words for an unknown file or batch id, e.g. `No such File object: file-x`.
    #[error("No such {kind} object: {id}")]
    NoSuchObject { kind: &'static str, id: String },
    #[error("Idempotency-Key was already used for a different request")]
    IdempotencyMismatch,
    #[error("job {id} is already {state}")]
    AlreadyFinished { id: String, state: &'static str },
    #[error("unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    /// An API key's limit was reached; `retry_after` seconds until it may ask again.
    #[error("{message}")]
    RateLimited { message: String, retry_after: u64 },
    /// The keys API was asked about a key that does not exist (or is revoked).
    #[error("{0}")]
    KeyNotFound(String),
    #[error("{0}")]
    KeyExists(String),
    #[error("request body too large: the limit is {0} bytes")]
    TooLarge(usize),
    /// The client stopped sending its request body for longer than the body timeout.
    #[error("timed out reading the request body")]
    BodyTimeout,
    /// A path that none of foreman's routes of its API family has.
    #[error("no route for {method} {path}")]
    NoRoute { method: String, path: String },
    /// A route that exists, asked with a method it does not take.
    #[error("method {method} is not allowed for {path}")]
    MethodNotAllowed { method: String, path: String },
    /// Ollama's own text for a full queue (two spaces after `again.`).
    #[error("server busy, please try again.  maximum pending requests exceeded")]
    QueueFull,
    #[error("foreman is shutting down; retry shortly")]
    ShuttingDown,
    /// `/readyz`: foreman cannot take work now; the reasons, for the operator.
    #[error("not ready: {0}")]
    NotReady(String),
    #[error("request canceled")]
    Cancelled,
    #[error("{0}")]
    TargetUnavailable(String),
    /// Every target that could run the caller's job has been down too long; the
    /// job is cancelled, since its caller no longer waits.
    #[error("{0}; the job was cancelled")]
    TargetsDown(#[from] crate::targets::TargetsDown),
    /// A request for one target (model management) did not name a known one.
    #[error(transparent)]
    TargetChoice(#[from] crate::targets::TargetChoiceError),
    #[error("internal error: the job store failed")]
    Store(foreman_store::Error),
    /// A job failed without an answer of the target to replay (it could not be
    /// reached, timed out, broke off, or foreman gave the job up).
    #[error("{message}")]
    JobFailed { status: u16, message: String },
    /// The target's own answer, replayed as it came.
    #[error("the target answered {status}")]
    Passthrough {
        status: u16,
        content_type: String,
        body: Bytes,
    },
}

impl From<foreman_store::Error> for ApiError {
    /// A full queue is the caller's 503 (Ollama's own answer); anything else from the
    /// store is foreman's fault.
    fn from(error: foreman_store::Error) -> ApiError {
        match error {
            foreman_store::Error::QueueFull { .. } => ApiError::QueueFull,
            other => ApiError::Store(other),
        }
    }
}

impl ApiError {
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest(_)
            | ApiError::InvalidPriority { .. }
            | ApiError::TargetChoice(_) => StatusCode::BAD_REQUEST,
            ApiError::ModelNotFound(_)
            | ApiError::JobNotFound(_)
            | ApiError::ArtifactNotFound(_)
            | ApiError::NoSuchObject { .. } => StatusCode::NOT_FOUND,
            ApiError::IdempotencyMismatch | ApiError::AlreadyFinished { .. } => {
                StatusCode::CONFLICT
            }
            ApiError::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::KeyNotFound(_) => StatusCode::NOT_FOUND,
            ApiError::KeyExists(_) => StatusCode::CONFLICT,
            ApiError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            ApiError::NoRoute { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::QueueFull
            | ApiError::ShuttingDown
            | ApiError::TargetsDown(_)
            | ApiError::NotReady(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Cancelled => StatusCode::from_u16(499).expect("499 is a valid status"),
            ApiError::TargetUnavailable(_) => StatusCode::BAD_GATEWAY,
            ApiError::Store(_) | ApiError::RunnerRefused(_) => StatusCode::INTERNAL_SERVER_ERROR,
            ApiError::Passthrough { status, .. } | ApiError::JobFailed { status, .. } => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::BAD_GATEWAY)
            }
        }
    }

    /// The answer to a caller whose job failed: the target's own error answer when
    /// it sent one, else the failure in the caller's error shape.
    pub fn job_failed(failure: JobFailure, from_target: Option<TargetAnswer>) -> ApiError {
        match from_target {
            Some(answer) => ApiError::Passthrough {
                status: failure.status,
                content_type: answer.content_type,
                body: answer.body,
            },
            None => ApiError::JobFailed {
                status: failure.status,
                message: failure.message,
            },
        }
    }
}

/// How a cancelled job's reason is kept and shown (its `error`): 499, as Ollama
/// answers a request cancelled while queued, when a caller or a cancel call ended it;
/// 503 when foreman gave it up (shutting down, or its targets down).
pub fn cancel_failure(reason: CancelReason) -> JobFailure {
    let (status, message) = match reason {
        CancelReason::CallerLeft => (499, "cancelled: the caller went away"),
        CancelReason::CancelCall => (499, "cancelled by a cancel call"),
        CancelReason::Shutdown => (503, "cancelled: foreman was shutting down"),
        CancelReason::TargetsDown => (
            503,
            "cancelled: every target that could run it was down too long",
        ),
    };
    JobFailure {
        status,
        message: message.to_string(),
    }
}

/// The last line of a native (NDJSON) stream whose job failed after its answer began:
/// Ollama ends such a stream with one `{"error":"..."}` line, with the target's own
/// body when it sent one.
pub fn stream_error_line(failure: &JobFailure, from_target: Option<&TargetAnswer>) -> Bytes {
    let mut line = match from_target {
        Some(answer) => answer.body.to_vec(),
        None => json!({ "error": failure.message }).to_string().into_bytes(),
    };
    line.retain(|b| *b != b'\n');
    line.push(b'\n');
    Bytes::from(line)
}

impl ApiError {
    /// A request body that could not be read: over `limit` (413), silent past the
    /// body timeout (408), or broken off (400).
    pub fn from_body(rejection: BytesRejection, limit: usize) -> ApiError {
        if let BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) =
            rejection
        {
            return ApiError::TooLarge(limit);
        }
        let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&rejection);
        while let Some(error) = cause {
            if error.is::<tower_http::timeout::TimeoutError>() {
                return ApiError::BodyTimeout;
            }
            cause = error.source();
        }
        ApiError::BadRequest(rejection.body_text())
    }
}

/// A query string that does not fit the route's parameters (`/jobs?limit=abc`).
impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> ApiError {
        let text = rejection.body_text();
        let detail = text
            .strip_prefix("Failed to deserialize query string: ")
            .unwrap_or(&text);
        ApiError::BadRequest(format!("invalid query string: {detail}"))
    }
}

/// A path segment that does not fit the route's parameter (`/jobs/%FF`: not UTF-8).
impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> ApiError {
        ApiError::BadRequest(format!("invalid path: {}", rejection.body_text()))
    }
}

/// The answer to a request no route takes: as Ollama's router words it (plain
/// `404 page not found`) on the paths Ollama has, in the family's JSON on foreman's
/// own paths (`/jobs`, `/foreman`, ...) and under `/v1/`.
pub fn no_route(method: &Method, path: &str) -> Response {
    match unrouted_flavor(path) {
        Some(flavor) => ApiError::NoRoute {
            method: method.to_string(),
            path: path.to_string(),
        }
        .render(flavor),
        None => plain_text(StatusCode::NOT_FOUND, "404 page not found"),
    }
}

/// The answer to a route asked with a method it does not take, chosen as
/// [`no_route`] chooses (Ollama's router answers `405 method not allowed`).
pub fn wrong_method(method: &Method, path: &str) -> Response {
    match unrouted_flavor(path) {
        Some(flavor) => ApiError::MethodNotAllowed {
            method: method.to_string(),
            path: path.to_string(),
        }
        .render(flavor),
        None => plain_text(StatusCode::METHOD_NOT_ALLOWED, "405 method not allowed"),
    }
}

/// Paths of foreman's own API (not Ollama's): their errors are JSON like those of
/// the jobs API.
const FOREMAN_PATHS: [&str; 5] = ["/jobs", "/foreman", "/healthz", "/readyz", "/openapi.json"];

/// The error shape for a request no handler took; `None` where Ollama answers in
/// plain text, that is on its native paths.
fn unrouted_flavor(path: &str) -> Option<Flavor> {
    let foreman_own = FOREMAN_PATHS.iter().any(|own| {
        path.strip_prefix(own)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
    });
    if path.starts_with("/v1/") {
        Some(Flavor::for_path(path))
    } else if foreman_own {
        Some(Flavor::Ollama)
    } else {
        None
    }
}

fn plain_text(status: StatusCode, text: &'static str) -> Response {
    let mut response = (status, text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
    response
}

/// Which API's error shape to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `{"error":"..."}`.
    Ollama,
    /// `{"error":{"message","type","param","code"}}`, as Ollama's `/v1` routes answer.
    OpenAi,
    /// `{"type":"error","error":{"type","message"},"request_id"}`, as Ollama's
    /// `/v1/messages` answers (`anthropic.NewError` in Ollama's `anthropic/anthropic.go`).
    Anthropic,
}

impl Flavor {
    /// The error shape of the API family a path belongs to.
    pub fn for_path(path: &str) -> Flavor {
        if path == "/v1/messages" {
            Flavor::Anthropic
        } else if path.starts_with("/v1/") {
            Flavor::OpenAi
        } else {
            Flavor::Ollama
        }
    }
}

/// OpenAI's error type for a status: the `/v1` answers' and a batch's error lines'.
pub fn openai_error_type(status: u16) -> &'static str {
    match status {
        400 | 413 | 422 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        _ => "api_error",
    }
}

/// Anthropic's error type for a status, as `anthropic.NewError` maps it.
fn anthropic_error_type(status: StatusCode) -> &'static str {
    match status.as_u16() {
        400 | 413 => "invalid_request_error",
        401 => "authentication_error",
        403 => "permission_error",
        404 => "not_found_error",
        429 => "rate_limit_error",
        503 | 529 => "overloaded_error",
        _ => "api_error",
    }
}

/// A request id in Ollama's form, `req_` and 24 hex digits (random, as Ollama's).
fn request_id() -> String {
    let bits = foreman_store::JobId::generate().ulid().0;
    format!("req_{:024x}", bits & ((1u128 << 96) - 1))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        self.render(Flavor::Ollama)
    }
}

impl ApiError {
    /// The answer in the given API's shape; the target's own answers pass unchanged.
    pub fn render(self, flavor: Flavor) -> Response {
        let status = self.status();
        if let ApiError::Passthrough {
            content_type, body, ..
        } = self
        {
            let mut response = (status, body).into_response();
            if let Ok(value) = HeaderValue::from_str(&content_type) {
                response.headers_mut().insert(header::CONTENT_TYPE, value);
            }
            return response;
        }
        if let ApiError::Store(error) = &self {
            tracing::error!(%error, "store failure");
        }
        let body = match flavor {
            Flavor::Ollama => json!({ "error": self.to_string() }),
            Flavor::OpenAi => {
                let kind = openai_error_type(status.as_u16());
                json!({"error": {"message": self.to_string(), "type": kind, "param": null, "code": null}})
            }
            Flavor::Anthropic => json!({
                "type": "error",
                "error": {"type": anthropic_error_type(status), "message": self.to_string()},
                "request_id": request_id(),
            }),
        };
        let mut response = (status, body.to_string()).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(JSON_UTF8));
        match self {
            ApiError::QueueFull | ApiError::ShuttingDown => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from_static(RETRY_AFTER_SECONDS),
                );
            }
            ApiError::Unauthorized => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            ApiError::RateLimited { retry_after, .. } => {
                headers.insert(header::RETRY_AFTER, HeaderValue::from(retry_after));
            }
            _ => {}
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(response: Response) -> (StatusCode, String, serde_json::Value) {
        let status = response.status();
        let content_type = response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let bytes = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        (
            status,
            content_type,
            serde_json::from_slice(&bytes).unwrap(),
        )
    }

    #[tokio::test]
    async fn each_family_gets_its_own_error_shape() {
        let (status, content_type, body) =
            body_of(ApiError::ModelNotFound("m".into()).render(Flavor::Anthropic)).await;
        assert_eq!(
            (status, content_type.as_str()),
            (StatusCode::NOT_FOUND, JSON_UTF8)
        );
        assert_eq!(body["type"], "error");
        assert_eq!(
            body["error"],
            json!({"type": "not_found_error", "message": "model 'm' not found"})
        );
        let id = body["request_id"].as_str().unwrap();
        assert!(id.starts_with("req_") && id.len() == 28, "{id}");

        let (_, _, body) = body_of(ApiError::QueueFull.render(Flavor::Anthropic)).await;
        assert_eq!(body["error"]["type"], "overloaded_error");
        let (_, _, body) =
            body_of(ApiError::BadRequest("messages is required".into()).render(Flavor::Anthropic))
                .await;
        assert_eq!(body["error"]["type"], "invalid_request_error");

        let (_, _, body) =
            body_of(ApiError::ModelNotFound("m".into()).render(Flavor::OpenAi)).await;
        assert_eq!(
            body,
            json!({"error": {"message": "model 'm' not found", "type": "not_found_error", "param": null, "code": null}})
        );
        let (_, _, body) =
            body_of(ApiError::ModelNotFound("m".into()).render(Flavor::Ollama)).await;
        assert_eq!(body, json!({"error": "model 'm' not found"}));
    }

    #[test]
    fn paths_pick_their_family() {
        assert_eq!(Flavor::for_path("/v1/messages"), Flavor::Anthropic);
        assert_eq!(Flavor::for_path("/v1/responses"), Flavor::OpenAi);
        assert_eq!(Flavor::for_path("/v1/chat/completions"), Flavor::OpenAi);
        assert_eq!(Flavor::for_path("/api/chat"), Flavor::Ollama);
    }
}
