//! Versioned migrations of the PostgreSQL schema, applied at open.
//!
//! Why a transaction under an advisory lock: several instances may start together on one
//! database. Each takes `pg_advisory_xact_lock` first, so one migrates while the others
//! wait, and then find nothing left to do. DDL is transactional in PostgreSQL, so a failed
//! migration leaves nothing half-applied. A database whose recorded version is above the
//! newest this build knows is refused ([`Error::SchemaTooNew`]), as on SQLite.

use crate::error::{Error, Result};

/// The advisory lock key of migrations ("foreman" + 2 as bytes).
const MIGRATION_LOCK: i64 = 0x666f_7265_6d61_6e02;

struct Migration {
    version: i64,
    name: &'static str,
    sql: &'static str,
}

const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "jobs",
        sql: include_str!("migrations/0001_jobs.sql"),
    },
    Migration {
        version: 2,
        name: "signals",
        sql: include_str!("migrations/0002_signals.sql"),
    },
    Migration {
        version: 3,
        name: "target_leases",
        sql: include_str!("migrations/0003_target_leases.sql"),
    },
    Migration {
        version: 4,
        name: "job_output",
        sql: include_str!("migrations/0004_job_output.sql"),
    },
    Migration {
        version: 5,
        name: "instances",
        sql: include_str!("migrations/0005_instances.sql"),
    },
    Migration {
        version: 6,
        name: "batches",
        sql: include_str!("migrations/0006_batches.sql"),
    },
    Migration {
        version: 7,
        name: "api_keys",
        sql: include_str!("migrations/0007_api_keys.sql"),
    },
    Migration {
        version: 8,
        name: "job_callers",
        sql: include_str!("migrations/0008_job_callers.sql"),
    },
    Migration {
        version: 9,
        name: "embedding_kinds_and_file_expiry",
        sql: include_str!("migrations/0009_embedding_kinds_and_file_expiry.sql"),
    },
    Migration {
        version: 10,
        name: "quiet_claims",
        sql: include_str!("migrations/0010_quiet_claims.sql"),
    },
    Migration {
        version: 11,
        name: "batch_callers",
        sql: include_str!("migrations/0011_batch_callers.sql"),
    },
    Migration {
        version: 12,
        name: "new_work_after_commit",
        sql: include_str!("migrations/0012_new_work_after_commit.sql"),
    },
];

pub(super) fn latest_version() -> i64 {
    MIGRATIONS.last().map_or(0, |migration| migration.version)
}

pub(super) async fn run(client: &mut deadpool_postgres::Object) -> Result<()> {
    let transaction = client.transaction().await?;
    transaction
        .execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    transaction
        .batch_execute(
            "CREATE TABLE IF NOT EXISTS foreman_schema_migrations (
                 version    bigint NOT NULL PRIMARY KEY,
                 name       text   NOT NULL,
                 applied_at bigint NOT NULL
             )",
        )
        .await?;
    let current = current_version(&transaction).await?;
    let known = latest_version();
    if current > known {
        return Err(Error::SchemaTooNew {
            found: current,
            known,
        });
    }
    for migration in MIGRATIONS.iter().filter(|m| m.version > current) {
        transaction.batch_execute(migration.sql).await?;
        transaction
            .execute(
                "INSERT INTO foreman_schema_migrations (version, name, applied_at)
                 VALUES ($1, $2, (extract(epoch FROM now()) * 1000)::bigint)",
                &[&migration.version, &migration.name],
            )
            .await?;
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "applied postgres migration"
        );
    }
    transaction.commit().await?;
    Ok(())
}

pub(super) async fn current_version<C: deadpool_postgres::GenericClient>(
    client: &C,
) -> Result<i64> {
    Ok(client
        .query_one(
            "SELECT coalesce(max(version), 0)::bigint FROM foreman_schema_migrations",
            &[],
        )
        .await?
        .get(0))
}
