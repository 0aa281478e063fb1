//! A small authoritative DNS server for the DNS tests (hickory-proto on
//! real sockets): the upstream egret forwards to. It counts what it was
//! asked, so tests can see that blocked names never reach it and that a
//! truncated answer was fetched again over TCP.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, MX, TXT};
use hickory_proto::rr::{Name, RData, Record, RecordType};

/// The zone: name → records (answers for any type are filtered by type).
pub struct Zone {
    pub records: Vec<(String, u32, RData)>,
    /// Over UDP, answers larger than this are truncated (TC, no records),
    /// whatever the client's EDNS size: an old-fashioned server.
    pub udp_limit: usize,
    /// Changing A answers: the n-th A query for the name (over UDP or
    /// TCP, counted from start) gets only the n-th address of its list,
    /// and every query after the list's end its last one. A CDN whose
    /// answer differs from one lookup to the next, deterministically.
    pub rotate: Vec<(String, u32, Vec<Ipv4Addr>)>,
    /// Every answer (UDP or TCP) waits this long: a slow upstream, the
    /// window a forger of answers races in.
    pub delay: Duration,
    /// Answers given as they are: the n-th query of (name, type) gets
    /// the n-th list of records (every query after the end, the last),
    /// appended to the answer section untouched (owners, DNAME records,
    /// chains that change between lookups).
    pub raw: Vec<(String, RecordType, Vec<Vec<Record>>)>,
    /// Echo every question of a query (QDCOUNT > 1) in the answer, not
    /// only the first; the answer section is still the first's (round 14).
    pub echo_questions: bool,
}

impl Zone {
    /// The standard test zone under `allowed.test` and `blocked.test`.
    pub fn standard(a: Ipv4Addr, ttl: u32) -> Zone {
        let medium: Vec<String> = (0..4).map(|i| format!("{i}{}", "m".repeat(199))).collect();
        let huge: Vec<String> = (0..40).map(|i| format!("{i:02}{}", "h".repeat(198))).collect();
        let mut records = Vec::new();
        for zone in ["allowed.test", "blocked.test"] {
            records.push((zone.to_owned(), ttl, RData::A(A(a))));
            records.push((
                zone.to_owned(),
                ttl,
                RData::AAAA(AAAA(Ipv6Addr::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 2))),
            ));
            records.push((
                zone.to_owned(),
                ttl,
                RData::TXT(TXT::new(vec!["hello from the test upstream".into()])),
            ));
            records.push((
                zone.to_owned(),
                ttl,
                RData::MX(MX::new(10, Name::from_ascii(format!("mail.{zone}.")).expect("valid name"))),
            ));
        }
        records.push(("medium.allowed.test".into(), ttl, RData::TXT(TXT::new(medium))));
        records.push(("huge.allowed.test".into(), ttl, RData::TXT(TXT::new(huge))));
        Zone {
            records,
            udp_limit: 512,
            rotate: Vec::new(),
            delay: Duration::ZERO,
            raw: Vec::new(),
            echo_questions: false,
        }
    }
}

/// A running server; dropping it stops its threads (bounded waits).
pub struct Auth {
    pub addr: SocketAddr,
    /// (lowercased name, "udp"/"tcp") → queries seen.
    pub seen: Arc<Mutex<HashMap<(String, &'static str), usize>>>,
    stop: Arc<AtomicBool>,
}

impl Drop for Auth {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Auth {
    /// Binds UDP and TCP at `addr` (port 0 picks one; TCP follows UDP).
    pub fn start(addr: SocketAddr, zone: Zone) -> Auth {
        // With port 0 the TCP port follows the UDP one; it may be taken
        // for TCP, so try a few.
        let (udp, tcp, addr) = (0..50)
            .find_map(|_| {
                let udp = UdpSocket::bind(addr).ok()?;
                let addr = udp.local_addr().ok()?;
                let tcp = TcpListener::bind(addr).ok()?;
                Some((udp, tcp, addr))
            })
            .expect("bind test upstream udp+tcp");
        udp.set_read_timeout(Some(Duration::from_millis(100))).expect("timeout");
        tcp.set_nonblocking(true).expect("nonblocking");
        let zone = Arc::new(zone);
        let seen = Arc::new(Mutex::new(HashMap::new()));
        let stop = Arc::new(AtomicBool::new(false));
        {
            let (zone, seen, stop) = (zone.clone(), seen.clone(), stop.clone());
            thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while !stop.load(Ordering::SeqCst) {
                    let Ok((n, from)) = udp.recv_from(&mut buf) else { continue };
                    let Some(r) = answer(&zone, &buf[..n], "udp", &seen) else { continue };
                    if zone.delay.is_zero() {
                        let _ = udp.send_to(&r, from);
                        continue;
                    }
                    let (udp, delay) = (udp.try_clone().expect("clone udp"), zone.delay);
                    thread::spawn(move || {
                        thread::sleep(delay);
                        let _ = udp.send_to(&r, from);
                    });
                }
            });
        }
        {
            let (seen, stop) = (seen.clone(), stop.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::SeqCst) {
                    let Ok((mut s, _)) = tcp.accept() else {
                        thread::sleep(Duration::from_millis(10));
                        continue;
                    };
                    // A thread per connection: egret opens one per query
                    // to a loopback upstream, several at once.
                    let (zone, seen) = (zone.clone(), seen.clone());
                    thread::spawn(move || {
                        let _ = s.set_nonblocking(false);
                        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
                        let mut len = [0u8; 2];
                        while s.read_exact(&mut len).is_ok() {
                            let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                            if s.read_exact(&mut q).is_err() {
                                break;
                            }
                            if let Some(r) = answer(&zone, &q, "tcp", &seen) {
                                thread::sleep(zone.delay);
                                let mut out = (r.len() as u16).to_be_bytes().to_vec();
                                out.extend_from_slice(&r);
                                let _ = s.write_all(&out);
                            }
                        }
                    });
                }
            });
        }
        Auth { addr, seen, stop }
    }

    pub fn count(&self, name: &str, proto: &'static str) -> usize {
        self.seen.lock().expect("lock").get(&(name.to_owned(), proto)).copied().unwrap_or(0)
    }

    pub fn total(&self, name: &str) -> usize {
        self.count(name, "udp") + self.count(name, "tcp")
    }
}

fn answer(
    zone: &Zone,
    q: &[u8],
    proto: &'static str,
    seen: &Mutex<HashMap<(String, &'static str), usize>>,
) -> Option<Vec<u8>> {
    let m = Message::from_vec(q).ok()?;
    let question = m.queries.first()?.clone();
    let name = question.name().to_ascii().trim_end_matches('.').to_ascii_lowercase();
    *seen.lock().ok()?.entry((name.clone(), proto)).or_default() += 1;
    let mut r = Message::new(m.metadata.id, MessageType::Response, OpCode::Query);
    r.metadata.authoritative = true;
    r.metadata.recursion_desired = m.metadata.recursion_desired;
    if zone.echo_questions {
        for q in &m.queries {
            r.add_query(q.clone());
        }
    } else {
        r.add_query(question.clone());
    }
    let rotated = zone.rotate.iter().find(|(n, _, _)| *n == name);
    let matching: Vec<&(String, u32, RData)> = zone.records.iter().filter(|(n, _, _)| *n == name).collect();
    let raw = zone.raw.iter().find(|(n, t, _)| *n == name && *t == question.query_type());
    if matching.is_empty() && rotated.is_none() && raw.is_none() {
        r.metadata.response_code = ResponseCode::NXDomain;
    }
    if let Some((_, ttl, addrs)) = rotated.filter(|_| question.query_type() == RecordType::A) {
        let mut seen = seen.lock().ok()?;
        let n = seen.entry((name.clone(), "rotated-a")).or_default();
        let a = *addrs.get(*n).or(addrs.last())?;
        *n += 1;
        r.add_answer(Record::from_rdata(question.name().clone(), *ttl, RData::A(A(a))));
    }
    if let Some((_, t, lists)) = raw {
        let mut seen = seen.lock().ok()?;
        let n = seen.entry((format!("{name} {t}"), "raw")).or_default();
        for rec in lists.get(*n).or(lists.last())? {
            r.add_answer(rec.clone());
        }
        *n += 1;
    }
    for (_, ttl, data) in matching {
        if question.query_type() == RecordType::ANY || data.record_type() == question.query_type() {
            r.add_answer(Record::from_rdata(question.name().clone(), *ttl, data.clone()));
        }
    }
    // A CNAME is followed as a recursive resolver does (at most 32 links,
    // so a test can serve a chain longer than egret keeps):
    // the chain and the target's records of the asked type.
    let (mut owner, mut at) = (question.name().clone(), name.clone());
    for _ in 0..32 {
        let asked = question.query_type();
        if asked == RecordType::CNAME || asked == RecordType::ANY {
            break;
        }
        let here: Vec<&(String, u32, RData)> = zone.records.iter().filter(|(n, _, _)| *n == at).collect();
        if here.iter().any(|(_, _, d)| d.record_type() == asked) {
            if owner != *question.name() {
                for (_, ttl, data) in here.iter().filter(|(_, _, d)| d.record_type() == asked) {
                    r.add_answer(Record::from_rdata(owner.clone(), *ttl, data.clone()));
                }
            }
            break;
        }
        let Some((_, ttl, RData::CNAME(target))) =
            here.iter().find(|(_, _, d)| d.record_type() == RecordType::CNAME).copied()
        else {
            break;
        };
        r.add_answer(Record::from_rdata(owner.clone(), *ttl, RData::CNAME(target.clone())));
        owner = target.0.clone();
        at = owner.to_ascii().trim_end_matches('.').to_ascii_lowercase();
    }
    if let Some(e) = m.edns.clone() {
        r.set_edns(e);
    }
    let bytes = r.to_vec().ok()?;
    if proto == "udp" && bytes.len() > zone.udp_limit {
        let mut t = r.truncate();
        t.metadata.id = m.metadata.id;
        return t.to_vec().ok();
    }
    Some(bytes)
}
