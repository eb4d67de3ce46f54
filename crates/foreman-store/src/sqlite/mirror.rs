//! The SQLite backend's copy of the queue order in memory (a [`QueueIndex`]), so that
//! `queue_heads`, which the worker asks before every job, reads no rows.
//!
//! Only the writer thread changes it, in the same write as the rows it mirrors, so it
//! follows every write this process makes. Two things can still leave it behind the
//! table: a batch whose commit failed after its writes changed the mirror, and another
//! process writing to the same file. The first marks the mirror stale; for the second,
//! the mirror is reloaded from the table when it is older than [`RELOAD_AFTER`]. A stale
//! entry is harmless in any case: a claim is guarded by the row's state, and a claim
//! that finds nothing to take corrects the entry.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use rusqlite::Connection;

use super::queries;
use crate::error::{Error, Result};
use crate::job::{Job, JobId, QueueHead};
use crate::queue_index::{QueueIndex, QueuedJob};

/// How old the mirror may get before `queue_heads` reloads it from the table.
pub(super) const RELOAD_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug)]
struct State {
    index: QueueIndex,
    loaded_at: Instant,
    stale: bool,
}

/// The mirror. Cheap to clone; clones share it.
#[derive(Debug, Clone)]
pub(super) struct Mirror {
    state: Arc<Mutex<State>>,
}

impl Mirror {
    /// Reads every queued job from the table.
    pub(super) fn load(conn: &Connection) -> Result<Mirror> {
        Ok(Mirror {
            state: Arc::new(Mutex::new(State {
                index: read_queue(conn)?,
                loaded_at: Instant::now(),
                stale: false,
            })),
        })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The heads, if the mirror is recent enough to answer.
    pub(super) fn heads_if_fresh(&self, now: i64) -> Option<Vec<QueueHead>> {
        let state = self.lock();
        (!state.stale && state.loaded_at.elapsed() < RELOAD_AFTER).then(|| state.index.heads(now))
    }

    /// Replaces the mirror with the table's queued jobs. Runs on the writer thread, so
    /// no write of this process can fall between the read and the swap.
    pub(super) fn reload(&self, conn: &Connection) -> Result<()> {
        let index = read_queue(conn)?;
        let mut state = self.lock();
        state.index = index;
        state.loaded_at = Instant::now();
        state.stale = false;
        Ok(())
    }

    /// Up to `limit` queued jobs, if the mirror is recent enough to answer.
    pub(super) fn jobs_if_fresh(&self, limit: usize) -> Option<Vec<QueuedJob>> {
        let state = self.lock();
        (!state.stale && state.loaded_at.elapsed() < RELOAD_AFTER).then(|| state.index.jobs(limit))
    }

    /// Up to `limit` queued jobs, however old the mirror is.
    pub(super) fn jobs(&self, limit: usize) -> Vec<QueuedJob> {
        self.lock().index.jobs(limit)
    }

    /// The heads as of `now`, however old the mirror is.
    pub(super) fn heads(&self, now: i64) -> Vec<QueueHead> {
        self.lock().index.heads(now)
    }

    /// How many jobs are queued, eligible or not; reloaded first if the mirror may be
    /// behind the table. Runs on the writer thread.
    pub(super) fn queued(&self, conn: &Connection) -> Result<usize> {
        let fresh = {
            let state = self.lock();
            !state.stale && state.loaded_at.elapsed() < RELOAD_AFTER
        };
        if !fresh {
            self.reload(conn)?;
        }
        Ok(self.lock().index.len())
    }

    /// Follows a job row that a write returned.
    pub(super) fn track(&self, job: &Job) {
        self.lock().index.track(job);
    }

    pub(super) fn remove(&self, id: JobId) {
        self.lock().index.remove(id);
    }

    /// After a failed commit: the next `queue_heads` reloads.
    pub(super) fn mark_stale(&self) {
        self.lock().stale = true;
    }
}

fn read_queue(conn: &Connection) -> Result<QueueIndex> {
    let mut statement = conn.prepare_cached(queries::QUEUED_JOBS)?;
    let mut rows = statement.query([])?;
    let mut jobs = Vec::new();
    while let Some(row) = rows.next()? {
        let id: String = row.get("id")?;
        jobs.push(QueuedJob {
            id: id.parse().map_err(|e| Error::CorruptRow {
                id: id.clone(),
                reason: format!("{e}"),
            })?,
            model: row.get("model")?,
            load_options: row.get("load_options")?,
            priority: row.get("priority")?,
            created_at: row.get("created_at")?,
            run_after: row.get("run_after")?,
            caller: row.get("caller")?,
            caller_weight: u32::try_from(row.get::<_, i64>("caller_weight")?).unwrap_or(1),
        });
    }
    Ok(QueueIndex::new(jobs))
}
