//! Graceful shutdown: a running job gets its grace period and is requeued (without
//! using an attempt) if it does not finish; queued jobs stay queued. Synchronous
//! callers are told to retry, so at the next start their jobs are cancelled rather than
//! run twice (once for nobody, once for the retry).

use std::time::Duration;

use foreman_store::{JobState, ListParams};

use crate::common::*;

#[tokio::test]
async fn shutdown_requeues_a_job_that_outlives_the_grace_period() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.shutdown_grace = Duration::from_millis(200)
    })
    .await;
    let client = client();
    // Held by the target, the job cannot finish within any grace period.
    hold(&foreman.sim, true);
    let slow = spawn_chat(&client, &foreman.url, CHAT, "slow");
    eventually("the slow job to reach the target", async || {
        foreman.sim.stats().held == 1
    })
    .await;
    let queued = spawn_chat(&client, &foreman.url, CHAT2, "waiting");
    let store = foreman.store().await;
    eventually("the second job to be queued", async || {
        store.queue_depth().await.unwrap() == 1
    })
    .await;
    let mut foreman = foreman;
    let list = async |store: &foreman_store::Store| {
        store
            .list(ListParams {
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap()
    };
    let sent_before = foreman.sim.stats().requests_total;
    foreman.restart().await;
    assert_eq!(
        slow.await.unwrap(),
        503,
        "the running job's caller is told to retry"
    );
    assert_eq!(
        queued.await.unwrap(),
        503,
        "the queued job's caller is let go"
    );
    let jobs = list(&store).await;
    assert_eq!(jobs.len(), 2);
    let requeued = jobs.iter().find(|j| j.model == CHAT).unwrap();
    assert_eq!(
        requeued.attempts, 0,
        "the interrupted attempt was given back"
    );
    // Their callers were told to retry: the next start cancels both jobs, and neither
    // reaches the target again.
    for job in &jobs {
        assert_eq!(job.state, JobState::Cancelled, "{}", job.id);
        assert_eq!(job.failure.as_ref().map(|f| f.status), Some(499));
    }
    hold(&foreman.sim, false);
    assert_eq!(foreman.sim.stats().requests_total, sent_before);
    foreman.stop().await;
}

#[tokio::test]
async fn shutdown_lets_a_short_job_finish() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.shutdown_grace = Duration::from_secs(30)
    })
    .await;
    let client = client();
    hold(&foreman.sim, true);
    let job = spawn_chat(&client, &foreman.url, CHAT, "quick");
    eventually("the job to reach the target", async || {
        foreman.sim.stats().held == 1
    })
    .await;
    let store = foreman.store().await;
    let (url, sim_url) = (foreman.url.clone(), foreman.sim.url());
    let stopping = tokio::spawn(foreman.stop());
    // Once foreman no longer takes connections, shutdown has begun: only then may the
    // job go on.
    let fresh = || {
        reqwest::Client::builder()
            .no_proxy()
            .pool_max_idle_per_host(0)
            .build()
            .unwrap()
    };
    eventually("foreman to stop accepting", async || {
        fresh().get(format!("{url}/healthz")).send().await.is_err()
    })
    .await;
    let lifted = client
        .post(format!("{sim_url}/sim/faults"))
        .json(&serde_json::json!({"hold": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(lifted.status(), 200);
    let _data = stopping.await.unwrap();
    assert_eq!(job.await.unwrap(), 200, "finished within the grace period");
    let jobs = store
        .list(ListParams {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs[0].state, JobState::Succeeded);
}
