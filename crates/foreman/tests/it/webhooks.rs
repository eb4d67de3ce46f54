//! Signed webhooks end to end: a receiver on loopback that answers 500 first, the
//! signatures checked by the official `standardwebhooks` Python package (an
//! implementation independent of foreman's), retries, a restart before delivery,
//! and the address policy.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use serde_json::{Value, json};

use crate::common::*;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    headers: Vec<(String, String)>,
    body: String,
}

/// A webhook receiver on a free loopback port; it answers 500 to its first
/// `failures` requests, then 204.
struct Receiver {
    url: String,
    received: Arc<Mutex<Vec<Received>>>,
    failures: Arc<AtomicUsize>,
}

impl Receiver {
    async fn start(failures: usize) -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let failures = Arc::new(AtomicUsize::new(failures));
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let (received, failures) = (received.clone(), failures.clone());
                move |headers: HeaderMap, body: String| async move {
                    let header =
                        |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
                    received.lock().unwrap().push(Received {
                        id: header("webhook-id").unwrap_or_default(),
                        headers: [
                            "webhook-id",
                            "webhook-timestamp",
                            "webhook-signature",
                            "content-type",
                        ]
                        .iter()
                        .filter_map(|name| header(name).map(|v| (name.to_string(), v)))
                        .collect(),
                        body,
                    });
                    let fail = failures
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    if fail {
                        StatusCode::INTERNAL_SERVER_ERROR
                    } else {
                        StatusCode::NO_CONTENT
                    }
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url,
            received,
            failures,
        }
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }
}

fn secret() -> String {
    format!(
        "whsec_{}",
        base64::engine::general_purpose::STANDARD.encode([42u8; 32])
    )
}

fn with_webhooks(config: &mut foreman::config::Config) {
    config.webhook_key = Some(foreman::webhook::decode_secret(&secret()).unwrap());
    config.webhook_allow_private_nets = foreman::webhook::parse_cidrs("127.0.0.0/8").unwrap();
    config.webhook_retry_base = Duration::from_millis(100);
}

/// Verifies every received request with the `standardwebhooks` package.
async fn verify_with_python(received: &[Received]) {
    let python = repo_root().join(".venv/bin/python");
    assert!(python.exists(), "run scripts/setup-python.sh");
    let requests: Vec<Value> = received
        .iter()
        .map(|r| json!({"headers": r.headers.iter().cloned().collect::<std::collections::HashMap<_, _>>(), "body": r.body}))
        .collect();
    let script = r#"
import json, sys
from standardwebhooks.webhooks import Webhook
secret, requests = sys.argv[1], json.load(sys.stdin)
for request in requests:
    Webhook(secret).verify(request["body"], request["headers"])
print(f"verified {len(requests)}")
"#;
    let mut child = tokio::process::Command::new(python)
        .args(["-c", script, &secret()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use tokio::io::AsyncWriteExt;
    let mut stdin = child.stdin.take().unwrap();
    stdin
        .write_all(serde_json::to_string(&requests).unwrap().as_bytes())
        .await
        .unwrap();
    drop(stdin);
    let output = child.wait_with_output().await.unwrap();
    assert!(
        output.status.success(),
        "standardwebhooks rejected a delivery:\n{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[tokio::test]
async fn a_finished_job_is_delivered_signed_and_retried_after_a_500() {
    let receiver = Receiver::start(1).await;
    let foreman = TestForeman::start_with(fast_sim(), with_webhooks).await;
    let client = client();
    let body = json!({"kind": "chat", "webhook": receiver.url, "metadata": {"batch": 3},
        "request": {"model": CHAT, "messages": [{"role": "user", "content": "notify me"}]}});
    let id = submit(&client, &foreman, &body).await;
    eventually("a retry after the 500", async || {
        receiver.received().len() == 2
    })
    .await;
    let received = receiver.received();
    assert_eq!(
        received[0].id, received[1].id,
        "one webhook-id across retries"
    );
    assert!(received[0].id.starts_with("msg_"));
    let payload: Value = serde_json::from_str(&received[1].body).unwrap();
    assert_eq!(payload["type"], "job.succeeded");
    assert_eq!(payload["data"]["id"], id);
    assert_eq!(payload["data"]["metadata"], json!({"batch": 3}));
    assert_eq!(
        received[0].body, received[1].body,
        "the same body every time"
    );
    verify_with_python(&received).await;

    let (_, view) = get_json(&client, format!("{}/jobs/{id}", foreman.url)).await;
    let delivery = &view["webhook"]["deliveries"][0];
    eventually("the delivery to be recorded", async || {
        let (_, view) = get_json(&client, format!("{}/jobs/{id}", foreman.url)).await;
        view["webhook"]["deliveries"][0]["state"] == "delivered"
    })
    .await;
    assert_eq!(delivery["id"], received[0].id.as_str());
    let (_, view) = get_json(&client, format!("{}/jobs/{id}", foreman.url)).await;
    let attempts = view["webhook"]["deliveries"][0]["attempts"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(attempts.len(), 2);
    assert_eq!(
        (attempts[0]["status"].clone(), attempts[1]["status"].clone()),
        (json!(500), json!(204))
    );
    assert!(attempts[0]["error"].as_str().unwrap().contains("500"));
    foreman.stop().await;
}

#[tokio::test]
async fn a_restart_before_delivery_still_delivers_once() {
    // The receiver fails for a long time: the delivery waits in the outbox.
    let receiver = Receiver::start(usize::MAX).await;
    let mut foreman = TestForeman::start_with(fast_sim(), |config| {
        with_webhooks(config);
        config.webhook_retry_base = Duration::from_millis(300);
    })
    .await;
    let client = client();
    let body = json!({"kind": "generate", "webhook": receiver.url,
        "request": {"model": CHAT, "prompt": "survive a restart"}});
    let id = submit(&client, &foreman, &body).await;
    eventually("a first failed attempt", async || {
        !receiver.received().is_empty()
    })
    .await;
    foreman.restart().await;
    receiver.failures.store(0, Ordering::SeqCst);
    eventually("a delivery after the restart", async || {
        deliveries(&client, &foreman, &id).await[0]["state"] == "delivered"
    })
    .await;
    let received = receiver.received();
    let ids: std::collections::HashSet<&str> = received.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        1,
        "every attempt carries the one webhook-id, so the receiver dedupes to one event"
    );
    verify_with_python(&received).await;
    foreman.stop().await;
}

#[tokio::test]
async fn webhook_urls_are_checked_before_use() {
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        with_webhooks(config);
        config.webhook_allow_private_nets = Vec::new();
    })
    .await;
    let client = client();
    for (url, message) in [
        ("ftp://example.com/hook", "scheme"),
        ("http://127.0.0.1:9/hook", "not allowed"),
        ("http://localhost:9/hook", "not allowed"),
        ("http://169.254.169.254/latest/meta-data", "not allowed"),
        ("http://10.1.2.3/hook", "not allowed"),
        ("http://[::ffff:192.168.0.1]/hook", "not allowed"),
        ("http://[fd00::1]/hook", "not allowed"),
    ] {
        let body =
            json!({"kind": "chat", "webhook": url, "request": {"model": CHAT, "messages": []}});
        let response = client
            .post(format!("{}/jobs", foreman.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{url}");
        let error: Value = response.json().await.unwrap();
        assert!(
            error["error"].as_str().unwrap().contains(message),
            "{url}: {error}"
        );
    }
    assert!(foreman.jobs().await.is_empty(), "no job was created");
    foreman.stop().await;
}

/// A loopback receiver that accepts connections and never answers; counts them.
async fn silent_receiver() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (url, accepted)
}

/// Submits a job through `POST /jobs` and returns its id.
async fn submit(client: &reqwest::Client, foreman: &TestForeman, body: &Value) -> String {
    let response = client
        .post(format!("{}/jobs", foreman.url))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let job: Value = response.json().await.unwrap();
    job["id"].as_str().unwrap().to_string()
}

async fn submit_with_webhook(client: &reqwest::Client, foreman: &TestForeman, url: &str) -> String {
    let body = json!({"kind": "chat", "webhook": url,
        "request": {"model": CHAT, "messages": [{"role": "user", "content": "hi"}]}});
    submit(client, foreman, &body).await
}

async fn deliveries(client: &reqwest::Client, foreman: &TestForeman, id: &str) -> Value {
    let (_, view) = get_json(client, format!("{}/jobs/{id}", foreman.url)).await;
    view["webhook"]["deliveries"].clone()
}

/// A receiver that never answers holds up only its own delivery: another job's
/// webhook goes out while that attempt is still waiting.
#[tokio::test]
async fn a_silent_receiver_does_not_hold_up_other_deliveries() {
    let (silent_url, accepted) = silent_receiver().await;
    let receiver = Receiver::start(0).await;
    let foreman = TestForeman::start_with(fast_sim(), with_webhooks).await;
    let client = client();
    let stuck = submit_with_webhook(&client, &foreman, &silent_url).await;
    eventually("the silent receiver to be called", async || {
        accepted.load(Ordering::SeqCst) == 1
    })
    .await;
    submit_with_webhook(&client, &foreman, &receiver.url).await;
    eventually("the other webhook to arrive", async || {
        receiver.received().len() == 1
    })
    .await;
    let stuck_deliveries = deliveries(&client, &foreman, &stuck).await;
    assert_eq!(
        stuck_deliveries[0]["attempts"],
        json!([]),
        "the silent receiver's attempt is still under way: {stuck_deliveries}"
    );
    foreman.stop().await;
}

/// A receiver's redirect is not followed: the attempt counts as a failure, and the
/// address it points at is never called.
#[tokio::test]
async fn redirects_are_not_followed() {
    let target = Receiver::start(0).await;
    let location = target.url.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move || {
            let location = location.clone();
            async move { (StatusCode::TEMPORARY_REDIRECT, [("location", location)]) }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let redirecting = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let foreman = TestForeman::start_with(fast_sim(), |config| {
        with_webhooks(config);
        config.webhook_max_attempts = 1;
    })
    .await;
    let client = client();
    let id = submit_with_webhook(&client, &foreman, &redirecting).await;
    eventually("the attempt to be recorded", async || {
        deliveries(&client, &foreman, &id).await[0]["state"] == "failed"
    })
    .await;
    let delivery = &deliveries(&client, &foreman, &id).await[0];
    assert_eq!(delivery["attempts"][0]["status"], 307, "{delivery}");
    assert!(target.received().is_empty(), "the redirect was followed");
    foreman.stop().await;
}

/// The async promise in one test: a script submits 500 jobs across three models and
/// goes away; foreman restarts in the middle; every result is then collected through
/// the API and every webhook arrives signed, none lost, none duplicated.
#[tokio::test]
async fn five_hundred_jobs_survive_a_restart_with_every_result_and_webhook() {
    let receiver = Receiver::start(0).await;
    let mut sim = fast_sim();
    sim.models
        .push(ollama_sim::ModelSpec::parse("mistral:7b,load=20ms,tps=4000").unwrap());
    let mut foreman = TestForeman::start_with(sim, with_webhooks).await;
    let client = client();
    let models = [CHAT, CHAT2, "mistral:7b"];
    let mut submitted = std::collections::HashSet::new();
    for chunk in (0..500).collect::<Vec<usize>>().chunks(50) {
        let answers = futures::future::join_all(chunk.iter().map(|&i| {
            let (client, url, hook) = (client.clone(), foreman.url.clone(), receiver.url.clone());
            async move {
                let body = json!({"kind": "chat", "webhook": hook, "metadata": {"n": i},
                    "request": {"model": models[i % 3], "messages": [{"role": "user", "content": format!("job {i}")}]}});
                let response = client.post(format!("{url}/jobs")).header("Idempotency-Key", format!("job-{i}"))
                    .json(&body).send().await.unwrap();
                assert_eq!(response.status(), 202);
                response.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string()
            }
        }))
        .await;
        submitted.extend(answers);
    }
    assert_eq!(submitted.len(), 500);
    foreman.restart().await;

    let store = foreman.store().await;
    eventually("every job to finish", async || {
        store.queue_depth().await.unwrap() == 0
            && store
                .list(foreman_store::ListParams {
                    state: Some(foreman_store::JobState::Running),
                    limit: 1,
                    ..Default::default()
                })
                .await
                .unwrap()
                .is_empty()
    })
    .await;
    let mut collected = std::collections::HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/jobs?limit=200", foreman.url);
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let page: Value = client.get(url).send().await.unwrap().json().await.unwrap();
        for job in page["jobs"].as_array().unwrap() {
            assert_eq!(job["state"], "succeeded", "{job}");
            assert!(job["result"]["message"]["content"].is_string());
            collected.insert(
                job["id"].as_str().unwrap().to_string(),
                job["metadata"]["n"].as_u64().unwrap(),
            );
        }
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_string()),
            None => break,
        }
    }
    assert_eq!(collected.len(), 500, "every job, once");
    assert_eq!(
        collected
            .keys()
            .cloned()
            .collect::<std::collections::HashSet<_>>(),
        submitted
    );

    eventually("every webhook to arrive", async || {
        receiver
            .received()
            .iter()
            .map(|r| r.id.clone())
            .collect::<std::collections::HashSet<_>>()
            .len()
            == 500
    })
    .await;
    let received = receiver.received();
    let jobs_notified: std::collections::HashSet<String> = received
        .iter()
        .map(|r| {
            serde_json::from_str::<Value>(&r.body).unwrap()["data"]["id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    assert_eq!(jobs_notified, submitted, "one notification per job");
    verify_with_python(&received).await;
    foreman.stop().await;
}
