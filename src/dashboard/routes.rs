//! Routing and request decisions, pure: which handler a method and path
//! go to, query-string parsing, the key check, content type and size
//! rules, response headers, and SSE framing. The shell in `mod.rs` does
//! the socket work around these.

use std::fmt::Write as _;

use super::store::Query;

/// Largest accepted POST body (bytes). Larger answers 413.
pub const MAX_BODY: usize = 1024 * 1024;

/// Where a request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Health,
    Metrics,
    PostLogs,
    GetLogs,
    DeleteLogs,
    Events,
    /// `GET /login`: the login page (session mode).
    LoginPage,
    /// `POST /login`.
    Login,
    /// `POST /logout`.
    Logout,
    /// `GET /api/v1/session`: who the UI is logged in as, and the CSRF token.
    Session,
    /// `POST /api/v1/heartbeat`: an agent's state (see `fleet.rs`).
    Heartbeat,
    /// `GET /api/v1/agents`: the agents and their flags.
    Agents,
    /// `GET /api/v1/aggregates?window=&by=`: counts computed in SQL.
    Aggregates,
    /// `GET /api/v1/keys`: the agent keys (names and dates, never keys).
    ListKeys,
    /// `POST /api/v1/keys` `{"name": ...}`: a new agent key, shown once.
    AddKey,
    /// `DELETE /api/v1/keys/NAME`: revokes NAME's key.
    RevokeKey,
    /// `GET /api/v1/unblocks`: every unblock (the audit trail).
    ListUnblocks,
    /// `POST /api/v1/unblocks`: an operator's new unblock.
    AddUnblock,
    /// `DELETE /api/v1/unblocks/ID`: revokes it.
    RevokeUnblock,
    /// `GET /api/v1/agent/unblocks`: an agent's active unblocks.
    AgentUnblocks,
    /// `POST /api/v1/agent/unblocks/ack`: the agent applied them.
    AckUnblocks,
    Asset(&'static Asset),
    /// Known path, wrong method; the value is the `Allow` header.
    MethodNotAllowed(&'static str),
    NotFound,
}

/// A static UI file, embedded in the binary.
#[derive(Debug, PartialEq, Eq)]
pub struct Asset {
    pub path: &'static str,
    pub content_type: &'static str,
    pub body: &'static [u8],
}

pub static ASSETS: [Asset; 5] = [
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../static/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../static/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../static/style.css"),
    },
    Asset {
        path: "/login.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../static/login.js"),
    },
    Asset {
        path: "/login.html",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../static/login.html"),
    },
];

/// The login page (served at `/login`).
pub fn login_page() -> &'static Asset {
    &ASSETS[4]
}

/// Splits a request target into path and query string.
pub fn split_target(url: &str) -> (&str, &str) {
    match url.split_once('?') {
        Some((p, q)) => (p, q),
        None => (url, ""),
    }
}

pub fn route(method: &str, path: &str) -> Route {
    let m = method.to_ascii_uppercase();
    let m = m.as_str();
    let get = matches!(m, "GET" | "HEAD");
    match path {
        "/health" | "/healthz" => {
            if get {
                Route::Health
            } else {
                Route::MethodNotAllowed("GET, HEAD")
            }
        }
        "/metrics" => {
            if get {
                Route::Metrics
            } else {
                Route::MethodNotAllowed("GET, HEAD")
            }
        }
        "/api/v1/logs" => match m {
            "POST" => Route::PostLogs,
            "GET" | "HEAD" => Route::GetLogs,
            "DELETE" => Route::DeleteLogs,
            _ => Route::MethodNotAllowed("GET, HEAD, POST, DELETE"),
        },
        "/api/v1/events" => {
            if m == "GET" {
                Route::Events
            } else {
                Route::MethodNotAllowed("GET")
            }
        }
        "/login" => match m {
            "GET" | "HEAD" => Route::LoginPage,
            "POST" => Route::Login,
            _ => Route::MethodNotAllowed("GET, HEAD, POST"),
        },
        "/logout" => {
            if m == "POST" {
                Route::Logout
            } else {
                Route::MethodNotAllowed("POST")
            }
        }
        "/api/v1/session" => {
            if get {
                Route::Session
            } else {
                Route::MethodNotAllowed("GET, HEAD")
            }
        }
        "/api/v1/heartbeat" => {
            if m == "POST" {
                Route::Heartbeat
            } else {
                Route::MethodNotAllowed("POST")
            }
        }
        "/api/v1/agents" => {
            if get {
                Route::Agents
            } else {
                Route::MethodNotAllowed("GET, HEAD")
            }
        }
        "/api/v1/aggregates" => {
            if get {
                Route::Aggregates
            } else {
                Route::MethodNotAllowed("GET, HEAD")
            }
        }
        "/api/v1/keys" => match m {
            "GET" | "HEAD" => Route::ListKeys,
            "POST" => Route::AddKey,
            _ => Route::MethodNotAllowed("GET, HEAD, POST"),
        },
        "/api/v1/unblocks" => match m {
            "GET" | "HEAD" => Route::ListUnblocks,
            "POST" => Route::AddUnblock,
            _ => Route::MethodNotAllowed("GET, HEAD, POST"),
        },
        p if super::unblocks::path_id(p).is_some() => {
            if m == "DELETE" {
                Route::RevokeUnblock
            } else {
                Route::MethodNotAllowed("DELETE")
            }
        }
        "/api/v1/agent/unblocks" => {
            if get {
                Route::AgentUnblocks
            } else {
                Route::MethodNotAllowed("GET, HEAD")
            }
        }
        "/api/v1/agent/unblocks/ack" => {
            if m == "POST" {
                Route::AckUnblocks
            } else {
                Route::MethodNotAllowed("POST")
            }
        }
        p if key_path_name(p).is_some() => {
            if m == "DELETE" {
                Route::RevokeKey
            } else {
                Route::MethodNotAllowed("DELETE")
            }
        }
        "/login.html" => Route::NotFound,
        "/index.html" => {
            if get {
                Route::Asset(&ASSETS[0])
            } else {
                Route::MethodNotAllowed("GET, HEAD")
            }
        }
        _ => match ASSETS.iter().find(|a| a.path == path) {
            Some(a) if get => Route::Asset(a),
            Some(_) => Route::MethodNotAllowed("GET, HEAD"),
            None => Route::NotFound,
        },
    }
}

/// The agent name in `/api/v1/keys/NAME` (a valid name only).
pub fn key_path_name(path: &str) -> Option<&str> {
    path.strip_prefix("/api/v1/keys/").filter(|n| super::auth::valid_agent_name(n))
}

/// Decodes `%XX` and `+` in a query component; invalid escapes stay as-is.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => match (b.get(i + 1).copied().and_then(hex), b.get(i + 2).copied().and_then(hex)) {
                (Some(h), Some(l)) => {
                    // Both are hex digits below 16, so the byte fits.
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The value of `key` in a query string, decoded.
pub fn query_param(query: &str, key: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k) == key).then(|| percent_decode(v))
    })
}

/// `q`, `since_id` and `limit` of `GET /api/v1/logs`. As in g0efilter,
/// a value that is not usable is ignored rather than refused: a bad or
/// non-positive `since_id` means "from the start", a bad or non-positive
/// `limit` means `read_limit`; a larger `limit` is capped to it.
pub fn parse_query(query: &str, read_limit: usize) -> Query {
    let q = query_param(query, "q").unwrap_or_default().to_lowercase();
    let since_id = query_param(query, "since_id").and_then(|s| s.trim().parse::<u64>().ok()).unwrap_or(0);
    let limit = match query_param(query, "limit").and_then(|s| s.trim().parse::<usize>().ok()) {
        Some(n) if n >= 1 => n.min(read_limit),
        _ => read_limit,
    };
    Query { q, since_id, limit }
}

/// What `GET /api/v1/aggregates` groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupBy {
    Destination,
    Source,
    Agent,
    Reason,
    /// The timeline: one group per minute of event time.
    Minute,
}

impl GroupBy {
    pub fn as_str(self) -> &'static str {
        match self {
            GroupBy::Destination => "destination",
            GroupBy::Source => "source",
            GroupBy::Agent => "agent",
            GroupBy::Reason => "reason",
            GroupBy::Minute => "minute",
        }
    }
}

/// `GET /api/v1/aggregates` parameters, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggQuery {
    /// Events with an event time in the last `window`.
    pub window: std::time::Duration,
    pub by: GroupBy,
    /// Only this agent's events (`agent=`).
    pub agent: Option<String>,
    /// Only this action's (`action=allowed|blocked|audit`), uppercase.
    pub action: Option<&'static str>,
    /// Most groups returned (`top=`, 1..1000, 10 by default; the timeline
    /// returns every minute).
    pub top: usize,
}

/// Longest window; the timeline's (one group a minute) is a day.
pub const MAX_WINDOW: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);
pub const MAX_TIMELINE_WINDOW: std::time::Duration = std::time::Duration::from_secs(86_400);

/// Parses the aggregates query; the error is the 400's message. Unlike
/// `/api/v1/logs` (g0efilter's, lenient), this endpoint is egret's own
/// and says what is wrong.
pub fn parse_aggregates(query: &str) -> Result<AggQuery, String> {
    let window_text = query_param(query, "window").unwrap_or_else(|| "1h".into());
    let t = window_text.trim();
    let window = match t.strip_suffix('d').map(|n| n.parse::<u64>()) {
        Some(Ok(days)) => Ok(std::time::Duration::from_secs(days.saturating_mul(86_400))),
        Some(Err(_)) => Err(()),
        None => crate::config::parse_duration(t).map_err(|_| ()),
    }
    .ok()
    .filter(|w| *w >= std::time::Duration::from_secs(60) && *w <= MAX_WINDOW)
    .ok_or_else(|| {
        format!("window={window_text:?}: expected a duration from 1m to 30d, such as 15m, 1h or 7d")
    })?;
    let by_text = query_param(query, "by").unwrap_or_default();
    let by = match by_text.trim() {
        "destination" => GroupBy::Destination,
        "source" => GroupBy::Source,
        "agent" => GroupBy::Agent,
        "reason" => GroupBy::Reason,
        "minute" => GroupBy::Minute,
        _ => return Err(format!("by={by_text:?}: expected destination, source, agent, reason or minute")),
    };
    if by == GroupBy::Minute && window > MAX_TIMELINE_WINDOW {
        return Err(format!("window={window_text:?}: by=minute covers at most 24h"));
    }
    let agent = query_param(query, "agent").filter(|a| !a.is_empty());
    if agent.as_ref().is_some_and(|a| a.len() > 256) {
        return Err("agent=: at most 256 bytes".into());
    }
    let action = match query_param(query, "action").map(|a| a.trim().to_ascii_uppercase()).as_deref() {
        None | Some("") => None,
        Some("ALLOWED") => Some("ALLOWED"),
        Some("BLOCKED") => Some("BLOCKED"),
        Some("AUDIT") => Some("AUDIT"),
        Some(other) => return Err(format!("action={other:?}: expected allowed, blocked or audit")),
    };
    let top = match query_param(query, "top") {
        None => 10,
        Some(t) => t
            .trim()
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=1000).contains(n))
            .ok_or_else(|| format!("top={t:?}: expected a number from 1 to 1000"))?,
    };
    Ok(AggQuery { window, by, agent, action, top })
}

/// The client a request is from, for the rate limit: the TCP peer, unless
/// the peer is a trusted reverse proxy (`TRUSTED_PROXIES`); then the
/// rightmost `X-Forwarded-For` address that is not itself a trusted proxy
/// (the leftmost entries are whatever the client wrote), else `X-Real-IP`,
/// else the peer. An untrusted peer's headers are never believed, so a
/// client cannot pick its own bucket.
pub fn client_ip(
    peer: std::net::IpAddr,
    forwarded_for: Option<&str>,
    real_ip: Option<&str>,
    trusted: &crate::policy::IpSet,
) -> std::net::IpAddr {
    if !trusted.contains(peer) {
        return peer;
    }
    let parse = |s: &str| {
        let s = s.trim();
        let bare = s.strip_prefix('[').and_then(|x| x.split(']').next()).unwrap_or(s);
        bare.parse::<std::net::IpAddr>()
            .ok()
            .or_else(|| s.parse::<std::net::SocketAddr>().ok().map(|a| a.ip()))
    };
    if let Some(xff) = forwarded_for {
        let hops: Vec<std::net::IpAddr> = xff.split(',').filter_map(parse).collect();
        if let Some(ip) = hops.iter().rev().find(|ip| !trusted.contains(**ip)) {
            return *ip;
        }
    }
    real_ip.and_then(parse).unwrap_or(peer)
}

/// `remote_ip` of a stored entry: the poster's `ip:port`, as g0efilter
/// records Go's `RemoteAddr` (IPv6 in brackets).
pub fn remote_ip(peer: Option<std::net::SocketAddr>) -> String {
    peer.map_or_else(String::new, |a| a.to_string())
}

/// The body of a 401 answer: g0efilter's `{"error":"unauthorized"}`, and
/// for `DELETE` (which g0efilter served without a key) how to send one.
pub fn unauthorized_body(delete: bool) -> String {
    if delete {
        serde_json::json!({
            "error": "unauthorized",
            "hint": "DELETE /api/v1/logs needs the API key in X-Api-Key or Authorization: Bearer \
                     (egret asks for it; g0efilter did not)",
        })
        .to_string()
    } else {
        error_body("unauthorized")
    }
}

/// Compares in time independent of where the first difference is.
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        // Compare against b cyclically so the loop length depends only on a.
        let y = if b.is_empty() { 0 } else { b[i % b.len()] };
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// The key a request presents: `X-Api-Key`, else `Authorization: Bearer`.
pub fn presented_key<'a>(x_api_key: Option<&'a str>, authorization: Option<&'a str>) -> Option<&'a str> {
    let bearer = authorization.and_then(|a| {
        let a = a.trim();
        a.get(..7).filter(|p| p.eq_ignore_ascii_case("bearer ")).map(|_| a[7..].trim())
    });
    x_api_key.map(str::trim).filter(|k| !k.is_empty()).or(bearer).filter(|k| !k.is_empty())
}

/// The key from `X-Api-Key` or `Authorization: Bearer`, checked against
/// `key`. Both headers are accepted, as g0efilter's clients send either.
pub fn authorized(x_api_key: Option<&str>, authorization: Option<&str>, key: &str) -> bool {
    let bearer = authorization.and_then(|a| {
        let a = a.trim();
        a.get(..7).filter(|p| p.eq_ignore_ascii_case("bearer ")).map(|_| a[7..].trim())
    });
    let mut ok = false;
    for presented in [x_api_key.map(str::trim), bearer].into_iter().flatten() {
        ok |= constant_time_eq(presented.as_bytes(), key.as_bytes());
    }
    ok
}

/// POST bodies must be JSON. A missing Content-Type is accepted (some
/// shippers omit it); any other type answers 415.
pub fn json_content_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return true };
    let mime = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    mime == "application/json" || (mime.starts_with("application/") && mime.ends_with("+json"))
}

/// The Content-Security-Policy of every response: no inline script or
/// style, nothing from elsewhere, no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// Headers every response carries.
pub const SECURITY_HEADERS: [(&str, &str); 5] = [
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Referrer-Policy", "no-referrer"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
];

/// `{"error":"..."}` with the message JSON-escaped.
pub fn error_body(msg: &str) -> String {
    serde_json::json!({ "error": msg }).to_string()
}

/// The start of an SSE stream: reconnect delay, then a comment so clients
/// and proxies see bytes at once.
pub fn sse_preamble(retry_ms: u64) -> String {
    format!("retry: {retry_ms}\n: egret event stream\n\n")
}

/// One event: `id:` + `data:` + blank line. The JSON is one line (serde
/// never emits raw newlines), so one `data:` line is enough.
pub fn sse_event(out: &mut String, id: u64, json: &str) {
    let _ = write!(out, "id: {id}\ndata: {json}\n\n");
}

pub const SSE_CLEARED: &str = "data: {\"type\":\"cleared\"}\n\n";

pub fn sse_heartbeat(out: &mut String, last_id: u64) {
    let _ = write!(out, ": heartbeat {last_id}\n\n");
}

/// Where a stream starts: `Last-Event-ID` (set by EventSource on
/// reconnect) wins over `?since_id=` (set by the UI after its first GET).
/// `None` means live only.
pub fn stream_start(last_event_id: Option<&str>, query: &str) -> Option<u64> {
    last_event_id
        .and_then(|s| s.trim().parse::<u64>().ok())
        .or_else(|| query_param(query, "since_id").and_then(|s| s.trim().parse().ok()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_table() {
        let cases: &[(&str, &str, Route)] = &[
            ("GET", "/health", Route::Health),
            ("HEAD", "/health", Route::Health),
            ("POST", "/health", Route::MethodNotAllowed("GET, HEAD")),
            ("GET", "/metrics", Route::Metrics),
            ("POST", "/api/v1/logs", Route::PostLogs),
            ("post", "/api/v1/logs", Route::PostLogs),
            ("GET", "/api/v1/logs", Route::GetLogs),
            ("DELETE", "/api/v1/logs", Route::DeleteLogs),
            ("PUT", "/api/v1/logs", Route::MethodNotAllowed("GET, HEAD, POST, DELETE")),
            ("GET", "/api/v1/events", Route::Events),
            ("POST", "/api/v1/events", Route::MethodNotAllowed("GET")),
            ("HEAD", "/api/v1/events", Route::MethodNotAllowed("GET")),
            ("GET", "/", Route::Asset(&ASSETS[0])),
            ("GET", "/index.html", Route::Asset(&ASSETS[0])),
            ("GET", "/app.js", Route::Asset(&ASSETS[1])),
            ("GET", "/style.css", Route::Asset(&ASSETS[2])),
            ("DELETE", "/", Route::MethodNotAllowed("GET, HEAD")),
            ("GET", "/../etc/passwd", Route::NotFound),
            ("GET", "/api/v1/logs/", Route::NotFound),
            ("GET", "/static/app.js", Route::NotFound),
            ("GET", "/login", Route::LoginPage),
            ("POST", "/login", Route::Login),
            ("PUT", "/login", Route::MethodNotAllowed("GET, HEAD, POST")),
            ("POST", "/logout", Route::Logout),
            ("GET", "/logout", Route::MethodNotAllowed("POST")),
            ("GET", "/api/v1/session", Route::Session),
            ("GET", "/login.js", Route::Asset(&ASSETS[3])),
            ("GET", "/login.html", Route::NotFound),
            ("POST", "/api/v1/heartbeat", Route::Heartbeat),
            ("GET", "/api/v1/heartbeat", Route::MethodNotAllowed("POST")),
            ("GET", "/api/v1/agents", Route::Agents),
            ("POST", "/api/v1/agents", Route::MethodNotAllowed("GET, HEAD")),
            ("GET", "/api/v1/aggregates", Route::Aggregates),
            ("DELETE", "/api/v1/aggregates", Route::MethodNotAllowed("GET, HEAD")),
            ("GET", "/api/v1/keys", Route::ListKeys),
            ("POST", "/api/v1/keys", Route::AddKey),
            ("DELETE", "/api/v1/keys", Route::MethodNotAllowed("GET, HEAD, POST")),
            ("DELETE", "/api/v1/keys/edge-1", Route::RevokeKey),
            ("GET", "/api/v1/keys/edge-1", Route::MethodNotAllowed("DELETE")),
            ("DELETE", "/api/v1/keys/a%20b", Route::NotFound),
            ("DELETE", "/api/v1/keys/", Route::NotFound),
            ("DELETE", "/api/v1/keys/a/b", Route::NotFound),
            ("GET", "/api/v1/unblocks", Route::ListUnblocks),
            ("POST", "/api/v1/unblocks", Route::AddUnblock),
            ("PUT", "/api/v1/unblocks", Route::MethodNotAllowed("GET, HEAD, POST")),
            ("DELETE", "/api/v1/unblocks/7", Route::RevokeUnblock),
            ("GET", "/api/v1/unblocks/7", Route::MethodNotAllowed("DELETE")),
            ("DELETE", "/api/v1/unblocks/x", Route::NotFound),
            ("GET", "/api/v1/agent/unblocks", Route::AgentUnblocks),
            ("POST", "/api/v1/agent/unblocks", Route::MethodNotAllowed("GET, HEAD")),
            ("POST", "/api/v1/agent/unblocks/ack", Route::AckUnblocks),
            ("GET", "/api/v1/agent/unblocks/ack", Route::MethodNotAllowed("POST")),
        ];
        assert_eq!(presented_key(Some(" k "), Some("Bearer b")), Some("k"));
        assert_eq!(presented_key(None, Some("bearer  b ")), Some("b"));
        assert_eq!(presented_key(Some(""), Some("Basic x")), None);
        for (m, p, want) in cases {
            assert_eq!(route(m, p), *want, "{m} {p}");
        }
        assert_eq!(split_target("/api/v1/logs?q=a&limit=2"), ("/api/v1/logs", "q=a&limit=2"));
        assert_eq!(split_target("/"), ("/", ""));
    }

    #[test]
    fn aggregates_query_table() {
        let ok = |q: &str| parse_aggregates(q).unwrap();
        let d = ok("by=destination");
        assert_eq!(
            (d.window.as_secs(), d.by, d.agent, d.action, d.top),
            (3600, GroupBy::Destination, None, None, 10)
        );
        let a = ok("window=7d&by=agent&agent=edge-1&action=blocked&top=3");
        assert_eq!(
            (a.window.as_secs(), a.by, a.agent.as_deref(), a.action, a.top),
            (604_800, GroupBy::Agent, Some("edge-1"), Some("BLOCKED"), 3)
        );
        assert_eq!(ok("window=90m&by=minute").window.as_secs(), 5400);
        assert_eq!(ok("window=1h30m&by=reason").by, GroupBy::Reason);
        for (bad, says) in [
            ("", "by=\"\""),
            ("by=host", "by=\"host\": expected destination"),
            ("by=source&window=abc", "window=\"abc\""),
            ("by=source&window=30s", "from 1m to 30d"),
            ("by=source&window=31d", "from 1m to 30d"),
            ("by=source&window=-1h", "window"),
            ("by=source&window=xd", "window"),
            ("by=minute&window=2d", "at most 24h"),
            ("by=source&action=redirected", "action=\"REDIRECTED\""),
            ("by=source&top=0", "top=\"0\""),
            ("by=source&top=1001", "top"),
            ("by=source&top=x", "top"),
        ] {
            let e = parse_aggregates(bad).unwrap_err();
            assert!(e.contains(says), "{bad}: {e}");
        }
    }

    #[test]
    fn percent_decoding() {
        for (s, want) in [
            ("a+b", "a b"),
            ("%3Cimg%3E", "<img>"),
            ("%zz", "%zz"),
            ("%4", "%4"),
            ("100%", "100%"),
            ("%C3%A9", "\u{e9}"),
            ("%FF", "\u{fffd}"),
            ("\u{e9}%", "\u{e9}%"),
        ] {
            assert_eq!(percent_decode(s), want, "{s}");
        }
    }

    #[test]
    fn query_table() {
        let ok = |q: &str| parse_query(q, 500);
        assert_eq!(ok(""), Query { q: String::new(), since_id: 0, limit: 500 });
        assert_eq!(
            ok("q=Evil%2EExample&since_id=7&limit=20"),
            Query { q: "evil.example".into(), since_id: 7, limit: 20 }
        );
        assert_eq!(ok("limit=100000").limit, 500, "capped at READ_LIMIT");
        assert_eq!(ok("limit=&since_id=").limit, 500, "empty means default");
        assert_eq!(ok("q=a+b").q, "a b");
        // Ignored as g0efilter ignores them (issue 16): the defaults apply.
        for bad in ["limit=0", "limit=-1", "limit=x", "since_id=-3", "since_id=1.5", "since_id=x&limit=2.5"] {
            assert_eq!(parse_query(bad, 500), Query { q: String::new(), since_id: 0, limit: 500 }, "{bad}");
        }
        assert_eq!(ok("since_id=abc&limit=3"), Query { q: String::new(), since_id: 0, limit: 3 });
    }

    #[test]
    fn client_ip_behind_trusted_proxies() {
        let ip = |s: &str| s.parse::<std::net::IpAddr>().unwrap();
        let trusted = crate::policy::IpSet::from_cidrs(&[
            crate::policy::Cidr::parse("10.0.0.0/24").unwrap().0,
            crate::policy::Cidr::parse("fd00::1").unwrap().0,
        ]);
        let cases: &[(&str, Option<&str>, Option<&str>, &str)] = &[
            // Not a trusted peer: headers ignored.
            ("192.0.2.9", Some("1.2.3.4"), Some("5.6.7.8"), "192.0.2.9"),
            // Trusted: the rightmost untrusted hop.
            ("10.0.0.5", Some("203.0.113.7"), None, "203.0.113.7"),
            ("10.0.0.5", Some("6.6.6.6, 203.0.113.7, 10.0.0.4"), None, "203.0.113.7"),
            ("10.0.0.5", Some("garbage, 203.0.113.8"), None, "203.0.113.8"),
            ("10.0.0.5", Some("[2001:db8::7]:4711"), None, "2001:db8::7"),
            // Only trusted hops, or none: X-Real-IP, else the peer.
            ("10.0.0.5", Some("10.0.0.3"), Some("198.51.100.2"), "198.51.100.2"),
            ("10.0.0.5", None, Some("198.51.100.3"), "198.51.100.3"),
            ("10.0.0.5", None, Some("nonsense"), "10.0.0.5"),
            ("fd00::1", Some("2001:db8::9"), None, "2001:db8::9"),
            ("::ffff:10.0.0.5", Some("203.0.113.9"), None, "203.0.113.9"),
        ];
        for (peer, xff, real, want) in cases {
            assert_eq!(client_ip(ip(peer), *xff, *real, &trusted), ip(want), "{peer} {xff:?} {real:?}");
        }
        let none = crate::policy::IpSet::default();
        assert_eq!(client_ip(ip("10.0.0.5"), Some("1.1.1.1"), None, &none), ip("10.0.0.5"));
    }

    #[test]
    fn remote_ip_and_the_401_body() {
        assert_eq!(remote_ip(Some("10.0.0.2:40000".parse().unwrap())), "10.0.0.2:40000");
        assert_eq!(remote_ip(Some("[fd00::2]:8".parse().unwrap())), "[fd00::2]:8");
        let v: serde_json::Value = serde_json::from_str(&unauthorized_body(true)).unwrap();
        assert_eq!(v["error"], "unauthorized");
        assert!(v["hint"].as_str().unwrap().contains("X-Api-Key"));
        assert_eq!(unauthorized_body(false), error_body("unauthorized"));
    }

    #[test]
    fn auth_table() {
        let key = "s3cret";
        let cases: &[(Option<&str>, Option<&str>, bool)] = &[
            (Some("s3cret"), None, true),
            (None, Some("Bearer s3cret"), true),
            (None, Some("bearer  s3cret "), true),
            (Some("wrong"), Some("Bearer s3cret"), true),
            (None, None, false),
            (Some(""), None, false),
            (Some("s3cre"), None, false),
            (Some("s3cretX"), None, false),
            (None, Some("Basic s3cret"), false),
            (None, Some("s3cret"), false),
            (None, Some("Bearer"), false),
        ];
        for (x, auth, want) in cases {
            assert_eq!(authorized(*x, *auth, key), *want, "{x:?} {auth:?}");
        }
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"a", b""));
        assert!(!constant_time_eq(b"", b"a"));
        assert!(!constant_time_eq(b"ab", b"abab"));
    }

    #[test]
    fn content_types() {
        for (ct, ok) in [
            (None, true),
            (Some("application/json"), true),
            (Some("Application/JSON; charset=utf-8"), true),
            (Some("application/vnd.egret+json"), true),
            (Some("text/plain"), false),
            (Some("application/x-www-form-urlencoded"), false),
            (Some(""), false),
        ] {
            assert_eq!(json_content_type(ct), ok, "{ct:?}");
        }
    }

    #[test]
    fn sse_framing() {
        assert_eq!(sse_preamble(2000), "retry: 2000\n: egret event stream\n\n");
        let mut s = String::new();
        sse_event(&mut s, 7, "{\"a\":\"x\\ny\"}");
        sse_heartbeat(&mut s, 7);
        assert_eq!(s, "id: 7\ndata: {\"a\":\"x\\ny\"}\n\n: heartbeat 7\n\n");
        assert_eq!(stream_start(Some(" 42 "), "since_id=3"), Some(42));
        assert_eq!(stream_start(None, "since_id=3"), Some(3));
        assert_eq!(stream_start(Some("junk"), ""), None);
        assert_eq!(stream_start(None, ""), None);
    }

    #[test]
    fn errors_are_json() {
        assert_eq!(error_body("rate limited"), "{\"error\":\"rate limited\"}");
        assert_eq!(error_body("a\"b"), "{\"error\":\"a\\\"b\"}");
    }
}
