//! The targets a run is graded on. Each workload turns what it measured into
//! targets (a threshold, the measured value, and the verdict the comparison gives),
//! so the report's "met" column comes from the run itself, never from a hand.
//!
//! Some targets only mean something at full scale (latencies, throughput, the wait
//! bound with real load times); in a `--quick` run they are still reported but are
//! informational. The others (no errors, every job committed, foreman swapping or
//! loading less than the direct pass) hold at any scale and are judged in both modes.

use std::fmt::Write;

use serde::Serialize;

/// How the measured value must compare with the threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Comparison {
    AtMost,
    Below,
    AtLeast,
    Equal,
}

impl Comparison {
    fn holds(self, measured: f64, threshold: f64) -> bool {
        match self {
            Comparison::AtMost => measured <= threshold,
            Comparison::Below => measured < threshold,
            Comparison::AtLeast => measured >= threshold,
            Comparison::Equal => measured == threshold,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Comparison::AtMost => "<=",
            Comparison::Below => "<",
            Comparison::AtLeast => ">=",
            Comparison::Equal => "=",
        }
    }
}

/// Whether a target holds at every scale or only at full scale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scale {
    /// Judged in every run.
    Independent,
    /// Judged in full runs only; informational in `--quick` runs.
    Full,
}

/// What the comparison gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    Met,
    Missed,
    /// Measured and reported, but not judged in this run (a scale-dependent target in
    /// a `--quick` run).
    Informational,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Met => "met",
            Verdict::Missed => "**MISSED**",
            Verdict::Informational => "informational (quick run)",
        }
    }
}

/// One graded target.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    pub workload: String,
    pub name: String,
    pub comparison: Comparison,
    pub threshold: f64,
    pub measured: f64,
    pub unit: String,
    /// What the numbers are made of, e.g. "2560 rows succeeded of 2560 requests answered".
    pub detail: String,
    pub verdict: Verdict,
}

/// Collects a workload's targets, judging each as it is added.
pub struct Targets {
    workload: String,
    quick: bool,
    list: Vec<Target>,
}

impl Targets {
    pub fn new(workload: &str, quick: bool) -> Targets {
        Targets {
            workload: workload.to_string(),
            quick,
            list: Vec::new(),
        }
    }

    /// Adds a target: `measured` must compare with `threshold` as `comparison` says.
    #[allow(clippy::too_many_arguments)]
    pub fn check(
        &mut self,
        name: &str,
        measured: f64,
        comparison: Comparison,
        threshold: f64,
        unit: &str,
        scale: Scale,
        detail: String,
    ) {
        let verdict = if self.quick && scale == Scale::Full {
            Verdict::Informational
        } else if comparison.holds(measured, threshold) {
            Verdict::Met
        } else {
            Verdict::Missed
        };
        self.list.push(Target {
            workload: self.workload.clone(),
            name: name.to_string(),
            comparison,
            threshold,
            measured,
            unit: unit.to_string(),
            detail,
            verdict,
        });
    }

    /// Every request of both passes was answered 200.
    pub fn no_errors(&mut self, passes: &[(&str, usize, usize)]) {
        let errors: usize = passes.iter().map(|(_, errors, _)| errors).sum();
        let detail = passes
            .iter()
            .map(|(label, errors, requests)| format!("{label}: {errors} of {requests}"))
            .collect::<Vec<_>>()
            .join(", ");
        self.check(
            "no request failed",
            errors as f64,
            Comparison::Equal,
            0.0,
            "errors",
            Scale::Independent,
            detail,
        );
    }

    /// foreman's database holds a succeeded row for every request it answered 200.
    pub fn committed(&mut self, label: &str, succeeded_rows: u64, answered: usize) {
        self.check(
            &format!("every job durably committed ({label})"),
            succeeded_rows as f64,
            Comparison::Equal,
            answered as f64,
            "rows",
            Scale::Independent,
            format!(
                "{succeeded_rows} succeeded rows in the database after foreman exited, {answered} requests answered 200 (warm-up included)"
            ),
        );
    }

    pub fn into_vec(self) -> Vec<Target> {
        self.list
    }
}

/// A number the way the table shows it: integers plainly, the rest to two places.
fn number(value: f64, unit: &str) -> String {
    let text = if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{value:.0}")
    } else {
        format!("{value:.2}")
    };
    if unit.is_empty() {
        text
    } else {
        format!("{text} {unit}")
    }
}

/// The targets of a run as one markdown table.
pub fn table(targets: &[Target]) -> String {
    let mut out = String::new();
    out.push_str("| workload | target | threshold | measured | verdict | from |\n");
    out.push_str("|---|---|---|---|---|---|\n");
    for target in targets {
        let _ = writeln!(
            out,
            "| {} | {} | {} {} | {} | {} | {} |",
            target.workload,
            target.name,
            target.comparison.symbol(),
            number(target.threshold, &target.unit),
            number(target.measured, &target.unit),
            target.verdict.label(),
            target.detail,
        );
    }
    out
}

/// True when no target was missed.
pub fn all_met(targets: &[Target]) -> bool {
    targets.iter().all(|t| t.verdict != Verdict::Missed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(quick: bool, measured: f64, comparison: Comparison, scale: Scale) -> Verdict {
        let mut targets = Targets::new("w", quick);
        targets.check("t", measured, comparison, 1.0, "ms", scale, String::new());
        targets.into_vec()[0].verdict
    }

    #[test]
    fn verdicts_come_from_the_comparison() {
        use Comparison::*;
        assert_eq!(one(false, 1.0, AtMost, Scale::Full), Verdict::Met);
        assert_eq!(one(false, 1.01, AtMost, Scale::Full), Verdict::Missed);
        assert_eq!(one(false, 1.0, Below, Scale::Full), Verdict::Missed);
        assert_eq!(one(false, 0.5, Below, Scale::Full), Verdict::Met);
        assert_eq!(one(false, 1.0, AtLeast, Scale::Full), Verdict::Met);
        assert_eq!(one(false, 0.9, AtLeast, Scale::Full), Verdict::Missed);
        assert_eq!(one(false, 1.0, Equal, Scale::Full), Verdict::Met);
        assert_eq!(one(false, 2.0, Equal, Scale::Full), Verdict::Missed);
    }

    #[test]
    fn quick_runs_judge_only_scale_independent_targets() {
        use Comparison::*;
        assert_eq!(one(true, 9.0, AtMost, Scale::Full), Verdict::Informational);
        assert_eq!(one(true, 9.0, AtMost, Scale::Independent), Verdict::Missed);
        assert_eq!(one(true, 0.0, AtMost, Scale::Independent), Verdict::Met);
    }

    #[test]
    fn a_missed_target_fails_the_run_and_shows_in_the_table() {
        let mut targets = Targets::new("overhead", false);
        targets.committed("seq", 999, 1000);
        targets.no_errors(&[("direct", 0, 1000), ("foreman", 0, 1000)]);
        let targets = targets.into_vec();
        assert!(!all_met(&targets));
        let table = table(&targets);
        assert!(table.contains(
            "| overhead | every job durably committed (seq) | = 1000 rows | 999 rows | **MISSED** |"
        ));
        assert!(table.contains("| overhead | no request failed | = 0 errors | 0 errors | met |"));
        assert!(all_met(&targets[1..]));
    }
}
