//! Job results too large to keep in the database row, kept as files under
//! `FOREMAN_DATA_DIR/artifacts/<job id>/` and served at `/jobs/{id}/artifacts/{name}`.
//!
//! File names never come from a request unchecked: a name is one path segment of
//! letters, digits, `.`, `_` and `-`, not starting with a dot, and it must be one the
//! job lists. Folders of jobs that no longer exist (pruned, or a crash between the
//! row's delete and the files') are swept by the janitor.

use std::path::{Path, PathBuf};

use foreman_store::{JobId, Store};
use serde::{Deserialize, Serialize};

/// The one artifact foreman writes today: the job's whole result.
pub const RESULT_NAME: &str = "result.json";

/// An artifact as a job lists it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub content_type: String,
    pub size: u64,
}

/// True for a safe artifact file name (see the module doc).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 100
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

fn job_dir(data_dir: &Path, id: JobId) -> PathBuf {
    data_dir.join("artifacts").join(id.to_string())
}

/// The file of artifact `name` of job `id`; `None` for an unsafe name.
pub fn path(data_dir: &Path, id: JobId, name: &str) -> Option<PathBuf> {
    valid_name(name).then(|| job_dir(data_dir, id).join(name))
}

/// Writes a result as the job's artifact (to a temporary name, synced, then renamed,
/// so a crash never leaves a half-written file under the real name).
pub async fn write_result(data_dir: &Path, id: JobId, result: &str) -> std::io::Result<Artifact> {
    let dir = job_dir(data_dir, id);
    tokio::fs::create_dir_all(&dir).await?;
    let final_path = dir.join(RESULT_NAME);
    let temporary = dir.join(format!("{RESULT_NAME}.partial"));
    let mut file = tokio::fs::File::create(&temporary).await?;
    tokio::io::AsyncWriteExt::write_all(&mut file, result.as_bytes()).await?;
    file.sync_all().await?;
    drop(file);
    tokio::fs::rename(&temporary, &final_path).await?;
    Ok(Artifact {
        name: RESULT_NAME.to_string(),
        content_type: "application/json".to_string(),
        size: result.len() as u64,
    })
}

/// The artifacts a job lists (its `artifacts` column).
pub fn listed(artifacts: Option<&str>) -> Vec<Artifact> {
    artifacts
        .and_then(|text| serde_json::from_str(text).ok())
        .unwrap_or_default()
}

/// Deletes the artifact folders of jobs the store no longer has; returns how many.
pub async fn sweep_orphans(store: &Store, data_dir: &Path) -> u64 {
    let Ok(mut entries) = tokio::fs::read_dir(data_dir.join("artifacts")).await else {
        return 0;
    };
    let mut removed = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let Some(id) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<JobId>().ok())
        else {
            continue;
        };
        if let Ok(None) = store.get(id).await
            && tokio::fs::remove_dir_all(entry.path()).await.is_ok()
        {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_cannot_leave_the_folder() {
        for bad in [
            "",
            "..",
            "../etc/passwd",
            "a/b",
            "a\\b",
            ".hidden",
            "/etc/passwd",
            "x\0y",
            "%2e%2e",
            "ü.json",
        ] {
            assert!(!valid_name(bad), "{bad:?} is refused");
        }
        for good in ["result.json", "part-2.ndjson", "a_b.c"] {
            assert!(valid_name(good));
        }
        let id = JobId::generate();
        assert!(path(Path::new("/data"), id, "../x").is_none());
        assert_eq!(
            path(Path::new("/data"), id, "result.json").unwrap(),
            Path::new("/data/artifacts")
                .join(id.to_string())
                .join("result.json")
        );
    }
}
