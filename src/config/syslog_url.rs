//! `SYSLOG_URL`: which collector, over which transport. A value of the
//! configuration, so it lives here and the syslog forwarder takes it.

use std::fmt;
use std::net::IpAddr;

/// How the messages travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    pub fn scheme(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }

    /// The IANA port: syslog 514/udp, syslog-conn 601/tcp, syslog-tls 6514.
    pub fn default_port(self) -> u16 {
        match self {
            Transport::Udp => 514,
            Transport::Tcp => 601,
            Transport::Tls => 6514,
        }
    }
}

/// A parsed `SYSLOG_URL`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyslogUrl {
    pub transport: Transport,
    /// An IP address, or a name in the form `policy::normalize` gives.
    pub host: String,
    pub port: u16,
}

impl fmt::Display for SyslogUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host.parse::<IpAddr>() {
            Ok(IpAddr::V6(a)) => write!(f, "{}://[{a}]:{}", self.transport.scheme(), self.port),
            _ => write!(f, "{}://{}:{}", self.transport.scheme(), self.host, self.port),
        }
    }
}

/// What `SYSLOG_URL` accepts, for error messages.
pub const URL_FORMS: &str = "udp://host:514, tcp://host:601 or tls://host:6514 \
     (host a name, an IPv4 address or [IPv6]; the port may be left out)";

/// Parses `udp://host[:port]`, `tcp://host[:port]` or `tls://host[:port]`.
/// The error is what was expected, for the config's message.
pub fn parse_url(s: &str) -> Result<SyslogUrl, String> {
    let bad = |why: &str| format!("{URL_FORMS}; {why}");
    let (scheme, rest) = s.split_once("://").ok_or_else(|| bad("no scheme"))?;
    let transport = match scheme.to_ascii_lowercase().as_str() {
        "udp" => Transport::Udp,
        "tcp" => Transport::Tcp,
        "tls" => Transport::Tls,
        other => return Err(bad(&format!("unknown scheme {other:?}"))),
    };
    let authority = rest.strip_suffix('/').unwrap_or(rest);
    if authority.is_empty() {
        return Err(bad("no host"));
    }
    if authority.contains(['/', '?', '#', '@']) {
        return Err(bad("only scheme, host and port are allowed"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']').ok_or_else(|| bad("unclosed ["))?;
        let ip: std::net::Ipv6Addr = addr.parse().map_err(|_| bad("not an IPv6 address in [ ]"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
        };
        (ip.to_string(), port)
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (authority.to_owned(), None),
        }
    };
    let port = match port {
        None => transport.default_port(),
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n > 0 => n,
            _ => return Err(bad(&format!("bad port {p:?}"))),
        },
    };
    let host = if host.parse::<IpAddr>().is_ok() {
        host
    } else {
        if host.contains(':') {
            return Err(bad("an IPv6 address needs [ ]"));
        }
        crate::policy::normalize(&host).map_err(|why| bad(&format!("bad host {host:?}: {why}")))?
    };
    Ok(SyslogUrl { transport, host, port })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_table() {
        let ok: &[(&str, Transport, &str, u16)] = &[
            ("udp://10.0.0.5:514", Transport::Udp, "10.0.0.5", 514),
            ("udp://logs.example", Transport::Udp, "logs.example", 514),
            ("tcp://logs.example:601", Transport::Tcp, "logs.example", 601),
            ("TCP://Logs.Example.:1601/", Transport::Tcp, "logs.example", 1601),
            ("tcp://[fd00::5]:601", Transport::Tcp, "fd00::5", 601),
            ("tls://[fd00::5]", Transport::Tls, "fd00::5", 6514),
            ("tls://collector.example:6514", Transport::Tls, "collector.example", 6514),
        ];
        for &(s, t, host, port) in ok {
            assert_eq!(parse_url(s), Ok(SyslogUrl { transport: t, host: host.into(), port }), "{s}");
        }
        let bad: &[(&str, &str)] = &[
            ("logs.example:514", "no scheme"),
            ("http://logs.example", "unknown scheme \"http\""),
            ("relp://logs.example", "unknown scheme"),
            ("tcp://", "no host"),
            ("tcp://:601", "bad host"),
            ("tcp://logs.example:0", "bad port \"0\""),
            ("tcp://logs.example:99999", "bad port"),
            ("tcp://logs.example:x", "bad port"),
            ("tcp://logs.example/path", "only scheme, host and port"),
            ("tcp://user@logs.example", "only scheme, host and port"),
            ("tcp://fd00::5", "needs [ ]"),
            ("tcp://[fd00::5", "unclosed ["),
            ("tcp://[nope]:601", "not an IPv6 address"),
            ("tls://bad name:6514", "bad host"),
        ];
        for (s, want) in bad {
            let e = parse_url(s).unwrap_err();
            assert!(e.starts_with(URL_FORMS), "{s}: {e}");
            assert!(e.contains(want), "{s}: {e}");
        }
        assert_eq!(parse_url("tcp://[fd00::5]:601").unwrap().to_string(), "tcp://[fd00::5]:601");
        assert_eq!(parse_url("udp://logs.example").unwrap().to_string(), "udp://logs.example:514");
    }
}
