//! The bytes of the Batch API's files, under `FOREMAN_DATA_DIR/files/<id>`.
//!
//! A file is written to a temporary name, synced, renamed to its id and the folder
//! synced, and only then recorded in the store: a file the store lists is whole on disk.
//! A crash mid-write leaves a temporary file (removed at the next start) and no record;
//! a crash between the rename and the record leaves a file nobody was told of, removed
//! at a later start once it is an hour old (an upload under way is never that old).

use std::path::{Path, PathBuf};

use tokio::io::AsyncWriteExt;

/// The folder of every file.
pub fn folder(data_dir: &Path) -> PathBuf {
    data_dir.join("files")
}

/// The path of the file `id` (a checked id, see `ids::is_valid`).
pub fn path(data_dir: &Path, id: &str) -> PathBuf {
    folder(data_dir).join(id)
}

const PARTIAL: &str = ".partial";

/// Why a file could not be written.
#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the file is larger than the limit of {limit} bytes")]
    TooLarge { limit: usize },
    #[error("the file has more than {limit} lines, the most a batch takes")]
    TooManyLines { limit: u64 },
    #[error("reading the upload failed: {0}")]
    Upload(String),
    #[error("writing the file failed: {0}")]
    Io(#[from] std::io::Error),
}

/// A file being written: bytes go to disk as they come, counted.
pub struct Writer {
    file: tokio::fs::File,
    temporary: PathBuf,
    final_path: PathBuf,
    folder: PathBuf,
    pub bytes: usize,
    /// Non-empty lines so far (a last line without a newline counts at the end).
    pub lines: u64,
    line_has_text: bool,
    max_bytes: usize,
    max_lines: Option<u64>,
}

impl Writer {
    /// Starts the file `id`, refusing it past `max_bytes` or (when given) `max_lines`.
    pub async fn create(
        data_dir: &Path,
        id: &str,
        max_bytes: usize,
        max_lines: Option<u64>,
    ) -> Result<Writer, WriteError> {
        let folder = folder(data_dir);
        tokio::fs::create_dir_all(&folder).await?;
        let final_path = folder.join(id);
        let temporary = folder.join(format!("{id}{PARTIAL}"));
        let file = tokio::fs::File::create(&temporary).await?;
        Ok(Writer {
            file,
            temporary,
            final_path,
            folder,
            bytes: 0,
            lines: 0,
            line_has_text: false,
            max_bytes,
            max_lines,
        })
    }

    /// Appends `chunk`.
    pub async fn write(&mut self, chunk: &[u8]) -> Result<(), WriteError> {
        self.bytes += chunk.len();
        if self.bytes > self.max_bytes {
            return Err(WriteError::TooLarge {
                limit: self.max_bytes,
            });
        }
        for &byte in chunk {
            match byte {
                b'\n' => {
                    if self.line_has_text {
                        self.lines += 1;
                    }
                    self.line_has_text = false;
                }
                b' ' | b'\t' | b'\r' => {}
                _ => self.line_has_text = true,
            }
        }
        if let Some(limit) = self.max_lines
            && self.lines > limit
        {
            return Err(WriteError::TooManyLines { limit });
        }
        self.file.write_all(chunk).await?;
        Ok(())
    }

    /// Syncs the file, gives it its name and syncs the folder; returns (bytes, lines).
    pub async fn finish(mut self) -> Result<(usize, u64), WriteError> {
        if self.line_has_text {
            self.lines += 1;
            self.line_has_text = false;
        }
        if let Some(limit) = self.max_lines
            && self.lines > limit
        {
            self.abandon().await;
            return Err(WriteError::TooManyLines { limit });
        }
        self.file.flush().await?;
        self.file.sync_all().await?;
        tokio::fs::rename(&self.temporary, &self.final_path).await?;
        sync_folder(&self.folder).await?;
        Ok((self.bytes, self.lines))
    }

    /// Removes the unfinished file.
    pub async fn abandon(self) {
        drop(self.file);
        let _ = tokio::fs::remove_file(&self.temporary).await;
    }
}

async fn sync_folder(folder: &Path) -> std::io::Result<()> {
    let folder = folder.to_owned();
    tokio::task::spawn_blocking(move || std::fs::File::open(folder)?.sync_all())
        .await
        .map_err(std::io::Error::other)?
}

/// Removes the file `id`; a file already gone is not an error.
pub async fn remove(data_dir: &Path, id: &str) -> std::io::Result<()> {
    match tokio::fs::remove_file(path(data_dir, id)).await {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(error),
        _ => Ok(()),
    }
}

/// Removes the temporary files of writes a crash cut short; run once at start, before
/// anything is uploaded.
pub async fn sweep_partial(data_dir: &Path) -> u64 {
    let Ok(mut entries) = tokio::fs::read_dir(folder(data_dir)).await else {
        return 0;
    };
    let mut removed = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        if entry.file_name().to_string_lossy().ends_with(PARTIAL)
            && tokio::fs::remove_file(entry.path()).await.is_ok()
        {
            removed += 1;
        }
    }
    removed
}

/// How old a file without a record must be before a start removes it.
const ORPHAN_AGE: std::time::Duration = std::time::Duration::from_secs(3600);

/// Removes files with no record in the store (an upload cut between its rename and its
/// record) once they are [`ORPHAN_AGE`] old.
pub async fn sweep_orphans(store: &foreman_store::Store, data_dir: &Path) -> u64 {
    let Ok(mut entries) = tokio::fs::read_dir(folder(data_dir)).await else {
        return 0;
    };
    let mut removed = 0;
    while let Ok(Some(entry)) = entries.next_entry().await {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(PARTIAL) || !super::ids::is_valid(&name, "file-") {
            continue;
        }
        let old = entry
            .metadata()
            .await
            .ok()
            .and_then(|meta| meta.modified().ok())
            .and_then(|at| at.elapsed().ok())
            .is_some_and(|age| age >= ORPHAN_AGE);
        if old
            && matches!(store.get_file(&name).await, Ok(None))
            && tokio::fs::remove_file(entry.path()).await.is_ok()
        {
            removed += 1;
        }
    }
    removed
}
