//! `NOTIFICATION_URLS` end to end: `egret run` in a workload namespace
//! with receivers on that namespace's loopback standing in for Gotify,
//! ntfy and a generic webhook (Slack and Discord have fixed hosts: their
//! requests are table-tested in `events::notify`, and they are the same
//! JSON POST as `generic+http`). One blocked request gives one request
//! per URL in the shape the service documents; a URL that hangs and one
//! that refuses hold up no other; no secret reaches the logs or /metrics.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::netns::{wait_for, within};
use crate::run::{curl, policy_file, world, Daemon};

use crate::events::Req;

/// An HTTP receiver on 127.0.0.1 inside `ns`: records each request,
/// answers 200 and closes. Stops (and its thread ends) on drop or after
/// two minutes, whichever is first.
struct Receiver {
    addr: SocketAddr,
    reqs: Arc<Mutex<Vec<Req>>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    fn start(ns: &str) -> Receiver {
        let l = within(ns, || TcpListener::bind("127.0.0.1:0").expect("bind receiver"));
        l.set_nonblocking(true).unwrap();
        let addr = l.local_addr().unwrap();
        let reqs: Arc<Mutex<Vec<Req>>> = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, st) = (reqs.clone(), stop.clone());
        thread::spawn(move || {
            let until = Instant::now() + Duration::from_secs(120);
            while !st.load(Ordering::Relaxed) && Instant::now() < until {
                match l.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                        if let Some(req) = read_request(&mut c) {
                            r.lock().unwrap().push(req);
                            let _ = c.write_all(
                                b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}",
                            );
                        }
                    }
                    Err(_) => thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        Receiver { addr, reqs, stop }
    }

    fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// One request (head and Content-Length body), bounded by the read
/// timeout and 64 KiB.
fn read_request(c: &mut impl Read) -> Option<Req> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while buf.len() < 64 * 1024 {
        if let Some((req, _)) = Req::parse(&buf) {
            return Some(req);
        }
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    None
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    let decode = |s: &str| {
        let s = s.replace('+', " ");
        let b = s.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%' && i + 2 < b.len() {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 3;
            } else {
                out.push(b[i]);
                i += 1;
            }
        }
        String::from_utf8(out).unwrap()
    };
    String::from_utf8(body.to_vec())
        .unwrap()
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), decode(v))
        })
        .collect()
}

#[test]
fn notification_urls_alert_every_target_once_and_a_dead_one_holds_up_none() {
    let w = world();
    let p = &w.p;
    let gotify = Receiver::start(&p.work);
    let legacy = Receiver::start(&p.work);
    let ntfy = Receiver::start(&p.work);
    let generic = Receiver::start(&p.work);
    // Accepts (the kernel's backlog) but never reads nor answers: its
    // worker waits out the whole request timeout (15 s).
    let hang = within(&p.work, || TcpListener::bind("127.0.0.1:0").unwrap());
    let hang_port = hang.local_addr().unwrap().port();
    // Nothing listens on port 1: refused at once.
    let urls = [
        format!("generic+http://127.0.0.1:{hang_port}/hang-path-SeCrEtH"),
        "gotify://127.0.0.1:1/TokRefused9?disabletls=yes".to_owned(),
        format!("gotify://127.0.0.1:{}/sub/GoTokEn1?disabletls=yes", gotify.addr.port()),
        format!("ntfy://alice:PaSsWoRd2@127.0.0.1:{}/ToPiC3?scheme=http", ntfy.addr.port()),
        format!("generic+http://127.0.0.1:{}/hooks/PaThSeCrEt4?x=1", generic.addr.port()),
    ]
    .join(",");
    let secrets = ["SeCrEtH", "TokRefused9", "GoTokEn1", "PaSsWoRd2", "ToPiC3", "PaThSeCrEt4", "LeGaCyKeY5"];
    let pol = policy_file("notify-urls", "allowlist:\n  domains: [\"allowed.test\"]\n");
    let upstream = format!("{}:53", p.v4(2));
    let legacy_host = format!("http://{}", legacy.addr);
    let d = Daemon::start(
        &p.work,
        &pol,
        &[
            ("DNS_UPSTREAMS", &upstream),
            ("NOTIFICATION_URLS", &urls),
            ("NOTIFICATION_HOST", &legacy_host),
            ("NOTIFICATION_KEY", "LeGaCyKeY5"),
            ("METRICS_ADDR", "127.0.0.1:9291"),
        ],
    );
    let blocked =
        || curl(&p.work, &["--resolve", &format!("blocked.test:80:{}", p.v4(2)), "http://blocked.test/"]);
    let start = Instant::now();
    assert_eq!(blocked().0, "403");
    d.wait_event("http.blocked", "http_host", "blocked.test");
    // The live targets have theirs well before the hung one's 15 s are up.
    let live = [&gotify, &legacy, &ntfy, &generic];
    wait_for(Duration::from_secs(8), || live.iter().all(|r| !r.requests().is_empty()).then_some(()))
        .unwrap_or_else(|| {
            panic!(
                "not every live target got its alert within 8 s (a dead one held them up?): {:?}",
                live.iter().map(|r| r.requests().len()).collect::<Vec<_>>()
            )
        });
    assert!(start.elapsed() < Duration::from_secs(12));
    // Same source -> destination within the backoff: no second alert.
    assert_eq!(blocked().0, "403");
    thread::sleep(Duration::from_millis(800));
    for r in live {
        assert_eq!(r.requests().len(), 1, "one request per URL: {:?}", r.requests());
    }
    let title = "run-test - HTTP Connection Blocked";
    let check_message = |m: &str| {
        assert!(m.starts_with("Blocked http connection from ") && m.contains("blocked.test"), "{m}");
    };

    // Gotify (NOTIFICATION_URLS): POST <path>/message, key header, form.
    let g = &gotify.requests()[0];
    assert_eq!((g.method.as_str(), g.path.as_str()), ("POST", "/sub/message"));
    assert_eq!(g.header("x-gotify-key"), Some("GoTokEn1"));
    assert_eq!(g.header("content-type"), Some("application/x-www-form-urlencoded"));
    let f = form(&g.body);
    assert_eq!(f.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["title", "message", "priority"]);
    assert_eq!((f[0].1.as_str(), f[2].1.as_str()), (title, "8"));
    check_message(&f[1].1);

    // The legacy NOTIFICATION_HOST/KEY: as before, alongside the URLs.
    let l = &legacy.requests()[0];
    assert_eq!((l.method.as_str(), l.path.as_str()), ("POST", "/message"));
    assert_eq!(l.header("x-gotify-key"), Some("LeGaCyKeY5"));
    assert_eq!(l.body, g.body);

    // ntfy: JSON publish to the root, topic in the body, basic auth.
    let n = &ntfy.requests()[0];
    assert_eq!((n.method.as_str(), n.path.as_str()), ("POST", "/"));
    assert_eq!(n.header("content-type"), Some("application/json"));
    assert_eq!(n.header("authorization"), Some("Basic YWxpY2U6UGFTc1dvUmQy")); // alice:PaSsWoRd2
    let j = n.json();
    assert_eq!(
        (j["topic"].as_str(), j["title"].as_str(), j["priority"].as_u64()),
        (Some("ToPiC3"), Some(title), Some(4))
    );
    check_message(j["message"].as_str().unwrap());

    // Generic: JSON title + message to the URL as written.
    let r = &generic.requests()[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/hooks/PaThSeCrEt4?x=1"));
    assert_eq!(r.header("content-type"), Some("application/json"));
    let j = r.json();
    assert_eq!(j.as_object().unwrap().len(), 2, "{j}");
    assert_eq!(j["title"].as_str(), Some(title));
    check_message(j["message"].as_str().unwrap());

    // The refused target is logged, redacted; /metrics counts 4 sent and
    // the refusal, and no secret appears anywhere.
    let line =
        d.wait_logged("not delivered to gotify http://127.0.0.1:1 (token ***)", Duration::from_secs(5));
    let metrics = wait_for(Duration::from_secs(5), || {
        let (code, body) = curl(&p.work, &["http://127.0.0.1:9291/metrics"]);
        (code == "200" && body.contains("egret_filter_alerts_failed_total 1")).then_some(body)
    })
    .expect("/metrics counts the refused alert");
    assert!(metrics.contains("egret_filter_alerts_sent_total 4"), "{metrics}");
    let logs = d.history_text();
    for s in secrets {
        assert!(!logs.contains(s), "{s} in the log:\n{logs}");
        assert!(!metrics.contains(s), "{s} in /metrics");
    }
    assert!(logs.contains("alerts for blocked connections to ntfy http://***@127.0.0.1:"), "{logs}");
    drop(line);
    drop(d);
    drop(hang);
}

#[test]
fn a_bad_notification_url_stops_start_up_naming_each_entry() {
    let w = world();
    let p = &w.p;
    let pol = policy_file("notify-bad", "allowlist:\n  domains: [\"allowed.test\"]\n");
    let mut c = crate::netns::Pair::exec(&p.work, env!("CARGO_BIN_EXE_egret"));
    c.arg("run")
        .env_clear()
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("POLICY_PATH", &pol)
        .env("NOTIFICATION_URLS", "slack://hook:OnlyTwo-PaRtS@webhook,ntfy://h/t,discord://123@SeCrEtTok");
    let (code, out, err) = crate::util::run(c);
    assert_ne!(code, 0, "{out}{err}");
    assert!(
        err.contains("NOTIFICATION_URLS: entry 1 (slack://): expected slack://hook:A-B-C@webhook"),
        "{err}"
    );
    assert!(
        err.contains("NOTIFICATION_URLS: entry 3 (discord://): expected discord://TOKEN@WEBHOOK_ID"),
        "{err}"
    );
    assert!(!err.contains("entry 2"), "{err}");
    assert!(!err.contains("OnlyTwo") && !err.contains("SeCrEtTok"), "{err}");
}
