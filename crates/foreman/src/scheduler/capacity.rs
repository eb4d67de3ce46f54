//! What every target can take right now: its slots and places, which load keys it has
//! loaded, and how many jobs of each run on it.
//!
//! A target runs up to `slots` requests at once for one loaded model (Ollama's
//! `OLLAMA_NUM_PARALLEL`) and keeps up to `places` models loaded (its
//! `OLLAMA_MAX_LOADED_MODELS`). The resident set is seeded from the target's
//! `/api/ps` and then tracked from what foreman itself sends: a key becomes resident
//! when a job of it is dispatched, and leaves when the policy loads another key over
//! it. This state is plain data with no clock or I/O, so the policy's property tests
//! drive it directly.
//!
//! Jobs another instance still runs on a target this instance has just taken over (a
//! handover: the previous holder's lease lapsed or was released while its runs went on)
//! are *inherited*: they hold slots (and their keys are loaded) like this instance's
//! own, until the dispatcher reads them gone from the store, so the new holder never
//! starts more runs than the target has slots.

use std::collections::{HashMap, HashSet};

use super::load_key::LoadKey;

/// A loaded key, with when it was loaded and last used.
#[derive(Debug, Clone)]
struct Resident {
    key: LoadKey,
    loaded_at: i64,
    used_at: i64,
}

/// One target as the policy sees it.
#[derive(Debug, Clone)]
pub struct TargetState {
    pub name: String,
    /// Requests it runs at once per loaded key.
    pub slots: usize,
    /// Keys it keeps loaded at once.
    pub places: usize,
    /// Not answering: nothing is dispatched to it, and its keys do not count as loaded
    /// anywhere.
    pub paused: bool,
    /// The model keys it has (its `/api/tags`); `None` while unknown, which means it
    /// may serve any model.
    pub models: Option<HashSet<String>>,
    /// Loaded keys, least recently used first.
    resident: Vec<Resident>,
    running: HashMap<LoadKey, usize>,
    /// Jobs another instance still runs here, per key (see the module doc).
    inherited: HashMap<LoadKey, usize>,
}

impl TargetState {
    pub fn new(name: impl Into<String>, slots: usize, places: usize) -> TargetState {
        TargetState {
            name: name.into(),
            slots: slots.max(1),
            places: places.max(1),
            paused: false,
            models: None,
            resident: Vec::new(),
            running: HashMap::new(),
            inherited: HashMap::new(),
        }
    }

    /// How many jobs it can run at once: a slot per place per loaded key.
    pub fn runners(&self) -> usize {
        self.slots * self.places
    }

    pub fn may_serve(&self, model: &str) -> bool {
        self.models
            .as_ref()
            .is_none_or(|models| models.contains(model))
    }

    pub fn is_resident(&self, key: &LoadKey) -> bool {
        self.resident.iter().any(|resident| resident.key == *key)
    }

    /// Loaded keys, least recently used first.
    pub fn resident(&self) -> impl Iterator<Item = &LoadKey> {
        self.resident.iter().map(|resident| &resident.key)
    }

    /// Jobs of `key` running here: this instance's and those inherited.
    pub fn running_of(&self, key: &LoadKey) -> usize {
        self.running.get(key).copied().unwrap_or(0) + self.inherited.get(key).copied().unwrap_or(0)
    }

    /// The keys with jobs running here (inherited ones included), and how many each.
    pub fn running_keys(&self) -> impl Iterator<Item = (&LoadKey, usize)> {
        let inherited_only = self
            .inherited
            .keys()
            .filter(|key| !self.running.contains_key(*key));
        self.running
            .keys()
            .chain(inherited_only)
            .map(|key| (key, self.running_of(key)))
    }

    pub fn running_total(&self) -> usize {
        self.running.values().sum::<usize>() + self.inherited_total()
    }

    /// Jobs another instance still runs here.
    pub fn inherited_total(&self) -> usize {
        self.inherited.values().sum()
    }

    /// Replaces the inherited jobs with `running` (per key, as the store shows them now);
    /// their keys are loaded, since they run.
    pub fn inherit(&mut self, running: HashMap<LoadKey, usize>, now: i64) {
        for key in running.keys() {
            self.seed(key.clone(), now);
        }
        self.inherited = running;
        self.inherited.retain(|_, count| *count > 0);
    }

    /// Whether `key` has a job running here, this instance's or inherited.
    fn busy(&self, key: &LoadKey) -> bool {
        self.running.contains_key(key) || self.inherited.contains_key(key)
    }

    /// A job of `key` could start now without waiting for a slot.
    pub fn has_free_slot_for(&self, key: &LoadKey) -> bool {
        self.running_of(key) < self.slots
    }

    /// Another key can be loaded without unloading one.
    pub fn has_free_place(&self) -> bool {
        self.resident.len() < self.places
    }

    /// When `key` was last used here, if it is loaded.
    pub fn last_used(&self, key: &LoadKey) -> Option<i64> {
        self.find(key).map(|resident| resident.used_at)
    }

    /// When `key` was loaded here, if it is loaded.
    pub fn loaded_at(&self, key: &LoadKey) -> Option<i64> {
        self.find(key).map(|resident| resident.loaded_at)
    }

    fn find(&self, key: &LoadKey) -> Option<&Resident> {
        self.resident.iter().find(|resident| resident.key == *key)
    }

    /// Marks `key` loaded (used at `now`), as the target's `/api/ps` shows it.
    pub fn seed(&mut self, key: LoadKey, now: i64) {
        if !self.is_resident(&key) && self.has_free_place() {
            self.resident.push(Resident {
                key,
                loaded_at: now,
                used_at: now,
            });
        }
    }

    /// A job of `key` starts here; `evict` leaves the resident set first.
    pub fn start(&mut self, key: &LoadKey, evict: Option<&LoadKey>, now: i64) {
        if let Some(evicted) = evict {
            self.resident.retain(|resident| resident.key != *evicted);
        }
        self.touch(key, now);
        *self.running.entry(key.clone()).or_default() += 1;
    }

    /// A job of `key` that [`TargetState::start`] announced has ended.
    pub fn finish(&mut self, key: &LoadKey, now: i64) {
        if let Some(count) = self.running.get_mut(key) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.running.remove(key);
            }
        }
        if self.is_resident(key) {
            self.touch(key, now);
        }
    }

    /// Moves `key` to the most recently used end, loading it if it was not.
    fn touch(&mut self, key: &LoadKey, now: i64) {
        let loaded_at = self.loaded_at(key).unwrap_or(now);
        self.resident.retain(|resident| resident.key != *key);
        self.resident.push(Resident {
            key: key.clone(),
            loaded_at,
            used_at: now,
        });
    }

    /// Forgets loaded keys that run nothing, were last used before `before`, and whose
    /// model the target no longer lists as loaded (`loaded_models`, from a poll made
    /// after `before`): the target unloaded them (keep-alive expiry, VRAM pressure, a
    /// restart).
    pub fn forget_unloaded(&mut self, loaded_models: &[String], before: i64) {
        let mut resident = std::mem::take(&mut self.resident);
        resident.retain(|resident| {
            self.busy(&resident.key)
                || resident.used_at >= before
                || loaded_models.contains(&resident.key.model)
        });
        self.resident = resident;
    }

    /// Forgets every loaded key that runs nothing, then seeds from `loaded_models`:
    /// after the target was down, what it had loaded before tells nothing.
    pub fn reseed(&mut self, loaded_models: &[String], now: i64) {
        let mut resident = std::mem::take(&mut self.resident);
        resident.retain(|resident| self.busy(&resident.key));
        self.resident = resident;
        for model in loaded_models {
            self.seed(LoadKey::new(model.clone(), ""), now);
        }
    }
}

/// Every target's state, indexed as the targets are configured.
#[derive(Debug, Clone, Default)]
pub struct Capacity {
    pub targets: Vec<TargetState>,
}

impl Capacity {
    pub fn new(targets: Vec<TargetState>) -> Capacity {
        Capacity { targets }
    }

    /// Whether `key` is loaded on a target other than `except` that is not paused.
    pub fn resident_elsewhere(&self, key: &LoadKey, except: usize) -> bool {
        self.targets
            .iter()
            .enumerate()
            .any(|(index, target)| index != except && !target.paused && target.is_resident(key))
    }

    /// Whether `key` is loaded on any target that is not paused.
    pub fn resident_anywhere(&self, key: &LoadKey) -> bool {
        self.targets
            .iter()
            .any(|target| !target.paused && target.is_resident(key))
    }

    /// Free slots for `key` on the targets other than `except` that have it loaded.
    pub fn free_slots_elsewhere(&self, key: &LoadKey, except: usize) -> usize {
        self.targets
            .iter()
            .enumerate()
            .filter(|(index, target)| *index != except && !target.paused && target.is_resident(key))
            .map(|(_, target)| target.slots.saturating_sub(target.running_of(key)))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(model: &str) -> LoadKey {
        LoadKey::new(model, "")
    }

    #[test]
    fn starting_and_finishing_track_slots_places_and_recency() {
        let mut target = TargetState::new("gpu", 2, 2);
        assert_eq!(target.runners(), 4);
        assert!(target.has_free_place());
        target.start(&key("a"), None, 1);
        target.start(&key("a"), None, 2);
        assert!(!target.has_free_slot_for(&key("a")));
        target.start(&key("b"), None, 3);
        assert!(!target.has_free_place());
        assert_eq!(target.running_total(), 3);
        target.finish(&key("a"), 4);
        assert!(target.has_free_slot_for(&key("a")));
        // a was used last, so b is now the least recently used.
        assert_eq!(target.resident().next(), Some(&key("b")));
        target.start(&key("c"), Some(&key("b")), 5);
        assert!(!target.is_resident(&key("b")));
        assert_eq!(target.running_of(&key("b")), 1, "b's job still runs");
        target.finish(&key("b"), 6);
        assert!(!target.is_resident(&key("b")), "finishing does not reload");
        assert_eq!(target.running_of(&key("b")), 0);
    }

    #[test]
    fn unloaded_keys_are_forgotten_only_when_idle_and_stale() {
        let mut target = TargetState::new("gpu", 1, 3);
        target.seed(key("a"), 0);
        target.seed(key("b"), 0);
        target.start(&key("c"), None, 0);
        target.seed(key("d"), 0);
        assert_eq!(target.resident().count(), 3, "seeding never exceeds places");
        target.forget_unloaded(&["b".to_string()], 10);
        let left: Vec<&LoadKey> = target.resident().collect();
        assert_eq!(left, [&key("b"), &key("c")]);
        target.reseed(&["x".to_string()], 20);
        let left: Vec<&LoadKey> = target.resident().collect();
        assert_eq!(left, [&key("c"), &key("x")]);
    }

    #[test]
    fn inherited_jobs_hold_slots_until_they_are_read_gone() {
        let mut target = TargetState::new("gpu", 2, 2);
        target.start(&key("a"), None, 1);
        target.inherit(HashMap::from([(key("a"), 1), (key("b"), 2)]), 2);
        assert!(target.is_resident(&key("b")), "a running key is loaded");
        assert_eq!(target.running_of(&key("a")), 2);
        assert!(!target.has_free_slot_for(&key("a")));
        assert!(!target.has_free_slot_for(&key("b")));
        assert_eq!((target.running_total(), target.inherited_total()), (4, 3));
        let mut keys: Vec<(LoadKey, usize)> = target
            .running_keys()
            .map(|(key, count)| (key.clone(), count))
            .collect();
        keys.sort_by(|x, y| x.0.model.cmp(&y.0.model));
        assert_eq!(keys, [(key("a"), 2), (key("b"), 2)]);
        // Busy keys stay loaded whatever the target's list says.
        target.reseed(&[], 3);
        assert!(target.is_resident(&key("b")));
        target.inherit(HashMap::from([(key("b"), 1)]), 4);
        assert!(target.has_free_slot_for(&key("a")));
        assert!(target.has_free_slot_for(&key("b")));
        assert_eq!(target.running_total(), 2);
        target.inherit(HashMap::new(), 5);
        assert_eq!(target.inherited_total(), 0);
        assert_eq!(target.running_total(), 1);
    }

    #[test]
    fn paused_targets_count_for_nothing() {
        let mut a = TargetState::new("a", 2, 1);
        let b = TargetState::new("b", 2, 1);
        a.start(&key("m"), None, 0);
        let mut capacity = Capacity::new(vec![a, b]);
        assert!(capacity.resident_elsewhere(&key("m"), 1));
        assert_eq!(capacity.free_slots_elsewhere(&key("m"), 1), 1);
        capacity.targets[0].paused = true;
        assert!(!capacity.resident_elsewhere(&key("m"), 1));
        assert!(!capacity.resident_anywhere(&key("m")));
    }
}
