//! The keys a daemon authenticates against: read from the store at start and again
//! when a second old (so a key created or revoked by `foreman keys` on the database,
//! or by another instance, takes effect within about a second; the keys API reloads at
//! once), plus `FOREMAN_TOKEN` as the one admin key.
//!
//! A presented secret is digested once and compared with every key's digest in
//! constant time, without stopping at a match, so timing tells nothing about which key
//! or how much of one a guess matched.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use foreman_store::Store;

use super::grant::Grant;
use super::live::{DAY_MS, LiveKey};
use super::secret;

/// How old the loaded keys may be before a request reloads them.
const RELOAD_AFTER: Duration = Duration::from_secs(1);

/// The key name requests made with `FOREMAN_TOKEN` are counted under.
pub const ADMIN_NAME: &str = "admin";

/// Who a presented secret is.
#[derive(Debug, Clone)]
pub enum Identity {
    /// A live key (the admin token included).
    Key(Arc<LiveKey>),
    /// A key that was revoked.
    Revoked,
    /// Nothing known.
    Unknown,
}

#[derive(Debug)]
struct Entry {
    digest: [u8; 32],
    revoked: bool,
    key: Arc<LiveKey>,
}

#[derive(Debug, Default)]
struct Loaded {
    at: Option<Instant>,
    entries: Vec<Entry>,
}

/// The daemon's keys.
#[derive(Debug)]
pub struct KeyRing {
    store: Store,
    token: Option<[u8; 32]>,
    admin: Arc<LiveKey>,
    loaded: RwLock<Loaded>,
    reloading: tokio::sync::Mutex<()>,
}

impl KeyRing {
    /// A ring over the store's keys and the admin token, if any; nothing loaded yet.
    pub fn new(store: Store, token: Option<&str>) -> KeyRing {
        KeyRing {
            store,
            token: token.map(secret::digest),
            admin: Arc::new(LiveKey::new(
                ADMIN_NAME.into(),
                Grant::admin(),
                0,
                crate::clock::now_ms(),
            )),
            loaded: RwLock::default(),
            reloading: tokio::sync::Mutex::new(()),
        }
    }

    /// Reloads when the keys are older than a second (one request reloads; the others
    /// go on with the keys as they were).
    pub async fn refresh_if_stale(&self) {
        let stale = self.read().at.is_none_or(|at| at.elapsed() >= RELOAD_AFTER);
        if !stale {
            return;
        }
        let Ok(_reloading) = self.reloading.try_lock() else {
            return;
        };
        if let Err(error) = self.load().await {
            tracing::warn!(%error, "could not reload the API keys; keeping the loaded ones");
        }
    }

    /// Reads every key from the store now. A key's counters survive a reload.
    pub async fn reload(&self) -> Result<(), foreman_store::Error> {
        let _reloading = self.reloading.lock().await;
        self.load().await
    }

    async fn load(&self) -> Result<(), foreman_store::Error> {
        let now = crate::clock::now_ms();
        let stored = self.store.api_keys().await?;
        let mut known: HashMap<String, Arc<LiveKey>> = self
            .read()
            .entries
            .iter()
            .map(|entry| (entry.key.name.clone(), entry.key.clone()))
            .collect();
        let today = now.div_euclid(DAY_MS) * DAY_MS;
        let mut tokens_today: Option<HashMap<String, u64>> = None;
        let mut entries = Vec::with_capacity(stored.len());
        for key in stored {
            let live = match known.remove(&key.name) {
                Some(live) => live,
                None => {
                    let grant = match serde_json::from_str::<Grant>(&key.grant_json) {
                        Ok(grant) => grant,
                        Err(error) => {
                            // Kept as revoked: it authenticates nothing, and foreman stays
                            // closed (it is a key that exists).
                            tracing::warn!(key = %key.name, %error, "API key with an unreadable grant; it authenticates nothing");
                            entries.push(Entry {
                                digest: key.secret_sha256,
                                revoked: true,
                                key: Arc::new(LiveKey::new(
                                    key.name,
                                    Grant {
                                        scopes: Default::default(),
                                        ..Grant::admin()
                                    },
                                    0,
                                    now,
                                )),
                            });
                            continue;
                        }
                    };
                    if tokens_today.is_none() {
                        let mut sums = HashMap::new();
                        for bucket in self.store.key_usage(None, today).await? {
                            *sums.entry(bucket.key_name).or_default() +=
                                (bucket.prompt_tokens + bucket.completion_tokens).max(0) as u64;
                        }
                        tokens_today = Some(sums);
                    }
                    let used = tokens_today
                        .as_ref()
                        .and_then(|sums| sums.get(&key.name).copied())
                        .unwrap_or(0);
                    Arc::new(LiveKey::new(key.name.clone(), grant, used, now))
                }
            };
            entries.push(Entry {
                digest: key.secret_sha256,
                revoked: key.revoked_at.is_some(),
                key: live,
            });
        }
        *self.loaded.write().unwrap_or_else(|e| e.into_inner()) = Loaded {
            at: Some(Instant::now()),
            entries,
        };
        Ok(())
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Loaded> {
        self.loaded.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether requests must authenticate: a token is set or a key was ever created.
    pub fn required(&self) -> bool {
        self.token.is_some() || !self.read().entries.is_empty()
    }

    /// The key of this name as last loaded (`admin` is the admin token's, when one is
    /// set), whether revoked or not; `None` when no such key is known. Work queued later
    /// on a request's behalf (a batch's lines) finds its key here.
    pub fn named(&self, name: &str) -> Option<Identity> {
        if name == ADMIN_NAME && self.token.is_some() {
            return Some(Identity::Key(self.admin.clone()));
        }
        self.read()
            .entries
            .iter()
            .find(|entry| entry.key.name == name)
            .map(|entry| match entry.revoked {
                true => Identity::Revoked,
                false => Identity::Key(entry.key.clone()),
            })
    }

    /// Who `presented` is.
    pub fn identify(&self, presented: &str) -> Identity {
        let digest = secret::digest(presented);
        let mut found = Identity::Unknown;
        if let Some(token) = &self.token
            && secret::same_digest(&digest, token)
        {
            found = Identity::Key(self.admin.clone());
        }
        for entry in &self.read().entries {
            if secret::same_digest(&digest, &entry.digest) {
                found = if entry.revoked {
                    Identity::Revoked
                } else {
                    Identity::Key(entry.key.clone())
                };
            }
        }
        found
    }
}
