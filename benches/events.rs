//! Throughput of the event pipeline: events per second through the sink
//! thread to `LOG_FILE`, and through the dashboard shipper to a local HTTP
//! receiver on 127.0.0.1, each compared with a baseline measured in the same
//! run (serialise + buffered write in one thread, no channel, no thread
//! hop). Run: `cargo bench --bench events`.

use std::hint::black_box;
use std::io::{BufWriter, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use egret::events::batch::BatchConfig;
use egret::events::net::ClientOptions;
use egret::events::shipper::ShipperOptions;
use egret::events::sink::{spawn_with, LogFileOptions, SinkOptions};
use egret::events::{Action, Component, Emitter, Event};

fn event(em_host: &str, i: usize) -> Event {
    let mut ev = Event::new(Component::Https, Action::Blocked, em_host, std::time::SystemTime::now())
        .with_flow("10.0.0.5:40000".parse().unwrap(), "93.184.215.14:443".parse().unwrap(), "TCP")
        .with_reason("domain-not-allowed");
    ev.https = Some("blocked.example.com".into());
    ev.note = Some(i.to_string());
    ev
}

fn options() -> SinkOptions {
    SinkOptions {
        hostname: "bench".into(),
        channel_capacity: 1 << 20,
        stdout: None,
        log_file: None,
        shipper: None,
        alerts: None,
        syslog: None,
        learning: None,
    }
}

fn emit_all(em: &Emitter, n: usize) {
    for i in 0..n {
        assert!(em.emit(event("bench", i)), "the channel is sized not to drop");
    }
}

fn scratch() -> PathBuf {
    let d = std::env::temp_dir().join(format!("egret-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Serialise and append with a buffered writer, all in one thread.
fn baseline_file(path: &Path, n: usize) -> f64 {
    let t = Instant::now();
    let mut w = BufWriter::with_capacity(64 * 1024, std::fs::File::create(path).unwrap());
    for i in 0..n {
        let line = event("bench", i).to_json();
        w.write_all(line.as_bytes()).unwrap();
        w.write_all(b"\n").unwrap();
    }
    w.flush().unwrap();
    black_box(&w);
    n as f64 / t.elapsed().as_secs_f64()
}

fn sink_to_file(path: &Path, n: usize) -> f64 {
    let (em, h) = spawn_with(SinkOptions {
        log_file: Some(LogFileOptions { path: path.into(), max_size: 0, keep: 1 }),
        ..options()
    })
    .unwrap();
    let t = Instant::now();
    emit_all(&em, n);
    let report = h.shutdown(Instant::now() + Duration::from_secs(120));
    assert!(report.sink_finished);
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let lines = std::fs::read_to_string(path).unwrap().lines().count();
    assert_eq!(lines, n, "every event in the file");
    rate
}

/// A keep-alive HTTP receiver that answers 201 to every POST.
fn receiver() -> String {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    thread::spawn(move || {
        for c in l.incoming().flatten() {
            thread::spawn(move || serve(c));
        }
    });
    format!("http://{addr}")
}

fn serve(mut c: TcpStream) {
    let mut buf: Vec<u8> = Vec::with_capacity(1 << 20);
    let mut chunk = vec![0u8; 256 * 1024];
    loop {
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut req = httparse::Request::new(&mut headers);
        if let Ok(httparse::Status::Complete(head)) = req.parse(&buf) {
            let len: usize = req
                .headers
                .iter()
                .find(|h| h.name.eq_ignore_ascii_case("content-length"))
                .and_then(|h| std::str::from_utf8(h.value).ok()?.parse().ok())
                .unwrap_or(0);
            if buf.len() >= head + len {
                buf.drain(..head + len);
                let body = r#"{"created":1}"#;
                let resp = format!("HTTP/1.1 201 Created\r\nContent-Length: {}\r\n\r\n{body}", body.len());
                if c.write_all(resp.as_bytes()).is_err() {
                    return;
                }
                continue;
            }
        }
        match c.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// One thread POSTing pre-serialised batches straight with ureq.
fn baseline_http(url: &str, n: usize, batch: usize) -> f64 {
    let agent = egret::events::net::agent(&ClientOptions::default()).unwrap();
    let url = format!("{url}/api/v1/logs");
    let t = Instant::now();
    let mut sent = 0;
    while sent < n {
        let k = batch.min(n - sent);
        let items: Vec<String> = (sent..sent + k).map(|i| event("bench", i).to_json()).collect();
        let body = egret::events::shipper::json_array(&items);
        let resp = agent.post(&url).header("Content-Type", "application/json").send(&body[..]).unwrap();
        assert_eq!(resp.status().as_u16(), 201);
        sent += k;
    }
    n as f64 / t.elapsed().as_secs_f64()
}

fn sink_to_http(url: &str, n: usize, max_batch: usize) -> f64 {
    let batch = BatchConfig { max_batch, queue_size: n, start_delay: Duration::ZERO, ..Default::default() };
    let (em, h) = spawn_with(SinkOptions {
        shipper: Some(ShipperOptions {
            host: url.into(),
            api_key: Some("k".into()),
            batch,
            client: ClientOptions::default(),
        }),
        ..options()
    })
    .unwrap();
    let t = Instant::now();
    emit_all(&em, n);
    let end = Instant::now() + Duration::from_secs(120);
    while h.counts().shipped < n as u64 {
        assert!(Instant::now() < end, "shipping stalled: {:?}", h.counts());
        thread::sleep(Duration::from_millis(1));
    }
    let rate = n as f64 / t.elapsed().as_secs_f64();
    let c = h.counts();
    assert_eq!((c.ship_dropped, c.ship_rejected), (0, 0));
    h.shutdown(Instant::now() + Duration::from_secs(5));
    rate
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

fn main() {
    const ROUNDS: usize = 5;
    let dir = scratch();
    let n_file = 200_000;
    let base_file = median((0..ROUNDS).map(|r| baseline_file(&dir.join(format!("b{r}")), n_file)).collect());
    let sink_file = median((0..ROUNDS).map(|r| sink_to_file(&dir.join(format!("s{r}")), n_file)).collect());
    println!("LOG_FILE, baseline (one thread, serialise + write):  {base_file:>10.0} events/s");
    println!("LOG_FILE, through emit -> sink thread:                {sink_file:>10.0} events/s");
    println!("ratio sink/baseline:                                  {:>10.2}", sink_file / base_file);

    let url = receiver();
    let n_http = 100_000;
    for max_batch in [100, 500] {
        let base = median((0..ROUNDS).map(|_| baseline_http(&url, n_http, max_batch)).collect());
        let ship = median((0..ROUNDS).map(|_| sink_to_http(&url, n_http, max_batch)).collect());
        println!("HTTP batches of {max_batch:>3}, baseline (one thread, ureq POST): {base:>10.0} events/s");
        println!("HTTP batches of {max_batch:>3}, through emit -> sink -> shipper:  {ship:>10.0} events/s");
        println!("ratio shipper/baseline:                               {:>10.2}", ship / base);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
