//! The event pipeline against real sockets on 127.0.0.1: a tiny HTTP
//! server started by each test receives the dashboard batches and Gotify
//! alerts; LOG_FILE is checked on disk.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use egret::events::batch::{Backoff, BatchConfig};
use egret::events::net::ClientOptions;
use egret::events::notify::Target;
use egret::events::shipper::ShipperOptions;
use egret::events::sink::{spawn_with, AlertOptions, Counts, LogFileOptions, SinkHandle, SinkOptions};
use egret::events::{Action, Component, Emitter};

use crate::util::scratch;

/// One request as a test server saw it (also the alert receivers'
/// in `notify.rs`).
#[derive(Debug, Clone)]
pub(crate) struct Req {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
}

impl Req {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("body is not JSON: {e}: {self:?}"))
    }

    /// The request at the start of `buf` and its length, once its head and
    /// its Content-Length of body have arrived.
    pub(crate) fn parse(buf: &[u8]) -> Option<(Req, usize)> {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut parsed = httparse::Request::new(&mut headers);
        let Ok(httparse::Status::Complete(head)) = parsed.parse(buf) else { return None };
        let hs: Vec<(String, String)> = parsed
            .headers
            .iter()
            .map(|h| (h.name.to_owned(), String::from_utf8_lossy(h.value).into_owned()))
            .collect();
        let len: usize = hs
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        if buf.len() < head + len {
            return None;
        }
        let req = Req {
            method: parsed.method.unwrap_or("").to_owned(),
            path: parsed.path.unwrap_or("").to_owned(),
            headers: hs,
            body: buf[head..head + len].to_vec(),
        };
        Some((req, head + len))
    }

    fn events(&self) -> Vec<serde_json::Value> {
        match serde_json::from_slice(&self.body).expect("body is JSON") {
            serde_json::Value::Array(v) => v,
            other => panic!("body is not an array: {other}"),
        }
    }
}

/// A keep-alive HTTP/1.1 server on 127.0.0.1 that records every request
/// and answers with the current `status`. `stop` closes the listener and
/// every open connection (the server is "down").
struct Server {
    addr: SocketAddr,
    reqs: Arc<Mutex<Vec<Req>>>,
    status: Arc<AtomicU16>,
    stop: Arc<AtomicBool>,
    threads: Vec<thread::JoinHandle<()>>,
}

impl Server {
    fn start(addr: &str) -> Server {
        let l = TcpListener::bind(addr).expect("bind test server");
        Server::with(l, Arc::default(), Arc::new(AtomicU16::new(201)))
    }

    fn with(l: TcpListener, reqs: Arc<Mutex<Vec<Req>>>, status: Arc<AtomicU16>) -> Server {
        let addr = l.local_addr().unwrap();
        l.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s, st) = (reqs.clone(), status.clone(), stop.clone());
        let t = thread::spawn(move || {
            let mut conns = Vec::new();
            while !st.load(Ordering::Relaxed) {
                match l.accept() {
                    Ok((c, _)) => {
                        let (r, s, st) = (r.clone(), s.clone(), st.clone());
                        conns.push(thread::spawn(move || serve(c, &r, &s, &st)));
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
            drop(l);
            for c in conns {
                let _ = c.join();
            }
        });
        Server { addr, reqs, status, stop, threads: vec![t] }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn requests(&self) -> Vec<Req> {
        self.reqs.lock().unwrap().clone()
    }

    /// Every event received so far, in arrival order.
    fn events(&self) -> Vec<serde_json::Value> {
        self.requests().iter().flat_map(Req::events).collect()
    }

    /// Closes the listener and all connections; returns the pieces to
    /// start again on the same address.
    fn down(mut self) -> (SocketAddr, Arc<Mutex<Vec<Req>>>, Arc<AtomicU16>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            t.join().unwrap();
        }
        (self.addr, self.reqs.clone(), self.status.clone())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(c: TcpStream, reqs: &Mutex<Vec<Req>>, status: &AtomicU16, stop: &AtomicBool) {
    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    serve_http(c, reqs, status, stop)
}

/// The HTTP/1.1 loop over any byte stream (plain TCP or TLS) whose reads
/// time out now and then, so `stop` is noticed.
fn serve_http(mut c: impl Read + Write, reqs: &Mutex<Vec<Req>>, status: &AtomicU16, stop: &AtomicBool) {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        // A complete request in `buf`?
        if let Some((req, used)) = Req::parse(&buf) {
            buf.drain(..used);
            let code = status.load(Ordering::Relaxed);
            let body = if code == 401 { r#"{"error":"unauthorized"}"# } else { r#"{"created":1}"# };
            if (200..300).contains(&code) || code == 401 {
                reqs.lock().unwrap().push(req);
            }
            let resp = format!(
                "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
            if c.write_all(resp.as_bytes()).is_err() {
                return;
            }
            continue;
        }
        match c.read(&mut chunk) {
            Ok(0) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(_) => return,
        }
    }
}

/// stdout stand-in.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn lines(&self) -> Vec<serde_json::Value> {
        let buf = self.0.lock().unwrap();
        String::from_utf8_lossy(&buf)
            .lines()
            .map(|l| serde_json::from_str(l).expect("stdout line is JSON"))
            .collect()
    }
}

fn fast_batches(queue_size: usize) -> BatchConfig {
    BatchConfig {
        max_batch: 50,
        max_delay: Duration::from_millis(50),
        queue_size,
        start_delay: Duration::ZERO,
        backoff: Backoff { base: Duration::from_millis(200), max: Duration::from_secs(2) },
    }
}

fn shipper_to(url: &str, batch: BatchConfig) -> ShipperOptions {
    ShipperOptions {
        host: url.to_owned(),
        api_key: Some("s3cret".into()),
        batch,
        client: ClientOptions {
            connect_timeout: Duration::from_secs(2),
            request_timeout: Duration::from_secs(5),
            ..Default::default()
        },
    }
}

fn options() -> SinkOptions {
    SinkOptions {
        hostname: "pod-1".into(),
        channel_capacity: 8192,
        stdout: None,
        log_file: None,
        shipper: None,
        alerts: None,
        syslog: None,
        learning: None,
    }
}

/// A blocked HTTPS event numbered `i` (in `note`).
fn emit(em: &Emitter, i: usize, action: Action) {
    let mut ev = em
        .event(Component::Https, action)
        .with_flow("10.0.0.5:40000".parse().unwrap(), "1.2.3.4:443".parse().unwrap(), "TCP")
        .with_reason("domain-not-allowed");
    ev.https = Some("blocked.example".into());
    ev.note = Some(i.to_string());
    assert!(em.emit(ev), "event {i} accepted by the channel");
}

fn notes(events: &[serde_json::Value]) -> Vec<usize> {
    events.iter().map(|e| e["note"].as_str().unwrap().parse().unwrap()).collect()
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
fn wait_for(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !cond() {
        assert!(Instant::now() < end, "timed out after {limit:?} waiting for {what}");
        thread::sleep(Duration::from_millis(20));
    }
}

fn wait_counts(h: &SinkHandle, limit: Duration, what: &str, cond: impl Fn(&Counts) -> bool) {
    wait_for(limit, what, || cond(&h.counts()));
}

#[test]
fn batches_arrive_with_headers_fields_and_order() {
    let server = Server::start("127.0.0.1:0");
    let out = Captured::default();
    let (em, h) = spawn_with(SinkOptions {
        stdout: Some(Box::new(out.clone())),
        shipper: Some(shipper_to(&server.url(), fast_batches(1024))),
        ..options()
    })
    .unwrap();
    for i in 0..120 {
        emit(&em, i, if i % 2 == 0 { Action::Blocked } else { Action::Allowed });
    }
    // REDIRECTED events are written but never shipped.
    emit(&em, 999, Action::Redirected);
    wait_for(Duration::from_secs(10), "120 events at the server", || server.events().len() >= 120);
    thread::sleep(Duration::from_millis(200));

    let reqs = server.requests();
    assert!(reqs.len() >= 3, "120 events in batches of at most 50: {} requests", reqs.len());
    for r in &reqs {
        assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/api/v1/logs"));
        assert_eq!(r.header("x-api-key"), Some("s3cret"));
        assert_eq!(r.header("authorization"), Some("Bearer s3cret"));
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(r.events().len() <= 50);
    }
    let events = server.events();
    assert_eq!(notes(&events), (0..120).collect::<Vec<_>>(), "every event once, in order");
    let e = &events[0];
    assert_eq!(e["msg"], "https.blocked");
    assert_eq!(e["action"], "BLOCKED");
    assert_eq!(e["component"], "https");
    assert_eq!(e["hostname"], "pod-1");
    assert_eq!(e["source_ip"], "10.0.0.5");
    assert_eq!(e["source_port"], 40000);
    assert_eq!(e["destination_port"], 443);
    assert_eq!(e["https"], "blocked.example");
    assert_eq!(e["reason"], "domain-not-allowed");
    // FNV-32a of the flow key in lowercase hex without zero padding, as
    // g0efilter writes it (issue 16; it was 8 digits, zero padded).
    let key = "10.0.0.5:40000->1.2.3.4:443|TCP";
    assert_eq!(e["flow_id"], format!("{:x}", egret::events::fnv1a32(key.as_bytes())));
    assert_eq!(events[1]["action"], "ALLOWED");

    let report = h.shutdown(Instant::now() + Duration::from_secs(5));
    assert_eq!(report.unsent, 0);
    let lines = out.lines();
    assert_eq!(lines.len(), 121, "stdout has every event, REDIRECTED included");
    assert_eq!(lines[120]["action"], "REDIRECTED");
}

#[test]
fn server_down_for_10s_loses_nothing_while_the_queue_has_room() {
    let server = Server::start("127.0.0.1:0");
    let (em, h) =
        spawn_with(SinkOptions { shipper: Some(shipper_to(&server.url(), fast_batches(1024))), ..options() })
            .unwrap();
    for i in 0..50 {
        emit(&em, i, Action::Blocked);
    }
    wait_for(Duration::from_secs(10), "the first 50 events", || server.events().len() >= 50);

    let (addr, reqs, status) = server.down();
    // 10 s down, events keep coming (600 < queue size 1024).
    let down_until = Instant::now() + Duration::from_secs(10);
    let mut i = 50;
    while Instant::now() < down_until {
        for _ in 0..30 {
            emit(&em, i, Action::Blocked);
            i += 1;
        }
        thread::sleep(Duration::from_millis(500));
    }
    let total = i;
    assert!(h.counts().ship_retries > 0, "the shipper retried while the server was down: {:?}", h.counts());
    assert_eq!(reqs.lock().unwrap().iter().map(|r| r.events().len()).sum::<usize>(), 50);

    let server = Server::with(TcpListener::bind(addr).expect("rebind the same port"), reqs, status);
    wait_for(Duration::from_secs(20), "every event after the server came back", || {
        server.events().len() >= total
    });
    let c = h.counts();
    assert_eq!((c.ship_dropped, c.ship_rejected, c.channel_dropped), (0, 0, 0), "{c:?}");
    assert_eq!(
        notes(&server.events()),
        (0..total).collect::<Vec<_>>(),
        "nothing lost, nothing twice, in order"
    );
    assert_eq!(h.shutdown(Instant::now() + Duration::from_secs(5)).unsent, 0);
}

#[test]
fn queue_overflow_drop_count_is_exact() {
    let server = Server::start("127.0.0.1:0");
    // A start delay longer than the test: nothing leaves until shutdown.
    let batch = BatchConfig { start_delay: Duration::from_secs(3600), ..fast_batches(10) };
    let (em, h) =
        spawn_with(SinkOptions { shipper: Some(shipper_to(&server.url(), batch)), ..options() }).unwrap();
    for i in 0..25 {
        emit(&em, i, Action::Blocked);
    }
    wait_counts(&h, Duration::from_secs(5), "25 events through the sink", |c| c.events == 25);
    let c = h.counts();
    assert_eq!((c.ship_dropped, c.ship_pending), (15, 10), "{c:?}");
    assert!(server.requests().is_empty(), "start delay holds");
    // Shutdown flushes the queue despite the start delay.
    let report = h.shutdown(Instant::now() + Duration::from_secs(5));
    assert_eq!(report.unsent, 0);
    assert_eq!(notes(&server.events()), (0..10).collect::<Vec<_>>(), "the first 10 kept, the rest dropped");
}

#[test]
fn unauthorized_is_not_retried() {
    let server = Server::start("127.0.0.1:0");
    server.status.store(401, Ordering::Relaxed);
    let (em, h) =
        spawn_with(SinkOptions { shipper: Some(shipper_to(&server.url(), fast_batches(1024))), ..options() })
            .unwrap();
    for i in 0..5 {
        emit(&em, i, Action::Blocked);
    }
    wait_counts(&h, Duration::from_secs(10), "5 events rejected", |c| c.ship_rejected == 5);
    // Give a retry (base 200 ms) ample time to happen if it were going to.
    thread::sleep(Duration::from_millis(1500));
    let c = h.counts();
    assert_eq!((c.ship_retries, c.ship_pending, c.shipped), (0, 0, 0), "{c:?}");
    assert_eq!(notes(&server.events()), [0, 1, 2, 3, 4], "each event sent exactly once");
    h.shutdown(Instant::now() + Duration::from_secs(2));
}

#[test]
fn log_file_keeps_every_event_across_a_restart_with_mode_0600() {
    let dir = scratch("events-logfile");
    let path = dir.join("events.jsonl");
    let opts = || SinkOptions {
        log_file: Some(LogFileOptions { path: path.clone(), max_size: 0, keep: 1 }),
        ..options()
    };
    for run in 0..2 {
        let (em, h) = spawn_with(opts()).unwrap();
        for i in 0..500 {
            emit(&em, run * 500 + i, Action::Blocked);
        }
        let report = h.shutdown(Instant::now() + Duration::from_secs(5));
        assert!(report.sink_finished);
    }
    let text = std::fs::read_to_string(&path).unwrap();
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(notes(&events), (0..1000).collect::<Vec<_>>());
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
}

#[test]
fn log_file_reopens_on_request_and_rotates_by_size() {
    let dir = scratch("events-reopen");
    let path = dir.join("events.jsonl");
    let (em, h) = spawn_with(SinkOptions {
        log_file: Some(LogFileOptions { path: path.clone(), max_size: 0, keep: 1 }),
        ..options()
    })
    .unwrap();
    for i in 0..10 {
        emit(&em, i, Action::Blocked);
    }
    wait_counts(&h, Duration::from_secs(5), "10 events", |c| c.events == 10);
    // What logrotate does: move the file away, then SIGHUP (the flag).
    std::fs::rename(&path, dir.join("events.jsonl.old")).unwrap();
    let flag = h.reopen_flag();
    flag.store(true, Ordering::Relaxed);
    wait_for(Duration::from_secs(5), "the reopen", || h.stats().reopens.load(Ordering::Relaxed) == 1);
    for i in 10..20 {
        emit(&em, i, Action::Blocked);
    }
    h.shutdown(Instant::now() + Duration::from_secs(5));
    let read = |p: &Path| -> Vec<usize> {
        let text = std::fs::read_to_string(p).unwrap();
        notes(&text.lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<_>>())
    };
    assert_eq!(read(&dir.join("events.jsonl.old")), (0..10).collect::<Vec<_>>());
    assert_eq!(read(&path), (10..20).collect::<Vec<_>>());

    // Size rotation through the pipeline: each line is ~400 bytes.
    let rot = dir.join("rot.jsonl");
    let (em, h) = spawn_with(SinkOptions {
        log_file: Some(LogFileOptions { path: rot.clone(), max_size: 4000, keep: 3 }),
        ..options()
    })
    .unwrap();
    for i in 0..30 {
        emit(&em, i, Action::Blocked);
    }
    h.shutdown(Instant::now() + Duration::from_secs(5));
    let mut all = Vec::new();
    for p in [dir.join("rot.jsonl.2"), dir.join("rot.jsonl.1"), rot.clone()] {
        assert!(std::fs::metadata(&p).unwrap().len() <= 4000, "{}", p.display());
        all.extend(read(&p));
    }
    assert!(!dir.join("rot.jsonl.3").exists() || read(&dir.join("rot.jsonl.3")).len() < 30);
    let first = all[0];
    assert_eq!(all, (first..30).collect::<Vec<_>>(), "the newest files hold the newest events, contiguous");
}

#[test]
fn gotify_alert_is_posted_once_per_backoff() {
    let server = Server::start("127.0.0.1:0");
    server.status.store(200, Ordering::Relaxed);
    let (em, h) = spawn_with(SinkOptions {
        alerts: Some(AlertOptions {
            targets: vec![Target::gotify_host(&server.url(), "gk")],
            backoff: Duration::from_secs(60),
            ignore_domains: vec!["*.quiet.example".into()],
            client: ClientOptions::default(),
        }),
        ..options()
    })
    .unwrap();
    for i in 0..20 {
        emit(&em, i, Action::Blocked); // same source -> destination: one alert
    }
    let mut quiet = em.event(Component::Dns, Action::Blocked);
    quiet.qname = Some("a.quiet.example".into());
    em.emit(quiet);
    emit(&em, 100, Action::Allowed);
    wait_counts(&h, Duration::from_secs(10), "one alert sent", |c| c.alerts_sent == 1);
    thread::sleep(Duration::from_millis(300));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1, "{reqs:#?}");
    let r = &reqs[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/message"));
    assert_eq!(r.header("x-gotify-key"), Some("gk"));
    assert_eq!(r.header("content-type"), Some("application/x-www-form-urlencoded"));
    let form: Vec<(String, String)> = String::from_utf8(r.body.clone())
        .unwrap()
        .split('&')
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap();
            (k.to_owned(), url_decode(v))
        })
        .collect();
    assert_eq!(
        form,
        [
            ("title".to_owned(), "pod-1 - HTTPS Connection Blocked".to_owned()),
            (
                "message".to_owned(),
                "Blocked https connection from 10.0.0.5:40000 to blocked.example (1.2.3.4:443). \
                 Reason: domain-not-allowed"
                    .to_owned()
            ),
            ("priority".to_owned(), "8".to_owned()),
        ]
    );
    h.shutdown(Instant::now() + Duration::from_secs(2));
}

fn url_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                out.push(u8::from_str_radix(&s[i + 1..i + 3], 16).unwrap());
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).unwrap()
}

#[test]
fn emit_never_blocks_when_the_sink_is_behind() {
    // A stdout that takes 50 ms per write: the channel (capacity 16)
    // fills, and emit drops and counts instead of waiting.
    struct Slow;
    impl Write for Slow {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            thread::sleep(Duration::from_millis(50));
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let (em, h) =
        spawn_with(SinkOptions { channel_capacity: 16, stdout: Some(Box::new(Slow)), ..options() }).unwrap();
    let accepted = AtomicUsize::new(0);
    let start = Instant::now();
    for i in 0..2000 {
        let mut ev = em.event(Component::Dns, Action::Allowed);
        ev.note = Some(i.to_string());
        if em.emit(ev) {
            accepted.fetch_add(1, Ordering::Relaxed);
        }
    }
    assert!(start.elapsed() < Duration::from_secs(1), "emit blocked: {:?}", start.elapsed());
    let accepted = accepted.load(Ordering::Relaxed) as u64;
    assert_eq!(accepted + em.dropped(), 2000);
    assert!(em.dropped() > 0);
    h.shutdown(Instant::now() + Duration::from_secs(10));
}

#[test]
fn post_log_script_posts_one_event_with_curl() {
    let server = Server::start("127.0.0.1:0");
    let out = std::process::Command::new("bash")
        .arg(crate::util::root().join("scripts/post-log.sh"))
        .args(["ALLOWED", "dns", "example.org", "[fd00::5]:5353", "10.0.0.53:53", "quote \" and \\ ok"])
        .env("DASHBOARD_HOST", server.addr.to_string()) // no scheme: http assumed
        .env("DASHBOARD_API_KEY", "k1")
        .output()
        .expect("run scripts/post-log.sh (needs bash and curl)");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let reqs = server.requests();
    assert_eq!(reqs.len(), 1);
    let r = &reqs[0];
    assert_eq!((r.method.as_str(), r.path.as_str()), ("POST", "/api/v1/logs"));
    assert_eq!((r.header("x-api-key"), r.header("authorization")), (Some("k1"), Some("Bearer k1")));
    let e: serde_json::Value = serde_json::from_slice(&r.body).expect("the script sends valid JSON");
    assert_eq!(e["msg"], "dns.allowed");
    assert_eq!(e["action"], "ALLOWED");
    assert_eq!(e["source_ip"], "fd00::5");
    assert_eq!(e["source_port"], 5353);
    assert_eq!(e["destination_port"], 53);
    assert_eq!(e["reason"], "quote \" and \\ ok");
    assert!(e["time"].as_str().unwrap().ends_with('Z'));
}

#[test]
fn shipper_and_gotify_sockets_carry_the_bypass_mark() {
    const MARK: u32 = 0x2a5;
    let dash = Server::start("127.0.0.1:0");
    let gotify = Server::start("127.0.0.1:0");
    gotify.status.store(200, Ordering::Relaxed);
    let client = ClientOptions { mark: Some(MARK), ..Default::default() };
    let (em, h) = spawn_with(SinkOptions {
        shipper: Some(ShipperOptions { client: client.clone(), ..shipper_to(&dash.url(), fast_batches(64)) }),
        alerts: Some(AlertOptions {
            targets: vec![Target::gotify_host(&gotify.url(), "gk")],
            backoff: Duration::from_secs(60),
            ignore_domains: vec![],
            client,
        }),
        ..options()
    })
    .unwrap();
    emit(&em, 0, Action::Blocked);
    wait_for(Duration::from_secs(10), "the event and the alert", || {
        !dash.requests().is_empty() && !gotify.requests().is_empty()
    });
    // Both connections stay pooled; the kernel shows their marks.
    for (what, port) in [("dashboard", dash.addr.port()), ("gotify", gotify.addr.port())] {
        let out = std::process::Command::new("ss")
            .args(["-tnie", "state", "established", "dport", "=", &format!(":{port}")])
            .output()
            .expect("run ss (iproute2)");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains(&format!("fwmark:{MARK:#x}")), "{what} socket without the mark:\n{text}");
    }
    h.shutdown(Instant::now() + Duration::from_secs(2));
}

/// A test CA and a leaf for 127.0.0.1 made with openssl (rustls refuses a
/// self-signed CA:TRUE certificate as a server certificate).
fn test_pki(dir: &Path) {
    let run = |args: &[&str]| {
        let out =
            std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("run openssl");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &["-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=egret test CA"],
    ]
    .concat());
    run(&[&["req"][..], &ec, &["-keyout", "leaf.key", "-out", "leaf.csr", "-subj", "/CN=127.0.0.1"]].concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "basicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "leaf.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "leaf.pem",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
    ]);
}

/// The recording server behind TLS (rustls, ring).
fn tls_server(dir: &Path) -> Server {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(dir.join("leaf.pem")).unwrap().collect::<Result<_, _>>().unwrap();
    let key = PrivateKeyDer::from_pem_file(dir.join("leaf.key")).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = Arc::new(
        rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .unwrap(),
    );
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    l.set_nonblocking(true).unwrap();
    let (reqs, status, stop): (Arc<Mutex<Vec<Req>>>, _, _) =
        (Arc::default(), Arc::new(AtomicU16::new(201)), Arc::new(AtomicBool::new(false)));
    let (r, s, st) = (reqs.clone(), status.clone(), stop.clone());
    let t = thread::spawn(move || {
        while !st.load(Ordering::Relaxed) {
            match l.accept() {
                Ok((c, _)) => {
                    c.set_nonblocking(false).unwrap();
                    c.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
                    let conn = rustls::ServerConnection::new(config.clone()).unwrap();
                    let (r, s, st) = (r.clone(), s.clone(), st.clone());
                    thread::spawn(move || serve_http(rustls::StreamOwned::new(conn, c), &r, &s, &st));
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Server { addr, reqs, status, stop, threads: vec![t] }
}

#[test]
fn https_dashboard_with_a_ca_file() {
    let dir = scratch("events-tls");
    test_pki(&dir);
    let server = tls_server(&dir);
    let url = format!("https://{}", server.addr);

    // Without the CA the certificate is unknown: kept and retried, not sent.
    let (em, h) =
        spawn_with(SinkOptions { shipper: Some(shipper_to(&url, fast_batches(64))), ..options() }).unwrap();
    emit(&em, 0, Action::Blocked);
    wait_counts(&h, Duration::from_secs(10), "a failed TLS attempt", |c| c.ship_retries >= 1);
    let c = h.counts();
    assert_eq!((c.shipped, c.ship_pending), (0, 1), "{c:?}");
    h.shutdown(Instant::now());

    // With DASHBOARD_CA_FILE it is trusted (next to the web PKI roots).
    let mut opts = shipper_to(&url, fast_batches(64));
    opts.client.ca_file = Some(dir.join("ca.pem"));
    let (em, h) = spawn_with(SinkOptions { shipper: Some(opts), ..options() }).unwrap();
    for i in 0..3 {
        emit(&em, i, Action::Blocked);
    }
    wait_for(Duration::from_secs(10), "3 events over TLS", || server.events().len() >= 3);
    assert_eq!(notes(&server.events()), [0, 1, 2]);
    assert_eq!(server.requests()[0].header("x-api-key"), Some("s3cret"));
    h.shutdown(Instant::now() + Duration::from_secs(2));
}

#[test]
fn shutdown_gives_up_at_its_deadline_when_the_dashboard_hangs() {
    // A dashboard that accepts connections and never answers.
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", l.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let h2 = held.clone();
    l.set_nonblocking(true).unwrap();
    thread::spawn(move || {
        let end = Instant::now() + Duration::from_secs(10);
        while Instant::now() < end {
            match l.accept() {
                Ok((c, _)) => h2.lock().unwrap().push(c),
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    let (em, h) =
        spawn_with(SinkOptions { shipper: Some(shipper_to(&url, fast_batches(64))), ..options() }).unwrap();
    for i in 0..5 {
        emit(&em, i, Action::Blocked);
    }
    // The first batch is in flight (its request timeout is 5 s).
    wait_for(Duration::from_secs(5), "a connection to the silent dashboard", || {
        !held.lock().unwrap().is_empty()
    });
    let start = Instant::now();
    let report = h.shutdown(start + Duration::from_millis(800));
    let took = start.elapsed();
    assert!(took < Duration::from_millis(2500), "shutdown hung for {took:?}");
    assert!(report.sink_finished);
    assert_eq!(report.unsent, 5, "the unanswered batch is reported unsent");
}

#[test]
fn gotify_failures_are_counted_not_retried_in_a_loop() {
    let server = Server::start("127.0.0.1:0");
    server.status.store(500, Ordering::Relaxed);
    let (em, h) = spawn_with(SinkOptions {
        alerts: Some(AlertOptions {
            targets: vec![Target::gotify_host(&server.url(), "gk")],
            backoff: Duration::ZERO, // every event alerts
            ignore_domains: vec![],
            client: ClientOptions::default(),
        }),
        ..options()
    })
    .unwrap();
    for i in 0..3 {
        emit(&em, i, Action::Blocked);
    }
    wait_counts(&h, Duration::from_secs(10), "3 failed alerts", |c| c.alerts_failed == 3);
    thread::sleep(Duration::from_millis(300));
    let c = h.counts();
    assert_eq!((c.alerts_sent, c.alerts_failed, c.alerts_dropped), (0, 3, 0), "{c:?}");
    h.shutdown(Instant::now() + Duration::from_secs(2));
}

/// Each alert target has its own bounded queue: a target that never
/// answers fills only its own (the excess dropped and counted) while
/// another keeps delivering.
#[test]
fn a_hung_alert_target_drops_into_its_own_queue_only() {
    let live = Server::start("127.0.0.1:0");
    live.status.store(200, Ordering::Relaxed);
    // Accepted by the kernel, never read: its worker waits out 15 s.
    let hung = TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_url = format!("http://{}", hung.local_addr().unwrap());
    let (em, h) = spawn_with(SinkOptions {
        alerts: Some(AlertOptions {
            targets: vec![Target::gotify_host(&hung_url, "hk"), Target::gotify_host(&live.url(), "lk")],
            backoff: Duration::ZERO, // every event alerts
            ignore_domains: vec![],
            client: ClientOptions::default(),
        }),
        ..options()
    })
    .unwrap();
    const N: u64 = 100;
    for i in 0..N {
        emit(&em, i as usize, Action::Blocked);
    }
    // The hung lane: one in flight, QUEUE (64) waiting, the rest dropped.
    // The live lane: every alert sent or (if it fell behind) dropped.
    wait_counts(&h, Duration::from_secs(8), "the live target's alerts settled", |c| {
        c.alerts_sent + c.alerts_dropped >= 2 * N - 65
    });
    let c = h.counts();
    let received = live.requests().len() as u64;
    assert!(received >= 1 && received == c.alerts_sent, "{c:?}, received {received}");
    assert!(
        [2 * N - 65, 2 * N - 64].contains(&(c.alerts_sent + c.alerts_dropped)),
        "sent + dropped over both lanes: {c:?}"
    );
    assert!(c.alerts_dropped >= N - 65, "the hung lane's excess is counted: {c:?}");
    assert!(live.requests().iter().all(|r| r.header("x-gotify-key") == Some("lk")));
    h.shutdown(Instant::now() + Duration::from_secs(2));
    drop(hung);
}
