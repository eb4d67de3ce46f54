//! API keys and what each key used, beside the jobs.
//!
//! The daemon authenticates requests against keys the operator created; several
//! instances on one PostgreSQL database, and the `foreman keys` command working on the
//! database directly, must all see the same keys, so they live in the store. A key is
//! kept as the SHA-256 of its secret and a short prefix for display, never the secret;
//! its scopes and limits are the daemon's business and are kept as an opaque JSON text
//! (the grant). Usage (requests, tokens, GPU time, loads) is added per key per hour, so
//! `foreman keys usage` can show it over time and a daily token limit can be read back.

use crate::Store;
use crate::error::Result;

/// One hour in milliseconds: the width of a usage bucket.
pub const USAGE_HOUR_MS: i64 = 3_600_000;

/// A key to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApiKey {
    /// The operator's name for it; unique, never reused.
    pub name: String,
    /// The first characters of the secret, shown in listings to tell keys apart.
    pub prefix: String,
    /// SHA-256 of the whole secret.
    pub secret_sha256: [u8; 32],
    /// Scopes and limits, as the daemon serialises them.
    pub grant_json: String,
}

/// A stored key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKey {
    pub name: String,
    pub prefix: String,
    pub secret_sha256: [u8; 32],
    pub grant_json: String,
    pub created_at: i64,
    /// Set once the key was revoked; a revoked key authenticates nothing.
    pub revoked_at: Option<i64>,
    /// The latest use recorded (recorded in batches, so up to a few seconds late).
    pub last_used_at: Option<i64>,
}

/// Amounts to add to one key's bucket of one hour.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UsageDelta {
    pub key_name: String,
    /// The start of the hour (unix ms, a multiple of [`USAGE_HOUR_MS`]).
    pub hour: i64,
    pub requests: i64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub gpu_ms: i64,
    pub loads: i64,
}

/// One key's usage in one hour, as stored (the same fields as a delta).
pub type UsageBucket = UsageDelta;

/// The hour a moment falls in.
pub fn usage_hour(now: i64) -> i64 {
    now.div_euclid(USAGE_HOUR_MS) * USAGE_HOUR_MS
}

impl Store {
    /// Creates a key; [`Error::KeyExists`](crate::Error::KeyExists) when the name is taken
    /// (by a live or a revoked key).
    pub async fn create_api_key(&self, key: NewApiKey, now: i64) -> Result<ApiKey> {
        match self {
            Store::Sqlite(store) => store.create_api_key(key, now).await,
            Store::Postgres(store) => store.create_api_key(key, now).await,
        }
    }

    /// Every key, revoked ones included, by name.
    pub async fn api_keys(&self) -> Result<Vec<ApiKey>> {
        match self {
            Store::Sqlite(store) => store.api_keys().await,
            Store::Postgres(store) => store.api_keys().await,
        }
    }

    /// Revokes the key of this name; true when a live key was revoked, false when there
    /// is no such key or it was revoked before.
    pub async fn revoke_api_key(&self, name: &str, now: i64) -> Result<bool> {
        match self {
            Store::Sqlite(store) => store.revoke_api_key(name, now).await,
            Store::Postgres(store) => store.revoke_api_key(name, now).await,
        }
    }

    /// Records keys' latest uses (name, unix ms); a use older than the recorded one
    /// changes nothing.
    pub async fn touch_api_keys(&self, uses: Vec<(String, i64)>) -> Result<()> {
        if uses.is_empty() {
            return Ok(());
        }
        match self {
            Store::Sqlite(store) => store.touch_api_keys(uses).await,
            Store::Postgres(store) => store.touch_api_keys(uses).await,
        }
    }

    /// Adds each delta to its key's bucket of its hour (creating the bucket).
    pub async fn add_key_usage(&self, deltas: Vec<UsageDelta>) -> Result<()> {
        if deltas.is_empty() {
            return Ok(());
        }
        match self {
            Store::Sqlite(store) => store.add_key_usage(deltas).await,
            Store::Postgres(store) => store.add_key_usage(deltas).await,
        }
    }

    /// The usage buckets from the hour holding `since` on, of one key or of all, by key
    /// then hour.
    pub async fn key_usage(&self, key_name: Option<&str>, since: i64) -> Result<Vec<UsageBucket>> {
        let key_name = key_name.map(str::to_owned);
        let from = usage_hour(since);
        match self {
            Store::Sqlite(store) => store.key_usage(key_name, from).await,
            Store::Postgres(store) => store.key_usage(key_name, from).await,
        }
    }
}

/// The upsert of a usage delta, in SQLite's placeholders: `?1` key, `?2` hour, then the
/// five amounts.
pub(crate) const ADD_USAGE_SQLITE: &str = "INSERT INTO key_usage
     (key_name, hour, requests, prompt_tokens, completion_tokens, gpu_ms, loads)
     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
     ON CONFLICT (key_name, hour) DO UPDATE SET
       requests = requests + excluded.requests,
       prompt_tokens = prompt_tokens + excluded.prompt_tokens,
       completion_tokens = completion_tokens + excluded.completion_tokens,
       gpu_ms = gpu_ms + excluded.gpu_ms,
       loads = loads + excluded.loads";

/// [`ADD_USAGE_SQLITE`] in PostgreSQL's placeholders.
pub(crate) const ADD_USAGE_POSTGRES: &str = "INSERT INTO key_usage
     (key_name, hour, requests, prompt_tokens, completion_tokens, gpu_ms, loads)
     VALUES ($1, $2, $3, $4, $5, $6, $7)
     ON CONFLICT (key_name, hour) DO UPDATE SET
       requests = key_usage.requests + excluded.requests,
       prompt_tokens = key_usage.prompt_tokens + excluded.prompt_tokens,
       completion_tokens = key_usage.completion_tokens + excluded.completion_tokens,
       gpu_ms = key_usage.gpu_ms + excluded.gpu_ms,
       loads = key_usage.loads + excluded.loads";

pub(crate) const KEY_COLUMNS: &str =
    "name, prefix, secret_sha256, grant_json, created_at, revoked_at, last_used_at";

pub(crate) const USAGE_COLUMNS: &str =
    "key_name, hour, requests, prompt_tokens, completion_tokens, gpu_ms, loads";

/// A stored digest of the wrong length is a corrupt row.
pub(crate) fn digest(name: &str, bytes: Vec<u8>) -> Result<[u8; 32]> {
    bytes.try_into().map_err(|_| crate::Error::CorruptRow {
        id: format!("api key {name}"),
        reason: "secret_sha256 is not 32 bytes".into(),
    })
}
