//! Group commit of enqueues: every plain enqueue (no idempotency key) waiting at one
//! moment is inserted by one statement in one transaction, with one synchronous commit.
//!
//! Why: an enqueue must reach the disk before it is answered, and a synchronous commit
//! costs a WAL flush plus four round trips to a server process that shares the CPU with
//! everything else. Made one by one from a pool, 64 clients' enqueues ran at a third of
//! the SQLite backend's rate, whose writer thread shares one fsync among every enqueue
//! waiting (`docs/BENCHMARKS.md`, PostgreSQL). Here one writer task per store does the
//! same: it takes everything queued for it (up to [`MAX_GROUP`]), and while its commit is
//! flushed the next group gathers, so the group grows with the load and a lone enqueue
//! pays only a hop between tasks.
//!
//! The queue limit stays exact: a group with a bounded enqueue in it holds the admission
//! lock exclusively (as the one-by-one path does near the limit), counts the queued jobs
//! (the ranking below gives the count) and admits its bounded enqueues in arrival order
//! while they fit, deleting the rows of those refused before the commit, so the count
//! and the inserts are one step across every instance. Enqueues with an idempotency key keep the
//! one-by-one path (the unique index decides between them). When the group's statement
//! fails, each of its enqueues is made again on its own, so one bad row never fails the
//! others, and each gets its own error.
//!
//! The same transaction ranks the group's jobs in the queue, one ordered pass for all of
//! them, and hands each its place ([`Enqueued::position`]): counting the jobs ahead of
//! each new job separately visits the whole queue once per enqueue (PostgreSQL checks
//! every counted row's visibility in the table), which cost more than everything else
//! an enqueue does.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use tokio::sync::{mpsc, oneshot};

use super::PgStore;
use super::row::job_from_row;
use crate::error::{Error, Result};
use crate::job::{JobId, NewJob};
use crate::ops::Enqueued;

/// The most enqueues one commit carries.
pub(super) const MAX_GROUP: usize = 512;

/// What the writer answers one enqueue.
pub(super) enum Answer {
    /// Inserted and committed.
    Inserted(Box<Enqueued>),
    /// Refused: the queue holds `limit` jobs (counted exactly).
    Full { limit: u64 },
    /// Not decided here (the writer is gone or the group's statement failed): the caller
    /// makes the enqueue, given back, on its own.
    Alone(Box<NewJob>),
}

/// One enqueue handed to the writer.
struct Request {
    job: NewJob,
    id: JobId,
    now: i64,
    limit: Option<u64>,
    reply: oneshot::Sender<Answer>,
}

/// The sending side, kept by every clone of the store that enqueues.
#[derive(Clone)]
pub(super) struct GroupCommit {
    sender: mpsc::UnboundedSender<Request>,
}

impl GroupCommit {
    /// Starts the writer task on the current runtime. `store` is the handle it writes
    /// through, one without a group commit of its own, so the task ends when the last
    /// [`GroupCommit`] is dropped.
    pub(super) fn start(store: PgStore) -> GroupCommit {
        let (sender, receiver) = mpsc::unbounded_channel();
        tokio::spawn(write(store, receiver));
        GroupCommit { sender }
    }

    /// Hands the enqueue of `job` as `id` to the writer and waits for its answer.
    pub(super) async fn enqueue(
        &self,
        job: NewJob,
        id: JobId,
        now: i64,
        limit: Option<u64>,
    ) -> Result<Answer> {
        let (reply, answer) = oneshot::channel();
        let request = Request {
            job,
            id,
            now,
            limit,
            reply,
        };
        if let Err(refused) = self.sender.send(request) {
            return Ok(Answer::Alone(Box::new(refused.0.job)));
        }
        answer.await.map_err(|_| {
            Error::Write(format!(
                "the enqueue writer stopped before job {id} was answered"
            ))
        })
    }
}

/// The writer: a group at a time, until every sender is gone.
async fn write(store: PgStore, mut receiver: mpsc::UnboundedReceiver<Request>) {
    let mut group = Vec::with_capacity(MAX_GROUP);
    while receiver.recv_many(&mut group, MAX_GROUP).await > 0 {
        let requests = std::mem::take(&mut group);
        match commit(&store, &requests).await {
            Ok(answers) => {
                for (request, answer) in requests.into_iter().zip(answers) {
                    let _ = request.reply.send(answer);
                }
            }
            Err(error) => {
                tracing::debug!(%error, size = requests.len(), "a group of enqueues failed; each is made alone");
                for request in requests {
                    let _ = request.reply.send(Answer::Alone(Box::new(request.job)));
                }
            }
        }
    }
}

/// Inserts a group in one transaction and answers each request, in the requests' order.
/// An error means nothing of the group was committed (or, if the connection died in the
/// COMMIT, that it cannot be known: each request is then made alone with its id, which
/// finds its row taken rather than make it twice).
async fn commit(store: &PgStore, requests: &[Request]) -> Result<Vec<Answer>> {
    let client = store.client().await?;
    match in_transaction(store, &client, requests).await {
        Ok(answers) => Ok(answers),
        Err(error) => {
            if client.batch_execute("ROLLBACK").await.is_err() {
                // A session in an unknown state never goes back to the pool.
                drop(deadpool_postgres::Object::take(client));
            }
            Err(error)
        }
    }
}

/// The transaction of [`commit`], in two round trips whatever the group's size: BEGIN,
/// the admission lock (when a request is bounded), the insert and the ranking of the
/// group in the queue, sent together; then COMMIT and the group's one announcement
/// (`new:ID`, in a statement of its own after the commit, as [`PgStore::announce_new`]
/// sends it), sent together, so a job is announced before its enqueue is answered.
///
/// The ranking also counts the queued jobs, so the queue limit is decided after the
/// insert: the requests are taken in arrival order, each bounded one refused when the
/// jobs queued before it reach its limit, and the refused ones' rows are deleted again
/// (and the rest ranked again) before the commit.
async fn in_transaction(
    store: &PgStore,
    client: &deadpool_postgres::Object,
    requests: &[Request],
) -> Result<Vec<Answer>> {
    let columns = Columns::of(requests, store.instance.as_deref())?;
    let (lock, insert, rank, announce) = tokio::try_join!(
        client.prepare_cached(super::queries::ADMISSION_LOCK),
        client.prepare_cached(&super::queries::INSERT_JOBS),
        client.prepare_cached(super::queries::QUEUE_POSITIONS),
        client.prepare_cached(super::queries::ANNOUNCE_NEW),
    )?;
    let bounded = requests.iter().any(|request| request.limit.is_some());
    let lock_taken = async {
        if bounded {
            client.execute(&lock, &[&super::ADMISSION_LOCK]).await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    };
    let (parameters, ids) = (columns.parameters(), [&columns.ids as _]);
    // Polled in this order, so sent in this order: the insert runs once the lock is
    // held, and the ranking sees the inserted rows.
    let (_, _, rows, ranked) = tokio::try_join!(
        client.batch_execute("BEGIN"),
        lock_taken,
        client.query(&insert, &parameters),
        client.query(&rank, &ids),
    )?;
    let mut inserted = HashMap::with_capacity(rows.len());
    for row in &rows {
        let job = job_from_row(row)?;
        inserted.insert(job.id, (job, None));
    }
    let mut queued = place(&mut inserted, &ranked)?.saturating_sub(requests.len() as u64);
    let mut refused = HashSet::new();
    for request in requests {
        match request.limit {
            Some(limit) if queued >= limit => {
                refused.insert(request.id);
            }
            _ => queued += 1,
        }
    }
    if !refused.is_empty() {
        let delete = client.prepare_cached(super::queries::DELETE_JOBS).await?;
        let gone: Vec<String> = refused.iter().map(JobId::to_string).collect();
        client.execute(&delete, &[&gone]).await?;
        let ranked = client.query(&rank, &ids).await?;
        place(&mut inserted, &ranked)?;
    }
    let first = requests
        .iter()
        .find(|request| !refused.contains(&request.id))
        .map(|request| format!("new:{}", request.id));
    let announced = async {
        if let Some(payload) = &first {
            // Only a wake-up: runners look at the queue every 250 ms when idle anyway.
            let _ = client.execute(&announce, &[payload]).await;
        }
    };
    let started = Instant::now();
    let (committed, ()) = tokio::join!(client.batch_execute("COMMIT"), announced);
    committed?;
    store.commit_times.record(started.elapsed());
    requests
        .iter()
        .map(|request| {
            if let (Some(limit), true) = (request.limit, refused.contains(&request.id)) {
                return Ok(Answer::Full { limit });
            }
            let (job, position) = inserted.remove(&request.id).ok_or_else(|| {
                Error::Write(format!(
                    "job {} was not inserted with its group",
                    request.id
                ))
            })?;
            Ok(Answer::Inserted(Box::new(Enqueued {
                job,
                created: true,
                position,
            })))
        })
        .collect()
}

/// Gives each inserted job its place from a ranking; returns the number of queued jobs
/// the ranking counted (0 when it ranked none of them).
fn place(
    inserted: &mut HashMap<JobId, (crate::Job, Option<u64>)>,
    ranked: &[tokio_postgres::Row],
) -> Result<u64> {
    let mut queued = 0;
    for row in ranked {
        let id: String = row.get(0);
        let id: JobId = id
            .parse()
            .map_err(|_| Error::Write(format!("a ranked job id {id:?} does not parse")))?;
        if let Some((_, position)) = inserted.get_mut(&id) {
            *position = Some(super::row::count(row.get(1)));
        }
        queued = super::row::count(row.get(2));
    }
    Ok(queued)
}

/// A group's requests as one array per column, for `UNNEST`, borrowing the requests'
/// text (a payload may be megabytes of images: it is not copied).
struct Columns<'a> {
    ids: Vec<String>,
    kinds: Vec<&'static str>,
    models: Vec<&'a str>,
    payloads: Vec<&'a str>,
    priorities: Vec<i32>,
    max_attempts: Vec<i32>,
    times: Vec<i64>,
    webhook_urls: Vec<Option<&'a str>>,
    metadata: Vec<Option<&'a str>>,
    load_options: Vec<&'a str>,
    sync: Vec<bool>,
    accepted_by: Vec<Option<&'a str>>,
    callers: Vec<Option<&'a str>>,
    caller_weights: Vec<i32>,
}

impl<'a> Columns<'a> {
    /// The parameters of `INSERT_JOBS`, in its order.
    fn parameters(&self) -> [&(dyn tokio_postgres::types::ToSql + Sync); 14] {
        [
            &self.ids,
            &self.kinds,
            &self.models,
            &self.payloads,
            &self.priorities,
            &self.max_attempts,
            &self.times,
            &self.webhook_urls,
            &self.metadata,
            &self.load_options,
            &self.sync,
            &self.accepted_by,
            &self.callers,
            &self.caller_weights,
        ]
    }

    fn of(requests: &'a [Request], accepted_by: Option<&'a str>) -> Result<Columns<'a>> {
        let n = requests.len();
        let mut columns = Columns {
            ids: Vec::with_capacity(n),
            kinds: Vec::with_capacity(n),
            models: Vec::with_capacity(n),
            payloads: Vec::with_capacity(n),
            priorities: Vec::with_capacity(n),
            max_attempts: Vec::with_capacity(n),
            times: Vec::with_capacity(n),
            webhook_urls: Vec::with_capacity(n),
            metadata: Vec::with_capacity(n),
            load_options: Vec::with_capacity(n),
            sync: Vec::with_capacity(n),
            accepted_by: Vec::with_capacity(n),
            callers: Vec::with_capacity(n),
            caller_weights: Vec::with_capacity(n),
        };
        for request in requests {
            let job = &request.job;
            let (caller, weight) = crate::job::caller_columns(job.caller.as_ref());
            columns.ids.push(request.id.to_string());
            columns.kinds.push(job.kind.as_str());
            columns.models.push(&job.model);
            columns.payloads.push(&job.payload);
            columns.priorities.push(job.priority);
            columns
                .max_attempts
                .push(super::attempt_i32(job.max_attempts)?);
            columns.times.push(request.now);
            columns.webhook_urls.push(job.webhook_url.as_deref());
            columns.metadata.push(job.metadata.as_deref());
            columns.load_options.push(&job.load_options);
            columns.sync.push(job.sync);
            columns.accepted_by.push(accepted_by);
            columns.callers.push(caller);
            columns
                .caller_weights
                .push(i32::try_from(weight).unwrap_or(i32::MAX));
        }
        Ok(columns)
    }
}
