//! The dashboard's data core: ingest normalisation (an arbitrary JSON
//! object → a stored [`Record`]), the in-memory [`Ring`] whose ids only
//! ever grow, and [`Query`] filtering. No I/O, no clock: receive time and
//! the poster's address are passed in.

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;

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
    pub msg: String,
    /// `ALLOWED` or `BLOCKED` (nothing else is stored).
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
    /// An action other than ALLOWED/BLOCKED (e.g. REDIRECTED).
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

/// Turns one posted object into a record (id 0: the ring assigns it) or
/// says why it is accepted but not stored.
pub fn normalize(m: &Map<String, Value>, ctx: &IngestContext) -> Result<Record, Skip> {
    let msg = text(m.get("msg")).ok_or(Skip::NoMsg)?;
    if msg.starts_with("_dashboard_") {
        return Err(Skip::Control);
    }
    let action = text(m.get("action")).map(|a| a.to_ascii_uppercase()).unwrap_or_default();
    if action != "ALLOWED" && action != "BLOCKED" {
        return Err(Skip::Action);
    }
    let time_nanos =
        m.get("time").and_then(Value::as_str).and_then(parse_rfc3339).unwrap_or(ctx.now_unix_nanos);
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
        fields,
    })
}

/// A record as kept in the ring: serialised once, searchable without
/// re-serialising.
#[derive(Debug)]
pub struct Stored {
    pub record: Record,
    /// The record's JSON, shared by every reader and SSE client.
    pub json: Arc<str>,
    /// Lowercased text `q` searches: msg and the raw JSON of `fields` (as
    /// g0efilter searches), the top-level strings, and `key=value` lines.
    haystack: String,
}

impl Stored {
    fn new(record: Record) -> Stored {
        // Serialising a struct of strings, numbers and a string-keyed map
        // cannot fail.
        let json: Arc<str> = serde_json::to_string(&record).unwrap_or_else(|_| "{}".into()).into();
        let mut haystack = String::with_capacity(2 * json.len());
        haystack.push_str(&record.msg.to_lowercase());
        haystack.push(' ');
        haystack.push_str(&serde_json::Value::Object(record.fields.clone()).to_string().to_lowercase());
        haystack.push('\n');
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
            haystack.push_str(&s.to_lowercase());
            haystack.push('\n');
        }
        for (k, v) in &record.fields {
            haystack.push_str(&k.to_lowercase());
            haystack.push('=');
            match v {
                Value::String(s) => haystack.push_str(&s.to_lowercase()),
                other => haystack.push_str(&other.to_string().to_lowercase()),
            }
            haystack.push('\n');
        }
        Stored { record, json, haystack }
    }

    pub fn id(&self) -> u64 {
        self.record.id
    }

    /// Case-insensitive substring match; `needle` must already be lowercase.
    fn matches(&self, needle_lower: &str) -> bool {
        needle_lower.is_empty() || self.haystack.contains(needle_lower)
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

/// What a reader missed and what it gets next, for SSE.
#[derive(Debug)]
pub struct Since {
    /// Entries with a larger id than asked for, oldest first.
    pub entries: Vec<Arc<Stored>>,
    /// Entries that were evicted (or cleared) before the reader saw them.
    pub missed: u64,
}

/// The in-memory store: the newest `capacity` records. Ids start at 1 and
/// only grow; neither eviction nor [`Ring::clear`] ever reuses one.
#[derive(Debug)]
pub struct Ring {
    capacity: usize,
    entries: VecDeque<Arc<Stored>>,
    last_id: u64,
    /// Bumped by every clear, so streams can tell clients.
    clears: u64,
    /// Ids at or below this were cleared (not evicted).
    cleared_upto: u64,
}

impl Ring {
    pub fn new(capacity: usize) -> Ring {
        let capacity = capacity.max(1);
        Ring {
            capacity,
            entries: VecDeque::with_capacity(capacity.min(1 << 16)),
            last_id: 0,
            clears: 0,
            cleared_upto: 0,
        }
    }

    /// Stores a record under the next id and returns it.
    pub fn push(&mut self, mut record: Record) -> Arc<Stored> {
        self.last_id += 1;
        record.id = self.last_id;
        if self.entries.len() == self.capacity {
            self.entries.pop_front();
        }
        let s = Arc::new(Stored::new(record));
        self.entries.push_back(Arc::clone(&s));
        s
    }

    /// Removes every entry; ids continue where they were. Returns how many
    /// were removed.
    pub fn clear(&mut self) -> usize {
        let n = self.entries.len();
        self.entries.clear();
        self.clears += 1;
        self.cleared_upto = self.last_id;
        n
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn last_id(&self) -> u64 {
        self.last_id
    }

    pub fn clears(&self) -> u64 {
        self.clears
    }

    /// Newest first: entries with id > `since_id` matching `q`, at most `limit`.
    pub fn query(&self, q: &Query) -> Vec<Arc<Stored>> {
        self.entries
            .iter()
            .rev()
            .take_while(|s| s.id() > q.since_id)
            .filter(|s| s.matches(&q.q))
            .take(q.limit)
            .cloned()
            .collect()
    }

    /// Oldest first: up to `max` entries with id > `after`, and how many
    /// in between are gone (evicted; cleared entries are not "missed").
    pub fn since(&self, after: u64, max: usize) -> Since {
        let first_kept = self.entries.front().map_or(self.last_id + 1, |s| s.id());
        let floor = after.max(self.cleared_upto);
        let missed = first_kept.saturating_sub(floor + 1);
        let start = self.entries.partition_point(|s| s.id() <= after);
        let entries = self.entries.range(start..).take(max).cloned().collect();
        Since { entries, missed }
    }
}

#[cfg(test)]
mod tests {
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

    fn rec(msg: &str, host: &str) -> Record {
        let mut r = normalize(&obj(json!({"msg": msg, "action": "BLOCKED", "qname": host})), &ctx()).unwrap();
        r.id = 999; // the ring overrides it
        r
    }

    #[test]
    fn ids_grow_across_eviction_and_clear() {
        let mut ring = Ring::new(3);
        let ids: Vec<u64> = (0..5).map(|i| ring.push(rec(&format!("m{i}"), "h")).id()).collect();
        assert_eq!(ids, [1, 2, 3, 4, 5]);
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.clear(), 3);
        assert!(ring.is_empty());
        assert_eq!(ring.push(rec("after", "h")).id(), 6);
        assert_eq!(ring.last_id(), 6);
        assert_eq!(ring.clears(), 1);
    }

    #[test]
    fn query_table() {
        let mut ring = Ring::new(100);
        ring.push(rec("https.blocked", "Evil.Example"));
        ring.push(rec("dns.allowed", "github.com"));
        ring.push(rec("http.blocked", "evil.example"));
        ring.push(rec("dns.blocked", "other.org"));
        let q = |q: &str, since_id: u64, limit: usize| -> Vec<u64> {
            ring.query(&Query { q: q.to_lowercase(), since_id, limit }).iter().map(|s| s.id()).collect()
        };
        assert_eq!(q("", 0, 10), [4, 3, 2, 1], "newest first");
        assert_eq!(q("EVIL", 0, 10), [3, 1], "case-insensitive over fields");
        assert_eq!(q("dns.", 0, 10), [4, 2], "over msg");
        assert_eq!(q("qname=github", 0, 10), [2], "field names too");
        // g0efilter matches the raw JSON of the fields.
        assert_eq!(q("\"qname\":\"github.com\"", 0, 10), [2], "raw JSON of fields");
        assert_eq!(q("\"qname\":\"evil.", 0, 10), [3, 1]);
        assert_eq!(q("", 2, 10), [4, 3], "since_id is exclusive");
        assert_eq!(q("", 0, 2), [4, 3], "limit");
        assert_eq!(q("evil", 1, 10), [3]);
        assert_eq!(q("nothing", 0, 10), Vec::<u64>::new());
    }

    #[test]
    fn since_reports_missed_entries() {
        let mut ring = Ring::new(3);
        for i in 0..5 {
            ring.push(rec(&format!("m{i}"), "h"));
        }
        // Kept: 3, 4, 5.
        let ids = |s: &Since| s.entries.iter().map(|e| e.id()).collect::<Vec<_>>();
        let s = ring.since(0, 10);
        assert_eq!((ids(&s), s.missed), (vec![3, 4, 5], 2));
        let s = ring.since(3, 10);
        assert_eq!((ids(&s), s.missed), (vec![4, 5], 0));
        let s = ring.since(3, 1);
        assert_eq!((ids(&s), s.missed), (vec![4], 0));
        let s = ring.since(5, 10);
        assert_eq!((ids(&s), s.missed), (vec![], 0));
        // After a clear, cleared entries are not "missed".
        ring.clear();
        ring.push(rec("x", "h"));
        let s = ring.since(4, 10);
        assert_eq!((ids(&s), s.missed), (vec![6], 0));
        let s = ring.since(0, 10);
        assert_eq!((ids(&s), s.missed), (vec![6], 0));
    }
}
