//! The nftables ruleset as a value: built from `Config` + `Policy` +
//! egret's own identity, rendered to nft text here (`Display`, the golden
//! form `nft list ruleset` prints) and to netlink messages in `netlink.rs`.
//!
//! Pure: no I/O, no clock, no netlink. Both renderings walk the same value,
//! so what the tests compare as text is what the kernel receives.
//!
//! The shape (one `table inet egret`, IPv4 and IPv6 alike):
//! * sets `allowed4` / `allowed6`: the policy's merged address intervals;
//! * `nat_out`: egret's own traffic, local and allowed destinations are
//!   left alone; TCP 80/443 (HTTPS mode) or port 53 (DNS mode) is
//!   redirected to egret's loopback listeners;
//! * `filter_out`: conntrack is *not* trusted. A packet passes when it is
//!   egret's own, a reply of a connection that came in, local (which
//!   includes everything redirected to egret), or to an allowed address;
//!   everything else is logged (rate-limited NFLOG) and rejected fast;
//! * `filter_in`: egret's listener ports take traffic from this host only.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::{Config, FilterMode};
use crate::policy::Policy;

/// The table every egret rule lives in.
pub const TABLE: &str = "egret";
/// The NFLOG prefix of blocked packets (the NFLOG reader keys on it).
pub const LOG_PREFIX: &str = "blocked";
/// NFLOG rate limit: enough to see what is blocked, not enough for a flood
/// to drown the event stream.
pub const LOG_RATE_PER_SECOND: u64 = 20;
pub const LOG_BURST: u32 = 50;

/// The set names, shared with the shells that fill learned sets.
pub const SET_ALLOWED4: &str = "allowed4";
pub const SET_ALLOWED6: &str = "allowed6";
pub const SET_LEARNED4: &str = "learned4";
pub const SET_LEARNED6: &str = "learned6";

/// How egret's own sockets are recognised by the rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The socket mark egret sets on its own sockets.
    pub mark: u32,
    /// Where cgroup v2 is available: egret's cgroup, which the socket must
    /// also belong to (a workload with CAP_NET_RAW can forge a mark but not
    /// its cgroup).
    pub cgroup: Option<CgroupMatch>,
}

/// `socket cgroupv2 level L "path"`: the socket's cgroup ancestor at
/// level `level` must have id `id`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMatch {
    pub level: u32,
    pub id: u64,
    /// The path relative to the cgroup2 root, without the leading `/`
    /// (how nft prints it).
    pub path: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    V4,
    V6,
}

/// The elements of an interval set: sorted, disjoint, inclusive ranges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elements {
    V4(Vec<(u32, u32)>),
    V6(Vec<(u128, u128)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetKind {
    /// Address intervals (CIDRs and ranges), filled at apply.
    Interval(Elements),
    /// Addresses added at run time with a timeout (strict DNS mode).
    Timeout,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Set {
    pub name: &'static str,
    pub family: Family,
    pub kind: SetKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hook {
    Output,
    Input,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainType {
    Filter,
    Nat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChainPolicy {
    Accept,
    Drop,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chain {
    pub name: &'static str,
    pub kind: ChainType,
    pub hook: Hook,
    pub priority: i32,
    pub policy: ChainPolicy,
    pub rules: Vec<Rule>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum L4 {
    Tcp,
    Udp,
}

impl L4 {
    pub fn number(self) -> u8 {
        match self {
            L4::Tcp => 6,
            L4::Udp => 17,
        }
    }
    fn name(self) -> &'static str {
        match self {
            L4::Tcp => "tcp",
            L4::Udp => "udp",
        }
    }
}

/// One match of a rule. Each renders to one nft phrase and to the
/// expressions that implement it (with their protocol dependencies).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Match {
    /// `meta mark 0x...`
    Mark(u32),
    /// `socket cgroupv2 level L "path"`
    Cgroup(CgroupMatch),
    /// `ct state invalid`
    CtInvalid,
    /// `ct direction reply`: the packet answers a connection that came in.
    CtReply,
    /// `fib daddr type local`: to this host, including packets NAT has just
    /// redirected to a loopback listener (`oif "lo"` misses those: the
    /// output device is fixed before NAT reroutes).
    FibDaddrLocal,
    /// `ip daddr @set` / `ip6 daddr @set`
    DaddrInSet(Family, &'static str),
    /// `ip daddr A` / `ip6 daddr A`
    Daddr(IpAddr),
    /// `meta l4proto tcp`
    L4(L4),
    /// `tcp dport N`
    Dport(L4, u16),
    /// `icmpv6 type T`
    Icmpv6Type(u8),
    /// `iifname != "name"`
    IifnameNot(&'static str),
    /// `ct mark 0x...`: the flow was stamped by a rule of this policy
    /// generation.
    CtMark(u32),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reject {
    /// `reject with tcp reset`
    TcpReset,
    /// `reject` (ICMP / ICMPv6 port unreachable)
    PortUnreachable,
    /// `reject with icmpx admin-prohibited`
    AdminProhibited,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stmt {
    Accept,
    Drop,
    Return,
    /// `redirect to :PORT`
    Redirect(u16),
    /// `limit rate R/second burst B packets`
    Limit {
        per_second: u64,
        burst: u32,
    },
    /// `log prefix "P" group G`
    Log {
        prefix: &'static str,
        group: u16,
    },
    Reject(Reject),
    /// `ct mark set 0x...`
    CtMarkSet(u32),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub matches: Vec<Match>,
    pub stmts: Vec<Stmt>,
}

fn rule(matches: Vec<Match>, stmts: Vec<Stmt>) -> Rule {
    Rule { matches, stmts }
}

/// The whole table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ruleset {
    pub table: &'static str,
    pub sets: Vec<Set>,
    pub chains: Vec<Chain>,
}

/// ICMPv6 the link needs: neighbour discovery (RFC 4861: router
/// solicitation/advert, neighbour solicitation/advert), without which IPv6
/// breaks, and MLDv2 reports (RFC 3810), which every interface sends when
/// it joins its multicast groups and which would otherwise fill the log.
const ND_TYPES: [u8; 5] = [133, 134, 135, 136, 143];

impl Ruleset {
    /// Builds the ruleset for this configuration, policy and identity. The
    /// policy generation (strict DNS mode) is the mark: random per start.
    pub fn build(cfg: &Config, policy: &Policy, id: &Identity) -> Ruleset {
        Ruleset::build_at(cfg, policy, id, id.mark)
    }

    /// As [`Ruleset::build`], with an explicit policy generation. In strict
    /// DNS mode, flows to learned addresses are stamped with it (conntrack
    /// mark) so they survive the learned entry's expiry but not a reload:
    /// a reload must pass a new generation.
    pub fn build_at(cfg: &Config, policy: &Policy, id: &Identity, generation: u32) -> Ruleset {
        let ips = policy.ips();
        let mut sets = vec![
            Set {
                name: SET_ALLOWED4,
                family: Family::V4,
                kind: SetKind::Interval(Elements::V4(ips.v4.intervals().to_vec())),
            },
            Set {
                name: SET_ALLOWED6,
                family: Family::V6,
                kind: SetKind::Interval(Elements::V6(ips.v6.intervals().to_vec())),
            },
        ];
        let strict = cfg.filter_mode == FilterMode::Dns && cfg.dns_strict;
        if strict {
            sets.push(Set { name: SET_LEARNED4, family: Family::V4, kind: SetKind::Timeout });
            sets.push(Set { name: SET_LEARNED6, family: Family::V6, kind: SetKind::Timeout });
        }

        // egret's own sockets: the mark, and the cgroup where available.
        let own = || {
            let mut m = vec![Match::Mark(id.mark)];
            if let Some(c) = &id.cgroup {
                m.push(Match::Cgroup(c.clone()));
            }
            m
        };

        let mut nat = vec![rule(own(), vec![Stmt::Return])];
        let mut listeners: Vec<(L4, u16)> = Vec::new();
        if cfg.runs_dns_server() {
            // Every query, to any resolver (local, policy-allowed or not),
            // goes to egret's resolver.
            nat.push(rule(vec![Match::Dport(L4::Udp, 53)], vec![Stmt::Redirect(cfg.dns_port)]));
            nat.push(rule(vec![Match::Dport(L4::Tcp, 53)], vec![Stmt::Redirect(cfg.dns_port)]));
            listeners.push((L4::Udp, cfg.dns_port));
            listeners.push((L4::Tcp, cfg.dns_port));
        }
        match cfg.filter_mode {
            FilterMode::Https => {
                nat.push(rule(vec![Match::FibDaddrLocal], vec![Stmt::Return]));
                nat.push(rule(vec![Match::DaddrInSet(Family::V4, SET_ALLOWED4)], vec![Stmt::Return]));
                nat.push(rule(vec![Match::DaddrInSet(Family::V6, SET_ALLOWED6)], vec![Stmt::Return]));
                nat.push(rule(vec![Match::Dport(L4::Tcp, 80)], vec![Stmt::Redirect(cfg.http_port)]));
                nat.push(rule(vec![Match::Dport(L4::Tcp, 443)], vec![Stmt::Redirect(cfg.https_port)]));
                listeners.push((L4::Tcp, cfg.http_port));
                listeners.push((L4::Tcp, cfg.https_port));
            }
            // The port-53 redirect above is all DNS mode needs.
            FilterMode::Dns => {}
        }

        let log = |group| Stmt::Log { prefix: LOG_PREFIX, group };
        let limit = Stmt::Limit { per_second: LOG_RATE_PER_SECOND, burst: LOG_BURST };
        let mut out = vec![
            // Garbage conntrack cannot place: dropped, not worth a log line.
            rule(vec![Match::CtInvalid], vec![Stmt::Drop]),
            rule(own(), vec![Stmt::Accept]),
            // Answers of connections that came in (a workload serving a
            // published port). Outbound-initiated flows are *not* accepted
            // by conntrack state: they must pass the checks below on every
            // packet, so a flow from before egret, one that escaped the
            // redirect, or one the policy revoked is cut.
            rule(vec![Match::CtReply], vec![Stmt::Accept]),
        ];
        let out_policy = if cfg.filter_mode == FilterMode::Dns && !strict {
            // g0efilter's DNS mode: only names are filtered, other traffic
            // passes, except DNS over TLS/QUIC (853), which would skip the
            // filtering resolver.
            for l4 in [L4::Tcp, L4::Udp] {
                out.push(rule(vec![Match::Dport(l4, 853)], vec![limit.clone(), log(cfg.nflog_group)]));
                let reject = if l4 == L4::Tcp { Reject::TcpReset } else { Reject::PortUnreachable };
                out.push(rule(vec![Match::Dport(l4, 853)], vec![Stmt::Reject(reject)]));
            }
            ChainPolicy::Accept
        } else {
            out.push(rule(vec![Match::FibDaddrLocal], vec![Stmt::Accept]));
            out.push(rule(vec![Match::DaddrInSet(Family::V4, SET_ALLOWED4)], vec![Stmt::Accept]));
            out.push(rule(vec![Match::DaddrInSet(Family::V6, SET_ALLOWED6)], vec![Stmt::Accept]));
            if strict {
                for (f, set) in [(Family::V4, SET_LEARNED4), (Family::V6, SET_LEARNED6)] {
                    out.push(rule(
                        vec![Match::DaddrInSet(f, set)],
                        vec![Stmt::CtMarkSet(generation), Stmt::Accept],
                    ));
                }
                out.push(rule(vec![Match::CtMark(generation)], vec![Stmt::Accept]));
            }
            if cfg.filter_mode == FilterMode::Https && !cfg.dns_in_https_mode {
                // Workloads resolve names themselves in HTTPS mode: they may
                // reach the configured resolvers on their port (local ones
                // are already accepted above). With egret's resolver in
                // between (DNS_IN_HTTPS_MODE) they need not, and must not:
                // a flow that escaped the redirect would skip the filter.
                for up in &cfg.dns_upstreams {
                    if is_local_literal(up.ip()) {
                        continue;
                    }
                    for l4 in [L4::Udp, L4::Tcp] {
                        out.push(rule(
                            vec![Match::Daddr(up.ip()), Match::Dport(l4, up.port())],
                            vec![Stmt::Accept],
                        ));
                    }
                }
            }
            for t in ND_TYPES {
                out.push(rule(vec![Match::Icmpv6Type(t)], vec![Stmt::Accept]));
            }
            out.push(rule(vec![], vec![limit, log(cfg.nflog_group)]));
            // Fail fast: clients see a refusal at once instead of hanging
            // on a silent drop; QUIC (UDP 443) falls back to TCP at once.
            out.push(rule(vec![Match::L4(L4::Tcp)], vec![Stmt::Reject(Reject::TcpReset)]));
            out.push(rule(vec![Match::L4(L4::Udp)], vec![Stmt::Reject(Reject::PortUnreachable)]));
            out.push(rule(vec![], vec![Stmt::Reject(Reject::AdminProhibited)]));
            ChainPolicy::Drop
        };

        let input: Vec<Rule> = listeners
            .iter()
            .map(|&(l4, port)| rule(vec![Match::IifnameNot("lo"), Match::Dport(l4, port)], vec![Stmt::Drop]))
            .collect();

        let chains = vec![
            Chain {
                name: "nat_out",
                kind: ChainType::Nat,
                hook: Hook::Output,
                priority: -100,
                policy: ChainPolicy::Accept,
                rules: nat,
            },
            Chain {
                name: "filter_out",
                kind: ChainType::Filter,
                hook: Hook::Output,
                priority: 0,
                policy: out_policy,
                rules: out,
            },
            Chain {
                name: "filter_in",
                kind: ChainType::Filter,
                hook: Hook::Input,
                priority: 0,
                policy: ChainPolicy::Accept,
                rules: input,
            },
        ];
        Ruleset { table: TABLE, sets, chains }
    }

    /// Number of rules in every chain together.
    pub fn rule_count(&self) -> usize {
        self.chains.iter().map(|c| c.rules.len()).sum()
    }
}

fn is_local_literal(ip: IpAddr) -> bool {
    ip.is_loopback()
}

// ---------------------------------------------------------------------------
// nft text, as `nft list ruleset` (nftables 1.0.x) prints it, except that
// set elements are on one line (compare with whitespace collapsed).

impl fmt::Display for Ruleset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "table inet {} {{", self.table)?;
        let mut first = true;
        for s in &self.sets {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{s}")?;
        }
        for c in &self.chains {
            if !first {
                writeln!(f)?;
            }
            first = false;
            write!(f, "{c}")?;
        }
        writeln!(f, "}}")
    }
}

impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\tset {} {{", self.name)?;
        let ty = match self.family {
            Family::V4 => "ipv4_addr",
            Family::V6 => "ipv6_addr",
        };
        writeln!(f, "\t\ttype {ty}")?;
        match &self.kind {
            SetKind::Timeout => writeln!(f, "\t\tflags timeout")?,
            SetKind::Interval(e) => {
                writeln!(f, "\t\tflags interval")?;
                let items: Vec<String> = match e {
                    Elements::V4(v) => v
                        .iter()
                        .map(|&(a, b)| {
                            interval_text(u128::from(a), u128::from(b), 32, |x| {
                                Ipv4Addr::from(x as u32).to_string()
                            })
                        })
                        .collect(),
                    Elements::V6(v) => v
                        .iter()
                        .map(|&(a, b)| interval_text(a, b, 128, |x| Ipv6Addr::from(x).to_string()))
                        .collect(),
                };
                if !items.is_empty() {
                    writeln!(f, "\t\telements = {{ {} }}", items.join(", "))?;
                }
            }
        }
        writeln!(f, "\t}}")
    }
}

/// One interval as nft prints it: an address, a prefix, or `a-b`.
fn interval_text(a: u128, b: u128, bits: u32, show: impl Fn(u128) -> String) -> String {
    if a == b {
        return show(a);
    }
    // A prefix: the size is a power of two and `a` is aligned to it.
    let size = (b - a).wrapping_add(1); // 0 means the whole space (only for bits=128)
    let whole = bits == 128 && a == 0 && b == u128::MAX;
    if whole || (size.is_power_of_two() && a % size == 0) {
        let host_bits = if whole { 128 } else { size.trailing_zeros() };
        return format!("{}/{}", show(a), bits - host_bits);
    }
    format!("{}-{}", show(a), show(b))
}

impl fmt::Display for Chain {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "\tchain {} {{", self.name)?;
        let kind = match self.kind {
            ChainType::Filter => "filter",
            ChainType::Nat => "nat",
        };
        let hook = match self.hook {
            Hook::Output => "output",
            Hook::Input => "input",
        };
        // nft names the standard priorities it knows for the chain type.
        let prio = match (self.kind, self.priority) {
            (ChainType::Filter, 0) => "filter".to_owned(),
            (_, p) => p.to_string(),
        };
        let policy = match self.policy {
            ChainPolicy::Accept => "accept",
            ChainPolicy::Drop => "drop",
        };
        writeln!(f, "\t\ttype {kind} hook {hook} priority {prio}; policy {policy};")?;
        for r in &self.rules {
            writeln!(f, "\t\t{r}")?;
        }
        writeln!(f, "\t}}")
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts: Vec<String> = self.matches.iter().map(|m| m.to_string()).collect();
        parts.extend(self.stmts.iter().map(|s| s.to_string()));
        f.write_str(&parts.join(" "))
    }
}

impl fmt::Display for Match {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Match::Mark(m) => write!(f, "meta mark 0x{m:08x}"),
            Match::Cgroup(c) => write!(f, "socket cgroupv2 level {} \"{}\"", c.level, c.path),
            Match::CtInvalid => f.write_str("ct state invalid"),
            Match::CtReply => f.write_str("ct direction reply"),
            Match::FibDaddrLocal => f.write_str("fib daddr type local"),
            Match::DaddrInSet(Family::V4, s) => write!(f, "ip daddr @{s}"),
            Match::DaddrInSet(Family::V6, s) => write!(f, "ip6 daddr @{s}"),
            Match::Daddr(IpAddr::V4(a)) => write!(f, "ip daddr {a}"),
            Match::Daddr(IpAddr::V6(a)) => write!(f, "ip6 daddr {a}"),
            Match::L4(l4) => write!(f, "meta l4proto {}", l4.name()),
            Match::Dport(l4, p) => write!(f, "{} dport {p}", l4.name()),
            Match::Icmpv6Type(t) => match t {
                133 => f.write_str("icmpv6 type nd-router-solicit"),
                134 => f.write_str("icmpv6 type nd-router-advert"),
                135 => f.write_str("icmpv6 type nd-neighbor-solicit"),
                136 => f.write_str("icmpv6 type nd-neighbor-advert"),
                143 => f.write_str("icmpv6 type mld2-listener-report"),
                t => write!(f, "icmpv6 type {t}"),
            },
            Match::IifnameNot(n) => write!(f, "iifname != \"{n}\""),
            Match::CtMark(m) => write!(f, "ct mark 0x{m:08x}"),
        }
    }
}

impl fmt::Display for Stmt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stmt::Accept => f.write_str("accept"),
            Stmt::Drop => f.write_str("drop"),
            Stmt::Return => f.write_str("return"),
            Stmt::Redirect(p) => write!(f, "redirect to :{p}"),
            Stmt::Limit { per_second, burst } => {
                write!(f, "limit rate {per_second}/second burst {burst} packets")
            }
            Stmt::Log { prefix, group } => write!(f, "log prefix \"{prefix}\" group {group}"),
            Stmt::Reject(Reject::TcpReset) => f.write_str("reject with tcp reset"),
            Stmt::Reject(Reject::PortUnreachable) => f.write_str("reject"),
            Stmt::Reject(Reject::AdminProhibited) => f.write_str("reject with icmpx admin-prohibited"),
            Stmt::CtMarkSet(m) => write!(f, "ct mark set 0x{m:08x}"),
        }
    }
}

/// nft text with every whitespace run collapsed to one space, for
/// comparing our rendering with `nft list ruleset`, which wraps long
/// element lists.
pub fn normalize_text(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile_raw, parse_yaml, EnvLists};
    use std::collections::HashMap;

    fn config(vars: &[(&str, &str)]) -> Config {
        let m: HashMap<String, String> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_env(&|k| m.get(k).cloned()).expect("test config")
    }

    fn policy(yaml: &str) -> Policy {
        compile_raw(parse_yaml(yaml, "t.yaml").expect("yaml"), "t.yaml", &EnvLists::default())
            .expect("policy")
    }

    const ID: Identity = Identity { mark: 0x1234abcd, cgroup: None };

    fn check(vars: &[(&str, &str)], yaml: &str, id: &Identity, want: &str) {
        let got = Ruleset::build(&config(vars), &policy(yaml), id).to_string();
        assert_eq!(got, want, "\n--- got ---\n{got}\n--- want ---\n{want}");
    }

    const HTTPS_GOLDEN: &str = "\
table inet egret {
	set allowed4 {
		type ipv4_addr
		flags interval
		elements = { 1.1.1.1, 10.0.0.0-12.255.255.255, 192.168.0.0/16 }
	}

	set allowed6 {
		type ipv6_addr
		flags interval
		elements = { 2001:db8::/32 }
	}

	chain nat_out {
		type nat hook output priority -100; policy accept;
		meta mark 0x1234abcd return
		fib daddr type local return
		ip daddr @allowed4 return
		ip6 daddr @allowed6 return
		tcp dport 80 redirect to :8080
		tcp dport 443 redirect to :8443
	}

	chain filter_out {
		type filter hook output priority filter; policy drop;
		ct state invalid drop
		meta mark 0x1234abcd accept
		ct direction reply accept
		fib daddr type local accept
		ip daddr @allowed4 accept
		ip6 daddr @allowed6 accept
		ip daddr 10.9.9.9 udp dport 53 accept
		ip daddr 10.9.9.9 tcp dport 53 accept
		icmpv6 type nd-router-solicit accept
		icmpv6 type nd-router-advert accept
		icmpv6 type nd-neighbor-solicit accept
		icmpv6 type nd-neighbor-advert accept
		icmpv6 type mld2-listener-report accept
		limit rate 20/second burst 50 packets log prefix \"blocked\" group 0
		meta l4proto tcp reject with tcp reset
		meta l4proto udp reject
		reject with icmpx admin-prohibited
	}

	chain filter_in {
		type filter hook input priority filter; policy accept;
		iifname != \"lo\" tcp dport 8080 drop
		iifname != \"lo\" tcp dport 8443 drop
	}
}
";

    #[test]
    fn https_mode_golden() {
        check(
            &[("DNS_UPSTREAMS", "127.0.0.11:53,10.9.9.9")],
            "allowlist:\n  ips: [\"1.1.1.1\", \"192.168.0.0/16\", \"2001:db8::/32\", \"10.0.0.0/8\", \"11.0.0.0/8\", \"12.0.0.0/8\"]\n  domains: [\"github.com\"]\n",
            &ID,
            HTTPS_GOLDEN,
        );
    }

    /// HTTPS mode with egret's resolver (`DNS_IN_HTTPS_MODE`): port 53
    /// goes to the resolver before anything else may `return` (a query to
    /// an allowed or local address is filtered too), and the workload's
    /// direct path to the upstream resolvers is gone.
    #[test]
    fn https_mode_with_dns_golden() {
        let want = "\
table inet egret {
	set allowed4 {
		type ipv4_addr
		flags interval
		elements = { 1.1.1.1 }
	}

	set allowed6 {
		type ipv6_addr
		flags interval
	}

	chain nat_out {
		type nat hook output priority -100; policy accept;
		meta mark 0x1234abcd return
		udp dport 53 redirect to :5353
		tcp dport 53 redirect to :5353
		fib daddr type local return
		ip daddr @allowed4 return
		ip6 daddr @allowed6 return
		tcp dport 80 redirect to :8080
		tcp dport 443 redirect to :8443
	}

	chain filter_out {
		type filter hook output priority filter; policy drop;
		ct state invalid drop
		meta mark 0x1234abcd accept
		ct direction reply accept
		fib daddr type local accept
		ip daddr @allowed4 accept
		ip6 daddr @allowed6 accept
		icmpv6 type nd-router-solicit accept
		icmpv6 type nd-router-advert accept
		icmpv6 type nd-neighbor-solicit accept
		icmpv6 type nd-neighbor-advert accept
		icmpv6 type mld2-listener-report accept
		limit rate 20/second burst 50 packets log prefix \"blocked\" group 0
		meta l4proto tcp reject with tcp reset
		meta l4proto udp reject
		reject with icmpx admin-prohibited
	}

	chain filter_in {
		type filter hook input priority filter; policy accept;
		iifname != \"lo\" udp dport 5353 drop
		iifname != \"lo\" tcp dport 5353 drop
		iifname != \"lo\" tcp dport 8080 drop
		iifname != \"lo\" tcp dport 8443 drop
	}
}
";
        check(
            &[("DNS_UPSTREAMS", "10.9.9.9"), ("DNS_IN_HTTPS_MODE", "true"), ("DNS_PORT", "5353")],
            "allowlist:\n  ips: [\"1.1.1.1\"]\n",
            &ID,
            want,
        );
    }

    #[test]
    fn dns_mode_golden() {
        let want = "\
table inet egret {
	set allowed4 {
		type ipv4_addr
		flags interval
	}

	set allowed6 {
		type ipv6_addr
		flags interval
	}

	chain nat_out {
		type nat hook output priority -100; policy accept;
		meta mark 0x00000007 return
		udp dport 53 redirect to :5353
		tcp dport 53 redirect to :5353
	}

	chain filter_out {
		type filter hook output priority filter; policy accept;
		ct state invalid drop
		meta mark 0x00000007 accept
		ct direction reply accept
		tcp dport 853 limit rate 20/second burst 50 packets log prefix \"blocked\" group 3
		tcp dport 853 reject with tcp reset
		udp dport 853 limit rate 20/second burst 50 packets log prefix \"blocked\" group 3
		udp dport 853 reject
	}

	chain filter_in {
		type filter hook input priority filter; policy accept;
		iifname != \"lo\" udp dport 5353 drop
		iifname != \"lo\" tcp dport 5353 drop
	}
}
";
        check(
            &[("FILTER_MODE", "dns"), ("DNS_PORT", "5353"), ("NFLOG_GROUP", "3")],
            "allowlist:\n  domains: [\"example.com\"]\n",
            &Identity { mark: 7, cgroup: None },
            want,
        );
    }

    #[test]
    fn strict_dns_mode_has_learned_sets_and_drops() {
        let rs = Ruleset::build(
            &config(&[("FILTER_MODE", "dns"), ("DNS_STRICT", "true")]),
            &policy("allowlist:\n  ips: [\"fd00::/8\"]\n"),
            &ID,
        );
        let text = rs.to_string();
        for want in [
            "set learned4 {\n\t\ttype ipv4_addr\n\t\tflags timeout\n\t}",
            "ip daddr @learned4 ct mark set 0x1234abcd accept",
            "ip6 daddr @learned6 ct mark set 0x1234abcd accept",
            "ct mark 0x1234abcd accept",
            "elements = { fd00::/8 }",
            "policy drop;",
            "udp dport 53 redirect to :53",
            "meta l4proto tcp reject with tcp reset",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        assert!(!text.contains("dport 853"), "strict mode rejects 853 with everything else");
    }

    #[test]
    fn cgroup_joins_the_mark() {
        let id = Identity {
            mark: 0xfeed,
            cgroup: Some(CgroupMatch { level: 2, id: 42, path: "pod/egret".into() }),
        };
        let rs = Ruleset::build(&config(&[]), &policy("allowlist:\n  ips: []\n"), &id);
        let text = rs.to_string();
        assert!(text.contains("meta mark 0x0000feed socket cgroupv2 level 2 \"pod/egret\" return"), "{text}");
        assert!(text.contains("meta mark 0x0000feed socket cgroupv2 level 2 \"pod/egret\" accept"), "{text}");
    }

    #[test]
    fn loopback_upstreams_need_no_rule() {
        let rs = Ruleset::build(&config(&[("DNS_UPSTREAMS", "127.0.0.11:53,[::1]:53")]), &policy(""), &ID);
        assert!(!rs.to_string().contains("dport 53 accept"));
        let rs = Ruleset::build(&config(&[("DNS_UPSTREAMS", "[fd00::53]:5353")]), &policy(""), &ID);
        assert!(rs.to_string().contains("ip6 daddr fd00::53 udp dport 5353 accept"));
    }

    #[test]
    fn interval_texts() {
        let v4 = |x: u128| Ipv4Addr::from(x as u32).to_string();
        let v6 = |x: u128| Ipv6Addr::from(x).to_string();
        let a = |s: &str| u128::from(u32::from(s.parse::<Ipv4Addr>().unwrap()));
        type Show<'a> = &'a dyn Fn(u128) -> String;
        let cases: [(u128, u128, u32, Show, &str); 7] = [
            (a("1.2.3.4"), a("1.2.3.4"), 32, &v4, "1.2.3.4"),
            (a("10.0.0.0"), a("10.255.255.255"), 32, &v4, "10.0.0.0/8"),
            (a("10.0.0.0"), a("11.255.255.255"), 32, &v4, "10.0.0.0/7"),
            (a("10.0.0.0"), a("12.255.255.255"), 32, &v4, "10.0.0.0-12.255.255.255"),
            (a("1.2.3.5"), a("1.2.3.6"), 32, &v4, "1.2.3.5-1.2.3.6"),
            (0, u128::from(u32::MAX), 32, &v4, "0.0.0.0/0"),
            (0, u128::MAX, 128, &v6, "::/0"),
        ];
        for (lo, hi, bits, show, want) in cases {
            assert_eq!(interval_text(lo, hi, bits, show), want);
        }
    }

    #[test]
    fn normalize_collapses_wrapping() {
        assert_eq!(
            normalize_text("elements = { 1.2.3.4, 10.0.0.0/8,\n\t\t\t     192.168.1.1 }\n"),
            "elements = { 1.2.3.4, 10.0.0.0/8, 192.168.1.1 }"
        );
    }
}
