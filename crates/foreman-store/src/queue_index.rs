//! The queue's order kept in memory: every queued job's rank, per load key (a model
//! and its load options) and per caller within it, so that the
//! worker's question "what are the heads of the queue?" costs no database round trip.
//!
//! A backend keeps one of these beside its table and changes it in the same step as the
//! rows (enqueue, claim, retry, requeue, cancel), and rebuilds it from the table when a
//! change touched many rows at once or may have been missed. It holds only what ranking
//! needs, not payloads, so 10,000 queued jobs cost well under a megabyte.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::job::{CallerHead, Job, JobId, JobRef, JobState, QueueHead};

/// What the index knows of one queued job: what ranking needs, no payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueuedJob {
    pub id: JobId,
    pub model: String,
    pub load_options: String,
    pub priority: i32,
    pub created_at: i64,
    pub run_after: i64,
    /// See [`NewJob::caller`](crate::NewJob::caller): the caller's name, if any.
    pub caller: Option<String>,
    /// The caller's weight at enqueue (1 without a caller).
    pub caller_weight: u32,
}

impl QueuedJob {
    fn key(&self) -> QueueKey {
        (self.model.clone(), self.load_options.clone())
    }
}

/// A load key: the model and its load options.
type QueueKey = (String, String);

impl QueuedJob {
    /// The index entry of `job`, if it is queued.
    pub(crate) fn of(job: &Job) -> Option<QueuedJob> {
        if job.state != JobState::Queued {
            return None;
        }
        let (caller, caller_weight) = crate::job::caller_columns(job.caller.as_ref());
        Some(QueuedJob {
            id: job.id,
            model: job.model.clone(),
            load_options: job.load_options.clone(),
            priority: job.priority,
            created_at: job.created_at,
            run_after: job.run_after,
            caller: caller.map(str::to_owned),
            caller_weight,
        })
    }
}

/// Rank within a load key: highest priority, then oldest, then lowest id.
type Rank = (Reverse<i32>, i64, JobId);

#[derive(Debug, Default)]
struct ModelQueue {
    by_rank: BTreeSet<Rank>,
    by_age: BTreeSet<(i64, JobId)>,
    /// The same jobs ranked per caller (jobs without a caller under `None`).
    by_caller: BTreeMap<Option<String>, BTreeSet<Rank>>,
}

/// Every queued job, ranked per load key.
#[derive(Debug, Default)]
pub(crate) struct QueueIndex {
    jobs: HashMap<JobId, QueuedJob>,
    /// Ordered by model name, then load options: the order `queue_heads` answers in.
    models: BTreeMap<QueueKey, ModelQueue>,
    /// Every job by the time it becomes eligible, to count the ones still waiting out a
    /// retry backoff without visiting the rest.
    by_run_after: BTreeSet<(i64, JobId)>,
}

impl QueueIndex {
    pub(crate) fn new(jobs: impl IntoIterator<Item = QueuedJob>) -> QueueIndex {
        let mut index = QueueIndex::default();
        for job in jobs {
            index.insert(job);
        }
        index
    }

    /// Adds a queued job, replacing what the index held for its id.
    pub(crate) fn insert(&mut self, job: QueuedJob) {
        self.remove(job.id);
        let queue = self.models.entry(job.key()).or_default();
        queue
            .by_rank
            .insert((Reverse(job.priority), job.created_at, job.id));
        queue.by_age.insert((job.created_at, job.id));
        queue
            .by_caller
            .entry(job.caller.clone())
            .or_default()
            .insert((Reverse(job.priority), job.created_at, job.id));
        self.by_run_after.insert((job.run_after, job.id));
        self.jobs.insert(job.id, job);
    }

    /// Forgets a job (claimed, cancelled, or gone); unknown ids are ignored.
    pub(crate) fn remove(&mut self, id: JobId) {
        let Some(job) = self.jobs.remove(&id) else {
            return;
        };
        self.by_run_after.remove(&(job.run_after, id));
        let key = job.key();
        if let Some(queue) = self.models.get_mut(&key) {
            queue
                .by_rank
                .remove(&(Reverse(job.priority), job.created_at, id));
            queue.by_age.remove(&(job.created_at, id));
            if let Some(ranks) = queue.by_caller.get_mut(&job.caller) {
                ranks.remove(&(Reverse(job.priority), job.created_at, id));
                if ranks.is_empty() {
                    queue.by_caller.remove(&job.caller);
                }
            }
            if queue.by_rank.is_empty() {
                self.models.remove(&key);
            }
        }
    }

    /// Keeps the index in step with a job row a write returned: present while queued,
    /// absent otherwise.
    pub(crate) fn track(&mut self, job: &Job) {
        match QueuedJob::of(job) {
            Some(queued) => self.insert(queued),
            None => self.remove(job.id),
        }
    }

    /// How many jobs are queued, eligible or not.
    pub(crate) fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Up to `limit` queued jobs, eligible or not, in no particular order.
    pub(crate) fn jobs(&self, limit: usize) -> Vec<QueuedJob> {
        self.jobs.values().take(limit).cloned().collect()
    }

    /// The same answer as [`Store::queue_heads`](crate::Store::queue_heads): one entry
    /// per load key with eligible jobs (`run_after <= now`), ordered by model name,
    /// then load options.
    pub(crate) fn heads(&self, now: i64) -> Vec<QueueHead> {
        // Jobs still backing off, per load key and caller: usually none, so this is one
        // tree probe.
        let mut waiting: HashMap<(&str, &str), u64> = HashMap::new();
        let mut waiting_of_caller: HashMap<(&str, &str, Option<&str>), u64> = HashMap::new();
        for (_, id) in self
            .by_run_after
            .range((now.saturating_add(1), JobId::from(ulid::Ulid::nil()))..)
        {
            if let Some(job) = self.jobs.get(id) {
                *waiting
                    .entry((job.model.as_str(), job.load_options.as_str()))
                    .or_default() += 1;
                *waiting_of_caller
                    .entry((
                        job.model.as_str(),
                        job.load_options.as_str(),
                        job.caller.as_deref(),
                    ))
                    .or_default() += 1;
            }
        }
        let eligible = |id: &JobId| self.jobs.get(id).is_some_and(|job| job.run_after <= now);
        let mut heads = Vec::new();
        for ((model, load_options), queue) in &self.models {
            let Some(&(Reverse(priority), created_at, id)) =
                queue.by_rank.iter().find(|(_, _, id)| eligible(id))
            else {
                continue;
            };
            let oldest_created_at = queue
                .by_age
                .iter()
                .find(|(_, id)| eligible(id))
                .map_or(created_at, |&(age, _)| age);
            let total = queue.by_rank.len() as u64;
            let backing_off = waiting
                .get(&(model.as_str(), load_options.as_str()))
                .copied()
                .unwrap_or(0);
            heads.push(QueueHead {
                model: model.clone(),
                load_options: load_options.clone(),
                best: JobRef {
                    id,
                    priority,
                    created_at,
                },
                oldest_created_at,
                depth: total - backing_off,
                callers: queue
                    .by_caller
                    .iter()
                    .filter_map(|(caller, ranks)| {
                        let &(Reverse(priority), created_at, id) =
                            ranks.iter().find(|(_, _, id)| eligible(id))?;
                        let backing_off = waiting_of_caller
                            .get(&(model.as_str(), load_options.as_str(), caller.as_deref()))
                            .copied()
                            .unwrap_or(0);
                        Some(CallerHead {
                            caller: caller.clone(),
                            weight: self.jobs.get(&id).map_or(1, |job| job.caller_weight),
                            best: JobRef {
                                id,
                                priority,
                                created_at,
                            },
                            depth: ranks.len() as u64 - backing_off,
                        })
                    })
                    .collect(),
            });
        }
        heads
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queued(model: &str, priority: i32, created_at: i64, run_after: i64) -> QueuedJob {
        QueuedJob {
            id: JobId::generate(),
            model: model.to_owned(),
            load_options: String::new(),
            priority,
            created_at,
            run_after,
            caller: None,
            caller_weight: 1,
        }
    }

    #[test]
    fn heads_rank_by_priority_then_age_and_skip_backoffs() {
        let old_low = queued("a", 0, 10, 10);
        let new_high = queued("a", 5, 20, 20);
        let backing_off = queued("a", 9, 5, 1_000);
        let other = queued("b", 0, 30, 30);
        let mut index = QueueIndex::new([
            old_low.clone(),
            new_high.clone(),
            backing_off.clone(),
            other.clone(),
        ]);
        let heads = index.heads(100);
        assert_eq!(heads.len(), 2);
        assert_eq!(heads[0].model, "a");
        assert_eq!(heads[0].best.id, new_high.id);
        assert_eq!(heads[0].oldest_created_at, 10);
        assert_eq!(heads[0].depth, 2);
        assert_eq!(heads[1].best.id, other.id);

        // Once its backoff is over, the high-priority job leads and counts.
        let heads = index.heads(1_000);
        assert_eq!(heads[0].best.id, backing_off.id);
        assert_eq!(heads[0].oldest_created_at, 5);
        assert_eq!(heads[0].depth, 3);

        index.remove(new_high.id);
        index.remove(old_low.id);
        index.remove(backing_off.id);
        assert_eq!(index.heads(1_000).len(), 1);
        assert_eq!(index.len(), 1);
        index.remove(other.id);
        assert!(index.heads(1_000).is_empty());
        assert!(index.models.is_empty() && index.by_run_after.is_empty());
    }

    #[test]
    fn inserting_a_known_id_replaces_its_entry() {
        let mut job = queued("a", 0, 10, 10);
        let mut index = QueueIndex::new([job.clone()]);
        job.run_after = 500;
        job.priority = 3;
        index.insert(job.clone());
        assert_eq!(index.len(), 1);
        assert!(index.heads(100).is_empty());
        assert_eq!(index.heads(500)[0].best.priority, 3);
    }
}
