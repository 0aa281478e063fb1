//! The pure core of DNS mode: query bytes + [`Policy`] → [`Action`], and
//! the checks and extractions done on upstream answers.
//!
//! No I/O, no clock reads, no threads: the server (`dns/mod.rs`) owns the
//! sockets and time. Every input is hostile; every outcome is a value.

use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query as Question, ResponseCode};
use hickory_proto::rr::rdata::opt::EdnsOption;
use hickory_proto::rr::rdata::svcb::SvcParamValue;
use hickory_proto::rr::rdata::HTTPS;
use hickory_proto::rr::{DNSClass, Name, RData, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};

use crate::policy::guard::{self, Guard, Guarded};
use crate::policy::{Policy, Query, Reason};

/// RFC 8914 §2: the EDNS option code of an Extended DNS Error.
pub const EDE_OPTION: u16 = 15;
/// RFC 8914 §4.16: "Blocked", the resolver blocks this name by policy.
pub const EDE_BLOCKED: u16 = 15;
/// RFC 8914 §4.19: "Prohibited", the server refuses this kind of query.
pub const EDE_PROHIBITED: u16 = 18;

/// The fixed DNS header (RFC 1035 §4.1.1).
pub const HEADER_LEN: usize = 12;
/// The largest UDP reply a client accepts when it sends no OPT
/// (RFC 1035 §2.3.4).
pub const CLASSIC_UDP_MAX: u16 = 512;
/// The UDP payload size egret advertises (the DNS flag day 2020 value).
pub const EDNS_PAYLOAD: u16 = 1232;

/// What the server should do with one query.
#[derive(Debug, Clone)]
pub enum Action {
    /// Every question is allowed: send the query upstream unchanged.
    Forward(QueryInfo),
    /// Answer the client directly.
    Answer(Answer),
    /// Say nothing: the bytes were a response (answering could loop) or
    /// too short to carry an ID to answer to.
    Drop(&'static str),
}

/// A reply built here, with what the event needs to say about it.
#[derive(Debug, Clone)]
pub struct Answer {
    pub bytes: Vec<u8>,
    pub rcode: ResponseCode,
    pub refusal: Refusal,
    /// The parsed query, when it parsed.
    pub query: Option<QueryInfo>,
}

/// Why egret answered itself instead of forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// A question's name is not allowed (NXDOMAIN + EDE 15).
    Blocked { name: String, reason: Reason },
    /// An allowed question's answer leads (CNAME, DNAME) through `link`,
    /// a name the denylist refuses (NXDOMAIN + EDE 15).
    BlockedLink { link: String, reason: Reason },
    /// The query could not be read, or has no question (FORMERR).
    Malformed(String),
    /// Not a standard query (NOTIMP).
    NotImplemented(String),
    /// A class other than IN (REFUSED + EDE 18).
    Refused(String),
    /// An allowed name answered an address `GUARD_ADDRESSES` guards
    /// (NXDOMAIN + EDE 15).
    Guarded { name: String, guarded: Guarded },
    /// `DNS_HARDENING` refused the query or its answer (REFUSED + EDE 18).
    Hardened { reason: crate::dns::harden::Reason, note: String },
}

impl Refusal {
    /// The event `reason`.
    pub fn reason(&self) -> &str {
        match self {
            Refusal::Blocked { reason, .. } | Refusal::BlockedLink { reason, .. } => reason.as_str(),
            Refusal::Malformed(_) => "malformed-query",
            Refusal::NotImplemented(_) => "not-implemented",
            Refusal::Refused(_) => "class-not-allowed",
            Refusal::Guarded { .. } => guard::REASON,
            Refusal::Hardened { reason, .. } => reason.as_str(),
        }
    }

    /// The event `note`.
    pub fn note(&self) -> String {
        match self {
            // g0efilter's note for a blocked name answered NXDOMAIN (egret
            // answers NXDOMAIN for every type, so always this one).
            Refusal::Blocked { .. } => "nxdomain".to_owned(),
            Refusal::BlockedLink { link, .. } => format!("nxdomain; the answer leads through {link}"),
            Refusal::Malformed(why) | Refusal::NotImplemented(why) | Refusal::Refused(why) => why.clone(),
            // `<class> address <ip>`, as the proxies write it.
            Refusal::Guarded { guarded, .. } => guarded.to_string(),
            Refusal::Hardened { note, .. } => note.clone(),
        }
    }
}

/// A query that parsed, as far as the server needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueryInfo {
    pub id: u16,
    pub questions: Vec<Question>,
    /// The client sent an OPT record (RFC 6891), so a reply carries one.
    pub edns: bool,
    /// The largest UDP reply the client accepts.
    pub udp_max: u16,
    pub recursion_desired: bool,
    pub checking_disabled: bool,
    /// Audit mode: the refusal this query would have had; it is forwarded
    /// all the same and its event is `AUDIT` with this reason.
    pub audit: Option<Refusal>,
}

impl QueryInfo {
    /// The first question's name, lowercase, without the trailing dot
    /// (for events; the decision uses `policy::normalize`).
    pub fn qname(&self) -> String {
        self.questions.first().map(display_name).unwrap_or_default()
    }

    /// The first question's type (`A`, `AAAA`, `TXT`, …).
    pub fn qtype(&self) -> String {
        self.questions.first().map(|q| q.query_type().to_string()).unwrap_or_default()
    }
}

pub fn display_name(q: &Question) -> String {
    name_text(q.name())
}

/// Decides one query. Every question must be allowed: one blocked
/// question blocks the query (NXDOMAIN for every type, never a sinkhole
/// address).
pub fn decide(query: &[u8], policy: &Policy) -> Action {
    // Byte 2 holds QR; a message with QR set is a response, and answering
    // responses is how reflection loops start.
    if query.len() < 3 {
        return Action::Drop("shorter than a DNS header's id and flags");
    }
    if query[2] & 0x80 != 0 {
        return Action::Drop("a response, not a query");
    }
    let msg = match Message::from_vec(query) {
        Ok(m) => m,
        Err(e) => return formerr(query, format!("unreadable query: {e}"), None),
    };
    let udp_max = msg.edns.as_ref().map_or(CLASSIC_UDP_MAX, |e| e.max_payload().max(CLASSIC_UDP_MAX));
    let edns = msg.edns.is_some();
    let info = QueryInfo {
        id: msg.metadata.id,
        questions: msg.queries,
        edns,
        udp_max,
        recursion_desired: msg.metadata.recursion_desired,
        checking_disabled: msg.metadata.checking_disabled,
        audit: None,
    };
    if msg.metadata.message_type != MessageType::Query {
        return Action::Drop("a response, not a query");
    }
    if msg.metadata.op_code != OpCode::Query {
        let why = format!("opcode {} is not supported", msg.metadata.op_code);
        let rcode = ResponseCode::NotImp;
        let bytes = reply(&info, rcode, None).unwrap_or_else(|| header_reply(query, rcode));
        return Action::Answer(Answer {
            bytes,
            rcode,
            refusal: Refusal::NotImplemented(why),
            query: Some(info),
        });
    }
    if info.questions.is_empty() {
        return formerr(query, "no question".to_owned(), Some(info));
    }
    // RFC 9619: a query has one question. With two, the answer is learned
    // under the first while records of the second (a name with ports,
    // say) are neither links nor judged (round 14, escape_223).
    if info.questions.len() > 1 {
        return formerr(query, format!("{} questions (one is served)", info.questions.len()), Some(info));
    }
    for q in &info.questions {
        if q.query_class() != DNSClass::IN {
            let why = format!("class {} is not served", q.query_class());
            let rcode = ResponseCode::Refused;
            let text = format!("egret: {why}");
            let bytes = reply(&info, rcode, Some((EDE_PROHIBITED, &text)))
                .unwrap_or_else(|| header_reply(query, rcode));
            return Action::Answer(Answer {
                bytes,
                rcode,
                refusal: Refusal::Refused(why),
                query: Some(info),
            });
        }
    }
    let mut info = info;
    for q in &info.questions {
        let name = q.name().to_ascii();
        let d = policy.decide(Query { name: Some(&name), ip: None, port: None });
        // A name with ports (`tcp/db.example.com:5432`) resolves: its
        // answer is what opens those ports on its addresses.
        let with_ports = d.reason == crate::policy::Reason::DomainNotAllowed
            && d.name.as_deref().is_some_and(|n| !policy.ports_of_name(n).is_empty());
        if !d.allowed() && !with_ports {
            let shown = d.name.clone().unwrap_or_else(|| display_name(q));
            if policy.audit() {
                // Decided as in enforcement; forwarded all the same.
                info.audit = Some(Refusal::Blocked { name: shown, reason: d.reason });
                break;
            }
            let text = format!("egret: blocked by policy ({}: {})", shown, d.reason.as_str());
            let rcode = ResponseCode::NXDomain;
            let bytes =
                reply(&info, rcode, Some((EDE_BLOCKED, &text))).unwrap_or_else(|| header_reply(query, rcode));
            let refusal = Refusal::Blocked { name: shown, reason: d.reason };
            return Action::Answer(Answer { bytes, rcode, refusal, query: Some(info) });
        }
    }
    Action::Forward(info)
}

/// The SSRF guard on an accepted upstream answer: when one of its
/// addresses (A, AAAA, SVCB/HTTPS hints) is in a guarded class and not in
/// `allowlist.ips`, the answer the client gets instead, NXDOMAIN with an
/// EDE 15 naming the reason, as for a blocked name. The whole answer is
/// refused: handing out the other addresses would tell the client the
/// name works. Asked for every answer (DNS mode does not cache), so a
/// name that rebinds from a public address to a guarded one is refused
/// the moment it does.
///
/// Before the guard, the policy on the answer's chain: a CNAME or DNAME
/// target the denylist refuses (`alias.example` CNAME to a denylisted
/// `evil.example`) refuses the whole answer as a blocked name, the event
/// naming that link, so nothing past it is served or learned. A target
/// that is merely not allowlisted is served: in strict mode an allowed
/// name's CNAME target is commonly an unlisted CDN name.
pub fn guard_answer(info: &QueryInfo, upstream: &Reply, policy: &Policy, guard: &Guard) -> Option<Answer> {
    if let Some((link, reason)) = denied_link(upstream, policy) {
        let text = format!("egret: blocked by policy ({} via {link}: {})", info.qname(), reason.as_str());
        let rcode = ResponseCode::NXDomain;
        let bytes =
            reply(info, rcode, Some((EDE_BLOCKED, &text))).unwrap_or_else(|| info_header(info, rcode));
        let refusal = Refusal::BlockedLink { link, reason };
        return Some(Answer { bytes, rcode, refusal, query: Some(info.clone()) });
    }
    let guarded = guard.check_all(policy, upstream.addrs.iter().map(|(ip, _)| *ip))?;
    let name = info.qname();

    let text = format!("egret: blocked by policy ({name}: {}, {guarded})", guard::REASON);
    let rcode = ResponseCode::NXDomain;
    let bytes = reply(info, rcode, Some((EDE_BLOCKED, &text))).unwrap_or_else(|| info_header(info, rcode));
    Some(Answer { bytes, rcode, refusal: Refusal::Guarded { name, guarded }, query: Some(info.clone()) })
}

/// The first link of the answer's chain (a CNAME or DNAME target) that a
/// denylist entry refuses, with the reason.
pub fn denied_link(upstream: &Reply, policy: &Policy) -> Option<(String, Reason)> {
    denied_in(&upstream.chain, policy)
}

/// CNAME/DNAME targets judged one by one; a kept chain holds one more,
/// so a longer one is seen as such (the proxies' check cache, the learned
/// addresses), and under a denylist of names it is refused whole: its
/// links past the bound were never judged (round 8).
pub const MAX_LINKS: usize = 16;

/// The first of `chain`'s names (CNAME/DNAME targets) a denylist entry
/// refuses, with the reason: shared by DNS mode's answers, the proxies'
/// check lookups and the replay of learned addresses after a reload.
///
/// Under a denylist of names, a link that is not a host name egret can
/// read (`x!.evil.test`, a label with a space or NUL, a literal `*`) is
/// refused too: no entry can be matched against it, and the DNS carries
/// and resolvers follow such names (round 10, escape_171).
pub fn denied_in(chain: &[String], policy: &Policy) -> Option<(String, Reason)> {
    denied_within(chain, policy, MAX_LINKS)
}

/// [`denied_in`] for links kept over several answers ([`merge_links`]):
/// each answer's chain was within [`MAX_LINKS`] or is marked over-long,
/// so only a merge past [`MAX_KEPT`] (links dropped) or a marked answer
/// is refused for its length. An alias whose CDN rotates its links
/// between answers keeps its addresses at a reload (round 14,
/// escape_220/221).
pub fn denied_in_kept(links: &[String], policy: &Policy) -> Option<(String, Reason)> {
    match links.iter().any(|l| l == OVER_LONG) {
        true => denied_within(links, policy, 0),
        false => denied_within(links, policy, MAX_KEPT),
    }
}

fn denied_within(chain: &[String], policy: &Policy, bound: usize) -> Option<(String, Reason)> {
    let names_denied = !policy.denylist().names.is_empty();
    // With names with ports, a link past the bound may be one of them,
    // whose ports alone the answer may open (round 12, escape_200).
    if chain.len() > bound && (names_denied || !policy.name_ports().is_empty()) {
        return Some((format!("a chain of more than {} links", bound.max(MAX_LINKS)), Reason::Denylisted));
    }
    chain.iter().filter(|l| *l != OVER_LONG).find_map(|link| {
        let d = policy.decide(Query { name: Some(link), ip: None, port: None });
        match d.reason {
            _ if d.allowed() => None,
            Reason::Denylisted => Some((d.name.unwrap_or_else(|| link.clone()), d.reason)),
            Reason::InvalidName if names_denied => {
                Some((format!("a link egret cannot read ({link})"), Reason::Denylisted))
            }
            _ => None,
        }
    })
}

/// Links kept of one name's (or way's) answers, merged: at most this
/// many (and one more, to show the merge dropped some).
pub const MAX_KEPT: usize = 64;

/// Kept in place of a link when an answer's own chain was past
/// [`MAX_LINKS`]: no DNS name has a NUL.
const OVER_LONG: &str = "\0over-long chain";

/// Adds `chain`'s links not yet in `links`, up to [`MAX_KEPT`] + 1 (one
/// past the bound, so [`denied_in_kept`] sees the merge as over-long);
/// a chain itself past [`MAX_LINKS`] is marked with [`OVER_LONG`], so
/// the merge of it stays refused as it was. Shared by every keeper of
/// chains (the check cache, [`Chains`], `named::Opened`, tracked
/// connections).
pub fn merge_links(links: &mut Vec<String>, chain: &[String]) {
    if chain.len() > MAX_LINKS && !links.iter().any(|l| l == OVER_LONG) {
        links.push(OVER_LONG.to_owned());
    }
    merge_kept(links, chain);
}

/// Adds links kept elsewhere (merged already, with their mark) to
/// `links`: a copy between keepers, not an answer, so its length is not
/// an answer's (round 14: a replay's chunks re-merged a way's kept links
/// as one chain and marked them over-long).
pub fn merge_kept(links: &mut Vec<String>, kept: &[String]) {
    for link in kept {
        if !links.contains(link) && links.len() <= MAX_KEPT {
            links.push(link.clone());
        }
    }
}

/// The CNAME/DNAME targets each name's answers led through, merged over
/// its answers (at most [`MAX_LINKS`] + 1 per name, so an over-long chain
/// stays refused under a denylist of names). What is replayed after a
/// reload (learned addresses, opened named ports) is judged by them with
/// [`denied_in`]: a reload that denylists a link does not put the name's
/// addresses back.
#[derive(Debug, Default, Clone)]
pub struct Chains(std::collections::HashMap<String, Vec<String>>);

impl Chains {
    /// Remembers that an answer for `name` led through `chain`.
    pub fn record(&mut self, name: &str, chain: &[String]) {
        if chain.is_empty() {
            return;
        }
        merge_links(self.0.entry(name.to_owned()).or_default(), chain);
    }

    /// Adds links kept by another `Chains` for `name` ([`merge_kept`]).
    pub fn keep(&mut self, name: &str, kept: &[String]) {
        if !kept.is_empty() {
            merge_kept(self.0.entry(name.to_owned()).or_default(), kept);
        }
    }

    /// Whether no answer of `name` led through a link `policy` denylists.
    pub fn led_clean(&self, name: &str, policy: &Policy) -> bool {
        self.0.get(name).map_or(true, |c| denied_in_kept(c, policy).is_none())
    }

    /// The links recorded for `name` (empty when none).
    pub fn of(&self, name: &str) -> &[String] {
        self.0.get(name).map_or(&[], Vec::as_slice)
    }

    /// Keeps the chains of the names `live` says are still remembered.
    pub fn retain(&mut self, live: impl Fn(&str) -> bool) {
        self.0.retain(|n, _| live(n));
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    #[cfg(test)]
    pub fn knows(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }
}

/// A query (or its answer) `DNS_HARDENING` refused: REFUSED with an RFC
/// 8914 EDE 18 (Prohibited) naming why, when the client sent OPT.
pub fn hardened(info: &QueryInfo, r: &crate::dns::harden::Refusal) -> Answer {
    let text = format!("egret: refused ({}: {}, {})", info.qname(), r.reason.as_str(), r.note);
    let rcode = ResponseCode::Refused;
    let bytes = reply(info, rcode, Some((EDE_PROHIBITED, &text))).unwrap_or_else(|| info_header(info, rcode));
    let refusal = Refusal::Hardened { reason: r.reason, note: r.note.clone() };
    Answer { bytes, rcode, refusal, query: Some(info.clone()) }
}

fn formerr(query: &[u8], why: String, info: Option<QueryInfo>) -> Action {
    let rcode = ResponseCode::FormErr;
    Action::Answer(Answer {
        bytes: header_reply(query, rcode),
        rcode,
        refusal: Refusal::Malformed(why),
        query: info,
    })
}

/// A header-only reply to whatever header bytes there are: the query's ID,
/// opcode and RD, QR set, no records. Used when the query cannot be read.
pub fn header_reply(query: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    let n = query.len().min(3);
    out[..n].copy_from_slice(&query[..n]);
    // QR=1, keep OPCODE and RD, clear AA and TC.
    out[2] = 0x80 | (out[2] & 0x79);
    // RA=1, Z/AD/CD clear, the low four bits of the code.
    out[3] = 0x80 | (rcode.low() & 0x0f);
    out
}

/// A reply echoing the questions, with an OPT (and an EDE, if given) when
/// the client sent one. `None` if hickory cannot encode it (it can; the
/// caller falls back to a header-only reply rather than trusting that).
fn reply(info: &QueryInfo, rcode: ResponseCode, ede: Option<(u16, &str)>) -> Option<Vec<u8>> {
    let mut m = Message::response(info.id, OpCode::Query);
    m.metadata.recursion_desired = info.recursion_desired;
    m.metadata.recursion_available = true;
    m.metadata.checking_disabled = info.checking_disabled;
    m.metadata.response_code = rcode;
    m.add_queries(info.questions.iter().cloned());
    if info.edns {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        if let Some((code, text)) = ede {
            e.options_mut().insert(EdnsOption::Unknown(EDE_OPTION, ede_payload(code, text)));
        }
        m.set_edns(e);
    }
    m.to_vec().ok()
}

/// RFC 8914 §2: INFO-CODE (16 bits) then EXTRA-TEXT (UTF-8, not
/// NUL-terminated).
pub fn ede_payload(code: u16, text: &str) -> Vec<u8> {
    let mut v = code.to_be_bytes().to_vec();
    v.extend_from_slice(text.as_bytes());
    v
}

/// SERVFAIL for a forwarded query whose upstreams all failed.
pub fn servfail(info: &QueryInfo) -> Vec<u8> {
    let rcode = ResponseCode::ServFail;
    reply(info, rcode, None).unwrap_or_else(|| info_header(info, rcode))
}

/// A header-only reply to a parsed query (the ID and RD it had).
fn info_header(info: &QueryInfo, rcode: ResponseCode) -> Vec<u8> {
    let mut q = info.id.to_be_bytes().to_vec();
    q.push(if info.recursion_desired { 1 } else { 0 });
    header_reply(&q, rcode)
}

/// Why an upstream answer was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FilterError {
    /// Not a readable DNS message.
    Unreadable(String),
    /// QR is clear: the upstream sent a query back.
    NotAResponse,
    /// The question section differs from the query's (a spoofed or
    /// misrouted answer).
    QuestionMismatch,
}

impl fmt::Display for FilterError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            FilterError::Unreadable(e) => write!(f, "upstream answer unreadable: {e}"),
            FilterError::NotAResponse => write!(f, "upstream answer is not a response"),
            FilterError::QuestionMismatch => write!(f, "upstream answer is for a different question"),
        }
    }
}

impl std::error::Error for FilterError {}

/// What egret needs to know about an accepted upstream answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub rcode: ResponseCode,
    pub truncated: bool,
    /// A and AAAA addresses (and SVCB/HTTPS address hints) of the answer
    /// section with their TTLs in seconds, as the upstream gave them.
    pub addrs: Vec<(IpAddr, u32)>,
    /// Bytes of TXT data in the answer section (`DNS_MAX_TXT_BYTES`).
    pub txt_bytes: usize,
    /// The answer section's CNAME and DNAME targets, in order, lowercase
    /// without the trailing dot: the names the answer leads through.
    pub chain: Vec<String>,
}

/// Checks that `resp` answers exactly the questions of `info` and reads
/// its addresses. Names compare case-insensitively (RFC 4343).
pub fn check_response(resp: &[u8], info: &QueryInfo) -> Result<Reply, FilterError> {
    let msg = Message::from_vec(resp).map_err(|e| FilterError::Unreadable(e.to_string()))?;
    if msg.metadata.message_type != MessageType::Response {
        return Err(FilterError::NotAResponse);
    }
    let same = msg.queries.len() == info.questions.len()
        && msg.queries.iter().zip(&info.questions).all(|(a, b)| {
            a.query_type() == b.query_type()
                && a.query_class() == b.query_class()
                // hickory's `Name` equality ignores ASCII case (RFC 4343)
                // and allocates nothing.
                && a.name() == b.name()
        });
    if !same {
        return Err(FilterError::QuestionMismatch);
    }
    let mut addrs = Vec::new();
    if msg.metadata.response_code == ResponseCode::NoError {
        for r in &msg.answers {
            match &r.data {
                RData::A(a) => addrs.push((IpAddr::V4(a.0), r.ttl)),
                RData::AAAA(a) => addrs.push((IpAddr::V6(a.0), r.ttl)),
                // RFC 9460 §7.3: clients may connect to ipv4hint/ipv6hint
                // addresses before (or instead of) asking for A/AAAA.
                RData::HTTPS(HTTPS(svcb)) | RData::SVCB(svcb) => {
                    for (_, v) in &svcb.svc_params {
                        match v {
                            SvcParamValue::Ipv4Hint(h) => {
                                addrs.extend(h.0.iter().map(|a| (IpAddr::V4(a.0), r.ttl)))
                            }
                            SvcParamValue::Ipv6Hint(h) => {
                                addrs.extend(h.0.iter().map(|a| (IpAddr::V6(a.0), r.ttl)))
                            }
                            _ => {}
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let txt_bytes = msg
        .answers
        .iter()
        .map(|r| match &r.data {
            RData::TXT(t) => t.txt_data.iter().map(|s| s.len()).sum(),
            _ => 0,
        })
        .sum();
    let asked: Vec<String> = info.questions.iter().map(display_name).collect();
    let chain = answer_chain(&msg.answers, &asked);
    Ok(Reply {
        rcode: msg.metadata.response_code,
        truncated: msg.metadata.truncation,
        addrs,
        txt_bytes,
        chain,
    })
}

/// A name as the policy reads it: lowercase, no trailing dot.
/// Every name an answer leads through, besides the questions `asked`:
/// the owners of its records (an address is learned from any record in
/// the answer, so its owner is judged too), CNAME and DNAME targets, the
/// names a DNAME moves under its target (wherever in the answer the DNAME
/// is listed, DNAMEs of DNAMEs included, a root-owned one too; an
/// upstream may leave out the synthesised CNAME), and HTTPS/SVCB target
/// names, whose address hints are served and learned like A records
/// (rounds 10 and 11: escape_176, 179, 190–194, 196). Past
/// [`MAX_LINKS`] it stops growing: a longer chain is refused whole under
/// a denylist of names anyway.
fn answer_chain(answers: &[hickory_proto::rr::Record], asked: &[String]) -> Vec<String> {
    let mut chain: Vec<String> = Vec::new();
    let push = |chain: &mut Vec<String>, t: String| {
        let new = !chain.contains(&t) && !asked.contains(&t);
        if new && chain.len() <= MAX_LINKS {
            chain.push(t);
        }
        new
    };
    let mut dnames: Vec<(String, String)> = Vec::new();
    for r in answers {
        // A DNAME's owner is a suffix of the names it moves, no name the
        // answer leads to.
        if !matches!(r.data, RData::Unknown { code: RecordType::DNAME, .. }) {
            push(&mut chain, name_text(&r.name));
        }
        match &r.data {
            RData::CNAME(c) => {
                push(&mut chain, name_text(&c.0));
            }
            // hickory keeps DNAME as unknown data: its target is one
            // uncompressed name (RFC 6672 §2.5). An unreadable one adds
            // nothing; the CNAME synthesised beside it still counts.
            RData::Unknown { code: RecordType::DNAME, rdata } => {
                if let Ok(target) = Name::read(&mut BinDecoder::new(&rdata.anything)) {
                    let target = name_text(&target);
                    push(&mut chain, target.clone());
                    dnames.push((name_text(&r.name), target));
                }
            }
            RData::HTTPS(HTTPS(svcb)) | RData::SVCB(svcb) if !svcb.target_name.is_root() => {
                push(&mut chain, name_text(&svcb.target_name));
            }
            _ => {}
        }
    }
    // Every DNAME moves every name, until no new one comes (each round
    // adds one at least, and the chain is bounded).
    while !dnames.is_empty() && chain.len() <= MAX_LINKS {
        let names: Vec<String> = asked.iter().chain(chain.iter()).cloned().collect();
        let moved = names.iter().flat_map(|n| dnames.iter().filter_map(move |(o, t)| dname_rewrite(n, o, t)));
        let mut grew = false;
        for m in moved.collect::<Vec<_>>() {
            grew |= push(&mut chain, m);
        }
        if !grew {
            break;
        }
    }
    chain
}

/// `name` moved from below DNAME `owner` to below `target` (RFC 6672
/// §2.2), or `None` when it is not below `owner` (or the result is not a
/// name).
fn dname_rewrite(name: &str, owner: &str, target: &str) -> Option<String> {
    let prefix = if owner == "." { name } else { name.strip_suffix(owner)?.strip_suffix('.')? };
    let moved = format!("{prefix}.{target}");
    (!prefix.is_empty() && moved.len() <= 253).then_some(moved)
}

fn name_text(n: &Name) -> String {
    let s = n.to_ascii().to_ascii_lowercase();
    match s.strip_suffix('.') {
        Some(t) if !t.is_empty() => t.to_owned(),
        _ => s,
    }
}

/// A TTL in seconds clamped to `[min, max]` (`DNS_TTL_MIN`/`DNS_TTL_MAX`).
pub fn clamp_ttl(ttl: u32, min: Duration, max: Duration) -> Duration {
    Duration::from_secs(u64::from(ttl)).clamp(min, max.max(min))
}

/// The addresses to learn from a reply: deduplicated, each with the
/// longest clamped TTL any of its records gave.
pub fn learned(reply: &Reply, min: Duration, max: Duration) -> Vec<(IpAddr, Duration)> {
    let mut out: Vec<(IpAddr, Duration)> = Vec::new();
    for &(ip, ttl) in &reply.addrs {
        let t = clamp_ttl(ttl, min, max);
        match out.iter_mut().find(|(a, _)| *a == ip) {
            Some(e) => e.1 = e.1.max(t),
            None => out.push((ip, t)),
        }
    }
    out
}

/// The bytes a UDP client gets: the answer itself when it fits the
/// client's limit, else the header and questions with TC set so the
/// client retries over TCP (RFC 1035 §4.2.1, RFC 7766).
pub fn fit_udp(resp: Vec<u8>, info: &QueryInfo) -> Vec<u8> {
    if resp.len() <= usize::from(info.udp_max) {
        return resp;
    }
    let truncated = Message::from_vec(&resp).ok().and_then(|m| {
        let mut t = m.truncate();
        // The OPT's own payload size is egret's, not the upstream's.
        if let Some(e) = t.edns.as_mut() {
            e.set_max_payload(EDNS_PAYLOAD);
            *e.options_mut() = Default::default();
        }
        t.to_vec().ok()
    });
    truncated.filter(|t| t.len() <= usize::from(info.udp_max)).unwrap_or_else(|| {
        let mut h = header_reply(&resp, ResponseCode::from_low(resp.get(3).map_or(2, |b| b & 0x0f)));
        h[2] |= 0x02; // TC
        h
    })
}

/// Properties of this module on arbitrary bytes, for the `dns_query`
/// fuzz target and the corpus replay test; panics only when one breaks:
/// nothing panics; a forwarded query is a readable query whose every
/// question the policy allows; an answer is a response to the query's ID
/// with the rcode it claims; a UDP reply never exceeds the client's size.
#[doc(hidden)]
pub fn check_properties(data: &[u8]) {
    static POLICY: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
    let policy = POLICY.get_or_init(|| {
        let d = ["example.com".to_owned(), "*.allowed.test".to_owned()];
        let src = [crate::policy::Source { origin: crate::policy::Origin::Env("fuzz"), entries: &d }];
        Policy::compile(&[], &src).unwrap_or_default()
    });
    match decide(data, policy) {
        Action::Forward(info) => {
            assert!(data[2] & 0x80 == 0, "forwarded a response");
            let m = Message::from_vec(data).expect("forwarded an unreadable query");
            assert!(!info.questions.is_empty(), "forwarded a query without a question");
            assert_eq!(m.queries.len(), info.questions.len());
            for q in &info.questions {
                let name = q.name().to_ascii();
                assert!(
                    policy.decide(Query { name: Some(&name), ip: None, port: None }).allowed(),
                    "forwarded {name}"
                );
            }
            // The same query as an "answer" to itself is refused.
            assert_eq!(check_response(data, &info), Err(FilterError::NotAResponse));
            // With QR set it is one: its chain reads as policy names, and
            // a denylisted link refuses it, naming that link.
            static DENY: std::sync::OnceLock<Policy> = std::sync::OnceLock::new();
            let deny = DENY.get_or_init(|| {
                let raw = "default_action: allow\ndenylist:\n  domains: [\"*.allowed.test\"]\n";
                crate::policy::parse_yaml(raw, "fuzz")
                    .and_then(|r| crate::policy::compile_raw(r, "fuzz", &crate::policy::EnvLists::default()))
                    .unwrap_or_default()
            });
            let mut resp = data.to_vec();
            resp[2] |= 0x80;
            if let Ok(reply) = check_response(&resp, &info) {
                for link in &reply.chain {
                    assert_eq!(*link, link.to_ascii_lowercase(), "a chain link not lowercase");
                    assert!(link == "." || !link.ends_with('.'), "a chain link with its dot: {link}");
                }
                let refused = guard_answer(&info, &reply, deny, &Guard::OFF);
                let link = refused.as_ref().and_then(|a| match &a.refusal {
                    Refusal::BlockedLink { link, .. } => Some(link.clone()),
                    _ => None,
                });
                assert_eq!(link, denied_link(&reply, deny).map(|l| l.0), "the refusal names another link");
            }
            let out = fit_udp(data.to_vec(), &info);
            assert!(out.len() <= usize::from(info.udp_max).max(data.len()));
            if data.len() > usize::from(info.udp_max) {
                assert!(out.len() <= usize::from(info.udp_max), "udp reply over the client's size");
            }
        }
        Action::Answer(a) => {
            assert!(a.bytes.len() >= HEADER_LEN, "answer shorter than a header");
            assert_eq!(a.bytes[..2], data[..2], "answer with another id");
            assert!(a.bytes[2] & 0x80 != 0, "answer without QR");
            assert_eq!(a.bytes[3] & 0x0f, a.rcode.low(), "answer rcode differs from its claim");
            if matches!(a.refusal, Refusal::Blocked { .. }) {
                let m = Message::from_vec(&a.bytes).expect("blocked answer unreadable");
                assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
                assert!(m.answers.is_empty(), "a blocked answer carries records");
            }
        }
        Action::Drop(_) => assert!(data.len() < 3 || data[2] & 0x80 != 0, "dropped a query that has an id"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Source;
    use hickory_proto::op::Query as Q;
    use hickory_proto::rr::rdata::{A, AAAA, TXT};
    use hickory_proto::rr::{Name, Record, RecordType};

    fn policy(domains: &[&str]) -> Policy {
        let d: Vec<String> = domains.iter().map(|s| s.to_string()).collect();
        let src = [Source { origin: crate::policy::Origin::Env("ALLOWLIST_DOMAINS"), entries: &d }];
        Policy::compile(&[], &src).unwrap()
    }

    fn query(id: u16, qs: &[(&str, RecordType)], edns: bool) -> Vec<u8> {
        let mut m = Message::new(id, MessageType::Query, OpCode::Query);
        m.metadata.recursion_desired = true;
        for (n, t) in qs {
            m.add_query(Q::query(Name::from_ascii(n).unwrap(), *t));
        }
        if edns {
            let mut e = Edns::new();
            e.set_max_payload(4096);
            m.set_edns(e);
        }
        m.to_vec().unwrap()
    }

    fn ede_of(bytes: &[u8]) -> Option<(u16, String)> {
        let m = Message::from_vec(bytes).unwrap();
        let e = m.edns?;
        let opt = e.options().get(hickory_proto::rr::rdata::opt::EdnsCode::Unknown(EDE_OPTION))?;
        match opt {
            EdnsOption::Unknown(_, d) => {
                Some((u16::from_be_bytes([d[0], d[1]]), String::from_utf8(d[2..].to_vec()).unwrap()))
            }
            _ => None,
        }
    }

    /// (what, query bytes, expected outcome) where the outcome is
    /// "forward", "drop", or an rcode name.
    fn outcome(a: &Action) -> String {
        match a {
            Action::Forward(_) => "forward".into(),
            Action::Drop(_) => "drop".into(),
            Action::Answer(x) => x.rcode.to_str().to_owned(),
        }
    }

    #[test]
    fn decision_table() {
        let p = policy(&["example.com", "*.allowed.test"]);
        let many: Vec<(&str, RecordType)> = (0..40).map(|_| ("example.com.", RecordType::A)).collect();
        let mut chaos = Message::new(9, MessageType::Query, OpCode::Query);
        let mut cq = Q::query(Name::from_ascii("version.bind.").unwrap(), RecordType::TXT);
        cq.set_query_class(DNSClass::CH);
        chaos.add_query(cq);
        let mut notify = Message::new(10, MessageType::Query, OpCode::Notify);
        notify.add_query(Q::query(Name::from_ascii("example.com.").unwrap(), RecordType::SOA));
        let cases: Vec<(&str, Vec<u8>, &str)> = vec![
            ("allowed A", query(1, &[("example.com.", RecordType::A)], false), "forward"),
            ("allowed, mixed case", query(1, &[("ExAmPlE.CoM.", RecordType::AAAA)], true), "forward"),
            ("wildcard depth", query(1, &[("a.b.allowed.test.", RecordType::TXT)], false), "forward"),
            ("wildcard apex", query(1, &[("allowed.test.", RecordType::A)], false), "Non-Existent Domain"),
            ("blocked A", query(1, &[("evil.test.", RecordType::A)], true), "Non-Existent Domain"),
            ("blocked MX", query(1, &[("evil.test.", RecordType::MX)], false), "Non-Existent Domain"),
            ("blocked ANY", query(1, &[("evil.test.", RecordType::ANY)], false), "Non-Existent Domain"),
            ("root", query(1, &[(".", RecordType::NS)], false), "Non-Existent Domain"),
            (
                // RFC 9619 (round 14, escape_223): one question a query.
                "one of two blocked",
                query(1, &[("example.com.", RecordType::A), ("evil.test.", RecordType::A)], false),
                "Form Error",
            ),
            ("many allowed", query(1, &many, false), "Form Error"),
            ("no question", query(1, &[], false), "Form Error"),
            ("no question, edns", query(1, &[], true), "Form Error"),
            ("chaos class", chaos.to_vec().unwrap(), "Query Refused"),
            ("notify", notify.to_vec().unwrap(), "Not Implemented"),
            ("empty", vec![], "drop"),
            ("two bytes", vec![0x12, 0x34], "drop"),
            ("truncated header", vec![0x12, 0x34, 0x01, 0x00, 0x00], "Form Error"),
            (
                "a response",
                {
                    let mut q = query(1, &[("example.com.", RecordType::A)], false);
                    q[2] |= 0x80;
                    q
                },
                "drop",
            ),
            (
                "counts lie",
                {
                    let mut q = query(1, &[("example.com.", RecordType::A)], false);
                    q[5] = 3;
                    q
                },
                "Form Error",
            ),
        ];
        for (what, bytes, want) in cases {
            assert_eq!(outcome(&decide(&bytes, &p)), want, "{what}");
        }
    }

    #[test]
    fn blocked_is_nxdomain_with_ede_only_when_client_speaks_edns() {
        let p = policy(&["example.com"]);
        let Action::Answer(a) = decide(&query(0xbeef, &[("Evil.Test.", RecordType::A)], true), &p) else {
            panic!("not answered")
        };
        let m = Message::from_vec(&a.bytes).unwrap();
        assert_eq!(m.metadata.id, 0xbeef);
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.metadata.recursion_desired && m.metadata.recursion_available);
        assert_eq!(m.queries.len(), 1, "the question is echoed");
        let (code, text) = ede_of(&a.bytes).expect("EDE present");
        assert_eq!(code, EDE_BLOCKED);
        // g0efilter's vocabulary (issue 16): reason not-allowlisted, note nxdomain.
        assert_eq!(text, "egret: blocked by policy (evil.test: not-allowlisted)");
        assert_eq!(a.refusal.reason(), "not-allowlisted");
        assert_eq!(a.refusal.note(), "nxdomain");

        let Action::Answer(a) = decide(&query(7, &[("evil.test.", RecordType::TXT)], false), &p) else {
            panic!("not answered")
        };
        let m = Message::from_vec(&a.bytes).unwrap();
        assert_eq!(m.metadata.response_code, ResponseCode::NXDomain);
        assert!(m.edns.is_none(), "no OPT to a client that sent none (RFC 6891 §7)");
    }

    #[test]
    fn formerr_keeps_the_id() {
        for bytes in [vec![0xab, 0xcd, 0x01], vec![0xab, 0xcd, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0, 5, b'a']] {
            let Action::Answer(a) = decide(&bytes, &Policy::default()) else { panic!("not answered") };
            assert_eq!(a.rcode, ResponseCode::FormErr);
            assert_eq!(&a.bytes[..2], &[0xab, 0xcd]);
            assert_eq!(a.bytes[2] & 0x80, 0x80, "QR set");
            assert_eq!(a.bytes[2] & 0x01, 0x01, "RD copied");
            assert_eq!(a.bytes[3] & 0x0f, 1);
            assert_eq!(a.bytes.len(), HEADER_LEN);
        }
    }

    /// A compression pointer that points at itself, and two that point at
    /// each other: the reader must stop, not loop.
    #[test]
    fn compression_loops_are_formerr() {
        let mut self_loop = vec![0, 1, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        self_loop.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]);
        let mut pair = vec![0, 2, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0];
        pair.extend_from_slice(&[1, b'a', 0xc0, 16, 0xc0, 12, 0, 1, 0, 1]);
        for q in [self_loop, pair] {
            assert_eq!(outcome(&decide(&q, &policy(&["*"]))), "Form Error");
        }
    }

    /// Round 14 (escape_220/221): answers whose links rotate merge past
    /// 16 without being over-long; one answer past 16 stays refused
    /// merged; a merge past the kept bound is refused too.
    #[test]
    fn kept_chains_are_over_long_only_when_an_answer_was_or_links_were_dropped() {
        let p = crate::policy::compile_raw(
            crate::policy::parse_yaml(
                "allowlist:\n  domains: [\"*.test\", \"tcp/db.test:7001\"]\n",
                "t.yaml",
            )
            .unwrap(),
            "t.yaml",
            &crate::policy::EnvLists::default(),
        )
        .unwrap();
        let links = |p: &str, n: usize| (0..n).map(|i| format!("{p}{i}.cdn.test")).collect::<Vec<_>>();
        let mut kept = Vec::new();
        merge_links(&mut kept, &links("a", 9));
        merge_links(&mut kept, &links("b", 9));
        assert_eq!(kept.len(), 18);
        assert_eq!(
            denied_in(&kept, &p).map(|d| d.0).as_deref(),
            Some("a chain of more than 16 links"),
            "as one answer"
        );
        assert_eq!(denied_in_kept(&kept, &p), None, "two answers of 9 links each");
        let mut long = Vec::new();
        merge_links(&mut long, &links("c", MAX_LINKS + 1));
        assert!(denied_in_kept(&long, &p).is_some(), "one answer past the bound stays refused");
        merge_links(&mut long, &links("d", 3));
        assert!(denied_in_kept(&long, &p).is_some(), "and merged with others");
        let mut many = Vec::new();
        for i in 0..10 {
            merge_links(&mut many, &links(&format!("e{i}x"), 8));
        }
        assert_eq!(many.len(), MAX_KEPT + 1, "bounded");
        assert_eq!(denied_in_kept(&many, &p).map(|d| d.0).as_deref(), Some("a chain of more than 64 links"));
    }

    #[test]
    fn seeds_never_panic_and_never_forward_when_unreadable() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/fuzz/dns_query");
        let mut n = 0;
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let bytes = std::fs::read(&path).unwrap();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            check_properties(&bytes);
            let got = outcome(&decide(&bytes, &policy(&["*"])));
            // The file name says what to expect: forward-*, drop-*, formerr-*.
            let want = match name.split('-').next().unwrap() {
                "forward" => "forward",
                "drop" => "drop",
                "formerr" => "Form Error",
                "any" => continue,
                other => panic!("{name}: unknown prefix {other}"),
            };
            assert_eq!(got, want, "{name}");
            n += 1;
        }
        assert!(n >= 5, "seed corpus missing ({n} files)");
    }

    /// Deterministic pseudo-random inputs, and every prefix of a real
    /// query: no panic, and nothing unreadable is forwarded.
    #[test]
    fn random_bytes_and_prefixes() {
        let p = policy(&["*"]);
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for len in 0..600 {
            let mut buf = Vec::with_capacity(len % 300);
            for _ in 0..len % 300 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                buf.push(x as u8);
            }
            check_properties(&buf);
            if let Action::Forward(info) = decide(&buf, &p) {
                assert!(!info.questions.is_empty());
            }
        }
        let full = query(5, &[("a.example.com.", RecordType::AAAA)], true);
        for i in 0..full.len() {
            let o = outcome(&decide(&full[..i], &p));
            assert!(o == "drop" || o == "Form Error", "prefix {i}: {o}");
        }
        assert_eq!(outcome(&decide(&full, &p)), "forward");
    }

    fn answer(id: u16, name: &str, recs: Vec<Record>, tc: bool) -> Vec<u8> {
        let mut m = Message::response(id, OpCode::Query);
        m.add_query(Q::query(Name::from_ascii(name).unwrap(), RecordType::A));
        m.metadata.truncation = tc;
        for r in recs {
            m.add_answer(r);
        }
        m.to_vec().unwrap()
    }

    fn info_for(q: &[u8]) -> QueryInfo {
        match decide(q, &policy(&["*"])) {
            Action::Forward(i) => i,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn response_checks_and_addresses() {
        let info = info_for(&query(3, &[("www.example.com.", RecordType::A)], false));
        let n = Name::from_ascii("WWW.example.com.").unwrap();
        let recs = vec![
            Record::from_rdata(n.clone(), 300, RData::A(A::new(10, 200, 0, 2))),
            Record::from_rdata(n.clone(), 5, RData::AAAA(AAAA::new(0xfd00, 0x200, 0, 0, 0, 0, 0, 2))),
            Record::from_rdata(n.clone(), 9, RData::A(A::new(10, 200, 0, 2))),
            Record::from_rdata(n.clone(), 60, RData::TXT(TXT::new(vec!["x".into()]))),
        ];
        let r = check_response(&answer(3, "www.EXAMPLE.com.", recs, false), &info).unwrap();
        assert_eq!(r.rcode, ResponseCode::NoError);
        assert_eq!(r.addrs.len(), 3);
        let l = learned(&r, Duration::from_secs(30), Duration::from_secs(120));
        assert_eq!(
            l,
            vec![
                ("10.200.0.2".parse().unwrap(), Duration::from_secs(120)),
                ("fd00:200::2".parse().unwrap(), Duration::from_secs(30)),
            ]
        );
        assert_eq!(
            check_response(&answer(3, "other.example.com.", vec![], false), &info),
            Err(FilterError::QuestionMismatch)
        );
        assert!(matches!(check_response(&[1, 2, 3], &info), Err(FilterError::Unreadable(_))));
        assert_eq!(
            check_response(&query(3, &[("www.example.com.", RecordType::A)], false), &info),
            Err(FilterError::NotAResponse)
        );
        assert!(check_response(&answer(3, "www.example.com.", vec![], true), &info).unwrap().truncated);
    }

    #[test]
    fn https_record_hints_are_addresses() {
        use hickory_proto::rr::rdata::svcb::{IpHint, SvcParamKey, SVCB};
        let info = info_for(&query(4, &[("svc.example.com.", RecordType::A)], false));
        let n = Name::from_ascii("svc.example.com.").unwrap();
        let svcb = SVCB::new(
            1,
            Name::root(),
            vec![
                (SvcParamKey::Ipv4Hint, SvcParamValue::Ipv4Hint(IpHint(vec![A::new(192, 0, 2, 1)]))),
                (
                    SvcParamKey::Ipv6Hint,
                    SvcParamValue::Ipv6Hint(IpHint(vec![AAAA::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1)])),
                ),
            ],
        );
        let r = check_response(
            &answer(4, "svc.example.com.", vec![Record::from_rdata(n, 77, RData::HTTPS(HTTPS(svcb)))], false),
            &info,
        )
        .unwrap();
        assert_eq!(r.addrs, [("192.0.2.1".parse().unwrap(), 77), ("2001:db8::1".parse().unwrap(), 77)]);
    }

    /// The SSRF guard on answers: A, AAAA and SVCB/HTTPS hints; one
    /// guarded address refuses the whole answer with NXDOMAIN and the EDE;
    /// `allowlist.ips` and `GUARD_ADDRESSES=none` let it through.
    #[test]
    fn guarded_answers_are_nxdomain_with_the_reason() {
        use hickory_proto::rr::rdata::svcb::{IpHint, SvcParamKey, SVCB};
        let n = Name::from_ascii("meta.wild.example.").unwrap();
        let a =
            |x: [u8; 4]| Record::from_rdata(n.clone(), 60, RData::A(A::from(std::net::Ipv4Addr::from(x))));
        let aaaa = |x: &str| Record::from_rdata(n.clone(), 60, RData::AAAA(AAAA(x.parse().unwrap())));
        let hint = |x: [u8; 4]| {
            let svcb = SVCB::new(
                1,
                Name::root(),
                vec![(
                    SvcParamKey::Ipv4Hint,
                    SvcParamValue::Ipv4Hint(IpHint(vec![A::from(std::net::Ipv4Addr::from(x))])),
                )],
            );
            Record::from_rdata(n.clone(), 60, RData::HTTPS(HTTPS(svcb)))
        };
        let open = policy(&["*.wild.example"]);
        let d: Vec<String> = vec!["*.wild.example".into()];
        let i: Vec<String> = vec!["169.254.169.254".into()];
        let listed = Policy::compile(
            &[Source { origin: crate::policy::Origin::Env("ALLOWLIST_IPS"), entries: &i }],
            &[Source { origin: crate::policy::Origin::Env("ALLOWLIST_DOMAINS"), entries: &d }],
        )
        .unwrap();
        let default = Guard::default();
        let private = Guard::parse("default,private").unwrap();
        type Case<'a> = (&'a str, Vec<Record>, &'a Policy, &'a Guard, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "metadata",
                vec![a([169, 254, 169, 254])],
                &open,
                &default,
                Some("metadata address 169.254.169.254"),
            ),
            (
                "public first, guarded second",
                vec![a([203, 0, 113, 80]), a([127, 0, 0, 1])],
                &open,
                &default,
                Some("loopback address 127.0.0.1"),
            ),
            ("link-local v6", vec![aaaa("fe80::1")], &open, &default, Some("link-local address fe80::1")),
            (
                "mapped",
                vec![aaaa("::ffff:169.254.169.254")],
                &open,
                &default,
                Some("metadata address ::ffff:169.254.169.254"),
            ),
            ("svcb hint", vec![hint([127, 0, 0, 1])], &open, &default, Some("loopback address 127.0.0.1")),
            ("private, default guard", vec![a([10, 200, 0, 3])], &open, &default, None),
            (
                "private, opted in",
                vec![a([10, 200, 0, 3])],
                &open,
                &private,
                Some("private address 10.200.0.3"),
            ),
            ("public", vec![a([203, 0, 113, 80])], &open, &default, None),
            ("in allowlist.ips", vec![a([169, 254, 169, 254])], &listed, &default, None),
            ("guard off", vec![a([169, 254, 169, 254])], &open, &Guard::OFF, None),
        ];
        for (what, recs, pol, g, want) in cases {
            for edns in [true, false] {
                let info = info_for(&query(0x5151, &[("Meta.Wild.Example.", RecordType::A)], edns));
                let mut m = Message::response(0x5151, OpCode::Query);
                m.add_query(Q::query(n.clone(), RecordType::A));
                for r in &recs {
                    m.add_answer(r.clone());
                }
                let reply = check_response(&m.to_vec().unwrap(), &info).unwrap();
                let got = guard_answer(&info, &reply, pol, g);
                assert_eq!(got.as_ref().map(|a| a.refusal.note()).as_deref(), want, "{what}");
                let Some(a) = got else { continue };
                assert_eq!(a.refusal.reason(), "destination-guarded", "{what}");
                assert_eq!(a.rcode, ResponseCode::NXDomain);
                let m = Message::from_vec(&a.bytes).unwrap();
                assert_eq!(
                    (m.metadata.id, m.metadata.response_code),
                    (0x5151, ResponseCode::NXDomain),
                    "{what}"
                );
                assert!(m.answers.is_empty(), "{what}: no address leaves");
                assert_eq!(m.queries.len(), 1, "{what}: the question is echoed");
                match ede_of(&a.bytes) {
                    Some((code, text)) => {
                        assert!(edns, "{what}: an OPT only to a client that sent one");
                        assert_eq!(code, EDE_BLOCKED);
                        let want = format!(
                            "egret: blocked by policy (meta.wild.example: destination-guarded, {})",
                            want.unwrap()
                        );
                        assert_eq!(text, want, "{what}");
                    }
                    None => assert!(!edns, "{what}: the EDE is missing"),
                }
            }
        }
    }

    /// A name with its labels as given (`x!` is no host name label, and
    /// the DNS carries it); `.` is the root.
    fn chain_name(s: &str) -> Name {
        if s == "." {
            return Name::root();
        }
        let labels = s.trim_end_matches('.').split('.').map(|l| l.as_bytes().to_vec());
        let mut n = Name::from_labels(labels).unwrap();
        n.set_fqdn(true);
        n
    }

    fn cname_rr(from: &str, to: &str) -> Record {
        use hickory_proto::rr::rdata::CNAME;
        Record::from_rdata(chain_name(from), 60, RData::CNAME(CNAME(chain_name(to))))
    }

    /// A DNAME as hickory keeps it: unknown data holding the target.
    fn dname_rr(from: &str, to: &str) -> Record {
        let mut wire = Vec::new();
        let mut e = hickory_proto::serialize::binary::BinEncoder::new(&mut wire);
        hickory_proto::serialize::binary::BinEncodable::emit(&chain_name(to), &mut e).unwrap();
        let rdata = hickory_proto::rr::rdata::NULL::with(wire);
        Record::from_rdata(chain_name(from), 60, RData::Unknown { code: RecordType::DNAME, rdata })
    }

    fn a_rr(owner: &str) -> Record {
        Record::from_rdata(chain_name(owner), 60, RData::A(A::new(203, 0, 113, 9)))
    }

    /// Round 6, escape_83: a CNAME or DNAME target the denylist refuses
    /// refuses the answer, naming the link; an unlisted target does not.
    #[test]
    fn a_chain_through_a_denylisted_name_is_refused() {
        let compile = crate::policy::from_yaml;
        let default_allow =
            compile("default_action: allow\ndenylist:\n  domains: [\"*.evil.test\", \"evil.test\"]\n");
        let strict = compile("default_action: deny\nallowlist:\n  domains: [\"*.test\"]\ndenylist:\n  domains: [\"evil.test\"]\n");
        let (n, cname, dname, a) = (chain_name, cname_rr, dname_rr, a_rr);
        let https = |owner: &str, target: &str| {
            let svcb = hickory_proto::rr::rdata::SVCB::new(1, n(target), Vec::new());
            Record::from_rdata(n(owner), 60, RData::HTTPS(HTTPS(svcb)))
        };
        let subtree =
            compile("default_action: allow\ndenylist:\n  domains: [\"*.evil.test\", \"*.evil.example\"]\n");
        let ips_only = compile("default_action: allow\ndenylist:\n  ips: [\"192.0.2.1\"]\n");
        type Case<'a> = (&'a str, Vec<Record>, &'a Policy, Option<&'a str>);
        let cases: Vec<Case> = vec![
            (
                "direct",
                vec![cname("alias.test.", "Evil.Test."), a("evil.test.")],
                &default_allow,
                Some("evil.test"),
            ),
            (
                "second link",
                vec![
                    cname("alias.test.", "cdn.test."),
                    cname("cdn.test.", "x.evil.test."),
                    a("x.evil.test."),
                ],
                &default_allow,
                Some("x.evil.test"),
            ),
            ("dname", vec![dname("alias.test.", "evil.test.")], &default_allow, Some("evil.test")),
            ("strict", vec![cname("alias.test.", "evil.test."), a("evil.test.")], &strict, Some("evil.test")),
            // Not allowlisted is not denylisted: an unlisted CDN name.
            ("unlisted target", vec![cname("alias.test.", "cdn.example."), a("cdn.example.")], &strict, None),
            ("clean chain", vec![cname("alias.test.", "cdn.test."), a("cdn.test.")], &default_allow, None),
            // Round 10: a link no entry can be matched against (escape_171).
            (
                "unreadable link",
                vec![cname("alias.test.", "x!.evil.test."), a("x!.evil.test.")],
                &default_allow,
                Some("a link egret cannot read (x\\!.evil.test)"),
            ),
            (
                "unreadable link, nothing denylisted by name",
                vec![cname("alias.test.", "x!.evil.test."), a("x!.evil.test.")],
                &ips_only,
                None,
            ),
            // A DNAME without its synthesised CNAME: the question moved
            // under the target is judged (escape_176).
            ("dname rewrite", vec![dname("test.", "evil.example.")], &subtree, Some("alias.evil.example")),
            // An HTTPS record's target name (escape_179).
            ("https target", vec![https("alias.test.", "x.evil.test.")], &subtree, Some("x.evil.test")),
            ("https target, root", vec![https("alias.test.", ".")], &subtree, None),
        ];
        for (what, recs, pol, want) in cases {
            let info = info_for(&query(7, &[("alias.test.", RecordType::A)], true));
            let mut m = Message::response(7, OpCode::Query);
            m.add_query(Q::query(n("alias.test."), RecordType::A));
            for r in &recs {
                m.add_answer(r.clone());
            }
            let reply = check_response(&m.to_vec().unwrap(), &info).unwrap();
            let got = guard_answer(&info, &reply, pol, &Guard::default());
            let link = got.as_ref().and_then(|a| match &a.refusal {
                Refusal::BlockedLink { link, .. } => Some(link.as_str()),
                _ => None,
            });
            assert_eq!(link, want, "{what}: {reply:?}");
            let Some(a) = got else { continue };
            assert_eq!((a.rcode, a.refusal.reason()), (ResponseCode::NXDomain, "denylisted"), "{what}");
            assert_eq!(a.refusal.note(), format!("nxdomain; the answer leads through {}", want.unwrap()));
            let m = Message::from_vec(&a.bytes).unwrap();
            assert!(m.answers.is_empty(), "{what}: nothing past the link is served");
            let (_, text) = ede_of(&a.bytes).expect("ede");
            assert!(text.contains(&format!("alias.test via {}", want.unwrap())), "{what}: {text}");
        }
    }

    /// Round 11: DNAMEs apply wherever they are listed (escape_190), a
    /// root-owned one too (escape_194), and every record's owner is a
    /// link (escape_196).
    #[test]
    fn the_chain_holds_every_name_an_answer_leads_through() {
        let (cname, dname, a) = (cname_rr, dname_rr, a_rr);
        let asked = |q: &str| vec![q.to_owned()];
        let has = |chain: &[String], want: &str| chain.iter().any(|l| l == want);
        // Listed backwards: d3's DNAME moves the question to d4, d4's to evil.
        let c = answer_chain(
            &[dname("d4.test.", "evil.test."), dname("d3.test.", "d4.test.")],
            &asked("rev.d3.test"),
        );
        assert!(has(&c, "rev.evil.test"), "{c:?}");
        // A DNAME before the CNAME target it moves.
        let c = answer_chain(
            &[dname("d5.test.", "evil.test."), cname("late.test.", "late.d5.test.")],
            &asked("late.test"),
        );
        assert!(has(&c, "late.evil.test"), "{c:?}");
        // Owned by the root: every name moves.
        let c = answer_chain(&[dname(".", "evil.test.")], &asked("q.test"));
        assert!(has(&c, "q.test.evil.test"), "{c:?}");
        // An address whose owner nothing leads to.
        let c = answer_chain(&[a("x.evil.test.")], &asked("h3.test"));
        assert_eq!(c, ["x.evil.test"]);
        // An ordinary chain: the question is no link, each name once.
        let c = answer_chain(
            &[cname("www.test.", "cdn.test."), a("cdn.test."), a("cdn.test.")],
            &asked("www.test"),
        );
        assert_eq!(c, ["cdn.test"]);
        // A DNAME that moves names below itself stops at the bound.
        let c = answer_chain(&[dname("a.test.", "b.a.test.")], &asked("x.a.test"));
        assert_eq!(c.len(), MAX_LINKS + 1, "{c:?}");
    }

    #[test]
    fn ttl_clamp_table() {
        let (min, max) = (Duration::from_secs(30), Duration::from_secs(3600));
        for (ttl, want) in [(0, 30), (29, 30), (30, 30), (300, 300), (3600, 3600), (u32::MAX, 3600)] {
            assert_eq!(clamp_ttl(ttl, min, max), Duration::from_secs(want), "{ttl}");
        }
    }

    #[test]
    fn oversized_udp_answers_are_truncated() {
        let info = info_for(&query(3, &[("big.example.com.", RecordType::A)], false));
        let n = Name::from_ascii("big.example.com.").unwrap();
        let recs: Vec<Record> =
            (0..60).map(|i| Record::from_rdata(n.clone(), 60, RData::A(A::new(10, 0, 0, i)))).collect();
        let big = answer(3, "big.example.com.", recs, false);
        assert!(big.len() > 512);
        let out = fit_udp(big.clone(), &info);
        assert!(out.len() <= 512);
        let m = Message::from_vec(&out).unwrap();
        assert!(m.metadata.truncation);
        assert_eq!(m.metadata.id, 3);
        assert_eq!(m.queries.len(), 1);
        let small = answer(3, "big.example.com.", vec![], false);
        assert_eq!(fit_udp(small.clone(), &info), small);
    }

    #[test]
    fn servfail_echoes_question() {
        let info = info_for(&query(77, &[("x.example.com.", RecordType::A)], true));
        let m = Message::from_vec(&servfail(&info)).unwrap();
        assert_eq!((m.metadata.id, m.metadata.response_code), (77, ResponseCode::ServFail));
        assert!(m.edns.is_some());
        assert_eq!(m.queries.len(), 1);
    }
}
