//! Relay mode (`FILTER_MODE=relay`, `egret relay`, or `TARGET` set):
//! docker-whitelist's job. A container on an internal network and a
//! public one, under a network alias such as `fonts.googleapis.com`,
//! relays that name's ports to the real target, so the application
//! reaches that one service and nothing else. Listeners on all addresses
//! (IPv4 and IPv6): this mode is a network service, not a sidecar, and
//! installs no nftables rules (no NET_ADMIN).
//!
//! * `config.rs`: env → [`RelayConfig`] (pure; every problem at once).
//! * `decide.rs`: admission under `MAX_CONNECTIONS`, the UDP flow table,
//!   address lifetimes, the `RELAY_CHECK` decision (pure).
//! * `target.rs`: a target's addresses, re-resolved on their TTL and on
//!   connection failure (`PRE_RESOLVE` + `NAMESERVERS`).
//! * `tcp.rs` / `udp.rs`: the doors (shells).
//! * `health.rs`: the HTTP and SMTP health checks behind `/health`.
//!
//! Events (component `relay`) go through the same pipeline as the
//! proxies' and DNS server's, and `/metrics` + `/health` are the same
//! endpoint (`metrics::start`).

pub mod config;
pub mod decide;
pub mod health;
pub mod target;
pub mod tcp;
pub mod udp;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

pub use config::RelayConfig;
use config::{Proto, Relay};
use target::TargetAddrs;

use crate::events::Emitter;
use crate::policy::Policy;

/// Live counters, read by `/metrics`.
#[derive(Debug, Default)]
pub struct Stats {
    pub allowed_tcp: AtomicU64,
    pub allowed_udp: AtomicU64,
    /// Refused by `RELAY_CHECK`.
    pub blocked: AtomicU64,
    /// Given up after waiting for a slot (TCP), or datagrams of new flows
    /// dropped at the limit (UDP).
    pub limit: AtomicU64,
    /// Connections being served and UDP flows open.
    pub open: AtomicU64,
    /// TCP connections waiting for a slot.
    pub waiting: AtomicU64,
    pub bytes_up: AtomicU64,
    pub bytes_down: AtomicU64,
    /// The target could not be reached (every address, after a lookup).
    pub upstream_failed: AtomicU64,
}

/// What every door shares.
pub struct Shared {
    pub cfg: RelayConfig,
    pub emitter: Emitter,
    pub stats: Arc<Stats>,
    pub stop: AtomicBool,
    /// With a policy (`POLICY_PATH` or the `ALLOWLIST_*` variables), the
    /// names it allows pass `RELAY_CHECK` too.
    pub policy: Option<Policy>,
}

impl Shared {
    pub fn allowed_by_policy(&self, name: &str) -> bool {
        self.policy.as_ref().is_some_and(|p| {
            p.decide(crate::policy::Query { name: Some(name), ip: None, port: None }).verdict
                == crate::policy::Verdict::Allow
        })
    }
}

/// One relayed port.
pub struct Door {
    pub relay: Relay,
    pub addrs: Arc<TargetAddrs>,
    pub local: SocketAddr,
}

impl Door {
    pub fn local(&self) -> SocketAddr {
        self.local
    }
}

/// The running doors.
pub struct Handle {
    shared: Arc<Shared>,
    threads: Vec<JoinHandle<()>>,
    pub targets: Vec<Arc<TargetAddrs>>,
}

impl Handle {
    pub fn stats(&self) -> Arc<Stats> {
        self.shared.stats.clone()
    }

    /// Stops accepting; open connections get until `deadline` to end.
    pub fn stop(self, deadline: Instant) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for t in self.threads {
            let _ = t.join();
        }
        while self.shared.stats.open.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Binds every door and starts its thread. A port that cannot be bound
/// is a start-up failure: a door that is not there is not a degraded
/// service a user could miss.
pub fn start(cfg: RelayConfig, emitter: Emitter, policy: Option<Policy>) -> Result<Handle, String> {
    let nameservers = cfg.pre_resolve.then(|| cfg.nameservers.clone());
    let mut targets: Vec<Arc<TargetAddrs>> = Vec::new();
    let mut doors = Vec::new();
    for r in &cfg.relays {
        let addrs = match targets.iter().find(|t| t.target == r.target) {
            Some(t) => t.clone(),
            None => {
                let t = Arc::new(TargetAddrs::new(r.target.clone(), nameservers.clone()));
                targets.push(t.clone());
                t
            }
        };
        doors.push((r.clone(), addrs));
    }
    let shared =
        Arc::new(Shared { cfg, emitter, stats: Arc::default(), stop: AtomicBool::new(false), policy });
    let mut threads = Vec::new();
    for (relay, addrs) in doors {
        let what = format!("relay {relay}");
        let spawned = match relay.proto {
            Proto::Tcp => {
                let l = tcp::bind(relay.port)
                    .map_err(|e| format!("{what}: cannot listen on port {}: {e}", relay.port))?;
                let local = l.local_addr().map_err(|e| e.to_string())?;
                let door = Arc::new(Door { relay, addrs, local });
                let sh = shared.clone();
                thread::Builder::new()
                    .name(format!("relay-tcp-{}", local.port()))
                    .spawn(move || tcp::accept_loop(l, door, sh))
            }
            Proto::Udp => {
                let s = udp::bind(relay.port)
                    .map_err(|e| format!("{what}: cannot listen on port {}: {e}", relay.port))?;
                let local = s.local_addr().map_err(|e| e.to_string())?;
                let door = Arc::new(Door { relay, addrs, local });
                let sh = shared.clone();
                thread::Builder::new()
                    .name(format!("relay-udp-{}", local.port()))
                    .spawn(move || udp::serve(s, door, sh))
            }
        };
        threads.push(spawned.map_err(|e| format!("{what}: cannot start its thread: {e}"))?);
        log::info!("{what}: listening on all addresses (IPv4 and IPv6)");
    }
    Ok(Handle { shared, threads, targets })
}

/// The problems of the configured health checks, run now (empty: up).
pub fn probe(cfg: &RelayConfig, targets: &[Arc<TargetAddrs>]) -> Vec<String> {
    let mut out = Vec::new();
    if let Some(c) = &cfg.http_check {
        if let Err(e) = health::http(c, targets) {
            out.push(format!("HTTP_HEALTHCHECK http://{}:{}{}: {e}", c.url.host, c.url.port, c.url.path));
        }
    }
    if let Some(c) = &cfg.smtp_check {
        if let Err(e) = health::smtp(c, targets) {
            out.push(format!("SMTP_HEALTHCHECK smtp://{}:{}: {e}", c.url.host, c.url.port));
        }
    }
    out
}
