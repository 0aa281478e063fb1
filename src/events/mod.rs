//! Decision events: the one serialised output type ([`Event`]), its
//! `flow_id`, RFC 3339 time stamps, and the [`Emitter`] every component
//! uses to hand events to the sink without ever blocking.
//!
//! Pure apart from the channel: time is passed in. The pipeline behind the
//! channel lives in the submodules: [`sink`] (the thread: stdout,
//! `LOG_FILE`, fan-out), [`batch`] + [`shipper`] (dashboard), [`gotify`]
//! (alert rules and workers), [`notify`] (alert targets and requests) and [`net`] (marked HTTP client sockets).

pub mod batch;
pub mod gotify;
pub mod heartbeat;
pub mod net;
pub mod notify;
pub mod shipper;
pub mod sink;
pub mod syslog;
pub mod tally;
pub mod unblock;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// What happened to the traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Action {
    Allowed,
    Blocked,
    Redirected,
    /// Audit mode (`ENFORCE=audit`): would have been blocked, for the
    /// event's `reason`, and was let through.
    Audit,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Allowed => "ALLOWED",
            Action::Blocked => "BLOCKED",
            Action::Redirected => "REDIRECTED",
            Action::Audit => "AUDIT",
        }
    }
}

/// Which part of egret decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    Https,
    Http,
    Dns,
    Nflog,
    /// Relay mode's doors (`FILTER_MODE=relay`).
    Relay,
    /// egret itself (reloads, tampering, limits).
    Egret,
}

impl Component {
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Https => "https",
            Component::Http => "http",
            Component::Dns => "dns",
            Component::Nflog => "nflog",
            Component::Relay => "relay",
            Component::Egret => "egret",
        }
    }
}

/// One decision, as written to stdout / `LOG_FILE` and shipped to the
/// dashboard. Field names and meanings follow g0efilter's event JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Event {
    /// RFC 3339 with nanoseconds, UTC.
    pub time: String,
    /// When egret made the event (the same instant as `time`); g0efilter's
    /// shipper adds it to every event it sends to the dashboard.
    pub producer_time: String,
    pub msg: String,
    pub action: Action,
    pub component: Component,
    pub hostname: String,
    pub version: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<u16>,
    /// `TCP`, `UDP`, or the IP protocol number as g0efilter writes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<std::borrow::Cow<'static, str>>,
    /// NFLOG events: bytes of the packet that were copied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_len: Option<u64>,
    /// TLS SNI.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_host: Option<String>,
    /// The name the decision was about, whatever carried it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub qtype: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rcode: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    /// "ip:port" of the source.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    /// "ip:port" of the destination.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<String>,
    /// Whether the ClientHello carried an Encrypted Client Hello extension.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ech: Option<bool>,
    /// The uid owning the client's socket (connections to egret's own
    /// listeners), or the packet's (NFLOG).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// The client socket's cgroup v2 path, where a cgroup2 hierarchy is
    /// mounted.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    /// The container that cgroup belongs to (the first 12 characters of
    /// its id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub container: Option<String>,
}

impl Event {
    /// A new event with `msg` derived from component and action
    /// (`https.allowed`, `dns.blocked`, `nflog.event`, …).
    pub fn new(component: Component, action: Action, hostname: &str, now: SystemTime) -> Event {
        let msg = match component {
            Component::Nflog => "nflog.event".to_owned(),
            c => format!("{}.{}", c.as_str(), action.as_str().to_ascii_lowercase()),
        };
        let time = rfc3339_nanos(now);
        Event {
            producer_time: time.clone(),
            time,
            msg,
            action,
            component,
            hostname: hostname.to_owned(),
            version: crate::VERSION,
            source_ip: None,
            source_port: None,
            destination_ip: None,
            destination_port: None,
            protocol: None,
            payload_len: None,
            https: None,
            http_host: None,
            host: None,
            qname: None,
            qtype: None,
            rcode: None,
            reason: None,
            note: None,
            src: None,
            dst: None,
            flow_id: None,
            ech: None,
            uid: None,
            cgroup: None,
            container: None,
        }
    }

    /// Fills source, destination, `src`/`dst`, protocol and `flow_id` from
    /// one flow's addresses.
    pub fn with_flow(mut self, src: SocketAddr, dst: SocketAddr, protocol: &'static str) -> Event {
        let (sip, dip) = (crate::policy::cidr::canonical(src.ip()), crate::policy::cidr::canonical(dst.ip()));
        self.source_ip = Some(sip.to_string());
        self.source_port = Some(src.port());
        self.destination_ip = Some(dip.to_string());
        self.destination_port = Some(dst.port());
        self.src = Some(host_port(sip, src.port()));
        self.dst = Some(host_port(dip, dst.port()));
        self.protocol = Some(protocol.into());
        self.flow_id = Some(flow_id(sip, src.port(), dip, dst.port(), protocol));
        self
    }

    /// Names the client: its uid and, where known, cgroup and container.
    pub fn with_owner(mut self, owner: Option<crate::peer::Owner>) -> Event {
        if let Some(o) = owner {
            self.uid = Some(o.uid);
            // The root cgroup names no container: every process without
            // a cgroup of its own is in it.
            if let Some(cg) = o.cgroup.and_then(crate::peer::cgroup).filter(|c| c.path != "/") {
                self.cgroup = Some(cg.path);
                self.container = cg.container;
            }
        }
        self
    }

    pub fn with_reason(mut self, reason: &str) -> Event {
        self.reason = Some(reason.to_owned());
        self
    }

    /// One JSON line (no trailing newline).
    pub fn to_json(&self) -> String {
        // Serialising a struct of strings, numbers and options cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Starts the event pipeline the config describes: the sink thread
/// (stdout, `LOG_FILE`), the dashboard shipper when `DASHBOARD_HOST` is set
/// and alerts when `NOTIFICATION_HOST` or `NOTIFICATION_URLS` is set. `mark` is egret's
/// bypass mark, put on every socket the pipeline opens.
pub fn spawn(
    cfg: &crate::config::Config,
    mark: Option<u32>,
) -> Result<(Emitter, sink::SinkHandle), sink::SinkError> {
    sink::spawn_with(sink_options(cfg, mark))
}

/// The [`sink::SinkOptions`] for a config (stdout included).
pub fn sink_options(cfg: &crate::config::Config, mark: Option<u32>) -> sink::SinkOptions {
    let client = net::ClientOptions {
        mark,
        ca_file: cfg.dashboard_ca_file.clone(),
        dns_fallback: cfg.dns_upstreams.clone(),
        ..Default::default()
    };
    let hostname = cfg.hostname.clone().unwrap_or_else(|| {
        nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()).unwrap_or_else(|| "egret".into())
    });
    let shipper = cfg.dashboard_host.as_ref().map(|host| {
        if cfg.dashboard_api_key.is_none() {
            log::warn!(
                "DASHBOARD_HOST is set but DASHBOARD_API_KEY is not: the dashboard will refuse the events"
            );
        }
        log::info!(
            "events: shipping to {host}{} (queue {}, start delay {:?})",
            shipper::LOGS_PATH,
            cfg.dashboard_queue_size,
            cfg.dashboard_start_delay
        );
        let uids = cfg.dashboard_uids.clone().unwrap_or_else(|| vec![nix::unistd::geteuid().as_raw()]);
        log::info!(
            "events: a loopback dashboard gets the key only from a listener of uid {} (DASHBOARD_UID)",
            uids.iter().map(u32::to_string).collect::<Vec<_>>().join(",")
        );
        shipper::ShipperOptions {
            host: host.clone(),
            api_key: cfg.dashboard_api_key.clone(),
            batch: batch::BatchConfig {
                queue_size: cfg.dashboard_queue_size,
                start_delay: cfg.dashboard_start_delay,
                ..Default::default()
            },
            client: net::ClientOptions { listener_uids: Some(uids), ..client.clone() },
        }
    });
    let mut targets = Vec::new();
    if let (Some(host), Some(key)) = (&cfg.notification_host, &cfg.notification_key) {
        log::info!("events: Gotify alerts for blocked connections to {host}");
        targets.push(notify::Target::gotify_host(host, key));
    }
    for t in &cfg.notification_urls {
        // Redacted: the service and where, never a token.
        log::info!("events: alerts for blocked connections to {t}");
        targets.push(t.clone());
    }
    let alerts = (!targets.is_empty()).then(|| sink::AlertOptions {
        targets,
        backoff: cfg.notification_backoff,
        ignore_domains: cfg.notification_ignore_domains.clone(),
        client,
    });
    let learning = cfg.learning_output.as_ref().filter(|_| cfg.learning_mode).map(|path| {
        log::info!(
            "LEARNING_MODE: audit mode; the suggested policy (what the workloads needed) is kept in {}",
            path.display()
        );
        sink::LearningOptions { path: path.clone(), group: cfg.learning_group }
    });
    sink::SinkOptions {
        hostname,
        channel_capacity: sink::CHANNEL_CAPACITY,
        learning,
        stdout: Some(Box::new(std::io::stdout())),
        log_file: cfg.log_file.as_ref().map(|path| sink::LogFileOptions {
            path: path.clone(),
            max_size: cfg.log_file_max_size,
            keep: 3,
        }),
        shipper,
        alerts,
        syslog: syslog::options(cfg, mark),
    }
}

/// `ip:port` as g0efilter writes it (IPv6 in brackets so the port is
/// unambiguous).
fn host_port(ip: IpAddr, port: u16) -> String {
    match ip {
        IpAddr::V4(a) => format!("{a}:{port}"),
        IpAddr::V6(a) => format!("[{a}]:{port}"),
    }
}

/// FNV-32a of `srcIP:srcPort->dstIP:dstPort|PROTO`, lowercase hex without
/// zero padding (as g0efilter writes it), so proxy and NFLOG events of one
/// flow correlate, also with g0efilter's.
pub fn flow_id(src: IpAddr, sport: u16, dst: IpAddr, dport: u16, protocol: &str) -> String {
    let key = format!("{src}:{sport}->{dst}:{dport}|{}", protocol.to_ascii_uppercase());
    format!("{:x}", fnv1a32(key.as_bytes()))
}

pub fn fnv1a32(bytes: &[u8]) -> u32 {
    const OFFSET: u32 = 0x811c_9dc5;
    const PRIME: u32 = 0x0100_0193;
    bytes.iter().fold(OFFSET, |h, &b| (h ^ u32::from(b)).wrapping_mul(PRIME))
}

/// RFC 3339 UTC with nanoseconds, e.g. `2026-11-21T20:51:19.123456789Z`.
pub fn rfc3339_nanos(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    crate::time::format_rfc3339_nanos(d.as_nanos() as i128)
}

/// The data path's handle on the event pipeline. Cloning is cheap.
/// [`Emitter::emit`] never blocks: when the channel is full the event is
/// dropped and counted.
#[derive(Clone)]
pub struct Emitter {
    tx: SyncSender<Event>,
    dropped: Arc<AtomicU64>,
    hostname: Arc<str>,
}

impl Emitter {
    /// A bounded channel of `capacity` events; the receiver goes to the
    /// sink thread.
    pub fn channel(capacity: usize, hostname: &str) -> (Emitter, Receiver<Event>) {
        let (tx, rx) = mpsc::sync_channel(capacity);
        (Emitter { tx, dropped: Arc::new(AtomicU64::new(0)), hostname: hostname.into() }, rx)
    }

    pub fn hostname(&self) -> &str {
        &self.hostname
    }

    /// Starts an event stamped now with this emitter's hostname.
    pub fn event(&self, component: Component, action: Action) -> Event {
        Event::new(component, action, &self.hostname, SystemTime::now())
    }

    /// Hands the event to the sink; drops and counts it when the sink is
    /// behind (or gone). Returns whether it was queued.
    pub fn emit(&self, ev: Event) -> bool {
        match self.tx.try_send(ev) {
            Ok(()) => true,
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                false
            }
        }
    }

    /// Events dropped so far because the sink was full.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// The shared drop counter, for the sink's warnings and metrics.
    pub fn drop_counter(&self) -> Arc<AtomicU64> {
        self.dropped.clone()
    }
}

/// Lets a repeated message through at most once per `period`, counting
/// what it held back. Pure: `now` is passed in.
#[derive(Debug, Clone)]
pub struct Throttle {
    period: Duration,
    next: Option<Instant>,
    held: u64,
}

impl Throttle {
    pub fn new(period: Duration) -> Throttle {
        Throttle { period, next: None, held: 0 }
    }

    /// `Some(n)` when the message may be shown now, `n` being how many
    /// were held back since the last one; `None` (and one more held back)
    /// otherwise.
    pub fn ready(&mut self, now: Instant) -> Option<u64> {
        match self.next {
            Some(at) if now < at => {
                self.held += 1;
                None
            }
            _ => {
                self.next = Some(now + self.period);
                Some(std::mem::take(&mut self.held))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn fnv_vectors() {
        // Published FNV-1a 32-bit test vectors.
        assert_eq!(fnv1a32(b""), 0x811c9dc5);
        assert_eq!(fnv1a32(b"a"), 0xe40c292c);
        assert_eq!(fnv1a32(b"foobar"), 0xbf9cf968);
    }

    #[test]
    fn flow_id_is_stable_and_directional() {
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let key = "10.0.0.1:1234->10.0.0.2:443|TCP";
        assert_eq!(flow_id(a, 1234, b, 443, "tcp"), format!("{:x}", fnv1a32(key.as_bytes())));
        // No zero padding: a hash below 0x10000000 has fewer than 8 digits.
        let short = (0..10_000u16)
            .map(|p| (p, flow_id(a, p, b, 443, "TCP")))
            .find(|(p, _)| fnv1a32(format!("10.0.0.1:{p}->10.0.0.2:443|TCP").as_bytes()) < 0x1000_0000)
            .expect("some port hashes below 0x10000000");
        assert!(short.1.len() < 8 && !short.1.starts_with('0'), "{short:?}");
        assert_ne!(flow_id(a, 1234, b, 443, "TCP"), flow_id(b, 443, a, 1234, "TCP"));
        assert_ne!(flow_id(a, 1234, b, 443, "TCP"), flow_id(a, 1234, b, 443, "UDP"));
    }

    #[test]
    fn time_format() {
        let cases: &[(u64, u32, &str)] = &[
            (0, 0, "1970-01-01T00:00:00.000000000Z"),
            (951_782_400, 5, "2000-02-29T00:00:00.000000005Z"),
            (1_795_294_279, 123_456_789, "2026-11-21T20:51:19.123456789Z"),
            (4_107_542_399, 999_999_999, "2100-02-28T23:59:59.999999999Z"),
        ];
        for (secs, nanos, want) in cases {
            let t = UNIX_EPOCH + Duration::new(*secs, *nanos);
            assert_eq!(rfc3339_nanos(t), *want);
        }
    }

    #[test]
    fn json_shape() {
        let t = UNIX_EPOCH + Duration::from_secs(1);
        let ev = Event::new(Component::Https, Action::Blocked, "pod-1", t)
            .with_flow("10.0.0.1:5000".parse().unwrap(), "[::ffff:1.2.3.4]:443".parse().unwrap(), "TCP")
            .with_reason("not-allowlisted");
        let v: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(v["msg"], "https.blocked");
        assert_eq!(v["action"], "BLOCKED");
        assert_eq!(v["component"], "https");
        assert_eq!(v["hostname"], "pod-1");
        assert_eq!(v["time"], "1970-01-01T00:00:01.000000000Z");
        assert_eq!(v["source_port"], 5000, "ports are numbers");
        assert_eq!(v["destination_ip"], "1.2.3.4", "mapped v4 shown as v4");
        assert_eq!(v["dst"], "1.2.3.4:443");
        assert_eq!(v["reason"], "not-allowlisted");
        assert!(v.get("qname").is_none(), "unknown fields are left out");
        let v6 = Event::new(Component::Nflog, Action::Blocked, "h", t).with_flow(
            "[fd00::1]:1".parse().unwrap(),
            "[fd00::2]:2".parse().unwrap(),
            "UDP",
        );
        assert_eq!(v6.msg, "nflog.event");
        assert_eq!(v6.src.as_deref(), Some("[fd00::1]:1"));
    }

    #[test]
    fn sink_options_follow_the_config() {
        let vars: std::collections::HashMap<&str, &str> = [
            ("HOSTNAME", "pod-9"),
            ("DASHBOARD_HOST", "dash:8081"),
            ("DASHBOARD_API_KEY", "k"),
            ("DASHBOARD_QUEUE_SIZE", "77"),
            ("DASHBOARD_START_DELAY", "2s"),
            ("DASHBOARD_CA_FILE", "/ca.pem"),
            ("DNS_UPSTREAMS", "10.0.0.53:53"),
            ("NOTIFICATION_HOST", "gotify.example"),
            ("NOTIFICATION_KEY", "gk"),
            ("NOTIFICATION_URLS", "ntfy://n.example/t, generic+http://127.0.0.1:9/h"),
            ("NOTIFICATION_BACKOFF_SECONDS", "30"),
            ("NOTIFICATION_IGNORE_DOMAINS", "*.quiet.test"),
            ("LOG_FILE", "/var/log/egret.jsonl"),
            ("LOG_FILE_MAX_SIZE", "1M"),
        ]
        .into_iter()
        .collect();
        let cfg = crate::config::Config::from_env(&|k| vars.get(k).map(|v| v.to_string())).unwrap();
        let o = sink_options(&cfg, Some(0x55));
        assert_eq!(o.hostname, "pod-9");
        assert!(o.stdout.is_some(), "stdout always carries the events");
        let lf = o.log_file.unwrap();
        assert_eq!((lf.path.to_str().unwrap(), lf.max_size), ("/var/log/egret.jsonl", 1 << 20));
        let sh = o.shipper.unwrap();
        assert_eq!((sh.host.as_str(), sh.api_key.as_deref()), ("http://dash:8081", Some("k")));
        assert_eq!((sh.batch.queue_size, sh.batch.start_delay), (77, Duration::from_secs(2)));
        assert_eq!(sh.client.mark, Some(0x55));
        assert_eq!(sh.client.ca_file.as_deref(), Some(std::path::Path::new("/ca.pem")));
        assert_eq!(sh.client.dns_fallback, ["10.0.0.53:53".parse().unwrap()]);
        let g = o.alerts.unwrap();
        // Both set: both used, the legacy Gotify first.
        assert_eq!(
            g.targets,
            [
                notify::Target::gotify_host("http://gotify.example", "gk"),
                notify::Target::parse("ntfy://n.example/t").unwrap(),
                notify::Target::parse("generic+http://127.0.0.1:9/h").unwrap(),
            ]
        );
        assert_eq!(
            (g.backoff, g.ignore_domains.clone()),
            (Duration::from_secs(30), vec!["*.quiet.test".to_owned()])
        );
        assert_eq!(g.client.mark, Some(0x55));
        let bare = crate::config::Config::from_env(&|_| None).unwrap();
        let o = sink_options(&bare, None);
        assert!(o.shipper.is_none() && o.alerts.is_none() && o.log_file.is_none());
    }

    #[test]
    fn throttle_shows_once_per_period_and_counts_the_rest() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut t = Throttle::new(10 * s);
        let got: Vec<Option<u64>> =
            [0u32, 1, 5, 9, 10, 11, 25].iter().map(|&k| t.ready(t0 + k * s)).collect();
        assert_eq!(got, [Some(0), None, None, None, Some(3), None, Some(1)]);
    }

    #[test]
    fn emitter_never_blocks_and_counts_drops() {
        let (em, rx) = Emitter::channel(2, "h");
        for _ in 0..5 {
            em.emit(em.event(Component::Dns, Action::Allowed));
        }
        assert_eq!(em.dropped(), 3);
        assert_eq!(rx.try_iter().count(), 2);
        drop(rx);
        assert!(!em.emit(em.event(Component::Dns, Action::Allowed)));
        assert_eq!(em.dropped(), 4);
    }
}
