//! In-process fan-out of a running job's output to the callers waiting on it.
//!
//! A synchronous caller opens a feed for its job before the job is enqueued; the
//! worker appends the target's body chunks to that feed as they arrive and finally
//! an [`Outcome`]. Chunks are kept until the last reader closes the feed, so a reader
//! that falls behind still sees everything in order; a reader that joins a running
//! job (`/jobs/{id}/events`) sees what was generated since it opened its own feed
//! and onwards. With no feed open (an async job nobody is watching) publishing costs
//! nothing.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use foreman_store::JobId;
use tokio::sync::Notify;

/// How a job ended, as its waiting caller must hear it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Succeeded,
    /// The caller gets this status and body (an Ollama-shaped error).
    Failed {
        status: u16,
        content_type: String,
        body: Bytes,
    },
    /// Failed, and the target's stream already carried the error line.
    FailedInStream,
    Cancelled,
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

/// An open feed and how many readers hold it.
struct Entry {
    feed: Arc<Feed>,
    readers: usize,
}

/// The registry of open feeds, one per watched job.
#[derive(Default)]
pub struct Hub {
    feeds: Mutex<HashMap<JobId, Entry>>,
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

    /// Opens (or joins) the feed of job `id`; a caller that opens it before the job
    /// is enqueued misses nothing.
    pub fn open(self: &Arc<Self>, id: JobId) -> Subscription {
        let mut feeds = self.feeds.lock().unwrap_or_else(|e| e.into_inner());
        let entry = feeds.entry(id).or_insert_with(|| Entry {
            feed: Arc::default(),
            readers: 0,
        });
        entry.readers += 1;
        let feed = entry.feed.clone();
        drop(feeds);
        Subscription {
            hub: self.clone(),
            id,
            feed,
            cursor: 0,
        }
    }

    /// The target started answering with this content type. Returns whether anyone
    /// is listening.
    pub fn start(&self, id: JobId, content_type: &str) -> bool {
        let Some(feed) = self.feed(id) else {
            return false;
        };
        feed.update(|state| {
            state.content_type = Some(content_type.to_string());
        });
        true
    }

    /// Appends a body chunk. Returns whether anyone is listening.
    pub fn chunk(&self, id: JobId, chunk: Bytes) -> bool {
        let Some(feed) = self.feed(id) else {
            return false;
        };
        feed.update(|state| state.chunks.push(chunk));
        true
    }

    /// Ends the feed.
    pub fn finish(&self, id: JobId, outcome: Outcome) {
        if let Some(feed) = self.feed(id) {
            feed.update(|state| state.outcome = Some(outcome));
        }
    }

    /// How many feeds are open (for health and tests).
    pub fn open_feeds(&self) -> usize {
        self.feeds.lock().unwrap_or_else(|e| e.into_inner()).len()
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
                let state = self.feed.state.lock().unwrap_or_else(|e| e.into_inner());
                if let Some(chunk) = state.chunks.get(self.cursor) {
                    self.cursor += 1;
                    return FeedEvent::Chunk(chunk.clone());
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
        let mut feeds = self.hub.feeds.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(entry) = feeds.get_mut(&self.id) {
            entry.readers -= 1;
            if entry.readers == 0 {
                feeds.remove(&self.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn readers_see_every_chunk_then_the_end() {
        let hub = Arc::new(Hub::default());
        let id = JobId::generate();
        assert!(
            !hub.chunk(id, Bytes::from_static(b"lost")),
            "no feed, nobody listening"
        );
        let mut subscription = hub.open(id);
        let publisher = hub.clone();
        let task = tokio::spawn(async move {
            assert!(publisher.start(id, "application/x-ndjson"));
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
        assert!(hub.chunk(id, Bytes::from_static(b"x")), "still watched");
        assert_eq!(
            second.next().await,
            FeedEvent::Chunk(Bytes::from_static(b"x"))
        );
        drop(second);
        assert_eq!(hub.open_feeds(), 0);
    }
}
