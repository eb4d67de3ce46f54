//! The systems under test as real processes on loopback: `ollama-sim` and
//! `foreman`, found next to this binary (or in `--bin-dir`), each started on port 0
//! and found by the address its first output line names.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::database::QueueDb;

/// A started process and the base URL it serves.
pub struct Running {
    pub url: String,
    child: Child,
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the process (SIGKILL: nothing of it is measured after the pass).
    pub async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }

    /// Asks the process to shut down (SIGTERM) and waits for it to exit, so that what
    /// it still had to write (foreman's outcomes, committed after the answers) is on
    /// disk before anything reads its files. Killed, and an error, after `within`.
    pub async fn terminate(mut self, within: Duration) -> Result<()> {
        let pid = self
            .child
            .id()
            .and_then(|id| i32::try_from(id).ok())
            .and_then(rustix::process::Pid::from_raw)
            .context("the process has already exited")?;
        rustix::process::kill_process(pid, rustix::process::Signal::TERM)
            .context("sending SIGTERM")?;
        match tokio::time::timeout(within, self.child.wait()).await {
            Ok(status) => {
                let status = status?;
                anyhow::ensure!(status.success(), "it exited with {status} after SIGTERM");
                Ok(())
            }
            Err(_) => {
                let _ = self.child.start_kill();
                let _ = self.child.wait().await;
                bail!("it did not exit within {within:?} of SIGTERM")
            }
        }
    }
}

/// Where the two binaries live.
pub struct Binaries {
    pub sim: PathBuf,
    pub foreman: PathBuf,
}

impl Binaries {
    pub fn find(dir: Option<&Path>) -> Result<Binaries> {
        let dir = match dir {
            Some(dir) => dir.to_path_buf(),
            None => std::env::current_exe()?
                .parent()
                .context("the bench binary has no folder")?
                .to_path_buf(),
        };
        let binaries = Binaries {
            sim: dir.join("ollama-sim"),
            foreman: dir.join("foreman"),
        };
        for path in [&binaries.sim, &binaries.foreman] {
            if !path.exists() {
                bail!(
                    "{} is missing: build the binaries first (scripts/bench does: cargo build --release --bins)",
                    path.display()
                );
            }
        }
        Ok(binaries)
    }

    /// Starts the simulator with these flags on a free port.
    pub async fn start_sim(&self, args: &[String]) -> Result<Running> {
        let mut command = Command::new(&self.sim);
        command
            .args(["--addr", "127.0.0.1:0", "--log", "warn"])
            .args(args);
        start(command).await.context("starting ollama-sim")
    }

    /// Starts foreman instance `instance` on `database` in front of `upstream` with
    /// these extra variables.
    pub async fn start_foreman(
        &self,
        upstream: &str,
        database: &QueueDb,
        instance: usize,
        env: &[(String, String)],
    ) -> Result<Running> {
        let mut command = Command::new(&self.foreman);
        command
            .arg("serve")
            .env("FOREMAN_ADDR", "127.0.0.1:0")
            .env("FOREMAN_OLLAMA_URL", upstream)
            .env("FOREMAN_DATABASE", database.location())
            // FOREMAN_BENCH_LOG sets the log filter of the foreman under test, for
            // profiling (`foreman::worker=trace` prints each job's timings).
            .env(
                "FOREMAN_LOG",
                std::env::var("FOREMAN_BENCH_LOG").unwrap_or_else(|_| "warn".to_owned()),
            )
            .env("FOREMAN_MAX_QUEUE", "1000000");
        for (key, value) in database.instance_env(instance).iter().chain(env) {
            command.env(key, value);
        }
        start(command).await.context("starting foreman")
    }
}

async fn start(mut command: Command) -> Result<Running> {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()?;
    let stdout = child.stdout.take().context("no stdout")?;
    let mut lines = BufReader::new(stdout).lines();
    let banner = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .context("no start-up line within 30 s")??
        .context("the process exited before it listened")?;
    let url = banner
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .with_context(|| format!("no address in {banner:?}"))?
        .to_string();
    // Keep draining stdout so the process never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Running { url, child })
}

/// Resident memory of a process in bytes (Linux `/proc`).
pub fn resident_bytes(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// CPU time a process has used so far, user and system, in seconds: `utime` plus
/// `stime` of `/proc/<pid>/stat` (every thread of the process), in clock ticks.
pub fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: count the
    // fields from the last `)`, whose next field is the state (field 3).
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let ticks = rustix::param::clock_ticks_per_second().max(1);
    Some((utime + stime) as f64 / ticks as f64)
}

/// CPU time the whole machine has spent busy so far (every CPU, every process and
/// the kernel: all but idle and I/O wait of `/proc/stat`), in seconds.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().find(|l| l.starts_with("cpu "))?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is within user).
    let busy: u64 = ticks
        .iter()
        .take(8)
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .map(|(_, t)| t)
        .sum();
    let per_second = rustix::param::clock_ticks_per_second().max(1);
    Some(busy as f64 / per_second as f64)
}

/// Raises this process's soft limit of open files to its hard limit (the children
/// it starts, foreman among them, inherit it) and answers with the soft limit now
/// in force; `None` when unlimited.
pub fn raise_open_file_limit() -> Option<u64> {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if limit.current != limit.maximum {
        limit.current = limit.maximum;
        if setrlimit(Resource::Nofile, limit).is_err() {
            eprintln!("foreman-bench: could not raise the open-file limit");
        }
    }
    open_file_limit()
}

/// This process's soft limit of open files; `None` when unlimited.
pub fn open_file_limit() -> Option<u64> {
    rustix::process::getrlimit(rustix::process::Resource::Nofile).current
}

#[cfg(test)]
mod tests {
    #[test]
    fn this_process_has_used_cpu_time_and_an_open_file_limit() {
        let pid = std::process::id();
        let spent = super::cpu_seconds(pid).expect("/proc/<pid>/stat is readable");
        assert!(spent >= 0.0);
        assert!(super::machine_busy_seconds().expect("/proc/stat is readable") > 0.0);
        let limit = super::raise_open_file_limit();
        assert!(limit.is_none_or(|l| l >= 16), "{limit:?}");
        assert_eq!(limit, super::open_file_limit());
    }
}
