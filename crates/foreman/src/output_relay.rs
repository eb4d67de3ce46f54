//! A job's output across instances, on a shared (PostgreSQL) store.
//!
//! The runner's side ([`Forwarder`]): when the job it runs has no reader in its own
//! process (its synchronous caller, or an event stream, is connected to another
//! instance), its body chunks also go to the store, in batches (at most
//! [`BATCH_WINDOW`] after the first chunk of a batch, or once [`BATCH_BYTES`] are
//! pending), in order, each batch's insert sending `out:ID` at its commit. The chunk
//! that ends the answer goes as a batch marked `last`, written before the outcome's
//! commit. A job whose reader is in the runner's process is relayed in memory only, as
//! on SQLite, and writes nothing.
//!
//! The reader's side ([`Pull`]): a feed open in this process's hub that no runner here
//! keeps is filled from the store's batches after its cursor, on `out:ID` signals (or at
//! every catch-up, which `FOREMAN_SIGNALS=poll` runs every poll interval). A `last`
//! batch is relayed only once the job's row is terminal, read before the batches, and
//! then the feed ends with the row's outcome: no caller sees the end of an answer before
//! its outcome is committed, on this path too.
//!
//! A run cut off before its end (its instance lost the job's lease, or its shutdown
//! grace ran out) leaves a relayed feed with part of an answer; the job runs again. The
//! feed then ends with a 503, as a caller on the runner's own instance is told
//! ([`cut_off`]), instead of going on with the next run's output: the reader notices
//! when the job's row no longer shows the run it relayed (read at `job:ID`, `end:ID`
//! and every catch-up), when batches of another attempt come, or when a runner of its
//! own process is about to run the job.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use foreman_store::{Job, JobFailure, JobId, JobState, OutputBatch, OutputCursor, Store};
use tokio::sync::{Mutex, mpsc};
use tokio::task::JoinHandle;

use crate::hub::{Hub, Outcome};

/// How long a batch collects chunks after its first one.
pub const BATCH_WINDOW: Duration = Duration::from_millis(50);

/// A batch is written at once when it holds this many bytes.
pub const BATCH_BYTES: usize = 64 * 1024;

/// How long the runner waits for its last batch to be written before it commits the
/// outcome anyway (the store is then most likely failing the commit too).
const FINISH_TIMEOUT: Duration = Duration::from_secs(10);

enum Message {
    /// The target's content type, sent once before any chunk.
    Start(String),
    Chunk(Bytes),
    /// The end of the answer, written as the `last` batch.
    Last(Bytes),
}

/// The writer of one attempt's output to the store (see the module doc).
pub struct Forwarder {
    sender: Option<mpsc::UnboundedSender<Message>>,
    writer: JoinHandle<()>,
    /// A batch was (or is being) written: a reader elsewhere may have taken it.
    written: Arc<AtomicBool>,
}

impl Forwarder {
    /// A forwarder for `attempt` of job `id`, when its output must cross instances: the
    /// store is shared and nobody in this process reads the job.
    pub fn for_job(store: &Store, hub: &Hub, id: JobId, attempt: u32) -> Option<Forwarder> {
        if !store.is_shared() || hub.has_reader(id) {
            return None;
        }
        let (sender, receiver) = mpsc::unbounded_channel();
        let written = Arc::new(AtomicBool::new(false));
        let writer = tokio::spawn(write_batches(
            store.clone(),
            id,
            attempt,
            receiver,
            written.clone(),
        ));
        Some(Forwarder {
            sender: Some(sender),
            writer,
            written,
        })
    }

    /// The target started answering with this content type; call before any chunk.
    pub fn start(&self, content_type: &str) {
        self.send(Message::Start(content_type.to_owned()));
    }

    /// Passes one body chunk on.
    pub fn chunk(&self, chunk: Bytes) {
        self.send(Message::Chunk(chunk));
    }

    fn send(&self, message: Message) {
        if let Some(sender) = &self.sender {
            // The writer only stops when the forwarder goes.
            let _ = sender.send(message);
        }
    }

    /// Writes what is pending and then `last`, the end of the answer, and waits until
    /// both are written: call before committing the outcome.
    pub async fn finish(mut self, last: Bytes) {
        self.send(Message::Last(last));
        self.sender = None;
        if tokio::time::timeout(FINISH_TIMEOUT, &mut self.writer)
            .await
            .is_err()
        {
            tracing::warn!("the job's output for other instances was not written in time");
            self.writer.abort();
        }
    }

    /// Stops forwarding, dropping what is not written yet; true if any batch was
    /// written (so the attempt's output may have reached a reader elsewhere).
    pub fn abandon(self) -> bool {
        self.writer.abort();
        self.written.load(Ordering::SeqCst)
    }
}

/// The writer task: collects chunks into batches and appends them in order.
async fn write_batches(
    store: Store,
    id: JobId,
    attempt: u32,
    mut receiver: mpsc::UnboundedReceiver<Message>,
    written: Arc<AtomicBool>,
) {
    let mut writer = BatchWriter {
        store,
        id,
        attempt,
        seq: 0,
        content_type: String::new(),
        written,
    };
    while let Some(first) = receiver.recv().await {
        let mut pending = Vec::new();
        let mut last = None;
        match first {
            Message::Start(content_type) => {
                writer.content_type = content_type;
                continue;
            }
            Message::Chunk(chunk) => pending.extend_from_slice(&chunk),
            Message::Last(chunk) => last = Some(chunk),
        }
        if last.is_none() {
            let window = tokio::time::sleep(BATCH_WINDOW);
            tokio::pin!(window);
            while pending.len() < BATCH_BYTES {
                tokio::select! {
                    _ = &mut window => break,
                    message = receiver.recv() => match message {
                        Some(Message::Start(content_type)) => writer.content_type = content_type,
                        Some(Message::Chunk(chunk)) => pending.extend_from_slice(&chunk),
                        Some(Message::Last(chunk)) => {
                            last = Some(chunk);
                            break;
                        }
                        None => break,
                    },
                }
            }
        }
        if !pending.is_empty() {
            writer.append(pending, false).await;
        }
        if let Some(last) = last {
            writer.append(last.to_vec(), true).await;
            return;
        }
    }
}

struct BatchWriter {
    store: Store,
    id: JobId,
    attempt: u32,
    seq: u32,
    content_type: String,
    written: Arc<AtomicBool>,
}

impl BatchWriter {
    async fn append(&mut self, bytes: Vec<u8>, last: bool) {
        let batch = OutputBatch {
            attempt: self.attempt,
            seq: self.seq,
            content_type: self.content_type.clone(),
            bytes,
            last,
        };
        self.seq += 1;
        self.written.store(true, Ordering::SeqCst);
        if let Err(error) = self.store.append_output(self.id, &batch).await {
            tracing::warn!(%error, job = %self.id, "cannot write the job's output for other instances");
        }
    }
}

/// Fills the feeds read here but run elsewhere from the store's batches (see the module
/// doc); one per process, driven by the signal relay, and asked by this process's runners
/// before they run a job (see [`Pull::cut_before_rerun`]).
///
/// Each job's pulls take turns on that job's own lock, so batches reach its feed once
/// each and in order, while the pulls of different jobs (each a store read or two) run
/// side by side.
#[derive(Default)]
pub struct Pull {
    /// Per job pulled here: where its relayed feed is in the job's output and which run
    /// fed it (`None` until a batch was relayed), behind the lock its pulls take turns on.
    feeds: std::sync::Mutex<HashMap<JobId, Arc<Mutex<Option<Relayed>>>>>,
}

/// A feed that has taken output relayed from the store.
#[derive(Debug, Clone)]
struct Relayed {
    cursor: OutputCursor,
    /// The lease owner of the run whose output it took, when its row showed it.
    run: Option<String>,
}

impl Relayed {
    /// Whether `job`'s row (not terminal) still shows the run whose output was relayed.
    fn same_run(&self, job: &Job) -> bool {
        job.state == JobState::Running
            && job.attempts == self.cursor.attempt
            && self
                .run
                .as_ref()
                .is_none_or(|run| job.lease_owner.as_deref() == Some(run.as_str()))
    }
}

impl Pull {
    /// Relays the batches of job `id` written since the last pull, if its feed is read
    /// here and runs elsewhere. With `check_row`, the job's row is read first: if it is
    /// terminal, the `last` batch is relayed too and the feed ends with the row's outcome;
    /// if the run whose output the feed took is no longer the job's (requeued at the end
    /// of a shutdown grace, rescued after its lease lapsed, claimed again), the feed is
    /// cut (see [`cut_off`]). Batches of another attempt than the one relayed cut it too.
    pub async fn pull(&self, store: &Store, hub: &Hub, id: JobId, check_row: bool) {
        if !hub.relayed(id) {
            self.forget(id);
            return;
        }
        let slot = self.slot(id);
        let mut feed = slot.lock().await;
        self.pull_locked(store, hub, id, check_row, &mut feed).await;
        let done = feed.is_none();
        drop(feed);
        if done {
            self.release(id, slot);
        }
    }

    /// [`Pull::pull`] with the job's turn taken; `feed` is its relayed feed, left `None`
    /// when the feed ended here or took nothing yet.
    async fn pull_locked(
        &self,
        store: &Store,
        hub: &Hub,
        id: JobId,
        check_row: bool,
        feed: &mut Option<Relayed>,
    ) {
        let relayed = feed.clone();
        // The first batch's run is learned from the row.
        let row = if check_row || relayed.is_none() {
            match store.get(id).await {
                Ok(row) => row,
                Err(error) => {
                    tracing::warn!(%error, job = %id, "cannot read a job whose output runs elsewhere");
                    return;
                }
            }
        } else {
            None
        };
        if let (Some(relayed), Some(job)) = (&relayed, &row)
            && !job.state.is_terminal()
            && !relayed.same_run(job)
        {
            *feed = None;
            cut(hub, id);
            return;
        }
        let ended = row.as_ref().filter(|job| job.state.is_terminal());
        let batches = match store
            .read_output(id, relayed.as_ref().map(|relayed| relayed.cursor))
            .await
        {
            Ok(batches) => batches,
            Err(error) => {
                tracing::warn!(%error, job = %id, "cannot read a job's output from another instance");
                return;
            }
        };
        let mut ended_in_stream = false;
        for batch in batches {
            if let Some(relayed) = feed.as_ref()
                && batch.attempt != relayed.cursor.attempt
            {
                // Another run's output after this one's was cut off.
                *feed = None;
                cut(hub, id);
                return;
            }
            if batch.last && ended.is_none() {
                break;
            }
            match feed.as_mut() {
                Some(relayed) => relayed.cursor = batch.cursor(),
                None => {
                    hub.start(id, &batch.content_type);
                    let run = row
                        .as_ref()
                        .filter(|job| {
                            job.state == JobState::Running && job.attempts == batch.attempt
                        })
                        .and_then(|job| job.lease_owner.clone());
                    *feed = Some(Relayed {
                        cursor: batch.cursor(),
                        run,
                    });
                }
            }
            ended_in_stream |= batch.last;
            if !batch.bytes.is_empty() {
                hub.chunk(id, Bytes::from(batch.bytes));
            }
        }
        if let Some(job) = ended {
            *feed = None;
            hub.finish(id, outcome(job.state, job.failure.clone(), ended_in_stream));
        }
    }

    /// Pulls every feed read here but run elsewhere, rows checked (after signals may
    /// have been missed, and at every poll).
    pub async fn pull_all(&self, store: &Store, hub: &Hub) {
        let relayed = hub.relayed_feeds();
        self.map().retain(|id, _| relayed.contains(id));
        for id in relayed {
            self.pull(store, hub, id, true).await;
        }
    }

    /// A runner of this process is about to run job `id`: if its feed here took output
    /// relayed from an earlier run elsewhere, that run was cut off, and the feed ends
    /// (see [`cut_off`]) before this run's output could follow it.
    pub async fn cut_before_rerun(&self, hub: &Hub, id: JobId) {
        let Some(slot) = self.map().get(&id).cloned() else {
            return;
        };
        let relayed = slot.lock().await.take();
        self.release(id, slot);
        if relayed.is_some() {
            cut(hub, id);
        }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Arc<Mutex<Option<Relayed>>>>> {
        self.feeds.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Job `id`'s turn lock and feed, made when it has none.
    fn slot(&self, id: JobId) -> Arc<Mutex<Option<Relayed>>> {
        self.map().entry(id).or_default().clone()
    }

    /// Drops job `id`'s entry, whatever it holds (its feed is not relayed here any more).
    fn forget(&self, id: JobId) {
        self.map().remove(&id);
    }

    /// Drops job `id`'s entry once its feed is empty and no other pull holds or waits
    /// for its turn (`slot` is the caller's handle on it): a later pull starts afresh.
    fn release(&self, id: JobId, slot: Arc<Mutex<Option<Relayed>>>) {
        let mut map = self.map();
        let idle = map.get(&id).is_some_and(|held| {
            Arc::ptr_eq(held, &slot)
                && Arc::strong_count(held) == 2
                && held.try_lock().is_ok_and(|feed| feed.is_none())
        });
        if idle {
            map.remove(&id);
        }
    }
}

/// Ends a relayed feed whose run was cut off.
fn cut(hub: &Hub, id: JobId) {
    tracing::info!(job = %id, "the run relayed to a caller here was cut off on another instance");
    hub.finish(id, cut_off());
}

/// How a caller here hears that the run it was streamed from another instance stopped
/// before its end (that instance lost the job's lease, or its shutdown grace ran out):
/// as a caller of that instance does, with a 503; the job runs again, and its next run's
/// output is not glued to the part this caller has.
pub fn cut_off() -> Outcome {
    Outcome::Failed {
        failure: JobFailure {
            status: 503,
            message: "the job's run on another foreman instance was cut off (its lease was lost or that instance shut down); the job was requeued and runs again".into(),
        },
        from_target: None,
    }
}

/// The outcome a caller hears for a job that ended elsewhere, from its row.
fn outcome(state: JobState, failure: Option<JobFailure>, ended_in_stream: bool) -> Outcome {
    match state {
        JobState::Succeeded => Outcome::Succeeded,
        JobState::Cancelled => Outcome::Cancelled,
        // The runner's last batch carried the stream's error line.
        _ if ended_in_stream => Outcome::FailedInStream,
        _ => Outcome::Failed {
            failure: failure.unwrap_or(JobFailure {
                status: 500,
                message: "the job failed on another foreman instance".into(),
            }),
            from_target: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_end_elsewhere_is_told_as_the_row_says() {
        let failure = JobFailure {
            status: 404,
            message: "model not found".into(),
        };
        assert_eq!(outcome(JobState::Succeeded, None, true), Outcome::Succeeded);
        assert_eq!(
            outcome(JobState::Cancelled, None, false),
            Outcome::Cancelled
        );
        assert_eq!(
            outcome(JobState::Failed, Some(failure.clone()), true),
            Outcome::FailedInStream
        );
        assert_eq!(
            outcome(JobState::Failed, Some(failure.clone()), false),
            Outcome::Failed {
                failure,
                from_target: None
            }
        );
    }
}
