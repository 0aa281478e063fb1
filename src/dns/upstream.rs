//! The upstream client: one query's bytes exchanged with `DNS_UPSTREAMS`
//! in order, with fail-over, over UDP (and TCP when the answer is
//! truncated).
//!
//! Every socket carries egret's bypass mark, set before the first packet
//! leaves, so the ruleset lets it past the port-53 redirect to egret
//! itself. Each try uses a fresh socket (a kernel-chosen random source
//! port) and a fresh random ID, and only an answer with that ID, from
//! that address, that the caller's check accepts is taken (RFC 5452).
//!
//! An upstream on a loopback address (Docker's `127.0.0.11:53`, a
//! node-local cache on `::1`) is asked over TCP only: any process in the
//! pod can send UDP datagrams "from" a loopback address (bind another
//! 127/8 address, set the source with `IP_PKTINFO`) to egret's upstream
//! socket, whose port it reads in `/proc/net/udp`, and win the race over
//! the 65,536 IDs often enough to get a forged answer served (and, in
//! strict mode, learned). A connected TCP stream is out of its reach:
//! forging into one takes the sequence numbers and a raw socket.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use crate::outbound;

/// Defaults for the exchange.
pub mod defaults {
    use std::time::Duration;
    /// How long one upstream gets to answer over UDP before the next is
    /// tried.
    pub const UDP_TIMEOUT: Duration = Duration::from_secs(2);
    /// Connect + write + read of one TCP exchange.
    pub const TCP_TIMEOUT: Duration = Duration::from_secs(4);
}

/// The ordered upstream list and how to reach it.
#[derive(Debug, Clone)]
pub struct Upstreams {
    pub addrs: Vec<SocketAddr>,
    /// egret's bypass mark; `None` leaves sockets unmarked (only for
    /// callers outside the filtered namespace, e.g. tests).
    pub mark: Option<u32>,
    pub udp_timeout: Duration,
    pub tcp_timeout: Duration,
    /// Ask loopback upstreams over UDP too. Off by default (see the module
    /// docs); only for tests whose stand-in upstream is on loopback and
    /// that are about the UDP path.
    pub udp_on_loopback: bool,
}

/// Every upstream failed; one line per attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError {
    pub attempts: Vec<(SocketAddr, String)>,
}

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.attempts.is_empty() {
            return write!(f, "no dns upstream configured");
        }
        write!(f, "every dns upstream failed")?;
        for (i, (a, why)) in self.attempts.iter().enumerate() {
            write!(f, "{} {a}: {why}", if i == 0 { ":" } else { ";" })?;
        }
        Ok(())
    }
}

impl std::error::Error for UpstreamError {}

/// Where one query stands in the fail-over order: the next upstream to
/// try (over TCP when `tcp_next`: its UDP answer was truncated) and every
/// failed attempt so far. The one fail-over state of both exchanges: the
/// blocking one here and the forwarders' event loops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tries {
    pub next: usize,
    pub tcp_next: bool,
    pub attempts: Vec<(SocketAddr, String)>,
}

impl Tries {
    /// Upstream `up` failed (`why`): on to the next, over UDP.
    pub fn failed(&mut self, up: SocketAddr, why: String) {
        self.attempts.push((up, why));
        self.next += 1;
        self.tcp_next = false;
    }

    /// Upstream number `up` answered truncated over UDP: it again, over TCP.
    pub fn truncated(&mut self, up: usize) {
        self.next = up;
        self.tcp_next = true;
    }

    pub fn into_error(self) -> UpstreamError {
        UpstreamError { attempts: self.attempts }
    }
}

thread_local! {
    /// One receive buffer per thread: a UDP answer may be 64 KiB, and
    /// allocating and zeroing that per query showed up in profiles.
    static RECV_BUF: std::cell::RefCell<Vec<u8>> = std::cell::RefCell::new(vec![0u8; 65535]);
}

/// A fresh random 16-bit ID from hickory's thread-local CSPRNG (the one it
/// uses for its own query IDs).
pub fn random_id() -> u16 {
    hickory_proto::op::Message::query().metadata.id
}

impl Upstreams {
    pub fn new(addrs: Vec<SocketAddr>, mark: Option<u32>) -> Upstreams {
        Upstreams {
            addrs,
            mark,
            udp_timeout: defaults::UDP_TIMEOUT,
            tcp_timeout: defaults::TCP_TIMEOUT,
            udp_on_loopback: false,
        }
    }

    /// Whether `up` is asked over TCP only: a loopback address, where any
    /// local process can forge UDP answers (see the module docs).
    pub fn tcp_only(&self, up: SocketAddr) -> bool {
        !self.udp_on_loopback && up.ip().to_canonical().is_loopback()
    }

    /// Sends `query` (at least a 12-byte header) to each upstream in turn
    /// until one gives an answer that `check` accepts; returns it with the
    /// query's own ID restored, and what `check` made of it. A truncated
    /// UDP answer (`truncated` says so) is retried over TCP with the same
    /// upstream.
    pub fn exchange<T>(
        &self,
        query: &[u8],
        check: &dyn Fn(&[u8]) -> Result<T, String>,
        truncated: &dyn Fn(&T) -> bool,
    ) -> Result<(Vec<u8>, T), UpstreamError> {
        self.exchange_from(query, Tries::default(), check, truncated)
    }

    /// As [`Upstreams::exchange`], going on from `tries` (a query the
    /// forwarders started).
    pub fn exchange_from<T>(
        &self,
        query: &[u8],
        mut tries: Tries,
        check: &dyn Fn(&[u8]) -> Result<T, String>,
        truncated: &dyn Fn(&T) -> bool,
    ) -> Result<(Vec<u8>, T), UpstreamError> {
        if query.len() < super::filter::HEADER_LEN {
            tries.failed(SocketAddr::from(([0, 0, 0, 0], 0)), "query shorter than a header".to_owned());
            return Err(tries.into_error());
        }
        let client_id = [query[0], query[1]];
        let mut q = query.to_vec();
        while let Some(&up) = self.addrs.get(tries.next) {
            let result = if tries.tcp_next || self.tcp_only(up) {
                self.tcp(&mut q, up, check)
            } else {
                self.udp(&mut q, up, check).and_then(|(resp, t)| {
                    if truncated(&t) {
                        log::debug!("{up}: truncated over udp, retrying over tcp");
                        self.tcp(&mut q, up, check)
                    } else {
                        Ok((resp, t))
                    }
                })
            };
            match result {
                Ok((mut resp, t)) => {
                    resp[..2].copy_from_slice(&client_id);
                    return Ok((resp, t));
                }
                Err(why) => {
                    log::debug!("upstream {up}: {why}");
                    tries.failed(up, why);
                }
            }
        }
        Err(tries.into_error())
    }

    fn udp<T>(
        &self,
        q: &mut [u8],
        up: SocketAddr,
        check: &dyn Fn(&[u8]) -> Result<T, String>,
    ) -> Result<(Vec<u8>, T), String> {
        let sock = outbound::udp(up, self.mark, false).map_err(|e| e.to_string())?;
        let id = random_id();
        q[..2].copy_from_slice(&id.to_be_bytes());
        sock.send(q).map_err(|e| format!("udp send: {e}"))?;
        let deadline = Instant::now() + self.udp_timeout;
        RECV_BUF.with(|b| {
            let mut buf = b.borrow_mut();
            self.udp_wait(&sock, &mut buf, id, up, deadline, check)
        })
    }

    /// Waits on `sock` for the answer to `id` until `deadline`.
    fn udp_wait<T>(
        &self,
        sock: &UdpSocket,
        buf: &mut [u8],
        id: u16,
        up: SocketAddr,
        deadline: Instant,
        check: &dyn Fn(&[u8]) -> Result<T, String>,
    ) -> Result<(Vec<u8>, T), String> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("no answer over udp within {:?}", self.udp_timeout));
            }
            sock.set_read_timeout(Some(left)).map_err(|e| format!("udp timeout: {e}"))?;
            let n = match sock.recv(buf) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(format!("udp recv: {e}")),
            };
            let resp = &buf[..n];
            if n < super::filter::HEADER_LEN || resp[..2] != id.to_be_bytes() {
                log::debug!("{up}: ignored a {n}-byte datagram with the wrong id");
                continue;
            }
            match check(resp) {
                Ok(t) => return Ok((resp.to_vec(), t)),
                // A wrong answer with the right ID could be a spoof racing
                // the real one: keep waiting for the real one.
                Err(why) => log::debug!("{up}: ignored an answer: {why}"),
            }
        }
    }

    fn tcp<T>(
        &self,
        q: &mut [u8],
        up: SocketAddr,
        check: &dyn Fn(&[u8]) -> Result<T, String>,
    ) -> Result<(Vec<u8>, T), String> {
        let deadline = Instant::now() + self.tcp_timeout;
        let mut s = outbound::tcp(up, self.mark, self.tcp_timeout).map_err(|e| format!("tcp {e}"))?;
        let id = random_id();
        q[..2].copy_from_slice(&id.to_be_bytes());
        let len = u16::try_from(q.len()).map_err(|_| "query longer than 65535 bytes".to_owned())?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(q);
        let left = || deadline.saturating_duration_since(Instant::now()).max(Duration::from_millis(1));
        s.set_write_timeout(Some(left())).map_err(|e| format!("tcp timeout: {e}"))?;
        s.write_all(&framed).map_err(|e| format!("tcp send: {e}"))?;
        s.set_read_timeout(Some(left())).map_err(|e| format!("tcp timeout: {e}"))?;
        let mut lenb = [0u8; 2];
        s.read_exact(&mut lenb).map_err(|e| format!("tcp recv: {e}"))?;
        let mut resp = vec![0u8; usize::from(u16::from_be_bytes(lenb))];
        s.set_read_timeout(Some(left())).map_err(|e| format!("tcp timeout: {e}"))?;
        s.read_exact(&mut resp).map_err(|e| format!("tcp recv: {e}"))?;
        if resp.len() < super::filter::HEADER_LEN || resp[..2] != id.to_be_bytes() {
            return Err("tcp answer with the wrong id".to_owned());
        }
        let t = check(&resp)?;
        Ok((resp, t))
    }

    /// A fresh non-blocking marked UDP socket connected to `up`, for
    /// callers that wait for answers on their own event loop.
    pub fn udp_socket(&self, up: SocketAddr) -> Result<UdpSocket, String> {
        outbound::udp(up, self.mark, true).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A loopback UDP "upstream" that answers each query with `reply(q)`.
    fn udp_server(reply: fn(&[u8]) -> Vec<Vec<u8>>) -> SocketAddr {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = s.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 2048];
            while let Ok((n, from)) = s.recv_from(&mut buf) {
                for r in reply(&buf[..n]) {
                    let _ = s.send_to(&r, from);
                }
            }
        });
        addr
    }

    fn echo_as_response(q: &[u8]) -> Vec<u8> {
        let mut r = q.to_vec();
        r[2] |= 0x80;
        r
    }

    fn ok(r: &[u8]) -> Result<bool, String> {
        Ok(r[2] & 0x02 != 0)
    }

    const Q: [u8; 12] = [0xaa, 0xbb, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];

    /// Over UDP although the stand-in upstreams are on loopback.
    fn fast(addrs: Vec<SocketAddr>) -> Upstreams {
        let mut u = Upstreams::new(addrs, None);
        u.udp_on_loopback = true;
        u.udp_timeout = Duration::from_millis(300);
        u.tcp_timeout = Duration::from_millis(300);
        u
    }

    #[test]
    fn tries_walk_the_upstreams_in_order_and_remember_why() {
        let (a, b): (SocketAddr, SocketAddr) =
            ("10.0.0.1:53".parse().unwrap(), "10.0.0.2:53".parse().unwrap());
        let mut t = Tries::default();
        assert_eq!((t.next, t.tcp_next), (0, false));
        t.truncated(0);
        assert_eq!((t.next, t.tcp_next), (0, true), "the same upstream again, over tcp");
        t.failed(a, "tcp connect: refused".into());
        assert_eq!((t.next, t.tcp_next), (1, false), "then the next one, over udp");
        t.failed(b, "no answer".into());
        let e = t.into_error();
        assert_eq!(
            e.to_string(),
            "every dns upstream failed: 10.0.0.1:53: tcp connect: refused; 10.0.0.2:53: no answer"
        );
    }

    #[test]
    fn client_id_restored_and_wrong_ids_ignored() {
        // First a datagram with a wrong ID, then the real answer.
        let up = udp_server(|q| {
            let mut wrong = echo_as_response(q);
            wrong[0] ^= 0xff;
            vec![wrong, echo_as_response(q)]
        });
        let (resp, _) = fast(vec![up]).exchange(&Q, &ok, &|_| false).unwrap();
        assert_eq!(&resp[..2], &[0xaa, 0xbb]);
        assert_eq!(resp[2] & 0x80, 0x80);
    }

    #[test]
    fn fails_over_and_reports_every_attempt() {
        let dead = UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // closed at once
        let silent = UdpSocket::bind("127.0.0.1:0").unwrap(); // open, never answers
        let live = udp_server(|q| vec![echo_as_response(q)]);
        let u = fast(vec![dead, silent.local_addr().unwrap(), live]);
        let (resp, _) = u.exchange(&Q, &ok, &|_| false).unwrap();
        assert_eq!(&resp[..2], &[0xaa, 0xbb]);
        let err = fast(vec![dead, silent.local_addr().unwrap()]).exchange(&Q, &ok, &|_| false).unwrap_err();
        assert_eq!(err.attempts.len(), 2);
        let text = err.to_string();
        assert!(text.starts_with("every dns upstream failed:"), "{text}");
        assert!(text.contains("refused") && text.contains("no answer over udp"), "{text}");
    }

    /// A loopback upstream is asked over TCP only: a forger's UDP answers
    /// on the same address are never even read.
    #[test]
    fn loopback_upstreams_are_asked_over_tcp_only() {
        use std::net::TcpListener;
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        let up = udp.local_addr().unwrap();
        let tcp = TcpListener::bind(up).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = tcp.accept().unwrap();
            let mut len = [0u8; 2];
            s.read_exact(&mut len).unwrap();
            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
            s.read_exact(&mut q).unwrap();
            let r = echo_as_response(&q);
            let mut out = (r.len() as u16).to_be_bytes().to_vec();
            out.extend_from_slice(&r);
            s.write_all(&out).unwrap();
        });
        let mut u = Upstreams::new(vec![up], None);
        u.tcp_timeout = Duration::from_secs(2);
        assert!(u.tcp_only(up) && u.tcp_only("[::1]:53".parse().unwrap()));
        assert!(u.tcp_only("[::ffff:127.0.0.11]:53".parse().unwrap()), "v4-mapped loopback");
        assert!(!u.tcp_only("10.0.0.1:53".parse().unwrap()));
        let (resp, _) = u.exchange(&Q, &ok, &|_| false).unwrap();
        assert_eq!(&resp[..2], &[0xaa, 0xbb]);
        server.join().unwrap();
        udp.set_nonblocking(true).unwrap();
        assert!(udp.recv(&mut [0u8; 64]).is_err(), "nothing was sent over udp");
    }

    #[test]
    fn rejected_answers_are_not_taken() {
        let up = udp_server(|q| vec![echo_as_response(q)]);
        let err = fast(vec![up]).exchange(&Q, &|_| Err::<(), _>("nope".to_owned()), &|_| false).unwrap_err();
        assert_eq!(err.attempts.len(), 1);
    }
}
