//! Inputs and outcomes of `Store` operations that carry more than a job: parameter structs
//! for calls with many arguments, and the enums that say which way a call went.

use crate::job::{Job, JobId, JobState};

/// The result of `Store::enqueue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Enqueued {
    pub job: Job,
    /// False when the idempotency key matched an existing job, which is returned unchanged.
    pub created: bool,
    /// The new job's place in the queue (jobs ahead of it) as its enqueue's transaction
    /// saw it, when the store learnt it there: PostgreSQL's group commit ranks a whole
    /// group in one pass, where a later `queue_position` per job would count the queue
    /// once each. `None` otherwise; ask `queue_position`.
    pub position: Option<u64>,
}

/// Arguments of `Store::claim`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimParams {
    pub id: JobId,
    /// Who takes the lease: the runner's name (instance, target and slot), checked
    /// again by `heartbeat` and presented by every outcome.
    pub owner: String,
    /// The target (Ollama server) the attempt runs on, recorded on the job.
    pub target: String,
    pub now: i64,
    /// How long the lease lasts from `now` unless heartbeated.
    pub lease_for_ms: i64,
}

/// Arguments of `Store::list`. Results come newest first.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ListParams {
    pub state: Option<JobState>,
    pub model: Option<String>,
    /// Only jobs with `created_at < created_before`.
    pub created_before: Option<i64>,
    /// Only jobs with `created_at > created_after`.
    pub created_after: Option<i64>,
    /// Only jobs with an id below this one: pass the last id of the previous page.
    pub cursor: Option<JobId>,
    pub limit: u32,
}

/// The result of `Store::cancel`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CancelOutcome {
    /// The job was queued and is now cancelled.
    Cancelled(Job),
    /// The job is running: `cancel_requested` is now set, and the worker aborts the attempt
    /// and then calls `finish_cancelled`.
    Requested(Job),
    /// The job had already reached a terminal state; nothing changed.
    AlreadyFinished(Job),
    NotFound,
}
