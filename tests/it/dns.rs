//! DNS mode end to end: egret's server on loopback (real sockets),
//! forwarding to the test authoritative server (`dnsauth`), asked by the
//! real `dig`. The strict-egress test runs in network namespaces with a
//! real nftables table.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::Command;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use egret::dns::{self, upstream::Upstreams, DnsHandle, Settings};
use egret::events::{Emitter, Event};
use egret::policy::{Origin, Policy, PolicyHandle, Source};

use crate::dnsauth::{Auth, Zone};

pub fn policy(domains: &[&str]) -> PolicyHandle {
    let d: Vec<String> = domains.iter().map(|s| s.to_string()).collect();
    let src = [Source { origin: Origin::Env("ALLOWLIST_DOMAINS"), entries: &d }];
    PolicyHandle::new(Policy::compile(&[], &src).expect("test policy compiles"))
}

struct Server {
    handle: DnsHandle,
    events: Receiver<Event>,
}

impl Server {
    fn addr(&self) -> SocketAddr {
        self.handle.local_addrs()[0]
    }

    fn events(&self) -> Vec<Event> {
        self.events.try_iter().collect()
    }
}

fn start(upstreams: Vec<SocketAddr>) -> Server {
    let mut up = Upstreams::new(upstreams, None);
    up.udp_timeout = Duration::from_millis(500);
    up.tcp_timeout = Duration::from_secs(2);
    let settings = Settings {
        listen: vec!["127.0.0.1:0".parse().expect("addr")],
        upstreams: up,
        ttl_min: Duration::from_secs(1),
        ttl_max: Duration::from_secs(60),
        workers: 4,
    };
    let (emitter, events) = Emitter::channel(1024, "test-host");
    let handle = dns::start_with(settings, policy(&["allowed.test", "*.allowed.test"]), emitter, None)
        .expect("start egret dns");
    Server { handle, events }
}

fn upstream() -> Auth {
    Auth::start("127.0.0.1:0".parse().expect("addr"), Zone::standard("10.200.0.2".parse().expect("ip"), 60))
}

/// Runs dig against `server` and returns its whole output.
pub fn dig(server: SocketAddr, args: &[&str]) -> String {
    let out = Command::new("dig")
        .arg(format!("@{}", server.ip()))
        .args(["-p", &server.port().to_string(), "+time=3", "+tries=1"])
        .args(args)
        .output()
        .expect("dig runs (apt-get install dnsutils)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn status(out: &str) -> &str {
    out.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("<no status>")
}

#[test]
fn allowed_names_resolve_over_udp_and_tcp() {
    let auth = upstream();
    let srv = start(vec![auth.addr]);
    let cases = [
        ("allowed.test", "A", "10.200.0.2"),
        ("allowed.test", "AAAA", "fd00:200::2"),
        ("allowed.test", "TXT", "\"hello from the test upstream\""),
        ("WWW.Allowed.Test", "A", "NXDOMAIN"),
    ];
    for transport in ["+notcp", "+tcp"] {
        for (name, qtype, want) in cases {
            let out = dig(srv.addr(), &[transport, name, qtype]);
            if want == "NXDOMAIN" {
                // Allowed by *.allowed.test, unknown upstream: the
                // upstream's own NXDOMAIN, without egret's EDE.
                assert_eq!(status(&out), "NXDOMAIN", "{transport} {name} {qtype}:\n{out}");
                assert!(!out.contains("EDE"), "{out}");
                continue;
            }
            assert_eq!(status(&out), "NOERROR", "{transport} {name} {qtype}:\n{out}");
            assert!(out.contains(want), "{transport} {name} {qtype}: want {want}:\n{out}");
        }
    }
    assert!(auth.count("allowed.test", "udp") >= 3);
    let evs = srv.events();
    let allowed: Vec<&Event> = evs.iter().filter(|e| e.msg == "dns.allowed").collect();
    assert_eq!(allowed.len(), 8, "{evs:#?}");
    let a = allowed[0];
    assert_eq!(
        (a.qname.as_deref(), a.qtype.as_deref(), a.rcode.as_deref()),
        (Some("allowed.test"), Some("A"), Some("NOERROR"))
    );
    assert_eq!(a.note.as_deref(), Some("10.200.0.2"));
    assert_eq!(a.protocol, Some("UDP"));
    assert_eq!(allowed[4].protocol, Some("TCP"));
}

#[test]
fn blocked_names_get_nxdomain_with_extended_error_for_every_type() {
    let auth = upstream();
    let srv = start(vec![auth.addr]);
    for transport in ["+notcp", "+tcp"] {
        for qtype in ["A", "AAAA", "TXT", "MX", "ANY"] {
            let out = dig(srv.addr(), &[transport, "blocked.test", qtype]);
            assert_eq!(status(&out), "NXDOMAIN", "{transport} {qtype}:\n{out}");
            assert!(out.contains("EDE: 15 (Blocked)"), "{transport} {qtype}:\n{out}");
            assert!(out.contains("egret: blocked by policy (blocked.test: domain-not-allowed)"), "{out}");
            assert!(out.contains("ANSWER: 0"), "no sinkhole address:\n{out}");
        }
    }
    // A client without EDNS gets the NXDOMAIN without an OPT record.
    let out = dig(srv.addr(), &["+noedns", "blocked.test", "A"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(!out.contains("OPT PSEUDOSECTION"), "{out}");
    assert_eq!(auth.total("blocked.test"), 0, "a blocked name never reaches the upstream");
    let evs = srv.events();
    let blocked: Vec<&Event> = evs.iter().filter(|e| e.msg == "dns.blocked").collect();
    assert_eq!(blocked.len(), 11, "{evs:#?}");
    let b = blocked[3];
    assert_eq!(b.action.as_str(), "BLOCKED");
    assert_eq!((b.qname.as_deref(), b.qtype.as_deref()), (Some("blocked.test"), Some("MX")));
    assert_eq!((b.rcode.as_deref(), b.reason.as_deref()), (Some("NXDOMAIN"), Some("domain-not-allowed")));
    assert!(b.source_port.is_some() && b.flow_id.is_some());
}

#[test]
fn first_upstream_down_the_next_answers() {
    let auth = upstream();
    // Closed at once (ICMP port unreachable), and open but silent.
    let closed = UdpSocket::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr");
    let silent = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let srv = start(vec![closed, silent.local_addr().expect("addr"), auth.addr]);
    for transport in ["+notcp", "+tcp"] {
        let out = dig(srv.addr(), &[transport, "allowed.test", "A"]);
        assert_eq!(status(&out), "NOERROR", "{out}");
        assert!(out.contains("10.200.0.2"), "{out}");
    }
    // All down: SERVFAIL, not silence.
    let srv = start(vec![closed, silent.local_addr().expect("addr")]);
    let out = dig(srv.addr(), &["allowed.test", "A"]);
    assert_eq!(status(&out), "SERVFAIL", "{out}");
    let evs = srv.events();
    assert!(evs.iter().any(|e| e.rcode.as_deref() == Some("SERVFAIL")), "{evs:#?}");
}

#[test]
fn truncated_answers_are_fetched_again_over_tcp() {
    let auth = upstream();
    let srv = start(vec![auth.addr]);
    // ~850 bytes: over the upstream's 512-byte UDP limit, under dig's
    // 1232. egret must fetch it over TCP and hand it to the UDP client
    // whole; +ignore makes dig show a TC answer instead of retrying.
    let out = dig(srv.addr(), &["+ignore", "medium.allowed.test", "TXT"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(!out.contains(" tc"), "the client saw no truncation:\n{out}");
    assert!(out.contains(&format!("3{}", "m".repeat(199))), "{out}");
    assert!(auth.count("medium.allowed.test", "tcp") >= 1, "egret retried over TCP");
    // ~8 KB: too big for any UDP client; dig falls back to TCP itself.
    for args in [&["huge.allowed.test", "TXT"][..], &["+tcp", "huge.allowed.test", "TXT"][..]] {
        let out = dig(srv.addr(), args);
        assert_eq!(status(&out), "NOERROR", "{out}");
        assert!(out.contains(&format!("39{}", "h".repeat(198))), "{args:?}:\n{out}");
    }
    let out = dig(srv.addr(), &["+ignore", "huge.allowed.test", "TXT"]);
    assert!(out.contains(" tc"), "an answer too big for UDP is sent truncated:\n{out}");
}

/// Every seed in tests/data/dns, over UDP and over TCP: FORMERR with the
/// query's ID where the name says so, silence for drop-*, and the server
/// still serving afterwards.
#[test]
fn malformed_queries_get_formerr_and_the_server_keeps_serving() {
    let auth = upstream();
    let srv = start(vec![auth.addr]);
    let dir = crate::util::data("dns");
    let mut seeds: Vec<_> =
        std::fs::read_dir(&dir).expect("seed dir").map(|e| e.expect("entry").path()).collect();
    seeds.sort();
    let udp = UdpSocket::bind("127.0.0.1:0").expect("bind");
    udp.set_read_timeout(Some(Duration::from_millis(300))).expect("timeout");
    for path in &seeds {
        let name = path.file_name().expect("name").to_string_lossy().into_owned();
        let bytes = std::fs::read(path).expect("read seed");
        udp.send_to(&bytes, srv.addr()).expect("send");
        let mut buf = [0u8; 4096];
        let got = udp.recv(&mut buf).ok().map(|n| buf[..n].to_vec());
        if name.starts_with("formerr-") {
            let r = got.unwrap_or_else(|| panic!("{name}: no answer"));
            assert_eq!(&r[..2], &bytes[..2], "{name}: id kept");
            assert_eq!((r[2] & 0x80, r[3] & 0x0f), (0x80, 1), "{name}: a FORMERR response");
        } else if name.starts_with("drop-") {
            assert!(got.is_none(), "{name}: answered");
        }
        // Over TCP too, each on its own connection.
        if bytes.len() >= 3 && !name.starts_with("drop-") {
            let mut s = TcpStream::connect(srv.addr()).expect("tcp connect");
            s.set_read_timeout(Some(Duration::from_secs(2))).expect("timeout");
            let mut framed = (bytes.len() as u16).to_be_bytes().to_vec();
            framed.extend_from_slice(&bytes);
            s.write_all(&framed).expect("write");
            let mut len = [0u8; 2];
            if name.starts_with("formerr-") {
                s.read_exact(&mut len).unwrap_or_else(|e| panic!("{name}: tcp: {e}"));
                let mut r = vec![0u8; usize::from(u16::from_be_bytes(len))];
                s.read_exact(&mut r).expect("read");
                assert_eq!((&r[..2], r[3] & 0x0f), (&bytes[..2], 1), "{name} over tcp");
            }
        }
    }
    // A TCP length prefix promising more than is sent: the connection
    // times out on its own; the server keeps serving meanwhile.
    let mut s = TcpStream::connect(srv.addr()).expect("tcp connect");
    s.write_all(&[0x10, 0x00, 1, 2, 3]).expect("write");
    let out = dig(srv.addr(), &["allowed.test", "A"]);
    assert_eq!(status(&out), "NOERROR", "still serving:\n{out}");
    let out = dig(srv.addr(), &["+tcp", "allowed.test", "A"]);
    assert_eq!(status(&out), "NOERROR", "still serving over tcp:\n{out}");
}
