//! `foreman-bench`: replays named workloads straight to the Ollama simulator and
//! through foreman, as real processes on loopback, and reports both side by side.
//!
//! It writes `report.md`, `results.json` and one timeline SVG per scheduling
//! workload into the output folder. Every workload grades itself: its targets are
//! judged from the run, shown first in the report, and the process exits non-zero
//! when one is missed. `--quick` scales every workload down so the suite finishes in
//! under a minute and judges only the targets that hold at any scale (no errors,
//! every job committed, foreman swapping or loading less than the direct pass,
//! `/healthz` answering through stalled connections); CI runs it so.

mod batch;
mod capacity;
mod chart;
mod database;
mod driver;
mod embed_batch;
mod eta;
mod hostile;
mod instances;
mod ledger;
mod metrics;
mod procs;
mod report;
mod targets;
mod tenants;
mod workloads;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use serde_json::json;

use crate::database::Backend;
use crate::instances::INSTANCE_NAMES;
use crate::procs::Binaries;
use crate::workloads::{Bench, NAMES};

/// Benchmarks foreman against sending the same traffic straight to the target.
#[derive(Debug, Parser)]
#[command(name = "foreman-bench", version)]
struct Args {
    /// Scale every workload down and judge only the scale-independent targets.
    #[arg(long)]
    quick: bool,
    /// Workloads to run (overhead, interleaved, bursty, stream, memory, parallel,
    /// places, parallel-places, targets, drift, pollers, stalled, tenants, batch,
    /// embed-batch); all by default.
    #[arg(long = "workload")]
    workloads: Vec<String>,
    /// Where report.md, results.json and the charts go.
    #[arg(long, default_value = "bench-out")]
    out: PathBuf,
    /// Folder holding the `ollama-sim` and `foreman` binaries (default: next to this one).
    #[arg(long)]
    bin_dir: Option<PathBuf>,
    /// Where foreman keeps its queue: `sqlite` (a file per pass) or `postgres` (a
    /// database per pass on the cluster of `scripts/pg-test-cluster.sh start`, or on
    /// `--postgres-url`).
    #[arg(long, default_value = "sqlite")]
    database: String,
    /// foreman instances per pass, on one database (more than one needs `postgres`);
    /// clients are spread over them.
    #[arg(long, default_value_t = 1)]
    instances: usize,
    /// A PostgreSQL cluster's maintenance database URL, where each pass creates its own
    /// database (default: the project's throwaway cluster).
    #[arg(long)]
    postgres_url: Option<String>,
}

#[tokio::main]
async fn main() -> Result<ExitCode> {
    let args = Args::parse();
    // `pollers` and `stalled` hold thousands of connections open at once, on both
    // ends: the soft open-file limit goes up to the hard one (foreman inherits it).
    procs::raise_open_file_limit();
    // Every HTTP client of the run (reqwest with rustls) needs the crypto provider.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let database = Backend::new(&args.database, args.instances, args.postgres_url.clone())?;
    let names: Vec<String> = if args.workloads.is_empty() {
        NAMES.iter().map(|n| n.to_string()).collect()
    } else {
        args.workloads.clone()
    };
    for name in &names {
        anyhow::ensure!(
            NAMES.contains(&name.as_str()) || INSTANCE_NAMES.contains(&name.as_str()),
            "unknown workload {name:?}; known: {}, and with --database postgres --instances 2: {}",
            NAMES.join(", "),
            INSTANCE_NAMES.join(", ")
        );
    }
    let bench = Bench {
        binaries: Binaries::find(args.bin_dir.as_deref())?,
        quick: args.quick,
        scratch: tempfile::tempdir()?,
        database,
    };
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("creating {}", args.out.display()))?;
    let mut reports = Vec::new();
    for name in &names {
        let report = bench
            .run(name)
            .await
            .with_context(|| format!("workload {name}"))?;
        if let Some(svg) = &report.svg {
            std::fs::write(args.out.join(format!("{name}.svg")), svg)?;
        }
        reports.push(report);
    }
    let markdown = report::markdown(&reports);
    let command: Vec<String> = std::env::args().skip(1).collect();
    let header = format!(
        "## foreman-bench{}\n\nMachine: {} cores, {}. Queue: {}. Command: `foreman-bench {}`.\n\n",
        if args.quick { " (quick)" } else { "" },
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        std::env::consts::ARCH,
        bench.database.describe(),
        command.join(" "),
    );
    std::fs::write(args.out.join("report.md"), format!("{header}{markdown}"))?;
    let targets = report::all_targets(&reports);
    let met = targets::all_met(&targets);
    let results = json!({
        "quick": args.quick,
        "all_met": met,
        "targets": targets,
        "workloads": reports,
    });
    std::fs::write(
        args.out.join("results.json"),
        serde_json::to_vec_pretty(&results)?,
    )?;
    println!("{header}{markdown}");
    println!("written to {}", args.out.display());
    if met {
        Ok(ExitCode::SUCCESS)
    } else {
        eprintln!("foreman-bench: {}", report::verdict_line(&targets));
        Ok(ExitCode::FAILURE)
    }
}
