//! Who is on the other end of a connection to egret's listeners.
//!
//! Every container of a pod shares the network namespace, so they share
//! the source address too: "per source" has to mean per socket owner. For
//! a connection from this host the kernel knows the client's socket, and
//! `sock_diag` (NETLINK_SOCK_DIAG, an exact 4-tuple lookup, no privilege
//! needed) reports its owner's uid and cgroup v2 id. Podman and Kubernetes
//! give each container a cgroup of its own; where they do not (cgroup v1
//! hosts), the uid still tells co-tenants apart when they run as
//! different users.
//!
//! [`request`] and [`parse`] are pure; [`lookup`] is the shell.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

/// The owner of a client socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pub uid: u32,
    /// The socket's cgroup v2 id (the root cgroup's where none is set up).
    pub cgroup: Option<u64>,
}

/// The cgroup v2 id of the root cgroup (kernfs numbers it first).
pub const ROOT_CGROUP: u64 = 1;

/// Who gets a share of egret's slots. A container, where sockets sit in
/// cgroups of their own: a workload picks its uid (CAP_SETUID is a
/// default container capability) but not its cgroup, so one container
/// switching between many uids is still one client. Where the cgroup
/// tells nothing (cgroup v1 hosts, the root cgroup, or egret's own
/// cgroup, shared when workloads run beside egret in one container) the
/// uid is all there is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Client {
    Cgroup(u64),
    Uid(u32),
    /// The owner could not be looked up (a remote client).
    Unknown,
}

impl Client {
    /// The client owning a socket, against egret's own cgroup.
    pub fn of(owner: Option<Owner>) -> Client {
        Client::classify(owner, own_cgroup())
    }

    /// Pure: `own` is egret's cgroup v2 id, if it has one of its own.
    pub fn classify(owner: Option<Owner>, own: Option<u64>) -> Client {
        match owner {
            Some(Owner { cgroup: Some(cg), .. }) if cg != ROOT_CGROUP && Some(cg) != own => {
                Client::Cgroup(cg)
            }
            Some(o) => Client::Uid(o.uid),
            None => Client::Unknown,
        }
    }
}

/// egret's own cgroup v2 id, found once as its identity finds it.
fn own_cgroup() -> Option<u64> {
    static OWN: OnceLock<Option<u64>> = OnceLock::new();
    *OWN.get_or_init(|| crate::nft::identity::detect_cgroup().map(|c| c.id))
}

const NLMSG_HDRLEN: usize = 16;
const NLMSG_ERROR: u16 = 2;
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLM_F_REQUEST: u16 = 1;
const INET_DIAG_CGROUP_ID: u16 = 21;
/// `struct inet_diag_req_v2`: family, protocol, ext, pad, states, sockid.
const REQ_LEN: usize = 56;
/// `struct inet_diag_msg` up to and including `idiag_inode`.
const MSG_LEN: usize = 72;
const UID_AT: usize = 64;

/// The lookup of the TCP socket whose own address is `client` and whose
/// peer is `to` (for a redirected connection: the original destination,
/// which is what the client's socket is connected to).
pub fn request(seq: u32, client: SocketAddr, to: SocketAddr) -> Vec<u8> {
    request_for(IPPROTO_TCP, seq, client, to)
}

/// The lookup of the UDP socket at `client` that sent a datagram to `to`.
/// `udp_diag` finds the socket a datagram *from* the request's source
/// *to* its destination would reach (TCP's lookup reads the pair the
/// other way round), so the client goes in as the destination. An
/// unconnected client socket matches whatever `to` is; a connected one
/// only its own peer.
pub fn request_udp(seq: u32, client: SocketAddr, to: SocketAddr) -> Vec<u8> {
    request_for(IPPROTO_UDP, seq, to, client)
}

const IPPROTO_TCP: u8 = 6;
const IPPROTO_UDP: u8 = 17;

fn request_for(proto: u8, seq: u32, client: SocketAddr, to: SocketAddr) -> Vec<u8> {
    let mut m = Vec::with_capacity(NLMSG_HDRLEN + REQ_LEN);
    m.extend_from_slice(&((NLMSG_HDRLEN + REQ_LEN) as u32).to_ne_bytes());
    m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    m.extend_from_slice(&NLM_F_REQUEST.to_ne_bytes());
    m.extend_from_slice(&seq.to_ne_bytes());
    m.extend_from_slice(&0u32.to_ne_bytes());
    let family: u8 = if client.is_ipv4() { 2 } else { 10 };
    m.extend_from_slice(&[family, proto, 0, 0]);
    m.extend_from_slice(&u32::MAX.to_ne_bytes()); // every state
    m.extend_from_slice(&client.port().to_be_bytes());
    m.extend_from_slice(&to.port().to_be_bytes());
    for ip in [client.ip(), to.ip()] {
        let mut a = [0u8; 16];
        match ip {
            IpAddr::V4(v) => a[..4].copy_from_slice(&v.octets()),
            IpAddr::V6(v) => a.copy_from_slice(&v.octets()),
        }
        m.extend_from_slice(&a);
    }
    m.extend_from_slice(&0u32.to_ne_bytes()); // any interface
    m.extend_from_slice(&[0xff; 8]); // INET_DIAG_NOCOOKIE
    m
}

/// What the kernel said to a [`request`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    Found(Owner),
    /// No such socket (it closed already), or an error number.
    NotFound(i32),
}

/// Reads the answer to request `seq`. `Ok(None)`: the bytes hold no
/// complete message for it; `Err`: they are not a sock_diag answer.
pub fn parse(buf: &[u8], seq: u32) -> Result<Option<Reply>, &'static str> {
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes(rest[0..4].try_into().unwrap_or_default()) as usize;
        if len < NLMSG_HDRLEN {
            return Err("netlink message shorter than its header");
        }
        if len > rest.len() {
            return Ok(None);
        }
        let ty = u16::from_ne_bytes([rest[4], rest[5]]);
        let got_seq = u32::from_ne_bytes(rest[8..12].try_into().unwrap_or_default());
        let body = &rest[NLMSG_HDRLEN..len];
        if got_seq == seq {
            return match ty {
                NLMSG_ERROR if body.len() >= 4 => {
                    Ok(Some(Reply::NotFound(-i32::from_ne_bytes(body[0..4].try_into().unwrap_or_default()))))
                }
                SOCK_DIAG_BY_FAMILY if body.len() >= MSG_LEN => {
                    let uid = u32::from_ne_bytes(body[UID_AT..UID_AT + 4].try_into().unwrap_or_default());
                    Ok(Some(Reply::Found(Owner { uid, cgroup: cgroup_attr(&body[MSG_LEN..]) })))
                }
                _ => Err("unexpected sock_diag answer"),
            };
        }
        rest = &rest[len.next_multiple_of(4).min(rest.len())..];
    }
    Ok(None)
}

/// The `INET_DIAG_CGROUP_ID` attribute among `rtattr`s.
fn cgroup_attr(mut attrs: &[u8]) -> Option<u64> {
    while attrs.len() >= 4 {
        let len = usize::from(u16::from_ne_bytes([attrs[0], attrs[1]]));
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]);
        if len < 4 || len > attrs.len() {
            return None;
        }
        if ty == INET_DIAG_CGROUP_ID && len >= 12 {
            return Some(u64::from_ne_bytes(attrs[4..12].try_into().ok()?));
        }
        attrs = &attrs[len.next_multiple_of(4).min(attrs.len())..];
    }
    None
}

const TIMEOUT: Duration = Duration::from_millis(200);

/// The owner of the local TCP socket `client` → `to`; `None` when the
/// kernel does not know it (closed already) or cannot be asked. On a
/// socket from [`POOL`]: a socket per lookup cost a `socket`, a
/// `setsockopt` and a `close` per proxied connection (issue 22's
/// counts), and one kept in each connection thread would hold a
/// descriptor per idle thread.
pub fn lookup(client: SocketAddr, to: SocketAddr) -> Option<Owner> {
    let mut d = POOL.lock().unwrap_or_else(|p| p.into_inner()).pop().unwrap_or_default();
    let found = d.ask(|seq| request(seq, client, to), client, to);
    if d.fd.is_some() {
        let mut pool = POOL.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < POOL_MAX {
            pool.push(d);
        }
    }
    found
}

/// `sock_diag` sockets kept between the connection threads' lookups: a
/// thread takes one (or opens one when none is free) and puts it back,
/// up to [`POOL_MAX`]; the rest are closed. At most that many descriptors
/// stay open for lookups whatever the number of connections.
static POOL: Mutex<Vec<Diag>> = Mutex::new(Vec::new());
const POOL_MAX: usize = 4;

/// The owner of the local UDP socket `client` that sent to `to` (the
/// destination it addressed, before any redirect); `None` as for
/// [`lookup`].
pub fn lookup_udp(client: SocketAddr, to: SocketAddr) -> Option<Owner> {
    ask(&request_udp(1, client, to), client, to)
}

/// A `sock_diag` socket kept for many lookups, for one thread that asks
/// often (the DNS server's receive loop, once per new UDP source port):
/// a socket per lookup cost a `socket`, a `setsockopt` and a `close`
/// beside the round trip. Requests are numbered, so a late answer to an
/// earlier one is skipped; a socket that failed is replaced on the next
/// lookup.
#[derive(Debug, Default)]
pub struct Diag {
    fd: Option<OwnedFd>,
    seq: u32,
}

impl Diag {
    pub fn new() -> Diag {
        Diag::default()
    }

    /// As [`lookup_udp`], on the kept socket.
    pub fn udp(&mut self, client: SocketAddr, to: SocketAddr) -> Option<Owner> {
        self.ask(|seq| request_udp(seq, client, to), client, to)
    }

    /// Sends the request `make` builds for the next sequence number and
    /// reads its answer; a socket that failed is dropped.
    fn ask(
        &mut self,
        make: impl FnOnce(u32) -> Vec<u8>,
        client: SocketAddr,
        to: SocketAddr,
    ) -> Option<Owner> {
        self.seq = self.seq.wrapping_add(1).max(1);
        let req = make(self.seq);
        let fd = match self.fd.take() {
            Some(fd) => fd,
            None => match open() {
                Ok(fd) => fd,
                Err(e) => {
                    log::debug!("sock_diag socket: {e}");
                    return None;
                }
            },
        };
        match exchange(&fd, self.seq, &req) {
            Ok(r) => {
                self.fd = Some(fd);
                match r {
                    Reply::Found(o) => Some(o),
                    Reply::NotFound(_) => None,
                }
            }
            Err(e) => {
                log::debug!("sock_diag lookup {client} -> {to}: {e}");
                None
            }
        }
    }
}

/// The owner of the TCP listener that a connection to `addr` in this
/// network namespace reaches (the kernel's own listener lookup: an
/// address-specific listener, else a wildcard one); `None` as for
/// [`lookup`].
pub fn listener(addr: SocketAddr) -> Option<Owner> {
    let any: SocketAddr = match addr {
        SocketAddr::V4(_) => (std::net::Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    ask(&request(1, addr, any), addr, any)
}

/// Whether egret may hand its dashboard key to the listener at `dest`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListenerVerdict {
    /// Not an address of this network namespace: another host's
    /// listener, not checked.
    Remote,
    /// A local listener owned by an expected uid.
    Expected(u32),
    /// A local listener owned by another uid: a workload.
    Foreign(u32),
    /// A local destination whose listener could not be looked up.
    Unknown,
}

impl ListenerVerdict {
    pub fn may_send(self) -> bool {
        matches!(self, ListenerVerdict::Remote | ListenerVerdict::Expected(_))
    }
}

/// Pure: whether a connection to `ip` stays in this network namespace:
/// loopback, the unspecified address (a connect to it reaches a local
/// listener), or one of the namespace's own addresses (`local`: what its
/// interfaces carry).
pub fn is_local(ip: IpAddr, local: &[IpAddr]) -> bool {
    let ip = ip.to_canonical();
    ip.is_loopback() || ip.is_unspecified() || local.iter().any(|l| l.to_canonical() == ip)
}

/// Pure: the verdict on `dest`'s listener `owner` when only `expected`
/// uids may hold a local listener egret sends its key to (`local`: the
/// namespace's addresses, see [`is_local`]). Every container of a pod
/// shares the namespace, so any of them may bind a port on any of its
/// addresses first; the uid of the socket is what tells them apart.
pub fn judge_listener(
    dest: SocketAddr,
    local: &[IpAddr],
    owner: Option<Owner>,
    expected: &[u32],
) -> ListenerVerdict {
    if !is_local(dest.ip(), local) {
        return ListenerVerdict::Remote;
    }
    match owner {
        Some(o) if expected.contains(&o.uid) => ListenerVerdict::Expected(o.uid),
        Some(o) => ListenerVerdict::Foreign(o.uid),
        None => ListenerVerdict::Unknown,
    }
}

/// The addresses of this network namespace's interfaces (empty when they
/// cannot be read: then only loopback and the unspecified address count
/// as local, and the caller says so).
pub fn local_addresses() -> std::io::Result<Vec<IpAddr>> {
    let addrs = nix::ifaddrs::getifaddrs()?;
    Ok(addrs
        .filter_map(|a| {
            let s = a.address?;
            s.as_sockaddr_in()
                .map(|v| IpAddr::V4(v.ip()))
                .or_else(|| s.as_sockaddr_in6().map(|v| IpAddr::V6(v.ip())))
        })
        .collect())
}

fn ask(req: &[u8], client: SocketAddr, to: SocketAddr) -> Option<Owner> {
    let answer = open().map_err(|e| e.to_string()).and_then(|fd| exchange(&fd, 1, req));
    match answer {
        Ok(Reply::Found(o)) => Some(o),
        Ok(Reply::NotFound(_)) => None,
        Err(e) => {
            log::debug!("sock_diag lookup {client} -> {to}: {e}");
            None
        }
    }
}

fn open() -> nix::Result<OwnedFd> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockProtocol, SockType};
    let fd = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )?;
    let tv = nix::sys::time::TimeVal::new(0, TIMEOUT.as_micros() as _);
    nix::sys::socket::setsockopt(&fd, nix::sys::socket::sockopt::ReceiveTimeout, &tv)?;
    Ok(fd)
}

fn exchange(fd: &OwnedFd, seq: u32, req: &[u8]) -> Result<Reply, String> {
    use nix::sys::socket::{recv, sendto, MsgFlags, NetlinkAddr};
    sendto(fd.as_raw_fd(), req, &NetlinkAddr::new(0, 0), MsgFlags::empty()).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 1024];
    // Bounded: anything that is not the answer to this request is skipped.
    for _ in 0..4 {
        let n = recv(fd.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(|e| e.to_string())?;
        if let Some(r) = parse(&buf[..n], seq).map_err(str::to_owned)? {
            return Ok(r);
        }
    }
    Err("no answer to our request".into())
}

/// A cgroup id's path below the cgroup2 mount and the container it names,
/// found by walking the hierarchy (bounded) and remembered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cgroup {
    /// The path relative to the cgroup2 root, with a leading `/`.
    pub path: String,
    /// The 64-hex container id in the path (first 12 characters), as
    /// podman, Docker, containerd and CRI-O name their scopes.
    pub container: Option<String>,
}

/// The container id a cgroup path names, if any.
pub fn container_of(path: &str) -> Option<String> {
    path.rsplit('/').find_map(|seg| {
        // libpod-<id>.scope, docker-<id>.scope, cri-containerd-<id>.scope,
        // crio-<id>.scope, or a bare <id> (cgroupfs drivers).
        let seg = seg.strip_suffix(".scope").unwrap_or(seg);
        let id = seg.rsplit('-').next()?;
        (id.len() == 64 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id[..12].to_owned())
    })
}

/// Depth and size bounds of the cgroup walk.
const WALK_DEPTH: usize = 8;
const WALK_DIRS: usize = 20_000;

/// The cgroup with this id, when a cgroup2 hierarchy is mounted.
pub fn cgroup(id: u64) -> Option<Cgroup> {
    static CACHE: OnceLock<Mutex<HashMap<u64, Option<Cgroup>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Mutex::default);
    if let Some(c) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&id) {
        return c.clone();
    }
    let found = cgroup_root().and_then(|root| find_cgroup(&root, id)).map(|path| {
        let container = container_of(&path);
        Cgroup { path, container }
    });
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    if c.len() > 4096 {
        c.clear();
    }
    c.insert(id, found.clone());
    found
}

fn cgroup_root() -> Option<PathBuf> {
    static ROOT: OnceLock<Option<PathBuf>> = OnceLock::new();
    ROOT.get_or_init(|| {
        let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
        crate::nft::identity::cgroup2_mount(&mountinfo)
    })
    .clone()
}

/// Breadth-first search for the directory whose inode is `id`.
fn find_cgroup(root: &Path, id: u64) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mut level = vec![root.to_path_buf()];
    let mut seen = 0;
    for _ in 0..=WALK_DEPTH {
        let mut next = Vec::new();
        for dir in level {
            if std::fs::metadata(&dir).ok()?.ino() == id {
                let rel = dir.strip_prefix(root).ok()?.to_string_lossy().into_owned();
                return Some(format!("/{rel}"));
            }
            let Ok(entries) = std::fs::read_dir(&dir) else { continue };
            for e in entries.flatten() {
                seen += 1;
                if seen > WALK_DIRS {
                    return None;
                }
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    next.push(e.path());
                }
            }
        }
        level = next;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let r = request(7, "10.0.0.1:40000".parse().unwrap(), "192.0.2.9:443".parse().unwrap());
        assert_eq!(r.len(), 72);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 72);
        assert_eq!(u16::from_ne_bytes([r[4], r[5]]), SOCK_DIAG_BY_FAMILY);
        assert_eq!(u32::from_ne_bytes(r[8..12].try_into().unwrap()), 7);
        assert_eq!(&r[16..20], &[2, 6, 0, 0]);
        assert_eq!(&r[24..28], &[0x9c, 0x40, 0x01, 0xbb], "ports big endian");
        assert_eq!(&r[28..32], &[10, 0, 0, 1]);
        assert_eq!(&r[44..48], &[192, 0, 2, 9]);
        assert_eq!(&r[64..72], &[0xff; 8]);
        let u = request_udp(7, "10.0.0.1:40000".parse().unwrap(), "127.0.0.1:53".parse().unwrap());
        assert_eq!(&u[16..20], &[2, 17, 0, 0], "udp");
        assert_eq!(&u[24..28], &[0x00, 0x35, 0x9c, 0x40], "the datagram's way back: from `to` to the client");
        assert_eq!(&u[28..32], &[127, 0, 0, 1]);
        assert_eq!(&u[44..48], &[10, 0, 0, 1]);
    }

    fn answer(seq: u32, uid: u32, cgroup: Option<u64>) -> Vec<u8> {
        let mut body = vec![0u8; MSG_LEN];
        body[UID_AT..UID_AT + 4].copy_from_slice(&uid.to_ne_bytes());
        if let Some(c) = cgroup {
            body.extend_from_slice(&4u16.to_ne_bytes()); // an unrelated empty attribute first
            body.extend_from_slice(&1u16.to_ne_bytes());
            body.extend_from_slice(&12u16.to_ne_bytes());
            body.extend_from_slice(&INET_DIAG_CGROUP_ID.to_ne_bytes());
            body.extend_from_slice(&c.to_ne_bytes());
        }
        let mut m = ((NLMSG_HDRLEN + body.len()) as u32).to_ne_bytes().to_vec();
        m.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        m.extend_from_slice(&0u16.to_ne_bytes());
        m.extend_from_slice(&seq.to_ne_bytes());
        m.extend_from_slice(&0u32.to_ne_bytes());
        m.extend(body);
        m
    }

    #[test]
    fn answers_parse_and_stale_ones_are_skipped() {
        let mut two = answer(3, 1000, None);
        two.extend(answer(4, 65534, Some(0x1234)));
        assert_eq!(parse(&two, 4), Ok(Some(Reply::Found(Owner { uid: 65534, cgroup: Some(0x1234) }))));
        assert_eq!(parse(&two, 3), Ok(Some(Reply::Found(Owner { uid: 1000, cgroup: None }))));
        assert_eq!(parse(&two, 5), Ok(None));
        assert_eq!(parse(&two[..20], 4), Ok(None), "incomplete");
        let mut err = 20u32.to_ne_bytes().to_vec();
        err.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err.extend_from_slice(&[0, 0]);
        err.extend_from_slice(&9u32.to_ne_bytes());
        err.extend_from_slice(&0u32.to_ne_bytes());
        err.extend_from_slice(&(-2i32).to_ne_bytes());
        assert_eq!(parse(&err, 9), Ok(Some(Reply::NotFound(2))));
        assert!(parse(&[3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], 1).is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let a = answer(1, 5, Some(9));
        for cut in 0..a.len() {
            let _ = parse(&a[..cut], 1);
            let mut b = a.clone();
            b[cut] ^= 0xff;
            let _ = parse(&b, 1);
        }
    }

    #[test]
    fn container_ids_from_cgroup_paths() {
        let id = "3f8a1c2b4d5e6f708192a3b4c5d6e7f8091a2b3c4d5e6f708192a3b4c5d6e7f8";
        let cases = [
            (format!("/machine.slice/libpod-{id}.scope"), Some(&id[..12])),
            (format!("/system.slice/docker-{id}.scope"), Some(&id[..12])),
            (format!("/kubepods/besteffort/pod1234/cri-containerd-{id}.scope"), Some(&id[..12])),
            (format!("/libpod_parent/libpod-{id}"), Some(&id[..12])),
            (format!("/docker/{id}"), Some(&id[..12])),
            ("/user.slice/user-1000.slice".to_owned(), None),
            ("/".to_owned(), None),
        ];
        for (path, want) in cases {
            assert_eq!(container_of(&path).as_deref(), want, "{path}");
        }
    }

    #[test]
    fn this_threads_own_connection_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (_s, peer) = l.accept().unwrap();
        let owner = lookup(peer, l.local_addr().unwrap()).expect("the kernel knows our own socket");
        assert_eq!(owner.uid, nix::unistd::geteuid().as_raw());
        drop(c);
    }

    #[test]
    fn pooled_sockets_answer_many_threads_and_stay_bounded() {
        // Eight threads look up their own connections at once, and a
        // closed one: every answer is the right one (a pooled socket
        // carries no late answer into the next lookup), and no more than
        // POOL_MAX sockets are kept.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let to = l.local_addr().unwrap();
        let me = nix::unistd::geteuid().as_raw();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    for _ in 0..20 {
                        let c = std::net::TcpStream::connect(to).unwrap();
                        let from = c.local_addr().unwrap();
                        assert_eq!(lookup(from, to).map(|o| o.uid), Some(me), "{from}");
                        drop(c);
                        let unknown: SocketAddr = (std::net::Ipv4Addr::LOCALHOST, 1).into();
                        assert_eq!(lookup(unknown, to), None, "no socket {unknown} -> {to}");
                    }
                });
            }
            for _ in 0..160 {
                drop(l.accept().unwrap());
            }
        });
        let kept = POOL.lock().unwrap().len();
        assert!((1..=POOL_MAX).contains(&kept), "{kept} sockets kept");
    }

    #[test]
    fn one_kept_socket_answers_many_udp_lookups() {
        let server = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let to = server.local_addr().unwrap();
        let mut diag = Diag::new();
        for _ in 0..50 {
            let c = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            let from = c.local_addr().unwrap();
            let owner = diag.udp(from, to).expect("the kernel knows our own udp socket");
            assert_eq!(owner.uid, nix::unistd::geteuid().as_raw());
            drop(c);
            assert_eq!(diag.udp(from, to), None, "a closed socket has no owner");
        }
        assert!(diag.fd.is_some(), "the socket is kept");
    }

    #[test]
    fn this_processs_own_listener_is_found() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let owner = listener(l.local_addr().unwrap()).expect("sock_diag finds our listener");
        assert_eq!(owner.uid, nix::unistd::geteuid().as_raw());
        drop(l);
    }

    #[test]
    fn only_expected_uids_may_hold_a_local_listener() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let o = |uid| Some(Owner { uid, cgroup: None });
        let local: Vec<IpAddr> = vec!["10.0.0.7".parse().unwrap(), "fd00::7".parse().unwrap()];
        use ListenerVerdict::*;
        let cases = [
            ("127.0.0.1:8081", o(0), Expected(0)),
            ("127.0.0.1:8081", o(65534), Foreign(65534)),
            ("127.0.0.53:8081", o(1000), Foreign(1000)),
            ("[::1]:8081", o(65532), Expected(65532)),
            ("[::ffff:127.0.0.1]:8081", o(7), Foreign(7)),
            ("127.0.0.1:8081", None, Unknown),
            // The namespace's own addresses and the unspecified ones
            // reach its listeners as loopback does (escape_77).
            ("10.0.0.7:8081", o(65534), Foreign(65534)),
            ("[::ffff:10.0.0.7]:8081", o(65534), Foreign(65534)),
            ("[fd00::7]:8081", o(0), Expected(0)),
            ("0.0.0.0:8081", o(65534), Foreign(65534)),
            ("[::]:8081", None, Unknown),
            ("10.0.0.5:8081", o(65534), Remote),
            ("10.0.0.5:8081", None, Remote),
            ("[fd00::8]:8081", o(1), Remote),
        ];
        for (dest, owner, want) in cases {
            assert_eq!(judge_listener(a(dest), &local, owner, &[0, 65532]), want, "{dest} {owner:?}");
        }
        assert!(Expected(0).may_send() && Remote.may_send());
        assert!(!Foreign(1).may_send() && !Unknown.may_send());
    }

    #[test]
    fn this_namespace_has_its_loopback_address() {
        let local = local_addresses().expect("getifaddrs");
        assert!(local.iter().any(|ip| ip.is_loopback()), "{local:?}");
    }

    #[test]
    fn clients_are_containers_where_there_are_cgroups_else_users() {
        let o = |uid, cgroup| Some(Owner { uid, cgroup });
        let own = Some(42);
        // Two uids in one container: one client.
        assert_eq!(Client::classify(o(1000, Some(77)), own), Client::classify(o(1001, Some(77)), own));
        assert_eq!(Client::classify(o(1000, Some(77)), own), Client::Cgroup(77));
        assert_ne!(Client::classify(o(0, Some(77)), own), Client::classify(o(0, Some(78)), own));
        // Everyone in the root cgroup, in egret's own, or none known: the uid decides.
        for cg in [Some(ROOT_CGROUP), Some(42), None] {
            assert_eq!(Client::classify(o(1000, cg), own), Client::Uid(1000), "{cg:?}");
            assert_ne!(Client::classify(o(1000, cg), own), Client::classify(o(1001, cg), own));
        }
        assert_eq!(Client::classify(o(1000, Some(42)), None), Client::Cgroup(42));
        assert_eq!(Client::classify(None, own), Client::Unknown);
    }
}
