//! Callers that wait: a queued stream learns its job at once, and a cancelled job
//! says who or what cancelled it and stops counting its wait at its end. (That a long
//! poll wakes only for its own job is counted in `api/jobs.rs`'s tests, where the
//! hub's counters are in reach.)

use std::time::Duration;

use foreman_store::{JobId, JobState};
use serde_json::Value;

use crate::common::*;

/// Holds the target's one slot with a job of its own, and waits until it runs.
async fn hold_the_slot(foreman: &TestForeman, client: &reqwest::Client) {
    hold(&foreman.sim, true);
    let body = chat_body(CHAT, "hold the slot", false);
    let url = format!("{}/api/chat", foreman.url);
    let client = client.clone();
    tokio::spawn(async move { post(&client, url, &body).await });
    eventually("the blocker to reach the target", async || {
        foreman.sim.stats().held == 1
    })
    .await;
}

/// Sends a streamed chat; its status and headers must come while its job is queued.
async fn queued_stream(foreman: &TestForeman, client: &reqwest::Client) -> reqwest::Response {
    let request = client
        .post(format!("{}/api/chat", foreman.url))
        .json(&chat_body(CHAT, "wait your turn", true))
        .send();
    tokio::time::timeout(Duration::from_secs(10), request)
        .await
        .expect("the headers come before the job starts")
        .unwrap()
}

fn job_id(response: &reqwest::Response) -> JobId {
    response.headers()["x-foreman-job-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn lines(response: reqwest::Response) -> Vec<Value> {
    response
        .text()
        .await
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect()
}

#[tokio::test]
async fn a_queued_stream_gets_its_status_and_job_id_before_its_job_starts() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    hold_the_slot(&foreman, &client).await;
    let response = queued_stream(&foreman, &client).await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/x-ndjson");
    let id = job_id(&response);
    let (_, job) = get_json(&client, format!("{}/jobs/{id}", foreman.url)).await;
    assert_eq!(
        job["state"], "queued",
        "the answer began before the job ran"
    );
    hold(&foreman.sim, false);
    let lines = lines(response).await;
    assert!(lines.len() > 1);
    assert_eq!(lines.last().unwrap()["done"], true);
    assert!(lines.iter().all(|line| line.get("error").is_none()));
    foreman.stop().await;
}

#[tokio::test]
async fn a_non_streaming_answer_still_waits_for_its_job() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    hold_the_slot(&foreman, &client).await;
    let request = client
        .post(format!("{}/api/chat", foreman.url))
        .json(&chat_body(CHAT, "no stream", false))
        .send();
    let waited = tokio::time::timeout(Duration::from_millis(500), request).await;
    assert!(waited.is_err(), "no status before the job's answer");
    hold(&foreman.sim, false);
    foreman.stop().await;
}

#[tokio::test]
async fn a_queued_stream_cancelled_before_output_ends_with_an_error_line_and_a_reason() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    hold_the_slot(&foreman, &client).await;
    let response = queued_stream(&foreman, &client).await;
    let id = job_id(&response);
    let cancelled = client
        .post(format!("{}/jobs/{id}/cancel", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelled.status(), 200);
    assert_eq!(response.status(), 200);
    let lines = lines(response).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["error"], "request canceled");
    let (_, job) = get_json(&client, format!("{}/jobs/{id}", foreman.url)).await;
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["error"]["message"], "cancelled by a cancel call");
    assert_eq!(job["error"]["status"], 499);
    hold(&foreman.sim, false);
    foreman.stop().await;
}

#[tokio::test]
async fn a_caller_that_leaves_its_queued_stream_is_named_as_the_reason() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    hold_the_slot(&foreman, &client).await;
    let response = queued_stream(&foreman, &client).await;
    let id = job_id(&response);
    drop(response);
    let mut job = Value::Null;
    eventually("the job to be cancelled", async || {
        job = get_json(&client, format!("{}/jobs/{id}", foreman.url))
            .await
            .1;
        job["state"] == "cancelled"
    })
    .await;
    assert_eq!(job["error"]["message"], "cancelled: the caller went away");
    hold(&foreman.sim, false);
    foreman.stop().await;
}

#[tokio::test]
async fn a_running_job_cancelled_keeps_its_reason_in_the_store() {
    let foreman = TestForeman::start(fast_sim()).await;
    let client = client();
    hold(&foreman.sim, true);
    let submitted = client
        .post(format!("{}/jobs", foreman.url))
        .json(&serde_json::json!({"kind": "chat", "request": chat_body(CHAT, "slow", false)}))
        .send()
        .await
        .unwrap();
    assert_eq!(submitted.status(), 202);
    let id: JobId = submitted.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    eventually("the job to reach the target", async || {
        foreman.sim.stats().held == 1
    })
    .await;
    let cancelling = client
        .delete(format!("{}/jobs/{id}", foreman.url))
        .send()
        .await
        .unwrap();
    assert_eq!(cancelling.status(), 202);
    let (_, job) = get_json(&client, format!("{}/jobs/{id}?wait=20s", foreman.url)).await;
    assert_eq!(job["state"], "cancelled");
    assert_eq!(job["error"]["message"], "cancelled by a cancel call");
    let stored = foreman.store().await.get(id).await.unwrap().unwrap();
    assert_eq!(stored.state, JobState::Cancelled);
    let failure = stored.failure.expect("the reason is stored with the job");
    assert_eq!(
        (failure.status, failure.message.as_str()),
        (499, "cancelled by a cancel call")
    );
    hold(&foreman.sim, false);
    foreman.stop().await;
}
