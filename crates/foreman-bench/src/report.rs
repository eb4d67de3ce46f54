//! The report: the targets of the run with their verdicts first, then one markdown
//! table per workload (both passes and their ratio) and its findings.

use std::fmt::Write;

use crate::metrics::{PassSummary, peaks_text};
use crate::targets::{self, Target, Verdict};
use crate::workloads::WorkloadReport;

fn row(summary: &PassSummary) -> String {
    format!(
        "| {} | {} | {} | {:.2} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} | {} | {} | {} | {:.0}% |",
        summary.pass,
        summary.requests,
        summary.errors,
        summary.makespan_s,
        summary.throughput_per_s,
        summary.p50_ms,
        summary.p95_ms,
        summary.p99_ms,
        summary.first_chunk_p50_ms,
        summary.swaps,
        summary.loads,
        peaks_text(&summary.peak_in_flight),
        summary.gpu_busy * 100.0
    )
}

fn ratio(direct: &PassSummary, through: &PassSummary) -> String {
    let r = |a: f64, b: f64| {
        if b > 0.0 {
            format!("{:.2}x", a / b)
        } else {
            "-".into()
        }
    };
    format!(
        "| foreman / direct | | | {} | {} | {} | {} | {} | {} | {} | {} | | |",
        r(through.makespan_s, direct.makespan_s),
        r(through.throughput_per_s, direct.throughput_per_s),
        r(through.p50_ms, direct.p50_ms),
        r(through.p95_ms, direct.p95_ms),
        r(through.p99_ms, direct.p99_ms),
        r(through.first_chunk_p50_ms, direct.first_chunk_p50_ms),
        r(through.swaps as f64, direct.swaps as f64),
        r(through.loads as f64, direct.loads as f64),
    )
}

/// Every target of the run, in workload order.
pub fn all_targets(reports: &[WorkloadReport]) -> Vec<Target> {
    reports.iter().flat_map(|r| r.targets.clone()).collect()
}

/// One line saying how the run went.
pub fn verdict_line(targets: &[Target]) -> String {
    let count = |verdict| targets.iter().filter(|t| t.verdict == verdict).count();
    let (met, missed, info) = (
        count(Verdict::Met),
        count(Verdict::Missed),
        count(Verdict::Informational),
    );
    let head = if missed == 0 {
        format!("All {met} judged targets met")
    } else {
        format!("{missed} target(s) MISSED, {met} met")
    };
    if info > 0 {
        format!("{head}; {info} informational (scale-dependent, not judged in a quick run).")
    } else {
        format!("{head}.")
    }
}

/// Renders the targets and all workloads as markdown.
pub fn markdown(reports: &[WorkloadReport]) -> String {
    let mut out = String::new();
    let targets = all_targets(reports);
    let _ = writeln!(out, "### Targets\n");
    out.push_str(&targets::table(&targets));
    let _ = writeln!(out, "\n{}\n", verdict_line(&targets));
    for report in reports {
        let _ = writeln!(out, "### {}\n", report.name);
        let _ = writeln!(
            out,
            "{}. Parameters: `{}`\n",
            report.description, report.parameters
        );
        if !report.rows.is_empty() {
            out.push_str("| pass | requests | errors | makespan s | req/s | p50 ms | p95 ms | p99 ms | first chunk p50 ms | swaps | loads | peak in flight | GPU busy |\n");
            out.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
            for pair in report.rows.chunks(2) {
                for summary in pair {
                    let _ = writeln!(out, "{}", row(summary));
                }
                // A ratio only for a pair of passes straight and through foreman.
                if let [direct, through] = pair
                    && direct.pass.ends_with(" direct")
                {
                    let _ = writeln!(out, "{}", ratio(direct, through));
                }
            }
            out.push('\n');
        }
        for finding in &report.findings {
            let _ = writeln!(out, "- {finding}");
        }
        out.push('\n');
    }
    out
}
