//! `egret selftest` against the live ruleset: every technique holds on
//! egret's rules, and the same techniques report BYPASS on a ruleset with
//! the fixes of issue 15 and of round 2 taken out, while nothing reaches
//! the upstream.

use std::path::PathBuf;
use std::time::Duration;

use crate::netns::{Guard, Pair};
use crate::run::{policy_file, world, Daemon, World};
use crate::util;

const ALLOWED: &str = "allowlist:\n  domains: [\"allowed.test\"]\n";

/// A world whose workload namespace has default routes through the
/// upstream (the canary needs a route), a daemon, and a sniffer on the
/// upstream side that would see any frame to the canary.
fn setup(tag: &str, env: &[(&str, &str)]) -> (World, Daemon, Guard) {
    setup_with(tag, ALLOWED, env)
}

/// [`setup`] with the policy `yaml`.
fn setup_with(tag: &str, yaml: &str, env: &[(&str, &str)]) -> (World, Daemon, Guard) {
    let w = world();
    let ip = |args: &[&str]| {
        let st = std::process::Command::new("ip").args(args).status().expect("ip");
        assert!(st.success(), "ip {args:?}");
    };
    ip(&["-n", &w.p.work, "route", "add", "default", "via", &w.p.v4(2)]);
    ip(&["-n", &w.p.work, "-6", "route", "add", "default", "via", &w.p.v6(2)]);
    let sniff = Pair::spawn_ready(
        &w.p.up,
        crate::nft::py(),
        &[&util::data("netns/sniff_marker.py").to_string_lossy(), "eth0", "canary"],
    );
    let pol = policy_file(&format!("selftest-{tag}"), yaml);
    let upstream = format!("{}:53", w.p.v4(2));
    let mut all = vec![("DNS_UPSTREAMS", upstream.as_str())];
    all.extend_from_slice(env);
    let d = Daemon::start(&w.p.work, &pol, &all);
    (w, d, sniff)
}

/// `egret selftest` in `ns`: (exit code, stdout).
fn selftest(ns: &str) -> (i32, String) {
    let mut c = Pair::exec(ns, env!("CARGO_BIN_EXE_egret"));
    c.arg("selftest").env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("LOG_LEVEL", "warn");
    c.env("POLICY_PATH", "/nonexistent");
    let (code, out, err) = util::run(c);
    eprintln!("egret selftest:\n{out}{err}");
    (code, out)
}

fn verdicts(out: &str) -> Vec<(String, String)> {
    out.lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let v = w.next()?;
            let t = w.next()?;
            matches!(v, "held" | "BYPASS" | "skipped").then(|| (v.to_owned(), t.to_owned()))
        })
        .collect()
}

fn nft(ns: &str, args: &str) {
    let mut c = Pair::exec(ns, "sh");
    c.args(["-c", &format!("nft {args}")]);
    let (code, _, err) = util::run(c);
    assert_eq!(code, 0, "nft {args}: {err}");
}

/// The handle of the first rule of `chain` whose text contains `what`.
fn handle(ns: &str, chain: &str, what: &str) -> String {
    let mut c = Pair::exec(ns, "nft");
    c.args(["-a", "list", "chain", "inet", "egret", chain]);
    let (_, out, _) = util::run(c);
    out.lines()
        .find(|l| l.contains(what))
        .and_then(|l| l.rsplit_once("# handle ").map(|(_, h)| h.trim().to_owned()))
        .unwrap_or_else(|| panic!("no rule with {what:?} in {chain}:\n{out}"))
}

const TECHNIQUES: [&str; 14] = [
    "direct",
    "quic",
    "foreign-resolver",
    "listener-direct",
    "forged-reply-udp6",
    "forged-reply-tcp6",
    "forged-reply-udp4",
    "forged-reply-tcp4",
    "guessed-marks",
    "nd-covert",
    "af-packet",
    "af-xdp",
    "tag-leak",
    "nd-user-socket",
];

#[test]
fn selftest_holds_on_egrets_ruleset_and_sees_the_bypasses_of_a_weakened_one() {
    // No watchdog during the test: it would restore the weakened rules.
    let (w, _d, sniff) = setup("weak", &[("WATCHDOG_INTERVAL", "1h")]);
    let ns = &w.p.work;
    let (code, out) = selftest(ns);
    assert_eq!(code, 0, "{out}");
    let held: Vec<String> = verdicts(&out).into_iter().filter(|(v, _)| v == "held").map(|(_, t)| t).collect();
    assert_eq!(held, TECHNIQUES.map(String::from).to_vec(), "every technique tried and held:\n{out}");

    // Take the fixes out again: the forged-source drop, the inbound stamp
    // on replies, ND's shape, the egress chains.
    let h = handle(ns, "filter_out", "fib saddr type != local");
    nft(ns, &format!("delete rule inet egret filter_out handle {h}"));
    let h = handle(ns, "filter_out", "ct direction reply ct mark");
    nft(ns, &format!("replace rule inet egret filter_out handle {h} ct direction reply accept"));
    let h = handle(ns, "filter_out", "nd-neighbor-solicit");
    nft(ns, &format!("replace rule inet egret filter_out handle {h} icmpv6 type nd-neighbor-solicit accept"));
    nft(ns, "delete table netdev egret");
    // Round 2: ND from a process's socket, the tag on looped multicast (an
    // allowlist naming a multicast range lets the workload's own out), and
    // an interface whose queues egret does not hold (added after start,
    // with the watchdog asleep).
    for _ in 0..10 {
        let mut c = Pair::exec(ns, "nft");
        c.args(["-a", "list", "chain", "inet", "egret", "filter_out"]);
        let (_, out, _) = util::run(c);
        if !out.contains("meta skuid") {
            break;
        }
        let h = handle(ns, "filter_out", "meta skuid");
        nft(ns, &format!("delete rule inet egret filter_out handle {h}"));
    }
    nft(ns, "insert rule inet egret filter_out ip daddr 239.0.0.0/8 accept");
    let h = handle(ns, "tag_out", "ip daddr 224.0.0.0/4");
    nft(ns, &format!("delete rule inet egret tag_out handle {h}"));
    for args in [
        &["link", "add", "late0", "type", "veth", "peer", "name", "late1"][..],
        &["link", "set", "late0", "up"],
        &["link", "set", "late1", "up"],
    ] {
        let st = std::process::Command::new("ip").args(["-n", ns]).args(args).status();
        assert!(st.is_ok_and(|s| s.success()), "ip {args:?}");
    }
    let (code, out) = selftest(ns);
    assert_eq!(code, 1, "a bypass is exit 1:\n{out}");
    let bypass: Vec<String> =
        verdicts(&out).into_iter().filter(|(v, _)| v == "BYPASS").map(|(_, t)| t).collect();
    for t in [
        "forged-reply-udp6",
        "forged-reply-tcp6",
        "forged-reply-udp4",
        "forged-reply-tcp4",
        "nd-covert",
        "af-packet",
        "af-xdp",
        "tag-leak",
        "nd-user-socket",
    ] {
        assert!(bypass.iter().any(|b| b == t), "{t} not reported as BYPASS:\n{out}");
    }
    assert!(out.contains("selftest: BYPASS by"), "{out}");

    // Its counting table is gone, and nothing reached the upstream.
    let mut c = Pair::exec(ns, "nft");
    c.args(["list", "tables"]);
    let (_, tables, _) = util::run(c);
    assert!(!tables.contains("egret_selftest"), "{tables}");
    assert_eq!(sniff.line(Duration::from_millis(500)), None, "a frame to the canary left the pod");
}

/// `default_action: allow` keeps every escape invariant: with the canary
/// denylisted, every technique holds, in HTTPS and DNS mode (the forged
/// replies, neighbour discovery, raw frames and the tag are refused by
/// the same rules as under the default deny). Without the canary in the
/// denylist the direct ways to it pass, by design: the denylist is what
/// refuses them.
#[test]
fn selftest_holds_under_default_allow_with_the_canary_denylisted() {
    let canary = "default_action: allow\ndenylist:\n  ips: [\"192.0.2.77\", \"2001:db8::77\"]\n";
    for (tag, env) in [("allow-https", &[][..]), ("allow-dns", &[("FILTER_MODE", "dns")][..])] {
        let (w, d, sniff) = setup_with(tag, canary, env);
        let (code, out) = selftest(&w.p.work);
        assert_eq!(code, 0, "{tag}: {out}");
        let held: Vec<String> =
            verdicts(&out).into_iter().filter(|(v, _)| v == "held").map(|(_, t)| t).collect();
        assert_eq!(
            held,
            TECHNIQUES.map(String::from).to_vec(),
            "{tag}: every technique tried and held:\n{out}"
        );
        assert_eq!(sniff.line(Duration::from_millis(500)), None, "{tag}: a frame to the canary left the pod");
        drop(d);
    }
    let (w, _d, _sniff) =
        setup_with("allow-open", "default_action: allow\ndenylist:\n  ips: [\"192.0.2.78\"]\n", &[]);
    let (code, out) = selftest(&w.p.work);
    assert_eq!(code, 1, "{out}");
    let bypass: Vec<String> =
        verdicts(&out).into_iter().filter(|(v, _)| v == "BYPASS").map(|(_, t)| t).collect();
    assert!(bypass.iter().any(|b| b == "direct"), "the canary is not denylisted: direct passes\n{out}");
}

fn health(ns: &str) -> (i32, String) {
    let sock: PathBuf =
        PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!("health-{ns}")).join("egret.sock");
    let mut c = Pair::exec(ns, env!("CARGO_BIN_EXE_egret"));
    c.arg("health").env_clear().env("HEALTH_SOCKET", &sock);
    let (code, out, err) = util::run(c);
    (code, format!("{out}{err}"))
}

#[test]
fn selftest_at_start_reports_through_health_and_an_event() {
    let (w, d, _sniff) = setup("start", &[("SELFTEST", "true")]);
    let ev = d.wait_event("egret.selftest", "action", "ALLOWED");
    assert!(ev["note"].as_str().unwrap_or("").contains("14 techniques held"), "{ev}");
    assert_eq!(health(&w.p.work).0, 0, "healthy after a clean self-test");
    drop(d);

    // Without a route to the canary nothing can be judged: say so.
    let w = world();
    let pol = policy_file("selftest-noroute", ALLOWED);
    let upstream = format!("{}:53", w.p.v4(2));
    let d = Daemon::start(&w.p.work, &pol, &[("DNS_UPSTREAMS", &upstream), ("SELFTEST", "true")]);
    let ev = d.wait_event("egret.selftest", "reason", "selftest-failed");
    assert!(ev["note"].as_str().unwrap_or("").contains("no route to the canary"), "{ev}");
    let (code, out) = health(&w.p.work);
    assert_eq!(code, 1, "a self-test that could not judge is not healthy: {out}");
}
