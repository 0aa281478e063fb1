//! The dashboard's data core: ingest normalisation (an arbitrary JSON
//! object → a stored [`Record`]), the database [`Row`] a record becomes,
//! [`Query`] parameters, retention and the SSE "missed" arithmetic. No
//! I/O, no clock: receive time and the poster's address are passed in.
//! The database itself is `db.rs`.

use std::fmt;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::time::{format_rfc3339_nanos, parse_rfc3339};

/// What the poster's request carried, besides the body.
#[derive(Debug, Clone)]
pub struct IngestContext {
    /// Receive time, nanoseconds since the Unix epoch.
    pub now_unix_nanos: i128,
    /// Who posted it (`remote_ip` of the stored entry).
    pub remote_ip: String,
}

/// A body that cannot be ingested.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyError {
    /// Not JSON, or JSON that is neither an object nor an array of objects.
    InvalidJson(String),
    /// Nothing to ingest: an empty body or an empty array.
    Empty,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BodyError::InvalidJson(why) => write!(f, "invalid json: {why}"),
            BodyError::Empty => f.write_str("empty payload"),
        }
    }
}

impl std::error::Error for BodyError {}

/// Splits a POST body into event objects: one object or an array of them.
pub fn parse_body(body: &[u8]) -> Result<Vec<Map<String, Value>>, BodyError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Err(BodyError::Empty);
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| BodyError::InvalidJson(e.to_string()))?;
    let items = match v {
        Value::Object(m) => vec![m],
        Value::Array(a) => {
            let mut out = Vec::with_capacity(a.len());
            for (i, x) in a.into_iter().enumerate() {
                match x {
                    Value::Object(m) => out.push(m),
                    _ => return Err(BodyError::InvalidJson(format!("array element {i} is not an object"))),
                }
            }
            out
        }
        _ => return Err(BodyError::InvalidJson("expected an object or an array of objects".into())),
    };
    if items.is_empty() {
        return Err(BodyError::Empty);
    }
    Ok(items)
}

/// One stored entry: the shape `GET /api/v1/logs` returns and SSE streams.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Record {
    pub id: u64,
    /// RFC 3339, UTC, nanoseconds: the producer's time, else receive time.
    pub time: String,
    /// `time` as nanoseconds since the Unix epoch (not serialised).
    #[serde(skip)]
    pub time_nanos: i128,
    pub msg: String,
    /// `ALLOWED`, `BLOCKED` or `AUDIT` (nothing else is stored).
    pub action: String,
    /// The address that posted the entry.
    pub remote_ip: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub destination_port: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub policy_hit: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_len: Option<u64>,
    /// The destination name: first of http_host, host, https (SNI), qname.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub https: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub http_host: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub flow_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub src: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dst: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// The name of the agent key the entry was posted with (never taken
    /// from the body, so one agent cannot pose as another). Absent for
    /// entries posted with `API_KEY`, as in g0efilter.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// As g0efilter's: the payload's own `fields` object, with every
    /// payload key but `msg`, `time` and `fields` on top of it (so the
    /// top-level keys repeat here, and `component`, `reason`, `note`,
    /// `rcode`, `qname`, ... live only here).
    pub fields: Map<String, Value>,
}

impl Record {
    /// The `component` field, if the producer sent one as a string.
    pub fn component(&self) -> Option<&str> {
        self.fields.get("component").and_then(Value::as_str)
    }
}

/// Why an accepted event was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// No `msg`, or an empty one.
    NoMsg,
    /// `_dashboard_*` control messages (g0efilter's start-up probe).
    Control,
    /// An action other than ALLOWED/BLOCKED/AUDIT (e.g. REDIRECTED).
    Action,
}

impl Skip {
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::NoMsg => "no msg",
            Skip::Control => "control message",
            Skip::Action => "action not stored",
        }
    }
}

/// Payload keys never copied into `fields`: the message and time (top
/// level, as in g0efilter), the nested object merged instead, and what
/// only the dashboard sets (a poster cannot forge an id or an address).
const NOT_IN_FIELDS: &[&str] = &["msg", "time", "fields", "id", "remote_ip"];

fn text(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn port(v: Option<&Value>) -> Option<u16> {
    match v? {
        Value::Number(n) => n.as_u64().and_then(|p| u16::try_from(p).ok()),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn first_text(m: &Map<String, Value>, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| text(m.get(*k)))
}

/// How far ahead of the dashboard's clock an event's time may be (agents'
/// clocks drift); later times are taken as the arrival time plus this.
pub const MAX_FUTURE: std::time::Duration = std::time::Duration::from_secs(60);

/// Pure: how many of each agent's entries to evict so that `excess` go,
/// taken from the agents that hold the most: the largest counts are cut
/// down towards one level, so an agent posting past its share of the row
/// limit loses its own oldest entries before any other agent loses one.
/// `counts` are (agent, entries held); ties go by name, for a stable
/// answer. Agents that lose nothing are left out.
pub fn eviction_plan(counts: &[(String, u64)], excess: u64) -> Vec<(String, u64)> {
    let total: u64 = counts.iter().map(|(_, c)| c).sum();
    if excess == 0 {
        return Vec::new();
    }
    if excess >= total {
        return counts.iter().filter(|(_, c)| *c > 0).cloned().collect();
    }
    let above = |level: u64| -> u64 { counts.iter().map(|(_, c)| c.saturating_sub(level)).sum() };
    // The highest level whose cut still frees `excess`: above(level) falls
    // as level rises, above(0) = total > excess.
    let (mut lo, mut hi) = (0u64, counts.iter().map(|(_, c)| *c).max().unwrap_or(0));
    while lo < hi {
        let mid = lo + (hi - lo).div_ceil(2);
        if above(mid) >= excess {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    // Down to lo + 1 frees less than `excess`; the rest, one each, from
    // the agents still above lo, heaviest (then first by name) first.
    let mut plan: Vec<(String, u64)> =
        counts.iter().map(|(a, c)| (a.clone(), c.saturating_sub(lo + 1))).collect();
    let mut rest = excess - plan.iter().map(|(_, n)| n).sum::<u64>();
    let mut order: Vec<usize> = (0..counts.len()).filter(|&i| counts[i].1 > lo).collect();
    order.sort_by(|&a, &b| counts[b].1.cmp(&counts[a].1).then_with(|| counts[a].0.cmp(&counts[b].0)));
    for i in order {
        if rest == 0 {
            break;
        }
        plan[i].1 += 1;
        rest -= 1;
    }
    plan.retain(|(_, n)| *n > 0);
    plan
}

/// Turns one posted object into a record (id 0: the database assigns it) or
/// says why it is accepted but not stored.
pub fn normalize(m: &Map<String, Value>, ctx: &IngestContext) -> Result<Record, Skip> {
    let msg = text(m.get("msg")).ok_or(Skip::NoMsg)?;
    if msg.starts_with("_dashboard_") {
        return Err(Skip::Control);
    }
    let action = text(m.get("action")).map(|a| a.to_ascii_uppercase()).unwrap_or_default();
    if action != "ALLOWED" && action != "BLOCKED" && action != "AUDIT" {
        return Err(Skip::Action);
    }
    // An event dated ahead of its arrival (by more than clock skew) is
    // stored at its arrival: dated 2099, it would sit in every "last 15
    // minutes" until then and outlive the retention age.
    let time_nanos = m
        .get("time")
        .and_then(Value::as_str)
        .and_then(parse_rfc3339)
        .unwrap_or(ctx.now_unix_nanos)
        .min(ctx.now_unix_nanos + MAX_FUTURE.as_nanos() as i128);
    let component = m.get("component").and_then(Value::as_str).unwrap_or_default().to_ascii_lowercase();
    let protocol = text(m.get("protocol")).or_else(|| match component.as_str() {
        "http" | "https" => Some("TCP".to_owned()),
        "dns" => Some("UDP".to_owned()),
        _ => None,
    });
    let http_host = first_text(m, &["http_host", "host"]);
    let mut fields = Map::new();
    if let Some(Value::Object(nested)) = m.get("fields") {
        fields.extend(nested.iter().map(|(k, v)| (k.clone(), v.clone())));
    }
    for (k, v) in m {
        if !NOT_IN_FIELDS.contains(&k.as_str()) && !v.is_null() {
            fields.insert(k.clone(), v.clone());
        }
    }
    // A value that could not be used at the top level is kept, not lost.
    for (k, ok) in [
        ("time", m.get("time").and_then(Value::as_str).and_then(parse_rfc3339).is_some()),
        ("source_port", port(m.get("source_port")).is_some()),
        ("destination_port", port(m.get("destination_port")).is_some()),
        ("payload_len", m.get("payload_len").and_then(Value::as_u64).is_some()),
    ] {
        if let (false, Some(v)) = (ok, m.get(k)) {
            fields.insert(k.to_owned(), v.clone());
        }
    }
    Ok(Record {
        id: 0,
        time: format_rfc3339_nanos(time_nanos),
        time_nanos,
        msg,
        action,
        remote_ip: ctx.remote_ip.clone(),
        source_ip: first_text(m, &["source_ip", "client_ip"]),
        source_port: port(m.get("source_port")),
        destination_ip: first_text(m, &["destination_ip", "dst_ip"]),
        destination_port: port(m.get("destination_port")).or_else(|| port(m.get("dst_port"))),
        protocol,
        policy_hit: m.get("policy_hit").filter(|v| !v.is_null()).cloned(),
        payload_len: m.get("payload_len").and_then(Value::as_u64),
        https: first_text(m, &["http_host", "host", "https", "qname"]),
        http_host,
        flow_id: text(m.get("flow_id")),
        hostname: text(m.get("hostname")),
        src: text(m.get("src")),
        dst: text(m.get("dst")),
        version: text(m.get("version")),
        agent: None,
        fields,
    })
}

/// The lowercased text `q` searches: msg and the raw JSON of `fields` (as
/// g0efilter searches), the top-level strings, and `key=value` lines.
pub fn haystack(record: &Record) -> String {
    let mut h = String::with_capacity(512);
    h.push_str(&record.msg.to_lowercase());
    h.push(' ');
    h.push_str(&serde_json::Value::Object(record.fields.clone()).to_string().to_lowercase());
    h.push('\n');
    let tops = [
        Some(&record.msg),
        Some(&record.action),
        record.source_ip.as_ref(),
        record.destination_ip.as_ref(),
        record.https.as_ref(),
        record.http_host.as_ref(),
        record.hostname.as_ref(),
        record.src.as_ref(),
        record.dst.as_ref(),
        record.flow_id.as_ref(),
        record.protocol.as_ref(),
    ];
    for s in tops.into_iter().flatten() {
        h.push_str(&s.to_lowercase());
        h.push('\n');
    }
    for (k, v) in &record.fields {
        h.push_str(&k.to_lowercase());
        h.push('=');
        match v {
            Value::String(s) => h.push_str(&s.to_lowercase()),
            other => h.push_str(&other.to_string().to_lowercase()),
        }
        h.push('\n');
    }
    h
}

/// A record as one database row: the entry's JSON (served as stored) and
/// the columns the queries filter and group on.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub id: u64,
    /// Event time, nanoseconds since the Unix epoch.
    pub ts: i64,
    pub action: String,
    pub component: Option<String>,
    /// Who sent it: the agent key's name, else the event's hostname, else
    /// the poster's address.
    pub agent: String,
    pub source: Option<String>,
    /// The destination name (`https`), else its address.
    pub destination: Option<String>,
    pub reason: Option<String>,
    pub json: String,
    pub haystack: String,
}

impl Row {
    /// The row for `record` under `id`; `agent` is the key name when the
    /// poster used a per-agent key.
    pub fn new(mut record: Record, id: u64, agent: Option<&str>) -> Row {
        record.id = id;
        record.agent = agent.map(str::to_owned);
        // Serialising a struct of strings, numbers and a string-keyed map
        // cannot fail.
        let json = serde_json::to_string(&record).unwrap_or_else(|_| "{}".into());
        let haystack = haystack(&record);
        let remote_host = record.remote_ip.rsplit_once(':').map_or(record.remote_ip.as_str(), |(h, _)| h);
        let agent = agent
            .map(str::to_owned)
            .or_else(|| record.hostname.clone())
            .unwrap_or_else(|| remote_host.trim_matches(['[', ']']).to_owned());
        Row {
            id,
            ts: i64::try_from(record.time_nanos).unwrap_or(i64::MAX),
            component: record.component().map(str::to_owned),
            reason: record.fields.get("reason").and_then(Value::as_str).map(str::to_owned),
            source: record.source_ip.clone(),
            destination: record.https.clone().or_else(|| record.destination_ip.clone()),
            action: record.action,
            agent,
            json,
            haystack,
        }
    }
}

/// `GET /api/v1/logs` parameters, already validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// Lowercased search text; empty matches everything.
    pub q: String,
    pub since_id: u64,
    pub limit: usize,
}

/// One stored entry as read back: its id and JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub id: u64,
    pub json: String,
}

/// What a reader missed and what it gets next, for SSE.
#[derive(Debug)]
pub struct Since {
    /// Entries with a larger id than asked for, oldest first.
    pub entries: Vec<Entry>,
    /// Entries that were evicted (retention) before the reader saw them.
    pub missed: u64,
}

/// How many entries between `after` and what was read back are gone.
/// Ids are given out without gaps, so a gap is an eviction, unless it
/// lies at or below `cleared_upto` (a clear, which is announced, not
/// "missed"). `first` is the first id read back, `last_id` the newest
/// given out.
pub fn missed(after: u64, first: Option<u64>, last_id: u64, cleared_upto: u64) -> u64 {
    let floor = after.max(cleared_upto);
    match first {
        Some(id) => id.saturating_sub(floor + 1),
        None => last_id.saturating_sub(floor),
    }
}

/// `LOG_RETENTION`: how old and how many entries are kept. `None` is no
/// limit of that kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    pub max_age: Option<std::time::Duration>,
    pub max_rows: Option<u64>,
}

impl Retention {
    /// The default when persisting: 30 days, ten million entries.
    pub const PERSISTENT: Retention =
        Retention { max_age: Some(std::time::Duration::from_secs(30 * 86_400)), max_rows: Some(10_000_000) };

    /// Events older than this (event time, Unix nanos) are removed.
    pub fn cutoff(&self, now_unix_nanos: i128) -> Option<i64> {
        let age = self.max_age?.as_nanos() as i128;
        Some(i64::try_from(now_unix_nanos - age).unwrap_or(i64::MIN))
    }
}

impl fmt::Display for Retention {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.max_age, self.max_rows) {
            (None, None) => f.write_str("unlimited"),
            (Some(a), None) => write!(f, "{}s", a.as_secs()),
            (None, Some(n)) => write!(f, "{n} entries"),
            (Some(a), Some(n)) => write!(f, "{}s or {n} entries", a.as_secs()),
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn eviction_takes_from_the_heaviest_agents_first() {
        let c = |v: &[(&str, u64)]| v.iter().map(|(a, n)| (a.to_string(), *n)).collect::<Vec<_>>();
        let plan = |v: &[(&str, u64)], excess| super::eviction_plan(&c(v), excess);
        // The flooder alone pays for its own batch.
        assert_eq!(plan(&[("edge-1", 1), ("edge-2", 250)], 51), c(&[("edge-2", 51)]));
        // Cut to one level: 10 and 8 give 3 and 1 to reach 7 each.
        assert_eq!(plan(&[("a", 10), ("b", 8), ("c", 2)], 4), c(&[("a", 3), ("b", 1)]));
        // Below the level everyone is even: the remainder by weight, then name.
        assert_eq!(plan(&[("a", 5), ("b", 5), ("c", 5)], 4), c(&[("a", 2), ("b", 1), ("c", 1)]));
        assert_eq!(plan(&[("a", 3)], 0), c(&[]));
        assert_eq!(plan(&[("a", 3), ("b", 1)], 9), c(&[("a", 3), ("b", 1)]), "more than there is: all");
        for (v, excess) in
            [(vec![("a", 7), ("b", 3), ("c", 3), ("d", 0)], 5u64), (vec![("x", 1), ("y", 1)], 1)]
        {
            let got = plan(&v, excess);
            assert_eq!(got.iter().map(|(_, n)| n).sum::<u64>(), excess, "{v:?} {excess}: {got:?}");
            for (a, n) in &got {
                let held = v.iter().find(|(b, _)| b == a).unwrap().1;
                assert!(*n <= held, "{a} loses {n} of {held}");
            }
        }
    }

    use super::*;
    use serde_json::json;

    fn ctx() -> IngestContext {
        IngestContext { now_unix_nanos: 1_795_812_000_000_000_001, remote_ip: "10.0.0.9".into() }
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().expect("test value is an object")
    }

    fn stored_json(v: Value) -> Value {
        let r = normalize(&obj(v), &ctx()).expect("stored");
        serde_json::to_value(&r).unwrap()
    }

    #[test]
    fn body_table() {
        let cases: &[(&str, Result<usize, &str>)] = &[
            ("", Err("empty")),
            ("  \n", Err("empty")),
            ("[]", Err("empty")),
            ("{}", Ok(1)),
            ("[{},{\"msg\":\"x\"}]", Ok(2)),
            ("{\"msg\":", Err("invalid")),
            ("42", Err("invalid")),
            ("[{}, 3]", Err("invalid")),
            ("\"str\"", Err("invalid")),
            ("null", Err("invalid")),
        ];
        for (body, want) in cases {
            let got = parse_body(body.as_bytes());
            match (want, &got) {
                (Ok(n), Ok(v)) => assert_eq!(v.len(), *n, "{body}"),
                (Err("empty"), Err(BodyError::Empty)) => {}
                (Err("invalid"), Err(BodyError::InvalidJson(_))) => {}
                _ => panic!("{body:?}: got {got:?}, want {want:?}"),
            }
        }
    }

    #[test]
    fn what_is_stored() {
        let cases: &[(Value, Result<(), Skip>)] = &[
            (json!({"msg": "https.blocked", "action": "BLOCKED"}), Ok(())),
            (json!({"msg": "dns.allowed", "action": "allowed"}), Ok(())),
            // Audit mode's would-be blocks are stored and shown.
            (json!({"msg": "https.audit", "action": "AUDIT"}), Ok(())),
            (json!({"msg": "_dashboard_probe"}), Err(Skip::Control)),
            (json!({"msg": "_dashboard_probe", "action": "ALLOWED"}), Err(Skip::Control)),
            (json!({"msg": "", "action": "BLOCKED"}), Err(Skip::NoMsg)),
            (json!({"action": "BLOCKED"}), Err(Skip::NoMsg)),
            (json!({"msg": "nflog.event", "action": "REDIRECTED"}), Err(Skip::Action)),
            (json!({"msg": "x"}), Err(Skip::Action)),
        ];
        for (v, want) in cases {
            assert_eq!(normalize(&obj(v.clone()), &ctx()).map(|_| ()), *want, "{v}");
        }
    }

    #[test]
    fn full_event_maps_to_contract_shape() {
        let got = stored_json(json!({
            "time": "2026-11-21T22:58:33.123+02:00",
            "msg": "https.blocked", "action": "BLOCKED", "component": "https",
            "hostname": "pod-a", "version": "0.1.0",
            "source_ip": "10.0.0.2", "source_port": 40000,
            "destination_ip": "93.184.216.34", "destination_port": 443,
            "https": "evil.example", "reason": "not-allowed", "note": "n", "rcode": 3,
            "src": "10.0.0.2:40000", "dst": "93.184.216.34:443", "flow_id": "a1b2c3d4",
            "producer_time": "2026-11-21T20:58:33Z",
        }));
        assert_eq!(
            got,
            json!({
                "id": 0, "time": "2026-11-21T20:58:33.123000000Z", "msg": "https.blocked",
                "action": "BLOCKED", "remote_ip": "10.0.0.9",
                "source_ip": "10.0.0.2", "source_port": 40000,
                "destination_ip": "93.184.216.34", "destination_port": 443, "protocol": "TCP",
                "https": "evil.example", "flow_id": "a1b2c3d4", "hostname": "pod-a",
                "src": "10.0.0.2:40000", "dst": "93.184.216.34:443", "version": "0.1.0",
                // g0efilter's shape: every payload key but msg and time,
                // the top-level ones repeated (note and rcode kept).
                "fields": {"action": "BLOCKED", "component": "https", "hostname": "pod-a", "version": "0.1.0",
                           "source_ip": "10.0.0.2", "source_port": 40000,
                           "destination_ip": "93.184.216.34", "destination_port": 443,
                           "https": "evil.example", "reason": "not-allowed", "note": "n", "rcode": 3,
                           "src": "10.0.0.2:40000", "dst": "93.184.216.34:443", "flow_id": "a1b2c3d4",
                           "producer_time": "2026-11-21T20:58:33Z"},
            })
        );
    }

    #[test]
    fn nested_fields_are_merged_under_the_payload_keys() {
        let got = stored_json(json!({
            "msg": "m", "action": "BLOCKED", "reason": "top",
            "fields": {"reason": "nested", "tenant_id": "t1", "extra": [1, 2]},
            "id": 77, "remote_ip": "6.6.6.6", "note": null,
        }));
        assert_eq!(
            got["fields"],
            json!({"action": "BLOCKED", "reason": "top", "tenant_id": "t1", "extra": [1, 2]}),
            "nested keys kept, top-level keys win, id/remote_ip/null never copied"
        );
        assert_eq!((got["id"].clone(), got["remote_ip"].clone()), (json!(0), json!("10.0.0.9")));
    }

    #[test]
    fn aliases_and_fallbacks() {
        // Table: payload → expected subset of the stored entry.
        let cases: &[(Value, Value)] = &[
            (
                json!({"client_ip": "10.0.0.3", "dst_ip": "1.1.1.1", "dst_port": "53", "component": "dns", "qname": "a.example"}),
                json!({"source_ip": "10.0.0.3", "destination_ip": "1.1.1.1", "destination_port": 53, "protocol": "UDP", "https": "a.example"}),
            ),
            (
                json!({"source_ip": "10.0.0.4", "client_ip": "10.0.0.5", "host": "h.example", "https": "sni.example"}),
                json!({"source_ip": "10.0.0.4", "http_host": "h.example", "https": "h.example"}),
            ),
            (
                json!({"http_host": "a", "host": "b", "component": "http"}),
                json!({"http_host": "a", "https": "a", "protocol": "TCP"}),
            ),
            (json!({"protocol": "ICMP", "component": "nflog"}), json!({"protocol": "ICMP"})),
            (
                json!({"time": "garbage"}),
                json!({"time": "2026-11-27T20:40:00.000000001Z", "fields": {"time": "garbage"}}),
            ),
            (json!({"source_port": 70000}), json!({"fields": {"source_port": 70000}})),
            (
                json!({"payload_len": 60, "policy_hit": "allowlist"}),
                json!({"payload_len": 60, "policy_hit": "allowlist"}),
            ),
        ];
        for (input, want) in cases {
            let mut v = input.clone();
            v["msg"] = json!("m");
            v["action"] = json!("BLOCKED");
            let got = stored_json(v);
            for (k, w) in want.as_object().unwrap() {
                if k == "fields" {
                    for (fk, fw) in w.as_object().unwrap() {
                        assert_eq!(&got["fields"][fk], fw, "{input}: fields.{fk} in {got}");
                    }
                } else {
                    assert_eq!(&got[k], w, "{input}: {k} in {got}");
                }
            }
        }
        // Absent, not null, when unknown.
        let got = stored_json(json!({"msg": "m", "action": "ALLOWED"}));
        assert_eq!(got.as_object().unwrap().len(), 6, "{got}");
        assert_eq!(got["fields"], json!({"action": "ALLOWED"}));
        assert_eq!(got["time"], "2026-11-27T20:40:00.000000001Z");
    }

    #[test]
    fn rows_carry_the_grouping_columns() {
        let r = normalize(
            &obj(json!({"msg": "m", "action": "BLOCKED", "component": "https", "https": "e.example",
                        "destination_ip": "1.2.3.4", "source_ip": "10.0.0.2", "reason": "not-allowed",
                        "time": "2026-11-21T20:58:33Z"})),
            &ctx(),
        )
        .unwrap();
        let row = Row::new(r.clone(), 7, Some("edge-1"));
        assert_eq!(
            (row.id, row.agent.as_str(), row.destination.as_deref(), row.reason.as_deref()),
            (7, "edge-1", Some("e.example"), Some("not-allowed"))
        );
        assert_eq!(row.ts, 1_795_294_713_000_000_000);
        let v: Value = serde_json::from_str(&row.json).unwrap();
        assert_eq!(v["id"], 7);
        assert_eq!(v["agent"], "edge-1", "the key's name is in the served entry");
        let posing =
            normalize(&obj(json!({"msg": "m", "action": "ALLOWED", "agent": "edge-2"})), &ctx()).unwrap();
        let v: Value = serde_json::from_str(&Row::new(posing.clone(), 8, Some("edge-1")).json).unwrap();
        assert_eq!((v["agent"].as_str(), v["fields"]["agent"].as_str()), (Some("edge-1"), Some("edge-2")));
        let v: Value = serde_json::from_str(&Row::new(posing, 9, None).json).unwrap();
        assert!(v.get("agent").is_none(), "no top-level agent without an agent key (g0efilter's shape)");
        // Without a key name: the hostname, else the poster's address.
        assert_eq!(Row::new(r.clone(), 1, None).agent, "10.0.0.9");
        let mut h = r;
        h.hostname = Some("pod-a".into());
        assert_eq!(Row::new(h, 1, None).agent, "pod-a");
    }

    #[test]
    fn missed_table() {
        // (after, first read, last id, cleared upto) → missed
        for (after, first, last, cleared, want) in [
            (0, Some(3), 5, 0, 2),
            (3, Some(4), 5, 0, 0),
            (5, None, 5, 0, 0),
            (2, None, 5, 0, 3),
            (4, Some(6), 6, 5, 0),
            (0, Some(6), 6, 5, 0),
            (0, None, 6, 6, 0),
        ] {
            assert_eq!(missed(after, first, last, cleared), want, "{after} {first:?} {last} {cleared}");
        }
    }

    #[test]
    fn retention_cutoff() {
        let hour = Retention { max_age: Some(std::time::Duration::from_secs(3600)), max_rows: None };
        assert_eq!(hour.cutoff(7_200_000_000_000), Some(3_600_000_000_000));
        assert_eq!(Retention { max_age: None, max_rows: Some(9) }.cutoff(5), None);
    }
}
