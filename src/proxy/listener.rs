//! The `proxy-listen` thread: a mio `Poll` owning the HTTP and HTTPS
//! listeners on loopback (127.0.0.1 and ::1) and a `Waker` for shutdown.
//! Each accepted connection is handed, blocking, to a `conn` thread of
//! its own for its whole life (a [`Pool`] worker, reused once the
//! connection ends); past `MAX_CONNECTIONS` it is reset at once (and
//! logged as a `limit` event) instead of waiting in the backlog.

use std::io;
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::Duration;

use mio::net::TcpListener;
use mio::{Events, Interest, Poll, Token, Waker};

use super::conn;
use super::pool::{Pool, PoolConfig};
use super::registry::Registry;
use super::Kind;
use super::{DestinationCheck, Settings, Shared};
use crate::events::Emitter;
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
/// How long the listener waits before accepting again once accept(2)
/// failed for want of descriptors (EMFILE, ENFILE): the backlog keeps the
/// connections, and an edge-triggered poll would not say so again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// A non-blocking listening socket with SO_REUSEADDR and a chosen
/// backlog (no listen mark: for tests and tools).
pub fn bind(addr: SocketAddr, backlog: i32) -> io::Result<std::net::TcpListener> {
    crate::listen::tcp(addr, backlog, None)
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

/// Binds the listeners and starts the listener thread. A listener that
/// cannot be bound (its port held by another process) is recorded in
/// `settings.listeners` and retried by the thread; a missing IPv6
/// loopback is logged and skipped (IPv6 is off).
pub fn start(
    settings: Settings,
    policy: PolicyHandle,
    check: Arc<dyn DestinationCheck>,
    emitter: Emitter,
) -> io::Result<ProxyHandle> {
    let poll = Poll::new()?;
    let mut wanted = Vec::new();
    for &ip in &settings.listen {
        for (port, kind) in [(settings.http_port, Kind::Http), (settings.https_port, Kind::Https)] {
            wanted.push(Wanted { addr: SocketAddr::new(ip, port), kind, listener: None, off: false });
        }
    }
    let mut lp = Loop {
        poll,
        wanted,
        shared: Arc::new(Shared {
            admission: crate::fair::Admission::new(crate::fair::Limits::for_max(settings.max_connections)),
            descriptors: crate::fair::Admission::new(crate::fair::Limits::for_max(settings.descriptors)),
            settings,
            policy,
            check,
            emitter,
            registry: Arc::new(Registry::default()),
        }),
        stop: Arc::new(AtomicBool::new(false)),
        active: Arc::new(AtomicUsize::new(0)),
        next_id: AtomicU64::new(1),
        starved: None,
        pool: Pool::new(PoolConfig {
            name: "conn",
            stack: CONN_STACK,
            spare: SPARE_THREADS,
            idle_keep: SPARE_KEEP,
        }),
    };
    lp.bind_missing();
    let listening = lp.wanted.iter().filter(|w| w.listener.is_some()).map(|w| (w.addr, w.kind)).collect();
    let waker = Arc::new(Waker::new(lp.poll.registry(), WAKER)?);
    let (stop, active, registry) = (lp.stop.clone(), lp.active.clone(), lp.shared.registry.clone());
    let thread = thread::Builder::new().name("proxy-listen".into()).spawn(move || lp.run())?;
    Ok(ProxyHandle { stop, waker, thread: Some(thread), active, registry, listening })
}

/// A listener the proxies want, bound or not (yet).
struct Wanted {
    addr: SocketAddr,
    kind: Kind,
    listener: Option<TcpListener>,
    /// Not wanted after all: IPv6 is off in this namespace.
    off: bool,
}

impl Wanted {
    fn what(&self) -> &'static str {
        if self.kind == Kind::Http {
            "http proxy"
        } else {
            "https proxy"
        }
    }

    fn name(&self) -> String {
        format!("{} {}", self.what(), self.addr)
    }
}

struct Loop {
    poll: Poll,
    /// Token `i` is `wanted[i]`.
    wanted: Vec<Wanted>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    active: Arc<AtomicUsize>,
    next_id: AtomicU64,
    /// accept(2) ran out of descriptors at this time: accept again after
    /// ACCEPT_BACKOFF.
    starved: Option<std::time::Instant>,
    pool: Pool,
}

/// accept(2) failed for want of a descriptor (per process or system-wide).
fn out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(n) if n == nix::errno::Errno::EMFILE as i32 || n == nix::errno::Errno::ENFILE as i32)
}

#[cfg(test)]
#[test]
fn emfile_and_enfile_are_out_of_descriptors() {
    use nix::errno::Errno;
    for (e, want) in [(Errno::EMFILE, true), (Errno::ENFILE, true), (Errno::ECONNABORTED, false)] {
        assert_eq!(out_of_descriptors(&io::Error::from_raw_os_error(e as i32)), want, "{e}");
    }
    assert!(!out_of_descriptors(&io::Error::other("x")));
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
    /// Binds every wanted listener that is not bound yet; true when all are.
    fn bind_missing(&mut self) -> bool {
        let status = &self.shared.settings.listeners;
        let mark = self.shared.settings.listen_mark;
        let mut all = true;
        for (i, w) in self.wanted.iter_mut().enumerate() {
            if w.listener.is_some() || w.off {
                continue;
            }
            let bound =
                crate::listen::tcp(w.addr, BACKLOG, mark).map(TcpListener::from_std).and_then(|mut l| {
                    self.poll.registry().register(&mut l, Token(i), Interest::READABLE)?;
                    Ok(l)
                });
            match bound {
                Ok(l) => {
                    w.addr = l.local_addr().unwrap_or(w.addr);
                    log::info!("{} listening on {}", w.what(), w.addr);
                    w.listener = Some(l);
                    status.bound(&w.name());
                }
                Err(e) if crate::listen::no_ipv6(w.addr, &e) => {
                    log::warn!("not listening on {}: {e} (no IPv6 loopback here)", w.addr);
                    w.off = true;
                }
                Err(e) => {
                    status.missing(&w.name(), &e);
                    all = false;
                }
            }
        }
        all
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut complete = self.wanted.iter().all(|w| w.listener.is_some() || w.off);
        let mut last_try = std::time::Instant::now();
        loop {
            let timeout = match ((!complete).then_some(crate::listen::RETRY), self.starved) {
                (t, None) => t,
                (t, Some(at)) => {
                    let left = ACCEPT_BACKOFF.saturating_sub(at.elapsed());
                    Some(t.map_or(left, |t| t.min(left)))
                }
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
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
            if self.starved.is_some_and(|at| at.elapsed() >= ACCEPT_BACKOFF) {
                self.starved = None;
                for i in 0..self.wanted.len() {
                    self.accept_all(i);
                }
            }
            if !complete && last_try.elapsed() >= crate::listen::RETRY {
                last_try = std::time::Instant::now();
                complete = self.bind_missing();
            }
        }
    }

    /// Accepts until the backlog is empty (mio is edge-triggered).
    fn accept_all(&mut self, i: usize) {
        let Some(Wanted { listener: Some(listener), kind, .. }) = self.wanted.get(i) else { return };
        let kind = *kind;
        loop {
            let (stream, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if out_of_descriptors(&e) => {
                    // The connection stays in the backlog: accept again
                    // after a short wait rather than spin (or wait for a
                    // readiness edge that may not come).
                    let n = self.shared.registry.counters.accept_failed.fetch_add(1, Ordering::Relaxed);
                    if self.starved.is_none() {
                        log::warn!(
                            "accept on {:?} failed: {e} (out of file descriptors, {} times so far); retrying in {:?}",
                            listener.local_addr(),
                            n + 1,
                            ACCEPT_BACKOFF
                        );
                    }
                    self.starved = Some(std::time::Instant::now());
                    return;
                }
                Err(e) => {
                    // Others (ECONNABORTED and friends) concern one
                    // connection: log and try again on the next readiness
                    // event rather than spin.
                    log::warn!("accept on {:?} failed: {e}", listener.local_addr());
                    return;
                }
            };
            let stream = TcpStream::from(stream);
            self.dispatch(stream, peer, kind);
        }
    }

    /// Admits the connection here, in the accept loop (see
    /// [`conn::admit`]: MAX_CONNECTIONS is the admission's bound), then
    /// hands it to a connection thread.
    fn dispatch(&self, stream: TcpStream, peer: SocketAddr, kind: Kind) {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let Some(admitted) = conn::admit(&self.shared, id, kind, &stream, peer) else { return };
        self.active.fetch_add(1, Ordering::SeqCst);
        let slot = Slot(self.active.clone());
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
            conn::handle(&shared, id, kind, stream, peer, admitted);
        });
        if let Err(e) = self.pool.run(job) {
            // The job (with the stream, its slot and tickets) was
            // dropped: the socket is closed and the counts given back.
            log::warn!("conn-{id} {peer}: cannot start a thread: {e}");
        }
    }
}
