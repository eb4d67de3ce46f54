//! Queue position in time: `GET /jobs/{id}` forecasts a queued job's start and
//! finish, and says in words why it waits; the forecast follows the scheduler's
//! order (draining the loaded model first), which the jobs then really run in.

use foreman_store::JobId;
use serde_json::{Value, json};

use crate::common::*;

async fn submit(url: &str, model: &str, text: &str) -> JobId {
    let response = client()
        .post(format!("{url}/jobs"))
        .json(&json!({"kind": "chat", "request": chat_body(model, text, false)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let view: Value = response.json().await.unwrap();
    view["id"].as_str().unwrap().parse().unwrap()
}

fn instant(view: &Value, field: &str) -> std::time::SystemTime {
    humantime::parse_rfc3339(view["eta"][field].as_str().expect("an RFC 3339 time")).unwrap()
}

#[tokio::test]
async fn a_queued_job_is_told_when_it_starts_and_why_it_waits() {
    // One slot, one place: one model at a time.
    let foreman = TestForeman::start(sim_with(&[CHAT, CHAT2], 1, 1)).await;
    let url = foreman.url.clone();
    hold(&foreman.sim, true);
    let first = submit(&url, CHAT, "first").await;
    eventually("the first job to reach the target", async || {
        foreman.sim.stats().held == 1
    })
    .await;
    // The other model's job is older than the loaded model's next two.
    let other = submit(&url, CHAT2, "other").await;
    let second = submit(&url, CHAT, "second").await;
    let third = submit(&url, CHAT, "third").await;

    let (_, running) = get_json(&client(), format!("{url}/jobs/{first}")).await;
    assert_eq!(running["state"], "running");
    assert!(running["eta"]["finish_at"].is_string(), "{running:#}");
    assert!(running["waiting_for"].is_null(), "only a queued job waits");

    let (_, waiting) = get_json(&client(), format!("{url}/jobs/{other}")).await;
    assert_eq!(waiting["state"], "queued");
    assert_eq!(
        waiting["queue_position"], 0,
        "first in plain order: {waiting:#}"
    );
    assert_eq!(
        waiting["waiting_for"],
        format!("{CHAT} is being drained first, then {CHAT2} loads"),
        "{waiting:#}"
    );
    assert_eq!(waiting["eta"]["loads_model"], true);
    // The one target is named after its address.
    let address = foreman.sim.url().replace("http://", "");
    assert_eq!(waiting["eta"]["target"], address.as_str());
    assert!(instant(&waiting, "finish_at") > instant(&waiting, "start_at"));
    let (_, second_view) = get_json(&client(), format!("{url}/jobs/{second}")).await;
    let (_, third_view) = get_json(&client(), format!("{url}/jobs/{third}")).await;
    assert_eq!(second_view["eta"]["loads_model"], false);
    let predicted = [
        (instant(&second_view, "start_at"), second),
        (instant(&third_view, "start_at"), third),
        (instant(&waiting, "start_at"), other),
    ];
    assert!(
        predicted.windows(2).all(|w| w[0].0 <= w[1].0),
        "drain before load: {predicted:?}"
    );

    hold(&foreman.sim, false);
    let store = foreman.store().await;
    let mut started = Vec::new();
    for id in [second, third, other] {
        let job = recorded(&store, id).await;
        started.push((job.started_at.unwrap(), id));
    }
    started.sort();
    let ran: Vec<JobId> = started.iter().map(|(_, id)| *id).collect();
    let forecast: Vec<JobId> = predicted.iter().map(|(_, id)| *id).collect();
    assert_eq!(ran, forecast, "the jobs ran in the forecast's order");
    store.close().await;
    foreman.stop().await;
}
