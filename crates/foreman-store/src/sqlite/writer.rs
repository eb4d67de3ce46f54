//! The writer: one thread that owns the store's only writing connection and commits
//! every write in the process, grouping the writes that wait into one transaction.
//!
//! Why a thread of its own: SQLite allows one writer at a time, so every write is
//! serialised anyway, and doing it on a dedicated thread costs one hand-off per write
//! instead of one per statement. Why grouping: a durable commit (`synchronous=FULL`)
//! costs an fsync, and one fsync per job caps a busy queue at the disk's sync rate. The
//! thread takes the first waiting write and everything else already waiting (up to
//! [`MAX_BATCH`]), runs each in a savepoint of one `BEGIN IMMEDIATE` transaction,
//! commits, and only then answers each caller. A write that fails rolls back to its
//! savepoint alone; a failed commit fails the whole batch.
//!
//! Writes are durable, soon durable, or relaxed. A batch with any durable write commits
//! with `synchronous=FULL`; any other batch commits with `NORMAL`, skipping the fsync.
//! Losing a relaxed write to a power cut is harmless (a lost claim leaves the job
//! queued, which is what recovery makes of a claimed job anyway), and the next durable
//! commit syncs the write-ahead log with it included, so order on disk is kept.
//!
//! A *soon* write (a run's outcome) is committed at once, so it survives a crash of
//! the process, and reaches the disk with the next durable commit or, when none comes
//! within [`SYNC_SOON`], with a small durable write the writer makes for it. So the
//! caller waiting on an outcome waits for no fsync of its own (under load the next
//! enqueue's fsync carries it); a power cut within that window loses the outcome, and
//! recovery runs the job again, as it would a job the cut caught running.

use std::panic::AssertUnwindSafe;
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use rusqlite::Connection;
use tokio::sync::oneshot;

use crate::commit_times::CommitTimes;
use crate::error::{Error, Result};

/// Most writes one transaction takes.
const MAX_BATCH: usize = 512;

/// The longest a soon-durable write waits for the disk (see the module doc).
pub(super) const SYNC_SOON: Duration = Duration::from_millis(50);

/// Whether a write's commit must reach the disk before its caller hears back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Durability {
    Durable,
    /// Committed at once, on the disk within [`SYNC_SOON`].
    Soon,
    Relaxed,
}

/// Answers a caller once the batch's commit is known: `Err` carries the commit's failure.
type Answer = Box<dyn FnOnce(std::result::Result<(), String>) + Send>;

/// A write that has run inside the transaction and waits for the commit.
struct Staged {
    ok: bool,
    answer: Answer,
}

/// One write waiting for the writer, with the caller's reply channel.
trait Operation: Send {
    /// Runs the write inside the batch's transaction.
    fn run(self: Box<Self>, conn: &Connection) -> Staged;
    /// Answers without running: the batch could not start.
    fn refuse(self: Box<Self>, error: String);
}

struct Pending<F, T> {
    write: F,
    reply: oneshot::Sender<Result<T>>,
}

impl<F, T> Operation for Pending<F, T>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T> + Send,
{
    fn run(self: Box<Self>, conn: &Connection) -> Staged {
        let Pending { write, reply } = *self;
        let outcome = write(conn);
        Staged {
            ok: outcome.is_ok(),
            answer: Box::new(move |commit| {
                let outcome = commit.map_err(Error::Write).and(outcome);
                // A caller that gave up no longer listens; the write stands all the same.
                let _ = reply.send(outcome);
            }),
        }
    }

    fn refuse(self: Box<Self>, error: String) {
        let _ = self.reply.send(Err(Error::Write(error)));
    }
}

struct Request {
    operation: Box<dyn Operation>,
    durability: Durability,
}

enum Message {
    Write(Request),
    /// Finish what is queued before this, close the connection, then answer.
    Close(oneshot::Sender<()>),
}

/// The handle callers write through. Cheap to clone; clones share the one thread.
#[derive(Debug, Clone)]
pub(super) struct Writer {
    sender: mpsc::Sender<Message>,
}

impl Writer {
    /// Starts the writer thread on `conn`, which must be set to `synchronous=FULL`;
    /// it adds the duration of each commit to `times`.
    pub(super) fn spawn(conn: Connection, times: Arc<CommitTimes>) -> std::io::Result<Writer> {
        let (sender, receiver) = mpsc::channel();
        std::thread::Builder::new()
            .name("foreman-sqlite-writer".to_owned())
            .spawn(move || run(conn, receiver, &times))?;
        Ok(Writer { sender })
    }

    /// Runs `write` in the next batch and returns its outcome once the batch is
    /// committed (durably, for a durable write).
    pub(super) async fn write<T, F>(&self, durability: Durability, write: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let operation = Box::new(Pending { write, reply });
        self.sender
            .send(Message::Write(Request {
                operation,
                durability,
            }))
            .map_err(|_| Error::Closed)?;
        answer.await.map_err(|_| Error::Closed)?
    }

    /// Lets the writes already queued finish, then closes the connection. Writes sent
    /// afterwards fail with [`Error::Closed`].
    pub(super) async fn close(&self) {
        let (done, closed) = oneshot::channel();
        if self.sender.send(Message::Close(done)).is_ok() {
            let _ = closed.await;
        }
    }
}

fn run(conn: Connection, receiver: mpsc::Receiver<Message>, times: &CommitTimes) {
    let mut synchronous = Durability::Durable;
    // When soon-durable writes committed without a sync must reach the disk.
    let mut sync_by: Option<Instant> = None;
    loop {
        let first = match sync_by {
            None => match receiver.recv() {
                Ok(message) => message,
                Err(_) => break,
            },
            Some(deadline) => {
                match receiver.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                    Ok(message) => message,
                    Err(mpsc::RecvTimeoutError::Timeout) => {
                        sync(&conn, &mut synchronous, times);
                        sync_by = None;
                        continue;
                    }
                    Err(mpsc::RecvTimeoutError::Disconnected) => break,
                }
            }
        };
        let mut batch = Vec::new();
        let mut close = None;
        match first {
            Message::Write(request) => batch.push(request),
            Message::Close(done) => close = Some(done),
        }
        while close.is_none() && batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(Message::Write(request)) => batch.push(request),
                Ok(Message::Close(done)) => close = Some(done),
                Err(_) => break,
            }
        }
        if !batch.is_empty() {
            let soon = batch.iter().any(|r| r.durability == Durability::Soon);
            match commit(&conn, batch, &mut synchronous, times) {
                Some(Durability::Durable) => sync_by = None,
                Some(_) if soon => {
                    sync_by.get_or_insert_with(|| Instant::now() + SYNC_SOON);
                }
                _ => {}
            }
        }
        // Relaxed writes arriving without a pause must not put the sync off.
        if sync_by.is_some_and(|deadline| Instant::now() >= deadline) {
            sync(&conn, &mut synchronous, times);
            sync_by = None;
        }
        if let Some(done) = close {
            if sync_by.is_some() {
                sync(&conn, &mut synchronous, times);
            }
            if let Err((_, error)) = conn.close() {
                tracing::warn!(%error, "closing the sqlite writer");
            }
            let _ = done.send(());
            return;
        }
    }
}

/// Makes the soon-durable writes committed so far durable: a small durable write (the
/// write probe's insert and delete), whose fsync of the write-ahead log carries them.
fn sync(conn: &Connection, synchronous: &mut Durability, times: &CommitTimes) {
    let (reply, _unheard) = oneshot::channel();
    let request = Request {
        operation: Box::new(Pending {
            write: super::maintenance::probe,
            reply,
        }),
        durability: Durability::Durable,
    };
    if commit(conn, vec![request], synchronous, times).is_none() {
        tracing::error!("the sqlite writer could not sync the outcomes committed last");
    }
}

/// Runs one batch in one transaction and answers every caller in it. Returns how it
/// committed (`Durable`: with an fsync; `Relaxed`: without), `None` if it did not.
fn commit(
    conn: &Connection,
    batch: Vec<Request>,
    synchronous: &mut Durability,
    times: &CommitTimes,
) -> Option<Durability> {
    let wanted = if batch.iter().any(|r| r.durability == Durability::Durable) {
        Durability::Durable
    } else {
        Durability::Relaxed
    };
    if *synchronous != wanted {
        let setting = match wanted {
            Durability::Durable => "PRAGMA synchronous = FULL",
            Durability::Soon | Durability::Relaxed => "PRAGMA synchronous = NORMAL",
        };
        if let Err(error) = execute_cached(conn, setting) {
            refuse_all(batch, &error);
            return None;
        }
        *synchronous = wanted;
    }
    // The statements a batch always runs are prepared once and kept.
    if let Err(error) = execute_cached(conn, "BEGIN IMMEDIATE") {
        refuse_all(batch, &error);
        return None;
    }
    let mut answers = Vec::with_capacity(batch.len());
    for request in batch {
        answers.push(run_in_savepoint(conn, request.operation));
    }
    let committing = Instant::now();
    let committed = execute_cached(conn, "COMMIT");
    times.record(committing.elapsed());
    match committed {
        Ok(_) => {
            for answer in answers {
                answer(Ok(()));
            }
            Some(wanted)
        }
        Err(error) => {
            let _ = conn.execute_batch("ROLLBACK");
            let message = error.to_string();
            for answer in answers {
                answer(Err(message.clone()));
            }
            None
        }
    }
}

/// Runs one write so that its failure undoes only its own changes.
fn run_in_savepoint(conn: &Connection, operation: Box<dyn Operation>) -> Answer {
    if let Err(error) = execute_cached(conn, "SAVEPOINT write") {
        operation.refuse(error.to_string());
        return Box::new(|_| {});
    }
    let staged = std::panic::catch_unwind(AssertUnwindSafe(|| operation.run(conn)));
    let ok = matches!(&staged, Ok(staged) if staged.ok);
    if !ok {
        let _ = execute_cached(conn, "ROLLBACK TO write");
    }
    let _ = execute_cached(conn, "RELEASE write");
    match staged {
        Ok(staged) => staged.answer,
        Err(_) => {
            tracing::error!("a store write panicked; its changes were rolled back");
            // The caller's reply channel went down with the write: it sees `Closed`.
            Box::new(|_| {})
        }
    }
}

fn execute_cached(conn: &Connection, sql: &str) -> rusqlite::Result<usize> {
    conn.prepare_cached(sql)?.execute([])
}

fn refuse_all(batch: Vec<Request>, error: &rusqlite::Error) {
    tracing::error!(%error, "a batch of store writes could not start");
    for request in batch {
        request.operation.refuse(error.to_string());
    }
}
