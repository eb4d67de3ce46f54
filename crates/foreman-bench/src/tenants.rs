//! The `tenants` workload: one GPU shared by two API keys, with and without fair share
//! (`FOREMAN_FAIR_SHARE`).
//!
//! Part one, *contention*: a flooding key submits a backlog of jobs (`POST /jobs`) for
//! one model, then an interactive key asks `/api/chat` at the same priority every so
//! often. The interactive key's wait (its jobs' `started_at - created_at`, read from
//! foreman's database after the pass) is what fair share is for: without it every
//! interactive request waits for the backlog queued before it.
//!
//! Part two, *loads*: the `interleaved` workload's traffic (closed-loop clients, each
//! cycling three models on a target with one place), its clients split between the two
//! keys, so that fair share has callers to choose between; the simulator's loads with
//! fair share on and off show whether sharing between keys undoes draining by model.
//!
//! The keys are made as an operator makes them, with `foreman keys create ... --json`
//! on the database before foreman starts.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result};
use futures::StreamExt;
use rusqlite::{Connection, OpenFlags};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::metrics::percentile;
use crate::procs::Binaries;
use crate::targets::{Comparison, Scale, Targets};
use crate::workloads::{
    Bench, EXIT_WITHIN, SimSetup, WorkloadReport, args, round2, targets_spec, unique,
};

/// The flooding key's name, and the interactive one's.
const FLOOD: &str = "flood";
const INTERACTIVE: &str = "interactive";
/// The simulator's reply length (its default).
const REPLY_TOKENS: f64 = 24.0;

/// The sizes of a run.
struct Sizes {
    /// Jobs the flooding key queues.
    backlog: usize,
    /// Interactive requests, and the time between two.
    interactive: usize,
    gap: Duration,
    /// The model's tokens per second in part one.
    tps: u32,
    /// Slots of the target in part one.
    slots: usize,
    /// Part two: load times, tokens per second, clients and turns per client.
    loads: [&'static str; 3],
    interleaved_tps: u32,
    clients: usize,
    turns: usize,
}

/// Part one's outcome for one setting of fair share.
struct Contention {
    fair: bool,
    /// The interactive key's queue waits, in ms.
    waits: Vec<f64>,
    /// Its requests' latencies as its client saw them, in ms.
    latencies: Vec<f64>,
    /// The flood's queued jobs (its warm-up request left out) that started before the
    /// pass ended.
    flood_started: usize,
    requests: usize,
    errors: usize,
    /// Synchronous requests answered 200 (the warm-up included), and their succeeded
    /// rows in the database after foreman exited.
    answered: usize,
    answered_rows: u64,
    /// The flood's submissions answered 202, and its queued jobs' rows.
    accepted: usize,
    accepted_rows: u64,
}

/// Part two's outcome for one setting of fair share.
struct Loads {
    fair: bool,
    loads: u64,
    makespan_s: f64,
    requests: usize,
    errors: usize,
}

fn setting(fair: bool) -> &'static str {
    if fair { "on" } else { "off" }
}

pub(crate) async fn run(bench: &Bench) -> Result<WorkloadReport> {
    let scale = if bench.quick {
        Sizes {
            backlog: 300,
            interactive: 8,
            gap: Duration::from_millis(200),
            tps: 1_200,
            slots: 2,
            loads: ["300ms", "400ms", "200ms"],
            interleaved_tps: 300,
            clients: 12,
            turns: 3,
        }
    } else {
        Sizes {
            backlog: 3_000,
            interactive: 60,
            gap: Duration::from_millis(250),
            tps: 1_200,
            slots: 2,
            loads: ["3s", "4s", "2s"],
            interleaved_tps: 60,
            clients: 24,
            turns: 5,
        }
    };
    let mut contention = Vec::new();
    for fair in [true, false] {
        contention.push(contend(bench, &scale, fair).await?);
    }
    let mut loads = Vec::new();
    for fair in [true, false] {
        loads.push(interleave(bench, &scale, fair).await?);
    }
    Ok(report(bench.quick, &scale, &contention, &loads))
}

/// Creates the two keys on a new database with `foreman keys create --json`.
async fn create_keys(binaries: &Binaries, database: &Path) -> Result<(String, String)> {
    let mut secrets = Vec::new();
    for name in [FLOOD, INTERACTIVE] {
        let output = tokio::process::Command::new(&binaries.foreman)
            .args(["keys", "create", "--name", name, "--scopes", "chat,jobs"])
            .arg("--json")
            .env("FOREMAN_DATABASE", database)
            .env("FOREMAN_DATA_DIR", database.with_extension("data"))
            .output()
            .await
            .context("running foreman keys create")?;
        anyhow::ensure!(
            output.status.success(),
            "foreman keys create failed: {}",
            String::from_utf8_lossy(&output.stdout)
        );
        let created: Value =
            serde_json::from_slice(&output.stdout).context("foreman keys create --json")?;
        secrets.push(
            created["key"]
                .as_str()
                .context("no key in the answer of foreman keys create")?
                .to_owned(),
        );
    }
    Ok((secrets.remove(0), secrets.remove(0)))
}

fn client() -> Result<reqwest::Client> {
    Ok(reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(256)
        .timeout(Duration::from_secs(3_600))
        .build()?)
}

fn chat_body(model: &str, prompt: &str) -> Value {
    json!({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "stream": false,
    })
}

/// Part one with fair share on or off.
async fn contend(bench: &Bench, scale: &Sizes, fair: bool) -> Result<Contention> {
    let label = format!("tenants contention fair share {}", setting(fair));
    let model = "chat:8b";
    let database = database(bench, "contention", fair);
    let (flood, interactive) = create_keys(&bench.binaries, &database).await?;
    let sim = SimSetup {
        args: args(&[
            "--model",
            &format!("{model},load=500ms,tps={}", scale.tps),
            "--num-parallel",
            &scale.slots.to_string(),
            "--max-loaded",
            "1",
        ]),
        slots: scale.slots,
        places: 1,
    };
    let running_sim = bench.binaries.start_sim(&sim.args).await?;
    let env = vec![
        (
            "FOREMAN_TARGETS".to_owned(),
            targets_spec(&[running_sim.url.as_str()], std::slice::from_ref(&sim)),
        ),
        ("FOREMAN_FAIR_SHARE".to_owned(), fair.to_string()),
    ];
    let foreman = bench
        .binaries
        .start_foreman(
            &running_sim.url,
            &crate::database::QueueDb::File(database.clone()),
            0,
            &env,
        )
        .await?;
    let http = client()?;
    let url = foreman.url.clone();
    // The model loads once, for the flooding key, before anything is measured.
    let warm = http
        .post(format!("{url}/api/chat"))
        .bearer_auth(&flood)
        .json(&chat_body(model, "warm up"))
        .send()
        .await?;
    anyhow::ensure!(warm.status() == 200, "warm-up answered {}", warm.status());

    eprintln!(
        "{label}: queueing {} jobs for the flooding key",
        scale.backlog
    );
    let submitted: Vec<u16> = futures::stream::iter(0..scale.backlog)
        .map(|i| {
            let (http, url, flood) = (http.clone(), url.clone(), flood.clone());
            async move {
                http.post(format!("{url}/jobs"))
                    .bearer_auth(flood)
                    .json(&json!({
                        "kind": "chat",
                        "request": chat_body(model, &format!("backlog {i}")),
                        "priority": 0,
                    }))
                    .send()
                    .await
                    .map_or(0, |response| response.status().as_u16())
            }
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let mut errors = submitted.iter().filter(|status| **status != 202).count();
    let accepted = submitted.len() - errors;

    // The interactive key asks at the flood's priority, one request every `gap`.
    let start = Instant::now();
    let mut asks = Vec::new();
    for i in 0..scale.interactive {
        tokio::time::sleep_until(start + scale.gap * i as u32).await;
        let (http, url, key) = (http.clone(), url.clone(), interactive.clone());
        asks.push(tokio::spawn(async move {
            let sent = Instant::now();
            let status = http
                .post(format!("{url}/api/chat"))
                .bearer_auth(key)
                .header("X-Foreman-Priority", "0")
                .json(&chat_body(model, &format!("interactive {i}")))
                .send()
                .await
                .map_or(0, |response| response.status().as_u16());
            (status, sent.elapsed().as_secs_f64() * 1000.0)
        }));
    }
    let mut latencies = Vec::new();
    for ask in asks {
        let (status, latency) = ask.await?;
        if status == 200 {
            latencies.push(latency);
        } else {
            errors += 1;
        }
    }
    foreman
        .terminate(EXIT_WITHIN)
        .await
        .with_context(|| format!("stopping foreman after {label}"))?;
    running_sim.stop().await;
    let rows = read_jobs(&database).await?;
    let waits: Vec<f64> = rows
        .iter()
        .filter(|row| row.caller.as_deref() == Some(INTERACTIVE))
        .filter_map(|row| row.started_at.map(|at| (at - row.created_at) as f64))
        .collect();
    let flood_started = rows
        .iter()
        .filter(|row| row.caller.as_deref() == Some(FLOOD) && !row.sync && row.started_at.is_some())
        .count();
    // The warm-up, then each interactive request answered.
    let answered = 1 + latencies.len();
    let answered_rows = rows
        .iter()
        .filter(|row| row.sync && row.state == "succeeded")
        .count() as u64;
    let accepted_rows = rows
        .iter()
        .filter(|row| row.caller.as_deref() == Some(FLOOD) && !row.sync)
        .count() as u64;
    Ok(Contention {
        fair,
        waits,
        latencies,
        flood_started,
        requests: scale.backlog + scale.interactive,
        errors,
        answered,
        answered_rows,
        accepted,
        accepted_rows,
    })
}

/// Part two with fair share on or off.
async fn interleave(bench: &Bench, scale: &Sizes, fair: bool) -> Result<Loads> {
    let label = format!("tenants interleaved fair share {}", setting(fair));
    let models = ["alpha:7b", "beta:7b", "gamma:7b"];
    let database = database(bench, "interleaved", fair);
    let keys = create_keys(&bench.binaries, &database).await?;
    let mut sim_args = args(&["--max-loaded", "1"]);
    for (model, load) in models.iter().zip(scale.loads) {
        sim_args.push("--model".into());
        sim_args.push(format!("{model},load={load},tps={}", scale.interleaved_tps));
    }
    let running_sim = bench.binaries.start_sim(&sim_args).await?;
    let env = vec![("FOREMAN_FAIR_SHARE".to_owned(), fair.to_string())];
    let foreman = bench
        .binaries
        .start_foreman(
            &running_sim.url,
            &crate::database::QueueDb::File(database.clone()),
            0,
            &env,
        )
        .await?;
    let http = client()?;
    eprintln!(
        "{label}: {} clients, {} turns each",
        scale.clients, scale.turns
    );
    let start = Instant::now();
    let mut clients = Vec::new();
    for c in 0..scale.clients {
        let key = (if c % 2 == 0 { &keys.0 } else { &keys.1 }).clone();
        let (http, url, turns) = (http.clone(), foreman.url.clone(), scale.turns);
        clients.push(tokio::spawn(async move {
            let mut errors = 0;
            for k in 0..turns {
                let status = http
                    .post(format!("{url}/api/chat"))
                    .bearer_auth(&key)
                    .json(&chat_body(
                        models[(c + k) % models.len()],
                        &format!("client {c} turn {k}"),
                    ))
                    .send()
                    .await
                    .map_or(0, |response| response.status().as_u16());
                errors += usize::from(status != 200);
            }
            errors
        }));
    }
    let mut errors = 0;
    for client in clients {
        errors += client.await?;
    }
    let makespan_s = start.elapsed().as_secs_f64();
    let stats: Value = http
        .get(format!("{}/sim/stats", running_sim.url))
        .send()
        .await?
        .json()
        .await?;
    foreman
        .terminate(EXIT_WITHIN)
        .await
        .with_context(|| format!("stopping foreman after {label}"))?;
    running_sim.stop().await;
    Ok(Loads {
        fair,
        loads: stats["loads_total"].as_u64().unwrap_or(0),
        makespan_s,
        requests: scale.clients * scale.turns,
        errors,
    })
}

fn database(bench: &Bench, part: &str, fair: bool) -> PathBuf {
    bench
        .scratch
        .path()
        .join(format!("tenants-{part}-{}-{}.db", setting(fair), unique()))
}

/// A job row as far as this workload needs it.
struct Row {
    caller: Option<String>,
    /// Asked on a synchronous route (the warm-up and the interactive requests).
    sync: bool,
    state: String,
    created_at: i64,
    started_at: Option<i64>,
}

/// Reads foreman's database after it exited, read-only, with a connection of its own.
async fn read_jobs(path: &Path) -> Result<Vec<Row>> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || -> Result<Vec<Row>> {
        let conn = Connection::open_with_flags(&path, OpenFlags::SQLITE_OPEN_READ_ONLY)
            .with_context(|| format!("opening {} read-only", path.display()))?;
        let mut statement =
            conn.prepare("SELECT caller, sync, created_at, started_at, state FROM jobs")?;
        let rows = statement
            .query_map([], |row| {
                Ok(Row {
                    caller: row.get(0)?,
                    sync: row.get(1)?,
                    created_at: row.get(2)?,
                    started_at: row.get(3)?,
                    state: row.get(4)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()?;
        Ok(rows)
    })
    .await
    .context("reading the database stopped")?
}

fn report(
    quick: bool,
    scale: &Sizes,
    contention: &[Contention],
    loads: &[Loads],
) -> WorkloadReport {
    let mut targets = Targets::new("tenants", quick);
    let of = |fair: bool| {
        contention
            .iter()
            .find(|c| c.fair == fair)
            .expect("both settings ran")
    };
    let (on, off) = (of(true), of(false));
    let run_ms = REPLY_TOKENS / f64::from(scale.tps) * 1000.0;
    let p = |c: &Contention, q: f64| percentile(&c.waits, q);
    targets.check(
        "interactive key's p99 wait with fair share below without",
        round2(p(on, 99.0)),
        Comparison::Below,
        round2(p(off, 99.0)),
        "ms",
        Scale::Independent,
        format!(
            "p99 {:.0} ms with fair share, {:.0} ms without, behind {} queued jobs",
            p(on, 99.0),
            p(off, 99.0),
            scale.backlog
        ),
    );
    for pass in [on, off] {
        let label = format!("contention fair share {}", setting(pass.fair));
        targets.committed(&label, pass.answered_rows, pass.answered);
        targets.check(
            &format!("every submitted job durably queued ({label})"),
            pass.accepted_rows as f64,
            Comparison::Equal,
            pass.accepted as f64,
            "rows",
            Scale::Independent,
            format!(
                "{} rows of the flooding key's jobs in the database after foreman exited, {} submissions answered 202",
                pass.accepted_rows, pass.accepted
            ),
        );
    }
    let loads_of = |fair: bool| loads.iter().find(|l| l.fair == fair).expect("both ran");
    let (loads_on, loads_off) = (loads_of(true), loads_of(false));
    let ratio = loads_on.loads as f64 / loads_off.loads.max(1) as f64;
    targets.check(
        "interleaved loads with fair share over without",
        round2(ratio),
        Comparison::AtMost,
        1.25,
        "x",
        Scale::Independent,
        format!(
            "{} loads with fair share, {} without",
            loads_on.loads, loads_off.loads
        ),
    );
    let labels: Vec<String> = contention
        .iter()
        .map(|c| format!("contention fair share {}", setting(c.fair)))
        .chain(
            loads
                .iter()
                .map(|l| format!("interleaved fair share {}", setting(l.fair))),
        )
        .collect();
    let mut passes: Vec<(&str, usize, usize)> = Vec::new();
    for (label, (errors, requests)) in labels.iter().zip(
        contention
            .iter()
            .map(|c| (c.errors, c.requests))
            .chain(loads.iter().map(|l| (l.errors, l.requests))),
    ) {
        passes.push((label, errors, requests));
    }
    targets.no_errors(&passes);

    let mut findings = Vec::new();
    for c in contention {
        findings.push(format!(
            "fair share {}: the interactive key's wait p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms \
             over {} requests (answer p50 {:.0} ms, p99 {:.0} ms); {} of the flood's {} jobs \
             had started by the end",
            setting(c.fair),
            p(c, 50.0),
            p(c, 99.0),
            p(c, 100.0),
            c.waits.len(),
            percentile(&c.latencies, 50.0),
            percentile(&c.latencies, 99.0),
            c.flood_started,
            scale.backlog,
        ));
    }
    findings.push(format!(
        "one job runs about {run_ms:.0} ms ({} reply tokens at {} tokens/s) on each of {} slots",
        REPLY_TOKENS, scale.tps, scale.slots
    ));
    for l in loads {
        findings.push(format!(
            "interleaved, two keys, fair share {}: {} loads, makespan {:.1} s",
            setting(l.fair),
            l.loads,
            l.makespan_s
        ));
    }
    let waits = |c: &Contention| json!({"fair_share": c.fair, "waits_ms": c.waits, "latencies_ms": c.latencies});
    WorkloadReport {
        name: "tenants".into(),
        description: "A flooding API key's backlog of jobs and an interactive key asking /api/chat at the same priority, with FOREMAN_FAIR_SHARE on and off; then interleaved traffic split between the two keys, to count loads".into(),
        parameters: json!({
            "backlog": scale.backlog,
            "interactive": scale.interactive,
            "interactive_gap_ms": scale.gap.as_millis() as u64,
            "tps": scale.tps,
            "slots": scale.slots,
            "interleaved_loads": scale.loads,
            "interleaved_tps": scale.interleaved_tps,
            "interleaved_clients": scale.clients,
            "interleaved_turns": scale.turns,
        }),
        rows: Vec::new(),
        targets: targets.into_vec(),
        findings,
        svg: None,
        raw: json!({
            "contention": contention.iter().map(waits).collect::<Vec<_>>(),
            "interleaved": loads.iter().map(|l| json!({"fair_share": l.fair, "loads": l.loads, "makespan_s": l.makespan_s})).collect::<Vec<_>>(),
        }),
    }
}
