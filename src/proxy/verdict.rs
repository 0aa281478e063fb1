//! The proxy's decisions as values: what a connection's first hello or
//! request head names, whether it may pass, and what its event says. A
//! refusal is a [`Verdict::Deny`], not an error; the connection shell
//! (`conn.rs`) only carries it out. Pure: the policy, the guard and the
//! anti-spoofing check come in as [`Rules`].

use std::net::{IpAddr, SocketAddr};

use super::http::{Host, RequestHead};
use super::tls::{ClientHello, Sni};
use super::{decide, decide_literal, reason, Block, DestinationCheck, Kind};
use crate::events::{Action, Event};
use crate::fair::Refusal;
use crate::policy::{Guard, Policy};

/// What was read before deciding.
#[derive(Debug, PartialEq)]
pub enum Peeked {
    Hello(ClientHello),
    Head(RequestHead),
}

/// What the decisions are made against.
pub struct Rules<'a> {
    pub policy: &'a Policy,
    /// `VERIFY_DESTINATION`: the name must resolve to the destination.
    pub verify: bool,
    pub guard: &'a Guard,
    pub check: &'a dyn DestinationCheck,
    /// Whose connection it is (the owner of its socket): the hardening's
    /// budget of the check's lookups is theirs, and so is the descriptor
    /// a lookup's socket takes.
    pub asking: crate::resolve::Asking<'a>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// On allow, the name the registry tracks (an IP literal as text).
    Allow(String),
    Deny(Block),
}

/// What the first bytes named, as the event shows it: the SNI (or the
/// raw invalid one, or the IP literal) for TLS, the Host for HTTP.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Shown {
    pub https: Option<String>,
    pub http_host: Option<String>,
    pub ech: Option<bool>,
}

impl Shown {
    fn host(host: &Host) -> Shown {
        let h = match host {
            Host::Name(n) => n.clone(),
            Host::IpLiteral(ip) => ip.to_string(),
        };
        Shown { http_host: Some(h), ..Shown::default() }
    }

    /// Puts these fields on `ev` (`host` is the HTTP Host, as g0efilter
    /// sends it).
    pub fn on(&self, mut ev: Event) -> Event {
        if self.https.is_some() {
            ev.https.clone_from(&self.https);
        }
        if self.http_host.is_some() {
            ev.http_host.clone_from(&self.http_host);
            ev.host.clone_from(&self.http_host);
        }
        if self.ech.is_some() {
            ev.ech = self.ech;
        }
        ev
    }

    /// The name for log lines and the 403 body; empty when none was sent.
    pub fn what(&self) -> &str {
        self.https.as_deref().or(self.http_host.as_deref()).unwrap_or("")
    }
}

/// What a connection names as its destination.
enum Target {
    Name(String),
    /// An address where a name should be (allowed only under `*`).
    Literal(IpAddr),
}

impl Target {
    fn of(host: &Host) -> Target {
        match host {
            Host::Name(n) => Target::Name(n.clone()),
            Host::IpLiteral(ip) => Target::Literal(*ip),
        }
    }

    fn decide(self, dst: SocketAddr, r: &Rules<'_>) -> Verdict {
        let got = match self {
            Target::Name(n) => decide(r.policy, &n, dst, r.verify, r.guard, r.check, r.asking).map(|_| n),
            Target::Literal(ip) => {
                decide_literal(r.policy, ip, dst.ip(), r.verify, r.guard).map(|()| ip.to_string())
            }
        };
        match got {
            Ok(name) => Verdict::Allow(name),
            Err(block) => Verdict::Deny(block),
        }
    }
}

/// The decision on a connection's first hello or head, sent to `dst`.
pub fn first(peeked: &Peeked, dst: SocketAddr, rules: &Rules<'_>) -> (Verdict, Shown) {
    match peeked {
        Peeked::Hello(h) => hello(h, dst, rules),
        Peeked::Head(head) => (request(head, dst, rules), Shown::host(&head.host)),
    }
}

fn hello(h: &ClientHello, dst: SocketAddr, rules: &Rules<'_>) -> (Verdict, Shown) {
    let mut shown = Shown { ech: Some(h.ech), ..Shown::default() };
    let target = match &h.sni {
        Sni::Name(n) => {
            shown.https = Some(n.clone());
            Target::Name(n.clone())
        }
        Sni::IpLiteral(ip) => {
            shown.https = Some(ip.to_string());
            Target::Literal(*ip)
        }
        Sni::Absent => return (Verdict::Deny(Block::new(reason::NO_SNI)), shown),
        Sni::Invalid(raw) => {
            shown.https = Some(raw.clone());
            return (Verdict::Deny(Block::with_note(reason::INVALID_NAME, "invalid SNI")), shown);
        }
    };
    (target.decide(dst, rules), shown)
}

/// The decision on one HTTP request head (the first, or a later one on a
/// kept-alive connection, against the policy current at that moment).
pub fn request(head: &RequestHead, dst: SocketAddr, rules: &Rules<'_>) -> Verdict {
    Target::of(&head.host).decide(dst, rules)
}

/// What a later request's allowed event shows, when its host differs
/// from the one before.
pub fn request_shown(head: &RequestHead) -> Shown {
    Shown::host(&head.host)
}

/// The event of a refusal audit mode did not carry out: `ev` turned into
/// `<component>.audit`, action `AUDIT`, with the reason and note a
/// refusal would have had.
pub fn audited(ev: Event, kind: Kind, block: &Block) -> Event {
    let mut ev = blocked(ev, kind, block);
    ev.action = Action::Audit;
    ev.msg = format!("{}.audit", kind.component().as_str());
    ev
}

/// A connection refused for want of a slot.
pub fn no_slot(r: Refusal) -> Block {
    let note = match r {
        Refusal::Full => "every connection slot is taken",
        Refusal::ClientShare => "this client holds its share of the connection slots",
    };
    Block::with_note(reason::LIMIT, note)
}

/// No file descriptor for a connection (or its upstream) of this client.
pub fn no_descriptor(r: Refusal) -> Block {
    let note = match r {
        Refusal::Full => "egret's file descriptors are all taken",
        Refusal::ClientShare => "this client holds its share of egret's file descriptors",
    };
    Block::with_note(reason::LIMIT, note)
}

/// The event of a refusal: `ev` (the connection's event, with what it
/// named) turned into `<component>.blocked` with the reason and note.
pub fn blocked(mut ev: Event, kind: Kind, block: &Block) -> Event {
    ev.action = Action::Blocked;
    ev.msg = format!("{}.blocked", kind.component().as_str());
    ev.reason = Some(block.reason.to_owned());
    ev.note.clone_from(&block.note);
    ev
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolve::Hosts;

    fn policy(domains: &[&str]) -> Policy {
        use crate::policy::{Origin, Source};
        let d: Vec<String> = domains.iter().map(|s| s.to_string()).collect();
        Policy::compile(&[], &[Source { origin: Origin::Env("ALLOWLIST_DOMAINS"), entries: &d }]).unwrap()
    }

    fn hello_with(sni: Sni) -> Peeked {
        Peeked::Hello(ClientHello { sni, ech: false, consumed: 0 })
    }

    fn head(host: Host) -> Peeked {
        let raw = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        let mut h = crate::proxy::http::parse_head(raw).unwrap().unwrap();
        h.host = host;
        Peeked::Head(h)
    }

    #[test]
    fn first_bytes_table() {
        let p = policy(&["ok.example"]);
        let hosts = Hosts::parse("10.0.0.1 ok.example\n");
        let rules = Rules {
            policy: &p,
            verify: true,
            guard: &Guard::default(),
            check: &hosts,
            asking: crate::resolve::Asking::of(crate::peer::Client::Unknown),
        };
        let dst: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let name = |n: &str| Sni::Name(n.to_owned());
        // (first bytes, destination, verdict, event's https, event's http_host)
        type Case<'a> = (Peeked, IpAddr, Result<&'a str, &'a str>, Option<&'a str>, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (hello_with(name("ok.example")), dst, Ok("ok.example"), Some("ok.example"), None),
            (hello_with(name("ok.example")), other, Err(reason::IP_MISMATCH), Some("ok.example"), None),
            (hello_with(name("no.example")), dst, Err(reason::NOT_ALLOWLISTED), Some("no.example"), None),
            (hello_with(Sni::Absent), dst, Err(reason::NO_SNI), None, None),
            (hello_with(Sni::Invalid("a..b".into())), dst, Err(reason::INVALID_NAME), Some("a..b"), None),
            (hello_with(Sni::IpLiteral(dst)), dst, Err(reason::NOT_ALLOWLISTED), Some("10.0.0.1"), None),
            (head(Host::Name("ok.example".into())), dst, Ok("ok.example"), None, Some("ok.example")),
            (
                head(Host::Name("no.example".into())),
                dst,
                Err(reason::NOT_ALLOWLISTED),
                None,
                Some("no.example"),
            ),
            (head(Host::IpLiteral(dst)), dst, Err(reason::NOT_ALLOWLISTED), None, Some("10.0.0.1")),
        ];
        for (peeked, to, want, https, host) in cases {
            let (v, shown) = first(&peeked, SocketAddr::new(to, 443), &rules);
            let got = match &v {
                Verdict::Allow(n) => Ok(n.as_str()),
                Verdict::Deny(b) => Err(b.reason),
            };
            assert_eq!(got, want, "{peeked:?} to {to}");
            assert_eq!((shown.https.as_deref(), shown.http_host.as_deref()), (https, host), "{peeked:?}");
        }
        // `*` lets an IP literal through when it is the destination.
        let star = policy(&["*"]);
        let rules = Rules {
            policy: &star,
            verify: true,
            guard: &Guard::default(),
            check: &hosts,
            asking: crate::resolve::Asking::of(crate::peer::Client::Unknown),
        };
        assert_eq!(
            first(&hello_with(Sni::IpLiteral(dst)), SocketAddr::new(dst, 443), &rules).0,
            Verdict::Allow("10.0.0.1".into())
        );
    }

    #[test]
    fn an_audited_refusal_is_an_audit_event_with_the_reason() {
        let base = Event::new(crate::events::Component::Http, Action::Allowed, "h", std::time::UNIX_EPOCH);
        let ev = audited(base, Kind::Http, &Block::with_note(reason::IP_MISMATCH, "x does not resolve to y"));
        let v = serde_json::to_value(&ev).unwrap();
        assert_eq!((v["msg"].as_str(), v["action"].as_str()), (Some("http.audit"), Some("AUDIT")));
        assert_eq!(
            (v["reason"].as_str(), v["note"].as_str()),
            (Some("ip-mismatch"), Some("x does not resolve to y"))
        );
    }

    #[test]
    fn refusals_shape_their_events() {
        let base = Event::new(
            crate::events::Component::Https,
            Action::Allowed,
            "h",
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_800_000_000),
        );
        let shown = Shown { https: Some("no.example".into()), ech: Some(true), ..Shown::default() };
        let ev = blocked(shown.on(base), Kind::Https, &no_slot(Refusal::ClientShare));
        assert_eq!((ev.action, ev.msg.as_str()), (Action::Blocked, "https.blocked"));
        assert_eq!(
            (ev.reason.as_deref(), ev.https.as_deref(), ev.ech),
            (Some("limit"), Some("no.example"), Some(true))
        );
        assert_eq!(ev.note.as_deref(), Some("this client holds its share of the connection slots"));
        assert_eq!(shown.what(), "no.example");
        assert_eq!(Shown::default().what(), "");
    }
}
