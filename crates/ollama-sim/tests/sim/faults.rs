//! Every fault mode, set at start, over `POST /sim/faults`, and through the handle.

use std::time::Duration;

use futures::StreamExt;
use ollama_sim::{Faults, FaultsUpdate};
use serde_json::{Value, json};

use crate::common::*;

fn chat_body(stream: bool) -> Value {
    json!({"model": CHAT, "messages": [{"role":"user","content":"hi"}], "stream": stream})
}

#[tokio::test]
async fn fail_rate_gives_500_and_busy_rate_gives_503() {
    let mut config = fast_config();
    config.faults = Faults {
        fail_rate: 1.0,
        ..Faults::default()
    };
    let sim = start(config).await;
    let client = client();
    let (status, _, body) =
        post(&client, format!("{}/api/chat", sim.url()), chat_body(false)).await;
    assert_eq!(status, 500);
    assert!(
        serde_json::from_str::<Value>(&body).unwrap()["error"]
            .as_str()
            .unwrap()
            .contains("simulated fault")
    );
    let faults: Value = client
        .post(format!("{}/sim/faults", sim.url()))
        .json(&json!({"fail_rate": 0, "busy_rate": 1}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(faults["busy_rate"], 1.0);
    let (status, _, _) = post(
        &client,
        format!("{}/api/generate", sim.url()),
        json!({"model": CHAT, "prompt": "x"}),
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(sim.stats().faults_injected_total, 2);
    let (status, _, _) = post(
        &client,
        format!("{}/api/tags", sim.url()).replace("/api/tags", "/sim/faults"),
        json!({"clear": true}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = post(&client, format!("{}/api/chat", sim.url()), chat_body(false)).await;
    assert_eq!(status, 200);
    let (status, _, _) = post(
        &client,
        format!("{}/sim/faults", sim.url()),
        json!({"fail_rate": 3}),
    )
    .await;
    assert_eq!(status, 400, "rates are probabilities");
}

#[tokio::test]
async fn drop_rate_cuts_streams_and_bodies_midway() {
    let sim = start(fast_config()).await;
    sim.set_faults(&FaultsUpdate {
        drop_rate: Some(1.0),
        ..FaultsUpdate::default()
    })
    .unwrap();
    let client = client();
    let response = client
        .post(format!("{}/api/chat", sim.url()))
        .json(&chat_body(true))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut stream = response.bytes_stream();
    let mut received = Vec::new();
    let mut failed = false;
    while let Some(item) = stream.next().await {
        match item {
            Ok(bytes) => received.extend_from_slice(&bytes),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    assert!(failed, "the stream ends with a transport error");
    let text = String::from_utf8(received).unwrap();
    assert!(
        !text.is_empty() && !text.contains("\"done\":true"),
        "some chunks arrived, never the final one"
    );
    let response = client
        .post(format!("{}/api/chat", sim.url()))
        .json(&chat_body(false))
        .send()
        .await
        .unwrap();
    assert!(
        response.text().await.is_err(),
        "a non-streamed body is cut too"
    );
}

#[tokio::test]
async fn stall_rate_never_answers() {
    let sim = start(fast_config()).await;
    sim.set_faults(&FaultsUpdate {
        stall_rate: Some(1.0),
        ..FaultsUpdate::default()
    })
    .unwrap();
    let client = client();
    let outcome = client
        .post(format!("{}/api/chat", sim.url()))
        .json(&chat_body(false))
        .timeout(Duration::from_millis(300))
        .send()
        .await;
    assert!(outcome.unwrap_err().is_timeout());
    let tags = client
        .get(format!("{}/api/tags", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(tags.status(), 200, "listings are never faulted");
}

#[tokio::test]
async fn refusing_connections_takes_the_port_down_and_back() {
    let sim = start(fast_config()).await;
    let client = client();
    sim.refuse_connections(true);
    eventually("connections to be refused", async || {
        match client.get(sim.url()).send().await {
            Err(error) => error.is_connect(),
            Ok(_) => false,
        }
    })
    .await;
    sim.refuse_connections(false);
    eventually("connections to be accepted again", async || {
        client.get(sim.url()).send().await.is_ok()
    })
    .await;
    // Three seconds: long enough for a poll on a busy machine to see the refusal,
    // short enough for `eventually` to see it end.
    let (status, _, _) = post(
        &client,
        format!("{}/sim/faults", sim.url()),
        json!({"refuse_connections": true, "refuse_for": "3s"}),
    )
    .await;
    assert_eq!(status, 200);
    eventually("a timed refusal to start", async || {
        client.get(sim.url()).send().await.is_err()
    })
    .await;
    assert!(sim.faults().refuse_connections);
    eventually("a timed refusal to end by itself", async || {
        client.get(sim.url()).send().await.is_ok()
    })
    .await;
    let faults: Value = client
        .get(format!("{}/sim/faults", sim.url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        faults["refuse_connections"], false,
        "the fault itself is off once the refusal ends"
    );
}

#[tokio::test]
async fn error_rate_answers_with_the_chosen_status() {
    let sim = start(fast_config()).await;
    let client = client();
    for (status, reason) in [
        (429, "Too Many Requests"),
        (502, "Bad Gateway"),
        (504, "Gateway Timeout"),
    ] {
        let faults: Value = client
            .post(format!("{}/sim/faults", sim.url()))
            .json(&json!({"error_rate": 1, "error_status": status}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(faults["error_status"], status);
        let (got, content_type, body) =
            post(&client, format!("{}/api/chat", sim.url()), chat_body(true)).await;
        assert_eq!(got, status);
        assert_eq!(content_type, "application/json; charset=utf-8");
        assert_eq!(
            serde_json::from_str::<Value>(&body).unwrap(),
            json!({"error": format!("{reason} (simulated fault)")})
        );
    }
    assert_eq!(sim.stats().faults_injected_total, 3);
    let (status, _, _) = post(
        &client,
        format!("{}/sim/faults", sim.url()),
        json!({"error_status": 200}),
    )
    .await;
    assert_eq!(status, 400, "only error statuses");
    let (status, _, _) = post(
        &client,
        format!("{}/sim/faults", sim.url()),
        json!({"error_rate": 0}),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _, _) = post(&client, format!("{}/api/chat", sim.url()), chat_body(false)).await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn hold_keeps_requests_waiting_until_it_is_lifted() {
    let sim = start(fast_config()).await;
    sim.set_faults(&FaultsUpdate {
        hold: Some(true),
        ..FaultsUpdate::default()
    })
    .unwrap();
    let client = client();
    let held = tokio::spawn({
        let (client, url) = (client.clone(), sim.url());
        async move { post(&client, format!("{url}/api/chat"), chat_body(false)).await }
    });
    let given_up = tokio::spawn({
        let (client, url) = (client.clone(), sim.url());
        async move {
            post(
                &client,
                format!("{url}/api/generate"),
                json!({"model": CHAT2, "prompt": "x"}),
            )
            .await
        }
    });
    eventually("two requests held", async || sim.stats().held == 2).await;
    let stats = sim.stats();
    assert_eq!((stats.models[CHAT].held, stats.models[CHAT2].held), (1, 1));
    assert_eq!(stats.in_flight, 0, "nothing generates while held");
    assert!(stats.loaded.is_empty(), "nor loads");
    given_up.abort();
    eventually("the request whose client left to be let go", async || {
        sim.stats().held == 1
    })
    .await;
    assert!(!held.is_finished(), "still held");
    sim.set_faults(&FaultsUpdate {
        hold: Some(false),
        ..FaultsUpdate::default()
    })
    .unwrap();
    let (status, _, body) = held.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert_eq!(sim.stats().held, 0);
    assert_eq!(
        sim.stats().faults_injected_total,
        0,
        "holding is not a failure"
    );
}

#[tokio::test]
async fn the_control_listener_stays_up_while_refusing() {
    let sim = ollama_sim::server::spawn_with_control(
        "127.0.0.1:0".parse().unwrap(),
        Some("127.0.0.1:0".parse().unwrap()),
        fast_config(),
    )
    .await
    .unwrap();
    let control = format!("http://{}", sim.control_addr().unwrap());
    let client = client();
    let (status, _, _) = post(
        &client,
        format!("{control}/sim/faults"),
        json!({"refuse_connections": true}),
    )
    .await;
    assert_eq!(status, 200);
    eventually("refused", async || {
        client.get(sim.url()).send().await.is_err()
    })
    .await;
    let stats = client
        .get(format!("{control}/sim/stats"))
        .send()
        .await
        .unwrap();
    assert_eq!(stats.status(), 200);
    let missing = client
        .get(format!("{control}/api/tags"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        missing.status(),
        404,
        "the control listener serves only /sim"
    );
    post(
        &client,
        format!("{control}/sim/faults"),
        json!({"refuse_connections": false}),
    )
    .await;
    eventually("accepted again", async || {
        client.get(sim.url()).send().await.is_ok()
    })
    .await;
    let reset = client
        .post(format!("{control}/sim/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.json::<Value>().await.unwrap()["requests_total"], 0);
}

/// `completed` counts generations that ran to their last chunk: not the failed, busy or
/// dropped ones, whatever the route's shape.
#[tokio::test]
async fn completed_counts_only_generations_that_ran_to_their_end() {
    let sim = start(fast_config()).await;
    let client = client();
    for stream in [true, false] {
        let (status, _, _) = post(
            &client,
            format!("{}/api/chat", sim.url()),
            chat_body(stream),
        )
        .await;
        assert_eq!(status, 200);
    }
    let (status, _, _) = post(
        &client,
        format!("{}/v1/chat/completions", sim.url()),
        json!({"model": CHAT, "messages": [{"role":"user","content":"hi"}], "stream": true}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(sim.stats().completed_total, 3);
    for faults in [
        json!({"fail_rate": 1}),
        json!({"busy_rate": 1}),
        json!({"drop_rate": 1}),
    ] {
        let (status, _, _) = post(&client, format!("{}/sim/faults", sim.url()), faults).await;
        assert_eq!(status, 200);
        let _ = client
            .post(format!("{}/api/chat", sim.url()))
            .json(&chat_body(true))
            .send()
            .await
            .unwrap()
            .text()
            .await;
        let (status, _, _) = post(
            &client,
            format!("{}/sim/faults", sim.url()),
            json!({"clear": true}),
        )
        .await;
        assert_eq!(status, 200);
    }
    let stats = sim.stats();
    assert_eq!(stats.faults_injected_total, 3);
    assert_eq!(stats.completed_total, 3, "no faulted request completed");
    assert_eq!(stats.models[CHAT].completed, 3);
}
