//! argv → [`Command`]. Tiny and pure: no I/O beyond what it is given.

use std::fmt;
use std::path::PathBuf;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The filter daemon (the default).
    Run {
        print_rules: bool,
    },
    /// Relay mode (docker-whitelist's job): `egret relay`, or `run` with
    /// `FILTER_MODE=relay` / `TARGET` set.
    Relay,
    /// The dashboard server, or one of its tools.
    Dashboard(DashboardTool),
    /// A suggested policy from a decision log (`--from`), `--group`ing
    /// sibling names under a wildcard.
    Learn {
        from: PathBuf,
        group: bool,
    },
    /// Validate a policy and print the effective allowlist.
    Check {
        policy: Option<PathBuf>,
        /// `--explain NAME|IP`: how the policy decides that one.
        explain: Option<String>,
    },
    /// Install the fail-closed ruleset and exit (init containers).
    Init,
    /// Remove egret's nftables table.
    Cleanup,
    /// GET a /health URL; exit 0 when it answers 200.
    Health {
        url: Option<String>,
    },
    Version,
    /// Attack the live ruleset from inside the namespace; `technique` is
    /// the hidden form a self-test runs for each of its child processes.
    Selftest {
        technique: Option<TechniqueArgs>,
    },
    /// `--help` for the whole tool or one subcommand.
    Help(Option<&'static str>),
}

/// `egret dashboard [TOOL]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DashboardTool {
    /// Serve (no argument).
    Serve,
    /// `hash-password`: read a password on stdin, print its argon2 hash.
    HashPassword,
    /// `key ...`: agent keys in `DB_PATH`.
    Key(KeyTool),
}

/// `egret dashboard key ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyTool {
    /// `add NAME`: a new agent key, printed once.
    Add(String),
    /// `revoke NAME`.
    Revoke(String),
    /// `list`.
    List,
}

/// `egret selftest --technique NAME --privilege P --ports HTTP,HTTPS`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TechniqueArgs {
    pub name: String,
    pub privilege: String,
    pub http_port: u16,
    pub https_port: u16,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError(pub String);

impl fmt::Display for UsageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (see `egret --help`)", self.0)
    }
}

impl std::error::Error for UsageError {}

pub const USAGE: &str = "\
egret: egress allowlist filter for container pods

usage: egret [COMMAND] [OPTIONS]

commands:
  run        run the filter daemon (default)
  relay      relay fixed ports to a TARGET (docker-whitelist's job; also `run`
             with FILTER_MODE=relay or TARGET set)
  dashboard  run the dashboard server
  check      validate a policy and print the effective allowlist
  learn      suggest a policy from a decision log (audit mode's, LOG_FILE)
  init       install the fail-closed ruleset and exit (for init containers)
  cleanup    remove egret's nftables table
  health     ask the filter's /health (or a URL) and exit 0 if it answers 200
  selftest   attack the live ruleset from inside the pod; exit 1 on any bypass
  version    print the version

`egret COMMAND --help` describes one command. Configuration is read from the
environment; see README.md for every variable.
";

/// Help text per subcommand.
pub fn help(cmd: &str) -> &'static str {
    match cmd {
        "run" => "usage: egret run [--print-rules]\n\nRun the filter: install the nftables ruleset, serve the proxies (HTTPS mode)\nor the DNS server (DNS mode), log decisions. Configured by environment\n(POLICY_PATH, FILTER_MODE, ...).\n\n  --print-rules  print the ruleset as nft text and exit without applying it\n",
        "relay" => "usage: egret relay\n\nRelay ports of this container to a fixed TARGET, as docker-whitelist does:\nlisteners on all addresses (IPv4 and IPv6), no nftables rules, no NET_ADMIN.\nConfigured by environment (TARGET, PORT, MODE, MAX_CONNECTIONS, PRE_RESOLVE,\nNAMESERVERS, UDP_ANSWERS, VERBOSE, the HTTP/SMTP health checks, RELAYS,\nRELAY_CHECK). `egret run` does the same when FILTER_MODE=relay, or when TARGET\nor RELAYS is set and FILTER_MODE is not.\n",
        "dashboard" => "usage: egret dashboard [hash-password | key add NAME | key revoke NAME | key list]\n\nRun the dashboard: the log API, the live stream (SSE) and the web UI.\nConfigured by environment (PORT, API_KEY, DB_PATH, AUTH_MODE, ...).\n\n  hash-password    read a password on stdin, print an argon2 hash for DASHBOARD_USERS\n  key add NAME     make agent NAME a key (stored hashed in DB_PATH), print it once\n  key revoke NAME  revoke NAME's key (refused at once, also by a running dashboard)\n  key list         the agent keys: name, created, revoked\n",
        "check" => "usage: egret check [--policy PATH] [--explain NAME|IP]\n\nValidate the policy (the file at PATH, else POLICY_PATH, plus the\nALLOWLIST_IPS / ALLOWLIST_DOMAINS variables) and print the effective\nallowlist, then the SSRF guard in effect (GUARD_ADDRESSES) as a comment,\nwith a warning for each risky entry (a /8 or wider, '*', a wildcard over a\nshared hosting suffix). Exits 0 when valid, 2 listing every problem when not.\n\n--explain NAME|IP says which entry allows that name or address, or that\nnone does; it exits 0 when allowed, 1 when blocked.\n",
        "init" => "usage: egret init\n\nInstall the fail-closed ruleset and exit. Run it as an init container so the\nrules are in place before any workload starts.\n",
        "cleanup" => "usage: egret cleanup\n\nRemove egret's nftables table (table inet egret). Egress is then unfiltered.\n",
        "health" => "usage: egret health [URL]\n\nWithout URL: GET /health of the filter (`egret run`) over its unix socket\n(HEALTH_SOCKET, else /run/egret/egret.sock, $XDG_RUNTIME_DIR/egret/egret.sock,\n/tmp/egret-UID/egret.sock). With URL (http://host:port/path, e.g. the\ndashboard's http://127.0.0.1:8081/health): a plain HTTP GET. Exit 0 if it\nanswers 200, 1 otherwise. For HEALTHCHECK in images without curl.\n",
        "version" => "usage: egret version\n\nPrint the version.\n",
        "learn" => "usage: egret learn --from LOG_FILE [--group]\n\nRead a decision log (LOG_FILE / DECISION_LOG_FILE, one JSON event per line,\nfrom a run in audit mode: ENFORCE=audit) and print a policy.yaml that allows\nwhat the workloads did: every name they reached or asked for, and every\naddress outside a name with its protocol and port. Blocked decisions teach\nnothing. --group writes two or more names under one parent as *.parent.\n",
        "selftest" => "usage: egret selftest\n\nAttack the installed ruleset from inside the namespace the way a workload\nwould (forged reply flows, guessed marks, ICMPv6 covert channels, raw frames,\nforeign resolvers, egret's own listeners), each from a child process with a\nworkload's privilege, against a canary address in documentation space that a\ntemporary egress rule counts and drops: nothing leaves the pod. One line per\ntechnique, held or BYPASS. Needs CAP_NET_ADMIN and a default route. Exits 0\nwhen everything held, 1 on any bypass, 2 when it cannot judge.\n",
        _ => USAGE,
    }
}

const COMMANDS: [&str; 10] =
    ["run", "relay", "dashboard", "check", "learn", "init", "cleanup", "health", "version", "selftest"];

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command, UsageError> {
    let mut args = args.into_iter().peekable();
    let cmd = match args.peek().map(String::as_str) {
        None => "run".to_owned(),
        Some("-h" | "--help" | "help") => return Ok(Command::Help(None)),
        // g0efilter's binaries take -v as well.
        Some("-V" | "-v" | "--version") => return Ok(Command::Version),
        Some(s) if s.starts_with('-') => "run".to_owned(),
        Some(_) => args.next().unwrap_or_default(),
    };
    let Some(name) = COMMANDS.iter().copied().find(|c| *c == cmd) else {
        return Err(UsageError(format!("unknown command {cmd:?}")));
    };
    let rest: Vec<String> = args.collect();
    if rest.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help(Some(name)));
    }
    let mut it = rest.into_iter();
    let unexpected = |a: String| Err(UsageError(format!("unexpected argument {a:?} for `egret {name}`")));
    match name {
        "run" => {
            let mut print_rules = false;
            for a in it {
                match a.as_str() {
                    "--print-rules" => print_rules = true,
                    _ => return unexpected(a),
                }
            }
            Ok(Command::Run { print_rules })
        }
        "check" => {
            let (mut policy, mut explain) = (None, None);
            while let Some(a) = it.next() {
                if a == "--policy" || a == "-p" {
                    let p = it.next().ok_or_else(|| UsageError("--policy needs a PATH".into()))?;
                    policy = Some(PathBuf::from(p));
                } else if let Some(p) = a.strip_prefix("--policy=") {
                    policy = Some(PathBuf::from(p));
                } else if a == "--explain" {
                    let w = it.next().ok_or_else(|| UsageError("--explain needs a NAME or IP".into()))?;
                    explain = Some(w.clone());
                } else if let Some(w) = a.strip_prefix("--explain=") {
                    explain = Some(w.to_owned());
                } else {
                    return unexpected(a);
                }
            }
            Ok(Command::Check { policy, explain })
        }
        "learn" => {
            let (mut from, mut group) = (None, false);
            while let Some(a) = it.next() {
                if a == "--from" {
                    from = Some(PathBuf::from(
                        it.next().ok_or_else(|| UsageError("--from needs a LOG_FILE".into()))?,
                    ));
                } else if let Some(f) = a.strip_prefix("--from=") {
                    from = Some(PathBuf::from(f));
                } else if a == "--group" {
                    group = true;
                } else {
                    return unexpected(a);
                }
            }
            let from = from.ok_or_else(|| UsageError("`egret learn` needs --from LOG_FILE".into()))?;
            Ok(Command::Learn { from, group })
        }
        "selftest" => {
            let (mut name, mut privilege, mut ports) = (None, None, None);
            while let Some(a) = it.next() {
                let mut value =
                    |what: &str| it.next().ok_or_else(|| UsageError(format!("{what} needs a value")));
                match a.as_str() {
                    "--technique" => name = Some(value("--technique")?),
                    "--privilege" => privilege = Some(value("--privilege")?),
                    "--ports" => ports = Some(value("--ports")?),
                    _ => return unexpected(a),
                }
            }
            let technique = match (name, privilege, ports) {
                (None, None, None) => None,
                (Some(name), Some(privilege), Some(ports)) => {
                    let bad = || UsageError(format!("--ports wants HTTP,HTTPS port numbers, not {ports:?}"));
                    let (h, s) = ports.split_once(',').ok_or_else(bad)?;
                    let http_port = h.parse().map_err(|_| bad())?;
                    let https_port = s.parse().map_err(|_| bad())?;
                    Some(TechniqueArgs { name, privilege, http_port, https_port })
                }
                _ => return Err(UsageError("--technique, --privilege and --ports go together".into())),
            };
            Ok(Command::Selftest { technique })
        }
        "dashboard" => {
            let args: Vec<String> = it.collect();
            let a: Vec<&str> = args.iter().map(String::as_str).collect();
            let tool = match a.as_slice() {
                [] => DashboardTool::Serve,
                ["hash-password"] => DashboardTool::HashPassword,
                ["key", "add", name] => DashboardTool::Key(KeyTool::Add((*name).to_owned())),
                ["key", "revoke", name] => DashboardTool::Key(KeyTool::Revoke((*name).to_owned())),
                ["key", "list"] => DashboardTool::Key(KeyTool::List),
                _ => {
                    return Err(UsageError(format!(
                        "unexpected arguments {a:?} for `egret dashboard` (hash-password, key add NAME, \
                         key revoke NAME, key list)"
                    )))
                }
            };
            Ok(Command::Dashboard(tool))
        }
        "health" => {
            let url = it.next();
            if let Some(a) = it.next() {
                return unexpected(a);
            }
            Ok(Command::Health { url })
        }
        other => {
            if let Some(a) = it.next() {
                return unexpected(a);
            }
            Ok(match other {
                "relay" => Command::Relay,
                "init" => Command::Init,
                "cleanup" => Command::Cleanup,
                _ => Command::Version,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, UsageError> {
        parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn table() {
        assert_eq!(p(&[]), Ok(Command::Run { print_rules: false }));
        assert_eq!(p(&["--print-rules"]), Ok(Command::Run { print_rules: true }));
        assert_eq!(p(&["run", "--print-rules"]), Ok(Command::Run { print_rules: true }));
        assert_eq!(p(&["check"]), Ok(Command::Check { policy: None, explain: None }));
        assert_eq!(
            p(&["check", "--policy", "x.yaml"]),
            Ok(Command::Check { policy: Some("x.yaml".into()), explain: None })
        );
        assert_eq!(
            p(&["check", "--policy=y.yaml"]),
            Ok(Command::Check { policy: Some("y.yaml".into()), explain: None })
        );
        assert_eq!(
            p(&["health", "http://h/health"]),
            Ok(Command::Health { url: Some("http://h/health".into()) })
        );
        assert_eq!(p(&["--help"]), Ok(Command::Help(None)));
        assert_eq!(p(&["check", "--help"]), Ok(Command::Help(Some("check"))));
        assert_eq!(
            p(&["check", "--explain", "a.example.com"]),
            Ok(Command::Check { policy: None, explain: Some("a.example.com".into()) })
        );
        assert_eq!(
            p(&["check", "--explain=10.0.0.1", "-p", "x.yaml"]),
            Ok(Command::Check { policy: Some("x.yaml".into()), explain: Some("10.0.0.1".into()) })
        );
        assert!(p(&["check", "--explain"]).is_err());
        assert_eq!(p(&["version"]), Ok(Command::Version));
        assert_eq!(
            p(&["learn", "--from", "d.log"]),
            Ok(Command::Learn { from: "d.log".into(), group: false })
        );
        assert_eq!(
            p(&["learn", "--group", "--from=d.log"]),
            Ok(Command::Learn { from: "d.log".into(), group: true })
        );
        assert!(p(&["learn"]).is_err(), "--from is required");
        for v in ["-v", "-V", "--version"] {
            assert_eq!(p(&[v]), Ok(Command::Version), "{v}");
        }
        assert_eq!(p(&["init"]), Ok(Command::Init));
        assert_eq!(p(&["relay"]), Ok(Command::Relay));
        assert_eq!(p(&["relay", "--help"]), Ok(Command::Help(Some("relay"))));
        assert_eq!(p(&["dashboard"]), Ok(Command::Dashboard(DashboardTool::Serve)));
        assert_eq!(p(&["dashboard", "hash-password"]), Ok(Command::Dashboard(DashboardTool::HashPassword)));
        assert!(p(&["dashboard", "frobnicate"]).is_err());
        let key = |t| Ok(Command::Dashboard(DashboardTool::Key(t)));
        assert_eq!(p(&["dashboard", "key", "add", "edge-1"]), key(KeyTool::Add("edge-1".into())));
        assert_eq!(p(&["dashboard", "key", "revoke", "e"]), key(KeyTool::Revoke("e".into())));
        assert_eq!(p(&["dashboard", "key", "list"]), key(KeyTool::List));
        assert!(p(&["dashboard", "key", "add"]).is_err());
        assert!(p(&["dashboard", "key", "add", "a", "b"]).is_err());
        assert!(p(&["frobnicate"]).unwrap_err().0.contains("unknown command"));
        assert!(p(&["check", "--policy"]).is_err());
        assert!(p(&["cleanup", "now"]).unwrap_err().0.contains("unexpected argument"));
        // The retired hidden `egret proxy` is an unknown command now.
        assert!(!USAGE.contains("proxy "));
        assert!(p(&["proxy"]).unwrap_err().0.contains("unknown command"));
        assert_eq!(p(&["selftest"]), Ok(Command::Selftest { technique: None }));
        let t = p(&["selftest", "--technique", "direct", "--privilege", "nobody", "--ports", "8080,8443"]);
        assert_eq!(
            t,
            Ok(Command::Selftest {
                technique: Some(TechniqueArgs {
                    name: "direct".into(),
                    privilege: "nobody".into(),
                    http_port: 8080,
                    https_port: 8443
                })
            })
        );
        assert!(p(&["selftest", "--technique", "direct"]).is_err());
        assert!(p(&["selftest", "--technique", "x", "--privilege", "y", "--ports", "80"]).is_err());
    }
}
