//! Workloads about several foreman instances on one PostgreSQL database
//! (`--database postgres --instances 2`): the time to first chunk when the caller's
//! instance is not the one scheduling the target (`relay`), and how long the target
//! goes unscheduled after its holder is SIGKILLed (`takeover`).
//!
//! Both read which instance holds the target from `/foreman/targets` (`owned`,
//! `lease_owner`) and start the instances themselves, since they kill and compare
//! them one by one.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};

use crate::database::{Backend, QueueDb, instance_id};
use crate::driver::{Driver, Planned, Record};
use crate::metrics::{PassSummary, percentile};
use crate::procs::Running;
use crate::targets::{Comparison, Scale, Targets};
use crate::workloads::{Bench, EXIT_WITHIN, WorkloadReport, args, chat, round2};

/// The workloads of this module, run only with two instances on PostgreSQL.
pub const INSTANCE_NAMES: [&str; 2] = ["relay", "takeover"];

/// Jobs lease of the instances (`FOREMAN_LEASE`) and the janitor's period: short, as in
/// the takeover tests, so a job of a killed instance is rescued soon.
const INSTANCE_ENV: [(&str, &str); 2] = [
    ("FOREMAN_LEASE", "3s"),
    ("FOREMAN_JANITOR_INTERVAL", "500ms"),
];

fn unix_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis(),
    )
    .unwrap_or(i64::MAX)
}

fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30))
        .build()
        .expect("the HTTP client builds")
}

/// Whether the instance at `url` holds the (one) target, by its own account.
async fn holds_target(client: &reqwest::Client, url: &str, id: &str) -> bool {
    let Ok(response) = client.get(format!("{url}/foreman/targets")).send().await else {
        return false;
    };
    let Ok(view) = response.json::<Value>().await else {
        return false;
    };
    view["targets"][0]["owned"] == true && view["targets"][0]["lease_owner"] == id
}

/// The index of the instance holding the target, once exactly one does.
async fn holder(client: &reqwest::Client, urls: &[Option<String>]) -> Result<usize> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut holders = Vec::new();
        for (index, url) in urls.iter().enumerate() {
            if let Some(url) = url
                && holds_target(client, url, &instance_id(index)).await
            {
                holders.push(index);
            }
        }
        if let [one] = holders[..] {
            return Ok(one);
        }
        if Instant::now() > deadline {
            bail!("no single instance held the target within 30 s (holders: {holders:?})");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// When job `id` was first claimed, by the database's row (Unix ms).
async fn started_at(db: &tokio_postgres::Client, id: &str) -> Result<i64> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let row = db
            .query_opt("SELECT started_at FROM jobs WHERE id = $1", &[&id])
            .await?;
        if let Some(started) = row.and_then(|row| row.get::<_, Option<i64>>(0)) {
            return Ok(started);
        }
        if Instant::now() > deadline {
            bail!("job {id} was not started within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

impl Bench {
    fn two_instances(&self, workload: &str) -> Result<(String, String)> {
        match &self.database {
            Backend::Postgres {
                instances: 2,
                lease_ttl,
                ..
            } => Ok((workload.to_owned(), lease_ttl.clone())),
            _ => bail!("{workload} runs with --database postgres --instances 2"),
        }
    }

    async fn start_instance(
        &self,
        sim: &Running,
        database: &QueueDb,
        index: usize,
    ) -> Result<Running> {
        let env: Vec<(String, String)> = INSTANCE_ENV
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        self.binaries
            .start_foreman(&sim.url, database, index, &env)
            .await
    }

    /// Time to first chunk of streaming chats sent straight to the simulator, to the
    /// instance holding the target, and to the other one (which relays the chunks it
    /// reads from the database), one at a time, in alternating rounds.
    pub(crate) async fn relay(&self) -> Result<WorkloadReport> {
        let (name, lease_ttl) = self.two_instances("relay")?;
        let (rounds, per_round) = if self.quick { (2, 10) } else { (4, 50) };
        let model = "chat:3b";
        let sim = self
            .binaries
            .start_sim(&args(&["--model", "chat:3b,load=0s,tps=2000"]))
            .await?;
        let database = self.database.fresh(self.scratch.path(), &name).await?;
        let mut instances = Vec::new();
        for index in 0..2 {
            instances.push(self.start_instance(&sim, &database, index).await?);
        }
        let client = http();
        let urls: Vec<Option<String>> = instances.iter().map(|i| Some(i.url.clone())).collect();
        let held = holder(&client, &urls).await?;
        let (holder_url, other_url) =
            (instances[held].url.clone(), instances[1 - held].url.clone());
        let hidden = indicatif::ProgressBar::hidden;
        let warm = vec![chat(model, "warm up".into(), true)];
        for url in [&sim.url, &holder_url, &other_url] {
            Driver::new(url, hidden())
                .closed_loop(vec![warm.clone()])
                .await;
        }
        let (mut direct, mut on_holder, mut on_other) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let plan = |tag: &str| -> Vec<Planned> {
                (0..per_round)
                    .map(|i| chat(model, format!("{tag} {round} {i}"), true))
                    .collect()
            };
            for (url, tag, records) in [
                (&sim.url, "direct", &mut direct),
                (&holder_url, "holder", &mut on_holder),
                (&other_url, "other", &mut on_other),
            ] {
                let driver = Driver::new(url, hidden());
                records.extend(driver.closed_loop(vec![plan(tag)]).await);
            }
        }
        let (stats, _) = Driver::new(&sim.url, hidden()).sim_report(&sim.url).await?;
        for instance in instances {
            instance.terminate(EXIT_WITHIN).await?;
        }
        sim.stop().await;
        let summary = |label: &str, records: &[Record]| {
            PassSummary::new(label, records, std::slice::from_ref(&stats))
        };
        let rows = vec![
            summary("relay direct", &direct),
            summary("relay on the holder", &on_holder),
            summary("relay through the other instance", &on_other),
        ];
        let first = |records: &[Record]| -> Vec<f64> {
            records
                .iter()
                .filter(|r| r.ok())
                .map(|r| r.first_byte_ms - r.sent_ms)
                .collect()
        };
        let (d, h, o) = (first(&direct), first(&on_holder), first(&on_other));
        let p = |values: &[f64], q: f64| percentile(values, q);
        let added_p50 = p(&o, 50.0) - p(&h, 50.0);
        let added_p99 = p(&o, 99.0) - p(&h, 99.0);
        let mut targets = Targets::new("relay", self.quick);
        targets.no_errors(&[
            (&rows[0].pass, rows[0].errors, rows[0].requests),
            (&rows[1].pass, rows[1].errors, rows[1].requests),
            (&rows[2].pass, rows[2].errors, rows[2].requests),
        ]);
        let findings = vec![
            format!(
                "time to first chunk, p50 / p99: straight to the simulator {:.2} / {:.2} ms, on the instance holding the target {:.2} / {:.2} ms, through the other instance {:.2} / {:.2} ms",
                p(&d, 50.0),
                p(&d, 99.0),
                p(&h, 50.0),
                p(&h, 99.0),
                p(&o, 50.0),
                p(&o, 99.0)
            ),
            format!(
                "added by the other instance's relay (the runner's output written to the database and read back on a signal): {added_p50:.2} ms at p50, {added_p99:.2} ms at p99"
            ),
        ];
        Ok(WorkloadReport {
            name: "relay".into(),
            description: format!(
                "streaming chats one at a time, straight, on the instance holding the target and through the other one (two instances, one PostgreSQL database, FOREMAN_LEASE_TTL={lease_ttl})"
            ),
            parameters: json!({"rounds": rounds, "chats_per_round_and_pass": per_round, "model": "chat:3b,load=0s,tps=2000"}),
            rows,
            targets: targets.into_vec(),
            findings,
            svg: None,
            raw: json!({
                "first_chunk_ms": {"direct": d, "holder": h, "other": o},
                "added_p50_ms": round2(added_p50),
                "added_p99_ms": round2(added_p99),
            }),
        })
    }

    /// SIGKILLs the instance holding the target, submits a job to the survivor at once,
    /// and measures the time from the kill to that job's start (its `started_at`, by
    /// the same clock), and to the survivor reporting the target as its own; the
    /// killed instance is started again and the next round kills whichever holds the
    /// target then.
    pub(crate) async fn takeover(&self) -> Result<WorkloadReport> {
        let (name, lease_ttl) = self.two_instances("takeover")?;
        let ttl_ms = humantime::parse_duration(&lease_ttl)
            .context("the lease TTL")?
            .as_millis() as f64;
        let rounds = if self.quick { 2 } else { 6 };
        let model = "tiny:1b";
        let sim = self
            .binaries
            .start_sim(&args(&[
                "--model",
                "tiny:1b,load=0s,tps=inf",
                "--reply-tokens",
                "4",
            ]))
            .await?;
        let database = self.database.fresh(self.scratch.path(), &name).await?;
        let QueueDb::Postgres { url: db_url, .. } = &database else {
            bail!("takeover needs PostgreSQL");
        };
        let (db, connection) = tokio_postgres::connect(db_url, tokio_postgres::NoTls).await?;
        tokio::spawn(connection);
        let mut instances: Vec<Option<Running>> = Vec::new();
        for index in 0..2 {
            instances.push(Some(self.start_instance(&sim, &database, index).await?));
        }
        let client = http();
        let mut to_start = Vec::new();
        let mut to_owned = Vec::new();
        let mut errors = 0;
        for _ in 0..rounds {
            let urls: Vec<Option<String>> = instances
                .iter()
                .map(|i| i.as_ref().map(|i| i.url.clone()))
                .collect();
            let held = holder(&client, &urls).await?;
            let survivor = 1 - held;
            let survivor_url = urls[survivor].clone().context("the survivor runs")?;
            // Both serve before the kill: a chat through the survivor succeeds.
            let warm = Driver::new(&survivor_url, indicatif::ProgressBar::hidden())
                .closed_loop(vec![vec![chat(model, "before the kill".into(), false)]])
                .await;
            errors += warm.iter().filter(|r| !r.ok()).count();

            let killed_at = unix_ms();
            let killed = Instant::now();
            instances[held]
                .take()
                .context("the holder runs")?
                .stop()
                .await;
            let response = client
                .post(format!("{survivor_url}/jobs"))
                .json(&json!({"kind": "chat", "request": {"model": model,
                    "messages": [{"role": "user", "content": "after the kill"}]}}))
                .send()
                .await?;
            anyhow::ensure!(response.status() == 202, "the survivor refused the job");
            let id = response.json::<Value>().await?["id"]
                .as_str()
                .context("a job id")?
                .to_owned();
            let survivor_id = instance_id(survivor);
            while !holds_target(&client, &survivor_url, &survivor_id).await {
                anyhow::ensure!(
                    killed.elapsed() < Duration::from_secs(60),
                    "the survivor did not take the target within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            to_owned.push(killed.elapsed().as_secs_f64() * 1000.0);
            let started = started_at(&db, &id).await?;
            to_start.push((started - killed_at) as f64);
            instances[held] = Some(self.start_instance(&sim, &database, held).await?);
        }
        for instance in instances.into_iter().flatten() {
            instance.terminate(EXIT_WITHIN).await?;
        }
        sim.stop().await;
        let worst = to_start.iter().copied().fold(0.0, f64::max);
        let mut targets = Targets::new("takeover", self.quick);
        targets.check(
            "takeover after a SIGKILL of the target's holder (worst round)",
            worst,
            Comparison::Below,
            ttl_ms + 1000.0,
            "ms",
            Scale::Full,
            format!(
                "from the kill to the first job started by the survivor, {rounds} rounds: {}; FOREMAN_LEASE_TTL={lease_ttl}",
                to_start
                    .iter()
                    .map(|ms| format!("{ms:.0}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        );
        targets.no_errors(&[("takeover", errors, rounds)]);
        let findings = vec![
            format!(
                "takeover with FOREMAN_LEASE_TTL={lease_ttl}: from the SIGKILL to the first job started by the survivor, median {:.0} ms, worst {worst:.0} ms over {rounds} rounds",
                percentile(&to_start, 50.0)
            ),
            format!(
                "the survivor reported the target as its own after {:.0} ms at the median, {:.0} ms at worst",
                percentile(&to_owned, 50.0),
                to_owned.iter().copied().fold(0.0, f64::max)
            ),
        ];
        Ok(WorkloadReport {
            name: "takeover".into(),
            description: format!(
                "two instances on one PostgreSQL database and one simulator: the holder of the target is SIGKILLed, a job is submitted to the survivor at once (FOREMAN_LEASE_TTL={lease_ttl})"
            ),
            parameters: json!({"rounds": rounds, "lease_ttl": lease_ttl}),
            rows: Vec::new(),
            targets: targets.into_vec(),
            findings,
            svg: None,
            raw: json!({"kill_to_first_start_ms": to_start, "kill_to_owned_ms": to_owned}),
        })
    }
}
