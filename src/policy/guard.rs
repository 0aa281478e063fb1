//! The SSRF guard (`GUARD_ADDRESSES`): address classes that an allowed
//! *name* never leads to. A domain in the policy is a promise about a
//! name, not about where its DNS answer points: a wildcard on a shared
//! suffix, DNS rebinding or a compromised zone can make an allowed name
//! answer the cloud metadata service or loopback. An address the policy
//! lists under `allowlist.ips` is never guarded (the operator named it).
//!
//! [`classify`] is the one classification of addresses, [`Guard::check`]
//! the one decision the proxies and the DNS server ask. Pure: no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::cidr::{Cidr, IpSet, Ranges, NAT64_LOCAL, V4_IN_V6};
use super::{Policy, Proto};

/// The event `reason` of a refusal by the guard.
pub const REASON: &str = "destination-guarded";

/// A class of special-purpose addresses (RFC 6890 and its successors).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Class {
    /// Cloud instance metadata and credential endpoints.
    Metadata,
    Loopback,
    LinkLocal,
    /// `0.0.0.0/8` and `::` (on Linux a connect to 0.0.0.0 reaches the
    /// local host).
    Unspecified,
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    Documentation,
    Benchmarking,
    /// Shared address space of carrier-grade NAT, `100.64.0.0/10`.
    Cgnat,
    /// RFC 1918 and unique local IPv6 (`fc00::/7`).
    Private,
}

impl Class {
    /// Every class, in the order a refusal names them: when an address is
    /// in several guarded classes (169.254.169.254 is metadata and
    /// link-local), the event names the first.
    pub const ALL: [Class; 10] = [
        Class::Metadata,
        Class::Loopback,
        Class::LinkLocal,
        Class::Unspecified,
        Class::Multicast,
        Class::Broadcast,
        Class::Private,
        Class::Cgnat,
        Class::Documentation,
        Class::Benchmarking,
    ];

    /// The name used in `GUARD_ADDRESSES` and in events.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Metadata => "metadata",
            Class::Loopback => "loopback",
            Class::LinkLocal => "link-local",
            Class::Unspecified => "unspecified",
            Class::Multicast => "multicast",
            Class::Broadcast => "broadcast",
            Class::Documentation => "documentation",
            Class::Benchmarking => "benchmarking",
            Class::Cgnat => "cgnat",
            Class::Private => "private",
        }
    }

    /// A class by name, case-insensitive; `_` may stand for `-`.
    pub fn parse(s: &str) -> Option<Class> {
        let s = s.trim().to_ascii_lowercase().replace('_', "-");
        Class::ALL.into_iter().find(|c| c.as_str() == s)
    }

    fn bit(self) -> u16 {
        1 << (self as u16)
    }
}

impl fmt::Display for Class {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A set of classes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Classes(u16);

impl Classes {
    pub const NONE: Classes = Classes(0);

    pub fn of(list: &[Class]) -> Classes {
        Classes(list.iter().fold(0, |acc, c| acc | c.bit()))
    }

    pub fn contains(self, c: Class) -> bool {
        self.0 & c.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The members, in [`Class::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Class> {
        Class::ALL.into_iter().filter(move |c| self.contains(*c))
    }

    fn with(self, c: Class) -> Classes {
        Classes(self.0 | c.bit())
    }
}

/// The classes `ip` belongs to (none for an ordinary public address).
/// An IPv6 address that carries an IPv4 one (IPv4-mapped `::ffff:a.b.c.d`,
/// IPv4-translated `::ffff:0:a.b.c.d`, IPv4-compatible `::a.b.c.d`, the
/// NAT64 well-known prefix `64:ff9b::/96`, the local-use NAT64 prefix
/// `64:ff9b:1::/48` in any RFC 6052 format) is classified by the IPv4
/// address it leads to.
pub fn classify(ip: IpAddr) -> Classes {
    match ip {
        IpAddr::V4(a) => classify_v4(a),
        IpAddr::V6(a) => match embedded_v4(a) {
            Some(v4) => classify_v4(v4),
            None => nat64_local(a).fold(classify_v6(a), |acc, (v4, _)| Classes(acc.0 | classify_v4(v4).0)),
        },
    }
}

/// The IPv4 addresses an address in `64:ff9b:1::/48` may lead to, with
/// the prefix length of the RFC 6052 §2.2 format read: the operator picks
/// a NAT64 prefix of 48, 56, 64 or 96 bits inside it, which the address
/// does not say. Every format whose reserved bits (the `u` octet, bits
/// 64-71, and the suffix after the IPv4 address) are zero is read, so a
/// guarded address in any of them is found. The /96 reading always
/// applies; the others only where it reads `x.0.0.0` or `0.0.0.0`, which
/// are no hosts, so reading them costs no ordinary address anything.
pub fn nat64_local(a: Ipv6Addr) -> impl Iterator<Item = (Ipv4Addr, u8)> {
    let n = u128::from(a);
    let inside = n >> 80 == NAT64_LOCAL >> 80;
    let u_zero = (n >> 56) & 0xff == 0;
    let low = |bits: u32| n & ((1u128 << bits) - 1) == 0;
    let v4 = |x: u128| Ipv4Addr::from(x as u32);
    let readings = [
        (true, v4(n), 96),
        (u_zero && low(24), v4(n >> 24), 64),
        (u_zero && low(32), v4(((n >> 64) & 0xff) << 24 | ((n >> 32) & 0xff_ffff)), 56),
        (u_zero && low(40), v4(((n >> 64) & 0xffff) << 16 | ((n >> 40) & 0xffff)), 48),
    ];
    readings.into_iter().filter(move |(ok, _, _)| inside && *ok).map(|(_, a, len)| (a, len))
}

/// The IPv4 address inside an IPv6 one, for the forms that lead to it.
pub fn embedded_v4(a: Ipv6Addr) -> Option<Ipv4Addr> {
    let n = u128::from(a);
    let low = Ipv4Addr::from(n as u32);
    match n >> 32 {
        // ::ffff:0:0/96, IPv4-mapped (RFC 4291 §2.5.5.2).
        0xffff => Some(low),
        // ::ffff:0:0:0/96, IPv4-translated (RFC 2765 §2.1).
        0xffff_0000 => Some(low),
        // ::/96, IPv4-compatible (RFC 4291 §2.5.5.1, deprecated); `::`
        // and `::1` are IPv6's own unspecified and loopback addresses.
        0 if n > 1 => Some(low),
        // 64:ff9b::/96, the NAT64 well-known prefix (RFC 6052 §2.1): a
        // NAT64 gateway connects to the embedded address.
        0x0064_ff9b_0000_0000_0000_0000 => Some(low),
        _ => None,
    }
}

/// `(first address, prefix length, class)`, IPv4.
const V4: &[([u8; 4], u8, Class)] = &[
    // AWS, GCP, Azure, Oracle, OpenStack instance metadata.
    ([169, 254, 169, 254], 32, Class::Metadata),
    // AWS ECS task metadata and credentials.
    ([169, 254, 170, 2], 32, Class::Metadata),
    // AWS EKS Pod Identity agent.
    ([169, 254, 170, 23], 32, Class::Metadata),
    // Alibaba Cloud instance metadata.
    ([100, 100, 100, 200], 32, Class::Metadata),
    // Oracle Cloud Infrastructure Classic instance metadata.
    ([192, 0, 0, 192], 32, Class::Metadata),
    // RFC 1122 §3.2.1.3 "this network"; RFC 6890.
    ([0, 0, 0, 0], 8, Class::Unspecified),
    // RFC 1122 §3.2.1.3.
    ([127, 0, 0, 0], 8, Class::Loopback),
    // RFC 3927.
    ([169, 254, 0, 0], 16, Class::LinkLocal),
    // RFC 5771.
    ([224, 0, 0, 0], 4, Class::Multicast),
    // RFC 919 limited broadcast.
    ([255, 255, 255, 255], 32, Class::Broadcast),
    // RFC 5737 TEST-NET-1/2/3.
    ([192, 0, 2, 0], 24, Class::Documentation),
    ([198, 51, 100, 0], 24, Class::Documentation),
    ([203, 0, 113, 0], 24, Class::Documentation),
    // RFC 2544.
    ([198, 18, 0, 0], 15, Class::Benchmarking),
    // RFC 6598.
    ([100, 64, 0, 0], 10, Class::Cgnat),
    // RFC 1918.
    ([10, 0, 0, 0], 8, Class::Private),
    ([172, 16, 0, 0], 12, Class::Private),
    ([192, 168, 0, 0], 16, Class::Private),
];

/// `(first address, prefix length, class)`, IPv6.
const V6: &[([u16; 8], u8, Class)] = &[
    // AWS instance metadata over IPv6 (IMDS), and the EKS Pod Identity
    // agent.
    ([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254], 128, Class::Metadata),
    ([0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x23], 128, Class::Metadata),
    // GCP instance metadata over IPv6.
    ([0xfd20, 0xce, 0, 0, 0, 0, 0, 0x254], 128, Class::Metadata),
    // Oracle Cloud (OCI) instance metadata over IPv6.
    ([0xfd00, 0xc1, 0, 0, 0, 0, 0xa9fe, 0xa9fe], 128, Class::Metadata),
    // RFC 4291 §2.5.2, §2.5.3.
    ([0, 0, 0, 0, 0, 0, 0, 0], 128, Class::Unspecified),
    ([0, 0, 0, 0, 0, 0, 0, 1], 128, Class::Loopback),
    // RFC 4291 §2.5.6.
    ([0xfe80, 0, 0, 0, 0, 0, 0, 0], 10, Class::LinkLocal),
    // RFC 4291 §2.7.
    ([0xff00, 0, 0, 0, 0, 0, 0, 0], 8, Class::Multicast),
    // RFC 3849 and RFC 9637.
    ([0x2001, 0xdb8, 0, 0, 0, 0, 0, 0], 32, Class::Documentation),
    ([0x3fff, 0, 0, 0, 0, 0, 0, 0], 20, Class::Documentation),
    // RFC 5180.
    ([0x2001, 0x2, 0, 0, 0, 0, 0, 0], 48, Class::Benchmarking),
    // RFC 4193 unique local addresses.
    ([0xfc00, 0, 0, 0, 0, 0, 0, 0], 7, Class::Private),
    // RFC 3879 deprecated site-local: private by design where still used.
    ([0xfec0, 0, 0, 0, 0, 0, 0, 0], 10, Class::Private),
];

fn classify_v4(a: Ipv4Addr) -> Classes {
    let x = u32::from(a);
    V4.iter()
        .filter(|(net, len, _)| {
            let mask = u32::MAX.checked_shl(32 - u32::from(*len)).unwrap_or(0);
            x & mask == u32::from_be_bytes(*net) & mask
        })
        .fold(Classes::NONE, |acc, (_, _, c)| acc.with(*c))
}

fn classify_v6(a: Ipv6Addr) -> Classes {
    let x = u128::from(a);
    V6.iter()
        .filter(|(net, len, _)| {
            let mask = u128::MAX.checked_shl(128 - u32::from(*len)).unwrap_or(0);
            x & mask == u128::from(Ipv6Addr::from(*net)) & mask
        })
        .fold(Classes::NONE, |acc, (_, _, c)| acc.with(*c))
}

/// Why the guard refused an address: the address and its first guarded
/// class. `Display` is the event's `note`: `metadata address 169.254.169.254`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guarded {
    pub ip: IpAddr,
    pub class: Class,
}

impl fmt::Display for Guarded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} address {}", self.class, self.ip)
    }
}

/// The guarded classes in effect (`GUARD_ADDRESSES`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Guard {
    classes: Classes,
}

impl Default for Guard {
    /// `metadata,loopback,link-local,unspecified,multicast`. `private` and
    /// `cgnat` are opt-in: g0efilter users allow internal services by name.
    fn default() -> Guard {
        Guard { classes: Guard::DEFAULT }
    }
}

/// Why a `GUARD_ADDRESSES` value was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum GuardError {
    /// A word that names no class.
    UnknownClass(String),
    /// `none` together with classes.
    NoneWithClasses,
    /// Only commas: say `none` to turn the guard off.
    Empty,
}

impl fmt::Display for GuardError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GuardError::UnknownClass(w) => write!(f, "unknown address class {w:?}"),
            GuardError::NoneWithClasses => write!(f, "\"none\" turns the guard off and cannot be combined"),
            GuardError::Empty => write!(f, "no class named (\"none\" turns the guard off)"),
        }
    }
}

impl std::error::Error for GuardError {}

impl Guard {
    const DEFAULT: Classes = Classes(
        (1 << Class::Metadata as u16)
            | (1 << Class::Loopback as u16)
            | (1 << Class::LinkLocal as u16)
            | (1 << Class::Unspecified as u16)
            | (1 << Class::Multicast as u16),
    );

    /// The guard turned off (`GUARD_ADDRESSES=none`).
    pub const OFF: Guard = Guard { classes: Classes::NONE };

    pub fn new(classes: Classes) -> Guard {
        Guard { classes }
    }

    /// What `GUARD_ADDRESSES` accepts, for error messages.
    pub fn accepted() -> String {
        let names: Vec<&str> = Class::ALL.iter().map(|c| c.as_str()).collect();
        format!("a comma list of {}, or default (the default set), or none", names.join(", "))
    }

    /// A comma list of class names; `default` stands for the default set,
    /// `none` (alone) turns the guard off. Blanks between commas are
    /// dropped.
    pub fn parse(s: &str) -> Result<Guard, GuardError> {
        let words: Vec<&str> = s.split(',').map(str::trim).filter(|w| !w.is_empty()).collect();
        if words.iter().any(|w| w.eq_ignore_ascii_case("none")) {
            return match words.len() {
                1 => Ok(Guard::OFF),
                _ => Err(GuardError::NoneWithClasses),
            };
        }
        if words.is_empty() {
            return Err(GuardError::Empty);
        }
        let mut classes = Classes::NONE;
        for w in words {
            if w.eq_ignore_ascii_case("default") {
                classes = Classes(classes.0 | Guard::DEFAULT.0);
                continue;
            }
            match Class::parse(w) {
                Some(c) => classes = classes.with(c),
                None => return Err(GuardError::UnknownClass(w.to_owned())),
            }
        }
        Ok(Guard { classes })
    }

    pub fn classes(&self) -> Classes {
        self.classes
    }

    pub fn is_off(&self) -> bool {
        self.classes.is_empty()
    }

    /// The decision: `Some` when `ip` is in a guarded class and
    /// `allowlist.ips` does not list it on purpose. A listing counts when
    /// the block of the allowlist that holds `ip` lies inside the guarded
    /// range (`169.254.169.254`, `fe80::/64`, `10.0.0.0/8` with `private`
    /// guarded); a wider one that merely covers it (`0.0.0.0/0`, `::/0`,
    /// a NAT64 prefix) does not.
    pub fn check(&self, policy: &Policy, ip: IpAddr) -> Option<Guarded> {
        self.check_at(policy, ip, None)
    }

    /// As [`Guard::check`], for a connection to `ip` on `port`: an
    /// address entry with ports (`tcp/10.0.0.5:443`) lists `ip` there in
    /// the same way, on its ports only.
    pub fn check_at(&self, policy: &Policy, ip: IpAddr, port: Option<(Proto, u16)>) -> Option<Guarded> {
        if self.is_off() {
            return None;
        }
        let class = classify(ip).iter().find(|c| self.classes.contains(*c))?;
        let inside = |block: Cidr| block.prefix >= listing_prefix(ip, class);
        let listed = policy.ips().find(ip).is_some_and(inside)
            || port
                .and_then(|(proto, port)| policy.ports().find(ip, proto, port))
                .is_some_and(|e| inside(e.cidr));
        if listed {
            return None;
        }
        Some(Guarded { ip, class })
    }

    /// The allowlist's address intervals with the guarded ranges that no
    /// entry lists on purpose (see [`Guard::check`]) cut out: what the
    /// ruleset lets pass straight to the network, so a connection to such
    /// an address goes to the proxies (and their guard) or is refused
    /// like any other. The IPv4 ranges are cut out of their IPv6 forms
    /// too (IPv4-translated, the NAT64 /96s); the local-use
    /// NAT64 formats other than the /96 at `64:ff9b:1::` cannot be
    /// listed as intervals and are left to the proxies' check.
    pub fn punch(&self, ips: &IpSet) -> IpSet {
        let mut holes4 = Vec::new();
        let mut holes6 = Vec::new();
        for (net, len, class) in V4 {
            if self.classes.contains(*class) {
                let (a, b) = bounds(u128::from(u32::from_be_bytes(*net)), *len, 32);
                holes4.push((a, b));
                for prefix in V4_IN_V6 {
                    holes6.push((prefix | a, prefix | b));
                }
            }
        }
        for (net, len, class) in V6 {
            if self.classes.contains(*class) {
                holes6.push(bounds(u128::from(Ipv6Addr::from(*net)), *len, 128));
            }
        }
        let v4 = cut(
            &ips.v4.intervals().iter().map(|&(a, b)| (u128::from(a), u128::from(b))).collect::<Vec<_>>(),
            32,
            &holes4,
        );
        let v4 = v4.into_iter().map(|(a, b)| (a as u32, b as u32)).collect();
        IpSet {
            v4: Ranges::from_intervals(v4),
            v6: Ranges::from_intervals(cut(ips.v6.intervals(), 128, &holes6)),
        }
    }

    /// The first of `ips` the guard refuses (a DNS answer is refused as a
    /// whole when one of its addresses is).
    pub fn check_all(&self, policy: &Policy, ips: impl IntoIterator<Item = IpAddr>) -> Option<Guarded> {
        ips.into_iter().find_map(|ip| self.check(policy, ip))
    }
}

/// `[first, last]` of `net/len` in a `bits`-wide family.
fn bounds(net: u128, len: u8, bits: u32) -> (u128, u128) {
    let host = bits - u32::from(len);
    let span = if host >= 128 { u128::MAX } else { (1u128 << host) - 1 };
    (net & !span, (net & !span) | span)
}

/// How narrow the allowlist block holding `ip` must be to list it on
/// purpose against `class`: the prefix of the widest range of that class
/// holding it (in IPv6 terms for an IPv4 address written in IPv6; exact
/// for the NAT64 local-use formats other than the /96).
fn listing_prefix(ip: IpAddr, class: Class) -> u8 {
    let widest_v4 = |a: Ipv4Addr| {
        let x = u32::from(a);
        V4.iter()
            .filter(|(net, len, c)| {
                let (lo, hi) = bounds(u128::from(u32::from_be_bytes(*net)), *len, 32);
                *c == class && (lo..=hi).contains(&u128::from(x))
            })
            .map(|(_, len, _)| *len)
            .min()
    };
    match crate::policy::cidr::canonical(ip) {
        IpAddr::V4(a) => widest_v4(a).unwrap_or(32),
        IpAddr::V6(a) => {
            if let Some(v4) = embedded_v4(a) {
                return widest_v4(v4).map_or(128, |l| 96 + l);
            }
            let x = u128::from(a);
            let native = V6.iter().filter(|(net, len, c)| {
                let (lo, hi) = bounds(u128::from(Ipv6Addr::from(*net)), *len, 128);
                *c == class && (lo..=hi).contains(&x)
            });
            if let Some(len) = native.map(|(_, len, _)| *len).min() {
                return len;
            }
            nat64_local(a)
                .filter(|(v4, _)| classify_v4(*v4).contains(class))
                .map(|(v4, fmt)| if fmt == 96 { widest_v4(v4).map_or(128, |l| 96 + l) } else { 128 })
                .max()
                .unwrap_or(128)
        }
    }
}

/// `intervals` (sorted, disjoint) without the parts of each aligned
/// block that overlap a hole the block is not inside of.
fn cut(intervals: &[(u128, u128)], bits: u32, holes: &[(u128, u128)]) -> Vec<(u128, u128)> {
    let mut out = Vec::new();
    for &(a, b) in intervals {
        let mut blocks = Vec::new();
        crate::policy::cidr::split_blocks(a, b, bits as u8, &mut |start, prefix| {
            let (lo, hi) = bounds(start, prefix, bits);
            blocks.push((lo, hi));
        });
        for (lo, hi) in blocks {
            let mut pieces = vec![(lo, hi)];
            for &(h0, h1) in holes {
                let overlaps = h0 <= hi && lo <= h1;
                let inside = h0 <= lo && hi <= h1;
                if !overlaps || inside {
                    continue;
                }
                pieces = pieces
                    .into_iter()
                    .flat_map(|(p0, p1)| {
                        let mut keep = Vec::new();
                        if p0 < h0 {
                            keep.push((p0, p1.min(h0 - 1)));
                        }
                        if p1 > h1 {
                            keep.push((p0.max(h1 + 1), p1));
                        }
                        keep
                    })
                    .collect();
            }
            out.extend(pieces);
        }
    }
    out
}

impl fmt::Display for Guard {
    /// `metadata, loopback, ...`, or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_off() {
            return f.write_str("none");
        }
        let names: Vec<&str> = self.classes.iter().map(Class::as_str).collect();
        f.write_str(&names.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Origin, Source};

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    fn names(c: Classes) -> Vec<&'static str> {
        c.iter().map(Class::as_str).collect()
    }

    /// Every class, its edges, IPv4 and IPv6, and the IPv6 forms that
    /// carry an IPv4 address.
    #[test]
    fn classification_table() {
        let cases: &[(&str, &[&str])] = &[
            // Metadata (and the wider class each sits in).
            ("169.254.169.254", &["metadata", "link-local"]),
            ("169.254.170.2", &["metadata", "link-local"]),
            ("169.254.170.23", &["metadata", "link-local"]),
            ("100.100.100.200", &["metadata", "cgnat"]),
            ("fd00:ec2::254", &["metadata", "private"]),
            ("fd00:ec2::23", &["metadata", "private"]),
            ("fd00:ec2::255", &["private"]),
            // Loopback.
            ("127.0.0.1", &["loopback"]),
            ("127.255.255.255", &["loopback"]),
            ("::1", &["loopback"]),
            ("128.0.0.0", &[]),
            // Link-local.
            ("169.254.0.0", &["link-local"]),
            ("169.254.255.255", &["link-local"]),
            ("169.253.255.255", &[]),
            ("169.255.0.0", &[]),
            ("fe80::1", &["link-local"]),
            ("febf:ffff::1", &["link-local"]),
            ("fec0::1", &["private"]),
            // Unspecified.
            ("0.0.0.0", &["unspecified"]),
            ("0.255.255.255", &["unspecified"]),
            ("::", &["unspecified"]),
            ("1.0.0.0", &[]),
            // Multicast.
            ("224.0.0.1", &["multicast"]),
            ("239.255.255.255", &["multicast"]),
            ("223.255.255.255", &[]),
            ("ff02::1", &["multicast"]),
            ("ff05::1:3", &["multicast"]),
            // Broadcast.
            ("255.255.255.255", &["broadcast"]),
            ("255.255.255.254", &[]),
            // Documentation.
            ("192.0.2.1", &["documentation"]),
            ("198.51.100.7", &["documentation"]),
            ("203.0.113.255", &["documentation"]),
            ("203.0.114.0", &[]),
            ("2001:db8::1", &["documentation"]),
            ("3fff:fff::1", &["documentation"]),
            ("3fff:1000::1", &[]),
            // Benchmarking.
            ("198.18.0.0", &["benchmarking"]),
            ("198.19.255.255", &["benchmarking"]),
            ("198.20.0.0", &[]),
            ("2001:2::1", &["benchmarking"]),
            ("2001:2:1::1", &[]),
            // CGNAT.
            ("100.64.0.0", &["cgnat"]),
            ("100.127.255.255", &["cgnat"]),
            ("100.128.0.0", &[]),
            ("100.63.255.255", &[]),
            // Private.
            ("10.0.0.1", &["private"]),
            ("10.200.7.2", &["private"]),
            ("172.16.0.1", &["private"]),
            ("172.31.255.255", &["private"]),
            ("172.32.0.0", &[]),
            ("172.15.255.255", &[]),
            ("192.168.1.1", &["private"]),
            ("fc00::1", &["private"]),
            ("fd00:200:7::2", &["private"]),
            ("fe00::1", &[]),
            // Public.
            ("1.1.1.1", &[]),
            ("8.8.8.8", &[]),
            ("2606:4700::1111", &[]),
            ("2001:4860::8888", &[]),
            // IPv4-mapped: the embedded address decides.
            ("::ffff:169.254.169.254", &["metadata", "link-local"]),
            ("::ffff:127.0.0.1", &["loopback"]),
            ("::ffff:10.1.2.3", &["private"]),
            ("::ffff:0.0.0.0", &["unspecified"]),
            ("::ffff:1.1.1.1", &[]),
            // IPv4-translated.
            ("::ffff:0:169.254.169.254", &["metadata", "link-local"]),
            ("::ffff:0:8.8.8.8", &[]),
            // IPv4-compatible (deprecated), but not :: and ::1.
            ("::169.254.169.254", &["metadata", "link-local"]),
            ("::127.0.0.1", &["loopback"]),
            ("::100.100.100.200", &["metadata", "cgnat"]),
            ("::8.8.8.8", &[]),
            // NAT64 well-known prefix.
            ("64:ff9b::169.254.169.254", &["metadata", "link-local"]),
            ("64:ff9b::127.0.0.1", &["loopback"]),
            ("64:ff9b::192.168.0.1", &["private"]),
            ("64:ff9b::8.8.8.8", &[]),
            // NAT64 local-use prefix (RFC 8215), every RFC 6052 format.
            ("64:ff9b:1::a9fe:a9fe", &["metadata", "link-local"]),
            ("64:ff9b:1:abcd:0:1:a9fe:a9fe", &["metadata", "link-local"]),
            ("64:ff9b:1:a9fe:a9:fe00::", &["metadata", "link-local", "unspecified"]),
            ("64:ff9b:1:00a9:fe:a9fe::", &["metadata", "link-local", "unspecified"]),
            ("64:ff9b:1:0:a9:fea9:fe00:0", &["metadata", "link-local"]),
            ("64:ff9b:1:0:7f:1:0:0", &["loopback", "unspecified"]),
            ("64:ff9b:1::808:808", &[]),
            ("64:ff9b:1:808:8:800::", &["unspecified"]),
            // The u octet (bits 64-71) set: no RFC 6052 format but the /96.
            ("64:ff9b:1:100:a9fe:a9fe::", &["unspecified"]),
            ("64:ff9b:2::a9fe:a9fe", &[]),
            // Newer metadata endpoints.
            ("fd20:ce::254", &["metadata", "private"]),
            ("fd00:c1::a9fe:a9fe", &["metadata", "private"]),
            ("192.0.0.192", &["metadata"]),
            ("192.0.0.193", &[]),
        ];
        for (addr, want) in cases {
            assert_eq!(names(classify(ip(addr))), *want, "{addr}");
        }
    }

    fn policy(ips: &[&str]) -> Policy {
        let i: Vec<String> = ips.iter().map(|s| s.to_string()).collect();
        Policy::compile(&[Source { origin: Origin::Env("ALLOWLIST_IPS"), entries: &i }], &[]).unwrap()
    }

    /// The default guard, `private` opted in, `none`, and `allowlist.ips`.
    #[test]
    fn decisions() {
        let open = policy(&[]);
        let listed = policy(&["169.254.169.254", "fe80::/64", "10.0.0.0/8"]);
        let wide = policy(&["0.0.0.0/0", "::/0"]);
        let nat64 = policy(&["64:ff9b::/96", "64:ff9b:1::/48"]);
        let nat64_meta = policy(&["64:ff9b::a9fe:a9fe"]);
        let default = Guard::default();
        let private = Guard::parse("default,private").unwrap();
        type Case<'a> = (&'a Guard, &'a Policy, &'a str, Option<&'a str>);
        let cases: &[Case] = &[
            (&default, &open, "169.254.169.254", Some("metadata address 169.254.169.254")),
            (&default, &open, "::ffff:169.254.169.254", Some("metadata address ::ffff:169.254.169.254")),
            (&default, &open, "100.100.100.200", Some("metadata address 100.100.100.200")),
            (&default, &open, "fd00:ec2::254", Some("metadata address fd00:ec2::254")),
            (&default, &open, "127.0.0.1", Some("loopback address 127.0.0.1")),
            (&default, &open, "64:ff9b::7f00:1", Some("loopback address 64:ff9b::7f00:1")),
            (&default, &open, "fe80::1", Some("link-local address fe80::1")),
            (&default, &open, "0.0.0.0", Some("unspecified address 0.0.0.0")),
            (&default, &open, "ff02::1", Some("multicast address ff02::1")),
            // Opt-in classes pass by default.
            (&default, &open, "10.200.1.3", None),
            (&default, &open, "fd00:200:1::3", None),
            (&default, &open, "100.64.0.1", None),
            (&default, &open, "255.255.255.255", None),
            (&default, &open, "203.0.113.80", None),
            (&private, &open, "10.200.1.3", Some("private address 10.200.1.3")),
            (&private, &open, "::ffff:10.200.1.3", Some("private address ::ffff:10.200.1.3")),
            (&private, &open, "fd00:200:1::3", Some("private address fd00:200:1::3")),
            (&private, &open, "203.0.113.80", None),
            // allowlist.ips wins over the guard.
            (&default, &listed, "169.254.169.254", None),
            (&default, &listed, "::ffff:169.254.169.254", None),
            (&default, &listed, "169.254.170.2", Some("metadata address 169.254.170.2")),
            (&default, &listed, "fe80::1", None),
            (&default, &listed, "fe80:0:0:1::1", Some("link-local address fe80:0:0:1::1")),
            (&private, &listed, "10.1.2.3", None),
            // A wide entry that merely covers a guarded address does not
            // list it: ::/0, 0.0.0.0/0, the NAT64 prefixes.
            (&default, &wide, "64:ff9b::a9fe:a9fe", Some("metadata address 64:ff9b::a9fe:a9fe")),
            (&default, &wide, "64:ff9b:1::a9fe:a9fe", Some("metadata address 64:ff9b:1::a9fe:a9fe")),
            (&default, &wide, "fd20:ce::254", Some("metadata address fd20:ce::254")),
            (&default, &wide, "fd00:c1::a9fe:a9fe", Some("metadata address fd00:c1::a9fe:a9fe")),
            (&default, &wide, "169.254.169.254", Some("metadata address 169.254.169.254")),
            (&default, &wide, "192.0.0.192", Some("metadata address 192.0.0.192")),
            (&default, &wide, "8.8.8.8", None),
            (&default, &wide, "64:ff9b:1::808:808", None),
            (&default, &nat64, "64:ff9b:1::a9fe:a9fe", Some("metadata address 64:ff9b:1::a9fe:a9fe")),
            (&default, &nat64, "64:ff9b::a9fe:a9fe", Some("metadata address 64:ff9b::a9fe:a9fe")),
            (&default, &nat64, "64:ff9b::808:808", None),
            // Listed on purpose in its NAT64 form.
            (&default, &nat64_meta, "64:ff9b::a9fe:a9fe", None),
            // Off.
            (&Guard::OFF, &open, "169.254.169.254", None),
            (&Guard::OFF, &open, "127.0.0.1", None),
        ];
        for (g, p, addr, want) in cases {
            let got = g.check(p, ip(addr)).map(|x| x.to_string());
            assert_eq!(got.as_deref(), *want, "{g} {addr}");
        }
        let answer = [ip("203.0.113.80"), ip("169.254.169.254"), ip("127.0.0.1")];
        assert_eq!(
            default.check_all(&open, answer),
            Some(Guarded { ip: ip("169.254.169.254"), class: Class::Metadata }),
            "one guarded address refuses the answer; the first is named"
        );
        assert_eq!(default.check_all(&open, [ip("203.0.113.80")]), None);
    }

    #[test]
    fn parse_table() {
        let cases: &[(&str, Result<&str, &str>)] = &[
            ("metadata", Ok("metadata")),
            ("loopback, Link-Local ,link_local", Ok("loopback, link-local")),
            ("private,cgnat", Ok("private, cgnat")),
            ("default", Ok("metadata, loopback, link-local, unspecified, multicast")),
            ("default,private", Ok("metadata, loopback, link-local, unspecified, multicast, private")),
            ("none", Ok("none")),
            ("NONE", Ok("none")),
            (",,", Err("no class named (\"none\" turns the guard off)")),
            ("metadata,localhost", Err("unknown address class \"localhost\"")),
            ("none,private", Err("\"none\" turns the guard off and cannot be combined")),
        ];
        for (s, want) in cases {
            let got = Guard::parse(s).map(|g| g.to_string()).map_err(|e| e.to_string());
            assert_eq!(got, want.map(str::to_owned).map_err(str::to_owned), "{s:?}");
        }
        assert_eq!(Guard::default().to_string(), "metadata, loopback, link-local, unspecified, multicast");
        for c in Class::ALL {
            assert_eq!(Class::parse(c.as_str()), Some(c));
            assert!(Guard::accepted().contains(c.as_str()), "{c}");
        }
    }
}
