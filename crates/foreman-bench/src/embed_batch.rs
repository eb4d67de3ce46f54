//! The `embed-batch` workload: what sending an embeddings batch's lines to the target in
//! groups (`FOREMAN_BATCH_EMBED_GROUP`) saves, in calls to the target and in lines per
//! second.
//!
//! The same `/v1/embeddings` batch (thousands of lines of one model, most with one
//! string, some with a few) runs twice, each time through a fresh foreman in front of a
//! fresh simulator: with groups of 32 lines (the default) and with grouping off (1, a
//! call per line). The batch is submitted with `foreman batch submit` and its output
//! fetched with `foreman batch output`. The simulator embeds without computing time,
//! so the difference is foreman's own cost per call (a job's enqueue, claim, HTTP
//! exchange and outcome), not the target's; a real embedder also computes a group in
//! one pass. No direct pass: the target has no batch API.

use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};

use crate::batch::{fetch_output, sim_stats, submit, until_ended};
use crate::driver::Driver;
use crate::ledger::Ledger;
use crate::targets::{Comparison, Scale, Targets};
use crate::workloads::{
    Bench, EXIT_WITHIN, SimSetup, WorkloadReport, args, round2, targets_spec, unique,
};

/// The embedding model.
const MODEL: &str = "nomic-embed-text";
const LOAD: &str = "300ms";
/// The group sizes compared: the default, and grouping off.
const GROUPS: [u64; 2] = [32, 1];

/// One run of the batch.
struct Run {
    group: u64,
    status: String,
    completed: u64,
    failed: u64,
    seconds: f64,
    lines_per_s: f64,
    /// Calls the simulator answered for the batch.
    calls: u64,
    succeeded_rows: u64,
    misplaced: usize,
    output_lines: usize,
}

impl Bench {
    pub(crate) async fn embed_batch(&self) -> Result<WorkloadReport> {
        let lines = if self.quick { 300 } else { 3000 };
        let input = self
            .scratch
            .path()
            .join(format!("embed-batch-{}.jsonl", unique()));
        let inputs = write_input(&input, lines)?;
        eprintln!("embed-batch: {lines} lines, {inputs} inputs, groups of {GROUPS:?}");
        let mut runs = Vec::new();
        for group in GROUPS {
            runs.push(self.run_embed_batch(&input, lines, group).await?);
        }

        let mut targets = Targets::new("embed-batch", self.quick);
        let labels: Vec<String> = runs.iter().map(|run| label(run.group)).collect();
        let failures: Vec<(&str, usize, usize)> = runs
            .iter()
            .zip(&labels)
            .map(|(run, label)| (label.as_str(), run.failed as usize, lines))
            .collect();
        targets.no_errors(&failures);
        for run in &runs {
            // Each call the target answered is one job, succeeded in the database.
            targets.committed(
                &format!("{}: a job per call to the target", label(run.group)),
                run.succeeded_rows,
                run.calls as usize,
            );
            targets.check(
                &format!(
                    "{}: output lines whose custom_id is not exactly once",
                    label(run.group)
                ),
                run.misplaced as f64,
                Comparison::Equal,
                0.0,
                "lines",
                Scale::Independent,
                format!(
                    "{} output lines of {lines}, status {}, {} completed, {} failed",
                    run.output_lines, run.status, run.completed, run.failed
                ),
            );
        }
        let (grouped, alone) = (&runs[0], &runs[1]);
        targets.check(
            "calls to the target, grouped",
            grouped.calls as f64,
            Comparison::AtMost,
            (lines / 4) as f64,
            "calls",
            Scale::Full,
            format!(
                "{} calls for {lines} lines in groups of {}; {} with grouping off",
                grouped.calls, GROUPS[0], alone.calls
            ),
        );
        targets.check(
            "calls to the target, grouping off",
            alone.calls as f64,
            Comparison::Equal,
            lines as f64,
            "calls",
            Scale::Independent,
            "one call per line".into(),
        );
        targets.check(
            "lines/s grouped over lines/s with grouping off",
            grouped.lines_per_s / alone.lines_per_s.max(0.001),
            Comparison::AtLeast,
            1.0,
            "x",
            Scale::Full,
            format!(
                "{:.1} lines/s grouped, {:.1} lines/s one call per line",
                grouped.lines_per_s, alone.lines_per_s
            ),
        );

        let findings = runs
            .iter()
            .map(|run| {
                format!(
                    "{}: {} lines completed and {} failed in {:.1} s from the submission (upload included) to the status `{}`: {:.1} lines/s, {} calls to the target",
                    label(run.group),
                    run.completed,
                    run.failed,
                    run.seconds,
                    run.status,
                    run.lines_per_s,
                    run.calls
                )
            })
            .collect();
        Ok(WorkloadReport {
            name: "embed-batch".into(),
            description: format!(
                "a {lines}-line `/v1/embeddings` batch of {MODEL} ({inputs} inputs: most lines one string, every fifth three), submitted with `foreman batch submit`, once with FOREMAN_BATCH_EMBED_GROUP=32 and once with 1 (a call per line), each on a fresh foreman and simulator (the model loads in {LOAD}; the simulator embeds without computing time, so this measures foreman's cost per call). No direct pass: the target has no batch API"
            ),
            parameters: json!({
                "lines": lines,
                "inputs": inputs,
                "groups": GROUPS,
                "model": MODEL,
                "load": LOAD,
            }),
            rows: Vec::new(),
            targets: targets.into_vec(),
            findings,
            svg: None,
            raw: json!({
                "runs": runs.iter().map(|run| json!({
                    "group": run.group,
                    "status": run.status,
                    "completed": run.completed,
                    "failed": run.failed,
                    "seconds": round2(run.seconds),
                    "lines_per_s": round2(run.lines_per_s),
                    "calls": run.calls,
                    "succeeded_rows": run.succeeded_rows,
                })).collect::<Vec<_>>(),
            }),
        })
    }

    /// The batch through a fresh foreman with `FOREMAN_BATCH_EMBED_GROUP=group`.
    async fn run_embed_batch(&self, input: &Path, lines: usize, group: u64) -> Result<Run> {
        let sim_args = args(&["--model", &format!("{MODEL},embed,load={LOAD}")]);
        let sim = self.binaries.start_sim(&sim_args).await?;
        let setup = SimSetup {
            args: sim_args.clone(),
            slots: 1,
            places: 1,
        };
        let database = self
            .database
            .fresh(self.scratch.path(), &format!("embed-batch-{group}"))
            .await?;
        let env = [
            (
                "FOREMAN_TARGETS".to_string(),
                targets_spec(&[sim.url.as_str()], &[setup]),
            ),
            ("FOREMAN_BATCH_EMBED_GROUP".to_string(), group.to_string()),
        ];
        let foreman = self
            .binaries
            .start_foreman(&sim.url, &database, 0, &env)
            .await?;
        let http = reqwest::Client::builder().no_proxy().build()?;
        let clock = Driver::new(&foreman.url, indicatif::ProgressBar::hidden());
        let before = sim_stats(&http, &sim.url).await?;
        let submitted_ms = clock.now_ms();
        let batch = submit(&self.binaries, &foreman.url, input, "/v1/embeddings").await?;
        let id = batch["id"]
            .as_str()
            .context("the submitted batch has no id")?
            .to_string();
        let progress = crate::driver::progress(&label(group), lines as u64);
        let within = Duration::from_secs(if self.quick { 300 } else { 3600 });
        let (ended, ended_ms) =
            until_ended(&http, &foreman.url, &id, &clock, &progress, within).await?;
        progress.finish();
        let after = sim_stats(&http, &sim.url).await?;
        let output = fetch_output(
            &self.binaries,
            &foreman.url,
            &id,
            self.scratch.path(),
            lines,
        )
        .await?;
        foreman
            .terminate(EXIT_WITHIN)
            .await
            .context("stopping foreman after the embed-batch workload")?;
        sim.stop().await;
        let ledger = Ledger::read(&database).await?;
        let requests = |stats: &Value| -> u64 {
            stats["models"]
                .as_object()
                .map(|models| {
                    models
                        .iter()
                        .filter(|(name, _)| name.starts_with(MODEL))
                        .map(|(_, model)| model["requests"].as_u64().unwrap_or(0))
                        .sum()
                })
                .unwrap_or(0)
        };
        let counts = &ended["request_counts"];
        let completed = counts["completed"].as_u64().unwrap_or(0);
        let failed = counts["failed"].as_u64().unwrap_or(0);
        let seconds = (ended_ms - submitted_ms) / 1000.0;
        Ok(Run {
            group,
            status: ended["status"].as_str().unwrap_or("unknown").to_string(),
            completed,
            failed,
            seconds,
            lines_per_s: (completed + failed) as f64 / seconds.max(0.001),
            calls: requests(&after).saturating_sub(requests(&before)),
            succeeded_rows: ledger.count("succeeded"),
            misplaced: output.misplaced,
            output_lines: output.lines,
        })
    }
}

fn label(group: u64) -> String {
    match group {
        1 => "grouping off (FOREMAN_BATCH_EMBED_GROUP=1)".to_string(),
        n => format!("groups of {n} (FOREMAN_BATCH_EMBED_GROUP={n})"),
    }
}

/// Writes `lines` embedding requests of [`MODEL`] (custom ids `line-N`): one string
/// each, three on every fifth line. Answers the number of inputs.
fn write_input(path: &Path, lines: usize) -> Result<usize> {
    let mut text = String::new();
    let mut inputs = 0;
    for i in 0..lines {
        let input = match i % 5 {
            0 => json!(
                (0..3)
                    .map(|p| format!("passage {i}.{p}: the queue drains by model"))
                    .collect::<Vec<_>>()
            ),
            _ => json!(format!("passage {i}: ") + &"embedded in groups ".repeat(1 + i % 4)),
        };
        inputs += input.as_array().map_or(1, Vec::len);
        let line = json!({
            "custom_id": format!("line-{i}"),
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": MODEL, "input": input},
        });
        text.push_str(&line.to_string());
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(inputs)
}
