//! The cached model inventory of one target: `/api/tags` and `/api/ps`, polled.
//!
//! Listing routes are served from this cache so that clients polling them never
//! touch the GPU box. A poll that fails marks the inventory degraded (shown on
//! `/healthz`) and keeps the last good answers. A request naming a model the cache
//! does not know forces one fresh poll before it is refused, so a model pulled a
//! moment ago is found.
//!
//! It also says whether the target is *paused*: from a failed poll, or a runner's
//! connection failure ([`Inventory::mark_unreachable`]), until the next successful
//! poll. Runners claim nothing for a paused target, so no job spends an attempt on a
//! server already known to be down; while paused, the poller asks every
//! [`PAUSED_POLL`] at most, so a target back after a restart is used within about a
//! second.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde_json::Value;
use tokio::sync::{Mutex, Notify};
use tokio_util::sync::CancellationToken;

use crate::model_name::model_key;
use crate::upstream::{Upstream, UpstreamError};

const POLL_TIMEOUT: Duration = Duration::from_secs(10);
/// Shortest time between two polls when jobs keep nudging.
const NUDGED_POLL_GAP: Duration = Duration::from_millis(250);
/// Longest time between two polls of a paused target.
pub const PAUSED_POLL: Duration = Duration::from_secs(1);

/// Whether the target has a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelCheck {
    Known,
    Unknown,
    /// The target could not be asked; the caller decides (foreman accepts the job).
    Unreachable,
}

#[derive(Default)]
struct Snapshot {
    tags: Option<Bytes>,
    ps: Option<Bytes>,
    models: HashSet<String>,
    resident: Vec<String>,
    reachable: bool,
    polled_once: bool,
    /// A poll has succeeded at least once: `models` is the target's, not a guess.
    answered_once: bool,
    /// Runners claim nothing for this target until a poll succeeds.
    paused: bool,
    /// When the target stopped answering (the first failure since the last success).
    down_since: Option<Instant>,
}

/// The cache and its poller.
pub struct Inventory {
    upstream: Upstream,
    poll_interval: Duration,
    snapshot: RwLock<Snapshot>,
    /// Serialises polls, so a burst of misses costs one poll.
    polling: Mutex<()>,
    /// Rung when residency has probably changed (a job ran), to poll early.
    nudge: Notify,
    /// Set when a job ends, cleared when a poll starts: the cached `/api/ps` may be
    /// behind what the target has loaded.
    residency_changed: AtomicBool,
    /// Jobs running on the target now: each may load a model at any moment.
    jobs_running: AtomicUsize,
    /// Bumped by every change of what the snapshot says (a poll ended, the target was
    /// marked unreachable), so that the scheduler rereads it only then.
    generation: AtomicU64,
}

impl Inventory {
    pub fn new(upstream: Upstream, poll_interval: Duration) -> Arc<Inventory> {
        Arc::new(Inventory {
            upstream,
            poll_interval,
            snapshot: RwLock::new(Snapshot::default()),
            polling: Mutex::new(()),
            nudge: Notify::new(),
            residency_changed: AtomicBool::new(false),
            jobs_running: AtomicUsize::new(0),
            generation: AtomicU64::new(0),
        })
    }

    /// Polls both listings now and updates the cache.
    pub async fn poll(&self) -> Result<(), UpstreamError> {
        let _one_at_a_time = self.polling.lock().await;
        self.residency_changed.store(false, Ordering::SeqCst);
        let result = async {
            let tags = self.upstream.get("/api/tags", POLL_TIMEOUT).await?;
            let ps = self.upstream.get("/api/ps", POLL_TIMEOUT).await?;
            Ok::<_, UpstreamError>((tags, ps))
        }
        .await;
        let mut snapshot = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
        self.generation.fetch_add(1, Ordering::SeqCst);
        snapshot.polled_once = true;
        match result {
            Ok((tags, ps)) => {
                snapshot.models = model_names(&tags).into_iter().collect();
                snapshot.resident = model_names(&ps);
                snapshot.tags = Some(tags);
                snapshot.ps = Some(ps);
                snapshot.reachable = true;
                snapshot.answered_once = true;
                if snapshot.paused {
                    tracing::info!(url = %self.upstream.base(), "target answers again; resumed");
                }
                snapshot.paused = false;
                snapshot.down_since = None;
                Ok(())
            }
            Err(error) => {
                if snapshot.reachable || !snapshot.paused {
                    tracing::warn!(%error, url = %self.upstream.base(), "target unreachable; paused until it answers");
                }
                snapshot.reachable = false;
                snapshot.paused = true;
                snapshot.down_since.get_or_insert_with(Instant::now);
                Err(error)
            }
        }
    }

    /// Polls every interval (every [`PAUSED_POLL`] at most while paused), and soon
    /// after a nudge (but not more often than [`NUDGED_POLL_GAP`], so busy runners
    /// does not turn into a poll per job), until shutdown.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        loop {
            let _ = self.poll().await;
            let polled = tokio::time::Instant::now();
            let interval = match self.paused() {
                true => self.poll_interval.min(PAUSED_POLL),
                false => self.poll_interval,
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(interval) => continue,
                _ = self.nudge.notified() => {}
            }
            let gap = NUDGED_POLL_GAP.min(self.poll_interval);
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep_until(polled + gap) => {}
            }
        }
    }

    /// Asks for an early poll: the target's residency has probably changed, and
    /// `/api/ps` should show it without waiting a whole interval.
    pub fn refresh_soon(&self) {
        self.residency_changed.store(true, Ordering::SeqCst);
        self.nudge.notify_one();
    }

    /// A runner met a connection failure: the target is paused until a poll succeeds,
    /// and the poller is asked to try soon.
    pub fn mark_unreachable(&self, reason: &str) {
        {
            let mut snapshot = self.snapshot.write().unwrap_or_else(|e| e.into_inner());
            if !snapshot.paused {
                tracing::warn!(reason, url = %self.upstream.base(), "target unreachable; paused until it answers");
            }
            snapshot.reachable = false;
            snapshot.paused = true;
            snapshot.down_since.get_or_insert_with(Instant::now);
            self.generation.fetch_add(1, Ordering::SeqCst);
        }
        self.nudge.notify_one();
    }

    /// Changes whenever what this inventory says may have changed (see the field).
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// True from a failed poll or [`Inventory::mark_unreachable`] until the next
    /// successful poll: runners claim nothing for the target meanwhile.
    pub fn paused(&self) -> bool {
        self.read().paused
    }

    /// When the target stopped answering, while it is paused.
    pub fn down_since(&self) -> Option<Instant> {
        self.read().down_since
    }

    /// Whether the target lists the model `key` (see [`model_key`]); `None` before
    /// the first successful poll, when nobody knows. A target that went down keeps
    /// its last known list.
    pub fn has_model(&self, key: &str) -> Option<bool> {
        let snapshot = self.read();
        snapshot
            .answered_once
            .then(|| snapshot.models.contains(key))
    }

    /// The model keys the target listed at the last successful poll; `None` before
    /// the first, when nobody knows what it has.
    pub fn known_models(&self) -> Option<std::collections::HashSet<String>> {
        let snapshot = self.read();
        snapshot.answered_once.then(|| snapshot.models.clone())
    }

    /// Model keys the target listed at the last successful poll, sorted.
    pub fn models(&self) -> Vec<String> {
        let mut models: Vec<String> = self.read().models.iter().cloned().collect();
        models.sort();
        models
    }

    /// A job is about to run on the target.
    pub fn job_started(&self) {
        self.jobs_running.fetch_add(1, Ordering::SeqCst);
    }

    /// A job that [`Inventory::job_started`] announced is over; `target_answered`
    /// says whether the target ran it (and so may have loaded or unloaded a model).
    pub fn job_ended(&self, target_answered: bool) {
        self.jobs_running.fetch_sub(1, Ordering::SeqCst);
        if target_answered {
            self.refresh_soon();
        }
    }

    /// Polls now if a job is running or ran since the last poll started, or a poll is
    /// under way (it may have started before the change and not be done), so that
    /// `/api/ps` shows what the target has loaded, not what it had up to a poll gap
    /// ago: a caller that reads it right after its answer sees the model loaded. A
    /// failed poll leaves the cache as it was (and marks the target unreachable).
    pub async fn refresh_if_changed(&self) {
        if self.jobs_running.load(Ordering::SeqCst) > 0
            || self.residency_changed.load(Ordering::SeqCst)
            || self.polling.try_lock().is_err()
        {
            let _ = self.poll().await;
        }
    }

    /// Looks a model up, polling once more on a miss.
    pub async fn check_model(&self, name: &str) -> ModelCheck {
        let key = model_key(name);
        if self.knows(&key) {
            return ModelCheck::Known;
        }
        match self.poll().await {
            Ok(()) if self.knows(&key) => ModelCheck::Known,
            Ok(()) => ModelCheck::Unknown,
            Err(_) => ModelCheck::Unreachable,
        }
    }

    fn knows(&self, key: &str) -> bool {
        self.read().models.contains(key)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Snapshot> {
        self.snapshot.read().unwrap_or_else(|e| e.into_inner())
    }

    /// The last good `/api/tags` body.
    pub fn tags(&self) -> Option<Bytes> {
        self.read().tags.clone()
    }

    /// The last good `/api/ps` body.
    pub fn ps(&self) -> Option<Bytes> {
        self.read().ps.clone()
    }

    /// Model keys the target had loaded at the last poll.
    pub fn resident(&self) -> Vec<String> {
        self.read().resident.clone()
    }

    /// True when the last poll failed (or none has succeeded yet).
    pub fn degraded(&self) -> bool {
        let snapshot = self.read();
        snapshot.polled_once && !snapshot.reachable
    }

    pub fn reachable(&self) -> bool {
        self.read().reachable
    }
}

/// Model keys from a `/api/tags` or `/api/ps` body.
fn model_names(body: &[u8]) -> Vec<String> {
    let Ok(value) = serde_json::from_slice::<Value>(body) else {
        return Vec::new();
    };
    value
        .get("models")
        .and_then(Value::as_array)
        .map(|models| {
            models
                .iter()
                .filter_map(|m| m.get("model").or_else(|| m.get("name")))
                .filter_map(Value::as_str)
                .map(model_key)
                .collect()
        })
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::model_names;

    #[test]
    fn names_come_from_model_or_name() {
        let body = br#"{"models":[{"model":"Llama3.2:3b"},{"name":"nomic-embed-text"},{"x":1}]}"#;
        assert_eq!(
            model_names(body),
            vec![
                "llama3.2:3b".to_string(),
                "nomic-embed-text:latest".to_string()
            ]
        );
        assert!(model_names(b"not json").is_empty());
    }
}
