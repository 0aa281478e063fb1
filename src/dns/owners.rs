//! Who sent a UDP query, remembered per source address, and how many
//! owner lookups (`sock_diag` round trips) the receive loop may spend a
//! second (pure: time passed in, the lookup itself is the caller's).
//!
//! A busy client costs one lookup a second, not one per query. A flood
//! from fresh source ports would cost one per datagram: past the lookup
//! budget, datagrams from ports not remembered are not looked up but
//! share one small bucket (as an unknown owner), and past that they are
//! dropped unread. A full table evicts its oldest entries, never all of
//! them, so the clients it knows keep being known.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

/// The limits, in one place.
pub mod defaults {
    use std::time::Duration;
    /// How long a source address's owner is believed.
    pub const TTL: Duration = Duration::from_secs(1);
    /// Source addresses remembered at most.
    pub const ENTRIES: usize = 4096;
    /// Owner lookups a second (and the burst): above the kernel's
    /// per-owner ceiling (`nft::ruleset::DNS_FLOOD_FLOOR` a second), so one
    /// flooding owner alone cannot spend it.
    pub const LOOKUPS_PER_SECOND: u32 = 4000;
    /// Datagrams a second from ports not remembered once the lookups are
    /// spent (and the burst): answered as an unknown owner's.
    pub const UNLOOKED_PER_SECOND: u32 = 200;
}

/// What to do about one datagram's source.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Look<O> {
    /// Remembered: this owner.
    Known(O),
    /// Look it up now (a token of the budget is spent), then
    /// [`Owners::learned`].
    Ask,
    /// Over the lookup budget: treat it as an unknown owner's.
    Unlooked,
    /// Over the lookup budget and the shared bucket: drop it unread.
    Drop,
}

/// A token bucket refilled at `rate` a second up to `rate`.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    rate: f64,
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: u32, now: Instant) -> Bucket {
        Bucket { rate: f64::from(rate), tokens: f64::from(rate), last: now }
    }

    fn take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + dt * self.rate).min(self.rate);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The table and the budgets, keyed by source address `A`.
#[derive(Debug)]
pub struct Owners<A, O> {
    ttl: Duration,
    max: usize,
    entries: HashMap<A, (O, Instant)>,
    /// Insertion order, oldest first; an item whose time is not its
    /// entry's any more was refreshed since (skipped on eviction).
    order: VecDeque<(A, Instant)>,
    lookups: Bucket,
    unlooked: Bucket,
}

impl<A: Copy + Eq + Hash, O: Copy> Owners<A, O> {
    pub fn new(now: Instant) -> Owners<A, O> {
        Owners::with(
            defaults::TTL,
            defaults::ENTRIES,
            defaults::LOOKUPS_PER_SECOND,
            defaults::UNLOOKED_PER_SECOND,
            now,
        )
    }

    pub fn with(ttl: Duration, max: usize, lookups: u32, unlooked: u32, now: Instant) -> Owners<A, O> {
        Owners {
            ttl,
            max: max.max(1),
            entries: HashMap::new(),
            order: VecDeque::new(),
            lookups: Bucket::new(lookups, now),
            unlooked: Bucket::new(unlooked, now),
        }
    }

    /// What to do about a datagram from `addr` at `now`.
    pub fn look(&mut self, addr: A, now: Instant) -> Look<O> {
        if let Some(&(owner, at)) = self.entries.get(&addr) {
            if now.saturating_duration_since(at) < self.ttl {
                return Look::Known(owner);
            }
        }
        if self.lookups.take(now) {
            Look::Ask
        } else if self.unlooked.take(now) {
            Look::Unlooked
        } else {
            Look::Drop
        }
    }

    /// Remembers what a lookup of `addr` found; a full table first drops
    /// expired entries, then its oldest. Not finding one is not
    /// remembered: the socket is gone (closed once sent), and its port is
    /// free for the next socket, another client's perhaps, which must not
    /// inherit "unknown" (and the flood's bucket) for a second.
    pub fn learned(&mut self, addr: A, owner: Option<O>, now: Instant) {
        let Some(owner) = owner else {
            self.entries.remove(&addr);
            return;
        };
        self.prune(now);
        while !self.entries.contains_key(&addr) && self.entries.len() >= self.max {
            let Some((a, at)) = self.order.pop_front() else { break };
            if self.entries.get(&a).is_some_and(|&(_, t)| t == at) {
                self.entries.remove(&a);
            }
        }
        self.entries.insert(addr, (owner, now));
        self.order.push_back((addr, now));
        if self.order.len() > 4 * self.max {
            // Refreshed entries left stale items behind: rebuilt in order.
            let mut live: Vec<(A, Instant)> = self.entries.iter().map(|(a, &(_, t))| (*a, t)).collect();
            live.sort_by_key(|&(_, t)| t);
            self.order = live.into();
        }
    }

    /// Drops stale and expired items from the front of the order.
    fn prune(&mut self, now: Instant) {
        while let Some(&(a, at)) = self.order.front() {
            let current = self.entries.get(&a).is_some_and(|&(_, t)| t == at);
            if current && now.saturating_duration_since(at) < self.ttl {
                break;
            }
            self.order.pop_front();
            if current {
                self.entries.remove(&a);
            }
        }
    }

    /// Source addresses remembered now.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn a_known_source_is_not_looked_up_again_within_the_ttl() {
        let t0 = Instant::now();
        let mut o: Owners<u16, u32> = Owners::with(ms(1000), 8, 10, 2, t0);
        assert_eq!(o.look(1, t0), Look::Ask);
        o.learned(1, Some(1000), t0);
        assert_eq!(o.look(1, t0 + ms(999)), Look::Known(1000));
        assert_eq!(o.look(1, t0 + ms(1000)), Look::Ask, "expired: asked again");
        // Not found (a socket closed once sent): asked again next time, so
        // the next socket on that port is not taken for unknown.
        o.learned(1, None, t0 + ms(1000));
        assert_eq!(o.look(1, t0 + ms(1001)), Look::Ask);
        o.learned(1, Some(65534), t0 + ms(1001));
        assert_eq!(o.look(1, t0 + ms(1002)), Look::Known(65534));
    }

    #[test]
    fn past_the_lookup_budget_new_sources_share_one_bucket_then_are_dropped() {
        let t0 = Instant::now();
        let mut o: Owners<u16, u32> = Owners::with(ms(1000), 64, 10, 3, t0);
        o.learned(999, Some(7), t0);
        let looks: Vec<Look<u32>> = (0..15).map(|p| o.look(p, t0)).collect();
        assert!(looks[..10].iter().all(|l| *l == Look::Ask), "{looks:?}");
        assert!(looks[10..13].iter().all(|l| *l == Look::Unlooked), "{looks:?}");
        assert!(looks[13..].iter().all(|l| *l == Look::Drop), "{looks:?}");
        // A remembered source is never held up by the budget.
        assert_eq!(o.look(999, t0), Look::Known(7));
        // The budgets refill with time: 10 lookups a second, so 100 ms
        // buys one; 3 shared a second, so it buys none of those yet.
        assert_eq!(o.look(20, t0 + ms(100)), Look::Ask);
        assert_eq!(o.look(21, t0 + ms(100)), Look::Drop);
    }

    #[test]
    fn a_full_table_evicts_its_oldest_not_everything() {
        let t0 = Instant::now();
        let mut o: Owners<u16, u32> = Owners::with(ms(1000), 4, 1000, 10, t0);
        for p in 0..4 {
            o.learned(p, Some(u32::from(p)), t0 + ms(u64::from(p)));
        }
        // 0 is refreshed, so 1 is the oldest now.
        o.learned(0, Some(0), t0 + ms(10));
        o.learned(9, Some(9), t0 + ms(11));
        assert_eq!(o.len(), 4);
        assert_eq!(o.look(1, t0 + ms(12)), Look::Ask, "the oldest went");
        for p in [0, 2, 3, 9] {
            assert_eq!(o.look(p, t0 + ms(12)), Look::Known(u32::from(p)), "{p} stays");
        }
        // Expired entries go first, and the order stays bounded however
        // often entries are refreshed.
        for i in 0..100u64 {
            o.learned(3, Some(3), t0 + ms(300 + i));
        }
        assert!(o.order.len() <= 16, "{}", o.order.len());
        o.learned(5, Some(5), t0 + ms(1200));
        assert_eq!(o.len(), 2, "only the fresh 3 and the new 5 are left");
    }
}
