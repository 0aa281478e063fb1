//! Learning: the names and addresses the workloads needed, from decision
//! events, written out as a suggested `policy.yaml` ("run it in audit mode
//! for a day, then enforce"). `egret learn --from LOG_FILE` feeds it a
//! decision log.
//!
//! Pure: events (JSON values) in, YAML text out; no clock, no I/O.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::policy::{normalize, Cidr};

/// What the workloads needed so far.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Learner {
    names: BTreeSet<String>,
    /// `(protocol, address, port)`: `tcp`/`udp`, or `None` for a protocol
    /// that has no ports (then the entry is the bare address).
    flows: BTreeSet<(Option<&'static str>, IpAddr, Option<u16>)>,
    /// Decisions read, and those that taught something.
    pub seen: u64,
    pub used: u64,
}

impl Learner {
    /// Takes one decision event. Only what the workloads *did*: allowed
    /// traffic and audit mode's would-be blocks; blocked traffic is not
    /// something they got to need. Returns whether the suggestion changed.
    pub fn observe(&mut self, ev: &serde_json::Value) -> bool {
        self.seen += 1;
        if !matches!(ev["action"].as_str(), Some("ALLOWED" | "AUDIT")) {
            return false;
        }
        let changed = if let Some(name) = event_name(ev) {
            match normalize(name) {
                Ok(n) => self.names.insert(n),
                // An IP literal as Host or SNI: the address it led to.
                Err(_) => self.learn_flow(ev),
            }
        } else {
            self.learn_flow(ev)
        };
        self.used += u64::from(changed);
        changed
    }

    fn learn_flow(&mut self, ev: &serde_json::Value) -> bool {
        let Some(ip) = ev["destination_ip"].as_str().and_then(|s| s.parse::<IpAddr>().ok()) else {
            return false;
        };
        // Loopback and the host's own addresses are never filtered.
        if ip.is_loopback() || ip.is_unspecified() {
            return false;
        }
        let proto = match ev["protocol"].as_str().map(str::to_ascii_uppercase).as_deref() {
            Some("TCP") => Some("tcp"),
            Some("UDP") => Some("udp"),
            _ => None,
        };
        let port = proto.and(ev["destination_port"].as_u64()).and_then(|p| u16::try_from(p).ok());
        self.flows.insert((proto, ip, port))
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty() && self.flows.is_empty()
    }

    /// The suggested policy. `group`: two or more names under one parent
    /// (of at least two labels) become `*.parent` (`LEARNING_GROUP`).
    pub fn render(&self, group: bool) -> String {
        let mut ips: Vec<String> = Vec::new();
        for (proto, ip, port) in &self.flows {
            let addr = match ip {
                IpAddr::V6(_) if port.is_some() => format!("[{ip}]"),
                _ => ip.to_string(),
            };
            ips.push(match (proto, port) {
                (Some(p), Some(port)) => format!("{p}/{addr}:{port}"),
                _ => Cidr { addr: *ip, prefix: if ip.is_ipv4() { 32 } else { 128 } }.to_string(),
            });
        }
        ips.dedup();
        let names = if group { grouped(&self.names) } else { self.names.iter().cloned().collect() };
        let mut out = format!(
            "# suggested by egret from {} decisions ({} taught something): review before enforcing\nallowlist:\n",
            self.seen, self.used
        );
        out.push_str(if ips.is_empty() { "  ips: []\n" } else { "  ips:\n" });
        for i in &ips {
            out.push_str(&format!("    - \"{i}\"\n"));
        }
        out.push_str(if names.is_empty() { "  domains: []\n" } else { "  domains:\n" });
        for n in &names {
            out.push_str(&format!("    - \"{n}\"\n"));
        }
        out
    }
}

/// The name an event's decision was about: `host` (the proxies'), else the
/// SNI, the Host header or the DNS question.
fn event_name(ev: &serde_json::Value) -> Option<&str> {
    ["host", "https", "http_host", "qname"].iter().find_map(|k| ev[*k].as_str()).filter(|s| !s.is_empty())
}

/// Names with a sibling under the same parent become `*.parent`; the
/// parent needs two labels, so nothing groups into `*.com`.
fn grouped(names: &BTreeSet<String>) -> Vec<String> {
    let parent = |n: &str| n.split_once('.').map(|(_, p)| p.to_owned()).filter(|p| p.contains('.'));
    let mut count = std::collections::BTreeMap::<String, usize>::new();
    for n in names {
        if let Some(p) = parent(n) {
            *count.entry(p).or_default() += 1;
        }
    }
    let mut out = BTreeSet::new();
    for n in names {
        match parent(n) {
            Some(p) if count[&p] >= 2 => out.insert(format!("*.{p}")),
            _ => out.insert(n.clone()),
        };
    }
    out.into_iter().collect()
}

/// `egret learn --from`: the suggestion from a decision log's lines (JSON
/// events; other lines are counted and skipped).
pub fn from_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> (Learner, u64) {
    let mut l = Learner::default();
    let mut skipped = 0;
    for line in lines {
        match serde_json::from_str::<serde_json::Value>(line.trim()) {
            Ok(v) if v.is_object() => {
                l.observe(&v);
            }
            _ if line.trim().is_empty() => {}
            _ => skipped += 1,
        }
    }
    (l, skipped)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn what_was_needed_becomes_a_valid_policy() {
        let events = [
            json!({"action": "ALLOWED", "msg": "https.allowed", "host": "GitHub.com", "destination_ip": "140.82.1.1", "destination_port": 443, "protocol": "TCP"}),
            json!({"action": "AUDIT", "msg": "http.audit", "http_host": "a.cdn.example.org"}),
            json!({"action": "AUDIT", "msg": "dns.audit", "qname": "b.cdn.example.org."}),
            json!({"action": "AUDIT", "msg": "nflog.event", "destination_ip": "10.0.0.5", "destination_port": 5432, "protocol": "TCP"}),
            json!({"action": "AUDIT", "msg": "nflog.event", "destination_ip": "2001:db8::7", "destination_port": 53, "protocol": "UDP"}),
            json!({"action": "AUDIT", "msg": "nflog.event", "destination_ip": "192.0.2.9", "protocol": "47"}),
            json!({"action": "AUDIT", "msg": "https.audit", "https": "10.1.1.1", "destination_ip": "10.1.1.1", "destination_port": 443, "protocol": "TCP"}),
            // Not needed by anyone: blocked, loopback, nonsense.
            json!({"action": "BLOCKED", "msg": "http.blocked", "http_host": "evil.example"}),
            json!({"action": "AUDIT", "msg": "nflog.event", "destination_ip": "127.0.0.1", "destination_port": 9, "protocol": "TCP"}),
            json!({"action": "AUDIT", "msg": "nflog.event"}),
            json!({"action": "AUDIT", "msg": "http.audit", "http_host": "exa mple"}),
        ];
        let mut l = Learner::default();
        let taught: Vec<bool> = events.iter().map(|e| l.observe(e)).collect();
        assert_eq!(taught, [true, true, true, true, true, true, true, false, false, false, false]);
        assert!(!l.observe(&events[0]), "the same name twice teaches nothing");
        let text = l.render(false);
        let want = "allowlist:\n  ips:\n    - \"192.0.2.9/32\"\n    - \"tcp/10.0.0.5:5432\"\n    - \"tcp/10.1.1.1:443\"\n    - \"udp/[2001:db8::7]:53\"\n  domains:\n    - \"a.cdn.example.org\"\n    - \"b.cdn.example.org\"\n    - \"github.com\"\n";
        assert!(text.ends_with(want), "{text}");
        assert!(text.starts_with("# suggested by egret from 12 decisions (7 taught something)"), "{text}");
        let raw = crate::policy::parse_yaml(&text, "learned.yaml").expect("yaml");
        let p = crate::policy::compile_raw(raw, "learned.yaml", &Default::default()).expect("a valid policy");
        assert!(p.allows_name("github.com") && !p.allows_name("evil.example"));
        let grouped = l.render(true);
        assert!(grouped.contains("- \"*.cdn.example.org\"\n") && !grouped.contains("a.cdn"), "{grouped}");
        assert!(grouped.contains("- \"github.com\""), "a single name stays itself: {grouped}");
    }

    #[test]
    fn a_log_with_other_lines_is_read_and_they_are_counted() {
        let log = "{\"action\":\"AUDIT\",\"qname\":\"x.example\"}\nnot json\n\n[1,2]\n{\"action\":\"ALLOWED\",\"host\":\"y.example\"}\n";
        let (l, skipped) = from_lines(log.lines());
        assert_eq!(skipped, 2);
        assert_eq!((l.seen, l.used), (2, 2));
        assert!(l.render(false).contains("- \"x.example\"\n    - \"y.example\"\n"));
        assert!(Learner::default().render(false).ends_with("allowlist:\n  ips: []\n  domains: []\n"));
    }
}
