//! A running job's output in flight between instances (PostgreSQL only): the runner
//! writes it in batches when no reader of the job is in its own process, and readers on
//! other instances read the batches after their cursor.

/// Where a reader is in a job's output: the attempt and the sequence number of the last
/// batch it took. Batches are ordered by attempt, then sequence number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct OutputCursor {
    pub attempt: u32,
    pub seq: u32,
}

/// One batch of output: consecutive body chunks of one attempt, joined.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutputBatch {
    pub attempt: u32,
    /// From 0 within an attempt.
    pub seq: u32,
    /// The target's content type.
    pub content_type: String,
    pub bytes: Vec<u8>,
    /// The end of the answer: written before the outcome's commit, and relayed to a
    /// caller only once the job's row is terminal.
    pub last: bool,
}

impl OutputBatch {
    /// This batch's place in the output.
    pub fn cursor(&self) -> OutputCursor {
        OutputCursor {
            attempt: self.attempt,
            seq: self.seq,
        }
    }
}
