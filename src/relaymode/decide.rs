//! Relay mode's decisions, as pure values: admission of TCP connections
//! under `MAX_CONNECTIONS`, fairly per remote client (served, waiting,
//! given up), the UDP flow table at its limit, when a target's addresses are stale, and whether
//! a connection's first bytes name the target (`RELAY_CHECK`). No I/O;
//! time comes in as an argument.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::fair::{Fair, Limits, Refusal};
use crate::proxy::http::{Host, RequestHead};
use crate::proxy::tls::{ClientHello, Sni};

use super::config::Target;

/// What to do with a connection just accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum Admit<T> {
    /// A slot was free: serve it now.
    Serve(T),
    /// Every slot is taken: it waits (as in socat's backlog) until one
    /// frees or its wait runs out.
    Wait,
}

/// Who a remote peer is, for its share of a door's slots and flows: its
/// IPv4 address (an IPv4-mapped IPv6 one counts as that), or its IPv6
/// /64 (one host's worth of a network: a client picks addresses inside
/// its /64 at will).
pub fn client_of(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(u128::from(v6) & !((1u128 << 64) - 1))),
        },
    }
}

/// `MAX_CONNECTIONS` slots of one TCP port, shared fairly among clients
/// (`K`, [`client_of`]; [`Limits::beyond`]: one client alone gets all
/// `MAX_CONNECTIONS`, a quarter more is kept for clients that hold
/// few), and the connections waiting for one, oldest first. A freed slot
/// goes to the oldest waiting connection that may take it, so one
/// client's queued connections do not stand ahead of another's. The
/// acceptor stops accepting while the queue is full, so further
/// connections wait in the kernel's backlog.
#[derive(Debug)]
pub struct Slots<K, T> {
    fair: Fair<K>,
    queue_max: usize,
    wait: Duration,
    queue: VecDeque<(Instant, K, T)>,
}

impl<K: Eq + Hash + Clone, T> Slots<K, T> {
    pub fn new(max: usize, queue_max: usize, wait: Duration) -> Slots<K, T> {
        Slots { fair: Fair::new(Limits::beyond(max.max(1))), queue_max, wait, queue: VecDeque::new() }
    }

    /// Whether another connection may be accepted now (the queue has room).
    pub fn accepting(&self) -> bool {
        self.fair.total() < self.fair.limits().max || self.queue.len() < self.queue_max
    }

    pub fn admit(&mut self, client: K, conn: T, now: Instant) -> Admit<T> {
        if self.fair.admit(&client).is_ok() {
            Admit::Serve(conn)
        } else {
            self.queue.push_back((now + self.wait, client, conn));
            Admit::Wait
        }
    }

    /// A connection of `client` ended: its slot goes to the oldest
    /// waiting connection that may take it (the caller serves it), or is
    /// freed.
    pub fn release(&mut self, client: &K) -> Option<T> {
        self.fair.release(client);
        let i = self.queue.iter().position(|(_, k, _)| self.fair.check(k).is_ok())?;
        let (_, k, c) = self.queue.remove(i)?;
        let _ = self.fair.admit(&k);
        Some(c)
    }

    /// The waiting connections whose wait ran out by `now`.
    pub fn expire(&mut self, now: Instant) -> Vec<T> {
        let (gone, kept): (VecDeque<_>, VecDeque<_>) =
            std::mem::take(&mut self.queue).into_iter().partition(|(d, _, _)| *d <= now);
        self.queue = kept;
        gone.into_iter().map(|(_, _, c)| c).collect()
    }

    /// When the oldest wait runs out.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queue.iter().map(|(d, _, _)| *d).min()
    }

    pub fn busy(&self) -> usize {
        self.fair.total()
    }

    pub fn waiting(&self) -> usize {
        self.queue.len()
    }
}

/// What a datagram from a client means for the flow table.
#[derive(Debug, PartialEq, Eq)]
pub enum Datagram<F> {
    /// The client's flow exists: forward on it.
    Existing(F),
    /// A new flow may be opened.
    Open,
    /// `MAX_CONNECTIONS` flows are open, or the client holds its share
    /// of them: the datagram is not forwarded (docker-whitelist: new UDP
    /// flows stop at the limit).
    AtLimit(Refusal),
}

/// The UDP flows of one port, keyed by client address and port (`K`),
/// each with its last activity; shared fairly among clients (`C`,
/// [`client_of`]) as [`Slots`] are, so one client's source ports cannot
/// take every flow.
#[derive(Debug)]
pub struct Flows<K, C, F> {
    fair: Fair<C>,
    idle: Duration,
    flows: HashMap<K, (F, Instant, C)>,
}

impl<K: Eq + Hash + Clone, C: Eq + Hash + Clone, F: Clone> Flows<K, C, F> {
    pub fn new(max: usize, idle: Duration) -> Flows<K, C, F> {
        Flows { fair: Fair::new(Limits::beyond(max.max(1))), idle, flows: HashMap::new() }
    }

    /// A datagram from `client` (of `owner`) arrived at `now`.
    pub fn datagram(&mut self, client: &K, owner: &C, now: Instant) -> Datagram<F> {
        if let Some((f, seen, _)) = self.flows.get_mut(client) {
            *seen = now;
            return Datagram::Existing(f.clone());
        }
        match self.fair.check(owner) {
            Ok(()) => Datagram::Open,
            Err(r) => Datagram::AtLimit(r),
        }
    }

    /// The flow opened after [`Datagram::Open`].
    pub fn insert(&mut self, client: K, owner: C, flow: F, now: Instant) {
        if self.flows.contains_key(&client) || self.fair.admit(&owner).is_err() {
            return;
        }
        self.flows.insert(client, (flow, now, owner));
    }

    /// The target answered on `client`'s flow.
    pub fn touch(&mut self, client: &K, now: Instant) {
        if let Some((_, seen, _)) = self.flows.get_mut(client) {
            *seen = now;
        }
    }

    pub fn remove(&mut self, client: &K) -> Option<F> {
        let (f, _, owner) = self.flows.remove(client)?;
        self.fair.release(&owner);
        Some(f)
    }

    /// The flows idle for the timeout by `now`, removed.
    pub fn expire(&mut self, now: Instant) -> Vec<(K, F)> {
        let idle = self.idle;
        let gone: Vec<K> = self
            .flows
            .iter()
            .filter(|(_, (_, seen, _))| now.saturating_duration_since(*seen) >= idle)
            .map(|(k, _)| k.clone())
            .collect();
        gone.into_iter().filter_map(|k| self.remove(&k).map(|f| (k, f))).collect()
    }

    pub fn len(&self) -> usize {
        self.flows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.flows.is_empty()
    }
}

/// The bounds on how long resolved addresses are used: a TTL of 0 would
/// resolve on every connection, a day-long one would never follow a move.
pub const TTL_MIN: Duration = Duration::from_secs(1);
pub const TTL_MAX: Duration = Duration::from_secs(300);
/// Answers of the system resolver carry no TTL: they are used this long.
pub const SYSTEM_TTL: Duration = Duration::from_secs(5);

/// A target's addresses and until when they may be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub addrs: Vec<IpAddr>,
    pub until: Instant,
}

impl Resolved {
    /// From DNS answers `(ip, ttl)`: the shortest TTL rules, clamped to
    /// [`TTL_MIN`]..[`TTL_MAX`]; IPv4 first (what a client without IPv6
    /// upstream reach can use), duplicates dropped.
    pub fn from_answers(answers: &[(IpAddr, Duration)], now: Instant) -> Option<Resolved> {
        let ttl = answers.iter().map(|(_, t)| *t).min()?;
        let mut addrs: Vec<IpAddr> = Vec::new();
        for want_v4 in [true, false] {
            for (ip, _) in answers {
                if ip.is_ipv4() == want_v4 && !addrs.contains(ip) {
                    addrs.push(*ip);
                }
            }
        }
        Some(Resolved { addrs, until: now + ttl.clamp(TTL_MIN, TTL_MAX) })
    }

    pub fn fresh(&self, now: Instant) -> bool {
        now < self.until
    }
}

/// Why `RELAY_CHECK` refused a connection: the event's reason and note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    pub reason: &'static str,
    pub note: String,
}

/// Event reason: the SNI / Host names something other than the target.
pub const TARGET_MISMATCH: &str = "target-mismatch";

fn mismatch(what: &str, name: &str, target: &Target) -> Refused {
    Refused { reason: TARGET_MISMATCH, note: format!("{what} {name:?} is not the relay's target {target}") }
}

/// Whether `name` (normalised) may go through the door to `target`: it
/// is the target's own name (or address), or one the policy allows.
fn name_ok(name: &str, target: &Target, allowed: &dyn Fn(&str) -> bool) -> bool {
    let own = match target {
        Target::Name(t) => t == name,
        Target::Ip(ip) => name.parse::<IpAddr>().is_ok_and(|n| n == *ip),
    };
    own || allowed(name)
}

/// The decision on a TLS connection's ClientHello.
pub fn hello(h: &ClientHello, target: &Target, allowed: &dyn Fn(&str) -> bool) -> Result<String, Refused> {
    // With encrypted_client_hello the visible SNI is only the outer name:
    // a frontend that supports ECH serves the hidden inner one.
    if h.ech {
        return Err(Refused {
            reason: TARGET_MISMATCH,
            note: "the ClientHello carries encrypted_client_hello: its real server name is hidden".into(),
        });
    }
    match &h.sni {
        Sni::Name(n) if name_ok(n, target, allowed) => Ok(n.clone()),
        Sni::Name(n) => Err(mismatch("SNI", n, target)),
        Sni::IpLiteral(ip) if name_ok(&ip.to_string(), target, allowed) => Ok(ip.to_string()),
        Sni::IpLiteral(ip) => Err(mismatch("SNI", &ip.to_string(), target)),
        Sni::Absent => Err(Refused { reason: "no-sni", note: "the ClientHello names no server".into() }),
        Sni::Invalid(raw) => Err(Refused { reason: "invalid-name", note: format!("invalid SNI {raw:?}") }),
    }
}

/// The decision on one HTTP request head (each of a kept-alive
/// connection's).
pub fn request(
    head: &RequestHead,
    target: &Target,
    allowed: &dyn Fn(&str) -> bool,
) -> Result<String, Refused> {
    let name = match &head.host {
        Host::Name(n) => n.clone(),
        Host::IpLiteral(ip) => ip.to_string(),
    };
    if name_ok(&name, target, allowed) {
        Ok(name)
    } else {
        Err(mismatch("Host", &name, target))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_serve_then_queue_then_hand_over() {
        let t0 = Instant::now();
        let mut s: Slots<&str, u32> = Slots::new(2, 1, Duration::from_secs(5));
        assert_eq!(s.admit("a", 1, t0), Admit::Serve(1));
        assert_eq!(s.admit("a", 2, t0), Admit::Serve(2));
        assert!(s.accepting(), "the queue has room");
        assert_eq!(s.admit("a", 3, t0), Admit::Wait);
        assert!(s.accepting(), "the reserve slot is free");
        assert_eq!((s.busy(), s.waiting()), (2, 1));
        // A connection ends: the waiting one gets its slot.
        assert_eq!(s.release(&"a"), Some(3));
        assert_eq!((s.busy(), s.waiting()), (2, 0));
        assert_eq!(s.release(&"a"), None);
        assert_eq!(s.busy(), 1);
    }

    #[test]
    fn slots_keep_a_reserve_and_hand_freed_slots_to_the_client_holding_few() {
        let t0 = Instant::now();
        let mut s: Slots<&str, u32> = Slots::new(2, 8, Duration::from_secs(5));
        assert_eq!(s.admit("greedy", 1, t0), Admit::Serve(1));
        assert_eq!(s.admit("greedy", 2, t0), Admit::Serve(2));
        for c in 3..6 {
            assert_eq!(s.admit("greedy", c, t0), Admit::Wait);
        }
        // Another client gets the reserve at once, not after the queue.
        assert_eq!(s.admit("victim", 9, t0), Admit::Serve(9));
        assert_eq!(s.admit("late", 10, t0), Admit::Wait, "every slot is taken");
        // A slot the greedy client frees goes to "late" (holding none),
        // ahead of the greedy client's older waiters.
        assert_eq!(s.release(&"greedy"), Some(10));
        assert_eq!(s.waiting(), 3);
    }

    #[test]
    fn a_wait_is_bounded() {
        let t0 = Instant::now();
        let mut s: Slots<&str, u32> = Slots::new(1, 8, Duration::from_secs(5));
        assert_eq!(s.admit("a", 1, t0), Admit::Serve(1));
        assert_eq!(s.admit("a", 2, t0), Admit::Wait);
        assert_eq!(s.admit("a", 3, t0 + Duration::from_secs(2)), Admit::Wait);
        assert_eq!(s.next_deadline(), Some(t0 + Duration::from_secs(5)));
        assert!(s.expire(t0 + Duration::from_secs(4)).is_empty());
        assert_eq!(s.expire(t0 + Duration::from_secs(5)), vec![2]);
        assert_eq!(s.expire(t0 + Duration::from_secs(60)), vec![3]);
        assert_eq!(s.busy(), 1, "expiry frees no slot: none was taken");
    }

    #[test]
    fn udp_flows_stop_at_the_limit() {
        let t0 = Instant::now();
        let mut f: Flows<&str, &str, u32> = Flows::new(2, Duration::from_secs(30));
        assert_eq!(f.datagram(&"a", &"a", t0), Datagram::Open);
        f.insert("a", "a", 1, t0);
        assert_eq!(f.datagram(&"b", &"b", t0), Datagram::Open);
        f.insert("b", "b", 2, t0);
        assert_eq!(f.datagram(&"a", &"a", t0), Datagram::Existing(1));
        assert_eq!(f.datagram(&"c", &"c", t0), Datagram::Open, "the reserve");
        f.insert("c", "c", 3, t0);
        assert_eq!(f.datagram(&"d", &"d", t0), Datagram::AtLimit(Refusal::Full));
        assert_eq!(f.remove(&"c"), Some(3));
        // b goes idle; a stays busy.
        assert_eq!(f.datagram(&"a", &"a", t0 + Duration::from_secs(20)), Datagram::Existing(1));
        assert_eq!(f.expire(t0 + Duration::from_secs(31)), vec![("b", 2)]);
        assert_eq!(f.datagram(&"c", &"c", t0 + Duration::from_secs(31)), Datagram::Open);
        f.touch(&"a", t0 + Duration::from_secs(45));
        assert!(f.expire(t0 + Duration::from_secs(60)).is_empty());
        assert_eq!(f.remove(&"a"), Some(1));
        assert!(f.is_empty());
    }

    #[test]
    fn one_clients_source_ports_leave_flows_for_another() {
        let t0 = Instant::now();
        let mut f: Flows<(&str, u16), &str, u16> = Flows::new(8, Duration::from_secs(30));
        let mut mine = 0;
        for port in 1..=20 {
            if f.datagram(&("greedy", port), &"greedy", t0) == Datagram::Open {
                f.insert(("greedy", port), "greedy", port, t0);
                mine += 1;
            }
        }
        assert_eq!(mine, 8, "MAX_CONNECTIONS for a client alone");
        assert_eq!(f.datagram(&("greedy", 99), &"greedy", t0), Datagram::AtLimit(Refusal::ClientShare));
        assert_eq!(f.datagram(&("victim", 1), &"victim", t0), Datagram::Open);
    }

    #[test]
    fn remote_clients_are_addresses_and_ipv6_slash_64s() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        assert_eq!(client_of(ip("192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_of(ip("::ffff:192.0.2.7")), ip("192.0.2.7"));
        assert_eq!(client_of(ip("2001:db8:1:2:aaaa::1")), ip("2001:db8:1:2::"));
        assert_eq!(client_of(ip("2001:db8:1:2:ffff::9")), client_of(ip("2001:db8:1:2::1")));
        assert_ne!(client_of(ip("2001:db8:1:3::1")), client_of(ip("2001:db8:1:2::1")));
    }

    #[test]
    fn resolved_addresses_live_for_the_clamped_ttl() {
        let t0 = Instant::now();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let r = Resolved::from_answers(
            &[
                (v6, Duration::from_secs(60)),
                (a, Duration::from_secs(30)),
                (b, Duration::from_secs(90)),
                (a, Duration::from_secs(30)),
            ],
            t0,
        )
        .unwrap();
        assert_eq!(r.addrs, vec![a, b, v6], "IPv4 first, no duplicates");
        assert_eq!(r.until, t0 + Duration::from_secs(30));
        assert!(r.fresh(t0 + Duration::from_secs(29)) && !r.fresh(t0 + Duration::from_secs(30)));
        let zero = Resolved::from_answers(&[(a, Duration::ZERO)], t0).unwrap();
        assert_eq!(zero.until, t0 + TTL_MIN);
        let day = Resolved::from_answers(&[(a, Duration::from_secs(86400))], t0).unwrap();
        assert_eq!(day.until, t0 + TTL_MAX);
        assert_eq!(Resolved::from_answers(&[], t0), None);
    }

    fn hello_for(sni: Sni) -> ClientHello {
        ClientHello { sni, ech: false, consumed: 0 }
    }

    #[test]
    fn the_first_bytes_must_name_the_target() {
        let t = Target::Name("fonts.googleapis.com".into());
        let none = |_: &str| false;
        assert_eq!(
            hello(&hello_for(Sni::Name("fonts.googleapis.com".into())), &t, &none),
            Ok("fonts.googleapis.com".into())
        );
        let r = hello(&hello_for(Sni::Name("www.google.com".into())), &t, &none).unwrap_err();
        assert_eq!(r.reason, TARGET_MISMATCH);
        assert!(r.note.contains("www.google.com"), "{r:?}");
        assert_eq!(hello(&hello_for(Sni::Absent), &t, &none).unwrap_err().reason, "no-sni");
        assert_eq!(
            hello(&hello_for(Sni::Invalid("a b".into())), &t, &none).unwrap_err().reason,
            "invalid-name"
        );
        // The policy widens the names the door accepts.
        let policy = |n: &str| n == "fonts.gstatic.com";
        assert!(hello(&hello_for(Sni::Name("fonts.gstatic.com".into())), &t, &policy).is_ok());
        // An IP target matches its own literal.
        let ip = Target::Ip("10.0.0.1".parse().unwrap());
        assert!(hello(&hello_for(Sni::IpLiteral("10.0.0.1".parse().unwrap())), &ip, &none).is_ok());
        assert!(hello(&hello_for(Sni::IpLiteral("10.0.0.2".parse().unwrap())), &ip, &none).is_err());
        let head = |host: Host| RequestHead {
            method: "GET".into(),
            target: "/".into(),
            host,
            body: crate::proxy::http::Body::None,
            head_len: 0,
            websocket: false,
        };
        assert!(request(&head(Host::Name("fonts.googleapis.com".into())), &t, &none).is_ok());
        assert_eq!(
            request(&head(Host::Name("evil.example".into())), &t, &none).unwrap_err().reason,
            TARGET_MISMATCH
        );
        assert!(request(&head(Host::IpLiteral("10.0.0.1".parse().unwrap())), &ip, &none).is_ok());
    }
}
