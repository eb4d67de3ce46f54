//! The named workloads. Each replays the same requests twice, straight to a fresh
//! simulator and through foreman in front of another fresh one, and reports both
//! passes side by side with what the workload is about.

use std::time::Duration;

use anyhow::{Context, Result};
use ollama_sim::text::Rng;
use serde::Serialize;
use serde_json::{Value, json};

use crate::chart::{self, PassTimeline};
use crate::database::Backend;
use crate::driver::{Driver, Planned, Record, progress};
use crate::ledger::Ledger;
use crate::metrics::{self, PassSummary, percentile};
use crate::procs::{Binaries, resident_bytes};
use crate::targets::{Comparison, Scale, Target, Targets};

/// The names, in the order `--all` runs them.
pub const NAMES: [&str; 15] = [
    "overhead",
    "interleaved",
    "bursty",
    "stream",
    "memory",
    "parallel",
    "places",
    "parallel-places",
    "targets",
    "drift",
    "pollers",
    "stalled",
    "tenants",
    "batch",
    "embed-batch",
];

/// One simulator of a pass: its flags, and the capacity foreman is told it has
/// (which must match the flags: `--num-parallel` slots, `--max-loaded` places).
#[derive(Debug, Clone)]
pub(crate) struct SimSetup {
    pub args: Vec<String>,
    pub slots: usize,
    pub places: usize,
}

/// How foreman is started for a pass.
pub(crate) struct ForemanSetup {
    /// Extra environment (FOREMAN_MAX_WAIT, FOREMAN_PIN_OPTIONS...).
    pub env: Vec<(String, String)>,
    /// Tell foreman of every simulator with its slots and places through
    /// `FOREMAN_TARGETS`; otherwise it knows only `FOREMAN_OLLAMA_URL`, the first.
    pub announce_targets: bool,
    /// Sample the queued jobs' start forecasts during the pass ([`crate::eta`]).
    pub sample_eta: bool,
}

/// A simulator's name in `FOREMAN_TARGETS` and in the charts.
pub(crate) fn target_name(index: usize) -> String {
    format!("sim{index}")
}

/// `FOREMAN_TARGETS`: one `URL,slots=N,places=M` per simulator, space-separated,
/// each named when there are several.
pub(crate) fn targets_spec(urls: &[&str], sims: &[SimSetup]) -> String {
    urls.iter()
        .zip(sims)
        .enumerate()
        .map(|(index, (url, sim))| {
            let name = if sims.len() > 1 {
                format!(",name={}", target_name(index))
            } else {
                String::new()
            };
            format!("{url}{name},slots={},places={}", sim.slots, sim.places)
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Everything a workload produced.
#[derive(Debug, Serialize)]
pub struct WorkloadReport {
    pub name: String,
    pub description: String,
    pub parameters: Value,
    pub rows: Vec<PassSummary>,
    /// What the workload is graded on, judged from this run.
    pub targets: Vec<Target>,
    /// Workload-specific results, one sentence each.
    pub findings: Vec<String>,
    #[serde(skip)]
    pub svg: Option<String>,
    pub raw: Value,
}

/// Shared by all workloads of a run.
pub struct Bench {
    pub binaries: Binaries,
    pub quick: bool,
    pub scratch: tempfile::TempDir,
    /// Where foreman's queue lives, and how many instances share it.
    pub database: Backend,
}

/// How a pass sends its requests.
#[derive(Clone)]
pub(crate) enum Plan {
    /// One list per client, each sent in order.
    Closed(Vec<Vec<Planned>>),
    /// Each request at its own time.
    Open(Vec<Planned>),
    /// Closed-loop clients and timed arrivals together.
    Mixed {
        closed: Vec<Vec<Planned>>,
        open: Vec<Planned>,
    },
}

impl Plan {
    fn len(&self) -> usize {
        match self {
            Plan::Closed(lists) => lists.iter().map(Vec::len).sum(),
            Plan::Open(list) => list.len(),
            Plan::Mixed { closed, open } => closed.iter().map(Vec::len).sum::<usize>() + open.len(),
        }
    }
}

pub(crate) struct Pass {
    pub summary: PassSummary,
    pub records: Vec<Record>,
    pub events: Vec<Value>,
    /// Warm-up requests answered with success (they are jobs too, through foreman).
    warmup_ok: usize,
    /// foreman's database after it exited; `None` for a direct pass.
    ledger: Option<Ledger>,
    /// Each simulator's `/sim/stats` at the end of the pass, in target order.
    pub sim_stats: Vec<Value>,
    /// foreman's `/metrics` page at the end of the pass; `None` for a direct pass.
    pub metrics: Option<String>,
    /// How well foreman foretold the queued jobs' starts, when sampled.
    pub eta: Option<crate::eta::Accuracy>,
}

impl Pass {
    /// Requests of the pass answered with success, warm-up included.
    fn answered(&self) -> usize {
        self.records.iter().filter(|r| r.ok()).count() + self.warmup_ok
    }

    fn ledger(&self) -> &Ledger {
        self.ledger
            .as_ref()
            .expect("only passes through foreman are checked against the database")
    }

    /// The pass's label, requests and errors, for the no-errors target.
    pub(crate) fn errors(&self) -> (&str, usize, usize) {
        (
            &self.summary.pass,
            self.summary.errors,
            self.summary.requests,
        )
    }
}

/// foreman's Prometheus page.
async fn scrape_metrics(url: &str, token: Option<&str>) -> Result<String> {
    let mut request = reqwest::Client::builder()
        .no_proxy()
        .build()?
        .get(format!("{url}/metrics"));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await?.error_for_status()?;
    Ok(response.text().await?)
}

/// How long foreman gets to exit after SIGTERM once a pass is over.
pub(crate) const EXIT_WITHIN: Duration = Duration::from_secs(60);

/// The sim's reply length (its default), which with a model's tokens/s sets a job's run.
const REPLY_TOKENS: f64 = 24.0;

/// How often the stream workload sends a chat.
const STREAM_CADENCE: Duration = Duration::from_millis(25);

/// The `i`th point of an even, deterministic spread over one millisecond (the
/// golden-ratio sequence).
fn tick_spread(i: usize) -> Duration {
    let fraction = (i as f64 * 0.618_033_988_749_895).fract();
    Duration::from_secs_f64(fraction / 1000.0)
}

pub(crate) fn chat(model: &str, prompt: String, stream: bool) -> Planned {
    Planned {
        model: model.to_string(),
        prompt,
        stream,
        at: None,
        submit: false,
        options: None,
        keep_alive: None,
    }
}

/// Adds "every job durably committed" for a pass through foreman.
pub(crate) fn committed(targets: &mut Targets, pass: &Pass) {
    targets.committed(
        &pass.summary.pass,
        pass.ledger().count("succeeded"),
        pass.answered(),
    );
}

impl Bench {
    pub async fn run(&self, name: &str) -> Result<WorkloadReport> {
        match name {
            "overhead" => self.overhead().await,
            "interleaved" => self.interleaved().await,
            "bursty" => self.bursty().await,
            "stream" => self.stream().await,
            "memory" => self.memory().await,
            "parallel" => self.parallel().await,
            "places" => self.places().await,
            "parallel-places" => self.parallel_places().await,
            "targets" => self.targets().await,
            "drift" => self.drift().await,
            "pollers" => self.pollers().await,
            "stalled" => self.stalled().await,
            "tenants" => crate::tenants::run(self).await,
            "relay" => self.relay().await,
            "takeover" => self.takeover().await,
            "batch" => self.batch().await,
            "embed-batch" => self.embed_batch().await,
            other => anyhow::bail!("unknown workload {other:?}; known: {}", NAMES.join(", ")),
        }
    }

    /// Runs one pass on fresh simulators, through foreman when `foreman` is given.
    ///
    /// Straight to the targets, client `i` calls simulator `i % sims.len()`; through
    /// foreman, every client calls foreman, which is told of every simulator.
    async fn pass(
        &self,
        label: &str,
        sims: &[SimSetup],
        foreman: Option<&ForemanSetup>,
        warmup: &[Planned],
        plan: Plan,
    ) -> Result<Pass> {
        let mut running = Vec::with_capacity(sims.len());
        for setup in sims {
            running.push(self.binaries.start_sim(&setup.args).await?);
        }
        let mut started_foreman = None;
        let token = foreman.and_then(|setup| {
            setup
                .env
                .iter()
                .find(|(name, _)| name == "FOREMAN_TOKEN")
                .map(|(_, value)| value.clone())
        });
        let urls: Vec<String> = match foreman {
            Some(setup) => {
                let database = self.database.fresh(self.scratch.path(), label).await?;
                let mut env = setup.env.clone();
                if setup.announce_targets {
                    let urls: Vec<&str> = running.iter().map(|sim| sim.url.as_str()).collect();
                    env.push(("FOREMAN_TARGETS".into(), targets_spec(&urls, sims)));
                }
                // The first simulator is also foreman's `FOREMAN_OLLAMA_URL`: a foreman
                // that does not know FOREMAN_TARGETS still runs, on that one alone.
                // With several instances (PostgreSQL), all share the database and the
                // simulators, and the clients are spread over them.
                let mut processes = Vec::new();
                for instance in 0..self.database.instances() {
                    processes.push(
                        self.binaries
                            .start_foreman(&running[0].url, &database, instance, &env)
                            .await?,
                    );
                }
                let urls = processes.iter().map(|p| p.url.clone()).collect();
                started_foreman = Some((processes, database));
                urls
            }
            None => running.iter().map(|sim| sim.url.clone()).collect(),
        };
        let mut warmup_ok = 0;
        if !warmup.is_empty() {
            let warm = Driver::new(&urls[0], indicatif::ProgressBar::hidden());
            let records = warm.closed_loop(vec![warmup.to_vec()]).await;
            warmup_ok = records.iter().filter(|r| r.ok()).count();
        }
        let bar = progress(label, plan.len() as u64);
        let (stop_sampling, sampling) = tokio::sync::watch::channel(false);
        let sampler = foreman
            .filter(|setup| setup.sample_eta)
            .map(|_| tokio::spawn(crate::eta::sample(urls[0].clone(), token.clone(), sampling)));
        let driver = Driver::spread(urls, bar.clone());
        let records = match plan {
            Plan::Closed(lists) => driver.closed_loop(lists).await,
            Plan::Open(list) => driver.open_loop(list).await,
            Plan::Mixed { closed, open } => driver.mixed(closed, open).await,
        };
        bar.finish();
        stop_sampling.send_replace(true);
        let samples = match sampler {
            Some(task) => task.await.context("the forecast sampler stopped")?,
            None => Vec::new(),
        };
        let mut sim_stats = Vec::with_capacity(running.len());
        let mut events = Vec::new();
        for (index, sim) in running.iter().enumerate() {
            let (stats, mut sim_events) = driver.sim_report(&sim.url).await?;
            if running.len() > 1 {
                for event in &mut sim_events {
                    event["lane"] = json!(target_name(index));
                }
            }
            sim_stats.push(stats);
            events.extend(sim_events);
        }
        // foreman commits outcomes after the answers: let it finish and exit before
        // its database is read.
        let mut scraped = None;
        let ledger = match started_foreman {
            Some((processes, database)) => {
                // Its own account of the pass, as an operator's Prometheus would read it
                // (the first instance's, when there are several).
                scraped = Some(
                    scrape_metrics(&processes[0].url, token.as_deref())
                        .await
                        .with_context(|| format!("reading foreman's /metrics after {label}"))?,
                );
                for process in processes {
                    process
                        .terminate(EXIT_WITHIN)
                        .await
                        .with_context(|| format!("stopping foreman after {label}"))?;
                }
                Some(Ledger::read(&database).await?)
            }
            None => None,
        };
        for sim in running {
            sim.stop().await;
        }
        let eta = ledger
            .as_ref()
            .and_then(|ledger| crate::eta::accuracy(&samples, ledger));
        let summary = PassSummary::new(label, &records, &sim_stats);
        Ok(Pass {
            summary,
            records,
            events,
            warmup_ok,
            ledger,
            sim_stats,
            metrics: scraped,
            eta,
        })
    }

    /// Runs the plan straight to one simulator, then through foreman (which is told
    /// nothing of the simulator's capacity beyond its URL).
    async fn both(
        &self,
        label: &str,
        sim_args: &[String],
        foreman_env: &[(String, String)],
        warmup: &[Planned],
        plan: Plan,
    ) -> Result<(Pass, Pass)> {
        self.both_sampled(label, sim_args, foreman_env, warmup, plan, false)
            .await
    }

    /// [`Bench::both`], sampling foreman's start forecasts when `sample_eta`.
    async fn both_sampled(
        &self,
        label: &str,
        sim_args: &[String],
        foreman_env: &[(String, String)],
        warmup: &[Planned],
        plan: Plan,
        sample_eta: bool,
    ) -> Result<(Pass, Pass)> {
        let sims = [SimSetup {
            args: sim_args.to_vec(),
            slots: 1,
            places: 1,
        }];
        let foreman = ForemanSetup {
            env: foreman_env.to_vec(),
            announce_targets: false,
            sample_eta,
        };
        self.both_on(label, &sims, &foreman, warmup, plan).await
    }

    /// Runs the plan straight to fresh simulators, then through foreman in front of
    /// fresh ones with the same flags.
    pub(crate) async fn both_on(
        &self,
        label: &str,
        sims: &[SimSetup],
        foreman: &ForemanSetup,
        warmup: &[Planned],
        plan: Plan,
    ) -> Result<(Pass, Pass)> {
        let direct = self
            .pass(&format!("{label} direct"), sims, None, warmup, plan.clone())
            .await?;
        let through = self
            .pass(
                &format!("{label} foreman"),
                sims,
                Some(foreman),
                warmup,
                plan,
            )
            .await?;
        Ok((direct, through))
    }

    async fn overhead(&self) -> Result<WorkloadReport> {
        let (sequential, clients, per_client) = if self.quick {
            (100, 64, 5)
        } else {
            (1000, 64, 40)
        };
        let model = "tiny:1b";
        let sim_args = args(&["--model", "tiny:1b,load=0s,tps=inf", "--reply-tokens", "4"]);
        let warmup = vec![chat(model, "warm up".into(), false)];
        let seq_plan = Plan::Closed(vec![
            (0..sequential)
                .map(|i| chat(model, format!("q{i}"), false))
                .collect(),
        ]);
        let (seq_direct, seq_foreman) = self
            .both("overhead seq", &sim_args, &[], &warmup, seq_plan)
            .await?;
        let conc_plan = Plan::Closed(
            (0..clients)
                .map(|c| {
                    (0..per_client)
                        .map(|i| chat(model, format!("c{c} q{i}"), false))
                        .collect()
                })
                .collect(),
        );
        let (conc_direct, conc_foreman) = self
            .both("overhead x64", &sim_args, &[], &warmup, conc_plan)
            .await?;
        let added_p50 = seq_foreman.summary.p50_ms - seq_direct.summary.p50_ms;
        let added_p99 = seq_foreman.summary.p99_ms - seq_direct.summary.p99_ms;
        let mut targets = Targets::new("overhead", self.quick);
        targets.check(
            "latency foreman adds at p50, sequential",
            added_p50,
            Comparison::AtMost,
            1.0,
            "ms",
            Scale::Full,
            format!(
                "p50 {:.2} ms through foreman, {:.2} ms straight",
                seq_foreman.summary.p50_ms, seq_direct.summary.p50_ms
            ),
        );
        targets.check(
            "latency foreman adds at p99, sequential",
            added_p99,
            Comparison::AtMost,
            5.0,
            "ms",
            Scale::Full,
            format!(
                "p99 {:.2} ms through foreman, {:.2} ms straight",
                seq_foreman.summary.p99_ms, seq_direct.summary.p99_ms
            ),
        );
        targets.check(
            &format!("jobs/s through the queue with {clients} clients"),
            conc_foreman.summary.throughput_per_s.round(),
            Comparison::AtLeast,
            1000.0,
            "jobs/s",
            Scale::Full,
            format!(
                "{} jobs in {:.2} s; straight to the target {:.0}/s",
                conc_foreman.summary.requests - conc_foreman.summary.errors,
                conc_foreman.summary.makespan_s,
                conc_direct.summary.throughput_per_s
            ),
        );
        targets.no_errors(&[
            seq_direct.errors(),
            seq_foreman.errors(),
            conc_direct.errors(),
            conc_foreman.errors(),
        ]);
        committed(&mut targets, &seq_foreman);
        committed(&mut targets, &conc_foreman);
        let findings = vec![
            format!(
                "latency added by foreman, sequential: p50 {added_p50:.2} ms, p99 {added_p99:.2} ms"
            ),
            format!(
                "jobs/s through foreman's queue with {clients} clients: {:.0}; straight to the target: {:.0}",
                conc_foreman.summary.throughput_per_s, conc_direct.summary.throughput_per_s
            ),
        ];
        Ok(WorkloadReport {
            name: "overhead".into(),
            description: "one model, no load time, 4-token replies: sequential requests, then 64 concurrent clients".into(),
            parameters: json!({"sequential_requests": sequential, "clients": clients, "requests_per_client": per_client, "model": "tiny:1b,load=0s,tps=inf", "reply_tokens": 4}),
            rows: vec![seq_direct.summary.clone(), seq_foreman.summary.clone(), conc_direct.summary.clone(), conc_foreman.summary.clone()],
            targets: targets.into_vec(),
            findings,
            svg: None,
            raw: json!({"sequential": raw(&seq_direct, &seq_foreman), "concurrent": raw(&conc_direct, &conc_foreman)}),
        })
    }

    async fn interleaved(&self) -> Result<WorkloadReport> {
        let (loads, tps, clients, per_client) = if self.quick {
            (["300ms", "400ms", "200ms"], 300, 12, 3)
        } else {
            (["3s", "4s", "2s"], 60, 24, 5)
        };
        let models = ["alpha:7b", "beta:7b", "gamma:7b"];
        let mut sim_args = args(&["--max-loaded", "1"]);
        for (model, load) in models.iter().zip(loads) {
            sim_args.push("--model".into());
            sim_args.push(format!("{model},load={load},tps={tps}"));
        }
        let plan = Plan::Closed(
            (0..clients)
                .map(|c| {
                    (0..per_client)
                        .map(|k| {
                            chat(
                                models[(c + k) % models.len()],
                                format!("client {c} turn {k}"),
                                false,
                            )
                        })
                        .collect()
                })
                .collect(),
        );
        let (direct, through) = self
            .both_sampled("interleaved", &sim_args, &[], &[], plan, true)
            .await?;
        let load_sum: f64 = loads.iter().map(|l| parse_ms(l)).sum();
        let generation: f64 = through
            .records
            .iter()
            .filter(|r| r.ok())
            .map(|r| r.target_compute_ms)
            .sum();
        let lower_bound_s = (generation + load_sum) / 1000.0;
        let swaps_ratio = direct.summary.swaps as f64 / through.summary.swaps.max(1) as f64;
        let makespan_ratio = direct.summary.makespan_s / through.summary.makespan_s.max(1e-9);
        let of_bound = through.summary.makespan_s / lower_bound_s.max(1e-9);
        let mut targets = Targets::new("interleaved", self.quick);
        targets.check(
            "foreman swaps less than direct",
            through.summary.swaps as f64,
            Comparison::Below,
            direct.summary.swaps as f64,
            "swaps",
            Scale::Independent,
            format!(
                "{} through foreman, {} straight",
                through.summary.swaps, direct.summary.swaps
            ),
        );
        targets.check(
            "times fewer swaps than direct",
            round2(swaps_ratio),
            Comparison::AtLeast,
            4.0,
            "x",
            Scale::Full,
            format!(
                "{} straight / {} through foreman",
                direct.summary.swaps, through.summary.swaps
            ),
        );
        targets.check(
            "times shorter makespan than direct",
            round2(makespan_ratio),
            Comparison::AtLeast,
            2.0,
            "x",
            Scale::Full,
            format!(
                "{:.1} s straight / {:.1} s through foreman",
                direct.summary.makespan_s, through.summary.makespan_s
            ),
        );
        targets.check(
            "makespan over the lower bound",
            round2(of_bound),
            Comparison::AtMost,
            1.25,
            "x",
            Scale::Full,
            format!(
                "{:.1} s / {lower_bound_s:.1} s (all prompt evaluation and generation + one load per model)",
                through.summary.makespan_s
            ),
        );
        targets.no_errors(&[direct.errors(), through.errors()]);
        committed(&mut targets, &through);
        let page = through.metrics.as_deref().unwrap_or_default();
        let counted_loads = metrics::exposition_sum(page, "foreman_model_loads_total");
        let avoided = metrics::exposition_sum(page, "foreman_model_loads_avoided_total");
        targets.check(
            "loads on foreman's /metrics equal the simulator's",
            counted_loads,
            Comparison::Equal,
            through.summary.loads as f64,
            "loads",
            Scale::Independent,
            format!(
                "foreman_model_loads_total {counted_loads}, the simulator's loads_total {}",
                through.summary.loads
            ),
        );
        let mut findings = vec![
            format!(
                "swaps: {} straight, {} through foreman ({swaps_ratio:.1}x fewer)",
                direct.summary.swaps, through.summary.swaps
            ),
            format!(
                "/metrics after the pass: {counted_loads} loads made (the simulator counted {}) and {avoided} avoided (jobs arrival order would have loaded a model for, started on a loaded one), {} in all; straight to the simulator, {} loads",
                through.summary.loads,
                counted_loads + avoided,
                direct.summary.loads
            ),
            format!(
                "makespan: {:.1} s straight, {:.1} s through foreman ({makespan_ratio:.2}x shorter)",
                direct.summary.makespan_s, through.summary.makespan_s
            ),
            format!(
                "lower bound (all prompt evaluation and generation + one load per model): {lower_bound_s:.1} s; foreman's makespan is {of_bound:.2}x of it"
            ),
        ];
        findings.push(match &through.eta {
            Some(eta) => eta.finding(),
            None => "start forecasts: none of the jobs sampled while queued started".into(),
        });
        let svg = chart::render(
            "interleaved",
            &[
                PassTimeline {
                    label: "straight to the target",
                    records: &direct.records,
                    events: &direct.events,
                },
                PassTimeline {
                    label: "through foreman",
                    records: &through.records,
                    events: &through.events,
                },
            ],
        );
        Ok(WorkloadReport {
            name: "interleaved".into(),
            description:
                "3 chat models, one resident at a time, clients cycling through the models".into(),
            parameters: json!({"models": models, "load": loads, "tokens_per_s": tps, "clients": clients, "requests": clients * per_client, "max_loaded": 1}),
            rows: vec![direct.summary.clone(), through.summary.clone()],
            targets: targets.into_vec(),
            findings,
            svg: Some(svg),
            raw: raw(&direct, &through),
        })
    }

    /// A hot model that is never idle, and short bursts for rare models.
    ///
    /// Two closed-loop clients keep `main:7b`'s queue from ever emptying, so draining
    /// alone would never serve a rare model: only the wait bound does. Each burst is
    /// three requests for one rare model, spaced by more than one job's run (so a later
    /// one never waits longer than the first) and by more than the hot clients' gap
    /// (so straight to the target they interleave with hot work); bursts are far enough
    /// apart that one starving model at a time is what the bound is about.
    async fn bursty(&self) -> Result<WorkloadReport> {
        let scale = if self.quick {
            BurstyScale {
                load_ms: 100,
                tps: 1200,
                max_wait_ms: 400,
                bursts: 4,
                spacing_ms: 100,
                first_ms: 500,
                gap_min_ms: 800,
                gap_mean_ms: 400,
            }
        } else {
            BurstyScale {
                load_ms: 500,
                tps: 120,
                max_wait_ms: 2000,
                bursts: 10,
                spacing_ms: 500,
                first_ms: 3000,
                gap_min_ms: 5000,
                gap_mean_ms: 3000,
            }
        };
        const HOT_CLIENTS: usize = 2;
        const BURST: usize = 3;
        let models = ["main:7b", "rare1:3b", "rare2:3b"];
        let mut sim_args = args(&["--max-loaded", "1"]);
        for model in models {
            sim_args.push("--model".into());
            sim_args.push(format!(
                "{model},load={}ms,tps={}",
                scale.load_ms, scale.tps
            ));
        }
        let run_ms = REPLY_TOKENS * 1000.0 / scale.tps as f64;
        let mut rng = Rng::new(7);
        let mut at_ms = scale.first_ms as f64;
        let mut open = Vec::new();
        for burst in 0..scale.bursts {
            let model = models[1 + (rng.next_f64() < 0.5) as usize];
            for k in 0..BURST {
                let at = at_ms + (k * scale.spacing_ms) as f64;
                open.push(Planned {
                    at: Some(Duration::from_secs_f64(at / 1000.0)),
                    ..chat(model, format!("burst {burst} request {k}"), false)
                });
            }
            at_ms +=
                scale.gap_min_ms as f64 - (1.0 - rng.next_f64()).ln() * scale.gap_mean_ms as f64;
        }
        // Enough hot work to outlast the last burst through foreman (the faster pass):
        // until then the target runs hot jobs except for one excursion per burst.
        let last_served_ms = open
            .last()
            .map(|p| p.at.unwrap_or_default().as_secs_f64() * 1000.0)
            .unwrap_or(0.0)
            + (scale.max_wait_ms + 2 * scale.load_ms) as f64
            + BURST as f64 * run_ms;
        let excursions_ms =
            scale.bursts as f64 * (2 * scale.load_ms) as f64 + open.len() as f64 * run_ms;
        let hot_jobs = ((last_served_ms - excursions_ms) / run_ms * 1.05).ceil() as usize;
        let per_client = hot_jobs.div_ceil(HOT_CLIENTS);
        let closed: Vec<Vec<Planned>> = (0..HOT_CLIENTS)
            .map(|c| {
                (0..per_client)
                    .map(|i| chat(models[0], format!("hot {c} turn {i}"), false))
                    .collect()
            })
            .collect();
        let max_wait = format!("{}ms", scale.max_wait_ms);
        let env = vec![("FOREMAN_MAX_WAIT".to_string(), max_wait.clone())];
        let (direct, through) = self
            .both_sampled(
                "bursty",
                &sim_args,
                &env,
                &[],
                Plan::Mixed { closed, open },
                true,
            )
            .await?;

        // The bound: FOREMAN_MAX_WAIT, plus the longest run of a job in the pass (the
        // one under way when the wait ran out), plus one model load.
        let longest_run = through
            .records
            .iter()
            .filter(|r| r.ok())
            .map(|r| r.target_total_ms - r.target_load_ms)
            .fold(0.0, f64::max);
        let bound_ms = (scale.max_wait_ms + scale.load_ms) as f64 + longest_run;
        let ledger = through.ledger();
        let worst = |model: Option<&str>| {
            ledger
                .jobs
                .iter()
                .filter(|j| model.is_none_or(|m| j.model == m))
                .filter_map(|j| j.wait_ms())
                .fold(0.0, f64::max)
        };
        let worst_all = worst(None);
        let never_started = ledger
            .jobs
            .iter()
            .filter(|j| j.started_at.is_none())
            .count();
        let mut targets = Targets::new("bursty", self.quick);
        targets.check(
            "every job's wait in foreman's queue within FOREMAN_MAX_WAIT + one job + one load",
            worst_all,
            Comparison::AtMost,
            bound_ms,
            "ms",
            Scale::Full,
            format!(
                "worst of {} jobs (created to first claim, from the database): main {:.0}, rare1 {:.0}, rare2 {:.0} ms; bound {} + {longest_run:.0} + {} ms; {never_started} never started",
                ledger.jobs.len(),
                worst(Some(models[0])),
                worst(Some(models[1])),
                worst(Some(models[2])),
                scale.max_wait_ms,
                scale.load_ms
            ),
        );
        targets.check(
            "foreman swaps less than direct",
            through.summary.swaps as f64,
            Comparison::Below,
            direct.summary.swaps as f64,
            "swaps",
            Scale::Independent,
            format!(
                "{} through foreman, {} straight",
                through.summary.swaps, direct.summary.swaps
            ),
        );
        targets.no_errors(&[direct.errors(), through.errors()]);
        committed(&mut targets, &through);

        let rare_waits: Vec<f64> = ledger
            .jobs
            .iter()
            .filter(|j| j.model != models[0])
            .filter_map(|j| j.wait_ms())
            .collect();
        let reached = rare_waits
            .iter()
            .filter(|w| **w >= scale.max_wait_ms as f64)
            .count();
        // Client side, for both passes: time from sending to the end of the answer
        // that was not the request's own generation (queueing and loads).
        let rare = |r: &&Record| r.ok() && r.model != models[0];
        let not_generating = |pass: &Pass| {
            pass.records
                .iter()
                .filter(rare)
                .map(|r| r.latency_ms() - (r.target_total_ms - r.target_load_ms))
                .fold(0.0, f64::max)
        };
        let mut findings = vec![
            format!(
                "rare-model jobs that waited FOREMAN_MAX_WAIT ({} ms) or longer in foreman's queue: {reached} of {} (median wait {:.0} ms); two clients kept the hot queue full, so draining alone would have served none of them",
                scale.max_wait_ms,
                rare_waits.len(),
                percentile(&rare_waits, 50.0)
            ),
            format!(
                "longest a rare-model request spent not generating (client side): {:.0} ms straight, {:.0} ms through foreman",
                not_generating(&direct),
                not_generating(&through)
            ),
            format!(
                "swaps: {} straight, {} through foreman",
                direct.summary.swaps, through.summary.swaps
            ),
        ];
        findings.push(match &through.eta {
            Some(eta) => eta.finding(),
            None => "start forecasts: none of the jobs sampled while queued started".into(),
        });
        let svg = chart::render(
            "bursty",
            &[
                PassTimeline {
                    label: "straight to the target",
                    records: &direct.records,
                    events: &direct.events,
                },
                PassTimeline {
                    label: "through foreman",
                    records: &through.records,
                    events: &through.events,
                },
            ],
        );
        let waits: Vec<Value> = ledger
            .jobs
            .iter()
            .map(|j| json!({"model": j.model, "wait_ms": j.wait_ms()}))
            .collect();
        Ok(WorkloadReport {
            name: "bursty".into(),
            description: format!(
                "{HOT_CLIENTS} closed-loop clients keep one model's queue full; bursts of {BURST} requests for one of two rare models"
            ),
            parameters: json!({
                "models": models,
                "load_ms": scale.load_ms,
                "tokens_per_s": scale.tps,
                "hot_clients": HOT_CLIENTS,
                "hot_requests": per_client * HOT_CLIENTS,
                "bursts": scale.bursts,
                "burst_size": BURST,
                "burst_spacing_ms": scale.spacing_ms,
                "burst_gap_ms": format!("{} + exponential, mean {}", scale.gap_min_ms, scale.gap_mean_ms),
                "FOREMAN_MAX_WAIT": max_wait,
            }),
            rows: vec![direct.summary.clone(), through.summary.clone()],
            targets: targets.into_vec(),
            findings,
            svg: Some(svg),
            raw: json!({"passes": raw(&direct, &through), "foreman_queue_waits": waits}),
        })
    }

    async fn stream(&self) -> Result<WorkloadReport> {
        let count = if self.quick { 60 } else { 300 };
        let model = "chat:3b";
        let sim_args = args(&["--model", "chat:3b,load=0s,tps=2000"]);
        let warmup = vec![chat(model, "warm up".into(), true)];
        // One chat at a time (each takes about 14 ms), sent on a fixed cadence plus a
        // spread over one millisecond. Back-to-back requests would lock to the
        // simulator's 1 ms timer tick, and then whether foreman's few hundred
        // microseconds cross a tick decided the first chunk's time by a whole ms.
        let plan = Plan::Open(
            (0..count)
                .map(|i| Planned {
                    at: Some(STREAM_CADENCE * i as u32 + tick_spread(i)),
                    ..chat(model, format!("s{i}"), true)
                })
                .collect(),
        );
        let (direct, through) = self.both("stream", &sim_args, &[], &warmup, plan).await?;
        let added = through.summary.first_chunk_p50_ms - direct.summary.first_chunk_p50_ms;
        let mut targets = Targets::new("stream", self.quick);
        targets.check(
            "time to first chunk foreman adds at p50",
            added,
            Comparison::AtMost,
            2.0,
            "ms",
            Scale::Full,
            format!(
                "{:.2} ms through foreman, {:.2} ms straight",
                through.summary.first_chunk_p50_ms, direct.summary.first_chunk_p50_ms
            ),
        );
        targets.no_errors(&[direct.errors(), through.errors()]);
        committed(&mut targets, &through);
        Ok(WorkloadReport {
            name: "stream".into(),
            description: "streaming chats on a warm model, one at a time".into(),
            parameters: json!({
                "requests": count,
                "model": "chat:3b,load=0s,tps=2000",
                "every": "25ms plus a spread over 1ms",
            }),
            rows: vec![direct.summary.clone(), through.summary.clone()],
            targets: targets.into_vec(),
            findings: vec![format!(
                "time to first chunk added by foreman: p50 {added:.2} ms"
            )],
            svg: None,
            raw: raw(&direct, &through),
        })
    }

    /// foreman's resident memory while a deep queue builds up over HTTP.
    ///
    /// The target stalls every request, so the first job foreman runs never ends and
    /// every other submitted job stays queued; 64 clients submit them with
    /// `POST /jobs` while foreman's RSS is sampled.
    async fn memory(&self) -> Result<WorkloadReport> {
        const CLIENTS: usize = 64;
        let queued = if self.quick { 2_000 } else { 10_000 };
        let model = "tiny:latest";
        let sim = self
            .binaries
            .start_sim(&args(&["--model", "tiny,load=0s", "--stall-rate", "1"]))
            .await?;
        let database = self.database.fresh(self.scratch.path(), "memory").await?;
        // The stalled job is requeued at shutdown; it need not be waited for.
        let env = [("FOREMAN_SHUTDOWN_GRACE".to_string(), "100ms".to_string())];
        let foreman = self
            .binaries
            .start_foreman(&sim.url, &database, 0, &env)
            .await?;
        let pid = foreman.pid().context("foreman has no pid")?;
        let (stop_sampling, sampler) = sample_rss(pid, Duration::from_millis(20));
        let idle_rss = resident_bytes(pid).unwrap_or(0);
        // One more than the queue should hold: the first one is running (stalled).
        let submitted = queued + 1;
        let plan: Vec<Vec<Planned>> = (0..CLIENTS)
            .map(|c| {
                (c..submitted)
                    .step_by(CLIENTS)
                    .map(|i| Planned {
                        submit: true,
                        ..chat(model, format!("job {i}"), false)
                    })
                    .collect()
            })
            .collect();
        let bar = progress("memory submit", submitted as u64);
        let driver = Driver::new(&foreman.url, bar.clone());
        let records = driver.closed_loop(plan).await;
        bar.finish();
        // Keep sampling a moment with the whole queue in place.
        let depth = driver.queue_depth().await.unwrap_or(0);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = stop_sampling.send(());
        let samples = sampler.await.context("the memory sampler")?;
        let peak = samples.iter().copied().max().unwrap_or(0);
        let last = samples.last().copied().unwrap_or(0);
        let (stats, _) = driver.sim_report(&sim.url).await?;
        foreman
            .terminate(EXIT_WITHIN)
            .await
            .context("stopping foreman after the memory workload")?;
        sim.stop().await;
        let ledger = Ledger::read(&database).await?;
        let summary = PassSummary::new(
            "memory submit foreman",
            &records,
            std::slice::from_ref(&stats),
        );
        let accepted = records.iter().filter(|r| r.ok()).count();
        let kept = ledger.count("queued") + ledger.count("running");

        let mb = |bytes: u64| bytes as f64 / 1_048_576.0;
        let mut targets = Targets::new("memory", self.quick);
        targets.check(
            &format!("peak resident memory with {queued} jobs queued over HTTP"),
            (mb(peak) * 10.0).round() / 10.0,
            Comparison::Below,
            50.0,
            "MB",
            Scale::Full,
            format!(
                "VmRSS sampled every 20 ms ({} samples), {:.1} MB before the first submission; queue depth {depth} after the last",
                samples.len(),
                mb(idle_rss)
            ),
        );
        targets.no_errors(&[(&summary.pass, summary.errors, summary.requests)]);
        targets.check(
            "every submitted job durably queued",
            kept as f64,
            Comparison::Equal,
            accepted as f64,
            "rows",
            Scale::Independent,
            format!(
                "{kept} queued rows in the database after foreman exited (states: {:?}), {accepted} submissions answered 202",
                ledger.by_state()
            ),
        );
        Ok(WorkloadReport {
            name: "memory".into(),
            description: format!(
                "foreman's resident memory while {CLIENTS} clients submit {submitted} jobs with POST /jobs to a target that never answers (one runs, {queued} stay queued)"
            ),
            parameters: json!({"queued_jobs": queued, "submitted_jobs": submitted, "clients": CLIENTS}),
            rows: vec![summary.clone()],
            targets: targets.into_vec(),
            findings: vec![
                format!(
                    "foreman's peak resident memory while {submitted} jobs were submitted over HTTP: {:.1} MB ({:.1} MB before, {:.1} MB half a second after the last submission)",
                    mb(peak),
                    mb(idle_rss),
                    mb(last)
                ),
                format!(
                    "durable submissions over HTTP with {CLIENTS} clients: {:.0} jobs/s",
                    summary.throughput_per_s
                ),
            ],
            svg: None,
            raw: json!({"rss_bytes": peak, "rss_before_bytes": idle_rss, "rss_last_bytes": last, "rss_samples": samples.len(), "queued_jobs": queued, "queue_depth": depth}),
        })
    }
}

/// The scale of the bursty workload.
struct BurstyScale {
    load_ms: u64,
    tps: u64,
    max_wait_ms: u64,
    bursts: usize,
    spacing_ms: usize,
    first_ms: u64,
    gap_min_ms: u64,
    gap_mean_ms: u64,
}

/// Samples a process's resident memory every `every` until told to stop; the task
/// answers with the samples.
pub(crate) fn sample_rss(
    pid: u32,
    every: Duration,
) -> (
    tokio::sync::oneshot::Sender<()>,
    tokio::task::JoinHandle<Vec<u64>>,
) {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        let mut samples = Vec::new();
        let mut tick = tokio::time::interval(every);
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                _ = tick.tick() => {
                    if let Some(bytes) = resident_bytes(pid) {
                        samples.push(bytes);
                    }
                }
            }
        }
        if let Some(bytes) = resident_bytes(pid) {
            samples.push(bytes);
        }
        samples
    });
    (stop, task)
}

pub(crate) fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

pub(crate) fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

pub(crate) fn raw(direct: &Pass, through: &Pass) -> Value {
    json!({
        "direct": {"summary": direct.summary, "records": direct.records, "events": direct.events, "sim_stats": direct.sim_stats},
        "foreman": {"summary": through.summary, "records": through.records, "events": through.events, "sim_stats": through.sim_stats},
    })
}

fn parse_ms(text: &str) -> f64 {
    if let Some(ms) = text.strip_suffix("ms") {
        ms.parse().unwrap_or(0.0)
    } else if let Some(s) = text.strip_suffix('s') {
        s.parse::<f64>().unwrap_or(0.0) * 1000.0
    } else {
        0.0
    }
}

pub(crate) fn unique() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::{SimSetup, targets_spec};

    fn sim(slots: usize, places: usize) -> SimSetup {
        SimSetup {
            args: Vec::new(),
            slots,
            places,
        }
    }

    #[test]
    fn foreman_targets_name_each_simulator_only_when_there_are_several() {
        assert_eq!(
            targets_spec(&["http://a:1"], &[sim(4, 1)]),
            "http://a:1,slots=4,places=1"
        );
        assert_eq!(
            targets_spec(&["http://a:1", "http://b:2"], &[sim(2, 1), sim(2, 2)]),
            "http://a:1,name=sim0,slots=2,places=1 http://b:2,name=sim1,slots=2,places=2"
        );
    }
}
