//! `DNS_HARDENING` end to end: the real `egret run` in DNS mode in a
//! workload namespace, forwarding to the test authoritative server
//! upstream, asked by real `dig` and by a small UDP client for the
//! bursts. Each test ends with the same traffic under
//! `DNS_HARDENING=false`, which must not be refused: the refusals before
//! it are hardening's.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RecordType};

use crate::netns::within as in_netns;
use crate::netns::Pair;
use crate::run::{policy_file, world, Daemon, World};
use crate::util;

/// Two allowed zones: `allowed.test` (with its subdomains) and
/// `blocked.test` (the standard zone's other name, allowed here).
const POLICY: &str = "allowlist:\n  domains: [\"allowed.test\", \"*.allowed.test\", \"blocked.test\"]\n";

fn start(w: &World, tag: &str, env: &[(&str, &str)]) -> Daemon {
    let p = &w.p;
    let pol = policy_file(&format!("harden-{tag}"), POLICY);
    let upstream = format!("{}:53", p.v4(2));
    let mut all = vec![("FILTER_MODE", "dns"), ("DNS_UPSTREAMS", upstream.as_str())];
    all.extend_from_slice(env);
    Daemon::start(&p.work, &pol, &all)
}

/// dig in `ns` (port 53 of any address goes to egret).
fn dig(ns: &str, args: &[&str]) -> String {
    let mut c = Pair::exec(ns, "dig");
    c.args(["@127.0.0.1", "+time=3", "+tries=1"]).args(args);
    util::run(c).1
}

fn status(out: &str) -> &str {
    out.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("<no status>")
}

/// One query per name, in turn, from inside `ns`, each from a fresh UDP
/// socket: the response codes (`None`: no answer within 3 s).
fn ask_all(ns: &str, names: Vec<String>, qtype: RecordType) -> Vec<Option<ResponseCode>> {
    in_netns(ns, move || {
        let server: SocketAddr = "127.0.0.1:53".parse().expect("addr");
        names.iter().map(|n| ask(server, n, qtype)).collect()
    })
}

fn ask(server: SocketAddr, name: &str, qtype: RecordType) -> Option<ResponseCode> {
    let mut m = Message::new(egret::dns::upstream::random_id(), MessageType::Query, OpCode::Query);
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(format!("{name}.")).expect("name"), qtype));
    let s = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(Duration::from_secs(3))).expect("timeout");
    s.send_to(&m.to_vec().expect("encode"), server).expect("send");
    let mut buf = [0u8; 4096];
    let n = s.recv(&mut buf).ok()?;
    Some(Message::from_vec(&buf[..n]).ok()?.metadata.response_code)
}

/// The events so far (after a moment for the sink to write them).
fn events(d: &Daemon) -> Vec<serde_json::Value> {
    std::thread::sleep(Duration::from_millis(500));
    d.events.try_iter().collect()
}

fn refused(codes: &[Option<ResponseCode>]) -> usize {
    codes.iter().filter(|c| **c == Some(ResponseCode::Refused)).count()
}

fn with_reason<'a>(evs: &'a [serde_json::Value], reason: &str) -> Vec<&'a serde_json::Value> {
    evs.iter().filter(|e| e["msg"] == "dns.blocked" && e["reason"] == reason).collect()
}

/// What a tunnel does: a burst of unique names under an allowed zone.
fn tunnel_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{:016x}{i:04}.t.allowed.test", 0x5eed_u64.wrapping_mul(i as u64 + 1))).collect()
}

/// Ordinary lookups: two names of the tunnel's zone (a client asks its
/// real names again and again) and one of another allowed zone.
fn ordinary(ns: &str) -> Vec<(String, String)> {
    [("allowed.test", "A"), ("allowed.test", "MX"), ("medium.allowed.test", "TXT"), ("blocked.test", "A")]
        .iter()
        .map(|(n, t)| (format!("{n} {t}"), dig(ns, &[n, t])))
        .collect()
}

#[test]
fn harden_a_tunnel_burst_is_throttled_after_its_budget_and_reported_once() {
    let w = world();
    let ns = w.p.work.clone();
    let limits = [("DNS_ZONE_BUDGET", "20"), ("DNS_RATE_QPS", "1000"), ("DNS_RATE_BURST", "1000")];
    let d = start(&w, "budget", &limits);
    d.wait_logged("dns: hardening on: ", Duration::from_secs(5));
    // The workload's real names, before the tunnel starts.
    for (what, out) in ordinary(&ns) {
        assert_eq!(status(&out), "NOERROR", "{what}:\n{out}");
    }
    let codes = ask_all(&ns, tunnel_names(60), RecordType::TXT);
    // 2 names of the zone counted already (allowed.test and
    // medium.allowed.test), so 18 more pass.
    let passed = codes[..18].iter().filter(|c| **c == Some(ResponseCode::NXDomain)).count();
    assert_eq!(passed, 18, "the budget's names are forwarded: {codes:?}");
    assert_eq!(refused(&codes[18..]), 42, "every name beyond the budget is REFUSED: {codes:?}");
    for (what, out) in ordinary(&ns) {
        assert_eq!(status(&out), "NOERROR", "an ordinary lookup during the tunnel, {what}:\n{out}");
    }
    let evs = events(&d);
    let budget = with_reason(&evs, "budget");
    assert_eq!(budget.len(), 1, "reported once per window, not per query: {budget:#?}");
    let note = budget[0]["note"].as_str().unwrap_or_default();
    assert_eq!(note, "zone allowed.test: 21 distinct names within 60s (DNS_ZONE_BUDGET 20)", "{}", budget[0]);
    assert_eq!(budget[0]["rcode"], "REFUSED", "{}", budget[0]);
    drop(d);

    // Control: without hardening the tunnel flows.
    let d = start(&w, "budget-off", &[("DNS_HARDENING", "false"), ("DNS_ZONE_BUDGET", "20")]);
    d.wait_logged("dns: hardening off", Duration::from_secs(5));
    let codes = ask_all(&ns, tunnel_names(60), RecordType::TXT);
    assert_eq!(refused(&codes), 0, "DNS_HARDENING=false: {codes:?}");
    assert!(codes.iter().all(|c| *c == Some(ResponseCode::NXDomain)), "{codes:?}");
    assert!(with_reason(&events(&d), "budget").is_empty());
}

#[test]
fn harden_over_long_names_odd_types_and_bulky_txt_are_refused() {
    let w = world();
    let ns = w.p.work.clone();
    let long_label = format!("{}.allowed.test", "a".repeat(61));
    let long_name = format!(
        "{}.allowed.test",
        ["b".repeat(50), "c".repeat(50), "d".repeat(50), "e".repeat(40)].join(".")
    );
    assert_eq!(long_name.len(), 206);
    let cases: [(&str, Vec<&str>, &str); 5] = [
        ("label-length", vec![long_label.as_str(), "A"], "label of 61 characters (DNS_MAX_LABEL_LEN 60)"),
        ("name-length", vec![long_name.as_str(), "A"], "name of 206 characters (DNS_MAX_NAME_LEN 200)"),
        ("qtype", vec!["x.allowed.test", "NULL"], "query type NULL refused"),
        ("qtype", vec!["y.allowed.test", "TYPE65399"], "query type TYPE65399 refused"),
        ("txt-size", vec!["+tcp", "huge.allowed.test", "TXT"], "8000 bytes of TXT (DNS_MAX_TXT_BYTES 2048)"),
    ];
    let d = start(&w, "static", &[]);
    for (reason, args, note) in &cases {
        let out = dig(&ns, args);
        assert_eq!(status(&out), "REFUSED", "{args:?}:\n{out}");
        assert!(out.contains("EDE: 18 (Prohibited)"), "{args:?}:\n{out}");
        let ev = d.wait_event("dns.blocked", "reason", *reason);
        assert_eq!(ev["note"], *note, "{ev}");
    }
    // The ordinary neighbours of each: served.
    for args in [vec!["allowed.test", "A"], vec!["medium.allowed.test", "TXT"], vec!["allowed.test", "HTTPS"]]
    {
        let out = dig(&ns, &args);
        assert_eq!(status(&out), "NOERROR", "{args:?}:\n{out}");
    }
    drop(d);

    let d = start(&w, "static-off", &[("DNS_HARDENING", "false")]);
    for (_, args, _) in &cases {
        let out = dig(&ns, args);
        assert_ne!(status(&out), "REFUSED", "DNS_HARDENING=false, {args:?}:\n{out}");
        assert!(["NOERROR", "NXDOMAIN"].contains(&status(&out)), "{args:?}:\n{out}");
    }
    drop(d);
}

#[test]
fn harden_a_burst_above_the_rate_is_refused_for_the_excess_and_reported_once() {
    let w = world();
    let ns = w.p.work.clone();
    let d = start(&w, "rate", &[("DNS_RATE_QPS", "5"), ("DNS_RATE_BURST", "10")]);
    let names = vec!["allowed.test".to_owned(); 60];
    let start_at = Instant::now();
    let codes = ask_all(&ns, names.clone(), RecordType::A);
    let took = start_at.elapsed().as_secs_f64();
    let answered = codes.iter().filter(|c| **c == Some(ResponseCode::NoError)).count();
    // burst + one second's rate at once, then 5 a second while it ran.
    let most = 15 + (5.0 * took).ceil() as usize;
    assert!(answered >= 15, "burst + rate are served: {answered} of 60 ({codes:?})");
    assert!(answered <= most, "{answered} answered in {took:.2}s, at most {most} allowed");
    assert_eq!(refused(&codes), 60 - answered, "the excess is REFUSED: {codes:?}");
    assert!(codes[..15].iter().all(|c| *c == Some(ResponseCode::NoError)), "{codes:?}");
    let evs = events(&d);
    let rate = with_reason(&evs, "rate");
    assert_eq!(rate.len(), 1, "one event per window: {rate:#?}");
    assert_eq!(rate[0]["qname"], "allowed.test", "{}", rate[0]);
    // Refill: a second later the client is served again.
    std::thread::sleep(Duration::from_secs(1));
    let again = ask_all(&ns, vec!["allowed.test".to_owned()], RecordType::A);
    assert_eq!(again, [Some(ResponseCode::NoError)]);
    drop(d);

    let d =
        start(&w, "rate-off", &[("DNS_HARDENING", "false"), ("DNS_RATE_QPS", "5"), ("DNS_RATE_BURST", "10")]);
    let codes = ask_all(&ns, names, RecordType::A);
    assert!(codes.iter().all(|c| *c == Some(ResponseCode::NoError)), "DNS_HARDENING=false: {codes:?}");
    assert!(with_reason(&events(&d), "rate").is_empty());
}
