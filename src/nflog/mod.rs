//! The NFLOG reader: binds egret's NFLOG group on a netfilter netlink
//! socket and turns every logged packet into an `nflog.event` BLOCKED
//! event.
//!
//! The I/O shell around `parse.rs`. Binding happens before the thread
//! starts, so a missing capability is a start-up error, not a log line.
//! Packets are sent by the kernel to the one socket bound to the group
//! (per network namespace).

pub mod parse;

use std::fmt;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use neli::consts::nl::NlmF;
use nix::errno::Errno;
use nix::sys::socket::{recv, send, setsockopt, sockopt, MsgFlags};
use nix::sys::time::TimeVal;

use crate::config::Config;
use crate::events::{Action, Component, Emitter, Event};
use crate::nft::netlink::{self as nl, c};

pub use parse::{LogRecord, Protocol};

// linux/netfilter/nfnetlink_log.h
const NFULNL_MSG_PACKET: u16 = 0;
const NFULNL_MSG_CONFIG: u16 = 1;
const NFULA_CFG_CMD: u16 = 1;
const NFULA_CFG_MODE: u16 = 2;
const NFULA_CFG_TIMEOUT: u16 = 4;
const NFULA_CFG_QTHRESH: u16 = 5;
const NFULNL_CFG_CMD_BIND: u8 = 1;
const NFULNL_COPY_PACKET: u8 = 2;

/// How long the kernel may hold logged packets before sending a batch of
/// fewer than `NFLOG_QTHRESH` (in 1/100 s): events stay timely.
const FLUSH_TIMEOUT_CS: u32 = 20;
/// The reader wakes this often to notice a stop request.
const POLL: Duration = Duration::from_millis(500);
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug)]
#[non_exhaustive]
pub enum NflogError {
    Socket {
        op: &'static str,
        errno: Errno,
    },
    PermissionDenied {
        group: u16,
    },
    /// Another socket in this namespace already has the group.
    Busy {
        group: u16,
    },
    Kernel {
        op: &'static str,
        errno: Errno,
    },
    Timeout,
    Encode(String),
}

impl fmt::Display for NflogError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NflogError::Socket { op, errno } => write!(f, "nflog socket: {op}: {}", errno.desc()),
            NflogError::PermissionDenied { group } => {
                write!(f, "nflog: binding group {group} not permitted: egret needs CAP_NET_ADMIN")
            }
            NflogError::Busy { group } => {
                write!(
                    f,
                    "nflog: group {group} is already bound by another process in this network namespace"
                )
            }
            NflogError::Kernel { op, errno } => write!(f, "nflog: {op}: {}", errno.desc()),
            NflogError::Timeout => {
                write!(f, "nflog: no answer to the bind request within {}s", ACK_TIMEOUT.as_secs())
            }
            NflogError::Encode(e) => write!(f, "nflog: {e}"),
        }
    }
}

impl std::error::Error for NflogError {}

/// A bound NFLOG group.
pub struct Listener {
    fd: OwnedFd,
    group: u16,
}

impl Listener {
    /// Binds `group`, copying `copy_range` bytes of every packet and
    /// letting the kernel batch up to `qthresh` packets per message.
    pub fn bind(group: u16, copy_range: u32, qthresh: u32) -> Result<Listener, NflogError> {
        // Room for bursts: a full buffer loses log messages (ENOBUFS).
        let fd = crate::nft::netfilter_socket(ACK_TIMEOUT, 2 << 20)
            .map_err(|(op, errno)| NflogError::Socket { op, errno })?;
        let l = Listener { fd, group };
        let mut mode = copy_range.to_be_bytes().to_vec();
        mode.extend_from_slice(&[NFULNL_COPY_PACKET, 0]);
        l.config(1, &[(NFULA_CFG_CMD, vec![NFULNL_CFG_CMD_BIND])], "bind")?;
        l.config(
            2,
            &[
                (NFULA_CFG_MODE, mode),
                (NFULA_CFG_QTHRESH, qthresh.to_be_bytes().to_vec()),
                (NFULA_CFG_TIMEOUT, FLUSH_TIMEOUT_CS.to_be_bytes().to_vec()),
            ],
            "configure",
        )?;
        let t = TimeVal::new(0, POLL.as_micros() as i64);
        setsockopt(&l.fd, sockopt::ReceiveTimeout, &t)
            .map_err(|errno| NflogError::Socket { op: "set receive timeout", errno })?;
        Ok(l)
    }

    fn config(&self, seq: u32, attrs: &[(u16, Vec<u8>)], op: &'static str) -> Result<(), NflogError> {
        let mut built = Vec::new();
        for (t, v) in attrs {
            built.push(nl::bytes(*t, v).map_err(|e| NflogError::Encode(e.to_string()))?);
        }
        let ty = (c::NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_CONFIG;
        let msg = nl::message(ty, NlmF::REQUEST | NlmF::ACK, seq, 0, self.group, &built)
            .map_err(|e| NflogError::Encode(e.to_string()))?;
        send(self.fd.as_raw_fd(), &msg, MsgFlags::empty())
            .map_err(|errno| NflogError::Socket { op: "send", errno })?;
        let mut buf = vec![0u8; 8192];
        // Bounded: every recv has a timeout, and the loop ends at the ack.
        for _ in 0..64 {
            let n = match recv(self.fd.as_raw_fd(), &mut buf, MsgFlags::empty()) {
                Ok(n) => n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Err(NflogError::Timeout),
                Err(errno) => return Err(NflogError::Socket { op: "recv", errno }),
            };
            for m in nl::split_messages(&buf[..n]) {
                if m.seq != seq {
                    continue;
                }
                match nl::ack_errno(&m) {
                    Some(0) => return Ok(()),
                    Some(e) => {
                        return Err(match Errno::from_raw(e) {
                            Errno::EPERM => NflogError::PermissionDenied { group: self.group },
                            Errno::EBUSY => NflogError::Busy { group: self.group },
                            errno => NflogError::Kernel { op, errno },
                        })
                    }
                    None => {}
                }
            }
        }
        Err(NflogError::Timeout)
    }

    /// Waits up to the poll interval for logged packets. Errors of single
    /// messages are logged and skipped; `Ok(empty)` on a quiet interval.
    pub fn read(&self, buf: &mut [u8]) -> Result<Vec<LogRecord>, NflogError> {
        let n = match recv(self.fd.as_raw_fd(), buf, MsgFlags::empty()) {
            Ok(n) => n,
            Err(Errno::EAGAIN | Errno::EINTR) => return Ok(Vec::new()),
            Err(Errno::ENOBUFS) => {
                log::warn!("nflog: the kernel dropped log messages (receive buffer full)");
                return Ok(Vec::new());
            }
            Err(errno) => return Err(NflogError::Socket { op: "recv", errno }),
        };
        let mut out = Vec::new();
        for m in nl::split_messages(&buf[..n]) {
            if m.ty != (c::NFNL_SUBSYS_ULOG << 8) | NFULNL_MSG_PACKET {
                continue;
            }
            match parse::parse_message(m.payload) {
                Ok(r) => out.push(r),
                Err(e) => log::debug!("{e}"),
            }
        }
        Ok(out)
    }
}

/// The `nflog.event` for one logged packet.
pub fn to_event(r: &LogRecord, ev: Event) -> Event {
    let mut ev = match (r.src_port, r.dst_port, r.protocol) {
        (Some(sp), Some(dp), Protocol::Tcp) => ev.with_flow((r.src, sp).into(), (r.dst, dp).into(), "TCP"),
        (Some(sp), Some(dp), Protocol::Udp) => ev.with_flow((r.src, sp).into(), (r.dst, dp).into(), "UDP"),
        _ => {
            // No ports (ICMP, or cut off): as g0efilter, `src`/`dst` are the
            // bare addresses and the flow id hashes ports 0.
            let mut e = ev;
            let name = r.protocol.name();
            e.source_ip = Some(r.src.to_string());
            e.destination_ip = Some(r.dst.to_string());
            e.src = Some(r.src.to_string());
            e.dst = Some(r.dst.to_string());
            e.flow_id = Some(crate::events::flow_id(r.src, 0, r.dst, 0, &name));
            e.protocol = Some(name);
            e
        }
    };
    ev.payload_len = Some(r.payload_len as u64);
    // The same value as a name outside the policy: the destination is
    // not allowlisted.
    ev.reason = Some("not-allowlisted".to_owned());
    // The sending socket's owner, when the packet had one (NFLOG's UID).
    ev.uid = r.uid;
    if let Some((t, code)) = r.icmp {
        ev.note = Some(format!("icmp type {t} code {code}"));
    }
    ev
}

/// The reason of a logged packet the policy's denylist refused (a
/// denylisted destination, refused on every port and protocol): the
/// event says `denylisted` and names the entry, where `to_event` could
/// only say `not-allowlisted`. Pure: the policy is the one the rules were
/// built from (or its successor, which refuses the same or reloads them).
pub fn explain(ev: &mut Event, r: &LogRecord, policy: &crate::policy::Policy) {
    use crate::policy::{Proto, Query, Reason};
    let port = match (r.protocol, r.dst_port) {
        (Protocol::Tcp, Some(p)) => Some((Proto::Tcp, p)),
        (Protocol::Udp, Some(p)) => Some((Proto::Udp, p)),
        _ => None,
    };
    let d = policy.decide(Query { name: None, ip: Some(r.dst), port });
    if let (Reason::Denylisted, Some(rule)) = (d.reason, &d.rule) {
        ev.reason = Some(Reason::Denylisted.as_str().to_owned());
        let entry = format!("denylist {rule}");
        ev.note = Some(match ev.note.take() {
            Some(n) => format!("{entry}; {n}"),
            None => entry,
        });
    }
}

/// A running reader thread; `stop()` ends it within the poll interval.
pub struct Reader {
    stop: Arc<AtomicBool>,
    join: Option<JoinHandle<()>>,
}

impl Reader {
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(j) = self.join.take() {
            let _ = j.join();
        }
    }
}

/// Binds the configured group and starts the reader thread, which hands
/// every record to `sink`.
pub fn spawn_with<F>(cfg: &Config, mut sink: F) -> Result<Reader, NflogError>
where
    F: FnMut(LogRecord) + Send + 'static,
{
    let l = Listener::bind(cfg.nflog_group, cfg.nflog_bufsize, cfg.nflog_qthresh)?;
    log::info!(
        "nflog: listening on group {} (copy range {} bytes, queue threshold {})",
        cfg.nflog_group,
        cfg.nflog_bufsize,
        cfg.nflog_qthresh
    );
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let join = std::thread::Builder::new()
        .name("nflog".into())
        .spawn(move || {
            let mut buf = vec![0u8; 1 << 16];
            while !stop2.load(Ordering::Relaxed) {
                match l.read(&mut buf) {
                    Ok(records) => records.into_iter().for_each(&mut sink),
                    Err(e) => {
                        log::error!("{e}; nflog reader stops");
                        return;
                    }
                }
            }
        })
        .map_err(|e| NflogError::Kernel {
            op: "spawn reader thread",
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(0)),
        })?;
    Ok(Reader { stop, join: Some(join) })
}

/// The event action of a packet logged with `prefix`: BLOCKED for
/// egret's rejecting rules, AUDIT for audit mode's accepting ones, `None`
/// for a prefix that is not egret's.
pub fn action_of(prefix: &str) -> Option<Action> {
    match prefix {
        crate::nft::ruleset::LOG_PREFIX => Some(Action::Blocked),
        crate::nft::ruleset::AUDIT_PREFIX => Some(Action::Audit),
        _ => None,
    }
}

/// Starts the reader emitting `nflog.event` BLOCKED (AUDIT) events for
/// packets logged with egret's prefixes.
pub fn spawn(cfg: &Config, emitter: Emitter) -> Result<Reader, NflogError> {
    spawn_with(cfg, move |r| {
        let Some(action) = action_of(&r.prefix) else { return };
        let ev = to_event(&r, emitter.event(Component::Nflog, action));
        emitter.emit(ev);
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::UNIX_EPOCH;

    #[test]
    fn event_fields() {
        let m = parse::tests::message(
            0,
            "blocked",
            &parse::tests::ipv4_tcp([10, 200, 1, 1], [10, 200, 1, 2], 40000, 9),
        );
        let r = parse::parse_message(&m).unwrap();
        let ev = to_event(&r, Event::new(Component::Nflog, Action::Blocked, "h", UNIX_EPOCH));
        let v: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(v["msg"], "nflog.event");
        assert_eq!(v["action"], "BLOCKED");
        assert_eq!(v["component"], "nflog");
        assert_eq!(v["source_ip"], "10.200.1.1");
        assert_eq!(v["source_port"], 40000);
        assert_eq!(v["destination_ip"], "10.200.1.2");
        assert_eq!(v["destination_port"], 9);
        assert_eq!(v["protocol"], "TCP");
        assert_eq!(v["dst"], "10.200.1.2:9");
        assert_eq!(v["flow_id"], crate::events::flow_id(r.src, 40000, r.dst, 9, "TCP"));
        assert_eq!(v["payload_len"], 40, "the copied bytes, as g0efilter reports them");
        assert_eq!(v["reason"], "not-allowlisted");
    }

    /// g0efilter writes the protocol number for anything but TCP/UDP.
    #[test]
    fn icmp_events_carry_the_protocol_number() {
        let mut p = vec![0x45, 0, 0, 28, 0, 0, 0x40, 0, 64, 1, 0, 0, 10, 200, 1, 1, 10, 200, 1, 2];
        p.extend_from_slice(&[8, 0, 0, 0, 0, 1, 0, 1]);
        let r = parse::parse_message(&parse::tests::message(0, "blocked", &p)).unwrap();
        let ev = to_event(&r, Event::new(Component::Nflog, Action::Blocked, "h", UNIX_EPOCH));
        let v: serde_json::Value = serde_json::from_str(&ev.to_json()).unwrap();
        assert_eq!(v["protocol"], "1");
        assert_eq!((v["src"].as_str(), v["dst"].as_str()), (Some("10.200.1.1"), Some("10.200.1.2")));
        assert_eq!(v["flow_id"], crate::events::flow_id(r.src, 0, r.dst, 0, "1"));
        assert_eq!(v["payload_len"], 28);
        assert!(v.get("source_port").is_none());
        assert_eq!(parse::Protocol::Icmpv6.name(), "58");
        assert_eq!(parse::Protocol::Other(132).name(), "132");
    }
}
