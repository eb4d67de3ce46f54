//! Group commit for enqueues: enqueues that arrive while a commit is under way share
//! the next write transaction, and so one fsync.
//!
//! Every accepted job must be on disk (`synchronous=FULL`) before its caller hears
//! back, and one fsync per job caps a busy queue at the disk's sync rate. A single
//! task owns the batching: it takes the first waiting enqueue, everything else already
//! waiting (up to [`MAX_BATCH`]), inserts them all in one `BEGIN IMMEDIATE`
//! transaction, commits, and only then answers each caller. A lone enqueue still costs
//! one transaction, as before.

use sqlx::SqlitePool;
use sqlx::sqlite::SqliteConnection;
use tokio::sync::{mpsc, oneshot};

use super::queries;
use super::row::job_from_row;
use crate::error::{Error, Result};
use crate::job::{JobId, NewJob};
use crate::ops::Enqueued;

/// Most enqueues one transaction takes.
const MAX_BATCH: usize = 256;

/// One enqueue waiting for a commit.
pub(super) struct EnqueueRequest {
    pub new_job: NewJob,
    pub id: JobId,
    pub now: i64,
    pub reply: oneshot::Sender<Result<Enqueued>>,
}

/// Starts the batching task on the writer pool; it ends when every sender is gone.
pub(super) fn spawn(writer: SqlitePool) -> mpsc::UnboundedSender<EnqueueRequest> {
    let (sender, mut receiver) = mpsc::unbounded_channel::<EnqueueRequest>();
    tokio::spawn(async move {
        while let Some(first) = receiver.recv().await {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            commit(&writer, batch).await;
        }
    });
    sender
}

async fn commit(writer: &SqlitePool, batch: Vec<EnqueueRequest>) {
    let mut tx = match writer.begin_with("BEGIN IMMEDIATE").await {
        Ok(tx) => tx,
        Err(error) => return fail_all(batch, &error),
    };
    let mut outcomes = Vec::with_capacity(batch.len());
    for request in &batch {
        outcomes.push(insert(&mut tx, request).await);
    }
    match tx.commit().await {
        Ok(()) => {
            for (request, outcome) in batch.into_iter().zip(outcomes) {
                // A caller that gave up no longer listens; its job is recorded all the same.
                let _ = request.reply.send(outcome);
            }
        }
        Err(error) => fail_all(batch, &error),
    }
}

fn fail_all(batch: Vec<EnqueueRequest>, error: &sqlx::Error) {
    for request in batch {
        let _ = request
            .reply
            .send(Err(Error::GroupCommit(error.to_string())));
    }
}

/// Inserts one job, or finds the job an idempotency key already names (also one
/// inserted earlier in this same batch).
async fn insert(conn: &mut SqliteConnection, request: &EnqueueRequest) -> Result<Enqueued> {
    let new_job = &request.new_job;
    let inserted = sqlx::query(queries::INSERT_JOB)
        .bind(request.id.to_string())
        .bind(new_job.kind.as_str())
        .bind(&new_job.model)
        .bind(&new_job.payload)
        .bind(new_job.priority)
        .bind(i64::from(new_job.max_attempts))
        .bind(request.now)
        .bind(&new_job.idempotency_key)
        .bind(&new_job.webhook_url)
        .bind(&new_job.metadata)
        .fetch_optional(&mut *conn)
        .await?;
    match inserted {
        Some(row) => Ok(Enqueued {
            job: job_from_row(&row)?,
            created: true,
        }),
        None => {
            let row = sqlx::query(queries::SELECT_BY_IDEMPOTENCY_KEY)
                .bind(&new_job.idempotency_key)
                .fetch_one(&mut *conn)
                .await?;
            Ok(Enqueued {
                job: job_from_row(&row)?,
                created: false,
            })
        }
    }
}
