//! g0efilter's own nftables tables, removed when egret starts in their
//! place (an in-place image swap in a network namespace that survived,
//! e.g. a pod whose infra container kept running). Left behind, their
//! rules would keep filtering next to egret's with g0efilter's fixed,
//! forgeable bypass mark (`meta mark 0x1 accept`), and their NAT chain
//! would redirect to ports where egret may not listen.
//!
//! Which tables: `ip filter_v4` and `ip nat_v4` (early g0efilter) and any
//! table whose name starts with `g0efilter` (later releases: `ip
//! g0efilter_v4`, `ip g0efilter_nat_v4`, and their IPv6 siblings), in any
//! family. Nothing else is touched.
//!
//! The selection and the messages are pure (built with the encoder of
//! [`super::netlink`]); [`remove_g0efilter_tables`] is the shell: one
//! table dump, then one batch per table so a table that vanished in
//! between (ENOENT) cannot fail the others.

use std::os::fd::AsRawFd;

use neli::consts::nl::NlmF;
use neli::genl::{AttrTypeBuilder, Nlattr, NlattrBuilder};
use neli::types::Buffer;
use nix::errno::Errno;
use nix::sys::socket::{recv, send, MsgFlags};

use super::netlink::{self, c, EncodeError};
use super::{NftError, RECV_TIMEOUT};

/// Tables of early g0efilter releases, by exact name (family `ip`).
const EARLY: [&str; 2] = ["filter_v4", "nat_v4"];

/// Whether `(family, name)` is one of g0efilter's tables.
pub fn is_g0efilter(family: u8, name: &str) -> bool {
    name.starts_with("g0efilter") || (family == c::NFPROTO_IPV4 && EARLY.contains(&name))
}

/// The family as `nft` writes it.
pub fn family_name(family: u8) -> &'static str {
    match family {
        c::NFPROTO_IPV4 => "ip",
        c::NFPROTO_IPV6 => "ip6",
        c::NFPROTO_INET => "inet",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        _ => "unknown",
    }
}

/// A dump of every table of every family.
pub fn list_request(seq: u32) -> Result<Vec<u8>, EncodeError> {
    // Family "unspec" (0): the kernel answers with the tables of all
    // families; `netlink::dump_request` asks for inet only.
    netlink::message(
        (c::NFNL_SUBSYS_NFTABLES << 8) | c::NFT_MSG_GETTABLE,
        NlmF::REQUEST | NlmF::DUMP,
        seq,
        0,
        0,
        &[],
    )
}

/// `(family, name)` of every table in a dump's messages.
pub fn tables_in(msgs: &[netlink::RawMsg<'_>]) -> Vec<(u8, String)> {
    msgs.iter()
        .filter(|m| m.ty == (c::NFNL_SUBSYS_NFTABLES << 8) | c::NFT_MSG_NEWTABLE)
        .filter_map(|m| {
            let family = *m.payload.first()?;
            let name = netlink::nft_attrs(m)
                .into_iter()
                .find(|(t, _)| *t == c::NFTA_TABLE_NAME)
                .map(|(_, v)| netlink::attr_str(v))?;
            Some((family, name))
        })
        .collect()
}

/// `BEGIN, DELTABLE family name, END`: (bytes, begin seq, delete seq).
pub fn delete_batch(family: u8, name: &str, seq: u32) -> Result<(Vec<u8>, u32, u32), EncodeError> {
    fn wrap<E: std::fmt::Display>(e: E) -> EncodeError {
        EncodeError(format!("table name attribute: {e}"))
    }
    let mut payload = name.as_bytes().to_vec();
    payload.push(0);
    let ty = AttrTypeBuilder::default().nla_type(c::NFTA_TABLE_NAME).build().map_err(wrap)?;
    let a: Nlattr<u16, Buffer> =
        NlattrBuilder::default().nla_type(ty).nla_payload(Buffer::from(payload)).build().map_err(wrap)?;
    let mut out =
        netlink::message(c::NFNL_MSG_BATCH_BEGIN, NlmF::REQUEST, seq, 0, c::NFNL_SUBSYS_NFTABLES, &[])?;
    let del_seq = seq.wrapping_add(1);
    out.extend(netlink::message(
        (c::NFNL_SUBSYS_NFTABLES << 8) | c::NFT_MSG_DELTABLE,
        NlmF::REQUEST | NlmF::ACK,
        del_seq,
        family,
        0,
        &[a],
    )?);
    out.extend(netlink::message(
        c::NFNL_MSG_BATCH_END,
        NlmF::REQUEST,
        del_seq.wrapping_add(1),
        0,
        c::NFNL_SUBSYS_NFTABLES,
        &[],
    )?);
    Ok((out, seq, del_seq))
}

/// Deletes every g0efilter table in this network namespace; returns them
/// as `family name` (empty when there were none).
pub fn remove_g0efilter_tables() -> Result<Vec<String>, NftError> {
    let fd = super::netfilter_socket(RECV_TIMEOUT, 1 << 20)
        .map_err(|(op, errno)| NftError::Socket { op, errno })?;
    let mut seq = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(1, |d| d.as_secs() as u32)
        .wrapping_add(7919);
    let mut buf = vec![0u8; 1 << 20];
    let recv_one = |buf: &mut [u8], what: &str| -> Result<usize, NftError> {
        loop {
            match recv(fd.as_raw_fd(), buf, MsgFlags::empty()) {
                Ok(n) => return Ok(n),
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return Err(NftError::Timeout { waiting_for: what.to_owned() }),
                Err(errno) => return Err(NftError::Socket { op: "recv", errno }),
            }
        }
    };
    let send_all = |bytes: &[u8]| -> Result<(), NftError> {
        send(fd.as_raw_fd(), bytes, MsgFlags::empty()).map(|_| ()).map_err(|errno| match errno {
            Errno::EPERM => NftError::PermissionDenied,
            errno => NftError::Socket { op: "send", errno },
        })
    };

    // 1. Which tables exist.
    seq = seq.wrapping_add(1);
    let list_seq = seq;
    send_all(&list_request(list_seq)?)?;
    let mut found = Vec::new();
    'dump: loop {
        let n = recv_one(&mut buf, "the table list")?;
        let msgs = netlink::split_messages(&buf[..n]);
        for m in &msgs {
            if m.seq != list_seq {
                continue;
            }
            if m.ty == c::NLMSG_DONE {
                break 'dump;
            }
            if let Some(err) = netlink::ack_errno(m) {
                if err == 0 {
                    continue;
                }
                return Err(match Errno::from_raw(err) {
                    Errno::EPERM => NftError::PermissionDenied,
                    errno => NftError::Kernel { what: "the table list".into(), errno },
                });
            }
        }
        found.extend(tables_in(&msgs.into_iter().filter(|m| m.seq == list_seq).collect::<Vec<_>>()));
    }

    // 2. Delete g0efilter's, one batch each.
    let mut gone = Vec::new();
    for (family, name) in found.into_iter().filter(|(f, n)| is_g0efilter(*f, n)) {
        let shown = format!("{} {name}", family_name(family));
        seq = seq.wrapping_add(3);
        let (bytes, begin, del) = delete_batch(family, &name, seq)?;
        send_all(&bytes)?;
        let outcome = loop {
            let n = recv_one(&mut buf, &format!("deleting table {shown}"))?;
            let verdict = netlink::split_messages(&buf[..n]).iter().find_map(|m| {
                let err = netlink::ack_errno(m)?;
                (m.seq == del || (m.seq == begin && err != 0)).then_some(err)
            });
            if let Some(err) = verdict {
                break err;
            }
        };
        match outcome {
            0 => gone.push(shown),
            e if Errno::from_raw(e) == Errno::ENOENT => {}
            e if Errno::from_raw(e) == Errno::EPERM => return Err(NftError::PermissionDenied),
            e => return Err(NftError::Kernel { what: format!("table {shown}"), errno: Errno::from_raw(e) }),
        }
    }
    Ok(gone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn which_tables_are_g0efilters() {
        let cases: &[(u8, &str, bool)] = &[
            (c::NFPROTO_IPV4, "filter_v4", true),
            (c::NFPROTO_IPV4, "nat_v4", true),
            (c::NFPROTO_IPV4, "g0efilter_v4", true),
            (c::NFPROTO_IPV4, "g0efilter_nat_v4", true),
            (c::NFPROTO_IPV6, "g0efilter_v6", true),
            (c::NFPROTO_INET, "g0efilter", true),
            (c::NFPROTO_INET, "egret", false),
            (c::NFPROTO_IPV4, "nat", false),
            (c::NFPROTO_IPV4, "filter", false),
            (c::NFPROTO_IPV6, "filter_v4", false),
            (c::NFPROTO_INET, "netavark", false),
        ];
        for (f, n, want) in cases {
            assert_eq!(is_g0efilter(*f, n), *want, "{} {n}", family_name(*f));
        }
    }

    #[test]
    fn delete_batch_layout() {
        let (bytes, begin, del) = delete_batch(c::NFPROTO_IPV4, "g0efilter_v4", 100).unwrap();
        assert_eq!((begin, del), (100, 101));
        let msgs = netlink::split_messages(&bytes);
        assert_eq!(msgs.len(), 3);
        assert_eq!(msgs[0].ty, c::NFNL_MSG_BATCH_BEGIN);
        assert_eq!(msgs[1].ty, (c::NFNL_SUBSYS_NFTABLES << 8) | c::NFT_MSG_DELTABLE);
        assert_eq!(msgs[1].payload[0], c::NFPROTO_IPV4, "the table's family, not inet");
        assert_eq!(msgs[2].ty, c::NFNL_MSG_BATCH_END);
        let name = netlink::nft_attrs(&msgs[1]).into_iter().find(|(t, _)| *t == c::NFTA_TABLE_NAME).unwrap();
        assert_eq!(netlink::attr_str(name.1), "g0efilter_v4");
    }

    #[test]
    fn list_request_asks_every_family() {
        let req = list_request(5).unwrap();
        let m = &netlink::split_messages(&req)[0];
        assert_eq!(m.payload[0], 0, "family unspec");
        assert!(m.flags & 0x300 == 0x300, "a dump request");
    }
}
