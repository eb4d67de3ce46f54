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
    Migration {
        version: 5,
        name: "more_job_kinds",
        sql: include_str!("migrations/0005_more_job_kinds.sql"),
    },
    Migration {
        version: 6,
        name: "load_keys_and_targets",
        sql: include_str!("migrations/0006_load_keys_and_targets.sql"),
    },
    Migration {
        version: 7,
        name: "sync_jobs_and_interruptions",
        sql: include_str!("migrations/0007_sync_jobs_and_interruptions.sql"),
    },
    Migration {
        version: 8,
        name: "target_leases",
        sql: include_str!("migrations/0008_target_leases.sql"),
    },
    Migration {
        version: 9,
        name: "instances_and_outbox_in_code",
        sql: include_str!("migrations/0009_instances_and_outbox_in_code.sql"),
    },
    Migration {
        version: 10,
        name: "batches",
        sql: include_str!("migrations/0010_batches.sql"),
    },
    Migration {
        version: 11,
        name: "api_keys",
        sql: include_str!("migrations/0011_api_keys.sql"),
    },
    Migration {
        version: 12,
        name: "job_callers",
        sql: include_str!("migrations/0012_job_callers.sql"),
    },
    Migration {
        version: 13,
        name: "embedding_kinds_and_file_expiry",
        sql: include_str!("migrations/0013_embedding_kinds_and_file_expiry.sql"),
    },
    Migration {
        version: 14,
        name: "batch_callers",
        sql: include_str!("migrations/0014_batch_callers.sql"),
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The rebuild of `jobs` for the new kinds keeps every row, and the webhook rows
    /// that the drop of the old table would have cascaded away.
    #[test]
    fn new_kinds_keep_jobs_and_webhook_rows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = Connection::open(dir.path().join("old.db")).expect("open");
        conn.pragma_update(None, "foreign_keys", "ON").unwrap();
        conn.execute_batch(
            "CREATE TABLE foreman_schema_migrations (
                version INTEGER NOT NULL PRIMARY KEY, name TEXT NOT NULL, applied_at INTEGER NOT NULL
            ) STRICT",
        )
        .unwrap();
        for migration in MIGRATIONS.iter().filter(|m| m.version <= 4) {
            conn.execute_batch(migration.sql).unwrap();
            conn.execute(
                "INSERT INTO foreman_schema_migrations VALUES (?1, ?2, 0)",
                rusqlite::params![migration.version, migration.name],
            )
            .unwrap();
        }
        conn.execute_batch(
            "INSERT INTO jobs (id, kind, model, payload, state, priority, max_attempts, run_after,
                               created_at, webhook_url, idempotency_key)
             VALUES ('01J0000000000000000000000A', 'chat', 'm', '{}', 'queued', 0, 1, 0, 1,
                     'http://hook.test/', 'key-a');
             UPDATE jobs SET state = 'cancelled', finished_at = 2;
             INSERT INTO webhook_attempts (delivery_id, attempt, at, status, latency_ms)
                 SELECT id, 1, 3, 500, 4 FROM webhook_deliveries;",
        )
        .unwrap();
        let rejected = conn.execute(
            "INSERT INTO jobs (id, kind, model, payload, state, priority, max_attempts, run_after, created_at)
             VALUES ('01J0000000000000000000000B', 'anthropic_messages', 'm', '{}', 'queued', 0, 1, 0, 1)",
            [],
        );
        assert!(rejected.is_err(), "version 4 refuses the new kinds");

        run(&conn).unwrap();
        assert_eq!(current_version(&conn).unwrap(), latest_version());
        assert_eq!(
            conn.query_row(
                "SELECT load_options FROM jobs WHERE idempotency_key = 'key-a'",
                [],
                |row| row.get::<_, String>(0)
            )
            .unwrap(),
            "",
            "old jobs have no load options"
        );
        let count = |sql: &str| -> i64 { conn.query_row(sql, [], |row| row.get(0)).unwrap() };
        assert_eq!(
            count("SELECT count(*) FROM jobs WHERE idempotency_key = 'key-a'"),
            1
        );
        assert_eq!(count("SELECT count(*) FROM webhook_deliveries"), 1);
        assert_eq!(
            count("SELECT count(*) FROM webhook_attempts WHERE status = 500"),
            1
        );
        for kind in ["openai_responses", "anthropic_messages"] {
            conn.execute(
                "INSERT INTO jobs (id, kind, model, payload, state, priority, max_attempts, run_after,
                                   created_at, webhook_url)
                 VALUES (?1, ?2, 'm', '{}', 'queued', 0, 1, 0, 1, 'http://hook.test/')",
                rusqlite::params![format!("01J00000000000000000000{}", kind.len()), kind],
            )
            .unwrap();
        }
        assert!(
            conn.execute(
                "INSERT INTO jobs (id, kind, model, payload, state, priority, max_attempts, run_after, created_at)
                 VALUES ('01J0000000000000000000000C', 'embeddings', 'm', '{}', 'queued', 0, 1, 0, 1)",
                [],
            )
            .is_err(),
            "the kind is still checked"
        );
        // Migration 13 widened the check in place: the embedding kinds go in, on this
        // connection (which ran it) as on a new one, and the file stays sound.
        for (id, kind) in [
            ("01J0000000000000000000000D", "embed"),
            ("01J0000000000000000000000E", "openai_embedding"),
        ] {
            conn.execute(
                "INSERT INTO jobs (id, kind, model, payload, state, priority, max_attempts, run_after, created_at)
                 VALUES (?1, ?2, 'm', '{}', 'queued', 0, 1, 0, 1)",
                rusqlite::params![id, kind],
            )
            .unwrap();
        }
        let other = Connection::open(dir.path().join("old.db")).expect("open again");
        other
            .execute(
                "INSERT INTO jobs (id, kind, model, payload, state, priority, max_attempts, run_after, created_at)
                 VALUES ('01J0000000000000000000000F', 'openai_embedding', 'm', '{}', 'queued', 0, 1, 0, 1)",
                [],
            )
            .unwrap();
        let integrity: String = conn
            .query_row("PRAGMA integrity_check", [], |row| row.get(0))
            .unwrap();
        assert_eq!(integrity, "ok");
        // Migration 5 brought the outbox trigger back with the table; migration 9 drops
        // it, since the store's code writes deliveries now (`sqlite/outbox.rs`).
        conn.execute(
            "UPDATE jobs SET state = 'cancelled', finished_at = 5 WHERE state = 'queued'",
            [],
        )
        .unwrap();
        assert_eq!(count("SELECT count(*) FROM webhook_deliveries"), 1);
        assert_eq!(
            count("SELECT count(*) FROM sqlite_schema WHERE type = 'trigger'"),
            0
        );
        assert_eq!(
            count("SELECT count(*) FROM sqlite_schema WHERE name = 'sqlite_autoindex_jobs_1'"),
            1
        );
        assert_eq!(count("SELECT count(*) FROM pragma_foreign_key_check"), 0);
    }
}
