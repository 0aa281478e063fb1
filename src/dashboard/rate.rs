//! Token buckets per client IP (`RATE_RPS` refill, `RATE_BURST` size).
//! Keyed by the peer address, not the connection, so opening new
//! connections does not buy a fresh bucket. Pure: `now` is passed in.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    last: Instant,
}

/// Per-IP token buckets with a bound on how many IPs are tracked.
#[derive(Debug)]
pub struct RateLimiter {
    rps: f64,
    burst: f64,
    max_clients: usize,
    buckets: HashMap<IpAddr, Bucket>,
}

impl RateLimiter {
    pub fn new(rps: f64, burst: u32) -> RateLimiter {
        RateLimiter::with_max_clients(rps, burst, 65_536)
    }

    pub fn with_max_clients(rps: f64, burst: u32, max_clients: usize) -> RateLimiter {
        RateLimiter {
            rps,
            burst: f64::from(burst.max(1)),
            max_clients: max_clients.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token from `ip`'s bucket; false when it is empty.
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= self.max_clients {
            self.prune(now);
        }
        let (rps, burst) = (self.rps, self.burst);
        let b = self.buckets.entry(ip).or_insert(Bucket { tokens: burst, last: now });
        let elapsed = now.saturating_duration_since(b.last).as_secs_f64();
        b.tokens = (b.tokens + elapsed * rps).min(burst);
        b.last = now.max(b.last);
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Forgets buckets that have refilled (they behave like new ones). If
    /// every bucket is still draining, forgets the oldest half: a flood
    /// of distinct addresses must not grow memory without bound.
    fn prune(&mut self, now: Instant) {
        let (rps, burst) = (self.rps, self.burst);
        self.buckets
            .retain(|_, b| b.tokens + now.saturating_duration_since(b.last).as_secs_f64() * rps < burst);
        if self.buckets.len() >= self.max_clients {
            let mut lasts: Vec<Instant> = self.buckets.values().map(|b| b.last).collect();
            lasts.sort_unstable();
            let cut = lasts[lasts.len() / 2];
            self.buckets.retain(|_, b| b.last > cut);
        }
    }

    pub fn tracked(&self) -> usize {
        self.buckets.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn burst_then_refill_table() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut r = RateLimiter::new(2.0, 3); // 2 tokens/s, bucket of 3
        let a = ip("10.0.0.1");
        // (time ms, expected)
        let steps: &[(u64, bool)] = &[
            (0, true),
            (0, true),
            (0, true),
            (0, false), // burst used up
            (100, false),
            (500, true), // 0.5 s → one token
            (500, false),
            (5000, true), // long pause refills to the burst, not beyond
            (5000, true),
            (5000, true),
            (5000, false),
        ];
        for (i, (ms, want)) in steps.iter().enumerate() {
            assert_eq!(r.allow(a, at(*ms)), *want, "step {i} at {ms} ms");
        }
    }

    #[test]
    fn buckets_are_per_ip() {
        let t = Instant::now();
        let mut r = RateLimiter::new(1.0, 1);
        assert!(r.allow(ip("10.0.0.1"), t));
        assert!(!r.allow(ip("10.0.0.1"), t));
        assert!(r.allow(ip("10.0.0.2"), t));
        assert!(r.allow(ip("::1"), t));
        assert!(!r.allow(ip("::1"), t));
    }

    #[test]
    fn time_going_backwards_does_not_mint_tokens() {
        let t = Instant::now() + Duration::from_secs(10);
        let mut r = RateLimiter::new(1.0, 1);
        assert!(r.allow(ip("10.0.0.1"), t));
        assert!(!r.allow(ip("10.0.0.1"), t - Duration::from_secs(5)));
        assert!(!r.allow(ip("10.0.0.1"), t));
    }

    #[test]
    fn tracked_clients_are_bounded() {
        let t = Instant::now();
        let mut r = RateLimiter::with_max_clients(1.0, 5, 100);
        for i in 0..10_000u32 {
            let a = IpAddr::from(i.to_be_bytes());
            assert!(r.allow(a, t + Duration::from_millis(u64::from(i))));
            assert!(r.tracked() <= 100);
        }
        // Refilled buckets are pruned first.
        let mut r = RateLimiter::with_max_clients(1.0, 1, 2);
        assert!(r.allow(ip("10.0.0.1"), t));
        assert!(r.allow(ip("10.0.0.2"), t));
        assert!(r.allow(ip("10.0.0.3"), t + Duration::from_secs(2)));
        assert_eq!(r.tracked(), 1);
    }
}
