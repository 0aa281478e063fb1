//! egret's own outbound sockets: the one place they are made.
//!
//! Every socket egret opens towards anything (upstream connections of the
//! proxies, DNS upstreams, the dashboard shipper, syslog, Gotify, their
//! lookups, the self-test's control packet) carries the bypass mark from
//! before its first packet, so the ruleset lets it past the redirects and
//! the drop. `None` leaves a socket unmarked (tests and tools outside the
//! filtered namespace).

use std::io;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{self, sockopt, AddressFamily, SockFlag, SockType, SockaddrStorage};

/// A socket for `dst`'s family with the mark set.
fn socket_for(dst: SocketAddr, ty: SockType, flags: SockFlag, mark: Option<u32>) -> io::Result<OwnedFd> {
    let family = if dst.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    let fd = socket::socket(family, ty, flags | SockFlag::SOCK_CLOEXEC, None)?;
    if let Some(m) = mark {
        set_mark(&fd, m)?;
    }
    Ok(fd)
}

/// Sets egret's mark on a socket (needs CAP_NET_ADMIN or CAP_NET_RAW).
fn set_mark<F: AsFd>(fd: &F, mark: u32) -> io::Result<()> {
    socket::setsockopt(fd, sockopt::Mark, &mark).map_err(|e| {
        io::Error::new(io::Error::from(e).kind(), format!("set the bypass mark (needs CAP_NET_ADMIN): {e}"))
    })
}

/// A TCP connection to `dst` within `timeout` (`Duration::MAX`: as long as
/// the kernel keeps trying), marked from its SYN, with Nagle off; the
/// stream is blocking. A timeout is `ErrorKind::TimedOut`.
pub fn tcp(dst: SocketAddr, mark: Option<u32>, timeout: Duration) -> io::Result<TcpStream> {
    let s = tcp_nonblocking(dst, mark, timeout)?;
    s.set_nonblocking(false)?;
    Ok(s)
}

/// As [`tcp`], the stream left non-blocking: for the proxies' relay,
/// which wants it so (an `ioctl` each way fewer per connection).
pub fn tcp_nonblocking(dst: SocketAddr, mark: Option<u32>, timeout: Duration) -> io::Result<TcpStream> {
    let fd = OwnedFd::from(tcp_started(dst, mark)?);
    let deadline = Instant::now().checked_add(timeout);
    loop {
        let left = deadline.map_or(Duration::MAX, |d| d.saturating_duration_since(Instant::now()));
        if left.is_zero() {
            return Err(io::Error::new(io::ErrorKind::TimedOut, format!("connect {dst}: timed out")));
        }
        let ms = left.as_millis().clamp(1, i32::MAX as u128) as i32;
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLOUT)];
        match poll(&mut fds, PollTimeout::try_from(ms).unwrap_or(PollTimeout::MAX)) {
            Ok(0) | Err(Errno::EINTR) => continue,
            Ok(_) => break,
            Err(e) => return Err(e.into()),
        }
    }
    let err = socket::getsockopt(&fd, sockopt::SocketError)?;
    if err != 0 {
        let e = io::Error::from_raw_os_error(err);
        return Err(io::Error::new(e.kind(), format!("connect {dst}: {e}")));
    }
    Ok(TcpStream::from(fd))
}

/// A non-blocking TCP connection to `dst` on its way (the connect may
/// still be in progress: the socket turns writable when it is done, or
/// failed), marked from its SYN, with Nagle off. For event loops.
pub fn tcp_started(dst: SocketAddr, mark: Option<u32>) -> io::Result<TcpStream> {
    let fd = socket_for(dst, SockType::Stream, SockFlag::SOCK_NONBLOCK, mark)?;
    // Requests and handshakes are small writes that wait for an answer.
    let _ = socket::setsockopt(&fd, sockopt::TcpNoDelay, &true);
    match socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(dst)) {
        Ok(()) | Err(Errno::EINPROGRESS) => Ok(TcpStream::from(fd)),
        Err(e) => Err(io::Error::new(io::Error::from(e).kind(), format!("connect {dst}: {e}"))),
    }
}

/// A UDP socket connected to `dst` (the kernel drops datagrams from anyone
/// else and reports ICMP errors), on a kernel-chosen random port, marked
/// from its first packet; non-blocking when asked (for event loops).
pub fn udp(dst: SocketAddr, mark: Option<u32>, nonblocking: bool) -> io::Result<UdpSocket> {
    let flags = if nonblocking { SockFlag::SOCK_NONBLOCK } else { SockFlag::empty() };
    let fd = socket_for(dst, SockType::Datagram, flags, mark)?;
    // connect() on an unbound UDP socket binds it to a random port.
    socket::connect(fd.as_raw_fd(), &SockaddrStorage::from(dst))
        .map_err(|e| io::Error::new(io::Error::from(e).kind(), format!("udp connect {dst}: {e}")))?;
    Ok(UdpSocket::from(fd))
}

/// A socket's mark, for tests and start-up checks.
pub fn mark_of<F: AsFd>(fd: &F) -> io::Result<u32> {
    Ok(socket::getsockopt(fd, sockopt::Mark)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_connects_carry_the_mark_and_time_out() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let s = tcp(l.local_addr().unwrap(), Some(0x77), Duration::from_secs(2)).unwrap();
        assert_eq!(mark_of(&s).unwrap(), 0x77);
        assert!(!s.local_addr().unwrap().ip().is_unspecified());
        // A port nobody listens on: refused, with the address in the text.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let e = tcp(free, None, Duration::from_secs(2)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::ConnectionRefused);
        assert!(e.to_string().contains(&free.to_string()), "{e}");
    }

    #[test]
    fn udp_sockets_are_connected_and_marked() {
        let peer = UdpSocket::bind("127.0.0.1:0").unwrap();
        let s = udp(peer.local_addr().unwrap(), Some(0x78), false).unwrap();
        assert_eq!(mark_of(&s).unwrap(), 0x78);
        s.send(b"x").unwrap();
        let mut b = [0u8; 4];
        let (n, from) = peer.recv_from(&mut b).unwrap();
        assert_eq!((n, from), (1, s.local_addr().unwrap()));
    }
}
