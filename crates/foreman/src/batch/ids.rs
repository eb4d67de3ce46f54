//! The ids of the Batch API: `file-...` and `batch_...` minted from ULIDs (so they sort by
//! creation time, which the listings' cursors rely on), and the id and idempotency key of
//! a batch line's job, derived from the batch and the line so that enqueueing the line
//! again after a crash finds the same job.

use foreman_store::JobId;
use sha2::{Digest, Sha256};
use ulid::Ulid;

/// A new file id.
pub fn new_file_id() -> String {
    format!("file-{}", Ulid::generate())
}

/// A new batch id.
pub fn new_batch_id() -> String {
    format!("batch_{}", Ulid::generate())
}

/// The output and error files a batch's finalisation writes: fixed per batch, so a
/// finalisation done again after a crash writes the same files, recorded once.
pub fn output_file_id(batch_id: &str) -> String {
    format!("file-{}-output", batch_suffix(batch_id))
}

/// See [`output_file_id`].
pub fn error_file_id(batch_id: &str) -> String {
    format!("file-{}-errors", batch_suffix(batch_id))
}

fn batch_suffix(batch_id: &str) -> &str {
    batch_id.strip_prefix("batch_").unwrap_or(batch_id)
}

/// The job of line `line` (0-based) of a batch: stamped with the batch's creation time,
/// its random part 48 bits of a digest of the batch id and the line number, so a
/// batch's jobs sort by line.
pub fn line_job_id(batch_id: &str, created_at: i64, line: u64) -> JobId {
    let digest = Sha256::digest(batch_id.as_bytes());
    let mut high = [0u8; 8];
    high[2..].copy_from_slice(&digest[..6]);
    let random = (u128::from(u64::from_be_bytes(high)) << 32) | u128::from(line as u32);
    JobId::from(Ulid::from_parts(created_at.max(0) as u64, random))
}

/// The idempotency key of a batch line's job.
pub fn line_key(batch_id: &str, line: u64) -> String {
    format!("batch:{batch_id}:{line}")
}

/// Whether `text` is a well-formed id of this family (`file-`/`batch_` and safe
/// characters), before it is used as a file name or looked up.
pub fn is_valid(text: &str, prefix: &str) -> bool {
    text.strip_prefix(prefix).is_some_and(|rest| {
        !rest.is_empty()
            && rest.len() <= 80
            && rest.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_jobs_are_fixed_per_batch_and_line_and_sort_by_line() {
        let a = line_job_id("batch_X", 1_700_000_000_000, 7);
        assert_eq!(a, line_job_id("batch_X", 1_700_000_000_000, 7));
        assert_ne!(a, line_job_id("batch_Y", 1_700_000_000_000, 7));
        assert!(a < line_job_id("batch_X", 1_700_000_000_000, 8));
        assert!(
            line_job_id("batch_X", 1_700_000_000_000, 9)
                < line_job_id("batch_X", 1_700_000_000_000, 10_000)
        );
    }

    #[test]
    fn ids_that_could_leave_the_folder_are_not_valid() {
        assert!(is_valid(&new_file_id(), "file-"));
        assert!(is_valid(&output_file_id(&new_batch_id()), "file-"));
        assert!(is_valid(&new_batch_id(), "batch_"));
        for bad in ["file-", "file-../x", "file-a/b", "batch_x", "file-a.b"] {
            assert!(!is_valid(bad, "file-"), "{bad}");
        }
    }
}
