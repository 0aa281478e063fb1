//! The anti-spoofing resolver behind the HTTPS proxies: "does `name`
//! resolve to `ip`?" (`VERIFY_DESTINATION`). An allowed SNI/Host sent to an
//! address the name does not resolve to is a spoof (`ip-mismatch`); when
//! no resolver answers at all the check cannot tell, and says so
//! (`resolver-unavailable`).
//!
//! It asks the resolvers the workloads use: `DNS_UPSTREAMS` when set, else
//! the nameservers of `/etc/resolv.conf` as egret found it at start, else
//! Docker's `127.0.0.11:53` ([`effective_upstreams`]); and `/etc/hosts`
//! pins as at start (Compose `extra_hosts`, Kubernetes `hostAliases`) count as
//! addresses of their names, as they do for the workloads' libc.
//!
//! [`Cache`] is the pure core (time passed in). [`Resolver`] wraps it with
//! the same upstream exchange as DNS mode (marked sockets, fail-over, TCP
//! on truncation), asking A and AAAA. It also takes the addresses egret's
//! own DNS server handed out ([`Resolver::learn`], or as a
//! [`crate::dns::Learn`] hook), so a workload that resolved through egret
//! is never refused because a CDN rotated its answer in between.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::dns::filter::{self, QueryInfo};
use crate::dns::learn::{Learn, LearnError};
use crate::dns::upstream::Upstreams;
use crate::policy::normalize;

/// The answer to "does this name resolve to this address?".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// The address is one the name currently resolves to.
    Match,
    /// The name resolves, but not to this address.
    Mismatch,
    /// The resolvers answered: the name has no addresses.
    Unresolvable,
    /// No resolver gave an answer (down, unreachable, SERVFAIL): the check
    /// cannot tell a spoof from a real destination.
    Unavailable,
}

/// Limits, in one place.
pub mod defaults {
    use std::time::Duration;
    /// A name is asked upstream again on a miss only if its last lookup
    /// is at least this old, so spoofed connections cannot turn egret into
    /// a query amplifier.
    pub const REFRESH_MIN: Duration = Duration::from_secs(1);
    /// Names kept.
    pub const MAX_NAMES: usize = 10_000;
}

#[derive(Debug, Clone, Default)]
struct Entry {
    /// Address → when it stops counting.
    addrs: HashMap<IpAddr, Instant>,
    /// The last upstream lookup, successful or not.
    looked_up: Option<Instant>,
    /// That lookup got no answer from any resolver.
    failed: bool,
}

/// What the cache alone can say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cached {
    Match,
    /// Looked up recently; the address is not among the answers.
    Mismatch,
    /// Looked up recently and nothing is known: unresolvable.
    Unresolvable,
    /// Looked up recently and no resolver answered.
    Unavailable,
    /// Ask upstream, then ask the cache again with `after_lookup`.
    Lookup,
}

/// Names → addresses with expiries. Pure: every method takes `now`.
#[derive(Debug, Clone)]
pub struct Cache {
    names: HashMap<String, Entry>,
    ttl_min: Duration,
    ttl_max: Duration,
    max_names: usize,
}

impl Cache {
    pub fn new(ttl_min: Duration, ttl_max: Duration) -> Cache {
        Cache { names: HashMap::new(), ttl_min, ttl_max, max_names: defaults::MAX_NAMES }
    }

    /// Adds addresses for an already normalised name, each for its TTL
    /// clamped to `[DNS_TTL_MIN, DNS_TTL_MAX]`; an address already known
    /// keeps the later expiry.
    pub fn insert(&mut self, name: &str, ips: &[(IpAddr, Duration)], now: Instant) {
        if !self.names.contains_key(name) && self.names.len() >= self.max_names {
            self.prune(now);
            if self.names.len() >= self.max_names {
                // Still full of live names: forget one (a forgotten name is
                // only looked up again).
                if let Some(k) = self.names.keys().next().cloned() {
                    self.names.remove(&k);
                }
            }
        }
        let e = self.names.entry(name.to_owned()).or_default();
        for &(ip, ttl) in ips {
            let exp = now + ttl.clamp(self.ttl_min, self.ttl_max.max(self.ttl_min));
            let slot = e.addrs.entry(canonical(ip)).or_insert(exp);
            if *slot < exp {
                *slot = exp;
            }
        }
    }

    /// Records an upstream lookup of `name` (with what it returned).
    pub fn looked_up(&mut self, name: &str, ips: &[(IpAddr, Duration)], now: Instant) {
        self.insert(name, ips, now);
        if let Some(e) = self.names.get_mut(name) {
            e.looked_up = Some(now);
            e.failed = false;
        }
    }

    /// Records a lookup of `name` that no resolver answered.
    pub fn lookup_failed(&mut self, name: &str, now: Instant) {
        self.insert(name, &[], now);
        if let Some(e) = self.names.get_mut(name) {
            e.looked_up = Some(now);
            e.failed = true;
        }
    }

    /// Before a lookup: a match, or whether a lookup is worth it.
    pub fn check(&self, name: &str, ip: IpAddr, now: Instant) -> Cached {
        let ip = canonical(ip);
        let Some(e) = self.names.get(name) else { return Cached::Lookup };
        if e.addrs.get(&ip).is_some_and(|exp| *exp > now) {
            return Cached::Match;
        }
        match e.looked_up {
            Some(t) if now.saturating_duration_since(t) < defaults::REFRESH_MIN => self.verdict(e, now),
            _ => Cached::Lookup,
        }
    }

    /// After a lookup: the final answer.
    pub fn after_lookup(&self, name: &str, ip: IpAddr, now: Instant) -> Check {
        let ip = canonical(ip);
        let Some(e) = self.names.get(name) else { return Check::Unresolvable };
        if e.addrs.get(&ip).is_some_and(|exp| *exp > now) {
            return Check::Match;
        }
        match self.verdict(e, now) {
            Cached::Mismatch => Check::Mismatch,
            Cached::Unavailable => Check::Unavailable,
            _ => Check::Unresolvable,
        }
    }

    fn verdict(&self, e: &Entry, now: Instant) -> Cached {
        if e.addrs.values().any(|exp| *exp > now) {
            Cached::Mismatch
        } else if e.failed {
            Cached::Unavailable
        } else {
            Cached::Unresolvable
        }
    }

    /// Drops expired addresses and names with nothing left.
    pub fn prune(&mut self, now: Instant) {
        self.names.retain(|_, e| {
            e.addrs.retain(|_, exp| *exp > now);
            !e.addrs.is_empty()
                || e.looked_up.is_some_and(|t| now.saturating_duration_since(t) < defaults::REFRESH_MIN)
        });
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

/// `::ffff:a.b.c.d` and `a.b.c.d` are one address (v4 clients through a
/// dual-stack listener).
fn canonical(ip: IpAddr) -> IpAddr {
    crate::policy::cidr::canonical(ip)
}

/// The resolver the proxies ask; cheap to share behind an `Arc`.
pub struct Resolver {
    upstreams: Upstreams,
    cache: Mutex<Cache>,
    hosts: Hosts,
}

impl Resolver {
    /// `upstreams` carry egret's bypass mark (see `dns::upstream`).
    pub fn new(upstreams: Upstreams, ttl_min: Duration, ttl_max: Duration) -> Resolver {
        Resolver::with_hosts(upstreams, ttl_min, ttl_max, PathBuf::from(HOSTS))
    }

    /// [`Resolver::new`] with the pins of the hosts file at `hosts` (read
    /// now, once: see [`Hosts`]).
    pub fn with_hosts(
        upstreams: Upstreams,
        ttl_min: Duration,
        ttl_max: Duration,
        hosts: PathBuf,
    ) -> Resolver {
        Resolver { upstreams, cache: Mutex::new(Cache::new(ttl_min, ttl_max)), hosts: Hosts::read(&hosts) }
    }

    /// Does `name` resolve to `ip`? An `/etc/hosts` pin matches at once;
    /// otherwise answers from the cache when it can, else asks the
    /// upstreams for A and AAAA.
    pub fn check(&self, name: &str, ip: IpAddr) -> Check {
        let Ok(name) = normalize(name) else { return Check::Unresolvable };
        let now = Instant::now();
        if self.pinned(&name, ip) {
            return Check::Match;
        }
        match self.with_cache(|c| c.check(&name, ip, now)) {
            Cached::Match => return Check::Match,
            Cached::Mismatch => return Check::Mismatch,
            Cached::Unresolvable => return Check::Unresolvable,
            Cached::Unavailable => return Check::Unavailable,
            Cached::Lookup => {}
        }
        let answer = self.lookup(&name);
        let now = Instant::now();
        self.with_cache(|c| {
            match &answer {
                Ok(addrs) => c.looked_up(&name, addrs, now),
                Err(()) => c.lookup_failed(&name, now),
            }
            c.after_lookup(&name, ip, now)
        })
    }

    /// Addresses egret's own DNS server handed out for `name`.
    pub fn learn(&self, name: &str, ips: &[(IpAddr, Duration)], now: Instant) {
        if let Ok(name) = normalize(name) {
            self.with_cache(|c| c.insert(&name, ips, now));
        }
    }

    /// Whether `/etc/hosts` (as at start) pins `name` to `ip`.
    fn pinned(&self, name: &str, ip: IpAddr) -> bool {
        self.hosts.lookup(name).iter().any(|p| canonical(*p) == canonical(ip))
    }

    fn with_cache<T>(&self, f: impl FnOnce(&mut Cache) -> T) -> T {
        // The cache is plain data; a panic while holding the lock cannot
        // leave it inconsistent beyond a stale entry.
        let mut g = match self.cache.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g)
    }

    fn lookup(&self, name: &str) -> Result<Vec<(IpAddr, Duration)>, ()> {
        ask_addresses(&self.upstreams, name).map_err(|e| log::debug!("{e}"))
    }
}

impl Learn for Resolver {
    fn learn(&self, name: &str, ips: &[(IpAddr, Duration)]) -> Result<(), LearnError> {
        Resolver::learn(self, name, ips, Instant::now());
        Ok(())
    }
}

/// A and AAAA of `name` from `upstreams` (egret's one DNS exchange): the
/// addresses with their TTLs (empty when the name has none or does not
/// exist), or `Err` when no upstream answered either question. A SERVFAIL
/// or REFUSED counts as no answer: the next upstream is asked.
pub fn ask_addresses(upstreams: &Upstreams, name: &str) -> Result<Vec<(IpAddr, Duration)>, String> {
    let mut out = Vec::new();
    let mut answered = false;
    let mut why = Vec::new();
    for qtype in [RecordType::A, RecordType::AAAA] {
        let Some((bytes, info)) = build_query(name, qtype) else {
            return Err(format!("resolve {name:?}: not a DNS name"));
        };
        let check = |r: &[u8]| {
            let reply = filter::check_response(r, &info).map_err(|e| e.to_string())?;
            match reply.rcode {
                ResponseCode::NoError | ResponseCode::NXDomain => Ok(reply),
                other => Err(format!("answered {other}")),
            }
        };
        match upstreams.exchange(&bytes, &check, &|r| r.truncated) {
            Ok((_, reply)) => {
                answered = true;
                out.extend(reply.addrs.iter().map(|&(ip, ttl)| (ip, Duration::from_secs(ttl.into()))))
            }
            Err(e) => why.push(format!("{qtype}: {e}")),
        }
    }
    if answered {
        Ok(out)
    } else {
        Err(format!("resolve {name:?}: {}", why.join("; ")))
    }
}

/// A recursive query for `name`/`qtype` with EDNS, and what the answer
/// must match.
fn build_query(name: &str, qtype: RecordType) -> Option<(Vec<u8>, QueryInfo)> {
    let fqdn = Name::from_ascii(format!("{name}.")).ok()?;
    let q = Query::query(fqdn, qtype);
    let mut m = Message::new(0, MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(q.clone());
    let mut e = Edns::new();
    e.set_max_payload(filter::EDNS_PAYLOAD);
    m.set_edns(e);
    let bytes = m.to_vec().ok()?;
    let info = QueryInfo {
        id: 0,
        questions: vec![q],
        edns: true,
        udp_max: filter::EDNS_PAYLOAD,
        recursion_desired: true,
        checking_disabled: false,
    };
    Some((bytes, info))
}

/// The hosts file the workloads' libc reads.
pub const HOSTS: &str = "/etc/hosts";
/// The resolver configuration the workloads' libc reads.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// `/etc/hosts` as it was when egret started. Never re-read: in a pod
/// the file is shared with the workloads (Kubernetes mounts one per pod
/// into every container, Compose's `service:` mode shares it), and a
/// workload that could edit it would choose which addresses an allowed
/// name may go to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    /// Normalised name → pinned addresses, in file order.
    pins: HashMap<String, Vec<IpAddr>>,
}

impl Hosts {
    /// The file at `path` now; a missing or unreadable file pins nothing.
    pub fn read(path: &std::path::Path) -> Hosts {
        Hosts::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    pub fn parse(text: &str) -> Hosts {
        Hosts { pins: parse_hosts(text) }
    }

    /// The addresses pinned for `name` (any case, one trailing dot).
    pub fn lookup(&self, name: &str) -> &[IpAddr] {
        normalize(name).ok().and_then(|n| self.pins.get(&n)).map_or(&[], Vec::as_slice)
    }
}

/// hosts(5): `ADDRESS NAME [ALIAS...]`, `#` comments; names normalised as
/// the policy normalises them (lines egret cannot read are skipped, as
/// libc skips them).
pub fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut out: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let mut words = line.split('#').next().unwrap_or("").split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.split('%').next()?.parse::<IpAddr>().ok()) else {
            continue;
        };
        for w in words {
            if let Ok(n) = normalize(w) {
                let v = out.entry(n).or_default();
                if !v.contains(&ip) {
                    v.push(ip);
                }
            }
        }
    }
    out
}

/// Where the resolver list in effect came from, for the start-up line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamSource {
    /// `DNS_UPSTREAMS`.
    Env,
    /// The nameservers of `/etc/resolv.conf`.
    ResolvConf,
    /// `/etc/resolv.conf` names none: Docker's embedded resolver.
    Fallback,
}

impl fmt::Display for UpstreamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpstreamSource::Env => "DNS_UPSTREAMS",
            UpstreamSource::ResolvConf => "the nameservers of /etc/resolv.conf (DNS_UPSTREAMS is not set)",
            UpstreamSource::Fallback => {
                "Docker's embedded resolver (DNS_UPSTREAMS is not set and /etc/resolv.conf names no nameserver)"
            }
        })
    }
}

/// The nameservers of a resolv.conf, on port 53.
pub fn resolv_conf_upstreams(text: &str) -> Vec<SocketAddr> {
    crate::events::resolve::parse_resolv_conf(text)
        .nameservers
        .into_iter()
        .map(|ip| SocketAddr::new(ip, 53))
        .collect()
}

/// A problem with `DNS_UPSTREAMS` found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError(pub String);

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UpstreamError {}

/// Resolves `(host, port)` to socket addresses (the system resolver, or a
/// table in tests).
pub type NameLookup<'a> = dyn Fn(&str, u16) -> Result<Vec<SocketAddr>, String> + 'a;

/// The resolver list in effect: `DNS_UPSTREAMS` (names through `resolve`,
/// in the order written), else the nameservers of `resolv_conf`, else
/// `127.0.0.11:53`. Pure apart from what `resolve` does.
pub fn effective_upstreams(
    env: Option<&[crate::config::Upstream]>,
    resolv_conf: &str,
    resolve: &NameLookup<'_>,
) -> Result<(Vec<SocketAddr>, UpstreamSource), UpstreamError> {
    use crate::config::Upstream;
    let Some(list) = env else {
        let from_file = resolv_conf_upstreams(resolv_conf);
        if from_file.is_empty() {
            let fallback = crate::config::defaults::DNS_UPSTREAM.parse().expect("default upstream is valid");
            return Ok((vec![fallback], UpstreamSource::Fallback));
        }
        return Ok((from_file, UpstreamSource::ResolvConf));
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for u in list {
        let addrs = match u {
            Upstream::Addr(a) => vec![*a],
            Upstream::Name { host, port } => resolve(host, *port).map_err(|e| {
                UpstreamError(format!("DNS_UPSTREAMS entry {host}:{port} does not resolve: {e}"))
            })?,
        };
        for a in addrs {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    Ok((out, UpstreamSource::Env))
}

/// Resolves a host name through the system resolver (libc, which reads
/// `/etc/hosts` and `/etc/resolv.conf`), bounded by `timeout`.
pub fn system_resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    let (tx, rx) = std::sync::mpsc::channel();
    let target = format!("{host}:{port}");
    let spawned = std::thread::Builder::new().name("resolve-upstream".into()).spawn(move || {
        let _ = tx.send(target.to_socket_addrs().map(Iterator::collect::<Vec<_>>));
    });
    if let Err(e) = spawned {
        return Err(format!("cannot start the lookup: {e}"));
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(v)) if !v.is_empty() => Ok(v),
        Ok(Ok(_)) => Err("no addresses".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
    }
}

/// Watches `path` (polling its content every `every`) and calls `changed`
/// with the nameservers it names whenever they change; stops when
/// `changed` returns false. An unreadable or empty file changes nothing:
/// the resolvers in effect stay rather than falling back mid-flight.
pub fn watch_resolv_conf(
    path: &Path,
    every: Duration,
    mut current: Vec<SocketAddr>,
    mut changed: impl FnMut(Vec<SocketAddr>) -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let path = path.to_owned();
    std::thread::Builder::new().name("resolv-watch".into()).spawn(move || loop {
        std::thread::sleep(every);
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let now = resolv_conf_upstreams(&text);
        if now.is_empty() || now == current {
            continue;
        }
        current.clone_from(&now);
        if !changed(now) {
            return;
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn cache_table() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Cache::new(s(30), s(300));
        let name = "cdn.example.com";
        // Never seen: look up.
        assert_eq!(c.check(name, ip("10.0.0.1"), t0), Cached::Lookup);
        c.looked_up(name, &[(ip("10.0.0.1"), s(5)), (ip("fd00::1"), s(10_000))], t0);
        let cases: &[(&str, u64, Cached)] = &[
            ("10.0.0.1", 0, Cached::Match),
            ("::ffff:10.0.0.1", 0, Cached::Match),
            ("fd00::1", 0, Cached::Match),
            ("10.0.0.2", 0, Cached::Mismatch), // fresh lookup: no second try
            ("10.0.0.2", 2, Cached::Lookup),   // older than REFRESH_MIN: ask again
            ("10.0.0.1", 29, Cached::Match),   // TTL 5 s floored to 30 s
            ("10.0.0.1", 31, Cached::Lookup),  // expired
            ("fd00::1", 299, Cached::Match),   // TTL capped at 300 s
            ("fd00::1", 301, Cached::Lookup),
        ];
        for (addr, at, want) in cases {
            assert_eq!(c.check(name, ip(addr), t0 + s(*at)), *want, "{addr} at +{at}s");
        }
        assert_eq!(c.after_lookup(name, ip("10.0.0.9"), t0), Check::Mismatch);
        assert_eq!(c.after_lookup(name, ip("10.0.0.9"), t0 + s(400)), Check::Unresolvable);
        assert_eq!(c.after_lookup("other.example", ip("10.0.0.9"), t0), Check::Unresolvable);
    }

    #[test]
    fn learned_addresses_count_and_failed_lookups_are_not_repeated_at_once() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut c = Cache::new(s(1), s(60));
        c.insert("a.example", &[(ip("192.0.2.7"), s(10))], t0);
        assert_eq!(c.check("a.example", ip("192.0.2.7"), t0 + s(9)), Cached::Match);
        c.looked_up("gone.example", &[], t0);
        assert_eq!(c.check("gone.example", ip("192.0.2.7"), t0), Cached::Unresolvable);
        assert_eq!(c.check("gone.example", ip("192.0.2.7"), t0 + s(2)), Cached::Lookup);
        c.prune(t0 + s(100));
        assert!(c.is_empty());
    }

    #[test]
    fn cache_is_bounded() {
        let t0 = Instant::now();
        let mut c = Cache::new(Duration::from_secs(1), Duration::from_secs(60));
        c.max_names = 3;
        for i in 0..10 {
            c.insert(&format!("n{i}.example"), &[(ip("192.0.2.1"), Duration::from_secs(60))], t0);
        }
        assert_eq!(c.len(), 3);
    }

    /// Against a loopback upstream: resolve, match, mismatch, and learned
    /// addresses.
    #[test]
    fn resolver_over_a_real_socket() {
        use hickory_proto::rr::rdata::{A, AAAA};
        use hickory_proto::rr::{RData, Record};
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            for _ in 0..8 {
                let Ok((n, from)) = sock.recv_from(&mut buf) else { return };
                let q = Message::from_vec(&buf[..n]).unwrap();
                let qq = q.queries[0].clone();
                let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                r.add_query(qq.clone());
                let data = match qq.query_type() {
                    RecordType::A => RData::A(A::new(192, 0, 2, 10)),
                    _ => RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)),
                };
                r.add_answer(Record::from_rdata(qq.name().clone(), 60, data));
                sock.send_to(&r.to_vec().unwrap(), from).unwrap();
            }
        });
        let mut up = Upstreams::new(vec![addr], None);
        up.udp_timeout = Duration::from_millis(500);
        let r = Resolver::new(up, Duration::from_secs(1), Duration::from_secs(60));
        assert_eq!(r.check("Www.Example.COM.", ip("192.0.2.10")), Check::Match);
        assert_eq!(r.check("www.example.com", ip("2001:db8::10")), Check::Match, "from the cache");
        assert_eq!(r.check("www.example.com", ip("192.0.2.99")), Check::Mismatch);
        r.learn("www.example.com", &[(ip("192.0.2.99"), Duration::from_secs(30))], Instant::now());
        assert_eq!(r.check("www.example.com", ip("192.0.2.99")), Check::Match, "learned from egret's DNS");
        assert_eq!(r.check("bad name!", ip("192.0.2.10")), Check::Unresolvable);
        let dead = Resolver::new(
            {
                let mut u = Upstreams::new(
                    vec![std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()],
                    None,
                );
                u.udp_timeout = Duration::from_millis(200);
                u
            },
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        // Nobody answered: not a mismatch, the check could not be made.
        assert_eq!(dead.check("www.example.com", ip("192.0.2.10")), Check::Unavailable);
    }

    /// A loopback DNS server answering every query with `rcode` (and an A
    /// record 192.0.2.10 when NOERROR), `n` times.
    fn server(rcode: ResponseCode, n: usize) -> std::net::SocketAddr {
        use hickory_proto::rr::rdata::A;
        use hickory_proto::rr::{RData, Record};
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            for _ in 0..n {
                let Ok((len, from)) = sock.recv_from(&mut buf) else { return };
                let q = Message::from_vec(&buf[..len]).unwrap();
                let qq = q.queries[0].clone();
                let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                r.metadata.response_code = rcode;
                r.add_query(qq.clone());
                if rcode == ResponseCode::NoError && qq.query_type() == RecordType::A {
                    r.add_answer(Record::from_rdata(qq.name().clone(), 60, RData::A(A::new(192, 0, 2, 10))));
                }
                sock.send_to(&r.to_vec().unwrap(), from).unwrap();
            }
        });
        addr
    }

    fn resolver(addrs: Vec<std::net::SocketAddr>, hosts: PathBuf) -> Resolver {
        let mut u = Upstreams::new(addrs, None);
        u.udp_timeout = Duration::from_millis(300);
        Resolver::with_hosts(u, Duration::from_secs(1), Duration::from_secs(60), hosts)
    }

    #[test]
    fn servfail_is_unavailable_nxdomain_is_unresolvable_and_the_next_upstream_is_asked() {
        let none = PathBuf::from("/nonexistent/hosts");
        let r = resolver(vec![server(ResponseCode::ServFail, 2)], none.clone());
        assert_eq!(r.check("a.example", ip("192.0.2.10")), Check::Unavailable);
        let r = resolver(vec![server(ResponseCode::NXDomain, 2)], none.clone());
        assert_eq!(r.check("a.example", ip("192.0.2.10")), Check::Unresolvable);
        // SERVFAIL from the first: the second answers.
        let r = resolver(vec![server(ResponseCode::ServFail, 2), server(ResponseCode::NoError, 2)], none);
        assert_eq!(r.check("a.example", ip("192.0.2.10")), Check::Match);
    }

    #[test]
    fn hosts_pins_match_and_later_edits_are_ignored() {
        let dir = std::env::temp_dir().join(format!("egret-hosts-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let hosts = dir.join("hosts");
        std::fs::write(&hosts, "127.0.0.1 localhost\n10.9.8.7 pinned.example Alias.Example. # compose\n")
            .unwrap();
        // No upstream answers at all: the pins alone decide.
        let dead = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let r = resolver(vec![dead], hosts.clone());
        assert_eq!(r.check("pinned.example", ip("10.9.8.7")), Check::Match);
        assert_eq!(r.check("alias.example", ip("::ffff:10.9.8.7")), Check::Match);
        // Another address of a pinned name still asks DNS (which is down).
        assert_eq!(r.check("pinned.example", ip("10.9.8.8")), Check::Unavailable);
        // A later edit (a workload sharing the file) changes nothing.
        std::fs::write(&hosts, "10.9.8.8 pinned.example\n").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(r.check("pinned.example", ip("10.9.8.8")), Check::Unavailable);
        assert_eq!(r.check("pinned.example", ip("10.9.8.7")), Check::Match);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn effective_upstreams_table() {
        use crate::config::Upstream;
        let names = |host: &str, port: u16| match host {
            "resolver.test" => Ok(vec![format!("10.0.0.53:{port}").parse().unwrap()]),
            _ => Err("no such host".to_owned()),
        };
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let k8s = "search ns.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n";
        let podman = "nameserver 10.89.0.1\nnameserver fd00::1\n";
        type Want = Result<(Vec<SocketAddr>, UpstreamSource), String>;
        let cases: Vec<(Option<Vec<Upstream>>, &str, Want)> = vec![
            (None, k8s, Ok((vec![sa("10.96.0.10:53")], UpstreamSource::ResolvConf))),
            (None, podman, Ok((vec![sa("10.89.0.1:53"), sa("[fd00::1]:53")], UpstreamSource::ResolvConf))),
            (None, "# empty\n", Ok((vec![sa("127.0.0.11:53")], UpstreamSource::Fallback))),
            (
                Some(vec![
                    Upstream::Addr(sa("10.1.1.1:53")),
                    Upstream::Name { host: "resolver.test".into(), port: 5353 },
                ]),
                k8s,
                Ok((vec![sa("10.1.1.1:53"), sa("10.0.0.53:5353")], UpstreamSource::Env)),
            ),
            (
                Some(vec![Upstream::Name { host: "gone.test".into(), port: 53 }]),
                k8s,
                Err("DNS_UPSTREAMS entry gone.test:53 does not resolve: no such host".into()),
            ),
        ];
        for (env, rc, want) in cases {
            let got = effective_upstreams(env.as_deref(), rc, &names).map_err(|e| e.to_string());
            assert_eq!(got, want, "{env:?} / {rc:?}");
        }
    }

    #[test]
    fn hosts_parse() {
        let h = parse_hosts(
            "10.0.0.1 a.test b.TEST. # c\n::1 localhost ip6-localhost\nbad line\n10.0.0.2 a.test\n",
        );
        assert_eq!(h["a.test"], [ip("10.0.0.1"), ip("10.0.0.2")]);
        assert_eq!(h["b.test"], [ip("10.0.0.1")]);
        assert_eq!(h["localhost"], [ip("::1")]);
    }

    #[test]
    fn the_watcher_reports_changed_nameservers() {
        let dir = std::env::temp_dir().join(format!("egret-rc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rc = dir.join("resolv.conf");
        std::fs::write(&rc, "nameserver 10.0.0.1\n").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let start = resolv_conf_upstreams("nameserver 10.0.0.1\n");
        let t =
            watch_resolv_conf(&rc, Duration::from_millis(20), start, move |v| tx.send(v).is_ok()).unwrap();
        std::fs::write(&rc, "nameserver 10.0.0.2\n").unwrap();
        let got = rx.recv_timeout(Duration::from_secs(5)).expect("a change is reported");
        assert_eq!(got, ["10.0.0.2:53".parse::<SocketAddr>().unwrap()]);
        drop(rx);
        // The next change finds the receiver gone and the thread ends.
        std::fs::write(&rc, "nameserver 10.0.0.3\n").unwrap();
        let ended = (0..250).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            t.is_finished()
        });
        assert!(ended, "the watcher must stop once nobody listens");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
