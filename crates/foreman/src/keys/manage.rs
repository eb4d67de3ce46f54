//! Creating, listing, revoking keys and reading their usage: what the `foreman keys`
//! command and the keys API (`/foreman/keys`) both do, with one wire form.

use std::collections::BTreeMap;

use foreman_store::{ApiKey, NewApiKey, Store, UsageBucket};
use serde_json::{Value, json};
use thiserror::Error;

use super::grant::Grant;
use super::ring::ADMIN_NAME;
use super::secret;

#[derive(Debug, Error)]
pub enum ManageError {
    #[error("{0}")]
    Invalid(String),
    #[error("an API key named {0} exists already")]
    Exists(String),
    #[error("no live API key named {0}")]
    NotFound(String),
    #[error("no random bytes for the secret: {0}")]
    Random(getrandom::Error),
    #[error(transparent)]
    Store(foreman_store::Error),
}

impl From<foreman_store::Error> for ManageError {
    fn from(error: foreman_store::Error) -> ManageError {
        match error {
            foreman_store::Error::KeyExists(name) => ManageError::Exists(name),
            other => ManageError::Store(other),
        }
    }
}

/// A key just created, with its secret (shown this once).
#[derive(Debug)]
pub struct Created {
    pub secret: String,
    pub key: ApiKey,
}

/// Names are labels in `/metrics` and words on a command line: 1 to 64 of ASCII
/// letters, digits, `.`, `_` and `-`; `admin` is the token's.
pub fn check_name(name: &str) -> Result<(), ManageError> {
    let fine = !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if !fine {
        return Err(ManageError::Invalid(format!(
            "invalid key name {name:?}: use 1 to 64 letters, digits, '.', '_' or '-'"
        )));
    }
    if name == ADMIN_NAME {
        return Err(ManageError::Invalid(format!(
            "the name {ADMIN_NAME} is FOREMAN_TOKEN's; choose another"
        )));
    }
    Ok(())
}

pub async fn create(
    store: &Store,
    name: &str,
    grant: &Grant,
    now: i64,
) -> Result<Created, ManageError> {
    check_name(name)?;
    grant.check().map_err(ManageError::Invalid)?;
    let secret = secret::generate().map_err(ManageError::Random)?;
    let grant_json = serde_json::to_string(grant).expect("a grant serialises");
    let key = store
        .create_api_key(
            NewApiKey {
                name: name.to_owned(),
                prefix: secret::prefix(&secret),
                secret_sha256: secret::digest(&secret),
                grant_json,
            },
            now,
        )
        .await?;
    Ok(Created { secret, key })
}

pub async fn revoke(store: &Store, name: &str, now: i64) -> Result<(), ManageError> {
    if store.revoke_api_key(name, now).await? {
        Ok(())
    } else {
        Err(ManageError::NotFound(name.to_owned()))
    }
}

fn rfc3339(ms: i64) -> String {
    let at = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_millis(at).to_string()
}

/// A key as listed: never its secret or digest, only the prefix.
pub fn key_view(key: &ApiKey) -> Value {
    let grant = serde_json::from_str::<Value>(&key.grant_json).unwrap_or(Value::Null);
    json!({
        "name": key.name,
        "prefix": key.prefix,
        "grant": grant,
        "created_at": rfc3339(key.created_at),
        "revoked_at": key.revoked_at.map(rfc3339),
        "last_used_at": key.last_used_at.map(rfc3339),
    })
}

/// The answer to a creation: the secret under `key`, then the key as listed.
pub fn created_view(created: &Created) -> Value {
    let mut view = json!({ "key": created.secret });
    if let (Value::Object(out), Value::Object(listed)) = (&mut view, key_view(&created.key)) {
        out.extend(listed);
    }
    view
}

fn bucket_view(bucket: &UsageBucket) -> Value {
    json!({
        "hour": rfc3339(bucket.hour),
        "requests": bucket.requests,
        "prompt_tokens": bucket.prompt_tokens,
        "completion_tokens": bucket.completion_tokens,
        "gpu_seconds": bucket.gpu_ms as f64 / 1000.0,
        "loads": bucket.loads,
    })
}

/// Usage since `since` (unix ms), per key: totals and the hours.
pub async fn usage(store: &Store, name: Option<&str>, since: i64) -> Result<Value, ManageError> {
    let buckets = store.key_usage(name, since).await?;
    let mut by_key: BTreeMap<&str, Vec<&UsageBucket>> = BTreeMap::new();
    for bucket in &buckets {
        by_key.entry(&bucket.key_name).or_default().push(bucket);
    }
    let keys: Vec<Value> = by_key
        .into_iter()
        .map(|(key, hours)| {
            let sum = |f: fn(&UsageBucket) -> i64| hours.iter().map(|b| f(b)).sum::<i64>();
            json!({
                "name": key,
                "requests": sum(|b| b.requests),
                "prompt_tokens": sum(|b| b.prompt_tokens),
                "completion_tokens": sum(|b| b.completion_tokens),
                "gpu_seconds": sum(|b| b.gpu_ms) as f64 / 1000.0,
                "loads": sum(|b| b.loads),
                "hours": hours.iter().map(|b| bucket_view(b)).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(json!({ "since": rfc3339(since), "keys": keys }))
}
