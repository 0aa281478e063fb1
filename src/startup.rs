//! What the subcommands share before their work starts (the environment,
//! logging, the configuration, the policy, the ruleset), and the one way
//! a start fails: a [`Failure`] that `main` prints once, as `egret: …`,
//! and turns into the exit code. Exit codes: 0 success, 1 a runtime
//! failure, 2 bad usage, configuration or policy.

use std::fmt;
use std::process::ExitCode;
use std::time::Duration;

use crate::config::{self, Config};
use crate::policy::{self, Policy, PolicyErrors};

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_INVALID: u8 = 2;

/// Why a command could not do its work; the message says what was being
/// done and what went wrong, without the `egret:` prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Bad usage, configuration or policy: the user must change something
    /// (exit 2).
    Invalid(String),
    /// Something failed while working (exit 1).
    Failed(String),
}

impl Failure {
    pub fn invalid(msg: impl fmt::Display) -> Failure {
        Failure::Invalid(msg.to_string())
    }

    pub fn failed(msg: impl fmt::Display) -> Failure {
        Failure::Failed(msg.to_string())
    }

    pub fn exit_code(&self) -> ExitCode {
        ExitCode::from(match self {
            Failure::Invalid(_) => EXIT_INVALID,
            Failure::Failed(_) => EXIT_FAILURE,
        })
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Invalid(m) | Failure::Failed(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for Failure {}

/// A command's result: its exit code (a self-test that found a bypass
/// exits 1 without failing), or the failure.
pub type Outcome = Result<ExitCode, Failure>;

/// Reads the process environment.
pub fn process_env(var: &str) -> Option<String> {
    std::env::var(var).ok()
}

/// Sets up env_logger: `LOG_LEVEL` (TRACE..ERROR, default INFO), with
/// `RUST_LOG` overriding it when set. Diagnostics go to stderr; stdout is
/// kept for the JSON event lines.
pub fn init_logging() {
    let level = process_env("LOG_LEVEL")
        .and_then(|v| config::parse_level(v.trim()).ok())
        .unwrap_or(log::LevelFilter::Info);
    let mut b = env_logger::Builder::new();
    b.filter_level(level).target(env_logger::Target::Stderr);
    if let Some(spec) = process_env("RUST_LOG").filter(|s| !s.trim().is_empty()) {
        b.parse_filters(&spec);
    }
    // A second init (tests) is harmless.
    let _ = b.try_init();
}

/// The filter configuration (its warnings logged), or every problem.
pub fn load_config() -> Result<Config, Failure> {
    let cfg = Config::from_env(&process_env).map_err(Failure::invalid)?;
    for w in &cfg.warnings {
        log::warn!("{w}");
    }
    Ok(cfg)
}

/// Loads the policy named by the config (or `path`) and logs its warnings.
/// With `ENABLE_REMOTE_UNBLOCK`, the unexpired unblocks of `UNBLOCK_FILE`
/// are compiled in as extra allowlist entries; a file that cannot be
/// read is logged and applies nothing (it never breaks the policy).
pub fn load_policy(cfg: &Config, path: Option<&std::path::Path>) -> Result<Policy, PolicyErrors> {
    let mut env = cfg.env_lists();
    if cfg.remote_unblock {
        env.overlay = crate::unblock::overlay(&read_unblocks(&cfg.unblock_file, &cfg.guard_addresses));
    }
    let p = policy::load(path.unwrap_or(&cfg.policy_path), &env)?;
    for w in p.warnings() {
        log::warn!("{w}");
    }
    Ok(p)
}

/// The unblocks of `UNBLOCK_FILE` in force now (expired, bad and guarded
/// records dropped, and said); none when the file is missing or unreadable.
pub fn read_unblocks(path: &std::path::Path, guard: &policy::Guard) -> Vec<crate::unblock::Unblock> {
    let bytes = match read_own_file(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => {
            log::warn!("unblock: cannot read {}: {e}; no unblock applied", path.display());
            return Vec::new();
        }
    };
    match crate::unblock::parse_file(&bytes, now_unix_nanos()) {
        Ok((keep, mut dropped)) => {
            let (keep, guarded) = crate::unblock::split_guarded(keep, guard);
            dropped.extend(guarded);
            for (id, why) in dropped {
                log::info!("unblock: #{id} in {} not applied: {why}", path.display());
            }
            keep
        }
        Err(e) => {
            log::warn!("unblock: {}: {e}; no unblock applied", path.display());
            Vec::new()
        }
    }
}

/// The bytes of a file only egret could have written: not a symlink,
/// owned by egret's effective uid, writable by no one else. The unblock
/// file opens the allowlist; a workload that can write where it lives (a
/// shared volume) must not be able to forge one (round 8).
fn read_own_file(path: &std::path::Path) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(nix::fcntl::OFlag::O_NOFOLLOW.bits())
        .open(path)?;
    let m = f.metadata()?;
    let me = nix::unistd::geteuid().as_raw();
    if m.uid() != me || m.mode() & 0o022 != 0 || !m.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::PermissionDenied,
            format!(
                "owned by uid {} with mode {:o}: egret applies only a regular file it owns (uid {me}) that no one else can write",
                m.uid(),
                m.mode() & 0o7777
            ),
        ));
    }
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

/// The wall clock in Unix nanoseconds (saturating), for the unblocks.
pub fn now_unix_nanos() -> i64 {
    let d = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

/// Everything the kernel path needs at start.
pub struct Prepared {
    pub cfg: Config,
    pub policy: Policy,
    /// egret's own identity: `identity.mark` is on every socket egret
    /// opens to the outside (`outbound`).
    pub identity: crate::nft::Identity,
    /// The host facts the ruleset was built from.
    pub host: crate::nft::Host,
    pub ruleset: crate::nft::Ruleset,
}

/// Config + policy + identity → the ruleset.
pub fn build_ruleset() -> Result<Prepared, Failure> {
    let mut cfg = load_config()?;
    settle_upstreams(&mut cfg)?;
    let policy = load_policy(&cfg, None).map_err(Failure::invalid)?;
    let id =
        crate::nft::identity(&cfg).map_err(|e| Failure::failed(format!("choosing random marks: {e}")))?;
    let host = crate::nft::host::read();
    let ruleset = crate::nft::Ruleset::build(&cfg, &policy, &id, &host);
    Ok(Prepared { cfg, policy, identity: id, host, ruleset })
}

/// Puts the resolvers in effect into `cfg.dns_upstreams` (DNS_UPSTREAMS
/// with its names resolved through the system resolver, else the
/// nameservers of `/etc/resolv.conf`, else 127.0.0.11:53) and says which
/// the anti-spoofing check (HTTPS mode) or the forwarder (DNS mode) asks.
/// Runs before the ruleset is built, so the rules let the workloads reach
/// the same resolvers (HTTPS mode).
pub fn settle_upstreams(cfg: &mut Config) -> Result<(), Failure> {
    let rc = std::fs::read_to_string(crate::resolve::RESOLV_CONF).unwrap_or_default();
    let resolve = |host: &str, port: u16| crate::resolve::system_resolve(host, port, Duration::from_secs(5));
    let (list, source) = crate::resolve::effective_upstreams(cfg.dns_upstreams_env.as_deref(), &rc, &resolve)
        .map_err(Failure::invalid)?;
    cfg.dns_upstreams = list;
    let shown: Vec<String> = cfg.dns_upstreams.iter().map(ToString::to_string).collect();
    let what = match cfg.filter_mode {
        config::FilterMode::Https if cfg.verify_destination => {
            "the anti-spoofing check (with /etc/hosts pins) resolves names through"
        }
        config::FilterMode::Https => "workloads may reach the resolvers",
        config::FilterMode::Dns => "allowed DNS queries are forwarded to",
    };
    log::info!("{what} {}: {source}", shown.join(", "));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_keep_their_message_and_map_to_the_documented_codes() {
        let bad = Failure::invalid("POLICY_PATH: no such file");
        let broke = Failure::failed(format!("installing the ruleset: {}", "EPERM"));
        assert_eq!(bad.to_string(), "POLICY_PATH: no such file");
        assert_eq!(broke.to_string(), "installing the ruleset: EPERM");
        assert_eq!(bad.exit_code(), ExitCode::from(2));
        assert_eq!(broke.exit_code(), ExitCode::from(1));
    }
}
