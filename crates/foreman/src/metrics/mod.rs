//! What foreman has done, counted for operators: the Prometheus page (`GET /metrics`),
//! and the recent history behind `GET /foreman/status` and the dashboard (`/ui`).
//!
//! One [`Metrics`] is shared (through `AppState`, the runners and the webhook
//! dispatcher); each place where something happens calls one hook: a job enqueued
//! ([`Metrics::enqueued`]), dispatched ([`Metrics::dispatched`], where the scheduler's
//! load decisions and the loads it saved are counted), its first output
//! ([`Metrics::first_token`]), its run's end on the target ([`Metrics::run_ended`]),
//! its terminal state committed ([`Metrics::finished`], which also writes the job's one
//! `info` line), a webhook attempt ([`Metrics::webhook_attempt`]). What other parts
//! already hold (the queue, the targets' state, the store's commit times, the
//! process) is read at scrape time instead of being copied here.
//!
//! Label values are bounded: job kinds and outcomes are enums, targets come from the
//! settings, models are those the targets list (a job's model is checked against
//! them before it is queued), and API keys are the few the operator named (the
//! per-key usage is kept by [`crate::keys::Ledger`], fed by the same hooks).
//!
//! **Loads avoided** (`foreman_model_loads_avoided_total`): the loads draining saved
//! against serving jobs in arrival order. A job counts when the job enqueued just
//! before it (across all models) was of another load key, so that serving in arrival
//! order would have switched models for it, and the scheduler started it on a target
//! that already had its key loaded. On one target with one place, loads made plus
//! loads avoided is exactly what strict arrival order would have cost; with several
//! places or targets, arrival order could have kept some keys loaded side by side, so
//! the count is an upper bound of the loads saved.

mod exposition;
mod process;

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::Mutex;

use foreman_store::{
    AttemptOutcome, COMMIT_BUCKETS, CommitTimesSnapshot, Job, JobId, JobKind, JobState, QueueGroup,
};
use serde::Serialize;

pub use self::exposition::Histogram;
use self::exposition::{Kind, Page};
use crate::targets::Targets;

/// Bounds of the job time histograms, in seconds: from a cached answer to a long
/// generation behind a deep queue.
const JOB_BUCKETS: [f64; 16] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0,
];

/// Finished jobs kept for the status view.
const RECENT_JOBS: usize = 20;

/// Load and run events kept for the timeline (a few minutes of a busy target).
const TIMELINE_EVENTS: usize = 2000;

/// The terminal states, as the `outcome` label.
const OUTCOMES: [JobState; 3] = [JobState::Succeeded, JobState::Failed, JobState::Cancelled];

/// A finished job, for the status view.
#[derive(Debug, Clone, Serialize)]
pub struct RecentJob {
    pub id: String,
    pub kind: &'static str,
    pub model: String,
    pub target: Option<String>,
    pub outcome: &'static str,
    pub created_at_ms: i64,
    pub finished_at_ms: i64,
    /// From enqueue to the first attempt's start; `None` if it never started.
    pub wait_seconds: Option<f64>,
    /// From the first attempt's start to the end.
    pub run_seconds: Option<f64>,
}

/// What a timeline event shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    /// The scheduler sent a job for a key not loaded on the target.
    Load,
    /// A job ran on the target (`end_ms` is `None` while it runs).
    Run,
}

/// One load or run on a target, for the timeline.
#[derive(Debug, Clone, Serialize)]
pub struct TimelineEvent {
    pub kind: EventKind,
    pub target: String,
    pub model: String,
    /// The load key, as the scheduler names it (`model` or `model{options}`).
    pub key: String,
    pub job: String,
    pub start_ms: i64,
    pub end_ms: Option<i64>,
}

/// The counters of loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct LoadCounts {
    pub loads: u64,
    pub loads_avoided: u64,
}

#[derive(Debug, Default)]
struct Recorded {
    enqueued: BTreeMap<&'static str, u64>,
    /// By kind and outcome.
    finished: BTreeMap<(&'static str, &'static str), u64>,
    /// By target and model.
    loads: BTreeMap<(String, String), u64>,
    loads_avoided: u64,
    /// The load key (model, options) of the job enqueued last.
    last_enqueued: Option<(String, String)>,
    /// Queued jobs whose predecessor in arrival order had another load key (see the
    /// module doc); each leaves at its dispatch or its end, so this holds at most the
    /// queue.
    switched: HashSet<JobId>,
    queue_wait: BTreeMap<String, Histogram>,
    first_token: BTreeMap<String, Histogram>,
    run: BTreeMap<String, Histogram>,
    /// By outcome: delivered, retry, failed.
    webhooks: BTreeMap<&'static str, u64>,
    recent: VecDeque<RecentJob>,
    timeline: VecDeque<TimelineEvent>,
}

/// The shared record; every hook takes one short lock.
#[derive(Debug, Default)]
pub struct Metrics {
    recorded: Mutex<Recorded>,
    /// What each API key used (its own lock), fed by the same hooks.
    pub usage: crate::keys::Ledger,
}

/// What a scrape reads from elsewhere.
pub struct Scrape<'a> {
    /// Queued jobs by model and priority.
    pub queue: &'a [QueueGroup],
    pub targets: &'a Targets,
    pub commit_times: CommitTimesSnapshot,
    /// Jobs the store finished by itself (startup recovery, lease rescue, abandoned sync
    /// jobs), per (kind, outcome): no hook saw them end.
    pub finished_by_store: BTreeMap<(&'static str, &'static str), u64>,
}

fn seconds_between(from_ms: i64, to_ms: i64) -> f64 {
    (to_ms - from_ms).max(0) as f64 / 1000.0
}

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        self.recorded.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new job (`job`, as committed) joined the queue.
    pub fn enqueued(&self, job: &Job) {
        self.usage.enqueued(job);
        let mut recorded = self.lock();
        *recorded.enqueued.entry(job.kind.as_str()).or_default() += 1;
        let key = (job.model.clone(), job.load_options.clone());
        if recorded
            .last_enqueued
            .as_ref()
            .is_some_and(|last| *last != key)
        {
            recorded.switched.insert(job.id);
        }
        recorded.last_enqueued = Some(key);
    }

    /// The scheduler claimed `job` for `target`; `load` when its key (`key`, as the
    /// scheduler names it) was not loaded there.
    pub fn dispatched(&self, target: &str, key: &str, job: &Job, load: bool, now: i64) {
        self.usage.dispatched(job.id, load, now);
        let mut recorded = self.lock();
        let avoided = recorded.switched.remove(&job.id) && !load;
        if load {
            *recorded
                .loads
                .entry((target.to_owned(), job.model.clone()))
                .or_default() += 1;
        }
        if avoided {
            recorded.loads_avoided += 1;
        }
        if job.attempts == 1 {
            recorded
                .queue_wait
                .entry(job.model.clone())
                .or_insert_with(|| Histogram::new(&JOB_BUCKETS))
                .observe(seconds_between(job.created_at, now));
        }
        let event = |kind| TimelineEvent {
            kind,
            target: target.to_owned(),
            model: job.model.clone(),
            key: key.to_owned(),
            job: job.id.to_string(),
            start_ms: now,
            end_ms: None,
        };
        if load {
            recorded.timeline.push_back(TimelineEvent {
                end_ms: Some(now),
                ..event(EventKind::Load)
            });
        }
        recorded.timeline.push_back(event(EventKind::Run));
        while recorded.timeline.len() > TIMELINE_EVENTS {
            recorded.timeline.pop_front();
        }
    }

    /// The first output of an attempt at `job` arrived: its time from enqueue.
    pub fn first_token(&self, job: &Job, now: i64) {
        self.lock()
            .first_token
            .entry(job.model.clone())
            .or_insert_with(|| Histogram::new(&JOB_BUCKETS))
            .observe(seconds_between(job.created_at, now));
    }

    /// The attempt at `job` that [`Metrics::dispatched`] announced has ended on its
    /// target (however it went).
    pub fn run_ended(&self, job: JobId, now: i64) {
        let job = job.to_string();
        let mut recorded = self.lock();
        if let Some(event) = recorded.timeline.iter_mut().rev().find(|event| {
            event.kind == EventKind::Run && event.job == job && event.end_ms.is_none()
        }) {
            event.end_ms = Some(now);
        }
    }

    /// `job`, as just committed: counted and logged when terminal, ignored otherwise
    /// (a retry or a requeue).
    pub fn finished(&self, job: &Job) {
        let (Some(finished_at), true) = (job.finished_at, job.state.is_terminal()) else {
            return;
        };
        self.usage.finished(job);
        let wait = job
            .started_at
            .map(|started| seconds_between(job.created_at, started));
        let run = job
            .started_at
            .map(|started| seconds_between(started, finished_at));
        tracing::info!(
            job = %job.id,
            model = %job.model,
            target = job.target.as_deref().unwrap_or("-"),
            wait_s = wait.unwrap_or(0.0),
            run_s = run.unwrap_or(0.0),
            outcome = job.state.as_str(),
            "job finished"
        );
        let mut recorded = self.lock();
        recorded.switched.remove(&job.id);
        *recorded
            .finished
            .entry((job.kind.as_str(), job.state.as_str()))
            .or_default() += 1;
        if let Some(run) = run {
            recorded
                .run
                .entry(job.model.clone())
                .or_insert_with(|| Histogram::new(&JOB_BUCKETS))
                .observe(run);
        }
        recorded.recent.push_front(RecentJob {
            id: job.id.to_string(),
            kind: job.kind.as_str(),
            model: job.model.clone(),
            target: job.target.clone(),
            outcome: job.state.as_str(),
            created_at_ms: job.created_at,
            finished_at_ms: finished_at,
            wait_seconds: wait,
            run_seconds: run,
        });
        recorded.recent.truncate(RECENT_JOBS);
    }

    /// A webhook delivery attempt ended so.
    pub fn webhook_attempt(&self, outcome: &AttemptOutcome) {
        let outcome = match outcome {
            AttemptOutcome::Delivered => "delivered",
            AttemptOutcome::RetryAt(_) => "retry",
            AttemptOutcome::Failed => "failed",
        };
        *self.lock().webhooks.entry(outcome).or_default() += 1;
    }

    /// Loads made and avoided so far.
    pub fn load_counts(&self) -> LoadCounts {
        let recorded = self.lock();
        LoadCounts {
            loads: recorded.loads.values().sum(),
            loads_avoided: recorded.loads_avoided,
        }
    }

    /// The latest finished jobs, newest first.
    pub fn recent_jobs(&self) -> Vec<RecentJob> {
        self.lock().recent.iter().cloned().collect()
    }

    /// Loads and runs that started at or after `since_ms` or were still running then,
    /// oldest first.
    pub fn timeline(&self, since_ms: i64) -> Vec<TimelineEvent> {
        self.lock()
            .timeline
            .iter()
            .filter(|event| event.end_ms.is_none_or(|end| end >= since_ms))
            .cloned()
            .collect()
    }

    /// The Prometheus page (text format 0.0.4).
    pub fn render(&self, scrape: &Scrape<'_>) -> String {
        let mut page = Page::default();
        self.write_jobs(&mut page, &scrape.finished_by_store);
        write_queue(&mut page, scrape);
        write_targets(&mut page, scrape.targets);
        self.write_loads(&mut page);
        self.write_times(&mut page);
        self.write_webhooks(&mut page);
        self.write_keys(&mut page);
        page.family(
            "foreman_store_commit_seconds",
            Kind::Histogram,
            "Duration of the store writer's commits (WAL append and, when durable, fsync).",
        );
        let commit = &scrape.commit_times;
        page.histogram(
            "foreman_store_commit_seconds",
            &[],
            &Histogram::from_parts(
                &COMMIT_BUCKETS,
                commit.buckets.clone(),
                commit.count,
                commit.sum_seconds,
            ),
        );
        process::write(&mut page);
        page.finish()
    }

    fn write_jobs(
        &self,
        page: &mut Page,
        finished_by_store: &BTreeMap<(&'static str, &'static str), u64>,
    ) {
        let recorded = self.lock();
        page.family(
            "foreman_jobs_enqueued_total",
            Kind::Counter,
            "Jobs committed to the queue, by kind.",
        );
        for kind in JobKind::ALL.map(JobKind::as_str) {
            let count = recorded.enqueued.get(kind).copied().unwrap_or(0);
            page.sample(
                "foreman_jobs_enqueued_total",
                &[("kind", kind)],
                count as f64,
            );
        }
        page.family(
            "foreman_jobs_finished_total",
            Kind::Counter,
            "Jobs that reached a terminal state, by kind and outcome.",
        );
        for kind in JobKind::ALL.map(JobKind::as_str) {
            for outcome in OUTCOMES.map(JobState::as_str) {
                let count = recorded
                    .finished
                    .get(&(kind, outcome))
                    .copied()
                    .unwrap_or(0)
                    + finished_by_store
                        .get(&(kind, outcome))
                        .copied()
                        .unwrap_or(0);
                page.sample(
                    "foreman_jobs_finished_total",
                    &[("kind", kind), ("outcome", outcome)],
                    count as f64,
                );
            }
        }
    }

    fn write_loads(&self, page: &mut Page) {
        let recorded = self.lock();
        page.family(
            "foreman_model_loads_total",
            Kind::Counter,
            "Jobs the scheduler sent to a target that did not have their model (load key) loaded.",
        );
        for ((target, model), count) in &recorded.loads {
            page.sample(
                "foreman_model_loads_total",
                &[("target", target), ("model", model)],
                *count as f64,
            );
        }
        page.family(
            "foreman_model_loads_avoided_total",
            Kind::Counter,
            "Jobs started on an already-loaded model that arrival order would have loaded it for (another model's job arrived just before).",
        );
        page.sample(
            "foreman_model_loads_avoided_total",
            &[],
            recorded.loads_avoided as f64,
        );
    }

    fn write_times(&self, page: &mut Page) {
        let recorded = self.lock();
        let families = [
            (
                "foreman_queue_wait_seconds",
                "Time from enqueue to the first attempt's start, by model.",
                &recorded.queue_wait,
            ),
            (
                "foreman_time_to_first_token_seconds",
                "Time from enqueue to an attempt's first output, by model.",
                &recorded.first_token,
            ),
            (
                "foreman_job_run_seconds",
                "Time from a job's first attempt's start to its end, by model.",
                &recorded.run,
            ),
        ];
        for (name, help, by_model) in families {
            page.family(name, Kind::Histogram, help);
            for (model, histogram) in by_model {
                page.histogram(name, &[("model", model)], histogram);
            }
        }
    }

    fn write_webhooks(&self, page: &mut Page) {
        let recorded = self.lock();
        page.family(
            "foreman_webhook_deliveries_total",
            Kind::Counter,
            "Webhook delivery attempts, by outcome (delivered, retry, failed).",
        );
        for outcome in ["delivered", "retry", "failed"] {
            let count = recorded.webhooks.get(outcome).copied().unwrap_or(0);
            page.sample(
                "foreman_webhook_deliveries_total",
                &[("outcome", outcome)],
                count as f64,
            );
        }
    }
}

impl Metrics {
    /// Per API key (and `admin`, the token): what it used since this process started.
    /// Keys are few and named by the operator, so the label stays bounded.
    fn write_keys(&self, page: &mut Page) {
        let totals = self.usage.totals();
        type Read = fn(&crate::keys::ledger::Totals) -> f64;
        let families: [(&str, &str, Read); 5] = [
            (
                "foreman_key_requests_total",
                "Requests admitted, by API key.",
                |t| t.requests as f64,
            ),
            (
                "foreman_key_prompt_tokens_total",
                "Prompt tokens of finished jobs, as the targets reported them, by API key.",
                |t| t.prompt_tokens as f64,
            ),
            (
                "foreman_key_completion_tokens_total",
                "Completion tokens of finished jobs, as the targets reported them, by API key.",
                |t| t.completion_tokens as f64,
            ),
            (
                "foreman_key_gpu_seconds_total",
                "Run time of finished jobs on their targets, by API key.",
                |t| t.gpu_seconds,
            ),
            (
                "foreman_key_model_loads_total",
                "Model loads the scheduler made for jobs, by API key.",
                |t| t.loads as f64,
            ),
        ];
        for (name, help, value) in families {
            page.family(name, Kind::Counter, help);
            for (key, total) in &totals {
                page.sample(name, &[("key", key)], value(total));
            }
        }
        let name = "foreman_key_refusals_total";
        page.family(
            name,
            Kind::Counter,
            "Requests refused, by API key and reason (forbidden: a scope or model it lacks; limited: a limit reached).",
        );
        for (key, total) in &totals {
            for (reason, count) in [("forbidden", total.forbidden), ("limited", total.limited)] {
                page.sample(name, &[("key", key), ("reason", reason)], count as f64);
            }
        }
    }
}

/// Queued jobs per model: every model a target lists (0 when none waits), and any
/// other model with jobs queued.
fn write_queue(page: &mut Page, scrape: &Scrape<'_>) {
    let mut depth: BTreeMap<String, u64> = BTreeMap::new();
    for target in scrape.targets.all() {
        for model in target.inventory.models() {
            depth.entry(model).or_default();
        }
    }
    for group in scrape.queue {
        *depth.entry(group.model.clone()).or_default() += group.count;
    }
    page.family(
        "foreman_queue_depth",
        Kind::Gauge,
        "Jobs queued now, by model.",
    );
    for (model, count) in &depth {
        page.sample("foreman_queue_depth", &[("model", model)], *count as f64);
    }
}

fn write_targets(page: &mut Page, targets: &Targets) {
    page.family(
        "foreman_jobs_running",
        Kind::Gauge,
        "Jobs running now, by target.",
    );
    for target in targets.all() {
        page.sample(
            "foreman_jobs_running",
            &[("target", &target.name)],
            target.load().running as f64,
        );
    }
    page.family(
        "foreman_target_up",
        Kind::Gauge,
        "Whether the target answered its last poll (1) or not (0).",
    );
    for target in targets.all() {
        let up = target.inventory.reachable() && !target.inventory.paused();
        page.sample(
            "foreman_target_up",
            &[("target", &target.name)],
            if up { 1.0 } else { 0.0 },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(model: &str, options: &str, created_at: i64) -> Job {
        Job {
            id: JobId::generate(),
            kind: JobKind::Chat,
            model: model.into(),
            load_options: options.into(),
            target: None,
            sync: false,
            interruptions: 0,
            payload: String::new(),
            state: JobState::Queued,
            priority: 0,
            attempts: 0,
            max_attempts: 3,
            lease_owner: None,
            lease_expires_at: None,
            run_after: created_at,
            cancel_requested: false,
            result: None,
            failure: None,
            idempotency_key: None,
            webhook_url: None,
            metadata: None,
            artifacts: None,
            caller: None,
            created_at,
            started_at: None,
            finished_at: None,
            accepted_by: None,
        }
    }

    fn claimed(mut job: Job, target: &str, at: i64) -> Job {
        job.state = JobState::Running;
        job.attempts += 1;
        job.target = Some(target.into());
        job.started_at.get_or_insert(at);
        job
    }

    fn ended(mut job: Job, state: JobState, at: i64) -> Job {
        job.state = state;
        job.finished_at = Some(at);
        job
    }

    #[test]
    fn a_load_is_avoided_only_where_arrival_order_would_have_switched() {
        let metrics = Metrics::default();
        // Arrival: a, b, a, a (same key as its predecessor), a with other options.
        let jobs = [
            job("a", "", 1),
            job("b", "", 2),
            job("a", "", 3),
            job("a", "", 4),
            job("a", "num_ctx=8192", 5),
        ];
        for job in &jobs {
            metrics.enqueued(job);
        }
        let run = |job: &Job, load: bool| {
            metrics.dispatched(
                "gpu",
                &job.model,
                &claimed(job.clone(), "gpu", 10),
                load,
                10,
            )
        };
        run(&jobs[0], true); // the first: no predecessor
        run(&jobs[2], false); // after b: avoided
        run(&jobs[3], false); // after a: arrival order would not have switched either
        run(&jobs[4], true); // its options need a load: not avoided
        run(&jobs[1], true);
        assert_eq!(
            metrics.load_counts(),
            LoadCounts {
                loads: 3,
                loads_avoided: 1
            }
        );
        assert!(metrics.lock().switched.is_empty(), "every dispatch left it");
        let page = metrics.render_for_test();
        assert!(page.contains("foreman_model_loads_total{target=\"gpu\",model=\"a\"} 2\n"));
        assert!(page.contains("foreman_model_loads_avoided_total 1\n"));
        assert!(page.contains("foreman_jobs_enqueued_total{kind=\"chat\"} 5\n"));
    }

    #[test]
    fn only_terminal_jobs_count_as_finished_and_join_the_recent_ones() {
        let metrics = Metrics::default();
        let queued = job("a", "", 1_000);
        metrics.enqueued(&queued);
        let running = claimed(queued, "gpu", 3_000);
        metrics.dispatched("gpu", "a", &running, true, 3_000);
        metrics.first_token(&running, 3_500);
        // A retry is not an end.
        metrics.finished(&running);
        assert!(metrics.recent_jobs().is_empty());
        metrics.run_ended(running.id, 4_000);
        metrics.finished(&ended(running.clone(), JobState::Succeeded, 4_000));
        let recent = metrics.recent_jobs();
        assert_eq!(recent.len(), 1);
        assert_eq!(recent[0].outcome, "succeeded");
        assert_eq!(recent[0].wait_seconds, Some(2.0));
        assert_eq!(recent[0].run_seconds, Some(1.0));
        let timeline = metrics.timeline(0);
        let kinds: Vec<(EventKind, Option<i64>)> =
            timeline.iter().map(|e| (e.kind, e.end_ms)).collect();
        assert_eq!(
            kinds,
            [
                (EventKind::Load, Some(3_000)),
                (EventKind::Run, Some(4_000))
            ]
        );
        assert!(metrics.timeline(5_000).is_empty(), "both ended before");
        let page = metrics.render_for_test();
        assert!(
            page.contains("foreman_jobs_finished_total{kind=\"chat\",outcome=\"succeeded\"} 1\n")
        );
        assert!(page.contains("foreman_queue_wait_seconds_count{model=\"a\"} 1\n"));
        assert!(page.contains("foreman_time_to_first_token_seconds_sum{model=\"a\"} 2.5\n"));
        assert!(page.contains("foreman_job_run_seconds_sum{model=\"a\"} 1\n"));
    }

    impl Metrics {
        /// The page with no targets, no queue and no commits.
        fn render_for_test(&self) -> String {
            let spec = crate::targets::TargetSpec::single("http://127.0.0.1:1").unwrap();
            let second = std::time::Duration::from_secs(1);
            let targets = Targets::new(&[spec], second, second);
            self.render(&Scrape {
                queue: &[],
                targets: &targets,
                commit_times: CommitTimesSnapshot {
                    buckets: vec![0; COMMIT_BUCKETS.len() + 1],
                    count: 0,
                    sum_seconds: 0.0,
                },
                finished_by_store: BTreeMap::new(),
            })
        }
    }
}
