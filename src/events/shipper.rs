//! The dashboard shipper: one thread that POSTs JSON-array batches of
//! ALLOWED/BLOCKED events to `{DASHBOARD_HOST}/api/v1/logs` with
//! `X-Api-Key` and `Authorization: Bearer`, through egret's marked client.
//!
//! The queue is the [`Batcher`] (pure core): the sink pushes into it under
//! a mutex and never waits for the network; this thread cuts batches,
//! sends them with the lock released, and hands back the outcome. Network
//! errors, 5xx and 429 keep the batch queued for a retry with backoff and
//! jitter; other statuses drop it, logged once per status with the reason.
//!
//! The thread and its queue do not know HTTP: [`Shipper::start`] runs any
//! [`Deliver`] (the syslog forwarder is the other one), so every shipping
//! path has the same bounded queue, drop counting and shutdown drain.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::batch::{BatchConfig, BatchStats, Batcher, Outcome};
use super::net::{self, ClientOptions, NetError};
use super::{Action, Event, Throttle};

/// Path of the dashboard's ingest endpoint.
pub const LOGS_PATH: &str = "/api/v1/logs";

#[derive(Debug, Clone)]
pub struct ShipperOptions {
    /// `DASHBOARD_HOST` as the config normalised it
    /// (`http(s)://host[:port]`, no trailing slash).
    pub host: String,
    pub api_key: Option<String>,
    pub batch: BatchConfig,
    pub client: ClientOptions,
}

#[derive(Debug)]
#[non_exhaustive]
pub enum ShipError {
    Client(NetError),
    Spawn(std::io::Error),
}

impl fmt::Display for ShipError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ShipError::Client(e) => write!(f, "dashboard shipper: {e}"),
            ShipError::Spawn(e) => write!(f, "dashboard shipper: cannot start thread: {e}"),
        }
    }
}

impl std::error::Error for ShipError {}

/// One way out for batches of queued items: called on the shipper's
/// thread with the queue unlocked.
pub trait Deliver: Send + 'static {
    /// Sends `items` in order within `timeout`: how many of the first ones
    /// went out (and are not to be sent again), and what to do with the
    /// rest (ignored when all went out).
    fn deliver(&mut self, items: &[String], timeout: Duration) -> (usize, Outcome);
    /// Where the items go, for log lines.
    fn target(&self) -> String;
    /// Sends one heartbeat body; false when the other side has no use for
    /// heartbeats (then no more are sent).
    fn heartbeat(&mut self, _body: &str, _timeout: Duration) -> bool {
        false
    }
}

/// Whether an event goes to the dashboard at all (it stores only these).
pub fn ships(ev: &Event) -> bool {
    matches!(ev.action, Action::Allowed | Action::Blocked | Action::Audit)
}

/// What an HTTP status (or its absence: a network error) means for the
/// batch that got it.
pub fn classify(status: Option<u16>) -> Outcome {
    match status {
        Some(200..=299) => Outcome::Delivered,
        // Network error or timeout; the dashboard busy, limiting, or down.
        None | Some(408) | Some(429) | Some(500..=599) => Outcome::Retry,
        // 4xx: the request itself is wrong (key, size, format): sending it
        // again cannot help. 1xx/3xx: not an answer egret asked for.
        Some(_) => Outcome::Rejected,
    }
}

/// `[` + items joined by `,` + `]`: the items are already JSON objects.
pub fn json_array(items: &[String]) -> Vec<u8> {
    let len = items.iter().map(|s| s.len() + 1).sum::<usize>() + 2;
    let mut body = Vec::with_capacity(len);
    body.push(b'[');
    for (i, s) in items.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        body.extend_from_slice(s.as_bytes());
    }
    body.push(b']');
    body
}

/// The heartbeat schedule (see [`Shipper::set_heartbeat`]).
struct Beat {
    every: Duration,
    source: super::heartbeat::Source,
    next: Instant,
}

struct State {
    batcher: Batcher<String>,
    beat: Option<Beat>,
    /// Set by [`Shipper::shutdown`]: drain until this instant, then stop.
    stop_at: Option<Instant>,
    finished: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the thread: something pushed, or shutdown.
    wake: Condvar,
    /// Tells a waiting [`Shipper::shutdown`] that the thread is done.
    done: Condvar,
}

impl Shared {
    /// A poisoned lock means a panic in the shipper; the state (a queue and
    /// counters) is still consistent, so keep going.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The sink's handle on the shipper thread. Cloning is cheap.
#[derive(Clone)]
pub struct Shipper {
    shared: Arc<Shared>,
}

impl Shipper {
    /// The dashboard shipper.
    pub fn spawn(opts: ShipperOptions) -> Result<(Shipper, thread::JoinHandle<()>), ShipError> {
        let agent = net::agent(&opts.client).map_err(ShipError::Client)?;
        let http = HttpDeliver {
            agent,
            url: format!("{}{LOGS_PATH}", opts.host),
            heartbeat_url: format!("{}{}", opts.host, super::heartbeat::HEARTBEAT_PATH),
            api_key: opts.api_key,
            rejected_statuses: HashSet::new(),
            retry_warn: Throttle::new(Duration::from_secs(60)),
        };
        Shipper::start("shipper", opts.batch, opts.client.request_timeout, Box::new(http))
            .map_err(ShipError::Spawn)
    }

    /// A shipper thread named `name` around a [`Batcher`] with `batch`'s
    /// bounds, sending through `deliver`; one call gets at most
    /// `request_timeout` (less when a shutdown deadline is nearer).
    pub fn start(
        name: &str,
        batch: BatchConfig,
        request_timeout: Duration,
        deliver: Box<dyn Deliver>,
    ) -> std::io::Result<(Shipper, thread::JoinHandle<()>)> {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                batcher: Batcher::new(batch, Instant::now()),
                beat: None,
                stop_at: None,
                finished: false,
            }),
            wake: Condvar::new(),
            done: Condvar::new(),
        });
        let worker = Worker { shared: shared.clone(), deliver, request_timeout, rng: Jitter::seeded() };
        let handle = thread::Builder::new().name(name.into()).spawn(move || worker.run())?;
        Ok((Shipper { shared }, handle))
    }

    /// Sends `source`'s heartbeat now and every `every` after, between
    /// batches, until the shutdown drain starts or the other side says it
    /// has no use for them. A zero `every` turns heartbeats off.
    pub fn set_heartbeat(&self, every: Duration, source: super::heartbeat::Source) {
        let mut st = self.shared.lock();
        st.beat = (!every.is_zero()).then(|| Beat { every, source, next: Instant::now() });
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Queues one event's JSON; `false` when the queue was full (counted).
    /// Never waits for the network.
    pub fn push(&self, json: String) -> bool {
        let mut st = self.shared.lock();
        let was_queued = st.batcher.queued();
        let ok = st.batcher.push(json, Instant::now());
        // Wake the thread only when its next deadline may have moved: the
        // queue became non-empty or reached a full batch.
        let wake = ok && (was_queued == 0 || st.batcher.queued() == st.batcher.config().max_batch);
        drop(st);
        if wake {
            self.shared.wake.notify_one();
        }
        ok
    }

    pub fn stats(&self) -> BatchStats {
        self.shared.lock().batcher.stats()
    }

    /// Events held (queued and in flight).
    pub fn pending(&self) -> usize {
        self.shared.lock().batcher.len()
    }

    /// Starts the shutdown drain without waiting for it (so several
    /// shippers drain side by side); [`Shipper::shutdown`] waits.
    pub fn drain_until(&self, deadline: Instant) {
        let mut st = self.shared.lock();
        st.batcher.drain();
        st.stop_at = Some(st.stop_at.map_or(deadline, |d| d.min(deadline)));
        drop(st);
        self.shared.wake.notify_one();
    }

    /// Sends what is queued, without waiting for batches to fill or for the
    /// start delay, until `deadline`; then the thread stops. Returns the
    /// number of events left unsent.
    pub fn shutdown(&self, deadline: Instant) -> usize {
        self.drain_until(deadline);
        let mut st = self.shared.lock();
        while !st.finished {
            let now = Instant::now();
            // Grace beyond the deadline for a request already in flight,
            // whose timeout is capped at the deadline.
            let limit = deadline + Duration::from_millis(200);
            if now >= limit {
                break;
            }
            st = self.shared.done.wait_timeout(st, limit - now).unwrap_or_else(|e| e.into_inner()).0;
        }
        st.batcher.len()
    }
}

struct Worker {
    shared: Arc<Shared>,
    deliver: Box<dyn Deliver>,
    request_timeout: Duration,
    rng: Jitter,
}

impl Worker {
    fn run(mut self) {
        let shared = self.shared.clone();
        let mut st = shared.lock();
        loop {
            let now = Instant::now();
            if let Some(stop) = st.stop_at {
                if st.batcher.is_empty() || now >= stop {
                    break;
                }
            }
            if let Some(batch) = st.batcher.poll_flush(now) {
                let timeout = match st.stop_at {
                    Some(stop) => self.request_timeout.min(stop.saturating_duration_since(now)),
                    None => self.request_timeout,
                };
                drop(st);
                let (sent, rest) = self.deliver.deliver(&batch.items, timeout);
                st = shared.lock();
                let jitter = self.rng.next_unit();
                st.batcher.complete_partial(batch, sent, rest, Instant::now(), jitter);
                continue;
            }
            let beat_due = st.stop_at.is_none() && st.beat.as_ref().is_some_and(|b| now >= b.next);
            if let (true, Some(b)) = (beat_due, st.beat.as_mut()) {
                b.next = now + b.every;
                let source = b.source.clone();
                drop(st);
                let body = source().body();
                let keep = self.deliver.heartbeat(&body, self.request_timeout);
                st = shared.lock();
                if !keep {
                    st.beat = None;
                }
                continue;
            }
            let beat_at = st.beat.as_ref().filter(|_| st.stop_at.is_none()).map(|b| b.next);
            let wake_at = [st.batcher.next_deadline(), st.stop_at, beat_at].into_iter().flatten().min();
            st = match wake_at {
                Some(at) => {
                    let wait = at.saturating_duration_since(now).max(Duration::from_millis(1));
                    shared.wake.wait_timeout(st, wait).unwrap_or_else(|e| e.into_inner()).0
                }
                None => shared.wake.wait(st).unwrap_or_else(|e| e.into_inner()),
            };
        }
        let left = st.batcher.len();
        st.finished = true;
        drop(st);
        shared.done.notify_all();
        if left > 0 {
            log::warn!("{}: stopped with {left} events unsent", self.deliver.target());
        }
    }
}

/// The dashboard's way out: one POST of a JSON array per batch.
struct HttpDeliver {
    agent: ureq::Agent,
    url: String,
    heartbeat_url: String,
    api_key: Option<String>,
    /// Statuses already logged: each rejection reason is logged once.
    rejected_statuses: HashSet<u16>,
    retry_warn: Throttle,
}

impl Deliver for HttpDeliver {
    fn deliver(&mut self, items: &[String], timeout: Duration) -> (usize, Outcome) {
        match self.send(items, timeout) {
            Outcome::Delivered => (items.len(), Outcome::Delivered),
            other => (0, other),
        }
    }

    fn target(&self) -> String {
        format!("dashboard shipper ({})", self.url)
    }

    fn heartbeat(&mut self, body: &str, timeout: Duration) -> bool {
        let mut req = self.agent.post(&self.heartbeat_url).header("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            req = req.header("X-Api-Key", key).header("Authorization", format!("Bearer {key}"));
        }
        let req = req.config().timeout_global(Some(timeout)).build();
        match req.send(body.as_bytes()) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                let _ = resp.body_mut().with_config().limit(64 * 1024).read_to_string();
                if heartbeat_unknown(status) {
                    log::info!(
                        "dashboard shipper: {} answered HTTP {status} (a dashboard without heartbeats, such as \
                         g0efilter's); events still ship, heartbeats stop",
                        self.heartbeat_url
                    );
                    return false;
                }
                if !(200..300).contains(&status) {
                    log::debug!("dashboard shipper: heartbeat answered HTTP {status}");
                }
                true
            }
            Err(e) => {
                log::debug!("dashboard shipper: heartbeat not sent: {e}");
                true
            }
        }
    }
}

/// Whether a heartbeat's answer says the dashboard has no such endpoint.
pub fn heartbeat_unknown(status: u16) -> bool {
    matches!(status, 404 | 405)
}

impl HttpDeliver {
    /// One POST; the outcome decides the batch's fate.
    fn send(&mut self, items: &[String], timeout: Duration) -> Outcome {
        let n = items.len();
        let mut req = self.agent.post(&self.url).header("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            req = req.header("X-Api-Key", key).header("Authorization", format!("Bearer {key}"));
        }
        let req = req.config().timeout_global(Some(timeout)).build();
        let (status, why) = match req.send(&json_array(items)[..]) {
            Ok(mut resp) => {
                let status = resp.status().as_u16();
                // Read the (small) answer to its end: only then does ureq
                // put the connection back in its pool for the next batch.
                let body =
                    resp.body_mut().with_config().limit(64 * 1024).read_to_string().unwrap_or_default();
                (Some(status), clip(body.trim(), 200))
            }
            Err(e) => (None, e.to_string()),
        };
        let outcome = classify(status);
        match (outcome, status) {
            (Outcome::Delivered, _) => log::trace!("dashboard shipper: {n} events delivered"),
            (Outcome::Retry, _) => {
                let what = status.map_or(why.clone(), |s| format!("HTTP {s} {why}"));
                if let Some(held) = self.retry_warn.ready(Instant::now()) {
                    log::warn!(
                        "dashboard shipper: {} unreachable or busy ({what}); {n} events kept for retry with backoff \
                         ({held} similar warnings held back)",
                        self.url
                    );
                } else {
                    log::debug!("dashboard shipper: retry later: {what}");
                }
            }
            (Outcome::Rejected, Some(s)) => {
                let hint = match s {
                    401 | 403 => " (check DASHBOARD_API_KEY)",
                    404 => " (check DASHBOARD_HOST: is it an egret/g0efilter dashboard?)",
                    413 => " (batch too large for the dashboard)",
                    _ => "",
                };
                if self.rejected_statuses.insert(s) {
                    log::warn!(
                        "dashboard shipper: {} refused {n} events with HTTP {s} {why}{hint}; not retried \
                         (further HTTP {s} refusals are counted, not logged)",
                        self.url
                    );
                } else {
                    log::debug!("dashboard shipper: HTTP {s}: {n} events dropped");
                }
            }
            (Outcome::Rejected, None) => {}
        }
        outcome
    }
}

/// At most `max` bytes of `s` (on a char boundary), for log lines.
fn clip(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// xorshift64* for backoff jitter: spreading retries needs no
/// cryptographic quality, only a different sequence per process.
struct Jitter(u64);

impl Jitter {
    fn seeded() -> Jitter {
        let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as u64;
        Jitter((t ^ (u64::from(std::process::id()) << 32)) | 1)
    }

    /// A sample in `[0, 1)`.
    fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_table() {
        let table: &[(Option<u16>, Outcome)] = &[
            (Some(200), Outcome::Delivered),
            (Some(201), Outcome::Delivered),
            (None, Outcome::Retry),
            (Some(408), Outcome::Retry),
            (Some(429), Outcome::Retry),
            (Some(500), Outcome::Retry),
            (Some(503), Outcome::Retry),
            (Some(400), Outcome::Rejected),
            (Some(401), Outcome::Rejected),
            (Some(413), Outcome::Rejected),
            (Some(415), Outcome::Rejected),
            (Some(302), Outcome::Rejected),
        ];
        for (status, want) in table {
            assert_eq!(classify(*status), *want, "{status:?}");
        }
    }

    #[test]
    fn body_is_a_json_array_in_order() {
        assert_eq!(json_array(&[]), b"[]");
        let items = vec![r#"{"a":1}"#.to_owned(), r#"{"b":2}"#.to_owned()];
        let v: serde_json::Value = serde_json::from_slice(&json_array(&items)).unwrap();
        assert_eq!(v, serde_json::json!([{"a":1},{"b":2}]));
    }

    #[test]
    fn only_allowed_and_blocked_ship() {
        use crate::events::Component;
        let t = UNIX_EPOCH;
        assert!(ships(&Event::new(Component::Dns, Action::Allowed, "h", t)));
        assert!(ships(&Event::new(Component::Dns, Action::Blocked, "h", t)));
        assert!(!ships(&Event::new(Component::Https, Action::Redirected, "h", t)));
    }

    #[test]
    fn clip_keeps_char_boundaries() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("ééé", 3), "é…");
    }

    #[test]
    fn jitter_is_in_range_and_varies() {
        let mut j = Jitter(42);
        let xs: Vec<f64> = (0..1000).map(|_| j.next_unit()).collect();
        assert!(xs.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = xs.iter().sum::<f64>() / xs.len() as f64;
        assert!((0.4..0.6).contains(&mean), "{mean}");
    }
}
