//! Where foreman keeps its queue during a pass: a fresh SQLite file in the scratch
//! folder, or a fresh database on a PostgreSQL cluster (the project's throwaway one,
//! `scripts/pg-test-cluster.sh start`, unless `--postgres-url` names another), with one
//! or several foreman instances on it.
//!
//! It exists so that every workload starts foreman the same way whatever the backend,
//! and so the ledger reads the jobs back from wherever they were committed.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

/// The backend of a run, chosen on the command line.
#[derive(Debug, Clone)]
pub enum Backend {
    Sqlite,
    Postgres {
        /// The cluster's maintenance database, where fresh databases are created.
        cluster: String,
        /// foreman processes per pass, all on one database.
        instances: usize,
        /// Their `FOREMAN_LEASE_TTL`.
        lease_ttl: String,
    },
}

/// The lease TTL of the instances of a PostgreSQL run (foreman's default is 10 s; the
/// benchmark states the one it measures takeover with).
pub const LEASE_TTL: &str = "2s";

impl Backend {
    /// The backend `--database` names; PostgreSQL's cluster from `url`, or started by
    /// the project's script.
    pub fn new(database: &str, instances: usize, url: Option<String>) -> Result<Backend> {
        anyhow::ensure!(instances >= 1, "--instances must be at least 1");
        match database {
            "sqlite" => {
                anyhow::ensure!(
                    instances == 1,
                    "several instances need a shared database: add --database postgres"
                );
                Ok(Backend::Sqlite)
            }
            "postgres" => {
                let cluster = match url {
                    Some(url) => url,
                    None => start_test_cluster()?,
                };
                Ok(Backend::Postgres {
                    cluster,
                    instances,
                    lease_ttl: LEASE_TTL.to_owned(),
                })
            }
            other => bail!("--database is sqlite or postgres, not {other:?}"),
        }
    }

    pub fn instances(&self) -> usize {
        match self {
            Backend::Sqlite => 1,
            Backend::Postgres { instances, .. } => *instances,
        }
    }

    /// For the report's header.
    pub fn describe(&self) -> String {
        match self {
            Backend::Sqlite => "SQLite (a file per pass)".to_owned(),
            Backend::Postgres {
                instances,
                lease_ttl,
                ..
            } => format!(
                "PostgreSQL (a database per pass, loopback, fsync on), {instances} foreman instance(s), FOREMAN_LEASE_TTL={lease_ttl}"
            ),
        }
    }

    /// A new, empty queue for one pass named `tag`.
    pub async fn fresh(&self, scratch: &Path, tag: &str) -> Result<QueueDb> {
        let tag: String = tag
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        let unique = crate::workloads::unique();
        match self {
            Backend::Sqlite => Ok(QueueDb::File(scratch.join(format!("{tag}-{unique}.db")))),
            Backend::Postgres {
                cluster, lease_ttl, ..
            } => {
                let name = format!("bench_{tag}_{unique}").to_lowercase();
                let name: String = name.chars().take(63).collect();
                let (client, connection) = tokio_postgres::connect(cluster, tokio_postgres::NoTls)
                    .await
                    .with_context(|| format!("connecting to {cluster}"))?;
                tokio::spawn(connection);
                client
                    .batch_execute(&format!("CREATE DATABASE \"{name}\""))
                    .await
                    .with_context(|| format!("creating the database {name}"))?;
                Ok(QueueDb::Postgres {
                    url: with_database(cluster, &name),
                    data: scratch.join(&name),
                    lease_ttl: lease_ttl.clone(),
                })
            }
        }
    }
}

/// One pass's queue.
#[derive(Debug, Clone)]
pub enum QueueDb {
    File(PathBuf),
    Postgres {
        url: String,
        /// Under it, one data folder per instance.
        data: PathBuf,
        lease_ttl: String,
    },
}

impl QueueDb {
    /// `FOREMAN_DATABASE`.
    pub fn location(&self) -> String {
        match self {
            QueueDb::File(path) => path.display().to_string(),
            QueueDb::Postgres { url, .. } => url.clone(),
        }
    }

    /// The environment of instance `index` beyond `FOREMAN_DATABASE`: its data folder,
    /// and on PostgreSQL its instance id and lease TTL.
    pub fn instance_env(&self, index: usize) -> Vec<(String, String)> {
        match self {
            QueueDb::File(path) => {
                let data = if index == 0 {
                    path.with_extension("data")
                } else {
                    path.with_extension(format!("{index}.data"))
                };
                vec![("FOREMAN_DATA_DIR".into(), data.display().to_string())]
            }
            QueueDb::Postgres {
                data, lease_ttl, ..
            } => vec![
                (
                    "FOREMAN_DATA_DIR".into(),
                    data.join(format!("instance-{index}")).display().to_string(),
                ),
                ("FOREMAN_INSTANCE_ID".into(), instance_id(index)),
                ("FOREMAN_LEASE_TTL".into(), lease_ttl.clone()),
            ],
        }
    }
}

/// The `FOREMAN_INSTANCE_ID` of instance `index`.
pub fn instance_id(index: usize) -> String {
    format!("bench-{index}")
}

/// `url` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |i| i + 3);
    let base = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{base}/{name}?{query}"),
        None => format!("{base}/{name}"),
    }
}

/// Starts (or finds) the project's throwaway cluster and answers its URL.
fn start_test_cluster() -> Result<String> {
    let script = find_script().context(
        "scripts/pg-test-cluster.sh not found: run from the repository or pass --postgres-url",
    )?;
    let output = Command::new(&script)
        .arg("start")
        // The benchmark may run longer than the script's default idle time.
        .env("FOREMAN_PG_TEST_IDLE", "3600")
        .output()
        .with_context(|| format!("running {}", script.display()))?;
    anyhow::ensure!(
        output.status.success(),
        "{} start failed: {}",
        script.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let url = String::from_utf8(output.stdout)?
        .lines()
        .rev()
        .find(|line| line.starts_with("postgres"))
        .context("the script printed no URL")?
        .trim()
        .to_owned();
    Ok(url)
}

fn find_script() -> Option<PathBuf> {
    let relative = Path::new("scripts/pg-test-cluster.sh");
    let mut dir = std::env::current_dir().ok();
    while let Some(here) = dir {
        if here.join(relative).is_file() {
            return Some(here.join(relative));
        }
        dir = here.parent().map(Path::to_path_buf);
    }
    let exe = std::env::current_exe().ok()?;
    exe.ancestors()
        .map(|dir| dir.join(relative))
        .find(|path| path.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_name_replaces_the_clusters() {
        assert_eq!(
            with_database("postgres://u@127.0.0.1:5433/postgres", "b1"),
            "postgres://u@127.0.0.1:5433/b1"
        );
        assert_eq!(
            with_database("postgres://u@h:1/postgres?sslmode=disable", "b1"),
            "postgres://u@h:1/b1?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://u@h:1", "b1"),
            "postgres://u@h:1/b1"
        );
    }

    #[test]
    fn several_instances_need_postgres() {
        assert!(Backend::new("sqlite", 2, None).is_err());
        assert!(Backend::new("mysql", 1, None).is_err());
        assert!(Backend::new("sqlite", 1, None).unwrap().instances() == 1);
    }
}
