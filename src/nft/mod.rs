//! The kernel path: installs, reads back and removes egret's nftables
//! table over raw netlink (NETLINK_NETFILTER).
//!
//! This is the I/O shell. The ruleset is a pure value (`ruleset.rs`), the
//! message bytes come from `netlink.rs`; here we only open the socket,
//! send one batch as one datagram, and match the kernel's answers to the
//! messages by sequence number. Every receive has a timeout and the first
//! error stops the wait: a missing capability comes back as one EPERM on
//! the batch's BEGIN message, not one answer per message, so counting
//! acks would hang.

pub mod foreign;
pub mod host;
pub mod identity;
pub mod netlink;
pub mod ruleset;

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::sys::socket::{
    bind, recv, send, setsockopt, socket, sockopt, AddressFamily, MsgFlags, NetlinkAddr, SockFlag,
    SockProtocol, SockType,
};
use nix::sys::time::TimeVal;

pub use identity::identity;
pub use ruleset::{Host, Identity, Ruleset, TABLE};

use netlink::{c, Batch, EncodeError};

/// How long one receive may wait for the kernel's answer.
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);

/// What can go wrong talking to nf_tables.
#[derive(Debug)]
#[non_exhaustive]
pub enum NftError {
    Encode(EncodeError),
    /// The socket could not be opened or used.
    Socket {
        op: &'static str,
        errno: Errno,
    },
    /// The kernel refused the batch: no CAP_NET_ADMIN in this namespace.
    PermissionDenied,
    /// The kernel rejected one message of the batch (and so all of it).
    Kernel {
        what: String,
        errno: Errno,
    },
    /// No answer in time.
    Timeout {
        waiting_for: String,
    },
}

impl fmt::Display for NftError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NftError::Encode(e) => write!(f, "{e}"),
            NftError::Socket { op, errno } => write!(f, "netfilter netlink socket: {op}: {}", errno.desc()),
            NftError::PermissionDenied => f.write_str(
                "nftables: operation not permitted: egret needs CAP_NET_ADMIN in the pod's network namespace \
                 (podman/docker: --cap-add NET_ADMIN; Kubernetes: securityContext.capabilities.add: [NET_ADMIN])",
            ),
            NftError::Kernel { what, errno } => {
                write!(f, "nftables rejected {what}: {} ({})", errno.desc(), *errno as i32)
            }
            NftError::Timeout { waiting_for } => {
                write!(f, "nftables: no answer within {}s while waiting for {waiting_for}", RECV_TIMEOUT.as_secs())
            }
        }
    }
}

impl std::error::Error for NftError {}

impl From<EncodeError> for NftError {
    fn from(e: EncodeError) -> Self {
        NftError::Encode(e)
    }
}

/// What an apply did, for the start-up log.
#[derive(Debug, Clone)]
pub struct Applied {
    pub messages: usize,
    pub bytes: usize,
    pub elapsed: Duration,
    pub installed: Installed,
}

/// What the kernel reports as installed in egret's table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Installed {
    pub sets: Vec<String>,
    /// `(chain, rule count)` in kernel order.
    pub chains: Vec<(String, usize)>,
}

impl fmt::Display for Installed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.chains.is_empty() && self.sets.is_empty() {
            return write!(f, "table inet {TABLE}: not installed");
        }
        write!(f, "table inet {TABLE}: sets {}; chains ", self.sets.join(", "))?;
        let chains: Vec<String> = self.chains.iter().map(|(n, r)| format!("{n} ({r} rules)")).collect();
        f.write_str(&chains.join(", "))
    }
}

/// Installs `rs`, atomically replacing any previous egret table, then
/// reads the table back.
pub fn apply(rs: &Ruleset) -> Result<Applied, NftError> {
    let start = Instant::now();
    let mut nl = Netlink::open()?;
    let batch = netlink::apply_batch(rs, nl.next_seq())?;
    nl.seq = nl.seq.wrapping_add(batch.messages as u32);
    nl.run_batch(&batch)?;
    let elapsed = start.elapsed();
    let installed = nl.read_back(rs.table)?;
    let want: Vec<(String, usize)> = rs.chains.iter().map(|c| (c.name.to_owned(), c.rules.len())).collect();
    if installed.chains != want {
        log::warn!("read back differs from what was sent: sent {want:?}, kernel has {installed}");
    }
    log::info!(
        "installed {installed} ({} messages, {} bytes, {} ms)",
        batch.messages,
        batch.bytes.len(),
        elapsed.as_millis()
    );
    Ok(Applied { messages: batch.messages, bytes: batch.bytes.len(), elapsed, installed })
}

/// Removes egret's table. `Ok(false)` when there was none.
pub fn delete_table() -> Result<bool, NftError> {
    let mut nl = Netlink::open()?;
    let batch = netlink::delete_batch(TABLE, nl.next_seq())?;
    nl.seq = nl.seq.wrapping_add(batch.messages as u32);
    match nl.run_batch(&batch) {
        Ok(()) => Ok(true),
        Err(NftError::Kernel { errno: Errno::ENOENT, .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Strict DNS mode: a netfilter socket kept open for adding learned
/// addresses to `learned4`/`learned6`, one acked batch per call. The DNS
/// server's learner (`dns::learn::NftLearner`) holds one; there is no
/// other way elements are written.
pub struct LearnedSets {
    nl: Netlink,
}

impl LearnedSets {
    pub fn open() -> Result<LearnedSets, NftError> {
        Ok(LearnedSets { nl: Netlink::open()? })
    }

    /// Lets the workloads reach each address for its time (an address an
    /// allowed answer returned). Re-adding one refreshes its timeout.
    pub fn add(&mut self, elems: &[(std::net::IpAddr, Duration)]) -> Result<(), NftError> {
        if elems.is_empty() {
            return Ok(());
        }
        let ms: Vec<(std::net::IpAddr, u64)> =
            elems.iter().map(|(ip, d)| (*ip, d.as_millis().clamp(1, u128::from(u64::MAX)) as u64)).collect();
        let batch = netlink::learned_batch(TABLE, &ms, self.nl.next_seq())?;
        self.nl.seq = self.nl.seq.wrapping_add(batch.messages as u32);
        self.nl.run_batch(&batch)
    }
}

impl LearnedSets {
    /// Opens the addresses of names with ports on their ports, each for
    /// its time; re-adding one refreshes its timeout.
    pub fn add_named(&mut self, elems: &[netlink::NamedElem]) -> Result<(), NftError> {
        if elems.is_empty() {
            return Ok(());
        }
        let batch = netlink::named_batch(TABLE, elems, self.nl.next_seq())?;
        self.nl.seq = self.nl.seq.wrapping_add(batch.messages as u32);
        self.nl.run_batch(&batch)
    }
}

/// [`LearnedSets::add`] once, on a socket of its own.
pub fn add_learned(elems: &[(std::net::IpAddr, Duration)]) -> Result<(), NftError> {
    LearnedSets::open()?.add(elems)
}

/// What is installed in egret's table now.
pub fn read_back() -> Result<Installed, NftError> {
    Netlink::open()?.read_back(TABLE)
}

/// Installs tables of chains only (the self-test's), replacing any of the
/// same name.
pub fn apply_tables(tables: &[ruleset::Table]) -> Result<(), NftError> {
    let mut nl = Netlink::open()?;
    let batch = netlink::tables_batch(tables, nl.next_seq())?;
    nl.seq = nl.seq.wrapping_add(batch.messages as u32);
    nl.run_batch(&batch)
}

/// Removes these tables, whether they exist or not.
pub fn drop_tables(tables: &[(ruleset::TableFamily, &str)]) -> Result<(), NftError> {
    let mut nl = Netlink::open()?;
    let batch = netlink::drop_tables_batch(tables, nl.next_seq())?;
    nl.seq = nl.seq.wrapping_add(batch.messages as u32);
    nl.run_batch(&batch)
}

/// The packet counts of every `counter` in a table, summed.
pub fn counted(family: ruleset::TableFamily, table: &str) -> Result<u64, NftError> {
    let mut nl = Netlink::open()?;
    let rules = nl.dump_in(family, c::NFT_MSG_GETRULE, Some((c::NFTA_RULE_TABLE, table)))?;
    Ok(rules.iter().filter_map(|r| netlink::counter_packets(r)).sum())
}

/// The bypass mark of the installed ruleset: the value of the first rule
/// of `nat_out` (`meta mark M return`). For the self-test, which runs
/// beside `egret run` and must send a control packet as egret would.
pub fn installed_mark() -> Result<Option<u32>, NftError> {
    let mut nl = Netlink::open()?;
    let rules = nl.dump(c::NFT_MSG_GETRULE, Some((c::NFTA_RULE_TABLE, TABLE)))?;
    let first = rules.iter().find(|r| {
        let chain = r.iter().find(|(t, _)| *t == c::NFTA_RULE_CHAIN).map(|(_, v)| netlink::attr_str(v));
        chain.as_deref() == Some("nat_out")
    });
    Ok(first
        .and_then(|r| netlink::first_cmp_value(r))
        .and_then(|v| Some(u32::from_ne_bytes(v.get(..4)?.try_into().ok()?))))
}

/// The attributes of one dumped object.
type OwnedAttrs = Vec<(u16, Vec<u8>)>;

struct Netlink {
    fd: OwnedFd,
    seq: u32,
    /// SO_SNDBUFFORCE was refused: a missing capability shows up here
    /// first for batches too big for the default buffer.
    sndbuf_denied: bool,
}

/// A netfilter netlink socket bound to a kernel-chosen port, with every
/// receive bounded by `recv_timeout` and a receive buffer of `rcvbuf`
/// bytes (forced past the sysctl limit when egret has CAP_NET_ADMIN,
/// best effort otherwise). Shared by the nf_tables batches and the NFLOG
/// reader. An error names the step that failed.
pub fn netfilter_socket(
    recv_timeout: Duration,
    rcvbuf: usize,
) -> Result<std::os::fd::OwnedFd, (&'static str, nix::errno::Errno)> {
    let fd =
        socket(AddressFamily::Netlink, SockType::Raw, SockFlag::SOCK_CLOEXEC, SockProtocol::NetlinkNetFilter)
            .map_err(|e| ("socket", e))?;
    bind(fd.as_raw_fd(), &NetlinkAddr::new(0, 0)).map_err(|e| ("bind", e))?;
    let t = TimeVal::new(recv_timeout.as_secs() as i64, 0);
    setsockopt(&fd, sockopt::ReceiveTimeout, &t).map_err(|e| ("set receive timeout", e))?;
    if setsockopt(&fd, sockopt::RcvBufForce, &rcvbuf).is_err() {
        let _ = setsockopt(&fd, sockopt::RcvBuf, &rcvbuf);
    }
    Ok(fd)
}

impl Netlink {
    fn open() -> Result<Netlink, NftError> {
        // Acks for big batches: make room.
        let fd =
            netfilter_socket(RECV_TIMEOUT, 4 << 20).map_err(|(op, errno)| NftError::Socket { op, errno })?;
        // Start from the clock so answers to an earlier process's socket
        // can never be mistaken for ours (each socket has its own port id
        // anyway; this only makes logs easier to read).
        let seq = SystemTime::now().duration_since(UNIX_EPOCH).map_or(1, |d| d.as_secs() as u32);
        Ok(Netlink { fd, seq, sndbuf_denied: false })
    }

    fn next_seq(&mut self) -> u32 {
        self.seq = self.seq.wrapping_add(1);
        self.seq
    }

    fn send(&mut self, bytes: &[u8]) -> Result<(), NftError> {
        // One datagram for the whole batch: the kernel treats a batch split
        // over several sends as separate transactions.
        if bytes.len() > 100_000 {
            let want = bytes.len() + (64 << 10);
            if setsockopt(&self.fd, sockopt::SndBufForce, &want).is_err() {
                self.sndbuf_denied = true;
                let _ = setsockopt(&self.fd, sockopt::SndBuf, &want);
            }
        }
        match send(self.fd.as_raw_fd(), bytes, MsgFlags::empty()) {
            Ok(_) => Ok(()),
            Err(Errno::EMSGSIZE | Errno::ENOBUFS) if self.sndbuf_denied => Err(NftError::PermissionDenied),
            Err(errno) => Err(NftError::Socket { op: "send", errno }),
        }
    }

    fn recv<'b>(&self, buf: &'b mut [u8], waiting_for: &dyn Fn() -> String) -> Result<&'b [u8], NftError> {
        loop {
            match recv(self.fd.as_raw_fd(), buf, MsgFlags::empty()) {
                Ok(n) => return Ok(&buf[..n]),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Err(NftError::Timeout { waiting_for: waiting_for() }),
                Err(errno) => return Err(NftError::Socket { op: "recv", errno }),
            }
        }
    }

    /// Sends a batch and waits for every ack, stopping at the first error.
    fn run_batch(&mut self, batch: &Batch) -> Result<(), NftError> {
        self.send(&batch.bytes)?;
        let mut next = 0; // index into batch.acked of the first unacked message
        let mut buf = vec![0u8; 1 << 20];
        while next < batch.acked.len() {
            let waiting = || batch.acked[next].1.clone();
            let data = self.recv(&mut buf, &waiting)?;
            for m in netlink::split_messages(data) {
                let Some(err) = netlink::ack_errno(&m) else { continue };
                if m.seq == batch.begin_seq {
                    // The batch as a whole was refused.
                    return Err(match Errno::from_raw(err) {
                        Errno::EPERM => NftError::PermissionDenied,
                        errno => NftError::Kernel { what: "the batch".into(), errno },
                    });
                }
                let Some(i) = batch.acked.iter().position(|(s, _)| *s == m.seq) else { continue };
                if err != 0 {
                    let errno = Errno::from_raw(err);
                    if errno == Errno::EPERM {
                        return Err(NftError::PermissionDenied);
                    }
                    return Err(NftError::Kernel { what: batch.acked[i].1.clone(), errno });
                }
                next = next.max(i + 1);
            }
        }
        Ok(())
    }

    /// Runs one dump and returns the attribute lists of its messages.
    fn dump(&mut self, msg: u16, filter: Option<(u16, &str)>) -> Result<Vec<OwnedAttrs>, NftError> {
        self.dump_in(ruleset::TableFamily::Inet, msg, filter)
    }

    fn dump_in(
        &mut self,
        family: ruleset::TableFamily,
        msg: u16,
        filter: Option<(u16, &str)>,
    ) -> Result<Vec<OwnedAttrs>, NftError> {
        let seq = self.next_seq();
        self.send(&netlink::dump_request_in(family, msg, seq, filter)?)?;
        let mut out = Vec::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let data = self.recv(&mut buf, &|| "the table read-back".to_owned())?;
            for m in netlink::split_messages(data) {
                if m.seq != seq {
                    continue;
                }
                if m.ty == c::NLMSG_DONE {
                    return Ok(out);
                }
                if let Some(err) = netlink::ack_errno(&m) {
                    if err == 0 {
                        continue;
                    }
                    return match Errno::from_raw(err) {
                        Errno::EPERM => Err(NftError::PermissionDenied),
                        errno => Err(NftError::Kernel { what: "the table read-back".into(), errno }),
                    };
                }
                out.push(netlink::nft_attrs(&m).into_iter().map(|(t, v)| (t, v.to_vec())).collect());
            }
        }
    }

    fn read_back(&mut self, table: &str) -> Result<Installed, NftError> {
        let named = |attrs: &[(u16, Vec<u8>)], t: u16| {
            attrs.iter().find(|(ty, _)| *ty == t).map(|(_, v)| netlink::attr_str(v)).unwrap_or_default()
        };
        let mut inst = Installed::default();
        for s in self.dump(c::NFT_MSG_GETSET, Some((c::NFTA_SET_TABLE, table)))? {
            if named(&s, c::NFTA_SET_TABLE) == table {
                inst.sets.push(named(&s, c::NFTA_SET_NAME));
            }
        }
        for ch in self.dump(c::NFT_MSG_GETCHAIN, None)? {
            if named(&ch, c::NFTA_CHAIN_TABLE) == table {
                inst.chains.push((named(&ch, c::NFTA_CHAIN_NAME), 0));
            }
        }
        for r in self.dump(c::NFT_MSG_GETRULE, Some((c::NFTA_RULE_TABLE, table)))? {
            if named(&r, c::NFTA_RULE_TABLE) != table {
                continue;
            }
            let chain = named(&r, c::NFTA_RULE_CHAIN);
            if let Some(e) = inst.chains.iter_mut().find(|(n, _)| *n == chain) {
                e.1 += 1;
            }
        }
        Ok(inst)
    }
}
