//! Authentication and each key's rights on every route but `/healthz`, `/readyz`, the
//! dashboard's page `/ui` (it holds no data; its calls carry the key), and `/metrics`
//! when `FOREMAN_METRICS_PUBLIC` is set.
//!
//! The secret comes as `Authorization: Bearer ...`, the scheme in any case (`bearer`,
//! `BEARER`: RFC 7235 makes auth schemes case-insensitive); on Anthropic's Messages
//! route it may also come as `x-api-key`, the header Anthropic's clients send their
//! key in. It is either `FOREMAN_TOKEN` (the one admin key, with every scope and no
//! limit) or an API key (`crate::keys`); both are compared as SHA-256 digests in
//! constant time, so response timing says nothing about how much of a guess was
//! right, nor about the secret's length. Without `FOREMAN_TOKEN` and with no key ever
//! created, everything is open, as with a local Ollama.
//!
//! For a key, in order: `401` for an unknown or revoked secret; `403` when the route's
//! scope or a model its body names is not the key's; priorities above the key's
//! highest are lowered to it; `429` with `Retry-After` when a limit is reached. The
//! request then carries its [`Caller`] (for the scheduler's fair share) and is counted
//! in the key's usage; answers under `/v1` carry OpenAI's `x-ratelimit-*` headers when
//! the key has a rate or token limit.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::Response;
use bytes::Bytes;
use serde_json::Value;

use super::error::Flavor;
use super::{ApiError, AppState};
use crate::caller::Caller;
use crate::clock::now_ms;
use crate::config::SYNC_PRIORITY;
use crate::keys::Scope;
use crate::keys::access::{self, Need};
use crate::keys::ledger::REQUEST;
use crate::keys::live::{Admission, LiveKey};
use crate::keys::ring::Identity;

/// Open without a token: the health and readiness checks, for load balancers and
/// supervisors, and the dashboard's page.
const PUBLIC_PATHS: [&str; 3] = ["/healthz", "/readyz", "/ui"];

/// Open without a token when `FOREMAN_METRICS_PUBLIC` says so.
const METRICS_PATH: &str = "/metrics";

/// Where Anthropic's clients put their key.
const ANTHROPIC_KEY_HEADER: &str = "x-api-key";

/// The header a client asks for a priority with.
const PRIORITY_HEADER: &str = "x-foreman-priority";

pub async fn require_token(
    State(state): State<AppState>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path();
    if PUBLIC_PATHS.contains(&path) || (path == METRICS_PATH && state.config.metrics_public) {
        return next.run(request).await;
    }
    state.keys.refresh_if_stale().await;
    if !state.keys.required() {
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
    let key = match state.keys.identify(presented) {
        Identity::Key(key) => key,
        Identity::Revoked | Identity::Unknown => return ApiError::Unauthorized.render(flavor),
    };
    let openai = flavor == Flavor::OpenAi;
    match admit(&state, &key, request).await {
        Ok((request, admission)) => serve(&state, key, admission, request, next, openai).await,
        Err(error) => {
            if let ApiError::Forbidden(_) | ApiError::RateLimited { .. } = &error {
                let limited = matches!(error, ApiError::RateLimited { .. });
                state.metrics.usage.refused(&key.name, limited);
            }
            let mut response = error.render(flavor);
            if openai {
                rate_headers(response.headers_mut(), &key, now_ms());
            }
            response
        }
    }
}

/// Checks the key's scope, models and limits for `request`, lowering a priority above
/// the key's highest; the request as the route will see it.
async fn admit(
    state: &AppState,
    key: &Arc<LiveKey>,
    request: Request,
) -> Result<(Request, Admission), ApiError> {
    let grant = &key.grant;
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let need = access::need(&path);
    if let Need::Scope(scope) = need
        && !grant.allows(scope)
    {
        return Err(ApiError::Forbidden(format!(
            "API key '{}' lacks the '{scope}' scope, which {method} {path} needs",
            key.name
        )));
    }
    let mut request = request;
    let has_body = method == Method::POST || method == Method::DELETE;
    let reads_body =
        has_body && (!grant.models.is_empty() || (grant.max_priority.is_some() && path == "/jobs"));
    if reads_body {
        request = check_body(state, key, request, need).await?;
    }
    if let (Some(cap), Need::Scope(Scope::Chat)) = (grant.max_priority, need) {
        lower_priority_header(state, request.headers_mut(), cap);
    }
    let enqueues = access::enqueues(&method, &path);
    let admission =
        key.admit(need, enqueues, now_ms())
            .map_err(|refusal| ApiError::RateLimited {
                message: refusal.message,
                retry_after: refusal.retry_after,
            })?;
    Ok((request, admission))
}

/// Runs an admitted request under its key: counted, marked with its caller, its
/// admission held until the answer's last byte.
async fn serve(
    state: &AppState,
    key: Arc<LiveKey>,
    admission: Admission,
    mut request: Request,
    next: Next,
    openai: bool,
) -> Response {
    let now = now_ms();
    state.metrics.usage.request(&key.name, now);
    request.extensions_mut().insert(Caller {
        name: key.name.clone(),
        weight: key.grant.weight.max(1),
    });
    let admission = Arc::new(admission);
    let response = REQUEST.scope(admission.clone(), next.run(request)).await;
    admission.release_reservation();
    let mut response = response.map(|body| {
        Body::new(HeldBody {
            inner: body,
            _admission: admission,
        })
    });
    if openai {
        rate_headers(response.headers_mut(), &key, now);
    }
    response
}

/// Reads the body once to check the models it names and, on `POST /jobs`, to lower
/// its priority; puts it back for the route.
async fn check_body(
    state: &AppState,
    key: &Arc<LiveKey>,
    request: Request,
    need: Need,
) -> Result<Request, ApiError> {
    let (mut parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, state.config.max_body)
        .await
        .map_err(|error| body_error(&error, state.config.max_body))?;
    let Ok(Value::Object(mut fields)) = serde_json::from_slice::<Value>(&bytes) else {
        // Not a JSON object: the route answers its own 400.
        return Ok(Request::from_parts(parts, Body::from(bytes)));
    };
    for model in named_models(&fields, need) {
        if !key.grant.allows_model(model) {
            return Err(ApiError::Forbidden(format!(
                "API key '{}' may not use model '{model}' (it may use {})",
                key.name,
                key.grant.models.join(", ")
            )));
        }
    }
    let body = match key.grant.max_priority {
        Some(cap) if parts.uri.path() == "/jobs" && lower_job_priority(state, &mut fields, cap) => {
            let rewritten = Bytes::from(Value::Object(fields).to_string());
            parts
                .headers
                .insert(header::CONTENT_LENGTH, HeaderValue::from(rewritten.len()));
            rewritten
        }
        _ => bytes,
    };
    Ok(Request::from_parts(parts, Body::from(body)))
}

/// The model names a body gives: `model` everywhere, `request.model` on `/jobs`,
/// `name`, `source` and `destination` on model management (older clients' `name`,
/// `/api/copy`'s pair).
fn named_models(fields: &serde_json::Map<String, Value>, need: Need) -> Vec<&str> {
    let mut values: Vec<Option<&Value>> = vec![
        fields.get("model"),
        fields
            .get("request")
            .and_then(|request| request.get("model")),
    ];
    if need == Need::Scope(Scope::Models) {
        values.extend(["name", "source", "destination"].map(|field| fields.get(field)));
    }
    values
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect()
}

/// The highest priority a key may run at within the configured range.
fn effective_cap(state: &AppState, cap: i32) -> i32 {
    cap.max(state.config.priority_min)
}

/// `X-Foreman-Priority` above the key's highest (or absent, when the default is above
/// it) becomes the highest. A value that is not one integer in range is left for the
/// route's 400.
fn lower_priority_header(state: &AppState, headers: &mut HeaderMap, cap: i32) {
    let cap = effective_cap(state, cap);
    let mut values = headers.get_all(PRIORITY_HEADER).iter();
    let asked = match (values.next(), values.next()) {
        (None, _) => SYNC_PRIORITY,
        (Some(value), None) => {
            let parsed = value
                .to_str()
                .ok()
                .and_then(|text| text.trim().parse::<i32>().ok())
                .filter(|p| (state.config.priority_min..=state.config.priority_max).contains(p));
            match parsed {
                Some(priority) => priority,
                None => return,
            }
        }
        (Some(_), Some(_)) => return,
    };
    if asked > cap {
        headers.insert(PRIORITY_HEADER, HeaderValue::from(cap));
    }
}

/// The jobs API's `priority` lowered to the key's highest (the default too, when above
/// it); true when the body changed. A value out of range is left for the route's 400.
fn lower_job_priority(
    state: &AppState,
    fields: &mut serde_json::Map<String, Value>,
    cap: i32,
) -> bool {
    let cap = effective_cap(state, cap);
    let asked = match fields.get("priority") {
        None | Some(Value::Null) => super::jobs::ASYNC_PRIORITY,
        Some(value) => match value.as_i64().and_then(|p| i32::try_from(p).ok()) {
            Some(p) if (state.config.priority_min..=state.config.priority_max).contains(&p) => p,
            _ => return false,
        },
    };
    if asked <= cap {
        return false;
    }
    fields.insert("priority".into(), Value::from(cap));
    true
}

/// A body that could not be read: over the limit (413), silent past the body timeout
/// (408), or broken off (400).
fn body_error(error: &axum::Error, limit: usize) -> ApiError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = cause {
        if current.is::<http_body_util::LengthLimitError>() {
            return ApiError::TooLarge(limit);
        }
        if current.is::<tower_http::timeout::TimeoutError>() {
            return ApiError::BodyTimeout;
        }
        cause = current.source();
    }
    ApiError::BadRequest(format!("could not read the request body: {error}"))
}

/// OpenAI's rate-limit headers, for the limits the key has.
fn rate_headers(headers: &mut HeaderMap, key: &LiveKey, now: i64) {
    let rates = key.rates(now);
    for (kind, state) in [("requests", rates.requests), ("tokens", rates.tokens)] {
        let Some((limit, remaining, reset)) = state else {
            continue;
        };
        for (name, value) in [
            ("limit", limit.to_string()),
            ("remaining", remaining.to_string()),
            ("reset", format!("{reset}s")),
        ] {
            if let (Ok(name), Ok(value)) = (
                axum::http::HeaderName::try_from(format!("x-ratelimit-{name}-{kind}")),
                HeaderValue::try_from(value),
            ) {
                headers.insert(name, value);
            }
        }
    }
}

/// An answer's body that holds its request's admission (its place among the key's
/// requests in flight) until the body ends or is dropped.
struct HeldBody {
    inner: Body,
    _admission: Arc<Admission>,
}

impl http_body::Body for HeldBody {
    type Data = Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, axum::Error>>> {
        Pin::new(&mut self.get_mut().inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::Grant;

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
        use crate::keys::secret::{digest, same_digest};
        let same = |a: &str, b: &str| same_digest(&digest(a), &digest(b));
        assert!(same("s3cret", "s3cret"));
        assert!(!same("s3cre", "s3cret"));
        assert!(!same("s3cret ", "s3cret"));
        assert!(!same("S3CRET", "s3cret"));
        assert!(!same("", "s3cret"));
    }

    #[test]
    fn bodies_name_their_models() {
        let fields = |text: &str| match serde_json::from_str::<Value>(text).unwrap() {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let jobs = fields(r#"{"kind":"chat","request":{"model":"qwen3"}}"#);
        assert_eq!(named_models(&jobs, Need::Scope(Scope::Jobs)), ["qwen3"]);
        let copy = fields(r#"{"source":"a","destination":"b","name":"c"}"#);
        assert_eq!(
            named_models(&copy, Need::Scope(Scope::Models)),
            ["c", "a", "b"]
        );
        assert!(named_models(&copy, Need::Scope(Scope::Chat)).is_empty());
    }

    /// The contract with the scheduler's fair share: an authenticated request carries
    /// its `Caller`, the key's name and weight, or `admin` with weight 1 for the token;
    /// an open foreman marks nobody.
    #[tokio::test]
    async fn authenticated_requests_carry_their_caller() {
        use axum::routing::get;
        use tower::ServiceExt as _;

        use crate::config::Config;
        use crate::targets::Targets;

        async fn echo(request: Request) -> String {
            match Caller::of(request.extensions()) {
                Some(caller) => format!("{}/{}", caller.name, caller.weight),
                None => "nobody".into(),
            }
        }
        async fn ask(state: &AppState, secret: Option<&str>) -> (u16, String) {
            let app = axum::Router::new()
                .route("/api/tags", get(echo))
                .layer(axum::middleware::from_fn_with_state(
                    state.clone(),
                    require_token,
                ))
                .with_state(state.clone());
            let mut request = Request::builder().uri("/api/tags");
            if let Some(secret) = secret {
                request = request.header("authorization", format!("Bearer {secret}"));
            }
            let response = app
                .oneshot(request.body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = response.status().as_u16();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (status, String::from_utf8_lossy(&body).into_owned())
        }

        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("foreman.db");
        let open = |token: Option<&str>| {
            let mut config = Config::for_upstream("http://127.0.0.1:1", db.to_str().unwrap());
            config.token = token.map(str::to_owned);
            config
        };
        let store = foreman_store::Store::open(db.to_str().unwrap())
            .await
            .unwrap();
        let targets = |config: &Config| {
            Targets::new(
                &config.targets,
                config.upstream_timeout,
                config.poll_interval,
            )
        };
        let config = open(None);
        let state = AppState::for_test(config.clone(), store.clone(), targets(&config));
        assert_eq!(ask(&state, None).await, (200, "nobody".into()));

        let grant = Grant {
            scopes: [Scope::Chat].into(),
            weight: 4,
            ..Grant::admin()
        };
        let created = crate::keys::manage::create(&store, "ci-bot", &grant, now_ms())
            .await
            .unwrap();
        let config = open(Some("t0ken"));
        let state = AppState::for_test(config.clone(), store.clone(), targets(&config));
        assert_eq!(
            ask(&state, Some(&created.secret)).await,
            (200, "ci-bot/4".into())
        );
        assert_eq!(ask(&state, Some("t0ken")).await, (200, "admin/1".into()));
        assert_eq!(ask(&state, Some("nope")).await.0, 401);
        assert_eq!(ask(&state, None).await.0, 401);
        store.close().await;
    }
}
