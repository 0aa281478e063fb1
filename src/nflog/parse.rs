//! NFLOG packet messages → [`LogRecord`]: the netlink attributes of one
//! `NFULNL_MSG_PACKET`, then the IPv4/IPv6 header and the TCP/UDP/ICMP
//! header behind it.
//!
//! Pure and total: any byte string gives a record or an error, never a
//! panic. The packet is cut at the configured copy range (`NFLOG_BUFSIZE`),
//! so a missing transport header is not an error: ports are then unknown.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

// linux/netfilter/nfnetlink_log.h
const NFULA_PACKET_HDR: u16 = 1;
const NFULA_MARK: u16 = 2;
const NFULA_PAYLOAD: u16 = 9;
const NFULA_PREFIX: u16 = 10;
const NFULA_UID: u16 = 11;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Tcp,
    Udp,
    Icmp,
    Icmpv6,
    Other(u8),
}

impl Protocol {
    fn from_number(n: u8) -> Protocol {
        match n {
            6 => Protocol::Tcp,
            17 => Protocol::Udp,
            1 => Protocol::Icmp,
            58 => Protocol::Icmpv6,
            n => Protocol::Other(n),
        }
    }

    /// The IP protocol number.
    pub fn number(self) -> u8 {
        match self {
            Protocol::Tcp => 6,
            Protocol::Udp => 17,
            Protocol::Icmp => 1,
            Protocol::Icmpv6 => 58,
            Protocol::Other(n) => n,
        }
    }

    /// The event's `protocol` field as g0efilter writes it: `TCP`, `UDP`,
    /// else the protocol number (`1` for ICMP, `58` for ICMPv6).
    pub fn name(self) -> std::borrow::Cow<'static, str> {
        match self {
            Protocol::Tcp => "TCP".into(),
            Protocol::Udp => "UDP".into(),
            other => other.number().to_string().into(),
        }
    }
}

/// One logged packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    /// The NFLOG group (nfgenmsg res_id).
    pub group: u16,
    /// The rule's log prefix (`blocked`).
    pub prefix: String,
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    /// Ports for TCP/UDP when the copied bytes reach them.
    pub src_port: Option<u16>,
    pub dst_port: Option<u16>,
    /// ICMP type and code.
    pub icmp: Option<(u8, u8)>,
    /// The sending socket's uid, when the kernel knows it.
    pub uid: Option<u32>,
    pub mark: Option<u32>,
    /// Bytes of the packet NFLOG copied (at most `NFLOG_BUFSIZE`): the
    /// event's `payload_len`, as g0efilter reports it.
    pub payload_len: usize,
}

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ParseError {
    /// Shorter than the header it claims to be.
    Truncated(&'static str),
    /// No NFULA_PAYLOAD attribute (the copy mode was not "packet").
    NoPayload,
    /// Not IPv4 or IPv6.
    UnknownVersion(u8),
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ParseError::Truncated(what) => write!(f, "nflog packet: truncated {what}"),
            ParseError::NoPayload => {
                f.write_str("nflog packet: no payload attribute (copy mode is not packet)")
            }
            ParseError::UnknownVersion(v) => write!(f, "nflog packet: IP version {v} is neither 4 nor 6"),
        }
    }
}

impl std::error::Error for ParseError {}

/// Parses the payload of one `NFULNL_MSG_PACKET` netlink message (the
/// bytes after the 16-byte netlink header).
pub fn parse_message(msg: &[u8]) -> Result<LogRecord, ParseError> {
    if msg.len() < 4 {
        return Err(ParseError::Truncated("nfgenmsg"));
    }
    let group = u16::from_be_bytes([msg[2], msg[3]]);
    let mut prefix = String::new();
    let mut payload = None;
    let mut uid = None;
    let mut mark = None;
    for (ty, v) in crate::nft::netlink::attrs(&msg[4..]) {
        match ty {
            NFULA_PREFIX => {
                let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
                prefix = String::from_utf8_lossy(&v[..end]).into_owned();
            }
            NFULA_PAYLOAD => payload = Some(v),
            NFULA_UID if v.len() >= 4 => uid = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
            NFULA_MARK if v.len() >= 4 => mark = Some(u32::from_be_bytes([v[0], v[1], v[2], v[3]])),
            NFULA_PACKET_HDR => {}
            _ => {}
        }
    }
    let payload = payload.ok_or(ParseError::NoPayload)?;
    let pkt = parse_packet(payload)?;
    Ok(LogRecord {
        payload_len: payload.len(),
        group,
        prefix,
        src: pkt.src,
        dst: pkt.dst,
        protocol: pkt.protocol,
        src_port: pkt.ports.map(|p| p.0),
        dst_port: pkt.ports.map(|p| p.1),
        icmp: pkt.icmp,
        uid,
        mark,
    })
}

/// The addresses, protocol and ports of an IP packet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Packet {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub protocol: Protocol,
    pub ports: Option<(u16, u16)>,
    pub icmp: Option<(u8, u8)>,
}

/// Parses an IPv4 or IPv6 packet starting at the IP header.
pub fn parse_packet(p: &[u8]) -> Result<Packet, ParseError> {
    let first = *p.first().ok_or(ParseError::Truncated("ip header"))?;
    let (src, dst, proto, l4): (IpAddr, IpAddr, u8, Option<&[u8]>) = match first >> 4 {
        4 => {
            if p.len() < 20 {
                return Err(ParseError::Truncated("ipv4 header"));
            }
            let ihl = usize::from(first & 0x0f) * 4;
            let frag_offset = u16::from_be_bytes([p[6], p[7]]) & 0x1fff;
            let src = Ipv4Addr::new(p[12], p[13], p[14], p[15]);
            let dst = Ipv4Addr::new(p[16], p[17], p[18], p[19]);
            // Only the first fragment carries the transport header.
            let l4 = if ihl >= 20 && frag_offset == 0 { p.get(ihl..) } else { None };
            (src.into(), dst.into(), p[9], l4)
        }
        6 => {
            if p.len() < 40 {
                return Err(ParseError::Truncated("ipv6 header"));
            }
            let src =
                Ipv6Addr::from(<[u8; 16]>::try_from(&p[8..24]).map_err(|_| ParseError::Truncated("ipv6"))?);
            let dst =
                Ipv6Addr::from(<[u8; 16]>::try_from(&p[24..40]).map_err(|_| ParseError::Truncated("ipv6"))?);
            let (proto, l4) = skip_ipv6_extensions(p[6], &p[40..]);
            (src.into(), dst.into(), proto, l4)
        }
        v => return Err(ParseError::UnknownVersion(v)),
    };
    let protocol = Protocol::from_number(proto);
    let (mut ports, mut icmp) = (None, None);
    if let Some(h) = l4 {
        match protocol {
            Protocol::Tcp | Protocol::Udp if h.len() >= 4 => {
                ports = Some((u16::from_be_bytes([h[0], h[1]]), u16::from_be_bytes([h[2], h[3]])));
            }
            Protocol::Icmp | Protocol::Icmpv6 if h.len() >= 2 => icmp = Some((h[0], h[1])),
            _ => {}
        }
    }
    Ok(Packet { src, dst, protocol, ports, icmp })
}

/// Walks IPv6 extension headers (hop-by-hop, routing, destination options,
/// fragment) to the transport header. `None` when it is cut off or the
/// packet is a non-first fragment.
fn skip_ipv6_extensions(mut next: u8, mut rest: &[u8]) -> (u8, Option<&[u8]>) {
    // Bounded: each step consumes at least 8 bytes.
    for _ in 0..8 {
        match next {
            0 | 43 | 60 => {
                if rest.len() < 8 {
                    return (next, None);
                }
                let len = (usize::from(rest[1]) + 1) * 8;
                next = rest[0];
                rest = match rest.get(len..) {
                    Some(r) => r,
                    None => return (next, None),
                };
            }
            44 => {
                if rest.len() < 8 {
                    return (next, None);
                }
                let offset = u16::from_be_bytes([rest[2], rest[3]]) >> 3;
                next = rest[0];
                if offset != 0 {
                    return (next, None);
                }
                rest = &rest[8..];
            }
            _ => return (next, Some(rest)),
        }
    }
    (next, None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn ipv4_tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16) -> Vec<u8> {
        let mut p = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
        p.extend_from_slice(&src);
        p.extend_from_slice(&dst);
        p.extend_from_slice(&sport.to_be_bytes());
        p.extend_from_slice(&dport.to_be_bytes());
        p.extend_from_slice(&[0; 16]);
        p
    }

    fn ipv6(next: u8, l4: &[u8]) -> Vec<u8> {
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(l4.len() as u16).to_be_bytes());
        p.extend_from_slice(&[next, 64]);
        p.extend_from_slice(&"fd00:200:1::1".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(&"fd00:200:1::2".parse::<Ipv6Addr>().unwrap().octets());
        p.extend_from_slice(l4);
        p
    }

    fn nlattr(ty: u16, v: &[u8]) -> Vec<u8> {
        let mut a = ((v.len() + 4) as u16).to_ne_bytes().to_vec();
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(v);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    pub fn message(group: u16, prefix: &str, packet: &[u8]) -> Vec<u8> {
        let mut m = vec![2, 0];
        m.extend_from_slice(&group.to_be_bytes());
        m.extend(nlattr(NFULA_PACKET_HDR, &[0x08, 0x00, 3, 0]));
        let mut pre = prefix.as_bytes().to_vec();
        pre.push(0);
        m.extend(nlattr(NFULA_PREFIX, &pre));
        m.extend(nlattr(NFULA_UID, &1000u32.to_be_bytes()));
        m.extend(nlattr(NFULA_PAYLOAD, packet));
        m
    }

    #[test]
    fn tcp_v4_message() {
        let m = message(5, "blocked", &ipv4_tcp([10, 200, 1, 1], [10, 200, 1, 2], 40000, 8080));
        let r = parse_message(&m).unwrap();
        assert_eq!(r.group, 5);
        assert_eq!(r.prefix, "blocked");
        assert_eq!(r.src, "10.200.1.1".parse::<IpAddr>().unwrap());
        assert_eq!(r.dst, "10.200.1.2".parse::<IpAddr>().unwrap());
        assert_eq!((r.protocol, r.src_port, r.dst_port), (Protocol::Tcp, Some(40000), Some(8080)));
        assert_eq!(r.uid, Some(1000));
    }

    #[test]
    fn packet_table() {
        let udp = ipv6(17, &[0x9c, 0x40, 0x01, 0xbb, 0, 8, 0, 0]);
        let icmp6 = ipv6(58, &[128, 0, 0, 0]);
        // hop-by-hop (8 bytes) then TCP
        let mut hbh = vec![6, 0, 1, 4, 0, 0, 0, 0];
        hbh.extend_from_slice(&[0x00, 0x50, 0x01, 0xbb]);
        let ext = ipv6(0, &hbh);
        // non-first fragment: no ports
        let frag = ipv6(44, &[17, 0, 0, 0x10, 0, 0, 0, 1, 1, 2, 3, 4]);
        let mut v4frag = ipv4_tcp([1, 1, 1, 1], [2, 2, 2, 2], 1, 2);
        v4frag[7] = 1;
        let cut = &ipv4_tcp([1, 1, 1, 1], [2, 2, 2, 2], 1, 2)[..22];
        type Case<'a> = (&'a str, Vec<u8>, Protocol, Option<(u16, u16)>, Option<(u8, u8)>);
        let cases: Vec<Case> = vec![
            ("udp v6", udp, Protocol::Udp, Some((40000, 443)), None),
            ("icmpv6 echo", icmp6, Protocol::Icmpv6, None, Some((128, 0))),
            ("extension header", ext, Protocol::Tcp, Some((80, 443)), None),
            ("v6 later fragment", frag, Protocol::Udp, None, None),
            ("v4 later fragment", v4frag, Protocol::Tcp, None, None),
            ("cut by copy range", cut.to_vec(), Protocol::Tcp, None, None),
        ];
        for (name, p, proto, ports, icmp) in cases {
            let got = parse_packet(&p).unwrap_or_else(|e| panic!("{name}: {e}"));
            assert_eq!((got.protocol, got.ports, got.icmp), (proto, ports, icmp), "{name}");
        }
    }

    #[test]
    fn malformed_table() {
        let cases: Vec<(&str, Vec<u8>, ParseError)> = vec![
            ("empty", vec![], ParseError::Truncated("nfgenmsg")),
            ("no payload", message(0, "blocked", &[])[..24].to_vec(), ParseError::NoPayload),
            ("short v4", message(0, "x", &[0x45, 0, 0]), ParseError::Truncated("ipv4 header")),
            ("short v6", message(0, "x", &[0x60; 39]), ParseError::Truncated("ipv6 header")),
            ("version 5", message(0, "x", &[0x50; 40]), ParseError::UnknownVersion(5)),
        ];
        for (name, m, want) in cases {
            assert_eq!(parse_message(&m), Err(want), "{name}");
        }
    }

    /// Real NFLOG messages captured from egret's rules in a test namespace
    /// (workload 10.200.77.1 / fd00:200:77::1, copy range 128).
    #[test]
    fn real_captures() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/fuzz/nflog/");
        let read = |f: &str| std::fs::read(format!("{dir}{f}")).expect("capture file");
        let cases = [
            ("tcp4-syn.bin", "10.200.77.1", "10.200.77.3", Protocol::Tcp, Some(7000)),
            ("tcp6-syn.bin", "fd00:200:77::1", "fd00:200:77::3", Protocol::Tcp, Some(7000)),
            ("udp4-443.bin", "10.200.77.1", "10.200.77.3", Protocol::Udp, Some(443)),
            // An MLDv2 report: ICMPv6 behind a hop-by-hop header.
            ("mld6-hbh.bin", "fe80::14ce:dfff:fe89:6937", "ff02::16", Protocol::Icmpv6, None),
        ];
        for (file, src, dst, proto, dport) in cases {
            let r = parse_message(&read(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert_eq!(r.prefix, "blocked", "{file}");
            assert_eq!((r.src.to_string().as_str(), r.dst.to_string().as_str()), (src, dst), "{file}");
            assert_eq!((r.protocol, r.dst_port), (proto, dport), "{file}");
        }
    }

    #[test]
    fn every_prefix_is_total() {
        let m = message(1, "blocked", &ipv4_tcp([10, 0, 0, 1], [10, 0, 0, 2], 1234, 80));
        for n in 0..=m.len() {
            let _ = parse_message(&m[..n]);
        }
        let p = ipv6(0, &[6, 255, 0, 0, 0, 0, 0, 0]);
        for n in 0..=p.len() {
            let _ = parse_packet(&p[..n]);
        }
    }
}
