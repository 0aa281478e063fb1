//! Operations of `egret run` end to end, in namespaces: a reload cuts the
//! open connections it no longer allows, SIGTERM lets a transfer finish,
//! the watchdog restores a deleted table, and the metrics endpoint counts
//! what the test sent.
//!
//! The upstream is a small HTTP/1.1 server of this test (keep-alive, and a
//! slow 2 MB body on `/slow`) so byte counts and timing are known exactly.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::dnsauth::{Auth, Zone};
use crate::netns::{wait_for, within, Pair};
use crate::run::{curl, policy_file, tables, Daemon};
use crate::util;

/// `/slow`: this many bytes, in `SLOW_CHUNKS` pieces with a pause between.
const SLOW_LEN: usize = 2_000_000;
const SLOW_CHUNKS: usize = 20;
const SLOW_PAUSE: Duration = Duration::from_millis(150);
const HELLO: &str = "hello\n";

/// The test upstream; stops accepting on drop.
struct Upstream {
    stop: Arc<AtomicBool>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Serves each connection to `addr` (inside `ns`) with `handle` on a
/// thread of its own, until the returned guard is dropped.
fn serve_in(ns: &str, addr: SocketAddr, handle: fn(TcpStream)) -> Upstream {
    let listener = within(ns, move || TcpListener::bind(addr).expect("bind test upstream"));
    listener.set_nonblocking(true).expect("nonblocking");
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    std::thread::spawn(move || {
        // Bounded: the guard stops it; a forgotten one ends after 5 min.
        let start = Instant::now();
        while !stop2.load(Ordering::Relaxed) && start.elapsed() < Duration::from_secs(300) {
            match listener.accept() {
                Ok((s, _)) => {
                    std::thread::spawn(move || handle(s));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    });
    Upstream { stop }
}

fn upstream(ns: &str, addr: SocketAddr) -> Upstream {
    serve_in(ns, addr, serve)
}

/// Port 443 of the test upstream: echoes what it reads (the proxy only
/// reads the ClientHello; what follows is opaque to it).
fn echo(ns: &str, addr: SocketAddr) -> Upstream {
    serve_in(ns, addr, |mut s| {
        s.set_nonblocking(false).ok();
        s.set_read_timeout(Some(Duration::from_secs(30))).ok();
        let mut r = s.try_clone().expect("clone");
        let _ = std::io::copy(&mut r, &mut s);
    })
}

/// A real ClientHello (rustls) naming `sni`; it never gets further than
/// the hello, so no roots are needed.
pub fn client_hello(sni: &str) -> Vec<u8> {
    let cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(sni.to_owned()).unwrap();
    let mut conn = rustls::ClientConnection::new(Arc::new(cfg), name).unwrap();
    let mut hello = Vec::new();
    conn.write_tls(&mut hello).unwrap();
    hello
}

/// Sends `bytes` and reads them back from the echo upstream.
fn echoed(s: &mut TcpStream, bytes: &[u8]) -> bool {
    let mut back = vec![0u8; bytes.len()];
    s.write_all(bytes).is_ok() && s.read_exact(&mut back).is_ok() && back == bytes
}

/// Asserts the connection was closed (EOF or reset) within a few seconds.
fn assert_closed(s: &mut TcpStream) {
    let t = Instant::now();
    let mut b = [0u8; 64];
    match s.read(&mut b) {
        Ok(0) => {}
        Ok(n) => panic!("revoked connection still delivered {n} bytes"),
        Err(e) => assert!(
            !matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "revoked connection still open after {:?}",
            t.elapsed()
        ),
    }
    assert!(t.elapsed() < Duration::from_secs(5), "closing took {:?}", t.elapsed());
}

/// Reads one request head; `None` at EOF or on an error.
fn read_head(s: &mut TcpStream) -> Option<String> {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 || s.read(&mut b).ok()? == 0 {
            return None;
        }
        head.push(b[0]);
    }
    Some(String::from_utf8_lossy(&head).into_owned())
}

/// Keep-alive HTTP/1.1: `/slow` sends `SLOW_LEN` bytes slowly, anything
/// else `HELLO`. `Connection: close` closes after the answer.
fn serve(mut s: TcpStream) {
    s.set_read_timeout(Some(Duration::from_secs(30))).ok();
    while let Some(head) = read_head(&mut s) {
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let close = head.to_ascii_lowercase().contains("connection: close");
        let ok = if path == "/slow" {
            let chunk = vec![b'x'; SLOW_LEN / SLOW_CHUNKS];
            let mut ok = write!(s, "HTTP/1.1 200 OK\r\nContent-Length: {SLOW_LEN}\r\n\r\n").is_ok();
            for _ in 0..SLOW_CHUNKS {
                ok = ok && s.write_all(&chunk).is_ok();
                std::thread::sleep(SLOW_PAUSE);
            }
            ok
        } else {
            s.write_all(response().as_bytes()).is_ok()
        };
        if !ok || close {
            return;
        }
    }
}

fn response() -> String {
    format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{HELLO}", HELLO.len())
}

fn request(host: &str, path: &str, close: bool) -> String {
    let c = if close { "Connection: close\r\n" } else { "" };
    format!("GET {path} HTTP/1.1\r\nHost: {host}\r\n{c}\r\n")
}

/// Sends one request and reads one response (head and `Content-Length`
/// body): (status code, body).
fn exchange(s: &mut TcpStream, host: &str, path: &str) -> (u16, Vec<u8>) {
    s.write_all(request(host, path, false).as_bytes()).expect("send request");
    let head = read_head(s).expect("response head");
    let code = head.split_whitespace().nth(1).and_then(|c| c.parse().ok()).expect("status code");
    let len: usize = head
        .lines()
        .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("response body");
    (code, body)
}

/// A connection from the workload namespace to `dst` (redirected to the
/// proxy by egret's rules).
pub(crate) fn connect(ns: &str, dst: SocketAddr) -> TcpStream {
    let s = within(ns, move || TcpStream::connect_timeout(&dst, Duration::from_secs(5)).expect("connect"));
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

/// Upstream namespace: DNS on .2:53 (allowed.test and blocked.test at .2)
/// and the test HTTP server on .2:80.
struct World {
    p: Pair,
    _dns: Auth,
    _http: Upstream,
    _echo: Upstream,
}

fn world() -> World {
    let crate::run::World { p, dns, .. } = crate::run::bare_world(|two, _| Zone::standard(two, 300));
    let http = upstream(&p.up, format!("{}:80", p.v4(2)).parse().unwrap());
    let echo = echo(&p.up, format!("{}:443", p.v4(2)).parse().unwrap());
    World { p, _dns: dns, _http: http, _echo: echo }
}

impl World {
    fn http(&self) -> SocketAddr {
        format!("{}:80", self.p.v4(2)).parse().unwrap()
    }

    fn start(&self, name: &str, domains: &[&str], env: &[(&str, &str)]) -> (Daemon, std::path::PathBuf) {
        let pol = policy_file(name, &policy(domains));
        let dns = format!("{}:53", self.p.v4(2));
        let mut all = vec![("DNS_UPSTREAMS", dns.as_str())];
        all.extend_from_slice(env);
        (Daemon::start(&self.p.work, &pol, &all), pol)
    }
}

fn policy(domains: &[&str]) -> String {
    let list: Vec<String> = domains.iter().map(|d| format!("\"{d}\"")).collect();
    format!("allowlist:\n  domains: [{}]\n", list.join(", "))
}

/// Scrapes the filter's metrics from inside the workload namespace.
pub(crate) fn scrape(ns: &str, port: u16) -> HashMap<String, u64> {
    let (code, body) = curl(ns, &[&format!("http://127.0.0.1:{port}/metrics")]);
    assert_eq!(code, "200", "{body}");
    body.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .map(|(k, v)| (k.to_owned(), v.parse().unwrap_or_else(|_| panic!("bad sample value {v:?}"))))
        .collect()
}

pub(crate) fn metric(m: &HashMap<String, u64>, key: &str) -> u64 {
    *m.get(key).unwrap_or_else(|| panic!("no {key} in the scrape: {m:?}"))
}

/// `egret health URL` in the workload namespace: (exit code, stderr).
fn health(ns: &str, port: u16) -> (i32, String) {
    let mut c = Pair::exec(ns, env!("CARGO_BIN_EXE_egret"));
    c.args(["health", &format!("http://127.0.0.1:{port}/health")]);
    let (code, _, err) = util::run(c);
    (code, err)
}

#[test]
fn reload_closes_open_connections_of_a_removed_name_and_keeps_the_others() {
    let w = world();
    let port = 9194;
    let (d, pol) =
        w.start("ops-revoke", &["allowed.test", "blocked.test"], &[("METRICS_ADDR", &port.to_string())]);
    let mut gone = connect(&w.p.work, w.http());
    let mut kept = connect(&w.p.work, w.http());
    assert_eq!(exchange(&mut gone, "allowed.test", "/"), (200, HELLO.into()));
    assert_eq!(exchange(&mut kept, "blocked.test", "/"), (200, HELLO.into()));

    std::fs::write(&pol, policy(&["blocked.test"])).unwrap();
    d.wait_log("policy reloaded", Duration::from_secs(5));
    let ev = d.wait_event("http.blocked", "reason", "policy-revoked");
    assert_eq!(ev["http_host"], "allowed.test");
    assert_eq!(ev["destination_ip"], w.p.v4(2).as_str());

    // The removed name's keep-alive connection is closed (EOF or reset),
    // not left open until a timeout.
    assert_closed(&mut gone);
    // The name still allowed keeps its connection and is served.
    assert_eq!(exchange(&mut kept, "blocked.test", "/"), (200, HELLO.into()));
    // New connections to the removed name are refused.
    let url = ["--resolve", &format!("allowed.test:80:{}", w.p.v4(2)), "http://allowed.test/"];
    let (code, body) = curl(&w.p.work, &url.iter().map(|s| s.as_ref()).collect::<Vec<&str>>());
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("not-allowlisted"), "{body}");
    let m = scrape(&w.p.work, port);
    assert_eq!(metric(&m, "egret_filter_connections_total{component=\"http\",verdict=\"revoked\"}"), 1);
    assert_eq!(metric(&m, "egret_filter_connections_open"), 1, "the kept connection");
}

#[test]
fn reload_closes_open_tls_connections_of_a_removed_name() {
    let w = world();
    let (d, pol) = w.start("ops-revoke-tls", &["allowed.test", "blocked.test"], &[]);
    let tls: SocketAddr = format!("{}:443", w.p.v4(2)).parse().unwrap();
    let mut gone = connect(&w.p.work, tls);
    let mut kept = connect(&w.p.work, tls);
    assert!(echoed(&mut gone, &client_hello("allowed.test")), "allowed.test relayed");
    assert!(echoed(&mut kept, &client_hello("blocked.test")), "blocked.test relayed");

    std::fs::write(&pol, policy(&["blocked.test"])).unwrap();
    let ev = d.wait_event("https.blocked", "reason", "policy-revoked");
    assert_eq!(ev["https"], "allowed.test");
    assert_closed(&mut gone);
    assert!(echoed(&mut kept, b"still here"), "the connection still allowed continues");
    // A new connection with the removed name is reset.
    let mut again = connect(&w.p.work, tls);
    let _ = again.write_all(&client_hello("allowed.test"));
    assert_closed(&mut again);
    d.wait_event("https.blocked", "reason", "not-allowlisted");
}

#[test]
fn sigterm_lets_a_transfer_in_progress_finish_then_exits_0_and_stays_closed() {
    let w = world();
    let (mut d, _pol) = w.start("ops-sigterm", &["allowed.test"], &[]);
    let mut s = connect(&w.p.work, w.http());
    s.write_all(request("allowed.test", "/slow", true).as_bytes()).unwrap();
    let head = read_head(&mut s).expect("response head");
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut got = 0usize;
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match s.read(&mut buf) {
                Ok(0) | Err(_) => return got,
                Ok(n) => {
                    if got == 0 {
                        let _ = tx.send(());
                    }
                    got += n;
                }
            }
        }
    });
    rx.recv_timeout(Duration::from_secs(5)).expect("the transfer started");
    let t = Instant::now();
    d.signal(Signal::SIGTERM);
    let code = d.wait_exit(Duration::from_secs(20));
    let got = reader.join().expect("reader");
    assert_eq!(got, SLOW_LEN, "the transfer in progress completed");
    assert_eq!(code, Some(0), "clean exit after SIGTERM");
    // The transfer needed about SLOW_CHUNKS * SLOW_PAUSE (3 s): egret
    // waited for it rather than exiting at once, and within the grace.
    assert!(t.elapsed() < Duration::from_secs(12), "exit took {:?}", t.elapsed());
    d.wait_log("connections open at stop", Duration::from_secs(2));

    // Fail closed: nothing gets out with egret gone.
    assert_eq!(tables(&w.p.work), 1);
    let url = ["--resolve", &format!("allowed.test:80:{}", w.p.v4(2)), "http://allowed.test/"];
    assert_eq!(curl(&w.p.work, &url.iter().map(|s| s.as_ref()).collect::<Vec<&str>>()).0, "000");
    assert_eq!(curl(&w.p.work, &[&format!("http://{}:8000/", w.p.v4(2))]).0, "000");
}

#[test]
fn watchdog_restores_a_deleted_table_alerts_and_health_says_degraded_meanwhile() {
    let w = world();
    let port = 9191;
    let (d, _pol) = w.start(
        "ops-watchdog",
        &["allowed.test"],
        &[("METRICS_ADDR", &port.to_string()), ("WATCHDOG_INTERVAL", "4s")],
    );
    assert_eq!(health(&w.p.work, port), (0, String::new()), "healthy at start");

    let mut c = Pair::exec(&w.p.work, "nft");
    c.args(["delete", "table", "inet", "egret"]);
    let (code, _, err) = util::run(c);
    assert_eq!(code, 0, "nft delete table: {err}");
    assert_eq!(tables(&w.p.work), 0);
    let (code, err) = health(&w.p.work, port);
    if code == 0 {
        // The watchdog's tick fell between the delete and this check (a
        // few ms out of 4 s); then it must already have counted it.
        assert_eq!(metric(&scrape(&w.p.work, port), "egret_filter_ruleset_reapplies_total"), 1);
    } else {
        assert_eq!(code, 1);
        assert!(err.contains("503") && err.contains("degraded") && err.contains("deleted"), "{err}");
    }

    let ev = d.wait_event("egret.ruleset_tampered", "reason", "ruleset-tampered");
    assert_eq!((ev["action"].as_str(), ev["component"].as_str()), (Some("BLOCKED"), Some("egret")));
    let back = wait_for(Duration::from_secs(6), || (tables(&w.p.work) == 1).then_some(()));
    assert!(back.is_some(), "the table was not restored within the watchdog interval");
    assert_eq!(health(&w.p.work, port).0, 0, "healthy again");
    let m = scrape(&w.p.work, port);
    assert_eq!(metric(&m, "egret_filter_ruleset_tampered_total"), 1);
    assert_eq!(metric(&m, "egret_filter_ruleset_reapplies_total"), 1);
    assert_eq!(metric(&m, "egret_filter_enforcement_intact"), 1);
    // Enforcing again: another port is reset at once.
    assert_eq!(curl(&w.p.work, &[&format!("http://{}:8000/", w.p.v4(2))]).0, "000");

    // A changed table (a chain flushed) is restored too.
    let mut c = Pair::exec(&w.p.work, "nft");
    c.args(["flush", "chain", "inet", "egret", "filter_out"]);
    let (code, _, err) = util::run(c);
    assert_eq!(code, 0, "nft flush chain: {err}");
    let m = wait_for(Duration::from_secs(6), || {
        let m = scrape(&w.p.work, port);
        (m.get("egret_filter_ruleset_reapplies_total") == Some(&2)).then_some(m)
    })
    .expect("the flushed chain was not restored within the watchdog interval");
    assert_eq!(metric(&m, "egret_filter_enforcement_intact"), 1);
    let ev = d.wait_event("egret.ruleset_tampered", "reason", "ruleset-tampered");
    assert!(ev["note"].as_str().unwrap_or("").contains("changed"), "{ev}");
}

#[test]
fn dns_mode_metrics_count_queries_by_verdict() {
    let w = world();
    let port = 9193;
    let (_d, _pol) = w.start(
        "ops-dns-metrics",
        &["allowed.test"],
        &[("FILTER_MODE", "dns"), ("METRICS_ADDR", &port.to_string())],
    );
    let dig = |args: &[&str]| {
        let mut c = Pair::exec(&w.p.work, "dig");
        c.args(["@127.0.0.1", "+time=3", "+tries=1"]).args(args);
        util::run(c).1
    };
    for q in [&["allowed.test", "A"][..], &["allowed.test", "AAAA"], &["blocked.test", "A"]] {
        let out = dig(q);
        let want = if q[0] == "blocked.test" { "NXDOMAIN" } else { "NOERROR" };
        assert!(out.contains(&format!("status: {want}")), "{q:?}: {out}");
    }
    let m = scrape(&w.p.work, port);
    for (key, want) in [
        ("egret_filter_dns_queries_total{verdict=\"forwarded\"}", 2),
        ("egret_filter_dns_queries_total{verdict=\"blocked\"}", 1),
        ("egret_filter_dns_queries_total{verdict=\"servfail\"}", 0),
    ] {
        assert_eq!(metric(&m, key), want, "{key}");
    }
    assert!(!m.keys().any(|k| k.starts_with("egret_filter_connections")), "no proxies in DNS mode");
}

#[test]
fn metrics_count_the_traffic_the_test_sent() {
    let w = world();
    let port = 9192;
    let (mut d, pol) = w.start("ops-metrics", &["allowed.test"], &[("METRICS_ADDR", &port.to_string())]);

    // 3 allowed requests on their own connections, exact bytes each way.
    for _ in 0..3 {
        let mut s = connect(&w.p.work, w.http());
        s.write_all(request("allowed.test", "/", true).as_bytes()).unwrap();
        let mut all = Vec::new();
        s.read_to_end(&mut all).unwrap();
        assert_eq!(String::from_utf8_lossy(&all), response());
    }
    // 2 refused by name.
    for _ in 0..2 {
        let url = ["--resolve", &format!("blocked.test:80:{}", w.p.v4(2)), "http://blocked.test/"];
        assert_eq!(curl(&w.p.work, &url.iter().map(|s| s.as_ref()).collect::<Vec<&str>>()).0, "403");
    }
    // 1 blocked packet flow, seen through NFLOG.
    assert_eq!(curl(&w.p.work, &[&format!("http://{}:8000/", w.p.v4(2))]).0, "000");
    d.wait_event("nflog.event", "destination_port", 8000);
    // One good reload and one bad edit.
    std::fs::write(&pol, policy(&["allowed.test", "other.test"])).unwrap();
    d.wait_log("policy reloaded", Duration::from_secs(5));
    std::fs::write(&pol, "allowlist: [").unwrap();
    d.wait_log("policy reload rejected", Duration::from_secs(5));

    // Counters settle once the connection threads are done.
    let m = wait_for(Duration::from_secs(5), || {
        let m = scrape(&w.p.work, port);
        (m.get("egret_filter_connections_open") == Some(&0)
            && m.get("egret_filter_reloads_total{result=\"invalid\"}") == Some(&1)
            && m.get("egret_filter_events_total").copied().unwrap_or(0)
                >= 6 + m.get("egret_filter_nflog_events_total").copied().unwrap_or(0))
        .then_some(m)
    })
    .expect("connections closed and the bad reload counted");
    let req = request("allowed.test", "/", true).len() as u64;
    let resp = response().len() as u64;
    for (key, want) in [
        ("egret_filter_connections_total{component=\"http\",verdict=\"allowed\"}", 3),
        ("egret_filter_connections_total{component=\"http\",verdict=\"blocked\"}", 2),
        ("egret_filter_connections_total{component=\"https\",verdict=\"allowed\"}", 0),
        ("egret_filter_connections_total{component=\"http\",verdict=\"revoked\"}", 0),
        ("egret_filter_relayed_bytes_total{direction=\"up\"}", 3 * req),
        ("egret_filter_relayed_bytes_total{direction=\"down\"}", 3 * resp),
        ("egret_filter_reloads_total{result=\"applied\"}", 1),
        ("egret_filter_reloads_total{result=\"invalid\"}", 1),
        ("egret_filter_events_dropped_total{stage=\"channel\"}", 0),
        ("egret_filter_ruleset_tampered_total", 0),
        ("egret_filter_enforcement_intact", 1),
    ] {
        assert_eq!(metric(&m, key), want, "{key}");
    }
    // NFLOG logs each blocked packet; curl's SYN may be retried, so count
    // what the daemon reported as events.
    let nflog = metric(&m, "egret_filter_nflog_events_total");
    assert!(nflog >= 1, "nflog events {nflog}");
    // Events: 3 allowed + 2 blocked + the NFLOG ones + 1 reload_failed.
    let events = metric(&m, "egret_filter_events_total");
    assert!(events >= 6 + nflog, "events {events}, nflog {nflog}");
    // Nothing on other paths, and no hostname ever appears as a label.
    let text = curl(&w.p.work, &[&format!("http://127.0.0.1:{port}/metrics")]).1;
    assert!(!text.contains("allowed.test") && !text.contains(&w.p.v4(2)), "{text}");
    assert_eq!(curl(&w.p.work, &[&format!("http://127.0.0.1:{port}/nope")]).0, "404");
    // The endpoint does not hold up a clean stop.
    d.signal(Signal::SIGTERM);
    assert_eq!(d.wait_exit(Duration::from_secs(15)), Some(0));
}
