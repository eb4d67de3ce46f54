//! Optional bearer-token authentication on every route but `/healthz`, `/readyz`, the
//! dashboard's page `/ui` (it holds no data; its calls carry the token), and
//! `/metrics` when `FOREMAN_METRICS_PUBLIC` is set.
//!
//! The token comes as `Authorization: Bearer ...`, the scheme in any case (`bearer`,
//! `BEARER`: RFC 7235 makes auth schemes case-insensitive); on Anthropic's Messages
//! route it may also come as `x-api-key`, the header Anthropic's clients send their
//! key in. Tokens are compared as SHA-256 digests in constant time, so response
//! timing says nothing about how much of a guess was right, nor about the token's
//! length. Without `FOREMAN_TOKEN`, everything is open, as with a local Ollama.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::error::Flavor;
use super::{ApiError, AppState};

/// Open without a token: the health and readiness checks, for load balancers and
/// supervisors, and the dashboard's page.
const PUBLIC_PATHS: [&str; 3] = ["/healthz", "/readyz", "/ui"];

/// Open without a token when `FOREMAN_METRICS_PUBLIC` says so.
const METRICS_PATH: &str = "/metrics";

/// Where Anthropic's clients put their key.
const ANTHROPIC_KEY_HEADER: &str = "x-api-key";

pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = state.config.token.as_deref() else {
        return next.run(request).await;
    };
    let path = request.uri().path();
    if PUBLIC_PATHS.contains(&path) || (path == METRICS_PATH && state.config.metrics_public) {
        return next.run(request).await;
    }
    let flavor = Flavor::for_path(request.uri().path());
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(bearer_credentials);
    let api_key = (flavor == Flavor::Anthropic)
        .then(|| headers.get(ANTHROPIC_KEY_HEADER))
        .flatten()
        .and_then(|v| v.to_str().ok());
    let presented = bearer.or(api_key).map(str::trim).unwrap_or("");
    if same_token(presented, expected) {
        next.run(request).await
    } else {
        ApiError::Unauthorized.render(flavor)
    }
}

/// The credentials of an `Authorization` value of the Bearer scheme, matched in any
/// case: `credentials = auth-scheme [ 1*SP token68 ]` (RFC 7235, section 2.1).
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| credentials.trim_start_matches(' '))
}

/// Compares digests, which have one length, so neither the time taken nor an early
/// exit on a length mismatch tells a guess's length or prefix.
fn same_token(presented: &str, expected: &str) -> bool {
    let presented = Sha256::digest(presented.as_bytes());
    let expected = Sha256::digest(expected.as_bytes());
    bool::from(presented.as_slice().ct_eq(expected.as_slice()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bearer_scheme_is_matched_in_any_case() {
        for (value, credentials) in [
            ("Bearer s3cret", Some("s3cret")),
            ("bearer s3cret", Some("s3cret")),
            ("BEARER s3cret", Some("s3cret")),
            ("bEaReR s3cret", Some("s3cret")),
            ("Bearer   s3cret", Some("s3cret")),
            ("Bearer", None),
            ("Bearers3cret", None),
            ("Basic czNjcmV0", None),
            ("Bear s3cret", None),
            ("Bearerx s3cret", None),
        ] {
            assert_eq!(bearer_credentials(value), credentials, "{value:?}");
        }
    }

    #[test]
    fn tokens_match_only_when_equal() {
        assert!(same_token("s3cret", "s3cret"));
        assert!(!same_token("s3cre", "s3cret"));
        assert!(!same_token("s3cret ", "s3cret"));
        assert!(!same_token("S3CRET", "s3cret"));
        assert!(!same_token("", "s3cret"));
    }
}
