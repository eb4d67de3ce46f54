//! How well foreman forecasts when a queued job starts.
//!
//! While a pass runs through foreman, a sampler asks every quarter second for the
//! queued jobs (`GET /jobs?state=queued`) and each one's forecast (`GET /jobs/{id}`,
//! its `eta.start_at`). Once the pass is over, each forecast is set against the start
//! the job really had (its first claim, from the database foreman left). The error is
//! actual minus forecast: positive when the job started later than foretold.

use std::collections::HashMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use serde_json::Value;
use tokio::sync::watch;

use crate::ledger::Ledger;
use crate::metrics::percentile;

/// Between two rounds of sampling.
const EVERY: Duration = Duration::from_millis(250);
/// Queued jobs asked about per round, oldest first.
const PER_ROUND: usize = 40;
/// Forecasts kept at most.
const MAX_SAMPLES: usize = 20_000;

/// One forecast of one job's start.
#[derive(Debug, Clone)]
pub struct Sample {
    pub id: String,
    /// When it was asked for (unix ms).
    pub asked_at: i64,
    /// The forecast start (unix ms).
    pub start_at: i64,
    /// Made from times learned from the job's own model (`eta.basis` `learned`), not
    /// borrowed from other models or assumed before any ran.
    pub learned: bool,
}

/// The forecasts' errors over a pass: all of them, and those made from learned times.
#[derive(Debug, Clone, Serialize)]
pub struct Accuracy {
    pub all: Errors,
    pub learned: Option<Errors>,
}

/// Errors of a set of forecasts.
#[derive(Debug, Clone, Serialize)]
pub struct Errors {
    pub samples: usize,
    pub jobs: usize,
    pub median_abs_error_s: f64,
    pub p90_abs_error_s: f64,
    /// Mean of actual minus forecast: above 0, jobs started later than foretold.
    pub mean_error_s: f64,
    /// The median of |error| over the wait still ahead when asked (actual start minus
    /// the time of asking), for forecasts at least a second ahead.
    pub median_relative_error: f64,
}

fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis() as i64
}

/// Samples forecasts from foreman at `url` until `stop` turns true.
pub async fn sample(
    url: String,
    token: Option<String>,
    mut stop: watch::Receiver<bool>,
) -> Vec<Sample> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(5))
        .build()
        .expect("an HTTP client");
    let get = |path: String| {
        let mut request = client.get(format!("{url}{path}"));
        if let Some(token) = &token {
            request = request.bearer_auth(token);
        }
        async move {
            let response = request.send().await.ok()?;
            response.json::<Value>().await.ok()
        }
    };
    let mut samples = Vec::new();
    while !*stop.borrow() && samples.len() < MAX_SAMPLES {
        if let Some(page) = get(format!("/jobs?state=queued&limit={PER_ROUND}")).await {
            let ids: Vec<String> = page["jobs"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|job| job["id"].as_str().map(str::to_string))
                .collect();
            for id in ids {
                let asked_at = unix_ms(SystemTime::now());
                let Some(job) = get(format!("/jobs/{id}")).await else {
                    continue;
                };
                let start_at = job["eta"]["start_at"]
                    .as_str()
                    .and_then(|text| humantime::parse_rfc3339_weak(text).ok());
                if job["state"] == "queued"
                    && let Some(start_at) = start_at
                {
                    samples.push(Sample {
                        id,
                        asked_at,
                        start_at: unix_ms(start_at),
                        learned: job["eta"]["basis"] == "learned",
                    });
                }
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(EVERY) => {}
            _ = stop.changed() => {}
        }
    }
    samples
}

/// The forecasts against the starts in `ledger`; `None` without a forecast of a job
/// that started.
pub fn accuracy(samples: &[Sample], ledger: &Ledger) -> Option<Accuracy> {
    let started: HashMap<&str, i64> = ledger
        .jobs
        .iter()
        .filter_map(|job| Some((job.id.as_str(), job.started_at?)))
        .collect();
    let learned: Vec<Sample> = samples.iter().filter(|s| s.learned).cloned().collect();
    Some(Accuracy {
        all: errors(samples, &started)?,
        learned: errors(&learned, &started),
    })
}

fn errors(samples: &[Sample], started: &HashMap<&str, i64>) -> Option<Errors> {
    let mut errors = Vec::new();
    let mut relative = Vec::new();
    let mut jobs = std::collections::HashSet::new();
    for sample in samples {
        let Some(&actual) = started.get(sample.id.as_str()) else {
            continue;
        };
        let error_s = (actual - sample.start_at) as f64 / 1000.0;
        errors.push(error_s);
        jobs.insert(sample.id.as_str());
        let ahead_s = (actual - sample.asked_at) as f64 / 1000.0;
        if ahead_s >= 1.0 {
            relative.push(error_s.abs() / ahead_s);
        }
    }
    if errors.is_empty() {
        return None;
    }
    let mut absolute: Vec<f64> = errors.iter().map(|e| e.abs()).collect();
    absolute.sort_by(f64::total_cmp);
    relative.sort_by(f64::total_cmp);
    Some(Errors {
        samples: errors.len(),
        jobs: jobs.len(),
        median_abs_error_s: percentile(&absolute, 50.0),
        p90_abs_error_s: percentile(&absolute, 90.0),
        mean_error_s: errors.iter().sum::<f64>() / errors.len() as f64,
        median_relative_error: if relative.is_empty() {
            0.0
        } else {
            percentile(&relative, 50.0)
        },
    })
}

impl Errors {
    fn describe(&self) -> String {
        format!(
            "{} forecasts of {} jobs: |actual - forecast| median {:.2} s, p90 {:.2} s; mean error {:+.2} s (above 0: later than foretold); median error over the wait still ahead {:.0}%",
            self.samples,
            self.jobs,
            self.median_abs_error_s,
            self.p90_abs_error_s,
            self.mean_error_s,
            self.median_relative_error * 100.0
        )
    }
}

impl Accuracy {
    /// One line for a workload's findings.
    pub fn finding(&self) -> String {
        let learned = match &self.learned {
            Some(learned) => learned.describe(),
            None => "none".into(),
        };
        format!(
            "start forecasts (GET /jobs/{{id}} eta.start_at, sampled every {} ms while queued): all {}; of those made from the job's own model's learned times, {learned}",
            EVERY.as_millis(),
            self.all.describe(),
        )
    }
}
