//! What foreman's database holds once a pass is over and foreman has exited.
//!
//! The answers alone do not show that every job was recorded; this reads the file
//! (or PostgreSQL database) foreman left behind. It opens it with its own connection
//! (a SQLite file read-only), so the check does not go through the store code it
//! checks, and it reads only the columns the job table documents (`id`, `state`,
//! `model`, `created_at`, `started_at`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use rusqlite::{Connection, OpenFlags};
use serde::Serialize;

use crate::database::QueueDb;

/// One job's row, as far as the benchmark needs it.
#[derive(Debug, Clone, Serialize)]
pub struct JobRow {
    pub id: String,
    pub model: String,
    pub state: String,
    /// Unix milliseconds.
    pub created_at: i64,
    /// When its first attempt was claimed; `None` if it never ran.
    pub started_at: Option<i64>,
}

impl JobRow {
    /// Time in foreman's queue before the first claim, in ms.
    pub fn wait_ms(&self) -> Option<f64> {
        self.started_at.map(|s| (s - self.created_at) as f64)
    }
}

/// The job table of one pass.
#[derive(Debug, Clone, Serialize)]
pub struct Ledger {
    pub jobs: Vec<JobRow>,
}

impl Ledger {
    /// Reads every job of the pass's database.
    pub async fn read(database: &QueueDb) -> Result<Ledger> {
        match database {
            QueueDb::File(path) => {
                let path: PathBuf = path.to_owned();
                tokio::task::spawn_blocking(move || read_blocking(&path))
                    .await
                    .context("reading the database stopped")?
            }
            QueueDb::Postgres { url, .. } => read_postgres(url).await,
        }
    }

    /// How many jobs are in `state`.
    pub fn count(&self, state: &str) -> u64 {
        self.jobs.iter().filter(|j| j.state == state).count() as u64
    }

    /// Jobs per state, for the report.
    pub fn by_state(&self) -> BTreeMap<String, u64> {
        let mut counts = BTreeMap::new();
        for job in &self.jobs {
            *counts.entry(job.state.clone()).or_insert(0) += 1;
        }
        counts
    }
}

async fn read_postgres(url: &str) -> Result<Ledger> {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .with_context(|| format!("connecting to {url}"))?;
    tokio::spawn(connection);
    let rows = client
        .query(
            "SELECT id, model, state, created_at, started_at FROM jobs ORDER BY id",
            &[],
        )
        .await
        .with_context(|| format!("reading the jobs of {url}"))?;
    let jobs = rows
        .iter()
        .map(|row| JobRow {
            id: row.get(0),
            model: row.get(1),
            state: row.get(2),
            created_at: row.get(3),
            started_at: row.get(4),
        })
        .collect();
    Ok(Ledger { jobs })
}

fn read_blocking(path: &Path) -> Result<Ledger> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .with_context(|| format!("opening {} read-only", path.display()))?;
    let mut statement =
        conn.prepare("SELECT id, model, state, created_at, started_at FROM jobs ORDER BY id")?;
    let jobs = statement
        .query_map([], |row| {
            Ok(JobRow {
                id: row.get(0)?,
                model: row.get(1)?,
                state: row.get(2)?,
                created_at: row.get(3)?,
                started_at: row.get(4)?,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
        .with_context(|| format!("reading the jobs of {}", path.display()))?;
    Ok(Ledger { jobs })
}
