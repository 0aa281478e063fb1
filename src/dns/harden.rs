//! DNS hardening (`DNS_HARDENING`): limits that stop data leaving the pod
//! through allowed names (a DNS tunnel: `<data>.t.allowed.example`,
//! answered by the tunnel's own authoritative server through the allowed
//! zone) without touching ordinary lookups.
//!
//! Pure: [`Limits`] (the configuration), [`Limits::check_query`] and
//! [`Limits::check_answer`] (per message), and [`Budget`], the per-client
//! state of the rate limit and of the per-zone budget of distinct names,
//! with the time passed in. The server asks [`Budget::check`] before it
//! forwards an allowed query and emits an event only when a refusal says
//! `report`: once per client (rate) or per client and zone (budget) and
//! window, not once per query.
//!
//! Memory is bounded: at most [`defaults::MAX_CLIENTS`] rate buckets and
//! [`defaults::MAX_ZONES`] (client, zone) windows are kept (the oldest
//! goes first), and a window remembers at most the budget's number of
//! distinct names, each as a keyed 64-bit hash (a random key per server,
//! so a tunnel cannot pick names that collide with ones already counted).

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::hash::{BuildHasher, Hash};
use std::time::{Duration, Instant};

use hickory_proto::rr::RecordType;

use crate::policy::Pattern;

/// Defaults and bounds, in one place.
pub mod defaults {
    use std::time::Duration;
    /// RFC 1035 allows 253 characters; real names stay far below (long
    /// cloud load-balancer names are about 100), tunnels fill them up.
    pub const MAX_NAME_LEN: usize = 200;
    /// RFC 1035 allows 63; tunnels use every byte of a label.
    pub const MAX_LABEL_LEN: usize = 60;
    /// TXT data per answer: SPF, DKIM keys (4096-bit ~ 800 bytes) and
    /// site verifications fit; a tunnel's downstream of several KiB per
    /// answer does not.
    pub const MAX_TXT_BYTES: usize = 2048;
    /// Queries per second per client, refilled continuously.
    pub const RATE_QPS: u32 = 50;
    /// Queries a client may send at once on top of the rate.
    pub const RATE_BURST: u32 = 100;
    /// Distinct names per allowed zone per client per [`WINDOW`].
    pub const ZONE_BUDGET: u32 = 300;
    /// The budget's window; also how often a throttled client is reported.
    pub const WINDOW: Duration = Duration::from_secs(60);
    /// Clients with a rate bucket at once.
    pub const MAX_CLIENTS: usize = 1024;
    /// (client, zone) budget windows at once.
    pub const MAX_ZONES: usize = 1024;
    /// The largest budget accepted (each window keeps up to this many
    /// 8-byte hashes).
    pub const MAX_ZONE_BUDGET: u32 = 10_000;
    /// A client over its rate is still answered REFUSED for this many
    /// times its rate (and burst); past that its datagrams are dropped
    /// unread, so a flood costs the server a receive and a lookup per
    /// datagram, not a parse and a reply.
    pub const REFUSALS_PER_QUERY: u32 = 10;
}

/// The limits in effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max_name_len: usize,
    pub max_label_len: usize,
    pub max_txt_bytes: usize,
    pub rate_qps: u32,
    pub rate_burst: u32,
    pub zone_budget: u32,
    pub window: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_name_len: defaults::MAX_NAME_LEN,
            max_label_len: defaults::MAX_LABEL_LEN,
            max_txt_bytes: defaults::MAX_TXT_BYTES,
            rate_qps: defaults::RATE_QPS,
            rate_burst: defaults::RATE_BURST,
            zone_budget: defaults::ZONE_BUDGET,
            window: defaults::WINDOW,
        }
    }
}

impl fmt::Display for Limits {
    /// The start-up line: which limits are active.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "names up to {} characters, labels up to {}, TXT answers up to {} bytes, \
             {} queries/s (burst {}) and {} distinct names per allowed zone per {}s per client; \
             NULL, private-use and unknown query types refused",
            self.max_name_len,
            self.max_label_len,
            self.max_txt_bytes,
            self.rate_qps,
            self.rate_burst,
            self.zone_budget,
            self.window.as_secs()
        )
    }
}

/// Why hardening refused a query or an answer (the event `reason`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    NameLength,
    LabelLength,
    QueryType,
    TxtSize,
    Rate,
    Budget,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NameLength => "name-length",
            Reason::LabelLength => "label-length",
            Reason::QueryType => "qtype",
            Reason::TxtSize => "txt-size",
            Reason::Rate => "rate",
            Reason::Budget => "budget",
        }
    }
}

/// A refusal: REFUSED for the client, and an event when `report`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: Reason,
    pub note: String,
    /// The first refusal of its kind in the window: say so once.
    pub report: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Refuse(Refusal),
}

/// Query types a workload asks for in ordinary use. Everything else is
/// refused: NULL (iodine's favourite: arbitrary bytes), the private-use
/// range 65280-65534, types nobody assigned, zone transfers.
const QUERY_TYPES: &[RecordType] = &[
    RecordType::A,
    RecordType::AAAA,
    RecordType::ANY,
    RecordType::CAA,
    RecordType::CNAME,
    RecordType::DNSKEY,
    RecordType::DS,
    RecordType::HTTPS,
    RecordType::MX,
    RecordType::NAPTR,
    RecordType::NS,
    RecordType::PTR,
    RecordType::SOA,
    RecordType::SRV,
    RecordType::SSHFP,
    RecordType::SVCB,
    RecordType::TLSA,
    RecordType::TXT,
];

impl Limits {
    /// The checks of one question that need no state: name and label
    /// lengths (`name` without its trailing dot), the query type.
    pub fn check_query(&self, name: &str, qtype: RecordType) -> Option<Refusal> {
        let name = name.strip_suffix('.').unwrap_or(name);
        let refuse = |reason, note| Some(Refusal { reason, note, report: true });
        if name.len() > self.max_name_len {
            return refuse(
                Reason::NameLength,
                format!("name of {} characters (DNS_MAX_NAME_LEN {})", name.len(), self.max_name_len),
            );
        }
        if let Some(l) = name.split('.').find(|l| l.len() > self.max_label_len) {
            return refuse(
                Reason::LabelLength,
                format!("label of {} characters (DNS_MAX_LABEL_LEN {})", l.len(), self.max_label_len),
            );
        }
        if !QUERY_TYPES.contains(&qtype) {
            // RFC 3597's TYPEn for a type without a mnemonic.
            let t = match qtype {
                RecordType::Unknown(n) => format!("TYPE{n}"),
                t => t.to_string(),
            };
            return refuse(Reason::QueryType, format!("query type {t} refused"));
        }
        None
    }

    /// An answer carrying `txt_bytes` of TXT data.
    pub fn check_answer(&self, txt_bytes: usize) -> Option<Refusal> {
        (txt_bytes > self.max_txt_bytes).then(|| Refusal {
            reason: Reason::TxtSize,
            note: format!("{txt_bytes} bytes of TXT (DNS_MAX_TXT_BYTES {})", self.max_txt_bytes),
            report: true,
        })
    }
}

/// Before a UDP datagram is read: whether its client is within its rate
/// ([`Budget::flood`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flood {
    /// Tokens are left (none is taken: [`Budget::check`] takes it).
    Under,
    /// Over the rate: read it and answer REFUSED (as `check` will).
    Refuse,
    /// Over the rate and past its refusals too: drop it unread.
    Drop,
}

/// A client's token bucket.
#[derive(Debug, Clone)]
struct Bucket {
    tokens: f64,
    /// Refusals it may still be answered ([`defaults::REFUSALS_PER_QUERY`]
    /// times the rate's bucket).
    refusals: f64,
    last: Instant,
    /// Start of the window in which its throttling was last reported.
    reported: Option<Instant>,
}

/// One client's distinct names under one zone in the current window.
#[derive(Debug, Clone)]
struct ZoneWindow {
    start: Instant,
    /// Keyed hashes of the names counted, at most the budget.
    names: HashSet<u64>,
    /// Distinct names refused after the budget ran out (an estimate:
    /// refused names are not remembered, so a repeat counts again).
    over: u64,
    reported: bool,
}

/// Rate buckets and zone windows of every client (`K`: who a client is,
/// `peer::Client` in the server).
#[derive(Debug)]
pub struct Budget<K> {
    limits: Limits,
    hasher: RandomState,
    buckets: HashMap<K, Bucket>,
    zones: HashMap<(K, u64), ZoneWindow>,
}

impl<K: Hash + Eq + Copy> Budget<K> {
    pub fn new(limits: Limits) -> Budget<K> {
        Budget { limits, hasher: RandomState::new(), buckets: HashMap::new(), zones: HashMap::new() }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Tracked (rate buckets, zone windows): both stay within their caps.
    pub fn tracked(&self) -> (usize, usize) {
        (self.buckets.len(), self.zones.len())
    }

    /// The whole decision on an allowed query for `name` (normalised,
    /// lowercase) of type `qtype` under the allowed `zone`, from `client`
    /// at `now`: the per-message checks, the client's rate, then the
    /// zone's budget of distinct names. A name already counted in the
    /// window always passes the budget, so a client's ordinary lookups go
    /// on while its tunnel is throttled.
    pub fn check(&mut self, client: K, name: &str, qtype: RecordType, zone: &str, now: Instant) -> Verdict {
        if let Some(r) = self.rate(client, now) {
            return Verdict::Refuse(r);
        }
        if let Some(r) = self.limits.check_query(name, qtype) {
            return Verdict::Refuse(r);
        }
        match self.budget(client, name, zone, now) {
            Some(r) => Verdict::Refuse(r),
            None => Verdict::Allow,
        }
    }

    /// The cheap look before a datagram is even parsed: the client's
    /// bucket, refilled to `now`. Under the rate nothing is taken; over
    /// it, one of its refusals is, and once those are spent too the
    /// datagram is to be dropped.
    pub fn flood(&mut self, client: K, now: Instant) -> Flood {
        let b = self.bucket(client, now);
        if b.tokens >= 1.0 {
            Flood::Under
        } else if b.refusals >= 1.0 {
            b.refusals -= 1.0;
            Flood::Refuse
        } else {
            Flood::Drop
        }
    }

    /// `client`'s bucket refilled to `now` (a new one full).
    fn bucket(&mut self, client: K, now: Instant) -> &mut Bucket {
        let l = self.limits;
        let cap = f64::from(l.rate_burst) + f64::from(l.rate_qps);
        let factor = f64::from(defaults::REFUSALS_PER_QUERY);
        if !self.buckets.contains_key(&client) && self.buckets.len() >= defaults::MAX_CLIENTS {
            // The least recently seen client makes room (a full bucket
            // for it when it comes back: generous, never stuck).
            if let Some(k) = self.buckets.iter().min_by_key(|(_, b)| b.last).map(|(k, _)| *k) {
                self.buckets.remove(&k);
            }
        }
        let b = self.buckets.entry(client).or_insert(Bucket {
            tokens: cap,
            refusals: cap * factor,
            last: now,
            reported: None,
        });
        let dt = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + dt * f64::from(l.rate_qps)).min(cap);
        b.refusals = (b.refusals + dt * f64::from(l.rate_qps) * factor).min(cap * factor);
        b.last = now;
        b
    }

    fn rate(&mut self, client: K, now: Instant) -> Option<Refusal> {
        let l = self.limits;
        let b = self.bucket(client, now);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return None;
        }
        let report = match b.reported {
            Some(t) if now.saturating_duration_since(t) < l.window => false,
            _ => {
                b.reported = Some(now);
                true
            }
        };
        Some(Refusal {
            reason: Reason::Rate,
            note: format!(
                "over {} queries/s with a burst of {} (DNS_RATE_QPS, DNS_RATE_BURST); \
                 reported once per {}s",
                l.rate_qps,
                l.rate_burst,
                l.window.as_secs()
            ),
            report,
        })
    }

    fn budget(&mut self, client: K, name: &str, zone: &str, now: Instant) -> Option<Refusal> {
        let l = self.limits;
        let key = (client, self.hasher.hash_one(zone));
        if !self.zones.contains_key(&key) && self.zones.len() >= defaults::MAX_ZONES {
            self.zones.retain(|_, w| now.saturating_duration_since(w.start) < l.window);
            if self.zones.len() >= defaults::MAX_ZONES {
                if let Some(k) = self.zones.iter().min_by_key(|(_, w)| w.start).map(|(k, _)| *k) {
                    self.zones.remove(&k);
                }
            }
        }
        let w = self.zones.entry(key).or_insert_with(|| ZoneWindow {
            start: now,
            names: HashSet::new(),
            over: 0,
            reported: false,
        });
        if now.saturating_duration_since(w.start) >= l.window {
            *w = ZoneWindow { start: now, names: HashSet::new(), over: 0, reported: false };
        }
        let h = self.hasher.hash_one(name);
        if w.names.contains(&h) {
            return None;
        }
        if w.names.len() < l.zone_budget as usize {
            w.names.insert(h);
            return None;
        }
        w.over += 1;
        let report = !std::mem::replace(&mut w.reported, true);
        Some(Refusal {
            reason: Reason::Budget,
            note: format!(
                "zone {zone}: {} distinct names within {}s (DNS_ZONE_BUDGET {})",
                w.names.len() as u64 + w.over,
                l.window.as_secs(),
                l.zone_budget
            ),
            report,
        })
    }
}

/// The zone a name counts against: the suffix of the rule that allowed it
/// (`*.allowed.example` → `allowed.example`), the name itself for an exact
/// rule, the labels after a `*` pattern's last star (`api-*.example.com` →
/// `example.com`), and its last two labels under `*` or a `/regex/`.
pub fn zone_of<'a>(name: &'a str, rule: Option<&'a Pattern>) -> &'a str {
    let glob_zone = |g: &'a str| g.rsplit('*').next().and_then(|t| t.split_once('.')).map(|(_, z)| z);
    match rule {
        Some(Pattern::Exact(n) | Pattern::Subdomains(n)) => n,
        Some(Pattern::Glob(g)) if glob_zone(g).is_some_and(|z| !z.is_empty()) => glob_zone(g).unwrap_or(name),
        Some(Pattern::Any | Pattern::Glob(_) | Pattern::Regex(_)) | None => {
            let mut dots = name.rmatch_indices('.');
            match (dots.next(), dots.next()) {
                (Some(_), Some((i, _))) => &name[i + 1..],
                _ => name,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits() -> Limits {
        Limits { rate_qps: 10, rate_burst: 5, zone_budget: 3, ..Limits::default() }
    }

    fn reason(v: &Verdict) -> Option<(Reason, bool)> {
        match v {
            Verdict::Allow => None,
            Verdict::Refuse(r) => Some((r.reason, r.report)),
        }
    }

    #[test]
    fn lengths_and_types_at_their_boundaries() {
        let l = Limits::default();
        let label = |n: usize| "a".repeat(n);
        let name_of = |n: usize| {
            // Labels of 50 and dots up to exactly n characters.
            let mut s = String::new();
            while s.len() < n {
                if !s.is_empty() {
                    s.push('.');
                }
                let left = n - s.len();
                s.push_str(&"b".repeat(left.min(50)));
            }
            s
        };
        assert_eq!(name_of(200).len(), 200);
        assert_eq!(l.check_query(&name_of(200), RecordType::A), None);
        assert_eq!(l.check_query(&format!("{}.", name_of(200)), RecordType::A), None, "trailing dot");
        let r = l.check_query(&name_of(201), RecordType::A).unwrap();
        assert_eq!(
            (r.reason, r.note.as_str()),
            (Reason::NameLength, "name of 201 characters (DNS_MAX_NAME_LEN 200)")
        );
        assert_eq!(l.check_query(&format!("{}.example.com", label(60)), RecordType::A), None);
        let r = l.check_query(&format!("{}.example.com", label(61)), RecordType::A).unwrap();
        assert_eq!(r.reason, Reason::LabelLength);
        for t in [RecordType::A, RecordType::AAAA, RecordType::TXT, RecordType::HTTPS, RecordType::ANY] {
            assert_eq!(l.check_query("www.example.com", t), None, "{t}");
        }
        for t in [RecordType::NULL, RecordType::Unknown(65399), RecordType::Unknown(65280), RecordType::AXFR]
        {
            let r = l.check_query("www.example.com", t).unwrap();
            assert_eq!(r.reason, Reason::QueryType, "{t}");
        }
        let r = l.check_query("x.example.com", RecordType::Unknown(65399)).unwrap();
        assert_eq!(r.note, "query type TYPE65399 refused");
        assert_eq!(l.check_answer(2048), None);
        assert_eq!(l.check_answer(2049).unwrap().reason, Reason::TxtSize);
    }

    #[test]
    fn rate_allows_rate_plus_burst_then_refuses_and_reports_once_per_window() {
        let t0 = Instant::now();
        let mut b: Budget<u8> = Budget::new(limits());
        let go = |b: &mut Budget<u8>, c: u8, t: Instant| {
            reason(&b.check(c, "a.example.com", RecordType::A, "example.com", t))
        };
        // Capacity: burst 5 + one second's rate 10.
        for i in 0..15 {
            assert_eq!(go(&mut b, 1, t0), None, "query {i}");
        }
        assert_eq!(go(&mut b, 1, t0), Some((Reason::Rate, true)), "the first refusal is reported");
        assert_eq!(go(&mut b, 1, t0), Some((Reason::Rate, false)), "the next are not");
        assert_eq!(go(&mut b, 2, t0), None, "another client has its own bucket");
        // 100 ms later one token is back.
        let t1 = t0 + Duration::from_millis(100);
        assert_eq!(go(&mut b, 1, t1), None);
        assert_eq!(go(&mut b, 1, t1), Some((Reason::Rate, false)));
        // A window later, a refusal is reported again.
        let t2 = t0 + Duration::from_secs(60);
        for _ in 0..15 {
            assert_eq!(go(&mut b, 1, t2), None);
        }
        assert_eq!(go(&mut b, 1, t2), Some((Reason::Rate, true)));
    }

    #[test]
    fn a_flood_is_refused_for_ten_times_the_rate_then_dropped_unread() {
        let t0 = Instant::now();
        let mut b: Budget<u8> = Budget::new(limits());
        assert_eq!(b.flood(1, t0), Flood::Under, "a new client");
        assert_eq!(b.flood(1, t0), Flood::Under, "looking takes no token");
        for _ in 0..15 {
            assert!(matches!(b.check(1, "a.z.test", RecordType::A, "z.test", t0), Verdict::Allow));
        }
        // Over: 10 x (burst 5 + rate 10) refusals, then drops.
        for i in 0..150 {
            assert_eq!(b.flood(1, t0), Flood::Refuse, "refusal {i}");
        }
        assert_eq!(b.flood(1, t0), Flood::Drop);
        assert_eq!(b.flood(2, t0), Flood::Under, "another client has its own bucket");
        // 10 ms later: a tenth of a query's token, one refusal.
        let t1 = t0 + Duration::from_millis(10);
        assert_eq!(b.flood(1, t1), Flood::Refuse);
        assert_eq!(b.flood(1, t1), Flood::Drop);
        // 100 ms later a query's token is back.
        assert_eq!(b.flood(1, t0 + Duration::from_millis(110)), Flood::Under);
    }

    #[test]
    fn zone_budget_counts_distinct_names_and_rolls_over() {
        let t0 = Instant::now();
        let l = Limits { rate_qps: 1000, rate_burst: 1000, ..limits() };
        let mut b: Budget<u8> = Budget::new(l);
        let mut go =
            |c: u8, name: &str, zone: &str, t: Instant| reason(&b.check(c, name, RecordType::A, zone, t));
        for n in ["a.t.z.test", "b.t.z.test", "c.t.z.test"] {
            assert_eq!(go(1, n, "z.test", t0), None, "{n}");
        }
        assert_eq!(go(1, "a.t.z.test", "z.test", t0), None, "a repeat costs nothing");
        assert_eq!(go(1, "d.t.z.test", "z.test", t0), Some((Reason::Budget, true)), "the 4th distinct name");
        assert_eq!(go(1, "e.t.z.test", "z.test", t0), Some((Reason::Budget, false)), "reported once");
        assert_eq!(go(1, "b.t.z.test", "z.test", t0), None, "names counted before still resolve");
        assert_eq!(go(1, "www.other.test", "other.test", t0), None, "another zone has its own budget");
        assert_eq!(go(2, "d.t.z.test", "z.test", t0), None, "another client has its own budget");
        let t1 = t0 + Duration::from_secs(59);
        assert_eq!(go(1, "f.t.z.test", "z.test", t1), Some((Reason::Budget, false)), "same window");
        let t2 = t0 + Duration::from_secs(60);
        assert_eq!(go(1, "f.t.z.test", "z.test", t2), None, "a new window");
        for n in ["g.t.z.test", "h.t.z.test"] {
            assert_eq!(go(1, n, "z.test", t2), None, "{n}");
        }
        assert_eq!(go(1, "i.t.z.test", "z.test", t2), Some((Reason::Budget, true)), "reported again");
    }

    #[test]
    fn the_budget_note_names_zone_and_count() {
        let t0 = Instant::now();
        let l = Limits { rate_qps: 1000, rate_burst: 1000, zone_budget: 2, ..Limits::default() };
        let mut b: Budget<u8> = Budget::new(l);
        b.check(1, "a.z.test", RecordType::A, "z.test", t0);
        b.check(1, "b.z.test", RecordType::A, "z.test", t0);
        let Verdict::Refuse(r) = b.check(1, "c.z.test", RecordType::A, "z.test", t0) else {
            panic!("allowed")
        };
        assert_eq!(r.note, "zone z.test: 3 distinct names within 60s (DNS_ZONE_BUDGET 2)");
    }

    #[test]
    fn memory_is_bounded_in_clients_zones_and_names() {
        let t0 = Instant::now();
        let l = Limits { rate_qps: 1000, rate_burst: 1000, zone_budget: 50, ..Limits::default() };
        let mut b: Budget<u32> = Budget::new(l);
        for c in 0..(defaults::MAX_CLIENTS as u32 * 3) {
            for z in 0..3 {
                let zone = format!("z{z}.test");
                b.check(
                    c,
                    &format!("n.{zone}"),
                    RecordType::A,
                    &zone,
                    t0 + Duration::from_millis(u64::from(c)),
                );
            }
        }
        let (clients, zones) = b.tracked();
        assert!(clients <= defaults::MAX_CLIENTS, "{clients}");
        assert!(zones <= defaults::MAX_ZONES, "{zones}");
        // One client, one zone, 10,000 distinct names: the window keeps 50.
        for i in 0..10_000 {
            b.check(7, &format!("{i}.t.z.test"), RecordType::A, "z.test", t0);
        }
        let key = (7u32, b.hasher.hash_one("z.test"));
        assert_eq!(b.zones[&key].names.len(), 50);
    }

    #[test]
    fn a_client_evicted_for_room_comes_back_with_a_full_bucket() {
        let t0 = Instant::now();
        let mut b: Budget<u32> = Budget::new(limits());
        for _ in 0..16 {
            b.check(0, "a.z.test", RecordType::A, "z.test", t0);
        }
        for c in 1..=(defaults::MAX_CLIENTS as u32) {
            b.check(c, "a.z.test", RecordType::A, "z.test", t0 + Duration::from_millis(1));
        }
        assert!(b.tracked().0 <= defaults::MAX_CLIENTS);
        assert_eq!(
            reason(&b.check(0, "a.z.test", RecordType::A, "z.test", t0 + Duration::from_millis(2))),
            None
        );
    }

    #[test]
    fn zones_follow_the_rule_that_allowed_the_name() {
        let sub = Pattern::Subdomains("allowed.example".into());
        assert_eq!(zone_of("a.b.allowed.example", Some(&sub)), "allowed.example");
        let exact = Pattern::Exact("allowed.test".into());
        assert_eq!(zone_of("allowed.test", Some(&exact)), "allowed.test");
        assert_eq!(zone_of("x.y.example.com", Some(&Pattern::Any)), "example.com");
        let glob = Pattern::Glob("api-*.example.com".into());
        assert_eq!(zone_of("api-x.y.example.com", Some(&glob)), "example.com");
        let tail = Pattern::Glob("cdn*".into());
        assert_eq!(zone_of("cdn1.x.example.org", Some(&tail)), "example.org");
        let re = Pattern::Regex("api[0-9]+\\.example\\.com".into());
        assert_eq!(zone_of("api1.example.com", Some(&re)), "example.com");
        assert_eq!(zone_of("localhost", None), "localhost");
    }
}
