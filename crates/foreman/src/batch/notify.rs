//! The webhook of a batch that ended: `batch.completed`, `batch.failed`,
//! `batch.expired` or `batch.cancelled`, signed as job webhooks are (Standard Webhooks:
//! `webhook-id`, `webhook-timestamp`, `webhook-signature` under
//! `FOREMAN_WEBHOOK_SECRET`), sent to the URL the batch was created with, only to
//! addresses the webhook policy allows, and retried with backoff up to
//! `FOREMAN_WEBHOOK_MAX_ATTEMPTS`. The `webhook-id` is `<batch id>.<status>`, the same on
//! every attempt and after a restart (the driver sends again until the batch records that
//! it is done), so a receiver dedupes on it.

use std::time::Duration;

use foreman_store::Batch;
use serde_json::json;

use crate::clock::now_ms;
use crate::config::Config;
use crate::webhook::{AddressPolicy, SendError, post_signed};

/// Sends one batch's end.
pub struct Notifier {
    key: Vec<u8>,
    policy: AddressPolicy,
    timeout: Duration,
    max_attempts: u32,
    retry_base: Duration,
    retry_max: Duration,
}

impl Notifier {
    pub fn from_config(config: &Config, key: Vec<u8>) -> Notifier {
        Notifier {
            key,
            policy: AddressPolicy::from_config(config),
            timeout: config.webhook_timeout,
            max_attempts: config.webhook_max_attempts,
            retry_base: config.webhook_retry_base,
            retry_max: config.webhook_retry_max,
        }
    }

    /// The event's body: OpenAI's event envelope with the whole Batch object as `data`.
    pub fn body(batch: &Batch) -> String {
        json!({
            "object": "event",
            "id": format!("evt_{}_{}", batch.id, batch.status),
            "type": format!("batch.{}", batch.status),
            "created_at": now_ms() / 1000,
            "data": crate::api::batch_object(batch),
        })
        .to_string()
    }

    /// Sends until a 2xx, a refusal (410, an address the policy refuses) or the last
    /// attempt; whether it was delivered.
    pub async fn deliver(&self, url: &str, batch: &Batch) -> bool {
        let id = format!("{}.{}", batch.id, batch.status);
        let body = Notifier::body(batch);
        for attempt in 1..=self.max_attempts {
            match self.send(url, &id, &body).await {
                Ok(status) if (200..300).contains(&status) => return true,
                Ok(410) => return false,
                Ok(status) => {
                    tracing::warn!(batch = %batch.id, attempt, status, "batch webhook refused")
                }
                Err(SendError::Refused(reason)) => {
                    tracing::warn!(batch = %batch.id, %reason, "batch webhook address refused");
                    return false;
                }
                Err(SendError::Failed(reason)) => {
                    tracing::warn!(batch = %batch.id, attempt, %reason, "batch webhook failed")
                }
            }
            if attempt < self.max_attempts {
                let pause = crate::backoff::exponential(self.retry_base, attempt, self.retry_max);
                tokio::time::sleep(pause).await;
            }
        }
        false
    }

    async fn send(&self, url: &str, id: &str, body: &str) -> Result<u16, SendError> {
        post_signed(&self.policy, &self.key, self.timeout, url, id, body).await
    }
}
