//! Graceful shutdown: a running job gets its grace period and is requeued (without
//! using an attempt) if it does not finish; queued jobs stay queued.

use std::time::Duration;

use foreman_store::{JobState, ListParams};
use ollama_sim::ModelSpec;

use crate::common::*;

#[tokio::test]
async fn shutdown_requeues_a_job_that_outlives_the_grace_period() {
    let mut sim = fast_sim();
    sim.models[0] = ModelSpec::parse("llama3.2:3b,load=10ms,tps=10").unwrap();
    let foreman = TestForeman::start_with(sim, |config| {
        config.shutdown_grace = Duration::from_millis(200)
    })
    .await;
    let client = client();
    let slow = spawn_chat(&client, &foreman.url, CHAT, "slow");
    eventually("the slow job to run", async || {
        foreman.sim.stats().in_flight == 1
    })
    .await;
    let queued = spawn_chat(&client, &foreman.url, CHAT2, "waiting");
    let store = foreman.store().await;
    eventually("the second job to be queued", async || {
        store.queue_depth().await.unwrap() == 1
    })
    .await;
    foreman.stop().await;
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
    let jobs = store
        .list(ListParams {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(jobs.len(), 2);
    assert!(
        jobs.iter().all(|j| j.state == JobState::Queued),
        "both jobs wait for the next start"
    );
    let requeued = jobs.iter().find(|j| j.model == CHAT).unwrap();
    assert_eq!(
        requeued.attempts, 0,
        "the interrupted attempt was given back"
    );
}

#[tokio::test]
async fn shutdown_lets_a_short_job_finish() {
    let mut sim = fast_sim();
    sim.models[0] = ModelSpec::parse("llama3.2:3b,load=10ms,tps=40").unwrap();
    let foreman = TestForeman::start_with(sim, |config| {
        config.shutdown_grace = Duration::from_secs(10)
    })
    .await;
    let client = client();
    let job = spawn_chat(&client, &foreman.url, CHAT, "quick");
    eventually("the job to run", async || {
        foreman.sim.stats().in_flight == 1
    })
    .await;
    let store = foreman.store().await;
    let _data = foreman.stop().await;
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
