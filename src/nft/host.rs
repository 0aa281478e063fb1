//! The host facts the ruleset depends on ([`Host`]), read from `/proc`.
//!
//! `onlink6` comes from `/proc/net/ipv6_route`: a route without a gateway
//! on a real interface means its destinations are neighbours, so
//! neighbour discovery towards them is what RFC 4861 sends. The parser is
//! pure; [`read`] is the shell.

use super::ruleset::Host;
use crate::policy::cidr::Ranges;

/// `RTF_GATEWAY`, `RTF_REJECT` and `RTF_LOCAL` from `linux/route.h` and
/// `linux/ipv6_route.h`.
const RTF_GATEWAY: u32 = 0x0002;
const RTF_REJECT: u32 = 0x0200;
const RTF_LOCAL: u32 = 0x8000_0000;
/// Shorter on-link prefixes are not neighbours but a misconfiguration
/// (`::/0 dev eth0`); they would open neighbour discovery to everywhere.
const MIN_ONLINK_PREFIX: u32 = 16;

/// The host facts now; a missing or unreadable file means none (IPv6 off).
pub fn read() -> Host {
    let routes = std::fs::read_to_string("/proc/net/ipv6_route").unwrap_or_default();
    Host { onlink6: onlink6(&routes) }
}

/// On-link IPv6 prefixes from `/proc/net/ipv6_route` text, as sorted,
/// merged, inclusive intervals. Lines that do not parse are skipped.
pub fn onlink6(routes: &str) -> Vec<(u128, u128)> {
    Ranges::from_intervals(routes.lines().filter_map(onlink_route).collect()).intervals().to_vec()
}

/// One line: `dest plen src splen nexthop metric refcnt use flags dev`.
fn onlink_route(line: &str) -> Option<(u128, u128)> {
    let f: Vec<&str> = line.split_whitespace().collect();
    if f.len() < 10 {
        return None;
    }
    let dest = u128::from_str_radix(f[0], 16).ok()?;
    let plen = u32::from_str_radix(f[1], 16).ok()?;
    let flags = u32::from_str_radix(f[8], 16).ok()?;
    let dev = f[9];
    let multicast = dest >> 120 == 0xff;
    if dev == "lo"
        || flags & (RTF_GATEWAY | RTF_REJECT | RTF_LOCAL) != 0
        || multicast
        || !(MIN_ONLINK_PREFIX..=128).contains(&plen)
    {
        return None;
    }
    let host_bits = 128 - plen;
    let last = if host_bits == 0 { dest } else { dest | (u128::MAX >> plen) };
    Some((dest, last))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `/proc/net/ipv6_route` of a pod with fd00:99::1/64 on eth0, a
    /// default route via fd00:99::3, and the kernel's local, multicast and
    /// unreachable entries.
    const ROUTES: &str = "\
fd000099000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
fe800000000000000000000000000000 40 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 fd000099000000000000000000000003 00000400 00000001 00000000 00000003     eth0
00000000000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001       lo
fd000099000000000000000000000001 80 00000000000000000000000000000000 00 00000000000000000000000000000000 00000000 00000002 00000000 80200001     eth0
ff000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000002 00000000 00000001     eth0
00000000000000000000000000000000 00 00000000000000000000000000000000 00 00000000000000000000000000000000 ffffffff 00000001 00000000 00200200       lo
fd000000000000000000000000000000 08 00000000000000000000000000000000 00 00000000000000000000000000000000 00000100 00000001 00000000 00000001     eth1
garbage line
";

    #[test]
    fn only_gatewayless_routes_on_real_interfaces_are_on_link() {
        let got = onlink6(ROUTES);
        let fd99 = 0xfd00_0099u128 << 96;
        let fe80 = 0xfe80u128 << 112;
        assert_eq!(got, vec![(fd99, fd99 | (u128::MAX >> 64)), (fe80, fe80 | (u128::MAX >> 64))]);
    }

    #[test]
    fn overlapping_prefixes_merge_and_short_ones_are_refused() {
        let a = "fd000000000000000000000000000000 10 0 00 0 0 0 0 00000001 eth0\n\
                 fd000099000000000000000000000000 40 0 00 0 0 0 0 00000001 eth1\n\
                 00000000000000000000000000000000 00 0 00 0 0 0 0 00000001 eth2\n";
        let fd = 0xfd00u128 << 112;
        assert_eq!(onlink6(a), vec![(fd, fd | (u128::MAX >> 16))]);
    }
}
