//! Host names: one normaliser for policy entries, SNI, Host headers and DNS
//! questions, and the suffix-hashed matcher built from the policy's patterns.
//!
//! Pure: no I/O, no clock. Everything that compares names goes through
//! [`normalize`], so a name is spelled the same way wherever it is checked.

use std::collections::HashSet;
use std::fmt;
use std::sync::OnceLock;

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
/// A `/regex/` entry's source, at most (a name is at most 253 characters;
/// a pattern this long is a mistake or an attack on the compiler).
const MAX_REGEX_LEN: usize = 1024;
/// The compiled program of one `/regex/` entry, at most (the regex crate's
/// own default is 10 MiB): enough for any sane name pattern.
const REGEX_SIZE_LIMIT: usize = 1 << 20;

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
    /// A mid-name `*` pattern that cannot be used, and why.
    BadGlob(&'static str),
    /// A `/regex/` entry that does not compile, with the compiler's words.
    BadRegex(String),
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
            NameError::BadGlob(why) => write!(f, "bad '*' pattern: {why}"),
            NameError::BadRegex(why) => write!(f, "bad /regex/: {why}"),
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
    /// `api-*.example.com`: each `*` stands for one or more characters,
    /// dots included (g0efilter's meaning), so `api-*.example.com` matches
    /// `api-1.example.com` and `api-a.b.example.com`. Lowercase ASCII.
    Glob(String),
    /// `/^api[0-9]+\.example\.com$/`: the source between the slashes,
    /// matched against the whole normalised name (anchored), ASCII case
    /// folded. Validated (and size-bounded) when parsed.
    Regex(String),
}

impl Pattern {
    pub fn parse(input: &str) -> Result<Pattern, NameError> {
        let s = input.trim();
        if s == "*" {
            return Ok(Pattern::Any);
        }
        if let Some(src) = s.strip_prefix('/').and_then(|r| r.strip_suffix('/')) {
            compile_regex(src)?;
            return Ok(Pattern::Regex(src.to_owned()));
        }
        if let Some(rest) = s.strip_prefix("*.") {
            if !rest.contains('*') {
                return Ok(Pattern::Subdomains(normalize(rest)?));
            }
        }
        if s.contains('*') {
            return parse_glob(s).map(Pattern::Glob);
        }
        Ok(Pattern::Exact(normalize(s)?))
    }

    /// What the entry means, in a few words (`egret check --explain`).
    pub fn describe(&self) -> &'static str {
        match self {
            Pattern::Any => "'*', every name",
            Pattern::Exact(_) => "an exact name",
            Pattern::Subdomains(_) => "a subdomain wildcard (any depth, not the name itself)",
            Pattern::Glob(_) => "a '*' pattern (each '*' is one or more characters, dots included)",
            Pattern::Regex(_) => "a regular expression over the whole name",
        }
    }
}

/// A mid-name `*` pattern: lowercased; what is between the stars must be
/// what a name may hold (letters, digits, `-`, `_`, `.`), and two stars in
/// a row mean nothing more than one.
fn parse_glob(s: &str) -> Result<String, NameError> {
    let glob = s.strip_suffix('.').unwrap_or(s).to_ascii_lowercase();
    if !glob.is_ascii() {
        return Err(NameError::BadGlob("write internationalised labels in punycode (xn--...)"));
    }
    if glob.contains("**") {
        return Err(NameError::BadGlob("'**' (one '*' already spans dots)"));
    }
    if glob.len() > MAX_NAME_LEN {
        return Err(NameError::NameTooLong(glob.len()));
    }
    if glob.contains("..") || glob.starts_with('.') {
        return Err(NameError::EmptyLabel);
    }
    if let Some(c) = glob
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.' | '*')))
    {
        return Err(NameError::InvalidChar(c));
    }
    Ok(glob)
}

/// Whether `name` matches `glob`, each `*` standing for one or more
/// characters. The fragments between stars are found leftmost first,
/// which is exact for patterns whose only metacharacter is `*`:
/// O(name × pattern), no backtracking.
pub fn glob_matches(glob: &str, name: &str) -> bool {
    let mut parts = glob.split('*');
    let first = parts.next().unwrap_or("");
    let Some(mut rest) = name.strip_prefix(first) else { return false };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else { return rest.is_empty() };
    for part in parts {
        // The star before `part` takes at least one character.
        let Some(i) = rest.get(1..).and_then(|r| r.find(part)) else { return false };
        rest = &rest[1 + i + part.len()..];
    }
    rest.len() > last.len() && rest.ends_with(last)
}

/// `src` matched against the whole name: one group, so an alternation
/// inside cannot escape the anchors (the source compiles alone first).
fn anchored(src: &str) -> String {
    format!("^(?:{src})$")
}

/// Every entry's flags, for it alone and in the set: bytes, ASCII case
/// folding, bounded size.
fn regex_builder(src: &str) -> regex::bytes::RegexBuilder {
    let mut b = regex::bytes::RegexBuilder::new(&anchored(src));
    b.unicode(false).case_insensitive(true).size_limit(REGEX_SIZE_LIMIT);
    b
}

/// Compiles one `/regex/` entry (anchored), or says why it cannot be.
fn compile_regex(src: &str) -> Result<regex::bytes::Regex, NameError> {
    if src.is_empty() {
        return Err(NameError::BadRegex("empty".into()));
    }
    if src.len() > MAX_REGEX_LEN {
        return Err(NameError::BadRegex(format!("{} characters (at most {MAX_REGEX_LEN})", src.len())));
    }
    // The source must stand on its own: wrapped unchecked, `x)|(.*`
    // would close the anchoring group and match every name.
    let mut alone = regex::bytes::RegexBuilder::new(src);
    alone.unicode(false).size_limit(REGEX_SIZE_LIMIT);
    alone.build().and_then(|_| regex_builder(src).build()).map_err(|e| {
        // The compiler's message spans lines (a caret under the source):
        // one line is what a policy error list can show.
        let text = e.to_string();
        let last = text.lines().last().unwrap_or("does not compile").trim();
        NameError::BadRegex(last.strip_prefix("error: ").unwrap_or(last).to_owned())
    })
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Pattern::Any => f.write_str("*"),
            Pattern::Exact(n) => f.write_str(n),
            Pattern::Subdomains(n) => write!(f, "*.{n}"),
            Pattern::Glob(g) => f.write_str(g),
            Pattern::Regex(r) => write!(f, "/{r}/"),
        }
    }
}

/// The `/regex/` entries of a set: their sources, and one `RegexSet` of
/// them all, compiled once on first use (or by [`NameSet::prepare`]) so a
/// thousand entries cost one pass over the name, not a thousand.
#[derive(Debug, Clone, Default)]
struct Regexes {
    sources: Vec<String>,
    compiled: OnceLock<Option<regex::bytes::RegexSet>>,
}

impl PartialEq for Regexes {
    fn eq(&self, other: &Regexes) -> bool {
        self.sources == other.sources
    }
}
impl Eq for Regexes {}

impl Regexes {
    fn set(&self) -> Option<&regex::bytes::RegexSet> {
        self.compiled
            .get_or_init(|| {
                if self.sources.is_empty() {
                    return None;
                }
                let anchored: Vec<String> = self.sources.iter().map(|s| anchored(s)).collect();
                // Each entry compiled alone within REGEX_SIZE_LIMIT when it
                // was parsed; together they may take that much each.
                let limit = REGEX_SIZE_LIMIT.saturating_mul(self.sources.len());
                // The flags of `regex_builder`.
                regex::bytes::RegexSetBuilder::new(anchored)
                    .unicode(false)
                    .case_insensitive(true)
                    .size_limit(limit)
                    .build()
                    .ok()
            })
            .as_ref()
    }

    fn first_match(&self, name: &str) -> Option<&str> {
        let set = self.set()?;
        // Which entries matched costs more than whether any did: a miss,
        // the common case, stops at the cheap question.
        if !set.is_match(name.as_bytes()) {
            return None;
        }
        let i = set.matches(name.as_bytes()).iter().next()?;
        Some(&self.sources[i])
    }
}

/// The compiled domain allowlist. A lookup hashes the name and each of its
/// parent suffixes, so it costs O(labels), whatever the list's length.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NameSet {
    any: bool,
    exact: HashSet<String>,
    subdomains: HashSet<String>,
    /// Asked only when the hashed sets miss, in entry order.
    globs: Vec<String>,
    regexes: Regexes,
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
            Pattern::Glob(g) => {
                if !self.globs.contains(&g) {
                    self.globs.push(g);
                }
            }
            Pattern::Regex(r) => {
                if !self.regexes.sources.contains(&r) {
                    self.regexes.sources.push(r);
                    self.regexes.compiled = OnceLock::new();
                }
            }
        }
    }

    /// Compiles the `/regex/` entries now rather than on the first lookup,
    /// so no connection waits for it. Each entry compiled alone when it was
    /// parsed; this fails only if together they exceed the size limit.
    pub fn prepare(&self) -> Result<(), NameError> {
        if !self.regexes.sources.is_empty() && self.regexes.set().is_none() {
            return Err(NameError::BadRegex(format!(
                "the {} /regex/ entries together exceed the compiled size limit",
                self.regexes.sources.len()
            )));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        usize::from(self.any)
            + self.exact.len()
            + self.subdomains.len()
            + self.globs.len()
            + self.regexes.sources.len()
    }

    /// Whether `*` is in the set: every name, and (as in g0efilter) an IP
    /// literal where a name should be, is allowed.
    pub fn matches_everything(&self) -> bool {
        self.any
    }

    /// The pattern that allows `name`, which must already be normalised.
    /// The most specific pattern wins: exact, then the nearest `*.` parent,
    /// then the first `*` pattern, then the first `/regex/`, then `*`.
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
        if let Some(g) = self.globs.iter().find(|g| glob_matches(g, name)) {
            return Some(Pattern::Glob(g.clone()));
        }
        if let Some(r) = self.regexes.first_match(name) {
            return Some(Pattern::Regex(r.to_owned()));
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
        self.globs.iter().any(|g| glob_matches(g, name))
            || self.regexes.set().is_some_and(|s| s.is_match(name.as_bytes()))
    }

    /// Every pattern, sorted, for display.
    pub fn patterns(&self) -> Vec<Pattern> {
        let mut out: Vec<Pattern> = Vec::with_capacity(self.len());
        if self.any {
            out.push(Pattern::Any);
        }
        out.extend(self.exact.iter().cloned().map(Pattern::Exact));
        out.extend(self.subdomains.iter().cloned().map(Pattern::Subdomains));
        out.extend(self.globs.iter().cloned().map(Pattern::Glob));
        out.extend(self.regexes.sources.iter().cloned().map(Pattern::Regex));
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
        Pattern::Glob(g) => (reversed(g), 3),
        Pattern::Regex(r) => (format!("~{r}"), 4),
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
            ("**.com", BadGlob("'**' (one '*' already spans dots)")),
            ("a.*..com", EmptyLabel),
            ("a*b c.com", InvalidChar(' ')),
            ("*.bücher*.example", BadGlob("write internationalised labels in punycode (xn--...)")),
            ("10.0.0.1", IpLiteral),
            ("*.10.0.0.1", IpLiteral),
        ];
        for (input, expect) in cases {
            assert_eq!(Pattern::parse(input).as_ref(), Err(expect), "{input}");
        }
        assert_eq!(Pattern::parse(" *.Example.com. "), Ok(Pattern::Subdomains("example.com".into())));
    }

    #[test]
    fn mid_name_stars_span_one_or_more_characters_dots_included() {
        // (glob, name, matches)
        let cases: &[(&str, &str, bool)] = &[
            ("api-*.example.com", "api-1.example.com", true),
            ("api-*.example.com", "api-a.b.example.com", true),
            ("api-*.example.com", "api-.example.com", false),
            ("api-*.example.com", "api-1.example.com.evil", false),
            ("api-*.example.com", "xapi-1.example.com", false),
            ("*example.com", "myexample.com", true),
            ("*example.com", "a.b.example.com", true),
            ("*example.com", "example.com", false),
            ("a.*.com", "a.b.com", true),
            ("a.*.com", "a..com", false),
            ("a.*.com", "a.com", false),
            ("cdn*", "cdn1.example.org", true),
            ("cdn*", "cdn", false),
            ("*-*.example.com", "a-b.example.com", true),
            ("*-*.example.com", "-b.example.com", false),
            ("*-*.example.com", "a-.example.com", false),
            ("*.*.com", "a.b.com", true),
            ("*.*.com", "a.com", false),
            ("x*x", "xx", false),
            ("x*x", "xax", true),
            ("*ab*ab", "abab", false),
            ("*ab*ab", "xabyab", true),
        ];
        for (glob, name, expect) in cases {
            assert_eq!(glob_matches(glob, name), *expect, "{glob} vs {name}");
            let p = Pattern::parse(glob).expect(glob);
            assert_eq!(p, Pattern::Glob((*glob).into()));
            assert_eq!(set(&[glob]).contains(name), *expect, "{glob} vs {name} in a set");
        }
        assert_eq!(Pattern::parse("API-*.Example.COM."), Ok(Pattern::Glob("api-*.example.com".into())));
        // `*.name` alone is still the subdomain wildcard.
        assert_eq!(Pattern::parse("*.example.com"), Ok(Pattern::Subdomains("example.com".into())));
    }

    #[test]
    fn regexes_are_anchored_case_folded_and_bounded() {
        let s = set(&["/api[0-9]+\\.example\\.com/", "/(www|cdn)\\.example\\.org/"]);
        for (name, expect) in [
            ("api1.example.com", true),
            ("api42.example.com", true),
            ("api.example.com", false),
            ("xapi1.example.com", false),
            ("api1.example.com.evil", false),
            ("cdn.example.org", true),
            ("img.example.org", false),
        ] {
            assert_eq!(s.contains(name), expect, "{name}");
            assert_eq!(s.find(name).is_some(), expect, "{name}");
        }
        assert_eq!(
            s.find("www.example.org"),
            Some(Pattern::Regex("(www|cdn)\\.example\\.org".into())),
            "the entry that matched is named"
        );
        assert!(set(&["/API\\.example\\.com/"]).contains("api.example.com"), "ASCII case folded");
        assert!(set(&["/\\d+\\.example/"]).contains("12.example"), "ASCII classes without Unicode tables");
        for (src, why) in [
            ("//", "empty"),
            ("/(/", "unclosed group"),
            ("/x)|(.*/", "unopened group"),
            ("/a{1000}{1000}/", "exceeds size limit"),
        ] {
            match Pattern::parse(src) {
                Err(NameError::BadRegex(m)) => assert!(m.contains(why), "{src}: {m}"),
                other => panic!("{src}: {other:?}"),
            }
        }
        let long = format!("/{}/", "a".repeat(MAX_REGEX_LEN + 1));
        assert!(matches!(Pattern::parse(&long), Err(NameError::BadRegex(_))));
    }

    #[test]
    fn cheap_sets_answer_before_patterns() {
        let s = set(&["/.*/", "*.example.com", "a*", "a.example.com", "*"]);
        assert_eq!(s.find("a.example.com"), Some(Pattern::Exact("a.example.com".into())));
        assert_eq!(s.find("b.example.com"), Some(Pattern::Subdomains("example.com".into())));
        assert_eq!(s.find("abc.org"), Some(Pattern::Glob("a*".into())));
        assert_eq!(s.find("zzz.org"), Some(Pattern::Regex(".*".into())));
        assert_eq!(s.len(), 5);
        let again = set(&["/.*/", "/.*/", "a*", "a*"]);
        assert_eq!(again.len(), 2, "duplicates count once");
    }
}
