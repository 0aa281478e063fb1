//! Name lookups for egret's own HTTP clients (dashboard shipper, syslog,
//! Gotify), whose sockets carry the bypass mark. The libc resolver
//! (getaddrinfo) cannot mark its UDP socket, so in DNS mode a dashboard's
//! name would be answered by egret's own filtering resolver (and refused
//! unless allowlisted), and under strict rules the query would not leave
//! at all. [`MarkedResolver`] reads `/etc/hosts` and `/etc/resolv.conf` as
//! libc does (once, at start) and asks through egret's one DNS exchange.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use ureq::config::Config;
use ureq::unversioned::resolver::{DefaultResolver, ResolvedSocketAddrs, Resolver};
use ureq::unversioned::transport::NextTimeout;

use super::system::{candidates, parse_resolv_conf, Hosts, ResolvConf, HOSTS, RESOLV_CONF};
use crate::dns::upstream::{self, Upstreams};

#[derive(Debug)]
#[non_exhaustive]
pub enum ResolveError {
    /// No nameserver gave a usable answer (none in time, or each failed).
    Timeout { name: String },
    /// Every server said the name does not exist or has no address.
    NotFound { name: String },
}

impl fmt::Display for ResolveError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ResolveError::Timeout { name } => {
                write!(f, "resolve {name:?}: no nameserver gave an answer in time")
            }
            ResolveError::NotFound { name } => write!(f, "resolve {name:?}: no such host"),
        }
    }
}

impl std::error::Error for ResolveError {}

/// ureq resolver for egret's own requests: `/etc/hosts` and
/// `/etc/resolv.conf` as they were when egret started (a workload sharing
/// those files could otherwise send egret's own, marked traffic, API keys
/// and all, wherever it likes), over sockets with egret's mark.
#[derive(Debug)]
pub struct MarkedResolver {
    pub mark: Option<u32>,
    /// Asked when resolv.conf names no nameserver (`DNS_UPSTREAMS`).
    pub fallback: Vec<SocketAddr>,
    pub resolv: ResolvConf,
    pub hosts: Hosts,
    /// Bound on one lookup, whatever ureq's remaining budget.
    pub timeout: Duration,
}

impl MarkedResolver {
    /// Reads `/etc/resolv.conf` and `/etc/hosts` now, once.
    pub fn new(mark: Option<u32>, fallback: Vec<SocketAddr>) -> MarkedResolver {
        let resolv = std::fs::read_to_string(RESOLV_CONF).unwrap_or_default();
        MarkedResolver {
            mark,
            fallback,
            resolv: parse_resolv_conf(&resolv),
            hosts: Hosts::read(std::path::Path::new(HOSTS)),
            timeout: Duration::from_secs(5),
        }
    }

    /// The addresses of `name`: `/etc/hosts` first, then DNS over marked
    /// sockets (IPv4 answers before IPv6).
    pub fn lookup(&self, name: &str, budget: Duration) -> Result<Vec<IpAddr>, ResolveError> {
        let found = self.hosts.lookup(name);
        if !found.is_empty() {
            return Ok(found.to_vec());
        }
        let rc = &self.resolv;
        let mut servers: Vec<SocketAddr> = rc.nameservers.iter().map(|ip| SocketAddr::new(*ip, 53)).collect();
        if servers.is_empty() {
            servers.clone_from(&self.fallback);
        }
        let deadline = Instant::now() + budget.min(self.timeout);
        let mut unanswered = false;
        for candidate in candidates(name, rc) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ResolveError::Timeout { name: name.to_owned() });
            }
            let upstreams = Upstreams {
                udp_timeout: left.min(upstream::defaults::UDP_TIMEOUT),
                tcp_timeout: left.min(upstream::defaults::TCP_TIMEOUT),
                ..Upstreams::new(servers.clone(), self.mark)
            };
            match super::ask_addresses(&upstreams, &candidate) {
                Ok(found) if !found.is_empty() => return Ok(found.into_iter().map(|(ip, _)| ip).collect()),
                // An authoritative "no": on to the next candidate name.
                Ok(_) => {}
                Err(e) => {
                    log::debug!("{e}");
                    unanswered = true;
                }
            }
        }
        if unanswered {
            Err(ResolveError::Timeout { name: name.to_owned() })
        } else {
            Err(ResolveError::NotFound { name: name.to_owned() })
        }
    }
}

impl Resolver for MarkedResolver {
    fn resolve(
        &self,
        uri: &ureq::http::Uri,
        config: &Config,
        timeout: NextTimeout,
    ) -> Result<ResolvedSocketAddrs, ureq::Error> {
        if self.mark.is_none() {
            return DefaultResolver::default().resolve(uri, config, timeout);
        }
        let host = uri.host().ok_or(ureq::Error::HostNotFound)?;
        let https = uri.scheme_str() == Some("https");
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        let ips = match bare.parse::<IpAddr>() {
            Ok(ip) => vec![ip],
            Err(_) => {
                let budget = timeout.not_zero().map_or(self.timeout, |d| *d);
                self.lookup(bare, budget).map_err(|e| {
                    log::debug!("{e}");
                    match e {
                        ResolveError::Timeout { .. } => ureq::Error::Timeout(ureq::Timeout::Resolve),
                        _ => ureq::Error::HostNotFound,
                    }
                })?
            }
        };
        let mut out = self.empty();
        for ip in ips.into_iter().take(16) {
            out.push(SocketAddr::new(ip, port));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record, RecordType};
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};

    /// One DNS-over-TCP query off a fresh connection of `l` (the server
    /// side of one exchange), or `None` when none came in time.
    fn tcp_query(l: &TcpListener) -> Option<(Message, TcpStream)> {
        let (mut s, _) = l.accept().ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        let mut len = [0u8; 2];
        s.read_exact(&mut len).ok()?;
        let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
        s.read_exact(&mut q).ok()?;
        Some((Message::from_vec(&q).ok()?, s))
    }

    fn tcp_answer(mut s: TcpStream, bytes: &[u8]) {
        let mut out = (bytes.len() as u16).to_be_bytes().to_vec();
        out.extend_from_slice(bytes);
        s.write_all(&out).unwrap();
    }

    /// The answer to `q` with `rdata` (the question echoed, as a real
    /// server does).
    fn response(q: &Message, code: ResponseCode, rdata: Vec<RData>) -> Vec<u8> {
        let mut m = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
        m.metadata.response_code = code;
        m.metadata.recursion_desired = q.metadata.recursion_desired;
        m.metadata.recursion_available = true;
        m.add_queries(q.queries.clone());
        if let Some(e) = q.edns.clone() {
            m.set_edns(e);
        }
        let name = q.queries[0].name().clone();
        for d in rdata {
            m.answers.push(Record::from_rdata(name.clone(), 60, d));
        }
        m.to_vec().unwrap()
    }

    /// A real lookup over a marked socket against a one-shot DNS server
    /// on 127.0.0.1: over TCP, as every loopback nameserver is asked
    /// (Docker's 127.0.0.11; a workload can forge UDP from loopback).
    #[test]
    fn lookup_over_marked_tcp_to_a_loopback_nameserver() {
        let server = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = server.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            for _ in 0..2 {
                let (q, s) = tcp_query(&server).unwrap();
                let rdata = match q.queries[0].query_type() {
                    RecordType::A => vec![RData::A(A("10.0.0.9".parse().unwrap()))],
                    _ => vec![],
                };
                tcp_answer(s, &response(&q, ResponseCode::NoError, rdata));
            }
        });
        let r = MarkedResolver {
            resolv: parse_resolv_conf("search nowhere.invalid\n"),
            hosts: Hosts::parse("10.0.0.7 fromhosts\n"),
            ..MarkedResolver::new(Some(0x77), vec![addr])
        };
        assert_eq!(
            r.lookup("fromhosts", Duration::from_secs(1)).unwrap(),
            ["10.0.0.7".parse::<IpAddr>().unwrap()]
        );
        assert_eq!(
            r.lookup("dash.test.", Duration::from_secs(2)).unwrap(),
            ["10.0.0.9".parse::<IpAddr>().unwrap()]
        );
        t.join().unwrap();
    }

    /// A server that fails is passed over for the next; a name nobody
    /// has is "not found", not a timeout.
    #[test]
    fn failing_servers_are_passed_over_and_missing_names_are_not_found() {
        let spawn = |code: ResponseCode, answers: usize| {
            let server = TcpListener::bind("127.0.0.1:0").unwrap();
            let addr = server.local_addr().unwrap();
            let t = std::thread::spawn(move || {
                for _ in 0..answers {
                    let Some((q, s)) = tcp_query(&server) else { return };
                    let rdata = match (code, q.queries[0].query_type()) {
                        (ResponseCode::NoError, RecordType::A) => {
                            vec![RData::A(A("10.0.0.5".parse().unwrap()))]
                        }
                        _ => vec![],
                    };
                    tcp_answer(s, &response(&q, code, rdata));
                }
            });
            (addr, t)
        };
        let (bad, t1) = spawn(ResponseCode::ServFail, 2);
        let (good, t2) = spawn(ResponseCode::NoError, 2);
        let r =
            MarkedResolver { resolv: ResolvConf::default(), ..MarkedResolver::new(None, vec![bad, good]) };
        assert_eq!(
            r.lookup("x.test.", Duration::from_secs(3)).unwrap(),
            ["10.0.0.5".parse::<IpAddr>().unwrap()]
        );
        let (nx, t3) = spawn(ResponseCode::NXDomain, 2);
        let r = MarkedResolver { resolv: ResolvConf::default(), ..MarkedResolver::new(None, vec![nx]) };
        let e = r.lookup("gone.test.", Duration::from_secs(3)).unwrap_err();
        assert!(matches!(e, ResolveError::NotFound { .. }), "{e}");
        for t in [t1, t2, t3] {
            t.join().unwrap();
        }
    }
}
