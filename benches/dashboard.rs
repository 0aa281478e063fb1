//! Dashboard throughput over loopback: ingest events/s with batched POSTs
//! (baseline: one event per POST, as g0efilter ships), and SSE fan-out to
//! 50 clients (baseline: one client), and `GET /api/v1/aggregates`
//! latency with 1,000,000 stored events (baseline: 10,000 stored).
//! Issue 19's figures too: ingest into a SQLite file at 100 events per
//! POST (baseline: the same into memory), `GET /api/v1/logs` (newest and
//! searched) beside the aggregates at 1,000,000 stored, and the database
//! size per million events as the dashboard stores them.
//! `cargo bench --bench dashboard`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use egret::config::DashboardConfig;
use egret::dashboard::{self, Options};

const KEY: &str = "bench";

fn cfg() -> DashboardConfig {
    DashboardConfig {
        log_level: log::LevelFilter::Warn,
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key: KEY.into(),
        buffer_size: 50_000,
        read_limit: 500,
        sse_retry_ms: 2000,
        write_timeout: Duration::ZERO,
        rate_rps: 1e9,
        rate_burst: 1_000_000,
        trusted_proxies: Vec::new(),
        db_path: None,
        retention: egret::dashboard::store::Retention { max_age: None, max_rows: Some(50_000) },
        auth_mode: egret::dashboard::auth::Mode::None,
        public_reads: false,
        users: Vec::new(),
        forward_header: "Remote-User".into(),
        session_ttl: Duration::from_secs(3600),
        warnings: Vec::new(),
    }
}

fn event(i: usize) -> String {
    format!(
        r#"{{"time":"2026-11-21T20:58:33.123456789Z","msg":"https.blocked","action":"BLOCKED","component":"https","hostname":"pod-a","version":"0.1.0","source_ip":"10.200.0.2","source_port":{},"destination_ip":"93.184.216.34","destination_port":443,"https":"host{}.example","reason":"not-allowed","flow_id":"a1b2c3d4"}}"#,
        40000 + i % 20000,
        i % 1000
    )
}

/// POSTs `body` on a kept-alive connection; returns the status.
fn post(s: &mut BufReader<TcpStream>, body: &str) -> u16 {
    let req = format!(
        "POST /api/v1/logs HTTP/1.1\r\nHost: b\r\nX-Api-Key: {KEY}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    s.get_mut().write_all(req.as_bytes()).unwrap();
    let mut status = 0;
    let mut len = 0usize;
    loop {
        let mut line = String::new();
        s.read_line(&mut line).unwrap();
        if line == "\r\n" {
            break;
        }
        if line.starts_with("HTTP/") {
            status = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
    }
    let mut body = vec![0; len];
    s.read_exact(&mut body).unwrap();
    status
}

/// Events per second with `clients` connections posting `batch` events per request.
fn ingest(batch: usize, clients: usize, per_client: usize) -> f64 {
    ingest_into(None, batch, clients, per_client)
}

/// [`ingest`] into `db` (a SQLite file; `None`: memory).
fn ingest_into(db: Option<&std::path::Path>, batch: usize, clients: usize, per_client: usize) -> f64 {
    let c = DashboardConfig {
        db_path: db.map(std::path::Path::to_owned),
        retention: egret::dashboard::store::Retention { max_age: None, max_rows: None },
        ..cfg()
    };
    let h = dashboard::start(c, Options::default()).unwrap();
    let addr = h.addr();
    let body: String = if batch == 1 {
        event(0)
    } else {
        format!("[{}]", (0..batch).map(event).collect::<Vec<_>>().join(","))
    };
    let body = Arc::new(body);
    let barrier = Arc::new(Barrier::new(clients + 1));
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let (body, barrier) = (Arc::clone(&body), Arc::clone(&barrier));
            std::thread::spawn(move || {
                let c = TcpStream::connect(addr).unwrap();
                c.set_nodelay(true).unwrap(); // as Go's HTTP client (g0efilter's shipper) does
                let mut s = BufReader::new(c);
                barrier.wait();
                for _ in 0..per_client / batch {
                    assert_eq!(post(&mut s, &body), 201);
                }
            })
        })
        .collect();
    barrier.wait();
    let t = Instant::now();
    for t in threads {
        t.join().unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    h.stop();
    (clients * per_client) as f64 / secs
}

/// Deliveries per second (events × clients) and the time until the last
/// client had the last event.
fn fanout(clients: usize, events: usize) -> (f64, Duration) {
    let h = dashboard::start(cfg(), Options { max_streams: 1000, ..Options::default() }).unwrap();
    let addr = h.addr();
    let ready = Arc::new(Barrier::new(clients + 1));
    let readers: Vec<_> = (0..clients)
        .map(|_| {
            let ready = Arc::clone(&ready);
            std::thread::spawn(move || {
                let mut s = TcpStream::connect(addr).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
                s.write_all(
                    format!("GET /api/v1/events HTTP/1.1\r\nHost: b\r\nX-Api-Key: {KEY}\r\n\r\n").as_bytes(),
                )
                .unwrap();
                let mut r = BufReader::with_capacity(1 << 16, s);
                let mut line = String::new();
                // Head and preamble ("retry:" line, comment).
                while !line.starts_with("retry:") {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                }
                ready.wait();
                let mut got = 0;
                let want = format!("id: {events}\n");
                while line != want {
                    line.clear();
                    r.read_line(&mut line).unwrap();
                    if line.starts_with("id: ") {
                        got += 1;
                    }
                }
                assert_eq!(got, events, "every event reached every client");
                Instant::now()
            })
        })
        .collect();
    ready.wait();
    let c = TcpStream::connect(addr).unwrap();
    c.set_nodelay(true).unwrap();
    let mut s = BufReader::new(c);
    let t = Instant::now();
    let batch = 100;
    let body = format!("[{}]", (0..batch).map(event).collect::<Vec<_>>().join(","));
    for _ in 0..events / batch {
        assert_eq!(post(&mut s, &body), 201);
    }
    let last = readers.into_iter().map(|r| r.join().unwrap()).max().unwrap();
    let took = last - t;
    h.stop();
    ((clients * events) as f64 / took.as_secs_f64(), took)
}

/// A SQLite file of `n` events spread over the last two hours (half in a
/// one-hour window), written straight through `Db` (ingest is measured
/// above).
fn filled_db(n: usize) -> std::path::PathBuf {
    use egret::dashboard::{db::Db, store::Row};
    let dir = std::env::temp_dir().join(format!("egret-bench-agg-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("events.db");
    let unlimited = egret::dashboard::store::Retention { max_age: None, max_rows: None };
    let db = Db::open(Some(&path), unlimited).unwrap();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64;
    let span = 7_200_000_000_000i64;
    let mut done = 0;
    while done < n {
        let k = (n - done).min(10_000);
        db.insert(k, |i, id| {
            let j = done + i;
            let action = ["ALLOWED", "BLOCKED", "BLOCKED", "AUDIT"][j % 4];
            Row {
                id,
                ts: now - (j as i64 * 7919 % 1_000_000) * (span / 1_000_000),
                action: action.into(),
                component: Some("https".into()),
                agent: format!("edge-{}", j % 50),
                source: Some(format!("10.0.{}.{}", j % 7, j % 200)),
                destination: Some(format!("host{}.example", j % 1000)),
                reason: Some(if action == "ALLOWED" { "allowed" } else { "not-allowed" }.into()),
                json: format!("{{\"id\":{id},\"action\":\"{action}\"}}"),
                haystack: String::new(),
            }
        })
        .unwrap();
        done += k;
    }
    path
}

/// Bytes per million events as the dashboard stores them (file plus WAL,
/// after a checkpoint): `n` real events normalised as ingest does.
fn size_per_million(n: usize) -> f64 {
    use egret::dashboard::{db::Db, store};
    let dir = std::env::temp_dir().join(format!("egret-bench-size-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let path = dir.join("events.db");
    let unlimited = store::Retention { max_age: None, max_rows: None };
    let db = Db::open(Some(&path), unlimited).unwrap();
    let ctx = store::IngestContext { now_unix_nanos: 1, remote_ip: "10.200.0.2:40000".into() };
    let mut done = 0;
    while done < n {
        let k = (n - done).min(10_000);
        db.insert(k, |i, id| {
            let v: serde_json::Value = serde_json::from_str(&event(done + i)).unwrap();
            let rec = store::normalize(v.as_object().unwrap(), &ctx).unwrap();
            store::Row::new(rec, id, Some("edge-1"))
        })
        .unwrap();
        done += k;
    }
    drop(db);
    let c = rusqlite::Connection::open(&path).unwrap();
    c.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())).unwrap();
    drop(c);
    let bytes: u64 = std::fs::read_dir(&dir).unwrap().flatten().map(|e| e.metadata().unwrap().len()).sum();
    let _ = std::fs::remove_dir_all(&dir);
    bytes as f64 * 1_000_000.0 / n as f64
}

/// Median latency of `GET path` (kept-alive connection, 7 runs).
fn get_median(addr: std::net::SocketAddr, path: &str) -> Duration {
    let mut s = BufReader::new(TcpStream::connect(addr).unwrap());
    let mut times = Vec::new();
    for _ in 0..7 {
        let t = Instant::now();
        let req = format!("GET {path} HTTP/1.1\r\nHost: b\r\nX-Api-Key: {KEY}\r\n\r\n");
        s.get_mut().write_all(req.as_bytes()).unwrap();
        let mut len = 0usize;
        let mut status = String::new();
        loop {
            let mut line = String::new();
            s.read_line(&mut line).unwrap();
            if status.is_empty() {
                status = line.clone();
            }
            if line == "\r\n" {
                break;
            }
            if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                len = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; len];
        s.read_exact(&mut body).unwrap();
        assert!(status.contains(" 200 "), "{path}: {status}");
        times.push(t.elapsed());
    }
    times.sort();
    times[times.len() / 2]
}

fn aggregates(stored: usize) -> Vec<(&'static str, Duration)> {
    let path = filled_db(stored);
    let h = dashboard::start(DashboardConfig { db_path: Some(path.clone()), ..cfg() }, Options::default())
        .unwrap();
    let a = h.addr();
    let out = [
        ("window=1h&by=destination", "/api/v1/aggregates?window=1h&by=destination"),
        (
            "window=1h&by=destination&action=blocked",
            "/api/v1/aggregates?window=1h&by=destination&action=blocked",
        ),
        ("window=1h&by=minute", "/api/v1/aggregates?window=1h&by=minute"),
        ("window=1h&by=source&agent=edge-7", "/api/v1/aggregates?window=1h&by=source&agent=edge-7"),
        ("window=24h&by=agent", "/api/v1/aggregates?window=24h&by=agent"),
        ("GET /api/v1/logs (500 newest)", "/api/v1/logs"),
        ("GET /api/v1/logs?q=host7.example (search)", "/api/v1/logs?q=host7.example&limit=100"),
    ]
    .into_iter()
    .map(|(name, p)| (name, get_median(a, p)))
    .collect();
    h.stop();
    let _ = std::fs::remove_dir_all(path.parent().unwrap());
    out
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --all-targets` runs this
    // too, without it, and then a small smoke run is enough.
    let full = std::env::args().any(|a| a == "--bench");
    let scale = if full { 1 } else { 20 };
    // Warm up (threads, allocator).
    ingest(100, 2, 2_000 / scale);
    let single = ingest(1, 4, 5_000 / scale);
    let batched = ingest(100, 4, 50_000 / scale);
    println!("ingest, 1 event per POST, 4 connections:     {single:>10.0} events/s (baseline)");
    println!(
        "ingest, 100 events per POST, 4 connections:  {batched:>10.0} events/s ({:.1}x baseline)",
        batched / single
    );
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let dir = std::env::temp_dir().join(format!("egret-bench-ingest-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mem = ingest_into(None, 100, 4, 50_000 / scale);
    let file = ingest_into(Some(&dir.join("events.db")), 100, 4, 50_000 / scale);
    let _ = std::fs::remove_dir_all(&dir);
    println!("ingest into memory, 100 events per POST:     {mem:>10.0} events/s (baseline; load average before: {})", load.trim());
    println!(
        "ingest into SQLite (DB_PATH, synchronous=FULL), 100 per POST: {file:>10.0} events/s ({:.2}x baseline)",
        file / mem
    );
    let n = 1_000_000 / scale;
    let per_m = size_per_million(n);
    println!(
        "database size: {:.0} MiB per million events ({:.0} bytes an event; {n} stored)",
        per_m / (1 << 20) as f64,
        per_m / 1e6
    );
    let events = 20_000 / scale;
    let (one, t1) = fanout(1, events);
    let (fifty, t50) = fanout(50, events);
    println!("SSE fan-out, {events} events to 1 client:    {one:>10.0} deliveries/s ({t1:.2?} to the last event; baseline)");
    println!(
        "SSE fan-out, {events} events to 50 clients:  {fifty:>10.0} deliveries/s ({t50:.2?} to the last event; {:.1}x baseline deliveries/s)",
        fifty / one
    );
    let big = 1_000_000 / scale;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!("aggregates (median of 7; load average before: {})", load.trim());
    let small = aggregates(10_000);
    let large = aggregates(big);
    for ((name, t_small), (_, t_large)) in small.iter().zip(&large) {
        println!(
            "  {name:<42} 10,000 stored: {t_small:>9.2?}   {big} stored: {t_large:>9.2?} ({:.1}x)",
            t_large.as_secs_f64() / t_small.as_secs_f64()
        );
    }
}
