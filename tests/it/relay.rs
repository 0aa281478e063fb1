//! Relay mode (docker-whitelist's job) in real namespaces: an "internal"
//! namespace with no route out, the relay namespace on both sides, and
//! an upstream namespace with the test servers (threads of this process
//! that entered it). The relay is the real `egret` binary.
//!
//! Addresses (private test ranges only), N per test:
//! * internal: 10.201.N.1/24, fd00:201:N::1/64 (no default route)
//! * relay:    10.201.N.2 + fd00:201:N::2 (inside), 10.202.N.1 + fd00:202:N::1 (outside)
//! * upstream: 10.202.N.2, .3, .4 /24, fd00:202:N::2 /64

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Shutdown, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::util;

static COUNTER: AtomicU32 = AtomicU32::new(0);

fn sh(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("{}: {e} (the relay tests need root and iproute2)", args.join(" ")));
    assert!(
        out.status.success(),
        "{} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The three namespaces and the veth pairs between them; removed on drop.
pub struct Trio {
    pub inside: String,
    pub relay: String,
    pub up: String,
    pub n: u32,
}

impl Trio {
    pub fn new(tag: &str) -> Trio {
        let c = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let n = 1 + (pid.wrapping_mul(13).wrapping_add(c * 37)) % 250;
        let t = Trio {
            inside: format!("egret-{tag}-i-{pid}-{c}"),
            relay: format!("egret-{tag}-r-{pid}-{c}"),
            up: format!("egret-{tag}-u-{pid}-{c}"),
            n,
        };
        for ns in [&t.inside, &t.relay, &t.up] {
            sh(&["ip", "netns", "add", ns]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
        }
        let (i, r, u) = (t.inside.as_str(), t.relay.as_str(), t.up.as_str());
        sh(&["ip", "-n", i, "link", "add", "eth0", "type", "veth", "peer", "name", "int0", "netns", r]);
        sh(&["ip", "-n", r, "link", "add", "ext0", "type", "veth", "peer", "name", "eth0", "netns", u]);
        let addrs: [(&str, &str, Vec<String>); 4] = [
            (i, "eth0", vec![format!("10.201.{n}.1/24"), format!("fd00:201:{n}::1/64")]),
            (r, "int0", vec![format!("10.201.{n}.2/24"), format!("fd00:201:{n}::2/64")]),
            (r, "ext0", vec![format!("10.202.{n}.1/24"), format!("fd00:202:{n}::1/64")]),
            (
                u,
                "eth0",
                vec![
                    format!("10.202.{n}.2/24"),
                    format!("10.202.{n}.3/24"),
                    format!("10.202.{n}.4/24"),
                    format!("fd00:202:{n}::2/64"),
                ],
            ),
        ];
        for (ns, dev, list) in &addrs {
            for a in list {
                let mut args = vec!["ip", "-n", ns, "addr", "add", a.as_str(), "dev", dev];
                if a.contains(':') {
                    args.push("nodad");
                }
                sh(&args);
            }
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        t
    }

    /// The relay's address as the internal clients see it.
    pub fn door(&self, port: u16) -> SocketAddr {
        SocketAddr::new(format!("10.201.{}.2", self.n).parse().unwrap(), port)
    }

    pub fn door6(&self, port: u16) -> SocketAddr {
        SocketAddr::new(format!("fd00:201:{}::2", self.n).parse().unwrap(), port)
    }

    /// An upstream address: host 2, 3 or 4.
    pub fn up_ip(&self, host: u8) -> IpAddr {
        format!("10.202.{}.{host}", self.n).parse().unwrap()
    }

    /// `/etc/hosts` of the relay namespace (`ip netns exec` bind-mounts
    /// `/etc/netns/NAME/hosts` over it): the "system resolver".
    pub fn relay_hosts(&self, text: &str) {
        let dir = PathBuf::from("/etc/netns").join(&self.relay);
        std::fs::create_dir_all(&dir).expect("create /etc/netns/NAME");
        std::fs::write(dir.join("hosts"), text).expect("write hosts");
        // No nameserver: names not in hosts fail fast instead of leaving.
        std::fs::write(dir.join("resolv.conf"), "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
            .expect("write resolv.conf");
    }
}

impl Drop for Trio {
    fn drop(&mut self) {
        for ns in [&self.inside, &self.relay, &self.up] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.relay));
    }
}

/// Runs `f` on a thread inside namespace `ns` and waits for it; sockets
/// it makes stay in that namespace.
pub fn within<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

/// A test server thread; stopped (bounded) on drop.
pub struct Server {
    stop: Arc<AtomicBool>,
    /// Connections (or datagrams) it took.
    pub hits: Arc<AtomicUsize>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A TCP server at `addr` in `ns`; `handle` serves each connection on
/// its own thread.
pub fn tcp_server(ns: &str, addr: SocketAddr, handle: fn(TcpStream)) -> Server {
    let l = within(ns, move || TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")));
    l.set_nonblocking(true).unwrap();
    let (stop, hits) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let (s2, h2) = (stop.clone(), hits.clone());
    let thread = thread::spawn(move || {
        while !s2.load(Ordering::SeqCst) {
            match l.accept() {
                Ok((c, _)) => {
                    h2.fetch_add(1, Ordering::SeqCst);
                    let _ = c.set_nonblocking(false);
                    let _ = c.set_read_timeout(Some(Duration::from_secs(20)));
                    thread::spawn(move || handle(c));
                }
                Err(_) => thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    Server { stop, hits, thread: Some(thread) }
}

pub fn echo(mut c: TcpStream) {
    let mut buf = vec![0u8; 65536];
    loop {
        match c.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if c.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = c.shutdown(Shutdown::Write);
}

/// Answers every connection with the last octet of the address it was
/// made to, then closes: which address the relay dialled.
fn who(mut c: TcpStream) {
    let me = c.local_addr().map(|a| a.ip().to_string()).unwrap_or_default();
    let _ = c.write_all(me.as_bytes());
    let _ = c.shutdown(Shutdown::Write);
    let mut sink = [0u8; 64];
    let _ = c.read(&mut sink);
}

/// A UDP echo at `addr` in `ns`.
pub fn udp_echo(ns: &str, addr: SocketAddr) -> Server {
    let s = within(ns, move || UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")));
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let (stop, hits) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let (s2, h2) = (stop.clone(), hits.clone());
    let thread = thread::spawn(move || {
        let mut buf = vec![0u8; 65536];
        while !s2.load(Ordering::SeqCst) {
            if let Ok((n, from)) = s.recv_from(&mut buf) {
                h2.fetch_add(1, Ordering::SeqCst);
                let _ = s.send_to(&buf[..n], from);
            }
        }
    });
    Server { stop, hits, thread: Some(thread) }
}

/// A DNS server whose A answer for every name is `answer` (changeable),
/// with TTL 1.
pub fn dns_server(ns: &str, addr: SocketAddr, answer: Arc<Mutex<Ipv4Addr>>) -> Server {
    use hickory_proto::op::{Message, MessageType, OpCode};
    use hickory_proto::rr::rdata::A;
    use hickory_proto::rr::{RData, Record, RecordType};
    let s = within(ns, move || UdpSocket::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}")));
    s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
    let (stop, hits) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicUsize::new(0)));
    let (s2, h2) = (stop.clone(), hits.clone());
    let thread = thread::spawn(move || {
        let mut buf = vec![0u8; 4096];
        while !s2.load(Ordering::SeqCst) {
            let Ok((n, from)) = s.recv_from(&mut buf) else { continue };
            let Ok(q) = Message::from_vec(&buf[..n]) else { continue };
            let Some(question) = q.queries.first().cloned() else { continue };
            h2.fetch_add(1, Ordering::SeqCst);
            let mut r = Message::new(q.metadata.id, MessageType::Response, OpCode::Query);
            r.metadata.authoritative = true;
            r.metadata.recursion_desired = q.metadata.recursion_desired;
            r.metadata.recursion_available = true;
            r.add_query(question.clone());
            if question.query_type() == RecordType::A {
                let ip = *answer.lock().unwrap();
                r.add_answer(Record::from_rdata(question.name().clone(), 1, RData::A(A(ip))));
            }
            if let Some(e) = q.edns.clone() {
                r.set_edns(e);
            }
            if let Ok(bytes) = r.to_vec() {
                let _ = s.send_to(&bytes, from);
            }
        }
    });
    Server { stop, hits, thread: Some(thread) }
}

/// The relay: `egret relay` in the relay namespace, its stdout (events)
/// collected; killed by its pid on drop.
pub struct Egret {
    child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
    pub socket: PathBuf,
}

impl Egret {
    pub fn start(t: &Trio, env: &[(&str, &str)], ready: SocketAddr) -> Egret {
        let dir = util::scratch(&format!("relay-{}", t.relay));
        let socket = dir.join("egret.sock");
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &t.relay, env!("CARGO_BIN_EXE_egret")]);
        // Nothing of the developer's environment.
        c.env_clear().env("PATH", std::env::var("PATH").unwrap_or_default());
        c.env("HEALTH_SOCKET", &socket).env("LOG_LEVEL", "info");
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = c.spawn().expect("spawn egret");
        let out = child.stdout.take().expect("stdout");
        let (tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for l in BufReader::new(out).lines() {
                let Ok(l) = l else { return };
                if tx.send(l).is_err() {
                    return;
                }
            }
        });
        let mut e = Egret { child, lines, seen: Vec::new(), socket };
        let ns = t.inside.clone();
        let up = crate::netns::wait_for(Duration::from_secs(20), || {
            let ns = ns.clone();
            within(&ns, move || TcpStream::connect_timeout(&ready, Duration::from_millis(300)).ok())
                .map(|_| ())
        });
        if up.is_none() {
            let status = e.child.try_wait();
            panic!("the relay never listened on {ready} (exit: {status:?})");
        }
        // Hits from the probe connection are not the test's.
        thread::sleep(Duration::from_millis(100));
        e
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits (bounded) for an event line containing every needle.
    pub fn event(&mut self, needles: &[&str], timeout: Duration) -> Option<String> {
        let hit = |l: &String| needles.iter().all(|n| l.contains(n));
        if let Some(l) = self.seen.iter().find(|l| hit(l)) {
            return Some(l.clone());
        }
        let end = Instant::now() + timeout;
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(l) => {
                    self.seen.push(l.clone());
                    if hit(&l) {
                        return Some(l);
                    }
                }
                Err(_) => return None,
            }
        }
        None
    }

    /// `GET path` on the health socket: (status, body).
    pub fn get(&self, path: &str) -> (u16, String) {
        let mut s = UnixStream::connect(&self.socket).expect("health socket");
        s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        write!(s, "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        let code = out.split(' ').nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
        let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
        (code, body)
    }

    /// `egret health` against this relay: (exit code, stdout + stderr).
    pub fn health(&self) -> (i32, String) {
        let mut c = util::egret();
        c.arg("health").env("HEALTH_SOCKET", &self.socket);
        let (code, out, err) = util::run(c);
        (code, format!("{out}{err}"))
    }
}

impl Drop for Egret {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Connects from the internal namespace.
fn connect(t: &Trio, to: SocketAddr) -> std::io::Result<TcpStream> {
    let ns = t.inside.clone();
    within(&ns, move || TcpStream::connect_timeout(&to, Duration::from_secs(2)))
}

/// Sends `data` and reads the echo back, byte for byte.
fn round_trip(mut s: TcpStream, data: &[u8]) -> Vec<u8> {
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let mut w = s.try_clone().unwrap();
    let owned = data.to_vec();
    let writer = thread::spawn(move || {
        w.write_all(&owned).unwrap();
        w.shutdown(Shutdown::Write).unwrap();
    });
    let mut got = Vec::new();
    s.read_to_end(&mut got).unwrap();
    writer.join().unwrap();
    got
}

fn pattern(len: usize, seed: u32) -> Vec<u8> {
    let mut x = seed.wrapping_mul(2654435761).max(1);
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect()
}

fn udp_exchange(t: &Trio, to: SocketAddr, msgs: &[Vec<u8>]) -> Vec<Option<Vec<u8>>> {
    let ns = t.inside.clone();
    let msgs = msgs.to_vec();
    within(&ns, move || {
        let s = UdpSocket::bind(if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        s.connect(to).unwrap();
        msgs.iter()
            .map(|m| {
                s.send(m).ok()?;
                let mut buf = vec![0u8; 65536];
                let n = s.recv(&mut buf).ok()?;
                Some(buf[..n].to_vec())
            })
            .collect()
    })
}

#[test]
fn tcp_and_udp_through_the_relay_byte_exact_and_nothing_else() {
    let t = Trio::new("rly");
    let up2 = t.up_ip(2);
    let _web80 = tcp_server(&t.up, SocketAddr::new(up2, 80), echo);
    let web443 = tcp_server(&t.up, SocketAddr::new(up2, 443), echo);
    let syslog = udp_echo(&t.up, SocketAddr::new(t.up_ip(3), 514));
    t.relay_hosts(&format!("{up2} web.test\n{} syslog.test\n", t.up_ip(3)));
    // docker-whitelist's variables (TARGET, default PORT 80 443) plus a
    // second target over UDP in the same container.
    let mut e = Egret::start(&t, &[("TARGET", "web.test"), ("RELAYS", "syslog.test:514/udp")], t.door(443));
    // TCP 80 and 443, over IPv4 and IPv6, byte-exact; 443 carries bulk.
    let small = pattern(1000, 1);
    assert_eq!(round_trip(connect(&t, t.door(80)).expect("door 80"), &small), small);
    let bulk = pattern(4 << 20, 2);
    let got = round_trip(connect(&t, t.door(443)).expect("door 443"), &bulk);
    assert!(got == bulk, "bulk not byte-exact: {} of {} bytes", got.len(), bulk.len());
    let v6 = pattern(70_000, 3);
    assert_eq!(round_trip(connect(&t, t.door6(80)).expect("door 80 over IPv6"), &v6), v6);
    // UDP, byte-exact, answers relayed back.
    let msgs: Vec<Vec<u8>> = [1usize, 512, 1400, 8000].iter().map(|&n| pattern(n, n as u32)).collect();
    let answers = udp_exchange(&t, t.door(514), &msgs);
    for (m, a) in msgs.iter().zip(&answers) {
        assert_eq!(a.as_deref(), Some(&m[..]), "udp datagram of {} bytes", m.len());
    }
    let answers6 = udp_exchange(&t, t.door6(514), &msgs[..1]);
    assert_eq!(answers6[0].as_deref(), Some(&msgs[0][..]), "udp over IPv6");
    assert!(syslog.hits.load(Ordering::SeqCst) >= 5);
    // The internal client reaches nothing else: not the upstream
    // directly, not another port of the relay, and not through it even
    // with a route via the relay (the relay does not forward packets).
    assert!(connect(&t, SocketAddr::new(up2, 443)).is_err(), "no route out of the internal network");
    let hits = web443.hits.load(Ordering::SeqCst);
    sh(&["ip", "-n", &t.inside, "route", "add", "default", "via", &t.door(0).ip().to_string()]);
    assert!(connect(&t, SocketAddr::new(up2, 443)).is_err(), "the relay routed a packet");
    assert!(connect(&t, t.door(22)).is_err(), "a port that is not relayed");
    assert_eq!(web443.hits.load(Ordering::SeqCst), hits, "nothing reached the upstream around the relay");
    // Events and metrics as in the other modes.
    let ev = e.event(&["\"relay.allowed\"", "\"protocol\":\"TCP\"", "web.test"], Duration::from_secs(5));
    assert!(ev.is_some(), "no TCP relay event in {:?}", e.seen);
    let ev = e.event(&["\"relay.allowed\"", "\"protocol\":\"UDP\"", "syslog.test"], Duration::from_secs(5));
    assert!(ev.is_some(), "no UDP relay event in {:?}", e.seen);
    let (code, metrics) = e.get("/metrics");
    assert_eq!(code, 200);
    let allowed = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix("egret_filter_connections_total{component=\"relay\",verdict=\"allowed\"} ")
        })
        .and_then(|v| v.parse::<u64>().ok());
    assert!(allowed.is_some_and(|n| n >= 5), "{metrics}");
    let up_bytes = metrics
        .lines()
        .find_map(|l| l.strip_prefix("egret_filter_relayed_bytes_total{direction=\"up\"} "))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(up_bytes.is_some_and(|n| n >= bulk.len() as u64), "{metrics}");
    // No nftables: relay mode installs no table.
    let out = Command::new("ip").args(["netns", "exec", &t.relay, "nft", "list", "tables"]).output();
    if let Ok(o) = out {
        assert!(!String::from_utf8_lossy(&o.stdout).contains("egret"), "relay mode installed rules");
    }
    assert_eq!(e.health().0, 0, "no health checks configured: healthy");
}

#[test]
fn pre_resolve_dials_the_nameservers_answer_and_follows_a_move() {
    let t = Trio::new("rlr");
    let (a, b, sys) = (t.up_ip(2), t.up_ip(3), t.up_ip(4));
    let _servers: Vec<Server> =
        [a, b, sys].iter().map(|ip| tcp_server(&t.up, SocketAddr::new(*ip, 80), who)).collect();
    // The container's own resolver names another address (as Docker's
    // would answer the alias with the relay itself).
    t.relay_hosts(&format!("{sys} moving.test\n"));
    let answer = Arc::new(Mutex::new(match a {
        IpAddr::V4(v) => v,
        IpAddr::V6(_) => unreachable!(),
    }));
    let dns = dns_server(&t.up, SocketAddr::new(a, 53), answer.clone());
    let ns = a.to_string();
    let e = Egret::start(
        &t,
        &[("TARGET", "moving.test"), ("PORT", "80"), ("PRE_RESOLVE", "1"), ("NAMESERVERS", &ns)],
        t.door(80),
    );
    let ask = || {
        let mut s = connect(&t, t.door(80)).expect("door");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = String::new();
        let _ = s.read_to_string(&mut got);
        got
    };
    assert_eq!(ask(), a.to_string(), "the relay dialled the NAMESERVERS answer");
    assert!(dns.hits.load(Ordering::SeqCst) >= 1);
    // The target moves; new connections follow within the TTL (1 s,
    // the relay's floor), without a restart.
    let pid = e.pid();
    *answer.lock().unwrap() = match b {
        IpAddr::V4(v) => v,
        IpAddr::V6(_) => unreachable!(),
    };
    let moved = crate::netns::wait_for(Duration::from_secs(10), || (ask() == b.to_string()).then_some(()));
    assert!(moved.is_some(), "new connections still go to the old address");
    assert_eq!(ask(), b.to_string());
    assert_eq!(e.pid(), pid);
    // Without PRE_RESOLVE, the system resolver's answer is used (the
    // control: the hosts file really answers differently).
    drop(e);
    let _e = Egret::start(&t, &[("TARGET", "moving.test"), ("PORT", "80")], t.door(80));
    assert_eq!(ask(), sys.to_string());
}

#[test]
fn max_connections_holds_the_third_until_one_closes() {
    let t = Trio::new("rlm");
    let up = t.up_ip(2);
    let _web = tcp_server(&t.up, SocketAddr::new(up, 7000), echo);
    let udp = udp_echo(&t.up, SocketAddr::new(up, 7001));
    let target = up.to_string();
    let mut e = Egret::start(
        &t,
        &[
            ("TARGET", &target),
            ("PORT", "7000"),
            ("RELAYS", &format!("{target}:7001/udp")),
            ("MAX_CONNECTIONS", "2"),
        ],
        t.door(7000),
    );
    // The readiness probe took (and gave back) a slot; wait until it is free.
    thread::sleep(Duration::from_millis(300));
    let open = |tag: &[u8]| {
        let mut s = connect(&t, t.door(7000)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(tag).unwrap();
        let mut got = vec![0u8; tag.len()];
        s.read_exact(&mut got).expect("echo");
        assert_eq!(got, tag);
        s
    };
    let c1 = open(b"one");
    let _c2 = open(b"two");
    let mut c3 = connect(&t, t.door(7000)).expect("the third connects (it waits in the backlog)");
    c3.write_all(b"three").unwrap();
    c3.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
    let mut got = [0u8; 5];
    assert!(c3.read_exact(&mut got).is_err(), "the third was served while two were open");
    drop(c1);
    c3.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c3.read_exact(&mut got).expect("the third is served once one closes");
    assert_eq!(&got, b"three");
    // UDP: two flows, the third client's datagrams are not forwarded.
    let ns = t.inside.clone();
    let door = t.door(7001);
    let answers = within(&ns, move || {
        let socks: Vec<UdpSocket> = (0..3).map(|_| UdpSocket::bind("0.0.0.0:0").unwrap()).collect();
        let mut out = Vec::new();
        for (i, s) in socks.iter().enumerate() {
            s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
            s.send_to(format!("flow{i}").as_bytes(), door).unwrap();
            let mut buf = [0u8; 64];
            out.push(s.recv(&mut buf).ok().map(|n| buf[..n].to_vec()));
        }
        // The first two keep working.
        socks[0].send_to(b"again", door).unwrap();
        let mut buf = [0u8; 64];
        out.push(socks[0].recv(&mut buf).ok().map(|n| buf[..n].to_vec()));
        out
    });
    assert_eq!(answers[0].as_deref(), Some(&b"flow0"[..]));
    assert_eq!(answers[1].as_deref(), Some(&b"flow1"[..]));
    assert_eq!(answers[2], None, "a third UDP flow was forwarded");
    assert_eq!(answers[3].as_deref(), Some(&b"again"[..]));
    assert_eq!(udp.hits.load(Ordering::SeqCst), 3, "the third flow's datagram reached the target");
    let ev = e.event(
        &["\"relay.blocked\"", "\"reason\":\"limit\"", "\"protocol\":\"UDP\""],
        Duration::from_secs(5),
    );
    assert!(ev.is_some(), "no limit event in {:?}", e.seen);
}

#[test]
fn a_waiting_connection_gives_up_after_the_bounded_wait() {
    let t = Trio::new("rlq");
    let up = t.up_ip(2);
    let _web = tcp_server(&t.up, SocketAddr::new(up, 7000), echo);
    let target = up.to_string();
    let mut e = Egret::start(
        &t,
        &[("TARGET", &target), ("PORT", "7000"), ("MAX_CONNECTIONS", "1"), ("RELAY_QUEUE_TIMEOUT", "1s")],
        t.door(7000),
    );
    thread::sleep(Duration::from_millis(300));
    let mut c1 = connect(&t, t.door(7000)).unwrap();
    c1.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    c1.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    c1.read_exact(&mut b).unwrap();
    let mut c2 = connect(&t, t.door(7000)).unwrap();
    c2.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let started = Instant::now();
    let mut rest = Vec::new();
    let r = c2.read_to_end(&mut rest);
    assert!(r.is_err() || rest.is_empty(), "the waiting connection got data");
    assert!(started.elapsed() < Duration::from_secs(8), "the wait was not bounded");
    let ev = e.event(
        &["\"relay.blocked\"", "\"reason\":\"limit\"", "\"protocol\":\"TCP\""],
        Duration::from_secs(5),
    );
    assert!(ev.is_some(), "no limit event in {:?}", e.seen);
}

/// A small SMTP server: greeting, EHLO, HELP, QUIT.
fn smtp(c: TcpStream) {
    let mut w = c.try_clone().unwrap();
    let _ = w.write_all(b"220 mail.test ESMTP test\r\n");
    for line in BufReader::new(c).lines() {
        let Ok(line) = line else { return };
        let verb = line.split(' ').next().unwrap_or("").to_ascii_uppercase();
        let reply: &[u8] = match verb.as_str() {
            "EHLO" => b"250-mail.test\r\n250-PIPELINING\r\n250 HELP\r\n",
            "HELP" => b"214 see RFC 5321\r\n",
            "QUIT" => {
                let _ = w.write_all(b"221 bye\r\n");
                return;
            }
            _ => b"502 not implemented\r\n",
        };
        if w.write_all(reply).is_err() {
            return;
        }
    }
}

fn http_ok(mut c: TcpStream) {
    let mut buf = [0u8; 4096];
    let _ = c.read(&mut buf);
    let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok");
}

#[test]
fn health_checks_follow_the_targets() {
    let t = Trio::new("rlh");
    let up = t.up_ip(2);
    t.relay_hosts(&format!("{up} mail.test\n"));
    let http_at = SocketAddr::new(up, 8081);
    let smtp_at = SocketAddr::new(up, 2525);
    let web = tcp_server(&t.up, http_at, http_ok);
    let mail = tcp_server(&t.up, smtp_at, smtp);
    let _relayed = tcp_server(&t.up, SocketAddr::new(up, 587), smtp);
    let e = Egret::start(
        &t,
        &[
            ("TARGET", "mail.test"),
            ("PORT", "587"),
            ("HTTP_HEALTHCHECK", "1"),
            ("HTTP_HEALTHCHECK_URL", "http://$TARGET:8081/"),
            ("HTTP_HEALTHCHECK_TIMEOUT_MS", "1000"),
            ("SMTP_HEALTHCHECK", "1"),
            ("SMTP_HEALTHCHECK_URL", "smtp://$TARGET:2525"),
            ("SMTP_HEALTHCHECK_TIMEOUT_MS", "1000"),
        ],
        t.door(587),
    );
    let (code, out) = e.health();
    assert_eq!(code, 0, "both targets up: {out}");
    drop(web);
    let (code, out) = e.health();
    assert_eq!(code, 1, "HTTP target down: {out}");
    assert!(out.contains("HTTP_HEALTHCHECK") && !out.contains("SMTP_HEALTHCHECK"), "{out}");
    let _web = tcp_server(&t.up, http_at, http_ok);
    assert_eq!(e.health().0, 0, "HTTP target back");
    drop(mail);
    let (code, out) = e.health();
    assert_eq!(code, 1, "SMTP target down: {out}");
    assert!(out.contains("SMTP_HEALTHCHECK"), "{out}");
    // An SMTP server that answers, but negatively, is down too.
    let _bad = tcp_server(&t.up, smtp_at, |mut c| {
        let _ = c.write_all(b"554 no service\r\n");
    });
    let (code, out) = e.health();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("554"), "{out}");
}

#[test]
fn relay_check_refuses_another_name() {
    let t = Trio::new("rlc");
    let up = t.up_ip(2);
    t.relay_hosts(&format!("{up} fonts.test\n"));
    let tls = tcp_server(&t.up, SocketAddr::new(up, 443), echo);
    let web = tcp_server(&t.up, SocketAddr::new(up, 80), echo);
    let mut e = Egret::start(&t, &[("TARGET", "fonts.test"), ("RELAY_CHECK", "sni,host")], t.door(443));
    let before = (tls.hits.load(Ordering::SeqCst), web.hits.load(Ordering::SeqCst));
    // The target's own name passes, byte-exact.
    let hello = crate::ops::client_hello("fonts.test");
    assert_eq!(round_trip(connect(&t, t.door(443)).unwrap(), &hello), hello);
    assert_eq!(tls.hits.load(Ordering::SeqCst), before.0 + 1);
    // Another virtual host on the same target: refused, nothing dialled.
    let mut s = connect(&t, t.door(443)).unwrap();
    s.write_all(&crate::ops::client_hello("admin.fonts.test")).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = Vec::new();
    let r = s.read_to_end(&mut got);
    assert!(r.is_err() || got.is_empty(), "the refused hello got an answer");
    assert_eq!(tls.hits.load(Ordering::SeqCst), before.0 + 1, "the refused hello reached the target");
    let ev = e.event(&["\"relay.blocked\"", "target-mismatch", "admin.fonts.test"], Duration::from_secs(5));
    assert!(ev.is_some(), "no blocked event in {:?}", e.seen);
    // Plain HTTP: the Host of every request is checked.
    let ok = b"GET / HTTP/1.1\r\nHost: fonts.test\r\nContent-Length: 0\r\n\r\n".to_vec();
    assert_eq!(round_trip(connect(&t, t.door(80)).unwrap(), &ok), ok);
    let mut s = connect(&t, t.door(80)).unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut got = String::new();
    let _ = s.read_to_string(&mut got);
    assert!(got.starts_with("HTTP/1.1 403"), "{got:?}");
    assert_eq!(web.hits.load(Ordering::SeqCst), before.1 + 1, "the refused request reached the target");
    // A later request on a kept-alive connection is checked too.
    let mut s = connect(&t, t.door(80)).unwrap();
    let first = b"GET / HTTP/1.1\r\nHost: fonts.test\r\nContent-Length: 0\r\n\r\n";
    s.write_all(first).unwrap();
    let mut echo_back = vec![0u8; first.len()];
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.read_exact(&mut echo_back).unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: other.test\r\n\r\n").unwrap();
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    assert!(rest.contains("403") && !rest.contains("other.test"), "{rest:?}");
}

#[test]
fn bad_relay_configuration_lists_every_problem() {
    let mut c = util::egret();
    c.arg("relay").env("PORT", "80 http").env("MODE", "sctp").env("MAX_CONNECTIONS", "0");
    let (code, _, err) = util::run(c);
    assert_eq!(code, 2, "{err}");
    for needle in ["TARGET: must be set", "PORT=", "MODE=\"sctp\"", "MAX_CONNECTIONS="] {
        assert!(err.contains(needle), "{needle} missing in {err}");
    }
    // docker-whitelist's variables alone select relay mode.
    let mut c = util::egret();
    c.env("TARGET", "a.example").env("MODE", "sctp");
    let (code, _, err) = util::run(c);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("relay") && err.contains("MODE"), "{err}");
}

// ---- Attacks on relay mode: a client on the internal network tries to
// reach another virtual host, another address, or to stall the door.

/// Writes `data` (in `pieces`, `gap` apart), half-closes, and reads
/// until the door or the upstream closes (errors end the read): what
/// came back, which from an echo upstream is what reached the target.
fn exchange(s: &mut TcpStream, pieces: &[&[u8]], gap: Duration) -> Vec<u8> {
    let _ = s.set_nodelay(true);
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    for (i, p) in pieces.iter().enumerate() {
        if i > 0 {
            thread::sleep(gap);
        }
        if s.write_all(p).is_err() {
            break;
        }
    }
    let _ = s.shutdown(Shutdown::Write);
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let end = Instant::now() + Duration::from_secs(8);
    while Instant::now() < end {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
        }
    }
    got
}

fn lower(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_ascii_lowercase()
}

/// A checked door to `fonts.test` (echo upstreams on 80 and 443) and
/// `who` servers on the upstream's other addresses.
fn checked_door(tag: &str, extra: &[(&str, &str)]) -> (Trio, Egret, Vec<Server>) {
    let t = Trio::new(tag);
    let up = t.up_ip(2);
    t.relay_hosts(&format!("{up} fonts.test\n"));
    let mut servers = vec![
        tcp_server(&t.up, SocketAddr::new(up, 443), echo),
        tcp_server(&t.up, SocketAddr::new(up, 80), echo),
    ];
    for host in [3, 4] {
        for port in [80, 443] {
            servers.push(tcp_server(&t.up, SocketAddr::new(t.up_ip(host), port), who));
        }
    }
    let mut env = vec![("TARGET", "fonts.test"), ("RELAY_CHECK", "sni,host")];
    env.extend_from_slice(extra);
    let e = Egret::start(&t, &env, t.door(443));
    (t, e, servers)
}

#[test]
fn attack_http_host_tricks_reach_no_other_vhost() {
    let (t, _e, servers) = checked_door("rax", &[]);
    let ok = "GET / HTTP/1.1\r\nHost: fonts.test\r\nContent-Length: 0\r\n\r\n";
    let cases: Vec<(&str, String)> = vec![
        ("keep-alive second Host", format!("{ok}GET /x HTTP/1.1\r\nHost: other.test\r\n\r\n")),
        ("absolute-form other", "GET http://other.test/ HTTP/1.1\r\nHost: fonts.test\r\n\r\n".into()),
        ("absolute-form userinfo", "GET http://fonts.test@other.test/ HTTP/1.1\r\nHost: fonts.test\r\n\r\n".into()),
        ("absolute-form 1.0 no Host", "GET http://other.test/ HTTP/1.0\r\n\r\n".into()),
        ("keep-alive absolute-form", format!("{ok}GET http://other.test/ HTTP/1.1\r\nHost: fonts.test\r\n\r\n")),
        ("two Host headers", "GET / HTTP/1.1\r\nHost: fonts.test\r\nHost: other.test\r\n\r\n".into()),
        ("two Host headers reversed", "GET / HTTP/1.1\r\nHost: other.test\r\nHost: fonts.test\r\n\r\n".into()),
        ("Host list", "GET / HTTP/1.1\r\nHost: fonts.test, other.test\r\n\r\n".into()),
        ("Host userinfo", "GET / HTTP/1.1\r\nHost: fonts.test@other.test\r\n\r\n".into()),
        ("Host port then name", "GET / HTTP/1.1\r\nHost: fonts.test:80@other.test\r\n\r\n".into()),
        ("Host port", "GET / HTTP/1.1\r\nHost: other.test:80\r\n\r\n".into()),
        ("Host trailing dot", "GET / HTTP/1.1\r\nHost: other.test.\r\n\r\n".into()),
        ("Host case", "GET / HTTP/1.1\r\nHost: OTHER.test\r\n\r\n".into()),
        ("Host suffix", "GET / HTTP/1.1\r\nHost: other.fonts.test\r\n\r\n".into()),
        ("Host prefix", "GET / HTTP/1.1\r\nHost: fonts.test.other.test\r\n\r\n".into()),
        ("Host NUL", "GET / HTTP/1.1\r\nHost: fonts.test\0other.test\r\n\r\n".into()),
        ("Host space", "GET / HTTP/1.1\r\nHost: fonts.test other.test\r\n\r\n".into()),
        ("Host folded", "GET / HTTP/1.1\r\nHost: fonts.test\r\n other.test\r\n\r\n".into()),
        ("Host IDN", "GET / HTTP/1.1\r\nHost: \u{ff4f}ther.test\r\n\r\n".into()),
        ("Host IDN fullwidth dot", "GET / HTTP/1.1\r\nHost: other\u{3002}test\r\n\r\n".into()),
        ("Host punycode", "GET / HTTP/1.1\r\nHost: xn--other-9ua.test\r\n\r\n".into()),
        ("Host space before colon", "GET / HTTP/1.1\r\nHost : other.test\r\nHost: fonts.test\r\n\r\n".into()),
        ("bare-LF head", "GET / HTTP/1.1\nHost: fonts.test\nX: a\r\nHost: other.test\r\n\r\n".into()),
        ("bare-LF only", "GET / HTTP/1.1\nHost: other.test\n\n".into()),
        ("bare-LF second", format!("{ok}GET / HTTP/1.1\nHost: other.test\n\n")),
        ("CR-only head", "GET / HTTP/1.1\rHost: fonts.test\rHost: other.test\r\r\n\r\n".into()),
        ("two Content-Length", "POST / HTTP/1.1\r\nHost: fonts.test\r\nContent-Length: 0\r\nContent-Length: 41\r\n\r\nGET / HTTP/1.1\r\nHost: other.test\r\n\r\n".into()),
        ("CL plus TE", "POST / HTTP/1.1\r\nHost: fonts.test\r\nContent-Length: 41\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: other.test\r\n\r\n".into()),
        ("signed Content-Length", "POST / HTTP/1.1\r\nHost: fonts.test\r\nContent-Length: +41\r\n\r\nGET / HTTP/1.1\r\nHost: other.test\r\n\r\n".into()),
        ("chunk extension smuggle", "POST / HTTP/1.1\r\nHost: fonts.test\r\nTransfer-Encoding: chunked\r\n\r\n0;x\nGET / HTTP/1.1\r\nHost: other.test\r\n\r\n".into()),
        ("upgrade refused then second", "GET / HTTP/1.1\r\nHost: fonts.test\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\nGET / HTTP/1.1\r\nHost: other.test\r\n\r\n".into()),
        ("CONNECT", "CONNECT other.test:80 HTTP/1.1\r\nHost: other.test:80\r\n\r\n".into()),
        ("CONNECT named target", "CONNECT fonts.test:80 HTTP/1.1\r\nHost: fonts.test\r\n\r\nGET / HTTP/1.1\r\nHost: other.test\r\n\r\n".into()),
        ("HTTP/0.9", "GET http://other.test/\r\n\r\n".into()),
        ("absolute-form target, Host other", "GET http://fonts.test/ HTTP/1.1\r\nHost: other.test\r\n\r\n".into()),
        ("empty Host, absolute-form other", "GET http://other.test/ HTTP/1.1\r\nHost:\r\n\r\n".into()),
        ("Host tab", "GET / HTTP/1.1\r\nHost:\tother.test\t\r\n\r\n".into()),
        (
            "pipelined after a body",
            "POST / HTTP/1.1\r\nHost: fonts.test\r\nContent-Length: 5\r\n\r\nhelloGET / HTTP/1.1\r\nHost: other.test\r\n\r\n".into(),
        ),
        (
            "pipelined after a chunked body",
            "POST / HTTP/1.1\r\nHost: fonts.test\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\nGET / HTTP/1.1\r\nHost: other.test\r\n\r\n".into(),
        ),
        ("h2 prior knowledge", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\0\0\x0aother.test".into()),
        ("Host far in a long head", format!("GET / HTTP/1.1\r\nX: {}\r\nHost: other.test\r\n\r\n", "a".repeat(70000))),
    ];
    let mut worked = Vec::new();
    for (what, req) in &cases {
        for port in [80, 443] {
            let mut s = connect(&t, t.door(port)).unwrap();
            let got = exchange(&mut s, &[req.as_bytes()], Duration::ZERO);
            // The echo upstream returns what reached it; the door's own 403
            // does not name the other host.
            if lower(&got).contains("other") {
                worked.push(format!("{what} on {port}: {:?}", String::from_utf8_lossy(&got)));
            }
        }
    }
    for s in &servers[2..] {
        assert_eq!(s.hits.load(Ordering::SeqCst), 0, "a non-target address was dialled");
    }
    assert!(worked.is_empty(), "reached the upstream: {worked:#?}");
}

/// A ClientHello: a record header over a handshake message carrying the
/// given extensions (type, data).
fn raw_hello(exts: &[(u16, Vec<u8>)]) -> Vec<u8> {
    let mut body = vec![0x03, 0x03];
    body.extend_from_slice(&[7u8; 32]);
    body.push(0); // session id
    body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
    body.extend_from_slice(&[1, 0]); // null compression
    let mut ext = Vec::new();
    for (typ, data) in exts {
        ext.extend_from_slice(&typ.to_be_bytes());
        ext.extend_from_slice(&(data.len() as u16).to_be_bytes());
        ext.extend_from_slice(data);
    }
    body.extend_from_slice(&(ext.len() as u16).to_be_bytes());
    body.extend_from_slice(&ext);
    let mut hs = vec![1u8];
    hs.extend_from_slice(&(body.len() as u32).to_be_bytes()[1..]);
    hs.extend_from_slice(&body);
    records(&hs, hs.len())
}

/// A handshake message in records of at most `each` bytes.
fn records(hs: &[u8], each: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for part in hs.chunks(each.max(1)) {
        out.extend_from_slice(&[0x16, 0x03, 0x01]);
        out.extend_from_slice(&(part.len() as u16).to_be_bytes());
        out.extend_from_slice(part);
    }
    out
}

/// A server_name extension's data: entries (type, name).
fn sni_ext(entries: &[(u8, &str)]) -> Vec<u8> {
    let mut list = Vec::new();
    for (typ, name) in entries {
        list.push(*typ);
        list.extend_from_slice(&(name.len() as u16).to_be_bytes());
        list.extend_from_slice(name.as_bytes());
    }
    let mut d = (list.len() as u16).to_be_bytes().to_vec();
    d.extend_from_slice(&list);
    d
}

/// The hello's handshake message (its records' payloads).
fn handshake_of(hello: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut rest = hello;
    while rest.len() >= 5 {
        let n = u16::from_be_bytes([rest[3], rest[4]]) as usize;
        out.extend_from_slice(&rest[5..5 + n]);
        rest = &rest[5 + n..];
    }
    out
}

#[test]
fn attack_tls_hello_tricks_reach_no_other_vhost() {
    let (t, mut e, servers) = checked_door("rat", &[]);
    let good = crate::ops::client_hello("fonts.test");
    let other = crate::ops::client_hello("other.test");
    let hs_other = handshake_of(&other);
    let mut cases: Vec<(&str, Vec<u8>)> = vec![
        ("two host_name entries", raw_hello(&[(0, sni_ext(&[(0, "fonts.test"), (0, "other.test")]))])),
        (
            "two host_name entries reversed",
            raw_hello(&[(0, sni_ext(&[(0, "other.test"), (0, "fonts.test")]))]),
        ),
        (
            "two server_name extensions",
            raw_hello(&[(0, sni_ext(&[(0, "fonts.test")])), (0, sni_ext(&[(0, "other.test")]))]),
        ),
        ("SNI absent", raw_hello(&[])),
        ("SNI trailing dot", raw_hello(&[(0, sni_ext(&[(0, "other.test.")]))])),
        ("SNI case", raw_hello(&[(0, sni_ext(&[(0, "OTHER.TEST")]))])),
        ("SNI NUL", raw_hello(&[(0, sni_ext(&[(0, "fonts.test\0other.test")]))])),
        ("SNI with port", raw_hello(&[(0, sni_ext(&[(0, "fonts.test:443")]))])),
        ("SNI IDN", raw_hello(&[(0, sni_ext(&[(0, "\u{ff4f}ther.test")]))])),
        ("other hello in one-byte records", records(&hs_other, 1)),
        ("other hello in 7-byte records", records(&hs_other, 7)),
    ];
    // A hello naming the other host, then the target's, in one record.
    let mut bad_first = hs_other.clone();
    bad_first.extend_from_slice(&handshake_of(&good));
    cases.push(("other hello then good hello in one record", records(&bad_first, 16384)));
    let mut worked = Vec::new();
    for (what, hello) in &cases {
        for port in [443, 80] {
            let before = servers[0].hits.load(Ordering::SeqCst) + servers[1].hits.load(Ordering::SeqCst);
            let mut s = connect(&t, t.door(port)).unwrap();
            let got = exchange(&mut s, &[hello], Duration::ZERO);
            let after = servers[0].hits.load(Ordering::SeqCst) + servers[1].hits.load(Ordering::SeqCst);
            if after != before || lower(&got).contains("other") {
                worked.push(format!("{what} on {port}"));
            }
        }
    }
    // Split over TCP segments, slowly: the other name is still seen.
    let mut s = connect(&t, t.door(443)).unwrap();
    let pieces: Vec<&[u8]> = other.chunks(9).collect();
    let before = servers[0].hits.load(Ordering::SeqCst);
    let got = exchange(&mut s, &pieces, Duration::from_millis(5));
    if servers[0].hits.load(Ordering::SeqCst) != before || !got.is_empty() {
        worked.push("other hello over 9-byte segments".into());
    }
    // The control: the good hello split the same ways passes.
    for hello in [records(&handshake_of(&good), 1), records(&handshake_of(&good), 7)] {
        let mut s = connect(&t, t.door(443)).unwrap();
        assert_eq!(exchange(&mut s, &[&hello], Duration::ZERO), hello, "the target's own hello, split");
    }
    let mut s = connect(&t, t.door(443)).unwrap();
    let pieces: Vec<&[u8]> = good.chunks(9).collect();
    assert_eq!(exchange(&mut s, &pieces, Duration::from_millis(5)), good);
    for s in &servers[2..] {
        assert_eq!(s.hits.load(Ordering::SeqCst), 0, "a non-target address was dialled");
    }
    assert!(worked.is_empty(), "reached the upstream: {worked:#?}");
    assert!(e.event(&["\"relay.blocked\"", "no-sni"], Duration::from_secs(5)).is_some());
}

#[test]
fn attack_proxy_protocol_and_connect_reach_only_the_target() {
    // With RELAY_CHECK, a PROXY protocol header is neither TLS nor HTTP:
    // refused. Without it, the bytes go to the target, never elsewhere.
    let (t, _e, servers) = checked_door("rap", &[]);
    let (n, other) = (t.n, t.up_ip(3));
    let v1 =
        format!("PROXY TCP4 10.201.{n}.1 {other} 40000 80\r\nGET / HTTP/1.1\r\nHost: fonts.test\r\n\r\n");
    let mut v2 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c".to_vec();
    v2.extend_from_slice(&[10, 201, n as u8, 1]);
    if let IpAddr::V4(o) = other {
        v2.extend_from_slice(&o.octets());
    }
    v2.extend_from_slice(&[0x9c, 0x40, 0, 80]);
    v2.extend_from_slice(b"GET / HTTP/1.1\r\nHost: fonts.test\r\n\r\n");
    let connect_other = format!("CONNECT {other}:80 HTTP/1.1\r\nHost: {other}:80\r\n\r\n");
    let get_other_ip = format!("GET http://{other}/ HTTP/1.1\r\nHost: {other}\r\n\r\n");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("PROXY v1", v1.clone().into_bytes()),
        ("PROXY v2", v2.clone()),
        ("CONNECT other address", connect_other.clone().into_bytes()),
        ("absolute-form other address", get_other_ip.clone().into_bytes()),
    ];
    let up_before = servers[0].hits.load(Ordering::SeqCst) + servers[1].hits.load(Ordering::SeqCst);
    for (what, bytes) in &cases {
        for port in [80, 443] {
            let mut s = connect(&t, t.door(port)).unwrap();
            let got = exchange(&mut s, &[bytes], Duration::ZERO);
            assert!(!lower(&got).contains(&other.to_string()), "{what} on {port}: {got:?}");
        }
    }
    let up_after = servers[0].hits.load(Ordering::SeqCst) + servers[1].hits.load(Ordering::SeqCst);
    assert_eq!(up_after, up_before, "a PROXY / CONNECT opening was relayed under RELAY_CHECK");
    for s in &servers[2..] {
        assert_eq!(s.hits.load(Ordering::SeqCst), 0, "a non-target address was dialled");
    }
    drop(servers);
    drop(_e);
    // RELAY_CHECK off: the same openings are relayed as bytes, to the
    // target's address only.
    let up = t.up_ip(2);
    let target = tcp_server(&t.up, SocketAddr::new(up, 80), echo);
    let others: Vec<Server> =
        [3, 4].iter().map(|h| tcp_server(&t.up, SocketAddr::new(t.up_ip(*h), 80), who)).collect();
    let _e = Egret::start(&t, &[("TARGET", "fonts.test"), ("PORT", "80")], t.door(80));
    for (what, bytes) in &cases {
        let mut s = connect(&t, t.door(80)).unwrap();
        let got = exchange(&mut s, &[bytes], Duration::ZERO);
        assert_eq!(&got, bytes, "{what}: the target echoes the bytes");
    }
    assert!(target.hits.load(Ordering::SeqCst) >= cases.len());
    for s in &others {
        assert_eq!(s.hits.load(Ordering::SeqCst), 0, "a non-target address was dialled");
    }
}

#[test]
fn attack_slowloris_before_the_first_bytes_is_cut_by_header_timeout() {
    let (t, mut e, _servers) = checked_door(
        "ras",
        &[("HEADER_TIMEOUT", "1s"), ("MAX_CONNECTIONS", "2"), ("RELAY_QUEUE_TIMEOUT", "20s")],
    );
    thread::sleep(Duration::from_millis(300));
    // Two trickling clients (a byte every 200 ms, never a whole head) and
    // one silent one take both slots and a queue place.
    let trickle = |port: u16, bytes: &'static [u8]| {
        let mut s = connect(&t, t.door(port)).unwrap();
        let _ = s.set_nodelay(true);
        thread::spawn(move || {
            let started = Instant::now();
            for b in bytes.iter().cycle().take(60) {
                if s.write_all(&[*b]).is_err() {
                    return Some(started.elapsed());
                }
                thread::sleep(Duration::from_millis(200));
            }
            None
        })
    };
    let a = trickle(
        80,
        b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    );
    let b = trickle(443, &[0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0x3f, 0xfc, 0x03, 0x03]);
    let mut silent = connect(&t, t.door(80)).unwrap();
    // A good client after them is served within the timeout and a margin.
    thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let mut s = connect(&t, t.door(80)).unwrap();
    let ok = b"GET / HTTP/1.1\r\nHost: fonts.test\r\nContent-Length: 0\r\n\r\n";
    let got = exchange(&mut s, &[ok], Duration::ZERO);
    assert_eq!(&got[..], &ok[..], "the good client was not served");
    assert!(started.elapsed() < Duration::from_secs(5), "served only after {:?}", started.elapsed());
    for (what, h) in [("HTTP trickle", a), ("TLS trickle", b)] {
        let cut = h.join().unwrap();
        assert!(cut.is_some_and(|d| d < Duration::from_secs(5)), "{what} not cut: {cut:?}");
    }
    silent.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 16];
    let r = silent.read(&mut buf);
    assert!(matches!(r, Ok(0) | Err(_)), "the silent client was not cut");
    if let Err(err) = &r {
        assert!(
            !matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut),
            "silent still open"
        );
    }
    assert!(e.event(&["\"relay.blocked\"", "header-timeout"], Duration::from_secs(5)).is_some());
}

/// A second client address on the internal network: 10.201.N.5.
fn second_client(t: &Trio) -> Ipv4Addr {
    sh(&["ip", "-n", &t.inside, "addr", "add", &format!("10.201.{}.5/24", t.n), "dev", "eth0"]);
    format!("10.201.{}.5", t.n).parse().unwrap()
}

/// Connects from the internal namespace out of `from`.
fn connect_from(t: &Trio, from: Ipv4Addr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{
        bind, connect as nconnect, socket, AddressFamily, SockFlag, SockType, SockaddrIn,
    };
    let ns = t.inside.clone();
    within(&ns, move || {
        let fd = socket(AddressFamily::Inet, SockType::Stream, SockFlag::empty(), None)?;
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(std::net::SocketAddrV4::new(from, 0)))?;
        let SocketAddr::V4(to) = to else { unreachable!() };
        nconnect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrIn::from(to))?;
        Ok(TcpStream::from(fd))
    })
}

/// One client opens every slot with a valid first request and holds the
/// connections idle: does a second client still get through?
#[test]
fn attack_one_client_holds_every_tcp_slot() {
    let (t, mut e, _servers) = checked_door(
        "rah",
        &[("MAX_CONNECTIONS", "3"), ("RELAY_QUEUE_TIMEOUT", "3s"), ("HEADER_TIMEOUT", "1s")],
    );
    let victim = second_client(&t);
    thread::sleep(Duration::from_millis(300));
    let ok = b"GET / HTTP/1.1\r\nHost: fonts.test\r\nContent-Length: 0\r\n\r\n";
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = connect(&t, t.door(80)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.write_all(ok).unwrap();
        let mut back = vec![0u8; ok.len()];
        s.read_exact(&mut back).expect("the attacker's request is relayed");
        held.push(s);
    }
    let mut s = connect_from(&t, victim, t.door(80)).expect("the victim connects");
    let got = exchange(&mut s, &[ok], Duration::ZERO);
    let limit = e.event(&["\"relay.blocked\"", "\"reason\":\"limit\""], Duration::from_millis(100));
    drop(held);
    assert_eq!(
        &got[..],
        &ok[..],
        "the second client was not served while one client held the slots ({limit:?})"
    );
}

/// A kept-alive connection whose second request head trickles in a byte
/// at a time: HEADER_TIMEOUT covers every head from its first byte, so
/// it is cut.
#[test]
fn attack_slowloris_on_a_later_head_is_cut() {
    let (t, _e, _servers) = checked_door("ral", &[("HEADER_TIMEOUT", "1s")]);
    let ok = b"GET / HTTP/1.1\r\nHost: fonts.test\r\nContent-Length: 0\r\n\r\n";
    let mut s = connect(&t, t.door(80)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(ok).unwrap();
    let mut back = vec![0u8; ok.len()];
    s.read_exact(&mut back).unwrap();
    let started = Instant::now();
    let mut alive_for = Duration::ZERO;
    for b in b"GET / HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaa".iter() {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        alive_for = started.elapsed();
        thread::sleep(Duration::from_millis(250));
    }
    assert!(alive_for < Duration::from_secs(4), "a trickled second head kept the connection {alive_for:?}");
}

/// One client sends from many source ports: each is a UDP flow, but the
/// flows are shared per client (source address), so it takes its
/// MAX_CONNECTIONS and another client still gets one.
#[test]
fn attack_udp_source_ports_take_every_flow() {
    let t = Trio::new("rau");
    let up = t.up_ip(2);
    let _udp = udp_echo(&t.up, SocketAddr::new(up, 7001));
    let _tcp = tcp_server(&t.up, SocketAddr::new(up, 7000), echo);
    let target = up.to_string();
    let mut e = Egret::start(
        &t,
        &[
            ("TARGET", &target),
            ("PORT", "7000"),
            ("RELAYS", &format!("{target}:7001/udp")),
            ("MAX_CONNECTIONS", "8"),
            ("UDP_TIMEOUT", "30s"),
        ],
        t.door(7000),
    );
    let victim = second_client(&t);
    let door = t.door(7001);
    let ns = t.inside.clone();
    let (attacker_answers, victim_answer) = within(&ns, move || {
        let socks: Vec<UdpSocket> = (0..8).map(|_| UdpSocket::bind("0.0.0.0:0").unwrap()).collect();
        let mut answered = 0;
        for s in &socks {
            s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
            s.send_to(b"mine", door).unwrap();
            let mut buf = [0u8; 16];
            answered += usize::from(s.recv(&mut buf).is_ok());
        }
        let v = UdpSocket::bind(SocketAddr::new(IpAddr::V4(victim), 0)).unwrap();
        v.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
        v.send_to(b"victim", door).unwrap();
        let mut buf = [0u8; 16];
        (answered, v.recv(&mut buf).ok().map(|n| buf[..n].to_vec()))
    });
    assert_eq!(attacker_answers, 8, "the attacker's own flows");
    let limit = e.event(&["\"relay.blocked\"", "\"reason\":\"limit\"", "UDP"], Duration::from_millis(500));
    assert_eq!(victim_answer.as_deref(), Some(&b"victim"[..]), "another client got no flow ({limit:?})");
}

/// An encrypted_client_hello extension with the target as the outer
/// SNI: the name the upstream serves is the encrypted inner one.
#[test]
fn attack_ech_outer_sni_hides_the_inner_name() {
    let (t, _e, servers) = checked_door("rae", &[]);
    let mut ech = vec![0u8]; // outer
    ech.extend_from_slice(&[0, 1, 0, 1]); // HKDF-SHA256, AES-128-GCM
    ech.push(42); // config_id
    ech.extend_from_slice(&[0, 32]);
    ech.extend_from_slice(&[9u8; 32]); // enc
    ech.extend_from_slice(&[0, 64]);
    ech.extend_from_slice(&[5u8; 64]); // payload: the inner hello, sealed
    let hello = raw_hello(&[(0, sni_ext(&[(0, "fonts.test")])), (0xfe0d, ech)]);
    let before = servers[0].hits.load(Ordering::SeqCst);
    let mut s = connect(&t, t.door(443)).unwrap();
    let got = exchange(&mut s, &[&hello], Duration::ZERO);
    assert!(
        got.is_empty() && servers[0].hits.load(Ordering::SeqCst) == before,
        "an ECH hello under the target's outer name reached the upstream"
    );
}

/// Answers any request head with `101 Switching Protocols` (h2c), then
/// echoes: what a client could reach after an upgrade the relay did not ask for.
fn switch_then_echo(mut c: TcpStream) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 65536 {
        match c.read(&mut b) {
            Ok(1) => head.push(b[0]),
            _ => return,
        }
    }
    let _ = c.write_all(b"HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n");
    echo(c);
}

#[test]
fn attack_h2c_upgrade_and_websocket_turn_no_other_head_through() {
    let t = Trio::new("rau2");
    let up = t.up_ip(2);
    t.relay_hosts(&format!("{up} fonts.test\n"));
    let _srv = tcp_server(&t.up, SocketAddr::new(up, 80), switch_then_echo);
    let _e =
        Egret::start(&t, &[("TARGET", "fonts.test"), ("PORT", "80"), ("RELAY_CHECK", "host")], t.door(80));
    let h2c = b"GET / HTTP/1.1\r\nHost: fonts.test\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n";
    let after = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\nGET / HTTP/1.1\r\nHost: other.test\r\n\r\n";
    // The client's bytes after its head, sent once the 101 came back.
    let mut s = connect(&t, t.door(80)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(h2c).unwrap();
    let mut first = [0u8; 20];
    let _ = s.read_exact(&mut first);
    let got = exchange(&mut s, &[after], Duration::ZERO);
    assert!(!lower(&got).contains("other"), "after an h2c 101: {:?}", String::from_utf8_lossy(&got));
    // A 101 to a request that was not a WebSocket handshake opens nothing
    // either, even when the next head follows in the same write.
    let mut s = connect(&t, t.door(80)).unwrap();
    let mut both = h2c.to_vec();
    both.extend_from_slice(b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n");
    let got = exchange(&mut s, &[&both], Duration::ZERO);
    assert!(!lower(&got).contains("other"), "pipelined after h2c: {:?}", String::from_utf8_lossy(&got));
}

#[test]
fn attack_a_door_checking_one_protocol_refuses_the_other() {
    for (check, tag) in [("sni", "ra1"), ("host", "ra2")] {
        let (t, _e, servers) = checked_door(tag, &[("RELAY_CHECK", check)]);
        let before = servers[0].hits.load(Ordering::SeqCst) + servers[1].hits.load(Ordering::SeqCst);
        let tls = crate::ops::client_hello("other.test");
        let tls_good = crate::ops::client_hello("fonts.test");
        let http = b"GET / HTTP/1.1\r\nHost: other.test\r\n\r\n".to_vec();
        let http_good = b"GET / HTTP/1.1\r\nHost: fonts.test\r\n\r\n".to_vec();
        // The protocol the door does not check is refused outright, even
        // naming the target (it could not be checked).
        let unchecked: Vec<&Vec<u8>> =
            if check == "sni" { vec![&http, &http_good] } else { vec![&tls, &tls_good] };
        for bytes in unchecked.iter().chain([if check == "sni" { &tls } else { &http }].iter()) {
            for port in [80, 443] {
                let mut s = connect(&t, t.door(port)).unwrap();
                let got = exchange(&mut s, &[bytes], Duration::ZERO);
                assert!(
                    !lower(&got).contains("other") && !lower(&got).contains("host: fonts"),
                    "{check} {port}: {got:?}"
                );
            }
        }
        let after = servers[0].hits.load(Ordering::SeqCst) + servers[1].hits.load(Ordering::SeqCst);
        assert_eq!(after, before, "RELAY_CHECK={check}: an unchecked opening was relayed");
        for door in [t.door(80), t.door6(443)] {
            let good = if check == "sni" { &tls_good } else { &http_good };
            let mut s = connect(&t, door).unwrap();
            assert_eq!(&exchange(&mut s, &[good], Duration::ZERO), good, "the control over {door}");
        }
    }
}

#[test]
fn attack_host_tricks_over_the_ipv6_door() {
    let (t, _e, _servers) = checked_door("ra6", &[]);
    let ok = "GET / HTTP/1.1\r\nHost: fonts.test\r\nContent-Length: 0\r\n\r\n";
    for req in [
        format!("{ok}GET / HTTP/1.1\r\nHost: other.test\r\n\r\n"),
        "GET http://other.test/ HTTP/1.1\r\nHost: fonts.test\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nHost: [fd00::1]\r\n\r\n".to_owned(),
        "GET / HTTP/1.1\r\nHost: other.test\r\n\r\n".to_owned(),
    ] {
        let mut s = connect(&t, t.door6(80)).unwrap();
        let got = exchange(&mut s, &[req.as_bytes()], Duration::ZERO);
        assert!(!lower(&got).contains("other") && !lower(&got).contains("fd00::1"), "{req:?}: {got:?}");
    }
    let other = crate::ops::client_hello("other.test");
    let mut s = connect(&t, t.door6(443)).unwrap();
    assert!(exchange(&mut s, &[&other], Duration::ZERO).is_empty());
}

/// Silent connections from one client: each is cut at HEADER_TIMEOUT;
/// two take the slots and the rest queue just before a victim's
/// connection. First come, first served would hand them each freed slot
/// ahead of the victim until its RELAY_QUEUE_TIMEOUT; per-client shares
/// serve the victim.
#[test]
fn attack_silent_connections_queue_ahead_of_another_client() {
    let (t, mut e, _servers) = checked_door(
        "raq",
        &[("MAX_CONNECTIONS", "2"), ("HEADER_TIMEOUT", "1s"), ("RELAY_QUEUE_TIMEOUT", "3s")],
    );
    let victim = second_client(&t);
    thread::sleep(Duration::from_millis(300));
    let mut silent: Vec<TcpStream> = (0..2).filter_map(|_| connect(&t, t.door(80)).ok()).collect();
    thread::sleep(Duration::from_millis(500));
    silent.extend((0..20).filter_map(|_| connect(&t, t.door(80)).ok()));
    thread::sleep(Duration::from_millis(100));
    let ok = b"GET / HTTP/1.1\r\nHost: fonts.test\r\nContent-Length: 0\r\n\r\n";
    let mut s = connect_from(&t, victim, t.door(80)).expect("the victim connects");
    let got = exchange(&mut s, &[ok], Duration::ZERO);
    let limit = e.event(
        &["\"relay.blocked\"", "\"reason\":\"limit\"", &victim.to_string()],
        Duration::from_millis(100),
    );
    drop(silent);
    assert_eq!(&got[..], &ok[..], "the victim queued behind one client's silent connections ({limit:?})");
}

/// The held half of the UDP flow limit: once the attacker's flows go
/// quiet, they expire after UDP_TIMEOUT and a flow it was refused at its
/// share opens.
#[test]
fn attack_udp_flows_free_after_udp_timeout() {
    let t = Trio::new("raf");
    let up = t.up_ip(2);
    let _udp = udp_echo(&t.up, SocketAddr::new(up, 7001));
    let _tcp = tcp_server(&t.up, SocketAddr::new(up, 7000), echo);
    let target = up.to_string();
    let _e = Egret::start(
        &t,
        &[
            ("TARGET", &target),
            ("PORT", "7000"),
            ("RELAYS", &format!("{target}:7001/udp")),
            ("MAX_CONNECTIONS", "4"),
            ("UDP_TIMEOUT", "1s"),
        ],
        t.door(7000),
    );
    let door = t.door(7001);
    let ns = t.inside.clone();
    let (blocked, later) = within(&ns, move || {
        let socks: Vec<UdpSocket> = (0..4).map(|_| UdpSocket::bind("0.0.0.0:0").unwrap()).collect();
        for s in &socks {
            s.set_read_timeout(Some(Duration::from_millis(1500))).unwrap();
            s.send_to(b"mine", door).unwrap();
            let mut buf = [0u8; 16];
            s.recv(&mut buf).expect("the attacker's flow");
        }
        // A fifth source port: the client holds its share (MAX_CONNECTIONS
        // for one client alone).
        let v = UdpSocket::bind("0.0.0.0:0").unwrap();
        v.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        v.send_to(b"fifth", door).unwrap();
        let mut buf = [0u8; 16];
        let blocked = v.recv(&mut buf).is_err();
        // The first four go quiet; their flows idle out.
        let got = crate::netns::wait_for(Duration::from_secs(8), || {
            v.send_to(b"fifth", door).ok()?;
            v.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
        });
        (blocked, got)
    });
    assert!(blocked, "the control: the client's flows were all taken");
    assert_eq!(later.as_deref(), Some(&b"fifth"[..]), "the flows never freed");
}

/// A policy widens the names a door takes: the widening is exactly the
/// allowlist (its wildcard's subdomains), no look-alike.
#[test]
fn attack_policy_names_do_not_widen_beyond_the_allowlist() {
    let (t, _e, _servers) = checked_door("raw", &[("ALLOWLIST_DOMAINS", "*.gstatic.test,cdn.test")]);
    let allowed = ["a.gstatic.test", "A.GSTATIC.TEST.", "cdn.test"];
    let refused = [
        "gstatic.test.other.test",
        "othergstatic.test",
        "other-gstatic.test",
        "cdn.test.other.test",
        "othercdn.test",
        "x.cdn.test",
        "other.test",
        "*.gstatic.test",
        "a.gstatic.test\0.other.test",
    ];
    for (names, pass) in [(&allowed[..], true), (&refused[..], false)] {
        for name in names {
            let req = format!("GET / HTTP/1.1\r\nHost: {name}\r\nContent-Length: 0\r\n\r\n");
            let mut s = connect(&t, t.door(80)).unwrap();
            let got = exchange(&mut s, &[req.as_bytes()], Duration::ZERO);
            assert_eq!(got == req.as_bytes(), pass, "Host {name:?}: {:?}", String::from_utf8_lossy(&got));
            if name.contains('\0') || name.starts_with('*') {
                continue;
            }
            let hello = raw_hello(&[(0, sni_ext(&[(0, name)]))]);
            let mut s = connect(&t, t.door(443)).unwrap();
            let got = exchange(&mut s, &[&hello], Duration::ZERO);
            assert_eq!(got == hello, pass, "SNI {name:?}");
        }
    }
}

/// An IP target: the Host / SNI must be that address; other addresses
/// and spellings of it that an upstream could read as a name are refused.
#[test]
fn attack_ip_target_takes_only_its_own_literal() {
    let t = Trio::new("rai");
    let up = t.up_ip(2);
    let _web = tcp_server(&t.up, SocketAddr::new(up, 80), echo);
    let target = up.to_string();
    let _e = Egret::start(&t, &[("TARGET", &target), ("PORT", "80"), ("RELAY_CHECK", "host")], t.door(80));
    let n = t.n;
    let own = [target.clone(), format!("{target}:80")];
    let others = [
        format!("10.202.{n}.3"),
        format!("{target}.nip.io"),
        format!("::ffff:{target}"),
        format!("[::ffff:{target}]"),
        format!("0x0a.202.{n}.2"),
        "other.test".to_owned(),
        format!("{target}@other.test"),
    ];
    for (hosts, pass) in [(&own[..], true), (&others[..], false)] {
        for host in hosts {
            let req = format!("GET / HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\n\r\n");
            let mut s = connect(&t, t.door(80)).unwrap();
            let got = exchange(&mut s, &[req.as_bytes()], Duration::ZERO);
            assert_eq!(got == req.as_bytes(), pass, "Host {host:?}: {:?}", String::from_utf8_lossy(&got));
        }
    }
}

/// Connects from the internal namespace out of any local address `from`.
fn connect_from_any(t: &Trio, from: IpAddr, to: SocketAddr) -> std::io::Result<TcpStream> {
    use nix::sys::socket::{
        bind, connect as nconnect, socket, AddressFamily, SockFlag, SockType, SockaddrStorage,
    };
    let ns = t.inside.clone();
    within(&ns, move || {
        let fam = if to.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
        let fd = socket(fam, SockType::Stream, SockFlag::empty(), None)?;
        bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(SocketAddr::new(from, 0)))?;
        nconnect(std::os::fd::AsRawFd::as_raw_fd(&fd), &SockaddrStorage::from(to))?;
        Ok(TcpStream::from(fd))
    })
}

/// Round 5: one client holds every slot from six IPv6 addresses of its
/// /64 (a host picks them at will), each connection kept past
/// HEADER_TIMEOUT by a first head whose body trickles in (a body is no
/// head): another client is served all the same.
#[test]
fn attack_many_addresses_of_one_64_and_a_trickled_body_hold_no_other_clients_slot() {
    let (t, mut e, _servers) = checked_door(
        "r64",
        &[("MAX_CONNECTIONS", "3"), ("RELAY_QUEUE_TIMEOUT", "3s"), ("HEADER_TIMEOUT", "1s")],
    );
    let victim = second_client(&t);
    let addrs: Vec<IpAddr> =
        (0x10..0x16).map(|h| format!("fd00:201:{}::{h:x}", t.n).parse().unwrap()).collect();
    for a in &addrs {
        sh(&["ip", "-n", &t.inside, "addr", "add", &format!("{a}/64"), "dev", "eth0", "nodad"]);
    }
    thread::sleep(Duration::from_millis(500));
    let head = b"POST / HTTP/1.1\r\nHost: fonts.test\r\nContent-Length: 100000\r\n\r\n";
    let stop = Arc::new(AtomicBool::new(false));
    let mut held = Vec::new();
    for a in &addrs {
        if let Ok(mut s) = connect_from_any(&t, *a, t.door6(80)) {
            if s.write_all(head).is_ok() {
                held.push(s);
            }
        }
    }
    let held_n = held.len();
    let trickler = {
        let stop = stop.clone();
        thread::spawn(move || {
            for _ in 0..40 {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                for s in &mut held {
                    let _ = s.write_all(b"x");
                }
                thread::sleep(Duration::from_millis(200));
            }
        })
    };
    thread::sleep(Duration::from_millis(1500));
    let ok = b"GET / HTTP/1.1\r\nHost: fonts.test\r\nContent-Length: 0\r\n\r\n";
    let mut s = connect_from(&t, victim, t.door(80)).expect("the victim connects");
    let got = exchange(&mut s, &[ok], Duration::ZERO);
    let limit = e.event(&["\"relay.blocked\"", "\"reason\":\"limit\""], Duration::from_millis(100));
    stop.store(true, Ordering::SeqCst);
    trickler.join().expect("trickler");
    eprintln!("relay r64: {held_n} connections from one /64; the victim got {} bytes ({limit:?})", got.len());
    assert_eq!(&got[..], &ok[..], "a /64's many addresses held every slot ({limit:?})");
}
