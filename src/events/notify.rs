//! `NOTIFICATION_URLS`: alert targets written as shoutrrr-style service
//! URLs (g0efilter's later variable), parsed into a [`Target`], and the
//! exact HTTP request ([`Request`]) each target sends for an [`Alert`].
//!
//! Pure: no I/O, and no import from the rest of egret (the config
//! parses with it). The worker in [`super::gotify`] sends the requests with
//! egret's marked client. Tokens, passwords, ntfy topics and generic URL
//! paths are secrets: [`Target`]'s `Display` and `Debug` redact them, and
//! [`Target::scrub`] removes them from any text (an error from a server).
//!
//! Forms accepted (shoutrrr's, see README "Alerts"):
//! - `gotify://host[:port][/path]/TOKEN` (`?disabletls=yes` for http,
//!   `?priority=N`)
//! - `ntfy://[user:pass@]host[:port]/topic` and `ntfy://:token@host/topic`
//!   (`?scheme=http`, `?priority=1..5|min|low|default|high|max`)
//! - `slack://hook:A-B-C@webhook` and the older `slack://[name@]A/B/C`
//!   (incoming webhooks only)
//! - `discord://TOKEN@WEBHOOK_ID`
//! - `generic+https://host/path`, `generic+http://…` (the URL as written)
//!   and `generic://host/path` (https unless `?disabletls=yes`)

use std::fmt;

/// Where Slack incoming webhooks live (`…/A/B/C`).
pub const SLACK_HOOKS: &str = "https://hooks.slack.com/services";
/// Where Discord webhooks live (`…/ID/TOKEN`).
pub const DISCORD_WEBHOOKS: &str = "https://discord.com/api/webhooks";
/// ntfy's public server, the host when a URL names none.
pub const NTFY_DEFAULT_HOST: &str = "ntfy.sh";
/// ntfy's priority for a blocked connection: "high" (Gotify's 8 of 10).
pub const NTFY_PRIORITY: u8 = 4;
/// Discord refuses a `content` longer than this many characters.
pub const DISCORD_MAX: usize = 2000;

/// One notification, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    pub title: String,
    pub message: String,
    pub priority: u8,
}

impl Alert {
    /// The `application/x-www-form-urlencoded` body Gotify's
    /// `POST /message` takes.
    pub fn form(&self) -> String {
        format!(
            "title={}&message={}&priority={}",
            form_encode(&self.title),
            form_encode(&self.message),
            self.priority
        )
    }
}

/// `application/x-www-form-urlencoded` (WHATWG): unreserved bytes as-is,
/// space as `+`, everything else `%XX`.
pub fn form_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for &b in s.as_bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'*' | b'-' | b'.' | b'_' => out.push(b as char),
            b' ' => out.push('+'),
            _ => {
                const HEX: &[u8; 16] = b"0123456789ABCDEF";
                out.push('%');
                out.push(HEX[usize::from(b >> 4)] as char);
                out.push(HEX[usize::from(b & 15)] as char);
            }
        }
    }
    out
}

/// One alert destination.
#[derive(Clone, PartialEq, Eq)]
pub enum Target {
    /// `base` is `http(s)://host[:port][/path]`, no trailing slash.
    Gotify {
        base: String,
        token: String,
        priority: Option<u8>,
    },
    /// `base` is `http(s)://host[:port]`.
    Ntfy {
        base: String,
        topic: String,
        auth: Option<NtfyAuth>,
        priority: u8,
    },
    /// The three parts of an incoming webhook's path.
    Slack {
        parts: [String; 3],
    },
    Discord {
        id: String,
        token: String,
    },
    /// The whole `http(s)://` URL posted to.
    Generic {
        url: String,
    },
}

#[derive(Clone, PartialEq, Eq)]
pub enum NtfyAuth {
    Basic { user: String, pass: String },
    Bearer(String),
}

/// A request ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: &'static str,
    pub url: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// One bad `NOTIFICATION_URLS` entry. Holds no secret: only the position,
/// the scheme and what was expected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UrlError {
    /// 1-based position in the comma list.
    pub position: usize,
    pub scheme: String,
    pub expected: String,
}

impl fmt::Display for UrlError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "entry {} ({}): expected {}", self.position, self.scheme, self.expected)
    }
}

impl std::error::Error for UrlError {}

const SCHEMES: &str =
    "one of gotify://, ntfy://, slack://, discord://, generic://, generic+https://, generic+http://";
const GOTIFY_FORM: &str = "gotify://host[:port][/path]/TOKEN[?disabletls=yes][&priority=0..10]";
const NTFY_FORM: &str =
    "ntfy://[user:pass@]host[:port]/topic or ntfy://:token@host/topic [?scheme=http|https][&priority=1..5]";
const SLACK_FORM: &str =
    "slack://hook:A-B-C@webhook or slack://A/B/C (an incoming webhook's three token parts)";
const DISCORD_FORM: &str = "discord://TOKEN@WEBHOOK_ID (the webhook id is numeric)";
const GENERIC_FORM: &str = "generic+https://host[:port]/path, generic+http://… or generic://host[:port]/path";

/// Parses `NOTIFICATION_URLS`: every entry, every problem at once.
pub fn parse_urls(list: &str) -> Result<Vec<Target>, Vec<UrlError>> {
    let (mut ok, mut bad) = (Vec::new(), Vec::new());
    for (i, entry) in list.split(',').map(str::trim).filter(|s| !s.is_empty()).enumerate() {
        match Target::parse(entry) {
            Ok(t) => ok.push(t),
            Err(expected) => bad.push(UrlError { position: i + 1, scheme: scheme_of(entry), expected }),
        }
    }
    if bad.is_empty() {
        Ok(ok)
    } else {
        Err(bad)
    }
}

/// The scheme as an error may show it (never more of the URL).
fn scheme_of(entry: &str) -> String {
    match entry.split_once("://") {
        Some((s, _))
            if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b)) =>
        {
            format!("{}://", s.to_ascii_lowercase())
        }
        _ => "no scheme".into(),
    }
}

/// `scheme://rest`, split into authority, path and query.
struct Parts<'a> {
    userinfo: Option<&'a str>,
    hostport: &'a str,
    /// Without the leading `/`.
    path: &'a str,
    query: Vec<(String, String)>,
    raw_query: &'a str,
}

fn split(rest: &str) -> Parts<'_> {
    let rest = rest.split('#').next().unwrap_or("");
    let (before, raw_query) = rest.split_once('?').unwrap_or((rest, ""));
    // The authority ends at the first `/` after the last `@` (a Slack
    // token may hold `/` before its `@`).
    let at = before.rfind('@');
    let (userinfo, after) = match at {
        Some(i) => (Some(&before[..i]), &before[i + 1..]),
        None => (None, before),
    };
    let (hostport, path) = after.split_once('/').unwrap_or((after, ""));
    let query = raw_query
        .split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (pct_decode(k).to_ascii_lowercase(), pct_decode(v))
        })
        .collect();
    Parts { userinfo, hostport, path, query, raw_query }
}

impl Parts<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }
}

fn pct_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h << 4 | l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn yes(v: &str) -> Result<bool, ()> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" | "on" => Ok(true),
        "no" | "false" | "0" | "off" | "" => Ok(false),
        _ => Err(()),
    }
}

/// A host[:port] that a URL can carry: no spaces, no stray delimiters.
fn valid_hostport(h: &str) -> bool {
    !h.is_empty()
        && !h.starts_with(':')
        && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"-._:[]".contains(&b))
}

fn token_ok(t: &str) -> bool {
    !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic() && !b"/?#@".contains(&b))
}

impl Target {
    /// One URL. The error says which form was expected.
    pub fn parse(url: &str) -> Result<Target, String> {
        let Some((scheme, rest)) = url.split_once("://") else {
            return Err(SCHEMES.into());
        };
        match scheme.to_ascii_lowercase().as_str() {
            "gotify" => gotify(rest),
            "ntfy" => ntfy(rest),
            "slack" => slack(rest),
            "discord" => discord(rest),
            "generic" => generic(rest),
            s @ ("generic+https" | "generic+http") => {
                let inner = format!("{}://{rest}", &s["generic+".len()..]);
                let p = split(rest);
                if p.userinfo.is_some() || !valid_hostport(p.hostport) || url.contains(char::is_whitespace) {
                    return Err(GENERIC_FORM.into());
                }
                Ok(Target::Generic { url: inner })
            }
            _ => Err(SCHEMES.into()),
        }
    }

    /// The legacy `NOTIFICATION_HOST` + `NOTIFICATION_KEY` pair (host as
    /// the config normalised it), sent exactly as before.
    pub fn gotify_host(host: &str, key: &str) -> Target {
        Target::Gotify { base: host.trim_end_matches('/').to_owned(), token: key.to_owned(), priority: None }
    }

    /// The service's name, for thread names and logs.
    pub fn service(&self) -> &'static str {
        match self {
            Target::Gotify { .. } => "gotify",
            Target::Ntfy { .. } => "ntfy",
            Target::Slack { .. } => "slack",
            Target::Discord { .. } => "discord",
            Target::Generic { .. } => "generic",
        }
    }

    /// Every secret of this target, for [`Target::scrub`].
    fn secrets(&self) -> Vec<&str> {
        match self {
            Target::Gotify { token, .. } => vec![token],
            Target::Ntfy { topic, auth, .. } => {
                let mut v = vec![topic.as_str()];
                match auth {
                    Some(NtfyAuth::Basic { user: _, pass }) => v.push(pass),
                    Some(NtfyAuth::Bearer(t)) => v.push(t),
                    None => {}
                }
                v
            }
            Target::Slack { parts } => parts.iter().map(String::as_str).collect(),
            Target::Discord { token, .. } => vec![token],
            Target::Generic { url } => {
                let rest = url.split_once("://").map_or("", |x| x.1);
                match rest.find(['/', '?']) {
                    Some(i) if rest.len() > i + 1 => vec![&rest[i + 1..]],
                    _ => vec![],
                }
            }
        }
    }

    /// `text` with every secret of this target replaced by `***` (a
    /// server's error may echo the URL or the token).
    pub fn scrub(&self, text: &str) -> String {
        let mut out = text.to_owned();
        let mut secrets = self.secrets();
        secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        for s in secrets.into_iter().filter(|s| s.len() >= 3) {
            out = out.replace(s, "***");
        }
        out
    }

    /// The request that delivers `alert` here.
    pub fn request(&self, alert: &Alert) -> Request {
        let json = |v: serde_json::Value| -> Vec<u8> { v.to_string().into_bytes() };
        let json_header = ("Content-Type", "application/json".to_owned());
        match self {
            Target::Gotify { base, token, priority } => {
                let a = Alert { priority: priority.unwrap_or(alert.priority), ..alert.clone() };
                Request {
                    method: "POST",
                    url: format!("{base}/message"),
                    headers: vec![
                        ("X-Gotify-Key", token.clone()),
                        ("Content-Type", "application/x-www-form-urlencoded".to_owned()),
                    ],
                    body: a.form().into_bytes(),
                }
            }
            Target::Ntfy { base, topic, auth, priority } => {
                // ntfy's JSON publishing: POST to the root, the topic in
                // the body (no header encoding of non-ASCII titles).
                let mut headers = vec![json_header];
                match auth {
                    Some(NtfyAuth::Basic { user, pass }) => headers
                        .push(("Authorization", format!("Basic {}", base64(&format!("{user}:{pass}"))))),
                    Some(NtfyAuth::Bearer(t)) => headers.push(("Authorization", format!("Bearer {t}"))),
                    None => {}
                }
                Request {
                    method: "POST",
                    url: format!("{base}/"),
                    headers,
                    body: json(serde_json::json!({
                        "topic": topic,
                        "title": alert.title,
                        "message": alert.message,
                        "priority": priority,
                    })),
                }
            }
            Target::Slack { parts } => Request {
                method: "POST",
                url: format!("{SLACK_HOOKS}/{}/{}/{}", parts[0], parts[1], parts[2]),
                headers: vec![json_header],
                body: json(serde_json::json!({
                    "text": format!("{}\n{}", slack_escape(&alert.title), slack_escape(&alert.message)),
                })),
            },
            Target::Discord { id, token } => {
                let content: String =
                    format!("{}\n{}", alert.title, alert.message).chars().take(DISCORD_MAX).collect();
                Request {
                    method: "POST",
                    url: format!("{DISCORD_WEBHOOKS}/{id}/{token}"),
                    headers: vec![json_header],
                    // Names in alerts come from the workload: no
                    // @everyone or role pings, whatever they say.
                    body: json(serde_json::json!({
                        "content": content,
                        "allowed_mentions": { "parse": [] },
                    })),
                }
            }
            Target::Generic { url } => Request {
                method: "POST",
                url: url.clone(),
                headers: vec![json_header],
                body: json(serde_json::json!({ "title": alert.title, "message": alert.message })),
            },
        }
    }
}

fn gotify(rest: &str) -> Result<Target, String> {
    let p = split(rest);
    let path = p.path.trim_end_matches('/');
    let (sub, token) = path.rsplit_once('/').unwrap_or(("", path));
    if p.userinfo.is_some() || !valid_hostport(p.hostport) || !token_ok(token) {
        return Err(GOTIFY_FORM.into());
    }
    let tls = match p.get("disabletls").map(yes) {
        None => true,
        Some(Ok(off)) => !off,
        Some(Err(())) => return Err(format!("{GOTIFY_FORM} (disabletls is yes or no)")),
    };
    let priority = match p.get("priority") {
        None => None,
        Some(v) => match v.parse::<u8>() {
            Ok(n) if n <= 10 => Some(n),
            _ => return Err(format!("{GOTIFY_FORM} (priority is 0..10)")),
        },
    };
    let scheme = if tls { "https" } else { "http" };
    let sub = if sub.is_empty() { String::new() } else { format!("/{sub}") };
    Ok(Target::Gotify { base: format!("{scheme}://{}{sub}", p.hostport), token: token.to_owned(), priority })
}

fn ntfy(rest: &str) -> Result<Target, String> {
    let p = split(rest);
    let topic = p.path.trim_end_matches('/');
    if !token_ok(topic) || !(p.hostport.is_empty() || valid_hostport(p.hostport)) {
        return Err(NTFY_FORM.into());
    }
    let host = if p.hostport.is_empty() { NTFY_DEFAULT_HOST } else { p.hostport };
    let auth = match p.userinfo {
        None => None,
        Some(ui) => {
            let (user, pass) = ui.split_once(':').unwrap_or((ui, ""));
            let (user, pass) = (pct_decode(user), pct_decode(pass));
            match (user.is_empty(), pass.is_empty()) {
                (true, false) => Some(NtfyAuth::Bearer(pass)),
                (false, _) => Some(NtfyAuth::Basic { user, pass }),
                (true, true) => return Err(NTFY_FORM.into()),
            }
        }
    };
    let scheme = match p.get("scheme").map(str::to_ascii_lowercase).as_deref() {
        None | Some("https") => "https",
        Some("http") => "http",
        Some(_) => return Err(format!("{NTFY_FORM} (scheme is http or https)")),
    };
    let priority = match p.get("priority").map(str::to_ascii_lowercase).as_deref() {
        None => NTFY_PRIORITY,
        Some("1" | "min") => 1,
        Some("2" | "low") => 2,
        Some("3" | "default") => 3,
        Some("4" | "high") => 4,
        Some("5" | "max" | "urgent") => 5,
        Some(_) => return Err(format!("{NTFY_FORM} (priority is 1..5 or min, low, default, high, max)")),
    };
    Ok(Target::Ntfy { base: format!("{scheme}://{host}"), topic: topic.to_owned(), auth, priority })
}

fn slack(rest: &str) -> Result<Target, String> {
    let p = split(rest);
    let path = p.path.trim_end_matches('/');
    let joined = match p.userinfo {
        // slack://hook:A-B-C@webhook (or with `/` between the parts).
        Some(ui) if ui.to_ascii_lowercase().starts_with("hook:") => {
            if !p.hostport.eq_ignore_ascii_case("webhook") || !path.is_empty() {
                return Err(SLACK_FORM.into());
            }
            ui["hook:".len()..].to_owned()
        }
        Some(ui) if ui.to_ascii_lowercase().starts_with("xox") => {
            return Err(format!("{SLACK_FORM}; Slack bot API tokens are not supported"));
        }
        // slack://[botname@]A/B/C: the bot name is not used by webhooks.
        _ => format!("{}/{path}", p.hostport),
    };
    let parts: Vec<&str> = joined.split(['-', '/']).collect();
    match parts.as_slice() {
        [a, b, c]
            if [a, b, c].iter().all(|s| !s.is_empty() && s.bytes().all(|x| x.is_ascii_alphanumeric())) =>
        {
            Ok(Target::Slack { parts: [a.to_string(), b.to_string(), c.to_string()] })
        }
        _ => Err(SLACK_FORM.into()),
    }
}

fn discord(rest: &str) -> Result<Target, String> {
    let p = split(rest);
    let id = p.hostport;
    match p.userinfo {
        Some(token)
            if token_ok(token)
                && !token.contains(':')
                && !id.is_empty()
                && id.bytes().all(|b| b.is_ascii_digit())
                && p.path.trim_end_matches('/').is_empty() =>
        {
            Ok(Target::Discord { id: id.to_owned(), token: token.to_owned() })
        }
        _ => Err(DISCORD_FORM.into()),
    }
}

/// `generic://host/path`: https unless `disabletls`; shoutrrr's own
/// options are taken out, other query variables are forwarded.
fn generic(rest: &str) -> Result<Target, String> {
    let p = split(rest);
    if p.userinfo.is_some() || !valid_hostport(p.hostport) || rest.contains(char::is_whitespace) {
        return Err(GENERIC_FORM.into());
    }
    let tls = match p.get("disabletls").map(yes) {
        None => true,
        Some(Ok(off)) => !off,
        Some(Err(())) => return Err(format!("{GENERIC_FORM} (disabletls is yes or no)")),
    };
    if p.get("template").is_some_and(|t| !t.eq_ignore_ascii_case("json")) {
        return Err(format!("{GENERIC_FORM} (only template=json)"));
    }
    const OURS: &[&str] = &["disabletls", "template", "contenttype", "titlekey", "messagekey", "method"];
    let forwarded: Vec<&str> = p
        .raw_query
        .split('&')
        .filter(|kv| {
            let k = kv.split('=').next().unwrap_or("").to_ascii_lowercase();
            !kv.is_empty() && !OURS.contains(&k.as_str())
        })
        .map(|kv| kv.strip_prefix('_').unwrap_or(kv))
        .collect();
    let scheme = if tls { "https" } else { "http" };
    let path = if p.path.is_empty() { String::new() } else { format!("/{}", p.path) };
    let query = if forwarded.is_empty() { String::new() } else { format!("?{}", forwarded.join("&")) };
    Ok(Target::Generic { url: format!("{scheme}://{}{path}{query}", p.hostport) })
}

/// Slack's three control characters in message text.
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

/// Standard base64 with padding (RFC 4648), for HTTP Basic.
fn base64(s: &str) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in s.as_bytes().chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = u32::from(b[0]) << 16 | u32::from(b[1]) << 8 | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Redacted: the service, where it is, never a secret.
impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Gotify { base, .. } => write!(f, "gotify {base} (token ***)"),
            Target::Ntfy { base, auth, .. } => {
                let who = if auth.is_some() { "***@" } else { "" };
                let (scheme, host) = base.split_once("://").unwrap_or(("https", base));
                write!(f, "ntfy {scheme}://{who}{host}/***")
            }
            Target::Slack { .. } => write!(f, "slack {SLACK_HOOKS}/***"),
            Target::Discord { id, .. } => write!(f, "discord {DISCORD_WEBHOOKS}/{id}/***"),
            Target::Generic { url } => {
                let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
                match rest.find(['/', '?']) {
                    Some(i) if rest.len() > i + 1 => write!(f, "generic {scheme}://{}/***", &rest[..i]),
                    _ => write!(f, "generic {scheme}://{rest}"),
                }
            }
        }
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Target({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert() -> Alert {
        Alert {
            title: "pod-7 - HTTPS Connection Blocked".into(),
            message:
                "Blocked https connection from 10.0.0.5:40000 to <!channel>&x.test (1.2.3.4:443). Reason: r"
                    .into(),
            priority: 8,
        }
    }

    fn body(r: &Request) -> serde_json::Value {
        serde_json::from_slice(&r.body).unwrap()
    }

    #[test]
    fn every_scheme_parses_to_its_target() {
        let t = |s: &str| Target::parse(s).unwrap_or_else(|e| panic!("{s}: {e}"));
        let table: Vec<(&str, Target)> = vec![
            (
                "gotify://gotify.example/AbC.123",
                Target::Gotify {
                    base: "https://gotify.example".into(),
                    token: "AbC.123".into(),
                    priority: None,
                },
            ),
            (
                "gotify://127.0.0.1:8080/sub/path/tok/?disabletls=yes&priority=5",
                Target::Gotify {
                    base: "http://127.0.0.1:8080/sub/path".into(),
                    token: "tok".into(),
                    priority: Some(5),
                },
            ),
            (
                "ntfy://ntfy.example/alerts",
                Target::Ntfy {
                    base: "https://ntfy.example".into(),
                    topic: "alerts".into(),
                    auth: None,
                    priority: 4,
                },
            ),
            (
                "ntfy://u:p%40ss@127.0.0.1:81/t?scheme=http&priority=max",
                Target::Ntfy {
                    base: "http://127.0.0.1:81".into(),
                    topic: "t".into(),
                    auth: Some(NtfyAuth::Basic { user: "u".into(), pass: "p@ss".into() }),
                    priority: 5,
                },
            ),
            (
                "ntfy://:tk_1@/t",
                Target::Ntfy {
                    base: "https://ntfy.sh".into(),
                    topic: "t".into(),
                    auth: Some(NtfyAuth::Bearer("tk_1".into())),
                    priority: 4,
                },
            ),
            (
                "slack://hook:T0-B1-XyZ@webhook",
                Target::Slack { parts: ["T0".into(), "B1".into(), "XyZ".into()] },
            ),
            (
                "slack://hook:T0/B1/XyZ@webhook?color=good",
                Target::Slack { parts: ["T0".into(), "B1".into(), "XyZ".into()] },
            ),
            ("slack://T0/B1/XyZ", Target::Slack { parts: ["T0".into(), "B1".into(), "XyZ".into()] }),
            ("slack://bot@T0/B1/XyZ/", Target::Slack { parts: ["T0".into(), "B1".into(), "XyZ".into()] }),
            ("discord://tok-en_1@123456", Target::Discord { id: "123456".into(), token: "tok-en_1".into() }),
            (
                "generic+https://h.example/p/q?x=1",
                Target::Generic { url: "https://h.example/p/q?x=1".into() },
            ),
            ("generic+http://127.0.0.1:9/hook", Target::Generic { url: "http://127.0.0.1:9/hook".into() }),
            (
                "generic://ha.local:8123/api/webhook/ID?template=json&disabletls=yes&_template=a&k=v",
                Target::Generic { url: "http://ha.local:8123/api/webhook/ID?template=a&k=v".into() },
            ),
        ];
        for (url, want) in table {
            let got = t(url);
            assert!(got == want, "{url}: {:?} != {:?}", got.request(&alert()), want.request(&alert()));
        }
    }

    #[test]
    fn bad_urls_say_the_expected_form() {
        let table: &[(&str, &str)] = &[
            ("gotify://host", "gotify://host[:port]"),
            ("gotify://host/tok?disabletls=maybe", "disabletls is yes or no"),
            ("gotify://host/tok?priority=11", "priority is 0..10"),
            ("ntfy://host", "ntfy://[user:pass@]"),
            ("ntfy://host/t?scheme=ftp", "scheme is http or https"),
            ("ntfy://host/t?priority=9", "priority is 1..5"),
            ("slack://hook:A-B@webhook", "slack://hook:A-B-C@webhook"),
            ("slack://xoxb:1-2-3@C0123", "bot API tokens are not supported"),
            ("slack://A/B", "slack://hook:A-B-C@webhook"),
            ("discord://123456@token", "discord://TOKEN@WEBHOOK_ID"),
            ("discord://123456", "discord://TOKEN@WEBHOOK_ID"),
            ("generic+https:///path", "generic+https://host"),
            ("generic://h/p?template=form", "only template=json"),
            ("telegram://x@y", "one of gotify://"),
            ("no scheme here", "one of gotify://"),
        ];
        for (url, want) in table {
            let e = Target::parse(url).unwrap_err();
            assert!(e.contains(want), "{url}: {e}");
        }
    }

    #[test]
    fn a_list_reports_every_bad_entry_without_its_secrets() {
        let list = "gotify://h/secret-one, ntfy://h, ,discord://secret-two@notanid,generic+http://h/p";
        let errs = parse_urls(list).unwrap_err();
        let shown: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert_eq!(errs.iter().map(|e| e.position).collect::<Vec<_>>(), [2, 3]);
        assert!(shown[0].starts_with("entry 2 (ntfy://): expected ntfy://"), "{}", shown[0]);
        assert!(
            shown[1].starts_with("entry 3 (discord://): expected discord://TOKEN@WEBHOOK_ID"),
            "{}",
            shown[1]
        );
        assert!(!shown.concat().contains("secret"), "{shown:?}");
        assert_eq!(parse_urls("gotify://h/t,generic+http://h/p").unwrap().len(), 2);
    }

    #[test]
    fn display_and_debug_redact_every_secret() {
        let table: &[(&str, &str, &[&str])] = &[
            (
                "gotify://g.example:8443/sub/SeCrEt1",
                "gotify https://g.example:8443/sub (token ***)",
                &["SeCrEt1"],
            ),
            (
                "ntfy://user:PaSsWd@n.example/ToPiC",
                "ntfy https://***@n.example/***",
                &["PaSsWd", "ToPiC", "user"],
            ),
            ("ntfy://:TkN123@n.example/ToPiC", "ntfy https://***@n.example/***", &["TkN123", "ToPiC"]),
            (
                "slack://hook:TAAA-BBBB-CCCC@webhook",
                "slack https://hooks.slack.com/services/***",
                &["TAAA", "BBBB", "CCCC"],
            ),
            ("discord://ToKeN9@42", "discord https://discord.com/api/webhooks/42/***", &["ToKeN9"]),
            (
                "generic+https://h.example/hook/PaTh?k=QuErY",
                "generic https://h.example/***",
                &["PaTh", "QuErY"],
            ),
            ("generic+http://h.example", "generic http://h.example", &[]),
        ];
        for (url, shown, secrets) in table {
            let t = Target::parse(url).unwrap();
            assert_eq!(t.to_string(), *shown);
            let debug = format!("{t:?} {:?}", vec![t.clone()]);
            for s in *secrets {
                assert!(!debug.contains(s), "{url}: {debug}");
            }
        }
        let t = Target::parse("discord://ToKeN9@42").unwrap();
        assert_eq!(
            t.scrub("error for https://discord.com/api/webhooks/42/ToKeN9: 401"),
            "error for https://discord.com/api/webhooks/42/***: 401"
        );
    }

    #[test]
    fn each_scheme_builds_the_request_its_service_documents() {
        let a = alert();
        // Gotify: POST /message, key header, form body (as NOTIFICATION_HOST).
        let r = Target::parse("gotify://127.0.0.1:1/sub/tok?disabletls=yes").unwrap().request(&a);
        assert_eq!((r.method, r.url.as_str()), ("POST", "http://127.0.0.1:1/sub/message"));
        assert_eq!(
            r.headers,
            [
                ("X-Gotify-Key", "tok".to_owned()),
                ("Content-Type", "application/x-www-form-urlencoded".to_owned())
            ]
        );
        assert_eq!(r.body, a.form().into_bytes());
        let legacy = Target::gotify_host("http://g:80", "gk").request(&a);
        assert_eq!((legacy.url.as_str(), legacy.headers[0].1.as_str()), ("http://g:80/message", "gk"));
        let r = Target::parse("gotify://h/tok?priority=2").unwrap().request(&a);
        assert!(String::from_utf8(r.body).unwrap().ends_with("&priority=2"));

        // ntfy: JSON publish to the root, auth header.
        let r = Target::parse("ntfy://u:p@127.0.0.1:2/alerts?scheme=http").unwrap().request(&a);
        assert_eq!((r.method, r.url.as_str()), ("POST", "http://127.0.0.1:2/"));
        assert_eq!(
            r.headers,
            [("Content-Type", "application/json".to_owned()), ("Authorization", "Basic dTpw".to_owned())]
        );
        assert_eq!(
            body(&r),
            serde_json::json!({"topic": "alerts", "title": a.title, "message": a.message, "priority": 4})
        );
        let r = Target::parse("ntfy://:tk@h/t").unwrap().request(&a);
        assert_eq!(r.headers[1], ("Authorization", "Bearer tk".to_owned()));

        // Slack: incoming webhook, `text`, control characters escaped.
        let r = Target::parse("slack://hook:TA-BB-CC@webhook").unwrap().request(&a);
        assert_eq!((r.method, r.url.as_str()), ("POST", "https://hooks.slack.com/services/TA/BB/CC"));
        assert_eq!(r.headers, [("Content-Type", "application/json".to_owned())]);
        let text = format!("{}\n{}", a.title, a.message)
            .replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert_eq!(body(&r), serde_json::json!({ "text": text }));
        assert!(text.contains("&lt;!channel&gt;&amp;x.test"));

        // Discord: webhook, `content`, no mentions.
        let r = Target::parse("discord://tok@42").unwrap().request(&a);
        assert_eq!((r.method, r.url.as_str()), ("POST", "https://discord.com/api/webhooks/42/tok"));
        assert_eq!(
            body(&r),
            serde_json::json!({"content": format!("{}\n{}", a.title, a.message), "allowed_mentions": {"parse": []}})
        );
        let long = Alert { message: "x".repeat(3000), ..a.clone() };
        let c = body(&Target::parse("discord://tok@42").unwrap().request(&long))["content"]
            .as_str()
            .unwrap()
            .len();
        assert_eq!(c, DISCORD_MAX);

        // Generic: JSON title + message to the URL as written.
        let r = Target::parse("generic+http://127.0.0.1:3/hook?x=1").unwrap().request(&a);
        assert_eq!((r.method, r.url.as_str()), ("POST", "http://127.0.0.1:3/hook?x=1"));
        assert_eq!(r.headers, [("Content-Type", "application/json".to_owned())]);
        assert_eq!(body(&r), serde_json::json!({"title": a.title, "message": a.message}));
    }

    #[test]
    fn base64_and_percent_decoding() {
        for (raw, want) in
            [("", ""), ("f", "Zg=="), ("fo", "Zm8="), ("foo", "Zm9v"), ("user:pass", "dXNlcjpwYXNz")]
        {
            assert_eq!(base64(raw), want);
        }
        for (raw, want) in [("a%40b", "a@b"), ("%zz", "%zz"), ("50%", "50%"), ("%4", "%4"), ("%41", "A")] {
            assert_eq!(pct_decode(raw), want);
        }
    }
}
