//! Alerts for BLOCKED events: the pure rules ([`AlertRules`]: which
//! events alert, deduplicated per source → destination and component for
//! `NOTIFICATION_BACKOFF_SECONDS`, minus `NOTIFICATION_IGNORE_DOMAINS`)
//! and, per target (`NOTIFICATION_HOST`'s Gotify and every
//! `NOTIFICATION_URLS` entry, see [`super::notify`]), one bounded queue
//! and one worker thread that POSTs them ([`Notifier`]), so a storm of
//! denials never becomes a storm of threads or requests, and one slow
//! target never holds up another.
//!
//! The rules are pure (the clock is passed in); the worker is the shell.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::net::{self, ClientOptions, NetError};
pub use super::notify::{form_encode, Alert};
use super::notify::{Request, Target};
use super::{Action, Event, Throttle};
use crate::policy::{normalize, NameError, NameSet, Pattern};

/// Gotify's priority for a blocked connection (g0efilter's value).
pub const PRIORITY: u8 = 8;
/// Dedupe entries kept at most; past this, expired ones are pruned and,
/// if none expired, new keys are suppressed rather than the memory grown.
pub const MAX_KEYS: usize = 4096;
/// Alerts waiting for one target's worker; more are dropped and counted.
pub const QUEUE: usize = 64;

#[derive(Debug)]
#[non_exhaustive]
pub enum GotifyError {
    /// An `NOTIFICATION_IGNORE_DOMAINS` entry is not a domain pattern.
    IgnorePattern {
        entry: String,
        source: NameError,
    },
    Client(NetError),
    Spawn(std::io::Error),
}

impl fmt::Display for GotifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GotifyError::IgnorePattern { entry, source } => {
                write!(f, "NOTIFICATION_IGNORE_DOMAINS entry {entry:?}: {source}")
            }
            GotifyError::Client(e) => write!(f, "alerts client: {e}"),
            GotifyError::Spawn(e) => write!(f, "alerts: cannot start worker thread: {e}"),
        }
    }
}

impl std::error::Error for GotifyError {}

/// Why an event did not alert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Only BLOCKED events alert.
    NotBlocked,
    /// The name matched `NOTIFICATION_IGNORE_DOMAINS`.
    Ignored,
    /// The same source → destination + component alerted within the backoff.
    Duplicate,
    /// Too many distinct keys inside one backoff window.
    TooManyKeys,
}

/// The decision for one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Send(Alert),
    Skip(Skip),
}

/// Which events alert. Pure: `now` is passed in.
#[derive(Debug)]
pub struct AlertRules {
    backoff: Duration,
    ignore: NameSet,
    /// Dedupe key → when it last alerted.
    last: HashMap<String, Instant>,
}

impl AlertRules {
    pub fn new(backoff: Duration, ignore_domains: &[String]) -> Result<AlertRules, GotifyError> {
        let mut ignore = NameSet::default();
        for entry in ignore_domains {
            let p = Pattern::parse(entry)
                .map_err(|source| GotifyError::IgnorePattern { entry: entry.clone(), source })?;
            ignore.insert(p);
        }
        Ok(AlertRules { backoff, ignore, last: HashMap::new() })
    }

    pub fn consider(&mut self, ev: &Event, now: Instant) -> Verdict {
        if ev.action != Action::Blocked {
            return Verdict::Skip(Skip::NotBlocked);
        }
        if let Some(name) = event_name(ev).and_then(|n| normalize(n).ok()) {
            if self.ignore.contains(&name) {
                return Verdict::Skip(Skip::Ignored);
            }
        }
        let key = dedupe_key(ev);
        if let Some(&at) = self.last.get(&key) {
            if now.saturating_duration_since(at) < self.backoff {
                return Verdict::Skip(Skip::Duplicate);
            }
        }
        if self.last.len() >= MAX_KEYS && !self.last.contains_key(&key) {
            let backoff = self.backoff;
            self.last.retain(|_, at| now.saturating_duration_since(*at) < backoff);
            if self.last.len() >= MAX_KEYS {
                return Verdict::Skip(Skip::TooManyKeys);
            }
        }
        self.last.insert(key, now);
        Verdict::Send(alert_for(ev))
    }
}

/// The name an event is about: whatever carried it.
fn event_name(ev: &Event) -> Option<&str> {
    [&ev.host, &ev.https, &ev.http_host, &ev.qname]
        .into_iter()
        .find_map(|x| x.as_deref())
        .filter(|s| !s.is_empty())
}

/// `component|source-ip->destination`, where the destination is the name
/// when known (one alert per blocked name, whatever address it used) and
/// otherwise `ip:port`. The source port is left out: every retry of a
/// client uses a new one.
pub fn dedupe_key(ev: &Event) -> String {
    let src = ev.source_ip.as_deref().or(ev.src.as_deref()).unwrap_or("?");
    let dst = event_name(ev).or(ev.dst.as_deref()).or(ev.destination_ip.as_deref()).unwrap_or("?");
    format!("{}|{src}->{dst}", ev.component.as_str())
}

/// Title and message in g0efilter's words.
pub fn alert_for(ev: &Event) -> Alert {
    let component = ev.component.as_str();
    let src = ev.src.as_deref().or(ev.source_ip.as_deref()).unwrap_or("unknown");
    let dst_addr = ev.dst.as_deref().or(ev.destination_ip.as_deref());
    let destination = match (event_name(ev), dst_addr) {
        (Some(name), Some(addr)) => format!("{name} ({addr})"),
        (Some(name), None) => name.to_owned(),
        (None, Some(addr)) => addr.to_owned(),
        (None, None) => "unknown".to_owned(),
    };
    let reason = ev.reason.as_deref().unwrap_or("unknown");
    Alert {
        title: format!("{} - {} Connection Blocked", ev.hostname, component.to_ascii_uppercase()),
        message: format!("Blocked {component} connection from {src} to {destination}. Reason: {reason}"),
        priority: PRIORITY,
    }
}

/// Counters of one alert target.
#[derive(Debug, Default)]
pub struct AlertStats {
    pub sent: AtomicU64,
    pub failed: AtomicU64,
    /// Alerts dropped because this target's worker was behind.
    pub dropped: AtomicU64,
}

/// One target's bounded queue and counters.
struct Lane {
    tx: SyncSender<Alert>,
    stats: Arc<AlertStats>,
}

/// The sink's handle: applies the rules once and hands each alert to
/// every target's own queue without blocking, so a slow or dead target
/// never delays another.
pub struct Notifier {
    rules: AlertRules,
    lanes: Vec<Lane>,
}

impl Notifier {
    /// Starts one worker thread per target (the legacy `NOTIFICATION_HOST`
    /// is [`Target::gotify_host`]).
    pub fn spawn(
        targets: &[Target],
        rules: AlertRules,
        client: &ClientOptions,
    ) -> Result<(Notifier, Vec<thread::JoinHandle<()>>), GotifyError> {
        let agent = net::agent(client).map_err(GotifyError::Client)?;
        let (mut lanes, mut handles) = (Vec::new(), Vec::new());
        for (i, target) in targets.iter().enumerate() {
            let (tx, rx) = mpsc::sync_channel(QUEUE);
            let stats = Arc::new(AlertStats::default());
            let worker = Worker { agent: agent.clone(), target: target.clone(), stats: stats.clone() };
            let handle = thread::Builder::new()
                .name(format!("alert-{i}-{}", target.service()))
                .spawn(move || worker.run(rx))
                .map_err(GotifyError::Spawn)?;
            lanes.push(Lane { tx, stats });
            handles.push(handle);
        }
        Ok((Notifier { rules, lanes }, handles))
    }

    /// Considers one event; never blocks.
    pub fn offer(&mut self, ev: &Event, now: Instant) {
        if let Verdict::Send(alert) = self.rules.consider(ev, now) {
            for lane in &self.lanes {
                match lane.tx.try_send(alert.clone()) {
                    Ok(()) => {}
                    Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                        lane.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    /// Every target's counters, in `NOTIFICATION_URLS` order (the legacy
    /// Gotify first).
    pub fn stats(&self) -> Vec<Arc<AlertStats>> {
        self.lanes.iter().map(|l| l.stats.clone()).collect()
    }
}

struct Worker {
    agent: ureq::Agent,
    target: Target,
    stats: Arc<AlertStats>,
}

impl Worker {
    /// Sends alerts one at a time until the [`Notifier`] is dropped.
    fn run(self, rx: Receiver<Alert>) {
        let mut warn = Throttle::new(Duration::from_secs(60));
        for alert in rx {
            match self.post(&self.target.request(&alert)) {
                Ok(()) => {
                    self.stats.sent.fetch_add(1, Ordering::Relaxed);
                }
                Err(why) => {
                    self.stats.failed.fetch_add(1, Ordering::Relaxed);
                    if let Some(suppressed) = warn.ready(Instant::now()) {
                        log::warn!(
                            "alerts: not delivered to {}: {} ({suppressed} earlier failures not shown)",
                            self.target,
                            self.target.scrub(&why)
                        );
                    }
                }
            }
        }
    }

    fn post(&self, req: &Request) -> Result<(), String> {
        let mut call = self.agent.post(&req.url);
        for (name, value) in &req.headers {
            call = call.header(*name, value);
        }
        let resp = call.send(&req.body[..]).map_err(|e| e.to_string())?;
        let status = resp.status().as_u16();
        // Read to the end so the connection can be reused.
        let mut resp = resp;
        let body = resp.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
        if (200..300).contains(&status) {
            Ok(())
        } else {
            let body: String = body.trim().chars().take(200).collect();
            Err(format!("HTTP {status}: {body}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Component;
    use std::time::UNIX_EPOCH;

    fn blocked(component: Component, src: &str, dst: &str, name: Option<&str>) -> Event {
        let mut ev = Event::new(component, Action::Blocked, "pod-7", UNIX_EPOCH)
            .with_flow(src.parse().unwrap(), dst.parse().unwrap(), "TCP")
            .with_reason("domain-not-allowed");
        match component {
            Component::Dns => ev.qname = name.map(str::to_owned),
            _ => ev.https = name.map(str::to_owned),
        }
        ev
    }

    #[test]
    fn message_text_matches_g0efilter() {
        let table: &[(Event, &str, &str)] = &[
            (
                blocked(Component::Https, "10.0.0.5:40000", "1.2.3.4:443", Some("evil.example")),
                "pod-7 - HTTPS Connection Blocked",
                "Blocked https connection from 10.0.0.5:40000 to evil.example (1.2.3.4:443). Reason: domain-not-allowed",
            ),
            (
                blocked(Component::Nflog, "10.0.0.5:40000", "[2001:db8::1]:22", None),
                "pod-7 - NFLOG Connection Blocked",
                "Blocked nflog connection from 10.0.0.5:40000 to [2001:db8::1]:22. Reason: domain-not-allowed",
            ),
            (
                {
                    let mut e = Event::new(Component::Dns, Action::Blocked, "h", UNIX_EPOCH);
                    e.qname = Some("x.test".into());
                    e
                },
                "h - DNS Connection Blocked",
                "Blocked dns connection from unknown to x.test. Reason: unknown",
            ),
        ];
        for (ev, title, message) in table {
            let a = alert_for(ev);
            assert_eq!((a.title.as_str(), a.message.as_str(), a.priority), (*title, *message, 8));
        }
    }

    #[test]
    fn dedupe_per_source_destination_and_component_within_backoff() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = AlertRules::new(60 * s, &[]).unwrap();
        let ev = |src: &str, dst: &str, name: Option<&str>| blocked(Component::Https, src, dst, name);
        let sends = |v: Verdict| matches!(v, Verdict::Send(_));
        // (event, seconds after t0, alerts?)
        let table: Vec<(Event, u32, bool)> = vec![
            (ev("10.0.0.5:1000", "1.2.3.4:443", Some("a.test")), 0, true),
            (ev("10.0.0.5:1001", "1.2.3.4:443", Some("a.test")), 1, false), // new source port: same key
            (ev("10.0.0.5:1002", "5.6.7.8:443", Some("a.test")), 2, false), // same name elsewhere
            (ev("10.0.0.6:1000", "1.2.3.4:443", Some("a.test")), 3, true),  // other source
            (ev("10.0.0.5:1000", "1.2.3.4:443", Some("b.test")), 4, true),  // other name
            (ev("10.0.0.5:1000", "1.2.3.4:22", None), 5, true),             // by address
            (ev("10.0.0.5:1000", "1.2.3.4:23", None), 6, true),             // other port
            (ev("10.0.0.5:1000", "1.2.3.4:443", Some("a.test")), 59, false),
            (ev("10.0.0.5:1000", "1.2.3.4:443", Some("a.test")), 60, true), // backoff over
            (ev("10.0.0.5:1000", "1.2.3.4:443", Some("a.test")), 61, false),
        ];
        for (i, (e, at, want)) in table.into_iter().enumerate() {
            assert_eq!(sends(r.consider(&e, t0 + at * s)), want, "row {i}");
        }
        // Same flow, other component: its own key.
        let dns = blocked(Component::Dns, "10.0.0.5:1000", "1.2.3.4:443", Some("a.test"));
        assert!(sends(r.consider(&dns, t0 + 61 * s)));
        // Allowed events never alert.
        let mut ok = ev("10.0.0.9:1", "1.1.1.1:443", Some("z.test"));
        ok.action = Action::Allowed;
        assert_eq!(r.consider(&ok, t0), Verdict::Skip(Skip::NotBlocked));
    }

    #[test]
    fn ignore_domains_use_the_policy_wildcards() {
        let t0 = Instant::now();
        let mut r = AlertRules::new(Duration::ZERO, &["*.quiet.test".into(), "exact.test".into()]).unwrap();
        let table: &[(Option<&str>, bool)] = &[
            (Some("a.quiet.test"), false),
            (Some("deep.a.QUIET.test."), false),
            (Some("quiet.test"), true), // `*.` does not match the apex
            (Some("exact.test"), false),
            (Some("sub.exact.test"), true),
            (None, true),
        ];
        for (name, alerts) in table {
            let e = blocked(Component::Https, "10.0.0.5:1", "1.2.3.4:443", *name);
            let v = r.consider(&e, t0);
            assert_eq!(matches!(v, Verdict::Send(_)), *alerts, "{name:?}: {v:?}");
            if !alerts {
                assert_eq!(v, Verdict::Skip(Skip::Ignored));
            }
        }
        let e = AlertRules::new(Duration::ZERO, &["a..b".into()]).unwrap_err();
        assert!(e.to_string().starts_with("NOTIFICATION_IGNORE_DOMAINS entry \"a..b\": "), "{e}");
    }

    #[test]
    fn key_table_is_bounded() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = AlertRules::new(10 * s, &[]).unwrap();
        let ev = |i: usize| {
            let mut e = Event::new(Component::Nflog, Action::Blocked, "h", UNIX_EPOCH);
            e.dst = Some(format!("10.1.{}.{}:80", i / 256, i % 256));
            e
        };
        for i in 0..MAX_KEYS {
            assert!(matches!(r.consider(&ev(i), t0), Verdict::Send(_)));
        }
        assert_eq!(r.consider(&ev(MAX_KEYS), t0 + s), Verdict::Skip(Skip::TooManyKeys));
        // Once the window has passed, old keys are pruned and new ones alert.
        assert!(matches!(r.consider(&ev(MAX_KEYS), t0 + 10 * s), Verdict::Send(_)));
        assert!(r.last.len() <= MAX_KEYS);
    }

    #[test]
    fn form_encoding() {
        let table = [
            ("a b", "a+b"),
            ("x=1&y", "x%3D1%26y"),
            ("[::1]:53 (ok).", "%5B%3A%3A1%5D%3A53+%28ok%29."),
            ("é", "%C3%A9"),
            ("A-z_0.9*", "A-z_0.9*"),
        ];
        for (raw, want) in table {
            assert_eq!(form_encode(raw), want);
        }
        let a = Alert { title: "t t".into(), message: "m&m".into(), priority: 8 };
        assert_eq!(a.form(), "title=t+t&message=m%26m&priority=8");
    }
}
