//! The policy language against the live ruleset and the proxies: tables
//! of policy × destination × expected verdict, each row tried by a real
//! client in a workload namespace against `egret run`, plus the modes
//! (audit) that change what a verdict does.
//!
//! Needs root (CI runs as root); fails loudly without it.

use std::net::SocketAddr;
use std::time::Duration;

use crate::dnsauth::Zone;
use crate::escape::{get, hello, http, tcp, udp, Outcome};
use crate::netns::{wait_for, Guard, Pair};
use crate::run::{policy_file, world, world_with, Daemon, World};
use crate::util;

/// What one row sends.
#[derive(Debug, Clone)]
enum Probe {
    /// `GET /` with this Host, to this address, port 80.
    Http { host: &'static str, to: SocketAddr },
    /// A ClientHello with this SNI (`None`: none) and a newline, to port
    /// 443 of an echo server.
    Tls { sni: Option<&'static str>, to: SocketAddr },
    /// A line to a TCP echo server.
    Tcp { to: SocketAddr },
    /// A datagram to a UDP echo server.
    Udp { to: SocketAddr },
    /// `dig` for an A record through the namespace's resolver.
    Dig { name: &'static str, server: String },
    /// One ICMP echo (ping) to this address.
    Ping { to: std::net::IpAddr },
}

/// How a row must end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// The upstream answered.
    Pass,
    /// Refused: 403, reset, ICMP, NXDOMAIN.
    Block,
}

/// The event the row must leave: (msg, action, reason); `None`: not
/// checked (an allowed kernel-path packet leaves none).
type WantEvent = Option<(&'static str, &'static str, &'static str)>;

struct Row {
    what: &'static str,
    probe: Probe,
    want: Want,
    event: WantEvent,
}

fn served(o: &Outcome) -> bool {
    let t = o.text();
    t.contains("hello from") || t.contains("echo:")
}

/// Runs one probe from the workload namespace: whether upstream answered.
fn attempt(ns: &str, probe: &Probe) -> bool {
    const T: Duration = Duration::from_secs(3);
    match probe {
        Probe::Http { host, to } => served(&http(ns, *to, &get(host))),
        Probe::Tls { sni, to } => {
            let mut h = hello(sni.map(str::as_bytes), 0);
            h.push(b'\n');
            served(&tcp(ns, *to, vec![h], Duration::ZERO, T))
        }
        Probe::Tcp { to } => served(&tcp(ns, *to, vec![b"ping\n".to_vec()], Duration::ZERO, T)),
        Probe::Udp { to } => matches!(udp(ns, *to, b"ping").0, Ok(r) if r.starts_with(b"echo:")),
        Probe::Dig { name, server } => {
            let mut c = Pair::exec(ns, "dig");
            c.args(["+tries=1", "+time=3", "+short", &format!("@{server}"), name, "A"]);
            let (_, out, _) = util::run(c);
            !out.trim().is_empty()
        }
        Probe::Ping { to } => {
            let mut c = Pair::exec(ns, "ping");
            c.args(["-n", "-c", "1", "-W", "2", &to.to_string()]);
            util::run(c).0 == 0
        }
    }
}

/// Waits (bounded) for the event a row names.
fn expect_event(d: &Daemon, row: &Row) {
    let Some((msg, action, reason)) = row.event else { return };
    let dst = match &row.probe {
        Probe::Http { to, .. } | Probe::Tls { to, .. } | Probe::Tcp { to } | Probe::Udp { to } => {
            Some(to.ip().to_string())
        }
        Probe::Ping { to } => Some(to.to_string()),
        Probe::Dig { .. } => None,
    };
    let found = wait_for(Duration::from_secs(10), || {
        d.events.try_iter().find(|e| {
            e["msg"] == msg
                && e["action"] == action
                && e["reason"] == reason
                && dst.as_ref().map_or(true, |ip| e["destination_ip"] == ip.as_str())
        })
    });
    assert!(found.is_some(), "{}: no {msg} {action} event with reason {reason} to {dst:?}", row.what);
}

/// Every row: the verdict, then its event.
fn run_rows(d: &Daemon, ns: &str, rows: &[Row]) {
    for row in rows {
        let passed = attempt(ns, &row.probe);
        let want = row.want == Want::Pass;
        assert_eq!(passed, want, "{}: {:?} expected {:?}", row.what, row.probe, row.want);
        expect_event(d, row);
    }
}

/// The upstream of these tables: [`world`] (HTTP on .2/.3 port 80, DNS
/// on .2 naming allowed.test and blocked.test), plus TCP echo on 443 and
/// 8000-8001 and UDP echo on 7001 and 8000, on .2, .3, ::2 and ::3.
struct Upstream {
    w: World,
    _echo: Guard,
}

fn upstream() -> Upstream {
    upstream_in(world())
}

/// [`upstream`] over `w` (a world with a zone of its own).
fn upstream_in(w: World) -> Upstream {
    let addrs = [w.p.v4(2), w.p.v4(3), w.p.v6(2), w.p.v6(3)].join(",");
    let echo = Pair::spawn_ready(
        &w.p.up,
        crate::nft::py(),
        &[&crate::nft::data("servers.py"), "443,8000,8001", "7001,8000", &addrs, &addrs],
    );
    Upstream { w, _echo: echo }
}

impl Upstream {
    fn at(&self, host: u8, port: u16) -> SocketAddr {
        SocketAddr::new(self.w.p.v4(host).parse().unwrap(), port)
    }

    fn at6(&self, host: u8, port: u16) -> SocketAddr {
        SocketAddr::new(self.w.p.v6(host).parse().unwrap(), port)
    }

    fn start(&self, tag: &str, yaml: &str, env: &[(&str, &str)]) -> Daemon {
        let pol = policy_file(&format!("policy-table-{tag}"), yaml);
        self.start_with(&pol, env)
    }

    fn start_with(&self, pol: &std::path::Path, env: &[(&str, &str)]) -> Daemon {
        let dns = format!("{}:53", self.w.p.v4(2));
        let mut all = vec![("DNS_UPSTREAMS", dns.as_str())];
        all.extend_from_slice(env);
        Daemon::start(&self.w.p.work, pol, &all)
    }

    /// The kinds of traffic a workload sends, each refused by a policy
    /// that allows nothing: HTTP by name and by spoofed Host, TLS with and
    /// without SNI, TCP and UDP to other ports over v4 and v6.
    fn everything(&self, refused: Want, action: &'static str) -> Vec<Row> {
        let ev = |msg, reason| Some((msg, action, reason));
        let (http, https) =
            if action == "AUDIT" { ("http.audit", "https.audit") } else { ("http.blocked", "https.blocked") };
        vec![
            Row {
                what: "HTTP to a name outside the policy",
                probe: Probe::Http { host: "blocked.test", to: self.at(2, 80) },
                want: refused,
                event: ev(http, "not-allowlisted"),
            },
            Row {
                what: "HTTP with an IP literal as Host",
                probe: Probe::Http { host: "10.9.9.9", to: self.at(3, 80) },
                want: refused,
                event: ev(http, "not-allowlisted"),
            },
            Row {
                what: "TLS naming a name outside the policy",
                probe: Probe::Tls { sni: Some("blocked.test"), to: self.at(2, 443) },
                want: refused,
                event: ev(https, "not-allowlisted"),
            },
            Row {
                what: "TLS without SNI",
                probe: Probe::Tls { sni: None, to: self.at6(3, 443) },
                want: refused,
                event: ev(https, "no-sni"),
            },
            Row {
                what: "TCP to another port, v4",
                probe: Probe::Tcp { to: self.at(3, 8000) },
                want: refused,
                event: ev("nflog.event", "not-allowlisted"),
            },
            Row {
                what: "TCP to another port, v6",
                probe: Probe::Tcp { to: self.at6(2, 8001) },
                want: refused,
                event: ev("nflog.event", "not-allowlisted"),
            },
            Row {
                what: "UDP, v4",
                probe: Probe::Udp { to: self.at(2, 7001) },
                want: refused,
                event: ev("nflog.event", "not-allowlisted"),
            },
            Row {
                what: "UDP, v6",
                probe: Probe::Udp { to: self.at6(3, 7001) },
                want: refused,
                event: ev("nflog.event", "not-allowlisted"),
            },
        ]
    }
}

const NOTHING: &str = "allowlist: {}\n";

/// Audit (`ENFORCE=audit`): with a policy that allows nothing, every kind
/// of traffic works and each would-be block is an AUDIT event with its
/// reason. The same traffic is blocked as soon as audit is off: after a
/// restart without `ENFORCE`, and at the reload that drops the file's
/// `enforce: audit`.
#[test]
fn audit_mode_passes_everything_and_reports_each_would_be_block() {
    let u = upstream();
    let ns = u.w.p.work.clone();

    let dash = [
        ("ENFORCE", "audit"),
        ("DASHBOARD_LISTEN", "127.0.0.1:18081"),
        ("DASHBOARD_API_KEY", "audit-key"),
        ("DASHBOARD_START_DELAY", "0s"),
    ];
    let d = u.start("audit-env", NOTHING, &dash);
    d.wait_logged("AUDIT MODE", Duration::from_secs(5));
    run_rows(&d, &ns, &u.everything(Want::Pass, "AUDIT"));
    // The dashboard stores them as AUDIT.
    let stored = wait_for(Duration::from_secs(10), || {
        let (code, body) = crate::run::curl(
            &ns,
            &["-H", "X-Api-Key: audit-key", "http://127.0.0.1:18081/api/v1/logs?q=blocked.test"],
        );
        (code == "200" && body.contains("\"action\":\"AUDIT\"") && body.contains("\"http.audit\""))
            .then_some(body)
    });
    assert!(stored.is_some(), "the dashboard never showed an AUDIT entry");
    drop(d);

    // The policy file says audit: the same, until the line goes.
    let pol = policy_file("policy-table-audit-file", &format!("enforce: audit\n{NOTHING}"));
    let d = u.start_with(&pol, &[]);
    run_rows(&d, &ns, &u.everything(Want::Pass, "AUDIT")[..1]);
    std::fs::write(&pol, NOTHING).expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    run_rows(&d, &ns, &u.everything(Want::Block, "BLOCKED"));
    drop(d);

    // No ENFORCE at all, the same file: enforcement.
    let d = u.start("audit-off", NOTHING, &[]);
    run_rows(&d, &ns, &u.everything(Want::Block, "BLOCKED"));
}

/// Audit in DNS mode (strict): a name outside the policy resolves, its
/// event is `dns.audit`; a direct connection to an address no answer
/// gave passes with an AUDIT `nflog.event`. Without audit both are
/// refused.
#[test]
fn audit_mode_in_strict_dns_mode() {
    let u = upstream();
    let ns = u.w.p.work.clone();
    let server = u.w.p.v4(2);
    let rows = |want: Want, action: &'static str| {
        let dns = if action == "AUDIT" { "dns.audit" } else { "dns.blocked" };
        vec![
            Row {
                what: "a name outside the policy",
                probe: Probe::Dig { name: "blocked.test", server: server.clone() },
                want,
                event: Some((dns, action, "not-allowlisted")),
            },
            Row {
                what: "TCP to an address no answer gave",
                probe: Probe::Tcp { to: u.at(3, 8000) },
                want,
                event: Some(("nflog.event", action, "not-allowlisted")),
            },
        ]
    };
    let env = [("FILTER_MODE", "dns-strict")];
    let d = u.start("audit-dns", NOTHING, &[env[0], ("ENFORCE", "audit")]);
    run_rows(&d, &ns, &rows(Want::Pass, "AUDIT"));
    drop(d);
    let d = u.start("enforce-dns", NOTHING, &env);
    run_rows(&d, &ns, &rows(Want::Block, "BLOCKED"));
}

/// Address entries with a protocol and ports, as a table of policies ×
/// destinations × verdicts against the live ruleset: v4 and v6 entries, a
/// port range (both ends and past it), TCP against UDP on the same port,
/// an entry without a protocol (both), and a bare address beside port
/// entries still open on every port and protocol. A port entry on 443 is
/// a direct path (a name outside the policy passes, no proxy); the same
/// address on 80 still goes to the proxy, which refuses the name.
#[test]
fn port_and_protocol_entries() {
    let u = upstream();
    let n = u.w.p.n;
    let blocked = |what, probe| Row {
        what,
        probe,
        want: Want::Block,
        event: Some(("nflog.event", "BLOCKED", "not-allowlisted")),
    };
    let pass = |what, probe| Row { what, probe, want: Want::Pass, event: None };
    let ports = format!(
        "allowlist:\n  ips:\n    - \"tcp/10.200.{n}.2:8000\"\n    - \"udp/10.200.{n}.3:7001\"\n    - \"[fd00:200:{n}::2]:8000-8001\"\n    - \"tcp/10.200.{n}.0/24:443\"\n"
    );
    let bare = format!(
        "allowlist:\n  ips:\n    - \"10.200.{n}.2\"\n    - \"fd00:200:{n}::3\"\n    - \"tcp/10.200.{n}.3:8000\"\n"
    );
    let table: Vec<(&str, String, Vec<Row>)> = vec![
        (
            "ports",
            ports,
            vec![
                pass("tcp v4 on its port", Probe::Tcp { to: u.at(2, 8000) }),
                blocked("the same port over udp", Probe::Udp { to: u.at(2, 8000) }),
                blocked("tcp v4 on another port", Probe::Tcp { to: u.at(2, 8001) }),
                blocked("tcp v4, another address", Probe::Tcp { to: u.at(3, 8000) }),
                pass("udp v4 on its port", Probe::Udp { to: u.at(3, 7001) }),
                blocked("udp v4, the address of a tcp entry", Probe::Udp { to: u.at(2, 7001) }),
                pass("v6 range, first port", Probe::Tcp { to: u.at6(2, 8000) }),
                pass("v6 range, last port", Probe::Tcp { to: u.at6(2, 8001) }),
                pass("v6 range without a protocol: udp too", Probe::Udp { to: u.at6(2, 8000) }),
                blocked("v6 past the range (udp 7001)", Probe::Udp { to: u.at6(2, 7001) }),
                blocked("v6, another address", Probe::Tcp { to: u.at6(3, 8000) }),
                pass(
                    "tcp/…/24:443 is direct: a name outside the policy passes, no proxy",
                    Probe::Tls { sni: Some("blocked.test"), to: u.at(3, 443) },
                ),
                Row {
                    what: "the /24 on 80 is not in the entry: the proxy refuses the name",
                    probe: Probe::Http { host: "blocked.test", to: u.at(3, 80) },
                    want: Want::Block,
                    event: Some(("http.blocked", "BLOCKED", "not-allowlisted")),
                },
                Row {
                    what: "443 on v6 is not in the entry: the proxy refuses the name",
                    probe: Probe::Tls { sni: Some("blocked.test"), to: u.at6(2, 443) },
                    want: Want::Block,
                    event: Some(("https.blocked", "BLOCKED", "not-allowlisted")),
                },
            ],
        ),
        (
            "bare",
            bare,
            vec![
                pass("bare v4: tcp 8000", Probe::Tcp { to: u.at(2, 8000) }),
                pass("bare v4: tcp 8001", Probe::Tcp { to: u.at(2, 8001) }),
                pass("bare v4: udp 7001", Probe::Udp { to: u.at(2, 7001) }),
                pass("bare v4: udp 8000", Probe::Udp { to: u.at(2, 8000) }),
                pass("bare v4: 443 direct", Probe::Tls { sni: Some("blocked.test"), to: u.at(2, 443) }),
                pass("bare v6: tcp 8001", Probe::Tcp { to: u.at6(3, 8001) }),
                pass("bare v6: udp 7001", Probe::Udp { to: u.at6(3, 7001) }),
                pass("the port entry beside them", Probe::Tcp { to: u.at(3, 8000) }),
                blocked("the port entry's address on another port", Probe::Tcp { to: u.at(3, 8001) }),
                blocked("the port entry's address over udp", Probe::Udp { to: u.at(3, 8000) }),
            ],
        ),
    ];
    for (tag, yaml, rows) in &table {
        let d = u.start(tag, yaml, &[]);
        run_rows(&d, &u.w.p.work, rows);
        // Port entries are the concatenated sets, one rule per family.
        let mut c = Pair::exec(&u.w.p.work, "nft");
        c.args(["list", "set", "inet", "egret", "allowed_ports4"]);
        let (code, out, err) = util::run(c);
        assert_eq!(code, 0, "{tag}: {err}");
        assert!(out.contains("type ipv4_addr . inet_proto . inet_service"), "{tag}: {out}");
        if *tag == "ports" {
            assert!(out.contains(&format!("10.200.{n}.2 . tcp . 8000")), "{out}");
            let mut c = Pair::exec(&u.w.p.work, "nft");
            c.args(["list", "set", "inet", "egret", "allowed_ports6"]);
            let out = util::run(c).1;
            assert!(out.contains(&format!("fd00:200:{n}::2 . tcp . 8000-8001")), "{out}");
            assert!(out.contains(&format!("fd00:200:{n}::2 . udp . 8000-8001")), "{out}");
        }
    }
}

/// Mid-name `*` and `/regex/` entries decide in every path that asks the
/// policy: the HTTP proxy (Host), the TLS proxy (SNI) and the resolver in
/// DNS mode, each allowing the name the pattern covers and refusing its
/// neighbour in the same zone.
#[test]
fn glob_and_regex_names_in_the_proxies_and_the_resolver() {
    let u = upstream();
    let ns = u.w.p.work.clone();
    let server = u.w.p.v4(2);
    let blocked = |msg| Some((msg, "BLOCKED", "not-allowlisted"));
    for (tag, pattern) in [("glob", "all*d.test"), ("regex", "/allow[a-z]+\\\\.test/")] {
        let yaml = format!("allowlist:\n  domains: [\"{pattern}\"]\n");
        let rows = vec![
            Row {
                what: "HTTP to the name the pattern covers",
                probe: Probe::Http { host: "allowed.test", to: u.at(2, 80) },
                want: Want::Pass,
                event: None,
            },
            Row {
                what: "HTTP to the neighbour",
                probe: Probe::Http { host: "blocked.test", to: u.at(2, 80) },
                want: Want::Block,
                event: blocked("http.blocked"),
            },
            Row {
                what: "TLS naming the covered name",
                probe: Probe::Tls { sni: Some("allowed.test"), to: u.at(2, 443) },
                want: Want::Pass,
                event: None,
            },
            Row {
                what: "TLS naming the neighbour",
                probe: Probe::Tls { sni: Some("blocked.test"), to: u.at(2, 443) },
                want: Want::Block,
                event: blocked("https.blocked"),
            },
        ];
        let d = u.start(&format!("{tag}-https"), &yaml, &[]);
        run_rows(&d, &ns, &rows);
        drop(d);
        let rows = vec![
            Row {
                what: "DNS for the covered name",
                probe: Probe::Dig { name: "allowed.test", server: server.clone() },
                want: Want::Pass,
                event: None,
            },
            Row {
                what: "DNS for the neighbour",
                probe: Probe::Dig { name: "blocked.test", server: server.clone() },
                want: Want::Block,
                event: blocked("dns.blocked"),
            },
        ];
        let d = u.start(&format!("{tag}-dns"), &yaml, &[("FILTER_MODE", "dns")]);
        run_rows(&d, &ns, &rows);
    }
}

/// "Run it in audit mode, then enforce": egret in learning mode (audit,
/// plus the suggestion kept in `LEARNING_OUTPUT`) writes its decision log
/// (`DECISION_LOG_FILE`); `egret learn --from` turns the log into the same
/// policy; egret enforcing it lets exactly that traffic through and
/// refuses the rest.
#[test]
fn a_policy_learned_from_an_audit_log_allows_what_was_done() {
    let u = upstream();
    let ns = u.w.p.work.clone();
    let dir = util::scratch("policy-table-learn");
    let log = dir.join("decisions.json");
    let done = || {
        vec![
            Row {
                what: "HTTP by name",
                probe: Probe::Http { host: "allowed.test", to: u.at(2, 80) },
                want: Want::Pass,
                event: None,
            },
            Row {
                what: "TCP to an address",
                probe: Probe::Tcp { to: u.at(3, 8000) },
                want: Want::Pass,
                event: None,
            },
            Row { what: "UDP, v6", probe: Probe::Udp { to: u.at6(2, 7001) }, want: Want::Pass, event: None },
        ]
    };
    let log_env = log.to_str().expect("utf-8 path").to_owned();
    let live = dir.join("live.yaml");
    let live_env = live.to_str().expect("utf-8 path").to_owned();
    let d = u.start(
        "learn-audit",
        NOTHING,
        &[("LEARNING_MODE", "true"), ("LEARNING_OUTPUT", &live_env), ("DECISION_LOG_FILE", &log_env)],
    );
    run_rows(&d, &ns, &done());
    let written = wait_for(Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&log).unwrap_or_default();
        (t.contains("allowed.test") && t.contains("\"destination_port\":8000") && t.contains("7001"))
            .then_some(t)
    });
    assert!(written.is_some(), "the decision log never held the three decisions");
    // Learning mode writes its file after the decision is logged: wait
    // for it too before the daemon is killed (no stop, no last write).
    let kept_all = wait_for(Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&live).unwrap_or_default();
        (t.contains("allowed.test") && t.contains(":8000") && t.contains(":7001")).then_some(())
    });
    drop(d);
    assert!(kept_all.is_some(), "LEARNING_OUTPUT never held the three decisions");

    let mut c = util::egret();
    c.arg("learn").arg("--from").arg(&log);
    let (code, learned, err) = util::run(c);
    assert_eq!(code, 0, "{err}");
    for want in [
        "- \"allowed.test\"",
        &format!("- \"tcp/{}:8000\"", u.w.p.v4(3)),
        &format!("- \"udp/[{}]:7001\"", u.w.p.v6(2)),
    ] {
        assert!(learned.contains(want), "missing {want:?} in the learned policy:\n{learned}");
    }
    assert!(err.contains("decisions read from"), "{err}");
    // What learning mode kept is the same policy (its header counts differ).
    let body = |t: &str| t[t.find("allowlist:").unwrap_or(0)..].to_owned();
    let kept = std::fs::read_to_string(&live).expect("LEARNING_OUTPUT written");
    assert_eq!(body(&kept), body(&learned), "learning mode and egret learn disagree");
    let pol = dir.join("learned.yaml");
    std::fs::write(&pol, &learned).expect("write the learned policy");

    let d = u.start_with(&pol, &[]);
    run_rows(&d, &ns, &done());
    let blocked = |msg| Some((msg, "BLOCKED", "not-allowlisted"));
    run_rows(
        &d,
        &ns,
        &[
            Row {
                what: "HTTP to a name never used",
                probe: Probe::Http { host: "blocked.test", to: u.at(2, 80) },
                want: Want::Block,
                event: blocked("http.blocked"),
            },
            Row {
                what: "TCP to the learned address on another port",
                probe: Probe::Tcp { to: u.at(3, 8001) },
                want: Want::Block,
                event: blocked("nflog.event"),
            },
            Row {
                what: "UDP to the learned address over v4 (not used)",
                probe: Probe::Udp { to: u.at(2, 7001) },
                want: Want::Block,
                event: blocked("nflog.event"),
            },
        ],
    );
}

/// The zone of the denylist tables: the standard one (allowed.test and
/// blocked.test at .2), plus api.deny.test and x.deny.test at .2 and
/// far.test at .3, so a name refused below would resolve were it not
/// denylisted.
fn deny_world() -> World {
    world_with(|two, three| {
        let mut z = Zone::standard(two, 300);
        for (name, at) in [("api.deny.test", two), ("x.deny.test", two), ("far.test", three)] {
            z.records.push((
                name.to_owned(),
                300,
                hickory_proto::rr::RData::A(hickory_proto::rr::rdata::A(at)),
            ));
        }
        z
    })
}

/// `default_action: allow` with a denylist, whose `*.deny.test` the
/// allowlist re-opens for api.deny.test (allow wins), and whose
/// addresses (.3 and ::3) are closed on every port and protocol.
fn allow_with_denylist(n: u32) -> String {
    format!(
        "default_action: allow\nallowlist:\n  domains: [\"api.deny.test\"]\ndenylist:\n  ips: [\"10.200.{n}.3\", \"fd00:200:{n}::3\"]\n  domains: [\"*.deny.test\", \"blocked.test\"]\n"
    )
}

/// `default_action: allow` + a denylist in HTTPS mode, against the live
/// ruleset: everything passes (other ports, UDP, ICMP, 80/443 by names
/// the denylist does not name) but the denylisted names at the proxies
/// (Host, SNI) and the denylisted addresses on every port and protocol,
/// ICMP included, each with a `denylisted` event; the allowlist
/// re-opens a name inside a denylisted zone. The same lists from
/// `DEFAULT_ACTION` / `DENYLIST_*` replace the file. Audit mode lets the
/// refusals through with AUDIT events that carry `denylisted`.
#[test]
fn default_allow_with_a_denylist_https_mode() {
    let u = upstream_in(deny_world());
    let n = u.w.p.n;
    let ns = u.w.p.work.clone();
    let denied = |what, probe, msg| Row {
        what,
        probe,
        want: Want::Block,
        event: Some((msg, "BLOCKED", "denylisted")),
    };
    let pass = |what, probe| Row { what, probe, want: Want::Pass, event: None };
    let rows = vec![
        pass("HTTP to a name no list names", Probe::Http { host: "allowed.test", to: u.at(2, 80) }),
        denied(
            "HTTP to a denylisted name",
            Probe::Http { host: "blocked.test", to: u.at(2, 80) },
            "http.blocked",
        ),
        denied(
            "TLS naming a name under a denylisted wildcard",
            Probe::Tls { sni: Some("x.deny.test"), to: u.at(2, 443) },
            "https.blocked",
        ),
        pass(
            "TLS naming the allowlist's exception",
            Probe::Tls { sni: Some("api.deny.test"), to: u.at(2, 443) },
        ),
        Row {
            what: "TLS naming an undenied name sent to another address: still a spoof",
            probe: Probe::Tls { sni: Some("allowed.test"), to: u.at6(3, 443) },
            want: Want::Block,
            event: Some(("nflog.event", "BLOCKED", "denylisted")),
        },
        Row {
            what: "TLS without SNI: nothing to judge, refused as with the default deny",
            probe: Probe::Tls { sni: None, to: u.at(2, 443) },
            want: Want::Block,
            event: Some(("https.blocked", "BLOCKED", "no-sni")),
        },
        pass("TCP to another port", Probe::Tcp { to: u.at(2, 8000) }),
        pass("TCP, v6", Probe::Tcp { to: u.at6(2, 8001) }),
        pass("UDP", Probe::Udp { to: u.at(2, 7001) }),
        pass("UDP, v6", Probe::Udp { to: u.at6(2, 7001) }),
        pass("ICMP", Probe::Ping { to: u.w.p.ip4(2) }),
        denied("TCP to a denylisted address", Probe::Tcp { to: u.at(3, 8000) }, "nflog.event"),
        denied("UDP to a denylisted address", Probe::Udp { to: u.at(3, 7001) }, "nflog.event"),
        denied("UDP to a denylisted v6 address", Probe::Udp { to: u.at6(3, 7001) }, "nflog.event"),
        denied("ICMP to a denylisted address", Probe::Ping { to: u.w.p.ip4(3) }, "nflog.event"),
        denied("ICMPv6 to a denylisted address", Probe::Ping { to: u.w.p.ip6(3) }, "nflog.event"),
        denied(
            "HTTP to a denylisted address under a name no list names: never redirected",
            Probe::Http { host: "far.test", to: u.at(3, 80) },
            "nflog.event",
        ),
        denied(
            "TLS to a denylisted address: never redirected",
            Probe::Tls { sni: Some("far.test"), to: u.at(3, 443) },
            "nflog.event",
        ),
    ];
    let d = u.start("allow-deny", &allow_with_denylist(n), &[]);
    run_rows(&d, &ns, &rows);
    // The denylisted address's event names the entry.
    assert!(!attempt(&ns, &Probe::Tcp { to: u.at(3, 8001) }));
    let entry = format!("denylist ip {}/32", u.w.p.v4(3));
    let nf = wait_for(Duration::from_secs(10), || {
        d.events.try_iter().find(|e| {
            e["msg"] == "nflog.event"
                && e["destination_port"] == 8001
                && e["note"].as_str().is_some_and(|n| n.contains(&entry))
        })
    });
    drop(d);
    assert!(nf.is_some(), "no nflog event naming the denylist entry");

    // The environment: DEFAULT_ACTION and DENYLIST_* replace the file.
    let env = [("DEFAULT_ACTION", "allow"), ("DENYLIST_DOMAINS", "blocked.test")];
    let d = u.start("allow-deny-env", NOTHING, &env);
    d.wait_logged("DENYLIST_DOMAINS set: the policy file", Duration::from_secs(5));
    run_rows(
        &d,
        &ns,
        &[
            pass("env: HTTP to a name not denylisted", Probe::Http { host: "allowed.test", to: u.at(2, 80) }),
            denied(
                "env: HTTP to the denylisted name",
                Probe::Http { host: "blocked.test", to: u.at(2, 80) },
                "http.blocked",
            ),
            pass("env: TCP anywhere else", Probe::Tcp { to: u.at(3, 8000) }),
        ],
    );
    drop(d);

    // Audit: the same refusals pass, each an AUDIT event with its reason.
    let d = u.start("allow-deny-audit", &allow_with_denylist(n), &[("ENFORCE", "audit")]);
    let audited =
        |what, probe, msg| Row { what, probe, want: Want::Pass, event: Some((msg, "AUDIT", "denylisted")) };
    run_rows(
        &d,
        &ns,
        &[
            audited(
                "audit: HTTP to a denylisted name",
                Probe::Http { host: "blocked.test", to: u.at(2, 80) },
                "http.audit",
            ),
            audited("audit: TCP to a denylisted address", Probe::Tcp { to: u.at(3, 8000) }, "nflog.event"),
        ],
    );
    drop(d);

    // Learning mode (audit that keeps a suggestion): what was reached,
    // the denylisted name among it, is written down.
    let out = util::scratch("policy-table-allow-deny-learn").join("learned.yaml");
    let out_env = out.to_str().expect("utf-8 path").to_owned();
    let env = [("LEARNING_MODE", "true"), ("LEARNING_OUTPUT", out_env.as_str())];
    let d = u.start("allow-deny-learn", &allow_with_denylist(n), &env);
    run_rows(
        &d,
        &ns,
        &[
            audited(
                "learn: HTTP to a denylisted name",
                Probe::Http { host: "blocked.test", to: u.at(2, 80) },
                "http.audit",
            ),
            pass(
                "learn: HTTP to a name no list names",
                Probe::Http { host: "allowed.test", to: u.at(2, 80) },
            ),
        ],
    );
    let learned = wait_for(Duration::from_secs(10), || {
        let t = std::fs::read_to_string(&out).unwrap_or_default();
        (t.contains("\"blocked.test\"") && t.contains("\"allowed.test\"")).then_some(t)
    });
    assert!(
        learned.is_some(),
        "learning mode did not write what was reached: {:?}",
        std::fs::read_to_string(&out)
    );
}

/// `default_action: allow` + a denylist in DNS mode: the resolver
/// answers NXDOMAIN for denylisted names (with `denylisted`) and forwards
/// the rest, the allowlist re-opening a name under a denylisted
/// wildcard; every address is reachable but the denylisted ones, refused
/// on every port and protocol.
#[test]
fn default_allow_with_a_denylist_dns_mode() {
    let u = upstream_in(deny_world());
    let n = u.w.p.n;
    let ns = u.w.p.work.clone();
    let server = u.w.p.v4(2);
    let denied = |what, probe, msg| Row {
        what,
        probe,
        want: Want::Block,
        event: Some((msg, "BLOCKED", "denylisted")),
    };
    let pass = |what, probe| Row { what, probe, want: Want::Pass, event: None };
    let rows = vec![
        pass("a name no list names resolves", Probe::Dig { name: "allowed.test", server: server.clone() }),
        pass(
            "the allowlist's exception resolves",
            Probe::Dig { name: "api.deny.test", server: server.clone() },
        ),
        pass(
            "a denylisted address's name resolves (the address is refused)",
            Probe::Dig { name: "far.test", server: server.clone() },
        ),
        denied(
            "a denylisted name: NXDOMAIN",
            Probe::Dig { name: "blocked.test", server: server.clone() },
            "dns.blocked",
        ),
        denied(
            "a name under a denylisted wildcard",
            Probe::Dig { name: "x.deny.test", server: server.clone() },
            "dns.blocked",
        ),
        pass("TCP anywhere", Probe::Tcp { to: u.at(2, 8000) }),
        pass("HTTP by any name: no proxy in DNS mode", Probe::Http { host: "blocked.test", to: u.at(2, 80) }),
        pass("UDP, v6", Probe::Udp { to: u.at6(2, 7001) }),
        pass("ICMP", Probe::Ping { to: u.w.p.ip4(2) }),
        denied("TCP to a denylisted address", Probe::Tcp { to: u.at(3, 8000) }, "nflog.event"),
        denied(
            "HTTP to a denylisted address",
            Probe::Http { host: "far.test", to: u.at(3, 80) },
            "nflog.event",
        ),
        denied("UDP to a denylisted v6 address", Probe::Udp { to: u.at6(3, 7001) }, "nflog.event"),
        denied("ICMP to a denylisted address", Probe::Ping { to: u.w.p.ip4(3) }, "nflog.event"),
    ];
    let d = u.start("allow-deny-dns", &allow_with_denylist(n), &[("FILTER_MODE", "dns")]);
    run_rows(&d, &ns, &rows);
}

/// Both lists with the default deny: the allowlist is the policy and the
/// denylist closes parts of it (deny wins), by name at the proxies and by
/// address (port entries too) in the kernel. Both lists without a
/// default are refused by `egret check` and `egret run`, saying how to
/// choose.
#[test]
fn both_lists_with_each_default_and_refused_without_one() {
    let u = upstream_in(deny_world());
    let n = u.w.p.n;
    let ns = u.w.p.work.clone();
    let lists = format!(
        "allowlist:\n  ips: [\"10.200.{n}.3\"]\n  domains: [\"*.deny.test\", \"allowed.test\"]\ndenylist:\n  ips: [\"tcp/10.200.{n}.3:8001\"]\n  domains: [\"x.deny.test\", \"blocked.test\"]\n"
    );
    let denied = |what, probe, msg| Row {
        what,
        probe,
        want: Want::Block,
        event: Some((msg, "BLOCKED", "denylisted")),
    };
    let pass = |what, probe| Row { what, probe, want: Want::Pass, event: None };
    let d = u.start("deny-both", &format!("default_action: deny\n{lists}"), &[]);
    run_rows(
        &d,
        &ns,
        &[
            pass(
                "deny: a name the allowlist names",
                Probe::Tls { sni: Some("api.deny.test"), to: u.at(2, 443) },
            ),
            denied(
                "deny: the denylist closes a name inside it",
                Probe::Tls { sni: Some("x.deny.test"), to: u.at(2, 443) },
                "https.blocked",
            ),
            Row {
                what: "deny: a name neither names",
                probe: Probe::Http { host: "other.test", to: u.at(2, 80) },
                want: Want::Block,
                event: Some(("http.blocked", "BLOCKED", "not-allowlisted")),
            },
            pass("deny: the allowlisted address", Probe::Tcp { to: u.at(3, 8000) }),
            denied(
                "deny: the denylist closes one port of it",
                Probe::Tcp { to: u.at(3, 8001) },
                "nflog.event",
            ),
            pass("deny: the same port over UDP is not in the entry", Probe::Udp { to: u.at(3, 8000) }),
            Row {
                what: "deny: an address neither names",
                probe: Probe::Tcp { to: u.at(2, 8000) },
                want: Want::Block,
                event: Some(("nflog.event", "BLOCKED", "not-allowlisted")),
            },
        ],
    );
    drop(d);
    // The same lists with the default allow: the allowlist re-opens
    // parts of the denylist.
    let d = u.start("allow-both", &format!("default_action: allow\n{lists}"), &[]);
    run_rows(
        &d,
        &ns,
        &[
            pass(
                "allow: the allowlist's *.deny.test re-opens the denylist's x.deny.test",
                Probe::Tls { sni: Some("x.deny.test"), to: u.at(2, 443) },
            ),
            denied(
                "allow: a denylisted name the allowlist does not name",
                Probe::Http { host: "blocked.test", to: u.at(2, 80) },
                "http.blocked",
            ),
            pass("allow: a name neither names", Probe::Http { host: "allowed.test", to: u.at(2, 80) }),
            pass(
                "allow: the allowlisted address re-opens its denylisted port",
                Probe::Tcp { to: u.at(3, 8001) },
            ),
            pass("allow: an address neither names", Probe::Tcp { to: u.at(2, 8000) }),
        ],
    );
    drop(d);

    // No default: refused, by `egret check` and by `egret run`.
    let pol = policy_file("policy-table-both-no-default", &lists);
    let mut c = util::egret();
    c.arg("check").env("POLICY_PATH", &pol);
    let (code, out, err) = util::run(c);
    assert_eq!(code, 2, "{out}");
    assert!(
        err.contains("default_action: an allowlist and a denylist together need default_action"),
        "{err}"
    );
    assert!(
        err.contains("`deny` keeps the allowlist") && err.contains("`allow` lets everything pass"),
        "{err}"
    );
    let egret = env!("CARGO_BIN_EXE_egret");
    // The last daemon's rules outlive it (fail closed): removed first, so
    // the refused start is seen to install none.
    let mut c = Pair::exec(&ns, egret);
    c.arg("cleanup").env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    assert_eq!(util::run(c).0, 0, "egret cleanup");
    assert_eq!(crate::run::tables(&ns), 0);
    let mut c = Pair::exec(&ns, egret);
    c.arg("run").env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("POLICY_PATH", &pol);
    let (code, _, err) = util::run(c);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("need default_action"), "{err}");
    assert_eq!(crate::run::tables(&ns), 0, "a refused policy installs no rules");
    // `egret check` says the default and which list wins.
    let pol = policy_file("policy-table-both-check", &format!("default_action: allow\n{lists}"));
    let mut c = util::egret();
    c.arg("check").env("POLICY_PATH", &pol);
    let (code, out, err) = util::run(c);
    assert_eq!(code, 0, "{err}");
    assert!(out.starts_with("default_action: allow  # everything passes but the denylist; where both lists match, the allowlist wins\n"), "{out}");
    let mut c = util::egret();
    c.args(["check", "--explain", "x.deny.test"]).env("POLICY_PATH", &pol);
    let (code, out, _) = util::run(c);
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("x.deny.test: allowed by allowlist.domains *.deny.test, a subdomain wildcard"),
        "{out}"
    );
    assert!(
        out.contains(
            "denylist.domains x.deny.test matches too; with default_action allow the allowlist wins"
        ),
        "{out}"
    );
    let mut c = util::egret();
    c.args(["check", "--explain", "blocked.test"]).env("POLICY_PATH", &pol);
    let (code, out, _) = util::run(c);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("blocked.test: blocked by denylist.domains blocked.test, an exact name"), "{out}");
}

/// TTL of db.test's answers in the names-with-ports tables: short, so
/// the expiry is seen; long enough for the rows' probes to run inside it
/// on a loaded machine (8 s was not, under a full parallel test run).
const DB_TTL: u32 = 20;

/// The world of the names-with-ports tables: db.test answers .2 to its
/// first A query and .3 to every later one (TTL [`DB_TTL`]), and TCP
/// 5432/5433 and UDP 5432 echo on .2 and .3.
fn db_world() -> (Upstream, Guard) {
    let w = world_with(|two, three| {
        let mut z = Zone::standard(two, 300);
        z.rotate.push(("db.test".into(), DB_TTL, vec![two, three]));
        // And one AAAA, the same in every answer: .2's v6 address.
        let v6: std::net::Ipv6Addr = format!("fd00:200:{}::2", two.octets()[2]).parse().expect("v6");
        z.records.push((
            "db.test".into(),
            DB_TTL,
            hickory_proto::rr::RData::AAAA(hickory_proto::rr::rdata::AAAA(v6)),
        ));
        z
    });
    let addrs = [w.p.v4(2), w.p.v4(3), w.p.v6(2), w.p.v6(3)].join(",");
    let db = Pair::spawn_ready(
        &w.p.up,
        crate::nft::py(),
        &[&crate::nft::data("servers.py"), "5432,5433", "5432", &addrs, &addrs],
    );
    (upstream_in(w), db)
}

/// The rows of one answer: `at` open on TCP 5432 only, `other` not at all.
fn db_rows(u: &Upstream, at: u8, other: u8) -> Vec<Row> {
    let blocked = |what, probe| Row {
        what,
        probe,
        want: Want::Block,
        event: Some(("nflog.event", "BLOCKED", "not-allowlisted")),
    };
    vec![
        Row {
            what: "the answer's address on the entry's port",
            probe: Probe::Tcp { to: u.at(at, 5432) },
            want: Want::Pass,
            event: None,
        },
        blocked("the answer's address on the next port", Probe::Tcp { to: u.at(at, 5433) }),
        blocked("the answer's address on the entry's port over udp", Probe::Udp { to: u.at(at, 5432) }),
        blocked("the answer's address on a port no entry names", Probe::Tcp { to: u.at(at, 8000) }),
        blocked("another address on the entry's port", Probe::Tcp { to: u.at(other, 5432) }),
    ]
}

/// The elements of `named_ports4` as nft lists them.
fn named_set(ns: &str) -> String {
    let mut c = Pair::exec(ns, "nft");
    c.args(["list", "set", "inet", "egret", "named_ports4"]);
    let (code, out, err) = util::run(c);
    assert_eq!(code, 0, "{err}");
    out
}

/// HTTPS mode, `tcp/db.test:5432`: egret resolves db.test itself at
/// start (the workload asks the pod's resolver, which egret never sees)
/// and opens its address on TCP 5432 only, for the answer's TTL; when the
/// TTL runs out it asks again, the new address opens and the old one's
/// element expires. The name itself is not allowed on 80/443.
#[test]
fn a_name_with_ports_https_mode() {
    let (u, _db) = db_world();
    let ns = u.w.p.work.clone();
    let pol = policy_file("policy-table-named-https", "allowlist:\n  domains: [\"tcp/db.test:5432\"]\n");
    let d = u.start_with(&pol, &[("DNS_TTL_MIN", "1s")]);
    d.wait_logged("db.test: 2 address(es) open on its ports", Duration::from_secs(10));
    let set = named_set(&ns);
    assert!(set.contains(&format!("{} . tcp . 5432", u.w.p.v4(2))) && set.contains("expires"), "{set}");
    run_rows(&d, &ns, &db_rows(&u, 2, 3));
    let blocked6 = |what, probe| Row {
        what,
        probe,
        want: Want::Block,
        event: Some(("nflog.event", "BLOCKED", "not-allowlisted")),
    };
    run_rows(
        &d,
        &ns,
        &[
            Row {
                what: "v6: the AAAA answer on the entry's port",
                probe: Probe::Tcp { to: u.at6(2, 5432) },
                want: Want::Pass,
                event: None,
            },
            blocked6("v6: the next port", Probe::Tcp { to: u.at6(2, 5433) }),
            blocked6("v6: over udp", Probe::Udp { to: u.at6(2, 5432) }),
            blocked6("v6: another address", Probe::Tcp { to: u.at6(3, 5432) }),
        ],
    );
    run_rows(
        &d,
        &ns,
        &[Row {
            what: "the name over HTTP: not allowed by its ports",
            probe: Probe::Http { host: "db.test", to: u.at(2, 80) },
            want: Want::Block,
            event: Some(("http.blocked", "BLOCKED", "not-allowlisted")),
        }],
    );
    let asked = || u.w.dns.seen.lock().expect("seen").get(&("db.test".to_owned(), "rotated-a")).copied();
    assert_eq!(asked(), Some(1), "the rows above ran past db.test's TTL ({DB_TTL}s): too slow to judge");
    // The TTL runs out: asked again, the next answer (.3) opens, and the
    // first one's element is gone.
    let relearned = wait_for(Duration::from_secs(u64::from(DB_TTL) + 6), || {
        let s = named_set(&ns);
        (s.contains(&format!("{} . tcp . 5432", u.w.p.v4(3)))
            && !s.contains(&format!("{} . tcp", u.w.p.v4(2))))
        .then_some(s)
    });
    assert!(relearned.is_some(), "db.test was not asked again when its TTL ran out:\n{}", named_set(&ns));
    run_rows(&d, &ns, &db_rows(&u, 3, 2));
    assert!(asked() >= Some(2));
    // A reload replaces the ruleset (its sets start empty): the answer
    // still in its TTL is put back under the new policy's ports at once.
    std::fs::write(&pol, "allowlist:\n  domains: [\"tcp/db.test:5432-5433\"]\n").expect("rewrite policy");
    d.wait_log("policy reloaded", Duration::from_secs(10));
    run_rows(
        &d,
        &ns,
        &[Row {
            what: "after a reload: the live answer on the new entry's ports",
            probe: Probe::Tcp { to: u.at(3, 5433) },
            want: Want::Pass,
            event: None,
        }],
    );
}

/// Strict DNS mode, `tcp/db.test:5432`: egret's answer for db.test opens
/// its address on TCP 5432 only, for the TTL; after the TTL the port is
/// closed again until the name is asked again, whose answer (.3) opens.
#[test]
fn a_name_with_ports_strict_dns_mode() {
    let (u, _db) = db_world();
    let ns = u.w.p.work.clone();
    let server = u.w.p.v4(2);
    let env = [("FILTER_MODE", "dns-strict"), ("DNS_TTL_MIN", "1s")];
    let d = u.start("named-dns", "allowlist:\n  domains: [\"tcp/db.test:5432\"]\n", &env);
    let ask = |what| Row {
        what,
        probe: Probe::Dig { name: "db.test", server: server.clone() },
        want: Want::Pass,
        event: None,
    };
    let before = Row {
        what: "before any answer",
        probe: Probe::Tcp { to: u.at(2, 5432) },
        want: Want::Block,
        event: None,
    };
    run_rows(&d, &ns, &[before, ask("the name with ports resolves")]);
    run_rows(&d, &ns, &db_rows(&u, 2, 3));
    let set = named_set(&ns);
    assert!(set.contains(&format!("{} . tcp . 5432", u.w.p.v4(2))) && set.contains("expires"), "{set}");
    let expired = wait_for(Duration::from_secs(u64::from(DB_TTL) + 4), || {
        (!named_set(&ns).contains(&format!("{} . tcp", u.w.p.v4(2)))).then_some(())
    });
    assert!(expired.is_some(), "the element outlived its TTL:\n{}", named_set(&ns));
    run_rows(
        &d,
        &ns,
        &[Row {
            what: "after the TTL, before the name is asked again",
            probe: Probe::Tcp { to: u.at(2, 5432) },
            want: Want::Block,
            event: Some(("nflog.event", "BLOCKED", "not-allowlisted")),
        }],
    );
    run_rows(&d, &ns, &[ask("asked again")]);
    run_rows(&d, &ns, &db_rows(&u, 3, 2));
}
