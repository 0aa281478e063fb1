//! egret's listening sockets, and what it knows about the ones it could
//! not bind.
//!
//! Every listener carries egret's listen mark: the ruleset delivers
//! redirected traffic only to sockets with it (`socket mark`), so a
//! workload that bound a listener port first receives nothing. A listener
//! egret cannot bind is not a silent downgrade: it is recorded in
//! [`Status`], which `/health` reports, logged as an error, and retried
//! by the listener's loop until it binds.

use std::collections::BTreeMap;
use std::io;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};

/// How often a loop tries again to bind a listener it is missing.
pub const RETRY: Duration = Duration::from_secs(1);

fn socket_for(addr: SocketAddr, ty: SockType, mark: Option<u32>) -> io::Result<OwnedFd> {
    let family = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(family, ty, SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK, None)?;
    if let Some(m) = mark {
        socket::setsockopt(&fd, sockopt::Mark, &m)?;
    }
    Ok(fd)
}

/// A non-blocking TCP listener with SO_REUSEADDR, the listen mark (when
/// given) and a chosen backlog.
pub fn tcp(addr: SocketAddr, backlog: i32, mark: Option<u32>) -> io::Result<std::net::TcpListener> {
    let fd = socket_for(addr, SockType::Stream, mark)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    // Not nix's listen: it caps the backlog at the musl libc constant 128
    // (see `sys::listen`), far too small for a burst of connections.
    crate::sys::listen(fd.as_fd(), backlog)?;
    Ok(std::net::TcpListener::from(fd))
}

/// A non-blocking UDP socket bound to `addr` with the listen mark.
pub fn udp(addr: SocketAddr, mark: Option<u32>) -> io::Result<std::net::UdpSocket> {
    let fd = socket_for(addr, SockType::Datagram, mark)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok(std::net::UdpSocket::from(fd))
}

/// True for the error of binding `::1` where the namespace has no IPv6
/// loopback: IPv6 is off, so there is nothing to serve (and nothing to
/// redirect), not a failure.
pub fn no_ipv6(addr: SocketAddr, e: &io::Error) -> bool {
    addr.is_ipv6() && e.kind() == io::ErrorKind::AddrNotAvailable
}

/// The listeners egret wants but does not have, shared by the loops that
/// own them and `/health`.
#[derive(Debug, Default)]
pub struct Status {
    missing: Mutex<BTreeMap<String, String>>,
}

impl Status {
    /// Records that `what` (e.g. `http proxy 127.0.0.1:8080`) cannot be
    /// bound; logs it the first time.
    pub fn missing(&self, what: &str, e: &io::Error) {
        let mut m = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        if !m.contains_key(what) {
            let held = if e.kind() == io::ErrorKind::AddrInUse {
                " (another process holds it; the traffic egret redirects there is refused until egret binds it)"
            } else {
                ""
            };
            log::error!("cannot listen on {what}: {e}{held}; retrying every {}s", RETRY.as_secs());
        }
        m.insert(what.to_owned(), format!("cannot listen on {what}: {e}"));
    }

    /// Records that `what` is bound now.
    pub fn bound(&self, what: &str) {
        let mut m = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        if m.remove(what).is_some() {
            log::info!("listening on {what} now");
        }
    }

    /// Records a problem that is not a listener's (the self-test's
    /// verdict), under `key`; `None` clears it.
    pub fn set(&self, key: &str, problem: Option<String>) {
        let mut m = self.missing.lock().unwrap_or_else(|p| p.into_inner());
        match problem {
            Some(p) => m.insert(key.to_owned(), p),
            None => m.remove(key),
        };
    }

    /// One line per missing listener, sorted; empty when all are bound.
    pub fn problems(&self) -> Vec<String> {
        self.missing.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect()
    }
}

// What egret learns about, and does to, the connections its listeners
// accept.

/// Closes with a TCP reset (SO_LINGER 0), so the client fails at once.
pub fn reset(s: &TcpStream) {
    let _ = socket::setsockopt(s, sockopt::Linger, &nix::libc::linger { l_onoff: 1, l_linger: 0 });
    let _ = s.shutdown(Shutdown::Both);
}

/// SO_ORIGINAL_DST (v4) / IP6T_SO_ORIGINAL_DST (v6) of a redirected
/// connection; `None` when conntrack knows no redirect.
pub fn original_dst(s: &TcpStream, local: SocketAddr) -> Option<SocketAddr> {
    match local {
        SocketAddr::V4(_) => {
            let a = socket::getsockopt(s, sockopt::OriginalDst).ok()?;
            let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
            Some(SocketAddr::new(IpAddr::V4(ip), u16::from_be(a.sin_port)))
        }
        SocketAddr::V6(_) => {
            let a = socket::getsockopt(s, sockopt::Ip6tOriginalDst).ok()?;
            let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
            Some(SocketAddr::new(IpAddr::V6(ip), u16::from_be(a.sin6_port)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_taken_port_is_a_problem_until_bound() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let st = Status::default();
        let e = tcp(addr, 16, None).expect_err("the port is taken");
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
        st.missing("http proxy", &e);
        st.missing("http proxy", &e);
        assert_eq!(st.problems().len(), 1);
        assert!(st.problems()[0].contains("cannot listen on http proxy"), "{:?}", st.problems());
        drop(taken);
        tcp(addr, 16, None).expect("free now");
        st.bound("http proxy");
        assert!(st.problems().is_empty());
    }

    #[test]
    fn udp_and_tcp_bind_loopback() {
        let u = udp("127.0.0.1:0".parse().unwrap(), None).unwrap();
        assert!(u.local_addr().unwrap().ip().is_loopback());
        let t = tcp("127.0.0.1:0".parse().unwrap(), 16, None).unwrap();
        assert!(t.local_addr().unwrap().ip().is_loopback());
    }
}
