//! The subcommands: each turns a parsed [`Command`] into work and an exit
//! code. Exit codes: 0 success, 1 runtime failure, 2 bad usage,
//! configuration or policy, 3 not available in this build yet.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{self, Command};
use crate::config::{self, Config};
use crate::policy::{self, Policy, PolicyErrors};

pub const EXIT_FAILURE: u8 = 1;
pub const EXIT_INVALID: u8 = 2;
pub const EXIT_UNAVAILABLE: u8 = 3;

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
        Command::Health { url } => health(url.as_deref().unwrap_or(crate::health::DEFAULT_URL)),
        Command::Run { .. } => unavailable("run", "the kernel path and proxies (issues 3 and 4)"),
        Command::Proxy { hosts } => proxy(hosts),
        Command::Init => unavailable("init", "the kernel path (issue 3)"),
        Command::Cleanup => unavailable("cleanup", "the kernel path (issue 3)"),
        Command::Dashboard => unavailable("dashboard", "the dashboard (issue 7)"),
    }
}

fn unavailable(cmd: &str, what: &str) -> ExitCode {
    eprintln!("egret {cmd}: not available in this build yet; it arrives with {what}");
    ExitCode::from(EXIT_UNAVAILABLE)
}

/// Parses the filter configuration or prints every problem.
pub fn load_config() -> Result<Config, ExitCode> {
    Config::from_env(&process_env).map_err(|e| {
        eprintln!("egret: {e}");
        ExitCode::from(EXIT_INVALID)
    })
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
            print!("{p}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("egret: {e}");
            ExitCode::from(EXIT_INVALID)
        }
    }
}

fn health(url: &str) -> ExitCode {
    match crate::health::get(url, Duration::from_secs(3)) {
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
            let per_conn = 6; // two sockets, two pipes (two fds each)
            if (n as usize) < cfg.max_connections * per_conn {
                log::warn!(
                    "open-file limit {n} is below MAX_CONNECTIONS x {per_conn}; accepts may fail under load"
                );
            }
        }
        Err(e) => log::warn!("cannot raise the open-file limit: {e}"),
    }
    let settings = crate::proxy::Settings::from_config(&cfg, mark);
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
