//! A caller who holds its whole answer finds its job finished in the store: the end
//! of every answer (the `"done": true` line, `data: [DONE]`, the last event, a whole
//! `stream:false` body, an in-stream error line) is relayed only after the job's
//! outcome is committed. So a crash just after an answer cannot leave a job that
//! looks unfinished (which a restart would cancel, or run again for nobody).
//!
//! Each request reads its answer to the end and then, without waiting, reads the
//! job's row from the database file through a second store handle.

use foreman_store::{JobId, JobState};
use ollama_sim::FaultsUpdate;
use serde_json::{Value, json};

use crate::common::*;

/// Requests per route: before the fix, the row was still `running` at the first read
/// nearly every time (the answer ended before the commit's fsync).
const ROUNDS: usize = 8;

/// Sends `body` to `path`, reads the whole answer, and returns its job id.
async fn answered(url: &str, path: &str, body: &Value) -> (u16, JobId, String) {
    let response = client()
        .post(format!("{url}{path}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let id = response
        .headers()
        .get("x-foreman-job-id")
        .expect("a queued answer names its job")
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let text = response.text().await.unwrap();
    (status, id, text)
}

#[tokio::test]
async fn a_whole_answer_means_a_committed_outcome() {
    let foreman = TestForeman::start(fast_sim()).await;
    let store = foreman.store().await;
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/api/chat",
            chat_body(CHAT, "native stream", true),
            "\"done\":true",
        ),
        (
            "/api/chat",
            chat_body(CHAT, "native whole", false),
            "\"done\":true",
        ),
        (
            "/api/generate",
            json!({"model": CHAT, "prompt": "generate stream"}),
            "\"done\":true",
        ),
        (
            "/v1/chat/completions",
            json!({"model": CHAT, "messages": [{"role": "user", "content": "sse"}], "stream": true}),
            "[DONE]",
        ),
        (
            "/v1/chat/completions",
            json!({"model": CHAT, "messages": [{"role": "user", "content": "json"}]}),
            "chat.completion",
        ),
        (
            "/v1/messages",
            json!({"model": CHAT, "max_tokens": 16, "stream": true,
                   "messages": [{"role": "user", "content": "anthropic"}]}),
            "message_stop",
        ),
    ];
    for (path, body, end) in &cases {
        for round in 0..ROUNDS {
            let (status, id, text) = answered(&foreman.url, path, body).await;
            assert_eq!(status, 200, "{path}: {text}");
            assert!(text.contains(end), "{path}: the answer is whole: {text}");
            let job = store.get(id).await.unwrap().expect("the job's row");
            assert_eq!(
                job.state,
                JobState::Succeeded,
                "{path} (round {round}): the caller had its whole answer before the \
                 outcome was committed: {job:#?}"
            );
        }
    }
    store.close().await;
    foreman.stop().await;
}

#[tokio::test]
async fn a_streams_error_line_comes_after_the_failure_is_committed() {
    let foreman = TestForeman::start(fast_sim()).await;
    let store = foreman.store().await;
    // Every request fails at the target (a 500 before any output), which a native
    // stream, its headers sent when the job was queued, ends with an `{"error"}` line.
    foreman
        .sim
        .set_faults(&FaultsUpdate {
            fail_rate: Some(1.0),
            ..Default::default()
        })
        .unwrap();
    for round in 0..ROUNDS {
        let (status, id, text) =
            answered(&foreman.url, "/api/chat", &chat_body(CHAT, "fails", true)).await;
        assert_eq!(status, 200, "a native stream has its headers early");
        assert!(text.contains("\"error\""), "the error line arrives: {text}");
        let job = store.get(id).await.unwrap().expect("the job's row");
        assert_eq!(
            job.state,
            JobState::Failed,
            "round {round}: the error line came before the failure was committed: {job:#?}"
        );
    }
    store.close().await;
    foreman.stop().await;
}
