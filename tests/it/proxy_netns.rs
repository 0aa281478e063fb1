//! RAII network namespaces for the kernel-touching tests: a workload
//! namespace and an upstream namespace joined by a veth pair
//! (10.200.N.1 / 10.200.N.2 and fd00:200:N::1 / fd00:200:N::2), removed on
//! drop even when the test fails. Names carry the pid and a counter, so
//! tests run in parallel. Traffic stays inside these namespaces.

use std::fs::File;
use std::net::IpAddr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

pub struct Pair {
    /// The workload namespace (clients, egret, the redirect).
    pub work: String,
    /// The upstream namespace (test servers).
    pub up: String,
    pub n: u32,
}

/// Runs a command and panics with its output when it fails.
pub fn sh(args: &[&str]) {
    let out = Command::new(args[0]).args(&args[1..]).stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!("{}: {e} (the namespace tests need root and iproute2/nftables)", args.join(" "))
    });
    assert!(
        out.status.success(),
        "{} failed: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pair {
    /// Creates both namespaces, the veth pair and the addresses.
    pub fn new(tag: &str) -> Pair {
        let c = COUNTER.fetch_add(1, Ordering::SeqCst);
        let pid = std::process::id();
        let n = 1 + (pid.wrapping_mul(7).wrapping_add(c)) % 250;
        let pair =
            Pair { work: format!("egret-{tag}-w-{pid}-{c}"), up: format!("egret-{tag}-u-{pid}-{c}"), n };
        sh(&["ip", "netns", "add", &pair.work]);
        // From here on, Drop removes what exists.
        sh(&["ip", "netns", "add", &pair.up]);
        let (w, u) = (pair.work.as_str(), pair.up.as_str());
        sh(&["ip", "-n", w, "link", "add", "veth-w", "type", "veth", "peer", "name", "veth-u", "netns", u]);
        for (ns, dev, host) in [(w, "veth-w", 1), (u, "veth-u", 2)] {
            sh(&["ip", "-n", ns, "addr", "add", &format!("10.200.{n}.{host}/24"), "dev", dev]);
            sh(&["ip", "-n", ns, "addr", "add", &format!("fd00:200:{n}::{host}/64"), "dev", dev, "nodad"]);
            sh(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            sh(&["ip", "-n", ns, "link", "set", dev, "up"]);
        }
        pair
    }

    pub fn work_v4(&self) -> IpAddr {
        format!("10.200.{}.1", self.n).parse().unwrap()
    }

    pub fn up_v4(&self) -> IpAddr {
        format!("10.200.{}.2", self.n).parse().unwrap()
    }

    pub fn up_v6(&self) -> IpAddr {
        format!("fd00:200:{}::2", self.n).parse().unwrap()
    }

    /// A second upstream address, that no test name resolves to.
    pub fn up_other_v4(&self) -> IpAddr {
        format!("10.200.{}.3", self.n).parse().unwrap()
    }

    /// Adds [`Pair::up_other_v4`] to the upstream side.
    pub fn add_other_address(&self) {
        sh(&["ip", "-n", &self.up, "addr", "add", &format!("{}/24", self.up_other_v4()), "dev", "veth-u"]);
    }

    /// `ip netns exec NS PROGRAM`: the program runs in the namespace.
    pub fn exec(&self, ns: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns, program]);
        c
    }

    /// Runs `f` on a thread that has entered namespace `ns`; sockets it
    /// creates stay in that namespace whichever thread uses them later.
    pub fn within<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
        let path = format!("/run/netns/{ns}");
        std::thread::spawn(move || {
            let fd = File::open(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
            nix::sched::setns(&fd, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            f()
        })
        .join()
        .expect("namespace thread panicked")
    }

    /// Installs the test redirect in the workload namespace: TCP 80/443 to
    /// the proxy ports, except egret's own marked sockets. (The real
    /// ruleset comes from `egret run`; this stands in for it.)
    pub fn redirect(&self, mark: u32, http_port: u16, https_port: u16) {
        let rules = format!(
            "table inet egret_test {{\n  chain out {{\n    type nat hook output priority -100; policy accept;\n    meta mark {mark:#x} accept\n    tcp dport 80 redirect to :{http_port}\n    tcp dport 443 redirect to :{https_port}\n  }}\n}}\n"
        );
        let mut child = self
            .exec(&self.work, "nft")
            .args(["-f", "-"])
            .stdin(Stdio::piped())
            .spawn()
            .expect("nft (install nftables)");
        use std::io::Write;
        child.stdin.take().unwrap().write_all(rules.as_bytes()).unwrap();
        assert!(child.wait().unwrap().success(), "nft -f failed for:\n{rules}");
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and the peer.
        for ns in [&self.work, &self.up] {
            let _ = Command::new("ip").args(["netns", "del", ns]).stderr(Stdio::null()).status();
        }
    }
}
