//! Response building in Ollama's exact wire forms: content types, timestamps,
//! NDJSON and SSE bodies, and both error shapes.
//!
//! Every handler answers through these helpers, so the details that clients key on
//! (`application/json; charset=utf-8`, `application/x-ndjson`, `{"error":"..."}` versus
//! OpenAI's `{"error":{"message",...}}`) live in one place.

use std::time::SystemTime;

use axum::body::Body;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::Stream;
use serde_json::{Value, json};

/// Gin's `c.JSON` content type.
pub const JSON_UTF8: &str = "application/json; charset=utf-8";
/// What Ollama sets itself before writing JSON: an error of a stream before its first
/// line (server/routes.go `streamResponse`), the one answer of a progress route with
/// `"stream": false` (`waitForStream`), and everything the `/v1` middleware rewrites
/// from a native answer (middleware/openai.go writers). Gin's `c.JSON` keeps a type
/// already set, and gin writes headers only with the first byte of the body.
pub const JSON: &str = "application/json";
pub const NDJSON: &str = "application/x-ndjson";
pub const EVENT_STREAM: &str = "text/event-stream";

/// Ollama's 503 text (two spaces after `again.`).
pub const BUSY_MESSAGE: &str = "server busy, please try again.  maximum pending requests exceeded";

/// An error before any output: a status and Ollama's message.
#[derive(Debug, Clone, PartialEq)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// [`JSON_UTF8`] unless the error is written where Ollama sets [`JSON`].
    pub content_type: &'static str,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            message: message.into(),
            content_type: JSON_UTF8,
        }
    }

    /// The same error with Ollama's own [`JSON`] content type instead of gin's.
    pub fn plain_json(mut self) -> ApiError {
        self.content_type = JSON;
        self
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    pub fn busy() -> ApiError {
        ApiError::new(StatusCode::SERVICE_UNAVAILABLE, BUSY_MESSAGE)
    }

    /// The same error in OpenAI's shape, as Ollama's `/v1` middleware writes it.
    pub fn openai(self) -> Response {
        let kind = match self.status {
            StatusCode::BAD_REQUEST => "invalid_request_error",
            StatusCode::NOT_FOUND => "not_found_error",
            _ => "api_error",
        };
        let body =
            json!({"error": {"message": self.message, "type": kind, "param": null, "code": null}});
        json_response_as(self.content_type, self.status, &body)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        json_response_as(
            self.content_type,
            self.status,
            &json!({ "error": self.message }),
        )
    }
}

/// A JSON body with gin's content type.
pub fn json_response(status: StatusCode, body: &Value) -> Response {
    json_response_as(JSON_UTF8, status, body)
}

/// A JSON body with the given content type.
pub fn json_response_as(content_type: &'static str, status: StatusCode, body: &Value) -> Response {
    let mut response = (status, body.to_string()).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A streamed 200 body with the given content type.
pub fn stream_response<S>(content_type: &'static str, body: S) -> Response
where
    S: Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static,
{
    let mut response = Body::from_stream(body).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// One NDJSON line.
pub fn ndjson_line(value: &Value) -> Bytes {
    let mut line = value.to_string().into_bytes();
    line.push(b'\n');
    Bytes::from(line)
}

/// One SSE frame, `data: <json>\n\n`.
pub fn sse_frame(data: &str) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// Go's RFC3339Nano in UTC: nanoseconds with trailing zeros trimmed, `Z` suffix.
pub fn timestamp(at: SystemTime) -> String {
    let full = humantime::format_rfc3339_nanos(at).to_string();
    let Some((head, fraction)) = full.trim_end_matches('Z').split_once('.') else {
        return full;
    };
    let fraction = fraction.trim_end_matches('0');
    if fraction.is_empty() {
        format!("{head}Z")
    } else {
        format!("{head}.{fraction}Z")
    }
}

/// Seconds since the Unix epoch, for OpenAI's `created`.
pub fn unix_seconds(at: SystemTime) -> u64 {
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn timestamps_trim_trailing_zeros() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_nanos(1_691_177_365_499_127_000);
        assert_eq!(timestamp(at), "2023-08-04T19:29:25.499127Z");
        let whole = SystemTime::UNIX_EPOCH + Duration::from_secs(1_691_177_365);
        assert_eq!(timestamp(whole), "2023-08-04T19:29:25Z");
    }
}
