//! Sends a workload's requests and records what each one cost, the same way for
//! both passes (straight to the target, and through foreman).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Result;
use futures::StreamExt;
use indicatif::ProgressBar;
use serde::Serialize;
use serde_json::{Value, json};
use tokio::time::Instant;

/// One planned request.
#[derive(Debug, Clone)]
pub struct Planned {
    pub model: String,
    pub prompt: String,
    pub stream: bool,
    /// For open-loop workloads: when to send, from the pass's start.
    pub at: Option<Duration>,
    /// Submit it as an async job (`POST /jobs`, answered 202 at once) instead of
    /// waiting for the answer on `/api/chat`.
    pub submit: bool,
    /// The request's `options` (e.g. `{"num_ctx": 8192}`), sent only when given.
    pub options: Option<Value>,
    /// The request's `keep_alive` (`0` unloads the model after the answer), sent only
    /// when given.
    pub keep_alive: Option<Value>,
}

/// What one request cost, in milliseconds from the pass's start.
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub client: usize,
    pub model: String,
    pub sent_ms: f64,
    pub first_byte_ms: f64,
    pub done_ms: f64,
    pub status: u16,
    /// The target's own figures from the final chunk, in ms.
    pub target_total_ms: f64,
    pub target_load_ms: f64,
    /// The target's computing time for the request: prompt evaluation plus generation.
    pub target_compute_ms: f64,
}

impl Record {
    pub fn latency_ms(&self) -> f64 {
        self.done_ms - self.sent_ms
    }

    /// Answered with success: 200 for a chat, 202 for a submitted job.
    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// An HTTP client shared by a pass.
#[derive(Clone)]
pub struct Driver {
    client: reqwest::Client,
    /// Where requests go: client `i` sends to `urls[i % urls.len()]`, as users who
    /// each picked a server would.
    urls: Vec<String>,
    start: Instant,
    progress: ProgressBar,
}

impl Driver {
    pub fn new(url: &str, progress: ProgressBar) -> Driver {
        Driver::spread(vec![url.to_string()], progress)
    }

    /// A driver whose clients are spread round-robin over `urls` (client `i` always
    /// calls `urls[i % urls.len()]`).
    pub fn spread(urls: Vec<String>, progress: ProgressBar) -> Driver {
        assert!(!urls.is_empty(), "a pass needs somewhere to send");
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(256)
            .timeout(Duration::from_secs(3600))
            .build()
            .expect("the HTTP client builds");
        Driver {
            client,
            urls,
            start: Instant::now(),
            progress,
        }
    }

    /// Milliseconds since the pass started.
    pub fn now_ms(&self) -> f64 {
        self.start.elapsed().as_secs_f64() * 1000.0
    }

    async fn send(&self, client: usize, planned: &Planned) -> Record {
        let mut body = json!({
            "model": planned.model,
            "messages": [{"role": "user", "content": planned.prompt}],
            "stream": planned.stream,
        });
        if let Some(options) = &planned.options {
            body["options"] = options.clone();
        }
        if let Some(keep_alive) = &planned.keep_alive {
            body["keep_alive"] = keep_alive.clone();
        }
        let route = if planned.submit {
            body = json!({"kind": "chat", "request": body, "priority": 0});
            "jobs"
        } else {
            "api/chat"
        };
        let sent_ms = self.now_ms();
        let mut record = Record {
            client,
            model: planned.model.clone(),
            sent_ms,
            first_byte_ms: sent_ms,
            done_ms: sent_ms,
            status: 0,
            target_total_ms: 0.0,
            target_load_ms: 0.0,
            target_compute_ms: 0.0,
        };
        let response = match self
            .client
            .post(format!("{}/{route}", self.urls[client % self.urls.len()]))
            .json(&body)
            .send()
            .await
        {
            Ok(response) => response,
            Err(_) => {
                record.done_ms = self.now_ms();
                return record;
            }
        };
        record.status = response.status().as_u16();
        let mut stream = response.bytes_stream();
        let mut body = Vec::new();
        let mut first = true;
        while let Some(chunk) = stream.next().await {
            let Ok(chunk) = chunk else {
                record.status = 0;
                break;
            };
            if first {
                record.first_byte_ms = self.now_ms();
                first = false;
            }
            body.extend_from_slice(&chunk);
        }
        record.done_ms = self.now_ms();
        let last_line = body
            .split(|b| *b == b'\n')
            .rfind(|line| !line.is_empty())
            .unwrap_or(&[]);
        if let Ok(last) = serde_json::from_slice::<Value>(last_line) {
            let ms = |key: &str| last.get(key).and_then(Value::as_f64).unwrap_or(0.0) / 1e6;
            record.target_total_ms = ms("total_duration");
            record.target_load_ms = ms("load_duration");
            record.target_compute_ms = ms("prompt_eval_duration") + ms("eval_duration");
        }
        self.progress.inc(1);
        record
    }

    /// Each client sends its list in order, one request at a time (closed loop).
    pub async fn closed_loop(&self, plans: Vec<Vec<Planned>>) -> Vec<Record> {
        let tasks: Vec<_> = plans
            .into_iter()
            .enumerate()
            .map(|(client, plan)| {
                let driver = self.clone();
                tokio::spawn(async move {
                    let mut records = Vec::with_capacity(plan.len());
                    for planned in &plan {
                        records.push(driver.send(client, planned).await);
                    }
                    records
                })
            })
            .collect();
        let mut records = Vec::new();
        for task in tasks {
            records.extend(task.await.expect("a client task"));
        }
        records.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
        records
    }

    /// `clients` closed-loop clients, each sending the next of its requests (`make(client,
    /// turn)`) as soon as the last is answered, until `running` turns false; the
    /// requests under way then finish.
    pub async fn closed_loop_while(
        &self,
        clients: usize,
        running: Arc<AtomicBool>,
        make: impl Fn(usize, usize) -> Planned + Send + Sync + 'static,
    ) -> Vec<Record> {
        let make = Arc::new(make);
        let tasks: Vec<_> = (0..clients)
            .map(|client| {
                let driver = self.clone();
                let running = running.clone();
                let make = make.clone();
                tokio::spawn(async move {
                    let mut records = Vec::new();
                    let mut turn = 0;
                    while running.load(Ordering::Relaxed) {
                        records.push(driver.send(client, &make(client, turn)).await);
                        turn += 1;
                    }
                    records
                })
            })
            .collect();
        let mut records = Vec::new();
        for task in tasks {
            records.extend(task.await.expect("a client task"));
        }
        records.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
        records
    }

    /// Every request is sent at its planned time, whatever is still running (open loop).
    pub async fn open_loop(&self, plan: Vec<Planned>) -> Vec<Record> {
        self.open_loop_from(plan, 0).await
    }

    /// Closed-loop clients and open-loop arrivals at the same time; the open-loop
    /// requests are numbered as clients after the closed-loop ones.
    pub async fn mixed(&self, closed: Vec<Vec<Planned>>, open: Vec<Planned>) -> Vec<Record> {
        let first_open = closed.len();
        let (mut records, open) = tokio::join!(
            self.closed_loop(closed),
            self.open_loop_from(open, first_open)
        );
        records.extend(open);
        records.sort_by(|a, b| a.sent_ms.total_cmp(&b.sent_ms));
        records
    }

    async fn open_loop_from(&self, plan: Vec<Planned>, first_client: usize) -> Vec<Record> {
        let tasks: Vec<_> = plan
            .into_iter()
            .enumerate()
            .map(|(index, planned)| {
                let driver = self.clone();
                tokio::spawn(async move {
                    if let Some(at) = planned.at {
                        tokio::time::sleep_until(driver.start + at).await;
                    }
                    driver.send(first_client + index, &planned).await
                })
            })
            .collect();
        let mut records = Vec::new();
        for task in tasks {
            records.push(task.await.expect("a request task"));
        }
        records
    }

    /// foreman's queue depth, from `/healthz`.
    pub async fn queue_depth(&self) -> Result<u64> {
        let health: Value = self
            .client
            .get(format!("{}/healthz", self.urls[0]))
            .send()
            .await?
            .json()
            .await?;
        Ok(health["queue_depth"].as_u64().unwrap_or(0))
    }

    /// The target's counters and residency events, with the events moved onto this
    /// pass's clock.
    pub async fn sim_report(&self, sim_url: &str) -> Result<(Value, Vec<Value>)> {
        let stats: Value = self
            .client
            .get(format!("{sim_url}/sim/stats"))
            .send()
            .await?
            .json()
            .await?;
        let asked_ms = self.now_ms();
        let events: Value = self
            .client
            .get(format!("{sim_url}/sim/events"))
            .send()
            .await?
            .json()
            .await?;
        let offset = asked_ms - events["now_ms"].as_f64().unwrap_or(0.0);
        let events = events["events"]
            .as_array()
            .map(|events| {
                events
                    .iter()
                    .map(|e| {
                        json!({
                            "at_ms": e["at_ms"].as_f64().unwrap_or(0.0) + offset,
                            "model": e["model"],
                            "event": e["event"],
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok((stats, events))
    }
}

/// A progress bar for one pass.
pub fn progress(label: &str, total: u64) -> ProgressBar {
    let bar = ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{prefix:>24} [{bar:40}] {pos}/{len} {elapsed}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(label.to_string());
    bar
}
