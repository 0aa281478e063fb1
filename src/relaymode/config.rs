//! Relay mode's environment → [`RelayConfig`], with docker-whitelist's
//! variables and meanings (`TARGET`, `PORT`, `MODE`, `MAX_CONNECTIONS`,
//! `PRE_RESOLVE`, `NAMESERVERS`, `UDP_ANSWERS`, `VERBOSE`, the HTTP and
//! SMTP health checks) plus egret's `RELAYS` and `RELAY_CHECK`. Pure: the
//! environment comes in as a lookup function and every problem is
//! collected at once ([`ConfigErrors`], exit 2).

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use crate::config::{parse_bool, parse_duration, parse_port, ConfigErrors, Env};

/// docker-whitelist's defaults, and egret's for what it adds.
pub mod defaults {
    use std::time::Duration;
    /// `PORT`: both web ports.
    pub const PORTS: [u16; 2] = [80, 443];
    /// `MAX_CONNECTIONS`, per port (socat's `max-children`).
    pub const MAX_CONNECTIONS: usize = 100;
    /// `NAMESERVERS` (docker-whitelist's: OpenDNS and Google).
    pub const NAMESERVERS: [&str; 4] = ["208.67.222.222", "8.8.8.8", "208.67.220.220", "8.8.4.4"];
    /// `*_HEALTHCHECK_TIMEOUT_MS`.
    pub const HEALTHCHECK_TIMEOUT: Duration = Duration::from_millis(2000);
    /// `SMTP_HEALTHCHECK_COMMAND`.
    pub const SMTP_COMMAND: &str = "HELP";
    /// `RELAY_QUEUE_TIMEOUT`: how long a TCP connection over the limit
    /// waits for a slot before it is closed (with a `limit` event).
    pub const QUEUE_TIMEOUT: Duration = Duration::from_secs(30);
    /// `CONNECT_TIMEOUT` to the target.
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    /// `IDLE_TIMEOUT` of a TCP connection (socat has none; long).
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(3600);
    /// `UDP_TIMEOUT`: a UDP flow without traffic this long is closed.
    pub const UDP_TIMEOUT: Duration = Duration::from_secs(30);
    /// `HEADER_TIMEOUT`: with `RELAY_CHECK`, how long the client has to
    /// send its ClientHello or request head.
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
}

/// TCP or UDP (`MODE`, or `/tcp` `/udp` in `RELAYS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Proto {
    Tcp,
    Udp,
}

impl Proto {
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// Where a relay's connections go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A host name, normalised (resolved by the shell).
    Name(String),
    Ip(IpAddr),
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Name(n) => f.write_str(n),
            Target::Ip(IpAddr::V6(ip)) => write!(f, "[{ip}]"),
            Target::Ip(ip) => write!(f, "{ip}"),
        }
    }
}

/// One door: port `port`/`proto` of this container leads to the same
/// port of `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relay {
    pub target: Target,
    pub port: u16,
    pub proto: Proto,
}

impl fmt::Display for Relay {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}/{}", self.target, self.port, self.proto.as_str())
    }
}

/// What `RELAY_CHECK` asks to check on each TCP connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Checks {
    /// A TLS connection's SNI must name the target.
    pub sni: bool,
    /// A plain HTTP request's Host must name the target (every request of
    /// a kept-alive connection).
    pub host: bool,
}

impl Checks {
    pub fn any(self) -> bool {
        self.sni || self.host
    }
}

/// `HTTP_HEALTHCHECK`: a GET of `url` (`http://`) must answer with a
/// status below 500 within `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpCheck {
    pub url: CheckUrl,
    pub timeout: Duration,
}

/// `SMTP_HEALTHCHECK`: the server's greeting must be 2xx and `command`
/// must get a 2xx/3xx reply within `timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SmtpCheck {
    pub url: CheckUrl,
    pub command: String,
    pub timeout: Duration,
}

/// A health-check URL split up: `scheme://host[:port][/path]`, `$TARGET`
/// already replaced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckUrl {
    pub scheme: String,
    pub host: String,
    pub port: u16,
    pub path: String,
}

/// The relay mode's whole configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct RelayConfig {
    /// Every door, sorted by protocol and port.
    pub relays: Vec<Relay>,
    /// `MAX_CONNECTIONS`: per port (TCP connections, UDP flows).
    pub max_connections: usize,
    /// `PRE_RESOLVE`: resolve targets through `nameservers`, never the
    /// container's own resolver (which answers the alias with this
    /// container's own address).
    pub pre_resolve: bool,
    pub nameservers: Vec<SocketAddr>,
    /// `UDP_ANSWERS`: relay the target's datagrams back to the client.
    pub udp_answers: bool,
    pub verbose: bool,
    pub checks: Checks,
    pub http_check: Option<HttpCheck>,
    pub smtp_check: Option<SmtpCheck>,
    pub queue_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    pub udp_timeout: Duration,
    pub header_timeout: Duration,
}

/// Whether the environment selects relay mode: `FILTER_MODE=relay`, or
/// `TARGET` / `RELAYS` set and `FILTER_MODE` not (a docker-whitelist
/// configuration taken over unchanged).
pub fn selected(lookup: &dyn Fn(&str) -> Option<String>) -> bool {
    let set = |v: &str| lookup(v).is_some_and(|x| !x.trim().is_empty());
    match lookup("FILTER_MODE").map(|m| m.trim().to_ascii_lowercase()) {
        Some(m) if !m.is_empty() => m == "relay",
        _ => set("TARGET") || set("RELAYS"),
    }
}

/// `PORT`: ports separated by spaces or commas.
pub fn parse_ports(s: &str) -> Result<Vec<u16>, String> {
    let mut out = Vec::new();
    for p in s.split(|c: char| c == ',' || c.is_whitespace()).filter(|p| !p.is_empty()) {
        out.push(
            parse_port(p).map_err(|_| format!("ports 1..65535 separated by spaces or commas, not {p:?}"))?,
        );
    }
    if out.is_empty() {
        return Err("at least one port".into());
    }
    Ok(out)
}

/// `TARGET`: a host name or an IP address (IPv6 with or without
/// brackets).
pub fn parse_target(s: &str) -> Result<Target, String> {
    let bare = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(s);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(Target::Ip(ip));
    }
    crate::policy::normalize(s).map(Target::Name).map_err(|e| format!("a host name or an IP address ({e})"))
}

/// One `RELAYS` entry: `host:port[/tcp|/udp]` (`[v6]:port/udp`).
pub fn parse_relay(s: &str) -> Result<Relay, String> {
    const FORM: &str = "host:port, host:port/tcp or host:port/udp";
    let (hp, proto) = match s.rsplit_once('/') {
        Some((hp, p)) => (hp, parse_mode(p).map_err(|_| format!("{FORM}: unknown protocol {p:?}"))?),
        None => (s, Proto::Tcp),
    };
    let (host, port) = match hp.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || (h.starts_with('[') && h.ends_with(']')) => (h, p),
        _ => return Err(format!("{FORM}: a port is needed")),
    };
    let port = parse_port(port).map_err(|_| format!("{FORM}: bad port {port:?}"))?;
    Ok(Relay { target: parse_target(host).map_err(|e| format!("{FORM}: {e}"))?, port, proto })
}

fn parse_mode(s: &str) -> Result<Proto, String> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        _ => Err("tcp or udp".into()),
    }
}

/// `RELAY_CHECK`: `sni`, `host`, both (comma or space separated), or
/// `none`.
pub fn parse_checks(s: &str) -> Result<Checks, String> {
    let mut c = Checks::default();
    for w in s.split(|ch: char| ch == ',' || ch.is_whitespace()).filter(|w| !w.is_empty()) {
        match w.to_ascii_lowercase().as_str() {
            "sni" | "tls" => c.sni = true,
            "host" | "http" => c.host = true,
            "none" | "off" => {}
            _ => return Err(format!("sni, host, sni,host or none (not {w:?})")),
        }
    }
    Ok(c)
}

/// A health-check URL (`http://`, `https://` or `smtp://`), with
/// `$TARGET` (or `${TARGET}`) replaced by `target`.
pub fn parse_check_url(s: &str, target: &str, schemes: &[(&str, u16)]) -> Result<CheckUrl, String> {
    let s = s.replace("${TARGET}", target).replace("$TARGET", target);
    let form = || {
        let names: Vec<String> = schemes.iter().map(|(n, _)| format!("{n}://")).collect();
        format!("a {} URL with a host", names.join(" or "))
    };
    let (scheme, rest) = s.split_once("://").ok_or_else(form)?;
    let scheme = scheme.to_ascii_lowercase();
    let &(_, default_port) = schemes.iter().find(|(n, _)| *n == scheme).ok_or_else(form)?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            (h, parse_port(p).map_err(|_| format!("{}: bad port {p:?}", form()))?)
        }
        _ => (authority, default_port),
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() {
        return Err(form());
    }
    Ok(CheckUrl { scheme, host: host.to_owned(), port, path: path.to_owned() })
}

fn parse_nameserver(s: &str) -> Result<SocketAddr, String> {
    crate::config::parse_socket_addr(s, 53)
        .map_err(|_| format!("IP addresses (optionally IP:port), not {s:?}"))
}

fn parse_ms(s: &str) -> Result<Duration, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(Duration::from_millis(n)),
        _ => Err("milliseconds above 0".into()),
    }
}

impl RelayConfig {
    /// Parses relay mode's variables; every problem at once.
    pub fn from_env(lookup: &dyn Fn(&str) -> Option<String>) -> Result<RelayConfig, ConfigErrors> {
        use defaults as d;
        let mut e = Env { lookup, errors: Vec::new() };
        let target = match e.raw("TARGET") {
            None => None,
            Some(v) => match parse_target(&v) {
                Ok(t) => Some(t),
                Err(why) => {
                    e.error("TARGET", v, why);
                    None
                }
            },
        };
        let ports = e.get("PORT", d::PORTS.to_vec(), parse_ports);
        let mode = e.get("MODE", Proto::Tcp, parse_mode);
        let mut relays: Vec<Relay> = Vec::new();
        if let Some(t) = &target {
            relays.extend(ports.iter().map(|&port| Relay { target: t.clone(), port, proto: mode }));
        }
        let relays_set = e.raw("RELAYS");
        if let Some(v) = &relays_set {
            for item in v.split(|c: char| c == ',' || c.is_whitespace()).filter(|x| !x.is_empty()) {
                match parse_relay(item) {
                    Ok(r) => relays.push(r),
                    Err(why) => e.error("RELAYS", item, why),
                }
            }
        }
        if e.raw("TARGET").is_none() && relays_set.is_none() {
            e.error("TARGET", "", "must be set: the host (or IP) the relayed ports lead to (or set RELAYS)");
        }
        relays.sort_by_key(|r| (r.proto, r.port));
        for w in relays.windows(2) {
            if (w[0].proto, w[0].port) == (w[1].proto, w[1].port) {
                let var = if target.is_some() && relays_set.is_none() { "PORT" } else { "RELAYS" };
                e.error(var, w[1].to_string(), format!("one target per port: {} is relayed already", w[0]));
            }
        }
        relays.dedup_by_key(|r| (r.proto, r.port));
        let max_connections = e.get("MAX_CONNECTIONS", d::MAX_CONNECTIONS, |s| match s.parse::<usize>() {
            Ok(n) if (1..=1_000_000).contains(&n) => Ok(n),
            _ => Err("a whole number 1..1000000 (connections per port)".into()),
        });
        let pre_resolve = e.get("PRE_RESOLVE", false, parse_bool);
        let nameservers = e.get(
            "NAMESERVERS",
            d::NAMESERVERS
                .iter()
                .map(|s| SocketAddr::new(s.parse().expect("default is an IP"), 53))
                .collect(),
            |s| {
                let v: Result<Vec<_>, _> = s
                    .split(|c: char| c == ',' || c.is_whitespace())
                    .filter(|x| !x.is_empty())
                    .map(parse_nameserver)
                    .collect();
                v.and_then(|v| if v.is_empty() { Err("at least one IP address".into()) } else { Ok(v) })
            },
        );
        let udp_answers = e.get("UDP_ANSWERS", true, parse_bool);
        let verbose = e.get("VERBOSE", false, parse_bool);
        let checks = e.get("RELAY_CHECK", Checks::default(), parse_checks);
        if checks.any() && !relays.iter().any(|r| r.proto == Proto::Tcp) {
            e.error(
                "RELAY_CHECK",
                e.raw("RELAY_CHECK").unwrap_or_default(),
                "a TCP relay (UDP is not checked)",
            );
        }
        // The health checks default to the (first) target.
        let first = relays.first().map(|r| r.target.to_string()).unwrap_or_default();
        let first = first.trim_start_matches('[').trim_end_matches(']').to_owned();
        let http_check = if e.get("HTTP_HEALTHCHECK", false, parse_bool) {
            let url = e.raw("HTTP_HEALTHCHECK_URL").unwrap_or_else(|| "http://$TARGET/".into());
            let timeout = e.get("HTTP_HEALTHCHECK_TIMEOUT_MS", d::HEALTHCHECK_TIMEOUT, parse_ms);
            match parse_check_url(&url, &first, &[("http", 80)]) {
                Ok(url) => Some(HttpCheck { url, timeout }),
                Err(why) => {
                    e.error("HTTP_HEALTHCHECK_URL", url, why);
                    None
                }
            }
        } else {
            None
        };
        let smtp_check = if e.get("SMTP_HEALTHCHECK", false, parse_bool) {
            let url = e.raw("SMTP_HEALTHCHECK_URL").unwrap_or_else(|| "smtp://$TARGET/".into());
            let timeout = e.get("SMTP_HEALTHCHECK_TIMEOUT_MS", d::HEALTHCHECK_TIMEOUT, parse_ms);
            let command = e.raw("SMTP_HEALTHCHECK_COMMAND").unwrap_or_else(|| d::SMTP_COMMAND.into());
            if command.contains(['\r', '\n']) {
                e.error("SMTP_HEALTHCHECK_COMMAND", command.clone(), "one SMTP command line");
            }
            match parse_check_url(&url, &first, &[("smtp", 25)]) {
                Ok(url) => Some(SmtpCheck { url, command, timeout }),
                Err(why) => {
                    e.error("SMTP_HEALTHCHECK_URL", url, why);
                    None
                }
            }
        } else {
            None
        };
        let positive = |what: &'static str| {
            move |s: &str| match parse_duration(s) {
                Ok(d) if !d.is_zero() => Ok(d),
                _ => Err(format!("a duration above zero for {what} (e.g. 30s)")),
            }
        };
        let cfg = RelayConfig {
            relays,
            max_connections,
            pre_resolve,
            nameservers,
            udp_answers,
            verbose,
            checks,
            http_check,
            smtp_check,
            queue_timeout: e.get("RELAY_QUEUE_TIMEOUT", d::QUEUE_TIMEOUT, positive("the wait")),
            connect_timeout: e.get("CONNECT_TIMEOUT", d::CONNECT_TIMEOUT, positive("connects")),
            idle_timeout: e.get("IDLE_TIMEOUT", d::IDLE_TIMEOUT, positive("idle connections")),
            udp_timeout: e.get("UDP_TIMEOUT", d::UDP_TIMEOUT, positive("idle UDP flows")),
            header_timeout: e.get("HEADER_TIMEOUT", d::HEADER_TIMEOUT, positive("the first bytes")),
        };
        if e.errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(e.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(pairs: &[(&str, &str)]) -> Result<RelayConfig, ConfigErrors> {
        let pairs: Vec<(String, String)> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        RelayConfig::from_env(&move |k| pairs.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone()))
    }

    fn sel(pairs: &[(&str, &str)]) -> bool {
        selected(&|k| pairs.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string()))
    }

    #[test]
    fn docker_whitelist_defaults() {
        let c = cfg(&[("TARGET", "fonts.googleapis.com")]).unwrap();
        let t = Target::Name("fonts.googleapis.com".into());
        assert_eq!(
            c.relays,
            vec![
                Relay { target: t.clone(), port: 80, proto: Proto::Tcp },
                Relay { target: t, port: 443, proto: Proto::Tcp }
            ]
        );
        assert_eq!(c.max_connections, 100);
        assert!(!c.pre_resolve && c.udp_answers && !c.verbose && !c.checks.any());
        assert_eq!(c.nameservers.len(), 4);
        assert_eq!(c.nameservers[1], "8.8.8.8:53".parse().unwrap());
        assert_eq!((c.http_check.clone(), c.smtp_check.clone()), (None, None));
    }

    #[test]
    fn every_variable() {
        let c = cfg(&[
            ("TARGET", "Syslog.Example.com."),
            ("PORT", "514, 1514 2514"),
            ("MODE", "UDP"),
            ("MAX_CONNECTIONS", "2"),
            ("PRE_RESOLVE", "1"),
            ("NAMESERVERS", "10.0.0.53 [fd00::53]:5353,10.0.0.54:54"),
            ("UDP_ANSWERS", "0"),
            ("VERBOSE", "1"),
        ])
        .unwrap();
        let ports: Vec<(u16, Proto)> = c.relays.iter().map(|r| (r.port, r.proto)).collect();
        assert_eq!(ports, vec![(514, Proto::Udp), (1514, Proto::Udp), (2514, Proto::Udp)]);
        assert_eq!(c.relays[0].target, Target::Name("syslog.example.com".into()));
        assert_eq!(c.max_connections, 2);
        assert!(c.pre_resolve && !c.udp_answers && c.verbose);
        let ns: Vec<SocketAddr> =
            ["10.0.0.53:53", "[fd00::53]:5353", "10.0.0.54:54"].iter().map(|s| s.parse().unwrap()).collect();
        assert_eq!(c.nameservers, ns);
    }

    #[test]
    fn health_checks_default_to_the_target() {
        let c = cfg(&[
            ("TARGET", "mail.example.com"),
            ("PORT", "587"),
            ("HTTP_HEALTHCHECK", "1"),
            ("SMTP_HEALTHCHECK", "true"),
        ])
        .unwrap();
        let h = c.http_check.unwrap();
        assert_eq!(
            h.url,
            CheckUrl { scheme: "http".into(), host: "mail.example.com".into(), port: 80, path: "/".into() }
        );
        assert_eq!(h.timeout, Duration::from_millis(2000));
        let s = c.smtp_check.unwrap();
        assert_eq!((s.url.port, s.command.as_str()), (25, "HELP"));
        let c = cfg(&[
            ("TARGET", "10.1.2.3"),
            ("SMTP_HEALTHCHECK", "1"),
            ("SMTP_HEALTHCHECK_URL", "smtp://$TARGET:2525/"),
            ("SMTP_HEALTHCHECK_COMMAND", "NOOP"),
            ("SMTP_HEALTHCHECK_TIMEOUT_MS", "300"),
            ("HTTP_HEALTHCHECK", "1"),
            ("HTTP_HEALTHCHECK_URL", "http://${TARGET}:8443/ping?x=1"),
        ])
        .unwrap();
        let s = c.smtp_check.unwrap();
        assert_eq!((s.url.host.as_str(), s.url.port, s.command.as_str()), ("10.1.2.3", 2525, "NOOP"));
        assert_eq!(s.timeout, Duration::from_millis(300));
        let h = c.http_check.unwrap().url;
        assert_eq!((h.scheme.as_str(), h.port, h.path.as_str()), ("http", 8443, "/ping?x=1"));
    }

    #[test]
    fn relays_and_checks() {
        let c = cfg(&[
            ("RELAYS", "fonts.googleapis.com:443,smtp.example.com:587/tcp, syslog.example.com:514/udp [fd00::1]:53/udp"),
            ("RELAY_CHECK", "sni,host"),
        ])
        .unwrap();
        let shown: Vec<String> = c.relays.iter().map(ToString::to_string).collect();
        assert_eq!(
            shown,
            [
                "fonts.googleapis.com:443/tcp",
                "smtp.example.com:587/tcp",
                "[fd00::1]:53/udp",
                "syslog.example.com:514/udp"
            ]
        );
        assert_eq!(c.checks, Checks { sni: true, host: true });
        // TARGET and RELAYS add up.
        let c = cfg(&[("TARGET", "a.example"), ("PORT", "443"), ("RELAYS", "b.example:25")]).unwrap();
        assert_eq!(c.relays.len(), 2);
    }

    #[test]
    fn every_problem_at_once() {
        let err = cfg(&[
            ("PORT", "80 http"),
            ("MODE", "sctp"),
            ("MAX_CONNECTIONS", "0"),
            ("PRE_RESOLVE", "maybe"),
            ("NAMESERVERS", "dns.google"),
            ("RELAY_CHECK", "sni,alpn"),
            ("RELAYS", "a.example,b.example:99999,c.example:53/sctp"),
            ("HTTP_HEALTHCHECK", "1"),
            ("HTTP_HEALTHCHECK_URL", "ftp://x/"),
            ("HTTP_HEALTHCHECK_TIMEOUT_MS", "-5"),
        ])
        .unwrap_err();
        let vars: Vec<&str> = err.0.iter().map(|e| e.var).collect();
        for v in [
            "PORT",
            "MODE",
            "MAX_CONNECTIONS",
            "PRE_RESOLVE",
            "NAMESERVERS",
            "RELAY_CHECK",
            "HTTP_HEALTHCHECK_URL",
            "HTTP_HEALTHCHECK_TIMEOUT_MS",
        ] {
            assert!(vars.contains(&v), "{v} missing in {err}");
        }
        assert_eq!(vars.iter().filter(|v| **v == "RELAYS").count(), 3, "{err}");
        let text = err.to_string();
        assert!(text.contains("MODE=\"sctp\": expected tcp or udp"), "{text}");
        // Nothing to relay at all.
        let err = cfg(&[]).unwrap_err();
        assert!(err.to_string().contains("TARGET: must be set"), "{err}");
        // One port, two targets.
        let err = cfg(&[("TARGET", "a.example"), ("PORT", "443 443")]).unwrap_err();
        assert!(err.to_string().contains("one target per port"), "{err}");
        // RELAY_CHECK needs something to check.
        let err = cfg(&[("TARGET", "a.example"), ("MODE", "udp"), ("RELAY_CHECK", "sni")]).unwrap_err();
        assert!(err.to_string().contains("RELAY_CHECK"), "{err}");
    }

    #[test]
    fn selection() {
        assert!(sel(&[("FILTER_MODE", "relay")]));
        assert!(sel(&[("FILTER_MODE", "RELAY"), ("TARGET", "x")]));
        assert!(sel(&[("TARGET", "fonts.googleapis.com")]), "docker-whitelist's variables alone");
        assert!(sel(&[("RELAYS", "a:1")]));
        assert!(sel(&[("FILTER_MODE", " "), ("TARGET", "a")]));
        assert!(!sel(&[("FILTER_MODE", "https"), ("TARGET", "x")]), "an explicit mode wins");
        assert!(!sel(&[]));
        assert!(!sel(&[("TARGET", "")]));
    }
}
