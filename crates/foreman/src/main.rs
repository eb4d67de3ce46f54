//! The `foreman` binary. `foreman serve` parses the settings, sets up logging, binds
//! the listener, optionally starts built-in simulators (one per `sim` target), and runs
//! [`foreman::serve`] until SIGINT or SIGTERM; `foreman jobs ...` is the client of a
//! running daemon's jobs API ([`foreman::cli`]), `foreman status` its operator view
//! ([`foreman::status_cli`]).

use std::io::Write as _;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use foreman::config::{ConfigError, ServeArgs};
use tokio_util::sync::CancellationToken;

/// A durable, model-draining job queue in front of Ollama.
#[derive(Debug, Parser)]
#[command(name = "foreman", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(Box<ServeArgs>),
    /// Submit, inspect, wait for and cancel async jobs on a running daemon.
    Jobs(Box<foreman::cli::JobsArgs>),
    /// Submit, watch, list, cancel and download OpenAI-style batches (JSONL files of requests).
    Batch(Box<foreman::cli::batch::BatchArgs>),
    /// Show a running daemon's targets, what they have loaded and run, and the queue.
    Status(foreman::status_cli::StatusArgs),
    /// Print a shell completion script.
    Completions(foreman::cli::CompletionsArgs),
    /// Print the man page (roff).
    Man,
    /// Operations on the queue's database file (backup), beside a running daemon.
    Db(foreman::db_cli::DbArgs),
    /// Create, list and revoke API keys, and show what they used (on the database).
    Keys(foreman::keys::cli::KeysArgs),
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(error) => match ConfigError::from_clap(&error) {
            // One line naming the flag and its variable, as for every bad setting.
            Some(error) => {
                eprintln!("foreman: {error}");
                return ExitCode::from(2);
            }
            None => error.exit(),
        },
    };
    let args = match cli.command {
        Command::Serve(args) => args,
        Command::Jobs(jobs) => {
            let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
            return runtime.block_on(foreman::cli::run(*jobs));
        }
        Command::Batch(batch) => {
            let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
            return runtime.block_on(foreman::cli::batch::run(*batch));
        }
        Command::Status(status) => {
            let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
            return runtime.block_on(foreman::status_cli::run(status));
        }
        Command::Completions(args) => {
            return foreman::cli::completions(<Cli as clap::CommandFactory>::command(), args.shell);
        }
        Command::Man => return foreman::cli::man(<Cli as clap::CommandFactory>::command()),
        Command::Db(db) => {
            let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
            return runtime.block_on(foreman::db_cli::run(db));
        }
        Command::Keys(keys) => {
            let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
            return runtime.block_on(foreman::keys::cli::run(keys));
        }
    };
    let mut config = match args.validate() {
        Ok(config) => config,
        Err(error) => {
            eprintln!("foreman: {error}");
            return ExitCode::from(2);
        }
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    allocator::tune();
    foreman::logging::init(&config.log, config.log_format);
    if let Some(stray) = args.storage.stray_database(&config.database) {
        tracing::warn!(
            found = %stray.display(),
            opened = %config.database,
            "a foreman.db in the working directory is not the queue this foreman opens (the default moved to the data directory); move it there or set FOREMAN_DATABASE to keep using it"
        );
    }
    let runtime = tokio::runtime::Runtime::new().expect("the tokio runtime starts");
    runtime.block_on(async move {
        let listener = match tokio::net::TcpListener::bind(config.addr).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!(
                    "foreman: cannot listen on {} (FOREMAN_ADDR): {error}",
                    config.addr
                );
                return ExitCode::from(2);
            }
        };
        let mut simulators = Vec::new();
        for target in config.targets.iter_mut().filter(|t| t.is_simulated()) {
            let simulated = ollama_sim::SimConfig {
                num_parallel: target.slots,
                max_loaded: target.places,
                ..ollama_sim::SimConfig::default()
            };
            match ollama_sim::spawn("127.0.0.1:0".parse().expect("a valid address"), simulated)
                .await
            {
                Ok(simulator) => {
                    target.url = simulator.url();
                    simulators.push(simulator);
                }
                Err(error) => {
                    eprintln!(
                        "foreman: cannot start the simulator of target {}: {error}",
                        target.name
                    );
                    return ExitCode::FAILURE;
                }
            }
        }
        // The handlers are in place before the banner: a supervisor that stops foreman
        // as soon as it has read the address gets a graceful shutdown, not the default
        // action of SIGTERM.
        let mut signals = Signals::new();
        let address = listener
            .local_addr()
            .map(|a| a.to_string())
            .unwrap_or_default();
        // One write, whose failure is ignored: a supervisor that reads only the first
        // line and closes the pipe must not take foreman down.
        let mut banner = format!("foreman listening on http://{address}\n");
        for target in &config.targets {
            let simulated = simulators.iter().any(|s| s.url() == target.url);
            banner.push_str(&format!(
                "target {}: {}{}, slots={}, places={}\n",
                target.name,
                target.url,
                if simulated { " (simulated)" } else { "" },
                target.slots,
                target.places
            ));
        }
        let mut stdout = std::io::stdout().lock();
        let _ = stdout
            .write_all(banner.as_bytes())
            .and_then(|()| stdout.flush());
        drop(stdout);
        let shutdown = CancellationToken::new();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            signals.next().await;
            // `foreman::serve` says what the shutdown waits for.
            signal.cancel();
            let second = signals.next().await;
            tracing::warn!(
                "a second signal ({second}): exiting now; running jobs stay in the queue and are requeued at the next start"
            );
            std::process::exit(128 + second as i32);
        });
        match foreman::serve(listener, config, shutdown).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => {
                eprintln!("foreman: {error}");
                ExitCode::FAILURE
            }
        }
    })
}

/// The signals that stop foreman, by number (the exit code is 128 + it, as a shell
/// reports a process a signal ended).
#[derive(Debug, Clone, Copy)]
enum Stop {
    Interrupt = 2,
    Terminate = 15,
}

impl std::fmt::Display for Stop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Stop::Interrupt => "SIGINT",
            Stop::Terminate => "SIGTERM",
        })
    }
}

/// SIGINT and SIGTERM, as they come: the first starts a graceful shutdown, the second
/// ends the process at once.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            interrupt: signal(SignalKind::interrupt()).expect("installing a SIGINT handler"),
            terminate: signal(SignalKind::terminate()).expect("installing a SIGTERM handler"),
        }
    }

    async fn next(&mut self) -> Stop {
        tokio::select! {
            _ = self.interrupt.recv() => Stop::Interrupt,
            _ = self.terminate.recv() => Stop::Terminate,
        }
    }
}

/// Makes the daemon give back the memory of closed connections.
///
/// glibc's malloc keeps the pages that freed blocks leave in the middle of its heap:
/// 2,000 stalled connections left foreman 30 MB above its baseline after they closed,
/// whatever `MALLOC_ARENA_MAX` or the trim threshold said. With blocks of 8 KiB and more
/// (a connection's read buffer) mapped on their own, they go back to the system when
/// freed: 3 MB above the baseline in the same test. glibc reads its tunables once, at
/// start, so `foreman serve` executes itself again, once, with the tunable set; a
/// `GLIBC_TUNABLES` that already sets `glibc.malloc.mmap_threshold` is left as it is.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
mod allocator {
    use std::os::unix::process::CommandExt;

    const TUNABLE: &str = "glibc.malloc.mmap_threshold";
    const VALUE: &str = "glibc.malloc.mmap_threshold=8192";

    pub fn tune() {
        let current = std::env::var("GLIBC_TUNABLES").unwrap_or_default();
        if current.contains(TUNABLE) {
            return;
        }
        let Ok(exe) = std::env::current_exe() else {
            return;
        };
        // First: glibc 2.36 rewrites the variable in place and keeps only the first
        // entry there (what /proc shows), however many it reads.
        let tunables = if current.is_empty() {
            VALUE.to_string()
        } else {
            format!("{VALUE}:{current}")
        };
        // Only returns if the new image could not be started.
        let error = std::process::Command::new(exe)
            .args(std::env::args_os().skip(1))
            .env("GLIBC_TUNABLES", tunables)
            .exec();
        eprintln!("foreman: running without the allocator tuned ({error})");
    }
}
