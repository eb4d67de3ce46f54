//! The SQLite side of [`crate::keys`]: keys and usage through the one writer thread,
//! read from the read-only connections.

use rusqlite::{OptionalExtension, Row};

use super::SqliteStore;
use super::writer::Durability;
use crate::error::{Error, Result};
use crate::keys::{
    ADD_USAGE_SQLITE, ApiKey, KEY_COLUMNS, NewApiKey, USAGE_COLUMNS, UsageBucket, UsageDelta,
    digest,
};

fn key_from_row(row: &Row<'_>) -> rusqlite::Result<(ApiKey, Vec<u8>)> {
    Ok((
        ApiKey {
            name: row.get(0)?,
            prefix: row.get(1)?,
            secret_sha256: [0; 32],
            grant_json: row.get(3)?,
            created_at: row.get(4)?,
            revoked_at: row.get(5)?,
            last_used_at: row.get(6)?,
        },
        row.get(2)?,
    ))
}

fn with_digest((mut key, bytes): (ApiKey, Vec<u8>)) -> Result<ApiKey> {
    key.secret_sha256 = digest(&key.name, bytes)?;
    Ok(key)
}

impl SqliteStore {
    /// See [`Store::create_api_key`](crate::Store::create_api_key).
    pub async fn create_api_key(&self, key: NewApiKey, now: i64) -> Result<ApiKey> {
        self.write(Durability::Durable, move |conn, _| {
            let taken: Option<i64> = conn
                .prepare_cached("SELECT 1 FROM api_keys WHERE name = ?1")?
                .query_row([&key.name], |row| row.get(0))
                .optional()?;
            if taken.is_some() {
                return Err(Error::KeyExists(key.name));
            }
            conn.prepare_cached(
                "INSERT INTO api_keys (name, prefix, secret_sha256, grant_json, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?
            .execute(rusqlite::params![
                key.name,
                key.prefix,
                key.secret_sha256.as_slice(),
                key.grant_json,
                now
            ])?;
            Ok(ApiKey {
                name: key.name,
                prefix: key.prefix,
                secret_sha256: key.secret_sha256,
                grant_json: key.grant_json,
                created_at: now,
                revoked_at: None,
                last_used_at: None,
            })
        })
        .await
    }

    /// See [`Store::api_keys`](crate::Store::api_keys).
    pub async fn api_keys(&self) -> Result<Vec<ApiKey>> {
        self.readers
            .read(move |conn| {
                let mut statement = conn
                    .prepare_cached(&format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY name"))?;
                let rows = statement
                    .query_map([], key_from_row)?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                rows.into_iter().map(with_digest).collect()
            })
            .await
    }

    /// See [`Store::revoke_api_key`](crate::Store::revoke_api_key).
    pub async fn revoke_api_key(&self, name: &str, now: i64) -> Result<bool> {
        let name = name.to_owned();
        self.write(Durability::Durable, move |conn, _| {
            let changed = conn
                .prepare_cached(
                    "UPDATE api_keys SET revoked_at = ?2 WHERE name = ?1 AND revoked_at IS NULL",
                )?
                .execute(rusqlite::params![name, now])?;
            Ok(changed == 1)
        })
        .await
    }

    /// See [`Store::touch_api_keys`](crate::Store::touch_api_keys). A relaxed write: a
    /// last use lost to a power cut only makes the key look idle a little longer.
    pub async fn touch_api_keys(&self, uses: Vec<(String, i64)>) -> Result<()> {
        self.write(Durability::Relaxed, move |conn, _| {
            let mut statement = conn.prepare_cached(
                "UPDATE api_keys SET last_used_at = ?2
                 WHERE name = ?1 AND (last_used_at IS NULL OR last_used_at < ?2)",
            )?;
            for (name, at) in &uses {
                statement.execute(rusqlite::params![name, at])?;
            }
            Ok(())
        })
        .await
    }

    /// See [`Store::add_key_usage`](crate::Store::add_key_usage). Committed at once,
    /// synced soon: accounting, not an accepted job.
    pub async fn add_key_usage(&self, deltas: Vec<UsageDelta>) -> Result<()> {
        self.write(Durability::Soon, move |conn, _| {
            let mut statement = conn.prepare_cached(ADD_USAGE_SQLITE)?;
            for d in &deltas {
                statement.execute(rusqlite::params![
                    d.key_name,
                    d.hour,
                    d.requests,
                    d.prompt_tokens,
                    d.completion_tokens,
                    d.gpu_ms,
                    d.loads
                ])?;
            }
            Ok(())
        })
        .await
    }

    /// See [`Store::key_usage`](crate::Store::key_usage).
    pub async fn key_usage(&self, key_name: Option<String>, from: i64) -> Result<Vec<UsageBucket>> {
        self.readers
            .read(move |conn| {
                let mut statement = conn.prepare_cached(&format!(
                    "SELECT {USAGE_COLUMNS} FROM key_usage
                     WHERE hour >= ?1 AND (?2 IS NULL OR key_name = ?2)
                     ORDER BY key_name, hour"
                ))?;
                let rows = statement
                    .query_map(rusqlite::params![from, key_name], |row| {
                        Ok(UsageBucket {
                            key_name: row.get(0)?,
                            hour: row.get(1)?,
                            requests: row.get(2)?,
                            prompt_tokens: row.get(3)?,
                            completion_tokens: row.get(4)?,
                            gpu_ms: row.get(5)?,
                            loads: row.get(6)?,
                        })
                    })?
                    .collect::<rusqlite::Result<Vec<_>>>()?;
                Ok(rows)
            })
            .await
    }
}
