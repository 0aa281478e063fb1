//! The transparent HTTP (Host) and TLS (SNI) proxies.
//!
//! The kernel redirects workload TCP 80/443 to egret's loopback listeners;
//! for each connection the proxy reads the request head or ClientHello
//! ([`http`], [`tls`]: pure parsers), decides with the policy and the
//! anti-spoofing [`DestinationCheck`] ([`decide`]: pure), then either
//! refuses (TLS: reset; HTTP: 403) or connects to the original destination
//! with the bypass mark and relays ([`relay`], splice(2)).
//!
//! Threads: one `proxy-listen` thread owns a mio `Poll` with the listeners
//! ([`listener`]); each accepted connection gets a `conn` thread of its
//! own ([`conn`]), bounded by `MAX_CONNECTIONS`; finished threads wait for
//! the next connection ([`pool`]).

pub mod conn;
pub mod http;
pub mod listener;
pub mod pool;
pub mod registry;
pub mod relay;
pub mod tls;
pub mod verdict;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use crate::config::Config;
use crate::policy::{self, Guard, Policy, Query};

pub use listener::{start, ProxyHandle};

/// Does `name` resolve to `ip`? The answer the anti-spoofing check needs
/// (one type for the resolver and the proxies).
pub use crate::resolve::{Asking, Check};

/// Which listener accepted the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Http,
    Https,
}

impl Kind {
    pub fn component(self) -> crate::events::Component {
        match self {
            Kind::Http => crate::events::Component::Http,
            Kind::Https => crate::events::Component::Https,
        }
    }
}

/// The anti-spoofing oracle. The real one resolves through
/// `DNS_UPSTREAMS` with marked sockets and caches by TTL (the DNS
/// component); the tests use a fixed hosts table.
pub trait DestinationCheck: Send + Sync {
    /// `name` is already normalised; `asking` is who named it.
    fn check(&self, name: &str, ip: IpAddr, asking: Asking<'_>) -> Check;

    /// The chain `name`'s answers led through, as far as known: what a
    /// connection checked under an older policy is judged by again (the
    /// re-check after registering, a reload's revocation; round 10,
    /// escape_178 and escape_183).
    fn chain(&self, name: &str) -> Vec<String> {
        let _ = name;
        Vec::new()
    }
}

/// The real oracle: the TTL-cached resolver over `DNS_UPSTREAMS`, which
/// also knows what egret's own DNS server handed out.
impl DestinationCheck for crate::resolve::Resolver {
    fn check(&self, name: &str, ip: IpAddr, asking: Asking<'_>) -> Check {
        crate::resolve::Resolver::check(self, name, ip, asking)
    }

    fn chain(&self, name: &str) -> Vec<String> {
        crate::resolve::Resolver::chain(self, name)
    }
}

/// Tests' fixed oracle: a hosts(5) table, parsed as egret parses
/// /etc/hosts pins.
#[cfg(test)]
impl DestinationCheck for crate::resolve::Hosts {
    fn check(&self, name: &str, ip: IpAddr, _: Asking<'_>) -> Check {
        match self.lookup(name) {
            [] => Check::Unresolvable,
            ips if ips.iter().any(|a| policy::cidr::canonical(*a) == policy::cidr::canonical(ip)) => {
                Check::Match
            }
            _ => Check::Mismatch,
        }
    }
}

/// Why a connection or request was refused; `reason` is the event's
/// `reason` field, `note` adds detail for operators.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub reason: &'static str,
    pub note: Option<String>,
}

impl Block {
    pub fn new(reason: &'static str) -> Block {
        Block { reason, note: None }
    }

    pub fn with_note(reason: &'static str, note: impl Into<String>) -> Block {
        Block { reason, note: Some(note.into()) }
    }
}

/// Event reasons of the proxies: g0efilter's values where it has one
/// (`not-allowlisted`, `no-sni`, `no-host`, `peek-failed` for TLS,
/// `parse-failed` for HTTP), egret's own for what g0efilter does not check.
/// README.md, "Event reasons", is the table.
pub mod reason {
    /// The name is not in the policy (g0efilter's value).
    pub const NOT_ALLOWLISTED: &str = "not-allowlisted";
    /// A denylist entry refused the name or the destination.
    pub const DENYLISTED: &str = "denylisted";
    pub const IP_MISMATCH: &str = "ip-mismatch";
    /// The anti-spoofing check got no answer from any resolver.
    pub const RESOLVER_UNAVAILABLE: &str = "resolver-unavailable";
    /// `DNS_HARDENING` refused the anti-spoofing lookup of the name (the
    /// note says which limit, as the DNS server's refusal would): it was
    /// never asked upstream.
    pub const HARDENING: &str = "hardening";
    /// A request head that is not HTTP/1.x we can check (g0efilter's value).
    pub const PARSE_FAILED: &str = "parse-failed";
    pub const NO_SNI: &str = "no-sni";
    pub const NO_HOST: &str = "no-host";
    pub const HOST_MISMATCH: &str = "host-mismatch";
    pub const PEEK_FAILED: &str = "peek-failed";
    pub const INVALID_NAME: &str = "invalid-name";
    pub const LIMIT: &str = "limit";
    pub const HEADER_TIMEOUT: &str = "header-timeout";
    /// The original destination is egret itself, or there was no redirect.
    pub const SELF_DESTINATION: &str = "self-destination";
    /// The destination is in a class `GUARD_ADDRESSES` guards (the note
    /// names the class and the address).
    pub const DESTINATION_GUARDED: &str = crate::policy::guard::REASON;
}

/// The per-connection decision on a normalised name and the original
/// destination address: the policy first, then the SSRF guard on the
/// destination, then (when `verify`) the anti-spoofing check. Pure apart
/// from what `check` does.
///
/// The guard looks at the destination itself, not at what the name
/// resolves to: with `verify` the two are the same address (a destination
/// the name does not resolve to is refused anyway), and without it the
/// destination is still where egret would connect. So a name that once
/// answered a public address and now a guarded one (DNS rebinding) is
/// refused on every connection to the guarded one, whatever is cached.
pub fn decide(
    policy: &Policy,
    name: &str,
    dst: SocketAddr,
    verify: bool,
    guard: &Guard,
    check: &dyn DestinationCheck,
    asking: Asking<'_>,
) -> Result<policy::Decision, Block> {
    // The proxies carry TCP only: an address entry open on this port
    // (`tcp/10.0.0.5:443`) lets the connection through by address, as
    // the kernel does; one on another port does not.
    let (ip, port) = (dst.ip(), Some((policy::Proto::Tcp, dst.port())));
    let d = policy.decide(Query { name: Some(name), ip: Some(ip), port });
    if !d.allowed() {
        return Err(match (d.reason, &d.rule) {
            (policy::Reason::InvalidName, _) => Block::new(reason::INVALID_NAME),
            (policy::Reason::Denylisted, Some(rule)) => {
                Block::with_note(reason::DENYLISTED, format!("denylist {rule}"))
            }
            _ => Block::new(reason::NOT_ALLOWLISTED),
        });
    }
    // The guard first: an entry of allowlist.ips that merely covers a
    // guarded address (`::/0`, a NAT64 prefix) does not list it, and the
    // ruleset sends such a connection here for this check.
    if let Some(g) = guard.check_at(policy, ip, port) {
        return Err(guarded(g));
    }
    // An address in allowlist.ips needs no name check; the kernel normally
    // lets it through without redirecting it here at all.
    if d.reason == policy::Reason::IpAllowed {
        return Ok(d);
    }
    if !verify {
        return Ok(d);
    }
    let rule = match &d.rule {
        Some(policy::Rule::Domain(p)) => Some(p),
        _ => None,
    };
    match check.check(name, ip, Asking { rule, policy: Some(policy), ..asking }) {
        Check::Match => Ok(d),
        Check::Mismatch => {
            Err(Block::with_note(reason::IP_MISMATCH, format!("{name} does not resolve to {ip}")))
        }
        Check::Unresolvable => Err(Block::with_note(reason::IP_MISMATCH, format!("{name} does not resolve"))),
        Check::Unavailable => Err(Block::with_note(
            reason::RESOLVER_UNAVAILABLE,
            format!("no resolver answered for {name}, so {ip} could not be checked"),
        )),
        Check::Hardened(r) => Err(Block::with_note(
            reason::HARDENING,
            format!("{}: {}; {name} was not looked up", r.reason.as_str(), r.note),
        )),
        Check::NoDescriptor(r) => Err(verdict::no_descriptor(r)),
        Check::DeniedLink(link) => {
            Err(Block::with_note(reason::DENYLISTED, format!("{name} resolves through denylisted {link}")))
        }
    }
}

/// An IP literal where a name should be (`Host: 10.0.0.1`, an address as
/// SNI). g0efilter's matcher lets one through only under `domains: ["*"]`,
/// and so does egret; with `verify` the literal must also be the
/// connection's destination (the literal is the "name", and a request
/// naming one address while sent to another is a spoof like any other).
pub fn decide_literal(
    policy: &Policy,
    literal: IpAddr,
    dst: IpAddr,
    verify: bool,
    guard: &Guard,
) -> Result<(), Block> {
    if !policy.allows_any_name() {
        return Err(Block::with_note(
            reason::NOT_ALLOWLISTED,
            format!("{literal} is an address, not a name; only domains: [\"*\"] allows one"),
        ));
    }
    // Under the default allow, the literal is judged as the address it is
    // (the kernel refuses a denylisted destination before it gets here).
    for ip in [literal, dst] {
        let d = policy.decide(Query { name: None, ip: Some(ip), port: None });
        if let (policy::Reason::Denylisted, Some(rule)) = (d.reason, &d.rule) {
            return Err(Block::with_note(reason::DENYLISTED, format!("denylist {rule}")));
        }
    }
    // `*` allows every name, not every destination.
    if let Some(g) = guard.check(policy, dst) {
        return Err(guarded(g));
    }
    if verify && policy::cidr::canonical(literal) != policy::cidr::canonical(dst) {
        return Err(Block::with_note(reason::IP_MISMATCH, format!("{literal} is not the destination {dst}")));
    }
    Ok(())
}

/// A refusal by the SSRF guard: `note` is `<class> address <ip>`.
fn guarded(g: policy::guard::Guarded) -> Block {
    Block::with_note(reason::DESTINATION_GUARDED, g.to_string())
}

/// What the proxies need from the configuration, plus the bypass mark.
#[derive(Debug, Clone)]
pub struct Settings {
    pub http_port: u16,
    pub https_port: u16,
    /// Loopback addresses to listen on (127.0.0.1 and ::1).
    pub listen: Vec<IpAddr>,
    pub max_connections: usize,
    /// File descriptors the connections may hold (one each while a head
    /// is read, two once relayed), shared fairly among clients
    /// ([`fit_to_descriptors`]; unbounded by default).
    pub descriptors: usize,
    pub header_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// `None`: no upper bound.
    pub max_lifetime: Option<Duration>,
    pub verify_destination: bool,
    /// `GUARD_ADDRESSES`: destination classes an allowed name is never
    /// relayed to.
    pub guard: Guard,
    /// SO_MARK of upstream sockets, so the ruleset lets them through.
    pub mark: u32,
    /// SO_MARK of the listening sockets, so the ruleset delivers redirected
    /// traffic to them (`None`: unmarked, for tests and tools).
    pub listen_mark: Option<u32>,
    /// The listeners that could not be bound (reported by `/health`).
    pub listeners: Arc<crate::listen::Status>,
}

impl Settings {
    pub fn from_config(cfg: &Config, id: &crate::nft::Identity) -> Settings {
        Settings {
            http_port: cfg.http_port,
            https_port: cfg.https_port,
            listen: vec![IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)],
            max_connections: cfg.max_connections,
            descriptors: usize::MAX,
            header_timeout: cfg.header_timeout,
            connect_timeout: cfg.connect_timeout,
            idle_timeout: cfg.idle_timeout,
            max_lifetime: (!cfg.max_lifetime.is_zero()).then_some(cfg.max_lifetime),
            verify_destination: cfg.verify_destination,
            guard: cfg.guard_addresses,
            mark: id.mark,
            listen_mark: Some(id.listen_mark),
            listeners: Arc::default(),
        }
    }
}

/// Raises the soft open-file limit to the hard limit: every proxied
/// connection holds two sockets, and each direction carrying bulk data a
/// pipe (two more). Returns the new limit.
pub fn raise_nofile_limit() -> std::io::Result<u64> {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (soft, hard) = getrlimit(Resource::RLIMIT_NOFILE)?;
    if soft < hard {
        setrlimit(Resource::RLIMIT_NOFILE, hard, hard)?;
    }
    Ok(hard)
}

/// The soft open-file limit in force now.
pub fn nofile_limit() -> std::io::Result<u64> {
    Ok(nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)?.0)
}

/// Sets `settings.descriptors` from the open-file limit in force
/// ([`crate::fair::descriptor_budget`]; called after
/// [`raise_nofile_limit`]), and says so once when they bind before
/// MAX_CONNECTIONS does.
pub fn fit_to_descriptors(settings: &mut Settings) {
    let nofile = match nofile_limit() {
        Ok(n) => n,
        Err(e) => {
            log::warn!("cannot read the open-file limit: {e}; connections are not counted against it");
            return;
        }
    };
    let budget = crate::fair::descriptor_budget(nofile);
    settings.descriptors = budget;
    if crate::fair::descriptors_bind(settings.max_connections, budget) {
        log::warn!(
            "the open-file limit ({nofile}) binds before MAX_CONNECTIONS={}: connections share {budget} \
             descriptors (one while a head is read, {} once relayed; {} kept for the rest), a client at most \
             three quarters of them",
            settings.max_connections,
            crate::fair::FDS_PER_CONNECTION,
            crate::fair::FD_RESERVE
        );
    }
}

/// Shared by the listener and every connection thread.
pub(crate) struct Shared {
    pub settings: Settings,
    pub policy: policy::PolicyHandle,
    pub check: Arc<dyn DestinationCheck>,
    pub emitter: crate::events::Emitter,
    /// Open relayed connections (for reload revocation) and counters.
    pub registry: Arc<registry::Registry>,
    /// Connection slots per client (the owner of the client's socket).
    pub admission: Arc<crate::fair::Admission<crate::peer::Client>>,
    /// File descriptors per client, of `settings.descriptors`.
    pub descriptors: Arc<crate::fair::Admission<crate::peer::Client>>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::Client;
    use crate::policy::{Origin, Source};

    fn policy(domains: &[&str], ips: &[&str]) -> Policy {
        let d: Vec<String> = domains.iter().map(|s| s.to_string()).collect();
        let i: Vec<String> = ips.iter().map(|s| s.to_string()).collect();
        Policy::compile(
            &[Source { origin: Origin::Env("ALLOWLIST_IPS"), entries: &i }],
            &[Source { origin: Origin::Env("ALLOWLIST_DOMAINS"), entries: &d }],
        )
        .unwrap()
    }

    #[test]
    fn decisions() {
        let hosts = crate::resolve::Hosts::parse("10.0.0.1 a.example b.example\nfd00::1 a.example # v6\n");
        let p = policy(&["a.example", "*.wild.example", "c.example"], &["192.0.2.0/24"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let cases: &[(&str, &str, bool, Result<&str, &str>)] = &[
            ("a.example", "10.0.0.1", true, Ok("domain-allowed")),
            ("a.example", "fd00::1", true, Ok("domain-allowed")),
            ("a.example", "::ffff:10.0.0.1", true, Ok("domain-allowed")),
            ("a.example", "10.0.0.2", true, Err(reason::IP_MISMATCH)),
            ("a.example", "10.0.0.2", false, Ok("domain-allowed")),
            ("c.example", "10.0.0.1", true, Err(reason::IP_MISMATCH)),
            ("b.example", "10.0.0.1", true, Err(reason::NOT_ALLOWLISTED)),
            ("x.wild.example", "10.0.0.9", false, Ok("domain-allowed")),
            ("b.example", "192.0.2.7", true, Ok("ip-allowed")),
        ];
        for (name, addr, verify, expect) in cases {
            let got = decide(
                &p,
                name,
                SocketAddr::new(ip(addr), 443),
                *verify,
                &Guard::default(),
                &hosts,
                Asking::of(Client::Unknown),
            )
            .map(|d| d.reason.as_str())
            .map_err(|b| b.reason);
            assert_eq!(got, *expect, "{name} {addr} verify={verify}");
        }
    }

    /// `default_action: allow`: a name no denylist entry matches passes
    /// (still to an address it resolves to, and past the guard); a
    /// denylisted name or destination is refused `denylisted`, naming the
    /// entry; an allowlist entry re-opens a denylisted name; an IP literal
    /// is judged as the address it is.
    #[test]
    fn default_allow_decisions() {
        let hosts = crate::resolve::Hosts::parse(
            "10.0.0.1 any.test api.example.com x.example.com\n169.254.169.254 meta.test\n198.51.100.9 far.test\n",
        );
        let raw = crate::policy::parse_yaml(
            "default_action: allow\nallowlist:\n  domains: [api.example.com]\ndenylist:\n  ips: [\"198.51.100.0/24\"]\n  domains: [\"*.example.com\"]\n",
            "t.yaml",
        )
        .unwrap();
        let p = crate::policy::compile_raw(raw, "t.yaml", &Default::default()).unwrap();
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        type Case<'a> = (&'a str, &'a str, Result<&'a str, (&'a str, &'a str)>);
        let cases: &[Case] = &[
            ("any.test", "10.0.0.1", Ok("domain-allowed")),
            ("any.test", "10.0.0.2", Err((reason::IP_MISMATCH, "any.test does not resolve to 10.0.0.2"))),
            ("x.example.com", "10.0.0.1", Err((reason::DENYLISTED, "denylist domain *.example.com"))),
            ("api.example.com", "10.0.0.1", Ok("domain-allowed")),
            ("far.test", "198.51.100.9", Err((reason::DENYLISTED, "denylist ip 198.51.100.0/24"))),
            (
                "meta.test",
                "169.254.169.254",
                Err((reason::DESTINATION_GUARDED, "metadata address 169.254.169.254")),
            ),
        ];
        for (name, addr, expect) in cases {
            let got = decide(
                &p,
                name,
                SocketAddr::new(ip(addr), 443),
                true,
                &Guard::default(),
                &hosts,
                Asking::of(Client::Unknown),
            )
            .map(|d| d.reason.as_str())
            .map_err(|b| (b.reason, b.note.unwrap_or_default()));
            let expect = expect.map_err(|(r, n)| (r, n.to_owned()));
            assert_eq!(got, expect, "{name} {addr}");
        }
        let lit = |l: &str, d: &str| {
            decide_literal(&p, ip(l), ip(d), true, &Guard::default()).map_err(|b| b.reason)
        };
        assert_eq!(lit("10.0.0.7", "10.0.0.7"), Ok(()));
        assert_eq!(lit("198.51.100.7", "198.51.100.7"), Err(reason::DENYLISTED));
        assert_eq!(lit("10.0.0.7", "10.0.0.8"), Err(reason::IP_MISMATCH));
    }

    /// The SSRF guard: an allowed name whose destination (pinned or
    /// resolved, the check says it matches) is guarded is refused, with
    /// or without the anti-spoofing check, unless `allowlist.ips` covers
    /// it; a name outside the policy stays `not-allowlisted`.
    #[test]
    fn guarded_destinations() {
        let hosts = crate::resolve::Hosts::parse(
            "169.254.169.254 meta.wild.example\n127.0.0.1 lo.wild.example\nfe80::1 ll.wild.example\n\
             10.0.0.5 internal.wild.example\n203.0.113.80 public.wild.example\n",
        );
        let p = policy(&["*.wild.example"], &[]);
        let listed = policy(&["*.wild.example"], &["169.254.169.254"]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let private = Guard::parse("default,private").unwrap();
        type Case<'a> = (&'a Policy, &'a Guard, &'a str, &'a str, bool, Result<&'a str, (&'a str, &'a str)>);
        let default = Guard::default();
        let cases: &[Case] = &[
            (
                &p,
                &default,
                "meta.wild.example",
                "169.254.169.254",
                true,
                Err(("destination-guarded", "metadata address 169.254.169.254")),
            ),
            (
                &p,
                &default,
                "meta.wild.example",
                "169.254.169.254",
                false,
                Err(("destination-guarded", "metadata address 169.254.169.254")),
            ),
            (
                &p,
                &default,
                "lo.wild.example",
                "127.0.0.1",
                true,
                Err(("destination-guarded", "loopback address 127.0.0.1")),
            ),
            (
                &p,
                &default,
                "ll.wild.example",
                "fe80::1",
                true,
                Err(("destination-guarded", "link-local address fe80::1")),
            ),
            (
                &p,
                &default,
                "meta.wild.example",
                "::ffff:169.254.169.254",
                true,
                Err(("destination-guarded", "metadata address ::ffff:169.254.169.254")),
            ),
            (&p, &default, "internal.wild.example", "10.0.0.5", true, Ok("domain-allowed")),
            (
                &p,
                &private,
                "internal.wild.example",
                "10.0.0.5",
                true,
                Err(("destination-guarded", "private address 10.0.0.5")),
            ),
            (&p, &default, "public.wild.example", "203.0.113.80", true, Ok("domain-allowed")),
            (&p, &Guard::OFF, "meta.wild.example", "169.254.169.254", true, Ok("domain-allowed")),
            (&listed, &default, "meta.wild.example", "169.254.169.254", true, Ok("ip-allowed")),
            (&p, &default, "other.example", "169.254.169.254", true, Err(("not-allowlisted", ""))),
        ];
        for (pol, g, name, addr, verify, want) in cases {
            let got = decide(
                pol,
                name,
                SocketAddr::new(ip(addr), 443),
                *verify,
                g,
                &hosts,
                Asking::of(Client::Unknown),
            )
            .map(|d| d.reason.as_str())
            .map_err(|b| (b.reason, b.note.unwrap_or_default()));
            let want = want.map_err(|(r, n)| (r, n.to_owned()));
            assert_eq!(got, want, "{name} {addr} guard={g} verify={verify}");
        }
        // `*` allows every name, and IP literals, but not every destination.
        let star = policy(&["*"], &[]);
        let b =
            decide_literal(&star, ip("169.254.169.254"), ip("169.254.169.254"), true, &default).unwrap_err();
        assert_eq!(
            (b.reason, b.note.as_deref()),
            ("destination-guarded", Some("metadata address 169.254.169.254"))
        );
        assert_eq!(
            decide_literal(&star, ip("169.254.169.254"), ip("169.254.169.254"), true, &Guard::OFF),
            Ok(())
        );
    }

    /// An address entry with a port is the proxies' answer too: a
    /// connection to its address on that port passes by address (no name
    /// check, and the guard counts the entry as a listing), on another
    /// port it is decided by name like any other.
    #[test]
    fn address_entries_with_ports() {
        let hosts = crate::resolve::Hosts::parse("10.0.0.9 a.example\n");
        let p = policy(&["a.example"], &["tcp/10.0.0.5:443", "udp/10.0.0.6:443", "[fd00::5]:8000-8100"]);
        let g = Guard::default();
        let private = Guard::parse("default,private").unwrap();
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        type Case<'a> = (&'a str, &'a str, &'a Guard, Result<&'a str, &'a str>);
        let cases: &[Case] = &[
            ("b.example", "10.0.0.5:443", &g, Ok("ip-allowed")),
            ("b.example", "10.0.0.5:80", &g, Err(reason::NOT_ALLOWLISTED)),
            // Allowed by name on 80, so the anti-spoofing check applies.
            ("a.example", "10.0.0.5:80", &g, Err(reason::IP_MISMATCH)),
            ("b.example", "10.0.0.6:443", &g, Err(reason::NOT_ALLOWLISTED)),
            ("b.example", "[fd00::5]:8100", &g, Ok("ip-allowed")),
            ("b.example", "[fd00::5]:8101", &g, Err(reason::NOT_ALLOWLISTED)),
            ("b.example", "10.0.0.5:443", &private, Ok("ip-allowed")),
            ("a.example", "10.0.0.9:80", &private, Err(reason::DESTINATION_GUARDED)),
        ];
        for (name, dst, guard, want) in cases {
            let got = decide(&p, name, at(dst), true, guard, &hosts, Asking::of(Client::Unknown))
                .map(|d| d.reason.as_str())
                .map_err(|b| b.reason);
            assert_eq!(got, *want, "{name} {dst} guard={guard}");
        }
    }

    #[test]
    fn ip_literals_only_under_star() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let star = policy(&["*"], &[]);
        let named = policy(&["a.example"], &["10.0.0.0/8"]);
        type Case<'a> = (&'a Policy, &'a str, &'a str, bool, Result<(), &'a str>);
        let cases: &[Case] = &[
            (&star, "10.0.0.1", "10.0.0.1", true, Ok(())),
            (&star, "::ffff:10.0.0.1", "10.0.0.1", true, Ok(())),
            (&star, "10.0.0.1", "10.0.0.2", true, Err(reason::IP_MISMATCH)),
            (&star, "10.0.0.1", "10.0.0.2", false, Ok(())),
            (&named, "10.0.0.1", "10.0.0.1", true, Err(reason::NOT_ALLOWLISTED)),
        ];
        for (p, lit, dst, verify, want) in cases {
            let got = decide_literal(p, ip(lit), ip(dst), *verify, &Guard::default()).map_err(|b| b.reason);
            assert_eq!(got, *want, "{lit} -> {dst} verify={verify}");
        }
    }

    #[test]
    fn an_unanswered_check_is_not_a_mismatch() {
        struct Down;
        impl DestinationCheck for Down {
            fn check(&self, _: &str, _: IpAddr, _: Asking<'_>) -> Check {
                Check::Unavailable
            }
        }
        let p = policy(&["a.example"], &[]);
        let b = decide(
            &p,
            "a.example",
            "10.0.0.1:443".parse().unwrap(),
            true,
            &Guard::default(),
            &Down,
            Asking::of(Client::Unknown),
        )
        .unwrap_err();
        assert_eq!(b.reason, reason::RESOLVER_UNAVAILABLE);
        assert!(b.note.unwrap().contains("no resolver answered"));
    }
}
