//! Several foreman instances on one PostgreSQL database: one schedules the target at a
//! time, a worker whose job was rescued by another instance stops its run, and when the
//! instance holding the target is killed the other takes the target over, rescues the
//! killed run's job and finishes every accepted job.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use foreman_store::test_postgres::TestDatabase;
use foreman_store::{ClaimParams, JobId, JobState, Store};
use serde_json::{Value, json};

use crate::common::*;

fn now_ms() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap()
}

/// Submits an async chat to the instance at `url`; its job id.
async fn submit(client: &reqwest::Client, url: &str, text: &str) -> JobId {
    let response = client
        .post(format!("{url}/jobs"))
        .json(&json!({"kind": "chat",
            "request": {"model": CHAT, "messages": [{"role": "user", "content": text}]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// The one target's entry in the instance's `/foreman/targets`.
async fn target_view(client: &reqwest::Client, url: &str) -> Option<Value> {
    let response = client
        .get(format!("{url}/foreman/targets"))
        .send()
        .await
        .ok()?;
    let view: Value = response.json().await.ok()?;
    Some(view["targets"][0].clone())
}

/// A worker whose job was rescued and claimed by another instance (its lease seen as
/// lapsed there) stops its run at its next heartbeat, and records nothing: the other
/// instance's attempt keeps the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_worker_whose_job_was_taken_by_another_instance_stops_its_run() {
    let db = TestDatabase::create().await;
    let database = db.url.clone();
    let foreman = TestForeman::start_with(fast_sim(), move |config| {
        config.database = database;
        config.instance_id = "it-a".to_owned();
        // Heartbeats every second.
        config.lease = Duration::from_secs(3);
    })
    .await;
    // Instance B's handle on the same database.
    let other = Store::open(&db.url).await.unwrap();
    let client = client();

    hold(&foreman.sim, true);
    let id = submit(&client, &foreman.url, "held for a takeover").await;
    eventually("the job to run on A, held by the target", async || {
        other.get(id).await.unwrap().unwrap().state == JobState::Running
            && foreman.sim.stats().held == 1
    })
    .await;
    let running = other.get(id).await.unwrap().unwrap();
    assert!(
        running.lease_owner.as_deref().unwrap().starts_with("it-a/"),
        "{running:?}"
    );

    // B sees the lease as lapsed (its clock an hour on), rescues the job and claims it.
    // The rescue puts it back due at that hour, so A's runners do not claim it first.
    let later = now_ms() + 3_600_000;
    assert_eq!(other.rescue_expired(later).await.unwrap(), 1);
    let taken = other
        .claim(ClaimParams {
            id,
            owner: "it-b/default/0".to_owned(),
            target: "default".to_owned(),
            now: later,
            lease_for_ms: 3_600_000,
        })
        .await
        .unwrap()
        .expect("B claims the rescued job");
    assert_eq!(taken.attempts, running.attempts + 1);

    // A's run stops: its request leaves the target.
    eventually("A's run to leave the target", async || {
        let stats = foreman.sim.stats();
        stats.held == 0 && stats.in_flight == 0
    })
    .await;
    // A recorded nothing: the job is still B's running attempt, and B's outcome stands.
    let job = other.get(id).await.unwrap().unwrap();
    assert_eq!(job.state, JobState::Running, "{job:?}");
    assert_eq!(job.attempts, taken.attempts);
    assert_eq!(job.lease_owner.as_deref(), Some("it-b/default/0"));
    let done = other
        .complete(
            id,
            taken.attempts,
            "it-b/default/0",
            "{}".to_owned(),
            later + 1,
        )
        .await
        .unwrap()
        .expect("B's outcome is recorded");
    assert_eq!(done.state, JobState::Succeeded);

    hold(&foreman.sim, false);
    other.close().await;
    foreman.stop().await;
    db.drop_database().await;
}

/// Two `foreman` processes on one database and one simulator: exactly one schedules
/// the target; SIGKILL it mid-run and the other takes the target within the lease TTL
/// (plus a margin), rescues the killed run's job after its job lease, and every accepted
/// job, on either instance, succeeds; sync callers on the survivor get their answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_other_instance_takes_over_when_the_owner_is_killed() {
    let db = TestDatabase::create().await;
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), fast_sim())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let lease_ttl = Duration::from_secs(2);
    let settings = |instance: &str| {
        vec![
            ("FOREMAN_OLLAMA_URL", sim.url()),
            ("FOREMAN_INSTANCE_ID", instance.to_owned()),
            ("FOREMAN_LEASE_TTL", "2s".to_owned()),
            ("FOREMAN_LEASE", "3s".to_owned()),
            ("FOREMAN_JANITOR_INTERVAL", "500ms".to_owned()),
            (
                "FOREMAN_DATA_DIR",
                dir.path().join(instance).to_str().unwrap().to_owned(),
            ),
        ]
    };
    let (mut first, first_url) = start_foreman_binary(&db.url, &settings("one"), false).await;
    let (mut second, second_url) = start_foreman_binary(&db.url, &settings("two"), false).await;
    let client = client();

    // Exactly one of them holds the target, and both name it.
    let mut owner = String::new();
    eventually("one instance to hold the target", async || {
        let (Some(a), Some(b)) = (
            target_view(&client, &first_url).await,
            target_view(&client, &second_url).await,
        ) else {
            return false;
        };
        let held = [a["owned"] == true, b["owned"] == true];
        if held[0] == held[1] || a["lease_owner"] != b["lease_owner"] {
            return false;
        }
        owner = a["lease_owner"].as_str().unwrap_or_default().to_owned();
        true
    })
    .await;
    let (killed, survivor, survivor_url, survivor_id) = if owner == "one" {
        (&mut first, &mut second, second_url.clone(), "two")
    } else {
        assert_eq!(owner, "two");
        (&mut second, &mut first, first_url.clone(), "one")
    };

    // Jobs accepted by both; the target holds every request, so the owner's run stays.
    hold(&sim, true);
    let store = Store::open(&db.url).await.unwrap();
    let mut accepted = Vec::new();
    for index in 0..3 {
        accepted.push(submit(&client, &first_url, &format!("to one {index}")).await);
        accepted.push(submit(&client, &second_url, &format!("to two {index}")).await);
    }
    let mut interrupted = HashSet::new();
    eventually("the owner to run a job", async || {
        let running = store
            .list(foreman_store::ListParams {
                state: Some(JobState::Running),
                limit: 100,
                ..Default::default()
            })
            .await
            .unwrap();
        interrupted = running.iter().map(|job| job.id).collect();
        !running.is_empty() && sim.stats().held >= 1
    })
    .await;
    for id in &interrupted {
        let job = store.get(*id).await.unwrap().unwrap();
        let lease_owner = job.lease_owner.unwrap();
        assert!(
            lease_owner.starts_with(&format!("{owner}/")),
            "{lease_owner}"
        );
    }

    // The owner dies mid-run.
    killed.start_kill().unwrap();
    killed.wait().await.unwrap();
    let killed_at = Instant::now();
    hold(&sim, false);

    // Sync callers on the survivor, sent while nobody schedules the target.
    let chats: Vec<_> = (0..3)
        .map(|index| {
            let (client, url) = (client.clone(), survivor_url.clone());
            let body = chat_body(CHAT, &format!("sync on the survivor {index}"), false);
            tokio::spawn(async move {
                let (status, _, text) = post(&client, format!("{url}/api/chat"), &body).await;
                (status, text)
            })
        })
        .collect();

    eventually("the survivor to take the target", async || {
        target_view(&client, &survivor_url)
            .await
            .is_some_and(|view| view["owned"] == true && view["lease_owner"] == survivor_id)
    })
    .await;
    let takeover = killed_at.elapsed();
    eprintln!("takeover after SIGKILL: {takeover:?} (lease TTL {lease_ttl:?})");
    assert!(
        takeover < lease_ttl + Duration::from_secs(10),
        "took {takeover:?}"
    );

    for chat in chats {
        let (status, body) = chat.await.unwrap();
        assert_eq!(status, 200, "{body}");
        let answer: Value = serde_json::from_str(&body).unwrap();
        assert_eq!(answer["done"], true, "{body}");
    }

    // Every accepted job succeeds; the killed run's job after a rescue.
    eventually("every accepted job to succeed", async || {
        let mut all = true;
        for id in &accepted {
            all &= store.get(*id).await.unwrap().unwrap().state == JobState::Succeeded;
        }
        all
    })
    .await;
    for id in &interrupted {
        let job = store.get(*id).await.unwrap().unwrap();
        // Claimed twice: the killed run, then the rescued one on the survivor.
        assert_eq!((job.attempts, job.interruptions), (2, 1), "{job:?}");
    }
    let unfinished = store
        .list(foreman_store::ListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_iter()
        .filter(|job| matches!(job.state, JobState::Queued | JobState::Running))
        .count();
    assert_eq!(unfinished, 0, "no job is stuck");

    survivor.start_kill().unwrap();
    survivor.wait().await.unwrap();
    store.close().await;
    sim.shutdown().await;
    db.drop_database().await;
}

/// Two instances on one database and one target, with a long target lease: only the
/// holder runs jobs, whichever instance accepted them; a clean shutdown releases the
/// target, so the other takes it at its next renewal, long before the lease would lapse.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn only_the_holder_schedules_and_a_clean_shutdown_hands_the_target_over() {
    let db = TestDatabase::create().await;
    let sim = ollama_sim::spawn("127.0.0.1:0".parse().unwrap(), fast_sim())
        .await
        .unwrap();
    // Each instance's own simulator is left aside: both schedule this one.
    let instance = |id: &'static str| {
        let (database, url) = (db.url.clone(), sim.url());
        move |config: &mut foreman::config::Config| {
            config.database = database;
            config.instance_id = id.to_owned();
            config.targets = vec![foreman::targets::TargetSpec::single(&url).unwrap()];
            // Longer than `eventually` waits: only a release hands the target over in time.
            config.lease_ttl = Duration::from_secs(24);
        }
    };
    let first = TestForeman::start_with(fast_sim(), instance("it-a")).await;
    let second = TestForeman::start_with(fast_sim(), instance("it-b")).await;
    let client = client();
    let (a, b) = (
        target_view(&client, &first.url).await.unwrap(),
        target_view(&client, &second.url).await.unwrap(),
    );
    assert_eq!(a["name"], b["name"]);
    assert_eq!(
        (&a["owned"], &a["lease_owner"]),
        (&json!(true), &json!("it-a"))
    );
    assert_eq!(
        (&b["owned"], &b["lease_owner"]),
        (&json!(false), &json!("it-a"))
    );

    // Runs a job accepted by the second instance; the lease owner of its run.
    let store = first.store().await;
    let run = async |text: &str| {
        hold(&sim, true);
        let id = submit(&client, &second.url, text).await;
        eventually("the job to run", async || {
            store.get(id).await.unwrap().unwrap().state == JobState::Running
                && sim.stats().held == 1
        })
        .await;
        let owner = store.get(id).await.unwrap().unwrap().lease_owner.unwrap();
        hold(&sim, false);
        eventually("the job to succeed", async || {
            store.get(id).await.unwrap().unwrap().state == JobState::Succeeded
        })
        .await;
        owner
    };
    let owner = run("accepted by b, run by a").await;
    assert!(owner.starts_with("it-a/"), "{owner}");

    first.stop().await;
    eventually(
        "the second instance to take the released target",
        async || {
            target_view(&client, &second.url)
                .await
                .is_some_and(|view| view["owned"] == true && view["lease_owner"] == "it-b")
        },
    )
    .await;
    let owner = run("after the handover").await;
    assert!(owner.starts_with("it-b/"), "{owner}");

    store.close().await;
    second.stop().await;
    sim.shutdown().await;
    db.drop_database().await;
}
