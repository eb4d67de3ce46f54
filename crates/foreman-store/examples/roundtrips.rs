//! How many jobs per second go through enqueue, claim and complete on a backend: the
//! measurement behind the PostgreSQL client choice in ARCHITECTURE.md.
//!
//!     cargo run --release -p foreman-store --example roundtrips -- URL [JOBS] [TASKS] [bounded]
//!
//! URL is a SQLite file path or a `postgres://` URL of an empty database (a test
//! database: jobs are left behind). TASKS tasks run the three calls in a loop, each
//! on its own jobs, JOBS in all. With `bounded`, jobs are enqueued as the daemon's
//! routes enqueue them, under a queue limit (`enqueue_within`, here 1,000,000).

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use foreman_store::{ClaimParams, JobKind, NewJob, Store};

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: roundtrips URL [JOBS] [TASKS]");
    let jobs: usize = args.next().map_or(2_000, |n| n.parse().expect("JOBS"));
    let tasks: usize = args.next().map_or(1, |n| n.parse().expect("TASKS"));
    let bounded = match args.next().as_deref() {
        None => false,
        Some("bounded") => true,
        Some(other) => panic!("the fourth argument is `bounded` or nothing, not {other:?}"),
    };
    let store = Store::open(&url).await.expect("open");
    let started = Instant::now();
    let workers: Vec<_> = (0..tasks)
        .map(|task| {
            let store = store.clone();
            tokio::spawn(async move {
                for _ in 0..jobs / tasks {
                    let now = i64::try_from(
                        SystemTime::now()
                            .duration_since(UNIX_EPOCH)
                            .expect("clock")
                            .as_millis(),
                    )
                    .expect("time");
                    let new_job = NewJob {
                        id: None,
                        kind: JobKind::Chat,
                        model: "m".to_owned(),
                        load_options: String::new(),
                        payload: r#"{"model":"m","messages":[]}"#.to_owned(),
                        sync: true,
                        priority: 0,
                        max_attempts: 3,
                        idempotency_key: None,
                        webhook_url: None,
                        metadata: None,
                        caller: None,
                    };
                    let enqueued = if bounded {
                        store.enqueue_within(new_job, now, 1_000_000).await
                    } else {
                        store.enqueue(new_job, now).await
                    };
                    let job = enqueued.expect("enqueue").job;
                    let owner = format!("bench/t/{task}");
                    store
                        .claim(ClaimParams {
                            id: job.id,
                            owner: owner.clone(),
                            target: "t".to_owned(),
                            now,
                            lease_for_ms: 30_000,
                        })
                        .await
                        .expect("claim")
                        .expect("claimed");
                    store
                        .complete(job.id, 1, &owner, "{}".to_owned(), now)
                        .await
                        .expect("complete")
                        .expect("completed");
                }
            })
        })
        .collect();
    for worker in workers {
        worker.await.expect("worker");
    }
    let seconds = started.elapsed().as_secs_f64();
    let done = jobs / tasks * tasks;
    println!(
        "{done} jobs, {tasks} tasks: {:.0} jobs/s ({} enqueue + claim + complete), {:.2} ms per job per task",
        done as f64 / seconds,
        if bounded { "bounded" } else { "plain" },
        seconds * 1000.0 * tasks as f64 / done as f64
    );
    store.close().await;
}
