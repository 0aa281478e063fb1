//! The dashboard shipper's core: a bounded queue that cuts size- and
//! time-bounded batches, keeps a failed batch at the front for a retry
//! with exponential backoff and jitter, and counts every event it had to
//! drop.
//!
//! Pure: no I/O, no clock, no randomness. `now` and the jitter sample are
//! passed in, so every timing rule is tested by advancing a fake `Instant`.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

/// Size and time bounds of the shipper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchConfig {
    /// Most events in one POST.
    pub max_batch: usize,
    /// The oldest queued event waits at most this long for company.
    pub max_delay: Duration,
    /// Events held in memory, in flight included (`DASHBOARD_QUEUE_SIZE`).
    pub queue_size: usize,
    /// Nothing is sent before this much time after start
    /// (`DASHBOARD_START_DELAY`), so a dashboard started alongside is up.
    pub start_delay: Duration,
    pub backoff: Backoff,
}

impl Default for BatchConfig {
    fn default() -> BatchConfig {
        BatchConfig {
            max_batch: 100,
            max_delay: Duration::from_millis(500),
            queue_size: crate::config::defaults::DASHBOARD_QUEUE_SIZE,
            start_delay: crate::config::defaults::DASHBOARD_START_DELAY,
            backoff: Backoff::default(),
        }
    }
}

/// Exponential backoff with "equal jitter": the n-th retry (n from 0)
/// waits `d/2 + jitter·d/2` where `d = min(base·2ⁿ, max)`, so delays grow,
/// never collapse to zero, and many egret instances do not retry in step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff { base: Duration::from_millis(500), max: Duration::from_secs(30) }
    }
}

impl Backoff {
    /// The wait before retry number `attempt` (0 = first retry); `jitter`
    /// is a sample in `[0, 1)` (values outside are clamped).
    pub fn delay(&self, attempt: u32, jitter: f64) -> Duration {
        let exp = self.base.saturating_mul(1u32.checked_shl(attempt.min(31)).unwrap_or(u32::MAX));
        let d = exp.min(self.max);
        let j = if jitter.is_finite() { jitter.clamp(0.0, 1.0) } else { 0.0 };
        d / 2 + d.mul_f64(j / 2.0)
    }
}

/// What happened to a batch handed out by [`Batcher::poll_flush`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted (2xx): the events are gone.
    Delivered,
    /// Worth retrying (network error, 5xx, 429): the events go back to the
    /// front of the queue, in order, and the next send waits for the backoff.
    Retry,
    /// Refused for good (other 4xx): the events are dropped and counted.
    Rejected,
}

/// A batch on its way; give it back with [`Batcher::complete`].
#[derive(Debug, PartialEq, Eq)]
pub struct Batch<T> {
    pub items: Vec<T>,
    arrivals: Vec<Instant>,
}

/// Counters since start; every event pushed ends up in exactly one of
/// `delivered`, `rejected`, `dropped` or the queue.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    pub delivered: u64,
    pub rejected: u64,
    /// Refused at `push` because the queue was full.
    pub dropped: u64,
    /// Failed attempts that were retried.
    pub retries: u64,
}

#[derive(Debug)]
pub struct Batcher<T> {
    cfg: BatchConfig,
    /// Each event with the instant it was queued.
    queue: VecDeque<(T, Instant)>,
    /// Events handed out in the current batch (still count against the
    /// queue size).
    in_flight: usize,
    /// End of the start delay.
    start_at: Instant,
    /// End of the current backoff, after a failed attempt.
    retry_at: Option<Instant>,
    /// Consecutive failures of the front batch.
    attempt: u32,
    /// When the queue is being drained for shutdown: no waiting for company
    /// or for the start delay.
    draining: bool,
    stats: BatchStats,
}

impl<T> Batcher<T> {
    /// A batcher whose start delay counts from `now`.
    pub fn new(cfg: BatchConfig, now: Instant) -> Batcher<T> {
        let cfg = BatchConfig { max_batch: cfg.max_batch.max(1), queue_size: cfg.queue_size.max(1), ..cfg };
        Batcher {
            queue: VecDeque::with_capacity(cfg.queue_size.min(4096)),
            in_flight: 0,
            start_at: now + cfg.start_delay,
            retry_at: None,
            attempt: 0,
            draining: false,
            stats: BatchStats::default(),
            cfg,
        }
    }

    /// Queues one event; returns `false` (and counts a drop) when the queue
    /// (in-flight events included) is full.
    pub fn push(&mut self, item: T, now: Instant) -> bool {
        if self.len() >= self.cfg.queue_size {
            self.stats.dropped += 1;
            return false;
        }
        self.queue.push_back((item, now));
        true
    }

    /// Events held: queued plus in flight.
    pub fn len(&self) -> usize {
        self.queue.len() + self.in_flight
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Events waiting, not counting a batch in flight.
    pub fn queued(&self) -> usize {
        self.queue.len()
    }

    pub fn stats(&self) -> BatchStats {
        self.stats
    }

    pub fn config(&self) -> &BatchConfig {
        &self.cfg
    }

    /// Whether a batch is out and not yet completed.
    pub fn in_flight(&self) -> bool {
        self.in_flight > 0
    }

    /// From now on, send whatever is queued as soon as the backoff allows
    /// (shutdown flush): the start delay and `max_delay` no longer apply.
    pub fn drain(&mut self) {
        self.draining = true;
    }

    /// The instant at which [`Batcher::poll_flush`] will next hand out a
    /// batch, or `None` when there is nothing to do until something is
    /// pushed or the batch in flight completes.
    pub fn next_deadline(&self) -> Option<Instant> {
        if self.in_flight > 0 {
            return None;
        }
        let &(_, oldest) = self.queue.front()?;
        let mut at = if self.draining || self.queue.len() >= self.cfg.max_batch {
            oldest
        } else {
            oldest + self.cfg.max_delay
        };
        if !self.draining {
            at = at.max(self.start_at);
        }
        if let Some(r) = self.retry_at {
            at = at.max(r);
        }
        Some(at)
    }

    /// Hands out the next batch when one is due: the queue holds a full
    /// batch or its oldest event has waited `max_delay`, the start delay
    /// and any backoff have passed, and no other batch is in flight.
    pub fn poll_flush(&mut self, now: Instant) -> Option<Batch<T>> {
        match self.next_deadline() {
            Some(at) if at <= now => {}
            _ => return None,
        }
        let n = self.queue.len().min(self.cfg.max_batch);
        let mut arrivals = Vec::with_capacity(n);
        let items: Vec<T> = self
            .queue
            .drain(..n)
            .map(|(item, at)| {
                arrivals.push(at);
                item
            })
            .collect();
        self.in_flight = items.len();
        Some(Batch { items, arrivals })
    }

    /// Takes a batch back. `jitter` in `[0, 1)` spreads the retry time.
    pub fn complete(&mut self, batch: Batch<T>, outcome: Outcome, now: Instant, jitter: f64) {
        self.in_flight = 0;
        let n = batch.items.len() as u64;
        match outcome {
            Outcome::Delivered | Outcome::Rejected => {
                if outcome == Outcome::Delivered {
                    self.stats.delivered += n;
                } else {
                    self.stats.rejected += n;
                }
                self.attempt = 0;
                self.retry_at = None;
            }
            Outcome::Retry => {
                self.stats.retries += 1;
                for pair in batch.items.into_iter().zip(batch.arrivals).rev() {
                    self.queue.push_front(pair);
                }
                self.retry_at = Some(now + self.cfg.backoff.delay(self.attempt, jitter));
                self.attempt = self.attempt.saturating_add(1);
            }
        }
    }
    /// Takes a batch back of which only the first `sent` events went out
    /// (a stream or datagram transport that failed part-way): those count
    /// as delivered and are not sent again, the rest meets `rest`'s fate.
    /// Progress means the peer was there, so the backoff starts over.
    pub fn complete_partial(
        &mut self,
        mut batch: Batch<T>,
        sent: usize,
        rest: Outcome,
        now: Instant,
        jitter: f64,
    ) {
        let sent = sent.min(batch.items.len());
        if sent == batch.items.len() {
            return self.complete(batch, Outcome::Delivered, now, jitter);
        }
        if sent > 0 {
            batch.items.drain(..sent);
            batch.arrivals.drain(..sent);
            self.stats.delivered += sent as u64;
            self.attempt = 0;
        }
        self.complete(batch, rest, now, jitter)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn cfg(max_batch: usize, queue_size: usize) -> BatchConfig {
        BatchConfig {
            max_batch,
            max_delay: 100 * MS,
            queue_size,
            start_delay: Duration::ZERO,
            backoff: Backoff { base: 1000 * MS, max: 8000 * MS },
        }
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let b = Backoff { base: 1000 * MS, max: 8000 * MS };
        // (attempt, jitter, expected)
        let table: &[(u32, f64, u64)] = &[
            (0, 0.0, 500),
            (0, 0.999_999, 999),
            (1, 0.0, 1000),
            (2, 0.5, 3000),
            (3, 0.0, 4000),
            (4, 0.0, 4000), // capped at max/2 + …
            (4, 1.0, 8000),
            (200, 0.0, 4000), // no overflow
            (1, f64::NAN, 1000),
            (1, -3.0, 1000),
        ];
        for &(attempt, jitter, want) in table {
            assert_eq!(
                b.delay(attempt, jitter).as_millis() as u64,
                want,
                "attempt {attempt} jitter {jitter}"
            );
        }
    }

    #[test]
    fn size_bound_flushes_at_once() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(3, 10), t0);
        for i in 0..7 {
            assert!(b.push(i, t0));
        }
        assert_eq!(b.next_deadline(), Some(t0));
        let batch = b.poll_flush(t0).unwrap();
        assert_eq!(batch.items, [0, 1, 2]);
        assert!(b.poll_flush(t0).is_none(), "one batch in flight at a time");
        assert_eq!(b.next_deadline(), None);
        b.complete(batch, Outcome::Delivered, t0, 0.0);
        assert_eq!(b.poll_flush(t0).unwrap().items, [3, 4, 5]);
    }

    #[test]
    fn time_bound_flushes_a_partial_batch() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(10, 10), t0);
        b.push('a', t0);
        b.push('b', t0 + 50 * MS);
        assert_eq!(b.next_deadline(), Some(t0 + 100 * MS));
        assert!(b.poll_flush(t0 + 99 * MS).is_none());
        let batch = b.poll_flush(t0 + 100 * MS).unwrap();
        assert_eq!(batch.items, ['a', 'b']);
        b.complete(batch, Outcome::Delivered, t0 + 101 * MS, 0.0);
        assert!(b.is_empty());
        assert_eq!(b.next_deadline(), None);
        // A new event starts a new clock.
        b.push('c', t0 + 500 * MS);
        assert_eq!(b.next_deadline(), Some(t0 + 600 * MS));
    }

    #[test]
    fn the_rest_of_a_cut_waits_for_its_own_oldest_event() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(2, 10), t0);
        b.push(1, t0);
        b.push(2, t0);
        b.push(3, t0 + 80 * MS);
        let batch = b.poll_flush(t0 + 10 * MS).unwrap();
        b.complete(batch, Outcome::Delivered, t0 + 20 * MS, 0.0);
        assert_eq!(b.next_deadline(), Some(t0 + 180 * MS));
    }

    #[test]
    fn start_delay_holds_everything_back() {
        let t0 = Instant::now();
        let mut b = Batcher::new(BatchConfig { start_delay: 5000 * MS, ..cfg(2, 10) }, t0);
        b.push(1, t0);
        b.push(2, t0);
        assert_eq!(b.next_deadline(), Some(t0 + 5000 * MS));
        assert!(b.poll_flush(t0 + 4999 * MS).is_none());
        assert!(b.poll_flush(t0 + 5000 * MS).is_some());
    }

    #[test]
    fn retry_keeps_order_and_backs_off() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(2, 10), t0);
        for i in 0..3 {
            b.push(i, t0);
        }
        let mut now = t0;
        // Three failures: waits of 500, 1000, 2000 ms (jitter 0).
        for (k, wait) in [500u32, 1000, 2000].into_iter().enumerate() {
            let batch = b.poll_flush(now).unwrap_or_else(|| panic!("attempt {k}"));
            assert_eq!(batch.items, [0, 1]);
            b.complete(batch, Outcome::Retry, now, 0.0);
            assert_eq!(b.len(), 3, "nothing lost");
            assert_eq!(b.next_deadline(), Some(now + wait * MS));
            assert!(b.poll_flush(now + (wait - 1) * MS).is_none());
            now += wait * MS;
        }
        // Events pushed meanwhile queue behind the retried ones.
        b.push(3, now);
        let batch = b.poll_flush(now).unwrap();
        assert_eq!(batch.items, [0, 1]);
        b.complete(batch, Outcome::Delivered, now, 0.0);
        let batch = b.poll_flush(now).unwrap();
        assert_eq!(batch.items, [2, 3], "no backoff after a success");
        b.complete(batch, Outcome::Delivered, now, 0.0);
        assert_eq!(b.stats(), BatchStats { delivered: 4, rejected: 0, dropped: 0, retries: 3 });
    }

    #[test]
    fn rejected_batches_are_dropped_not_retried() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(2, 10), t0);
        for i in 0..3 {
            b.push(i, t0);
        }
        let batch = b.poll_flush(t0).unwrap();
        b.complete(batch, Outcome::Rejected, t0, 0.0);
        assert_eq!(b.len(), 1);
        assert_eq!(b.stats().rejected, 2);
        assert_eq!(b.stats().retries, 0);
    }

    #[test]
    fn overflow_drops_are_counted_exactly_in_flight_included() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(4, 10), t0);
        let accepted = (0..10).filter(|&i| b.push(i, t0)).count();
        assert_eq!(accepted, 10);
        let batch = b.poll_flush(t0).unwrap();
        // 4 in flight + 6 queued = full.
        let refused = (10..25).filter(|&i| !b.push(i, t0)).count();
        assert_eq!(refused, 15);
        assert_eq!(b.stats().dropped, 15);
        b.complete(batch, Outcome::Retry, t0, 0.0);
        assert!(!b.push(99, t0));
        assert_eq!(b.stats().dropped, 16);
        assert_eq!(b.len(), 10);
    }

    #[test]
    fn drain_ignores_start_delay_and_max_delay_but_not_backoff() {
        let t0 = Instant::now();
        let mut b = Batcher::new(BatchConfig { start_delay: 5000 * MS, ..cfg(10, 10) }, t0);
        b.push(1, t0);
        b.drain();
        let batch = b.poll_flush(t0).unwrap();
        b.complete(batch, Outcome::Retry, t0, 0.0);
        assert_eq!(b.next_deadline(), Some(t0 + 500 * MS));
    }

    #[test]
    fn a_partial_send_delivers_its_prefix_and_keeps_the_rest_in_order() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(4, 10), t0);
        for i in 0..6 {
            b.push(i, t0);
        }
        // Two failures first, so the backoff has grown.
        for _ in 0..2 {
            let batch = b.poll_flush(b.next_deadline().unwrap()).unwrap();
            b.complete(batch, Outcome::Retry, t0, 0.0);
        }
        let now = b.next_deadline().unwrap();
        let batch = b.poll_flush(now).unwrap();
        assert_eq!(batch.items, [0, 1, 2, 3]);
        b.complete_partial(batch, 3, Outcome::Retry, now, 0.0);
        assert_eq!(b.len(), 3, "the unsent one is back, in front");
        assert_eq!(b.next_deadline(), Some(now + 500 * MS), "progress resets the backoff");
        let batch = b.poll_flush(now + 500 * MS).unwrap();
        assert_eq!(batch.items, [3, 4, 5]);
        b.complete_partial(batch, 3, Outcome::Retry, now, 0.0);
        assert!(b.is_empty());
        assert_eq!(b.stats(), BatchStats { delivered: 6, rejected: 0, dropped: 0, retries: 3 });
        // Nothing sent at all is a plain outcome; more than the batch is clamped.
        b.push(7, now);
        let batch = b.poll_flush(now + 500 * MS).unwrap();
        b.complete_partial(batch, 0, Outcome::Rejected, now, 0.0);
        b.push(8, now);
        let batch = b.poll_flush(now + 500 * MS).unwrap();
        b.complete_partial(batch, 9, Outcome::Retry, now, 0.0);
        assert_eq!((b.stats().rejected, b.stats().delivered, b.len()), (1, 7, 0));
    }

    #[test]
    fn tiny_configs_are_clamped() {
        let t0 = Instant::now();
        let mut b = Batcher::new(cfg(0, 0), t0);
        assert!(b.push(1, t0));
        assert!(!b.push(2, t0));
        assert_eq!(b.poll_flush(t0).unwrap().items, [1]);
    }
}
