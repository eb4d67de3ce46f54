//! Chaos: real `foreman` processes in front of an in-process simulator, with
//! synchronous (`/api/chat`, streaming and not) and asynchronous (`POST /jobs`) clients
//! running while foreman is SIGKILLed and restarted on the same database, the target
//! refuses connections for a while, and drop, stall, busy and failure rates change.
//! Two runs share this machinery: one process on a SQLite file, and two instances
//! (distinct `FOREMAN_INSTANCE_ID`s, a 2 s `FOREMAN_LEASE_TTL`) on one PostgreSQL
//! database, the clients spread over both and either one killed at random, so that
//! the survivor takes the target over and rescues the killed one's jobs.
//!
//! Every async job names a webhook receiver in the test, which answers at once.
//!
//! At the end (faults lifted, foreman restarted one last time and drained) it checks
//! only what the contract promises: every accepted job is in the store exactly once,
//! none is left queued or running, async jobs succeeded or failed with their failure
//! recorded and their webhook delivered at least once, synchronous jobs finished or
//! were cancelled with their reason, and no caller that read its whole answer finds
//! its job unfinished or cancelled. It prints, and does not assert, how often work ran
//! more than once: whole answers the simulator generated beyond the jobs that kept
//! one (its `completed` count), and webhook deliveries received more than once.
//!
//! Bounded for CI: 20 s of chaos by default (each run); `FOREMAN_CHAOS_SECONDS` runs longer.
//! Random choices come from one seed, printed, `FOREMAN_CHAOS_SEED` to replay it (the
//! choices repeat; the interleaving of processes does not). `FOREMAN_CHAOS_LOG=1`
//! shows foreman's logs.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;

use foreman_store::test_postgres::TestDatabase;
use foreman_store::{DeliveryState, Job, JobId, JobState, ListParams, Store};
use ollama_sim::{FaultsUpdate, ModelSpec, SimConfig};
use serde_json::json;
use tokio::process::Child;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::common::*;

const DEFAULT_SECONDS: u64 = 20;
const DEFAULT_SEED: u64 = 0x13c4_a05f_0e5e_ed13;
const SYNC_CLIENTS: usize = 3;
const ASYNC_CLIENTS: usize = 3;

/// SplitMix64: small, seedable, and enough for choosing faults.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// A number in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    fn chance(&mut self, p: f64) -> bool {
        self.unit() < p
    }

    fn millis(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(low + self.below(high - low + 1))
    }

    /// An independent generator for one client.
    fn fork(&mut self) -> Rng {
        Rng(self.next())
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let text = std::env::var(name).ok()?;
    let text = text.trim();
    let parsed = match text.strip_prefix("0x") {
        Some(hex) => u64::from_str_radix(hex, 16),
        None => text.parse(),
    };
    Some(parsed.unwrap_or_else(|_| panic!("{name} must be a number, not {text:?}")))
}

/// Starts the `foreman` binary on the database, settings for chaos, then `extra`
/// (an instance's own).
async fn start_foreman(
    sim_url: &str,
    db: &str,
    extra: &[(&'static str, String)],
) -> (Child, String) {
    let verbose = std::env::var_os("FOREMAN_CHAOS_LOG").is_some();
    let secret = base64::engine::general_purpose::STANDARD.encode([7u8; 32]);
    let mut settings = vec![
        ("FOREMAN_WEBHOOK_SECRET", format!("whsec_{secret}")),
        // The receiver is on loopback; a failed delivery is tried again soon.
        (
            "FOREMAN_WEBHOOK_ALLOW_PRIVATE_NETS",
            "127.0.0.0/8".to_string(),
        ),
        ("FOREMAN_WEBHOOK_RETRY_BASE", "100ms".to_string()),
        ("FOREMAN_WEBHOOK_RETRY_MAX", "1s".to_string()),
        (
            "FOREMAN_TARGETS",
            format!("{sim_url},name=sim,slots=2,places=2"),
        ),
        // A stalled answer is given up after a second and retried.
        ("FOREMAN_UPSTREAM_TIMEOUT", "1s".to_string()),
        // Synchronous callers give up on a refusing target after two seconds.
        ("FOREMAN_TARGET_DOWN_TIMEOUT", "2s".to_string()),
        ("FOREMAN_MAX_ATTEMPTS", "4".to_string()),
        (
            "FOREMAN_LOG",
            if verbose { "info" } else { "warn" }.to_string(),
        ),
    ];
    settings.extend(extra.iter().cloned());
    start_foreman_binary(db, &settings, verbose).await
}

/// The foreman processes of a run on one database, each restarted under its own
/// settings (its instance id among them), and where their clients find them.
struct Fleet {
    sim_url: String,
    db: String,
    settings: Vec<Vec<(&'static str, String)>>,
    processes: Vec<Option<Child>>,
    addresses: Vec<watch::Sender<Option<String>>>,
}

impl Fleet {
    /// Starts one process per entry of `settings`.
    async fn start(sim_url: &str, db: &str, settings: Vec<Vec<(&'static str, String)>>) -> Fleet {
        let mut fleet = Fleet {
            sim_url: sim_url.to_owned(),
            db: db.to_owned(),
            processes: settings.iter().map(|_| None).collect(),
            addresses: settings.iter().map(|_| watch::channel(None).0).collect(),
            settings,
        };
        for index in 0..fleet.len() {
            fleet.restart(index).await;
        }
        fleet
    }

    fn len(&self) -> usize {
        self.settings.len()
    }

    /// Where the clients of instance `index` send.
    fn address(&self, index: usize) -> Address {
        self.addresses[index % self.len()].subscribe()
    }

    /// The address of a running instance.
    fn url(&self, index: usize) -> String {
        self.addresses[index]
            .borrow()
            .clone()
            .expect("the instance runs")
    }

    /// SIGKILLs instance `index` (if it runs); its clients wait for the restart.
    async fn kill(&mut self, index: usize) {
        if let Some(mut process) = self.processes[index].take() {
            process.start_kill().unwrap();
            process.wait().await.unwrap();
        }
        self.addresses[index].send_replace(None);
    }

    async fn kill_all(&mut self) {
        for index in 0..self.len() {
            self.kill(index).await;
        }
    }

    /// Starts instance `index` again on the same database, under the same settings.
    async fn restart(&mut self, index: usize) {
        let (process, url) = start_foreman(&self.sim_url, &self.db, &self.settings[index]).await;
        self.processes[index] = Some(process);
        self.addresses[index].send_replace(Some(url));
    }
}

/// What differs between the runs.
struct Run {
    /// `chaos` or `chaos-pg`: the prefix of the report's lines.
    label: &'static str,
    /// A SQLite file's path or a PostgreSQL URL.
    db: String,
    /// One entry per foreman instance: its own settings.
    instances: Vec<Vec<(&'static str, String)>>,
    /// How long a killed instance stays down, in ms (a range).
    down_ms: (u64, u64),
}

/// A webhook receiver on loopback that answers 204 at once and counts the requests
/// by `webhook-id`.
struct Receiver {
    url: String,
    received: Arc<Mutex<HashMap<String, u32>>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let received: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let received = received.clone();
                move |headers: axum::http::HeaderMap| async move {
                    let id = headers
                        .get("webhook-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_string();
                    *received.lock().unwrap().entry(id).or_default() += 1;
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver { url, received }
    }

    fn count(&self, webhook_id: &str) -> u32 {
        self.received
            .lock()
            .unwrap()
            .get(webhook_id)
            .copied()
            .unwrap_or(0)
    }
}

/// How a synchronous request ended, seen from its caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncEnd {
    /// The whole answer arrived, with this status.
    Answered(u16),
    /// The connection broke after the headers (foreman was killed, or the client's
    /// own timeout).
    Broken,
}

#[derive(Default)]
struct Tally {
    /// Job ids of `POST /jobs` answered 202.
    accepted: Vec<JobId>,
    /// `POST /jobs` answers other than 202, by status.
    async_refused: BTreeMap<u16, u64>,
    /// Requests that got no answer at all (foreman down or killed meanwhile).
    unanswered: u64,
    /// Synchronous requests whose answer named a job, and how each ended.
    sync_jobs: Vec<(JobId, SyncEnd, bool)>,
    /// Synchronous answers without a job id (refused before enqueueing), by status.
    sync_without_job: BTreeMap<u16, u64>,
}

impl Tally {
    fn merge(&mut self, other: Tally) {
        self.accepted.extend(other.accepted);
        for (status, n) in other.async_refused {
            *self.async_refused.entry(status).or_default() += n;
        }
        self.unanswered += other.unanswered;
        self.sync_jobs.extend(other.sync_jobs);
        for (status, n) in other.sync_without_job {
            *self.sync_without_job.entry(status).or_default() += n;
        }
    }
}

/// foreman's address while it runs; `None` between a kill and the restart.
type Address = watch::Receiver<Option<String>>;

async fn current(address: &Address) -> Option<String> {
    let url = address.borrow().clone();
    if url.is_none() {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    url
}

fn model(rng: &mut Rng) -> &'static str {
    if rng.chance(0.5) { CHAT } else { CHAT2 }
}

async fn sync_client(
    index: usize,
    mut rng: Rng,
    address: Address,
    stop: CancellationToken,
) -> Tally {
    let client = client();
    let mut tally = Tally::default();
    let mut n = 0;
    while !stop.is_cancelled() {
        let Some(url) = current(&address).await else {
            continue;
        };
        n += 1;
        let stream = rng.chance(0.5);
        let body = chat_body(model(&mut rng), &format!("sync {index} {n}"), stream);
        let sent = client
            .post(format!("{url}/api/chat"))
            .timeout(Duration::from_secs(20))
            .json(&body)
            .send()
            .await;
        let Ok(mut response) = sent else {
            tally.unanswered += 1;
            continue;
        };
        let status = response.status().as_u16();
        let id = response
            .headers()
            .get("x-foreman-job-id")
            .and_then(|v| v.to_str().ok())
            .map(|v| v.parse::<JobId>().expect("a job id"));
        let mut whole = true;
        loop {
            match response.chunk().await {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => {
                    whole = false;
                    break;
                }
            }
        }
        match id {
            Some(id) => {
                let end = if whole {
                    SyncEnd::Answered(status)
                } else {
                    SyncEnd::Broken
                };
                tally.sync_jobs.push((id, end, stream));
            }
            None if whole => *tally.sync_without_job.entry(status).or_default() += 1,
            None => tally.unanswered += 1,
        }
        // As a real client would: at once after an answer, a pause before a retry
        // (foreman answers 503 at once while the target has been down too long).
        let pause = if status == 200 && whole {
            rng.millis(0, 100)
        } else {
            rng.millis(200, 500)
        };
        tokio::time::sleep(pause).await;
    }
    tally
}

async fn async_client(
    index: usize,
    mut rng: Rng,
    address: Address,
    webhook: String,
    stop: CancellationToken,
) -> Tally {
    let client = client();
    let mut tally = Tally::default();
    let mut n = 0;
    while !stop.is_cancelled() {
        let Some(url) = current(&address).await else {
            continue;
        };
        n += 1;
        let request = chat_body(model(&mut rng), &format!("async {index} {n}"), false);
        let sent = client
            .post(format!("{url}/jobs"))
            .timeout(Duration::from_secs(20))
            .json(&json!({"kind": "chat", "request": request, "webhook": webhook}))
            .send()
            .await;
        match sent {
            Ok(response) if response.status() == 202 => {
                // The job is accepted once the whole answer (with its id) arrived.
                match response.json::<serde_json::Value>().await {
                    Ok(view) => {
                        let id = view["id"].as_str().expect("the job's id");
                        tally.accepted.push(id.parse().expect("a job id"));
                    }
                    Err(_) => tally.unanswered += 1,
                }
            }
            Ok(response) => {
                *tally
                    .async_refused
                    .entry(response.status().as_u16())
                    .or_default() += 1
            }
            Err(_) => tally.unanswered += 1,
        }
        tokio::time::sleep(rng.millis(50, 300)).await;
    }
    tally
}

/// Every job row, newest first.
async fn all_jobs(store: &Store) -> Vec<Job> {
    let mut jobs = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(ListParams {
                cursor,
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else {
            return jobs;
        };
        cursor = Some(last.id);
        jobs.extend(page);
    }
}

async fn count_in(store: &Store, state: JobState) -> usize {
    store
        .list(ListParams {
            state: Some(state),
            limit: 1_000_000,
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

fn percent(part: usize, whole: usize) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_loses_no_accepted_job_and_leaves_none_stuck() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foreman.db");
    run_chaos(Run {
        label: "chaos",
        db: db.to_str().unwrap().to_owned(),
        instances: vec![Vec::new()],
        down_ms: (0, 300),
    })
    .await;
}

/// Two instances on one PostgreSQL database: a killed instance stays down up to 3 s,
/// longer than the 2 s target lease and the 3 s job lease at times, so the survivor
/// takes the target and rescues the killed one's runs before it is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chaos_on_two_instances_of_one_postgres_database_loses_no_accepted_job() {
    let database = TestDatabase::create().await;
    let dir = tempfile::tempdir().unwrap();
    let instance = |id: &str| {
        vec![
            ("FOREMAN_INSTANCE_ID", id.to_owned()),
            ("FOREMAN_LEASE_TTL", "2s".to_owned()),
            ("FOREMAN_LEASE", "3s".to_owned()),
            ("FOREMAN_JANITOR_INTERVAL", "500ms".to_owned()),
            // A delivery claimed by an instance killed before it sent it waits for its
            // claim's lease (this timeout plus 30 s); the receiver answers at once.
            ("FOREMAN_WEBHOOK_TIMEOUT", "2s".to_owned()),
            (
                "FOREMAN_DATA_DIR",
                dir.path().join(id).to_str().unwrap().to_owned(),
            ),
        ]
    };
    run_chaos(Run {
        label: "chaos-pg",
        db: database.url.clone(),
        instances: vec![instance("chaos-a"), instance("chaos-b")],
        down_ms: (0, 3000),
    })
    .await;
    database.drop_database().await;
}

async fn run_chaos(run: Run) {
    let label = run.label;
    let seconds = env_u64("FOREMAN_CHAOS_SECONDS").unwrap_or(DEFAULT_SECONDS);
    let seed = env_u64("FOREMAN_CHAOS_SEED").unwrap_or(DEFAULT_SEED);
    println!(
        "{label}: seed {seed:#x} (FOREMAN_CHAOS_SEED), {seconds} s (FOREMAN_CHAOS_SECONDS), {} instance(s)",
        run.instances.len()
    );
    let mut rng = Rng(seed);
    let began = Instant::now();
    let sim = ollama_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            models: vec![
                ModelSpec::parse("llama3.2:3b,load=20ms,tps=400").unwrap(),
                ModelSpec::parse("qwen2.5:0.5b,load=20ms,tps=400").unwrap(),
            ],
            num_parallel: 2,
            max_loaded: 2,
            seed,
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    let db = run.db.as_str();

    let receiver = Receiver::start().await;
    let mut fleet = Fleet::start(&sim.url(), db, run.instances).await;
    let stop = CancellationToken::new();
    let mut clients = Vec::new();
    // Client `i` of each kind calls instance `i % instances`.
    for i in 0..SYNC_CLIENTS {
        let task = sync_client(i, rng.fork(), fleet.address(i), stop.clone());
        clients.push(tokio::spawn(task));
    }
    for i in 0..ASYNC_CLIENTS {
        let webhook = receiver.url.clone();
        let task = async_client(i, rng.fork(), fleet.address(i), webhook, stop.clone());
        clients.push(tokio::spawn(task));
    }

    let (mut kills, mut refusals, mut rate_changes) = (0, 0, 0);
    let chaos_ends = Instant::now() + Duration::from_secs(seconds);
    let mut last_kill = Instant::now();
    while Instant::now() < chaos_ends {
        tokio::time::sleep(rng.millis(300, 1500)).await;
        let roll = rng.below(10);
        // A kill at least every four seconds, whatever the seed draws.
        if roll < 3 || last_kill.elapsed() > Duration::from_secs(4) {
            let victim = rng.below(fleet.len() as u64) as usize;
            fleet.kill(victim).await;
            kills += 1;
            tokio::time::sleep(rng.millis(run.down_ms.0, run.down_ms.1)).await;
            fleet.restart(victim).await;
            last_kill = Instant::now();
        } else if roll < 5 {
            let for_ms = rng.millis(200, 2500).as_millis();
            sim.set_faults(&FaultsUpdate {
                refuse_connections: Some(true),
                refuse_for: Some(format!("{for_ms}ms")),
                ..Default::default()
            })
            .unwrap();
            refusals += 1;
        } else if roll < 8 {
            let (drop, stall) = (rng.unit() * 0.3, rng.unit() * 0.08);
            let (busy, fail) = (rng.unit() * 0.05, rng.unit() * 0.02);
            sim.set_faults(&FaultsUpdate {
                drop_rate: Some(drop),
                stall_rate: Some(stall),
                busy_rate: Some(busy),
                fail_rate: Some(fail),
                ..Default::default()
            })
            .unwrap();
            rate_changes += 1;
        } else {
            sim.set_faults(&FaultsUpdate {
                drop_rate: Some(0.0),
                stall_rate: Some(0.0),
                busy_rate: Some(0.0),
                fail_rate: Some(0.0),
                ..Default::default()
            })
            .unwrap();
            rate_changes += 1;
        }
    }

    // The end: the clients stop, every instance dies one last time with their requests
    // open, the faults are lifted, and the instances come back to drain what is left.
    stop.cancel();
    fleet.kill_all().await;
    kills += fleet.len();
    let mut tally = Tally::default();
    for client in clients {
        let finished = tokio::time::timeout(Duration::from_secs(60), client).await;
        tally.merge(finished.expect("a client stops").unwrap());
    }
    sim.set_faults(&FaultsUpdate {
        clear: true,
        ..Default::default()
    })
    .unwrap();
    sim.refuse_connections(false);
    let chaos_took = began.elapsed();
    for index in 0..fleet.len() {
        fleet.restart(index).await;
    }
    let store = Store::open(db).await.unwrap();
    let drain_began = Instant::now();
    let drain_deadline = drain_began + Duration::from_secs(120.max(seconds));
    loop {
        let queued = count_in(&store, JobState::Queued).await;
        let running = count_in(&store, JobState::Running).await;
        if queued + running == 0 {
            break;
        }
        if Instant::now() > drain_deadline {
            let stuck: Vec<_> = all_jobs(&store)
                .await
                .into_iter()
                .filter(|j| !j.state.is_terminal())
                .collect();
            panic!("{queued} queued and {running} running jobs left after the drain: {stuck:#?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_took = drain_began.elapsed();
    for index in 0..fleet.len() {
        let url = fleet.url(index);
        let health = client().get(format!("{url}/healthz")).send().await.unwrap();
        assert_eq!(health.status(), 200, "foreman still serves after the chaos");
    }

    let jobs = all_jobs(&store).await;
    let by_id: HashMap<JobId, &Job> = jobs.iter().map(|j| (j.id, j)).collect();
    assert_eq!(by_id.len(), jobs.len(), "each job is one row");

    // Nothing stuck, each row's end recorded once (terminal exactly with finished_at).
    for job in &jobs {
        assert!(job.state.is_terminal(), "stuck: {job:#?}");
        assert!(job.finished_at.is_some(), "no end recorded: {job:#?}");
        assert!(
            job.lease_owner.is_none(),
            "a lease outlived its job: {job:#?}"
        );
        // Crashes spend no attempts; only the target's failures do.
        assert!(
            job.attempts.saturating_sub(job.interruptions) <= 4 && job.interruptions <= 5,
            "more runs than FOREMAN_MAX_ATTEMPTS and MAX_INTERRUPTIONS allow: {job:#?}"
        );
    }

    // Async: every accepted job exists, and ran to success or a recorded failure.
    let accepted: HashSet<JobId> = tally.accepted.iter().copied().collect();
    assert_eq!(accepted.len(), tally.accepted.len(), "each 202 a new job");
    for id in &accepted {
        let job = by_id
            .get(id)
            .unwrap_or_else(|| panic!("accepted job {id} lost"));
        assert!(!job.sync, "{id} was submitted to /jobs");
    }
    for job in jobs.iter().filter(|j| !j.sync) {
        match job.state {
            JobState::Succeeded => assert!(
                job.result.is_some() || job.artifacts.is_some(),
                "succeeded without a result: {job:#?}"
            ),
            JobState::Failed => assert!(
                job.failure.is_some(),
                "failed without a recorded failure: {job:#?}"
            ),
            _ => panic!("an async job neither succeeded nor failed: {job:#?}"),
        }
    }

    // Sync: every job a caller was told of exists; each finished, or was cancelled
    // with its reason (499: its caller was gone, a crash among them; 503: its target
    // was down too long).
    for (id, _, _) in &tally.sync_jobs {
        let job = by_id
            .get(id)
            .unwrap_or_else(|| panic!("sync job {id} lost"));
        assert!(job.sync, "{id} came from /api/chat");
    }
    for job in jobs.iter().filter(|j| j.sync) {
        match job.state {
            JobState::Succeeded => assert!(job.result.is_some(), "{job:#?}"),
            JobState::Failed => assert!(job.failure.is_some(), "{job:#?}"),
            JobState::Cancelled => {
                let status = job.failure.as_ref().map(|f| f.status);
                assert!(
                    matches!(status, Some(499 | 503)),
                    "a cancelled sync job carries its reason: {job:#?}"
                );
            }
            _ => unreachable!("checked terminal above"),
        }
    }

    // Webhooks: every async job has one delivery, and it arrived at least once.
    let mut deliveries = Vec::new();
    for job in jobs.iter().filter(|j| !j.sync) {
        let found = store.webhooks_for_job(job.id).await.unwrap();
        assert_eq!(found.len(), 1, "one delivery per ended job: {found:#?}");
        deliveries.push(found[0].id.clone());
    }
    let outbox_began = Instant::now();
    let outbox_deadline = outbox_began + Duration::from_secs(60);
    for (job, id) in jobs.iter().filter(|j| !j.sync).zip(&deliveries) {
        loop {
            let found = store.webhooks_for_job(job.id).await.unwrap();
            if found[0].state == DeliveryState::Delivered && receiver.count(id) > 0 {
                break;
            }
            assert!(
                Instant::now() < outbox_deadline,
                "the webhook of {} was not delivered: {found:#?}",
                job.id
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let outbox_took = outbox_began.elapsed();
    let received: u32 = deliveries.iter().map(|id| receiver.count(id)).sum();
    let delivered_twice = deliveries
        .iter()
        .filter(|id| receiver.count(id) > 1)
        .count();

    // A caller that read its whole answer finds its job ended as it was told, never
    // cancelled at a restart as if its caller had gone (499): the end of an answer is
    // relayed only after the outcome's commit.
    for (id, end, _) in &tally.sync_jobs {
        if let SyncEnd::Answered(_) = end {
            let job = by_id[id];
            assert!(
                job.failure.as_ref().is_none_or(|f| f.status != 499),
                "a caller read its whole answer, yet its job was cancelled for want of a \
                 caller: {job:#?}"
            );
        }
    }

    // The report: rates to quote, not to assert.
    let stats = sim.stats();
    let async_jobs: Vec<&Job> = jobs.iter().filter(|j| !j.sync).collect();
    let sync_jobs: Vec<&Job> = jobs.iter().filter(|j| j.sync).collect();
    let count = |jobs: &[&Job], state: JobState| jobs.iter().filter(|j| j.state == state).count();
    let extra_unexplained = async_jobs
        .iter()
        .filter(|j| j.attempts.saturating_sub(j.interruptions) > 1 && j.failure.is_none())
        .count();
    let interrupted = async_jobs.iter().filter(|j| j.interruptions > 0).count();
    let interruptions: u32 = jobs.iter().map(|j| j.interruptions).sum();
    let ran = jobs.iter().filter(|j| j.attempts > 0).count();
    let sync_cancelled_by_status = |status| {
        sync_jobs
            .iter()
            .filter(|j| j.state == JobState::Cancelled)
            .filter(|j| j.failure.as_ref().is_some_and(|f| f.status == status))
            .count()
    };
    let broken = tally
        .sync_jobs
        .iter()
        .filter(|(_, end, _)| *end == SyncEnd::Broken)
        .count();

    println!("{label}: {chaos_took:.1?} of load and faults, then a drain of {drain_took:.1?}");
    println!(
        "{label}: {kills} SIGKILLs, {refusals} refusal windows, {rate_changes} fault-rate changes"
    );
    println!(
        "{label}: async: {} accepted (202), {} rows; {} succeeded, {} failed; other answers {:?}",
        accepted.len(),
        async_jobs.len(),
        count(&async_jobs, JobState::Succeeded),
        count(&async_jobs, JobState::Failed),
        tally.async_refused,
    );
    println!(
        "{label}: sync: {} rows ({} named to callers, {} cut off mid-answer); {} succeeded, {} failed, \
         {} cancelled with 499, {} with 503; answers without a job {:?}; {} requests unanswered",
        sync_jobs.len(),
        tally.sync_jobs.len(),
        broken,
        count(&sync_jobs, JobState::Succeeded),
        count(&sync_jobs, JobState::Failed),
        sync_cancelled_by_status(499),
        sync_cancelled_by_status(503),
        tally.sync_without_job,
        tally.unanswered,
    );
    println!(
        "{label}: duplicate runs: async jobs with attempts - interruptions > 1 and no failure \
         recorded (a success clears the last failure, so retries after a target fault count \
         here): {extra_unexplained} of {} ({:.2}%); async jobs interrupted by a kill: \
         {interrupted} ({:.2}%); interruptions in all: {interruptions}",
        async_jobs.len(),
        percent(extra_unexplained, async_jobs.len()),
        percent(interrupted, async_jobs.len()),
    );
    let succeeded = jobs
        .iter()
        .filter(|j| j.state == JobState::Succeeded)
        .count();
    let wasted = stats.completed_total as i64 - succeeded as i64;
    println!(
        "{label}: simulator: {} inference requests for {ran} jobs that ran ({} rows), {} of \
         them drew a fault; {} answers generated whole for {succeeded} jobs that succeeded: \
         {wasted} whole answers lost to a kill and generated again ({:.2}% of the jobs that \
         ran; {interruptions} interruptions in all)",
        stats.requests_total,
        jobs.len(),
        stats.faults_injected_total,
        stats.completed_total,
        percent(wasted.max(0) as usize, ran),
    );
    println!(
        "{label}: webhooks: {} deliveries (one per async job), {received} requests received: \
         {} received more than once ({:.2}%), {} extra requests; all delivered \
         {outbox_took:.1?} after the drain",
        deliveries.len(),
        delivered_twice,
        percent(delivered_twice, deliveries.len()),
        received as usize - deliveries.len(),
    );

    fleet.kill_all().await;
    store.close().await;
    sim.abort();
}
