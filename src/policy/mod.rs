//! The policy: `policy.yaml` (an allowlist, a denylist, the default
//! action) or the `ALLOWLIST_*` / `DENYLIST_*` / `DEFAULT_ACTION`
//! environment, compiled into a [`Policy`] that can only exist valid, and
//! the one decision function every component asks.
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
pub use port::{NamePort, PortEntry, PortSet, Proto};

/// `policy.yaml` as written. Unknown keys are an error, so a misspelt
/// list is never silently ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default)]
    pub allowlist: RawAllowlist,
    /// The same forms as the allowlist; refused unless `default_action`
    /// says how the lists go together.
    #[serde(default)]
    pub denylist: Option<RawAllowlist>,
    /// `allow` or `deny` (the default); `DEFAULT_ACTION` wins over it.
    #[serde(default)]
    pub default_action: Option<serde_yaml::Value>,
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
    /// A remote unblock (`ENABLE_REMOTE_UNBLOCK`): an extra allowlist
    /// entry from the dashboard, named `unblock #ID`.
    Unblock(u64),
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

/// One list's compiled entries: the allowlist or the denylist.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Lists {
    pub ips: IpSet,
    /// Address entries with a protocol and/or ports.
    pub ports: PortSet,
    pub names: NameSet,
    /// Names with a protocol and ports (`tcp/db.example.com:5432`), sorted.
    pub name_ports: Vec<NamePort>,
}

impl Lists {
    pub fn is_empty(&self) -> bool {
        self.ips.is_empty() && self.names.is_empty() && self.ports.is_empty() && self.name_ports.is_empty()
    }

    /// The entry that covers `ip` (on `port`, for port entries).
    fn find_addr(&self, ip: IpAddr, port: Option<(Proto, u16)>) -> Option<Rule> {
        if let Some(block) = self.ips.find(ip) {
            return Some(Rule::Ip(block));
        }
        let (proto, port) = port?;
        self.ports.find(ip, proto, port).map(Rule::Port)
    }
}

/// Which list an entry is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum List {
    Allow,
    Deny,
}

impl List {
    pub fn key(self) -> &'static str {
        match self {
            List::Allow => "allowlist",
            List::Deny => "denylist",
        }
    }

    fn env(self, domains: bool) -> &'static str {
        match (self, domains) {
            (List::Allow, false) => "ALLOWLIST_IPS",
            (List::Allow, true) => "ALLOWLIST_DOMAINS",
            (List::Deny, false) => "DENYLIST_IPS",
            (List::Deny, true) => "DENYLIST_DOMAINS",
        }
    }
}

/// `default_action` / `DEFAULT_ACTION`: what happens to traffic no list
/// names (g0efilter's names and default).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum DefaultAction {
    /// Only the allowlist passes; a denylist closes parts of it.
    #[default]
    Deny,
    /// Everything passes but the denylist; an allowlist re-opens parts
    /// of it.
    Allow,
}

impl DefaultAction {
    pub fn parse(s: &str) -> Result<DefaultAction, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "deny" | "block" => Ok(DefaultAction::Deny),
            "allow" => Ok(DefaultAction::Allow),
            _ => Err("allow or deny (the default)".into()),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            DefaultAction::Deny => "deny",
            DefaultAction::Allow => "allow",
        }
    }

    /// The list that decides where both name a destination: the one
    /// whose action is the default's (the other list holds its
    /// exceptions).
    pub fn winner(self) -> List {
        match self {
            DefaultAction::Deny => List::Deny,
            DefaultAction::Allow => List::Allow,
        }
    }
}

/// What [`Policy::compile_spec`] compiles: every list from wherever it
/// came, and the default action when one was said.
#[derive(Debug, Clone, Default)]
pub struct Spec<'a> {
    pub allow_ips: &'a [Source<'a>],
    pub allow_domains: &'a [Source<'a>],
    pub deny_ips: &'a [Source<'a>],
    pub deny_domains: &'a [Source<'a>],
    /// `None`: not said (the default, deny); `Err`: a value with no
    /// meaning, reported with the other problems.
    pub default: Option<Result<DefaultAction, PolicyError>>,
    /// The file or `DEFAULT_ACTION`, for a problem with the lists'
    /// combination.
    pub default_source: &'a str,
}

/// The compiled policy: the default action and both lists. Names are
/// normalised and hashed by suffix, IP ranges merged; building one is the
/// only way to get one, and that validates every entry.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Policy {
    default: DefaultAction,
    allow: Lists,
    deny: Lists,
    /// Enforce (the default) or audit: every component decides the same
    /// way in both, and in audit lets through what it would have refused.
    mode: Mode,
    /// Non-fatal remarks found while compiling (host bits cleared,
    /// duplicates, an empty policy), for the caller to log.
    warnings: Vec<String>,
    /// The remote unblocks compiled into the allowlist (id, entry), so
    /// `egret check --explain` can name them.
    unblocks: Vec<(u64, String)>,
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

impl Verdict {
    /// The list whose entries give this verdict.
    fn list(self) -> List {
        match self {
            Verdict::Allow => List::Allow,
            Verdict::Deny => List::Deny,
        }
    }
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
    /// A denylist entry refused the name or address (and, with
    /// `default_action: allow`, no allowlist entry re-opened it).
    Denylisted,
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
            Reason::Denylisted => "denylisted",
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
    /// The entry that decided; `None` when the default did.
    pub rule: Option<Rule>,
    /// The list `rule` is in.
    pub list: Option<List>,
    /// The normalised name, when the query had a valid one.
    pub name: Option<String>,
}

impl Decision {
    pub fn allowed(&self) -> bool {
        self.verdict == Verdict::Allow
    }
}

impl Policy {
    /// Compiles an allowlist alone (`default_action: deny`, no
    /// denylist): the file lists or the environment lists. Every problem
    /// is reported, not just the first.
    pub fn compile(ips: &[Source<'_>], domains: &[Source<'_>]) -> Result<Policy, PolicyErrors> {
        Policy::compile_spec(&Spec { allow_ips: ips, allow_domains: domains, ..Spec::default() })
    }

    /// Compiles both lists and the default action. Every problem of
    /// every list is reported at once; both lists together need an
    /// explicit default (it says which list wins), and a denylist needs
    /// `default_action: allow` (under the default deny it would block
    /// what is blocked already).
    pub fn compile_spec(spec: &Spec<'_>) -> Result<Policy, PolicyErrors> {
        let mut errors = Vec::new();
        let mut warnings = Vec::new();
        let allow =
            compile_lists(List::Allow, spec.allow_ips, spec.allow_domains, &mut errors, &mut warnings);
        let deny = compile_lists(List::Deny, spec.deny_ips, spec.deny_domains, &mut errors, &mut warnings);
        let default = match &spec.default {
            Some(Ok(d)) => *d,
            Some(Err(e)) => {
                errors.insert(0, e.clone());
                DefaultAction::Deny
            }
            None => DefaultAction::Deny,
        };
        // Whether a list was given (an entry that is not blank), whatever
        // its entries' problems: so the combination is reported with them.
        let given = |srcs: &[&[Source<'_>]]| {
            srcs.iter().any(|l| l.iter().any(|s| s.entries.iter().any(|e| !e.trim().is_empty())))
        };
        let has_allow = given(&[spec.allow_ips, spec.allow_domains]);
        let has_deny = given(&[spec.deny_ips, spec.deny_domains]);
        let said = spec.default.is_some();
        let source = spec.default_source;
        if has_allow && has_deny && !said {
            errors.push(whole_error_one(
                source,
                "default_action",
                "an allowlist and a denylist together need default_action (DEFAULT_ACTION) to say which wins: \
                 `deny` keeps the allowlist as the policy and the denylist closes parts of it (deny wins); \
                 `allow` lets everything pass but the denylist and the allowlist re-opens parts of it \
                 (allow wins)",
            ));
        } else if has_deny && !said {
            errors.push(whole_error_one(
                source,
                "default_action",
                "a denylist needs default_action: allow (DEFAULT_ACTION=allow): under the default, deny, \
                 everything it lists is blocked already and so is everything else",
            ));
        }
        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        match default {
            DefaultAction::Deny if allow.is_empty() => {
                warnings.push("the policy allows nothing: all egress will be blocked".to_owned())
            }
            DefaultAction::Allow if deny.is_empty() => warnings
                .push("default_action is allow and the denylist is empty: all egress will pass".to_owned()),
            _ => {}
        }
        Ok(Policy { default, allow, deny, mode: Mode::Enforce, warnings, unblocks: Vec::new() })
    }

    /// Records which allowlist entries came from remote unblocks.
    fn with_unblocks(mut self, overlay: &[(u64, Vec<String>)]) -> Policy {
        self.unblocks =
            overlay.iter().flat_map(|(id, es)| es.iter().map(move |e| (*id, e.trim().to_owned()))).collect();
        self
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

    /// The one decision. The address first: a listed address decides
    /// whatever the name (the kernel decides it before any name is seen).
    /// Then the name. Where both lists name the destination, the list
    /// whose action is the default's wins ([`DefaultAction::winner`]):
    /// with `deny` the denylist closes parts of the allowlist, with
    /// `allow` the allowlist re-opens parts of the denylist. A name that
    /// does not normalise is refused in both (nothing can be known of it).
    /// Anti-spoofing (does the name resolve to the address?) is the
    /// proxies' job on top of this.
    pub fn decide(&self, q: Query<'_>) -> Decision {
        let name_of = || q.name.and_then(|n| normalize(n).ok());
        if let Some(ip) = q.ip {
            let allowed = self.allow.find_addr(ip, q.port);
            // A denied IPv4 address is denied in its IPv6 translated forms
            // too (NAT64, SIIT): a translator connects to it. The rule
            // named is the IPv4 entry.
            let denied = self.deny.find_addr(ip, q.port).or_else(|| match ip {
                IpAddr::V6(a) => self.deny.find_addr(IpAddr::V4(cidr::translated_v4(a)?), q.port),
                IpAddr::V4(_) => None,
            });
            let (first, second) = match self.default {
                DefaultAction::Deny => ((denied, Verdict::Deny), (allowed, Verdict::Allow)),
                DefaultAction::Allow => ((allowed, Verdict::Allow), (denied, Verdict::Deny)),
            };
            for (rule, verdict) in [first, second] {
                if let Some(rule) = rule {
                    let reason =
                        if verdict == Verdict::Allow { Reason::IpAllowed } else { Reason::Denylisted };
                    return Decision {
                        verdict,
                        reason,
                        rule: Some(rule),
                        list: Some(verdict.list()),
                        name: name_of(),
                    };
                }
            }
        }
        let Some(raw) = q.name else {
            return match self.default {
                DefaultAction::Deny => deny(Reason::IpNotAllowed, None),
                DefaultAction::Allow => by_default(Reason::IpAllowed, None),
            };
        };
        let Ok(name) = normalize(raw) else {
            return deny(Reason::InvalidName, None);
        };
        let allowed = self.allow.names.find(&name).map(|p| (p, Verdict::Allow));
        let denied = self.deny.names.find(&name).map(|p| (p, Verdict::Deny));
        let hit = match self.default {
            DefaultAction::Deny => denied.or(allowed),
            DefaultAction::Allow => allowed.or(denied),
        };
        match hit {
            Some((p, verdict)) => Decision {
                verdict,
                reason: if verdict == Verdict::Allow { Reason::DomainAllowed } else { Reason::Denylisted },
                rule: Some(Rule::Domain(p)),
                list: Some(verdict.list()),
                name: Some(name),
            },
            None => match self.default {
                DefaultAction::Deny => deny(Reason::DomainNotAllowed, Some(name)),
                DefaultAction::Allow => by_default(Reason::DomainAllowed, Some(name)),
            },
        }
    }

    /// Whether an already normalised name is allowed (the hot path for
    /// callers that normalised once themselves).
    pub fn allows_name(&self, normalized: &str) -> bool {
        match self.default {
            DefaultAction::Deny => {
                self.allow.names.contains(normalized) && !self.deny.names.contains(normalized)
            }
            DefaultAction::Allow => {
                self.allow.names.contains(normalized) || !self.deny.names.contains(normalized)
            }
        }
    }

    /// Whether `ip` is open on every port by an allowlist entry that
    /// no denylist entry overrides.
    pub fn allows_ip(&self, ip: IpAddr) -> bool {
        let d = self.decide(Query { name: None, ip: Some(ip), port: None });
        d.allowed() && matches!(d.rule, Some(Rule::Ip(_)))
    }

    /// The allowlist's address ranges.
    pub fn ips(&self) -> &IpSet {
        &self.allow.ips
    }

    /// The allowlist's address entries with a protocol and ports.
    pub fn ports(&self) -> &PortSet {
        &self.allow.ports
    }

    /// Whether `ip` is reachable on `proto` port `port`.
    pub fn allows_port(&self, ip: IpAddr, proto: Proto, port: u16) -> bool {
        let d = self.decide(Query { name: None, ip: Some(ip), port: Some((proto, port)) });
        d.allowed() && d.rule.is_some()
    }

    /// The allowlist's name patterns.
    pub fn names(&self) -> &NameSet {
        &self.allow.names
    }

    /// Every name passes unless a list refuses it: `*` allowed, or the
    /// default allow (an IP literal as a name is then judged by address).
    pub fn allows_any_name(&self) -> bool {
        match self.default {
            DefaultAction::Deny => self.allow.names.matches_everything() && self.deny.names.is_empty(),
            DefaultAction::Allow => true,
        }
    }

    pub fn default_action(&self) -> DefaultAction {
        self.default
    }

    /// The allowlist's names with ports.
    pub fn name_ports(&self) -> &[NamePort] {
        &self.allow.name_ports
    }

    /// The ports an already normalised `name` opens on its addresses:
    /// its entries with ports, unless the denylist wins over them (the
    /// default deny, a denylist entry matching the name).
    pub fn ports_of_name(&self, name: &str) -> Vec<&NamePort> {
        if self.default == DefaultAction::Deny && self.deny.names.contains(name) {
            return Vec::new();
        }
        self.allow.name_ports.iter().filter(|np| np.name == name).collect()
    }

    /// The allowlist.
    pub fn allowlist(&self) -> &Lists {
        &self.allow
    }

    /// The denylist.
    pub fn denylist(&self) -> &Lists {
        &self.deny
    }

    /// The remote unblocks in the allowlist (id, entry as written).
    pub fn unblocks(&self) -> &[(u64, String)] {
        &self.unblocks
    }

    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Nothing listed at all (with the default deny: nothing passes).
    pub fn is_empty(&self) -> bool {
        self.allow.is_empty() && self.deny.is_empty()
    }
}

impl fmt::Display for Policy {
    /// The effective policy, as `egret check` prints it (YAML that
    /// compiles to the same policy). The default action and which list
    /// wins are said when there is a denylist or the default is allow.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.audit() {
            writeln!(f, "enforce: audit")?;
        }
        let both = self.default == DefaultAction::Allow || !self.deny.is_empty();
        if both {
            let says = match self.default {
                DefaultAction::Deny => "only the allowlist passes; where both lists match, the denylist wins",
                DefaultAction::Allow => {
                    "everything passes but the denylist; where both lists match, the allowlist wins"
                }
            };
            writeln!(f, "default_action: {}  # {says}", self.default.as_str())?;
        }
        write_lists(f, List::Allow, &self.allow)?;
        if both {
            write_lists(f, List::Deny, &self.deny)?;
        }
        Ok(())
    }
}

fn write_lists(f: &mut fmt::Formatter<'_>, list: List, l: &Lists) -> fmt::Result {
    let cidrs = l.ips.cidrs();
    let ports = l.ports.entries();
    writeln!(f, "{}:", list.key())?;
    writeln!(f, "  ips:{}", if cidrs.is_empty() && ports.is_empty() { " []" } else { "" })?;
    for c in &cidrs {
        writeln!(f, "    - {c}")?;
    }
    for p in &ports {
        writeln!(f, "    - \"{p}\"")?;
    }
    let pats = l.names.patterns();
    let empty = pats.is_empty() && l.name_ports.is_empty();
    writeln!(f, "  domains:{}", if empty { " []" } else { "" })?;
    for np in &l.name_ports {
        writeln!(f, "    - \"{np}\"")?;
    }
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

/// Compiles one list's address and name entries, pushing every problem
/// and remark. Risk warnings are for the allowlist only: a wide denylist
/// entry refuses much, it opens nothing.
fn compile_lists(
    list: List,
    ips: &[Source<'_>],
    domains: &[Source<'_>],
    errors: &mut Vec<PolicyError>,
    warnings: &mut Vec<String>,
) -> Lists {
    let mut cidrs = Vec::new();
    let mut port_entries = Vec::new();
    let lint = list == List::Allow;
    let at = |src: &Source<'_>, key: &str, i: usize| location(&src.origin, list, key, i);
    // g0efilter skips empty entries (`- ""`); so does egret, saying so.
    let skip_empty = |src: &Source<'_>, key: &str, i: usize, entry: &str, warnings: &mut Vec<String>| {
        let empty = entry.trim().is_empty();
        if empty {
            warnings.push(format!(
                "{}: {} {entry:?}: empty entry skipped",
                source_name(&src.origin),
                at(src, key, i)
            ));
        }
        empty
    };
    for src in ips {
        for (i, entry) in src.entries.iter().enumerate() {
            if skip_empty(src, "ips", i, entry, warnings) {
                continue;
            }
            let host_bits_warning = |c: &dyn fmt::Display, warnings: &mut Vec<String>| {
                warnings.push(format!(
                    "{}: {} {entry:?}: host bits set, using {c}",
                    source_name(&src.origin),
                    at(src, "ips", i),
                ))
            };
            // `::ffff:a.b.c.d` is a.b.c.d on the wire: parsed as it (so
            // it matches), said so (so `egret check` is not a surprise).
            let mapped_spelling = entry.contains('[') || entry.matches(':').count() > 1;
            let mapped_note = |c: &dyn fmt::Display, warnings: &mut Vec<String>| {
                warnings.push(format!(
                    "{}: {} {entry:?}: an IPv4-mapped address is its IPv4 address on the wire, using {c}",
                    source_name(&src.origin),
                    at(src, "ips", i),
                ))
            };
            let risky = |c: &Cidr, warnings: &mut Vec<String>| {
                if let Some(why) = lint::risky_cidr(c).filter(|_| lint) {
                    warnings.push(format!(
                        "{}: {} {entry:?}: {why}",
                        source_name(&src.origin),
                        at(src, "ips", i)
                    ));
                }
            };
            let error = |e: String| PolicyError {
                source: source_name(&src.origin),
                location: at(src, "ips", i),
                entry: entry.to_owned(),
                reason: e,
            };
            match Cidr::parse(entry) {
                Ok((c, host_bits)) => {
                    if host_bits {
                        host_bits_warning(&c, warnings);
                    }
                    if c.addr.is_ipv4() && mapped_spelling {
                        mapped_note(&c, warnings);
                    }
                    risky(&c, warnings);
                    cidrs.push(c);
                }
                Err(_) if port::is_port_entry(entry) => match port::parse(entry) {
                    Ok((p, host_bits)) => {
                        if host_bits {
                            host_bits_warning(&p, warnings);
                        }
                        if p.cidr.addr.is_ipv4() && mapped_spelling {
                            mapped_note(&p, warnings);
                        }
                        risky(&p.cidr, warnings);
                        port_entries.push(p);
                    }
                    Err(_) if port::parse_name(entry).is_ok() => errors.push(error(format!(
                        "a name with ports, not an address: put it under {}.domains",
                        list.key()
                    ))),
                    Err(e) => errors.push(error(e.to_string())),
                },
                Err(e) => errors.push(error(e.to_string())),
            }
        }
    }
    let mut names = NameSet::default();
    let mut name_ports = Vec::new();
    for src in domains {
        for (i, entry) in src.entries.iter().enumerate() {
            if skip_empty(src, "domains", i, entry, warnings) {
                continue;
            }
            if port::is_name_port_entry(entry) {
                let parsed = match list {
                    List::Allow => port::parse_name(entry),
                    List::Deny => Err("a denylist name takes no ports (deny the name, or its addresses \
                                       with ports under denylist.ips)"
                        .to_owned()),
                };
                match parsed {
                    Ok(np) => name_ports.push(np),
                    Err(reason) => errors.push(PolicyError {
                        source: source_name(&src.origin),
                        location: at(src, "domains", i),
                        entry: entry.to_owned(),
                        reason,
                    }),
                }
                continue;
            }
            match Pattern::parse(entry) {
                Ok(p) => {
                    if let Some(why) = lint::risky_pattern(&p).filter(|_| lint) {
                        warnings.push(format!(
                            "{}: {} {entry:?}: {why}",
                            source_name(&src.origin),
                            at(src, "domains", i)
                        ));
                    }
                    names.insert(p)
                }
                Err(e) => errors.push(PolicyError {
                    source: source_name(&src.origin),
                    location: at(src, "domains", i),
                    entry: entry.to_owned(),
                    reason: e.to_string(),
                }),
            }
        }
    }
    if let Err(e) = names.prepare() {
        let source = domains.first().map(|s| source_name(&s.origin)).unwrap_or_default();
        errors.push(PolicyError {
            source,
            location: format!("{}.domains", list.key()),
            entry: String::new(),
            reason: e.to_string(),
        });
    }
    name_ports.sort();
    name_ports.dedup();
    Lists { ips: IpSet::from_cidrs(&cidrs), ports: PortSet::from_entries(&port_entries), names, name_ports }
}

fn deny(reason: Reason, name: Option<String>) -> Decision {
    Decision { verdict: Verdict::Deny, reason, rule: None, list: None, name }
}

/// Allowed by `default_action: allow`: no entry decided.
fn by_default(reason: Reason, name: Option<String>) -> Decision {
    Decision { verdict: Verdict::Allow, reason, rule: None, list: None, name }
}

fn source_name(o: &Origin) -> String {
    match o {
        Origin::File(p) => p.clone(),
        Origin::Env(v) => (*v).to_owned(),
        Origin::Unblock(id) => format!("unblock #{id}"),
    }
}

fn location(o: &Origin, list: List, key: &str, i: usize) -> String {
    match o {
        Origin::File(_) => format!("{}.{key}[{i}]", list.key()),
        Origin::Env(_) => format!("[{i}]"),
        Origin::Unblock(_) => "entry".to_owned(),
    }
}

/// Whether an entry is an address entry (`ips`: an address, a CIDR, or
/// either with a protocol and ports) rather than a name entry.
pub fn is_address_entry(entry: &str) -> bool {
    Cidr::parse(entry).is_ok() || (port::is_port_entry(entry) && port::parse(entry).is_ok())
}

/// The remote unblocks as allowlist sources: address entries and name
/// entries, each named `unblock #ID`.
fn overlay_sources(overlay: &[(u64, Vec<String>)]) -> (Vec<Source<'_>>, Vec<Source<'_>>) {
    let (mut ips, mut domains) = (Vec::new(), Vec::new());
    for (id, one) in overlay {
        let src = Source { origin: Origin::Unblock(*id), entries: one.as_slice() };
        if one.first().is_some_and(|e| is_address_entry(e)) {
            ips.push(src);
        } else {
            domains.push(src);
        }
    }
    (ips, domains)
}

/// A problem with how the lists go together, reported at `location`.
fn whole_error_one(source: &str, location: &str, reason: &str) -> PolicyError {
    PolicyError {
        source: source.to_owned(),
        location: location.to_owned(),
        entry: String::new(),
        reason: reason.to_owned(),
    }
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
    if msg.contains("unknown field") {
        format!(
            "{msg} (egret knows default_action, enforce, and ips and domains under allowlist and denylist)"
        )
    } else {
        msg
    }
}

/// Environment lists that override the file, and the modes that win
/// over it.
#[derive(Debug, Clone, Default)]
pub struct EnvLists {
    pub ips: Option<Vec<String>>,
    pub domains: Option<Vec<String>>,
    /// `DENYLIST_IPS` / `DENYLIST_DOMAINS`.
    pub deny_ips: Option<Vec<String>>,
    pub deny_domains: Option<Vec<String>>,
    /// `ENFORCE`, when set: wins over the file's `enforce:`.
    pub mode: Option<Mode>,
    /// `DEFAULT_ACTION`, when set: wins over the file's `default_action:`.
    pub default: Option<DefaultAction>,
    /// Remote unblocks (`ENABLE_REMOTE_UNBLOCK`): extra allowlist entries,
    /// one each, by unblock id, on top of the file or the environment.
    pub overlay: Vec<(u64, Vec<String>)>,
}

impl EnvLists {
    /// The list variables that are set, in their documented order.
    fn set(&self) -> Vec<&'static str> {
        [
            ("ALLOWLIST_IPS", &self.ips),
            ("ALLOWLIST_DOMAINS", &self.domains),
            ("DENYLIST_IPS", &self.deny_ips),
            ("DENYLIST_DOMAINS", &self.deny_domains),
        ]
        .into_iter()
        .filter(|(_, v)| v.is_some())
        .map(|(k, _)| k)
        .collect()
    }

    /// `DEFAULT_ACTION` as the compiler takes it.
    fn default_action(&self) -> Option<Result<DefaultAction, PolicyError>> {
        self.default.map(Ok)
    }
}

/// Reads and compiles the policy, with g0efilter's precedence: when any
/// `ALLOWLIST_*` or `DENYLIST_*` list is set, the environment is the whole
/// policy and the file at `path` is not read at all (a list that is not
/// set is empty); otherwise the file is the policy, and a missing file is
/// an error, never an empty or a default allowlist.
pub fn load(path: &Path, env: &EnvLists) -> Result<Policy, PolicyErrors> {
    let shown = path.display().to_string();
    let set = env.set();
    if !set.is_empty() {
        let mut p = compile_env(env)?;
        if path.exists() {
            p.warnings.insert(
                0,
                format!(
                    "{} set: the policy file {shown} is not read (g0efilter's precedence); \
                     the policy is the environment's only",
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
            "no such file, and neither ALLOWLIST_IPS nor ALLOWLIST_DOMAINS (nor a DENYLIST_* list) is set, \
                 so there is no policy: mount a policy file at POLICY_PATH (README.md, \"Policy\", has an \
                 example) or set ALLOWLIST_IPS / ALLOWLIST_DOMAINS"
                .into(),
        )),
        Err(e) => return Err(whole_error(&shown, format!("cannot read: {e}"))),
    };
    let env = EnvLists {
        mode: env.mode,
        default: env.default,
        overlay: env.overlay.clone(),
        ..EnvLists::default()
    };
    compile_raw(raw, &shown, &env)
}

/// Compiles the environment lists alone (the file is not consulted).
pub fn compile_env(env: &EnvLists) -> Result<Policy, PolicyErrors> {
    fn src(list: List, domains: bool, v: &Option<Vec<String>>) -> [Source<'_>; 1] {
        [Source { origin: Origin::Env(list.env(domains)), entries: v.as_deref().unwrap_or(&[]) }]
    }
    let (ai, ad) = (src(List::Allow, false, &env.ips), src(List::Allow, true, &env.domains));
    let (di, dd) = (src(List::Deny, false, &env.deny_ips), src(List::Deny, true, &env.deny_domains));
    let (oi, od) = overlay_sources(&env.overlay);
    let (ai, ad): (Vec<Source<'_>>, Vec<Source<'_>>) =
        (ai.into_iter().chain(oi).collect(), ad.into_iter().chain(od).collect());
    let spec = Spec {
        allow_ips: &ai,
        allow_domains: &ad,
        deny_ips: &di,
        deny_domains: &dd,
        default: env.default_action(),
        default_source: "DEFAULT_ACTION",
    };
    Ok(Policy::compile_spec(&spec)?.with_mode(env.mode.unwrap_or_default()).with_unblocks(&env.overlay))
}

/// A scalar YAML value as text (`true`, `audit`), for the mode keys.
fn scalar_text(v: &serde_yaml::Value) -> String {
    match v {
        serde_yaml::Value::Bool(b) => b.to_string(),
        serde_yaml::Value::String(s) => s.clone(),
        other => format!("{other:?}"),
    }
}

/// Tests' policy from YAML text, file keys only (no environment).
#[cfg(test)]
pub(crate) fn from_yaml(yaml: &str) -> Policy {
    compile_raw(parse_yaml(yaml, "t.yaml").expect("test policy parses"), "t.yaml", &EnvLists::default())
        .expect("test policy compiles")
}

/// Compiles parsed YAML; when `env` has a list set, the environment
/// replaces the file entirely ([`load`]'s precedence). `ENFORCE` and
/// `DEFAULT_ACTION` win over the file's keys.
pub fn compile_raw(raw: RawPolicy, shown: &str, env: &EnvLists) -> Result<Policy, PolicyErrors> {
    if !env.set().is_empty() {
        return compile_env(env);
    }
    // A bad `enforce:` value is an error like any other entry (a typo
    // must not quietly mean "enforce").
    let file_mode = match &raw.enforce {
        None => Ok(Mode::Enforce),
        Some(v) => {
            let text = scalar_text(v);
            Mode::parse(&text).map_err(|why| PolicyError {
                source: shown.to_owned(),
                location: "enforce".into(),
                entry: text,
                reason: format!("expected {why}"),
            })
        }
    };
    let default = env.default_action().or_else(|| {
        raw.default_action.as_ref().map(|v| {
            let text = scalar_text(v);
            DefaultAction::parse(&text).map_err(|why| PolicyError {
                source: shown.to_owned(),
                location: "default_action".into(),
                entry: text,
                reason: format!("expected {why}"),
            })
        })
    });
    let file = Origin::File(shown.to_owned());
    let deny = raw.denylist.unwrap_or_default();
    let lists = [
        raw.allowlist.ips.unwrap_or_default(),
        raw.allowlist.domains.unwrap_or_default(),
        deny.ips.unwrap_or_default(),
        deny.domains.unwrap_or_default(),
    ];
    let src = |i: usize| [Source { origin: file.clone(), entries: &lists[i] }];
    let (ai, ad, di, dd) = (src(0), src(1), src(2), src(3));
    let (oi, od) = overlay_sources(&env.overlay);
    let (ai, ad): (Vec<Source<'_>>, Vec<Source<'_>>) =
        (ai.into_iter().chain(oi).collect(), ad.into_iter().chain(od).collect());
    let spec = Spec {
        allow_ips: &ai,
        allow_domains: &ad,
        deny_ips: &di,
        deny_domains: &dd,
        default,
        default_source: shown,
    };
    let compiled = Policy::compile_spec(&spec);
    match (compiled, file_mode) {
        (Ok(p), Ok(m)) => Ok(p.with_mode(env.mode.unwrap_or(m)).with_unblocks(&env.overlay)),
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
        let e = errors("allowlist:\n  domains: [a.com]\nblocklist:\n  domains: [b.com]\n");
        assert_eq!(e.len(), 1);
        assert!(e[0].contains("unknown field `blocklist`"), "{}", e[0]);
        let e = errors("denylist:\n  names: [b.com]\n");
        assert!(e[0].contains("unknown field `names`"), "{}", e[0]);
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

    /// Round 6, escape_88: an IPv4-mapped entry is its IPv4 address, in
    /// both lists, bare or with ports; `egret check` prints the IPv4 form.
    #[test]
    fn ipv4_mapped_entries_are_their_ipv4_addresses() {
        let p = yaml(
            "default_action: allow\nallowlist:\n  ips: [\"::ffff:10.0.0.2\"]\ndenylist:\n  ips: [\"::ffff:10.0.0.3\", \"::ffff:10.0.1.0/120\", \"tcp/[::ffff:10.0.0.4]:7000\"]\n",
        )
        .unwrap();
        let at = |ip: &str, port: Option<(Proto, u16)>| {
            p.decide(Query { name: None, ip: Some(ip.parse().unwrap()), port }).verdict
        };
        for ip in ["10.0.0.3", "::ffff:10.0.0.3", "10.0.1.9"] {
            assert_eq!(at(ip, None), Verdict::Deny, "{ip}");
        }
        assert_eq!(at("10.0.0.4", Some((Proto::Tcp, 7000))), Verdict::Deny);
        assert_eq!(at("10.0.0.4", Some((Proto::Tcp, 7001))), Verdict::Allow);
        assert!(p.allows_ip("10.0.0.2".parse().unwrap()));
        assert!(p.denylist().ips.v6.is_empty() && p.denylist().ports.elements_v6().is_empty());
        let shown = p.to_string();
        for form in ["- 10.0.0.2/32", "- 10.0.0.3/32", "- 10.0.1.0/24", "- \"tcp/10.0.0.4:7000\""] {
            assert!(shown.contains(form), "{form} not in {shown}");
        }
        assert!(!shown.contains("ffff"), "{shown}");
        assert_eq!(
            p.warnings().iter().filter(|w| w.contains("IPv4-mapped")).count(),
            4,
            "{:?}",
            p.warnings()
        );
        assert!(p.warnings()[1].ends_with("\"::ffff:10.0.0.3\": an IPv4-mapped address is its IPv4 address on the wire, using 10.0.0.3/32"), "{:?}", p.warnings());
    }

    /// Round 6, escape_81: a denied IPv4 entry is denied in its IPv6
    /// translated forms, bare and with ports, and the rule named is the
    /// IPv4 entry; the deprecated IPv4-compatible form is plain IPv6.
    #[test]
    fn a_denied_ipv4_is_denied_in_its_translated_forms() {
        let p =
            yaml("default_action: allow\ndenylist:\n  ips: [\"10.0.0.3\", \"tcp/10.0.0.4:25\"]\n").unwrap();
        let at = |ip: &str, port: Option<(Proto, u16)>| {
            p.decide(Query { name: Some("x.test"), ip: Some(ip.parse().unwrap()), port })
        };
        for ip in ["64:ff9b::10.0.0.3", "::ffff:0:10.0.0.3", "64:ff9b:1::10.0.0.3"] {
            let d = at(ip, Some((Proto::Tcp, 443)));
            assert_eq!((d.verdict, d.reason), (Verdict::Deny, Reason::Denylisted), "{ip}");
            assert_eq!(d.rule.map(|r| r.to_string()).as_deref(), Some("ip 10.0.0.3/32"), "{ip}");
            let d = at(&ip.replace(".3", ".4"), Some((Proto::Tcp, 25)));
            assert_eq!(d.verdict, Verdict::Deny, "{ip} port 25");
            assert_eq!(at(&ip.replace(".3", ".4"), Some((Proto::Tcp, 26))).verdict, Verdict::Allow);
        }
        for ip in ["::10.0.0.3", "64:ff9b::10.0.0.5", "64:ff9b:1:1::10.0.0.3"] {
            assert_eq!(at(ip, None).verdict, Verdict::Allow, "{ip}");
        }
    }

    /// g0efilter's precedence (issue 16, item 2): any ALLOWLIST_* variable
    /// makes the environment the whole policy; the file is not read, so
    /// its other list does not sneak in (the bundled 192.168.0.0/16 used
    /// to stay allowed on every port when only ALLOWLIST_DOMAINS was set).
    #[test]
    fn env_lists_replace_the_file_entirely() {
        let raw = || parse_yaml(BUNDLED, "policy.yaml").unwrap();
        let env =
            EnvLists { ips: Some(vec!["10.9.9.9".into()]), domains: None, mode: None, ..EnvLists::default() };
        let p = compile_raw(raw(), "policy.yaml", &env).unwrap();
        assert!(p.allows_ip("10.9.9.9".parse().unwrap()));
        assert!(!p.allows_ip("1.1.1.1".parse().unwrap()), "file ips must not be read");
        assert!(!p.allows_name("github.com"), "file domains must not be read either");

        let env = EnvLists {
            ips: None,
            domains: Some(vec!["example.org".into()]),
            mode: None,
            ..EnvLists::default()
        };
        let p = compile_raw(raw(), "policy.yaml", &env).unwrap();
        assert!(p.allows_name("example.org") && !p.allows_name("github.com"));
        assert!(!p.allows_ip("192.168.7.7".parse().unwrap()), "no private /16 from the file");
        assert!(p.ips().is_empty());

        // An empty env list is still "set": an empty policy.
        let env = EnvLists { ips: Some(vec![]), domains: Some(vec![]), mode: None, ..EnvLists::default() };
        assert!(compile_raw(raw(), "policy.yaml", &env).unwrap().is_empty());

        // Env errors name the variable.
        let env = EnvLists {
            ips: Some(vec!["nope".into()]),
            domains: Some(vec!["x y".into()]),
            mode: None,
            ..EnvLists::default()
        };
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
        let env =
            EnvLists { ips: Some(vec!["1.1.1.1".into()]), domains: None, mode: None, ..EnvLists::default() };
        let p = load(path, &env).unwrap();
        assert!(p.allows_ip("1.1.1.1".parse().unwrap()) && p.names().is_empty());
        assert!(p.warnings().is_empty(), "no file to ignore: {:?}", p.warnings());
        let env = EnvLists {
            ips: Some(vec!["1.1.1.1".into()]),
            domains: Some(vec!["a.com".into()]),
            mode: None,
            ..EnvLists::default()
        };
        assert!(load(path, &env).unwrap().allows_name("a.com"));
        // With the file present, the start-up log says it is not read.
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy.yaml");
        let env =
            EnvLists { ips: None, domains: Some(vec!["a.com".into()]), mode: None, ..EnvLists::default() };
        let p = load(&here, &env).unwrap();
        assert!(!p.allows_name("github.com"));
        assert!(p.warnings()[0].contains("ALLOWLIST_DOMAINS set: the policy file"), "{:?}", p.warnings());
    }

    /// Both lists without `default_action` are refused saying how to
    /// choose, and so is a denylist alone (under the default deny it
    /// would mean nothing passes); every other problem is listed with it.
    #[test]
    fn both_lists_need_a_default_that_says_which_wins() {
        let e = errors("allowlist:\n  domains: [a.com]\ndenylist:\n  domains: [b.com]\n");
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with(
                "policy.yaml: default_action: an allowlist and a denylist together need default_action"
            ),
            "{}",
            e[0]
        );
        for how in
            ["`deny` keeps the allowlist", "(deny wins)", "`allow` lets everything pass", "(allow wins)"]
        {
            assert!(e[0].contains(how), "{how}: {}", e[0]);
        }
        let e = errors("denylist:\n  ips: [\"10.0.0.1\"]\n");
        assert!(e[0].contains("a denylist needs default_action: allow"), "{e:?}");
        // Every problem at once: bad entries in both lists, a bad default
        // value, with their locations.
        let e = errors(
            "default_action: sometimes\nallowlist:\n  ips: [\"300.1.1.1\"]\ndenylist:\n  ips: [\"10.0.0.0/40\", \"udp/10.0.0.1:0\"]\n  domains: [\"a..b\", \"ok.test\"]\n",
        );
        let want = [
            "policy.yaml: default_action \"sometimes\": expected allow or deny (the default)",
            "policy.yaml: allowlist.ips[0] \"300.1.1.1\": not an IPv4 or IPv6 address",
            "policy.yaml: denylist.ips[0] \"10.0.0.0/40\": prefix length must be 0..=32",
            "policy.yaml: denylist.ips[1] \"udp/10.0.0.1:0\": bad port \"0\"",
            "policy.yaml: denylist.domains[0] \"a..b\": empty label",
        ];
        assert_eq!(e.len(), want.len(), "{e:?}");
        for (got, want) in e.iter().zip(want) {
            assert!(got.starts_with(want), "{got:?} does not start with {want:?}");
        }
        // Without a default, the combination is named among the entries'.
        let e = errors("allowlist:\n  ips: [nope]\ndenylist:\n  domains: [b.com]\n");
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[1].contains("need default_action"), "{e:?}");
        // An explicit default makes both lists valid.
        for d in ["allow", "deny", "Allow"] {
            let p = yaml(&format!(
                "default_action: {d}\nallowlist:\n  domains: [a.com]\ndenylist:\n  domains: [b.com]\n"
            ))
            .unwrap();
            assert!(p.warnings().is_empty(), "{:?}", p.warnings());
        }
        // A default with only the other list is valid, and warned about.
        let p = yaml("default_action: allow\n").unwrap();
        assert!(p.warnings()[0].contains("all egress will pass"), "{:?}", p.warnings());
        let p = yaml("default_action: deny\ndenylist:\n  domains: [b.com]\n").unwrap();
        assert!(p.warnings()[0].contains("allows nothing"), "{:?}", p.warnings());
    }

    fn decided(p: &Policy, name: Option<&str>, ip: Option<&str>, port: Option<(Proto, u16)>) -> String {
        let d = p.decide(Query { name, ip: ip.map(|i| i.parse().unwrap()), port });
        let rule = match (&d.list, &d.rule) {
            (Some(l), Some(r)) => format!("{} {r}", l.key()),
            _ => "default".into(),
        };
        format!("{:?} {} {rule}", d.verdict, d.reason.as_str())
    }

    /// `default_action: allow`: everything passes but the denylist; an
    /// allowlist entry re-opens a part of it (allow wins), for names and
    /// addresses alike, and an address decides before any name.
    #[test]
    fn default_allow_with_a_denylist() {
        let p = yaml(
            "default_action: allow\nallowlist:\n  ips: [\"203.0.113.7\"]\n  domains: [\"api.example.com\"]\ndenylist:\n  ips: [\"203.0.113.0/24\", \"tcp/198.51.100.5:25\", \"2001:db8:dead::/48\"]\n  domains: [\"*.example.com\", \"evil.test\", \"/ads[0-9]+\\\\.test/\"]\n",
        )
        .unwrap();
        assert_eq!(p.default_action(), DefaultAction::Allow);
        let tcp = |port| Some((Proto::Tcp, port));
        type Case<'a> = (Option<&'a str>, Option<&'a str>, Option<(Proto, u16)>, &'a str);
        let cases: &[Case] = &[
            (Some("github.com"), None, None, "Allow domain-allowed default"),
            (Some("x.example.com"), None, None, "Deny denylisted denylist domain *.example.com"),
            (Some("API.example.com."), None, None, "Allow domain-allowed allowlist domain api.example.com"),
            (Some("example.com"), None, None, "Allow domain-allowed default"),
            (Some("evil.test"), None, None, "Deny denylisted denylist domain evil.test"),
            (Some("ads12.test"), None, None, "Deny denylisted denylist domain /ads[0-9]+\\.test/"),
            (None, Some("8.8.8.8"), tcp(53), "Allow ip-allowed default"),
            (None, Some("203.0.113.9"), tcp(443), "Deny denylisted denylist ip 203.0.113.0/24"),
            (None, Some("203.0.113.7"), tcp(443), "Allow ip-allowed allowlist ip 203.0.113.7/32"),
            (None, Some("198.51.100.5"), tcp(25), "Deny denylisted denylist ip tcp/198.51.100.5:25"),
            (None, Some("198.51.100.5"), tcp(26), "Allow ip-allowed default"),
            (None, Some("2001:db8:dead::1"), None, "Deny denylisted denylist ip 2001:db8:dead::/48"),
            // The address first: a denylisted destination is refused
            // whatever name is sent to it, even one the allowlist names.
            (
                Some("api.example.com"),
                Some("203.0.113.9"),
                tcp(443),
                "Deny denylisted denylist ip 203.0.113.0/24",
            ),
            (
                Some("x.example.com"),
                Some("203.0.113.7"),
                tcp(443),
                "Allow ip-allowed allowlist ip 203.0.113.7/32",
            ),
            (Some("git hub.com"), None, None, "Deny invalid-name default"),
        ];
        for (name, ip, port, want) in cases {
            assert_eq!(decided(&p, *name, *ip, *port), *want, "{name:?} {ip:?} {port:?}");
        }
        assert!(
            p.allows_name("github.com")
                && !p.allows_name("x.example.com")
                && p.allows_name("api.example.com")
        );
        assert!(p.allows_any_name());
        assert!(!p.allows_port("198.51.100.5".parse().unwrap(), Proto::Tcp, 25));
    }

    /// `default_action: deny` with both lists: the allowlist is the
    /// policy, a denylist entry closes a part of it (deny wins).
    #[test]
    fn default_deny_with_a_denylist() {
        let p = yaml(
            "default_action: deny\nallowlist:\n  ips: [\"10.0.0.0/8\"]\n  domains: [\"*.example.com\"]\ndenylist:\n  ips: [\"10.1.0.0/16\"]\n  domains: [\"evil.example.com\"]\n",
        )
        .unwrap();
        let cases: &[(Option<&str>, Option<&str>, &str)] = &[
            (Some("a.example.com"), None, "Allow domain-allowed allowlist domain *.example.com"),
            (Some("evil.example.com"), None, "Deny denylisted denylist domain evil.example.com"),
            (Some("github.com"), None, "Deny not-allowlisted default"),
            (None, Some("10.2.3.4"), "Allow ip-allowed allowlist ip 10.0.0.0/8"),
            (None, Some("10.1.3.4"), "Deny denylisted denylist ip 10.1.0.0/16"),
            (None, Some("8.8.8.8"), "Deny ip-not-allowed default"),
            (Some("a.example.com"), Some("10.1.3.4"), "Deny denylisted denylist ip 10.1.0.0/16"),
        ];
        for (name, ip, want) in cases {
            assert_eq!(decided(&p, *name, *ip, None), *want, "{name:?} {ip:?}");
        }
        assert!(p.allows_ip("10.2.3.4".parse().unwrap()) && !p.allows_ip("10.1.3.4".parse().unwrap()));
        assert!(!p.allows_name("evil.example.com") && p.allows_name("b.example.com"));
        // Without a denylist, the same policy as before there was one.
        let today = yaml("allowlist:\n  domains: [\"*.example.com\"]\n").unwrap();
        let same = yaml("default_action: deny\nallowlist:\n  domains: [\"*.example.com\"]\n").unwrap();
        assert_eq!(today, same);
    }

    /// Names with ports under `domains`: parsed, printed, refused with
    /// their location when malformed or misplaced; they allow no name by
    /// themselves (only their ports, on their answers' addresses).
    #[test]
    fn names_with_ports() {
        let p = yaml("allowlist:\n  domains: [\"tcp/DB.Test.:5432\", \"db.test:6000-6001\", \"udp/ns.test\", \"web.test\"]\n").unwrap();
        let shown: Vec<String> = p.name_ports().iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["db.test:6000-6001", "tcp/db.test:5432", "udp/ns.test"], "sorted");
        assert_eq!(p.ports_of_name("db.test").len(), 2);
        assert!(!p.allows_name("db.test"), "a name with ports is not allowed on 80/443");
        assert!(p.to_string().contains("    - \"tcp/db.test:5432\"\n"), "{p}");
        assert_eq!(yaml(&p.to_string()).unwrap(), p, "printed and read back");
        let e = errors(
            "allowlist:\n  ips: [\"tcp/db.test:5432\"]\n  domains: [\"tcp/*.db.test:5432\", \"sctp/db.test:1\", \"db.test:0\", \"tcp/10.0.0.1:5\"]\ndefault_action: allow\ndenylist:\n  domains: [\"tcp/x.test:1\"]\n",
        );
        let want = [
            "policy.yaml: allowlist.ips[0] \"tcp/db.test:5432\": a name with ports, not an address: put it under allowlist.domains",
            "policy.yaml: allowlist.domains[0] \"tcp/*.db.test:5432\": a name with ports must be an exact name",
            "policy.yaml: allowlist.domains[1] \"sctp/db.test:1\": unknown protocol",
            "policy.yaml: allowlist.domains[2] \"db.test:0\": bad port",
            "policy.yaml: allowlist.domains[3] \"tcp/10.0.0.1:5\": an address: put",
            "policy.yaml: denylist.domains[0] \"tcp/x.test:1\": a denylist name takes no ports",
        ];
        assert_eq!(e.len(), want.len(), "{e:?}");
        for (got, want) in e.iter().zip(want) {
            assert!(got.starts_with(want), "{got:?} does not start with {want:?}");
        }
    }

    /// `egret check` prints the default and which list wins, as YAML that
    /// compiles back to the same policy.
    #[test]
    fn display_says_the_default_and_which_list_wins() {
        let text = "default_action: allow\nallowlist:\n  domains: [api.example.com]\ndenylist:\n  ips: [\"10.0.0.0/8\", \"tcp/192.0.2.1:25\"]\n  domains: [\"*.example.com\"]\n";
        let p = yaml(text).unwrap();
        let shown = p.to_string();
        assert_eq!(
            shown,
            "default_action: allow  # everything passes but the denylist; where both lists match, the allowlist wins\nallowlist:\n  ips: []\n  domains:\n    - \"api.example.com\"\ndenylist:\n  ips:\n    - 10.0.0.0/8\n    - \"tcp/192.0.2.1:25\"\n  domains:\n    - \"*.example.com\"\n"
        );
        assert_eq!(yaml(&shown).unwrap(), p, "the printed policy compiles to itself");
        let p =
            yaml("default_action: deny\nallowlist:\n  domains: [a.test]\ndenylist:\n  domains: [b.a.test]\n")
                .unwrap();
        assert!(p.to_string().starts_with("default_action: deny  # only the allowlist passes; where both lists match, the denylist wins\n"), "{p}");
        assert!(!yaml("allowlist:\n  domains: [a.test]\n").unwrap().to_string().contains("default_action"));
    }

    /// `DEFAULT_ACTION` wins over the file's `default_action`; any
    /// `DENYLIST_*` list makes the environment the whole policy, as the
    /// `ALLOWLIST_*` lists do, and its errors name the variable.
    #[test]
    fn default_action_and_denylist_from_the_environment() {
        let raw =
            || parse_yaml("default_action: deny\nallowlist:\n  domains: [a.test]\n", "policy.yaml").unwrap();
        let env = EnvLists { default: Some(DefaultAction::Allow), ..EnvLists::default() };
        let p = compile_raw(raw(), "policy.yaml", &env).unwrap();
        assert_eq!(p.default_action(), DefaultAction::Allow, "DEFAULT_ACTION wins over the file");
        assert!(p.allows_name("a.test") && p.allows_name("b.test"));

        let env = EnvLists {
            deny_domains: Some(vec!["evil.test".into()]),
            deny_ips: Some(vec!["192.0.2.0/24".into()]),
            default: Some(DefaultAction::Allow),
            ..EnvLists::default()
        };
        let p = compile_raw(raw(), "policy.yaml", &env).unwrap();
        assert!(!p.allows_name("evil.test") && p.allows_name("good.test"));
        assert!(p.names().is_empty(), "the file's allowlist is not read");
        assert_eq!(decided(&p, None, Some("192.0.2.9"), None), "Deny denylisted denylist ip 192.0.2.0/24");

        // A DENYLIST_* list without DEFAULT_ACTION: refused, naming it.
        let env = EnvLists { deny_domains: Some(vec!["evil.test".into()]), ..EnvLists::default() };
        let e = compile_raw(raw(), "policy.yaml", &env).unwrap_err().to_string();
        assert!(e.contains("DEFAULT_ACTION: default_action: a denylist needs default_action: allow"), "{e}");
        let env = EnvLists {
            domains: Some(vec!["a.test".into()]),
            deny_domains: Some(vec!["b.a.test".into()]),
            ..EnvLists::default()
        };
        let e = compile_raw(raw(), "policy.yaml", &env).unwrap_err().to_string();
        assert!(e.contains("need default_action (DEFAULT_ACTION) to say which wins"), "{e}");
        let env = EnvLists {
            deny_ips: Some(vec!["nope".into()]),
            deny_domains: Some(vec!["x y".into()]),
            default: Some(DefaultAction::Allow),
            ..EnvLists::default()
        };
        let shown: Vec<String> =
            compile_raw(raw(), "policy.yaml", &env).unwrap_err().0.iter().map(ToString::to_string).collect();
        assert!(shown[0].starts_with("DENYLIST_IPS: [0] \"nope\""), "{shown:?}");
        assert!(shown[1].starts_with("DENYLIST_DOMAINS: [0] \"x y\""), "{shown:?}");
        // With the file present, the start-up log names the variable.
        let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("policy.yaml");
        let env = EnvLists {
            deny_domains: Some(vec!["b.test".into()]),
            default: Some(DefaultAction::Allow),
            ..EnvLists::default()
        };
        let p = load(&here, &env).unwrap();
        assert!(p.warnings()[0].starts_with("DENYLIST_DOMAINS set: the policy file"), "{:?}", p.warnings());
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
