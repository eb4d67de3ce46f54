//! PostgreSQL for tests: a throwaway cluster started by `scripts/pg-test-cluster.sh` and a
//! fresh database per test on it.
//!
//! Why here: the store's own tests and the daemon's end-to-end tests both need it, and
//! both already enable the `testing` feature. The cluster URL comes from
//! `FOREMAN_TEST_POSTGRES_URL` when set (`scripts/test` starts the cluster and exports it);
//! otherwise the first test of each process runs the script's `start`, which is
//! idempotent and shared by all test processes of the working copy (nextest runs each test
//! in its own process). A missing PostgreSQL fails the test; it never skips it.

use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;

use tokio_postgres::NoTls;

/// The URL of the test cluster's maintenance database, starting the cluster if needed.
///
/// Panics when no cluster can be started: a missing PostgreSQL must fail the tests.
pub fn cluster_url() -> String {
    static URL: OnceLock<String> = OnceLock::new();
    URL.get_or_init(|| {
        if let Ok(url) = std::env::var("FOREMAN_TEST_POSTGRES_URL")
            && !url.trim().is_empty()
        {
            return url.trim().to_owned();
        }
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../scripts/pg-test-cluster.sh");
        let output = Command::new(&script)
            .arg("start")
            .output()
            .unwrap_or_else(|error| panic!("cannot run {}: {error}", script.display()));
        assert!(
            output.status.success(),
            "{} start failed ({}): {}",
            script.display(),
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .expect("the script prints a URL")
            .trim()
            .to_owned()
    })
    .clone()
}

/// `url` with its database name replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map_or(0, |at| at + 3);
    let authority_end = base[scheme_end..]
        .find('/')
        .map_or(base.len(), |at| scheme_end + at);
    let mut out = format!("{}/{name}", &base[..authority_end]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// A database of its own on the test cluster, dropped by [`TestDatabase::drop_database`].
#[derive(Debug)]
pub struct TestDatabase {
    pub url: String,
    name: String,
    admin_url: String,
}

impl TestDatabase {
    /// Creates an empty database with a unique name.
    pub async fn create() -> TestDatabase {
        let admin_url = cluster_url();
        let name = format!(
            "foreman_test_{}",
            ulid::Ulid::generate().to_string().to_lowercase()
        );
        admin(&admin_url, &format!("CREATE DATABASE {name}")).await;
        TestDatabase {
            url: with_database(&admin_url, &name),
            name,
            admin_url,
        }
    }

    /// How many sessions on this database carry `application_name`.
    pub async fn sessions(&self, application_name: &str) -> i64 {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to the test database: {error}"));
        let driver = tokio::spawn(connection);
        let count = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = $1",
                &[&application_name],
            )
            .await
            .unwrap_or_else(|error| panic!("counting sessions: {error}"))
            .get(0);
        drop(client);
        let _ = driver.await;
        count
    }

    /// Terminates the sessions on this database that carry `application_name`, as a
    /// server restart or a network cut would end them; returns how many.
    pub async fn terminate_sessions(&self, application_name: &str) -> i64 {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .unwrap_or_else(|error| panic!("cannot connect to the test database: {error}"));
        let driver = tokio::spawn(connection);
        let count = client
            .query_one(
                "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                 WHERE datname = current_database() AND application_name = $1) AS ended",
                &[&application_name],
            )
            .await
            .unwrap_or_else(|error| panic!("terminating sessions: {error}"))
            .get(0);
        drop(client);
        let _ = driver.await;
        count
    }

    /// Drops the database (and any connection still open to it).
    pub async fn drop_database(self) {
        admin(
            &self.admin_url,
            &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
        )
        .await;
    }
}

async fn admin(url: &str, sql: &str) {
    let (client, connection) = tokio_postgres::connect(url, NoTls)
        .await
        .unwrap_or_else(|error| panic!("cannot connect to the test cluster: {error}"));
    let driver = tokio::spawn(connection);
    client
        .batch_execute(sql)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
    drop(client);
    let _ = driver.await;
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_replaced() {
        assert_eq!(
            with_database("postgres://postgres@127.0.0.1:5/postgres", "t1"),
            "postgres://postgres@127.0.0.1:5/t1"
        );
        assert_eq!(
            with_database("postgres://u:p@h:5/db?connect_timeout=3", "t1"),
            "postgres://u:p@h:5/t1?connect_timeout=3"
        );
        assert_eq!(with_database("postgres://h", "t1"), "postgres://h/t1");
    }
}
