//! The forwarding threads of the DNS server: a small fixed set of
//! `dns-fwd-N` threads, each running its own mio event loop over the
//! upstream sockets of the queries it has in flight.
//!
//! The server's loop hands an allowed UDP query over (a bounded channel,
//! one wake-up per batch of queries, not per query); the forwarder sends
//! it with a random ID on a marked socket with a random port (RFC 5452;
//! each socket carries one query at a time and is replaced after a few
//! dozen) and goes on with other work. Whichever socket becomes readable is answered from
//! there, directly on the server's socket, so a query costs no thread
//! switch beyond the batch's. Nothing here blocks on an upstream: a slow
//! or dead one only holds a slot until its timeout, then the next
//! upstream is tried; a truncated answer is fetched again over TCP on a
//! short-lived thread (bounded), the way TCP clients are served.
//!
//! A loopback upstream is asked over TCP instead (see [`super::upstream`]
//! for why): one non-blocking connection per query in the same event
//! loop, connected, written and read as it becomes ready, then closed.
//!
//! A forwarder holds at most `defaults::IN_FLIGHT` queries; beyond that
//! jobs wait in its short channel (`defaults::CHANNEL`), and beyond that
//! in the server's per-client backlog, served in turn (a forwarder that
//! takes jobs while it waits wakes the server's loop); a client whose
//! backlog is full gets SERVFAIL at once (never a stall).

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use mio::{Events, Interest, Poll, Token, Waker};

use super::filter::{self, QueryInfo};
use super::reply::Asker;
use super::upstream::{random_id, Tries};
use super::{defaults, send_udp, Shared};

/// One allowed UDP query.
pub(super) struct Job {
    /// The client's query; the upstream ID is written into it per try.
    pub query: Vec<u8>,
    pub info: QueryInfo,
    /// Who asked; the answer goes back to `asker.addr` on `reply`.
    pub asker: Asker,
    pub reply: Arc<std::net::UdpSocket>,
}

impl Job {
    fn answer(&self, bytes: &[u8]) {
        send_udp(&self.reply, bytes, self.asker.addr);
    }
}

/// The server loop's handle on one forwarder.
pub(super) struct Handle {
    tx: SyncSender<Job>,
    waker: Arc<Waker>,
    /// Jobs were queued since the last wake-up.
    owed: bool,
    thread: thread::JoinHandle<()>,
}

impl Handle {
    /// Queues a job without waking the forwarder (see [`Handle::wake`]);
    /// gives it back when the queue is full.
    pub fn offer(&mut self, job: Job) -> Option<Job> {
        match self.tx.try_send(job) {
            Ok(()) => {
                self.owed = true;
                None
            }
            Err(TrySendError::Full(j)) | Err(TrySendError::Disconnected(j)) => Some(j),
        }
    }

    /// Wakes the forwarder if jobs were queued since the last call.
    pub fn wake(&mut self) {
        if std::mem::take(&mut self.owed) {
            if let Err(e) = self.waker.wake() {
                log::warn!("dns: waking a forwarder: {e}");
            }
        }
    }

    /// Stops the forwarder (the caller has set the stop flag) and waits
    /// for it: its queries' jobs hold the server socket open.
    pub fn join(self) {
        let Handle { tx, waker, thread, .. } = self;
        drop(tx);
        let _ = waker.wake();
        let _ = thread.join();
    }
}

/// Starts forwarder number `n`.
pub(super) fn spawn(n: usize, shared: Arc<Shared>, stop: Arc<AtomicBool>) -> io::Result<Handle> {
    let poll = Poll::new()?;
    let waker = Arc::new(Waker::new(poll.registry(), WAKER)?);
    let (tx, rx) = mpsc::sync_channel(defaults::CHANNEL);
    let f = Forwarder {
        poll,
        rx,
        shared,
        stop,
        slots: Vec::new(),
        free: Vec::new(),
        idle: Vec::new(),
        live: 0,
        buf: vec![0u8; 65535],
    };
    let thread = thread::Builder::new().name(format!("dns-fwd-{n}")).spawn(move || f.run())?;
    Ok(Handle { tx, waker, owed: false, thread })
}

const WAKER: Token = Token(usize::MAX);

/// A query waiting for its answer on one socket.
struct Pending {
    job: Job,
    id: u16,
    /// When the next upstream gets its turn.
    deadline: Instant,
    tries: Tries,
}

/// An upstream socket: connected to upstream number `up`, carrying at
/// most one query at a time, reused for `defaults::SOCKET_USES` queries
/// and then replaced (a fresh random port), like dnsmasq's pool of random
/// sockets. Creating, connecting, registering and closing a socket per
/// query was half of a forwarder's CPU time in a profile.
struct Sock {
    conn: Conn,
    up: usize,
    uses: u32,
    pending: Option<Pending>,
}

/// How a socket reaches its upstream.
enum Conn {
    Udp(mio::net::UdpSocket),
    /// One query's exchange with a loopback upstream; never reused.
    Tcp(TcpExchange),
}

/// A DNS-over-TCP exchange on a non-blocking stream (RFC 1035 §4.2.2):
/// the length-prefixed query still to write, the answer read so far.
struct TcpExchange {
    stream: mio::net::TcpStream,
    out: Vec<u8>,
    written: usize,
    got: Vec<u8>,
}

impl TcpExchange {
    /// Writes what it can, reads what is there: the answer once all of it
    /// is in, `None` while more is to come.
    fn pump(&mut self) -> Result<Option<Vec<u8>>, String> {
        if let Ok(Some(e)) | Err(e) = self.stream.take_error() {
            return Err(format!("tcp: {e}"));
        }
        while self.written < self.out.len() {
            match self.stream.write(&self.out[self.written..]) {
                Ok(0) => return Err("tcp send: connection closed".into()),
                Ok(n) => self.written += n,
                // Still connecting: writable comes later.
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::NotConnected) => {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("tcp send: {e}")),
            }
        }
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(answer) = framed(&self.got) {
                return Ok(Some(answer.to_vec()));
            }
            match self.stream.read(&mut chunk) {
                Ok(0) => return Err("tcp recv: closed before a whole answer".into()),
                Ok(n) => self.got.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("tcp recv: {e}")),
            }
        }
    }
}

/// The first length-prefixed message of `buf`, once all of it is there.
fn framed(buf: &[u8]) -> Option<&[u8]> {
    let len = usize::from(u16::from_be_bytes([*buf.first()?, *buf.get(1)?]));
    buf.get(2..2 + len)
}

struct Forwarder {
    poll: Poll,
    rx: Receiver<Job>,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    /// Token `i` is `slots[i]`.
    slots: Vec<Option<Sock>>,
    /// Unused slot numbers.
    free: Vec<usize>,
    /// Per upstream: sockets without a query.
    idle: Vec<Vec<usize>>,
    /// Queries in flight.
    live: usize,
    buf: Vec<u8>,
}

impl Forwarder {
    fn run(mut self) {
        let mut events = Events::with_capacity(256);
        loop {
            if self.stop.load(Ordering::Relaxed) {
                return;
            }
            // Take new work while there is room; the channel's room is
            // the loop's to fill from its backlog.
            let mut took = false;
            while self.live < defaults::IN_FLIGHT {
                match self.rx.try_recv() {
                    Ok(job) => {
                        took = true;
                        self.start(job, Tries::default())
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => return,
                }
            }
            if took && self.shared.backlog_waiting.swap(false, Ordering::SeqCst) {
                if let Some(w) = self.shared.loop_waker.get() {
                    if let Err(e) = w.wake() {
                        log::warn!("dns: waking the server loop: {e}");
                    }
                }
            }
            // At most IN_FLIGHT queries (and their idle sockets): a scan
            // is cheaper than keeping a timer structure in order.
            let next =
                self.slots.iter().flatten().filter_map(|s| s.pending.as_ref()).map(|p| p.deadline).min();
            let timeout = next.map(|d| d.saturating_duration_since(Instant::now()));
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                log::error!("dns: forwarder poll failed, stopping it: {e}");
                return;
            }
            for ev in events.iter() {
                if ev.token() != WAKER {
                    self.readable(ev.token().0);
                }
            }
            self.expire(Instant::now());
        }
    }

    /// An idle socket to upstream `i`, or a new one.
    fn socket(&mut self, i: usize, up: SocketAddr) -> Result<usize, String> {
        if let Some(slot) = self.idle.get_mut(i).and_then(Vec::pop) {
            return Ok(slot);
        }
        let std_sock = self.shared.settings.upstreams.udp_socket(up)?;
        let mut sock = mio::net::UdpSocket::from_std(std_sock);
        let slot = self.free_slot();
        if let Err(e) = self.poll.registry().register(&mut sock, Token(slot), Interest::READABLE) {
            self.free.push(slot);
            return Err(format!("udp register: {e}"));
        }
        self.slots[slot] = Some(Sock { conn: Conn::Udp(sock), up: i, uses: 0, pending: None });
        Ok(slot)
    }

    fn free_slot(&mut self) -> usize {
        self.free.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() - 1
        })
    }

    /// A new TCP connection to (loopback) upstream `i` carrying `query`.
    fn connect(&mut self, i: usize, up: SocketAddr, query: &[u8]) -> Result<usize, String> {
        let len = u16::try_from(query.len()).map_err(|_| "query longer than 65535 bytes".to_owned())?;
        let std_stream = crate::outbound::tcp_started(up, self.shared.settings.upstreams.mark)
            .map_err(|e| format!("tcp {e}"))?;
        let mut stream = mio::net::TcpStream::from_std(std_stream);
        let slot = self.free_slot();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self.poll.registry().register(&mut stream, Token(slot), interest) {
            self.free.push(slot);
            return Err(format!("tcp register: {e}"));
        }
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(query);
        let x = TcpExchange { stream, out, written: 0, got: Vec::new() };
        self.slots[slot] = Some(Sock { conn: Conn::Tcp(x), up: i, uses: 0, pending: None });
        Ok(slot)
    }

    /// Closes a socket (its query, if any, was taken out before).
    fn retire(&mut self, slot: usize) {
        if let Some(mut s) = self.slots.get_mut(slot).and_then(Option::take) {
            let _ = match &mut s.conn {
                Conn::Udp(u) => self.poll.registry().deregister(u),
                Conn::Tcp(t) => self.poll.registry().deregister(&mut t.stream),
            };
            if s.pending.is_none() {
                // An idle socket that failed (a late ICMP error).
                if let Some(idle) = self.idle.get_mut(s.up) {
                    idle.retain(|&x| x != slot);
                }
            }
            self.free.push(slot);
        }
    }

    /// A socket whose query is done: back to the idle pool, or closed
    /// when it has served its share.
    fn release(&mut self, slot: usize) {
        let Some(s) = self.slots.get_mut(slot).and_then(Option::as_mut) else { return };
        s.uses += 1;
        if s.uses >= defaults::SOCKET_USES || matches!(s.conn, Conn::Tcp(_)) {
            self.retire(slot);
        } else if let Some(idle) = self.idle.get_mut(s.up) {
            idle.push(slot);
        }
    }

    /// Takes the query out of a socket.
    fn take(&mut self, slot: usize) -> Option<(Pending, usize)> {
        let s = self.slots.get_mut(slot)?.as_mut()?;
        let p = s.pending.take()?;
        self.live -= 1;
        Some((p, s.up))
    }

    /// Sends the query to upstream `tries.next` (or the next that takes
    /// it); SERVFAIL when none is left.
    fn start(&mut self, mut job: Job, mut tries: Tries) {
        let n = self.shared.settings.upstreams.addrs.len();
        if self.idle.len() < n {
            self.idle.resize_with(n, Vec::new);
        }
        while tries.next < n {
            let i = tries.next;
            let shared = self.shared.clone();
            let ups = &shared.settings.upstreams;
            let up = ups.addrs[i];
            let id = random_id();
            job.query[..2].copy_from_slice(&id.to_be_bytes());
            let (sent, timeout) = if ups.tcp_only(up) {
                (self.connect(i, up, &job.query), ups.tcp_timeout)
            } else {
                (self.send(i, up, &job.query), ups.udp_timeout)
            };
            let slot = match sent {
                Ok(slot) => slot,
                Err(why) => {
                    tries.failed(up, why);
                    continue;
                }
            };
            let Some(s) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
                tries.failed(up, "no socket".into());
                continue;
            };
            s.pending = Some(Pending { job, id, deadline: Instant::now() + timeout, tries });
            self.live += 1;
            return;
        }
        self.fail(job, tries);
    }

    /// Sends `query` to upstream `i` on one of its UDP sockets.
    fn send(&mut self, i: usize, up: SocketAddr, query: &[u8]) -> Result<usize, String> {
        let slot = self.socket(i, up)?;
        let Some(Sock { conn: Conn::Udp(u), .. }) = self.slots.get(slot).and_then(Option::as_ref) else {
            return Err("no socket".into());
        };
        if let Err(e) = u.send(query) {
            // A refusal of an earlier datagram surfaces here too; the
            // socket is not trusted further either way.
            self.retire(slot);
            return Err(format!("udp send: {e}"));
        }
        Ok(slot)
    }

    /// A TCP exchange made progress: on with it, or the answer, or the
    /// next upstream.
    fn tcp_ready(&mut self, slot: usize) {
        let Some(Sock { conn: Conn::Tcp(x), pending: Some(p), .. }) =
            self.slots.get_mut(slot).and_then(Option::as_mut)
        else {
            return;
        };
        let result = match x.pump() {
            Ok(None) => return,
            Ok(Some(resp)) if resp.len() < filter::HEADER_LEN || resp[..2] != p.id.to_be_bytes() => {
                Err("tcp answer with the wrong id".to_owned())
            }
            Ok(Some(resp)) => match filter::check_response(&resp, &p.job.info) {
                Ok(reply) => Ok((resp, reply)),
                Err(why) => Err(format!("tcp answer refused: {why}")),
            },
            Err(why) => Err(why),
        };
        let Some((mut p, up)) = self.take(slot) else { return };
        self.retire(slot);
        match result {
            Ok((mut resp, reply)) => {
                resp[..2].copy_from_slice(&p.job.info.id.to_be_bytes());
                let job = p.job;
                let out = self.shared.deliver(resp, reply, &job.info, job.asker);
                job.answer(&filter::fit_udp(out, &job.info));
            }
            Err(why) => {
                let addr = self.shared.settings.upstreams.addrs[up];
                log::debug!("dns: upstream {addr}: {why}");
                p.tries.failed(addr, why);
                self.start(p.job, p.tries);
            }
        }
    }

    fn readable(&mut self, slot: usize) {
        if let Some(Sock { conn: Conn::Tcp(_), .. }) = self.slots.get(slot).and_then(Option::as_ref) {
            return self.tcp_ready(slot);
        }
        loop {
            let Some(s) = self.slots.get(slot).and_then(Option::as_ref) else { return };
            let Conn::Udp(sock) = &s.conn else { return };
            let n = match sock.recv(&mut self.buf) {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // ICMP port unreachable and the like: this upstream is
                    // out for this query; try the next.
                    let taken = self.take(slot);
                    self.retire(slot);
                    if let Some((mut p, up)) = taken {
                        let addr = self.shared.settings.upstreams.addrs[up];
                        p.tries.failed(addr, format!("udp recv: {e}"));
                        self.start(p.job, p.tries);
                    }
                    return;
                }
            };
            let Some(p) = s.pending.as_ref() else {
                log::debug!("dns: ignored a {n}-byte upstream datagram on an idle socket");
                continue;
            };
            let resp = &self.buf[..n];
            if n < filter::HEADER_LEN || resp[..2] != p.id.to_be_bytes() {
                log::debug!("dns: ignored a {n}-byte upstream datagram with the wrong id");
                continue;
            }
            let reply = match filter::check_response(resp, &p.job.info) {
                Ok(r) => r,
                // Possibly a spoof racing the real answer: keep waiting.
                Err(why) => {
                    log::debug!("dns: ignored an upstream answer: {why}");
                    continue;
                }
            };
            let mut resp = resp.to_vec();
            let Some((p, up)) = self.take(slot) else { return };
            self.release(slot);
            if reply.truncated {
                let mut tries = p.tries;
                tries.truncated(up);
                retry_over_tcp(self.shared.clone(), p.job, tries);
                return;
            }
            resp[..2].copy_from_slice(&p.job.info.id.to_be_bytes());
            let job = p.job;
            let out = self.shared.deliver(resp, reply, &job.info, job.asker);
            job.answer(&filter::fit_udp(out, &job.info));
            return;
        }
    }

    /// Tries the next upstream for every query whose time is up.
    fn expire(&mut self, now: Instant) {
        if self.live == 0 {
            return;
        }
        for slot in 0..self.slots.len() {
            let due = self
                .slots
                .get(slot)
                .and_then(Option::as_ref)
                .and_then(|s| s.pending.as_ref())
                .is_some_and(|p| p.deadline <= now);
            if !due {
                continue;
            }
            let tcp = matches!(self.slots.get(slot), Some(Some(Sock { conn: Conn::Tcp(_), .. })));
            if let Some((mut p, up)) = self.take(slot) {
                // Its answer may still come: a new socket for the next one.
                self.retire(slot);
                let ups = &self.shared.settings.upstreams;
                let why = if tcp {
                    format!("no answer over tcp within {:?}", ups.tcp_timeout)
                } else {
                    format!("no answer over udp within {:?}", ups.udp_timeout)
                };
                p.tries.failed(ups.addrs[up], why);
                self.start(p.job, p.tries);
            }
        }
    }

    fn fail(&self, job: Job, tries: Tries) {
        let out = self.shared.upstreams_failed(&job.info, &tries.into_error(), job.asker);
        job.answer(&out);
    }
}

/// A truncated UDP answer: the same upstream again over TCP (then the
/// rest, as [`super::upstream::Upstreams::exchange`] does), on its own
/// thread so the forwarder's other queries are not held up. The threads
/// are a fair share per client (`Shared::tcp_retries`), so one client's
/// truncated answers cannot take every retry from another's.
fn retry_over_tcp(shared: Arc<Shared>, job: Job, tries: Tries) {
    let who = job.asker.client.unwrap_or(crate::peer::Client::Unknown);
    let ticket = match shared.tcp_retries.admit(who) {
        Ok(t) => t,
        Err(_) => {
            let mut tries = tries;
            let addr = shared.settings.upstreams.addrs[tries.next];
            tries.failed(addr, "truncated, and this client's share of tcp retries is running".into());
            let out = shared.upstreams_failed(&job.info, &tries.into_error(), job.asker);
            job.answer(&out);
            return;
        }
    };
    // Handed over through a slot the thread empties: if no thread
    // starts, the query is taken back and still gets its SERVFAIL and its
    // event (it was dropped unanswered and unlogged before).
    let slot = Arc::new(std::sync::Mutex::new(Some((job, tries))));
    let spawned = thread::Builder::new().name("dns-tc".into()).spawn({
        let (shared, slot) = (shared.clone(), slot.clone());
        move || {
            let _ticket = ticket;
            let taken = slot.lock().unwrap_or_else(|e| e.into_inner()).take();
            let Some((mut job, tries)) = taken else { return };
            // The upstream ID of the UDP try is still in it.
            job.query[..2].copy_from_slice(&job.info.id.to_be_bytes());
            let out = shared.exchange_and_deliver(&job.query, &job.info, tries, job.asker);
            job.answer(&filter::fit_udp(out, &job.info));
        }
    });
    if let Err(e) = spawned {
        log::warn!("dns: cannot start a tcp retry thread: {e}");
        if let Some((job, mut tries)) = slot.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let addr = shared.settings.upstreams.addrs[tries.next];
            tries.failed(addr, format!("truncated, and no thread for a tcp retry: {e}"));
            let out = shared.upstreams_failed(&job.info, &tries.into_error(), job.asker);
            job.answer(&out);
        }
    }
}
