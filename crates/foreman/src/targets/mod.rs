//! The Ollama servers foreman schedules for, and what it knows of each.
//!
//! A deployment has one or more *targets*. Each has its own HTTP client
//! ([`Upstream`]), its own polled [`Inventory`] (models, `/api/ps`, reachability,
//! the paused state), its capacity as the operator declared it (`slots` parallel
//! requests per loaded model, `places` models loaded at once), and the load the
//! scheduler last published for it ([`TargetLoad`]).
//!
//! [`Targets`] answers the questions that span them: which target a direct request
//! (embeddings, `/api/show`) goes to, whether any target knows a model, and whether
//! every target that could serve a model is down (so a synchronous caller can be
//! told instead of waiting forever).

pub mod inventory;
pub mod spec;

use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use thiserror::Error;

pub use self::inventory::{Inventory, ModelCheck};
pub use self::spec::{TargetSpec, parse_target};
use crate::model_name::model_key;
use crate::ownership::Ownership;
use crate::upstream::Upstream;

/// What the scheduler last published about a target.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetLoad {
    /// The keys it holds loaded, as the scheduler tracks them.
    pub resident: Vec<String>,
    /// Jobs running on it now.
    pub running: usize,
    /// Jobs running now by load key (named as in `resident`), in key order.
    pub running_by_key: Vec<(String, usize)>,
}

/// One Ollama server.
pub struct Target {
    pub name: String,
    /// Base URL without a trailing slash.
    pub url: String,
    /// Parallel requests per loaded model (its `OLLAMA_NUM_PARALLEL`).
    pub slots: usize,
    /// Models loaded at once (its `OLLAMA_MAX_LOADED_MODELS`).
    pub places: usize,
    pub upstream: Upstream,
    pub inventory: Arc<Inventory>,
    /// `None` until the scheduler first publishes.
    load: RwLock<Option<TargetLoad>>,
    /// Whether this instance schedules the target now (its lease; see [`crate::ownership`]).
    pub ownership: Ownership,
}

impl Target {
    /// Records the target's load; the scheduler calls this whenever it changes.
    pub fn publish_load(&self, load: TargetLoad) {
        *self.load.write().unwrap_or_else(|e| e.into_inner()) = Some(load);
    }

    /// The load last published (empty before the first).
    pub fn load(&self) -> TargetLoad {
        self.published_load().unwrap_or_default()
    }

    /// The load last published, `None` before the first.
    pub fn published_load(&self) -> Option<TargetLoad> {
        self.load.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Whether the model `key` is loaded here, by the scheduler's account or the last
    /// `/api/ps` poll.
    pub fn is_resident(&self, key: &str) -> bool {
        self.inventory
            .resident()
            .iter()
            .any(|resident| resident == key)
            || self.load().resident.iter().any(|resident| {
                // Published load keys read `model` or `model{options}`.
                resident
                    .strip_prefix(key)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('{'))
            })
    }

    /// Whether this target may serve the model `key`: it lists it, or has never
    /// answered a poll (nobody knows what it has).
    fn may_serve(&self, key: &str) -> bool {
        self.inventory.has_model(key) != Some(false)
    }
}

/// Every target, in the order the settings list them.
pub struct Targets {
    targets: Vec<Arc<Target>>,
}

/// Every target that could serve a model is down.
#[derive(Debug, Clone, Error, PartialEq)]
#[error(
    "no target that serves model '{model}' has answered for {}s ({})",
    down_for.as_secs(),
    targets.join(", ")
)]
pub struct TargetsDown {
    pub model: String,
    /// The names of the targets that could serve it.
    pub targets: Vec<String>,
    pub down_for: Duration,
}

/// A request that must go to one named target did not name a known one.
#[derive(Debug, Clone, Error, PartialEq)]
pub enum TargetChoiceError {
    #[error("several targets serve this foreman; name one with the X-Foreman-Target header: {}", .0.join(", "))]
    NameRequired(Vec<String>),
    #[error("unknown target '{name}' in X-Foreman-Target; targets: {}", targets.join(", "))]
    Unknown { name: String, targets: Vec<String> },
}

impl Targets {
    /// One target per spec, each with its own client and (not yet started) poller.
    /// `specs` must not be empty (the settings guarantee it).
    pub fn new(
        specs: &[TargetSpec],
        upstream_timeout: Duration,
        poll_interval: Duration,
    ) -> Arc<Targets> {
        assert!(!specs.is_empty(), "at least one target");
        let targets = specs
            .iter()
            .map(|spec| {
                let upstream = Upstream::new(&spec.url, upstream_timeout);
                Arc::new(Target {
                    name: spec.name.clone(),
                    url: upstream.base().to_string(),
                    slots: spec.slots,
                    places: spec.places,
                    inventory: Inventory::new(upstream.clone(), poll_interval),
                    upstream,
                    load: RwLock::new(None),
                    ownership: Ownership::default(),
                })
            })
            .collect();
        Arc::new(Targets { targets })
    }

    pub fn all(&self) -> &[Arc<Target>] {
        &self.targets
    }

    pub fn by_name(&self, name: &str) -> Option<&Arc<Target>> {
        self.targets.iter().find(|target| target.name == name)
    }

    /// The names, in order.
    pub fn names(&self) -> Vec<String> {
        self.targets
            .iter()
            .map(|target| target.name.clone())
            .collect()
    }

    /// The target a request that must go to exactly one (model management) goes to:
    /// the only one, or the one `name` (from `X-Foreman-Target`) names.
    pub fn chosen(&self, name: Option<&str>) -> Result<&Arc<Target>, TargetChoiceError> {
        match (name, self.targets.as_slice()) {
            (None, [only]) => Ok(only),
            (None, _) => Err(TargetChoiceError::NameRequired(self.names())),
            (Some(name), _) => self
                .by_name(name)
                .ok_or_else(|| TargetChoiceError::Unknown {
                    name: name.to_string(),
                    targets: self.names(),
                }),
        }
    }

    /// Direct routes (embed, show): a target that has the model, preferring one where
    /// it is resident, reachable first; else the first reachable; else the first.
    ///
    /// A target that has the model but does not answer still beats one that answers
    /// without it: the caller's error then says the server is down, not that the
    /// model is missing.
    pub fn for_model(&self, model: &str) -> &Arc<Target> {
        let key = model_key(model);
        let has = |target: &&Arc<Target>| target.inventory.has_model(&key) == Some(true);
        let reachable = |target: &&Arc<Target>| target.inventory.reachable();
        let targets = || self.targets.iter();
        targets()
            .find(|target| has(target) && reachable(target) && target.is_resident(&key))
            .or_else(|| targets().find(|target| has(target) && reachable(target)))
            .or_else(|| targets().find(has))
            .or_else(|| targets().find(reachable))
            .unwrap_or(&self.targets[0])
    }

    /// Known if any target knows the model (after one forced re-poll of all on a
    /// miss); Unreachable if no target could be asked, or if one that could not be
    /// asked has never answered (it may have the model); Unknown otherwise.
    pub async fn check_model(&self, name: &str) -> ModelCheck {
        let key = model_key(name);
        let knows = |target: &Arc<Target>| target.inventory.has_model(&key) == Some(true);
        if self.targets.iter().any(knows) {
            return ModelCheck::Known;
        }
        let polls = self.targets.iter().map(|target| target.inventory.poll());
        let answers = futures::future::join_all(polls).await;
        if self.targets.iter().any(knows) {
            return ModelCheck::Known;
        }
        let unknown_to_the_silent =
            self.targets.iter().zip(&answers).any(|(target, answer)| {
                answer.is_err() && target.inventory.has_model(&key).is_none()
            });
        match answers.iter().any(Result::is_ok) && !unknown_to_the_silent {
            true => ModelCheck::Unknown,
            false => ModelCheck::Unreachable,
        }
    }

    /// Some(how long) when every target that may serve `model` (its inventory lists
    /// it, or it has never been polled successfully) is paused; None otherwise.
    pub fn unavailable_for(&self, model: &str) -> Option<Duration> {
        self.down_for(model).map(|(down_for, _)| down_for)
    }

    /// [`Targets::unavailable_for`] with the names of the targets that may serve the
    /// model, for the caller's error.
    pub fn down_for(&self, model: &str) -> Option<(Duration, Vec<String>)> {
        let key = model_key(model);
        let serving: Vec<&Arc<Target>> =
            self.targets.iter().filter(|t| t.may_serve(&key)).collect();
        if serving.is_empty() || serving.iter().any(|target| !target.inventory.paused()) {
            return None;
        }
        let now = Instant::now();
        let down_for = serving
            .iter()
            .map(|target| {
                target
                    .inventory
                    .down_since()
                    .map_or(Duration::ZERO, |since| now.saturating_duration_since(since))
            })
            .min()
            .unwrap_or_default();
        Some((down_for, serving.iter().map(|t| t.name.clone()).collect()))
    }

    /// Polls every target once, at the same time; failures are logged (a target down
    /// at start is paused, and its jobs wait for it).
    pub async fn poll_all(&self) {
        let polls = self.targets.iter().map(|target| async move {
            if let Err(error) = target.inventory.poll().await {
                tracing::warn!(%error, target = %target.name, url = %target.url, "target unreachable at start; its jobs wait for it");
            }
        });
        futures::future::join_all(polls).await;
    }

    /// True when any target's last poll failed.
    pub fn degraded(&self) -> bool {
        self.targets
            .iter()
            .any(|target| target.inventory.degraded())
    }

    /// True when every target answered its last poll.
    pub fn all_reachable(&self) -> bool {
        self.targets
            .iter()
            .all(|target| target.inventory.reachable())
    }
}
