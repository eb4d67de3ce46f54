//! In-process fan-out of a running job's output to the callers waiting on it.
//!
//! A synchronous caller opens a feed for its job before the job is enqueued; the
//! runner keeps the feed of the job it runs open too, appends the target's body
//! chunks as they arrive and finally an [`Outcome`]. Chunks are kept until the last
//! holder lets go, so a reader that falls behind still sees everything in order, and
//! a reader that joins a running job (`/jobs/{id}/events`) gets its output from the
//! first chunk.
//!
//! Output counts as delivered once a reader has taken a chunk. Until then a failed
//! attempt can be replayed: [`Hub::rewind`] drops its chunks, under the same lock
//! readers take them with, so no reader sees half of one attempt and then another.
//!
//! Apart from the feeds, the hub keeps a signal per watched job for those who wait on a
//! job's row rather than its output (long polls, event streams waiting for the
//! commit): the runner rings the signal of exactly the job whose outcome it recorded
//! ([`Hub::job_changed`]), so a thousand waiters on other jobs neither wake nor read
//! the store.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use foreman_store::{JobFailure, JobId};
use tokio::sync::Notify;

/// How a job ended, as its waiting caller must hear it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded,
    /// The job failed; the API renders `failure` in the caller's error shape, or
    /// replays the target's own answer when there is one.
    Failed {
        failure: JobFailure,
        from_target: Option<TargetAnswer>,
    },
    /// Failed, and the target's stream already carried the error line.
    FailedInStream,
    Cancelled,
}

/// An error answer of the target, kept as it came so that it reaches the caller as
/// the target sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetAnswer {
    pub content_type: String,
    pub body: Bytes,
}

/// What a reader gets next.
#[derive(Debug, Clone, PartialEq)]
pub enum FeedEvent {
    Chunk(Bytes),
    End(Outcome),
}

#[derive(Default)]
struct FeedState {
    content_type: Option<String>,
    chunks: Vec<Bytes>,
    outcome: Option<Outcome>,
    /// A reader has taken a chunk.
    delivered: bool,
}

#[derive(Default)]
struct Feed {
    state: Mutex<FeedState>,
    changed: Notify,
}

impl Feed {
    fn update(&self, change: impl FnOnce(&mut FeedState)) {
        change(&mut self.state.lock().unwrap_or_else(|e| e.into_inner()));
        self.changed.notify_waiters();
    }
}

/// An open feed and how many readers and keepers hold it.
struct Entry {
    feed: Arc<Feed>,
    holders: usize,
    /// How many of the holders are keepers (a runner of this process).
    keepers: usize,
}

/// The registry of open feeds, one per watched job, and of job signals.
#[derive(Default)]
pub struct Hub {
    feeds: Mutex<HashMap<JobId, Entry>>,
    watches: Mutex<HashMap<JobId, WatchEntry>>,
    /// How many times a [`JobWatch`] woke for a change of its job (for tests).
    wakeups: AtomicU64,
    /// How many watches are waiting for a change right now (for tests).
    parked: AtomicU64,
}

/// Who or what cancelled a job; the API words it (see `api/error.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelReason {
    /// The synchronous caller went away before its job ended.
    CallerLeft,
    /// `POST /jobs/{id}/cancel` or `DELETE /jobs/{id}`.
    CancelCall,
    /// Foreman was shutting down and its caller was told to retry.
    Shutdown,
    /// Every target that could run it was down too long; its caller got a 503.
    TargetsDown,
}

/// A signal rung whenever the job's row changes in a way a waiter cares about.
#[derive(Default)]
struct Signal {
    changes: AtomicU64,
    notify: Notify,
}

struct WatchEntry {
    signal: Arc<Signal>,
    holders: usize,
}

/// A waiter on one job's row; it wakes only when that job changes.
pub struct JobWatch {
    hub: Arc<Hub>,
    id: JobId,
    signal: Arc<Signal>,
    /// The changes seen so far.
    seen: u64,
}

/// A reader of one job's feed; the feed goes when its last reader is dropped.
pub struct Subscription {
    hub: Arc<Hub>,
    id: JobId,
    feed: Arc<Feed>,
    cursor: usize,
}

impl Hub {
    fn feed(&self, id: JobId) -> Option<Arc<Feed>> {
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|entry| entry.feed.clone())
    }

    fn hold(&self, id: JobId, keeper: bool) -> Arc<Feed> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        let entry = feeds.entry(id).or_insert_with(|| Entry {
            feed: Arc::default(),
            holders: 0,
            keepers: 0,
        });
        entry.holders += 1;
        entry.keepers += usize::from(keeper);
        entry.feed.clone()
    }

    fn release(&self, id: JobId, keeper: bool) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = feeds.get_mut(&id) {
            entry.holders -= 1;
            entry.keepers -= usize::from(keeper);
            if entry.holders == 0 {
                feeds.remove(&id);
            }
        }
    }

    /// Opens (or joins) the feed of job `id` and reads it from its first chunk; a
    /// caller that opens it before the job is enqueued misses nothing.
    pub fn open(self: &Arc<Self>, id: JobId) -> Subscription {
        Subscription {
            hub: self.clone(),
            id,
            feed: self.hold(id, false),
            cursor: 0,
        }
    }

    /// Keeps the feed of job `id`, and so its chunks, while the runner runs it, for
    /// readers that join late.
    pub fn keep(self: &Arc<Self>, id: JobId) -> Keeper {
        self.hold(id, true);
        Keeper {
            hub: self.clone(),
            id,
        }
    }

    /// The target started answering with this content type.
    pub fn start(&self, id: JobId, content_type: &str) {
        if let Some(feed) = self.feed(id) {
            feed.update(|state| state.content_type = Some(content_type.to_string()));
        }
    }

    /// Appends a body chunk.
    pub fn chunk(&self, id: JobId, chunk: Bytes) {
        if let Some(feed) = self.feed(id) {
            feed.update(|state| state.chunks.push(chunk));
        }
    }

    /// After a failed attempt: drops its chunks so that a retry starts the feed
    /// afresh, unless a reader has already taken one. Returns false in that case:
    /// the output reached someone and the attempt cannot be replayed.
    pub fn rewind(&self, id: JobId) -> bool {
        let Some(feed) = self.feed(id) else {
            return true;
        };
        let mut state = feed.state.lock().unwrap_or_else(|e| e.into_inner());
        if state.delivered {
            return false;
        }
        state.chunks.clear();
        true
    }

    /// Ends the feed.
    pub fn finish(&self, id: JobId, outcome: Outcome) {
        if let Some(feed) = self.feed(id) {
            feed.update(|state| state.outcome = Some(outcome));
        }
    }

    /// Whether job `id` has a reader in this process (a caller or an event stream), not
    /// only its runner's keeper.
    pub fn has_reader(&self, id: JobId) -> bool {
        self.feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .is_some_and(|entry| entry.holders > entry.keepers)
    }

    /// Whether the feed of job `id` is read here but runs elsewhere: it is open, no
    /// runner of this process keeps it, and it has not ended. Such a feed is filled
    /// from the store's output batches (see `output_relay.rs`).
    pub fn relayed(&self, id: JobId) -> bool {
        let feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        feeds.get(&id).is_some_and(|entry| {
            entry.keepers == 0
                && entry
                    .feed
                    .state
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .outcome
                    .is_none()
        })
    }

    /// The feeds that [`Hub::relayed`] holds for.
    pub fn relayed_feeds(&self) -> Vec<JobId> {
        let ids: Vec<JobId> = self
            .feeds
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect();
        ids.into_iter().filter(|id| self.relayed(*id)).collect()
    }

    /// How many feeds are open (for tests).
    pub fn open_feeds(&self) -> usize {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Starts watching job `id`: every change signalled from now on wakes the watch.
    /// Take it before reading the job, so a change between the read and the wait is
    /// not missed.
    pub fn watch(self: &Arc<Self>, id: JobId) -> JobWatch {
        let mut watches = self.watches.lock().unwrap_or_else(|e| e.into_inner());
        let entry = watches.entry(id).or_insert_with(|| WatchEntry {
            signal: Arc::default(),
            holders: 0,
        });
        entry.holders += 1;
        let signal = entry.signal.clone();
        let seen = signal.changes.load(Ordering::SeqCst);
        JobWatch {
            hub: self.clone(),
            id,
            signal,
            seen,
        }
    }

    /// Job `id` changed (its outcome is committed and it left the running set, or it
    /// was cancelled while queued): wakes its watches, and only them.
    pub fn job_changed(&self, id: JobId) {
        let signal = self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .map(|entry| entry.signal.clone());
        if let Some(signal) = signal {
            signal.changes.fetch_add(1, Ordering::SeqCst);
            signal.notify.notify_waiters();
        }
    }

    /// The jobs watched right now: after signals from other instances may have been
    /// missed, each is rung once so its waiters read its row again.
    pub fn watched_jobs(&self) -> Vec<JobId> {
        self.watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keys()
            .copied()
            .collect()
    }

    /// How many times watches woke for a change of their job, in total (for tests).
    pub fn watch_wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::SeqCst)
    }

    /// How many watches are waiting for a change right now (for tests).
    pub fn parked_watches(&self) -> u64 {
        self.parked.load(Ordering::SeqCst)
    }

    /// How many jobs are watched (for tests).
    pub fn open_watches(&self) -> usize {
        self.watches.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

impl JobWatch {
    /// Waits until the job changes after the last change this watch saw.
    pub async fn changed(&mut self) {
        let _parked = Parked::new(&self.hub);
        loop {
            let notified = self.signal.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let changes = self.signal.changes.load(Ordering::SeqCst);
            if changes != self.seen {
                self.seen = changes;
                self.hub.wakeups.fetch_add(1, Ordering::SeqCst);
                return;
            }
            notified.await;
        }
    }
}

/// Counts a watch as waiting while it lives.
struct Parked<'a>(&'a Hub);

impl<'a> Parked<'a> {
    fn new(hub: &'a Hub) -> Parked<'a> {
        hub.parked.fetch_add(1, Ordering::SeqCst);
        Parked(hub)
    }
}

impl Drop for Parked<'_> {
    fn drop(&mut self) {
        self.0.parked.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Drop for JobWatch {
    fn drop(&mut self) {
        let mut watches = self.hub.watches.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = watches.get_mut(&self.id) {
            entry.holders -= 1;
            if entry.holders == 0 {
                watches.remove(&self.id);
            }
        }
    }
}

impl Subscription {
    pub fn id(&self) -> JobId {
        self.id
    }

    /// The target's content type, once it started answering.
    pub fn content_type(&self) -> Option<String> {
        self.feed
            .state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .content_type
            .clone()
    }

    /// Waits for the next chunk or the end. After the end it keeps returning it.
    pub async fn next(&mut self) -> FeedEvent {
        loop {
            let notified = self.feed.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut state = self.feed.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(chunk) = state.chunks.get(self.cursor).cloned() {
                    self.cursor += 1;
                    state.delivered = true;
                    return FeedEvent::Chunk(chunk);
                }
                if let Some(outcome) = &state.outcome {
                    return FeedEvent::End(outcome.clone());
                }
            }
            notified.await;
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.release(self.id, false);
    }
}

/// The runner's hold on the feed of the job it runs (see [`Hub::keep`]).
pub struct Keeper {
    hub: Arc<Hub>,
    id: JobId,
}

impl Drop for Keeper {
    fn drop(&mut self) {
        self.hub.release(self.id, true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_see_every_chunk_then_the_end() {
        let hub = Arc::new(Hub::default());
        let id = JobId::generate();
        // No feed: nobody holds one, so nothing is kept.
        hub.chunk(id, Bytes::from_static(b"lost"));
        assert_eq!(hub.open_feeds(), 0);
        let mut subscription = hub.open(id);
        let publisher = hub.clone();
        let task = tokio::spawn(async move {
            publisher.start(id, "application/x-ndjson");
            for text in ["a", "b", "c"] {
                publisher.chunk(id, Bytes::from(text));
                tokio::task::yield_now().await;
            }
            publisher.finish(id, Outcome::Succeeded);
        });
        let mut got = Vec::new();
        loop {
            match subscription.next().await {
                FeedEvent::Chunk(chunk) => got.push(chunk),
                FeedEvent::End(outcome) => {
                    assert_eq!(outcome, Outcome::Succeeded);
                    break;
                }
            }
        }
        task.await.unwrap();
        assert_eq!(
            got,
            vec![Bytes::from("a"), Bytes::from("b"), Bytes::from("c")]
        );
        assert_eq!(
            subscription.content_type().as_deref(),
            Some("application/x-ndjson")
        );
        assert_eq!(hub.open_feeds(), 1);
        drop(subscription);
        assert_eq!(hub.open_feeds(), 0);
    }

    #[tokio::test]
    async fn a_feed_lives_until_its_last_reader_goes() {
        let hub = Arc::new(Hub::default());
        let id = JobId::generate();
        let first = hub.open(id);
        let mut second = hub.open(id);
        drop(first);
        hub.chunk(id, Bytes::from_static(b"x"));
        assert_eq!(
            second.next().await,
            FeedEvent::Chunk(Bytes::from_static(b"x"))
        );
        drop(second);
        assert_eq!(hub.open_feeds(), 0);
    }

    #[tokio::test]
    async fn a_reader_joining_a_kept_feed_gets_it_from_the_start() {
        let hub = Arc::new(Hub::default());
        let id = JobId::generate();
        let keeper = hub.keep(id);
        hub.chunk(id, Bytes::from_static(b"early"));
        let mut late = hub.open(id);
        hub.chunk(id, Bytes::from_static(b"later"));
        assert_eq!(
            late.next().await,
            FeedEvent::Chunk(Bytes::from_static(b"early"))
        );
        assert_eq!(
            late.next().await,
            FeedEvent::Chunk(Bytes::from_static(b"later"))
        );
        drop(keeper);
        assert_eq!(hub.open_feeds(), 1, "the reader still holds it");
        drop(late);
        assert_eq!(hub.open_feeds(), 0);
    }

    #[tokio::test]
    async fn a_watch_wakes_for_its_own_job_only() {
        let hub = Arc::new(Hub::default());
        let (mine, other) = (JobId::generate(), JobId::generate());
        let mut watch = hub.watch(mine);
        let mut bystanders: Vec<JobWatch> = (0..100).map(|_| hub.watch(other)).collect();
        assert_eq!(hub.open_watches(), 2);
        hub.job_changed(JobId::generate());
        // A change before the wait is not lost.
        hub.job_changed(mine);
        watch.changed().await;
        assert_eq!(hub.watch_wakeups(), 1, "the other watches stayed asleep");
        assert!(
            futures::FutureExt::now_or_never(watch.changed()).is_none(),
            "nothing changed since"
        );
        hub.job_changed(other);
        for bystander in &mut bystanders {
            bystander.changed().await;
        }
        assert_eq!(hub.watch_wakeups(), 101);
        drop(bystanders);
        drop(watch);
        assert_eq!(hub.open_watches(), 0);
    }

    #[tokio::test]
    async fn rewind_replays_unread_output_but_not_delivered_output() {
        let hub = Arc::new(Hub::default());
        let id = JobId::generate();
        assert!(hub.rewind(id), "no feed: nothing was delivered");
        let _keeper = hub.keep(id);
        let mut reader = hub.open(id);
        hub.chunk(id, Bytes::from_static(b"first try"));
        assert!(hub.rewind(id), "nobody had read it");
        hub.chunk(id, Bytes::from_static(b"second try"));
        assert_eq!(
            reader.next().await,
            FeedEvent::Chunk(Bytes::from_static(b"second try")),
            "the failed attempt's output is gone"
        );
        hub.chunk(id, Bytes::from_static(b"more"));
        assert!(!hub.rewind(id), "a reader took a chunk");
        assert_eq!(
            reader.next().await,
            FeedEvent::Chunk(Bytes::from_static(b"more"))
        );
    }
}
