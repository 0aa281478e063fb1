//! The dashboard's SQLite store through the real `egret dashboard` binary:
//! restarts (SIGTERM and SIGKILL) under ingest lose nothing answered 201,
//! ids continue and an SSE client resumes with exactly what it missed; a
//! kill -9 during a batch leaves the whole batch or none of it; a corrupt
//! or unwritable file is a start-up error; a full disk answers 503 and
//! keeps what is stored.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::dashboard::{send, Sse, KEY};
use crate::netns::Guard;
use crate::util::{egret, run, scratch};

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Starts `egret dashboard` on `port` with `env`, and waits until it listens.
fn start(port: u16, env: &[(&str, &str)]) -> Guard {
    let mut c = egret();
    c.arg("dashboard").env("API_KEY", KEY).env("PORT", format!("127.0.0.1:{port}"));
    c.env("READ_LIMIT", "1000000").env("LOG_LEVEL", "warn");
    for (k, v) in env {
        c.env(k, v);
    }
    c.stdout(Stdio::null()).stderr(Stdio::null());
    let child = Guard::of(c.spawn().expect("spawn egret dashboard"));
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    while TcpStream::connect(addr).is_err() {
        assert!(Instant::now() < deadline, "egret dashboard did not listen on {addr}");
        std::thread::sleep(Duration::from_millis(20));
    }
    child
}

fn kill(mut d: Guard, signal: nix::sys::signal::Signal) {
    let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
    nix::sys::signal::kill(pid, signal).expect("signal the dashboard");
    let deadline = Instant::now() + Duration::from_secs(20);
    while d.child.try_wait().expect("wait").is_none() {
        assert!(Instant::now() < deadline, "the dashboard did not exit on {signal}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A POST that reports failure instead of panicking (the server may die
/// under it). Returns the status and the JSON body.
fn try_post(addr: SocketAddr, body: &[u8]) -> Option<(u16, Value)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(20))).ok()?;
    let head = format!(
        "POST /api/v1/logs HTTP/1.1\r\nHost: t\r\nX-Api-Key: {KEY}\r\nContent-Type: application/json\r\n\
         Connection: close\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).ok()?;
    s.write_all(body).ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, serde_json::from_str(body).ok()?))
}

fn batch(tag: &str, n: usize, pad: usize) -> Vec<u8> {
    let events: Vec<Value> = (0..n)
        .map(|i| {
            json!({"msg": format!("{tag}/{i}"), "action": "BLOCKED", "component": "https",
                   "https": "store.example", "hostname": "pod-s", "note": "x".repeat(pad)})
        })
        .collect();
    Value::Array(events).to_string().into_bytes()
}

/// Every stored entry, oldest first: (id, msg).
fn all(addr: SocketAddr) -> Vec<(u64, String)> {
    let r = send(addr, "GET", "/api/v1/logs?limit=1000000", &[("X-Api-Key", KEY)], b"");
    assert_eq!(r.status, 200, "{}", r.body);
    let body = if r.header("Transfer-Encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        dechunk(&r.body)
    } else {
        r.body.clone()
    };
    let list: Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET /api/v1/logs: not JSON ({e})"));
    let mut v: Vec<(u64, String)> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["id"].as_u64().unwrap(), e["msg"].as_str().unwrap().to_owned()))
        .collect();
    v.reverse();
    v
}

/// A chunked body's data (tiny_http chunks large answers).
fn dechunk(mut s: &str) -> String {
    let mut out = String::new();
    loop {
        let (size, rest) = s.split_once("\r\n").expect("chunk size line");
        let n = usize::from_str_radix(size.trim(), 16).expect("hex chunk size");
        if n == 0 {
            return out;
        }
        out.push_str(&rest[..n]);
        s = &rest[n + 2..];
    }
}

/// Restart under ingest, twice (a clean SIGTERM, then SIGKILL): every
/// entry answered 201 is there with its id, ids continue without a gap
/// or a reuse, and an SSE client that reconnects with `Last-Event-ID`
/// gets exactly the entries after it, in order.
#[test]
fn restarts_under_ingest_lose_nothing_acknowledged() {
    let dir = scratch("storage-restart");
    let db = dir.join("egret.db");
    let dbs = db.to_string_lossy().into_owned();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let env = [("DB_PATH", dbs.as_str())];
    let mut d = start(port, &env);

    // The agent: posts batches of 20 until told to stop, retrying a batch
    // until it is answered 201 (as the shipper does).
    let stop = Arc::new(AtomicBool::new(false));
    // In the order they were answered (one agent thread).
    let acked: Arc<Mutex<Vec<(u64, String)>>> = Arc::default();
    let agent = {
        let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && Instant::now() < deadline {
                let tag = format!("b{n}");
                let body = batch(&tag, 20, 40);
                match try_post(addr, &body) {
                    Some((201, v)) => {
                        let mut a = acked.lock().unwrap();
                        for (i, r) in v["results"].as_array().unwrap().iter().enumerate() {
                            a.push((r["id"].as_u64().unwrap(), format!("{tag}/{i}")));
                        }
                        n += 1;
                    }
                    _ => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        })
    };
    let wait_acked = |min: usize| {
        let deadline = Instant::now() + Duration::from_secs(60);
        while acked.lock().unwrap().len() < min {
            assert!(Instant::now() < deadline, "the agent got no 201s");
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    wait_acked(200);
    // A live stream reads a few entries, then loses its server.
    let (mut sse, r) = Sse::open(addr, "/api/v1/events", None);
    assert_eq!(r.status, 200);
    let mut seen = 0;
    for _ in 0..30 {
        seen = sse.event().0.expect("an id");
    }
    drop(sse);
    let before_first = acked.lock().unwrap().last().unwrap().0;

    kill(d, nix::sys::signal::Signal::SIGTERM);
    d = start(port, &env);
    let n = acked.lock().unwrap().len();
    wait_acked(n + 200);
    kill(d, nix::sys::signal::Signal::SIGKILL);
    d = start(port, &env);
    let n = acked.lock().unwrap().len();
    wait_acked(n + 200);
    stop.store(true, Ordering::Relaxed);
    agent.join().unwrap();

    let stored = all(addr);
    let acked = acked.lock().unwrap().clone();
    let by_id: BTreeMap<u64, String> = stored.iter().cloned().collect();
    for (id, msg) in &acked {
        assert_eq!(by_id.get(id), Some(msg), "entry {id} was answered 201 and is gone or changed");
    }
    for w in acked.windows(2) {
        assert!(w[1].0 > w[0].0, "id {} answered after id {}: ids went back (reused)", w[1].0, w[0].0);
    }
    let ids: Vec<u64> = stored.iter().map(|e| e.0).collect();
    assert_eq!(
        ids,
        (1..=ids.len() as u64).collect::<Vec<_>>(),
        "ids continue across restarts, no gap, no reuse"
    );
    assert!(acked.iter().any(|(id, _)| *id > before_first), "ids after the restarts continue upwards");

    // The stream resumes where it was cut: exactly the entries after it.
    let (mut sse, r) = Sse::open(addr, "/api/v1/events", Some(seen));
    assert_eq!(r.status, 200);
    let want: Vec<u64> = ids.iter().copied().filter(|id| *id > seen).collect();
    let mut got = Vec::new();
    while got.len() < want.len() {
        let (id, data) = sse.event();
        let id = id.expect("an id");
        assert_eq!(data["id"].as_u64(), Some(id));
        assert_eq!(Some(&data["msg"].as_str().unwrap().to_owned()), by_id.get(&id));
        got.push(id);
    }
    assert_eq!(got, want, "replay after Last-Event-ID {seen}");
    // And nothing more (no duplicate): the next thing is a live entry.
    let r = try_post(addr, &batch("live", 1, 0)).expect("post");
    assert_eq!(r.0, 201);
    let (id, data) = sse.event();
    assert_eq!((id, data["msg"].as_str()), (Some(ids.len() as u64 + 1), Some("live/0")));
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `kill -9` while large batches are being written: after each kill the
/// database passes `integrity_check`, every batch is either complete or
/// absent, every batch answered 201 is complete, and the dashboard starts
/// again on the file with ids continuing.
#[test]
fn kill_9_during_a_batch_leaves_all_of_it_or_none() {
    const N: usize = 1000;
    let dir = scratch("storage-kill9");
    let db = dir.join("egret.db");
    let dbs = db.to_string_lossy().into_owned();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let env = [("DB_PATH", dbs.as_str())];
    let mut acked = Vec::new();
    let (mut absent, mut complete) = (0, 0);
    for round in 0..8u64 {
        let d = start(port, &env);
        // One batch goes through first, so the kill below lands on a
        // database that has data and an open WAL.
        let tag = format!("r{round}-ok");
        let r = try_post(addr, &batch(&tag, N, 300)).expect("post");
        assert_eq!(r.0, 201, "{:?}", r.1);
        acked.push(tag);
        let tag = format!("r{round}-cut");
        let body = batch(&tag, N, 300);
        let poster = std::thread::spawn(move || try_post(addr, &body));
        // Sweep the kill point over the batch's life (parse, insert, commit).
        std::thread::sleep(Duration::from_millis(20 + 35 * round));
        kill(d, nix::sys::signal::Signal::SIGKILL);
        if let Some((201, _)) = poster.join().unwrap() {
            acked.push(tag);
        }
        let counts = batch_counts(&db);
        for (tag, n) in &counts {
            assert_eq!(*n, N, "batch {tag} is partly stored after kill -9 in round {round}");
        }
        for tag in &acked {
            assert!(counts.contains_key(tag), "batch {tag} was answered 201 and is gone (round {round})");
        }
        if counts.contains_key(&format!("r{round}-cut")) {
            complete += 1;
        } else {
            absent += 1;
        }
    }
    eprintln!("kill -9 rounds: cut batch complete {complete}, absent {absent}");
    // It opens cleanly and goes on numbering after the last stored id.
    let d = start(port, &env);
    let stored = all(addr);
    let last = stored.last().unwrap().0;
    let r = try_post(addr, &batch("after", 1, 0)).expect("post");
    assert_eq!(r.0, 201);
    assert!(r.1["results"][0]["id"].as_u64().unwrap() > last);
    drop(d);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens the file as any SQLite client would (with its WAL), checks it,
/// and counts the entries of each batch by the tag in their msg.
fn batch_counts(db: &Path) -> BTreeMap<String, usize> {
    let c = rusqlite::Connection::open(db).expect("the database opens after kill -9");
    let check: String = c.query_row("PRAGMA integrity_check", [], |r| r.get(0)).expect("integrity_check");
    assert_eq!(check, "ok");
    let mut st = c.prepare("SELECT json FROM events").unwrap();
    let mut counts = BTreeMap::new();
    for j in st.query_map([], |r| r.get::<_, String>(0)).unwrap() {
        let v: Value = serde_json::from_str(&j.unwrap()).unwrap();
        let tag = v["msg"].as_str().unwrap().split('/').next().unwrap().to_owned();
        *counts.entry(tag).or_insert(0) += 1;
    }
    counts
}

/// A mounted tmpfs, unmounted however the test ends.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn new(dir: &Path, opts: &str) -> Tmpfs {
        std::fs::create_dir_all(dir).unwrap();
        let st = Command::new("mount").args(["-t", "tmpfs", "-o", opts, "tmpfs"]).arg(dir).status();
        assert!(st.expect("run mount").success(), "mount tmpfs on {} (the test needs root)", dir.display());
        Tmpfs(dir.to_owned())
    }

    fn remount(&self, opts: &str) {
        let st = Command::new("mount").args(["-o", &format!("remount,{opts}")]).arg(&self.0).status();
        assert!(st.expect("run mount").success(), "remount {} {opts}", self.0.display());
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// A file that is not a database, a directory, a missing parent that
/// cannot be created, and a read-only file system: each stops the start
/// with exit code 1 and a message that names the file and the reason;
/// the foreign file is left as it was.
#[test]
fn an_unusable_database_file_is_a_start_up_error() {
    let dir = scratch("storage-unusable");
    let garbage = dir.join("garbage.db");
    std::fs::write(&garbage, b"this is no database, but somebody's data\n".repeat(200)).unwrap();
    let ro = Tmpfs::new(&dir.join("ro"), "size=4m");
    {
        let c = rusqlite::Connection::open(dir.join("ro/egret.db")).unwrap();
        c.execute_batch("CREATE TABLE t (x); INSERT INTO t VALUES (1);").unwrap();
    }
    ro.remount("ro");
    let cases: Vec<(PathBuf, &str)> = vec![
        (garbage.clone(), "not a usable SQLite database"),
        (dir.clone(), "is a directory"),
        (PathBuf::from("/proc/egret-none/egret.db"), "cannot open"),
        (dir.join("ro/egret.db"), "cannot write"),
        (dir.join("ro/new.db"), "cannot open"),
    ];
    for (path, want) in cases {
        let mut c = egret();
        c.arg("dashboard").env("API_KEY", KEY).env("PORT", format!("127.0.0.1:{}", free_port()));
        c.env("DB_PATH", &path);
        let (code, _, err) = run(c);
        assert_eq!(code, 1, "{}: {err}", path.display());
        assert!(err.contains(want) && err.contains(&*path.to_string_lossy()), "{}: {err}", path.display());
    }
    assert_eq!(std::fs::read(&garbage).unwrap(), b"this is no database, but somebody's data\n".repeat(200));
    drop(ro);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A full disk: ingest answers 503 (nothing of the batch stored), /health
/// says so, everything stored before is still served; with space again,
/// ingest resumes and ids continue.
#[test]
fn a_full_disk_stops_ingest_with_503_and_keeps_what_is_stored() {
    let dir = scratch("storage-full");
    let fs = Tmpfs::new(&dir.join("small"), "size=3m");
    let db = dir.join("small/egret.db");
    let dbs = db.to_string_lossy().into_owned();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let d = start(port, &[("DB_PATH", dbs.as_str())]);
    let mut acked = BTreeMap::new();
    let mut refused = None;
    for n in 0..500 {
        let tag = format!("f{n}");
        let (status, v) = try_post(addr, &batch(&tag, 50, 200)).expect("post");
        match status {
            201 => {
                for (i, r) in v["results"].as_array().unwrap().iter().enumerate() {
                    acked.insert(r["id"].as_u64().unwrap(), format!("{tag}/{i}"));
                }
            }
            503 => {
                refused = Some((tag, v));
                break;
            }
            s => panic!("unexpected {s}: {v}"),
        }
    }
    let (tag, v) = refused.expect("a 3 MiB file system never filled up");
    assert_eq!(v, json!({"error": "storage full"}));
    let h = send(addr, "GET", "/health", &[], b"");
    assert_eq!(
        (h.status, h.json()["status"].clone(), h.json()["storage"].clone()),
        (503, json!("degraded"), json!("full"))
    );
    let stored: BTreeMap<u64, String> = all(addr).into_iter().collect();
    assert_eq!(stored, acked, "exactly the acknowledged entries are kept");
    assert!(!stored.values().any(|m| m.starts_with(&format!("{tag}/"))), "nothing of the refused batch");
    // Space again: the same batch goes in, ids continue.
    fs.remount("size=64m");
    let (status, v) = try_post(addr, &batch(&tag, 50, 200)).expect("post");
    assert_eq!(status, 201, "{v}");
    assert_eq!(v["results"][0]["id"].as_u64(), Some(*acked.keys().last().unwrap() + 1));
    let h = send(addr, "GET", "/health", &[], b"");
    assert_eq!((h.status, h.json()["storage"].clone()), (200, json!("sqlite")));
    drop(d);
    drop(fs);
    let _ = std::fs::remove_dir_all(&dir);
}
