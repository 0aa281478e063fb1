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
        Command::Check { policy, explain } => check(policy, explain),
        Command::Learn { from, group } => learn(&from, group),
        Command::Health { url } => health(url.as_deref()),
        // docker-whitelist's variables select relay mode on their own.
        Command::Relay => relay(),
        Command::Run { .. } if crate::relaymode::config::selected(&process_env) => relay(),
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
        Command::Dashboard(crate::cli::DashboardTool::Key(tool)) => agent_keys(&tool),
    }
}

fn check(path: Option<std::path::PathBuf>, explain: Option<String>) -> Outcome {
    let cfg = load_config()?;
    let p = load_policy(&cfg, path.as_deref()).map_err(Failure::invalid)?;
    if let Some(what) = explain {
        let (allowed, text) = policy::lint::explain(&p, &cfg.guard_addresses, &what);
        print!("{text}");
        return Ok(if allowed { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    // A YAML comment, so the output stays a valid policy file.
    print!("{p}{}", guard_line(&cfg.guard_addresses));
    Ok(ExitCode::SUCCESS)
}

/// `egret learn --from LOG_FILE`: the suggested policy on stdout, a summary
/// on stderr.
fn learn(from: &std::path::Path, group: bool) -> Outcome {
    let text = std::fs::read_to_string(from)
        .map_err(|e| Failure::failed(format!("reading the decision log {}: {e}", from.display())))?;
    let (l, skipped) = crate::learn::from_lines(text.lines());
    print!("{}", l.render(group));
    eprintln!(
        "egret learn: {} decisions read from {}, {} taught something{}",
        l.seen,
        from.display(),
        l.used,
        if skipped > 0 {
            format!(", {skipped} lines that are not JSON events skipped")
        } else {
            String::new()
        }
    );
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
        v.push("request heads must end lines with CRLF and frame bodies without Unicode spaces");
    } else {
        v.push("a blocked name is NXDOMAIN for every query type, never a 0.0.0.0 answer");
        v.push("multicast and broadcast stay in the pod");
    }
    if !cfg.guard_addresses.is_off() {
        v.push(
            "an allowed name never leads to a guarded address such as the metadata service (GUARD_ADDRESSES)",
        );
    }
    v.push("IPv6 is filtered like IPv4");
    v.push("outbound flows are re-checked on every packet (conntrack is not trusted)");
    v.push("egret's own traffic uses a random mark, not the forgeable 0x1");
    v.push("unknown policy keys are refused, not ignored");
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
         the API key; so do reads (GET /api/v1/logs, the stream, the UI) unless PUBLIC_READS=true"
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

/// `egret dashboard key ...`: agent keys in the database at `DB_PATH`
/// (the dashboard reads them from the file on every request, so a running
/// dashboard honours a change at once).
fn agent_keys(tool: &crate::cli::KeyTool) -> Outcome {
    use crate::cli::KeyTool;
    use crate::dashboard::{auth, db};
    let path = process_env("DB_PATH").filter(|p| !p.trim().is_empty()).ok_or_else(|| {
        Failure::invalid(
            "dashboard key: DB_PATH is not set; agent keys live in the dashboard's database \
             (an in-memory dashboard makes them in its UI or at POST /api/v1/keys)",
        )
    })?;
    let unlimited = crate::dashboard::store::Retention { max_age: None, max_rows: None };
    let db = db::Db::open(Some(std::path::Path::new(&path)), unlimited)
        .map_err(|e| Failure::failed(format!("dashboard key: {e}")))?;
    let now = i64::try_from(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos()),
    )
    .unwrap_or(i64::MAX);
    let failed = |e: db::Error| Failure::failed(format!("dashboard key: {e}"));
    match tool {
        KeyTool::Add(name) => {
            if !auth::valid_agent_name(name) {
                return Err(Failure::invalid(format!(
                    "dashboard key: bad name {name:?}: 1 to 64 of A-Z a-z 0-9 . _ -"
                )));
            }
            let random = crate::dashboard::random_bytes(32)
                .map_err(|e| Failure::failed(format!("dashboard key: no randomness: {e}")))?;
            let key = auth::agent_key(&random);
            db.add_key(name, &auth::key_hash(&key), now).map_err(failed)?;
            eprintln!("agent key for {name} (shown once; the dashboard keeps only its hash):");
            println!("{key}");
        }
        KeyTool::Revoke(name) => {
            if !db.revoke_key(name, now).map_err(failed)? {
                return Err(Failure::failed(format!("dashboard key: no active agent key named {name:?}")));
            }
            println!("revoked {name}");
        }
        KeyTool::List => {
            for k in db.keys().map_err(failed)? {
                let when = |n: i64| crate::time::format_rfc3339_nanos(i128::from(n));
                match k.revoked {
                    Some(r) => println!("{}\tcreated {}\trevoked {}", k.name, when(k.created), when(r)),
                    None => println!("{}\tcreated {}\tactive", k.name, when(k.created)),
                }
            }
        }
    }
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

/// The variables relay mode reads itself with other meanings
/// (`MAX_CONNECTIONS` per port) or values the filter does not know
/// (`FILTER_MODE=relay`); the rest of the filter's configuration (events,
/// `LOG_FILE`, the dashboard, syslog, `METRICS_ADDR`, `HEALTH_SOCKET`)
/// applies as in the other modes.
const RELAY_OWN: [&str; 5] =
    ["FILTER_MODE", "MAX_CONNECTIONS", "CONNECT_TIMEOUT", "IDLE_TIMEOUT", "HEADER_TIMEOUT"];

/// `egret relay` (or `run` in relay mode): the doors, the event pipeline
/// and `/health` + `/metrics`, until SIGTERM/SIGINT. No ruleset.
fn relay() -> Outcome {
    use nix::sys::signal::{SigSet, Signal};
    let rcfg = crate::relaymode::RelayConfig::from_env(&process_env)
        .map_err(|e| Failure::invalid(format!("relay: {e}")))?;
    let shared_env = |v: &str| if RELAY_OWN.contains(&v) { None } else { process_env(v) };
    let cfg = Config::from_env(&shared_env).map_err(|e| Failure::invalid(format!("relay: {e}")))?;
    for w in &cfg.warnings {
        log::warn!("{w}");
    }
    // A policy only when one is given: it widens what RELAY_CHECK lets
    // through.
    let given = ["POLICY_PATH", "ALLOWLIST_IPS", "ALLOWLIST_DOMAINS", "DENYLIST_IPS", "DENYLIST_DOMAINS"]
        .iter()
        .any(|v| process_env(v).is_some());
    let policy = if given { Some(load_policy(&cfg, None).map_err(Failure::invalid)?) } else { None };
    // Before any thread starts (threads copy the set): NET_BIND_SERVICE
    // for low ports at most, never NET_ADMIN.
    let mut ports: Vec<u16> = rcfg.relays.iter().map(|r| r.port).collect();
    ports.extend(cfg.metrics_addr.map(|a| a.port()));
    crate::caps::establish(&crate::caps::needed_for_relay(&ports, crate::caps::unprivileged_port_start()));
    let mut set = SigSet::empty();
    set.add(Signal::SIGTERM);
    set.add(Signal::SIGINT);
    set.thread_block().map_err(|e| Failure::failed(format!("relay: blocking signals: {e}")))?;
    if let Err(e) = crate::proxy::raise_nofile_limit() {
        log::warn!("cannot raise the open-file limit: {e}");
    }
    let (emitter, sink) =
        crate::events::spawn(&cfg, None).map_err(|e| Failure::failed(format!("relay: {e}")))?;
    let probe_cfg = rcfg.clone();
    let handle = crate::relaymode::start(rcfg.clone(), emitter.clone(), policy)
        .map_err(|e| Failure::failed(format!("relay: {e}")))?;
    let targets = handle.targets.clone();
    let probes: crate::metrics::Probes =
        std::sync::Arc::new(move || crate::relaymode::probe(&probe_cfg, &targets));
    let event_counts = std::sync::Arc::new(std::sync::Mutex::new(sink.counts()));
    let sources = crate::metrics::Sources {
        daemon: std::sync::Arc::default(),
        proxy: None,
        dns: None,
        events: event_counts.clone(),
        channel_dropped: emitter.drop_counter(),
        enforcement: None,
        listeners: std::sync::Arc::default(),
        relay: Some(handle.stats()),
        probes: Some(probes),
    };
    let metrics =
        crate::metrics::start(&cfg, sources, None).map_err(|e| Failure::failed(format!("relay: {e}")))?;
    let doors: Vec<String> = rcfg.relays.iter().map(ToString::to_string).collect();
    log::info!(
        "egret {} in relay mode: {}; no nftables rules (no NET_ADMIN needed){}{}",
        crate::VERSION,
        doors.join(", "),
        if rcfg.pre_resolve { "; targets resolved through NAMESERVERS" } else { "" },
        if rcfg.checks.any() { "; RELAY_CHECK on" } else { "" }
    );
    // The signal wait, with the event counters refreshed for /metrics.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            let _ = tx.send(set.wait());
        })
        .map_err(|e| Failure::failed(format!("relay: {e}")))?;
    let sig = loop {
        match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(s) => break s.map_or_else(|e| e.to_string(), |s| format!("{s:?}")),
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                *event_counts.lock().unwrap_or_else(|p| p.into_inner()) = sink.counts();
            }
            Err(_) => break "signal thread gone".into(),
        }
    };
    log::info!("{sig}: stopping the relay");
    metrics.stop();
    handle.stop(std::time::Instant::now() + crate::daemon::SHUTDOWN_GRACE);
    drop(emitter);
    let report = sink.shutdown(std::time::Instant::now() + crate::daemon::FLUSH_DEADLINE);
    log::info!("events flushed: {report:?}");
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
