//! Batch files do not live forever: as OpenAI's, an uploaded batch input and a batch's
//! output and error files carry an `expires_at` (`FOREMAN_BATCH_FILES_TTL` after they are
//! written, 30 days unless set), and the janitor's leader removes those past it: the
//! record first, then the bytes, so a crash in between leaves bytes nobody lists (the
//! start's sweep of unrecorded files removes them), never a listed file without bytes.
//!
//! The input of a batch that has not ended stays until the batch ends, whatever its
//! expiry: the driver reads it again as it enqueues and finalises.

use std::path::Path;
use std::time::Duration;

use foreman_store::Store;

use super::storage;

/// Files looked at per read.
const PAGE: u32 = 500;

/// When a file written at `created_at` expires.
pub fn expires_at(created_at: i64, ttl: Duration) -> i64 {
    created_at.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX))
}

/// Removes every file past its expiry at `now` but the inputs of open batches; returns
/// how many went.
pub async fn prune(store: &Store, data_dir: &Path, now: i64) -> Result<u64, foreman_store::Error> {
    let mut removed = 0;
    loop {
        let expired = store.expired_files(now, PAGE).await?;
        if expired.is_empty() {
            return Ok(removed);
        }
        let open = store.open_batches().await?;
        let mut removed_now = 0;
        for file in &expired {
            let read_by_open_batch = open
                .iter()
                .any(|batch| batch.input_file_id == file.id && !batch.status.is_terminal());
            if read_by_open_batch {
                continue;
            }
            if store.delete_file(&file.id).await? {
                removed_now += 1;
            }
            if let Err(error) = storage::remove(data_dir, &file.id).await {
                tracing::warn!(%error, file = %file.id, "cannot remove an expired file's bytes");
            }
        }
        removed += removed_now;
        // A page of kept inputs only: the rest waits for a later pass.
        if expired.len() < PAGE as usize || removed_now == 0 {
            return Ok(removed);
        }
    }
}
