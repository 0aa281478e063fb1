//! `egret run`: the filter daemon. Wires the pieces together and owns the
//! process lifecycle; it decides nothing itself.
//!
//! Start-up: block the control signals (so every thread inherits the mask
//! and one thread receives them), apply the ruleset in one batch, start the
//! event pipeline, the NFLOG reader and the mode's listeners, then serve
//! control messages: reload (SIGHUP or a policy file change), shutdown
//! (SIGTERM/SIGINT), and the watchdog's tick (read the table back,
//! re-apply it if another process deleted or changed it). Reloads and
//! watchdog re-applies run on the one control thread, so they never race.
//! A reload that narrows the policy cuts the proxied connections it no
//! longer allows (`policy-revoked`). The rules stay installed when egret
//! exits: fail closed; `egret cleanup` removes them.

use std::path::PathBuf;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{SigSet, Signal};

use crate::config::Config;
use crate::dns::learn::NftLearner;
use crate::events::{self, Action, Component, Emitter};
use crate::nft::{self, Identity, Ruleset};
use crate::policy::PolicyHandle;
use crate::resolve::Resolver;
use crate::startup::{self, Failure, Prepared};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use crate::metrics::{DaemonCounters, Sources};
use crate::proxy::registry::Registry;
use crate::watchdog::{Drift, Enforcement};

/// How long open connections may finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long the sink may take to flush events at exit.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(3);
/// How often the policy file is checked for changes.
pub const POLICY_POLL: Duration = Duration::from_millis(500);
/// How often `/etc/resolv.conf` is checked for changes (DNS_UPSTREAMS unset).
pub const RESOLV_CONF_POLL: Duration = Duration::from_secs(2);
/// A changed policy file is read once it has stayed the same this long
/// (checked at most `SETTLE_TRIES` times).
const SETTLE: Duration = Duration::from_millis(150);
const SETTLE_TRIES: usize = 10;
/// How often the control loop refreshes the event counters for metrics.
const COUNTS_REFRESH: Duration = Duration::from_secs(1);
/// Event reason when the watchdog finds the ruleset deleted or changed.
pub const RULESET_TAMPERED: &str = "ruleset-tampered";

/// What the control loop reacts to.
#[derive(Debug, Clone)]
enum Ctl {
    /// Re-read the policy (SIGHUP or a file change) and reopen LOG_FILE.
    Reload {
        reopen_log: bool,
    },
    Shutdown(Signal),
    /// The watchdog's tick: check the installed table.
    Watch,
    /// `/etc/resolv.conf` names other nameservers (DNS_UPSTREAMS unset).
    Resolvers(Vec<std::net::SocketAddr>),
    /// The unblock poller wrote `UNBLOCK_FILE`: reload, and answer
    /// whether the new policy is in force.
    Unblocks(Sender<bool>),
}

/// A running listener set (proxies or DNS server) the daemon can stop.
/// What refills the run-time sets after the ruleset was replaced (a
/// replace empties them): strict DNS mode's learner, HTTPS mode's names
/// with ports.
pub trait Replay: Send + Sync {
    /// Puts back what `policy` still allows; how many elements.
    fn replay(&self, policy: &crate::policy::Policy) -> Result<usize, String>;

    /// A reload: runs `swap` (apply the new ruleset and put its policy in
    /// force; `None` when that failed) with new answers held until the
    /// replay under the policy it returns is done.
    fn replay_after(&self, swap: &mut Swap<'_>) -> Option<Result<usize, String>>;
}

/// A reload's apply-and-swap step: the policy now in force, or `None`.
pub type Swap<'a> = dyn FnMut() -> Option<Arc<crate::policy::Policy>> + 'a;

impl Replay for NftLearner {
    fn replay(&self, policy: &crate::policy::Policy) -> Result<usize, String> {
        NftLearner::replay(self, policy).map_err(|e| e.to_string())
    }

    fn replay_after(&self, swap: &mut Swap<'_>) -> Option<Result<usize, String>> {
        NftLearner::replay_after(self, swap).map(|r| r.map_err(|e| e.to_string()))
    }
}

impl Replay for crate::resolve::named::Refresher {
    fn replay(&self, policy: &crate::policy::Policy) -> Result<usize, String> {
        crate::resolve::named::Refresher::replay(self, policy).map_err(|e| e.to_string())
    }

    fn replay_after(&self, swap: &mut Swap<'_>) -> Option<Result<usize, String>> {
        crate::resolve::named::Refresher::replay_after(self, swap).map(|r| r.map_err(|e| e.to_string()))
    }
}

impl Service for Arc<crate::resolve::named::Refresher> {
    fn name(&self) -> &'static str {
        "named-ports"
    }

    fn stop(self: Box<Self>, _deadline: Instant) {
        crate::resolve::named::Refresher::stop(&self);
    }
}

pub trait Service: Send {
    fn name(&self) -> &'static str;
    /// Stops accepting, lets open work finish until `deadline`, returns.
    fn stop(self: Box<Self>, deadline: Instant);
}

pub fn run(p: Prepared) -> Result<(), Failure> {
    let Prepared { mut cfg, policy, identity, host, ruleset } = p;
    let signals = control_signals();
    // Every thread spawned from here on inherits the blocked mask, so the
    // signal thread is the only one that sees these signals.
    signals.thread_block().map_err(|e| Failure::failed(format!("run: blocking signals: {e}")))?;
    let audit = policy.audit();
    let enforcement = match nft::apply(&ruleset) {
        Ok(a) => {
            log::info!(
                "ruleset applied in {} ms ({} messages): {}",
                a.elapsed.as_millis(),
                a.messages,
                a.installed
            );
            Enforcement::new(a.installed)
        }
        Err(e) => return Err(Failure::failed(format!("run: {e}"))),
    };
    // AF_XDP sockets send past every hook: hold every queue before anything runs.
    let mut xsk = crate::xsk::Holder::default();
    xsk.follow(&host.devices);
    if xsk.held() > 0 {
        log::info!(
            "af_xdp: holding {} interface queue(s), so no other AF_XDP socket can bind them",
            xsk.held()
        );
    }
    let counters = Arc::new(DaemonCounters::default());
    // DASHBOARD_LISTEN: the dashboard as a thread of the filter. Unless
    // DASHBOARD_HOST names another one, the filter ships to it over
    // loopback (always allowed by the ruleset).
    let embedded = match start_embedded_dashboard(&mut cfg) {
        Ok(d) => d,
        Err(e) => return Err(Failure::invalid(format!("run: {e}"))),
    };
    let (emitter, sink) = match events::spawn(&cfg, Some(identity.mark)) {
        Ok(x) => x,
        Err(e) => return Err(Failure::failed(format!("run: {e}"))),
    };
    let handle = PolicyHandle::new(policy);
    let nflog = match spawn_nflog(&cfg, emitter.clone(), counters.clone(), handle.clone()) {
        Ok(r) => Some(r),
        Err(e) => {
            // Filtering does not depend on NFLOG; blocked packets are still
            // rejected, only their events are missing.
            log::error!("nflog: {e}; blocked packets will not produce events");
            None
        }
    };
    let Running { services, learner, registry, active, dns_stats, listeners, resolver } =
        match start_services(&cfg, &handle, &emitter, &identity) {
            Ok(s) => s,
            Err(e) => return Err(Failure::failed(format!("run: {e}"))),
        };
    let event_counts = Arc::new(Mutex::new(sink.counts()));
    // /health and /metrics: a unix socket always, TCP with METRICS_ADDR.
    let sources = Sources {
        daemon: counters.clone(),
        proxy: registry.clone().zip(active),
        dns: dns_stats,
        events: event_counts.clone(),
        channel_dropped: emitter.drop_counter(),
        enforcement: Some(enforcement.clone()),
        listeners: listeners.clone(),
        relay: None,
        probes: None,
    };
    let metrics = match crate::metrics::start(&cfg, sources, Some(identity.listen_mark)) {
        Ok(m) => Some(m),
        Err(e) => return Err(Failure::failed(format!("run: {e}"))),
    };
    log::info!(
        "egret {} running on {:?} in {:?} mode; policy {}",
        crate::VERSION,
        emitter.hostname(),
        cfg.filter_mode,
        cfg.policy_path.display()
    );

    let policy_digest = Arc::new(Mutex::new(file_digest(&cfg.policy_path)));
    sink.set_heartbeat(
        cfg.dashboard_heartbeat,
        heartbeat_source(
            &cfg,
            audit,
            emitter.hostname(),
            &enforcement,
            &listeners,
            &event_counts,
            &policy_digest,
        ),
    );
    if audit {
        log::warn!(
            "AUDIT MODE (ENFORCE=audit or the policy's `enforce: audit`): every decision is made and logged \
             (action AUDIT with the reason), nothing is blocked"
        );
    }
    if cfg.selftest && audit {
        // Its attacks would all get through, by design: not a bypass.
        log::warn!("SELFTEST skipped: audit mode lets everything through");
    } else if cfg.selftest {
        spawn_selftest(&cfg, &identity, emitter.clone(), listeners.clone());
    }
    let (tx, rx) = mpsc::channel();
    spawn_signal_thread(signals, tx.clone());
    spawn_policy_watcher(cfg.policy_path.clone(), tx.clone());
    if resolver.is_some() && cfg.dns_upstreams_env.is_none() {
        let tx = tx.clone();
        let watched = crate::resolve::watch_resolv_conf(
            std::path::Path::new(crate::resolve::RESOLV_CONF),
            RESOLV_CONF_POLL,
            cfg.dns_upstreams.clone(),
            move |list| tx.send(Ctl::Resolvers(list)).is_ok(),
        );
        if let Err(e) = watched {
            log::warn!("cannot watch {}: {e}; its changes need a restart", crate::resolve::RESOLV_CONF);
        }
    }
    let poller = start_unblock_poller(&cfg, &identity, &emitter, &handle, tx.clone());
    crate::watchdog::spawn_ticker(cfg.watchdog_interval, move || tx.send(Ctl::Watch).is_ok());

    let mut state = Reloader {
        xsk,
        cfg: cfg.clone(),
        identity: &identity,
        handle: &handle,
        emitter: &emitter,
        learner: learner.as_deref(),
        generation: 0,
        host,
        ruleset,
        enforcement,
        registry,
        resolver: resolver.clone(),
        counters,
        policy_digest,
    };
    let sig = control_loop(&rx, &mut state, &sink, &event_counts);
    // A poller waiting for a reload's answer gets "no" at once.
    drop(rx);
    if let Some(p) = poller {
        p.stop();
    }
    if let Some(m) = metrics {
        m.stop();
    }
    log::info!("{sig}: stopping (rules stay installed; `egret cleanup` removes them)");
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    for s in services {
        let name = s.name();
        s.stop(deadline);
        log::debug!("{name} stopped");
    }
    if let Some(r) = nflog {
        r.stop();
    }
    drop(emitter);
    let report = sink.shutdown(Instant::now() + FLUSH_DEADLINE);
    if let Some(d) = embedded {
        d.stop();
    }
    log::info!("events flushed: {report:?}");
    Ok(())
}

/// Starts the embedded dashboard when `DASHBOARD_LISTEN` is set, and
/// points the shipper at it when no `DASHBOARD_HOST` is configured.
fn start_embedded_dashboard(cfg: &mut Config) -> Result<Option<crate::dashboard::Handle>, String> {
    let dc = match crate::dashboard::embedded_config(cfg, &startup::process_env) {
        Ok(Some(dc)) => dc,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("DASHBOARD_LISTEN: {e}")),
    };
    let key = dc.api_key.clone();
    let h = crate::dashboard::start(dc, crate::dashboard::Options::default()).map_err(|e| e.to_string())?;
    let addr = h.addr();
    log::info!("embedded dashboard listening on {addr}");
    if cfg.dashboard_host.is_none() {
        let ip = if addr.ip().is_unspecified() { std::net::IpAddr::from([127, 0, 0, 1]) } else { addr.ip() };
        cfg.dashboard_host = Some(format!("http://{}", std::net::SocketAddr::new(ip, addr.port())));
        cfg.dashboard_api_key = Some(key);
    }
    Ok(Some(h))
}

/// Says in one line whether remote unblock is on, and when it is (and a
/// dashboard is configured) starts the poller.
fn start_unblock_poller(
    cfg: &Config,
    identity: &Identity,
    emitter: &Emitter,
    handle: &PolicyHandle,
    tx: Sender<Ctl>,
) -> Option<events::unblock::Poller> {
    if !cfg.remote_unblock {
        log::info!(
            "remote unblock: off (ENABLE_REMOTE_UNBLOCK=false): the dashboard's unblocks are not applied"
        );
        return None;
    }
    let in_force = handle.current().unblocks().len();
    let Some(host) = cfg.dashboard_host.clone() else {
        log::warn!(
            "remote unblock: on, but DASHBOARD_HOST is not set: nothing is polled; {in_force} unblock(s) from {} in force until they expire",
            cfg.unblock_file.display()
        );
        return None;
    };
    log::info!(
        "remote unblock: on (ENABLE_REMOTE_UNBLOCK=true): polling {host}{} every {:?}, kept in {}; {in_force} in force",
        crate::unblock::AGENT_PATH,
        cfg.unblock_poll,
        cfg.unblock_file.display()
    );
    let uids = cfg.dashboard_uids.clone().unwrap_or_else(|| vec![nix::unistd::geteuid().as_raw()]);
    let opts = events::unblock::Options {
        host,
        api_key: cfg.dashboard_api_key.clone(),
        poll: cfg.unblock_poll,
        file: cfg.unblock_file.clone(),
        guard: cfg.guard_addresses,
        client: events::net::ClientOptions {
            mark: Some(identity.mark),
            ca_file: cfg.dashboard_ca_file.clone(),
            dns_fallback: cfg.dns_upstreams.clone(),
            listener_uids: Some(uids),
            ..Default::default()
        },
    };
    let applied = startup::read_unblocks(&cfg.unblock_file, &cfg.guard_addresses);
    let in_policy: Vec<u64> = handle.current().unblocks().iter().map(|(id, _)| *id).collect();
    let resync = applied.iter().map(|u| u.id).collect::<Vec<_>>() != in_policy;
    let apply: events::unblock::Apply = Box::new(move || {
        let (rtx, rrx) = mpsc::channel();
        tx.send(Ctl::Unblocks(rtx)).is_ok() && rrx.recv_timeout(Duration::from_secs(60)).unwrap_or(false)
    });
    match events::unblock::spawn(opts, applied, resync, emitter.clone(), apply) {
        Ok(p) => Some(p),
        Err(e) => {
            log::error!("remote unblock: {e}; unblocks are not polled");
            None
        }
    }
}

/// The signals the control loop handles.
fn control_signals() -> SigSet {
    let mut s = SigSet::empty();
    s.add(Signal::SIGTERM);
    s.add(Signal::SIGINT);
    s.add(Signal::SIGHUP);
    s
}

fn spawn_signal_thread(set: SigSet, tx: Sender<Ctl>) {
    let _ = thread::Builder::new().name("signals".into()).spawn(move || loop {
        let ctl = match set.wait() {
            Ok(Signal::SIGHUP) => Ctl::Reload { reopen_log: true },
            Ok(sig) => Ctl::Shutdown(sig),
            Err(e) => {
                log::error!("waiting for signals: {e}");
                return;
            }
        };
        if tx.send(ctl).is_err() {
            return;
        }
    });
}

/// Identifies the file's current content cheaply. `metadata` follows
/// symlinks, so a Kubernetes ConfigMap swap (`..data` re-pointed) shows as
/// a new inode.
fn fingerprint(path: &PathBuf) -> Option<(u64, u64, SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.dev(), m.ino(), m.modified().ok()?, m.len()))
}

fn spawn_policy_watcher(path: PathBuf, tx: Sender<Ctl>) {
    let _ = thread::Builder::new().name("policy-watch".into()).spawn(move || {
        let mut last = fingerprint(&path);
        loop {
            thread::sleep(POLICY_POLL);
            let mut now = fingerprint(&path);
            if now == last {
                continue;
            }
            // Settle first: a writer that truncates and then writes (most
            // editors, `echo > file`) shows an empty file for a moment, and
            // an empty policy is valid (it allows nothing).
            for _ in 0..SETTLE_TRIES {
                thread::sleep(SETTLE);
                let again = fingerprint(&path);
                if again == now {
                    break;
                }
                now = again;
            }
            last = now;
            if now.is_some() && tx.send(Ctl::Reload { reopen_log: false }).is_err() {
                return;
            }
        }
    });
}

/// The NFLOG reader emitting `nflog.event` BLOCKED (or, audit mode,
/// AUDIT) events for packets logged with egret's prefixes, counted for
/// metrics.
fn spawn_nflog(
    cfg: &Config,
    emitter: Emitter,
    counters: Arc<DaemonCounters>,
    policy: PolicyHandle,
) -> Result<crate::nflog::Reader, crate::nflog::NflogError> {
    crate::nflog::spawn_with(cfg, move |r| {
        let Some(action) = crate::nflog::action_of(&r.prefix) else { return };
        counters.nflog_events.fetch_add(1, Ordering::Relaxed);
        let mut ev = crate::nflog::to_event(&r, emitter.event(Component::Nflog, action));
        crate::nflog::explain(&mut ev, &r, &policy.current());
        emitter.emit(ev);
    })
}

fn control_loop(
    rx: &Receiver<Ctl>,
    state: &mut Reloader<'_>,
    sink: &events::sink::SinkHandle,
    counts: &Mutex<events::sink::Counts>,
) -> Signal {
    use std::sync::mpsc::RecvTimeoutError;
    loop {
        let ctl = rx.recv_timeout(COUNTS_REFRESH);
        *counts.lock().unwrap_or_else(|p| p.into_inner()) = sink.counts();
        match ctl {
            Ok(Ctl::Reload { reopen_log }) => {
                if reopen_log {
                    sink.reopen();
                }
                state.reload();
            }
            Ok(Ctl::Watch) => state.watch(),
            Ok(Ctl::Resolvers(list)) => state.resolvers(list),
            Ok(Ctl::Unblocks(reply)) => {
                let _ = reply.send(state.reload());
            }
            Ok(Ctl::Shutdown(sig)) => return sig,
            Err(RecvTimeoutError::Timeout) => {}
            // Every sender gone: nothing can stop us any more but a kill.
            Err(RecvTimeoutError::Disconnected) => return Signal::SIGTERM,
        }
    }
}

/// Re-reads the policy and swaps it in atomically, or keeps the old one.
struct Reloader<'a> {
    /// egret's AF_XDP sockets on every interface queue.
    xsk: crate::xsk::Holder,
    cfg: Config,
    identity: &'a Identity,
    handle: &'a PolicyHandle,
    emitter: &'a Emitter,
    /// Learned addresses (strict DNS mode) and names' addresses (HTTPS
    /// mode) to put back after a replace.
    learner: Option<&'a dyn Replay>,
    generation: u32,
    /// The host facts the installed ruleset was built from.
    host: crate::nft::Host,
    /// What is (meant to be) installed now.
    ruleset: Ruleset,
    enforcement: Arc<Enforcement>,
    /// HTTPS mode: the open proxied connections a reload may revoke.
    registry: Option<Arc<Registry>>,
    /// HTTPS mode: the check resolver, whose recorded chains a reload's
    /// revocation judges too.
    resolver: Option<Arc<crate::resolve::Resolver>>,
    counters: Arc<DaemonCounters>,
    /// The loaded policy file's digest, for the dashboard heartbeat.
    policy_digest: Arc<Mutex<String>>,
}

/// The policy file's digest (empty when it cannot be read).
fn file_digest(path: &std::path::Path) -> String {
    std::fs::read(path).map(|b| events::heartbeat::policy_digest(&b)).unwrap_or_default()
}

/// What the heartbeat says, read live on each beat: the health the
/// `/health` endpoint reports (ruleset intact, listeners bound), the
/// counters the control loop refreshes, the digest of the loaded policy.
fn heartbeat_source(
    cfg: &Config,
    audit: bool,
    hostname: &str,
    enforcement: &Arc<Enforcement>,
    listeners: &Arc<crate::listen::Status>,
    counts: &Arc<Mutex<events::sink::Counts>>,
    digest: &Arc<Mutex<String>>,
) -> events::heartbeat::Source {
    let (enforcement, listeners, counts, digest) =
        (enforcement.clone(), listeners.clone(), counts.clone(), digest.clone());
    let hostname = hostname.to_owned();
    let mode = format!("{:?}{}", cfg.filter_mode, if audit { " audit" } else { "" }).to_lowercase();
    let interval_ms = u64::try_from(cfg.dashboard_heartbeat.as_millis()).unwrap_or(u64::MAX);
    Arc::new(move || {
        let mut problems = match enforcement.check() {
            Ok(d) if d.is_intact() => Vec::new(),
            Ok(d) => vec![d.describe()],
            Err(e) => vec![e],
        };
        problems.extend(listeners.problems());
        let c = *counts.lock().unwrap_or_else(|p| p.into_inner());
        events::heartbeat::Heartbeat {
            hostname: hostname.clone(),
            version: crate::VERSION.to_owned(),
            mode: mode.clone(),
            policy_digest: digest.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            health: events::heartbeat::health(&problems),
            problems,
            counters: c.totals(),
            interval_ms,
        }
    })
}

impl Reloader<'_> {
    /// Whether the policy in force is the one the files say (reloaded or
    /// unchanged); false when the new one was refused or not installed.
    fn reload(&mut self) -> bool {
        let new = match startup::load_policy(&self.cfg, None) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("policy reload rejected, keeping the current policy: {e}");
                self.counters.reloads_invalid.fetch_add(1, Ordering::Relaxed);
                let mut ev =
                    self.emitter.event(Component::Egret, Action::Blocked).with_reason("policy-invalid");
                ev.msg = "egret.reload_failed".into();
                ev.note = Some(e.to_string());
                self.emitter.emit(ev);
                return false;
            }
        };
        if *self.handle.current() == new {
            log::debug!("policy unchanged");
            self.counters.reloads_unchanged.fetch_add(1, Ordering::Relaxed);
            return true;
        }
        self.generation = self.generation.wrapping_add(1);
        let rs = Ruleset::build_at(
            &self.cfg,
            &new,
            self.identity,
            &self.host,
            self.identity.generation(self.generation),
        );
        // Apply, then swap, then replay, with the learner's new answers
        // held from before the apply to after the replay: an answer judged
        // under the old policy cannot land in the new ruleset in between.
        let mut new = Some(new);
        let mut elapsed = None;
        let (handle, enforcement) = (self.handle, &self.enforcement);
        let mut swap = || match nft::apply(&rs) {
            Ok(a) => {
                enforcement.set_expected(a.installed);
                // Swap before revoking: a connection registering after the
                // scan re-checks against the new policy itself.
                handle.replace(new.take()?);
                elapsed = Some(a.elapsed);
                Some(handle.current())
            }
            Err(e) => {
                log::error!("policy reload: applying the new ruleset failed, keeping the old: {e}");
                None
            }
        };
        let replayed = match self.learner {
            Some(l) => l.replay_after(&mut swap),
            None => swap().map(|_| Ok(0)),
        };
        let Some(replayed) = replayed else {
            self.counters.reloads_failed.fetch_add(1, Ordering::Relaxed);
            return false;
        };
        self.ruleset = rs;
        if self.learner.is_some() {
            match replayed {
                Ok(n) => log::info!("{n} learned addresses restored after reload"),
                Err(e) => log::error!("restoring learned addresses after reload: {e}"),
            }
        }
        *self.policy_digest.lock().unwrap_or_else(|p| p.into_inner()) = file_digest(&self.cfg.policy_path);
        let new = self.handle.current();
        self.counters.reloads_applied.fetch_add(1, Ordering::Relaxed);
        log::info!(
            "policy reloaded ({} remote unblock(s) in force); ruleset re-applied in {} ms",
            new.unblocks().len(),
            elapsed.unwrap_or_default().as_millis()
        );
        self.revoke(&new);
        true
    }

    /// Strict DNS mode: a replace empties the learned sets; put back what
    /// `policy` still allows.
    fn replay_learned(&self, policy: &crate::policy::Policy, after: &str) {
        if let Some(l) = self.learner {
            match l.replay(policy) {
                Ok(n) => log::info!("{n} learned addresses restored after {after}"),
                Err(e) => log::error!("restoring learned addresses after {after}: {e}"),
            }
        }
    }

    /// Cuts the open proxied connections `policy` no longer allows.
    fn revoke(&self, policy: &crate::policy::Policy) {
        let Some(reg) = &self.registry else { return };
        let check = self.resolver.as_deref().map(|r| r as &dyn crate::proxy::DestinationCheck);
        let cut = reg.revoke(policy, check);
        if !cut.is_empty() {
            log::info!("{} open connections no longer allowed by the new policy were closed", cut.len());
        }
        for r in cut {
            let comp = r.kind.component();
            let mut ev = self
                .emitter
                .event(comp, Action::Blocked)
                .with_flow(r.peer, r.orig, "TCP")
                .with_reason(crate::proxy::registry::POLICY_REVOKED);
            match comp {
                Component::Http => ev.http_host = Some(r.name.clone()),
                _ => ev.https = Some(r.name.clone()),
            }
            ev.host = Some(r.name);
            ev.note = Some(match r.link {
                Some(link) => {
                    format!("closed: its name leads through {link}, which the reloaded policy denylists")
                }
                None => "closed: the reloaded policy no longer allows it".into(),
            });
            self.emitter.emit(ev);
        }
    }

    /// The watchdog's tick: if the installed table is not what egret
    /// installed, alert and re-apply it.
    fn watch(&mut self) {
        self.follow_host();
        let drift = match self.enforcement.check() {
            Ok(Drift::Intact) => return,
            Ok(d) => d,
            Err(e) => {
                log::warn!("watchdog: {e}");
                return;
            }
        };
        let what = drift.describe();
        log::error!("watchdog: {what}; re-applying egret's ruleset");
        self.counters.tampered.fetch_add(1, Ordering::Relaxed);
        self.emitter.emit(tamper_event(self.emitter.event(Component::Egret, Action::Blocked), what));
        match nft::apply(&self.ruleset) {
            Ok(a) => {
                self.enforcement.set_expected(a.installed);
                self.counters.reapplies.fetch_add(1, Ordering::Relaxed);
                self.replay_learned(&self.handle.current(), "re-apply");
                log::info!("watchdog: ruleset re-applied in {} ms", a.elapsed.as_millis());
            }
            Err(e) => log::error!("watchdog: re-applying the ruleset failed (will retry): {e}"),
        }
    }
}

impl Reloader<'_> {
    /// A new interface needs its egress chain, a new on-link prefix its
    /// neighbour discovery: rebuild the ruleset when the host changed.
    fn follow_host(&mut self) {
        let host = nft::host::read();
        if host == self.host {
            return;
        }
        log::info!(
            "network changed (interfaces {:?} -> {:?}, on-link IPv6 prefixes {} -> {}); re-applying the ruleset",
            self.host.devices,
            host.devices,
            self.host.onlink6.len(),
            host.onlink6.len()
        );
        self.xsk.follow(&host.devices);
        let generation = self.identity.generation(self.generation);
        let rs = Ruleset::build_at(&self.cfg, &self.handle.current(), self.identity, &host, generation);
        match nft::apply(&rs) {
            Ok(a) => {
                self.enforcement.set_expected(a.installed);
                self.ruleset = rs;
                self.host = host;
                self.replay_learned(&self.handle.current(), "network change");
            }
            Err(e) => log::error!("re-applying the ruleset after a network change failed (will retry): {e}"),
        }
    }

    /// `/etc/resolv.conf` changed after start. egret keeps the resolvers
    /// it started with: the file is shared with the workloads, and one
    /// that could rewrite it would pick the answers the anti-spoofing
    /// check trusts (and the resolvers the rules let it reach).
    fn resolvers(&mut self, list: Vec<std::net::SocketAddr>) {
        let shown: Vec<String> = list.iter().map(ToString::to_string).collect();
        let kept: Vec<String> = self.cfg.dns_upstreams.iter().map(ToString::to_string).collect();
        log::warn!(
            "{} changed after start (now {}); egret keeps asking {}: a process in the pod can write that \
             file; restart egret to use the new resolvers",
            crate::resolve::RESOLV_CONF,
            if shown.is_empty() { "no nameserver".to_owned() } else { shown.join(", ") },
            kept.join(", ")
        );
    }
}

/// SELFTEST=true: `egret selftest` once, on its own thread, with egret's
/// own mark for the control packet. A bypass (or a self-test that could
/// not judge) is a `/health` problem and an event.
fn spawn_selftest(cfg: &Config, id: &Identity, emitter: Emitter, health: Arc<crate::listen::Status>) {
    let opts = crate::selftest::Options {
        mark: Some(id.mark),
        http_port: cfg.http_port,
        https_port: cfg.https_port,
        exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
    };
    let spawned = thread::Builder::new().name("selftest".into()).spawn(move || {
        let (problem, note, failed) = match crate::selftest::run(&opts) {
            Ok(report) => {
                for l in &report.lines {
                    if l.verdict.is_bypass() {
                        log::error!("{l}");
                    } else {
                        log::info!("{l}");
                    }
                }
                let summary = report.summary();
                let bad = !report.bypasses().is_empty();
                (bad.then(|| summary.clone()), summary, bad)
            }
            Err(e) => (Some(e.to_string()), e.to_string(), true),
        };
        log::info!("{note}");
        health.set("selftest", problem);
        let action = if failed { Action::Blocked } else { Action::Allowed };
        let mut ev = emitter.event(Component::Egret, action);
        ev.msg = "egret.selftest".into();
        if failed {
            ev = ev.with_reason("selftest-failed");
        }
        ev.note = Some(note);
        emitter.emit(ev);
    });
    if let Err(e) = spawned {
        log::error!("selftest: cannot start its thread: {e}");
    }
}

/// The watchdog's alert: BLOCKED, so the Gotify path alerts on it.
fn tamper_event(ev: events::Event, what: String) -> events::Event {
    let mut ev = ev.with_reason(RULESET_TAMPERED);
    ev.msg = "egret.ruleset_tampered".into();
    ev.note = Some(what);
    ev
}

impl Service for crate::proxy::ProxyHandle {
    fn name(&self) -> &'static str {
        "proxies"
    }

    fn stop(self: Box<Self>, deadline: Instant) {
        // Stop accepting first, then give open connections until the
        // deadline to finish on their own threads.
        let active = self.active();
        let counter = self.active_counter();
        crate::proxy::ProxyHandle::stop(*self);
        while counter.load(std::sync::atomic::Ordering::Relaxed) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
        let left = counter.load(std::sync::atomic::Ordering::Relaxed);
        log::info!("proxies stopped ({active} connections open at stop, {left} cut at the deadline)");
    }
}

impl Service for crate::dns::DnsHandle {
    fn name(&self) -> &'static str {
        "dns"
    }

    fn stop(self: Box<Self>, _deadline: Instant) {
        crate::dns::DnsHandle::stop(*self);
    }
}

/// The mode's listeners and what the daemon needs from them.
struct Running {
    services: Vec<Box<dyn Service>>,
    /// What a reload must refill: strict DNS mode's learner, or HTTPS
    /// mode's names with ports.
    learner: Option<Arc<dyn Replay>>,
    /// HTTPS mode: open connections (revocation) and counters (metrics).
    registry: Option<Arc<Registry>>,
    /// HTTPS mode: the live count of open connections.
    active: Option<Arc<std::sync::atomic::AtomicUsize>>,
    /// DNS mode: the server's counters.
    dns_stats: Option<Arc<crate::dns::Stats>>,
    /// HTTPS mode: the anti-spoofing resolver.
    resolver: Option<Arc<Resolver>>,
    /// The listeners that could not be bound (shared by every service).
    listeners: Arc<crate::listen::Status>,
}

/// Starts the listeners of the configured mode.
fn start_services(
    cfg: &Config,
    handle: &PolicyHandle,
    emitter: &Emitter,
    identity: &Identity,
) -> Result<Running, String> {
    use crate::config::FilterMode;
    let mark = identity.mark;
    let upstreams = || crate::dns::upstream::Upstreams::new(cfg.dns_upstreams.clone(), Some(mark));
    let listeners = Arc::new(crate::listen::Status::default());
    let dns_settings = || crate::dns::Settings {
        listeners: listeners.clone(),
        ..crate::dns::Settings::from_config(cfg, identity)
    };
    match cfg.filter_mode {
        FilterMode::Https => {
            if let Err(e) = crate::proxy::raise_nofile_limit() {
                log::warn!("cannot raise the open-file limit: {e}");
            }
            // DNS_IN_HTTPS_MODE with DNS_HARDENING: the proxies' lookups
            // spend the DNS server's rate and zone budgets, so a name in an
            // SNI or Host reaches the upstream only as a query could.
            // Without egret's resolver the workloads ask theirs directly,
            // and there is nothing for the hardening to close.
            let budget = cfg.dns_hardening.filter(|_| cfg.dns_in_https_mode).map(crate::dns::budget::shared);
            let resolver = Arc::new(
                Resolver::new(upstreams(), cfg.dns_ttl_min, cfg.dns_ttl_max).hardened(budget.clone()),
            );
            if !cfg.verify_destination {
                log::warn!("VERIFY_DESTINATION=false: an allowed name is tunnelled to any address (SNI/Host spoofing is possible)");
            }
            // DNS_IN_HTTPS_MODE: egret's resolver answers the namespace's
            // queries and hands every address it gives out to the
            // anti-spoofing resolver before the client sees it, so a
            // connection to an address egret itself returned always
            // matches (a CDN may rotate its answers in between).
            let mut services: Vec<Box<dyn Service>> = Vec::new();
            let mut dns_stats = None;
            if cfg.dns_in_https_mode {
                let hook: Arc<dyn crate::dns::learn::Learn> = resolver.clone();
                let settings = crate::dns::Settings { budget, ..dns_settings() };
                let d = crate::dns::start_with(settings, handle.clone(), emitter.clone(), Some(hook))
                    .map_err(|e| format!("dns: {e}"))?;
                dns_stats = Some(d.shared_stats());
                services.push(Box::new(d));
            }
            let mut settings = crate::proxy::Settings {
                listeners: listeners.clone(),
                ..crate::proxy::Settings::from_config(cfg, identity)
            };
            crate::proxy::fit_to_descriptors(&mut settings);
            let p = crate::proxy::start(settings, handle.clone(), resolver.clone(), emitter.clone())
                .map_err(|e| format!("proxies: {e}"))?;
            let (registry, active) = (Some(p.registry()), Some(p.active_counter()));
            // Stopped in order: the proxies first, then the resolver.
            services.insert(0, Box::new(p));
            // Names with ports: egret resolves them itself (the workloads
            // ask the pod's resolver) and opens their addresses there.
            let mut learner: Option<Arc<dyn Replay>> = None;
            if !handle.current().name_ports().is_empty() || cfg.policy_path.exists() {
                let settings = crate::resolve::named::Settings {
                    upstreams: upstreams(),
                    guard: cfg.guard_addresses,
                    ttl_min: cfg.dns_ttl_min,
                    ttl_max: cfg.dns_ttl_max,
                };
                let r = Arc::new(
                    crate::resolve::named::Refresher::start(settings, handle.clone())
                        .map_err(|e| format!("names with ports: {e}"))?,
                );
                services.push(Box::new(r.clone()));
                learner = Some(r);
            }
            Ok(Running {
                services,
                learner,
                registry,
                active,
                dns_stats,
                listeners,
                resolver: Some(resolver),
            })
        }
        FilterMode::Dns => {
            let learner = if cfg.dns_strict {
                Some(Arc::new(
                    NftLearner::new(cfg.guard_addresses, handle.clone())
                        .map_err(|e| format!("strict DNS egress: {e}"))?,
                ))
            } else {
                None
            };
            let hook = learner.clone().map(|l| l as Arc<dyn crate::dns::learn::Learn>);
            let d = crate::dns::start_with(dns_settings(), handle.clone(), emitter.clone(), hook)
                .map_err(|e| format!("dns: {e}"))?;
            let dns_stats = Some(d.shared_stats());
            Ok(Running {
                services: vec![Box::new(d)],
                learner: learner.map(|l| l as Arc<dyn Replay>),
                registry: None,
                active: None,
                dns_stats,
                listeners,
                resolver: None,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::gotify::{AlertRules, Verdict};

    #[test]
    fn a_tamper_event_alerts() {
        let base = events::Event::new(Component::Egret, Action::Blocked, "pod-1", SystemTime::UNIX_EPOCH);
        let ev = tamper_event(base, "table inet egret was deleted".into());
        assert_eq!(
            (ev.msg.as_str(), ev.reason.as_deref()),
            ("egret.ruleset_tampered", Some(RULESET_TAMPERED))
        );
        let mut rules = AlertRules::new(Duration::from_secs(60), &[]).unwrap();
        match rules.consider(&ev, Instant::now()) {
            Verdict::Send(a) => assert!(a.message.contains(RULESET_TAMPERED), "{}", a.message),
            other => panic!("a tamper event must alert: {other:?}"),
        }
    }
}
