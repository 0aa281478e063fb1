//! The remote-unblock poller (`ENABLE_REMOTE_UNBLOCK`): one thread that
//! asks the dashboard for this agent's active unblocks every
//! `UNBLOCK_POLL`, with the agent's key, through egret's marked client
//! (the shipper's connector, with its `DASHBOARD_UID` listener check).
//!
//! When the set in force changes (a new, changed, expired or revoked
//! unblock), it writes `UNBLOCK_FILE` atomically (tmp + rename), asks the
//! daemon to reload (the one reload path: `startup::load_policy` compiles
//! the file's unblocks in), logs and emits `egret.unblock_applied` /
//! `egret.unblock_expired`, and then acknowledges. Expiry is the agent's
//! own clock: an unblock ends on time even when the dashboard is down.
//! Decisions are in [`crate::unblock`]; this is the I/O.

use std::collections::HashSet;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use super::net::{self, ClientOptions};
use super::{Action, Component, Emitter};
use crate::unblock::{self, Unblock};

/// The poller's settings.
#[derive(Debug, Clone)]
pub struct Options {
    /// `DASHBOARD_HOST`, normalised (no trailing slash).
    pub host: String,
    pub api_key: Option<String>,
    pub poll: Duration,
    pub file: PathBuf,
    /// `GUARD_ADDRESSES`: an address unblock inside a guarded class is
    /// refused.
    pub guard: crate::policy::Guard,
    pub client: ClientOptions,
}

/// Asks the daemon to reload with the file as written; true when the
/// new policy is in force.
pub type Apply = Box<dyn Fn() -> bool + Send>;

/// A running poller; [`Poller::stop`] ends it.
pub struct Poller {
    stop: Arc<AtomicBool>,
    thread: Option<thread::JoinHandle<()>>,
}

impl Poller {
    /// Asks the thread to end at its next wake-up (within a request's
    /// timeout); not joined, so a hung dashboard cannot hold the exit.
    pub fn stop(mut self) {
        self.stop.store(true, Ordering::Relaxed);
        drop(self.thread.take());
    }
}

/// Starts the poller. `applied` is what the policy holds now (the file's
/// unexpired unblocks, compiled in at start); `resync` makes the first
/// round reload whatever it finds (the policy was compiled from another
/// moment of the file).
pub fn spawn(
    opts: Options,
    applied: Vec<Unblock>,
    resync: bool,
    emitter: Emitter,
    apply: Apply,
) -> Result<Poller, String> {
    let agent = net::agent(&opts.client).map_err(|e| format!("unblock poller: {e}"))?;
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let t = thread::Builder::new()
        .name("unblock-poll".into())
        .spawn(move || run(&opts, &agent, applied, resync, &emitter, &apply, &flag))
        .map_err(|e| format!("unblock poller: cannot start thread: {e}"))?;
    Ok(Poller { stop, thread: Some(t) })
}

/// How often the loop wakes to check the stop flag and expiries.
const TICK: Duration = Duration::from_millis(200);

fn run(
    opts: &Options,
    agent: &ureq::Agent,
    mut applied: Vec<Unblock>,
    mut resync: bool,
    em: &Emitter,
    apply: &Apply,
    stop: &AtomicBool,
) {
    let base = format!("{}{}", opts.host, unblock::AGENT_PATH);
    let shared_key =
        !opts.api_key.as_deref().unwrap_or("").starts_with(crate::dashboard::auth::AGENT_KEY_PREFIX);
    // With the operator's shared key the dashboard cannot tell agents
    // apart: say which one this is.
    let url = if shared_key { format!("{base}?agent={}", em.hostname()) } else { base };
    let ack_url = format!(
        "{}{}{}",
        opts.host,
        unblock::ACK_PATH,
        if shared_key { format!("?agent={}", em.hostname()) } else { String::new() }
    );
    let mut next_poll = Instant::now();
    let mut refused_seen: HashSet<(u64, String)> = HashSet::new();
    let mut acked: Option<Vec<u64>> = None;
    let mut last_error: Option<String> = None;
    while !stop.load(Ordering::Relaxed) {
        let now = crate::startup::now_unix_nanos();
        let mut wanted = applied.clone();
        let mut fetched = false;
        if Instant::now() >= next_poll {
            next_poll = Instant::now() + opts.poll;
            match fetch(agent, &url, opts.api_key.as_deref()) {
                Ok(parsed) => {
                    if last_error.take().is_some() {
                        log::info!("unblock: the dashboard answers again");
                    }
                    let (good, guarded) = unblock::split_guarded(parsed.good, &opts.guard);
                    for (id, why) in parsed.refused.into_iter().chain(guarded) {
                        if refused_seen.insert((id, why.clone())) {
                            log::warn!("unblock: #{id} from the dashboard refused, not applied: {why}");
                        }
                    }
                    wanted = good;
                    fetched = true;
                }
                Err(e) => {
                    if last_error.as_deref() != Some(e.as_str()) {
                        log::warn!("unblock: cannot ask {url}: {e}; keeping the {} applied", applied.len());
                    }
                    last_error = Some(e);
                }
            }
        }
        let wanted = unblock::active(&wanted, now);
        if wanted != applied || std::mem::take(&mut resync) {
            let change = unblock::diff(&applied, &wanted);
            let written = write_atomic(&opts.file, unblock::render_file(&wanted).as_bytes());
            if let Err(e) = &written {
                log::error!(
                    "unblock: cannot write {}: {e}; applying anyway (a restart will not keep it)",
                    opts.file.display()
                );
            }
            if apply() {
                report(em, &change, now);
                applied = wanted;
                if written.is_err() {
                    acked = Some(Vec::new());
                }
            } else {
                log::error!(
                    "unblock: the reload with the new unblocks failed; the policy in force is unchanged"
                );
                // Put the file back as the policy is, so a restart agrees.
                let _ = write_atomic(&opts.file, unblock::render_file(&applied).as_bytes());
            }
        }
        let ids: Vec<u64> = applied.iter().map(|u| u.id).collect();
        if fetched && acked.as_ref() != Some(&ids) {
            match post_ack(agent, &ack_url, opts.api_key.as_deref(), &ids) {
                Ok(()) => acked = Some(ids),
                Err(e) => log::debug!("unblock: acknowledgement not sent: {e}"),
            }
        }
        // Sleep until the next poll or the next expiry, waking often
        // enough to stop promptly.
        let until_expiry = unblock::next_expiry(&applied, crate::startup::now_unix_nanos())
            .map(|t| Duration::from_nanos(u64::try_from(t - crate::startup::now_unix_nanos()).unwrap_or(0)));
        let wait = next_poll.saturating_duration_since(Instant::now());
        let wait = until_expiry.map_or(wait, |e| wait.min(e)).min(TICK);
        thread::sleep(wait.max(Duration::from_millis(10)));
    }
}

fn fetch(agent: &ureq::Agent, url: &str, key: Option<&str>) -> Result<unblock::Parsed, String> {
    let mut req = agent.get(url);
    if let Some(k) = key {
        req = req.header("X-Api-Key", k).header("Authorization", format!("Bearer {k}"));
    }
    let mut resp = req.call().map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.body_mut().with_config().limit(4 << 20).read_to_vec().map_err(|e| e.to_string())?;
    if status != 200 {
        let text = String::from_utf8_lossy(&body[..body.len().min(200)]).trim().to_owned();
        return Err(format!("HTTP {status} {text}"));
    }
    unblock::parse_answer(&body).map_err(|e| e.to_string())
}

fn post_ack(agent: &ureq::Agent, url: &str, key: Option<&str>, ids: &[u64]) -> Result<(), String> {
    let mut req = agent.post(url).header("Content-Type", "application/json");
    if let Some(k) = key {
        req = req.header("X-Api-Key", k).header("Authorization", format!("Bearer {k}"));
    }
    let body = serde_json::json!({ "ids": ids }).to_string();
    let mut resp = req.send(body.as_bytes()).map_err(|e| e.to_string())?;
    let _ = resp.body_mut().with_config().limit(64 * 1024).read_to_vec();
    match resp.status().as_u16() {
        200..=299 => Ok(()),
        s => Err(format!("HTTP {s}")),
    }
}

/// Logs and emits what changed (the reload itself logged its own line).
fn report(em: &Emitter, change: &unblock::Change, now: i64) {
    for u in &change.applied {
        log::warn!("unblock applied: {}", u.describe());
        em.emit(event(em, "egret.unblock_applied", "remote-unblock", u));
    }
    for u in &change.gone {
        let why = if u.until.is_some_and(|t| t <= now) { "expired" } else { "revoked" };
        log::warn!("unblock ended ({why}): {}", u.describe());
        em.emit(event(em, "egret.unblock_expired", &format!("unblock-{why}"), u));
    }
}

fn event(em: &Emitter, msg: &str, reason: &str, u: &Unblock) -> super::Event {
    let mut ev = em.event(Component::Egret, Action::Allowed).with_reason(reason);
    ev.msg = msg.into();
    ev.host = Some(u.entry.clone());
    ev.note = Some(u.describe());
    ev
}

/// Writes `path` whole or not at all: a temporary file beside it, synced,
/// then renamed over it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)?;
    }
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    {
        // Never through a link someone else left at the temporary name,
        // and readable and writable by egret alone.
        let _ = std::fs::remove_file(&tmp);
        let mut f = {
            use std::os::unix::fs::OpenOptionsExt as _;
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?
        };
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}
