//! The `proxy-listen` thread: a mio `Poll` owning the HTTP and HTTPS
//! listeners on loopback (127.0.0.1 and ::1) and a `Waker` for shutdown.
//! Each accepted connection is handed, blocking, to a `conn` thread of
//! its own for its whole life (a [`Pool`] worker, reused once the
//! connection ends); past `MAX_CONNECTIONS` it is reset at once (and
//! logged as a `limit` event) instead of waiting in the backlog.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::conn::{self, Kind};
use super::pool::{Pool, PoolConfig};
use super::registry::{self, Registry};
use super::{reason, DestinationCheck, Settings, Shared};
use crate::events::{Action, Emitter};
use crate::policy::PolicyHandle;

const WAKER: Token = Token(usize::MAX);
/// listen(2) backlog: bursts of new connections wait here for accept
/// rather than being dropped (std and mio use 128). The kernel caps it
/// at net.core.somaxconn.
const BACKLOG: i32 = 4096;
/// Stack of a connection thread. Buffers live on the heap, so a small
/// stack suffices, and 10,000 connections reserve 2.5 GB of address space
/// rather than 20 GB.
const CONN_STACK: usize = 256 * 1024;
/// Finished connection threads kept waiting for the next connection: enough
/// to absorb a steady stream of short connections without creating threads.
const SPARE_THREADS: usize = 8;
/// How long a spare connection thread waits for work before it exits.
const SPARE_KEEP: Duration = Duration::from_secs(30);

/// A non-blocking listening socket with SO_REUSEADDR and a chosen
/// backlog.
pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};
    use std::os::fd::{AsFd, AsRawFd};
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd =
        socket::socket(family, SockType::Stream, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    // Not nix's listen: it caps the backlog at the musl libc constant 128
    // (see `sys::listen`), far too small for a burst of connections.
    crate::sys::listen(fd.as_fd(), backlog)?;
    Ok(std::net::TcpListener::from(fd))
}

/// The running proxies. Dropping it does not stop them; call [`stop`].
///
/// [`stop`]: ProxyHandle::stop
pub struct ProxyHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    active: Arc<AtomicUsize>,
    registry: Arc<Registry>,
    /// The addresses actually listened on, with their kind.
    pub listening: Vec<(SocketAddr, Kind)>,
}

impl ProxyHandle {
    /// Connections being handled now.
    pub fn active(&self) -> usize {
        self.active.load(Ordering::Relaxed)
    }

    /// The live count of connections, still readable after `stop`, so a
    /// caller can wait for open connections to drain.
    pub fn active_counter(&self) -> Arc<AtomicUsize> {
        self.active.clone()
    }

    /// The open relayed connections and the counters, for reload
    /// revocation and metrics.
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.clone()
    }

    /// Closes the listeners and joins the listener thread. Connections in
    /// flight finish on their own threads.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Binds the listeners and starts the listener thread. A missing IPv6
/// loopback is logged and skipped; failing to bind anything else is an
/// error (the daemon cannot do its job).
pub fn start(
    settings: Settings,
    policy: PolicyHandle,
    check: Arc<dyn DestinationCheck>,
    emitter: Emitter,
) -> io::Result<ProxyHandle> {
    let poll = Poll::new()?;
    let mut listeners = Vec::new();
    for &ip in &settings.listen {
        for (port, kind) in [(settings.http_port, Kind::Http), (settings.https_port, Kind::Https)] {
            let addr = SocketAddr::new(ip, port);
            match bind(addr, BACKLOG) {
                Ok(l) => listeners.push((TcpListener::from_std(l), kind)),
                Err(e) if ip.is_ipv6() && e.kind() == io::ErrorKind::AddrNotAvailable => {
                    log::warn!("not listening on {addr}: {e} (no IPv6 loopback here)");
                }
                Err(e) => return Err(io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}"))),
            }
        }
    }
    let mut listening = Vec::new();
    for (i, (l, kind)) in listeners.iter_mut().enumerate() {
        poll.registry().register(l, Token(i), Interest::READABLE)?;
        let addr = l.local_addr()?;
        log::info!("{} proxy listening on {addr}", if *kind == Kind::Http { "http" } else { "https" });
        listening.push((addr, *kind));
    }
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let stop = Arc::new(AtomicBool::new(false));
    let active = Arc::new(AtomicUsize::new(0));
    let registry = Arc::new(Registry::default());
    let shared = Arc::new(Shared { settings, policy, check, emitter, registry: registry.clone() });
    let lp = Loop {
        poll,
        listeners,
        shared,
        stop: stop.clone(),
        active: active.clone(),
        next_id: AtomicU64::new(1),
        pool: Pool::new(PoolConfig {
            name: "conn",
            stack: CONN_STACK,
            spare: SPARE_THREADS,
            idle_keep: SPARE_KEEP,
        }),
    };
    let thread = thread::Builder::new().name("proxy-listen".into()).spawn(move || lp.run())?;
    Ok(ProxyHandle { stop, waker, thread: Some(thread), active, registry, listening })
}

struct Loop {
    poll: Poll,
    listeners: Vec<(TcpListener, Kind)>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    next_id: AtomicU64,
    pool: Pool,
}

/// Decrements the active count when a connection thread ends, however it
/// ends.
struct Slot(Arc<AtomicUsize>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl Loop {
    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        loop {
            if let Err(e) = self.poll.poll(&mut events, None) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("proxy listener poll failed: {e}");
                return;
            }
            if self.stop.load(Ordering::SeqCst) {
                log::info!("proxy listeners closed");
                return;
            }
            for ev in events.iter() {
                if ev.token() == WAKER {
                    continue;
                }
                self.accept_all(ev.token().0);
            }
        }
    }

    /// Accepts until the backlog is empty (mio is edge-triggered).
    fn accept_all(&mut self, i: usize) {
        let Some((listener, kind)) = self.listeners.get(i) else { return };
        let kind = *kind;
        loop {
            let (stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // EMFILE and friends: log and try again on the next
                    // readiness event rather than spin.
                    log::warn!("accept on {:?} failed: {e}", listener.local_addr());
                    return;
                }
            };
            let stream = TcpStream::from(stream);
            self.dispatch(stream, peer, kind);
        }
    }

    fn dispatch(&self, stream: TcpStream, peer: SocketAddr, kind: Kind) {
        let max = self.shared.settings.max_connections;
        if self.active.fetch_add(1, Ordering::SeqCst) >= max {
            self.active.fetch_sub(1, Ordering::SeqCst);
            self.over_limit(&stream, peer, kind);
            return;
        }
        let slot = Slot(self.active.clone());
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let shared = self.shared.clone();
        let job = Box::new(move || {
            let _slot = slot;
            // The relay forwards whatever arrives at once; Nagle on this
            // side would hold small TLS flights back for a delayed ACK
            // (40 ms).
            if let Err(e) = stream.set_nonblocking(false).and_then(|_| stream.set_nodelay(true)) {
                log::debug!("conn-{id} {peer}: {e}");
                return;
            }
            conn::handle(&shared, id, kind, stream, peer);
        });
        if let Err(e) = self.pool.run(job) {
            // The job (with the stream and slot) was dropped: the socket
            // is closed and the count given back.
            log::warn!("conn-{id} {peer}: cannot start a thread: {e}");
        }
    }

    fn over_limit(&self, stream: &TcpStream, peer: SocketAddr, kind: Kind) {
        let local = stream.local_addr().unwrap_or_else(|_| SocketAddr::new(IpAddr::from([0, 0, 0, 0]), 0));
        let dst = conn::original_dst(stream, local).unwrap_or(local);
        log::debug!("{peer}: over MAX_CONNECTIONS ({}); reset", self.shared.settings.max_connections);
        let comp = match kind {
            Kind::Http => crate::events::Component::Http,
            Kind::Https => crate::events::Component::Https,
        };
        let ev = self
            .shared
            .emitter
            .event(comp, Action::Blocked)
            .with_flow(peer, dst, "TCP")
            .with_reason(reason::LIMIT);
        self.shared.emitter.emit(ev);
        self.shared.registry.counters.blocked[registry::slot(kind)].fetch_add(1, Ordering::Relaxed);
        conn::reset(stream);
    }
}
