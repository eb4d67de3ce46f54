//! Who occupies a target's slots: its running jobs as the store records them, for an
//! instance that has just taken the target over from another.
//!
//! Why it exists: during a handover (the previous holder's lease lapsed, or it released
//! the target while a run of it went on) the jobs the previous holder still runs there hold
//! the target's slots until they finish or are rescued. The new holder reads them here and
//! counts them as busy, so that it does not start more runs than the target has slots.

use crate::job::JobId;

/// One running job on a target: enough to count it against its load key's slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Occupant {
    pub id: JobId,
    pub model: String,
    pub load_options: String,
    /// Its lease owner (`instance/target/slot`).
    pub lease_owner: String,
}
