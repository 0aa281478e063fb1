//! egret's resolver in HTTPS mode (`DNS_IN_HTTPS_MODE`), end to end: the
//! real `egret run` in a workload namespace, real `dig` and `curl`, the
//! test DNS server (`dnsauth`) and an HTTP server upstream.
//!
//! The upstream's `cdn.test` changes its A answer after the first lookup
//! (first `.3`, then `.2` for ever), like a CDN rotating addresses. A
//! workload that resolved `.3` through egret must be let through to `.3`
//! although the proxy's own lookup now says `.2`; without egret's resolver
//! in between the same sequence is an `ip-mismatch` (the control test), so
//! the first test can only pass because egret remembers what it handed
//! out.

use crate::dnsauth::Zone;
use crate::netns::Pair;
use crate::run::{curl, policy_file, world_with, Daemon, World};
use crate::util;

/// Upstream: HTTP on .2 and .3 port 80; DNS on .2:53 with the standard
/// zone (allowed.test and blocked.test at .2) plus `cdn.test` answering
/// .3 once, then .2.
fn world() -> World {
    world_with(|two, three| {
        let mut zone = Zone::standard(two, 300);
        zone.rotate.push(("cdn.test".into(), 300, vec![three, two]));
        zone
    })
}

/// dig inside the workload namespace, at `server` (any address: with
/// egret's resolver on, port 53 is redirected to it).
fn dig(ns: &str, server: &str, args: &[&str]) -> String {
    let mut c = Pair::exec(ns, "dig");
    c.arg(format!("@{server}")).args(["+time=3", "+tries=1"]).args(args);
    util::run(c).1
}

fn status(out: &str) -> &str {
    out.split("status: ").nth(1).and_then(|s| s.split(',').next()).unwrap_or("<no status>")
}

/// The A records of a dig answer section.
fn a_records(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| !l.starts_with(';'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.len() == 5 && f[3] == "A").then(|| f[4].to_owned())
        })
        .collect()
}

const POLICY: &str = "allowlist:\n  domains: [\"allowed.test\", \"cdn.test\"]\n";

#[test]
fn dns_in_https_mode_filters_names_and_feeds_the_anti_spoofing() {
    let w = world();
    let p = &w.p;
    let pol = policy_file("dns-https-on", POLICY);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream), ("DNS_IN_HTTPS_MODE", "true")]);

    // (a) A blocked name: NXDOMAIN with egret's EDE, whichever resolver
    // the workload asks (.3 runs no DNS server at all), UDP, TCP and v6.
    for (server, transport, qtype) in
        [(p.v4(3), "+notcp", "A"), (p.v4(2), "+tcp", "A"), (p.v6(3), "+notcp", "AAAA")]
    {
        let out = dig(&p.work, &server, &[transport, "blocked.test", qtype]);
        assert_eq!(status(&out), "NXDOMAIN", "@{server} {transport} {qtype}:\n{out}");
        assert!(out.contains("EDE: 15 (Blocked)"), "@{server} {transport}:\n{out}");
        assert!(out.contains("blocked.test: not-allowlisted"), "{out}");
    }
    assert_eq!(w.dns.total("blocked.test"), 0, "a blocked name never reaches the upstream");
    let ev = d.wait_event("dns.blocked", "qname", "blocked.test");
    assert_eq!((ev["rcode"].as_str(), ev["reason"].as_str()), (Some("NXDOMAIN"), Some("not-allowlisted")));

    // An allowed name resolves, through egret (its event says so).
    let out = dig(&p.work, &p.v4(3), &["allowed.test", "A"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert_eq!(a_records(&out), [p.v4(2)], "{out}");
    let ev = d.wait_event("dns.allowed", "qname", "allowed.test");
    assert_eq!(ev["note"], p.v4(2).as_str());

    // (b) The workload resolves cdn.test through egret and gets .3 ...
    let out = dig(&p.work, &p.v4(2), &["cdn.test", "A"]);
    assert_eq!(a_records(&out), [p.v4(3)], "the upstream's first answer:\n{out}");
    assert_eq!(w.dns.count("cdn.test", "udp"), 1);
    // ... and connects to .3: allowed, although a lookup now says .2.
    let host = |ip: &str| format!("cdn.test:80:{ip}");
    let (code, body) = curl(&p.work, &["--resolve", &host(&p.v4(3)), "http://cdn.test/"]);
    assert_eq!((code.as_str(), body.trim()), ("200", format!("hello from {}", p.v4(3)).as_str()));
    let ev = d.wait_event("http.allowed", "http_host", "cdn.test");
    assert_eq!(ev["destination_ip"], p.v4(3).as_str());
    let out = dig(&p.work, &p.v4(2), &["cdn.test", "A"]);
    assert_eq!(a_records(&out), [p.v4(2)], "the upstream has moved on:\n{out}");

    // An address egret never handed out (nor does the upstream return):
    // still a spoof.
    let never = format!("10.200.{}.4", p.n);
    let (code, body) = curl(&p.work, &["--resolve", &host(&never), "http://cdn.test/"]);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("ip-mismatch"), "{body}");
    let ev = d.wait_event("http.blocked", "reason", "ip-mismatch");
    assert_eq!(
        (ev["destination_ip"].as_str(), ev["http_host"].as_str()),
        (Some(never.as_str()), Some("cdn.test"))
    );

    // The other direction of the redirect is closed: the workload cannot
    // reach the upstream resolver past egret (no accept rule for it), so
    // a query that escaped the redirect would be refused, not answered.
    let rules = {
        let mut c = Pair::exec(&p.work, "nft");
        c.args(["list", "table", "inet", "egret"]);
        util::run(c).1
    };
    assert!(rules.contains("udp dport 53 redirect to :53"), "{rules}");
    assert!(!rules.contains(&format!("ip daddr {} udp dport 53 accept", p.v4(2))), "{rules}");
}

/// The control: with the switch off (the default), DNS is the workload's
/// own business, and the same rotation makes the proxy refuse `.3`.
#[test]
fn without_dns_in_https_mode_a_rotated_answer_is_an_ip_mismatch() {
    let w = world();
    let p = &w.p;
    let pol = policy_file("dns-https-off", POLICY);
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);

    // Straight to the upstream: even a name outside the policy resolves.
    let out = dig(&p.work, &p.v4(2), &["blocked.test", "A"]);
    assert_eq!(status(&out), "NOERROR", "{out}");
    assert!(!out.contains("EDE"), "{out}");
    let out = dig(&p.work, &p.v4(2), &["cdn.test", "A"]);
    assert_eq!(a_records(&out), [p.v4(3)], "{out}");

    let (code, body) = curl(&p.work, &["--resolve", &format!("cdn.test:80:{}", p.v4(3)), "http://cdn.test/"]);
    assert_eq!(code, "403", "the proxy's own lookup says .2: {body}");
    assert!(body.contains("ip-mismatch"), "{body}");
    let ev = d.wait_event("http.blocked", "reason", "ip-mismatch");
    assert_eq!(ev["destination_ip"], p.v4(3).as_str());
    assert!(w.dns.count("cdn.test", "udp") >= 2, "the proxy asked the upstream itself");
}
