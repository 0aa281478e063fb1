//! A UDP door: one thread per port with mio. Each client address is a
//! flow with its own connected socket towards the target (so answers
//! come back to the right client); flows close after `UDP_TIMEOUT`
//! without traffic. At `MAX_CONNECTIONS` flows, datagrams of new clients
//! are not forwarded (a throttled `limit` event); open flows go on.
//! `UDP_ANSWERS=0`: the target's datagrams are read and dropped (fire and
//! forget, e.g. syslog).

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

use super::decide::{client_of, Datagram, Flows};
use super::{Door, Shared};
use crate::events::{Action, Component, Throttle};
use crate::fair::Refusal;

const LISTENER: Token = Token(0);
const MAX_DATAGRAM: usize = 65536;

/// Binds the port on all addresses (`[::]` dual-stack, else `0.0.0.0`).
pub fn bind(port: u16) -> io::Result<std::net::UdpSocket> {
    match crate::listen::udp(SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), port), None) {
        Ok(s) => Ok(s),
        Err(e) if matches!(e.raw_os_error(), Some(97) | Some(99)) => {
            crate::listen::udp(SocketAddr::new(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED), port), None)
        }
        Err(e) => Err(e),
    }
}

struct Flow {
    client: SocketAddr,
    sock: UdpSocket,
    dst: SocketAddr,
}

pub fn serve(listener: std::net::UdpSocket, door: Arc<Door>, shared: Arc<Shared>) {
    if let Err(e) = run(listener, &door, &shared) {
        log::error!("relay {}: {e}", door.relay);
    }
}

fn run(listener: std::net::UdpSocket, door: &Door, shared: &Shared) -> io::Result<()> {
    let mut poll = Poll::new()?;
    let mut listener = UdpSocket::from_std(listener);
    poll.registry().register(&mut listener, LISTENER, Interest::READABLE)?;
    let mut table: Flows<SocketAddr, IpAddr, Token> =
        Flows::new(shared.cfg.max_connections, shared.cfg.udp_timeout);
    let mut flows: HashMap<Token, Flow> = HashMap::new();
    let mut next_token = 1usize;
    let mut events = Events::with_capacity(256);
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut limit_note = Throttle::new(Duration::from_secs(10));
    let mut last_expiry = Instant::now();
    while !shared.stop.load(Ordering::Relaxed) {
        match poll.poll(&mut events, Some(Duration::from_millis(200))) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
        for ev in &events {
            if ev.token() == LISTENER {
                loop {
                    let (n, client) = match listener.recv_from(&mut buf) {
                        Ok(x) => x,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            log::debug!("relay {}: recv: {e}", door.relay);
                            break;
                        }
                    };
                    let now = Instant::now();
                    let owner = client_of(client.ip());
                    let token = match table.datagram(&client, &owner, now) {
                        Datagram::Existing(t) => t,
                        Datagram::AtLimit(why) => {
                            shared.stats.limit.fetch_add(1, Ordering::Relaxed);
                            if let Some(more) = limit_note.ready(now) {
                                let mut e = shared
                                    .emitter
                                    .event(Component::Relay, Action::Blocked)
                                    .with_flow(client, door.local(), "UDP")
                                    .with_reason("limit");
                                let what = match why {
                                    Refusal::Full => "every UDP flow slot is taken",
                                    Refusal::ClientShare => "this client holds its share of the UDP flows",
                                };
                                e.note = Some(format!(
                                    "{what} (MAX_CONNECTIONS={}): new flows are not forwarded ({more} more \
                                     datagrams dropped since the last event)",
                                    shared.cfg.max_connections
                                ));
                                e.host = Some(door.relay.target.to_string());
                                shared.emitter.emit(e);
                            }
                            continue;
                        }
                        Datagram::Open => match open(door, shared, client) {
                            Ok(mut f) => {
                                let t = Token(next_token);
                                next_token += 1;
                                poll.registry().register(&mut f.sock, t, Interest::READABLE)?;
                                let mut e = shared
                                    .emitter
                                    .event(Component::Relay, Action::Allowed)
                                    .with_flow(client, f.dst, "UDP")
                                    .with_reason("relayed");
                                e.host = Some(door.relay.target.to_string());
                                shared.emitter.emit(e);
                                if shared.cfg.verbose {
                                    log::info!("relay {}: new UDP flow {client} -> {}", door.relay, f.dst);
                                }
                                shared.stats.allowed_udp.fetch_add(1, Ordering::Relaxed);
                                shared.stats.open.fetch_add(1, Ordering::Relaxed);
                                table.insert(client, owner, t, now);
                                flows.insert(t, f);
                                t
                            }
                            Err(e) => {
                                shared.stats.upstream_failed.fetch_add(1, Ordering::Relaxed);
                                log::warn!("relay {}: {client}: {e}", door.relay);
                                continue;
                            }
                        },
                    };
                    if let Some(f) = flows.get(&token) {
                        match f.sock.send(&buf[..n]) {
                            Ok(sent) => {
                                shared.stats.bytes_up.fetch_add(sent as u64, Ordering::Relaxed);
                            }
                            Err(e) => log::debug!("relay {}: send to {}: {e}", door.relay, f.dst),
                        }
                    }
                }
            } else if let Some(f) = flows.get(&ev.token()) {
                let mut gone = false;
                loop {
                    match f.sock.recv(&mut buf) {
                        Ok(n) => {
                            if !shared.cfg.udp_answers {
                                continue;
                            }
                            table.touch(&f.client, Instant::now());
                            if let Ok(sent) = listener.send_to(&buf[..n], f.client) {
                                shared.stats.bytes_down.fetch_add(sent as u64, Ordering::Relaxed);
                            }
                        }
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                        Err(e) => {
                            // ICMP unreachable: the address may have moved.
                            log::debug!("relay {}: {} -> {}: {e}", door.relay, f.client, f.dst);
                            door.addrs.failed(f.dst.ip());
                            gone = true;
                            break;
                        }
                    }
                }
                if gone {
                    let t = ev.token();
                    if let Some(mut f) = flows.remove(&t) {
                        table.remove(&f.client);
                        let _ = poll.registry().deregister(&mut f.sock);
                        shared.stats.open.fetch_sub(1, Ordering::Relaxed);
                    }
                }
            }
        }
        let now = Instant::now();
        if now.duration_since(last_expiry) >= Duration::from_millis(500) {
            last_expiry = now;
            for (client, t) in table.expire(now) {
                if let Some(mut f) = flows.remove(&t) {
                    let _ = poll.registry().deregister(&mut f.sock);
                    shared.stats.open.fetch_sub(1, Ordering::Relaxed);
                    if shared.cfg.verbose {
                        log::info!("relay {}: UDP flow {client} closed (idle)", door.relay);
                    }
                }
            }
        }
    }
    Ok(())
}

fn open(door: &Door, shared: &Shared, client: SocketAddr) -> Result<Flow, String> {
    let _ = shared;
    let addrs = door.addrs.addrs()?;
    let mut why = Vec::new();
    for ip in addrs {
        let dst = SocketAddr::new(ip, door.relay.port);
        match crate::outbound::udp(dst, None, true) {
            Ok(s) => return Ok(Flow { client, sock: UdpSocket::from_std(s), dst }),
            Err(e) => {
                door.addrs.failed(ip);
                why.push(e.to_string());
            }
        }
    }
    Err(format!("cannot open a flow to the target: {}", why.join("; ")))
}
