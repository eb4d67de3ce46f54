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

pub mod ids;
pub mod storage;
