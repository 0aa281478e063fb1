//! Remote unblock on the dashboard, the pure part: what an operator's
//! `POST /api/v1/unblocks` may say (checked with egret's own policy entry
//! parser, so a bad entry is a 400 naming the problem), the path of a
//! revoke, and an agent's acknowledgement body. The records live in
//! `db.rs`; the handlers in `mod.rs`.

use std::time::Duration;

use serde_json::Value;

/// Longest unblock: a year. "For good" is no duration at all.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 86_400);

/// A checked new unblock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewUnblock {
    pub entry: String,
    /// `None`: every agent.
    pub agent: Option<String>,
    /// `None`: for good.
    pub duration: Option<Duration>,
    pub force: bool,
}

/// Parses `{"entry": "...", "duration": "1h" | null, "agent": "edge-1" |
/// null, "force": false}`; the error is the 400's message, listing every
/// problem.
pub fn parse_new(body: &[u8]) -> Result<NewUnblock, String> {
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("bad body: not JSON ({e})"))?;
    let Some(o) = v.as_object() else { return Err("bad body: send a JSON object".into()) };
    let mut problems = Vec::new();
    for k in o.keys() {
        if !["entry", "duration", "agent", "force"].contains(&k.as_str()) {
            problems.push(format!("unknown field {k:?} (entry, duration, agent, force)"));
        }
    }
    let force = match o.get("force") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            problems.push("force: true or false".into());
            false
        }
    };
    let entry = match o.get("entry").and_then(Value::as_str) {
        Some(e) => {
            if let Err(why) = crate::unblock::check_entry(e, force) {
                problems.push(format!("entry {e:?}: {why}"));
            }
            e.trim().to_owned()
        }
        None => {
            problems.push("entry: required, a policy entry (a name, a pattern, an address or CIDR, optionally tcp/…:port)".into());
            String::new()
        }
    };
    let agent = match o.get("agent") {
        None | Some(Value::Null) => None,
        Some(Value::String(a)) if a.is_empty() || a == "*" => None,
        Some(Value::String(a)) if super::auth::valid_agent_name(a) => Some(a.clone()),
        Some(other) => {
            problems.push(format!(
                "agent {other}: an agent name (1 to 64 of A-Z a-z 0-9 . _ -), or null for all"
            ));
            None
        }
    };
    let duration = match o.get("duration") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if matches!(s.trim(), "" | "forever" | "for good") => None,
        Some(Value::String(s)) => match parse_duration(s.trim()) {
            Some(d) if !d.is_zero() && d <= MAX_DURATION => Some(d),
            _ => {
                problems.push(format!("duration {s:?}: from 1s to 366d (such as 1h, 24h), or null for good"));
                None
            }
        },
        Some(other) => {
            problems.push(format!("duration {other}: a string such as \"1h\", or null for good"));
            None
        }
    };
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(NewUnblock { entry, agent, duration, force })
}

fn parse_duration(s: &str) -> Option<Duration> {
    match s.strip_suffix('d').map(str::parse::<u64>) {
        Some(Ok(days)) => Some(Duration::from_secs(days.saturating_mul(86_400))),
        Some(Err(_)) => None,
        None => crate::config::parse_duration(s).ok(),
    }
}

/// The id in `/api/v1/unblocks/ID`.
pub fn path_id(path: &str) -> Option<u64> {
    let rest = path.strip_prefix("/api/v1/unblocks/")?;
    if rest.is_empty() || rest.len() > 19 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    rest.parse().ok()
}

/// An agent's acknowledgement: `{"ids": [1, 2]}`, the unblocks it
/// applied (at most 1000).
pub fn parse_ack(body: &[u8]) -> Option<Vec<u64>> {
    #[derive(serde::Deserialize)]
    struct Raw {
        ids: Vec<u64>,
    }
    let r: Raw = serde_json::from_slice(body).ok()?;
    (r.ids.len() <= crate::unblock::MAX_UNBLOCKS).then_some(r.ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_unblock_table() {
        let ok = |b: &str| parse_new(b.as_bytes()).unwrap();
        assert_eq!(
            ok(r#"{"entry":" pay.example.com ","duration":"1h","agent":"edge-1"}"#),
            NewUnblock {
                entry: "pay.example.com".into(),
                agent: Some("edge-1".into()),
                duration: Some(Duration::from_secs(3600)),
                force: false
            }
        );
        let forever = ok(r#"{"entry":"tcp/192.0.2.7:443","duration":null,"agent":null}"#);
        assert_eq!((forever.duration, forever.agent), (None, None));
        assert_eq!(
            ok(r#"{"entry":"a.example","duration":"7d"}"#).duration,
            Some(Duration::from_secs(604_800))
        );
        assert_eq!(ok(r#"{"entry":"a.example","duration":"3s"}"#).duration, Some(Duration::from_secs(3)));
        assert!(ok(r#"{"entry":"*","force":true}"#).force);
        for (bad, says) in [
            ("", "not JSON"),
            ("[]", "object"),
            (r#"{"duration":"1h"}"#, "entry: required"),
            (r#"{"entry":"bad name!"}"#, "entry \"bad name!\""),
            (r#"{"entry":"*"}"#, "force: true"),
            (r#"{"entry":"0.0.0.0/0"}"#, "force"),
            (r#"{"entry":"a.example","duration":"soon"}"#, "duration \"soon\""),
            (r#"{"entry":"a.example","duration":"0s"}"#, "duration"),
            (r#"{"entry":"a.example","duration":"400d"}"#, "366d"),
            (r#"{"entry":"a.example","duration":5}"#, "a string"),
            (r#"{"entry":"a.example","agent":"a b"}"#, "agent"),
            (r#"{"entry":"a.example","until":1}"#, "unknown field \"until\""),
            (r#"{"entry":"a.example","force":"yes"}"#, "force"),
        ] {
            let e = parse_new(bad.as_bytes()).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
        // Every problem at once.
        let e = parse_new(br#"{"entry":"bad name!","duration":"soon"}"#).unwrap_err();
        assert!(e.contains("entry") && e.contains("duration"), "{e}");
    }

    #[test]
    fn paths_and_acks() {
        assert_eq!(path_id("/api/v1/unblocks/12"), Some(12));
        for bad in ["/api/v1/unblocks/", "/api/v1/unblocks/x", "/api/v1/unblocks/1/2", "/api/v1/unblocks/-1"]
        {
            assert_eq!(path_id(bad), None, "{bad}");
        }
        assert_eq!(parse_ack(br#"{"ids":[1,2]}"#), Some(vec![1, 2]));
        assert_eq!(parse_ack(br#"{"ids":"1"}"#), None);
        assert_eq!(parse_ack(b"nope"), None);
    }
}
