//! Optional bearer-token authentication on every route but `/healthz`.
//!
//! Tokens are compared in constant time, so response timing says nothing about how
//! much of a guess was right. Without `FOREMAN_TOKEN`, everything is open, as with
//! a local Ollama.

use axum::extract::{Request, State};
use axum::http::header;
use axum::middleware::Next;
use axum::response::Response;

use subtle::ConstantTimeEq;

use super::{ApiError, AppState};

/// The one route open without a token, for load balancers and supervisors.
const PUBLIC_PATH: &str = "/healthz";

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
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .unwrap_or("");
    if bool::from(presented.as_bytes().ct_eq(expected.as_bytes())) {
        next.run(request).await
    } else {
        ApiError::Unauthorized.render(super::error::Flavor::for_path(request.uri().path()))
    }
}
