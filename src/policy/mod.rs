//! The allowlist: `policy.yaml` plus the `ALLOWLIST_*` environment lists,
//! compiled into a [`Policy`] that can only exist valid, and the one
//! decision function every component asks.
//!
//! Pure: reading the file is [`load`]'s only I/O; compiling and deciding do
//! none.

pub mod cidr;
pub mod guard;
pub mod lint;
pub mod name;
pub mod port;

use std::fmt;
use std::net::IpAddr;
use std::path::Path;

use serde::Deserialize;

pub use cidr::{Cidr, IpSet};
pub use guard::Guard;
pub use name::{normalize, NameError, NameSet, Pattern};
pub use port::{PortEntry, PortSet, Proto};

/// `policy.yaml` as written. Unknown keys are an error, so a g0efilter
/// `denylist:` (which egret does not have) is never silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default)]
    pub allowlist: RawAllowlist,
    /// `enforce: audit` (or `true`, the default): the file's say on the
    /// mode; `ENFORCE` in the environment wins over it.
    #[serde(default)]
    pub enforce: Option<serde_yaml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAllowlist {
    #[serde(default)]
    pub ips: Option<Vec<String>>,
    #[serde(default)]
    pub domains: Option<Vec<String>>,
}

/// Where an entry came from, for error messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// A file; the string is the path as the user gave it.
    File(String),
    /// An environment variable.
    Env(&'static str),
}

/// One problem with one entry, or with the whole source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyError {
    /// The file or variable.
    pub source: String,
    /// `allowlist.domains[3]` for a file entry, `[3]` for an env entry,
    /// empty for a problem with the whole source.
    pub location: String,
    /// The offending entry, as written.
    pub entry: String,
    pub reason: String,
}

impl fmt::Display for PolicyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.location.is_empty(), self.entry.is_empty()) {
            (true, _) => write!(f, "{}: {}", self.source, self.reason),
            (false, true) => write!(f, "{}: {}: {}", self.source, self.location, self.reason),
            (false, false) => {
                write!(f, "{}: {} {:?}: {}", self.source, self.location, self.entry, self.reason)
            }
        }
    }
}

impl std::error::Error for PolicyError {}

/// Every problem found in one compile, in input order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(f, "invalid policy ({n} problem{})", if n == 1 { "" } else { "s" })?;
        for e in &self.0 {
            write!(f, "\n  {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for PolicyErrors {}

/// One list of entries and where it came from.
#[derive(Debug, Clone)]
pub struct Source<'a> {
    pub origin: Origin,
    pub entries: &'a [String],
}

/// The compiled allowlist. Names are normalised and hashed by suffix, IP
/// ranges merged; building one is the only way to get one, and that
/// validates every entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    ips: IpSet,
    /// Address entries with a protocol and/or ports.
    ports: PortSet,
    names: NameSet,
    /// Enforce (the default) or audit: every component decides the same
    /// way in both, and in audit lets through what it would have refused.
    mode: Mode,
    /// Non-fatal remarks found while compiling (host bits cleared,
    /// duplicates, an empty policy), for the caller to log.
    warnings: Vec<String>,
}

/// `ENFORCE`: whether a refusal is carried out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Mode {
    /// Refuse what the policy does not allow.
    #[default]
    Enforce,
    /// Decide and log exactly as in enforcement (action `AUDIT`, with the
    /// reason), but let everything through.
    Audit,
}

impl Mode {
    /// `ENFORCE` / `enforce:` values: `audit` (also `false`, `off`, `no`,
    /// `0`, `dry-run`), or `true` / `enforce` (also `on`, `yes`, `1`).
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "audit" | "dry-run" | "dryrun" | "false" | "off" | "no" | "0" => Ok(Mode::Audit),
            "enforce" | "block" | "true" | "on" | "yes" | "1" => Ok(Mode::Enforce),
            _ => Err("audit, or true/enforce (the default)".into()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Enforce => "enforce",
            Mode::Audit => "audit",
        }
    }
}

/// What the shells ask: a name (SNI, Host, DNS question) and/or the
/// destination address.
#[derive(Debug, Clone, Copy, Default)]
pub struct Query<'a> {
    pub name: Option<&'a str>,
    pub ip: Option<IpAddr>,
    /// The destination's protocol and port, when known: an address open
    /// only on some ports (`tcp/10.0.0.5:5432`) is allowed only there.
    pub port: Option<(Proto, u16)>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allow,
    Deny,
}

/// Why a decision went the way it did; `as_str` is the event `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reason {
    /// The destination address is inside `allowlist.ips`.
    IpAllowed,
    /// The name matched a domain pattern.
    DomainAllowed,
    /// The name matched no pattern.
    DomainNotAllowed,
    /// The name could not be normalised (bad characters, IP literal, …).
    InvalidName,
    /// No name, and the address is not in `allowlist.ips`.
    IpNotAllowed,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::IpAllowed => "ip-allowed",
            Reason::DomainAllowed => "domain-allowed",
            // g0efilter's value for "not in the policy".
            Reason::DomainNotAllowed => "not-allowlisted",
            Reason::InvalidName => "invalid-name",
            Reason::IpNotAllowed => "ip-not-allowed",
        }
    }
}

/// The rule that allowed a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rule {
    Ip(Cidr),
    /// An address entry with a protocol and ports.
    Port(PortEntry),
    Domain(Pattern),
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rule::Ip(c) => write!(f, "ip {c}"),
            Rule::Port(p) => write!(f, "ip {p}"),
            Rule::Domain(p) => write!(f, "domain {p}"),
        }
    }
}

/// A decision is a value, never an error: a deny says why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub verdict: Verdict,
    pub reason: Reason,
    /// The matching rule, for allows.
    pub rule: Option<Rule>,
    /// The normalised name, when the query had a valid one.
    pub name: Option<String>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

impl Policy {
    /// Compiles the file lists and the environment lists. Each env list,
    /// when given, replaces the same list from the file. Every problem is
    /// reported, not just the first.
    pub fn compile(ips: &[Source<'_>], domains: &[Source<'_>]) -> Result<Policy, PolicyErrors> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let mut cidrs = Vec::new();
        let mut port_entries = Vec::new();
        // g0efilter skips empty entries (`- ""`); so does egret, saying so.
        let skip_empty = |src: &Source<'_>, list: &str, i: usize, entry: &str, warnings: &mut Vec<String>| {
            let empty = entry.trim().is_empty();
            if empty {
                warnings.push(format!(
                    "{}: {} {entry:?}: empty entry skipped",
                    source_name(&src.origin),
                    location(&src.origin, list, i)
                ));
            }
            empty
        };
        for src in ips {
            for (i, entry) in src.entries.iter().enumerate() {
                if skip_empty(src, "ips", i, entry, &mut warnings) {
                    continue;
                }
                let host_bits_warning = |c: &dyn fmt::Display, warnings: &mut Vec<String>| {
                    warnings.push(format!(
                        "{}: {} {entry:?}: host bits set, using {c}",
                        source_name(&src.origin),
                        location(&src.origin, "ips", i),
                    ))
                };
                let risky = |c: &Cidr, warnings: &mut Vec<String>| {
                    if let Some(why) = lint::risky_cidr(c) {
                        warnings.push(format!(
                            "{}: {} {entry:?}: {why}",
                            source_name(&src.origin),
                            location(&src.origin, "ips", i)
                        ));
                    }
                };
                match Cidr::parse(entry) {
                    Ok((c, host_bits)) => {
                        if host_bits {
                            host_bits_warning(&c, &mut warnings);
                        }
                        risky(&c, &mut warnings);
                        cidrs.push(c);
                    }
                    Err(_) if port::is_port_entry(entry) => match port::parse(entry) {
                        Ok((p, host_bits)) => {
                            if host_bits {
                                host_bits_warning(&p, &mut warnings);
                            }
                            risky(&p.cidr, &mut warnings);
                            port_entries.push(p);
                        }
                        Err(e) => errors.push(entry_error(&src.origin, "ips", i, entry, e.to_string())),
                    },
                    Err(e) => errors.push(entry_error(&src.origin, "ips", i, entry, e.to_string())),
                }
            }
        }
        let mut names = NameSet::default();
        for src in domains {
            for (i, entry) in src.entries.iter().enumerate() {
                if skip_empty(src, "domains", i, entry, &mut warnings) {
                    continue;
                }
                match Pattern::parse(entry) {
                    Ok(p) => {
                        if let Some(why) = lint::risky_pattern(&p) {
                            warnings.push(format!(
                                "{}: {} {entry:?}: {why}",
                                source_name(&src.origin),
                                location(&src.origin, "domains", i)
                            ));
                        }
                        names.insert(p)
                    }
                    Err(e) => errors.push(entry_error(&src.origin, "domains", i, entry, e.to_string())),
                }
            }
        }
        if let Err(e) = names.prepare() {
            let source = domains.first().map(|s| source_name(&s.origin)).unwrap_or_default();
            errors.push(PolicyError {
                source,
                location: "allowlist.domains".into(),
                entry: String::new(),
                reason: e.to_string(),
            });
        }
        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        let ips = IpSet::from_cidrs(&cidrs);
        let ports = PortSet::from_entries(&port_entries);
        if ips.is_empty() && names.is_empty() && ports.is_empty() {
            warnings.push("the policy allows nothing: all egress will be blocked".to_owned());
        }
        Ok(Policy { ips, ports, names, mode: Mode::Enforce, warnings })
    }

    /// This policy in `mode`.
    pub fn with_mode(mut self, mode: Mode) -> Policy {
        self.mode = mode;
        self
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Audit mode: a refusal is logged as `AUDIT` and not carried out.
    pub fn audit(&self) -> bool {
        self.mode == Mode::Audit
    }

    /// The one decision: an allowed address allows; otherwise a name must
    /// match a pattern. Anti-spoofing (does the name resolve to the
    /// address?) is the proxies' job on top of this.
    pub fn decide(&self, q: Query<'_>) -> Decision {
        if let Some(ip) = q.ip {
            if let Some(block) = self.ips.find(ip) {
                let name = q.name.and_then(|n| normalize(n).ok());
                return Decision {
                    verdict: Verdict::Allow,
                    reason: Reason::IpAllowed,
                    rule: Some(Rule::Ip(block)),
                    name,
                };
            }
            if let Some((proto, port)) = q.port {
                if let Some(entry) = self.ports.find(ip, proto, port) {
                    let name = q.name.and_then(|n| normalize(n).ok());
                    return Decision {
                        verdict: Verdict::Allow,
                        reason: Reason::IpAllowed,
                        rule: Some(Rule::Port(entry)),
                        name,
                    };
                }
            }
        }
        let Some(raw) = q.name else {
            return deny(Reason::IpNotAllowed, None);
        };
        let Ok(name) = normalize(raw) else {
            return deny(Reason::InvalidName, None);
        };
        match self.names.find(&name) {
            Some(p) => Decision {
                verdict: Verdict::Allow,
                reason: Reason::DomainAllowed,
                rule: Some(Rule::Domain(p)),
                name: Some(name),
            },
            None => deny(Reason::DomainNotAllowed, Some(name)),
        }
    }

    /// Whether an already normalised name is allowed (the hot path for
    /// callers that normalised once themselves).
    pub fn allows_name(&self, normalized: &str) -> bool {
        self.names.contains(normalized)
    }

    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        self.ips.contains(ip)
    }

    pub fn ips(&self) -> &IpSet {
        &self.ips
    }

    /// The address entries with a protocol and ports.
    pub fn ports(&self) -> &PortSet {
        &self.ports
    }

    /// Whether `ip` is reachable on `proto` port `port`: a bare address
    /// entry, or a port entry covering it.
    pub fn allows_port(&self, ip: IpAddr, proto: Proto, port: u16) -> bool {
        self.ips.contains(ip) || self.ports.contains(ip, proto, port)
    }

    pub fn names(&self) -> &NameSet {
        &self.names
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.names.is_empty() && self.ports.is_empty()
    }
}

impl fmt::Display for Policy {
    /// The effective allowlist, as `egret check` prints it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cidrs = self.ips.cidrs();
        let ports = self.ports.entries();
        if self.audit() {
            writeln!(f, "enforce: audit")?;
        }
        writeln!(f, "allowlist:")?;
        writeln!(f, "  ips:{}", if cidrs.is_empty() && ports.is_empty() { " []" } else { "" })?;
        for c in &cidrs {
            writeln!(f, "    - {c}")?;
        }
        for p in &ports {
            writeln!(f, "    - \"{p}\"")?;
        }
        let pats = self.names.patterns();
        writeln!(f, "  domains:{}", if pats.is_empty() { " []" } else { "" })?;
        for p in &pats {
            // Single quotes keep a regex's backslashes literal in YAML.
            let text = p.to_string();
            if text.contains(['\\', '"']) {
                writeln!(f, "    - '{}'", text.replace('\'', "''"))?;
            } else {
                writeln!(f, "    - \"{text}\"")?;
            }
        }
        Ok(())
    }
}

/// The live policy, shared by every component and swapped whole on
/// reload. A connection takes one snapshot (`current`) at its start.
#[derive(Debug, Clone, Default)]
pub struct PolicyHandle(std::sync::Arc<std::sync::RwLock<std::sync::Arc<Policy>>>);

impl PolicyHandle {
    pub fn new(p: Policy) -> PolicyHandle {
        PolicyHandle(std::sync::Arc::new(std::sync::RwLock::new(std::sync::Arc::new(p))))
    }

    pub fn current(&self) -> std::sync::Arc<Policy> {
        // A writer never panics while holding the lock (it only swaps an
        // Arc), so a poisoned lock still holds a valid policy.
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, p: Policy) {
        let new = std::sync::Arc::new(p);
        match self.0.write() {
            Ok(mut g) => *g = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
    }
}

fn deny(reason: Reason, name: Option<String>) -> Decision {
    Decision { verdict: Verdict::Deny, reason, rule: None, name }
}

fn source_name(o: &Origin) -> String {
    match o {
        Origin::File(p) => p.clone(),
        Origin::Env(v) => (*v).to_owned(),
    }
}

fn location(o: &Origin, list: &str, i: usize) -> String {
    match o {
        Origin::File(_) => format!("allowlist.{list}[{i}]"),
        Origin::Env(_) => format!("[{i}]"),
    }
}

fn entry_error(o: &Origin, list: &str, i: usize, entry: &str, reason: String) -> PolicyError {
    PolicyError { source: source_name(o), location: location(o, list, i), entry: entry.to_owned(), reason }
}

fn whole_error(source: &str, reason: String) -> PolicyErrors {
    PolicyErrors(vec![PolicyError {
        source: source.to_owned(),
        location: String::new(),
        entry: String::new(),
        reason,
    }])
}

/// Parses policy YAML text. `source` names the file in errors.
pub fn parse_yaml(text: &str, source: &str) -> Result<RawPolicy, PolicyErrors> {
    if text.trim().is_empty() {
        return Ok(RawPolicy::default());
    }
    // A document of only comments is "null" to serde_yaml: treat as empty.
    match serde_yaml::from_str::<Option<RawPolicy>>(text) {
        Ok(p) => Ok(p.unwrap_or_default()),
        Err(e) => Err(whole_error(source, yaml_reason(&e))),
    }
}

fn yaml_reason(e: &serde_yaml::Error) -> String {
    // serde_yaml's message already says "at line L column C" when it knows.
    let msg = e.to_string();
    if msg.contains("unknown field `denylist`") {
        format!(
            "{msg} (egret only knows allowlist.ips and allowlist.domains; a denylist is refused rather than \
             ignored, because ignoring it would let through what it was meant to block)"
        )
    } else if msg.contains("unknown field") {
        format!("{msg} (egret only knows allowlist.ips and allowlist.domains)")
    } else {
        msg
    }
}

/// Environment lists that override the file.
#[derive(Debug, Clone, Default)]
pub struct EnvLists {
    pub ips: Option<Vec<String>>,
    pub domains: Option<Vec<String>>,
    /// `ENFORCE`, when set: wins over the file's `enforce:`.
    pub mode: Option<Mode>,
}

/// Reads and compiles the policy, with g0efilter's precedence: when either
/// `ALLOWLIST_IPS` or `ALLOWLIST_DOMAINS` is set, the environment is the
/// whole policy and the file at `path` is not read at all (a list that is
/// not set is empty); otherwise the file is the policy, and a missing file
/// is an error, never an empty or a default allowlist.
pub fn load(path: &Path, env: &EnvLists) -> Result<Policy, PolicyErrors> {
    let shown = path.display().to_string();
    if env.ips.is_some() || env.domains.is_some() {
        let mut p = compile_env(env)?;
        let set: Vec<&str> = [("ALLOWLIST_IPS", &env.ips), ("ALLOWLIST_DOMAINS", &env.domains)]
            .into_iter()
            .filter(|(_, v)| v.is_some())
            .map(|(k, _)| k)
            .collect();
        if path.exists() {
            p.warnings.insert(
                0,
                format!(
                    "{} set: the policy file {shown} is not read (g0efilter's precedence); \
                     the allowlist is the environment's only",
                    set.join(" and ")
                ),
            );
        }
        return Ok(p);
    }
    let raw = match std::fs::read_to_string(path) {
        Ok(text) => parse_yaml(&text, &shown)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(whole_error(
            &shown,
            "no such file, and neither ALLOWLIST_IPS nor ALLOWLIST_DOMAINS is set, so there is no policy: \
                 mount a policy file at POLICY_PATH (README.md, \"Policy\", has an example) or set \
                 ALLOWLIST_IPS / ALLOWLIST_DOMAINS"
                .into(),
        )),
        Err(e) => return Err(whole_error(&shown, format!("cannot read: {e}"))),
    };
    compile_raw(raw, &shown, &EnvLists { mode: env.mode, ..EnvLists::default() })
}

/// Compiles the environment lists alone (the file is not consulted).
pub fn compile_env(env: &EnvLists) -> Result<Policy, PolicyErrors> {
    let none = Vec::new();
    let ips = Source { origin: Origin::Env("ALLOWLIST_IPS"), entries: env.ips.as_ref().unwrap_or(&none) };
    let domains =
        Source { origin: Origin::Env("ALLOWLIST_DOMAINS"), entries: env.domains.as_ref().unwrap_or(&none) };
    Ok(Policy::compile(&[ips], &[domains])?.with_mode(env.mode.unwrap_or_default()))
}

/// Compiles parsed YAML; when `env` has a list set, the environment
/// replaces the file entirely ([`load`]'s precedence).
pub fn compile_raw(raw: RawPolicy, shown: &str, env: &EnvLists) -> Result<Policy, PolicyErrors> {
    if env.ips.is_some() || env.domains.is_some() {
        return compile_env(env);
    }
    // `ENFORCE` wins over the file; a bad `enforce:` value is an error
    // like any other entry (a typo must not quietly mean "enforce").
    let file_mode = match &raw.enforce {
        None => Ok(Mode::Enforce),
        Some(v) => {
            let text = match v {
                serde_yaml::Value::Bool(b) => b.to_string(),
                serde_yaml::Value::String(s) => s.clone(),
                other => format!("{other:?}"),
            };
            Mode::parse(&text).map_err(|why| PolicyError {
                source: shown.to_owned(),
                location: "enforce".into(),
                entry: text,
                reason: format!("expected {why}"),
            })
        }
    };
    let file = Origin::File(shown.to_owned());
    let file_ips = raw.allowlist.ips.unwrap_or_default();
    let file_domains = raw.allowlist.domains.unwrap_or_default();
    let ips = Source { origin: file.clone(), entries: &file_ips };
    let domains = Source { origin: file, entries: &file_domains };
    let compiled = Policy::compile(&[ips], &[domains]);
    match (compiled, file_mode) {
        (Ok(p), Ok(m)) => Ok(p.with_mode(env.mode.unwrap_or(m))),
        (Ok(_), Err(e)) => Err(PolicyErrors(vec![e])),
        (Err(es), Ok(_)) => Err(es),
        (Err(mut es), Err(e)) => {
            es.0.insert(0, e);
            Err(es)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn yaml(text: &str) -> Result<Policy, PolicyErrors> {
        compile_raw(parse_yaml(text, "policy.yaml")?, "policy.yaml", &EnvLists::default())
    }

    fn errors(text: &str) -> Vec<String> {
        yaml(text).unwrap_err().0.iter().map(ToString::to_string).collect()
    }

    const BUNDLED: &str = include_str!("../../policy.yaml");

    #[test]
    fn bundled_policy_compiles() {
        let p = yaml(BUNDLED).unwrap();
        assert!(p.allows_name("github.com"));
        assert!(p.allows_name("dl-cdn.alpinelinux.org"));
        assert!(!p.allows_name("alpinelinux.org"));
        assert!(p.allows_ip("1.1.1.1".parse().unwrap()));
        assert!(p.allows_ip("192.168.7.7".parse().unwrap()));
        assert!(p.allows_ip("2001:db8:ffff::1".parse().unwrap()));
        assert!(p.warnings().is_empty());
    }

    #[test]
    fn every_error_reported_with_location() {
        let errs = errors(
            "allowlist:\n  ips: [\"1.1.1.1\", \"300.1.1.1\", \"10.0.0.0/40\"]\n  domains: [\"ok.com\", \"*.\", \"a..b\", \"1.2.3.4\"]\n",
        );
        assert_eq!(
            errs,
            [
                "policy.yaml: allowlist.ips[1] \"300.1.1.1\": not an IPv4 or IPv6 address (expected e.g. 10.0.0.0/8 or 2001:db8::/32)",
                "policy.yaml: allowlist.ips[2] \"10.0.0.0/40\": prefix length must be 0..=32",
                "policy.yaml: allowlist.domains[1] \"*.\": empty name",
                "policy.yaml: allowlist.domains[2] \"a..b\": empty label",
                "policy.yaml: allowlist.domains[3] \"1.2.3.4\": an IP address is not a domain (put it under allowlist.ips)",
            ]
        );
    }

    #[test]
    fn unknown_keys_refused() {
        let e = errors("allowlist:\n  domains: [a.com]\ndenylist:\n  domains: [b.com]\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("unknown field `denylist`"), "{}", e[0]);
        let e = errors("allowlist:\n  domain: [a.com]\n");
        assert!(e[0].contains("unknown field `domain`"), "{}", e[0]);
        let e = errors("allowlist:\n  ips: 1.1.1.1\n");
        assert!(e[0].contains("invalid type"), "{}", e[0]);
        let e = errors("allowlist: [\n");
        assert!(e[0].starts_with("policy.yaml: "), "{}", e[0]);
    }

    #[test]
    fn empty_and_partial_policies() {
        for text in ["", "# nothing\n", "allowlist: {}\n", "allowlist:\n  ips: []\n  domains: []\n"] {
            let p = yaml(text).unwrap();
            assert!(p.is_empty(), "{text:?}");
            assert_eq!(p.warnings().len(), 1, "{text:?}");
            assert!(!p
                .decide(Query { name: Some("a.com"), ip: Some("1.1.1.1".parse().unwrap()), port: None })
                .allowed());
        }
        let p = yaml("allowlist:\n  domains: [a.com]\n").unwrap();
        assert!(p.allows_name("a.com") && p.ips().is_empty());
        let p = yaml("allowlist:\n  ips: [\"2001:db8::/32\"]\n").unwrap();
        assert!(p.allows_ip("2001:db8::5".parse().unwrap()) && p.names().is_empty());
    }

    #[test]
    fn host_bits_warn() {
        let p = yaml("allowlist:\n  ips: [\"10.1.2.3/16\"]\n").unwrap();
        assert_eq!(
            p.warnings(),
            ["policy.yaml: allowlist.ips[0] \"10.1.2.3/16\": host bits set, using 10.1.0.0/16"]
        );
    }

    /// g0efilter's precedence (issue 16, item 2): any ALLOWLIST_* variable
    /// makes the environment the whole policy; the file is not read, so
    /// its other list does not sneak in (the bundled 192.168.0.0/16 used
    /// to stay allowed on every port when only ALLOWLIST_DOMAINS was set).
    #[test]
    fn env_lists_replace_the_file_entirely() {
        let raw = || parse_yaml(BUNDLED, "policy.yaml").unwrap();
        let env = EnvLists { ips: Some(vec!["10.9.9.9".into()]), domains: None, mode: None };
        let p = compile_raw(raw(), "policy.yaml", &env).unwrap();
        assert!(p.allows_ip("10.9.9.9".parse().unwrap()));
        assert!(!p.allows_ip("1.1.1.1".parse().unwrap()), "file ips must not be read");
        assert!(!p.allows_name("github.com"), "file domains must not be read either");

        let env = EnvLists { ips: None, domains: Some(vec!["example.org".into()]), mode: None };
        let p = compile_raw(raw(), "policy.yaml", &env).unwrap();
        assert!(p.allows_name("example.org") && !p.allows_name("github.com"));
        assert!(!p.allows_ip("192.168.7.7".parse().unwrap()), "no private /16 from the file");
        assert!(p.ips().is_empty());

        // An empty env list is still "set": an empty policy.
        let env = EnvLists { ips: Some(vec![]), domains: Some(vec![]), mode: None };
        assert!(compile_raw(raw(), "policy.yaml", &env).unwrap().is_empty());

        // Env errors name the variable.
        let env = EnvLists { ips: Some(vec!["nope".into()]), domains: Some(vec!["x y".into()]), mode: None };
        let e = compile_raw(raw(), "policy.yaml", &env).unwrap_err();
        let shown: Vec<String> = e.0.iter().map(ToString::to_string).collect();
        assert!(shown[0].starts_with("ALLOWLIST_IPS: [0] \"nope\""), "{}", shown[0]);
        assert!(shown[1].starts_with("ALLOWLIST_DOMAINS: [0] \"x y\""), "{}", shown[1]);
    }

    #[test]
    fn empty_entries_are_skipped_with_a_warning() {
        let p = yaml("allowlist:\n  ips: [\"\", \"10.0.0.1\"]\n  domains: [\"a.test\", \" \"]\n").unwrap();
        assert!(p.allows_ip("10.0.0.1".parse().unwrap()) && p.allows_name("a.test"));
        assert_eq!(
            p.warnings(),
            [
                "policy.yaml: allowlist.ips[0] \"\": empty entry skipped",
                "policy.yaml: allowlist.domains[1] \" \": empty entry skipped"
            ]
        );
    }

    #[test]
    fn missing_file() {
        let path = Path::new("/nonexistent/egret/policy.yaml");
        let e = load(path, &EnvLists::default()).unwrap_err().to_string();
        for needle in
            ["no such file", "POLICY_PATH", "ALLOWLIST_IPS", "ALLOWLIST_DOMAINS", path.to_str().unwrap()]
        {
            assert!(e.contains(needle), "{needle:?} missing from: {e}");
        }
        // One env list is a whole policy; no file needed.
        let env = EnvLists { ips: Some(vec!["1.1.1.1".into()]), domains: None, mode: None };
        let p = load(path, &env).unwrap();
        assert!(p.allows_ip("1.1.1.1".parse().unwrap()) && p.names().is_empty());
        assert!(p.warnings().is_empty(), "no file to ignore: {:?}", p.warnings());
        let env =
            EnvLists { ips: Some(vec!["1.1.1.1".into()]), domains: Some(vec!["a.com".into()]), mode: None };
        assert!(load(path, &env).unwrap().allows_name("a.com"));
        // With the file present, the start-up log says it is not read.
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy.yaml");
        let env = EnvLists { ips: None, domains: Some(vec!["a.com".into()]), mode: None };
        let p = load(&here, &env).unwrap();
        assert!(!p.allows_name("github.com"));
        assert!(p.warnings()[0].contains("ALLOWLIST_DOMAINS set: the policy file"), "{:?}", p.warnings());
    }

    #[test]
    fn a_denylist_is_refused_and_says_why() {
        let e = errors("allowlist:\n  domains: [a.com]\ndenylist:\n  domains: [b.com]\n");
        assert!(e[0].contains("would let through what it was meant to block"), "{}", e[0]);
    }

    /// `ENFORCE` and the file's `enforce:`: the environment wins; a value
    /// with no meaning is an error, never a quiet "enforce".
    #[test]
    fn enforce_mode_from_env_and_file() {
        assert_eq!(yaml("allowlist: {}\n").unwrap().mode(), Mode::Enforce);
        assert!(yaml("enforce: audit\nallowlist: {}\n").unwrap().audit());
        assert!(!yaml("enforce: true\nallowlist: {}\n").unwrap().audit());
        assert!(yaml("enforce: false\n").unwrap().audit());
        let e = errors("enforce: sometimes\nallowlist:\n  ips: [nope]\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].starts_with("policy.yaml: enforce \"sometimes\": expected audit"), "{e:?}");
        let raw = || parse_yaml("enforce: audit\n", "policy.yaml").unwrap();
        let env = EnvLists { mode: Some(Mode::Enforce), ..EnvLists::default() };
        assert!(!compile_raw(raw(), "policy.yaml", &env).unwrap().audit(), "ENFORCE wins over the file");
        let env =
            EnvLists { domains: Some(vec!["a.test".into()]), mode: Some(Mode::Audit), ..EnvLists::default() };
        assert!(compile_raw(raw(), "policy.yaml", &env).unwrap().audit());
        for (s, m) in [
            ("audit", Mode::Audit),
            ("AUDIT", Mode::Audit),
            ("0", Mode::Audit),
            ("true", Mode::Enforce),
            ("enforce", Mode::Enforce),
        ] {
            assert_eq!(Mode::parse(s), Ok(m), "{s}");
        }
        assert!(Mode::parse("log").is_err());
        // A policy in audit mode still decides as in enforcement.
        let p = yaml("enforce: audit\nallowlist:\n  domains: [a.test]\n").unwrap();
        assert!(!p.decide(Query { name: Some("b.test"), ip: None, port: None }).allowed());
        assert!(p.to_string().starts_with("enforce: audit\n"), "{p}");
    }

    /// Ports and protocols on address entries: in the file and the env
    /// list, decided with the destination's port, shown by `egret check`,
    /// refused with their location when malformed.
    #[test]
    fn port_entries() {
        let p = yaml("allowlist:\n  ips: [\"tcp/10.0.0.5:5432\", \"udp/10.0.0.0/8:53\", \"[2001:db8::1]:443\", \"tcp/10.0.0.5:8000-8100\", \"192.168.1.1\"]\n").unwrap();
        let q =
            |ip: &str, port: Option<(Proto, u16)>| Query { name: None, ip: Some(ip.parse().unwrap()), port };
        type Case<'a> = (&'a str, Option<(Proto, u16)>, Option<&'a str>);
        let cases: &[Case] = &[
            ("10.0.0.5", Some((Proto::Tcp, 5432)), Some("ip tcp/10.0.0.5:5432")),
            ("10.0.0.5", Some((Proto::Udp, 5432)), None),
            ("10.0.0.5", Some((Proto::Tcp, 8050)), Some("ip tcp/10.0.0.5:8000-8100")),
            ("10.0.0.5", Some((Proto::Tcp, 8101)), None),
            ("10.9.9.9", Some((Proto::Udp, 53)), Some("ip udp/10.0.0.0/8:53")),
            ("2001:db8::1", Some((Proto::Udp, 443)), Some("ip udp/[2001:db8::1]:443")),
            ("2001:db8::1", Some((Proto::Tcp, 80)), None),
            ("10.0.0.5", None, None),
            ("192.168.1.1", Some((Proto::Udp, 9)), Some("ip 192.168.1.1/32")),
        ];
        for (ip, port, rule) in cases {
            let d = p.decide(q(ip, *port));
            assert_eq!(d.rule.map(|r| r.to_string()).as_deref(), *rule, "{ip} {port:?}");
        }
        assert!(p.allows_port("10.0.0.5".parse().unwrap(), Proto::Tcp, 5432));
        assert!(!p.allows_ip("10.0.0.5".parse().unwrap()), "a port entry is not a whole address");
        assert!(p.to_string().contains("    - \"tcp/10.0.0.5:5432\"\n"), "{p}");
        let e = errors("allowlist:\n  ips: [\"sctp/10.0.0.5:1\", \"tcp/10.0.0.5:0\", \"[::1]\"]\n");
        assert_eq!(e.len(), 3, "{e:?}");
        assert!(
            e[0].starts_with("policy.yaml: allowlist.ips[0] \"sctp/10.0.0.5:1\": unknown protocol"),
            "{e:?}"
        );
        let env = EnvLists { ips: Some(vec!["tcp/10.0.0.5:22".into()]), ..EnvLists::default() };
        let p = compile_env(&env).unwrap();
        assert!(p.allows_port("10.0.0.5".parse().unwrap(), Proto::Tcp, 22) && !p.is_empty());
    }

    #[test]
    fn decide_table() {
        let p = yaml(BUNDLED).unwrap();
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        // (name, ip, verdict, reason, rule)
        type Case<'a> = (Option<&'a str>, Option<IpAddr>, Verdict, Reason, Option<&'a str>);
        let cases: &[Case] = &[
            (
                Some("github.com"),
                ip("140.82.1.1"),
                Verdict::Allow,
                Reason::DomainAllowed,
                Some("domain github.com"),
            ),
            (Some("GitHub.com."), None, Verdict::Allow, Reason::DomainAllowed, Some("domain github.com")),
            (Some("api.github.com"), None, Verdict::Deny, Reason::DomainNotAllowed, None),
            (
                Some("x.y.alpinelinux.org"),
                None,
                Verdict::Allow,
                Reason::DomainAllowed,
                Some("domain *.alpinelinux.org"),
            ),
            (Some("alpinelinux.org"), None, Verdict::Deny, Reason::DomainNotAllowed, None),
            (Some("evil.com"), ip("1.1.1.1"), Verdict::Allow, Reason::IpAllowed, Some("ip 1.1.1.1/32")),
            (None, ip("192.168.3.4"), Verdict::Allow, Reason::IpAllowed, Some("ip 192.168.0.0/16")),
            (None, ip("::ffff:192.168.3.4"), Verdict::Allow, Reason::IpAllowed, Some("ip 192.168.0.0/16")),
            (None, ip("8.8.8.8"), Verdict::Deny, Reason::IpNotAllowed, None),
            (None, None, Verdict::Deny, Reason::IpNotAllowed, None),
            (Some("1.1.1.1"), ip("8.8.8.8"), Verdict::Deny, Reason::InvalidName, None),
            (Some("git hub.com"), None, Verdict::Deny, Reason::InvalidName, None),
        ];
        for (name, ip, verdict, reason, rule) in cases {
            let d = p.decide(Query { name: *name, ip: *ip, port: None });
            assert_eq!((d.verdict, d.reason), (*verdict, *reason), "{name:?} {ip:?}");
            assert_eq!(d.rule.map(|r| r.to_string()).as_deref(), *rule, "{name:?} {ip:?}");
        }
    }

    #[test]
    fn display_is_the_effective_allowlist() {
        let p = yaml("allowlist:\n  ips: [\"10.0.0.0/25\", \"10.0.0.128/25\", \"::1\"]\n  domains: [\"B.com\", \"*.a.com\", \"a.com\"]\n").unwrap();
        assert_eq!(
            p.to_string(),
            "allowlist:\n  ips:\n    - 10.0.0.0/24\n    - ::1/128\n  domains:\n    - \"a.com\"\n    - \"*.a.com\"\n    - \"b.com\"\n"
        );
    }
}
