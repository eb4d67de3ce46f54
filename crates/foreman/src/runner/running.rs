//! The cancel switches of running jobs, so that a cancel call or a disconnecting
//! client can stop one wherever it runs, and say why.

use std::collections::HashMap;
use std::sync::Mutex;

use foreman_store::{JobFailure, JobId};
use tokio_util::sync::CancellationToken;

/// A running job's switch, and why it was thrown.
struct Switch {
    token: CancellationToken,
    reason: Option<JobFailure>,
}

/// Every job a runner holds, from just before its claim until its outcome is recorded.
#[derive(Default)]
pub struct RunningJobs {
    jobs: Mutex<HashMap<JobId, Switch>>,
}

impl RunningJobs {
    /// Registers a job about to be claimed; its token stops it.
    pub(super) fn insert(&self, id: JobId) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(
            id,
            Switch {
                token: token.clone(),
                reason: None,
            },
        );
        token
    }

    pub(super) fn remove(&self, id: JobId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, Switch>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops a running job, for `reason` (the first reason given stays); returns false
    /// when it is not running here. Call it only once the store has the cancel
    /// requested: the runner records the reason through the store's retry-or-fail,
    /// which ends such a job cancelled.
    pub fn cancel(&self, id: JobId, reason: JobFailure) -> bool {
        match self.lock().get_mut(&id) {
            Some(switch) => {
                switch.reason.get_or_insert(reason);
                switch.token.cancel();
                true
            }
            None => false,
        }
    }

    /// Why a running job was stopped, if it was.
    pub(super) fn cancel_reason(&self, id: JobId) -> Option<JobFailure> {
        self.lock()
            .get(&id)
            .and_then(|switch| switch.reason.clone())
    }

    pub fn contains(&self, id: JobId) -> bool {
        self.lock().contains_key(&id)
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
