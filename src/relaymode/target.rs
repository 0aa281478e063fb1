//! A relay target's addresses: resolved on first use, used until their
//! TTL runs out (clamped, see `decide::Resolved`), resolved again after
//! that or after a connection to them failed. With `PRE_RESOLVE` the
//! questions go to `NAMESERVERS` over egret's own DNS exchange
//! (`resolve::ask_addresses`), never to the container's resolver, which
//! would answer the alias with this container's own address; without it,
//! the system resolver answers (as socat's per-connection lookup does).

use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::Target;
use super::decide::{Resolved, SYSTEM_TTL};
use crate::dns::upstream::Upstreams;

/// How long one lookup may take.
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);

pub struct TargetAddrs {
    pub target: Target,
    nameservers: Option<Upstreams>,
    cache: Mutex<Option<Resolved>>,
    /// One lookup at a time; the others wait for its answer.
    lookup: Mutex<()>,
}

impl TargetAddrs {
    pub fn new(target: Target, nameservers: Option<Vec<std::net::SocketAddr>>) -> TargetAddrs {
        let nameservers = nameservers.map(|list| {
            let mut u = Upstreams::new(list, None);
            u.udp_timeout = Duration::from_secs(2);
            u
        });
        TargetAddrs { target, nameservers, cache: Mutex::new(None), lookup: Mutex::new(()) }
    }

    fn cached(&self, now: Instant) -> Option<Vec<IpAddr>> {
        let c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        c.as_ref().filter(|r| r.fresh(now)).map(|r| r.addrs.clone())
    }

    /// The addresses to dial now, in order.
    pub fn addrs(&self) -> Result<Vec<IpAddr>, String> {
        let name = match &self.target {
            Target::Ip(ip) => return Ok(vec![*ip]),
            Target::Name(n) => n,
        };
        if let Some(a) = self.cached(Instant::now()) {
            return Ok(a);
        }
        let _one = self.lookup.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(a) = self.cached(Instant::now()) {
            return Ok(a);
        }
        let answers = match &self.nameservers {
            Some(ns) => crate::resolve::ask_addresses(ns, name),
            None => crate::resolve::system_resolve(name, 0, LOOKUP_TIMEOUT)
                .map(|v| v.into_iter().map(|sa| (sa.ip(), SYSTEM_TTL)).collect()),
        };
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        match answers.map(|a| Resolved::from_answers(&a, Instant::now())) {
            Ok(Some(r)) => {
                if c.as_ref().map(|o| &o.addrs) != Some(&r.addrs) {
                    log::info!("relay target {name} is at {}", show(&r.addrs));
                }
                let out = r.addrs.clone();
                *c = Some(r);
                Ok(out)
            }
            // A failed lookup keeps the last addresses (if any) rather
            // than closing the door while the resolver is away.
            Ok(None) | Err(_) if c.is_some() => {
                let old = c.as_ref().map(|r| r.addrs.clone()).unwrap_or_default();
                log::warn!("resolving relay target {name} failed; using its last addresses {}", show(&old));
                Ok(old)
            }
            Ok(None) => Err(format!("relay target {name} has no addresses")),
            Err(e) => Err(format!("resolving relay target {name}: {e}")),
        }
    }

    /// A connection to `ip` failed: the next connection resolves again.
    pub fn failed(&self, ip: IpAddr) {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(r) = c.as_mut() {
            if r.addrs.contains(&ip) {
                // Expired, but kept as the fallback of a failing lookup.
                r.until = Instant::now();
            }
        }
    }
}

fn show(a: &[IpAddr]) -> String {
    a.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}
