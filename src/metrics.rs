//! The filter's own HTTP endpoint: `GET /metrics` in the Prometheus text
//! format and `GET /health` (`{"status":"ok"}`, or 503 `degraded` while
//! the installed ruleset is not what egret installed). Served on a unix
//! socket always (`egret health` reads it; see `health::socket_candidates`
//! for where), so egret reserves no TCP port in the pod's shared network
//! namespace, and on TCP only when `METRICS_ADDR` is set (a bare port
//! means loopback).
//!
//! [`Snapshot`] and [`render`] are the pure core: plain numbers in, text
//! out. [`Sources`] reads the live counters the other threads keep; the
//! tiny_http threads of [`start`] are the shell. Every label has a fixed,
//! small set of values: no hostnames, addresses or reasons as labels.

use std::fmt::Write as _;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};

use crate::events::sink::Counts;
use crate::proxy::registry::Registry;
use crate::watchdog::{Drift, Enforcement};

/// The daemon's own counters (the proxies and the DNS server keep theirs).
#[derive(Debug, Default)]
pub struct DaemonCounters {
    pub reloads_applied: AtomicU64,
    /// The new policy did not parse or compile; the old one stays.
    pub reloads_invalid: AtomicU64,
    /// The new ruleset could not be applied; the old one stays.
    pub reloads_failed: AtomicU64,
    /// The file changed but the policy did not.
    pub reloads_unchanged: AtomicU64,
    /// Watchdog: the installed table was found deleted or changed.
    pub tampered: AtomicU64,
    /// Watchdog: the ruleset was re-applied after tampering.
    pub reapplies: AtomicU64,
    pub nflog_events: AtomicU64,
}

/// Every value one scrape reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// `(component, verdict, count)`: component http/https, verdict
    /// allowed/blocked/revoked. Empty in DNS mode.
    pub connections: Vec<(&'static str, &'static str, u64)>,
    pub connections_open: Option<u64>,
    pub bytes_up: Option<u64>,
    pub bytes_down: Option<u64>,
    /// `(verdict, count)`: forwarded, blocked, rejected, servfail, dropped.
    pub dns: Vec<(&'static str, u64)>,
    pub nflog_events: u64,
    pub events: Counts,
    pub reloads: Vec<(&'static str, u64)>,
    pub tampered: u64,
    pub reapplies: u64,
    /// `None`: not checked (read-back failed, or relay mode: no ruleset).
    pub enforced: Option<bool>,
    /// Relay mode: TCP connections waiting for a slot (`MAX_CONNECTIONS`).
    pub relay_waiting: Option<u64>,
    /// Relay mode: connections whose target could not be reached.
    pub relay_upstream_failed: Option<u64>,
    /// HTTPS mode: accept(2) failures for want of file descriptors.
    pub accept_failures: Option<u64>,
}

/// One metric family: its help line, type and samples (`labels` is
/// `{k="v",...}` or empty). The one writer of Prometheus text in egret.
pub fn family(out: &mut String, name: &str, kind: &str, help: &str, samples: &[(String, u64)]) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
    for (labels, v) in samples {
        let _ = writeln!(out, "{name}{labels} {v}");
    }
}

fn one(v: u64) -> Vec<(String, u64)> {
    vec![(String::new(), v)]
}

/// Renders the Prometheus text exposition format (version 0.0.4).
pub fn render(s: &Snapshot) -> String {
    let mut o = String::new();
    if !s.connections.is_empty() {
        let samples: Vec<(String, u64)> = s
            .connections
            .iter()
            .map(|(c, v, n)| (format!("{{component=\"{c}\",verdict=\"{v}\"}}"), *n))
            .collect();
        family(
            &mut o,
            "egret_filter_connections_total",
            "counter",
            "Proxied connections and requests by component and verdict.",
            &samples,
        );
    }
    if let Some(n) = s.connections_open {
        family(&mut o, "egret_filter_connections_open", "gauge", "Proxied connections open now.", &one(n));
    }
    if let (Some(up), Some(down)) = (s.bytes_up, s.bytes_down) {
        let samples = vec![("{direction=\"up\"}".to_owned(), up), ("{direction=\"down\"}".to_owned(), down)];
        family(
            &mut o,
            "egret_filter_relayed_bytes_total",
            "counter",
            "Bytes relayed by closed proxied connections.",
            &samples,
        );
    }
    if !s.dns.is_empty() {
        let samples: Vec<(String, u64)> =
            s.dns.iter().map(|(v, n)| (format!("{{verdict=\"{v}\"}}"), *n)).collect();
        family(&mut o, "egret_filter_dns_queries_total", "counter", "DNS queries by verdict.", &samples);
    }
    if let Some(n) = s.accept_failures {
        family(
            &mut o,
            "egret_filter_accept_failures_total",
            "counter",
            "accept(2) failures for want of file descriptors (EMFILE, ENFILE); the listener backs off.",
            &one(n),
        );
    }
    if let Some(n) = s.relay_waiting {
        family(
            &mut o,
            "egret_filter_relay_waiting",
            "gauge",
            "Relay mode: TCP connections waiting for a slot (MAX_CONNECTIONS).",
            &one(n),
        );
    }
    if let Some(n) = s.relay_upstream_failed {
        family(
            &mut o,
            "egret_filter_relay_upstream_failures_total",
            "counter",
            "Relay mode: connections and flows whose target could not be reached.",
            &one(n),
        );
    }
    family(
        &mut o,
        "egret_filter_nflog_events_total",
        "counter",
        "Blocked packets reported by NFLOG.",
        &one(s.nflog_events),
    );
    let e = &s.events;
    family(
        &mut o,
        "egret_filter_events_total",
        "counter",
        "Events written by the event sink.",
        &one(e.events),
    );
    let dropped = vec![
        ("{stage=\"channel\"}".to_owned(), e.channel_dropped),
        ("{stage=\"dashboard\"}".to_owned(), e.ship_dropped),
        ("{stage=\"gotify\"}".to_owned(), e.alerts_dropped),
        ("{stage=\"syslog\"}".to_owned(), e.syslog_dropped),
    ];
    family(
        &mut o,
        "egret_filter_events_dropped_total",
        "counter",
        "Events dropped because a queue was full.",
        &dropped,
    );
    let queued = vec![
        ("{stage=\"dashboard\"}".to_owned(), e.ship_pending),
        ("{stage=\"syslog\"}".to_owned(), e.syslog_pending),
    ];
    family(
        &mut o,
        "egret_filter_events_queued",
        "gauge",
        "Events waiting in a shipping queue (in flight included).",
        &queued,
    );
    family(
        &mut o,
        "egret_filter_syslog_sent_total",
        "counter",
        "Events sent to the syslog collector.",
        &one(e.syslog_sent),
    );
    let decisions: Vec<(String, u64)> = e
        .decisions
        .nonzero()
        .map(|(a, c, r, n)| (format!("{{action=\"{a}\",component=\"{c}\",reason=\"{r}\"}}"), n))
        .collect();
    family(
        &mut o,
        "egret_filter_decisions_total",
        "counter",
        "Events by action, component and reason (reasons from a fixed list).",
        &decisions,
    );
    family(
        &mut o,
        "egret_filter_dashboard_foreign_listener_total",
        "counter",
        "Dashboard sends refused before any byte: the loopback listener's uid is not DASHBOARD_UID's.",
        &one(e.ship_foreign_listener),
    );
    family(
        &mut o,
        "egret_filter_events_shipped_total",
        "counter",
        "Events delivered to the dashboard.",
        &one(e.shipped),
    );
    family(
        &mut o,
        "egret_filter_alerts_sent_total",
        "counter",
        "Alerts delivered, summed over every target (NOTIFICATION_HOST, NOTIFICATION_URLS).",
        &one(e.alerts_sent),
    );
    family(
        &mut o,
        "egret_filter_alerts_failed_total",
        "counter",
        "Alerts a target refused or never answered, summed over every target.",
        &one(e.alerts_failed),
    );
    let reloads: Vec<(String, u64)> =
        s.reloads.iter().map(|(r, n)| (format!("{{result=\"{r}\"}}"), *n)).collect();
    family(&mut o, "egret_filter_reloads_total", "counter", "Policy reloads by result.", &reloads);
    family(
        &mut o,
        "egret_filter_ruleset_tampered_total",
        "counter",
        "Times the watchdog found the installed ruleset deleted or changed.",
        &one(s.tampered),
    );
    family(
        &mut o,
        "egret_filter_ruleset_reapplies_total",
        "counter",
        "Ruleset re-applies after tampering.",
        &one(s.reapplies),
    );
    if let Some(ok) = s.enforced {
        family(
            &mut o,
            "egret_filter_enforcement_intact",
            "gauge",
            "1 when the installed ruleset is the one egret installed.",
            &one(u64::from(ok)),
        );
    }
    o
}

/// The health endpoint's answer: `(status code, JSON body)`. Degraded
/// when the ruleset is not the one egret installed or a listener egret
/// needs is missing; `reason` names every problem.
pub fn health_reply(check: &Result<Drift, String>, listeners: &[String]) -> (u16, String) {
    let mut problems: Vec<String> = match check {
        Ok(Drift::Intact) => Vec::new(),
        Ok(d) => vec![d.describe()],
        Err(e) => vec![e.clone()],
    };
    problems.extend(listeners.iter().cloned());
    if problems.is_empty() {
        return (200, "{\"status\":\"ok\"}\n".into());
    }
    (503, format!("{{\"status\":\"degraded\",\"reason\":{}}}\n", json_str(&problems.join("; "))))
}

fn json_str(s: &str) -> String {
    serde_json::Value::String(s.to_owned()).to_string()
}

/// Where the live counters are.
pub struct Sources {
    pub daemon: Arc<DaemonCounters>,
    pub proxy: Option<(Arc<Registry>, Arc<AtomicUsize>)>,
    pub dns: Option<Arc<crate::dns::Stats>>,
    /// Refreshed by the control loop (the sink handle lives there).
    pub events: Arc<Mutex<Counts>>,
    /// Live drop counter of the emitter (newer than `events`).
    pub channel_dropped: Arc<AtomicU64>,
    /// `None` in relay mode: no ruleset to check.
    pub enforcement: Option<Arc<Enforcement>>,
    /// The listeners egret could not bind.
    pub listeners: Arc<crate::listen::Status>,
    /// Relay mode's counters.
    pub relay: Option<Arc<crate::relaymode::Stats>>,
    /// Checks run on each `/health` (relay mode's HTTP/SMTP health
    /// checks): one line per problem.
    pub probes: Option<Probes>,
}

/// Health checks run when `/health` is asked.
pub type Probes = Arc<dyn Fn() -> Vec<String> + Send + Sync>;

impl Sources {
    pub fn snapshot(&self, enforced: Option<bool>) -> Snapshot {
        let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let d = &self.daemon;
        let mut s = Snapshot {
            nflog_events: r(&d.nflog_events),
            events: *self.events.lock().unwrap_or_else(|p| p.into_inner()),
            reloads: vec![
                ("applied", r(&d.reloads_applied)),
                ("unchanged", r(&d.reloads_unchanged)),
                ("invalid", r(&d.reloads_invalid)),
                ("apply_failed", r(&d.reloads_failed)),
            ],
            tampered: r(&d.tampered),
            reapplies: r(&d.reapplies),
            enforced,
            ..Snapshot::default()
        };
        s.events.channel_dropped = s.events.channel_dropped.max(r(&self.channel_dropped));
        if let Some((reg, active)) = &self.proxy {
            let c = &reg.counters;
            for (i, comp) in ["http", "https"].into_iter().enumerate() {
                s.connections.push((comp, "allowed", r(&c.allowed[i])));
                s.connections.push((comp, "blocked", r(&c.blocked[i])));
                s.connections.push((comp, "revoked", r(&c.revoked[i])));
            }
            s.connections_open = Some(active.load(Ordering::Relaxed) as u64);
            s.bytes_up = Some(r(&c.bytes_up));
            s.bytes_down = Some(r(&c.bytes_down));
            s.accept_failures = Some(r(&c.accept_failed));
        }
        if let Some(st) = &self.relay {
            s.connections.push(("relay", "allowed", r(&st.allowed_tcp) + r(&st.allowed_udp)));
            s.connections.push(("relay", "blocked", r(&st.blocked)));
            s.connections.push(("relay", "limit", r(&st.limit)));
            s.connections_open = Some(r(&st.open));
            s.bytes_up = Some(r(&st.bytes_up));
            s.bytes_down = Some(r(&st.bytes_down));
            s.relay_waiting = Some(r(&st.waiting));
            s.relay_upstream_failed = Some(r(&st.upstream_failed));
        }
        if let Some(st) = &self.dns {
            s.dns = vec![
                ("forwarded", r(&st.forwarded)),
                ("blocked", r(&st.blocked)),
                ("rejected", r(&st.rejected)),
                ("servfail", r(&st.servfail)),
                ("dropped", r(&st.dropped)),
            ];
        }
        s
    }
}

/// The running endpoints.
pub struct MetricsServer {
    servers: Vec<(Arc<tiny_http::Server>, JoinHandle<()>)>,
    /// The unix socket served, if one could be bound.
    socket: Option<PathBuf>,
    /// METRICS_ADDR: binds (retrying while the port is held) and serves.
    tcp: Option<(Arc<TcpEndpoint>, JoinHandle<()>)>,
}

/// The METRICS_ADDR endpoint's server once bound, and the stop flag.
#[derive(Default)]
struct TcpEndpoint {
    server: std::sync::Mutex<Option<Arc<tiny_http::Server>>>,
    stop: std::sync::atomic::AtomicBool,
}

impl MetricsServer {
    /// The unix socket `/health` is on, if any.
    pub fn socket(&self) -> Option<&Path> {
        self.socket.as_deref()
    }

    pub fn stop(self) {
        if let Some((ep, thread)) = self.tcp {
            ep.stop.store(true, Ordering::SeqCst);
            if let Some(s) = ep.server.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                s.unblock();
            }
            let _ = thread.join();
        }
        for (server, thread) in self.servers {
            server.unblock();
            let _ = thread.join();
            // The last Arc goes here: tiny_http removes its socket file.
            drop(server);
        }
    }
}

/// Serves `/metrics` and `/health` on the unix socket and, with
/// `METRICS_ADDR`, on TCP from a socket with egret's listen mark (the
/// ruleset refuses connections to that port that reach anything else).
/// Not finding a usable socket directory is a warning (enforcement does
/// not depend on it); a `METRICS_ADDR` that cannot be bound (its port held
/// by another process) is a `/health` problem, retried every second.
pub fn start(
    cfg: &crate::config::Config,
    sources: Sources,
    listen_mark: Option<u32>,
) -> Result<MetricsServer, String> {
    let sources = Arc::new(sources);
    let mut out = MetricsServer { servers: Vec::new(), socket: None, tcp: None };
    let xdg = std::env::var("XDG_RUNTIME_DIR").ok();
    let uid = nix::unistd::geteuid().as_raw();
    let candidates = crate::health::socket_candidates(cfg.health_socket.as_deref(), xdg.as_deref(), uid);
    match bind_unix(&candidates) {
        Ok((listener, path)) => {
            let server = tiny_http::Server::from_listener(listener, None)
                .map_err(|e| format!("metrics: cannot serve on {}: {e}", path.display()))?;
            out.servers.push(spawn(server, &sources)?);
            let tcp = match cfg.metrics_addr {
                Some(a) => format!("and on http://{a} (METRICS_ADDR)"),
                None => "no TCP port (METRICS_ADDR is not set)".to_owned(),
            };
            log::info!(
                "health and metrics on unix socket {} (`egret health` reads it); {tcp}",
                path.display()
            );
            out.socket = Some(path);
        }
        Err(why) => log::warn!(
            "no unix socket for /health and /metrics ({why}); `egret health` without a URL will fail: set \
             HEALTH_SOCKET to a writable path (a read-only root needs a tmpfs on /run) or METRICS_ADDR"
        ),
    }
    if let Some(addr) = cfg.metrics_addr {
        let ep = Arc::new(TcpEndpoint::default());
        let (ep2, sources) = (ep.clone(), sources.clone());
        let thread = thread::Builder::new()
            .name("metrics-tcp".into())
            .spawn(move || serve_tcp(addr, listen_mark, &ep2, &sources))
            .map_err(|e| format!("metrics: cannot start the thread: {e}"))?;
        out.tcp = Some((ep, thread));
    }
    Ok(out)
}

/// Binds METRICS_ADDR (retrying while another process holds it, as a
/// missing listener), then serves it until stopped.
fn serve_tcp(addr: std::net::SocketAddr, mark: Option<u32>, ep: &TcpEndpoint, sources: &Sources) {
    let what = format!("metrics {addr} (METRICS_ADDR)");
    let listener = loop {
        if ep.stop.load(Ordering::SeqCst) {
            return;
        }
        match crate::listen::tcp(addr, 128, mark).and_then(|l| l.set_nonblocking(false).map(|()| l)) {
            Ok(l) => break l,
            Err(e) => sources.listeners.missing(&what, &e),
        }
        thread::sleep(crate::listen::RETRY);
    };
    let server = match tiny_http::Server::from_listener(listener, None) {
        Ok(s) => Arc::new(s),
        Err(e) => {
            log::error!("metrics: cannot serve on {addr}: {e}");
            return;
        }
    };
    sources.listeners.bound(&what);
    log::info!("metrics and health on http://{addr}/metrics and /health");
    *ep.server.lock().unwrap_or_else(|p| p.into_inner()) = Some(server.clone());
    if ep.stop.load(Ordering::SeqCst) {
        return;
    }
    for req in server.incoming_requests() {
        answer(req, sources);
    }
}

/// One thread per endpoint (a scrape is cheap: atomics and one netlink
/// read-back).
fn spawn(
    server: tiny_http::Server,
    sources: &Arc<Sources>,
) -> Result<(Arc<tiny_http::Server>, JoinHandle<()>), String> {
    let server = Arc::new(server);
    let (srv, sources) = (server.clone(), sources.clone());
    let thread = thread::Builder::new()
        .name("metrics".into())
        .spawn(move || {
            for req in srv.incoming_requests() {
                answer(req, &sources);
            }
        })
        .map_err(|e| format!("metrics: cannot start the thread: {e}"))?;
    Ok((server, thread))
}

/// The first candidate socket that can be bound: its directory is made
/// (0700) or must be ours and closed to others; a socket file another
/// process answers on is left alone (another egret serves it), a stale
/// one (nobody answers) is replaced. The error lists why each failed.
pub fn bind_unix(candidates: &[PathBuf]) -> Result<(UnixListener, PathBuf), String> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    let mut why = Vec::new();
    for path in candidates {
        let Some(dir) = path.parent() else { continue };
        let attempt = (|| -> Result<UnixListener, String> {
            match std::fs::symlink_metadata(dir) {
                Ok(m) => {
                    let mine = m.uid() == nix::unistd::geteuid().as_raw();
                    if !m.is_dir() || !mine || m.mode() & 0o022 != 0 {
                        return Err("exists but is not a directory of ours closed to others".into());
                    }
                }
                Err(_) => std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)
                    .map_err(|e| format!("cannot create it: {e}"))?,
            }
            if path.exists() {
                if UnixStream::connect(path).is_ok() {
                    return Err(format!("{} is in use by another process", path.display()));
                }
                std::fs::remove_file(path).map_err(|e| format!("cannot remove a stale socket: {e}"))?;
            }
            let l = UnixListener::bind(path).map_err(|e| e.to_string())?;
            let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            Ok(l)
        })();
        match attempt {
            Ok(l) => return Ok((l, path.clone())),
            Err(e) => why.push(format!("{}: {e}", dir.display())),
        }
    }
    Err(why.join("; "))
}

fn answer(req: tiny_http::Request, sources: &Sources) {
    use tiny_http::{Header, Method, Response};
    let path = req.url().split('?').next().unwrap_or("").to_owned();
    let header = |v: &str| Header::from_bytes("Content-Type", v).ok();
    let (code, body, ctype) = match (req.method(), path.as_str()) {
        (Method::Get, "/metrics") => {
            let enforced = sources.enforcement.as_ref().and_then(|e| e.check().ok()).map(|d| d.is_intact());
            (200, render(&sources.snapshot(enforced)), "text/plain; version=0.0.4; charset=utf-8")
        }
        (Method::Get, "/health") => {
            // Relay mode has no ruleset: nothing to drift.
            let check = sources.enforcement.as_ref().map_or(Ok(Drift::Intact), |e| e.check());
            let mut problems = sources.listeners.problems();
            if let Some(p) = &sources.probes {
                problems.extend(p());
            }
            let (code, body) = health_reply(&check, &problems);
            (code, body, "application/json")
        }
        (Method::Get, _) => (404, "not found\n".to_owned(), "text/plain; charset=utf-8"),
        _ => (405, "method not allowed\n".to_owned(), "text/plain; charset=utf-8"),
    };
    let mut resp = Response::from_string(body).with_status_code(code);
    if let Some(h) = header(ctype) {
        resp = resp.with_header(h);
    }
    // A client that went away is not our problem.
    let _ = req.respond(resp);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_has_bounded_labels_and_every_family() {
        let mut decisions = crate::events::tally::DecisionCounts::default();
        let t = std::time::UNIX_EPOCH;
        use crate::events::{Action, Component, Event};
        decisions.add(&Event::new(Component::Https, Action::Blocked, "h", t).with_reason("ip-mismatch"));
        let s = Snapshot {
            connections: vec![("http", "allowed", 3), ("https", "revoked", 1)],
            connections_open: Some(2),
            bytes_up: Some(10),
            bytes_down: Some(2000),
            dns: vec![("forwarded", 5), ("blocked", 1)],
            nflog_events: 7,
            events: Counts {
                events: 11,
                channel_dropped: 1,
                ship_dropped: 2,
                ship_pending: 4,
                syslog_dropped: 3,
                syslog_pending: 5,
                syslog_sent: 6,
                decisions,
                ..Counts::default()
            },
            reloads: vec![("applied", 1), ("invalid", 2)],
            tampered: 1,
            reapplies: 1,
            enforced: Some(true),
            relay_waiting: Some(3),
            relay_upstream_failed: Some(4),
            accept_failures: Some(5),
        };
        let text = render(&s);
        for line in [
            "egret_filter_connections_total{component=\"http\",verdict=\"allowed\"} 3",
            "egret_filter_connections_total{component=\"https\",verdict=\"revoked\"} 1",
            "egret_filter_connections_open 2",
            "egret_filter_relayed_bytes_total{direction=\"down\"} 2000",
            "egret_filter_dns_queries_total{verdict=\"blocked\"} 1",
            "egret_filter_nflog_events_total 7",
            "egret_filter_events_total 11",
            "egret_filter_events_dropped_total{stage=\"channel\"} 1",
            "egret_filter_events_dropped_total{stage=\"dashboard\"} 2",
            "egret_filter_events_dropped_total{stage=\"syslog\"} 3",
            "egret_filter_events_queued{stage=\"dashboard\"} 4",
            "egret_filter_events_queued{stage=\"syslog\"} 5",
            "egret_filter_syslog_sent_total 6",
            "egret_filter_decisions_total{action=\"blocked\",component=\"https\",reason=\"ip-mismatch\"} 1",
            "# TYPE egret_filter_events_queued gauge",
            "egret_filter_reloads_total{result=\"invalid\"} 2",
            "egret_filter_ruleset_tampered_total 1",
            "egret_filter_ruleset_reapplies_total 1",
            "egret_filter_enforcement_intact 1",
            "# TYPE egret_filter_connections_open gauge",
            "egret_filter_relay_waiting 3",
            "egret_filter_relay_upstream_failures_total 4",
            "egret_filter_accept_failures_total 5",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line:?} in\n{text}");
        }
        // DNS mode: no proxy families at all, and vice versa.
        let dns_only = render(&Snapshot { dns: vec![("forwarded", 1)], ..Snapshot::default() });
        assert!(!dns_only.contains("connections"), "{dns_only}");
        assert!(!dns_only.contains("enforcement_intact"), "not checked, not reported");
    }

    #[test]
    fn health_replies() {
        assert_eq!(health_reply(&Ok(Drift::Intact), &[]), (200, "{\"status\":\"ok\"}\n".into()));
        let (code, body) = health_reply(&Ok(Drift::Missing), &[]);
        assert_eq!(code, 503);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["status"], "degraded");
        assert!(v["reason"].as_str().unwrap().contains("deleted"));
        let (code, body) = health_reply(&Err("reading the ruleset back: \"x\"".into()), &[]);
        assert_eq!(code, 503);
        assert!(serde_json::from_str::<serde_json::Value>(&body).is_ok());
        let held = "cannot listen on http proxy 127.0.0.1:8080: Address in use".to_owned();
        let (code, body) = health_reply(&Ok(Drift::Intact), std::slice::from_ref(&held));
        assert_eq!(code, 503, "a missing listener is not healthy");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!((v["status"].as_str(), v["reason"].as_str()), (Some("degraded"), Some(held.as_str())));
    }
}
