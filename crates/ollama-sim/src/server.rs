//! Serving: the listener that can refuse connections on demand, and [`spawn`], which
//! starts a simulator in-process and returns a [`SimHandle`] to steer it.
//!
//! Refusing is real: the listening socket is closed, so clients see "connection
//! refused", and every open connection is cut, as when a real server goes down. The
//! socket is bound again on the same address when refusing ends.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::faults::{Faults, FaultsUpdate};
use crate::sim::Sim;
use crate::stats::{ResidencyEvent, StatsSnapshot};
use crate::{SimConfig, api};

/// A TCP listener that closes its socket while `refusing` is true.
pub struct SwitchableListener {
    socket: Option<TcpListener>,
    addr: SocketAddr,
    refusing: watch::Receiver<bool>,
}

impl SwitchableListener {
    pub async fn bind(addr: SocketAddr, refusing: watch::Receiver<bool>) -> io::Result<Self> {
        let socket = bind_reusable(addr)?;
        let addr = socket.local_addr()?;
        let mut listener = SwitchableListener {
            socket: Some(socket),
            addr,
            refusing,
        };
        if *listener.refusing.borrow_and_update() {
            listener.socket = None;
        }
        Ok(listener)
    }
}

fn bind_reusable(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(1024)
}

/// An accepted connection that breaks as soon as refusing starts.
pub struct CuttableStream {
    inner: TcpStream,
    cut: Pin<Box<dyn Future<Output = ()> + Send>>,
    is_cut: bool,
}

impl CuttableStream {
    fn new(inner: TcpStream, refusing: &watch::Receiver<bool>) -> CuttableStream {
        let mut refusing = refusing.clone();
        CuttableStream {
            inner,
            cut: Box::pin(async move {
                // A closed channel means the simulator is gone: cut as well.
                let _ = refusing.wait_for(|refuse| *refuse).await;
            }),
            is_cut: false,
        }
    }

    fn check_cut(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if !self.is_cut && self.cut.as_mut().poll(cx).is_ready() {
            self.is_cut = true;
        }
        if self.is_cut {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "the simulator is refusing connections",
            ));
        }
        Ok(())
    }
}

impl AsyncRead for CuttableStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if let Err(error) = self.check_cut(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl AsyncWrite for CuttableStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if let Err(error) = self.check_cut(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if let Err(error) = self.check_cut(cx) {
            return Poll::Ready(Err(error));
        }
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Listener for SwitchableListener {
    type Io = CuttableStream;
    type Addr = SocketAddr;

    async fn accept(&mut self) -> (CuttableStream, SocketAddr) {
        loop {
            let refusing = *self.refusing.borrow_and_update();
            if refusing {
                self.socket = None;
                if self.refusing.changed().await.is_err() {
                    // The simulator is gone; nothing will ever be accepted again.
                    std::future::pending::<()>().await;
                }
                continue;
            }
            if self.socket.is_none() {
                match bind_reusable(self.addr) {
                    Ok(socket) => self.socket = Some(socket),
                    Err(error) => {
                        tracing::warn!(%error, addr = %self.addr, "could not bind again; retrying");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                }
            }
            let socket = self.socket.as_ref().expect("bound above");
            tokio::select! {
                accepted = socket.accept() => match accepted {
                    Ok((stream, peer)) => {
                        stream.set_nodelay(true).ok();
                        return (CuttableStream::new(stream, &self.refusing), peer);
                    }
                    Err(error) => {
                        tracing::debug!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
                    }
                },
                _ = self.refusing.changed() => {}
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.addr)
    }
}

/// A running simulator.
pub struct SimHandle {
    sim: Arc<Sim>,
    addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    shutdown: CancellationToken,
    tasks: Vec<JoinHandle<io::Result<()>>>,
}

/// Starts a simulator on `addr` (port 0 picks a free port) in the current runtime.
pub async fn spawn(addr: SocketAddr, config: SimConfig) -> io::Result<SimHandle> {
    spawn_with_control(addr, None, config).await
}

/// Like [`spawn`], plus a control listener serving only `/sim/*` that never refuses,
/// so the main address can be taken down and brought back over HTTP.
pub async fn spawn_with_control(
    addr: SocketAddr,
    control_addr: Option<SocketAddr>,
    config: SimConfig,
) -> io::Result<SimHandle> {
    config
        .faults
        .validate()
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    api::origin_guard::check_origins(&config.origins)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let origins = config.origins.clone();
    let sim = Sim::new(config);
    let shutdown = CancellationToken::new();
    let listener = SwitchableListener::bind(addr, sim.refusing.subscribe()).await?;
    let addr = listener.addr;
    let mut tasks = Vec::new();
    let app = api::origin_guard::install(api::router(sim.clone()), addr, &origins);
    let token = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(token.cancelled_owned())
            .await
    }));
    let mut bound_control = None;
    if let Some(control_addr) = control_addr {
        let control = TcpListener::bind(control_addr).await?;
        let bound = control.local_addr()?;
        bound_control = Some(bound);
        let app = api::origin_guard::install(api::control_router(sim.clone()), bound, &origins);
        let token = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            axum::serve(control, app)
                .with_graceful_shutdown(token.cancelled_owned())
                .await
        }));
    }
    Ok(SimHandle {
        sim,
        addr,
        control_addr: bound_control,
        shutdown,
        tasks,
    })
}

impl SimHandle {
    /// The address the API listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`, for clients.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The control listener's address, if one was started.
    pub fn control_addr(&self) -> Option<SocketAddr> {
        self.control_addr
    }

    /// Applies a partial fault update, as `POST /sim/faults` does.
    pub fn set_faults(&self, update: &FaultsUpdate) -> Result<Faults, String> {
        self.sim.update_faults(update, std::time::Duration::ZERO)
    }

    /// The faults in force, as `GET /sim/faults` returns them.
    pub fn faults(&self) -> Faults {
        self.sim.faults()
    }

    /// Refuses (or accepts again) every connection on the API address.
    pub fn refuse_connections(&self, refuse: bool) {
        self.sim
            .update_faults(
                &FaultsUpdate {
                    refuse_connections: Some(refuse),
                    ..FaultsUpdate::default()
                },
                std::time::Duration::ZERO,
            )
            .expect("toggling refusal is always valid");
    }

    /// The counters, as `GET /sim/stats` returns them.
    pub fn stats(&self) -> StatsSnapshot {
        self.sim.snapshot()
    }

    /// Residency events since start or the last reset.
    pub fn events(&self) -> Vec<ResidencyEvent> {
        self.sim.stats.events()
    }

    /// Zeroes the counters, as `POST /sim/reset` does.
    pub fn reset_stats(&self) {
        self.sim.stats.reset();
    }

    /// Stops accepting, lets open requests finish for up to five seconds (a stalled
    /// request never would), then cuts what is left.
    pub async fn shutdown(self) {
        self.shutdown.cancel();
        for mut task in self.tasks {
            if tokio::time::timeout(std::time::Duration::from_secs(5), &mut task)
                .await
                .is_err()
            {
                task.abort();
            }
        }
    }

    /// Stops at once: open connections are cut.
    pub fn abort(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            task.abort();
        }
    }
}
