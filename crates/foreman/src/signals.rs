//! Signals from other instances on one PostgreSQL database, turned into the in-process
//! ones (see `hub.rs`): new work rings the runners' `wake`, a job's change or end rings
//! [`Hub::job_changed`] (long polls, waiters for a commit) and, at an end, the webhook
//! dispatcher's `finished`; a cancel request stops the job's run here if it runs here.
//! A batch of output (`out:ID`) or an end fills the feed of a job read here and run
//! elsewhere from the store (see `output_relay.rs`); a change (`job:ID`) also checks such
//! a feed's run, which a requeue or a rescue has cut off.
//!
//! Two ways to hear them (`FOREMAN_SIGNALS`):
//! - `notify` (the default): a session of its own that `LISTEN`s (`Store::listen`); the
//!   store sends each signal at the commit of its change. When the session drops, it is
//!   opened again with a backoff, and since what was sent meanwhile is lost, everything a
//!   signal could have rung is rung once (a *catch-up*: every waiter reads its row again,
//!   every running job's cancel request is read).
//! - `poll`: no session; a catch-up every `FOREMAN_SIGNAL_POLL_INTERVAL`. For a
//!   transaction-pooling PgBouncer, which cannot hold a `LISTEN`.
//!
//! On SQLite nothing runs: one process, whose signals are all in memory.

use std::sync::Arc;
use std::time::Duration;

use foreman_store::{Signal, Store};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;
use crate::output_relay::Pull;
use crate::runner::RunningJobs;

/// How signals from other instances are heard (`FOREMAN_SIGNALS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum SignalMode {
    /// PostgreSQL `LISTEN`/`NOTIFY`: delivered at each change's commit.
    Notify,
    /// Reading the rows again every poll interval (for a transaction-pooling PgBouncer).
    Poll,
}

/// The longest wait before the listening session is opened again.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// What the signals ring, in this process.
pub struct Relay {
    pub store: Store,
    pub hub: Arc<Hub>,
    pub running: Arc<RunningJobs>,
    /// The runners' signal that there may be work.
    pub wake: Arc<Notify>,
    /// The webhook dispatcher's signal that a job ended.
    pub finished: Arc<Notify>,
    pub mode: SignalMode,
    pub poll_interval: Duration,
    /// Fills the feeds of jobs read here and run elsewhere (shared with the runners).
    pub output: Arc<Pull>,
}

impl Relay {
    /// Relays signals until `shutdown`; returns at once on a store that is not shared.
    pub async fn run(self, shutdown: CancellationToken) {
        if !self.store.is_shared() {
            return;
        }
        match self.mode {
            SignalMode::Poll => self.poll(&shutdown).await,
            SignalMode::Notify => self.listen(&shutdown).await,
        }
    }

    async fn poll(&self, shutdown: &CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(self.poll_interval) => self.catch_up().await,
            }
        }
    }

    async fn listen(&self, shutdown: &CancellationToken) {
        let mut backoff = Duration::from_millis(100);
        let mut lost = false;
        loop {
            let session = tokio::select! {
                _ = shutdown.cancelled() => return,
                session = self.store.listen() => session,
            };
            let mut signals = match session {
                Ok(Some(signals)) => signals,
                Ok(None) => return,
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?backoff, "cannot listen for other instances' signals; reading the rows meanwhile");
                    // Until the session is back, waiters still hear of changes by
                    // reading the rows.
                    self.catch_up().await;
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                    continue;
                }
            };
            backoff = Duration::from_millis(100);
            if lost {
                tracing::info!("listening for other instances' signals again");
                // Signals sent while no session listened are lost: read everything again.
                self.catch_up().await;
            }
            loop {
                let signal = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    signal = signals.next() => signal,
                };
                match signal {
                    Some(signal) => self.relay(signal).await,
                    None => {
                        tracing::warn!(
                            "lost the session that listens for other instances' signals"
                        );
                        lost = true;
                        self.catch_up().await;
                        break;
                    }
                }
            }
        }
    }

    /// Rings, in this process, what one signal says.
    async fn relay(&self, signal: Signal) {
        match signal {
            Signal::NewWork(_) => self.wake.notify_waiters(),
            Signal::Changed(id) => {
                // A relayed feed whose run left `running` (requeued, rescued) is cut.
                self.output.pull(&self.store, &self.hub, id, true).await;
                self.hub.job_changed(id);
            }
            Signal::Output(id) => self.output.pull(&self.store, &self.hub, id, false).await,
            Signal::Finished(id) => {
                // The rest of the output and the end, before the waiters read the row.
                self.output.pull(&self.store, &self.hub, id, true).await;
                self.hub.job_changed(id);
                self.finished.notify_waiters();
                // A job that ends frees a place another key may be waiting for.
                self.wake.notify_waiters();
            }
            Signal::CancelRequested(id) => {
                self.running.cancel(id);
            }
        }
    }

    /// Rings everything a missed signal could have rung: runners and the webhook
    /// dispatcher look again, every feed read here and run elsewhere is filled (and
    /// ended, if its job ended), every watched job's waiters read its row, and every job
    /// running here whose cancel was requested elsewhere is stopped.
    async fn catch_up(&self) {
        self.wake.notify_waiters();
        self.finished.notify_waiters();
        self.output.pull_all(&self.store, &self.hub).await;
        for id in self.hub.watched_jobs() {
            self.hub.job_changed(id);
        }
        for id in self.running.ids() {
            match self.store.get(id).await {
                Ok(Some(job)) if job.cancel_requested => {
                    self.running.cancel(id);
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::warn!(%error, job = %id, "cannot read a running job's cancel request");
                    return;
                }
            }
        }
    }
}
