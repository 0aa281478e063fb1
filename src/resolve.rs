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
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

mod marked;
pub mod named;
mod system;

pub use marked::{MarkedResolver, ResolveError};
pub use system::{
    effective_upstreams, system_resolve, watch_resolv_conf, Hosts, NameLookup, ResolvConf, UpstreamError,
    UpstreamSource, HOSTS, RESOLV_CONF,
};

use crate::dns::filter::{self, QueryInfo};
use crate::dns::learn::{Learn, LearnError};
use crate::dns::upstream::Upstreams;
use crate::policy::normalize;

/// The answer to "does this name resolve to this address?".
#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// `DNS_HARDENING` refused to ask the upstream for the name (its
    /// lengths, or the client's rate or zone budget): it was not looked up.
    Hardened(crate::dns::harden::Refusal),
    /// The client holds its share of egret's file descriptors (or none is
    /// left): the lookup's socket was not opened.
    NoDescriptor(crate::fair::Refusal),
    /// The name resolves to the address, but through a CNAME or DNAME
    /// target the denylist refuses (the link and the entry's reason): as
    /// in DNS mode, nothing past a denylisted link is served.
    DeniedLink(String),
}

/// Who a check is for: the client whose connection named the name, the
/// policy rule that allowed it (whose zone the name counts against), the
/// policy whose denylist the answer's chain must pass, and the client's
/// share of egret's file descriptors.
#[derive(Debug, Clone, Copy)]
pub struct Asking<'a> {
    pub client: crate::peer::Client,
    pub rule: Option<&'a crate::policy::Pattern>,
    /// `None`: the chain is not judged.
    pub policy: Option<&'a crate::policy::Policy>,
    /// A lookup that goes upstream opens a socket: it holds one of the
    /// client's descriptor tickets while it does, or is not made
    /// (`escape_74`). `None`: not counted.
    pub descriptors: Option<&'a std::sync::Arc<crate::fair::Admission<crate::peer::Client>>>,
}

impl Asking<'_> {
    /// For `client`, no rule, descriptors not counted.
    pub fn of(client: crate::peer::Client) -> Asking<'static> {
        Asking { client, rule: None, policy: None, descriptors: None }
    }
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
    /// Every CNAME/DNAME target its answers led through, judged against
    /// the denylist at each check (a reload may denylist one).
    chain: Vec<String>,
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

    /// Records the CNAME/DNAME targets an answer for `name` led through.
    pub fn chained(&mut self, name: &str, chain: &[String]) {
        if let Some(e) = self.names.get_mut(name) {
            filter::merge_links(&mut e.chain, chain);
        }
    }

    /// Adds links kept already (a lookup's [`Answer::chain`]).
    pub fn keep_chain(&mut self, name: &str, kept: &[String]) {
        if let Some(e) = self.names.get_mut(name) {
            filter::merge_kept(&mut e.chain, kept);
        }
    }

    /// The first link of `name`'s recorded chain that `policy`'s denylist
    /// refuses.
    pub fn denied_link(&self, name: &str, policy: &crate::policy::Policy) -> Option<String> {
        filter::denied_in_kept(self.chain_of(name), policy).map(|(link, _)| link)
    }

    /// The CNAME/DNAME targets recorded for `name` (none when unknown).
    pub fn chain_of(&self, name: &str) -> &[String] {
        self.names.get(name).map_or(&[], |e| e.chain.as_slice())
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
    /// `DNS_HARDENING` with `DNS_IN_HTTPS_MODE`: every lookup a check
    /// would make is first spent from this budget (the DNS server's own),
    /// so an SNI or Host cannot carry what a query could not.
    budget: Option<crate::dns::budget::Shared>,
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
        Resolver {
            upstreams,
            cache: Mutex::new(Cache::new(ttl_min, ttl_max)),
            hosts: Hosts::read(&hosts),
            budget: None,
        }
    }

    /// Lookups pass `budget` (the hardening's) before they are made.
    pub fn hardened(self, budget: Option<crate::dns::budget::Shared>) -> Resolver {
        Resolver { budget, ..self }
    }

    /// Does `name` resolve to `ip`? An `/etc/hosts` pin matches at once;
    /// otherwise answers from the cache when it can, else (when the
    /// hardening lets `asking` spend a query on it) asks the upstreams for
    /// A and AAAA.
    pub fn check(&self, name: &str, ip: IpAddr, asking: Asking<'_>) -> Check {
        let Ok(name) = normalize(name) else { return Check::Unresolvable };
        // A match is judged by the name's recorded chain under the same
        // lock that found it.
        let judged = |c: &Cache| match asking.policy.and_then(|p| c.denied_link(&name, p)) {
            Some(link) => Check::DeniedLink(link),
            None => Check::Match,
        };
        let now = Instant::now();
        if self.pinned(&name, ip) {
            return self.with_cache(|c| judged(c));
        }
        let cached = self.with_cache(|c| match c.check(&name, ip, now) {
            Cached::Match => Some(judged(c)),
            Cached::Mismatch => Some(Check::Mismatch),
            Cached::Unresolvable => Some(Check::Unresolvable),
            Cached::Unavailable => Some(Check::Unavailable),
            Cached::Lookup => None,
        });
        if let Some(check) = cached {
            return check;
        }
        if let Some(r) = self.hardening(&name, asking, now) {
            return Check::Hardened(r);
        }
        // Held until the lookup's socket is closed.
        let _fd = match asking.descriptors.map(|d| d.admit(asking.client)) {
            Some(Err(r)) => return Check::NoDescriptor(r),
            ticket => ticket,
        };
        let answer = self.lookup(&name);
        let now = Instant::now();
        self.with_cache(|c| {
            match &answer {
                Ok(a) => {
                    c.looked_up(&name, &a.ips, now);
                    c.keep_chain(&name, &a.chain);
                }
                Err(()) => c.lookup_failed(&name, now),
            }
            match c.after_lookup(&name, ip, now) {
                Check::Match => judged(c),
                other => other,
            }
        })
    }

    /// The hardening's refusal of a lookup of `name` for `asking`, as the
    /// DNS server refuses the same query (one query's worth of the rate,
    /// the name against its zone's budget).
    fn hardening(&self, name: &str, asking: Asking<'_>, now: Instant) -> Option<crate::dns::harden::Refusal> {
        let budget = self.budget.as_ref()?;
        let zone = crate::dns::harden::zone_of(name, asking.rule);
        let mut b = budget.lock().unwrap_or_else(|e| e.into_inner());
        match b.check(asking.client, name, RecordType::A, zone, now) {
            crate::dns::harden::Verdict::Allow => None,
            crate::dns::harden::Verdict::Refuse(r) => Some(r),
        }
    }

    /// Addresses egret's own DNS server handed out for `name`.
    pub fn learn(&self, name: &str, ips: &[(IpAddr, Duration)], now: Instant) {
        self.learn_chained(name, &[], ips, now)
    }

    /// As [`Resolver::learn`], with the answer's CNAME/DNAME targets.
    pub fn learn_chained(&self, name: &str, chain: &[String], ips: &[(IpAddr, Duration)], now: Instant) {
        if let Ok(name) = normalize(name) {
            self.with_cache(|c| {
                c.insert(&name, ips, now);
                c.chained(&name, chain);
            });
        }
    }

    /// `name`'s recorded chain (empty when the cache holds none).
    pub fn chain(&self, name: &str) -> Vec<String> {
        let Ok(name) = normalize(name) else { return Vec::new() };
        self.with_cache(|c| c.chain_of(&name).to_vec())
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

    fn lookup(&self, name: &str) -> Result<Answer, ()> {
        ask_answer(&self.upstreams, name).map_err(|e| log::debug!("{e}"))
    }
}

impl Learn for Resolver {
    fn learn(&self, name: &str, ips: &[(IpAddr, Duration)]) -> Result<(), LearnError> {
        Resolver::learn(self, name, ips, Instant::now());
        Ok(())
    }

    fn learn_answer(
        &self,
        name: &str,
        chain: &[String],
        ips: &[(IpAddr, Duration)],
    ) -> Result<(), LearnError> {
        self.learn_chained(name, chain, ips, Instant::now());
        Ok(())
    }
}

/// What the upstreams said of a name: its A and AAAA addresses with their
/// TTLs, and the CNAME/DNAME targets the answers led through.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Answer {
    pub ips: Vec<(IpAddr, Duration)>,
    /// The replies' links, kept as [`filter::merge_links`] keeps them
    /// (judged with [`filter::denied_in_kept`]).
    pub chain: Vec<String>,
}

/// A and AAAA of `name` from `upstreams` (egret's one DNS exchange): the
/// addresses with their TTLs (empty when the name has none or does not
/// exist), or `Err` when no upstream answered either question. A SERVFAIL
/// or REFUSED counts as no answer: the next upstream is asked.
pub fn ask_addresses(upstreams: &Upstreams, name: &str) -> Result<Vec<(IpAddr, Duration)>, String> {
    ask_answer(upstreams, name).map(|a| a.ips)
}

/// As [`ask_addresses`], with the answers' chain.
pub fn ask_answer(upstreams: &Upstreams, name: &str) -> Result<Answer, String> {
    let mut out = Answer::default();
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
                out.ips.extend(reply.addrs.iter().map(|&(ip, ttl)| (ip, Duration::from_secs(ttl.into()))));
                // Each reply's chain is one answer's: the A and the AAAA
                // reply may lead through different links, 9 each, and
                // are not one chain of 18 (round 15, escape_230/231).
                filter::merge_links(&mut out.chain, &reply.chain);
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
        audit: None,
    };
    Some((bytes, info))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A check for nobody in particular, under no rule.
    const ASK: Asking<'static> =
        Asking { client: crate::peer::Client::Unknown, rule: None, policy: None, descriptors: None };

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

    use crate::policy::from_yaml as yaml_policy;

    /// The chain a name's answers led through is kept, bounded, and
    /// judged against the policy given at the check (a reload may
    /// denylist a link of a chain cached before it).
    #[test]
    fn a_cached_chain_is_judged_against_the_current_denylist() {
        let t0 = Instant::now();
        let mut c = Cache::new(Duration::from_secs(1), Duration::from_secs(60));
        c.looked_up("alias.example", &[(ip("192.0.2.7"), Duration::from_secs(60))], t0);
        c.chained("alias.example", &["cdn.example".into(), "evil.example".into()]);
        c.chained("alias.example", &["evil.example".into()]);
        let open = yaml_policy("default_action: allow\ndenylist:\n  domains: [\"other.example\"]\n");
        let deny = yaml_policy(
            "default_action: allow\ndenylist:\n  domains: [\"*.evil.example\", \"evil.example\"]\n",
        );
        assert_eq!(c.denied_link("alias.example", &open), None);
        assert_eq!(c.denied_link("alias.example", &deny).as_deref(), Some("evil.example"));
        assert_eq!(c.denied_link("unknown.example", &deny), None);
        for i in 0..100 {
            c.chained("alias.example", &[format!("l{i}.example")]);
        }
        assert_eq!(c.names["alias.example"].chain.len(), filter::MAX_KEPT + 1, "the chain is bounded");
        assert_eq!(
            c.denied_link("alias.example", &open).as_deref(),
            Some("a chain of more than 64 links"),
            "past the bound, refused under a denylist of names"
        );
        assert_eq!(c.names["alias.example"].chain[..2], ["cdn.example", "evil.example"], "once each");
    }

    /// Against a loopback upstream answering a CNAME chain: the check
    /// matches the address, and refuses it under a denylist on the link.
    #[test]
    fn a_check_through_a_denylisted_link_is_refused() {
        use hickory_proto::rr::rdata::{A, CNAME};
        use hickory_proto::rr::{RData, Record};
        let addr = upstream(4, |r, qq| {
            let target = Name::from_ascii("evil.example.").unwrap();
            r.add_answer(Record::from_rdata(qq.name().clone(), 60, RData::CNAME(CNAME(target.clone()))));
            if qq.query_type() == RecordType::A {
                r.add_answer(Record::from_rdata(target, 60, RData::A(A::new(192, 0, 2, 66))));
            }
        });
        let r = resolver(vec![addr], PathBuf::from("/nonexistent/hosts"));
        let deny = yaml_policy("default_action: allow\ndenylist:\n  domains: [\"evil.example\"]\n");
        let open = yaml_policy("default_action: allow\ndenylist:\n  domains: [\"other.example\"]\n");
        let with = |p| Asking { policy: Some(p), ..ASK };
        assert_eq!(r.check("alias.example", ip("192.0.2.66"), with(&open)), Check::Match);
        assert_eq!(
            r.check("alias.example", ip("192.0.2.66"), with(&deny)),
            Check::DeniedLink("evil.example".into()),
            "from the cache, under the new denylist"
        );
        assert_eq!(r.check("alias.example", ip("192.0.2.66"), ASK), Check::Match, "no policy: not judged");
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
        let addr = upstream(8, |r, qq| {
            let data = match qq.query_type() {
                RecordType::A => RData::A(A::new(192, 0, 2, 10)),
                _ => RData::AAAA(AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10)),
            };
            r.add_answer(Record::from_rdata(qq.name().clone(), 60, data));
        });
        let r = resolver(vec![addr], PathBuf::from("/nonexistent/hosts"));
        assert_eq!(r.check("Www.Example.COM.", ip("192.0.2.10"), ASK), Check::Match);
        assert_eq!(r.check("www.example.com", ip("2001:db8::10"), ASK), Check::Match, "from the cache");
        assert_eq!(r.check("www.example.com", ip("192.0.2.99"), ASK), Check::Mismatch);
        r.learn("www.example.com", &[(ip("192.0.2.99"), Duration::from_secs(30))], Instant::now());
        assert_eq!(
            r.check("www.example.com", ip("192.0.2.99"), ASK),
            Check::Match,
            "learned from egret's DNS"
        );
        assert_eq!(r.check("bad name!", ip("192.0.2.10"), ASK), Check::Unresolvable);
        let silent = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let dead = resolver(vec![silent], PathBuf::from("/nonexistent/hosts"));
        // Nobody answered: not a mismatch, the check could not be made.
        assert_eq!(dead.check("www.example.com", ip("192.0.2.10"), ASK), Check::Unavailable);
    }

    /// A loopback DNS server (UDP: the resolver's TCP rule has its own
    /// tests) answering `n` queries, each reply (id and question set)
    /// filled in by `answer`.
    fn upstream(
        n: usize,
        answer: impl Fn(&mut Message, &hickory_proto::op::Query) + Send + 'static,
    ) -> std::net::SocketAddr {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let addr = sock.local_addr().unwrap();
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            for _ in 0..n {
                let Ok((len, from)) = sock.recv_from(&mut buf) else { return };
                let q = Message::from_vec(&buf[..len]).unwrap();
                let qq = q.queries[0].clone();
                let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
                r.add_query(qq.clone());
                answer(&mut r, &qq);
                sock.send_to(&r.to_vec().unwrap(), from).unwrap();
            }
        });
        addr
    }

    /// A loopback DNS server answering every query with `rcode` (and an A
    /// record 192.0.2.10 when NOERROR), `n` times.
    fn server(rcode: ResponseCode, n: usize) -> std::net::SocketAddr {
        use hickory_proto::rr::rdata::A;
        use hickory_proto::rr::{RData, Record};
        upstream(n, move |r, qq| {
            r.metadata.response_code = rcode;
            if rcode == ResponseCode::NoError && qq.query_type() == RecordType::A {
                r.add_answer(Record::from_rdata(qq.name().clone(), 60, RData::A(A::new(192, 0, 2, 10))));
            }
        })
    }

    fn resolver(addrs: Vec<std::net::SocketAddr>, hosts: PathBuf) -> Resolver {
        let mut u = Upstreams::new(addrs, None);
        u.udp_timeout = Duration::from_millis(300);
        u.udp_on_loopback = true;
        Resolver::with_hosts(u, Duration::from_secs(1), Duration::from_secs(60), hosts)
    }

    #[test]
    fn servfail_is_unavailable_nxdomain_is_unresolvable_and_the_next_upstream_is_asked() {
        let none = PathBuf::from("/nonexistent/hosts");
        let r = resolver(vec![server(ResponseCode::ServFail, 2)], none.clone());
        assert_eq!(r.check("a.example", ip("192.0.2.10"), ASK), Check::Unavailable);
        let r = resolver(vec![server(ResponseCode::NXDomain, 2)], none.clone());
        assert_eq!(r.check("a.example", ip("192.0.2.10"), ASK), Check::Unresolvable);
        // SERVFAIL from the first: the second answers.
        let r = resolver(vec![server(ResponseCode::ServFail, 2), server(ResponseCode::NoError, 2)], none);
        assert_eq!(r.check("a.example", ip("192.0.2.10"), ASK), Check::Match);
    }

    #[test]
    fn hardening_refuses_a_lookup_before_it_is_made_and_spends_the_clients_budget() {
        use crate::dns::harden::{self, Limits, Reason};
        let none = PathBuf::from("/nonexistent/hosts");
        let limits = Limits { rate_qps: 1000, rate_burst: 1000, zone_budget: 2, ..Limits::default() };
        let budget = crate::dns::budget::shared(limits);
        // Answers two names (A and AAAA each), then nothing: a third
        // lookup would be Unavailable, not Hardened.
        let r = resolver(vec![server(ResponseCode::NoError, 4)], none).hardened(Some(budget.clone()));
        let zone = crate::policy::Pattern::Subdomains("z.example".into());
        let me = Asking {
            client: crate::peer::Client::Uid(1000),
            rule: Some(&zone),
            policy: None,
            descriptors: None,
        };
        let hardened = |c: Check| match c {
            Check::Hardened(r) => Some(r.reason),
            _ => None,
        };
        let long = format!("{}.z.example", "d".repeat(63));
        assert_eq!(hardened(r.check(&long, ip("192.0.2.10"), me)), Some(Reason::LabelLength));
        assert_eq!(r.check("a.z.example", ip("192.0.2.10"), me), Check::Match);
        assert_eq!(r.check("b.z.example", ip("192.0.2.10"), me), Check::Match);
        assert_eq!(r.check("b.z.example", ip("192.0.2.10"), me), Check::Match, "cached: no lookup");
        assert_eq!(hardened(r.check("c.z.example", ip("192.0.2.10"), me)), Some(Reason::Budget));
        // The budget is the DNS server's too: its queries see it spent.
        let v = budget.lock().unwrap().check(
            crate::peer::Client::Uid(1000),
            "d.z.example",
            RecordType::A,
            "z.example",
            Instant::now(),
        );
        assert!(matches!(v, harden::Verdict::Refuse(_)), "{v:?}");
        // Another client has its own budget (and asks the dead server).
        let you = Asking { client: crate::peer::Client::Uid(1001), ..me };
        assert_eq!(r.check("c.z.example", ip("192.0.2.10"), you), Check::Unavailable);
        // Without hardening the same lookup is made.
        let plain = resolver(vec![server(ResponseCode::NoError, 2)], PathBuf::from("/nonexistent/hosts"));
        assert_eq!(plain.check(&long, ip("192.0.2.10"), me), Check::Match);
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
        assert_eq!(r.check("pinned.example", ip("10.9.8.7"), ASK), Check::Match);
        assert_eq!(r.check("alias.example", ip("::ffff:10.9.8.7"), ASK), Check::Match);
        // Another address of a pinned name still asks DNS (which is down).
        assert_eq!(r.check("pinned.example", ip("10.9.8.8"), ASK), Check::Unavailable);
        // A later edit (a workload sharing the file) changes nothing.
        std::fs::write(&hosts, "10.9.8.8 pinned.example\n").unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        assert_eq!(r.check("pinned.example", ip("10.9.8.8"), ASK), Check::Unavailable);
        assert_eq!(r.check("pinned.example", ip("10.9.8.7"), ASK), Check::Match);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
