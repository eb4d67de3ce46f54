//! Two foreman instances on one PostgreSQL database in front of one simulator: what one
//! instance does reaches the other through the store's signals (LISTEN/NOTIFY, or
//! polling with `FOREMAN_SIGNALS=poll`). Both run in this process (`foreman::serve`
//! twice), each with its own instance id, HTTP port and in-process hub, so nothing but
//! the database connects them.
//!
//! Which instance runs a job is up to the claim (both schedule the one target), so each
//! test first finds the runner from the job's lease owner (`INSTANCE/TARGET/SLOT`) and
//! then acts on the *other* instance.

use std::time::{Duration, Instant};

use foreman::config::Config;
use foreman::signals::SignalMode;
use foreman_store::postgres::APPLICATION_NAME;
use foreman_store::test_postgres::TestDatabase;
use foreman_store::{JobId, JobState, Store};
use ollama_sim::SimHandle;
use serde_json::{Value, json};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::common::*;

/// One running instance.
struct Instance {
    id: &'static str,
    url: String,
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), foreman::ServeError>>,
}

impl Instance {
    async fn start(
        id: &'static str,
        sim: &SimHandle,
        database: &str,
        data: &std::path::Path,
        signals: SignalMode,
    ) -> Instance {
        Instance::start_with(id, sim, database, data, signals, |_| {}).await
    }

    /// [`Instance::start`], with `adjust` given the settings last.
    async fn start_with(
        id: &'static str,
        sim: &SimHandle,
        database: &str,
        data: &std::path::Path,
        signals: SignalMode,
        adjust: impl FnOnce(&mut Config),
    ) -> Instance {
        let mut config: Config = test_config(&sim.url(), "unused.db");
        config.database = database.to_owned();
        config.data_dir = data.join(id);
        config.instance_id = id.to_owned();
        config.signals = signals;
        config.signal_poll_interval = Duration::from_millis(200);
        adjust(&mut config);
        let (url, shutdown, task) = launch(&config).await;
        Instance {
            id,
            url,
            shutdown,
            task,
        }
    }

    async fn stop(self) {
        self.shutdown.cancel();
        self.task.await.unwrap().unwrap();
    }
}

/// Two instances, `a` and `b`, on a fresh database and one simulator.
struct Pair {
    db: TestDatabase,
    sim: SimHandle,
    a: Instance,
    b: Instance,
    store: Store,
    _data: tempfile::TempDir,
}

impl Pair {
    async fn start(signals: SignalMode, sim: ollama_sim::SimConfig) -> Pair {
        Pair::start_with(signals, sim, |_| {}).await
    }

    /// [`Pair::start`], with `adjust` given both instances' settings last.
    async fn start_with(
        signals: SignalMode,
        sim: ollama_sim::SimConfig,
        adjust: impl Fn(&mut Config),
    ) -> Pair {
        let db = TestDatabase::create().await;
        let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), sim)
            .await
            .unwrap();
        let data = tempfile::tempdir().unwrap();
        let a = Instance::start_with("it-a", &sim, &db.url, data.path(), signals, &adjust).await;
        let b = Instance::start_with("it-b", &sim, &db.url, data.path(), signals, &adjust).await;
        let store = Store::open(&db.url).await.unwrap();
        Pair {
            db,
            sim,
            a,
            b,
            store,
            _data: data,
        }
    }

    /// The instance running job `id`, then the other one.
    async fn runner_and_other(&self, id: JobId) -> (&Instance, &Instance) {
        let mut owner = None;
        eventually("the job to run", async || {
            let job = self.store.get(id).await.unwrap().unwrap();
            owner = job.lease_owner.filter(|_| job.state == JobState::Running);
            owner.is_some()
        })
        .await;
        let owner = owner.unwrap();
        if owner.starts_with(&format!("{}/", self.a.id)) {
            (&self.a, &self.b)
        } else {
            assert!(owner.starts_with(&format!("{}/", self.b.id)), "{owner}");
            (&self.b, &self.a)
        }
    }

    async fn stop(self) {
        hold(&self.sim, false);
        self.a.stop().await;
        self.b.stop().await;
        self.store.close().await;
        self.sim.shutdown().await;
        self.db.drop_database().await;
    }
}

/// A simulator whose one model answers at 10 tokens a second: a run lasts seconds.
fn slow_sim() -> ollama_sim::SimConfig {
    sim_with(&["llama3.2:3b,load=20ms,tps=10"], 1, 1)
}

/// Submits an async chat to `instance`; returns its id.
async fn submit(instance: &Instance, text: &str) -> JobId {
    let response = client()
        .post(format!("{}/jobs", instance.url))
        .json(&json!({"kind": "chat",
            "request": {"model": CHAT, "messages": [{"role": "user", "content": text}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// A long poll on the instance that does not run the job answers when the other
/// instance's run ends: the end reaches it as a signal. (Without one, it would answer
/// only at the end of its 30 s wait, with the job still running.)
async fn long_poll_hears_the_other_instance(signals: SignalMode) {
    let pair = Pair::start(signals, slow_sim()).await;
    let id = submit(&pair.a, "slow enough to be waited for").await;
    let (_, other) = pair.runner_and_other(id).await;
    // The run takes seconds (a slow model), so the poll's first read finds it running
    // and the poll waits, up to 50 s. Once the end is committed, the poll must answer
    // within the suite's usual deadline (20 s): without a signal from the runner's
    // instance it would answer only when its 50 s are up.
    let poll = {
        let url = format!("{}/jobs/{id}?wait=50s", other.url);
        tokio::spawn(async move { get_json(&client(), url).await })
    };
    let job = recorded(&pair.store, id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    eventually("the long poll to answer", async || poll.is_finished()).await;
    let (status, view) = poll.await.unwrap();
    assert_eq!(
        (status, view["state"].as_str()),
        (200, Some("succeeded")),
        "{view}"
    );
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_poll_on_one_instance_hears_a_run_end_on_the_other() {
    long_poll_hears_the_other_instance(SignalMode::Notify).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_long_poll_hears_the_other_instance_by_polling_too() {
    long_poll_hears_the_other_instance(SignalMode::Poll).await;
}

/// A cancel sent to the instance that does not run the job stops the run on the other:
/// the simulator's held request goes away (the runner dropped it) and the job ends
/// cancelled. How long it took is printed.
async fn cancel_stops_the_other_instance(signals: SignalMode) {
    let pair = Pair::start(signals, fast_sim()).await;
    hold(&pair.sim, true);
    let id = submit(&pair.a, "held until cancelled").await;
    let (_, other) = pair.runner_and_other(id).await;
    eventually("the run to reach the target", async || {
        pair.sim.stats().held == 1
    })
    .await;
    let asked = Instant::now();
    let response = client()
        .post(format!("{}/jobs/{id}/cancel", other.url))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    eventually("the held run to be dropped", async || {
        pair.sim.stats().held == 0
    })
    .await;
    eprintln!(
        "cancel on one instance stopped the run on the other after {:?} ({signals:?})",
        asked.elapsed()
    );
    let job = recorded(&pair.store, id).await;
    assert_eq!(job.state, JobState::Cancelled, "{job:?}");
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_on_one_instance_stops_a_run_on_the_other() {
    cancel_stops_the_other_instance(SignalMode::Notify).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cancel_crosses_instances_by_polling_too() {
    cancel_stops_the_other_instance(SignalMode::Poll).await;
}

/// When the listening sessions die (here terminated by the server), each instance opens
/// a new one and signals cross again: a cancel sent afterwards stops the other's run.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn listeners_reconnect_after_their_sessions_die() {
    let pair = Pair::start(SignalMode::Notify, fast_sim()).await;
    let listening = async || pair.db.sessions(APPLICATION_NAME).await;
    eventually("both instances to listen", async || listening().await == 2).await;
    assert_eq!(pair.db.terminate_sessions(APPLICATION_NAME).await, 2);
    // Whether the cancel below finds an instance listening anew or still reconnecting,
    // it must cross: a new session hears it, and a reconnect reads the cancel requests
    // of the jobs running there (what was sent meanwhile is lost). Without reconnecting,
    // it would never reach the run.

    hold(&pair.sim, true);
    let id = submit(&pair.a, "held until cancelled").await;
    let (_, other) = pair.runner_and_other(id).await;
    eventually("the run to reach the target", async || {
        pair.sim.stats().held == 1
    })
    .await;
    let response = client()
        .post(format!("{}/jobs/{id}/cancel", other.url))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    eventually("the held run to be dropped", async || {
        pair.sim.stats().held == 0
    })
    .await;
    assert_eq!(recorded(&pair.store, id).await.state, JobState::Cancelled);
    pair.stop().await;
}

/// `/jobs/{id}/events` on the instance that does not run the job streams the run's
/// chunks as the other instance writes them to the store, then ends: its lines are the
/// chat's stream (the last one `done`), and their content is the stored result's.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn events_on_the_other_instance_stream_the_chunks() {
    let pair = Pair::start(SignalMode::Notify, slow_sim()).await;
    let id = submit(&pair.a, "followed from the other instance").await;
    let (_, other) = pair.runner_and_other(id).await;
    let events = {
        let url = format!("{}/jobs/{id}/events", other.url);
        tokio::spawn(async move {
            let response = client().get(url).send().await.unwrap();
            assert_eq!(response.status(), 200);
            response.text().await.unwrap()
        })
    };
    let job = recorded(&pair.store, id).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    eventually("the event stream to end", async || events.is_finished()).await;
    let body = events.await.unwrap();
    let lines: Vec<Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(lines.len() > 2, "chunks, not only the final line: {body}");
    assert_eq!(lines.last().unwrap()["done"], true, "{body}");
    let stored: Value = serde_json::from_str(job.result.as_deref().unwrap()).unwrap();
    assert_eq!(
        streamed_content(&body),
        stored["message"]["content"],
        "{body}"
    );
    pair.stop().await;
}

/// The instance holding the target (it schedules and runs every job for it), then the
/// other one.
async fn holder_and_other(pair: &Pair) -> (&Instance, &Instance) {
    let mut holder = None;
    eventually("an instance to hold the target", async || {
        for instance in [&pair.a, &pair.b] {
            let (_, view) = get_json(&client(), format!("{}/foreman/targets", instance.url)).await;
            if view["targets"][0]["owned"] == true {
                holder = Some(instance.id);
            }
        }
        holder.is_some()
    })
    .await;
    if holder == Some(pair.a.id) {
        (&pair.a, &pair.b)
    } else {
        (&pair.b, &pair.a)
    }
}

/// The `message.content` of every line of a native chat stream, joined.
fn streamed_content(body: &str) -> Value {
    let mut content = String::new();
    for line in body.lines() {
        let line: Value = serde_json::from_str(line).unwrap();
        content.push_str(line["message"]["content"].as_str().unwrap_or_default());
    }
    Value::String(content)
}

/// A streaming chat sent to `instance`: the body, and how long its first chunk took.
async fn streamed_chat(instance: &Instance, text: &str) -> (String, Duration) {
    let sent = Instant::now();
    let mut response = client()
        .post(format!("{}/api/chat", instance.url))
        .json(&chat_body(CHAT, text, true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "application/x-ndjson",
        "{:?}",
        response.headers()
    );
    let mut body = Vec::new();
    let mut first = None;
    while let Some(chunk) = response.chunk().await.unwrap() {
        first.get_or_insert_with(|| sent.elapsed());
        body.extend_from_slice(&chunk);
    }
    (String::from_utf8(body).unwrap(), first.unwrap())
}

/// A synchronous chat sent to the instance that does not hold the target is answered
/// whole, its output relayed through the database from the holder's run: streamed, the
/// same lines (but for their timestamps and durations) with the same text as the same
/// chat sent to the holder; not streamed, the same message. Prints the time to the first
/// chunk on each, and what crossing instances added.
async fn sync_chats_cross_instances(signals: SignalMode) {
    let pair = Pair::start(signals, fast_sim()).await;
    let (holder, other) = holder_and_other(&pair).await;
    let text = "the same question on both instances";
    // Once each before measuring, so both have a connection pool and a loaded model.
    streamed_chat(holder, text).await;
    let (direct, direct_first) = streamed_chat(holder, text).await;
    let (relayed, relayed_first) = streamed_chat(other, text).await;
    // No caller sees the end of an answer before its job's outcome is committed: read
    // at once, every job is finished.
    let all = foreman_store::ListParams {
        limit: 100,
        ..Default::default()
    };
    for job in pair.store.list(all.clone()).await.unwrap() {
        assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    }
    assert_eq!(streamed_content(&relayed), streamed_content(&direct));
    assert!(
        streamed_content(&direct)
            .as_str()
            .is_some_and(|c| !c.is_empty()),
        "{direct}"
    );
    let shape = |body: &str| -> Vec<Value> {
        body.lines()
            .map(|line| {
                let mut line: Value = serde_json::from_str(line).unwrap();
                let line = line.as_object_mut().unwrap();
                line.retain(|key, _| !key.ends_with("_at") && !key.ends_with("duration"));
                Value::Object(line.clone())
            })
            .collect()
    };
    assert_eq!(shape(&relayed), shape(&direct), "{relayed}");
    eprintln!(
        "time to first chunk ({signals:?}): on the holder {direct_first:?}, through the other \
         instance {relayed_first:?}, added {:?}",
        relayed_first.saturating_sub(direct_first)
    );

    let whole = |instance: &Instance| {
        let url = format!("{}/api/chat", instance.url);
        async move { post(&client(), url, &chat_body(CHAT, text, false)).await }
    };
    let (status, headers, body) = whole(other).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json; charset=utf-8");
    let (_, _, direct) = whole(holder).await;
    let (relayed, direct): (Value, Value) = (
        serde_json::from_str(&body).unwrap(),
        serde_json::from_str(&direct).unwrap(),
    );
    assert_eq!(relayed["message"], direct["message"], "{relayed}");
    assert_eq!(relayed["done"], true);

    // Only the two chats sent to the other instance wrote output to the database; the
    // holder's own callers were answered in memory.
    let jobs = pair.store.list(all).await.unwrap();
    assert_eq!(jobs.len(), 5);
    let mut with_output = 0;
    for job in &jobs {
        if !pair
            .store
            .read_output(job.id, None)
            .await
            .unwrap()
            .is_empty()
        {
            with_output += 1;
        }
    }
    assert_eq!(with_output, 2, "{jobs:?}");
    pair.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_chats_sent_to_the_other_instance_are_answered_whole() {
    sync_chats_cross_instances(SignalMode::Notify).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sync_chats_cross_instances_by_polling_too() {
    sync_chats_cross_instances(SignalMode::Poll).await;
}

/// A caller streamed a run of another instance that is cut off before its end (here that
/// instance's shutdown grace runs out, and the job is requeued): the caller's stream ends
/// with a 503 error line, as a caller on the runner's own instance hears, and does not go
/// on with the output of the job's next run (which here runs on the caller's instance,
/// once it takes the target over). The job itself is not lost: it runs again.
async fn a_cut_off_run_ends_the_relayed_stream(signals: SignalMode) {
    let short_grace = |config: &mut Config| config.shutdown_grace = Duration::from_millis(300);
    let Pair {
        db,
        sim,
        a,
        b,
        store,
        _data,
    } = Pair::start_with(signals, slow_sim(), short_grace).await;
    let name = foreman::targets::TargetSpec::single(&sim.url())
        .unwrap()
        .name;
    let mut holder = None;
    eventually("an instance to hold the target", async || {
        holder = store
            .lease_holder(foreman_store::Lease::Target(&name))
            .await
            .unwrap()
            .map(|lease| lease.owner);
        holder.is_some()
    })
    .await;
    let (runner, caller) = if holder.as_deref() == Some(a.id) {
        (a, b)
    } else {
        (b, a)
    };

    // Forty tokens at ten a second: the run lasts seconds.
    let response = client()
        .post(format!("{}/api/chat", caller.url))
        .json(
            &json!({"model": CHAT, "stream": true, "options": {"num_predict": 40},
            "messages": [{"role": "user", "content": "cut off halfway"}]}),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let reading = {
        let body = body.clone();
        tokio::spawn(async move {
            use futures::StreamExt;
            let mut chunks = response.bytes_stream();
            while let Some(chunk) = chunks.next().await {
                let chunk = chunk.unwrap();
                body.lock()
                    .unwrap()
                    .push_str(&String::from_utf8_lossy(&chunk));
            }
        })
    };
    eventually("a chunk relayed from the runner's instance", async || {
        body.lock().unwrap().contains("\"message\"")
    })
    .await;
    let job = store
        .list(foreman_store::ListParams {
            limit: 1,
            ..Default::default()
        })
        .await
        .unwrap()
        .remove(0);
    assert_eq!(job.accepted_by.as_deref(), Some(caller.id));
    assert!(
        job.lease_owner
            .as_deref()
            .is_some_and(|owner| owner.starts_with(&format!("{}/", runner.id))),
        "{job:?}"
    );

    // The runner's instance stops; its grace runs out mid-answer and the job is requeued.
    runner.stop().await;
    eventually("the caller's stream to end", async || reading.is_finished()).await;
    let body = body.lock().unwrap().clone();
    let lines: Vec<Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    let last = lines.last().unwrap();
    assert!(
        last["error"]
            .as_str()
            .is_some_and(|error| error.contains("cut off")),
        "{body}"
    );
    assert!(
        lines.iter().all(|line| line["done"] != true),
        "no answer's end after a cut: {body}"
    );
    // The rest of the job is not lost: it runs again (on the caller's instance, which
    // took the target over) and ends.
    let ended = recorded(&store, job.id).await;
    assert!(ended.state.is_terminal(), "{ended:?}");
    assert!(ended.attempts >= 1, "{ended:?}");

    caller.stop().await;
    store.close().await;
    sim.shutdown().await;
    db.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_run_cut_off_on_another_instance_ends_the_callers_stream_with_503() {
    a_cut_off_run_ends_the_relayed_stream(SignalMode::Notify).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cut_off_run_ends_the_relayed_stream_by_polling_too() {
    a_cut_off_run_ends_the_relayed_stream(SignalMode::Poll).await;
}

/// A target taken over while the previous holder still runs a job there: the new holder
/// counts that job as busy in its capacity (one slot, one place), so the next job starts
/// only once it has ended. The previous holder is played through the store: it holds the
/// target's lease for two seconds and runs one job there under a long job lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_new_target_holder_counts_the_previous_holders_running_jobs() {
    let db = TestDatabase::create().await;
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), fast_sim())
        .await
        .unwrap();
    let data = tempfile::tempdir().unwrap();
    let store = Store::open(&db.url).await.unwrap();
    let name = foreman::targets::TargetSpec::single(&sim.url())
        .unwrap()
        .name;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        store
            .acquire_lease(foreman_store::Lease::Target(&name), "gone", now, 2_000)
            .await
            .unwrap()
    );
    let previous = store
        .enqueue(
            foreman_store::NewJob {
                id: None,
                kind: foreman_store::JobKind::Chat,
                model: CHAT.to_owned(),
                load_options: String::new(),
                payload: chat_body(CHAT, "still running on the previous holder", false).to_string(),
                sync: false,
                priority: 0,
                max_attempts: 1,
                idempotency_key: None,
                webhook_url: None,
                metadata: None,
                caller: None,
            },
            now,
        )
        .await
        .unwrap()
        .job;
    let owner = format!("gone/{name}/0");
    store
        .claim(foreman_store::ClaimParams {
            id: previous.id,
            owner: owner.clone(),
            target: name.clone(),
            now,
            lease_for_ms: 600_000,
        })
        .await
        .unwrap()
        .expect("claimed by the previous holder");

    let b = Instance::start_with(
        "it-b",
        &sim,
        &db.url,
        data.path(),
        SignalMode::Notify,
        |config| config.lease_ttl = Duration::from_secs(2),
    )
    .await;
    let next = submit(&b, "waits for the previous holder's run").await;
    // B takes the target once the lease lapses, and counts the job running there.
    eventually("B to hold the target and count the run on it", async || {
        let (_, view) = get_json(&client(), format!("{}/foreman/targets", b.url)).await;
        view["targets"][0]["owned"] == true && view["targets"][0]["load"]["running"] == 1
    })
    .await;
    assert_eq!(
        store.get(next).await.unwrap().unwrap().state,
        JobState::Queued,
        "the one slot is the previous holder's"
    );
    assert_eq!(sim.stats().requests_total, 0);

    // The previous holder's run ends; only then does B start the next job.
    let ended_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    store
        .complete(previous.id, 1, &owner, "{}".to_owned(), ended_at)
        .await
        .unwrap()
        .expect("the previous holder's outcome");
    let job = recorded(&store, next).await;
    assert_eq!(job.state, JobState::Succeeded, "{job:?}");
    assert!(
        job.started_at.is_some_and(|started| started >= ended_at),
        "started {:?}, the previous run ended at {ended_at}",
        job.started_at
    );
    assert_eq!(sim.stats().peak_in_flight, 1);

    b.stop().await;
    store.close().await;
    sim.shutdown().await;
    db.drop_database().await;
}

/// An instance that starts abandons only the synchronous jobs it accepted itself before:
/// the callers of another live instance keep theirs (one running, one queued behind it)
/// and get their answers, and a third instance's start in between cancels nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_starting_instance_leaves_other_instances_sync_jobs_alone() {
    let pair = Pair::start(SignalMode::Notify, fast_sim()).await;
    hold(&pair.sim, true);
    let (_, other) = holder_and_other(&pair).await;
    let client = client();
    let first = spawn_chat(&client, &other.url, CHAT, "held while an instance starts");
    let second = spawn_chat(&client, &other.url, CHAT, "queued while an instance starts");
    let mut sync_jobs = Vec::new();
    eventually(
        "both callers' jobs to be accepted, one running",
        async || {
            sync_jobs = pair
                .store
                .list(foreman_store::ListParams {
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            sync_jobs.len() == 2
                && sync_jobs.iter().all(|job| job.sync)
                && pair.sim.stats().held == 1
        },
    )
    .await;
    for job in &sync_jobs {
        assert_eq!(job.accepted_by.as_deref(), Some(other.id), "{job:?}");
    }

    let data = tempfile::tempdir().unwrap();
    let third = Instance::start(
        "it-c",
        &pair.sim,
        &pair.db.url,
        data.path(),
        SignalMode::Notify,
    )
    .await;
    for job in &sync_jobs {
        let now = pair.store.get(job.id).await.unwrap().unwrap();
        assert!(!now.state.is_terminal(), "{now:?}");
        assert!(!now.cancel_requested, "{now:?}");
    }
    hold(&pair.sim, false);
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(second.await.unwrap(), 200);
    for job in &sync_jobs {
        assert_eq!(
            recorded(&pair.store, job.id).await.state,
            JobState::Succeeded
        );
    }
    third.stop().await;
    pair.stop().await;
}

/// The synchronous jobs of an instance that is gone (here stopped: its callers were told
/// to retry) have no caller any more: once its instance lease is gone, the janitor's
/// holder abandons them, the queued one cancelled with 499 and why, the running one
/// (held on the target by the other instance) stopped there.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sync_jobs_of_an_instance_gone_are_abandoned_by_the_janitor() {
    let quick = |config: &mut Config| {
        config.lease_ttl = Duration::from_secs(1);
        config.janitor_interval = Duration::from_millis(200);
    };
    let Pair {
        db,
        sim,
        a,
        b,
        store,
        _data,
    } = Pair::start_with(SignalMode::Notify, fast_sim(), quick).await;
    let name = foreman::targets::TargetSpec::single(&sim.url())
        .unwrap()
        .name;
    let holder = store
        .lease_holder(foreman_store::Lease::Target(&name))
        .await
        .unwrap()
        .map(|lease| lease.owner);
    assert_eq!(
        holder.as_deref(),
        Some(a.id),
        "the first instance schedules the target"
    );
    for id in [a.id, b.id] {
        let lease = store
            .lease_holder(foreman_store::Lease::Instance(id))
            .await
            .unwrap();
        assert_eq!(lease.map(|lease| lease.owner).as_deref(), Some(id));
    }

    hold(&sim, true);
    let client = client();
    let running = spawn_chat(&client, &b.url, CHAT, "held when its instance stops");
    let queued = spawn_chat(&client, &b.url, CHAT, "queued when its instance stops");
    let mut jobs = Vec::new();
    eventually(
        "both of b's callers' jobs, one held on the target",
        async || {
            jobs = store
                .list(foreman_store::ListParams {
                    limit: 10,
                    ..Default::default()
                })
                .await
                .unwrap();
            jobs.len() == 2 && sim.stats().held == 1
        },
    )
    .await;
    b.stop().await;
    assert_eq!(running.await.unwrap(), 503);
    assert_eq!(queued.await.unwrap(), 503);
    assert_eq!(
        store
            .lease_holder(foreman_store::Lease::Instance("it-b"))
            .await
            .unwrap(),
        None,
        "released at the clean stop"
    );
    for job in &jobs {
        let ended = recorded(&store, job.id).await;
        assert_eq!(ended.state, JobState::Cancelled, "{ended:?}");
        let failure = ended.failure.expect("why");
        assert_eq!(failure.status, 499, "{failure:?}");
        assert!(failure.message.contains("stopped or died"), "{failure:?}");
    }
    eventually("the held run to be dropped", async || sim.stats().held == 0).await;

    a.stop().await;
    store.close().await;
    sim.shutdown().await;
    db.drop_database().await;
}
