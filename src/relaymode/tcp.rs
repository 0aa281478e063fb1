//! A TCP door: the acceptor of one port (admission under
//! `MAX_CONNECTIONS`, waiting connections, their bounded wait) and the
//! per-connection work: `RELAY_CHECK` on the first bytes, the dial to
//! the target (its other addresses, then a fresh lookup, on failure),
//! and the bulk relay (`proxy::relay`, splice once a direction is bulk).

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv6Addr, SocketAddr, TcpStream};
use std::os::fd::AsFd;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use super::decide::{self, Admit, Refused, Slots};
use super::{Door, Shared};
use crate::events::{Action, Component};
use crate::proxy::http::{HeadProgress, RequestHead};
use crate::proxy::relay::{self, End, Limits};
use crate::proxy::tls::{self, Progress};
use crate::proxy::Block;

/// Connections accepted beyond the limit that wait in user space; more
/// wait in the kernel's backlog.
const QUEUE_MAX: usize = 128;
const BACKLOG: i32 = 1024;
/// A connection thread's stack: the relay needs little (its buffers are
/// on the heap).
const STACK: usize = 128 * 1024;

type Waiting = (TcpStream, SocketAddr);
/// A door's slots, by client ([`decide::client_of`]).
type DoorSlots = Slots<IpAddr, Waiting>;

/// Binds the port on all addresses: `[::]` dual-stack, `0.0.0.0` where
/// the kernel has no IPv6.
pub fn bind(port: u16) -> io::Result<std::net::TcpListener> {
    match crate::listen::tcp(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port), BACKLOG, None) {
        Ok(l) => Ok(l),
        Err(e) if matches!(e.raw_os_error(), Some(97) | Some(99)) => crate::listen::tcp(
            SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port),
            BACKLOG,
            None,
        ),
        Err(e) => Err(e),
    }
}

/// The acceptor loop of one door, until `shared.stop`.
pub fn accept_loop(listener: std::net::TcpListener, door: Arc<Door>, shared: Arc<Shared>) {
    let slots: Arc<Mutex<DoorSlots>> =
        Arc::new(Mutex::new(Slots::new(shared.cfg.max_connections, QUEUE_MAX, shared.cfg.queue_timeout)));
    while !shared.stop.load(Ordering::Relaxed) {
        let now = Instant::now();
        let (accepting, next) = {
            let mut s = slots.lock().unwrap_or_else(|p| p.into_inner());
            for (c, peer) in s.expire(now) {
                shared.stats.limit.fetch_add(1, Ordering::Relaxed);
                shared.stats.waiting.fetch_sub(1, Ordering::Relaxed);
                let ev = shared
                    .emitter
                    .event(Component::Relay, Action::Blocked)
                    .with_flow(peer, door.local(), "TCP")
                    .with_reason("limit");
                let mut ev = ev;
                ev.note = Some(format!(
                    "waited {}s for one of MAX_CONNECTIONS={} slots (or its client's share of them)",
                    shared.cfg.queue_timeout.as_secs(),
                    shared.cfg.max_connections
                ));
                ev.host = Some(door.relay.target.to_string());
                shared.emitter.emit(ev);
                crate::listen::reset(&c);
            }
            (s.accepting(), s.next_deadline())
        };
        let mut wait = Duration::from_millis(200);
        if let Some(d) = next {
            wait = wait.min(d.saturating_duration_since(now) + Duration::from_millis(1));
        }
        if !accepting {
            // Every slot and the queue are full: the kernel's backlog holds
            // the rest, as socat's does at max-children.
            thread::sleep(wait.min(Duration::from_millis(20)));
            continue;
        }
        let ms = wait.as_millis().clamp(1, 1000) as u16;
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) | Err(_) => continue,
            Ok(_) => {}
        }
        loop {
            if !slots.lock().unwrap_or_else(|p| p.into_inner()).accepting() {
                break;
            }
            let (conn, peer) = match listener.accept() {
                Ok(x) => x,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::warn!("relay {}: accept: {e}", door.relay);
                    thread::sleep(Duration::from_millis(50));
                    break;
                }
            };
            let admitted = slots.lock().unwrap_or_else(|p| p.into_inner()).admit(
                decide::client_of(peer.ip()),
                (conn, peer),
                Instant::now(),
            );
            match admitted {
                Admit::Serve(first) => spawn(first, &door, &shared, &slots),
                Admit::Wait => {
                    shared.stats.waiting.fetch_add(1, Ordering::Relaxed);
                    if shared.cfg.verbose {
                        log::info!("relay {}: {peer} waits for a slot (MAX_CONNECTIONS)", door.relay);
                    }
                }
            }
        }
    }
}

/// Serves `first`, then every waiting connection handed its slot.
fn spawn(first: Waiting, door: &Arc<Door>, shared: &Arc<Shared>, slots: &Arc<Mutex<DoorSlots>>) {
    let (door, shared2, slots) = (door.clone(), shared.clone(), slots.clone());
    let shared = shared2.clone();
    shared.stats.open.fetch_add(1, Ordering::Relaxed);
    let spawned = thread::Builder::new().name("relay-conn".into()).stack_size(STACK).spawn(move || {
        let mut next = Some(first);
        while let Some((conn, peer)) = next.take() {
            serve(conn, peer, &door, &shared2);
            next = slots.lock().unwrap_or_else(|p| p.into_inner()).release(&decide::client_of(peer.ip()));
            if next.is_some() {
                shared2.stats.waiting.fetch_sub(1, Ordering::Relaxed);
            }
        }
        shared2.stats.open.fetch_sub(1, Ordering::Relaxed);
    });
    if let Err(e) = spawned {
        log::error!("relay: cannot start a connection thread: {e}");
        shared.stats.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// What the first bytes were, once checked.
enum First {
    /// Not checked (`RELAY_CHECK` off): nothing read yet.
    Unchecked,
    Tls {
        bytes: Vec<u8>,
        name: String,
    },
    Http {
        bytes: Vec<u8>,
        name: String,
        /// The first request head, decided: the relay starts after it.
        head: RequestHead,
    },
}

/// Reads until the ClientHello or request head is complete and decides
/// on it.
fn check_first(conn: &TcpStream, door: &Door, shared: &Shared) -> Result<First, (Refused, Vec<u8>, bool)> {
    let checks = shared.cfg.checks;
    let deadline = Instant::now() + shared.cfg.header_timeout;
    let allowed = |n: &str| shared.allowed_by_policy(n);
    let mut buf: Vec<u8> = Vec::with_capacity(4096);
    let mut hello = Progress::default();
    let mut head = HeadProgress::default();
    let refuse =
        |reason: &'static str, note: String, buf: Vec<u8>, http: bool| (Refused { reason, note }, buf, http);
    let mut chunk = [0u8; 4096];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(refuse(
                "header-timeout",
                "no complete ClientHello or request head in time".into(),
                buf,
                false,
            ));
        }
        let _ = conn.set_read_timeout(Some(left));
        let n = match (&*conn).read(&mut chunk) {
            Ok(0) => {
                return Err(refuse(
                    "peek-failed",
                    "the client closed before naming a server".into(),
                    buf,
                    false,
                ))
            }
            Ok(n) => n,
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(refuse("peek-failed", format!("reading the first bytes: {e}"), buf, false)),
        };
        buf.extend_from_slice(&chunk[..n]);
        let tls_like = buf[0] == 0x16;
        if tls_like {
            if !checks.sni {
                return Err(refuse(
                    "parse-failed",
                    "TLS, but RELAY_CHECK does not take sni".into(),
                    buf,
                    false,
                ));
            }
            match hello.poll(&buf) {
                Ok(None) if buf.len() < tls::MAX_BUFFER => continue,
                Ok(None) => return Err(refuse("parse-failed", "ClientHello too long".into(), buf, false)),
                Ok(Some(h)) => {
                    return match decide::hello(&h, &door.relay.target, &allowed) {
                        Ok(name) => Ok(First::Tls { bytes: buf, name }),
                        Err(r) => Err((r, buf, false)),
                    }
                }
                Err(e) => return Err(refuse("parse-failed", format!("not a ClientHello: {e}"), buf, false)),
            }
        }
        if !checks.host {
            return Err(refuse("parse-failed", "not TLS, and RELAY_CHECK takes only sni".into(), buf, false));
        }
        match head.poll(&buf) {
            Ok(None) if buf.len() < crate::proxy::http::MAX_HEAD => continue,
            Ok(None) => return Err(refuse("parse-failed", "request head too long".into(), buf, true)),
            Ok(Some(h)) => {
                return match decide::request(&h, &door.relay.target, &allowed) {
                    Ok(name) => Ok(First::Http { bytes: buf, name, head: h }),
                    Err(r) => Err((r, buf, true)),
                }
            }
            Err(e) => return Err(refuse("parse-failed", format!("not an HTTP request: {e}"), buf, true)),
        }
    }
}

/// One connection, start to end.
fn serve(conn: TcpStream, peer: SocketAddr, door: &Door, shared: &Shared) {
    let started = Instant::now();
    let first = if shared.cfg.checks.any() {
        match check_first(&conn, door, shared) {
            Ok(f) => f,
            Err((r, _, http)) => {
                refuse(&conn, peer, door, shared, &r, http);
                return;
            }
        }
    } else {
        First::Unchecked
    };
    let _ = conn.set_read_timeout(None);
    let upstream = match dial(door, shared) {
        Ok(u) => u,
        Err(e) => {
            shared.stats.upstream_failed.fetch_add(1, Ordering::Relaxed);
            log::warn!("relay {}: {peer}: {e}", door.relay);
            crate::listen::reset(&conn);
            return;
        }
    };
    let dst = upstream.peer_addr().unwrap_or_else(|_| door.local());
    let mut ev = shared.emitter.event(Component::Relay, Action::Allowed).with_flow(peer, dst, "TCP");
    ev.host = Some(door.relay.target.to_string());
    let mut pending_http = None;
    match &first {
        First::Unchecked => {}
        First::Tls { bytes, name } => {
            ev.https = Some(name.clone());
            if (&upstream).write_all(bytes).is_err() {
                return;
            }
        }
        First::Http { bytes, name, head } => {
            ev.http_host = Some(name.clone());
            pending_http = Some((bytes.clone(), head));
        }
    }
    ev.reason = Some(if shared.cfg.checks.any() { "target-checked" } else { "relayed" }.to_owned());
    shared.stats.allowed_tcp.fetch_add(1, Ordering::Relaxed);
    shared.emitter.emit(ev);
    if shared.cfg.verbose {
        log::info!("relay {}: {peer} -> {dst}", door.relay);
    }
    let limits = Limits {
        idle: shared.cfg.idle_timeout,
        deadline: None,
        head: Some(shared.cfg.header_timeout),
        pipes: None,
    };
    let target = door.relay.target.clone();
    let mut gate = |h: &RequestHead| -> Result<(), Block> {
        decide::request(h, &target, &|n| shared.allowed_by_policy(n))
            .map(|_| ())
            .map_err(|r| Block::with_note(r.reason, r.note))
    };
    let http = pending_http.map(|(pending, first)| relay::Http { pending, first, gate: &mut gate });
    let (end, stats) = relay::relay(&conn, &upstream, http, &limits);
    shared.stats.bytes_up.fetch_add(stats.up, Ordering::Relaxed);
    shared.stats.bytes_down.fetch_add(stats.down, Ordering::Relaxed);
    if let End::Blocked { head, block } = &end {
        let mut ev = shared.emitter.event(Component::Relay, Action::Blocked).with_flow(peer, dst, "TCP");
        ev.reason = Some(block.reason.to_owned());
        ev.note.clone_from(&block.note);
        ev.http_host = head.as_ref().map(|h| match &h.host {
            crate::proxy::http::Host::Name(n) => n.clone(),
            crate::proxy::http::Host::IpLiteral(ip) => ip.to_string(),
        });
        shared.stats.blocked.fetch_add(1, Ordering::Relaxed);
        shared.emitter.emit(ev);
        let _ = (&conn).write_all(FORBIDDEN);
    }
    if shared.cfg.verbose {
        log::info!(
            "relay {}: {peer} closed after {} ms ({end:?}): {} bytes up, {} down{}",
            door.relay,
            started.elapsed().as_millis(),
            stats.up,
            stats.down,
            if stats.spliced { ", spliced" } else { "" }
        );
    }
}

const FORBIDDEN: &[u8] =
    b"HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\nContent-Length: 41\r\nConnection: close\r\n\r\negret relay: this host is not the target\n";

fn refuse(conn: &TcpStream, peer: SocketAddr, door: &Door, shared: &Shared, r: &Refused, http: bool) {
    shared.stats.blocked.fetch_add(1, Ordering::Relaxed);
    let mut ev = shared
        .emitter
        .event(Component::Relay, Action::Blocked)
        .with_flow(peer, door.local(), "TCP")
        .with_reason(r.reason);
    ev.note = Some(r.note.clone());
    ev.host = Some(door.relay.target.to_string());
    shared.emitter.emit(ev);
    log::info!("relay {}: refused {peer}: {}", door.relay, r.note);
    if http {
        let _ = conn.set_write_timeout(Some(Duration::from_secs(2)));
        let _ = (&*conn).write_all(FORBIDDEN);
        let _ = conn.shutdown(std::net::Shutdown::Both);
    } else {
        crate::listen::reset(conn);
    }
}

/// A connection to the target: each address in turn; when all fail, one
/// fresh lookup and its new addresses.
pub fn dial(door: &Door, shared: &Shared) -> Result<TcpStream, String> {
    let mut tried: Vec<IpAddr> = Vec::new();
    let mut why = Vec::new();
    for round in 0..2 {
        let addrs = door.addrs.addrs()?;
        for ip in addrs {
            if tried.contains(&ip) {
                continue;
            }
            tried.push(ip);
            let sa = SocketAddr::new(ip, door.relay.port);
            match crate::outbound::tcp(sa, None, shared.cfg.connect_timeout) {
                Ok(s) => return Ok(s),
                Err(e) => {
                    door.addrs.failed(ip);
                    why.push(e.to_string());
                }
            }
        }
        if round == 0 {
            log::info!("relay {}: every address failed; resolving again", door.relay);
        }
    }
    Err(format!("cannot reach the target: {}", why.join("; ")))
}
