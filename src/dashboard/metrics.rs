//! Dashboard counters and their Prometheus text rendering. Label values
//! come from a closed set (anything else is `other`), so a producer
//! cannot blow up the number of series.

use crate::metrics::family;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// A closed label value for an event's action.
pub fn action_label(a: &str) -> &'static str {
    match a.to_ascii_uppercase().as_str() {
        "ALLOWED" => "ALLOWED",
        "BLOCKED" => "BLOCKED",
        "REDIRECTED" => "REDIRECTED",
        "AUDIT" => "AUDIT",
        "" => "none",
        _ => "other",
    }
}

/// A closed label value for an event's component.
pub fn component_label(c: &str) -> &'static str {
    match c.to_ascii_lowercase().as_str() {
        "https" => "https",
        "http" => "http",
        "dns" => "dns",
        "nflog" => "nflog",
        "relay" => "relay",
        "" => "none",
        _ => "other",
    }
}

type Key = (&'static str, &'static str, &'static str);

#[derive(Debug, Default)]
pub struct Metrics {
    /// (outcome: received|stored|dropped, action, component) → count.
    events: Mutex<BTreeMap<Key, u64>>,
    pub evicted: AtomicU64,
    pub sse_clients: AtomicU64,
    pub sse_connections: AtomicU64,
    pub sse_refused: AtomicU64,
    /// Entries a slow stream client never got (evicted before it read them).
    pub sse_missed: AtomicU64,
    pub rate_limited: AtomicU64,
    /// Requests answered 4xx, by status code.
    rejected: Mutex<BTreeMap<u16, u64>>,
    pub cleared: AtomicU64,
    /// Requests that declared a body far over the limit (connection parked).
    pub huge_bodies: AtomicU64,
    /// Ingest batches the database refused (full disk, I/O errors).
    pub storage_errors: AtomicU64,
}

impl Metrics {
    pub fn event(&self, outcome: &'static str, action: &str, component: &str) {
        let key = (outcome, action_label(action), component_label(component));
        if let Ok(mut m) = self.events.lock() {
            *m.entry(key).or_default() += 1;
        }
    }

    pub fn rejected(&self, code: u16) {
        if let Ok(mut m) = self.rejected.lock() {
            *m.entry(code).or_default() += 1;
        }
    }

    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Relaxed);
    }

    /// Prometheus text exposition format 0.0.4.
    pub fn render(&self, buffered: usize, last_id: u64) -> String {
        let mut out = String::with_capacity(2048);
        let events = self.events.lock().map(|m| m.clone()).unwrap_or_default();
        for (outcome, help) in [
            ("received", "Events posted to the dashboard."),
            ("stored", "Events stored (ALLOWED, BLOCKED and AUDIT with a msg)."),
            ("dropped", "Events accepted but not stored (control messages, no msg, other actions)."),
        ] {
            let samples: Vec<(String, u64)> = events
                .iter()
                .filter(|((o, _, _), _)| *o == outcome)
                .map(|((_, a, c), n)| (format!("{{action=\"{a}\",component=\"{c}\"}}"), *n))
                .collect();
            family(&mut out, &format!("egret_dashboard_events_{outcome}_total"), "counter", help, &samples);
        }
        let load = |c: &AtomicU64| c.load(Relaxed);
        let simple: [(&str, &str, &str, u64); 11] = [
            (
                "egret_dashboard_storage_errors_total",
                "counter",
                "Ingest batches the database refused (nothing of them stored).",
                load(&self.storage_errors),
            ),
            (
                "egret_dashboard_huge_bodies_total",
                "counter",
                "Requests declaring a body far over 1 MiB (refused, connection parked).",
                load(&self.huge_bodies),
            ),
            (
                "egret_dashboard_events_evicted_total",
                "counter",
                "Entries removed by the retention limits.",
                load(&self.evicted),
            ),
            ("egret_dashboard_clears_total", "counter", "DELETE /api/v1/logs calls.", load(&self.cleared)),
            ("egret_dashboard_buffer_entries", "gauge", "Entries stored now.", buffered as u64),
            ("egret_dashboard_last_id", "gauge", "Id of the newest entry (ids never reset).", last_id),
            ("egret_dashboard_sse_clients", "gauge", "Live event streams now.", load(&self.sse_clients)),
            (
                "egret_dashboard_sse_connections_total",
                "counter",
                "Event streams opened.",
                load(&self.sse_connections),
            ),
            (
                "egret_dashboard_sse_refused_total",
                "counter",
                "Event streams refused at the concurrency cap.",
                load(&self.sse_refused),
            ),
            (
                "egret_dashboard_sse_missed_total",
                "counter",
                "Entries slow stream clients missed (evicted first).",
                load(&self.sse_missed),
            ),
            (
                "egret_dashboard_rate_limited_total",
                "counter",
                "Requests answered 429.",
                load(&self.rate_limited),
            ),
        ];
        for (name, kind, help, v) in simple {
            family(&mut out, name, kind, help, &[(String::new(), v)]);
        }
        let rejected: Vec<(String, u64)> = (self.rejected.lock().map(|m| m.clone()).unwrap_or_default())
            .into_iter()
            .map(|(code, n)| (format!("{{code=\"{code}\"}}"), n))
            .collect();
        family(
            &mut out,
            "egret_dashboard_requests_rejected_total",
            "counter",
            "Requests answered with a 4xx status.",
            &rejected,
        );
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_closed() {
        assert_eq!(action_label("blocked"), "BLOCKED");
        assert_eq!(action_label("<script>"), "other");
        assert_eq!(action_label(""), "none");
        assert_eq!(component_label("DNS"), "dns");
        assert_eq!(component_label("x\"y"), "other");
    }

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::default();
        m.event("received", "BLOCKED", "https");
        m.event("received", "BLOCKED", "https");
        m.event("stored", "BLOCKED", "https");
        m.event("dropped", "", "");
        m.rejected(401);
        Metrics::add(&m.rate_limited, 3);
        let text = m.render(5, 42);
        for want in [
            "# TYPE egret_dashboard_events_received_total counter\n",
            "egret_dashboard_events_received_total{action=\"BLOCKED\",component=\"https\"} 2\n",
            "egret_dashboard_events_stored_total{action=\"BLOCKED\",component=\"https\"} 1\n",
            "egret_dashboard_events_dropped_total{action=\"none\",component=\"none\"} 1\n",
            "egret_dashboard_buffer_entries 5\n",
            "egret_dashboard_last_id 42\n",
            "egret_dashboard_rate_limited_total 3\n",
            "egret_dashboard_requests_rejected_total{code=\"401\"} 1\n",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        // Every sample line is "name{labels} value" or "name value".
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let (_, v) = line.rsplit_once(' ').unwrap();
            assert!(v.parse::<u64>().is_ok(), "{line}");
        }
    }
}
