//! The subcommands: each turns a parsed [`Command`] into work and an exit
//! code. Exit codes: 0 success, 1 runtime failure, 2 bad usage,
//! configuration or policy.

use std::process::ExitCode;
use std::time::Duration;

use crate::cli::{self, Command};
use crate::config::{self, Config};
use crate::policy;
use crate::startup::{build_ruleset, init_logging, load_config, load_policy, process_env, Failure, Outcome};

/// Runs one command; `main` prints a failure and exits with its code.
pub fn run(cmd: Command) -> Outcome {
    init_logging();
    match cmd {
        Command::Help(which) => {
            print!("{}", which.map_or(cli::USAGE, cli::help));
            Ok(ExitCode::SUCCESS)
        }
        Command::Version => {
            println!("egret {}", crate::VERSION);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check { policy } => check(policy),
        Command::Health { url } => health(url.as_deref()),
        Command::Run { print_rules: true } => print_rules(),
        Command::Run { print_rules: false } => {
            let p = build_ruleset()?;
            announce(&p.cfg);
            // Before the daemon starts its threads: they copy the set.
            crate::caps::establish(&crate::caps::needed_for_run(
                &p.cfg,
                crate::caps::unprivileged_port_start(),
            ));
            remove_g0efilter_tables();
            crate::daemon::run(p).map(|()| ExitCode::SUCCESS)
        }
        Command::Proxy { hosts } => proxy(hosts),
        Command::Init => init(),
        Command::Cleanup => cleanup(),
        Command::Selftest { technique: Some(t) } => {
            crate::selftest::technique_main(&t.name, &t.privilege, t.http_port, t.https_port)
                .map(|()| ExitCode::SUCCESS)
                .map_err(|e| Failure::failed(format!("selftest {}: {e}", t.name)))
        }
        Command::Selftest { technique: None } => selftest(),
        Command::Dashboard(crate::cli::DashboardTool::Serve) => dashboard(),
        Command::Dashboard(crate::cli::DashboardTool::HashPassword) => hash_password(),
    }
}

fn check(path: Option<std::path::PathBuf>) -> Outcome {
    let cfg = load_config()?;
    let p = load_policy(&cfg, path.as_deref()).map_err(Failure::invalid)?;
    // A YAML comment, so the output stays a valid policy file.
    print!("{p}{}", guard_line(&cfg.guard_addresses));
    Ok(ExitCode::SUCCESS)
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

/// `egret run --print-rules`: the ruleset as nft text, nothing applied.
fn print_rules() -> Outcome {
    print!("{}", build_ruleset()?.ruleset);
    Ok(ExitCode::SUCCESS)
}

/// `egret init`: install the fail-closed ruleset and exit.
fn init() -> Outcome {
    let p = build_ruleset()?;
    crate::caps::establish(&[crate::caps::net_admin()]);
    remove_g0efilter_tables();
    let a = crate::nft::apply(&p.ruleset).map_err(|e| Failure::failed(format!("init: {e}")))?;
    eprintln!("egret init: {} in {} ms", a.installed, a.elapsed.as_millis());
    Ok(ExitCode::SUCCESS)
}

/// `egret cleanup`: remove the table (egress is unfiltered afterwards).
fn cleanup() -> Outcome {
    crate::caps::establish(&[crate::caps::net_admin()]);
    let removed = crate::nft::delete_table().map_err(|e| Failure::failed(format!("cleanup: {e}")))?;
    let t = crate::nft::TABLE;
    eprintln!(
        "egret cleanup: {}",
        if removed { format!("removed table inet {t}") } else { format!("no table inet {t} to remove") }
    );
    Ok(ExitCode::SUCCESS)
}

/// `egret dashboard`: the dashboard server, until the process is killed.
fn dashboard() -> Outcome {
    let cfg = config::DashboardConfig::from_env(&process_env)
        .map_err(|e| Failure::invalid(format!("dashboard: {e}")))?;
    for w in &cfg.warnings {
        log::warn!("dashboard: {w}");
    }
    log::info!(
        "dashboard: stricter than g0efilter on purpose (README: \"Coming from g0efilter\"): DELETE /api/v1/logs needs \
         the API key"
    );
    crate::dashboard::run(cfg).map_err(Failure::failed)?;
    Ok(ExitCode::SUCCESS)
}

/// `egret dashboard hash-password`: one line from stdin (the password) →
/// its argon2id hash on stdout, for `DASHBOARD_USERS=name:HASH`.
fn hash_password() -> Outcome {
    use std::io::{BufRead, Read};
    if nix::unistd::isatty(std::io::stdin()).unwrap_or(false) {
        eprintln!("password (the line is shown as you type; pipe it in to avoid that):");
    }
    let mut line = String::new();
    std::io::stdin()
        .lock()
        .read_line(&mut line)
        .map_err(|e| Failure::failed(format!("hash-password: cannot read stdin: {e}")))?;
    let password = line.trim_end_matches(['\n', '\r']);
    if password.is_empty() {
        return Err(Failure::invalid("hash-password: empty password (give it on stdin)"));
    }
    let mut salt = [0u8; 16];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(&mut salt))
        .map_err(|e| Failure::failed(format!("hash-password: no randomness: {e}")))?;
    let hash = crate::dashboard::auth::hash_password(password, &salt)
        .map_err(|e| Failure::failed(format!("hash-password: {e}")))?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}

/// `egret health [URL]`: without a URL, the filter's `/health` over its
/// unix socket; with one, a plain HTTP GET.
fn health(url: Option<&str>) -> Outcome {
    let timeout = Duration::from_secs(3);
    let (shown, got) = match url {
        None => ("the filter's unix socket", crate::health::get_default(timeout)),
        Some(u) => (u, crate::health::get(u, timeout)),
    };
    let url = shown;
    match got.map_err(|e| Failure::failed(format!("health: {e}")))? {
        (200, body) => {
            println!("{}", body.trim());
            Ok(ExitCode::SUCCESS)
        }
        (code, body) => Err(Failure::failed(format!("health: {url} answered {code}: {}", body.trim()))),
    }
}

/// `egret proxy [--hosts FILE]` (hidden): the HTTP/HTTPS proxies alone,
/// events as JSON lines on stdout, until SIGTERM/SIGINT. The ruleset that
/// redirects to them is installed by someone else (the tests use `nft`).
fn proxy(hosts: Option<std::path::PathBuf>) -> Outcome {
    use nix::sys::signal::{SigSet, Signal};
    use std::sync::Arc;
    let cfg = load_config()?;
    let policy = load_policy(&cfg, None).map_err(Failure::invalid)?;
    let table = match hosts {
        None => crate::proxy::StaticHosts::default(),
        Some(path) => std::fs::read_to_string(&path)
            .map_err(|e| e.to_string())
            .and_then(|t| crate::proxy::StaticHosts::parse(&t))
            .map_err(|e| Failure::invalid(format!("proxy: {}: {e}", path.display())))?,
    };
    let Some(mark) = cfg.bypass_mark else {
        return Err(Failure::invalid(
            "proxy: BYPASS_MARK must be set (the ruleset installed by someone else must know it)",
        ));
    };
    // Block the stop signals before any thread starts, so every thread
    // inherits the mask and only `wait` below receives them.
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().map_err(|e| Failure::failed(format!("proxy: blocking signals: {e}")))?;
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
    sink.map_err(|e| Failure::failed(format!("proxy: {e}")))?;
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
    let handle = crate::proxy::start(settings, policy::PolicyHandle::new(policy), Arc::new(table), emitter)
        .map_err(|e| Failure::failed(format!("proxy: {e}")))?;
    let sig = set.wait();
    log::info!("stopping on {sig:?}");
    handle.stop();
    Ok(ExitCode::SUCCESS)
}

/// `egret selftest`: every technique's line; 0 all held, 1 a bypass, 2
/// no judgement possible.
fn selftest() -> Outcome {
    let cfg = load_config()?;
    crate::caps::establish(&[crate::caps::net_admin()]);
    let exe = std::env::current_exe().unwrap_or_else(|_| std::path::PathBuf::from("/proc/self/exe"));
    let opts =
        crate::selftest::Options { mark: None, http_port: cfg.http_port, https_port: cfg.https_port, exe };
    let report = crate::selftest::run(&opts).map_err(Failure::invalid)?;
    for l in &report.lines {
        println!("{l}");
    }
    println!("{}", report.summary());
    // A bypass is the self-test's finding, not its failure.
    Ok(if report.bypasses().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(crate::startup::EXIT_FAILURE)
    })
}
