//! Environment → [`Config`] (the filter) and [`DashboardConfig`]. Every
//! default lives in this file; every bad value is reported with the
//! variable, the value and the accepted form.
//!
//! Pure: the environment is passed in as a lookup function.

use crate::dashboard::store::Retention;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

mod syslog_url;
pub use syslog_url::{SyslogUrl, Transport};

/// Every default, in one place.
pub mod defaults {
    use std::time::Duration;
    pub const HTTP_PORT: u16 = 8080;
    pub const HTTPS_PORT: u16 = 8443;
    pub const DNS_PORT: u16 = 53;
    pub const POLICY_PATH: &str = "/app/policy.yaml";
    pub const DNS_UPSTREAM: &str = "127.0.0.11:53";
    pub const DASHBOARD_QUEUE_SIZE: usize = 1024;
    pub const DASHBOARD_START_DELAY: Duration = Duration::from_secs(5);
    /// `SYSLOG_QUEUE_SIZE`: events held for the syslog collector.
    pub const SYSLOG_QUEUE_SIZE: usize = 1024;
    pub const NFLOG_GROUP: u16 = 0;
    pub const NFLOG_BUFSIZE: u32 = 96;
    pub const NFLOG_QTHRESH: u32 = 50;
    pub const NOTIFICATION_BACKOFF: Duration = Duration::from_secs(60);
    pub const MAX_CONNECTIONS: usize = 10_000;
    pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);
    pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
    pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
    pub const DNS_TTL_MIN: Duration = Duration::from_secs(30);
    pub const DNS_TTL_MAX: Duration = Duration::from_secs(3600);
    pub const METRICS_PORT: u16 = 9090;
    pub const WATCHDOG_INTERVAL: Duration = Duration::from_secs(2);
    pub const DASHBOARD_HEARTBEAT: Duration = Duration::from_secs(30);
    pub const UNBLOCK_POLL: Duration = Duration::from_secs(30);
    pub const UNBLOCK_FILE: &str = "/data/unblocks.json";
    /// `LOG_FILE_MAX_SIZE`: rotate `LOG_FILE` past this many bytes.
    pub const LOG_FILE_MAX_SIZE: u64 = 100 * 1024 * 1024;
    // Dashboard.
    pub const DASHBOARD_PORT: u16 = 8081;
    pub const BUFFER_SIZE: usize = 5000;
    pub const READ_LIMIT: usize = 500;
    pub const SSE_RETRY_MS: u64 = 2000;
    pub const RATE_RPS: f64 = 50.0;
    pub const RATE_BURST: u32 = 100;
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FilterMode {
    /// Ports 80/443 go through the Host/SNI proxies.
    Https,
    /// Port 53 goes through the filtering resolver.
    Dns,
}

/// The filter daemon's configuration (`egret run` / `egret init`).
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub log_level: log::LevelFilter,
    /// `HOSTNAME`; `None` means "ask the kernel" (the shell fills it in).
    pub hostname: Option<String>,
    pub http_port: u16,
    pub https_port: u16,
    pub dns_port: u16,
    pub policy_path: PathBuf,
    pub allowlist_ips: Option<Vec<String>>,
    pub allowlist_domains: Option<Vec<String>>,
    /// `DENYLIST_IPS` / `DENYLIST_DOMAINS`: as the `ALLOWLIST_*` lists,
    /// any list set makes the environment the whole policy.
    pub denylist_ips: Option<Vec<String>>,
    pub denylist_domains: Option<Vec<String>>,
    /// `DEFAULT_ACTION` (`allow` or `deny`); `None` leaves it to the
    /// policy file's `default_action:` (deny when that is absent too).
    pub default_action: Option<crate::policy::DefaultAction>,
    /// `ENFORCE`: `audit` decides and logs everything as enforcement
    /// would, and blocks nothing; `None` leaves it to the policy file's
    /// `enforce:` (enforcement when that is absent too).
    pub enforce: Option<crate::policy::Mode>,
    pub filter_mode: FilterMode,
    /// The resolvers in effect: `DNS_UPSTREAMS` when set (names resolved
    /// by the shell, see `resolve::effective_upstreams`), else the fallback
    /// `127.0.0.11:53` until the shell replaces it with the nameservers of
    /// `/etc/resolv.conf`. The ruleset, the anti-spoofing resolver and the
    /// DNS server all read this list, so the shell fills it in before any
    /// of them is built.
    pub dns_upstreams: Vec<SocketAddr>,
    /// `DNS_UPSTREAMS` as written (`None`: unset, the workloads' resolvers
    /// apply). Entries may be host names, which the pure parser cannot
    /// resolve.
    pub dns_upstreams_env: Option<Vec<Upstream>>,
    /// `DNS_STRICT`: in DNS mode, only addresses that allowed answers
    /// returned (plus policy IPs) are reachable.
    pub dns_strict: bool,
    pub dns_ttl_min: Duration,
    pub dns_ttl_max: Duration,
    /// `DNS_HARDENING` (on unless `false`) and its limits: `None` when off.
    pub dns_hardening: Option<crate::dns::harden::Limits>,
    pub dashboard_host: Option<String>,
    pub dashboard_api_key: Option<String>,
    /// `DASHBOARD_UID`: the uids that may own a loopback dashboard
    /// listener the shipper sends the key to; `None`: egret's own uid.
    pub dashboard_uids: Option<Vec<u32>>,
    pub dashboard_queue_size: usize,
    pub dashboard_start_delay: Duration,
    pub log_file: Option<PathBuf>,
    /// `LEARNING_MODE`: audit mode, plus the suggested policy (what the
    /// workloads needed) kept in `LEARNING_OUTPUT`, grouped under
    /// wildcards with `LEARNING_GROUP`.
    pub learning_mode: bool,
    pub learning_output: Option<PathBuf>,
    pub learning_group: bool,
    pub nflog_group: u16,
    pub nflog_bufsize: u32,
    pub nflog_qthresh: u32,
    pub notification_host: Option<String>,
    pub notification_key: Option<String>,
    /// `NOTIFICATION_URLS`: shoutrrr-style targets, besides
    /// `NOTIFICATION_HOST`'s Gotify (both are used when both are set).
    pub notification_urls: Vec<crate::events::notify::Target>,
    pub notification_backoff: Duration,
    pub notification_ignore_domains: Vec<String>,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
    /// `MAX_LIFETIME`; zero means connections may live forever.
    pub max_lifetime: Duration,
    /// `VERIFY_DESTINATION`: an allowed name must resolve to the original
    /// destination address (anti-spoofing). On by default.
    pub verify_destination: bool,
    /// `BYPASS_MARK`: a fixed mark for egret's own sockets; `None` picks a
    /// random one at start.
    pub bypass_mark: Option<u32>,
    /// `METRICS_ADDR`: Prometheus endpoint of the filter; off when `None`.
    pub metrics_addr: Option<SocketAddr>,
    /// `DASHBOARD_CA_FILE`: PEM certificates trusted for an `https://`
    /// dashboard (and Gotify) on top of the web PKI roots.
    pub dashboard_ca_file: Option<PathBuf>,
    /// `LOG_FILE_MAX_SIZE`: bytes (`K`/`M`/`G` suffixes) after which
    /// `LOG_FILE` is rotated to `LOG_FILE.1`; zero turns rotation off.
    pub log_file_max_size: u64,
    /// `WATCHDOG_INTERVAL`: how often the installed table is read back and
    /// compared with what egret installed; zero turns the watchdog off.
    pub watchdog_interval: Duration,
    /// `DASHBOARD_HEARTBEAT`: how often the agent tells the dashboard its
    /// health, policy and counters; zero turns heartbeats off.
    pub dashboard_heartbeat: Duration,
    /// `ENABLE_REMOTE_UNBLOCK`: poll the dashboard for operators' unblocks
    /// and apply them as extra allowlist entries. Off by default.
    pub remote_unblock: bool,
    /// `UNBLOCK_POLL`: how often the dashboard is asked (30 s).
    pub unblock_poll: Duration,
    /// `UNBLOCK_FILE`: where the applied unblocks are kept across a
    /// restart: by default `unblocks.json` beside `LOG_FILE`, else
    /// `/data/unblocks.json`.
    pub unblock_file: PathBuf,
    /// `DASHBOARD_LISTEN`: also serve the dashboard inside the filter
    /// process on this address (a bare port means all addresses); off
    /// when `None`. See `dashboard::embedded_config`.
    pub dashboard_listen: Option<SocketAddr>,
    /// `DNS_IN_HTTPS_MODE`: in HTTPS mode, also run the filtering resolver
    /// (port 53 of the namespace redirected to it, questions filtered by
    /// the policy) and let the proxies' anti-spoofing accept every address
    /// it handed out. Off by default: g0efilter's HTTPS mode leaves DNS
    /// alone, and names of hosts allowed only by IP must keep resolving.
    /// DNS mode always runs the resolver, so it is ignored there.
    pub dns_in_https_mode: bool,
    /// `SELFTEST`: once the rules and listeners are up, attack them from
    /// inside the namespace (`egret selftest`); a bypass makes `/health`
    /// degraded and raises an event.
    pub selftest: bool,
    /// `HEALTH_SOCKET`: where the unix socket with `/health` and
    /// `/metrics` goes; `None` picks the first writable default
    /// (`health::socket_candidates`).
    pub health_socket: Option<PathBuf>,
    /// Values that were not usable but do not touch enforcement: each was
    /// replaced by g0efilter's default, and the shell logs these lines.
    pub warnings: Vec<String>,
    /// `SYSLOG_URL`: forward every event to a syslog collector
    /// (`udp://`, `tcp://`, `tls://`); off when `None`.
    pub syslog_url: Option<SyslogUrl>,
    /// `SYSLOG_QUEUE_SIZE`: events held for it before new ones are dropped.
    pub syslog_queue_size: usize,
    /// `SYSLOG_CA_FILE`: PEM certificates trusted for a `tls://` collector
    /// on top of the web PKI roots.
    pub syslog_ca_file: Option<PathBuf>,
    /// `GUARD_ADDRESSES`: address classes an allowed name never leads to
    /// (proxied destinations, DNS answers) unless `allowlist.ips` covers
    /// the address. See `policy::guard`.
    pub guard_addresses: crate::policy::Guard,
}

/// One `DNS_UPSTREAMS` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Upstream {
    Addr(SocketAddr),
    /// A host name, resolved at start through the system resolver (before
    /// egret's rules go in).
    Name {
        host: String,
        port: u16,
    },
}

impl fmt::Display for Upstream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Upstream::Addr(a) => write!(f, "{a}"),
            Upstream::Name { host, port } => write!(f, "{host}:{port}"),
        }
    }
}

/// The dashboard's configuration (`egret dashboard`).
#[derive(Debug, Clone, PartialEq)]
pub struct DashboardConfig {
    pub log_level: log::LevelFilter,
    pub listen: SocketAddr,
    pub api_key: String,
    pub buffer_size: usize,
    pub read_limit: usize,
    pub sse_retry_ms: u64,
    /// Zero means no write timeout.
    pub write_timeout: Duration,
    pub rate_rps: f64,
    pub rate_burst: u32,
    /// `TRUSTED_PROXIES`: reverse proxies whose `X-Forwarded-For` /
    /// `X-Real-IP` name the real client (for the rate limit).
    pub trusted_proxies: Vec<crate::policy::Cidr>,
    /// `DB_PATH`: the SQLite file; `None` keeps events in memory (no
    /// `DB_PATH`, or `EPHEMERAL=true`).
    pub db_path: Option<std::path::PathBuf>,
    /// `LOG_RETENTION`; in memory the default is `BUFFER_SIZE` entries.
    pub retention: Retention,
    /// `AUTH_MODE`: how people sign in (`none`: with the API key, which
    /// the UI trades for a session).
    pub auth_mode: crate::dashboard::auth::Mode,
    /// `PUBLIC_READS` (`AUTH_MODE=none` only): events, stream and UI for
    /// anyone who reaches the dashboard, without a key (g0efilter's way).
    pub public_reads: bool,
    /// `DASHBOARD_USERS` (session mode).
    pub users: Vec<crate::dashboard::auth::User>,
    /// `FORWARD_AUTH_HEADER` (forward mode), `Remote-User` by default.
    pub forward_header: String,
    /// `SESSION_TTL`: how long a login lasts.
    pub session_ttl: Duration,
    /// Unusable values replaced by g0efilter's default, for the log.
    pub warnings: Vec<String>,
}

/// One bad variable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub var: &'static str,
    pub value: String,
    /// What would have been accepted, or what is wrong.
    pub expected: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.value.is_empty() {
            write!(f, "{}: {}", self.var, self.expected)
        } else {
            write!(f, "{}={:?}: expected {}", self.var, self.value, self.expected)
        }
    }
}

/// Every bad variable of one parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "invalid configuration ({n} problem{})", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

/// Reads variables through `lookup` and collects every error.
/// The environment being parsed and the problems found so far (relay
/// mode's configuration uses it too).
pub(crate) struct Env<'a> {
    pub(crate) lookup: &'a dyn Fn(&str) -> Option<String>,
    pub(crate) errors: Vec<ConfigError>,
}

impl Env<'_> {
    /// The trimmed value; empty counts as unset.
    pub(crate) fn raw(&self, var: &str) -> Option<String> {
        (self.lookup)(var).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    pub(crate) fn get<T>(
        &mut self,
        var: &'static str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        match self.raw(var) {
            None => default,
            Some(v) => match parse(&v) {
                Ok(x) => x,
                Err(expected) => {
                    self.errors.push(ConfigError { var, value: v, expected });
                    default
                }
            },
        }
    }

    fn opt<T>(&mut self, var: &'static str, parse: impl Fn(&str) -> Result<T, String>) -> Option<T> {
        let v = self.raw(var)?;
        match parse(&v) {
            Ok(x) => Some(x),
            Err(expected) => {
                self.errors.push(ConfigError { var, value: v, expected });
                None
            }
        }
    }

    fn string(&self, var: &str) -> Option<String> {
        self.raw(var)
    }

    /// For a knob that does not touch enforcement (sizes, log level,
    /// delays): a bad value is a warning and `default` (g0efilter's),
    /// never a refusal to start.
    fn soft<T: fmt::Display>(
        &mut self,
        warnings: &mut Vec<String>,
        var: &'static str,
        default: T,
        parse: impl Fn(&str) -> Result<T, String>,
    ) -> T {
        match self.raw(var) {
            None => default,
            Some(v) => match parse(&v) {
                Ok(x) => x,
                Err(expected) => {
                    warnings.push(format!("{var}={v:?} is not {expected}; using the default {default}"));
                    default
                }
            },
        }
    }

    pub(crate) fn error(&mut self, var: &'static str, value: impl Into<String>, expected: impl Into<String>) {
        self.errors.push(ConfigError { var, value: value.into(), expected: expected.into() });
    }
}

pub fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(p) if p > 0 => Ok(p),
        _ => Err("a port number 1..65535".into()),
    }
}

/// `LOG_RETENTION`: parses `30d`, `72h`, `500000`, `7d,1000000` (an age with a unit,
/// a bare number is a count of entries; comma- or space-separated).
pub fn parse_retention(s: &str) -> Result<Retention, String> {
    const FORM: &str = "an age (30d, 72h) and/or an entry count (1000000), comma-separated";
    let mut r = Retention { max_age: None, max_rows: None };
    let items: Vec<&str> = s.split([',', ' ']).map(str::trim).filter(|x| !x.is_empty()).collect();
    if items.is_empty() {
        return Err(FORM.into());
    }
    for item in items {
        if let Ok(n) = item.parse::<u64>() {
            if n == 0 || r.max_rows.is_some() {
                return Err(FORM.into());
            }
            r.max_rows = Some(n);
            continue;
        }
        let age = match item.strip_suffix('d').and_then(|d| d.parse::<u64>().ok()) {
            Some(days) => std::time::Duration::from_secs(days.saturating_mul(86_400)),
            None => parse_duration(item).map_err(|_| FORM.to_owned())?,
        };
        if age.is_zero() || r.max_age.is_some() {
            return Err(FORM.into());
        }
        r.max_age = Some(age);
    }
    Ok(r)
}

/// A duration as Go's `time.ParseDuration` writes it (`1m30s`, `1.5s`,
/// `500ms`, `2h45m`, `300us`, `10ns`), or a bare number of seconds
/// (g0efilter's `NOTIFICATION_BACKOFF_SECONDS` is one). Negative values
/// are refused: no duration of egret's means anything below zero.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    const FORM: &str = "a duration such as 500ms, 5s, 1m30s or 2h (a bare number is seconds)";
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    let body = s.strip_prefix('+').unwrap_or(s);
    if body.starts_with('-') {
        return Err(format!("{FORM}, not negative"));
    }
    if body.is_empty() {
        return Err(FORM.into());
    }
    let mut total: u128 = 0;
    let mut rest = body;
    while !rest.is_empty() {
        let num_len = rest.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(rest.len());
        let (num, after) = rest.split_at(num_len);
        let unit_len = after.find(|c: char| c.is_ascii_digit() || c == '.').unwrap_or(after.len());
        let (unit, next) = after.split_at(unit_len);
        let nanos_per: u128 = match unit {
            "ns" => 1,
            "us" | "\u{b5}s" | "\u{3bc}s" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60_000_000_000,
            "h" => 3_600_000_000_000,
            _ => return Err(FORM.into()),
        };
        let (int, frac) = num.split_once('.').unwrap_or((num, ""));
        if int.is_empty() && frac.is_empty() {
            return Err(FORM.into());
        }
        let whole: u128 = if int.is_empty() { 0 } else { int.parse().map_err(|_| FORM.to_owned())? };
        let mut value = whole.checked_mul(nanos_per).ok_or(FORM)?;
        // The fraction, digit by digit (Go keeps nanosecond precision).
        let mut scale = nanos_per;
        for d in frac.chars() {
            let d = d.to_digit(10).ok_or(FORM)?;
            scale /= 10;
            value += u128::from(d) * scale;
        }
        total = total.checked_add(value).ok_or(FORM)?;
        rest = next;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| FORM.to_owned())?;
    Ok(Duration::new(secs, (total % 1_000_000_000) as u32))
}

/// A byte count: `1048576`, `512K`, `100M`, `1G` (powers of 1024).
pub fn parse_size(s: &str) -> Result<u64, String> {
    const FORM: &str = "a size in bytes, optionally with K, M or G (e.g. 100M); 0 turns it off";
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| FORM.to_owned())?;
    let mult: u64 = match unit.trim().to_ascii_uppercase().as_str() {
        "" | "B" => 1,
        "K" | "KB" | "KIB" => 1 << 10,
        "M" | "MB" | "MIB" => 1 << 20,
        "G" | "GB" | "GIB" => 1 << 30,
        _ => return Err(FORM.into()),
    };
    n.checked_mul(mult).ok_or_else(|| FORM.to_owned())
}

/// A duration shown in warnings the way it would be written.
#[derive(Debug, Clone, Copy)]
struct Secs(Duration);

impl fmt::Display for Secs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

pub fn parse_bool(s: &str) -> Result<bool, String> {
    match s.to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" => Ok(false),
        _ => Err("a boolean: true/false, 1/0, yes/no, on/off".into()),
    }
}

/// A comma-separated list; blanks between commas are dropped.
pub fn parse_list(s: &str) -> Vec<String> {
    s.split(',').map(str::trim).filter(|x| !x.is_empty()).map(str::to_owned).collect()
}

fn parse_count(min: usize, max: usize) -> impl Fn(&str) -> Result<usize, String> {
    move |s| match s.parse::<usize>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("a whole number {min}..{max}")),
    }
}

fn parse_u32_range(min: u32, max: u32) -> impl Fn(&str) -> Result<u32, String> {
    move |s| match s.parse::<u32>() {
        Ok(n) if (min..=max).contains(&n) => Ok(n),
        _ => Err(format!("a whole number {min}..{max}")),
    }
}

pub fn parse_level(s: &str) -> Result<log::LevelFilter, String> {
    match s.to_ascii_uppercase().as_str() {
        "TRACE" => Ok(log::LevelFilter::Trace),
        "DEBUG" => Ok(log::LevelFilter::Debug),
        "INFO" => Ok(log::LevelFilter::Info),
        "WARN" | "WARNING" => Ok(log::LevelFilter::Warn),
        "ERROR" => Ok(log::LevelFilter::Error),
        "OFF" => Ok(log::LevelFilter::Off),
        _ => Err("one of TRACE, DEBUG, INFO, WARN, ERROR".into()),
    }
}

/// One `DNS_UPSTREAMS` entry: `IP:port`, `[v6]:port`, a bare IP, or a
/// host name with or without `:port` (port 53 when left out).
pub fn parse_upstream(s: &str) -> Result<Upstream, String> {
    if let Ok(sa) = parse_socket_addr(s, 53) {
        return Ok(Upstream::Addr(sa));
    }
    const FORM: &str = "IP:port (e.g. 10.0.0.2:53 or [fd00::2]:53) or host[:port]";
    let (host, port) = match s.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => (h, parse_port(p).map_err(|_| format!("{FORM}: bad port"))?),
        Some(_) => return Err(FORM.into()),
        None => (s, 53),
    };
    match crate::policy::normalize(host) {
        Ok(n) => Ok(Upstream::Name { host: n, port }),
        Err(e) => Err(format!("{FORM}: {e}")),
    }
}

/// `host:port` with an IP host (`[v6]:port` for IPv6); the port defaults
/// to `default_port` when left out.
pub fn parse_socket_addr(s: &str, default_port: u16) -> Result<SocketAddr, String> {
    if let Ok(sa) = s.parse::<SocketAddr>() {
        if sa.port() == 0 {
            return Err("a port 1..65535".into());
        }
        return Ok(sa);
    }
    let bare = s.strip_prefix('[').and_then(|x| x.strip_suffix(']')).unwrap_or(s);
    bare.parse::<IpAddr>()
        .map(|ip| SocketAddr::new(ip, default_port))
        .map_err(|_| "IP:port (e.g. 10.0.0.2:53 or [fd00::2]:53)".into())
}

/// Dashboard `PORT`: `:8081`, `8081` (all addresses, IPv4 and IPv6, as
/// Go's `:8081` listens) or `host:port`. "All addresses" is `[::]`; the
/// dashboard binds it dual-stack and falls back to `0.0.0.0` where the
/// kernel has no IPv6.
pub fn parse_listen(s: &str) -> Result<SocketAddr, String> {
    const FORM: &str = "a port (8081), :port, or IP:port";
    let port_only = s.strip_prefix(':').unwrap_or(s);
    if let Ok(p) = parse_port(port_only) {
        return Ok(SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), p));
    }
    if s.starts_with(':') {
        return Err(FORM.into());
    }
    match s.parse::<SocketAddr>() {
        Ok(sa) if sa.port() != 0 => Ok(sa),
        _ => Err(FORM.into()),
    }
}

/// `METRICS_ADDR`: a port alone means loopback.
fn parse_metrics_addr(s: &str) -> Result<SocketAddr, String> {
    let port_only = s.strip_prefix(':').unwrap_or(s);
    if let Ok(p) = parse_port(port_only) {
        return Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), p));
    }
    match s {
        "1" | "true" | "on" | "yes" => {
            Ok(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), defaults::METRICS_PORT))
        }
        _ => s.parse::<SocketAddr>().map_err(|_| "a port (9090), :port, IP:port, or true".into()),
    }
}

fn parse_mark(s: &str) -> Result<u32, String> {
    let n = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse::<u32>(),
    };
    match n {
        Ok(m) if m != 0 => Ok(m),
        _ => Err("a non-zero 32-bit mark, decimal or 0x-hex (leave unset for a random mark)".into()),
    }
}

fn parse_http_url(s: &str) -> Result<String, String> {
    let with_scheme = if s.contains("://") { s.to_owned() } else { format!("http://{s}") };
    let rest = with_scheme
        .strip_prefix("http://")
        .or_else(|| with_scheme.strip_prefix("https://"))
        .ok_or("an http:// or https:// URL, or host[:port] (http is assumed)")?;
    if rest.is_empty() || rest.starts_with('/') {
        return Err("a URL with a host".into());
    }
    Ok(with_scheme.trim_end_matches('/').to_owned())
}

/// `DASHBOARD_UID`: one uid or a comma-separated list of them.
pub fn parse_uids(s: &str) -> Result<Vec<u32>, String> {
    let expected = || "uids (numbers) separated by commas".to_owned();
    let uids = s
        .split(',')
        .map(|u| u.trim().parse::<u32>().map_err(|_| expected()))
        .collect::<Result<Vec<u32>, String>>()?;
    if uids.is_empty() {
        return Err(expected());
    }
    Ok(uids)
}

impl Config {
    /// Parses the filter's variables.
    pub fn from_env(lookup: &dyn Fn(&str) -> Option<String>) -> Result<Config, ConfigErrors> {
        use defaults as d;
        let mut e = Env { lookup, errors: Vec::new() };
        let mut warnings = Vec::new();
        let log_level = e.soft(&mut warnings, "LOG_LEVEL", log::LevelFilter::Info, parse_level);
        let http_port = e.get("HTTP_PORT", d::HTTP_PORT, parse_port);
        let https_port = e.get("HTTPS_PORT", d::HTTPS_PORT, parse_port);
        let dns_port = e.get("DNS_PORT", d::DNS_PORT, parse_port);
        // g0efilter's names: `sni` is the old name of `https`, and
        // `dns-strict` is DNS mode with strict egress.
        let (filter_mode, strict_by_mode) =
            e.get("FILTER_MODE", (FilterMode::Https, false), |s| match s.to_ascii_lowercase().as_str() {
                "https" | "sni" => Ok((FilterMode::Https, false)),
                "dns" => Ok((FilterMode::Dns, false)),
                "dns-strict" | "dns_strict" => Ok((FilterMode::Dns, true)),
                _ => Err("https (or sni), dns or dns-strict".into()),
            });
        let dns_upstreams_env = match e.string("DNS_UPSTREAMS") {
            None => None,
            Some(v) => {
                let mut out = Vec::new();
                for item in parse_list(&v) {
                    match parse_upstream(&item) {
                        Ok(u) => out.push(u),
                        Err(why) => e.error("DNS_UPSTREAMS", item, why),
                    }
                }
                if out.is_empty() && e.errors.iter().all(|x| x.var != "DNS_UPSTREAMS") {
                    e.error("DNS_UPSTREAMS", v, "at least one IP:port or host:port");
                }
                Some(out)
            }
        };
        // The addresses known without a lookup; the shell resolves names
        // and reads /etc/resolv.conf (`resolve::effective_upstreams`).
        let dns_upstreams = match &dns_upstreams_env {
            None => vec![parse_socket_addr(d::DNS_UPSTREAM, 53).expect("default upstream is valid")],
            Some(list) => list
                .iter()
                .filter_map(|u| match u {
                    Upstream::Addr(a) => Some(*a),
                    Upstream::Name { .. } => None,
                })
                .collect(),
        };
        let dns_ttl_min = e.get("DNS_TTL_MIN", d::DNS_TTL_MIN, parse_duration);
        let dns_ttl_max = e.get("DNS_TTL_MAX", d::DNS_TTL_MAX, parse_duration);
        if dns_ttl_min > dns_ttl_max {
            e.error("DNS_TTL_MIN", format!("{}s", dns_ttl_min.as_secs()), "at most DNS_TTL_MAX");
        }
        // DNS hardening: on unless turned off; a bad limit is a warning and
        // its default (never weaker than the default).
        let dns_hardening = if e.get("DNS_HARDENING", true, parse_bool) {
            use crate::dns::harden::{defaults as h, Limits};
            let mut soft_count = |var, default: usize, min: usize, max: usize| {
                e.soft(&mut warnings, var, default, parse_count(min, max))
            };
            let max_name_len = soft_count("DNS_MAX_NAME_LEN", h::MAX_NAME_LEN, 1, 253);
            let max_label_len = soft_count("DNS_MAX_LABEL_LEN", h::MAX_LABEL_LEN, 1, 63);
            let max_txt_bytes = soft_count("DNS_MAX_TXT_BYTES", h::MAX_TXT_BYTES, 0, 65535);
            let rate_qps = e.soft(&mut warnings, "DNS_RATE_QPS", h::RATE_QPS, parse_u32_range(1, 1_000_000));
            let rate_burst =
                e.soft(&mut warnings, "DNS_RATE_BURST", h::RATE_BURST, parse_u32_range(0, 1_000_000));
            let zone_budget = e.soft(
                &mut warnings,
                "DNS_ZONE_BUDGET",
                h::ZONE_BUDGET,
                parse_u32_range(1, h::MAX_ZONE_BUDGET),
            );
            Some(Limits {
                max_name_len,
                max_label_len,
                max_txt_bytes,
                rate_qps,
                rate_burst,
                zone_budget,
                window: h::WINDOW,
            })
        } else {
            None
        };
        // Telemetry knobs: g0efilter falls back to its default on a bad or
        // non-positive value, and so does egret (with a warning).
        let dashboard_queue_size =
            e.soft(&mut warnings, "DASHBOARD_QUEUE_SIZE", d::DASHBOARD_QUEUE_SIZE, parse_count(1, 1 << 20));
        let dashboard_start_delay = e
            .soft(&mut warnings, "DASHBOARD_START_DELAY", Secs(d::DASHBOARD_START_DELAY), |s| {
                parse_duration(s).map(Secs)
            })
            .0;
        let nflog_bufsize =
            e.soft(&mut warnings, "NFLOG_BUFSIZE", d::NFLOG_BUFSIZE, parse_u32_range(1, 65535));
        let nflog_qthresh =
            e.soft(&mut warnings, "NFLOG_QTHRESH", d::NFLOG_QTHRESH, parse_u32_range(1, 65535));
        let notification_backoff = e
            .soft(&mut warnings, "NOTIFICATION_BACKOFF_SECONDS", Secs(d::NOTIFICATION_BACKOFF), |s| {
                match parse_duration(s) {
                    Ok(d) if !d.is_zero() => Ok(Secs(d)),
                    _ => Err("a number of seconds above 0".to_owned()),
                }
            })
            .0;
        // egret's own variable (no g0efilter configuration has it): strict.
        let log_file_max_size = e.get("LOG_FILE_MAX_SIZE", d::LOG_FILE_MAX_SIZE, parse_size);
        // Alerts need both; g0efilter turns them off when one is missing.
        let mut notification_host = e.opt("NOTIFICATION_HOST", parse_http_url);
        let mut notification_key = e.string("NOTIFICATION_KEY");
        match (&notification_host, &notification_key) {
            (Some(h), None) => {
                warnings.push(format!(
                    "NOTIFICATION_HOST={h} is set but NOTIFICATION_KEY is not: Gotify alerts are off"
                ));
                notification_host = None;
            }
            (None, Some(_)) if e.raw("NOTIFICATION_HOST").is_none() => {
                warnings.push(
                    "NOTIFICATION_KEY is set but NOTIFICATION_HOST is not: Gotify alerts are off".into(),
                );
                notification_key = None;
            }
            _ => {}
        }
        // Alerts, not enforcement, but a URL that cannot work is a
        // start-up error naming every bad entry (never its secrets).
        let notification_urls = match e.raw("NOTIFICATION_URLS") {
            None => Vec::new(),
            Some(v) => match crate::events::notify::parse_urls(&v) {
                Ok(list) => list,
                Err(bad) => {
                    for b in bad {
                        e.error("NOTIFICATION_URLS", "", b.to_string());
                    }
                    Vec::new()
                }
            },
        };
        let cfg = Config {
            log_level,
            hostname: e.string("HOSTNAME"),
            http_port,
            https_port,
            dns_port,
            policy_path: PathBuf::from(e.string("POLICY_PATH").unwrap_or_else(|| d::POLICY_PATH.into())),
            allowlist_ips: e.string("ALLOWLIST_IPS").map(|v| parse_list(&v)),
            allowlist_domains: e.string("ALLOWLIST_DOMAINS").map(|v| parse_list(&v)),
            denylist_ips: e.string("DENYLIST_IPS").map(|v| parse_list(&v)),
            denylist_domains: e.string("DENYLIST_DOMAINS").map(|v| parse_list(&v)),
            // Which way the policy leans: an unknown value is an error.
            default_action: e.opt("DEFAULT_ACTION", crate::policy::DefaultAction::parse),
            // Enforcement: an unknown value is an error, never a guess.
            enforce: e.opt("ENFORCE", crate::policy::Mode::parse),
            filter_mode,
            dns_upstreams,
            dns_upstreams_env,
            dns_strict: e.get("DNS_STRICT", false, parse_bool) || strict_by_mode,
            dns_ttl_min,
            dns_ttl_max,
            dns_hardening,
            dashboard_host: e.opt("DASHBOARD_HOST", parse_http_url),
            dashboard_api_key: e.string("DASHBOARD_API_KEY"),
            dashboard_uids: e.opt("DASHBOARD_UID", parse_uids),
            dashboard_queue_size,
            dashboard_start_delay,
            // g0efilter's later name for the decision log, when LOG_FILE
            // (the contract's) is not set.
            log_file: e.string("LOG_FILE").or_else(|| e.string("DECISION_LOG_FILE")).map(PathBuf::from),
            learning_mode: e.get("LEARNING_MODE", false, parse_bool),
            learning_output: e.string("LEARNING_OUTPUT").map(PathBuf::from),
            learning_group: e.get("LEARNING_GROUP", false, parse_bool),
            nflog_group: e.get("NFLOG_GROUP", d::NFLOG_GROUP, |s| {
                s.parse::<u16>().map_err(|_| "a group number 0..65535".to_owned())
            }),
            nflog_bufsize,
            nflog_qthresh,
            notification_host,
            notification_key,
            notification_urls,
            notification_backoff,
            notification_ignore_domains: e
                .string("NOTIFICATION_IGNORE_DOMAINS")
                .map(|v| parse_list(&v))
                .unwrap_or_default(),
            max_connections: e.get("MAX_CONNECTIONS", d::MAX_CONNECTIONS, parse_count(1, 1_000_000)),
            header_timeout: e.get("HEADER_TIMEOUT", d::HEADER_TIMEOUT, parse_duration),
            connect_timeout: e.get("CONNECT_TIMEOUT", d::CONNECT_TIMEOUT, parse_duration),
            idle_timeout: e.get("IDLE_TIMEOUT", d::IDLE_TIMEOUT, parse_duration),
            // g0efilter's later CONN_MAX_LIFETIME_MS (milliseconds, 0 off)
            // is the same limit; MAX_LIFETIME wins when both are set.
            max_lifetime: match e.opt("MAX_LIFETIME", parse_duration) {
                Some(d) => d,
                None => e.get("CONN_MAX_LIFETIME_MS", Duration::ZERO, |s| {
                    s.parse::<u64>()
                        .map(Duration::from_millis)
                        .map_err(|_| "a whole number of milliseconds (0: no limit)".to_owned())
                }),
            },
            verify_destination: e.get("VERIFY_DESTINATION", true, parse_bool),
            bypass_mark: e.opt("BYPASS_MARK", parse_mark),
            metrics_addr: e.opt("METRICS_ADDR", parse_metrics_addr),
            dashboard_ca_file: e.string("DASHBOARD_CA_FILE").map(PathBuf::from),
            log_file_max_size,
            watchdog_interval: e.get("WATCHDOG_INTERVAL", d::WATCHDOG_INTERVAL, parse_duration),
            dashboard_heartbeat: e.get("DASHBOARD_HEARTBEAT", d::DASHBOARD_HEARTBEAT, parse_duration),
            remote_unblock: e.get("ENABLE_REMOTE_UNBLOCK", false, parse_bool),
            unblock_poll: e.get("UNBLOCK_POLL", d::UNBLOCK_POLL, |s| match parse_duration(s) {
                Ok(d) if !d.is_zero() => Ok(d),
                _ => Err("a duration above 0, such as 30s".to_owned()),
            }),
            unblock_file: e.string("UNBLOCK_FILE").map(PathBuf::from).unwrap_or_else(|| {
                let beside =
                    e.string("LOG_FILE").or_else(|| e.string("DECISION_LOG_FILE")).map(PathBuf::from);
                beside
                    .and_then(|l| l.parent().map(|d| d.join("unblocks.json")))
                    .filter(|p| p.parent().is_some_and(|d| !d.as_os_str().is_empty()))
                    .unwrap_or_else(|| PathBuf::from(d::UNBLOCK_FILE))
            }),
            dashboard_listen: e.opt("DASHBOARD_LISTEN", parse_listen),
            dns_in_https_mode: e.get("DNS_IN_HTTPS_MODE", false, parse_bool),
            health_socket: e.string("HEALTH_SOCKET").map(PathBuf::from),
            selftest: e.get("SELFTEST", false, parse_bool),
            warnings,
            syslog_url: e.opt("SYSLOG_URL", syslog_url::parse_url),
            syslog_queue_size: e.get("SYSLOG_QUEUE_SIZE", d::SYSLOG_QUEUE_SIZE, parse_count(1, 1 << 20)),
            syslog_ca_file: e.string("SYSLOG_CA_FILE").map(PathBuf::from),
            // Enforcement: an unknown class is a start-up error, never a
            // quietly weaker guard.
            guard_addresses: e.get("GUARD_ADDRESSES", crate::policy::Guard::default(), |s| {
                crate::policy::Guard::parse(s)
                    .map_err(|why| format!("{} ({why})", crate::policy::Guard::accepted()))
            }),
        };
        // Cross-field checks.
        let mut ports = vec![("HTTP_PORT", cfg.http_port), ("HTTPS_PORT", cfg.https_port)];
        if cfg.runs_dns_server() || cfg.dns_strict {
            ports.push(("DNS_PORT", cfg.dns_port));
        }
        for (i, (a, pa)) in ports.iter().enumerate() {
            for (b, pb) in &ports[i + 1..] {
                if pa == pb {
                    e.error(b, pb.to_string(), format!("a port different from {a} ({pa})"));
                }
            }
        }
        if cfg.learning_mode && cfg.learning_output.is_none() {
            e.error(
                "LEARNING_OUTPUT",
                "",
                "a writable path for the suggested policy.yaml (LEARNING_MODE=true)",
            );
        }
        if cfg.dns_strict && cfg.filter_mode != FilterMode::Dns {
            e.error("DNS_STRICT", "true", "FILTER_MODE=dns (strict egress applies to DNS mode only)");
        }
        for (var, d) in [
            ("HEADER_TIMEOUT", cfg.header_timeout),
            ("CONNECT_TIMEOUT", cfg.connect_timeout),
            ("IDLE_TIMEOUT", cfg.idle_timeout),
        ] {
            if d.is_zero() {
                e.error(var, "0", "a duration above zero");
            }
        }
        // Alert suppression, not enforcement: a pattern that cannot match
        // anything is dropped with a warning (g0efilter's matcher simply
        // never matches it).
        let mut cfg = cfg;
        if cfg.learning_mode && cfg.enforce == Some(crate::policy::Mode::Enforce) {
            cfg.warnings.push("LEARNING_MODE=true implies audit: ENFORCE is ignored".to_owned());
        }
        let (mut kept, mut dropped) = (Vec::new(), Vec::new());
        for d in std::mem::take(&mut cfg.notification_ignore_domains) {
            match crate::policy::Pattern::parse(&d) {
                Ok(_) => kept.push(d),
                Err(why) => dropped.push(format!("{d:?} ({why})")),
            }
        }
        cfg.notification_ignore_domains = kept;
        if !dropped.is_empty() {
            cfg.warnings.push(format!(
                "NOTIFICATION_IGNORE_DOMAINS: not a domain pattern, ignored: {}",
                dropped.join(", ")
            ));
        }
        if e.errors.is_empty() {
            Ok(cfg)
        } else {
            Err(ConfigErrors(e.errors))
        }
    }

    /// Whether egret's filtering resolver runs: always in DNS mode, in
    /// HTTPS mode with `DNS_IN_HTTPS_MODE`.
    pub fn runs_dns_server(&self) -> bool {
        self.filter_mode == FilterMode::Dns || self.dns_in_https_mode
    }

    /// The env lists that replace the file's lists.
    pub fn env_lists(&self) -> crate::policy::EnvLists {
        crate::policy::EnvLists {
            ips: self.allowlist_ips.clone(),
            domains: self.allowlist_domains.clone(),
            deny_ips: self.denylist_ips.clone(),
            deny_domains: self.denylist_domains.clone(),
            default: self.default_action,
            // Learning is audit mode that also writes what it saw.
            mode: if self.learning_mode { Some(crate::policy::Mode::Audit) } else { self.enforce },
            overlay: Vec::new(),
        }
    }
}

impl DashboardConfig {
    pub fn from_env(lookup: &dyn Fn(&str) -> Option<String>) -> Result<DashboardConfig, ConfigErrors> {
        use defaults as d;
        let mut e = Env { lookup, errors: Vec::new() };
        let api_key = e.string("API_KEY").unwrap_or_default();
        if api_key.is_empty() {
            e.error("API_KEY", "", "is required: the key clients send in X-Api-Key or Authorization: Bearer");
        }
        // Everything but the key, the address and the trusted proxies is a
        // knob: g0efilter uses its default for a bad value, egret too, with
        // a warning.
        let mut warnings = Vec::new();
        let log_level = e.soft(&mut warnings, "LOG_LEVEL", log::LevelFilter::Info, parse_level);
        let listen = e.get(
            "PORT",
            SocketAddr::new(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED), d::DASHBOARD_PORT),
            parse_listen,
        );
        let buffer_size = e.soft(&mut warnings, "BUFFER_SIZE", d::BUFFER_SIZE, parse_count(1, 10_000_000));
        let read_limit = e.soft(&mut warnings, "READ_LIMIT", d::READ_LIMIT, parse_count(1, 1_000_000));
        let sse_retry_ms =
            e.soft(&mut warnings, "SSE_RETRY_MS", d::SSE_RETRY_MS, |s| match s.parse::<u64>() {
                Ok(n) if n > 0 => Ok(n),
                _ => Err("milliseconds as a whole number above 0".to_owned()),
            });
        let write_timeout =
            e.soft(&mut warnings, "WRITE_TIMEOUT", Secs(Duration::ZERO), |s| parse_duration(s).map(Secs)).0;
        let rate_rps = e.soft(&mut warnings, "RATE_RPS", d::RATE_RPS, |s| match s.parse::<f64>() {
            Ok(x) if x.is_finite() && x > 0.0 => Ok(x),
            _ => Err("a number of requests per second above 0".to_owned()),
        });
        // g0efilter reads the burst as a float.
        let rate_burst = e.soft(&mut warnings, "RATE_BURST", d::RATE_BURST, |s| match s.parse::<f64>() {
            Ok(x) if x.is_finite() && (1.0..=1_000_000.0).contains(&x) => Ok(x.round() as u32),
            _ => Err("a whole number 1..1000000".to_owned()),
        });
        let mut trusted_proxies = Vec::new();
        for item in e.string("TRUSTED_PROXIES").map(|v| parse_list(&v)).unwrap_or_default() {
            match crate::policy::Cidr::parse(&item) {
                Ok((c, _)) => trusted_proxies.push(c),
                Err(why) => e.error("TRUSTED_PROXIES", item, format!("an IP or CIDR ({why})")),
            }
        }
        let ephemeral = e.get("EPHEMERAL", false, parse_bool);
        let db_path = e.string("DB_PATH").filter(|_| !ephemeral).map(std::path::PathBuf::from);
        let retention = e.opt("LOG_RETENTION", parse_retention).unwrap_or(if db_path.is_some() {
            Retention::PERSISTENT
        } else {
            Retention { max_age: None, max_rows: Some(buffer_size as u64) }
        });
        let auth_mode =
            e.get("AUTH_MODE", crate::dashboard::auth::Mode::None, crate::dashboard::auth::Mode::parse);
        let users = match e.string("DASHBOARD_USERS") {
            Some(v) => match crate::dashboard::auth::parse_users(&v) {
                Ok(u) => u,
                Err(why) => {
                    e.error("DASHBOARD_USERS", "<hidden>", why);
                    Vec::new()
                }
            },
            None => Vec::new(),
        };
        if auth_mode == crate::dashboard::auth::Mode::Session
            && users.is_empty()
            && e.string("DASHBOARD_USERS").is_none()
        {
            e.error(
                "DASHBOARD_USERS",
                "",
                "is required with AUTH_MODE=session: name:hash entries from `egret dashboard hash-password`",
            );
        }
        if auth_mode == crate::dashboard::auth::Mode::Forward && trusted_proxies.is_empty() {
            e.error(
                "TRUSTED_PROXIES",
                "",
                "is required with AUTH_MODE=forward: the proxy addresses whose user header is believed",
            );
        }
        let public_reads = e.get("PUBLIC_READS", false, parse_bool);
        if public_reads && auth_mode != crate::dashboard::auth::Mode::None {
            e.error(
                "PUBLIC_READS",
                "true",
                format!("false with AUTH_MODE={auth_mode} (reads need a login there)"),
            );
        }
        let forward_header = e.string("FORWARD_AUTH_HEADER").unwrap_or_else(|| "Remote-User".to_owned());
        let session_ttl = e.get("SESSION_TTL", Duration::from_secs(12 * 3600), |s| match parse_duration(s) {
            Ok(d) if !d.is_zero() => Ok(d),
            _ => Err("a duration above zero such as 12h".to_owned()),
        });
        let cfg = DashboardConfig {
            log_level,
            listen,
            api_key,
            buffer_size,
            read_limit,
            sse_retry_ms,
            write_timeout,
            rate_rps,
            rate_burst,
            trusted_proxies,
            db_path,
            retention,
            auth_mode,
            public_reads,
            users,
            forward_header,
            session_ttl,
            warnings,
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
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> =
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| map.get(k).cloned()
    }

    fn cfg(pairs: &[(&str, &str)]) -> Result<Config, ConfigErrors> {
        Config::from_env(&env(pairs))
    }

    fn err_strings(pairs: &[(&str, &str)]) -> Vec<String> {
        cfg(pairs).unwrap_err().0.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = cfg(&[]).unwrap();
        assert_eq!((c.http_port, c.https_port, c.dns_port), (8080, 8443, 53));
        assert_eq!(c.policy_path, PathBuf::from("/app/policy.yaml"));
        assert_eq!(c.filter_mode, FilterMode::Https);
        assert_eq!(c.dns_upstreams, ["127.0.0.11:53".parse().unwrap()]);
        assert_eq!(c.dashboard_queue_size, 1024);
        assert_eq!(c.dashboard_start_delay, Duration::from_secs(5));
        assert_eq!((c.nflog_bufsize, c.nflog_qthresh), (96, 50));
        assert_eq!(c.notification_backoff, Duration::from_secs(60));
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert_eq!(c.max_connections, 10_000);
        assert!(c.verify_destination && !c.dns_strict);
        assert_eq!((c.bypass_mark, c.metrics_addr, c.log_file.clone()), (None, None, None));
        assert_eq!(c.dashboard_listen, None);
        assert_eq!((c.allowlist_ips.clone(), c.allowlist_domains.clone()), (None, None));
    }

    /// `DEFAULT_ACTION`, `DENYLIST_IPS`, `DENYLIST_DOMAINS` (g0efilter's
    /// names): comma lists as the `ALLOWLIST_*` ones, handed to the policy
    /// with them; an unknown default is a start-up error naming the
    /// variable.
    #[test]
    fn default_action_and_denylist_variables() {
        let c = cfg(&[]).unwrap();
        assert_eq!(
            (c.default_action, c.denylist_ips.clone(), c.denylist_domains.clone()),
            (None, None, None)
        );
        let c = cfg(&[
            ("DEFAULT_ACTION", "Allow"),
            ("DENYLIST_IPS", "203.0.113.0/24, ,tcp/198.51.100.5:25"),
            ("DENYLIST_DOMAINS", "*.example.com,evil.test"),
        ])
        .unwrap();
        assert_eq!(c.default_action, Some(crate::policy::DefaultAction::Allow));
        assert_eq!(c.denylist_ips, Some(vec!["203.0.113.0/24".into(), "tcp/198.51.100.5:25".into()]));
        let env = c.env_lists();
        assert_eq!(env.deny_domains, Some(vec!["*.example.com".into(), "evil.test".into()]));
        assert_eq!(env.default, Some(crate::policy::DefaultAction::Allow));
        let p = crate::policy::compile_env(&env).unwrap();
        assert!(!p.allows_name("a.example.com") && p.allows_name("github.com"));
        assert_eq!(
            cfg(&[("DEFAULT_ACTION", "deny")]).unwrap().default_action,
            Some(crate::policy::DefaultAction::Deny)
        );
        assert_eq!(cfg(&[("DENYLIST_DOMAINS", "")]).unwrap().denylist_domains, None, "empty counts as unset");
        let e = err_strings(&[("DEFAULT_ACTION", "permit")]);
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(e[0].contains("DEFAULT_ACTION") && e[0].contains("allow or deny"), "{e:?}");
    }

    #[test]
    fn values_parse() {
        let c = cfg(&[
            ("LOG_LEVEL", "debug"),
            ("HTTP_PORT", "80"),
            ("FILTER_MODE", "DNS"),
            ("DNS_UPSTREAMS", "10.0.0.2:5353, [fd00::2]:53,10.0.0.3"),
            ("ALLOWLIST_IPS", "1.1.1.1, ,10.0.0.0/8"),
            ("ALLOWLIST_DOMAINS", ""),
            ("DASHBOARD_HOST", "dash:8081"),
            ("DASHBOARD_START_DELAY", "1m"),
            ("NOTIFICATION_HOST", "https://gotify.example/"),
            ("NOTIFICATION_KEY", "k"),
            ("NOTIFICATION_BACKOFF_SECONDS", "30"),
            ("NOTIFICATION_IGNORE_DOMAINS", "*.example.com,quiet.org"),
            ("BYPASS_MARK", "0x1f"),
            ("METRICS_ADDR", "9100"),
            ("DNS_STRICT", "yes"),
            ("HEADER_TIMEOUT", "500ms"),
        ])
        .unwrap();
        assert_eq!(c.log_level, log::LevelFilter::Debug);
        assert_eq!(c.http_port, 80);
        assert_eq!(c.filter_mode, FilterMode::Dns);
        assert_eq!(
            c.dns_upstreams,
            [
                "10.0.0.2:5353".parse().unwrap(),
                "[fd00::2]:53".parse().unwrap(),
                "10.0.0.3:53".parse().unwrap()
            ]
        );
        assert_eq!(c.allowlist_ips, Some(vec!["1.1.1.1".into(), "10.0.0.0/8".into()]));
        assert_eq!(c.allowlist_domains, None, "an empty variable counts as unset");
        assert_eq!(c.dashboard_host.as_deref(), Some("http://dash:8081"));
        assert_eq!(c.dashboard_start_delay, Duration::from_secs(60));
        assert_eq!(c.notification_host.as_deref(), Some("https://gotify.example"));
        assert_eq!(c.notification_backoff, Duration::from_secs(30));
        assert_eq!(c.notification_ignore_domains, ["*.example.com", "quiet.org"]);
        assert_eq!(c.bypass_mark, Some(0x1f));
        assert_eq!(c.metrics_addr, Some("127.0.0.1:9100".parse().unwrap()));
        let d = cfg(&[("DASHBOARD_LISTEN", "8081")]).unwrap();
        assert_eq!(d.dashboard_listen, Some("[::]:8081".parse().unwrap()));
        assert_eq!(err_strings(&[("DASHBOARD_LISTEN", "nope")]).len(), 1);
        assert!(c.dns_strict);
        assert_eq!(c.header_timeout, Duration::from_millis(500));
    }

    /// g0efilter's later names map onto egret's knobs.
    #[test]
    fn conn_max_lifetime_ms_and_decision_log_file() {
        let c =
            cfg(&[("CONN_MAX_LIFETIME_MS", "1500"), ("DECISION_LOG_FILE", "/var/log/egret.json")]).unwrap();
        assert_eq!(c.max_lifetime, Duration::from_millis(1500));
        assert_eq!(c.log_file, Some(PathBuf::from("/var/log/egret.json")));
        let c = cfg(&[
            ("CONN_MAX_LIFETIME_MS", "1500"),
            ("MAX_LIFETIME", "1m"),
            ("DECISION_LOG_FILE", "/a"),
            ("LOG_FILE", "/b"),
        ])
        .unwrap();
        assert_eq!((c.max_lifetime, c.log_file), (Duration::from_secs(60), Some(PathBuf::from("/b"))));
        assert_eq!(cfg(&[("CONN_MAX_LIFETIME_MS", "0")]).unwrap().max_lifetime, Duration::ZERO);
        let e = err_strings(&[("CONN_MAX_LIFETIME_MS", "1.5s")]);
        assert_eq!(
            e,
            ["CONN_MAX_LIFETIME_MS=\"1.5s\": expected a whole number of milliseconds (0: no limit)"]
        );
        assert_eq!(cfg(&[("ENFORCE", "audit")]).unwrap().enforce, Some(crate::policy::Mode::Audit));
        assert_eq!(cfg(&[]).unwrap().enforce, None);
        assert_eq!(err_strings(&[("ENFORCE", "maybe")]).len(), 1);
        // Learning is audit mode with a file to write to.
        let l = cfg(&[("LEARNING_MODE", "true"), ("LEARNING_OUTPUT", "/tmp/l.yaml"), ("ENFORCE", "true")])
            .unwrap();
        assert_eq!(l.env_lists().mode, Some(crate::policy::Mode::Audit));
        assert!(
            l.warnings.iter().any(|w| w.contains("LEARNING_MODE=true implies audit")),
            "{:?}",
            l.warnings
        );
        let e = err_strings(&[("LEARNING_MODE", "true")]);
        assert!(e.iter().any(|m| m.starts_with("LEARNING_OUTPUT")), "{e:?}");
        assert_eq!(cfg(&[("LEARNING_OUTPUT", "/tmp/l.yaml")]).unwrap().env_lists().mode, None);
    }

    #[test]
    fn guard_addresses() {
        use crate::policy::Guard;
        assert_eq!(cfg(&[]).unwrap().guard_addresses, Guard::default());
        assert_eq!(cfg(&[("GUARD_ADDRESSES", "none")]).unwrap().guard_addresses, Guard::OFF);
        let c = cfg(&[("GUARD_ADDRESSES", "default, private")]).unwrap();
        assert_eq!(
            c.guard_addresses.to_string(),
            "metadata, loopback, link-local, unspecified, multicast, private"
        );
        let errs = err_strings(&[("GUARD_ADDRESSES", "metadata,rfc1918")]);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(
            errs[0].starts_with("GUARD_ADDRESSES=\"metadata,rfc1918\": expected a comma list of metadata, loopback, link-local"),
            "{errs:?}"
        );
        assert!(errs[0].contains("or none (unknown address class \"rfc1918\")"), "{errs:?}");
    }

    #[test]
    fn every_error_is_reported_with_variable_value_and_form() {
        let errs = err_strings(&[
            ("HTTP_PORT", "0"),
            ("HTTPS_PORT", "70000"),
            ("FILTER_MODE", "tcp"),
            ("DNS_UPSTREAMS", "dns..google:53"),
            ("DNS_STRICT", "maybe"),
            ("BYPASS_MARK", "0"),
            ("DASHBOARD_HOST", "ftp://x"),
            ("IDLE_TIMEOUT", "-5s"),
        ]);
        let expect = [
            "HTTP_PORT=\"0\": expected a port number 1..65535",
            "HTTPS_PORT=\"70000\": expected a port number 1..65535",
            "FILTER_MODE=\"tcp\": expected https (or sni), dns or dns-strict",
            "DNS_UPSTREAMS=\"dns..google:53\": expected IP:port",
            "DNS_STRICT=\"maybe\": expected a boolean",
            "DASHBOARD_HOST=\"ftp://x\": expected an http:// or https:// URL",
            "BYPASS_MARK=\"0\": expected a non-zero 32-bit mark",
            "IDLE_TIMEOUT=\"-5s\": expected a duration",
        ];
        assert_eq!(errs.len(), expect.len(), "{errs:#?}");
        for want in expect {
            assert!(errs.iter().any(|e| e.starts_with(want)), "missing {want:?} in {errs:#?}");
        }
    }

    /// `DNS_HARDENING`: on by default with its defaults, `false` turns it
    /// off, the limits are read, a bad limit is a warning and its default.
    #[test]
    fn dns_hardening_knobs() {
        use crate::dns::harden::Limits;
        let c = cfg(&[("FILTER_MODE", "dns")]).unwrap();
        assert_eq!(c.dns_hardening, Some(Limits::default()));
        let c = cfg(&[("FILTER_MODE", "dns"), ("DNS_HARDENING", "false")]).unwrap();
        assert_eq!(c.dns_hardening, None);
        let c = cfg(&[
            ("DNS_MAX_NAME_LEN", "120"),
            ("DNS_MAX_LABEL_LEN", "40"),
            ("DNS_MAX_TXT_BYTES", "512"),
            ("DNS_RATE_QPS", "5"),
            ("DNS_RATE_BURST", "10"),
            ("DNS_ZONE_BUDGET", "30"),
        ])
        .unwrap();
        let l = c.dns_hardening.unwrap();
        assert_eq!(
            (l.max_name_len, l.max_label_len, l.max_txt_bytes, l.rate_qps, l.rate_burst, l.zone_budget),
            (120, 40, 512, 5, 10, 30)
        );
        let c =
            cfg(&[("DNS_MAX_LABEL_LEN", "64"), ("DNS_RATE_QPS", "0"), ("DNS_ZONE_BUDGET", "lots")]).unwrap();
        assert_eq!(c.dns_hardening, Some(Limits::default()));
        assert_eq!(c.warnings.len(), 3, "{:?}", c.warnings);
        assert!(
            c.warnings[0].starts_with("DNS_MAX_LABEL_LEN=\"64\" is not a whole number 1..63"),
            "{:?}",
            c.warnings
        );
        assert_eq!(err_strings(&[("DNS_HARDENING", "perhaps")]).len(), 1);
    }

    /// Knobs that do not touch enforcement: a bad value is a warning and
    /// g0efilter's default, as g0efilter does (issue 16, item 4).
    #[test]
    fn knobs_warn_and_fall_back_to_g0efilters_defaults() {
        let c = cfg(&[
            ("LOG_LEVEL", "loud"),
            ("DASHBOARD_QUEUE_SIZE", "-1"),
            ("DASHBOARD_START_DELAY", "5 parsecs"),
            ("NFLOG_BUFSIZE", "0"),
            ("NFLOG_QTHRESH", "lots"),
            ("NOTIFICATION_BACKOFF_SECONDS", "0"),
        ])
        .expect("knobs never refuse a start");
        assert_eq!(c.log_level, log::LevelFilter::Info);
        assert_eq!(c.dashboard_queue_size, 1024);
        assert_eq!(c.dashboard_start_delay, Duration::from_secs(5));
        assert_eq!((c.nflog_bufsize, c.nflog_qthresh), (96, 50));
        assert_eq!(c.notification_backoff, Duration::from_secs(60));
        let w = c.warnings.join("\n");
        for var in [
            "LOG_LEVEL=\"loud\"",
            "DASHBOARD_QUEUE_SIZE=\"-1\"",
            "DASHBOARD_START_DELAY=\"5 parsecs\"",
            "NFLOG_BUFSIZE=\"0\"",
            "NFLOG_QTHRESH=\"lots\"",
            "NOTIFICATION_BACKOFF_SECONDS=\"0\"",
        ] {
            assert!(w.contains(var), "no warning for {var}: {w}");
        }
        assert_eq!(c.warnings.len(), 6, "{w}");
        assert!(w.contains("using the default 60s"), "{w}");
        assert!(cfg(&[]).unwrap().warnings.is_empty());
        // A negative backoff is g0efilter's 60 too.
        assert_eq!(
            cfg(&[("NOTIFICATION_BACKOFF_SECONDS", "-3")]).unwrap().notification_backoff.as_secs(),
            60
        );
    }

    #[test]
    fn g0efilter_mode_names_and_upstream_names() {
        let c = cfg(&[("FILTER_MODE", "sni")]).unwrap();
        assert_eq!((c.filter_mode, c.dns_strict), (FilterMode::Https, false));
        let c = cfg(&[("FILTER_MODE", "dns-strict")]).unwrap();
        assert_eq!((c.filter_mode, c.dns_strict), (FilterMode::Dns, true));
        let c = cfg(&[("FILTER_MODE", "DNS")]).unwrap();
        assert_eq!((c.filter_mode, c.dns_strict), (FilterMode::Dns, false));
        // Host names are kept for the shell to resolve, in order.
        let c = cfg(&[("DNS_UPSTREAMS", "10.0.0.2:53, resolver.internal:5353,dns.test")]).unwrap();
        assert_eq!(
            c.dns_upstreams_env,
            Some(vec![
                Upstream::Addr("10.0.0.2:53".parse().unwrap()),
                Upstream::Name { host: "resolver.internal".into(), port: 5353 },
                Upstream::Name { host: "dns.test".into(), port: 53 },
            ])
        );
        assert_eq!(c.dns_upstreams, ["10.0.0.2:53".parse().unwrap()], "the literal ones, before resolution");
        assert_eq!(cfg(&[]).unwrap().dns_upstreams_env, None, "unset: the workloads' resolvers");
        assert!(cfg(&[("DNS_UPSTREAMS", "bad name:53")]).is_err());
        assert!(cfg(&[("DNS_UPSTREAMS", "host:0")]).is_err());
    }

    #[test]
    fn notification_urls_list_every_bad_entry_and_no_secret() {
        let c =
            cfg(&[("NOTIFICATION_URLS", "gotify://g.example/tok1,ntfy://:tk2@n.example/topic3")]).unwrap();
        assert_eq!(c.notification_urls.len(), 2);
        assert!(cfg(&[]).unwrap().notification_urls.is_empty());
        let errs = err_strings(&[
            (
                "NOTIFICATION_URLS",
                "gotify://g.example/tok1, slack://hook:SeKrEt@webhook,discord://PaSs@x,pushover://a@b",
            ),
            ("HTTP_PORT", "0"),
        ]);
        assert_eq!(errs.len(), 4, "{errs:?}");
        let urls: Vec<&String> = errs.iter().filter(|e| e.starts_with("NOTIFICATION_URLS")).collect();
        assert!(
            urls[0].starts_with("NOTIFICATION_URLS: entry 2 (slack://): expected slack://hook:A-B-C@webhook")
        );
        assert!(urls[1]
            .starts_with("NOTIFICATION_URLS: entry 3 (discord://): expected discord://TOKEN@WEBHOOK_ID"));
        assert!(urls[2].starts_with("NOTIFICATION_URLS: entry 4 (pushover://): expected one of gotify://"));
        assert!(!errs.concat().contains("SeKrEt") && !errs.concat().contains("PaSs"), "{errs:?}");
    }

    #[test]
    fn cross_field_errors() {
        assert_eq!(
            err_strings(&[("HTTP_PORT", "9000"), ("HTTPS_PORT", "9000")]),
            ["HTTPS_PORT=\"9000\": expected a port different from HTTP_PORT (9000)"]
        );
        // DNS port only matters when the DNS server runs.
        assert!(cfg(&[("HTTP_PORT", "53")]).is_ok());
        assert_eq!(
            err_strings(&[("HTTP_PORT", "53"), ("FILTER_MODE", "dns")]),
            ["DNS_PORT=\"53\": expected a port different from HTTP_PORT (53)"]
        );
        assert_eq!(err_strings(&[("DNS_STRICT", "1")]).len(), 1);
        // g0efilter turns alerts off when the key is missing; so does egret.
        let c = cfg(&[("NOTIFICATION_HOST", "gotify:80")]).unwrap();
        assert_eq!((c.notification_host.clone(), c.notification_key.clone()), (None, None));
        assert_eq!(
            c.warnings,
            ["NOTIFICATION_HOST=http://gotify:80 is set but NOTIFICATION_KEY is not: Gotify alerts are off"]
        );
        let c = cfg(&[("NOTIFICATION_KEY", "k")]).unwrap();
        assert_eq!((c.notification_host.clone(), c.notification_key.clone()), (None, None));
        assert_eq!(c.warnings.len(), 1);
        let c = cfg(&[("NOTIFICATION_IGNORE_DOMAINS", "a..b,ok.test")]).unwrap();
        assert_eq!(c.notification_ignore_domains, ["ok.test"]);
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].contains("\"a..b\""), "{:?}", c.warnings);
        assert_eq!(err_strings(&[("IDLE_TIMEOUT", "0s")]).len(), 1);
        assert_eq!(err_strings(&[("DNS_TTL_MIN", "2h"), ("DNS_TTL_MAX", "1h")]).len(), 1);
    }

    #[test]
    fn dns_in_https_mode() {
        let c = cfg(&[]).unwrap();
        assert!(!c.dns_in_https_mode && !c.runs_dns_server(), "off by default (g0efilter's HTTPS mode)");
        let c = cfg(&[("DNS_IN_HTTPS_MODE", "true")]).unwrap();
        assert!(c.dns_in_https_mode && c.runs_dns_server());
        assert!(cfg(&[("FILTER_MODE", "dns")]).unwrap().runs_dns_server());
        // Harmless in DNS mode, where the resolver always runs.
        assert!(cfg(&[("FILTER_MODE", "dns"), ("DNS_IN_HTTPS_MODE", "true")]).is_ok());
        // The resolver's port must not collide with the proxies'.
        assert_eq!(
            err_strings(&[("HTTPS_PORT", "53"), ("DNS_IN_HTTPS_MODE", "1")]),
            ["DNS_PORT=\"53\": expected a port different from HTTPS_PORT (53)"]
        );
        assert_eq!(err_strings(&[("DNS_IN_HTTPS_MODE", "sometimes")]).len(), 1);
        // Strict egress stays a DNS-mode feature.
        assert_eq!(err_strings(&[("DNS_IN_HTTPS_MODE", "true"), ("DNS_STRICT", "true")]).len(), 1);
    }

    #[test]
    fn watchdog_interval() {
        assert_eq!(cfg(&[]).unwrap().watchdog_interval, Duration::from_secs(2));
        assert_eq!(
            cfg(&[("WATCHDOG_INTERVAL", "500ms")]).unwrap().watchdog_interval,
            Duration::from_millis(500)
        );
        assert_eq!(cfg(&[("WATCHDOG_INTERVAL", "0")]).unwrap().watchdog_interval, Duration::ZERO);
        assert_eq!(cfg(&[]).unwrap().dashboard_heartbeat, Duration::from_secs(30));
        assert_eq!(
            cfg(&[("DASHBOARD_HEARTBEAT", "5s")]).unwrap().dashboard_heartbeat,
            Duration::from_secs(5)
        );
        assert!(cfg(&[("DASHBOARD_HEARTBEAT", "often")]).is_err());
        let c = cfg(&[]).unwrap();
        assert_eq!(
            (c.remote_unblock, c.unblock_poll, c.unblock_file.clone()),
            (false, Duration::from_secs(30), PathBuf::from("/data/unblocks.json"))
        );
        let c = cfg(&[
            ("ENABLE_REMOTE_UNBLOCK", "true"),
            ("UNBLOCK_POLL", "1s"),
            ("LOG_FILE", "/var/log/e.json"),
        ])
        .unwrap();
        assert_eq!(
            (c.remote_unblock, c.unblock_poll, c.unblock_file.clone()),
            (true, Duration::from_secs(1), PathBuf::from("/var/log/unblocks.json"))
        );
        assert_eq!(cfg(&[("UNBLOCK_FILE", "/u.json")]).unwrap().unblock_file, PathBuf::from("/u.json"));
        assert!(cfg(&[("UNBLOCK_POLL", "0s")]).is_err());
        assert!(cfg(&[("WATCHDOG_INTERVAL", "often")]).is_err());
    }

    #[test]
    fn duration_table() {
        // Go's time.ParseDuration forms, and bare seconds.
        let ok: &[(&str, u64)] = &[
            ("0", 0),
            ("5", 5000),
            ("5s", 5000),
            ("500ms", 500),
            ("1m", 60_000),
            ("2h", 7_200_000),
            ("1m30s", 90_000),
            ("1.5s", 1500),
            ("2h45m", 9_900_000),
            (".5s", 500),
            ("1.5h", 5_400_000),
            ("+3s", 3000),
            ("1500us", 1),
            ("1500\u{b5}s", 1),
            ("2000000ns", 2),
            ("0s", 0),
        ];
        for (s, ms) in ok {
            assert_eq!(parse_duration(s).unwrap().as_millis() as u64, *ms, "{s}");
        }
        assert_eq!(parse_duration("1.000000001s").unwrap(), Duration::new(1, 1));
        for s in ["", "s", "-5s", "5d", "5 s s", "1..5s", "1m30", ".s", "5S", "99999999999999999999h"] {
            assert!(parse_duration(s).is_err(), "{s}");
        }
    }

    #[test]
    fn events_fields() {
        let c = cfg(&[]).unwrap();
        assert_eq!((c.dashboard_ca_file.clone(), c.log_file_max_size), (None, 100 << 20));
        let c = cfg(&[("DASHBOARD_CA_FILE", "/etc/egret/ca.pem"), ("LOG_FILE_MAX_SIZE", "512K")]).unwrap();
        assert_eq!(c.dashboard_ca_file, Some(PathBuf::from("/etc/egret/ca.pem")));
        assert_eq!(c.log_file_max_size, 512 << 10);
        for (s, want) in
            [("0", 0), ("10", 10), ("1k", 1024), ("2M", 2 << 20), ("1G", 1 << 30), ("3MiB", 3 << 20)]
        {
            assert_eq!(parse_size(s), Ok(want), "{s}");
        }
        for s in ["", "M", "1.5M", "1T", "-1", "99999999999999999999G"] {
            assert!(parse_size(s).is_err(), "{s}");
        }
        assert_eq!(err_strings(&[("LOG_FILE_MAX_SIZE", "big")]).len(), 1);
    }

    #[test]
    fn syslog_variables() {
        let c = cfg(&[]).unwrap();
        assert_eq!((c.syslog_url.clone(), c.syslog_queue_size, c.syslog_ca_file.clone()), (None, 1024, None));
        let c = cfg(&[
            ("SYSLOG_URL", "tls://logs.example:6514"),
            ("SYSLOG_QUEUE_SIZE", "64"),
            ("SYSLOG_CA_FILE", "/etc/egret/syslog-ca.pem"),
        ])
        .unwrap();
        let url = c.syslog_url.unwrap();
        assert_eq!((url.transport, url.host.as_str(), url.port), (Transport::Tls, "logs.example", 6514));
        assert_eq!(c.syslog_queue_size, 64);
        assert_eq!(c.syslog_ca_file, Some(PathBuf::from("/etc/egret/syslog-ca.pem")));
        let errs = err_strings(&[("SYSLOG_URL", "logs.example:514"), ("SYSLOG_QUEUE_SIZE", "0")]);
        assert_eq!(errs.len(), 2, "{errs:#?}");
        assert!(
            errs[0].starts_with(
                "SYSLOG_URL=\"logs.example:514\": expected udp://host:514, tcp://host:601 or tls://host:6514"
            ),
            "{errs:#?}"
        );
        assert!(
            errs[1].starts_with("SYSLOG_QUEUE_SIZE=\"0\": expected a whole number 1..1048576"),
            "{errs:#?}"
        );
    }

    #[test]
    fn dashboard_config() {
        let e = DashboardConfig::from_env(&env(&[])).unwrap_err();
        assert!(e.to_string().contains("API_KEY: is required"), "{e}");
        let c = DashboardConfig::from_env(&env(&[("API_KEY", "s3cret")])).unwrap();
        // Go's ":8081" listens on every address, IPv6 included.
        assert_eq!(c.listen, "[::]:8081".parse().unwrap());
        assert_eq!((c.buffer_size, c.read_limit, c.sse_retry_ms, c.rate_burst), (5000, 500, 2000, 100));
        assert_eq!(c.rate_rps, 50.0);
        assert_eq!(c.write_timeout, Duration::ZERO);
        assert!(!c.public_reads, "reads need the key unless asked otherwise");
        let c = DashboardConfig::from_env(&env(&[("API_KEY", "k"), ("PUBLIC_READS", "true")])).unwrap();
        assert!(c.public_reads);
        let e = DashboardConfig::from_env(&env(&[
            ("API_KEY", "k"),
            ("PUBLIC_READS", "true"),
            ("AUTH_MODE", "forward"),
            ("TRUSTED_PROXIES", "10.0.0.1"),
        ]))
        .unwrap_err();
        assert!(e.to_string().contains("PUBLIC_READS"), "{e}");
        assert_eq!(parse_uids("0"), Ok(vec![0]));
        assert_eq!(parse_uids(" 0, 65532 "), Ok(vec![0, 65532]));
        for bad in ["", "root", "0,", "-1", "4294967296"] {
            assert!(parse_uids(bad).is_err(), "{bad:?}");
        }
        for (port, want) in [
            ("9000", "[::]:9000"),
            (":9001", "[::]:9001"),
            ("127.0.0.1:9002", "127.0.0.1:9002"),
            ("[::1]:9003", "[::1]:9003"),
        ] {
            let c = DashboardConfig::from_env(&env(&[("API_KEY", "k"), ("PORT", port)])).unwrap();
            assert_eq!(c.listen, want.parse().unwrap(), "{port}");
        }
        let e = DashboardConfig::from_env(&env(&[
            ("API_KEY", "k"),
            ("PORT", "x"),
            ("TRUSTED_PROXIES", "10.0.0.0/8,nope"),
        ]))
        .unwrap_err();
        assert_eq!(e.0.len(), 2, "{e}");
        // Knobs: warnings and g0efilter's defaults.
        let c = DashboardConfig::from_env(&env(&[
            ("API_KEY", "k"),
            ("RATE_RPS", "0"),
            ("BUFFER_SIZE", "0"),
            ("READ_LIMIT", "-4"),
            ("LOG_LEVEL", "chatty"),
            ("WRITE_TIMEOUT", "soon"),
            ("RATE_BURST", "100.0"),
        ]))
        .unwrap();
        assert_eq!((c.rate_rps, c.buffer_size, c.read_limit, c.rate_burst), (50.0, 5000, 500, 100));
        assert_eq!((c.log_level, c.write_timeout), (log::LevelFilter::Info, Duration::ZERO));
        assert_eq!(c.warnings.len(), 5, "{:?}", c.warnings);
        let c =
            DashboardConfig::from_env(&env(&[("API_KEY", "k"), ("TRUSTED_PROXIES", "10.0.0.1, fd00::/8")]))
                .unwrap();
        assert_eq!(c.trusted_proxies.len(), 2);
    }

    #[test]
    fn retention_table() {
        let day = std::time::Duration::from_secs(86_400);
        let ok = |s: &str| parse_retention(s).unwrap();
        assert_eq!(ok("30d"), Retention { max_age: Some(30 * day), max_rows: None });
        assert_eq!(ok("72h"), Retention { max_age: Some(3 * day), max_rows: None });
        assert_eq!(ok("1000000"), Retention { max_age: None, max_rows: Some(1_000_000) });
        assert_eq!(ok("7d, 500"), Retention { max_age: Some(7 * day), max_rows: Some(500) });
        assert_eq!(ok("500 1h"), Retention { max_age: Some(day / 24), max_rows: Some(500) });
        for bad in ["", "0", "0d", "x", "1d,2d", "5,6", "-1d"] {
            assert!(parse_retention(bad).is_err(), "{bad}");
        }
    }
}
