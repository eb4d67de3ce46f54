//! Optional bearer-token authentication on every route but `/healthz`.
//!
//! The token comes as `Authorization: Bearer ...`; on Anthropic's Messages route it
//! may also come as `x-api-key`, the header Anthropic's clients send their key in.
//! Tokens are compared in constant time, so response timing says nothing about how
//! much of a guess was right. Without `FOREMAN_TOKEN`, everything is open, as with
//! a local Ollama.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use subtle::ConstantTimeEq;

use super::error::Flavor;
use super::{ApiError, AppState};

/// The one route open without a token, for load balancers and supervisors.
const PUBLIC_PATH: &str = "/healthz";

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
    if request.uri().path() == PUBLIC_PATH {
        return next.run(request).await;
    }
    let flavor = Flavor::for_path(request.uri().path());
    let headers = request.headers();
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    let api_key = (flavor == Flavor::Anthropic)
        .then(|| headers.get(ANTHROPIC_KEY_HEADER))
        .flatten()
        .and_then(|v| v.to_str().ok());
    let presented = bearer.or(api_key).map(str::trim).unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        next.run(request).await
    } else {
        ApiError::Unauthorized.render(flavor)
    }
}
