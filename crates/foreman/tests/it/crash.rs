//! A real `foreman` process killed with SIGKILL while jobs are queued and running,
//! then restarted on the same database: every accepted job still finishes.

use std::time::Duration;

use foreman_store::{ClaimParams, JobKind, JobState, ListParams, NewJob, Store};
use ollama_sim::{ModelSpec, SimConfig};
use tokio::process::Child;

use crate::common::*;

async fn start_foreman(sim_url: &str, db: &str) -> (Child, String) {
    start_foreman_binary(db, &[("FOREMAN_OLLAMA_URL", sim_url.to_string())], false).await
}

/// Submits an async chat job through the jobs API.
async fn submit(client: &reqwest::Client, url: &str, model: &str, text: &str) {
    let (status, _, body) = post(
        client,
        format!("{url}/jobs"),
        &serde_json::json!({"kind": "chat", "request": chat_body(model, text, false)}),
    )
    .await;
    assert_eq!(status, 202, "{body}");
}

/// foreman killed while one async job runs and others, async and synchronous, wait:
/// after the restart every async job finishes, the one cut off without spending an
/// attempt (a crash is not the job's failure); the synchronous jobs, whose callers'
/// connections died with the process, are cancelled with their reason instead of
/// running for nobody.
#[tokio::test]
async fn sigkill_with_jobs_queued_and_running_loses_nothing() {
    let sim = ollama_sim::spawn(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            models: vec![
                ModelSpec::parse("llama3.2:3b,load=50ms,tps=100").unwrap(),
                ModelSpec::parse("qwen2.5:0.5b,load=50ms,tps=100").unwrap(),
            ],
            max_loaded: 1,
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("foreman.db");
    let db = db.to_str().unwrap();
    let (mut first, url) = start_foreman(&sim.url(), db).await;
    let client = client();
    // The target holds the first job it gets, so the kill finds it running and the
    // others queued.
    hold(&sim, true);
    submit(&client, &url, CHAT, "cut off").await;
    eventually("the first job at the target", async || {
        sim.stats().held == 1
    })
    .await;
    let n_async = 6;
    for i in 0..n_async {
        let model = if i % 2 == 0 { CHAT } else { CHAT2 };
        submit(&client, &url, model, &format!("async {i}")).await;
    }
    let n_sync = 5;
    let callers: Vec<_> = (0..n_sync)
        .map(|i| {
            let (client, url) = (client.clone(), url.clone());
            tokio::spawn(async move {
                client
                    .post(format!("{url}/api/chat"))
                    .json(&chat_body(CHAT2, &format!("sync {i}"), false))
                    .send()
                    .await
            })
        })
        .collect();
    let store = Store::open(db).await.unwrap();
    let all = || ListParams {
        limit: 100,
        ..Default::default()
    };
    let total = 1 + n_async + n_sync;
    eventually("every job accepted", async || {
        store.list(all()).await.unwrap().len() == total
    })
    .await;
    first.start_kill().unwrap();
    first.wait().await.unwrap();
    for caller in callers {
        // The callers lose their connections.
        let _ = caller.await.unwrap();
    }
    let before = store.list(all()).await.unwrap();
    let cut_off: Vec<_> = before
        .iter()
        .filter(|j| j.state == JobState::Running)
        .collect();
    assert_eq!(cut_off.len(), 1, "a job was cut off while running");
    assert!(!cut_off[0].sync);
    let cut_off = cut_off[0].id;
    let requests_before = sim.stats().requests_total;

    let (mut second, _) = start_foreman(&sim.url(), db).await;
    hold(&sim, false);
    eventually("every job to end after the restart", async || {
        store
            .list(all())
            .await
            .unwrap()
            .iter()
            .all(|j| j.state.is_terminal())
    })
    .await;
    let after = store.list(all()).await.unwrap();
    assert_eq!(after.len(), total, "no job lost, none duplicated");
    for job in &after {
        if job.sync {
            assert_eq!(job.state, JobState::Cancelled, "{}", job.id);
            assert_eq!(job.failure.as_ref().map(|f| f.status), Some(499));
            assert_eq!(job.attempts, 0, "it never reached the target");
        } else {
            assert_eq!(job.state, JobState::Succeeded, "{}", job.id);
            assert!(job.result.is_some());
            let (attempts, interruptions) = if job.id == cut_off { (2, 1) } else { (1, 0) };
            assert_eq!(
                (job.attempts, job.interruptions),
                (attempts, interruptions),
                "the crash spent no attempt of the job it cut off"
            );
        }
    }
    assert_eq!(
        sim.stats().requests_total - requests_before,
        1 + n_async as u64,
        "only the async jobs ran after the restart"
    );
    second.start_kill().unwrap();
    second.wait().await.unwrap();
    store.close().await;
}

/// A worker that stops heartbeating (another process on the same database, frozen)
/// leaves its job `running` with a lease that lapses; foreman's janitor, on its
/// configured interval, puts the job back in the queue and foreman's worker runs it.
#[tokio::test]
async fn the_janitor_requeues_a_job_whose_lease_lapsed_and_it_completes() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.janitor_interval = Duration::from_millis(100);
        config.lease = Duration::from_secs(3600);
    })
    .await;
    let store = foreman.store().await;
    let now = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64
    };
    // The other worker enqueues a job and claims it with a one-second lease, then is
    // never heard from again. Foreman's own worker may see the row first: then that
    // job simply runs, and the other worker tries again with a new one.
    let mut claimed = None;
    for _ in 0..5 {
        let job = store
            .enqueue(
                NewJob {
                    id: None,
                    kind: JobKind::Chat,
                    model: CHAT.into(),
                    load_options: String::new(),
                    payload: chat_body(CHAT, "left behind", false).to_string(),
                    sync: false,
                    priority: 0,
                    max_attempts: 3,
                    idempotency_key: None,
                    webhook_url: None,
                    metadata: None,
                    caller: None,
                },
                now(),
            )
            .await
            .unwrap()
            .job;
        let claim = ClaimParams {
            id: job.id,
            owner: "frozen-worker".into(),
            target: "t".to_owned(),
            now: now(),
            lease_for_ms: 1_000,
        };
        if let Some(job) = store.claim(claim).await.unwrap() {
            claimed = Some(job);
            break;
        }
    }
    let claimed = claimed.expect("the other worker claims a job");
    assert_eq!(claimed.lease_owner.as_deref(), Some("frozen-worker"));
    let done = recorded(&store, claimed.id).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(
        (done.attempts, done.interruptions),
        (2, 1),
        "the lapsed attempt is an interruption, not a failure"
    );
    assert!(done.result.is_some());

    // Foreman's own claims use the configured lease.
    hold(&foreman.sim, true);
    let held = spawn_chat(&client(), &foreman.url, CHAT, "held");
    eventually("a job to reach the target", async || {
        foreman.sim.stats().held == 1
    })
    .await;
    let running = foreman
        .jobs()
        .await
        .into_iter()
        .find(|j| j.state == JobState::Running)
        .expect("a running job");
    assert!(
        running.lease_expires_at.unwrap() > now() + 1_800_000,
        "an hour's lease, not the default 30 s"
    );
    hold(&foreman.sim, false);
    assert_eq!(held.await.unwrap(), 200);
    store.close().await;
    foreman.stop().await;
}
