//! `ollama-sim`: a deterministic simulator of an Ollama server.
//!
//! It answers Ollama's native API and its OpenAI-compatible API with Ollama's shapes,
//! status codes and streaming formats, and it models what makes a real GPU box slow
//! under mixed traffic: models must be loaded before use, only a few fit at once, and
//! every swap costs the model's load time. Replies are derived from the request, so
//! tests can assert on them. Faults can be injected, and counters (`/sim/stats`) show
//! how many loads and swaps a traffic pattern cost.
//!
//! Module map: [`spec`] (models), [`keep_alive`], [`load_options`] (runner options
//! and reloads), [`residency`] (the scheduler), [`generation`] (answers over time),
//! [`batching`] (streams sharing a model), [`prompt`] (prompt size and truncation),
//! [`text`] (deterministic content), [`faults`],
//! [`stats`], `api` (HTTP routes) and [`server`] (listener and [`spawn`]).

pub mod batching;
pub mod faults;
pub mod generation;
pub mod keep_alive;
pub mod load_options;
pub mod prompt;
pub mod residency;
pub mod server;
pub mod spec;
pub mod stats;
pub mod text;

mod api;
mod sim;

pub use api::origin_guard::{check_origins, split_origins};
pub use faults::{Faults, FaultsUpdate};
pub use keep_alive::KeepAlive;
pub use server::{SimHandle, spawn};
pub use spec::{ModelSpec, SpecError, default_models};
pub use stats::{ModelStats, ResidencyEvent, StatsSnapshot};

use std::time::Duration;

/// Everything the simulator is started with.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// The models on "disk".
    pub models: Vec<ModelSpec>,
    /// Models resident at once (Ollama's `OLLAMA_MAX_LOADED_MODELS`); 0 means
    /// Ollama's automatic 3 per GPU.
    pub max_loaded: usize,
    /// Concurrent requests per loaded model (`OLLAMA_NUM_PARALLEL`).
    pub num_parallel: usize,
    /// Requests waiting for a load before 503 (`OLLAMA_MAX_QUEUE`); requests for a
    /// loaded model wait for a slot without limit.
    pub max_queue: usize,
    /// GPU memory for models, in bytes: a model loads beside others only if its size
    /// fits in 80% of what they leave free. `None` is unlimited (only `max_loaded`).
    pub vram: Option<u64>,
    /// The `num_ctx` of requests that give none (`OLLAMA_CONTEXT_LENGTH`; Ollama's
    /// automatic value is 4096 below 23 GiB of VRAM).
    pub context_length: u32,
    /// Keep-alive when a request gives none (`OLLAMA_KEEP_ALIVE`).
    pub keep_alive: KeepAlive,
    /// Reply length in tokens when `num_predict` does not cap it.
    pub reply_tokens: usize,
    /// Faults in force at start.
    pub faults: Faults,
    /// Seed of the fault draws.
    pub seed: u64,
    /// What `/api/version` reports.
    pub version: String,
    /// Origins allowed besides Ollama's defaults (`OLLAMA_ORIGINS`, split at commas).
    pub origins: Vec<String>,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            models: default_models(),
            max_loaded: 1,
            num_parallel: 1,
            max_queue: 512,
            vram: None,
            context_length: 4096,
            keep_alive: KeepAlive::For(Duration::from_secs(300)),
            reply_tokens: generation::DEFAULT_REPLY_TOKENS,
            faults: Faults::default(),
            seed: 0x5eed,
            version: "0.33.0".to_string(),
            origins: Vec::new(),
        }
    }
}
