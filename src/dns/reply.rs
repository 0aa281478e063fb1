//! What the DNS server says about a query, as values: who asked
//! ([`Asker`]), how it ended ([`Outcome`]), and from those the event and
//! the counter it moves. Pure: the server's shell stamps the time and
//! hostname (an `Emitter`'s base event) and sends.

use std::net::SocketAddr;

use hickory_proto::op::ResponseCode;

use super::filter::{Answer, QueryInfo, Refusal, Reply};
use crate::events::Event;

/// Who asked a query and where to: the event's flow, and where the answer
/// goes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Asker {
    pub addr: SocketAddr,
    /// The server address the query came in on.
    pub local: SocketAddr,
    pub proto: &'static str,
    /// The owner of the client's socket (TCP only: a netlink lookup per
    /// datagram would cost more than answering it).
    pub who: Option<crate::peer::Owner>,
    /// Who the asker counts as for `DNS_HARDENING` and the forwarders'
    /// shares (UDP: from the cached owner of its source address).
    pub client: Option<crate::peer::Client>,
}

impl Asker {
    pub fn udp(addr: SocketAddr, local: SocketAddr) -> Asker {
        Asker { addr, local, proto: "UDP", who: None, client: None }
    }
}

/// How one query ended.
#[derive(Debug, Clone, Copy)]
pub enum Outcome<'a> {
    /// Answered from upstream with `rcode` (SERVFAIL when upstream or
    /// learning failed); `note` names the answer's addresses or the
    /// failure.
    Forwarded { info: &'a QueryInfo, rcode: ResponseCode, note: Option<&'a str> },
    /// Answered by egret itself: blocked, guarded, malformed, refused.
    Refused(&'a Answer),
}

/// Which server counter an outcome moves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counter {
    Forwarded,
    Servfail,
    Blocked,
    Rejected,
}

pub fn counter(o: &Outcome<'_>) -> Counter {
    match o {
        Outcome::Forwarded { rcode: ResponseCode::ServFail, .. } => Counter::Servfail,
        Outcome::Forwarded { .. } => Counter::Forwarded,
        Outcome::Refused(a) => match a.refusal {
            Refusal::Blocked { .. } | Refusal::BlockedLink { .. } | Refusal::Guarded { .. } => {
                Counter::Blocked
            }
            _ => Counter::Rejected,
        },
    }
}

/// The event of an outcome, on `base` (the emitter's event for component
/// dns with the outcome's action: [`action`]).
pub fn event(base: Event, asker: &Asker, o: &Outcome<'_>) -> Event {
    let mut ev = base.with_flow(asker.addr, asker.local, asker.proto).with_owner(asker.who);
    match o {
        Outcome::Forwarded { info, rcode, note } => {
            ev.qname = Some(info.qname());
            ev.host = ev.qname.clone();
            ev.qtype = Some(info.qtype());
            ev.rcode = Some(rcode_name(*rcode));
            match &info.audit {
                None => {
                    ev.reason = Some("domain-allowed".to_owned());
                    ev.note = note.map(str::to_owned);
                }
                // Audit mode: the reason and note it would have been
                // refused with, then what the answer held.
                Some(r) => {
                    ev.reason = Some(r.reason().to_owned());
                    ev.note = Some(match note {
                        Some(n) => format!("would be {}; answered {n}", r.note()),
                        None => format!("would be {}", r.note()),
                    });
                }
            }
        }
        Outcome::Refused(a) => {
            if let Some(q) = &a.query {
                ev.qname = Some(q.qname()).filter(|s| !s.is_empty());
                ev.host = ev.qname.clone();
                ev.qtype = Some(q.qtype()).filter(|s| !s.is_empty());
            }
            ev.rcode = Some(rcode_name(a.rcode));
            ev.reason = Some(a.refusal.reason().to_owned());
            ev.note = Some(a.refusal.note());
        }
    }
    ev
}

/// ALLOWED for a forwarded query, AUDIT for one forwarded in audit mode
/// that enforcement would have refused, BLOCKED for one egret answered
/// itself.
pub fn action(o: &Outcome<'_>) -> crate::events::Action {
    match o {
        Outcome::Forwarded { info, .. } if info.audit.is_some() => crate::events::Action::Audit,
        Outcome::Forwarded { .. } => crate::events::Action::Allowed,
        Outcome::Refused(_) => crate::events::Action::Blocked,
    }
}

/// A forwarded answer's note: its addresses, comma separated.
pub fn addresses_note(reply: &Reply) -> Option<String> {
    (!reply.addrs.is_empty()).then(|| {
        let ips: Vec<String> = reply.addrs.iter().map(|(ip, _)| ip.to_string()).collect();
        ips.join(",")
    })
}

/// Event `rcode` values are the mnemonics dig prints (`NOERROR`,
/// `NXDOMAIN`, …).
pub fn rcode_name(c: ResponseCode) -> String {
    let s = match c {
        ResponseCode::NoError => "NOERROR",
        ResponseCode::FormErr => "FORMERR",
        ResponseCode::ServFail => "SERVFAIL",
        ResponseCode::NXDomain => "NXDOMAIN",
        ResponseCode::NotImp => "NOTIMP",
        ResponseCode::Refused => "REFUSED",
        other => return format!("RCODE{}", u16::from(other)),
    };
    s.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dns::filter::{self, Action};
    use crate::events::{Action as EvAction, Component};
    use crate::policy::{compile_raw, parse_yaml, EnvLists};
    use std::time::SystemTime;

    fn policy() -> crate::policy::Policy {
        let raw = parse_yaml("allowlist:\n  domains: [\"allowed.test\"]\n", "t.yaml").unwrap();
        compile_raw(raw, "t.yaml", &EnvLists::default()).unwrap()
    }

    fn query(name: &str) -> Vec<u8> {
        let mut q = vec![0x12, 0x34, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        for l in name.split('.') {
            q.push(l.len() as u8);
            q.extend_from_slice(l.as_bytes());
        }
        q.extend_from_slice(&[0, 0, 1, 0, 1]);
        q
    }

    fn base(o: &Outcome<'_>) -> Event {
        Event::new(Component::Dns, action(o), "h", SystemTime::UNIX_EPOCH)
    }

    const ASKER: Asker = Asker {
        addr: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::new(10, 0, 0, 1)), 40000),
        local: SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 53),
        proto: "TCP",
        who: Some(crate::peer::Owner { uid: 1000, cgroup: None }),
        client: None,
    };

    /// ENFORCE=audit: the query enforcement would answer NXDOMAIN is
    /// forwarded, and its event is AUDIT with the reason it would have had.
    #[test]
    fn audit_mode_forwards_what_it_would_refuse_and_says_why() {
        let audit = policy().with_mode(crate::policy::Mode::Audit);
        let Action::Forward(info) = filter::decide(&query("evil.test"), &audit) else {
            panic!("audit mode must forward")
        };
        let o = Outcome::Forwarded { info: &info, rcode: ResponseCode::NoError, note: Some("192.0.2.1") };
        assert_eq!(action(&o), EvAction::Audit);
        let v = serde_json::to_value(event(base(&o), &ASKER, &o)).unwrap();
        assert_eq!((v["msg"].as_str(), v["action"].as_str()), (Some("dns.audit"), Some("AUDIT")));
        assert_eq!(v["reason"], "not-allowlisted");
        assert_eq!(v["note"], "would be nxdomain; answered 192.0.2.1");
        // An allowed name is ALLOWED in audit mode as in enforcement.
        let Action::Forward(info) = filter::decide(&query("allowed.test"), &audit) else { panic!() };
        let o = Outcome::Forwarded { info: &info, rcode: ResponseCode::NoError, note: None };
        assert_eq!(action(&o), EvAction::Allowed);
        // Not policy, so not audited: a malformed query is still refused.
        assert!(matches!(filter::decide(&[0x12, 0x34, 1, 0, 0, 9], &audit), Action::Answer(_)));
    }

    #[test]
    fn a_blocked_query_is_one_blocked_event_naming_the_name_and_the_client() {
        let Action::Answer(a) = filter::decide(&query("evil.test"), &policy()) else { panic!("not refused") };
        let o = Outcome::Refused(&a);
        assert_eq!(counter(&o), Counter::Blocked);
        let ev = event(base(&o), &ASKER, &o);
        assert_eq!((ev.msg.as_str(), ev.action), ("dns.blocked", EvAction::Blocked));
        assert_eq!(ev.qname.as_deref(), Some("evil.test"));
        assert_eq!((ev.qtype.as_deref(), ev.rcode.as_deref()), (Some("A"), Some("NXDOMAIN")));
        assert_eq!(ev.reason.as_deref(), Some(a.refusal.reason()));
        assert_eq!((ev.source_port, ev.protocol.as_deref(), ev.uid), (Some(40000), Some("TCP"), Some(1000)));
    }

    #[test]
    fn forwarded_and_failed_queries() {
        let Action::Forward(info) = filter::decide(&query("allowed.test"), &policy()) else {
            panic!("not forwarded")
        };
        let ok = Outcome::Forwarded { info: &info, rcode: ResponseCode::NoError, note: Some("192.0.2.1") };
        assert_eq!(counter(&ok), Counter::Forwarded);
        let ev = event(base(&ok), &Asker::udp(ASKER.addr, ASKER.local), &ok);
        assert_eq!(
            (ev.msg.as_str(), ev.rcode.as_deref(), ev.note.as_deref()),
            ("dns.allowed", Some("NOERROR"), Some("192.0.2.1"))
        );
        assert_eq!(
            (ev.reason.as_deref(), ev.protocol.as_deref(), ev.uid),
            (Some("domain-allowed"), Some("UDP"), None)
        );
        let failed = Outcome::Forwarded {
            info: &info,
            rcode: ResponseCode::ServFail,
            note: Some("every dns upstream failed"),
        };
        assert_eq!(counter(&failed), Counter::Servfail);
        assert_eq!(event(base(&failed), &ASKER, &failed).rcode.as_deref(), Some("SERVFAIL"));
    }

    #[test]
    fn malformed_is_rejected_not_blocked() {
        let mut q = query("allowed.test");
        q[5] = 0; // no question
        let Action::Answer(a) = filter::decide(&q, &policy()) else { panic!("not answered") };
        assert_eq!(counter(&Outcome::Refused(&a)), Counter::Rejected);
    }

    #[test]
    fn rcode_names() {
        assert_eq!(rcode_name(ResponseCode::NXDomain), "NXDOMAIN");
        assert_eq!(rcode_name(ResponseCode::from(0, 11)), "RCODE11");
    }
}
