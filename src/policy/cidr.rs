//! IP allowlist entries: addresses and CIDRs parsed, host bits cleared, and
//! merged into the minimal sorted list of disjoint intervals that both the
//! lookup and the nftables interval sets need.
//!
//! Pure: no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// Why an `allowlist.ips` entry was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum CidrError {
    Empty,
    BadAddress,
    BadPrefix { max: u8 },
}

impl fmt::Display for CidrError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CidrError::Empty => write!(f, "empty entry"),
            CidrError::BadAddress => {
                write!(f, "not an IPv4 or IPv6 address (expected e.g. 10.0.0.0/8 or 2001:db8::/32)")
            }
            CidrError::BadPrefix { max } => write!(f, "prefix length must be 0..={max}"),
        }
    }
}

impl std::error::Error for CidrError {}

/// An address block with its host bits cleared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cidr {
    pub addr: IpAddr,
    pub prefix: u8,
}

impl Cidr {
    /// Parses `a.b.c.d`, `a.b.c.d/n`, `x::y` or `x::y/n`. Host bits are
    /// cleared; the second value says whether any were set, so the caller
    /// can tell the user. An IPv4-mapped block (`::ffff:a.b.c.d`, or
    /// `::ffff:0:0/96` and longer) is its IPv4 block (`a.b.c.d/32`): that
    /// is the address on the wire, and no IPv6 packet ever carries the
    /// mapped form, so kept as IPv6 it would match nothing.
    pub fn parse(input: &str) -> Result<(Cidr, bool), CidrError> {
        let s = input.trim();
        if s.is_empty() {
            return Err(CidrError::Empty);
        }
        let (addr_s, prefix_s) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr_s.parse().map_err(|_| CidrError::BadAddress)?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix_s {
            None => max,
            Some(p) => match p.parse::<u8>() {
                Ok(n) if n <= max && !p.starts_with('+') => n,
                _ => return Err(CidrError::BadPrefix { max }),
            },
        };
        let cidr = Cidr { addr: mask(addr, prefix), prefix };
        let host_bits = cidr.addr != addr;
        Ok((cidr.v4_if_mapped(), host_bits))
    }

    /// The IPv4 block of an IPv4-mapped one (prefix 96 or longer inside
    /// `::ffff:0:0/96`); any other block as it is.
    fn v4_if_mapped(self) -> Cidr {
        match self.addr {
            IpAddr::V6(a) if self.prefix >= 96 => match a.to_ipv4_mapped() {
                Some(v4) => Cidr { addr: IpAddr::V4(v4), prefix: self.prefix - 96 },
                None => self,
            },
            _ => self,
        }
    }

    /// An IPv4 block written under each [`V4_IN_V6`]
    /// /96; `None` for an IPv6 block.
    pub fn v4_in_v6(&self) -> Option<[Cidr; 3]> {
        let IpAddr::V4(a) = self.addr else { return None };
        Some(V4_IN_V6.map(|p| Cidr {
            addr: IpAddr::V6(Ipv6Addr::from(p | u128::from(u32::from(a)))),
            prefix: self.prefix + 96,
        }))
    }

    /// The first and last address, as integers of the family's width.
    fn bounds(&self) -> Bounds {
        match self.addr {
            IpAddr::V4(a) => {
                let start = u32::from(a);
                let host = u32::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
                Bounds::V4(start, start | host)
            }
            IpAddr::V6(a) => {
                let start = u128::from(a);
                let host = u128::MAX.checked_shr(u32::from(self.prefix)).unwrap_or(0);
                Bounds::V6(start, start | host)
            }
        }
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

enum Bounds {
    V4(u32, u32),
    V6(u128, u128),
}

fn mask(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let m = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
            IpAddr::V4(Ipv4Addr::from(u32::from(a) & m))
        }
        IpAddr::V6(a) => {
            let m = if prefix == 0 { 0 } else { u128::MAX << (128 - prefix) };
            IpAddr::V6(Ipv6Addr::from(u128::from(a) & m))
        }
    }
}

/// Sorted, disjoint, non-adjacent inclusive intervals of one address family.
/// `T` is `u32` for IPv4 and `u128` for IPv6.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ranges<T> {
    ranges: Vec<(T, T)>,
}

/// An unsigned integer that an address family maps to.
pub trait AddrInt: Copy + Ord + fmt::Debug {
    const MAX: Self;
    fn succ(self) -> Self;
}
impl AddrInt for u32 {
    const MAX: Self = u32::MAX;
    fn succ(self) -> Self {
        self + 1
    }
}
impl AddrInt for u128 {
    const MAX: Self = u128::MAX;
    fn succ(self) -> Self {
        self + 1
    }
}

impl<T: AddrInt> Ranges<T> {
    /// Sorts and merges overlapping and adjacent intervals.
    pub fn from_intervals(mut v: Vec<(T, T)>) -> Self {
        v.sort_unstable();
        let mut out: Vec<(T, T)> = Vec::with_capacity(v.len());
        for (start, end) in v {
            if let Some(last) = out.last_mut() {
                // Merge when the new interval overlaps or touches the last.
                if last.1 == T::MAX || start <= last.1.succ() {
                    if end > last.1 {
                        last.1 = end;
                    }
                    continue;
                }
            }
            out.push((start, end));
        }
        Ranges { ranges: out }
    }

    pub fn contains(&self, x: T) -> bool {
        self.find(x).is_some()
    }

    /// The interval holding `x`.
    pub fn find(&self, x: T) -> Option<(T, T)> {
        // The intervals are sorted and disjoint: find the last start <= x.
        let i = self.ranges.partition_point(|&(start, _)| start <= x);
        (i > 0 && x <= self.ranges[i - 1].1).then(|| self.ranges[i - 1])
    }

    /// The merged inclusive intervals, sorted.
    pub fn intervals(&self) -> &[(T, T)] {
        &self.ranges
    }

    pub fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}

/// The merged allowlist of both families.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IpSet {
    pub v4: Ranges<u32>,
    pub v6: Ranges<u128>,
}

impl IpSet {
    pub fn from_cidrs(cidrs: &[Cidr]) -> IpSet {
        let mut v4 = Vec::new();
        let mut v6 = Vec::new();
        for c in cidrs {
            match c.bounds() {
                Bounds::V4(a, b) => v4.push((a, b)),
                Bounds::V6(a, b) => v6.push((a, b)),
            }
        }
        IpSet { v4: Ranges::from_intervals(v4), v6: Ranges::from_intervals(v6) }
    }

    pub fn contains(&self, ip: IpAddr) -> bool {
        match canonical(ip) {
            IpAddr::V4(a) => self.v4.contains(u32::from(a)),
            IpAddr::V6(a) => self.v6.contains(u128::from(a)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.v4.is_empty() && self.v6.is_empty()
    }

    /// The block of the merged allowlist that holds `ip`: the rule that
    /// allows it.
    pub fn find(&self, ip: IpAddr) -> Option<Cidr> {
        let mut found = None;
        match canonical(ip) {
            IpAddr::V4(a) => {
                let x = u32::from(a);
                let (s, e) = self.v4.find(x)?;
                split(u128::from(s), u128::from(e), 32, &mut |start, prefix| {
                    let end = start + ((1u128 << (32 - prefix)) - 1);
                    if (start..=end).contains(&u128::from(x)) {
                        found = Some(Cidr { addr: IpAddr::V4(Ipv4Addr::from(start as u32)), prefix });
                    }
                });
            }
            IpAddr::V6(a) => {
                let x = u128::from(a);
                let (s, e) = self.v6.find(x)?;
                split(s, e, 128, &mut |start, prefix| {
                    let end = start + u128::MAX.checked_shr(u32::from(prefix)).unwrap_or(0);
                    if (start..=end).contains(&x) {
                        found = Some(Cidr { addr: IpAddr::V6(Ipv6Addr::from(start)), prefix });
                    }
                });
            }
        }
        found
    }

    /// This set with each IPv4 block also written under every
    /// [`V4_IN_V6`] /96 (IPv4-translated, NAT64
    /// well-known and local-use): the IPv6 addresses a translator turns
    /// into it. For the denylist's kernel sets, so an IPv6-only client
    /// behind NAT64 does not reach a denied IPv4 address.
    pub fn with_v4_in_v6(&self) -> IpSet {
        let mut cidrs = self.cidrs();
        cidrs.extend(self.cidrs().iter().filter_map(|c| c.v4_in_v6()).flatten());
        IpSet::from_cidrs(&cidrs)
    }

    /// The merged ranges written back as the fewest CIDRs, for display.
    pub fn cidrs(&self) -> Vec<Cidr> {
        let mut out = Vec::new();
        for &(a, b) in self.v4.intervals() {
            split(u128::from(a), u128::from(b), 32, &mut |start, prefix| {
                out.push(Cidr { addr: IpAddr::V4(Ipv4Addr::from(start as u32)), prefix })
            });
        }
        for &(a, b) in self.v6.intervals() {
            split(a, b, 128, &mut |start, prefix| {
                out.push(Cidr { addr: IpAddr::V6(Ipv6Addr::from(start)), prefix })
            });
        }
        out
    }
}

/// The local-use NAT64 prefix `64:ff9b:1::/48` (RFC 8215).
pub const NAT64_LOCAL: u128 = 0x0064_ff9b_0001 << 80;

/// The /96 prefixes an IPv4 address is written under in IPv6 and leads
/// to: IPv4-translated, NAT64 well-known and local-use. (IPv4-compatible
/// addresses, deprecated, are routed as plain IPv6 addresses: nothing
/// translates them, so the sets need no hole for them.)
pub const V4_IN_V6: [u128; 3] = [0xffff_0000 << 32, 0x0064_ff9b << 96, NAT64_LOCAL];

/// The IPv4 address an IPv6 one under a [`V4_IN_V6`] /96 leads to
/// (IPv4-translated, NAT64 well-known, local-use in its /96 format).
pub fn translated_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let n = u128::from(a);
    V4_IN_V6.iter().any(|p| n >> 32 == p >> 32).then(|| Ipv4Addr::from(n as u32))
}

/// An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) is the IPv4 address: a
/// dual-stack socket reports v4 peers that way, and the policy must not
/// treat the two spellings differently.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => ip,
        },
        v4 => v4,
    }
}

/// [`split`] for other modules: the aligned blocks of `[a, b]`.
pub fn split_blocks(a: u128, b: u128, bits: u8, emit: &mut dyn FnMut(u128, u8)) {
    split(a, b, bits, emit)
}

/// Splits the inclusive interval [a, b] of a `bits`-wide family into
/// aligned blocks, largest first.
fn split(mut a: u128, b: u128, bits: u8, emit: &mut dyn FnMut(u128, u8)) {
    loop {
        // Largest block aligned at `a`...
        let align = if a == 0 { u32::from(bits) } else { a.trailing_zeros().min(u32::from(bits)) };
        // ...that does not run past `b`.
        let span = b - a; // block size - 1 must be <= span
        let fit = if span == u128::MAX { 128 } else { 127 - (span + 1).leading_zeros() };
        let size_log = align.min(fit);
        emit(a, bits - size_log as u8);
        let last = if size_log >= 128 { u128::MAX } else { a + ((1u128 << size_log) - 1) };
        if last >= b {
            return;
        }
        a = last + 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cidrs(entries: &[&str]) -> Vec<String> {
        let parsed: Vec<Cidr> = entries.iter().map(|e| Cidr::parse(e).unwrap().0).collect();
        IpSet::from_cidrs(&parsed).cidrs().iter().map(ToString::to_string).collect()
    }

    #[test]
    fn parse_table() {
        let ok: &[(&str, &str, bool)] = &[
            ("1.1.1.1", "1.1.1.1/32", false),
            ("10.1.2.3/8", "10.0.0.0/8", true),
            ("10.0.0.0/8", "10.0.0.0/8", false),
            ("0.0.0.0/0", "0.0.0.0/0", false),
            ("1.2.3.4/0", "0.0.0.0/0", true),
            ("2001:db8::1/32", "2001:db8::/32", true),
            ("::/0", "::/0", false),
            ("::1", "::1/128", false),
            (" 192.168.0.0/16 ", "192.168.0.0/16", false),
            // IPv4-mapped: the IPv4 block it is on the wire.
            ("::ffff:10.0.0.3", "10.0.0.3/32", false),
            ("::ffff:a00:3", "10.0.0.3/32", false),
            ("::ffff:10.0.0.0/120", "10.0.0.0/24", false),
            ("::ffff:10.0.0.3/120", "10.0.0.0/24", true),
            ("::ffff:0:0/96", "0.0.0.0/0", false),
            // Wider than the mapped /96, or another form: IPv6 as written.
            ("::ffff:0:0/95", "::fffe:0:0/95", true),
            ("::ffff:0:a00:3", "::ffff:0:a00:3/128", false),
            ("64:ff9b::10.0.0.3", "64:ff9b::a00:3/128", false),
        ];
        for (input, expect, host_bits) in ok {
            let (c, hb) = Cidr::parse(input).unwrap();
            assert_eq!(c.to_string(), *expect, "{input}");
            assert_eq!(hb, *host_bits, "{input}");
        }
        let bad: &[(&str, CidrError)] = &[
            ("", CidrError::Empty),
            ("1.1.1", CidrError::BadAddress),
            ("example.com", CidrError::BadAddress),
            ("1.1.1.1/33", CidrError::BadPrefix { max: 32 }),
            ("1.1.1.1/", CidrError::BadPrefix { max: 32 }),
            ("1.1.1.1/+8", CidrError::BadPrefix { max: 32 }),
            ("::/129", CidrError::BadPrefix { max: 128 }),
            ("1.1.1.1/8/8", CidrError::BadPrefix { max: 32 }),
            ("256.1.1.1", CidrError::BadAddress),
        ];
        for (input, expect) in bad {
            assert_eq!(Cidr::parse(input).as_ref().map(|x| x.0), Err(expect), "{input}");
        }
    }

    #[test]
    fn merge_table() {
        // overlap
        assert_eq!(cidrs(&["10.0.0.0/8", "10.1.0.0/16"]), ["10.0.0.0/8"]);
        // adjacency joins two /25 into a /24
        assert_eq!(cidrs(&["10.0.0.0/25", "10.0.0.128/25"]), ["10.0.0.0/24"]);
        // adjacent but not alignable stays as two blocks of one range
        assert_eq!(cidrs(&["10.0.0.128/25", "10.0.1.0/24"]), ["10.0.0.128/25", "10.0.1.0/24"]);
        // duplicates
        assert_eq!(cidrs(&["1.1.1.1", "1.1.1.1/32"]), ["1.1.1.1/32"]);
        // /0 swallows everything
        assert_eq!(cidrs(&["0.0.0.0/0", "1.2.3.4", "255.255.255.255"]), ["0.0.0.0/0"]);
        assert_eq!(cidrs(&["::/0", "2001:db8::/32"]), ["::/0"]);
        // the top of the space
        assert_eq!(cidrs(&["255.255.255.255", "255.255.255.254"]), ["255.255.255.254/31"]);
        // families kept apart, v4 first
        assert_eq!(cidrs(&["2001:db8::/32", "1.1.1.1"]), ["1.1.1.1/32", "2001:db8::/32"]);
        // a range that needs several blocks: .1 - .6
        assert_eq!(
            cidrs(&["10.0.0.1", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6"]),
            ["10.0.0.1/32", "10.0.0.2/31", "10.0.0.4/31", "10.0.0.6/32"]
        );
    }

    /// Round 6, escape_81: a denied IPv4 block's IPv6 translated forms.
    #[test]
    fn v4_blocks_written_in_their_translated_forms() {
        let parsed: Vec<Cidr> =
            ["10.0.0.3", "10.1.0.0/16", "2001:db8::/32"].iter().map(|e| Cidr::parse(e).unwrap().0).collect();
        let set = IpSet::from_cidrs(&parsed).with_v4_in_v6();
        let shown: Vec<String> = set.cidrs().iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "10.0.0.3/32",
                "10.1.0.0/16",
                "::ffff:0:a00:3/128",
                "::ffff:0:a01:0/112",
                "64:ff9b::a00:3/128",
                "64:ff9b::a01:0/112",
                "64:ff9b:1::a00:3/128",
                "64:ff9b:1::a01:0/112",
                "2001:db8::/32",
            ]
        );
        for ip in ["64:ff9b::10.0.0.3", "::ffff:0:10.1.2.3", "64:ff9b:1::10.1.255.255"] {
            assert!(set.contains(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["64:ff9b::10.0.0.4", "::10.0.0.3", "64:ff9b:1:1::10.0.0.3"] {
            assert!(!set.contains(ip.parse().unwrap()), "{ip}");
        }
        // Idempotent: the IPv6 forms have no forms of their own.
        assert_eq!(set.with_v4_in_v6(), set);
    }

    #[test]
    fn contains_table() {
        let parsed: Vec<Cidr> = ["192.168.0.0/16", "10.0.0.1", "2001:db8::/32"]
            .iter()
            .map(|e| Cidr::parse(e).unwrap().0)
            .collect();
        let set = IpSet::from_cidrs(&parsed);
        let cases: &[(&str, bool)] = &[
            ("192.168.0.0", true),
            ("192.168.255.255", true),
            ("192.169.0.0", false),
            ("192.167.255.255", false),
            ("10.0.0.1", true),
            ("10.0.0.2", false),
            ("10.0.0.0", false),
            ("2001:db8::1", true),
            ("2001:db9::", false),
            ("::ffff:10.0.0.1", true),
            ("::ffff:10.0.0.2", false),
            ("::1", false),
        ];
        for (ip, expect) in cases {
            assert_eq!(set.contains(ip.parse().unwrap()), *expect, "{ip}");
        }
        assert!(!IpSet::default().contains("1.1.1.1".parse().unwrap()));
    }
}
