//! The SSRF guard (`GUARD_ADDRESSES`, issue 23) end to end: the real
//! `egret run` in a workload namespace, real `curl` and `dig`, the test
//! DNS server answering names under the allowed wildcard `*.example.test`
//! with the metadata address, loopback, a private address, IPv6
//! link-local, and a public test address (203.0.113.80, TEST-NET-3: not
//! in any class guarded here). The upstream namespace holds
//! 169.254.169.254 and 203.0.113.80 with an HTTP server on each, so a
//! connection that gets through is answered ("hello from ...").
//!
//! Each test ends with the same traffic under `GUARD_ADDRESSES=none`,
//! which must get through: the refusals before it are the guard's.
//!
//! Two guarded classes cannot reach the proxies from a workload at all,
//! so their curl cases go through egret's resolver (`DNS_IN_HTTPS_MODE`)
//! instead: loopback destinations are local and never redirected (the
//! ruleset's `fib daddr type local return`), and an IPv6 link-local
//! connect needs an interface scope, with which the redirect to `::1`
//! cannot be delivered (curl to `[fe80::1%eth0]:80` times out, egret
//! never sees it). The proxies' guard on both is covered by
//! `proxy::tests::guarded_destinations`.

use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use hickory_proto::rr::rdata::svcb::{IpHint, SvcParamKey, SvcParamValue, SVCB};
use hickory_proto::rr::rdata::{A, AAAA, HTTPS};
use hickory_proto::rr::{Name, RData};

use crate::compat::NetnsEtc;
use crate::dnsauth::Zone;
use crate::netns::{wait_for, Guard, Pair};
use crate::run::{policy_file, world_with, Daemon, World};
use crate::util;

const META: &str = "169.254.169.254";
const PUBLIC: &str = "203.0.113.80";
const POLICY: &str = "allowlist:\n  domains: [\"*.example.test\"]\n";
/// A refusal (reset, 403, rejected connect) comes well inside this.
const FAST: Duration = Duration::from_secs(1);

/// The test zone on top of the standard one: every name is under the
/// allowed wildcard. `rebind` answers the public address once, then the
/// metadata address for ever.
fn zone(two: Ipv4Addr, three: Ipv4Addr) -> Zone {
    let meta: Ipv4Addr = META.parse().expect("ip");
    let public: Ipv4Addr = PUBLIC.parse().expect("ip");
    let mut z = Zone::standard(two, 300);
    let mut add = |name: &str, data: RData| z.records.push((name.to_owned(), 300, data));
    add("meta.example.test", RData::A(A(meta)));
    add("lo.example.test", RData::A(A(Ipv4Addr::LOCALHOST)));
    add("internal.example.test", RData::A(A(three)));
    add("ll.example.test", RData::AAAA(AAAA("fe80::1".parse().expect("ip"))));
    add("public.example.test", RData::A(A(public)));
    // RFC 9460: a client may connect to a hint before asking for A.
    let svcb = SVCB::new(
        1,
        Name::root(),
        vec![(SvcParamKey::Ipv4Hint, SvcParamValue::Ipv4Hint(IpHint(vec![A(meta)])))],
    );
    add("hint.example.test", RData::HTTPS(HTTPS(svcb)));
    z.rotate.push(("rebind.example.test".into(), 300, vec![public, meta]));
    z
}

/// The world of `run.rs` with the guard's zone, plus the metadata and
/// public addresses in the upstream namespace (routed from the workload
/// through the veth) and an HTTP server on both.
struct Net {
    w: World,
    _http: Guard,
}

fn net() -> Net {
    let w = world_with(zone);
    let p = &w.p;
    for addr in [META, PUBLIC] {
        ip(&["-n", &p.up, "addr", "add", &format!("{addr}/32"), "dev", "eth0"]);
        ip(&["-n", &p.work, "route", "add", &format!("{addr}/32"), "via", &p.v4(2)]);
    }
    let http = Pair::spawn_ready(
        &p.up,
        "python3",
        &[&util::data("netns/http_server.py").to_string_lossy(), "80", &format!("{META},{PUBLIC}")],
    );
    Net { w, _http: http }
}

fn ip(args: &[&str]) {
    let out = std::process::Command::new("ip").args(args).output().expect("run ip");
    assert!(out.status.success(), "ip {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// How one curl ended.
#[derive(Debug)]
struct Curl {
    exit: i32,
    code: String,
    body: String,
    took: Duration,
}

/// curl in `ns` (5 s at most).
fn curl(ns: &str, args: &[&str]) -> Curl {
    let mut c = Pair::exec(ns, "curl");
    c.args(["-s", "-m", "5", "-w", "\n%{http_code}"]).args(args);
    let start = Instant::now();
    let (exit, out, _) = util::run(c);
    let took = start.elapsed();
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    Curl { exit, code: code.to_owned(), body: body.trim().to_owned(), took }
}

/// curl `http://NAME/` connecting to `addr` (the workload resolved it so).
fn http_to(ns: &str, name: &str, addr: &str) -> Curl {
    curl(ns, &["--resolve", &format!("{name}:80:{addr}"), &format!("http://{name}/")])
}

fn served_by(c: &Curl, addr: &str) -> bool {
    c.code == "200" && c.body == format!("hello from {addr}")
}

/// dig in `ns` at `server` (with egret's resolver on, port 53 of any
/// address is redirected to it).
fn dig(ns: &str, server: &str, args: &[&str]) -> String {
    let mut c = Pair::exec(ns, "dig");
    c.arg(format!("@{server}")).args(["+time=3", "+tries=1"]).args(args);
    util::run(c).1
}

fn status(out: &str) -> &str {
    out.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("<no status>")
}

/// The addresses of a dig answer section (A and AAAA).
fn addresses(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && (f[3] == "A" || f[3] == "AAAA")).then(|| f[4].to_owned())
        })
        .collect()
}

/// The EDE dig prints for an answer the guard refused.
fn guard_ede(name: &str, note: &str) -> String {
    format!("EDE: 15 (Blocked): (egret: blocked by policy ({name}: destination-guarded, {note}))")
}

fn assert_guard_event(ev: &serde_json::Value, note: &str) {
    assert_eq!(ev["action"], "BLOCKED", "{ev}");
    assert_eq!(ev["reason"], "destination-guarded", "{ev}");
    assert_eq!(ev["note"], note, "{ev}");
}

#[test]
fn guard_https_mode_refuses_allowed_names_that_lead_to_guarded_destinations() {
    let n = net();
    let p = &n.w.p;
    let pol = policy_file("guard-https", POLICY);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);

    // The metadata address, answered by the allowed name itself (the
    // anti-spoofing check matches): refused with the reason, over HTTP
    // (403) and TLS (reset), before egret connects anywhere.
    let c = http_to(&p.work, "meta.example.test", META);
    assert_eq!(c.code, "403", "{c:?}");
    assert_eq!(c.body, "egret: blocked request to meta.example.test: destination-guarded", "{c:?}");
    assert!(c.took < FAST, "{c:?}");
    let ev = d.wait_event("http.blocked", "destination_ip", META);
    assert_guard_event(&ev, "metadata address 169.254.169.254");
    assert_eq!(ev["http_host"], "meta.example.test", "{ev}");
    let c = curl(
        &p.work,
        &["-k", "--resolve", &format!("meta.example.test:443:{META}"), "https://meta.example.test/"],
    );
    assert_eq!(c.code, "000", "{c:?}");
    assert_ne!(c.exit, 0, "{c:?}");
    assert!(c.took < FAST, "a reset, not a hang: {c:?}");
    let ev = d.wait_event("https.blocked", "destination_ip", META);
    assert_guard_event(&ev, "metadata address 169.254.169.254");
    assert_eq!(ev["https"], "meta.example.test", "{ev}");

    // Private addresses are opt-in (internal services allowed by name),
    // and a public address passes.
    let c = http_to(&p.work, "internal.example.test", &p.v4(3));
    assert!(served_by(&c, &p.v4(3)), "private is not guarded by default: {c:?}");
    let c = http_to(&p.work, "public.example.test", PUBLIC);
    assert!(served_by(&c, PUBLIC), "{c:?}");

    // allowlist.ips names the address: the guard steps aside.
    std::fs::write(&pol, format!("{POLICY}  ips: [\"{META}\"]\n")).expect("write policy");
    d.wait_log("policy reloaded", Duration::from_secs(5));
    let c = http_to(&p.work, "meta.example.test", META);
    assert!(served_by(&c, META), "in allowlist.ips: {c:?}");
    drop(d);

    // private opted in: the same request to 10.x is refused.
    std::fs::write(&pol, POLICY).expect("write policy");
    let d =
        Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream), ("GUARD_ADDRESSES", "default,private")]);
    let c = http_to(&p.work, "internal.example.test", &p.v4(3));
    assert_eq!(
        (c.code.as_str(), c.body.as_str()),
        ("403", "egret: blocked request to internal.example.test: destination-guarded"),
        "{c:?}"
    );
    let ev = d.wait_event("http.blocked", "destination_ip", p.v4(3).as_str());
    assert_guard_event(&ev, &format!("private address {}", p.v4(3)));
    let c = http_to(&p.work, "public.example.test", PUBLIC);
    assert!(served_by(&c, PUBLIC), "{c:?}");
    drop(d);

    // Control: without the guard the allowed name leads egret to the
    // metadata service.
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream), ("GUARD_ADDRESSES", "none")]);
    let c = http_to(&p.work, "meta.example.test", META);
    assert!(served_by(&c, META), "GUARD_ADDRESSES=none: {c:?}");
    let ev = d.wait_event("http.allowed", "destination_ip", META);
    assert_eq!(ev["http_host"], "meta.example.test", "{ev}");
}

#[test]
fn guard_egrets_resolver_in_https_mode_answers_curl_nxdomain_for_guarded_addresses() {
    let n = net();
    let p = &n.w.p;
    // curl resolves through libc; every port-53 packet goes to egret.
    let etc = NetnsEtc::new(&p.work);
    etc.write("resolv.conf", &format!("nameserver {}\n", p.v4(2)));
    let pol = policy_file("guard-resolver", POLICY);
    let upstream = format!("{}:53", p.v4(2));
    let env = [("DNS_UPSTREAMS", upstream.as_str()), ("DNS_IN_HTTPS_MODE", "true")];
    let d = Daemon::start(&p.work, &pol, &env);

    for (name, note) in [
        ("meta.example.test", "metadata address 169.254.169.254"),
        ("lo.example.test", "loopback address 127.0.0.1"),
        ("ll.example.test", "link-local address fe80::1"),
    ] {
        let c = curl(&p.work, &[&format!("http://{name}/")]);
        assert_eq!(c.exit, 6, "{name}: curl must not resolve it: {c:?}");
        let ev = d.wait_event("dns.blocked", "note", note);
        assert_guard_event(&ev, note);
        assert_eq!((ev["qname"].as_str(), ev["rcode"].as_str()), (Some(name), Some("NXDOMAIN")), "{ev}");
    }
    let c = curl(&p.work, &["http://public.example.test/"]);
    assert!(served_by(&c, PUBLIC), "{c:?}");

    // DNS rebinding: the first answer is public and served, the second
    // points at the metadata service and is refused.
    let c = curl(&p.work, &["http://rebind.example.test/"]);
    assert!(served_by(&c, PUBLIC), "first answer: {c:?}");
    let c = curl(&p.work, &["http://rebind.example.test/"]);
    assert_eq!(c.exit, 6, "second answer: {c:?}");
    let ev = d.wait_event("dns.blocked", "qname", "rebind.example.test");
    assert_guard_event(&ev, "metadata address 169.254.169.254");
    drop(d);

    // Control: without the guard the name resolves and leads there.
    let env =
        [("DNS_UPSTREAMS", upstream.as_str()), ("DNS_IN_HTTPS_MODE", "true"), ("GUARD_ADDRESSES", "none")];
    let d = Daemon::start(&p.work, &pol, &env);
    let c = curl(&p.work, &["http://meta.example.test/"]);
    assert!(served_by(&c, META), "GUARD_ADDRESSES=none: {c:?}");
    d.wait_event("dns.allowed", "qname", "meta.example.test");
}

#[test]
fn guard_strict_dns_mode_never_learns_a_guarded_answer_and_refuses_rebinding() {
    let n = net();
    let p = &n.w.p;
    let pol = policy_file("guard-strict", POLICY);
    let upstream = format!("{}:53", p.v4(2));
    let strict = [("DNS_UPSTREAMS", upstream.as_str()), ("FILTER_MODE", "dns"), ("DNS_STRICT", "true")];
    let d = Daemon::start(&p.work, &pol, &strict);
    let learned = || {
        let mut c = Pair::exec(&p.work, "nft");
        c.args(["list", "set", "inet", "egret", "learned4"]);
        let (code, out, err) = util::run(c);
        assert_eq!(code, 0, "{err}");
        out
    };

    // The guarded answer: NXDOMAIN with the EDE, an event, nothing learned
    // (a connect to the address is rejected at once).
    let out = dig(&p.work, &p.v4(2), &["meta.example.test", "A"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(out.contains(&guard_ede("meta.example.test", "metadata address 169.254.169.254")), "{out}");
    assert!(addresses(&out).is_empty(), "{out}");
    let ev = d.wait_event("dns.blocked", "qname", "meta.example.test");
    assert_guard_event(&ev, "metadata address 169.254.169.254");
    assert_eq!(ev["rcode"], "NXDOMAIN", "{ev}");
    let c = http_to(&p.work, "meta.example.test", META);
    assert_eq!((c.exit, c.code.as_str()), (7, "000"), "the connect must be rejected: {c:?}");
    assert!(c.took < FAST, "{c:?}");
    assert!(!learned().contains(META), "{}", learned());

    // The other forms strict mode learns from: an HTTPS record's hint and
    // an AAAA record.
    let out = dig(&p.work, &p.v4(2), &["hint.example.test", "HTTPS"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(out.contains(&guard_ede("hint.example.test", "metadata address 169.254.169.254")), "{out}");
    let out = dig(&p.work, &p.v6(2), &["ll.example.test", "AAAA"]);
    assert_eq!(status(&out), "NXDOMAIN", "{out}");
    assert!(out.contains(&guard_ede("ll.example.test", "link-local address fe80::1")), "{out}");

    // A public answer is learned and reachable: the path is open, so the
    // refusals above are the guard's.
    let out = dig(&p.work, &p.v4(2), &["public.example.test", "A"]);
    assert_eq!((status(&out), addresses(&out)), ("NOERROR", vec![PUBLIC.to_owned()]), "{out}");
    assert!(served_by(&http_to(&p.work, "public.example.test", PUBLIC), PUBLIC));

    // DNS rebinding: public, then the metadata address. The second answer
    // is refused and not learned.
    let out = dig(&p.work, &p.v4(2), &["rebind.example.test", "A"]);
    assert_eq!((status(&out), addresses(&out)), ("NOERROR", vec![PUBLIC.to_owned()]), "first: {out}");
    let out = dig(&p.work, &p.v4(2), &["rebind.example.test", "A"]);
    assert_eq!(status(&out), "NXDOMAIN", "second: {out}");
    assert!(out.contains(&guard_ede("rebind.example.test", "metadata address 169.254.169.254")), "{out}");
    let ev = d.wait_event("dns.blocked", "qname", "rebind.example.test");
    assert_guard_event(&ev, "metadata address 169.254.169.254");
    let c = http_to(&p.work, "rebind.example.test", META);
    assert_eq!(c.exit, 7, "after the rebinding answer: {c:?}");
    assert!(!learned().contains(META), "{}", learned());

    // allowlist.ips covers the address: the answer passes.
    std::fs::write(&pol, format!("{POLICY}  ips: [\"{META}\"]\n")).expect("write policy");
    d.wait_log("policy reloaded", Duration::from_secs(5));
    let out = wait_for(Duration::from_secs(5), || {
        let out = dig(&p.work, &p.v4(2), &["meta.example.test", "A"]);
        (status(&out) == "NOERROR").then_some(out)
    })
    .expect("meta.example.test never answered with the address in allowlist.ips");
    assert_eq!(addresses(&out), [META], "{out}");
    assert!(served_by(&http_to(&p.work, "meta.example.test", META), META));
    drop(d);

    // Control: without the guard, strict mode learns the metadata address
    // and opens it.
    std::fs::write(&pol, POLICY).expect("write policy");
    let mut off = strict.to_vec();
    off.push(("GUARD_ADDRESSES", "none"));
    let d = Daemon::start(&p.work, &pol, &off);
    let out = dig(&p.work, &p.v4(2), &["meta.example.test", "A"]);
    assert_eq!((status(&out), addresses(&out)), ("NOERROR", vec![META.to_owned()]), "{out}");
    assert!(learned().contains(META), "{}", learned());
    assert!(served_by(&http_to(&p.work, "meta.example.test", META), META), "GUARD_ADDRESSES=none");
    drop(d);
}

/// The metadata service through the local-use NAT64 prefix
/// (64:ff9b:1::/48, RFC 8215; 169.254.169.254 at 64:ff9b:1::a9fe:a9fe)
/// and GCP's IPv6 metadata address, under a policy whose IPs allow
/// `::/0` and the whole /48: refused with the guard's reason. The wide
/// entries merely cover the addresses; the ruleset leaves them out of
/// `allowed6`, so the connection meets the proxy and its guard.
/// Control: `GUARD_ADDRESSES=none` reaches both.
#[test]
fn guard_nat64_and_ipv6_metadata_refused_although_wide_entries_cover_them() {
    const NAT64_META: &str = "64:ff9b:1::a9fe:a9fe";
    const GCP6: &str = "fd20:ce::254";
    let n = net();
    let p = &n.w.p;
    for addr in [NAT64_META, GCP6] {
        ip(&["-n", &p.up, "addr", "add", &format!("{addr}/128"), "dev", "eth0", "nodad"]);
        ip(&["-n", &p.work, "route", "add", &format!("{addr}/128"), "via", &p.v6(2)]);
    }
    let _http6 = Pair::spawn_ready(
        &p.up,
        "python3",
        &[&util::data("netns/http_server.py").to_string_lossy(), "80", &format!("{NAT64_META},{GCP6}")],
    );
    let yaml = format!("{POLICY}  ips: [\"::/0\", \"64:ff9b:1::/48\"]\n");
    let pol = policy_file("guard-nat64", &yaml);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    for addr in [NAT64_META, GCP6] {
        let c = http_to(&p.work, "meta.example.test", &format!("[{addr}]"));
        assert_eq!(c.code, "403", "{addr}: {c:?}");
        assert!(c.body.contains("destination-guarded"), "{addr}: {c:?}");
        assert!(c.took < FAST, "{c:?}");
        let ev = d.wait_event("http.blocked", "destination_ip", addr);
        assert_guard_event(&ev, &format!("metadata address {addr}"));
    }
    drop(d);
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream), ("GUARD_ADDRESSES", "none")]);
    for addr in [NAT64_META, GCP6] {
        let c = http_to(&p.work, "meta.example.test", &format!("[{addr}]"));
        assert!(served_by(&c, addr), "GUARD_ADDRESSES=none, {addr}: {c:?}");
    }
    drop(d);
}
