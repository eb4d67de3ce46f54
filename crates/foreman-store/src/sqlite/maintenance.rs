//! Looking after the SQLite file itself rather than the jobs in it: online backups,
//! giving pruned space back to the file system, and the write probe of readiness.
//!
//! Why a module of its own: none of this is a job's state change, and each piece has a
//! SQLite rule behind it that is easy to get wrong.
//!
//! - A WAL database is more than its main file (committed pages may still sit in
//!   `-wal`), so a file copy of a running queue can lose jobs or be torn. A backup here
//!   uses SQLite's backup API from a read connection in one step: one read transaction,
//!   so one consistent snapshot, taken while the writer goes on (WAL readers do not
//!   block it). The copy goes to a temporary file beside the destination, is switched
//!   to a rollback journal (a single self-contained file), checked, synced and only
//!   then renamed into place.
//! - Deleted rows leave free pages inside the file; SQLite gives them back only with
//!   auto-vacuum. New databases are created with `auto_vacuum=INCREMENTAL`; a database
//!   from an older foreman is switched once with a `VACUUM` when it is opened (the only
//!   way SQLite changes that setting). After pruning, the janitor asks for
//!   `PRAGMA incremental_vacuum` in bounded steps, so the writer thread is never held
//!   for long.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use crate::error::{Error, Result};

/// `PRAGMA auto_vacuum` reports INCREMENTAL as 2.
const AUTO_VACUUM_INCREMENTAL: i64 = 2;

/// What a finished backup holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupReport {
    /// The backup file, as given.
    pub path: PathBuf,
    /// Its size in bytes.
    pub bytes: u64,
    /// The schema version recorded in it.
    pub schema_version: i64,
    /// How many jobs it holds, in any state.
    pub jobs: u64,
}

/// Sets a new database to incremental auto-vacuum; converts an existing one that has
/// none with a one-time `VACUUM`. Runs on the writer connection at open, outside any
/// transaction. A conversion that fails (another process holds the file, the disk is
/// short of room for the copy VACUUM makes) is logged and retried at the next start:
/// the queue works without it, its file just does not shrink.
pub(super) fn ensure_incremental_vacuum(conn: &Connection) -> Result<()> {
    // On a file without tables this takes effect at once; on one with tables it only
    // asks for the mode the next VACUUM builds.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    if auto_vacuum(conn)? == AUTO_VACUUM_INCREMENTAL {
        return Ok(());
    }
    let started = Instant::now();
    match conn.execute_batch("VACUUM") {
        Ok(()) => tracing::info!(
            took_ms = started.elapsed().as_millis() as u64,
            "switched the database to incremental auto-vacuum (a one-time VACUUM), so pruning gives space back"
        ),
        Err(error) => tracing::warn!(
            %error,
            "could not switch the database to incremental auto-vacuum; pruned space stays in the file until the next start tries again"
        ),
    }
    Ok(())
}

fn auto_vacuum(conn: &Connection) -> Result<i64> {
    Ok(conn.pragma_query_value(None, "auto_vacuum", |row| row.get(0))?)
}

/// The pages the file has, free ones included.
pub(super) fn page_count(conn: &Connection) -> Result<i64> {
    Ok(conn.pragma_query_value(None, "page_count", |row| row.get(0))?)
}

/// Gives at most `max_pages` free pages back to the file system (inside the writer's
/// transaction); returns how many it gave back. Nothing on a database without
/// incremental auto-vacuum.
pub(super) fn reclaim(conn: &Connection, max_pages: u32) -> Result<u64> {
    if auto_vacuum(conn)? != AUTO_VACUUM_INCREMENTAL {
        return Ok(0);
    }
    let before = page_count(conn)?;
    // Each step of the statement frees one page: step it to the end.
    let mut statement = conn.prepare(&format!("PRAGMA incremental_vacuum({max_pages})"))?;
    let mut rows = statement.query([])?;
    while rows.next()?.is_some() {}
    let after = page_count(conn)?;
    Ok(u64::try_from(before - after).unwrap_or(0))
}

/// A write that leaves no trace but still changes pages and is committed like any
/// other: the cheapest proof the store can write. (An UPDATE to the same value would
/// not do: SQLite writes nothing for a cell whose bytes do not change.) Version -1
/// never names a migration, and the row is gone before the commit.
pub(super) fn probe(conn: &Connection) -> Result<()> {
    conn.prepare_cached(
        "INSERT INTO foreman_schema_migrations (version, name, applied_at)
         VALUES (-1, 'write probe', 0)",
    )?
    .execute([])?;
    conn.prepare_cached("DELETE FROM foreman_schema_migrations WHERE version = -1")?
        .execute([])?;
    Ok(())
}

/// Opens the database at `path` for a backup without changing it: read-only, no
/// migrations. Refuses a file that does not exist or is not a foreman database.
pub(super) fn open_source(path: &Path, busy_timeout: Duration) -> Result<Connection> {
    if !path.is_file() {
        return Err(Error::Backup {
            path: path.display().to_string(),
            reason: "there is no database file there (check FOREMAN_DATABASE / FOREMAN_DATA_DIR)"
                .to_owned(),
        });
    }
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(busy_timeout)?;
    let foreman: i64 = conn.query_row(
        "SELECT count(*) FROM sqlite_schema WHERE name = 'foreman_schema_migrations'",
        [],
        |row| row.get(0),
    )?;
    if foreman == 0 {
        return Err(Error::Backup {
            path: path.display().to_string(),
            reason: "it is not a foreman database".to_owned(),
        });
    }
    Ok(conn)
}

/// Copies the database `source` reads into a new file at `destination` (see the
/// module doc). Refuses an existing destination: a backup never overwrites.
pub(super) fn backup(
    source: &Connection,
    destination: &Path,
    busy_timeout: Duration,
) -> Result<BackupReport> {
    let refuse = |reason: String| Error::Backup {
        path: destination.display().to_string(),
        reason,
    };
    if destination.exists() {
        return Err(refuse(
            "a file is already there; a backup never overwrites one".into(),
        ));
    }
    let name = destination
        .file_name()
        .ok_or_else(|| refuse("it names no file".into()))?;
    let partial = destination.with_file_name(format!(
        ".{}.partial-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let outcome = write_copy(source, &partial, destination, busy_timeout).and_then(|report| {
        std::fs::rename(&partial, destination)
            .map_err(|error| refuse(format!("renaming the finished copy: {error}")))?;
        sync_parent(destination).map_err(|error| refuse(format!("syncing its folder: {error}")))?;
        Ok(BackupReport {
            path: destination.to_owned(),
            ..report
        })
    });
    if outcome.is_err() {
        for leftover in [partial.clone(), journal_of(&partial)] {
            let _ = std::fs::remove_file(leftover);
        }
    }
    outcome
}

fn journal_of(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push("-journal");
    PathBuf::from(name)
}

/// The copy, complete and checked, at `partial` (errors name `destination`).
fn write_copy(
    source: &Connection,
    partial: &Path,
    destination: &Path,
    busy_timeout: Duration,
) -> Result<BackupReport> {
    let refuse = |reason: String| Error::Backup {
        path: destination.display().to_string(),
        reason,
    };
    let _ = std::fs::remove_file(partial);
    let mut copy = Connection::open(partial)?;
    {
        let backup = Backup::new(source, &mut copy)?;
        let started = Instant::now();
        // All pages in one step: one read transaction on the source, so one snapshot.
        // Stepping in parts would restart whenever the running foreman commits.
        loop {
            match backup.step(-1)? {
                StepResult::Done => break,
                StepResult::Busy | StepResult::Locked if started.elapsed() < busy_timeout => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                StepResult::More | StepResult::Busy | StepResult::Locked => {
                    return Err(refuse("the database stayed locked".into()));
                }
                _ => return Err(refuse("unexpected backup step result".into())),
            }
        }
    }
    // The pages came with the source's WAL flag: make the copy one file.
    copy.pragma_update_and_check(None, "journal_mode", "DELETE", |row| {
        row.get::<_, String>(0)
    })?;
    let check: String = copy.query_row("PRAGMA quick_check", [], |row| row.get(0))?;
    if check != "ok" {
        return Err(refuse(format!("the copy fails SQLite's check: {check}")));
    }
    let schema_version = super::migrate::current_version(&copy)?;
    let jobs: i64 = copy.query_row("SELECT count(*) FROM jobs", [], |row| row.get(0))?;
    copy.close().map_err(|(_, error)| Error::from(error))?;
    let file = std::fs::File::open(partial).map_err(|error| refuse(error.to_string()))?;
    file.sync_all().map_err(|error| refuse(error.to_string()))?;
    let bytes = file
        .metadata()
        .map_err(|error| refuse(error.to_string()))?
        .len();
    Ok(BackupReport {
        path: partial.to_owned(),
        bytes,
        schema_version,
        jobs: u64::try_from(jobs).unwrap_or(0),
    })
}

/// Makes a rename in `path`'s folder durable.
fn sync_parent(path: &Path) -> std::io::Result<()> {
    let parent = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    std::fs::File::open(parent)?.sync_all()
}
