//! `egret run` end to end: the real daemon in a workload namespace, real
//! upstream servers (HTTP, and an authoritative DNS server for the
//! anti-spoofing resolver) in an upstream namespace, real curl clients.

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::dnsauth::{Auth, Zone};
use crate::netns::{wait_for, Guard, Pair};
use crate::util;

/// A running `egret run`, killed (by pid) on drop, with its event lines.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) events: mpsc::Receiver<serde_json::Value>,
    /// The same stdout lines as they were written (for byte comparisons).
    pub(crate) lines: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    /// Every stderr line so far, for [`Daemon::wait_logged`].
    history: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Daemon {
    pub(crate) fn start(ns: &str, policy: &Path, env: &[(&str, &str)]) -> Daemon {
        Daemon::start_under(ns, policy, env, None)
    }

    /// [`Daemon::start`] with RLIMIT_NOFILE `nofile` (soft and hard), as a
    /// container's limit would be.
    pub(crate) fn start_with_nofile(ns: &str, policy: &Path, env: &[(&str, &str)], nofile: u64) -> Daemon {
        Daemon::start_under(ns, policy, env, Some(nofile))
    }

    fn start_under(ns: &str, policy: &Path, env: &[(&str, &str)], nofile: Option<u64>) -> Daemon {
        let egret = env!("CARGO_BIN_EXE_egret");
        let mut c = match nofile {
            None => Pair::exec(ns, egret),
            Some(n) => {
                // prlimit execs egret: the child's pid is egret's.
                let mut c = Pair::exec(ns, "prlimit");
                c.args([format!("--nofile={n}:{n}"), "--".to_owned(), egret.to_owned()]);
                c
            }
        };
        c.arg("run").env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin").env("POLICY_PATH", policy);
        c.env("LOG_LEVEL", "info").env("HOSTNAME", "run-test");
        // Each daemon its own /health socket: the host's /run/egret is shared
        // by every test's namespace (a test may set its own).
        let sock = Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("health-{ns}")).join("egret.sock");
        c.env("HEALTH_SOCKET", &sock);
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        let mut child = c.spawn().expect("spawn egret run");
        let (etx, events) = mpsc::channel();
        let (ltx, lines) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                let v: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON: {line:?}: {e}"));
                let _ = ltx.send(line);
                if etx.send(v).is_err() {
                    return;
                }
            }
        });
        let (stx, stderr) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        let history = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let keep = history.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                eprintln!("egret: {line}");
                keep.lock().expect("log history").push(line.clone());
                if stx.send(line).is_err() {
                    return;
                }
            }
        });
        let d = Daemon { child, events, lines, stderr, history };
        d.wait_log("running on", Duration::from_secs(15));
        d
    }

    /// Waits (bounded) for a stderr line containing `what`.
    pub(crate) fn wait_log(&self, what: &str, timeout: Duration) -> String {
        wait_for(timeout, || self.stderr.try_iter().find(|l| l.contains(what)))
            .unwrap_or_else(|| panic!("egret never logged {what:?} within {timeout:?}"))
    }

    /// Waits (bounded) for a stderr line containing `what`, among every
    /// line logged since start (also those [`Daemon::wait_log`] passed).
    pub(crate) fn wait_logged(&self, what: &str, timeout: Duration) -> String {
        wait_for(timeout, || {
            self.history.lock().expect("log history").iter().find(|l| l.contains(what)).cloned()
        })
        .unwrap_or_else(|| panic!("egret never logged {what:?} within {timeout:?}"))
    }

    /// Every stderr line logged so far.
    pub(crate) fn logged(&self) -> Vec<String> {
        self.history.lock().expect("log history").clone()
    }

    /// Every stderr line logged so far, joined.
    pub(crate) fn history_text(&self) -> String {
        self.logged().join("\n")
    }

    /// Waits (bounded) for an event with this msg and field value.
    pub(crate) fn wait_event(
        &self,
        msg: &str,
        key: &str,
        value: impl Into<serde_json::Value>,
    ) -> serde_json::Value {
        let value = value.into();
        wait_for(Duration::from_secs(10), || {
            self.events.try_iter().find(|e| e["msg"] == msg && e[key] == value)
        })
        .unwrap_or_else(|| panic!("no {msg} event with {key}={value}"))
    }

    pub(crate) fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.child.id() as i32), sig)
            .expect("signal egret");
    }

    /// Waits (bounded) for the process to exit; its exit code.
    pub(crate) fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let start = Instant::now();
        while start.elapsed() < timeout {
            if let Some(st) = self.child.try_wait().expect("wait") {
                return st.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub(crate) fn policy_file(name: &str, yaml: &str) -> PathBuf {
    let p = util::scratch(name).join("policy.yaml");
    std::fs::write(&p, yaml).expect("write policy");
    p
}

/// Starts the test authoritative DNS server inside `ns`.
pub(crate) fn dns_in(ns: &str, addr: SocketAddr, zone: Zone) -> Auth {
    crate::netns::within(ns, move || Auth::start(addr, zone))
}

/// curl in the workload namespace: (http code, body).
pub(crate) fn curl(ns: &str, args: &[&str]) -> (String, String) {
    let mut c = Pair::exec(ns, "curl");
    c.args(["-s", "-m", "5", "-w", "\n%{http_code}"]).args(args);
    let (_, out, _) = util::run(c);
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.to_owned(), body.to_owned())
}

/// The one test topology builder: a [`Pair`], the upstream's DNS server
/// on .2:53 and (but for [`bare_world`]) an HTTP server.
pub(crate) struct World {
    pub(crate) p: Pair,
    _http: Option<Guard>,
    /// The upstream's DNS server (its query counts).
    pub(crate) dns: Auth,
}

/// Upstream: HTTP on .2 and .3 port 80; DNS on .2:53 saying
/// allowed.test and blocked.test are at .2.
pub(crate) fn world() -> World {
    world_with(|two, _| Zone::standard(two, 300))
}

/// [`world`] with the DNS zone made from the upstream's .2 and .3.
pub(crate) fn world_with(zone: impl FnOnce(Ipv4Addr, Ipv4Addr) -> Zone) -> World {
    let mut w = bare_world(zone);
    let addrs = [w.p.v4(2), w.p.v4(3)].join(",");
    let http = Pair::spawn_ready(
        &w.p.up,
        "python3",
        &[&util::data("netns/http_server.py").to_string_lossy(), "80", &addrs],
    );
    w._http = Some(http);
    w
}

/// The namespaces and the DNS server only: for tests with servers of
/// their own on the upstream's port 80.
pub(crate) fn bare_world(zone: impl FnOnce(Ipv4Addr, Ipv4Addr) -> Zone) -> World {
    let p = Pair::new();
    let dns_addr: SocketAddr = format!("{}:53", p.v4(2)).parse().unwrap();
    let two: Ipv4Addr = p.v4(2).parse().unwrap();
    let three: Ipv4Addr = p.v4(3).parse().unwrap();
    let dns = dns_in(&p.up, dns_addr, zone(two, three));
    World { p, _http: None, dns }
}

#[test]
fn https_mode_allows_by_name_blocks_spoofing_and_other_names() {
    let w = world();
    let p = &w.p;
    let pol = policy_file("run-e2e", "allowlist:\n  domains: [\"allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);

    // Allowed name at its real address: served.
    let (code, body) =
        curl(&p.work, &["--resolve", &format!("allowed.test:80:{}", p.v4(2)), "http://allowed.test/"]);
    assert_eq!((code.as_str(), body.trim()), ("200", format!("hello from {}", p.v4(2)).as_str()));
    let ev = d.wait_event("http.allowed", "http_host", "allowed.test");
    assert_eq!(ev["destination_ip"], p.v4(2).as_str());
    assert_eq!(ev["hostname"], "run-test");

    // Allowed name sent to an address it does not resolve to: 403.
    let (code, body) =
        curl(&p.work, &["--resolve", &format!("allowed.test:80:{}", p.v4(3)), "http://allowed.test/"]);
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("ip-mismatch"), "{body}");
    let ev = d.wait_event("http.blocked", "reason", "ip-mismatch");
    assert_eq!(ev["destination_ip"], p.v4(3).as_str());

    // A name outside the policy: 403.
    let (code, body) =
        curl(&p.work, &["--resolve", &format!("blocked.test:80:{}", p.v4(2)), "http://blocked.test/"]);
    assert_eq!(code, "403", "{body}");
    d.wait_event("http.blocked", "reason", "not-allowlisted");

    // Another port: reset at once, logged through NFLOG.
    let t = Instant::now();
    let (code, _) = curl(&p.work, &[&format!("http://{}:8000/", p.v4(2))]);
    assert_eq!(code, "000");
    assert!(t.elapsed() < Duration::from_secs(2), "blocked port must fail fast, took {:?}", t.elapsed());
    let ev = d.wait_event("nflog.event", "destination_port", 8000);
    assert_eq!(ev["action"], "BLOCKED");
}

pub(crate) fn tables(ns: &str) -> usize {
    let mut c = Pair::exec(ns, "nft");
    c.args(["list", "tables"]);
    util::run(c).1.lines().filter(|l| l.trim() == "table inet egret").count()
}

#[test]
fn rules_stay_after_sigterm_and_kill_9_restart_replaces_cleanup_removes() {
    use nix::sys::signal::Signal;
    let w = world();
    let p = &w.p;
    let pol = policy_file("run-lifecycle", "allowlist:\n  domains: [\"allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let env = [("DNS_UPSTREAMS", upstream.as_str())];
    let blocked = format!("http://{}:8000/", p.v4(3));

    let mut d = Daemon::start(&p.work, &pol, &env);
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0), "SIGTERM: clean exit 0");
    assert_eq!(tables(&p.work), 1, "rules stay after exit (fail closed)");
    assert_eq!(curl(&p.work, &[&blocked]).0, "000", "still blocked with egret gone");

    let mut d = Daemon::start(&p.work, &pol, &env);
    d.signal(Signal::SIGKILL);
    assert_eq!(d.wait_exit(Duration::from_secs(5)), None, "killed, no exit code");
    assert_eq!(tables(&p.work), 1, "rules stay after kill -9");
    assert_eq!(curl(&p.work, &[&blocked]).0, "000", "still blocked after kill -9");

    let d = Daemon::start(&p.work, &pol, &env);
    assert_eq!(tables(&p.work), 1, "a restart replaces the table, never duplicates it");
    drop(d);

    let mut c = Pair::exec(&p.work, env!("CARGO_BIN_EXE_egret"));
    c.arg("cleanup");
    let (code, _, err) = util::run(c);
    assert_eq!(code, 0, "{err}");
    assert_eq!(tables(&p.work), 0, "cleanup removes the table");
}

#[test]
fn reload_on_file_change_and_bad_edit_keeps_the_old_policy() {
    let w = world();
    let p = &w.p;
    let pol = policy_file("run-reload", "allowlist:\n  domains: [\"other.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(&p.work, &pol, &[("DNS_UPSTREAMS", &upstream)]);
    let url = ["--resolve", &format!("allowed.test:80:{}", p.v4(2)), "http://allowed.test/"];
    let url: Vec<&str> = url.iter().map(|s| s.as_ref()).collect();
    assert_eq!(curl(&p.work, &url).0, "403", "not allowed yet");

    // Add the name by editing the file: reachable soon, no restart. The
    // watcher polls every 500 ms and a reload takes milliseconds (1.3 s
    // for this whole test on a quiet machine); 5 s leaves room for a CI
    // machine busy with the other tests.
    std::fs::write(&pol, "allowlist:\n  domains: [\"other.test\", \"allowed.test\"]\n").unwrap();
    let ok = wait_for(Duration::from_secs(5), || (curl(&p.work, &url).0 == "200").then_some(()));
    assert!(ok.is_some(), "the added name was not reachable within 5 s");
    d.wait_log("policy reloaded", Duration::from_secs(5));

    // A bad edit: the old policy stays and the log says why.
    std::fs::write(&pol, "allowlist:\n  domains: [\"allowed.test\", \"*.\"]\nblocklist: {}\n").unwrap();
    d.wait_log("policy reload rejected", Duration::from_secs(5));
    d.wait_log("unknown field `blocklist`", Duration::from_secs(1));
    assert_eq!(curl(&p.work, &url).0, "200", "old policy kept after a bad edit");
    d.wait_event("egret.reload_failed", "reason", "policy-invalid");
}

#[test]
fn embedded_dashboard_receives_the_filters_events() {
    let w = world();
    let p = &w.p;
    let pol = policy_file("run-embedded", "allowlist:\n  domains: [\"allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let d = Daemon::start(
        &p.work,
        &pol,
        &[
            ("DNS_UPSTREAMS", &upstream),
            ("DASHBOARD_LISTEN", "127.0.0.1:18081"),
            ("DASHBOARD_API_KEY", "embedded-key"),
            ("DASHBOARD_START_DELAY", "0s"),
            ("DASHBOARD_HEARTBEAT", "300ms"),
        ],
    );
    let (code, _) =
        curl(&p.work, &["--resolve", &format!("blocked.test:80:{}", p.v4(2)), "http://blocked.test/"]);
    assert_eq!(code, "403");
    let seen = wait_for(Duration::from_secs(10), || {
        let (code, body) = curl(
            &p.work,
            &["-H", "X-Api-Key: embedded-key", "http://127.0.0.1:18081/api/v1/logs?q=blocked.test"],
        );
        (code == "200" && body.contains("\"http.blocked\"")).then_some(body)
    });
    let body = seen.expect("the embedded dashboard never showed the blocked request");
    assert!(body.contains("not-allowlisted"), "{body}");
    let (code, body) = curl(&p.work, &["http://127.0.0.1:18081/health"]);
    assert_eq!(code, "200", "{body}");
    // The filter's heartbeat: listed under its hostname, healthy, with
    // the digest of the policy file it loaded and its decisions counted.
    let digest = egret::events::heartbeat::policy_digest(&std::fs::read(&pol).unwrap());
    let agents = wait_for(Duration::from_secs(10), || {
        let (code, body) =
            curl(&p.work, &["-H", "X-Api-Key: embedded-key", "http://127.0.0.1:18081/api/v1/agents"]);
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        let a = v["agents"].as_array()?.first()?.clone();
        (code == "200" && a["counters"]["blocked"].as_u64() >= Some(1)).then_some(a)
    });
    let a = agents.expect("the filter's heartbeat never reached the dashboard");
    assert_eq!(
        (a["healthy"].as_bool(), a["mode"].as_str(), a["policy_digest"].as_str(), a["version"].as_str()),
        (Some(true), Some("https"), Some(digest.as_str()), Some(egret::VERSION)),
        "{a}"
    );
    assert_eq!(a["flags"], serde_json::json!([]), "{a}");
    drop(d);
}
