//! Several targets behind one foreman: merged listings, routing of direct requests,
//! model management naming its target, and what callers see while a target is down.

use std::collections::BTreeSet;
use std::time::Duration;

use foreman_store::{JobId, JobState};
use serde_json::{Value, json};

use crate::common::*;

/// Model keys of a `{"models":[...]}` or `{"data":[...]}` listing.
fn names(listing: &Value, list: &str, field: &str) -> Vec<String> {
    listing[list]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| foreman::model_name::model_key(m[field].as_str().unwrap()))
        .collect()
}

async fn healthz(client: &reqwest::Client, url: &str) -> Value {
    get_json(client, format!("{url}/healthz")).await.1
}

#[tokio::test]
async fn two_targets_serve_one_foreman() {
    let gpu0 = sim_with(
        &[
            "llama3.2:3b,load=20ms,tps=4000",
            "qwen2.5:0.5b,load=20ms,tps=4000",
        ],
        1,
        2,
    );
    let gpu1 = sim_with(
        &[
            "qwen2.5:0.5b,load=20ms,tps=4000",
            "nomic-embed-text,embed,load=10ms",
        ],
        2,
        2,
    );
    let foreman = TestForeman::start_targets(vec![("gpu0", gpu0), ("gpu1", gpu1)], |_| {}).await;
    let (client, url) = (client(), foreman.url.clone());
    let second = &foreman.more_sims[0];

    // The tags are the union, each model once.
    let (status, tags) = get_json(&client, format!("{url}/api/tags")).await;
    assert_eq!(status, 200);
    let listed = names(&tags, "models", "name");
    assert_eq!(listed.len(), 3, "{tags}");
    let expected: BTreeSet<String> = [CHAT, CHAT2, "nomic-embed-text:latest"]
        .map(String::from)
        .into();
    assert_eq!(listed.into_iter().collect::<BTreeSet<_>>(), expected);
    let (status, models) = get_json(&client, format!("{url}/v1/models")).await;
    assert_eq!(status, 200);
    assert_eq!(
        names(&models, "data", "id")
            .into_iter()
            .collect::<BTreeSet<_>>(),
        expected,
        "/v1/models lists what /api/tags does"
    );

    // An embedding for a model only the second target has goes there.
    let (status, _, body) = post(
        &client,
        format!("{url}/api/embed"),
        &json!({"model": EMBED, "input": "hello"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(second.stats().requests_total, 1);
    assert_eq!(foreman.sim.stats().requests_total, 0);
    let (status, _, body) = post(
        &client,
        format!("{url}/v1/embeddings"),
        &json!({"model": EMBED, "input": "hello"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(second.stats().requests_total, 2);
    let (status, _, body) =
        post(&client, format!("{url}/api/show"), &json!({"model": EMBED})).await;
    assert_eq!(status, 200, "the second target knows it: {body}");

    // A chat loads a model on the first target; /api/ps shows both targets' models.
    let (status, _, body) = post(
        &client,
        format!("{url}/api/chat"),
        &chat_body(CHAT, "hi", false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let mut ps = Value::Null;
    eventually("/api/ps to show both targets' loaded models", async || {
        ps = get_json(&client, format!("{url}/api/ps")).await.1;
        let loaded = names(&ps, "models", "name");
        loaded.contains(&CHAT.to_string())
            && loaded.contains(&"nomic-embed-text:latest".to_string())
    })
    .await;
    assert_eq!(names(&ps, "models", "name").len(), 2, "{ps}");

    // /healthz describes both, without their addresses.
    let health = healthz(&client, &url).await;
    assert_eq!(
        (
            health["degraded"].clone(),
            health["target_reachable"].clone()
        ),
        (json!(false), json!(true))
    );
    let described = health["targets"].as_array().unwrap();
    assert_eq!(described.len(), 2, "{health}");
    assert_eq!(
        (
            described[0]["name"].clone(),
            described[0]["slots"].clone(),
            described[0]["places"].clone()
        ),
        (json!("gpu0"), json!(1), json!(2))
    );
    assert_eq!(
        (described[1]["name"].clone(), described[1]["slots"].clone()),
        (json!("gpu1"), json!(2))
    );
    assert_eq!(described[1]["paused"], false);
    let text = health.to_string();
    assert!(
        !text.contains(&second.url()) && !text.contains(&foreman.sim.url()),
        "{text}"
    );

    // The operator view has the detail.
    let (status, view) = get_json(&client, format!("{url}/foreman/targets")).await;
    assert_eq!(status, 200);
    let view = view["targets"].as_array().unwrap().clone();
    assert_eq!(view[0]["url"], foreman.sim.url());
    assert_eq!(view[1]["url"], second.url());
    assert_eq!(view[1]["down_since_seconds"], Value::Null);
    assert!(
        view[1]["models"]
            .as_array()
            .unwrap()
            .contains(&json!("nomic-embed-text:latest")),
        "{view:?}"
    );
    assert_eq!(view[1]["load"], json!({"resident": [], "running": 0}));
    // One process on a SQLite file holds every target.
    for target in &view {
        assert_eq!(target["owned"], true, "{target}");
        assert!(target["lease_owner"].is_string(), "{target}");
    }

    // Model management names its target.
    let delete = |target: Option<&str>| {
        let mut request = client
            .delete(format!("{url}/api/delete"))
            .json(&json!({"model": CHAT2}));
        if let Some(target) = target {
            request = request.header("X-Foreman-Target", target);
        }
        request.send()
    };
    let refused = delete(None).await.unwrap();
    assert_eq!(refused.status(), 400);
    let error: Value = refused.json().await.unwrap();
    let message = error["error"].as_str().unwrap();
    assert!(
        message.contains("X-Foreman-Target") && message.contains("gpu0, gpu1"),
        "{message}"
    );
    let unknown = delete(Some("gpu7")).await.unwrap();
    assert_eq!(unknown.status(), 400);
    assert_eq!(delete(Some("gpu1")).await.unwrap().status(), 200);
    eventually(
        "the second target's inventory to drop the model",
        async || {
            let view = get_json(&client, format!("{url}/foreman/targets")).await.1;
            !view["targets"][1]["models"]
                .as_array()
                .unwrap()
                .contains(&json!(CHAT2))
        },
    )
    .await;
    let tags = get_json(&client, format!("{url}/api/tags")).await.1;
    assert!(
        names(&tags, "models", "name").contains(&CHAT2.to_string()),
        "the first target still has it"
    );
    foreman.stop().await;
}

#[tokio::test]
async fn sync_callers_give_up_on_a_target_that_is_down_and_async_jobs_wait() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        config.target_down_timeout = Duration::from_secs(1);
    })
    .await;
    let (client, url) = (client(), foreman.url.clone());
    foreman.sim.refuse_connections(true);
    eventually("the target to be paused", async || {
        healthz(&client, &url).await["targets"][0]["paused"] == true
    })
    .await;

    let request = json!({"kind": "chat", "request": chat_body(CHAT, "later is fine", false)});
    let response = client
        .post(format!("{url}/jobs"))
        .json(&request)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let queued: Value = response.json().await.unwrap();
    let async_id: JobId = queued["id"].as_str().unwrap().parse().unwrap();

    let (status, headers, body) = post(
        &client,
        format!("{url}/api/chat"),
        &chat_body(CHAT, "now please", false),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    let message = error["error"].as_str().unwrap();
    let target = foreman.sim.url().trim_start_matches("http://").to_string();
    assert!(
        message.contains(&target) && message.contains(CHAT),
        "{message}"
    );
    let sync_id: JobId = headers["x-foreman-job-id"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let store = foreman.store().await;
    assert_eq!(recorded(&store, sync_id).await.state, JobState::Cancelled);

    // OpenAI's routes answer in OpenAI's shape.
    let (status, _, body) = post(
        &client,
        format!("{url}/v1/chat/completions"),
        &json!({"model": CHAT, "messages": [{"role": "user", "content": "hi"}]}),
    )
    .await;
    assert_eq!(status, 503, "{body}");
    let error: Value = serde_json::from_str(&body).unwrap();
    assert!(
        error["error"]["message"]
            .as_str()
            .unwrap()
            .contains(&target),
        "{error}"
    );

    let waiting = store.get(async_id).await.unwrap().unwrap();
    assert_eq!(
        (waiting.state, waiting.attempts),
        (JobState::Queued, 0),
        "no attempt spent on a target known to be down"
    );
    foreman.sim.refuse_connections(false);
    let done = recorded(&store, async_id).await;
    assert_eq!((done.state, done.attempts), (JobState::Succeeded, 1));
    store.close().await;
    foreman.stop().await;
}

#[tokio::test]
async fn a_target_that_goes_down_is_paused_alone() {
    let gpu0 = sim_with(&["llama3.2:3b,load=20ms,tps=4000"], 1, 1);
    let gpu1 = sim_with(&["nomic-embed-text,embed,load=10ms"], 1, 1);
    let foreman = TestForeman::start_targets(vec![("gpu0", gpu0), ("gpu1", gpu1)], |_| {}).await;
    let (client, url) = (client(), foreman.url.clone());
    foreman.more_sims[0].refuse_connections(true);
    eventually("the second target to be paused", async || {
        healthz(&client, &url).await["targets"][1]["paused"] == true
    })
    .await;
    let health = healthz(&client, &url).await;
    assert_eq!(
        (
            health["degraded"].clone(),
            health["target_reachable"].clone()
        ),
        (json!(true), json!(false))
    );
    assert_eq!(health["targets"][0]["paused"], false);
    let (_, view) = get_json(&client, format!("{url}/foreman/targets")).await;
    assert!(view["targets"][1]["down_since_seconds"].is_u64(), "{view}");
    assert_eq!(view["targets"][0]["down_since_seconds"], Value::Null);
    assert!(
        view["targets"][1]["models"]
            .as_array()
            .unwrap()
            .contains(&json!("nomic-embed-text:latest")),
        "a target that went down keeps its last known models: {view}"
    );

    // The models of the one that answers are served; the other's are still listed.
    let (status, _, body) = post(
        &client,
        format!("{url}/api/chat"),
        &chat_body(CHAT, "hi", false),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let (_, tags) = get_json(&client, format!("{url}/api/tags")).await;
    assert_eq!(names(&tags, "models", "name").len(), 2, "{tags}");
    let (status, _, body) = post(
        &client,
        format!("{url}/api/embed"),
        &json!({"model": EMBED, "input": "hello"}),
    )
    .await;
    assert_eq!(
        status, 502,
        "the only target with it does not answer: {body}"
    );

    foreman.more_sims[0].refuse_connections(false);
    eventually("the second target to be back", async || {
        healthz(&client, &url).await["target_reachable"] == true
    })
    .await;
    let (status, _, body) = post(
        &client,
        format!("{url}/api/embed"),
        &json!({"model": EMBED, "input": "hello"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    foreman.stop().await;
}
