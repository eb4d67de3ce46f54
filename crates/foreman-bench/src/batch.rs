//! The `batch` workload: what a large batch (OpenAI's Batch API, `/v1/batches`)
//! costs the interactive traffic that shares foreman with it, how many model loads
//! it causes, and how fast it runs.
//!
//! One foreman in front of one simulator with three places and two slots. After a
//! warm-up, interactive chats arrive at a steady pace on two models: one the batch
//! also uses and one it does not. First a window without a batch, then the same
//! traffic while a batch of thousands of lines over three models, in shuffled order,
//! runs; the batch is submitted with `foreman batch submit` (the real CLI) and its
//! output fetched with `foreman batch output`. No direct pass: the target has no
//! batch API, so foreman is measured against itself.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use ollama_sim::text::Rng;
use serde_json::{Value, json};

use crate::driver::{Driver, Planned, Record};
use crate::ledger::Ledger;
use crate::metrics::{PassSummary, percentile};
use crate::procs::Binaries;
use crate::targets::{Comparison, Scale, Targets};
use crate::workloads::{
    Bench, EXIT_WITHIN, SimSetup, WorkloadReport, args, chat, round2, targets_spec, unique,
};

/// The batch's models, with each one's share of its lines.
const BATCH_MODELS: [(&str, usize); 3] = [("alpha:3b", 5), ("beta:3b", 3), ("gamma:3b", 2)];
/// The interactive traffic's models: one the batch uses, one it does not.
const SHARED: &str = "alpha:3b";
const OWN: &str = "delta:3b";
/// Every model loads in this long.
const LOAD: &str = "1s";
/// Tokens per second of every model, and tokens per reply.
const TPS: u64 = 200;
const REPLY_TOKENS: usize = 8;
const SLOTS: usize = 2;
const PLACES: usize = 3;

struct BatchScale {
    lines: usize,
    /// Between two interactive chats (they alternate between the two models).
    every: Duration,
    /// The window without the batch.
    alone: Duration,
    /// The interactive traffic sent from the batch's submission on; what is sent
    /// after the batch ended counts in neither window.
    beside: Duration,
}

impl Bench {
    pub(crate) async fn batch(&self) -> Result<WorkloadReport> {
        let scale = if self.quick {
            BatchScale {
                lines: 300,
                every: Duration::from_millis(250),
                alone: Duration::from_secs(3),
                beside: Duration::from_secs(6),
            }
        } else {
            BatchScale {
                lines: 5000,
                every: Duration::from_millis(500),
                alone: Duration::from_secs(30),
                beside: Duration::from_secs(90),
            }
        };
        let mut sim_args = args(&[
            "--num-parallel",
            &SLOTS.to_string(),
            "--max-loaded",
            &PLACES.to_string(),
            "--reply-tokens",
            &REPLY_TOKENS.to_string(),
        ]);
        let mut models: Vec<&str> = BATCH_MODELS.iter().map(|(m, _)| *m).collect();
        models.push(OWN);
        for model in &models {
            sim_args.push("--model".into());
            sim_args.push(format!("{model},load={LOAD},tps={TPS}"));
        }
        let sim = self.binaries.start_sim(&sim_args).await?;
        let setup = SimSetup {
            args: sim_args.clone(),
            slots: SLOTS,
            places: PLACES,
        };
        let database = self.database.fresh(self.scratch.path(), "batch").await?;
        let env = [(
            "FOREMAN_TARGETS".to_string(),
            targets_spec(&[sim.url.as_str()], &[setup]),
        )];
        let foreman = self
            .binaries
            .start_foreman(&sim.url, &database, 0, &env)
            .await?;
        let http = reqwest::Client::builder().no_proxy().build()?;
        let input = self
            .scratch
            .path()
            .join(format!("batch-{}.jsonl", unique()));
        let lines_per_model = write_input(&input, scale.lines)?;
        eprintln!(
            "batch: {} lines over {:?}; interactive every {:?} on {SHARED} and {OWN}",
            scale.lines, lines_per_model, scale.every
        );

        let warm = Driver::new(&foreman.url, indicatif::ProgressBar::hidden());
        let warmup = warm
            .closed_loop(vec![vec![
                chat(SHARED, "warm up".into(), false),
                chat(OWN, "warm up".into(), false),
            ]])
            .await;

        // Without the batch.
        let start: Value = sim_stats(&http, &sim.url).await?;
        let alone_driver = Driver::new(&foreman.url, indicatif::ProgressBar::hidden());
        let alone = alone_driver
            .open_loop(interactive(scale.alone, scale.every))
            .await;
        let before: Value = sim_stats(&http, &sim.url).await?;

        // With it: the traffic starts as the batch is submitted.
        let beside_driver = Driver::new(&foreman.url, indicatif::ProgressBar::hidden());
        let traffic = {
            let driver = beside_driver.clone();
            let plan = interactive(scale.beside, scale.every);
            tokio::spawn(async move { driver.open_loop(plan).await })
        };
        let submitted_ms = beside_driver.now_ms();
        let batch = submit(&self.binaries, &foreman.url, &input, "/v1/chat/completions").await?;
        let id = batch["id"]
            .as_str()
            .context("the submitted batch has no id")?
            .to_string();
        let progress = crate::driver::progress("batch lines", scale.lines as u64);
        let within = Duration::from_secs(if self.quick { 300 } else { 3600 });
        let (ended, ended_ms) =
            until_ended(&http, &foreman.url, &id, &beside_driver, &progress, within).await?;
        progress.finish();
        let after: Value = sim_stats(&http, &sim.url).await?;
        let beside_all = traffic.await.context("the interactive traffic")?;
        let output = fetch_output(
            &self.binaries,
            &foreman.url,
            &id,
            self.scratch.path(),
            scale.lines,
        )
        .await?;
        foreman
            .terminate(EXIT_WITHIN)
            .await
            .context("stopping foreman after the batch workload")?;
        sim.stop().await;
        let ledger = Ledger::read(&database).await?;

        let beside: Vec<Record> = beside_all
            .iter()
            .filter(|r| r.sent_ms < ended_ms)
            .cloned()
            .collect();
        let after_the_batch = beside_all.len() - beside.len();
        let batch_s = (ended_ms - submitted_ms) / 1000.0;
        let counts = &ended["request_counts"];
        let total = counts["total"].as_u64().unwrap_or(0);
        let completed = counts["completed"].as_u64().unwrap_or(0);
        let failed = counts["failed"].as_u64().unwrap_or(0);
        let lines_per_s = (completed + failed) as f64 / batch_s.max(0.001);

        // Loads while the batch ran, against the fewest it could have cost: one load
        // of each model the phase asked for that was not resident when it began.
        let loads_during = |model: &str| {
            let count = |stats: &Value| stats["models"][model]["loads"].as_u64().unwrap_or(0);
            count(&after).saturating_sub(count(&before))
        };
        let resident: Vec<&str> = before["loaded"]
            .as_array()
            .map(|l| l.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let per_model: BTreeMap<&str, u64> = models.iter().map(|m| (*m, loads_during(m))).collect();
        let loads: u64 = per_model.values().sum();
        let minimum = models
            .iter()
            .filter(|m| !resident.iter().any(|r| r == *m))
            .count() as u64;
        let swaps = after["swaps_total"]
            .as_u64()
            .unwrap_or(0)
            .saturating_sub(before["swaps_total"].as_u64().unwrap_or(0));

        // A row's loads and swaps are its model's, within its window.
        let window_stats = |model: &str, from: &Value, to: &Value| {
            let delta = |key: &str| {
                to["models"][model][key]
                    .as_u64()
                    .unwrap_or(0)
                    .saturating_sub(from["models"][model][key].as_u64().unwrap_or(0))
            };
            json!({"loads_total": delta("loads"), "swaps_total": delta("swaps"), "reloads_total": delta("reloads")})
        };
        let mut rows = Vec::new();
        let mut latency = Vec::new();
        for (model, role) in [(SHARED, "a batch model"), (OWN, "not in the batch")] {
            for (window, records, stats) in [
                ("no batch", &alone, window_stats(model, &start, &before)),
                (
                    "batch running",
                    &beside,
                    window_stats(model, &before, &after),
                ),
            ] {
                let of_model: Vec<Record> = records
                    .iter()
                    .filter(|r| r.model == model)
                    .cloned()
                    .collect();
                let label = format!("{model} ({role}), {window}");
                let figures = Latency::of(&of_model);
                latency.push((label.clone(), figures));
                let summary = PassSummary::new(&label, &of_model, std::slice::from_ref(&stats));
                rows.push(summary);
            }
        }

        let mut targets = Targets::new("batch", self.quick);
        let errors = |records: &[Record]| records.iter().filter(|r| !r.ok()).count();
        targets.no_errors(&[
            ("warm-up", errors(&warmup), warmup.len()),
            ("interactive, no batch", errors(&alone), alone.len()),
            (
                "interactive, batch running",
                errors(&beside_all),
                beside_all.len(),
            ),
        ]);
        // Every chat answered 200 and every line the batch counts completed is a
        // succeeded job in foreman's database after it exited.
        let answered = [&warmup, &alone, &beside_all]
            .iter()
            .map(|records| records.iter().filter(|r| r.ok()).count())
            .sum::<usize>()
            + completed as usize;
        targets.committed("chats and batch lines", ledger.count("succeeded"), answered);
        targets.check(
            "batch completed with every line answered",
            completed as f64,
            Comparison::Equal,
            scale.lines as f64,
            "lines",
            Scale::Independent,
            format!(
                "status {}, request_counts {completed} completed and {failed} failed of {total}",
                ended["status"].as_str().unwrap_or("unknown")
            ),
        );
        targets.check(
            "output lines whose custom_id is not exactly once",
            output.misplaced as f64,
            Comparison::Equal,
            0.0,
            "lines",
            Scale::Independent,
            format!(
                "{} output lines, {} distinct custom_ids of the {} in the input, {} answered with status 200",
                output.lines, output.distinct, scale.lines, output.ok
            ),
        );

        let mut findings = Vec::new();
        for (label, figures) in &latency {
            findings.push(format!(
                "{label}: {} chats; added wait (latency less the target's computing) p50 {:.0} ms, p99 {:.0} ms; total p50 {:.0} ms, p99 {:.0} ms",
                figures.count, figures.wait_p50, figures.wait_p99, figures.total_p50, figures.total_p99
            ));
        }
        findings.push(format!(
            "the batch: {completed} lines completed and {failed} failed of {total} in {batch_s:.1} s from the submission (upload included) to the status `{}`: {lines_per_s:.1} lines/s",
            ended["status"].as_str().unwrap_or("unknown")
        ));
        findings.push(format!(
            "loads while the batch ran (interactive traffic included): {loads} ({}), {swaps} swaps; the fewest possible: {minimum} (each model not resident at the batch's start loaded once; resident then: {})",
            per_model
                .iter()
                .map(|(m, n)| format!("{m} {n}"))
                .collect::<Vec<_>>()
                .join(", "),
            resident.join(", ")
        ));
        findings.push(format!(
            "interactive chats sent after the batch ended (in neither window): {after_the_batch}"
        ));
        Ok(WorkloadReport {
            name: "batch".into(),
            description: format!(
                "interactive chats every {:?}, alternating between {SHARED} (also in the batch) and {OWN} (not in it), for {:?} without a batch and then while a {}-line batch over {} runs (`foreman batch submit`, `/v1/chat/completions` lines in shuffled order). One simulator, {SLOTS} slots, {PLACES} places, every model loads in {LOAD}. No direct pass: the target has no batch API",
                scale.every,
                scale.alone,
                scale.lines,
                BATCH_MODELS
                    .iter()
                    .map(|(m, _)| *m)
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            parameters: json!({
                "lines": scale.lines,
                "lines_per_model": lines_per_model,
                "interactive_every_ms": scale.every.as_millis() as u64,
                "window_without_s": scale.alone.as_secs_f64(),
                "interactive_beside_s": scale.beside.as_secs_f64(),
                "slots": SLOTS,
                "places": PLACES,
                "load": LOAD,
                "tokens_per_s": TPS,
                "reply_tokens": REPLY_TOKENS,
            }),
            rows,
            targets: targets.into_vec(),
            findings,
            svg: None,
            raw: json!({
                "batch": ended,
                "batch_s": batch_s,
                "lines_per_s": round2(lines_per_s),
                "loads": {"during": loads, "per_model": per_model, "minimum": minimum, "swaps": swaps},
                "latency": latency.iter().map(|(label, f)| json!({"window": label, "figures": f})).collect::<Vec<_>>(),
                "records": {"alone": alone, "beside": beside_all},
                "sim_stats": {"start": start, "before": before, "after": after},
            }),
        })
    }
}

/// Percentiles of one window's chats of one model, in ms.
#[derive(Debug, Clone, Copy, serde::Serialize)]
struct Latency {
    count: usize,
    wait_p50: f64,
    wait_p99: f64,
    total_p50: f64,
    total_p99: f64,
}

impl Latency {
    fn of(records: &[Record]) -> Latency {
        let ok: Vec<&Record> = records.iter().filter(|r| r.ok()).collect();
        let totals: Vec<f64> = ok.iter().map(|r| r.latency_ms()).collect();
        let waits: Vec<f64> = ok
            .iter()
            .map(|r| (r.latency_ms() - r.target_compute_ms).max(0.0))
            .collect();
        Latency {
            count: ok.len(),
            wait_p50: percentile(&waits, 50.0),
            wait_p99: percentile(&waits, 99.0),
            total_p50: percentile(&totals, 50.0),
            total_p99: percentile(&totals, 99.0),
        }
    }
}

/// Interactive chats, one every `every` for `length`, alternating between the
/// shared model and the batch-free one.
fn interactive(length: Duration, every: Duration) -> Vec<Planned> {
    let count = (length.as_secs_f64() / every.as_secs_f64()).floor() as usize;
    (0..count)
        .map(|i| {
            let model = if i.is_multiple_of(2) { SHARED } else { OWN };
            let mut planned = chat(model, format!("interactive {i}"), false);
            planned.at = Some(every * i as u32);
            planned
        })
        .collect()
}

/// Writes `lines` chat requests over the batch's models, shuffled, and answers how
/// many each model got.
fn write_input(path: &Path, lines: usize) -> Result<BTreeMap<String, usize>> {
    let shares: usize = BATCH_MODELS.iter().map(|(_, share)| share).sum();
    let mut models = Vec::with_capacity(lines);
    for (model, share) in BATCH_MODELS {
        models.extend(std::iter::repeat_n(model, lines * share / shares));
    }
    while models.len() < lines {
        models.push(BATCH_MODELS[0].0);
    }
    let mut rng = Rng::new(0xba7c);
    for i in (1..models.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        models.swap(i, j);
    }
    let mut text = String::new();
    let mut per_model = BTreeMap::new();
    for (i, model) in models.iter().enumerate() {
        *per_model.entry(model.to_string()).or_insert(0) += 1;
        let line = json!({
            "custom_id": format!("line-{i}"),
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": format!("line {i}")}]},
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(per_model)
}

/// `foreman batch ... --json` with the binary under test; its standard output.
async fn foreman_cli(binaries: &Binaries, url: &str, args: &[&str]) -> Result<String> {
    let output = tokio::process::Command::new(&binaries.foreman)
        .arg("batch")
        .args(args)
        .arg("--json")
        .env("FOREMAN_URL", url)
        .env_remove("FOREMAN_TOKEN")
        .output()
        .await
        .context("running foreman batch")?;
    if !output.status.success() {
        bail!(
            "foreman batch {args:?} exited with {}: {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// `foreman batch submit INPUT --endpoint ENDPOINT`: the batch created.
pub(crate) async fn submit(
    binaries: &Binaries,
    url: &str,
    input: &Path,
    endpoint: &str,
) -> Result<Value> {
    let path = input.to_string_lossy();
    let out = foreman_cli(binaries, url, &["submit", &path, "--endpoint", endpoint]).await?;
    serde_json::from_str(out.trim()).context("the submitted batch's JSON")
}

/// Polls the batch until it ends; answers it and when it was seen ended, on the
/// driver's clock.
pub(crate) async fn until_ended(
    http: &reqwest::Client,
    url: &str,
    id: &str,
    clock: &Driver,
    progress: &indicatif::ProgressBar,
    within: Duration,
) -> Result<(Value, f64)> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let batch: Value = http
            .get(format!("{url}/v1/batches/{id}"))
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        let counts = &batch["request_counts"];
        progress.set_position(
            counts["completed"].as_u64().unwrap_or(0) + counts["failed"].as_u64().unwrap_or(0),
        );
        if matches!(
            batch["status"].as_str(),
            Some("completed" | "failed" | "expired" | "cancelled")
        ) {
            return Ok((batch, clock.now_ms()));
        }
        if tokio::time::Instant::now() >= deadline {
            bail!("the batch had not ended after {within:?}: {batch}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub(crate) async fn sim_stats(http: &reqwest::Client, sim: &str) -> Result<Value> {
    Ok(http
        .get(format!("{sim}/sim/stats"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// What the batch's output file holds.
pub(crate) struct OutputCheck {
    pub lines: usize,
    pub distinct: usize,
    pub ok: usize,
    /// Output lines beyond the first of their `custom_id`, input lines missing and
    /// `custom_id`s that were not in the input.
    pub misplaced: usize,
}

/// Fetches a batch's output with `foreman batch output` and checks that each of the
/// `expected` lines (custom ids `line-0`...) is in it once.
pub(crate) async fn fetch_output(
    binaries: &Binaries,
    url: &str,
    id: &str,
    scratch: &Path,
    expected: usize,
) -> Result<OutputCheck> {
    let path = scratch.join(format!("batch-output-{}.jsonl", unique()));
    let path_text = path.to_string_lossy();
    foreman_cli(binaries, url, &["output", id, "-o", &path_text]).await?;
    let text = std::fs::read_to_string(&path)?;
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    let mut lines = 0;
    let mut ok = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        lines += 1;
        let value: Value = serde_json::from_str(line).context("an output line is not JSON")?;
        let custom_id = value["custom_id"].as_str().unwrap_or("").to_string();
        *seen.entry(custom_id).or_insert(0) += 1;
        if value["response"]["status_code"] == 200 {
            ok += 1;
        }
    }
    let duplicates: usize = seen.values().map(|n| n - 1).sum();
    let missing = (0..expected)
        .filter(|i| !seen.contains_key(&format!("line-{i}")))
        .count();
    let strangers = seen.len() + missing - expected;
    Ok(OutputCheck {
        lines,
        distinct: seen.len(),
        ok,
        misplaced: duplicates + missing + strangers,
    })
}
