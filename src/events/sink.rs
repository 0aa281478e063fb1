//! The sink thread: takes events off the [`Emitter`](super::Emitter)'s
//! bounded channel and fans them out: one JSON line each to stdout and to
//! `LOG_FILE` (mode 0600, appended, reopened on request, rotated by size),
//! ALLOWED/BLOCKED ones to the dashboard [`Shipper`], every one to the
//! syslog forwarder ([`super::syslog`]), BLOCKED ones to the alert
//! [`Notifier`] (Gotify, ntfy, Slack, Discord, generic webhooks); each is counted by action, component and reason
//! ([`Tally`]). Drops anywhere in the pipeline are counted and reported by
//! a rate-limited warning.
//!
//! I/O shell. Nothing here blocks on the network: the shippers and the
//! alert workers have their own threads and bounded queues.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::gotify::{AlertRules, AlertStats, GotifyError, Notifier};
use super::net::ClientOptions;
use super::notify::Target;
use super::shipper::{self, ShipError, Shipper, ShipperOptions};
use super::syslog::{self, SyslogError, SyslogOptions};
use super::tally::Tally;
use super::{Emitter, Event, Throttle};

/// Events the channel holds before `emit` starts dropping.
pub const CHANNEL_CAPACITY: usize = 4096;
/// How often the sink looks at its flags (reopen, stop) when idle.
const TICK: Duration = Duration::from_millis(200);
/// At most one drop warning per this period.
const DROP_WARN_PERIOD: Duration = Duration::from_secs(10);
/// Events handled between two flushes at most, so output stays prompt
/// under a flood.
const BURST: usize = 1024;
/// After a burst the sink lets events gather this long before it waits on
/// the channel again. A sink blocked in `recv` is woken by every `emit`
/// (a futex wake and a context switch per event on the data path's
/// thread: a third of the DNS server's CPU per blocked query in a
/// profile); this bounds the wake-ups to a few hundred a second. At
/// 100,000 events/s the channel holds 200 of `CHANNEL_CAPACITY` by then.
pub const COALESCE: Duration = Duration::from_millis(2);

/// `LOG_FILE` handling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFileOptions {
    pub path: PathBuf,
    /// Rotate past this many bytes; zero never rotates.
    pub max_size: u64,
    /// Rotated files kept: `LOG_FILE.1` (newest) … `LOG_FILE.<keep>`.
    pub keep: usize,
}

/// Alerting: one worker and queue per target.
#[derive(Debug, Clone)]
pub struct AlertOptions {
    /// `NOTIFICATION_HOST`'s Gotify first, then `NOTIFICATION_URLS`.
    pub targets: Vec<Target>,
    pub backoff: Duration,
    pub ignore_domains: Vec<String>,
    pub client: ClientOptions,
}

/// Everything the sink does; [`super::spawn`] builds it from the config.
pub struct SinkOptions {
    pub hostname: String,
    pub channel_capacity: usize,
    /// Where JSON lines go besides the file; `None` for no stdout.
    pub stdout: Option<Box<dyn Write + Send>>,
    pub log_file: Option<LogFileOptions>,
    pub shipper: Option<ShipperOptions>,
    pub alerts: Option<AlertOptions>,
    /// `SYSLOG_URL`: every event to a syslog collector.
    pub syslog: Option<SyslogOptions>,
    /// `LEARNING_MODE`: the suggested policy, rewritten on every change.
    pub learning: Option<LearningOptions>,
}

/// Where learning mode keeps its suggested policy.
#[derive(Debug, Clone)]
pub struct LearningOptions {
    pub path: PathBuf,
    /// Sibling names under one `*.parent` (`LEARNING_GROUP`).
    pub group: bool,
}

/// The learner and whether its file is behind it.
struct Learning {
    learner: crate::learn::Learner,
    opts: LearningOptions,
    dirty: bool,
    /// A write failed: said once, retried at each change.
    failed: bool,
}

impl Learning {
    /// Writes the suggestion whole (a temporary file renamed over it), so
    /// a reader never sees half of one.
    fn write(&mut self) {
        if !self.dirty {
            return;
        }
        let tmp = self.opts.path.with_extension("tmp");
        let text = self.learner.render(self.opts.group);
        match std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.opts.path)) {
            Ok(()) => {
                self.dirty = false;
                self.failed = false;
            }
            Err(e) if !self.failed => {
                self.failed = true;
                log::warn!(
                    "LEARNING_OUTPUT {}: cannot write the suggested policy: {e}",
                    self.opts.path.display()
                );
            }
            Err(_) => {}
        }
    }
}

#[derive(Debug)]
#[non_exhaustive]
pub enum SinkError {
    Shipper(ShipError),
    Gotify(GotifyError),
    Syslog(SyslogError),
    Spawn(io::Error),
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SinkError::Shipper(e) => e.fmt(f),
            SinkError::Gotify(e) => e.fmt(f),
            SinkError::Syslog(e) => e.fmt(f),
            SinkError::Spawn(e) => write!(f, "event sink: cannot start thread: {e}"),
        }
    }
}

impl std::error::Error for SinkError {}

/// Counters of the sink itself.
#[derive(Debug, Default)]
pub struct SinkStats {
    /// Events handled (written and handed on).
    pub events: AtomicU64,
    /// Lines that could not be written to `LOG_FILE`.
    pub file_errors: AtomicU64,
    pub rotations: AtomicU64,
    pub reopens: AtomicU64,
    /// Events by action, component and reason.
    pub decisions: Tally,
}

pub use super::tally::Counts;

impl Counts {
    /// What a heartbeat reports: decisions by action, and the drops.
    pub fn totals(&self) -> super::heartbeat::Totals {
        let mut t = super::heartbeat::Totals {
            dropped: self.channel_dropped + self.ship_dropped,
            ..Default::default()
        };
        for (action, _, _, n) in self.decisions.nonzero() {
            match action {
                "allowed" => t.allowed += n,
                "blocked" => t.blocked += n,
                "audit" => t.audit += n,
                _ => {}
            }
        }
        t
    }
}

/// The daemon's handle on the pipeline.
pub struct SinkHandle {
    reopen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
    shipper: Option<Shipper>,
    syslog: Option<Shipper>,
    stats: Arc<SinkStats>,
    alerts: Vec<Arc<AlertStats>>,
    channel_dropped: Arc<AtomicU64>,
}

/// What shutdown managed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Events still queued for the dashboard and syslog at the deadline.
    pub unsent: usize,
    /// Whether the sink thread finished writing before the deadline.
    pub sink_finished: bool,
}

impl SinkHandle {
    /// The flag the daemon's SIGHUP handling sets: `LOG_FILE` is reopened
    /// within a tick (after `logrotate` moved it away).
    pub fn reopen_flag(&self) -> Arc<AtomicBool> {
        self.reopen.clone()
    }

    pub fn reopen(&self) {
        self.reopen.store(true, Ordering::Relaxed);
    }

    pub fn counts(&self) -> Counts {
        let ship = self.shipper.as_ref().map(|s| (s.stats(), s.pending())).unwrap_or_default();
        let sys = self.syslog.as_ref().map(|s| (s.stats(), s.pending())).unwrap_or_default();
        let g = |f: fn(&AlertStats) -> &AtomicU64| {
            self.alerts.iter().map(|s| f(s).load(Ordering::Relaxed)).sum::<u64>()
        };
        Counts {
            events: self.stats.events.load(Ordering::Relaxed),
            channel_dropped: self.channel_dropped.load(Ordering::Relaxed),
            file_errors: self.stats.file_errors.load(Ordering::Relaxed),
            shipped: ship.0.delivered,
            ship_rejected: ship.0.rejected,
            ship_dropped: ship.0.dropped,
            ship_retries: ship.0.retries,
            ship_pending: ship.1 as u64,
            ship_foreign_listener: super::net::FOREIGN_LISTENERS.load(Ordering::Relaxed),
            alerts_sent: g(|s| &s.sent),
            alerts_failed: g(|s| &s.failed),
            alerts_dropped: g(|s| &s.dropped),
            syslog_sent: sys.0.delivered,
            syslog_dropped: sys.0.dropped,
            syslog_retries: sys.0.retries,
            syslog_pending: sys.1 as u64,
            decisions: self.stats.decisions.snapshot(),
        }
    }

    pub fn stats(&self) -> Arc<SinkStats> {
        self.stats.clone()
    }

    /// Heartbeats to the dashboard (when there is one) every `every`.
    pub fn set_heartbeat(&self, every: Duration, source: super::heartbeat::Source) {
        if let Some(s) = &self.shipper {
            s.set_heartbeat(every, source);
        }
    }

    /// Stops the pipeline: the sink writes out what the channel holds, then
    /// the shippers (dashboard, syslog) send what they can until
    /// `deadline`. Events emitted after this are dropped (and counted).
    pub fn shutdown(mut self, deadline: Instant) -> ShutdownReport {
        self.stop.store(true, Ordering::Relaxed);
        let mut sink_finished = false;
        if let Some(t) = self.thread.take() {
            while !t.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(5));
            }
            if t.is_finished() {
                sink_finished = true;
                let _ = t.join();
            }
        }
        let shippers = [self.shipper.as_ref(), self.syslog.as_ref()];
        for s in shippers.iter().flatten() {
            s.drain_until(deadline);
        }
        let unsent = shippers.iter().flatten().map(|s| s.shutdown(deadline)).sum();
        ShutdownReport { unsent, sink_finished }
    }
}

/// Starts the sink (and the shipper and alert threads it feeds).
pub fn spawn_with(opts: SinkOptions) -> Result<(Emitter, SinkHandle), SinkError> {
    // A LOG_FILE that cannot be opened never stops egret (g0efilter's
    // logger does not either): stdout still carries every event, and the
    // file is retried every few seconds.
    let log_file = opts.log_file.as_ref().map(|o| LogFile::open_or_retry(o.clone(), Instant::now()));
    let shipper = match opts.shipper {
        Some(o) => Some(Shipper::spawn(o).map_err(SinkError::Shipper)?.0),
        None => None,
    };
    let syslog = match opts.syslog {
        Some(o) => Some(syslog::spawn(o).map_err(SinkError::Syslog)?),
        None => None,
    };
    let notifier = match &opts.alerts {
        Some(o) if !o.targets.is_empty() => {
            let rules = AlertRules::new(o.backoff, &o.ignore_domains).map_err(SinkError::Gotify)?;
            Some(Notifier::spawn(&o.targets, rules, &o.client).map_err(SinkError::Gotify)?.0)
        }
        _ => None,
    };
    let (emitter, rx) = Emitter::channel(opts.channel_capacity.max(1), &opts.hostname);
    let stats = Arc::new(SinkStats::default());
    let reopen = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let alerts = notifier.as_ref().map(Notifier::stats).unwrap_or_default();
    let sink = Sink {
        rx,
        stdout: opts.stdout,
        out_buf: Vec::with_capacity(64 * 1024),
        log_file,
        shipper: shipper.clone(),
        syslog: syslog.clone(),
        procid: std::process::id(),
        notifier,
        reopen: reopen.clone(),
        stop: stop.clone(),
        stats: stats.clone(),
        channel_dropped: emitter.drop_counter(),
        drops: DropReport::new(DROP_WARN_PERIOD),
        learning: opts.learning.map(|opts| Learning {
            learner: Default::default(),
            opts,
            // Written at once: the file says learning is on before any
            // traffic.
            dirty: true,
            failed: false,
        }),
    };
    let thread =
        thread::Builder::new().name("events".into()).spawn(move || sink.run()).map_err(SinkError::Spawn)?;
    let handle = SinkHandle {
        reopen,
        stop,
        thread: Some(thread),
        shipper,
        syslog,
        stats,
        alerts,
        channel_dropped: emitter.drop_counter(),
    };
    Ok((emitter, handle))
}

struct Sink {
    rx: Receiver<Event>,
    stdout: Option<Box<dyn Write + Send>>,
    /// One burst of stdout lines, written with one call.
    out_buf: Vec<u8>,
    log_file: Option<LogFile>,
    shipper: Option<Shipper>,
    syslog: Option<Shipper>,
    /// PROCID of the syslog messages.
    procid: u32,
    notifier: Option<Notifier>,
    reopen: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
    stats: Arc<SinkStats>,
    channel_dropped: Arc<AtomicU64>,
    drops: DropReport,
    learning: Option<Learning>,
}

impl Sink {
    fn run(mut self) {
        loop {
            match self.rx.recv_timeout(TICK) {
                Ok(ev) => {
                    self.handle(ev);
                    for _ in 1..BURST {
                        match self.rx.try_recv() {
                            Ok(ev) => self.handle(ev),
                            Err(_) => break,
                        }
                    }
                    self.flush();
                    if !self.stop.load(Ordering::Relaxed) {
                        std::thread::sleep(COALESCE);
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if self.reopen.swap(false, Ordering::Relaxed) {
                if let Some(f) = &mut self.log_file {
                    f.reopen();
                    self.stats.reopens.fetch_add(1, Ordering::Relaxed);
                }
            }
            if let Some(f) = &mut self.log_file {
                f.retry_if_broken(Instant::now());
            }
            self.report_drops(Instant::now());
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
        }
        // Whatever was emitted before the stop is still written.
        while let Ok(ev) = self.rx.try_recv() {
            self.handle(ev);
        }
        self.flush();
        self.report_drops(Instant::now());
    }

    fn handle(&mut self, ev: Event) {
        let json = ev.to_json();
        if self.stdout.is_some() {
            self.out_buf.extend_from_slice(json.as_bytes());
            self.out_buf.push(b'\n');
        }
        if let Some(f) = &mut self.log_file {
            if !f.write_line(&json, Instant::now()) {
                self.stats.file_errors.fetch_add(1, Ordering::Relaxed);
            }
            if f.rotated {
                f.rotated = false;
                self.stats.rotations.fetch_add(1, Ordering::Relaxed);
            }
        }
        if let Some(n) = &mut self.notifier {
            n.offer(&ev, Instant::now());
        }
        if let Some(l) = &mut self.learning {
            if let Ok(v) = serde_json::from_str::<serde_json::Value>(&json) {
                l.dirty |= l.learner.observe(&v);
            }
        }
        if let Some(s) = &self.syslog {
            s.push(syslog::message(&ev, &json, self.procid));
        }
        self.stats.decisions.count(&ev);
        if let Some(s) = &self.shipper {
            if shipper::ships(&ev) {
                s.push(json);
            }
        }
        // Counted last: once `events` shows it, every output has it.
        self.stats.events.fetch_add(1, Ordering::Relaxed);
    }

    fn flush(&mut self) {
        if let Some(out) = &mut self.stdout {
            if !self.out_buf.is_empty() {
                // stdout gone (closed pipe) is not worth dying for: the file
                // and the dashboard still get the events.
                let _ = out.write_all(&self.out_buf).and_then(|_| out.flush());
                self.out_buf.clear();
            }
        }
        if let Some(f) = &mut self.log_file {
            f.flush(Instant::now());
        }
        if let Some(l) = &mut self.learning {
            l.write();
        }
    }

    fn report_drops(&mut self, now: Instant) {
        let channel = self.channel_dropped.load(Ordering::Relaxed);
        let queue = self.shipper.as_ref().map_or(0, |s| s.stats().dropped);
        let syslog = self.syslog.as_ref().map_or(0, |s| s.stats().dropped);
        let alerts = self
            .notifier
            .as_ref()
            .map_or(0, |n| n.stats().iter().map(|s| s.dropped.load(Ordering::Relaxed)).sum());
        if let Some(msg) = self.drops.check(now, channel, queue, syslog, alerts) {
            log::warn!("{msg}");
        }
    }
}

/// The rate-limited drop warning: at most one per period, and only when
/// the totals grew. Pure: `now` and the counters are passed in.
#[derive(Debug)]
pub struct DropReport {
    reported: u64,
    throttle: Throttle,
}

impl DropReport {
    pub fn new(period: Duration) -> DropReport {
        DropReport { reported: 0, throttle: Throttle::new(period) }
    }

    /// The warning to log now, if any, given the running totals.
    pub fn check(
        &mut self,
        now: Instant,
        channel: u64,
        queue: u64,
        syslog: u64,
        alerts: u64,
    ) -> Option<String> {
        let total = channel + queue + syslog + alerts;
        if total <= self.reported || self.throttle.ready(now).is_none() {
            return None;
        }
        let new = total - self.reported;
        self.reported = total;
        Some(format!(
            "events: {new} events dropped since the last report (totals: {channel} at the sink channel, \
             {queue} at the dashboard queue, {syslog} at the syslog queue, {alerts} alerts); \
             the data path never waits for telemetry"
        ))
    }
}

/// `LOG_FILE`: appended JSON lines, mode 0600, reopened on request and
/// rotated past `max_size`. A write error is reported (rate-limited) and
/// the file reopened later; it never stops the sink.
struct LogFile {
    opts: LogFileOptions,
    file: Option<BufWriter<File>>,
    /// Bytes in the current file, for rotation.
    size: u64,
    rotated: bool,
    warn: Throttle,
    next_retry: Option<Instant>,
}

impl LogFile {
    /// [`LogFile::open`], or a closed file that [`LogFile::retry_if_broken`]
    /// reopens later; either way egret runs (with a warning now).
    fn open_or_retry(opts: LogFileOptions, now: Instant) -> LogFile {
        match LogFile::open(opts.clone()) {
            Ok(f) => f,
            Err(e) => {
                log::warn!(
                    "LOG_FILE {}: cannot open: {e}; egret runs on, events still go to stdout, \
                     and the file is retried every 5 s",
                    opts.path.display()
                );
                let mut warn = Throttle::new(Duration::from_secs(60));
                let _ = warn.ready(now);
                LogFile {
                    opts,
                    file: None,
                    size: 0,
                    rotated: false,
                    warn,
                    next_retry: Some(now + Duration::from_secs(5)),
                }
            }
        }
    }

    fn open(opts: LogFileOptions) -> io::Result<LogFile> {
        let (file, size) = open_append(&opts.path)?;
        Ok(LogFile {
            opts,
            file: Some(BufWriter::with_capacity(64 * 1024, file)),
            size,
            rotated: false,
            warn: Throttle::new(Duration::from_secs(60)),
            next_retry: None,
        })
    }

    /// Appends one line; `false` if it could not be written.
    fn write_line(&mut self, line: &str, now: Instant) -> bool {
        let len = line.len() as u64 + 1;
        if self.opts.max_size > 0 && self.size > 0 && self.size + len > self.opts.max_size {
            self.rotate(now);
        }
        let Some(w) = &mut self.file else { return false };
        match w.write_all(line.as_bytes()).and_then(|_| w.write_all(b"\n")) {
            Ok(()) => {
                self.size += len;
                true
            }
            Err(e) => {
                self.fail("write", &e, now);
                false
            }
        }
    }

    fn flush(&mut self, now: Instant) {
        if let Some(w) = &mut self.file {
            if let Err(e) = w.flush() {
                self.fail("write", &e, now);
            }
        }
    }

    fn fail(&mut self, what: &str, e: &io::Error, now: Instant) {
        if let Some(held) = self.warn.ready(now) {
            log::warn!(
                "LOG_FILE {}: cannot {what}: {e}; events still go to stdout ({held} similar errors held back)",
                self.opts.path.display()
            );
        }
        // Drop the handle without flushing again; reopen later.
        if let Some(w) = self.file.take() {
            let _ = w.into_parts();
        }
        self.next_retry = Some(now + Duration::from_secs(5));
    }

    fn retry_if_broken(&mut self, now: Instant) {
        if self.file.is_none() && self.next_retry.map_or(true, |t| now >= t) {
            self.reopen_at(now);
        }
    }

    fn reopen(&mut self) {
        self.reopen_at(Instant::now());
    }

    fn reopen_at(&mut self, now: Instant) {
        if let Some(mut w) = self.file.take() {
            let _ = w.flush();
        }
        match open_append(&self.opts.path) {
            Ok((f, size)) => {
                self.file = Some(BufWriter::with_capacity(64 * 1024, f));
                self.size = size;
                self.next_retry = None;
            }
            Err(e) => self.fail("open", &e, now),
        }
    }

    /// `LOG_FILE` → `.1` → `.2` … → `.<keep>` (the oldest is replaced),
    /// then a fresh `LOG_FILE`.
    fn rotate(&mut self, now: Instant) {
        if let Some(mut w) = self.file.take() {
            let _ = w.flush();
        }
        let keep = self.opts.keep.max(1);
        for k in (1..keep).rev() {
            let _ = std::fs::rename(numbered(&self.opts.path, k), numbered(&self.opts.path, k + 1));
        }
        if let Err(e) = std::fs::rename(&self.opts.path, numbered(&self.opts.path, 1)) {
            self.fail("rotate", &e, now);
        }
        self.rotated = true;
        self.reopen_at(now);
    }
}

fn numbered(path: &Path, k: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{k}"));
    PathBuf::from(s)
}

/// Opens for appending, creating with mode 0600 (events name hosts and
/// addresses; other users of the machine need not read them).
fn open_append(path: &Path) -> io::Result<(File, u64)> {
    // `LOG_FILE=/data/logs/egret.log` on a fresh volume: make the directory.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let f = OpenOptions::new().create(true).append(true).mode(0o600).open(path)?;
    let size = f.metadata()?.len();
    Ok((f, size))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn tmp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("egret-sink-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn heartbeat_totals_sum_decisions_by_action_and_the_drops() {
        use crate::events::{Action, Component};
        let t0 = std::time::UNIX_EPOCH;
        let mut c = Counts { channel_dropped: 2, ship_dropped: 3, ..Counts::default() };
        c.decisions.add(&Event::new(Component::Https, Action::Allowed, "h", t0));
        c.decisions.add(&Event::new(Component::Dns, Action::Allowed, "h", t0));
        c.decisions.add(&Event::new(Component::Https, Action::Blocked, "h", t0).with_reason("not-allowed"));
        c.decisions.add(&Event::new(Component::Http, Action::Audit, "h", t0));
        let want = super::super::heartbeat::Totals { allowed: 2, blocked: 1, audit: 1, dropped: 5 };
        assert_eq!(c.totals(), want);
    }

    /// Issue 16, item 7: a missing directory is made; an open that fails
    /// keeps egret running and is retried.
    #[test]
    fn log_file_makes_its_directory_and_a_failed_open_is_retried() {
        let dir = tmp("mkdir");
        let opts = |path: PathBuf| LogFileOptions { path, max_size: 0, keep: 1 };
        let nested = dir.join("a/b/events.log");
        let t0 = Instant::now();
        let mut f = LogFile::open_or_retry(opts(nested.clone()), t0);
        assert!(f.file.is_some() && f.write_line("one", t0));
        f.flush(t0);
        assert_eq!(std::fs::read_to_string(&nested).unwrap(), "one\n");

        // The parent is a regular file: no directory can be made there.
        let blocker = dir.join("blocker");
        std::fs::write(&blocker, "").unwrap();
        let path = blocker.join("events.log");
        let mut f = LogFile::open_or_retry(opts(path.clone()), t0);
        assert!(f.file.is_none() && !f.write_line("lost", t0), "no file, no panic, no exit");
        f.retry_if_broken(t0 + Duration::from_secs(1));
        assert!(f.file.is_none(), "retried only after 5 s");
        std::fs::remove_file(&blocker).unwrap();
        f.retry_if_broken(t0 + Duration::from_secs(6));
        assert!(f.file.is_some() && f.write_line("two", t0), "reopened once the path works");
        f.flush(t0);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn log_file_rotates_by_size_and_keeps_every_line() {
        let dir = tmp("rotate");
        let path = dir.join("events.log");
        let mut f = LogFile::open(LogFileOptions { path: path.clone(), max_size: 100, keep: 2 }).unwrap();
        let now = Instant::now();
        let line = "x".repeat(29); // 30 bytes with the newline
        for _ in 0..10 {
            assert!(f.write_line(&line, now));
        }
        f.flush(now);
        let count = |p: &Path| std::fs::read_to_string(p).map(|s| s.lines().count()).unwrap_or(0);
        // 10 lines, 3 per file: current 1, .1 3, .2 3 (the oldest 3 rotated away with keep=2).
        assert_eq!((count(&path), count(&numbered(&path, 1)), count(&numbered(&path, 2))), (1, 3, 3));
        assert!(!numbered(&path, 3).exists());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reopen_follows_a_moved_file() {
        let dir = tmp("reopen");
        let path = dir.join("events.log");
        let mut f = LogFile::open(LogFileOptions { path: path.clone(), max_size: 0, keep: 1 }).unwrap();
        let now = Instant::now();
        f.write_line("one", now);
        f.flush(now);
        std::fs::rename(&path, dir.join("moved")).unwrap();
        f.write_line("two", now); // still into the moved file
        f.reopen();
        f.write_line("three", now);
        f.flush(now);
        assert_eq!(std::fs::read_to_string(dir.join("moved")).unwrap(), "one\ntwo\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "three\n");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn drop_warning_is_rate_limited_and_counts_what_is_new() {
        let t0 = Instant::now();
        let s = Duration::from_secs(1);
        let mut r = DropReport::new(10 * s);
        // (seconds, channel, queue, alerts, expected "N events dropped")
        let table: &[(u32, u64, u64, u64, Option<u64>)] = &[
            (0, 0, 0, 0, None),
            (1, 5, 0, 0, Some(5)),
            (2, 9, 0, 0, None), // within 10 s of the last warning
            (11, 9, 3, 1, Some(8)),
            (30, 9, 3, 1, None), // nothing new
            (31, 9, 3, 2, Some(1)),
        ];
        for &(at, c, q, a, want) in table {
            let got = r.check(t0 + at * s, c, q, 0, a);
            let n = got.as_deref().map(|m| {
                m.strip_prefix("events: ").unwrap().split(' ').next().unwrap().parse::<u64>().unwrap()
            });
            assert_eq!(n, want, "at {at}s: {got:?}");
        }
        let msg = DropReport::new(s).check(t0, 1, 2, 4, 3).unwrap();
        assert!(msg.starts_with("events: 10 events dropped"), "{msg}");
        assert!(
            msg.contains(
                "totals: 1 at the sink channel, 2 at the dashboard queue, 4 at the syslog queue, 3 alerts"
            ),
            "{msg}"
        );
    }

    #[test]
    fn numbered_paths() {
        assert_eq!(numbered(Path::new("/var/log/egret.json"), 2), PathBuf::from("/var/log/egret.json.2"));
    }
}
