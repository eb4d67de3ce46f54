//! Summaries of a pass: latency percentiles, makespan, swaps and how busy the GPU was.

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
    pub loads: u64,
    /// Time spent generating over the makespan.
    pub gpu_busy: f64,
}

impl PassSummary {
    pub fn new(pass: &str, records: &[Record], sim_stats: &Value) -> PassSummary {
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
            swaps: sim_stats["swaps_total"].as_u64().unwrap_or(0),
            loads: sim_stats["loads_total"].as_u64().unwrap_or(0),
            gpu_busy: (generating_ms / makespan_ms).min(1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::percentile;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[3.0, 1.0, 2.0], 50.0), 2.0);
        assert_eq!(percentile(&[], 50.0), 0.0);
    }
}
