//! Domain types of a job: what the rest of foreman reads from and hands to the `Store`.
//!
//! These types know nothing about HTTP or about how a backend lays them out in tables.
//! Wire shapes (the `/jobs` JSON view) are built from them elsewhere, so nothing here derives
//! `Serialize`.

use std::fmt;
use std::str::FromStr;

use ulid::Ulid;

/// A job's identity: a ULID, so ids sort by creation time.
///
/// Its text form is the canonical 26-character upper-case Crockford base32 string, which sorts
/// the same way as the number, so backends may store and compare it as text.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct JobId(Ulid);

impl JobId {
    /// A fresh random id stamped with the current wall clock.
    ///
    /// The store mints ids itself from the `now` it is given; this is for callers that need an id
    /// that is not a job's (tests, cursors).
    pub fn generate() -> JobId {
        JobId(Ulid::generate())
    }

    /// The underlying ULID.
    pub fn ulid(self) -> Ulid {
        self.0
    }
}

impl From<Ulid> for JobId {
    fn from(ulid: Ulid) -> JobId {
        JobId(ulid)
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for JobId {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<JobId, ParseError> {
        Ulid::from_string(text)
            .map(JobId)
            .map_err(|source| ParseError::JobId {
                value: text.to_owned(),
                source,
            })
    }
}

/// Why a job id, state or kind could not be read from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("invalid job id {value:?}: {source}")]
    JobId {
        value: String,
        source: ulid::DecodeError,
    },
    #[error("unknown job state {0:?}")]
    State(String),
    #[error("unknown job kind {0:?}")]
    Kind(String),
}

/// Where a job is in its lifecycle.
///
/// `queued → running → succeeded | failed | cancelled`, and `running → queued` when an attempt
/// is retried, rescued or handed back at shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    /// Every state, in lifecycle order.
    pub const ALL: [JobState; 5] = [
        JobState::Queued,
        JobState::Running,
        JobState::Succeeded,
        JobState::Failed,
        JobState::Cancelled,
    ];

    /// The lower-case name stored in the database and shown to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    /// A terminal job never changes state again; only pruning removes it.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

impl fmt::Display for JobState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobState {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<JobState, ParseError> {
        JobState::ALL
            .into_iter()
            .find(|state| state.as_str() == text)
            .ok_or_else(|| ParseError::State(text.to_owned()))
    }
}

/// Which client endpoint a job came from, so the worker knows how to run it and how to shape
/// its answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// Ollama `/api/chat`.
    Chat,
    /// Ollama `/api/generate`.
    Generate,
    /// OpenAI-compatible `/v1/chat/completions`.
    OpenAiChat,
    /// OpenAI-compatible `/v1/completions`.
    OpenAiCompletion,
    /// OpenAI's Responses API, `/v1/responses`.
    OpenAiResponses,
    /// Anthropic's Messages API, `/v1/messages`.
    AnthropicMessages,
    /// Ollama `/api/embed`, queued only as a batch's line (live requests go straight to
    /// a target).
    Embed,
    /// OpenAI-compatible `/v1/embeddings`, queued only as a batch's line.
    OpenAiEmbedding,
}

impl JobKind {
    /// Every kind.
    pub const ALL: [JobKind; 8] = [
        JobKind::Chat,
        JobKind::Generate,
        JobKind::OpenAiChat,
        JobKind::OpenAiCompletion,
        JobKind::OpenAiResponses,
        JobKind::AnthropicMessages,
        JobKind::Embed,
        JobKind::OpenAiEmbedding,
    ];

    /// The snake-case name stored in the database and shown to clients.
    pub fn as_str(self) -> &'static str {
        match self {
            JobKind::Chat => "chat",
            JobKind::Generate => "generate",
            JobKind::OpenAiChat => "openai_chat",
            JobKind::OpenAiCompletion => "openai_completion",
            JobKind::OpenAiResponses => "openai_responses",
            JobKind::AnthropicMessages => "anthropic_messages",
            JobKind::Embed => "embed",
            JobKind::OpenAiEmbedding => "openai_embedding",
        }
    }
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JobKind {
    type Err = ParseError;

    fn from_str(text: &str) -> Result<JobKind, ParseError> {
        JobKind::ALL
            .into_iter()
            .find(|kind| kind.as_str() == text)
            .ok_or_else(|| ParseError::Kind(text.to_owned()))
    }
}

/// What a caller hands to `Store::enqueue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewJob {
    /// A caller-chosen id, so the caller can start waiting on the job before it is
    /// inserted; `None` lets the store mint one from `now`.
    pub id: Option<JobId>,
    pub kind: JobKind,
    /// The model the job asks for; the scheduler drains work by this name and
    /// `load_options`.
    pub model: String,
    /// The request options that make the target reload the model when they change
    /// (its *load key* with `model`), in a canonical text form; empty for none.
    pub load_options: String,
    /// The client's JSON body, kept byte-for-byte.
    pub payload: String,
    /// A caller waits for the answer on its connection (not the jobs API).
    pub sync: bool,
    /// Higher runs first.
    pub priority: i32,
    /// How many times the job may be claimed before a failure becomes terminal; at least 1.
    pub max_attempts: u32,
    /// A client-chosen key: enqueueing the same key again returns the existing job.
    pub idempotency_key: Option<String>,
    /// Where to deliver the outcome of an asynchronous job.
    pub webhook_url: Option<String>,
    /// Client-supplied JSON text, kept as given.
    pub metadata: Option<String>,
    /// Who the job was enqueued for, as authentication named them; `None` when foreman
    /// runs open. The scheduler shares targets between callers by their weight.
    pub caller: Option<JobCaller>,
}

/// The caller a job belongs to, with the share of a target it had at enqueue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCaller {
    /// The key's name (`admin` for the admin token).
    pub name: String,
    /// The caller's weight relative to other callers; at least 1.
    pub weight: u32,
}

/// The `caller` and `caller_weight` columns that store a job's or a batch's caller: no
/// name and weight 1 without one, and never a weight below 1 (the columns' CHECK).
/// What both backends refuse before an enqueue touches the database: no attempt allowed,
/// or a time no job id can carry.
pub(crate) fn check_enqueue(new_job: &NewJob, now: i64) -> crate::error::Result<()> {
    if new_job.max_attempts == 0 {
        return Err(crate::Error::InvalidInput(
            "max_attempts must be at least 1".to_owned(),
        ));
    }
    if !(0..=crate::sqlite::MAX_ULID_MS).contains(&now) {
        return Err(crate::Error::InvalidInput(format!(
            "enqueue time {now} is outside the range of a job id"
        )));
    }
    Ok(())
}

pub(crate) fn caller_columns(caller: Option<&JobCaller>) -> (Option<&str>, u32) {
    match caller {
        Some(caller) => (Some(caller.name.as_str()), caller.weight.max(1)),
        None => (None, 1),
    }
}

/// Why an attempt (or the whole job) failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobFailure {
    /// The HTTP status a synchronous caller should get, e.g. the upstream's own.
    pub status: u16,
    pub message: String,
}

/// A job row as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub id: JobId,
    pub kind: JobKind,
    pub model: String,
    /// See [`NewJob::load_options`].
    pub load_options: String,
    /// The target the current or last attempt ran on.
    pub target: Option<String>,
    /// See [`NewJob::sync`].
    pub sync: bool,
    /// Attempts taken back from a process that died or lost its lease; they are not
    /// failures of the job and do not count against `max_attempts`.
    pub interruptions: u32,
    /// The client's JSON body, byte-for-byte as enqueued.
    pub payload: String,
    pub state: JobState,
    pub priority: i32,
    /// How many times the job has been claimed (the current attempt's number while running).
    /// It doubles as the fencing token every state change of a running job must present.
    pub attempts: u32,
    pub max_attempts: u32,
    /// Who holds the lease; set exactly while running.
    pub lease_owner: Option<String>,
    /// When the lease lapses unless heartbeated; set exactly while running.
    pub lease_expires_at: Option<i64>,
    /// The job is not eligible to run before this time (retry backoff).
    pub run_after: i64,
    /// Someone asked to cancel the job while it was running; the worker aborts it.
    pub cancel_requested: bool,
    /// The final response body (JSON text) of a succeeded job.
    pub result: Option<String>,
    /// Why the job failed; on a queued job, why its previous attempt failed.
    pub failure: Option<JobFailure>,
    pub idempotency_key: Option<String>,
    pub webhook_url: Option<String>,
    pub metadata: Option<String>,
    /// Files holding a result too large for the row, as JSON
    /// (`[{"name","content_type","size"}]`); `None` for most jobs.
    pub artifacts: Option<String>,
    /// See [`NewJob::caller`].
    pub caller: Option<JobCaller>,
    pub created_at: i64,
    /// When the first attempt started.
    pub started_at: Option<i64>,
    /// Set exactly when the state is terminal.
    pub finished_at: Option<i64>,
    /// The instance (`FOREMAN_INSTANCE_ID`) whose store handle enqueued the job (see
    /// `Store::with_instance`); `None` for a handle without one, and for jobs accepted
    /// before it was recorded.
    pub accepted_by: Option<String>,
}

/// Enough of a job to rank it in the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JobRef {
    pub id: JobId,
    pub priority: i32,
    pub created_at: i64,
}

/// The head of one load key's queue (a model and its load options), as the scheduler
/// sees it.
///
/// Only eligible jobs count: queued, with `run_after <= now`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueHead {
    pub model: String,
    /// See [`NewJob::load_options`].
    pub load_options: String,
    /// The eligible job of this model that runs next: highest priority, then oldest
    /// (`created_at`, then id).
    pub best: JobRef,
    /// `created_at` of this model's oldest eligible job, for the starvation bound.
    pub oldest_created_at: i64,
    /// How many eligible jobs this model has.
    pub depth: u64,
    /// The head of each caller's jobs in this queue, ordered by caller name (jobs
    /// without a caller first), for sharing the key between callers. Empty means
    /// nothing is known per caller: the scheduler then runs `best`.
    pub callers: Vec<CallerHead>,
}

/// The eligible jobs of one caller within one load key's queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallerHead {
    /// The caller's name; `None` for jobs enqueued without one.
    pub caller: Option<String>,
    /// The caller's weight, as recorded with its `best` job.
    pub weight: u32,
    /// The caller's job that runs next: highest priority, then oldest, then lowest id.
    pub best: JobRef,
    /// How many eligible jobs the caller has in this queue.
    pub depth: u64,
}

/// The queued jobs of one model at one priority (see `Store::queue_summary`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueGroup {
    pub model: String,
    pub priority: i32,
    pub count: u64,
    /// `created_at` of the group's oldest job.
    pub oldest_created_at: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn state_names_round_trip() {
        for state in JobState::ALL {
            assert_eq!(state.as_str().parse::<JobState>(), Ok(state));
        }
        assert_eq!(
            "done".parse::<JobState>(),
            Err(ParseError::State("done".to_owned()))
        );
        let terminal: Vec<JobState> = JobState::ALL
            .into_iter()
            .filter(|state| state.is_terminal())
            .collect();
        assert_eq!(
            terminal,
            [JobState::Succeeded, JobState::Failed, JobState::Cancelled]
        );
    }

    #[test]
    fn kind_names_round_trip() {
        let names: Vec<&str> = JobKind::ALL.into_iter().map(JobKind::as_str).collect();
        assert_eq!(
            names,
            [
                "chat",
                "generate",
                "openai_chat",
                "openai_completion",
                "openai_responses",
                "anthropic_messages",
                "embed",
                "openai_embedding"
            ]
        );
        for kind in JobKind::ALL {
            assert_eq!(kind.as_str().parse::<JobKind>(), Ok(kind));
        }
        assert!("embeddings".parse::<JobKind>().is_err());
    }

    #[test]
    fn job_id_text_is_canonical_ulid() {
        let id = JobId::generate();
        let text = id.to_string();
        assert_eq!(text.len(), 26);
        assert_eq!(text.parse::<JobId>(), Ok(id));
        // Lower-case input is accepted and normalised on display.
        assert_eq!(text.to_lowercase().parse::<JobId>(), Ok(id));
        assert!("not-a-ulid".parse::<JobId>().is_err());
    }

    #[test]
    fn job_id_text_order_matches_numeric_order() {
        let smaller = JobId::from(Ulid::from_parts(5, 1));
        let larger = JobId::from(Ulid::from_parts(40_000_000, 0));
        assert!(smaller < larger);
        assert!(smaller.to_string() < larger.to_string());
    }
}
