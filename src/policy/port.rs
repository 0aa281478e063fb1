//! Address entries with a protocol and ports: `tcp/10.0.0.5:5432`,
//! `udp/10.0.0.0/8:53`, `[2001:db8::1]:443`, `tcp/10.0.0.5:8000-8100`,
//! `tcp/[2001:db8::/32]` (every TCP port). A bare address (no protocol, no
//! port) stays a [`Cidr`] of `allowlist.ips`, reachable on every port and
//! protocol.
//!
//! Compiled into a [`PortSet`]: per protocol, sorted disjoint port
//! segments, each with the merged addresses open on it. The same value
//! gives the lookup (binary search, then the segment's intervals) and the
//! nftables concatenated set's elements, which the kernel needs disjoint.
//!
//! Pure: no I/O.

use std::fmt;
use std::net::IpAddr;

use super::cidr::{Cidr, CidrError, IpSet};

/// The transport protocols a port entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub const ALL: [Proto; 2] = [Proto::Tcp, Proto::Udp];

    /// The IP protocol number (`meta l4proto`).
    pub fn number(self) -> u8 {
        match self {
            Proto::Tcp => 6,
            Proto::Udp => 17,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }

    pub fn of_number(n: u8) -> Option<Proto> {
        match n {
            6 => Some(Proto::Tcp),
            17 => Some(Proto::Udp),
            _ => None,
        }
    }
}

/// Why a port entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortError {
    Address(CidrError),
    Protocol(String),
    Port(String),
    /// `10.0.0.5:` or `[::1]` with nothing to say.
    Form,
}

/// The accepted forms, in every error message.
pub const FORMS: &str = "accepted: ADDR[/LEN] (every port), PROTO/ADDR[/LEN] (every port of tcp or udp), \
                         [PROTO/]ADDR[/LEN]:PORT[-PORT], with an IPv6 address in brackets before a port \
                         (e.g. tcp/10.0.0.5:5432, udp/10.0.0.0/8:53, [2001:db8::1]:443, tcp/10.0.0.5:8000-8100)";

impl fmt::Display for PortError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PortError::Address(e) => write!(f, "{e}; {FORMS}"),
            PortError::Protocol(p) => write!(f, "unknown protocol {p:?} (tcp or udp); {FORMS}"),
            PortError::Port(p) => {
                write!(f, "bad port {p:?} (1..65535, or a range such as 8000-8100, low first); {FORMS}")
            }
            PortError::Form => write!(f, "not an address entry; {FORMS}"),
        }
    }
}

impl std::error::Error for PortError {}

/// One parsed port entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct PortEntry {
    /// `None`: TCP and UDP.
    pub proto: Option<Proto>,
    pub cidr: Cidr,
    /// Inclusive; every port is `(1, 65535)`.
    pub ports: (u16, u16),
}

impl fmt::Display for PortEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.proto {
            write!(f, "{}/", p.as_str())?;
        }
        let all = self.ports == (1, u16::MAX);
        let host = matches!((self.cidr.addr, self.cidr.prefix), (IpAddr::V4(_), 32) | (IpAddr::V6(_), 128));
        let addr = if host { self.cidr.addr.to_string() } else { self.cidr.to_string() };
        match (self.cidr.addr, all) {
            (IpAddr::V6(_), false) => write!(f, "[{addr}]")?,
            _ => write!(f, "{addr}")?,
        }
        match self.ports {
            _ if all => Ok(()),
            (a, b) if a == b => write!(f, ":{a}"),
            (a, b) => write!(f, ":{a}-{b}"),
        }
    }
}

/// Whether an `ips` entry is a port entry rather than a bare address:
/// a protocol prefix, brackets, or an IPv4 address with a port.
pub fn is_port_entry(s: &str) -> bool {
    let s = s.trim();
    let proto_prefix =
        s.split_once('/').is_some_and(|(p, _)| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphabetic()));
    proto_prefix || s.starts_with('[') || (s.matches(':').count() == 1 && s.contains('.'))
}

/// Parses a port entry. The second value: host bits were set (and
/// cleared), as for a bare address.
pub fn parse(input: &str) -> Result<(PortEntry, bool), PortError> {
    let s = input.trim();
    let (proto, rest) = match s.split_once('/') {
        Some((p, rest)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_alphabetic()) => {
            let proto = match p.to_ascii_lowercase().as_str() {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                _ => return Err(PortError::Protocol(p.to_owned())),
            };
            (Some(proto), rest)
        }
        _ => (None, s),
    };
    // `[v6]`, `[v6/n]`, `[v6]:port`; `v4`, `v4/n`, `v4:port`, `v4/n:port`;
    // a bare v6 only with a protocol (its colons are not a port).
    let (addr, port) = if let Some(inner) = rest.strip_prefix('[') {
        let (a, after) = inner.split_once(']').ok_or(PortError::Form)?;
        match after {
            "" => (a, None),
            _ => (a, Some(after.strip_prefix(':').ok_or(PortError::Form)?)),
        }
    } else if rest.matches(':').count() == 1 && rest.contains('.') {
        let (a, p) = rest.split_once(':').expect("one colon");
        (a, Some(p))
    } else {
        (rest, None)
    };
    if proto.is_none() && port.is_none() {
        // A bare address is not a port entry: `allowlist.ips` keeps it.
        return Err(PortError::Form);
    }
    let (cidr, host_bits) = Cidr::parse(addr).map_err(PortError::Address)?;
    let ports = match port {
        None => (1, u16::MAX),
        Some(p) => parse_ports(p)?,
    };
    Ok((PortEntry { proto, cidr, ports }, host_bits))
}

fn parse_ports(p: &str) -> Result<(u16, u16), PortError> {
    let bad = || PortError::Port(p.to_owned());
    let one = |x: &str| match x.parse::<u16>() {
        Ok(n) if n > 0 && !x.starts_with('+') => Ok(n),
        _ => Err(bad()),
    };
    match p.split_once('-') {
        None => one(p).map(|n| (n, n)),
        Some((a, b)) => {
            let (a, b) = (one(a)?, one(b)?);
            if a > b {
                return Err(bad());
            }
            Ok((a, b))
        }
    }
}

/// A name with a protocol and ports (`tcp/db.example.com:5432`,
/// `db.example.com:5432` for TCP and UDP, `udp/ns.example.com:53-54`):
/// the addresses the name resolves to become reachable there only, for
/// the answer's TTL. An exact, normalised name: egret resolves it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct NamePort {
    /// `None`: TCP and UDP.
    pub proto: Option<Proto>,
    pub name: String,
    /// Inclusive; every port is `(1, 65535)`.
    pub ports: (u16, u16),
}

impl NamePort {
    /// The protocols it opens.
    pub fn protos(&self) -> Vec<Proto> {
        match self.proto {
            Some(p) => vec![p],
            None => Proto::ALL.to_vec(),
        }
    }
}

impl fmt::Display for NamePort {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.proto {
            write!(f, "{}/", p.as_str())?;
        }
        f.write_str(&self.name)?;
        match self.ports {
            (1, u16::MAX) => Ok(()),
            (a, b) if a == b => write!(f, ":{a}"),
            (a, b) => write!(f, ":{a}-{b}"),
        }
    }
}

/// Whether a `domains` entry is a name with a protocol or ports rather
/// than a name pattern: a `proto/` prefix or a `:port` (a name has
/// neither; a `/regex/` starts with its slash).
pub fn is_name_port_entry(s: &str) -> bool {
    let s = s.trim();
    if s.starts_with('/') {
        return false;
    }
    let proto_prefix =
        s.split_once('/').is_some_and(|(p, _)| !p.is_empty() && p.chars().all(|c| c.is_ascii_alphabetic()));
    proto_prefix || s.contains(':')
}

/// The forms of a name with ports, in its error messages.
pub const NAME_FORMS: &str = "accepted: [PROTO/]NAME:PORT[-PORT] or PROTO/NAME (every port of tcp or udp), \
                              NAME an exact name (e.g. tcp/db.example.com:5432, udp/ns.example.com:53)";

/// Parses a name with a protocol and/or ports.
pub fn parse_name(input: &str) -> Result<NamePort, String> {
    let s = input.trim();
    let (proto, rest) = match s.split_once('/') {
        Some((p, rest)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_alphabetic()) => {
            let proto = match p.to_ascii_lowercase().as_str() {
                "tcp" => Proto::Tcp,
                "udp" => Proto::Udp,
                _ => return Err(format!("unknown protocol {p:?} (tcp or udp); {NAME_FORMS}")),
            };
            (Some(proto), rest)
        }
        _ => (None, s),
    };
    let (name, ports) = match rest.rsplit_once(':') {
        Some((n, p)) => (n, parse_ports(p).map_err(|e| format!("{}", e).replace(FORMS, NAME_FORMS))?),
        None if proto.is_some() => (rest, (1, u16::MAX)),
        None => return Err(format!("not a name with ports; {NAME_FORMS}")),
    };
    if name.contains('*') || name.starts_with('/') {
        return Err(format!("a name with ports must be an exact name (egret resolves it); {NAME_FORMS}"));
    }
    if name.trim_start_matches('[').trim_end_matches(']').parse::<IpAddr>().is_ok() {
        return Err(format!("an address: put {input:?} under allowlist.ips"));
    }
    let name = super::name::normalize(name).map_err(|e| format!("{e}; {NAME_FORMS}"))?;
    Ok(NamePort { proto, name, ports })
}

/// Port segment → addresses open on it, for one protocol.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Segments {
    /// Sorted, disjoint inclusive port ranges, each with its addresses.
    pub segs: Vec<((u16, u16), IpSet)>,
}

impl Segments {
    fn find(&self, port: u16) -> Option<&IpSet> {
        let i = self.segs.partition_point(|((lo, _), _)| *lo <= port);
        (i > 0 && port <= self.segs[i - 1].0 .1).then(|| &self.segs[i - 1].1)
    }
}

/// Every port entry, compiled: per protocol and family. Equal entries
/// written differently compile to the same value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PortSet {
    pub tcp4: Segments,
    pub tcp6: Segments,
    pub udp4: Segments,
    pub udp6: Segments,
}

/// One element of an nftables `addr . inet_proto . inet_service` interval
/// set: an address interval, a protocol, a port interval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Element<T> {
    pub addrs: (T, T),
    pub proto: u8,
    pub ports: (u16, u16),
}

impl<T: PartialOrd> Element<T> {
    /// Whether the two meet in address, protocol and port alike (the
    /// kernel refuses a set whose elements do).
    pub fn overlaps(&self, other: &Element<T>) -> bool {
        self.proto == other.proto
            && self.addrs.0 <= other.addrs.1
            && other.addrs.0 <= self.addrs.1
            && self.ports.0 <= other.ports.1
            && other.ports.0 <= self.ports.1
    }
}

impl PortSet {
    /// Builds the disjoint segments: the port boundaries of every entry of
    /// a protocol cut the port space; each piece gets the union of the
    /// addresses of the entries covering it; neighbours with the same
    /// addresses are joined.
    pub fn from_entries(entries: &[PortEntry]) -> PortSet {
        let build = |proto: Proto, v4: bool| {
            let mine: Vec<&PortEntry> = entries
                .iter()
                .filter(|e| e.proto.is_none_or_eq(proto) && e.cidr.addr.is_ipv4() == v4)
                .collect();
            // Sweep over port boundaries with the active entries.
            let mut cuts: Vec<u32> = Vec::with_capacity(mine.len() * 2);
            for e in &mine {
                cuts.push(u32::from(e.ports.0));
                cuts.push(u32::from(e.ports.1) + 1);
            }
            cuts.sort_unstable();
            cuts.dedup();
            let mut by_start: Vec<&PortEntry> = mine.clone();
            by_start.sort_unstable_by_key(|e| e.ports.0);
            let mut next = 0;
            let mut active: Vec<&PortEntry> = Vec::new();
            let mut segs: Vec<((u16, u16), IpSet)> = Vec::new();
            for w in cuts.windows(2) {
                let (lo, hi) = (w[0], w[1] - 1);
                active.retain(|e| u32::from(e.ports.1) >= lo);
                while next < by_start.len() && u32::from(by_start[next].ports.0) <= lo {
                    active.push(by_start[next]);
                    next += 1;
                }
                if active.is_empty() {
                    continue;
                }
                let cidrs: Vec<Cidr> = active.iter().map(|e| e.cidr).collect();
                let set = IpSet::from_cidrs(&cidrs);
                let (lo, hi) = (lo as u16, hi as u16);
                match segs.last_mut() {
                    Some(((_, last_hi), last))
                        if u32::from(*last_hi) + 1 == u32::from(lo) && *last == set =>
                    {
                        *last_hi = hi
                    }
                    _ => segs.push(((lo, hi), set)),
                }
            }
            Segments { segs }
        };
        PortSet {
            tcp4: build(Proto::Tcp, true),
            tcp6: build(Proto::Tcp, false),
            udp4: build(Proto::Udp, true),
            udp6: build(Proto::Udp, false),
        }
    }

    /// This set with every segment's addresses passed through `f` (the
    /// SSRF guard's holes for the kernel's copy); segments left empty go.
    pub fn map_addresses(&self, f: impl Fn(&IpSet) -> IpSet) -> PortSet {
        let map = |s: &Segments| Segments {
            segs: s
                .segs
                .iter()
                .map(|(ports, set)| (*ports, f(set)))
                .filter(|(_, set)| !set.is_empty())
                .collect(),
        };
        PortSet { tcp4: map(&self.tcp4), tcp6: map(&self.tcp6), udp4: map(&self.udp4), udp6: map(&self.udp6) }
    }

    fn of(&self, p: Proto, v4: bool) -> &Segments {
        match (p, v4) {
            (Proto::Tcp, true) => &self.tcp4,
            (Proto::Tcp, false) => &self.tcp6,
            (Proto::Udp, true) => &self.udp4,
            (Proto::Udp, false) => &self.udp6,
        }
    }

    /// Whether `ip` is open on `proto` port `port`.
    pub fn contains(&self, ip: IpAddr, proto: Proto, port: u16) -> bool {
        let ip = super::cidr::canonical(ip);
        self.of(proto, ip.is_ipv4()).find(port).is_some_and(|s| s.contains(ip))
    }

    /// The compiled entry that opens `ip` on `proto` port `port`: the
    /// address block and the port segment holding them.
    pub fn find(&self, ip: IpAddr, proto: Proto, port: u16) -> Option<PortEntry> {
        let ip = super::cidr::canonical(ip);
        let segs = &self.of(proto, ip.is_ipv4()).segs;
        let i = segs.partition_point(|((lo, _), _)| *lo <= port);
        let (ports, set) = segs.get(i.checked_sub(1)?)?;
        if port > ports.1 {
            return None;
        }
        Some(PortEntry { proto: Some(proto), cidr: set.find(ip)?, ports: *ports })
    }

    pub fn is_empty(&self) -> bool {
        [&self.tcp4, &self.tcp6, &self.udp4, &self.udp6].iter().all(|s| s.segs.is_empty())
    }

    /// The number of entries as compiled (address block × protocol ×
    /// port range).
    pub fn len(&self) -> usize {
        self.elements_v4().len() + self.elements_v6().len()
    }

    /// The IPv4 elements of the nftables set (disjoint).
    pub fn elements_v4(&self) -> Vec<Element<u32>> {
        self.elements(true, |s| s.v4.intervals().to_vec())
    }

    /// The IPv6 elements of the nftables set (disjoint).
    pub fn elements_v6(&self) -> Vec<Element<u128>> {
        self.elements(false, |s| s.v6.intervals().to_vec())
    }

    fn elements<T: Copy>(&self, v4: bool, family: impl Fn(&IpSet) -> Vec<(T, T)>) -> Vec<Element<T>> {
        let mut out = Vec::new();
        for p in Proto::ALL {
            for (ports, set) in &self.of(p, v4).segs {
                for addrs in family(set) {
                    out.push(Element { addrs, proto: p.number(), ports: *ports });
                }
            }
        }
        out
    }

    /// The compiled entries written back, for `egret check`: one line per
    /// address block, protocol and port range.
    pub fn entries(&self) -> Vec<PortEntry> {
        let mut out = Vec::new();
        for (p, v4) in [(Proto::Tcp, true), (Proto::Tcp, false), (Proto::Udp, true), (Proto::Udp, false)] {
            for (ports, set) in &self.of(p, v4).segs {
                for cidr in set.cidrs() {
                    out.push(PortEntry { proto: Some(p), cidr, ports: *ports });
                }
            }
        }
        out
    }

    /// This set with each IPv4 entry also written under the IPv6
    /// translated forms ([`IpSet::with_v4_in_v6`]), for the denylist.
    pub fn with_v4_in_v6(&self) -> PortSet {
        let mut entries = self.entries();
        let forms: Vec<PortEntry> = entries
            .iter()
            .filter_map(|e| Some(e.cidr.v4_in_v6()?.map(|cidr| PortEntry { cidr, ..*e })))
            .flatten()
            .collect();
        entries.extend(forms);
        PortSet::from_entries(&entries)
    }

    /// Addresses open on at least one port (for "does this block cover
    /// a lot" warnings and the guard's exceptions).
    pub fn addresses(&self) -> IpSet {
        let mut cidrs = Vec::new();
        for s in [&self.tcp4, &self.tcp6, &self.udp4, &self.udp6] {
            for (_, set) in &s.segs {
                cidrs.extend(set.cidrs());
            }
        }
        IpSet::from_cidrs(&cidrs)
    }
}

trait ProtoMatch {
    fn is_none_or_eq(&self, p: Proto) -> bool;
}

impl ProtoMatch for Option<Proto> {
    fn is_none_or_eq(&self, p: Proto) -> bool {
        self.map_or(true, |q| q == p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(s: &str) -> PortEntry {
        parse(s).unwrap_or_else(|e| panic!("{s}: {e}")).0
    }

    #[test]
    fn forms() {
        let cases: &[(&str, &str)] = &[
            ("tcp/10.0.0.5:5432", "tcp/10.0.0.5:5432"),
            ("udp/10.0.0.0/8:53", "udp/10.0.0.0/8:53"),
            ("[2001:db8::1]:443", "[2001:db8::1]:443"),
            ("tcp/10.0.0.5:8000-8100", "tcp/10.0.0.5:8000-8100"),
            ("10.0.0.5:22", "10.0.0.5:22"),
            ("TCP/[2001:db8::/32]:443", "tcp/[2001:db8::/32]:443"),
            ("tcp/2001:db8::1", "tcp/2001:db8::1"),
            ("udp/10.1.2.3/8", "udp/10.0.0.0/8"),
            ("tcp/[fd00::/8]", "tcp/fd00::/8"),
            ("[2001:db8::/32]:443", "[2001:db8::/32]:443"),
        ];
        for (s, shown) in cases {
            assert!(is_port_entry(s), "{s}");
            assert_eq!(entry(s).to_string(), *shown, "{s}");
        }
        assert!(parse("udp/10.1.2.3/8").unwrap().1, "host bits reported");
        for bare in ["10.0.0.5", "10.0.0.0/8", "2001:db8::1", "2001:db8::/32", "::ffff:1.2.3.4"] {
            assert!(!is_port_entry(bare), "{bare}");
        }
        for (bad, why) in [
            ("sctp/10.0.0.5:1", "unknown protocol \"sctp\""),
            ("tcp/10.0.0.5:0", "bad port \"0\""),
            ("tcp/10.0.0.5:70000", "bad port"),
            ("tcp/10.0.0.5:9-8", "bad port \"9-8\""),
            ("tcp/10.0.0.300:1", "not an IPv4 or IPv6 address"),
            ("[2001:db8::1]", "not an address entry"),
            ("[2001:db8::1]443", "not an address entry"),
            ("[2001:db8::1", "not an address entry"),
            ("tcp/", "empty entry"),
            ("udp/10.0.0.5:1-", "bad port \"1-\""),
            ("udp/10.0.0.5:+5", "bad port \"+5\""),
            ("10.0.0.5:http", "bad port \"http\""),
            ("tcp/10.0.0.0/40:1", "prefix length"),
            ("10.0.0.5:", "bad port"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad}: {e}");
            assert!(e.ends_with(FORMS), "{bad}: every message lists the accepted forms: {e}");
        }
    }

    #[test]
    fn lookup_and_disjoint_elements() {
        let set = PortSet::from_entries(&[
            entry("tcp/10.0.0.0/8:443"),
            entry("tcp/10.0.0.5:400-500"),
            entry("10.0.0.7:53"),
            entry("[2001:db8::1]:443"),
        ]);
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let table: &[(&str, Proto, u16, bool)] = &[
            ("10.1.2.3", Proto::Tcp, 443, true),
            ("10.1.2.3", Proto::Tcp, 442, false),
            ("10.1.2.3", Proto::Udp, 443, false),
            ("10.0.0.5", Proto::Tcp, 400, true),
            ("10.0.0.5", Proto::Tcp, 501, false),
            ("10.0.0.7", Proto::Udp, 53, true),
            ("10.0.0.7", Proto::Tcp, 53, true),
            ("::ffff:10.0.0.7", Proto::Tcp, 53, true),
            ("11.0.0.1", Proto::Tcp, 443, false),
            ("2001:db8::1", Proto::Tcp, 443, true),
            ("2001:db8::1", Proto::Udp, 443, true),
            ("2001:db8::2", Proto::Tcp, 443, false),
        ];
        for (a, p, port, want) in table {
            assert_eq!(set.contains(ip(a), *p, *port), *want, "{a} {p:?} {port}");
        }
        // The kernel wants disjoint elements: no two overlap in all of
        // address, protocol and port.
        let v4 = set.elements_v4();
        for (i, a) in v4.iter().enumerate() {
            for b in &v4[i + 1..] {
                assert!(!a.overlaps(b), "{a:?} overlaps {b:?}");
            }
        }
        assert_eq!(set.elements_v6().len(), 2, "tcp and udp");
        // Written the other way round, the same value.
        let again = PortSet::from_entries(&[
            entry("[2001:db8::1]:443"),
            entry("udp/10.0.0.7:53"),
            entry("tcp/10.0.0.5:400-442"),
            entry("tcp/10.0.0.7:53"),
            entry("tcp/10.0.0.0/8:443"),
            entry("tcp/10.0.0.5:444-500"),
        ]);
        assert_eq!(again, set);
    }
}
