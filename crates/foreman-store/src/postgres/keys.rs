//! The PostgreSQL side of [`crate::keys`]: every question is SQL, since other instances
//! and the `foreman keys` command change the rows.

use tokio_postgres::Row;

use super::{PgStore, async_commit};
use crate::error::{Error, Result};
use crate::keys::{
    ADD_USAGE_POSTGRES, ApiKey, KEY_COLUMNS, NewApiKey, USAGE_COLUMNS, UsageBucket, UsageDelta,
    digest,
};

fn key_from_row(row: &Row) -> Result<ApiKey> {
    let name: String = row.get(0);
    let bytes: Vec<u8> = row.get(2);
    Ok(ApiKey {
        secret_sha256: digest(&name, bytes)?,
        name,
        prefix: row.get(1),
        grant_json: row.get(3),
        created_at: row.get(4),
        revoked_at: row.get(5),
        last_used_at: row.get(6),
    })
}

impl PgStore {
    /// See [`Store::create_api_key`](crate::Store::create_api_key). The name is the
    /// primary key, so of two instances creating one name, one insert does nothing.
    pub async fn create_api_key(&self, key: NewApiKey, now: i64) -> Result<ApiKey> {
        let digest = key.secret_sha256.to_vec();
        let inserted = self
            .single(async |client| {
                Ok(client
                    .execute(
                        "INSERT INTO api_keys (name, prefix, secret_sha256, grant_json, created_at)
                         VALUES ($1, $2, $3, $4, $5) ON CONFLICT (name) DO NOTHING",
                        &[&key.name, &key.prefix, &digest, &key.grant_json, &now],
                    )
                    .await?)
            })
            .await?;
        if inserted == 0 {
            return Err(Error::KeyExists(key.name));
        }
        Ok(ApiKey {
            name: key.name,
            prefix: key.prefix,
            secret_sha256: key.secret_sha256,
            grant_json: key.grant_json,
            created_at: now,
            revoked_at: None,
            last_used_at: None,
        })
    }

    /// See [`Store::api_keys`](crate::Store::api_keys).
    pub async fn api_keys(&self) -> Result<Vec<ApiKey>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!("SELECT {KEY_COLUMNS} FROM api_keys ORDER BY name"),
                &[],
            )
            .await?;
        rows.iter().map(key_from_row).collect()
    }

    /// See [`Store::revoke_api_key`](crate::Store::revoke_api_key).
    pub async fn revoke_api_key(&self, name: &str, now: i64) -> Result<bool> {
        let changed = self
            .single(async |client| {
                Ok(client
                    .execute(
                        "UPDATE api_keys SET revoked_at = $2 WHERE name = $1 AND revoked_at IS NULL",
                        &[&name, &now],
                    )
                    .await?)
            })
            .await?;
        Ok(changed == 1)
    }

    /// See [`Store::touch_api_keys`](crate::Store::touch_api_keys).
    pub async fn touch_api_keys(&self, uses: Vec<(String, i64)>) -> Result<()> {
        let (names, times): (Vec<String>, Vec<i64>) = uses.into_iter().unzip();
        // A relaxed write, as on SQLite (see `async_commit.rs`).
        let sql = async_commit::asynchronous(
            "UPDATE api_keys SET last_used_at = u.at
             FROM unnest($1::text[], $2::bigint[]) AS u(name, at)
             WHERE api_keys.name = u.name
               AND (api_keys.last_used_at IS NULL OR api_keys.last_used_at < u.at)",
        );
        self.single(async |client| Ok(client.execute(&sql, &[&names, &times]).await?))
            .await?;
        Ok(())
    }

    /// See [`Store::add_key_usage`](crate::Store::add_key_usage): one transaction.
    pub async fn add_key_usage(&self, deltas: Vec<UsageDelta>) -> Result<()> {
        self.transaction(async |tx| {
            // A soon write, as on SQLite (see `async_commit.rs`).
            tx.batch_execute(async_commit::IN_THIS_TRANSACTION).await?;
            let statement = tx.prepare_cached(ADD_USAGE_POSTGRES).await?;
            for d in &deltas {
                tx.execute(
                    &statement,
                    &[
                        &d.key_name,
                        &d.hour,
                        &d.requests,
                        &d.prompt_tokens,
                        &d.completion_tokens,
                        &d.gpu_ms,
                        &d.loads,
                    ],
                )
                .await?;
            }
            Ok(())
        })
        .await
    }

    /// See [`Store::key_usage`](crate::Store::key_usage).
    pub async fn key_usage(&self, key_name: Option<String>, from: i64) -> Result<Vec<UsageBucket>> {
        let client = self.client().await?;
        let rows = client
            .query(
                &format!(
                    "SELECT {USAGE_COLUMNS} FROM key_usage
                     WHERE hour >= $1 AND ($2::text IS NULL OR key_name = $2)
                     ORDER BY key_name, hour"
                ),
                &[&from, &key_name],
            )
            .await?;
        Ok(rows
            .iter()
            .map(|row| UsageBucket {
                key_name: row.get(0),
                hour: row.get(1),
                requests: row.get(2),
                prompt_tokens: row.get(3),
                completion_tokens: row.get(4),
                gpu_ms: row.get(5),
                loads: row.get(6),
            })
            .collect())
    }
}
