//! Listening for the signals other instances' changes send (`LISTEN foreman_jobs`).
//!
//! Why a connection of its own, outside the pool: a `LISTEN` belongs to the session that
//! issued it, and a pooled connection goes back to the pool (or a transaction-pooling
//! PgBouncer hands it to someone else), so its notifications would be lost or reach the
//! wrong reader. The connection's task reads every message the server sends and passes
//! notifications on; when the connection ends, [`PgSignals::next`] says so with `None`
//! and the caller connects again (notifications sent meanwhile are lost: it must look at
//! the rows again after reconnecting).
//!
//! The notifications are sent by the trigger of migration 2 (`0002_signals.sql`), at the
//! commit of the change they announce.

use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::error::Result;
use crate::job::JobId;

/// The `application_name` of listening sessions.
pub const APPLICATION_NAME: &str = "foreman-signals";

/// The channel every job signal is sent on.
pub(crate) const CHANNEL: &str = "foreman_jobs";

/// A change of one job, announced by the instance that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// The job became queued (enqueued, retried or requeued): there is work.
    NewWork(JobId),
    /// The job changed state without ending (it was claimed).
    Changed(JobId),
    /// The job ended: succeeded, failed or cancelled.
    Finished(JobId),
    /// The running job was asked to stop; the instance running it stops it.
    CancelRequested(JobId),
    /// Another instance wrote a batch of the job's output (`Store::append_output`).
    Output(JobId),
}

impl Signal {
    /// Reads a payload (`KIND:ID`); `None` for one this build does not know.
    pub fn parse(payload: &str) -> Option<Signal> {
        let (kind, id) = payload.split_once(':')?;
        let id: JobId = id.parse().ok()?;
        match kind {
            "new" => Some(Signal::NewWork(id)),
            "job" => Some(Signal::Changed(id)),
            "end" => Some(Signal::Finished(id)),
            "cancel" => Some(Signal::CancelRequested(id)),
            "out" => Some(Signal::Output(id)),
            _ => None,
        }
    }

    /// The job the signal is about.
    pub fn job(&self) -> JobId {
        match *self {
            Signal::NewWork(id)
            | Signal::Changed(id)
            | Signal::Finished(id)
            | Signal::CancelRequested(id)
            | Signal::Output(id) => id,
        }
    }
}

/// A listening session: one dedicated connection that has run `LISTEN foreman_jobs`.
pub struct PgSignals {
    /// Kept so the session stays open; dropping it ends the connection.
    _client: tokio_postgres::Client,
    payloads: mpsc::UnboundedReceiver<String>,
}

impl std::fmt::Debug for PgSignals {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgSignals").finish_non_exhaustive()
    }
}

impl PgSignals {
    pub(super) async fn connect(config: &tokio_postgres::Config) -> Result<PgSignals> {
        let mut config = config.clone();
        // Named apart from the pool's sessions, for operators (`pg_stat_activity`).
        config.application_name(APPLICATION_NAME);
        let (client, mut connection) = config.connect(NoTls).await?;
        let (sender, payloads) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            loop {
                match std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(notification))) => {
                        if sender.send(notification.payload().to_owned()).is_err() {
                            return;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(error)) => {
                        tracing::warn!(%error, "the signal connection to postgres failed");
                        return;
                    }
                    None => return,
                }
            }
        });
        client.batch_execute(&format!("LISTEN {CHANNEL}")).await?;
        Ok(PgSignals {
            _client: client,
            payloads,
        })
    }

    /// The next signal; `None` once the connection is gone (connect again, and look at
    /// the rows: what was sent meanwhile is lost). Payloads this build does not know
    /// are skipped.
    pub async fn next(&mut self) -> Option<Signal> {
        loop {
            let payload = self.payloads.recv().await?;
            match Signal::parse(&payload) {
                Some(signal) => return Some(signal),
                None => tracing::debug!(payload, "skipped an unknown job signal"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_name_a_kind_and_a_job() {
        let id = "01J0000000000000000000000A";
        let job: JobId = id.parse().expect("an id");
        assert_eq!(
            Signal::parse(&format!("new:{id}")),
            Some(Signal::NewWork(job))
        );
        assert_eq!(
            Signal::parse(&format!("job:{id}")),
            Some(Signal::Changed(job))
        );
        assert_eq!(
            Signal::parse(&format!("end:{id}")),
            Some(Signal::Finished(job))
        );
        assert_eq!(
            Signal::parse(&format!("cancel:{id}")),
            Some(Signal::CancelRequested(job))
        );
        assert_eq!(
            Signal::parse(&format!("out:{id}")),
            Some(Signal::Output(job))
        );
        assert_eq!(Signal::parse(&format!("later:{id}")), None);
        assert_eq!(Signal::parse("end:not-an-id"), None);
        assert_eq!(Signal::parse("end"), None);
    }
}
