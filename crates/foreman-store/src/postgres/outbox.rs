//! The webhook outbox of the PostgreSQL backend: when a change finishes a job that has a
//! webhook URL, the same transaction inserts its delivery, built by the shared
//! [`crate::outbox`] (the same body as the SQLite backend's).

use crate::error::Result;
use crate::job::Job;

/// Inserts `job`'s delivery if the statement that returned it finished it. Every caller's
/// statement acts only on unfinished jobs, so a terminal row here has just finished.
pub(super) async fn record_if_finished<C: deadpool_postgres::GenericClient>(
    client: &C,
    job: &Job,
) -> Result<()> {
    let Some(delivery) = crate::outbox::delivery_for(job) else {
        return Ok(());
    };
    // Prepared once per connection: it runs inside the outcome's transaction.
    let statement = client
        .prepare_cached(
            "INSERT INTO webhook_deliveries
                 (id, job_id, url, payload, state, next_attempt_at, created_at)
             VALUES ($1, $2, $3, $4, 'pending', $5, $5)",
        )
        .await?;
    client
        .execute(
            &statement,
            &[
                &delivery.id,
                &delivery.job_id,
                &delivery.url,
                &delivery.payload,
                &delivery.at,
            ],
        )
        .await?;
    Ok(())
}
