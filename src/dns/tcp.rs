//! DNS over TCP: one thread per client (bounded, a fair share per socket
//! owner), length-prefixed queries (RFC 1035 §4.2.2), several per
//! connection (RFC 7766), each within a deadline from its first byte.

use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::atomic::Ordering;

use super::filter::{self, Action};
use super::reply::{Asker, Outcome};
use super::{defaults, Shared};
use crate::events::{Action as EvAction, Component};
use crate::fair::Ticket;

/// The asker of a TCP connection just accepted and its slot, or `None`
/// when the client already holds its share of the slots (the refusal is
/// logged and the connection is to be closed). Decided in the accept loop,
/// before any thread exists for the connection: a bound on threads
/// counted before the owner is known would be filled by one client's
/// connections waiting to be refused, and another client's connection
/// closed with them.
pub(super) fn admit(
    s: &std::net::TcpStream,
    client: SocketAddr,
    shared: &Shared,
) -> Option<(Asker, Ticket<crate::peer::Client>)> {
    let local = s.local_addr().ok()?;
    let to = crate::listen::original_dst(s, local).unwrap_or(local);
    let asker =
        Asker { addr: client, local, proto: "TCP", who: crate::peer::lookup(client, to), client: None };
    match shared.tcp_fair.admit(crate::peer::Client::of(asker.who)) {
        Ok(t) => Some((asker, t)),
        Err(r) => {
            log::debug!(
                "dns: tcp {client} ({:?}) over its share of the tcp slots ({r:?}); closed",
                asker.who
            );
            let base = shared.emitter.event(Component::Dns, EvAction::Blocked);
            let mut ev = base.with_flow(client, local, "TCP").with_owner(asker.who).with_reason("limit");
            ev.note = Some("this client holds its share of the DNS-over-TCP slots".into());
            shared.emitter.emit(ev);
            None
        }
    }
}

/// One TCP client admitted by [`admit`]: length-prefixed queries (RFC
/// 1035 §4.2.2), several per connection (RFC 7766), answered in order.
/// The client holds its slot (`_slot`) for as long as it is connected;
/// each query must arrive within [`defaults::TCP_QUERY_DEADLINE`] of its
/// first byte.
pub(super) fn serve(
    mut s: std::net::TcpStream,
    asker: Asker,
    _slot: Ticket<crate::peer::Client>,
    shared: &Shared,
) -> io::Result<()> {
    let client = asker.addr;
    s.set_nonblocking(false)?;
    s.set_write_timeout(Some(defaults::TCP_IDLE))?;
    loop {
        let mut len = [0u8; 2];
        s.set_read_timeout(Some(defaults::TCP_IDLE))?;
        match s.read(&mut len[..1]) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(e),
        }
        let deadline = std::time::Instant::now() + defaults::TCP_QUERY_DEADLINE;
        read_until(&mut s, &mut len[1..], deadline)?;
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(len))];
        read_until(&mut s, &mut query, deadline)?;
        let policy = shared.policy.current();
        let resp = match filter::decide(&query, &policy) {
            Action::Drop(why) => {
                shared.stats.dropped.fetch_add(1, Ordering::Relaxed);
                log::debug!("dns: tcp {client}: dropped {} bytes: {why}", query.len());
                continue;
            }
            Action::Answer(a) => {
                shared.emit(&asker, &Outcome::Refused(&a));
                a.bytes
            }
            Action::Forward(info) => match shared.harden(&info, &asker, &policy) {
                Some(refused) => refused,
                None => shared.forward(&query, &info, asker),
            },
        };
        let Ok(n) = u16::try_from(resp.len()) else {
            return Err(io::Error::other("answer longer than 65535 bytes"));
        };
        let mut framed = n.to_be_bytes().to_vec();
        framed.extend_from_slice(&resp);
        s.write_all(&framed)?;
    }
}

/// Fills `buf` from `s`, or fails once `deadline` has passed.
fn read_until(
    s: &mut std::net::TcpStream,
    mut buf: &mut [u8],
    deadline: std::time::Instant,
) -> io::Result<()> {
    while !buf.is_empty() {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "query not complete within its deadline"));
        }
        s.set_read_timeout(Some(left))?;
        match s.read(buf) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => buf = &mut buf[n..],
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
