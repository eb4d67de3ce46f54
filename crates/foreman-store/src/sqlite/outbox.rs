//! The webhook outbox of the SQLite backend: the delivery of a job that a write has just
//! finished is inserted by that write, on the writer thread, in the same savepoint and
//! batch transaction as the finishing statement, so the job's outcome and its delivery
//! commit (and reach the disk) together or not at all. The body comes from the shared
//! [`crate::outbox`], so both backends send the same bytes.

use rusqlite::Connection;

use crate::error::Result;
use crate::job::Job;

/// Inserts `job`'s delivery if the statement that returned it finished it (see
/// [`crate::outbox::delivery_for`]).
pub(super) fn record_if_finished(conn: &Connection, job: &Job) -> Result<()> {
    let Some(delivery) = crate::outbox::delivery_for(job) else {
        return Ok(());
    };
    conn.prepare_cached(
        "INSERT INTO webhook_deliveries
             (id, job_id, url, payload, state, next_attempt_at, created_at)
         VALUES (?1, ?2, ?3, ?4, 'pending', ?5, ?5)",
    )?
    .execute(rusqlite::params![
        delivery.id,
        delivery.job_id,
        delivery.url,
        delivery.payload,
        delivery.at
    ])?;
    Ok(())
}
