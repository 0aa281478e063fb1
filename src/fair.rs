//! Fair admission: one client cannot take every slot of a listener.
//!
//! A listener has `max` slots (MAX_CONNECTIONS for the proxies, the TCP
//! client bound for DNS). The last quarter of them is kept for clients
//! that hold few: a client holding `few` or more slots gets a new one only
//! while more than the reserve is free. So one client alone may use three
//! quarters of the slots (plus the reserve's share every client has), and
//! however many connections a greedy client opens or keeps idle, another
//! client still gets in.
//!
//! Pure: counts in, a verdict out; [`Admission`] is the shared, locked
//! shell with a release-on-drop [`Ticket`].

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::sync::{Arc, Mutex};

/// The slot bounds of one listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub max: usize,
    /// Slots only clients holding fewer than `few` may take.
    pub reserve: usize,
    pub few: usize,
}

impl Limits {
    /// A quarter of `max` kept back; "few" is a quarter of the reserve
    /// (at least one connection).
    pub fn for_max(max: usize) -> Limits {
        let reserve = max / 4;
        Limits { max, reserve, few: (reserve / 4).max(1) }
    }

    /// `max` for one client alone, and a quarter more (at least one) kept
    /// for clients that hold few: relay mode, whose MAX_CONNECTIONS is
    /// socat's max-children, what a single client sees.
    pub fn beyond(max: usize) -> Limits {
        let reserve = (max / 4).max(1);
        Limits { max: max + reserve, reserve, few: (reserve / 4).max(1) }
    }
}

/// Descriptors kept for everything but the connections themselves
/// (listeners, DNS, event sinks, the dashboard, logs).
pub const FD_RESERVE: u64 = 256;
/// Descriptors one proxied connection holds once it is relayed: the
/// client's socket and the upstream's. While its first head is read it
/// holds one; a bulk direction's splice pipe takes two more tickets,
/// and without them the direction copies.
pub const FDS_PER_CONNECTION: u64 = 2;

/// The descriptors the open-file limit `nofile` leaves for connections
/// (`nofile - FD_RESERVE`, at least one). A proxy takes one of them for
/// each accepted connection and one more before it connects upstream,
/// through a [`Fair`] of its own, so a client's share of the descriptors
/// binds before they run out (when accept(2) would fail for every
/// client), however MAX_CONNECTIONS is set.
pub fn descriptor_budget(nofile: u64) -> usize {
    usize::try_from(nofile.saturating_sub(FD_RESERVE)).unwrap_or(usize::MAX).max(1)
}

/// True when `max` relayed connections need more descriptors than
/// `budget` (then the descriptors, not MAX_CONNECTIONS, bind first).
pub fn descriptors_bind(max: usize, budget: usize) -> bool {
    (budget as u64) < max as u64 * FDS_PER_CONNECTION
}

/// Why a client was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// Every slot is taken.
    Full,
    /// The client holds its share and only the reserve is left.
    ClientShare,
}

/// Slot counts per client.
#[derive(Debug)]
pub struct Fair<K> {
    limits: Limits,
    held: HashMap<K, usize>,
    total: usize,
}

impl<K: Eq + Hash + Clone> Fair<K> {
    pub fn new(limits: Limits) -> Fair<K> {
        Fair { limits, held: HashMap::new(), total: 0 }
    }

    /// Whether `k` would be admitted now (nothing taken).
    pub fn check(&self, k: &K) -> Result<(), Refusal> {
        let l = self.limits;
        if self.total >= l.max {
            return Err(Refusal::Full);
        }
        let n = self.held.get(k).copied().unwrap_or(0);
        if n >= l.few && self.total >= l.max - l.reserve {
            return Err(Refusal::ClientShare);
        }
        Ok(())
    }

    /// Takes a slot for `k`, or says why not.
    pub fn admit(&mut self, k: &K) -> Result<(), Refusal> {
        self.check(k)?;
        *self.held.entry(k.clone()).or_insert(0) += 1;
        self.total += 1;
        Ok(())
    }

    /// Gives a slot of `k` back.
    pub fn release(&mut self, k: &K) {
        if let Some(n) = self.held.get_mut(k) {
            *n -= 1;
            self.total -= 1;
            if *n == 0 {
                self.held.remove(k);
            }
        }
    }

    pub fn held(&self, k: &K) -> usize {
        self.held.get(k).copied().unwrap_or(0)
    }

    pub fn total(&self) -> usize {
        self.total
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }
}

/// Per-client queues served in turn: [`Turns::pop`] takes the oldest
/// item of the client whose turn it is, so one client's backlog delays
/// another's item by at most one item per client ahead of it. Bounded:
/// `per_client` items per client, `max` in all.
#[derive(Debug)]
pub struct Turns<K, T> {
    queues: HashMap<K, VecDeque<T>>,
    /// Clients with items, in turn order.
    order: VecDeque<K>,
    per_client: usize,
    max: usize,
    len: usize,
}

impl<K: Eq + Hash + Clone, T> Turns<K, T> {
    pub fn new(per_client: usize, max: usize) -> Turns<K, T> {
        Turns { queues: HashMap::new(), order: VecDeque::new(), per_client, max, len: 0 }
    }

    /// Queues `t` for `k`; gives it back when `k`'s queue or all of
    /// them are full.
    pub fn push(&mut self, k: K, t: T) -> Option<T> {
        if self.len >= self.max {
            return Some(t);
        }
        let q = self.queues.entry(k.clone()).or_default();
        if q.len() >= self.per_client {
            return Some(t);
        }
        if q.is_empty() {
            self.order.push_back(k);
        }
        q.push_back(t);
        self.len += 1;
        None
    }

    /// The next item, the client whose turn it was going to the back.
    pub fn pop(&mut self) -> Option<(K, T)> {
        let k = self.order.pop_front()?;
        let q = self.queues.get_mut(&k)?;
        let t = q.pop_front()?;
        self.len -= 1;
        if q.is_empty() {
            self.queues.remove(&k);
        } else {
            self.order.push_back(k.clone());
        }
        Some((k, t))
    }

    /// Puts back what [`Turns::pop`] just gave (it could not be served):
    /// first in line again. Beyond the bounds, as it was already counted.
    pub fn push_front(&mut self, k: K, t: T) {
        let q = self.queues.entry(k.clone()).or_default();
        if q.is_empty() {
            self.order.push_front(k.clone());
        } else if let Some(i) = self.order.iter().position(|x| *x == k) {
            // Its turn was moved to the back by the pop: give it back.
            self.order.remove(i);
            self.order.push_front(k);
        }
        q.push_front(t);
        self.len += 1;
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Clients with something queued.
    pub fn clients(&self) -> usize {
        self.queues.len()
    }
}

/// [`Fair`] shared by the threads of a listener.
#[derive(Debug)]
pub struct Admission<K> {
    fair: Mutex<Fair<K>>,
}

impl<K: Eq + Hash + Clone> Admission<K> {
    pub fn new(limits: Limits) -> Arc<Admission<K>> {
        Arc::new(Admission { fair: Mutex::new(Fair::new(limits)) })
    }

    /// A slot for `k`, given back when the ticket is dropped.
    pub fn admit(self: &Arc<Self>, k: K) -> Result<Ticket<K>, Refusal> {
        self.fair.lock().unwrap_or_else(|p| p.into_inner()).admit(&k)?;
        Ok(Ticket { adm: self.clone(), key: k })
    }

    pub fn total(&self) -> usize {
        self.fair.lock().unwrap_or_else(|p| p.into_inner()).total()
    }
}

/// One admitted slot.
#[derive(Debug)]
pub struct Ticket<K: Eq + Hash + Clone> {
    adm: Arc<Admission<K>>,
    key: K,
}

impl<K: Eq + Hash + Clone> Drop for Ticket<K> {
    fn drop(&mut self) {
        self.adm.fair.lock().unwrap_or_else(|p| p.into_inner()).release(&self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_table() {
        assert_eq!(Limits::for_max(20), Limits { max: 20, reserve: 5, few: 1 });
        assert_eq!(Limits::for_max(128), Limits { max: 128, reserve: 32, few: 8 });
        assert_eq!(Limits::for_max(10_000), Limits { max: 10_000, reserve: 2500, few: 625 });
        assert_eq!(Limits::for_max(3), Limits { max: 3, reserve: 0, few: 1 }, "too small to share");
    }

    #[test]
    fn descriptor_budget_table() {
        assert_eq!(descriptor_budget(1024), 768, "a container's 1024");
        assert_eq!(descriptor_budget(20_000), 19_744);
        assert_eq!(descriptor_budget(100), 1, "below the reserve: one still");
        assert!(descriptors_bind(10_000, descriptor_budget(1024)));
        assert!(descriptors_bind(13_400, descriptor_budget(20_000)));
        assert!(!descriptors_bind(10_000, descriptor_budget(20_256)), "exactly enough");
        assert!(!descriptors_bind(10_000, descriptor_budget(1_048_576)));
    }

    #[test]
    fn under_a_low_open_file_limit_one_client_leaves_descriptors_for_others() {
        // nofile 1024: the greedy client's idle connections (one descriptor
        // each) stop at three quarters of the 768, and once relayed (two
        // each) at half as many connections.
        let mut f = Fair::new(Limits::for_max(descriptor_budget(1024)));
        let idle = (0..1100).filter(|_| f.admit(&"greedy").is_ok()).count();
        assert_eq!(idle, 576);
        assert!(idle as u64 + FD_RESERVE < 1024);
        assert_eq!(f.admit(&"other"), Ok(()), "the other client's socket");
        assert_eq!(f.admit(&"other"), Ok(()), "and its upstream's");
    }

    #[test]
    fn a_greedy_client_leaves_the_reserve_to_others() {
        let mut f = Fair::new(Limits::for_max(20));
        let mut took = 0;
        while f.admit(&"greedy").is_ok() {
            took += 1;
        }
        assert_eq!(took, 15, "three quarters");
        assert_eq!(f.admit(&"greedy"), Err(Refusal::ClientShare));
        // Others get the reserve, one each ("few" is 1 at this size).
        for c in ["a", "b", "c", "d"] {
            assert_eq!(f.admit(&c), Ok(()), "{c}");
            assert_eq!(f.admit(&c), Err(Refusal::ClientShare), "{c} holds its share now");
        }
        assert_eq!(f.admit(&"e"), Ok(()));
        assert_eq!(f.admit(&"f"), Err(Refusal::Full));
        f.release(&"greedy");
        assert_eq!(f.admit(&"f"), Ok(()));
        assert_eq!(f.total(), 20);
    }

    #[test]
    fn turns_serve_each_client_in_turn_within_bounds() {
        let mut t = Turns::new(3, 5);
        for i in 0..3 {
            assert_eq!(t.push("flood", i), None);
        }
        assert_eq!(t.push("flood", 3), Some(3), "its own queue is full");
        assert_eq!(t.push("b", 10), None);
        assert_eq!(t.push("c", 20), None);
        assert_eq!(t.push("c", 21), Some(21), "every queue together is full");
        // One each in turn, not the flooder's three first.
        assert_eq!(t.pop(), Some(("flood", 0)));
        assert_eq!(t.pop(), Some(("b", 10)));
        assert_eq!(t.pop(), Some(("c", 20)));
        // Given back (the forwarders were full): first again.
        t.push_front("c", 20);
        assert_eq!(t.pop(), Some(("c", 20)));
        assert_eq!(t.pop(), Some(("flood", 1)));
        assert_eq!(t.push("b", 11), None);
        assert_eq!(t.push("flood", 3), None);
        // Given back while it has more: still its turn next.
        let (k, x) = t.pop().unwrap();
        assert_eq!((k, x), ("flood", 2));
        t.push_front(k, x);
        assert_eq!(t.len(), 3);
        assert_eq!(t.pop(), Some(("flood", 2)));
        assert_eq!(t.pop(), Some(("b", 11)));
        assert_eq!(t.pop(), Some(("flood", 3)));
        assert_eq!(t.pop(), None);
        assert!(t.is_empty());
        assert_eq!(t.clients(), 0, "emptied queues are forgotten");
    }

    #[test]
    fn beyond_gives_one_client_max_and_others_the_rest() {
        assert_eq!(Limits::beyond(3), Limits { max: 4, reserve: 1, few: 1 });
        assert_eq!(Limits::beyond(100), Limits { max: 125, reserve: 25, few: 6 });
        let mut f = Fair::new(Limits::beyond(3));
        assert_eq!((0..10).filter(|_| f.admit(&"alone").is_ok()).count(), 3, "MAX_CONNECTIONS, as before");
        assert_eq!(f.check(&"other"), Ok(()));
        assert_eq!(f.total(), 3, "check takes nothing");
        assert_eq!(f.admit(&"other"), Ok(()));
        assert_eq!(f.admit(&"third"), Err(Refusal::Full));
    }

    #[test]
    fn two_greedy_clients_share_the_unreserved_slots() {
        let mut f = Fair::new(Limits::for_max(128));
        let mut n = [0, 0];
        for _ in 0..200 {
            for (i, k) in ["x", "y"].iter().enumerate() {
                if f.admit(k).is_ok() {
                    n[i] += 1;
                }
            }
        }
        assert_eq!(n[0] + n[1], 96);
        assert_eq!(f.admit(&"light"), Ok(()), "the reserve is still there");
    }

    #[test]
    fn release_of_unknown_is_harmless_and_tickets_give_back() {
        let mut f = Fair::<u32>::new(Limits::for_max(8));
        f.release(&7);
        assert_eq!(f.total(), 0);
        let adm = Admission::new(Limits::for_max(4));
        let t = adm.admit(1u32).unwrap();
        let u = adm.admit(1u32).unwrap();
        assert_eq!(adm.total(), 2);
        drop((t, u));
        assert_eq!(adm.total(), 0);
    }
}
