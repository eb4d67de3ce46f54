//! Conformance cases for several instances on one database: who accepted a synchronous job
//! and who abandons it, the outbox row written with a job's outcome, and the running jobs
//! that occupy a target when another instance takes it over.

use super::{LEASE_MS, T0, claim, enqueue, get, new_job};
use crate::{ClaimParams, JobState, Lease, Store};

fn sync_job() -> crate::NewJob {
    crate::NewJob {
        sync: true,
        ..new_job("m", 0)
    }
}

/// Each instance records itself on the jobs it accepts, and at its start abandons only
/// its own unfinished synchronous jobs: queued ones are cancelled (499), running ones
/// (perhaps run by another instance) are asked to stop. Another instance's synchronous
/// jobs, asynchronous jobs and finished jobs are left alone.
pub async fn case_sync_jobs_are_abandoned_per_instance(url: &str) {
    let a = Store::open(url).await.expect("open a").with_instance("a");
    let b = Store::open(url).await.expect("open b").with_instance("b");
    let a_queued = enqueue(&a, sync_job(), T0).await;
    let a_running = enqueue(&a, sync_job(), T0).await;
    let a_async = enqueue(&a, new_job("m", 0), T0).await;
    let b_queued = enqueue(&b, sync_job(), T0).await;
    let b_running = enqueue(&b, sync_job(), T0).await;
    assert_eq!(a_queued.accepted_by.as_deref(), Some("a"));
    assert_eq!(b_queued.accepted_by.as_deref(), Some("b"));
    // a's job runs on b, b's on a.
    claim(&b, a_running.id, "b/t/0", T0 + 1).await;
    claim(&a, b_running.id, "a/t/0", T0 + 1).await;

    assert_eq!(
        a.abandon_sync_jobs_of("a", T0 + 10).await.expect("abandon"),
        2
    );
    let job = get(&b, a_queued.id).await;
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(job.finished_at, Some(T0 + 10));
    assert_eq!(job.failure.map(|failure| failure.status), Some(499));
    let job = get(&b, a_running.id).await;
    assert_eq!(job.state, JobState::Running, "its runner ends it");
    assert!(job.cancel_requested);
    assert_eq!(job.failure.map(|failure| failure.status), Some(499));
    // Its runner (on b) ends it as asked, with the reason kept.
    let ended = b
        .finish_cancelled(a_running.id, 1, "b/t/0", T0 + 11)
        .await
        .expect("finish")
        .expect("current attempt");
    assert_eq!(ended.state, JobState::Cancelled);
    assert_eq!(ended.failure.map(|failure| failure.status), Some(499));

    for (id, state) in [
        (a_async.id, JobState::Queued),
        (b_queued.id, JobState::Queued),
        (b_running.id, JobState::Running),
    ] {
        let job = get(&a, id).await;
        assert_eq!(job.state, state);
        assert!(!job.cancel_requested);
        assert_eq!(job.failure, None);
    }
    // Nothing left of a's: a second start changes nothing.
    assert_eq!(
        a.abandon_sync_jobs_of("a", T0 + 20).await.expect("abandon"),
        0
    );
    a.close().await;
    b.close().await;
}

/// The janitor's holder abandons the unfinished synchronous jobs of instances that hold
/// no live instance lease (stopped, or dead and never back) and of no recorded instance,
/// once accepted before the bound it is given; a live instance's are left alone.
pub async fn case_orphaned_sync_jobs_are_abandoned_without_an_instance_lease(store: &Store) {
    let ttl = 10_000;
    let live = store.clone().with_instance("live");
    let dying = store.clone().with_instance("dying");
    let stopped = store.clone().with_instance("stopped");
    assert!(
        store
            .acquire_lease(Lease::Instance("live"), "live", T0, 100 * ttl)
            .await
            .expect("lease")
    );
    assert!(
        store
            .acquire_lease(Lease::Instance("dying"), "dying", T0, ttl)
            .await
            .expect("lease")
    );
    assert!(
        store
            .acquire_lease(Lease::Instance("stopped"), "stopped", T0, ttl)
            .await
            .expect("lease")
    );
    let of_live = enqueue(&live, sync_job(), T0).await;
    let of_dying = enqueue(&dying, sync_job(), T0).await;
    let of_dying_running = enqueue(&dying, sync_job(), T0).await;
    claim(store, of_dying_running.id, "live/t/0", T0 + 1).await;
    let of_stopped = enqueue(&stopped, sync_job(), T0).await;
    let of_nobody = enqueue(store, sync_job(), T0).await;
    let async_of_stopped = enqueue(&stopped, new_job("m", 0), T0).await;
    assert!(
        store
            .release_lease(Lease::Instance("stopped"), "stopped")
            .await
            .expect("release")
    );
    assert_eq!(of_nobody.accepted_by, None);

    // Not before the bound: a job accepted at T0 is not abandoned while accepted_before <= T0.
    assert_eq!(
        store
            .abandon_orphaned_sync_jobs(T0 + 5, T0)
            .await
            .expect("sweep"),
        0
    );
    // The dying instance's lease still runs: only the stopped one's and nobody's.
    assert_eq!(
        store
            .abandon_orphaned_sync_jobs(T0 + 5, T0 + 1)
            .await
            .expect("sweep"),
        2
    );
    for id in [of_stopped.id, of_nobody.id] {
        let job = get(store, id).await;
        assert_eq!(job.state, JobState::Cancelled);
        assert_eq!(job.failure.map(|failure| failure.status), Some(499));
    }
    assert_eq!(get(store, of_dying.id).await.state, JobState::Queued);
    // Its lease lapsed: the dying instance's jobs go too; the one running elsewhere is
    // asked to stop.
    let after = T0 + ttl + 1;
    assert_eq!(
        store
            .abandon_orphaned_sync_jobs(after, after)
            .await
            .expect("sweep"),
        2
    );
    assert_eq!(get(store, of_dying.id).await.state, JobState::Cancelled);
    let running = get(store, of_dying_running.id).await;
    assert_eq!(running.state, JobState::Running);
    assert!(running.cancel_requested);
    assert_eq!(get(store, of_live.id).await.state, JobState::Queued);
    assert_eq!(
        get(store, async_of_stopped.id).await.state,
        JobState::Queued
    );
    // Asked once: a later sweep changes nothing more.
    assert_eq!(
        store
            .abandon_orphaned_sync_jobs(after + 1, after + 1)
            .await
            .expect("sweep"),
        0
    );
}

/// A finished job with a webhook URL has exactly one delivery, written by the call that
/// finished it (there when the call returns, created at the job's finish), with the
/// body byte for byte as both backends build it; a stale outcome adds none, and a job
/// without a URL has none.
pub async fn case_a_finished_job_writes_one_exact_delivery_with_its_outcome(store: &Store) {
    let mut hooked = new_job("m", 0);
    hooked.webhook_url = Some("http://hooks.example/in".to_owned());
    hooked.metadata = Some("{\"b\":[1,2],\"a\":\"é\\\"\"}".to_owned());
    let hooked = enqueue(store, hooked, T0).await;
    let plain = enqueue(store, new_job("m", 0), T0).await;
    for id in [hooked.id, plain.id] {
        claim(store, id, "w", T0 + 1).await;
    }
    let failed = store
        .fail(
            hooked.id,
            1,
            "w",
            super::failure(502, "bad \"gateway\""),
            T0 + 2,
        )
        .await
        .expect("fail")
        .expect("current attempt");
    assert_eq!(failed.finished_at, Some(T0 + 2));
    let deliveries = store.webhooks_for_job(hooked.id).await.expect("webhooks");
    assert_eq!(
        deliveries.len(),
        1,
        "one delivery, there when fail returned"
    );
    let delivery = &deliveries[0];
    assert_eq!(
        (delivery.created_at, delivery.next_attempt_at),
        (T0 + 2, T0 + 2)
    );
    assert_eq!(delivery.url, "http://hooks.example/in");
    let id = hooked.id;
    assert_eq!(
        delivery.payload,
        format!(
            "{{\"type\":\"job.failed\",\"timestamp\":\"2023-11-14T22:13:20.002Z\",\
             \"data\":{{\"id\":\"{id}\",\"state\":\"failed\",\"kind\":\"chat\",\"model\":\"m\",\
             \"attempts\":1,\"error\":{{\"status\":502,\"message\":\"bad \\\"gateway\\\"\"}},\
             \"metadata\":{{\"b\":[1,2],\"a\":\"é\\\"\"}},\"url\":\"/jobs/{id}\"}}}}"
        )
    );
    // A stale or repeated outcome finishes nothing, so writes nothing.
    assert!(
        store
            .complete(hooked.id, 1, "w", "{}".into(), T0 + 3)
            .await
            .expect("complete")
            .is_none()
    );
    assert!(
        store
            .cancel(hooked.id, T0 + 3, super::cancel_reason())
            .await
            .is_ok()
    );
    assert_eq!(
        store
            .webhooks_for_job(hooked.id)
            .await
            .expect("webhooks")
            .len(),
        1
    );

    store
        .complete(plain.id, 1, "w", "{}".into(), T0 + 2)
        .await
        .expect("complete")
        .expect("current attempt");
    assert!(
        store
            .webhooks_for_job(plain.id)
            .await
            .expect("webhooks")
            .is_empty()
    );
    assert_eq!(
        store.due_webhooks(T0 + 100, 10).await.expect("due").len(),
        1
    );
}

/// The running jobs of a target, with their owners, whichever instance runs them; jobs
/// queued, finished or running on another target are not among them.
pub async fn case_occupants_are_the_running_jobs_of_a_target(store: &Store) {
    let on_gpu = enqueue(store, super::keyed_job("m", "num_ctx=4096"), T0).await;
    let also_on_gpu = enqueue(store, new_job("n", 0), T0).await;
    let elsewhere = enqueue(store, new_job("m", 0), T0).await;
    let finished = enqueue(store, new_job("m", 0), T0).await;
    let queued = enqueue(store, new_job("m", 0), T0).await;
    for (id, owner, target) in [
        (on_gpu.id, "old/gpu/0", "gpu"),
        (also_on_gpu.id, "new/gpu/1", "gpu"),
        (elsewhere.id, "old/cpu/0", "cpu"),
        (finished.id, "old/gpu/1", "gpu"),
    ] {
        store
            .claim(ClaimParams {
                id,
                owner: owner.to_owned(),
                target: target.to_owned(),
                now: T0 + 1,
                lease_for_ms: LEASE_MS,
            })
            .await
            .expect("claim")
            .expect("claimable");
    }
    store
        .complete(finished.id, 1, "old/gpu/1", "{}".into(), T0 + 2)
        .await
        .expect("complete")
        .expect("current");
    let mut occupants = store.occupants("gpu").await.expect("occupants");
    occupants.sort_by_key(|occupant| occupant.id);
    let seen: Vec<(crate::JobId, &str, &str, &str)> = occupants
        .iter()
        .map(|o| {
            (
                o.id,
                o.model.as_str(),
                o.load_options.as_str(),
                o.lease_owner.as_str(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            (on_gpu.id, "m", "num_ctx=4096", "old/gpu/0"),
            (also_on_gpu.id, "n", "", "new/gpu/1"),
        ]
    );
    assert_eq!(get(store, queued.id).await.state, JobState::Queued);
    assert!(store.occupants("none").await.expect("occupants").is_empty());
}
