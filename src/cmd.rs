//! The subcommands: each turns a parsed [`Command`] into work and an exit
//! code. Exit codes: 0 success, 1 runtime failure, 2 bad usage,
//! configuration or policy.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{self, Command};
use crate::config::{self, Config};
use crate::policy::{self, Policy, PolicyErrors};

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_INVALID: u8 = 2;

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

pub fn run(cmd: Command) -> ExitCode {
    init_logging();
    match cmd {
        Command::Help(which) => {
            print!("{}", which.map_or(cli::USAGE, cli::help));
            ExitCode::SUCCESS
        }
        Command::Version => {
            println!("egret {}", crate::VERSION);
            ExitCode::SUCCESS
        }
        Command::Check { policy } => check(policy),
        Command::Health { url } => health(url.as_deref()),
        Command::Run { print_rules: true } => print_rules(),
        Command::Run { print_rules: false } => match build_ruleset() {
            Ok(p) => {
                announce(&p.cfg);
                // Before the daemon starts its threads: they copy the set.
                crate::caps::establish(&crate::caps::needed_for_run(
                    &p.cfg,
                    crate::caps::unprivileged_port_start(),
                ));
                remove_g0efilter_tables();
                crate::daemon::run(p)
            }
            Err(code) => code,
        },
        Command::Proxy { hosts } => proxy(hosts),
        Command::Init => init(),
        Command::Cleanup => cleanup(),
        Command::Selftest { technique: Some(t) } => {
            match crate::selftest::technique_main(&t.name, &t.privilege, t.http_port, t.https_port) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("egret selftest {}: {e}", t.name);
                    ExitCode::from(EXIT_FAILURE)
                }
            }
        }
        Command::Selftest { technique: None } => selftest(),
        Command::Dashboard => dashboard(),
    }
}

/// Parses the filter configuration or prints every problem.
pub fn load_config() -> Result<Config, ExitCode> {
    let cfg = Config::from_env(&process_env).map_err(|e| {
        eprintln!("egret: {e}");
        ExitCode::from(EXIT_INVALID)
    })?;
    for w in &cfg.warnings {
        log::warn!("{w}");
    }
    Ok(cfg)
}

/// Loads the policy named by the config (or `path`) and logs its warnings.
pub fn load_policy(cfg: &Config, path: Option<&std::path::Path>) -> Result<Policy, PolicyErrors> {
    let p = policy::load(path.unwrap_or(&cfg.policy_path), &cfg.env_lists())?;
    for w in p.warnings() {
        log::warn!("{w}");
    }
    Ok(p)
}

fn check(path: Option<std::path::PathBuf>) -> ExitCode {
    let cfg = match load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    match load_policy(&cfg, path.as_deref()) {
        Ok(p) => {
            // A YAML comment, so the output stays a valid policy file.
            print!("{p}{}", guard_line(&cfg.guard_addresses));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("egret: {e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// `egret check`'s line on the SSRF guard in effect.
pub fn guard_line(g: &policy::Guard) -> String {
    if g.is_off() {
        "# GUARD_ADDRESSES: none (the SSRF guard is off: an allowed name may lead to any address)\n"
            .to_owned()
    } else {
        format!("# GUARD_ADDRESSES: {g} (never reached by an allowed name unless allowlist.ips covers the address)\n")
    }
}

/// Everything the kernel path needs at start.
pub struct Prepared {
    pub cfg: Config,
    pub policy: Policy,
    /// egret's own identity: set `identity.mark` on every socket egret
    /// opens to the outside (`outbound`).
    pub identity: crate::nft::Identity,
    /// The host facts the ruleset was built from.
    pub host: crate::nft::Host,
    pub ruleset: crate::nft::Ruleset,
}

/// Puts the resolvers in effect into `cfg.dns_upstreams` (DNS_UPSTREAMS
/// with its names resolved through the system resolver, else the
/// nameservers of `/etc/resolv.conf`, else 127.0.0.11:53) and says which
/// the anti-spoofing check (HTTPS mode) or the forwarder (DNS mode) asks.
/// Runs before the ruleset is built, so the rules let the workloads reach
/// the same resolvers (HTTPS mode).
pub fn settle_upstreams(cfg: &mut Config) -> Result<(), ExitCode> {
    let rc = std::fs::read_to_string(crate::resolve::RESOLV_CONF).unwrap_or_default();
    let resolve = |host: &str, port: u16| crate::resolve::system_resolve(host, port, Duration::from_secs(5));
    let (list, source) = crate::resolve::effective_upstreams(cfg.dns_upstreams_env.as_deref(), &rc, &resolve)
        .map_err(|e| {
            eprintln!("egret: {e}");
            ExitCode::from(EXIT_INVALID)
        })?;
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

/// `egret run`: the start-up lines that do not depend on the kernel.
fn announce(cfg: &Config) {
    log::info!("{}", stricter_than_g0efilter(cfg));
    let g = &cfg.guard_addresses;
    if g.is_off() {
        log::warn!("GUARD_ADDRESSES=none: an allowed name may lead to the metadata service, loopback or any other address");
    } else {
        log::info!("SSRF guard (GUARD_ADDRESSES): an allowed name never leads to {g} addresses unless allowlist.ips covers them");
    }
}

/// The one start-up line saying where egret is stricter than g0efilter on
/// purpose (README.md, "Coming from g0efilter", has the reasons).
pub fn stricter_than_g0efilter(cfg: &Config) -> String {
    let mut v = Vec::new();
    if cfg.filter_mode == config::FilterMode::Https {
        if cfg.verify_destination {
            v.push("an allowed Host/SNI must resolve to the connection's destination (VERIFY_DESTINATION)");
        }
        v.push("every request of a kept-alive HTTP connection is checked, not only the first");
    } else {
        v.push("a blocked name is NXDOMAIN for every query type, never a 0.0.0.0 answer");
    }
    if !cfg.guard_addresses.is_off() {
        v.push(
            "an allowed name never leads to a guarded address such as the metadata service (GUARD_ADDRESSES)",
        );
    }
    v.push("IPv6 is filtered like IPv4");
    v.push("outbound flows are re-checked on every packet (conntrack is not trusted)");
    v.push("egret's own traffic uses a random mark, not the forgeable 0x1");
    v.push("unknown policy keys such as denylist are refused, not ignored");
    format!("stricter than g0efilter on purpose (README: \"Coming from g0efilter\"): {}", v.join("; "))
}

/// Removes g0efilter's tables (an in-place swap in a surviving network
/// namespace): their rules would otherwise keep filtering with
/// g0efilter's fixed, forgeable mark next to egret's. Failing to look is
/// a warning; egret's own table does not depend on it.
fn remove_g0efilter_tables() {
    match crate::nft::foreign::remove_g0efilter_tables() {
        Ok(gone) if gone.is_empty() => log::debug!("no g0efilter tables to remove"),
        Ok(gone) => log::info!("removed g0efilter's nftables tables: {}", gone.join(", ")),
        Err(e) => log::warn!("looking for g0efilter's nftables tables: {e}"),
    }
}

/// Config + policy + identity → the ruleset, or the exit code of the
/// first problem (already printed).
pub fn build_ruleset() -> Result<Prepared, ExitCode> {
    let mut cfg = load_config()?;
    settle_upstreams(&mut cfg)?;
    let policy = load_policy(&cfg, None).map_err(|e| {
        eprintln!("egret: {e}");
        ExitCode::from(EXIT_INVALID)
    })?;
    let id = crate::nft::identity(&cfg).map_err(|e| {
        eprintln!("egret: choosing random marks: {e}");
        ExitCode::from(EXIT_FAILURE)
    })?;
    let host = crate::nft::host::read();
    let ruleset = crate::nft::Ruleset::build(&cfg, &policy, &id, &host);
    Ok(Prepared { cfg, policy, identity: id, host, ruleset })
}

/// `egret run --print-rules`: the ruleset as nft text, nothing applied.
fn print_rules() -> ExitCode {
    match build_ruleset() {
        Ok(p) => {
            print!("{}", p.ruleset);
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// `egret init`: install the fail-closed ruleset and exit.
fn init() -> ExitCode {
    let p = match build_ruleset() {
        Ok(p) => p,
        Err(code) => return code,
    };
    crate::caps::establish(&[crate::caps::net_admin()]);
    remove_g0efilter_tables();
    match crate::nft::apply(&p.ruleset) {
        Ok(a) => {
            eprintln!("egret init: {} in {} ms", a.installed, a.elapsed.as_millis());
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("egret init: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `egret cleanup`: remove the table (egress is unfiltered afterwards).
fn cleanup() -> ExitCode {
    crate::caps::establish(&[crate::caps::net_admin()]);
    match crate::nft::delete_table() {
        Ok(true) => {
            eprintln!("egret cleanup: removed table inet {}", crate::nft::TABLE);
            ExitCode::SUCCESS
        }
        Ok(false) => {
            eprintln!("egret cleanup: no table inet {} to remove", crate::nft::TABLE);
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("egret cleanup: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `egret dashboard`: the dashboard server, until the process is killed.
fn dashboard() -> ExitCode {
    let cfg = match config::DashboardConfig::from_env(&process_env) {
        Ok(c) => {
            for w in &c.warnings {
                log::warn!("dashboard: {w}");
            }
            c
        }
        Err(e) => {
            eprintln!("egret dashboard: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    log::info!(
        "dashboard: stricter than g0efilter on purpose (README: \"Coming from g0efilter\"): DELETE /api/v1/logs needs \
         the API key"
    );
    match crate::dashboard::run(cfg) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("egret {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `egret health [URL]`: without a URL, the filter's `/health` over its
/// unix socket; with one, a plain HTTP GET.
fn health(url: Option<&str>) -> ExitCode {
    let timeout = Duration::from_secs(3);
    let (shown, got) = match url {
        None => ("the filter's unix socket", crate::health::get_default(timeout)),
        Some(u) => (u, crate::health::get(u, timeout)),
    };
    let url = shown;
    match got {
        Ok((200, body)) => {
            println!("{}", body.trim());
            ExitCode::SUCCESS
        }
        Ok((code, body)) => {
            eprintln!("egret health: {url} answered {code}: {}", body.trim());
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            eprintln!("egret health: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// `egret proxy [--hosts FILE]` (hidden): the HTTP/HTTPS proxies alone,
/// events as JSON lines on stdout, until SIGTERM/SIGINT. The ruleset that
/// redirects to them is installed by someone else (the tests use `nft`).
fn proxy(hosts: Option<std::path::PathBuf>) -> ExitCode {
    use nix::sys::signal::{SigSet, Signal};
    use std::sync::Arc;
    let cfg = match load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    let policy = match load_policy(&cfg, None) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("egret: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let table = match hosts {
        None => crate::proxy::StaticHosts::default(),
        Some(path) => match std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| crate::proxy::StaticHosts::parse(&t))
        {
            Ok(t) => t,
            Err(e) => {
                eprintln!("egret proxy: {}: {e}", path.display());
                return ExitCode::from(EXIT_INVALID);
            }
        },
    };
    let Some(mark) = cfg.bypass_mark else {
        eprintln!(
            "egret proxy: BYPASS_MARK must be set (the ruleset installed by someone else must know it)"
        );
        return ExitCode::from(EXIT_INVALID);
    };
    // Block the stop signals before any thread starts, so every thread
    // inherits the mask and only `wait` below receives them.
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    if let Err(e) = set.thread_block() {
        eprintln!("egret proxy: blocking signals: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    let hostname = cfg.hostname.clone().unwrap_or_else(|| {
        nix::unistd::gethostname().map(|h| h.to_string_lossy().into_owned()).unwrap_or_default()
    });
    let (emitter, rx) = crate::events::Emitter::channel(cfg.dashboard_queue_size.max(1024), &hostname);
    let sink = std::thread::Builder::new().name("events".into()).spawn(move || {
        use std::io::Write;
        for ev in rx {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{}", ev.to_json());
            let _ = out.flush();
        }
    });
    if let Err(e) = sink {
        eprintln!("egret proxy: {e}");
        return ExitCode::from(EXIT_FAILURE);
    }
    match crate::proxy::raise_nofile_limit() {
        Ok(n) => {
            let per_conn = 2; // two sockets (bulk directions add a pipe each)
            if (n as usize) < cfg.max_connections * per_conn {
                log::warn!(
                    "open-file limit {n} is below MAX_CONNECTIONS x {per_conn}; accepts may fail under load"
                );
            }
        }
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
    // The ruleset is someone else's: it knows the bypass mark, not a
    // listen mark, so the listeners carry none.
    let id = crate::nft::Identity { mark, listen_mark: 0, cgroup: None, generation_base: 0, egress_tag: 0 };
    let settings =
        crate::proxy::Settings { listen_mark: None, ..crate::proxy::Settings::from_config(&cfg, &id) };
    let handle =
        match crate::proxy::start(settings, policy::PolicyHandle::new(policy), Arc::new(table), emitter) {
            Ok(h) => h,
            Err(e) => {
                eprintln!("egret proxy: {e}");
                return ExitCode::from(EXIT_FAILURE);
            }
        };
    let sig = set.wait();
    log::info!("stopping on {sig:?}");
    handle.stop();
    ExitCode::SUCCESS
}

/// `egret selftest`: every technique's line; 0 all held, 1 a bypass, 2
/// no judgement possible.
fn selftest() -> ExitCode {
    let cfg = match load_config() {
        Ok(c) => c,
        Err(code) => return code,
    };
    crate::caps::establish(&[crate::caps::net_admin()]);
    let exe = std::env::current_exe().unwrap_or_else(|_| std::path::PathBuf::from("/proc/self/exe"));
    let opts =
        crate::selftest::Options { mark: None, http_port: cfg.http_port, https_port: cfg.https_port, exe };
    match crate::selftest::run(&opts) {
        Ok(report) => {
            for l in &report.lines {
                println!("{l}");
            }
            println!("{}", report.summary());
            if report.bypasses().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
        Err(e) => {
            eprintln!("egret: {e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}
