//! Linux capabilities at start: which egret holds, which it needs, and
//! making the two agree before any thread starts.
//!
//! egret needs `CAP_NET_ADMIN` (nftables, NFLOG, socket marks) and
//! `CAP_NET_BIND_SERVICE` only when it binds a port below
//! `net.ipv4.ip_unprivileged_port_start` (DNS mode on port 53). The image
//! runs it as uid 65532 with file capabilities on `/egret`
//! (`cap_net_admin,cap_net_bind_service=p`: permitted, not effective), so
//! an unprivileged process receives what the container's bounding set
//! allows of those two and nothing else, without ambient capabilities
//! (Kubernetes has none) and under no-new-privileges. [`plan`] is pure:
//! a non-root process keeps exactly what it needs of what it received, in
//! its effective set; root is left as it is and told what it could drop.
//! A missing capability is a warning naming the way to grant it: the
//! operation that needs it fails with its own error later.
//!
//! The shell ([`establish`]) reads `/proc/thread-self/status` and applies
//! the plan with `capset(2)` (`sys::set_capabilities`). Capabilities are
//! per thread and copied to threads created afterwards, so it runs on the
//! main thread before the daemon starts any.

use std::fmt;

use crate::config::{Config, FilterMode};

pub const NET_BIND_SERVICE: u32 = 10;
pub const NET_ADMIN: u32 = 12;
pub const NET_RAW: u32 = 13;

/// `capability.h`'s names, by number (lowercase, without `CAP_`).
const NAMES: [&str; 41] = [
    "chown",
    "dac_override",
    "dac_read_search",
    "fowner",
    "fsetid",
    "kill",
    "setgid",
    "setuid",
    "setpcap",
    "linux_immutable",
    "net_bind_service",
    "net_broadcast",
    "net_admin",
    "net_raw",
    "ipc_lock",
    "ipc_owner",
    "sys_module",
    "sys_rawio",
    "sys_chroot",
    "sys_ptrace",
    "sys_pacct",
    "sys_admin",
    "sys_boot",
    "sys_nice",
    "sys_resource",
    "sys_time",
    "sys_tty_config",
    "mknod",
    "lease",
    "audit_write",
    "audit_control",
    "setfcap",
    "mac_override",
    "mac_admin",
    "syslog",
    "wake_alarm",
    "block_suspend",
    "audit_read",
    "perfmon",
    "bpf",
    "checkpoint_restore",
];

/// A capability set as the kernel's bit mask.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Set(pub u64);

impl Set {
    pub fn of(caps: &[u32]) -> Set {
        Set(caps.iter().fold(0, |m, &c| m | (1u64 << c)))
    }

    pub fn has(self, cap: u32) -> bool {
        self.0 & (1u64 << cap) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn and(self, o: Set) -> Set {
        Set(self.0 & o.0)
    }

    pub fn or(self, o: Set) -> Set {
        Set(self.0 | o.0)
    }

    pub fn minus(self, o: Set) -> Set {
        Set(self.0 & !o.0)
    }
}

/// `net_admin,net_bind_service`, or `none`.
impl fmt::Display for Set {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.is_empty() {
            return f.write_str("none");
        }
        let mut first = true;
        for bit in 0..64u32 {
            if !self.has(bit) {
                continue;
            }
            if !first {
                f.write_str(",")?;
            }
            first = false;
            match NAMES.get(bit as usize) {
                Some(n) => f.write_str(n)?,
                None => write!(f, "cap_{bit}")?,
            }
        }
        Ok(())
    }
}

/// The capability lines of `/proc/<pid>/status` and the effective uid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Status {
    pub euid: u32,
    pub inheritable: Set,
    pub permitted: Set,
    pub effective: Set,
    pub bounding: Set,
    pub ambient: Set,
}

/// Parses `/proc/<pid>/status`; `None` when a line is missing.
pub fn parse_status(text: &str) -> Option<Status> {
    let field = |name: &str| text.lines().find_map(|l| l.strip_prefix(name)).map(str::trim);
    let mask = |name: &str| field(name).and_then(|v| u64::from_str_radix(v, 16).ok()).map(Set);
    // Uid: real, effective, saved, filesystem.
    let euid = field("Uid:")?.split_whitespace().nth(1)?.parse().ok()?;
    Some(Status {
        euid,
        inheritable: mask("CapInh:")?,
        permitted: mask("CapPrm:")?,
        effective: mask("CapEff:")?,
        bounding: mask("CapBnd:")?,
        // Older kernels have no ambient set.
        ambient: mask("CapAmb:").unwrap_or_default(),
    })
}

/// A capability egret needs, and for what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Need {
    pub cap: u32,
    pub why: String,
}

/// What `egret run` needs with `cfg`, given the namespace's
/// `net.ipv4.ip_unprivileged_port_start`.
pub fn needed_for_run(cfg: &Config, unprivileged_port_start: u16) -> Vec<Need> {
    let mut ports: Vec<(u16, &str)> = Vec::new();
    match cfg.filter_mode {
        FilterMode::Https => {
            ports.push((cfg.http_port, "HTTP_PORT"));
            ports.push((cfg.https_port, "HTTPS_PORT"));
            if cfg.dns_in_https_mode {
                ports.push((cfg.dns_port, "DNS_PORT"));
            }
        }
        FilterMode::Dns => ports.push((cfg.dns_port, "DNS_PORT")),
    }
    if let Some(a) = cfg.metrics_addr {
        ports.push((a.port(), "METRICS_ADDR"));
    }
    if let Some(a) = cfg.dashboard_listen {
        ports.push((a.port(), "DASHBOARD_LISTEN"));
    }
    let mut v = vec![net_admin()];
    let low: Vec<String> = ports
        .iter()
        .filter(|(p, _)| *p != 0 && *p < unprivileged_port_start)
        .map(|(p, var)| format!("port {p} ({var})"))
        .collect();
    if !low.is_empty() {
        v.push(Need {
            cap: NET_BIND_SERVICE,
            why: format!(
                "binding {} below net.ipv4.ip_unprivileged_port_start={unprivileged_port_start}",
                low.join(", ")
            ),
        });
    }
    v
}

/// `egret init`, `cleanup` and `selftest`: the netlink work only.
/// What relay mode needs: no NET_ADMIN (no rules, no marks), only
/// NET_BIND_SERVICE for relayed ports (or `METRICS_ADDR`) below
/// `unprivileged_port_start`.
pub fn needed_for_relay(ports: &[u16], unprivileged_port_start: u16) -> Vec<Need> {
    let low: Vec<String> = ports
        .iter()
        .filter(|p| **p != 0 && **p < unprivileged_port_start)
        .map(|p| format!("port {p}"))
        .collect();
    if low.is_empty() {
        return Vec::new();
    }
    vec![Need {
        cap: NET_BIND_SERVICE,
        why: format!(
            "relaying {} below net.ipv4.ip_unprivileged_port_start={unprivileged_port_start}",
            low.join(", ")
        ),
    }]
}

pub fn net_admin() -> Need {
    Need { cap: NET_ADMIN, why: "nftables rules, NFLOG and socket marks".into() }
}

/// What to do about the capabilities at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// New (effective, permitted) sets, when they differ from what the
    /// process has. The inheritable set (and with it the ambient one)
    /// becomes empty with them.
    pub set: Option<(Set, Set)>,
    /// The start-up line.
    pub info: String,
    pub warnings: Vec<String>,
}

/// Decides the sets for a process in state `st` that needs `need`.
pub fn plan(st: &Status, need: &[Need]) -> Plan {
    let want = Set::of(&need.iter().map(|n| n.cap).collect::<Vec<_>>());
    let kept = want.and(st.permitted);
    let root = st.euid == 0;
    let (set, info) = if root {
        // Root keeps what it was given: a user who runs egret as root
        // chose to. Only a needed capability that is permitted but not
        // effective is raised.
        let effective = st.effective.or(kept);
        let extra = st.effective.minus(want);
        let mut info = format!("capabilities: uid 0, effective {effective}");
        if !extra.is_empty() {
            info.push_str(&format!(
                "; egret needs only {want} (run it as a non-root user as the image does, or drop the rest: \
                 --cap-drop ALL --cap-add NET_ADMIN)"
            ));
        }
        ((effective != st.effective).then_some((effective, st.permitted)), info)
    } else {
        let source = if !st.ambient.and(kept).is_empty() {
            "ambient capabilities"
        } else if kept.is_empty() {
            "none received"
        } else {
            "the binary's file capabilities"
        };
        let mut info = format!("capabilities: uid {}, effective {kept} ({source})", st.euid);
        let dropped = st.permitted.or(st.effective).minus(kept);
        if !dropped.is_empty() {
            info.push_str(&format!("; not needed, dropped: {dropped}"));
        }
        let changed = st.effective != kept || st.permitted != kept || !st.inheritable.is_empty();
        (changed.then_some((kept, kept)), info)
    };
    let warnings = need.iter().filter(|n| !st.permitted.has(n.cap)).map(|n| missing(st, n)).collect();
    Plan { set, info, warnings }
}

fn missing(st: &Status, n: &Need) -> String {
    let name = NAMES.get(n.cap as usize).copied().unwrap_or("?");
    let upper = name.to_ascii_uppercase();
    let mut hint = if !st.bounding.has(n.cap) {
        format!(
            "the container was not granted it: --cap-add {upper} (podman, docker) or \
             securityContext.capabilities.add: [{upper}] (Kubernetes)"
        )
    } else if st.euid != 0 {
        format!(
            "the container may grant it, but this non-root process did not receive it: the binary needs \
             file capabilities (the image's /egret has cap_net_admin,cap_net_bind_service=p) or {upper} as \
             an ambient capability"
        )
    } else {
        "it was dropped before egret started".to_owned()
    };
    if n.cap == NET_BIND_SERVICE {
        hint.push_str("; or lower net.ipv4.ip_unprivileged_port_start (a pod sysctl)");
    }
    format!("capabilities: CAP_{upper} is missing, needed for {}: {hint}", n.why)
}

// ---------------------------------------------------------------------------
// Shell.

/// This thread's capability status.
pub fn current() -> Option<Status> {
    std::fs::read_to_string("/proc/thread-self/status").ok().as_deref().and_then(parse_status)
}

/// `net.ipv4.ip_unprivileged_port_start` of this network namespace
/// (1024, the kernel's default, when it cannot be read).
pub fn unprivileged_port_start() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_unprivileged_port_start")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1024)
}

/// Applies [`plan`] for `need` and logs the start-up line and warnings.
/// Call it on the main thread before any other thread is started.
pub fn establish(need: &[Need]) {
    let Some(st) = current() else {
        log::warn!("capabilities: cannot read /proc/thread-self/status; leaving them as they are");
        return;
    };
    let p = plan(&st, need);
    if let Some((effective, permitted)) = p.set {
        if let Err(e) = crate::sys::set_capabilities(effective.0, permitted.0) {
            log::warn!("capabilities: cannot set effective {effective}, permitted {permitted}: {e}");
        }
    }
    log::info!("{}", p.info);
    for w in &p.warnings {
        log::warn!("{w}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_mode_needs_no_net_admin() {
        assert!(needed_for_relay(&[8080, 8443], 1024).is_empty());
        let n = needed_for_relay(&[80, 443, 5353], 1024);
        assert_eq!(n.iter().map(|n| n.cap).collect::<Vec<_>>(), vec![NET_BIND_SERVICE]);
        assert!(n[0].why.contains("port 80, port 443") && !n[0].why.contains("5353"), "{}", n[0].why);
        assert!(needed_for_relay(&[80], 0).is_empty(), "every port is unprivileged");
    }

    const ADMIN: Set = Set(1 << NET_ADMIN);
    const BIND: Set = Set(1 << NET_BIND_SERVICE);
    /// podman's default set.
    const DEFAULT: Set = Set(0x8004_05fb);

    fn st(euid: u32, prm: Set, eff: Set, bnd: Set, amb: Set) -> Status {
        Status { euid, inheritable: amb, permitted: prm, effective: eff, bounding: bnd, ambient: amb }
    }

    fn cfg(env: &[(&str, &str)]) -> Config {
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Config::from_env(&|k| env.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone())).unwrap()
    }

    #[test]
    fn names() {
        assert_eq!(Set::of(&[NET_ADMIN, NET_BIND_SERVICE]).to_string(), "net_bind_service,net_admin");
        assert_eq!(Set(0).to_string(), "none");
        assert_eq!(Set(1 << 40 | 1 << 63).to_string(), "checkpoint_restore,cap_63");
    }

    #[test]
    fn status_lines() {
        let text = "Name:\tegret\nUid:\t65532\t65532\t65532\t65532\nCapInh:\t0000000000000000\n\
                    CapPrm:\t0000000000001400\nCapEff:\t0000000000000000\nCapBnd:\t0000000000001400\n\
                    CapAmb:\t0000000000000000\n";
        let s = parse_status(text).unwrap();
        assert_eq!(s.euid, 65532);
        assert_eq!(s.permitted, ADMIN.or(BIND));
        assert_eq!(s.effective, Set(0));
        assert!(parse_status("Uid:\t0\t0\t0\t0\n").is_none());
    }

    #[test]
    fn needs_by_mode_and_port() {
        let caps = |n: Vec<Need>| n.iter().map(|n| n.cap).collect::<Vec<_>>();
        assert_eq!(caps(needed_for_run(&cfg(&[]), 1024)), [NET_ADMIN], "HTTPS mode on 8080/8443");
        let dns = needed_for_run(&cfg(&[("FILTER_MODE", "dns")]), 1024);
        assert_eq!(caps(dns.clone()), [NET_ADMIN, NET_BIND_SERVICE]);
        assert!(dns[1].why.contains("port 53 (DNS_PORT)"), "{}", dns[1].why);
        // A pod sysctl that lets anyone bind 53 makes it unnecessary.
        assert_eq!(caps(needed_for_run(&cfg(&[("FILTER_MODE", "dns")]), 0)), [NET_ADMIN]);
        assert_eq!(
            caps(needed_for_run(&cfg(&[("FILTER_MODE", "dns"), ("DNS_PORT", "5353")]), 1024)),
            [NET_ADMIN]
        );
        let m =
            needed_for_run(&cfg(&[("METRICS_ADDR", "127.0.0.1:900"), ("DNS_IN_HTTPS_MODE", "true")]), 1024);
        assert!(m[1].why.contains("port 53 (DNS_PORT), port 900 (METRICS_ADDR)"), "{}", m[1].why);
    }

    #[test]
    fn non_root_keeps_exactly_what_it_needs() {
        // File capabilities in HTTPS mode: both permitted, none effective.
        let p = plan(&st(65532, ADMIN.or(BIND), Set(0), DEFAULT.or(ADMIN), Set(0)), &[net_admin()]);
        assert_eq!(p.set, Some((ADMIN, ADMIN)));
        assert_eq!(
            p.info,
            "capabilities: uid 65532, effective net_admin (the binary's file capabilities); not needed, dropped: \
             net_bind_service"
        );
        assert!(p.warnings.is_empty());
        // podman's ambient capabilities (no file capabilities).
        let p = plan(&st(65532, ADMIN, ADMIN, ADMIN, ADMIN), &[net_admin()]);
        assert_eq!(p.set, Some((ADMIN, ADMIN)), "the inheritable set is cleared");
        assert!(p.info.contains("effective net_admin (ambient capabilities)"), "{}", p.info);
        // Already exactly right: nothing to do.
        let p = plan(&st(65532, ADMIN, ADMIN, ADMIN, Set(0)), &[net_admin()]);
        assert_eq!(p.set, None);
    }

    #[test]
    fn missing_capabilities_say_how_to_grant_them() {
        let dns = [net_admin(), Need { cap: NET_BIND_SERVICE, why: "binding port 53 (DNS_PORT)".into() }];
        // Granted NET_ADMIN only, DNS mode.
        let p = plan(&st(65532, ADMIN, Set(0), ADMIN, Set(0)), &dns);
        assert_eq!(p.set, Some((ADMIN, ADMIN)));
        assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
        assert!(p.warnings[0]
            .starts_with("capabilities: CAP_NET_BIND_SERVICE is missing, needed for binding port 53"));
        assert!(p.warnings[0].contains("--cap-add NET_BIND_SERVICE"), "{}", p.warnings[0]);
        assert!(p.warnings[0].contains("ip_unprivileged_port_start"), "{}", p.warnings[0]);
        // In the bounding set but not received: no file capabilities.
        let p = plan(&st(1000, Set(0), Set(0), DEFAULT.or(ADMIN), Set(0)), &[net_admin()]);
        assert_eq!(p.set, None);
        assert!(p.info.contains("effective none (none received)"), "{}", p.info);
        assert!(p.warnings[0].contains("file capabilities"), "{}", p.warnings[0]);
        assert!(!p.warnings[0].contains("ip_unprivileged_port_start"));
    }

    #[test]
    fn root_is_left_alone_but_told() {
        let all = Set((1 << 41) - 1);
        let p = plan(&st(0, all, all, all, Set(0)), &[net_admin()]);
        assert_eq!(p.set, None);
        assert!(p.info.contains("egret needs only net_admin"), "{}", p.info);
        let p = plan(&st(0, ADMIN, ADMIN, ADMIN, Set(0)), &[net_admin()]);
        assert_eq!((p.set, p.info.as_str()), (None, "capabilities: uid 0, effective net_admin"));
        // Permitted but not effective (a capability-aware launcher): raised.
        let p = plan(&st(0, ADMIN.or(BIND), BIND, all, Set(0)), &[net_admin()]);
        assert_eq!(p.set, Some((ADMIN.or(BIND), ADMIN.or(BIND))));
    }
}
