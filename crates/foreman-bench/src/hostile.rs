//! The workloads about clients that cost foreman without giving it work (issue 13):
//!
//! - `pollers`: sync throughput with and without a thousand `GET /jobs/{id}?wait=`
//!   long-polls parked on queued jobs, in one run of one foreman, with foreman's CPU
//!   time for each window;
//! - `stalled`: thousands of connections that send half a request, or headers
//!   announcing a body that never comes, while `/healthz` and an authenticated chat
//!   are probed on fresh connections; then foreman's memory after they close.
//!
//! Neither has a direct pass: the target never sees a long-poll or a stalled
//! connection, so there is nothing to compare foreman with but itself.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::driver::{Driver, Record};
use crate::ledger::Ledger;
use crate::metrics::{PassSummary, percentile};
use crate::procs::{cpu_seconds, machine_busy_seconds, open_file_limit, resident_bytes};
use crate::targets::{Comparison, Scale, Targets};
use crate::workloads::{Bench, EXIT_WITHIN, WorkloadReport, args, chat, round2, sample_rss};

/// The model every request of these workloads goes to: no load time, no generation
/// time, 4-token replies, so that foreman's own work sets the pace.
const MODEL: &str = "tiny:1b";
const SIM_MODEL: &str = "tiny:1b,load=0s,tps=inf";

fn sim_args() -> Vec<String> {
    args(&["--model", SIM_MODEL, "--reply-tokens", "4"])
}

/// Closed-loop clients sending sync chats in `pollers`.
const SYNC_CLIENTS: usize = 16;
/// The pollers' jobs' priority: the lowest foreman allows by default, below sync
/// requests (10), so they stay queued while the sync clients keep the worker busy.
const POLL_PRIORITY: i32 = -20;
/// Sync throughput with the pollers parked must be at least this share of without.
const POLLERS_KEEP: f64 = 0.90;

/// The scale of `pollers`.
struct PollerScale {
    pollers: usize,
    /// Sync load before the first measured window.
    warmup: Duration,
    /// Each measured window.
    window: Duration,
    /// Between parking the pollers (or letting them go) and the next window.
    settle: Duration,
}

/// One measured window of `pollers`, on the driver's clock.
#[derive(Debug, Clone, Serialize)]
struct Window {
    label: String,
    start_ms: f64,
    end_ms: f64,
    /// foreman's CPU time (user + system) over the window, in seconds.
    cpu_s: f64,
    /// The simulator's and the benchmark's own CPU time over the window, and the
    /// whole machine's (every process, from `/proc/stat`), in seconds: on a shared
    /// machine, other work shows in the last.
    sim_cpu_s: f64,
    bench_cpu_s: f64,
    machine_cpu_s: f64,
    completed: usize,
    jobs_per_s: f64,
}

impl Window {
    async fn measure(
        label: &str,
        driver: &Driver,
        (foreman, sim): (u32, u32),
        length: Duration,
    ) -> Window {
        let read = || {
            [
                cpu_seconds(foreman),
                cpu_seconds(sim),
                cpu_seconds(std::process::id()),
                machine_busy_seconds(),
            ]
            .map(|s| s.unwrap_or(0.0))
        };
        let before = read();
        let start_ms = driver.now_ms();
        tokio::time::sleep(length).await;
        let end_ms = driver.now_ms();
        let after = read();
        let spent = |i: usize| after[i] - before[i];
        Window {
            label: label.to_string(),
            start_ms,
            end_ms,
            cpu_s: spent(0),
            sim_cpu_s: spent(1),
            bench_cpu_s: spent(2),
            machine_cpu_s: spent(3),
            completed: 0,
            jobs_per_s: 0.0,
        }
    }

    /// Counts the sync chats answered with success within the window.
    fn count(&mut self, records: &[Record]) -> PassSummary {
        let within: Vec<Record> = records
            .iter()
            .filter(|r| r.done_ms >= self.start_ms && r.done_ms < self.end_ms)
            .cloned()
            .collect();
        let seconds = (self.end_ms - self.start_ms) / 1000.0;
        self.completed = within.iter().filter(|r| r.ok()).count();
        self.jobs_per_s = self.completed as f64 / seconds;
        let mut summary = PassSummary::new(&self.label, &within, &[]);
        summary.makespan_s = seconds;
        summary.throughput_per_s = self.jobs_per_s;
        summary
    }

    fn cpu_ms_per_job(&self) -> f64 {
        if self.completed == 0 {
            0.0
        } else {
            self.cpu_s * 1000.0 / self.completed as f64
        }
    }
}

/// What the pollers did, summed over all of them.
#[derive(Debug, Default, Clone, Copy, Serialize)]
struct PollerTally {
    submitted: usize,
    accepted: usize,
    /// Long-polls answered (before the pollers were let go): the job ended, or the
    /// wait ran out.
    answered: usize,
    errors: usize,
}

/// What the pollers are told to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Hold a long-poll on their job.
    Parked,
    /// Hold nothing (their long-polls dropped, connections closed); the jobs stay.
    Away,
    /// Finish.
    Stop,
}

/// A thousand clients, each with a job queued behind the sync work, that hold a
/// `GET /jobs/{id}?wait=60s` on it while parked; a poll that returns is sent again
/// (after a new job when the last one ended).
struct Pollers {
    phase: watch::Sender<Phase>,
    tasks: Vec<JoinHandle<PollerTally>>,
    /// Pollers whose job is queued (submitted and answered 202).
    ready: Arc<AtomicUsize>,
    /// Long-polls sent and not yet answered.
    parked: Arc<AtomicUsize>,
    /// Long-polls answered so far.
    answered: Arc<AtomicUsize>,
    /// Pollers that gave up on an error.
    failed: Arc<AtomicUsize>,
}

impl Pollers {
    /// Starts the pollers away: each submits its job and waits to be parked.
    fn start(url: &str, count: usize) -> Result<Pollers> {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(count)
            .timeout(Duration::from_secs(120))
            .build()?;
        let (phase, phases) = watch::channel(Phase::Away);
        let ready = Arc::new(AtomicUsize::new(0));
        let parked = Arc::new(AtomicUsize::new(0));
        let answered = Arc::new(AtomicUsize::new(0));
        let failed = Arc::new(AtomicUsize::new(0));
        let tasks = (0..count)
            .map(|index| {
                let poller = Poller {
                    client: client.clone(),
                    url: url.to_string(),
                    index,
                    phase: phases.clone(),
                    ready: ready.clone(),
                    parked: parked.clone(),
                    answered: answered.clone(),
                };
                let failed = failed.clone();
                tokio::spawn(async move {
                    let tally = poller.run().await;
                    if tally.errors > 0 {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                    tally
                })
            })
            .collect();
        Ok(Pollers {
            phase,
            tasks,
            ready,
            parked,
            answered,
            failed,
        })
    }

    fn parked(&self) -> usize {
        self.parked.load(Ordering::Relaxed)
    }

    fn answered(&self) -> usize {
        self.answered.load(Ordering::Relaxed)
    }

    /// Waits until `done(self)` or every poller gave up, at most `within`.
    async fn until(&self, within: Duration, done: impl Fn(&Pollers) -> bool) -> bool {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if done(self) {
                return true;
            }
            if self.failed.load(Ordering::Relaxed) >= self.tasks.len()
                || tokio::time::Instant::now() >= deadline
            {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Waits until every poller's job is queued.
    async fn until_ready(&self, within: Duration) -> bool {
        let all = self.tasks.len();
        self.until(within, |p| {
            p.ready.load(Ordering::Relaxed) + p.failed.load(Ordering::Relaxed) >= all
        })
        .await
    }

    /// Parks every poller: waits until each has its long-poll under way.
    async fn park(&self, within: Duration) -> bool {
        let _ = self.phase.send(Phase::Parked);
        let all = self.tasks.len();
        self.until(within, |p| {
            p.parked() + p.failed.load(Ordering::Relaxed) >= all
        })
        .await
    }

    /// Lets every poller's long-poll go (its connection closed); the jobs stay.
    async fn away(&self, within: Duration) -> bool {
        let _ = self.phase.send(Phase::Away);
        self.until(within, |p| p.parked() == 0).await
    }

    /// Ends every poller.
    async fn stop(self) -> PollerTally {
        let _ = self.phase.send(Phase::Stop);
        let mut total = PollerTally::default();
        for task in self.tasks {
            let tally = task.await.unwrap_or(PollerTally {
                errors: 1,
                ..PollerTally::default()
            });
            total.submitted += tally.submitted;
            total.accepted += tally.accepted;
            total.answered += tally.answered;
            total.errors += tally.errors;
        }
        total
    }
}

struct Poller {
    client: reqwest::Client,
    url: String,
    index: usize,
    phase: watch::Receiver<Phase>,
    ready: Arc<AtomicUsize>,
    parked: Arc<AtomicUsize>,
    answered: Arc<AtomicUsize>,
}

impl Poller {
    async fn run(mut self) -> PollerTally {
        let mut tally = PollerTally::default();
        'submit: loop {
            if *self.phase.borrow() == Phase::Stop {
                break;
            }
            tally.submitted += 1;
            let Some(id) = self.submit(tally.submitted).await else {
                tally.errors += 1;
                break;
            };
            tally.accepted += 1;
            if tally.accepted == 1 {
                self.ready.fetch_add(1, Ordering::Relaxed);
            }
            loop {
                // Wait to be parked.
                match self
                    .phase
                    .wait_for(|phase| *phase != Phase::Away)
                    .await
                    .map(|phase| *phase)
                {
                    Ok(Phase::Parked) => {}
                    _ => break 'submit,
                }
                self.parked.fetch_add(1, Ordering::Relaxed);
                let poll = self
                    .client
                    .get(format!("{}/jobs/{id}?wait=60s", self.url))
                    .send();
                let answer = tokio::select! {
                    answer = async {
                        let response = poll.await?.error_for_status()?;
                        response.json::<Value>().await
                    } => Some(answer),
                    _ = self.phase.wait_for(|phase| *phase != Phase::Parked) => None,
                };
                self.parked.fetch_sub(1, Ordering::Relaxed);
                let Some(answer) = answer else {
                    // Sent away (or stopped): the poll is dropped.
                    continue;
                };
                self.answered.fetch_add(1, Ordering::Relaxed);
                tally.answered += 1;
                match answer {
                    Ok(job) if matches!(job["state"].as_str(), Some("queued" | "running")) => {}
                    // It ended (it ran in a gap of the sync work): queue another.
                    Ok(_) => continue 'submit,
                    Err(_) => {
                        tally.errors += 1;
                        break 'submit;
                    }
                }
            }
        }
        tally
    }

    /// Submits one low-priority job; its id when answered 202.
    async fn submit(&self, turn: usize) -> Option<String> {
        let body = json!({
            "kind": "chat",
            "priority": POLL_PRIORITY,
            "request": {
                "model": MODEL,
                "messages": [{"role": "user", "content": format!("poller {} job {turn}", self.index)}],
                "stream": false,
            },
        });
        let response = self
            .client
            .post(format!("{}/jobs", self.url))
            .json(&body)
            .send()
            .await
            .ok()?;
        if response.status() != reqwest::StatusCode::ACCEPTED {
            return None;
        }
        let job: Value = response.json().await.ok()?;
        job["id"].as_str().map(str::to_string)
    }
}

/// Waits until foreman's queue is empty, at most `within`.
async fn until_drained(driver: &Driver, within: Duration) -> u64 {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let depth = driver.queue_depth().await.unwrap_or(u64::MAX);
        if depth == 0 || tokio::time::Instant::now() >= deadline {
            return depth;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The scale of `stalled`.
struct StallScale {
    connections: usize,
    /// How long the stalled connections are held once all are open.
    hold: Duration,
    /// Longest wait for foreman's memory to settle after they close.
    settle_max: Duration,
}

/// foreman's read timeouts, set above the hold so that every stalled connection
/// lasts the whole hold (the timeouts themselves are foreman's own tests' business),
/// and its connection limit, above the stalled connections plus the probes.
const HEADER_TIMEOUT: &str = "30s";
const BODY_TIMEOUT: &str = "30s";
const MAX_CONNECTIONS: &str = "2048";
/// The token foreman requires in `stalled`.
const TOKEN: &str = "bench-secret";
/// A probe that takes longer than this failed.
const HEALTHZ_DEADLINE: Duration = Duration::from_secs(5);
const CHAT_DEADLINE: Duration = Duration::from_secs(10);
/// How often each probe is sent (one after the other, each on a new connection).
const HEALTHZ_EVERY: Duration = Duration::from_millis(100);
const CHAT_EVERY: Duration = Duration::from_millis(250);
/// foreman's memory after the stalled connections closed may exceed its baseline by
/// this much (see docs/BENCHMARKS.md).
const MEMORY_MARGIN_MB: f64 = 20.0;
/// Descriptors the benchmark keeps for everything but the stalled connections.
const RESERVED_DESCRIPTORS: u64 = 256;

/// How a stalled connection stalls.
#[derive(Debug, Clone, Copy)]
enum Stall {
    /// Half a request line, then nothing.
    HalfLine,
    /// A full authenticated request head announcing a 10 GB body, and nothing more.
    HugeBody,
    /// A full authenticated request head announcing 1,000 bytes, and 10 of them.
    ShortBody,
}

impl Stall {
    fn of(index: usize) -> Stall {
        match index % 10 {
            0 => Stall::HugeBody,
            1 => Stall::ShortBody,
            _ => Stall::HalfLine,
        }
    }

    fn bytes(self, host: &str) -> Vec<u8> {
        let head = |length: u64| {
            format!(
                "POST /api/chat HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: {length}\r\n\r\n"
            )
        };
        match self {
            Stall::HalfLine => b"POST /api/ch".to_vec(),
            Stall::HugeBody => head(10_000_000_000).into_bytes(),
            Stall::ShortBody => format!("{}{{\"model\":", head(1000)).into_bytes(),
        }
    }
}

/// What became of one stalled connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StallEnd {
    /// It could not be opened or written.
    Failed,
    /// It was still open when the benchmark closed it.
    Held,
    /// foreman answered it (a 408 or 413, say) or closed it during the hold.
    EndedByForeman,
}

/// Opens one stalled connection, counts it as open, and holds it until `close`.
async fn stall(
    addr: String,
    kind: Stall,
    opening: Arc<tokio::sync::Semaphore>,
    opened: Arc<AtomicUsize>,
    mut close: watch::Receiver<bool>,
) -> StallEnd {
    let stream = {
        let _permit = opening.acquire().await;
        let connect = async {
            let mut stream = TcpStream::connect(&addr).await?;
            stream.write_all(&kind.bytes(&addr)).await?;
            stream.flush().await?;
            Ok::<_, std::io::Error>(stream)
        };
        match tokio::time::timeout(Duration::from_secs(10), connect).await {
            Ok(Ok(stream)) => stream,
            _ => {
                opened.fetch_add(1, Ordering::Relaxed);
                return StallEnd::Failed;
            }
        }
    };
    opened.fetch_add(1, Ordering::Relaxed);
    let mut stream = stream;
    let mut buffer = [0u8; 512];
    tokio::select! {
        _ = stream.read(&mut buffer) => StallEnd::EndedByForeman,
        _ = close.wait_for(|close| *close) => StallEnd::Held,
    }
}

/// One probe of `stalled`: `/healthz` or an authenticated chat, each on a new
/// connection.
#[derive(Debug, Clone, Serialize)]
struct Probe {
    chat: bool,
    at_ms: f64,
    ms: f64,
    ok: bool,
}

/// Probes `/healthz` (unauthenticated) or an authenticated chat every `every`,
/// each on a new connection, until `stop`.
fn prober(
    url: String,
    chat: bool,
    every: Duration,
    start: tokio::time::Instant,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<Vec<Probe>> {
    tokio::spawn(async move {
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .timeout(if chat {
                CHAT_DEADLINE
            } else {
                HEALTHZ_DEADLINE
            })
            .build()
            .expect("the HTTP client builds");
        let mut probes = Vec::new();
        let mut turn = 0;
        while !*stop.borrow() {
            let sent = tokio::time::Instant::now();
            let request = if chat {
                client
                    .post(format!("{url}/api/chat"))
                    .bearer_auth(TOKEN)
                    .json(&json!({
                        "model": MODEL,
                        "messages": [{"role": "user", "content": format!("probe {turn}")}],
                        "stream": false,
                    }))
            } else {
                client.get(format!("{url}/healthz"))
            };
            let ok = match request.send().await {
                Ok(response) if response.status().is_success() => response.bytes().await.is_ok(),
                _ => false,
            };
            probes.push(Probe {
                chat,
                at_ms: (sent - start).as_secs_f64() * 1000.0,
                ms: sent.elapsed().as_secs_f64() * 1000.0,
                ok,
            });
            turn += 1;
            tokio::select! {
                _ = tokio::time::sleep_until(sent + every) => {}
                _ = stop.wait_for(|stop| *stop) => {}
            }
        }
        probes
    })
}

/// The probes of one phase of `stalled`: how many, how many failed, the slowest.
fn phase(probes: &[Probe], chat: bool, from_ms: f64, to_ms: f64) -> (usize, usize, f64) {
    let within: Vec<&Probe> = probes
        .iter()
        .filter(|p| p.chat == chat && p.at_ms >= from_ms && p.at_ms < to_ms)
        .collect();
    let failed = within.iter().filter(|p| !p.ok).count();
    let slowest = within.iter().map(|p| p.ms).fold(0.0, f64::max);
    (within.len(), failed, slowest)
}

fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1_048_576.0
}

impl Bench {
    /// Sync throughput with and without a thousand parked long-polls, in one foreman.
    ///
    /// Sixteen closed-loop clients send short sync chats the whole time, and every
    /// poller has a job queued at the lowest priority (behind the sync work, so it
    /// stays queued). Five windows alternate: without long-polls, with every poller's
    /// `GET /jobs/{id}?wait=60s` parked, without, with, without. The target compares
    /// the mean of the windows with against the mean of those without, so that the
    /// shared machine's speed drifting during the run does not pass for the
    /// pollers' cost; the only difference between them is the parked long-polls.
    pub(crate) async fn pollers(&self) -> Result<WorkloadReport> {
        let scale = if self.quick {
            PollerScale {
                pollers: 100,
                warmup: Duration::from_millis(300),
                window: Duration::from_millis(600),
                settle: Duration::from_millis(200),
            }
        } else {
            PollerScale {
                pollers: 1000,
                warmup: Duration::from_secs(1),
                window: Duration::from_secs(6),
                settle: Duration::from_secs(1),
            }
        };
        let sim = self.binaries.start_sim(&sim_args()).await?;
        let database = self.database.fresh(self.scratch.path(), "pollers").await?;
        // The pollers' jobs wait longer than FOREMAN_MAX_WAIT's default (60 s) in a
        // long run; they must never be forced ahead of the sync work.
        let env = [("FOREMAN_MAX_WAIT".to_string(), "1h".to_string())];
        let foreman = self
            .binaries
            .start_foreman(&sim.url, &database, 0, &env)
            .await?;
        let pid = foreman.pid().context("foreman has no pid")?;
        let pids = (pid, sim.pid().context("the simulator has no pid")?);
        let driver = Driver::new(&foreman.url, indicatif::ProgressBar::hidden());
        eprintln!(
            "pollers: {SYNC_CLIENTS} sync clients, {} pollers, five windows of {:?}",
            scale.pollers, scale.window
        );

        let running = Arc::new(AtomicBool::new(true));
        let sync = {
            let driver = driver.clone();
            let running = running.clone();
            tokio::spawn(async move {
                driver
                    .closed_loop_while(SYNC_CLIENTS, running, |client, turn| {
                        chat(MODEL, format!("client {client} turn {turn}"), false)
                    })
                    .await
            })
        };
        tokio::time::sleep(scale.warmup).await;
        // The pollers' jobs are queued (under the sync load) before the first window,
        // so that every window has the same queue.
        let pollers = Pollers::start(&foreman.url, scale.pollers)?;
        let all_ready = pollers.until_ready(Duration::from_secs(60)).await;
        tokio::time::sleep(scale.settle).await;

        let mut windows = Vec::new();
        // Per window with long-polls: parked when it began and ended, answered within.
        let mut parked_windows = Vec::new();
        let mut all_parked = all_ready;
        for turn in 0..5 {
            let with = turn % 2 == 1;
            if with {
                all_parked &= pollers.park(Duration::from_secs(60)).await;
            } else if turn > 0 {
                pollers.away(Duration::from_secs(60)).await;
            }
            if turn > 0 {
                tokio::time::sleep(scale.settle).await;
            }
            let label = if with {
                format!("pollers {} parked ({})", scale.pollers, turn / 2 + 1)
            } else {
                format!("pollers 0 ({})", turn / 2 + 1)
            };
            let (parked_before, answered_before) = (pollers.parked(), pollers.answered());
            windows.push((
                with,
                Window::measure(&label, &driver, pids, scale.window).await,
            ));
            if with {
                parked_windows.push((
                    parked_before,
                    pollers.parked(),
                    pollers.answered() - answered_before,
                ));
            }
        }
        let tally = pollers.stop().await;

        running.store(false, Ordering::Relaxed);
        let records = sync.await.context("the sync clients")?;
        // The pollers' jobs run once the sync work is over: every job ends before
        // foreman stops, so the database can be checked.
        let left = until_drained(&driver, Duration::from_secs(60)).await;
        let (stats, _) = driver.sim_report(&sim.url).await?;
        foreman
            .terminate(EXIT_WITHIN)
            .await
            .context("stopping foreman after the pollers workload")?;
        sim.stop().await;
        let ledger = Ledger::read(&database).await?;

        let rows: Vec<PassSummary> = windows
            .iter_mut()
            .map(|(_, window)| window.count(&records))
            .collect();
        let side = |with: bool| -> Vec<&Window> {
            windows
                .iter()
                .filter(|(w, _)| *w == with)
                .map(|(_, window)| window)
                .collect()
        };
        let (on, off) = (side(true), side(false));
        let mean = |list: &[&Window], value: fn(&Window) -> f64| {
            list.iter().map(|w| value(w)).sum::<f64>() / list.len().max(1) as f64
        };
        let (with_rate, without_rate) = (mean(&on, |w| w.jobs_per_s), mean(&off, |w| w.jobs_per_s));
        let ratio = if without_rate > 0.0 {
            with_rate / without_rate
        } else {
            0.0
        };
        let list = |list: &[&Window], value: fn(&Window) -> f64, digits: usize| {
            list.iter()
                .map(|w| format!("{:.*}", digits, value(w)))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let answered_during: usize = parked_windows.iter().map(|(_, _, a)| a).sum();
        let parked_text = parked_windows
            .iter()
            .map(|(begin, end, _)| format!("{begin} when it began and {end} when it ended"))
            .collect::<Vec<_>>()
            .join("; ");
        let sync_errors = records.iter().filter(|r| !r.ok()).count();
        let sync_ok = records.len() - sync_errors;
        let succeeded = ledger.count("succeeded");
        let expected = sync_ok + tally.accepted;
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());

        let mut targets = Targets::new("pollers", self.quick);
        targets.check(
            &format!(
                "sync throughput with {} long-polls parked over without",
                scale.pollers
            ),
            round2(ratio),
            Comparison::AtLeast,
            POLLERS_KEEP,
            "x",
            Scale::Full,
            format!(
                "{with_rate:.0} jobs/s with them ({}), {without_rate:.0} without ({}), {:?} windows alternating; foreman's CPU per sync job {:.3} ms with, {:.3} ms without",
                list(&on, |w| w.jobs_per_s, 0),
                list(&off, |w| w.jobs_per_s, 0),
                scale.window,
                mean(&on, Window::cpu_ms_per_job),
                mean(&off, Window::cpu_ms_per_job),
            ),
        );
        targets.check(
            "long-polls answered while they were to stay parked",
            answered_during as f64,
            Comparison::Equal,
            0.0,
            "polls",
            Scale::Full,
            format!(
                "parked long-polls per window with them: {parked_text}{}",
                if all_parked {
                    ""
                } else {
                    "; not every poller had parked within 60 s"
                }
            ),
        );
        targets.no_errors(&[
            ("sync chats", sync_errors, records.len()),
            (
                "pollers' submissions and long-polls",
                tally.errors,
                tally.submitted + tally.answered,
            ),
        ]);
        targets.check(
            "every job durably committed (pollers)",
            succeeded as f64,
            Comparison::Equal,
            expected as f64,
            "rows",
            Scale::Independent,
            format!(
                "{succeeded} succeeded rows after foreman exited (states: {:?}; queue depth {left} before it stopped), {sync_ok} sync chats answered 200 and {} pollers' jobs answered 202",
                ledger.by_state(),
                tally.accepted
            ),
        );
        let findings = vec![
            format!(
                "sync throughput ({SYNC_CLIENTS} closed-loop clients): {without_rate:.0} jobs/s without long-polls ({}), {with_rate:.0} jobs/s with {} parked ({}): {ratio:.2}x",
                list(&off, |w| w.jobs_per_s, 0),
                scale.pollers,
                list(&on, |w| w.jobs_per_s, 0),
            ),
            format!(
                "foreman's CPU time per {:?} window: {} s without, {} s with the long-polls ({:.3} and {:.3} ms per sync job)",
                scale.window,
                list(&off, |w| w.cpu_s, 2),
                list(&on, |w| w.cpu_s, 2),
                mean(&off, Window::cpu_ms_per_job),
                mean(&on, Window::cpu_ms_per_job),
            ),
            format!(
                "CPU time per window, without / with the long-polls: the simulator {} / {} s; the benchmark (clients and pollers) {} / {} s; the whole machine, every process ({}), {} / {} s of {:.1} s on {cores} cores",
                list(&off, |w| w.sim_cpu_s, 2),
                list(&on, |w| w.sim_cpu_s, 2),
                list(&off, |w| w.bench_cpu_s, 2),
                list(&on, |w| w.bench_cpu_s, 2),
                "/proc/stat",
                list(&off, |w| w.machine_cpu_s, 1),
                list(&on, |w| w.machine_cpu_s, 1),
                scale.window.as_secs_f64() * cores as f64,
            ),
            format!(
                "long-polls answered during the windows they were parked: {answered_during}; pollers' jobs submitted: {} (each ran once the sync work was over)",
                tally.accepted
            ),
        ];
        let windows: Vec<&Window> = windows.iter().map(|(_, w)| w).collect();
        Ok(WorkloadReport {
            name: "pollers".into(),
            description: format!(
                "sync throughput of {SYNC_CLIENTS} closed-loop clients (short chats, no load or generation time) in five alternating windows of one foreman, while {} jobs wait at priority {POLL_PRIORITY}: without long-polls, with a `GET /jobs/{{id}}?wait=60s` parked on each of them, and so on. No direct pass: the target never sees a long-poll",
                scale.pollers
            ),
            parameters: json!({
                "model": SIM_MODEL,
                "reply_tokens": 4,
                "sync_clients": SYNC_CLIENTS,
                "pollers": scale.pollers,
                "poll_priority": POLL_PRIORITY,
                "window_s": scale.window.as_secs_f64(),
                "windows": windows.len(),
                "FOREMAN_MAX_WAIT": "1h",
            }),
            rows,
            targets: targets.into_vec(),
            findings,
            svg: None,
            raw: json!({
                "windows": windows,
                "ratio": ratio,
                "pollers": tally,
                "parked_windows": parked_windows,
                "answered_during": answered_during,
                "sim_stats": stats,
            }),
        })
    }

    /// foreman's responsiveness and memory under stalled connections.
    pub(crate) async fn stalled(&self) -> Result<WorkloadReport> {
        let scale = if self.quick {
            StallScale {
                connections: 200,
                hold: Duration::from_millis(1000),
                settle_max: Duration::from_secs(3),
            }
        } else {
            StallScale {
                connections: 2000,
                hold: Duration::from_secs(5),
                settle_max: Duration::from_secs(20),
            }
        };
        // The stalled connections and foreman's ends of them must fit the open-file
        // limit (raised to the hard limit at start; foreman inherits it).
        let limit = open_file_limit();
        let connections = match limit {
            Some(limit) => scale
                .connections
                .min(limit.saturating_sub(RESERVED_DESCRIPTORS) as usize),
            None => scale.connections,
        };
        let sim = self.binaries.start_sim(&sim_args()).await?;
        let database = self.database.fresh(self.scratch.path(), "stalled").await?;
        // Read by the foreman of issue 13's connection work; ignored before it.
        let env: Vec<(String, String)> = [
            ("FOREMAN_TOKEN", TOKEN),
            ("FOREMAN_HEADER_TIMEOUT", HEADER_TIMEOUT),
            ("FOREMAN_BODY_TIMEOUT", BODY_TIMEOUT),
            ("FOREMAN_MAX_CONNECTIONS", MAX_CONNECTIONS),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let foreman = self
            .binaries
            .start_foreman(&sim.url, &database, 0, &env)
            .await?;
        let pid = foreman.pid().context("foreman has no pid")?;
        let addr = foreman
            .url
            .strip_prefix("http://")
            .context("foreman's URL is http")?
            .to_string();
        eprintln!(
            "stalled: {connections} stalled connections held {:?}",
            scale.hold
        );

        let start = tokio::time::Instant::now();
        let since = |at: tokio::time::Instant| (at - start).as_secs_f64() * 1000.0;
        let (stop_probes, probes_stopped) = watch::channel(false);
        let healthz = prober(
            foreman.url.clone(),
            false,
            HEALTHZ_EVERY,
            start,
            probes_stopped.clone(),
        );
        let chats = prober(foreman.url.clone(), true, CHAT_EVERY, start, probes_stopped);
        // A second of probes alone, then foreman's baseline memory.
        tokio::time::sleep(Duration::from_secs(1)).await;
        let baseline = resident_bytes(pid).unwrap_or(0);
        let (stop_sampling, sampler) = sample_rss(pid, Duration::from_millis(20));

        let stall_from = tokio::time::Instant::now();
        let (close, closing) = watch::channel(false);
        let opening = Arc::new(tokio::sync::Semaphore::new(64));
        let opened = Arc::new(AtomicUsize::new(0));
        let stalls: Vec<JoinHandle<StallEnd>> = (0..connections)
            .map(|index| {
                tokio::spawn(stall(
                    addr.clone(),
                    Stall::of(index),
                    opening.clone(),
                    opened.clone(),
                    closing.clone(),
                ))
            })
            .collect();
        let open_deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while opened.load(Ordering::Relaxed) < connections
            && tokio::time::Instant::now() < open_deadline
        {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let all_open_ms = since(tokio::time::Instant::now()) - since(stall_from);
        tokio::time::sleep(scale.hold).await;
        let held_rss = resident_bytes(pid).unwrap_or(0);
        let closed_at = tokio::time::Instant::now();
        let _ = close.send(true);
        let mut ends = Vec::with_capacity(connections);
        for task in stalls {
            ends.push(task.await.unwrap_or(StallEnd::Failed));
        }
        let _ = stop_sampling.send(());
        let stall_samples = sampler.await.context("the memory sampler")?;
        let peak = stall_samples.iter().copied().max().unwrap_or(0);

        // foreman's memory after the close, every 100 ms until the last second of
        // samples spans less than 0.5 MB (or at most `settle_max`).
        let mut settle = Vec::new();
        let settle_deadline = tokio::time::Instant::now() + scale.settle_max;
        let settled = loop {
            settle.push(resident_bytes(pid).unwrap_or(0));
            if settle.len() >= 10 {
                let last = &settle[settle.len() - 10..];
                let spread = last.iter().max().unwrap_or(&0) - last.iter().min().unwrap_or(&0);
                if spread < 512 * 1024 {
                    break true;
                }
            }
            if tokio::time::Instant::now() >= settle_deadline {
                break false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let after = settle.last().copied().unwrap_or(0);
        let settled_ms = since(tokio::time::Instant::now()) - since(closed_at);
        // Probes go on a moment after the memory settled.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let _ = stop_probes.send(true);
        let healthz = healthz.await.context("the /healthz prober")?;
        let chats = chats.await.context("the chat prober")?;
        let end_ms = since(tokio::time::Instant::now()) + 1.0;

        foreman
            .terminate(EXIT_WITHIN)
            .await
            .context("stopping foreman after the stalled workload")?;
        sim.stop().await;
        let ledger = Ledger::read(&database).await?;

        let count = |end: StallEnd| ends.iter().filter(|e| **e == end).count();
        let (failed_open, held, ended_by_foreman) = (
            count(StallEnd::Failed),
            count(StallEnd::Held),
            count(StallEnd::EndedByForeman),
        );
        let (stall_ms, close_ms) = (since(stall_from), since(closed_at));
        let probes: Vec<Probe> = healthz.iter().chain(chats.iter()).cloned().collect();
        let phases = [
            ("before", 0.0, stall_ms),
            ("stalled", stall_ms, close_ms),
            ("after", close_ms, end_ms),
        ];
        let phase_text = |chat: bool| {
            phases
                .iter()
                .map(|(name, from, to)| {
                    let (n, failed, slowest) = phase(&probes, chat, *from, *to);
                    format!("{name}: {failed} of {n} failed, slowest {slowest:.0} ms")
                })
                .collect::<Vec<_>>()
                .join("; ")
        };
        let healthz_failed = healthz.iter().filter(|p| !p.ok).count();
        let (stalled_n, _, _) = phase(&probes, false, stall_ms, close_ms);
        let chat_failed = chats.iter().filter(|p| !p.ok).count();
        let chat_ok = chats.len() - chat_failed;
        let succeeded = ledger.count("succeeded");

        let mut targets = Targets::new("stalled", self.quick);
        targets.check(
            &format!("/healthz answered throughout, {connections} stalled connections"),
            healthz_failed as f64,
            Comparison::Equal,
            0.0,
            "failed probes",
            Scale::Independent,
            format!(
                "{} probes on new connections, {stalled_n} of them while the connections stalled, each within {HEALTHZ_DEADLINE:?}: {}",
                healthz.len(),
                phase_text(false)
            ),
        );
        targets.check(
            "memory after the stalled connections closed, over the baseline",
            round2(mb(after) - mb(baseline)),
            Comparison::AtMost,
            MEMORY_MARGIN_MB,
            "MB",
            Scale::Full,
            format!(
                "VmRSS {:.1} MB before, {:.1} MB at the peak, {:.1} MB {:.1} s after the close ({})",
                mb(baseline),
                mb(peak),
                mb(after),
                settled_ms / 1000.0,
                if settled { "settled" } else { "still moving" }
            ),
        );
        targets.no_errors(&[(
            "authenticated chats on new connections",
            chat_failed,
            chats.len(),
        )]);
        targets.check(
            "every job durably committed (stalled)",
            succeeded as f64,
            Comparison::Equal,
            chat_ok as f64,
            "rows",
            Scale::Independent,
            format!(
                "{succeeded} succeeded rows after foreman exited, {chat_ok} authenticated chats answered 200"
            ),
        );
        let mut findings = vec![
            format!(
                "/healthz probes (every {HEALTHZ_EVERY:?}, a new connection each): {}",
                phase_text(false)
            ),
            format!(
                "authenticated chats (every {CHAT_EVERY:?}, a new connection each): {}",
                phase_text(true)
            ),
            format!(
                "foreman's VmRSS: {:.1} MB before, {:.1} MB with the connections held, {:.1} MB at the peak, {:.1} MB {:.1} s after they closed",
                mb(baseline),
                mb(held_rss),
                mb(peak),
                mb(after),
                settled_ms / 1000.0
            ),
            format!(
                "stalled connections: {connections} opened in {all_open_ms:.0} ms, {held} still open after {:?} when closed, {ended_by_foreman} answered or closed by foreman first, {failed_open} could not be opened",
                scale.hold
            ),
        ];
        if connections < scale.connections {
            findings.push(format!(
                "{connections} stalled connections instead of {}: the open-file limit is {}",
                scale.connections,
                limit.unwrap_or(0)
            ));
        }
        let summary = |label: &str, probes: &[Probe]| {
            let records: Vec<Record> = probes
                .iter()
                .map(|p| Record {
                    client: 0,
                    model: if p.chat {
                        MODEL.into()
                    } else {
                        "/healthz".into()
                    },
                    sent_ms: p.at_ms,
                    first_byte_ms: p.at_ms + p.ms,
                    done_ms: p.at_ms + p.ms,
                    status: if p.ok { 200 } else { 0 },
                    target_total_ms: 0.0,
                    target_load_ms: 0.0,
                    target_compute_ms: 0.0,
                })
                .collect();
            PassSummary::new(label, &records, &[])
        };
        let probe_ms: Vec<f64> = healthz.iter().map(|p| p.ms).collect();
        Ok(WorkloadReport {
            name: "stalled".into(),
            description: format!(
                "{connections} connections that stall (8 in 10 after half a request line, 1 after an authenticated request head announcing a 10 GB body, 1 after 10 bytes of a 1,000-byte body) held {:?} while /healthz and an authenticated chat are probed on new connections; then foreman's memory until it settles. No direct pass: only foreman's own connections are measured",
                scale.hold
            ),
            parameters: json!({
                "stalled_connections": connections,
                "hold_s": scale.hold.as_secs_f64(),
                "FOREMAN_HEADER_TIMEOUT": HEADER_TIMEOUT,
                "FOREMAN_BODY_TIMEOUT": BODY_TIMEOUT,
                "FOREMAN_MAX_CONNECTIONS": MAX_CONNECTIONS,
                "healthz_deadline_s": HEALTHZ_DEADLINE.as_secs_f64(),
                "chat_deadline_s": CHAT_DEADLINE.as_secs_f64(),
                "open_file_limit": limit,
            }),
            rows: vec![
                summary("stalled /healthz probes", &healthz),
                summary("stalled chat probes", &chats),
            ],
            targets: targets.into_vec(),
            findings,
            svg: None,
            raw: json!({
                "rss_baseline_bytes": baseline,
                "rss_held_bytes": held_rss,
                "rss_peak_bytes": peak,
                "rss_after_bytes": after,
                "rss_settle_samples": settle,
                "settled": settled,
                "healthz_p99_ms": percentile(&probe_ms, 99.0),
                "stalls": {"opened": connections - failed_open, "failed": failed_open, "held": held, "ended_by_foreman": ended_by_foreman},
                "probes": probes,
            }),
        })
    }
}
