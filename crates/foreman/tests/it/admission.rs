//! `FOREMAN_MAX_QUEUE` is exact under concurrency: a burst of submissions fills the
//! queue to the limit and no further, on the jobs API and on the synchronous routes.

use foreman_store::JobState;
use serde_json::json;

use crate::common::*;

const LIMIT: u64 = 50;

/// The number of queued jobs, and of all jobs, in foreman's store.
async fn queued_and_total(foreman: &TestForeman) -> (usize, usize) {
    let jobs = foreman.jobs().await;
    let queued = jobs
        .iter()
        .filter(|job| job.state == JobState::Queued)
        .count();
    (queued, jobs.len())
}

#[tokio::test]
async fn a_burst_of_async_jobs_fills_the_queue_to_its_limit() {
    let foreman = TestForeman::start_with(fast_sim(), |config| config.max_queue = LIMIT).await;
    // The target holds what it is sent, so every accepted job stays in foreman.
    hold(&foreman.sim, true);
    let client = client();
    let submissions: Vec<_> = (0..300)
        .map(|i| {
            let (client, url) = (client.clone(), foreman.url.clone());
            tokio::spawn(async move {
                let body = json!({"kind": "chat", "request": chat_body(CHAT, &format!("burst {i}"), false)});
                post(&client, format!("{url}/jobs"), &body).await
            })
        })
        .collect();
    let mut accepted = 0;
    for submission in submissions {
        let (status, headers, body) = submission.await.unwrap();
        match status {
            202 => accepted += 1,
            503 => {
                assert!(headers.contains_key("retry-after"));
                assert!(body.contains("server busy"), "{body}");
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let (queued, total) = queued_and_total(&foreman).await;
    assert_eq!(total, accepted);
    assert_eq!(queued as u64, LIMIT, "the queue is exactly full");
    // At most the one job the target holds left the queue during the burst.
    assert!(accepted as u64 - LIMIT <= 1, "{accepted} accepted");
    hold(&foreman.sim, false);
    foreman.stop().await;
}

#[tokio::test]
async fn a_burst_of_sync_requests_never_queues_past_the_limit() {
    let foreman = TestForeman::start_with(fast_sim(), |config| config.max_queue = LIMIT).await;
    hold(&foreman.sim, true);
    let client = client();
    let chats: Vec<_> = (0..300)
        .map(|i| spawn_chat(&client, &foreman.url, CHAT, &format!("sync burst {i}")))
        .collect();
    eventually("the burst answered or queued", async || {
        let (queued, _) = queued_and_total(&foreman).await;
        queued as u64 == LIMIT && chats.iter().filter(|chat| chat.is_finished()).count() >= 300 - 51
    })
    .await;
    let (queued, total) = queued_and_total(&foreman).await;
    assert_eq!(queued as u64, LIMIT);
    assert!(total as u64 <= LIMIT + 1, "{total} jobs accepted");
    hold(&foreman.sim, false);
    let mut statuses = std::collections::BTreeMap::new();
    for chat in chats {
        *statuses.entry(chat.await.unwrap()).or_insert(0) += 1;
    }
    assert_eq!(
        statuses.get(&200).copied().unwrap_or(0),
        total,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.get(&503).copied().unwrap_or(0),
        300 - total,
        "{statuses:?}"
    );
    foreman.stop().await;
}
