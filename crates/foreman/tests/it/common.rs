//! The harness: a simulator, foreman in-process in front of it, a client, and
//! polling helpers with deadlines (no bare sleeps).

use std::path::PathBuf;
use std::time::Duration;

use foreman::config::Config;
use foreman_store::Store;
use ollama_sim::{ModelSpec, SimConfig, SimHandle};
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const CHAT: &str = "llama3.2:3b";
pub const CHAT2: &str = "qwen2.5:0.5b";
pub const EMBED: &str = "nomic-embed-text";

/// Fast models; two chat models and an embedder, all resident at once.
pub fn fast_sim() -> SimConfig {
    SimConfig {
        models: vec![
            ModelSpec::parse("llama3.2:3b,load=20ms,tps=4000,tools").unwrap(),
            ModelSpec::parse("qwen2.5:0.5b,load=20ms,tps=4000").unwrap(),
            ModelSpec::parse("nomic-embed-text,embed,load=10ms").unwrap(),
        ],
        max_loaded: 3,
        ..SimConfig::default()
    }
}

/// A simulator with these models (`--model` specs), slots and places.
pub fn sim_with(models: &[&str], num_parallel: usize, max_loaded: usize) -> SimConfig {
    SimConfig {
        models: models
            .iter()
            .map(|m| ModelSpec::parse(m).unwrap())
            .collect(),
        num_parallel,
        max_loaded,
        ..SimConfig::default()
    }
}

pub struct TestForeman {
    pub url: String,
    /// The first target's simulator.
    pub sim: SimHandle,
    /// The simulators of the other targets, in order (see [`TestForeman::start_targets`]).
    pub more_sims: Vec<SimHandle>,
    pub db_path: PathBuf,
    config: Config,
    shutdown: CancellationToken,
    task: ServeTask,
    dir: TempDir,
}

pub type ServeTask = JoinHandle<Result<(), foreman::ServeError>>;

/// Starts foreman on a free port and waits until it answers.
/// `foreman::serve` with `config` on a free loopback port, once it answers `/healthz`:
/// its URL, its shutdown token and its task.
pub async fn launch(config: &Config) -> (String, CancellationToken, ServeTask) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let task = tokio::spawn(foreman::serve(listener, config.clone(), shutdown.clone()));
    // Ready once the store is open and /healthz answers: a test's own handle on
    // the database must not race foreman's start-up (migrations, WAL switch).
    let probe = client();
    eventually("foreman to be ready", async || {
        probe
            .get(format!("{url}/healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
    })
    .await;
    (url, shutdown, task)
}

/// Foreman settings for tests: quick polls and retries.
pub fn test_config(sim_url: &str, db: &str) -> Config {
    let mut config = Config::for_upstream(sim_url, db);
    config.data_dir = std::path::Path::new(db).with_file_name("data");
    config.poll_interval = Duration::from_millis(100);
    config.retry_base = Duration::from_millis(50);
    config.shutdown_grace = Duration::from_secs(2);
    config
}

impl TestForeman {
    pub async fn start(sim: SimConfig) -> TestForeman {
        TestForeman::start_with(sim, |_| {}).await
    }

    pub async fn start_with(sim: SimConfig, adjust: impl FnOnce(&mut Config)) -> TestForeman {
        let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), sim)
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("foreman.db");
        let mut config = test_config(&sim.url(), db_path.to_str().unwrap());
        adjust(&mut config);
        let (url, shutdown, task) = launch(&config).await;
        TestForeman {
            url,
            sim,
            more_sims: Vec::new(),
            db_path,
            config,
            shutdown,
            task,
            dir,
        }
    }

    /// Starts one simulator per `(name, simulator)` and foreman in front of all of
    /// them, each a target of that name with the simulator's `num_parallel` as slots
    /// and `max_loaded` as places.
    pub async fn start_targets(
        targets: Vec<(&str, SimConfig)>,
        adjust: impl FnOnce(&mut Config),
    ) -> TestForeman {
        let mut sims = Vec::new();
        let mut specs = Vec::new();
        for (name, sim) in targets {
            let (slots, places) = (sim.num_parallel, sim.max_loaded);
            let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), sim)
                .await
                .unwrap();
            specs.push(foreman::targets::TargetSpec {
                url: sim.url(),
                name: name.to_string(),
                slots,
                places,
            });
            sims.push(sim);
        }
        let dir = tempfile::tempdir().unwrap();
        let db_path = dir.path().join("foreman.db");
        let mut config = test_config(&specs[0].url, db_path.to_str().unwrap());
        config.targets = specs;
        adjust(&mut config);
        let (url, shutdown, task) = launch(&config).await;
        let sim = sims.remove(0);
        TestForeman {
            url,
            sim,
            more_sims: sims,
            db_path,
            config,
            shutdown,
            task,
            dir,
        }
    }

    /// Stops foreman gracefully and starts it again on the same database (and a new
    /// port), as an operator's restart would.
    pub async fn restart(&mut self) {
        self.shutdown.cancel();
        (&mut self.task).await.unwrap().unwrap();
        let (url, shutdown, task) = launch(&self.config).await;
        (self.url, self.shutdown, self.task) = (url, shutdown, task);
    }

    /// Stops foreman gracefully, changes its settings, and starts it again on the same
    /// database.
    pub async fn restart_with(&mut self, adjust: impl FnOnce(&mut Config)) {
        adjust(&mut self.config);
        self.restart().await;
    }

    /// Every job row foreman's store holds (up to 1,000), newest first.
    pub async fn jobs(&self) -> Vec<foreman_store::Job> {
        let store = self.store().await;
        let jobs = store
            .list(foreman_store::ListParams {
                limit: 1000,
                ..Default::default()
            })
            .await
            .unwrap();
        store.close().await;
        jobs
    }

    /// A second handle on foreman's job store, for looking at job rows: the SQLite file,
    /// or the PostgreSQL database a test set in `config.database`.
    pub async fn store(&self) -> Store {
        Store::open(&self.config.database).await.unwrap()
    }

    /// Stops foreman and its simulator. The returned guard holds the data folder: keep
    /// it to read the database after the stop.
    pub async fn stop(self) -> TempDir {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
        self.sim.shutdown().await;
        for sim in self.more_sims {
            sim.shutdown().await;
        }
        self.dir
    }
}

/// Turns the simulator's `hold` fault on or off: while on, inference requests wait
/// (counted in `stats().held`), so a job stays running exactly as long as a test needs.
pub fn hold(sim: &SimHandle, on: bool) {
    sim.set_faults(&ollama_sim::FaultsUpdate {
        hold: Some(on),
        ..Default::default()
    })
    .unwrap();
}

pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

pub fn chat_body(model: &str, text: &str, stream: bool) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": text}], "stream": stream})
}

/// Posts and returns status, headers and body text.
pub async fn post(
    client: &reqwest::Client,
    url: String,
    body: &Value,
) -> (u16, reqwest::header::HeaderMap, String) {
    let response = client.post(url).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    (status, headers, response.text().await.unwrap())
}

/// Sends a non-streaming chat in the background; resolves to its status.
pub fn spawn_chat(
    client: &reqwest::Client,
    url: &str,
    model: &str,
    text: &str,
) -> tokio::task::JoinHandle<u16> {
    let (client, url) = (client.clone(), url.to_string());
    let body = chat_body(model, text, false);
    tokio::spawn(async move { post(&client, format!("{url}/api/chat"), &body).await.0 })
}

/// Polls `check` until it holds or twenty seconds pass.
/// GETs `url` and reads the answer as JSON, with its status.
pub async fn get_json(client: &reqwest::Client, url: String) -> (u16, serde_json::Value) {
    let response = client.get(url).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// A job's row once its outcome is recorded. A caller's answer ends only after its
/// job's outcome is committed (`answered.rs` pins that); this also waits for the
/// outcome of a job whose caller did not wait for it.
pub async fn recorded(store: &Store, id: foreman_store::JobId) -> foreman_store::Job {
    let mut latest = None;
    eventually("the job's outcome to be recorded", async || {
        latest = store.get(id).await.unwrap();
        latest.as_ref().is_some_and(|job| job.state.is_terminal())
    })
    .await;
    latest.expect("the job exists")
}

pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for: {what}");
}

/// Starts the real `foreman` binary on the database `db` with `settings` (pairs of
/// `FOREMAN_*` variable and value) and none of the developer's `FOREMAN_*` variables,
/// waits for its banner and returns the process and its address (a new free port
/// each time). Quick polls and retries unless `settings` says otherwise; its log goes
/// to the test's stderr when `show_log`.
pub async fn start_foreman_binary(
    db: &str,
    settings: &[(&str, String)],
    show_log: bool,
) -> (tokio::process::Child, String) {
    let log = if show_log {
        std::process::Stdio::inherit()
    } else {
        std::process::Stdio::null()
    };
    spawn_foreman_binary(db, settings, log).await
}

/// [`start_foreman_binary`] with its log (stderr) piped to the test, line by line.
pub async fn start_foreman_binary_logged(
    db: &str,
    settings: &[(&str, String)],
) -> (
    tokio::process::Child,
    String,
    tokio::io::Lines<tokio::io::BufReader<tokio::process::ChildStderr>>,
) {
    use tokio::io::AsyncBufReadExt;
    let (mut child, url) = spawn_foreman_binary(db, settings, std::process::Stdio::piped()).await;
    let log = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    (child, url, log)
}

async fn spawn_foreman_binary(
    db: &str,
    settings: &[(&str, String)],
    log: std::process::Stdio,
) -> (tokio::process::Child, String) {
    use std::process::Stdio;
    use tokio::io::{AsyncBufReadExt, BufReader};
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_foreman"));
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("FOREMAN_") {
            command.env_remove(name);
        }
    }
    command
        .arg("serve")
        .env("FOREMAN_ADDR", "127.0.0.1:0")
        .env("FOREMAN_DATABASE", db)
        .env(
            "FOREMAN_DATA_DIR",
            std::path::Path::new(db).with_file_name("data"),
        )
        .env("FOREMAN_POLL_INTERVAL", "200ms")
        .env("FOREMAN_RETRY_BASE", "50ms");
    for (name, value) in settings {
        command.env(name, value);
    }
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .expect("foreman starts");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let banner = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the banner arrives")
        .unwrap()
        .expect("a banner line");
    let url = banner
        .split_whitespace()
        .find(|word| word.starts_with("http://"))
        .expect("the banner names the address")
        .to_string();
    (child, url)
}
