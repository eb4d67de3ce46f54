//! The HTTP server under the router: accepts TCP connections and serves each one
//! with hyper's HTTP/1.1 (the only version Ollama speaks), so that a client cannot
//! hold foreman's resources by saying nothing.
//!
//! - A request's line and headers must arrive within the header timeout (hyper's
//!   own, which also ends a keep-alive connection idle that long).
//! - A request body may fall silent for at most the body timeout; its request then
//!   fails (`api` answers 408) and hyper closes the connection, since the body was
//!   not read to its end.
//! - At most `max_connections` are open, fewer if the open-file limit is lower: at
//!   the limit, the connection that has been idle the longest (no request under
//!   way: a stalled half-request or a keep-alive between requests) is closed to make
//!   room, so a flood of silent connections cannot lock out `/healthz` or a real
//!   client. When every connection has a request under way, accepting waits.
//! - An accept that fails for want of descriptors (EMFILE) closes the idlest
//!   connection and backs off, doubling up to a second, instead of spinning.
//! - On shutdown the listener closes, idle connections close, and the connections
//!   with a request under way finish it (hyper's graceful shutdown); `serve` returns
//!   when the last one has closed.
//!
//! Status codes stay in `api`: this module only opens, times and closes connections.

use std::collections::HashMap;
use std::convert::Infallible;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tower::ServiceExt as _;
use tower_http::timeout::TimeoutBody;

use crate::config::Config;

/// Descriptors kept back from client connections for everything else foreman
/// opens: the database and its WAL, connections to the targets, webhooks, logs.
const RESERVED_DESCRIPTORS: u64 = 64;
/// First pause after a failed accept; doubled on each failure in a row.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(10);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// How connections are read and how many are kept.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionSettings {
    /// Time for a request's line and headers.
    pub header_timeout: Duration,
    /// Longest silence within a request body.
    pub body_timeout: Duration,
    /// Connections open at once.
    pub max_connections: usize,
}

impl ConnectionSettings {
    pub fn from_config(config: &Config) -> ConnectionSettings {
        ConnectionSettings {
            header_timeout: config.header_timeout,
            body_timeout: config.body_timeout,
            max_connections: config.max_connections,
        }
    }
}

/// Serves `router` on `listener` until `shutdown` is cancelled, then lets the
/// requests under way finish and returns once every connection has closed.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    settings: ConnectionSettings,
    shutdown: CancellationToken,
) {
    let max_connections = fit_descriptor_limit(settings.max_connections);
    let registry = Arc::new(Registry::default());
    let tracker = TaskTracker::new();
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        if !registry.make_room(max_connections, &shutdown).await {
            break;
        }
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = shutdown.cancelled() => break,
        };
        match accepted {
            Ok((tcp, _)) => {
                backoff = ACCEPT_BACKOFF_MIN;
                let connection = Connection {
                    handle: registry.open(),
                    router: router.clone(),
                    settings,
                    shutdown: shutdown.clone(),
                };
                tracker.spawn(connection.run(tcp));
            }
            // The client gave up before we took its connection: nothing to wait for.
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                // Most likely out of descriptors: give one back, then wait before
                // trying again rather than spin on the same error.
                let closed_idle = registry.close_idlest();
                tracing::warn!(%error, closed_idle, retry_in = ?backoff, "accept failed");
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = shutdown.cancelled() => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
            }
        }
    }
    drop(listener);
    tracker.close();
    tracker.wait().await;
}

fn is_connection_error(error: &io::Error) -> bool {
    matches!(
        error.kind(),
        io::ErrorKind::ConnectionRefused
            | io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
    )
}

/// The connection limit that fits the open-file limit, after raising the soft limit
/// to the hard one (as Go's runtime does for Ollama).
fn fit_descriptor_limit(wanted: usize) -> usize {
    use rustix::process::{Resource, getrlimit, setrlimit};
    let mut limit = getrlimit(Resource::Nofile);
    if let (Some(current), Some(maximum)) = (limit.current, limit.maximum)
        && current < maximum
    {
        limit.current = Some(maximum);
        if setrlimit(Resource::Nofile, limit).is_err() {
            limit.current = Some(current);
        }
    }
    let Some(descriptors) = limit.current else {
        return wanted;
    };
    let fits = descriptors.saturating_sub(RESERVED_DESCRIPTORS).max(1);
    let fits = usize::try_from(fits).unwrap_or(usize::MAX);
    if fits < wanted {
        tracing::warn!(
            wanted,
            allowed = fits,
            open_file_limit = descriptors,
            "the open-file limit lowers the connection limit"
        );
    }
    wanted.min(fits)
}

/// The open connections, so that the accept loop can count them and close the one
/// idle the longest.
#[derive(Default)]
struct Registry {
    open: Mutex<Open>,
    /// Rung when a connection closes or its last request ends.
    changed: Notify,
}

#[derive(Default)]
struct Open {
    next_id: u64,
    by_id: HashMap<u64, Entry>,
}

struct Entry {
    /// Requests under way (read, handled or answered); 0 while waiting for one.
    requests: usize,
    /// When `requests` last became 0 (or the connection opened).
    idle_since: Instant,
    /// Cancelled to close the connection at once.
    close: CancellationToken,
}

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn open(self: &Arc<Self>) -> ConnectionHandle {
        let close = CancellationToken::new();
        let mut open = self.lock();
        let id = open.next_id;
        open.next_id += 1;
        open.by_id.insert(
            id,
            Entry {
                requests: 0,
                idle_since: Instant::now(),
                close: close.clone(),
            },
        );
        ConnectionHandle {
            id,
            close,
            registry: self.clone(),
        }
    }

    /// Waits until fewer than `max` connections are open, closing the idlest one
    /// when none is closing already; false if shutdown came first.
    async fn make_room(&self, max: usize, shutdown: &CancellationToken) -> bool {
        loop {
            let changed = self.changed.notified();
            {
                let open = self.lock();
                if open.by_id.len() < max {
                    return true;
                }
                if !open.by_id.values().any(|entry| entry.close.is_cancelled()) {
                    close_idlest(&open);
                }
            }
            tokio::select! {
                _ = changed => {}
                _ = shutdown.cancelled() => return false,
            }
        }
    }

    /// Closes the connection idle the longest, if one is idle; says whether it did.
    fn close_idlest(&self) -> bool {
        close_idlest(&self.lock())
    }

    fn request_started(self: &Arc<Self>, id: u64) -> RequestGuard {
        if let Some(entry) = self.lock().by_id.get_mut(&id) {
            entry.requests += 1;
        }
        RequestGuard {
            id,
            registry: self.clone(),
        }
    }
}

fn close_idlest(open: &Open) -> bool {
    let idlest = open
        .by_id
        .values()
        .filter(|entry| entry.requests == 0 && !entry.close.is_cancelled())
        .min_by_key(|entry| entry.idle_since);
    match idlest {
        Some(entry) => {
            entry.close.cancel();
            true
        }
        None => false,
    }
}

/// A connection's place in the registry, given up when the connection ends.
struct ConnectionHandle {
    id: u64,
    close: CancellationToken,
    registry: Arc<Registry>,
}

impl Drop for ConnectionHandle {
    fn drop(&mut self) {
        self.registry.lock().by_id.remove(&self.id);
        self.registry.changed.notify_one();
    }
}

/// Held from a request's head until its answer's last byte is written.
struct RequestGuard {
    id: u64,
    registry: Arc<Registry>,
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let mut open = self.registry.lock();
        if let Some(entry) = open.by_id.get_mut(&self.id) {
            entry.requests -= 1;
            if entry.requests == 0 {
                entry.idle_since = Instant::now();
            }
        }
        drop(open);
        self.registry.changed.notify_one();
    }
}

struct Connection {
    handle: ConnectionHandle,
    router: Router,
    settings: ConnectionSettings,
    shutdown: CancellationToken,
}

impl Connection {
    async fn run(self, tcp: TcpStream) {
        // Without TCP_NODELAY, a streamed answer's small writes wait on the client's
        // delayed ACK (about 40 ms each).
        let _ = tcp.set_nodelay(true);
        let Connection {
            handle,
            router,
            settings,
            shutdown,
        } = self;
        let (registry, id) = (handle.registry.clone(), handle.id);
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let busy = registry.request_started(id);
            let request =
                request.map(|body| Body::new(TimeoutBody::new(settings.body_timeout, body)));
            let answer = router.clone().oneshot(request);
            async move {
                let response = answer.await?;
                Ok::<_, Infallible>(response.map(|body| BusyBody { body, _busy: busy }))
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(settings.header_timeout);
        let connection = builder.serve_connection(TokioIo::new(tcp), service);
        tokio::pin!(connection);
        let mut draining = false;
        loop {
            tokio::select! {
                served = connection.as_mut() => {
                    if let Err(error) = served {
                        tracing::debug!(%error, "connection ended");
                    }
                    break;
                }
                // Dropping the connection closes its socket.
                _ = handle.close.cancelled() => break,
                _ = shutdown.cancelled(), if !draining => {
                    // A connection waiting for a request (or stalled within one's
                    // head) closes at once; one with a request under way answers it
                    // first, and keeps no connection alive after it.
                    if !has_request_under_way(&handle) {
                        break;
                    }
                    draining = true;
                    connection.as_mut().graceful_shutdown();
                }
            }
        }
    }
}

/// Whether the connection has a request under way.
fn has_request_under_way(handle: &ConnectionHandle) -> bool {
    handle
        .registry
        .lock()
        .by_id
        .get(&handle.id)
        .is_some_and(|entry| entry.requests > 0)
}

/// An answer's body that keeps its connection counted as busy until it is written.
struct BusyBody {
    body: Body,
    _busy: RequestGuard,
}

impl hyper::body::Body for BusyBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sets when a connection became idle, `seconds` after a common start.
    fn idle_from(registry: &Registry, connection: &ConnectionHandle, seconds: u64) {
        let start = registry.lock().by_id[&0].idle_since;
        registry
            .lock()
            .by_id
            .get_mut(&connection.id)
            .unwrap()
            .idle_since = start + Duration::from_secs(seconds);
    }

    #[tokio::test]
    async fn at_the_limit_the_connection_idle_longest_is_closed_never_a_busy_one() {
        let registry = Arc::new(Registry::default());
        let shutdown = CancellationToken::new();
        let oldest_busy = registry.open();
        let busy = registry.request_started(oldest_busy.id);
        let idle_longest = registry.open();
        idle_from(&registry, &idle_longest, 1);
        let idle_since_later = registry.open();
        idle_from(&registry, &idle_since_later, 2);
        assert!(registry.make_room(4, &shutdown).await, "below the limit");

        let room = tokio::spawn({
            let (registry, shutdown) = (registry.clone(), shutdown.clone());
            async move { registry.make_room(3, &shutdown).await }
        });
        idle_longest.close.cancelled().await;
        assert!(!oldest_busy.close.is_cancelled() && !idle_since_later.close.is_cancelled());
        drop(idle_longest);
        assert!(
            room.await.unwrap(),
            "room once the closed connection is gone"
        );

        // A connection whose request ended is idle from then on.
        drop(busy);
        assert_eq!(registry.lock().by_id[&oldest_busy.id].requests, 0);
        idle_from(&registry, &oldest_busy, 3);
        assert!(registry.close_idlest());
        assert!(idle_since_later.close.is_cancelled(), "idle longer");
        assert!(registry.close_idlest());
        assert!(oldest_busy.close.is_cancelled());
        assert!(!registry.close_idlest(), "nothing left to close");
    }

    #[tokio::test]
    async fn waiting_for_room_ends_at_shutdown() {
        let registry = Arc::new(Registry::default());
        let shutdown = CancellationToken::new();
        let connection = registry.open();
        let _busy = registry.request_started(connection.id);
        let room = tokio::spawn({
            let (registry, shutdown) = (registry.clone(), shutdown.clone());
            async move { registry.make_room(1, &shutdown).await }
        });
        shutdown.cancel();
        assert!(
            !room.await.unwrap(),
            "a busy connection is never closed for room"
        );
        assert!(!connection.close.is_cancelled());
    }
}
