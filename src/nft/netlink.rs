//! `Ruleset` → nf_tables netlink messages (built with neli), and the small
//! parsers for what the kernel answers (acks, dumps).
//!
//! Pure: bytes in, bytes out. The socket lives in `nft/mod.rs`.
//!
//! A batch is `BEGIN, NEWTABLE, DELTABLE, NEWTABLE, sets, elements, chains,
//! rules, END`, sent as one datagram so the kernel applies it as one
//! transaction: the first NEWTABLE makes sure a table exists so that
//! DELTABLE cannot fail, and the second recreates it empty. There is no
//! instant without rules, at first start or on re-apply.
//!
//! libc has no `NFTA_*` numbers; the ones used are in [`c`], copied from
//! `linux/netfilter/nf_tables.h` (kernel UAPI, stable by contract).

use std::io::Cursor;
use std::net::IpAddr;

use neli::consts::nl::NlmF;
use neli::genl::{AttrTypeBuilder, Nlattr, NlattrBuilder};
use neli::nl::{NlPayload, Nlmsghdr, NlmsghdrBuilder};
use neli::types::Buffer;
use neli::{Size, ToBytes};

use super::ruleset::{
    Addr, Chain, ChainPolicy, ChainType, Cmp, Elements, Family, Hook, Match, PortElements, Reject, Rule,
    Ruleset, Set, SetKind, Stmt, TableFamily,
};

/// UAPI constants (linux/netfilter/nf_tables.h, nfnetlink.h,
/// nfnetlink_log.h, netlink.h).
#[allow(dead_code)]
pub mod c {
    pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
    pub const NFNL_SUBSYS_ULOG: u16 = 4;
    pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
    pub const NFNL_MSG_BATCH_END: u16 = 17;
    pub const NLMSG_ERROR: u16 = 2;
    pub const NLMSG_DONE: u16 = 3;
    pub const NFPROTO_INET: u8 = 1;
    pub const NFPROTO_ARP: u8 = 3;
    pub const NFPROTO_NETDEV: u8 = 5;
    pub const NFPROTO_IPV4: u8 = 2;
    pub const NFPROTO_IPV6: u8 = 10;

    pub const NFT_MSG_NEWTABLE: u16 = 0;
    pub const NFT_MSG_GETTABLE: u16 = 1;
    pub const NFT_MSG_DELTABLE: u16 = 2;
    pub const NFT_MSG_NEWCHAIN: u16 = 3;
    pub const NFT_MSG_GETCHAIN: u16 = 4;
    pub const NFT_MSG_NEWRULE: u16 = 6;
    pub const NFT_MSG_GETRULE: u16 = 7;
    pub const NFT_MSG_NEWSET: u16 = 9;
    pub const NFT_MSG_GETSET: u16 = 10;
    pub const NFT_MSG_NEWSETELEM: u16 = 12;

    pub const NFTA_TABLE_NAME: u16 = 1;
    pub const NFTA_CHAIN_TABLE: u16 = 1;
    pub const NFTA_CHAIN_NAME: u16 = 3;
    pub const NFTA_CHAIN_HOOK: u16 = 4;
    pub const NFTA_CHAIN_POLICY: u16 = 5;
    pub const NFTA_CHAIN_TYPE: u16 = 7;
    pub const NFTA_HOOK_HOOKNUM: u16 = 1;
    pub const NFTA_HOOK_PRIORITY: u16 = 2;
    pub const NFTA_HOOK_DEV: u16 = 3;
    pub const NF_ARP_OUT: u32 = 1;
    pub const NF_NETDEV_EGRESS: u32 = 1;
    pub const NFTA_RULE_TABLE: u16 = 1;
    pub const NFTA_RULE_CHAIN: u16 = 2;
    pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
    pub const NFTA_LIST_ELEM: u16 = 1;
    pub const NFTA_EXPR_NAME: u16 = 1;
    pub const NFTA_EXPR_DATA: u16 = 2;
    pub const NFTA_SET_TABLE: u16 = 1;
    pub const NFTA_SET_NAME: u16 = 2;
    pub const NFTA_SET_FLAGS: u16 = 3;
    pub const NFTA_SET_KEY_TYPE: u16 = 4;
    pub const NFTA_SET_KEY_LEN: u16 = 5;
    pub const NFTA_SET_ID: u16 = 10;
    pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
    pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
    pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
    pub const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
    pub const NFTA_SET_ELEM_KEY: u16 = 1;
    pub const NFTA_SET_ELEM_FLAGS: u16 = 3;
    pub const NFTA_DATA_VALUE: u16 = 1;
    pub const NFTA_DATA_VERDICT: u16 = 2;
    pub const NFTA_VERDICT_CODE: u16 = 1;
    pub const NFTA_META_DREG: u16 = 1;
    pub const NFTA_META_KEY: u16 = 2;
    pub const NFTA_META_SREG: u16 = 3;
    pub const NFT_META_MARK: u32 = 3;
    pub const NFT_META_IIFNAME: u32 = 6;
    pub const NFT_META_OIFNAME: u32 = 7;
    pub const NFT_META_SKUID: u32 = 10;
    pub const NFTA_BYTEORDER_SREG: u16 = 1;
    pub const NFTA_BYTEORDER_DREG: u16 = 2;
    pub const NFTA_BYTEORDER_OP: u16 = 3;
    pub const NFTA_BYTEORDER_LEN: u16 = 4;
    pub const NFTA_BYTEORDER_SIZE: u16 = 5;
    pub const NFT_BYTEORDER_HTON: u32 = 1;
    pub const NFT_CMP_GTE: u32 = 5;
    pub const NFTA_EXTHDR_DREG: u16 = 1;
    pub const NFTA_EXTHDR_TYPE: u16 = 2;
    pub const NFTA_EXTHDR_OFFSET: u16 = 3;
    pub const NFTA_EXTHDR_LEN: u16 = 4;
    pub const NFTA_EXTHDR_FLAGS: u16 = 5;
    pub const NFTA_EXTHDR_OP: u16 = 6;
    pub const NFT_EXTHDR_F_PRESENT: u32 = 1;
    pub const NFT_EXTHDR_OP_IPV6: u32 = 0;
    pub const NFT_EXTHDR_OP_IPV4: u32 = 2;
    pub const IPPROTO_ROUTING: u8 = 43;
    pub const NFTA_CONNLIMIT_COUNT: u16 = 1;
    pub const NFTA_CONNLIMIT_FLAGS: u16 = 2;
    pub const NFT_CONNLIMIT_F_INV: u32 = 1;
    pub const NFT_META_NFPROTO: u32 = 15;
    pub const NFT_META_L4PROTO: u32 = 16;
    pub const NFTA_CMP_SREG: u16 = 1;
    pub const NFTA_CMP_OP: u16 = 2;
    pub const NFTA_CMP_DATA: u16 = 3;
    pub const NFT_CMP_EQ: u32 = 0;
    pub const NFT_CMP_NEQ: u32 = 1;
    pub const NFT_CMP_LTE: u32 = 3;
    pub const NFTA_PAYLOAD_DREG: u16 = 1;
    pub const NFTA_PAYLOAD_BASE: u16 = 2;
    pub const NFTA_PAYLOAD_OFFSET: u16 = 3;
    pub const NFTA_PAYLOAD_LEN: u16 = 4;
    pub const NFT_PAYLOAD_NETWORK_HEADER: u32 = 1;
    pub const NFT_PAYLOAD_TRANSPORT_HEADER: u32 = 2;
    pub const NFTA_LOOKUP_SET: u16 = 1;
    pub const NFTA_LOOKUP_SREG: u16 = 2;
    pub const NFTA_LOOKUP_SET_ID: u16 = 4;
    pub const NFTA_IMMEDIATE_DREG: u16 = 1;
    pub const NFTA_IMMEDIATE_DATA: u16 = 2;
    pub const NFTA_REDIR_REG_PROTO_MIN: u16 = 1;
    pub const NFTA_REDIR_FLAGS: u16 = 3;
    pub const NFTA_CT_DREG: u16 = 1;
    pub const NFTA_CT_KEY: u16 = 2;
    pub const NFT_CT_STATE: u32 = 0;
    pub const NFT_CT_DIRECTION: u32 = 1;
    pub const NFT_CT_MARK: u32 = 3;
    pub const NFTA_CT_SREG: u16 = 4;
    pub const NFTA_SET_ELEM_TIMEOUT: u16 = 4;
    pub const NFTA_BITWISE_SREG: u16 = 1;
    pub const NFTA_BITWISE_DREG: u16 = 2;
    pub const NFTA_BITWISE_LEN: u16 = 3;
    pub const NFTA_BITWISE_MASK: u16 = 4;
    pub const NFTA_BITWISE_XOR: u16 = 5;
    pub const NFTA_FIB_DREG: u16 = 1;
    pub const NFTA_FIB_RESULT: u16 = 2;
    pub const NFTA_FIB_FLAGS: u16 = 3;
    pub const NFT_FIB_RESULT_ADDRTYPE: u32 = 3;
    pub const NFTA_FIB_F_SADDR: u32 = 1;
    pub const NFTA_FIB_F_DADDR: u32 = 2;
    pub const RTN_LOCAL: u32 = 2;
    pub const RTN_BROADCAST: u32 = 3;
    pub const NFTA_LIMIT_RATE: u16 = 1;
    pub const NFTA_LIMIT_UNIT: u16 = 2;
    pub const NFTA_LIMIT_BURST: u16 = 3;
    pub const NFTA_LIMIT_TYPE: u16 = 4;
    pub const NFTA_LIMIT_FLAGS: u16 = 5;
    pub const NFT_LIMIT_F_INV: u32 = 1;
    pub const NFT_LIMIT_PKTS: u32 = 0;
    pub const NFTA_LOG_GROUP: u16 = 1;
    pub const NFTA_LOG_PREFIX: u16 = 2;
    pub const NFTA_REJECT_TYPE: u16 = 1;
    pub const NFTA_REJECT_ICMP_CODE: u16 = 2;
    pub const NFT_REJECT_TCP_RST: u32 = 1;
    pub const NFT_REJECT_ICMPX_UNREACH: u32 = 2;
    pub const NFT_REJECT_ICMPX_PORT_UNREACH: u8 = 1;
    pub const NFT_REJECT_ICMPX_ADMIN_PROHIBITED: u8 = 3;
    pub const NFTA_SOCKET_KEY: u16 = 1;
    pub const NFTA_SOCKET_DREG: u16 = 2;
    pub const NFTA_SOCKET_LEVEL: u16 = 3;
    pub const NFT_SOCKET_MARK: u32 = 1;
    pub const NFT_SOCKET_CGROUPV2: u32 = 3;
    pub const NFT_SET_INTERVAL: u32 = 4;
    pub const NFT_SET_TIMEOUT: u32 = 16;
    pub const NFT_SET_EVAL: u32 = 32;
    pub const TYPE_UID: u32 = 24;
    pub const NFTA_SET_TIMEOUT: u16 = 11;
    pub const NFTA_SET_DESC_SIZE: u16 = 1;
    pub const NFTA_DYNSET_SET_NAME: u16 = 1;
    pub const NFTA_DYNSET_SET_ID: u16 = 2;
    pub const NFTA_DYNSET_OP: u16 = 3;
    pub const NFTA_DYNSET_SREG_KEY: u16 = 4;
    pub const NFTA_DYNSET_EXPR: u16 = 7;
    pub const NFT_DYNSET_OP_UPDATE: u32 = 1;
    pub const NFTA_VERDICT_CHAIN: u16 = 2;
    pub const NFT_JUMP: i32 = -3;
    pub const NFT_SET_ELEM_INTERVAL_END: u32 = 1;
    pub const NFT_REG_VERDICT: u32 = 0;
    pub const NFT_REG_1: u32 = 1;
    pub const NF_DROP: i32 = 0;
    pub const NF_ACCEPT: i32 = 1;
    pub const NFT_RETURN: i32 = -5;
    pub const NF_NAT_RANGE_PROTO_SPECIFIED: u32 = 2;
    pub const NF_INET_PRE_ROUTING: u32 = 0;
    pub const NF_INET_LOCAL_IN: u32 = 1;
    pub const NF_INET_POST_ROUTING: u32 = 4;
    pub const NFT_PAYLOAD_LL_HEADER: u32 = 0;
    pub const NFTA_COUNTER_PACKETS: u16 = 2;
    pub const NF_INET_LOCAL_OUT: u32 = 3;
    /// nft's datatype numbers, so `nft list` prints `ipv4_addr`/`ipv6_addr`.
    pub const TYPE_IPADDR: u32 = 7;
    pub const TYPE_IP6ADDR: u32 = 8;
    pub const TYPE_INET_PROTO: u32 = 12;
    pub const TYPE_INET_SERVICE: u32 = 13;
    /// nft's concatenated type: each part shifted in by this many bits.
    pub const TYPE_BITS: u32 = 6;
    pub const NFTA_SET_DESC: u16 = 9;
    pub const NFTA_SET_DESC_CONCAT: u16 = 2;
    pub const NFTA_SET_FIELD_LEN: u16 = 1;
    pub const NFT_SET_CONCAT: u32 = 0x80;
    pub const NFTA_SET_ELEM_KEY_END: u16 = 10;
    /// The first 32-bit register: concatenations are loaded into
    /// consecutive ones and looked up from it.
    pub const NFT_REG32_00: u32 = 8;
    pub const IFNAMSIZ: usize = 16;
}

/// Set elements per NEWSETELEM message: an attribute length is a u16, so
/// a message's element list must stay under 64 KiB (36 bytes an IPv6
/// element).
const ELEMS_PER_MSG: usize = 1000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodeError(pub String);

impl std::fmt::Display for EncodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "encoding netlink message: {}", self.0)
    }
}

fn enc<E: std::fmt::Display>(what: &str) -> impl Fn(E) -> EncodeError + '_ {
    move |e| EncodeError(format!("{what}: {e}"))
}

type Attr = Nlattr<u16, Buffer>;

fn attr<P: Size + ToBytes>(t: u16, payload: P) -> Result<Attr, EncodeError> {
    let ty = AttrTypeBuilder::default().nla_type(t).build().map_err(enc("attribute type"))?;
    NlattrBuilder::default().nla_type(ty).nla_payload(payload).build().map_err(enc("attribute"))
}

fn be32(t: u16, v: u32) -> Result<Attr, EncodeError> {
    attr(t, v.to_be_bytes())
}

/// An attribute with a byte payload (shared with the NFLOG shell).
pub(crate) fn bytes(t: u16, v: &[u8]) -> Result<Attr, EncodeError> {
    attr(t, Buffer::from(v.to_vec()))
}

fn nest(t: u16, children: Vec<Attr>) -> Result<Attr, EncodeError> {
    let ty =
        AttrTypeBuilder::default().nla_type(t).nla_nested(true).build().map_err(enc("attribute type"))?;
    let mut a = NlattrBuilder::default()
        .nla_type(ty)
        .nla_payload(Buffer::new())
        .build()
        .map_err(enc("nested attribute"))?;
    for ch in &children {
        a = a.nest(ch).map_err(enc("nesting"))?;
    }
    Ok(a)
}

/// `NFTA_DATA_VALUE` wrapped in the attribute `t`.
fn data(t: u16, v: &[u8]) -> Result<Attr, EncodeError> {
    nest(t, vec![bytes(c::NFTA_DATA_VALUE, v)?])
}

fn expr(name: &str, attrs: Vec<Attr>) -> Result<Attr, EncodeError> {
    nest(c::NFTA_LIST_ELEM, vec![attr(c::NFTA_EXPR_NAME, name)?, nest(c::NFTA_EXPR_DATA, attrs)?])
}

fn meta(key: u32) -> Result<Attr, EncodeError> {
    expr("meta", vec![be32(c::NFTA_META_DREG, c::NFT_REG_1)?, be32(c::NFTA_META_KEY, key)?])
}

fn cmp(op: u32, v: &[u8]) -> Result<Attr, EncodeError> {
    expr(
        "cmp",
        vec![be32(c::NFTA_CMP_SREG, c::NFT_REG_1)?, be32(c::NFTA_CMP_OP, op)?, data(c::NFTA_CMP_DATA, v)?],
    )
}

fn cmp_op(c: Cmp) -> u32 {
    match c {
        Cmp::Eq => c::NFT_CMP_EQ,
        Cmp::Ne => c::NFT_CMP_NEQ,
    }
}

fn bitwise_mask(mask: &[u8]) -> Result<Attr, EncodeError> {
    expr(
        "bitwise",
        vec![
            be32(c::NFTA_BITWISE_SREG, c::NFT_REG_1)?,
            be32(c::NFTA_BITWISE_DREG, c::NFT_REG_1)?,
            be32(c::NFTA_BITWISE_LEN, mask.len() as u32)?,
            data(c::NFTA_BITWISE_MASK, mask)?,
            data(c::NFTA_BITWISE_XOR, &vec![0u8; mask.len()])?,
        ],
    )
}

/// `exthdr` asking only whether the header or option `ty` is there (a
/// one-byte boolean in the register).
fn exthdr_present(op: u32, ty: u8) -> Result<Attr, EncodeError> {
    expr(
        "exthdr",
        vec![
            be32(c::NFTA_EXTHDR_DREG, c::NFT_REG_1)?,
            attr(c::NFTA_EXTHDR_TYPE, [ty])?,
            be32(c::NFTA_EXTHDR_OFFSET, 0)?,
            be32(c::NFTA_EXTHDR_LEN, 1)?,
            be32(c::NFTA_EXTHDR_FLAGS, c::NFT_EXTHDR_F_PRESENT)?,
            be32(c::NFTA_EXTHDR_OP, op)?,
        ],
    )
}

fn socket_key(key: u32, level: Option<u32>) -> Result<Attr, EncodeError> {
    let mut a = vec![be32(c::NFTA_SOCKET_KEY, key)?, be32(c::NFTA_SOCKET_DREG, c::NFT_REG_1)?];
    if let Some(l) = level {
        a.push(be32(c::NFTA_SOCKET_LEVEL, l)?);
    }
    expr("socket", a)
}

fn payload(base: u32, offset: u32, len: u32) -> Result<Attr, EncodeError> {
    payload_to(c::NFT_REG_1, base, offset, len)
}

fn payload_to(dreg: u32, base: u32, offset: u32, len: u32) -> Result<Attr, EncodeError> {
    expr(
        "payload",
        vec![
            be32(c::NFTA_PAYLOAD_DREG, dreg)?,
            be32(c::NFTA_PAYLOAD_BASE, base)?,
            be32(c::NFTA_PAYLOAD_OFFSET, offset)?,
            be32(c::NFTA_PAYLOAD_LEN, len)?,
        ],
    )
}

fn verdict(code: i32) -> Result<Attr, EncodeError> {
    verdict_to(code, None)
}

/// A verdict into the verdict register: `code`, and the chain a jump or
/// goto goes to.
fn verdict_to(code: i32, chain: Option<&'static str>) -> Result<Attr, EncodeError> {
    let mut v = vec![attr(c::NFTA_VERDICT_CODE, code.to_be_bytes())?];
    if let Some(chain) = chain {
        v.push(attr(c::NFTA_VERDICT_CHAIN, chain)?);
    }
    expr(
        "immediate",
        vec![
            be32(c::NFTA_IMMEDIATE_DREG, c::NFT_REG_VERDICT)?,
            nest(c::NFTA_IMMEDIATE_DATA, vec![nest(c::NFTA_DATA_VERDICT, v)?])?,
        ],
    )
}

/// A value into register 1, for the statement after it to use.
fn immediate(v: &[u8]) -> Result<Attr, EncodeError> {
    expr("immediate", vec![be32(c::NFTA_IMMEDIATE_DREG, c::NFT_REG_1)?, data(c::NFTA_IMMEDIATE_DATA, v)?])
}

/// `iifname`/`oifname` compared with `name` (padded to IFNAMSIZ, as the
/// kernel stores it).
fn ifname(key: u32, op: u32, name: &str) -> Result<Vec<Attr>, EncodeError> {
    let mut n = [0u8; c::IFNAMSIZ];
    let b = name.as_bytes();
    let len = b.len().min(c::IFNAMSIZ - 1);
    n[..len].copy_from_slice(&b[..len]);
    Ok(vec![meta(key)?, cmp(op, &n)?])
}

fn nfproto(f: Family) -> Result<Vec<Attr>, EncodeError> {
    let p = match f {
        Family::V4 => c::NFPROTO_IPV4,
        Family::V6 => c::NFPROTO_IPV6,
    };
    Ok(vec![meta(c::NFT_META_NFPROTO)?, cmp(c::NFT_CMP_EQ, &[p])?])
}

fn daddr(f: Family) -> Result<Attr, EncodeError> {
    match f {
        Family::V4 => payload(c::NFT_PAYLOAD_NETWORK_HEADER, 16, 4),
        Family::V6 => payload(c::NFT_PAYLOAD_NETWORK_HEADER, 24, 16),
    }
}

fn saddr(f: Family) -> Result<Attr, EncodeError> {
    match f {
        Family::V4 => payload(c::NFT_PAYLOAD_NETWORK_HEADER, 12, 4),
        Family::V6 => payload(c::NFT_PAYLOAD_NETWORK_HEADER, 8, 16),
    }
}

fn split(ip: &IpAddr) -> (Family, Vec<u8>) {
    match ip {
        IpAddr::V4(a) => (Family::V4, a.octets().to_vec()),
        IpAddr::V6(a) => (Family::V6, a.octets().to_vec()),
    }
}

/// `ip daddr P/L` and the like: the address field (`field`) masked to the
/// prefix, compared with the network.
fn prefix(
    field: fn(Family) -> Result<Attr, EncodeError>,
    ip: &IpAddr,
    len: u8,
) -> Result<Vec<Attr>, EncodeError> {
    let (f, octets) = split(ip);
    let bits = octets.len() * 8;
    let mask: Vec<u8> = (0..octets.len())
        .map(|i| {
            let covered = (usize::from(len)).saturating_sub(i * 8).min(8);
            if covered == 0 {
                0
            } else {
                0xffu8 << (8 - covered)
            }
        })
        .collect();
    let net: Vec<u8> = octets.iter().zip(&mask).map(|(o, m)| o & m).collect();
    let mut v = nfproto(f)?;
    v.push(field(f)?);
    if usize::from(len) < bits {
        v.push(bitwise_mask(&mask)?);
    }
    v.push(cmp(c::NFT_CMP_EQ, &net)?);
    Ok(v)
}

/// The expressions of one match, with the protocol dependencies nft adds
/// (so `nft list` prints the same phrase back).
fn match_exprs(m: &Match, set_id: &dyn Fn(&str) -> u32) -> Result<Vec<Attr>, EncodeError> {
    Ok(match m {
        Match::Mark(mark) => vec![meta(c::NFT_META_MARK)?, cmp(c::NFT_CMP_EQ, &mark.to_ne_bytes())?],
        Match::Cgroup(cg) => {
            vec![
                socket_key(c::NFT_SOCKET_CGROUPV2, Some(cg.level))?,
                cmp(c::NFT_CMP_EQ, &cg.id.to_ne_bytes())?,
            ]
        }
        Match::SocketCgroupNot(cg) => {
            vec![
                socket_key(c::NFT_SOCKET_CGROUPV2, Some(cg.level))?,
                cmp(c::NFT_CMP_NEQ, &cg.id.to_ne_bytes())?,
            ]
        }
        Match::SocketMarkNot(m) => {
            vec![socket_key(c::NFT_SOCKET_MARK, None)?, cmp(c::NFT_CMP_NEQ, &m.to_ne_bytes())?]
        }
        // `ct state S`: the state bit is set; `ct state != S`: it is not.
        Match::CtState(st, op) => vec![
            expr("ct", vec![be32(c::NFTA_CT_DREG, c::NFT_REG_1)?, be32(c::NFTA_CT_KEY, c::NFT_CT_STATE)?])?,
            bitwise_mask(&st.bit().to_ne_bytes())?,
            cmp(if *op == Cmp::Eq { c::NFT_CMP_NEQ } else { c::NFT_CMP_EQ }, &0u32.to_ne_bytes())?,
        ],
        Match::CtReply => vec![
            expr(
                "ct",
                vec![be32(c::NFTA_CT_DREG, c::NFT_REG_1)?, be32(c::NFTA_CT_KEY, c::NFT_CT_DIRECTION)?],
            )?,
            cmp(c::NFT_CMP_EQ, &[1])?,
        ],
        Match::FibLocal(a, op) => vec![
            expr(
                "fib",
                vec![
                    be32(c::NFTA_FIB_DREG, c::NFT_REG_1)?,
                    be32(c::NFTA_FIB_RESULT, c::NFT_FIB_RESULT_ADDRTYPE)?,
                    be32(
                        c::NFTA_FIB_FLAGS,
                        if *a == Addr::Saddr { c::NFTA_FIB_F_SADDR } else { c::NFTA_FIB_F_DADDR },
                    )?,
                ],
            )?,
            cmp(cmp_op(*op), &c::RTN_LOCAL.to_ne_bytes())?,
        ],
        Match::DaddrProtoPortInSet(f, name) => {
            // daddr, l4proto and dport in consecutive 32-bit registers
            // (each part padded to 4 bytes), looked up as one key.
            let (offset, len) = match f {
                Family::V4 => (16, 4),
                Family::V6 => (24, 16),
            };
            let first = c::NFT_REG32_00;
            let mut v = nfproto(*f)?;
            v.push(payload_to(first, c::NFT_PAYLOAD_NETWORK_HEADER, offset, len)?);
            v.push(expr(
                "meta",
                vec![be32(c::NFTA_META_DREG, first + len / 4)?, be32(c::NFTA_META_KEY, c::NFT_META_L4PROTO)?],
            )?);
            v.push(payload_to(first + len / 4 + 1, c::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2)?);
            v.push(expr(
                "lookup",
                vec![
                    attr(c::NFTA_LOOKUP_SET, *name)?,
                    be32(c::NFTA_LOOKUP_SREG, first)?,
                    be32(c::NFTA_LOOKUP_SET_ID, set_id(name))?,
                ],
            )?);
            v
        }
        Match::SkuidInSet(name) => vec![
            meta(c::NFT_META_SKUID)?,
            expr(
                "lookup",
                vec![
                    attr(c::NFTA_LOOKUP_SET, *name)?,
                    be32(c::NFTA_LOOKUP_SREG, c::NFT_REG_1)?,
                    be32(c::NFTA_LOOKUP_SET_ID, set_id(name))?,
                ],
            )?,
        ],
        Match::DaddrInSet(f, name) => {
            let mut v = nfproto(*f)?;
            v.push(daddr(*f)?);
            v.push(expr(
                "lookup",
                vec![
                    attr(c::NFTA_LOOKUP_SET, *name)?,
                    be32(c::NFTA_LOOKUP_SREG, c::NFT_REG_1)?,
                    be32(c::NFTA_LOOKUP_SET_ID, set_id(name))?,
                ],
            )?);
            v
        }
        Match::Saddr(ip) => {
            let (f, octets) = split(ip);
            let mut v = nfproto(f)?;
            v.push(saddr(f)?);
            v.push(cmp(c::NFT_CMP_EQ, &octets)?);
            v
        }
        Match::SaddrPrefix(ip, len) => prefix(saddr, ip, *len)?,
        Match::ThPort(a, port) => vec![
            payload(c::NFT_PAYLOAD_TRANSPORT_HEADER, if *a == Addr::Saddr { 0 } else { 2 }, 2)?,
            cmp(c::NFT_CMP_EQ, &port.to_be_bytes())?,
        ],
        Match::Daddr(ip) => {
            let (f, octets) = match ip {
                IpAddr::V4(a) => (Family::V4, a.octets().to_vec()),
                IpAddr::V6(a) => (Family::V6, a.octets().to_vec()),
            };
            let mut v = nfproto(f)?;
            v.push(daddr(f)?);
            v.push(cmp(c::NFT_CMP_EQ, &octets)?);
            v
        }
        Match::DaddrPrefix(ip, len) => prefix(daddr, ip, *len)?,
        Match::Ip6HopLimit(n) => {
            let mut v = nfproto(Family::V6)?;
            v.push(payload(c::NFT_PAYLOAD_NETWORK_HEADER, 7, 1)?);
            v.push(cmp(c::NFT_CMP_EQ, &[*n])?);
            v
        }
        Match::Ip6NextHdr(n) => {
            let mut v = nfproto(Family::V6)?;
            v.push(payload(c::NFT_PAYLOAD_NETWORK_HEADER, 6, 1)?);
            v.push(cmp(c::NFT_CMP_EQ, &[*n])?);
            v
        }
        Match::Ip6LengthAtMost(n) => {
            let mut v = nfproto(Family::V6)?;
            v.push(payload(c::NFT_PAYLOAD_NETWORK_HEADER, 4, 2)?);
            v.push(cmp(c::NFT_CMP_LTE, &n.to_be_bytes())?);
            v
        }
        Match::L4(l4) => vec![meta(c::NFT_META_L4PROTO)?, cmp(c::NFT_CMP_EQ, &[l4.number()])?],
        Match::LinkBytes { offset, value } => {
            vec![payload(c::NFT_PAYLOAD_LL_HEADER, *offset, value.len() as u32)?, cmp(c::NFT_CMP_EQ, value)?]
        }
        // As nft writes a range on a host-order key: to network order,
        // then both bounds. No socket, or one without a file (the
        // kernel's), ends the rule before the comparisons.
        Match::FibBroadcast => vec![
            expr(
                "fib",
                vec![
                    be32(c::NFTA_FIB_DREG, c::NFT_REG_1)?,
                    be32(c::NFTA_FIB_RESULT, c::NFT_FIB_RESULT_ADDRTYPE)?,
                    be32(c::NFTA_FIB_FLAGS, c::NFTA_FIB_F_DADDR)?,
                ],
            )?,
            cmp(c::NFT_CMP_EQ, &c::RTN_BROADCAST.to_ne_bytes())?,
        ],
        Match::UserSocket => vec![
            meta(c::NFT_META_SKUID)?,
            expr(
                "byteorder",
                vec![
                    be32(c::NFTA_BYTEORDER_SREG, c::NFT_REG_1)?,
                    be32(c::NFTA_BYTEORDER_DREG, c::NFT_REG_1)?,
                    be32(c::NFTA_BYTEORDER_OP, c::NFT_BYTEORDER_HTON)?,
                    be32(c::NFTA_BYTEORDER_LEN, 4)?,
                    be32(c::NFTA_BYTEORDER_SIZE, 4)?,
                ],
            )?,
            cmp(c::NFT_CMP_GTE, &0u32.to_be_bytes())?,
            cmp(c::NFT_CMP_LTE, &u32::MAX.to_be_bytes())?,
        ],
        Match::Dport(l4, port) => vec![
            meta(c::NFT_META_L4PROTO)?,
            cmp(c::NFT_CMP_EQ, &[l4.number()])?,
            payload(c::NFT_PAYLOAD_TRANSPORT_HEADER, 2, 2)?,
            cmp(c::NFT_CMP_EQ, &port.to_be_bytes())?,
        ],
        Match::Icmpv6Type(t) => {
            let mut v = nfproto(Family::V6)?;
            v.push(meta(c::NFT_META_L4PROTO)?);
            v.push(cmp(c::NFT_CMP_EQ, &[58])?);
            v.push(payload(c::NFT_PAYLOAD_TRANSPORT_HEADER, 0, 1)?);
            v.push(cmp(c::NFT_CMP_EQ, &[*t])?);
            v
        }
        Match::OifnameNot(name) => ifname(c::NFT_META_OIFNAME, c::NFT_CMP_NEQ, name)?,
        Match::Iifname(name) => ifname(c::NFT_META_IIFNAME, c::NFT_CMP_EQ, name)?,
        Match::CtCountOver(n) => vec![expr(
            "connlimit",
            vec![be32(c::NFTA_CONNLIMIT_COUNT, *n)?, be32(c::NFTA_CONNLIMIT_FLAGS, c::NFT_CONNLIMIT_F_INV)?],
        )?],
        Match::Ip6RoutingHeader => {
            let mut v = nfproto(Family::V6)?;
            v.push(exthdr_present(c::NFT_EXTHDR_OP_IPV6, c::IPPROTO_ROUTING)?);
            v.push(cmp(c::NFT_CMP_EQ, &[1])?);
            v
        }
        Match::Ip4Option(t) => {
            let mut v = nfproto(Family::V4)?;
            v.push(exthdr_present(c::NFT_EXTHDR_OP_IPV4, *t)?);
            v.push(cmp(c::NFT_CMP_EQ, &[1])?);
            v
        }
        Match::IifnameNot(name) => ifname(c::NFT_META_IIFNAME, c::NFT_CMP_NEQ, name)?,
        Match::CtMark(m) => vec![
            expr("ct", vec![be32(c::NFTA_CT_DREG, c::NFT_REG_1)?, be32(c::NFTA_CT_KEY, c::NFT_CT_MARK)?])?,
            cmp(c::NFT_CMP_EQ, &m.to_ne_bytes())?,
        ],
    })
}

/// The `limit` expression's attributes (packets per second).
/// A packet limit; `flags` `NFT_LIMIT_F_INV` for "over".
fn limit_attrs(per_second: u64, burst: u32, flags: u32) -> Result<Vec<Attr>, EncodeError> {
    Ok(vec![
        attr(c::NFTA_LIMIT_RATE, per_second.to_be_bytes())?,
        attr(c::NFTA_LIMIT_UNIT, 1u64.to_be_bytes())?,
        be32(c::NFTA_LIMIT_BURST, burst)?,
        be32(c::NFTA_LIMIT_TYPE, c::NFT_LIMIT_PKTS)?,
        be32(c::NFTA_LIMIT_FLAGS, flags)?,
    ])
}

/// `update @set { meta skuid [limit ...] }`: the owner's element, with
/// its own packet limit when `limit` is (rate, burst, flags).
fn owner_update(
    set: &'static str,
    id: u32,
    limit: Option<(u64, u32, u32)>,
) -> Result<Vec<Attr>, EncodeError> {
    let mut dynset = vec![
        attr(c::NFTA_DYNSET_SET_NAME, set)?,
        be32(c::NFTA_DYNSET_SET_ID, id)?,
        be32(c::NFTA_DYNSET_OP, c::NFT_DYNSET_OP_UPDATE)?,
        be32(c::NFTA_DYNSET_SREG_KEY, c::NFT_REG_1)?,
    ];
    if let Some((per_second, burst, flags)) = limit {
        // NFTA_DYNSET_EXPR holds one expression (name and data), not a
        // list element.
        dynset.push(nest(
            c::NFTA_DYNSET_EXPR,
            vec![
                attr(c::NFTA_EXPR_NAME, "limit")?,
                nest(c::NFTA_EXPR_DATA, limit_attrs(per_second, burst, flags)?)?,
            ],
        )?);
    }
    Ok(vec![meta(c::NFT_META_SKUID)?, expr("dynset", dynset)?])
}

fn stmt_exprs(s: &Stmt, set_id: &dyn Fn(&str) -> u32) -> Result<Vec<Attr>, EncodeError> {
    Ok(match s {
        Stmt::Accept => vec![verdict(c::NF_ACCEPT)?],
        Stmt::Drop => vec![verdict(c::NF_DROP)?],
        Stmt::Return => vec![verdict(c::NFT_RETURN)?],
        Stmt::Redirect(port) => vec![
            immediate(&port.to_be_bytes())?,
            expr(
                "redir",
                vec![
                    be32(c::NFTA_REDIR_REG_PROTO_MIN, c::NFT_REG_1)?,
                    be32(c::NFTA_REDIR_FLAGS, c::NF_NAT_RANGE_PROTO_SPECIFIED)?,
                ],
            )?,
        ],
        Stmt::Limit { per_second, burst } => vec![expr("limit", limit_attrs(*per_second, *burst, 0)?)?],
        Stmt::OwnerLimit { set, per_second, burst } => {
            owner_update(set, set_id(set), Some((*per_second, *burst, 0)))?
        }
        Stmt::OwnerSeen(set) => owner_update(set, set_id(set), None)?,
        Stmt::OwnerLimitOver { set, per_second, burst } => {
            owner_update(set, set_id(set), Some((*per_second, *burst, c::NFT_LIMIT_F_INV)))?
        }
        Stmt::Jump(chain) => vec![verdict_to(c::NFT_JUMP, Some(*chain))?],
        Stmt::Log { prefix, group } => vec![expr(
            "log",
            vec![attr(c::NFTA_LOG_GROUP, group.to_be_bytes())?, attr(c::NFTA_LOG_PREFIX, *prefix)?],
        )?],
        Stmt::Reject(r) => {
            let (ty, code) = match r {
                Reject::TcpReset => (c::NFT_REJECT_TCP_RST, 0u8),
                Reject::PortUnreachable => (c::NFT_REJECT_ICMPX_UNREACH, c::NFT_REJECT_ICMPX_PORT_UNREACH),
                Reject::AdminProhibited => {
                    (c::NFT_REJECT_ICMPX_UNREACH, c::NFT_REJECT_ICMPX_ADMIN_PROHIBITED)
                }
            };
            vec![expr(
                "reject",
                vec![be32(c::NFTA_REJECT_TYPE, ty)?, attr(c::NFTA_REJECT_ICMP_CODE, [code])?],
            )?]
        }
        Stmt::CtMarkSet(m) => vec![
            immediate(&m.to_ne_bytes())?,
            expr("ct", vec![be32(c::NFTA_CT_KEY, c::NFT_CT_MARK)?, be32(c::NFTA_CT_SREG, c::NFT_REG_1)?])?,
        ],
        Stmt::Counter => vec![expr("counter", vec![])?],
        Stmt::Notrack => vec![expr("notrack", vec![])?],
        Stmt::MarkSet(m) => vec![
            immediate(&m.to_ne_bytes())?,
            expr(
                "meta",
                vec![be32(c::NFTA_META_KEY, c::NFT_META_MARK)?, be32(c::NFTA_META_SREG, c::NFT_REG_1)?],
            )?,
        ],
    })
}

/// One encoded batch and what each acknowledged sequence number stands
/// for, so an error can name the object that failed.
#[derive(Debug, Clone)]
pub struct Batch {
    pub bytes: Vec<u8>,
    /// The BEGIN message's sequence number: a permission error arrives on
    /// it, once, instead of one answer per message.
    pub begin_seq: u32,
    /// `(seq, what)` of every message that asks for an ack, in order.
    pub acked: Vec<(u32, String)>,
    pub messages: usize,
}

struct Builder {
    bytes: Vec<u8>,
    seq: u32,
    begin_seq: u32,
    acked: Vec<(u32, String)>,
    messages: usize,
}

impl Builder {
    fn new(seq: u32) -> Result<Builder, EncodeError> {
        let mut b = Builder { bytes: Vec::new(), seq, begin_seq: seq, acked: Vec::new(), messages: 0 };
        // BEGIN: family unspec, res_id = the subsystem (big endian).
        let m = message(c::NFNL_MSG_BATCH_BEGIN, NlmF::REQUEST, seq, 0, c::NFNL_SUBSYS_NFTABLES, &[])?;
        b.bytes.extend_from_slice(&m);
        b.messages += 1;
        Ok(b)
    }

    fn push(&mut self, msg: u16, flags: NlmF, attrs: &[Attr], what: String) -> Result<(), EncodeError> {
        self.push_in(TableFamily::Inet, msg, flags, attrs, what)
    }

    fn push_in(
        &mut self,
        family: TableFamily,
        msg: u16,
        flags: NlmF,
        attrs: &[Attr],
        what: String,
    ) -> Result<(), EncodeError> {
        self.seq = self.seq.wrapping_add(1);
        let ty = (c::NFNL_SUBSYS_NFTABLES << 8) | msg;
        let m = message(ty, NlmF::REQUEST | NlmF::ACK | flags, self.seq, nfproto_of(family), 0, attrs)?;
        self.bytes.extend_from_slice(&m);
        self.acked.push((self.seq, what));
        self.messages += 1;
        Ok(())
    }

    fn finish(mut self) -> Result<Batch, EncodeError> {
        self.seq = self.seq.wrapping_add(1);
        let m = message(c::NFNL_MSG_BATCH_END, NlmF::REQUEST, self.seq, 0, c::NFNL_SUBSYS_NFTABLES, &[])?;
        self.bytes.extend_from_slice(&m);
        self.messages += 1;
        Ok(Batch { bytes: self.bytes, begin_seq: self.begin_seq, acked: self.acked, messages: self.messages })
    }
}

/// One netlink message: nfgenmsg (family, version 0, res_id big endian)
/// followed by the attributes.
pub fn message(
    ty: u16,
    flags: NlmF,
    seq: u32,
    family: u8,
    res_id: u16,
    attrs: &[Attr],
) -> Result<Vec<u8>, EncodeError> {
    let mut body = vec![family, 0];
    body.extend_from_slice(&res_id.to_be_bytes());
    for a in attrs {
        let mut cur = Cursor::new(Vec::new());
        a.to_bytes(&mut cur).map_err(enc("attribute"))?;
        body.extend_from_slice(cur.get_ref());
    }
    let hdr: Nlmsghdr<u16, Buffer> = NlmsghdrBuilder::default()
        .nl_type(ty)
        .nl_flags(flags)
        .nl_seq(seq)
        .nl_pid(0)
        .nl_payload(NlPayload::Payload(Buffer::from(body)))
        .build()
        .map_err(enc("message header"))?;
    let mut cur = Cursor::new(Vec::new());
    hdr.to_bytes(&mut cur).map_err(enc("message"))?;
    Ok(cur.into_inner())
}

fn table_attr(t: u16, table: &str) -> Result<Attr, EncodeError> {
    attr(t, table)
}

fn nfproto_of(f: TableFamily) -> u8 {
    match f {
        TableFamily::Inet => c::NFPROTO_INET,
        TableFamily::Arp => c::NFPROTO_ARP,
        TableFamily::Netdev => c::NFPROTO_NETDEV,
    }
}

/// NEWTABLE (so that DELTABLE cannot fail), DELTABLE, NEWTABLE: the table
/// replaced inside the batch's transaction.
fn replace_table(b: &mut Builder, family: TableFamily, table: &str) -> Result<(), EncodeError> {
    drop_table(b, family, table)?;
    let tname = table_attr(c::NFTA_TABLE_NAME, table)?;
    b.push_in(family, c::NFT_MSG_NEWTABLE, NlmF::CREATE, &[tname], format!("table {} {table}", family.name()))
}

/// A table's chains and their rules.
fn push_chains(
    b: &mut Builder,
    family: TableFamily,
    table: &str,
    chains: &[Chain],
    set_id: &dyn Fn(&str) -> u32,
) -> Result<(), EncodeError> {
    for ch in chains {
        push_chain(b, family, table, ch)?;
    }
    for ch in chains {
        for (i, r) in ch.rules.iter().enumerate() {
            let attrs = [
                table_attr(c::NFTA_RULE_TABLE, table)?,
                attr(c::NFTA_RULE_CHAIN, ch.name.as_str())?,
                rule_exprs(r, set_id)?,
            ];
            b.push_in(
                family,
                c::NFT_MSG_NEWRULE,
                NlmF::CREATE | NlmF::APPEND,
                &attrs,
                format!("chain {} rule {} `{r}`", ch.name, i + 1),
            )?;
        }
    }
    Ok(())
}

/// The batch that atomically replaces egret's tables with `rs`.
pub fn apply_batch(rs: &Ruleset, seq: u32) -> Result<Batch, EncodeError> {
    let mut b = Builder::new(seq)?;
    let table = rs.table;
    replace_table(&mut b, TableFamily::Inet, table)?;
    let set_id = |name: &str| rs.sets.iter().position(|s| s.name == name).map_or(0, |i| i as u32 + 1);
    for (i, s) in rs.sets.iter().enumerate() {
        push_set(&mut b, table, s, i as u32 + 1)?;
    }
    push_chains(&mut b, TableFamily::Inet, table, &rs.chains, &set_id)?;
    for t in &rs.l2 {
        replace_table(&mut b, t.family, t.name)?;
        push_chains(&mut b, t.family, t.name, &t.chains, &|_| 0)?;
    }
    b.finish()
}

/// The batch that atomically replaces (or creates) each of `tables`:
/// tables of chains only, such as the self-test's counting tables.
pub fn tables_batch(tables: &[super::ruleset::Table], seq: u32) -> Result<Batch, EncodeError> {
    let mut b = Builder::new(seq)?;
    for t in tables {
        replace_table(&mut b, t.family, t.name)?;
        push_chains(&mut b, t.family, t.name, &t.chains, &|_| 0)?;
    }
    b.finish()
}

/// The batch that removes each of `tables`, present or not.
pub fn drop_tables_batch(tables: &[(TableFamily, &str)], seq: u32) -> Result<Batch, EncodeError> {
    let mut b = Builder::new(seq)?;
    for &(family, table) in tables {
        drop_table(&mut b, family, table)?;
    }
    b.finish()
}

/// NEWTABLE (so that DELTABLE cannot fail), then DELTABLE.
fn drop_table(b: &mut Builder, family: TableFamily, table: &str) -> Result<(), EncodeError> {
    let (f, tname) = (family.name(), || table_attr(c::NFTA_TABLE_NAME, table));
    b.push_in(family, c::NFT_MSG_NEWTABLE, NlmF::CREATE, &[tname()?], format!("table {f} {table} (ensure)"))?;
    b.push_in(family, c::NFT_MSG_DELTABLE, NlmF::empty(), &[tname()?], format!("table {f} {table}"))
}

/// The batch that adds addresses to the learned sets (strict DNS mode),
/// each with its own timeout (milliseconds, as the kernel wants).
pub fn learned_batch(table: &str, elems: &[(IpAddr, u64)], seq: u32) -> Result<Batch, EncodeError> {
    use super::ruleset::{SET_LEARNED4, SET_LEARNED6};
    let mut b = Builder::new(seq)?;
    for (set, v4) in [(SET_LEARNED4, true), (SET_LEARNED6, false)] {
        let mine: Vec<&(IpAddr, u64)> = elems.iter().filter(|(ip, _)| ip.is_ipv4() == v4).collect();
        for chunk in mine.chunks(ELEMS_PER_MSG) {
            let mut list = Vec::with_capacity(chunk.len());
            for (ip, ms) in chunk {
                let key = match ip {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                };
                list.push(nest(
                    c::NFTA_LIST_ELEM,
                    vec![
                        data(c::NFTA_SET_ELEM_KEY, &key)?,
                        attr(c::NFTA_SET_ELEM_TIMEOUT, ms.to_be_bytes())?,
                    ],
                )?);
            }
            let attrs = [
                table_attr(c::NFTA_SET_ELEM_LIST_TABLE, table)?,
                attr(c::NFTA_SET_ELEM_LIST_SET, set)?,
                nest(c::NFTA_SET_ELEM_LIST_ELEMENTS, list)?,
            ];
            b.push(c::NFT_MSG_NEWSETELEM, NlmF::CREATE, &attrs, format!("set {set} learned elements"))?;
        }
    }
    b.finish()
}

/// One element of the names-with-ports sets: an address on a protocol's
/// port range, for `timeout_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct NamedElem {
    pub ip: IpAddr,
    pub proto: u8,
    pub ports: (u16, u16),
    pub timeout_ms: u64,
}

/// The batch that adds addresses of names with ports to
/// `named_ports4`/`named_ports6`, each element a start and an end key
/// (`addr . proto . port`) with its own timeout.
pub fn named_batch(table: &str, elems: &[NamedElem], seq: u32) -> Result<Batch, EncodeError> {
    use super::ruleset::{SET_NAMED4, SET_NAMED6};
    let mut b = Builder::new(seq)?;
    for (set, v4) in [(SET_NAMED4, true), (SET_NAMED6, false)] {
        let mine: Vec<&NamedElem> = elems.iter().filter(|e| e.ip.is_ipv4() == v4).collect();
        for chunk in mine.chunks(PORT_ELEMS_PER_MSG) {
            let mut list = Vec::with_capacity(chunk.len());
            for e in chunk {
                let addr = match e.ip {
                    IpAddr::V4(a) => a.octets().to_vec(),
                    IpAddr::V6(a) => a.octets().to_vec(),
                };
                list.push(nest(
                    c::NFTA_LIST_ELEM,
                    vec![
                        data(c::NFTA_SET_ELEM_KEY, &port_key(&addr, e.proto, e.ports.0))?,
                        data(c::NFTA_SET_ELEM_KEY_END, &port_key(&addr, e.proto, e.ports.1))?,
                        attr(c::NFTA_SET_ELEM_TIMEOUT, e.timeout_ms.to_be_bytes())?,
                    ],
                )?);
            }
            let attrs = [
                table_attr(c::NFTA_SET_ELEM_LIST_TABLE, table)?,
                attr(c::NFTA_SET_ELEM_LIST_SET, set)?,
                nest(c::NFTA_SET_ELEM_LIST_ELEMENTS, list)?,
            ];
            b.push(c::NFT_MSG_NEWSETELEM, NlmF::CREATE, &attrs, format!("set {set} named elements"))?;
        }
    }
    b.finish()
}

/// The batch that removes egret's tables: the link-layer ones whether
/// they exist or not (ensured first), then `table inet`, whose absence
/// the kernel reports as ENOENT.
pub fn delete_batch(table: &str, seq: u32) -> Result<Batch, EncodeError> {
    let mut b = Builder::new(seq)?;
    for family in [TableFamily::Arp, TableFamily::Netdev] {
        drop_table(&mut b, family, table)?;
    }
    b.push(
        c::NFT_MSG_DELTABLE,
        NlmF::empty(),
        &[table_attr(c::NFTA_TABLE_NAME, table)?],
        format!("table inet {table}"),
    )?;
    b.finish()
}

fn rule_exprs(r: &Rule, set_id: &dyn Fn(&str) -> u32) -> Result<Attr, EncodeError> {
    let mut all = Vec::new();
    for m in &r.matches {
        all.extend(match_exprs(m, set_id)?);
    }
    for s in &r.stmts {
        all.extend(stmt_exprs(s, set_id)?);
    }
    nest(c::NFTA_RULE_EXPRESSIONS, all)
}

fn push_set(b: &mut Builder, table: &str, s: &Set, id: u32) -> Result<(), EncodeError> {
    if let SetKind::Ports(elems) = &s.kind {
        return push_port_set(b, table, s, Some(elems), id);
    }
    if s.kind == SetKind::PortsTimeout {
        return push_port_set(b, table, s, None, id);
    }
    if s.kind == SetKind::OwnerMeter {
        let attrs = [
            table_attr(c::NFTA_SET_TABLE, table)?,
            attr(c::NFTA_SET_NAME, s.name)?,
            be32(c::NFTA_SET_FLAGS, c::NFT_SET_EVAL | c::NFT_SET_TIMEOUT)?,
            be32(c::NFTA_SET_KEY_TYPE, c::TYPE_UID)?,
            be32(c::NFTA_SET_KEY_LEN, 4)?,
            attr(c::NFTA_SET_TIMEOUT, super::ruleset::LOG_OWNER_TIMEOUT_MS.to_be_bytes())?,
            nest(c::NFTA_SET_DESC, vec![be32(c::NFTA_SET_DESC_SIZE, super::ruleset::LOG_OWNERS)?])?,
            be32(c::NFTA_SET_ID, id)?,
        ];
        return b.push(c::NFT_MSG_NEWSET, NlmF::CREATE, &attrs, format!("set {}", s.name));
    }
    let (ty, len) = match s.family {
        Family::V4 => (c::TYPE_IPADDR, 4),
        Family::V6 => (c::TYPE_IP6ADDR, 16),
    };
    let flags = match s.kind {
        SetKind::Interval(_) => c::NFT_SET_INTERVAL,
        SetKind::Timeout => c::NFT_SET_TIMEOUT,
        SetKind::Ports(_) | SetKind::PortsTimeout | SetKind::OwnerMeter => unreachable!("handled above"),
    };
    let attrs = [
        table_attr(c::NFTA_SET_TABLE, table)?,
        attr(c::NFTA_SET_NAME, s.name)?,
        be32(c::NFTA_SET_FLAGS, flags)?,
        be32(c::NFTA_SET_KEY_TYPE, ty)?,
        be32(c::NFTA_SET_KEY_LEN, len)?,
        be32(c::NFTA_SET_ID, id)?,
    ];
    b.push(c::NFT_MSG_NEWSET, NlmF::CREATE, &attrs, format!("set {}", s.name))?;
    let SetKind::Interval(elems) = &s.kind else { return Ok(()) };
    let keys = interval_keys(elems);
    for (n, chunk) in keys.chunks(ELEMS_PER_MSG).enumerate() {
        let mut list = Vec::with_capacity(chunk.len());
        for (key, end) in chunk {
            let mut e = vec![data(c::NFTA_SET_ELEM_KEY, key)?];
            if *end {
                e.push(be32(c::NFTA_SET_ELEM_FLAGS, c::NFT_SET_ELEM_INTERVAL_END)?);
            }
            list.push(nest(c::NFTA_LIST_ELEM, e)?);
        }
        let attrs = [
            table_attr(c::NFTA_SET_ELEM_LIST_TABLE, table)?,
            attr(c::NFTA_SET_ELEM_LIST_SET, s.name)?,
            be32(c::NFTA_SET_ELEM_LIST_SET_ID, id)?,
            nest(c::NFTA_SET_ELEM_LIST_ELEMENTS, list)?,
        ];
        b.push(
            c::NFT_MSG_NEWSETELEM,
            NlmF::CREATE,
            &attrs,
            format!("set {} elements part {}", s.name, n + 1),
        )?;
    }
    Ok(())
}

/// A port-set element's start and end keys.
type KeyRange = (Vec<u8>, Vec<u8>);

/// Port-set elements per NEWSETELEM message: an IPv6 element carries a
/// 24-byte key and a 24-byte end key (about 80 bytes with headers).
const PORT_ELEMS_PER_MSG: usize = 500;

/// A concatenated `addr . inet_proto . inet_service` interval set (the
/// kernel's pipapo): each element is a start key and an end key, every
/// part padded to 4 bytes. `elems` `None`: an empty set whose elements
/// come at run time, each with a timeout.
fn push_port_set(
    b: &mut Builder,
    table: &str,
    s: &Set,
    elems: Option<&PortElements>,
    id: u32,
) -> Result<(), EncodeError> {
    let (addr_ty, addr_len) = match s.family {
        Family::V4 => (c::TYPE_IPADDR, 4),
        Family::V6 => (c::TYPE_IP6ADDR, 16),
    };
    let ty = ((addr_ty << c::TYPE_BITS) | c::TYPE_INET_PROTO) << c::TYPE_BITS | c::TYPE_INET_SERVICE;
    let keys: Vec<KeyRange> = match elems {
        None => Vec::new(),
        Some(PortElements::V4(v)) => v
            .iter()
            .map(|e| {
                (
                    port_key(&e.addrs.0.to_be_bytes(), e.proto, e.ports.0),
                    port_key(&e.addrs.1.to_be_bytes(), e.proto, e.ports.1),
                )
            })
            .collect(),
        Some(PortElements::V6(v)) => v
            .iter()
            .map(|e| {
                (
                    port_key(&e.addrs.0.to_be_bytes(), e.proto, e.ports.0),
                    port_key(&e.addrs.1.to_be_bytes(), e.proto, e.ports.1),
                )
            })
            .collect(),
    };
    let flags = match elems {
        Some(_) => c::NFT_SET_INTERVAL | c::NFT_SET_CONCAT,
        None => c::NFT_SET_INTERVAL | c::NFT_SET_CONCAT | c::NFT_SET_TIMEOUT,
    };
    let field = |n: u32| -> Result<Attr, EncodeError> {
        nest(c::NFTA_LIST_ELEM, vec![be32(c::NFTA_SET_FIELD_LEN, n)?])
    };
    let desc = nest(
        c::NFTA_SET_DESC,
        vec![nest(c::NFTA_SET_DESC_CONCAT, vec![field(addr_len)?, field(1)?, field(2)?])?],
    )?;
    let attrs = [
        table_attr(c::NFTA_SET_TABLE, table)?,
        attr(c::NFTA_SET_NAME, s.name)?,
        be32(c::NFTA_SET_FLAGS, flags)?,
        be32(c::NFTA_SET_KEY_TYPE, ty)?,
        be32(c::NFTA_SET_KEY_LEN, addr_len + 8)?,
        be32(c::NFTA_SET_ID, id)?,
        desc,
    ];
    b.push(c::NFT_MSG_NEWSET, NlmF::CREATE, &attrs, format!("set {}", s.name))?;
    for (n, chunk) in keys.chunks(PORT_ELEMS_PER_MSG).enumerate() {
        let mut list = Vec::with_capacity(chunk.len());
        for (start, end) in chunk {
            list.push(nest(
                c::NFTA_LIST_ELEM,
                vec![data(c::NFTA_SET_ELEM_KEY, start)?, data(c::NFTA_SET_ELEM_KEY_END, end)?],
            )?);
        }
        let attrs = [
            table_attr(c::NFTA_SET_ELEM_LIST_TABLE, table)?,
            attr(c::NFTA_SET_ELEM_LIST_SET, s.name)?,
            be32(c::NFTA_SET_ELEM_LIST_SET_ID, id)?,
            nest(c::NFTA_SET_ELEM_LIST_ELEMENTS, list)?,
        ];
        b.push(
            c::NFT_MSG_NEWSETELEM,
            NlmF::CREATE,
            &attrs,
            format!("set {} elements part {}", s.name, n + 1),
        )?;
    }
    Ok(())
}

/// One key of a port set: the address, the protocol and the port (network
/// order), each padded to a 32-bit register.
pub fn port_key(addr: &[u8], proto: u8, port: u16) -> Vec<u8> {
    let mut k = addr.to_vec();
    k.extend([proto, 0, 0, 0]);
    k.extend(port.to_be_bytes());
    k.extend([0, 0]);
    k
}

/// Interval set keys as the kernel wants them: every range `[a, b]` is a
/// start key `a` and an end key `b + 1` flagged INTERVAL_END (none when
/// `b` is the last address); like nft, a leading end key at 0 closes the
/// gap before the first range.
pub fn interval_keys(e: &Elements) -> Vec<(Vec<u8>, bool)> {
    fn keys<T: Copy + PartialEq>(
        v: &[(T, T)],
        zero: T,
        max: T,
        succ: impl Fn(T) -> T,
        be: impl Fn(T) -> Vec<u8>,
    ) -> Vec<(Vec<u8>, bool)> {
        let mut out = Vec::with_capacity(v.len() * 2 + 1);
        if let Some(&(first, _)) = v.first() {
            if first != zero {
                out.push((be(zero), true));
            }
        }
        for &(a, b) in v {
            out.push((be(a), false));
            if b != max {
                out.push((be(succ(b)), true));
            }
        }
        out
    }
    match e {
        Elements::V4(v) => keys(v, 0, u32::MAX, |x| x + 1, |x| x.to_be_bytes().to_vec()),
        Elements::V6(v) => keys(v, 0, u128::MAX, |x| x + 1, |x| x.to_be_bytes().to_vec()),
    }
}

fn push_chain(b: &mut Builder, family: TableFamily, table: &str, ch: &Chain) -> Result<(), EncodeError> {
    if ch.hook == Hook::Regular {
        let attrs = [table_attr(c::NFTA_CHAIN_TABLE, table)?, attr(c::NFTA_CHAIN_NAME, ch.name.as_str())?];
        return b.push_in(family, c::NFT_MSG_NEWCHAIN, NlmF::CREATE, &attrs, format!("chain {}", ch.name));
    }
    let hooknum = match (family, ch.hook) {
        (_, Hook::Regular) => unreachable!("handled above"),
        (TableFamily::Arp, _) => c::NF_ARP_OUT,
        (TableFamily::Netdev, _) => c::NF_NETDEV_EGRESS,
        (TableFamily::Inet, Hook::Prerouting) => c::NF_INET_PRE_ROUTING,
        (TableFamily::Inet, Hook::Input) => c::NF_INET_LOCAL_IN,
        (TableFamily::Inet, Hook::Postrouting) => c::NF_INET_POST_ROUTING,
        (TableFamily::Inet, Hook::Output | Hook::Egress) => c::NF_INET_LOCAL_OUT,
    };
    let mut hook =
        vec![be32(c::NFTA_HOOK_HOOKNUM, hooknum)?, attr(c::NFTA_HOOK_PRIORITY, ch.priority.to_be_bytes())?];
    if let Some(dev) = &ch.device {
        hook.push(attr(c::NFTA_HOOK_DEV, dev.as_str())?);
    }
    let policy = match ch.policy {
        ChainPolicy::Accept => c::NF_ACCEPT,
        ChainPolicy::Drop => c::NF_DROP,
    };
    let kind = match ch.kind {
        ChainType::Filter => "filter",
        ChainType::Nat => "nat",
    };
    let attrs = [
        table_attr(c::NFTA_CHAIN_TABLE, table)?,
        attr(c::NFTA_CHAIN_NAME, ch.name.as_str())?,
        nest(c::NFTA_CHAIN_HOOK, hook)?,
        attr(c::NFTA_CHAIN_POLICY, policy.to_be_bytes())?,
        attr(c::NFTA_CHAIN_TYPE, kind)?,
    ];
    b.push_in(family, c::NFT_MSG_NEWCHAIN, NlmF::CREATE, &attrs, format!("chain {}", ch.name))
}

/// A dump request (GET with NLM_F_DUMP) for `msg`, optionally filtered by
/// table name.
pub fn dump_request(
    msg: u16,
    seq: u32,
    table_attr_type: Option<(u16, &str)>,
) -> Result<Vec<u8>, EncodeError> {
    dump_request_in(TableFamily::Inet, msg, seq, table_attr_type)
}

/// [`dump_request`] for a table family other than `inet`.
pub fn dump_request_in(
    family: TableFamily,
    msg: u16,
    seq: u32,
    table_attr_type: Option<(u16, &str)>,
) -> Result<Vec<u8>, EncodeError> {
    let attrs = match table_attr_type {
        Some((t, name)) => vec![attr(t, name)?],
        None => vec![],
    };
    let flags = NlmF::REQUEST | NlmF::DUMP;
    message((c::NFNL_SUBSYS_NFTABLES << 8) | msg, flags, seq, nfproto_of(family), 0, &attrs)
}

/// One expression of a dumped rule: its name and data attributes.
pub type DumpedExpr<'a> = (String, Vec<(u16, &'a [u8])>);

/// The expressions of a dumped rule.
pub fn rule_expressions(rule: &[(u16, Vec<u8>)]) -> Vec<DumpedExpr<'_>> {
    let Some((_, list)) = rule.iter().find(|(t, _)| *t == c::NFTA_RULE_EXPRESSIONS) else {
        return Vec::new();
    };
    attrs(list)
        .into_iter()
        .filter(|(t, _)| *t == c::NFTA_LIST_ELEM)
        .map(|(_, e)| {
            let parts = attrs(e);
            let name = parts.iter().find(|(t, _)| *t == c::NFTA_EXPR_NAME).map(|(_, v)| attr_str(v));
            let data = parts.iter().find(|(t, _)| *t == c::NFTA_EXPR_DATA).map(|(_, v)| attrs(v));
            (name.unwrap_or_default(), data.unwrap_or_default())
        })
        .collect()
}

/// The packet count of a rule's `counter`, if it has one.
pub fn counter_packets(rule: &[(u16, Vec<u8>)]) -> Option<u64> {
    rule_expressions(rule).into_iter().find(|(n, _)| n == "counter").and_then(|(_, d)| {
        let v = d.iter().find(|(t, _)| *t == c::NFTA_COUNTER_PACKETS)?.1;
        Some(u64::from_be_bytes(v.get(..8)?.try_into().ok()?))
    })
}

/// The value the first `cmp` of a rule compares with.
pub fn first_cmp_value(rule: &[(u16, Vec<u8>)]) -> Option<Vec<u8>> {
    rule_expressions(rule).into_iter().find(|(n, _)| n == "cmp").and_then(|(_, d)| {
        let data = d.iter().find(|(t, _)| *t == c::NFTA_CMP_DATA)?.1;
        attrs(data).into_iter().find(|(t, _)| *t == c::NFTA_DATA_VALUE).map(|(_, v)| v.to_vec())
    })
}

// ---------------------------------------------------------------------------
// Parsing what the kernel sends back.

/// One netlink message of a received datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawMsg<'a> {
    pub ty: u16,
    pub flags: u16,
    pub seq: u32,
    pub payload: &'a [u8],
}

/// Splits a datagram into messages; a truncated tail is ignored.
pub fn split_messages(buf: &[u8]) -> Vec<RawMsg<'_>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 16 {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < 16 || len > rest.len() {
            break;
        }
        out.push(RawMsg {
            ty: u16::from_ne_bytes([rest[4], rest[5]]),
            flags: u16::from_ne_bytes([rest[6], rest[7]]),
            seq: u32::from_ne_bytes([rest[8], rest[9], rest[10], rest[11]]),
            payload: &rest[16..len],
        });
        let next = (len + 3) & !3;
        rest = rest.get(next..).unwrap_or(&[]);
    }
    out
}

/// The errno of an NLMSG_ERROR message (0 is an ack); `None` for others.
pub fn ack_errno(m: &RawMsg<'_>) -> Option<i32> {
    if m.ty != c::NLMSG_ERROR || m.payload.len() < 4 {
        return None;
    }
    let e = i32::from_ne_bytes([m.payload[0], m.payload[1], m.payload[2], m.payload[3]]);
    Some(-e)
}

/// Attributes `(type without flags, payload)` of a buffer of attributes.
pub fn attrs(buf: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= 4 {
        let len = u16::from_ne_bytes([rest[0], rest[1]]) as usize;
        let ty = u16::from_ne_bytes([rest[2], rest[3]]) & 0x3fff;
        if len < 4 || len > rest.len() {
            break;
        }
        out.push((ty, &rest[4..len]));
        let next = (len + 3) & !3;
        rest = rest.get(next..).unwrap_or(&[]);
    }
    out
}

/// The attributes of an nf_tables message (after the 4-byte nfgenmsg).
pub fn nft_attrs<'a>(m: &RawMsg<'a>) -> Vec<(u16, &'a [u8])> {
    attrs(m.payload.get(4..).unwrap_or(&[]))
}

/// A NUL-terminated string attribute.
pub fn attr_str(v: &[u8]) -> String {
    let end = v.iter().position(|&b| b == 0).unwrap_or(v.len());
    String::from_utf8_lossy(&v[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_layout() {
        // BEGIN: 16-byte header + 4-byte nfgenmsg, res_id big endian.
        let m = message(c::NFNL_MSG_BATCH_BEGIN, NlmF::REQUEST, 7, 0, c::NFNL_SUBSYS_NFTABLES, &[]).unwrap();
        assert_eq!(m.len(), 20);
        assert_eq!(&m[0..4], &20u32.to_ne_bytes());
        assert_eq!(&m[4..6], &16u16.to_ne_bytes());
        assert_eq!(&m[8..12], &7u32.to_ne_bytes());
        assert_eq!(&m[16..20], &[0, 0, 0, 10]);
    }

    #[test]
    fn attributes_round_trip() {
        let a = nest(c::NFTA_LIST_ELEM, vec![attr(c::NFTA_EXPR_NAME, "meta").unwrap(), be32(2, 5).unwrap()])
            .unwrap();
        let m = message(0x0a06, NlmF::REQUEST, 1, 1, 0, &[a]).unwrap();
        let msgs = split_messages(&m);
        assert_eq!(msgs.len(), 1);
        let top = nft_attrs(&msgs[0]);
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].0, c::NFTA_LIST_ELEM);
        let inner = attrs(top[0].1);
        assert_eq!(inner, vec![(1, &b"meta\0"[..]), (2, &[0, 0, 0, 5][..])]);
        assert_eq!(attr_str(inner[0].1), "meta");
    }

    #[test]
    fn interval_key_table() {
        type Keys = Vec<(Vec<u8>, bool)>;
        let cases: Vec<(Elements, Keys)> = vec![
            (Elements::V4(vec![]), vec![]),
            (
                Elements::V4(vec![(0x0a000000, 0x0affffff)]),
                vec![(vec![0, 0, 0, 0], true), (vec![10, 0, 0, 0], false), (vec![11, 0, 0, 0], true)],
            ),
            (Elements::V4(vec![(0, u32::MAX)]), vec![(vec![0, 0, 0, 0], false)]),
            (
                Elements::V4(vec![(0, 1), (0xfffffffe, u32::MAX)]),
                vec![(vec![0, 0, 0, 0], false), (vec![0, 0, 0, 2], true), (vec![255, 255, 255, 254], false)],
            ),
        ];
        for (e, want) in cases {
            assert_eq!(interval_keys(&e), want, "{e:?}");
        }
    }

    /// A port-set key is what the lookup's registers hold: the address,
    /// then the protocol and the port (network order), each part padded
    /// to 32 bits, as nft lays out `addr . inet_proto . inet_service`.
    #[test]
    fn port_key_layout() {
        assert_eq!(port_key(&[10, 0, 0, 5], 6, 443), [10, 0, 0, 5, 6, 0, 0, 0, 1, 187, 0, 0]);
        let v6 = port_key(&"2001:db8::1".parse::<std::net::Ipv6Addr>().unwrap().octets(), 17, 53);
        assert_eq!((v6.len(), &v6[16..]), (24, &[17, 0, 0, 0, 0, 53, 0, 0][..]));
    }

    /// Names with ports: one NEWSETELEM per family into the named sets,
    /// each element a start and an end key (`addr . proto . port`, every
    /// part padded to 4 bytes) with its own timeout; no EXCL, so a
    /// re-learned answer refreshes its element.
    #[test]
    fn named_batch_shape() {
        fn contains(hay: &[u8], needle: &[u8]) -> bool {
            hay.windows(needle.len()).any(|w| w == needle)
        }
        let e = |ip: &str, proto, ports, timeout_ms| NamedElem {
            ip: ip.parse().unwrap(),
            proto,
            ports,
            timeout_ms,
        };
        let elems = [e("192.0.2.5", 6, (5432, 5432), 4000), e("2001:db8::5", 17, (53, 54), 30_000)];
        let b = named_batch("egret", &elems, 10).unwrap();
        let msgs = split_messages(&b.bytes);
        assert_eq!(msgs.iter().map(|m| m.ty).collect::<Vec<_>>(), [0x10, 0x0a0c, 0x0a0c, 0x11]);
        assert_eq!(msgs[1].flags, 0x1 | 0x4 | 0x400, "request, ack, create; no EXCL");
        let v4 = msgs[1].payload;
        assert!(contains(v4, b"named_ports4\0"));
        assert!(contains(v4, &port_key(&[192, 0, 2, 5], 6, 5432)), "start key");
        assert!(contains(v4, &4000u64.to_be_bytes()), "timeout");
        let v6 = msgs[2].payload;
        let a6 = "2001:db8::5".parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert!(contains(v6, b"named_ports6\0"));
        assert!(
            contains(v6, &port_key(&a6, 17, 53)) && contains(v6, &port_key(&a6, 17, 54)),
            "start and end keys"
        );
        assert!(contains(v6, &30_000u64.to_be_bytes()));
        assert_eq!(split_messages(&named_batch("egret", &elems[..1], 1).unwrap().bytes).len(), 3);
    }

    #[test]
    fn learned_batch_shape() {
        fn contains(hay: &[u8], needle: &[u8]) -> bool {
            hay.windows(needle.len()).any(|w| w == needle)
        }
        let ips: Vec<(IpAddr, u64)> = vec![
            ("10.200.0.2".parse().unwrap(), 30_000),
            ("fd00:200::2".parse().unwrap(), 1500),
            ("10.200.0.3".parse().unwrap(), 3_600_000),
        ];
        let b = learned_batch("egret", &ips, 100).unwrap();
        let msgs = split_messages(&b.bytes);
        let kinds: Vec<u16> = msgs.iter().map(|m| m.ty).collect();
        assert_eq!(kinds, [0x10, 0x0a0c, 0x0a0c, 0x11], "begin, one NEWSETELEM per family, end");
        assert_eq!(msgs.iter().map(|m| m.seq).collect::<Vec<_>>(), [100, 101, 102, 103]);
        assert_eq!(b.acked.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [101, 102]);
        assert_eq!(msgs[1].flags, 0x1 | 0x4 | 0x400, "request, ack, create; no EXCL so re-adding refreshes");
        assert_eq!((msgs[1].payload[0], msgs[0].payload[0]), (1, 0), "inet family; batch markers unspec");
        let v4 = msgs[1].payload;
        assert!(contains(v4, b"egret\0") && contains(v4, b"learned4\0"));
        assert!(contains(v4, &[10, 200, 0, 2]) && contains(v4, &[10, 200, 0, 3]));
        assert!(contains(v4, &30_000u64.to_be_bytes()) && contains(v4, &3_600_000u64.to_be_bytes()));
        let v6 = msgs[2].payload;
        assert!(contains(v6, b"learned6\0"));
        assert!(contains(v6, &"fd00:200::2".parse::<std::net::Ipv6Addr>().unwrap().octets()));
        assert!(contains(v6, &1500u64.to_be_bytes()));
        // Thousands of addresses: split, each part acked.
        let many: Vec<(IpAddr, u64)> =
            (0..3000u32).map(|i| (IpAddr::V6(std::net::Ipv6Addr::from(u128::from(i) + 1)), 60_000)).collect();
        let b = learned_batch("egret", &many, 1).unwrap();
        let msgs = split_messages(&b.bytes);
        assert_eq!(msgs.len(), 2 + 3000usize.div_ceil(ELEMS_PER_MSG));
        assert_eq!(b.acked.len(), msgs.len() - 2);
        // Only one family: one NEWSETELEM.
        let b = learned_batch("egret", &ips[..1], 7).unwrap();
        assert_eq!(split_messages(&b.bytes).len(), 3);
        assert_eq!(b.acked.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [8]);
    }

    #[test]
    fn batch_counts_and_seqs() {
        use crate::nft::ruleset::*;
        let rs = Ruleset {
            table: "egret",
            sets: vec![Set {
                name: "allowed4",
                family: Family::V4,
                kind: SetKind::Interval(Elements::V4((0..1500u32).map(|i| (i * 4, i * 4 + 1)).collect())),
            }],
            chains: vec![Chain {
                name: "filter_out".into(),
                device: None,
                kind: ChainType::Filter,
                hook: Hook::Output,
                priority: 0,
                policy: ChainPolicy::Drop,
                rules: vec![Rule {
                    matches: vec![Match::DaddrInSet(Family::V4, "allowed4")],
                    stmts: vec![Stmt::Accept],
                }],
            }],
            l2: Vec::new(),
        };
        let b = apply_batch(&rs, 100).unwrap();
        // 3 table messages, 1 set, 3000 keys in 3 element messages, 1 chain, 1 rule.
        assert_eq!(b.acked.len(), 3 + 1 + 3 + 1 + 1);
        assert_eq!(b.messages, b.acked.len() + 2);
        assert_eq!(b.begin_seq, 100);
        assert_eq!(b.acked[0].0, 101);
        let msgs = split_messages(&b.bytes);
        assert_eq!(msgs.len(), b.messages);
        assert_eq!(msgs.last().unwrap().ty, c::NFNL_MSG_BATCH_END);
        // Every element list fits a u16 attribute length.
        assert!(msgs.iter().all(|m| m.payload.len() < 65_000));
    }

    #[test]
    fn acks_parse() {
        let mut err = Vec::new();
        err.extend_from_slice(&36u32.to_ne_bytes());
        err.extend_from_slice(&c::NLMSG_ERROR.to_ne_bytes());
        err.extend_from_slice(&0u16.to_ne_bytes());
        err.extend_from_slice(&9u32.to_ne_bytes());
        err.extend_from_slice(&0u32.to_ne_bytes());
        err.extend_from_slice(&(-1i32).to_ne_bytes());
        err.extend_from_slice(&[0u8; 16]);
        let msgs = split_messages(&err);
        assert_eq!(msgs.len(), 1);
        assert_eq!(msgs[0].seq, 9);
        assert_eq!(ack_errno(&msgs[0]), Some(1)); // EPERM
        assert!(split_messages(&err[..20]).is_empty());
    }
}
