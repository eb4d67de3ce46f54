//! The cancel switches of running jobs, so that a cancel call or a disconnecting
//! client can stop one wherever it runs. Why it was stopped is in the store, written
//! with the cancel request.

use std::collections::HashMap;
use std::sync::Mutex;

use foreman_store::JobId;
use tokio_util::sync::CancellationToken;

/// Every job a runner holds, from just before its claim until its outcome is recorded.
#[derive(Default)]
pub struct RunningJobs {
    jobs: Mutex<HashMap<JobId, CancellationToken>>,
}

impl RunningJobs {
    /// Registers a job about to be claimed; its token stops it.
    pub(super) fn insert(&self, id: JobId) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(id, token.clone());
        token
    }

    pub(super) fn remove(&self, id: JobId) {
        self.lock().remove(&id);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<JobId, CancellationToken>> {
        self.jobs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops a running job; returns false when it is not running here.
    pub fn cancel(&self, id: JobId) -> bool {
        match self.lock().get(&id) {
            Some(token) => {
                token.cancel();
                true
            }
            None => false,
        }
    }

    /// The jobs held right now.
    pub fn ids(&self) -> Vec<JobId> {
        self.lock().keys().copied().collect()
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
