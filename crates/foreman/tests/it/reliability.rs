//! Retries, terminal failures and cancellation when callers go away.

use foreman_store::{JobId, JobState, ListParams};
use ollama_sim::{FaultsUpdate, ModelSpec};
use serde_json::{Value, json};

use crate::common::*;

async fn only_job(foreman: &TestForeman) -> Option<foreman_store::Job> {
    foreman.jobs().await.into_iter().next()
}

#[tokio::test]
async fn a_target_that_refuses_connections_holds_its_jobs_until_it_returns() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    foreman.sim.refuse_connections(true);
    eventually("the target to be paused", async || {
        get_json(&client, format!("{}/healthz", foreman.url))
            .await
            .1["targets"][0]["paused"]
            == true
    })
    .await;
    let request = tokio::spawn({
        let (client, url) = (client.clone(), foreman.url.clone());
        async move {
            post(
                &client,
                format!("{url}/api/chat"),
                &chat_body(CHAT, "are you there", false),
            )
            .await
        }
    });
    eventually("the job to be queued", async || {
        only_job(&foreman).await.is_some()
    })
    .await;
    let waiting = only_job(&foreman).await.unwrap();
    assert_eq!(
        (waiting.state, waiting.attempts),
        (JobState::Queued, 0),
        "no attempt is spent on a target known to be down"
    );
    foreman.sim.refuse_connections(false);
    let (status, _, body) = request.await.unwrap();
    assert_eq!(status, 200, "{body}");
    let id = only_job(&foreman).await.unwrap().id;
    let job = recorded(&foreman.store().await, id).await;
    assert_eq!((job.state, job.attempts), (JobState::Succeeded, 1));
    foreman.stop().await;
}

/// A target that restarts while jobs wait for it (connections refused for a while):
/// the first job to meet the refusal pauses the target and goes back to the queue
/// without spending an attempt, nothing else is sent until a poll answers, and every
/// job then succeeds on its first attempt.
#[tokio::test]
async fn a_restarting_target_costs_no_attempts() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        // Only a runner can find out the target is down: polls are rare.
        config.poll_interval = std::time::Duration::from_secs(3600);
        config.max_attempts = 2;
    })
    .await;
    let client = client();
    foreman.sim.refuse_connections(true);
    let chats: Vec<_> = (0..20)
        .map(|i| spawn_chat(&client, &foreman.url, CHAT, &format!("restart {i}")))
        .collect();
    eventually("the target paused by a refused job", async || {
        get_json(&client, format!("{}/healthz", foreman.url))
            .await
            .1["targets"][0]["paused"]
            == true
    })
    .await;
    eventually("all twenty jobs queued", async || {
        let jobs = foreman.jobs().await;
        jobs.len() == 20 && jobs.iter().all(|job| job.state == JobState::Queued)
    })
    .await;
    foreman.sim.refuse_connections(false);
    for chat in chats {
        assert_eq!(chat.await.unwrap(), 200);
    }
    let store = foreman.store().await;
    for job in foreman.jobs().await {
        let job = recorded(&store, job.id).await;
        assert_eq!(
            (job.state, job.attempts),
            (JobState::Succeeded, 1),
            "{}",
            job.id
        );
    }
    store.close().await;
    foreman.stop().await;
}

#[tokio::test]
async fn busy_answers_are_retried_and_exhaustion_fails_with_the_last_error() {
    let foreman = TestForeman::start_with(fast_sim(), |config| config.max_attempts = 3).await;
    let client = client();
    foreman
        .sim
        .set_faults(&FaultsUpdate {
            busy_rate: Some(1.0),
            ..Default::default()
        })
        .unwrap();
    let (status, _, body) = post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body(CHAT, "busy?", false),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(
        serde_json::from_str::<Value>(&body).unwrap(),
        json!({"error": "server busy, please try again.  maximum pending requests exceeded"})
    );
    let job = only_job(&foreman).await.unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Failed, 3));
    assert_eq!(
        foreman.sim.stats().faults_injected_total,
        3,
        "three attempts reached the target"
    );
    foreman.stop().await;
}

#[tokio::test]
async fn rate_limits_and_gateway_errors_are_retried_until_the_target_recovers() {
    let foreman = TestForeman::start_with(fast_sim(), |config| config.max_attempts = 50).await;
    let client = client();
    for status in [429u16, 502, 504] {
        foreman
            .sim
            .set_faults(&FaultsUpdate {
                error_rate: Some(1.0),
                error_status: Some(status),
                ..Default::default()
            })
            .unwrap();
        let request = tokio::spawn({
            let (client, url) = (client.clone(), foreman.url.clone());
            async move {
                post(
                    &client,
                    format!("{url}/api/chat"),
                    &chat_body(CHAT, &format!("after a {status}"), false),
                )
                .await
            }
        });
        eventually("a failed attempt waiting for its retry", async || {
            only_job(&foreman).await.is_some_and(|job| {
                job.attempts >= 2
                    && job.state == JobState::Queued
                    && job.failure.is_some_and(|f| f.status == status)
            })
        })
        .await;
        foreman
            .sim
            .set_faults(&FaultsUpdate {
                error_rate: Some(0.0),
                ..Default::default()
            })
            .unwrap();
        let (got, _, body) = request.await.unwrap();
        assert_eq!(got, 200, "{status}: {body}");
        let job = recorded(&foreman.store().await, only_job(&foreman).await.unwrap().id).await;
        assert_eq!(job.state, JobState::Succeeded, "{status}");
        assert!(job.attempts >= 3, "{status}: {}", job.attempts);
    }
    foreman.stop().await;
}

#[tokio::test]
async fn a_terminal_upstream_error_passes_through_unchanged_at_once() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    foreman
        .sim
        .set_faults(&FaultsUpdate {
            fail_rate: Some(1.0),
            ..Default::default()
        })
        .unwrap();
    let request = chat_body(CHAT, "crash", false);
    let (direct_status, direct_headers, direct_body) =
        post(&client, format!("{}/api/chat", foreman.sim.url()), &request).await;
    let (status, headers, body) =
        post(&client, format!("{}/api/chat", foreman.url), &request).await;
    assert_eq!(status, direct_status);
    assert_eq!(status, 500);
    assert_eq!(body, direct_body, "the target's error body, byte for byte");
    assert_eq!(headers["content-type"], direct_headers["content-type"]);
    assert!(headers.contains_key("x-foreman-job-id"));
    let job = only_job(&foreman).await.unwrap();
    assert_eq!(
        (job.state, job.attempts),
        (JobState::Failed, 1),
        "not retried"
    );
    assert_eq!(job.failure.unwrap().status, 500);

    // A stream answers 200 once its job is committed, so the same failure, before any
    // output, comes as the stream's error line: the target's body, one line.
    let (status, headers, body) = post(
        &client,
        format!("{}/api/chat", foreman.url),
        &chat_body(CHAT, "crash", true),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(headers["content-type"], "application/x-ndjson");
    assert_eq!(body, format!("{}\n", direct_body.trim_end()));
    foreman.stop().await;
}

#[tokio::test]
async fn a_caller_that_leaves_cancels_its_queued_job() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    hold(&foreman.sim, true);
    let blocker = spawn_chat(&client, &foreman.url, CHAT, "hold the worker");
    eventually("the blocker to reach the target", async || {
        foreman.sim.stats().held == 1
    })
    .await;
    let leaving = tokio::spawn({
        let (client, url) = (client.clone(), foreman.url.clone());
        async move {
            post(
                &client,
                format!("{url}/api/chat"),
                &chat_body(CHAT2, "never mind", false),
            )
            .await
        }
    });
    let store = foreman.store().await;
    eventually("the second job to be queued", async || {
        store.queue_depth().await.unwrap() == 1
    })
    .await;
    leaving.abort();
    eventually("the queued job to be cancelled", async || {
        let cancelled = store
            .list(ListParams {
                state: Some(JobState::Cancelled),
                limit: 10,
                ..Default::default()
            })
            .await
            .unwrap();
        cancelled.len() == 1
    })
    .await;
    hold(&foreman.sim, false);
    assert_eq!(blocker.await.unwrap(), 200);
    let stats = foreman.sim.stats();
    assert!(
        !stats.models.contains_key(CHAT2),
        "the cancelled job never reached the target"
    );
    foreman.stop().await;
}

#[tokio::test]
async fn a_caller_that_leaves_mid_stream_aborts_the_upstream_request() {
    let mut sim = fast_sim();
    // An answer of minutes: only the abort can end it within the test.
    sim.models[0] = ModelSpec::parse("llama3.2:3b,load=10ms,tps=20").unwrap();
    sim.reply_tokens = 10_000;
    let foreman = TestForeman::start(sim).await;
    let client = client();
    let mut response = client
        .post(format!("{}/api/chat", foreman.url))
        .json(&chat_body(CHAT, "tell me everything", true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let id: JobId = response.headers()["x-foreman-job-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    assert!(!first.is_empty());
    drop(response);
    eventually("the target to stop generating", async || {
        foreman.sim.stats().in_flight == 0
    })
    .await;
    let store = foreman.store().await;
    eventually("the job to end cancelled", async || {
        store.get(id).await.unwrap().unwrap().state == JobState::Cancelled
    })
    .await;
    foreman.stop().await;
}

#[tokio::test]
async fn a_stalled_target_times_out_and_is_retried_then_fails_with_504() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.upstream_timeout = std::time::Duration::from_millis(300);
        config.max_attempts = 2;
    })
    .await;
    foreman
        .sim
        .set_faults(&FaultsUpdate {
            stall_rate: Some(1.0),
            ..Default::default()
        })
        .unwrap();
    let (status, _, body) = post(
        &client(),
        format!("{}/api/chat", foreman.url),
        &chat_body(CHAT, "hello?", false),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("did not answer in time")
    );
    let job = only_job(&foreman).await.unwrap();
    assert_eq!((job.state, job.attempts), (JobState::Failed, 2));
    foreman.stop().await;
}

#[tokio::test]
async fn a_connection_cut_mid_stream_ends_the_stream_with_an_error_line() {
    let foreman = TestForeman::start(fast_sim()).await;
    foreman
        .sim
        .set_faults(&FaultsUpdate {
            drop_rate: Some(1.0),
            ..Default::default()
        })
        .unwrap();
    let (status, _, body) = post(
        &client(),
        format!("{}/api/chat", foreman.url),
        &chat_body(CHAT, "cut me", true),
    )
    .await;
    assert_eq!(status, 200, "the stream had started");
    let lines: Vec<Value> = body
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert!(lines.len() > 2, "some chunks arrived first");
    assert!(lines[..lines.len() - 1].iter().all(|l| l["done"] == false));
    let last = lines.last().unwrap();
    assert!(
        last["error"]
            .as_str()
            .unwrap()
            .contains("connection to the target broke"),
        "{last}"
    );
    let job = only_job(&foreman).await.unwrap();
    assert_eq!(
        (job.state, job.attempts),
        (JobState::Failed, 1),
        "output went out, so no replay"
    );
    foreman.stop().await;
}

#[tokio::test]
async fn a_connection_cut_before_any_output_is_retried() {
    let foreman = TestForeman::start_with(fast_sim(), |config| config.max_attempts = 2).await;
    foreman
        .sim
        .set_faults(&FaultsUpdate {
            drop_rate: Some(1.0),
            ..Default::default()
        })
        .unwrap();
    let (status, _, body) = post(
        &client(),
        format!("{}/api/chat", foreman.url),
        &chat_body(CHAT, "cut me", false),
    )
    .await;
    assert_eq!(status, 502, "{body}");
    let job = only_job(&foreman).await.unwrap();
    assert_eq!(
        (job.state, job.attempts),
        (JobState::Failed, 2),
        "a one-object answer is replayable"
    );
    assert_eq!(foreman.sim.stats().faults_injected_total, 2);
    foreman.stop().await;
}
