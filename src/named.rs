//! Names with ports (`tcp/db.example.com:5432`): what their answers open,
//! and when egret asks again. Pure: time is passed in; the shells are
//! `dns::learn` (strict DNS mode: the answers egret's resolver hands out)
//! and `resolve::named` (HTTPS mode: egret resolves the names itself).
//!
//! An answer's address becomes reachable on the entry's protocol and
//! ports only, for the answer's TTL (already clamped to `DNS_TTL_MIN` /
//! `DNS_TTL_MAX`), as `addr . proto . port-range` elements of
//! `named_ports4`/`named_ports6`, each with its own timeout. The SSRF
//! guard applies as to any allowed name: a guarded address is never
//! installed unless `allowlist.ips` lists it.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::nft::netlink::NamedElem;
use crate::policy::{Guard, Policy};

/// The elements `ips` (an answer for the normalised `name`, each address
/// with its clamped TTL) open under `policy`: every address the guard
/// lets through, on every protocol and port range of the name's entries.
pub fn elements(policy: &Policy, guard: &Guard, name: &str, ips: &[(IpAddr, Duration)]) -> Vec<NamedElem> {
    let entries = policy.ports_of_name(name);
    let mut out = Vec::new();
    for &(ip, ttl) in ips {
        let ip = crate::policy::cidr::canonical(ip);
        if guard.check(policy, ip).is_some() {
            continue;
        }
        for np in &entries {
            for proto in np.protos() {
                out.push(NamedElem { ip, proto: proto.number(), ports: np.ports, timeout_ms: millis(ttl) });
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// The links of an answer's chain (its CNAME/DNAME targets) that are
/// names with ports and not allowed otherwise, normalised: an allowed
/// question's answer that leads through one opens its addresses on
/// those links' ports only, not on every port (strict DNS mode).
pub fn port_links(policy: &Policy, chain: &[String]) -> Vec<String> {
    let mut out: Vec<String> = chain
        .iter()
        .filter_map(|link| crate::policy::normalize(link).ok())
        .filter(|link| {
            let d = policy.decide(crate::policy::Query { name: Some(link), ip: None, port: None });
            !d.allowed() && !policy.ports_of_name(link).is_empty()
        })
        .collect();
    out.dedup();
    out
}

fn millis(d: Duration) -> u64 {
    d.as_millis().clamp(1, u128::from(u64::MAX)) as u64
}

/// One way to an opened address: the name with ports whose ports it
/// opens, and the question whose answer led there (the name itself when
/// it was asked), whose chain is the answer's links without the
/// question: the question is judged by itself, as a question (still
/// allowed?). Each way keeps its own chain: seventeen aliases of one
/// name with ports are seventeen short chains, not one merged past
/// [`MAX_LINKS`](crate::dns::filter::MAX_LINKS) and refused whole at the
/// next reload (round 12, escape_207).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Route {
    name: String,
    asked: String,
}

/// What has been opened, per way there and address, until when, and the
/// chain each way's answers led through: replayed after a ruleset
/// replace (which empties the sets) for names the new policy still gives
/// ports, by the ways whose chains it does not denylist.
#[derive(Debug, Default, Clone)]
pub struct Opened {
    until: HashMap<(Route, IpAddr), Instant>,
    chains: HashMap<Route, Vec<String>>,
}

impl Opened {
    /// Records an answer to the question `asked` that opens `ips` on the
    /// ports of `name` and led through `chain`; an address keeps its
    /// latest expiry.
    pub fn add(
        &mut self,
        name: &str,
        asked: &str,
        chain: &[String],
        ips: &[(IpAddr, Duration)],
        now: Instant,
    ) {
        self.add_route(Route { name: name.to_owned(), asked: asked.to_owned() }, chain, false, ips, now);
    }

    /// As [`Opened::add`] for a lookup of `name` itself whose chain is kept
    /// already ([`crate::resolve::Answer::chain`]: HTTPS mode).
    pub fn add_kept(&mut self, name: &str, kept: &[String], ips: &[(IpAddr, Duration)], now: Instant) {
        self.add_route(Route { name: name.to_owned(), asked: name.to_owned() }, kept, true, ips, now);
    }

    fn add_route(
        &mut self,
        route: Route,
        chain: &[String],
        kept: bool,
        ips: &[(IpAddr, Duration)],
        now: Instant,
    ) {
        self.until.retain(|_, t| *t > now);
        match kept {
            true => self.keep(&route, chain),
            false => self.record(&route, chain),
        }
        if !self.chains.is_empty() {
            let live: std::collections::HashSet<&Route> = self.until.keys().map(|(r, _)| r).collect();
            self.chains.retain(|r, _| *r == route || live.contains(r));
        }
        for &(ip, ttl) in ips {
            let t = self.until.entry((route.clone(), crate::policy::cidr::canonical(ip))).or_insert(now);
            *t = (*t).max(now + ttl);
        }
    }

    fn record(&mut self, route: &Route, chain: &[String]) {
        if !chain.is_empty() {
            crate::dns::filter::merge_links(self.chains.entry(route.clone()).or_default(), chain);
        }
    }

    /// Adds links another `Opened` kept for `route` (not an answer's).
    fn keep(&mut self, route: &Route, kept: &[String]) {
        if !kept.is_empty() {
            crate::dns::filter::merge_kept(self.chains.entry(route.clone()).or_default(), kept);
        }
    }

    /// Every live answer with its time left, by way there.
    fn live(&self, now: Instant) -> HashMap<&Route, Vec<(IpAddr, Duration)>> {
        let mut by: HashMap<&Route, Vec<(IpAddr, Duration)>> = HashMap::new();
        for ((route, ip), t) in &self.until {
            if *t > now {
                by.entry(route).or_default().push((*ip, t.saturating_duration_since(now)));
            }
        }
        by
    }

    /// `self`'s entries in chunks of at most `n`, each with the chains of
    /// its ways: what [`Opened::absorb`] takes back.
    pub fn into_chunks(self, n: usize) -> Vec<Opened> {
        let mut out: Vec<Opened> = Vec::new();
        for ((route, ip), t) in self.until {
            if out.last().map_or(true, |c| c.until.len() >= n.max(1)) {
                out.push(Opened::default());
            }
            let part = out.last_mut().expect("pushed above");
            part.keep(&route, self.chains.get(&route).map_or(&[], Vec::as_slice));
            part.until.insert((route, ip), t);
        }
        out
    }

    /// Takes `part`'s entries in (each keeps its latest expiry, each way
    /// its chain links) and returns the elements to put back for them
    /// under `policy`, as [`Opened::replay`] would.
    pub fn absorb(&mut self, part: Opened, policy: &Policy, guard: &Guard, now: Instant) -> Vec<NamedElem> {
        let mut by: HashMap<Route, Vec<(IpAddr, Duration)>> = HashMap::new();
        for ((route, ip), t) in part.until {
            self.keep(&route, part.chains.get(&route).map_or(&[], Vec::as_slice));
            let mine = self.until.entry((route.clone(), ip)).or_insert(t);
            *mine = (*mine).max(t);
            if *mine > now {
                by.entry(route).or_default().push((ip, mine.saturating_duration_since(now)));
            }
        }
        self.elements_of(by.iter().map(|(r, ips)| (r, ips.as_slice())), policy, guard)
    }

    /// The elements to put back under `policy` after a replace.
    pub fn replay(&self, policy: &Policy, guard: &Guard, now: Instant) -> Vec<NamedElem> {
        let live = self.live(now);
        self.elements_of(live.iter().map(|(r, ips)| (*r, ips.as_slice())), policy, guard)
    }

    /// The elements of these answers whose ways' chains `policy` lets
    /// through, sorted, each once (with the longest time left of the ways
    /// that open it).
    fn elements_of<'a>(
        &self,
        answers: impl Iterator<Item = (&'a Route, &'a [(IpAddr, Duration)])>,
        policy: &Policy,
        guard: &Guard,
    ) -> Vec<NamedElem> {
        // A way through an alias needs the alias still allowed (round 13,
        // escape_213); every way needs its chain clean.
        let clean = |r: &Route| {
            let asked_ok = r.asked == r.name
                || policy
                    .decide(crate::policy::Query { name: Some(&r.asked), ip: None, port: None })
                    .allowed();
            asked_ok
                && self
                    .chains
                    .get(r)
                    .map_or(true, |c| crate::dns::filter::denied_in_kept(c, policy).is_none())
        };
        let mut out: Vec<NamedElem> = answers
            .filter(|(r, _)| clean(r))
            .flat_map(|(r, ips)| elements(policy, guard, &r.name, ips))
            .collect();
        out.sort_by(|a, b| {
            (a.ip, a.proto, a.ports).cmp(&(b.ip, b.proto, b.ports)).then(b.timeout_ms.cmp(&a.timeout_ms))
        });
        out.dedup_by_key(|e| (e.ip, e.proto, e.ports));
        out
    }
}

/// How soon a failed lookup is tried again.
pub const RETRY: Duration = Duration::from_secs(5);

/// HTTPS mode: when each name is resolved again. A name is due at start,
/// then when its answer's shortest TTL runs out (a failed or empty
/// lookup: after [`RETRY`], or `ttl_min` when that is shorter).
#[derive(Debug, Default, Clone)]
pub struct Schedule {
    due: HashMap<String, Instant>,
}

impl Schedule {
    /// The names of `policy` that are due at `now` (new names are due at
    /// once; names the policy dropped are forgotten).
    pub fn due(&mut self, policy: &Policy, now: Instant) -> Vec<String> {
        let mut names: Vec<String> = policy.name_ports().iter().map(|np| np.name.clone()).collect();
        names.sort();
        names.dedup();
        self.due.retain(|n, _| names.binary_search(n).is_ok());
        names.into_iter().filter(|n| *self.due.entry(n.clone()).or_insert(now) <= now).collect()
    }

    /// A lookup of `name` answered these addresses (TTLs clamped).
    pub fn answered(&mut self, name: &str, ips: &[(IpAddr, Duration)], ttl_min: Duration, now: Instant) {
        let next = match ips.iter().map(|(_, t)| *t).min() {
            Some(t) => t,
            None => RETRY.min(ttl_min).max(Duration::from_secs(1)),
        };
        self.due.insert(name.to_owned(), now + next);
    }

    /// A lookup of `name` got no answer.
    pub fn failed(&mut self, name: &str, ttl_min: Duration, now: Instant) {
        self.due.insert(name.to_owned(), now + RETRY.min(ttl_min).max(Duration::from_secs(1)));
    }

    /// How long until the next name is due (`None`: no names).
    pub fn wait(&self, now: Instant) -> Option<Duration> {
        self.due.values().map(|t| t.saturating_duration_since(now)).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile_raw, parse_yaml, EnvLists};

    fn policy(yaml: &str) -> Policy {
        compile_raw(parse_yaml(yaml, "t.yaml").unwrap(), "t.yaml", &EnvLists::default()).unwrap()
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    /// Round 6, escape_90: the links of a chain that are names with ports
    /// and not allowed otherwise; an allowed link or one with no entry is
    /// none.
    #[test]
    fn chain_links_that_are_names_with_ports() {
        let p = policy(
            "allowlist:\n  domains: [\"alias.test\", \"tcp/evil.test:7001\", \"tcp/both.test:7001\", \"both.test\"]\n",
        );
        let chain = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(port_links(&p, &chain(&["evil.test"])), ["evil.test"]);
        assert_eq!(port_links(&p, &chain(&["cdn.test", "EVIL.test"])), ["evil.test"]);
        assert!(port_links(&p, &chain(&["both.test"])).is_empty(), "allowed on every port anyway");
        assert!(port_links(&p, &chain(&["cdn.test"])).is_empty(), "no entry: as before");
        assert!(port_links(&p, &[]).is_empty());
    }

    /// Round 12 (escape_206): a replay put back chunk by chunk opens what
    /// the whole replay would, judged by the same chains.
    #[test]
    fn chunks_absorbed_open_what_the_replay_opens() {
        let p = policy("default_action: deny\nallowlist:\n  domains: [\"tcp/db.test:5432\", \"tcp/web.test:443\"]\ndenylist:\n  domains: [\"evil.test\"]\n");
        let (g, t0) = (Guard::default(), Instant::now());
        let mut o = Opened::default();
        for i in 1..=5 {
            o.add(
                "db.test",
                "db.test",
                &[],
                &[(ip(&format!("198.51.100.{i}")), Duration::from_secs(60))],
                t0,
            );
        }
        o.add(
            "web.test",
            "web.test",
            &["evil.test".into()],
            &[(ip("198.51.100.9"), Duration::from_secs(60))],
            t0,
        );
        let whole = o.replay(&p, &g, t0);
        assert_eq!(whole.len(), 5, "web.test led through evil.test: {whole:?}");
        let mut back = Opened::default();
        let mut got: Vec<NamedElem> =
            o.into_chunks(2).into_iter().flat_map(|c| back.absorb(c, &p, &g, t0)).collect();
        got.sort();
        assert_eq!(got, whole);
        assert_eq!(back.replay(&p, &g, t0), whole, "the state came back whole");
    }

    /// Round 12, escape_207: seventeen aliases of one name with ports are
    /// seventeen ways with a short chain each, replayed after a reload
    /// under a denylist of names, not one merged chain past the bound;
    /// the way through a link the reload denylists alone is left out.
    #[test]
    fn aliases_of_a_name_with_ports_keep_a_chain_each() {
        let allow = "default_action: deny\nallowlist:\n  domains: [\"*.alias.test\", \"tcp/db.test:7001\"]\n";
        let denied = policy(&format!("{allow}denylist:\n  domains: [\"other.test\", \"a3.alias.test\"]\n"));
        let (g, t0) = (Guard::default(), Instant::now());
        let mut o = Opened::default();
        for i in 0..17 {
            let q = format!("a{i}.alias.test");
            let via = ["db.test".to_owned()];
            o.add(
                "db.test",
                &q,
                &via,
                &[(ip("192.0.2.3"), Duration::from_secs(60))],
                t0 + Duration::from_secs(i),
            );
        }
        let got = o.replay(&denied, &g, t0 + Duration::from_secs(20));
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].ip, got[0].ports), (ip("192.0.2.3"), (7001, 7001)));
        assert_eq!(got[0].timeout_ms, 56_000, "the longest time left of the ways that open it");
        // Only a3's way open: the one the denylist closes is not replayed.
        let mut one = Opened::default();
        one.add(
            "db.test",
            "a3.alias.test",
            &["db.test".to_owned()],
            &[(ip("192.0.2.3"), Duration::from_secs(60))],
            t0,
        );
        assert!(one.replay(&denied, &g, t0).is_empty());
        // Round 13, escape_213: a reload that no longer allows the aliases
        // (the questions) puts back none of their ways, though db.test
        // keeps its ports; escape_215: a way's chain is its links alone,
        // so 16 links and the question are not 17.
        let no_alias = policy("default_action: deny\nallowlist:\n  domains: [\"tcp/db.test:7001\"]\n");
        assert!(o.replay(&no_alias, &g, t0 + Duration::from_secs(20)).is_empty());
        let links: Vec<String> =
            (0..15).map(|i| format!("l{i}.cdn.test")).chain(["db.test".to_owned()]).collect();
        let mut long = Opened::default();
        long.add("db.test", "a0.alias.test", &links, &[(ip("192.0.2.3"), Duration::from_secs(60))], t0);
        assert_eq!(long.replay(&denied, &g, t0).len(), 1, "16 links are within the bound");
        let mut back = Opened::default();
        let chunked: Vec<NamedElem> = o
            .into_chunks(3)
            .into_iter()
            .flat_map(|c| back.absorb(c, &denied, &g, t0 + Duration::from_secs(20)))
            .collect();
        assert!(
            chunked.iter().all(|e| e.ip == ip("192.0.2.3") && e.ports == (7001, 7001)) && !chunked.is_empty()
        );
        assert_eq!(back.replay(&denied, &g, t0 + Duration::from_secs(20)), got, "the state came back whole");
    }

    /// An answer opens each address on the entries' protocols and ports
    /// only, for its TTL; a guarded address is left out unless listed.
    #[test]
    fn an_answer_opens_its_addresses_on_the_entrys_ports() {
        let p = policy(
            "allowlist:\n  domains: [\"tcp/db.test:5432\", \"db.test:6000-6001\", \"udp/ns.test:53\", \"other.test\"]\n",
        );
        let g = Guard::default();
        let s = Duration::from_secs;
        let got = elements(&p, &g, "db.test", &[(ip("192.0.2.5"), s(30)), (ip("169.254.169.254"), s(30))]);
        let e = |proto: u8, ports| NamedElem { ip: ip("192.0.2.5"), proto, ports, timeout_ms: 30_000 };
        assert_eq!(got, [e(6, (5432, 5432)), e(6, (6000, 6001)), e(17, (6000, 6001))]);
        assert!(elements(&p, &g, "other.test", &[(ip("192.0.2.5"), s(30))]).is_empty(), "no ports");
        assert!(elements(&p, &g, "x.test", &[(ip("192.0.2.5"), s(30))]).is_empty());
        let listed = policy("allowlist:\n  ips: [\"169.254.169.254\"]\n  domains: [\"tcp/db.test:5432\"]\n");
        assert_eq!(elements(&listed, &g, "db.test", &[(ip("169.254.169.254"), s(5))]).len(), 1);
        // The default deny's denylist closes a name with ports too.
        let closed = policy(
            "default_action: deny\nallowlist:\n  domains: [\"tcp/db.test:5432\"]\ndenylist:\n  domains: [db.test]\n",
        );
        assert!(elements(&closed, &g, "db.test", &[(ip("192.0.2.5"), s(30))]).is_empty());
    }

    #[test]
    fn opened_answers_replay_under_the_new_policy_until_they_expire() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut o = Opened::default();
        o.add("db.test", "db.test", &[], &[(ip("192.0.2.5"), s(30))], t0);
        o.add("db.test", "db.test", &[], &[(ip("192.0.2.5"), s(10)), (ip("192.0.2.6"), s(10))], t0 + s(5));
        let p = policy("allowlist:\n  domains: [\"tcp/db.test:5432\"]\n");
        let g = Guard::default();
        let got = o.replay(&p, &g, t0 + s(10));
        assert_eq!(
            got.iter().map(|e| (e.ip, e.timeout_ms)).collect::<Vec<_>>(),
            [(ip("192.0.2.5"), 20_000), (ip("192.0.2.6"), 5_000)],
            "the latest expiry of each address"
        );
        let moved = policy("allowlist:\n  domains: [\"udp/db.test:9\"]\n");
        assert!(o.replay(&moved, &g, t0 + s(10)).iter().all(|e| e.proto == 17 && e.ports == (9, 9)));
        assert!(o.replay(&policy("allowlist: {}\n"), &g, t0 + s(10)).is_empty(), "a dropped name");
        assert!(o.replay(&p, &g, t0 + s(31)).is_empty(), "expired");
    }

    /// Round 8, escape_161: an answer that led through a link a reload
    /// then denylists is not replayed; another name's answer is.
    #[test]
    fn a_reload_does_not_replay_an_answer_through_a_newly_denylisted_link() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut o = Opened::default();
        o.add(
            "alias.test",
            "alias.test",
            &["cdn.test".into(), "evil.test".into()],
            &[(ip("192.0.2.3"), s(30))],
            t0,
        );
        o.add("db.test", "db.test", &[], &[(ip("192.0.2.5"), s(30))], t0);
        let allow =
            "default_action: deny\nallowlist:\n  domains: [\"tcp/alias.test:7000\", \"tcp/db.test:5432\"]\n";
        let g = Guard::default();
        let ips =
            |o: &Opened, p: &Policy| o.replay(p, &g, t0 + s(3)).iter().map(|e| e.ip).collect::<Vec<_>>();
        assert_eq!(
            ips(&o, &policy(allow)),
            [ip("192.0.2.3"), ip("192.0.2.5")],
            "control: nothing denylisted"
        );
        let denied = policy(&format!("{allow}denylist:\n  domains: [\"evil.test\"]\n"));
        assert_eq!(ips(&o, &denied), [ip("192.0.2.5")]);
        // A later answer of the same name with a clean chain does not
        // wash out the one that led through the link.
        o.add("alias.test", "alias.test", &[], &[(ip("192.0.2.4"), s(30))], t0 + s(2));
        assert_eq!(ips(&o, &denied), [ip("192.0.2.5")]);
    }

    #[test]
    fn names_are_due_at_start_then_when_their_ttl_runs_out() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let p =
            policy("allowlist:\n  domains: [\"tcp/db.test:5432\", \"udp/db.test:53\", \"tcp/b.test:1\"]\n");
        let mut sch = Schedule::default();
        assert_eq!(sch.due(&p, t0), ["b.test", "db.test"]);
        sch.answered("db.test", &[(ip("192.0.2.5"), s(30)), (ip("192.0.2.6"), s(8))], s(1), t0);
        sch.failed("b.test", s(30), t0);
        assert_eq!(sch.wait(t0), Some(RETRY));
        assert!(sch.due(&p, t0 + s(4)).is_empty());
        assert_eq!(sch.due(&p, t0 + s(5)), ["b.test"]);
        assert_eq!(sch.due(&p, t0 + s(8)), ["b.test", "db.test"], "the shortest TTL");
        let only = policy("allowlist:\n  domains: [\"tcp/c.test:1\"]\n");
        assert_eq!(
            sch.due(&only, t0 + s(9)),
            ["c.test"],
            "a reload's new name at once, dropped ones forgotten"
        );
        assert_eq!(sch.wait(t0 + s(9)), Some(Duration::ZERO));
        assert_eq!(Schedule::default().wait(t0), None);
    }
}
