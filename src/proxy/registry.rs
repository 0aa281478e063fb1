//! The open proxied connections and the proxies' counters: what a policy
//! reload needs to cut connections the new policy no longer allows, and
//! what the filter's metrics report.
//!
//! Shell: shares the connection's sockets (not duplicates: a descriptor
//! each would double what a held connection costs) so a reload can shut a
//! connection down from outside its `conn` thread (the thread then sees
//! the sockets close and ends). The decision itself is the pure
//! [`Policy::decide`].

use std::collections::HashMap;
use std::net::{IpAddr, Shutdown, SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use super::Kind;
use crate::policy::{Policy, Proto, Query};

/// Event reason of a connection cut because a reload revoked it.
pub const POLICY_REVOKED: &str = "policy-revoked";

/// Counters since start (relaxed atomics: each exact on its own).
#[derive(Debug, Default)]
pub struct Counters {
    /// Indexed by [`Kind`]: `[http, https]`.
    pub allowed: [AtomicU64; 2],
    pub blocked: [AtomicU64; 2],
    pub revoked: [AtomicU64; 2],
    /// Client → upstream bytes of closed connections.
    pub bytes_up: AtomicU64,
    /// Upstream → client bytes of closed connections.
    pub bytes_down: AtomicU64,
    /// accept(2) failures for want of descriptors (EMFILE, ENFILE).
    pub accept_failed: AtomicU64,
}

pub(crate) fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Http => 0,
        Kind::Https => 1,
    }
}

/// One relayed connection as a reload sees it.
#[derive(Debug)]
pub struct Tracked {
    pub kind: Kind,
    pub peer: SocketAddr,
    pub orig: SocketAddr,
    /// The allowed name (for HTTP: of the latest request) and the chain
    /// its answers led through when it was allowed: a reload judges that
    /// chain even once the check cache has forgotten the name (round 11,
    /// escape_193).
    name: Mutex<(String, Vec<String>)>,
    client: Arc<TcpStream>,
    upstream: Arc<TcpStream>,
}

impl Tracked {
    pub fn name(&self) -> String {
        lock(&self.name).0.clone()
    }

    /// The first link of the connection's chain, as recorded or as `check`
    /// knows it now, that `policy` denylists (none under audit).
    fn denied_link(&self, policy: &Policy, check: Option<&dyn super::DestinationCheck>) -> Option<String> {
        if policy.audit() {
            return None;
        }
        let (name, mut chain) = lock(&self.name).clone();
        if let Some(c) = check {
            crate::dns::filter::merge_kept(&mut chain, &c.chain(&name));
        }
        crate::dns::filter::denied_in_kept(&chain, policy).map(|(link, _)| link)
    }

    /// Cuts both sides at once: the upstream gets no further byte, the
    /// client a reset.
    fn cut(&self) {
        crate::listen::reset(&self.client);
        let _ = self.upstream.shutdown(Shutdown::Both);
    }
}

/// A connection cut by [`Registry::revoke`], for its event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revoked {
    pub kind: Kind,
    pub peer: SocketAddr,
    pub orig: SocketAddr,
    pub name: String,
    /// The link of the name's chain the new policy denylists, when that
    /// is why.
    pub link: Option<String>,
}

#[derive(Debug, Default)]
pub struct Registry {
    open: Mutex<HashMap<u64, Arc<Tracked>>>,
    pub counters: Counters,
}

/// Removes its connection from the registry when dropped.
pub(crate) struct Entry {
    registry: Arc<Registry>,
    id: u64,
    tracked: Arc<Tracked>,
}

impl Entry {
    /// A later request's name, and its chain.
    pub fn set_name(&self, name: &str, chain: Vec<String>) {
        *lock(&self.tracked.name) = (name.to_owned(), chain);
    }
}

impl Drop for Entry {
    fn drop(&mut self) {
        lock(&self.registry.open).remove(&self.id);
    }
}

/// A poisoned lock only means another thread panicked while holding it;
/// the map and strings inside stay consistent, so keep using them.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Whether `policy` still allows `name` at `dst` (the policy part of the
/// proxies' decision; the anti-spoofing check was passed at connect).
pub fn still_allowed(policy: &Policy, name: &str, dst: SocketAddr) -> bool {
    let ip = dst.ip();
    // Audit mode cuts nothing: what it would refuse was logged when the
    // connection started.
    if policy.audit() {
        return true;
    }
    // An IP-literal Host/SNI was allowed only under `domains: ["*"]` or
    // the default allow, and never to a denylisted address.
    if name.parse::<IpAddr>().is_ok() {
        let d = policy.decide(Query { name: None, ip: Some(ip), port: Some((Proto::Tcp, dst.port())) });
        let denied = d.reason == crate::policy::Reason::Denylisted;
        return (policy.allows_any_name() && !denied) || policy.allows_ip(ip);
    }
    policy.decide(Query { name: Some(name), ip: Some(ip), port: Some((Proto::Tcp, dst.port())) }).allowed()
}

impl Registry {
    /// Registers a relayed connection until the entry is dropped.
    pub(crate) fn track(
        self: &Arc<Self>,
        id: u64,
        kind: Kind,
        (peer, orig): (SocketAddr, SocketAddr),
        (name, chain): (&str, Vec<String>),
        client: &Arc<TcpStream>,
        upstream: &Arc<TcpStream>,
    ) -> Entry {
        let tracked = Arc::new(Tracked {
            kind,
            peer,
            orig,
            name: Mutex::new((name.to_owned(), chain)),
            client: client.clone(),
            upstream: upstream.clone(),
        });
        lock(&self.open).insert(id, tracked.clone());
        Entry { registry: self.clone(), id, tracked }
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        lock(&self.open).len()
    }

    /// Cuts every open connection `policy` no longer allows, by its name
    /// and destination or by the chain `check` recorded for its name, and
    /// returns them (the caller emits their events).
    pub fn revoke(&self, policy: &Policy, check: Option<&dyn super::DestinationCheck>) -> Vec<Revoked> {
        let victims: Vec<(u64, Arc<Tracked>, Option<String>)> = lock(&self.open)
            .iter()
            .filter_map(|(id, t)| {
                let link = t.denied_link(policy, check);
                (link.is_some() || !still_allowed(policy, &t.name(), t.orig)).then(|| (*id, t.clone(), link))
            })
            .collect();
        victims
            .into_iter()
            .map(|(id, t, link)| {
                t.cut();
                lock(&self.open).remove(&id);
                self.counters.revoked[slot(t.kind)].fetch_add(1, Ordering::Relaxed);
                Revoked { kind: t.kind, peer: t.peer, orig: t.orig, name: t.name(), link }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Origin, Source};
    use std::io::Read;
    use std::net::TcpListener;

    fn policy(domains: &[&str]) -> Policy {
        let d: Vec<String> = domains.iter().map(|s| s.to_string()).collect();
        Policy::compile(&[], &[Source { origin: Origin::Env("ALLOWLIST_DOMAINS"), entries: &d }]).unwrap()
    }

    /// A reload keeps a connection an address entry with a port allows
    /// only on that port.
    #[test]
    fn an_ip_literal_stays_allowed_under_the_default_allow_unless_denylisted() {
        let raw = crate::policy::parse_yaml(
            "default_action: allow\ndenylist:\n  ips: [\"10.0.0.9\"]\n  domains: [b.example]\n",
            "t.yaml",
        )
        .unwrap();
        let p = crate::policy::compile_raw(raw, "t.yaml", &Default::default()).unwrap();
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(still_allowed(&p, "10.0.0.5", at("10.0.0.5:80")));
        assert!(!still_allowed(&p, "10.0.0.9", at("10.0.0.9:80")));
        assert!(still_allowed(&p, "a.example", at("10.0.0.5:443")));
        assert!(!still_allowed(&p, "b.example", at("10.0.0.5:443")));
    }

    #[test]
    fn still_allowed_asks_the_destination_port() {
        let i = vec!["tcp/10.0.0.5:443".to_owned()];
        let p =
            Policy::compile(&[Source { origin: Origin::Env("ALLOWLIST_IPS"), entries: &i }], &[]).unwrap();
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(still_allowed(&p, "b.example", at("10.0.0.5:443")));
        assert!(!still_allowed(&p, "b.example", at("10.0.0.5:80")));
        assert!(!still_allowed(&p, "b.example", at("10.0.0.6:443")));
    }

    /// A connected pair of loopback sockets.
    fn pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let a = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (b, _) = l.accept().unwrap();
        (a, b)
    }

    /// Round 11 (escape_193): the chain recorded when a connection was
    /// allowed is judged by a reload even when no check knows it any more.
    #[test]
    fn revoke_judges_the_chain_recorded_at_registration() {
        let reg = Arc::new(Registry::default());
        let (c, _cfar) = pair();
        let (u, _ufar) = pair();
        let [c, u] = [c, u].map(Arc::new);
        let flow = ("10.0.0.1:1000".parse().unwrap(), "10.0.9.9:443".parse().unwrap());
        let _e = reg.track(1, Kind::Https, flow, ("alias.example", vec!["evil.example".into()]), &c, &u);
        let open =
            crate::policy::from_yaml("default_action: allow\ndenylist:\n  domains: [\"other.example\"]\n");
        assert!(reg.revoke(&open, None).is_empty(), "control: nothing denylisted on the way");
        let deny =
            crate::policy::from_yaml("default_action: allow\ndenylist:\n  domains: [\"evil.example\"]\n");
        let cut = reg.revoke(&deny, None);
        assert_eq!(cut.iter().map(|r| r.link.as_deref()).collect::<Vec<_>>(), [Some("evil.example")]);
    }

    #[test]
    fn revoke_cuts_only_what_the_policy_no_longer_allows() {
        let reg = Arc::new(Registry::default());
        let (c1, mut far1) = pair();
        let (u1, _u1far) = pair();
        let (c2, far2) = pair();
        let (u2, _u2far) = pair();
        let [c1, u1, c2, u2] = [c1, u1, c2, u2].map(Arc::new);
        let flow = |n: u8| -> (SocketAddr, SocketAddr) {
            (format!("10.0.0.{n}:1000").parse().unwrap(), "10.0.9.9:443".parse().unwrap())
        };
        let e1 = reg.track(1, Kind::Https, flow(1), ("gone.example", Vec::new()), &c1, &u1);
        let e2 = reg.track(2, Kind::Http, flow(2), ("kept.example", Vec::new()), &c2, &u2);
        assert_eq!(reg.open(), 2);

        let cases: &[(&[&str], &[&str])] =
            &[(&["gone.example", "kept.example"], &[]), (&["kept.example"], &["gone.example"])];
        for (allowed, want) in cases {
            let got: Vec<String> = reg.revoke(&policy(allowed), None).into_iter().map(|r| r.name).collect();
            assert_eq!(&got, want, "allowed {allowed:?}");
        }
        assert_eq!(reg.open(), 1);
        assert_eq!(reg.counters.revoked[slot(Kind::Https)].load(Ordering::Relaxed), 1);
        // The revoked client sees its connection end; the kept one not.
        far1.set_read_timeout(Some(std::time::Duration::from_secs(2))).unwrap();
        let mut b = [0u8; 8];
        assert!(matches!(far1.read(&mut b), Ok(0) | Err(_)));
        far2.set_nonblocking(true).unwrap();
        assert_eq!((&far2).read(&mut b).unwrap_err().kind(), std::io::ErrorKind::WouldBlock);

        // A later host on an HTTP connection is what a reload checks.
        e2.set_name("other.example", Vec::new());
        assert_eq!(reg.revoke(&policy(&["kept.example"]), None).len(), 1);
        drop((e1, e2));
        assert_eq!(reg.open(), 0);
    }
}
