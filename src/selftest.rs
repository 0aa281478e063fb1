//! `egret selftest`: attacks the live ruleset from inside the namespace,
//! as a workload would, and says for each technique whether it held.
//!
//! Every technique aims at a canary in documentation space
//! ([`CANARY4`], [`CANARY6`]). A temporary `table netdev egret_selftest`
//! counts and drops, at each interface's egress after egret's own chains,
//! every frame addressed to the canary: whatever got past egret, by the IP
//! rules or around them, is counted there and goes no further. Nothing
//! leaves the pod.
//!
//! The parent (with egret's CAP_NET_ADMIN) installs the counting table,
//! proves it counts with a control packet carrying egret's own mark, then
//! runs each technique in a child process of its own that has dropped to
//! a workload's privilege: `nobody` without capabilities (uid 0 without
//! capabilities where egret cannot change uid), or uid 0 with only
//! CAP_NET_RAW for the raw-socket techniques (skipped when egret itself
//! lacks it). A counter that moved during a technique is a BYPASS. A
//! technique whose frames no hook sees (AF_XDP) counts for itself: its
//! child prints `around N` for the N ways it found past every rule.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, UdpSocket};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::socket::{self, sockopt, AddressFamily, MsgFlags, SockFlag, SockType, SockaddrStorage};

use crate::nft::ruleset::{Chain, ChainPolicy, ChainType, Hook, Match, Rule, Stmt, Table, TableFamily};
use crate::outbound;

/// TEST-NET-1 and the IPv6 documentation prefix: never anyone's host.
pub const CANARY4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 77);
pub const CANARY6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x77);
const TABLE: &str = "egret_selftest";
/// A technique's child process is killed after this.
const CHILD_LIMIT: Duration = Duration::from_secs(15);
/// Every socket operation of a technique waits at most this.
const STEP: Duration = Duration::from_millis(700);
const NOBODY: u32 = 65534;

/// What a technique's child needs to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Privilege {
    /// No capabilities (uid 65534 where egret can change uid).
    Nobody,
    /// uid 0 with CAP_NET_RAW only, a default container capability.
    NetRaw,
}

impl Privilege {
    fn name(self) -> &'static str {
        match self {
            Privilege::Nobody => "nobody",
            Privilege::NetRaw => "net_raw",
        }
    }
}

/// One way out the self-test tries.
pub struct Technique {
    pub name: &'static str,
    pub privilege: Privilege,
    /// Needs a route to the IPv6 canary.
    pub v6: bool,
    pub about: &'static str,
    run: fn(&Ctx) -> io::Result<()>,
}

/// What a technique's child knows.
struct Ctx {
    http_port: u16,
    https_port: u16,
}

pub const TECHNIQUES: &[Technique] = &[
    Technique {
        name: "direct",
        privilege: Privilege::Nobody,
        v6: false,
        about: "TCP, UDP and ICMP straight to the canary",
        run: direct,
    },
    Technique {
        name: "quic",
        privilege: Privilege::Nobody,
        v6: false,
        about: "UDP 443 (QUIC) to the canary",
        run: quic,
    },
    Technique {
        name: "foreign-resolver",
        privilege: Privilege::Nobody,
        v6: false,
        about: "DNS over UDP and TCP to the canary as resolver",
        run: foreign_resolver,
    },
    Technique {
        name: "listener-direct",
        privilege: Privilege::Nobody,
        v6: false,
        about: "HTTP and TLS straight at egret's listeners, naming the canary",
        run: listener_direct,
    },
    Technique {
        name: "forged-reply-udp6",
        privilege: Privilege::Nobody,
        v6: true,
        about: "an IPV6_FREEBIND \"inbound\" UDP flow, then its \"reply\"",
        run: forged_udp6,
    },
    Technique {
        name: "forged-reply-tcp6",
        privilege: Privilege::Nobody,
        v6: true,
        about: "an IPV6_FREEBIND SYN into a full accept queue, then a simultaneous open",
        run: forged_tcp6,
    },
    Technique {
        name: "forged-reply-udp4",
        privilege: Privilege::NetRaw,
        v6: false,
        about: "an IP_TRANSPARENT \"inbound\" UDP flow, then its \"reply\"",
        run: forged_udp4,
    },
    Technique {
        name: "forged-reply-tcp4",
        privilege: Privilege::NetRaw,
        v6: false,
        about: "a raw SYN with a bad checksum, then a simultaneous open",
        run: forged_tcp4,
    },
    Technique {
        name: "guessed-marks",
        privilege: Privilege::NetRaw,
        v6: false,
        about: "SO_MARK values a workload can guess or read from conntrack",
        run: guessed_marks,
    },
    Technique {
        name: "nd-covert",
        privilege: Privilege::NetRaw,
        v6: true,
        about: "ICMPv6 neighbour discovery and MLD messages to the canary",
        run: nd_covert,
    },
    Technique {
        name: "af-packet",
        privilege: Privilege::NetRaw,
        v6: false,
        about: "raw Ethernet frames from an AF_PACKET socket",
        run: af_packet,
    },
    Technique {
        name: "af-xdp",
        privilege: Privilege::NetRaw,
        v6: false,
        about: "an AF_XDP socket on an interface queue (its frames pass no netfilter hook)",
        run: af_xdp,
    },
    Technique {
        name: "tag-leak",
        privilege: Privilege::NetRaw,
        v6: false,
        about: "the egress tag read off looped-back multicast, then put on raw frames",
        run: tag_leak,
    },
    Technique {
        name: "nd-user-socket",
        privilege: Privilege::NetRaw,
        v6: true,
        about: "neighbour discovery in RFC 4861's own shape from a raw ICMPv6 socket",
        run: nd_user_socket,
    },
];

/// A technique's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Held,
    /// Frames to the canary left egret's rules during it.
    Bypass(u64),
    /// The technique found this many ways past every hook itself (sockets
    /// whose frames no rule sees, so none reach the counting table).
    Around(u64),
    /// Not tried, and why.
    Skipped(String),
}

impl Verdict {
    pub fn is_bypass(&self) -> bool {
        matches!(self, Verdict::Bypass(_) | Verdict::Around(_))
    }
}

#[derive(Debug, Clone)]
pub struct Line {
    pub technique: &'static str,
    pub about: &'static str,
    pub privilege: &'static str,
    pub verdict: Verdict,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.verdict {
            Verdict::Held => write!(f, "held    {:<18} {} ({})", self.technique, self.about, self.privilege),
            Verdict::Bypass(n) => write!(
                f,
                "BYPASS  {:<18} {} ({}): {n} packet(s) reached the canary",
                self.technique, self.about, self.privilege
            ),
            Verdict::Around(n) => write!(
                f,
                "BYPASS  {:<18} {} ({}): {n} way(s) past every rule",
                self.technique, self.about, self.privilege
            ),
            Verdict::Skipped(why) => write!(f, "skipped {:<18} {why}", self.technique),
        }
    }
}

/// Every technique's line.
#[derive(Debug, Clone)]
pub struct Report {
    pub lines: Vec<Line>,
}

impl Report {
    pub fn bypasses(&self) -> Vec<&Line> {
        self.lines.iter().filter(|l| l.verdict.is_bypass()).collect()
    }

    /// One line for `/health` and the event.
    pub fn summary(&self) -> String {
        let held = self.lines.iter().filter(|l| l.verdict == Verdict::Held).count();
        let skipped = self.lines.iter().filter(|l| matches!(l.verdict, Verdict::Skipped(_))).count();
        let bypass: Vec<&str> = self.bypasses().iter().map(|l| l.technique).collect();
        if bypass.is_empty() {
            format!("selftest: {held} techniques held, {skipped} skipped")
        } else {
            format!("selftest: BYPASS by {} ({held} held, {skipped} skipped)", bypass.join(", "))
        }
    }
}

/// Why the self-test could not judge at all.
#[derive(Debug)]
pub enum SelftestError {
    NotInstalled,
    NoRoute,
    Nft(crate::nft::NftError),
    /// The control packet (egret's own mark) was not counted.
    Control(String),
    Io(io::Error),
}

impl std::fmt::Display for SelftestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SelftestError::NotInstalled => f.write_str("selftest: egret's ruleset is not installed here (run `egret run` or `egret init` first)"),
            SelftestError::NoRoute => write!(f, "selftest: no route to the canary {CANARY4} in this namespace, so no technique can be judged (the pod needs a default route)"),
            SelftestError::Nft(e) => write!(f, "selftest: {e}"),
            SelftestError::Control(e) => write!(f, "selftest: the canary did not count egret's own control packet ({e}); its verdicts would mean nothing"),
            SelftestError::Io(e) => write!(f, "selftest: {e}"),
        }
    }
}

impl std::error::Error for SelftestError {}

impl From<crate::nft::NftError> for SelftestError {
    fn from(e: crate::nft::NftError) -> Self {
        SelftestError::Nft(e)
    }
}

/// What the parent needs.
pub struct Options {
    /// egret's bypass mark; read from the installed ruleset when `None`.
    pub mark: Option<u32>,
    pub http_port: u16,
    pub https_port: u16,
    /// The egret binary the children run (normally this one).
    pub exe: PathBuf,
}

/// The counting table: at each interface's egress, after egret's chains,
/// frames to the canary are counted and dropped.
fn canary_table(devices: &[String]) -> Table {
    let v4 = Rule {
        matches: vec![
            Match::LinkBytes { offset: 12, value: vec![0x08, 0x00] },
            Match::LinkBytes { offset: 30, value: CANARY4.octets().to_vec() },
        ],
        stmts: vec![Stmt::Counter, Stmt::Drop],
    };
    let v6 = Rule {
        matches: vec![
            Match::LinkBytes { offset: 12, value: vec![0x86, 0xdd] },
            Match::LinkBytes { offset: 38, value: CANARY6.octets().to_vec() },
        ],
        stmts: vec![Stmt::Counter, Stmt::Drop],
    };
    // A neighbour solicitation whose target is the canary (the kernel never
    // sends one: the canary is off-link), wherever it is addressed.
    let nd = Rule {
        matches: vec![
            Match::LinkBytes { offset: 12, value: vec![0x86, 0xdd] },
            Match::LinkBytes { offset: 20, value: vec![58] },
            Match::LinkBytes { offset: 54, value: vec![135] },
            Match::LinkBytes { offset: 62, value: CANARY6.octets().to_vec() },
        ],
        stmts: vec![Stmt::Counter, Stmt::Drop],
    };
    let chains = devices
        .iter()
        .map(|d| Chain {
            name: format!("canary_{d}"),
            device: Some(d.clone()),
            kind: ChainType::Filter,
            hook: Hook::Egress,
            priority: 100,
            policy: ChainPolicy::Accept,
            rules: vec![v4.clone(), v6.clone(), nd.clone()],
        })
        .collect();
    Table { family: TableFamily::Netdev, name: TABLE, chains }
}

/// Removes the counting table however the run ends.
struct Installed;

impl Drop for Installed {
    fn drop(&mut self) {
        if let Err(e) = crate::nft::drop_tables(&[(TableFamily::Netdev, TABLE)]) {
            log::error!("selftest: removing table netdev {TABLE}: {e}");
        }
    }
}

fn counted() -> Result<u64, SelftestError> {
    Ok(crate::nft::counted(TableFamily::Netdev, TABLE)?)
}

/// Waits (bounded) for frames queued by a finished step to be counted.
fn settle_count(before: u64) -> Result<u64, SelftestError> {
    let until = Instant::now() + Duration::from_millis(300);
    let mut n = counted()?;
    while n == before && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(50));
        n = counted()?;
    }
    Ok(n)
}

/// Runs every technique; the report, or why nothing could be judged.
pub fn run(opts: &Options) -> Result<Report, SelftestError> {
    let mark = match opts.mark {
        Some(m) => m,
        None => crate::nft::installed_mark()?.ok_or(SelftestError::NotInstalled)?,
    };
    let v4 = route_source(IpAddr::V4(CANARY4)).ok_or(SelftestError::NoRoute)?;
    let v6 = route_source(IpAddr::V6(CANARY6));
    let host = crate::nft::host::read();
    crate::nft::apply_tables(&[canary_table(&host.devices)])?;
    let _installed = Installed;

    // Control: egret's own traffic passes, so this must be counted.
    let before = counted()?;
    control(mark, v4, v6).map_err(SelftestError::Io)?;
    let after = settle_count(before)?;
    if after == before {
        return Err(SelftestError::Control(format!("sent from {v4} with the bypass mark, counted {after}")));
    }

    let can_raw = has_capability(crate::sys::CAP_NET_RAW);
    let mut lines = Vec::new();
    for t in TECHNIQUES {
        let line =
            |verdict| Line { technique: t.name, about: t.about, privilege: t.privilege.name(), verdict };
        if t.v6 && v6.is_none() {
            lines.push(line(Verdict::Skipped(format!("no route to the IPv6 canary {CANARY6}"))));
            continue;
        }
        if t.privilege == Privilege::NetRaw && !can_raw {
            lines.push(line(Verdict::Skipped(
                "egret itself has no CAP_NET_RAW to hand to the attacker".into(),
            )));
            continue;
        }
        let before = counted()?;
        let around = match child(opts, t) {
            Ok(n) => n,
            Err(e) => {
                lines.push(line(Verdict::Skipped(format!("the technique's process failed: {e}"))));
                continue;
            }
        };
        let after = settle_count(before)?;
        let counted = after.saturating_sub(before);
        lines.push(line(if counted > 0 {
            Verdict::Bypass(counted)
        } else if around > 0 {
            Verdict::Around(around)
        } else {
            Verdict::Held
        }));
    }
    Ok(Report { lines })
}

/// egret's own packets to the canary (UDP, v4 and v6 where routed).
fn control(mark: u32, v4: IpAddr, v6: Option<IpAddr>) -> io::Result<()> {
    for (dst, src) in [(Some(IpAddr::V4(CANARY4)), Some(v4)), (Some(IpAddr::V6(CANARY6)), v6)] {
        let (Some(dst), Some(_)) = (dst, src) else { continue };
        // The drop at the canary answers EPERM/ENOBUFS: sent is enough
        // (and a control that never arrives is reported by the caller).
        if let Ok(s) = outbound::udp(SocketAddr::new(dst, 9), Some(mark), false) {
            let _ = s.send(b"egret selftest control");
        }
    }
    Ok(())
}

/// Runs technique `t` in its own process: the ways past every hook it
/// reported itself (`around N` on its stdout), 0 for most.
fn child(opts: &Options, t: &Technique) -> io::Result<u64> {
    let mut c = Command::new(&opts.exe);
    c.args(["selftest", "--technique", t.name, "--privilege", t.privilege.name()]);
    c.args(["--ports", &format!("{},{}", opts.http_port, opts.https_port)]);
    c.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut ch = c.spawn()?;
    let until = Instant::now() + CHILD_LIMIT;
    loop {
        if let Some(st) = ch.try_wait()? {
            if st.success() {
                let mut out = String::new();
                if let Some(mut o) = ch.stdout.take() {
                    let _ = o.read_to_string(&mut out);
                }
                return Ok(around(&out));
            }
            let mut err = String::new();
            if let Some(mut e) = ch.stderr.take() {
                let _ = e.read_to_string(&mut err);
            }
            return Err(io::Error::other(format!("{st}: {}", err.trim())));
        }
        if Instant::now() > until {
            let _ = ch.kill();
            let _ = ch.wait();
            return Err(io::Error::other(format!("still running after {CHILD_LIMIT:?}")));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The `around N` lines of a technique's output, summed.
fn around(out: &str) -> u64 {
    out.lines().filter_map(|l| l.strip_prefix("around ")).filter_map(|n| n.trim().parse::<u64>().ok()).sum()
}

/// Whether this process has `cap` in its permitted set.
fn has_capability(cap: u32) -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapPrm:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .is_some_and(|bits| bits & (1 << cap) != 0)
}

/// The source address the kernel would use towards `dst`; `None` without
/// a route.
fn route_source(dst: IpAddr) -> Option<IpAddr> {
    let s = if dst.is_ipv4() { UdpSocket::bind("0.0.0.0:0") } else { UdpSocket::bind("[::]:0") }.ok()?;
    s.connect(SocketAddr::new(dst, 9)).ok()?;
    s.local_addr().ok().map(|a| a.ip())
}

// ---------------------------------------------------------------------------
// The child: drop to the technique's privilege, run it, exit.

/// `egret selftest --technique NAME --privilege P --ports H,S`.
pub fn technique_main(name: &str, privilege: &str, http_port: u16, https_port: u16) -> io::Result<()> {
    let t = TECHNIQUES
        .iter()
        .find(|t| t.name == name && t.privilege.name() == privilege)
        .ok_or_else(|| io::Error::other(format!("no technique {name} as {privilege}")))?;
    drop_privilege(t.privilege)?;
    (t.run)(&Ctx { http_port, https_port })
}

fn drop_privilege(p: Privilege) -> io::Result<()> {
    use nix::unistd::{setgroups, setresgid, setresuid, Gid, Uid};
    match p {
        Privilege::Nobody => {
            let gid = Gid::from_raw(NOBODY);
            let uid = Uid::from_raw(NOBODY);
            let became =
                setgroups(&[]).and_then(|_| setresgid(gid, gid, gid)).and_then(|_| setresuid(uid, uid, uid));
            if became.is_err() {
                // No CAP_SETUID (egret's image keeps NET_ADMIN only): uid 0
                // without any capability is as unprivileged as we can be.
                crate::sys::keep_only_capabilities(&[])?;
            }
        }
        Privilege::NetRaw => crate::sys::keep_only_capabilities(&[crate::sys::CAP_NET_RAW])?,
    }
    Ok(())
}

fn canary4(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V4(CANARY4), port)
}

fn canary6(port: u16) -> SocketAddr {
    SocketAddr::new(IpAddr::V6(CANARY6), port)
}

/// Sends and forgets: a refusal is the rules doing their job.
fn udp_to(to: SocketAddr, payload: &[u8]) {
    let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
    if let Ok(s) = UdpSocket::bind(any) {
        let _ = s.send_to(payload, to);
    }
}

fn tcp_to(to: SocketAddr, payload: &[u8]) {
    if let Ok(mut s) = TcpStream::connect_timeout(&to, STEP) {
        let _ = s.set_write_timeout(Some(STEP));
        let _ = s.write_all(payload);
    }
}

fn direct(_: &Ctx) -> io::Result<()> {
    for to in [canary4(9), canary6(9)] {
        udp_to(to, b"egret selftest");
        tcp_to(to, b"egret selftest");
    }
    // ICMP echo through a ping socket, where the group range allows one.
    if let Ok(fd) = socket::socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        socket::SockProtocol::Icmp,
    ) {
        let echo = [8u8, 0, 0, 0, 0, 1, 0, 1, b'e', b'g'];
        let _ = socket::sendto(fd.as_raw_fd(), &echo, &SockaddrStorage::from(canary4(0)), MsgFlags::empty());
    }
    Ok(())
}

fn quic(_: &Ctx) -> io::Result<()> {
    udp_to(canary4(443), &[0xc0; 64]);
    udp_to(canary6(443), &[0xc0; 64]);
    Ok(())
}

/// A DNS query for `egret-selftest.invalid`.
fn dns_query() -> Vec<u8> {
    let mut q = vec![0x51, 0x7e, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
    for label in ["egret-selftest", "invalid"] {
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    q
}

fn foreign_resolver(_: &Ctx) -> io::Result<()> {
    let q = dns_query();
    udp_to(canary4(53), &q);
    udp_to(canary6(53), &q);
    let mut framed = (q.len() as u16).to_be_bytes().to_vec();
    framed.extend_from_slice(&q);
    tcp_to(canary4(53), &framed);
    Ok(())
}

fn listener_direct(cx: &Ctx) -> io::Result<()> {
    let req = format!("GET / HTTP/1.1\r\nHost: {CANARY4}\r\nConnection: close\r\n\r\n");
    for ip in [IpAddr::V4(Ipv4Addr::LOCALHOST), IpAddr::V6(Ipv6Addr::LOCALHOST)] {
        tcp_to(SocketAddr::new(ip, cx.http_port), req.as_bytes());
        tcp_to(SocketAddr::new(ip, cx.https_port), &[22, 3, 1, 0, 4, 1, 0, 0, 0]);
    }
    Ok(())
}

fn socket_for(addr: SocketAddr, ty: SockType) -> io::Result<OwnedFd> {
    let fam = if addr.is_ipv4() { AddressFamily::Inet } else { AddressFamily::Inet6 };
    Ok(socket::socket(fam, ty, SockFlag::SOCK_CLOEXEC, None)?)
}

/// A free port on `ip` for `ty`.
fn free_port(ip: IpAddr, ty: SockType) -> io::Result<u16> {
    let fd = socket_for(SocketAddr::new(ip, 0), ty)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(ip, 0)))?;
    let local: SockaddrStorage = socket::getsockname(fd.as_raw_fd())?;
    Ok(local.as_sockaddr_in().map(|a| a.port()).or(local.as_sockaddr_in6().map(|a| a.port())).unwrap_or(0))
}

const IPPROTO_IPV6: i32 = 41;
const IPV6_FREEBIND: i32 = 78;
const IPV6_UNICAST_HOPS: i32 = 16;
const IPV6_MULTICAST_HOPS: i32 = 18;

/// A UDP "inbound" flow forged from `remote` to `local`, then its "reply".
fn forged_udp(
    remote: SocketAddr,
    local: IpAddr,
    forge: impl Fn(&OwnedFd) -> io::Result<()>,
) -> io::Result<()> {
    let lport = free_port(local, SockType::Datagram)?;
    let forger = socket_for(remote, SockType::Datagram)?;
    if forge(&forger).is_ok() && socket::bind(forger.as_raw_fd(), &SockaddrStorage::from(remote)).is_ok() {
        let to = SockaddrStorage::from(SocketAddr::new(local, lport));
        let _ = socket::sendto(forger.as_raw_fd(), b"hello", &to, MsgFlags::empty());
    }
    let s = UdpSocket::bind(SocketAddr::new(local, lport))?;
    if s.connect(remote).is_ok() {
        let _ = s.send(b"egret selftest reply");
    }
    Ok(())
}

fn forged_udp6(_: &Ctx) -> io::Result<()> {
    let local = route_source(IpAddr::V6(CANARY6)).ok_or_else(|| io::Error::other("no IPv6 route"))?;
    forged_udp(canary6(9000), local, |fd| {
        crate::sys::setsockopt_int(fd.as_fd(), IPPROTO_IPV6, IPV6_FREEBIND, 1)
    })
}

fn forged_udp4(_: &Ctx) -> io::Result<()> {
    let local = route_source(IpAddr::V4(CANARY4)).ok_or_else(|| io::Error::other("no IPv4 route"))?;
    forged_udp(canary4(9000), local, |fd| Ok(socket::setsockopt(fd, sockopt::IpTransparent, &true)?))
}

/// After the forged SYN: `connect` from the flow's local end to `remote`,
/// which conntrack would take for a reply.
fn simultaneous_open(local: SocketAddr, remote: SocketAddr) -> io::Result<()> {
    let fd = socket_for(local, SockType::Stream)?;
    socket::setsockopt(&fd, sockopt::ReusePort, &true)?;
    socket::setsockopt(&fd, sockopt::ReuseAddr, &true)?;
    socket::bind(fd.as_raw_fd(), &SockaddrStorage::from(local))?;
    let s = TcpStream::from(fd);
    s.set_nonblocking(true)?;
    let _ = socket::connect(s.as_raw_fd(), &SockaddrStorage::from(remote));
    std::thread::sleep(STEP);
    Ok(())
}

fn forged_tcp6(_: &Ctx) -> io::Result<()> {
    let local = route_source(IpAddr::V6(CANARY6)).ok_or_else(|| io::Error::other("no IPv6 route"))?;
    // A listener whose accept queue (backlog 0: one connection) is full,
    // so the forged SYN is dropped and its conntrack entry stays.
    let l = socket_for(SocketAddr::new(local, 0), SockType::Stream)?;
    socket::setsockopt(&l, sockopt::ReusePort, &true)?;
    socket::bind(l.as_raw_fd(), &SockaddrStorage::from(SocketAddr::new(local, 0)))?;
    crate::sys::listen(l.as_fd(), 0)?;
    let at: SockaddrStorage = socket::getsockname(l.as_raw_fd())?;
    let lport = at.as_sockaddr_in6().map(|a| a.port()).unwrap_or(0);
    let me = SocketAddr::new(local, lport);
    let mut fillers = Vec::new();
    for _ in 0..2 {
        if let Ok(f) = TcpStream::connect_timeout(&me, STEP) {
            fillers.push(f);
        }
    }
    let forger = socket_for(me, SockType::Stream)?;
    let remote = canary6(9001);
    if crate::sys::setsockopt_int(forger.as_fd(), IPPROTO_IPV6, IPV6_FREEBIND, 1).is_ok()
        && socket::bind(forger.as_raw_fd(), &SockaddrStorage::from(remote)).is_ok()
    {
        let f = TcpStream::from(forger);
        f.set_nonblocking(true)?;
        let _ = socket::connect(f.as_raw_fd(), &SockaddrStorage::from(me));
        std::thread::sleep(Duration::from_millis(200));
        simultaneous_open(me, remote)?;
        drop(f);
    }
    drop((fillers, l));
    Ok(())
}

fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 =
        data.chunks(2).map(|c| u32::from(u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]))).sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

fn ipv4_header(src: Ipv4Addr, dst: Ipv4Addr, proto: u8, payload_len: usize) -> Vec<u8> {
    let mut ip = vec![0x45, 0];
    ip.extend_from_slice(&((20 + payload_len) as u16).to_be_bytes());
    ip.extend_from_slice(&[0, 1, 0, 0, 64, proto, 0, 0]);
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip
}

fn forged_tcp4(_: &Ctx) -> io::Result<()> {
    let IpAddr::V4(local) =
        route_source(IpAddr::V4(CANARY4)).ok_or_else(|| io::Error::other("no IPv4 route"))?
    else {
        return Err(io::Error::other("an IPv4 route with an IPv6 source"));
    };
    let lport = free_port(IpAddr::V4(local), SockType::Stream)?;
    let mut tcp = Vec::new();
    tcp.extend_from_slice(&9001u16.to_be_bytes());
    tcp.extend_from_slice(&lport.to_be_bytes());
    tcp.extend_from_slice(&[0, 0, 0x30, 0x39, 0, 0, 0, 0, 0x50, 0x02, 0xff, 0xff, 0x5a, 0x5a, 0, 0]);
    let mut pkt = ipv4_header(CANARY4, local, 6, tcp.len());
    pkt.extend_from_slice(&tcp);
    if let Ok(raw) =
        socket::socket(AddressFamily::Inet, SockType::Raw, SockFlag::SOCK_CLOEXEC, socket::SockProtocol::Raw)
    {
        let to = SockaddrStorage::from(SocketAddr::new(IpAddr::V4(local), 0));
        let _ = socket::sendto(raw.as_raw_fd(), &pkt, &to, MsgFlags::empty());
    }
    std::thread::sleep(Duration::from_millis(100));
    simultaneous_open(SocketAddr::new(IpAddr::V4(local), lport), canary4(9001))
}

fn guessed_marks(_: &Ctx) -> io::Result<()> {
    let mut marks = vec![1u32, 2, 0x2a2a_2a2a, 0x7fff_ffff, 0x8000_0000, 0xdead_beef, u32::MAX];
    // Every conntrack mark a workload can read.
    if let Ok(table) = std::fs::read_to_string("/proc/net/nf_conntrack") {
        marks.extend(
            table
                .split_whitespace()
                .filter_map(|w| w.strip_prefix("mark="))
                .filter_map(|m| m.parse::<u32>().ok()),
        );
    }
    marks.sort_unstable();
    marks.dedup();
    for m in marks.into_iter().filter(|&m| m != 0).take(512) {
        for to in [canary4(9), canary6(9)] {
            let any = if to.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" };
            if let Ok(s) = UdpSocket::bind(any) {
                if socket::setsockopt(&s, sockopt::Mark, &m).is_ok() {
                    let _ = s.send_to(b"egret selftest mark", to);
                }
            }
        }
    }
    Ok(())
}

fn nd_covert(_: &Ctx) -> io::Result<()> {
    let fd = socket::socket(
        AddressFamily::Inet6,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        socket::SockProtocol::IcmpV6,
    )?;
    for (ty, hops) in [(135u8, 255), (136, 255), (143, 1), (135, 64)] {
        crate::sys::setsockopt_int(fd.as_fd(), IPPROTO_IPV6, IPV6_UNICAST_HOPS, hops)?;
        crate::sys::setsockopt_int(fd.as_fd(), IPPROTO_IPV6, IPV6_MULTICAST_HOPS, hops)?;
        let mut msg = vec![ty, 0, 0, 0, 0, 0, 0, 0];
        msg.extend_from_slice(&CANARY6.octets());
        msg.extend_from_slice(b"egret selftest covert");
        let _ = socket::sendto(fd.as_raw_fd(), &msg, &SockaddrStorage::from(canary6(0)), MsgFlags::empty());
    }
    Ok(())
}

/// The interfaces and their indexes (other than `lo`).
fn interfaces() -> Vec<(String, u32)> {
    crate::nft::host::read()
        .devices
        .into_iter()
        .filter_map(|d| nix::net::if_::if_nametoindex(d.as_str()).ok().map(|i| (d, i)))
        .collect()
}

fn af_packet(_: &Ctx) -> io::Result<()> {
    raw_frames(None)
}

/// Ethernet frames to the canary from an `AF_PACKET` socket on every
/// interface, with SO_MARK `mark` where given.
fn raw_frames(mark: Option<u32>) -> io::Result<()> {
    let src4 = match route_source(IpAddr::V4(CANARY4)) {
        Some(IpAddr::V4(a)) => a,
        _ => Ipv4Addr::UNSPECIFIED,
    };
    let body = b"egret selftest raw frame";
    let mut udp = 4242u16.to_be_bytes().to_vec();
    udp.extend_from_slice(&9u16.to_be_bytes());
    udp.extend_from_slice(&((8 + body.len()) as u16).to_be_bytes());
    udp.extend_from_slice(&[0, 0]);
    udp.extend_from_slice(body);
    let mut ip4 = ipv4_header(src4, CANARY4, 17, udp.len());
    ip4.extend_from_slice(&udp);
    let mut ip6 = vec![0x60, 0, 0, 0];
    ip6.extend_from_slice(&(udp.len() as u16).to_be_bytes());
    ip6.extend_from_slice(&[17, 64]);
    ip6.extend_from_slice(&Ipv6Addr::LOCALHOST.octets());
    ip6.extend_from_slice(&CANARY6.octets());
    ip6.extend_from_slice(&udp);
    for (_, index) in interfaces() {
        let Ok(fd) = crate::sys::packet_socket(index) else { continue };
        if let Some(m) = mark {
            socket::setsockopt(&fd, sockopt::Mark, &m)?;
        }
        for (ethertype, payload) in [([0x08, 0x00], &ip4), ([0x86, 0xdd], &ip6)] {
            let mut frame = vec![0xff; 6];
            frame.extend_from_slice(&[0x02, 0, 0, 0, 0, 0x77]);
            frame.extend_from_slice(&ethertype);
            frame.extend_from_slice(payload);
            let _ = nix::unistd::write(&fd, &frame);
        }
    }
    Ok(())
}

/// Binds an XSK to every queue of every interface: each one bound is a
/// way to send frames no netfilter hook sees (egret holds them all when
/// it can, so a bind fails with EBUSY).
fn af_xdp(_: &Ctx) -> io::Result<()> {
    let mut bound = 0u64;
    for (dev, index) in interfaces() {
        let names: Vec<String> = std::fs::read_dir(format!("/sys/class/net/{dev}/queues"))
            .map(|rd| {
                rd.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect()
            })
            .unwrap_or_default();
        for q in 0..crate::xsk::queue_count(names.iter().map(String::as_str)) {
            if crate::sys::xsk_bind(index, q).is_ok() {
                bound += 1;
            }
        }
    }
    if bound > 0 {
        println!("around {bound}");
    }
    Ok(())
}

const SO_RCVMARK: i32 = 75;
const SCM_MARK: i32 = 36;

/// Joins a multicast group, sends to it with the loop on (the default),
/// and reads the mark of the copy the kernel loops back (SO_RCVMARK needs
/// no privilege); every mark read goes on raw frames to the canary.
fn tag_leak(_: &Ctx) -> io::Result<()> {
    let group = Ipv4Addr::new(239, 255, 0, 77);
    let r = UdpSocket::bind("0.0.0.0:0")?;
    let port = r.local_addr()?.port();
    crate::sys::setsockopt_int(r.as_fd(), nix::libc::SOL_SOCKET, SO_RCVMARK, 1)?;
    r.join_multicast_v4(&group, &Ipv4Addr::UNSPECIFIED)?;
    r.set_read_timeout(Some(STEP))?;
    let s = UdpSocket::bind("0.0.0.0:0")?;
    s.set_multicast_loop_v4(true)?;
    // A refusal by the rules is fine: then nothing comes back.
    let _ = s.send_to(b"egret selftest loop", SocketAddr::new(IpAddr::V4(group), port));
    let mut buf = [0u8; 256];
    let mut iov = [io::IoSliceMut::new(&mut buf)];
    let mut cmsg = nix::cmsg_space!(u32);
    let mut marks = Vec::new();
    if let Ok(msg) =
        socket::recvmsg::<SockaddrStorage>(r.as_raw_fd(), &mut iov, Some(&mut cmsg), MsgFlags::empty())
    {
        for c in msg.cmsgs()? {
            if let socket::ControlMessageOwned::Unknown(u) = c {
                let h = u.cmsg_header;
                if h.cmsg_level == nix::libc::SOL_SOCKET && h.cmsg_type == SCM_MARK && u.data_bytes.len() >= 4
                {
                    let m = u32::from_ne_bytes([
                        u.data_bytes[0],
                        u.data_bytes[1],
                        u.data_bytes[2],
                        u.data_bytes[3],
                    ]);
                    marks.push(m);
                }
            }
        }
    }
    for m in marks.into_iter().filter(|&m| m != 0) {
        raw_frames(Some(m))?;
    }
    Ok(())
}

/// A neighbour solicitation for the canary in RFC 4861's own shape (hop
/// limit 255, 32 bytes, to its solicited-node multicast address) from a
/// raw ICMPv6 socket on every interface: neighbour discovery is the
/// kernel's, from a process it is a channel to the link.
fn nd_user_socket(_: &Ctx) -> io::Result<()> {
    let fd = socket::socket(
        AddressFamily::Inet6,
        SockType::Raw,
        SockFlag::SOCK_CLOEXEC,
        socket::SockProtocol::IcmpV6,
    )?;
    crate::sys::setsockopt_int(fd.as_fd(), IPPROTO_IPV6, IPV6_MULTICAST_HOPS, 255)?;
    let c = CANARY6.octets();
    let solicited =
        Ipv6Addr::new(0xff02, 0, 0, 0, 0, 1, 0xff00 | u16::from(c[13]), u16::from_be_bytes([c[14], c[15]]));
    let mut msg = vec![135u8, 0, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&c);
    // Source link-layer address option: type 1, 8 bytes.
    msg.extend_from_slice(&[1, 1, 0x02, 0, 0, 0, 0, 0x77]);
    for (_, index) in interfaces() {
        let to = std::net::SocketAddrV6::new(solicited, 0, 0, index);
        let _ = socket::sendto(fd.as_raw_fd(), &msg, &SockaddrStorage::from(to), MsgFlags::empty());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_table_counts_both_families_after_egrets_egress() {
        let t = canary_table(&["eth0".into()]);
        let text = t.to_string();
        assert!(
            text.contains("type filter hook egress device \"eth0\" priority 100; policy accept;"),
            "{text}"
        );
        assert!(text.contains("@ll,96,16 0x0800 @ll,240,32 0xc000024d counter drop"), "{text}");
        assert!(
            text.contains("@ll,96,16 0x86dd @ll,304,128 0x20010db8000000000000000000000077 counter drop"),
            "{text}"
        );
    }

    #[test]
    fn names_are_unique_and_lines_read_well() {
        let mut names: Vec<&str> = TECHNIQUES.iter().map(|t| t.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), TECHNIQUES.len());
        let held = Line { technique: "direct", about: "x", privilege: "nobody", verdict: Verdict::Held };
        let bad = Line { verdict: Verdict::Bypass(3), ..held.clone() };
        assert!(held.to_string().starts_with("held    direct"));
        assert!(
            bad.to_string().starts_with("BYPASS  direct")
                && bad.to_string().ends_with("3 packet(s) reached the canary")
        );
        let around = Line { technique: "af-xdp", verdict: Verdict::Around(2), ..held.clone() };
        assert!(
            around.to_string().starts_with("BYPASS  af-xdp")
                && around.to_string().ends_with("2 way(s) past every rule")
        );
        let r = Report { lines: vec![held, bad, around] };
        assert_eq!(r.summary(), "selftest: BYPASS by direct, af-xdp (1 held, 0 skipped)");
    }

    #[test]
    fn ipv4_header_checksum_verifies() {
        let h = ipv4_header(Ipv4Addr::new(10, 0, 0, 1), CANARY4, 17, 12);
        assert_eq!(checksum(&h), 0, "a header with its checksum sums to zero");
    }
}
