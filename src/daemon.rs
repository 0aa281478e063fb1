//! `egret run`: the filter daemon. Wires the pieces together and owns the
//! process lifecycle; it decides nothing itself.
//!
//! Start-up: block the control signals (so every thread inherits the mask
//! and one thread receives them), apply the ruleset in one batch, start the
//! event pipeline, the NFLOG reader and the mode's listeners, then serve
//! control messages: reload (SIGHUP or a policy file change), shutdown
//! (SIGTERM/SIGINT). The rules stay installed when egret exits: fail
//! closed; `egret cleanup` removes them.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::mpsc::{self, Receiver, Sender};
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use nix::sys::signal::{SigSet, Signal};

use crate::cmd::{self, Prepared, EXIT_FAILURE};
use crate::config::Config;
use crate::dns::learn::NftLearner;
use crate::events::{self, Action, Component, Emitter};
use crate::nft::{self, Identity, Ruleset};
use crate::policy::PolicyHandle;
use crate::resolve::Resolver;
use std::sync::Arc;

/// How long open connections may finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
/// How long the sink may take to flush events at exit.
pub const FLUSH_DEADLINE: Duration = Duration::from_secs(3);
/// How often the policy file is checked for changes.
pub const POLICY_POLL: Duration = Duration::from_millis(500);

/// What the control loop reacts to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ctl {
    /// Re-read the policy (SIGHUP or a file change) and reopen LOG_FILE.
    Reload {
        reopen_log: bool,
    },
    Shutdown(Signal),
}

/// A running listener set (proxies or DNS server) the daemon can stop.
pub trait Service: Send {
    fn name(&self) -> &'static str;
    /// Stops accepting, lets open work finish until `deadline`, returns.
    fn stop(self: Box<Self>, deadline: Instant);
}

pub fn run(p: Prepared) -> ExitCode {
    let Prepared { cfg, policy, identity, ruleset } = p;
    let signals = control_signals();
    // Every thread spawned from here on inherits the blocked mask, so the
    // signal thread is the only one that sees these signals.
    if let Err(e) = signals.thread_block() {
        eprintln!("egret run: blocking signals: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    match nft::apply(&ruleset) {
        Ok(a) => log::info!(
            "ruleset applied in {} ms ({} messages): {}",
            a.elapsed.as_millis(),
            a.messages,
            a.installed
        ),
        Err(e) => {
            eprintln!("egret run: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    }
    let (emitter, sink) = match events::spawn(&cfg, Some(identity.mark)) {
        Ok(x) => x,
        Err(e) => {
            eprintln!("egret run: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let nflog = match crate::nflog::spawn(&cfg, emitter.clone()) {
        Ok(r) => Some(r),
        Err(e) => {
            // Filtering does not depend on NFLOG; blocked packets are still
            // rejected, only their events are missing.
            log::error!("nflog: {e}; blocked packets will not produce events");
            None
        }
    };
    let handle = PolicyHandle::new(policy);
    let (services, learner) = match start_services(&cfg, &handle, &emitter, &identity) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("egret run: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    log::info!(
        "egret {} running on {:?} in {:?} mode; policy {}",
        crate::VERSION,
        emitter.hostname(),
        cfg.filter_mode,
        cfg.policy_path.display()
    );

    let (tx, rx) = mpsc::channel();
    spawn_signal_thread(signals, tx.clone());
    spawn_policy_watcher(cfg.policy_path.clone(), tx);

    let mut state = Reloader {
        cfg: &cfg,
        identity: &identity,
        handle: &handle,
        emitter: &emitter,
        learner: learner.as_deref(),
        generation: 0,
    };
    let sig = control_loop(&rx, &mut state, &sink);
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
    log::info!("events flushed: {report:?}");
    ExitCode::SUCCESS
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
            let now = fingerprint(&path);
            if now != last {
                last = now;
                if now.is_some() && tx.send(Ctl::Reload { reopen_log: false }).is_err() {
                    return;
                }
            }
        }
    });
}

fn control_loop(rx: &Receiver<Ctl>, state: &mut Reloader<'_>, sink: &events::sink::SinkHandle) -> Signal {
    loop {
        match rx.recv() {
            Ok(Ctl::Reload { reopen_log }) => {
                if reopen_log {
                    sink.reopen();
                }
                state.reload();
            }
            Ok(Ctl::Shutdown(sig)) => return sig,
            // Both senders gone: nothing can stop us any more but a kill.
            Err(_) => return Signal::SIGTERM,
        }
    }
}

/// Re-reads the policy and swaps it in atomically, or keeps the old one.
struct Reloader<'a> {
    cfg: &'a Config,
    identity: &'a Identity,
    handle: &'a PolicyHandle,
    emitter: &'a Emitter,
    /// Strict DNS mode: learned addresses to put back after a replace.
    learner: Option<&'a NftLearner>,
    generation: u32,
}

impl Reloader<'_> {
    fn reload(&mut self) {
        let new = match cmd::load_policy(self.cfg, None) {
            Ok(p) => p,
            Err(e) => {
                log::warn!("policy reload rejected, keeping the current policy: {e}");
                let mut ev =
                    self.emitter.event(Component::Egret, Action::Blocked).with_reason("policy-invalid");
                ev.msg = "egret.reload_failed".into();
                ev.note = Some(e.to_string());
                self.emitter.emit(ev);
                return;
            }
        };
        if *self.handle.current() == new {
            log::debug!("policy unchanged");
            return;
        }
        self.generation = self.generation.wrapping_add(1);
        let rs = Ruleset::build_at(
            self.cfg,
            &new,
            self.identity,
            self.identity.mark.wrapping_add(self.generation),
        );
        match nft::apply(&rs) {
            Ok(a) => {
                if let Some(l) = self.learner {
                    // The replace emptied the learned sets; put back what
                    // the new policy still allows.
                    match l.replay(&new) {
                        Ok(n) => log::info!("{n} learned addresses restored after reload"),
                        Err(e) => log::error!("restoring learned addresses after reload: {e}"),
                    }
                }
                self.handle.replace(new);
                log::info!("policy reloaded; ruleset re-applied in {} ms", a.elapsed.as_millis());
            }
            Err(e) => log::error!("policy reload: applying the new ruleset failed, keeping the old: {e}"),
        }
    }
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

/// The mode's listeners, and in strict DNS mode the learner whose sets a
/// reload must refill.
type Started = (Vec<Box<dyn Service>>, Option<Arc<NftLearner>>);

/// Starts the listeners of the configured mode.
fn start_services(
    cfg: &Config,
    handle: &PolicyHandle,
    emitter: &Emitter,
    identity: &Identity,
) -> Result<Started, String> {
    use crate::config::FilterMode;
    let mark = identity.mark;
    let upstreams = || crate::dns::upstream::Upstreams::new(cfg.dns_upstreams.clone(), Some(mark));
    match cfg.filter_mode {
        FilterMode::Https => {
            if let Err(e) = crate::proxy::raise_nofile_limit() {
                log::warn!("cannot raise the open-file limit: {e}");
            }
            let resolver = Arc::new(Resolver::new(upstreams(), cfg.dns_ttl_min, cfg.dns_ttl_max));
            if !cfg.verify_destination {
                log::warn!("VERIFY_DESTINATION=false: an allowed name is tunnelled to any address (SNI/Host spoofing is possible)");
            }
            let settings = crate::proxy::Settings::from_config(cfg, mark);
            let p = crate::proxy::start(settings, handle.clone(), resolver, emitter.clone())
                .map_err(|e| format!("proxies: {e}"))?;
            Ok((vec![Box::new(p)], None))
        }
        FilterMode::Dns => {
            let learner = if cfg.dns_strict {
                Some(Arc::new(NftLearner::new().map_err(|e| format!("strict DNS egress: {e}"))?))
            } else {
                None
            };
            let hook = learner.clone().map(|l| l as Arc<dyn crate::dns::learn::Learn>);
            let d = crate::dns::start(cfg, handle.clone(), emitter.clone(), mark, hook)
                .map_err(|e| format!("dns: {e}"))?;
            Ok((vec![Box::new(d)], learner))
        }
    }
}
