//! egret's own identity for the rules: the socket marks its sockets carry
//! and, where cgroup v2 is available, its cgroup.
//!
//! A fixed, well-known mark is forgeable: any process with CAP_NET_RAW
//! (which containers get by default) can set any SO_MARK. So the marks are
//! random per start (the outbound one unless `BYPASS_MARK` fixes it), and
//! no value derived from them is ever shown where a workload could read
//! it: not in conntrack marks (the learned-flow generation is its own
//! random value), logs, events or metrics; nft dumps and the socket diag
//! mark attribute need CAP_NET_ADMIN; packets delivered inside the host
//! have their mark cleared (`scrub_out`), so SO_RCVMARK and socket filters
//! see none. Where the socket's cgroup v2 can be matched, the rules also
//! require it, and a forged mark alone gets nowhere.
//!
//! The parsers here are pure; `identity()` reads /dev/urandom and /proc.

use std::path::{Path, PathBuf};

use super::ruleset::{CgroupMatch, Identity};
use crate::config::Config;

/// Works out egret's identity and logs which protection is active.
pub fn identity(cfg: &Config) -> std::io::Result<Identity> {
    let mark = match cfg.bypass_mark {
        Some(m) => {
            // Not the value: logs may be readable where the mark must not be.
            log::info!("bypass mark fixed by BYPASS_MARK");
            m
        }
        None => random_nonzero()?,
    };
    let listen_mark = loop {
        let m = random_nonzero()?;
        if m != mark {
            break m;
        }
    };
    let generation_base = random_nonzero()?;
    let egress_tag = random_nonzero()?;
    let cgroup = detect_cgroup();
    match &cgroup {
        Some(c) => log::info!(
            "egret's own traffic is recognised by its socket mark and its cgroup v2 \"/{}\" (level {}, id {})",
            c.path,
            c.level,
            c.id
        ),
        None => log::warn!(
            "cgroup v2 matching is not available (no cgroup2 mount, or egret runs in the root cgroup): \
             egret's own traffic is recognised by its socket mark only; drop NET_RAW from workload \
             containers so they cannot set socket marks"
        ),
    }
    Ok(Identity { mark, listen_mark, cgroup, generation_base, egress_tag })
}

/// A random non-zero value from the kernel's generator.
pub fn random_nonzero() -> std::io::Result<u32> {
    use std::io::Read;
    let mut f = std::fs::File::open("/dev/urandom")?;
    loop {
        let mut b = [0u8; 4];
        f.read_exact(&mut b)?;
        let m = u32::from_ne_bytes(b);
        if m != 0 {
            return Ok(m);
        }
    }
}

/// egret's own cgroup v2 (path, level, id), or `None` without one of its own.
pub(crate) fn detect_cgroup() -> Option<CgroupMatch> {
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let own = std::fs::read_to_string("/proc/self/cgroup").ok()?;
    let mount = cgroup2_mount(&mountinfo)?;
    let path = unified_path(&own)?;
    let dir = mount.join(&path);
    // On cgroup2 the directory's inode number is the cgroup id the
    // kernel's `socket cgroupv2` compares with.
    let id = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&dir).ok()?);
    Some(CgroupMatch { level: level(&path), id, path })
}

/// Where the cgroup2 hierarchy is mounted, from /proc/self/mountinfo
/// (only a mount of its root, so paths from /proc/self/cgroup apply).
pub fn cgroup2_mount(mountinfo: &str) -> Option<PathBuf> {
    mountinfo.lines().find_map(|l| {
        let (pre, post) = l.split_once(" - ")?;
        let fstype = post.split_whitespace().next()?;
        let mut f = pre.split_whitespace();
        let root = f.nth(3)?;
        let mount_point = f.next()?;
        (fstype == "cgroup2" && root == "/").then(|| PathBuf::from(unescape(mount_point)))
    })
}

/// egret's cgroup v2 path without the leading `/`, from /proc/self/cgroup
/// (`0::/path`); `None` in the root cgroup, which every process shares.
pub fn unified_path(proc_cgroup: &str) -> Option<String> {
    let p = proc_cgroup.lines().find_map(|l| l.strip_prefix("0::"))?.trim();
    let rel = p.trim_start_matches('/');
    (!rel.is_empty() && !rel.contains("(deleted)")).then(|| rel.to_owned())
}

fn level(path: &str) -> u32 {
    Path::new(path).components().count() as u32
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_table() {
        let v1 = "25 30 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
                  26 25 0:23 / /sys/fs/cgroup/cpu rw - cgroup cgroup rw,cpu\n";
        assert_eq!(cgroup2_mount(v1), None);
        let hybrid = format!("{v1}27 25 0:24 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw\n");
        assert_eq!(cgroup2_mount(&hybrid), Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let sub = "28 25 0:24 /pod /mnt/cg rw - cgroup2 cgroup2 rw\n";
        assert_eq!(cgroup2_mount(sub), None, "a mount of a sub-tree does not match /proc/self/cgroup paths");
        let spaced = "29 25 0:24 / /mnt/my\\040cg rw - cgroup2 none rw\n";
        assert_eq!(cgroup2_mount(spaced), Some(PathBuf::from("/mnt/my cg")));
    }

    #[test]
    fn unified_table() {
        let cases = [
            ("12:cpu:/x\n0::/\n", None),
            ("0::/egret/run\n", Some("egret/run")),
            ("0::/system.slice/egret.service\n", Some("system.slice/egret.service")),
            ("12:cpu:/\n", None),
        ];
        for (input, want) in cases {
            assert_eq!(unified_path(input).as_deref(), want, "{input:?}");
        }
        assert_eq!(level("egret/run"), 2);
        assert_eq!(level("a"), 1);
    }
}
