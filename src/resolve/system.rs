//! What the workloads' own resolver (libc) would use: `/etc/hosts`,
//! `/etc/resolv.conf` and the upstream list egret derives from them. Read
//! once at start (see [`Hosts`] for why), parsed by pure functions.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::time::Duration;

use crate::policy::normalize;

/// The hosts file the workloads' libc reads.
pub const HOSTS: &str = "/etc/hosts";
/// The resolver configuration the workloads' libc reads.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// `/etc/hosts` as it was when egret started. Never re-read: in a pod
/// the file is shared with the workloads (Kubernetes mounts one per pod
/// into every container, Compose's `service:` mode shares it), and a
/// workload that could edit it would choose which addresses an allowed
/// name may go to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hosts {
    /// Normalised name → pinned addresses, in file order.
    pins: HashMap<String, Vec<IpAddr>>,
}

impl Hosts {
    /// The file at `path` now; a missing or unreadable file pins nothing.
    pub fn read(path: &std::path::Path) -> Hosts {
        Hosts::parse(&std::fs::read_to_string(path).unwrap_or_default())
    }

    pub fn parse(text: &str) -> Hosts {
        Hosts { pins: parse_hosts(text) }
    }

    /// The addresses pinned for `name` (any case, one trailing dot).
    pub fn lookup(&self, name: &str) -> &[IpAddr] {
        normalize(name).ok().and_then(|n| self.pins.get(&n)).map_or(&[], Vec::as_slice)
    }
}

/// hosts(5): `ADDRESS NAME [ALIAS...]`, `#` comments; names normalised as
/// the policy normalises them (lines egret cannot read are skipped, as
/// libc skips them).
pub fn parse_hosts(text: &str) -> HashMap<String, Vec<IpAddr>> {
    let mut out: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for line in text.lines() {
        let mut words = line.split('#').next().unwrap_or("").split_whitespace();
        let Some(ip) = words.next().and_then(|w| w.split('%').next()?.parse::<IpAddr>().ok()) else {
            continue;
        };
        for w in words {
            if let Ok(n) = normalize(w) {
                let v = out.entry(n).or_default();
                if !v.contains(&ip) {
                    v.push(ip);
                }
            }
        }
    }
    out
}

/// Where the resolver list in effect came from, for the start-up line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UpstreamSource {
    /// `DNS_UPSTREAMS`.
    Env,
    /// The nameservers of `/etc/resolv.conf`.
    ResolvConf,
    /// `/etc/resolv.conf` names none: Docker's embedded resolver.
    Fallback,
}

impl fmt::Display for UpstreamSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            UpstreamSource::Env => "DNS_UPSTREAMS",
            UpstreamSource::ResolvConf => "the nameservers of /etc/resolv.conf (DNS_UPSTREAMS is not set)",
            UpstreamSource::Fallback => {
                "Docker's embedded resolver (DNS_UPSTREAMS is not set and /etc/resolv.conf names no nameserver)"
            }
        })
    }
}

/// The nameservers of a resolv.conf, on port 53.
pub fn resolv_conf_upstreams(text: &str) -> Vec<SocketAddr> {
    parse_resolv_conf(text).nameservers.into_iter().map(|ip| SocketAddr::new(ip, 53)).collect()
}

/// A problem with `DNS_UPSTREAMS` found at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamError(pub String);

impl fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UpstreamError {}

/// Resolves `(host, port)` to socket addresses (the system resolver, or a
/// table in tests).
pub type NameLookup<'a> = dyn Fn(&str, u16) -> Result<Vec<SocketAddr>, String> + 'a;

/// The resolver list in effect: `DNS_UPSTREAMS` (names through `resolve`,
/// in the order written), else the nameservers of `resolv_conf`, else
/// `127.0.0.11:53`. Pure apart from what `resolve` does.
pub fn effective_upstreams(
    env: Option<&[crate::config::Upstream]>,
    resolv_conf: &str,
    resolve: &NameLookup<'_>,
) -> Result<(Vec<SocketAddr>, UpstreamSource), UpstreamError> {
    use crate::config::Upstream;
    let Some(list) = env else {
        let from_file = resolv_conf_upstreams(resolv_conf);
        if from_file.is_empty() {
            let fallback = crate::config::defaults::DNS_UPSTREAM.parse().expect("default upstream is valid");
            return Ok((vec![fallback], UpstreamSource::Fallback));
        }
        return Ok((from_file, UpstreamSource::ResolvConf));
    };
    let mut out: Vec<SocketAddr> = Vec::new();
    for u in list {
        let addrs = match u {
            Upstream::Addr(a) => vec![*a],
            Upstream::Name { host, port } => resolve(host, *port).map_err(|e| {
                UpstreamError(format!("DNS_UPSTREAMS entry {host}:{port} does not resolve: {e}"))
            })?,
        };
        for a in addrs {
            if !out.contains(&a) {
                out.push(a);
            }
        }
    }
    Ok((out, UpstreamSource::Env))
}

/// Resolves a host name through the system resolver (libc, which reads
/// `/etc/hosts` and `/etc/resolv.conf`), bounded by `timeout`.
pub fn system_resolve(host: &str, port: u16, timeout: Duration) -> Result<Vec<SocketAddr>, String> {
    use std::net::ToSocketAddrs;
    let (tx, rx) = std::sync::mpsc::channel();
    let target = format!("{host}:{port}");
    let spawned = std::thread::Builder::new().name("resolve-upstream".into()).spawn(move || {
        let _ = tx.send(target.to_socket_addrs().map(Iterator::collect::<Vec<_>>));
    });
    if let Err(e) = spawned {
        return Err(format!("cannot start the lookup: {e}"));
    }
    match rx.recv_timeout(timeout) {
        Ok(Ok(v)) if !v.is_empty() => Ok(v),
        Ok(Ok(_)) => Err("no addresses".into()),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {}s", timeout.as_secs())),
    }
}

/// Watches `path` (polling its content every `every`) and calls `changed`
/// with the nameservers it names whenever they change; stops when
/// `changed` returns false. An unreadable or empty file changes nothing:
/// the resolvers in effect stay rather than falling back mid-flight.
pub fn watch_resolv_conf(
    path: &Path,
    every: Duration,
    mut current: Vec<SocketAddr>,
    mut changed: impl FnMut(Vec<SocketAddr>) -> bool + Send + 'static,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let path = path.to_owned();
    std::thread::Builder::new().name("resolv-watch".into()).spawn(move || loop {
        std::thread::sleep(every);
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        let now = resolv_conf_upstreams(&text);
        if now.is_empty() || now == current {
            continue;
        }
        current.clone_from(&now);
        if !changed(now) {
            return;
        }
    })
}

/// What `/etc/resolv.conf` says, as far as egret needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvConf {
    pub nameservers: Vec<IpAddr>,
    pub search: Vec<String>,
    pub ndots: usize,
}

impl Default for ResolvConf {
    fn default() -> ResolvConf {
        ResolvConf { nameservers: Vec::new(), search: Vec::new(), ndots: 1 }
    }
}

/// resolv.conf(5): `nameserver`, `search` / `domain` (the last one wins),
/// `options ndots:N`; comments start with `#` or `;`.
pub fn parse_resolv_conf(text: &str) -> ResolvConf {
    let mut rc = ResolvConf::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut words = line.split_whitespace();
        match words.next() {
            Some("nameserver") => {
                // A scoped v6 address (`fe80::1%eth0`) keeps only the address.
                if let Some(ip) = words.next().and_then(|w| w.split('%').next()?.parse().ok()) {
                    rc.nameservers.push(ip);
                }
            }
            Some("search") | Some("domain") => {
                rc.search =
                    words.map(|w| w.trim_end_matches('.').to_owned()).filter(|w| !w.is_empty()).collect();
            }
            Some("options") => {
                for opt in words {
                    if let Some(n) = opt.strip_prefix("ndots:").and_then(|n| n.parse::<usize>().ok()) {
                        rc.ndots = n.min(15);
                    }
                }
            }
            _ => {}
        }
    }
    rc
}

/// The names to ask for, in order: with fewer than `ndots` dots the search
/// domains come first, as libc does; a trailing dot means "exactly this".
pub fn candidates(name: &str, rc: &ResolvConf) -> Vec<String> {
    if let Some(abs) = name.strip_suffix('.') {
        return vec![abs.to_owned()];
    }
    let searched = rc.search.iter().map(|d| format!("{name}.{d}"));
    if name.matches('.').count() < rc.ndots {
        searched.chain(std::iter::once(name.to_owned())).collect()
    } else {
        std::iter::once(name.to_owned()).chain(searched).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn resolv_conf_table() {
        let rc = parse_resolv_conf(
            "# generated\nnameserver 10.96.0.10\nnameserver fe80::1%eth0 ; scoped\nnameserver bogus\n\
             search ns.svc.cluster.local svc.cluster.local.\noptions ndots:5 timeout:2\n",
        );
        assert_eq!(rc.nameservers, ["10.96.0.10".parse::<IpAddr>().unwrap(), "fe80::1".parse().unwrap()]);
        assert_eq!(rc.search, ["ns.svc.cluster.local", "svc.cluster.local"]);
        assert_eq!(rc.ndots, 5);
        assert_eq!(parse_resolv_conf(""), ResolvConf::default());
    }

    #[test]
    fn hosts_table() {
        let text = "127.0.0.1 localhost\n10.0.0.9  dashboard dash.local # comment\n# 10.0.0.8 dashboard\n\
                    fd00::9 Dashboard\nnot-an-ip dashboard\n";
        let hosts = Hosts::parse(text);
        let want: Vec<IpAddr> = vec!["10.0.0.9".parse().unwrap(), "fd00::9".parse().unwrap()];
        assert_eq!(hosts.lookup("dashboard"), want);
        assert_eq!(hosts.lookup("DASH.local."), ["10.0.0.9".parse::<IpAddr>().unwrap()]);
        assert!(hosts.lookup("other").is_empty());
    }

    #[test]
    fn search_order() {
        let rc = ResolvConf { nameservers: vec![], search: vec!["a.test".into(), "b.test".into()], ndots: 2 };
        let table: &[(&str, &[&str])] = &[
            ("dash", &["dash.a.test", "dash.b.test", "dash"]),
            ("dash.ns", &["dash.ns.a.test", "dash.ns.b.test", "dash.ns"]),
            ("x.example.com", &["x.example.com", "x.example.com.a.test", "x.example.com.b.test"]),
            ("exact.", &["exact"]),
        ];
        for (name, want) in table {
            assert_eq!(candidates(name, &rc), *want, "{name}");
        }
    }

    #[test]
    fn effective_upstreams_table() {
        use crate::config::Upstream;
        let names = |host: &str, port: u16| match host {
            "resolver.test" => Ok(vec![format!("10.0.0.53:{port}").parse().unwrap()]),
            _ => Err("no such host".to_owned()),
        };
        let sa = |s: &str| s.parse::<SocketAddr>().unwrap();
        let k8s = "search ns.svc.cluster.local\nnameserver 10.96.0.10\noptions ndots:5\n";
        let podman = "nameserver 10.89.0.1\nnameserver fd00::1\n";
        type Want = Result<(Vec<SocketAddr>, UpstreamSource), String>;
        let cases: Vec<(Option<Vec<Upstream>>, &str, Want)> = vec![
            (None, k8s, Ok((vec![sa("10.96.0.10:53")], UpstreamSource::ResolvConf))),
            (None, podman, Ok((vec![sa("10.89.0.1:53"), sa("[fd00::1]:53")], UpstreamSource::ResolvConf))),
            (None, "# empty\n", Ok((vec![sa("127.0.0.11:53")], UpstreamSource::Fallback))),
            (
                Some(vec![
                    Upstream::Addr(sa("10.1.1.1:53")),
                    Upstream::Name { host: "resolver.test".into(), port: 5353 },
                ]),
                k8s,
                Ok((vec![sa("10.1.1.1:53"), sa("10.0.0.53:5353")], UpstreamSource::Env)),
            ),
            (
                Some(vec![Upstream::Name { host: "gone.test".into(), port: 53 }]),
                k8s,
                Err("DNS_UPSTREAMS entry gone.test:53 does not resolve: no such host".into()),
            ),
        ];
        for (env, rc, want) in cases {
            let got = effective_upstreams(env.as_deref(), rc, &names).map_err(|e| e.to_string());
            assert_eq!(got, want, "{env:?} / {rc:?}");
        }
    }

    #[test]
    fn hosts_parse() {
        let h = parse_hosts(
            "10.0.0.1 a.test b.TEST. # c\n::1 localhost ip6-localhost\nbad line\n10.0.0.2 a.test\n",
        );
        assert_eq!(h["a.test"], [ip("10.0.0.1"), ip("10.0.0.2")]);
        assert_eq!(h["b.test"], [ip("10.0.0.1")]);
        assert_eq!(h["localhost"], [ip("::1")]);
    }

    #[test]
    fn the_watcher_reports_changed_nameservers() {
        let dir = std::env::temp_dir().join(format!("egret-rc-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let rc = dir.join("resolv.conf");
        std::fs::write(&rc, "nameserver 10.0.0.1\n").unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let start = resolv_conf_upstreams("nameserver 10.0.0.1\n");
        let t =
            watch_resolv_conf(&rc, Duration::from_millis(20), start, move |v| tx.send(v).is_ok()).unwrap();
        std::fs::write(&rc, "nameserver 10.0.0.2\n").unwrap();
        let got = rx.recv_timeout(Duration::from_secs(5)).expect("a change is reported");
        assert_eq!(got, ["10.0.0.2:53".parse::<SocketAddr>().unwrap()]);
        drop(rx);
        // The next change finds the receiver gone and the thread ends.
        std::fs::write(&rc, "nameserver 10.0.0.3\n").unwrap();
        let ended = (0..250).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            t.is_finished()
        });
        assert!(ended, "the watcher must stop once nobody listens");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
