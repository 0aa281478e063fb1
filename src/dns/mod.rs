//! DNS mode: the filtering resolver's server. UDP and TCP on loopback at
//! `DNS_PORT` (the ruleset redirects every port-53 packet of the namespace
//! here).
//!
//! One mio thread owns the sockets and decides each query with the pure
//! [`filter`]; blocked, malformed and refused queries are answered right
//! there. Allowed UDP queries go to a small fixed set of forwarding
//! threads ([`forward`]), each an event loop over its in-flight upstream
//! sockets that answers on the server socket itself, so one slow upstream
//! cannot stall the loop or the other queries; each TCP client gets its
//! own thread (bounded), as every other TCP listener in egret does. A
//! client's ID is preserved; the upstream sees a random one
//! ([`upstream`]).
//!
//! With a [`Learn`] hook (strict egress, the proxies' resolver), the
//! addresses of an allowed answer are handed over before the answer is
//! sent.

pub mod budget;
pub mod filter;
mod forward;
pub mod harden;
pub mod learn;
pub mod owners;
pub mod reply;
mod tcp;
pub mod upstream;

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hickory_proto::op::ResponseCode;
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};

use crate::config::Config;
use crate::events::{Component, Emitter};
use crate::policy::PolicyHandle;
use filter::{Action, QueryInfo};
pub use learn::{Learn, LearnError};
pub use reply::rcode_name;
use reply::{Asker, Outcome};
use upstream::Upstreams;

/// Limits of the server, in one place.
pub mod defaults {
    use std::time::Duration;
    /// Forwarding threads for UDP queries (each an event loop, so a few
    /// are plenty; more only spread the work over more cores).
    pub const WORKERS: usize = 2;
    /// Allowed UDP queries one client may have waiting for the
    /// forwarders (the server's backlog holds this many per forwarder in
    /// all); beyond either, SERVFAIL. The backlog is served one client at
    /// a time in turn, so another client's query waits behind at most one
    /// of each other client's.
    pub const QUEUE: usize = 1024;
    /// Jobs handed to a forwarder beyond its in-flight ones: kept short,
    /// so the waiting happens in the backlog, in turn, not in this FIFO.
    pub const CHANNEL: usize = IN_FLIGHT;
    /// Upstream queries one forwarder has in flight at once, one socket
    /// each (so also its file descriptors); more wait in its queue. With
    /// the default two forwarders, 64 at once (dnsmasq's default is 150,
    /// `--dns-forward-max`): a burst of a few hundred overflowed the test
    /// upstream's socket buffer and became SERVFAIL after the timeout.
    pub const IN_FLIGHT: usize = 32;
    /// Queries one upstream socket carries (one at a time) before it is
    /// closed and a new one (a new random port) takes its place.
    pub const SOCKET_USES: u32 = 64;
    /// TCP clients served at once; beyond it, new ones are closed. A
    /// quarter of them is kept for clients that hold few (`fair`), so one
    /// client cannot take them all.
    pub const TCP_CLIENTS: usize = 128;
    /// A TCP client that sends nothing for this long is closed
    /// (RFC 7766 §6.2.3 suggests seconds, not minutes).
    pub const TCP_IDLE: Duration = Duration::from_secs(10);
    /// Once a query's first byte is in, all of it must arrive within this:
    /// a trickling client holds its connection for one deadline, not for
    /// an idle timeout per byte.
    pub const TCP_QUERY_DEADLINE: Duration = Duration::from_secs(3);
    /// The UDP listener's receive buffer. The default (208 KiB) holds
    /// about 270 small datagrams (each costs its buffer, not its bytes):
    /// a few milliseconds of a flood while the loop waits for a core,
    /// after which another client's query is dropped by the kernel,
    /// unseen (no answer, no event).
    pub const UDP_RCVBUF: usize = 4 << 20;
}

/// What the server needs from [`Config`], so tests can build one directly.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Where to listen; normally 127.0.0.1 and ::1 at `DNS_PORT`.
    pub listen: Vec<SocketAddr>,
    pub upstreams: Upstreams,
    pub ttl_min: Duration,
    pub ttl_max: Duration,
    pub workers: usize,
    /// SO_MARK of the listening sockets, so the ruleset delivers
    /// redirected queries to them (`None`: unmarked, for tests).
    pub listen_mark: Option<u32>,
    /// The listeners that could not be bound (reported by `/health`).
    pub listeners: Arc<crate::listen::Status>,
    /// `GUARD_ADDRESSES`: an answer with an address in a guarded class
    /// is refused (NXDOMAIN + EDE) and never learned.
    pub guard: crate::policy::Guard,
    /// `DNS_HARDENING`: the limits in effect, `None` when off.
    pub hardening: Option<harden::Limits>,
    /// The rate and zone budgets to spend, shared with the proxies'
    /// lookups in HTTPS mode; `None`: the server's own (from `hardening`).
    pub budget: Option<budget::Shared>,
}

impl Settings {
    /// Loopback v4 and v6 at `DNS_PORT`, `DNS_UPSTREAMS` with egret's
    /// bypass mark, listeners with its listen mark.
    pub fn from_config(cfg: &Config, id: &crate::nft::Identity) -> Settings {
        Settings {
            listen: vec![
                SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), cfg.dns_port),
                SocketAddr::new(IpAddr::V6(Ipv6Addr::LOCALHOST), cfg.dns_port),
            ],
            upstreams: Upstreams::new(cfg.dns_upstreams.clone(), Some(id.mark)),
            ttl_min: cfg.dns_ttl_min,
            ttl_max: cfg.dns_ttl_max,
            workers: defaults::WORKERS,
            listen_mark: Some(id.listen_mark),
            listeners: Arc::default(),
            guard: cfg.guard_addresses,
            hardening: cfg.dns_hardening,
            budget: None,
        }
    }
}

/// The running server; dropping it stops the loop.
pub struct DnsHandle {
    stop: Arc<AtomicBool>,
    waker: Arc<Waker>,
    thread: Option<JoinHandle<()>>,
    local: Vec<SocketAddr>,
    stats: Arc<Stats>,
}

impl DnsHandle {
    /// The addresses actually bound (a v6 loopback that does not exist is
    /// skipped with a warning).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.local
    }

    /// Counters since start.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// The same counters, shared (for the metrics endpoint).
    pub fn shared_stats(&self) -> Arc<Stats> {
        self.stats.clone()
    }

    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.waker.wake();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for DnsHandle {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Starts DNS mode from the configuration: see [`start_with`].
pub fn start(
    cfg: &Config,
    policy: PolicyHandle,
    emitter: Emitter,
    id: &crate::nft::Identity,
    learner: Option<Arc<dyn Learn>>,
) -> io::Result<DnsHandle> {
    start_with(Settings::from_config(cfg, id), policy, emitter, learner)
}

/// Forwarding to ourselves would loop each query until the queue fills.
fn forwarding_loop(upstreams: &[SocketAddr], local: &[SocketAddr]) -> io::Result<()> {
    match upstreams.iter().find(|u| local.contains(u)) {
        Some(up) => Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("dns: DNS_UPSTREAMS entry {up} is egret's own listener (a forwarding loop)"),
        )),
        None => Ok(()),
    }
}

/// Binds every listen address, then runs the loop on its own thread. An
/// address that cannot be bound (its port held by another process) is
/// recorded in `settings.listeners` and retried by the loop; a missing
/// IPv6 loopback is skipped (IPv6 is off).
pub fn start_with(
    settings: Settings,
    policy: PolicyHandle,
    emitter: Emitter,
    learner: Option<Arc<dyn Learn>>,
) -> io::Result<DnsHandle> {
    let poll = Poll::new()?;
    // An explicit listener address is checked before binding (a bound
    // port 0 is checked below), so a loop is refused for what it is even
    // when the port is taken.
    let fixed: Vec<SocketAddr> = settings.listen.iter().copied().filter(|a| a.port() != 0).collect();
    forwarding_loop(&settings.upstreams.addrs, &fixed)?;
    let slots = settings.listen.iter().map(|&want| Slot { want, udp: None, tcp: None, off: false }).collect();
    let stop = Arc::new(AtomicBool::new(false));
    let stats = Arc::new(Stats::default());
    match &settings.hardening {
        Some(l) => log::info!("dns: hardening on: {l}"),
        None => log::info!("dns: hardening off (DNS_HARDENING=false)"),
    }
    let budget = settings.hardening.map(|l| settings.budget.clone().unwrap_or_else(|| budget::shared(l)));
    let backlog = crate::fair::Turns::new(defaults::QUEUE, defaults::QUEUE * settings.workers.max(1));
    let shared = Arc::new(Shared {
        budget,
        udp_owners: std::sync::Mutex::new(UdpOwners {
            table: owners::Owners::new(Instant::now()),
            diag: crate::peer::Diag::new(),
        }),
        backlog_waiting: AtomicBool::new(false),
        loop_waker: std::sync::OnceLock::new(),
        settings,
        policy,
        emitter,
        learner,
        tcp_fair: crate::fair::Admission::new(crate::fair::Limits::for_max(defaults::TCP_CLIENTS)),
        tcp_retries: crate::fair::Admission::new(crate::fair::Limits::for_max(defaults::TCP_CLIENTS)),
        stats: stats.clone(),
    });
    let mut lp = Loop { poll, slots, fwd: Vec::new(), next: 0, backlog, shared, stop: stop.clone() };
    lp.bind_missing();
    let local: Vec<SocketAddr> = lp.slots.iter().filter_map(|s| s.udp.as_ref().map(|u| u.local)).collect();
    forwarding_loop(&lp.shared.settings.upstreams.addrs, &local)?;
    let waker = Arc::new(Waker::new(lp.poll.registry(), WAKER)?);
    let _ = lp.shared.loop_waker.set(waker.clone());
    for i in 0..lp.shared.settings.workers.max(1) {
        lp.fwd.push(forward::spawn(i, lp.shared.clone(), stop.clone())?);
    }
    if !local.is_empty() {
        log::info!("dns: listening on {} (udp+tcp)", list(&local));
    }
    let thread = thread::Builder::new().name("dns".into()).spawn(move || lp.run())?;
    Ok(DnsHandle { stop, waker, thread: Some(thread), local, stats })
}

fn list(addrs: &[SocketAddr]) -> String {
    addrs.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

/// A UDP socket and a TCP listener on the same address, with the listen
/// mark. With port 0 the TCP port follows the kernel's pick for UDP, which
/// may be taken for TCP: a few picks are tried.
fn bind_pair(addr: SocketAddr, mark: Option<u32>) -> io::Result<(Udp, TcpListener)> {
    let tries = if addr.port() == 0 { 20 } else { 1 };
    let mut last = None;
    for _ in 0..tries {
        let std_udp = crate::listen::udp(addr, mark)?;
        receive_buffer(&std_udp, defaults::UDP_RCVBUF);
        let port = std_udp.local_addr()?.port();
        match crate::listen::tcp(SocketAddr::new(addr.ip(), port), 1024, mark) {
            Ok(std_tcp) => {
                let reply = Arc::new(std_udp.try_clone()?);
                return Ok((
                    Udp { local: std_udp.local_addr()?, sock: UdpSocket::from_std(std_udp), reply },
                    TcpListener::from_std(std_tcp),
                ));
            }
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no port")))
}

/// Raises a socket's receive buffer to `bytes`: past `net.core.rmem_max`
/// with CAP_NET_ADMIN (SO_RCVBUFFORCE), else as far as that allows.
fn receive_buffer(sock: &std::net::UdpSocket, bytes: usize) {
    use nix::sys::socket::{setsockopt, sockopt};
    if setsockopt(sock, sockopt::RcvBufForce, &bytes).is_err() {
        if let Err(e) = setsockopt(sock, sockopt::RcvBuf, &bytes) {
            log::debug!("dns: udp receive buffer: {e}");
        }
    }
}

/// One listen address: its UDP socket and TCP listener once bound.
struct Slot {
    want: SocketAddr,
    udp: Option<Udp>,
    tcp: Option<TcpListener>,
    /// Not wanted after all: IPv6 is off in this namespace.
    off: bool,
}

impl Slot {
    fn name(&self) -> String {
        format!("dns {}", self.want)
    }
}

/// A UDP listener: mio owns `sock`; forwarding threads answer through
/// `reply`, a clone of the same socket.
struct Udp {
    sock: UdpSocket,
    reply: Arc<std::net::UdpSocket>,
    /// The bound address (asked once, not per batch).
    local: SocketAddr,
}

impl Udp {
    fn local_addr(&self) -> io::Result<SocketAddr> {
        Ok(self.local)
    }
}

/// What every thread of the server shares.
struct Shared {
    settings: Settings,
    policy: PolicyHandle,
    emitter: Emitter,
    learner: Option<Arc<dyn Learn>>,
    /// The TCP clients (`defaults::TCP_CLIENTS` at once, one thread
    /// each), a fair share per client (the owner of the client's socket).
    tcp_fair: Arc<crate::fair::Admission<crate::peer::Client>>,
    /// The threads that fetch a truncated UDP answer again over TCP
    /// (`defaults::TCP_CLIENTS` at once), a fair share per client.
    tcp_retries: Arc<crate::fair::Admission<crate::peer::Client>>,
    stats: Arc<Stats>,
    /// `DNS_HARDENING`'s rate buckets and zone budgets (UDP loop and TCP
    /// threads alike), `None` when off.
    budget: Option<budget::Shared>,
    /// The loop has a backlog the forwarders' channels had no room for:
    /// a forwarder that takes jobs wakes the loop through `loop_waker`.
    backlog_waiting: AtomicBool,
    loop_waker: std::sync::OnceLock<Arc<Waker>>,
    /// Who sent UDP queries lately, by source address, and the socket
    /// that asks the kernel (see `udp_client`).
    udp_owners: std::sync::Mutex<UdpOwners>,
}

/// The UDP owner table and its lookups' socket.
struct UdpOwners {
    table: owners::Owners<SocketAddr, crate::peer::Owner>,
    diag: crate::peer::Diag,
}

/// Counters since start, for metrics (relaxed atomics: each is exact on
/// its own, not a consistent snapshot of all).
#[derive(Debug, Default)]
pub struct Stats {
    /// Queries answered with the upstream's answer.
    pub forwarded: AtomicU64,
    /// Queries refused by policy, or answers refused by the SSRF guard
    /// (NXDOMAIN + EDE).
    pub blocked: AtomicU64,
    /// FORMERR, REFUSED and NOTIMP answers.
    pub rejected: AtomicU64,
    /// SERVFAIL: upstreams failed, learning failed, or the queue was full.
    pub servfail: AtomicU64,
    /// Datagrams ignored (responses, too short).
    pub dropped: AtomicU64,
}

const WAKER: Token = Token(0);

/// Tokens: 0 the waker, then 1 + 2i for `slots[i].udp`, 2 + 2i for its
/// `tcp`.
enum Ready {
    Wake,
    Udp(usize),
    Tcp(usize),
}

fn classify(t: Token) -> Ready {
    match t.0 {
        0 => Ready::Wake,
        n if n % 2 == 1 => Ready::Udp((n - 1) / 2),
        n => Ready::Tcp((n - 2) / 2),
    }
}

struct Loop {
    poll: Poll,
    slots: Vec<Slot>,
    fwd: Vec<forward::Handle>,
    /// The forwarder tried first for the next batch.
    next: usize,
    /// Allowed UDP queries the forwarders had no room for yet, per
    /// client, served in turn.
    backlog: crate::fair::Turns<crate::peer::Client, forward::Job>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
}

impl Loop {
    /// Binds and registers every listen address not bound yet; true when
    /// all are.
    fn bind_missing(&mut self) -> bool {
        let status = &self.shared.settings.listeners;
        let mark = self.shared.settings.listen_mark;
        let mut all = true;
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.udp.is_some() || slot.off {
                continue;
            }
            let bound = bind_pair(slot.want, mark).and_then(|(mut u, mut t)| {
                self.poll.registry().register(&mut u.sock, Token(1 + 2 * i), Interest::READABLE)?;
                self.poll.registry().register(&mut t, Token(2 + 2 * i), Interest::READABLE)?;
                Ok((u, t))
            });
            match bound {
                Ok((u, t)) => {
                    status.bound(&slot.name());
                    slot.want = u.local;
                    slot.udp = Some(u);
                    slot.tcp = Some(t);
                }
                Err(e) if crate::listen::no_ipv6(slot.want, &e) => {
                    log::warn!("dns: not listening on {}: {e} (no IPv6 loopback here)", slot.want);
                    slot.off = true;
                }
                Err(e) => {
                    status.missing(&slot.name(), &e);
                    all = false;
                }
            }
        }
        all
    }

    fn run(mut self) {
        let mut events = Events::with_capacity(64);
        let mut buf = vec![0u8; 65535];
        let mut complete = self.slots.iter().all(|s| s.udp.is_some() || s.off);
        let mut last_try = std::time::Instant::now();
        while !self.stop.load(Ordering::SeqCst) {
            let timeout = (!complete).then_some(crate::listen::RETRY);
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("dns: poll failed, stopping the server: {e}");
                break;
            }
            for ev in events.iter() {
                match classify(ev.token()) {
                    Ready::Wake => self.pump(),
                    Ready::Udp(i) => self.drain_udp(i, &mut buf),
                    Ready::Tcp(i) => self.accept_tcp(i),
                }
            }
            if !complete && last_try.elapsed() >= crate::listen::RETRY {
                last_try = std::time::Instant::now();
                complete = self.bind_missing();
            }
        }
        // The forwarders' jobs hold clones of the server sockets: the
        // port is free again only when they are gone.
        self.stop.store(true, Ordering::SeqCst);
        for f in self.fwd.drain(..) {
            f.join();
        }
        log::info!("dns: stopped");
    }

    /// Reads every waiting datagram, then wakes the forwarders that got
    /// work: one wake-up per batch, not per query.
    fn drain_udp(&mut self, i: usize, buf: &mut [u8]) {
        self.read_udp(i, buf);
        self.pump();
    }

    /// Hands the backlog to the forwarders, a client at a time in turn,
    /// until their channels are full; then arms the forwarders to wake
    /// the loop when they take jobs (and tries once more, so a job taken
    /// in between is not missed). Wakes the forwarders that got work.
    fn pump(&mut self) {
        let mut armed = false;
        while let Some((k, job)) = self.backlog.pop() {
            if let Some(job) = offer(&mut self.fwd, self.next, job) {
                self.backlog.push_front(k, job);
                if armed {
                    break;
                }
                self.shared.backlog_waiting.store(true, Ordering::SeqCst);
                armed = true;
            }
        }
        for f in &mut self.fwd {
            f.wake();
        }
        if !self.fwd.is_empty() {
            self.next = (self.next + 1) % self.fwd.len();
        }
    }

    fn read_udp(&mut self, i: usize, buf: &mut [u8]) {
        let Some(Slot { udp: Some(udp), .. }) = self.slots.get(i) else { return };
        let Ok(local) = udp.local_addr() else { return };
        let mut errors = 0;
        loop {
            let (n, client) = match udp.sock.recv_from(buf) {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP errors from earlier sends surface here once
                    // each; the socket stays usable. Bounded all the same.
                    log::debug!("dns: udp recv on {local}: {e}");
                    errors += 1;
                    if errors > 64 {
                        log::warn!("dns: udp recv on {local} keeps failing: {e}");
                        return;
                    }
                    continue;
                }
            };
            let query = &buf[..n];
            // Before any parsing: a client past its rate and its refusals
            // costs a lookup and a bucket, nothing more (a flood from one
            // client must not take the loop from the others).
            let now = Instant::now();
            let mut asker = Asker::udp(client, local);
            let Some(who) = self.shared.udp_client(&asker, now) else {
                self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            };
            asker.client = Some(who);
            if let Some(budget) = &self.shared.budget {
                let flood = budget.lock().unwrap_or_else(|e| e.into_inner()).flood(who, now);
                if flood == harden::Flood::Drop {
                    self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
            }
            let policy = self.shared.policy.current();
            match filter::decide(query, &policy) {
                Action::Drop(why) => {
                    self.shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    log::debug!("dns: {client}: dropped {n} bytes: {why}");
                }
                Action::Answer(a) => {
                    send_udp(&udp.reply, &a.bytes, client);
                    self.shared.emit(&asker, &Outcome::Refused(&a));
                }
                Action::Forward(info) => {
                    if let Some(refused) = self.shared.harden(&info, &asker, &policy) {
                        send_udp(&udp.reply, &refused, client);
                        continue;
                    }
                    let job = forward::Job { query: query.to_vec(), info, asker, reply: udp.reply.clone() };
                    // Straight to a forwarder while nobody waits; else in
                    // turn behind the backlog (its own queue bounded).
                    let job = match self.backlog.is_empty() {
                        true => offer(&mut self.fwd, self.next, job),
                        false => Some(job),
                    };
                    if let Some(job) = job.and_then(|j| self.backlog.push(who, j)) {
                        let asker = &job.asker;
                        log::debug!("dns: forwarding backlog full for {who:?}; SERVFAIL to {client}");
                        send_udp(&job.reply, &filter::servfail(&job.info), client);
                        let o = Outcome::Forwarded {
                            info: &job.info,
                            rcode: ResponseCode::ServFail,
                            note: Some("overloaded"),
                        };
                        self.shared.emit(asker, &o);
                    }
                }
            }
        }
    }

    fn accept_tcp(&mut self, i: usize) {
        let Some(Slot { tcp: Some(l), .. }) = self.slots.get(i) else { return };
        loop {
            let (stream, client) = match l.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    log::warn!("dns: tcp accept: {e}");
                    return;
                }
            };
            let shared = self.shared.clone();
            let stream = std::net::TcpStream::from(stream);
            let Some((asker, slot)) = tcp::admit(&stream, client, &shared) else { continue };
            let spawned = thread::Builder::new().name(format!("dns-tcp-{client}")).spawn({
                let shared = shared.clone();
                move || {
                    if let Err(e) = tcp::serve(stream, asker, slot, &shared) {
                        log::debug!("dns: tcp {client}: {e}");
                    }
                }
            });
            if let Err(e) = spawned {
                log::warn!("dns: cannot start a thread for {client}: {e}");
            }
        }
    }
}

/// Queues a job with forwarder `first`, or the next one whose queue has
/// room; gives it back when every queue is full.
fn offer(fwd: &mut [forward::Handle], first: usize, mut job: forward::Job) -> Option<forward::Job> {
    let n = fwd.len();
    for k in 0..n {
        job = fwd[(first + k) % n].offer(job)?;
    }
    Some(job)
}

fn send_udp(sock: &std::net::UdpSocket, bytes: &[u8], to: SocketAddr) {
    if let Err(e) = sock.send_to(bytes, to) {
        log::debug!("dns: reply to {to}: {e}");
    }
}

impl Shared {
    /// The owner of the socket a UDP query came from, so that
    /// `DNS_HARDENING`'s rate is each client's own: without it every UDP
    /// asker would be one client, and one busy workload would get its
    /// co-tenants' lookups refused. The query was addressed to port 53
    /// and redirected here, or to this address itself; an unconnected
    /// client socket matches either.
    ///
    /// `None`: past the lookup budget and its shared bucket, a datagram
    /// from a source not remembered is to be dropped unread; one past the
    /// budget alone is an unknown owner's (see [`owners`]).
    fn udp_client(&self, asker: &Asker, now: Instant) -> Option<crate::peer::Client> {
        let mut o = self.udp_owners.lock().unwrap_or_else(|e| e.into_inner());
        let owner = match o.table.look(asker.addr, now) {
            owners::Look::Known(owner) => Some(owner),
            owners::Look::Unlooked => return Some(crate::peer::Client::Unknown),
            owners::Look::Drop => return None,
            owners::Look::Ask => {
                let to53 = SocketAddr::new(asker.local.ip(), 53);
                let owner = o.diag.udp(asker.addr, to53).or_else(|| {
                    (asker.local.port() != 53).then(|| o.diag.udp(asker.addr, asker.local)).flatten()
                });
                o.table.learned(asker.addr, owner, now);
                owner
            }
        };
        Some(crate::peer::Client::of(owner))
    }

    /// `DNS_HARDENING` on an allowed query before it is forwarded: the
    /// REFUSED answer's bytes when it is refused (with its event only
    /// when the refusal says to report: once per window for rate and
    /// budget), `None` to forward it.
    fn harden(&self, info: &QueryInfo, asker: &Asker, policy: &crate::policy::Policy) -> Option<Vec<u8>> {
        let budget = self.budget.as_ref()?;
        let now = std::time::Instant::now();
        let client = match (asker.client, asker.who) {
            (Some(c), _) => c,
            (None, None) if asker.proto == "UDP" => {
                self.udp_client(asker, now).unwrap_or(crate::peer::Client::Unknown)
            }
            (None, w) => crate::peer::Client::of(w),
        };
        for q in &info.questions {
            let name = filter::display_name(q);
            let d = policy.decide(crate::policy::Query { name: Some(&name), ip: None, port: None });
            let pattern = match &d.rule {
                Some(crate::policy::Rule::Domain(p)) => Some(p),
                _ => None,
            };
            let zone = harden::zone_of(&name, pattern);
            let verdict = budget.lock().unwrap_or_else(|e| e.into_inner()).check(
                client,
                &name,
                q.query_type(),
                zone,
                now,
            );
            if let harden::Verdict::Refuse(r) = verdict {
                let a = filter::hardened(info, &r);
                if r.report {
                    self.emit(asker, &Outcome::Refused(&a));
                } else {
                    self.stats.rejected.fetch_add(1, Ordering::Relaxed);
                }
                return Some(a.bytes);
            }
        }
        None
    }

    /// Forwards an allowed query and returns the bytes for the client:
    /// the upstream's answer (after learning its addresses), or SERVFAIL.
    fn forward(&self, query: &[u8], info: &QueryInfo, asker: Asker) -> Vec<u8> {
        self.exchange_and_deliver(query, info, upstream::Tries::default(), asker)
    }

    /// [`Shared::forward`] going on from `tries` (a truncated UDP answer
    /// of a forwarder's query).
    fn exchange_and_deliver(
        &self,
        query: &[u8],
        info: &QueryInfo,
        tries: upstream::Tries,
        asker: Asker,
    ) -> Vec<u8> {
        let check = |r: &[u8]| filter::check_response(r, info).map_err(|e| e.to_string());
        match self.settings.upstreams.exchange_from(query, tries, &check, &|r| r.truncated) {
            Ok((resp, reply)) => self.deliver(resp, reply, info, asker),
            Err(e) => self.upstreams_failed(info, &e, asker),
        }
    }

    /// Every upstream failed: the event, and SERVFAIL for the client.
    fn upstreams_failed(&self, info: &QueryInfo, e: &upstream::UpstreamError, asker: Asker) -> Vec<u8> {
        log::warn!("dns: {} {}: {e}", info.qname(), info.qtype());
        let note = e.to_string();
        self.emit(&asker, &Outcome::Forwarded { info, rcode: ResponseCode::ServFail, note: Some(&note) });
        filter::servfail(info)
    }

    /// An accepted upstream answer (the client's ID already in it): the
    /// SSRF guard, then learn its addresses, then the event; the bytes for
    /// the client, NXDOMAIN when the guard refused the answer, or SERVFAIL
    /// when learning failed. UDP (the forwarders) and TCP both end here.
    fn deliver(&self, resp: Vec<u8>, reply: filter::Reply, info: &QueryInfo, asker: Asker) -> Vec<u8> {
        // Before any learning: a guarded address never reaches a set, a
        // cache or the client. Every answer is asked (nothing is cached
        // here), so a rebinding name is refused as soon as it rebinds.
        let policy = self.policy.current();
        let audited;
        let mut info = info;
        if let Some(refused) = filter::guard_answer(info, &reply, &policy, &self.settings.guard) {
            if !policy.audit() {
                self.emit(&asker, &Outcome::Refused(&refused));
                return refused.bytes;
            }
            // Audit mode: delivered, and its event says what it would be.
            audited = QueryInfo { audit: Some(refused.refusal), ..info.clone() };
            info = &audited;
        }
        if let Some(r) = self.settings.hardening.and_then(|l| l.check_answer(reply.txt_bytes)) {
            let refused = filter::hardened(info, &r);
            self.emit(&asker, &Outcome::Refused(&refused));
            return refused.bytes;
        }
        if let Some(l) = &self.learner {
            let addrs = filter::learned(&reply, self.settings.ttl_min, self.settings.ttl_max);
            if !addrs.is_empty() {
                if let Err(e) = l.learn_answer(&info.qname(), &reply.chain, &addrs) {
                    // Handing out an address the filter would reject only
                    // makes the client hang on a connect; say it failed.
                    log::error!("dns: {}: {e}", info.qname());
                    let note = e.to_string();
                    let failed =
                        Outcome::Forwarded { info, rcode: ResponseCode::ServFail, note: Some(&note) };
                    self.emit(&asker, &failed);
                    return filter::servfail(info);
                }
            }
        }
        let note = reply::addresses_note(&reply);
        self.emit(&asker, &Outcome::Forwarded { info, rcode: reply.rcode, note: note.as_deref() });
        resp
    }

    /// Counts an outcome and sends its event.
    fn emit(&self, asker: &Asker, o: &Outcome<'_>) {
        let counter = match reply::counter(o) {
            reply::Counter::Forwarded => &self.stats.forwarded,
            reply::Counter::Servfail => &self.stats.servfail,
            reply::Counter::Blocked => &self.stats.blocked,
            reply::Counter::Rejected => &self.stats.rejected,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Outcome::Refused(a) = o {
            log::debug!("dns: {}: {} ({})", asker.addr, a.refusal.note(), a.rcode.to_str());
        }
        let base = self.emitter.event(Component::Dns, reply::action(o));
        self.emitter.emit(reply::event(base, asker, o));
    }
}
