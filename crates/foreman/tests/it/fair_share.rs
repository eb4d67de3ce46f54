//! Fair share between API keys, end to end: two real keys, one flooding the jobs API
//! and one asking `/api/chat`, one model on a target of one slot. With fair share the
//! chat key's request runs right after the job that was running when it arrived; with
//! `FOREMAN_FAIR_SHARE=false` it runs after the whole backlog. Checked by the order of
//! `started_at` in the store (the jobs run one at a time, each for tens of
//! milliseconds), and by the caller recorded on every job.

use foreman_store::{Job, JobCaller, JobState};
use serde_json::{Value, json};

use crate::common::*;

const ADMIN: &str = "admin-secret";
const MODEL: &str = "llama3.2:3b";
const BACKLOG: usize = 20;

/// Creates a key through the keys API and returns its secret.
async fn create_key(foreman: &TestForeman, name: &str, scopes: &[&str], weight: u32) -> String {
    let response = client()
        .post(format!("{}/foreman/keys", foreman.url))
        .bearer_auth(ADMIN)
        .json(&json!({"name": name, "scopes": scopes, "weight": weight}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let body: Value = response.json().await.unwrap();
    body["key"].as_str().expect("the secret").to_owned()
}

/// Submits an async chat job with `key`; returns its id.
async fn submit(foreman: &TestForeman, key: &str, text: &str) -> String {
    let response = client()
        .post(format!("{}/jobs", foreman.url))
        .bearer_auth(key)
        .json(&json!({"kind": "chat", "request": chat_body(MODEL, text, false)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["id"].as_str().expect("an id").to_owned()
}

/// Runs the flood and the chat request; returns every job, oldest start first, and the
/// chat request's job.
async fn flood_then_chat(fair_share: bool) -> (Vec<Job>, Job) {
    // About 24 tokens at 500 per second: each job runs for tens of milliseconds, one at
    // a time, so no two share a `started_at`.
    let foreman = TestForeman::start_with(
        sim_with(&["llama3.2:3b,load=10ms,tps=500"], 1, 1),
        |config| {
            config.token = Some(ADMIN.to_owned());
            config.fair_share = fair_share;
        },
    )
    .await;
    let flood = create_key(&foreman, "flood", &["jobs"], 1).await;
    let chat = create_key(&foreman, "chat", &["chat"], 2).await;

    // The flood's first job runs (held); the rest of its backlog queues behind it.
    hold(&foreman.sim, true);
    submit(&foreman, &flood, "flood 0").await;
    eventually("the first job to run", async || {
        foreman.sim.stats().held == 1
    })
    .await;
    for i in 1..=BACKLOG {
        submit(&foreman, &flood, &format!("flood {i}")).await;
    }
    // The chat key's request, at the flood's priority.
    let (client, url, key) = (client(), foreman.url.clone(), chat.clone());
    let answer = tokio::spawn(async move {
        client
            .post(format!("{url}/api/chat"))
            .bearer_auth(key)
            .header("X-Foreman-Priority", "0")
            .json(&chat_body(MODEL, "interactive", false))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    });
    let store = foreman.store().await;
    eventually("the whole backlog to be queued", async || {
        store.queue_depth().await.unwrap() == BACKLOG as u64 + 1
    })
    .await;

    hold(&foreman.sim, false);
    assert_eq!(answer.await.unwrap(), 200);
    eventually("every job to succeed", async || {
        let jobs = foreman.jobs().await;
        jobs.len() == BACKLOG + 2 && jobs.iter().all(|job| job.state == JobState::Succeeded)
    })
    .await;
    store.close().await;
    let mut jobs = foreman.jobs().await;
    foreman.stop().await;
    jobs.sort_by_key(|job| job.started_at);
    let chat_job = jobs
        .iter()
        .find(|job| job.sync)
        .expect("the chat request's job")
        .clone();
    (jobs, chat_job)
}

/// Every job carries the key it was enqueued with, and that key's weight.
fn check_callers(jobs: &[Job], chat_job: &Job) {
    let flood = Some(JobCaller {
        name: "flood".to_owned(),
        weight: 1,
    });
    let chat = Some(JobCaller {
        name: "chat".to_owned(),
        weight: 2,
    });
    assert_eq!(chat_job.caller, chat);
    for job in jobs.iter().filter(|job| !job.sync) {
        assert_eq!(job.caller, flood, "{}", job.id);
    }
}

/// How many of the flood's jobs started before the chat request's.
fn flood_jobs_before(jobs: &[Job], chat_job: &Job) -> usize {
    let distinct: std::collections::BTreeSet<Option<i64>> =
        jobs.iter().map(|job| job.started_at).collect();
    assert_eq!(distinct.len(), jobs.len(), "two jobs share a start");
    jobs.iter().take_while(|job| job.id != chat_job.id).count()
}

#[tokio::test]
async fn a_keys_request_runs_before_another_keys_backlog() {
    let (jobs, chat_job) = flood_then_chat(true).await;
    check_callers(&jobs, &chat_job);
    // Only the job running when it arrived went first: one slot, one job.
    assert_eq!(flood_jobs_before(&jobs, &chat_job), 1);
}

#[tokio::test]
async fn without_fair_share_the_request_waits_for_the_backlog() {
    let (jobs, chat_job) = flood_then_chat(false).await;
    check_callers(&jobs, &chat_job);
    assert_eq!(flood_jobs_before(&jobs, &chat_job), BACKLOG + 1);
}
