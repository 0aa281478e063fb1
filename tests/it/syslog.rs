//! `SYSLOG_URL` against a real rsyslog (Debian's `rsyslog`, TLS through
//! `rsyslog-gnutls`), started by each test in the upstream namespace with
//! its own configuration and files under a scratch directory, killed by
//! pid on drop. The collector's address is not in the policy, so only
//! egret's marked socket reaches it (the workload's own attempt is
//! refused, checked). rsyslog writes the MSG of every `egret` message to
//! a file (`%msg%`) and the parsed header to another; the tests compare
//! the first with egret's stdout byte for byte, the second with the
//! events' fields.
//!
//! Also: the queue holds while rsyslog is down for 10 s and drains after,
//! a small queue counts its overflow in `/metrics`, and the rsyslog
//! `imfile` example in `deploy/rsyslog/` reads a rotating `LOG_FILE`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::netns::{wait_for, Pair};
use crate::ops::{metric, scrape};
use crate::run::{curl, policy_file, world, Daemon, World};
use crate::util::{self, scratch};

/// A running rsyslogd (foreground, in a namespace), killed on drop.
struct Rsyslog {
    child: Option<Child>,
    ns: String,
    conf: PathBuf,
    dir: PathBuf,
    /// `(proto, addr:port)` it listens on, when it does.
    listen: Option<(&'static str, String)>,
}

impl Rsyslog {
    /// Writes `conf` into `dir` and starts rsyslogd with it in `ns`.
    fn start(ns: &str, dir: &Path, conf: &str, listen: Option<(&'static str, String)>) -> Rsyslog {
        std::fs::create_dir_all(dir.join("work")).expect("rsyslog work dir");
        let path = dir.join("rsyslog.conf");
        std::fs::write(&path, conf).expect("write rsyslog.conf");
        let mut check = Pair::exec(ns, "rsyslogd");
        check.args(["-N1", "-f"]).arg(&path);
        let (code, out, err) = util::run(check);
        assert_eq!(code, 0, "rsyslogd -N1 refused the configuration:\n{out}{err}\n{conf}");
        let mut r = Rsyslog { child: None, ns: ns.to_owned(), conf: path, dir: dir.to_owned(), listen };
        r.restart();
        r
    }

    /// Starts it (again) with the same configuration and files, and waits
    /// (bounded) until it listens.
    fn restart(&mut self) {
        assert!(self.child.is_none(), "rsyslog is already running");
        let mut c = Pair::exec(&self.ns, "rsyslogd");
        c.arg("-n").arg("-f").arg(&self.conf).arg("-i").arg(self.dir.join("rsyslogd.pid"));
        c.stdin(Stdio::null()).stdout(Stdio::inherit()).stderr(Stdio::inherit());
        self.child = Some(c.spawn().expect("spawn rsyslogd (is Debian's rsyslog installed?)"));
        let Some((proto, addr)) = self.listen.clone() else {
            let pid = self.dir.join("rsyslogd.pid");
            wait_for(Duration::from_secs(10), || pid.exists().then_some(()))
                .expect("rsyslogd wrote no pid file within 10 s");
            return;
        };
        let flag = if proto == "udp" { "-Hlun" } else { "-Hltn" };
        let up = wait_for(Duration::from_secs(10), || {
            let mut ss = Pair::exec(&self.ns, "ss");
            ss.arg(flag);
            let (_, out, _) = util::run(ss);
            out.lines().any(|l| l.split_whitespace().any(|w| w == addr)).then_some(())
        });
        assert!(up.is_some(), "rsyslogd did not listen on {proto} {addr} within 10 s");
    }

    /// SIGTERM, and waits (bounded) for the exit.
    fn stop(&mut self) {
        let mut child = self.child.take().expect("rsyslog is running");
        let pid = nix::unistd::Pid::from_raw(child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).expect("signal rsyslogd");
        let exited = wait_for(Duration::from_secs(10), || child.try_wait().expect("wait").map(|_| ()));
        if exited.is_none() {
            let _ = child.kill();
            let _ = child.wait();
            panic!("rsyslogd did not stop within 10 s of SIGTERM");
        }
    }

    /// The lines rsyslog wrote to `name` so far.
    fn lines(&self, name: &str) -> Vec<String> {
        std::fs::read_to_string(self.dir.join(name))
            .map(|s| s.lines().map(str::to_owned).collect())
            .unwrap_or_default()
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// rsyslog.conf: `inputs`, then every message from APP-NAME `egret` to
/// `received.jsonl` (the MSG) and `headers.txt` (the parsed header);
/// rsyslog's own messages to `internal.log`.
fn conf(dir: &Path, inputs: &str) -> String {
    let d = dir.display();
    format!(
        r#"global(workDirectory="{d}/work" maxMessageSize="64k")
{inputs}
template(name="egret_msg" type="string" string="%msg%\n")
template(name="egret_hdr" type="string" string="%pri%|%timereported:::date-rfc3339%|%hostname%|%app-name%|%procid%|%msgid%|%structured-data%\n")
if $app-name == "egret" then {{
  action(type="omfile" file="{d}/received.jsonl" template="egret_msg")
  action(type="omfile" file="{d}/headers.txt" template="egret_hdr")
  stop
}}
action(type="omfile" file="{d}/internal.log")
"#
    )
}

/// A test CA and a leaf for `ip` (CA:FALSE, serverAuth, IP SAN: rustls
/// refuses a CA certificate as the server's).
fn certs(dir: &Path, ip: &str) {
    let run = |args: &[&str]| {
        let mut c = Command::new("openssl");
        c.args(args).current_dir(dir);
        let (code, _, err) = util::run(c);
        assert_eq!(code, 0, "openssl {args:?}: {err}");
    };
    std::fs::write(
        dir.join("leaf.ext"),
        format!("basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:{ip}\n"),
    )
    .unwrap();
    let cn = format!("/CN={ip}");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
        "-days",
        "2",
        "-subj",
        "/CN=egret test ca",
    ]);
    run(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
        "-subj",
        &cn,
    ]);
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.pem",
        "-days",
        "2",
        "-extfile",
        "leaf.ext",
    ]);
}

/// The input stanza, rsyslog's listen address and egret's `SYSLOG_URL`.
fn input(proto: &'static str, dir: &Path, ip: &str) -> (String, (&'static str, String), String) {
    let d = dir.display();
    match proto {
        "udp" => (
            format!(r#"module(load="imudp") input(type="imudp" address="{ip}" port="514")"#),
            ("udp", format!("{ip}:514")),
            format!("udp://{ip}"),
        ),
        "tcp" => (
            format!(r#"module(load="imtcp") input(type="imtcp" address="{ip}" port="601")"#),
            ("tcp", format!("{ip}:601")),
            format!("tcp://{ip}:601"),
        ),
        "tls" => {
            certs(dir, ip);
            (
                format!(
                    r#"module(load="imtcp")
input(type="imtcp" address="{ip}" port="6514" streamDriver.name="gtls" streamDriver.mode="1"
      streamDriver.authMode="anon" streamDriver.CAFile="{d}/ca.pem"
      streamDriver.CertFile="{d}/server.pem" streamDriver.KeyFile="{d}/server.key")"#
                ),
                ("tcp", format!("{ip}:6514")),
                format!("tls://{ip}"),
            )
        }
        _ => unreachable!("{proto}"),
    }
}

/// `n` requests from the workload: every third allowed, the others
/// refused by name; each is one event.
fn traffic(w: &World, n: usize) {
    for i in 0..n {
        let host = if i % 3 == 0 { "allowed.test" } else { "blocked.test" };
        let url = format!("http://{host}/{i}");
        let (code, _) = curl(&w.p.work, &["--resolve", &format!("{host}:80:{}", w.p.v4(2)), &url]);
        assert_eq!(code, if i % 3 == 0 { "200" } else { "403" }, "{url}");
    }
}

/// Takes stdout lines off the daemon until `rs` has as many in `file`
/// and at least `min` arrived, and both stayed so for half a second (the
/// stdout reader is a thread, so rsyslog may be ahead of it for a moment);
/// rsyslog's lines.
fn settle(d: &Daemon, rs: &Rsyslog, file: &str, min: usize, stdout: &mut Vec<String>) -> Vec<String> {
    let mut quiet_since: Option<(Instant, usize, usize)> = None;
    let r = wait_for(Duration::from_secs(30), || {
        stdout.extend(d.lines.try_iter());
        let got = rs.lines(file);
        if stdout.len() < min || got.len() != stdout.len() {
            quiet_since = None;
            return None;
        }
        match quiet_since {
            Some((t, a, b)) if a == stdout.len() && b == got.len() => {
                (t.elapsed() >= Duration::from_millis(500)).then_some(got)
            }
            _ => {
                quiet_since = Some((Instant::now(), stdout.len(), got.len()));
                None
            }
        }
    });
    r.unwrap_or_else(|| {
        panic!("rsyslog's {file} never caught up: {} of {} stdout lines", rs.lines(file).len(), stdout.len())
    })
}

/// Waits (bounded) for a metric to show `want` (the event counters are
/// refreshed once a second).
fn wait_metric(ns: &str, port: u16, key: &str, want: u64) {
    let mut last = 0;
    let ok = wait_for(Duration::from_secs(5), || {
        last = metric(&scrape(ns, port), key);
        (last == want).then_some(())
    });
    assert!(ok.is_some(), "{key} is {last}, not {want}");
}

fn start_egret(w: &World, name: &str, env: &[(&str, &str)]) -> Daemon {
    let pol = policy_file(name, "allowlist:\n  domains: [\"allowed.test\"]\n");
    let dns = format!("{}:53", w.p.v4(2));
    let mut all = vec![("DNS_UPSTREAMS", dns.as_str())];
    all.extend_from_slice(env);
    Daemon::start(&w.p.work, &pol, &all)
}

/// N events sent, N received, byte-identical JSON, every header field
/// right; the workload itself cannot reach the collector.
fn roundtrip(proto: &'static str) {
    let w = world();
    let ip = w.p.v4(2);
    let dir = scratch(&format!("syslog-{proto}"));
    let (inputs, listen, url) = input(proto, &dir, &ip);
    let rs = Rsyslog::start(&w.p.up, &dir, &conf(&dir, &inputs), Some(listen.clone()));
    let ca = dir.join("ca.pem").display().to_string();
    let mut env = vec![("SYSLOG_URL", url.as_str()), ("HOSTNAME", "pöd-7")];
    if proto == "tls" {
        env.push(("SYSLOG_CA_FILE", &ca));
    }
    let d = start_egret(&w, &format!("syslog-{proto}-egret"), &env);

    if listen.0 == "tcp" {
        let t = Instant::now();
        let (code, _) = curl(&w.p.work, &[&format!("telnet://{}", listen.1)]);
        assert_eq!(code, "000", "the workload reached the collector");
        assert!(t.elapsed() < Duration::from_secs(2), "refused at once, took {:?}", t.elapsed());
    }
    const N: usize = 24;
    traffic(&w, N);
    let mut stdout = Vec::new();
    let got = settle(&d, &rs, "received.jsonl", N, &mut stdout);
    assert_eq!(got, stdout, "rsyslog's messages are egret's stdout lines, byte for byte, in order");
    let http = stdout.iter().filter(|l| l.contains("\"msg\":\"http.")).count();
    assert_eq!(http, N, "one event per request");

    let headers = rs.lines("headers.txt");
    assert_eq!(headers.len(), stdout.len());
    let pid = d.child.id().to_string();
    for (h, line) in headers.iter().zip(&stdout) {
        let ev: serde_json::Value = serde_json::from_str(line).unwrap();
        let f: Vec<&str> = h.split('|').collect();
        let pri = match ev["action"].as_str().unwrap() {
            "BLOCKED" => "132",
            _ => "134",
        };
        let time = ev["time"].as_str().unwrap();
        let micros = format!("{}Z", &time[..26]);
        assert_eq!(
            f,
            [pri, micros.as_str(), "p_d-7", "egret", pid.as_str(), ev["msg"].as_str().unwrap(), "-"],
            "{line}"
        );
        assert_eq!(ev["hostname"], "pöd-7", "the JSON keeps the name as it is");
    }
    drop(d);
}

#[test]
fn syslog_over_tcp_rsyslog_receives_every_event_byte_identical() {
    roundtrip("tcp");
}

#[test]
fn syslog_over_tls_rsyslog_receives_every_event_byte_identical() {
    roundtrip("tls");
}

#[test]
fn syslog_over_udp_rsyslog_receives_every_event_byte_identical() {
    roundtrip("udp");
}

#[test]
fn syslog_queue_holds_while_rsyslog_is_down_for_10_s_and_drains_after() {
    let w = world();
    let ip = w.p.v4(2);
    let dir = scratch("syslog-outage");
    let (inputs, listen, url) = input("tcp", &dir, &ip);
    let mut rs = Rsyslog::start(&w.p.up, &dir, &conf(&dir, &inputs), Some(listen));
    let port = 9301;
    let d =
        start_egret(&w, "syslog-outage-egret", &[("SYSLOG_URL", &url), ("METRICS_ADDR", &port.to_string())]);
    let mut stdout = Vec::new();
    traffic(&w, 3);
    assert_eq!(settle(&d, &rs, "received.jsonl", 3, &mut stdout), stdout);

    rs.stop();
    let down = Instant::now();
    const M: usize = 9;
    traffic(&w, M);
    // Held, none dropped, for the whole outage.
    let mut held = false;
    while down.elapsed() < Duration::from_secs(10) {
        let m = scrape(&w.p.work, port);
        if metric(&m, "egret_filter_events_queued{stage=\"syslog\"}") == M as u64 {
            held = true;
        }
        assert_eq!(metric(&m, "egret_filter_events_dropped_total{stage=\"syslog\"}"), 0);
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(held, "the queue never showed the {M} events held");
    assert_eq!(rs.lines("received.jsonl").len(), 3, "nothing arrived while rsyslog was down");

    rs.restart();
    let up = Instant::now();
    let got = settle(&d, &rs, "received.jsonl", 3 + M, &mut stdout);
    let drained = up.elapsed();
    assert_eq!(got, stdout, "every event arrived once, in order, after the outage");
    eprintln!("syslog: {M} held events drained {drained:?} after rsyslog came back");
    wait_metric(&w.p.work, port, "egret_filter_events_queued{stage=\"syslog\"}", 0);
    wait_metric(&w.p.work, port, "egret_filter_syslog_sent_total", stdout.len() as u64);
    wait_metric(&w.p.work, port, "egret_filter_events_dropped_total{stage=\"syslog\"}", 0);
}

#[test]
fn syslog_queue_overflow_drops_the_newest_and_counts_them() {
    let w = world();
    let ip = w.p.v4(2);
    let dir = scratch("syslog-overflow");
    let (inputs, listen, url) = input("tcp", &dir, &ip);
    // Configured and checked, but not running yet: the port is closed.
    let mut rs = Rsyslog::start(&w.p.up, &dir, &conf(&dir, &inputs), Some(listen));
    rs.stop();
    let port = 9302;
    let d = start_egret(
        &w,
        "syslog-overflow-egret",
        &[("SYSLOG_URL", &url), ("SYSLOG_QUEUE_SIZE", "5"), ("METRICS_ADDR", &port.to_string())],
    );
    traffic(&w, 12);
    let mut stdout = Vec::new();
    let m = wait_for(Duration::from_secs(10), || {
        stdout.extend(d.lines.try_iter());
        let m = scrape(&w.p.work, port);
        (stdout.len() >= 12 && metric(&m, "egret_filter_events_total") == stdout.len() as u64).then_some(m)
    })
    .expect("the sink never counted the events");
    let n = stdout.len() as u64;
    assert_eq!(metric(&m, "egret_filter_events_queued{stage=\"syslog\"}"), 5);
    assert_eq!(metric(&m, "egret_filter_events_dropped_total{stage=\"syslog\"}"), n - 5);
    assert_eq!(metric(&m, "egret_filter_events_dropped_total{stage=\"channel\"}"), 0);

    // The five held are the oldest, and they are what rsyslog gets.
    rs.restart();
    let got = wait_for(Duration::from_secs(20), || {
        let got = rs.lines("received.jsonl");
        (got.len() >= 5).then_some(got)
    })
    .expect("the held events never arrived");
    assert_eq!(got, stdout[..5], "the first five, byte for byte");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(rs.lines("received.jsonl").len(), 5, "nothing dropped was sent later");
    wait_metric(&w.p.work, port, "egret_filter_syslog_sent_total", 5);
}

#[test]
fn rsyslog_imfile_example_reads_the_rotating_log_file() {
    let w = world();
    let dir = scratch("syslog-imfile");
    let log_dir = dir.join("egret");
    std::fs::create_dir_all(&log_dir).unwrap();
    let log_file = log_dir.join("events.jsonl");
    let out = dir.join("egret-events.jsonl");
    let example = std::fs::read_to_string(util::root().join("deploy/rsyslog/egret-imfile.conf")).unwrap();
    for path in ["/var/log/egret/events.jsonl", "/var/log/egret-events.jsonl"] {
        assert!(example.contains(path), "the example no longer names {path}");
    }
    let example = example
        .replace("/var/log/egret/events.jsonl", &log_file.display().to_string())
        .replace("/var/log/egret-events.jsonl", &out.display().to_string());
    let main = format!(
        "global(workDirectory=\"{}/work\")\n{example}\naction(type=\"omfile\" file=\"{}/internal.log\")\n",
        dir.display(),
        dir.display()
    );
    let rs = Rsyslog::start(&w.p.up, &dir, &main, None);
    let lf = log_file.display().to_string();
    // Small rotation size: ~90 events of ~400 bytes rotate several times.
    let d = start_egret(&w, "syslog-imfile-egret", &[("LOG_FILE", &lf), ("LOG_FILE_MAX_SIZE", "8K")]);
    const N: usize = 90;
    traffic(&w, N);
    let mut stdout = Vec::new();
    let got = settle(&d, &rs, "egret-events.jsonl", N, &mut stdout);
    assert_eq!(got, stdout, "imfile passed on every LOG_FILE line unchanged, in order");
    assert!(PathBuf::from(format!("{lf}.1")).exists(), "LOG_FILE rotated during the test");
}
