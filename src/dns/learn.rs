//! Learned addresses: what the DNS server does with the A/AAAA addresses
//! of an allowed answer *before* the client sees it.
//!
//! [`Learn`] is the hook; [`NftLearner`] (strict egress) adds them to the
//! `learned4`/`learned6` sets of `table inet egret` with a timeout, so the
//! first connection to a freshly resolved address never races the rule.
//! The netlink message building is pure ([`setelem_batch`]); only
//! [`NftLearner::learn`] touches a socket.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::policy::{Guard, Policy, Query};

/// Something that must know an address before a client may use it.
/// Called synchronously by the DNS server, once per allowed answer that
/// carries addresses; an error makes the server answer SERVFAIL instead of
/// handing out an address that would not work.
pub trait Learn: Send + Sync {
    /// `name` is the (normalised) question name; `ips` the answer's
    /// addresses, each with its TTL already clamped to
    /// `[DNS_TTL_MIN, DNS_TTL_MAX]`.
    fn learn(&self, name: &str, ips: &[(IpAddr, Duration)]) -> Result<(), LearnError>;
}

/// Why addresses could not be learned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LearnError(pub String);

impl fmt::Display for LearnError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot learn addresses: {}", self.0)
    }
}

impl std::error::Error for LearnError {}

/// Several learners, in order; the first error stops the chain.
pub struct Chain(pub Vec<Arc<dyn Learn>>);

impl Learn for Chain {
    fn learn(&self, name: &str, ips: &[(IpAddr, Duration)]) -> Result<(), LearnError> {
        self.0.iter().try_for_each(|l| l.learn(name, ips))
    }
}

/// The table and sets strict egress fills. The kernel-path ruleset
/// declares them (`type ipv4_addr`/`ipv6_addr; flags timeout`) and accepts
/// `ip daddr @learned4` / `ip6 daddr @learned6` in its filter chain.
pub const TABLE: &str = "egret";
pub const SET4: &str = "learned4";
pub const SET6: &str = "learned6";

/// Netlink and nf_tables numbers (linux/netlink.h, linux/netfilter/
/// nfnetlink.h, linux/netfilter/nf_tables.h). libc has no `NFTA_*`.
mod nl {
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLM_F_REQUEST: u16 = 0x1;
    pub const NLM_F_ACK: u16 = 0x4;
    pub const NLM_F_CREATE: u16 = 0x400;
    pub const NLA_F_NESTED: u16 = 0x8000;
    pub const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
    pub const NFNL_MSG_BATCH_END: u16 = 0x11;
    pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
    pub const NFT_MSG_NEWSETELEM: u16 = 12;
    pub const NFPROTO_UNSPEC: u8 = 0;
    pub const NFPROTO_INET: u8 = 1;
    pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
    pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
    pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const NFTA_LIST_ELEM: u16 = 1;
    pub const NFTA_SET_ELEM_KEY: u16 = 1;
    pub const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
    pub const NFTA_DATA_VALUE: u16 = 1;
}

/// Elements per NEWSETELEM message: at most ~48 bytes each, so a message
/// stays far below the u16 attribute length limit.
const ELEMS_PER_MSG: usize = 512;

/// One netlink attribute: header, payload, padding to 4 bytes.
fn attr(out: &mut Vec<u8>, kind: u16, payload: &[u8]) {
    let len = 4 + payload.len();
    out.extend_from_slice(&(len as u16).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(payload);
    out.resize(out.len() + (4 - len % 4) % 4, 0);
}

fn nested(out: &mut Vec<u8>, kind: u16, build: impl FnOnce(&mut Vec<u8>)) {
    let mut inner = Vec::new();
    build(&mut inner);
    attr(out, kind | nl::NLA_F_NESTED, &inner);
}

/// One netlink message with an nfgenmsg header.
fn message(out: &mut Vec<u8>, kind: u16, flags: u16, seq: u32, family: u8, res_id: u16, attrs: &[u8]) {
    let len = 16 + 4 + attrs.len();
    out.extend_from_slice(&(len as u32).to_ne_bytes());
    out.extend_from_slice(&kind.to_ne_bytes());
    out.extend_from_slice(&flags.to_ne_bytes());
    out.extend_from_slice(&seq.to_ne_bytes());
    out.extend_from_slice(&0u32.to_ne_bytes());
    out.push(family);
    out.push(0); // NFNETLINK_V0
    out.extend_from_slice(&res_id.to_be_bytes());
    out.extend_from_slice(attrs);
}

/// The batch adding `ips` to `learned4`/`learned6` of `table inet egret`,
/// each with its timeout, and the sequence numbers whose acks to wait for.
/// Adding an element that exists (no NLM_F_EXCL) replaces its timeout.
/// Pure: this is golden-tested byte for byte.
pub fn setelem_batch(ips: &[(IpAddr, Duration)], seq: u32) -> (Vec<u8>, Vec<u32>) {
    let mut out = Vec::new();
    let mut acks = Vec::new();
    message(
        &mut out,
        nl::NFNL_MSG_BATCH_BEGIN,
        nl::NLM_F_REQUEST,
        seq,
        nl::NFPROTO_UNSPEC,
        nl::NFNL_SUBSYS_NFTABLES,
        &[],
    );
    let mut next = seq.wrapping_add(1);
    for (set, v4) in [(SET4, true), (SET6, false)] {
        let family: Vec<&(IpAddr, Duration)> = ips.iter().filter(|(ip, _)| ip.is_ipv4() == v4).collect();
        // An attribute's length is a u16: a huge answer (thousands of
        // records over TCP) is split over several messages.
        for chunk in family.chunks(ELEMS_PER_MSG) {
            let mut a = Vec::new();
            attr(&mut a, nl::NFTA_SET_ELEM_LIST_TABLE, &cstr(TABLE));
            attr(&mut a, nl::NFTA_SET_ELEM_LIST_SET, &cstr(set));
            nested(&mut a, nl::NFTA_SET_ELEM_LIST_ELEMENTS, |els| {
                for (ip, ttl) in chunk {
                    nested(els, nl::NFTA_LIST_ELEM, |el| {
                        nested(el, nl::NFTA_SET_ELEM_KEY, |k| {
                            let bytes = match ip {
                                IpAddr::V4(a) => a.octets().to_vec(),
                                IpAddr::V6(a) => a.octets().to_vec(),
                            };
                            attr(k, nl::NFTA_DATA_VALUE, &bytes);
                        });
                        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
                        attr(el, nl::NFTA_SET_ELEM_TIMEOUT, &ms.to_be_bytes());
                    });
                }
            });
            let kind = (nl::NFNL_SUBSYS_NFTABLES << 8) | nl::NFT_MSG_NEWSETELEM;
            let flags = nl::NLM_F_REQUEST | nl::NLM_F_CREATE | nl::NLM_F_ACK;
            message(&mut out, kind, flags, next, nl::NFPROTO_INET, 0, &a);
            acks.push(next);
            next = next.wrapping_add(1);
        }
    }
    message(
        &mut out,
        nl::NFNL_MSG_BATCH_END,
        nl::NLM_F_REQUEST,
        next,
        nl::NFPROTO_UNSPEC,
        nl::NFNL_SUBSYS_NFTABLES,
        &[],
    );
    (out, acks)
}

fn cstr(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

/// The acks in one netlink datagram: (seq, errno) for every NLMSG_ERROR
/// (errno 0 is a plain ack). Stops at the first malformed header.
pub fn parse_acks(buf: &[u8]) -> Vec<(u32, i32)> {
    let mut out = Vec::new();
    let mut off = 0;
    while buf.len() >= off + 16 {
        let len = u32::from_ne_bytes([buf[off], buf[off + 1], buf[off + 2], buf[off + 3]]) as usize;
        if len < 16 || off + len > buf.len() {
            break;
        }
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let seq = u32::from_ne_bytes([buf[off + 8], buf[off + 9], buf[off + 10], buf[off + 11]]);
        if kind == nl::NLMSG_ERROR && len >= 20 {
            let e = i32::from_ne_bytes([buf[off + 16], buf[off + 17], buf[off + 18], buf[off + 19]]);
            out.push((seq, -e));
        }
        off += (len + 3) & !3;
    }
    out
}

/// What strict egress has handed out: per address, the names whose
/// answers carried it and until when. Pure: `now` is passed in.
///
/// An address keeps the latest expiry any name gave it (a short-TTL answer
/// for a shared CDN address must not cut the window another answer
/// opened), and after a policy reload only the addresses of names the new
/// policy still allows come back ([`Learned::still_allowed`]): the ruleset
/// is replaced whole, so its learned sets start empty. Nor does an address
/// the SSRF guard now refuses (learned while `allowlist.ips` covered it,
/// and the reload took the entry away).
#[derive(Debug, Default, Clone)]
pub struct Learned {
    by_ip: std::collections::HashMap<IpAddr, Vec<(String, std::time::Instant)>>,
    adds: usize,
}

impl Learned {
    /// Records `name` → `ips` and returns the timeouts to install: each
    /// address's latest expiry.
    pub fn add(
        &mut self,
        name: &str,
        ips: &[(IpAddr, Duration)],
        now: std::time::Instant,
    ) -> Vec<(IpAddr, Duration)> {
        // Expired entries are dropped every so often, not on every add.
        self.adds += 1;
        if self.adds % 256 == 0 {
            self.prune(now);
        }
        ips.iter()
            .map(|&(ip, ttl)| {
                let exp = now + ttl;
                let names = self.by_ip.entry(ip).or_default();
                match names.iter_mut().find(|(n, _)| n == name) {
                    Some(e) => e.1 = e.1.max(exp),
                    None => names.push((name.to_owned(), exp)),
                }
                let latest = names.iter().filter(|(_, e)| *e > now).map(|(_, e)| *e).max().unwrap_or(exp);
                (ip, latest.saturating_duration_since(now))
            })
            .collect()
    }

    /// After a reload: forgets names the policy no longer allows, and
    /// addresses `guard` refuses under it, and returns the remaining
    /// addresses with the time they have left.
    pub fn still_allowed(
        &mut self,
        policy: &Policy,
        guard: &Guard,
        now: std::time::Instant,
    ) -> Vec<(IpAddr, Duration)> {
        let mut out = Vec::new();
        self.by_ip.retain(|ip, names| {
            if guard.check(policy, *ip).is_some() {
                return false;
            }
            names.retain(|(n, exp)| *exp > now && policy.decide(Query { name: Some(n), ip: None }).allowed());
            if let Some(latest) = names.iter().map(|(_, e)| *e).max() {
                out.push((*ip, latest.saturating_duration_since(now)));
            }
            !names.is_empty()
        });
        out.sort();
        out
    }

    pub fn prune(&mut self, now: std::time::Instant) {
        self.by_ip.retain(|_, names| {
            names.retain(|(_, exp)| *exp > now);
            !names.is_empty()
        });
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

/// Strict egress: adds learned addresses to the nft sets over netlink and
/// waits for the kernel's ack, so the rule is in place before the answer
/// leaves.
pub struct NftLearner {
    state: std::sync::Mutex<NftState>,
    /// `GUARD_ADDRESSES`, for [`NftLearner::replay`] (the server guards
    /// answers before they get here).
    guard: Guard,
}

struct NftState {
    sock: Option<neli::socket::NlSocket>,
    seq: u32,
    learned: Learned,
}

/// How long to wait for the kernel's acks (they are normally queued before
/// `send` returns: nfnetlink runs the batch in the sender's context).
const ACK_WAIT: Duration = Duration::from_secs(1);

impl NftLearner {
    /// Opens the netfilter netlink socket (needs CAP_NET_ADMIN in the
    /// namespace whose ruleset it fills: the caller's).
    pub fn new(guard: Guard) -> Result<NftLearner, LearnError> {
        let sock = open()?;
        Ok(NftLearner {
            state: std::sync::Mutex::new(NftState { sock: Some(sock), seq: 1, learned: Learned::default() }),
            guard,
        })
    }
}

fn open() -> Result<neli::socket::NlSocket, LearnError> {
    use neli::consts::socket::NlFamily;
    neli::socket::NlSocket::connect(NlFamily::Netfilter, None, neli::utils::Groups::empty())
        .map_err(|e| LearnError(format!("netfilter netlink socket: {e}")))
}

impl Learn for NftLearner {
    fn learn(&self, name: &str, ips: &[(IpAddr, Duration)]) -> Result<(), LearnError> {
        if ips.is_empty() {
            return Ok(());
        }
        // A panic elsewhere cannot leave the state half-written in a way
        // that matters: the worst is a stale expiry, corrected by the
        // kernel's own timeout.
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let now = std::time::Instant::now();
        let ips = st.learned.add(name, ips, now);
        install(&mut st, &ips)
    }
}

impl NftLearner {
    /// After the ruleset was replaced (a policy reload empties the learned
    /// sets): puts back the addresses of names `policy` still allows, with
    /// the time they have left. Returns how many.
    pub fn replay(&self, policy: &Policy) -> Result<usize, LearnError> {
        let mut st = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let ips = st.learned.still_allowed(policy, &self.guard, std::time::Instant::now());
        install(&mut st, &ips)?;
        Ok(ips.len())
    }
}

fn install(st: &mut NftState, ips: &[(IpAddr, Duration)]) -> Result<(), LearnError> {
    if ips.is_empty() {
        return Ok(());
    }
    let seq = st.seq;
    let (batch, acks) = setelem_batch(ips, seq);
    st.seq = seq.wrapping_add(acks.len() as u32 + 2);
    if st.sock.is_none() {
        st.sock = Some(open()?);
    }
    let result = match &st.sock {
        Some(sock) => send_and_wait(sock, &batch, &acks),
        None => Err(LearnError("no netlink socket".into())),
    };
    if result.is_err() {
        // Start from a fresh socket next time (no stale acks).
        st.sock = None;
    }
    result
}

fn send_and_wait(sock: &neli::socket::NlSocket, batch: &[u8], acks: &[u32]) -> Result<(), LearnError> {
    use neli::consts::socket::Msg;
    sock.send(batch, Msg::empty()).map_err(|e| LearnError(format!("netlink send: {e}")))?;
    let mut pending: Vec<u32> = acks.to_vec();
    let deadline = std::time::Instant::now() + ACK_WAIT;
    let mut buf = vec![0u8; 8192];
    while !pending.is_empty() {
        match sock.recv(&mut buf[..], Msg::DONTWAIT) {
            Ok((n, _)) => {
                for (seq, errno) in parse_acks(&buf[..n]) {
                    if errno != 0 {
                        let e = std::io::Error::from_raw_os_error(errno);
                        let hint = if errno == nix::libc::ENOENT {
                            format!(" (is table inet {TABLE} with sets {SET4}/{SET6} installed?)")
                        } else {
                            String::new()
                        };
                        return Err(LearnError(format!("nft add element: {e}{hint}")));
                    }
                    pending.retain(|&s| s != seq);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                if std::time::Instant::now() >= deadline {
                    return Err(LearnError(format!("no netlink ack within {ACK_WAIT:?}")));
                }
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(LearnError(format!("netlink recv: {e}"))),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    /// (type, flags, seq, family, payload) of each message in a batch.
    fn split(buf: &[u8]) -> Vec<(u16, u16, u32, u8, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = 0;
        while off < buf.len() {
            let len = u32::from_ne_bytes(buf[off..off + 4].try_into().unwrap()) as usize;
            assert_eq!(len % 4, 0, "messages stay aligned");
            let kind = u16::from_ne_bytes(buf[off + 4..off + 6].try_into().unwrap());
            let flags = u16::from_ne_bytes(buf[off + 6..off + 8].try_into().unwrap());
            let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().unwrap());
            out.push((kind, flags, seq, buf[off + 16], buf[off + 20..off + len].to_vec()));
            off += len;
        }
        assert_eq!(off, buf.len());
        out
    }

    fn contains(hay: &[u8], needle: &[u8]) -> bool {
        hay.windows(needle.len()).any(|w| w == needle)
    }

    #[test]
    fn batch_shape() {
        let ips = [
            ("10.200.0.2".parse().unwrap(), Duration::from_secs(30)),
            ("fd00:200::2".parse().unwrap(), Duration::from_millis(1500)),
            ("10.200.0.3".parse().unwrap(), Duration::from_secs(3600)),
        ];
        let (batch, acks) = setelem_batch(&ips, 100);
        let msgs = split(&batch);
        let kinds: Vec<u16> = msgs.iter().map(|m| m.0).collect();
        assert_eq!(kinds, [0x10, 0x0a0c, 0x0a0c, 0x11]);
        assert_eq!(msgs.iter().map(|m| m.2).collect::<Vec<_>>(), [100, 101, 102, 103]);
        assert_eq!(acks, [101, 102]);
        assert_eq!(msgs[1].1, 0x1 | 0x4 | 0x400, "request, ack, create; no EXCL so re-adding refreshes");
        assert_eq!((msgs[1].3, msgs[0].3), (1, 0), "inet family; batch markers unspec");
        let v4 = &msgs[1].4;
        assert!(contains(v4, b"egret\0") && contains(v4, b"learned4\0"));
        assert!(contains(v4, &[10, 200, 0, 2]) && contains(v4, &[10, 200, 0, 3]));
        assert!(contains(v4, &30_000u64.to_be_bytes()) && contains(v4, &3_600_000u64.to_be_bytes()));
        let v6 = &msgs[2].4;
        assert!(contains(v6, b"learned6\0"));
        assert!(contains(v6, &"fd00:200::2".parse::<std::net::Ipv6Addr>().unwrap().octets()));
        assert!(contains(v6, &1500u64.to_be_bytes()));
        // Thousands of addresses: split, every message aligned and acked.
        let many: Vec<(IpAddr, Duration)> = (0..3000u32)
            .map(|i| (IpAddr::V6(std::net::Ipv6Addr::from(u128::from(i) + 1)), Duration::from_secs(60)))
            .collect();
        let (b, acks) = setelem_batch(&many, 1);
        let msgs = split(&b);
        assert_eq!(msgs.len(), 2 + 3000usize.div_ceil(ELEMS_PER_MSG));
        assert_eq!(acks.len(), msgs.len() - 2);
        // Only one family: one NEWSETELEM.
        let (b, acks) = setelem_batch(&ips[..1], 7);
        assert_eq!(split(&b).len(), 3);
        assert_eq!(acks, [8]);
    }

    #[test]
    fn acks_parse() {
        let mut buf = Vec::new();
        for (seq, err) in [(5u32, 0i32), (6, -2)] {
            buf.extend_from_slice(&36u32.to_ne_bytes());
            buf.extend_from_slice(&2u16.to_ne_bytes());
            buf.extend_from_slice(&0u16.to_ne_bytes());
            buf.extend_from_slice(&seq.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&err.to_ne_bytes());
            buf.extend_from_slice(&[0u8; 16]);
        }
        assert_eq!(parse_acks(&buf), [(5, 0), (6, 2)]);
        assert_eq!(parse_acks(&buf[..20]), []);
        assert_eq!(parse_acks(&[0xff; 40]), []);
    }

    #[test]
    fn expiries_only_grow_and_reload_keeps_what_is_still_allowed() {
        let t0 = Instant::now();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let mut l = Learned::default();
        let s = Duration::from_secs;
        assert_eq!(l.add("a.example", &[(ip, s(300))], t0), [(ip, s(300))]);
        assert_eq!(l.add("b.example", &[(ip, s(30))], t0 + s(100)), [(ip, s(200))], "kept the longer");
        assert_eq!(
            l.add("b.example", &[(ip, s(500)), (other, s(50))], t0 + s(100)),
            [(ip, s(500)), (other, s(50))]
        );
        let d: Vec<String> = vec!["b.example".into()];
        let only_b = Policy::compile(
            &[],
            &[crate::policy::Source { origin: crate::policy::Origin::Env("T"), entries: &d }],
        )
        .unwrap();
        assert_eq!(l.still_allowed(&only_b, &Guard::default(), t0 + s(140)), [(ip, s(460)), (other, s(10))]);
        assert_eq!(
            l.still_allowed(&only_b, &Guard::default(), t0 + s(200)),
            [(ip, s(400))],
            "expired addresses are gone"
        );
        assert_eq!(
            l.still_allowed(&Policy::default(), &Guard::default(), t0 + s(200)),
            [],
            "a revoked name's addresses do not come back"
        );
        assert!(l.is_empty());
    }

    /// An address learned while `allowlist.ips` covered it does not come
    /// back after a reload that dropped the entry, if the guard refuses it.
    #[test]
    fn a_reload_does_not_replay_what_the_guard_now_refuses() {
        use crate::policy::{Origin, Source};
        let t0 = Instant::now();
        let meta: IpAddr = "169.254.169.254".parse().unwrap();
        let public: IpAddr = "203.0.113.80".parse().unwrap();
        let mut l = Learned::default();
        l.add("meta.example", &[(meta, Duration::from_secs(300)), (public, Duration::from_secs(300))], t0);
        let domains: Vec<String> = vec!["meta.example".into()];
        let compile = |ips: &[&str]| {
            let ips: Vec<String> = ips.iter().map(|s| s.to_string()).collect();
            Policy::compile(
                &[Source { origin: Origin::Env("ALLOWLIST_IPS"), entries: &ips }],
                &[Source { origin: Origin::Env("ALLOWLIST_DOMAINS"), entries: &domains }],
            )
            .unwrap()
        };
        let g = Guard::default();
        let with_ips = compile(&["169.254.169.254"]);
        let got: Vec<IpAddr> = l.clone().still_allowed(&with_ips, &g, t0).into_iter().map(|x| x.0).collect();
        assert_eq!(got, [meta, public]);
        let got: Vec<IpAddr> = l.still_allowed(&compile(&[]), &g, t0).into_iter().map(|x| x.0).collect();
        assert_eq!(got, [public], "the guarded address is not put back");
    }
}
