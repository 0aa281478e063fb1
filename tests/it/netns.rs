//! The one namespace harness of the integration tests: a workload
//! namespace (where egret's rules go) and an upstream namespace joined by
//! a veth pair ([`Pair`]), a lone namespace ([`Netns`]), running code on a
//! thread inside one ([`within`]), and the kill-on-drop process guard
//! ([`Guard`]). Names carry the pid and a counter so tests run in
//! parallel and never meet namespaces of other runs; everything is
//! removed on drop, also when the test fails.
//!
//! Addresses (private test ranges only):
//! * workload: 10.200.N.1/24, fd00:200:N::1/64
//! * upstream: 10.200.N.2 and .3 /24, fd00:200:N::2 and ::3 /64
//!   (`.2`/`::2` are the "allowed" ones in most tests, `.3`/`::3` not).

use std::io::{BufRead, BufReader};
use std::net::IpAddr;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Pair {
    pub work: String,
    pub up: String,
    pub n: u32,
}

pub(crate) fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip (needs iproute2)");
    assert!(
        out.status.success(),
        "ip {}: {} (the kernel tests need root)",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr).trim()
    );
}

impl Pair {
    pub fn new() -> Pair {
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let pid = std::process::id();
        let n = k % 250 + 1;
        let p = Pair { work: format!("egret-w-{pid}-{k}"), up: format!("egret-u-{pid}-{k}"), n };
        ip(&["netns", "add", &p.work]);
        ip(&["netns", "add", &p.up]);
        // The veth ends are created directly inside the namespaces, so no
        // interface name ever appears in the host namespace.
        ip(&["-n", &p.work, "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", &p.up]);
        for (ns, hosts) in [(&p.work, &[1][..]), (&p.up, &[2, 3][..])] {
            ip(&["-n", ns, "link", "set", "lo", "up"]);
            ip(&["-n", ns, "link", "set", "eth0", "up"]);
            for h in hosts {
                ip(&["-n", ns, "addr", "add", &format!("10.200.{n}.{h}/24"), "dev", "eth0"]);
                ip(&[
                    "-n",
                    ns,
                    "-6",
                    "addr",
                    "add",
                    &format!("fd00:200:{n}::{h}/64"),
                    "dev",
                    "eth0",
                    "nodad",
                ]);
            }
        }
        p
    }

    pub fn v4(&self, host: u8) -> String {
        format!("10.200.{}.{host}", self.n)
    }

    pub fn v6(&self, host: u8) -> String {
        format!("fd00:200:{}::{host}", self.n)
    }

    /// [`Pair::v4`] as an address.
    pub fn ip4(&self, host: u8) -> IpAddr {
        self.v4(host).parse().expect("test address")
    }

    /// [`Pair::v6`] as an address.
    pub fn ip6(&self, host: u8) -> IpAddr {
        self.v6(host).parse().expect("test address")
    }

    /// A command run inside namespace `ns`.
    pub fn exec(ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Starts a process in `ns` and waits (bounded) for it to print
    /// `ready` on stdout.
    pub fn spawn_ready(ns: &str, program: &str, args: &[&str]) -> Guard {
        let mut c = Pair::exec(ns, program);
        c.args(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::inherit());
        let mut child = c.spawn().expect("spawn helper");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::new(stdout);
            let mut line = String::new();
            loop {
                line.clear();
                match r.read_line(&mut line) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if tx.send(line.trim().to_owned()).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let g = Guard { child, lines: rx };
        let first = g.line(Duration::from_secs(60));
        assert_eq!(first.as_deref(), Some("ready"), "{program} {args:?} did not get ready");
        g
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.work, &self.up] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// A child process killed (by its pid) on drop, with its stdout lines
/// (when [`Pair::spawn_ready`] made it).
pub struct Guard {
    pub child: Child,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Guard {
    /// Guards a process started elsewhere (its stdout is not read).
    pub fn of(child: Child) -> Guard {
        let (_, lines) = std::sync::mpsc::channel();
        Guard { child, lines }
    }

    pub fn line(&self, timeout: Duration) -> Option<String> {
        self.lines.recv_timeout(timeout).ok()
    }

    pub fn send_line(&mut self, s: &str) {
        use std::io::Write;
        let stdin = self.child.stdin.as_mut().expect("piped stdin");
        writeln!(stdin, "{s}").expect("write to helper");
        stdin.flush().expect("flush helper stdin");
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits (bounded) for `f` to return `Some`.
pub fn wait_for<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Some(x) = f() {
            return Some(x);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    None
}

/// Runs `f` on a thread that has entered namespace `ns`; sockets it opens
/// (and threads it starts) stay in that namespace wherever they are used
/// later.
pub fn within<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let fd = std::fs::File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET)
            .unwrap_or_else(|e| panic!("setns {path} (needs root): {e}"));
        f()
    })
    .join()
    .expect("namespace thread panicked")
}

/// A lone network namespace made by a test (loopback up), deleted on drop.
pub struct Netns(pub String);

impl Netns {
    pub fn new(what: &str) -> Netns {
        let k = COUNTER.fetch_add(1, Ordering::Relaxed);
        let name = format!("egret-{what}-{}-{k}", std::process::id());
        ip(&["netns", "add", &name]);
        let ns = Netns(name);
        ip(&["-n", &ns.0, "link", "set", "lo", "up"]);
        ns
    }

    /// Runs a command inside; panics with its output when it fails.
    pub fn exec(&self, args: &[&str]) -> String {
        let out = Pair::exec(&self.0, args[0]).args(&args[1..]).output().expect("ip netns exec");
        assert!(out.status.success(), "{args:?} in {}: {}", self.0, String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// [`within`] this namespace.
    pub fn run<T: Send + 'static>(&self, f: impl FnOnce() -> T + Send + 'static) -> T {
        within(&self.0, f)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}
