//! What `egret check` says beyond "valid": warnings for entries that are
//! valid but risky, and `--explain`, how one name or address is decided.
//!
//! Pure: the compiled policy in, text out.

use std::net::IpAddr;

use super::cidr::Cidr;
use super::name::{normalize, Pattern};
use super::{Guard, Policy};
use super::{List, Rule};

/// Suffixes under which anyone can publish: a wildcard over one allows
/// every site of every customer, an attacker's included.
const SHARED_SUFFIXES: &[&str] = &[
    "amazonaws.com",
    "appspot.com",
    "azurewebsites.net",
    "blob.core.windows.net",
    "cloudfront.net",
    "firebaseapp.com",
    "fly.dev",
    "github.io",
    "gitlab.io",
    "googleusercontent.com",
    "herokuapp.com",
    "netlify.app",
    "ngrok.io",
    "pages.dev",
    "vercel.app",
    "web.app",
    "workers.dev",
];

/// The widest prefixes that pass without a warning: an IPv4 /8 (16 M
/// addresses) and an IPv6 /16 hold networks of many owners.
const WIDE_V4: u8 = 8;
const WIDE_V6: u16 = 16;

/// Why an address entry is risky, if it is: a /8 or wider.
pub fn risky_cidr(c: &Cidr) -> Option<String> {
    let wide = match c.addr {
        IpAddr::V4(_) => c.prefix <= WIDE_V4,
        IpAddr::V6(_) => u16::from(c.prefix) <= WIDE_V6,
    };
    wide.then(|| {
        format!("a /{} or wider spans networks of many owners; list the networks you need", c.prefix)
    })
}

/// Why a domain entry is risky, if it is: `*`, or a wildcard over a
/// suffix anyone can publish under.
pub fn risky_pattern(p: &Pattern) -> Option<String> {
    match p {
        Pattern::Any => Some(
            "every name is allowed, so only allowlist.ips and the SSRF guard restrict egress".to_owned(),
        ),
        Pattern::Subdomains(text) | Pattern::Glob(text) => shared_suffix(p, text).map(|shared| {
            format!("anyone can publish under {shared}, so this allows sites an attacker controls; name the hosts you need")
        }),
        Pattern::Exact(_) | Pattern::Regex(_) => None,
    }
}

/// The shared suffix a wildcard entry spans, if any: `*.github.io`, and a
/// `*` pattern whose star reaches into one (`*.s3.amazonaws.com`,
/// `team-*.github.io`); not `docs.github.io`, one named site.
fn shared_suffix(p: &Pattern, text: &str) -> Option<&'static str> {
    // The literal part after the last star, without its leading label
    // remainder: `team-*.github.io` → `github.io`.
    let tail = match p {
        Pattern::Subdomains(zone) => zone.as_str(),
        _ => text.rsplit('*').next().map(|t| t.split_once('.').map_or("", |(_, z)| z)).unwrap_or(""),
    };
    SHARED_SUFFIXES.iter().copied().find(|s| tail == *s || tail.ends_with(&format!(".{s}")))
}

/// `egret check --explain WHAT`: whether the policy allows a name or an
/// address, and by which entry. `true` when allowed.
pub fn explain(policy: &Policy, guard: &Guard, what: &str) -> (bool, String) {
    let what = what.trim();
    let bare = what.strip_prefix('[').and_then(|w| w.strip_suffix(']')).unwrap_or(what);
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return explain_ip(policy, guard, ip);
    }
    let name = match normalize(what) {
        Ok(n) => n,
        Err(e) => return (false, format!("{what:?}: not a host name ({e}): never allowed\n")),
    };
    let mut text = String::new();
    if name != what {
        text.push_str(&format!("{what:?} is compared as {name}\n"));
    }
    let d = policy.decide(super::Query { name: Some(&name), ip: None, port: None });
    let default = policy.default_action();
    let with_ports: Vec<String> = policy.ports_of_name(&name).iter().map(|np| np.to_string()).collect();
    let other = |list: List| {
        let l = if list == List::Allow { policy.allowlist() } else { policy.denylist() };
        l.names.find(&name)
    };
    match (&d.rule, d.list) {
        (Some(Rule::Domain(p)), Some(list)) => {
            let verb = if d.allowed() { "allowed" } else { "blocked" };
            text.push_str(&format!("{name}: {verb} by {}.domains {p}, {}\n", list.key(), p.describe()));
            let loser = if list == List::Allow { List::Deny } else { List::Allow };
            if let Some(q) = other(loser) {
                text.push_str(&format!(
                    "  {}.domains {q} matches too; with default_action {} the {} wins\n",
                    loser.key(),
                    default.as_str(),
                    default.winner().key()
                ));
            }
        }
        _ if d.allowed() => text.push_str(&format!(
            "{name}: allowed by default_action allow: no denylist.domains entry matches\n"
        )),
        _ if !with_ports.is_empty() => text.push_str(&format!(
            "{name}: not allowed through the proxies (no allowlist.domains pattern matches); it resolves, and its answers' addresses are open for their TTL on: {}\n",
            with_ports.join(", ")
        )),
        _ => text.push_str(&format!(
            "{name}: blocked: no allowlist.domains entry matches (HTTPS mode resets the connection, DNS mode answers NXDOMAIN)\n"
        )),
    }
    let allowed = d.allowed();
    if allowed {
        text.push_str(&from_unblocks(policy, |e| {
            !super::is_address_entry(e)
                && (Pattern::parse(e).is_ok_and(|p| {
                    let mut set = super::NameSet::default();
                    set.insert(p);
                    set.contains(&name)
                }) || super::port::parse_name(e).is_ok_and(|np| np.name == name))
        }));
    }
    if allowed && !guard.is_off() {
        text.push_str("  the addresses it resolves to must still pass the SSRF guard (GUARD_ADDRESSES)\n");
    }
    (allowed, text)
}

/// A line naming the remote unblocks (`unblock #ID`) among the allowlist
/// entries that `covers` accepts; empty when none.
fn from_unblocks(policy: &Policy, covers: impl Fn(&str) -> bool) -> String {
    let ids: Vec<String> = policy
        .unblocks()
        .iter()
        .filter(|(_, e)| covers(e))
        .map(|(id, e)| format!("unblock #{id} ({e})"))
        .collect();
    if ids.is_empty() {
        return String::new();
    }
    format!("  allowed by a remote unblock from the dashboard: {}\n", ids.join(", "))
}

/// The port entries of `l` whose addresses cover `ip`, as written.
fn port_entries_at(l: &super::Lists, ip: IpAddr) -> Vec<String> {
    l.ports
        .entries()
        .into_iter()
        .filter(|e| super::IpSet::from_cidrs(&[e.cidr]).contains(ip))
        .map(|e| e.to_string())
        .collect()
}

fn explain_ip(policy: &Policy, guard: &Guard, ip: IpAddr) -> (bool, String) {
    let d = policy.decide(super::Query { name: None, ip: Some(ip), port: None });
    let default = policy.default_action();
    let (allow_ports, deny_ports) =
        (port_entries_at(policy.allowlist(), ip), port_entries_at(policy.denylist(), ip));
    let mut text = match (&d.rule, d.list) {
        (Some(Rule::Ip(block)), Some(List::Allow)) => {
            format!("{ip}: allowed on every port by allowlist.ips (within {block})\n")
        }
        (Some(Rule::Ip(block)), Some(List::Deny)) => {
            format!("{ip}: blocked on every port and protocol by denylist.ips (within {block})\n")
        }
        _ if !d.allowed() && !allow_ports.is_empty() => {
            format!("{ip}: allowed only as allowlist.ips lists it: {}\n", allow_ports.join(", "))
        }
        _ if !d.allowed() => {
            format!("{ip}: blocked: no allowlist.ips entry covers it (logged and refused at once)\n")
        }
        _ => {
            format!("{ip}: allowed by default_action allow: no denylist.ips entry covers it on every port\n")
        }
    };
    if !deny_ports.is_empty() {
        text.push_str(&format!("  refused where denylist.ips lists it: {}\n", deny_ports.join(", ")));
    }
    let both = policy.allowlist().ips.find(ip).is_some() && policy.denylist().ips.find(ip).is_some();
    if both {
        text.push_str(&format!(
            "  both lists cover it; with default_action {} the {} wins\n",
            default.as_str(),
            default.winner().key()
        ));
    }
    let allowed = d.allowed() || !allow_ports.is_empty();
    if allowed {
        text.push_str(&from_unblocks(policy, |e| {
            let cidr =
                Cidr::parse(e).map(|c| c.0).ok().or_else(|| super::port::parse(e).ok().map(|p| p.0.cidr));
            cidr.is_some_and(|c| super::IpSet::from_cidrs(&[c]).contains(ip))
        }));
    }
    if !allowed && guard.check(policy, ip).is_some() {
        text.push_str("  it is also a guarded address (GUARD_ADDRESSES): no allowed name leads there\n");
    }
    (allowed, text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{compile_raw, parse_yaml, EnvLists};

    fn policy(yaml: &str) -> Policy {
        compile_raw(parse_yaml(yaml, "t.yaml").expect("yaml"), "t.yaml", &EnvLists::default())
            .expect("policy")
    }

    #[test]
    fn risky_entries_are_named_with_the_reason() {
        let p = policy(
            "allowlist:\n  ips: [\"10.0.0.0/8\", \"10.1.0.0/16\", \"2001:db8::/32\", \"::/0\"]\n  domains: [\"*\", \"*.github.io\", \"docs.github.io\", \"team-*.github.io\", \"*.s3.amazonaws.com\", \"*.example.com\", \"/x\\\\.github\\\\.io/\"]\n",
        );
        let w = p.warnings().join("\n");
        for want in [
            "t.yaml: allowlist.ips[0] \"10.0.0.0/8\": a /8 or wider",
            "t.yaml: allowlist.ips[3] \"::/0\": a /0 or wider",
            "t.yaml: allowlist.domains[0] \"*\": every name is allowed",
            "t.yaml: allowlist.domains[1] \"*.github.io\": anyone can publish under github.io",
            "t.yaml: allowlist.domains[3] \"team-*.github.io\": anyone can publish under github.io",
            "t.yaml: allowlist.domains[4] \"*.s3.amazonaws.com\": anyone can publish under amazonaws.com",
        ] {
            assert!(w.contains(want), "missing {want:?} in\n{w}");
        }
        for quiet in ["10.1.0.0/16", "2001:db8::/32", "docs.github.io", "*.example.com"] {
            assert!(!w.contains(&format!("\"{quiet}\"")), "{quiet} is not risky:\n{w}");
        }
        assert_eq!(p.warnings().len(), 6, "{w}");
    }

    #[test]
    fn explain_names_the_entry_that_decides() {
        let p = policy(
            "allowlist:\n  ips: [\"10.0.0.0/8\", \"tcp/192.0.2.5:5432\"]\n  domains: [\"example.com\", \"*.example.org\", \"api-*.example.net\", \"/cdn[0-9]+\\\\.example\\\\.io/\"]\n",
        );
        let g = Guard::default();
        let cases: &[(&str, bool, &str)] = &[
            ("example.com", true, "allowed by allowlist.domains example.com, an exact name"),
            ("Example.COM.", true, "\"Example.COM.\" is compared as example.com"),
            ("a.b.example.org", true, "*.example.org, a subdomain wildcard"),
            ("example.org", false, "blocked: no allowlist.domains entry matches"),
            ("api-eu.example.net", true, "api-*.example.net, a '*' pattern"),
            ("cdn7.example.io", true, "/cdn[0-9]+\\.example\\.io/, a regular expression"),
            ("cdn.example.io", false, "blocked"),
            ("10.2.3.4", true, "allowed on every port by allowlist.ips (within 10.0.0.0/8)"),
            ("192.0.2.5", true, "allowed only as allowlist.ips lists it: tcp/192.0.2.5:5432"),
            ("192.0.2.6", false, "no allowlist.ips entry covers it"),
            ("exa mple.com", false, "not a host name"),
        ];
        for (what, allowed, says) in cases {
            let (a, text) = explain(&p, &g, what);
            assert_eq!(a, *allowed, "{what}: {text}");
            assert!(text.contains(says), "{what}: {text}");
        }
    }

    /// With a denylist, `--explain` names the entry of the list that
    /// decided and says which list wins where both match.
    #[test]
    fn explain_names_the_denylist_entry_and_which_list_wins() {
        let allow = policy(
            "default_action: allow\nallowlist:\n  ips: [\"203.0.113.7\"]\n  domains: [api.example.com]\ndenylist:\n  ips: [\"203.0.113.0/24\", \"tcp/192.0.2.9:25\"]\n  domains: [\"*.example.com\"]\n",
        );
        let deny = policy(
            "default_action: deny\nallowlist:\n  ips: [\"10.0.0.0/8\"]\n  domains: [\"*.example.com\"]\ndenylist:\n  ips: [\"10.1.0.0/16\"]\n  domains: [evil.example.com]\n",
        );
        let ports = policy("allowlist:\n  domains: [\"tcp/db.test:5432\"]\n");
        let g = Guard::default();
        let cases: &[(&Policy, &str, bool, &str)] = &[
            (&allow, "x.example.com", false, "x.example.com: blocked by denylist.domains *.example.com, a subdomain wildcard"),
            (&allow, "api.example.com", true, "allowed by allowlist.domains api.example.com, an exact name\n  denylist.domains *.example.com matches too; with default_action allow the allowlist wins"),
            (&allow, "github.com", true, "github.com: allowed by default_action allow: no denylist.domains entry matches"),
            (&allow, "203.0.113.9", false, "blocked on every port and protocol by denylist.ips (within 203.0.113.0/24)"),
            (&allow, "203.0.113.7", true, "allowed on every port by allowlist.ips (within 203.0.113.7/32)\n  both lists cover it; with default_action allow the allowlist wins"),
            (&allow, "192.0.2.9", true, "allowed by default_action allow: no denylist.ips entry covers it on every port\n  refused where denylist.ips lists it: tcp/192.0.2.9:25"),
            (&deny, "evil.example.com", false, "blocked by denylist.domains evil.example.com, an exact name\n  allowlist.domains *.example.com matches too; with default_action deny the denylist wins"),
            (&deny, "a.example.com", true, "allowed by allowlist.domains *.example.com"),
            (&deny, "10.1.2.3", false, "blocked on every port and protocol by denylist.ips (within 10.1.0.0/16)\n  both lists cover it; with default_action deny the denylist wins"),
            (&deny, "10.2.2.3", true, "allowed on every port by allowlist.ips (within 10.0.0.0/8)"),
            (&ports, "db.test", false, "db.test: not allowed through the proxies (no allowlist.domains pattern matches); it resolves, and its answers' addresses are open for their TTL on: tcp/db.test:5432"),
        ];
        for (p, what, allowed, says) in cases {
            let (a, text) = explain(p, &g, what);
            assert_eq!(a, *allowed, "{what}: {text}");
            assert!(text.contains(says), "{what}: {text}");
        }
    }
}
