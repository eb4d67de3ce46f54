//! Schema migrations for the SQLite backend.
//!
//! Each migration is a SQL file embedded in the binary with a version number. Applied versions
//! are recorded in `foreman_schema_migrations`; each pending migration runs in its own
//! `BEGIN IMMEDIATE` transaction together with its record, so a crash mid-migration leaves the
//! schema at the previous version, and two processes opening one file apply it once.

use rusqlite::{Connection, OptionalExtension};

use crate::error::{Error, Result};

/// One embedded schema step.
struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

/// Every migration, in version order. Append only: a released migration never changes.
const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "jobs",
        sql: include_str!("migrations/0001_jobs.sql"),
    },
    Migration {
        version: 2,
        name: "webhooks",
        sql: include_str!("migrations/0002_webhooks.sql"),
    },
    Migration {
        version: 3,
        name: "artifacts",
        sql: include_str!("migrations/0003_artifacts.sql"),
    },
    Migration {
        version: 4,
        name: "webhook_retry_at",
        sql: include_str!("migrations/0004_webhook_retry_at.sql"),
    },
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// Brings the database up to `latest_version()`; refuses a database from a newer build.
pub(crate) fn run(conn: &Connection) -> Result<()> {
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS foreman_schema_migrations (
            version    INTEGER NOT NULL PRIMARY KEY,
            name       TEXT    NOT NULL,
            applied_at INTEGER NOT NULL
        ) STRICT",
    )?;

    let current = current_version(conn)?;
    let known = latest_version();
    if current > known {
        return Err(Error::SchemaTooNew {
            found: current,
            known,
        });
    }

    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        conn.execute_batch("BEGIN IMMEDIATE")?;
        match apply(conn, migration) {
            Ok(applied) => {
                conn.execute_batch("COMMIT")?;
                if applied {
                    tracing::info!(
                        version = migration.version,
                        name = migration.name,
                        "applied sqlite migration"
                    );
                }
            }
            Err(error) => {
                let _ = conn.execute_batch("ROLLBACK");
                return Err(error);
            }
        }
    }
    Ok(())
}

/// Applies one migration inside the caller's transaction; false if another process
/// applied it between our read and our write lock.
fn apply(conn: &Connection, migration: &Migration) -> Result<bool> {
    let already: Option<i64> = conn
        .query_row(
            "SELECT version FROM foreman_schema_migrations WHERE version = ?1",
            [migration.version],
            |row| row.get(0),
        )
        .optional()?;
    if already.is_some() {
        return Ok(false);
    }
    conn.execute_batch(migration.sql)?;
    // The migration log is bookkeeping for operators, so the database clock is fine here.
    conn.execute(
        "INSERT INTO foreman_schema_migrations (version, name, applied_at)
         VALUES (?1, ?2, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
        rusqlite::params![migration.version, migration.name],
    )?;
    Ok(true)
}

/// The highest applied migration, 0 for a fresh database.
pub(crate) fn current_version(conn: &Connection) -> Result<i64> {
    let version: i64 = conn.query_row(
        "SELECT COALESCE(MAX(version), 0) FROM foreman_schema_migrations",
        [],
        |row| row.get(0),
    )?;
    Ok(version)
}
