//! The kernel path end to end: `egret init` / `cleanup` / `run
//! --print-rules` inside fresh network namespaces, real traffic from a
//! workload namespace to an upstream namespace, NFLOG records read with
//! egret's own reader.
//!
//! Needs root (CI runs as root); fails loudly without it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::netns::{wait_for, within, Pair};
use crate::util;

const MARK: &str = "0x2a2a2a2a";

/// Debian's python3 when present: a version-manager shim (pyenv) costs
/// half a second per start, which the TTL test cannot afford.
pub(crate) fn py() -> &'static str {
    if Path::new("/usr/bin/python3").exists() {
        "/usr/bin/python3"
    } else {
        "python3"
    }
}

pub(crate) fn data(name: &str) -> String {
    util::data(&format!("netns/{name}")).to_string_lossy().into_owned()
}

/// `egret ARGS` inside `ns`, with a clean environment.
fn egret_in(ns: &str, policy: &Path, env: &[(&str, &str)], args: &[&str]) -> Command {
    let mut c = Pair::exec(ns, env!("CARGO_BIN_EXE_egret"));
    c.args(args).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("POLICY_PATH", policy);
    c.env("LOG_LEVEL", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    c
}

fn policy_file(name: &str, yaml: &str) -> PathBuf {
    let dir = util::scratch(name);
    let p = dir.join("policy.yaml");
    std::fs::write(&p, yaml).expect("write policy");
    p
}

fn run_ok(c: Command) -> String {
    let (code, out, err) = util::run(c);
    assert_eq!(code, 0, "stdout: {out}\nstderr: {err}");
    out
}

fn nft_list(ns: &str) -> String {
    let mut c = Pair::exec(ns, "nft");
    c.args(["list", "ruleset"]);
    run_ok(c)
}

/// nft text with whitespace collapsed and the values egret draws at
/// random on every start, whatever BYPASS_MARK says, replaced by their
/// role: the listen mark, the learned-flow generation, the egress tag.
fn normalize(s: &str) -> String {
    let mut text = egret::nft::ruleset::normalize_text(s);
    let value_after = |text: &str, key: &str, skip: &[&str]| -> Option<String> {
        text.match_indices(key).find_map(|(i, _)| {
            let v: String = text[i + key.len()..].chars().take_while(|c| c.is_ascii_alphanumeric()).collect();
            (!skip.contains(&v.as_str())).then_some(v)
        })
    };
    for (key, skip, role) in [
        ("socket mark != ", &[][..], "LISTEN"),
        ("ct mark set ", &["0x80000000"][..], "GENERATION"),
        ("meta mark set ", &["0x00000000"][..], "TAG"),
    ] {
        if let Some(v) = value_after(&text, key, skip) {
            text = text.replace(&v, role);
        }
    }
    text
}

/// `client.py` from the workload namespace: the parsed JSON outcome.
pub(crate) fn client(ns: &str, host: &str, port: u16, proto: &str, mark: Option<u32>) -> serde_json::Value {
    let mut c = Pair::exec(ns, py());
    c.args([&data("client.py"), host, &port.to_string(), proto, "x"]);
    if let Some(m) = mark {
        c.arg(format!("{m:#x}"));
    }
    let out = run_ok(c);
    serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("client output {out:?}: {e}"))
}

fn assert_reaches(v: &serde_json::Value, what: &str) {
    assert_eq!(v["ok"], "echo:x", "{what} should be reachable: {v}");
}

/// Refused at once (TCP RST / ICMP unreachable), not a timeout. A UDP
/// sender in the namespace itself sees the reject's drop first: its send
/// fails with EPERM (PermissionError) at once.
pub(crate) fn assert_refused_fast(v: &serde_json::Value, what: &str) {
    let err = v["err"].as_str().unwrap_or("");
    assert!(matches!(err, "ConnectionRefusedError" | "PermissionError"), "{what} should be refused: {v}");
    let secs = v["secs"].as_f64().unwrap_or(99.0);
    assert!(secs < 1.0, "{what} refused only after {secs:.2}s");
}

fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Starts egret's NFLOG reader (`nflog::spawn`, default configuration:
/// group 0, copy range 96, queue threshold 50) inside `ns`; its events
/// arrive on the returned channel.
fn nflog_events_in(ns: &str) -> (egret::nflog::Reader, mpsc::Receiver<egret::events::Event>) {
    let cfg = egret::config::Config::from_env(&|_| None).expect("default config");
    let (emitter, rx) = egret::events::Emitter::channel(1024, "test-host");
    let reader = within(ns, move || egret::nflog::spawn(&cfg, emitter)).expect("bind nflog group 0");
    (reader, rx)
}

fn basic_policy(p: &Pair) -> String {
    format!("allowlist:\n  ips: [\"{}\", \"{}\"]\n  domains: [\"example.com\"]\n", p.v4(2), p.v6(2))
}

#[test]
fn golden_text_equals_kernel_ruleset() {
    let p = Pair::new();
    let cases = [
        ("basic", basic_policy(&p)),
        ("empty", "allowlist:\n  ips: []\n".to_owned()),
        ("v6-only", "allowlist:\n  ips: [\"2001:db8::/32\", \"fd00:200::/48\", \"::1\"]\n".to_owned()),
        ("whole-space", "allowlist:\n  ips: [\"0.0.0.0/0\", \"::/0\"]\n".to_owned()),
        (
            "default-allow",
            "default_action: allow\nallowlist:\n  ips: [\"203.0.113.7\"]\ndenylist:\n  ips: [\"203.0.113.0/24\", \"2001:db8:dead::/48\", \"tcp/198.51.100.5:25\", \"udp/[2001:db8::5]:53\"]\n  domains: [\"*.example.com\"]\n".to_owned(),
        ),
        (
            "deny-both",
            "default_action: deny\nallowlist:\n  ips: [\"10.0.0.0/8\"]\n  domains: [\"tcp/db.example.com:5432\", \"*.example.com\"]\ndenylist:\n  ips: [\"10.1.0.0/16\"]\n  domains: [\"evil.example.com\"]\n".to_owned(),
        ),
    ];
    for (name, yaml) in cases {
        let pol = policy_file(&format!("nft-golden-{name}"), &yaml);
        for (mode, strict, dns) in [
            ("https", "false", "false"),
            ("https", "false", "true"),
            ("dns", "false", "false"),
            ("dns", "true", "false"),
        ] {
            let env = [
                ("BYPASS_MARK", MARK),
                ("FILTER_MODE", mode),
                ("DNS_STRICT", strict),
                ("DNS_IN_HTTPS_MODE", dns),
                ("DNS_UPSTREAMS", "10.9.9.9:53"),
            ];
            let want = run_ok(egret_in(&p.work, &pol, &env, &["run", "--print-rules"]));
            run_ok(egret_in(&p.work, &pol, &env, &["init"]));
            let got = nft_list(&p.work);
            assert_eq!(
                normalize(&got),
                normalize(&want),
                "{name}/{mode}/dns-in-https={dns}:\n--- kernel ---\n{got}\n--- egret ---\n{want}"
            );
        }
    }
}

#[test]
fn ten_thousand_cidrs_apply_in_one_batch() {
    let p = Pair::new();
    let mut yaml = String::from("allowlist:\n  ips:\n");
    for i in 0..10_000u32 {
        // 10,000 disjoint /30s (gaps keep them from merging).
        let a = std::net::Ipv4Addr::from(0x0b00_0000 + i * 8);
        yaml.push_str(&format!("    - \"{a}/30\"\n"));
    }
    for i in 0..100u32 {
        yaml.push_str(&format!("    - \"2001:db8:{i:x}::/48\"\n"));
    }
    let pol = policy_file("nft-10k", &yaml);
    let env = [("BYPASS_MARK", MARK)];
    let want = run_ok(egret_in(&p.work, &pol, &env, &["run", "--print-rules"]));
    let start = Instant::now();
    run_ok(egret_in(&p.work, &pol, &env, &["init"]));
    let took = start.elapsed();
    eprintln!(
        "egret init with 10,000 IPv4 CIDRs + 100 IPv6 CIDRs: {} ms (process start to exit)",
        took.as_millis()
    );
    let got = nft_list(&p.work);
    assert_eq!(normalize(&got), normalize(&want));
    assert_eq!(got.matches("/30").count(), 10_000, "every CIDR is in the kernel's set");
}

#[test]
fn allowed_passes_blocked_is_refused_fast_and_logged() {
    let p = Pair::new();
    let addrs = [p.v4(2), p.v4(3), p.v6(2), p.v6(3)].join(",");
    let _servers = Pair::spawn_ready(&p.up, py(), &[&data("servers.py"), "7000", "7001,443", &addrs]);
    let pol = policy_file("nft-traffic", &basic_policy(&p));
    run_ok(egret_in(&p.work, &pol, &[], &["init"]));
    let (reader, events) = nflog_events_in(&p.work);

    for (ok, blocked) in [(p.v4(2), p.v4(3)), (p.v6(2), p.v6(3))] {
        assert_reaches(&client(&p.work, &ok, 7000, "tcp", None), &format!("allowed tcp {ok}"));
        assert_reaches(&client(&p.work, &ok, 7001, "udp", None), &format!("allowed udp {ok}"));
        assert_reaches(&client(&p.work, &ok, 443, "udp", None), &format!("allowed udp 443 {ok}"));
        assert_refused_fast(&client(&p.work, &blocked, 7000, "tcp", None), &format!("blocked tcp {blocked}"));
        assert_refused_fast(
            &client(&p.work, &blocked, 443, "udp", None),
            &format!("blocked udp 443 {blocked}"),
        );
        let ev = wait_for(Duration::from_secs(30), || {
            events.try_iter().find(|e| {
                e.destination_ip.as_deref() == Some(blocked.as_str()) && e.destination_port == Some(7000)
            })
        })
        .unwrap_or_else(|| panic!("no nflog.event for {}", host_port(&blocked, 7000)));
        let v: serde_json::Value = serde_json::from_str(&ev.to_json()).expect("event json");
        let src = if blocked.contains(':') { p.v6(1) } else { p.v4(1) };
        let sport = v["source_port"].as_u64().expect("source_port") as u16;
        assert_eq!(v["msg"], "nflog.event");
        assert_eq!(v["action"], "BLOCKED");
        assert_eq!(v["component"], "nflog");
        assert_eq!(v["hostname"], "test-host");
        assert_eq!(v["protocol"], "TCP");
        assert_eq!(v["source_ip"], src.as_str());
        assert_eq!(v["dst"], host_port(&blocked, 7000).as_str());
        let flow = egret::events::flow_id(src.parse().unwrap(), sport, blocked.parse().unwrap(), 7000, "TCP");
        assert_eq!(v["flow_id"], flow.as_str());
    }
    reader.stop();
}

#[test]
fn web_ports_of_blocked_addresses_land_on_the_redirect_port() {
    let p = Pair::new();
    let _servers = Pair::spawn_ready(&p.up, py(), &[&data("servers.py"), "80,443", ""]);
    let pol = policy_file("nft-redirect", &basic_policy(&p));
    run_ok(egret_in(&p.work, &pol, &[], &["init"]));
    // A stand-in for egret's proxies, with the listen mark the ruleset
    // delivers to.
    let mark = listen_mark(&p.work);
    let _proxy = Pair::spawn_ready(&p.work, py(), &[&data("redirect_listener.py"), "8080,8443", &mark]);
    for host in [p.v4(3), p.v6(3)] {
        for port in [80, 443] {
            let v = client(&p.work, &host, port, "tcp", None);
            let want = format!("orig:{host}:{port}");
            assert_eq!(v["ok"], want.as_str(), "{}: {v}", host_port(&host, port));
        }
    }
    // An allowed address is not redirected: the real server answers.
    assert_reaches(&client(&p.work, &p.v4(2), 80, "tcp", None), "allowed :80 goes upstream");
    assert_reaches(&client(&p.work, &p.v6(2), 443, "tcp", None), "allowed :443 goes upstream");
}

#[test]
fn flows_from_before_the_rules_are_cut_inbound_still_answered() {
    let p = Pair::new();
    let _up = Pair::spawn_ready(&p.up, py(), &[&data("servers.py"), "7000", ""]);
    let _work_server = Pair::spawn_ready(&p.work, py(), &[&data("servers.py"), "7100", ""]);
    let mut old_allowed = Pair::spawn_ready(&p.work, py(), &[&data("session.py"), &p.v4(2), "7000"]);
    let mut old_blocked = Pair::spawn_ready(&p.work, py(), &[&data("session.py"), &p.v4(3), "7000"]);
    let mut old_blocked6 = Pair::spawn_ready(&p.work, py(), &[&data("session.py"), &p.v6(3), "7000"]);

    let pol = policy_file("nft-conntrack", &basic_policy(&p));
    run_ok(egret_in(&p.work, &pol, &[], &["init"]));

    old_allowed.send_line("b");
    assert_eq!(old_allowed.line(Duration::from_secs(15)).as_deref(), Some(r#"{"ok": "echo:b"}"#));
    for (s, what) in [(&mut old_blocked, "v4"), (&mut old_blocked6, "v6")] {
        s.send_line("b");
        let got = s.line(Duration::from_secs(15)).unwrap_or_default();
        assert!(!got.contains("echo:b"), "{what} flow opened before egret kept flowing: {got}");
    }

    // A client upstream connecting in to a workload server gets answers.
    for host in [p.v4(1), p.v6(1)] {
        let v = client(&p.up, &host, 7100, "tcp", None);
        assert_reaches(&v, &format!("inbound to {}", host_port(&host, 7100)));
    }
}

#[test]
fn rules_outlive_the_process_reapply_is_identical_cleanup_removes() {
    let p = Pair::new();
    let _servers = Pair::spawn_ready(&p.up, py(), &[&data("servers.py"), "7000", ""]);
    let pol = policy_file("nft-lifecycle", &basic_policy(&p));
    let env = [("BYPASS_MARK", MARK)];
    run_ok(egret_in(&p.work, &pol, &env, &["init"]));
    let first = nft_list(&p.work);
    // egret has exited: the rules stay (fail closed).
    assert_refused_fast(&client(&p.work, &p.v4(3), 7000, "tcp", None), "after egret exited");

    run_ok(egret_in(&p.work, &pol, &env, &["init"]));
    let second = nft_list(&p.work);
    assert_eq!(normalize(&first), normalize(&second), "re-apply changed the ruleset");
    let mut tables = Pair::exec(&p.work, "nft");
    tables.args(["list", "tables"]);
    assert_eq!(run_ok(tables).trim(), "table inet egret\ntable arp egret\ntable netdev egret", "one of each");

    let (code, _, err) = util::run(egret_in(&p.work, &pol, &env, &["cleanup"]));
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("removed table inet egret"), "{err}");
    assert_eq!(nft_list(&p.work).trim(), "");
    assert_reaches(&client(&p.work, &p.v4(3), 7000, "tcp", None), "after cleanup");
    let (code, _, err) = util::run(egret_in(&p.work, &pol, &env, &["cleanup"]));
    assert_eq!(code, 0, "second cleanup: {err}");
    assert!(err.contains("no table"), "{err}");
}

#[test]
fn random_marks_differ_per_start() {
    let p = Pair::new();
    let pol = policy_file("nft-mark", "allowlist:\n  ips: []\n");
    let mark_of = |text: &str| {
        text.lines().find_map(|l| {
            l.trim().strip_prefix("meta mark ").map(|m| m.split(' ').next().unwrap_or("").to_owned())
        })
    };
    run_ok(egret_in(&p.work, &pol, &[], &["init"]));
    let a = mark_of(&nft_list(&p.work)).expect("a mark rule");
    run_ok(egret_in(&p.work, &pol, &[], &["init"]));
    let b = mark_of(&nft_list(&p.work)).expect("a mark rule");
    assert_ne!(a, b, "two starts chose the same mark");
    assert_ne!(a, "0x00000001");
}

#[test]
fn without_net_admin_a_clear_error_and_no_hang() {
    let p = Pair::new();
    let pol = policy_file("nft-nocap", "allowlist:\n  ips: [\"10.0.0.0/8\"]\n");
    for sub in ["init", "cleanup"] {
        let mut c = Pair::exec(&p.work, "setpriv");
        c.args(["--inh-caps=-all", "--bounding-set=-net_admin", env!("CARGO_BIN_EXE_egret"), sub]);
        c.env_clear().env("POLICY_PATH", &pol).env("LOG_LEVEL", "error");
        let start = Instant::now();
        let (code, _, err) = util::run(c);
        assert!(start.elapsed() < Duration::from_secs(30), "{sub} took {:?}", start.elapsed());
        assert_eq!(code, 1, "{sub}: {err}");
        assert!(err.contains("needs CAP_NET_ADMIN"), "{sub}: {err}");
    }
    assert_eq!(nft_list(&p.work).trim(), "", "nothing was installed");
}

#[test]
fn a_forged_mark_from_a_workload_with_net_raw_gets_nowhere() {
    let p = Pair::new();
    let _servers = Pair::spawn_ready(&p.up, py(), &[&data("servers.py"), "7000", ""]);
    let pol = policy_file("nft-forge", &basic_policy(&p));
    run_ok(egret_in(&p.work, &pol, &[], &["init"]));
    for mark in [0x1u32, 0x2a2a2a2a, 0x7fff_ffff] {
        // A workload process: no NET_ADMIN, but NET_RAW (containers get it
        // by default), which is enough to set SO_MARK.
        let mut c = Pair::exec(&p.work, "setpriv");
        c.args(["--bounding-set=-net_admin", py(), &data("client.py"), &p.v4(3), "7000", "tcp", "x"]);
        c.arg(format!("{mark:#x}"));
        let out = run_ok(c);
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("client json");
        assert_refused_fast(&v, &format!("mark {mark:#x}"));
    }
}

#[test]
fn with_cgroup_v2_even_egrets_own_mark_is_useless_to_a_workload() {
    // This machine has no cgroup2 mounted (cgroup v1 hybrid); the helper
    // mounts one privately so egret gets its own cgroup and the rules match
    // `socket cgroupv2` as well as the mark.
    let p = Pair::new();
    let _servers = Pair::spawn_ready(&p.up, py(), &[&data("servers.py"), "7000", ""]);
    let pol = policy_file("nft-cgroup", &basic_policy(&p));
    let mut c = Command::new("unshare");
    let cg_name = format!("egret-it-{}-{}", std::process::id(), p.n);
    c.args(["-m", &data("cgroup_mark.sh"), &p.work, env!("CARGO_BIN_EXE_egret")]);
    c.arg(&pol).args([MARK, &p.v4(3), &data("client.py"), &cg_name]);
    let out = run_ok(c);
    let outcome = |prefix: &str| -> serde_json::Value {
        let line =
            out.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("{prefix}: {out}"));
        serde_json::from_str(line.trim()).expect("client json")
    };
    let mut rules = Pair::exec(&p.work, "nft");
    rules.args(["list", "chain", "inet", "egret", "filter_out"]);
    let rules = run_ok(rules);
    assert!(rules.contains("socket cgroupv2 level 1"), "no cgroup match installed:\n{rules}");
    assert_reaches(&outcome("inside "), "egret's mark from egret's cgroup");
    assert_refused_fast(&outcome("outside "), "egret's mark from another cgroup");
}

#[test]
fn strict_dns_learned_addresses_expire_and_reload_revokes_their_flows() {
    // Timing-free: the kernel's timeout is checked as recorded ("timeout
    // 5m"), and expiry is played by deleting the element, which is what
    // expiry does to the set lookup.
    let p = Pair::new();
    let _servers = Pair::spawn_ready(&p.up, py(), &[&data("servers.py"), "7000", ""]);
    let pol = policy_file("nft-strict", &basic_policy(&p));
    let strict = |mark: &'static str| [("FILTER_MODE", "dns"), ("DNS_STRICT", "true"), ("BYPASS_MARK", mark)];
    run_ok(egret_in(&p.work, &pol, &strict("0x1111"), &["init"]));
    let nft = |args: &[&str]| {
        let mut c = Pair::exec(&p.work, "nft");
        c.args(args);
        run_ok(c)
    };
    for learned in [p.v4(3), p.v6(3)] {
        let (set, what) = if learned.contains(':') { ("learned6", "v6") } else { ("learned4", "v4") };
        assert_refused_fast(
            &client(&p.work, &learned, 7000, "tcp", None),
            &format!("{what} not yet learned"),
        );

        let ip: std::net::IpAddr = learned.parse().unwrap();
        within(&p.work, move || egret::nft::add_learned(&[(ip, Duration::from_secs(300))]))
            .expect("add learned address");
        let listed = nft(&["list", "set", "inet", "egret", set]);
        assert!(listed.contains(&format!("{learned} timeout 5m")), "{listed}");
        assert_reaches(&client(&p.work, &learned, 7000, "tcp", None), &format!("{what} learned address"));
        let mut flow = Pair::spawn_ready(&p.work, py(), &[&data("session.py"), &learned, "7000"]);

        nft(&["delete", "element", "inet", "egret", set, &format!("{{ {learned} }}")]);
        assert_refused_fast(
            &client(&p.work, &learned, 7000, "tcp", None),
            &format!("{what} new flow after expiry"),
        );
        flow.send_line("b");
        assert_eq!(
            flow.line(Duration::from_secs(10)).as_deref(),
            Some(r#"{"ok": "echo:b"}"#),
            "{what}: a flow stamped with this generation survives the entry's expiry"
        );
        // A reload (new generation) revokes it.
        let mark = if learned.contains(':') { "0x3333" } else { "0x2222" };
        run_ok(egret_in(&p.work, &pol, &strict(mark), &["init"]));
        flow.send_line("c");
        let got = flow.line(Duration::from_secs(10)).unwrap_or_default();
        assert!(!got.contains("echo:c"), "{what}: flow of the old generation kept flowing: {got}");
    }
}

/// The listen mark of the installed ruleset (the test is root).
fn listen_mark(ns: &str) -> String {
    let text = nft_list(ns);
    text.lines()
        .find_map(|l| l.trim().strip_prefix("tcp dport 8080 socket mark != "))
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no listen-mark rule in\n{text}"))
        .to_owned()
}

#[test]
fn listener_ports_take_connections_from_this_host_only_into_egrets_own_sockets() {
    let p = Pair::new();
    let pol = policy_file("nft-input", &basic_policy(&p));
    run_ok(egret_in(&p.work, &pol, &[], &["init"]));
    // A listener bound to every address, as a misconfigured proxy might
    // be, carrying egret's listen mark: local clients reach it, another
    // host does not.
    let mark = listen_mark(&p.work);
    let listener = Pair::spawn_ready(&p.work, py(), &[&data("servers.py"), "8080", "", "", "", &mark]);
    for host in ["127.0.0.1".to_owned(), "::1".to_owned(), p.v4(1)] {
        assert_reaches(
            &client(&p.work, &host, 8080, "tcp", None),
            &format!("local {}", host_port(&host, 8080)),
        );
    }
    for host in [p.v4(1), p.v6(1)] {
        let v = client(&p.up, &host, 8080, "tcp", None);
        assert!(
            v["ok"].is_null(),
            "another host reached egret's listener port {}: {v}",
            host_port(&host, 8080)
        );
    }
    drop(listener);
    // A listener without the mark (a workload that bound the port first)
    // gets nothing, from anywhere: the client is reset at once.
    let _squatter = Pair::spawn_ready(&p.work, py(), &[&data("servers.py"), "8080", ""]);
    for host in ["127.0.0.1".to_owned(), "::1".to_owned(), p.v4(1)] {
        assert_refused_fast(
            &client(&p.work, &host, 8080, "tcp", None),
            &format!("a squatter on {}", host_port(&host, 8080)),
        );
    }
}

/// `sent blocked` of `count` UDP datagrams to 127.0.0.1:53 from one socket
/// of `uid` in `ns`, as fast as it sends (a refused send is EPERM).
fn dns_burst(ns: &str, uid: u32, count: u32) -> (u32, u32) {
    let script = r#"
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
q = bytes.fromhex("000101000001000000000000000000010001")
ok = bad = 0
for i in range(int(sys.argv[1])):
    try:
        s.sendto(q, ("127.0.0.1", 53))
        ok += 1
    except PermissionError:
        bad += 1
print(ok, bad)
"#;
    let mut c = Pair::exec(ns, "setpriv");
    c.args([format!("--reuid={uid}"), format!("--regid={uid}"), "--clear-groups".into()]);
    c.args([py(), "-c", script, &count.to_string()]);
    let out = run_ok(c);
    let mut n = out.split_whitespace().map(|x| x.parse::<u32>().expect("count"));
    (n.next().expect("sent"), n.next().expect("blocked"))
}

#[test]
fn the_kernel_limits_each_uids_dns_before_egrets_socket() {
    // Where egret runs a resolver, each socket owner's port-53 datagrams
    // pass a meter of its own (DNS_FLOOD_FLOOR a second, burst twice
    // that) before NAT: past it, sendto fails with EPERM in the sender.
    // Another uid has a whole meter of its own, and the burst is the whole
    // burst (a lookup in a limited set would spend it twice).
    let p = Pair::new();
    let pol = policy_file("nft-dns-limit", "allowlist:\n  domains: [\"allowed.test\"]\n");
    let env = [("BYPASS_MARK", MARK), ("FILTER_MODE", "dns"), ("DNS_HARDENING", "false")];
    run_ok(egret_in(&p.work, &pol, &env, &["init"]));
    let (rate, burst) = egret::nft::ruleset::dns_flood_limit(None);
    assert_eq!((rate, burst), (1000, 2000));
    let total = 8000;
    for uid in [1000, 1001] {
        let start = Instant::now();
        let (sent, blocked) = dns_burst(&p.work, uid, total);
        let took = start.elapsed();
        eprintln!("uid {uid}: {sent} sent, {blocked} refused by the kernel in {took:?}");
        assert_eq!(sent + blocked, total);
        assert!(sent >= burst, "uid {uid}: only {sent} of a {burst} burst got through");
        // The burst plus the rate for as long as the sending took (and a
        // margin for the process starting).
        let most = u64::from(burst) + rate * (took.as_millis() as u64 + 500) / 1000;
        assert!(u64::from(sent) <= most, "uid {uid}: {sent} sent in {took:?}, over the limit of {most}");
        assert!(blocked > 0, "uid {uid}: nothing refused in {took:?}");
    }
    let mut c = Pair::exec(&p.work, "nft");
    c.args(["list", "set", "inet", "egret", "dns_owners"]);
    let set = run_ok(c);
    // One element each (nft prints the uids of a set made over netlink
    // byte-swapped: 1000 is 3892510720).
    assert_eq!(set.matches("limit rate over").count(), 2, "{set}");
}
