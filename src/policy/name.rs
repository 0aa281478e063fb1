//! Host names: one normaliser for policy entries, SNI, Host headers and DNS
//! questions, and the suffix-hashed matcher built from the policy's patterns.
//!
//! Pure: no I/O, no clock. Everything that compares names goes through
//! [`normalize`], so a name is spelled the same way wherever it is checked.

use std::collections::HashSet;
use std::fmt;

/// RFC 1035 §2.3.4: 255 octets on the wire, which is 253 characters of
/// dotted text without the trailing dot.
const MAX_NAME_LEN: usize = 253;
/// RFC 1035 §2.3.4: labels are 63 octets or less.
const MAX_LABEL_LEN: usize = 63;
/// Bounds on Unicode input before IDNA: at most 4 UTF-8 bytes per
/// character of the result. idna's cost grows quadratically with a label
/// (punycode), so a 2 KB `xn--` label in a Host or SNI cost ~30 ms and a
/// 60 KB one (a hello may be 64 KiB) seconds; no usable name is longer.
const MAX_UNICODE_NAME_LEN: usize = 4 * MAX_NAME_LEN;
const MAX_UNICODE_LABEL_LEN: usize = 4 * MAX_LABEL_LEN;
/// What UTS 46 maps to '.' (RFC 3490 §3.1), besides '.' itself.
const DOTS: [char; 4] = ['.', '\u{3002}', '\u{ff0e}', '\u{ff61}'];

/// Why a string is not a usable host name.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NameError {
    Empty,
    EmptyLabel,
    LabelTooLong(usize),
    NameTooLong(usize),
    InvalidChar(char),
    HyphenAtLabelEdge,
    IpLiteral,
    Idna,
    BadWildcard,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NameError::Empty => write!(f, "empty name"),
            NameError::EmptyLabel => write!(f, "empty label"),
            NameError::LabelTooLong(n) => {
                write!(f, "label of {n} characters (at most {MAX_LABEL_LEN})")
            }
            NameError::NameTooLong(n) => {
                write!(f, "name of {n} characters (at most {MAX_NAME_LEN})")
            }
            NameError::InvalidChar(c) => write!(f, "invalid character {c:?}"),
            NameError::HyphenAtLabelEdge => write!(f, "label starts or ends with '-'"),
            NameError::IpLiteral => {
                write!(f, "an IP address is not a domain (put it under allowlist.ips)")
            }
            NameError::Idna => write!(f, "not a valid internationalised domain name"),
            NameError::BadWildcard => {
                write!(f, "'*' is only allowed alone or as the whole first label (\"*.example.com\")")
            }
        }
    }
}

impl std::error::Error for NameError {}

/// Normalises a host name the one way egret compares names: one trailing
/// dot removed, IDN labels converted to punycode (UTS 46), ASCII lowercased,
/// then checked for length, characters and IP literals.
///
/// Idempotent: `normalize(normalize(x)?) == normalize(x)`.
pub fn normalize(input: &str) -> Result<String, NameError> {
    let trimmed = input.strip_suffix('.').unwrap_or(input);
    if trimmed.is_empty() {
        return Err(NameError::Empty);
    }
    let ascii = if trimmed.is_ascii() {
        trimmed.to_ascii_lowercase()
    } else {
        // Reject structural problems before idna maps them away (it would,
        // for example, silently drop some characters).
        if trimmed.split('.').any(str::is_empty) {
            return Err(NameError::EmptyLabel);
        }
        // Bound idna's work first. UTS 46 maps an ASCII label to one of the
        // same length, so one over 63 octets can never be valid; a Unicode
        // label over 4×63 bytes could only shrink below that by carrying
        // characters UTS 46 deletes, which no real name does (refused).
        if trimmed.len() > MAX_UNICODE_NAME_LEN {
            return Err(NameError::NameTooLong(trimmed.len()));
        }
        for label in trimmed.split(DOTS) {
            let max = if label.is_ascii() { MAX_LABEL_LEN } else { MAX_UNICODE_LABEL_LEN };
            if label.len() > max {
                return Err(NameError::LabelTooLong(label.len()));
            }
        }
        idna::domain_to_ascii(trimmed).map_err(|_| NameError::Idna)?
    };
    validate(&ascii)?;
    Ok(ascii)
}

/// Checks an already lowercased ASCII name.
fn validate(name: &str) -> Result<(), NameError> {
    if name.is_empty() {
        return Err(NameError::Empty);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(NameError::NameTooLong(name.len()));
    }
    if name.parse::<std::net::IpAddr>().is_ok() {
        return Err(NameError::IpLiteral);
    }
    let mut last = "";
    for label in name.split('.') {
        if label.is_empty() {
            return Err(NameError::EmptyLabel);
        }
        if label.len() > MAX_LABEL_LEN {
            return Err(NameError::LabelTooLong(label.len()));
        }
        // Letters, digits and hyphen (RFC 952/1123); underscore too, because
        // real names such as `_dmarc.example.com` and SRV owners use it.
        if let Some(c) =
            label.chars().find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '-' || *c == '_'))
        {
            return Err(NameError::InvalidChar(c));
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err(NameError::HyphenAtLabelEdge);
        }
        last = label;
    }
    // WHATWG URL parsing treats a name whose last label is numeric as an
    // IPv4 address ("1.2.3.04", "0x7f.1"), so such a name is never a domain.
    if last.bytes().all(|b| b.is_ascii_digit())
        || (last.starts_with("0x") && last[2..].bytes().all(|b| b.is_ascii_hexdigit()))
    {
        return Err(NameError::IpLiteral);
    }
    Ok(())
}

/// One policy domain entry, normalised.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Pattern {
    /// `*`: every name.
    Any,
    /// `example.com`: that name only.
    Exact(String),
    /// `*.example.com`: any name below `example.com` at any depth, not
    /// `example.com` itself.
    Subdomains(String),
}

impl Pattern {
    pub fn parse(input: &str) -> Result<Pattern, NameError> {
        let s = input.trim();
        if s == "*" {
            return Ok(Pattern::Any);
        }
        if let Some(rest) = s.strip_prefix("*.") {
            if rest.contains('*') {
                return Err(NameError::BadWildcard);
            }
            return Ok(Pattern::Subdomains(normalize(rest)?));
        }
        if s.contains('*') {
            return Err(NameError::BadWildcard);
        }
        Ok(Pattern::Exact(normalize(s)?))
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Any => f.write_str("*"),
            Pattern::Exact(n) => f.write_str(n),
            Pattern::Subdomains(n) => write!(f, "*.{n}"),
        }
    }
}

/// The compiled domain allowlist. A lookup hashes the name and each of its
/// parent suffixes, so it costs O(labels), whatever the list's length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameSet {
    any: bool,
    exact: HashSet<String>,
    subdomains: HashSet<String>,
}

impl NameSet {
    pub fn insert(&mut self, pattern: Pattern) {
        match pattern {
            Pattern::Any => self.any = true,
            Pattern::Exact(n) => {
                self.exact.insert(n);
            }
            Pattern::Subdomains(n) => {
                self.subdomains.insert(n);
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.any && self.exact.is_empty() && self.subdomains.is_empty()
    }

    pub fn len(&self) -> usize {
        usize::from(self.any) + self.exact.len() + self.subdomains.len()
    }

    /// Whether `*` is in the set: every name, and (as in g0efilter) an IP
    /// literal where a name should be, is allowed.
    pub fn matches_everything(&self) -> bool {
        self.any
    }

    /// The pattern that allows `name`, which must already be normalised.
    /// The most specific pattern wins: exact, then the nearest `*.` parent,
    /// then `*`.
    pub fn find(&self, name: &str) -> Option<Pattern> {
        if self.exact.contains(name) {
            return Some(Pattern::Exact(name.to_owned()));
        }
        let mut rest = name;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if self.subdomains.contains(rest) {
                return Some(Pattern::Subdomains(rest.to_owned()));
            }
        }
        self.any.then_some(Pattern::Any)
    }

    /// Whether `name` is allowed, without building the matched pattern.
    pub fn contains(&self, name: &str) -> bool {
        if self.any || self.exact.contains(name) {
            return true;
        }
        let mut rest = name;
        while let Some(dot) = rest.find('.') {
            rest = &rest[dot + 1..];
            if self.subdomains.contains(rest) {
                return true;
            }
        }
        false
    }

    /// Every pattern, sorted, for display.
    pub fn patterns(&self) -> Vec<Pattern> {
        let mut out: Vec<Pattern> = Vec::with_capacity(self.len());
        if self.any {
            out.push(Pattern::Any);
        }
        out.extend(self.exact.iter().cloned().map(Pattern::Exact));
        out.extend(self.subdomains.iter().cloned().map(Pattern::Subdomains));
        out.sort_by_key(display_key);
        out
    }
}

/// Sorts patterns by their registrable end first so related names group.
fn display_key(p: &Pattern) -> (String, u8) {
    match p {
        Pattern::Any => (String::new(), 0),
        Pattern::Exact(n) => (reversed(n), 1),
        Pattern::Subdomains(n) => (reversed(n), 2),
    }
}

fn reversed(name: &str) -> String {
    name.rsplit('.').collect::<Vec<_>>().join(".")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_norm(input: &str, expect: Result<&str, NameError>) {
        let got = normalize(input);
        assert_eq!(got.as_deref().map_err(Clone::clone), expect, "input {input:?}");
        if let Ok(n) = &got {
            assert_eq!(normalize(n).as_ref(), Ok(n), "not idempotent for {input:?}");
        }
    }

    #[test]
    fn normalize_table() {
        use NameError::*;
        check_norm("Example.COM", Ok("example.com"));
        check_norm("example.com.", Ok("example.com"));
        check_norm("example.com..", Err(EmptyLabel));
        check_norm(".", Err(Empty));
        check_norm("", Err(Empty));
        check_norm("a..b", Err(EmptyLabel));
        check_norm(".a", Err(EmptyLabel));
        check_norm("_dmarc.example.com", Ok("_dmarc.example.com"));
        check_norm("-a.example.com", Err(HyphenAtLabelEdge));
        check_norm("a b.com", Err(InvalidChar(' ')));
        check_norm("a/b.com", Err(InvalidChar('/')));
        check_norm("1.2.3.4", Err(IpLiteral));
        check_norm("1.2.3.4.", Err(IpLiteral));
        check_norm("::1", Err(IpLiteral));
        check_norm("[::1]", Err(InvalidChar('[')));
        check_norm("0x7f.1", Err(IpLiteral));
        check_norm("host.123", Err(IpLiteral));
        check_norm("123.host", Ok("123.host"));
        check_norm("bücher.example", Ok("xn--bcher-kva.example"));
        check_norm("BÜCHER.example.", Ok("xn--bcher-kva.example"));
        check_norm("xn--bcher-kva.example", Ok("xn--bcher-kva.example"));
        check_norm("XN--BCHER-KVA.example", Ok("xn--bcher-kva.example"));
        check_norm(&format!("{}.com", "a".repeat(63)), Ok(&format!("{}.com", "a".repeat(63))));
        check_norm(&format!("{}.com", "a".repeat(64)), Err(LabelTooLong(64)));
        // Refused before IDNA (whose punycode work is quadratic in a label).
        check_norm(&format!("xn--{}.bücher", "a".repeat(60)), Err(LabelTooLong(64)));
        check_norm(&format!("{}.example", "ü".repeat(127)), Err(LabelTooLong(254)));
        check_norm(&format!("{}.example", "ü".repeat(60)), Err(LabelTooLong(66)));
        check_norm(&format!("{}ü", "ab。".repeat(340)), Err(NameTooLong(1702)));
        let long = vec!["abcdefghi"; 26].join("."); // 26*10-1 = 259
        check_norm(&long, Err(NameTooLong(259)));
    }

    fn set(patterns: &[&str]) -> NameSet {
        let mut s = NameSet::default();
        for p in patterns {
            s.insert(Pattern::parse(p).unwrap());
        }
        s
    }

    #[test]
    fn matching_table() {
        // (patterns, name, allowed)
        let cases: &[(&[&str], &str, bool)] = &[
            (&["example.com"], "example.com", true),
            (&["example.com"], "www.example.com", false),
            (&["example.com"], "example.com.evil", false),
            (&["example.com"], "notexample.com", false),
            (&["*.example.com"], "example.com", false),
            (&["*.example.com"], "a.example.com", true),
            (&["*.example.com"], "a.b.c.example.com", true),
            (&["*.example.com"], "aexample.com", false),
            (&["*.example.com"], "example.com.evil.org", false),
            (&["*.example.com", "example.com"], "example.com", true),
            (&["*"], "anything.at.all", true),
            (&["*"], "localhost", true),
            (&[], "example.com", false),
            (&["bücher.example"], "xn--bcher-kva.example", true),
            (&["*.co.uk"], "bbc.co.uk", true),
            (&["github.com"], "gitHub.com", false), // callers normalise first
        ];
        for (patterns, name, expect) in cases {
            let s = set(patterns);
            assert_eq!(s.contains(name), *expect, "{patterns:?} vs {name}");
            assert_eq!(s.find(name).is_some(), *expect, "{patterns:?} vs {name}");
        }
    }

    #[test]
    fn most_specific_pattern_wins() {
        let s = set(&["*", "*.example.com", "*.b.example.com", "a.b.example.com"]);
        assert_eq!(s.find("a.b.example.com"), Some(Pattern::Exact("a.b.example.com".into())));
        assert_eq!(s.find("x.b.example.com"), Some(Pattern::Subdomains("b.example.com".into())));
        assert_eq!(s.find("x.example.com"), Some(Pattern::Subdomains("example.com".into())));
        assert_eq!(s.find("other.org"), Some(Pattern::Any));
    }

    #[test]
    fn pattern_errors() {
        use NameError::*;
        let cases: &[(&str, NameError)] = &[
            ("*.", Empty),
            ("*..com", EmptyLabel),
            ("**.com", BadWildcard),
            ("a.*.com", BadWildcard),
            ("*example.com", BadWildcard),
            ("*.*.com", BadWildcard),
            ("10.0.0.1", IpLiteral),
            ("*.10.0.0.1", IpLiteral),
        ];
        for (input, expect) in cases {
            assert_eq!(Pattern::parse(input).as_ref(), Err(expect), "{input}");
        }
        assert_eq!(Pattern::parse(" *.Example.com. "), Ok(Pattern::Subdomains("example.com".into())));
    }
}
