//! The queue depth for admission. A count per request would put a query on every
//! request's path, so a recent count is reused while the queue is far below
//! `FOREMAN_MAX_QUEUE`; near the limit, every admission counts afresh.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use foreman_store::Store;

/// How long a read depth is trusted.
const FRESH_FOR: Duration = Duration::from_millis(20);

/// A cached `Store::queue_depth`.
#[derive(Default)]
pub struct DepthGauge {
    last: Mutex<Option<(Instant, u64)>>,
}

impl DepthGauge {
    /// The depth: a count at most [`FRESH_FOR`] old while it is under half of
    /// `limit`, a fresh count otherwise.
    pub async fn read(&self, store: &Store, limit: u64) -> Result<u64, foreman_store::Error> {
        if let Some((at, depth)) = *self.last.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < FRESH_FOR
            && depth.saturating_mul(2) < limit
        {
            return Ok(depth);
        }
        let depth = store.queue_depth().await?;
        *self.last.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), depth));
        Ok(depth)
    }

    /// Counts a job just enqueued, so a burst cannot slip past the limit on a stale read.
    pub fn note_enqueued(&self) {
        if let Some((_, depth)) = self.last.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            *depth += 1;
        }
    }
}
