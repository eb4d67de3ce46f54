//! Readers: read-only connections that run queries on tokio's blocking threads.
//!
//! In WAL mode readers never wait for the writer, and the writer never waits for them,
//! so reads stay off the writer thread. At most [`READERS`] reads run at once, each on
//! a connection of its own, opened on demand and kept for reuse; further reads wait
//! for one to finish. Unbounded, a burst of callers (64 clients submitting jobs) took a
//! blocking thread, a connection and its page cache each, and foreman's memory grew
//! with the number of callers and stayed grown.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::Semaphore;

use crate::error::{Error, Result};

/// Reads at once, and read connections kept open between reads.
const READERS: usize = 4;

/// The pool of read connections. Cheap to clone; clones share the pool.
#[derive(Debug, Clone)]
pub(super) struct Readers {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    /// One permit per read under way.
    permits: Arc<Semaphore>,
    closed: AtomicBool,
}

impl Readers {
    pub(super) fn new(path: PathBuf, busy_timeout: Duration) -> Readers {
        Readers {
            shared: Arc::new(Shared {
                path,
                busy_timeout,
                idle: Mutex::new(Vec::new()),
                permits: Arc::new(Semaphore::new(READERS)),
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Opens the first read connection now, so that a store that opened can read even
    /// if its file is later unlinked or made unreachable.
    pub(super) fn prime(&self) -> Result<()> {
        let conn = self.shared.take()?;
        self.shared.give_back(conn);
        Ok(())
    }

    /// Runs `read` on a read connection, off the async threads.
    pub(super) async fn read<T, F>(&self, read: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T> + Send + 'static,
    {
        let shared = self.shared.clone();
        let permit = shared
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| Error::Read(e.to_string()))?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            let conn = shared.take()?;
            let outcome = read(&conn);
            shared.give_back(conn);
            outcome
        })
        .await
        .map_err(|e| Error::Read(e.to_string()))?
    }

    /// Closes idle connections; reads started afterwards fail with [`Error::Closed`].
    pub(super) fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.lock().clear();
    }
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Connection>> {
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn take(&self) -> Result<Connection> {
        if self.closed.load(Ordering::SeqCst) {
            return Err(Error::Closed);
        }
        if let Some(conn) = self.lock().pop() {
            return Ok(conn);
        }
        let conn = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(self.busy_timeout)?;
        conn.set_prepared_statement_cache_capacity(super::STATEMENT_CACHE);
        Ok(conn)
    }

    fn give_back(&self, conn: Connection) {
        if self.closed.load(Ordering::SeqCst) {
            return;
        }
        let mut idle = self.lock();
        if idle.len() < READERS {
            idle.push(conn);
        }
    }
}
