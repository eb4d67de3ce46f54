//! foreman on PostgreSQL end to end: the daemon in-process on a fresh database of the
//! throwaway test cluster (`scripts/pg-test-cluster.sh`), in front of the simulator:
//! synchronous chats (streamed and not), an async job with its webhook, a cancel, and
//! a start that takes back only this instance's own jobs a dead run left running.

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use foreman_store::test_postgres::TestDatabase;
use foreman_store::{ClaimParams, DeliveryState, JobKind, JobState, NewJob, Store};
use serde_json::{Value, json};

use crate::common::*;

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// A webhook receiver on loopback that keeps every body it gets and answers 204.
async fn receiver() -> (String, Arc<Mutex<Vec<String>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post({
            let bodies = bodies.clone();
            move |body: String| async move {
                bodies.lock().unwrap().push(body);
                axum::http::StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, bodies)
}

/// A job a previous run of an instance claimed and never finished (it died).
async fn left_running(store: &Store, owner: &str, text: &str) -> foreman_store::JobId {
    let now = now_ms();
    let job = store
        .enqueue(
            NewJob {
                id: None,
                kind: JobKind::Chat,
                model: CHAT.to_owned(),
                load_options: String::new(),
                payload: chat_body(CHAT, text, false).to_string(),
                sync: false,
                priority: 0,
                max_attempts: 3,
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
    store
        .claim(ClaimParams {
            id: job.id,
            owner: owner.to_owned(),
            target: "default".to_owned(),
            now,
            lease_for_ms: 3_600_000,
        })
        .await
        .unwrap()
        .expect("claimed");
    job.id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn foreman_runs_on_postgres() {
    let db = TestDatabase::create().await;
    // A previous run of this instance ("it-a") died with a job running, and another
    // instance is running one now: the start takes back only its own.
    let seed = Store::open(&db.url).await.unwrap();
    let mine = left_running(&seed, "it-a/default/0", "left by my last run").await;
    let theirs = left_running(&seed, "it-b/default/0", "another instance's").await;

    let (hook_url, hooks) = receiver().await;
    let database = db.url.clone();
    let mut foreman = TestForeman::start_with(fast_sim(), move |config| {
        config.database = database;
        config.instance_id = "it-a".to_owned();
        config.webhook_key = Some(
            foreman::webhook::decode_secret(&format!(
                "whsec_{}",
                base64::engine::general_purpose::STANDARD.encode([7u8; 32])
            ))
            .unwrap(),
        );
        config.webhook_allow_private_nets = foreman::webhook::parse_cidrs("127.0.0.0/8").unwrap();
    })
    .await;
    let store = foreman.store().await;
    assert!(store.is_shared());
    let recovered = recorded(&store, mine).await;
    assert_eq!(recovered.state, JobState::Succeeded, "{recovered:?}");
    assert_eq!((recovered.attempts, recovered.interruptions), (2, 1));
    let other = store.get(theirs).await.unwrap().unwrap();
    assert_eq!(other.state, JobState::Running);
    assert_eq!(other.lease_owner.as_deref(), Some("it-b/default/0"));

    let client = client();
    // A synchronous chat, whole and streamed; both are jobs in the database.
    let (status, _, body) = post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body(CHAT, "hello there", false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let answer: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(answer["done"], true);
    assert!(!answer["message"]["content"].as_str().unwrap().is_empty());
    let (status, _, body) = post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body(CHAT2, "stream it", true),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let lines: Vec<Value> = body
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert!(lines.len() > 1, "{body}");
    assert_eq!(lines.last().unwrap()["done"], true);
    let sync_jobs = foreman
        .jobs()
        .await
        .into_iter()
        .filter(|job| job.sync && job.state == JobState::Succeeded)
        .count();
    assert_eq!(sync_jobs, 2);

    // An async job with a webhook: the delivery is written with the outcome and sent.
    let response = client
        .post(format!("{}/jobs", foreman.url))
        .json(&json!({"kind": "chat", "webhook": hook_url,
            "request": {"model": CHAT, "messages": [{"role": "user", "content": "later"}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, done) = get_json(&client, format!("{}/jobs/{id}?wait=20s", foreman.url)).await;
    assert_eq!((status, done["state"].as_str()), (200, Some("succeeded")));
    eventually("the webhook to arrive", async || {
        hooks.lock().unwrap().iter().any(|body| {
            let payload: Value = serde_json::from_str(body).unwrap();
            payload["data"]["id"] == id.as_str() && payload["type"] == "job.succeeded"
        })
    })
    .await;
    let job_id = id.parse().unwrap();
    eventually("the delivery to be recorded", async || {
        let deliveries = store.webhooks_for_job(job_id).await.unwrap();
        deliveries.len() == 1 && deliveries[0].state == DeliveryState::Delivered
    })
    .await;

    // A cancel of a running job stops it.
    hold(&foreman.sim, true);
    let response = client
        .post(format!("{}/jobs", foreman.url))
        .json(&json!({"kind": "chat",
            "request": {"model": CHAT, "messages": [{"role": "user", "content": "held"}]}}))
        .send()
        .await
        .unwrap();
    let held = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let held_id = held.parse().unwrap();
    eventually("the held job to run", async || {
        store.get(held_id).await.unwrap().unwrap().state == JobState::Running
    })
    .await;
    let response = client
        .post(format!("{}/jobs/{held}/cancel", foreman.url))
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    let cancelled = recorded(&store, held_id).await;
    assert_eq!(cancelled.state, JobState::Cancelled);
    hold(&foreman.sim, false);

    // A restart on the same database finds every job where it was.
    let before = foreman.jobs().await;
    foreman.restart().await;
    let after = foreman.jobs().await;
    assert_eq!(
        before
            .iter()
            .map(|job| (job.id, job.state))
            .collect::<Vec<_>>(),
        after
            .iter()
            .map(|job| (job.id, job.state))
            .collect::<Vec<_>>()
    );
    let (status, _, _) = post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body(CHAT, "after the restart", false),
    )
    .await;
    assert_eq!(status, 200);

    store.close().await;
    seed.close().await;
    foreman.stop().await;
    db.drop_database().await;
}

/// The real binary on PostgreSQL, killed with SIGKILL in the middle of a run: started
/// again with the same `FOREMAN_INSTANCE_ID`, it takes the job back at once and runs it
/// to the end. `foreman db backup` on the database names pg_dump instead.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_foreman_on_postgres_takes_its_job_back_at_start() {
    let db = TestDatabase::create().await;
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), fast_sim())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let settings = [
        ("FOREMAN_OLLAMA_URL", sim.url()),
        ("FOREMAN_INSTANCE_ID", "bin-a".to_owned()),
        ("FOREMAN_DATA_DIR", dir.path().display().to_string()),
    ];
    let (mut child, url) = start_foreman_binary(&db.url, &settings, false).await;
    let client = client();
    hold(&sim, true);
    let response = client
        .post(format!("{url}/jobs"))
        .json(&json!({"kind": "chat",
            "request": {"model": CHAT, "messages": [{"role": "user", "content": "survive"}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let id: foreman_store::JobId = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let store = Store::open(&db.url).await.unwrap();
    eventually("the job to run", async || {
        let job = store.get(id).await.unwrap().unwrap();
        job.state == JobState::Running
            && job
                .lease_owner
                .as_deref()
                .is_some_and(|owner| owner.starts_with("bin-a/"))
    })
    .await;
    child.kill().await.unwrap();
    hold(&sim, false);
    let stranded = store.get(id).await.unwrap().unwrap();
    assert_eq!(stranded.state, JobState::Running, "nobody took it back yet");

    let (mut child, _url) = start_foreman_binary(&db.url, &settings, false).await;
    let done = recorded(&store, id).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!((done.attempts, done.interruptions), (2, 1));

    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_foreman"))
        .args(["db", "backup"])
        .arg(dir.path().join("backup.db"))
        .env("FOREMAN_DATABASE", &db.url)
        .output()
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(1), "{output:?}");
    let message = String::from_utf8_lossy(&output.stderr);
    assert!(message.contains("pg_dump --format=custom"), "{message}");
    assert!(!dir.path().join("backup.db").exists());

    child.kill().await.unwrap();
    store.close().await;
    sim.shutdown().await;
    db.drop_database().await;
}
