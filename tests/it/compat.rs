//! Drop-in for g0efilter (issue 16): the configurations g0efilter runs,
//! run by egret in real network namespaces, each with the outcome written
//! beside it; the wire shapes compared field by field with g0efilter's
//! (fixtures in `tests/data/g0efilter/`, written from its documented
//! formats); `ws://` through the HTTP proxy; the resolver in effect when
//! `DNS_UPSTREAMS` is unset.
//!
//! Each table runs its cases one after another in one namespace pair
//! (egret replaces its own table at each start) and reports every case
//! that did not come out as written, not just the first. Needs root.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::netns::{wait_for, Pair};
use crate::run::{curl, world, Daemon, World};
use crate::util;

/// How a start came out.
#[derive(Debug)]
enum Outcome {
    /// Serving: the health socket (filter) or `/health` (dashboard) answered.
    Started,
    /// Exited with this code before being ready.
    Exited(Option<i32>),
    /// Neither within the bound.
    Hung,
}

/// What a case must come to.
#[derive(Debug, Clone, Copy)]
enum Want {
    /// Starts; the log contains every needle.
    Starts(&'static [&'static str]),
    /// Starts, and no knob fell back to a default (no warning).
    StartsClean(&'static [&'static str]),
    /// Exits 2; the log contains every needle.
    Refused(&'static [&'static str]),
}

/// A check made while a started egret runs.
#[derive(Debug, Clone, Copy)]
enum Probe {
    None,
    /// `http://<.3>/` answers 200 (the address is allowed directly).
    Reaches3,
    /// `http://<.3>/` does not reach the upstream (403 from egret).
    Blocked3,
    /// `http://<.3>/` is refused by the kernel (no answer at all).
    Refused3,
    /// A request to a name outside the policy: its event carries this
    /// hostname.
    EventHostname(&'static str),
    /// The file at this case's LOG_FILE exists.
    LogFileExists,
    /// `nft list tables` shows none of g0efilter's, and `ip keepme`.
    NoG0efilterTables,
    /// The dashboard's `/health` has g0efilter-dashboard's keys and it
    /// listens on every address (dual-stack `[::]`).
    DashboardHealthDualStack(u16),
}

/// What to do before starting.
#[derive(Debug, Clone, Copy)]
enum Setup {
    None,
    /// Create g0efilter's tables (and one that is not g0efilter's).
    G0efilterTables,
}

/// The policy file of a case.
#[derive(Debug, Clone, Copy)]
enum Pol {
    /// g0efilter's example policy.
    Example,
    /// This YAML (`{up3}` is the upstream's .3 address).
    Yaml(&'static str),
}

struct Case {
    what: &'static str,
    env: &'static [(&'static str, &'static str)],
    policy: Pol,
    setup: Setup,
    want: Want,
    probe: Probe,
}

const fn case(what: &'static str, env: &'static [(&'static str, &'static str)], want: Want) -> Case {
    Case { what, env, policy: Pol::Example, setup: Setup::None, want, probe: Probe::None }
}

/// Written into a case's env to remove a variable the runner sets.
const UNSET: &str = "\u{0}unset";
/// Replaced by the upstream's .2 address (its DNS server and HTTP).
const UP2: &str = "{up2}";
/// Replaced by a fresh path in the case's scratch directory.
const SCRATCH_LOG: &str = "{scratch}/new/dir/egret.log";

/// A `KEY=VALUE` file (comments and blank lines skipped).
fn env_file(name: &str) -> Vec<(String, String)> {
    let text = std::fs::read_to_string(util::data(&format!("g0efilter/{name}"))).expect("fixture");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// `egret SUB` in `ns`, with its stderr (and stdout lines) collected.
struct Run {
    child: Child,
    log: mpsc::Receiver<String>,
    events: mpsc::Receiver<Value>,
    seen: Vec<String>,
}

impl Run {
    fn start(ns: &str, sub: &str, env: &[(String, String)]) -> Run {
        let mut c = Pair::exec(ns, env!("CARGO_BIN_EXE_egret"));
        c.arg(sub).env_clear().env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
        for (k, v) in env {
            c.env(k, v);
        }
        c.stdout(Stdio::piped()).stderr(Stdio::piped()).stdin(Stdio::null());
        let mut child = c.spawn().expect("spawn egret");
        let (ltx, log) = mpsc::channel();
        let err = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if ltx.send(line).is_err() {
                    return;
                }
            }
        });
        let (etx, events) = mpsc::channel();
        let out = child.stdout.take().expect("stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str(&line) {
                    if etx.send(v).is_err() {
                        return;
                    }
                }
            }
        });
        Run { child, log, events, seen: Vec::new() }
    }

    /// Waits (bounded) until `ready()` holds or the process exits.
    fn settle(&mut self, ready: &dyn Fn() -> bool) -> Outcome {
        let end = Instant::now() + Duration::from_secs(15);
        while Instant::now() < end {
            if let Ok(Some(st)) = self.child.try_wait() {
                std::thread::sleep(Duration::from_millis(100));
                self.drain();
                return Outcome::Exited(st.code());
            }
            if ready() {
                // Lines logged right after readiness belong to the start.
                std::thread::sleep(Duration::from_millis(300));
                self.drain();
                return Outcome::Started;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        self.drain();
        Outcome::Hung
    }

    fn drain(&mut self) {
        self.seen.extend(self.log.try_iter());
    }

    fn text(&mut self) -> String {
        self.drain();
        self.seen.join("\n")
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Files `ip netns exec` puts over /etc for `ns`: /etc/netns/NS/*.
pub(crate) struct NetnsEtc(PathBuf);

impl NetnsEtc {
    pub(crate) fn new(ns: &str) -> NetnsEtc {
        let d = Path::new("/etc/netns").join(ns);
        std::fs::create_dir_all(&d).expect("create /etc/netns/NS (needs root)");
        NetnsEtc(d)
    }

    /// Rewrites the file in place (the bind mount pins the inode).
    pub(crate) fn write(&self, name: &str, text: &str) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .write(true)
            .truncate(true)
            .open(self.0.join(name))
            .expect("write /etc/netns file");
        f.write_all(text.as_bytes()).expect("write");
    }
}

impl Drop for NetnsEtc {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn nft(ns: &str, args: &[&str]) -> String {
    let mut c = Pair::exec(ns, "nft");
    c.args(args);
    let (code, out, err) = util::run(c);
    assert_eq!(code, 0, "nft {args:?}: {err}");
    out
}

/// Checks one outcome against the case; `Err` says what differs.
fn judge(c: &Case, got: &Outcome, log: &str) -> Result<(), String> {
    let needles = |n: &[&str]| -> Result<(), String> {
        match n.iter().find(|x| !log.contains(*x)) {
            None => Ok(()),
            Some(x) => Err(format!("log lacks {x:?}")),
        }
    };
    match (c.want, got) {
        (Want::Starts(n), Outcome::Started) => needles(n),
        (Want::StartsClean(n), Outcome::Started) => {
            needles(n)?;
            // Configuration and policy warnings are logged by egret::cmd.
            match log.lines().find(|l| l.contains("WARN") && l.contains("egret::cmd]")) {
                Some(l) => Err(format!("a configuration warning: {l}")),
                None => Ok(()),
            }
        }
        (Want::Refused(n), Outcome::Exited(Some(2))) => needles(n),
        (w, g) => Err(format!("wanted {w:?}, got {g:?}")),
    }
}

/// The filter's configurations. Every variable of the contract's table
/// with g0efilter's default, g0efilter's own example, and the odd values
/// g0efilter accepts; what egret refuses is what would weaken enforcement
/// or has no meaning.
fn filter_cases() -> Vec<Case> {
    use Want::*;
    let mut v: Vec<Case> = vec![
        Case {
            probe: Probe::EventHostname("host01"),
            ..case(
                "g0efilter's example .env (FILTER_MODE=sni)",
                &[],
                Starts(&["in Https mode", "stricter than g0efilter on purpose"]),
            )
        },
        case(
            "every variable at g0efilter's default",
            &[
                ("LOG_LEVEL", "INFO"),
                ("HTTP_PORT", "8080"),
                ("HTTPS_PORT", "8443"),
                ("DNS_PORT", "53"),
                ("FILTER_MODE", "https"),
                ("DASHBOARD_HOST", "http://127.0.0.1:1"),
                ("DASHBOARD_API_KEY", "k"),
                ("DASHBOARD_QUEUE_SIZE", "1024"),
                ("DASHBOARD_START_DELAY", "5s"),
                ("NFLOG_BUFSIZE", "96"),
                ("NFLOG_QTHRESH", "50"),
                ("NOTIFICATION_BACKOFF_SECONDS", "60"),
            ],
            StartsClean(&[
                "in Https mode",
                "queue 1024, start delay 5s",
                "copy range 96 bytes, queue threshold 50",
            ]),
        ),
        // LOG_LEVEL: g0efilter's names; an unknown one is INFO.
        case("LOG_LEVEL=TRACE", &[("LOG_LEVEL", "TRACE")], StartsClean(&[])),
        case("LOG_LEVEL=debug", &[("LOG_LEVEL", "debug")], StartsClean(&[])),
        case("LOG_LEVEL=WARNING", &[("LOG_LEVEL", "WARNING")], StartsClean(&[])),
        case("LOG_LEVEL=ERROR", &[("LOG_LEVEL", "ERROR")], StartsClean(&[])),
        case(
            "LOG_LEVEL=verbose (unknown)",
            &[("LOG_LEVEL", "verbose")],
            Starts(&["LOG_LEVEL=\"verbose\" is not", "using the default INFO"]),
        ),
        // Ports.
        case("HTTP_PORT=0", &[("HTTP_PORT", "0")], Refused(&["HTTP_PORT=\"0\": expected a port number"])),
        case(
            "HTTP_PORT equal to HTTPS_PORT",
            &[("HTTP_PORT", "8443")],
            Refused(&["a port different from HTTP_PORT"]),
        ),
        case(
            "HTTP_PORT=9080, HTTPS_PORT=9443",
            &[("HTTP_PORT", "9080"), ("HTTPS_PORT", "9443")],
            StartsClean(&[
                "http proxy listening on 127.0.0.1:9080",
                "https proxy listening on 127.0.0.1:9443",
            ]),
        ),
        // The policy and the lists.
        case(
            "POLICY_PATH missing, no lists",
            &[("POLICY_PATH", "/nonexistent/egret/policy.yaml")],
            Refused(&[
                "/nonexistent/egret/policy.yaml: no such file",
                "POLICY_PATH",
                "ALLOWLIST_IPS",
                "ALLOWLIST_DOMAINS",
            ]),
        ),
        Case {
            policy: Pol::Yaml("allowlist:\n  ips: [\"{up3}\"]\n"),
            probe: Probe::Reaches3,
            ..case("control: the file allows .3", &[], StartsClean(&[]))
        },
        Case {
            policy: Pol::Yaml("allowlist:\n  ips: [\"{up3}\"]\n"),
            probe: Probe::Blocked3,
            ..case(
                "ALLOWLIST_DOMAINS only: the file is not read (its IPs do not sneak in)",
                &[("ALLOWLIST_DOMAINS", "allowed.test")],
                Starts(&["ALLOWLIST_DOMAINS set: the policy file", "is not read"]),
            )
        },
        Case {
            probe: Probe::Reaches3,
            ..case(
                "ALLOWLIST_IPS only, no file",
                &[("POLICY_PATH", "/nonexistent/egret/policy.yaml"), ("ALLOWLIST_IPS", "{up3}")],
                StartsClean(&[]),
            )
        },
        Case {
            policy: Pol::Yaml("allowlist:\n  ips: [\"{up3}\"]\n"),
            probe: Probe::Reaches3,
            ..case("ALLOWLIST_IPS empty: unset, the file is read", &[("ALLOWLIST_IPS", "")], StartsClean(&[]))
        },
        Case {
            policy: Pol::Yaml("allowlist:\n  ips: [\"\", \"{up3}\"]\n  domains: [\"\"]\n"),
            probe: Probe::Reaches3,
            ..case(
                "empty policy entries",
                &[],
                Starts(&[
                    "allowlist.ips[0] \"\": empty entry skipped",
                    "allowlist.domains[0] \"\": empty entry skipped",
                ]),
            )
        },
        Case {
            policy: Pol::Yaml("allowlist:\n  domains: [a.test]\ndenylist:\n  domains: [b.test]\n"),
            ..case(
                "an allowlist and a denylist without default_action (refused: which wins?)",
                &[],
                Refused(&[
                    "need default_action (DEFAULT_ACTION) to say which wins",
                    "(deny wins)",
                    "(allow wins)",
                ]),
            )
        },
        Case {
            policy: Pol::Yaml("default_action: allow\ndenylist:\n  domains: [b.test]\n"),
            probe: Probe::Reaches3,
            ..case("default_action allow with a denylist: the rest passes", &[], StartsClean(&[]))
        },
        Case {
            policy: Pol::Yaml("allowlist: {}\n"),
            probe: Probe::Refused3,
            ..case(
                "DEFAULT_ACTION=allow and DENYLIST_IPS replace the file, the listed address refused",
                &[("DEFAULT_ACTION", "allow"), ("DENYLIST_IPS", "{up3}")],
                Starts(&["DENYLIST_IPS set: the policy file"]),
            )
        },
        Case {
            policy: Pol::Yaml("allowlist:\n  ips: [\"10.0.0.300\"]\n  domains: [\"exa mple.com\"]\n"),
            ..case(
                "an invalid CIDR and name (both listed)",
                &[],
                Refused(&[
                    "\"10.0.0.300\": not an IPv4 or IPv6 address",
                    "\"exa mple.com\": invalid character",
                ]),
            )
        },
        // FILTER_MODE: g0efilter's names.
        case("FILTER_MODE=https", &[("FILTER_MODE", "https")], StartsClean(&["in Https mode"])),
        case("FILTER_MODE=HTTPS", &[("FILTER_MODE", "HTTPS")], StartsClean(&["in Https mode"])),
        case(
            "FILTER_MODE=dns",
            &[("FILTER_MODE", "dns")],
            StartsClean(&["in Dns mode", "allowed DNS queries are forwarded to"]),
        ),
        case(
            "FILTER_MODE=dns-strict",
            &[("FILTER_MODE", "dns-strict")],
            StartsClean(&["in Dns mode", "learned4"]),
        ),
        case(
            "FILTER_MODE=tcp",
            &[("FILTER_MODE", "tcp")],
            Refused(&["FILTER_MODE=\"tcp\": expected https (or sni), dns or dns-strict"]),
        ),
        // DNS_UPSTREAMS: the runner sets the test network's resolver.
        case("DNS_UPSTREAMS=IP:port", &[], StartsClean(&["resolves names through {up2}:53: DNS_UPSTREAMS"])),
        case(
            "DNS_UPSTREAMS=bare IP",
            &[("DNS_UPSTREAMS", UP2)],
            StartsClean(&["resolves names through {up2}:53: DNS_UPSTREAMS"]),
        ),
        case(
            "DNS_UPSTREAMS=host name (resolved at start)",
            &[("DNS_UPSTREAMS", "resolver.test:53")],
            StartsClean(&["resolves names through {up2}:53: DNS_UPSTREAMS"]),
        ),
        case(
            "DNS_UPSTREAMS=name that does not resolve",
            &[("DNS_UPSTREAMS", "nx.invalid")],
            Refused(&["DNS_UPSTREAMS entry nx.invalid:53 does not resolve"]),
        ),
        case(
            "DNS_UPSTREAMS unset: /etc/resolv.conf",
            &[("DNS_UPSTREAMS", UNSET)],
            StartsClean(&["resolves names through {up2}:53: the nameservers of /etc/resolv.conf"]),
        ),
        // The dashboard shipper.
        case(
            "DASHBOARD_HOST without a scheme",
            &[("DASHBOARD_HOST", "dash:8081"), ("DASHBOARD_API_KEY", "k")],
            StartsClean(&["shipping to http://dash:8081/api/v1/logs"]),
        ),
        case(
            "DASHBOARD_QUEUE_SIZE=0",
            &[("DASHBOARD_HOST", "http://127.0.0.1:1"), ("DASHBOARD_QUEUE_SIZE", "0")],
            Starts(&["DASHBOARD_QUEUE_SIZE=\"0\" is not", "queue 1024"]),
        ),
        case(
            "DASHBOARD_QUEUE_SIZE=-5",
            &[("DASHBOARD_HOST", "http://127.0.0.1:1"), ("DASHBOARD_QUEUE_SIZE", "-5")],
            Starts(&["using the default 1024"]),
        ),
        case(
            "DASHBOARD_START_DELAY=1m30s (Go)",
            &[("DASHBOARD_HOST", "http://127.0.0.1:1"), ("DASHBOARD_START_DELAY", "1m30s")],
            StartsClean(&["start delay 90s"]),
        ),
        case(
            "DASHBOARD_START_DELAY=1.5s (Go)",
            &[("DASHBOARD_HOST", "http://127.0.0.1:1"), ("DASHBOARD_START_DELAY", "1.5s")],
            StartsClean(&["start delay 1.5s"]),
        ),
        case(
            "DASHBOARD_START_DELAY=-1s",
            &[("DASHBOARD_HOST", "http://127.0.0.1:1"), ("DASHBOARD_START_DELAY", "-1s")],
            Starts(&["DASHBOARD_START_DELAY=\"-1s\" is not", "start delay 5s"]),
        ),
        // LOG_FILE: its directory is made; a failure is a warning.
        Case {
            probe: Probe::LogFileExists,
            ..case(
                "LOG_FILE in a directory that does not exist",
                &[("LOG_FILE", SCRATCH_LOG)],
                StartsClean(&[]),
            )
        },
        case(
            "LOG_FILE that cannot be opened",
            &[("LOG_FILE", "/proc/egret-nope/egret.log")],
            Starts(&["LOG_FILE /proc/egret-nope/egret.log: cannot open", "egret runs on"]),
        ),
        // NFLOG.
        case("NFLOG_BUFSIZE=128", &[("NFLOG_BUFSIZE", "128")], StartsClean(&["copy range 128 bytes"])),
        case(
            "NFLOG_BUFSIZE=0",
            &[("NFLOG_BUFSIZE", "0")],
            Starts(&["NFLOG_BUFSIZE=\"0\" is not", "copy range 96 bytes"]),
        ),
        case(
            "NFLOG_QTHRESH=-1",
            &[("NFLOG_QTHRESH", "-1")],
            Starts(&["NFLOG_QTHRESH=\"-1\" is not", "queue threshold 50"]),
        ),
        // Gotify.
        case(
            "NOTIFICATION_HOST without a key",
            &[("NOTIFICATION_HOST", "http://127.0.0.1:1")],
            Starts(&["NOTIFICATION_KEY is not: Gotify alerts are off"]),
        ),
        case(
            "NOTIFICATION_HOST and KEY",
            &[("NOTIFICATION_HOST", "http://127.0.0.1:1"), ("NOTIFICATION_KEY", "k")],
            StartsClean(&["Gotify alerts for blocked connections to http://127.0.0.1:1"]),
        ),
        case(
            "NOTIFICATION_URLS (g0efilter's later variable)",
            &[(
                "NOTIFICATION_URLS",
                "ntfy://:tk@127.0.0.1:1/alerts?scheme=http,generic+http://127.0.0.1:1/hook",
            )],
            StartsClean(&["alerts for blocked connections to ntfy http://***@127.0.0.1:1/***"]),
        ),
        case(
            "NOTIFICATION_URLS with a service egret does not send to",
            &[("NOTIFICATION_URLS", "ntfy://127.0.0.1:1/a,telegram://tok@telegram?chats=1")],
            Refused(&["NOTIFICATION_URLS: entry 2 (telegram://): expected one of gotify://"]),
        ),
        case(
            "NOTIFICATION_BACKOFF_SECONDS=0",
            &[("NOTIFICATION_BACKOFF_SECONDS", "0")],
            Starts(&["NOTIFICATION_BACKOFF_SECONDS=\"0\" is not", "using the default 60s"]),
        ),
        case(
            "NOTIFICATION_BACKOFF_SECONDS=-1",
            &[("NOTIFICATION_BACKOFF_SECONDS", "-1")],
            Starts(&["using the default 60s"]),
        ),
        case(
            "NOTIFICATION_IGNORE_DOMAINS",
            &[("NOTIFICATION_IGNORE_DOMAINS", "*.example.com,quiet.org")],
            StartsClean(&[]),
        ),
        case(
            "NOTIFICATION_IGNORE_DOMAINS with a pattern that cannot match",
            &[("NOTIFICATION_IGNORE_DOMAINS", "a..b,quiet.org")],
            Starts(&["NOTIFICATION_IGNORE_DOMAINS: not a domain pattern, ignored: \"a..b\""]),
        ),
        Case {
            setup: Setup::G0efilterTables,
            probe: Probe::NoG0efilterTables,
            ..case(
                "g0efilter's tables left in the namespace",
                &[],
                Starts(&[
                    "removed g0efilter's nftables tables:",
                    "ip filter_v4",
                    "ip nat_v4",
                    "ip g0efilter_v4",
                    "ip g0efilter_nat_v4",
                ]),
            )
        },
    ];
    v.shrink_to_fit();
    v
}

/// The dashboard's configurations.
fn dashboard_cases() -> Vec<Case> {
    use Want::*;
    vec![
        Case {
            probe: Probe::DashboardHealthDualStack(8081),
            ..case(
                "g0efilter-dashboard's example env (PORT=:8081)",
                &[],
                StartsClean(&["stricter than g0efilter on purpose", "DELETE /api/v1/logs needs the API key"]),
            )
        },
        Case {
            probe: Probe::DashboardHealthDualStack(9081),
            ..case("PORT as a bare number", &[("PORT", "9081")], StartsClean(&[]))
        },
        case(
            "PORT=127.0.0.1:9082",
            &[("PORT", "127.0.0.1:9082")],
            StartsClean(&["listening on http://127.0.0.1:9082"]),
        ),
        case(
            "every variable at g0efilter's default",
            &[
                ("BUFFER_SIZE", "5000"),
                ("READ_LIMIT", "500"),
                ("SSE_RETRY_MS", "2000"),
                ("WRITE_TIMEOUT", "0"),
                ("RATE_RPS", "50"),
                ("RATE_BURST", "100"),
                ("LOG_LEVEL", "INFO"),
            ],
            StartsClean(&["retention 5000 entries", "read limit 500, rate 50/s burst 100"]),
        ),
        case("API_KEY missing", &[("API_KEY", UNSET)], Refused(&["API_KEY: is required"])),
        case(
            "BUFFER_SIZE=0",
            &[("BUFFER_SIZE", "0")],
            Starts(&["BUFFER_SIZE=\"0\" is not", "retention 5000 entries"]),
        ),
        case("READ_LIMIT=-1", &[("READ_LIMIT", "-1")], Starts(&["read limit 500"])),
        case("SSE_RETRY_MS=soon", &[("SSE_RETRY_MS", "soon")], Starts(&["SSE_RETRY_MS=\"soon\" is not"])),
        case("WRITE_TIMEOUT=10 (g0efilter's seconds)", &[("WRITE_TIMEOUT", "10")], StartsClean(&[])),
        case("WRITE_TIMEOUT=1m30s", &[("WRITE_TIMEOUT", "1m30s")], StartsClean(&[])),
        case("RATE_RPS=0", &[("RATE_RPS", "0")], Starts(&["RATE_RPS=\"0\" is not", "rate 50/s"])),
        case(
            "RATE_BURST=100.0 (a float, as g0efilter reads it)",
            &[("RATE_BURST", "100.0")],
            StartsClean(&["burst 100"]),
        ),
        case("LOG_LEVEL=verbose", &[("LOG_LEVEL", "verbose")], Starts(&["LOG_LEVEL=\"verbose\" is not"])),
        case(
            "TRUSTED_PROXIES=nope (trust must be exact)",
            &[("TRUSTED_PROXIES", "nope")],
            Refused(&["TRUSTED_PROXIES=\"nope\""]),
        ),
    ]
}

/// Replaces the placeholders of a value.
fn fill(v: &str, p: &Pair, scratch: &Path) -> String {
    v.replace(UP2, &p.v4(2)).replace("{up3}", &p.v4(3)).replace("{scratch}", scratch.to_str().expect("utf-8"))
}

/// One case's environment: the base, then the case's own (UNSET removes).
fn case_env(base: &[(String, String)], c: &Case, p: &Pair, scratch: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = base.to_vec();
    for (k, v) in c.env {
        env.retain(|(ek, _)| ek != k);
        if *v != UNSET {
            env.push(((*k).to_owned(), fill(v, p, scratch)));
        }
    }
    env
}

fn run_probe(c: &Case, r: &mut Run, p: &Pair, env: &[(String, String)]) -> Result<(), String> {
    let three = format!("http://{}/", p.v4(3));
    match c.probe {
        Probe::None => Ok(()),
        Probe::Reaches3 => match curl(&p.work, &[&three]) {
            (code, body) if code == "200" && body.contains("hello from") => Ok(()),
            other => Err(format!("{three} should be reachable: {other:?}")),
        },
        Probe::Refused3 => match curl(&p.work, &[&three]) {
            (code, body) if code == "000" && !body.contains("hello from") => Ok(()),
            other => Err(format!("{three} should be refused by the rules: {other:?}")),
        },
        Probe::Blocked3 => match curl(&p.work, &[&three]) {
            (code, body) if code == "403" && !body.contains("hello from") => Ok(()),
            other => Err(format!("{three} should be blocked: {other:?}")),
        },
        Probe::EventHostname(h) => {
            let url = format!("http://{}/", p.v4(2));
            let _ = curl(&p.work, &["-H", "Host: outside.test", &url]);
            let ev =
                wait_for(Duration::from_secs(5), || r.events.try_iter().find(|e| e["msg"] == "http.blocked"));
            match ev {
                Some(e) if e["hostname"] == h && e["reason"] == "not-allowlisted" => Ok(()),
                other => Err(format!("blocked event with hostname {h}: {other:?}")),
            }
        }
        Probe::LogFileExists => {
            let path = env.iter().find(|(k, _)| k == "LOG_FILE").map(|(_, v)| v.clone()).unwrap_or_default();
            if Path::new(&path).is_file() {
                Ok(())
            } else {
                Err(format!("LOG_FILE {path} was not created"))
            }
        }
        Probe::NoG0efilterTables => {
            let t = nft(&p.work, &["list", "tables"]);
            let left: Vec<&str> =
                t.lines().filter(|l| l.contains("g0efilter") || l.contains("_v4")).collect();
            if left.is_empty() && t.contains("table ip keepme") && t.contains("table inet egret") {
                Ok(())
            } else {
                Err(format!("tables after start:\n{t}"))
            }
        }
        Probe::DashboardHealthDualStack(port) => {
            let (code, body) = curl(&p.work, &[&format!("http://127.0.0.1:{port}/health")]);
            let v: Value = serde_json::from_str(&body).unwrap_or_default();
            if code != "200" || v["service"] != "g0efilter-dashboard" || v["status"] != "ok" {
                return Err(format!("/health: {code} {body}"));
            }
            let (code6, _) = curl(&p.work, &[&format!("http://[::1]:{port}/health")]);
            if code6 != "200" {
                return Err(format!("not reachable over IPv6 ({code6})"));
            }
            let mut ss = Pair::exec(&p.work, "ss");
            ss.args(["-Hltn", &format!("sport = :{port}")]);
            let listeners = util::run(ss).1;
            if listeners.contains(&format!("*:{port}")) || listeners.contains(&format!("[::]:{port}")) {
                Ok(())
            } else {
                Err(format!("not listening on every address: {listeners}"))
            }
        }
    }
}

/// Runs a table; returns every case that did not come out as written.
fn run_table(
    w: &World,
    sub: &str,
    base: &[(String, String)],
    cases: &[Case],
    policy_dir: &Path,
) -> Vec<String> {
    let p = &w.p;
    let mut failures = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let scratch = policy_dir.join(format!("case-{i}"));
        std::fs::create_dir_all(&scratch).expect("scratch");
        let pol = scratch.join("policy.yaml");
        let text = match c.policy {
            Pol::Example => {
                std::fs::read_to_string(util::data("g0efilter/example-policy.yaml")).expect("fixture")
            }
            Pol::Yaml(y) => fill(y, p, &scratch),
        };
        std::fs::write(&pol, text).expect("write policy");
        let sock = scratch.join("run").join("egret.sock");
        let mut base = base.to_vec();
        base.push(("POLICY_PATH".into(), pol.to_str().expect("utf-8").into()));
        base.push(("HEALTH_SOCKET".into(), sock.to_str().expect("utf-8").into()));
        let env = case_env(&base, c, p, &scratch);
        if let Setup::G0efilterTables = c.setup {
            for (fam, t) in [
                ("ip", "filter_v4"),
                ("ip", "nat_v4"),
                ("ip", "g0efilter_v4"),
                ("ip", "g0efilter_nat_v4"),
                ("ip", "keepme"),
            ] {
                nft(&p.work, &["add", "table", fam, t]);
            }
            nft(
                &p.work,
                &[
                    "add",
                    "chain",
                    "ip",
                    "g0efilter_v4",
                    "out",
                    "{ type filter hook output priority 0; policy accept; }",
                ],
            );
        }
        let mut r = Run::start(&p.work, sub, &env);
        let ns = p.work.clone();
        let health_env = env.clone();
        let port = env.iter().find(|(k, _)| k == "PORT").map(|(_, v)| v.clone());
        let ready = move || -> bool {
            if sub == "dashboard" {
                let port = port.as_deref().unwrap_or("8081");
                let port = port.rsplit(':').next().unwrap_or("8081");
                curl(&ns, &[&format!("http://127.0.0.1:{port}/health")]).0 == "200"
            } else {
                let mut h = Pair::exec(&ns, env!("CARGO_BIN_EXE_egret"));
                h.arg("health")
                    .env_clear()
                    .envs(health_env.iter().filter(|(k, _)| k == "HEALTH_SOCKET").cloned());
                h.output().is_ok_and(|o| o.status.success())
            }
        };
        let got = r.settle(&ready);
        // Needles name the test network's resolver as {up2}.
        let log = r.text().replace(&p.v4(2), UP2);
        let verdict = judge(c, &got, &log).and_then(|()| {
            if matches!(got, Outcome::Started) {
                run_probe(c, &mut r, p, &env)
            } else {
                Ok(())
            }
        });
        if let Err(why) = verdict {
            failures.push(format!("[{sub}] {}: {why}\n--- log:\n{log}", c.what));
        }
        drop(r);
        if let Setup::G0efilterTables = c.setup {
            let _ = nft(&p.work, &["list", "tables"]);
            let mut c = Pair::exec(&p.work, "nft");
            c.args(["delete", "table", "ip", "keepme"]);
            let _ = util::run(c);
        }
    }
    failures
}

#[test]
fn configurations_g0efilter_runs_start_with_the_outcome_written_beside_them() {
    let w = world();
    let p = &w.p;
    let etc = NetnsEtc::new(&p.work);
    // The workloads' resolver is the test network's DNS (for the cases
    // without DNS_UPSTREAMS), and a host name for DNS_UPSTREAMS is pinned.
    etc.write("resolv.conf", &format!("nameserver {}\n", p.v4(2)));
    etc.write("hosts", &format!("127.0.0.1 localhost\n{} resolver.test\n", p.v4(2)));
    let dir = util::scratch("compat-configs");

    let mut filter_base = env_file("example.env");
    filter_base.retain(|(k, _)| k != "POLICY_PATH");
    filter_base.push(("DNS_UPSTREAMS".into(), format!("{}:53", p.v4(2))));
    let mut failures = run_table(&w, "run", &filter_base, &filter_cases(), &dir.join("run"));
    let dash_base = env_file("dashboard.env");
    failures.extend(run_table(&w, "dashboard", &dash_base, &dashboard_cases(), &dir.join("dashboard")));
    drop(etc);
    assert!(
        failures.is_empty(),
        "{} case(s) did not come out as written:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// A one-connection HTTP receiver in `ns`: the body of every POST,
/// answered 201.
fn receiver_in(ns: &str) -> (SocketAddr, mpsc::Receiver<Vec<u8>>) {
    let (tx, rx) = mpsc::channel();
    let l = crate::netns::within(ns, || TcpListener::bind("127.0.0.1:0").expect("bind receiver"));
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(64) {
            let Ok(mut s) = s else { return };
            let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
            let mut buf = Vec::new();
            let mut chunk = [0u8; 16384];
            while let Ok(n) = s.read(&mut chunk) {
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
                let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else { continue };
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                let len: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    let body = buf[end + 4..end + 4 + len].to_vec();
                    buf.drain(..end + 4 + len);
                    let _ = s.write_all(b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\n\r\n{}");
                    if tx.send(body).is_err() {
                        return;
                    }
                }
            }
        }
    });
    (addr, rx)
}

fn fixture(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(util::data(&format!("g0efilter/{name}"))).expect("fixture"))
        .expect("fixture is JSON")
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// Compares `ours` with g0efilter's `theirs`: every key of theirs is in
/// ours with the same JSON type, and the same value unless it names a
/// key in `varies`; ours has no keys beyond theirs except `extra`.
fn compare(what: &str, ours: &Value, theirs: &Value, varies: &[&str], extra: &[&str]) -> Vec<String> {
    let (o, t) = (ours.as_object().expect("object"), theirs.as_object().expect("object"));
    let mut diffs = Vec::new();
    for (k, tv) in t {
        match o.get(k) {
            None => diffs.push(format!("{what}: g0efilter's key {k} is missing")),
            Some(ov) if kind(ov) != kind(tv) => {
                diffs.push(format!("{what}: {k} is a {} here, a {} in g0efilter's", kind(ov), kind(tv)))
            }
            Some(ov) if !varies.contains(&k.as_str()) && ov != tv && !ov.is_object() => {
                diffs.push(format!("{what}: {k} = {ov}, g0efilter's {tv}"))
            }
            _ => {}
        }
    }
    for k in o.keys() {
        if !t.contains_key(k) && !extra.contains(&k.as_str()) {
            diffs.push(format!("{what}: key {k} is not in g0efilter's shape (nor a documented extra)"));
        }
    }
    diffs
}

/// Issue 16, "golden wire tests": an event as egret ships it, and the
/// entry the dashboard returns for g0efilter's shipped event, compared
/// field by field with g0efilter's shapes.
#[test]
fn the_shipped_event_and_the_stored_entry_have_g0efilters_shapes() {
    let w = world();
    let p = &w.p;
    let (addr, bodies) = receiver_in(&p.work);
    let pol = crate::run::policy_file("compat-golden", "allowlist:\n  domains: [\"allowed.test\"]\n");
    let d = Daemon::start(
        &p.work,
        &pol,
        &[
            ("DNS_UPSTREAMS", &format!("{}:53", p.v4(2))),
            ("HOSTNAME", "host01"),
            ("DASHBOARD_HOST", &format!("http://{addr}")),
            ("DASHBOARD_API_KEY", "k"),
            ("DASHBOARD_START_DELAY", "0s"),
        ],
    );
    let url = format!("http://{}/", p.v4(2));
    let (code, _) = curl(&p.work, &["-H", "Host: blocked.test", &url]);
    assert_eq!(code, "403");
    let shipped: Vec<Value> = wait_for(Duration::from_secs(10), || {
        let b = bodies.recv_timeout(Duration::from_millis(200)).ok()?;
        let v: Value = serde_json::from_slice(&b).ok()?;
        let list = v.as_array().cloned().unwrap_or_else(|| vec![v]);
        Some(list).filter(|l| l.iter().any(|e| e["msg"] == "http.blocked"))
    })
    .expect("the blocked event was shipped");
    drop(d);
    let ours = shipped.into_iter().find(|e| e["msg"] == "http.blocked").unwrap();
    let theirs = fixture("shipped-http-blocked.json");
    // Values that depend on the run (time, ports, addresses, the hash of
    // them, the version); the rest must be equal.
    let varies = [
        "producer_time",
        "time",
        "version",
        "source_ip",
        "source_port",
        "destination_ip",
        "src",
        "dst",
        "flow_id",
    ];
    // egret's additions, documented in README ("Coming from g0efilter"):
    // the protocol of proxied connections, the human-readable note, and
    // the client socket's owner (uid; cgroup and container where a cgroup2
    // hierarchy is mounted).
    let extra = ["protocol", "note", "uid", "cgroup", "container"];
    let mut diffs = compare("shipped event", &ours, &theirs, &varies, &extra);
    // g0efilter's formats for the varying values.
    let hex = ours["flow_id"].as_str().unwrap_or_default();
    if hex.is_empty()
        || hex.starts_with('0')
        || !hex.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
    {
        diffs.push(format!("flow_id {hex:?} is not lowercase hex without zero padding"));
    }
    if ours["dst"] != format!("{}:80", p.v4(2)).as_str() || ours["destination_port"] != 80 {
        diffs.push(format!("dst/destination_port: {ours}"));
    }
    if ours["producer_time"] != ours["time"] {
        diffs.push(format!("producer_time differs from time: {ours}"));
    }

    // The dashboard, fed g0efilter's own shipped event.
    let dash_port = 18091;
    let env: Vec<(String, String)> =
        vec![("API_KEY".into(), "k".into()), ("PORT".into(), format!("127.0.0.1:{dash_port}"))];
    let mut r = Run::start(&p.work, "dashboard", &env);
    let ns = p.work.clone();
    let base = format!("http://127.0.0.1:{dash_port}");
    let b2 = base.clone();
    let started = r.settle(&move || curl(&ns, &[&format!("{b2}/health")]).0 == "200");
    assert!(matches!(started, Outcome::Started), "{started:?}: {}", r.text());
    let body = theirs.to_string();
    let (code, answer) = curl(
        &p.work,
        &[
            "-X",
            "POST",
            "-H",
            "X-Api-Key: k",
            "-H",
            "Content-Type: application/json",
            "--data-binary",
            &body,
            &format!("{base}/api/v1/logs"),
        ],
    );
    assert_eq!(code, "201", "{answer}");
    let (_, list) = curl(&p.work, &["-H", "X-Api-Key: k", &format!("{base}/api/v1/logs")]);
    let entries: Vec<Value> = serde_json::from_str(&list).expect("entries");
    assert_eq!(entries.len(), 1, "{list}");
    let stored = &entries[0];
    let want = fixture("stored-http-blocked.json");
    // remote_ip is who posted (its port varies); the rest is the payload's.
    diffs.extend(compare("stored entry", stored, &want, &["remote_ip"], &[]));
    let remote = stored["remote_ip"].as_str().unwrap_or_default();
    if !remote.starts_with("127.0.0.1:")
        || remote.rsplit(':').next().and_then(|p| p.parse::<u16>().ok()).is_none()
    {
        diffs.push(format!("remote_ip {remote:?} is not ip:port"));
    }
    // fields: g0efilter's keys with its values; egret also keeps
    // producer_time (every payload key but msg and time).
    diffs.extend(compare("stored entry fields", &stored["fields"], &want["fields"], &[], &["producer_time"]));
    drop(r);
    assert!(diffs.is_empty(), "{}\nours: {ours:#}\nstored: {stored:#}", diffs.join("\n"));
}

/// Issue 16, item 8: a real WebSocket exchange through egret's HTTP proxy
/// to an allowed host (frames both ways), and the handshake to a host
/// outside the policy refused.
#[test]
fn a_websocket_through_egret_exchanges_frames_and_a_blocked_host_is_refused() {
    let p = Pair::new();
    let _ws = Pair::spawn_ready(
        &p.up,
        "python3",
        &[&util::data("netns/ws.py").to_string_lossy(), "server", "80", &p.v4(2)],
    );
    // The anti-spoofing check finds ws.test in /etc/hosts; resolv.conf
    // names an address where no resolver runs.
    let etc = NetnsEtc::new(&p.work);
    etc.write("hosts", &format!("127.0.0.1 localhost\n{} ws.test other.test\n", p.v4(2)));
    etc.write("resolv.conf", &format!("nameserver {}\n", p.v4(3)));
    let pol = crate::run::policy_file("compat-ws", "allowlist:\n  domains: [\"ws.test\"]\n");
    let d = Daemon::start(&p.work, &pol, &[]);
    let ws = |host: &str| {
        let mut c = Pair::exec(&p.work, "python3");
        c.arg(util::data("netns/ws.py")).args([
            "client",
            host,
            &p.v4(2),
            "80",
            "first",
            &"x".repeat(300),
            "third",
        ]);
        util::run(c)
    };
    let (code, out, err) = ws("ws.test");
    assert_eq!(code, 0, "websocket through egret failed:\n{out}{err}");
    let want = format!("server: hello from {}", p.v4(2));
    assert!(out.starts_with("HTTP/1.1 101") && out.contains(&want), "{out}");
    assert!(out.contains("echo: echo:first") && out.contains("echo: echo:third"), "{out}");
    assert!(
        out.contains(&format!("echo: echo:{}", "x".repeat(300))),
        "a 300-byte frame (16-bit length) both ways: {out}"
    );
    let ev = d.wait_event("http.allowed", "http_host", "ws.test");
    assert_eq!(ev["destination_ip"], p.v4(2).as_str());
    // A host outside the policy: 403 before any upgrade.
    let (code, out, _) = ws("other.test");
    assert_ne!(code, 0);
    assert!(out.starts_with("HTTP/1.1 403") && out.contains("not-allowlisted"), "{out}");
    d.wait_event("http.blocked", "http_host", "other.test");
    drop(d);
    drop(etc);
}

/// Issue 16, item 1, in a real namespace: DNS_UPSTREAMS unset means the
/// nameservers of /etc/resolv.conf; /etc/hosts pins count; both as egret
/// found them at start (issue 15: a workload sharing the files must not
/// choose what egret trusts); a resolver that does not answer at all is
/// `resolver-unavailable`, not `ip-mismatch`.
#[test]
fn the_workloads_resolvers_pins_and_an_unanswered_check() {
    let w = world();
    let p = &w.p;
    let etc = NetnsEtc::new(&p.work);
    // .3 runs no DNS server: nothing answers (ICMP port unreachable).
    etc.write("resolv.conf", &format!("nameserver {}\n", p.v4(3)));
    etc.write("hosts", &format!("127.0.0.1 localhost\n{} pinned.test\n", p.v4(3)));
    let pol = crate::run::policy_file(
        "compat-resolvers",
        "allowlist:\n  domains: [\"allowed.test\", \"pinned.test\"]\n",
    );
    // (The start-up line naming the resolver is checked by the
    // configuration table above.)
    let d = Daemon::start(&p.work, &pol, &[]);
    let get = |host: &str, ip: String| {
        curl(&p.work, &["--resolve", &format!("{host}:80:{ip}"), &format!("http://{host}/")])
    };
    let dig = || {
        let mut dig = Pair::exec(&p.work, "dig");
        dig.args(["+short", "+time=2", "+tries=1", &format!("@{}", p.v4(2)), "allowed.test"]);
        util::run(dig).1.trim().to_owned()
    };
    assert_ne!(
        dig(),
        p.v4(2),
        "the test DNS is not a resolver in effect yet: the rules keep workloads from it"
    );
    // No answer: the check cannot be made, and says so.
    let (code, body) = get("allowed.test", p.v4(2));
    assert_eq!(code, "403", "{body}");
    assert!(body.contains("resolver-unavailable"), "{body}");
    d.wait_event("http.blocked", "reason", "resolver-unavailable");
    // A pin in /etc/hosts counts (DNS knows nothing of pinned.test).
    let (code, body) = get("pinned.test", p.v4(3));
    assert_eq!((code.as_str(), body.trim()), ("200", format!("hello from {}", p.v4(3)).as_str()));
    // A workload shares these files: what it writes after egret started
    // changes nothing (it would choose the answers egret checks against).
    // resolv.conf naming another resolver: egret says so and keeps its own.
    etc.write("resolv.conf", &format!("nameserver {}\n", p.v4(2)));
    d.wait_log(&format!("{}:53); egret keeps asking {}:53", p.v4(2), p.v4(3)), Duration::from_secs(10));
    let (code, body) = get("allowed.test", p.v4(2));
    assert!(code == "403" && body.contains("resolver-unavailable"), "{code} {body}");
    assert_ne!(dig(), p.v4(2), "the rules did not open the new resolver to the workloads");
    // A new pin for an allowed name to a forbidden address: still refused.
    etc.write("hosts", &format!("127.0.0.1 localhost\n{} pinned.test\n{} allowed.test\n", p.v4(3), p.v4(3)));
    std::thread::sleep(Duration::from_millis(1500));
    let (code, body) = get("allowed.test", p.v4(3));
    assert_eq!(code, "403", "a pin written after start was trusted: {body}");
    // The pin from start still counts.
    let (code, _) = get("pinned.test", p.v4(3));
    assert_eq!(code, "200");
    drop(d);
    drop(etc);
}
