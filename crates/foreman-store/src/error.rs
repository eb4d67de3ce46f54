//! `store::Error`: every way a `Store` call can fail, typed so callers can tell a bad
//! configuration (fail fast at startup) from bad input and from a database fault.

/// A failure of a `Store` call.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The URL names a backend this build knows of but does not have yet.
    /// The URL could not be understood; the message lists the accepted forms.
    #[error(
        "invalid database url: {reason}; use a file path, sqlite://PATH, sqlite:PATH or postgres://USER:PASSWORD@HOST:PORT/DATABASE"
    )]
    InvalidUrl { reason: String },

    /// The database was written by a newer foreman whose schema this build does not know.
    #[error(
        "the database has schema version {found}, written by a newer foreman; this foreman knows versions up to {known}. Run the newer foreman, or restore a backup taken before the upgrade"
    )]
    SchemaTooNew { found: i64, known: i64 },

    /// A backup could not be written where it was asked to go.
    #[error("cannot back up to {path}: {reason}")]
    Backup { path: String, reason: String },

    /// A setting the store's guarantees depend on is not in force.
    #[error("sqlite setting {name} is {actual}, expected {expected}")]
    Pragma {
        name: &'static str,
        expected: String,
        actual: String,
    },

    /// The caller passed a value the store refuses to record.
    #[error("invalid job: {0}")]
    InvalidInput(String),

    /// The queue holds its maximum of jobs; nothing was inserted.
    #[error("the queue is full ({limit} jobs queued)")]
    QueueFull { limit: u64 },

    /// A stored row does not decode into the domain types.
    #[error("stored job {id} is corrupt: {reason}")]
    CorruptRow { id: String, reason: String },

    /// A batch of writes could not be committed (or could not start); none of it stands.
    #[error("database write failed: {0}")]
    Write(String),

    /// A read could not run to the end.
    #[error("database read failed: {0}")]
    Read(String),

    /// The store was closed; nothing more can be read or written through it.
    #[error("the job store is closed")]
    Closed,

    /// SQLite refused a statement.
    #[error("database error: {0}")]
    Database(#[from] rusqlite::Error),

    #[error("postgres error: {}", postgres_message(.0))]
    Postgres(#[from] tokio_postgres::Error),

    #[error("cannot connect to the database: {0}")]
    Connect(String),

    /// Job output is relayed through the database only when instances share it
    /// (PostgreSQL); one SQLite process keeps it in memory.
    #[error("job output crosses instances only on a shared (PostgreSQL) database")]
    NotShared,

    /// A backup of a PostgreSQL store is taken with PostgreSQL's own tools.
    #[error("foreman does not back up a PostgreSQL database itself; use pg_dump, e.g. {command}")]
    UsePgDump { command: String },

    /// An API key of this name exists already (revoked or not: names are not reused,
    /// so usage recorded under a name stays that key's).
    #[error("an API key named {0} exists already")]
    KeyExists(String),
}

/// Shorthand for results of store calls.
/// tokio-postgres shows a server error as "db error"; the server's own words are in it.
fn postgres_message(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} (SQLSTATE {})", db.message(), db.code().code()),
        None => match std::error::Error::source(error) {
            Some(source) => format!("{error}: {source}"),
            None => error.to_string(),
        },
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
