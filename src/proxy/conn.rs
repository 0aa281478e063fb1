//! One proxied connection, on its own thread: original destination →
//! read the ClientHello / request head (bounded, with the header timeout)
//! → decide → refuse (TLS: reset; HTTP: 403) or connect upstream with the
//! bypass mark, replay what was read, and relay.
//!
//! Shell: sockets and the clock; the parsers and [`decide`] are pure.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::http::{self, RequestHead};
use super::registry;
use super::relay::{self, End, Limits};
use super::tls;
use super::verdict::{self, Peeked, Rules, Verdict};
use super::{reason, Block, Kind, Shared};
use crate::events::{Action, Event};
use crate::listen::{original_dst, reset};
use crate::outbound;

/// A connection admitted by [`admit`]: where it was going, whose it is,
/// and the slot and descriptor it holds until it ends.
pub(crate) struct Admitted {
    orig: SocketAddr,
    who: Option<crate::peer::Owner>,
    _slot: crate::fair::Ticket<crate::peer::Client>,
    _client_fd: crate::fair::Ticket<crate::peer::Client>,
}

/// Decides, in the accept loop and before any thread exists for it,
/// whether a connection just accepted gets a slot: its original
/// destination (refused when there is none, or it is egret itself), its
/// owner, and the owner's share of the slots and descriptors. `None`: the
/// connection was refused (reset, with its event). A bound counted before
/// the owner is known would be filled by one client's connections
/// waiting to be refused, reopened as fast as they are, and another
/// client's connection refused with them (escape_210).
pub(crate) fn admit(
    shared: &Shared,
    id: u64,
    kind: Kind,
    client: &TcpStream,
    peer: SocketAddr,
) -> Option<Admitted> {
    let local = match client.local_addr() {
        Ok(a) => a,
        Err(e) => {
            log::debug!("conn-{id} {peer}: no local address: {e}");
            return None;
        }
    };
    // RFC-less but essential: without a redirect there is no destination
    // to go to, and a destination that is egret itself would loop.
    let orig = match original_dst(client, local) {
        Some(d) if !is_self(shared, d, local) => d,
        other => {
            let dst = other.unwrap_or(local);
            log::debug!("conn-{id} {peer}: original destination {dst} is egret itself; refused");
            let who = crate::peer::lookup(peer, dst);
            let ev =
                event(shared, kind, Action::Blocked, (peer, dst, who)).with_reason(reason::SELF_DESTINATION);
            shared.emitter.emit(ev);
            reset(client);
            return None;
        }
    };
    // Who is asking: the owner of the client's socket (containers of a
    // pod share its address), for the per-client share of the slots and
    // for the events.
    let who = crate::peer::lookup(peer, orig);
    let over = |what: &str, block: super::Block| {
        log::debug!("conn-{id} {peer}: {who:?} over its share of the {what}; reset");
        let ev = event(shared, kind, Action::Blocked, (peer, orig, who));
        shared.emitter.emit(verdict::blocked(ev, kind, &block));
        shared.registry.counters.blocked[registry::slot(kind)].fetch_add(1, Ordering::Relaxed);
        reset(client);
        None
    };
    let _slot = match shared.admission.admit(crate::peer::Client::of(who)) {
        Ok(t) => t,
        Err(r) => return over("connection slots", verdict::no_slot(r)),
    };
    // The client's socket is one of egret's descriptors: the client's
    // share of them binds before they run out (under a low open-file
    // limit, well before MAX_CONNECTIONS). The upstream's, taken in
    // [`handle`], is another.
    let _client_fd = match shared.descriptors.admit(crate::peer::Client::of(who)) {
        Ok(t) => t,
        Err(r) => return over("descriptors", verdict::no_descriptor(r)),
    };
    Some(Admitted { orig, who, _slot, _client_fd })
}

/// Handles one connection [`admit`] let in to the end. Never panics on
/// traffic.
pub(crate) fn handle(shared: &Shared, id: u64, kind: Kind, client: TcpStream, peer: SocketAddr, a: Admitted) {
    let started = Instant::now();
    let s = &shared.settings;
    let (orig, who) = (a.orig, a.who);
    let flow = (peer, orig, who);

    let mut buf = Vec::with_capacity(4096);
    let counters = &shared.registry.counters;
    // `None`: what came first could not be read as a hello or head, and
    // audit mode relays it as it is.
    let (peeked, mut ev, name) = match read_head(&client, kind, &mut buf, started + s.header_timeout) {
        Ok(peeked) => {
            let policy = shared.policy.current();
            let (decided, shown) = verdict::first(&peeked, orig, &rules(shared, &policy, flow));
            let ev = shown.on(event(shared, kind, Action::Allowed, flow));
            match decided {
                Verdict::Allow(n) => {
                    log::debug!("conn-{id} {peer}: {} to {orig} allowed", shown.what());
                    shared.emitter.emit(ev.clone());
                    counters.allowed[registry::slot(kind)].fetch_add(1, Ordering::Relaxed);
                    (Some(peeked), ev, n)
                }
                Verdict::Deny(block) if policy.audit() => {
                    audit(shared, id, kind, flow, ev.clone(), &block);
                    let name =
                        if shown.what().is_empty() { orig.ip().to_string() } else { shown.what().to_owned() };
                    (Some(peeked), ev, name)
                }
                Verdict::Deny(block) => return refuse(shared, id, kind, &client, flow, Some(ev), block),
            }
        }
        Err(block) if shared.policy.current().audit() => {
            let ev = event(shared, kind, Action::Allowed, flow);
            audit(shared, id, kind, flow, ev.clone(), &block);
            (None, ev, orig.ip().to_string())
        }
        Err(block) => return refuse(shared, id, kind, &client, flow, None, block),
    };

    // And so is the upstream's socket.
    let _upstream_fd = match shared.descriptors.admit(crate::peer::Client::of(who)) {
        Ok(t) => t,
        Err(r) => return refuse(shared, id, kind, &client, flow, Some(ev), verdict::no_descriptor(r)),
    };
    // Non-blocking from the start: the relay wants it so.
    let upstream = match outbound::tcp_nonblocking(orig, (s.mark != 0).then_some(s.mark), s.connect_timeout) {
        Ok(u) => u,
        Err(e) => {
            log::debug!("conn-{id} {peer}: upstream {orig}: {e}");
            match kind {
                Kind::Https => reset(&client),
                Kind::Http => {
                    respond(&client, "502 Bad Gateway", &format!("egret: cannot reach {orig}: {e}\n"))
                }
            }
            return;
        }
    };
    // Registered before the re-check below, so a reload either finds this
    // connection in the registry or has already swapped the policy that
    // the re-check reads: an allow decided under a revoked policy cannot
    // slip through between the two.
    let (client, upstream) = (Arc::new(client), Arc::new(upstream));
    let chain = shared.check.chain(&name);
    let entry = shared.registry.track(id, kind, (peer, orig), (&name, chain.clone()), &client, &upstream);
    let now_in_force = shared.policy.current();
    if !registry::still_allowed(&now_in_force, &name, orig) {
        reset(&upstream);
        let block = Block::new(registry::POLICY_REVOKED);
        return refuse(shared, id, kind, &client, flow, Some(ev), block);
    }
    // The chain too: a reload that came during a slow check lookup was
    // not in the policy that judged it (round 10, escape_183).
    let denied = (!now_in_force.audit()).then(|| crate::dns::filter::denied_in_kept(&chain, &now_in_force));
    if let Some((link, _)) = denied.flatten() {
        reset(&upstream);
        let block =
            Block::with_note(reason::DENYLISTED, format!("{name} resolves through denylisted {link}"));
        return refuse(shared, id, kind, &client, flow, Some(ev), block);
    }
    let limits = Limits {
        idle: s.idle_timeout,
        deadline: s.max_lifetime.map(|d| started + d),
        head: Some(s.header_timeout),
        pipes: Some(pipe_permit(shared, who)),
    };
    let (end, stats) = match peeked {
        Some(Peeked::Hello(_)) | None => {
            // Replay the hello (and anything after it) before relaying.
            if let Err(e) = write_all_nonblocking(&upstream, &buf, Instant::now() + s.idle_timeout) {
                log::debug!("conn-{id} {peer}: replaying the hello to {orig}: {e}");
                reset(&client);
                return;
            }
            relay::relay_nonblocking(&client, &upstream, None, &limits)
        }
        Some(Peeked::Head(first)) => {
            // Every later request on this connection is decided the same
            // way; an allowed one is logged when its host changes.
            let mut last_host = first.host.clone();
            let mut gate = |head: &RequestHead| -> Result<(), Block> {
                // The current policy: a reload applies to the next request.
                let policy = shared.policy.current();
                let name = match verdict::request(head, orig, &rules(shared, &policy, flow)) {
                    Verdict::Allow(n) => n,
                    Verdict::Deny(block) if policy.audit() => {
                        let shown = verdict::request_shown(head);
                        audit(shared, id, kind, flow, shown.on(ev.clone()), &block);
                        last_host = head.host.clone();
                        return Ok(());
                    }
                    Verdict::Deny(block) => return Err(block),
                };
                if head.host != last_host {
                    last_host = head.host.clone();
                    entry.set_name(&name, shared.check.chain(&name));
                    ev = verdict::request_shown(head).on(ev.clone());
                    shared.emitter.emit(ev.clone());
                }
                Ok(())
            };
            let http = relay::Http { pending: std::mem::take(&mut buf), first: &first, gate: &mut gate };
            relay::relay_nonblocking(&client, &upstream, Some(http), &limits)
        }
    };
    drop(entry);
    counters.bytes_up.fetch_add(stats.up, Ordering::Relaxed);
    counters.bytes_down.fetch_add(stats.down, Ordering::Relaxed);
    log::debug!(
        "conn-{id} {peer}: closed ({end:?}), {} bytes up, {} down, splice={}{}",
        stats.up,
        stats.down,
        stats.spliced,
        if stats.upgraded { ", websocket after 101" } else { "" }
    );
    match end {
        End::Blocked { head, block } => {
            // The upstream must not see another byte; cut it first.
            reset(&upstream);
            drop(upstream);
            let ev = head.map(|h| verdict::request_shown(&h).on(event(shared, kind, Action::Blocked, flow)));
            refuse(shared, id, kind, &client, flow, ev, block);
        }
        End::Error(_) => {
            // Propagate a reset to both sides.
            reset(&client);
            reset(&upstream);
        }
        End::Done | End::Idle | End::Lifetime => {}
        End::HeadTimeout => {
            log::debug!("conn-{id} {peer}: a later request head took over HEADER_TIMEOUT; closed")
        }
    }
}

/// Two more of the client's descriptor tickets for a splice pipe, or
/// none: a client at its share copies rather than spend descriptors
/// another client needs.
fn pipe_permit(shared: &Shared, who: Option<crate::peer::Owner>) -> super::relay::PipePermit {
    let fds = shared.descriptors.clone();
    Arc::new(move || {
        let k = crate::peer::Client::of(who);
        let a = fds.admit(k).ok()?;
        let b = fds.admit(k).ok()?;
        Some(Box::new((a, b)) as Box<dyn std::any::Any + Send>)
    })
}

/// A connection: the client's address, its original destination, the
/// owner of the client's socket.
type Flow = (SocketAddr, SocketAddr, Option<crate::peer::Owner>);

fn event(shared: &Shared, kind: Kind, action: Action, (src, dst, who): Flow) -> Event {
    shared.emitter.event(kind.component(), action).with_flow(src, dst, "TCP").with_owner(who)
}

/// The decisions' inputs under `policy`.
fn rules<'a>(shared: &'a Shared, policy: &'a crate::policy::Policy, flow: Flow) -> Rules<'a> {
    let s = &shared.settings;
    let asking = crate::resolve::Asking {
        client: crate::peer::Client::of(flow.2),
        rule: None,
        policy: None,
        descriptors: Some(&shared.descriptors),
    };
    Rules { policy, verify: s.verify_destination, guard: &s.guard, check: &*shared.check, asking }
}

/// Audit mode: the event a refusal would have had, as `AUDIT`; the
/// connection goes on.
fn audit(shared: &Shared, id: u64, kind: Kind, (peer, orig, _): Flow, ev: Event, block: &Block) {
    let ev = verdict::audited(ev, kind, block);
    let what = ev.https.clone().or(ev.http_host.clone()).unwrap_or_default();
    log::debug!(
        "conn-{id} {peer}: {what} to {orig} would be blocked ({}); audit mode lets it pass",
        block.reason
    );
    shared.emitter.emit(ev);
}

/// Refuses: an event, then a reset (TLS) or a 403 (HTTP).
fn refuse(
    shared: &Shared,
    id: u64,
    kind: Kind,
    client: &TcpStream,
    flow: Flow,
    ev: Option<Event>,
    block: Block,
) {
    let (peer, orig, _) = flow;
    let ev = verdict::blocked(ev.unwrap_or_else(|| event(shared, kind, Action::Blocked, flow)), kind, &block);
    let what = ev.https.clone().or(ev.http_host.clone()).unwrap_or_default();
    log::debug!(
        "conn-{id} {peer}: {what} to {orig} blocked: {}{}",
        block.reason,
        block.note.as_deref().map(|n| format!(" ({n})")).unwrap_or_default()
    );
    shared.emitter.emit(ev);
    shared.registry.counters.blocked[registry::slot(kind)].fetch_add(1, Ordering::Relaxed);
    match kind {
        Kind::Https => reset(client),
        Kind::Http => forbidden(client, &what, block.reason),
    }
}

/// `403` with a short text body naming host and reason, then close.
fn forbidden(client: &TcpStream, host: &str, why: &str) {
    let host = if host.is_empty() { "(none)" } else { host };
    respond(client, "403 Forbidden", &format!("egret: blocked request to {host}: {why}\n"));
}

/// A plain-text response, then a graceful close.
fn respond(client: &TcpStream, status: &str, body: &str) {
    let resp = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = client.set_nonblocking(false);
    let _ = client.set_write_timeout(Some(Duration::from_secs(2)));
    let mut c = client;
    if c.write_all(resp.as_bytes()).is_err() {
        return reset(client);
    }
    let _ = client.shutdown(Shutdown::Write);
    // Drain briefly so closing with unread bytes does not turn into a
    // reset that destroys the 403 before the client reads it.
    let _ = client.set_read_timeout(Some(Duration::from_millis(500)));
    let mut sink = [0u8; 4096];
    for _ in 0..64 {
        match c.read(&mut sink) {
            Ok(n) if n > 0 => continue,
            _ => break,
        }
    }
}

/// The connection was not redirected (its original destination is the
/// listener it reached), or was sent to one of egret's own ports on a
/// local address.
fn is_self(shared: &Shared, orig: SocketAddr, local: SocketAddr) -> bool {
    let s = &shared.settings;
    orig == local
        || ((orig.port() == s.http_port || orig.port() == s.https_port)
            && (orig.ip().is_loopback() || orig.ip().is_unspecified() || s.listen.contains(&orig.ip())))
}

/// Reads until the parser has a complete hello / head, the limit, or the
/// deadline. Traffic problems come back as a [`Block`].
fn read_head(client: &TcpStream, kind: Kind, buf: &mut Vec<u8>, deadline: Instant) -> Result<Peeked, Block> {
    read_head_with(client, &mut HeadParser::new(kind), buf, deadline)
}

/// The incremental parser of what a connection sends first. Re-parsing the
/// whole buffer after every read made a client trickling its head one byte
/// at a time cost quadratic CPU until the header timeout; these parse only
/// when the new bytes can change the answer (see [`tls::Progress`] and
/// [`http::HeadProgress`]), so the work is linear in the bytes received.
enum HeadParser {
    Tls(tls::Progress),
    Http(http::HeadProgress),
}

impl HeadParser {
    fn new(kind: Kind) -> Self {
        match kind {
            Kind::Https => HeadParser::Tls(tls::Progress::default()),
            Kind::Http => HeadParser::Http(http::HeadProgress::default()),
        }
    }

    /// After more bytes arrived; `last`: no more will come, so decide on
    /// what is there (the precise reason instead of a timeout).
    fn poll(&mut self, buf: &[u8], last: bool) -> Result<Option<Peeked>, Block> {
        match self {
            HeadParser::Tls(p) => p
                .poll(buf)
                .map(|o| o.map(Peeked::Hello))
                .map_err(|e| Block::with_note(reason::PEEK_FAILED, e.to_string())),
            HeadParser::Http(p) => {
                let r = if last { p.finish(buf) } else { p.poll(buf) };
                r.map(|o| o.map(Peeked::Head)).map_err(http_block)
            }
        }
    }

    /// (full parses, bytes looked at) so far.
    #[cfg(test)]
    fn cost(&self) -> (usize, usize) {
        match self {
            HeadParser::Tls(p) => (p.parses(), p.work()),
            HeadParser::Http(p) => (p.parses(), p.work()),
        }
    }

    /// The parser's verdict on the bytes so far, or `block` when it has none.
    fn give_up(&mut self, buf: &[u8], block: Block) -> Result<Peeked, Block> {
        self.poll(buf, true)?.ok_or(block)
    }
}

/// [`read_head`] with the parser passed in (the tests look at its cost).
fn read_head_with(
    client: &TcpStream,
    parser: &mut HeadParser,
    buf: &mut Vec<u8>,
    deadline: Instant,
) -> Result<Peeked, Block> {
    // The parsers decide (a value or an error) before these many bytes:
    // TLS by the record after MAX_BUFFER, HTTP past MAX_HEAD.
    let cap = match parser {
        HeadParser::Tls(_) => tls::MAX_BUFFER + tls::MAX_RECORD_WIRE,
        HeadParser::Http(_) => http::MAX_HEAD + 1,
    };
    let mut c = client;
    // Read into a scratch buffer zeroed once (on the heap: connection
    // threads have small stacks), not by growing `buf` and zeroing 16 KiB
    // per read (per byte, for a trickling client).
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        if let Some(p) = parser.poll(buf, false)? {
            return Ok(p);
        }
        let now = Instant::now();
        if now >= deadline {
            return parser.give_up(buf, Block::new(reason::HEADER_TIMEOUT));
        }
        let _ = client.set_read_timeout(Some((deadline - now).max(Duration::from_millis(1))));
        let old = buf.len();
        if old >= cap {
            let block = Block::with_note(reason::PEEK_FAILED, format!("no complete head in {old} bytes"));
            return parser.give_up(buf, block);
        }
        let want = (cap - old).min(chunk.len());
        let r = c.read(&mut chunk[..want]);
        match r {
            Ok(0) => {
                let block =
                    Block::with_note(reason::PEEK_FAILED, "client closed before the head was complete");
                return parser.give_up(buf, block);
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {
                return parser.give_up(buf, Block::new(reason::HEADER_TIMEOUT))
            }
            Err(e) => return Err(Block::with_note(reason::PEEK_FAILED, e.to_string())),
        }
    }
}

fn http_block(e: http::HttpError) -> Block {
    let r = match &e {
        http::HttpError::MissingHost => reason::NO_HOST,
        http::HttpError::HostMismatch { .. } => reason::HOST_MISMATCH,
        http::HttpError::InvalidHost(_) => reason::INVALID_NAME,
        // g0efilter's value for a request it could not parse.
        _ => reason::PARSE_FAILED,
    };
    Block::with_note(r, e.to_string())
}

/// Writes all of `buf` to the non-blocking `s` by `deadline` (a hello
/// fits the socket's buffer: one `write`, no timeout to set).
fn write_all_nonblocking(s: &TcpStream, mut buf: &[u8], deadline: Instant) -> io::Result<()> {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    let mut w = s;
    while !buf.is_empty() {
        match w.write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    return Err(io::ErrorKind::TimedOut.into());
                }
                let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
                let mut fds = [PollFd::new(s.as_fd(), PollFlags::POLLOUT)];
                match poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)) {
                    Ok(_) | Err(nix::errno::Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proxy::tls::tests::{big_hello, hello_msg, records, sni_ext};
    use std::net::TcpListener;

    /// The one-shot parsers' verdict on all of `input`, as the shell sees it.
    fn one_shot(kind: Kind, input: &[u8]) -> Result<Option<Peeked>, Block> {
        match kind {
            Kind::Https => tls::parse(input)
                .map(|o| o.map(Peeked::Hello))
                .map_err(|e| Block::with_note(reason::PEEK_FAILED, e.to_string())),
            Kind::Http => http::parse_head(input).map(|o| o.map(Peeked::Head)).map_err(http_block),
        }
    }

    fn http_head(headers: usize) -> Vec<u8> {
        let mut h = b"GET /index.html HTTP/1.1\r\nHost: allowed.test\r\n".to_vec();
        for i in 0..headers {
            h.extend_from_slice(format!("X-Filler-{i}: {}\r\n", "v".repeat(40)).as_bytes());
        }
        h.extend_from_slice(b"\r\n");
        h
    }

    /// (what, kind, input): complete heads a client may trickle.
    fn complete_cases() -> Vec<(&'static str, Kind, Vec<u8>)> {
        let mut crlf_first = b"\r\n".repeat(2000);
        crlf_first.extend_from_slice(&http_head(3));
        let tiny_records = records(&hello_msg(&[sni_ext(b"allowed.test")]), 1);
        vec![
            ("http head of 6 KB", Kind::Http, http_head(100)),
            ("http head after 4 KB of blank lines", Kind::Http, crlf_first),
            ("post-quantum hello of 2 KB", Kind::Https, big_hello("allowed.test", 1216)),
            ("hello in one-byte records", Kind::Https, tiny_records),
        ]
    }

    /// Fed one byte at a time, each head is found on its last byte, as by
    /// the one-shot parser, while the parsers' work stays linear: at most
    /// about log2(n) full parses and a few times n bytes looked at. The
    /// old loop parsed every prefix: n full parses, n²/2 bytes.
    #[test]
    fn trickled_heads_cost_linear_work() {
        for (what, kind, input) in complete_cases() {
            let n = input.len();
            let mut parser = HeadParser::new(kind);
            let mut buf = Vec::new();
            for (i, &b) in input.iter().enumerate() {
                buf.push(b);
                let got = parser.poll(&buf, false).unwrap_or_else(|e| panic!("{what}: byte {i}: {e:?}"));
                if i + 1 < n {
                    assert_eq!(got, None, "{what}: complete at byte {i} of {n}");
                } else {
                    assert_eq!(got, one_shot(kind, &input).unwrap(), "{what}: not found on its last byte");
                }
            }
            let (parses, work) = parser.cost();
            let log2 = usize::BITS - n.leading_zeros();
            assert!(parses <= log2 as usize + 2, "{what}: {parses} full parses for {n} bytes");
            assert!(work <= 4 * n, "{what}: {work} bytes looked at for {n} bytes");
        }
    }

    /// Inputs the parsers refuse: trickled, the refusal comes before the
    /// input ends or when the shell gives up on it, and says what the
    /// one-shot parser says about the whole.
    #[test]
    fn trickled_garbage_gets_the_one_shot_verdict() {
        let mut big = b"GET / HTTP/1.1\r\nHost: a.test\r\nX: ".to_vec();
        big.extend(std::iter::repeat(b'a').take(http::MAX_HEAD));
        let cases: Vec<(&str, Kind, Vec<u8>)> = vec![
            ("nul in the method", Kind::Http, b"GE\0T / HTTP/1.1\r\n".to_vec()),
            ("bad header byte, no blank line", Kind::Http, b"GET / HTTP/1.1\r\nHo\x01st: a\r\n".to_vec()),
            ("no host", Kind::Http, b"GET / HTTP/1.1\r\nAccept: */*\r\n\r\n".to_vec()),
            ("CR CR before the request", Kind::Http, b"\r\r\r\nGET / HTTP/1.1\r\n".to_vec()),
            ("head over MAX_HEAD", Kind::Http, big),
            ("plain http on 443", Kind::Https, b"GET / HTTP/1.1\r\n".to_vec()),
            ("not a client hello", Kind::Https, records(&[2, 0, 0, 1, 0], 16)),
        ];
        for (what, kind, input) in cases {
            let want = one_shot(kind, &input);
            assert!(want.is_err(), "{what}: the case should be refused: {want:?}");
            let mut parser = HeadParser::new(kind);
            let mut buf = Vec::new();
            let mut got = None;
            for &b in &input {
                buf.push(b);
                if let Err(e) = parser.poll(&buf, false) {
                    got = Some(e);
                    break;
                }
            }
            let got = got.unwrap_or_else(|| {
                parser.give_up(&buf, Block::new(reason::HEADER_TIMEOUT)).expect_err("a refusal at the end")
            });
            // The refusal may come before the last byte: compare with the
            // one-shot verdict on the bytes read so far.
            assert_eq!(Err(got), one_shot(kind, &buf), "{what}");
            assert!(want.is_err());
        }
    }

    /// Over a real loopback socket: a client writing its head one byte per
    /// write gets it read and parsed with bounded work.
    #[test]
    fn read_head_over_a_trickling_socket() {
        for (what, kind, input) in complete_cases().into_iter().filter(|c| c.2.len() < 8000) {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = l.local_addr().unwrap();
            let bytes = input.clone();
            let writer = std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_nodelay(true).unwrap();
                for b in bytes.chunks(1) {
                    if s.write_all(b).is_err() {
                        break;
                    }
                }
                // Hold the connection until the reader is done.
                let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
                let _ = s.read(&mut [0u8; 1]);
            });
            let (server, _) = l.accept().unwrap();
            let mut parser = HeadParser::new(kind);
            let mut buf = Vec::new();
            let got =
                read_head_with(&server, &mut parser, &mut buf, Instant::now() + Duration::from_secs(10));
            assert_eq!(
                Ok(got.unwrap_or_else(|e| panic!("{what}: {e:?}"))),
                one_shot(kind, &input).map(|o| o.unwrap())
            );
            let n = input.len();
            let (parses, work) = parser.cost();
            assert!(parses <= (usize::BITS - n.leading_zeros()) as usize + 2, "{what}: {parses} parses");
            assert!(work <= 4 * n, "{what}: {work} bytes looked at for {n}");
            drop(server);
            writer.join().unwrap();
        }
    }
}
