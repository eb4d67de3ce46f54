//! The backend conformance suite: one async function per behaviour every `Store` backend must
//! show, run by each backend's test harness on a fresh, empty database.
//!
//! A harness lists no cases itself: it defines a macro that turns case names into tests and
//! hands it to [`store_cases!`](crate::store_cases), so a case added here runs on every backend.
//! Cases that need to reopen the database take its URL instead of a store and are listed by
//! [`store_url_cases!`](crate::store_url_cases).
//!
//! Time is always passed in, so no case sleeps or measures time. Failures panic.

use std::collections::HashSet;

mod instances;
pub use instances::*;

use crate::{
    CancelOutcome, ClaimParams, Enqueued, Job, JobFailure, JobId, JobKind, JobState, Lease,
    LeaseHolder, ListParams, NewJob, QueueHead, Store,
};

/// Calls `$harness! { case, ... }` with every case that takes `&Store`.
#[macro_export]
macro_rules! store_cases {
    ($harness:ident) => {
        $harness! {
            case_enqueue_get_round_trip,
            case_enqueue_rejects_zero_max_attempts,
            case_enqueue_keeps_a_caller_chosen_id,
            case_idempotency_key_returns_existing_job,
            case_concurrent_idempotent_enqueues_make_one_row,
            case_enqueue_within_never_passes_the_limit,
            case_queue_heads_pick_best_per_model,
            case_queue_heads_give_each_callers_head,
            case_queue_heads_split_a_model_by_load_options,
            case_claim_records_its_target,
            case_queue_heads_respect_run_after,
            case_queue_depth_and_position,
            case_an_enqueue_knows_its_place_when_it_says_so,
            case_a_bad_enqueue_among_concurrent_ones_fails_alone,
            case_claim_takes_a_lease_once,
            case_a_claim_with_the_heads_after_it,
            case_concurrent_claims_have_one_winner,
            case_heartbeat_is_fenced,
            case_stale_attempt_is_fenced_after_reclaim,
            case_outcome_from_another_owner_is_fenced,
            case_complete_and_fail_are_terminal,
            case_retry_or_fail_until_exhausted,
            case_requeue_gives_the_attempt_back,
            case_cancel_in_each_state,
            case_cancel_requested_wins_over_retry_and_requeue,
            case_concurrent_cancel_and_claim_agree,
            case_recover_running,
            case_interruptions_spend_no_attempts_but_are_bounded,
            case_abandon_sync_jobs,
            case_rescue_expired_touches_only_expired_leases,
            case_prune_respects_limit_and_cutoff,
            case_list_filters,
            case_list_cursor_pagination,
            case_recover_running_owned_leaves_other_owners,
            case_finished_jobs_with_a_webhook_fill_the_outbox,
            case_webhook_claims_are_leased,
            case_queue_summary_groups_queued_jobs_and_commits_are_timed,
            case_concurrent_claimers_never_take_one_job_twice,
            case_text_is_ordered_bytewise,
            case_every_way_of_finishing_writes_one_delivery,
            case_target_lease_acquire_renew_refuse_take_over_release,
            case_orphaned_sync_jobs_are_abandoned_without_an_instance_lease,
            case_a_finished_job_writes_one_exact_delivery_with_its_outcome,
            case_occupants_are_the_running_jobs_of_a_target,
            case_api_keys_create_list_revoke,
            case_key_usage_adds_up_per_key_and_hour,
            case_files_are_recorded_listed_and_deleted,
            case_expired_files_are_found_soonest_first,
            case_batch_saves_are_guarded_by_the_status_read,
            case_batch_lines_are_enqueued_once,
            case_get_many_reads_the_jobs_that_exist,
        }
    };
}

/// Calls `$harness! { case, ... }` with every case that takes a database URL.
#[macro_export]
macro_rules! store_url_cases {
    ($harness:ident) => {
        $harness! {
            case_jobs_survive_reopen,
            case_two_handles_never_claim_one_job,
            case_stale_writes_from_another_handle_change_nothing_after_rescue,
            case_webhooks_claimed_by_two_handles_are_sent_once,
            case_idempotency_key_holds_across_handles,
            case_one_handle_wins_a_contested_target_lease,
            case_janitor_leader_is_one_handle_until_expiry,
            case_sync_jobs_are_abandoned_per_instance,
            case_api_keys_are_shared_between_handles,
        }
    };
}

/// Calls `$harness! { case, ... }` with every case (taking a database URL) that only a
/// backend built for several instances on one database passes: PostgreSQL. SQLite
/// serves one process; its queue limit is exact within it (the writer thread counts with
/// the insert) but counts another process's jobs only when its mirror reloads.
#[macro_export]
macro_rules! shared_database_cases {
    ($harness:ident) => {
        $harness! {
            case_enqueue_within_is_exact_across_handles,
        }
    };
}

/// Concurrent bounded enqueues fill the queue exactly to its limit: the count and the
/// insert are one step. A duplicate idempotency key still finds its job when the queue
/// is full, and a claimed job frees a place.
pub async fn case_enqueue_within_never_passes_the_limit(store: &Store) {
    let keyed = NewJob {
        idempotency_key: Some("kept".to_owned()),
        ..new_job("a", 0)
    };
    let first = store
        .enqueue_within(keyed.clone(), T0, 5)
        .await
        .expect("room")
        .job;
    for _ in 0..2 {
        store.enqueue(new_job("a", 0), T0).await.expect("enqueue");
    }
    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.enqueue_within(new_job("b", 0), T0 + i, 5).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("the task ran"));
    }
    let created = outcomes.iter().filter(|outcome| outcome.is_ok()).count();
    let refused = outcomes
        .iter()
        .filter(|outcome| matches!(outcome, Err(crate::Error::QueueFull { limit: 5 })))
        .count();
    assert_eq!((created, refused), (2, 18));
    assert_eq!(store.queue_depth().await.expect("depth"), 5);
    let again = store
        .enqueue_within(keyed, T0 + 50, 5)
        .await
        .expect("a known key is answered when full");
    assert_eq!((again.job.id, again.created), (first.id, false));
    claim(store, first.id, "w", T0 + 60).await;
    assert!(
        store
            .enqueue_within(new_job("c", 0), T0 + 70, 5)
            .await
            .is_ok_and(|enqueued| enqueued.created)
    );
    assert!(matches!(
        store.enqueue_within(new_job("c", 0), T0 + 80, 5).await,
        Err(crate::Error::QueueFull { .. })
    ));
}

/// A job for `model` whose load options are `options`.
fn keyed_job(model: &str, options: &str) -> NewJob {
    NewJob {
        load_options: options.to_owned(),
        ..new_job(model, 0)
    }
}

/// Jobs of one model with different load options are queued apart: one head each,
/// ordered by model, then options, each with its own depth.
pub async fn case_queue_heads_split_a_model_by_load_options(store: &Store) {
    let plain = enqueue(store, keyed_job("a", ""), T0).await;
    let wide = enqueue(store, keyed_job("a", "num_ctx=8192"), T0 + 1).await;
    enqueue(store, keyed_job("a", "num_ctx=8192"), T0 + 2).await;
    let other = enqueue(store, keyed_job("b", "num_ctx=8192"), T0 + 3).await;
    assert_eq!(wide.load_options, "num_ctx=8192");
    let got = store.get(wide.id).await.expect("get").expect("exists");
    assert_eq!(got.load_options, "num_ctx=8192");
    let heads = store.queue_heads(T0 + 10).await.expect("heads");
    let summary: Vec<(&str, &str, JobId, u64)> = heads
        .iter()
        .map(|h| {
            (
                h.model.as_str(),
                h.load_options.as_str(),
                h.best.id,
                h.depth,
            )
        })
        .collect();
    assert_eq!(
        summary,
        vec![
            ("a", "", plain.id, 1),
            ("a", "num_ctx=8192", wide.id, 2),
            ("b", "num_ctx=8192", other.id, 1),
        ]
    );
    claim(store, plain.id, "w", T0 + 10).await;
    let heads = store.queue_heads(T0 + 10).await.expect("heads");
    assert_eq!(heads.len(), 2);
    assert_eq!(heads[0].load_options, "num_ctx=8192");
}

/// A claim records the target the attempt runs on, and a job's target stays with it
/// after it finishes.
pub async fn case_claim_records_its_target(store: &Store) {
    let job = enqueue(store, new_job("a", 0), T0).await;
    assert_eq!(job.target, None);
    let claimed = store
        .claim(ClaimParams {
            id: job.id,
            owner: "instance/gpu1/0".to_owned(),
            target: "gpu1".to_owned(),
            now: T0 + 1,
            lease_for_ms: LEASE_MS,
        })
        .await
        .expect("claim")
        .expect("claimed");
    assert_eq!(claimed.target.as_deref(), Some("gpu1"));
    assert_eq!(claimed.lease_owner.as_deref(), Some("instance/gpu1/0"));
    let done = store
        .complete(job.id, 1, "instance/gpu1/0", "{}".to_owned(), T0 + 2)
        .await
        .expect("complete")
        .expect("completed");
    assert_eq!(done.target.as_deref(), Some("gpu1"));
}

/// Why the suite cancels jobs.
pub fn cancel_reason() -> JobFailure {
    JobFailure {
        status: 499,
        message: "cancelled by the test".to_owned(),
    }
}

/// An arbitrary fixed epoch for the suite's clock.
pub const T0: i64 = 1_700_000_000_000;
const LEASE_MS: i64 = 30_000;

/// A job for `model` with the given priority and otherwise plain settings.
pub fn new_job(model: &str, priority: i32) -> NewJob {
    NewJob {
        id: None,
        kind: JobKind::Chat,
        model: model.to_owned(),
        load_options: String::new(),
        payload: format!(r#"{{"model":"{model}","messages":[]}}"#),
        sync: false,
        priority,
        max_attempts: 3,
        idempotency_key: None,
        webhook_url: None,
        metadata: None,
        caller: None,
    }
}

async fn enqueue(store: &Store, new_job: NewJob, now: i64) -> Job {
    let enqueued = store.enqueue(new_job, now).await.expect("enqueue");
    assert!(enqueued.created);
    enqueued.job
}

/// Claims a queued job for `owner` on target `t` with a 30 s lease; panics if it is not
/// claimable. The backends' own tests use it too.
pub async fn claim(store: &Store, id: JobId, owner: &str, now: i64) -> Job {
    store
        .claim(ClaimParams {
            id,
            owner: owner.to_owned(),
            target: "t".to_owned(),
            now,
            lease_for_ms: LEASE_MS,
        })
        .await
        .expect("claim")
        .expect("job should be claimable")
}

async fn try_claim(store: &Store, id: JobId, owner: &str, now: i64) -> Option<Job> {
    store
        .claim(ClaimParams {
            id,
            owner: owner.to_owned(),
            target: "t".to_owned(),
            now,
            lease_for_ms: LEASE_MS,
        })
        .await
        .expect("claim")
}

async fn get(store: &Store, id: JobId) -> Job {
    store.get(id).await.expect("get").expect("job should exist")
}

fn failure(status: u16, message: &str) -> JobFailure {
    JobFailure {
        status,
        message: message.to_owned(),
    }
}

fn ids(jobs: &[Job]) -> Vec<JobId> {
    jobs.iter().map(|job| job.id).collect()
}

fn all(limit: u32) -> ListParams {
    ListParams {
        limit,
        ..ListParams::default()
    }
}

pub async fn case_enqueue_get_round_trip(store: &Store) {
    // Key order, spacing, escapes and non-ASCII text must come back exactly as sent.
    let payload = "{ \"stream\":false,\"model\" : \"llama3\",\n\t\"messages\":[{\"role\":\"user\",\
                   \"content\":\"h\\u00e9llo \u{1F600} 日本語 \\\"q\\\"\"}],\"a\":1 }";
    let submitted = NewJob {
        id: None,
        kind: JobKind::OpenAiChat,
        model: "llama3".to_owned(),
        load_options: String::new(),
        payload: payload.to_owned(),
        sync: false,
        priority: -7,
        max_attempts: 5,
        idempotency_key: Some("key-ü".to_owned()),
        webhook_url: Some("https://hooks.example/foreman".to_owned()),
        metadata: Some(r#"{"z":1,"a":[true,null]}"#.to_owned()),
        caller: Some(crate::JobCaller {
            name: "ci-bot".to_owned(),
            weight: 3,
        }),
    };
    let Enqueued { job, created, .. } = store.enqueue(submitted, T0).await.expect("enqueue");
    assert!(created);
    assert_eq!(job.kind, JobKind::OpenAiChat);
    assert_eq!(job.model, "llama3");
    assert_eq!(job.payload.as_bytes(), payload.as_bytes());
    assert_eq!(
        job.caller,
        Some(crate::JobCaller {
            name: "ci-bot".to_owned(),
            weight: 3
        })
    );
    assert_eq!(job.state, JobState::Queued);
    assert_eq!(job.priority, -7);
    assert_eq!(job.attempts, 0);
    assert_eq!(job.max_attempts, 5);
    assert_eq!(job.lease_owner, None);
    assert_eq!(job.lease_expires_at, None);
    assert_eq!(job.run_after, T0);
    assert!(!job.cancel_requested);
    assert_eq!(job.result, None);
    assert_eq!(job.failure, None);
    assert_eq!(job.idempotency_key.as_deref(), Some("key-ü"));
    assert_eq!(
        job.webhook_url.as_deref(),
        Some("https://hooks.example/foreman")
    );
    assert_eq!(job.metadata.as_deref(), Some(r#"{"z":1,"a":[true,null]}"#));
    assert_eq!(job.created_at, T0);
    assert_eq!(job.started_at, None);
    assert_eq!(job.finished_at, None);

    assert_eq!(get(store, job.id).await, job);
    let by_text: JobId = job.id.to_string().parse().expect("id text");
    assert_eq!(get(store, by_text).await, job);
    assert_eq!(store.get(JobId::generate()).await.expect("get"), None);

    // Every kind survives the trip.
    for kind in JobKind::ALL {
        let stored = enqueue(
            store,
            NewJob {
                kind,
                ..new_job("kinds", 0)
            },
            T0,
        )
        .await;
        assert_eq!(get(store, stored.id).await.kind, kind);
    }
}

/// A caller may choose the id (to wait on the job before it exists); it is kept.
pub async fn case_enqueue_keeps_a_caller_chosen_id(store: &Store) {
    let id = JobId::generate();
    let job = enqueue(
        store,
        NewJob {
            id: Some(id),
            ..new_job("m", 0)
        },
        T0,
    )
    .await;
    assert_eq!(job.id, id);
    assert_eq!(store.get(id).await.expect("get").expect("stored").id, id);
}

pub async fn case_enqueue_rejects_zero_max_attempts(store: &Store) {
    let new_job = NewJob {
        max_attempts: 0,
        ..new_job("m", 0)
    };
    let error = store.enqueue(new_job, T0).await.unwrap_err();
    assert!(matches!(error, crate::Error::InvalidInput(_)), "{error}");
    assert_eq!(store.queue_depth().await.expect("depth"), 0);
}

pub async fn case_idempotency_key_returns_existing_job(store: &Store) {
    let first = store
        .enqueue(
            NewJob {
                idempotency_key: Some("order-1".to_owned()),
                ..new_job("m", 0)
            },
            T0,
        )
        .await
        .expect("first enqueue");
    assert!(first.created);

    let second = store
        .enqueue(
            NewJob {
                idempotency_key: Some("order-1".to_owned()),
                payload: r#"{"different":true}"#.to_owned(),
                priority: 9,
                ..new_job("other-model", 0)
            },
            T0 + 5,
        )
        .await
        .expect("second enqueue");
    assert!(!second.created);
    assert_eq!(second.job, first.job);

    // The key still points at the job after it moves on.
    claim(store, first.job.id, "w", T0 + 10).await;
    let third = store
        .enqueue(
            NewJob {
                idempotency_key: Some("order-1".to_owned()),
                ..new_job("m", 0)
            },
            T0 + 20,
        )
        .await
        .expect("third enqueue");
    assert!(!third.created);
    assert_eq!(third.job.id, first.job.id);
    assert_eq!(third.job.state, JobState::Running);

    // Other keys and absent keys make new jobs.
    let other = store
        .enqueue(
            NewJob {
                idempotency_key: Some("order-2".to_owned()),
                ..new_job("m", 0)
            },
            T0,
        )
        .await
        .expect("other key");
    assert!(other.created);
    let keyless_a = enqueue(store, new_job("m", 0), T0).await;
    let keyless_b = enqueue(store, new_job("m", 0), T0).await;
    assert_ne!(keyless_a.id, keyless_b.id);
    assert_eq!(store.list(all(100)).await.expect("list").len(), 4);
}

pub async fn case_concurrent_idempotent_enqueues_make_one_row(store: &Store) {
    const SUBMITS: usize = 16;
    let mut tasks = Vec::new();
    for submit_idx in 0..SUBMITS {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let new_job = NewJob {
                idempotency_key: Some("same-key".to_owned()),
                payload: format!(r#"{{"submit":{submit_idx}}}"#),
                ..new_job("m", 0)
            };
            store.enqueue(new_job, T0).await.expect("enqueue")
        }));
    }
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.expect("task"));
    }
    let n_created = results.iter().filter(|result| result.created).count();
    assert_eq!(n_created, 1);
    let distinct: HashSet<JobId> = results.iter().map(|result| result.job.id).collect();
    assert_eq!(distinct.len(), 1);
    let winner = results
        .iter()
        .find(|result| result.created)
        .expect("one created");
    assert!(
        results
            .iter()
            .all(|result| result.job.payload == winner.job.payload)
    );
    assert_eq!(store.list(all(100)).await.expect("list").len(), 1);
    assert_eq!(store.queue_depth().await.expect("depth"), 1);
}

/// A job enqueued for `caller` with `weight`.
fn job_of(model: &str, priority: i32, caller: Option<(&str, u32)>) -> NewJob {
    NewJob {
        caller: caller.map(|(name, weight)| crate::JobCaller {
            name: name.to_owned(),
            weight,
        }),
        ..new_job(model, priority)
    }
}

pub async fn case_queue_heads_give_each_callers_head(store: &Store) {
    let flood_old = enqueue(store, job_of("a", 0, Some(("flood", 1))), T0).await;
    let flood_new = enqueue(store, job_of("a", 0, Some(("flood", 1))), T0 + 1).await;
    let flood_high = enqueue(store, job_of("a", 2, Some(("flood", 1))), T0 + 2).await;
    let chat = enqueue(store, job_of("a", 0, Some(("chat", 3))), T0 + 3).await;
    let open = enqueue(store, job_of("a", 0, None), T0 + 4).await;
    let backing_off = enqueue(store, job_of("a", 9, Some(("chat", 3))), T0 + 5).await;
    let other_model = enqueue(store, job_of("b", 0, Some(("chat", 3))), T0 + 6).await;
    // The chat caller's priority-9 job backs off: it neither leads nor counts.
    claim(store, backing_off.id, "w", T0 + 10).await;
    store
        .retry_or_fail(
            backing_off.id,
            1,
            "w",
            JobFailure {
                status: 503,
                message: "busy".to_owned(),
            },
            T0 + 1_000,
            T0 + 11,
        )
        .await
        .expect("retry");

    let reference = |job: &Job| crate::JobRef {
        id: job.id,
        priority: job.priority,
        created_at: job.created_at,
    };
    let heads = store.queue_heads(T0 + 20).await.expect("heads");
    assert_eq!(heads.len(), 2);
    assert_eq!(heads[0].best, reference(&flood_high));
    assert_eq!(heads[0].depth, 5);
    assert_eq!(heads[0].oldest_created_at, T0);
    assert_eq!(
        heads[0].callers,
        vec![
            crate::CallerHead {
                caller: None,
                weight: 1,
                best: reference(&open),
                depth: 1,
            },
            crate::CallerHead {
                caller: Some("chat".to_owned()),
                weight: 3,
                best: reference(&chat),
                depth: 1,
            },
            crate::CallerHead {
                caller: Some("flood".to_owned()),
                weight: 1,
                best: reference(&flood_high),
                depth: 3,
            },
        ]
    );
    assert_eq!(heads[1].callers.len(), 1);
    assert_eq!(heads[1].callers[0].best, reference(&other_model));

    // A caller whose jobs all run leaves the list; the next of another takes its place.
    claim(store, chat.id, "w", T0 + 20).await;
    claim(store, flood_high.id, "w", T0 + 20).await;
    let heads = store.queue_heads(T0 + 20).await.expect("heads");
    let callers: Vec<(Option<&str>, crate::JobId)> = heads[0]
        .callers
        .iter()
        .map(|head| (head.caller.as_deref(), head.best.id))
        .collect();
    assert_eq!(callers, [(None, open.id), (Some("flood"), flood_old.id)]);
    assert_eq!(heads[0].best.id, flood_old.id);
    // Once its backoff is over, the chat caller's job is back, at its priority.
    let heads = store.queue_heads(T0 + 1_000).await.expect("heads");
    assert_eq!(heads[0].best.id, backing_off.id);
    assert_eq!(heads[0].callers[1].best.id, backing_off.id);
    assert_eq!(heads[0].callers[2].best.id, flood_old.id);
    claim(store, flood_old.id, "w", T0 + 1_000).await;
    let heads = store.queue_heads(T0 + 1_000).await.expect("heads");
    assert_eq!(heads[0].callers[2].best.id, flood_new.id);
    assert_eq!(heads[0].callers[2].depth, 1);
}

pub async fn case_queue_heads_pick_best_per_model(store: &Store) {
    assert_eq!(store.queue_heads(T0).await.expect("heads"), []);

    let a_old_low = enqueue(store, new_job("a", 0), T0).await;
    let a_new_high = enqueue(store, new_job("a", 5), T0 + 10).await;
    let a_newer_high = enqueue(store, new_job("a", 5), T0 + 20).await;
    let a_low = enqueue(store, new_job("a", -1), T0 + 30).await;
    // Same priority and time in model b: the lower id (enqueued first) wins.
    let b_first = enqueue(store, new_job("b", 1), T0 + 40).await;
    let b_second = enqueue(store, new_job("b", 1), T0 + 40).await;
    assert!(b_first.id < b_second.id);
    // A model whose only job is running has no head.
    let c_running = enqueue(store, new_job("c", 100), T0).await;
    claim(store, c_running.id, "w", T0 + 1).await;
    // A model whose only job finished has no head either.
    let d_done = enqueue(store, new_job("d", 100), T0).await;
    store
        .cancel(d_done.id, T0 + 1, cancel_reason())
        .await
        .expect("cancel queued job");

    let heads = store.queue_heads(T0 + 100).await.expect("heads");
    assert_eq!(
        heads,
        vec![
            QueueHead {
                model: "a".to_owned(),
                load_options: String::new(),
                best: crate::JobRef {
                    id: a_new_high.id,
                    priority: 5,
                    created_at: T0 + 10,
                },
                oldest_created_at: T0,
                depth: 4,
                callers: vec![crate::CallerHead {
                    caller: None,
                    weight: 1,
                    best: crate::JobRef {
                        id: a_new_high.id,
                        priority: 5,
                        created_at: T0 + 10,
                    },
                    depth: 4,
                }],
            },
            QueueHead {
                model: "b".to_owned(),
                load_options: String::new(),
                best: crate::JobRef {
                    id: b_first.id,
                    priority: 1,
                    created_at: T0 + 40,
                },
                oldest_created_at: T0 + 40,
                depth: 2,
                callers: vec![crate::CallerHead {
                    caller: None,
                    weight: 1,
                    best: crate::JobRef {
                        id: b_first.id,
                        priority: 1,
                        created_at: T0 + 40,
                    },
                    depth: 2,
                }],
            },
        ]
    );

    // Once the best job runs, the next one by priority then age takes its place.
    claim(store, a_new_high.id, "w", T0 + 100).await;
    let heads = store.queue_heads(T0 + 100).await.expect("heads");
    assert_eq!(heads[0].best.id, a_newer_high.id);
    assert_eq!(heads[0].depth, 3);
    assert_eq!(heads[0].oldest_created_at, T0);
    claim(store, a_newer_high.id, "w", T0 + 100).await;
    claim(store, a_old_low.id, "w", T0 + 100).await;
    let heads = store.queue_heads(T0 + 100).await.expect("heads");
    assert_eq!(heads[0].best.id, a_low.id);
    assert_eq!(heads[0].oldest_created_at, T0 + 30);
    assert_eq!(heads[0].depth, 1);
}

pub async fn case_queue_heads_respect_run_after(store: &Store) {
    let backing_off = enqueue(store, new_job("a", 10), T0).await;
    let plain = enqueue(store, new_job("a", 0), T0 + 5).await;
    let only_b = enqueue(store, new_job("b", 0), T0 + 6).await;
    claim(store, backing_off.id, "w", T0 + 10).await;
    store
        .retry_or_fail(
            backing_off.id,
            1,
            "w",
            failure(503, "busy"),
            T0 + 1_000,
            T0 + 20,
        )
        .await
        .expect("retry")
        .expect("attempt current");
    claim(store, only_b.id, "w", T0 + 10).await;
    store
        .retry_or_fail(only_b.id, 1, "w", failure(503, "busy"), T0 + 2_000, T0 + 20)
        .await
        .expect("retry")
        .expect("attempt current");

    // Before the backoff ends, only the plain job is eligible, and model b has none.
    let heads = store.queue_heads(T0 + 999).await.expect("heads");
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].model, "a");
    assert_eq!(heads[0].best.id, plain.id);
    assert_eq!(heads[0].depth, 1);
    assert_eq!(heads[0].oldest_created_at, T0 + 5);
    // Not eligible means not claimable either.
    assert_eq!(try_claim(store, backing_off.id, "w", T0 + 999).await, None);
    // All queued jobs still count towards the depth.
    assert_eq!(store.queue_depth().await.expect("depth"), 3);

    // At run_after the retried job is back, and outranks the plain one.
    let heads = store.queue_heads(T0 + 1_000).await.expect("heads");
    assert_eq!(heads.len(), 1);
    assert_eq!(heads[0].best.id, backing_off.id);
    assert_eq!(heads[0].depth, 2);
    assert_eq!(heads[0].oldest_created_at, T0);

    let heads = store.queue_heads(T0 + 2_000).await.expect("heads");
    let models: Vec<&str> = heads.iter().map(|head| head.model.as_str()).collect();
    assert_eq!(models, ["a", "b"]);
}

pub async fn case_queue_depth_and_position(store: &Store) {
    assert_eq!(store.queue_depth().await.expect("depth"), 0);
    let low = enqueue(store, new_job("a", 0), T0).await;
    let high_late = enqueue(store, new_job("b", 9), T0 + 50).await;
    let high_early = enqueue(store, new_job("a", 9), T0 + 10).await;
    let low_same_time = enqueue(store, new_job("c", 0), T0).await;
    assert_eq!(store.queue_depth().await.expect("depth"), 4);

    let position = |id| async move { store.queue_position(id).await.expect("position") };
    assert_eq!(position(high_early.id).await, Some(0));
    assert_eq!(position(high_late.id).await, Some(1));
    assert_eq!(position(low.id).await, Some(2));
    assert_eq!(position(low_same_time.id).await, Some(3));

    claim(store, high_early.id, "w", T0 + 100).await;
    assert_eq!(position(high_early.id).await, None);
    assert_eq!(position(high_late.id).await, Some(0));
    assert_eq!(position(low_same_time.id).await, Some(2));
    assert_eq!(store.queue_depth().await.expect("depth"), 3);
    assert_eq!(position(JobId::generate()).await, None);
}

/// The place an enqueue returns ([`Enqueued::position`]) is the one `queue_position`
/// gives for the job right after; PostgreSQL's group commit always gives it.
pub async fn case_an_enqueue_knows_its_place_when_it_says_so(store: &Store) {
    for (i, priority) in [0, 5, 0, -3, 5, 9, 0].into_iter().enumerate() {
        let now = T0 + 100 - 10 * i as i64;
        let enqueued = store
            .enqueue_within(new_job("m", priority), now, 100)
            .await
            .expect("enqueue");
        if let Some(position) = enqueued.position {
            assert_eq!(
                store
                    .queue_position(enqueued.job.id)
                    .await
                    .expect("position"),
                Some(position),
                "job {i}"
            );
        }
        if matches!(store, Store::Postgres(_)) {
            assert!(enqueued.position.is_some(), "job {i}");
        }
    }
}

/// An enqueue that cannot be made (its caller-chosen id is taken) fails on its own: the
/// enqueues made at the same moment are all made, whatever group they shared.
pub async fn case_a_bad_enqueue_among_concurrent_ones_fails_alone(store: &Store) {
    let taken = enqueue(store, new_job("m", 0), T0).await.id;
    let tasks: Vec<_> = (0..24)
        .map(|i| {
            let store = store.clone();
            let new_job = NewJob {
                id: (i % 8 == 3).then_some(taken),
                ..new_job("m", 0)
            };
            tokio::spawn(async move { store.enqueue_within(new_job, T0 + i, 1_000).await })
        })
        .collect();
    let (mut made, mut failed) = (0, 0);
    for task in tasks {
        match task.await.expect("the task ran") {
            Ok(enqueued) => {
                assert!(enqueued.created);
                assert_ne!(enqueued.job.id, taken);
                made += 1;
            }
            Err(_) => failed += 1,
        }
    }
    assert_eq!((made, failed), (21, 3));
    assert_eq!(store.queue_depth().await.expect("depth"), 22);
}

/// `claim_and_read_heads` claims as `claim` does and gives the heads as `queue_heads`
/// gives them after the claim; a claim that loses gives `None` and the heads all the same.
pub async fn case_a_claim_with_the_heads_after_it(store: &Store) {
    let first = enqueue(store, new_job("a", 0), T0).await;
    let second = enqueue(store, new_job("a", 0), T0 + 1).await;
    let other = enqueue(store, new_job("b", 5), T0 + 2).await;
    let params = |id: JobId| ClaimParams {
        id,
        owner: "i/t/0".to_owned(),
        target: "t".to_owned(),
        now: T0 + 10,
        lease_for_ms: 30_000,
    };
    let (claimed, heads) = store
        .claim_and_read_heads(params(first.id))
        .await
        .expect("claim");
    let claimed = claimed.expect("the first claim wins");
    assert_eq!((claimed.id, claimed.state), (first.id, JobState::Running));
    let heads = heads.expect("heads read");
    assert_eq!(heads, store.queue_heads(T0 + 10).await.expect("heads"));
    let bests: Vec<JobId> = heads.iter().map(|head| head.best.id).collect();
    assert_eq!(bests, [second.id, other.id]);

    let (again, heads) = store
        .claim_and_read_heads(params(first.id))
        .await
        .expect("claim");
    assert_eq!(again, None);
    assert_eq!(heads.expect("heads read").len(), 2);
}

pub async fn case_claim_takes_a_lease_once(store: &Store) {
    let job = enqueue(store, new_job("m", 0), T0).await;
    assert_eq!(try_claim(store, JobId::generate(), "w", T0).await, None);

    let claimed = claim(store, job.id, "worker-1", T0 + 7).await;
    assert_eq!(claimed.state, JobState::Running);
    assert_eq!(claimed.attempts, 1);
    assert_eq!(claimed.lease_owner.as_deref(), Some("worker-1"));
    assert_eq!(claimed.lease_expires_at, Some(T0 + 7 + LEASE_MS));
    assert_eq!(claimed.started_at, Some(T0 + 7));
    assert_eq!(claimed.finished_at, None);
    assert_eq!(get(store, job.id).await, claimed);

    assert_eq!(try_claim(store, job.id, "worker-2", T0 + 8).await, None);

    // started_at keeps the first attempt's start.
    store
        .retry_or_fail(job.id, 1, "worker-1", failure(503, "busy"), T0 + 9, T0 + 9)
        .await
        .expect("retry")
        .expect("attempt current");
    let second = claim(store, job.id, "worker-2", T0 + 20).await;
    assert_eq!(second.attempts, 2);
    assert_eq!(second.started_at, Some(T0 + 7));
    assert_eq!(second.lease_owner.as_deref(), Some("worker-2"));

    let bad_lease = store
        .claim(ClaimParams {
            id: job.id,
            owner: "w".to_owned(),
            target: "t".to_owned(),
            now: T0,
            lease_for_ms: 0,
        })
        .await;
    assert!(matches!(bad_lease, Err(crate::Error::InvalidInput(_))));
}

pub async fn case_concurrent_claims_have_one_winner(store: &Store) {
    const JOBS: usize = 10;
    const CLAIMERS: usize = 4;
    for _ in 0..JOBS {
        let job = enqueue(store, new_job("m", 0), T0).await;
        let mut tasks = Vec::new();
        for claimer_idx in 0..CLAIMERS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move {
                store
                    .claim(ClaimParams {
                        id: job.id,
                        owner: format!("worker-{claimer_idx}"),
                        target: "t".to_owned(),
                        now: T0 + 1,
                        lease_for_ms: LEASE_MS,
                    })
                    .await
                    .expect("claim")
            }));
        }
        let mut winners = Vec::new();
        for task in tasks {
            if let Some(claimed) = task.await.expect("task") {
                winners.push(claimed);
            }
        }
        assert_eq!(winners.len(), 1);
        let stored = get(store, job.id).await;
        assert_eq!(stored.attempts, 1);
        assert_eq!(stored.lease_owner, winners[0].lease_owner);
    }
}

pub async fn case_heartbeat_is_fenced(store: &Store) {
    let job = enqueue(store, new_job("m", 0), T0).await;
    assert!(
        !store
            .heartbeat(job.id, 0, "w", T0, LEASE_MS)
            .await
            .expect("heartbeat")
    );
    claim(store, job.id, "w", T0).await;

    assert!(
        store
            .heartbeat(job.id, 1, "w", T0 + 10_000, LEASE_MS)
            .await
            .expect("heartbeat")
    );
    assert_eq!(
        get(store, job.id).await.lease_expires_at,
        Some(T0 + 10_000 + LEASE_MS)
    );
    // A late heartbeat carrying an older time never shortens the lease.
    assert!(
        store
            .heartbeat(job.id, 1, "w", T0 + 5_000, LEASE_MS)
            .await
            .expect("heartbeat")
    );
    assert_eq!(
        get(store, job.id).await.lease_expires_at,
        Some(T0 + 10_000 + LEASE_MS)
    );
    // Wrong owner or wrong attempt: refused, unchanged.
    assert!(
        !store
            .heartbeat(job.id, 1, "other", T0 + 20_000, LEASE_MS)
            .await
            .expect("heartbeat")
    );
    assert!(
        !store
            .heartbeat(job.id, 2, "w", T0 + 20_000, LEASE_MS)
            .await
            .expect("heartbeat")
    );
    assert_eq!(
        get(store, job.id).await.lease_expires_at,
        Some(T0 + 10_000 + LEASE_MS)
    );
    // Not running any more: refused.
    store
        .complete(job.id, 1, "w", "{}".to_owned(), T0 + 30_000)
        .await
        .expect("complete")
        .expect("attempt current");
    assert!(
        !store
            .heartbeat(job.id, 1, "w", T0 + 31_000, LEASE_MS)
            .await
            .expect("heartbeat")
    );
    assert!(
        !store
            .heartbeat(JobId::generate(), 1, "w", T0, LEASE_MS)
            .await
            .expect("heartbeat")
    );
}

pub async fn case_stale_attempt_is_fenced_after_reclaim(store: &Store) {
    let job = enqueue(store, new_job("m", 0), T0).await;
    let first = claim(store, job.id, "worker-a", T0).await;
    assert_eq!(first.attempts, 1);

    // worker-a goes silent; its lease lapses and worker-b takes the job.
    let lapsed = T0 + LEASE_MS + 1;
    assert_eq!(store.rescue_expired(lapsed).await.expect("rescue"), 1);
    let second = claim(store, job.id, "worker-b", lapsed).await;
    assert_eq!(second.attempts, 2);

    // Everything worker-a still tries with attempt 1 is refused and changes nothing.
    let now = lapsed + 1;
    assert!(
        !store
            .heartbeat(job.id, 1, "worker-a", now, LEASE_MS)
            .await
            .expect("heartbeat")
    );
    assert_eq!(
        store
            .complete(job.id, 1, "worker-a", r#"{"stale":true}"#.to_owned(), now)
            .await
            .expect("complete"),
        None
    );
    assert_eq!(
        store
            .fail(job.id, 1, "worker-a", failure(500, "stale"), now)
            .await
            .expect("fail"),
        None
    );
    assert_eq!(
        store
            .retry_or_fail(job.id, 1, "worker-a", failure(503, "stale"), now, now)
            .await
            .expect("retry"),
        None
    );
    assert_eq!(
        store
            .requeue(job.id, 1, "worker-a", now)
            .await
            .expect("requeue"),
        None
    );
    assert_eq!(
        store
            .finish_cancelled(job.id, 1, "worker-a", now)
            .await
            .expect("finish_cancelled"),
        None
    );
    assert_eq!(get(store, job.id).await, second);

    // worker-b's attempt is the one that counts.
    let done = store
        .complete(job.id, 2, "worker-b", r#"{"done":true}"#.to_owned(), now)
        .await
        .expect("complete")
        .expect("attempt current");
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result.as_deref(), Some(r#"{"done":true}"#));
    // A finished job refuses every attempt number.
    assert_eq!(
        store
            .fail(job.id, 2, "worker-b", failure(500, "late"), now)
            .await
            .expect("fail"),
        None
    );
    assert_eq!(get(store, job.id).await, done);
}

/// The outcomes a worker records for its running attempt, for cases that try each.
#[derive(Debug, Clone, Copy)]
enum Outcome {
    Complete,
    CompleteWithArtifacts,
    Fail,
    RetryOrFail,
    Requeue,
    FinishCancelled,
}

impl Outcome {
    const ALL: [Outcome; 6] = [
        Outcome::Complete,
        Outcome::CompleteWithArtifacts,
        Outcome::Fail,
        Outcome::RetryOrFail,
        Outcome::Requeue,
        Outcome::FinishCancelled,
    ];

    /// Records this outcome for attempt `attempt` of job `id`, presented by `owner`.
    async fn present(
        self,
        store: &Store,
        id: JobId,
        attempt: u32,
        owner: &str,
        now: i64,
    ) -> Option<Job> {
        let recorded = match self {
            Outcome::Complete => {
                store
                    .complete(id, attempt, owner, "{}".to_owned(), now)
                    .await
            }
            Outcome::CompleteWithArtifacts => {
                store
                    .complete_with_artifacts(
                        id,
                        attempt,
                        owner,
                        r#"[{"path":"r"}]"#.to_owned(),
                        now,
                    )
                    .await
            }
            Outcome::Fail => {
                store
                    .fail(id, attempt, owner, failure(400, "bad"), now)
                    .await
            }
            Outcome::RetryOrFail => {
                store
                    .retry_or_fail(id, attempt, owner, failure(503, "busy"), now, now)
                    .await
            }
            Outcome::Requeue => store.requeue(id, attempt, owner, now).await,
            Outcome::FinishCancelled => store.finish_cancelled(id, attempt, owner, now).await,
        };
        recorded.unwrap_or_else(|error| panic!("{self:?}: {error}"))
    }

    /// The state this outcome leaves a job in that has attempts left and no cancel request.
    fn state(self) -> JobState {
        match self {
            Outcome::Complete | Outcome::CompleteWithArtifacts => JobState::Succeeded,
            Outcome::Fail => JobState::Failed,
            Outcome::RetryOrFail | Outcome::Requeue => JobState::Queued,
            Outcome::FinishCancelled => JobState::Cancelled,
        }
    }
}

/// An outcome that presents the current attempt but another lease owner (another slot or
/// target of the same instance, or another instance) is refused and changes nothing, exactly
/// like a stale attempt; the rightful owner's outcome then counts.
pub async fn case_outcome_from_another_owner_is_fenced(store: &Store) {
    const OWNER: &str = "foreman-1/gpu0/0";
    const OTHERS: [&str; 4] = [
        "foreman-1/gpu0/1",
        "foreman-1/gpu1/0",
        "foreman-2/gpu0/0",
        "",
    ];
    for outcome in Outcome::ALL {
        let job = enqueue(store, new_job("m", 0), T0).await;
        let claimed = claim(store, job.id, OWNER, T0 + 1).await;
        assert_eq!(claimed.attempts, 1);
        for other in OTHERS {
            assert_eq!(
                outcome.present(store, job.id, 1, other, T0 + 2).await,
                None,
                "{outcome:?} presented by {other:?}"
            );
        }
        assert_eq!(get(store, job.id).await, claimed, "{outcome:?}");
        // The lease is still the owner's to extend.
        assert!(
            store
                .heartbeat(job.id, 1, OWNER, T0 + 3, LEASE_MS)
                .await
                .expect("heartbeat"),
            "{outcome:?}"
        );

        let recorded = outcome
            .present(store, job.id, 1, OWNER, T0 + 4)
            .await
            .unwrap_or_else(|| panic!("{outcome:?} by the owner is refused"));
        assert_eq!(recorded.state, outcome.state(), "{outcome:?}");
        assert_eq!(recorded.lease_owner, None, "{outcome:?}");
        assert_eq!(recorded.lease_expires_at, None, "{outcome:?}");
        assert_eq!(get(store, job.id).await, recorded, "{outcome:?}");
    }
}

pub async fn case_complete_and_fail_are_terminal(store: &Store) {
    let succeeding = enqueue(store, new_job("m", 0), T0).await;
    claim(store, succeeding.id, "w", T0 + 1).await;
    // A previous attempt's error does not stick to a success.
    store
        .retry_or_fail(succeeding.id, 1, "w", failure(503, "busy"), T0 + 2, T0 + 2)
        .await
        .expect("retry")
        .expect("attempt current");
    claim(store, succeeding.id, "w", T0 + 3).await;
    let body = r#"{"message":{"role":"assistant","content":"hé"},"done":true}"#;
    let done = store
        .complete(succeeding.id, 2, "w", body.to_owned(), T0 + 4)
        .await
        .expect("complete")
        .expect("attempt current");
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result.as_deref(), Some(body));
    assert_eq!(done.failure, None);
    assert_eq!(done.finished_at, Some(T0 + 4));
    assert_eq!(done.lease_owner, None);
    assert_eq!(done.lease_expires_at, None);
    assert_eq!(get(store, succeeding.id).await, done);
    assert_eq!(
        store
            .complete(succeeding.id, 2, "w", "{}".to_owned(), T0 + 5)
            .await
            .expect("complete"),
        None
    );

    let failing = enqueue(store, new_job("m", 0), T0).await;
    // A queued job cannot be finished: it has no current attempt.
    assert_eq!(
        store
            .fail(failing.id, 0, "w", failure(400, "bad"), T0)
            .await
            .expect("fail"),
        None
    );
    claim(store, failing.id, "w", T0 + 1).await;
    let failed = store
        .fail(
            failing.id,
            1,
            "w",
            failure(404, "model \"x\" not found"),
            T0 + 2,
        )
        .await
        .expect("fail")
        .expect("attempt current");
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.failure, Some(failure(404, "model \"x\" not found")));
    assert_eq!(failed.finished_at, Some(T0 + 2));
    assert_eq!(failed.lease_owner, None);
    assert_eq!(failed.result, None);
    // Terminal: not claimable, not retryable.
    assert_eq!(try_claim(store, failing.id, "w", T0 + 3).await, None);
    assert_eq!(
        store
            .retry_or_fail(failing.id, 1, "w", failure(503, "x"), T0, T0 + 3)
            .await
            .expect("retry"),
        None
    );
    assert_eq!(get(store, failing.id).await, failed);
}

pub async fn case_retry_or_fail_until_exhausted(store: &Store) {
    let job = enqueue(store, new_job("m", 0), T0).await;
    assert_eq!(job.max_attempts, 3);
    let mut now = T0;
    for attempt in 1..=2u32 {
        now += 100;
        let running = claim(store, job.id, "w", now).await;
        assert_eq!(running.attempts, attempt);
        let backoff_until = now + 1_000 * i64::from(attempt);
        let retried = store
            .retry_or_fail(
                job.id,
                attempt,
                "w",
                failure(503, "upstream busy"),
                backoff_until,
                now + 1,
            )
            .await
            .expect("retry")
            .expect("attempt current");
        assert_eq!(retried.state, JobState::Queued);
        assert_eq!(retried.attempts, attempt);
        assert_eq!(retried.run_after, backoff_until);
        assert_eq!(retried.failure, Some(failure(503, "upstream busy")));
        assert_eq!(retried.finished_at, None);
        assert_eq!(retried.lease_owner, None);
        assert_eq!(retried.lease_expires_at, None);
        now = backoff_until;
    }
    now += 100;
    let last = claim(store, job.id, "w", now).await;
    assert_eq!(last.attempts, 3);
    let failed = store
        .retry_or_fail(
            job.id,
            3,
            "w",
            failure(502, "connection reset"),
            now + 5_000,
            now + 1,
        )
        .await
        .expect("retry")
        .expect("attempt current");
    assert_eq!(failed.state, JobState::Failed);
    assert_eq!(failed.attempts, 3);
    assert_eq!(failed.failure, Some(failure(502, "connection reset")));
    assert_eq!(failed.finished_at, Some(now + 1));
    assert_eq!(failed.lease_owner, None);
    assert_eq!(try_claim(store, job.id, "w", now + 10_000).await, None);
}

pub async fn case_requeue_gives_the_attempt_back(store: &Store) {
    let job = enqueue(
        store,
        NewJob {
            max_attempts: 1,
            ..new_job("m", 0)
        },
        T0,
    )
    .await;
    for round in 0..3 {
        let now = T0 + 10 * round;
        claim(store, job.id, "w", now).await;
        let requeued = store
            .requeue(job.id, 1, "w", now + 1)
            .await
            .expect("requeue")
            .expect("attempt current");
        assert_eq!(requeued.state, JobState::Queued);
        assert_eq!(requeued.attempts, 0);
        assert_eq!(requeued.lease_owner, None);
        assert_eq!(requeued.lease_expires_at, None);
        assert_eq!(requeued.finished_at, None);
        assert_eq!(requeued.failure, None);
    }
    // The single allowed attempt is still available and can succeed.
    let running = claim(store, job.id, "w", T0 + 100).await;
    assert_eq!(running.attempts, 1);
    assert_eq!(running.started_at, Some(T0));
    let done = store
        .complete(job.id, 1, "w", "{}".to_owned(), T0 + 101)
        .await
        .expect("complete")
        .expect("attempt current");
    assert_eq!(done.state, JobState::Succeeded);
}

pub async fn case_cancel_in_each_state(store: &Store) {
    assert_eq!(
        store
            .cancel(JobId::generate(), T0, cancel_reason())
            .await
            .expect("cancel unknown"),
        CancelOutcome::NotFound
    );

    // Queued: cancelled at once, and no longer claimable or counted.
    let queued = enqueue(store, new_job("m", 0), T0).await;
    let CancelOutcome::Cancelled(cancelled) = store
        .cancel(queued.id, T0 + 1, cancel_reason())
        .await
        .expect("cancel")
    else {
        panic!("a queued job is cancelled outright");
    };
    assert_eq!(cancelled.state, JobState::Cancelled);
    assert_eq!(cancelled.finished_at, Some(T0 + 1));
    assert!(!cancelled.cancel_requested);
    assert_eq!(cancelled.failure, Some(cancel_reason()), "it says why");
    assert_eq!(get(store, queued.id).await, cancelled);
    assert_eq!(try_claim(store, queued.id, "w", T0 + 2).await, None);
    assert_eq!(store.queue_depth().await.expect("depth"), 0);

    // Cancelling again reports the finished job unchanged.
    assert_eq!(
        store
            .cancel(queued.id, T0 + 3, cancel_reason())
            .await
            .expect("cancel"),
        CancelOutcome::AlreadyFinished(cancelled.clone())
    );

    // Running: only marked; the worker finishes the cancellation.
    let running = enqueue(store, new_job("m", 0), T0).await;
    claim(store, running.id, "w", T0 + 1).await;
    let CancelOutcome::Requested(requested) = store
        .cancel(running.id, T0 + 2, cancel_reason())
        .await
        .expect("cancel")
    else {
        panic!("a running job gets a cancel request");
    };
    assert_eq!(requested.state, JobState::Running);
    assert!(requested.cancel_requested);
    assert_eq!(
        requested.failure,
        Some(cancel_reason()),
        "why is written with the request"
    );
    assert_eq!(requested.finished_at, None);
    assert_eq!(requested.lease_owner.as_deref(), Some("w"));
    // Asking twice is harmless.
    assert_eq!(
        store
            .cancel(running.id, T0 + 3, cancel_reason())
            .await
            .expect("cancel"),
        CancelOutcome::Requested(requested.clone())
    );
    assert_eq!(
        store
            .finish_cancelled(running.id, 2, "w", T0 + 4)
            .await
            .expect("finish_cancelled"),
        None
    );
    let finished = store
        .finish_cancelled(running.id, 1, "w", T0 + 4)
        .await
        .expect("finish_cancelled")
        .expect("attempt current");
    assert_eq!(finished.state, JobState::Cancelled);
    assert_eq!(finished.finished_at, Some(T0 + 4));
    assert_eq!(finished.lease_owner, None);
    assert_eq!(finished.lease_expires_at, None);

    // Succeeded and failed jobs stay as they are.
    let succeeded = enqueue(store, new_job("m", 0), T0).await;
    claim(store, succeeded.id, "w", T0).await;
    let succeeded = store
        .complete(succeeded.id, 1, "w", "{}".to_owned(), T0 + 1)
        .await
        .expect("complete")
        .expect("attempt current");
    assert_eq!(
        store
            .cancel(succeeded.id, T0 + 2, cancel_reason())
            .await
            .expect("cancel"),
        CancelOutcome::AlreadyFinished(succeeded.clone())
    );
    assert_eq!(get(store, succeeded.id).await, succeeded);

    let failed = enqueue(store, new_job("m", 0), T0).await;
    claim(store, failed.id, "w", T0).await;
    let failed = store
        .fail(failed.id, 1, "w", failure(400, "bad request"), T0 + 1)
        .await
        .expect("fail")
        .expect("attempt current");
    assert_eq!(
        store
            .cancel(failed.id, T0 + 2, cancel_reason())
            .await
            .expect("cancel"),
        CancelOutcome::AlreadyFinished(failed.clone())
    );
}

pub async fn case_cancel_requested_wins_over_retry_and_requeue(store: &Store) {
    let retried = enqueue(store, new_job("m", 0), T0).await;
    claim(store, retried.id, "w", T0).await;
    store
        .cancel(retried.id, T0 + 1, cancel_reason())
        .await
        .expect("cancel");
    let after_retry = store
        .retry_or_fail(retried.id, 1, "w", failure(503, "busy"), T0 + 500, T0 + 2)
        .await
        .expect("retry")
        .expect("attempt current");
    assert_eq!(after_retry.state, JobState::Cancelled);
    assert_eq!(after_retry.finished_at, Some(T0 + 2));
    assert_eq!(after_retry.lease_owner, None);

    let requeued = enqueue(store, new_job("m", 0), T0).await;
    claim(store, requeued.id, "w", T0).await;
    store
        .cancel(requeued.id, T0 + 1, cancel_reason())
        .await
        .expect("cancel");
    let after_requeue = store
        .requeue(requeued.id, 1, "w", T0 + 2)
        .await
        .expect("requeue")
        .expect("attempt current");
    assert_eq!(after_requeue.state, JobState::Cancelled);
    assert_eq!(after_requeue.finished_at, Some(T0 + 2));
    assert_eq!(store.queue_depth().await.expect("depth"), 0);
}

pub async fn case_concurrent_cancel_and_claim_agree(store: &Store) {
    const JOBS: usize = 12;
    for _ in 0..JOBS {
        let job = enqueue(store, new_job("m", 0), T0).await;
        let claimer = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .claim(ClaimParams {
                        id: job.id,
                        owner: "w".to_owned(),
                        target: "t".to_owned(),
                        now: T0 + 1,
                        lease_for_ms: LEASE_MS,
                    })
                    .await
                    .expect("claim")
            })
        };
        let canceller = {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .cancel(job.id, T0 + 1, cancel_reason())
                    .await
                    .expect("cancel")
            })
        };
        let claimed = claimer.await.expect("claim task");
        let outcome = canceller.await.expect("cancel task");
        let stored = get(store, job.id).await;
        match (claimed, outcome) {
            (Some(_), CancelOutcome::Requested(_)) => {
                assert_eq!(stored.state, JobState::Running);
                assert!(stored.cancel_requested);
            }
            (None, CancelOutcome::Cancelled(_)) => {
                assert_eq!(stored.state, JobState::Cancelled);
                assert_eq!(stored.attempts, 0);
            }
            (claimed, outcome) => {
                panic!("claim and cancel disagree: {claimed:?} vs {outcome:?}")
            }
        }
    }
}

pub async fn case_recover_running(store: &Store) {
    let requeued = enqueue(store, new_job("m", 0), T0).await;
    let exhausted = enqueue(
        store,
        NewJob {
            max_attempts: 1,
            ..new_job("m", 0)
        },
        T0,
    )
    .await;
    let cancelling = enqueue(store, new_job("m", 0), T0).await;
    let queued = enqueue(store, new_job("m", 0), T0).await;
    let finished = enqueue(store, new_job("m", 0), T0).await;
    for job in [&requeued, &exhausted, &cancelling, &finished] {
        claim(store, job.id, "old-process", T0 + 1).await;
    }
    store
        .cancel(cancelling.id, T0 + 2, cancel_reason())
        .await
        .expect("cancel");
    let finished = store
        .complete(finished.id, 1, "old-process", "{}".to_owned(), T0 + 3)
        .await
        .expect("complete")
        .expect("attempt current");

    // Leases have not expired: the restart alone makes the rows orphans.
    let now = T0 + 10;
    assert_eq!(store.recover_running(now).await.expect("recover"), 3);

    let requeued = get(store, requeued.id).await;
    assert_eq!(requeued.state, JobState::Queued);
    assert_eq!(requeued.attempts, 1);
    assert_eq!(requeued.run_after, now);
    assert_eq!(requeued.lease_owner, None);
    assert_eq!(requeued.lease_expires_at, None);
    assert_eq!(requeued.finished_at, None);
    assert_eq!(
        requeued.failure.as_ref().map(|failure| failure.status),
        Some(500)
    );

    // A restart is not the job's failure: its only attempt is not spent.
    let exhausted = get(store, exhausted.id).await;
    assert_eq!(exhausted.state, JobState::Queued);
    assert_eq!((exhausted.attempts, exhausted.interruptions), (1, 1));
    assert_eq!(
        exhausted.failure,
        Some(failure(500, "job interrupted by a restart"))
    );
    assert_eq!(exhausted.lease_owner, None);

    let cancelling = get(store, cancelling.id).await;
    assert_eq!(cancelling.state, JobState::Cancelled);
    assert_eq!(cancelling.finished_at, Some(now));
    assert_eq!(
        cancelling.failure,
        Some(cancel_reason()),
        "why stays with it"
    );

    assert_eq!(get(store, queued.id).await, queued);
    assert_eq!(get(store, finished.id).await, finished);

    // The requeued job runs again as its second attempt.
    assert_eq!(claim(store, requeued.id, "w", now).await.attempts, 2);
    // Nothing else is left to recover but the job just claimed.
    assert_eq!(store.recover_running(now + 1).await.expect("recover"), 1);
    assert_eq!(store.recover_running(now + 2).await.expect("recover"), 0);
}

/// Interruptions (restarts, lost leases) spend no attempt: a job of one attempt still
/// fails on its first failure from the target after being interrupted; but a job
/// interrupted `MAX_INTERRUPTIONS` times fails, so a job that brings its process down
/// every time cannot run forever.
pub async fn case_interruptions_spend_no_attempts_but_are_bounded(store: &Store) {
    let once = enqueue(
        store,
        NewJob {
            max_attempts: 1,
            ..new_job("m", 0)
        },
        T0,
    )
    .await;
    claim(store, once.id, "old-process", T0 + 1).await;
    assert_eq!(store.recover_running(T0 + 2).await.expect("recover"), 1);
    claim(store, once.id, "w", T0 + 3).await;
    let failed = store
        .retry_or_fail(once.id, 2, "w", failure(503, "busy"), T0 + 10, T0 + 4)
        .await
        .expect("retry_or_fail")
        .expect("current attempt");
    assert_eq!(
        failed.state,
        JobState::Failed,
        "its one attempt is spent now"
    );

    let restless = enqueue(store, new_job("m", 0), T0).await;
    for round in 0..crate::MAX_INTERRUPTIONS {
        let at = T0 + 100 * i64::from(round + 1);
        claim(store, restless.id, "old-process", at).await;
        store.recover_running(at + 1).await.expect("recover");
    }
    let restless = get(store, restless.id).await;
    assert_eq!(restless.state, JobState::Failed);
    assert_eq!(restless.interruptions, crate::MAX_INTERRUPTIONS);
    assert_eq!(
        restless.failure,
        Some(failure(
            500,
            "job interrupted by restarts or lost leases too many times"
        ))
    );
    assert_eq!(
        store.finished_by_store(),
        std::collections::BTreeMap::from([(("chat", "failed"), 1)])
    );
}

/// At startup, the unfinished jobs of synchronous callers are cancelled with their
/// reason (the callers' connections are gone); the jobs API's jobs are left to run.
pub async fn case_abandon_sync_jobs(store: &Store) {
    let sync_job = |model: &str| NewJob {
        sync: true,
        ..new_job(model, 0)
    };
    let queued = enqueue(store, sync_job("m"), T0).await;
    let running = enqueue(store, sync_job("m"), T0).await;
    let finished = enqueue(store, sync_job("m"), T0).await;
    let asynchronous = enqueue(store, new_job("m", 0), T0).await;
    assert!(queued.sync && !asynchronous.sync);
    claim(store, running.id, "old-process", T0 + 1).await;
    claim(store, finished.id, "old-process", T0 + 1).await;
    store
        .complete(finished.id, 1, "old-process", "{}".to_owned(), T0 + 2)
        .await
        .expect("complete")
        .expect("current attempt");
    assert_eq!(store.abandon_sync_jobs(T0 + 10).await.expect("abandon"), 2);
    for id in [queued.id, running.id] {
        let job = get(store, id).await;
        assert_eq!(job.state, JobState::Cancelled);
        assert_eq!(job.finished_at, Some(T0 + 10));
        assert_eq!(job.lease_owner, None);
        assert_eq!(job.failure.map(|failure| failure.status), Some(499));
    }
    assert_eq!(get(store, finished.id).await.state, JobState::Succeeded);
    assert_eq!(get(store, asynchronous.id).await.state, JobState::Queued);
    assert_eq!(store.queue_heads(T0 + 10).await.expect("heads").len(), 1);
    // No caller saw these two end: the store counts them for the metrics.
    assert_eq!(
        store.finished_by_store(),
        std::collections::BTreeMap::from([(("chat", "cancelled"), 2)])
    );
}

pub async fn case_rescue_expired_touches_only_expired_leases(store: &Store) {
    let expired = enqueue(store, new_job("m", 0), T0).await;
    let at_boundary = enqueue(store, new_job("m", 0), T0).await;
    let alive = enqueue(store, new_job("m", 0), T0).await;
    let expired_exhausted = enqueue(
        store,
        NewJob {
            max_attempts: 1,
            ..new_job("m", 0)
        },
        T0,
    )
    .await;
    let expired_cancelling = enqueue(store, new_job("m", 0), T0).await;
    let queued = enqueue(store, new_job("m", 0), T0).await;

    claim(store, expired.id, "w", T0).await;
    claim(store, expired_exhausted.id, "w", T0).await;
    claim(store, expired_cancelling.id, "w", T0).await;
    store
        .cancel(expired_cancelling.id, T0 + 1, cancel_reason())
        .await
        .expect("cancel");
    claim(store, at_boundary.id, "w", T0 + 1_000).await;
    claim(store, alive.id, "w", T0 + 5_000).await;
    let at_boundary = get(store, at_boundary.id).await;
    let alive = get(store, alive.id).await;

    // Leases: expired ones end at T0 + LEASE_MS, the boundary one exactly at `now`.
    let now = T0 + 1_000 + LEASE_MS;
    assert_eq!(store.rescue_expired(now).await.expect("rescue"), 3);

    let expired = get(store, expired.id).await;
    assert_eq!(expired.state, JobState::Queued);
    assert_eq!(expired.attempts, 1);
    assert_eq!(expired.run_after, now);
    assert_eq!(expired.lease_owner, None);
    assert_eq!(expired.failure.map(|failure| failure.status), Some(500));

    // A lost lease is not the job's failure: its only attempt is not spent.
    let expired_exhausted = get(store, expired_exhausted.id).await;
    assert_eq!(expired_exhausted.state, JobState::Queued);
    assert_eq!(
        (expired_exhausted.attempts, expired_exhausted.interruptions),
        (1, 1)
    );

    let expired_cancelling = get(store, expired_cancelling.id).await;
    assert_eq!(expired_cancelling.state, JobState::Cancelled);
    assert_eq!(expired_cancelling.finished_at, Some(now));

    assert_eq!(get(store, at_boundary.id).await, at_boundary);
    assert_eq!(get(store, alive.id).await, alive);
    assert_eq!(get(store, queued.id).await, queued);

    // A heartbeat keeps a lease out of reach of the rescuer.
    assert!(
        store
            .heartbeat(alive.id, 1, "w", now, LEASE_MS)
            .await
            .expect("heartbeat")
    );
    assert_eq!(
        store
            .rescue_expired(now + LEASE_MS - 1)
            .await
            .expect("rescue"),
        1
    );
    assert_eq!(get(store, alive.id).await.state, JobState::Running);
    assert_eq!(get(store, at_boundary.id).await.state, JobState::Queued);
    // Of the rescued, only the one whose cancel was asked for finished: the store counts
    // it for the metrics (the requeued ones are not finished).
    assert_eq!(
        store.finished_by_store(),
        std::collections::BTreeMap::from([(("chat", "cancelled"), 1)])
    );
}

pub async fn case_prune_respects_limit_and_cutoff(store: &Store) {
    // Five cancelled jobs finished at T0+1..=T0+5, one succeeded and one failed at T0+6.
    let mut cancelled = Vec::new();
    for offset in 1..=5 {
        let job = enqueue(store, new_job("m", 0), T0).await;
        store
            .cancel(job.id, T0 + offset, cancel_reason())
            .await
            .expect("cancel");
        cancelled.push(job.id);
    }
    let succeeded = enqueue(store, new_job("m", 0), T0).await;
    claim(store, succeeded.id, "w", T0).await;
    store
        .complete(succeeded.id, 1, "w", "{}".to_owned(), T0 + 6)
        .await
        .expect("complete")
        .expect("attempt current");
    let failed = enqueue(store, new_job("m", 0), T0).await;
    claim(store, failed.id, "w", T0).await;
    store
        .fail(failed.id, 1, "w", failure(400, "bad"), T0 + 6)
        .await
        .expect("fail")
        .expect("attempt current");
    // Old but unfinished jobs are never pruned.
    let queued = enqueue(store, new_job("m", 0), T0 - 1_000_000).await;
    let running = enqueue(store, new_job("m", 0), T0 - 1_000_000).await;
    claim(store, running.id, "w", T0).await;

    assert_eq!(store.prune_finished(T0 + 1, 10).await.expect("prune"), 0);
    // Cutoff T0+5 covers the four oldest; the limit takes the two oldest first.
    assert_eq!(store.prune_finished(T0 + 5, 2).await.expect("prune"), 2);
    for id in &cancelled[..2] {
        assert_eq!(store.get(*id).await.expect("get"), None);
    }
    for id in &cancelled[2..] {
        assert!(store.get(*id).await.expect("get").is_some());
    }
    assert_eq!(store.prune_finished(T0 + 5, 10).await.expect("prune"), 2);
    assert!(store.get(cancelled[4]).await.expect("get").is_some());
    assert_eq!(store.prune_finished(T0 + 5, 10).await.expect("prune"), 0);
    assert_eq!(store.prune_finished(T0 + 7, 0).await.expect("prune"), 0);

    assert_eq!(store.prune_finished(i64::MAX, 100).await.expect("prune"), 3);
    let left: HashSet<JobId> = ids(&store.list(all(100)).await.expect("list"))
        .into_iter()
        .collect();
    assert_eq!(left, HashSet::from([queued.id, running.id]));
}

pub async fn case_list_filters(store: &Store) {
    let a_queued = enqueue(store, new_job("a", 0), T0).await;
    let b_queued = enqueue(store, new_job("b", 0), T0 + 10).await;
    let a_running = enqueue(store, new_job("a", 0), T0 + 20).await;
    claim(store, a_running.id, "w", T0 + 21).await;
    let b_cancelled = enqueue(store, new_job("b", 0), T0 + 30).await;
    store
        .cancel(b_cancelled.id, T0 + 31, cancel_reason())
        .await
        .expect("cancel");

    let listed = |params: ListParams| async move { ids(&store.list(params).await.expect("list")) };

    // Newest first.
    assert_eq!(
        listed(all(10)).await,
        [b_cancelled.id, a_running.id, b_queued.id, a_queued.id]
    );
    assert_eq!(listed(all(2)).await, [b_cancelled.id, a_running.id]);
    assert_eq!(listed(all(0)).await, []);
    assert_eq!(
        listed(ListParams {
            state: Some(JobState::Queued),
            ..all(10)
        })
        .await,
        [b_queued.id, a_queued.id]
    );
    assert_eq!(
        listed(ListParams {
            state: Some(JobState::Running),
            ..all(10)
        })
        .await,
        [a_running.id]
    );
    assert_eq!(
        listed(ListParams {
            state: Some(JobState::Failed),
            ..all(10)
        })
        .await,
        []
    );
    assert_eq!(
        listed(ListParams {
            model: Some("b".to_owned()),
            ..all(10)
        })
        .await,
        [b_cancelled.id, b_queued.id]
    );
    assert_eq!(
        listed(ListParams {
            model: Some("a".to_owned()),
            state: Some(JobState::Queued),
            ..all(10)
        })
        .await,
        [a_queued.id]
    );
    // Time bounds are exclusive.
    assert_eq!(
        listed(ListParams {
            created_before: Some(T0 + 20),
            ..all(10)
        })
        .await,
        [b_queued.id, a_queued.id]
    );
    assert_eq!(
        listed(ListParams {
            created_after: Some(T0 + 10),
            ..all(10)
        })
        .await,
        [b_cancelled.id, a_running.id]
    );
    assert_eq!(
        listed(ListParams {
            created_after: Some(T0),
            created_before: Some(T0 + 30),
            ..all(10)
        })
        .await,
        [a_running.id, b_queued.id]
    );
    assert_eq!(
        listed(ListParams {
            model: Some("nope".to_owned()),
            ..all(10)
        })
        .await,
        []
    );
}

pub async fn case_list_cursor_pagination(store: &Store) {
    const N_JOBS: usize = 23;
    let mut enqueued = Vec::new();
    for job_idx in 0..N_JOBS {
        let model = if job_idx % 2 == 0 { "even" } else { "odd" };
        // Several jobs share a millisecond; the order must still be total and stable.
        let now = T0 + i64::try_from(job_idx / 4).expect("small");
        enqueued.push(enqueue(store, new_job(model, 0), now).await.id);
    }
    let newest_first: Vec<JobId> = enqueued.iter().rev().copied().collect();

    let mut pages = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .list(ListParams { cursor, ..all(5) })
            .await
            .expect("list");
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 5);
        cursor = page.last().map(|job| job.id);
        pages.push(ids(&page));
    }
    assert_eq!(pages.len(), 5);
    assert_eq!(pages.concat(), newest_first);

    // The cursor combines with filters.
    let odd_first_page = store
        .list(ListParams {
            model: Some("odd".to_owned()),
            ..all(3)
        })
        .await
        .expect("list");
    let odd_next_page = store
        .list(ListParams {
            model: Some("odd".to_owned()),
            cursor: odd_first_page.last().map(|job| job.id),
            ..all(100)
        })
        .await
        .expect("list");
    let odd: Vec<JobId> = newest_first
        .iter()
        .copied()
        .filter(|id| enqueued.iter().position(|e| e == id).expect("known") % 2 == 1)
        .collect();
    assert_eq!([ids(&odd_first_page), ids(&odd_next_page)].concat(), odd);
}

/// Jobs in every state are there, unchanged, after the store is closed and opened again.
pub async fn case_jobs_survive_reopen(url: &str) {
    let store = Store::open(url).await.expect("open");
    let queued = store
        .enqueue(
            NewJob {
                idempotency_key: Some("durable".to_owned()),
                payload: r#"{"prompt":"über ✓","z":0,"a":1}"#.to_owned(),
                ..new_job("m", 3)
            },
            T0,
        )
        .await
        .expect("enqueue")
        .job;
    let running = enqueue(&store, new_job("m", 0), T0).await;
    let running = claim(&store, running.id, "w", T0 + 1).await;
    let done = enqueue(&store, new_job("m", 0), T0).await;
    claim(&store, done.id, "w", T0 + 1).await;
    let done = store
        .complete(done.id, 1, "w", r#"{"done":true}"#.to_owned(), T0 + 2)
        .await
        .expect("complete")
        .expect("attempt current");
    store.close().await;

    let reopened = Store::open(url).await.expect("reopen");
    assert_eq!(get(&reopened, queued.id).await, queued);
    assert_eq!(get(&reopened, running.id).await, running);
    assert_eq!(get(&reopened, done.id).await, done);
    // The idempotency key is still enforced after the restart.
    let again = reopened
        .enqueue(
            NewJob {
                idempotency_key: Some("durable".to_owned()),
                ..new_job("m", 0)
            },
            T0 + 5,
        )
        .await
        .expect("enqueue");
    assert!(!again.created);
    assert_eq!(again.job.id, queued.id);
    // New ids keep sorting after the old ones.
    let newer = enqueue(&reopened, new_job("m", 0), T0 + 10).await;
    assert_eq!(ids(&reopened.list(all(1)).await.expect("list")), [newer.id]);
    reopened.close().await;
}

/// A startup that presents its instance's lease-owner prefix takes back only that
/// instance's running jobs; another instance's job keeps running (its lease decides).
pub async fn case_recover_running_owned_leaves_other_owners(store: &Store) {
    let mine = enqueue(store, new_job("m", 0), T0).await;
    let theirs = enqueue(store, new_job("m", 0), T0).await;
    // "i1/" must not match an instance whose id merely starts with "i1" ("i10").
    let similar = enqueue(store, new_job("m", 0), T0).await;
    claim(store, mine.id, "i1/gpu/0", T0 + 1).await;
    claim(store, theirs.id, "i2/gpu/0", T0 + 1).await;
    claim(store, similar.id, "i10/gpu/0", T0 + 1).await;
    let recovered = store
        .recover_running_owned("i1/", T0 + 2)
        .await
        .expect("recover");
    assert_eq!(recovered, 1);
    let mine = get(store, mine.id).await;
    assert_eq!((mine.state, mine.interruptions), (JobState::Queued, 1));
    assert_eq!(get(store, theirs.id).await.state, JobState::Running);
    assert_eq!(get(store, similar.id).await.state, JobState::Running);
}

/// A job with a webhook URL leaves a delivery in the outbox when it finishes, in the
/// same transaction, with the Standard Webhooks body; attempts are logged and fenced.
pub async fn case_finished_jobs_with_a_webhook_fill_the_outbox(store: &Store) {
    use crate::{AttemptOutcome, DeliveryState, WebhookAttempt};
    let mut hooked = new_job("m", 0);
    hooked.webhook_url = Some("http://hooks.example/in".to_owned());
    hooked.metadata = Some("{\"batch\":7,\"tag\":\"ü\"}".to_owned());
    let job = enqueue(store, hooked, T0).await;
    let plain = enqueue(store, new_job("m", 0), T0).await;
    for (id, at) in [(job.id, T0 + 1), (plain.id, T0 + 2)] {
        claim(store, id, "w", at).await;
        store
            .complete(id, 1, "w", "{}".into(), at + 1)
            .await
            .expect("complete")
            .expect("completed");
    }
    assert!(
        store.due_webhooks(T0, 10).await.expect("due").is_empty(),
        "not due before the job ended"
    );
    let due = store.due_webhooks(T0 + 10, 10).await.expect("due");
    assert_eq!(due.len(), 1, "only the job with a webhook");
    let delivery = &due[0];
    assert!(delivery.id.starts_with("msg_"));
    assert_eq!(delivery.id.len(), 28);
    assert_eq!(
        (delivery.job_id, delivery.state, delivery.attempts),
        (job.id, DeliveryState::Pending, 0)
    );
    assert_eq!(
        (delivery.next_attempt_at, delivery.created_at),
        (T0 + 2, T0 + 2)
    );
    let payload: serde_json::Value = serde_json::from_str(&delivery.payload).expect("json payload");
    let expected = serde_json::json!({
        "type": "job.succeeded",
        "timestamp": "2023-11-14T22:13:20.002Z",
        "data": {
            "id": job.id.to_string(),
            "state": "succeeded",
            "kind": "chat",
            "model": "m",
            "attempts": 1,
            "error": null,
            "metadata": {"batch": 7, "tag": "ü"},
            "url": format!("/jobs/{}", job.id),
        }
    });
    assert_eq!(payload, expected);
    let keys: Vec<&str> = payload
        .as_object()
        .expect("object")
        .keys()
        .map(String::as_str)
        .collect();
    assert_eq!(keys, ["type", "timestamp", "data"]);

    let first = WebhookAttempt {
        attempt: 1,
        at: T0 + 20,
        status: Some(500),
        latency_ms: 3,
        error: Some("HTTP 500".into()),
        retry_at: None,
    };
    assert!(
        store
            .record_webhook_attempt(&delivery.id, &first, AttemptOutcome::RetryAt(T0 + 1_000))
            .await
            .expect("record")
    );
    assert!(
        !store
            .record_webhook_attempt(&delivery.id, &first, AttemptOutcome::Delivered)
            .await
            .expect("record"),
        "a stale attempt is fenced"
    );
    assert!(
        store
            .due_webhooks(T0 + 999, 10)
            .await
            .expect("due")
            .is_empty()
    );
    assert_eq!(
        store.due_webhooks(T0 + 1_000, 10).await.expect("due").len(),
        1
    );
    let second = WebhookAttempt {
        attempt: 2,
        at: T0 + 1_000,
        status: Some(204),
        latency_ms: 2,
        error: None,
        retry_at: None,
    };
    assert!(
        store
            .record_webhook_attempt(&delivery.id, &second, AttemptOutcome::Delivered)
            .await
            .expect("record")
    );
    assert!(
        store
            .due_webhooks(T0 + 100_000, 10)
            .await
            .expect("due")
            .is_empty()
    );
    let recorded = store.webhooks_for_job(job.id).await.expect("webhooks");
    assert_eq!(recorded.len(), 1);
    assert_eq!(recorded[0].state, DeliveryState::Delivered);
    assert_eq!(recorded[0].finished_at, Some(T0 + 1_000));
    let first_logged = WebhookAttempt {
        retry_at: Some(T0 + 1_000),
        ..first
    };
    assert_eq!(
        recorded[0].log,
        vec![first_logged, second],
        "the log keeps when each retry was scheduled"
    );
    assert!(
        store
            .webhooks_for_job(plain.id)
            .await
            .expect("webhooks")
            .is_empty()
    );

    // Every way of finishing notifies: a cancel of a queued job, a failure, a retry that
    // runs out of attempts, a running job cancelled, and recovery at its bound.
    let mut cancelled = new_job("m", 0);
    cancelled.webhook_url = Some("http://hooks.example/in".to_owned());
    let cancelled = enqueue(store, cancelled, T0).await;
    store
        .cancel(cancelled.id, T0 + 5, cancel_reason())
        .await
        .expect("cancel");
    let deliveries = store
        .webhooks_for_job(cancelled.id)
        .await
        .expect("webhooks");
    assert_eq!(deliveries.len(), 1);
    let payload: serde_json::Value = serde_json::from_str(&deliveries[0].payload).expect("json");
    assert_eq!(payload["type"], "job.cancelled");
    assert_eq!(
        payload["data"]["error"],
        serde_json::json!({"status": 499, "message": "cancelled by the test"})
    );
    assert_eq!(payload["data"]["metadata"], serde_json::Value::Null);

    let mut failing = new_job("m", 0);
    failing.webhook_url = Some("http://hooks.example/in".to_owned());
    failing.max_attempts = 1;
    let failing = enqueue(store, failing, T0).await;
    claim(store, failing.id, "w", T0 + 6).await;
    let retried = store
        .retry_or_fail(failing.id, 1, "w", failure(503, "busy"), T0 + 10, T0 + 7)
        .await
        .expect("retry")
        .expect("current");
    assert_eq!(retried.state, JobState::Failed);
    let deliveries = store.webhooks_for_job(failing.id).await.expect("webhooks");
    assert_eq!(deliveries.len(), 1);
    let payload: serde_json::Value = serde_json::from_str(&deliveries[0].payload).expect("json");
    assert_eq!(payload["type"], "job.failed");

    // A retry that requeues does not notify.
    let mut retrying = new_job("m", 0);
    retrying.webhook_url = Some("http://hooks.example/in".to_owned());
    let retrying = enqueue(store, retrying, T0).await;
    claim(store, retrying.id, "w", T0 + 6).await;
    store
        .retry_or_fail(retrying.id, 1, "w", failure(503, "busy"), T0 + 10, T0 + 7)
        .await
        .expect("retry")
        .expect("current");
    assert!(
        store
            .webhooks_for_job(retrying.id)
            .await
            .expect("webhooks")
            .is_empty()
    );
}

/// A claimed delivery is not due again until its lease lapses (a dispatcher that died),
/// and the claim moves oldest due first.
pub async fn case_webhook_claims_are_leased(store: &Store) {
    let mut jobs = Vec::new();
    for index in 0..3 {
        let mut hooked = new_job("m", 0);
        hooked.webhook_url = Some(format!("http://hooks.example/{index}"));
        let job = enqueue(store, hooked, T0).await;
        claim(store, job.id, "w", T0 + 1).await;
        store
            .complete(job.id, 1, "w", "{}".into(), T0 + 10 - index)
            .await
            .expect("complete")
            .expect("current");
        jobs.push(job.id);
    }
    let first = store
        .claim_webhooks(T0 + 100, 2, 5_000)
        .await
        .expect("claim");
    let claimed_jobs: Vec<JobId> = first.iter().map(|delivery| delivery.job_id).collect();
    assert_eq!(claimed_jobs, [jobs[2], jobs[1]], "oldest due first");
    assert!(
        first
            .iter()
            .all(|delivery| delivery.next_attempt_at == T0 + 5_100)
    );
    let second = store
        .claim_webhooks(T0 + 100, 10, 5_000)
        .await
        .expect("claim");
    assert_eq!(second.len(), 1);
    assert_eq!(second[0].job_id, jobs[0]);
    assert!(
        store
            .claim_webhooks(T0 + 5_099, 10, 5_000)
            .await
            .expect("claim")
            .is_empty()
    );
    assert!(
        store
            .due_webhooks(T0 + 5_099, 10)
            .await
            .expect("due")
            .is_empty()
    );
    // The dispatcher holding the first two died: they come due again with the lease.
    let again = store
        .claim_webhooks(T0 + 5_100, 10, 5_000)
        .await
        .expect("claim");
    assert_eq!(again.len(), 3);
    assert!(
        store.claim_webhooks(T0, 10, 0).await.is_err(),
        "an empty lease"
    );
}

/// The operator views' summary: queued jobs (eligible or not) per model and priority,
/// with the oldest of each; running jobs are not queued. And every commit is timed.
pub async fn case_queue_summary_groups_queued_jobs_and_commits_are_timed(store: &Store) {
    let before = store.commit_times().count;
    let mut ids = Vec::new();
    for (index, (model, priority)) in [("b", 0), ("a", 0), ("a", 5), ("a", 0), ("b", 0)]
        .into_iter()
        .enumerate()
    {
        ids.push(
            enqueue(store, new_job(model, priority), T0 + index as i64)
                .await
                .id,
        );
    }
    claim(store, ids[0], "instance/gpu/0", T0 + 10).await;
    let summary: Vec<(String, i32, u64, i64)> = store
        .queue_summary()
        .await
        .expect("summary")
        .into_iter()
        .map(|group| {
            (
                group.model,
                group.priority,
                group.count,
                group.oldest_created_at,
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("a".to_string(), 5, 1, T0 + 2),
            ("a".to_string(), 0, 2, T0 + 1),
            ("b".to_string(), 0, 1, T0 + 4),
        ]
    );
    let mut queued: Vec<JobId> = store
        .queued_jobs(100)
        .await
        .expect("queued")
        .into_iter()
        .map(|job| job.id)
        .collect();
    queued.sort();
    assert_eq!(queued, ids[1..].to_vec());
    assert_eq!(store.queued_jobs(2).await.expect("queued").len(), 2);
    let times = store.commit_times();
    assert!(times.count >= before + 6, "five enqueues and a claim");
    assert_eq!(times.buckets.iter().sum::<u64>(), times.count);
}

/// Eight claimers racing through 200 jobs, each in its own order, take every job once.
pub async fn case_concurrent_claimers_never_take_one_job_twice(store: &Store) {
    race_claimers(std::slice::from_ref(store), 200, 8).await;
}

/// Claimers on `stores` (round robin) race through `count` queued jobs; every job is
/// claimed exactly once.
async fn race_claimers(stores: &[Store], count: usize, claimers: usize) {
    let mut ids = Vec::new();
    for index in 0..count {
        ids.push(
            enqueue(&stores[0], new_job("m", 0), T0 + index as i64)
                .await
                .id,
        );
    }
    let tasks: Vec<_> = (0..claimers)
        .map(|claimer| {
            let store = stores[claimer % stores.len()].clone();
            let mut order = ids.clone();
            // Each claimer walks the jobs from its own offset, half of them backwards.
            order.rotate_left(claimer * count / claimers);
            if claimer % 2 == 1 {
                order.reverse();
            }
            tokio::spawn(async move {
                let owner = format!("claimer{claimer}/t/0");
                let mut won = Vec::new();
                for id in order {
                    if let Some(job) = try_claim(&store, id, &owner, T0 + 10_000).await {
                        assert_eq!(job.lease_owner.as_deref(), Some(owner.as_str()));
                        won.push(id);
                    }
                }
                won
            })
        })
        .collect();
    let mut claimed = Vec::new();
    for task in tasks {
        claimed.extend(task.await.expect("claimer"));
    }
    let unique: HashSet<JobId> = claimed.iter().copied().collect();
    assert_eq!(unique.len(), claimed.len(), "a job was claimed twice");
    assert_eq!(claimed.len(), count, "every job was claimed");
    for id in ids {
        let job = get(&stores[0], id).await;
        assert_eq!((job.state, job.attempts), (JobState::Running, 1));
    }
}

async fn two_handles(url: &str) -> (Store, Store) {
    let a = Store::open(url).await.expect("open first handle");
    let b = Store::open(url).await.expect("open second handle");
    (a, b)
}

/// Claimers on two handles of one database (two instances) never take one job twice.
pub async fn case_two_handles_never_claim_one_job(url: &str) {
    let (a, b) = two_handles(url).await;
    race_claimers(&[a.clone(), b.clone()], 200, 8).await;
    a.close().await;
    b.close().await;
}

/// Instance A's worker lost its lease; B rescued the job and runs it again. Every write
/// A's worker still makes, presenting its old (owner, attempt), changes nothing.
pub async fn case_stale_writes_from_another_handle_change_nothing_after_rescue(url: &str) {
    let (a, b) = two_handles(url).await;
    let mut hooked = new_job("m", 0);
    hooked.webhook_url = Some("http://hooks.example/in".to_owned());
    let job = enqueue(&a, hooked, T0).await;
    claim(&a, job.id, "a/gpu/0", T0 + 1).await;
    assert_eq!(
        b.rescue_expired(T0 + 1 + LEASE_MS + 1)
            .await
            .expect("rescue"),
        1
    );
    let rescued = claim(&b, job.id, "b/gpu/0", T0 + LEASE_MS + 10).await;
    assert_eq!((rescued.attempts, rescued.interruptions), (2, 1));

    let now = T0 + LEASE_MS + 20;
    for attempt in [1, 2] {
        let owner = "a/gpu/0";
        assert!(
            !a.heartbeat(job.id, attempt, owner, now, LEASE_MS)
                .await
                .expect("heartbeat")
        );
        assert!(
            a.complete(job.id, attempt, owner, "{}".into(), now)
                .await
                .expect("complete")
                .is_none()
        );
        assert!(
            a.complete_with_artifacts(job.id, attempt, owner, "[]".into(), now)
                .await
                .expect("complete")
                .is_none()
        );
        assert!(
            a.fail(job.id, attempt, owner, failure(500, "x"), now)
                .await
                .expect("fail")
                .is_none()
        );
        assert!(
            a.retry_or_fail(job.id, attempt, owner, failure(503, "x"), now, now)
                .await
                .expect("retry")
                .is_none()
        );
        assert!(
            a.requeue(job.id, attempt, owner, now)
                .await
                .expect("requeue")
                .is_none()
        );
        assert!(
            a.finish_cancelled(job.id, attempt, owner, now)
                .await
                .expect("finish")
                .is_none()
        );
    }
    // B's attempt 1 is stale too, even with the right owner.
    assert!(
        b.complete(job.id, 1, "b/gpu/0", "{}".into(), now)
            .await
            .expect("complete")
            .is_none()
    );
    assert_eq!(get(&a, job.id).await, rescued, "nothing changed");
    assert!(
        a.webhooks_for_job(job.id)
            .await
            .expect("webhooks")
            .is_empty()
    );

    let done = b
        .complete(job.id, 2, "b/gpu/0", "{\"ok\":true}".into(), now)
        .await
        .expect("complete")
        .expect("current attempt");
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(a.webhooks_for_job(job.id).await.expect("webhooks").len(), 1);
    a.close().await;
    b.close().await;
}

/// Two dispatchers (one per handle) claiming the same due deliveries at once: each
/// delivery goes to exactly one of them.
pub async fn case_webhooks_claimed_by_two_handles_are_sent_once(url: &str) {
    let (a, b) = two_handles(url).await;
    let mut jobs = HashSet::new();
    for index in 0..40 {
        let mut hooked = new_job("m", 0);
        hooked.webhook_url = Some(format!("http://hooks.example/{index}"));
        let job = enqueue(&a, hooked, T0).await;
        claim(&a, job.id, "w", T0 + 1).await;
        a.complete(job.id, 1, "w", "{}".into(), T0 + 2)
            .await
            .expect("complete")
            .expect("current");
        jobs.insert(job.id);
    }
    let tasks: Vec<_> = (0..6)
        .map(|dispatcher| {
            let store = if dispatcher % 2 == 0 {
                a.clone()
            } else {
                b.clone()
            };
            tokio::spawn(async move {
                let mut sent = Vec::new();
                loop {
                    let claimed = store
                        .claim_webhooks(T0 + 10, 3, 60_000)
                        .await
                        .expect("claim");
                    if claimed.is_empty() {
                        return sent;
                    }
                    sent.extend(claimed.into_iter().map(|delivery| delivery.job_id));
                }
            })
        })
        .collect();
    let mut sent = Vec::new();
    for task in tasks {
        sent.extend(task.await.expect("dispatcher"));
    }
    let unique: HashSet<JobId> = sent.iter().copied().collect();
    assert_eq!(unique.len(), sent.len(), "a delivery was claimed twice");
    assert_eq!(unique, jobs, "every delivery was claimed");
    a.close().await;
    b.close().await;
}

/// Bounded enqueues on two handles at once fill the queue exactly to its limit.
pub async fn case_enqueue_within_is_exact_across_handles(url: &str) {
    let (a, b) = two_handles(url).await;
    const LIMIT: u64 = 25;
    let tasks: Vec<_> = (0..60)
        .map(|index| {
            let store = if index % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                store
                    .enqueue_within(new_job("m", 0), T0 + index, LIMIT)
                    .await
            })
        })
        .collect();
    let (mut created, mut full) = (0, 0);
    for task in tasks {
        match task.await.expect("task") {
            Ok(enqueued) => {
                assert!(enqueued.created);
                created += 1;
            }
            Err(crate::Error::QueueFull { limit }) => {
                assert_eq!(limit, LIMIT);
                full += 1;
            }
            Err(error) => panic!("enqueue failed: {error}"),
        }
    }
    assert_eq!((created, full), (LIMIT, 60 - LIMIT));
    assert_eq!(a.queue_depth().await.expect("depth"), LIMIT);
    assert_eq!(b.queue_depth().await.expect("depth"), LIMIT);
    a.close().await;
    b.close().await;
}

/// Concurrent first uses of one idempotency key on two handles make one job, which every
/// caller gets back.
pub async fn case_idempotency_key_holds_across_handles(url: &str) {
    let (a, b) = two_handles(url).await;
    let tasks: Vec<_> = (0..20)
        .map(|index| {
            let store = if index % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let keyed = NewJob {
                    idempotency_key: Some("one-key".to_owned()),
                    ..new_job("m", 0)
                };
                if index % 3 == 0 {
                    store.enqueue_within(keyed, T0 + index, 1_000).await
                } else {
                    store.enqueue(keyed, T0 + index).await
                }
                .expect("enqueue")
            })
        })
        .collect();
    let mut created = 0;
    let mut ids = HashSet::new();
    for task in tasks {
        let enqueued = task.await.expect("task");
        created += usize::from(enqueued.created);
        ids.insert(enqueued.job.id);
    }
    assert_eq!((created, ids.len()), (1, 1));
    assert_eq!(a.queue_depth().await.expect("depth"), 1);
    a.close().await;
    b.close().await;
}

/// Models (and so queue heads and the summary) are ordered byte by byte, as SQLite does,
/// whatever the database's locale: upper case before lower case.
pub async fn case_text_is_ordered_bytewise(store: &Store) {
    for model in ["b", "B", "a", "A"] {
        enqueue(store, new_job(model, 0), T0).await;
    }
    let heads: Vec<String> = store
        .queue_heads(T0)
        .await
        .expect("heads")
        .into_iter()
        .map(|head| head.model)
        .collect();
    assert_eq!(heads, ["A", "B", "a", "b"]);
    let summary: Vec<String> = store
        .queue_summary()
        .await
        .expect("summary")
        .into_iter()
        .map(|group| group.model)
        .collect();
    assert_eq!(summary, ["A", "B", "a", "b"]);
}

/// Every way a job with a webhook URL can finish leaves exactly one delivery: a running
/// job cancelled, a requeue that finds a cancel request, a rescue at the interruption
/// bound, a recovery of a cancelled job, an abandoned sync job; a job that goes back to
/// the queue leaves none.
pub async fn case_every_way_of_finishing_writes_one_delivery(store: &Store) {
    async fn hooked(store: &Store, sync: bool) -> Job {
        let mut job = new_job("m", 0);
        job.webhook_url = Some("http://hooks.example/in".to_owned());
        job.sync = sync;
        enqueue(store, job, T0).await
    }
    async fn deliveries(store: &Store, id: JobId) -> Vec<String> {
        store
            .webhooks_for_job(id)
            .await
            .expect("webhooks")
            .into_iter()
            .map(|delivery| {
                let payload: serde_json::Value =
                    serde_json::from_str(&delivery.payload).expect("json");
                payload["type"].as_str().expect("type").to_owned()
            })
            .collect()
    }

    let finished = hooked(store, false).await;
    claim(store, finished.id, "w", T0 + 1).await;
    store
        .cancel(finished.id, T0 + 2, cancel_reason())
        .await
        .expect("cancel");
    assert!(
        deliveries(store, finished.id).await.is_empty(),
        "still running"
    );
    store
        .finish_cancelled(finished.id, 1, "w", T0 + 3)
        .await
        .expect("finish")
        .expect("current");
    assert_eq!(deliveries(store, finished.id).await, ["job.cancelled"]);

    let requeued = hooked(store, false).await;
    claim(store, requeued.id, "w", T0 + 1).await;
    store
        .cancel(requeued.id, T0 + 2, cancel_reason())
        .await
        .expect("cancel");
    let job = store
        .requeue(requeued.id, 1, "w", T0 + 3)
        .await
        .expect("requeue")
        .expect("current");
    assert_eq!(job.state, JobState::Cancelled);
    assert_eq!(deliveries(store, requeued.id).await, ["job.cancelled"]);

    let back = hooked(store, false).await;
    claim(store, back.id, "w", T0 + 1).await;
    store
        .requeue(back.id, 1, "w", T0 + 2)
        .await
        .expect("requeue")
        .expect("current");
    assert!(deliveries(store, back.id).await.is_empty(), "queued again");

    let interrupted = hooked(store, false).await;
    let mut now = T0 + 10;
    for round in 1..=crate::MAX_INTERRUPTIONS {
        claim(store, interrupted.id, "w", now).await;
        now += LEASE_MS + 1;
        store.rescue_expired(now).await.expect("rescue");
        let expected: &[&str] = if round == crate::MAX_INTERRUPTIONS {
            &["job.failed"]
        } else {
            &[]
        };
        assert_eq!(
            deliveries(store, interrupted.id).await,
            expected,
            "round {round}"
        );
    }

    let recovered = hooked(store, false).await;
    claim(store, recovered.id, "w", now).await;
    store
        .cancel(recovered.id, now, cancel_reason())
        .await
        .expect("cancel");
    store.recover_running(now + 1).await.expect("recover");
    assert_eq!(deliveries(store, recovered.id).await, ["job.cancelled"]);

    let abandoned = hooked(store, true).await;
    store.abandon_sync_jobs(now + 2).await.expect("abandon");
    assert_eq!(deliveries(store, abandoned.id).await, ["job.cancelled"]);
}

/// A target's lease: taken when free, renewed by its holder, refused to another owner
/// until it expires, taken over at expiry, and released only by its holder. Leases of
/// other targets and the janitor's are apart, even under the same name.
pub async fn case_target_lease_acquire_renew_refuse_take_over_release(store: &Store) {
    let gpu = Lease::Target("gpu-a");
    let ttl = 10_000;
    assert_eq!(store.lease_holder(gpu).await.expect("holder"), None);
    assert!(
        store
            .acquire_lease(gpu, "a", T0, ttl)
            .await
            .expect("acquire")
    );
    assert_eq!(
        store.lease_holder(gpu).await.expect("holder"),
        Some(LeaseHolder {
            owner: "a".to_owned(),
            expires_at: T0 + ttl
        })
    );
    // Renewal moves the expiry.
    assert!(
        store
            .acquire_lease(gpu, "a", T0 + 3_000, ttl)
            .await
            .expect("renew")
    );
    assert_eq!(
        store
            .lease_holder(gpu)
            .await
            .expect("holder")
            .map(|h| h.expires_at),
        Some(T0 + 3_000 + ttl)
    );
    // Another owner is refused until the renewed expiry, and refusing changes nothing.
    assert!(
        !store
            .acquire_lease(gpu, "b", T0 + 12_000, ttl)
            .await
            .expect("refused")
    );
    assert!(
        !store
            .acquire_lease(gpu, "b", T0 + 12_999, ttl)
            .await
            .expect("refused")
    );
    assert_eq!(
        store.lease_holder(gpu).await.expect("holder"),
        Some(LeaseHolder {
            owner: "a".to_owned(),
            expires_at: T0 + 3_000 + ttl
        })
    );
    // Other names are free meanwhile: another target, the janitor, a target named like it.
    assert!(
        store
            .acquire_lease(Lease::Target("gpu-b"), "b", T0 + 12_000, ttl)
            .await
            .expect("other")
    );
    assert!(
        store
            .acquire_lease(Lease::Janitor, "b", T0 + 12_000, ttl)
            .await
            .expect("janitor")
    );
    assert!(
        store
            .acquire_lease(Lease::Target("janitor"), "a", T0 + 12_000, ttl)
            .await
            .expect("named")
    );
    // At expiry another owner takes it over, and the former holder is refused.
    assert!(
        store
            .acquire_lease(gpu, "b", T0 + 13_000, ttl)
            .await
            .expect("take over")
    );
    assert!(
        !store
            .acquire_lease(gpu, "a", T0 + 13_001, ttl)
            .await
            .expect("lost")
    );
    assert_eq!(
        store
            .lease_holder(gpu)
            .await
            .expect("holder")
            .map(|h| h.owner),
        Some("b".to_owned())
    );
    // Only the holder releases; then anyone takes it at once.
    assert!(!store.release_lease(gpu, "a").await.expect("not a's"));
    assert!(store.release_lease(gpu, "b").await.expect("release"));
    assert_eq!(store.lease_holder(gpu).await.expect("holder"), None);
    assert!(
        store
            .acquire_lease(gpu, "a", T0 + 14_000, ttl)
            .await
            .expect("free again")
    );
    assert!(matches!(
        store.acquire_lease(gpu, "a", T0, 0).await,
        Err(crate::Error::InvalidInput(_))
    ));
}

/// Many acquisitions of one free target lease at once, through two handles on one
/// database (two instances): exactly one owner wins.
pub async fn case_one_handle_wins_a_contested_target_lease(url: &str) {
    let (a, b) = two_handles(url).await;
    let tries: Vec<_> = (0..16)
        .map(|index| {
            let store = if index % 2 == 0 { a.clone() } else { b.clone() };
            tokio::spawn(async move {
                let owner = format!("instance-{index}");
                let won = store
                    .acquire_lease(Lease::Target("gpu"), &owner, T0, 10_000)
                    .await
                    .expect("acquire");
                (owner, won)
            })
        })
        .collect();
    let mut winners = Vec::new();
    for attempt in tries {
        let (owner, won) = attempt.await.expect("task");
        if won {
            winners.push(owner);
        }
    }
    assert_eq!(winners.len(), 1, "{winners:?}");
    let holder = b.lease_holder(Lease::Target("gpu")).await.expect("holder");
    assert_eq!(holder.map(|h| h.owner), Some(winners[0].clone()));
    a.close().await;
    b.close().await;
}

/// The janitor's leader lease through two handles (two instances): only one holds it,
/// each renewal keeps it, and the other gets it only once it expired.
pub async fn case_janitor_leader_is_one_handle_until_expiry(url: &str) {
    let (a, b) = two_handles(url).await;
    let ttl = 6_000;
    assert!(
        a.acquire_lease(Lease::Janitor, "a", T0, ttl)
            .await
            .expect("a leads")
    );
    let mut now = T0;
    for _ in 0..5 {
        now += ttl / 3;
        assert!(
            !b.acquire_lease(Lease::Janitor, "b", now, ttl)
                .await
                .expect("b waits")
        );
        assert!(
            a.acquire_lease(Lease::Janitor, "a", now, ttl)
                .await
                .expect("a renews")
        );
    }
    // a stops renewing (it died): b is refused until the last renewal's expiry.
    assert!(
        !b.acquire_lease(Lease::Janitor, "b", now + ttl - 1, ttl)
            .await
            .expect("not yet")
    );
    assert!(
        b.acquire_lease(Lease::Janitor, "b", now + ttl, ttl)
            .await
            .expect("b leads")
    );
    assert!(
        !a.acquire_lease(Lease::Janitor, "a", now + ttl + 1, ttl)
            .await
            .expect("a follows")
    );
    a.close().await;
    b.close().await;
}

// ---- API keys and their usage ----

fn api_key(name: &str, fill: u8) -> crate::NewApiKey {
    crate::NewApiKey {
        name: name.into(),
        prefix: format!("fk_{name}"),
        secret_sha256: [fill; 32],
        grant_json: format!(r#"{{"scopes":["chat"],"for":"{name}"}}"#),
    }
}

/// A key is created once per name (a revoked name stays taken), listed by name with
/// its digest and grant as given, revoked once, and its latest use only moves forward.
pub async fn case_api_keys_create_list_revoke(store: &Store) {
    assert!(store.api_keys().await.unwrap().is_empty());
    let created = store
        .create_api_key(api_key("ci-bot", 7), T0)
        .await
        .unwrap();
    assert_eq!(created.secret_sha256, [7; 32]);
    assert_eq!((created.created_at, created.revoked_at), (T0, None));
    store
        .create_api_key(api_key("alice", 9), T0 + 1)
        .await
        .unwrap();
    match store.create_api_key(api_key("ci-bot", 8), T0 + 2).await {
        Err(crate::Error::KeyExists(name)) => assert_eq!(name, "ci-bot"),
        other => panic!("a second ci-bot: {other:?}"),
    }
    let keys = store.api_keys().await.unwrap();
    let names: Vec<&str> = keys.iter().map(|k| k.name.as_str()).collect();
    assert_eq!(names, ["alice", "ci-bot"]);
    assert_eq!(keys[1], created);
    assert_eq!(keys[0].grant_json, api_key("alice", 9).grant_json);

    store
        .touch_api_keys(vec![("alice".into(), T0 + 50), ("nobody".into(), T0)])
        .await
        .unwrap();
    store
        .touch_api_keys(vec![("alice".into(), T0 + 10)])
        .await
        .unwrap();
    let alice = &store.api_keys().await.unwrap()[0];
    assert_eq!(alice.last_used_at, Some(T0 + 50));

    assert!(store.revoke_api_key("ci-bot", T0 + 100).await.unwrap());
    assert!(!store.revoke_api_key("ci-bot", T0 + 200).await.unwrap());
    assert!(!store.revoke_api_key("nobody", T0 + 200).await.unwrap());
    let keys = store.api_keys().await.unwrap();
    assert_eq!(keys[1].revoked_at, Some(T0 + 100));
    assert_eq!(keys[0].revoked_at, None);
    assert!(matches!(
        store.create_api_key(api_key("ci-bot", 3), T0 + 300).await,
        Err(crate::Error::KeyExists(_))
    ));
}

/// Deltas add up in their key's bucket of their hour; reads start at the hour holding
/// `since` and may be limited to one key.
pub async fn case_key_usage_adds_up_per_key_and_hour(store: &Store) {
    let hour = crate::usage_hour(T0);
    let delta = |key: &str, hour: i64, requests: i64, tokens: i64| crate::UsageDelta {
        key_name: key.into(),
        hour,
        requests,
        prompt_tokens: tokens,
        completion_tokens: 2 * tokens,
        gpu_ms: 10 * tokens,
        loads: 1,
    };
    store
        .add_key_usage(vec![delta("a", hour, 1, 5), delta("b", hour, 2, 1)])
        .await
        .unwrap();
    store
        .add_key_usage(vec![
            delta("a", hour, 3, 7),
            delta("a", hour + crate::USAGE_HOUR_MS, 1, 1),
        ])
        .await
        .unwrap();
    let all = store.key_usage(None, T0).await.unwrap();
    assert_eq!(
        all,
        vec![
            crate::UsageDelta {
                loads: 2,
                ..delta("a", hour, 4, 12)
            },
            delta("a", hour + crate::USAGE_HOUR_MS, 1, 1),
            delta("b", hour, 2, 1),
        ]
    );
    let later = store
        .key_usage(Some("a"), hour + crate::USAGE_HOUR_MS + 5)
        .await
        .unwrap();
    assert_eq!(later, vec![delta("a", hour + crate::USAGE_HOUR_MS, 1, 1)]);
    assert!(store.key_usage(Some("c"), 0).await.unwrap().is_empty());
}

/// A key created or revoked through one handle (the `foreman keys` command) is seen by
/// another (the daemon) at its next read.
pub async fn case_api_keys_are_shared_between_handles(url: &str) {
    let one = Store::open(url).await.unwrap();
    let two = Store::open(url).await.unwrap();
    one.create_api_key(api_key("ci-bot", 1), T0).await.unwrap();
    let seen = two.api_keys().await.unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].secret_sha256, [1; 32]);
    assert!(matches!(
        two.create_api_key(api_key("ci-bot", 2), T0).await,
        Err(crate::Error::KeyExists(_))
    ));
    assert!(two.revoke_api_key("ci-bot", T0 + 1).await.unwrap());
    assert_eq!(one.api_keys().await.unwrap()[0].revoked_at, Some(T0 + 1));
    one.close().await;
    two.close().await;
}

fn stored_file(id: &str, purpose: &str, created_at: i64) -> crate::StoredFile {
    crate::StoredFile {
        id: id.to_owned(),
        purpose: purpose.to_owned(),
        filename: format!("{id}.jsonl"),
        bytes: 42,
        lines: 3,
        created_at,
        expires_at: None,
    }
}

fn new_batch(id: &str) -> crate::Batch {
    crate::Batch {
        metadata: Some(r#"{"k":"v"}"#.to_owned()),
        ..crate::Batch::validating(
            id.to_owned(),
            "/v1/chat/completions".to_owned(),
            "file-in".to_owned(),
            T0,
            T0 + 86_400_000,
        )
    }
}

/// Files past their `expires_at` are found, soonest first and at most the limit; a file
/// without one never is, and the expiry reads back as written.
pub async fn case_expired_files_are_found_soonest_first(store: &Store) {
    for (id, expires_at) in [
        ("file-late", Some(T0 + 300)),
        ("file-never", None),
        ("file-soon", Some(T0 + 100)),
        ("file-mid", Some(T0 + 200)),
    ] {
        let mut file = stored_file(id, "batch_output", T0);
        file.expires_at = expires_at;
        store.insert_file(file).await.expect("insert");
    }
    assert_eq!(
        store
            .get_file("file-mid")
            .await
            .expect("get")
            .unwrap()
            .expires_at,
        Some(T0 + 200)
    );
    let ids = |files: Vec<crate::StoredFile>| files.into_iter().map(|f| f.id).collect::<Vec<_>>();
    assert!(
        store
            .expired_files(T0 + 99, 10)
            .await
            .expect("read")
            .is_empty()
    );
    assert_eq!(
        ids(store.expired_files(T0 + 200, 10).await.expect("read")),
        ["file-soon", "file-mid"]
    );
    assert_eq!(
        ids(store.expired_files(T0 + 1_000, 2).await.expect("read")),
        ["file-soon", "file-mid"]
    );
    assert_eq!(
        ids(store.expired_files(T0 + 1_000, 10).await.expect("read")),
        ["file-soon", "file-mid", "file-late"]
    );
    assert!(store.delete_file("file-soon").await.expect("delete"));
    assert_eq!(
        ids(store.expired_files(T0 + 1_000, 10).await.expect("read")),
        ["file-mid", "file-late"]
    );
}

/// Files: recorded once per id, read back, listed by purpose in both orders with a cursor,
/// and deleted.
pub async fn case_files_are_recorded_listed_and_deleted(store: &Store) {
    for (id, purpose) in [
        ("file-a", "batch"),
        ("file-b", "batch_output"),
        ("file-c", "batch"),
    ] {
        store
            .insert_file(stored_file(id, purpose, T0))
            .await
            .expect("insert");
    }
    // The same id again (a file written again after a crash) changes nothing.
    let mut again = stored_file("file-a", "batch", T0 + 5);
    again.bytes = 7;
    store.insert_file(again).await.expect("insert again");
    assert_eq!(
        store.get_file("file-a").await.expect("get"),
        Some(stored_file("file-a", "batch", T0))
    );
    assert_eq!(store.get_file("file-z").await.expect("get"), None);
    let ids = |files: Vec<crate::StoredFile>| files.into_iter().map(|f| f.id).collect::<Vec<_>>();
    let all = crate::FileListParams {
        limit: 10,
        ..Default::default()
    };
    assert_eq!(
        ids(store.list_files(all.clone()).await.expect("list")),
        ["file-c", "file-b", "file-a"]
    );
    let batch_only = crate::FileListParams {
        purpose: Some("batch".to_owned()),
        ascending: true,
        ..all.clone()
    };
    assert_eq!(
        ids(store.list_files(batch_only.clone()).await.expect("list")),
        ["file-a", "file-c"]
    );
    let after = crate::FileListParams {
        after: Some("file-a".to_owned()),
        limit: 1,
        ..batch_only
    };
    assert_eq!(
        ids(store.list_files(after).await.expect("list")),
        ["file-c"]
    );
    assert!(store.delete_file("file-b").await.expect("delete"));
    assert!(!store.delete_file("file-b").await.expect("delete again"));
    assert_eq!(
        ids(store.list_files(all).await.expect("list")),
        ["file-c", "file-a"]
    );
}

/// A batch's driver writes only over the status it read: a cancel in between wins, and a
/// cancel of a batch that already left `in_progress` changes nothing. Open batches are
/// those not terminal or with the end's webhook still due.
pub async fn case_batch_saves_are_guarded_by_the_status_read(store: &Store) {
    use crate::BatchStatus;
    store
        .insert_batch(new_batch("batch_1"))
        .await
        .expect("insert");
    // The creator's key and weight read back as written.
    let owned = crate::Batch {
        caller: Some(crate::JobCaller {
            name: "ci-bot".to_owned(),
            weight: 3,
        }),
        ..new_batch("batch_2")
    };
    store.insert_batch(owned.clone()).await.expect("insert");
    assert_eq!(store.get_batch("batch_2").await.expect("get"), Some(owned));
    let mut batch = store
        .get_batch("batch_1")
        .await
        .expect("get")
        .expect("found");
    assert_eq!(batch, new_batch("batch_1"));
    batch.status = BatchStatus::InProgress;
    batch.in_progress_at = Some(T0 + 1);
    batch.total = 3;
    assert!(
        store
            .save_batch(batch.clone(), BatchStatus::Validating)
            .await
            .expect("save")
    );
    // A save from a driver that read an older status changes nothing.
    let mut stale = batch.clone();
    stale.status = BatchStatus::Failed;
    assert!(
        !store
            .save_batch(stale, BatchStatus::Validating)
            .await
            .expect("stale save")
    );
    assert!(store.cancel_batch("batch_1", T0 + 2).await.expect("cancel"));
    let cancelling = store
        .get_batch("batch_1")
        .await
        .expect("get")
        .expect("found");
    assert_eq!(cancelling.status, BatchStatus::Cancelling);
    assert_eq!(cancelling.ending, Some(BatchStatus::Cancelled));
    assert_eq!(cancelling.cancelling_at, Some(T0 + 2));
    assert_eq!(cancelling.total, 3);
    // The driver's save over `in_progress` loses to the cancel.
    batch.completed = 2;
    assert!(
        !store
            .save_batch(batch, BatchStatus::InProgress)
            .await
            .expect("save")
    );
    let mut done = cancelling.clone();
    done.status = BatchStatus::Cancelled;
    done.cancelled_at = Some(T0 + 3);
    done.output_file_id = Some("file-out".to_owned());
    assert!(
        store
            .save_batch(done.clone(), BatchStatus::Cancelling)
            .await
            .expect("save")
    );
    assert!(!store.cancel_batch("batch_1", T0 + 4).await.expect("cancel"));
    let open: Vec<String> = store
        .open_batches()
        .await
        .expect("open")
        .into_iter()
        .map(|b| b.id)
        .collect();
    // batch_1 is terminal but its webhook is not marked done yet.
    assert_eq!(open, ["batch_1", "batch_2"]);
    done.webhook_done = true;
    assert!(
        store
            .save_batch(done, BatchStatus::Cancelled)
            .await
            .expect("save")
    );
    let open: Vec<String> = store
        .open_batches()
        .await
        .expect("open")
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(open, ["batch_2"]);
    let listed: Vec<String> = store
        .list_batches(None, 10)
        .await
        .expect("list")
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(listed, ["batch_2", "batch_1"]);
    let after: Vec<String> = store
        .list_batches(Some("batch_2".to_owned()), 10)
        .await
        .expect("list")
        .into_iter()
        .map(|b| b.id)
        .collect();
    assert_eq!(after, ["batch_1"]);
    let mut bad = new_batch("batch_3");
    bad.ending = Some(BatchStatus::InProgress);
    assert!(matches!(
        store.insert_batch(bad).await,
        Err(crate::Error::InvalidInput(_))
    ));
}

/// A chunk of a batch's lines enqueued twice (a driver that crashed after the commit)
/// makes each line's job once, and the count of enqueued lines only grows.
pub async fn case_batch_lines_are_enqueued_once(store: &Store) {
    store
        .insert_batch(new_batch("batch_9"))
        .await
        .expect("insert");
    let lines = |range: std::ops::Range<i64>| {
        range
            .map(|line| NewJob {
                id: Some(JobId::generate()),
                idempotency_key: Some(format!("batch:batch_9:{line}")),
                ..new_job("m", -10)
            })
            .collect::<Vec<_>>()
    };
    let first = lines(0..3);
    let ids: Vec<JobId> = first.iter().map(|job| job.id.expect("id")).collect();
    // How many jobs a chunk created.
    let created = async |jobs: Vec<NewJob>, enqueued: i64, now: i64| {
        store
            .enqueue_batch_lines("batch_9", jobs, enqueued, now)
            .await
            .expect("enqueue")
            .len()
    };
    assert_eq!(created(first, 3, T0).await, 3);
    // Again with fresh ids, as a restarted driver might: the keys find the jobs.
    assert_eq!(created(lines(0..3), 3, T0 + 1).await, 0);
    assert_eq!(created(lines(3..4), 4, T0 + 2).await, 1);
    // An older count does not move it back.
    assert_eq!(created(Vec::new(), 2, T0 + 3).await, 0);
    assert_eq!(store.queue_depth().await.expect("depth"), 4);
    for id in ids {
        let job = store.get(id).await.expect("get").expect("the line's job");
        assert_eq!(job.priority, -10);
    }
    let batch = store
        .get_batch("batch_9")
        .await
        .expect("get")
        .expect("found");
    assert_eq!(batch.enqueued, 4);
    let no_id = NewJob {
        id: None,
        ..new_job("m", 0)
    };
    assert!(matches!(
        store
            .enqueue_batch_lines("batch_9", vec![no_id], 5, T0)
            .await,
        Err(crate::Error::InvalidInput(_))
    ));
}

/// `get_many` returns, in one read, every job among the ids that exists, each once and
/// as `get` reads it; ids without a job (never enqueued, pruned) are simply absent.
pub async fn case_get_many_reads_the_jobs_that_exist(store: &Store) {
    assert_eq!(
        store.get_many(&[]).await.expect("no ids"),
        Vec::<Job>::new()
    );
    let mut made = Vec::new();
    for n in 0..600 {
        made.push(enqueue(store, new_job(&format!("m{}", n % 3), 0), T0 + n).await);
    }
    let finished = claim(store, made[1].id, "w", T0 + 1_000).await;
    store
        .complete(
            finished.id,
            finished.attempts,
            "w",
            r#"{"ok":true}"#.to_owned(),
            T0 + 1_001,
        )
        .await
        .expect("complete")
        .expect("its run's outcome");
    let missing = JobId::generate();
    let mut wanted: Vec<JobId> = made.iter().map(|job| job.id).collect();
    wanted.insert(300, missing);
    wanted.push(made[5].id);
    let mut read = store.get_many(&wanted).await.expect("get_many");
    read.sort_by_key(|job| job.id);
    let mut expected = Vec::new();
    for job in &made {
        expected.push(get(store, job.id).await);
    }
    expected.sort_by_key(|job| job.id);
    assert_eq!(read.len(), 600, "each job once, the missing id absent");
    assert_eq!(read, expected);
    let done = read.iter().find(|job| job.id == made[1].id).expect("read");
    assert_eq!(done.state, JobState::Succeeded);
    assert_eq!(done.result.as_deref(), Some(r#"{"ok":true}"#));
    assert_eq!(
        store.get_many(&[missing]).await.expect("only missing"),
        Vec::<Job>::new()
    );
}
