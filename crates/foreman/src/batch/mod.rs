//! OpenAI's Batch API run on foreman's queue: the files a batch reads and writes, the
//! validation of its input, the driver that takes each batch through OpenAI's states
//! (`validating`, `in_progress`, `finalizing`, then `completed`, `failed`, `expired` or
//! `cancelled`), and the output files it writes.
//!
//! Every line becomes a job at `FOREMAN_BATCH_PRIORITY`, below async jobs and interactive
//! requests, so the scheduler's drain-by-model runs a batch's lines back to back on a
//! loaded model whenever live work leaves the target free, and `FOREMAN_MAX_WAIT` still
//! bounds every model's wait. All of a batch's state is in the store: a driver that
//! starts (after a crash too) picks every open batch up from its row and its lines' jobs.

pub mod driver;
pub mod expiry;
pub mod finalise;
pub mod groups;
pub mod ids;
pub mod lines;
pub mod notify;
pub mod split;
pub mod storage;

use foreman_store::JobKind;

pub use driver::Driver;

/// The route every line of a batch names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
    OllamaChat,
    OllamaGenerate,
    OllamaEmbed,
}

impl Endpoint {
    /// Every endpoint a batch may name, as OpenAI writes them (the native ones are
    /// foreman's extension).
    pub const SUPPORTED: [&'static str; 6] = [
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/api/chat",
        "/api/generate",
        "/api/embed",
    ];

    pub fn parse(text: &str) -> Option<Endpoint> {
        Some(match text {
            "/v1/chat/completions" => Endpoint::ChatCompletions,
            "/v1/completions" => Endpoint::Completions,
            "/v1/embeddings" => Endpoint::Embeddings,
            "/api/chat" => Endpoint::OllamaChat,
            "/api/generate" => Endpoint::OllamaGenerate,
            "/api/embed" => Endpoint::OllamaEmbed,
            _ => return None,
        })
    }

    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/v1/chat/completions",
            Endpoint::Completions => "/v1/completions",
            Endpoint::Embeddings => "/v1/embeddings",
            Endpoint::OllamaChat => "/api/chat",
            Endpoint::OllamaGenerate => "/api/generate",
            Endpoint::OllamaEmbed => "/api/embed",
        }
    }

    /// The kind of job a line becomes.
    pub fn job_kind(self) -> JobKind {
        match self {
            Endpoint::ChatCompletions => JobKind::OpenAiChat,
            Endpoint::Completions => JobKind::OpenAiCompletion,
            Endpoint::Embeddings => JobKind::OpenAiEmbedding,
            Endpoint::OllamaChat => JobKind::Chat,
            Endpoint::OllamaGenerate => JobKind::Generate,
            Endpoint::OllamaEmbed => JobKind::Embed,
        }
    }
}
