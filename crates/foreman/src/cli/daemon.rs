//! The daemon's HTTP API as the client commands (`foreman jobs`, `foreman batch`) call
//! it: one HTTP client with the connection's URL and token, and one way of turning a
//! failed call into the error a person reads.

use serde_json::Value;

use super::Connection;
use super::output::CliError;

/// A running foreman, reached through `connection`.
pub(super) struct Daemon {
    client: reqwest::Client,
    pub connection: Connection,
}

impl Daemon {
    pub fn new(connection: Connection) -> Result<Daemon, CliError> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .build()
            .map_err(|e| CliError::failed(e.to_string()))?;
        Ok(Daemon { client, connection })
    }

    /// A request to the daemon's `path` with `query`, carrying the token when one is set.
    pub fn request(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
    ) -> Result<reqwest::RequestBuilder, CliError> {
        self.connection.request(&self.client, method, path, query)
    }

    /// Sends the request; an answer of 400 or more becomes the error it carries.
    pub async fn send(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, CliError> {
        let response = request.send().await.map_err(|e| {
            CliError::failed(format!(
                "cannot reach foreman at {}: {e}",
                self.connection.url
            ))
        })?;
        let status = response.status().as_u16();
        if status < 400 {
            return Ok(response);
        }
        let text = response.text().await.unwrap_or_default();
        Err(CliError::failed(format!(
            "{} (HTTP {status})",
            error_message(&text)
        )))
    }

    /// Sends the request and reads its JSON answer.
    pub async fn json(&self, request: reqwest::RequestBuilder) -> Result<Value, CliError> {
        Ok(self.answer(request).await?.1)
    }

    /// A call with an optional JSON `body` and extra `headers`: the answer's status and
    /// JSON.
    pub async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, &str)],
        body: Option<&Value>,
        headers: &[(&str, String)],
    ) -> Result<(u16, Value), CliError> {
        let mut request = self.request(method, path, query)?;
        for (name, value) in headers {
            request = request.header(*name, value);
        }
        if let Some(body) = body {
            request = request.json(body);
        }
        self.answer(request).await
    }

    async fn answer(&self, request: reqwest::RequestBuilder) -> Result<(u16, Value), CliError> {
        let response = self.send(request).await?;
        let status = response.status().as_u16();
        let value = response.json().await.map_err(|e| {
            CliError::failed(format!("foreman answered {status} with no JSON: {e}"))
        })?;
        Ok((status, value))
    }
}

/// The message of an error body: Ollama's and foreman's `{"error":"..."}`, OpenAI's
/// `{"error":{"message"}}` under `/v1`, else the text (a proxy's page).
fn error_message(body: &str) -> String {
    let parsed: Option<Value> = serde_json::from_str(body).ok();
    let from_json = parsed.as_ref().and_then(|value| {
        value["error"]["message"]
            .as_str()
            .or_else(|| value["error"].as_str())
            .map(str::to_string)
    });
    from_json.unwrap_or_else(|| {
        let text = body.trim();
        if text.is_empty() {
            "unknown error".to_string()
        } else {
            text.chars().take(200).collect()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_read_in_either_shape() {
        assert_eq!(
            error_message(
                r#"{"error":{"message":"No such batch","type":"invalid_request_error"}}"#
            ),
            "No such batch"
        );
        assert_eq!(error_message(r#"{"error":"unauthorized"}"#), "unauthorized");
        assert_eq!(error_message("Bad Gateway"), "Bad Gateway");
        assert_eq!(error_message(""), "unknown error");
    }
}
