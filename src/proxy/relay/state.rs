//! The relay loop's decisions, pure: what each socket must be polled for,
//! how long to wait, and when the relay is over. The driver
//! ([`super::relay`]) moves the bytes and reports what it saw; time and
//! readiness come in as values, so every ending is tested without sockets
//! or sleeps.

use std::time::{Duration, Instant};

/// After a later HTTP request is refused, how long the upstream may take
/// to finish its answers to the requests before it.
pub const BLOCK_GRACE: Duration = Duration::from_secs(5);

/// What a direction waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Bytes from its source.
    Read,
    /// Room at its destination for the bytes it holds.
    Write,
    /// Nothing: its source ended and it delivered everything.
    Nothing,
}

/// One direction as the driver found it after pumping it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Side {
    pub waits: Wait,
    /// Its destination's sending side was shut.
    pub shut: bool,
}

/// What to poll one socket for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Interest {
    pub read: bool,
    pub write: bool,
}

/// How a relay ended, as far as time and the directions tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    Done,
    Idle,
    Lifetime,
    /// A later request head did not complete within the head timeout of
    /// its first byte.
    HeadTimeout,
}

/// What the driver does next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Poll the client and the upstream socket, at most this long.
    Poll {
        client: Interest,
        upstream: Interest,
        timeout: Duration,
    },
    /// Pump again at once (a WebSocket answer changed what may move).
    Again,
    End(Ending),
}

/// The loop's state between steps.
#[derive(Debug, Clone)]
pub struct Relay {
    idle: Duration,
    deadline: Option<Instant>,
    last: Instant,
    /// A later request was refused: the answers before it may flow until then.
    grace: Option<Instant>,
    /// How long a later request head may take from its first byte.
    head_limit: Option<Duration>,
    /// When the request head being read now must be complete.
    head_due: Option<Instant>,
}

impl Relay {
    pub fn new(now: Instant, idle: Duration, deadline: Option<Instant>) -> Relay {
        Relay { idle, deadline, last: now, grace: None, head_limit: None, head_due: None }
    }

    /// Every later request head must complete within `limit` of its first
    /// byte (HEADER_TIMEOUT), not only within the idle time per byte.
    pub fn with_head_timeout(mut self, limit: Option<Duration>) -> Relay {
        self.head_limit = limit;
        self
    }

    /// After pumping at `now`: whether the client side holds the start of
    /// a request head that is not complete yet.
    pub fn head(&mut self, now: Instant, partial: bool) {
        match (partial, self.head_limit) {
            (true, Some(limit)) => {
                self.head_due.get_or_insert(now + limit);
            }
            _ => self.head_due = None,
        }
    }

    /// A later request was refused at `now`.
    pub fn blocked(&mut self, now: Instant) {
        self.grace = Some(now + BLOCK_GRACE);
    }

    pub fn is_blocked(&self) -> bool {
        self.grace.is_some()
    }

    /// After both directions were pumped at `now`: `moved` bytes passed,
    /// `switched` when a WebSocket answer changed the client side, and
    /// `down_finished` when the upstream → client direction delivered all
    /// its source had.
    pub fn after_pump(
        &mut self,
        now: Instant,
        moved: usize,
        switched: bool,
        up: Side,
        down: Side,
        down_finished: bool,
    ) -> Next {
        if moved > 0 {
            self.last = now;
        }
        if switched {
            return Next::Again;
        }
        if (self.is_blocked() && down_finished) || (up.shut && down.shut) {
            return Next::End(Ending::Done);
        }
        // Each socket: what the direction reading it and the one writing
        // to it wait on.
        let mut client = Interest::default();
        let mut upstream = Interest::default();
        match up.waits {
            Wait::Read => client.read = true,
            Wait::Write => upstream.write = true,
            Wait::Nothing => {}
        }
        match down.waits {
            Wait::Read => upstream.read = true,
            Wait::Write => client.write = true,
            Wait::Nothing => {}
        }
        let idle_at = self.last + self.idle;
        let mut wake = self.deadline.map_or(idle_at, |d| d.min(idle_at));
        if let Some(g) = self.grace {
            wake = wake.min(g);
        }
        if let Some(h) = self.head_due {
            if now >= h {
                return Next::End(Ending::HeadTimeout);
            }
            wake = wake.min(h);
        }
        if now >= wake {
            let over = self.deadline.is_some_and(|d| now >= d);
            // The grace ends the relay like its other clocks; the refused
            // request is what the caller reports.
            return Next::End(if over { Ending::Lifetime } else { Ending::Idle });
        }
        Next::Poll { client, upstream, timeout: (wake - now).max(Duration::from_millis(1)) }
    }

    /// After a poll: a hang-up with neither direction waiting on anything
    /// is the end (nothing will wake the poll again).
    pub fn after_poll(hung_up: bool, up: Wait, down: Wait) -> Option<Ending> {
        (hung_up && up == Wait::Nothing && down == Wait::Nothing).then_some(Ending::Done)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(10);
    const READING: Side = Side { waits: Wait::Read, shut: false };
    const WRITING: Side = Side { waits: Wait::Write, shut: false };
    const CLOSED: Side = Side { waits: Wait::Nothing, shut: true };

    #[test]
    fn polls_each_socket_for_what_its_directions_wait_on() {
        let t0 = Instant::now();
        let mut r = Relay::new(t0, IDLE, None);
        let read = Interest { read: true, write: false };
        let write = Interest { read: false, write: true };
        assert_eq!(
            r.after_pump(t0, 0, false, READING, READING, false),
            Next::Poll { client: read, upstream: read, timeout: IDLE }
        );
        // Client → upstream holds bytes: the upstream must take them; the
        // answer waits for the client.
        assert_eq!(
            r.after_pump(t0, 0, false, WRITING, WRITING, false),
            Next::Poll { client: write, upstream: write, timeout: IDLE }
        );
    }

    #[test]
    fn a_later_head_must_complete_within_the_head_timeout_of_its_first_byte() {
        let t0 = Instant::now();
        let s = |n| t0 + Duration::from_secs(n);
        let mut r = Relay::new(t0, IDLE, None).with_head_timeout(Some(Duration::from_secs(2)));
        // Idle between requests is IDLE's business.
        r.head(s(5), false);
        assert!(matches!(r.after_pump(s(5), 0, false, READING, READING, false), Next::Poll { .. }));
        // A head starts at 6 s and trickles a byte a second: cut at 8 s.
        for t in 6..8 {
            r.head(s(t), true);
            match r.after_pump(s(t), 1, false, READING, READING, false) {
                Next::Poll { timeout, .. } => assert_eq!(timeout, s(8) - s(t), "wakes for the head's end"),
                other => panic!("{other:?} at {t} s"),
            }
        }
        r.head(s(8), true);
        assert_eq!(r.after_pump(s(8), 1, false, READING, READING, false), Next::End(Ending::HeadTimeout));
        // A head that completes in time clears the clock.
        let mut r = Relay::new(t0, IDLE, None).with_head_timeout(Some(Duration::from_secs(2)));
        r.head(s(1), true);
        r.head(s(2), false);
        r.head(s(4), true);
        assert!(matches!(r.after_pump(s(5), 1, false, READING, READING, false), Next::Poll { .. }));
        // Without a head timeout, only IDLE.
        let mut r = Relay::new(t0, IDLE, None);
        r.head(s(1), true);
        assert!(matches!(r.after_pump(s(9), 1, false, READING, READING, false), Next::Poll { .. }));
    }

    #[test]
    fn idle_time_counts_from_the_last_byte() {
        let t0 = Instant::now();
        let mut r = Relay::new(t0, IDLE, None);
        let at = |s| t0 + Duration::from_secs(s);
        assert!(
            matches!(r.after_pump(at(9), 0, false, READING, READING, false), Next::Poll { timeout, .. } if timeout == Duration::from_secs(1))
        );
        // Traffic at 9 s moves the idle end to 19 s.
        assert!(
            matches!(r.after_pump(at(9), 100, false, READING, READING, false), Next::Poll { timeout, .. } if timeout == IDLE)
        );
        assert_eq!(r.after_pump(at(19), 0, false, READING, READING, false), Next::End(Ending::Idle));
    }

    #[test]
    fn the_deadline_ends_a_busy_relay() {
        let t0 = Instant::now();
        let mut r = Relay::new(t0, IDLE, Some(t0 + Duration::from_secs(3)));
        let at = |s| t0 + Duration::from_secs(s);
        assert!(
            matches!(r.after_pump(at(2), 1, false, READING, READING, false), Next::Poll { timeout, .. } if timeout == Duration::from_secs(1))
        );
        assert_eq!(r.after_pump(at(3), 1, false, READING, READING, false), Next::End(Ending::Lifetime));
    }

    #[test]
    fn both_sides_closed_is_done_and_a_websocket_switch_pumps_again() {
        let t0 = Instant::now();
        let mut r = Relay::new(t0, IDLE, None);
        assert_eq!(r.after_pump(t0, 5, false, CLOSED, CLOSED, true), Next::End(Ending::Done));
        let mut r = Relay::new(t0, IDLE, None);
        assert_eq!(r.after_pump(t0, 5, true, CLOSED, CLOSED, true), Next::Again);
        // One side closed, the other still reading: go on.
        assert!(matches!(r.after_pump(t0, 0, false, CLOSED, READING, false), Next::Poll { .. }));
    }

    #[test]
    fn a_refused_request_lets_earlier_answers_finish_within_the_grace() {
        let t0 = Instant::now();
        let mut r = Relay::new(t0, Duration::from_secs(60), None);
        r.blocked(t0);
        assert!(r.is_blocked());
        // Answers still flowing: poll, at most until the grace ends.
        assert!(
            matches!(r.after_pump(t0, 10, false, CLOSED, WRITING, false), Next::Poll { timeout, .. } if timeout == BLOCK_GRACE)
        );
        // The answers are through: done at once.
        assert_eq!(r.after_pump(t0, 0, false, CLOSED, READING, true), Next::End(Ending::Done));
        // Or the upstream dawdles past the grace.
        let mut r = Relay::new(t0, Duration::from_secs(60), None);
        r.blocked(t0);
        assert_eq!(r.after_pump(t0 + BLOCK_GRACE, 0, false, CLOSED, READING, false), Next::End(Ending::Idle));
    }

    #[test]
    fn a_hang_up_ends_only_a_relay_with_nothing_left_to_move() {
        assert_eq!(Relay::after_poll(true, Wait::Nothing, Wait::Nothing), Some(Ending::Done));
        assert_eq!(Relay::after_poll(true, Wait::Write, Wait::Nothing), None);
        assert_eq!(Relay::after_poll(false, Wait::Nothing, Wait::Nothing), None);
    }
}
