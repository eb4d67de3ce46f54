//! The scheduling policy: what a free runner of one target runs next.
//!
//! Priority first, then drain by load key, with a bound on waiting, within what every
//! target can take ([`Capacity`]). For a free runner of target `T`:
//! 1. **The bound.** A load key *starves* once it has waited `max_wait` with work
//!    queued, counted from the latest of: its oldest queued job's arrival, its last
//!    service (a job of it chosen, or running, or ending), and the start of the forced
//!    batch under way. The key that has waited longest is placed first, whatever its
//!    priority: on `T` if `T` has it loaded, has a free place or an idle key to unload;
//!    if `T` would have to unload a busy key while another target has room, it is left
//!    to that target; otherwise `T` unloads the key holding the least important work
//!    (never the key of the batch under way while it runs, nor, on a target of several
//!    places, a key within its turn: loaded less than the bound ago with work queued at
//!    its load left).
//!    A forced load buys a batch: the bound is weighed again only when the key's work
//!    queued at the load is done, or another key has waited `max_wait` since the load,
//!    so a backlog older than the bound drains key by key instead of alternating.
//! 2. **Drain.** A key loaded on `T` with a free slot and a job of the highest
//!    priority `T` should serve runs its best job (highest priority, then oldest).
//! 3. **Load.** Else the key holding the highest priority, the most jobs waiting among
//!    equals, then the oldest, is loaded into a free place of `T`, or, unless another
//!    target has a free place for it, over a loaded key that runs nothing and has no
//!    queued work of that priority or higher.
//! 4. **Fill.** Else, if no key of that priority waits for a place on `T`, a loaded key
//!    with a free slot runs its best job at a lower priority: it delays nobody.
//! 5. Else the runner stays idle: it never unloads a key that still has running or
//!    queued work of the same or a higher priority before the bound forces it.
//!
//! "The highest priority `T` should serve" leaves out keys that another target has
//! loaded: those go where they are resident, unless their queue is deeper than the free
//! slots there and `T` has a free place, when `T` loads them too (never by unloading).
//! A key only some targets have (their `/api/tags`) goes only there.
//!
//! Whose job a chosen key runs is the [`FairShare`]'s to say (on by default,
//! `FOREMAN_FAIR_SHARE`): among the callers holding the key's top priority, the one
//! whose weighted turn it is. Off, the key runs its best job (highest priority, then
//! oldest). Either way the key itself is chosen as above, so fair share never makes a
//! load.
//!
//! **Protection** ([`Policy::with_protection`], `FOREMAN_PROTECT_WINDOW`): a key that
//! work of some priority was chosen for within the window is never the victim of a load
//! for lower work at the batch priority or below (`FOREMAN_BATCH_PRIORITY`), neither in rule 3 nor in rule 1 until the lower key has waited
//! `max_wait` plus the window. Lower work keeps free places, its own loaded keys and keys
//! last used by work no higher than its own; so a batch beside live traffic never makes
//! a live request wait for its model's load.
//!
//! With one target of one slot and one place, this is the policy foreman had before it
//! used several: drain the resident model, switch to the deepest queue of the top
//! priority, load a starving model and give it a batch.
//!
//! Invariant: this module is pure. It sees no clock, socket or database; runners pass
//! `now`, the queue's heads and the capacity in, and [`Policy`] keeps only what the
//! policy itself decided (when each key was last served, the forced batch under way).

use std::cmp::Reverse;
use std::collections::HashMap;

use foreman_store::{JobId, QueueHead};

use super::capacity::{Capacity, TargetState};
use super::fair_share::FairShare;
use super::load_key::LoadKey;

/// What a free runner should do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub job: JobId,
    pub key: LoadKey,
    pub reason: Reason,
    /// A loaded key the target gives up for this one.
    pub evict: Option<LoadKey>,
    /// More jobs of this key are queued behind this one.
    pub more_queued: bool,
}

/// Why a job was picked; logged, and useful in tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// The key hit the wait bound: placed first, and given a batch.
    Starving,
    /// The key is loaded here and holds work of the top priority.
    Drain,
    /// The key holds work of the top priority and is loaded here now.
    Load,
    /// Nothing of the top priority can start here; a loaded key's lower work can.
    Fill,
}

/// The forced load under way: `key` was placed by the bound at `started`.
#[derive(Debug, Clone)]
struct Batch {
    key: LoadKey,
    started: i64,
}

/// The highest priority a key served lately: `priority` was chosen for it at `at`.
#[derive(Debug, Clone, Copy)]
struct Use {
    priority: i32,
    at: i64,
}

/// The policy with its memory between decisions.
#[derive(Debug, Clone)]
pub struct Policy {
    max_wait_ms: i64,
    /// How long a key chosen for work of some priority stays protected from loads for
    /// lower work (see [`Policy::with_protection`]); 0 protects nothing.
    protect_ms: i64,
    /// Only loads for work of this priority or lower (batch work) are held back by
    /// protection; higher work loads as without it.
    protect_loads_at_most: i32,
    /// Key → the highest priority chosen for it within the protection window.
    used: HashMap<LoadKey, Use>,
    /// Key → the last decision time at which it was chosen, or unloaded.
    served: HashMap<LoadKey, i64>,
    batch: Option<Batch>,
    /// Turns between callers within a key; `None` runs each key's best job.
    fair: Option<FairShare>,
}

impl Policy {
    /// A policy whose wait bound is `max_wait_ms`, sharing keys fairly between callers.
    pub fn new(max_wait_ms: i64) -> Policy {
        Policy {
            max_wait_ms,
            protect_ms: 0,
            protect_loads_at_most: i32::MIN,
            used: HashMap::new(),
            served: HashMap::new(),
            batch: None,
            fair: Some(FairShare::default()),
        }
    }

    /// The same policy protecting keys that work of a higher priority used less than
    /// `protect_ms` ago from loads for work of priority `loads_at_most` or lower (a
    /// batch's): such a load never unloads them (neither by rule 3 nor by the bound,
    /// until the lower key has waited `max_wait + protect_ms`). Loads for work above
    /// `loads_at_most` (async jobs, live requests) are not held back, so a lone async
    /// job on an idle GPU does not wait a window for a model a live request used.
    pub fn with_protection(mut self, protect_ms: i64, loads_at_most: i32) -> Policy {
        self.protect_ms = protect_ms.max(0);
        self.protect_loads_at_most = loads_at_most;
        self
    }

    /// The same policy with fair share between callers on or off.
    pub fn with_fair_share(mut self, on: bool) -> Policy {
        self.fair = on.then(FairShare::default);
        self
    }

    /// Picks the next job for a free runner of `capacity.targets[target]` from one head
    /// per load key, and remembers the choice. The caller applies it to the capacity
    /// ([`TargetState::start`]) before asking again.
    pub fn decide(
        &mut self,
        heads: &[QueueHead],
        capacity: &Capacity,
        target: usize,
        now: i64,
    ) -> Option<Decision> {
        let state = capacity.targets.get(target)?;
        if state.paused || state.running_total() >= state.runners() {
            return None;
        }
        let mut decision = self.choose(heads, capacity, target, now)?;
        let head = heads.iter().find(|head| decision.key.is_of(head));
        if let Some(head) = head {
            if let Some(fair) = self.fair.as_mut() {
                let job = fair.pick(head);
                decision.job = job.id;
                fair.charge(head, job);
            }
            self.note_use(&decision.key, head.best.priority, now);
        }
        self.served.insert(decision.key.clone(), now);
        if let Some(evicted) = &decision.evict {
            // Its wait restarts from when it was last used, not from its oldest job.
            let used = state.last_used(evicted).unwrap_or(now);
            let served = self.served.entry(evicted.clone()).or_insert(used);
            *served = (*served).max(used);
        }
        match decision.reason {
            Reason::Starving => {
                self.batch = Some(Batch {
                    key: decision.key.clone(),
                    started: now,
                })
            }
            // Unloading the forced key ends its batch (on one place, every load does);
            // loading into a free place leaves it running.
            Reason::Load => {
                if self.batch.as_ref().map(|batch| &batch.key) == decision.evict.as_ref() {
                    self.batch = None;
                }
            }
            Reason::Drain | Reason::Fill => {}
        }
        self.forget_idle(heads, now);
        Some(decision)
    }

    fn choose(
        &self,
        heads: &[QueueHead],
        capacity: &Capacity,
        target: usize,
        now: i64,
    ) -> Option<Decision> {
        let state = &capacity.targets[target];
        let eligible: Vec<(&QueueHead, LoadKey)> = heads
            .iter()
            .filter(|head| state.may_serve(&head.model))
            .map(|head| (head, LoadKey::of_head(head)))
            .collect();
        let homed_elsewhere =
            |key: &LoadKey| !state.is_resident(key) && capacity.resident_elsewhere(key, target);
        let overflowing = |head: &QueueHead, key: &LoadKey| {
            state.has_free_place()
                && head.depth as usize > capacity.free_slots_elsewhere(key, target)
        };
        // The keys this target should serve.
        let mine: Vec<&(&QueueHead, LoadKey)> = eligible
            .iter()
            .filter(|(head, key)| !homed_elsewhere(key) || overflowing(head, key))
            .collect();

        if let Some(decision) = self.starving(heads, &eligible, capacity, target, now) {
            return Some(decision);
        }
        let top = mine.iter().map(|(head, _)| head.best.priority).max()?;
        if let Some((head, key)) = mine
            .iter()
            .filter(|(head, key)| {
                head.best.priority == top && state.is_resident(key) && state.has_free_slot_for(key)
            })
            .min_by_key(|(head, _)| (head.best.created_at, head.best.id))
        {
            return Some(pick(head, key, Reason::Drain, None));
        }
        let waiting_for_a_place = mine
            .iter()
            .filter(|(head, key)| {
                head.best.priority == top && !state.is_resident(key) && state.has_free_slot_for(key)
            })
            .min_by_key(|(head, _)| (Reverse(head.depth), head.best.created_at, head.best.id));
        if let Some((head, key)) = waiting_for_a_place {
            if state.has_free_place() {
                return Some(pick(head, key, Reason::Load, None));
            }
            // A target with a free place loads it without unloading anything.
            let free_place_elsewhere = capacity.targets.iter().enumerate().any(|(index, other)| {
                index != target
                    && !other.paused
                    && other.may_serve(&key.model)
                    && other.has_free_place()
            });
            let protected = self.protected_from(state, top, now);
            if !free_place_elsewhere
                && let Some(victim) = idle_victim(state, heads, Some(top), &protected)
            {
                return Some(pick(head, key, Reason::Load, Some(victim)));
            }
            if !room_elsewhere(capacity, target, &key.model, heads) {
                // Keep what is loaded here draining out, so that the key gets a place.
                return None;
            }
        }
        mine.iter()
            .filter(|(_, key)| state.is_resident(key) && state.has_free_slot_for(key))
            .min_by_key(|(head, _)| {
                (
                    Reverse(head.best.priority),
                    head.best.created_at,
                    head.best.id,
                )
            })
            .map(|(head, key)| pick(head, key, Reason::Fill, None))
    }

    /// Rule 1: the key that has waited longest past the bound, placed on this target
    /// if it should go here.
    fn starving(
        &self,
        heads: &[QueueHead],
        eligible: &[(&QueueHead, LoadKey)],
        capacity: &Capacity,
        target: usize,
        now: i64,
    ) -> Option<Decision> {
        let state = &capacity.targets[target];
        let batch_start = self.active_batch_start(eligible);
        let mut starving: Vec<(i64, i64, &QueueHead, &LoadKey)> = eligible
            .iter()
            .filter(|(_, key)| state.is_resident(key) || !capacity.resident_elsewhere(key, target))
            .map(|(head, key)| {
                let since = self.waiting_since(head, key, capacity, now);
                (since.max(batch_start), since, *head, key)
            })
            .filter(|(clock, _, _, _)| now - clock >= self.max_wait_ms)
            .collect();
        starving.sort_by_key(|(clock, since, head, _)| {
            (
                *clock,
                *since,
                Reverse(head.best.priority),
                head.best.created_at,
                head.best.id,
            )
        });
        if starving.is_empty() {
            return None;
        }
        // Keys the bound does not unload. Where a target has several places: any key
        // within its turn (loaded less than the bound ago, with work queued at its load
        // left), so that keys taking turns in one place do not cut short the turns of
        // keys in the others; on one place every load was a turn of its own, as the
        // single-slot policy had it. And while it runs jobs, the key of the batch under
        // way, until its work queued at the load is done: the bound already served it.
        let mut keep: Vec<LoadKey> = Vec::new();
        if state.places > 1 {
            keep.extend(
                state
                    .resident()
                    .filter(|key| self.within_turn(state, key, eligible, now))
                    .cloned(),
            );
        }
        let mut keep_busy = keep.clone();
        keep_busy.extend(
            self.batch
                .iter()
                .filter(|_| batch_start > i64::MIN)
                .map(|batch| batch.key.clone()),
        );
        for (clock, _, head, key) in starving {
            if !state.has_free_slot_for(key) {
                continue;
            }
            if state.is_resident(key) {
                return Some(pick(head, key, Reason::Starving, None));
            }
            if state.has_free_place() {
                return Some(pick(head, key, Reason::Starving, None));
            }
            // Keys higher work used within the window stay, until this key has waited
            // the bound and the window on top of it.
            let mut keep = keep.clone();
            let mut keep_busy = keep_busy.clone();
            if now - clock < self.max_wait_ms.saturating_add(self.protect_ms) {
                let protected = self.protected_from(state, head.best.priority, now);
                keep.extend(protected.iter().cloned());
                keep_busy.extend(protected);
            }
            if let Some(victim) = idle_victim(state, heads, None, &keep) {
                return Some(pick(head, key, Reason::Starving, Some(victim)));
            }
            if room_elsewhere(capacity, target, &key.model, heads) {
                continue;
            }
            if let Some(victim) = forced_victim(state, eligible, &keep_busy) {
                return Some(pick(head, key, Reason::Starving, Some(victim)));
            }
        }
        None
    }

    /// Remembers that work of `priority` was chosen for `key` at `now`: it replaces what
    /// was remembered unless that was of a higher priority and still within the window.
    fn note_use(&mut self, key: &LoadKey, priority: i32, now: i64) {
        if self.protect_ms == 0 {
            return;
        }
        let window = self.protect_ms;
        let kept = self
            .used
            .get(key)
            .is_some_and(|used| used.priority > priority && now - used.at < window);
        if !kept {
            self.used.insert(key.clone(), Use { priority, at: now });
        }
    }

    /// The keys loaded on `state` that a load for work of `priority` must not unload:
    /// work of a higher priority was chosen for them less than the window ago.
    fn protected_from(&self, state: &TargetState, priority: i32, now: i64) -> Vec<LoadKey> {
        if priority > self.protect_loads_at_most {
            return Vec::new();
        }
        state
            .resident()
            .filter(|key| {
                self.used
                    .get(*key)
                    .is_some_and(|used| used.priority > priority && now - used.at < self.protect_ms)
            })
            .cloned()
            .collect()
    }

    /// Whether `key`, loaded on `state`, is still within its turn: loaded less than the
    /// bound ago, with work left that was queued when it was loaded.
    fn within_turn(
        &self,
        state: &TargetState,
        key: &LoadKey,
        eligible: &[(&QueueHead, LoadKey)],
        now: i64,
    ) -> bool {
        let Some(loaded_at) = state.loaded_at(key) else {
            return false;
        };
        now - loaded_at < self.max_wait_ms
            && eligible
                .iter()
                .any(|(head, other)| other == key && head.oldest_created_at <= loaded_at)
    }

    /// When `head`'s key started waiting: its oldest job's arrival, or its last service
    /// if later. A key with a job running anywhere is being served now.
    fn waiting_since(&self, head: &QueueHead, key: &LoadKey, capacity: &Capacity, now: i64) -> i64 {
        let mut since = head.oldest_created_at;
        if let Some(&served) = self.served.get(key) {
            since = since.max(served);
        }
        for target in capacity.targets.iter().filter(|target| !target.paused) {
            if target.running_of(key) > 0 {
                return now;
            }
            if let Some(used) = target.last_used(key) {
                since = since.max(used);
            }
        }
        since
    }

    /// The start of the forced batch under way, while its key still has work that was
    /// queued when the bound placed it; else no floor.
    fn active_batch_start(&self, eligible: &[(&QueueHead, LoadKey)]) -> i64 {
        self.batch
            .as_ref()
            .filter(|batch| {
                eligible
                    .iter()
                    .any(|(head, key)| *key == batch.key && head.oldest_created_at <= batch.started)
            })
            .map_or(i64::MIN, |batch| batch.started)
    }

    /// Drops the service times that can no longer matter: a key with nothing queued
    /// whose last service is older than the bound. Its next job arrives later than
    /// that service, so its wait counts from the arrival anyway.
    fn forget_idle(&mut self, heads: &[QueueHead], now: i64) {
        let window = self.protect_ms;
        self.used.retain(|_, used| now - used.at < window);
        if self.served.len() <= heads.len() {
            return;
        }
        let horizon = now - self.max_wait_ms;
        self.served
            .retain(|key, served| *served >= horizon || heads.iter().any(|head| key.is_of(head)));
    }

    #[cfg(test)]
    pub(crate) fn remembered(&self) -> Vec<LoadKey> {
        let mut keys: Vec<LoadKey> = self.served.keys().cloned().collect();
        keys.sort();
        keys
    }
}

/// The decision to run `head`'s best job.
fn pick(head: &QueueHead, key: &LoadKey, reason: Reason, evict: Option<LoadKey>) -> Decision {
    Decision {
        job: head.best.id,
        key: key.clone(),
        reason,
        evict,
        more_queued: head.depth > 1,
    }
}

/// Whether a target other than `target` can load `model` without unloading busy work:
/// it has a free place, or a loaded key that runs nothing (and, with `heads`, has no
/// queued work).
fn room_elsewhere(capacity: &Capacity, target: usize, model: &str, heads: &[QueueHead]) -> bool {
    capacity.targets.iter().enumerate().any(|(index, other)| {
        index != target
            && !other.paused
            && other.may_serve(model)
            && (other.has_free_place() || idle_victim(other, heads, Some(i32::MIN), &[]).is_some())
    })
}

/// A loaded key of `state` that runs nothing and may be unloaded, never one of `keep`:
/// with no queued work at or above `below` (any queued work when `below` is `None`). Keys with nothing
/// queued go first, then the lowest queued priority, then the least recently used.
fn idle_victim(
    state: &TargetState,
    heads: &[QueueHead],
    below: Option<i32>,
    keep: &[LoadKey],
) -> Option<LoadKey> {
    state
        .resident()
        .enumerate()
        .filter(|(_, key)| state.running_of(key) == 0 && !keep.contains(key))
        .map(|(recency, key)| {
            let queued = heads
                .iter()
                .filter(|head| key.is_of(head))
                .map(|head| head.best.priority)
                .max();
            (queued, recency, key)
        })
        .filter(|(queued, _, _)| match (below, queued) {
            (Some(top), Some(priority)) => *priority < top,
            _ => true,
        })
        .min_by_key(|(queued, recency, _)| (queued.is_some(), *queued, *recency))
        .map(|(_, _, key)| key.clone())
}

/// The loaded key the bound unloads when nothing is idle, never one of `keep`: the one with
/// the least
/// important queued work, then the least of it, then the fewest jobs running, then
/// the least recently used.
fn forced_victim(
    state: &TargetState,
    eligible: &[(&QueueHead, LoadKey)],
    keep: &[LoadKey],
) -> Option<LoadKey> {
    state
        .resident()
        .enumerate()
        .filter(|(_, key)| !keep.contains(key))
        .map(|(recency, key)| {
            let queued = eligible
                .iter()
                .filter(|(_, other)| other == key)
                .map(|(head, _)| head.best.priority)
                .max();
            (queued, state.loaded_at(key), recency, key)
        })
        .min_by_key(|(queued, loaded_at, recency, _)| {
            (queued.is_some(), *queued, *loaded_at, *recency)
        })
        .map(|(_, _, _, key)| key.clone())
}
