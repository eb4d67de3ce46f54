//! `foreman db ...`: operations on the queue's database file itself, run beside a
//! running foreman or without one. Why apart from `foreman jobs` (the API client):
//! these talk to the file, not to the daemon, and find it with the same settings
//! `foreman serve` uses (`FOREMAN_DATABASE`, `FOREMAN_DATA_DIR`, the platform's data
//! directory).
//!
//! `backup PATH` takes an online backup with SQLite's backup API: one consistent
//! snapshot, safe while foreman writes (a copy of the files of a WAL database is
//! not), that opens as a foreman database with every job committed at the snapshot.
//! Nothing is migrated or written in the source, so any version of foreman may be
//! running on it.
//!
//! Exit codes: 0 done, 1 the operation failed, 2 bad settings.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use foreman_store::Store;
use serde_json::json;

use crate::config::{Platform, StorageArgs};

/// `foreman db <command>`.
#[derive(Debug, Args)]
pub struct DbArgs {
    #[command(subcommand)]
    pub command: DbCommand,
}

#[derive(Debug, Subcommand)]
pub enum DbCommand {
    /// Copy the database into a new file, online (foreman may keep running).
    Backup(BackupArgs),
}

#[derive(Debug, Args)]
pub struct BackupArgs {
    /// The new file; refused if it exists.
    pub path: PathBuf,
    /// Which database: the same settings as `foreman serve`.
    #[command(flatten)]
    pub storage: StorageArgs,
    /// Print the outcome as one JSON object (errors too, as {"error": "..."}).
    #[arg(long)]
    pub json: bool,
}

/// Runs a `foreman db` command; the exit code follows the module doc.
pub async fn run(args: DbArgs) -> ExitCode {
    match args.command {
        DbCommand::Backup(backup) => run_backup(backup).await,
    }
}

async fn run_backup(args: BackupArgs) -> ExitCode {
    let (database, _) = match args.storage.resolve(&Platform::current()) {
        Ok(location) => location,
        Err(error) => return fail(args.json, &error.to_string(), 2),
    };
    let report = match Store::backup_database(&database, &args.path).await {
        Ok(report) => report,
        Err(error) => return fail(args.json, &error.to_string(), 1),
    };
    let absolute = |path: &std::path::Path| {
        std::path::absolute(path)
            .unwrap_or_else(|_| path.to_owned())
            .display()
            .to_string()
    };
    // The file the URL names, for people (`sqlite://PATH` and `sqlite:PATH` too).
    let file = ["sqlite://", "sqlite:"]
        .iter()
        .find_map(|prefix| database.strip_prefix(prefix))
        .unwrap_or(&database);
    let source = absolute(std::path::Path::new(file));
    let backup = absolute(&report.path);
    if args.json {
        println!(
            "{}",
            json!({
                "database": source,
                "backup": backup,
                "bytes": report.bytes,
                "jobs": report.jobs,
                "schema_version": report.schema_version,
            })
        );
    } else {
        println!(
            "backed up {source} to {backup}: {} jobs, schema version {}, {} bytes",
            report.jobs, report.schema_version, report.bytes
        );
    }
    ExitCode::SUCCESS
}

fn fail(json_output: bool, message: &str, code: u8) -> ExitCode {
    if json_output {
        println!("{}", json!({ "error": message }));
    } else {
        eprintln!("foreman: {message}");
    }
    ExitCode::from(code)
}
