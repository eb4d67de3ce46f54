//! Schema migrations for the SQLite backend, without sqlx's `migrate!` macro (the workspace
//! builds sqlx without macros).
//!
//! Each migration is a SQL file embedded in the binary with a version number. Applied versions
//! are recorded in `foreman_schema_migrations`; each pending migration runs in its own
//! `BEGIN IMMEDIATE` transaction together with its record, so a crash mid-migration leaves the
//! schema at the previous version, and two processes opening one file apply it once.

use sqlx::SqlitePool;

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
];

/// The schema version this build writes.
pub(crate) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

/// Brings the database up to `latest_version()`; refuses a database from a newer build.
pub(crate) async fn run(writer: &SqlitePool) -> Result<()> {
    sqlx::raw_sql(
        "CREATE TABLE IF NOT EXISTS foreman_schema_migrations (
            version    INTEGER NOT NULL PRIMARY KEY,
            name       TEXT    NOT NULL,
            applied_at INTEGER NOT NULL
        ) STRICT",
    )
    .execute(writer)
    .await?;

    let current = current_version(writer).await?;
    let known = latest_version();
    if current > known {
        return Err(Error::SchemaTooNew {
            found: current,
            known,
        });
    }

    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        let mut tx = writer.begin_with("BEGIN IMMEDIATE").await?;
        // Another process may have applied it between our read and our write lock.
        let already: Option<i64> =
            sqlx::query_scalar("SELECT version FROM foreman_schema_migrations WHERE version = ?1")
                .bind(migration.version)
                .fetch_optional(&mut *tx)
                .await?;
        if already.is_some() {
            tx.rollback().await?;
            continue;
        }
        sqlx::raw_sql(migration.sql).execute(&mut *tx).await?;
        // The migration log is bookkeeping for operators, so the database clock is fine here.
        sqlx::query(
            "INSERT INTO foreman_schema_migrations (version, name, applied_at)
             VALUES (?1, ?2, CAST(unixepoch('subsec') * 1000 AS INTEGER))",
        )
        .bind(migration.version)
        .bind(migration.name)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied sqlite migration"
        );
    }
    Ok(())
}

/// The highest applied migration, 0 for a fresh database.
pub(crate) async fn current_version(pool: &SqlitePool) -> Result<i64> {
    let version: i64 =
        sqlx::query_scalar("SELECT COALESCE(MAX(version), 0) FROM foreman_schema_migrations")
            .fetch_one(pool)
            .await?;
    Ok(version)
}
