//! Signed webhooks end to end: receivers on loopback (reached by address or by host
//! name), the signatures checked by the official `standardwebhooks` Python package
//! (an implementation independent of foreman's), retries with their backoff, `410
//! Gone`, the answer timeout, the limit of attempts under way, restarts with
//! deliveries pending, and the address policy, DNS rebinding included (through a
//! scripted resolver standing in for DNS). Clocks are made short through settings;
//! waits poll the store or the receiver.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use base64::Engine;
use foreman_store::{DeliveryState, JobState, WebhookDelivery};
use serde_json::{Value, json};
use tokio::sync::Semaphore;

use crate::common::*;

/// One request the receiver got.
#[derive(Debug, Clone)]
struct Received {
    id: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Received {
    /// The job the payload is about.
    fn job_id(&self) -> String {
        let payload: Value = serde_json::from_str(&self.body).unwrap();
        payload["data"]["id"].as_str().unwrap().to_string()
    }
}

/// What a [`Receiver`] does with requests; shared with its handler.
struct Behaviour {
    /// Answer 500 to this many requests first.
    failures: AtomicUsize,
    /// Then answer this.
    status: AtomicU16,
    /// Requests arriving while this is set wait for a permit of `release` before
    /// they are answered (and never are without one).
    hold: AtomicBool,
    release: Semaphore,
    /// Requests whose handler is running now, and the most there ever were.
    in_flight: AtomicUsize,
    peak: AtomicUsize,
    /// `(webhook-id, status)` of every request answered.
    answered: Mutex<Vec<(String, u16)>>,
}

/// Counts a request in flight for as long as its handler lives (also when the
/// connection goes away and the handler is dropped).
struct InFlight(Arc<Behaviour>);

impl InFlight {
    fn enter(behaviour: &Arc<Behaviour>) -> InFlight {
        let now = behaviour.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        behaviour.peak.fetch_max(now, Ordering::SeqCst);
        InFlight(behaviour.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// A webhook receiver on loopback; it answers 500 to its first `failures`
/// requests, then 204 (or what [`Receiver::answer`] says), and can hold requests.
struct Receiver {
    url: String,
    port: u16,
    received: Arc<Mutex<Vec<Received>>>,
    behaviour: Arc<Behaviour>,
}

impl Receiver {
    async fn start(failures: usize) -> Receiver {
        Receiver::bind("127.0.0.1:0".parse().unwrap(), failures).await
    }

    async fn bind(address: std::net::SocketAddr, failures: usize) -> Receiver {
        let received = Arc::new(Mutex::new(Vec::new()));
        let behaviour = Arc::new(Behaviour {
            failures: AtomicUsize::new(failures),
            status: AtomicU16::new(204),
            hold: AtomicBool::new(false),
            release: Semaphore::new(0),
            in_flight: AtomicUsize::new(0),
            peak: AtomicUsize::new(0),
            answered: Mutex::new(Vec::new()),
        });
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post({
                let (received, behaviour) = (received.clone(), behaviour.clone());
                move |headers: HeaderMap, body: String| async move {
                    let _in_flight = InFlight::enter(&behaviour);
                    let header =
                        |name: &str| headers.get(name).map(|v| v.to_str().unwrap().to_string());
                    let id = header("webhook-id").unwrap_or_default();
                    received.lock().unwrap().push(Received {
                        id: id.clone(),
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
                    if behaviour.hold.load(Ordering::SeqCst) {
                        behaviour.release.acquire().await.unwrap().forget();
                    }
                    let fail = behaviour
                        .failures
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    let status = if fail {
                        500
                    } else {
                        behaviour.status.load(Ordering::SeqCst)
                    };
                    behaviour.answered.lock().unwrap().push((id, status));
                    StatusCode::from_u16(status).unwrap()
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind(address).await.unwrap();
        let bound = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        Receiver {
            url: format!("http://{bound}/hook"),
            port: bound.port(),
            received,
            behaviour,
        }
    }

    /// Answers `status` once the failures are used up.
    fn answer(&self, status: u16) {
        self.behaviour.status.store(status, Ordering::SeqCst);
    }

    /// Holds requests that arrive from now on until [`Receiver::release`].
    fn hold(&self, hold: bool) {
        self.behaviour.hold.store(hold, Ordering::SeqCst);
    }

    /// Lets `n` held requests be answered.
    fn release(&self, n: usize) {
        self.behaviour.release.add_permits(n);
    }

    fn received(&self) -> Vec<Received> {
        self.received.lock().unwrap().clone()
    }

    fn answered(&self) -> Vec<(String, u16)> {
        self.behaviour.answered.lock().unwrap().clone()
    }

    fn in_flight(&self) -> usize {
        self.behaviour.in_flight.load(Ordering::SeqCst)
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

/// A delivery that is waiting for its retry when foreman restarts is sent again after
/// the restart, with the same `webhook-id`, and delivered once.
#[tokio::test]
async fn a_delivery_waiting_for_a_retry_at_a_restart_is_delivered_once_after_it() {
    // The receiver fails until told otherwise: the delivery waits in the outbox.
    let receiver = Receiver::start(usize::MAX).await;
    let mut foreman = TestForeman::start_with(fast_sim(), |config| {
        with_webhooks(config);
        config.webhook_retry_base = Duration::from_millis(300);
        config.webhook_retry_max = Duration::from_secs(1);
        config.webhook_max_attempts = 100;
    })
    .await;
    let client = client();
    let store = foreman.store().await;
    let body = json!({"kind": "generate", "webhook": receiver.url,
        "request": {"model": CHAT, "prompt": "survive a restart"}});
    let id = submit(&client, &foreman, &body).await;
    let mut waiting = None;
    eventually("a first failed attempt to be recorded", async || {
        waiting = stored_deliveries(&store, &id)
            .await
            .into_iter()
            .find(|delivery| delivery.attempts >= 1);
        waiting.is_some()
    })
    .await;
    let waiting = waiting.unwrap();
    assert_eq!(
        (waiting.state, waiting.log[0].status),
        (DeliveryState::Pending, Some(500)),
        "pending, waiting for a retry, when foreman restarts"
    );
    let sent_before = receiver.received().len();
    foreman.restart().await;
    let after = stored_deliveries(&store, &id).await;
    assert_eq!(
        (after.len(), after[0].state),
        (1, DeliveryState::Pending),
        "the restart kept the delivery pending"
    );
    receiver.behaviour.failures.store(0, Ordering::SeqCst);
    let delivered = settled(&store, &id).await;
    assert_eq!(delivered.state, DeliveryState::Delivered);

    let received = receiver.received();
    assert!(received.len() > sent_before, "sent again after the restart");
    assert!(
        received.iter().all(|r| r.id == waiting.id),
        "one webhook-id before and after the restart: {received:?}"
    );
    let answered = receiver.answered();
    assert_eq!(
        answered.iter().filter(|(_, status)| *status == 204).count(),
        1,
        "delivered once: {answered:?}"
    );
    let (last, earlier) = delivered.log.split_last().unwrap();
    assert_eq!(last.status, Some(204));
    assert!(
        !earlier.is_empty() && earlier.iter().all(|a| a.status == Some(500)),
        "{:?}",
        delivered.log
    );
    verify_with_python(&received).await;
    store.close().await;
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

/// The async promise in one test: a script submits jobs across three models and goes
/// away; foreman restarts while jobs are queued and running and webhooks are pending
/// (some held unanswered by the receiver, the rest not yet sent); every result is
/// then collected through the API, and every job's webhook arrives signed, once, with
/// the `webhook-id` it had before the restart.
#[tokio::test]
async fn jobs_and_webhooks_pending_at_a_restart_all_finish_once_after_it() {
    const FINISHED: usize = 24;
    const UNFINISHED: usize = 24;
    let receiver = Receiver::start(0).await;
    receiver.hold(true);
    let mut foreman = TestForeman::start_with(three_models(), |config| {
        with_webhooks(config);
        // Held requests must stay open until the restart, however slow the machine.
        config.webhook_timeout = Duration::from_secs(600);
    })
    .await;
    let client = client();
    let store = foreman.store().await;
    let mut submitted = submit_many(&client, &foreman, &receiver.url, 0..FINISHED).await;
    eventually_within(
        LONG,
        "the first jobs to finish and 16 of their webhooks to be held",
        async || unfinished(&store).await == 0 && receiver.in_flight() == 16,
    )
    .await;
    // The next job stalls in the target, so the rest stay queued behind it.
    foreman
        .sim
        .set_faults(&ollama_sim::FaultsUpdate {
            stall_rate: Some(1.0),
            ..Default::default()
        })
        .unwrap();
    submitted.extend(
        submit_many(
            &client,
            &foreman,
            &receiver.url,
            FINISHED..FINISHED + UNFINISHED,
        )
        .await,
    );
    eventually_within(LONG, "a job to be stuck running", async || {
        count_in_state(&store, JobState::Running).await == 1
    })
    .await;

    // What the restart interrupts.
    assert_eq!(count_in_state(&store, JobState::Succeeded).await, FINISHED);
    assert_eq!(
        count_in_state(&store, JobState::Queued).await,
        UNFINISHED - 1
    );
    let mut outbox = HashMap::new();
    for job in all_jobs(&store).await {
        let deliveries = stored_deliveries(&store, &job.id.to_string()).await;
        if job.state == JobState::Succeeded {
            assert_eq!(deliveries.len(), 1, "{deliveries:?}");
            assert_eq!(
                (deliveries[0].state, deliveries[0].attempts),
                (DeliveryState::Pending, 0),
                "pending, no attempt recorded"
            );
            outbox.insert(deliveries[0].id.clone(), job.id.to_string());
        } else {
            assert!(
                deliveries.is_empty(),
                "unfinished jobs have no delivery yet"
            );
        }
    }
    let held: HashSet<String> = receiver.received().iter().map(|r| r.id.clone()).collect();
    assert_eq!(
        held.len(),
        16,
        "16 attempts under way, held by the receiver"
    );
    assert!(held.iter().all(|id| outbox.contains_key(id)));
    assert!(receiver.answered().is_empty(), "none answered yet");

    // Requests from now on are answered, and the target stops stalling (the stalled
    // request itself stays stalled until foreman drops it).
    receiver.hold(false);
    foreman
        .sim
        .set_faults(&ollama_sim::FaultsUpdate {
            stall_rate: Some(0.0),
            ..Default::default()
        })
        .unwrap();
    foreman.restart().await;

    let total = FINISHED + UNFINISHED;
    eventually_within(
        LONG,
        "every job to finish and its webhook to be answered",
        async || unfinished(&store).await == 0 && receiver.answered().len() >= total,
    )
    .await;
    let mut collected = HashMap::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = format!("{}/jobs?limit=20", foreman.url);
        if let Some(cursor) = &cursor {
            url.push_str(&format!("&cursor={cursor}"));
        }
        let (_, page) = get_json(&client, url).await;
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
    assert_eq!(collected.len(), total, "every job, once");
    assert_eq!(collected.keys().cloned().collect::<HashSet<_>>(), submitted);

    let received = receiver.received();
    let job_of: HashMap<String, String> = received
        .iter()
        .map(|r| (r.id.clone(), r.job_id()))
        .collect();
    let answered = receiver.answered();
    assert_eq!(
        answered.len(),
        total,
        "each webhook answered once: {answered:?}"
    );
    assert!(answered.iter().all(|(_, status)| *status == 204));
    let answered_ids: HashSet<String> = answered.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(answered_ids.len(), total, "no webhook-id answered twice");
    let notified: HashSet<String> = answered_ids.iter().map(|id| job_of[id].clone()).collect();
    assert_eq!(notified, submitted, "one webhook per job, none lost");
    for (id, job) in &outbox {
        assert!(
            answered_ids.contains(id) && &job_of[id] == job,
            "the delivery pending at the restart arrived with its webhook-id {id}"
        );
    }
    assert!(
        held.is_subset(&answered_ids),
        "the held ones were sent again"
    );
    for id in &submitted {
        let delivery = settled(&store, id).await;
        assert_eq!(delivery.state, DeliveryState::Delivered);
        assert_eq!(
            delivery.log.len(),
            1,
            "attempts cut short by the restart leave no record: {:?}",
            delivery.log
        );
        assert_eq!(job_of[&delivery.id], *id);
    }
    verify_with_python(&received).await;
    store.close().await;
    foreman.stop().await;
}

/// The fast simulator with a third chat model.
fn three_models() -> ollama_sim::SimConfig {
    let mut sim = fast_sim();
    sim.models
        .push(ollama_sim::ModelSpec::parse("mistral:7b,load=20ms,tps=4000").unwrap());
    sim
}

/// Submits jobs `range` (round robin over the three models of [`three_models`]), each with a webhook, and
/// returns their ids.
async fn submit_many(
    client: &reqwest::Client,
    foreman: &TestForeman,
    hook: &str,
    range: std::ops::Range<usize>,
) -> HashSet<String> {
    let models = [CHAT, CHAT2, "mistral:7b"];
    let answers = futures::future::join_all(range.map(|i| {
        let (client, url, hook) = (client.clone(), foreman.url.clone(), hook.to_string());
        async move {
            let body = json!({"kind": "chat", "webhook": hook, "metadata": {"n": i},
                "request": {"model": models[i % 3], "messages": [{"role": "user", "content": format!("job {i}")}]}});
            let response = client
                .post(format!("{url}/jobs"))
                .header("Idempotency-Key", format!("job-{i}"))
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 202);
            response.json::<Value>().await.unwrap()["id"]
                .as_str()
                .unwrap()
                .to_string()
        }
    }))
    .await;
    answers.into_iter().collect()
}

/// Deadline for waits on many jobs in a debug build on a busy machine.
const LONG: Duration = Duration::from_secs(90);

/// Polls `check` until it holds or `deadline` passes.
async fn eventually_within(deadline: Duration, what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + deadline;
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn all_jobs(store: &foreman_store::Store) -> Vec<foreman_store::Job> {
    store
        .list(foreman_store::ListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
}

async fn count_in_state(store: &foreman_store::Store, state: JobState) -> usize {
    all_jobs(store)
        .await
        .iter()
        .filter(|job| job.state == state)
        .count()
}

async fn unfinished(store: &foreman_store::Store) -> usize {
    all_jobs(store)
        .await
        .iter()
        .filter(|job| !job.state.is_terminal())
        .count()
}

/// The deliveries the store holds for a job, with their attempt logs.
async fn stored_deliveries(store: &foreman_store::Store, job: &str) -> Vec<WebhookDelivery> {
    store.webhooks_for_job(job.parse().unwrap()).await.unwrap()
}

/// A job's one delivery once it is delivered or failed.
async fn settled(store: &foreman_store::Store, job: &str) -> WebhookDelivery {
    let mut done = None;
    eventually_within(LONG, "the delivery to be delivered or failed", async || {
        let deliveries = stored_deliveries(store, job).await;
        assert!(
            deliveries.len() <= 1,
            "one delivery per job: {deliveries:?}"
        );
        done = deliveries
            .into_iter()
            .find(|delivery| delivery.state != DeliveryState::Pending);
        done.is_some()
    })
    .await;
    done.unwrap()
}

/// Stands in for DNS: answers each name from a script, one address per lookup, the
/// last one for good, and counts the lookups.
#[derive(Clone, Default)]
struct ScriptedDns(Arc<Mutex<HashMap<String, Script>>>);

/// The answers still to give for one name, and how many lookups it had.
struct Script {
    answers: VecDeque<IpAddr>,
    lookups: usize,
}

impl ScriptedDns {
    fn script(&self, host: &str, answers: &[&str]) {
        let script = Script {
            answers: answers.iter().map(|ip| ip.parse().unwrap()).collect(),
            lookups: 0,
        };
        self.0.lock().unwrap().insert(host.to_string(), script);
    }

    fn lookups(&self, host: &str) -> usize {
        self.0.lock().unwrap()[host].lookups
    }
}

impl foreman::webhook::Resolve for ScriptedDns {
    fn lookup(&self, host: &str) -> foreman::webhook::Lookup {
        let mut scripts = self.0.lock().unwrap();
        let answer = scripts.get_mut(host).map(|script| {
            script.lookups += 1;
            if script.answers.len() > 1 {
                script.answers.pop_front().unwrap()
            } else {
                script.answers[0]
            }
        });
        Box::pin(async move {
            answer
                .map(|ip| vec![ip])
                .ok_or_else(|| std::io::Error::other("no such host"))
        })
    }
}

/// A receiver reached by host name: `localhost` is resolved, checked against the
/// allowed networks, and connected to.
#[tokio::test]
async fn a_receiver_named_by_host_name_gets_its_webhook() {
    let receiver = Receiver::start(0).await;
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        with_webhooks(config);
        config.webhook_allow_private_nets =
            foreman::webhook::parse_cidrs("127.0.0.0/8, ::1/128").unwrap();
    })
    .await;
    let client = client();
    let store = foreman.store().await;
    let url = format!("http://localhost:{}/hook", receiver.port);
    let id = submit_with_webhook(&client, &foreman, &url).await;
    let delivery = settled(&store, &id).await;
    assert_eq!(delivery.state, DeliveryState::Delivered, "{delivery:?}");
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].job_id(), id);
    store.close().await;
    foreman.stop().await;
}

/// DNS rebinding: a name that answers an allowed address when checked and an internal
/// one on a later lookup never reaches the internal address. An attempt connects to
/// the address it checked, without asking again; and a name that has turned internal
/// by the time of the attempt is refused then (one attempt, failed, no retry).
/// 127.0.0.1 stands for a public address (the only one allowed here), and 127.0.0.2,
/// on the same port, for an internal service.
#[tokio::test]
async fn a_rebinding_host_name_never_reaches_the_internal_address() {
    let public = Receiver::start(0).await;
    let internal = Receiver::bind(
        std::net::SocketAddr::new("127.0.0.2".parse().unwrap(), public.port),
        0,
    )
    .await;
    let dns = ScriptedDns::default();
    // Checked at submission and again by the attempt; any later lookup is internal.
    dns.script("pinned.example", &["127.0.0.1", "127.0.0.1", "127.0.0.2"]);
    // Checked at submission; internal by the time of the attempt.
    dns.script("rebound.example", &["127.0.0.1", "127.0.0.2"]);
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        with_webhooks(config);
        config.webhook_allow_private_nets = foreman::webhook::parse_cidrs("127.0.0.1/32").unwrap();
        config.webhook_resolver = foreman::webhook::Resolver::new(dns.clone());
        config.webhook_max_attempts = 3;
    })
    .await;
    let client = client();
    let store = foreman.store().await;
    let port = public.port;
    let pinned = submit_with_webhook(
        &client,
        &foreman,
        &format!("http://pinned.example:{port}/hook"),
    )
    .await;
    let rebound = submit_with_webhook(
        &client,
        &foreman,
        &format!("http://rebound.example:{port}/hook"),
    )
    .await;

    let delivery = settled(&store, &pinned).await;
    assert_eq!(delivery.state, DeliveryState::Delivered, "{delivery:?}");
    assert_eq!(
        dns.lookups("pinned.example"),
        2,
        "looked up at submission and once by the attempt, which connected to what it checked"
    );
    let delivery = settled(&store, &rebound).await;
    assert_eq!(delivery.state, DeliveryState::Failed, "{delivery:?}");
    assert_eq!(
        delivery.log.len(),
        1,
        "refused, not retried: {:?}",
        delivery.log
    );
    assert_eq!(delivery.log[0].status, None);
    let error = delivery.log[0].error.as_deref().unwrap();
    assert!(
        error.contains("127.0.0.2") && error.contains("not allowed"),
        "{error}"
    );

    assert!(
        internal.received().is_empty(),
        "the internal address was reached"
    );
    let received = public.received();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].job_id(), pinned);
    store.close().await;
    foreman.stop().await;
}

/// `410 Gone` stops the delivery: one attempt, then failed.
#[tokio::test]
async fn a_410_gone_stops_the_delivery_after_one_attempt() {
    let receiver = Receiver::start(0).await;
    receiver.answer(410);
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        with_webhooks(config);
        config.webhook_retry_base = Duration::from_millis(10);
        config.webhook_max_attempts = 5;
    })
    .await;
    let client = client();
    let store = foreman.store().await;
    let id = submit_with_webhook(&client, &foreman, &receiver.url).await;
    let delivery = settled(&store, &id).await;
    assert_eq!(delivery.state, DeliveryState::Failed);
    assert_eq!(delivery.log.len(), 1, "{:?}", delivery.log);
    assert_eq!(
        (delivery.log[0].status, delivery.log[0].retry_at),
        (Some(410), None)
    );
    assert_eq!(receiver.received().len(), 1);
    store.close().await;
    foreman.stop().await;
}

/// A receiver that always fails gets exactly `FOREMAN_WEBHOOK_MAX_ATTEMPTS` attempts,
/// then the delivery fails. The pauses the dispatcher chose (recorded with each
/// attempt) double from `FOREMAN_WEBHOOK_RETRY_BASE` within the jitter, up to
/// `FOREMAN_WEBHOOK_RETRY_MAX`, and no attempt comes before its time.
#[tokio::test]
async fn an_always_failing_receiver_gets_every_attempt_with_growing_capped_pauses() {
    const ATTEMPTS: u32 = 6;
    const BASE: i64 = 100;
    const CAP: i64 = 400;
    let receiver = Receiver::start(usize::MAX).await;
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        with_webhooks(config);
        config.webhook_retry_base = Duration::from_millis(BASE as u64);
        config.webhook_retry_max = Duration::from_millis(CAP as u64);
        config.webhook_max_attempts = ATTEMPTS;
    })
    .await;
    let client = client();
    let store = foreman.store().await;
    let id = submit_with_webhook(&client, &foreman, &receiver.url).await;
    let delivery = settled(&store, &id).await;
    assert_eq!(delivery.state, DeliveryState::Failed);
    let log = &delivery.log;
    assert_eq!(log.len(), ATTEMPTS as usize, "{log:?}");
    assert!(log.iter().all(|a| a.status == Some(500)), "{log:?}");
    let received = receiver.received();
    assert_eq!(received.len(), ATTEMPTS as usize);
    assert!(received.iter().all(|r| r.id == delivery.id));

    assert_eq!(
        log.last().unwrap().retry_at,
        None,
        "no attempt after the last"
    );
    let mut pauses = Vec::new();
    for (k, pair) in log.windows(2).enumerate() {
        let retry_at = pair[0].retry_at.expect("a retry was scheduled");
        let pause = retry_at - pair[0].at - pair[0].latency_ms;
        let full = (BASE << k).min(CAP);
        assert!(
            (full / 2..=full).contains(&pause),
            "pause {k} is {pause} ms, not within [{}, {full}]: {log:?}",
            full / 2
        );
        assert!(pair[1].at >= retry_at, "attempt {} came early", k + 2);
        pauses.push(pause);
    }
    // Doubling with jitter in [1/2, 1] never shrinks a pause until the cap is reached.
    for k in 1..pauses.len() {
        if (BASE << k) <= CAP {
            assert!(pauses[k] >= pauses[k - 1], "{pauses:?}");
        }
    }
    store.close().await;
    foreman.stop().await;
}

/// A receiver that never answers: the attempt is recorded as timed out after
/// `FOREMAN_WEBHOOK_TIMEOUT`.
#[tokio::test]
async fn a_silent_receiver_times_out_after_the_webhook_timeout() {
    let (silent_url, accepted) = silent_receiver().await;
    let foreman = TestForeman::start_with(fast_sim(), |config| {
        with_webhooks(config);
        config.webhook_timeout = Duration::from_millis(300);
        config.webhook_max_attempts = 1;
    })
    .await;
    let client = client();
    let store = foreman.store().await;
    let id = submit_with_webhook(&client, &foreman, &silent_url).await;
    let delivery = settled(&store, &id).await;
    assert_eq!(delivery.state, DeliveryState::Failed);
    assert_eq!(delivery.log.len(), 1);
    let attempt = &delivery.log[0];
    assert_eq!(
        (attempt.status, attempt.error.as_deref()),
        (None, Some("the receiver timed out"))
    );
    assert!(attempt.latency_ms >= 300, "{attempt:?}");
    assert!(
        attempt.latency_ms < 15_000,
        "cut at the setting, not the 15 s default: {attempt:?}"
    );
    assert_eq!(accepted.load(Ordering::SeqCst), 1);
    store.close().await;
    foreman.stop().await;
}

/// At most 16 attempts are under way at once: with 20 deliveries due and a receiver
/// that holds every request, 16 arrive and the rest wait in the outbox; each answer
/// lets exactly one more in.
#[tokio::test]
async fn at_most_sixteen_deliveries_are_under_way_at_once() {
    const DELIVERIES: usize = 20;
    let receiver = Receiver::start(0).await;
    receiver.hold(true);
    let foreman = TestForeman::start_with(three_models(), |config| {
        with_webhooks(config);
        config.webhook_timeout = Duration::from_secs(600);
    })
    .await;
    let client = client();
    let store = foreman.store().await;
    let ids = submit_many(&client, &foreman, &receiver.url, 0..DELIVERIES).await;
    eventually_within(
        LONG,
        "every job to finish and 16 webhooks to be held",
        async || unfinished(&store).await == 0 && receiver.in_flight() == 16,
    )
    .await;
    for id in &ids {
        let deliveries = stored_deliveries(&store, id).await;
        assert_eq!(
            (deliveries.len(), deliveries[0].state),
            (1, DeliveryState::Pending),
            "every delivery is due"
        );
    }
    assert_eq!(receiver.received().len(), 16, "only 16 sent");
    for sent in 17..=DELIVERIES {
        receiver.release(1);
        eventually_within(LONG, "one more delivery after an answer", async || {
            receiver.received().len() == sent
        })
        .await;
        assert!(receiver.in_flight() <= 16);
    }
    receiver.release(DELIVERIES);
    for id in &ids {
        assert_eq!(settled(&store, id).await.state, DeliveryState::Delivered);
    }
    assert_eq!(
        receiver.behaviour.peak.load(Ordering::SeqCst),
        16,
        "16 at the peak, never more"
    );
    let distinct: HashSet<String> = receiver.received().iter().map(|r| r.id.clone()).collect();
    assert_eq!(distinct.len(), DELIVERIES);
    store.close().await;
    foreman.stop().await;
}
