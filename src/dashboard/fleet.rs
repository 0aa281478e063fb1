//! The fleet view's pure core: a heartbeat body (parse), an agent's state
//! after one (rates from the counter deltas, since when it runs its
//! policy), and the flags the UI shows. No I/O, no clock: times are Unix
//! nanoseconds passed in.
//!
//! Flags (see [`flags`]):
//! * `silent`: no heartbeat for more than [`SILENT_AFTER`] times the
//!   interval the agent announced (30 s when it said nothing);
//! * `degraded`: the agent's own health is not ok (ruleset tampered with,
//!   a listener missing; the reasons are its `/health` reasons);
//! * `old_policy`: its policy digest is not the fleet's current one, which
//!   is the digest most agents that are not silent run; a tie goes to the
//!   digest that appeared most recently (a rollout in progress counts as
//!   the newer policy).

use std::collections::HashMap;
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Silent after this many missed intervals.
pub const SILENT_AFTER: u64 = 3;
/// The interval assumed when a heartbeat names none.
pub const DEFAULT_INTERVAL_MS: u64 = 30_000;
/// Largest heartbeat body (bytes).
pub const MAX_BODY: usize = 16 * 1024;
const MAX_TEXT: usize = 256;
const MAX_PROBLEMS: usize = 16;

/// The agent's totals since it started (they restart from zero with it).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    pub allowed: u64,
    pub blocked: u64,
    pub audit: u64,
    /// Events it could not ship or log (queues full).
    pub dropped: u64,
}

/// One heartbeat as posted to `POST /api/v1/heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heartbeat {
    pub hostname: String,
    pub version: String,
    /// `FILTER_MODE` (`https`, `dns`, ...).
    pub mode: String,
    pub policy_digest: String,
    /// `ok`, else the problems (`degraded`).
    pub problems: Vec<String>,
    pub healthy: bool,
    pub counters: Counters,
    pub interval_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatError {
    Json(String),
    /// A required field is missing or has the wrong type.
    Field(&'static str),
}

impl fmt::Display for HeartbeatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeartbeatError::Json(why) => write!(f, "heartbeat: invalid json: {why}"),
            HeartbeatError::Field(name) => {
                write!(f, "heartbeat: field {name:?} missing or of the wrong type")
            }
        }
    }
}

impl std::error::Error for HeartbeatError {}

fn clip(s: &str) -> String {
    let mut end = s.len().min(MAX_TEXT);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_owned()
}

/// Parses a heartbeat body: `{"hostname","version","mode","policy_digest",
/// "health":"ok"|"degraded","problems":[..],"counters":{..},"interval_ms"}`.
/// `hostname` and `health` are required; texts are clipped, counters that
/// are missing count zero, the interval is kept within 100 ms..1 h.
pub fn parse_heartbeat(body: &[u8]) -> Result<Heartbeat, HeartbeatError> {
    let v: Value = serde_json::from_slice(body).map_err(|e| HeartbeatError::Json(e.to_string()))?;
    let m = v.as_object().ok_or(HeartbeatError::Json("expected an object".into()))?;
    let text = |k: &'static str| m.get(k).and_then(Value::as_str).map(clip);
    let hostname = text("hostname").filter(|h| !h.is_empty()).ok_or(HeartbeatError::Field("hostname"))?;
    let healthy = match m.get("health").and_then(Value::as_str) {
        Some("ok") => true,
        Some(_) => false,
        None => return Err(HeartbeatError::Field("health")),
    };
    let problems = match m.get("problems") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).take(MAX_PROBLEMS).map(clip).collect(),
        Some(_) => return Err(HeartbeatError::Field("problems")),
    };
    let counters = match m.get("counters") {
        None | Some(Value::Null) => Counters::default(),
        Some(Value::Object(c)) => {
            let n = |k: &str| c.get(k).and_then(Value::as_u64).unwrap_or(0);
            Counters {
                allowed: n("allowed"),
                blocked: n("blocked"),
                audit: n("audit"),
                dropped: n("dropped"),
            }
        }
        Some(_) => return Err(HeartbeatError::Field("counters")),
    };
    let interval_ms =
        m.get("interval_ms").and_then(Value::as_u64).unwrap_or(DEFAULT_INTERVAL_MS).clamp(100, 3_600_000);
    Ok(Heartbeat {
        hostname,
        version: text("version").unwrap_or_default(),
        mode: text("mode").unwrap_or_default(),
        policy_digest: text("policy_digest").unwrap_or_default(),
        problems,
        healthy,
        counters,
        interval_ms,
    })
}

/// What the dashboard keeps per agent (and serves in `/api/v1/agents`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentState {
    /// The agent key's name, else the heartbeat's hostname.
    pub name: String,
    pub hostname: String,
    pub version: String,
    pub mode: String,
    pub policy_digest: String,
    /// When this agent was first seen on `policy_digest` (Unix nanos).
    pub policy_since: i64,
    pub healthy: bool,
    pub problems: Vec<String>,
    pub counters: Counters,
    pub interval_ms: u64,
    /// The last heartbeat's receive time (Unix nanos).
    pub last_seen: i64,
    /// Per minute over the last two heartbeats.
    pub allowed_per_min: f64,
    pub blocked_per_min: f64,
    /// Who posted it (`ip:port`).
    pub remote: String,
}

/// Per minute from `prev` to `cur` over `nanos`; a lower `cur` means the
/// agent restarted, so `cur` is all that happened since.
fn per_min(prev: u64, cur: u64, nanos: i64) -> f64 {
    if nanos <= 0 {
        return 0.0;
    }
    let delta = if cur >= prev { cur - prev } else { cur };
    delta as f64 * 60e9 / nanos as f64
}

/// The state after heartbeat `hb` from agent `name` at `now`.
pub fn after_heartbeat(
    prev: Option<&AgentState>,
    name: &str,
    hb: Heartbeat,
    remote: &str,
    now: i64,
) -> AgentState {
    let (allowed_per_min, blocked_per_min) = match prev {
        Some(p) if now > p.last_seen => (
            per_min(p.counters.allowed, hb.counters.allowed, now - p.last_seen),
            per_min(p.counters.blocked, hb.counters.blocked, now - p.last_seen),
        ),
        _ => (0.0, 0.0),
    };
    let policy_since = match prev {
        Some(p) if p.policy_digest == hb.policy_digest => p.policy_since,
        _ => now,
    };
    AgentState {
        name: name.to_owned(),
        hostname: hb.hostname,
        version: hb.version,
        mode: hb.mode,
        policy_digest: hb.policy_digest,
        policy_since,
        healthy: hb.healthy,
        problems: hb.problems,
        counters: hb.counters,
        interval_ms: hb.interval_ms,
        last_seen: now,
        allowed_per_min,
        blocked_per_min,
        remote: remote.to_owned(),
    }
}

/// Whether `a` has missed more than [`SILENT_AFTER`] intervals at `now`.
pub fn is_silent(a: &AgentState, now: i64) -> bool {
    let limit = i64::try_from(a.interval_ms.saturating_mul(SILENT_AFTER).saturating_mul(1_000_000))
        .unwrap_or(i64::MAX);
    now.saturating_sub(a.last_seen) > limit
}

/// The fleet's current policy digest (see the module comment); `None`
/// when no live agent names one.
pub fn current_policy(agents: &[AgentState], now: i64) -> Option<String> {
    let mut by: HashMap<&str, (usize, i64)> = HashMap::new();
    for a in agents.iter().filter(|a| !a.policy_digest.is_empty() && !is_silent(a, now)) {
        let e = by.entry(a.policy_digest.as_str()).or_insert((0, i64::MIN));
        e.0 += 1;
        e.1 = e.1.max(a.policy_since);
    }
    by.into_iter().max_by(|x, y| x.1.cmp(&y.1).then_with(|| y.0.cmp(x.0))).map(|(d, _)| d.to_owned())
}

/// One thing wrong with an agent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "flag", rename_all = "snake_case")]
pub enum Flag {
    /// Last heard of `for_ms` ago.
    Silent {
        for_ms: i64,
    },
    Degraded {
        reasons: Vec<String>,
    },
    OldPolicy {
        current: String,
    },
}

/// What is wrong with `a` at `now`, given the fleet's current policy.
pub fn flags(a: &AgentState, now: i64, current: Option<&str>) -> Vec<Flag> {
    let mut out = Vec::new();
    if is_silent(a, now) {
        out.push(Flag::Silent { for_ms: now.saturating_sub(a.last_seen) / 1_000_000 });
    }
    if !a.healthy {
        out.push(Flag::Degraded { reasons: a.problems.clone() });
    }
    if let Some(cur) = current.filter(|c| *c != a.policy_digest) {
        out.push(Flag::OldPolicy { current: cur.to_owned() });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: i64 = 1_000_000_000;

    fn hb(host: &str, digest: &str, allowed: u64, blocked: u64) -> Heartbeat {
        Heartbeat {
            hostname: host.into(),
            version: "1".into(),
            mode: "https".into(),
            policy_digest: digest.into(),
            problems: Vec::new(),
            healthy: true,
            counters: Counters { allowed, blocked, ..Counters::default() },
            interval_ms: 30_000,
        }
    }

    fn agent(name: &str, digest: &str, last_seen: i64, since: i64) -> AgentState {
        let mut a = after_heartbeat(None, name, hb(name, digest, 0, 0), "10.0.0.1:1", last_seen);
        a.policy_since = since;
        a
    }

    #[test]
    fn parse_table() {
        let ok = parse_heartbeat(
            br#"{"hostname":"h","version":"0.1","mode":"https","policy_digest":"ab","health":"degraded",
                 "problems":["ruleset changed", 3],"counters":{"allowed":5,"blocked":"x"},"interval_ms":5}"#,
        )
        .unwrap();
        assert_eq!((ok.hostname.as_str(), ok.healthy, ok.problems.len()), ("h", false, 1));
        assert_eq!(ok.counters, Counters { allowed: 5, ..Counters::default() });
        assert_eq!(ok.interval_ms, 100, "clamped");
        let min = parse_heartbeat(br#"{"hostname":"h","health":"ok"}"#).unwrap();
        assert_eq!((min.healthy, min.interval_ms), (true, DEFAULT_INTERVAL_MS));
        for (bad, want) in [
            (&b"{"[..], "invalid json"),
            (b"[]", "expected an object"),
            (br#"{"health":"ok"}"#, "\"hostname\""),
            (br#"{"hostname":"","health":"ok"}"#, "\"hostname\""),
            (br#"{"hostname":"h"}"#, "\"health\""),
            (br#"{"hostname":"h","health":"ok","counters":[]}"#, "\"counters\""),
            (br#"{"hostname":"h","health":"ok","problems":"x"}"#, "\"problems\""),
        ] {
            let e = parse_heartbeat(bad).unwrap_err().to_string();
            assert!(e.contains(want), "{}: {e}", String::from_utf8_lossy(bad));
        }
        let long = format!(r#"{{"hostname":"{}","health":"ok"}}"#, "é".repeat(300));
        assert!(parse_heartbeat(long.as_bytes()).unwrap().hostname.len() <= MAX_TEXT);
    }

    #[test]
    fn rates_come_from_counter_deltas_and_survive_a_restart() {
        let a = after_heartbeat(None, "e", hb("e", "d1", 100, 10), "", 0);
        assert_eq!((a.allowed_per_min, a.policy_since), (0.0, 0));
        let b = after_heartbeat(Some(&a), "e", hb("e", "d1", 160, 40), "", 30 * S);
        assert_eq!((b.allowed_per_min, b.blocked_per_min, b.policy_since), (120.0, 60.0, 0));
        // Restarted: counters from zero; the new totals are the interval's.
        let c = after_heartbeat(Some(&b), "e", hb("e", "d2", 5, 0), "", 60 * S);
        assert_eq!((c.allowed_per_min, c.blocked_per_min, c.policy_since), (10.0, 0.0, 60 * S));
        // The same instant twice: no division by zero.
        assert_eq!(after_heartbeat(Some(&c), "e", hb("e", "d2", 9, 0), "", 60 * S).allowed_per_min, 0.0);
    }

    #[test]
    fn flags_table() {
        let now = 1000 * S;
        let fresh = agent("a", "d1", now - 10 * S, 0);
        assert!(!is_silent(&fresh, now));
        assert_eq!(flags(&fresh, now, Some("d1")), []);
        // 3 × 30 s: silent just past 90 s, not at it.
        assert!(!is_silent(&agent("b", "d1", now - 90 * S, 0), now));
        let gone = agent("b", "d1", now - 91 * S, 0);
        assert_eq!(flags(&gone, now, Some("d1")), [Flag::Silent { for_ms: 91_000 }]);
        let mut sick = agent("c", "d0", now, 0);
        sick.healthy = false;
        sick.problems = vec!["listener :8443 missing".into()];
        assert_eq!(
            flags(&sick, now, Some("d1")),
            [
                Flag::Degraded { reasons: vec!["listener :8443 missing".into()] },
                Flag::OldPolicy { current: "d1".into() }
            ]
        );
        assert_eq!(flags(&sick, now, None).len(), 1, "no current policy: no old-policy flag");
    }

    #[test]
    fn current_policy_is_the_most_common_live_digest_ties_to_the_newest() {
        let now = 1000 * S;
        let live = |n: &str, d: &str, since: i64| agent(n, d, now, since);
        assert_eq!(current_policy(&[], now), None);
        let fleet = [live("a", "old", 1), live("b", "old", 2), live("c", "new", 900 * S)];
        assert_eq!(current_policy(&fleet, now).as_deref(), Some("old"), "two against one");
        let tie = [live("a", "old", 1), live("c", "new", 900 * S)];
        assert_eq!(current_policy(&tie, now).as_deref(), Some("new"), "a tie goes to the newer");
        // Silent agents do not vote; empty digests neither.
        let mut quiet = [live("a", "old", 1), live("b", "old", 2), live("c", "new", 3), live("d", "", 4)];
        quiet[0].last_seen = 0;
        quiet[1].last_seen = 0;
        assert_eq!(current_policy(&quiet, now).as_deref(), Some("new"));
    }
}
