//! Remote unblock, the pure core (`ENABLE_REMOTE_UNBLOCK`): an operator
//! allows one policy entry from the dashboard, for a while or for good,
//! for one agent or for all; the agent applies the active ones as extra
//! allowlist entries (named `unblock #ID`) through the normal reload.
//!
//! Here: the entry check both sides use ([`check_entry`], egret's own
//! policy parser), the dashboard's answer and the agent's file
//! (parse and render), the active set at a given time, the next expiry,
//! and the overlay handed to the policy compiler. No I/O; time is passed
//! in (Unix nanoseconds, as the dashboard stores it). The poller thread
//! is `events::unblock`, the file I/O `startup::load_policy`.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::policy::{self, Origin, Policy, Source, Spec};

/// Path of the agent's endpoint on the dashboard.
pub const AGENT_PATH: &str = "/api/v1/agent/unblocks";
/// Path of the agent's acknowledgement.
pub const ACK_PATH: &str = "/api/v1/agent/unblocks/ack";
/// Longest entry accepted.
pub const MAX_ENTRY: usize = 512;
/// Most unblocks one answer (or the file) may hold; beyond is refused.
pub const MAX_UNBLOCKS: usize = 1000;
/// The file's format version.
pub const FILE_VERSION: u64 = 1;

#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// The answer or the file is not the JSON this module writes.
    Format(String),
    /// More than [`MAX_UNBLOCKS`] records.
    TooMany(usize),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Format(why) => write!(f, "unblocks: not an unblock list: {why}"),
            Error::TooMany(n) => write!(f, "unblocks: {n} records, more than {MAX_UNBLOCKS}"),
        }
    }
}

impl std::error::Error for Error {}

/// A record not applied: its id and why.
pub type Refusal = (u64, String);

/// One unblock, as the dashboard sends it and the agent keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unblock {
    pub id: u64,
    /// The agent it is for; `None`: every agent.
    #[serde(default)]
    pub agent: Option<String>,
    /// A policy entry: a name, a name pattern, an address or CIDR, either
    /// optionally with a protocol and ports.
    pub entry: String,
    /// Unix nanoseconds; `None`: for good.
    #[serde(default)]
    pub until: Option<i64>,
    #[serde(default)]
    pub created_by: String,
    #[serde(default)]
    pub created_at: i64,
    /// The operator allowed an entry as wide as `*` or a /0.
    #[serde(default)]
    pub force: bool,
}

impl Unblock {
    /// Whether it is still in force at `now`.
    pub fn active_at(&self, now: i64) -> bool {
        self.until.map_or(true, |u| u > now)
    }

    /// Whether it is meant for `agent`.
    pub fn is_for(&self, agent: &str) -> bool {
        self.agent.as_deref().map_or(true, |a| a == agent)
    }

    /// `#7 "pay.example.com" for edge-1 by alice until <nanos>`, for logs.
    pub fn describe(&self) -> String {
        let whom = self.agent.as_deref().map_or_else(|| "every agent".to_owned(), |a| a.to_owned());
        let until = match self.until {
            None => "for good".to_owned(),
            Some(u) => format!("until {}", crate::time::format_rfc3339_nanos(i128::from(u))),
        };
        format!("#{} {:?} for {whom} by {} {until}", self.id, self.entry, self.created_by)
    }
}

/// Checks an entry with egret's own policy parser: `Ok(())` when it would
/// compile as an allowlist entry and is not wider than one destination
/// class (`*` and a /0 need `force`). The error lists every problem.
pub fn check_entry(entry: &str, force: bool) -> Result<(), String> {
    let e = entry.trim();
    if e.is_empty() {
        return Err("empty entry".into());
    }
    if e.len() > MAX_ENTRY {
        return Err(format!("entry longer than {MAX_ENTRY} bytes"));
    }
    if e.chars().any(char::is_control) {
        return Err("entry has control characters".into());
    }
    let one = [e.to_owned()];
    let src = [Source { origin: Origin::Unblock(0), entries: &one }];
    let spec = if policy::is_address_entry(e) {
        Spec { allow_ips: &src, ..Spec::default() }
    } else {
        Spec { allow_domains: &src, ..Spec::default() }
    };
    let p = Policy::compile_spec(&spec)
        .map_err(|errs| errs.0.iter().map(|x| x.reason.clone()).collect::<Vec<_>>().join("; "))?;
    if !force && is_everything(&p) {
        return Err("allows every name or every address ('*' or a /0): send force: true to mean it".into());
    }
    if !force && !policy::is_address_entry(e) && is_broad_name(e) {
        return Err(
            "a regular expression, or a wildcard with no fixed label, may match every name: send force: true to mean it"
                .into(),
        );
    }
    Ok(())
}

/// A name entry whose reach egret cannot bound by its text: any `/regex/`
/// (`/.*/` matches every name as `*` does), or a wildcard none of whose
/// labels is fixed (`*.*`). Round 8: such entries passed without `force`.
fn is_broad_name(entry: &str) -> bool {
    let name = entry.rsplit_once('/').map_or(entry, |(_, n)| n);
    entry.starts_with('/') || name.split('.').all(|l| !l.chars().any(|c| c.is_ascii_alphanumeric()))
}

/// Why an address unblock touches a class the SSRF guard keeps closed
/// (`GUARD_ADDRESSES`), if it does: the guard lets an address the
/// operator lists in `allowlist.ips` through, and an unblock must not
/// become a way around it.
pub fn guarded(entry: &str, guard: &policy::Guard) -> Option<String> {
    let e = entry.trim();
    let cidr =
        policy::Cidr::parse(e).map(|c| c.0).ok().or_else(|| policy::port::parse(e).ok().map(|p| p.0.cidr))?;
    let set = policy::IpSet::from_cidrs(&[cidr]);
    // A block inside a guarded range (which `punch` leaves, as a listing
    // on purpose), or a wider one with a guarded range cut out of it.
    let inside = policy::guard::classify(cidr.addr).iter().any(|c| guard.classes().contains(c));
    (!guard.is_off() && (inside || guard.punch(&set) != set)).then(|| {
        format!("{cidr} is in an address class the SSRF guard keeps closed (GUARD_ADDRESSES): an unblock never opens one")
    })
}

/// `list` without the records [`guarded`] refuses, and those with why.
pub fn split_guarded(list: Vec<Unblock>, guard: &policy::Guard) -> (Vec<Unblock>, Vec<Refusal>) {
    let (mut keep, mut refused) = (Vec::new(), Vec::new());
    for u in list {
        match guarded(&u.entry, guard) {
            Some(why) => refused.push((u.id, why)),
            None => keep.push(u),
        }
    }
    (keep, refused)
}

/// Whether the policy's allowlist matches every name, or every address
/// of a family (on some port).
fn is_everything(p: &Policy) -> bool {
    let l = p.allowlist();
    l.names.matches_everything()
        || l.ips.cidrs().iter().any(|c| c.prefix == 0)
        || l.ports.entries().iter().any(|e| e.cidr.prefix == 0)
}

/// What the dashboard answers `GET /api/v1/agent/unblocks`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Answer {
    /// The agent the key belongs to.
    pub agent: String,
    pub unblocks: Vec<Unblock>,
}

/// The answer, split: what may be applied for `agent`, and the records
/// refused with why (bad entries, another agent's). Only the shape of the
/// whole answer is an error; one bad record never stops the others.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Parsed {
    pub agent: String,
    pub good: Vec<Unblock>,
    pub refused: Vec<Refusal>,
}

/// Parses the dashboard's answer (untrusted bytes).
pub fn parse_answer(body: &[u8]) -> Result<Parsed, Error> {
    let a: Answer = serde_json::from_slice(body).map_err(|e| Error::Format(e.to_string()))?;
    if a.unblocks.len() > MAX_UNBLOCKS {
        return Err(Error::TooMany(a.unblocks.len()));
    }
    let mut out = Parsed { agent: a.agent, ..Parsed::default() };
    for u in a.unblocks {
        if !u.is_for(&out.agent) {
            out.refused
                .push((u.id, format!("for agent {:?}, not {:?}", u.agent.unwrap_or_default(), out.agent)));
            continue;
        }
        if out.good.iter().any(|g| g.id == u.id) {
            out.refused.push((u.id, "listed twice".into()));
            continue;
        }
        match check_entry(&u.entry, u.force) {
            Ok(()) => out.good.push(Unblock { entry: u.entry.trim().to_owned(), ..u }),
            Err(why) => out.refused.push((u.id, why)),
        }
    }
    out.good.sort_by_key(|u| u.id);
    Ok(out)
}

/// The agent's file: the unblocks it applied, for a restart.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct File {
    version: u64,
    unblocks: Vec<Unblock>,
}

/// The file's bytes (JSON, one record a line would be nicer; this is
/// small and read whole).
pub fn render_file(list: &[Unblock]) -> String {
    let f = File { version: FILE_VERSION, unblocks: list.to_vec() };
    // Strings, integers and options always serialise.
    serde_json::to_string_pretty(&f).unwrap_or_default() + "\n"
}

/// Reads the file: its records active at `now` whose entries check, and
/// the ones dropped with why (expired, bad entry).
pub fn parse_file(bytes: &[u8], now: i64) -> Result<(Vec<Unblock>, Vec<Refusal>), Error> {
    let f: File = serde_json::from_slice(bytes).map_err(|e| Error::Format(e.to_string()))?;
    if f.version != FILE_VERSION {
        return Err(Error::Format(format!("version {} (this egret writes {FILE_VERSION})", f.version)));
    }
    if f.unblocks.len() > MAX_UNBLOCKS {
        return Err(Error::TooMany(f.unblocks.len()));
    }
    let (mut keep, mut dropped) = (Vec::new(), Vec::new());
    for u in f.unblocks {
        if !u.active_at(now) {
            dropped.push((u.id, "expired".to_owned()));
        } else if let Err(why) = check_entry(&u.entry, u.force) {
            dropped.push((u.id, why));
        } else {
            keep.push(u);
        }
    }
    Ok((keep, dropped))
}

/// The records in force at `now`, by id.
pub fn active(list: &[Unblock], now: i64) -> Vec<Unblock> {
    let mut v: Vec<Unblock> = list.iter().filter(|u| u.active_at(now)).cloned().collect();
    v.sort_by_key(|u| u.id);
    v
}

/// When the next of them expires (Unix nanos), if any does after `now`.
pub fn next_expiry(list: &[Unblock], now: i64) -> Option<i64> {
    list.iter().filter_map(|u| u.until).filter(|u| *u > now).min()
}

/// The overlay the policy compiler takes: one entry per unblock id.
pub fn overlay(list: &[Unblock]) -> Vec<(u64, Vec<String>)> {
    list.iter().map(|u| (u.id, vec![u.entry.trim().to_owned()])).collect()
}

/// What changed between the applied set and the wanted one: the records
/// new (or changed), and those gone (expired or revoked).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Change {
    pub applied: Vec<Unblock>,
    pub gone: Vec<Unblock>,
}

impl Change {
    pub fn is_empty(&self) -> bool {
        self.applied.is_empty() && self.gone.is_empty()
    }
}

pub fn diff(old: &[Unblock], new: &[Unblock]) -> Change {
    Change {
        applied: new.iter().filter(|n| !old.contains(n)).cloned().collect(),
        gone: old.iter().filter(|o| !new.iter().any(|n| n.id == o.id)).cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn u(id: u64, entry: &str, until: Option<i64>) -> Unblock {
        Unblock {
            id,
            agent: None,
            entry: entry.into(),
            until,
            created_by: "alice".into(),
            created_at: 1,
            force: false,
        }
    }

    #[test]
    fn entries_are_checked_by_the_policy_parser() {
        for ok in [
            "pay.example.com",
            "*.example.com",
            "api-*.example.com",
            "tcp/db.example.com:5432",
            "192.0.2.7",
            "10.1.0.0/16",
            "tcp/192.0.2.7:443",
            "[2001:db8::1]:443",
            "192.0.2.7:8443",
        ] {
            assert_eq!(check_entry(ok, false), Ok(()), "{ok}");
        }
        // Round 8: what may match every name needs force, however written.
        for broad in ["/^a[0-9]+\\.example\\.com$/", "/.*/", "*.*", "*.*.*"] {
            assert!(check_entry(broad, false).is_err_and(|e| e.contains("force")), "{broad}");
            assert_eq!(check_entry(broad, true), Ok(()), "{broad} with force");
        }
        for (bad, says) in [
            ("", "empty"),
            ("exa mple.com", ""),
            ("*.", ""),
            ("tcp/*.example.com:443", "exact name"),
            ("sctp/192.0.2.7:1", "protocol"),
            ("10.0.0.0/33", ""),
            ("a\nb", "control"),
            ("*", "force"),
            ("0.0.0.0/0", "force"),
            ("::/0", "force"),
            ("tcp/0.0.0.0/0:443", "force"),
        ] {
            let e = check_entry(bad, false).unwrap_err();
            assert!(e.contains(says), "{bad:?}: {e}");
        }
        assert!(check_entry(&"a".repeat(600), false).unwrap_err().contains("longer"));
        assert_eq!(check_entry("*", true), Ok(()), "forced");
        assert_eq!(check_entry("0.0.0.0/0", true), Ok(()));
    }

    #[test]
    fn the_guard_still_applies_to_address_unblocks() {
        let g = policy::Guard::default();
        for refused in ["169.254.169.254", "tcp/127.0.0.1:8080", "0.0.0.0/0", "[fe80::1]:443", "10.0.0.0/8"] {
            let guard = if refused == "10.0.0.0/8" { policy::Guard::parse("private").unwrap() } else { g };
            assert!(guarded(refused, &guard).is_some_and(|w| w.contains("GUARD_ADDRESSES")), "{refused}");
        }
        for open in ["192.0.2.7", "tcp/198.51.100.0/24:443", "pay.example.com", "10.0.0.0/8"] {
            assert_eq!(guarded(open, &g), None, "{open}");
        }
        let (keep, refused) = split_guarded(vec![u(1, "169.254.169.254", None), u(2, "a.example", None)], &g);
        assert_eq!((keep.len(), refused[0].0), (1, 1));
    }

    #[test]
    fn the_answer_keeps_good_records_and_refuses_the_rest() {
        let body = br#"{"agent":"edge-1","unblocks":[
            {"id":3,"agent":null,"entry":" pay.example.com ","until":100,"created_by":"alice","created_at":1},
            {"id":1,"agent":"edge-1","entry":"192.0.2.7","until":null,"created_by":"bob","created_at":1},
            {"id":4,"agent":"edge-2","entry":"other.example.com","until":null},
            {"id":5,"entry":"*"},
            {"id":6,"entry":"*","force":true},
            {"id":7,"entry":"bad name!"},
            {"id":1,"entry":"dup.example.com"}]}"#;
        let p = parse_answer(body).unwrap();
        assert_eq!(p.agent, "edge-1");
        assert_eq!(p.good.iter().map(|u| u.id).collect::<Vec<_>>(), [1, 3, 6]);
        assert_eq!(p.good[1].entry, "pay.example.com", "trimmed");
        let refused: Vec<u64> = p.refused.iter().map(|r| r.0).collect();
        assert_eq!(refused, [4, 5, 7, 1]);
        assert!(p.refused[0].1.contains("edge-2"), "{:?}", p.refused);
        for bad in [&b""[..], b"[]", b"{}", b"{\"agent\":\"a\"}", b"{\"agent\":1,\"unblocks\":[]}", b"\xff"] {
            assert!(parse_answer(bad).is_err(), "{bad:?}");
        }
        let many = serde_json::json!({"agent": "a", "unblocks": (0..1001).map(|i| serde_json::json!({"id": i, "entry": "a.example"})).collect::<Vec<_>>()});
        assert_eq!(parse_answer(many.to_string().as_bytes()), Err(Error::TooMany(1001)));
    }

    #[test]
    fn active_set_next_expiry_and_overlay_at_a_given_time() {
        let list = [u(2, "b.example", Some(200)), u(1, "a.example", None), u(3, "c.example", Some(100))];
        assert_eq!(active(&list, 50).iter().map(|u| u.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(active(&list, 100).iter().map(|u| u.id).collect::<Vec<_>>(), [1, 2], "until is exclusive");
        assert_eq!(active(&list, 500).iter().map(|u| u.id).collect::<Vec<_>>(), [1]);
        assert_eq!(next_expiry(&list, 50), Some(100));
        assert_eq!(next_expiry(&list, 100), Some(200));
        assert_eq!(next_expiry(&list, 200), None);
        assert_eq!(
            overlay(&active(&list, 150)),
            vec![(1, vec!["a.example".to_owned()]), (2, vec!["b.example".to_owned()])]
        );
        let d = diff(&list[..2], &list[1..]);
        assert_eq!((d.applied[0].id, d.gone[0].id), (3, 2));
        assert!(diff(&list, &list).is_empty());
        let mut later = list[1].clone();
        later.until = Some(9);
        assert_eq!(diff(&list[1..2], &[later]).applied.len(), 1, "a changed record is applied again");
    }

    #[test]
    fn the_file_round_trips_and_drops_expired_and_bad_records() {
        let mut bad = u(9, "*", None);
        bad.force = false;
        let list = vec![u(1, "a.example", None), u(2, "b.example", Some(100)), bad];
        let text = render_file(&list);
        let (keep, dropped) = parse_file(text.as_bytes(), 150).unwrap();
        assert_eq!(keep, vec![list[0].clone()]);
        assert_eq!(dropped.iter().map(|d| d.0).collect::<Vec<_>>(), [2, 9]);
        assert_eq!(dropped[0].1, "expired");
        assert!(parse_file(b"{\"version\":2,\"unblocks\":[]}", 0).is_err());
        assert!(parse_file(b"garbage", 0).is_err());
    }

    #[test]
    fn the_overlay_compiles_as_allow_entries_named_unblock_id() {
        let raw = policy::parse_yaml("allowlist:\n  domains: [\"a.example\"]\n", "p.yaml").unwrap();
        let env = policy::EnvLists {
            overlay: overlay(&[u(7, "pay.example.com", None), u(8, "192.0.2.7", None)]),
            ..Default::default()
        };
        let p = policy::compile_raw(raw, "p.yaml", &env).unwrap();
        assert!(p.allows_name("pay.example.com") && p.allows_name("a.example"));
        assert!(p.allows_ip("192.0.2.7".parse().unwrap()));
        assert!(!p.allows_name("other.example.com"), "never wider than its entry");
        assert_eq!(p.unblocks(), &[(7, "pay.example.com".to_owned()), (8, "192.0.2.7".to_owned())]);
        // `egret check --explain` names the unblock that allows it.
        let g = crate::policy::Guard::default();
        let (ok, text) = policy::lint::explain(&p, &g, "pay.example.com");
        assert!(ok && text.contains("unblock #7 (pay.example.com)"), "{text}");
        let (ok, text) = policy::lint::explain(&p, &g, "192.0.2.7");
        assert!(ok && text.contains("unblock #8 (192.0.2.7)"), "{text}");
        let (ok, text) = policy::lint::explain(&p, &g, "a.example");
        assert!(ok && !text.contains("unblock"), "{text}");
        // A bad entry names its source (the agent checks first, so this
        // only shows what an error would say).
        let raw = policy::parse_yaml("", "p.yaml").unwrap();
        let env = policy::EnvLists { overlay: vec![(9, vec!["bad name!".into()])], ..Default::default() };
        let e = policy::compile_raw(raw, "p.yaml", &env).unwrap_err().to_string();
        assert!(e.contains("unblock #9: entry \"bad name!\""), "{e}");
        // Under default allow, an unblock is an exception to the denylist.
        let raw = policy::parse_yaml(
            "default_action: allow\ndenylist:\n  domains: [\"*.example.com\"]\n",
            "p.yaml",
        )
        .unwrap();
        let env =
            policy::EnvLists { overlay: overlay(&[u(3, "pay.example.com", None)]), ..Default::default() };
        let p = policy::compile_raw(raw, "p.yaml", &env).unwrap();
        assert!(p.allows_name("pay.example.com") && !p.allows_name("shop.example.com"));
    }
}
