//! Webhook deliveries: the outbox rows a finished job with a webhook URL leaves
//! behind (written by the store in the job's own finishing transaction), and the
//! attempt log the dispatcher appends to.

use crate::job::JobId;

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryState {
    Pending,
    Delivered,
    /// Every attempt failed, or the URL was refused: no more attempts.
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Failed => "failed",
        }
    }

    pub(crate) fn parse(text: &str) -> Option<DeliveryState> {
        match text {
            "pending" => Some(DeliveryState::Pending),
            "delivered" => Some(DeliveryState::Delivered),
            "failed" => Some(DeliveryState::Failed),
            _ => None,
        }
    }
}

/// One try at sending a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookAttempt {
    /// 1 for the first try.
    pub attempt: u32,
    pub at: i64,
    /// The receiver's HTTP status; `None` when no answer came.
    pub status: Option<u16>,
    pub latency_ms: i64,
    pub error: Option<String>,
    /// When the next attempt was scheduled (unix ms); `None` when none followed.
    /// Read back from the store, which takes it from the attempt's [`AttemptOutcome`]
    /// (the value passed to `record_webhook_attempt` is not used).
    pub retry_at: Option<i64>,
}

/// One notification of one finished job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// The `webhook-id` header: the same on every attempt.
    pub id: String,
    pub job_id: JobId,
    pub url: String,
    /// The body, byte for byte, as sent and signed on every attempt.
    pub payload: String,
    pub state: DeliveryState,
    pub attempts: u32,
    pub next_attempt_at: i64,
    pub created_at: i64,
    pub finished_at: Option<i64>,
    /// Filled by `Store::webhooks_for_job`; empty from `Store::due_webhooks`.
    pub log: Vec<WebhookAttempt>,
}

/// What an attempt decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Delivered,
    /// Try again at this time (unix ms).
    RetryAt(i64),
    Failed,
}
