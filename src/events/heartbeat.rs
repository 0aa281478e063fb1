//! The agent's heartbeat to the dashboard (`POST /api/v1/heartbeat`):
//! hostname, version, mode, policy digest, health and counters, every
//! `DASHBOARD_HEARTBEAT` (30 s). The body is built here (pure); the
//! daemon supplies a [`Source`] that reads its live state, and the
//! shipper thread sends it beside the event batches. A dashboard that
//! answers 404 or 405 (g0efilter's) gets no more heartbeats; the event
//! batches are the same bytes as without them.

use std::sync::Arc;

use serde::Serialize;

/// Path of the dashboard's heartbeat endpoint.
pub const HEARTBEAT_PATH: &str = "/api/v1/heartbeat";

/// Totals since the agent started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Totals {
    pub allowed: u64,
    pub blocked: u64,
    pub audit: u64,
    /// Events lost on the way (the event channel or the dashboard queue full).
    pub dropped: u64,
}

/// One heartbeat.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Heartbeat {
    pub hostname: String,
    pub version: String,
    pub mode: String,
    pub policy_digest: String,
    /// `ok` or `degraded`.
    pub health: &'static str,
    /// The `/health` reasons when degraded.
    pub problems: Vec<String>,
    pub counters: Totals,
    pub interval_ms: u64,
}

/// Builds the current heartbeat (called on the shipper thread).
pub type Source = Arc<dyn Fn() -> Heartbeat + Send + Sync>;

impl Heartbeat {
    /// The JSON body.
    pub fn body(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_else(|_| "{}".into())
    }
}

/// `ok`, or `degraded` with the problems (the daemon's `/health` view).
pub fn health(problems: &[String]) -> &'static str {
    if problems.is_empty() {
        "ok"
    } else {
        "degraded"
    }
}

/// The policy digest: SHA-256 of the policy file's bytes, the first 16
/// hex digits (enough to tell versions apart at a glance).
pub fn policy_digest(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_digest_and_health() {
        assert_eq!(policy_digest(b"abc"), "ba7816bf8f01cfea");
        assert_eq!((health(&[]), health(&["x".into()])), ("ok", "degraded"));
        let hb = Heartbeat {
            hostname: "h".into(),
            version: "1".into(),
            mode: "https".into(),
            policy_digest: "d".into(),
            health: "ok",
            problems: Vec::new(),
            counters: Totals::default(),
            interval_ms: 30_000,
        };
        let v: serde_json::Value = serde_json::from_str(&hb.body()).unwrap();
        assert_eq!((v["health"].as_str(), v["counters"]["allowed"].as_u64()), (Some("ok"), Some(0)));
        // What the dashboard parses is what the agent sends.
        let parsed = crate::dashboard::fleet::parse_heartbeat(hb.body().as_bytes()).unwrap();
        assert_eq!((parsed.hostname.as_str(), parsed.healthy, parsed.interval_ms), ("h", true, 30_000));
    }
}
