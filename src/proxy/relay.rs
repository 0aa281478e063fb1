//! The byte relay between a client and its upstream: both directions in
//! one thread with poll(2); a direction starts as a user-space copy and
//! moves to zero-copy splice(2) through a pipe once it carried 64 KiB
//! (the copy stays where a pipe or splice is not available); half-close
//! propagated, an idle timeout reset by traffic and an optional deadline.
//!
//! For plain HTTP the client → upstream direction goes through
//! [`RequestStream`] instead, so every request head on a kept-alive
//! connection is handed to a gate before a byte of it is passed on.
//! A WebSocket handshake as the connection's first request (already
//! checked like any request) makes the upstream → client direction watch
//! for the answer's status line, holding the client's further bytes: a
//! `101 Switching Protocols` turns both directions into the opaque relay
//! (the connection is no longer HTTP; its name was checked), any other
//! answer lets HTTP checking go on.
//!
//! Shell: sockets, pipes and the clock. The loop's decisions (poll
//! interest, timeouts, endings) are the pure [`state`] core, the framing
//! decisions the pure [`crate::proxy::http`] core.

use std::any::Any;
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::fcntl::{fcntl, splice, FcntlArg, OFlag, SpliceFFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::http::{parse_response_head, RequestHead, RequestStream, Step, MAX_HEAD};
use super::{reason, Block};

mod state;
use state::{Ending, Interest, Next, Relay, Side, Wait};

/// The user-space buffer of a copied direction (a TLS record fits).
const COPY_BUF: usize = 16 * 1024 + 256;
/// Most bytes read at once on the HTTP request side.
const REQUEST_READ: usize = 64 * 1024;
/// A direction that has carried this many bytes moves to splice(2).
const PIPE_AFTER: u64 = 64 * 1024;
/// A direction that has carried this many bytes is bulk: its pipe grows.
const BULK_AFTER: u64 = 1 << 20;
/// The pipe size of a bulk direction.
const BULK_PIPE: usize = 1 << 20;

/// How a relay ended.
#[derive(Debug)]
pub enum End {
    /// Both sides closed their sending direction and everything was passed.
    Done,
    Idle,
    Lifetime,
    /// A later request head was not complete within HEADER_TIMEOUT.
    HeadTimeout,
    /// A later HTTP request was refused (or could not be parsed).
    Blocked {
        head: Option<Box<RequestHead>>,
        block: Block,
    },
    /// A socket error (reset, broken pipe): the other side is cut too.
    Error(io::Error),
}

/// Bytes passed each way.
#[derive(Debug, Default, Clone, Copy)]
pub struct Stats {
    pub up: u64,
    pub down: u64,
    /// Whether both directions used splice.
    pub spliced: bool,
    /// The connection switched to WebSocket (a `101` to its handshake).
    pub upgraded: bool,
}

/// Decides on each HTTP request head after the first.
pub type Gate<'a> = dyn FnMut(&RequestHead) -> Result<(), Block> + 'a;

/// Asked before a direction takes a splice pipe (two descriptors): a
/// permit held as long as the pipe, or `None` (the direction copies).
pub type PipePermit = Arc<dyn Fn() -> Option<Box<dyn Any + Send>> + Send + Sync>;

pub struct Limits {
    pub idle: Duration,
    pub deadline: Option<Instant>,
    /// HEADER_TIMEOUT for every later request head on a plain-HTTP
    /// connection, from its first byte (`None`: only `idle`).
    pub head: Option<Duration>,
    /// Pipes are taken only with a permit (`None`: no permit needed).
    pub pipes: Option<PipePermit>,
}

/// A plain-HTTP connection's state when the relay takes over: the
/// client's bytes not yet passed on, starting with the first request's
/// head, which the caller parsed and decided (it is not parsed again),
/// and the gate for every later head.
pub struct Http<'a, 'g> {
    pub pending: Vec<u8>,
    pub first: &'a RequestHead,
    pub gate: &'a mut Gate<'g>,
}

/// Relays until both directions are closed, a limit is hit or an error.
/// Both sockets are switched to non-blocking mode.
pub fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    http: Option<Http<'_, '_>>,
    limits: &Limits,
) -> (End, Stats) {
    relay_with(client, upstream, http, limits, true)
}

/// [`relay`] for an `upstream` that is non-blocking already
/// ([`crate::outbound::tcp_nonblocking`]): only the client is switched.
pub fn relay_nonblocking(
    client: &TcpStream,
    upstream: &TcpStream,
    http: Option<Http<'_, '_>>,
    limits: &Limits,
) -> (End, Stats) {
    relay_switching(client, None, upstream, http, limits, true)
}

/// [`relay`], with splice optional (the tests drive the copy fallback).
fn relay_with(
    client: &TcpStream,
    upstream: &TcpStream,
    http: Option<Http<'_, '_>>,
    limits: &Limits,
    use_splice: bool,
) -> (End, Stats) {
    relay_switching(client, Some(upstream), upstream, http, limits, use_splice)
}

/// The relay loop; `switch`: the sockets besides `client` to make
/// non-blocking first.
fn relay_switching(
    client: &TcpStream,
    switch: Option<&TcpStream>,
    upstream: &TcpStream,
    http: Option<Http<'_, '_>>,
    limits: &Limits,
    use_splice: bool,
) -> (End, Stats) {
    let mut stats = Stats::default();
    let switched =
        client.set_nonblocking(true).and_then(|_| switch.map_or(Ok(()), |u| u.set_nonblocking(true)));
    if let Err(e) = switched {
        return (End::Error(e), stats);
    }
    let (mut up, mut gate) = match http {
        Some(Http { pending, first, gate }) => (Dir::http(pending, first), Some(gate)),
        None => (Dir::plain(use_splice), None),
    };
    let mut down = Dir::plain(use_splice);
    up.pipes.clone_from(&limits.pipes);
    down.pipes.clone_from(&limits.pipes);
    let mut state = Relay::new(Instant::now(), limits.idle, limits.deadline).with_head_timeout(limits.head);
    // A refused later request: what to report once the responses to the
    // requests before it have reached the client.
    let mut blocked: Option<(Option<Box<RequestHead>>, Block)> = None;
    let end = loop {
        let a = if blocked.is_some() {
            0
        } else {
            match up.pump(client, upstream, gate.as_deref_mut()) {
                Ok(n) => {
                    if up.signal.take() == Some(Signal::UpgradeAsked) {
                        // The upstream's first bytes answer this request:
                        // watch them for the status.
                        down.watch();
                    }
                    n
                }
                Err(End::Blocked { head, block }) => {
                    // Not a byte of the refused request went upstream. Send
                    // it our end of stream, let it finish answering the
                    // requests before (pipelining), then the caller
                    // answers 403 on the still-open client side.
                    blocked = Some((head, block));
                    up.stop();
                    let _ = upstream.shutdown(Shutdown::Write);
                    down.hold = true;
                    state.blocked(Instant::now());
                    0
                }
                Err(end) => break end,
            }
        };
        let b = match down.pump(upstream, client, None) {
            Ok(n) => n,
            Err(end) => break end,
        };
        // The answer to a handshake changes what the client side may do
        // with bytes it already holds: pump it again before waiting (no
        // new client bytes may come to wake the poll).
        let switched = match down.signal.take() {
            Some(Signal::Upgraded) => {
                stats.upgraded = true;
                up.opaque(use_splice);
                true
            }
            Some(Signal::NotUpgraded) => {
                up.resume();
                true
            }
            _ => false,
        };
        stats.up += a as u64;
        stats.down += b as u64;
        state.head(Instant::now(), up.partial_head());
        let (cf, uf, timeout) = match state.after_pump(
            Instant::now(),
            a + b,
            switched,
            up.side(),
            down.side(),
            down.finished(),
        ) {
            Next::Again => continue,
            Next::End(e) => break ended(e),
            Next::Poll { client, upstream, timeout } => (flags(client), flags(upstream), timeout),
        };
        let ms = timeout.as_millis().clamp(1, i32::MAX as u128) as i32;
        let timeout = PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(client.as_fd(), cf), PollFd::new(upstream.as_fd(), uf)];
        match poll(&mut fds, timeout) {
            Ok(_) | Err(Errno::EINTR) => {}
            Err(e) => break End::Error(e.into()),
        }
        // An error or hang-up on a socket we are not otherwise touching
        // would wake poll forever: look at it now.
        let bad = PollFlags::POLLERR | PollFlags::POLLHUP;
        let err = fds
            .iter()
            .zip([client, upstream])
            .filter(|(fd, _)| fd.revents().is_some_and(|r| r.intersects(bad)))
            .find_map(|(_, s)| s.take_error().ok().flatten());
        if let Some(e) = err {
            break End::Error(e);
        }
        let hung_up = fds.iter().any(|f| f.revents().is_some_and(|r| r.contains(PollFlags::POLLHUP)));
        if let Some(e) = Relay::after_poll(hung_up, up.waits(), down.waits()) {
            break ended(e);
        }
    };
    stats.spliced = up.is_spliced() && down.is_spliced();
    // However the loop ended, a refused request is what the caller must
    // answer (with its 403).
    let end = match blocked {
        Some((head, block)) => End::Blocked { head, block },
        None => end,
    };
    (end, stats)
}

fn ended(e: Ending) -> End {
    match e {
        Ending::Done => End::Done,
        Ending::Idle => End::Idle,
        Ending::Lifetime => End::Lifetime,
        Ending::HeadTimeout => End::HeadTimeout,
    }
}

fn flags(i: Interest) -> PollFlags {
    let mut f = PollFlags::empty();
    f.set(PollFlags::POLLIN, i.read);
    f.set(PollFlags::POLLOUT, i.write);
    f
}

/// What a direction tells the relay loop about a WebSocket handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Signal {
    /// Client side: the first request is a WebSocket handshake.
    UpgradeAsked,
    /// Upstream side: it answered `101`.
    Upgraded,
    /// Upstream side: it answered something else (HTTP goes on).
    NotUpgraded,
}

/// One direction: bytes read from `src` wait in `buf` until `dst` takes
/// them.
struct Dir {
    buf: Buffer,
    /// Asked before a pipe is taken.
    pipes: Option<PipePermit>,
    /// Set by `pump`, taken by the relay loop.
    signal: Option<Signal>,
    /// `src` reached end of stream.
    eof: bool,
    /// We shut `dst`'s sending side (after eof and an empty buffer).
    shut: bool,
    /// Do not shut `dst` at the end: the caller still writes to it.
    hold: bool,
}

enum Buffer {
    /// splice(2) through a pipe: `queued` bytes are in the pipe.
    /// `moved` counts bytes through the pipe until it is grown.
    /// `_permit`: the pipe's share of the descriptors, given back with it.
    Pipe {
        r: OwnedFd,
        w: OwnedFd,
        queued: usize,
        cap: usize,
        moved: u64,
        _permit: Option<Box<dyn Any + Send>>,
    },
    /// A user-space copy through `buf[lo..hi]`: every direction starts
    /// this way, and the fallback when a pipe or splice is not available.
    /// The buffer is dropped when it is empty and the source has nothing
    /// more, so an idle connection costs no buffer memory. `moved` counts bytes until the direction
    /// is promoted to a pipe (`promote`) after PIPE_AFTER bytes.
    Copy { buf: Option<Box<[u8]>>, lo: usize, hi: usize, moved: u64, promote: bool },
    /// HTTP requests: `approved` bytes at the front of `buf` may be sent;
    /// the rest wait for the framing or the gate. `awaiting`: the first
    /// request was a WebSocket handshake and its answer is not in yet, so
    /// nothing after it is parsed or sent (RFC 6455 §4.1: the client waits).
    Http { buf: Vec<u8>, approved: usize, stream: RequestStream, awaiting: bool },
    /// The answer to a WebSocket handshake: bytes are held until its
    /// status line is read (`approved` bytes of interim 1xx heads may be
    /// sent), then the direction becomes a `Copy` of what is left.
    Watch { buf: Vec<u8>, approved: usize, promote: bool },
}

impl Dir {
    /// A byte direction. It starts as a copy: most connections (TLS
    /// handshakes, small responses) move a few KiB, for which a pair of
    /// pipe descriptors would cost more than it saves (and 4 of the 6
    /// descriptors a connection held). Past PIPE_AFTER bytes it moves to
    /// splice(2) through a pipe, if `use_splice`.
    fn plain(use_splice: bool) -> Dir {
        let buf = Buffer::Copy { buf: None, lo: 0, hi: 0, moved: 0, promote: use_splice };
        Dir { buf, pipes: None, signal: None, eof: false, shut: false, hold: false }
    }

    /// The client side of plain HTTP: `first`, the head at the front of
    /// `pending`, was decided by the caller and may be sent; a WebSocket
    /// handshake makes what follows wait for its answer.
    fn http(pending: Vec<u8>, first: &RequestHead) -> Dir {
        Dir {
            buf: Buffer::Http {
                buf: pending,
                approved: first.head_len,
                stream: RequestStream::after(first),
                awaiting: first.websocket,
            },
            pipes: None,
            signal: first.websocket.then_some(Signal::UpgradeAsked),
            eof: false,
            shut: false,
            hold: false,
        }
    }

    /// Upstream side of a WebSocket handshake: hold what arrives until the
    /// status is known. Only a fresh copy direction (nothing read yet) can
    /// turn into a watch; the handshake is the connection's first request,
    /// so its answer is the first thing the upstream sends.
    fn watch(&mut self) {
        if let Buffer::Copy { lo, hi, moved: 0, promote, .. } = self.buf {
            if lo == hi && !self.eof {
                self.buf = Buffer::Watch { buf: Vec::new(), approved: 0, promote };
            }
        }
    }

    /// Client side after a `101`: the rest of the connection is opaque.
    fn opaque(&mut self, use_splice: bool) {
        if let Buffer::Http { buf, .. } = &mut self.buf {
            let rest = std::mem::take(buf);
            self.buf = copy_of(rest, use_splice);
        }
    }

    /// Client side after another answer: HTTP checking goes on.
    fn resume(&mut self) {
        if let Buffer::Http { awaiting, .. } = &mut self.buf {
            *awaiting = false;
        }
    }

    /// Stops this direction for good: nothing more is read or sent.
    fn stop(&mut self) {
        if let Buffer::Http { buf, approved, .. } = &mut self.buf {
            buf.clear();
            *approved = 0;
        }
        self.eof = true;
        self.shut = true;
    }

    fn side(&self) -> Side {
        Side { waits: self.waits(), shut: self.shut }
    }

    /// A request head has begun and is not complete: client bytes wait
    /// at a head boundary that nothing was approved past yet.
    fn partial_head(&self) -> bool {
        matches!(&self.buf, Buffer::Http { buf, approved: 0, stream, awaiting: false }
            if stream.at_head() && !buf.is_empty())
    }

    /// The source ended and everything read was delivered.
    fn finished(&self) -> bool {
        self.eof && self.waits() == Wait::Nothing
    }

    fn is_spliced(&self) -> bool {
        matches!(self.buf, Buffer::Pipe { .. })
    }

    fn waits(&self) -> Wait {
        let queued = match &self.buf {
            Buffer::Pipe { queued, .. } => *queued,
            Buffer::Copy { lo, hi, .. } => hi - lo,
            Buffer::Http { approved, .. } | Buffer::Watch { approved, .. } => *approved,
        };
        if queued > 0 {
            Wait::Write
        } else if !self.eof {
            Wait::Read
        } else {
            Wait::Nothing
        }
    }

    /// Moves what can be moved without blocking; returns bytes delivered.
    fn pump(
        &mut self,
        src: &TcpStream,
        dst: &TcpStream,
        mut gate: Option<&mut Gate<'_>>,
    ) -> Result<usize, End> {
        let mut moved = 0;
        loop {
            let mut progress = false;
            match &mut self.buf {
                Buffer::Pipe { r, w, queued, cap, moved: through, .. } => {
                    let flags = SpliceFFlags::SPLICE_F_MOVE | SpliceFFlags::SPLICE_F_NONBLOCK;
                    if !self.eof && *queued < *cap {
                        match splice(src, None, &*w, None, *cap - *queued, flags) {
                            Ok(0) => {
                                self.eof = true;
                                progress = true;
                            }
                            Ok(n) => {
                                *queued += n;
                                progress = true;
                                if *through < BULK_AFTER {
                                    *through += n as u64;
                                    if *through >= BULK_AFTER {
                                        *cap = grow(w, *cap);
                                    }
                                }
                            }
                            Err(Errno::EAGAIN | Errno::EINTR) => {}
                            Err(Errno::EINVAL) if *queued == 0 => {
                                // This socket pair cannot splice: copy.
                                log::debug!("splice refused (EINVAL); relaying with a copy");
                                self.buf = Buffer::Copy { buf: None, lo: 0, hi: 0, moved: 0, promote: false };
                                continue;
                            }
                            Err(e) => return Err(End::Error(e.into())),
                        }
                    }
                    if *queued > 0 {
                        match splice(&*r, None, dst, None, *queued, flags) {
                            Ok(n) => {
                                *queued -= n;
                                moved += n;
                                progress |= n > 0;
                            }
                            Err(Errno::EAGAIN | Errno::EINTR) => {}
                            Err(e) => return Err(End::Error(e.into())),
                        }
                    }
                }
                Buffer::Copy { buf, lo, hi, moved: through, promote } => {
                    if !self.eof && *lo == *hi {
                        *lo = 0;
                        *hi = 0;
                        let b = buf.get_or_insert_with(|| vec![0; COPY_BUF].into_boxed_slice());
                        match read_some(src, b) {
                            Ok(Some(0)) => {
                                self.eof = true;
                                progress = true;
                                *buf = None;
                            }
                            Ok(Some(n)) => {
                                *hi = n;
                                progress = true;
                            }
                            // Empty and nothing waiting: no buffer while
                            // idle (a busy copy keeps its buffer).
                            Ok(None) => *buf = None,
                            Err(e) => return Err(End::Error(e)),
                        }
                    }
                    if let (Some(b), true) = (buf.as_deref(), *hi > *lo) {
                        match write_some(dst, &b[*lo..*hi]) {
                            Ok(Some(n)) => {
                                *lo += n;
                                moved += n;
                                *through += n as u64;
                                progress |= n > 0;
                            }
                            Ok(None) => {}
                            Err(e) => return Err(End::Error(e)),
                        }
                    }
                    if *lo == *hi && *promote && *through >= PIPE_AFTER && !self.eof {
                        // A refused permit (the client holds its share of
                        // the descriptors) is asked no more: it copies.
                        let permit = match &self.pipes {
                            Some(ask) => ask().map(Some),
                            None => Some(None),
                        };
                        match permit.and_then(pipe_buffer) {
                            Some(p) => self.buf = p,
                            None => *promote = false,
                        }
                    }
                }
                // Handled after this match (it may turn into a copy).
                Buffer::Watch { .. } => {}
                Buffer::Http { buf, approved, stream, awaiting } => {
                    // Find what may be sent: body bytes by their framing, a
                    // new head only once the gate allowed it.
                    while *approved == 0 && !*awaiting && !buf.is_empty() {
                        match stream.next(buf) {
                            Ok(Step::NeedMore) => break,
                            Ok(Step::Forward(n)) => *approved = n,
                            Ok(Step::Head(head)) => {
                                // A later handshake is not followed: earlier
                                // answers may still be on their way, and
                                // their bodies could pass for a 101.
                                if let Some(g) = gate.as_deref_mut() {
                                    if let Err(block) = g(&head) {
                                        return Err(End::Blocked { head: Some(Box::new(head)), block });
                                    }
                                }
                                *approved = head.head_len;
                            }
                            Err(e) => {
                                let block = Block::with_note(reason::PARSE_FAILED, e.to_string());
                                return Err(End::Blocked { head: None, block });
                            }
                        }
                    }
                    if *approved > 0 {
                        match write_some(dst, &buf[..*approved]) {
                            Ok(Some(n)) => {
                                buf.drain(..n);
                                *approved -= n;
                                moved += n;
                                progress |= n > 0;
                            }
                            Ok(None) => {}
                            Err(e) => return Err(End::Error(e)),
                        }
                    }
                    if *awaiting && buf.len() > MAX_HEAD {
                        let note = "the client sent more than a head's worth before the upgrade was answered";
                        return Err(End::Blocked {
                            head: None,
                            block: Block::with_note(reason::PARSE_FAILED, note),
                        });
                    }
                    if !self.eof && *approved == 0 && buf.len() <= MAX_HEAD + REQUEST_READ {
                        // Into the spare capacity, which std reads into
                        // without zeroing it first: zeroing 64 KiB per read
                        // (a `resize`) was half of egret's CPU per kept-alive
                        // request. `Ok` short of the limit means end of stream.
                        let old = buf.len();
                        let r = (&mut &*src).take(REQUEST_READ as u64).read_to_end(buf);
                        let got = buf.len() - old;
                        match r {
                            Ok(n) if n < REQUEST_READ => {
                                self.eof = true;
                                progress = true;
                            }
                            Ok(_) => progress = true,
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => progress |= got > 0,
                            Err(e) => return Err(End::Error(e)),
                        }
                    }
                }
            }
            if let Buffer::Watch { buf, approved, promote } = &mut self.buf {
                if !self.eof && buf.len() <= MAX_HEAD + REQUEST_READ {
                    let old = buf.len();
                    let r = (&mut &*src).take(REQUEST_READ as u64).read_to_end(buf);
                    let got = buf.len() - old;
                    match r {
                        Ok(n) if n < REQUEST_READ => {
                            self.eof = true;
                            progress = true;
                        }
                        Ok(_) => progress = true,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => progress |= got > 0,
                        Err(e) => return Err(End::Error(e)),
                    }
                }
                // Interim 1xx heads pass (RFC 9110 §15.2); the first final
                // status decides.
                let decided = loop {
                    match parse_response_head(&buf[*approved..]) {
                        Ok(None) if !self.eof => break None,
                        Ok(Some((code, len))) if (100..200).contains(&code) && code != 101 => {
                            *approved += len
                        }
                        Ok(Some((101, _))) => break Some(Signal::Upgraded),
                        // A final answer, garbage, or the end of stream:
                        // not upgraded; the bytes go to the client as they are.
                        _ => break Some(Signal::NotUpgraded),
                    }
                };
                if let Some(sig) = decided {
                    let rest = std::mem::take(buf);
                    let promote = *promote;
                    self.buf = copy_of(rest, promote);
                    self.signal = Some(sig);
                    progress = true;
                } else if *approved > 0 {
                    match write_some(dst, &buf[..*approved]) {
                        Ok(Some(n)) => {
                            buf.drain(..n);
                            *approved -= n;
                            moved += n;
                            progress |= n > 0;
                        }
                        Ok(None) => {}
                        Err(e) => return Err(End::Error(e)),
                    }
                }
            }
            let drained = match &self.buf {
                Buffer::Pipe { queued, .. } => *queued == 0,
                Buffer::Copy { lo, hi, .. } => lo == hi,
                // An unfinished head left at end of stream is dropped.
                Buffer::Http { approved, .. } => *approved == 0,
                Buffer::Watch { .. } => false,
            };
            if self.eof && drained && !self.shut && !self.hold {
                // Half-close: the peer sees our end of stream and may
                // still answer.
                match dst.shutdown(Shutdown::Write) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::NotConnected => {}
                    Err(e) => return Err(End::Error(e)),
                }
                self.shut = true;
            }
            if !progress {
                return Ok(moved);
            }
        }
    }
}

/// A copy direction that first delivers `pending`.
fn copy_of(pending: Vec<u8>, promote: bool) -> Buffer {
    if pending.is_empty() {
        return Buffer::Copy { buf: None, lo: 0, hi: 0, moved: 0, promote };
    }
    let hi = pending.len();
    let mut b = pending;
    if b.len() < COPY_BUF {
        b.resize(COPY_BUF, 0);
    }
    Buffer::Copy { buf: Some(b.into_boxed_slice()), lo: 0, hi, moved: 0, promote }
}

/// A pipe for splice(2), or `None` (the caller keeps copying).
fn pipe_buffer(permit: Option<Box<dyn Any + Send>>) -> Option<Buffer> {
    match nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK) {
        Ok((r, w)) => {
            // The default size (64 KiB, 16 pages) on purpose: pipe pages
            // count against fs.pipe-user-pages-soft (16384 per user without
            // CAP_SYS_RESOURCE), past which new pipes get 2 pages. A
            // direction that turns out to carry bulk data grows its pipe
            // (see BULK_AFTER).
            let cap = fcntl(&w, FcntlArg::F_GETPIPE_SZ).map_or(65536, |n| n.max(4096) as usize);
            Some(Buffer::Pipe { r, w, queued: 0, cap, moved: 0, _permit: permit })
        }
        Err(e) => {
            log::debug!("pipe2 failed ({e}); relaying with a copy");
            None
        }
    }
}

/// Grows a bulk direction's pipe to BULK_PIPE, so each splice and poll
/// round moves more: about 15% less CPU per GiB than 64 KiB pipes. Past
/// the per-user pipe page budget (fs.pipe-user-pages-soft) the kernel
/// refuses and the pipe keeps its size.
fn grow(w: &OwnedFd, cap: usize) -> usize {
    match fcntl(w, FcntlArg::F_SETPIPE_SZ(BULK_PIPE as i32)) {
        Ok(n) => (n as usize).max(cap),
        Err(e) => {
            log::debug!("cannot grow a relay pipe to {BULK_PIPE} bytes: {e}");
            cap
        }
    }
}

/// A non-blocking read: `Ok(None)` when nothing is there yet.
fn read_some(mut s: &TcpStream, buf: &mut [u8]) -> io::Result<Option<usize>> {
    loop {
        match s.read(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

/// A non-blocking write: `Ok(None)` when the socket buffer is full.
fn write_some(mut s: &TcpStream, buf: &[u8]) -> io::Result<Option<usize>> {
    loop {
        match s.write(buf) {
            Ok(n) => return Ok(Some(n)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    //! The relay over real loopback sockets: test ↔ relay ↔ test.
    use super::state::BLOCK_GRACE;
    use super::*;
    use crate::proxy::http::Host;
    use std::net::TcpListener;

    /// How the relay ended, and the hosts the gate saw.
    type Outcome = (End, Stats, Vec<String>);

    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        for s in [&a, &b] {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        }
        (a, b)
    }

    /// (client end for the test, upstream end for the test, relay thread)
    fn start(
        limits: Limits,
        http: Option<Vec<u8>>,
    ) -> (TcpStream, TcpStream, std::thread::JoinHandle<Outcome>) {
        start_with(limits, http, true)
    }

    fn start_with(
        limits: Limits,
        http: Option<Vec<u8>>,
        use_splice: bool,
    ) -> (TcpStream, TcpStream, std::thread::JoinHandle<Outcome>) {
        let (client, relay_client) = pair();
        let (relay_up, upstream) = pair();
        let t = std::thread::spawn(move || {
            let mut hosts = Vec::new();
            let mut gate = |h: &RequestHead| {
                hosts.push(format!("{:?}", h.host));
                if h.host == Host::Name("blocked.example".into()) {
                    Err(Block::new("not-allowlisted"))
                } else {
                    Ok(())
                }
            };
            let first = http
                .as_ref()
                .map(|p| crate::proxy::http::parse_head(p).expect("a test head").expect("a whole test head"));
            let http = http.map(|pending| Http {
                pending,
                first: first.as_ref().expect("parsed above"),
                gate: &mut gate as &mut Gate<'_>,
            });
            let (end, stats) = relay_with(&relay_client, &relay_up, http, &limits, use_splice);
            (end, stats, hosts)
        });
        (client, upstream, t)
    }

    fn limits(idle_ms: u64, lifetime_ms: Option<u64>) -> Limits {
        Limits {
            idle: Duration::from_millis(idle_ms),
            deadline: lifetime_ms.map(|ms| Instant::now() + Duration::from_millis(ms)),
            head: None,
            pipes: None,
        }
    }

    #[test]
    fn half_close_is_propagated_both_ways() {
        for use_splice in [true, false] {
            half_close(use_splice);
        }
    }

    fn half_close(use_splice: bool) {
        let (mut client, mut upstream, t) = start_with(limits(10_000, None), None, use_splice);
        client.write_all(b"ping").unwrap();
        client.shutdown(Shutdown::Write).unwrap();
        let mut got = Vec::new();
        // read_to_end returns only once the relay passed on our EOF.
        upstream.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"ping");
        // The other direction still works after the half-close.
        upstream.write_all(b"pong").unwrap();
        drop(upstream);
        got.clear();
        client.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"pong");
        let (end, stats, _) = t.join().unwrap();
        assert!(matches!(end, End::Done), "{end:?}");
        assert_eq!((stats.up, stats.down), (4, 4));
        // A few bytes never need a pipe.
        assert!(!stats.spliced);
    }

    #[test]
    fn a_bulk_pipe_grows() {
        let (_r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
        let cap = fcntl(&w, FcntlArg::F_GETPIPE_SZ).unwrap() as usize;
        assert!(cap < BULK_PIPE);
        assert_eq!(grow(&w, cap), BULK_PIPE);
        assert_eq!(fcntl(&w, FcntlArg::F_GETPIPE_SZ).unwrap() as usize, BULK_PIPE);
    }

    #[test]
    fn bulk_moves_exactly_spliced_and_copied() {
        for use_splice in [true, false] {
            bulk_moves_exactly(use_splice);
        }
    }

    /// 3 MB each way at once: through the copy, the promotion to a pipe
    /// and its growth (with splice), or the copy only.
    fn bulk_moves_exactly(use_splice: bool) {
        let stats = bulk_moves_exactly_with(limits(10_000, None), use_splice);
        assert_eq!(stats.spliced, use_splice);
    }

    #[test]
    fn a_pipe_is_taken_only_with_a_permit_and_gives_it_back() {
        use std::sync::atomic::{AtomicUsize, Ordering};
        // Refused: both directions copy, and every byte still moves.
        let mut l = limits(10_000, None);
        l.pipes = Some(Arc::new(|| None));
        assert!(!bulk_moves_exactly_with(l, true).spliced);
        // Granted: a permit per direction, held while its pipe lives.
        struct Held(Arc<AtomicUsize>);
        impl Drop for Held {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        let (held, asked) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let mut l = limits(10_000, None);
        let (h, a) = (held.clone(), asked.clone());
        l.pipes = Some(Arc::new(move || {
            a.fetch_add(1, Ordering::SeqCst);
            h.fetch_add(1, Ordering::SeqCst);
            Some(Box::new(Held(h.clone())) as Box<dyn Any + Send>)
        }));
        assert!(bulk_moves_exactly_with(l, true).spliced);
        assert_eq!(asked.load(Ordering::SeqCst), 2, "one permit each way");
        assert_eq!(held.load(Ordering::SeqCst), 0, "given back with the pipes");
    }

    fn bulk_moves_exactly_with(limits: Limits, use_splice: bool) -> Stats {
        let (mut client, mut upstream, t) = start_with(limits, None, use_splice);
        let data: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let (sent_up, sent_down) = (data.clone(), data.iter().rev().copied().collect::<Vec<u8>>());
        let expect_down = sent_down.clone();
        let mut up_writer = upstream.try_clone().unwrap();
        let down = std::thread::spawn(move || {
            up_writer.write_all(&sent_down).unwrap();
            up_writer.shutdown(Shutdown::Write).unwrap();
        });
        let mut client_reader = client.try_clone().unwrap();
        let got_down = std::thread::spawn(move || {
            let mut got = Vec::new();
            client_reader.read_to_end(&mut got).unwrap();
            got
        });
        let writer = std::thread::spawn(move || {
            client.write_all(&sent_up).unwrap();
            client.shutdown(Shutdown::Write).unwrap();
            client
        });
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).unwrap();
        assert!(got == data, "up: {} bytes, expected {}", got.len(), data.len());
        down.join().unwrap();
        let got_down = got_down.join().unwrap();
        assert!(got_down == expect_down, "down: {} bytes, expected {}", got_down.len(), expect_down.len());
        drop(upstream);
        drop(writer.join().unwrap());
        let (end, stats, _) = t.join().unwrap();
        assert!(matches!(end, End::Done), "{end:?}");
        assert_eq!((stats.up, stats.down), (data.len() as u64, data.len() as u64));
        stats
    }

    #[test]
    fn idle_connection_is_closed() {
        let (_client, _upstream, t) = start(limits(200, None), None);
        let start = Instant::now();
        let (end, _, _) = t.join().unwrap();
        assert!(matches!(end, End::Idle), "{end:?}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[test]
    fn traffic_resets_the_idle_timer_but_not_the_lifetime() {
        let (mut client, mut upstream, t) = start(limits(400, Some(1500)), None);
        let start = Instant::now();
        let mut buf = [0u8; 1];
        // Keep talking more often than the idle timeout.
        let mut ok = 0;
        while start.elapsed() < Duration::from_secs(5) {
            if client.write_all(b"x").is_err() || upstream.read_exact(&mut buf).is_err() {
                break;
            }
            ok += 1;
            std::thread::sleep(Duration::from_millis(100));
        }
        let (end, _, _) = t.join().unwrap();
        assert!(matches!(end, End::Lifetime), "{end:?}");
        assert!(ok >= 5, "traffic kept it alive past the idle timeout ({ok} round trips)");
    }

    #[test]
    fn second_http_request_goes_through_the_gate() {
        let first = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n".to_vec();
        let post = b"POST /x HTTP/1.1\r\nHost: a.example\r\nContent-Length: 3\r\n\r\nabc";
        let (mut client, mut upstream, t) = start(limits(10_000, None), Some(first.clone()));
        client.write_all(post).unwrap();
        client.write_all(b"GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n").unwrap();
        // Upstream gets the allowed requests, then our end of stream, and
        // nothing of the refused one.
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).unwrap();
        let mut want = first;
        want.extend_from_slice(post);
        assert_eq!(String::from_utf8_lossy(&got), String::from_utf8_lossy(&want));
        drop(upstream);
        let (end, _, hosts) = t.join().unwrap();
        match end {
            End::Blocked { head: Some(h), block } => {
                assert_eq!(h.host, Host::Name("blocked.example".into()));
                assert_eq!(block.reason, "not-allowlisted");
            }
            other => panic!("{other:?}"),
        }
        // The first head was decided by the caller, not the gate.
        assert_eq!(hosts, vec!["Name(\"a.example\")", "Name(\"blocked.example\")"]);
    }

    #[test]
    fn answers_before_a_refused_pipelined_request_still_arrive() {
        let first = b"GET /1 HTTP/1.1\r\nHost: a.example\r\n\r\n".to_vec();
        let (mut client, mut upstream, t) = start(limits(10_000, None), Some(first.clone()));
        client.write_all(b"GET /2 HTTP/1.1\r\nHost: blocked.example\r\n\r\n").unwrap();
        let mut got = Vec::new();
        upstream.read_to_end(&mut got).unwrap();
        assert_eq!(got, first);
        // The answer to /1 comes after the refusal and must still arrive.
        upstream.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok").unwrap();
        drop(upstream);
        let mut answer = vec![0u8; 40];
        client.read_exact(&mut answer).unwrap();
        assert_eq!(&answer[..], b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok");
        let (end, _, _) = t.join().unwrap();
        assert!(matches!(end, End::Blocked { .. }), "{end:?}");
    }

    const WS_HANDSHAKE: &[u8] = b"GET /chat HTTP/1.1\r\nHost: a.example\r\nUpgrade: websocket\r\n\
        Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n";
    const SWITCHING: &[u8] =
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
        Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";

    /// Reads exactly `n` bytes.
    fn read_n(s: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        s.read_exact(&mut v).unwrap();
        v
    }

    /// Issue 16, item 8: after a 101 to the (checked) handshake, frames
    /// pass both ways untouched, however little they look like HTTP.
    #[test]
    fn a_websocket_handshake_answered_101_becomes_an_opaque_relay() {
        for interim in [&b""[..], b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>\r\n\r\n"] {
            let (mut client, mut upstream, t) = start(limits(10_000, None), Some(WS_HANDSHAKE.to_vec()));
            assert_eq!(read_n(&mut upstream, WS_HANDSHAKE.len()), WS_HANDSHAKE);
            let mut answer = interim.to_vec();
            answer.extend_from_slice(SWITCHING);
            // A server frame right behind the head, in the same segment.
            answer.extend_from_slice(b"\x81\x05hello");
            upstream.write_all(&answer).unwrap();
            assert_eq!(read_n(&mut client, answer.len()), answer);
            // A masked client frame: nothing like an HTTP head.
            let frame = b"\x81\x84\x01\x02\x03\x04\x70\x6b\x6d\x63";
            client.write_all(frame).unwrap();
            assert_eq!(read_n(&mut upstream, frame.len()), frame);
            // Binary both ways, then close.
            let blob: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
            upstream.write_all(&blob).unwrap();
            assert_eq!(read_n(&mut client, blob.len()), blob);
            client.shutdown(Shutdown::Write).unwrap();
            drop(upstream);
            let (end, stats, hosts) = t.join().unwrap();
            assert!(matches!(end, End::Done), "{end:?}");
            assert!(stats.upgraded);
            assert!(hosts.is_empty(), "no later head was ever parsed: {hosts:?}");
        }
    }

    /// Any other answer to the handshake: HTTP goes on, every later
    /// request still goes through the gate.
    #[test]
    fn a_refused_handshake_keeps_checking_http() {
        let (mut client, mut upstream, t) = start(limits(10_000, None), Some(WS_HANDSHAKE.to_vec()));
        assert_eq!(read_n(&mut upstream, WS_HANDSHAKE.len()), WS_HANDSHAKE);
        // The client pipelines a request before the answer: held, not sent.
        client.write_all(b"GET / HTTP/1.1\r\nHost: blocked.example\r\n\r\n").unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let refusal = b"HTTP/1.1 426 Upgrade Required\r\nContent-Length: 0\r\n\r\n";
        upstream.write_all(refusal).unwrap();
        assert_eq!(read_n(&mut client, refusal.len()), refusal);
        // The held request is now checked: refused, never written upstream.
        let mut rest = Vec::new();
        upstream.read_to_end(&mut rest).unwrap();
        assert!(rest.is_empty(), "{}", String::from_utf8_lossy(&rest));
        drop(upstream);
        let (end, stats, hosts) = t.join().unwrap();
        assert!(matches!(end, End::Blocked { .. }), "{end:?}");
        assert!(!stats.upgraded);
        assert_eq!(hosts, vec!["Name(\"blocked.example\")"]);
    }

    /// A handshake that is not the first request is not followed (answers
    /// to earlier requests may still be on their way): frames after its
    /// 101 are not HTTP and end the connection.
    #[test]
    fn a_later_handshake_is_not_followed() {
        let first = b"GET / HTTP/1.1\r\nHost: a.example\r\n\r\n".to_vec();
        let (mut client, mut upstream, t) = start(limits(10_000, None), Some(first.clone()));
        client.write_all(WS_HANDSHAKE).unwrap();
        let mut want = first;
        want.extend_from_slice(WS_HANDSHAKE);
        assert_eq!(read_n(&mut upstream, want.len()), want);
        upstream.write_all(SWITCHING).unwrap();
        assert_eq!(read_n(&mut client, SWITCHING.len()), SWITCHING);
        client.write_all(b"\x81\x84\x01\x02\x03\x04\x70\x6b\x6d\x63").unwrap();
        let (end, stats, _) = t.join().unwrap();
        match end {
            End::Blocked { block, .. } => assert_eq!(block.reason, reason::PARSE_FAILED),
            other => panic!("{other:?}"),
        }
        assert!(!stats.upgraded);
    }

    #[test]
    fn a_silent_upstream_after_a_refusal_is_cut_after_the_grace() {
        let first = b"GET /1 HTTP/1.1\r\nHost: a.example\r\n\r\n".to_vec();
        let (mut client, _upstream, t) = start(limits(60_000, None), Some(first));
        client.write_all(b"GET /2 HTTP/1.1\r\nHost: blocked.example\r\n\r\n").unwrap();
        let start = Instant::now();
        let (end, _, _) = t.join().unwrap();
        assert!(matches!(end, End::Blocked { .. }), "{end:?}");
        assert!(start.elapsed() < BLOCK_GRACE + Duration::from_secs(3), "{:?}", start.elapsed());
    }
}
