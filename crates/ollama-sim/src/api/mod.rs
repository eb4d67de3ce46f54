//! HTTP routes: Ollama's native API, its OpenAI-compatible API (with Responses), its
//! Anthropic Messages API and the `/sim` control API, plus the admission step every
//! inference request goes through.
//!
//! Unknown paths answer `404 page not found` and wrong methods `405 method not
//! allowed`, both as plain text, exactly as Ollama's router does. Every route is behind
//! Ollama's Host and Origin guard ([`origin_guard`], installed by `server::spawn`).

mod anthropic;
mod body;
mod chat_bridge;
mod control;
mod manage;
mod native;
mod openai;
pub mod origin_guard;
mod responses;
mod wire;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use bytes::Bytes;
use serde_json::{Map, Value, json};

use crate::faults::Fault;
use crate::generation::{InFlight, Summary};
use crate::keep_alive::KeepAlive;
use crate::load_options::LoadOptions;
use crate::residency::Lease;
use crate::sim::Sim;
use crate::spec::ModelSpec;

pub use wire::ApiError;

/// Every route of the simulator.
pub fn router(sim: Arc<Sim>) -> Router {
    Router::new()
        .route("/", get(native::root))
        .route("/api/version", get(native::version))
        .route("/api/tags", get(native::tags))
        .route("/api/ps", get(native::ps))
        .route("/api/show", post(native::show))
        .route("/api/chat", post(native::chat))
        .route("/api/generate", post(native::generate))
        .route("/api/embed", post(native::embed))
        .route("/api/embeddings", post(native::embeddings))
        .route("/api/pull", post(manage::pull))
        .route("/api/create", post(manage::create))
        .route("/api/copy", post(manage::copy))
        .route("/api/delete", delete(manage::delete))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/completions", post(openai::completions))
        .route("/v1/embeddings", post(openai::embeddings))
        .route("/v1/models", get(openai::list_models))
        .route("/v1/models/{*model}", get(openai::get_model))
        .route("/v1/responses", post(responses::responses))
        .route("/v1/messages", post(anthropic::messages))
        .merge(control::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(sim)
}

/// Only the `/sim` routes, for the control listener.
pub fn control_router(sim: Arc<Sim>) -> Router {
    control::routes()
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(sim)
}

async fn not_found() -> (StatusCode, [(&'static str, &'static str); 1], &'static str) {
    (
        StatusCode::NOT_FOUND,
        [("content-type", "text/plain")],
        "404 page not found",
    )
}

async fn method_not_allowed() -> (StatusCode, [(&'static str, &'static str); 1], &'static str) {
    (
        StatusCode::METHOD_NOT_ALLOWED,
        [("content-type", "text/plain")],
        "405 method not allowed",
    )
}

/// An inference request that got past faults and holds a loaded model.
pub struct Admitted {
    pub lease: Lease,
    pub in_flight: InFlight,
    /// The drop fault fired: cut the connection halfway through the body.
    pub drop_midway: bool,
}

/// Counts the request, applies the fault draw, and waits for the model (loading it if
/// needed). Stalled requests never return; the client has to give up.
pub async fn admit(
    sim: &Sim,
    spec: &Arc<ModelSpec>,
    keep_alive: Option<KeepAlive>,
    options: &LoadOptions,
) -> Result<Admitted, ApiError> {
    let model = spec.display_name();
    sim.stats.request(&model);
    hold(sim, &model).await;
    let fault = sim.draw_fault();
    if fault != Fault::None {
        sim.stats.fault(&model);
    }
    match fault {
        Fault::Stall => std::future::pending::<()>().await,
        Fault::Busy => return Err(ApiError::busy()),
        Fault::Fail => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "llama runner process has terminated: exit status 2 (simulated fault)",
            ));
        }
        Fault::Status(code) => {
            let status =
                StatusCode::from_u16(code).expect("validated as a status between 400 and 599");
            return Err(ApiError::new(
                status,
                format!(
                    "{} (simulated fault)",
                    status.canonical_reason().unwrap_or("error")
                ),
            ));
        }
        Fault::None | Fault::Drop => {}
    }
    let in_flight = InFlight::new(sim.stats.clone(), model);
    let lease = sim
        .residency
        .acquire(spec, keep_alive, options)
        .await
        .map_err(|_| ApiError::busy())?;
    Ok(Admitted {
        lease,
        in_flight,
        drop_midway: fault == Fault::Drop,
    })
}

/// Waits while the `hold` fault is on, counted as held (also when the client gives up).
async fn hold(sim: &Sim, model: &str) {
    let mut holding = sim.holding.subscribe();
    if !*holding.borrow_and_update() {
        return;
    }
    struct Held<'a>(&'a Sim, &'a str);
    impl Drop for Held<'_> {
        fn drop(&mut self) {
            self.0.stats.held_delta(self.1, -1);
        }
    }
    sim.stats.held_delta(model, 1);
    let _held = Held(sim, model);
    // A closed channel means the simulator is gone: stop holding.
    let _ = holding.wait_for(|hold| !*hold).await;
}

/// Loads a model for a request with nothing to generate (Ollama's preload form).
/// Faults other than busy do not apply: no inference happens.
pub async fn load_only(
    sim: &Sim,
    spec: &Arc<ModelSpec>,
    keep_alive: Option<KeepAlive>,
    options: &LoadOptions,
) -> Result<(), ApiError> {
    sim.stats.request(&spec.display_name());
    sim.residency
        .preload(spec, keep_alive, options)
        .await
        .map_err(|_| ApiError::busy())
}

/// Reads the runner options (`options.num_ctx`...) and, for chat and generate,
/// `shift`: they decide whether a loaded runner can serve the request. A wrong type
/// is Ollama's 500.
pub fn load_options_field(
    body: &body::RequestBody,
    with_shift: bool,
) -> Result<LoadOptions, ApiError> {
    let options = body.get("options").and_then(Value::as_object);
    let shift = if with_shift {
        body.bool("shift")?
    } else {
        None
    };
    LoadOptions::from_request(options, shift)
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// Reads `keep_alive` with Ollama's rules and messages.
pub fn keep_alive_field(fields: &Map<String, Value>) -> Result<Option<KeepAlive>, ApiError> {
    KeepAlive::from_json(fields.get("keep_alive").unwrap_or(&Value::Null))
        .map_err(ApiError::bad_request)
}

/// Adds the final-chunk statistics, leaving zero values out (Go's omitempty).
pub fn add_summary(chunk: &mut Map<String, Value>, summary: &Summary) {
    chunk.insert("done_reason".into(), json!(summary.done_reason));
    for (key, value) in [
        ("total_duration", summary.total_duration),
        ("load_duration", summary.load_duration),
        ("prompt_eval_count", summary.prompt_eval_count),
        ("prompt_eval_duration", summary.prompt_eval_duration),
        ("eval_count", summary.eval_count),
        ("eval_duration", summary.eval_duration),
    ] {
        if value > 0 {
            chunk.insert(key.into(), json!(value));
        }
    }
}

/// A complete JSON body whose connection is cut halfway, for the drop fault. The
/// first half is written out before the cut.
pub fn cut_body(content_type: &'static str, full: Vec<u8>) -> axum::response::Response {
    let half = Bytes::from(full[..full.len() / 2].to_vec());
    let body = async_stream::stream! {
        yield Ok(half);
        crate::generation::flush_point().await;
        yield Err(drop_error());
    };
    wire::stream_response(content_type, body)
}

/// The error that ends a body stream when the drop fault fires.
pub fn drop_error() -> std::io::Error {
    std::io::Error::new(
        std::io::ErrorKind::ConnectionReset,
        "simulated connection drop",
    )
}
