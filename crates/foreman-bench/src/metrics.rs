//! Summaries of a pass: latency percentiles, makespan, swaps, loads, how many requests
//! ran at once and how busy the GPU was. A pass may use several simulators (one per
//! target); their counters are summed.

use serde::Serialize;
use serde_json::Value;

use crate::driver::Record;

/// The nearest-rank percentile of `values` (`p` in 0..=100); 0 when empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// One row of a workload's table.
#[derive(Debug, Clone, Serialize)]
pub struct PassSummary {
    pub pass: String,
    pub requests: usize,
    pub errors: usize,
    pub makespan_s: f64,
    pub throughput_per_s: f64,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub p99_ms: f64,
    pub first_chunk_p50_ms: f64,
    pub swaps: u64,
    /// Loads over all targets, reloads included.
    pub loads: u64,
    /// Loads of a model already resident with other runner options (`num_ctx`...).
    pub reloads: u64,
    /// Each target's most requests in flight at once (`peak_in_flight` of
    /// `/sim/stats`); `None` where the simulator does not report it.
    pub peak_in_flight: Vec<Option<u64>>,
    /// Time spent generating over the makespan.
    pub gpu_busy: f64,
}

impl PassSummary {
    /// `sim_stats` holds one `/sim/stats` answer per target of the pass.
    pub fn new(pass: &str, records: &[Record], sim_stats: &[Value]) -> PassSummary {
        let ok: Vec<&Record> = records.iter().filter(|r| r.ok()).collect();
        let latencies: Vec<f64> = ok.iter().map(|r| r.latency_ms()).collect();
        let first_chunks: Vec<f64> = ok.iter().map(|r| r.first_byte_ms - r.sent_ms).collect();
        let start = records
            .iter()
            .map(|r| r.sent_ms)
            .fold(f64::INFINITY, f64::min);
        let end = records.iter().map(|r| r.done_ms).fold(0.0, f64::max);
        let makespan_ms = if records.is_empty() {
            0.0
        } else {
            (end - start).max(0.001)
        };
        let generating_ms: f64 = ok.iter().map(|r| r.target_compute_ms).sum();
        PassSummary {
            pass: pass.to_string(),
            requests: records.len(),
            errors: records.len() - ok.len(),
            makespan_s: makespan_ms / 1000.0,
            throughput_per_s: ok.len() as f64 / (makespan_ms / 1000.0),
            p50_ms: percentile(&latencies, 50.0),
            p95_ms: percentile(&latencies, 95.0),
            p99_ms: percentile(&latencies, 99.0),
            first_chunk_p50_ms: percentile(&first_chunks, 50.0),
            swaps: sum_counter(sim_stats, "swaps_total"),
            loads: sum_counter(sim_stats, "loads_total"),
            reloads: sum_counter(sim_stats, "reloads_total"),
            peak_in_flight: sim_stats
                .iter()
                .map(|stats| stats["peak_in_flight"].as_u64())
                .collect(),
            gpu_busy: (generating_ms / makespan_ms).min(1.0),
        }
    }
}

/// The sum of every sample of `name` (whatever its labels) on a Prometheus text page.
pub fn exposition_sum(page: &str, name: &str) -> f64 {
    page.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let value = match rest.strip_prefix('{') {
                Some(labelled) => labelled.rsplit_once('}')?.1,
                None => rest,
            };
            // Another metric whose name starts with this one has no space here.
            value.strip_prefix(' ')?.trim().parse::<f64>().ok()
        })
        .sum()
}

fn sum_counter(sim_stats: &[Value], key: &str) -> u64 {
    sim_stats
        .iter()
        .filter_map(|stats| stats[key].as_u64())
        .sum()
}

/// A model's most requests in flight at once on one target
/// (`models.<name>.peak_in_flight`), when the simulator reports it.
pub fn model_peak_in_flight(sim_stats: &Value, model: &str) -> Option<u64> {
    sim_stats["models"][model]["peak_in_flight"].as_u64()
}

/// Peaks as the report shows them: `4`, `2+2+1` over several targets, `-` unknown.
pub fn peaks_text(peaks: &[Option<u64>]) -> String {
    if peaks.iter().all(Option::is_none) {
        return "-".into();
    }
    peaks
        .iter()
        .map(|peak| peak.map_or_else(|| "?".to_string(), |p| p.to_string()))
        .collect::<Vec<_>>()
        .join("+")
}

#[cfg(test)]
mod tests {
    use super::{PassSummary, exposition_sum, peaks_text, percentile};
    use serde_json::json;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), 2.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }

    #[test]
    fn exposition_samples_are_summed_over_their_labels() {
        let page = "# TYPE foreman_model_loads_total counter\n\
                    foreman_model_loads_total{target=\"a\",model=\"m\"} 2\n\
                    foreman_model_loads_total{target=\"b\",model=\"n}\"} 3\n\
                    foreman_model_loads_avoided_total 7\n";
        assert_eq!(exposition_sum(page, "foreman_model_loads_total"), 5.0);
        assert_eq!(
            exposition_sum(page, "foreman_model_loads_avoided_total"),
            7.0
        );
        assert_eq!(exposition_sum(page, "foreman_model_loads"), 0.0);
    }

    #[test]
    fn counters_are_summed_over_targets_and_peaks_kept_apart() {
        let stats = [
            json!({"loads_total": 3, "swaps_total": 1, "reloads_total": 0, "peak_in_flight": 2}),
            json!({"loads_total": 4, "swaps_total": 2, "reloads_total": 1}),
        ];
        let summary = PassSummary::new("p", &[], &stats);
        assert_eq!((summary.loads, summary.swaps, summary.reloads), (7, 3, 1));
        assert_eq!(summary.peak_in_flight, vec![Some(2), None]);
        assert_eq!(peaks_text(&summary.peak_in_flight), "2+?");
        assert_eq!(peaks_text(&[None]), "-");
        assert_eq!(peaks_text(&[Some(4)]), "4");
    }
}
