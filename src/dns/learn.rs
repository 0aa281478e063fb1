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

    /// As [`Learn::learn`], with the answer's chain (its CNAME/DNAME
    /// targets, [`crate::dns::filter::Reply::chain`]): a learner that
    /// opens addresses by name hears where the answer led.
    fn learn_answer(
        &self,
        name: &str,
        chain: &[String],
        ips: &[(IpAddr, Duration)],
    ) -> Result<(), LearnError> {
        let _ = chain;
        self.learn(name, ips)
    }
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

    fn learn_answer(
        &self,
        name: &str,
        chain: &[String],
        ips: &[(IpAddr, Duration)],
    ) -> Result<(), LearnError> {
        self.0.iter().try_for_each(|l| l.learn_answer(name, chain, ips))
    }
}

use crate::nft::ruleset::{SET_LEARNED4 as SET4, SET_LEARNED6 as SET6, TABLE};

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
    /// The CNAME/DNAME targets each name's answers led through: a reload
    /// that denylists one does not replay the name's addresses.
    chains: crate::dns::filter::Chains,
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
        self.add_chained(name, &[], ips, now)
    }

    /// As [`Learned::add`], remembering the answer's chain.
    pub fn add_chained(
        &mut self,
        name: &str,
        chain: &[String],
        ips: &[(IpAddr, Duration)],
        now: std::time::Instant,
    ) -> Vec<(IpAddr, Duration)> {
        // Expired entries are dropped every so often, not on every add;
        // before this answer's chain is recorded, which the prune would
        // otherwise forget (its name has no address yet; round 9).
        self.adds += 1;
        if self.adds % 256 == 0 {
            self.prune(now);
        }
        self.chains.record(name, chain);
        ips.iter()
            .map(|&(ip, ttl)| {
                let exp = now + ttl;
                let names = self.by_ip.entry(ip).or_default();
                keep_latest(names, name, exp);
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
        let chains = &self.chains;
        // Judged once per name, not once per address (a name may have
        // given thousands; round 11, escape_195).
        let mut judged: std::collections::HashMap<String, bool> = std::collections::HashMap::new();
        let mut still = |n: &str| -> bool {
            if let Some(&ok) = judged.get(n) {
                return ok;
            }
            // Nor a name whose chain now leads through a name with ports:
            // a fresh answer would open its addresses on those ports
            // only, not on every port (round 10, escape_180); it opens
            // them when it is asked again.
            let ok = policy.decide(Query { name: Some(n), ip: None, port: None }).allowed()
                && chains.led_clean(n, policy)
                && crate::named::port_links(policy, chains.of(n)).is_empty();
            judged.insert(n.to_owned(), ok);
            ok
        };
        self.by_ip.retain(|ip, names| {
            if guard.check(policy, *ip).is_some() {
                return false;
            }
            names.retain(|(n, exp)| *exp > now && still(n));
            if let Some(latest) = names.iter().map(|(_, e)| *e).max() {
                out.push((*ip, latest.saturating_duration_since(now)));
            }
            !names.is_empty()
        });
        self.forget_chains();
        out.sort();
        out
    }

    /// `self`'s entries in chunks of at most `n` addresses, each with the
    /// chains of its names: what [`Learned::absorb`] takes back.
    pub fn into_chunks(self, n: usize) -> Vec<Learned> {
        let mut out: Vec<Learned> = Vec::new();
        for (ip, names) in self.by_ip {
            if out.last().map_or(true, |c| c.by_ip.len() >= n.max(1)) {
                out.push(Learned::default());
            }
            let part = out.last_mut().expect("pushed above");
            for (name, _) in &names {
                part.chains.keep(name, self.chains.of(name));
            }
            part.by_ip.insert(ip, names);
        }
        out
    }

    /// Takes `part`'s entries in (each address keeps its latest expiry,
    /// each name its chain links) and returns its addresses with the time
    /// they have left now.
    pub fn absorb(&mut self, part: Learned, now: std::time::Instant) -> Vec<(IpAddr, Duration)> {
        let mut out = Vec::with_capacity(part.by_ip.len());
        for (ip, names) in part.by_ip {
            let mine = self.by_ip.entry(ip).or_default();
            for (name, exp) in names {
                self.chains.keep(&name, part.chains.of(&name));
                keep_latest(mine, &name, exp);
            }
            if let Some(latest) = mine.iter().map(|(_, e)| *e).filter(|e| *e > now).max() {
                out.push((ip, latest - now));
            }
        }
        out
    }

    pub fn prune(&mut self, now: std::time::Instant) {
        self.by_ip.retain(|_, names| {
            names.retain(|(_, exp)| *exp > now);
            !names.is_empty()
        });
        self.forget_chains();
    }

    /// Drops the chains of names no address remembers any more.
    fn forget_chains(&mut self) {
        if self.chains.is_empty() {
            return;
        }
        let live: std::collections::HashSet<&str> =
            self.by_ip.values().flatten().map(|(n, _)| n.as_str()).collect();
        self.chains.retain(|n| live.contains(n));
    }

    /// Addresses remembered.
    pub fn len(&self) -> usize {
        self.by_ip.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_ip.is_empty()
    }
}

/// Records that `name` gave an address until `exp`, keeping the later of
/// two expiries for the same name.
fn keep_latest(names: &mut Vec<(String, std::time::Instant)>, name: &str, exp: std::time::Instant) {
    match names.iter_mut().find(|(n, _)| n == name) {
        Some(e) => e.1 = e.1.max(exp),
        None => names.push((name.to_owned(), exp)),
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
    /// The live policy: an answer for a name with ports opens its
    /// addresses on those ports only; one for an allowed name, on all.
    policy: crate::policy::PolicyHandle,
}

struct NftState {
    /// The kernel path's own socket and encoder (`nft::LearnedSets`); a
    /// fresh one after any error.
    sets: Option<crate::nft::LearnedSets>,
    learned: Learned,
    /// The answers of names with ports, for the replay.
    named: crate::named::Opened,
}

impl NftLearner {
    /// Opens the netfilter netlink socket (needs CAP_NET_ADMIN in the
    /// namespace whose ruleset it fills: the caller's).
    pub fn new(guard: Guard, policy: crate::policy::PolicyHandle) -> Result<NftLearner, LearnError> {
        let sets = open()?;
        Ok(NftLearner {
            state: std::sync::Mutex::new(NftState {
                sets: Some(sets),
                learned: Learned::default(),
                named: crate::named::Opened::default(),
            }),
            guard,
            policy,
        })
    }
}

fn open() -> Result<crate::nft::LearnedSets, LearnError> {
    crate::nft::LearnedSets::open().map_err(|e| LearnError(e.to_string()))
}

impl Learn for NftLearner {
    fn learn(&self, name: &str, ips: &[(IpAddr, Duration)]) -> Result<(), LearnError> {
        self.learn_answer(name, &[], ips)
    }

    fn learn_answer(
        &self,
        name: &str,
        chain: &[String],
        ips: &[(IpAddr, Duration)],
    ) -> Result<(), LearnError> {
        if ips.is_empty() {
            return Ok(());
        }
        // A panic elsewhere cannot leave the state half-written in a way
        // that matters: the worst is a stale expiry, corrected by the
        // kernel's own timeout.
        let mut st = self.lock();
        let now = std::time::Instant::now();
        // Read under the state lock, which a reload holds from the ruleset
        // swap to the replay ([`NftLearner::replay_after`]): this is the
        // policy of the ruleset the answer goes into. The DNS server
        // judged the answer's chain under the policy it read, perhaps the
        // one just replaced (round 10, escape_174): judged again here.
        let policy = self.policy.current();
        if !policy.audit() {
            // The SSRF guard too, under the policy in force: a reload may
            // have taken away the `allowlist.ips` entry that let the
            // server pass the answer (round 12, escape_201).
            if let Some((ip, _)) = ips.iter().find(|(ip, _)| self.guard.check(&policy, *ip).is_some()) {
                return Err(LearnError(format!(
                    "not learned: {ip} is guarded under the policy now in force"
                )));
            }
            if let Some((link, _)) = crate::dns::filter::denied_in(chain, &policy) {
                return Err(LearnError(format!(
                    "not learned: the answer leads through {link}, which a reload just denylisted"
                )));
            }
        }
        let name = crate::policy::normalize(name).unwrap_or_else(|_| name.to_owned());
        // A name with ports is forwarded for its ports: its addresses open
        // there only, unless a domain entry allows the name on every port.
        let named = crate::named::elements(&policy, &self.guard, &name, ips);
        if !named.is_empty() {
            st.named.add(&name, &name, chain, ips, now);
            install_named(&mut st, &named)?;
        }
        // (Audit mode forwards refused names too; the ruleset passes
        // everything then, and learning goes on as before.)
        if !policy.audit() && !policy.decide(Query { name: Some(&name), ip: None, port: None }).allowed() {
            return Ok(());
        }
        // An answer that led through a name with ports (alias CNAME
        // `tcp/db.example:5432`'s name) opens its addresses on that
        // name's ports only: the allowed question does not widen them.
        let links = if policy.audit() { Vec::new() } else { crate::named::port_links(&policy, chain) };
        if !links.is_empty() {
            // Replayed under the link's name, judged by the whole way
            // there: the question (still allowed?) and every link.
            for link in &links {
                let named = crate::named::elements(&policy, &self.guard, link, ips);
                st.named.add(link, &name, chain, ips, now);
                install_named(&mut st, &named)?;
            }
            return Ok(());
        }
        let ips = st.learned.add_chained(&name, chain, ips, now);
        install(&mut st, &ips)
    }
}

impl NftLearner {
    /// After the ruleset was replaced (a policy reload empties the learned
    /// sets): puts back the addresses of names `policy` still allows, with
    /// the time they have left. Returns how many.
    pub fn replay(&self, policy: &Policy) -> Result<usize, LearnError> {
        let st = self.lock();
        self.replay_from(st, policy)
    }

    /// A reload: runs `swap` (apply the new ruleset, put the new policy
    /// in force; `None` when that failed) and replays under the policy it
    /// returns, with no answer learned in between. An answer learned
    /// between the apply and the replay under the policy being replaced
    /// went into the new ruleset unjudged by it (round 10, escape_174).
    pub fn replay_after(
        &self,
        swap: &mut dyn FnMut() -> Option<std::sync::Arc<Policy>>,
    ) -> Option<Result<usize, LearnError>> {
        let st = self.lock();
        let policy = swap()?;
        Some(self.replay_from(st, &policy))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, NftState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replays the named ports while `st` is held, then the learned
    /// addresses [`REPLAY_CHUNK`] at a time, each chunk under the lock:
    /// the lock is not held for the whole judging and install (a workload
    /// that had 600,000 addresses learned held every tenant's answers for
    /// seconds; round 11, escape_195), and an address learned again
    /// meanwhile keeps its latest expiry.
    fn replay_from(
        &self,
        mut st: std::sync::MutexGuard<'_, NftState>,
        policy: &Policy,
    ) -> Result<usize, LearnError> {
        let now = std::time::Instant::now();
        // What was learned and opened is taken out whole; answers learned
        // meanwhile start afresh under the new policy. The learned
        // addresses are judged without the lock; both go back, and into
        // the kernel, a chunk per lock hold (the named ports too: round
        // 12, escape_206).
        let mut old = std::mem::take(&mut st.learned);
        let opened = std::mem::take(&mut st.named);
        drop(st);
        let kept = old.still_allowed(policy, &self.guard, now).len();
        let mut named = 0;
        for part in opened.into_chunks(REPLAY_CHUNK) {
            let mut st = self.lock();
            let elems = st.named.absorb(part, policy, &self.guard, std::time::Instant::now());
            named += elems.len();
            install_named(&mut st, &elems)?;
            drop(st);
            pause();
        }
        for part in old.into_chunks(REPLAY_CHUNK) {
            let mut st = self.lock();
            let back = st.learned.absorb(part, std::time::Instant::now());
            install(&mut st, &back)?;
            drop(st);
            pause();
        }
        Ok(kept + named)
    }
}

/// Learned addresses (and opened named-port entries) put back per lock
/// hold after a reload.
const REPLAY_CHUNK: usize = 4096;

/// Between two chunks of a replay: the lock is not fair, and without a
/// pause the loop takes it back before a waiting answer's thread woke.
fn pause() {
    std::thread::sleep(Duration::from_micros(200));
}

fn install_named(st: &mut NftState, elems: &[crate::nft::netlink::NamedElem]) -> Result<(), LearnError> {
    if elems.is_empty() {
        return Ok(());
    }
    if st.sets.is_none() {
        st.sets = Some(open()?);
    }
    let result = match &mut st.sets {
        Some(sets) => {
            sets.add_named(elems).map_err(|e| LearnError(format!("nft add element (named ports): {e}")))
        }
        None => Err(LearnError("no netlink socket".into())),
    };
    if result.is_err() {
        st.sets = None;
    }
    result
}

fn install(st: &mut NftState, ips: &[(IpAddr, Duration)]) -> Result<(), LearnError> {
    if ips.is_empty() {
        return Ok(());
    }
    if st.sets.is_none() {
        st.sets = Some(open()?);
    }
    let result = match &mut st.sets {
        Some(sets) => sets.add(ips).map_err(|e| {
            let hint = match e {
                crate::nft::NftError::Kernel { errno: nix::errno::Errno::ENOENT, .. } => {
                    format!(" (is table inet {TABLE} with sets {SET4}/{SET6} installed?)")
                }
                _ => String::new(),
            };
            LearnError(format!("nft add element: {e}{hint}"))
        }),
        None => Err(LearnError("no netlink socket".into())),
    };
    if result.is_err() {
        // Start from a fresh socket next time (no stale acks).
        st.sets = None;
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

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

    /// An address learned through a chain does not come back after a
    /// reload that denylists a link of it, though the question is still
    /// allowed; the same address under another name does.
    #[test]
    fn a_reload_does_not_replay_a_chain_through_a_newly_denylisted_link() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let evil: IpAddr = "203.0.113.66".parse().unwrap();
        let shared: IpAddr = "203.0.113.67".parse().unwrap();
        let mut l = Learned::default();
        l.add_chained("alias.test", &["evil.test".into()], &[(evil, s(300)), (shared, s(300))], t0);
        l.add("plain.test", &[(shared, s(100))], t0);
        let compile = crate::policy::from_yaml;
        let before = compile("default_action: deny\nallowlist:\n  domains: [\"*.test\"]\n");
        let after = compile(
            "default_action: deny\nallowlist:\n  domains: [\"*.test\"]\ndenylist:\n  domains: [\"evil.test\"]\n",
        );
        let g = Guard::default();
        assert_eq!(l.clone().still_allowed(&before, &g, t0), [(evil, s(300)), (shared, s(300))]);
        assert_eq!(
            l.still_allowed(&after, &g, t0),
            [(shared, s(100))],
            "only plain.test's address, for its time"
        );
        assert!(!l.chains.knows("alias.test"), "a forgotten name's chain is dropped");
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

    /// Round 11 (escape_195): the replay's chunks go back whole, and an
    /// address learned again meanwhile keeps its later expiry.
    #[test]
    fn chunks_absorbed_keep_every_address_chain_and_latest_expiry() {
        let t0 = std::time::Instant::now();
        let ip = |i: u8| -> IpAddr { format!("198.51.100.{i}").parse().unwrap() };
        let mut old = Learned::default();
        for i in 1..=10 {
            old.add_chained("alias.test", &["cdn.test".into()], &[(ip(i), Duration::from_secs(60))], t0);
        }
        let parts = old.into_chunks(3);
        assert_eq!(parts.iter().map(|p| p.len()).collect::<Vec<_>>(), [3, 3, 3, 1]);
        let mut fresh = Learned::default();
        fresh.add("other.test", &[(ip(1), Duration::from_secs(600))], t0);
        let back: Vec<(IpAddr, Duration)> = parts.into_iter().flat_map(|p| fresh.absorb(p, t0)).collect();
        assert_eq!(back.len(), 10);
        assert!(back.contains(&(ip(1), Duration::from_secs(600))), "the later expiry stays: {back:?}");
        assert!(back.contains(&(ip(2), Duration::from_secs(60))));
        let deny = crate::policy::from_yaml("default_action: allow\ndenylist:\n  domains: [\"cdn.test\"]\n");
        let kept = fresh.still_allowed(&deny, &Guard::default(), t0);
        assert_eq!(kept, [(ip(1), Duration::from_secs(600))], "the chain came back with the chunks");
    }

    /// Round 10: a reload that gives a link of the chain ports does not
    /// replay the alias's address on every port (escape_180).
    #[test]
    fn a_reload_that_gives_a_link_ports_does_not_replay_the_alias() {
        let t0 = std::time::Instant::now();
        let a: IpAddr = "198.51.100.3".parse().unwrap();
        let mut l = Learned::default();
        l.add_chained("alias.test", &["evil.test".into()], &[(a, Duration::from_secs(60))], t0);
        let same = crate::policy::from_yaml("allowlist:\n  domains: [\"alias.test\"]\n");
        assert_eq!(l.clone().still_allowed(&same, &Guard::default(), t0).len(), 1, "control");
        let ported =
            crate::policy::from_yaml("allowlist:\n  domains: [\"alias.test\", \"tcp/evil.test:7001\"]\n");
        assert!(l.still_allowed(&ported, &Guard::default(), t0).is_empty());
    }

    /// Round 9: the answer that triggers the periodic prune keeps its
    /// chain, so a reload that denylists its link does not replay it.
    #[test]
    fn the_answer_that_prunes_keeps_its_chain() {
        let t0 = std::time::Instant::now();
        let ttl = Duration::from_secs(60);
        let mut l = Learned::default();
        for i in 0..255 {
            l.add(&format!("n{i}.test"), &[(format!("192.0.2.{}", i % 200 + 1).parse().unwrap(), ttl)], t0);
        }
        let a: IpAddr = "198.51.100.3".parse().unwrap();
        l.add_chained("alias.test", &["evil.test".into()], &[(a, ttl)], t0);
        let p = crate::policy::from_yaml("default_action: allow\ndenylist:\n  domains: [\"evil.test\"]\n");
        let back = l.still_allowed(&p, &Guard::default(), t0);
        assert!(!back.iter().any(|(ip, _)| *ip == a), "replayed through evil.test: {back:?}");
        assert_eq!(back.len(), 200, "the others come back");
    }
}
