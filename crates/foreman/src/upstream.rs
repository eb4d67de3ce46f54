//! The client for the GPU target: an Ollama server (or the simulator).
//!
//! It sends bodies through untouched and classifies what can go wrong, because the
//! runner's retry decision rests on it: a target that cannot be reached, times out,
//! breaks a connection or answers 503/429/502/504 is worth trying again; an HTTP answer
//! such as 400 or 404 is final and goes back to the caller as it came.

use std::time::Duration;

use bytes::Bytes;
use foreman_store::JobKind;
use futures::{Stream, StreamExt};
use thiserror::Error;

/// What went wrong talking to the target.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum UpstreamError {
    #[error("cannot reach the target: {0}")]
    Unreachable(String),
    #[error("the target did not answer in time: {0}")]
    Timeout(String),
    #[error("the connection to the target broke: {0}")]
    Broken(String),
    /// The target answered with a non-2xx status; its body is kept as it came.
    #[error("the target answered {status}")]
    Status {
        status: u16,
        content_type: String,
        body: Bytes,
    },
}

impl UpstreamError {
    /// True when a later attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            UpstreamError::Unreachable(_)
            | UpstreamError::Timeout(_)
            | UpstreamError::Broken(_) => true,
            UpstreamError::Status { status, .. } => matches!(status, 429 | 502 | 503 | 504),
        }
    }

    /// The status a caller should see: the target's own, or 502 when it never answered.
    pub fn status(&self) -> u16 {
        match self {
            UpstreamError::Status { status, .. } => *status,
            UpstreamError::Timeout(_) => 504,
            _ => 502,
        }
    }

    /// The error text, taken from an Ollama-shaped body when there is one.
    pub fn message(&self) -> String {
        match self {
            UpstreamError::Status { body, .. } => serde_json::from_slice::<serde_json::Value>(body)
                .ok()
                .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_string))
                .unwrap_or_else(|| String::from_utf8_lossy(body).trim().to_string()),
            other => other.to_string(),
        }
    }

    fn from_reqwest(error: reqwest::Error) -> UpstreamError {
        let text = error_chain(&error);
        if error.is_timeout() {
            UpstreamError::Timeout(text)
        } else if error.is_connect() {
            UpstreamError::Unreachable(text)
        } else {
            UpstreamError::Broken(text)
        }
    }
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(inner) = source {
        text.push_str(": ");
        text.push_str(&inner.to_string());
        source = inner.source();
    }
    text
}

/// A 2xx answer whose body is still arriving.
pub struct UpstreamResponse {
    pub status: u16,
    pub content_type: String,
    pub body: std::pin::Pin<Box<dyn Stream<Item = Result<Bytes, UpstreamError>> + Send>>,
}

/// A pooled HTTP client bound to one target.
#[derive(Clone)]
pub struct Upstream {
    client: reqwest::Client,
    base: String,
}

impl Upstream {
    /// `read_timeout` is the longest silence tolerated mid-request (a model load is
    /// silence, so it must be generous).
    pub fn new(base: &str, read_timeout: Duration) -> Upstream {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(Duration::from_secs(5))
            .read_timeout(read_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .expect("the HTTP client builds");
        Upstream {
            client,
            base: base.trim_end_matches('/').to_string(),
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request and returns the raw answer, whatever its status.
    pub async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Bytes>,
    ) -> Result<reqwest::Response, UpstreamError> {
        let mut request = self.client.request(method, format!("{}{path}", self.base));
        if let Some(body) = body {
            request = request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body);
        }
        request.send().await.map_err(UpstreamError::from_reqwest)
    }

    /// Starts a job on the target: its body goes, as the client sent it, to the route
    /// the client called (see [`route_of`]).
    pub async fn start_job(
        &self,
        kind: JobKind,
        body: Bytes,
    ) -> Result<UpstreamResponse, UpstreamError> {
        self.start(route_of(kind), body).await
    }

    /// POSTs a JSON body; a 2xx answer streams back, anything else is an error with
    /// the target's body read in full.
    pub async fn start(&self, path: &str, body: Bytes) -> Result<UpstreamResponse, UpstreamError> {
        let response = self.send(reqwest::Method::POST, path, Some(body)).await?;
        into_stream(response).await
    }

    /// GETs a path and reads the whole 2xx body.
    pub async fn get(&self, path: &str, timeout: Duration) -> Result<Bytes, UpstreamError> {
        let call = async {
            let response = self.send(reqwest::Method::GET, path, None).await?;
            let mut answer = into_stream(response).await?;
            let mut body = Vec::new();
            while let Some(chunk) = answer.body.next().await {
                body.extend_from_slice(&chunk?);
            }
            Ok(Bytes::from(body))
        };
        tokio::time::timeout(timeout, call)
            .await
            .unwrap_or_else(|_| Err(UpstreamError::Timeout(format!("GET {path}"))))
    }
}

async fn into_stream(response: reqwest::Response) -> Result<UpstreamResponse, UpstreamError> {
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/json")
        .to_string();
    if !(200..300).contains(&status) {
        let body = response
            .bytes()
            .await
            .map_err(UpstreamError::from_reqwest)?;
        return Err(UpstreamError::Status {
            status,
            content_type,
            body,
        });
    }
    let body = response
        .bytes_stream()
        .map(|chunk| chunk.map_err(UpstreamError::from_reqwest));
    Ok(UpstreamResponse {
        status,
        content_type,
        body: Box::pin(body),
    })
}

/// The target's route for a job of `kind`: the route its client called, since the
/// target (Ollama and its middleware) does any translation itself.
pub fn route_of(kind: JobKind) -> &'static str {
    match kind {
        JobKind::Chat => "/api/chat",
        JobKind::Generate => "/api/generate",
        JobKind::OpenAiChat => "/v1/chat/completions",
        JobKind::OpenAiCompletion => "/v1/completions",
        JobKind::OpenAiResponses => "/v1/responses",
        JobKind::Embed => "/api/embed",
        JobKind::OpenAiEmbedding => "/v1/embeddings",
        JobKind::AnthropicMessages => "/v1/messages",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_errors_are_transport_failures_and_busy_answers() {
        let status = |status: u16| UpstreamError::Status {
            status,
            content_type: "application/json".into(),
            body: Bytes::from_static(br#"{"error":"model 'x' not found"}"#),
        };
        assert!(UpstreamError::Unreachable("refused".into()).is_retryable());
        assert!(UpstreamError::Broken("reset".into()).is_retryable());
        assert!(status(503).is_retryable());
        assert!(!status(404).is_retryable());
        assert!(!status(400).is_retryable());
        assert!(!status(500).is_retryable());
        assert_eq!(status(404).message(), "model 'x' not found");
        assert_eq!(UpstreamError::Unreachable("x".into()).status(), 502);
    }
}
